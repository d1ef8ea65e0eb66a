"""Streaming responses: time to first byte and time per token, through the gateway vs direct on the replica.

    python bench/streaming.py [--requests 20] [--tokens 20] [--delay 0.05]

examples/streaming (a generator that sleeps `delay` before each token) is deployed with `berth deploy`
and, side by side, run as a bare replica process on a TCP port (as bench/overhead.py's row (b)). Each
target gets `requests` streamed requests, chunked and as server-sent events, interleaved, over one
keep-alive connection; medians are reported. Time to first byte should be one token's delay plus the
serving overhead; the overhead column subtracts the delay.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from common import REPO, BerthInstance, free_port, stop

from berth.config import load_spec

EXAMPLE = REPO / "examples" / "streaming"


def project(workdir: Path, tokens: int, delay: float) -> Path:
    """A copy of the example with the token count and delay asked for."""
    folder = workdir / "streaming"
    folder.mkdir()
    spec = yaml.safe_load((EXAMPLE / "berth.yaml").read_text())
    spec[0]["predictor"]["config"].update(tokens=tokens, delay=delay)
    (folder / "berth.yaml").write_text(yaml.safe_dump(spec))
    (folder / "predictor.py").write_text((EXAMPLE / "predictor.py").read_text())
    return folder


def wait_streaming(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, json={"tokens": 1}, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not stream within {timeout}s")


def start_direct(workdir: Path, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    spec_file = workdir / "spec.json"
    spec_file.write_text(load_spec(folder).apis[0].model_dump_json())
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "berth.runtime", "--spec", str(spec_file), "--project",
                                str(folder), "--socket-dir", str(workdir / "sock"), "--port", str(port)])
    url = f"http://127.0.0.1:{port}/"
    wait_streaming(url)
    return process, url


def one(client: httpx.Client, url: str, events: bool) -> tuple[float, float, int]:
    """(time to first byte, seconds per token after the first, tokens) of one streamed request."""
    headers = {"accept": "text/event-stream"} if events else {}
    started = time.perf_counter()
    first = last = 0.0
    body = b""
    with client.stream("POST", url, json={"prompt": "ship it with berth"}, headers=headers) as response:
        for data in response.iter_raw():
            last = time.perf_counter() - started
            first = first or last
            body += data
    tokens = body.count(b"data:") if events else len(body.split())
    return first, (last - first) / max(1, tokens - 1), tokens


def measure(urls: dict[str, str], requests: int) -> dict[tuple[str, bool], list[tuple[float, float, int]]]:
    results: dict[tuple[str, bool], list[tuple[float, float, int]]] = {}
    clients = {name: httpx.Client(timeout=60) for name in urls}
    try:
        for _ in range(requests):
            for events in (False, True):
                for name, url in urls.items():
                    results.setdefault((name, events), []).append(one(clients[name], url, events))
    finally:
        for client in clients.values():
            client.close()
    return results


def report(results: dict[tuple[str, bool], list[tuple[float, float, int]]], delay: float) -> None:
    print(f"{'':34}{'TTFB ms':>9}{'overhead ms':>13}{'per token ms':>14}{'tokens':>8}")
    medians: dict[tuple[str, bool], tuple[float, float]] = {}
    for (name, events), runs in results.items():
        ttfb = statistics.median(run[0] for run in runs)
        per_token = statistics.median(run[1] for run in runs)
        medians[(name, events)] = (ttfb, per_token)
        label = f"{name}, {'server-sent events' if events else 'chunked'}"
        print(f"{label:34}{ttfb * 1000:9.2f}{(ttfb - delay) * 1000:13.2f}{per_token * 1000:14.2f}"
              f"{runs[0][2]:8d}")
    for events in (False, True):
        (g_ttfb, g_tok), (d_ttfb, d_tok) = medians[("gateway", events)], medians[("direct", events)]
        print(f"gateway / direct ({'events' if events else 'chunked'}): TTFB {g_ttfb / d_ttfb:.3f}x "
              f"(+{(g_ttfb - d_ttfb) * 1000:.2f} ms), per token {g_tok / d_tok:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20, help="streamed requests per target and mode")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the example sleeps per token")
    args = parser.parse_args()
    instance = BerthInstance()
    with tempfile.TemporaryDirectory() as workdir:
        direct = None
        try:
            folder = project(Path(workdir), args.tokens, args.delay)
            direct, direct_url = start_direct(Path(workdir), folder)
            instance.cli("deploy", str(folder), "--wait")
            gateway_url = instance.url("/streaming")
            wait_streaming(gateway_url)
            print(f"examples/streaming: {args.tokens} tokens, {args.delay * 1000:g} ms each; "
                  f"medians of {args.requests} requests per row")
            report(measure({"direct": direct_url, "gateway": gateway_url}, args.requests), args.delay)
        finally:
            if direct is not None:
                stop(direct)
            instance.close()


if __name__ == "__main__":
    main()
