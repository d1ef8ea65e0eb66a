"""Which backend of a traffic splitter takes a request: pure, so the gateway's choice is table-tested.

* `SmoothWeighted` is nginx's smooth weighted round robin: over any `sum(weights)` consecutive picks
  each backend is chosen exactly its weight (10 % is 1 in 10, not "about 10 % over a long run"), and
  the picks of a heavy backend are spread out rather than bunched.
* `sticky_index` maps a header value to a backend through a stable hash (BLAKE2b, not Python's
  salted `hash`), so one user lands on the same backend in every gateway worker and after restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

STICKY_BUCKETS = 100  # weights are percentages: a value hashes onto one of 100 buckets


class SmoothWeighted:
    """Smooth weighted round robin over non-negative integer weights (at least one positive)."""

    __slots__ = ("current", "total", "weights")

    def __init__(self, weights: Sequence[int]) -> None:
        if any(weight < 0 for weight in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be non-negative with a positive sum (got {list(weights)})")
        self.weights = tuple(weights)
        self.total = sum(self.weights)
        self.current = [0] * len(self.weights)

    def pick(self) -> int:
        """The index of the next backend. A zero weight is never picked: the currents always sum to
        zero, so some positive-weight backend is above it after each round of additions."""
        current, weights = self.current, self.weights
        best = -1
        best_value = 0
        for index, weight in enumerate(weights):
            value = current[index] + weight
            current[index] = value
            if best < 0 or value > best_value:
                best, best_value = index, value
        current[best] -= self.total
        return best


def bucket(value: bytes) -> int:
    """A stable bucket in [0, STICKY_BUCKETS) for a header value."""
    digest = hashlib.blake2b(value, digest_size=8).digest()
    return int.from_bytes(digest, "big") % STICKY_BUCKETS


def sticky_index(value: bytes, weights: Sequence[int]) -> int:
    """The backend whose share of the cumulative weights holds the value's bucket. Weights summing to
    100 give each backend exactly its percentage of the buckets; another sum is scaled onto them."""
    total = sum(weights)
    if total <= 0:
        raise ValueError(f"weights must have a positive sum (got {list(weights)})")
    point = bucket(value) * total // STICKY_BUCKETS
    cumulative = 0
    for index, weight in enumerate(weights):
        cumulative += weight
        if point < cumulative:
            return index
    return len(weights) - 1  # unreachable: point < total
