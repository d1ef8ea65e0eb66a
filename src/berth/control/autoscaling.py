"""The autoscaling loop: samples in-flight requests every second, decides every 10 s per API."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from berth.control.gateways import GatewayLinks
from berth.control.reconciler import Reconciler
from berth.control.store import Store
from berth.core.autoscaler import TICK_SECONDS, Decision, Recommendation, decide

log = logging.getLogger("berth.autoscaler")

SAMPLE_SECONDS = 1.0
MAX_WINDOW_SAMPLES = 3600  # an hour of 1 s samples bounds memory whatever the window


class AutoscalingLoop:
    """Where the requests are (the gateway) is where they are counted, queued and active alike."""

    def __init__(self, store: Store, reconciler: Reconciler, gateways: GatewayLinks,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.reconciler = reconciler
        self.gateways = gateways
        self.clock = clock
        self.samples: dict[str, deque[tuple[float, float]]] = {}

    async def run(self) -> None:
        next_decision = self._next_boundary(self.clock())
        while True:
            now = self.clock()
            self.sample(now)
            if now >= next_decision:
                self.decide_all(now)
                next_decision = self._next_boundary(now)
            await asyncio.sleep(max(0.0, SAMPLE_SECONDS - (self.clock() - now)))

    @staticmethod
    def _next_boundary(now: float) -> float:
        return (now // TICK_SECONDS + 1) * TICK_SECONDS  # aligned to 10 s, as Cortex's monitor was

    def sample(self, now: float) -> None:
        loads = self.gateways.loads()
        if loads is None:
            return  # no gateway worker has reported (they are restarting): no sample rather than a zero
        for name in self.reconciler.apis:
            self.samples.setdefault(name, deque(maxlen=MAX_WINDOW_SAMPLES)).append((now, float(loads.get(name, 0))))
        for name in list(self.samples):
            if name not in self.reconciler.apis:
                del self.samples[name]

    def decide_all(self, now: float) -> None:
        for api in list(self.reconciler.apis.values()):
            if api.deleting:
                continue
            try:
                self.decide(api.name, now)
            except Exception:  # one API's bad tick must not stop the others'
                log.exception("autoscaling %s failed", api.name)

    def decide(self, name: str, now: float) -> Decision | None:
        api = self.reconciler.apis[name]
        history = [Recommendation(at, n) for at, n in self.store.recommendations(name)]
        decision, kept = decide(list(self.samples.get(name, ())), history, api.requested, api.spec.autoscaling,
                                now, api.record.created_at)
        if decision is None:
            return None  # no samples yet: Cortex's "metrics not available yet"
        self.store.record_tick(name, [(r.at, r.replicas) for r in kept], decision.as_dict())
        changes = decision.request != api.requested
        # Every tick of every API at info level drowned the daemon's log: only a change is news.
        log.log(logging.INFO if changes else logging.DEBUG, "%s: replicas %d -> %d: %s", name, api.requested,
                decision.request, " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in decision.as_dict().items() if k != "at"))
        if changes:
            self.reconciler.set_requested(
                name, decision.request, f"autoscaler: {decision.avg_in_flight:.3g} in flight on average")
        return decision
