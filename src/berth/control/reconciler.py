"""The reconcile loop: compares each API's desired replicas with the processes it has, and acts.

The loop only composes its parts, each one concern in its own module:

    tick ─┬─ health      exits, readiness probes, the readiness deadline, memory limits
          ├─ rollout     each API to its plan (rolling update, scale, delete, rollback), via starting
          ├─ starting    placement on the machine, the process environment, spawn
          ├─ routing     each API's targets = its ready replicas' sockets, pushed to the gateways
          └─ draining    stop requested → drained → SIGTERM → SIGKILL
    load ── adoption     the replicas a killed daemon left running
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from berth.config.schema import RealtimeAPI
from berth.control.adoption import Adoption
from berth.control.apis import DeployedAPI
from berth.control.draining import Draining
from berth.control.fleet import Fleet, Timeouts
from berth.control.health import Health
from berth.control.paths import Paths
from berth.control.replica import Replica
from berth.control.rollout import Rollout
from berth.control.routing import streams_body
from berth.control.starting import Starter
from berth.control.store import Store
from berth.control.supervisor import Supervisor
from berth.core.lifecycle import Phase
from berth.core.placement import Capacity
from berth.gateway.routes import Target

if TYPE_CHECKING:
    from berth.control.gateways import GatewayLinks
    from berth.control.routing import Routing

__all__ = ["Reconciler", "Timeouts"]

log = logging.getLogger("berth.control")

FAST_TICK = 0.05  # while a replica initialises, so readiness is seen within 50 ms
SLOW_TICK = 0.5


class Reconciler:
    def __init__(self, store: Store, supervisor: Supervisor, routing: Routing, gateways: GatewayLinks,
                 paths: Paths, env: Mapping[str, str], capacity: Capacity, clock: Callable[[], float] = time.time,
                 timeouts: Timeouts | None = None) -> None:
        self.store = store
        self.supervisor = supervisor
        self.routing = routing
        self.gateways = gateways
        self.paths = paths
        self.clock = clock
        self.timeouts = timeouts or Timeouts()
        self.fleet = Fleet()
        self.draining = Draining(self.fleet, supervisor, store, routing, gateways, self.timeouts)
        self.health = Health(self.fleet, supervisor, store, routing, gateways, self.timeouts, clock,
                             forget=self.draining.forget)
        self.starter = Starter(self.fleet, supervisor, store, paths, env, capacity, failed=self.health.failed)
        self.rollout = Rollout(self.fleet, store, paths, routing, self.starter, self.draining)
        self.adoption = Adoption(self.fleet, store, paths, routing, clock)
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()

    # --- what the management API reads (FleetView) ----------------------------------------------
    @property
    def apis(self) -> dict[str, DeployedAPI]:
        return self.fleet.apis

    @property
    def replicas(self) -> dict[str, Replica]:
        return self.fleet.replicas

    def replicas_of(self, name: str) -> list[Replica]:
        return self.fleet.replicas_of(name)

    # --- desired state ------------------------------------------------------------------------
    def load(self) -> None:
        """Restore APIs from the store and adopt the replica processes that outlived the last daemon."""
        for record in self.store.list_apis():
            spec = RealtimeAPI.model_validate(record.spec)
            self.put(DeployedAPI(record, spec, self.paths.snapshots / record.snapshot))
        self.adoption.adopt_leftovers()

    def put(self, api: DeployedAPI) -> None:
        previous = self.apis.get(api.name)
        if previous is not None:
            api.versions = {**previous.versions, **api.versions}
        self.apis[api.name] = api
        scaling = api.spec.autoscaling
        # APIs that may scale to zero hold requests while a replica starts; others answer 503 at once.
        self.routing.configure(api.name, api.spec.endpoint, scaling.max_replica_concurrency,
                               holds=scaling.min_replicas == 0, hold_limit=scaling.scale_from_zero_queue,
                               hold_timeout=scaling.scale_from_zero_timeout,
                               timeout=api.spec.networking.timeout,
                               request_log_sample_rate=api.spec.networking.request_log_sample_rate,
                               stream_body=streams_body(api.spec, api.project))
        self.routing.require_keys(api.name, api.spec.networking.api_keys == "required")
        self.wake()

    def remove(self, name: str) -> None:
        api = self.apis.get(name)
        if api is not None:
            api.deleting = True
            self.wake()

    def set_requested(self, name: str, requested: int, why: str) -> None:
        api = self.apis.get(name)
        if api is None or api.requested == requested:
            return
        self.store.set_requested(name, requested)
        self.store.add_event(name, "scale", f"replicas {api.requested} -> {requested} ({why})", self.clock())
        api.record = dataclasses.replace(api.record, requested=requested)
        self.wake()

    def verify(self, name: str) -> None:
        """`deploy --wait` of an API at zero replicas: one replica proves the version starts; the
        autoscaler scales it back to zero as usual once the proof is in."""
        api = self.apis.get(name)
        if api is None or api.deleting or api.requested > 0:
            return  # a replica of the version starts anyway: `--wait` sees it fail or become ready
        api.verifying = api.record.version
        self.set_requested(name, 1, "deploy --wait: one replica proves the version starts")
        self.wake()

    def deletion(self, name: str) -> tuple[int, int] | None:
        """An API being deleted: its replicas still running, and the requests they still finish."""
        api = self.apis.get(name)
        if api is None or not api.deleting:
            return None
        replicas = self.replicas_of(name)
        held = sum(self.gateways.in_flight_of(r.id, since=self.routing.left_at.get(r.id, 0)) or 0
                   for r in replicas)
        return len(replicas), held

    @property
    def capacity(self) -> Capacity:
        return self.starter.capacity

    def wake_from_zero(self, name: str) -> None:
        """A gateway holds a request for an API scaled to zero: start a replica now."""
        api = self.apis.get(name)
        if api is not None and api.requested == 0 and not api.deleting:
            self.set_requested(name, 1, "a request arrived while scaled to zero")

    def wake(self) -> None:
        self._wake.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
        return predicate()

    # --- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # one bad tick must not end supervision of every API
                log.exception("reconcile tick failed")
            busy = any(r.phase is Phase.INITIALIZING for r in self.replicas.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_TICK if busy else SLOW_TICK)
            self._wake.clear()

    async def tick(self) -> None:
        now = self.clock()
        await self.health.check(now)
        for api in list(self.apis.values()):
            self.rollout.apply(api, now)
        self.starter.place_pending(now)
        self._sync_routes()
        self.routing.established = True
        self.gateways.push()
        self.draining.progress(now)
        async with self._changed:
            self._changed.notify_all()

    def _sync_routes(self) -> None:
        for name in self.apis:
            self.routing.set_targets(name, (Target(r.id, sock) for r in self.replicas_of(name)
                                            if r.phase is Phase.READY for sock in r.sockets))

    async def shutdown(self, timeout: float) -> None:
        """Drain and stop every replica (the APIs stay in the store for the next start)."""
        now = self.clock()
        for replica in list(self.replicas.values()):
            self.draining.request_stop(replica, now)
        for name in list(self.routing.entries):
            self.routing.set_targets(name, ())
        self.gateways.push()
        deadline = time.monotonic() + timeout
        while self.replicas and time.monotonic() < deadline:
            now = self.clock()
            self.health.reap(now)
            self.draining.progress(now)
            await asyncio.sleep(0.05)
        for replica in list(self.replicas.values()):
            self.supervisor.kill(replica)
            if replica.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.popen.wait(timeout=5)
            self.draining.forget(replica)
