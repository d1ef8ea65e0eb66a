"""Capacity with a real daemon: what never fits is refused at deploy, APIs in error hold no compute, and
an update on a full machine replaces in place. Compute is sized from this machine's own core count.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from berth.control.capacity import detect_gpus
from tests.process.harness import SLEEPY, Berth, wait_for, write_project

CORES = len(os.sched_getaffinity(0))

BROKEN_INIT = """
class PythonPredictor:
    def __init__(self, config):
        raise RuntimeError("broken on purpose")

    def predict(self, payload):
        return payload
"""


def spec(name: str, compute: str, tag: str = "one") -> str:
    return f"""
    - name: {name}
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
        config: {{tag: {tag}}}
      compute: {{{compute}}}
    """


def test_more_cpu_than_the_machine_has_is_refused_at_deploy(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", spec("iris", f"cpu: {CORES + 1}"), SLEEPY)
    result = berth.run("deploy", str(project), check=False)
    assert result.returncode == 8, result.stdout + result.stderr
    assert f"iris: compute.cpu {CORES + 1} does not fit this machine: it has {CORES} cores" in result.stderr
    assert "lower compute.cpu" in result.stderr
    assert berth.get() == []


@pytest.mark.skipif(bool(detect_gpus()), reason="this machine has a GPU")
def test_a_gpu_on_a_machine_without_one_is_refused_at_deploy(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", spec("iris", "cpu: 0.1, gpu: 0.25"), SLEEPY)
    result = berth.run("deploy", str(project), check=False)
    assert result.returncode == 8, result.stdout + result.stderr
    assert "iris: compute.gpu 0.25 does not fit this machine: it has no GPU" in result.stderr


def test_an_api_in_error_does_not_starve_the_next_one(berth: Berth, tmp_path: Path) -> None:
    broken = write_project(tmp_path / "broken", spec("broken", f"cpu: {CORES}"), BROKEN_INIT)
    berth.run("deploy", str(broken))
    wait_for(lambda: berth.get("broken")["status"] == "error", 60, "the broken API to be in error")
    good = write_project(tmp_path / "good", spec("good", f"cpu: {CORES / 2:g}"), SLEEPY)
    berth.run("deploy", str(good))
    # It is placed while the broken one backs off; once placed, the broken one waits for room instead.
    wait_for(lambda: berth.get("good")["status"] == "live", 60, "the good API to go live")
    assert httpx.post(f"{berth.base_url}/good", json=0, timeout=30).status_code == 200


def test_an_update_on_a_full_machine_replaces_in_place(berth: Berth, tmp_path: Path) -> None:
    project = write_project(tmp_path / "p", spec("full", f"cpu: {CORES}"), SLEEPY)
    berth.run("deploy", str(project), "--wait")
    (project / "berth.yaml").write_text(spec("full", f"cpu: {CORES}", tag="two"))
    result = berth.run("deploy", str(project), "--wait", "--timeout", "120", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert httpx.post(f"{berth.base_url}/full", json=0, timeout=30).json()["tag"] == "two"
    events = [e["message"] for e in berth.get("full")["events"]]
    assert any("no room on this machine for a surge replica" in m and "replacing replicas in place, 1 at a time" in m
               for m in events), events
