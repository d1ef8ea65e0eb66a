"""Bringing each API to its plan: the rolling update, scale changes, deletion, and rollback."""

from __future__ import annotations

import dataclasses
import logging

from berth.control.apis import DeployedAPI, load_version
from berth.control.draining import Draining
from berth.control.fleet import Fleet
from berth.control.paths import Paths
from berth.control.replica import Replica
from berth.control.routing import Routing
from berth.control.starting import Starter
from berth.control.store import Store
from berth.core.reconcile import plan_replicas, resolve_strategy
from berth.core.status import ReplicaState

log = logging.getLogger("berth.control")

ROLLBACK_AFTER_FAILURES = 3  # consecutive failed starts of a new version while an old one serves


class Rollout:
    def __init__(self, fleet: Fleet, store: Store, paths: Paths, routing: Routing, starter: Starter,
                 draining: Draining) -> None:
        self.fleet = fleet
        self.store = store
        self.paths = paths
        self.routing = routing
        self.starter = starter
        self.draining = draining

    def apply(self, api: DeployedAPI, now: float) -> None:
        replicas = self.fleet.replicas_of(api.name)
        if api.deleting:
            self._delete(api, replicas, now)
            return
        self._check_rollback(api, replicas, now)
        target, desired = api.target, api.requested
        strategy = resolve_strategy(api.spec.update_strategy.max_surge, api.spec.update_strategy.max_unavailable,
                                    desired)
        plan = plan_replicas(target.id, desired, [r.facts() for r in replicas], strategy, now)
        for replica_id in plan.stop:
            self.draining.request_stop(self.fleet.replicas[replica_id], now)
        for replica_id in plan.restart:
            replica = self.fleet.replicas[replica_id]
            replica.restarts += 1
            self.starter.start(api.versions[replica.version], replica, now)
        for _ in range(plan.create):
            self.starter.start(target, self.starter.new_replica(api.name, target, now), now)

    def _delete(self, api: DeployedAPI, replicas: list[Replica], now: float) -> None:
        for replica in replicas:
            self.draining.request_stop(replica, now)
        if not self.fleet.replicas_of(api.name):
            del self.fleet.apis[api.name]
            self.routing.remove(api.name)

    def _check_rollback(self, api: DeployedAPI, replicas: list[Replica], now: float) -> None:
        """A new version that keeps failing while an older one serves is rolled back."""
        if api.fallback is not None:
            return
        latest = api.record.version
        serving = [r for r in replicas if r.version != latest and r.state is ReplicaState.READY]
        failing = [r for r in replicas if r.version == latest and r.ready_at is None
                   and r.failures >= ROLLBACK_AFTER_FAILURES]
        if not serving or not failing:
            return
        previous = serving[-1].version
        reason = failing[0].last_error or "it never became ready"
        message = f"rollout of version {latest} failed ({reason}); version {previous} keeps serving"
        self.store.set_rollout_failure(api.name, latest, message)
        api.record = dataclasses.replace(api.record, failed_version=latest, failed_reason=message)
        api.fallback = api.versions.get(previous) or load_version(self.store, self.paths.snapshots, api.name,
                                                                  previous)
        self.store.add_event(api.name, "rollback", message, now)
        log.warning("%s: %s", api.name, message)
