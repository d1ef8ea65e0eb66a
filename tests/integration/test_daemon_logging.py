"""What the daemon's log says: autoscaler decisions only when they change something, and adoption.

The real autoscaling loop and reconciler over a real store, with the reconciler tests' fake supervisor
and manual clock (nothing sleeps).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import psutil
import pytest

from berth.control.autoscaling import AutoscalingLoop
from berth.control.store import ReplicaRecord
from tests.integration.test_reconciler import FakeGateways, World

pytestmark = pytest.mark.anyio


class LoadedGateways(FakeGateways):
    """The gateways' report of requests in flight per API, as the autoscaling loop samples it."""

    def __init__(self) -> None:
        super().__init__()
        self.load: dict[str, int] = {}

    def loads(self) -> dict[str, int]:
        return dict(self.load)


def autoscaler_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "berth.autoscaler" and r.levelno >= level]


async def test_an_idle_api_writes_no_autoscaler_line_and_a_change_writes_one(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="berth.autoscaler")
    gateways = LoadedGateways()
    world.deploy("v1", autoscaling={"min_replicas": 1, "max_replicas": 4, "target_replica_concurrency": 1})
    await world.make_ready("v1")
    loop = AutoscalingLoop(world.store, world.reconciler, gateways, world.clock)  # type: ignore[arg-type]
    for _ in range(30):  # five minutes idle: a decision every 10 s, each "stay at 1"
        for _ in range(10):
            world.clock.now += 1
            loop.sample(world.clock.now)
        loop.decide_all(world.clock.now)
    assert autoscaler_lines(caplog) == []
    assert len(autoscaler_lines(caplog, logging.DEBUG)) == 30  # still there, at debug level
    assert len(world.store.decisions("api", limit=100)) == 30  # and in the store, for `describe`
    gateways.load["api"] = 8
    for _ in range(70):  # busy for over a minute: the window fills and the upscale stabilization passes
        world.clock.now += 1
        loop.sample(world.clock.now)
        if int(world.clock.now) % 10 == 0:
            loop.decide_all(world.clock.now)
    lines = autoscaler_lines(caplog)
    assert lines and all(line.startswith("api: replicas 1 -> ") for line in lines[:1])
    assert world.reconciler.apis["api"].requested > 1


async def test_adoption_logs_a_line_per_replica_adopted_or_forgotten(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="berth.control")
    world.deploy("v1", 2)
    await world.make_ready("v1")
    me = psutil.Process(os.getpid())  # a process that really runs, standing in for each replica
    records = world.store.list_replicas()
    for record in records:
        world.store.put_replica(ReplicaRecord(**{**record.__dict__, "pid": me.pid, "pid_started": me.create_time()}))
    world.store.put_replica(ReplicaRecord(**{**records[0].__dict__, "id": "orphan-1", "api": "deleted-api",
                                             "pid": me.pid, "pid_started": me.create_time()}))
    world.store.put_replica(ReplicaRecord(**{**records[0].__dict__, "id": "dead-1", "pid": 999_999_999}))
    caplog.clear()
    world.reconciler = world.make()  # the daemon comes back: same store, nothing in memory
    world.reconciler.load()
    lines = [r.getMessage() for r in caplog.records if r.name == "berth.control"]
    for record in records:
        assert sum(line.startswith(f"adopted replica {record.id} of api (pid {me.pid}") for line in lines) == 1
    assert sum("adopted replica orphan-1 of deleted-api" in line and "to stop it" in line for line in lines) == 1
    assert sum("replica dead-1 of api (pid 999999999) did not outlive the last daemon" in line
               for line in lines) == 1


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)
