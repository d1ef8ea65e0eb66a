"""The request ledger: deltas per gateway incarnation, nested counters, history, exact across restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from berth.control.ledger import RequestLedger, Totals, delta
from berth.control.store import Store
from berth.observability.histogram import LATENCY_BOUNDS, Histogram
from berth.observability.stats import APIStats


def counters(requests: list[tuple[int, float]], refusals: dict[str, int] | None = None) -> dict[str, Any]:
    """What a gateway worker sends for one API after serving `requests` (status, seconds)."""
    stats = APIStats()
    for status, seconds in requests:
        stats.record(status, seconds)
    latency = Histogram.empty(LATENCY_BOUNDS)
    codes: dict[str, int] = {}
    for status, seconds in requests:
        latency.observe(seconds)
        codes[str(status)] = codes.get(str(status), 0) + 1
    return {"code_2xx": stats.code_2xx, "code_4xx": stats.code_4xx, "code_5xx": stats.code_5xx,
            "latency_sum": stats.latency_sum, "latency_count": stats.latency_count,
            "codes": codes, "latency": latency.as_json(), "refusals": dict(refusals or {})}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], Histogram | None]] = []

    def add_requests(self, api: str, counters_delta: dict[str, Any], latency: Histogram | None) -> None:
        self.calls.append((api, counters_delta, latency))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.open()
    return store


def test_nested_counters_become_deltas_per_incarnation(store: Store) -> None:
    recorder = Recorder()
    ledger = RequestLedger(store, recorder)
    first = [(200, 0.003), (200, 0.02), (503, 0.0005)]
    ledger.observe(0, "inc-a", {"iris": counters(first, {"no-ready-replica": 1})})
    more = [*first, (200, 0.2), (404, 0.001)]
    ledger.observe(0, "inc-a", {"iris": counters(more, {"no-ready-replica": 1})})
    totals = ledger.totals_of("iris")
    assert totals.codes == {"200": 3, "503": 1, "404": 1}
    assert totals.refusals == {"no-ready-replica": 1}
    assert totals.latency.count == 5
    assert totals.stats.latency_count == 5 and totals.stats.code_2xx == 3
    # the second delta holds only the two new requests
    api, flat, latency = recorder.calls[1]
    assert api == "iris" and flat["requests"] == 2 and flat["2XX"] == 1 and flat["4XX"] == 1
    assert latency is not None and latency.count == 2 and latency.sum == pytest.approx(0.201)


def test_a_new_gateway_process_counts_from_zero(store: Store) -> None:
    ledger = RequestLedger(store)
    ledger.observe(0, "inc-a", {"iris": counters([(200, 0.01)] * 4)})
    ledger.observe(0, "inc-b", {"iris": counters([(200, 0.01)])})  # restarted: 1 since it started
    totals = ledger.totals_of("iris")
    assert totals.codes == {"200": 5}
    assert totals.latency.count == 5


def test_a_re_created_route_whose_counters_went_back_counts_them_all(store: Store) -> None:
    ledger = RequestLedger(store)
    ledger.observe(0, "inc-a", {"iris": counters([(200, 0.01)] * 3, {"queue-full": 2})})
    ledger.observe(0, "inc-a", {"iris": counters([(500, 0.01)], {"queue-full": 1})})
    totals = ledger.totals_of("iris")
    assert totals.codes == {"200": 3, "500": 1}
    assert totals.refusals == {"queue-full": 3}
    assert totals.latency.count == 4


def test_totals_are_exact_across_daemon_restarts(store: Store) -> None:
    ledger = RequestLedger(store)
    ledger.observe(0, "inc-a", {"iris": counters([(200, 0.01)] * 2)})
    ledger.flush(["iris"])
    # a new daemon: the same gateway process reports its cumulative counters again, plus one request
    again = RequestLedger(store)
    again.load()
    again.observe(0, "inc-a", {"iris": counters([(200, 0.01)] * 2 + [(429, 0.001)])})
    totals = again.totals_of("iris")
    assert totals.codes == {"200": 2, "429": 1}
    assert totals.latency.count == 3
    assert again.stats("iris").as_dict()["requests"] == 3


def test_counters_without_nested_keys_still_count(store: Store) -> None:
    """A gateway from before the nested counters (during an upgrade) reports the flat ones only."""
    ledger = RequestLedger(store)
    flat = {"code_2xx": 2, "code_4xx": 0, "code_5xx": 1, "latency_sum": 0.5, "latency_count": 3}
    ledger.observe(0, "inc-a", {"iris": flat})
    assert ledger.stats("iris").code_5xx == 1
    assert ledger.totals_of("iris").codes == {}


def test_totals_round_trip_as_json() -> None:
    totals = Totals()
    totals.add(delta(counters([(200, 0.01), (503, 2.0)], {"no-ready-replica": 1}), {}))
    again = Totals.from_json(totals.as_json())
    assert again.as_json() == totals.as_json()
