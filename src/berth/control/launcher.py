"""Starting and stopping the daemon as a background process, race-free across CLI invocations."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from berth.control.paths import Paths
from berth.errors import DaemonStartError

START_TIMEOUT = 30.0
RESTART_WAIT = 10.0  # how long `cluster down` waits for a daemon its supervisor is restarting


@dataclass(frozen=True)
class Started:
    info: dict[str, Any]
    started: bool  # False when a daemon was already running


def daemon_info(paths: Paths) -> dict[str, Any] | None:
    """The running daemon's info, or None when nothing answers on the socket."""
    if not paths.socket.exists():
        return None
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(paths.socket)), timeout=5.0) as http:
            response = http.get("http://berth/v1/info")
    except (httpx.HTTPError, OSError):
        return None
    return response.json() if response.status_code == 200 else None


@contextmanager
def _spawn_lock(paths: Paths) -> Iterator[None]:
    """Two `berth deploy` at once must start one daemon, not two."""
    paths.home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with paths.spawn_lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class StartOptions:
    """What `berth cluster up` may set; None leaves the daemon's default."""

    readiness_timeout: float | None = None
    gateway_workers: int | None = None
    gateway: dict[str, Any] = field(default_factory=dict)  # GatewaySettings fields
    log_retention: float | None = None  # seconds the logs of deleted APIs and stopped replicas are kept
    max_log_size: int | None = None  # bytes of daemon.log or a replica's log before it is copied to .1

    def argv(self) -> list[str]:
        options = ["--readiness-timeout", str(self.readiness_timeout)] if self.readiness_timeout else []
        options += ["--gateway-workers", str(self.gateway_workers)] if self.gateway_workers else []
        options += ["--log-retention", str(self.log_retention)] if self.log_retention is not None else []
        options += ["--max-log-size", str(self.max_log_size)] if self.max_log_size is not None else []
        return [*options, "--gateway-settings", json.dumps(self.gateway)] if self.gateway else options

    def daemon_options(self) -> tuple[str, ...]:
        """What the supervisor hands to the daemon as it is."""
        options = ("--readiness-timeout", str(self.readiness_timeout)) if self.readiness_timeout else ()
        retention = ("--log-retention", str(self.log_retention)) if self.log_retention is not None else ()
        size = ("--max-log-size", str(self.max_log_size)) if self.max_log_size is not None else ()
        return (*options, *retention, *size)


def ensure_daemon(paths: Paths, host: str, port: int, options: StartOptions | None = None,
                  timeout: float = START_TIMEOUT) -> Started:
    info = daemon_info(paths)
    if info is not None:
        return Started(info, started=False)
    with _spawn_lock(paths):
        info = daemon_info(paths)
        if info is not None:
            return Started(info, started=False)
        if supervisor_running(paths):
            # The daemon is being restarted by its supervisor (it crashed, or was killed): wait for it.
            return Started(_wait_for_daemon(paths, timeout), started=False)
        argv = ["--host", host, "--port", str(port), *(options or StartOptions()).argv()]
        return Started(_spawn(paths, argv, timeout), started=True)


def supervisor_running(paths: Paths) -> bool:
    """Whether a supervisor holds this home's lock (it does for as long as it runs)."""
    if not paths.lock.exists():
        return False
    with paths.lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _wait_for_daemon(paths: Paths, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = daemon_info(paths)
        if info is not None:
            return info
        if not supervisor_running(paths):
            break
        time.sleep(0.02)
    raise DaemonStartError(f"the berth daemon did not come back within {timeout:g}s",
                           hint=f"see its log: {paths.daemon_log}; `berth cluster down` and up again restarts it")


def _spawn(paths: Paths, options: list[str], timeout: float) -> dict[str, Any]:
    log_start = paths.daemon_log.stat().st_size if paths.daemon_log.exists() else 0
    with paths.daemon_log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "berth.control", "--home", str(paths.home), *options],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            message, hint = _startup_error(paths, log_start, code)
            raise DaemonStartError(message, hint=hint or f"the daemon's log is {paths.daemon_log}")
        info = daemon_info(paths)
        if info is not None:
            return info
        time.sleep(0.02)
    process.terminate()
    raise DaemonStartError(f"the berth daemon did not come up within {timeout:g}s",
                           hint=f"see its log: {paths.daemon_log}")


def _startup_error(paths: Paths, offset: int, code: int) -> tuple[str, str | None]:
    with paths.daemon_log.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode("utf-8", "replace").splitlines()
    found = {key: line.split(": ", 2)[2] for line in lines for key in ("error", "hint")
             if line.startswith(f"berth daemon: {key}: ")}
    if "error" in found:
        return found["error"], found.get("hint")
    tail = f": {lines[-1]}" if lines else ""
    return f"the berth daemon exited with code {code} while starting{tail}", None


def stop_daemon(paths: Paths, timeout: float = 90.0) -> bool:
    """Ask the daemon to drain and stop; True when it was running."""
    info = daemon_info(paths)
    if info is None and supervisor_running(paths):
        info = daemon_back_or_none(paths, RESTART_WAIT)
        if info is None:  # the daemon is crash-looping or stuck: stop the supervisor itself
            return _stop_supervisor(paths, timeout)
    if info is None:
        return False
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(paths.socket)), timeout=10.0) as http:
        http.post("http://berth/v1/shutdown")
    # Stopped means everything: the supervisor exits after the daemon and the gateways.
    pid = int(info.get("supervisor_pid") or info["pid"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    return True


def daemon_back_or_none(paths: Paths, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and supervisor_running(paths):
        info = daemon_info(paths)
        if info is not None:
            return info
        time.sleep(0.05)
    return None


def _stop_supervisor(paths: Paths, timeout: float) -> bool:
    """SIGTERM the supervisor named in the lock file; it stops the gateways (and a daemon, if one runs)."""
    try:
        pid = int(paths.lock.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    return True


def _alive(pid: int) -> bool:
    """Whether the process still runs; an exited daemon nobody has reaped yet (a zombie) does not."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
