"""Operations on one API in order, `deploy --wait` of an API at zero, and a replica's process killed.

Real daemon, real replicas; short autoscaling windows so scale-to-zero takes seconds.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from berth.client import Client
from berth.control.paths import Paths
from berth.errors import Conflict
from tests.process.harness import SLEEPY, Berth, wait_for, write_project

DRAINY = """
- name: drainy
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
"""

SCALE_TO_ZERO = """
- name: lazy
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  autoscaling:
    min_replicas: 0
    window: 10s
    downscale_stabilization_period: 0s
"""

BROKEN_INIT = """
class PythonPredictor:
    def __init__(self, config):
        raise RuntimeError("the model file is missing")

    def predict(self, payload):
        return payload
"""

TWO_PROCESSES = """
- name: pair
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: 2
"""


def test_a_deploy_during_a_delete_is_refused_and_the_delete_finishes(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", DRAINY, SLEEPY)
    berth.run("deploy", str(project), "--wait")
    answers: list[int] = []
    slow = threading.Thread(target=lambda: answers.append(
        httpx.post(f"{berth.base_url}/drainy", json=10, timeout=30).status_code))
    client = Client(Paths(berth.home))  # polls without a CLI start each time
    slow.start()
    wait_for(lambda: client.get_api("drainy")["in_flight"] >= 1, 10, "the slow request to be in flight")
    started = time.monotonic()
    delete = berth.popen("delete", "drainy")
    try:
        wait_for(lambda: client.get_api("drainy")["deleting"], 10, "the delete to begin")
        deploy = berth.run("deploy", str(project), check=False)
        assert deploy.returncode == 4, deploy.stdout + deploy.stderr
        assert "cannot deploy 'drainy': it is being deleted (1 replica(s) still stopping, finishing 1 request(s))" \
            in deploy.stderr
        assert "once `berth get` no longer lists 'drainy'" in deploy.stderr
        with pytest.raises(Conflict, match="cannot refresh 'drainy': it is being deleted"):
            client.refresh("drainy")
        out, err = delete.communicate(timeout=60)
    finally:
        delete.kill()
        slow.join(timeout=30)
        client.close()
    assert delete.returncode == 0 and out.strip() == "deleted drainy", out + err
    assert time.monotonic() - started < 30  # the request ended after 4 s: no 90 s wait
    assert answers == [200]
    assert berth.get() == []
    assert berth.run("deploy", str(project)).stdout.strip() == "creating drainy"


def test_deploy_wait_of_an_api_at_zero_reports_a_failing_init(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", SCALE_TO_ZERO, BROKEN_INIT)
    result = berth.run("deploy", str(project), "--wait", "--timeout", "120", check=False)
    assert result.returncode == 6, result.stdout + result.stderr
    assert "RuntimeError: the model file is missing" in result.stderr
    assert 'raise RuntimeError("the model file is missing")' in result.stderr  # the traceback
    assert berth.get("lazy")["status"] == "error"


def test_deploy_wait_of_an_api_at_zero_proves_it_starts_then_scales_back(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", SCALE_TO_ZERO, SLEEPY)
    result = berth.run("deploy", str(project), "--wait", "--timeout", "120")
    assert "lazy is live" in result.stdout
    events = [e["message"] for e in berth.get("lazy")["events"]]
    assert any("replicas 0 -> 1 (deploy --wait: one replica proves the version starts)" in m for m in events)
    assert any(m.startswith("replica ") and " ready in " in m for m in events)
    wait_for(lambda: berth.get("lazy")["replicas"] == [] and berth.get("lazy")["requested"] == 0, 60,
             "the API to scale back to zero")
    assert berth.get("lazy")["status"] == "live"


def test_a_sigkilled_process_of_a_two_process_replica_is_reported_as_sigkill(berth: Berth, tmp_path: Path) -> None:
    berth.run("deploy", str(write_project(tmp_path / "p", TWO_PROCESSES, SLEEPY)), "--wait")
    (replica,) = berth.get("pair")["replicas"]
    children = wait_for(lambda: psutil.Process(replica["pid"]).children(), 10, "the second process")
    os.kill(children[0].pid, signal.SIGKILL)

    def reported() -> str | None:
        return next((e["message"] for e in berth.get("pair")["events"] if e["kind"] == "replica_failed"), None)
    message = wait_for(reported, 30, "the failure event")
    assert "a process of the replica was killed by SIGKILL; the others were stopped" in message, message
    assert "SIGTERM" not in message
    wait_for(lambda: berth.get("pair")["status"] == "live", 60, "the replica to be restarted")
