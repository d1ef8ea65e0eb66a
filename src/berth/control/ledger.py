"""Request statistics that outlive both the gateway and the daemon.

Gateway workers count requests in plain cumulative counters that start from zero with each worker
process (its incarnation). The ledger turns the counters it pulls into deltas against the last ones it
saw from that incarnation and adds them to per-API totals; totals and the counters seen are saved in
one transaction, so a daemon killed at any point neither loses nor counts twice what it had saved.

Besides the flat counters (`APIStats`' numbers), a worker reports nested ones: responses per status
code, refusals per reason, and a latency histogram. They get the same treatment: a delta per
incarnation, added into totals that are saved with the flat ones. Every delta also goes to the
request history (`RequestSink`, the history recorder), minute by minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from berth.control.store import Store
from berth.observability.histogram import LATENCY_BOUNDS, Histogram
from berth.observability.stats import APIStats

# The flat numeric counters; whatever else APIStats gains is read by name below, not summed blindly.
FIELDS = ("code_2xx", "code_4xx", "code_5xx", "latency_sum", "latency_count")
Counters = dict[str, Any]


class RequestSink(Protocol):
    """Where request deltas go besides the totals: the history recorder (control/history.py)."""

    def add_requests(self, api: str, counters_delta: dict[str, Any], latency: Histogram | None) -> None: ...


@dataclass
class Totals:
    """Everything counted for one API since it was deployed, across gateway and daemon restarts."""

    stats: APIStats = field(default_factory=APIStats)
    codes: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=lambda: Histogram.empty(LATENCY_BOUNDS))

    def add(self, delta: Delta) -> None:
        for name, value in delta.flat.items():
            setattr(self.stats, name, getattr(self.stats, name) + value)
        _add_into(self.codes, delta.codes)
        _add_into(self.refusals, delta.refusals)
        if delta.latency is not None and delta.latency.count:
            if delta.latency.bounds != self.latency.bounds:  # bounds changed with an upgrade: start over
                self.latency = Histogram.empty(delta.latency.bounds)
            self.latency.merge(delta.latency)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self.stats, name) for name in FIELDS}
        return {**data, "codes": self.codes, "refusals": self.refusals, "latency": self.latency.as_json()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Totals:
        totals = cls(APIStats(**{name: data[name] for name in FIELDS if name in data}),
                     {str(k): int(v) for k, v in (data.get("codes") or {}).items()},
                     {str(k): int(v) for k, v in (data.get("refusals") or {}).items()})
        if data.get("latency"):
            totals.latency = Histogram.from_json(data["latency"])
        return totals


@dataclass
class Delta:
    flat: dict[str, float]
    codes: dict[str, int]
    refusals: dict[str, int]
    latency: Histogram | None

    def __bool__(self) -> bool:
        return (any(self.flat.values()) or any(self.codes.values()) or any(self.refusals.values())
                or bool(self.latency and self.latency.count))

    def history_counters(self) -> dict[str, Any]:
        """The keys the history recorder takes (today's `berth get` metrics)."""
        return {"2XX": self.flat["code_2xx"], "4XX": self.flat["code_4xx"], "5XX": self.flat["code_5xx"],
                "requests": self.flat["latency_count"], "seconds": self.flat["latency_sum"]}


def delta(now: Mapping[str, Any], before: Mapping[str, Any]) -> Delta:
    """What a worker counted between two readings of its cumulative counters for one API. A counter that
    went backwards means the route was re-created (its counters restarted): all of `now` is new."""
    flat = {name: now.get(name, 0) - before.get(name, 0) for name in FIELDS}
    codes, refusals = _dict_delta(now.get("codes"), before.get("codes")), \
        _dict_delta(now.get("refusals"), before.get("refusals"))
    latency = _histogram(now.get("latency"))
    earlier = _histogram(before.get("latency"))
    reset = (any(value < 0 for value in flat.values()) or codes is None or refusals is None
             or (latency is not None and earlier is not None and earlier.count > latency.count))
    if reset:
        return delta(now, {})
    return Delta(flat, codes or {}, refusals or {}, latency.since(earlier) if latency is not None else None)


def _dict_delta(now: Mapping[str, Any] | None, before: Mapping[str, Any] | None) -> dict[str, int] | None:
    """Per-key differences; None when any key went backwards."""
    now, before = now or {}, before or {}
    out = {str(key): int(value) - int(before.get(key, 0)) for key, value in now.items()}
    if any(value < 0 for value in out.values()) or any(key not in now for key in before):
        return None
    return {key: value for key, value in out.items() if value}


def _add_into(target: dict[str, int], values: Mapping[str, int]) -> None:
    for key, value in values.items():
        target[key] = target.get(key, 0) + value


def _histogram(data: Mapping[str, Any] | None) -> Histogram | None:
    if not data:
        return None
    try:
        return Histogram.from_json(dict(data))
    except (KeyError, TypeError, ValueError):
        return None


class RequestLedger:
    def __init__(self, store: Store, sink: RequestSink | None = None) -> None:
        self.store = store
        self.sink = sink
        self.totals: dict[str, Totals] = {}
        self.seen: dict[int, tuple[str, dict[str, Counters]]] = {}  # worker -> (incarnation, counters per API)
        self._dirty = False

    def load(self) -> None:
        totals, seen = self.store.request_stats()
        self.totals = {api: Totals.from_json(counters) for api, counters in totals.items()}
        self.seen = seen

    def observe(self, worker: int, incarnation: str, apis: dict[str, Counters]) -> None:
        seen_incarnation, previous = self.seen.get(worker, ("", {}))
        if seen_incarnation != incarnation:
            previous = {}  # a new gateway process: its counters started from zero
        for api, counters in apis.items():
            change = delta(counters, previous.get(api, {}))
            if change:
                self.totals.setdefault(api, Totals()).add(change)
                self._dirty = True
                if self.sink is not None:
                    self.sink.add_requests(api, change.history_counters(), change.latency)
        if seen_incarnation != incarnation or previous != apis:
            self.seen[worker] = (incarnation, apis)
            self._dirty = True

    def stats(self, api: str) -> APIStats:
        totals = self.totals.get(api)
        return totals.stats if totals is not None else APIStats()

    def totals_of(self, api: str) -> Totals:
        return self.totals.get(api) or Totals()

    def flush(self, apis: Iterable[str]) -> None:
        """Save to the store; totals of APIs that no longer exist are dropped."""
        known = set(apis)
        for gone in [api for api in self.totals if api not in known]:
            del self.totals[gone]
            self._dirty = True
        if not self._dirty:
            return
        self.store.save_request_stats({api: t.as_json() for api, t in self.totals.items()}, self.seen)
        self._dirty = False
