"""Capacity decisions: what never fits the machine, rollouts on a full machine, and how exits are named."""

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.control.supervisor import describe_exit, exit_event
from berth.core.lifecycle import Event
from berth.core.placement import Capacity, Request, never_fits
from berth.core.reconcile import Plan, ReplicaFacts, Strategy, in_place_strategy, plan_replicas
from berth.core.status import APIStatus, ReplicaState, ReplicaView, derive_status
from berth.runtime.contract import EXIT_INIT_FAILED, EXIT_SIBLING_DIED

R = ReplicaState
GI = 2**30
LAPTOP = Capacity(cpu=2, mem=8 * GI, gpus=())


@pytest.mark.parametrize(("request_", "capacity", "expected"), [
    (Request(2, 8 * GI, 0), LAPTOP, []),
    (Request(4, 0, 0), LAPTOP,
     ["compute.cpu 4 does not fit this machine: it has 2 cores (the CPUs this daemon may run on); "
      "lower compute.cpu"]),
    (Request(1, 16 * GI, 0), LAPTOP,
     ["compute.mem 16Gi does not fit this machine: it has 8Gi of memory; lower compute.mem"]),
    (Request(1, 0, 0.25), LAPTOP,
     ["compute.gpu 0.25 does not fit this machine: it has no GPU (none found through NVML or nvidia-smi); "
      "remove compute.gpu, or deploy where a GPU is"]),
    (Request(1, 0, 0.25), Capacity(2, 8 * GI, gpus=(0,)), []),
    (Request(1, 0, 2), Capacity(2, 8 * GI, gpus=(0,)),
     ["compute.gpu 2 does not fit this machine: it has 1 GPU(s); lower compute.gpu"]),
    (Request(3, 9 * GI, 1), LAPTOP, None),
])
def test_what_never_fits_the_machine(request_: Request, capacity: Capacity, expected: list[str] | None) -> None:
    found = never_fits(request_, capacity)
    if expected is None:  # every field at once, each named
        assert [p.split(" ")[0] for p in found] == ["compute.cpu", "compute.mem", "compute.gpu"]
    else:
        assert found == expected


def facts(id_: str, version: str, state: ReplicaState, created: float = 0, unplaceable: bool = False) -> ReplicaFacts:
    return ReplicaFacts(id=id_, version=version, state=state, created_at=created, unplaceable=unplaceable)


def test_a_surge_replica_with_no_room_makes_the_update_replace_in_place() -> None:
    old = facts("o0", "v1", R.READY)
    assert plan_replicas("v2", 1, [old], Strategy(1, 0), now=0) == Plan(create=1)
    waiting = facts("n0", "v2", R.PENDING, created=1, unplaceable=True)
    assert plan_replicas("v2", 1, [old, waiting], Strategy(1, 0), now=0) == Plan(stop=("o0",), in_place=True)
    # a new replica that merely starts keeps the surge rule: the old one serves until it is ready
    starting = facts("n0", "v2", R.PENDING, created=1)
    assert plan_replicas("v2", 1, [old, starting], Strategy(1, 0), now=0) == Plan()


@pytest.mark.parametrize(("strategy", "in_place"), [
    (Strategy(1, 0), Strategy(0, 1)), (Strategy(2, 3), Strategy(0, 3)), (Strategy(0, 1), Strategy(0, 1))])
def test_in_place_strategy_has_no_surge_and_at_least_one_unavailable(strategy: Strategy, in_place: Strategy) -> None:
    assert in_place_strategy(strategy) == in_place


strategies = st.builds(Strategy, st.integers(0, 3), st.integers(0, 3)).filter(
    lambda s: s.max_surge + s.max_unavailable > 0)


@given(st.integers(1, 5), st.integers(0, 2), strategies)
def test_rollouts_converge_on_a_machine_with_no_room_to_spare(desired: int, spare: int, strategy: Strategy) -> None:
    """Room for `desired + spare` replicas, every old one placed: the update still ends at the new version.

    A replica holds its room from placement until it has left; what a stop frees is free a tick later.
    """
    room = desired + spare
    replicas = {f"o{i}": facts(f"o{i}", "v1", R.READY, i) for i in range(desired)}
    counter = 0
    for tick in range(100):
        for key, replica in list(replicas.items()):
            if replica.state is R.TERMINATING:
                del replicas[key]  # it has exited: its room is free
            elif replica.state is R.INITIALIZING:
                replicas[key] = facts(key, replica.version, R.READY, replica.created_at)
        placed = sum(r.state is not R.PENDING for r in replicas.values())
        for key, replica in sorted(replicas.items(), key=lambda item: item[1].created_at):
            if replica.state is R.PENDING and placed < room:
                replicas[key], placed = facts(key, replica.version, R.INITIALIZING, replica.created_at), placed + 1
        plan = plan_replicas("v2", desired, list(replicas.values()), strategy, now=tick)
        for replica_id in plan.stop:
            replicas[replica_id] = facts(replica_id, replicas[replica_id].version, R.TERMINATING)
        for _ in range(plan.create):
            counter += 1
            fits = placed < room
            placed += fits
            replicas[f"n{counter}"] = facts(f"n{counter}", "v2", R.INITIALIZING if fits else R.PENDING,
                                            100 + counter, unplaceable=not fits)
        if plan.empty and all(r.version == "v2" and r.state is R.READY for r in replicas.values()):
            break
    assert sorted((r.version, r.state) for r in replicas.values()) == [("v2", R.READY)] * desired


def test_a_replica_waiting_for_room_that_others_free_is_updating_not_compute_unavailable() -> None:
    waiting = ReplicaView(R.PENDING, current=True, unplaceable=True)
    leaving = ReplicaView(R.TERMINATING, current=False)
    assert derive_status([waiting], 1).status is APIStatus.COMPUTE_UNAVAILABLE
    assert derive_status([waiting, leaving], 1).status is APIStatus.UPDATING


@pytest.mark.parametrize(("code", "words", "event"), [
    (-signal.SIGKILL, "killed by SIGKILL", Event.KILLED),
    (-signal.SIGTERM, "killed by SIGTERM", Event.CRASHED),
    (128 + signal.SIGKILL, "a process of the replica was killed by SIGKILL; the others were stopped", Event.KILLED),
    (128 + signal.SIGSEGV, "a process of the replica was killed by SIGSEGV; the others were stopped",
     Event.CRASHED),
    (EXIT_SIBLING_DIED, "a process of the replica exited by itself (see `berth logs`); the others were stopped",
     Event.CRASHED),
    (EXIT_INIT_FAILED, "the predictor failed to initialise", Event.CRASHED),
    (1, "exited with code 1", Event.CRASHED),
])
def test_how_an_exit_is_named(code: int, words: str, event: Event) -> None:
    assert (describe_exit(code), exit_event(code)) == (words, event)
