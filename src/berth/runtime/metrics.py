"""A replica process's own statistics: plain counters on the request path, read when asked.

The request path only adds to ints and observes into `Histogram`s (a bisect and two additions).
Two readers turn the same counters into answers at read time: `GET /stats` (JSON, the contract in
`berth.runtime.contract`, pulled by the daemon's collector) and `GET /metrics` (Prometheus text,
rendered at scrape time by `berth.observability.replica_metrics`).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from berth.observability import replica_metrics
from berth.observability.histogram import BATCH_SIZE_BOUNDS, BATCH_WAIT_BOUNDS, LATENCY_BOUNDS, Histogram
from berth.runtime.contract import HistogramJSON, PredictionStats, ReplicaStats

CONTENT_TYPE = replica_metrics.CONTENT_TYPE
CODES = ("2XX", "4XX", "5XX")


class PredictionSource(Protocol):
    """What prediction monitoring gives the readers (berth.runtime.monitoring.PredictionMonitor)."""

    def as_json(self) -> PredictionStats: ...


class ReplicaMetrics:
    """The counters of one replica process. Touched only from the event loop's thread."""

    def __init__(self, api: str, process: int = 0, version: str | None = None) -> None:
        self.api = api
        self.process = process
        self.version = version
        # A new incarnation whenever the counters start from zero, so readers can take deltas.
        self.incarnation = f"{os.getpid()}-{time.time():.3f}"
        self.in_flight = 0
        self.requests = dict.fromkeys(CODES, 0)
        self.request_seconds = Histogram.empty(LATENCY_BOUNDS)  # the whole predict request, as the replica sees it
        self.predict = Histogram.empty(LATENCY_BOUNDS)  # the predictor call alone (a batch: one call)
        self.batch_size = Histogram.empty(BATCH_SIZE_BOUNDS)
        self.batch_wait = Histogram.empty(BATCH_WAIT_BOUNDS)
        self.init_seconds: float | None = None
        self.predictions: PredictionSource | None = None

    def observe_batch(self, size: int, waited: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(waited)

    def observe(self, status: int, seconds: float) -> None:
        code = "2XX" if status < 400 else "4XX" if status < 500 else "5XX"
        self.requests[code] += 1
        self.request_seconds.observe(seconds)

    def stats(self) -> ReplicaStats:
        """The JSON `GET /stats` answers: cumulative since this process started."""
        return {
            "incarnation": self.incarnation, "process": self.process, "version": self.version,
            "init_seconds": self.init_seconds, "predict": _json(self.predict),
            "batch_size": _json(self.batch_size), "batch_wait": _json(self.batch_wait),
            "requests": dict(self.requests), "in_flight": self.in_flight,
            "predictions": self.prediction_stats(),
        }

    def prediction_stats(self) -> PredictionStats | None:
        return self.predictions.as_json() if self.predictions is not None else None

    def exposition(self) -> bytes:
        """/metrics: Prometheus text rendered from these counters now."""
        return replica_metrics.exposition(self)


def _json(histogram: Histogram) -> HistogramJSON:
    return {"bounds": list(histogram.bounds), "counts": list(histogram.counts), "sum": histogram.sum,
            "count": histogram.count}
