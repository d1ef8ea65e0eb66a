"""Pure decisions: balancing, backoff, reconcile planning, status. Tables and properties."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.core.backoff import HEALTHY_RUN, failures_after_exit, restart_delay
from berth.core.balancing import admits, least_in_flight
from berth.core.reconcile import ReplicaFacts, plan_replicas
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


def test_plan_creates_missing_replicas() -> None:
    plan = plan_replicas("v1", 3, [facts("a", "v1", R.READY)], now=0)
    assert (plan.create, plan.stop, plan.restart) == (2, (), ())


def test_plan_keeps_old_version_serving_until_new_one_is_ready() -> None:
    replicas = [facts("old", "v1", R.READY), facts("new", "v2", R.INITIALIZING)]
    assert plan_replicas("v2", 1, replicas, now=0).stop == ()
    replicas[1] = facts("new", "v2", R.READY)
    assert plan_replicas("v2", 1, replicas, now=0).stop == ("old",)


def test_plan_keeps_old_version_while_new_one_crash_loops() -> None:
    replicas = [facts("old", "v1", R.READY), facts("new", "v2", R.FAILED, next_start=10)]
    plan = plan_replicas("v2", 1, replicas, now=5)
    assert plan.empty
    assert plan_replicas("v2", 1, replicas, now=10).restart == ("new",)


def test_plan_sheds_surplus_replicas_that_do_not_serve_first() -> None:
    replicas = [facts("a", "v1", R.READY, 1), facts("b", "v1", R.INITIALIZING, 2), facts("c", "v1", R.READY, 3)]
    assert plan_replicas("v1", 2, replicas, now=0).stop == ("b",)
    assert plan_replicas("v1", 1, replicas, now=0).stop == ("b", "c")


def test_plan_ignores_terminating_replicas() -> None:
    replicas = [facts("a", "v1", R.TERMINATING), facts("b", "v1", R.READY)]
    assert plan_replicas("v1", 2, replicas, now=0).create == 1


states = st.sampled_from(list(ReplicaState))


@given(st.lists(st.tuples(st.sampled_from(["v1", "v2"]), states), max_size=12), st.integers(0, 6))
def test_plan_properties(replicas: list[tuple[str, ReplicaState]], desired: int) -> None:
    facts_list = [facts(f"r{i}", version, state, created=i) for i, (version, state) in enumerate(replicas)]
    plan = plan_replicas("v2", desired, facts_list, now=100)
    alive_current = [f for f in facts_list if f.version == "v2" and f.state is not R.TERMINATING]
    stopped = set(plan.stop)
    # the current version ends at exactly `desired` replicas
    assert len([f for f in alive_current if f.id not in stopped]) + plan.create == desired
    # ready old replicas are only stopped once the new version serves in full
    ready_current = sum(f.state is R.READY for f in alive_current)
    old_ready = {f.id for f in facts_list if f.version == "v1" and f.state is R.READY}
    if ready_current < desired:
        assert not stopped & old_ready
    # nothing is both stopped and restarted, and terminating replicas are left alone
    assert not stopped & set(plan.restart)
    assert not stopped & {f.id for f in facts_list if f.state is R.TERMINATING}


def view(state: ReplicaState, current: bool = True, failures: int = 0) -> ReplicaView:
    return ReplicaView(state=state, current=current, failures=failures)


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
