"""The replica collector and the exposition, against replica processes faked as real unix-socket apps.

Each fake process answers GET /stats with the contract's JSON, whose counters the test moves forward
(or back to zero, as a restarted process would); the collector polls them the way the daemon does.
The exposition is parsed with prometheus_client's own parsers, text and OpenMetrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from berth.config.schema import RealtimeAPI
from berth.control.apis import DeployedAPI
from berth.control.collector import ReplicaCollector, fetch_stats
from berth.control.fleet import Fleet
from berth.control.ledger import RequestLedger
from berth.control.metrics import BerthCollector, MetricsSources, render
from berth.control.observe import observe_app
from berth.control.replica import Replica
from berth.control.store import APIRecord, Store
from berth.core.lifecycle import Event
from berth.observability.histogram import BATCH_SIZE_BOUNDS, BATCH_WAIT_BOUNDS, LATENCY_BOUNDS, Histogram
from berth.runtime.contract import PREDICTION_VALUE_BOUNDS, socket_path

pytestmark = pytest.mark.anyio


class FakeProcess:
    """One replica process's cumulative counters, as GET /stats reports them."""

    def __init__(self, index: int, incarnation: str, model_type: str | None = "classification") -> None:
        self.index = index
        self.incarnation = incarnation
        self.model_type = model_type
        self.predict = Histogram.empty(LATENCY_BOUNDS)
        self.batch_size = Histogram.empty(BATCH_SIZE_BOUNDS)
        self.batch_wait = Histogram.empty(BATCH_WAIT_BOUNDS)
        self.values = Histogram.empty(PREDICTION_VALUE_BOUNDS)
        self.classes: dict[str, int] = {}
        self.low: float | None = None
        self.high: float | None = None

    def serve(self, seconds: float, label: str | None = None, value: float | None = None) -> None:
        self.predict.observe(seconds)
        self.batch_size.observe(1)
        self.batch_wait.observe(0.0)
        if label is not None:
            self.classes[label] = self.classes.get(label, 0) + 1
        if value is not None:
            self.values.observe(value)
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)

    def restart(self, incarnation: str) -> None:
        self.__init__(self.index, incarnation, self.model_type)  # type: ignore[misc]

    def stats(self) -> dict[str, Any]:
        predictions: dict[str, Any] | None = None
        if self.model_type == "classification":
            predictions = {"model_type": "classification", "key": None, "classes": self.classes, "values": None,
                           "wrong_type": 0}
        elif self.model_type == "regression":
            predictions = {"model_type": "regression", "key": "score", "classes": None,
                           "values": {**self.values.as_json(), "min": self.low, "max": self.high}, "wrong_type": 1}
        return {"incarnation": self.incarnation, "process": self.index, "version": "v1", "init_seconds": 0.5,
                "predict": self.predict.as_json(), "batch_size": self.batch_size.as_json(),
                "batch_wait": self.batch_wait.as_json(), "requests": {"2XX": self.predict.count, "4XX": 0, "5XX": 0},
                "predictions": predictions}


def stats_app(process: FakeProcess) -> Starlette:
    async def stats(request: Request) -> Response:
        return JSONResponse(process.stats())

    return Starlette(routes=[Route("/stats", stats)])


class Quiet(uvicorn.Server):
    def install_signal_handlers(self) -> None:
        pass


@contextlib.asynccontextmanager
async def serving(app: Any, sock: Path) -> AsyncIterator[None]:
    server = Quiet(uvicorn.Config(app, uds=str(sock), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the fake replica did not start"
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task


@pytest.fixture
def short_dir() -> Any:
    # unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer
    with tempfile.TemporaryDirectory(prefix="berth-m-") as folder:
        yield Path(folder)


def deployed(name: str, monitoring: dict[str, Any] | None, requested: int = 1) -> DeployedAPI:
    spec = {"name": name, "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"}}
    if monitoring is not None:
        spec["monitoring"] = monitoring
    api = RealtimeAPI.model_validate(spec)
    record = APIRecord(name=name, endpoint=f"/{name}", spec=api.model_dump(mode="json"), version="v1",
                       snapshot="snap", spec_file="berth.yaml", created_at=0.0, updated_at=0.0, requested=requested)
    return DeployedAPI(record, api, Path("/nowhere"))


def ready_replica(replica_id: str, api: str, socket_dir: Path, processes: int) -> Replica:
    socket_dir.mkdir()
    replica = Replica(id=replica_id, api=api, version="v1", socket_dir=socket_dir, log_path=socket_dir / "log",
                      processes=processes, created_at=0.0)
    replica.started(pid=1, now=0.0)
    replica.became_ready(1.0)
    return replica


class Sink:
    def __init__(self) -> None:
        self.predictions: list[tuple[str, dict[str, Any]]] = []

    def add_predictions(self, api: str, delta: dict[str, Any]) -> None:
        self.predictions.append((api, delta))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    store = Store(tmp_path / "state.db")
    store.open()
    yield store
    store.close()


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family: Any, suffix: str = "", **labels: str) -> float:
    values = [s.value for s in family.samples if s.name == family.name + suffix
              and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(values) == 1, f"{family.name}{suffix} {labels}: {values}"
    return float(values[0])


async def test_every_process_is_counted_once_and_restarts_start_from_zero(short_dir: Path, store: Store) -> None:
    fleet = Fleet(apis={"iris": deployed("iris", {"model_type": "classification"})})
    replica = fleet.replicas["r1"] = ready_replica("r1", "iris", short_dir / "r1", processes=2)
    processes = [FakeProcess(0, "100-1"), FakeProcess(1, "101-1")]
    sink = Sink()
    collector = ReplicaCollector(fleet, lambda: fleet.replicas, sink, started_at=0.0)
    async with serving(stats_app(processes[0]), socket_path(replica.socket_dir, 0)), \
            serving(stats_app(processes[1]), socket_path(replica.socket_dir, 1)):
        for _ in range(3):
            processes[0].serve(0.002, "setosa")
        processes[1].serve(0.03, "virginica")
        await collector.poll_all()
        await collector.poll_all()  # nothing new: nothing counted twice
        processes[1].serve(0.03, "setosa")
        await collector.poll_all()
        processes[0].restart("100-2")  # the process was restarted: its counters start over
        processes[0].serve(0.002, "virginica")
        await collector.poll_all()
    aggregate = collector.apis["iris"]
    predict = aggregate.versions["v1"].predict
    assert predict is not None and predict.count == 6
    assert aggregate.predictions.classes == {"setosa": 4, "virginica": 2}
    assert sum(sum(d["classes"].values()) for _, d in sink.predictions) == 6
    assert aggregate.init_seconds == {("v1", "r1"): 0.5}


async def test_the_exposition_parses_and_holds_every_source(short_dir: Path, store: Store) -> None:
    fleet = Fleet(apis={"iris": deployed("iris", {"model_type": "classification"}, requested=2),
                        "price": deployed("price", {"model_type": "regression", "key": "score"})})
    iris = fleet.replicas["r1"] = ready_replica("r1", "iris", short_dir / "r1", processes=1)
    price = fleet.replicas["r2"] = ready_replica("r2", "price", short_dir / "r2", processes=1)
    classifier, regressor = FakeProcess(0, "1-1"), FakeProcess(0, "2-1", "regression")
    for label in ("a", "b", "a"):
        classifier.serve(0.004, label)
    for value in (-3.0, 12.0, 400.0):
        regressor.serve(0.1, value=value)
    collector = ReplicaCollector(fleet, lambda: fleet.replicas, started_at=0.0)
    async with serving(stats_app(classifier), socket_path(iris.socket_dir, 0)), \
            serving(stats_app(regressor), socket_path(price.socket_dir, 0)):
        await collector.poll_all()
    collector.replica_failed(price, Event.OUT_OF_MEMORY)
    ledger = RequestLedger(store)
    latency = Histogram.empty(LATENCY_BOUNDS)
    for seconds in (0.003, 0.004, 0.2):
        latency.observe(seconds)
    ledger.observe(0, "gw", {"iris": {"code_2xx": 2, "code_4xx": 0, "code_5xx": 1, "latency_sum": latency.sum,
                                      "latency_count": 3, "codes": {"200": 2, "503": 1},
                                      "latency": latency.as_json(), "refusals": {"no-ready-replica": 1}}})
    decision = {"at": 10.0, "avg_in_flight": 1.5, "target_replica_concurrency": 1.0, "recommendation": 2,
                "request": 2}
    sources = MetricsSources(fleet=fleet, ledger=ledger, collector=collector,
                             loads=lambda: ({"iris": 3}, {"iris": 1}),
                             decision=lambda api: decision if api == "iris" else None,
                             drift=lambda api: 0.07 if api == "price" else None)
    text, content_type = render(BerthCollector(sources), "text/plain")
    assert content_type.startswith("text/plain")
    found = families(text.decode())
    assert sample(found["berth_requests"], "_total", api_name="iris", code="503", code_class="5XX") == 1
    assert sample(found["berth_request_duration_seconds"], "_count", api_name="iris") == 3
    assert sample(found["berth_request_duration_seconds"], "_bucket", api_name="iris", le="0.005") == 2
    assert sample(found["berth_gateway_refusals"], "_total", api_name="iris", reason="no-ready-replica") == 1
    assert sample(found["berth_in_flight_requests"], api_name="iris") == 2
    assert sample(found["berth_held_requests"], api_name="iris") == 1
    assert sample(found["berth_replicas"], api_name="iris", state="desired") == 2
    assert sample(found["berth_replicas"], api_name="iris", state="ready") == 1
    assert sample(found["berth_replica_oom_kills"], "_total", api_name="price") == 1
    assert sample(found["berth_autoscaler_in_flight_average"], api_name="iris") == 1.5
    assert sample(found["berth_predict_duration_seconds"], "_count", api_name="iris", version="v1") == 3
    assert sample(found["berth_batch_size"], "_count", api_name="price", version="v1") == 3
    assert sample(found["berth_predictor_init_seconds"], api_name="iris", version="v1", replica="r1") == 0.5
    assert sample(found["berth_predictions"], "_total", api_name="iris", **{"class": "a"}) == 2
    # negative bounds: by the OpenMetrics rule no _sum (and so no _count); +Inf is the count
    assert sample(found["berth_prediction_value"], "_bucket", api_name="price", le="+Inf") == 3
    assert sample(found["berth_prediction_value"], "_bucket", api_name="price", le="0.0") == 1
    assert sample(found["berth_prediction_value_min"], api_name="price") == -3.0
    assert sample(found["berth_prediction_value_max"], api_name="price") == 400.0
    assert sample(found["berth_prediction_wrong_type"], "_total", api_name="price") == 1
    assert sample(found["berth_prediction_drift_psi"], api_name="price") == 0.07
    openmetrics, kind = render(BerthCollector(sources), "application/openmetrics-text; version=1.0.0")
    assert kind.startswith("application/openmetrics-text")
    names = {family.name for family in parse_openmetrics(openmetrics.decode())}
    assert {"berth_requests", "berth_request_duration_seconds", "berth_prediction_value"} <= names


async def test_the_observe_app_serves_metrics_on_a_unix_socket(short_dir: Path, store: Store) -> None:
    fleet = Fleet(apis={"iris": deployed("iris", None)})
    sources = MetricsSources(fleet=fleet, ledger=RequestLedger(store),
                             collector=ReplicaCollector(fleet, lambda: fleet.replicas, started_at=0.0),
                             loads=lambda: ({}, {}), decision=lambda api: None, drift=lambda api: None)
    sock = short_dir / "observe.sock"
    async with serving(observe_app(BerthCollector(sources)), sock):
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(b"GET /_berth/metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n"
                     b"Connection: close\r\n\r\n")
        response = await reader.read()
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"application/openmetrics-text" in head
    assert body.rstrip().endswith(b"# EOF")
    assert b'berth_replicas{api_name="iris",state="desired"} 1' in body


async def test_a_replica_that_does_not_answer_costs_one_timed_out_poll(short_dir: Path) -> None:
    sock = short_dir / "silent.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sock))
    listener.listen()
    try:
        assert await fetch_stats(str(sock), timeout=0.2) is None
        assert await fetch_stats(str(short_dir / "absent.sock"), timeout=0.2) is None
    finally:
        listener.close()


async def test_a_draining_replica_is_polled_once_more_before_sigterm(short_dir: Path) -> None:
    fleet = Fleet(apis={"iris": deployed("iris", None)})
    replica = fleet.replicas["r1"] = ready_replica("r1", "iris", short_dir / "r1", processes=1)
    process = FakeProcess(0, "1-1", model_type=None)
    woken: list[bool] = []
    collector = ReplicaCollector(fleet, lambda: fleet.replicas, wake=lambda: woken.append(True), started_at=0.0)
    async with serving(stats_app(process), socket_path(replica.socket_dir, 0)):
        process.serve(0.01)
        await collector.poll_all()
        process.serve(0.01)  # served after the last regular poll, before the drain ended
        replica.stop_requested(2.0)
        assert collector.final_poll_done(replica) is False  # the poll starts: not yet
        await collector.poll_all()  # a replica in its final poll is not polled by the loop as well
        deadline = asyncio.get_running_loop().time() + 5
        while not collector.final_poll_done(replica):
            assert asyncio.get_running_loop().time() < deadline, "the final poll never finished"
            await asyncio.sleep(0.01)
    predict = collector.apis["iris"].versions["v1"].predict
    assert predict is not None and predict.count == 2
    assert woken == [True]


async def test_a_restarted_daemon_neither_recounts_nor_loses_a_running_process(short_dir: Path) -> None:
    fleet = Fleet(apis={"iris": deployed("iris", {"model_type": "classification"})})
    replica = fleet.replicas["r1"] = ready_replica("r1", "iris", short_dir / "r1", processes=1)
    process = FakeProcess(0, "100-1000.5")  # started at t=1000.5
    state = short_dir / "replica-stats.json"
    first, second, third = Sink(), Sink(), Sink()
    async with serving(stats_app(process), socket_path(replica.socket_dir, 0)):
        process.serve(0.01, "cat")
        old = ReplicaCollector(fleet, lambda: fleet.replicas, first, state_file=state, started_at=1000.0)
        await old.poll_all()
        old.save()
        process.serve(0.01, "dog")  # counted by nobody yet when the daemon restarts
        new = ReplicaCollector(fleet, lambda: fleet.replicas, second, state_file=state, started_at=2000.0)
        new.load()
        await new.poll_all()
        # a daemon without the saved readings cannot tell what was counted: a baseline, nothing counted
        blind = ReplicaCollector(fleet, lambda: fleet.replicas, third, state_file=short_dir / "none.json",
                                 started_at=2000.0)
        blind.load()
        await blind.poll_all()
    assert [d["classes"] for _, d in first.predictions] == [{"cat": 1}]
    assert [d["classes"] for _, d in second.predictions] == [{"dog": 1}]
    assert third.predictions == []
