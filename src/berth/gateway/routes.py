"""Routing state: which endpoint belongs to which API, and its pool of replica process endpoints."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from berth.core.balancing import admits, least_in_flight
from berth.observability.stats import APIStats

if TYPE_CHECKING:
    from berth.gateway.keys import KeyRing
    from berth.gateway.splitting import SplitEntry, Splitter
    from berth.gateway.upstream import UpstreamConnection


@dataclass(frozen=True)
class Target:
    """One (replica, process) endpoint as the control plane announces it."""

    replica_id: str
    socket_path: str


class Waiter(Protocol):
    """A request held for a replica of an API scaled to zero."""

    def resume(self) -> None: ...

    def fail(self, message: str) -> None: ...


class Upstream:
    """A replica process the gateway sends to, with its idle keep-alive connections."""

    __slots__ = ("idle", "in_flight", "retired", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.in_flight = 0
        self.idle: deque[UpstreamConnection] = deque()
        self.retired = False

    def take_idle(self) -> UpstreamConnection | None:
        while self.idle:
            connection = self.idle.pop()
            if connection.usable:
                return connection
        return None

    def release(self, connection: UpstreamConnection) -> None:
        if self.retired:
            connection.close()
        else:
            self.idle.append(connection)

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()

    def sweep_idle(self, parked_before: float) -> None:
        """Close pooled connections idle since before the given time (the oldest sit on the left)."""
        idle = self.idle
        while idle and (idle[0].idle_since < parked_before or not idle[0].usable):
            idle.popleft().close()


class Route:
    """An API as the gateway sees it."""

    def __init__(self, api: str, endpoint: str, max_replica_concurrency: int, timeout: float = 600.0) -> None:
        self.api = api
        self.endpoint = endpoint
        self.max_replica_concurrency = max_replica_concurrency
        self.timeout = timeout  # seconds a replica may take to answer (networking.timeout): then 504
        self.upstreams: list[Upstream] = []
        self.ready_replicas = 0
        self.in_flight = 0
        self.stats = APIStats()
        self.log_rate = 1.0  # networking.request_log_sample_rate: the share of requests written to its log
        self.stream_body = False  # request bodies go to the replica as they arrive (predict takes body_stream)
        self._next = 0
        # Scale from zero: requests wait here until a replica is ready (or fails to start).
        self.holds = False
        self.hold_limit = 0
        self.hold_timeout = 0.0
        self.waiting: deque[Waiter] = deque()
        # Set only on a traffic splitter's route (gateway/splitting.py): the one check a plain API pays.
        self.split: Splitter | None = None
        self.keys: KeyRing | None = None  # networking.api_keys: required (see gateway/keys.py)

    def hold_requests(self, enabled: bool, limit: int, timeout: float) -> None:
        self.holds, self.hold_limit, self.hold_timeout = enabled, limit, timeout

    @property
    def load(self) -> int:
        """In flight from the clients' point of view: sent to replicas, or held for one."""
        return self.in_flight + len(self.waiting)

    def pick(self, exclude: Iterable[Upstream] = ()) -> Upstream | None:
        candidates = [u for u in self.upstreams if u not in exclude] if exclude else self.upstreams
        index = least_in_flight([u.in_flight for u in candidates], self._next)
        self._next += 1
        return candidates[index] if index >= 0 else None

    def admits(self) -> bool:
        return admits(self.in_flight, self.ready_replicas, self.max_replica_concurrency)

    def set_targets(self, targets: Iterable[Target]) -> list[Upstream]:
        """Replace the pool; returns the upstreams that left it (they finish what they hold)."""
        wanted = list(dict.fromkeys(targets))
        current = {u.target: u for u in self.upstreams}
        self.upstreams = [current.get(t) or Upstream(t) for t in wanted]
        self.ready_replicas = len({t.replica_id for t in wanted})
        kept = set(wanted)
        removed = [u for t, u in current.items() if t not in kept]
        for upstream in removed:
            upstream.retired = True
            upstream.close_idle()
        while self.upstreams and self.waiting:
            self.waiting.popleft().resume()
        return removed

    def fail_waiting(self, message: str) -> None:
        """The replica held requests waited for failed: answer them now rather than at the timeout."""
        while self.waiting:
            self.waiting.popleft().fail(message)


class RoutingTable:
    def __init__(self) -> None:
        self.by_endpoint: dict[str, Route] = {}
        self.by_api: dict[str, Route] = {}
        # Routes with stream_body: while none, the reader never looks a route up before a body is whole.
        self.streaming = 0
        self.splitters: dict[str, Route] = {}  # traffic splitters by name, also in by_endpoint

    def upsert(self, api: str, endpoint: str, max_replica_concurrency: int) -> Route:
        route = self.by_api.get(api)
        if route is None:
            route = Route(api, endpoint, max_replica_concurrency)
            self.by_api[api] = route
        elif route.endpoint != endpoint:
            self.by_endpoint.pop(route.endpoint, None)
            route.endpoint = endpoint
        route.max_replica_concurrency = max_replica_concurrency
        self.by_endpoint[endpoint] = route
        return route

    def remove(self, api: str) -> Route | None:
        route = self.by_api.pop(api, None)
        if route is not None:
            self.by_endpoint.pop(route.endpoint, None)
            route.set_targets(())
            self.count_streaming()
        return route

    def count_streaming(self) -> None:
        """Call after changing a route's stream_body."""
        self.streaming = sum(route.stream_body for route in self.by_api.values())

    def set_splitters(self, entries: list[SplitEntry]) -> None:
        """Replace the splitters, keeping the round-robin state and counters of those that stay."""
        from berth.gateway.splitting import split_route  # splitting builds on this module

        wanted = {entry.name: entry for entry in entries}
        for name in [name for name in self.splitters if name not in wanted]:
            route = self.splitters.pop(name)
            if self.by_endpoint.get(route.endpoint) is route:
                del self.by_endpoint[route.endpoint]
        for entry in entries:
            existing = self.splitters.get(entry.name)
            if existing is None or existing.split is None:
                existing = self.splitters[entry.name] = split_route(entry, self)
            else:
                existing.split.update(entry)
                if existing.endpoint != entry.endpoint and self.by_endpoint.get(existing.endpoint) is existing:
                    del self.by_endpoint[existing.endpoint]
                existing.endpoint = entry.endpoint
            self.by_endpoint[entry.endpoint] = existing

    def resolve(self, path: str) -> tuple[Route | None, str]:
        """The route for a request path and the path the replica sees (`/` for the predict call)."""
        route = self.by_endpoint.get(path)
        if route is not None:
            return route, "/"
        prefix = path
        while True:
            prefix = prefix.rpartition("/")[0]
            if not prefix:
                return None, path
            route = self.by_endpoint.get(prefix)
            if route is not None:
                return route, path[len(prefix):] or "/"
