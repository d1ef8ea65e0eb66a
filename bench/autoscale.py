"""Autoscaling, rollouts and scale from zero, measured on a real daemon.

    python bench/autoscale.py [--step-runs 3] [--cold-runs 3]

1. Load step: 4 closed-loop clients start against an API at 1 replica (window: 10s, stabilization
   0s, target_replica_concurrency 1, a predictor that takes 50 ms); time until a second and until
   the fourth replica serve requests.
2. Rollout under load: 8 clients against 2 replicas while a new version rolls out
   (max_surge 1, max_unavailable 0); every response is counted (budget: 0 failed).
3. Cold request: the latency of the first request to an API scaled to zero (min_replicas: 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from common import REPO, BerthInstance

sys.path.insert(0, str(REPO))
from tests.process.harness import SLEEPY, Load, wait_for  # the tests' closed-loop load generator


def project(folder: Path, name: str, autoscaling: str, tag: str = "one", extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictor.py").write_text(textwrap.dedent(SLEEPY))
    (folder / "berth.yaml").write_text(textwrap.dedent(f"""
    - name: {name}
      kind: RealtimeAPI
      predictor: {{type: python, path: predictor.py, config: {{tag: {tag}}}}}
      autoscaling: {{window: 10s, upscale_stabilization_period: 0s, downscale_stabilization_period: 0s,
                     {autoscaling}}}
    {extra}"""))
    return folder


def serving_pids(instance: BerthInstance, name: str, probes: int = 12) -> int:
    with httpx.Client() as client:
        return len({client.post(instance.url(f"/{name}"), json=0.05).json()["pid"] for _ in range(probes)})


def load_step(instance: BerthInstance, work: Path) -> tuple[float, float]:
    instance.cli("deploy", str(project(work / "step", "step", "min_replicas: 1, max_replicas: 4, "
                                       "target_replica_concurrency: 1, max_upscale_factor: 4")), "--wait")
    time.sleep(11)  # a full window of idle samples first, so the step starts from a settled average
    started = time.monotonic()
    with Load(instance.url("/step"), clients=4, payload=0.05):
        wait_for(lambda: sum(r["status"] == "ready" for r in instance.get("step")["replicas"]) >= 2, 120,  # type: ignore[union-attr]
                 "a second replica", interval=0.1)
        wait_for(lambda: serving_pids(instance, "step") >= 2, 30, "two replicas serving", interval=0.1)
        second = time.monotonic() - started
        wait_for(lambda: sum(r["status"] == "ready" for r in instance.get("step")["replicas"]) >= 4, 120,  # type: ignore[union-attr]
                 "four replicas", interval=0.1)
        fourth = time.monotonic() - started
    instance.cli("delete", "step")
    return second, fourth


def rollout(instance: BerthInstance, work: Path) -> tuple[int, int, float]:
    extra = "  update_strategy: {max_surge: 1, max_unavailable: 0}\n"
    folder = project(work / "roll", "roll", "min_replicas: 2, max_replicas: 2", extra=extra)
    instance.cli("deploy", str(folder), "--wait")
    old = {r["id"] for r in instance.get("roll")["replicas"]}  # type: ignore[union-attr]
    with Load(instance.url("/roll"), clients=8, payload=0.01) as load:
        wait_for(lambda: load.count > 100, 30, "load to flow")
        project(work / "roll", "roll", "min_replicas: 2, max_replicas: 2", tag="two", extra=extra)
        started = time.monotonic()
        instance.cli("deploy", str(folder))

        def done() -> bool:
            api = instance.get("roll")
            ids = {r["id"] for r in api["replicas"]}  # type: ignore[union-attr]
            return api["status"] == "live" and len(ids) == 2 and not ids & old
        wait_for(done, 120, "the rollout", interval=0.1)
        took = time.monotonic() - started
    instance.cli("delete", "roll")
    return len(load.failures()), load.count, took


def cold_requests(instance: BerthInstance, work: Path, runs: int) -> list[float]:
    instance.cli("deploy", str(project(work / "cold", "cold", "min_replicas: 0, max_replicas: 2")), "--wait")
    latencies = []
    for _ in range(runs):
        wait_for(lambda: not instance.get("cold")["replicas"], 120, "zero replicas", interval=0.2)
        started = time.perf_counter()
        response = httpx.post(instance.url("/cold"), json=0, timeout=120)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    instance.cli("delete", "cold")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--step-runs", type=int, default=3)
    args = parser.parse_args()
    instance = BerthInstance()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            steps = [load_step(instance, work) for _ in range(args.step_runs)]
            print(f"load step (window 10s after 10s idle, 4 clients, 50 ms per request; {len(steps)} runs): "
                  f"2nd replica serving after median {statistics.median(s[0] for s in steps):.1f}s "
                  f"({', '.join(f'{s[0]:.1f}' for s in steps)}), 4th ready after median "
                  f"{statistics.median(s[1] for s in steps):.1f}s ({', '.join(f'{s[1]:.1f}' for s in steps)})")
            failed, total, took = rollout(instance, work)
            print(f"rollout under load (8 clients, 2 replicas, surge 1, unavailable 0): {failed} failed of "
                  f"{total} requests (budget 0); rollout took {took:.1f}s")
            cold = cold_requests(instance, work, args.cold_runs)
            print(f"cold request from zero replicas: median {statistics.median(cold):.2f}s "
                  f"(runs: {', '.join(f'{c:.2f}' for c in cold)})")
    finally:
        instance.close()


if __name__ == "__main__":
    main()
