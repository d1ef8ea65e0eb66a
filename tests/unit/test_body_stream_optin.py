"""The body_stream opt-in: predict's parameters read from source, the rule in the process contract,
the route flag that carries it to the gateway, and the refusal of body_stream with batching."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from berth.config import load_spec, signature
from berth.config.signature import predict_parameters
from berth.control.routing import Routing, streams_body
from berth.errors import ConfigError
from berth.gateway.control import RouteApplier, RouteEntry
from berth.gateway.routes import RoutingTable
from berth.runtime import contract

P = "PythonPredictor"


@pytest.mark.parametrize(("source", "expected"), [
    ("class PythonPredictor:\n    async def predict(self, body_stream): ...", {"body_stream"}),
    ("class PythonPredictor:\n    def predict(self, payload, query_params, headers): ...",
     {"payload", "query_params", "headers"}),
    ("class PythonPredictor:\n    def predict(self, *args, **kwargs): ...", set()),
    ("class PythonPredictor:\n    def predict(self, payload, *, body_stream=None): ...", {"payload", "body_stream"}),
    ("class PythonPredictor:\n    def predict(self, payload, /, headers): ...", {"payload", "headers"}),
    ("class PythonPredictor:\n    @staticmethod\n    def predict(body_stream): ...", {"body_stream"}),
    ("class PythonPredictor:\n    def predict(self, payload): ...\n    async def predict(self, body_stream): ...",
     {"body_stream"}),  # the last definition wins, as in Python
    ("class Other:\n    def predict(self, body_stream): ...", None),  # class not found
    ("class PythonPredictor(Base):\n    pass", None),  # inherited predict: cannot be told
    ("def f(:\n", None),  # syntax error
    ("class PythonPredictor:\n    def predict(self, x): ...\x00", None),  # a null byte
    ("if True:\n    class PythonPredictor:\n        def predict(self, body_stream): ...", None),  # not top level
])
def test_predict_parameters(source: str, expected: set[str] | None) -> None:
    assert predict_parameters(source, P) == expected


def test_the_rule_is_the_contracts_and_config_repeats_its_name() -> None:
    assert signature.BODY_STREAM == contract.BODY_STREAM == "body_stream"
    assert contract.streams_request_body({"body_stream", "headers"})
    assert not contract.streams_request_body({"payload"})
    assert not contract.streams_request_body(())


def test_the_control_plane_finds_the_opt_in_in_the_deployed_files(tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text("- name: up\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                                         "    path: predictor.py\n")
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    async def predict(self, body_stream):\n"
                                           "        return 1\n")
    spec = load_spec(tmp_path).apis[0]
    assert streams_body(spec, tmp_path)
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    def predict(self, payload):\n        return 1\n")
    assert not streams_body(spec, tmp_path)
    assert not streams_body(spec, tmp_path / "gone")  # unreadable: buffered, as before


def test_stream_body_travels_to_the_gateway_route_and_is_optional() -> None:
    routing = Routing()
    routing.configure("api", "/api", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0, stream_body=True)
    table = RoutingTable()
    applier = RouteApplier(table)
    applier.apply(routing.message())
    assert table.by_api["api"].stream_body and table.streaming == 1
    routing.configure("api", "/api", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0)
    applier.apply(routing.message())
    assert not table.by_api["api"].stream_body and table.streaming == 0
    saved = {"api": "api", "endpoint": "/api", "max_replica_concurrency": 1, "holds": False, "hold_limit": 0,
             "hold_timeout": 0.0, "timeout": 1.0, "targets": []}  # a table saved by an older daemon
    assert RouteEntry.from_json(saved).stream_body is False
    with pytest.raises(ValueError, match="stream_body"):
        RouteEntry.from_json({**saved, "stream_body": "yes"})
    table.remove("api")
    assert table.streaming == 0


def test_body_stream_with_server_side_batching_is_refused(tmp_path: Path) -> None:
    (tmp_path / "berth.yaml").write_text(textwrap.dedent("""\
        - name: up
          kind: RealtimeAPI
          predictor:
            type: python
            path: predictor.py
            server_side_batching: {max_batch_size: 4, batch_interval: 10ms}
        """))
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    async def predict(self, body_stream):\n"
                                           "        return 1\n")
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path)
    assert info.value.exit_code == 2
    assert "body_stream" in str(info.value) and "server_side_batching" in str(info.value)
    (tmp_path / "predictor.py").write_text("class PythonPredictor:\n    def predict(self, payload):\n        return 1\n")
    load_spec(tmp_path)  # batching without body_stream: fine
