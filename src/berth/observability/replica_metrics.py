"""The replica's Prometheus metrics, rendered at scrape time from its plain counters.

The counters live in `berth.runtime.metrics` (they also answer `GET /stats`); this module only reads
them when `/metrics` is scraped, under the metric names the replica always had, plus predict time,
`__init__` seconds and prediction monitoring. Nothing is kept between scrapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from berth.observability.histogram import Histogram

CONTENT_TYPE = "text/plain; version=0.0.4"


class ReplicaCounters(Protocol):
    """What a replica process counts (berth.runtime.metrics.ReplicaMetrics)."""

    api: str
    in_flight: int
    requests: dict[str, int]  # "2XX", "4XX", "5XX"
    request_seconds: Histogram
    predict: Histogram
    batch_size: Histogram
    batch_wait: Histogram
    init_seconds: float | None

    def prediction_stats(self) -> Mapping[str, Any] | None:
        """The /stats "predictions" object, or None without `monitoring`."""


def exposition(counters: ReplicaCounters) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplicaCollector(counters))
    return generate_latest(registry)


class ReplicaCollector(Collector):
    """Renders the counters as Prometheus families when scraped; nothing is kept between scrapes."""

    def __init__(self, metrics: ReplicaCounters) -> None:
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
        predictions = m.prediction_stats()
        if predictions is not None:
            yield from _predictions(m.api, predictions)


def _histogram(name: str, documentation: str, api: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["api_name"])
    buckets = [("+Inf" if math.isinf(bound) else repr(float(bound)), count) for bound, count in histogram.cumulative()]
    family.add_metric([api], buckets, histogram.sum)
    return family


def _predictions(api: str, stats: Mapping[str, Any]) -> Iterator[Metric]:
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
                     Histogram.from_json(values))
    for name, value in (("min", values["min"]), ("max", values["max"])):
        if value is not None:
            gauge = GaugeMetricFamily(f"berth_replica_prediction_value_{name}", f"The {name}imum predicted value",
                                      labels=["api_name"])
            gauge.add_metric([api], value)
            yield gauge
