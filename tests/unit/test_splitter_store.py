"""The control plane's splitters: stored beside the APIs, checked against them, routed, reported."""

from pathlib import Path

import pytest

from berth.config.splitter import TrafficSplitter
from berth.control.keystore import KeyRecord, KeyStore
from berth.control.routing import Routing
from berth.control.splitters import Splitters, add_counters, summary
from berth.control.store import Store
from berth.errors import Conflict, NotFound


def splitter(name: str = "sp", endpoint: str | None = None, **apis: int) -> TrafficSplitter:
    backends = [{"name": api, "weight": weight} for api, weight in (apis or {"a": 90, "b": 10}).items()]
    networking = {"endpoint": endpoint} if endpoint else {}
    return TrafficSplitter.model_validate({"name": name, "kind": "TrafficSplitter", "apis": backends,
                                           "networking": networking})


@pytest.fixture()
def splitters(tmp_path: Path) -> Splitters:
    store = Store(tmp_path / "berth.db")
    store.open()
    return Splitters(store, Routing())


def test_put_routes_and_reloads_after_a_restart(splitters: Splitters) -> None:
    assert splitters.put(splitter(), now=1.0) == "creating"
    assert splitters.put(splitter(), now=2.0) == "up to date"
    assert splitters.put(splitter(a=50, b=50), now=3.0) == "updating"
    record = splitters.get("sp")
    assert record is not None and (record.created_at, record.updated_at, record.endpoint) == (1.0, 3.0, "/sp")
    message = splitters.routing.message()
    assert message["splitters"] == [{"name": "sp", "endpoint": "/sp", "backends": [["a", 50], ["b", 50]],
                                     "shadow": None, "header": None, "api_keys": "none"}]
    restarted = Splitters(splitters.store, Routing())
    restarted.load()
    assert list(restarted.routing.splitters) == ["sp"]
    assert splitters.using("a") == ["sp"] and splitters.using("c") == []
    splitters.delete("sp")
    assert splitters.all() == [] and "splitters" not in splitters.routing.message()


def test_a_deleted_splitter_takes_its_keys_with_it(splitters: Splitters) -> None:
    keys = KeyStore(splitters.store)
    splitters.put(splitter(), now=1.0)
    keys.add(KeyRecord("sp", "k1", "0123456789abcdef", "00", "11", 1.0))
    keys.add(KeyRecord("a", "k1", "fedcba9876543210", "00", "11", 1.0))  # an API's key stays
    splitters.routing.require_keys("sp", True)
    splitters.routing.set_keys("sp", [r.entry() for r in keys.of("sp")])
    splitters.delete("sp")
    assert keys.of("sp") == [] and [r.target for r in keys.of()] == ["a"]
    assert "sp" not in splitters.routing.keys  # a splitter deployed again under its name starts with no keys


def test_checks_share_names_and_endpoints_and_need_the_apis(splitters: Splitters) -> None:
    deployed = {"a": "/a", "b": "/b"}
    splitters.check([splitter()], deployed, {})
    splitters.check([splitter(c=100)], deployed, {"c": "/c"})  # deployed in the same command
    with pytest.raises(NotFound, match="'c', 'd'"):
        splitters.check([splitter(a=50, c=25, d=25)], deployed, {})
    with pytest.raises(Conflict, match="name of an API"):
        splitters.check([splitter(name="a")], deployed, {})
    with pytest.raises(Conflict, match="already used by 'b'"):
        splitters.check([splitter(endpoint="/b")], deployed, {})
    splitters.put(splitter(endpoint="/canary"), now=1.0)
    with pytest.raises(Conflict, match="'sp' is the name of a traffic splitter"):
        splitters.check_apis([("sp", "/sp")])
    with pytest.raises(Conflict, match="already used by traffic splitter 'sp'"):
        splitters.check_apis([("c", "/canary")])
    with pytest.raises(Conflict, match="berth delete sp"):
        splitters.check_delete("a")
    splitters.check_delete("c")


def test_counters_are_summed_over_workers_and_reported_per_backend(splitters: Splitters) -> None:
    total: dict = {}
    worker = {"sp": {"backends": {"a": {"requests": 9, "2xx": 9}, "b": {"requests": 1, "5xx": 1}},
                     "shadow": {"s": {"requests": 10, "2xx": 8, "dropped": 2}}}}
    add_counters(total, worker)
    add_counters(total, worker)
    assert total["sp"]["backends"]["a"] == {"requests": 18, "2xx": 18}
    spec = TrafficSplitter.model_validate({"name": "sp", "kind": "TrafficSplitter", "apis": [
        {"name": "a", "weight": 90}, {"name": "b", "weight": 10}, {"name": "s", "shadow": True}]})
    splitters.put(spec, now=1.0)
    record = splitters.get("sp")
    assert record is not None
    view = summary(record, total["sp"], {"a": "live", "b": "updating"}.get, "http://gw")  # type: ignore[arg-type]
    assert view["requests"] == 20 and view["url"] == "http://gw/sp"
    rows = {row["name"]: row for row in view["apis"]}
    assert (rows["b"]["status"], rows["b"]["5XX"]) == ("updating", 2)
    assert (rows["s"]["shadow"], rows["s"]["requests"], rows["s"]["dropped"], rows["s"]["2XX"]) == (True, 20, 4, 16)
