"""Replica processes: start, probe, stop. Decisions about *which* replicas live elsewhere."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from berth.control.replica import Replica
from berth.core.lifecycle import Event, crash_event
from berth.runtime.contract import (
    EXIT_INIT_FAILED,
    EXIT_SIBLING_DIED,
    SPEC_FILE,
    ReplicaArgs,
    clear_failure,
    read_failure,
)

PROBE_TIMEOUT = 1.0
EXIT_UNKNOWN = -1000  # an adopted replica (not our child) exited: its exit code cannot be known


class Supervisor:
    """Starts replica processes with their log files, probes readiness, signals them to stop."""

    def __init__(self, model_cache: Path, python: str = sys.executable) -> None:
        self.model_cache = model_cache
        self.python = python

    def spawn(self, replica: Replica, spec: Mapping[str, object], project: Path,
              env: Mapping[str, str], now: float, python: str | None = None) -> None:
        """`python`: the interpreter of the version's environment; None runs berth's own."""
        replica.socket_dir.mkdir(exist_ok=True, mode=0o700)  # under the verified private run folder
        clear_failure(replica.socket_dir)
        spec_path = replica.socket_dir / SPEC_FILE
        spec_path.write_text(json.dumps(spec))
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
        with replica.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
            log.write(f"--- {stamp} berth: starting replica {replica.id} "
                      f"(start {replica.restarts + 1}) ---\n".encode())
            log.flush()
            popen = subprocess.Popen(
                ReplicaArgs(spec=spec_path, project=project, socket_dir=replica.socket_dir,
                            replica_id=replica.id, model_cache=self.model_cache,
                            version=replica.version).command(python or self.python),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=project,
                env=dict(env), start_new_session=True,  # replicas outlive the daemon; Ctrl-C is not theirs
            )
        replica.started(popen.pid, now, popen)

    def poll_exit(self, replica: Replica) -> int | None:
        if replica.popen is not None:
            return replica.popen.poll()
        if replica.pid is None:
            return None
        try:
            gone = psutil.Process(replica.pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        return EXIT_UNKNOWN if gone else None

    def measure_rss(self, replica: Replica) -> float:
        """Resident memory of the replica: process 0 and every process it started."""
        if replica.pid is None:
            return 0.0
        try:
            root = psutil.Process(replica.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        return float(total)

    def read_failure(self, replica: Replica) -> tuple[str, str] | None:
        """The error the runtime recorded when `__init__` failed, if it did."""
        failure = read_failure(replica.socket_dir)
        return None if failure is None else (failure.error, failure.traceback)

    async def probe_ready(self, replica: Replica) -> bool:
        results = await asyncio.gather(*(probe(sock, "/readyz") for sock in replica.sockets))
        return all(status == 200 for status in results)

    def terminate(self, replica: Replica, now: float) -> None:
        """SIGTERM: uvicorn stops accepting and finishes the requests it holds."""
        replica.signalled(now)
        self._signal(replica, signal.SIGTERM)

    def kill(self, replica: Replica) -> None:
        self._signal(replica, signal.SIGKILL)

    def _signal(self, replica: Replica, sig: signal.Signals) -> None:
        if replica.pid is None or self.poll_exit(replica) is not None:
            return
        # The whole session: process 0 and the sibling processes it started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(replica.pid, sig)

    def kill_group(self, replica: Replica) -> None:
        """After process 0 has exited: its sibling processes must not outlive it."""
        if replica.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(replica.pid, signal.SIGKILL)

    def cleanup(self, replica: Replica) -> None:
        shutil.rmtree(replica.socket_dir, ignore_errors=True)


def exit_event(code: int) -> Event:
    """What an exit we did not ask for was: a SIGKILL from outside, or a crash."""
    return crash_event(code in (-signal.SIGKILL, 128 + signal.SIGKILL))


def describe_exit(code: int) -> str:
    """Process 0's exit, in words. A replica of several processes exits 128 + the signal that
    killed the first of them to die (after stopping the others), as a shell reports it."""
    if code == EXIT_UNKNOWN:
        return "exited (its exit code is unknown: it was adopted after a daemon restart)"
    if code < 0:
        return f"killed by {_signal_name(-code) or f'signal {-code}'}"
    if code > 128 and _signal_name(code - 128):
        return f"a process of the replica was killed by {_signal_name(code - 128)}; the others were stopped"
    if code == EXIT_INIT_FAILED:
        return "the predictor failed to initialise"
    if code == EXIT_SIBLING_DIED:
        return "a process of the replica exited by itself (see `berth logs`); the others were stopped"
    return f"exited with code {code}"


def _signal_name(number: int) -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


async def probe(sock: str, path: str, timeout: float = PROBE_TIMEOUT) -> int:
    """Status code of a GET over a unix socket, or 0 when nothing answers."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(sock)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nhost: berth\r\nconnection: close\r\n\r\n".encode())
                line = await reader.readline()
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return 0
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
