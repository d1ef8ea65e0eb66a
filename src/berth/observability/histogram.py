"""A histogram of plain numbers that crosses process boundaries as JSON.

Every process that observes (a gateway worker, a replica process) keeps cumulative `Histogram`s:
observing is a bisect and two additions, nothing else on the hot path. The daemon pulls them as
JSON, turns cumulative values into deltas per process incarnation (`since`), adds deltas into
minute buckets (`merge`), and renders Prometheus histograms and quantiles from them at read time.
Standard library only: the replica and the gateway import it.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Request latency as the gateway sees it, and predict time as a replica sees it: 1 ms to 60 s.
LATENCY_BOUNDS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                     10.0, 30.0, 60.0)
BATCH_SIZE_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_WAIT_BOUNDS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Histogram:
    """Counts per upper bound (`le`, Prometheus' convention) plus one overflow bucket (+Inf).

    `counts[i]` counts observations with bounds[i-1] < value <= bounds[i]; `counts[-1]` those above the
    last bound. Not cumulative: Prometheus' cumulative buckets are computed when rendering.
    """

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)
        elif len(self.counts) != len(self.bounds) + 1:
            raise ValueError(f"a histogram with {len(self.bounds)} bounds needs {len(self.bounds) + 1} counts, "
                             f"got {len(self.counts)}")

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or below it) pairs, +Inf last: Prometheus' buckets."""
        pairs, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs

    def quantile(self, q: float) -> float | None:
        """The q-quantile, interpolated linearly inside its bucket as Prometheus' histogram_quantile does;
        None when empty. A quantile in the overflow bucket is reported as the last bound."""
        if self.count == 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            if count and below + count >= rank:
                return lower + (bound - lower) * max(0.0, rank - below) / count
            below += count
            lower = bound
        return self.bounds[-1] if self.bounds else None

    def since(self, earlier: Histogram | None) -> Histogram:
        """What was observed after `earlier` (the same process's previous reading; None: since it started).
        A reading that went backwards means a new process: everything in it is new."""
        if earlier is None or earlier.bounds != self.bounds or earlier.count > self.count:
            return self.copy()
        return Histogram(self.bounds, [now - then for now, then in zip(self.counts, earlier.counts, strict=True)],
                         self.sum - earlier.sum, self.count - earlier.count)

    def merge(self, other: Histogram) -> None:
        """Add another histogram's observations (same bounds) into this one."""
        if other.bounds != self.bounds:
            raise ValueError("cannot merge histograms with different bounds")
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.sum += other.sum
        self.count += other.count

    def copy(self) -> Histogram:
        return Histogram(self.bounds, list(self.counts), self.sum, self.count)

    def as_json(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": self.counts, "sum": self.sum, "count": self.count}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        return cls(tuple(float(b) for b in data["bounds"]), [int(c) for c in data["counts"]],
                   float(data["sum"]), int(data["count"]))

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> Histogram:
        return cls(tuple(float(b) for b in bounds))
