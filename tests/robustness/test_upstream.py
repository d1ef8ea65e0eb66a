"""The upstream connection's own rules, driven with a fake transport: when it may go back to its pool."""

import asyncio
from typing import Any

import pytest

from berth.gateway.exchange import Exchange
from berth.gateway.http import ParsedRequest
from berth.gateway.routes import Route, Target, Upstream
from berth.gateway.upstream import UpstreamConnection

pytestmark = pytest.mark.anyio


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.reading = True
        self.closed = False

    def write(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class PausingSink:
    """A client whose write buffer crosses its high-water mark with the response's last bytes."""

    def __init__(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        self.completed: list[tuple[int, bool]] = []

    def forward(self, data: bytes) -> None:
        self.connection.pause_reading()

    def response_complete(self, status: int, keep_alive: bool) -> None:
        self.completed.append((status, keep_alive))

    def upstream_lost(self, responded: bool, delivered: bool) -> None:
        raise AssertionError("not lost")


def exchange(method: bytes = b"POST") -> Exchange:
    route = Route("t", "/t", 10)
    upstream = Upstream(Target("r", "/nowhere"))
    request = ParsedRequest(method, b"/t", b"", b"x", [], b"", True, False, b"id", b"", None, method == b"HEAD")
    return Exchange(route, upstream, request, b"", 0.0)


@pytest.mark.parametrize("method", [b"POST", b"HEAD"])
async def test_a_connection_is_pooled_only_once_complete_and_reading(method: bytes) -> None:
    pooled: list[UpstreamConnection] = []
    connection = UpstreamConnection(pooled.append)
    transport = FakeTransport()
    connection.connection_made(transport)
    sink = PausingSink(connection)
    connection.send(exchange(method), sink)
    body = b"" if method == b"HEAD" else b"hello"
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n" + body)
    assert sink.completed == [(200, True)]
    assert pooled == [connection] and transport.reading and connection.usable


async def test_a_bodiless_status_ends_the_exchange() -> None:
    pooled: list[UpstreamConnection] = []
    connection = UpstreamConnection(pooled.append)
    connection.connection_made(FakeTransport())
    sink = PausingSink(connection)
    for status in (204, 304):
        connection.send(exchange(), sink)
        connection.data_received(b"HTTP/1.1 %d X\r\ncontent-length: 5\r\n\r\n" % status)
    assert sink.completed == [(204, True), (304, True)] and len(pooled) == 2


async def test_a_body_after_a_head_response_is_never_pooled() -> None:
    pooled: list[UpstreamConnection] = []
    connection = UpstreamConnection(pooled.append)
    connection.connection_made(FakeTransport())
    connection.send(exchange(b"HEAD"), PausingSink(connection))
    connection.data_received(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
    assert not pooled and connection.closed
