"""The replica's Prometheus metrics: in-flight requests (what KEDA scales on), outcomes, latency, batches."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4"
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
BATCH_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ReplicaMetrics:
    """One registry per replica process; the children are labelled once here, not per request."""

    def __init__(self, api: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"api_name": api}
        self.in_flight = Gauge("berth_replica_in_flight_requests", "Requests being handled",
                               list(labels), registry=self.registry).labels(**labels)
        requests = Counter("berth_replica_requests", "Predict requests by status class",
                           ["api_name", "code"], registry=self.registry)
        self.by_class = {code: requests.labels(api_name=api, code=code) for code in ("2XX", "4XX", "5XX")}
        self.latency = Histogram("berth_replica_request_seconds", "Predict latency", list(labels),
                                 registry=self.registry).labels(**labels)
        self.batch_size = Histogram("berth_replica_batch_size", "Requests per predict call (server-side batching)",
                                    list(labels), registry=self.registry, buckets=BATCH_SIZE_BUCKETS).labels(**labels)
        self.batch_wait = Histogram("berth_replica_batch_wait_seconds",
                                    "Time a batch's first request waited for the batch to close", list(labels),
                                    registry=self.registry, buckets=BATCH_WAIT_BUCKETS).labels(**labels)

    def observe_batch(self, size: int, waited: float) -> None:
        self.batch_size.observe(size)
        self.batch_wait.observe(waited)

    def observe(self, status: int, seconds: float) -> None:
        self.by_class.get(f"{status // 100}XX", self.by_class["5XX"]).inc()
        self.latency.observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
