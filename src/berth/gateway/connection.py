"""One client connection: requests read in order, proxied or answered one at a time.

Requests read ahead of the one in flight wait in `pending`, and reading pauses as soon as one is
there, so a connection buffers at most one request beyond the one in flight. Everything the
gateway answers itself (errors, `100 Continue`, `_berth/` paths) goes out in that same order,
never inside another response. One timer per connection serves every deadline (see `_tick`).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from collections.abc import Callable
from random import random
from time import monotonic
from typing import TYPE_CHECKING

from berth.gateway.exchange import Exchange, Held
from berth.gateway.flow import ReadFlow
from berth.gateway.holding import HeldExchanges
from berth.gateway.http import (
    CONTINUE,
    ParsedRequest,
    error_body,
    forwarded_lines,
    is_trusted,
    local_response,
    request_head,
)
from berth.gateway.reader import Reading, RequestReader
from berth.gateway.routes import Route, Upstream
from berth.gateway.uploads import UploadExchanges, UploadSink
from berth.gateway.upstream import UpstreamConnection

if TYPE_CHECKING:
    from berth.gateway.proxy import Gateway


class ClientConnection(HeldExchanges, UploadExchanges, asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.loop = asyncio.get_running_loop()
        self.new_request_id: Callable[[], bytes] = gateway.new_request_id
        self.reader = RequestReader(self, gateway.settings, gateway.routes)
        self.data_received = self.reader.feed  # type: ignore[method-assign]
        self.transport: asyncio.Transport | None = None
        self.flow: ReadFlow | None = None
        self.pending: deque[ParsedRequest] = deque()
        self.exchange: Exchange | None = None
        self.held: Held | None = None
        self.closing = False        # no further response will be written
        self.write_paused = False   # the client reads slower than we write
        self.client_eof = False     # the client half-closed: answer what it sent, then close
        self.continue_due = False   # a 100 Continue is owed once the requests ahead are answered
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.idle_since = 0.0
        self.idle_limit = gateway.settings.header_timeout  # a new connection gets its first request
        self.shortest_timeout = gateway.settings.shortest_client_timeout
        self.peer = b""
        self.trusted = False
        self.forwarded = b""

    @property
    def idle(self) -> bool:
        return (self.exchange is None and self.held is None and not self.pending
                and self.reader.state == Reading.IDLE)

    def close(self) -> None:
        self.gateway.connections.discard(self)
        self._close()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.transport is not None
        if not self.gateway.admit(self):
            self._refuse(self.transport)
            return
        self.flow = ReadFlow(self.transport)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer and isinstance(peer[0], str) else ""
        self.peer = address.encode()
        self.trusted = is_trusted(address, self.gateway.trusted_networks)
        self.forwarded = forwarded_lines(self.peer, None, None)
        now = self.idle_since = self.reader.last_read = monotonic()
        self._arm(now + self.shortest_timeout)

    def _refuse(self, transport: asyncio.Transport) -> None:
        self.closing = True
        self.reader.stop()
        request_id = self.gateway.new_request_id()
        message = "the gateway is at its connection limit (max_connections); retry later"
        transport.write(local_response(503, error_body(message, request_id), b"application/json", request_id,
                                       b"too-many-connections", False, False, False))
        transport.close()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)  # replaced by reader.feed itself in __init__

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.reader.upload is not None and not self.reader.stopped:
            self._upload_gone()  # a streamed body that can never complete: the replica lets go of it
        self.reader.stop()  # a request cut short can never complete
        # Keep the write side open for what the client already asked; _pump closes after it.
        return not self.closing and not (self.exchange is None and self.held is None and not self.pending)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gateway.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.reader.stop()
        self.pending.clear()
        now = monotonic()
        held, self.held = self.held, None
        if held is not None:
            held.cancel()
            self._record(held.route, held.request, 499, now - held.since, now, "client-gone", None)
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            exchange.release()
            # nginx's 499: the client closed the connection before its answer was complete
            self._record(exchange.route, exchange.request, 499, now - exchange.started, now, "client-gone",
                         exchange.upstream.target.replica_id)
            if exchange.connection is not None:
                exchange.connection.abandon()  # mid-response it cannot be reused

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.exchange is not None and self.exchange.connection is not None:
            self.exchange.connection.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.exchange is not None and self.exchange.connection is not None:
            self.exchange.connection.resume_reading()
        if not self.closing:
            self._pump()

    # --- RequestSink (called by the reader) ---------------------------------------------------
    def enqueue(self, request: ParsedRequest) -> None:
        if self.closing:
            return
        self.continue_due = False
        if self.exchange is None and self.held is None and not self.pending and not self.write_paused:
            # The common case: timed from the read that completed it (no clock call); reading is
            # never paused with nothing pending.
            self._dispatch(request, self.reader.last_read)
            if self.client_eof:
                self._pump()
            return
        if request.error is not None and self.reader.upload is not None:
            self._refuse_upload(request)
            return
        self.pending.append(request)
        self._pump()
        if self.pending and not self.closing and self.flow is not None:
            self.flow.pause_reading()

    def want_continue(self) -> None:
        self.continue_due = True
        self._pump()

    # --- one request at a time, in order -------------------------------------------------------
    def _pump(self) -> None:
        pending = self.pending
        while pending and self.exchange is None and self.held is None and not self.write_paused \
                and not self.closing:
            self._dispatch(pending.popleft())
        if self.closing or pending:
            return
        assert self.flow is not None and self.transport is not None
        if self.flow.read_paused:
            self._resume_reading()
        if self.exchange is None and self.held is None:
            if self.continue_due and not self.write_paused:
                self.continue_due = False
                self.transport.write(CONTINUE)
            elif self.client_eof:
                self._close()

    def _dispatch(self, request: ParsedRequest, now: float = 0.0) -> None:
        if request.error is not None:
            self._answer_error(request)
            return
        path = request.path.decode("latin-1")
        route, subpath = self.gateway.routes.resolve(path)
        if route is None:
            self._answer_locally(request, path, now)
            return
        if route.keys is not None and not self._admit_key(route, request):
            return
        if route.split is not None:  # a traffic splitter: on as the API it chooses
            route = route.split.choose(self, request, subpath)
            if route is None:
                return
        if not route.upstreams:
            if route.holds:
                self._hold(route, request)
                return
            self._turn_away(route, request, 503, f"API {route.api!r} has no ready replica yet; see "
                            f"`berth get {route.api}`", "no-ready-replica")
            return
        if not route.admits():
            self._turn_away(route, request, 503, f"API {route.api!r} is at max_replica_concurrency "
                            f"({route.max_replica_concurrency} per replica, {route.ready_replicas} ready); "
                            "retry later or raise max_replica_concurrency", "max-replica-concurrency")
            return
        upstream = route.pick()
        assert upstream is not None
        target = subpath.encode("latin-1") + (b"?" + request.query if request.query else b"")
        self._start(route, upstream, request, target, now)

    def _admit_key(self, route: Route, request: ParsedRequest) -> bool:
        """networking.api_keys: required. A refused request is answered here and costs no replica anything."""
        assert route.keys is not None
        refusal = route.keys.admit(request)
        if refusal is None:
            return True
        self._turn_away_counted(route, request, refusal.status, refusal.reason)
        self._write_local(request, refusal.status, error_body(refusal.message, request.request_id),
                          b"application/json", refusal.reason.encode(), refusal.headers)
        return False

    def _start(self, route: Route, upstream: Upstream, request: ParsedRequest, target: bytes, now: float) -> None:
        if request.upload is not None:
            self._start_upload(route, upstream, request, request.upload, target, now)
            return
        exchange = Exchange(route, upstream, request, request_head(request, target) + request.body,
                            now or monotonic())
        self.exchange = exchange
        if route.timeout < self.shortest_timeout:
            self._arm(exchange.deadline)
        connection = upstream.take_idle()
        if connection is None:
            self.loop.create_task(self._connect(exchange))
            return
        connection.send(exchange, self)
        if self.write_paused:
            connection.pause_reading()

    def _send(self, exchange: Exchange, connection: UpstreamConnection) -> None:
        upload = exchange.request.upload
        connection.send(exchange, self if upload is None else UploadSink(self, upload))
        if self.write_paused:
            connection.pause_reading()
        if upload is not None and connection.transport is not None:
            upload.attach(connection.transport, exchange.progressed)

    async def _connect(self, exchange: Exchange) -> None:
        while True:
            upstream = exchange.upstream
            try:
                async with asyncio.timeout_at(exchange.deadline):
                    _, connection = await self.loop.create_unix_connection(
                        functools.partial(UpstreamConnection, upstream.release), upstream.target.socket_path)
            except OSError:  # TimeoutError included: the exchange's own deadline answers it
                if self.exchange is not exchange:
                    return
                if exchange.move_to_another():
                    continue
                self._unreachable(exchange)
                return
            if self.exchange is not exchange or self.closing:
                connection.park()  # never used: as good as any pooled connection
            else:
                self._send(exchange, connection)
            return

    def _unreachable(self, exchange: Exchange) -> None:
        if exchange.route is self.gateway.observe:
            reason = "control-plane-unavailable"
            message = (f"the berth daemon does not answer on {exchange.upstream.target.socket_path}, so "
                       f"{exchange.request.path.decode('latin-1')} cannot be served; the gateway keeps serving "
                       "APIs meanwhile. See `berth cluster status`, or the daemon's log in BERTH_HOME/daemon.log")
        else:
            reason = "replica-unreachable"
            message = f"no replica of API {exchange.route.api!r} accepted a connection"
        self._finish(exchange, 503, reason, None)
        self._answer(exchange.request, 503, message, reason.encode())
        self._pump()

    def _finish(self, exchange: Exchange, status: int, reason: str | None, replica: str | None) -> float:
        """End the exchange in flight: counts released once, the outcome recorded."""
        self.exchange = None
        exchange.release()
        now = monotonic()
        self._record(exchange.route, exchange.request, status, now - exchange.started, now, reason, replica)
        return now

    def _record(self, route: Route, request: ParsedRequest, status: int, seconds: float, now: float,
                reason: str | None, replica: str | None) -> None:
        """Count a request's outcome, and write its log line when it is sampled."""
        route.stats.record(status, seconds, reason)
        key_counts = request.key_counts
        if key_counts is not None:  # per API key, by status class (gateway/keys.py)
            key_counts[2 if status < 400 else status // 100] += 1
        rate = route.log_rate
        if rate and (rate >= 1.0 or random() < rate):
            log = self.gateway.request_log
            if log is not None:
                log.pending.append((route.api, now, request.request_id, request.method, request.path, status,
                                    seconds, replica, reason))

    # --- ResponseSink (called by the upstream connection) -------------------------------------
    def forward(self, data: bytes) -> None:
        if not self.closing and self.transport is not None:
            self.transport.write(data)

    def response_complete(self, status: int, keep_alive: bool) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        exchange.release()
        now = self.idle_since = monotonic()
        self._record(exchange.route, exchange.request, status, now - exchange.started, now, None,
                     exchange.upstream.target.replica_id)
        self.idle_limit = self.settings.keep_alive_timeout
        if not keep_alive:
            self._close()
            return
        self._pump()

    def upstream_lost(self, responded: bool, delivered: bool) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        exchange.connection = None
        if not responded and not delivered and exchange.move_to_another():
            # The replica died before reading the request (broken pipe, or reset with it unread).
            self.loop.create_task(self._connect(exchange))
            return
        replica = exchange.upstream.target.replica_id
        if responded:
            self._finish(exchange, 502, None, replica)
            self._close()  # part of the response went out: only closing tells the client it is cut
            return
        if exchange.route is self.gateway.observe:
            self._unreachable(exchange)  # the daemon went away mid-request (it restarts): as if not there
            return
        self._finish(exchange, 502, "replica-connection-lost", replica)
        self._answer(exchange.request, 502, "the replica closed the connection before answering; the request "
                     "was not retried because it had already been sent", b"replica-connection-lost")
        self._pump()

    # --- deadlines: one timer per connection -------------------------------------------------
    def _arm(self, deadline: float) -> None:
        """Make the timer fire no later than `deadline`; `_tick` works out what is due."""
        if self.timer is not None:
            if self.timer_at <= deadline:
                return
            self.timer.cancel()
        self.timer_at = deadline
        # Deadlines are on time.monotonic (one clock for asyncio and uvloop); the loop takes a delay.
        self.timer = self.loop.call_later(max(0.0, deadline - monotonic()), self._tick)

    def _tick(self) -> None:
        # Firing at least every shortest_client_timeout means a new client deadline never needs
        # a re-arm on the hot path: only an upstream timeout shorter than that does.
        self.timer = None
        if self.closing:
            return
        now = monotonic()
        following = now + self.shortest_timeout
        exchange = self.exchange
        if exchange is not None:
            if now >= exchange.deadline:
                self._upstream_timeout(exchange)
            else:
                following = min(following, exchange.deadline)
        if not self.closing:
            deadline = self._read_deadline()
            if now >= deadline:
                self._read_timeout()
            else:
                following = min(following, deadline)
        if not self.closing:
            self._arm(following)

    def _read_deadline(self) -> float:
        reader = self.reader
        if reader.stopped or self.client_eof or (self.flow is not None and self.flow.read_paused):
            return math.inf  # the client is not the one keeping us waiting
        if reader.state == Reading.HEAD:
            return reader.head_started + self.settings.header_timeout
        if reader.state == Reading.BODY:
            if self.continue_due or (reader.upload is not None and reader.upload.expect_continue):
                return math.inf  # the client waits for our 100 Continue
            return reader.last_read + self.settings.body_timeout
        return self.idle_since + self.idle_limit if self.idle else math.inf

    def _read_timeout(self) -> None:
        if self.reader.state == Reading.IDLE:
            self._close()  # keep-alive over
            return
        timeout = self.settings.header_timeout if self.reader.state == Reading.HEAD else self.settings.body_timeout
        self.reader.reject(408, b"request-timeout", f"the request did not arrive within {timeout:g}s")

    def _upstream_timeout(self, exchange: Exchange) -> None:
        connection = exchange.connection
        responded = connection is not None and connection.responded
        self._finish(exchange, 504, None if responded else "upstream-timeout", exchange.upstream.target.replica_id)
        if connection is not None:
            connection.abandon()  # the replica may still answer: that connection can never be reused
        if responded:
            self._close()
            return
        self._answer(exchange.request, 504, f"API {exchange.route.api!r} did not answer within "
                     f"{exchange.route.timeout:g}s (networking.timeout)", b"upstream-timeout")
        self._pump()

    # --- answers the gateway writes itself --------------------------------------------------
    def _answer(self, request: ParsedRequest, status: int, message: str, reason: bytes) -> None:
        self._write_local(request, status, error_body(message, request.request_id), b"application/json", reason)

    def _turn_away(self, route: Route, request: ParsedRequest, status: int, message: str, reason: str) -> None:
        """An API's request the gateway answers itself, counted under its reason."""
        self._turn_away_counted(route, request, status, reason)
        self._answer(request, status, message, reason.encode())

    def _turn_away_counted(self, route: Route, request: ParsedRequest, status: int, reason: str) -> None:
        now = monotonic()
        self._record(route, request, status, now - (request.started or now), now, reason, None)

    def _answer_locally(self, request: ParsedRequest, path: str, now: float) -> None:
        if path.startswith("/_berth/") or path == "/_berth":
            self._berth(request, path, now)
            return
        endpoints = sorted(self.gateway.routes.by_endpoint)
        message = f"no API is deployed at {path}; deployed endpoints: {', '.join(endpoints) or 'none'}"
        self._answer(request, 404, message, b"no-such-endpoint")

    def _berth(self, request: ParsedRequest, path: str, now: float) -> None:
        """berth's own pages: the health check here, everything else read-only from the daemon."""
        if request.method not in (b"GET", b"HEAD"):
            message = f"{path} is read-only: it answers GET and HEAD, not {request.method.decode('latin-1')}"
            self._write_local(request, 405, error_body(message, request.request_id), b"application/json",
                              b"method-not-allowed", b"allow: GET, HEAD\r\n")
            return
        if path == "/_berth/healthz":
            self._write_local(request, 200, b"ok", b"text/plain", None)
            return
        observe = self.gateway.observe
        if observe is None:
            self._answer(request, 503, f"this gateway has no daemon to ask for {path}; it serves only "
                         "/_berth/healthz itself", b"control-plane-unavailable")
            return
        # The daemon's observe app sees the path and query as the client sent them.
        target = request.path + (b"?" + request.query if request.query else b"")
        self._start(observe, observe.upstreams[0], request, target, now)

    def _write_local(self, request: ParsedRequest, status: int, body: bytes, content_type: bytes,
                     reason: bytes | None, extra: bytes = b"") -> None:
        if self.closing or self.transport is None:
            return
        upload = request.upload
        if upload is not None and not upload.complete:
            # The replica never gets the rest of this body: the client is told it is the last answer.
            upload.detach()
            request.keep_alive = False
        self.transport.write(local_response(status, body, content_type, request.request_id, reason,
                                            request.keep_alive, request.http10, request.is_head, extra))
        if not request.keep_alive:
            self._linger() if upload is not None else self._close()

    def _answer_error(self, request: ParsedRequest) -> None:
        """A refused request: answer, then read and drop what the client still sends before closing,
        so it reads our answer rather than a reset (nginx's lingering close)."""
        error = request.error
        assert error is not None and self.transport is not None and self.flow is not None
        route = self.gateway.routes.resolve(request.path.decode("latin-1"))[0] if request.path[:1] == b"/" else None
        if route is not None:  # a refusal of that API's request (413 body-too-large, 408, ...)
            self._turn_away_counted(route, request, error.status, error.reason.decode())
        self.transport.write(local_response(
            error.status, error_body(error.message, request.request_id), b"application/json", request.request_id,
            error.reason, False, request.http10, request.is_head))
        self._linger()

    def _linger(self) -> None:
        """Close after an answer, reading and dropping what the client still sends for a while."""
        assert self.transport is not None and self.flow is not None
        self.closing = True
        self.pending.clear()
        self.reader.stop()
        self.flow.resume_reading()
        if self.client_eof:
            self.transport.close()
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(self.settings.linger_timeout, self.transport.close)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
