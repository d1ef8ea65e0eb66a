"""Failed requests when berth's own processes are killed under load, measured with wrk.

    python bench/failover.py [--duration 6] [--rounds 3] [--connections 32]

For each round and each victim, a fresh berth instance serves the trivial predictor (two replicas)
while wrk loads it; a third of the way in, the victim gets SIGKILL:

  daemon   the control plane: traffic must not notice (budget: zero failed requests); it is back by
           itself, and the time until `berth cluster status` answers again is reported.
  gateway  the gateway worker: only the requests it held may fail (at most one per connection); the
           supervisor starts a new one on the same listening socket at once.
Reported: requests, failed requests (non-2xx and socket errors), and the time to recovery, per round.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import BENCH, BerthInstance, parse_wrk, wait_ok, wrk_running

SPEC = """
- name: trivial
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  autoscaling: {min_replicas: 2, max_replicas: 2}
"""


def status(instance: BerthInstance) -> dict[str, object] | None:
    try:
        return json.loads(instance.cli("cluster", "status", "-o", "json"))  # type: ignore[no-any-return]
    except RuntimeError:
        return None


def recovered(instance: BerthInstance, victim: str, old_pid: int, timeout: float = 30) -> float:
    """Seconds from the kill until a replacement of the victim answers."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        info = status(instance)
        if info is not None:
            pids = [info["pid"]] if victim == "daemon" else list(info["gateway_pids"])  # type: ignore[call-overload]
            if pids and old_pid not in pids:
                return time.perf_counter() - started
        time.sleep(0.02)
    return float("nan")


def one_round(victim: str, project: Path, duration: float, connections: int) -> tuple[int, int, float]:
    instance = BerthInstance()
    try:
        instance.cli("deploy", str(project), "--wait")
        url = instance.url("/trivial")
        wait_ok(url)
        info = status(instance)
        assert info is not None
        pid = int(info["pid"]) if victim == "daemon" else int(info["gateway_pids"][0])  # type: ignore[index]
        with wrk_running(url, connections, duration) as load:
            time.sleep(duration / 3)
            os.kill(pid, signal.SIGKILL)
            back = recovered(instance, victim, pid)
            out, _ = load.communicate()
        result = parse_wrk(out, url)
        return result.requests, result.errors, back
    finally:
        instance.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds of load per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    project = Path(tempfile.mkdtemp(prefix="berth-failover-"))
    (project / "berth.yaml").write_text(SPEC)
    (project / "predictor.py").write_text((BENCH / "trivial" / "predictor.py").read_text())
    print(f"machine: {psutil.cpu_count()} cores; wrk -t1 -c{args.connections}, {args.duration:g}s per round, "
          "SIGKILL a third of the way in")
    for victim in ("daemon", "gateway"):
        rows = [one_round(victim, project, args.duration, args.connections) for _ in range(args.rounds)]
        for requests, errors, back in rows:
            print(f"  kill {victim:<8} requests {requests:>7}  failed {errors:>4}  back after {back:.2f}s")
        budget = "0" if victim == "daemon" else f"<= {args.connections} (what it held)"
        print(f"{victim}: failed requests per round {[r[1] for r in rows]} (budget {budget}); median recovery "
              f"{statistics.median(r[2] for r in rows):.2f}s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
