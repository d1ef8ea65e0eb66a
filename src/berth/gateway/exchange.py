"""A request in flight through the gateway, and a request held for an API scaled to zero.

The Exchange owns the in-flight counts of its route and upstream: counted once when it starts,
released exactly once whatever ends it (response, timeout, replica lost, client gone).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

from berth.gateway.http import ParsedRequest
from berth.gateway.routes import Route, Upstream

if TYPE_CHECKING:
    from berth.gateway.upstream import UpstreamConnection


class Exchange:
    __slots__ = ("connection", "data", "deadline", "released", "request", "route", "started", "tried", "upstream")

    def __init__(self, route: Route, upstream: Upstream, request: ParsedRequest, data: bytes, now: float) -> None:
        self.route = route
        self.upstream = upstream
        self.request = request
        self.data = data
        # Timed from the moment its head began to arrive, so a request held for a replica to start
        # counts its wait in its time (what its client saw); its networking.timeout starts only when sent.
        self.started = request.started or now
        self.deadline = now + route.timeout
        self.tried: list[Upstream] | None = None
        self.connection: UpstreamConnection | None = None
        self.released = False
        route.in_flight += 1
        upstream.in_flight += 1

    def progressed(self, now: float) -> None:
        """Bytes of a response or a streamed body moved: networking.timeout counts from the last of them,
        as nginx's proxy_read_timeout, so a stream may last longer than it while it keeps moving."""
        self.deadline = now + self.route.timeout

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.route.in_flight -= 1
            self.upstream.in_flight -= 1

    def move_to_another(self) -> bool:
        """Hand a request its replica never read to one not tried yet (the only safe retry)."""
        if self.released or (self.request.upload is not None and self.request.upload.sent):
            return False  # released; or some of a streamed body went out, and the gateway has it no more
        tried = self.tried = [*(self.tried or ()), self.upstream]
        following = self.route.pick(exclude=tried)
        if following is None:
            return False
        self.upstream.in_flight -= 1
        self.upstream = following
        following.in_flight += 1
        return True


class HeldOwner(Protocol):
    def resume_held(self, held: Held) -> None: ...

    def expire_held(self, held: Held, message: str | None) -> None: ...


class Held:
    """A request waiting for an API scaled to zero to get a ready replica."""

    __slots__ = ("connection", "request", "route", "since", "timer")

    def __init__(self, connection: HeldOwner, route: Route, request: ParsedRequest, since: float) -> None:
        self.connection = connection
        self.route = route
        self.request = request
        self.since = since  # when the request was read: its recorded time includes the wait
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
