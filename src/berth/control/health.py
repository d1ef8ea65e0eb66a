"""Replica health: exits, readiness, the readiness deadline and memory limits, and failures recorded once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from berth.control.fleet import Fleet, Timeouts
from berth.control.gateways import GatewayLinks
from berth.control.replica import Replica
from berth.control.routing import Routing
from berth.control.store import Store
from berth.control.supervisor import Supervisor, describe_exit, exit_event
from berth.core.lifecycle import Event, Phase

log = logging.getLogger("berth.control")

MEMORY_CHECK_INTERVAL = 1.0


class Health:
    def __init__(self, fleet: Fleet, supervisor: Supervisor, store: Store, routing: Routing, gateways: GatewayLinks,
                 timeouts: Timeouts, clock: Callable[[], float], forget: Callable[[Replica], None]) -> None:
        self.fleet = fleet
        self.supervisor = supervisor
        self.store = store
        self.routing = routing
        self.gateways = gateways
        self.timeouts = timeouts
        self.clock = clock
        self.forget = forget  # a stopped replica's exit ends it: Draining.forget
        # Told of every failure recorded here: the metrics collector counts restarts and OOM kills.
        self.on_failure: Callable[[Replica, Event], None] = lambda replica, event: None
        self._memory_checked = 0.0

    async def check(self, now: float) -> None:
        self.reap(now)
        await self.probe()
        self.check_deadlines(now)
        if now - self._memory_checked >= MEMORY_CHECK_INTERVAL:
            self._memory_checked = now
            self.enforce_memory(now)

    def reap(self, now: float) -> None:
        """Processes that exited: a stopped replica is done; any other has failed (once)."""
        for replica in list(self.fleet.replicas.values()):
            if replica.gone:
                continue
            code = self.supervisor.poll_exit(replica)
            if code is None:
                continue
            replica.gone = True
            self.supervisor.kill_group(replica)
            if replica.phase in (Phase.DRAINING, Phase.STOPPING):
                self.forget(replica)
                continue
            failure = self.supervisor.read_failure(replica)
            message = failure[0] if failure else describe_exit(code)
            self.failed(replica, exit_event(code), now, message, failure[1] if failure else None)

    def failed(self, replica: Replica, event: Event, now: float, message: str, traceback: str | None = None) -> None:
        """The one place a failure is recorded: the transition, its event, and held requests told."""
        delay = replica.failed(event, now, message, traceback)
        self.on_failure(replica, event)
        self.store.add_event(replica.api, "replica_failed",
                             f"replica {replica.id}: {message}; restarting in {delay:g}s", now)
        if replica.api in self.routing.entries and not self.routing.targets(replica.api):
            self.gateways.fail_waiting(replica.api, message)
        log.warning("replica %s of %s: %s", replica.id, replica.api, message)

    def kill_and_fail(self, replica: Replica, event: Event, now: float, message: str) -> None:
        """We end it (missed deadline, out of memory): SIGKILL, and its exit is not counted again."""
        self.supervisor.kill(replica)
        replica.gone = True
        self.failed(replica, event, now, message)

    async def probe(self) -> None:
        starting = [r for r in self.fleet.replicas.values() if r.phase is Phase.INITIALIZING and not r.gone]
        if not starting:
            return
        results = await asyncio.gather(*(self.supervisor.probe_ready(r) for r in starting))
        for replica, ready in zip(starting, results, strict=True):
            if ready and replica.phase is Phase.INITIALIZING:
                now = self.clock()
                took = replica.became_ready(now)
                self.store.add_event(replica.api, "replica_ready", f"replica {replica.id} ready in {took:.2f}s", now)

    def check_deadlines(self, now: float) -> None:
        limit = self.timeouts.readiness
        for replica in list(self.fleet.replicas.values()):
            if replica.phase is Phase.INITIALIZING and not replica.gone and now - replica.started_at > limit:
                self.kill_and_fail(replica, Event.MISSED_DEADLINE, now, f"not ready within {limit:g}s")

    def enforce_memory(self, now: float) -> None:
        for replica in list(self.fleet.replicas.values()):
            if replica.gone or replica.phase not in (Phase.INITIALIZING, Phase.READY):
                continue
            replica.rss = self.supervisor.measure_rss(replica)
            api = self.fleet.apis.get(replica.api)
            version = api.versions.get(replica.version) if api else None
            limit = version.spec.compute.mem if version else None
            if limit and replica.rss > limit:
                self.kill_and_fail(replica, Event.OUT_OF_MEMORY, now,
                                   f"out of memory: {replica.rss / 2**20:.0f} MiB resident, "
                                   f"limit {limit / 2**20:.0f} MiB (compute.mem)")
