import sqlite3
from pathlib import Path

import pytest

from berth.control.store import APIRecord, ReplicaRecord, Store


def record(version: str, at: float, name: str = "a", endpoint: str = "/a") -> APIRecord:
    return APIRecord(name=name, endpoint=endpoint, spec={"k": version}, version=version, snapshot="s",
                     spec_file="f", created_at=0, updated_at=at, requested=2)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    opened = Store(tmp_path / "state.db")
    opened.open()
    return opened


def test_apis_versions_replicas_and_events_round_trip(store: Store, tmp_path: Path) -> None:
    store.put_api(record("v1", 1))
    store.put_api(record("v1", 2))  # same version: no new history row
    store.put_api(record("v2", 3))
    assert store.get_api("a") == record("v2", 3)
    assert store.versions("a") == [("v2", 3), ("v1", 1)]
    assert store.get_version("a", "v1") == ({"k": "v1"}, "s", "")
    replica = ReplicaRecord("r1", "a", "v2", 123, 456.0, 7.0, "/run/r1", 2, 1, {"cpu": 0.2, "mem": 0, "gpus": []})
    store.put_replica(replica)
    assert store.list_replicas() == [replica]
    store.add_event("a", "deploy", "hello", at=5)
    assert [e.message for e in store.events("a")] == ["hello"]
    store.set_requested("a", 5)
    store.set_rollout_failure("a", "v2", "it crashed")
    store.close()

    reopened = Store(tmp_path / "state.db")
    reopened.open()
    api = reopened.get_api("a")
    assert api is not None and (api.requested, api.failed_version, api.failed_reason) == (5, "v2", "it crashed")
    reopened.delete_api("a")
    assert reopened.get_api("a") is None and reopened.versions("a") == [] and reopened.events("a") == []
    reopened.close()


def test_autoscaler_history_survives_a_restart_and_decisions_are_bounded(store: Store, tmp_path: Path) -> None:
    store.put_api(record("v1", 1))
    for tick in range(5):
        store.record_tick("a", [(float(tick), tick)], {"at": float(tick), "request": tick}, keep_decisions=3)
    store.close()
    reopened = Store(tmp_path / "state.db")
    reopened.open()
    assert reopened.recommendations("a") == [(4.0, 4)]
    assert [d["request"] for d in reopened.decisions("a")] == [2, 3, 4]
    reopened.close()


def test_endpoint_is_unique(store: Store) -> None:
    store.put_api(record("v1", 1))
    with pytest.raises(sqlite3.IntegrityError):
        store.put_api(record("x", 0, name="b", endpoint="/a"))
    assert [api.name for api in store.list_apis()] == ["a"]  # the failed write left nothing behind
    assert store.versions("b") == []
    store.close()
