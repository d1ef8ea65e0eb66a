from pathlib import Path

from berth.control.store import APIRecord, ReplicaRecord, Store


def record(version: str, at: float) -> APIRecord:
    return APIRecord(name="a", endpoint="/a", spec={"k": version}, version=version, snapshot="s", spec_file="f",
                     created_at=0, updated_at=at)


def test_apis_versions_replicas_and_events_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    store.open()
    store.put_api(record("v1", 1))
    store.put_api(record("v1", 2))  # same version: no new history row
    store.put_api(record("v2", 3))
    assert store.get_api("a") == record("v2", 3)
    assert store.versions("a") == [("v2", 3), ("v1", 1)]
    store.put_replica(ReplicaRecord("r1", "a", "v2", 123, 456.0))
    assert store.list_replicas() == [ReplicaRecord("r1", "a", "v2", 123, 456.0)]
    store.add_event("a", "deploy", "hello", at=5)
    assert [e.message for e in store.events("a")] == ["hello"]
    store.close()

    reopened = Store(tmp_path / "state.db")
    reopened.open()
    assert [api.name for api in reopened.list_apis()] == ["a"]
    reopened.delete_api("a")
    assert reopened.get_api("a") is None and reopened.versions("a") == [] and reopened.events("a") == []
    reopened.close()


def test_endpoint_is_unique(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    store = Store(tmp_path / "state.db")
    store.open()
    store.put_api(record("v1", 1))
    other = APIRecord(name="b", endpoint="/a", spec={}, version="x", snapshot="s", spec_file="f", created_at=0,
                      updated_at=0)
    with pytest.raises(sqlite3.IntegrityError):
        store.put_api(other)
    assert [api.name for api in store.list_apis()] == ["a"]  # the failed write left nothing behind
    assert store.versions("b") == []
    store.close()
