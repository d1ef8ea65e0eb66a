"""A token bucket: `rate` tokens a second, holding at most `burst`. Time is passed in."""

from __future__ import annotations

import math


class TokenBucket:
    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, now: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError(f"a token bucket needs a positive rate (got {rate!r})")
        self.rate = rate
        # One second's worth, but never less than one request, or a slow rate could never admit anything.
        self.burst = max(1.0, rate if burst is None else burst)
        self.tokens = self.burst
        self.updated = now

    def take(self, now: float) -> float:
        """0.0 when a request may go now (a token is spent); else the seconds until one may."""
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def retry_after(wait: float) -> int:
    """`Retry-After` is whole seconds (RFC 9110 §10.2.3); never 0, which would invite an immediate retry."""
    return max(1, math.ceil(wait))
