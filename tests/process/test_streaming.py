"""examples/streaming with a real daemon: tokens arrive one by one through the gateway, a client that
leaves stops the generator, an error mid-stream is visible, and nothing stays in flight."""

from __future__ import annotations

import itertools
import shutil
import socket
import statistics
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.process.harness import EXAMPLES, Berth, wait_for, write_project

TOKENS, DELAY = 20, 0.05


def deploy(berth: Berth, tmp_path: Path) -> tuple[str, Path]:
    """The example, with a folder where each generation notes how it ended."""
    project, done = tmp_path / "streaming", tmp_path / "done"
    shutil.copytree(EXAMPLES / "streaming", project)
    done.mkdir()
    spec = yaml.safe_load((project / "berth.yaml").read_text())
    spec[0]["predictor"]["config"].update(tokens=TOKENS, delay=DELAY, done_dir=str(done))
    (project / "berth.yaml").write_text(yaml.safe_dump(spec))
    berth.run("deploy", str(project), "--wait")
    return f"{berth.base_url}/streaming", done


def nothing_in_flight(berth: Berth) -> None:
    wait_for(lambda: berth.get("streaming")["in_flight"] == 0, 10, "the API's in-flight count back to 0")


def ended(done: Path, request_id: str, timeout: float = 3) -> str:
    return wait_for(lambda: (done / request_id).exists() and (done / request_id).read_text(), timeout,
                    f"the generator of {request_id} to run its finally")


def test_tokens_arrive_one_by_one_through_the_gateway(berth: Berth, tmp_path: Path) -> None:
    url, done = deploy(berth, tmp_path)
    httpx.post(url, json={"tokens": 1}, timeout=10)  # a warm connection pool, a warm replica
    started = time.perf_counter()
    arrived: list[float] = []
    text = b""
    with httpx.stream("POST", url, json={"prompt": "ship it with berth"}, headers={"x-request-id": "timed"},
                      timeout=30) as response:
        assert response.status_code == 200 and response.headers["transfer-encoding"] == "chunked"
        for data in response.iter_raw():
            arrived.append(time.perf_counter() - started)
            text += data
    assert text.decode().split() == ["ship", "it", "with", "berth"] * 5
    whole = arrived[-1]
    assert whole >= TOKENS * DELAY * 0.9
    assert arrived[0] < whole / 4, f"the first byte came after {arrived[0]:.3f}s of {whole:.3f}s"
    assert len(arrived) >= TOKENS * 3 // 4, f"{len(arrived)} reads for {TOKENS} tokens: something buffered"
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
    assert DELAY * 0.5 < statistics.median(gaps) < DELAY * 3, gaps
    assert ended(done, "timed") == "complete"

    events = httpx.post(url, json={"tokens": 3}, headers={"accept": "text/event-stream"}, timeout=30)
    assert events.headers["content-type"] == "text/event-stream"
    assert events.text == "data: token \n\n" * 3
    nothing_in_flight(berth)


def test_disconnects_and_errors_mid_stream_through_the_gateway(berth: Berth, tmp_path: Path) -> None:
    url, done = deploy(berth, tmp_path)
    with httpx.stream("POST", url, json={"tokens": 1000}, headers={"x-request-id": "gone"}, timeout=30) as response:
        chunks = response.iter_raw()
        next(chunks), next(chunks)
    assert ended(done, "gone") == "closed"  # the client left: the generator was closed

    received = b""
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
            "POST", f"{url}?fail_after=3", json={}, headers={"x-request-id": "cut"}, timeout=30) as response:
        assert response.status_code == 200
        for data in response.iter_raw():
            received += data
    assert received == b"token " * 3  # and then the connection was closed: an incomplete body
    assert ended(done, "cut") == "failed"

    events = httpx.post(f"{url}?fail_after=2", json={}, timeout=30,
                        headers={"accept": "text/event-stream", "x-request-id": "evented"})
    assert events.text == ("data: token \n\n" * 2 + "event: error\n"
                           'data: {"error": "internal server error", "request_id": "evented"}\n\n')
    assert "request cut: the stream failed after 3 items" in berth.run("logs", "streaming").stdout
    nothing_in_flight(berth)


ENDLESS = """
from pathlib import Path

class PythonPredictor:
    def __init__(self, config):
        self.count = Path(config["count"])

    def predict(self):
        made = 0
        try:
            while True:
                made += 1
                self.count.write_text(str(made))
                yield b"x" * 65536
        finally:
            self.count.write_text(f"closed {made}")
"""


def test_a_client_that_stops_reading_holds_the_generator_back_through_the_gateway(berth: Berth,
                                                                                  tmp_path: Path) -> None:
    count = tmp_path / "count"
    spec = f"""
    - name: streaming
      kind: RealtimeAPI
      predictor:
        type: python
        path: predictor.py
        config: {{count: {count}}}
    """
    berth.run("deploy", str(write_project(tmp_path / "endless", spec, ENDLESS)), "--wait")
    with socket.create_connection(("127.0.0.1", berth.port)) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"POST /streaming HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 200")
        seen: list[str] = []

        def stalled() -> bool:  # the generator made nothing more for half a second
            text = count.read_text()
            if not text:  # read between write_text's create and its write
                return False
            seen.append(text)
            return len(seen) > 10 and seen[-1] == seen[-11]
        wait_for(stalled, 15, "the generator to stall behind a client that stops reading", interval=0.05)
        made = int(seen[-1])
        # Socket buffers (client, gateway, replica) and one write buffer each: a few MiB, not the stream.
        assert made * 65536 < 32 * 2**20, f"{made} chunks of 64 KiB made ahead of a client that reads nothing"
    assert wait_for(lambda: count.read_text().startswith("closed") and count.read_text(), 5,
                    "the generator to be closed once the client left")
    nothing_in_flight(berth)
