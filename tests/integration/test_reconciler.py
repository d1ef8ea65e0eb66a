"""The reconciler in-process: a fake supervisor with scripted exits and readiness, and a manual clock.

Each test drives `tick()` by hand and moves time by assignment, so timeouts of 30 s or 600 s cost
nothing and nothing sleeps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil
import pytest

from berth.config.schema import RealtimeAPI
from berth.control.apis import DeployedAPI
from berth.control.fleet import Timeouts
from berth.control.paths import Paths
from berth.control.reconciler import Reconciler
from berth.control.replica import Replica
from berth.control.routing import Routing
from berth.control.store import APIRecord, ReplicaRecord, Store
from berth.core.lifecycle import Phase
from berth.core.placement import Capacity

pytestmark = pytest.mark.anyio


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSupervisor:
    """Records what the reconciler asks for; tests script exits, readiness and memory per replica."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.exits: dict[str, int] = {}  # replica id -> exit code the next poll reports
        self.ready: set[str] = set()
        self.rss: dict[str, float] = {}
        self.crash_versions: set[str] = set()  # every replica of these versions exits at once
        self._pids = 50_000

    def spawn(self, replica: Replica, spec: Any, project: Path, env: Any, now: float,
              python: str | None = None) -> None:
        self._pids += 1
        self.calls.append(("spawn", replica.id))
        replica.started(self._pids, now)
        if replica.version in self.crash_versions:
            self.exits[replica.id] = 1

    def poll_exit(self, replica: Replica) -> int | None:
        return self.exits.pop(replica.id, None)

    def kill_group(self, replica: Replica) -> None:
        pass

    def read_failure(self, replica: Replica) -> tuple[str, str] | None:
        return None

    async def probe_ready(self, replica: Replica) -> bool:
        return replica.id in self.ready

    def terminate(self, replica: Replica, now: float) -> None:
        replica.signalled(now)
        self.calls.append(("terminate", replica.id))

    def kill(self, replica: Replica) -> None:
        self.calls.append(("kill", replica.id))

    def measure_rss(self, replica: Replica) -> float:
        return self.rss.get(replica.id, 0.0)

    def cleanup(self, replica: Replica) -> None:
        self.calls.append(("cleanup", replica.id))


class FakeGateways:
    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.failed: list[tuple[str, str]] = []
        self.pushed = 0

    def push(self) -> None:
        self.pushed += 1

    def fail_waiting(self, api: str, message: str) -> None:
        self.failed.append((api, message))

    def in_flight_of(self, replica_id: str, since: int) -> int | None:
        return self.held.get(replica_id, 0)


class World:
    def __init__(self, tmp_path: Path, timeouts: Timeouts | None = None) -> None:
        self.clock = Clock()
        self.supervisor = FakeSupervisor()
        self.gateways = FakeGateways()
        self.paths = Paths(tmp_path / "home")
        self.paths.ensure()
        self.store = Store(self.paths.database)
        self.store.open()
        self.routing = Routing()
        self.timeouts = timeouts or Timeouts()
        self.reconciler = self.make()

    def make(self) -> Reconciler:
        return Reconciler(self.store, self.supervisor, self.routing, self.gateways, self.paths,  # type: ignore[arg-type]
                          {}, Capacity(cpu=64, mem=2**40, gpus=()), clock=self.clock, timeouts=self.timeouts)

    def deploy(self, version: str, replicas: int = 1, **spec: Any) -> None:
        api = RealtimeAPI.model_validate({"name": "api", "kind": "RealtimeAPI",
                                          "predictor": {"type": "python", "path": "predictor.py"}, **spec})
        existing = self.store.get_api("api")
        record = APIRecord(name="api", endpoint="/api", spec=api.model_dump(mode="json"), version=version,
                           snapshot="snap", spec_file="berth.yaml", created_at=self.clock.now,
                           updated_at=self.clock.now, requested=existing.requested if existing else replicas)
        self.store.put_api(record)
        self.reconciler.put(DeployedAPI(record, api, self.paths.snapshots / "snap"))

    async def tick(self, seconds: float = 0.0) -> None:
        self.clock.now += seconds
        await self.reconciler.tick()

    def replicas(self, version: str | None = None) -> list[Replica]:
        return [r for r in self.reconciler.replicas_of("api") if version is None or r.version == version]

    async def make_ready(self, version: str) -> None:
        await self.tick()
        self.supervisor.ready.update(r.id for r in self.replicas(version))
        await self.tick()
        assert all(r.phase is Phase.READY for r in self.replicas(version))


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


async def test_a_new_version_failing_three_starts_is_rolled_back_while_the_old_one_serves(world: World) -> None:
    world.deploy("v1")
    await world.make_ready("v1")
    world.supervisor.crash_versions.add("v2")
    world.deploy("v2")
    for _ in range(12):  # each failed start waits out its backoff: 0.5 s, 1 s, 2 s
        await world.tick(2.5)
    api = world.reconciler.apis["api"]
    assert api.fallback is not None and api.fallback.id == "v1" and api.rollout_failed
    assert [r.phase for r in world.replicas("v1")] == [Phase.READY]
    assert [e.kind for e in world.store.events("api")].count("rollback") == 1
    assert world.routing.targets("api")[0].replica_id == world.replicas("v1")[0].id


async def test_a_replica_not_ready_by_the_deadline_is_killed_and_counted_once(tmp_path: Path) -> None:
    world = World(tmp_path, Timeouts(readiness=5))
    world.deploy("v1")
    await world.tick()
    replica = world.replicas()[0]
    await world.tick(4)
    assert replica.phase is Phase.INITIALIZING
    await world.tick(2)
    assert ("kill", replica.id) in world.supervisor.calls
    assert (replica.phase, replica.failures, replica.last_error) == (Phase.FAILED, 1, "not ready within 5s")
    world.supervisor.exits[replica.id] = -9  # its SIGKILL lands: the reaper must not count it again
    await world.tick()
    assert replica.failures == 1


async def test_a_replica_over_its_memory_limit_is_killed_as_out_of_memory(world: World) -> None:
    world.deploy("v1", compute={"mem": "100Mi"})
    await world.make_ready("v1")
    replica = world.replicas()[0]
    world.supervisor.rss[replica.id] = 200 * 2**20
    await world.tick(1.5)
    assert replica.phase is Phase.KILLED_OOM and ("kill", replica.id) in world.supervisor.calls
    assert "out of memory: 200 MiB resident, limit 100 MiB" in (replica.last_error or "")
    assert world.routing.targets("api") == ()


@pytest.mark.parametrize(("held", "terminate_after"), [(0, 0.0), (3, 30.0)])
async def test_drain_then_sigterm_then_sigkill(world: World, held: int, terminate_after: float) -> None:
    world.deploy("v1")
    await world.make_ready("v1")
    replica = world.replicas()[0]
    world.gateways.held[replica.id] = held
    world.reconciler.remove("api")
    await world.tick()
    assert replica.phase is (Phase.STOPPING if held == 0 else Phase.DRAINING)
    assert world.routing.targets("api") == ()  # out of the table before anything else
    if held:
        await world.tick(29)
        assert replica.phase is Phase.DRAINING and ("terminate", replica.id) not in world.supervisor.calls
        await world.tick(terminate_after - 29)
    assert ("terminate", replica.id) in world.supervisor.calls
    await world.tick(29)
    assert ("kill", replica.id) not in world.supervisor.calls
    await world.tick(1)
    assert ("kill", replica.id) in world.supervisor.calls
    world.supervisor.exits[replica.id] = -9
    await world.tick()
    assert "api" not in world.reconciler.apis and ("cleanup", replica.id) in world.supervisor.calls


async def test_a_replica_still_in_init_is_killed_soon_after_sigterm(world: World) -> None:
    # An __init__ blocking the event loop never sees SIGTERM; it has no request to finish either.
    world.deploy("v1")
    await world.tick()
    replica = world.replicas()[0]
    assert replica.phase is Phase.INITIALIZING
    world.reconciler.remove("api")
    await world.tick()
    assert ("terminate", replica.id) in world.supervisor.calls
    await world.tick(1.5)
    assert ("kill", replica.id) not in world.supervisor.calls
    await world.tick(0.5)
    assert ("kill", replica.id) in world.supervisor.calls


async def test_a_new_daemon_adopts_running_replicas_and_drains_orphans(world: World) -> None:
    world.deploy("v1")
    await world.make_ready("v1")
    me = psutil.Process(os.getpid())  # a process that really runs, standing in for the replica
    replica = world.replicas()[0]
    record = world.store.list_replicas()[0]
    world.store.put_replica(ReplicaRecord(**{**record.__dict__, "pid": me.pid, "pid_started": me.create_time()}))
    world.store.put_replica(ReplicaRecord(**{**record.__dict__, "id": "orphan-1", "api": "deleted-api",
                                             "pid": me.pid, "pid_started": me.create_time()}))
    world.store.put_replica(ReplicaRecord(**{**record.__dict__, "id": "dead-1", "pid": 999_999_999}))
    restarted = world.make()  # the daemon comes back: same store, nothing in memory
    world.reconciler = restarted
    restarted.load()
    adopted = restarted.replicas[replica.id]
    assert adopted.phase is Phase.INITIALIZING and adopted.pid == me.pid
    assert restarted.replicas["orphan-1"].phase is Phase.DRAINING
    assert "dead-1" not in restarted.replicas and all(r.id != "dead-1" for r in world.store.list_replicas())
    await world.tick()
    assert adopted.phase is Phase.READY and world.routing.targets("api")[0].replica_id == replica.id
    assert ("terminate", "orphan-1") in world.supervisor.calls  # it held nothing: stopped, not killed
    assert [c for c in world.supervisor.calls if c[0] == "spawn"] == [("spawn", replica.id)]  # nothing restarted


async def test_a_deploy_during_a_rollout_supersedes_it(world: World) -> None:
    world.deploy("v1")
    await world.make_ready("v1")
    world.deploy("v2")
    await world.tick()
    (v2,) = world.replicas("v2")
    assert v2.phase is Phase.INITIALIZING
    world.deploy("v3")
    await world.tick()
    assert v2.phase in (Phase.DRAINING, Phase.STOPPING) or v2.id not in world.reconciler.replicas
    assert [r.phase for r in world.replicas("v1")] == [Phase.READY]  # still serving
    await world.make_ready("v3")
    await world.tick()
    assert world.replicas("v1")[0].phase in (Phase.DRAINING, Phase.STOPPING)
    assert {t.replica_id for t in world.routing.targets("api")} == {r.id for r in world.replicas("v3")}
