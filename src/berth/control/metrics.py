"""The Prometheus exposition at /_berth/metrics, read from the daemon's state when scraped.

Nothing is counted here: the gateway workers' counters arrive through the ledger (exact across daemon
restarts), the replica processes' through the collector, replica states from the fleet, autoscaler
inputs from its last decision, drift from the history. A scrape reads those, builds the families and
returns; it touches neither the gateways nor the replicas, so it costs the request path nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from berth.control.collector import ReplicaCollector
from berth.control.fleet import FleetView
from berth.control.ledger import RequestLedger
from berth.core.status import ReplicaState
from berth.observability.histogram import Histogram

STATES = ("desired", "ready", "pending", "initializing", "failed", "terminating")
FAILED_STATES = (ReplicaState.FAILED, ReplicaState.KILLED, ReplicaState.KILLED_OOM)
# Autoscaler decision fields per metric (core.autoscaler.Decision's names).
AUTOSCALER = (("berth_autoscaler_recommendation", "recommendation",
               "Replicas the autoscaler's latest tick recommended (before stabilisation)"),
              ("berth_autoscaler_in_flight_average", "avg_in_flight",
               "In-flight requests averaged over the window the latest tick used"),
              ("berth_autoscaler_target_concurrency", "target_replica_concurrency",
               "Target in-flight requests per replica (the spec's autoscaling setting)"),
              ("berth_autoscaler_requested_replicas", "request",
               "Replicas the latest tick requested (after stabilisation and limits)"))


@dataclass
class MetricsSources:
    """Where each family is read from; callables so that the daemon's objects stay the owners."""

    fleet: FleetView
    ledger: RequestLedger
    collector: ReplicaCollector
    loads: Callable[[], tuple[Mapping[str, int], Mapping[str, int]]]  # (load, held) per API
    decision: Callable[[str], Mapping[str, Any] | None]  # the autoscaler's latest, per API
    drift: Callable[[str], float | None]  # PSI per API, None without monitoring or data
    # (target, key name, status class, count) per API key (control/keys.py); none until the key service is wired
    key_requests: Callable[[], Iterable[tuple[str, str, str, int]]] = lambda: ()


class BerthCollector(Collector):
    def __init__(self, sources: MetricsSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        apis = sorted(self.sources.fleet.apis)
        yield from self._requests(apis)
        yield from self._replicas(apis)
        yield from self._autoscaler(apis)
        yield from self._replica_side(apis)
        yield from self._usage()
        yield from self._predictions(apis)
        yield from self._key_requests()

    # --- gateway side ---------------------------------------------------------------------------
    def _requests(self, apis: list[str]) -> Iterator[Metric]:
        requests = CounterMetricFamily("berth_requests", "Responses the gateway sent, by status code",
                                       labels=["api_name", "code", "code_class"])
        duration = HistogramMetricFamily("berth_request_duration_seconds",
                                         "Request time seen by the gateway, request head read to response end",
                                         labels=["api_name"])
        refusals = CounterMetricFamily("berth_gateway_refusals", "Requests the gateway answered itself, by "
                                       "X-Berth-Reason (client-gone: the client left first)",
                                       labels=["api_name", "reason"])
        in_flight = GaugeMetricFamily("berth_in_flight_requests", "Requests sent to a replica and not yet answered",
                                      labels=["api_name"])
        held = GaugeMetricFamily("berth_held_requests", "Requests held by the gateway while the API scales from "
                                 "zero", labels=["api_name"])
        loads, holding = self.sources.loads()
        for api in apis:
            totals = self.sources.ledger.totals_of(api)
            for code, count in _codes(totals.codes, totals.stats):
                requests.add_metric([api, code, _code_class(code)], count)
            _add_histogram(duration, [api], totals.latency)
            for reason, count in sorted(totals.refusals.items()):
                refusals.add_metric([api, reason], count)
            waiting = holding.get(api, 0)
            in_flight.add_metric([api], max(0, loads.get(api, 0) - waiting))
            held.add_metric([api], waiting)
        yield from (requests, duration, refusals, in_flight, held)

    def _key_requests(self) -> Iterator[Metric]:
        family = CounterMetricFamily("berth_api_key_requests", "Responses to requests that carried a valid API "
                                     "key, by key name and status class (refusals of that key included)",
                                     labels=["api_name", "key", "code_class"])
        for target, name, code_class, count in self.sources.key_requests():
            family.add_metric([target, name, code_class], count)
        if family.samples:  # an instance without keys exposes no such family
            yield family

    # --- control plane --------------------------------------------------------------------------
    def _replicas(self, apis: list[str]) -> Iterator[Metric]:
        replicas = GaugeMetricFamily("berth_replicas", "Replicas by state; desired: what the API asks for now",
                                     labels=["api_name", "state"])
        restarts = CounterMetricFamily("berth_replica_restarts", "Replica failures followed by a restart, since "
                                       "the daemon started", labels=["api_name"])
        ooms = CounterMetricFamily("berth_replica_oom_kills", "Replicas killed for exceeding their memory, since "
                                   "the daemon started", labels=["api_name"])
        fleet = self.sources.fleet
        for api in apis:
            counts = dict.fromkeys(STATES, 0)
            counts["desired"] = fleet.apis[api].desired
            for replica in fleet.replicas_of(api):
                counts[_state(replica.state)] += 1
            for state in STATES:
                replicas.add_metric([api, state], counts[state])
            aggregate = self.sources.collector.apis.get(api)
            restarts.add_metric([api], aggregate.restarts if aggregate else 0)
            ooms.add_metric([api], aggregate.oom_kills if aggregate else 0)
        yield from (replicas, restarts, ooms)

    def _autoscaler(self, apis: list[str]) -> Iterator[Metric]:
        families = [(GaugeMetricFamily(name, doc, labels=["api_name"]), key) for name, key, doc in AUTOSCALER]
        for api in apis:
            decision = self.sources.decision(api)
            if not decision:
                continue  # no tick yet: no sample rather than a made-up zero
            for family, key in families:
                value = decision.get(key)
                if isinstance(value, (int, float)):
                    family.add_metric([api], value)
        yield from (family for family, _ in families)

    # --- replica side ---------------------------------------------------------------------------
    def _replica_side(self, apis: list[str]) -> Iterator[Metric]:
        labels = ["api_name", "version"]
        predict = HistogramMetricFamily("berth_predict_duration_seconds", "Time the predictor call took, in the "
                                        "replica", labels=labels)
        size = HistogramMetricFamily("berth_batch_size", "Requests per predictor call (server-side batching)",
                                     labels=labels)
        wait = HistogramMetricFamily("berth_batch_wait_seconds", "Time a request waited for its batch to fill",
                                     labels=labels)
        init = GaugeMetricFamily("berth_predictor_init_seconds", "Seconds the predictor's __init__ took (the "
                                 "slowest process of the replica)", labels=["api_name", "version", "replica"])
        for api in apis:
            aggregate = self.sources.collector.apis.get(api)
            if aggregate is None:
                continue
            for version, values in sorted(aggregate.versions.items()):
                _add_histogram(predict, [api, version], values.predict)
                _add_histogram(size, [api, version], values.batch_size)
                _add_histogram(wait, [api, version], values.batch_wait)
            for (version, replica), seconds in sorted(aggregate.init_seconds.items()):
                init.add_metric([api, version, replica], seconds)
        yield from (predict, size, wait, init)

    def _usage(self) -> Iterator[Metric]:
        cpu = CounterMetricFamily("berth_replica_cpu_seconds", "CPU seconds (user + system) of the replica's "
                                  "processes", labels=["api_name", "replica"])
        rss = GaugeMetricFamily("berth_replica_resident_memory_bytes", "Resident memory of the replica's "
                                "processes", labels=["api_name", "replica"])
        for replica_id, usage in sorted(self.sources.collector.usage.items()):
            cpu.add_metric([usage.api, replica_id], usage.cpu_seconds)
            rss.add_metric([usage.api, replica_id], usage.rss)
        utilization = GaugeMetricFamily("berth_gpu_utilization_ratio", "GPU busy time over NVML's last sample "
                                        "period (0..1)", labels=["gpu"])
        used = GaugeMetricFamily("berth_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("berth_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        for gpu in self.sources.collector.gpus:
            utilization.add_metric([str(gpu.index)], gpu.utilization)
            used.add_metric([str(gpu.index)], gpu.memory_used)
            total.add_metric([str(gpu.index)], gpu.memory_total)
        yield from (cpu, rss, utilization, used, total)

    def _predictions(self, apis: list[str]) -> Iterator[Metric]:
        classes = CounterMetricFamily("berth_predictions", "Predictions per predicted class (monitoring: "
                                      "classification)", labels=["api_name", "class"])
        values = HistogramMetricFamily("berth_prediction_value", "Predicted values (monitoring: regression)",
                                       labels=["api_name"])
        low = GaugeMetricFamily("berth_prediction_value_min", "Smallest predicted value", labels=["api_name"])
        high = GaugeMetricFamily("berth_prediction_value_max", "Largest predicted value", labels=["api_name"])
        wrong = CounterMetricFamily("berth_prediction_wrong_type", "Responses that were not of the monitored "
                                    "type", labels=["api_name"])
        psi = GaugeMetricFamily("berth_prediction_drift_psi", "Population stability index of the last hour's "
                                "predictions against the reference window", labels=["api_name"])
        for api in apis:
            aggregate = self.sources.collector.apis.get(api)
            if aggregate is not None and aggregate.predictions.model_type is not None:
                seen = aggregate.predictions
                for label, count in sorted(seen.classes.items()):
                    classes.add_metric([api, label], count)
                _add_histogram(values, [api], seen.values)
                if seen.min is not None and seen.max is not None:
                    low.add_metric([api], seen.min)
                    high.add_metric([api], seen.max)
                wrong.add_metric([api], seen.wrong_type)
            drift = self.sources.drift(api)
            if drift is not None:
                psi.add_metric([api], drift)
        yield from (classes, values, low, high, wrong, psi)


def _codes(codes: Mapping[str, int], stats: Any) -> Iterable[tuple[str, int]]:
    """Per status code; before the gateway counted codes, per class only (code left empty)."""
    if codes:
        return sorted(codes.items())
    return [(cls, count) for cls, count in (("2XX", stats.code_2xx), ("4XX", stats.code_4xx),
                                            ("5XX", stats.code_5xx)) if count]


def _code_class(code: str) -> str:
    return f"{code[0]}XX" if code[:1].isdigit() else code


def _state(state: ReplicaState) -> str:
    return "failed" if state in FAILED_STATES else str(state)


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram | None) -> None:
    if histogram is None:
        return
    buckets = [(_le(bound), float(count)) for bound, count in histogram.cumulative()]
    family.add_metric(labels, buckets, histogram.sum)


_le = cast(Callable[[float], str], floatToGoString)  # Prometheus' own spelling of a bound (+Inf, 1e+06)


def render(collector: Collector, accept: str | None) -> tuple[bytes, str]:
    """The exposition and its content type: OpenMetrics when `Accept` asks for it, else Prometheus text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
