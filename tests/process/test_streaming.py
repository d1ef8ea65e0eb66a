"""examples/streaming with a real daemon: tokens arrive one by one through the gateway, a client that
leaves stops the generator, an error mid-stream is visible, and nothing stays in flight."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.process.harness import EXAMPLES, Berth, wait_for

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
    gaps = [later - earlier for earlier, later in zip(arrived, arrived[1:], strict=False)]
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
    nothing_in_flight(berth)

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
