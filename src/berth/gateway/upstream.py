"""A keep-alive connection from the gateway to one replica process, over its unix socket."""

from __future__ import annotations

import asyncio
from typing import Protocol

import httptools


class ResponseSink(Protocol):
    """The client side of a proxied exchange, as the upstream connection sees it."""

    def forward(self, data: bytes) -> None: ...

    def response_complete(self, status: int) -> None: ...

    def upstream_lost(self, answered: bool, delivered: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    """Forwards the replica's response bytes as they come and parses them only to find the end."""

    def __init__(self, on_idle: IdleCallback) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.answered = False
        self.status = 0
        self.closed = False
        self.on_idle = on_idle

    @property
    def usable(self) -> bool:
        return not self.closed and self.sink is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes, sink: ResponseSink) -> None:
        assert self.transport is not None
        self.sink = sink
        self.answered = False
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        sink = self.sink
        if sink is not None:
            sink.forward(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        sink, self.sink = self.sink, None
        if not self.parser.should_keep_alive():
            self.close()
        if sink is not None:
            sink.response_complete(self.status)
        if not self.closed:
            self.on_idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sink, self.sink = self.sink, None
        if sink is not None:
            # EPIPE on our write, or a reset (the peer closed with our request unread): the replica
            # process never read the request. A clean EOF means it may have.
            unread = isinstance(exc, BrokenPipeError | ConnectionResetError)
            sink.upstream_lost(self.answered, delivered=not unread)

    def pause_client_reads(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_client_reads(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class IdleCallback(Protocol):
    def __call__(self, connection: UpstreamConnection) -> None: ...
