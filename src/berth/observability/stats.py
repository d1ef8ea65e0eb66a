"""Per-API request statistics kept by the gateway: plain counters the daemon pulls and aggregates.

A gateway worker's counters are cumulative for its process (its incarnation); the daemon's ledger
pulls them over the control channel (`counters()`) and turns them into deltas.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from berth.observability.histogram import LATENCY_BOUNDS, Histogram


@dataclass
class APIStats:
    """Plain counters: the hot path adds to ints, the exposition reads them when scraped.

    The dataclass fields are the totals the daemon's ledger adds up field by field; the status codes,
    the latency histogram and the refusals by reason are plain attributes beside them, so that a
    ledger summing every field as a number keeps working. They travel in `counters()`.
    """

    code_2xx: int = 0
    code_4xx: int = 0
    code_5xx: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0

    def __post_init__(self) -> None:
        # Lists indexed by status code and by latency bucket: on the hot path an index is cheaper than
        # a dict lookup or a Histogram method call. `codes` and `latency` build the shapes at read time.
        self.by_code = [0] * 1000  # every three-digit status
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)  # seconds from request head read to response end
        self.refusals: dict[str, int] = {}  # X-Berth-Reason of the gateway's own answers; client-gone for 499

    def record(self, status: int, seconds: float, reason: str | None = None) -> None:
        if status < 400:
            self.code_2xx += 1
        elif status < 500:
            self.code_4xx += 1
        else:
            self.code_5xx += 1
        self.latency_sum += seconds
        self.latency_count += 1
        self.by_code[status] += 1
        self.buckets[bisect_left(LATENCY_BOUNDS, seconds)] += 1  # Histogram.observe's rule: le
        if reason is not None:
            self.refusals[reason] = self.refusals.get(reason, 0) + 1

    @property
    def codes(self) -> dict[int, int]:
        return {code: count for code, count in enumerate(self.by_code) if count}

    @property
    def latency(self) -> Histogram:
        return Histogram(LATENCY_BOUNDS, list(self.buckets), self.latency_sum, self.latency_count)

    def counters(self) -> dict[str, Any]:
        """What the control channel's "stats" op sends: today's keys, plus codes, latency and refusals."""
        data: dict[str, Any] = dataclasses.asdict(self)
        data["codes"] = {str(code): count for code, count in self.codes.items()}
        data["latency"] = self.latency.as_json()
        data["refusals"] = dict(self.refusals)
        return data

    @property
    def avg_latency(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {"2XX": self.code_2xx, "4XX": self.code_4xx, "5XX": self.code_5xx,
                "avg_request_seconds": self.avg_latency, "requests": self.latency_count}
