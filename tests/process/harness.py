"""A real berth instance for a test: its own BERTH_HOME, its own port, and a cleanup that leaves nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


# A predictor that sleeps for the payload's seconds and says which process and config answered.
SLEEPY = """
import os, time

class PythonPredictor:
    def __init__(self, config):
        self.tag = config.get("tag", "one")

    def predict(self, payload):
        time.sleep(float(payload))
        return {"pid": os.getpid(), "tag": self.tag}
"""


# An API with two replicas of predictor.py, not autoscaled.
TWO_REPLICAS = """
- name: api
  kind: RealtimeAPI
  predictor:
    type: python
    path: predictor.py
  autoscaling:
    min_replicas: 2
    max_replicas: 2
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_project(folder: Path, spec: str, predictor: str, name: str = "predictor.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "berth.yaml").write_text(textwrap.dedent(spec))
    (folder / name).write_text(textwrap.dedent(predictor))
    return folder


class Berth:
    def __init__(self) -> None:
        # Short, so replica sockets fit in sun_path under the home folder.
        self.home = Path(tempfile.mkdtemp(prefix="bt-", dir="/tmp"))
        self.port = free_port()
        self.env = {**os.environ, "BERTH_HOME": str(self.home), "BERTH_PORT": str(self.port)}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, check: bool = True, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "berth", *args], env=self.env, capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"berth {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "berth", *args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def get(self, api: str | None = None) -> Any:
        return json.loads(self.run("get", *([api] if api else []), "-o", "json").stdout)

    def processes(self) -> list[psutil.Process]:
        """Every process of this instance: the daemon and the replicas (their command lines name the home)."""
        found = []
        for process in psutil.process_iter(["cmdline"]):
            cmdline = " ".join(process.info["cmdline"] or [])
            if str(self.home) in cmdline and "berth" in cmdline and process.pid != os.getpid():
                found.append(process)
        return found

    def cleanup(self) -> None:
        self.run("cluster", "down", check=False, timeout=120)
        for process in self.processes():
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy, or fail saying what never happened."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the condition may not hold yet in many ways
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Load:
    """Closed-loop clients posting to a URL until stopped; every response is counted."""

    def __init__(self, url: str, clients: int, payload: object = 0) -> None:
        import threading

        self.url = url
        self.payload = payload
        self.results: list[tuple[int, str]] = []  # (status, x-berth-reason); status 0 = no response
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        import httpx

        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.url, json=self.payload)
                    result = (response.status_code, response.headers.get("x-berth-reason", ""))
                except httpx.HTTPError as exc:
                    result = (0, type(exc).__name__)
                with self._lock:
                    self.results.append(result)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def failures(self) -> list[tuple[int, str]]:
        with self._lock:
            return [r for r in self.results if r[0] != 200]
