"""The client side of the gateway: HTTP/1.1 parsed with httptools, proxied to pooled upstreams.

An ASGI framework plus an HTTP client per request would cost several times the budget, so the
hot path is plain asyncio protocols: parse the request, rewrite its head, write it to a pooled
keep-alive connection, and forward the response bytes as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import httptools

from berth.gateway.routes import Route, RoutingTable, Upstream
from berth.gateway.upstream import UpstreamConnection

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
    b"proxy-connection", b"expect", b"content-length", b"x-request-id", b"host",
})
MAX_PIPELINED = 64
# After refusing a body, keep reading (and dropping) what the client still sends for this long, so
# it reads our 413 instead of a connection reset (nginx's "lingering close").
LINGER_SECONDS = 2.0

AdminHandler = Callable[[str], tuple[int, bytes, bytes]]
Wake = Callable[[str], None]


@dataclass
class GatewaySettings:
    max_body_size: int = 64 * 2**20


@dataclass
class ParsedRequest:
    method: bytes
    url: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    keep_alive: bool
    request_id: bytes


class Exchange:
    """One request in flight through the gateway."""

    __slots__ = ("data", "keep_alive", "request_id", "route", "started", "tried", "upstream")

    def __init__(self, route: Route, upstream: Upstream, request: ParsedRequest, data: bytes) -> None:
        self.route = route
        self.upstream = upstream
        self.request_id = request.request_id
        self.keep_alive = request.keep_alive
        self.started = time.perf_counter()
        self.tried: list[Upstream] = []
        self.data = data

    def release(self) -> None:
        self.route.in_flight -= 1
        self.upstream.in_flight -= 1


class Gateway:
    """Owns the routing table and the listening socket; one ClientConnection per client."""

    def __init__(self, routes: RoutingTable, settings: GatewaySettings, admin: AdminHandler,
                 wake: Wake = lambda api: None) -> None:
        self.routes = routes
        self.settings = settings
        self.admin = admin
        self.wake = wake  # asks the control plane for a replica of an API scaled to zero
        self.server: asyncio.Server | None = None
        self._id_prefix = os.urandom(4).hex().encode()
        self._counter = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ClientConnection(self), host, port, reuse_address=True, backlog=4096)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def new_request_id(self) -> bytes:
        self._counter += 1
        return b"%s-%x" % (self._id_prefix, self._counter)


class ClientConnection(asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pending: deque[ParsedRequest] = deque()
        self.exchange: Exchange | None = None
        self.upstream_connection: UpstreamConnection | None = None
        self.held: Held | None = None
        self._reset_message()

    # --- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, b"upgrade", "protocol upgrades are not supported")
            self._close()
        except httptools.HttpParserError as exc:
            self._reject(400, b"bad-request", f"malformed HTTP request: {exc}")
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending.clear()
        if self.held is not None:
            self.held.cancel()
            self.held = None

    def pause_writing(self) -> None:
        if self.upstream_connection is not None:
            self.upstream_connection.pause_client_reads()

    def resume_writing(self) -> None:
        if self.upstream_connection is not None:
            self.upstream_connection.resume_client_reads()

    # --- httptools callbacks ----------------------------------------------------------------
    def _reset_message(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.body_size = 0
        self.request_id = b""
        self.rejected = False

    def on_message_begin(self) -> None:
        self._reset_message()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"x-request-id":
            self.request_id = value
        elif lowered == b"expect" and value.lower() == b"100-continue":
            self.headers.append((b"expect", value))
            return
        self.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        limit = self.gateway.settings.max_body_size
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                self._reject(413, b"body-too-large",
                             f"the request body ({int(value)} bytes) exceeds the limit of {limit} bytes")
                return
            if name == b"expect" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(body)
        limit = self.gateway.settings.max_body_size
        if self.body_size > limit:
            self._reject(413, b"body-too-large", f"the request body exceeds the limit of {limit} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.rejected:
            self._close()
            return
        if self.closed:
            return
        request = ParsedRequest(
            method=self.parser.get_method(), url=self.url, headers=self.headers,
            body=b"".join(self.body), keep_alive=self.parser.should_keep_alive(),
            request_id=self.request_id or self.gateway.new_request_id(),
        )
        self.pending.append(request)
        if len(self.pending) > MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        if self.exchange is None:
            self._start_next()

    # --- proxying ---------------------------------------------------------------------------
    def _start_next(self) -> None:
        while self.pending and self.exchange is None and self.held is None and not self.closed:
            self._dispatch(self.pending.popleft())

    def _dispatch(self, request: ParsedRequest) -> None:
        path, _, query = request.url.partition(b"?")
        route, subpath = self.gateway.routes.resolve(path.decode("latin-1"))
        if route is None:
            self._answer_locally(request, path.decode("latin-1"))
            return
        if not route.upstreams:
            if route.holds:
                self._hold(route, request)
                return
            self._respond(request, 503, f"API {route.api!r} has no ready replica yet; "
                          f"see `berth get {route.api}`", b"no-ready-replica", route)
            return
        if not route.admits():
            self._respond(request, 503, f"API {route.api!r} is at max_replica_concurrency "
                          f"({route.max_replica_concurrency} per replica, {route.ready_replicas} ready); "
                          "retry later or raise max_replica_concurrency", b"max-replica-concurrency", route)
            return
        upstream = route.pick()
        assert upstream is not None
        target = subpath.encode("latin-1") + (b"?" + query if query else b"")
        exchange = Exchange(route, upstream, request, _request_head(request, target) + request.body)
        self._send(exchange)

    def _send(self, exchange: Exchange) -> None:
        self.exchange = exchange
        exchange.route.in_flight += 1
        exchange.upstream.in_flight += 1
        connection = exchange.upstream.take_idle()
        if connection is None:
            asyncio.get_running_loop().create_task(self._connect(exchange))
            return
        self.upstream_connection = connection
        connection.send(exchange.data, self)

    async def _connect(self, exchange: Exchange) -> None:
        loop = asyncio.get_running_loop()
        while True:
            upstream = exchange.upstream
            try:
                _, connection = await loop.create_unix_connection(
                    functools.partial(UpstreamConnection, upstream.release), upstream.target.socket_path)
            except OSError:
                if self._move_to_another(exchange):
                    continue
                self._end_exchange()
                self._fail(exchange, 503, b"replica-unreachable",
                           f"no replica of API {exchange.route.api!r} accepted a connection")
                return
            if self.closed:
                exchange.release()
                upstream.release(connection)
                return
            self.upstream_connection = connection
            connection.send(exchange.data, self)
            return

    # --- scale from zero ----------------------------------------------------------------------
    def _hold(self, route: Route, request: ParsedRequest) -> None:
        """Wait for a replica of an API scaled to zero, within the queue bound and the timeout."""
        if len(route.waiting) >= route.hold_limit:
            self._respond(request, 503, f"API {route.api!r} is starting a replica and already holds "
                          f"{route.hold_limit} requests (scale_from_zero_queue); retry later",
                          b"scale-from-zero-queue-full", route)
            return
        held = Held(self, route, request)
        self.held = held
        route.waiting.append(held)
        held.timer = asyncio.get_running_loop().call_later(route.hold_timeout, held.expire)
        self.gateway.wake(route.api)

    def resume_held(self, held: Held) -> None:
        if self.held is not held or self.closed:
            return
        self.held = None
        self._dispatch(held.request)
        self._start_next()

    def expire_held(self, held: Held, message: str | None) -> None:
        """Answer a held request with a 503: its timeout passed, or the replica it waited for failed."""
        if self.held is not held:
            return
        self.held = None
        api = held.route.api
        if message is None:
            text, reason = (f"no replica of API {api!r} became ready within {held.route.hold_timeout:g}s "
                            f"(scale_from_zero_timeout); see `berth get {api}`"), b"scale-from-zero-timeout"
        else:
            text, reason = f"the replica of API {api!r} failed to start: {message}", b"replica-failed-to-start"
        self._respond(held.request, 503, text, reason, held.route)
        self._start_next()

    # --- ResponseSink (called by the upstream connection) -------------------------------------
    def forward(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _end_exchange(self) -> Exchange | None:
        exchange, self.exchange, self.upstream_connection = self.exchange, None, None
        if exchange is not None:
            exchange.release()
        return exchange

    def response_complete(self, status: int) -> None:
        exchange = self._end_exchange()
        if exchange is None:
            return
        exchange.route.stats.record(status, time.perf_counter() - exchange.started)
        self._after_response(exchange.keep_alive)

    def _move_to_another(self, exchange: Exchange) -> bool:
        """Hand a request its replica never read to one not tried yet (the only safe retry)."""
        exchange.upstream.in_flight -= 1
        exchange.tried.append(exchange.upstream)
        following = exchange.route.pick(exclude=exchange.tried)
        if following is None:
            exchange.upstream.in_flight += 1  # the caller ends the exchange, which releases it once
            return False
        exchange.upstream = following
        following.in_flight += 1
        return True

    def upstream_lost(self, answered: bool, delivered: bool) -> None:
        current = self.exchange
        if current is not None and not answered and not delivered and self._move_to_another(current):
            # The replica died before reading the request (broken pipe, or reset with it unread).
            self.upstream_connection = None
            asyncio.get_running_loop().create_task(self._connect(current))
            return
        exchange = self._end_exchange()
        if exchange is None:
            return
        if answered:
            exchange.route.stats.record(502, time.perf_counter() - exchange.started)
            self._close()
            return
        self._fail(exchange, 502, b"replica-connection-lost",
                   "the replica closed the connection before answering; the request was not retried "
                   "because it had already been sent")

    def _after_response(self, keep_alive: bool) -> None:
        if not keep_alive:
            self._close()
            return
        if self.transport is not None and len(self.pending) <= MAX_PIPELINED:
            self.transport.resume_reading()
        self._start_next()

    # --- answers the gateway writes itself --------------------------------------------------
    def _fail(self, exchange: Exchange, status: int, reason: bytes, message: str) -> None:
        exchange.route.stats.record(status, time.perf_counter() - exchange.started)
        self._write(status, _error(message, exchange.request_id), b"application/json",
                    exchange.request_id, reason, exchange.keep_alive)
        self._after_response(exchange.keep_alive)

    def _respond(self, request: ParsedRequest, status: int, message: str, reason: bytes,
                 route: Route | None = None) -> None:
        if route is not None:
            route.stats.record(status, 0.0)
        self._write(status, _error(message, request.request_id), b"application/json",
                    request.request_id, reason, request.keep_alive)
        if not request.keep_alive:
            self._close()

    def _answer_locally(self, request: ParsedRequest, path: str) -> None:
        if path.startswith("/_berth/"):
            status, body, content_type = self.gateway.admin(path)
            self._write(status, body, content_type, request.request_id, None, request.keep_alive)
            if not request.keep_alive:
                self._close()
            return
        endpoints = sorted(self.gateway.routes.by_endpoint)
        message = f"no API is deployed at {path}; deployed endpoints: {', '.join(endpoints) or 'none'}"
        self._respond(request, 404, message, b"no-such-endpoint")

    def _reject(self, status: int, reason: bytes, message: str) -> None:
        """Refuse a request whose body we will not keep: answer now, close once the client stops sending."""
        if self.rejected:
            return
        self.rejected = True
        request_id = self.request_id or self.gateway.new_request_id()
        self._write(status, _error(message, request_id), b"application/json", request_id, reason, False)
        asyncio.get_running_loop().call_later(LINGER_SECONDS, self._close)

    def _write(self, status: int, body: bytes, content_type: bytes, request_id: bytes,
               reason: bytes | None, keep_alive: bool) -> None:
        if self.closed or self.transport is None:
            return
        phrase = HTTPStatus(status).phrase.encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, phrase),
                b"content-type: %s\r\ncontent-length: %d\r\nx-request-id: %s\r\n" % (
                    content_type, len(body), request_id)]
        if reason:
            head.append(b"x-berth-reason: %s\r\n" % reason)
        if not keep_alive:
            head.append(b"connection: close\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + body)

    def _close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


class Held:
    """A request waiting for an API scaled to zero to get a ready replica."""

    __slots__ = ("connection", "request", "route", "timer")

    def __init__(self, connection: ClientConnection, route: Route, request: ParsedRequest) -> None:
        self.connection = connection
        self.route = route
        self.request = request
        self.timer: asyncio.TimerHandle | None = None

    def resume(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.connection.resume_held(self)

    def expire(self) -> None:
        self.drop()
        self.connection.expire_held(self, None)

    def fail(self, message: str) -> None:
        self.cancel()
        self.connection.expire_held(self, message)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.drop()

    def drop(self) -> None:
        with contextlib.suppress(ValueError):
            self.route.waiting.remove(self)


def _request_head(request: ParsedRequest, target: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1\r\nhost: berth\r\nx-request-id: %s\r\ncontent-length: %d\r\n" % (
        request.method, target, request.request_id, len(request.body))]
    for name, value in request.headers:
        if name not in HOP_BY_HOP:
            lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    return b"".join(lines)


def _error(message: str, request_id: bytes) -> bytes:
    return json.dumps({"error": message, "request_id": request_id.decode("latin-1")}).encode()
