"""What request logs cost the gateway's hot path: the trivial predictor deployed twice in one berth
instance (one gateway worker), once with networking.request_log_sample_rate 1.0 (every request
logged) and once with 0, loaded alternately by wrk at 1 and 32 connections; medians of the rounds.
Besides req/s, the gateway worker's CPU time per request (user + system, the flushes that follow a
run included), which a machine shared with other work disturbs far less than throughput.

    python bench/request_log.py [--duration 10] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from common import BENCH, BerthInstance, WrkResult, median_result, wait_ok, wrk

RATES = {"logged": 1.0, "unlogged": 0.0}


def project(folder: Path, name: str, rate: float) -> Path:
    """bench/trivial under another name, with the sample rate set."""
    target = folder / name
    target.mkdir()
    shutil.copy(BENCH / "trivial" / "predictor.py", target)
    (target / "berth.yaml").write_text(f"- name: {name}\n  kind: RealtimeAPI\n  predictor:\n    type: python\n"
                                       f"    path: predictor.py\n  networking:\n"
                                       f"    request_log_sample_rate: {rate}\n")
    return target


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


Results = dict[tuple[str, int], tuple[WrkResult, float]]


def measure(instance: BerthInstance, gateway: psutil.Process, duration: float, rounds: int) -> Results:
    """Per setup: the median wrk result, and the median gateway CPU microseconds per request."""
    runs: dict[tuple[str, int], list[WrkResult]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for connections in (1, 32):
            for name in RATES:
                url = instance.url(f"/{name}")
                wrk(url, connections, 1)  # warm-up
                time.sleep(0.6)  # the warm-up's log lines flushed before the count starts
                before = cpu_seconds(gateway)
                result = wrk(url, connections, duration)
                time.sleep(0.6)  # and this run's last lines flushed before it ends
                cpu.setdefault((name, connections), []).append((cpu_seconds(gateway) - before) / result.requests * 1e6)
                runs.setdefault((name, connections), []).append(result)
    return {key: (median_result(value), statistics.median(cpu[key])) for key, value in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {psutil.cpu_count()} cores; wrk -t1; {args.rounds} interleaved rounds of {args.duration:g}s")
    instance = BerthInstance()
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for name, rate in RATES.items():
                instance.cli("deploy", str(project(Path(workdir), name, rate)), "--wait")
                wait_ok(instance.url(f"/{name}"))
            gateway = psutil.Process(json.loads(instance.cli("cluster", "status", "-o", "json"))["gateway_pids"][0])
            results = measure(instance, gateway, args.duration, args.rounds)
            logged_bytes = sum(p.stat().st_size for p in (instance.home / "logs").glob("*/requests-*.log*"))
        finally:
            instance.close()
    report(results)
    print(f"\nrequest log written: {logged_bytes / 2**20:.1f} MiB")


def report(results: Results) -> None:
    print(f"\n{'sample rate':<14}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'gw CPU us/req':>15}")
    for connections in (1, 32):
        for name, rate in RATES.items():
            r, cpu = results[(name, connections)]
            print(f"{rate:<14g}{connections:>6}{r.rps:>10.0f}{r.p50_ms:>9.3f}{r.p99_ms:>9.3f}{r.errors:>8}{cpu:>15.1f}")
        (on, on_cpu), (off, off_cpu) = results[("logged", connections)], results[("unlogged", connections)]
        print(f"  logging every request at {connections} connection(s): req/s {(on.rps / off.rps - 1) * 100:+.1f}%, "
              f"p50 {on.p50_ms - off.p50_ms:+.3f} ms, gateway CPU per request {(on_cpu / off_cpu - 1) * 100:+.1f}% "
              f"({on_cpu - off_cpu:+.1f} us)")

if __name__ == "__main__":
    main()
