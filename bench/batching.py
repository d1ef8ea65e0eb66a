"""Server-side batching, measured side by side in one run.

    python bench/batching.py [--duration 5] [--rounds 2] [--batch 32] [--interval 5ms]

The same MLP (bench/mlp: ~2 ms per call, ~0.3 ms per item at batch 32, one thread) served
(a) unbatched in one bare uvicorn + Starlette process, (b) through berth without batching,
(c) through berth with server_side_batching; wrk at 1, 8 and 32 connections; medians of the
interleaved rounds and ratios to (a). Budget (DESIGN.md): batching costs nothing at low load,
(c) >= 0.9x (b) req/s at 1 client, and keeps its gain under load, (c) >= 4x (a) req/s at 32 clients.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BENCH, BerthInstance, WrkResult, free_port, median_result, stop, wait_ok, wrk

ONE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")
CONNECTIONS = (1, 8, 32)


def start_bare() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, str(BENCH / "bare_server.py"), "--project", str(BENCH / "mlp"),
                                "--endpoint", "/mlp", "--port", str(port)], env={**os.environ, **ONE_THREAD})
    url = f"http://127.0.0.1:{port}/mlp"
    wait_ok(url, timeout=60)
    return process, url


def batched_project(work: Path, batch: int, interval: str) -> Path:
    folder = work / "mlp-batched"
    shutil.copytree(BENCH / "mlp", folder)
    (folder / "berth.yaml").write_text(f"""
- name: mlp-batched
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
    config: {{batched: true}}
    server_side_batching: {{max_batch_size: {batch}, batch_interval: {interval}}}
  compute:
    cpu: 1
""")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--interval", default="5ms")
    args = parser.parse_args()
    instance = BerthInstance()
    bare: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            bare, bare_url = start_bare()
            instance.cli("deploy", str(BENCH / "mlp"), "--wait")
            instance.cli("deploy", str(batched_project(Path(tmp), args.batch, args.interval)), "--wait")
            urls = {"a": bare_url, "b": instance.url("/mlp"), "c": instance.url("/mlp-batched")}
            for url in urls.values():
                wait_ok(url)
            runs: dict[tuple[str, int], list[WrkResult]] = {}
            for _ in range(args.rounds):
                for connections in CONNECTIONS:
                    for name, url in urls.items():
                        wrk(url, connections, 1)
                        runs.setdefault((name, connections), []).append(wrk(url, connections, args.duration))
            report({key: median_result(value) for key, value in runs.items()}, args)
        finally:
            if bare is not None:
                stop(bare)
            instance.close()


def report(results: dict[tuple[str, int], WrkResult], args: argparse.Namespace) -> None:
    print(f"\nMLP 3x2048 float32, one thread; batching: max_batch_size {args.batch}, batch_interval {args.interval}")
    print(f"{'setup':<36}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x (a)':>8}{'errors':>8}")
    labels = {"a": "(a) bare uvicorn + Starlette", "b": "(b) berth, no batching", "c": "(c) berth, batching"}
    for connections in CONNECTIONS:
        base = results[("a", connections)].rps
        for name, label in labels.items():
            r = results[(name, connections)]
            print(f"{label:<36}{connections:>8}{r.rps:>9.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.rps / base:>8.2f}"
                  f"{r.errors:>8}")
    alone = results[("c", 1)].rps / results[("b", 1)].rps
    loaded = results[("c", 32)].rps / results[("a", 32)].rps
    print(f"\nbudget: (c) >= 0.9x (b) req/s at 1 client: {alone:.2f}x {'ok' if alone >= 0.9 else 'MISSED'}")
    print(f"budget: (c) >= 4x (a) req/s at 32 clients: {loaded:.2f}x {'ok' if loaded >= 4 else 'MISSED'}")


if __name__ == "__main__":
    main()
