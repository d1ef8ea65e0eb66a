"""Housekeeping with a real store and real folders: snapshots no deployed version uses and old logs go.

Ages are made with os.utime, so nothing waits for ten minutes or a day.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

import pytest

from berth.config.schema import RealtimeAPI
from berth.control.apis import DeployedAPI
from berth.control.daemon import Daemon, DaemonSettings
from berth.control.logs import collect_logs
from berth.control.paths import Paths
from berth.control.snapshot import GRACE_SECONDS, LOCK_FILE, collect_snapshots, snapshot
from berth.control.store import KEEP_VERSIONS, APIRecord, ReplicaRecord, Store
from berth.core.placement import Capacity

pytestmark = pytest.mark.anyio

DAY = 24 * 3600.0
SPEC = {"kind": "RealtimeAPI", "predictor": {"type": "python", "path": "predictor.py"},
        "autoscaling": {"min_replicas": 0, "init_replicas": 0}}


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def folders(path: Path) -> set[str]:
    return {p.name for p in path.iterdir() if p.is_dir()}


def record(name: str, version: str, snapshot_name: str, at: float) -> APIRecord:
    spec = RealtimeAPI.model_validate({"name": name, **SPEC}).model_dump(mode="json")
    return APIRecord(name=name, endpoint=f"/{name}", spec=spec, version=version, snapshot=snapshot_name,
                     spec_file="berth.yaml", created_at=at, updated_at=at, requested=0)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.open()
    return store


def test_the_store_names_current_recent_and_running_versions_only(store: Store) -> None:
    for index in range(KEEP_VERSIONS + 5):
        store.put_api(record("a", f"v{index}", f"snap-a{index}", at=1000.0 + index))
    store.put_replica(ReplicaRecord(id="r1", api="a", version="v1", pid=None, pid_started=None, created_at=0.0,
                                    socket_dir="/nowhere", processes=1, restarts=0, placement={}))
    store.put_api(record("b", "w0", "snap-b0", at=1000.0))
    store.put_api(record("gone", "x0", "snap-gone", at=1000.0))
    store.delete_api("gone")
    newest = {f"snap-a{index}" for index in range(5, KEEP_VERSIONS + 5)}
    assert store.snapshots_in_use() == newest | {"snap-a1", "snap-b0"}  # v1: a replica still runs it


def test_unused_snapshots_older_than_the_grace_period_are_removed(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    for name in ("used", "unused-old", "unused-young", ".abc-staging"):
        (snapshots / name).mkdir(parents=True)
        (snapshots / name / "predictor.py").write_text("")
    for name in ("used", "unused-old", ".abc-staging"):
        age(snapshots / name, GRACE_SECONDS + 60)
    removed = collect_snapshots(snapshots, {"used"})
    assert sorted(removed) == [".abc-staging", "unused-old"]
    assert folders(snapshots) == {"used", "unused-young"}


def test_a_deploy_reusing_an_old_unused_snapshot_keeps_it_from_the_collector(tmp_path: Path) -> None:
    """The deploy takes the snapshot before the store names it: reusing it makes it young again."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "berth.yaml").write_text("- name: a\n")
    (project / "predictor.py").write_text("class PythonPredictor: pass\n")
    snapshots = tmp_path / "snapshots"
    digest, copy = snapshot(project, project / "berth.yaml", snapshots)
    age(copy, DAY)  # deployed, deleted a day ago: nothing references it now
    again, _ = snapshot(project, project / "berth.yaml", snapshots)
    assert again == digest
    assert collect_snapshots(snapshots, set()) == [] and copy.is_dir()


def test_no_collection_while_a_deploy_is_snapshotting(tmp_path: Path) -> None:
    snapshots = tmp_path / "snapshots"
    (snapshots / "old").mkdir(parents=True)
    age(snapshots / "old", DAY)
    with (snapshots / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # as snapshot() holds it
        assert collect_snapshots(snapshots, set()) == []
    assert collect_snapshots(snapshots, set()) == ["old"]


def test_logs_of_deleted_apis_and_gone_replicas_go_after_the_retention(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    files = {"deleted-old/r1.log": DAY + 60, "deleted-young/r2.log": 60, "live/old-gone.log": DAY + 120,
             "live/newest-gone.log": DAY + 60, "live/running.log": DAY + 180, "busy/old-gone.log": DAY + 60,
             "busy/recent-gone.log": 60}
    for name in files:
        (logs / name).parent.mkdir(parents=True, exist_ok=True)
        (logs / name).write_text("line\n")
        (logs / f"{name}.1").write_text("capped\n")  # what the size cap copied
        (logs / f"{name}.1.tmp").write_text("cap")  # and a copy a killed daemon left half made
    for name, seconds in files.items():
        age(logs / name, seconds)
    age(logs / "deleted-old", DAY + 60)
    removed = collect_logs(logs, apis={"live", "busy"}, live={"running"}, now=time.time(), retention=DAY)
    assert sorted(removed) == ["busy/old-gone.log", "deleted-old/", "live/old-gone.log"]
    assert folders(logs) == {"deleted-young", "live", "busy"}
    # the newest file stays (`berth logs` shows it when nothing runs), as does a running replica's
    assert {p.name for p in (logs / "live").iterdir()} == {
        "newest-gone.log", "running.log", "newest-gone.log.1", "running.log.1", "newest-gone.log.1.tmp",
        "running.log.1.tmp"}  # a live one's is replaced at its next cap
    assert {p.name for p in (logs / "busy").iterdir()} == {"recent-gone.log", "recent-gone.log.1",
                                                           "recent-gone.log.1.tmp"}


async def test_the_daemon_collects_what_a_deleted_api_left_and_keeps_what_a_deployed_one_uses(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(tmp_path / "home")
    daemon = Daemon(DaemonSettings(paths=paths, capacity=Capacity(cpu=4, mem=2**34, gpus=())), env={})
    paths.ensure()
    daemon.store.open()
    daemon.reconciler.load()
    for name in ("kept", "deleted"):
        project = tmp_path / name
        project.mkdir()
        (project / "berth.yaml").write_text(f"- name: {name}\n")
        (project / "predictor.py").write_text(f"NAME = {name!r}\n")
        digest, copy = snapshot(project, project / "berth.yaml", paths.snapshots)
        api = record(name, f"{name}-v1", digest, at=time.time())
        daemon.store.put_api(api)
        daemon.reconciler.put(DeployedAPI(api, RealtimeAPI.model_validate(api.spec), copy))
        (paths.logs / name).mkdir(parents=True)
        (paths.logs / name / "r1.log").write_text("served\n")
    daemon.store.delete_api("deleted")  # as `berth delete` does, then the reconciler finishes it
    daemon.reconciler.remove("deleted")
    await daemon.reconciler.tick()
    assert "deleted" not in daemon.reconciler.apis
    for path in [*paths.snapshots.iterdir(), *paths.logs.rglob("*")]:
        age(path, DAY + 60)
    caplog.set_level(logging.INFO, logger="berth.control")
    snapshots, logs = await daemon.collect_garbage()
    kept_snapshot = daemon.store.get_api("kept")
    assert kept_snapshot is not None and folders(paths.snapshots) == {kept_snapshot.snapshot}
    assert len(snapshots) == 1 and logs == ["deleted/"] and folders(paths.logs) == {"kept"}
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("housekeeping: removed 1 snapshot(s)") and snapshots[0] in m for m in messages)
    assert any(m.startswith("housekeeping: removed logs") and "deleted/" in m for m in messages)
    assert await daemon.collect_garbage() == ([], [])  # nothing more: the second round removes nothing
    daemon.store.close()


async def test_the_daemon_caps_its_own_log_and_its_replicas_but_not_those_of_replicas_gone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    paths = Paths(tmp_path / "home")
    daemon = Daemon(DaemonSettings(paths=paths, capacity=Capacity(cpu=4, mem=2**34, gpus=()), max_log_size=1024),
                    env={})
    paths.ensure()
    daemon.store.open()
    daemon.store.put_replica(ReplicaRecord(id="running", api="a", version="v1", pid=None, pid_started=None,
                                           created_at=0.0, socket_dir="/nowhere", processes=1, restarts=0,
                                           placement={}))
    (paths.logs / "a").mkdir(parents=True)
    for path in (paths.daemon_log, paths.replica_log("a", "running"), paths.replica_log("a", "gone")):
        path.write_bytes(b"x" * 2048)
    caplog.set_level(logging.INFO, logger="berth.control")
    assert await daemon.cap_logs() == [paths.daemon_log, paths.replica_log("a", "running")]
    assert paths.daemon_log.stat().st_size == 0 and (paths.home / "daemon.log.1").stat().st_size == 2048
    assert (paths.logs / "a" / "running.log.1").exists() and paths.replica_log("a", "gone").stat().st_size == 2048
    assert any(r.getMessage() == "housekeeping: logs over 1Ki copied to .1 and emptied: daemon.log logs/a/running.log"
               for r in caplog.records)
    assert await daemon.cap_logs() == []
    daemon.store.close()
