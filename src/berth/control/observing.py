"""The daemon's observing duties in one place: history sampling, failure counting, metric sources.

The pieces they read belong to others (the fleet to the reconciler, counters to the ledger and the
collector); this module only wires them to the history recorder and to the metrics collector.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from berth.control import history
from berth.control.collector import ReplicaCollector
from berth.control.gateways import GatewayLinks
from berth.control.history import HistoryRecorder
from berth.control.metrics import MetricsSources
from berth.control.reconciler import Reconciler
from berth.control.store import Store
from berth.core.status import ReplicaState

log = logging.getLogger("berth.control")

HISTORY_SAMPLE_SECONDS = 1.0
HISTORY_FLUSH_SECONDS = 5.0
DRIFT_CACHE_SECONDS = 30.0  # drift reads two windows of history: not on every scrape


class Observing:
    def __init__(self, reconciler: Reconciler, gateways: GatewayLinks, store: Store, collector: ReplicaCollector,
                 recorder: HistoryRecorder, clock: Callable[[], float] = time.time) -> None:
        self.reconciler = reconciler
        self.gateways = gateways
        self.store = store
        self.collector = collector
        self.recorder = recorder
        self.clock = clock
        self._drift: dict[str, tuple[float, float | None]] = {}

    def sources(self) -> MetricsSources:
        return MetricsSources(fleet=self.reconciler, ledger=self.gateways.ledger, collector=self.collector,
                              loads=self.loads, decision=self.decision, drift=self.drift)

    def loads(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        return self.gateways.loads() or {}, self.gateways.held()

    def decision(self, api: str) -> Mapping[str, Any] | None:
        decisions = self.store.decisions(api, limit=1)
        return decisions[-1] if decisions else None

    def drift(self, api: str) -> float | None:
        now = self.clock()
        cached = self._drift.get(api)
        if cached is not None and now - cached[0] < DRIFT_CACHE_SECONDS:
            return cached[1]
        value: float | None = None
        spec = self.reconciler.apis[api].spec if api in self.reconciler.apis else None
        if spec is not None and spec.monitoring is not None:
            try:
                result = history.drift(self.store, api, now)
            except Exception:  # a metric must not fail the scrape
                log.exception("computing the drift of %s failed", api)
                result = None
            value = float(result["psi"]) if result and result.get("psi") is not None else None
        self._drift[api] = (now, value)
        return value

    async def record_history(self) -> None:
        """Every second a sample of replicas and in-flight requests per API; every 5 s a flush."""
        next_flush = self.clock() + HISTORY_FLUSH_SECONDS
        while True:
            await asyncio.sleep(HISTORY_SAMPLE_SECONDS)
            now = self.clock()
            try:
                self.sample()
                if now >= next_flush:
                    next_flush = now + HISTORY_FLUSH_SECONDS
                    self.flush()
            except Exception:  # a busy database costs history, never the control plane
                log.exception("recording request history failed")

    def flush(self) -> None:
        """History first, then the readings the history now holds the deltas of."""
        self.recorder.flush(self.clock())
        self.collector.save()

    def sample(self) -> None:
        loads = self.gateways.loads() or {}
        for name, api in list(self.reconciler.apis.items()):
            ready = sum(r.state is ReplicaState.READY for r in self.reconciler.replicas_of(name))
            self.recorder.sample(name, ready, api.desired, float(loads.get(name, 0)))
