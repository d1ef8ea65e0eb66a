"""/_berth/metrics with a real daemon, gateway and a replica of two processes: nothing lost, nothing twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.process.harness import SLEEPY, Berth, wait_for, write_project

N = 40

TWO_PROCESSES = """
- name: api
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    processes_per_replica: 2
    config:
      tag: {tag}
  autoscaling:
    min_replicas: 1
    max_replicas: 1
"""


def scrape(berth: Berth) -> str:
    """As a Prometheus would: from the gateway's address, which passes it to the daemon's observe app."""
    response = httpx.get(f"{berth.base_url}/_berth/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def total(text: str, name: str, **labels: str) -> float:
    found = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


def deploy(berth: Berth, folder: Path, tag: str) -> str:
    berth.run("deploy", str(write_project(folder, TWO_PROCESSES.format(tag=tag), SLEEPY)), "--wait")
    return str(berth.get("api")["version"])


def test_every_request_is_counted_once_across_both_processes(berth: Berth, tmp_path: Path) -> None:
    version = deploy(berth, tmp_path / "p", "one")
    pids: set[int] = set()
    with httpx.Client(timeout=30) as client:
        for _ in range(N):
            response = client.post(f"{berth.base_url}/api", json=0.001)
            assert response.status_code == 200
            pids.add(response.json()["pid"])
    assert len(pids) == 2, "both processes of the replica should have answered"

    def counted() -> dict[str, Any] | None:
        text = scrape(berth)
        figures = {"requests": total(text, "berth_requests_total", api_name="api", code="200"),
                   "latency": total(text, "berth_request_duration_seconds_count", api_name="api"),
                   "predict": total(text, "berth_predict_duration_seconds_count", api_name="api", version=version),
                   "ready": total(text, "berth_replicas", api_name="api", state="ready")}
        return figures if figures == {"requests": N, "latency": N, "predict": N, "ready": 1} else None

    wait_for(counted, 30, f"{N} requests counted at the gateway and in the replica's two processes")
    text = scrape(berth)
    assert total(text, "berth_replicas", api_name="api", state="desired") == 1
    assert total(text, "berth_predictor_init_seconds", api_name="api", version=version) > 0
    wait_for(lambda: total(scrape(berth), "berth_replica_resident_memory_bytes", api_name="api") > 0, 20,
             "the replica's memory to be sampled")
    # the observe socket is the daemon's own, like the management socket
    assert (berth.home / "run" / "observe.sock").stat().st_mode & 0o777 == 0o600
    openmetrics = httpx.get(f"{berth.base_url}/_berth/metrics", timeout=10,
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def test_a_replaced_replica_is_polled_once_more_before_it_stops(berth: Berth, tmp_path: Path) -> None:
    old = deploy(berth, tmp_path / "p", "one")
    with httpx.Client(timeout=30) as client:
        for _ in range(N):
            assert client.post(f"{berth.base_url}/api", json=0.0).status_code == 200
    # Redeploy at once: whatever the 2 s poll has not seen yet comes from the poll before SIGTERM.
    new = deploy(berth, tmp_path / "p2", "two")
    assert new != old
    wait_for(lambda: all(r["version"] == new for r in berth.get("api")["replicas"]), 60,
             "the old replica to be gone")
    text = scrape(berth)
    assert total(text, "berth_predict_duration_seconds_count", api_name="api", version=old) == N
    assert total(text, "berth_requests_total", api_name="api") == N
