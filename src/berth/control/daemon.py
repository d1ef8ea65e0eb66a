"""The daemon: one process holding the store, the reconcile loop, the gateway and the management API."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import signal
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import uvicorn

from berth.control.api import ManagementAPI
from berth.control.autoscaling import Autoscaling
from berth.control.capacity import detect_capacity
from berth.control.deploy import Deployer
from berth.control.paths import Paths
from berth.control.reconciler import Reconciler, Timeouts
from berth.control.store import Store
from berth.control.supervisor import Supervisor
from berth.core.placement import Capacity
from berth.errors import DaemonStartError
from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.routes import RoutingTable
from berth.observability.stats import exposition

log = logging.getLogger("berth.control")

SHUTDOWN_TIMEOUT = 60.0


@dataclass(frozen=True)
class DaemonSettings:
    paths: Paths
    host: str = "127.0.0.1"
    port: int = 8888
    max_body_size: int = 64 * 2**20
    timeouts: Timeouts = field(default_factory=Timeouts)
    capacity: Capacity | None = None  # detected from the machine when not given


class _ManagementServer(uvicorn.Server):
    """uvicorn without its own signal handling: the daemon owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Daemon:
    def __init__(self, settings: DaemonSettings, env: Mapping[str, str]) -> None:
        self.settings = settings
        self.paths = settings.paths
        self.store = Store(self.paths.database)
        self.routes = RoutingTable()
        self.reconciler = Reconciler(self.store, Supervisor(self.paths.models), self.routes, self.paths, env,
                                     capacity=settings.capacity or detect_capacity(), timeouts=settings.timeouts)
        self.gateway = Gateway(self.routes, GatewaySettings(max_body_size=settings.max_body_size), self._admin,
                               wake=self.reconciler.wake_from_zero)
        self.autoscaling = Autoscaling(self.store, self.reconciler, self.routes, time.time)
        self.deployer = Deployer(self.store, self.reconciler, self.paths, time.time)
        self.management = ManagementAPI(self.store, self.reconciler, self.deployer, self.paths,
                                        self.info, self.request_stop, time.time)
        self.started_at = time.time()
        self._lock_file: IO[str] | None = None
        self._server: _ManagementServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "home": str(self.paths.home), "host": self.settings.host,
                "port": self.settings.port, "started_at": self.started_at}

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        self.paths.ensure()
        self._acquire_lock()
        self.store.open()
        self.reconciler.load()
        await self._start_gateway()
        await self._start_management()
        self._tasks.append(asyncio.create_task(self.autoscaling.run()))
        self._tasks.append(asyncio.create_task(self.reconciler.run()))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        log.info("berth daemon %s up: gateway http://%s:%s, home %s", os.getpid(), self.settings.host,
                 self.settings.port, self.paths.home)

    async def serve(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        log.info("stopping: draining replicas")
        # The reconcile loop goes first, or it would replace the replicas being drained.
        loops = [self._tasks.pop(), self._tasks.pop()]  # reconcile and autoscaling
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        await self.reconciler.shutdown(SHUTDOWN_TIMEOUT)
        if self._server is not None:
            self._server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.gateway.stop()
        self.store.close()
        self.paths.socket.unlink(missing_ok=True)
        if self._lock_file is not None:
            self._lock_file.close()
        log.info("stopped")

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
        self._lock_file = handle

    async def _start_gateway(self) -> None:
        try:
            await self.gateway.start(self.settings.host, self.settings.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DaemonStartError(
                    f"port {self.settings.port} on {self.settings.host} is already in use",
                    hint="stop what uses it, or pick another port: `berth cluster up --port 8899` "
                         "(or set BERTH_PORT)") from exc
            raise DaemonStartError(f"cannot listen on {self.settings.host}:{self.settings.port}: {exc}") from exc

    async def _start_management(self) -> None:
        sock = self.paths.socket
        sock.unlink(missing_ok=True)  # we hold the lock, so a socket file here is stale
        config = uvicorn.Config(self.management.app, uds=str(sock), lifespan="off", log_level="warning",
                                access_log=False, loop="none")
        self._server = _ManagementServer(config)
        old_umask = os.umask(0o177)  # the socket is created owner-only, never briefly open to others
        try:
            self._tasks.append(asyncio.create_task(self._server.serve()))
            while not self._server.started:
                if self._tasks[-1].done():
                    self._tasks[-1].result()
                    raise DaemonStartError(f"the management socket {sock} could not be opened")
                await asyncio.sleep(0.01)
        finally:
            os.umask(old_umask)
        os.chmod(sock, 0o600)

    def _admin(self, path: str) -> tuple[int, bytes, bytes]:
        if path == "/_berth/healthz":
            return 200, b"ok", b"text/plain"
        if path == "/_berth/metrics":
            body = exposition(lambda: (route.gauge() for route in self.routes.by_api.values()))
            return 200, body, b"text/plain; version=0.0.4"
        return 404, b'{"error": "unknown berth path"}', b"application/json"


def run(settings: DaemonSettings, env: Mapping[str, str]) -> None:
    """Run the daemon in this process until SIGTERM/SIGINT or `berth cluster down`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = Daemon(settings, env)
    try:
        import uvloop
    except ImportError:
        asyncio.run(daemon.serve())
    else:
        uvloop.run(daemon.serve())
