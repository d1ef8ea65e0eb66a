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
from berth.core.reconcile import Plan, in_place_strategy, plan_replicas, resolve_strategy
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
        self._end_verification(api, replicas)
        plan = self._plan(api, replicas, now)
        self._carry_out(api, plan, now)
        if plan.create:
            # A replica just created may have found no room: plan again now, so the old replicas
            # that make room for it start draining in this tick, not the next.
            plan = self._plan(api, self.fleet.replicas_of(api.name), now)
            self._carry_out(api, plan, now)

    def _plan(self, api: DeployedAPI, replicas: list[Replica], now: float) -> Plan:
        strategy = resolve_strategy(api.spec.update_strategy.max_surge, api.spec.update_strategy.max_unavailable,
                                    api.desired)
        plan = plan_replicas(api.target.id, api.desired, [r.facts() for r in replicas], strategy, now)
        if plan.in_place and api.in_place_noted != api.target.id:
            api.in_place_noted = api.target.id
            api.in_place_from = next((r.version for r in replicas if r.id in plan.stop
                                      and r.version != api.target.id), None)
            blocked = next((r for r in replicas if r.version == api.target.id and r.pending_reason), None)
            why = f" (replica {blocked.id} {blocked.pending_reason})" if blocked else ""
            unavailable = in_place_strategy(strategy).max_unavailable
            self.store.add_event(api.name, "rollout",
                                 f"no room on this machine for a surge replica of version {api.target.id}{why}: "
                                 f"replacing replicas in place, {unavailable} at a time", now)
        return plan

    def _carry_out(self, api: DeployedAPI, plan: Plan, now: float) -> None:
        target = api.target
        for replica_id in plan.stop:
            self.draining.request_stop(self.fleet.replicas[replica_id], now)
        for replica_id in plan.restart:
            replica = self.fleet.replicas[replica_id]
            replica.restarts += 1
            self.starter.start(api.versions[replica.version], replica, now)
        for _ in range(plan.create):
            self.starter.start(target, self.starter.new_replica(api.name, target, now), now)

    @staticmethod
    def _end_verification(api: DeployedAPI, replicas: list[Replica]) -> None:
        """`deploy --wait` asked for proof that the version starts: one ready replica is that proof."""
        if api.verifying is not None and any(r.version == api.verifying and r.state is ReplicaState.READY
                                             for r in replicas):
            api.verifying = None

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
        # Replaced in place on a full machine, the old version no longer serves: it comes back.
        replaced = api.in_place_from if api.in_place_noted == latest else None
        if not failing or not (serving or replaced):
            return
        previous = serving[-1].version if serving else str(replaced)
        reason = failing[0].last_error or "it never became ready"
        message = (f"rollout of version {latest} failed ({reason}); version {previous} "
                   f"{'keeps serving' if serving else 'is started again'}")
        self.store.set_rollout_failure(api.name, latest, message)
        api.record = dataclasses.replace(api.record, failed_version=latest, failed_reason=message)
        api.fallback = api.versions.get(previous) or load_version(self.store, self.paths.snapshots, api.name,
                                                                  previous)
        self.store.add_event(api.name, "rollback", message, now)
        log.warning("%s: %s", api.name, message)
