"""The deployer and the reconciler in-process: deploys during a delete, `--wait`'s proof that a version
starts, what never fits, and the compute of failed replicas and of rollouts on a full machine.

The reconciler's world (fake supervisor, manual clock) is test_reconciler's; only the deployer is added.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.control.deploy import Deployer
from berth.control.fleet import Timeouts
from berth.core.lifecycle import Phase
from berth.core.placement import Capacity
from berth.errors import Conflict, InsufficientCapacity
from tests.integration.test_reconciler import World

pytestmark = pytest.mark.anyio


class DeployWorld(World):
    def __init__(self, tmp_path: Path, capacity: Capacity | None = None) -> None:
        self.capacity = capacity or Capacity(cpu=64, mem=2**40, gpus=())
        super().__init__(tmp_path, Timeouts())
        self.deployer = Deployer(self.store, self.reconciler, self.paths, self.clock)
        self.project = tmp_path / "project"
        self.project.mkdir()
        (self.project / "berth.yaml").write_text("# the specs are passed in\n")
        (self.project / "predictor.py").write_text("class PythonPredictor:\n    pass\n")

    def make(self) -> Any:
        from berth.control.reconciler import Reconciler
        return Reconciler(self.store, self.supervisor, self.routing, self.gateways, self.paths,  # type: ignore[arg-type]
                          {}, self.capacity, clock=self.clock, timeouts=self.timeouts)

    async def apply(self, verify: bool = False, name: str = "api", **spec: Any) -> list[str]:
        raw = {"name": name, "kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"}, **spec}
        results = await self.deployer.deploy(str(self.project / "berth.yaml"), [raw], verify=verify)
        return [r.message for r in results]

    def messages(self, name: str = "api") -> list[str]:
        return [e.message for e in self.store.events(name, limit=100)]


@pytest.fixture
def world(tmp_path: Path) -> DeployWorld:
    return DeployWorld(tmp_path)


async def test_a_deploy_or_refresh_during_a_delete_is_refused_until_the_delete_is_over(world: DeployWorld) -> None:
    assert await world.apply() == ["creating api"]
    await world.make_ready(world.reconciler.apis["api"].record.version)
    replica = world.replicas()[0]
    world.gateways.held[replica.id] = 1  # a slow request: the replica drains
    await world.deployer.delete("api")
    await world.tick()
    with pytest.raises(Conflict) as refused:
        await world.apply()
    assert "cannot deploy 'api': it is being deleted (1 replica(s) still stopping, finishing 1 request(s))" \
        in refused.value.message
    assert "once `berth get` no longer lists 'api'" in (refused.value.hint or "")
    with pytest.raises(Conflict, match="cannot refresh 'api': it is being deleted"):
        await world.deployer.refresh("api")
    assert world.reconciler.apis["api"].deleting  # the delete goes on
    world.gateways.held[replica.id] = 0
    await world.tick()
    world.supervisor.exits[replica.id] = 0
    await world.tick()
    assert "api" not in world.reconciler.apis
    assert await world.apply() == ["creating api"]


async def test_deploy_wait_starts_one_replica_of_an_api_at_zero_until_it_has_been_ready(world: DeployWorld) -> None:
    scaling = {"autoscaling": {"min_replicas": 0}}
    await world.apply(**scaling)
    await world.tick()
    assert world.replicas() == []  # without --wait: nothing starts
    await world.apply(verify=True, **scaling)
    api = world.reconciler.apis["api"]
    assert (api.requested, api.desired, api.verifying) == (1, 1, api.record.version)
    await world.tick()
    (replica,) = world.replicas()
    world.reconciler.set_requested("api", 0, "autoscaler")  # too early: the proof is not in yet
    await world.tick()
    assert replica.phase is Phase.INITIALIZING
    world.supervisor.ready.add(replica.id)
    await world.tick()
    assert api.verifying is None and api.desired == 0
    assert any(m.startswith(f"replica {replica.id} ready in") for m in world.messages())
    assert replica.phase in (Phase.DRAINING, Phase.STOPPING)  # back to zero, as the autoscaler asked


async def test_deploy_wait_keeps_a_failing_version_of_an_api_at_zero_in_error(world: DeployWorld) -> None:
    await world.apply(verify=True, autoscaling={"min_replicas": 0})
    version = world.reconciler.apis["api"].record.version
    world.supervisor.crash_versions.add(version)
    world.reconciler.set_requested("api", 0, "autoscaler")
    for _ in range(4):
        await world.tick(2.5)
    (replica,) = world.replicas()
    assert replica.failures >= 2 and world.reconciler.apis["api"].desired == 1


async def test_what_can_never_fit_the_machine_is_refused_at_deploy(tmp_path: Path) -> None:
    world = DeployWorld(tmp_path, Capacity(cpu=2, mem=2**33, gpus=()))
    with pytest.raises(InsufficientCapacity) as refused:
        await world.apply(compute={"cpu": 4, "gpu": 0.25})
    assert refused.value.message.splitlines() == [
        "api: compute.cpu 4 does not fit this machine: it has 2 cores (the CPUs this daemon may run on); "
        "lower compute.cpu",
        "api: compute.gpu 0.25 does not fit this machine: it has no GPU (none found through NVML or "
        "nvidia-smi); remove compute.gpu, or deploy where a GPU is"]
    assert world.store.get_api("api") is None


async def test_a_failed_replica_releases_its_compute_while_it_backs_off(tmp_path: Path) -> None:
    world = DeployWorld(tmp_path, Capacity(cpu=2, mem=2**33, gpus=()))
    await world.apply(compute={"cpu": 2})
    version = world.reconciler.apis["api"].record.version
    world.supervisor.crash_versions.add(version)
    await world.tick()
    await world.tick()
    (broken,) = world.replicas()
    assert broken.phase is Phase.FAILED and broken.placement is None
    await world.apply(name="other", compute={"cpu": 1})
    await world.tick()
    (other,) = world.reconciler.replicas_of("other")
    assert other.phase is Phase.INITIALIZING and other.pending_reason is None


async def test_an_update_on_a_full_machine_replaces_in_place_and_says_so(tmp_path: Path) -> None:
    world = DeployWorld(tmp_path, Capacity(cpu=2, mem=2**33, gpus=()))
    await world.apply(compute={"cpu": 2})
    v1 = world.reconciler.apis["api"].record.version
    await world.make_ready(v1)
    await world.apply(compute={"cpu": 2}, predictor={"type": "python", "path": "predictor.py", "config": {"a": 1}})
    v2 = world.reconciler.apis["api"].record.version
    await world.tick()
    (old,) = world.replicas(v1)
    (new,) = world.replicas(v2)
    assert new.phase is Phase.PENDING and old.phase in (Phase.DRAINING, Phase.STOPPING)  # in the same tick
    assert any(m.startswith(f"no room on this machine for a surge replica of version {v2} (replica {new.id} "
                            "needs 2 cpu, 0 of 2 free): replacing replicas in place, 1 at a time")
               for m in world.messages())
    world.supervisor.exits[old.id] = 0
    await world.tick()
    assert new.phase is Phase.INITIALIZING
    await world.make_ready(v2)
    assert [r.version for r in world.replicas()] == [v2]


async def test_a_failing_version_that_replaced_in_place_is_rolled_back(tmp_path: Path) -> None:
    world = DeployWorld(tmp_path, Capacity(cpu=2, mem=2**33, gpus=()))
    await world.apply(compute={"cpu": 2})
    v1 = world.reconciler.apis["api"].record.version
    await world.make_ready(v1)
    predictor = {"type": "python", "path": "predictor.py", "config": {"broken": True}}
    await world.apply(compute={"cpu": 2}, predictor=predictor)
    v2 = world.reconciler.apis["api"].record.version
    world.supervisor.crash_versions.add(v2)
    await world.tick()
    (old,) = world.replicas(v1)
    world.supervisor.exits[old.id] = 0  # it made room
    for _ in range(12):  # each failed start waits out its backoff
        await world.tick(2.5)
    api = world.reconciler.apis["api"]
    assert api.fallback is not None and api.fallback.id == v1
    assert f"version {v1} is started again" in (api.record.failed_reason or "")
    await world.tick(2.5)  # the failing replica leaves; the old version is placed in its room
    await world.make_ready(v1)
    assert [r.version for r in world.replicas() if r.phase is Phase.READY] == [v1]
