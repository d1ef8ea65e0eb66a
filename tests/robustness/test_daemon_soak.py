"""A bounded soak against a real berth instance: hostile and slow clients, then every counter at baseline.

Real supervisor, gateway worker, daemon and two replicas; raw sockets for the clients. After a few
thousand requests mixing slow readers, aborts mid-response, HEADs, pipelined bursts, vanishing
clients, oversize headers and bodies: nothing in flight, the gateway's descriptors back where they
were before any traffic, its memory bounded, and every well-formed request answered.
"""

from __future__ import annotations

import http.client
import io
import json
import random
import socket
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.process.harness import TWO_REPLICAS, Berth, wait_for, write_project

SPEC = TWO_REPLICAS

PREDICTOR = """
class PythonPredictor:
    def __init__(self, config):
        self.big = "x" * 1_000_000

    def predict(self, payload, query_params):
        if query_params.get("big"):
            return self.big
        return {"echo": payload}
"""

SCENARIOS = 2000  # about 3,800 requests


class _Unclosable(io.BufferedReader):
    def close(self) -> None:  # http.client closes its file after each body; the next response needs it
        pass


class _Reader:
    """Lets http.client parse responses one after another from one buffered stream (pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.file = _Unclosable(socket.SocketIO(sock, "rb"))

    def makefile(self, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return self.file


def read_response(reader: _Reader, method: str = "POST") -> tuple[int, bytes]:
    response = http.client.HTTPResponse(reader, method=method)  # type: ignore[arg-type]
    response.begin()
    return response.status, response.read()


def post(path: str = "/api", body: bytes = b"1", extra: bytes = b"") -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
            % (path.encode(), len(body), extra, body))


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        return sock

    def keep_alive(self) -> int:
        with self.connect() as sock:
            reader = _Reader(sock)
            for value in range(3):
                sock.sendall(post(body=str(value).encode()))
                status, body = read_response(reader)
                assert status == 200 and json.loads(body) == {"echo": value}
        return 3

    def pipelined(self) -> int:
        with self.connect() as sock:
            reader = _Reader(sock)
            sock.sendall(b"".join(post(body=str(value).encode()) for value in range(5)))
            for value in range(5):
                status, body = read_response(reader)
                assert status == 200 and json.loads(body) == {"echo": value}
        return 5

    def head_then_post(self) -> int:
        with self.connect() as sock:
            reader = _Reader(sock)
            sock.sendall(b"HEAD /api HTTP/1.1\r\nhost: soak\r\n\r\n" + post(body=b"7"))
            status, body = read_response(reader, "HEAD")
            assert status == 200 and body == b""
            status, body = read_response(reader)
            assert status == 200 and json.loads(body) == {"echo": 7}
        return 2

    def slow_reader(self) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", self.port))
        with sock:
            sock.sendall(post("/api?big=1"))
            for _ in range(8):
                sock.recv(4096)
                time.sleep(0.005)
        return 0

    def abort_mid_response(self) -> int:
        with self.connect() as sock:
            sock.sendall(post("/api?big=1"))
            sock.recv(1000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
        return 0

    def vanish_before_answer(self) -> int:
        with self.connect() as sock:
            sock.sendall(post())
        return 0

    def oversize_headers(self) -> int:
        with self.connect() as sock:
            sock.sendall(post(extra=b"x-big: " + b"a" * 70_000 + b"\r\n"))
            status, _ = read_response(_Reader(sock))
            assert status == 431
        return 0

    def oversize_body(self) -> int:
        with self.connect() as sock:
            sock.sendall(b"POST /api HTTP/1.1\r\nhost: soak\r\ncontent-length: 2000000\r\n\r\n" + b"x" * 1000)
            status, _ = read_response(_Reader(sock))
            assert status == 413
        return 0


def in_flight(berth: Berth) -> float:
    text = httpx.get(f"{berth.base_url}/_berth/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("berth_in_flight_requests"))


def test_a_soak_of_hostile_clients_leaves_nothing_behind(berth: Berth, tmp_path: Path) -> None:
    berth.run("cluster", "up", "--max-body-size", "1Mi", "--keep-alive-timeout", "1",
              "--upstream-idle-timeout", "1")
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, PREDICTOR)), "--wait")
    gateway = psutil.Process(json.loads(berth.run("cluster", "status", "-o", "json").stdout)["gateway_pids"][0])
    baseline = gateway.num_fds()
    client = Client(berth.port)
    scenarios: list[Callable[[], int]] = [
        client.keep_alive, client.keep_alive, client.pipelined, client.head_then_post, client.slow_reader,
        client.abort_mid_response, client.vanish_before_answer, client.oversize_headers, client.oversize_body,
    ]
    rng = random.Random(7)
    plan = [rng.choice(scenarios) for _ in range(SCENARIOS)]
    deadline = time.monotonic() + 90
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda scenario: scenario() if time.monotonic() < deadline else -1, plan))
    assert -1 not in results, f"the soak was cut short by its deadline after {results.index(-1)} scenarios"
    answered = sum(results)
    # Every request the gateway saw is over: nothing in flight anywhere, nothing held.
    wait_for(lambda: in_flight(berth) == 0, 20, "the gateway's in-flight gauge to return to 0")
    wait_for(lambda: berth.get("api")["in_flight"] == 0, 20, "in flight per API to return to 0")
    # Client connections time out (1 s), pooled replica connections go idle (1 s): descriptors at baseline.
    wait_for(lambda: gateway.num_fds() <= baseline, 20, f"the gateway's descriptors to return to {baseline}")
    assert gateway.memory_info().rss < 200 * 2**20, f"gateway RSS {gateway.memory_info().rss / 2**20:.0f} MiB"
    print(f"soak: {answered} well-formed requests answered, gateway RSS "
          f"{gateway.memory_info().rss / 2**20:.1f} MiB, descriptors {gateway.num_fds()} (baseline {baseline})")
    # And it still serves.
    assert httpx.post(f"{berth.base_url}/api", json=1).json() == {"echo": 1}


def test_a_full_gateway_refuses_cleanly_and_management_keeps_working(berth: Berth, tmp_path: Path) -> None:
    berth.run("cluster", "up", "--max-connections", "4")
    berth.run("deploy", str(write_project(tmp_path / "p", SPEC, PREDICTOR)), "--wait")
    held = [socket.create_connection(("127.0.0.1", berth.port), timeout=10) for _ in range(4)]
    for sock in held:  # half a request head: busy connections, which the gateway cannot reclaim as idle ones
        sock.sendall(b"POST /api HTTP/1.1\r\nhost: soak\r\n")
    try:
        wait_for(lambda: len(psutil.Process(gateway_pid(berth)).net_connections("tcp")) >= 5, 10,
                 "the gateway to accept the four connections")
        with socket.create_connection(("127.0.0.1", berth.port), timeout=10) as extra:
            extra.sendall(post())
            status, _ = read_response(_Reader(extra))
            assert status == 503
        assert berth.get("api")["status"] == "live"  # the management socket is another process's
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: httpx.post(f"{berth.base_url}/api", json=2).status_code == 200, 10, "the gateway to serve again")


def gateway_pid(berth: Berth) -> int:
    return int(json.loads(berth.run("cluster", "status", "-o", "json").stdout)["gateway_pids"][0])
