"""A keep-alive connection from the gateway to one replica process, over its unix socket.

It parses the replica's response and writes it back for the client: hop-by-hop headers dropped,
no body after HEAD, 1xx skipped, chunked bodies re-framed for 1.1 clients and sent close-delimited
to 1.0 ones. It goes back to its pool only once its response is complete and it is reading again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Protocol

import httptools

from berth.gateway.flow import ReadFlow
from berth.gateway.http import RESPONSE_HOP_BY_HOP, connection_tokens, status_line

if TYPE_CHECKING:
    from berth.gateway.exchange import Exchange


class ResponseSink(Protocol):
    """The client side of a proxied exchange, as the upstream connection sees it."""

    def forward(self, data: bytes) -> None: ...

    def response_complete(self, status: int, keep_alive: bool) -> None: ...

    def upstream_lost(self, responded: bool, delivered: bool) -> None: ...


class IdleCallback(Protocol):
    def __call__(self, connection: UpstreamConnection) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, on_idle: IdleCallback) -> None:
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
        self._out: list[bytes] = []
        self._reset_response()

    @property
    def usable(self) -> bool:
        return not self.closed and self.sink is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = ReadFlow(transport)  # type: ignore[arg-type]

    def send(self, exchange: Exchange, sink: ResponseSink) -> None:
        assert self.transport is not None
        self.sink, self.exchange = sink, exchange
        self.received = self.responded = False
        exchange.connection = self
        self.transport.write(exchange.data)

    def park(self) -> None:
        """Back to the pool: only when the exchange is over and the connection reads."""
        if self.flow is not None:
            self.flow.resume_reading()
        self.idle_since = time.monotonic()
        self.on_idle(self)

    def abandon(self) -> None:
        """Drop the exchange without telling its client side (which already knows), and close."""
        self.sink = self.exchange = None
        self.close()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            self.close()  # bytes nobody asked for: this connection's framing can no longer be trusted
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._broken()
            return
        if self._skip:
            self._end_head_only()
        elif self._out:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        sink = self.sink
        if sink is None:
            return
        if self._until_eof and self.responded:
            self._complete(keep_upstream=False)  # a close-delimited body ends with the connection
            return
        self.sink = self.exchange = None
        # EPIPE on our write, or a reset (the peer closed with our request unread): the replica
        # process never read the request. A clean EOF means it may have.
        unread = isinstance(exc, BrokenPipeError | ConnectionResetError) and not self.received
        sink.upstream_lost(self.responded, delivered=not unread)

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

    # --- httptools callbacks ----------------------------------------------------------------
    def _reset_response(self) -> None:
        self._lines: list[bytes] = []
        self._tokens = b""
        self._chunked = False
        self._has_length = False
        self._rechunk = False
        self._until_eof = False
        self._in_head = True
        self._skip = False      # HEAD answered: the parser still expects the body it announced
        self._status = 0
        self._keep_client = True

    def on_message_begin(self) -> None:
        self._reset_response()

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # trailers are dropped with the chunked framing
        lowered = name.lower()
        if lowered in RESPONSE_HOP_BY_HOP:
            if lowered == b"connection":
                self._tokens += b"," + value
            elif lowered == b"transfer-encoding":
                self._chunked = value.lower().endswith(b"chunked")
            return
        if lowered == b"content-length":
            self._has_length = True
        self._lines.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        status = self._status = self.parser.get_status_code()
        exchange = self.exchange
        if status < 200 or exchange is None:
            return  # 1xx: the gateway already answered Expect itself; a 103 is only a hint
        request = exchange.request
        keep = request.keep_alive
        lines = self._lines
        if self._tokens:
            named = set(connection_tokens(self._tokens))
            lines = [line for line in lines if line.split(b":", 1)[0].lower() not in named]
        framing = b""
        if request.is_head or status in (204, 304) or self._has_length:
            pass
        elif self._chunked and not request.http10:
            framing, self._rechunk = b"transfer-encoding: chunked\r\n", True
        else:
            keep, self._until_eof = False, True  # no length for a 1.0 client (or from the replica)
        if not keep:
            framing += b"connection: close\r\n"
        elif request.http10:
            framing += b"connection: keep-alive\r\n"
        self._keep_client = keep
        self._out.append(b"".join([status_line(status), *lines, framing, b"\r\n"]))
        self.responded = True
        if request.is_head:
            self._skip = True

    def on_body(self, body: bytes) -> None:
        if self._skip or self._status < 200:
            return
        if self._rechunk:
            self._out.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self._out.append(body)

    def on_message_complete(self) -> None:
        if self._status < 200 or self._skip:
            return
        if self._rechunk:
            self._out.append(b"0\r\n\r\n")
        self._complete(keep_upstream=self.parser.should_keep_alive())

    # --- the end of an exchange -------------------------------------------------------------
    def _flush(self) -> None:
        out = self._out
        if out and self.sink is not None:
            self.sink.forward(out[0] if len(out) == 1 else b"".join(out))
        out.clear()

    def _complete(self, keep_upstream: bool) -> None:
        self._flush()
        sink, self.sink, self.exchange = self.sink, None, None
        if keep_upstream and not self.closed:
            self.park()  # parked first, so the client's next request can take this very connection
        else:
            self.close()
        if sink is not None:
            sink.response_complete(self._status, self._keep_client)

    def _end_head_only(self) -> None:
        """A HEAD response ends with its head; a fresh parser stops waiting for the body."""
        keep = self.parser.should_keep_alive()
        self.parser = httptools.HttpResponseParser(self)
        self._skip = False
        self._complete(keep_upstream=keep)

    def _broken(self) -> None:
        """The replica sent something that is not HTTP: nothing more from it can be trusted."""
        sink, self.sink, self.exchange = self.sink, None, None
        self.close()
        if sink is not None:
            sink.upstream_lost(self.responded, delivered=True)
