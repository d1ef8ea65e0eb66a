"""The client connection's side of requests held for an API scaled to zero (exchange.Held).

A mixin of ClientConnection, kept apart as uploads.py is: a request is held when its API has no
ready replica and may start one; it resumes when one is ready, or gets a 503 when none came in time.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import TYPE_CHECKING

from berth.gateway.exchange import Held
from berth.gateway.http import ParsedRequest
from berth.gateway.routes import Route

if TYPE_CHECKING:
    from berth.gateway.proxy import Gateway


class HeldExchanges:
    """What ClientConnection does for a request waiting for a replica to start (see connection.py)."""

    # ClientConnection's, used here.
    gateway: Gateway
    loop: asyncio.AbstractEventLoop
    held: Held | None
    closing: bool

    if TYPE_CHECKING:
        def _dispatch(self, request: ParsedRequest, now: float = 0.0) -> None: ...

        def _pump(self) -> None: ...

        def _record(self, route: Route, request: ParsedRequest, status: int, seconds: float, now: float,
                    reason: str | None, replica: str | None) -> None: ...

        def _answer(self, request: ParsedRequest, status: int, message: str, reason: bytes) -> None: ...

        def _turn_away(self, route: Route, request: ParsedRequest, status: int, message: str,
                       reason: str) -> None: ...

    def _hold(self, route: Route, request: ParsedRequest) -> None:
        """Wait for a replica of an API scaled to zero, within the queue bound and the timeout."""
        if len(route.waiting) >= route.hold_limit:
            self._turn_away(route, request, 503, f"API {route.api!r} is starting a replica and already holds "
                            f"{route.hold_limit} requests (scale_from_zero_queue); retry later",
                            "scale-from-zero-queue-full")
            return
        held = Held(self, route, request, request.started or monotonic())
        self.held = held
        route.waiting.append(held)
        held.timer = self.loop.call_later(route.hold_timeout, held.expire)
        self.gateway.wake(route.api)

    def resume_held(self, held: Held) -> None:
        if self.held is not held or self.closing:
            return
        self.held = None
        self._dispatch(held.request)
        self._pump()

    def expire_held(self, held: Held, message: str | None) -> None:
        """Answer a held request with a 503: its timeout passed, or the replica it waited for failed."""
        if self.held is not held:
            return
        self.held = None
        route = held.route
        if message is None:
            text, reason = (f"no replica of API {route.api!r} became ready within {route.hold_timeout:g}s "
                            f"(scale_from_zero_timeout); see `berth get {route.api}`"), "scale-from-zero-timeout"
        else:
            text, reason = f"the replica of API {route.api!r} failed to start: {message}", "replica-failed-to-start"
        now = monotonic()
        self._record(route, held.request, 503, now - held.since, now, reason, None)
        self._answer(held.request, 503, text, reason.encode())
        self._pump()
