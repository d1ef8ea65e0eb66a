"""A replica started for Kubernetes (`BERTH_MAX_CONCURRENCY`, set by the bootstrap from the spec) turns predict
requests beyond max_replica_concurrency away itself, in the gateway's words; in-process, through the ASGI app."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from berth.config.schema import RealtimeAPI
from berth.runtime.app import ReplicaApp, ReplicaSettings
from berth.runtime.concurrency import REASON, limit_from

pytestmark = pytest.mark.anyio

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        self.gate = None

    async def predict(self, payload):
        await self.gate.wait()
        return {"ok": payload}
"""


async def loaded(tmp_path: Path, limit: int | None) -> ReplicaApp:
    (tmp_path / "predictor.py").write_text(PREDICTOR)
    api = RealtimeAPI.model_validate({"name": "busy", "kind": "RealtimeAPI",
                                      "predictor": {"type": "python", "path": "predictor.py"}})
    app = ReplicaApp(ReplicaSettings(api=api, project=tmp_path, max_concurrency=limit))
    await app.load()
    assert app.ready
    app.instance.gate = asyncio.Event()
    return app


async def until(condition: object, deadline: float = 5.0) -> None:
    limit = time.monotonic() + deadline
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < limit, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_requests_beyond_the_limit_get_503_with_the_gateways_reason(tmp_path: Path) -> None:
    app = await loaded(tmp_path, limit=2)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        held = [asyncio.create_task(client.post("/", json=i)) for i in range(2)]
        await until(lambda: app.metrics.in_flight == 2)
        turned = await client.post("/", json=3, headers={"x-request-id": "r-3"})
        assert turned.status_code == 503
        assert turned.headers["x-berth-reason"] == REASON.decode() == "max-replica-concurrency"
        assert turned.headers["x-request-id"] == "r-3"
        body = turned.json()
        assert body["request_id"] == "r-3" and "max_replica_concurrency" in body["error"] and "2" in body["error"]
        gauge = (await client.get("/metrics")).text
        assert 'berth_replica_in_flight_requests{api_name="busy"} 2.0' in gauge
        app.instance.gate.set()
        assert [(await task).json() for task in held] == [{"ok": 0}, {"ok": 1}]
        assert (await client.post("/", json=4)).status_code == 200  # the limit is on what is in flight now
        assert app.metrics.in_flight == 0
        assert app.metrics.requests["5XX"] == 1 and app.metrics.requests["2XX"] == 3


async def test_other_routes_are_not_limited(tmp_path: Path) -> None:
    app = await loaded(tmp_path, limit=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        held = asyncio.create_task(client.post("/", json=1))
        await until(lambda: app.metrics.in_flight == 1)
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        app.instance.gate.set()
        assert (await held).status_code == 200


async def test_without_a_limit_the_replica_takes_every_request(tmp_path: Path) -> None:
    """Locally the gateway holds the limit: the replica itself admits everything."""
    app = await loaded(tmp_path, limit=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        held = [asyncio.create_task(client.post("/", json=i)) for i in range(5)]
        await until(lambda: app.metrics.in_flight == 5)
        app.instance.gate.set()
        assert [(await task).status_code for task in held] == [200] * 5


def test_the_limit_comes_from_the_environment() -> None:
    assert limit_from({}) is None
    assert limit_from({"BERTH_MAX_CONCURRENCY": ""}) is None
    assert limit_from({"BERTH_MAX_CONCURRENCY": "0"}) is None
    assert limit_from({"BERTH_MAX_CONCURRENCY": " 16 "}) == 16
    with pytest.raises(SystemExit, match="not a whole number"):
        limit_from({"BERTH_MAX_CONCURRENCY": "many"})
