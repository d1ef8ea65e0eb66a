"""When a crashed replica may start again: exponential backoff, reset by a healthy run."""

from __future__ import annotations

BASE_DELAY = 0.5
MAX_DELAY = 60.0
HEALTHY_RUN = 60.0


def restart_delay(consecutive_failures: int, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """Seconds to wait before the next start after `consecutive_failures` crashes in a row."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(cap, base * 2.0 ** (consecutive_failures - 1)))


def failures_after_exit(previous: int, ran_for: float, was_ready: bool) -> int:
    """The crash streak after an exit: a replica that served for a while starts a new streak."""
    if was_ready and ran_for >= HEALTHY_RUN:
        return 1
    return previous + 1
