"""History buckets with a manual clock and a real SQLite store."""

import sqlite3
from pathlib import Path

import pytest

from berth.control import history
from berth.control.history import HOUR, MINUTE, HistoryRecorder
from berth.control.store import APIRecord, Store
from berth.observability.histogram import LATENCY_BOUNDS, Histogram
from berth.runtime.contract import PREDICTION_VALUE_BOUNDS

T0 = 1_800_000_000.0  # a whole hour


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(tmp_path / "state.db")
    opened.open()
    return opened


def latencies(*values: float) -> Histogram:
    histogram = Histogram.empty(LATENCY_BOUNDS)
    for value in values:
        histogram.observe(value)
    return histogram


def requests(ok: int = 0, client: int = 0, server: int = 0, seconds: float = 0.0) -> dict[str, float]:
    return {"2XX": ok, "4XX": client, "5XX": server, "requests": ok + client + server, "seconds": seconds}


def classes(**counts: int) -> dict[str, object]:
    return {"model_type": "classification", "key": None, "classes": counts, "values": None, "wrong_type": 0}


def values(*observed: float, wrong: int = 0) -> dict[str, object]:
    histogram = Histogram.empty(PREDICTION_VALUE_BOUNDS)
    for value in observed:
        histogram.observe(value)
    data = {**histogram.as_json(), "min": min(observed), "max": max(observed)}
    return {"model_type": "regression", "key": "score", "classes": {}, "values": data, "wrong_type": wrong}


def test_nothing_is_stored_before_flush_and_flushes_add_up_within_a_minute(store: Store) -> None:
    clock = Clock(T0 + 5)
    recorder = HistoryRecorder(store, clock)
    recorder.add_requests("a", requests(ok=2, seconds=0.3), latencies(0.1, 0.2))
    assert history.request_series(store, "a", T0 - HOUR, T0 + HOUR) == []
    recorder.flush(clock.now)
    clock.now = T0 + 30
    recorder.add_requests("a", requests(server=1, seconds=1.0), latencies(1.0))
    recorder.flush(clock.now)
    [row] = history.request_series(store, "a", T0, T0 + 5 * MINUTE)
    assert (row.start, row.seconds, row.code_2xx, row.code_5xx, row.count) == (T0, MINUTE, 2, 1, 3)
    [hour] = history.request_series(store, "a", T0 - HOUR, T0 + HOUR)  # whole hours: the hour rows
    assert (hour.start, hour.seconds, hour.count, hour.latency.count) == (T0, HOUR, 3, 3)
    assert row.seconds_sum == pytest.approx(1.3)
    assert row.latency.count == 3


def test_the_ledger_field_names_are_accepted_too(store: Store) -> None:
    recorder = HistoryRecorder(store, Clock())
    recorder.add_requests("a", {"code_2xx": 1, "code_4xx": 1, "latency_count": 2, "latency_sum": 0.5}, None)
    recorder.flush(T0)
    assert history.request_totals(store, "a", T0, T0 + MINUTE)["4XX"] == 1


def test_rows_survive_a_restart_and_a_new_recorder_adds_to_the_same_minute(store: Store, tmp_path: Path) -> None:
    recorder = HistoryRecorder(store, Clock(T0 + 1))
    recorder.add_requests("a", requests(ok=1, seconds=0.1), latencies(0.1))
    recorder.add_predictions("a", classes(cat=3))
    recorder.flush(T0 + 1)
    store.close()
    reopened = Store(tmp_path / "state.db")
    reopened.open()
    again = HistoryRecorder(reopened, Clock(T0 + 50))
    again.add_requests("a", requests(ok=4, seconds=0.4), latencies(0.1, 0.1, 0.1, 0.1))
    again.add_predictions("a", classes(cat=1, dog=2))
    again.flush(T0 + 50)
    totals = history.request_totals(reopened, "a", T0, T0 + MINUTE)
    assert (totals["2XX"], totals["requests"]) == (5, 5)
    assert totals["avg_request_seconds"] == pytest.approx(0.1)
    summary = history.prediction_summary(reopened, "a", T0, T0 + MINUTE)
    assert summary is not None and summary["classes"] == {"cat": 4, "dog": 2} and summary["count"] == 6


def test_each_minute_is_its_own_bucket_and_samples_average_in_flight(store: Store) -> None:
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock)
    for second, in_flight in ((0, 2.0), (20, 4.0), (61, 7.0)):
        clock.now = T0 + second
        recorder.sample("a", ready=1 if second < 60 else 2, desired=2, in_flight=in_flight)
    recorder.flush(clock.now)
    clock.now = T0 + 62
    recorder.sample("a", ready=2, desired=2, in_flight=1.0)
    recorder.flush(clock.now)
    first, second = history.request_series(store, "a", T0, T0 + 2 * MINUTE)
    assert (first.start, first.in_flight, first.replicas_ready) == (T0, 3.0, 1)
    assert (second.start, second.in_flight, second.samples, second.replicas_ready) == (T0 + MINUTE, 4.0, 2, 2)


def test_totals_cover_only_buckets_that_overlap_the_window(store: Store) -> None:
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock)
    for minute in range(10):
        clock.now = T0 + minute * MINUTE
        recorder.add_requests("a", requests(ok=1, client=minute % 2, seconds=0.01), latencies(0.01))
        recorder.add_requests("b", requests(ok=100), None)
    recorder.flush(clock.now)
    totals = history.request_totals(store, "a", T0 + 5 * MINUTE, T0 + 10 * MINUTE)
    assert (totals["2XX"], totals["4XX"], totals["5XX"], totals["requests"]) == (5, 3, 0, 8)
    assert totals["p50"] is not None and totals["p50"] <= 0.01
    empty = history.request_totals(store, "a", T0 + HOUR, T0 + 2 * HOUR)
    assert (empty["requests"], empty["avg_request_seconds"], empty["p99"]) == (0, None, None)


def test_hours_serve_whole_hours_fold_drops_minutes_older_than_a_day_and_hours_after_two_weeks(
        store: Store) -> None:
    deploy(store, T0)
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock)
    for minute in (0, 1, 59, 60, 61):
        clock.now = T0 + minute * MINUTE + 1
        recorder.add_requests("a", requests(ok=1, seconds=0.5), latencies(0.5))
        recorder.add_predictions("a", classes(cat=1))
    recorder.flush(clock.now)

    def series(since: float, until: float) -> list[tuple[float, float, int]]:
        return [(r.start, r.seconds, r.count) for r in history.request_series(store, "a", since, until)]

    hours = [(T0, HOUR, 3), (T0 + HOUR, HOUR, 2)]
    assert series(T0, T0 + 3 * HOUR) == hours
    assert series(T0 + 30 * MINUTE, T0 + 90 * MINUTE) == [(T0 + 59 * MINUTE, MINUTE, 1), (T0 + HOUR, MINUTE, 1),
                                                          (T0 + HOUR + MINUTE, MINUTE, 1)]
    before = history.request_totals(store, "a", T0, T0 + 3 * HOUR)
    recorder.fold(T0 + 25 * HOUR)  # the first hour's minutes are older than a day
    assert series(T0, T0 + 3 * HOUR) == hours
    # The first hour lost its minutes: its part of the window is its whole hour row.
    assert series(T0 + 30 * MINUTE, T0 + 90 * MINUTE) == [(T0, HOUR, 3), (T0 + HOUR, MINUTE, 1),
                                                          (T0 + HOUR + MINUTE, MINUTE, 1)]
    recorder.fold(T0 + 26 * HOUR)  # the second hour's too; folding again changes nothing
    recorder.fold(T0 + 26 * HOUR)
    assert series(T0 + 30 * MINUTE, T0 + 90 * MINUTE) == hours
    after = history.request_totals(store, "a", T0, T0 + 3 * HOUR)
    assert {k: after[k] for k in ("2XX", "requests", "avg_request_seconds", "p50")} == \
        {k: before[k] for k in ("2XX", "requests", "avg_request_seconds", "p50")}
    summary = history.prediction_summary(store, "a", T0, T0 + 3 * HOUR)
    assert summary is not None and summary["classes"] == {"cat": 5}
    recorder.fold(T0 + 14 * 24 * HOUR + 30 * MINUTE)
    assert [r.start for r in history.request_series(store, "a", T0, T0 + 3 * HOUR)] == [T0 + HOUR]
    recorder.fold(T0 + 15 * 24 * HOUR)
    assert history.request_series(store, "a", 0, T0 * 2) == []
    assert history.prediction_summary(store, "a", 0, T0 * 2) is None


def test_a_window_counts_each_request_once_whatever_its_edges(store: Store) -> None:
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock)
    for minute in range(0, 5 * 60, 7):
        clock.now = T0 + minute * MINUTE + 3
        recorder.add_requests("a", requests(ok=1), None)
        recorder.add_predictions("a", classes(cat=1))
    recorder.flush(clock.now)
    minutes = [m for m in range(0, 5 * 60, 7)]
    for since, until in ((0, 300), (13, 250), (60, 120), (59, 61), (7, 8), (100, 100.5), (0, 60), (61, 299)):
        expected = sum(1 for m in minutes if since <= m < until or (m < since < m + 1))
        totals = history.request_totals(store, "a", T0 + since * MINUTE, T0 + until * MINUTE)
        summary = history.prediction_summary(store, "a", T0 + since * MINUTE, T0 + until * MINUTE)
        assert totals["requests"] == expected, (since, until)
        assert (summary["count"] if summary else 0) == expected, (since, until)


def test_regression_summary_has_min_max_average_and_histogram(store: Store) -> None:
    recorder = HistoryRecorder(store, Clock(T0))
    recorder.add_predictions("a", values(1.0, 3.0))
    recorder.add_predictions("a", values(-2.0, 10.0, wrong=1))
    recorder.flush(T0)
    summary = history.prediction_summary(store, "a", T0, T0 + MINUTE)
    assert summary is not None
    assert (summary["model_type"], summary["min"], summary["max"], summary["count"], summary["wrong_type"]) == \
        ("regression", -2.0, 10.0, 4, 1)
    assert summary["avg"] == pytest.approx(3.0)
    assert sum(summary["histogram"]["counts"]) == 4


def deploy(store: Store, at: float) -> None:
    store.put_api(APIRecord(name="a", endpoint="/a", spec={}, version=f"v{at}", snapshot="s", spec_file="f",
                            created_at=at, updated_at=at, requested=1))


def test_drift_against_the_first_day_after_the_deploy(store: Store) -> None:
    deploy(store, T0)
    clock = Clock(T0)
    recorder = HistoryRecorder(store, clock)
    recorder.add_predictions("a", classes(cat=150, dog=50))
    recorder.flush(T0)
    filling = history.drift(store, "a", T0 + 10 * MINUTE)
    assert filling is not None and filling["verdict"] == "not enough data" and filling["reference"]["filling"]
    clock.now = T0 + 30 * HOUR
    recorder.add_predictions("a", classes(cat=140, dog=60))
    recorder.flush(clock.now)
    judged = history.drift(store, "a", clock.now + 1)
    assert judged is not None and judged["verdict"] == "stable" and judged["psi"] < 0.1
    assert judged["baseline"] == [T0, T0 + 24 * HOUR] and judged["reference"]["source"] == "deploy"
    assert judged["samples"] == {"baseline": 200, "window": 200, "required": 100}


def test_a_pinned_baseline_replaces_the_deploy_one(store: Store) -> None:
    deploy(store, T0)
    clock = Clock(T0 + 2 * HOUR)
    recorder = HistoryRecorder(store, clock)
    recorder.add_predictions("a", classes(cat=200))
    recorder.flush(clock.now)
    clock.now = T0 + 5 * HOUR
    recorder.add_predictions("a", classes(dog=200))
    recorder.flush(clock.now)
    store.pin_baseline("a", T0 + 2 * HOUR, T0 + 3 * HOUR, at=clock.now)
    judged = history.drift(store, "a", clock.now + 1)
    assert judged is not None and judged["verdict"] == "drifted" and judged["reference"]["source"] == "pinned"
    assert judged["baseline"] == [T0 + 2 * HOUR, T0 + 3 * HOUR]


def test_no_drift_without_a_reference_and_not_enough_data_without_predictions(store: Store) -> None:
    assert history.drift(store, "a", T0) is None
    deploy(store, T0)
    empty = history.drift(store, "a", T0 + 2 * HOUR)
    assert empty is not None and (empty["psi"], empty["verdict"]) == (None, "not enough data")
    assert empty["samples"] == {"baseline": 0, "window": 0, "required": 100}


def test_deleting_an_api_forgets_its_history_and_baseline(store: Store) -> None:
    deploy(store, T0)
    recorder = HistoryRecorder(store, Clock(T0))
    recorder.add_requests("a", requests(ok=1), None)
    recorder.add_predictions("a", classes(cat=1))
    recorder.flush(T0)
    store.pin_baseline("a", T0, T0 + 1, at=T0)
    store.delete_api("a")
    assert history.request_series(store, "a", 0, T0 * 2) == []
    assert history.prediction_summary(store, "a", 0, T0 * 2) is None and store.baseline("a") is None


def test_an_existing_database_gets_the_history_tables(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db")
    db.execute("CREATE TABLE apis (name TEXT PRIMARY KEY)")
    db.close()
    store = Store(tmp_path / "old.db")
    store.open()
    tables = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"request_history", "prediction_history", "monitoring_baselines"} <= tables


def test_rows_flushed_after_the_api_was_deleted_are_dropped_by_the_next_fold(store: Store) -> None:
    deploy(store, T0)
    recorder = HistoryRecorder(store, Clock(T0))
    recorder.add_requests("a", requests(ok=1), None)
    store.delete_api("a")
    recorder.add_predictions("a", classes(cat=1))
    recorder.flush(T0)  # the buffered minute of a deleted API
    recorder.fold(T0 + MINUTE)
    assert history.request_series(store, "a", 0, T0 * 2) == []
    assert history.prediction_summary(store, "a", 0, T0 * 2) is None
