"""Prediction monitoring, request history and request logs with a real daemon, gateway and replica:
what the replica predicted shows in `berth get API`, the requests in `--since` and `logs --requests`."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.process.harness import Berth, wait_for, write_project

SPEC = """
- name: api
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  monitoring:
    model_type: classification
    key: label
  autoscaling:
    min_replicas: 1
    max_replicas: 1
"""

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"label": payload, "score": 0.5}
"""

LABELS = ["cat"] * 20 + ["dog"] * 10


def test_predicted_classes_requests_and_request_logs_show_in_the_cli(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, PREDICTOR)), "--wait")
    request_ids = []
    with httpx.Client(timeout=30) as client:
        for label in LABELS:
            response = client.post(f"{berth.base_url}/api", json=label)
            assert response.status_code == 200, response.text
            request_ids.append(response.headers["x-request-id"])

    def predictions() -> dict[str, Any] | None:
        document = berth.get("api")
        summary = document.get("predictions") or {}
        return document if summary.get("classes") == {"cat": 20, "dog": 10} else None

    document = wait_for(predictions, 40, "the predicted classes in `berth get api -o json`", interval=0.5)
    assert document["monitoring"] == {"model_type": "classification", "key": "label"}
    assert document["drift"]["verdict"] == "not enough data"  # 30 predictions, and the first day is filling

    def windowed() -> dict[str, Any] | None:
        metrics = json.loads(berth.run("get", "api", "--since", "1h", "-o", "json").stdout)["metrics"]
        return metrics if metrics["2XX"] == len(LABELS) else None

    metrics = wait_for(windowed, 40, "the requests in the history window", interval=0.5)
    assert metrics["requests"] == len(LABELS) and metrics["p99"] is not None
    pretty = berth.run("get", "api").stdout
    assert "predictions (classification, key label), all history (up to 14 days): 30" in pretty
    assert "drift: not enough data yet" in pretty

    def logged() -> list[dict[str, Any]] | None:
        lines = berth.run("logs", "api", "--requests", "-o", "json").stdout.splitlines()
        entries = [json.loads(line) for line in lines]
        return entries if len(entries) == len(LABELS) else None

    entries = wait_for(logged, 20, "one request log line per request", interval=0.5)
    assert [entry["request_id"] for entry in entries] == request_ids
    assert {entry["status"] for entry in entries} == {200}
    table = berth.run("logs", "api", "--requests", "--tail", "1").stdout.splitlines()
    assert len(table) == 1 and request_ids[-1] in table[0] and " 200 " in table[0]

    pinned = berth.run("monitor", "baseline", "api", "--since", "1h").stdout
    assert "api: drift is measured against" in pinned and "(pinned)" in pinned
    assert berth.get("api")["drift"]["reference"]["source"] == "pinned"


def test_history_and_predictions_survive_a_killed_daemon_without_counting_twice(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, PREDICTOR)), "--wait")
    with httpx.Client(timeout=30) as client:
        for label in LABELS:
            assert client.post(f"{berth.base_url}/api", json=label).status_code == 200

    def counted() -> dict[str, Any] | None:
        document = json.loads(berth.run("get", "api", "--since", "1h", "-o", "json").stdout)
        ready = (document.get("predictions") or {}).get("classes") == {"cat": 20, "dog": 10}
        return document if ready and document["metrics"]["2XX"] == len(LABELS) else None

    wait_for(counted, 40, "the predictions and requests in the history", interval=0.5)
    daemon = json.loads(berth.run("cluster", "status", "-o", "json").stdout)["pid"]
    os.kill(daemon, signal.SIGKILL)  # the supervisor starts another, which adopts the replica

    def restarted() -> bool:
        return bool(json.loads(berth.run("cluster", "status", "-o", "json", check=False).stdout).get("pid")
                    not in (None, daemon))

    wait_for(restarted, 30, "the supervisor to restart the daemon", interval=0.5)
    with httpx.Client(timeout=30) as client:
        assert client.post(f"{berth.base_url}/api", json="bird").status_code == 200

    def after() -> dict[str, Any] | None:
        document = json.loads(berth.run("get", "api", "--since", "1h", "-o", "json").stdout)
        return document if (document.get("predictions") or {}).get("classes", {}).get("bird") == 1 else None

    document = wait_for(after, 40, "the prediction made after the restart", interval=0.5)
    assert document["predictions"]["classes"] == {"cat": 20, "dog": 10, "bird": 1}
    assert document["metrics"]["2XX"] == len(LABELS) + 1


REGRESSION = SPEC.replace("model_type: classification\n    key: label", "model_type: regression\n    key: score")
SCORES = [0.5, 1.5, 2.0, 7.0, 42.0]


def test_regression_values_show_min_max_average_and_a_histogram(berth: Berth, tmp_path: Path) -> None:
    predictor = PREDICTOR.replace('{"label": payload, "score": 0.5}', '{"score": payload}')
    berth.run("deploy", str(write_project(tmp_path / "p", REGRESSION, predictor)), "--wait")
    with httpx.Client(timeout=30) as client:
        for score in SCORES:
            assert client.post(f"{berth.base_url}/api", json=score).status_code == 200
        assert client.post(f"{berth.base_url}/api", json="not a number").status_code == 200

    def summary() -> dict[str, Any] | None:
        found = berth.get("api").get("predictions") or {}
        return found if found.get("count") == len(SCORES) and found.get("wrong_type") == 1 else None

    found = wait_for(summary, 40, "the predicted values in `berth get api -o json`", interval=0.5)
    assert (found["min"], found["max"]) == (0.5, 42.0)
    assert abs(found["avg"] - sum(SCORES) / len(SCORES)) < 1e-9
    assert sum(found["histogram"]["counts"]) == len(SCORES)
    pretty = berth.run("get", "api").stdout
    assert "predictions (regression, key score), all history (up to 14 days): 5" in pretty
    assert "min 0.5   max 42   avg 10.6" in pretty
    assert "1 response was not a regression prediction" in pretty
