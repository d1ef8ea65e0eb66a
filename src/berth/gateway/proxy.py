"""The gateway: HTTP/1.1 parsed with httptools, proxied to pooled upstreams.

An ASGI framework plus an HTTP client per request would cost several times the budget, so the
hot path is plain asyncio protocols: parse the request, rewrite its head, write it to a pooled
keep-alive connection, and forward the response as it arrives. No task and no timer is created
per request on that path: one timer per connection serves every deadline.

Here: the listening side (accepting within the connection budget, sweeping idle upstream
connections). connection.py serves one client, reader.py parses its requests, upstream.py talks
to a replica, http.py holds the wire formats, limits.py the settings, requestlog.py the request logs.

Under /_berth/ the gateway answers /_berth/healthz itself and passes every other GET or HEAD to the
daemon's read-only observe app (metrics, dashboard) on its unix socket, through the same upstream
machinery as a replica, so streamed answers (server-sent events) flow through as they come.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

from berth.gateway.connection import ClientConnection
from berth.gateway.http import parse_networks
from berth.gateway.limits import GatewaySettings, connection_budget
from berth.gateway.requestlog import RequestLog
from berth.gateway.routes import Route, RoutingTable, Target

__all__ = ["ClientConnection", "Gateway", "GatewaySettings"]

Wake = Callable[[str], None]

# A dashboard's event stream may stay open this long before the gateway cuts it (the browser's
# EventSource reconnects); a metrics scrape bounds its own wait.
OBSERVE_TIMEOUT = 3600.0


def observe_route(socket_path: str) -> Route:
    """The daemon's observe app as an upstream of its own: not an API, never logged or reported."""
    route = Route("_berth", "/_berth", 0, timeout=OBSERVE_TIMEOUT)
    route.log_rate = 0.0
    route.set_targets([Target("daemon", socket_path)])
    # Not pooled (a retired upstream closes each connection after its exchange): the daemon restarts
    # and closes idle connections on its own schedule, and one connect per page view costs nothing.
    route.upstreams[0].retired = True
    return route


class Gateway:
    """Owns the routing table and the listening socket; one ClientConnection per client."""

    def __init__(self, routes: RoutingTable, settings: GatewaySettings, wake: Wake = lambda api: None,
                 observe_socket: str | None = None, request_log: RequestLog | None = None) -> None:
        self.routes = routes
        self.settings = settings
        self.wake = wake  # asks the control plane for a replica of an API scaled to zero
        self.observe = observe_route(observe_socket) if observe_socket else None
        self.request_log = request_log
        self.server: asyncio.Server | None = None
        self.connections: set[ClientConnection] = set()
        self.trusted_networks = parse_networks(settings.trusted_proxies)
        self._budget = settings.max_connections
        self._sweeper: asyncio.TimerHandle | None = None
        self._id_prefix = os.urandom(4).hex().encode()
        self._counter = 0

    async def start(self, host: str | None = None, port: int | None = None, sock: socket.socket | None = None) -> None:
        """Listen on host:port, or serve a listening socket handed over by the supervisor."""
        loop = asyncio.get_running_loop()
        self._budget = connection_budget(self.settings.max_connections)
        if sock is not None:
            self.server = await loop.create_server(lambda: ClientConnection(self), sock=sock, backlog=4096)
        else:
            self.server = await loop.create_server(
                lambda: ClientConnection(self), host, port or 0, reuse_address=True, backlog=4096)
        self._sweeper = loop.call_later(self._sweep_interval, self._sweep)
        if self.request_log is not None:
            self.request_log.start()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop accepting; give requests in flight up to `grace` seconds; close every connection;
        write the request log's last lines."""
        loop = asyncio.get_running_loop()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close()
        deadline = loop.time() + grace
        while self._serving() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.close()
        for route in self.routes.by_api.values():
            for upstream in route.upstreams:
                upstream.close_idle()
        if self.server is not None:
            await self.server.wait_closed()
        if self.request_log is not None:
            self.request_log.stop()

    def _serving(self) -> bool:
        """Connections with an API request to finish; a dashboard's open stream is closed instead."""
        busy = False
        for connection in list(self.connections):
            exchange = connection.exchange
            if exchange is not None and exchange.route is self.observe:
                connection.close()
            elif not connection.idle:
                busy = True
        return busy

    def new_request_id(self) -> bytes:
        self._counter += 1
        return b"%s-%x" % (self._id_prefix, self._counter)

    def admit(self, connection: ClientConnection) -> bool:
        """Room for one more client: at the limit, an idle keep-alive connection makes way (as nginx)."""
        if len(self.connections) >= self._budget:
            idle = next((c for c in self.connections if c.idle), None)
            if idle is not None:
                idle.close()
            else:
                self._budget = connection_budget(self.settings.max_connections)  # the limit may have been raised
                if len(self.connections) >= self._budget:
                    return False
        self.connections.add(connection)
        return True

    @property
    def _sweep_interval(self) -> float:
        return max(0.05, self.settings.upstream_idle_timeout / 2)

    def _sweep(self) -> None:
        """Close pooled upstream connections idle for longer than upstream_idle_timeout."""
        parked_before = time.monotonic() - self.settings.upstream_idle_timeout
        for route in self.routes.by_api.values():
            for upstream in route.upstreams:
                upstream.sweep_idle(parked_before)
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_interval, self._sweep)
