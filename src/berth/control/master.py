"""The supervisor: a small process that holds the listening socket and restarts what dies.

In the manner of nginx's master process: it binds the gateway's port once and hands the socket to
every gateway worker it starts, so a worker that dies is replaced without a refused connection
(the kernel keeps queueing them on the socket the supervisor still holds). It starts the control
plane daemon too, and restarts it when it crashes; the replicas and the gateway keep serving
meanwhile. It imports nothing but the standard library, so it has little reason to die itself; if
it does, its children see their lifeline pipe close and stop.

    supervisor ─┬─ daemon (control plane)   restarted with backoff; exit 0 means "shut down"
                └─ gateway worker x N      restarted at once
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from berth.control.paths import Paths
from berth.errors import DaemonStartError

log = logging.getLogger("berth.supervisor")

EXIT_GIVE_UP = 3  # the daemon's "my settings cannot work": restarting would not help
STOP_GRACE = 120.0  # the daemon drains every replica before it exits
GATEWAY_GRACE = 35.0  # a gateway worker finishes what it holds (30 s) before it exits
STABLE_AFTER = 10.0  # a child that ran this long before dying restarts without delay
PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class SupervisorSettings:
    paths: Paths
    host: str = "127.0.0.1"
    port: int = 8888
    gateway_workers: int = 1
    daemon_options: tuple[str, ...] = ()  # handed to the daemon as they are
    gateway_settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class Child:
    name: str
    argv: list[str]
    pass_fds: tuple[int, ...]
    pid: int | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    next_start: float = 0.0
    restarts: int = 0


class Supervisor:
    def __init__(self, settings: SupervisorSettings, python: str = sys.executable) -> None:
        self.settings = settings
        self.paths = settings.paths
        self.python = python
        self.children: list[Child] = []
        self.stopping = False
        self.exit_code = 0
        self._lock: IO[str] | None = None
        self._listener: socket.socket | None = None
        self._lifeline: tuple[int, int] | None = None
        self._wakeup: tuple[int, int] | None = None
        self._signalled = False
        self._stop_started = 0.0
        self._gateways_signalled: float | None = None

    # --- start ----------------------------------------------------------------------------------
    def start(self) -> None:
        self.paths.ensure()
        self._acquire_lock()
        self._listener = self._bind()
        self._lifeline = os.pipe()  # children hold the read end; it reads EOF once we are gone
        _become_subreaper()
        self._install_signals()
        lifeline, listen = self._lifeline[0], self._listener.fileno()
        daemon = [self.python, "-m", "berth.control.daemon", "--home", str(self.paths.home),
                  "--host", self.settings.host, "--port", str(self.settings.port),
                  "--gateway-workers", str(self.settings.gateway_workers), "--lifeline-fd", str(lifeline),
                  "--gateway-settings", json.dumps(self.settings.gateway_settings), *self.settings.daemon_options]
        self.children.append(Child("daemon", daemon, (lifeline,)))
        for index in range(self.settings.gateway_workers):
            gateway = [self.python, "-m", "berth.gateway", "--home", str(self.paths.home), "--index", str(index),
                       "--listen-fd", str(listen), "--lifeline-fd", str(lifeline),
                       "--control-socket", str(self.paths.run / f"gateway-{index}.sock"),
                       "--routes-file", str(self.paths.home / "routes.json"),
                       "--observe-socket", str(self.paths.observe_socket), "--request-logs", str(self.paths.logs),
                       "--settings", json.dumps(self.settings.gateway_settings)]
            self.children.append(Child(f"gateway-{index}", gateway, (lifeline, listen)))
        for child in self.children:
            self._spawn(child)
        log.info("berth supervisor %d up: gateway http://%s:%d with %d worker(s), home %s", os.getpid(),
                 self.settings.host, self.settings.port, self.settings.gateway_workers, self.paths.home)

    def _acquire_lock(self) -> None:
        handle = self.paths.lock.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise DaemonStartError(
                f"another berth daemon already runs with home {self.paths.home}",
                hint="use it (`berth cluster status`), or stop it with `berth cluster down`") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock = handle

    def _bind(self) -> socket.socket:
        host, port = self.settings.host, self.settings.port
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            listener = socket.socket(family, kind, proto)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(4096)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                free = free_port_near(host, port)
                pick = (f"pick another port, e.g. `berth cluster up --port {free}`, which is free now"
                        if free else "pick another port with `berth cluster up --port N`")
                raise DaemonStartError(f"port {port} on {host} is already in use",
                                       hint=f"stop what uses it, or {pick} (or set BERTH_PORT)") from exc
            raise DaemonStartError(f"cannot listen on {host}:{port}: {exc}") from exc
        listener.set_inheritable(True)
        return listener

    def _install_signals(self) -> None:
        self._wakeup = os.pipe()
        for end in self._wakeup:
            os.set_blocking(end, False)
        signal.set_wakeup_fd(self._wakeup[1])
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._signalled = True

    def _spawn(self, child: Child) -> None:
        with open(os.devnull, "rb") as devnull:
            # Their own process group: a Ctrl-C on a foreground supervisor reaches only the supervisor,
            # which stops them in order (the daemon drains the replicas while the gateways still serve).
            process = subprocess.Popen(child.argv, stdin=devnull, pass_fds=child.pass_fds, process_group=0)
        process.returncode = 0  # we reap with waitpid ourselves; keep Popen from trying to
        child.pid, child.started_at = process.pid, time.monotonic()

    # --- the loop -------------------------------------------------------------------------------
    def run(self) -> int:
        while True:
            self._wait(self._next_deadline())
            self._reap()
            if self._signalled and not self.stopping:
                self._begin_stop("signal")
            if self.stopping:
                if self._stop_progress():
                    return self.exit_code
                continue
            now = time.monotonic()
            for child in self.children:
                if child.pid is None and now >= child.next_start:
                    child.restarts += 1
                    log.warning("restarting %s (restart %d)", child.name, child.restarts)
                    self._spawn(child)

    def _next_deadline(self) -> float:
        waiting = [c.next_start for c in self.children if c.pid is None]
        return max(0.0, min(waiting) - time.monotonic()) if waiting and not self.stopping else 0.5

    def _wait(self, timeout: float) -> None:
        assert self._wakeup is not None
        with contextlib.suppress(InterruptedError):
            select.select([self._wakeup[0]], [], [], timeout)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wakeup[0], 512):
                pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid), None)
            if child is not None:  # anything else is an orphaned replica we reap as the subreaper
                self._exited(child, os.waitstatus_to_exitcode(status))

    def _exited(self, child: Child, code: int) -> None:
        pid, child.pid = child.pid, None
        ran = time.monotonic() - child.started_at
        child.quick_deaths = 0 if ran >= STABLE_AFTER else child.quick_deaths + 1
        delay = _restart_delay(child.name, child.quick_deaths)
        child.next_start = time.monotonic() + delay
        if self.stopping:
            return
        if child.name == "daemon" and code == 0:
            self._begin_stop("the daemon was asked to stop")
        elif child.name == "daemon" and code == EXIT_GIVE_UP and child.restarts == 0:
            # Only at the first start, when `cluster up` waits to report why; once berth has served,
            # the gateways keep serving and the daemon is retried (with backoff) whatever its error.
            self.exit_code = code
            self._begin_stop("the daemon cannot start")
        else:
            log.warning("%s (pid %s) exited with code %d; restarting in %.1fs", child.name, pid, code, delay)

    def _begin_stop(self, why: str) -> None:
        log.info("stopping (%s)", why)
        self.stopping = True
        self._stop_started = time.monotonic()
        daemon = self.children[0]
        if daemon.pid is not None:
            _signal(daemon.pid, signal.SIGTERM)

    def _stop_progress(self) -> bool:
        """The daemon drains the replicas first; then the gateways finish and go. True when all are gone."""
        daemon, gateways = self.children[0], self.children[1:]
        waited = time.monotonic() - self._stop_started
        if daemon.pid is not None:
            if waited > STOP_GRACE:
                _signal(daemon.pid, signal.SIGKILL)
            return False
        if self._gateways_signalled is None:
            self._gateways_signalled = time.monotonic()
            for gateway in gateways:
                if gateway.pid is not None:
                    _signal(gateway.pid, signal.SIGTERM)
        if time.monotonic() - self._gateways_signalled > GATEWAY_GRACE:
            for gateway in gateways:
                if gateway.pid is not None:
                    _signal(gateway.pid, signal.SIGKILL)
        return all(gateway.pid is None for gateway in gateways)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._lifeline is not None:
            for end in self._lifeline:
                with contextlib.suppress(OSError):
                    os.close(end)
        if self._lock is not None:
            self._lock.close()


def free_port_near(host: str, port: int, tries: int = 100) -> int | None:
    """The first port after `port` that `host` can listen on now (a suggestion, so a nearby and
    memorable one rather than a random one the kernel picks); None when none of them is."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        try:
            infos = socket.getaddrinfo(host, candidate, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            family, kind, proto, _, address = infos[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError:
            continue
        return candidate
    return None


def _restart_delay(name: str, quick_deaths: int) -> float:
    """Gateways come back at once (connections wait on the socket meanwhile) unless they crash-loop;
    the daemon backs off sooner, up to 5 s."""
    if name == "daemon":
        return 0.0 if quick_deaths <= 1 else min(5.0, 0.1 * 2 ** (quick_deaths - 2))
    return 0.0 if quick_deaths <= 3 else min(1.0, 0.1 * 2 ** (quick_deaths - 4))


def default_gateway_workers(cores: int) -> int:
    """One worker up to 4 cores (replicas need the rest), then one per 4 cores, at most 8."""
    return max(1, min(8, cores // 4))


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _become_subreaper() -> None:
    """Replicas outlive a crashed daemon; as their subreaper we reap them when they exit later."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def run(settings: SupervisorSettings) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(settings)
    try:
        supervisor.start()
        return supervisor.run()
    finally:
        supervisor.close()
