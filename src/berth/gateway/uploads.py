"""The client connection's side of request bodies streamed as they arrive (upload.py).

A mixin of ClientConnection, kept apart so the common path reads as it did: a route without
stream_body never reaches any of this.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING

from berth.gateway.exchange import Exchange, Held
from berth.gateway.flow import ReadFlow
from berth.gateway.http import CONTINUE, ParsedRequest, request_head
from berth.gateway.reader import RequestReader
from berth.gateway.routes import Route, Upstream
from berth.gateway.upload import Upload, streamed_head

if TYPE_CHECKING:
    from berth.gateway.connection import ClientConnection


class UploadExchanges:
    """What ClientConnection does for a request whose body streams (see connection.py for the rest)."""

    # ClientConnection's, used here.
    loop: asyncio.AbstractEventLoop
    reader: RequestReader
    transport: asyncio.Transport | None
    flow: ReadFlow | None
    pending: deque[ParsedRequest]
    exchange: Exchange | None
    held: Held | None
    closing: bool
    shortest_timeout: float

    if TYPE_CHECKING:
        def _arm(self, deadline: float) -> None: ...

        async def _connect(self, exchange: Exchange) -> None: ...

        def _record(self, route: Route, request: ParsedRequest, status: int, seconds: float, now: float,
                    reason: str | None, replica: str | None) -> None: ...

        def _linger(self) -> None: ...

        def _close(self) -> None: ...

        def _pump(self) -> None: ...

    # --- UploadOwner (called by a streamed request body) ------------------------------------------
    def hold_client(self) -> None:
        if self.flow is not None:
            self.flow.pause_reading()

    def release_client(self) -> None:
        if not self.closing and not self.pending and self.flow is not None and self.flow.read_paused:
            self._resume_reading()

    def _resume_reading(self) -> None:
        """Read again, unless a streamed body holds the client back (the replica is slower)."""
        upload = self.reader.upload
        if upload is None or upload.may_read:
            assert self.flow is not None
            self.reader.last_read = monotonic()  # the body timeout does not count the pause
            self.flow.resume_reading()

    # --- the exchange of a streamed request ------------------------------------------------------
    def _start_upload(self, route: Route, upstream: Upstream, request: ParsedRequest, upload: Upload,
                      target: bytes, now: float) -> None:
        """Always on a connection of its own: a pooled one may turn out closed by the replica, and a
        request some of whose body went out cannot be retried on another."""
        exchange = Exchange(route, upstream, request, streamed_head(request_head(request, target), upload),
                            now or monotonic())
        self.exchange = exchange
        if route.timeout < self.shortest_timeout:
            self._arm(exchange.deadline)
        if upload.expect_continue:  # dispatched means next in line: the client may send its body now
            upload.expect_continue = False
            if not upload.complete and self.transport is not None:
                self.transport.write(CONTINUE)
        self.loop.create_task(self._connect(exchange))

    def answered_early(self, status: int) -> None:
        """The replica answered before the whole body came (a 413 from the predictor, say). The answer
        went out; no more of the body is forwarded, and the client connection closes once the client
        has had time to read it (nginx's lingering close)."""
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.connection is not None:
            exchange.connection.close()  # pooled already, but with a request half sent: never reusable
        assert exchange.request.upload is not None
        exchange.request.upload.detach()
        self.exchange = None
        exchange.release()
        now = monotonic()
        self._record(exchange.route, exchange.request, status, now - exchange.started, now, None,
                     exchange.upstream.target.replica_id)
        self._linger()

    def _upload_gone(self) -> None:
        """The client closed its side before the streamed body was whole (it went away, as far as can be
        told): its request ends as 499 client-gone, wherever it is; requests ahead of it are answered."""
        upload = self.reader.upload
        exchange, held, now = self.exchange, self.held, monotonic()
        if exchange is not None and exchange.request.upload is upload:
            self.exchange = None
            exchange.release()
            if exchange.connection is not None:
                exchange.connection.abandon()  # a request half sent: never reusable
            self._record(exchange.route, exchange.request, 499, now - exchange.started, now, "client-gone",
                         exchange.upstream.target.replica_id)
        elif held is not None and held.request.upload is upload:
            self.held = None
            held.cancel()
            self._record(held.route, held.request, 499, now - held.since, now, "client-gone", None)
        elif self.pending and self.pending[-1].upload is upload:
            request = self.pending.pop()
            route = self.reader.routes.resolve(request.path.decode("latin-1"))[0]
            if route is not None:
                self._record(route, request, 499, now - (request.started or now), now, "client-gone", None)
        if upload is not None:
            upload.detach()

    def _refuse_upload(self, request: ParsedRequest) -> None:
        """The reader refused a streamed body midway (408, 413, 400): whatever holds its request lets go,
        and the refusal is its answer, in its place in line."""
        upload = self.reader.upload
        exchange, held = self.exchange, self.held
        if exchange is not None and exchange.request.upload is upload:
            connection = exchange.connection
            self.exchange = None
            exchange.release()  # counted by _answer_error under the refusal's reason
            if connection is not None:
                connection.abandon()  # a request half sent: never reusable
            if connection is not None and connection.responded:
                error = request.error
                assert error is not None
                now = monotonic()
                self._record(exchange.route, request, error.status, now - exchange.started, now,
                             error.reason.decode(), exchange.upstream.target.replica_id)
                self._close()  # part of the replica's answer went out: only closing tells the client
                return
        elif held is not None and held.request.upload is upload:
            self.held = None
            held.cancel()
        elif self.pending and self.pending[-1].upload is upload:
            self.pending.pop()
        if upload is not None:
            upload.detach()
        self.pending.append(request)
        self._pump()


class UploadSink:
    """The client side of an exchange whose request body is still streaming (ResponseSink)."""

    __slots__ = ("client", "upload")

    def __init__(self, client: ClientConnection, upload: Upload) -> None:
        self.client = client
        self.upload = upload

    def forward(self, data: bytes) -> None:
        self.client.forward(data)

    def response_complete(self, status: int, keep_alive: bool) -> None:
        if self.upload.complete:
            self.upload.detach()  # the exchange is over: nothing of it stays reachable from its upload
            self.client.response_complete(status, keep_alive)
        else:
            self.client.answered_early(status)

    def upstream_lost(self, responded: bool, delivered: bool) -> None:
        self.upload.detach()
        self.client.upstream_lost(responded, delivered)
