"""The reconcile loop: compares each API's desired replicas with the processes it has, and acts."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from berth.config.schema import RealtimeAPI
from berth.control.apis import DeployedAPI, Version
from berth.control.paths import Paths
from berth.control.store import ReplicaRecord, Store
from berth.control.supervisor import Replica, Supervisor, describe_exit, exit_state
from berth.core.backoff import failures_after_exit, restart_delay
from berth.core.placement import Capacity, Placement, Request, place
from berth.core.reconcile import plan_replicas, resolve_strategy
from berth.core.status import ReplicaState
from berth.gateway.routes import Target

if TYPE_CHECKING:
    from berth.control.gateways import GatewayLinks
    from berth.control.routing import Routing

log = logging.getLogger("berth.control")

FAST_TICK = 0.05  # while a replica initialises, so readiness is seen within 50 ms
SLOW_TICK = 0.5
MEMORY_CHECK_INTERVAL = 1.0
ROLLBACK_AFTER_FAILURES = 3  # consecutive failed starts of a new version while an old one serves
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class Timeouts:
    drain: float = 30.0  # wait this long for the gateway's in-flight requests before SIGTERM
    stop: float = 30.0  # then this long for the process to finish and exit before SIGKILL
    readiness: float = 600.0  # a replica not ready by then has failed to start


class Reconciler:
    def __init__(self, store: Store, supervisor: Supervisor, routing: Routing, gateways: GatewayLinks,
                 paths: Paths, env: Mapping[str, str], capacity: Capacity, clock: Callable[[], float] = time.time,
                 timeouts: Timeouts | None = None) -> None:
        self.store = store
        self.supervisor = supervisor
        self.routing = routing
        self.gateways = gateways
        self.paths = paths
        self.env = dict(env)
        self.capacity = capacity
        self.clock = clock
        self.timeouts = timeouts or Timeouts()
        self.apis: dict[str, DeployedAPI] = {}
        self.replicas: dict[str, Replica] = {}
        self._memory_checked = 0.0
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()

    # --- desired state ------------------------------------------------------------------------
    def load(self) -> None:
        """Restore APIs from the store and adopt the replica processes that outlived the last daemon."""
        for record in self.store.list_apis():
            spec = RealtimeAPI.model_validate(record.spec)
            api = DeployedAPI(record, spec, self.paths.snapshots / record.snapshot)
            self.put(api)
        for leftover in self.store.list_replicas():
            if not self._adopt(leftover) and not self._adopt_to_stop(leftover):
                self.store.delete_replica(leftover.id)
                shutil.rmtree(leftover.socket_dir, ignore_errors=True)
        for api in self.apis.values():
            if api.record.failed_version == api.record.version:
                self._restore_fallback(api)

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
                               timeout=api.spec.networking.timeout)
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

    def wake_from_zero(self, name: str) -> None:
        """The gateway holds a request for an API scaled to zero: start a replica now."""
        api = self.apis.get(name)
        if api is not None and api.requested == 0 and not api.deleting:
            self.set_requested(name, 1, "a request arrived while scaled to zero")

    def wake(self) -> None:
        self._wake.set()

    def replicas_of(self, name: str) -> list[Replica]:
        return sorted((r for r in self.replicas.values() if r.api == name), key=lambda r: r.created_at)

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
            busy = any(r.state is ReplicaState.INITIALIZING for r in self.replicas.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FAST_TICK if busy else SLOW_TICK)
            self._wake.clear()

    async def tick(self) -> None:
        now = self.clock()
        self._reap(now)
        await self._probe(now)
        self._check_readiness_deadlines(now)
        if now - self._memory_checked >= MEMORY_CHECK_INTERVAL:
            self._memory_checked = now
            self._enforce_memory(now)
        for api in list(self.apis.values()):
            self._apply(api, now)
        self._place_pending(now)
        self._sync_routes()
        self.routing.established = True
        self.gateways.push()
        self._progress_stops(now)
        async with self._changed:
            self._changed.notify_all()

    def _apply(self, api: DeployedAPI, now: float) -> None:
        replicas = self.replicas_of(api.name)
        if api.deleting:
            for replica in replicas:
                self._request_stop(replica, now)
            if not self.replicas_of(api.name):
                del self.apis[api.name]
                self.routing.remove(api.name)
            return
        self._check_rollout(api, replicas, now)
        target = api.target
        desired = api.requested
        strategy = resolve_strategy(api.spec.update_strategy.max_surge, api.spec.update_strategy.max_unavailable,
                                    desired)
        plan = plan_replicas(target.id, desired, [r.facts() for r in replicas], strategy, now)
        for replica_id in plan.stop:
            self._request_stop(self.replicas[replica_id], now)
        for replica_id in plan.restart:
            replica = self.replicas[replica_id]
            replica.restarts += 1
            self._start(api.versions[replica.version], replica, now)
        for _ in range(plan.create):
            self._start(target, self._new_replica(api.name, target, now), now)

    def _check_rollout(self, api: DeployedAPI, replicas: list[Replica], now: float) -> None:
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
        api.fallback = api.versions.get(previous) or self._version_from_store(api.name, previous)
        self.store.add_event(api.name, "rollback", message, now)
        log.warning("%s: %s", api.name, message)

    def _restore_fallback(self, api: DeployedAPI) -> None:
        versions = {r.version for r in self.replicas_of(api.name)} - {api.record.version}
        for version in versions:
            api.fallback = self._version_from_store(api.name, version)
            if api.fallback is not None:
                api.versions[version] = api.fallback
                return

    def _version_from_store(self, name: str, version: str) -> Version | None:
        found = self.store.get_version(name, version)
        if found is None:
            return None
        spec, snapshot = found
        return Version(version, RealtimeAPI.model_validate(spec), self.paths.snapshots / snapshot)

    def _new_replica(self, name: str, version: Version, now: float) -> Replica:
        replica_id = f"{version.id[:6]}-{secrets.token_hex(3)}"
        replica = Replica(
            id=replica_id, api=name, version=version.id, socket_dir=self.paths.run / replica_id,
            log_path=self.paths.replica_log(name, replica_id),
            processes=version.spec.predictor.processes_per_replica, created_at=now,
        )
        self.replicas[replica_id] = replica
        return replica

    def _start(self, version: Version, replica: Replica, now: float) -> None:
        if replica.placement is None:
            compute = version.spec.compute
            found = place(Request(compute.cpu, compute.mem or 0.0, compute.gpu), self.capacity, self._placed())
            if isinstance(found, str):
                replica.state = ReplicaState.PENDING
                replica.pending_reason = found
                return
            replica.placement, replica.pending_reason = found, None
        env = {**self.env, **_resource_env(version.spec, replica.placement), **version.spec.predictor.env,
               "PYTHONUNBUFFERED": "1"}
        try:
            self.supervisor.spawn(replica, version.spec.model_dump(mode="json"), version.project, env, now)
        except OSError as exc:
            self._failed(replica, now, f"could not start the replica process: {exc}", None)
            return
        self._save(replica)

    def _placed(self) -> list[Placement]:
        return [r.placement for r in self.replicas.values() if r.placement is not None]

    def _place_pending(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            api = self.apis.get(replica.api)
            if replica.state is ReplicaState.PENDING and api is not None and replica.version in api.versions:
                self._start(api.versions[replica.version], replica, now)

    def _save(self, replica: Replica) -> None:
        placement = replica.placement.as_dict() if replica.placement else {}
        self.store.put_replica(ReplicaRecord(
            id=replica.id, api=replica.api, version=replica.version, pid=replica.pid,
            pid_started=_create_time(replica.pid), created_at=replica.created_at,
            socket_dir=str(replica.socket_dir), processes=replica.processes, restarts=replica.restarts,
            placement=placement))

    def _adopt(self, record: ReplicaRecord) -> bool:
        """Take over a replica process a killed daemon left running, if it is still that process."""
        api = self.apis.get(record.api)
        if api is None or record.pid is None or not _same_process(record.pid, record.pid_started):
            return False
        replica = Replica(
            id=record.id, api=record.api, version=record.version, socket_dir=Path(record.socket_dir),
            log_path=self.paths.replica_log(record.api, record.id), processes=record.processes,
            created_at=record.created_at, state=ReplicaState.INITIALIZING, pid=record.pid,
            started_at=self.clock(), restarts=record.restarts,
            placement=Placement.from_dict(record.placement) if record.placement else None,
        )
        if record.version not in api.versions:
            version = self._version_from_store(record.api, record.version)
            if version is None:
                return False
            api.versions[record.version] = version
        self.replicas[replica.id] = replica
        self.store.add_event(record.api, "adopted", f"replica {record.id} (pid {record.pid}) adopted", self.clock())
        return True

    def _adopt_to_stop(self, record: ReplicaRecord) -> bool:
        """A live replica whose API or version is gone (a delete or rollout the last daemon did not
        finish): adopt it as terminating, so it is drained like any other rather than killed now."""
        if record.pid is None or not _same_process(record.pid, record.pid_started):
            return False
        now = self.clock()
        self.replicas[record.id] = Replica(
            id=record.id, api=record.api, version=record.version, socket_dir=Path(record.socket_dir),
            log_path=self.paths.replica_log(record.api, record.id), processes=record.processes,
            created_at=record.created_at, state=ReplicaState.TERMINATING, pid=record.pid, started_at=now,
            restarts=record.restarts, stop_requested_at=now)
        self.routing.retire(record.id)
        return True

    def _reap(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            code = self.supervisor.poll_exit(replica)
            if code is None or replica.exit_code is not None:
                continue
            replica.exit_code = code
            self.supervisor.kill_group(replica)
            if replica.state is ReplicaState.TERMINATING:
                self._forget(replica)
                continue
            failure = self.supervisor.read_failure(replica)
            message = failure[0] if failure else describe_exit(code)
            if replica.state is ReplicaState.KILLED_OOM:
                message = replica.last_error or message
            else:
                replica.state = exit_state(code)
            self._failed(replica, now, message, failure[1] if failure else None)

    def _failed(self, replica: Replica, now: float, message: str, traceback: str | None) -> None:
        if replica.state not in (ReplicaState.KILLED, ReplicaState.KILLED_OOM):
            replica.state = ReplicaState.FAILED
        ran_for = now - replica.started_at
        replica.failures = failures_after_exit(replica.failures, ran_for, replica.ready_at is not None)
        delay = restart_delay(replica.failures)
        replica.next_start = now + delay
        replica.ready_at = None
        replica.last_error = message
        replica.last_traceback = traceback
        self.store.add_event(replica.api, "replica_failed",
                             f"replica {replica.id}: {message}; restarting in {delay:g}s", now)
        if replica.api in self.routing.entries and not self.routing.targets(replica.api):
            self.gateways.fail_waiting(replica.api, message)
        log.warning("replica %s of %s: %s", replica.id, replica.api, message)

    async def _probe(self, now: float) -> None:
        starting = [r for r in self.replicas.values()
                    if r.state is ReplicaState.INITIALIZING and r.exit_code is None]
        if not starting:
            return
        results = await asyncio.gather(*(self.supervisor.probe_ready(r) for r in starting))
        for replica, ready in zip(starting, results, strict=True):
            if ready and replica.state is ReplicaState.INITIALIZING:
                replica.state = ReplicaState.READY
                replica.ready_at = self.clock()
                took = replica.ready_at - replica.started_at
                self.store.add_event(replica.api, "replica_ready", f"replica {replica.id} ready in {took:.2f}s",
                                     replica.ready_at)

    def _check_readiness_deadlines(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            late = now - replica.started_at > self.timeouts.readiness
            if replica.state is ReplicaState.INITIALIZING and replica.exit_code is None and late:
                self.supervisor.kill(replica)
                replica.exit_code = -signal.SIGKILL  # counted here, so the reaper does not count it again
                self._failed(replica, now, f"not ready within {self.timeouts.readiness:g}s", None)

    def _enforce_memory(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            if replica.exit_code is not None or replica.state not in (ReplicaState.INITIALIZING, ReplicaState.READY):
                continue
            replica.rss = self.supervisor.measure_rss(replica)
            api = self.apis.get(replica.api)
            version = api.versions.get(replica.version) if api else None
            limit = version.spec.compute.mem if version else None
            if limit and replica.rss > limit:
                self.supervisor.kill(replica)
                replica.state = ReplicaState.KILLED_OOM
                replica.exit_code = -signal.SIGKILL  # counted here, so the reaper does not count it again
                self._failed(replica, now, f"out of memory: {replica.rss / 2**20:.0f} MiB resident, "
                             f"limit {limit / 2**20:.0f} MiB (compute.mem)", None)

    def _sync_routes(self) -> None:
        for name in self.apis:
            self.routing.set_targets(name, (Target(r.id, sock) for r in self.replicas_of(name)
                                            if r.state is ReplicaState.READY for sock in r.sockets))

    def _request_stop(self, replica: Replica, now: float) -> None:
        if replica.state is ReplicaState.TERMINATING:
            return
        if replica.exit_code is not None or replica.pid is None:
            self._forget(replica)
            return
        replica.state = ReplicaState.TERMINATING
        replica.stop_requested_at = now

    def _progress_stops(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            if replica.state is not ReplicaState.TERMINATING or replica.stop_requested_at is None:
                continue
            if replica.signalled_at is None:
                held = self.gateways.in_flight_of(replica.id, since=self.routing.left_at.get(replica.id, 0))
                if held == 0 or now - replica.stop_requested_at >= self.timeouts.drain:
                    self.supervisor.terminate(replica, now)
            elif now - replica.signalled_at >= self.timeouts.stop:
                self.supervisor.kill(replica)

    def _forget(self, replica: Replica) -> None:
        self.replicas.pop(replica.id, None)
        self.routing.forget(replica.id)
        self.store.delete_replica(replica.id)
        self.supervisor.cleanup(replica)

    async def shutdown(self, timeout: float) -> None:
        """Drain and stop every replica (the APIs stay in the store for the next start)."""
        now = self.clock()
        for replica in list(self.replicas.values()):
            self._request_stop(replica, now)
        for name in list(self.routing.entries):
            self.routing.set_targets(name, ())
        self.gateways.push()
        deadline = time.monotonic() + timeout
        while self.replicas and time.monotonic() < deadline:
            now = self.clock()
            self._reap(now)
            self._progress_stops(now)
            await asyncio.sleep(0.05)
        for replica in list(self.replicas.values()):
            self.supervisor.kill(replica)
            if replica.popen is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    replica.popen.wait(timeout=5)
            self._forget(replica)


def _resource_env(spec: RealtimeAPI, placement: Placement) -> dict[str, str]:
    """Thread caps from the replica's cpu, and the GPUs it was given."""
    threads = str(max(1, math.floor(placement.cpu / spec.predictor.processes_per_replica)))
    env = dict.fromkeys(THREAD_VARIABLES, threads)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index, _ in placement.gpus)
    return env


def _create_time(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _same_process(pid: int, started: float | None) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (
            started is None or abs(process.create_time() - started) < 1)
    except psutil.Error:
        return False
