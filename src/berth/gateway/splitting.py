"""Traffic splitters in the gateway: choose the backend API of a split request, name it in the
response, and mirror a copy of the request to the shadow API.

A splitter's endpoint resolves to a `SplitRoute` (a Route with `split` set); `_dispatch` swaps it for
the chosen API's Route and carries on exactly as for that API, so holds, limits and balancing are the
API's own. Plain API routes have `split = None`: their only cost is that one attribute check.

The `x-berth-api` header goes into the first bytes written to the client after the choice: that write
always begins with the response head (the upstream forwards a head whole; the gateway's own answers
are one write), so `AnnouncingTransport` wraps the client transport for that one write and then puts
the real one back. Nothing on the plain path looks at it.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any

from berth.core.splitting import SmoothWeighted, sticky_index
from berth.gateway.exchange import Exchange
from berth.gateway.http import ParsedRequest, request_head
from berth.gateway.routes import Route
from berth.gateway.upstream import UpstreamConnection

if TYPE_CHECKING:
    from berth.gateway.connection import ClientConnection
    from berth.gateway.routes import RoutingTable

# Copies in flight to one shadow API per gateway worker, beyond which new copies are dropped: a shadow
# that stops answering must not pile up connections and memory.
MAX_SHADOW_IN_FLIGHT = 64
SPLIT_HEADER = b"x-berth-api"
_connecting: set[asyncio.Task[None]] = set()


@dataclass(frozen=True)
class SplitEntry:
    """One splitter as the control plane wants every gateway worker to route it."""

    name: str
    endpoint: str
    backends: tuple[tuple[str, int], ...]  # (API, weight) of the serving APIs
    shadow: str | None = None
    header: str | None = None  # lower-cased header name of split_by
    api_keys: str = "none"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "endpoint": self.endpoint, "backends": [list(b) for b in self.backends],
                "shadow": self.shadow, "header": self.header, "api_keys": self.api_keys}

    @classmethod
    def from_json(cls, data: Any) -> SplitEntry:
        """Checked whole: a malformed splitter fails the table before any of it is applied."""
        if not isinstance(data, dict):
            raise ValueError(f"a splitter must be an object, not {type(data).__name__}")
        name, endpoint = data.get("name"), data.get("endpoint")
        backends = data.get("backends")
        if not isinstance(name, str) or not isinstance(endpoint, str):
            raise ValueError(f"a splitter needs a string name and endpoint: {data!r}"[:300])
        if not isinstance(backends, list) or not backends or not all(
                isinstance(b, list) and len(b) == 2 and isinstance(b[0], str) and isinstance(b[1], int)
                and not isinstance(b[1], bool) and b[1] >= 0 for b in backends) \
                or sum(b[1] for b in backends) <= 0:
            raise ValueError(f"splitter {name!r}: backends must be [API, weight >= 0] pairs with a positive sum")
        shadow, header = data.get("shadow"), data.get("header")
        if not isinstance(shadow, str | None) or not isinstance(header, str | None):
            raise ValueError(f"splitter {name!r}: shadow and header must be strings or null")
        return cls(name=name, endpoint=endpoint, backends=tuple((b[0], b[1]) for b in backends), shadow=shadow,
                   header=header, api_keys=str(data.get("api_keys", "none")))


@dataclass
class BackendCounts:
    """What one API received through one splitter (in this worker, since it started)."""

    requests: int = 0
    code_2xx: int = 0
    code_4xx: int = 0
    code_5xx: int = 0
    timeouts: int = 0   # shadow only: no answer within the shadow API's networking.timeout
    errors: int = 0     # shadow only: the connection failed or was lost
    dropped: int = 0    # shadow only: copies not sent (no ready replica, at its limit, too many in flight)
    in_flight: int = 0  # shadow only: copies sent and not yet answered

    def count(self, status: int) -> None:
        if status < 400:
            self.code_2xx += 1
        elif status < 500:
            self.code_4xx += 1
        else:
            self.code_5xx += 1

    def as_json(self) -> dict[str, int]:
        return {"requests": self.requests, "2xx": self.code_2xx, "4xx": self.code_4xx, "5xx": self.code_5xx,
                "timeouts": self.timeouts, "errors": self.errors, "dropped": self.dropped,
                "in_flight": self.in_flight}


class AnnouncingTransport:
    """The client's transport for one write: the head it begins gets `x-berth-api`, the outcome is
    counted, and the real transport is put back."""

    def __init__(self, client: ClientConnection, real: asyncio.Transport, line: bytes, counts: BackendCounts) -> None:
        self.client, self.real, self.line, self.counts = client, real, line, counts

    def write(self, data: bytes) -> None:
        self.client.transport = self.real
        end = data.find(b"\r\n")
        if data.startswith(b"HTTP/") and end > 0:
            status = data[9:12]
            if status.isdigit():
                self.counts.count(int(status))
            data = data[:end + 2] + self.line + data[end + 2:]
        self.real.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class Splitter:
    """The choice for one splitter in one worker: SWRR state, sticky header, counters, shadow copies."""

    def __init__(self, entry: SplitEntry, table: RoutingTable) -> None:
        self.entry = entry
        self.table = table
        self.chooser = SmoothWeighted([weight for _, weight in entry.backends])
        self.header = entry.header.encode("latin-1") if entry.header else None
        self.counts = {api: BackendCounts() for api, _ in entry.backends}
        self.shadow_counts = BackendCounts()
        # A request held for its API to scale from zero is dispatched again when it resumes: it keeps
        # the API it was given (and is neither counted nor mirrored twice).
        self.pinned: weakref.WeakKeyDictionary[ClientConnection, tuple[ParsedRequest, Route]] = \
            weakref.WeakKeyDictionary()

    def update(self, entry: SplitEntry) -> None:
        """A new table: the round-robin state and the counters stay unless the backends changed."""
        if entry.backends != self.entry.backends:
            self.chooser = SmoothWeighted([weight for _, weight in entry.backends])
            self.counts = {api: self.counts.get(api) or BackendCounts() for api, _ in entry.backends}
        self.entry = entry
        self.header = entry.header.encode("latin-1") if entry.header else None

    def choose(self, client: ClientConnection, request: ParsedRequest, subpath: str) -> Route | None:
        """The Route of the API that takes the request; None when the gateway answered it already."""
        pinned = self.pinned.pop(client, None)
        if pinned is not None and pinned[0] is request:
            return pinned[1]
        index = self._index(request)
        api = self.entry.backends[index][0]
        counts = self.counts[api]
        counts.requests += 1
        self._announce(client, api, counts)
        route = self.table.by_api.get(api)
        if route is None:  # the table names an API it does not route (a daemon bug, or a table mid-change)
            client._answer(request, 503, f"API {api!r} of traffic splitter {self.entry.name!r} is not deployed",
                           b"no-such-api")
            return None
        if self.entry.shadow is not None:
            self._mirror(request, subpath)
        self.pinned[client] = (request, route)
        return route

    def _index(self, request: ParsedRequest) -> int:
        if self.header is not None:
            header = self.header
            for name, value in request.headers:
                if name == header:
                    return sticky_index(value, [weight for _, weight in self.entry.backends])
        return self.chooser.pick()

    def _announce(self, client: ClientConnection, api: str, counts: BackendCounts) -> None:
        transport = client.transport
        if transport is None:
            return
        if isinstance(transport, AnnouncingTransport):
            transport = transport.real
        line = b"%s: %s\r\n" % (SPLIT_HEADER, api.encode("latin-1"))
        client.transport = AnnouncingTransport(client, transport, line, counts)  # type: ignore[assignment]

    def _mirror(self, request: ParsedRequest, subpath: str) -> None:
        counts = self.shadow_counts
        counts.requests += 1
        route = self.table.by_api.get(self.entry.shadow or "")
        if route is None or not route.upstreams or not route.admits() or counts.in_flight >= MAX_SHADOW_IN_FLIGHT:
            counts.dropped += 1
            return
        upstream = route.pick()
        assert upstream is not None
        target = subpath.encode("latin-1") + (b"?" + request.query if request.query else b"")
        copy = ShadowCopy(route, counts, Exchange(route, upstream, request, request_head(request, target)
                                                  + request.body, monotonic()))
        copy.start()

    def counters(self) -> dict[str, Any]:
        backends = {api: counts.as_json() for api, counts in self.counts.items()}
        shadow = {self.entry.shadow: self.shadow_counts.as_json()} if self.entry.shadow else {}
        return {"backends": backends, "shadow": shadow}


class ShadowCopy:
    """A copy of a split request sent to the shadow API on its own upstream connection. Its response is
    read and discarded (a ResponseSink that only counts); no client waits for it, and whatever ends it
    (answer, timeout, lost connection) releases its in-flight counts exactly once."""

    def __init__(self, route: Route, counts: BackendCounts, exchange: Exchange) -> None:
        self.route, self.counts, self.exchange = route, counts, exchange
        self.timer: asyncio.TimerHandle | None = None
        self.done = False
        counts.in_flight += 1

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.route.timeout, self._timeout)
        connection = self.exchange.upstream.take_idle()
        if connection is not None:
            connection.send(self.exchange, self)
        else:
            task = loop.create_task(self._connect(loop))
            _connecting.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(_connecting.discard)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        upstream = self.exchange.upstream
        try:
            _, connection = await loop.create_unix_connection(
                functools.partial(UpstreamConnection, upstream.release), upstream.target.socket_path)
        except OSError:
            self._end(None, "shadow-unreachable")
            return
        if self.done:
            connection.park()
        else:
            connection.send(self.exchange, self)

    def _end(self, status: int | None, reason: str | None, recorded: int = 502) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
        exchange = self.exchange
        exchange.release()
        self.counts.in_flight -= 1
        if status is not None:
            self.counts.count(status)
        self.route.stats.record(status or recorded, monotonic() - exchange.started, reason)

    def _timeout(self) -> None:
        if self.done:
            return
        self.counts.timeouts += 1
        connection = self.exchange.connection
        self._end(None, "shadow-timeout", 504)
        if connection is not None:
            connection.abandon()  # it may still answer: never reused

    # --- ResponseSink ------------------------------------------------------------------------
    def forward(self, data: bytes) -> None:
        """Discarded: nobody reads a shadow's answer."""

    def response_complete(self, status: int, keep_alive: bool) -> None:
        self._end(status, None)

    def upstream_lost(self, responded: bool, delivered: bool) -> None:
        if not self.done:
            self.counts.errors += 1
        self._end(None, "shadow-connection-lost")


def split_route(entry: SplitEntry, table: RoutingTable) -> Route:
    """A Route that stands for the splitter in `by_endpoint`: counted requests it refuses itself
    (oversize bodies, timeouts) go to its own stats; everything else goes to the chosen API."""
    route = Route(entry.name, entry.endpoint, 0)
    route.split = Splitter(entry, table)
    route.log_rate = 0.0  # the chosen API's route logs the request
    return route
