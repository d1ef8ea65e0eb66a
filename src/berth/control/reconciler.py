"""The reconcile loop: compares each API's desired replicas with the processes it has, and acts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from berth.config.schema import RealtimeAPI
from berth.control.paths import Paths
from berth.control.store import APIRecord, ReplicaRecord, Store
from berth.control.supervisor import Replica, Supervisor, describe_exit, exit_state
from berth.core.backoff import failures_after_exit, restart_delay
from berth.core.reconcile import plan_replicas
from berth.core.status import ReplicaState
from berth.gateway.routes import RoutingTable, Target, Upstream

log = logging.getLogger("berth.control")

FAST_TICK = 0.05  # while a replica initialises, so readiness is seen within 50 ms
SLOW_TICK = 0.5


@dataclass
class DeployedAPI:
    record: APIRecord
    spec: RealtimeAPI
    project: Path
    deleting: bool = False

    @property
    def name(self) -> str:
        return self.record.name


@dataclass(frozen=True)
class Timeouts:
    drain: float = 30.0  # wait this long for the gateway's in-flight requests before SIGTERM
    stop: float = 30.0  # then this long for the process to finish and exit before SIGKILL


class Reconciler:
    def __init__(self, store: Store, supervisor: Supervisor, routes: RoutingTable, paths: Paths,
                 env: Mapping[str, str], clock: Callable[[], float] = time.time,
                 timeouts: Timeouts | None = None) -> None:
        self.store = store
        self.supervisor = supervisor
        self.routes = routes
        self.paths = paths
        self.env = dict(env)
        self.clock = clock
        self.timeouts = timeouts or Timeouts()
        self.apis: dict[str, DeployedAPI] = {}
        self.replicas: dict[str, Replica] = {}
        self._draining: dict[str, list[Upstream]] = {}
        self._targets: dict[str, tuple[Target, ...]] = {}
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()

    # --- desired state ------------------------------------------------------------------------
    def load(self) -> None:
        """Restore APIs from the store; stop replica processes a previous daemon left behind."""
        for leftover in self.store.list_replicas():
            _stop_leftover(leftover)
            self.store.delete_replica(leftover.id)
        for record in self.store.list_apis():
            spec = RealtimeAPI.model_validate(record.spec)
            self.put(DeployedAPI(record, spec, self.paths.snapshots / record.snapshot))

    def put(self, api: DeployedAPI) -> None:
        self.apis[api.name] = api
        self.routes.upsert(api.name, api.spec.endpoint, api.spec.autoscaling.max_replica_concurrency)
        self.wake()

    def remove(self, name: str) -> None:
        api = self.apis.get(name)
        if api is not None:
            api.deleting = True
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    def replicas_of(self, name: str) -> list[Replica]:
        return sorted((r for r in self.replicas.values() if r.api == name), key=lambda r: r.created_at)

    def is_updating(self, name: str) -> bool:
        api = self.apis.get(name)
        if api is None:
            return False
        ready = [r for r in self.replicas_of(name)
                 if r.version == api.record.version and r.state is ReplicaState.READY]
        return len(ready) < api.spec.init_replicas

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
        for api in list(self.apis.values()):
            self._apply(api, now)
        self._sync_routes()
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
                self.routes.remove(api.name)
            return
        plan = plan_replicas(api.record.version, api.spec.init_replicas, [r.facts() for r in replicas], now)
        for replica_id in plan.stop:
            self._request_stop(self.replicas[replica_id], now)
        for replica_id in plan.restart:
            replica = self.replicas[replica_id]
            replica.restarts += 1
            self._start(api, replica, now)
        for _ in range(plan.create):
            self._start(api, self._new_replica(api, now), now)

    def _new_replica(self, api: DeployedAPI, now: float) -> Replica:
        replica_id = f"{api.record.version[:6]}-{secrets.token_hex(3)}"
        replica = Replica(
            id=replica_id, api=api.name, version=api.record.version,
            socket_dir=self.paths.run / replica_id, log_path=self.paths.replica_log(api.name, replica_id),
            processes=api.spec.predictor.processes_per_replica, created_at=now,
        )
        self.replicas[replica_id] = replica
        return replica

    def _start(self, api: DeployedAPI, replica: Replica, now: float) -> None:
        env = {**self.env, **api.spec.predictor.env, "PYTHONUNBUFFERED": "1"}
        try:
            self.supervisor.spawn(replica, api.spec.model_dump(mode="json"), api.project, env, now)
        except OSError as exc:
            self._failed(replica, now, f"could not start the replica process: {exc}", None)
            return
        started = _create_time(replica.pid)
        self.store.put_replica(ReplicaRecord(replica.id, replica.api, replica.version, replica.pid, started))

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
            replica.state = exit_state(code)
            self._failed(replica, now, message, failure[1] if failure else None)

    def _failed(self, replica: Replica, now: float, message: str, traceback: str | None) -> None:
        if replica.state not in (ReplicaState.KILLED, ReplicaState.KILLED_OOM):
            replica.state = ReplicaState.FAILED
        ran_for = now - replica.started_at
        replica.failures = failures_after_exit(replica.failures, ran_for, replica.ready_at is not None)
        delay = restart_delay(replica.failures)
        replica.next_start = now + delay
        replica.last_error = message
        replica.last_traceback = traceback
        self.store.add_event(replica.api, "replica_failed",
                             f"replica {replica.id}: {message}; restarting in {delay:g}s", now)
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
                self.store.add_event(replica.api, "replica_ready",
                                     f"replica {replica.id} ready in {replica.ready_at - replica.started_at:.2f}s")

    def _sync_routes(self) -> None:
        for name in self.apis:
            route = self.routes.by_api.get(name)
            if route is None:
                continue
            targets = tuple(Target(r.id, sock) for r in self.replicas_of(name)
                            if r.state is ReplicaState.READY for sock in r.sockets)
            if self._targets.get(name) == targets:
                continue
            self._targets[name] = targets
            for upstream in route.set_targets(targets):
                self._draining.setdefault(upstream.target.replica_id, []).append(upstream)

    def _request_stop(self, replica: Replica, now: float) -> None:
        if replica.state is ReplicaState.TERMINATING:
            return
        if replica.exit_code is not None or replica.popen is None:
            self._forget(replica)
            return
        replica.state = ReplicaState.TERMINATING
        replica.stop_requested_at = now

    def _progress_stops(self, now: float) -> None:
        for replica in list(self.replicas.values()):
            if replica.state is not ReplicaState.TERMINATING or replica.stop_requested_at is None:
                continue
            if replica.signalled_at is None:
                held = sum(u.in_flight for u in self._draining.get(replica.id, []))
                if held == 0 or now - replica.stop_requested_at >= self.timeouts.drain:
                    self.supervisor.terminate(replica, now)
            elif now - replica.signalled_at >= self.timeouts.stop:
                self.supervisor.kill(replica)

    def _forget(self, replica: Replica) -> None:
        self.replicas.pop(replica.id, None)
        self._draining.pop(replica.id, None)
        self.store.delete_replica(replica.id)
        self.supervisor.cleanup(replica)

    async def shutdown(self, timeout: float) -> None:
        """Drain and stop every replica (the APIs stay in the store for the next start)."""
        now = self.clock()
        for replica in list(self.replicas.values()):
            self._request_stop(replica, now)
        self._sync_routes_all_down()
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

    def _sync_routes_all_down(self) -> None:
        for name, route in self.routes.by_api.items():
            self._targets[name] = ()
            for upstream in route.set_targets(()):
                self._draining.setdefault(upstream.target.replica_id, []).append(upstream)


def _create_time(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _stop_leftover(record: ReplicaRecord) -> None:
    """Stop a replica process recorded by an earlier daemon, if it is still that process."""
    if record.pid is None:
        return
    try:
        process = psutil.Process(record.pid)
        if record.pid_started is not None and abs(process.create_time() - record.pid_started) > 1:
            return  # the pid was reused by something else
        os.killpg(record.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except psutil.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
    except (psutil.Error, ProcessLookupError, PermissionError):
        return
