"""A keep-alive connection from the gateway to one replica process, over its unix socket.

The replica's response is forwarded as raw bytes: only its head is looked at (and rewritten when
it carries hop-by-hop headers or the client needs other framing), and the parser only finds where
the response ends. That keeps the per-response cost to a couple of bytes searches on the hot path.
Bodies are de-chunked only for HTTP/1.0 clients (sent close-delimited); a HEAD response ends with
its head. A connection goes back to its pool only once its response is complete and it reads again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import httptools

from berth.gateway.flow import ReadFlow
from berth.gateway.http import FRAMING_HEADERS, JUST_LENGTH, PLAIN, ResponseHead

if TYPE_CHECKING:
    from berth.gateway.exchange import Exchange

MAX_RESPONSE_HEAD = 1 << 20


def _plain(data: bytes, exchange: Exchange) -> ResponseHead | None:
    """The common response, whole head in one read, that goes to a 1.1 keep-alive client untouched."""
    request = exchange.request
    if not request.keep_alive or request.http10 or request.is_head:
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0 or FRAMING_HEADERS.findall(data, 0, end) != JUST_LENGTH:
        return None
    return PLAIN.get(data[9:12])


class ResponseSink(Protocol):
    """The client side of a proxied exchange, as the upstream connection sees it."""

    def forward(self, data: bytes) -> None: ...

    def response_complete(self, status: int, keep_alive: bool) -> None: ...

    def upstream_lost(self, responded: bool, delivered: bool) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, on_idle: Callable[[UpstreamConnection], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.flow: ReadFlow | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.on_idle = on_idle
        self.sink: ResponseSink | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.idle_since = 0.0
        self.received = False   # any byte of the current response
        self.responded = False  # its head went to the client: no other answer is possible now
        self._head = b""        # the response head gathered so far
        self._response: ResponseHead | None = None
        self._dechunked: list[bytes] | None = None  # body pieces for a 1.0 client
        self._done = False
        self._keep_upstream = False

    @property
    def usable(self) -> bool:
        return not self.closed and self.sink is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = ReadFlow(transport)  # type: ignore[arg-type]

    def send(self, exchange: Exchange, sink: ResponseSink) -> None:
        assert self.transport is not None
        self.sink, self.exchange = sink, exchange
        self.received = self.responded = self._done = False
        self._head, self._response, self._dechunked = b"", None, None
        exchange.connection = self
        self.transport.write(exchange.data)

    def park(self) -> None:
        """Back to the pool: only when the exchange is over and the connection reads."""
        if self.flow is not None and self.flow.read_paused:
            self.flow.resume_reading()
        self.idle_since = time.monotonic()
        self.on_idle(self)

    def abandon(self) -> None:
        """Drop the exchange without telling its client side (which already knows), and close."""
        self.sink = self.exchange = None
        self.close()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            self.close()  # bytes nobody asked for: this connection's framing can no longer be trusted
            return
        self.received = True
        response = self._response
        if response is None and not self._head and (response := _plain(data, exchange)) is not None:
            self._response, self.responded, out = response, True, data  # the hot path: forwarded as is
        elif response is None:
            head = self._read_head(data, exchange)
            response = self._response
            if head is None or exchange.request.is_head:
                return  # broken, or HEAD: its head is the whole response and the parser never sees it
            out = head
        elif response.dechunk:
            out = b""
        else:
            out = data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken()
            return
        if response is None:
            return  # the head is still incomplete
        if self._dechunked:
            out = self._take_dechunked(out)
        if out and self.sink is not None:
            self.sink.forward(out)
        if self._done:
            self._complete(keep_upstream=self._keep_upstream)
        else:  # a body in several reads (a stream, say): its timeout restarts with each
            exchange.progressed(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sink = self.sink
        if sink is None:
            return
        response = self._response
        if response is not None and response.until_eof:
            self._complete(keep_upstream=False)  # a close-delimited body ends with the connection
            return
        self.sink = self.exchange = None
        # EPIPE on our write, or a reset (the peer closed with our request unread): the replica
        # process never read the request. A clean EOF means it may have.
        unread = isinstance(exc, BrokenPipeError | ConnectionResetError) and not self.received
        sink.upstream_lost(self.responded, delivered=not unread)

    def pause_writing(self) -> None:
        """The replica reads slower than a streamed request body arrives: hold the client back."""
        exchange = self.exchange
        if exchange is not None and exchange.request.upload is not None:
            exchange.request.upload.pause()

    def resume_writing(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.request.upload is not None:
            exchange.request.upload.resume()

    def pause_reading(self) -> None:
        if self.flow is not None and not self.closed:
            self.flow.pause_reading()

    def resume_reading(self) -> None:
        if self.flow is not None and not self.closed:
            self.flow.resume_reading()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    # --- httptools callbacks (only the end of the message, and bodies to de-chunk) ----------
    def on_body(self, body: bytes) -> None:
        if self._dechunked is not None:
            self._dechunked.append(body)

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200:  # a 1xx is a message of its own
            self._done = True
            self._keep_upstream = self.parser.should_keep_alive()  # reset once the parser moves on

    # --- the response head ------------------------------------------------------------------
    def _read_head(self, data: bytes, exchange: Exchange) -> bytes | None:
        """Gather the head; once whole, return what goes to the client from this chunk on."""
        start = max(0, len(self._head) - 3)
        buffer = self._head + data if self._head else data
        end = buffer.find(b"\r\n\r\n", start)
        while end >= 0 and buffer.startswith(b"HTTP/1.1 1"):  # 1xx: skipped (we answered Expect ourselves)
            buffer = buffer[end + 4:]
            end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self._head = buffer
            if len(buffer) > MAX_RESPONSE_HEAD:
                self._broken()
                return None
            return b""
        self._head = b""
        request = exchange.request
        head = buffer[:end + 4]
        response = self._response = ResponseHead(head, request.keep_alive, request.http10, request.is_head)
        self.responded = True
        if response.head_only:
            self._finish_head(response, bogus=end + 4 < len(buffer))
            return None
        if response.dechunk:
            self._dechunked = []
            return response.rewritten or head
        if response.rewritten is None:
            return buffer
        return response.rewritten + buffer[end + 4:]

    def _finish_head(self, response: ResponseHead, bogus: bool) -> None:
        """A HEAD response ends with its head (the parser, which would wait for a body, never saw it)."""
        if self.sink is not None:
            self.sink.forward(response.rewritten if response.rewritten is not None else response.raw)
        self._complete(keep_upstream=response.upstream_keep_alive and not bogus)

    def _take_dechunked(self, head: bytes) -> bytes:
        pieces = self._dechunked or []
        out = b"".join([head, *pieces])
        pieces.clear()
        return out

    # --- the end of an exchange -------------------------------------------------------------
    def _complete(self, keep_upstream: bool) -> None:
        response = self._response
        sink, self.sink, self.exchange = self.sink, None, None
        if keep_upstream and not self.closed:
            # Parked first, so the client's next request can take this very connection; only
            # while it reads (park resumes it), or it would never see that request's answer.
            if self.flow is not None and self.flow.read_paused:
                self.flow.resume_reading()
            self.idle_since = time.monotonic()
            self.on_idle(self)
        else:
            self.close()
        if sink is not None and response is not None:
            sink.response_complete(response.status, response.keep_client)

    def _broken(self) -> None:
        """The replica sent something that is not HTTP: nothing more from it can be trusted."""
        sink, self.sink, self.exchange = self.sink, None, None
        self.close()
        if sink is not None:
            sink.upstream_lost(self.responded, delivered=True)
