"""The replica's ASGI app in-process, through Starlette's TestClient (lifespan included)."""

import asyncio
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from berth.config.schema import RealtimeAPI
from berth.runtime.app import ReplicaApp, ReplicaSettings

PREDICTOR = '''
import asyncio, json, threading
import numpy as np
from starlette.responses import JSONResponse

class PythonPredictor:
    def __init__(self, config):
        self.config = config
        self.thread = threading.get_ident()
        self.predict_threads = set()
        self.post = []

    def predict(self, payload, query_params, headers):
        self.predict_threads.add(threading.get_ident())
        mode = query_params.get("mode")
        if mode == "raise":
            raise ValueError("secret internal detail")
        if mode == "object":
            return object()
        if mode == "numpy":
            return {"scores": np.array([0.25, 0.75])}
        if mode == "bytes":
            return b"\\x00\\x01"
        if mode == "text":
            return "plain"
        if mode == "response":
            return JSONResponse({"created": True}, status_code=201, headers={"x-custom": "1"})
        if mode == "form":
            return dict(payload)
        if mode == "headers":
            return {"agent": headers.get("x-agent")}
        return {"payload": payload, "config": self.config}

    def post_predict(self, response, payload):
        self.post.append((response, payload))
'''


def make_app(tmp_path: Path, source: str = PREDICTOR, **predictor: object) -> ReplicaApp:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(source))
    api = RealtimeAPI.model_validate({
        "name": "test", "kind": "RealtimeAPI",
        "predictor": {"type": "python", "path": "predictor.py", "config": {"k": "v"}, **predictor},
    })
    return ReplicaApp(ReplicaSettings(api=api, project=tmp_path))


def wait_ready(client: TestClient, timeout: float = 10) -> None:
    app = client.app
    assert isinstance(app, ReplicaApp)
    loading = app._loading
    assert loading is not None
    client.portal.call(lambda: _await(loading, timeout))  # type: ignore[union-attr]


async def _await(task: object, timeout: float) -> None:
    import asyncio

    await asyncio.wait_for(asyncio.shield(task), timeout)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path)) as test_client:
        wait_ready(test_client)
        yield test_client


def test_json_payload_and_config(client: TestClient) -> None:
    response = client.post("/", json={"x": 1}, headers={"x-request-id": "abc"})
    assert response.status_code == 200
    assert response.json() == {"payload": {"x": 1}, "config": {"k": "v"}}
    assert response.headers["x-request-id"] == "abc"


def test_request_id_is_generated(client: TestClient) -> None:
    first = client.post("/", json={}).headers["x-request-id"]
    second = client.post("/", json={}).headers["x-request-id"]
    assert first and second and first != second


@pytest.mark.parametrize(
    ("mode", "status", "content_type", "body"),
    [
        ("numpy", 200, "application/json", b'{"scores":[0.25,0.75]}'),
        ("bytes", 200, "application/octet-stream", b"\x00\x01"),
        ("text", 200, "text/plain; charset=utf-8", b"plain"),
        ("response", 201, "application/json", b'{"created":true}'),
    ],
)
def test_return_values(client: TestClient, mode: str, status: int, content_type: str, body: bytes) -> None:
    response = client.post(f"/?mode={mode}", json={})
    assert (response.status_code, response.headers["content-type"], response.content) == (status, content_type, body)


def test_exception_is_a_500_with_request_id_and_no_traceback(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    response = client.post("/?mode=raise", json={}, headers={"x-request-id": "r-1"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "request_id": "r-1"}
    assert "secret internal detail" not in response.text
    assert "secret internal detail" in caplog.text and "r-1" in caplog.text


def test_unserialisable_return_value(client: TestClient) -> None:
    response = client.post("/?mode=object", json={})
    assert response.status_code == 500
    assert "JSON serializable" in response.json()["error"]


@pytest.mark.parametrize(("body", "message"), [(b"{nope", "not valid JSON"), (b"", "empty")])
def test_bad_json_is_a_400_and_predict_is_not_called(client: TestClient, body: bytes, message: str) -> None:
    response = client.post("/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_headers_are_injected(client: TestClient) -> None:
    assert client.post("/?mode=headers", json={}, headers={"x-agent": "t"}).json() == {"agent": "t"}


def test_text_and_form_payloads(client: TestClient) -> None:
    text = client.post("/", content=b"hi", headers={"content-type": "text/plain"})
    assert text.json()["payload"] == "hi"
    form = client.post("/?mode=form", data={"field": "value"})
    assert form.json() == {"field": "value"}


@pytest.mark.parametrize("threads", [1, 3])
def test_post_predict_runs_after_the_response(tmp_path: Path, threads: int) -> None:
    with TestClient(make_app(tmp_path, threads_per_process=threads)) as client:
        wait_ready(client)
        client.post("/", json={"n": 1})
        app = client.app
        assert isinstance(app, ReplicaApp)
        deadline = time.monotonic() + 5
        while not app.instance.post and time.monotonic() < deadline:
            client.get("/healthz")  # lets the event loop run its queued callbacks
        assert app.instance.post == [({"payload": {"n": 1}, "config": {"k": "v"}}, {"n": 1})]


def test_get_returns_api_info_and_probes(client: TestClient) -> None:
    info = client.get("/").json()
    assert info["api"] == "test" and info["ready"] is True
    assert info["predict_args"] == ["headers", "payload", "query_params"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    families = {f.name for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {"berth_replica_requests", "berth_replica_in_flight_requests", "berth_replica_request_seconds",
            "berth_replica_predict_duration_seconds", "berth_replica_predictor_init_seconds"} <= families


def test_one_thread_runs_init_and_every_predict(client: TestClient) -> None:
    for _ in range(5):
        client.post("/", json={})
    app = client.app
    assert isinstance(app, ReplicaApp)
    assert app.instance.predict_threads == {app.instance.thread}


def test_with_a_pool_init_and_predict_run_on_pool_threads(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, threads_per_process=2)) as client:
        wait_ready(client)
        for _ in range(5):
            client.post("/", json={})
        app = client.app
        assert isinstance(app, ReplicaApp)
        pool = {thread.ident for thread in threading.enumerate() if thread.name.startswith("predict")}
        assert app.instance.thread in pool and app.instance.predict_threads <= pool


def test_async_predict_and_minimal_signature(tmp_path: Path) -> None:
    source = """
    import asyncio
    class PythonPredictor:
        def __init__(self):
            pass
        async def predict(self, payload):
            await asyncio.sleep(0)
            return {"double": payload * 2}
    """
    with TestClient(make_app(tmp_path, source)) as client:
        wait_ready(client)
        assert client.post("/", json=21).json() == {"double": 42}


def test_not_ready_until_init_returns(tmp_path: Path) -> None:
    source = """
    import threading
    GATE = threading.Event()
    class PythonPredictor:
        def __init__(self, config):
            GATE.wait(10)
        def predict(self, payload):
            return 1
    """
    with TestClient(make_app(tmp_path, source, threads_per_process=2)) as client:
        assert client.get("/readyz").status_code == 503
        response = client.post("/", json={})
        assert response.status_code == 503 and "initialising" in response.json()["error"]
        import sys

        sys.modules["berth_predictor"].GATE.set()
        wait_ready(client)
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("init", "predict_args", "message"),
    [('raise RuntimeError("no model")', "payload", "no model"),
     ("pass", "payload, model", "PythonPredictor.predict declares model, which berth cannot supply")],
)
def test_a_predictor_that_cannot_load_calls_on_fatal(tmp_path: Path, init: str, predict_args: str,
                                                     message: str) -> None:
    source = f"""
    class PythonPredictor:
        def __init__(self, config):
            {init}
        def predict(self, {predict_args}):
            return 1
    """
    failures: list[BaseException] = []
    app = make_app(tmp_path, source)
    app.on_fatal = failures.append
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/readyz").status_code == 503
    assert len(failures) == 1 and message in str(failures[0])


BATCHED = """
import asyncio, time

class PythonPredictor:
    def __init__(self, config):
        self.sizes = []

    {kind}def predict(self, payload, query_params):
        self.sizes.append(len(payload))
        if any(q.get("fail") for q in query_params):
            raise RuntimeError("the batch broke")
        return [{{"doubled": p * 2}} for p in payload]
"""


@pytest.mark.parametrize("kind", ["", "async "])
@pytest.mark.anyio
async def test_server_side_batching_gathers_concurrent_requests(tmp_path: Path, kind: str) -> None:
    import httpx

    app = make_app(tmp_path, BATCHED.format(kind=kind),
                   server_side_batching={"max_batch_size": 4, "batch_interval": "200ms"})
    await app.load()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        responses = await asyncio.gather(*(client.post("/", json=i) for i in range(8)))
        assert [r.json() for r in responses] == [{"doubled": i * 2} for i in range(8)]
        assert app.instance.sizes == [4, 4]
        failed = await asyncio.gather(client.post("/?fail=1", json=1), client.post("/", json=2))
        assert [r.status_code for r in failed] == [500, 500]
        assert "the batch broke" in failed[1].json()["error"]
        families = {f.name: f for f in text_string_to_metric_families((await client.get("/metrics")).text)}
        counts = {s.name: s.value for name in ("berth_replica_batch_size", "berth_replica_batch_wait_seconds")
                  for s in families[name].samples if s.name.endswith("_count")}
        assert counts == {"berth_replica_batch_size_count": 3, "berth_replica_batch_wait_seconds_count": 3}


MULTI = """
class PythonPredictor:
    def __init__(self, config, python_client):
        self.client = python_client
        self.loaded = []

    def load_model(self, model_path):
        self.loaded.append(model_path)
        return open(model_path + "/weights.txt").read().strip()

    def predict(self, payload, query_params):
        return {"weights": self.client.get_model(query_params.get("model"), query_params.get("version", "latest"))}
"""


def test_python_client_loads_models_on_first_use_with_an_lru_cache(tmp_path: Path) -> None:
    for model, version in (("a", "1"), ("a", "2"), ("b", "1")):
        folder = tmp_path / "models" / model / version
        folder.mkdir(parents=True)
        (folder / "weights.txt").write_text(f"{model}{version}")
    app = make_app(tmp_path, MULTI, models={"dir": "models", "cache_size": 1, "disk_cache_size": 1})
    with TestClient(app) as client:
        wait_ready(client)
        assert client.post("/?model=a", json={}).json() == {"weights": "a2"}  # latest = highest version
        assert client.post("/?model=a&version=1", json={}).json() == {"weights": "a1"}
        assert client.post("/?model=b", json={}).json() == {"weights": "b1"}
        missing = client.post("/?model=c", json={})
        assert missing.status_code == 404 and missing.json()["available"] == ["a", "b"]
        assert len(app.instance.loaded) == 3  # each loaded once, on first use


DECLARED = """
class PythonPredictor:
    model_metadata = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
                      "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1]}]}

    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"sum": payload["x"].sum(axis=1)}
"""


def test_a_python_predictor_can_speak_the_inference_protocol(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, DECLARED)) as client:
        wait_ready(client)
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/test").json()["inputs"][0]["name"] == "x"
        body = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
        result = client.post("/v2/models/test/infer", json=body).json()
        assert result["outputs"] == [{"name": "sum", "datatype": "FP32", "shape": [2], "data": [3.0, 7.0]}]
        assert client.get("/v2/models/other").status_code == 404
        bad = client.post("/v2/models/test/infer", json={"inputs": [{"name": "x", "shape": [3], "datatype": "FP32",
                                                                     "data": [1, 2]}]})
        assert bad.status_code == 400


DECLARED_WITH_MODELS = DECLARED.replace("""    def __init__(self, config):
        pass
""", """    def __init__(self, config, python_client):
        self.client = python_client

    def load_model(self, model_path):
        return model_path
""")


def test_a_python_predictor_with_models_answers_the_inference_protocol_itself(tmp_path: Path) -> None:
    """python_client's models are opaque to berth: metadata and infer go to the predictor, not to a session."""
    (tmp_path / "models" / "m" / "1").mkdir(parents=True)
    with TestClient(make_app(tmp_path, DECLARED_WITH_MODELS, models={"dir": "models"})) as client:
        wait_ready(client)
        assert client.get("/v2/models/test").json()["platform"] == "python"
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        assert client.post("/v2/models/test/infer", json=body).json()["outputs"][0]["data"] == [3.0]
