"""Cortex's autoscaler, reproduced: documented cases as tables, the guarantees as properties."""

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from berth.config.schema import Autoscaling
from berth.core.autoscaler import Recommendation, average_in_flight, decide, recommend

NOW = 10_000.0
LONG_AGO = 0.0  # the autoscaler started long before: no start-up guard


def spec(**fields: object) -> Autoscaling:
    base: dict[str, object] = {"target_replica_concurrency": 1.0, "upscale_stabilization_period": 0,
                               "downscale_stabilization_period": 0}
    return Autoscaling.model_validate({**base, **fields})


def request(avg: float, current: int, history: list[Recommendation] | None = None, started: float = LONG_AGO,
            **fields: object) -> int:
    decision, _ = decide([(NOW, avg)], history or [], current, spec(**fields), NOW, started)
    assert decision is not None
    return decision.request


@pytest.mark.parametrize(
    ("avg", "current", "fields", "expected"),
    [
        (8, 5, {"target_replica_concurrency": 1.6}, 5),  # Cortex docs: 8 in flight / 1.6 = 5 replicas
        (8, 4, {"target_replica_concurrency": 1.6}, 5),
        (10, 1, {}, 2),  # a step allows +1 at least ...
        (10, 4, {}, 6),  # ... or x1.5, rounded up
        (100, 10, {}, 15),
        (0, 10, {}, 8),  # down: at most x0.75 (ceil), or -1
        (0, 2, {}, 1),
        (0, 1, {}, 1),  # min_replicas
        (0, 1, {"min_replicas": 0}, 0),  # scale to zero
        (3, 0, {"min_replicas": 0}, 1),  # wake from zero one step at a time
        (9.6, 10, {}, 10),  # inside the 5% downscale tolerance
        (8.9, 10, {}, 9),  # (ceil 9.4 would be 10 anyway)
        (10.4, 10, {}, 10),  # inside the 5% upscale tolerance
        (10.6, 10, {}, 11),
        (50, 2, {"max_replicas": 3}, 3),
        (0, 9, {"min_replicas": 8}, 8),
        (5, 5, {"target_replica_concurrency": 0.5}, 8),  # overprovisioning: 10 wanted, x1.5 per step
    ],
)
def test_cortex_recommendations(avg: float, current: int, fields: dict[str, object], expected: int) -> None:
    assert request(avg, current, **fields) == expected


def test_intermediate_values_are_reported() -> None:
    decision, history = decide([(NOW - 5, 4.0), (NOW, 6.0)], [], 2, spec(target_replica_concurrency=2), NOW, 0)
    assert decision is not None
    assert decision.as_dict() | {} == {
        "at": NOW, "avg_in_flight": 5.0, "target_replica_concurrency": 2.0, "raw_recommendation": 2.5,
        "current_replicas": 2, "downscale_factor_floor": 1, "upscale_factor_ceil": 3, "recommendation": 3,
        "downscale_stabilization_floor": None, "upscale_stabilization_ceil": 3, "request": 3,
    }
    assert history == [Recommendation(NOW, 3)]


def test_average_covers_the_window_only() -> None:
    samples = [(NOW - 70, 100.0), (NOW - 50, 2.0), (NOW - 10, 4.0), (NOW, 6.0)]
    assert average_in_flight(samples, 60, NOW) == 4.0
    assert average_in_flight([], 60, NOW) is None


def test_no_samples_no_decision() -> None:
    decision, history = decide([], [Recommendation(NOW - 5, 3)], 3, spec(), NOW, 0)
    assert decision is None and history == [Recommendation(NOW - 5, 3)]


def test_downscale_waits_for_the_stabilization_period() -> None:
    history = [Recommendation(NOW - 100, 5)]
    assert request(0, 5, history, downscale_stabilization_period=300) == 5
    assert request(0, 5, [Recommendation(NOW - 301, 5)], downscale_stabilization_period=300) == 4


def test_upscale_is_capped_by_recent_lower_recommendations() -> None:
    history = [Recommendation(NOW - 30, 2)]
    assert request(10, 2, history, upscale_stabilization_period=60) == 2
    assert request(10, 2, [Recommendation(NOW - 61, 2)], upscale_stabilization_period=60) == 3


def test_start_up_guard_keeps_the_current_count() -> None:
    assert request(0, 5, started=NOW - 10, downscale_stabilization_period=300) == 5
    assert request(50, 5, started=NOW - 10, upscale_stabilization_period=60) == 5


def test_history_is_trimmed_to_the_longest_period() -> None:
    old, recent = Recommendation(NOW - 400, 9), Recommendation(NOW - 100, 3)
    _, history = decide([(NOW, 3.0)], [old, recent], 3, spec(downscale_stabilization_period=300), NOW, 0)
    assert history == [recent, Recommendation(NOW, 3)]


specs = st.builds(
    lambda low, span, target, down, up, dtol, utol, dstab, ustab: Autoscaling(
        min_replicas=low, max_replicas=low + span + 1, target_replica_concurrency=target,
        max_downscale_factor=down, max_upscale_factor=up, downscale_tolerance=dtol, upscale_tolerance=utol,
        downscale_stabilization_period=dstab, upscale_stabilization_period=ustab),
    st.integers(0, 5), st.integers(0, 30), st.floats(0.1, 50), st.floats(0, 0.99), st.floats(1.01, 4),
    st.floats(0, 0.5), st.floats(0, 1), st.sampled_from([0.0, 30.0, 300.0]), st.sampled_from([0.0, 60.0]),
)
histories = st.lists(st.builds(Recommendation, st.floats(NOW - 600, NOW), st.integers(0, 40)), max_size=8)


@given(specs, st.floats(0, 2000), st.integers(0, 40), histories, st.floats(0, NOW))
def test_request_stays_within_min_and_max(spec_: Autoscaling, avg: float, current: int,
                                          history: list[Recommendation], started: float) -> None:
    current = min(max(current, spec_.min_replicas), spec_.max_replicas)
    decision, _ = decide([(NOW, avg)], history, current, spec_, NOW, started)
    assert decision is not None
    assert spec_.min_replicas <= decision.request <= spec_.max_replicas


@given(specs, st.floats(0, 1), st.integers(1, 40), histories)
def test_no_move_inside_the_tolerance_band(spec_: Autoscaling, position: float, current: int,
                                           history: list[Recommendation]) -> None:
    assume(spec_.min_replicas <= current <= spec_.max_replicas)
    low, high = current * (1 - spec_.downscale_tolerance), current * (1 + spec_.upscale_tolerance)
    raw = low + (high - low) * position
    assume(low < raw < high)
    target = spec_.target_replica_concurrency or 1.0
    decision, _ = decide([(NOW, raw * target)], history, current, spec_, NOW, 0)
    assert decision is not None
    assume(math.isclose(decision.raw_recommendation, raw, rel_tol=1e-9))
    assume(low < decision.raw_recommendation < high)
    assert decision.request == current


@given(specs, st.floats(0, 2000), st.integers(0, 40), histories)
def test_no_move_against_a_stabilization_bound(spec_: Autoscaling, avg: float, current: int,
                                               history: list[Recommendation]) -> None:
    current = min(max(current, spec_.min_replicas), spec_.max_replicas)
    decision, kept = decide([(NOW, avg)], history, current, spec_, NOW, 0)
    assert decision is not None
    if decision.request < current:
        window = [r.replicas for r in kept if NOW - r.at <= spec_.downscale_stabilization_period]
        assert decision.request >= min(max(window), current)
    if decision.request > current:
        window = [r.replicas for r in kept if NOW - r.at <= spec_.upscale_stabilization_period]
        assert decision.request <= max(min(window), current)


def test_recommend_is_the_unstabilized_part() -> None:
    assert recommend(8, 5, spec(target_replica_concurrency=1.6)) == (5.0, 4, 8, 5)
