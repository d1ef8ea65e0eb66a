"""Pure decisions: balancing, backoff, reconcile planning, status. Tables and properties."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.core.backoff import HEALTHY_RUN, failures_after_exit, restart_delay
from berth.core.balancing import admits, least_in_flight
from berth.core.placement import Capacity, Placement, Request, free_gpu_shares, place
from berth.core.reconcile import Plan, ReplicaFacts, Strategy, plan_replicas, resolve_strategy
from berth.core.status import APIStatus, ReplicaState, ReplicaView, derive_status

R = ReplicaState


@pytest.mark.parametrize(
    ("loads", "start", "expected"),
    [([], 0, -1), ([5], 3, 0), ([2, 0, 1], 0, 1), ([1, 1, 1], 0, 0), ([1, 1, 1], 1, 1), ([1, 1, 1], 5, 2),
     ([0, 3, 0], 1, 2), ([4, 2, 2], 0, 1)],
)
def test_least_in_flight(loads: list[int], start: int, expected: int) -> None:
    assert least_in_flight(loads, start) == expected


@given(st.lists(st.integers(0, 50), min_size=1, max_size=20), st.integers(0, 1000))
def test_least_in_flight_picks_a_minimum(loads: list[int], start: int) -> None:
    assert loads[least_in_flight(loads, start)] == min(loads)


@given(st.integers(1, 12), st.integers(1, 200))
def test_advancing_start_spreads_an_idle_pool_evenly(size: int, picks: int) -> None:
    counts = [0] * size
    for start in range(picks):
        counts[least_in_flight([0] * size, start)] += 1
    assert max(counts) - min(counts) <= 1


@pytest.mark.parametrize(("in_flight", "ready", "limit", "ok"),
                         [(0, 0, 10, False), (9, 1, 10, True), (10, 1, 10, False), (19, 2, 10, True)])
def test_admission(in_flight: int, ready: int, limit: int, ok: bool) -> None:
    assert admits(in_flight, ready, limit) is ok


@pytest.mark.parametrize(("failures", "delay"), [(0, 0), (1, 0.5), (2, 1), (3, 2), (8, 60), (50, 60)])
def test_restart_delay_grows_exponentially_and_is_capped(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


def test_a_long_healthy_run_starts_a_new_streak() -> None:
    assert failures_after_exit(5, HEALTHY_RUN + 1, was_ready=True) == 1
    assert failures_after_exit(5, HEALTHY_RUN + 1, was_ready=False) == 6
    assert failures_after_exit(2, 3, was_ready=True) == 3


def facts(id: str, version: str, state: ReplicaState, created: float = 0, next_start: float = 0) -> ReplicaFacts:
    return ReplicaFacts(id=id, version=version, state=state, created_at=created, next_start=next_start)


EAGER = Strategy(max_surge=10, max_unavailable=0)


def test_plan_creates_missing_replicas() -> None:
    plan = plan_replicas("v1", 3, [facts("a", "v1", R.READY)], EAGER, now=0)
    assert (plan.create, plan.stop, plan.restart) == (2, (), ())


def test_plan_keeps_old_version_serving_until_new_one_is_ready() -> None:
    replicas = [facts("old", "v1", R.READY), facts("new", "v2", R.INITIALIZING)]
    assert plan_replicas("v2", 1, replicas, EAGER, now=0).stop == ()
    replicas[1] = facts("new", "v2", R.READY)
    assert plan_replicas("v2", 1, replicas, EAGER, now=0).stop == ("old",)


def test_plan_keeps_old_version_while_new_one_crash_loops() -> None:
    replicas = [facts("old", "v1", R.READY), facts("new", "v2", R.FAILED, next_start=10)]
    plan = plan_replicas("v2", 1, replicas, EAGER, now=5)
    assert plan.empty
    assert plan_replicas("v2", 1, replicas, EAGER, now=10).restart == ("new",)


def test_plan_sheds_surplus_replicas_that_do_not_serve_first() -> None:
    replicas = [facts("a", "v1", R.READY, 1), facts("b", "v1", R.INITIALIZING, 2), facts("c", "v1", R.READY, 3)]
    assert plan_replicas("v1", 2, replicas, EAGER, now=0).stop == ("b",)
    assert plan_replicas("v1", 1, replicas, EAGER, now=0).stop == ("b", "c")
    assert set(plan_replicas("v1", 0, replicas, EAGER, now=0).stop) == {"a", "b", "c"}


def test_plan_ignores_terminating_replicas() -> None:
    replicas = [facts("a", "v1", R.TERMINATING), facts("b", "v1", R.READY)]
    assert plan_replicas("v1", 2, replicas, EAGER, now=0).create == 1


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "strategy"),
    [("25%", "25%", 4, (1, 1)), ("25%", "25%", 1, (1, 0)), (0, "25%", 1, (0, 1)), ("50%", 2, 3, (2, 2)),
     (0, 0, 5, (0, 1)), ("100%", "0%", 3, (3, 0))],
)
def test_resolve_strategy(surge: int | str, unavailable: int | str, desired: int, strategy: tuple[int, int]) -> None:
    assert resolve_strategy(surge, unavailable, desired) == Strategy(*strategy)


def test_rolling_update_with_surge_one_and_no_unavailability() -> None:
    replicas = [facts(f"o{i}", "v1", R.READY, i) for i in range(3)]
    plan = plan_replicas("v2", 3, replicas, Strategy(1, 0), now=0)
    assert (plan.create, plan.stop) == (1, ())
    replicas.append(facts("n0", "v2", R.READY, 10))
    assert plan_replicas("v2", 3, replicas, Strategy(1, 0), now=0) == Plan(create=1, stop=("o0",))


def test_rolling_update_without_surge_frees_a_slot_first() -> None:
    replicas = [facts(f"o{i}", "v1", R.READY, i) for i in range(3)]
    assert plan_replicas("v2", 3, replicas, Strategy(0, 1), now=0) == Plan(create=1, stop=("o0",))


states = st.sampled_from(list(ReplicaState))
strategies = st.builds(Strategy, st.integers(0, 3), st.integers(0, 3)).filter(
    lambda s: s.max_surge + s.max_unavailable > 0)


@given(st.lists(st.tuples(st.sampled_from(["v1", "v2"]), states), max_size=12), st.integers(0, 6), strategies)
def test_plan_properties(replicas: list[tuple[str, ReplicaState]], desired: int, strategy: Strategy) -> None:
    facts_list = [facts(f"r{i}", version, state, created=i) for i, (version, state) in enumerate(replicas)]
    plan = plan_replicas("v2", desired, facts_list, strategy, now=100)
    alive = [f for f in facts_list if f.state is not R.TERMINATING]
    stopped = set(plan.stop)
    remaining = [f for f in alive if f.id not in stopped]
    # never above desired + surge by creating
    if plan.create:
        assert len(remaining) + plan.create <= desired + strategy.max_surge
    # never below desired - unavailable ready replicas by stopping ready ones (unless the new version serves)
    ready_before = sum(f.state is R.READY for f in alive)
    ready_after = sum(f.state is R.READY for f in remaining)
    new_ready = sum(f.state is R.READY and f.version == "v2" for f in remaining)
    if ready_after < ready_before and new_ready < desired:
        assert ready_after >= desired - strategy.max_unavailable
    # the current version never exceeds desired, nothing is both stopped and restarted
    assert len([f for f in remaining if f.version == "v2"]) + plan.create <= max(desired, 0) or plan.create == 0
    assert not stopped & set(plan.restart)
    assert not stopped & {f.id for f in facts_list if f.state is R.TERMINATING}


@given(st.integers(0, 6), st.integers(0, 6), strategies)
def test_rollouts_converge(old_count: int, desired: int, strategy: Strategy) -> None:
    """Stopped replicas leave, created ones become ready a tick later: the API ends at desired new replicas."""
    replicas = {f"o{i}": facts(f"o{i}", "v1", R.READY, i) for i in range(old_count)}
    counter = 0
    for tick in range(50):
        for key, replica in list(replicas.items()):  # what was started last tick is ready now
            if replica.state is R.INITIALIZING:
                replicas[key] = facts(key, replica.version, R.READY, replica.created_at)
        plan = plan_replicas("v2", desired, list(replicas.values()), strategy, now=tick)
        for replica_id in plan.stop:
            del replicas[replica_id]
        for _ in range(plan.create):
            counter += 1
            replicas[f"n{counter}"] = facts(f"n{counter}", "v2", R.INITIALIZING, 100 + counter)
        assert len(replicas) <= max(old_count, desired + strategy.max_surge)
        if plan.empty and all(r.version == "v2" and r.state is R.READY for r in replicas.values()):
            break
    assert len(replicas) == desired
    assert all(r.version == "v2" and r.state is R.READY for r in replicas.values())


def view(state: ReplicaState, current: bool = True, failures: int = 0, unplaceable: bool = False) -> ReplicaView:
    return ReplicaView(state=state, current=current, failures=failures, unplaceable=unplaceable)


@pytest.mark.parametrize(
    ("replicas", "requested", "status"),
    [
        ([view(R.READY)], 1, APIStatus.LIVE),
        ([view(R.INITIALIZING)], 1, APIStatus.UPDATING),
        ([view(R.READY, current=False), view(R.INITIALIZING)], 1, APIStatus.UPDATING),
        ([view(R.INITIALIZING, failures=2)], 1, APIStatus.ERROR),
        ([view(R.READY, current=False), view(R.FAILED, failures=1)], 1, APIStatus.ERROR),
        ([view(R.KILLED_OOM, failures=1)], 1, APIStatus.ERROR_OOM),
        ([view(R.READY), view(R.FAILED, failures=1)], 2, APIStatus.ERROR),
        ([view(R.READY), view(R.READY, failures=3)], 2, APIStatus.LIVE),
    ],
)
def test_status(replicas: list[ReplicaView], requested: int, status: APIStatus) -> None:
    assert derive_status(replicas, requested).status is status


def test_status_counts() -> None:
    summary = derive_status([view(R.READY), view(R.READY, current=False), view(R.FAILED, failures=1)], 2)
    assert (summary.up_to_date, summary.stale, summary.failed) == (1, 1, 1)


def test_status_of_a_failed_rollout_and_of_missing_compute() -> None:
    serving_old = [view(R.READY, current=True)]
    assert derive_status(serving_old, 1, rollout_failed=True).status is APIStatus.ERROR
    assert derive_status([view(R.PENDING, unplaceable=True)], 1).status is APIStatus.COMPUTE_UNAVAILABLE
    assert derive_status([], 0).status is APIStatus.LIVE  # scaled to zero


CAPACITY = Capacity(cpu=2, mem=8 * 2**30, gpus=(0, 1))


@pytest.mark.parametrize(
    ("request_", "used", "expected"),
    [
        (Request(0.5, 0, 0), [], Placement(0.5, 0)),
        (Request(2.5, 0, 0), [], "needs 2.5 cpu, 2 of 2 free"),
        (Request(0.5, 0, 0), [Placement(1.8, 0)], "needs 0.5 cpu, 0.2 of 2 free"),
        (Request(0.1, 9 * 2**30, 0), [], "needs 9Gi memory, 8Gi free"),
        (Request(0.1, 0, 0.5), [Placement(0.1, 0, ((1, 0.25),))], Placement(0.1, 0, ((1, 0.5),))),  # best fit
        (Request(0.1, 0, 2), [], Placement(0.1, 0, ((0, 1.0), (1, 1.0)))),
        (Request(0.1, 0, 2), [Placement(0.1, 0, ((1, 0.25),))], "needs 2 GPU, not free (2 GPU(s) found)"),
        (Request(0.1, 0, 0.5), [Placement(0.1, 0, ((0, 0.75),)), Placement(0.1, 0, ((1, 0.6),))],
         "needs 0.5 GPU, not free (2 GPU(s) found)"),
    ],
)
def test_placement(request_: Request, used: list[Placement], expected: Placement | str) -> None:
    assert place(request_, CAPACITY, used) == expected


def test_no_gpu_on_the_machine() -> None:
    assert place(Request(0.1, 0, 1), Capacity(2, 2**30), []) == "needs 1 GPU, not free (no GPU found)"


@given(st.lists(st.tuples(st.floats(0.02, 1), st.sampled_from([0, 0.25, 0.5, 1, 2])), max_size=30))
def test_placements_never_overcommit(requests: list[tuple[float, float]]) -> None:
    used: list[Placement] = []
    for cpu, gpu in requests:
        result = place(Request(cpu, 0, gpu), CAPACITY, used)
        if isinstance(result, Placement):
            used.append(result)
    assert sum(p.cpu for p in used) <= CAPACITY.cpu + 1e-6
    assert all(share >= -1e-6 for share in free_gpu_shares(CAPACITY, used).values())


replica_views = st.builds(ReplicaView, states, st.booleans(), st.integers(0, 3), st.booleans())


@given(st.lists(replica_views, max_size=10), st.integers(0, 5), st.booleans())
def test_status_properties(views: list[ReplicaView], requested: int, rollout_failed: bool) -> None:
    summary = derive_status(views, requested, rollout_failed)
    ready_current = sum(v.current and v.state is R.READY for v in views)
    assert summary.up_to_date == ready_current
    if rollout_failed:  # a failed rollout is never reported as healthy
        assert summary.status in (APIStatus.ERROR, APIStatus.ERROR_OOM)
    elif ready_current >= requested:
        assert summary.status is APIStatus.LIVE
    else:
        assert summary.status is not APIStatus.LIVE
        crash_looping = any(v.current and v.failures and v.state is not R.READY for v in views)
        if crash_looping:  # Cortex issue 1680: never `updating` forever while replicas crash
            assert summary.status in (APIStatus.ERROR, APIStatus.ERROR_OOM)
