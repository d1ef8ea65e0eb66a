"""After a daemon restart: take over the replica processes that outlived the last daemon."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import psutil

from berth.control.apis import DeployedAPI, load_version
from berth.control.fleet import Fleet
from berth.control.paths import Paths
from berth.control.replica import Replica
from berth.control.routing import Routing
from berth.control.store import ReplicaRecord, Store
from berth.core.lifecycle import Phase
from berth.core.placement import Placement

log = logging.getLogger("berth.control")


class Adoption:
    def __init__(self, fleet: Fleet, store: Store, paths: Paths, routing: Routing,
                 clock: Callable[[], float]) -> None:
        self.fleet = fleet
        self.store = store
        self.paths = paths
        self.routing = routing
        self.clock = clock

    def adopt_leftovers(self) -> None:
        """Every replica the store knows: adopted, adopted to be stopped, or forgotten if it is gone."""
        for record in self.store.list_replicas():
            if not self.adopt(record) and not self.adopt_to_stop(record):
                log.info("replica %s of %s (pid %s) did not outlive the last daemon; forgotten",
                         record.id, record.api, record.pid)
                self.store.delete_replica(record.id)
                shutil.rmtree(record.socket_dir, ignore_errors=True)
        for api in self.fleet.apis.values():
            if api.record.failed_version == api.record.version:
                self._restore_fallback(api)

    def adopt(self, record: ReplicaRecord) -> bool:
        """Take over a replica process a killed daemon left running, if it is still that process; it is
        probed ready again before any gateway is told about it."""
        api = self.fleet.apis.get(record.api)
        if api is None or record.pid is None or not same_process(record.pid, record.pid_started):
            return False
        if record.version not in api.versions:
            version = load_version(self.store, self.paths.snapshots, record.api, record.version)
            if version is None:
                return False
            api.versions[record.version] = version
        replica = self._replica(record, Phase.INITIALIZING)
        replica.placement = Placement.from_dict(record.placement) if record.placement else None
        self.fleet.replicas[replica.id] = replica
        self.store.add_event(record.api, "adopted", f"replica {record.id} (pid {record.pid}) adopted", self.clock())
        log.info("adopted replica %s of %s (pid %s, version %s) left running by the last daemon",
                 record.id, record.api, record.pid, record.version)
        return True

    def adopt_to_stop(self, record: ReplicaRecord) -> bool:
        """A live replica whose API or version is gone (a delete or rollout the last daemon did not
        finish): adopt it draining, so it finishes its requests like any other rather than dying now."""
        if record.pid is None or not same_process(record.pid, record.pid_started):
            return False
        replica = self._replica(record, Phase.DRAINING)
        replica.stop_requested_at = replica.started_at
        self.fleet.replicas[record.id] = replica
        self.routing.retire(record.id)
        log.info("adopted replica %s of %s (pid %s) to stop it: its API or version is gone",
                 record.id, record.api, record.pid)
        return True

    def _replica(self, record: ReplicaRecord, phase: Phase) -> Replica:
        return Replica(id=record.id, api=record.api, version=record.version, socket_dir=Path(record.socket_dir),
                       log_path=self.paths.replica_log(record.api, record.id), processes=record.processes,
                       created_at=record.created_at, phase=phase, pid=record.pid, started_at=self.clock(),
                       restarts=record.restarts)

    def _restore_fallback(self, api: DeployedAPI) -> None:
        versions = {r.version for r in self.fleet.replicas_of(api.name)} - {api.record.version}
        for version in versions:
            api.fallback = load_version(self.store, self.paths.snapshots, api.name, version)
            if api.fallback is not None:
                api.versions[version] = api.fallback
                return


def same_process(pid: int, started: float | None) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (
            started is None or abs(process.create_time() - started) < 1)
    except psutil.Error:
        return False
