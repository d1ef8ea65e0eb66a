"""Shared pieces of the benchmarks: processes, readiness, wrk, a throwaway berth instance."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
POST_BODY = '{"name": "berth", "values": [1, 2, 3]}'
POST_LUA = """
wrk.method = "POST"
wrk.body   = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, timeout: float = 30.0) -> float:
    """Seconds until a POST to `url` answers 200."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        try:
            if httpx.post(url, json={"name": "probe"}, timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, duration: float, body: str = POST_BODY,
        headers: dict[str, str] | None = None) -> WrkResult:
    with wrk_running(url, connections, duration, body, headers) as process:
        out, _ = process.communicate()
    return parse_wrk(out, url)


@contextlib.contextmanager
def wrk_running(url: str, connections: int, duration: float, body: str = POST_BODY,
                headers: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """wrk loading `url` in the background; read its report with parse_wrk once it has exited."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(POST_LUA % body.replace("'", "\\'"))
        for name, value in (headers or {}).items():  # e.g. an API key
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
    try:
        with subprocess.Popen(
                ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency", "-s", script.name, url],
                stdout=subprocess.PIPE, text=True) as process:
            yield process
    finally:
        os.unlink(script.name)


def parse_wrk(out: str, url: str) -> WrkResult:
    if "Latency Distribution" not in out:
        raise RuntimeError(f"wrk against {url} measured nothing:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return WrkResult(rps, p50, p99, errors, requests)


def median_result(results: list[WrkResult]) -> WrkResult:
    return WrkResult(statistics.median(r.rps for r in results), statistics.median(r.p50_ms for r in results),
                     statistics.median(r.p99_ms for r in results), sum(r.errors for r in results),
                     sum(r.requests for r in results))


class BerthInstance:
    """A throwaway berth home and port, driven through the real CLI."""

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="bb-", dir="/tmp"))
        self.port = free_port()
        self.env = {**os.environ, "BERTH_HOME": str(self.home), "BERTH_PORT": str(self.port)}

    def cli(self, *args: str) -> str:
        result = subprocess.run([sys.executable, "-m", "berth", *args], env=self.env, capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"berth {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def get(self, api: str) -> dict[str, object]:
        return json.loads(self.cli("get", api, "-o", "json"))  # type: ignore[no-any-return]

    def url(self, endpoint: str) -> str:
        return f"http://127.0.0.1:{self.port}{endpoint}"

    def close(self) -> None:
        subprocess.run([sys.executable, "-m", "berth", "cluster", "down"], env=self.env, capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
