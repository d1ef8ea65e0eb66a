"""Creating replicas and starting their processes: placement on the machine, environment, spawn."""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Callable, Mapping

import psutil

from berth.config.schema import RealtimeAPI
from berth.control.apis import Version
from berth.control.fleet import Fleet
from berth.control.paths import Paths
from berth.control.replica import Replica
from berth.control.store import ReplicaRecord, Store
from berth.control.supervisor import Supervisor
from berth.core.lifecycle import Event
from berth.core.placement import Capacity, Placement, Request, place
from berth.core.status import ReplicaState
from berth.errors import BerthError
from berth.pyenv.builder import python_of, touch
from berth.pyenv.dotenv import DOTENV_FILE, read_dotenv

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")

Failed = Callable[[Replica, Event, float, str], None]


class Starter:
    def __init__(self, fleet: Fleet, supervisor: Supervisor, store: Store, paths: Paths, env: Mapping[str, str],
                 capacity: Capacity, failed: Failed) -> None:
        self.fleet = fleet
        self.supervisor = supervisor
        self.store = store
        self.paths = paths
        self.env = dict(env)
        self.capacity = capacity
        self.failed = failed  # Health.failed: the one place a failure is recorded

    def new_replica(self, name: str, version: Version, now: float) -> Replica:
        replica_id = f"{version.id[:6]}-{secrets.token_hex(3)}"
        replica = Replica(
            id=replica_id, api=name, version=version.id, socket_dir=self.paths.run / replica_id,
            log_path=self.paths.replica_log(name, replica_id),
            processes=version.spec.predictor.processes_per_replica, created_at=now,
        )
        self.fleet.replicas[replica_id] = replica
        return replica

    def start(self, version: Version, replica: Replica, now: float) -> None:
        if replica.placement is None:
            compute = version.spec.compute
            found = place(Request(compute.cpu, compute.mem or 0.0, compute.gpu), self.capacity,
                          self.fleet.placements())
            if isinstance(found, str):
                replica.no_capacity(found)
                return
            replica.placed(found)
        assert replica.placement is not None
        try:
            python, environment = self._environment(version)
            # .env below predictor.env; the environment's own PATH and VIRTUAL_ENV above .env (they are berth's).
            env = {**self.env, **resource_env(version.spec, replica.placement),
                   **read_dotenv(version.project / DOTENV_FILE), **environment, **version.spec.predictor.env,
                   "PYTHONUNBUFFERED": "1"}
        except BerthError as exc:
            self.failed(replica, Event.START_FAILED, now, exc.message)
            return
        try:
            self.supervisor.spawn(replica, version.spec.model_dump(mode="json"), version.project, env, now, python)
        except OSError as exc:
            self.failed(replica, Event.START_FAILED, now, f"could not start the replica process: {exc}")
            return
        self.save(replica)

    def _environment(self, version: Version) -> tuple[str | None, dict[str, str]]:
        """The interpreter of the version's Python environment (None: berth's own) and the variables that
        make it the active one for whatever the predictor starts."""
        if not version.environment:
            return None, {}
        python = python_of(self.paths.envs, version.environment)
        if python is None:
            raise BerthError(f"its Python environment {version.environment} is missing from {self.paths.envs}",
                             hint="deploy again to build it")
        touch(self.paths.envs, version.environment)
        folder = python.parent.parent
        return str(python), {"VIRTUAL_ENV": str(folder),
                             "PATH": f"{python.parent}{os.pathsep}{self.env.get('PATH', os.defpath)}"}

    def place_pending(self, now: float) -> None:
        for replica in list(self.fleet.replicas.values()):
            api = self.fleet.apis.get(replica.api)
            if replica.state is ReplicaState.PENDING and api is not None and replica.version in api.versions:
                self.start(api.versions[replica.version], replica, now)

    def save(self, replica: Replica) -> None:
        placement = replica.placement.as_dict() if replica.placement else {}
        self.store.put_replica(ReplicaRecord(
            id=replica.id, api=replica.api, version=replica.version, pid=replica.pid,
            pid_started=create_time(replica.pid), created_at=replica.created_at,
            socket_dir=str(replica.socket_dir), processes=replica.processes, restarts=replica.restarts,
            placement=placement))


def resource_env(spec: RealtimeAPI, placement: Placement) -> dict[str, str]:
    """Thread caps from the replica's cpu, and the GPUs it was given."""
    threads = str(max(1, math.floor(placement.cpu / spec.predictor.processes_per_replica)))
    env = dict.fromkeys(THREAD_VARIABLES, threads)
    # The indices are NVML's (nvidia-smi's), in PCI bus order; CUDA numbers devices fastest first unless told.
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index, _ in placement.gpus)
    return env


def create_time(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None
