"""The ONNX example through berth vs plain onnxruntime in-process: the per-request serving overhead.

    python bench/onnx_serving.py [--duration 5] [--rounds 3]

Plain: `InferenceSession.run` on the example's sample (one image), timed in a loop in this process.
berth: the same request to examples/onnx-classifier through the gateway under wrk (1 connection for
latency, 32 for throughput). The overhead is berth's p50 minus onnxruntime's median call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort
from common import REPO, BerthInstance, median_result, wrk

EXAMPLE = REPO / "examples" / "onnx-classifier"


def plain(sample: dict[str, list[list[float]]], calls: int = 5000) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(EXAMPLE / "model.onnx"), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feed = {"input": np.asarray(sample["input"], dtype=np.float32)}
    for _ in range(200):
        session.run(None, feed)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    body = (EXAMPLE / "sample.json").read_text().strip()
    plain_ms = plain(json.loads(body))
    instance = BerthInstance()
    try:
        instance.cli("deploy", str(EXAMPLE), "--wait")
        url = instance.url("/onnx-classifier")
        one = median_result([wrk(url, 1, args.duration, body) for _ in range(args.rounds)])
        many = median_result([wrk(url, 32, args.duration, body) for _ in range(args.rounds)])
    finally:
        instance.close()
    print(f"onnxruntime in-process, one image: median {plain_ms:.3f} ms per call")
    print(f"berth (gateway -> replica, JSON in and out), 1 connection: p50 {one.p50_ms:.3f} ms, "
          f"p99 {one.p99_ms:.3f} ms, {one.rps:.0f} req/s; 32 connections: {many.rps:.0f} req/s, "
          f"p99 {many.p99_ms:.2f} ms; errors {one.errors + many.errors}")
    print(f"per-request serving overhead at p50: {one.p50_ms - plain_ms:+.3f} ms")


if __name__ == "__main__":
    main()
