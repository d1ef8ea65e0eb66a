"""The control plane's routing table and request ledger: generations, drains by generation, exact counts."""

from pathlib import Path

import pytest

from berth.control.ledger import RequestLedger
from berth.control.routing import Routing
from berth.control.store import Store
from berth.gateway.control import RouteApplier, RouteEntry, read_table, write_table
from berth.gateway.routes import RoutingTable, Target

A, B = Target("r1", "/s/r1.sock"), Target("r2", "/s/r2.sock")


def configured(workers: int = 1, generation: int = 0) -> Routing:
    routing = Routing(workers, generation)
    routing.configure("api", "/api", 10, holds=True, hold_limit=5, hold_timeout=3.0, timeout=600.0)
    return routing


def test_every_change_is_a_new_generation_and_no_change_is_none() -> None:
    routing = configured(generation=41)
    assert routing.generation == 42
    routing.set_targets("api", [A, B])
    assert routing.generation == 43
    routing.set_targets("api", [A, B, A])  # duplicates collapse: the same table
    routing.configure("api", "/api", 10, holds=True, hold_limit=5, hold_timeout=3.0, timeout=600.0)
    assert routing.generation == 43
    assert routing.targets("api") == (A, B)


def test_a_replica_leaving_is_stamped_with_the_generation_that_removed_it() -> None:
    routing = configured()
    routing.set_targets("api", [A, B])
    routing.set_targets("api", [B])
    assert routing.left_at == {"r1": routing.generation}
    routing.remove("api")
    assert routing.left_at["r2"] == routing.generation
    routing.forget("r1")
    assert "r1" not in routing.left_at


@pytest.mark.parametrize(("workers", "limit", "hold"), [(1, 10, 5), (2, 5, 3), (3, 4, 2), (16, 1, 1)])
def test_per_api_limits_are_shared_out_between_gateway_workers(workers: int, limit: int, hold: int) -> None:
    entry = configured(workers).entries["api"]
    assert (entry.max_replica_concurrency, entry.hold_limit) == (limit, hold)


def test_the_table_round_trips_through_the_file_and_the_gateway(tmp_path: Path) -> None:
    routing = configured()
    routing.set_targets("api", [A, B])
    write_table(tmp_path / "routes.json", routing.message())
    saved = read_table(tmp_path / "routes.json")
    assert saved is not None
    table = RoutingTable()
    applier = RouteApplier(table)
    applier.apply(saved)
    route = table.by_api["api"]
    assert [u.target for u in route.upstreams] == [A, B]
    assert (route.hold_limit, route.max_replica_concurrency, applier.generation) == (5, 10, routing.generation)
    assert RouteEntry.from_json(routing.entries["api"].as_json()) == routing.entries["api"]


def test_the_gateway_reports_retired_upstreams_until_they_hold_nothing() -> None:
    table = RoutingTable()
    applier = RouteApplier(table)
    routing = configured()
    routing.set_targets("api", [A, B])
    applier.apply(routing.message())
    table.by_api["api"].upstreams[0].in_flight = 2
    routing.set_targets("api", [B])
    applier.apply(routing.message())
    stats = applier.stats("inc")
    assert stats["replicas"] == {"r1": 2, "r2": 0} and stats["generation"] == routing.generation
    applier.retired[0].in_flight = 0
    assert applier.stats("inc")["replicas"] == {"r2": 0}
    routing.remove("api")
    applier.apply(routing.message())
    assert table.by_api == {} and applier.stats("inc")["apis"] == {}


def counters(ok: int, seconds: float = 0.0, errors: int = 0) -> dict[str, float]:
    return {"code_2xx": ok, "code_4xx": 0, "code_5xx": errors, "latency_sum": seconds, "latency_count": ok + errors}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.open()
    return store


def test_the_ledger_counts_deltas_once_across_gateway_and_daemon_restarts(store: Store) -> None:
    ledger = RequestLedger(store)
    ledger.observe(0, "gw-a", {"api": counters(5)})
    ledger.observe(0, "gw-a", {"api": counters(8)})  # cumulative: 3 more
    ledger.observe(1, "gw-b", {"api": counters(2)})  # a second worker
    ledger.flush(["api"])
    # The daemon restarts: a new ledger on the same store sees the same gateway counters again.
    again = RequestLedger(store)
    again.load()
    again.observe(0, "gw-a", {"api": counters(8)})
    assert again.stats("api").code_2xx == 10
    # Gateway 0 restarts: its counters start from zero in a new incarnation.
    again.observe(0, "gw-c", {"api": counters(1, errors=1)})
    assert (again.stats("api").code_2xx, again.stats("api").code_5xx) == (11, 1)
    # A route re-created inside one gateway process counts from zero too.
    again.observe(1, "gw-b", {"api": counters(1)})
    assert again.stats("api").code_2xx == 12


def test_the_ledger_drops_apis_that_are_gone(store: Store) -> None:
    ledger = RequestLedger(store)
    ledger.observe(0, "gw", {"old": counters(3), "api": counters(1)})
    ledger.flush(["api"])
    reloaded = RequestLedger(store)
    reloaded.load()
    assert reloaded.stats("old").code_2xx == 0 and reloaded.stats("api").code_2xx == 1


@pytest.mark.parametrize("message", [
    {"op": "routes", "generation": "abc", "routes": []},
    {"op": "routes", "generation": 9, "routes": {}},
    {"op": "routes", "generation": 9, "routes": [1]},
    {"op": "routes", "generation": 9, "routes": [{"api": "x", "endpoint": "/x", "max_replica_concurrency": "2",
                                                   "holds": False, "hold_limit": 1, "hold_timeout": 1.0,
                                                   "timeout": 1.0, "targets": []}]},
    {"op": "routes", "generation": 9, "routes": [{"api": "x", "endpoint": "/x", "max_replica_concurrency": 2,
                                                   "holds": False, "hold_limit": 1, "hold_timeout": 1.0,
                                                   "timeout": "soon", "targets": []}]},
    {"op": "routes", "generation": 9, "routes": [{"api": "x", "endpoint": "/x", "max_replica_concurrency": 2,
                                                   "holds": False, "hold_limit": 1, "hold_timeout": 1.0,
                                                   "timeout": 1.0, "targets": [["r1"]]}]},
])
def test_a_malformed_table_is_refused_whole_and_changes_nothing(message: dict[str, object]) -> None:
    table = RoutingTable()
    applier = RouteApplier(table)
    routing = configured()
    routing.set_targets("api", [A])
    applier.apply(routing.message())
    with pytest.raises(ValueError):
        applier.apply(message)
    assert list(table.by_api) == ["api"] and applier.generation == routing.generation
    assert [u.target for u in table.by_api["api"].upstreams] == [A]


def test_the_request_log_sample_rate_travels_to_the_gateway_route() -> None:
    routing = Routing()
    routing.configure("api", "/api", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0,
                      request_log_sample_rate=0.25)
    table = RoutingTable()
    RouteApplier(table).apply(routing.message())
    assert table.by_api["api"].log_rate == 0.25
    before = routing.generation
    routing.configure("api", "/api", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0,
                      request_log_sample_rate=0.0)
    assert routing.generation == before + 1  # a changed rate is a new table


def test_a_route_without_a_sample_rate_logs_every_request_and_a_bad_rate_is_refused() -> None:
    saved = {"api": "api", "endpoint": "/api", "max_replica_concurrency": 1, "holds": False, "hold_limit": 0,
             "hold_timeout": 0.0, "timeout": 1.0, "targets": []}  # a table saved by an older daemon
    assert RouteEntry.from_json(saved).request_log_sample_rate == 1.0
    for bad in (1.5, -0.1, "all"):
        with pytest.raises(ValueError, match="request_log_sample_rate"):
            RouteEntry.from_json({**saved, "request_log_sample_rate": bad})
