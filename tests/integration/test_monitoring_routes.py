"""The management API's monitoring routes in-process, on a real store the HistoryRecorder writes:
`get --since` windows, the prediction block and drift, pinned baselines, and the request logs.

The deployer and reconciler are test_deploy_ordering's world (fake supervisor, manual clock)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from berth.control.history import HOUR, HistoryRecorder
from berth.control.management import ManagementAPI
from berth.observability.histogram import LATENCY_BOUNDS, Histogram
from berth.observability.stats import APIStats
from tests.integration.test_deploy_ordering import DeployWorld
from tests.integration.test_reconciler import FakeGateways

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0


class StatsGateways(FakeGateways):
    """The ledger's all-time totals, as the real GatewayLinks answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.totals = APIStats(code_2xx=1000, latency_sum=500.0, latency_count=1000)

    def stats(self, api: str) -> APIStats:
        return self.totals

    def load(self, api: str) -> int:
        return 0


class Monitored:
    def __init__(self, tmp_path: Path) -> None:
        self.world = DeployWorld(tmp_path)
        self.world.clock.now = T0
        self.gateways = StatsGateways()
        self.world.reconciler.gateways = self.gateways
        self.recorder = HistoryRecorder(self.world.store, self.world.clock)
        self.management = ManagementAPI(
            self.world.store, self.world.reconciler, self.world.reconciler.wait_for, self.gateways,  # type: ignore[arg-type]
            self.world.deployer, self.world.paths, lambda: {"host": "127.0.0.1", "port": 8888}, lambda: None,
            self.world.clock)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.management.app), base_url="http://berth")

    def at(self, now: float) -> None:
        self.world.clock.now = now

    def predict(self, **classes: int) -> None:
        self.recorder.add_predictions("api", {"model_type": "classification", "key": None, "classes": classes,
                                              "values": None, "wrong_type": 0})
        self.recorder.flush(self.world.clock.now)

    async def get(self, path: str, **params: str) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def monitored(tmp_path: Path) -> Any:
    subject = Monitored(tmp_path)
    await subject.world.apply(monitoring={"model_type": "classification"})
    yield subject
    await subject.http.aclose()


async def test_since_windows_the_request_figures_from_the_history(monitored: Monitored) -> None:
    latency = Histogram.empty(LATENCY_BOUNDS)
    latency.observe(0.02)
    monitored.at(T0 + 10)
    monitored.recorder.add_requests("api", {"2XX": 1, "5XX": 1, "requests": 2, "seconds": 0.04}, latency)
    monitored.at(T0 + 2 * HOUR + 30)
    monitored.recorder.add_requests("api", {"2XX": 3, "4XX": 1, "requests": 4, "seconds": 0.4}, latency)
    monitored.recorder.flush(T0 + 2 * HOUR + 30)
    [summary] = await monitored.get("/v1/apis", since="3600")
    assert {k: summary["metrics"][k] for k in ("2XX", "4XX", "5XX", "requests")} == \
        {"2XX": 3, "4XX": 1, "5XX": 0, "requests": 4}
    assert summary["metrics"]["avg_request_seconds"] == pytest.approx(0.1)
    assert summary["metrics"]["p50"] is not None
    detail = await monitored.get("/v1/apis/api", since=str(3 * HOUR))
    assert detail["metrics"]["requests"] == 6
    [all_time] = await monitored.get("/v1/apis")
    assert all_time["metrics"]["requests"] == 1000  # without a window: the ledger's totals


async def test_the_detail_has_predictions_and_drift_against_the_first_day_after_the_deploy(
        monitored: Monitored) -> None:
    monitored.at(T0 + 90)
    monitored.predict(cat=150, dog=50)
    detail = await monitored.get("/v1/apis/api")
    assert detail["monitoring"] == {"model_type": "classification", "key": None}
    assert detail["predictions"]["classes"] == {"cat": 150, "dog": 50}
    assert detail["drift"]["verdict"] == "not enough data"  # the first day is still filling
    assert detail["drift"]["reference"]["source"] == "deploy" and detail["drift"]["baseline"][0] == T0
    monitored.at(T0 + 25 * HOUR + 30)
    monitored.predict(cat=50, dog=150)
    detail = await monitored.get("/v1/apis/api")
    assert detail["drift"]["verdict"] == "drifted" and detail["drift"]["psi"] > 0.25
    assert detail["predictions"]["count"] == 400
    recent = await monitored.get("/v1/apis/api", since="3600")
    assert recent["predictions"]["classes"] == {"dog": 150, "cat": 50}


async def test_a_pinned_baseline_is_kept_until_reset(monitored: Monitored) -> None:
    monitored.at(T0 + 25 * HOUR)
    monitored.predict(cat=100, dog=100)
    monitored.at(T0 + 27 * HOUR - 30)
    monitored.predict(cat=110, dog=90)
    response = await monitored.http.post("/v1/apis/api/baseline", json={"since": T0 + 25 * HOUR,
                                                                         "until": T0 + 26 * HOUR})
    pinned = response.json()
    assert pinned["reference"]["source"] == "pinned" and pinned["drift"]["verdict"] == "stable"
    assert (await monitored.get("/v1/apis/api"))["drift"]["baseline"] == [T0 + 25 * HOUR, T0 + 26 * HOUR]
    default = (await monitored.http.post("/v1/apis/api/baseline")).json()
    assert default["reference"]["to"] - default["reference"]["from"] == HOUR
    assert default["reference"]["to"] == T0 + 27 * HOUR - 30
    reset = (await monitored.http.delete("/v1/apis/api/baseline")).json()
    assert reset["reference"]["source"] == "deploy"
    bad = await monitored.http.post("/v1/apis/api/baseline", json={"since": T0 + 27 * HOUR, "until": T0})
    assert bad.status_code >= 400 and "must start before it ends" in bad.json()["error"]
    unknown = await monitored.http.post("/v1/apis/nope/baseline")
    assert unknown.status_code == 404


async def test_request_logs_are_merged_by_time_across_workers(monitored: Monitored) -> None:
    folder = monitored.world.paths.logs / "api"
    folder.mkdir(parents=True, exist_ok=True)

    def line(ts: float, rid: str) -> str:
        return json.dumps({"ts": ts, "request_id": rid, "api": "api", "method": "POST", "path": "/api",
                           "status": 200, "seconds": 0.01, "replica": "r1", "reason": None}) + "\n"

    (folder / "requests-0.log").write_text(line(1, "a") + line(4, "d"))
    (folder / "requests-1.log").write_text(line(2, "b") + line(3, "c") + line(5, "e"))
    (folder / "requests-1.log.1").write_text(line(0.5, "old"))
    (folder / "api-abc.log").write_text("a replica's output\n")
    response = await monitored.http.get("/v1/apis/api/requests", params={"tail": "4"})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(row)["request_id"] for row in response.text.splitlines()] == ["b", "c", "d", "e"]
    everything = await monitored.http.get("/v1/apis/api/requests")
    assert [json.loads(row)["request_id"] for row in everything.text.splitlines()] == ["old", "a", "b", "c", "d", "e"]
    assert (await monitored.http.get("/v1/apis/nope/requests")).status_code == 404
