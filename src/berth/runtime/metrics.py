"""A replica process's own statistics: plain counters on the request path, read when asked.

The request path only adds to ints and observes into `Histogram`s (a bisect and two additions).
Two readers turn the same counters into answers at read time: `GET /stats` (JSON, the contract in
`berth.runtime.contract`, pulled by the daemon's collector) and `GET /metrics` (Prometheus text,
rendered by `ReplicaCollector` at scrape time, keeping the metric names the replica always had).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from berth.observability.histogram import BATCH_SIZE_BOUNDS, BATCH_WAIT_BOUNDS, LATENCY_BOUNDS, Histogram
from berth.runtime.contract import HistogramJSON, PredictionStats, ReplicaStats

CONTENT_TYPE = "text/plain; version=0.0.4"
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
            "predictions": self.predictions.as_json() if self.predictions is not None else None,
        }

    def exposition(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ReplicaCollector(self))
        return generate_latest(registry)


def _json(histogram: Histogram) -> HistogramJSON:
    return {"bounds": list(histogram.bounds), "counts": list(histogram.counts), "sum": histogram.sum,
            "count": histogram.count}


class ReplicaCollector(Collector):
    """Renders the counters as Prometheus families when scraped; nothing is kept between scrapes."""

    def __init__(self, metrics: ReplicaMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m, labels = self.metrics, [self.metrics.api]
        in_flight = GaugeMetricFamily("berth_replica_in_flight_requests", "Requests being handled",
                                      labels=["api_name"])
        in_flight.add_metric(labels, m.in_flight)
        requests = CounterMetricFamily("berth_replica_requests", "Predict requests by status class",
                                       labels=["api_name", "code"])
        for code, count in m.requests.items():
            requests.add_metric([m.api, code], count)
        yield from (in_flight, requests)
        yield _histogram("berth_replica_request_seconds", "Predict request latency", m.api, m.request_seconds)
        yield _histogram("berth_replica_predict_duration_seconds", "Seconds the predictor call took",
                         m.api, m.predict)
        yield _histogram("berth_replica_batch_size", "Requests per predict call (server-side batching)",
                         m.api, m.batch_size)
        yield _histogram("berth_replica_batch_wait_seconds",
                         "Time a batch's first request waited for the batch to close", m.api, m.batch_wait)
        if m.init_seconds is not None:
            init = GaugeMetricFamily("berth_replica_predictor_init_seconds",
                                     "Seconds the predictor took to initialise", labels=["api_name"])
            init.add_metric(labels, m.init_seconds)
            yield init
        if m.predictions is not None:
            yield from _predictions(m.api, m.predictions.as_json())


def _histogram(name: str, documentation: str, api: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["api_name"])
    buckets = [("+Inf" if math.isinf(bound) else repr(float(bound)), count) for bound, count in histogram.cumulative()]
    family.add_metric([api], buckets, histogram.sum)
    return family


def _predictions(api: str, stats: PredictionStats) -> Iterator[Metric]:
    classes = CounterMetricFamily("berth_replica_predictions", "Predictions by class (classification)",
                                  labels=["api_name", "class"])
    for label, count in stats["classes"].items():
        classes.add_metric([api, label], count)
    wrong = CounterMetricFamily("berth_replica_prediction_wrong_type",
                                "Predictions that were not of the monitored type", labels=["api_name"])
    wrong.add_metric([api], stats["wrong_type"])
    yield from (classes, wrong)
    values = stats["values"]
    if values is None:
        return
    yield _histogram("berth_replica_prediction_value", "Predicted values (regression)", api,
                     Histogram.from_json(dict[str, Any](values)))
    for name, value in (("min", values["min"]), ("max", values["max"])):
        if value is not None:
            gauge = GaugeMetricFamily(f"berth_replica_prediction_value_{name}", f"The {name}imum predicted value",
                                      labels=["api_name"])
            gauge.add_metric([api], value)
            yield gauge
