import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.core import drift

counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=30)


@pytest.mark.parametrize(("reference", "recent", "expected"), [
    ([50, 50], [50, 50], 0.0),
    ([100, 100], [1, 1], 0.0),  # proportions, not counts, are compared
    ([75, 25], [25, 75], 0.5 * math.log(3) * 2),  # (0.5*ln3) + (0.5*ln3)
    ([10, 0], [0, 10], 2 * (1 - 1e-4) * math.log(1 / 1e-4)),  # empty buckets floored at epsilon
])
def test_psi_table(reference: list[int], recent: list[int], expected: float) -> None:
    assert drift.psi(reference, recent) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("value", "verdict"), [
    (0.0, "stable"), (0.0999, "stable"), (0.1, "shifting"), (0.2499, "shifting"), (0.25, "drifted"), (3.0, "drifted"),
])
def test_verdict_thresholds(value: float, verdict: str) -> None:
    assert drift.verdict(value) == verdict


def test_too_few_samples_on_either_side_is_not_enough_data() -> None:
    assert drift.assess([99, 0], [500, 500]).verdict == "not enough data"
    assert drift.assess([500, 500], [50, 49]).psi is None
    judged = drift.assess([60, 40], [60, 40])
    assert (judged.psi, judged.verdict, judged.reference_samples, judged.recent_samples) == (0.0, "stable", 100, 100)


def test_counts_align_labels_a_label_missing_on_one_side_is_an_empty_bucket() -> None:
    assert drift.psi_of_counts({"cat": 50, "dog": 50}, {"dog": 50, "cat": 50}) == 0.0
    assert drift.psi_of_counts({"cat": 100}, {"cat": 50, "bird": 50}) == pytest.approx(
        drift.psi([100, 0], [50, 50]))
    assert drift.assess_counts({"a": 900, "b": 100}, {"a": 500, "b": 500}).verdict == "drifted"


def test_buckets_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="different buckets"):
        drift.psi([1, 2], [1, 2, 3])


@given(counts, st.data())
def test_psi_is_non_negative_symmetric_and_zero_on_identical(reference: list[int], data: st.DataObject) -> None:
    recent = data.draw(st.lists(st.integers(0, 10_000), min_size=len(reference), max_size=len(reference)))
    value = drift.psi(reference, recent)
    assert value >= -1e-12
    assert value == pytest.approx(drift.psi(recent, reference), abs=1e-9)
    assert drift.psi(reference, reference) == pytest.approx(0.0, abs=1e-12)


@given(counts, st.integers(min_value=1, max_value=50))
def test_scaling_counts_does_not_change_psi(reference: list[int], factor: int) -> None:
    assert drift.psi(reference, [c * factor for c in reference]) == pytest.approx(0.0, abs=1e-12)


def test_many_buckets_need_more_samples_before_a_verdict() -> None:
    ten = [20] * 10  # 200 predictions over ten classes
    judged = drift.assess(ten, ten)
    assert (judged.verdict, judged.required) == ("not enough data", 360)
    assert drift.assess([40] * 10, [40] * 10).verdict == "stable"
    assert drift.required_samples([5, 0, 0], [0, 0, 7]) == 100  # two buckets in use: the floor


def test_two_samples_of_one_distribution_read_as_stable_at_the_required_size() -> None:
    import random

    rng = random.Random(7)
    weights = [0.3, 0.2, 0.1, 0.1, 0.08, 0.07, 0.06, 0.05, 0.03, 0.01]
    labels = list(range(len(weights)))
    required = drift.NOISE_FACTOR * (len(weights) - 1)
    values = []
    for _ in range(200):
        samples = [rng.choices(labels, weights, k=required) for _ in range(2)]
        counts = [[sample.count(label) for label in labels] for sample in samples]
        values.append(drift.psi(*counts))
    assert sum(values) / len(values) < 0.06
    assert sum(value >= drift.STABLE_BELOW for value in values) / len(values) < 0.1
