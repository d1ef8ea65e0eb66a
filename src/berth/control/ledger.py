"""Request statistics that outlive both the gateway and the daemon.

Gateway workers count requests in plain cumulative counters that start from zero with each worker
process (its incarnation). The ledger turns the counters it pulls into deltas against the last ones it
saw from that incarnation and adds them to per-API totals; totals and the counters seen are saved in
one transaction, so a daemon killed at any point neither loses nor counts twice what it had saved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from berth.control.store import Store
from berth.observability.stats import APIStats

FIELDS = tuple(f.name for f in dataclasses.fields(APIStats))
Counters = dict[str, float]


class RequestLedger:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.totals: dict[str, APIStats] = {}
        self.seen: dict[int, tuple[str, dict[str, Counters]]] = {}  # worker -> (incarnation, counters per API)
        self._dirty = False

    def load(self) -> None:
        totals, seen = self.store.request_stats()
        self.totals = {api: _stats(counters) for api, counters in totals.items()}
        self.seen = seen

    def observe(self, worker: int, incarnation: str, apis: dict[str, Counters]) -> None:
        seen_incarnation, previous = self.seen.get(worker, ("", {}))
        if seen_incarnation != incarnation:
            previous = {}  # a new gateway process: its counters started from zero
        for api, counters in apis.items():
            before = previous.get(api, {})
            delta = {name: counters.get(name, 0) - before.get(name, 0) for name in FIELDS}
            if any(value < 0 for value in delta.values()):
                delta = {name: counters.get(name, 0) for name in FIELDS}  # the route was re-created
            if any(delta.values()):
                total = self.totals.setdefault(api, APIStats())
                for name, value in delta.items():
                    setattr(total, name, getattr(total, name) + value)
                self._dirty = True
        if seen_incarnation != incarnation or previous != apis:
            self.seen[worker] = (incarnation, apis)
            self._dirty = True

    def stats(self, api: str) -> APIStats:
        return self.totals.get(api, APIStats())

    def flush(self, apis: Iterable[str]) -> None:
        """Save to the store; totals of APIs that no longer exist are dropped."""
        known = set(apis)
        for gone in [api for api in self.totals if api not in known]:
            del self.totals[gone]
            self._dirty = True
        if not self._dirty:
            return
        self.store.save_request_stats({api: dataclasses.asdict(s) for api, s in self.totals.items()}, self.seen)
        self._dirty = False


def _stats(counters: dict[str, Any]) -> APIStats:
    return APIStats(**{name: counters[name] for name in FIELDS if name in counters})
