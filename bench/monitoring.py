"""What prediction monitoring costs a request, measured side by side in one run.

    python bench/monitoring.py [--requests 5000] [--rounds 30] [--wrk SECONDS] [--connections 8]

(1) The replica's ASGI app in-process, called directly (no HTTP client, no sockets: what is left is
the replica's own request path, where a difference would show most): a trivial predictor returning
{"label": "cat", "score": 0.5}, with classification on `label`, and with regression on `score`; each
app's rounds alternate between its monitor attached and detached (= no `monitoring`); medians of the
rounds' time per request, and the best rounds' (the least disturbed by
other load), with their ratios. (2) `PredictionMonitor.observe` alone, per call. (3) With --wrk:
real replica processes (`python -m berth.runtime --port`), one per variant, under wrk for that many
seconds per round, rounds interleaved; median req/s and p50/p99. (4) A request's own accounting:
the prometheus_client objects the replica used before this change against its plain counters now.
Budget (issue 10): monitoring costs the serving path nothing measurable (ratio within noise, < 1.05).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import timeit
from pathlib import Path
from typing import Any

from common import WrkResult, free_port, median_result, stop, wait_ok, wrk

from berth.config.schema import RealtimeAPI
from berth.runtime.app import ReplicaApp, ReplicaSettings
from berth.runtime.contract import ReplicaArgs
from berth.runtime.monitoring import PredictionMonitor

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        pass

    def predict(self, payload):
        return {"label": "cat", "score": 0.5}
"""
VARIANTS: dict[str, dict[str, Any] | None] = {  # the first: the real-replica runs' baseline
    "no monitoring": None,
    "classification (key)": {"model_type": "classification", "key": "label"},
    "regression (key)": {"model_type": "regression", "key": "score"},
}
SCOPE = {"type": "http", "method": "POST", "path": "/", "query_string": b"",
         "headers": [(b"content-type", b"application/json")]}
BODY = {"type": "http.request", "body": b'{"x": 1}', "more_body": False}


async def _receive() -> dict[str, Any]:
    return BODY


async def _send(message: dict[str, Any]) -> None:
    return None


async def build(project: Path, monitoring: dict[str, Any] | None) -> ReplicaApp:
    spec: dict[str, Any] = {"name": "bench", "kind": "RealtimeAPI",
                            "predictor": {"type": "python", "path": "predictor.py"}}
    if monitoring is not None:
        spec["monitoring"] = monitoring
    app = ReplicaApp(ReplicaSettings(api=RealtimeAPI.model_validate(spec), project=project))
    await app.load()
    assert app.ready
    return app


async def per_request(app: ReplicaApp, requests: int) -> float:
    """Microseconds per request through the app's predict path."""
    started = time.perf_counter()
    for _ in range(requests):
        await app(SCOPE, _receive, _send)  # type: ignore[arg-type]
    return (time.perf_counter() - started) / requests * 1e6


async def in_process(requests: int, rounds: int) -> dict[str, dict[bool, list[float]]]:
    """Per model type: us/request of each round, without monitoring (False) and with it (True).

    Both figures come from the same app, with its monitor detached for the rounds without: the
    request path only tests `monitor is not None`, so this is exactly an API without `monitoring`,
    and separate app objects would add differences of their own (measured: a few us either way).
    """
    result = {}
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
        for name, monitoring in VARIANTS.items():
            if monitoring is None:
                continue
            app = await build(project, monitoring)
            monitor = app.monitor
            await per_request(app, requests // 10)  # warm up
            times: dict[bool, list[float]] = {False: [], True: []}
            for round_ in range(rounds):  # alternating which goes first
                for on in ((False, True) if round_ % 2 else (True, False)):
                    app.monitor = monitor if on else None
                    times[on].append(await per_request(app, requests))
            app.executor.shutdown(wait=False)
            assert monitor is not None and monitor.wrong_type == 0
            assert (monitor.classes or (monitor.values and monitor.values.count))
            result[name] = times
    return result


def observe_alone() -> dict[str, float]:
    """Nanoseconds per PredictionMonitor.observe call."""
    cases = {
        "classification, key, str label": (PredictionMonitor("b", "classification", "label"), {"label": "cat"}),
        "classification, no key, int label": (PredictionMonitor("b", "classification", None), 3),
        "regression, key, float": (PredictionMonitor("b", "regression", "score"), {"score": 0.5}),
        "regression, list of 32 floats": (PredictionMonitor("b", "regression", None), [0.5] * 32),
    }
    result = {}
    for name, (monitor, value) in cases.items():
        timer = timeit.Timer(lambda m=monitor, v=value: m.observe(v))  # type: ignore[misc]
        number = 100_000 if not isinstance(value, list) else 5_000
        result[name] = min(timer.repeat(5, number)) / number * 1e9
    return result


def real_replicas(seconds: float, rounds: int, connections: int) -> dict[str, WrkResult]:
    """One replica process per variant over TCP; wrk against each in turn, every round."""
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
        urls = {}
        try:
            for index, (name, monitoring) in enumerate(VARIANTS.items()):
                spec = {"name": "bench", "kind": "RealtimeAPI",
                        "predictor": {"type": "python", "path": "predictor.py"},
                        **({"monitoring": monitoring} if monitoring else {})}
                (work / f"spec-{index}.json").write_text(json.dumps(spec))
                port = free_port()
                args = ReplicaArgs(spec=work / f"spec-{index}.json", project=work, socket_dir=work / f"run-{index}",
                                   port=port)
                processes.append(subprocess.Popen(args.command(sys.executable)))
                urls[name] = f"http://127.0.0.1:{port}/"
                wait_ok(urls[name])
            results: dict[str, list[WrkResult]] = {name: [] for name in urls}
            for _ in range(rounds):
                for name, url in urls.items():
                    results[name].append(wrk(url, connections, seconds))
            return {name: median_result(values) for name, values in results.items()}
        finally:
            for process in processes:
                stop(process)


def accounting() -> dict[str, float]:
    """Nanoseconds of a request's own accounting: the prometheus_client objects the replica used before
    (in-flight gauge up and down, a class counter, a latency histogram) against the plain counters now
    (the same, plus the predict-time histogram and its two clock reads)."""
    from prometheus_client import CollectorRegistry, Counter, Gauge
    from prometheus_client import Histogram as PromHistogram

    from berth.runtime.metrics import ReplicaMetrics

    registry = CollectorRegistry()
    gauge = Gauge("g", "g", ["api_name"], registry=registry).labels("b")
    counter = Counter("c", "c", ["api_name", "code"], registry=registry).labels("b", "2XX")
    histogram = PromHistogram("h", "h", ["api_name"], registry=registry).labels("b")
    metrics = ReplicaMetrics("b")
    clock = time.perf_counter

    def before() -> None:
        gauge.inc()
        gauge.dec()
        counter.inc()
        histogram.observe(0.003)

    def now() -> None:
        metrics.in_flight += 1
        started = clock()
        metrics.predict.observe(clock() - started)
        metrics.in_flight -= 1
        metrics.observe(200, 0.003)

    number = 100_000
    return {name: min(timeit.repeat(func, number=number, repeat=5)) / number * 1e9
            for name, func in (("prometheus_client objects (before)", before), ("plain counters (now)", now))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--wrk", type=float, default=0, help="seconds of wrk per replica per round (0: skip)")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    measured = asyncio.run(in_process(args.requests, args.rounds))
    print(f"replica request path, in-process ({args.requests} requests x {args.rounds} rounds each way):")
    for name, times in measured.items():
        for label, pick in (("median", statistics.median), ("best", min)):
            off, on = pick(times[False]), pick(times[True])
            print(f"  {name:<22} {label:<6} without {off:6.2f} us/request, with {on:6.2f} us/request: "
                  f"{on / off:5.3f}x ({on - off:+.2f} us)")
    print("PredictionMonitor.observe alone (best of 5 x 100k calls):")
    for name, nanos in observe_alone().items():
        print(f"  {name:<36} {nanos:7.0f} ns/call")
    print("a request's own accounting, per request (best of 5 x 100k):")
    for name, nanos in accounting().items():
        print(f"  {name:<36} {nanos:7.0f} ns")
    if args.wrk:
        served = real_replicas(args.wrk, args.rounds, args.connections)
        base_rps = served["no monitoring"].rps
        print(f"real replica processes, wrk {args.connections} connections, {args.wrk:g} s x {args.rounds} rounds "
              "(medians):")
        for name, result in served.items():
            print(f"  {name:<24} {result.rps:8.0f} req/s  {result.rps / base_rps:5.3f}x  "
                  f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  errors {result.errors}")


if __name__ == "__main__":
    main()
