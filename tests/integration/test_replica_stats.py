"""A replica process's GET /stats and /metrics, in-process: what is counted, and that both agree."""

import asyncio
import logging
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from berth.config.schema import RealtimeAPI
from berth.observability.histogram import BATCH_SIZE_BOUNDS, LATENCY_BOUNDS, Histogram
from berth.runtime.app import ReplicaApp, ReplicaSettings
from berth.runtime.contract import OTHER_CLASS, PREDICTION_VALUE_BOUNDS
from tests.integration.test_runtime_app import wait_ready

PREDICTOR = """
import time
import numpy as np
from starlette.responses import JSONResponse

class PythonPredictor:
    def __init__(self, config):
        time.sleep(config.get("init_sleep", 0))

    def predict(self, payload, query_params):
        mode = query_params.get("mode")
        if mode == "raise":
            raise ValueError("broken")
        if mode == "numpy":
            return np.float32(payload)
        if mode == "numpy-int":
            return np.int64(payload)
        if mode == "array":
            return np.array(payload)
        if mode == "keyed":
            return {"label": payload, "score": 0.5}
        if mode == "keyed-list":
            return {"label": payload}
        if mode == "response":
            return JSONResponse({"label": payload})
        return payload
"""


def make_app(tmp_path: Path, monitoring: dict[str, Any] | None = None, source: str = PREDICTOR,
             **predictor: Any) -> ReplicaApp:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(source))
    spec: dict[str, Any] = {"name": "stats", "kind": "RealtimeAPI",
                            "predictor": {"type": "python", "path": "predictor.py", **predictor}}
    if monitoring is not None:
        spec["monitoring"] = monitoring
    return ReplicaApp(ReplicaSettings(api=RealtimeAPI.model_validate(spec), project=tmp_path, version="v-1"))


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def start(monitoring: dict[str, Any] | None = None, **predictor: Any) -> TestClient:
        client = TestClient(make_app(tmp_path, monitoring, **predictor))
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client
    yield start
    for client in clients:
        client.__exit__(None, None, None)


def test_counts_add_up_across_requests(serve: Any) -> None:
    client = serve(config={"init_sleep": 0.2})
    for payload in (1, 2, 3):
        assert client.post("/", json=payload).status_code == 200
    assert client.post("/?mode=raise", json=1).status_code == 500
    assert client.post("/", content=b"{not json", headers={"content-type": "application/json"}).status_code == 400
    stats = client.get("/stats").json()
    assert stats["requests"] == {"2XX": 3, "4XX": 1, "5XX": 1}
    predict = Histogram.from_json(stats["predict"])
    assert predict.bounds == LATENCY_BOUNDS and predict.count == 4  # the bad payload never reached predict
    assert 0.2 <= stats["init_seconds"] < 10
    assert stats["incarnation"].startswith(f"{os.getpid()}-") and stats["process"] == 0
    assert stats["version"] == "v-1" and stats["in_flight"] == 0 and stats["predictions"] is None
    assert Histogram.from_json(stats["batch_size"]).count == 0
    assert client.get("/stats").json()["incarnation"] == stats["incarnation"]


def test_predict_time_is_measured_on_the_pool_threads_too(serve: Any) -> None:
    client = serve(threads_per_process=2)
    assert client.post("/", json=1).status_code == 200
    assert client.post("/?mode=raise", json=1).status_code == 500
    stats = client.get("/stats").json()
    assert Histogram.from_json(stats["predict"]).count == 2 and stats["requests"]["5XX"] == 1


def test_classification_counts_labels_of_every_kind(serve: Any) -> None:
    client = serve({"model_type": "classification"})
    for mode, payload in (("", "cat"), ("", "cat"), ("", 3), ("numpy-int", 3), ("array", ["dog", "cat"]),
                          ("", ["dog", "dog"])):
        assert client.post(f"/?mode={mode}", json=payload).status_code == 200
    predictions = client.get("/stats").json()["predictions"]
    assert predictions == {"model_type": "classification", "key": None, "classes": {"cat": 3, "3": 2, "dog": 3},
                           "values": None, "wrong_type": 0}


def test_classification_keeps_at_most_a_hundred_labels(serve: Any) -> None:
    client = serve({"model_type": "classification"})
    assert client.post("/", json=[f"label-{i}" for i in range(105)]).status_code == 200
    classes = client.get("/stats").json()["predictions"]["classes"]
    assert len(classes) == 101 and classes[OTHER_CLASS] == 5 and classes["label-99"] == 1


def test_classification_with_a_key(serve: Any) -> None:
    client = serve({"model_type": "classification", "key": "label"})
    for mode, payload in (("keyed", "a"), ("keyed-list", ["b", "a"]), ("", [{"label": "c"}, {"label": "a"}])):
        assert client.post(f"/?mode={mode}", json=payload).status_code == 200
    predictions = client.get("/stats").json()["predictions"]
    assert predictions["key"] == "label" and predictions["classes"] == {"a": 3, "b": 1, "c": 1}


def test_regression_values_min_max_and_histogram(serve: Any) -> None:
    client = serve({"model_type": "regression"})
    for mode, payload in (("", 2), ("", -0.5), ("numpy", 1.5), ("array", [10, 20]), ("", 0)):
        assert client.post(f"/?mode={mode}", json=payload).status_code == 200
    values = client.get("/stats").json()["predictions"]["values"]
    assert (values["min"], values["max"], values["count"], values["sum"]) == (-0.5, 20, 6, 33)
    histogram = Histogram.from_json(values)
    assert histogram.bounds == PREDICTION_VALUE_BOUNDS
    assert histogram.counts[PREDICTION_VALUE_BOUNDS.index(0.0)] == 1  # 0 lands on its own bound


def test_a_wrong_type_is_counted_logged_once_and_served(serve: Any, caplog: pytest.LogCaptureFixture) -> None:
    client = serve({"model_type": "regression", "key": "score"})
    caplog.set_level(logging.WARNING, logger="berth.replica")
    responses = [client.post("/", json="text"), client.post("/?mode=keyed", json=True),
                 client.post("/", json={"score": True}), client.post("/?mode=response", json="x"),
                 client.post("/", json={"score": None})]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200]
    assert responses[1].json() == {"label": True, "score": 0.5}
    predictions = client.get("/stats").json()["predictions"]
    assert predictions["wrong_type"] == 4 and predictions["values"]["count"] == 1
    warnings = [r for r in caplog.records if "prediction monitoring" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "expected a finite number" in message and "str" in message and "'score'" in message


BATCHED = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return [p * 2 for p in payload]
"""


@pytest.mark.anyio
async def test_batches_count_one_predict_call_and_each_requests_own_prediction(tmp_path: Path) -> None:
    app = make_app(tmp_path, {"model_type": "regression"}, BATCHED,
                   server_side_batching={"max_batch_size": 4, "batch_interval": "200ms"})
    await app.load()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") as client:
        responses = await asyncio.gather(*(client.post("/", json=i) for i in range(8)))
        assert [r.json() for r in responses] == [i * 2 for i in range(8)]
        stats = (await client.get("/stats")).json()
    batch_size = Histogram.from_json(stats["batch_size"])
    assert batch_size.bounds == BATCH_SIZE_BOUNDS and (batch_size.count, batch_size.sum) == (2, 8)
    assert Histogram.from_json(stats["batch_wait"]).count == 2
    assert Histogram.from_json(stats["predict"]).count == 2
    values = stats["predictions"]["values"]
    assert (values["count"], values["sum"], values["min"], values["max"]) == (8, 56, 0, 14)
    assert stats["requests"]["2XX"] == 8


def test_metrics_are_valid_and_agree_with_stats(serve: Any) -> None:
    client = serve({"model_type": "classification"})
    for payload in ("cat", "cat", "dog"):
        client.post("/", json=payload)
    client.post("/?mode=raise", json=1)
    stats = client.get("/stats").json()
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    api = ("api_name", "stats")
    assert samples[("berth_replica_requests_total", (api, ("code", "2XX")))] == 3
    assert samples[("berth_replica_requests_total", (api, ("code", "5XX")))] == 1
    assert samples[("berth_replica_in_flight_requests", (api,))] == 0
    assert samples[("berth_replica_predict_duration_seconds_count", (api,))] == stats["predict"]["count"] == 4
    assert samples[("berth_replica_predict_duration_seconds_bucket", (api, ("le", "+Inf")))] == 4
    assert samples[("berth_replica_request_seconds_count", (api,))] == 4
    assert samples[("berth_replica_predictor_init_seconds", (api,))] == stats["init_seconds"]
    assert samples[("berth_replica_predictions_total", (api, ("class", "cat")))] == 2
    assert samples[("berth_replica_prediction_wrong_type_total", (api,))] == 0
    for name in ("berth_replica_batch_size", "berth_replica_batch_wait_seconds"):
        assert families[name].type == "histogram"


def test_regression_metrics_render_the_value_histogram(serve: Any) -> None:
    client = serve({"model_type": "regression"})
    for payload in (-3, 0.002, 7):
        client.post("/", json=payload)
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    # With buckets below zero, Prometheus' rules leave out _sum and _count: the +Inf bucket is the count.
    buckets = {s.labels["le"]: s.value for s in families["berth_replica_prediction_value"].samples}
    assert buckets["+Inf"] == 3 and buckets["-1000000.0"] == 0 and buckets["0.0025"] == 2
    assert families["berth_replica_prediction_value_min"].samples[0].value == -3
    assert families["berth_replica_prediction_value_max"].samples[0].value == 7
    assert buckets["0.0"] == 1  # only -3 is at or below 0
