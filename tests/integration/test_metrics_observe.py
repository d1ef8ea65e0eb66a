"""The observe app's DashboardSource on a real store: what the ledger and the collector feed into history
comes back out as series, prediction summaries and the dashboard's JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from berth.config.schema import RealtimeAPI
from berth.control.apis import DeployedAPI
from berth.control.collector import ReplicaCollector
from berth.control.fleet import Fleet
from berth.control.gateways import GatewayLinks
from berth.control.history import HistoryRecorder
from berth.control.ledger import RequestLedger
from berth.control.metrics import BerthCollector, MetricsSources
from berth.control.observe import ObserveSource, observe_app
from berth.control.replica import Replica
from berth.control.routing import Routing
from berth.control.store import APIRecord, Store
from berth.errors import NotFound
from berth.observability.histogram import LATENCY_BOUNDS, Histogram

NOW = 1_800_000_000.0


def deployed(name: str) -> DeployedAPI:
    spec = {"name": name, "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"},
            "monitoring": {"model_type": "classification"}}
    model = RealtimeAPI.model_validate(spec)
    record = APIRecord(name=name, endpoint=f"/{name}", spec=model.model_dump(mode="json"), version="v1",
                       snapshot="s", spec_file="berth.yaml", created_at=NOW - 600, updated_at=NOW - 600, requested=1)
    return DeployedAPI(record, model, Path("/nowhere"))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = Store(tmp_path / "state.db")
    store.open()
    yield store
    store.close()


def test_what_the_daemon_counted_comes_back_through_the_source(store: Store, tmp_path: Path) -> None:
    clock = [NOW - 120]
    recorder = HistoryRecorder(store, lambda: clock[0])
    fleet = Fleet(apis={"iris": deployed("iris")})
    ledger = RequestLedger(store, recorder)
    gateways = GatewayLinks(Routing(1), ledger, [], tmp_path / "routes.json")
    collector = ReplicaCollector(fleet, lambda: fleet.replicas, recorder, started_at=0.0)
    replica = Replica(id="r1", api="iris", version="v1", socket_dir=tmp_path, log_path=tmp_path / "log",
                      processes=1, created_at=0.0)
    latency = Histogram.empty(LATENCY_BOUNDS)
    for seconds in (0.002, 0.004, 0.3):
        latency.observe(seconds)
    ledger.observe(0, "gw", {"iris": {"code_2xx": 3, "code_4xx": 0, "code_5xx": 0, "latency_sum": latency.sum,
                                      "latency_count": 3, "codes": {"200": 3}, "latency": latency.as_json(),
                                      "refusals": {}}})
    collector.add_reading(replica, 0, {"incarnation": "1-1", "version": "v1", "predictions": {
        "model_type": "classification", "key": None, "classes": {"cat": 2, "dog": 1}, "values": None,
        "wrong_type": 0}})
    recorder.sample("iris", 1, 1, 0.5)
    recorder.flush(clock[0])
    sources = MetricsSources(fleet=fleet, ledger=ledger, collector=collector, loads=lambda: ({}, {}),
                             decision=lambda api: None, drift=lambda api: None)
    metrics = BerthCollector(sources)
    source = ObserveSource(fleet, gateways, store, metrics, lambda: "http://127.0.0.1:8888", clock=lambda: NOW)
    rows = source.series("iris", NOW - 3600, NOW)
    assert [(row["code_2xx"], row["count"], row["replicas_ready"]) for row in rows] == [(3, 3, 1)]
    assert rows[0]["p50"] is not None and rows[0]["p50"] <= 0.005
    predictions = source.predictions("iris")
    assert predictions is not None and predictions["model_type"] == "classification"
    assert predictions["summary"]["classes"] == {"cat": 2, "dog": 1}
    assert source.overview()[0]["metrics"]["2XX"] == 3
    with pytest.raises(NotFound):
        source.api("nope")
    assert b"berth_requests_total" in source.metrics_text()
    with TestClient(observe_app(metrics, source)) as client:
        assert client.get("/_berth/metrics").status_code == 200
        overview = client.get("/_berth/api/overview")
        assert overview.status_code == 200 and "iris" in overview.text
        assert client.get("/_berth/").status_code == 200
        assert client.post("/_berth/metrics").status_code == 405  # read-only
        for path in ("/_berth/metrics", "/_berth/api/overview", "/_berth/", "/_berth/nope"):
            answer = client.get(path, headers={"X-Request-ID": "trace-7"})
            assert answer.headers["x-request-id"] == "trace-7", path
        missing = client.get("/_berth/nope", headers={"X-Request-ID": "trace-8"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "not found: see /_berth/ and /_berth/metrics", "request_id": "trace-8"}
