"""Streamed predict results through a real uvicorn: items as they are yielded, disconnects, errors, backpressure."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.streaming_server import make_app, serving

PREDICTOR = '''
import asyncio, time
from pathlib import Path
from berth import EventStream

class PythonPredictor:
    def __init__(self, config):
        self.folder = Path(config["folder"])
        self.made = 0  # chunks the "big" generator produced

    def predict(self, query_params, headers):
        mode = query_params.get("mode", "sync")
        n, delay = int(query_params.get("n", "5")), float(query_params.get("delay", "0"))
        rid = headers.get("x-request-id", "anonymous")
        after = int(query_params.get("after", "-1"))
        if mode == "async":
            return self.tokens_async(n, delay, rid, after)
        if mode == "events":
            return EventStream(self.tokens(n, delay, rid, after))
        if mode == "objects":
            return iter([{"a": 1}, [1, 2], 3, "two\\nlines"])
        if mode == "big":
            return self.big(rid)
        if mode == "empty":
            return iter(())
        return self.tokens(n, delay, rid, after)

    def tokens(self, n, delay, rid, after):
        ended = "closed"
        try:
            for i in range(n):
                if i == after:
                    raise RuntimeError("secret failure detail")
                time.sleep(delay)
                yield f"t{i} "
            ended = "complete"
        finally:
            (self.folder / rid).write_text(ended)

    async def tokens_async(self, n, delay, rid, after):
        ended = "closed"
        try:
            for i in range(n):
                if i == after:
                    raise RuntimeError("secret failure detail")
                await asyncio.sleep(delay)
                yield f"t{i} "
            ended = "complete"
        finally:
            (self.folder / rid).write_text(ended)

    def big(self, rid):
        try:
            while True:
                self.made += 1
                yield b"x" * 65536
        finally:
            (self.folder / rid).write_text("closed")
'''


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[tuple[str, Path, object]]:
    app = make_app(tmp_path, PREDICTOR)
    with serving(app) as url:
        yield url, tmp_path, app


def timed_chunks(url: str, **kwargs: object) -> tuple[httpx.Response, list[tuple[float, bytes]]]:
    started = time.perf_counter()
    arrived = []
    with httpx.stream("POST", url, timeout=30, **kwargs) as response:  # type: ignore[arg-type]
        for data in response.iter_raw():
            arrived.append((time.perf_counter() - started, data))
    return response, arrived


def wait_file(path: Path, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    # write_text creates the file before it writes: an empty file is a finally still running.
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path.name} was not written within {timeout}s: the generator's finally never ran"
        time.sleep(0.01)
    return path.read_text()


def stats(url: str) -> dict[str, object]:
    return httpx.get(f"{url}/stats").json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_chunks_arrive_as_they_are_yielded(replica: tuple[str, Path, object], mode: str) -> None:
    url, folder, _ = replica
    response, arrived = timed_chunks(f"{url}/?mode={mode}&n=5&delay=0.15", headers={"x-request-id": f"c{mode}"})
    assert response.status_code == 200
    assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert [data for _, data in arrived] == [b"t0 ", b"t1 ", b"t2 ", b"t3 ", b"t4 "]
    times = [at for at, _ in arrived]
    assert times[0] < times[-1] - 0.4, "the first token must not wait for the whole generation"
    assert all(later - earlier > 0.07 for earlier, later in itertools.pairwise(times)), times
    assert wait_file(folder / f"c{mode}") == "complete"


def test_server_sent_events_when_accepted(replica: tuple[str, Path, object]) -> None:
    url, _, _ = replica
    response = httpx.post(f"{url}/?mode=objects", headers={"accept": "text/event-stream"})
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["cache-control"] == "no-cache"
    assert response.text == 'data: {"a":1}\n\ndata: [1,2]\n\ndata: 3\n\ndata: two\ndata: lines\n\n'


def test_event_stream_whatever_the_accept_header(replica: tuple[str, Path, object]) -> None:
    url, _, _ = replica
    response = httpx.post(f"{url}/?mode=events&n=2")
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == "data: t0 \n\ndata: t1 \n\n"


def test_chunked_json_lines_and_empty_streams(replica: tuple[str, Path, object]) -> None:
    url, _, _ = replica
    objects = httpx.post(f"{url}/?mode=objects")
    assert objects.headers["content-type"] == "application/x-ndjson"
    assert objects.text == '{"a":1}\n[1,2]\n3\ntwo\nlines'
    empty = httpx.post(f"{url}/?mode=empty")
    assert (empty.status_code, empty.content) == (200, b"")


def test_a_sleeping_sync_generator_does_not_hold_the_event_loop(replica: tuple[str, Path, object]) -> None:
    url, _, _ = replica
    with httpx.stream("POST", f"{url}/?n=10&delay=1", timeout=30) as response:
        chunks = response.iter_raw()  # held: a dropped iterator would close the connection (httpcore)
        assert next(chunks) == b"t0 "
        started = time.perf_counter()
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert time.perf_counter() - started < 0.5, "a health check waited for the generator's sleep"
        assert stats(url)["in_flight"] == 1  # the stream counts until it ends
    deadline = time.monotonic() + 5  # left early: closed once its current item is done
    while stats(url)["in_flight"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_client_that_leaves_stops_the_generator(replica: tuple[str, Path, object], mode: str) -> None:
    url, folder, _ = replica
    with httpx.stream("POST", f"{url}/?mode={mode}&n=1000&delay=0.02", headers={"x-request-id": f"d{mode}"},
                      timeout=30) as response:
        chunks = response.iter_raw()
        next(chunks), next(chunks)
    assert wait_file(folder / f"d{mode}", timeout=2) == "closed"
    deadline = time.monotonic() + 5
    while stats(url)["in_flight"] != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert stats(url)["requests"]["4XX"] == 1  # counted as 499: the client left


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_error_mid_stream_cuts_a_chunked_body(replica: tuple[str, Path, object], mode: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    url, folder, _ = replica
    received = []
    with pytest.raises(httpx.RemoteProtocolError), httpx.stream(
            "POST", f"{url}/?mode={mode}&n=5&after=2", headers={"x-request-id": f"e{mode}"}) as response:
        assert response.status_code == 200
        received.extend(response.iter_raw())
    assert b"".join(received) == b"t0 t1 "
    assert wait_file(folder / f"e{mode}") == "closed"  # its finally ran
    assert f"request e{mode}: the stream failed after 2 items" in caplog.text
    assert "secret failure detail" in caplog.text  # the traceback is in the log
    assert stats(url)["requests"]["5XX"] == 1


def test_an_error_mid_stream_is_an_error_event(replica: tuple[str, Path, object]) -> None:
    url, _, _ = replica
    response = httpx.post(f"{url}/?n=5&after=1", headers={"accept": "text/event-stream", "x-request-id": "ev"})
    assert response.status_code == 200
    assert response.text == ('data: t0 \n\nevent: error\n'
                             'data: {"error": "internal server error", "request_id": "ev"}\n\n')
    assert "secret" not in response.text


def test_an_error_before_the_first_item_is_a_json_500(replica: tuple[str, Path, object]) -> None:
    url, _, _ = replica
    response = httpx.post(f"{url}/?n=5&after=0", headers={"x-request-id": "first"})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "request_id": "first"}


def test_a_slow_reader_holds_the_generator_back(replica: tuple[str, Path, object]) -> None:
    """Backpressure: a client that stops reading stops the generator; memory stays bounded."""
    url, folder, app = replica
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.connect((host, int(port)))
        client.sendall(b"POST /?mode=big HTTP/1.1\r\nhost: x\r\nx-request-id: slow\r\ncontent-length: 0\r\n\r\n")
        client.recv(65536)
        predictor = app.instance  # type: ignore[attr-defined]
        last, still_since = -1, time.monotonic()
        deadline = time.monotonic() + 10
        while time.monotonic() - still_since < 0.5:  # until it made nothing more for half a second
            assert time.monotonic() < deadline, f"the generator never stopped: {predictor.made} chunks"
            if predictor.made != last:
                last, still_since = predictor.made, time.monotonic()
            time.sleep(0.05)
        # Socket buffers on both sides plus uvicorn's write buffer: a few MiB, not the endless stream.
        assert predictor.made * 65536 < 16 * 2**20, f"{predictor.made} chunks of 64 KiB made ahead"
        print(f"chunks of 64 KiB made ahead of a reader that stopped: {predictor.made}")
    assert wait_file(folder / "slow") == "closed"
