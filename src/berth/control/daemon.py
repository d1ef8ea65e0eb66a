"""The daemon: the control plane (store, reconcile loop, autoscaling, management API).

It runs under the supervisor (master.py), beside the gateway workers it routes; it may crash or be
restarted without a request failing, and takes over the running gateways and replicas when it comes
back. It exits 0 only when asked to stop, which the supervisor reads as "shut everything down".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from berth.control.autoscaling import AutoscalingLoop
from berth.control.capacity import detect_capacity
from berth.control.deploy import Deployer
from berth.control.gateways import GatewayLinks
from berth.control.ledger import RequestLedger
from berth.control.management import ManagementAPI
from berth.control.master import EXIT_GIVE_UP
from berth.control.paths import Paths
from berth.control.reconciler import Reconciler, Timeouts
from berth.control.routing import Routing
from berth.control.store import Store
from berth.control.supervisor import Supervisor
from berth.core.placement import Capacity
from berth.errors import BerthError, DaemonStartError

log = logging.getLogger("berth.control")

SHUTDOWN_TIMEOUT = 60.0


@dataclass(frozen=True)
class DaemonSettings:
    paths: Paths
    host: str = "127.0.0.1"
    port: int = 8888
    gateway_workers: int = 1
    lifeline_fd: int | None = None  # reads EOF when the supervisor is gone
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
        routes_file = self.paths.home / "routes.json"
        self.routing = Routing(settings.gateway_workers, GatewayLinks.saved_generation(routes_file))
        sockets = [self.paths.run / f"gateway-{index}.sock" for index in range(settings.gateway_workers)]
        self.gateways = GatewayLinks(self.routing, RequestLedger(self.store), sockets, routes_file)
        self.reconciler = Reconciler(self.store, Supervisor(self.paths.models), self.routing, self.gateways,
                                     self.paths, env, capacity=settings.capacity or detect_capacity(),
                                     timeouts=settings.timeouts)
        self.gateways.wake = self.reconciler.wake_from_zero
        self.autoscaling = AutoscalingLoop(self.store, self.reconciler, self.gateways, time.time)
        self.deployer = Deployer(self.store, self.reconciler, self.paths, time.time)
        self.management = ManagementAPI(self.store, self.reconciler, self.reconciler.wait_for, self.gateways,
                                        self.deployer, self.paths, self.info, self.request_stop, time.time)
        self.started_at = time.time()
        self._server: _ManagementServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "supervisor_pid": os.getppid(), "gateway_pids": self.gateways.pids(),
                "gateway_workers": self.settings.gateway_workers, "home": str(self.paths.home),
                "host": self.settings.host, "port": self.settings.port, "started_at": self.started_at}

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        self.paths.ensure()
        self.store.open()
        self.reconciler.load()
        self.gateways.start()
        await self._start_management()
        self._tasks.append(asyncio.create_task(self.autoscaling.run()))
        self._tasks.append(asyncio.create_task(self.reconciler.run()))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        if self.settings.lifeline_fd is not None:
            loop.add_reader(self.settings.lifeline_fd, self._supervisor_gone)
        log.info("berth daemon %s up: home %s", os.getpid(), self.paths.home)

    def _supervisor_gone(self) -> None:
        """Without a supervisor nothing would restart us or the gateways: exit at once, leaving the
        replicas running, so the next `berth` command starts a supervisor that adopts them."""
        log.error("the supervisor is gone; exiting (replicas keep running and will be adopted)")
        os._exit(1)

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
        await self.gateways.stop()
        self.store.close()
        self.paths.socket.unlink(missing_ok=True)
        log.info("stopped")

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


def main() -> int:
    """`python -m berth.control.daemon`, as the supervisor starts it."""
    parser = argparse.ArgumentParser(prog="python -m berth.control.daemon")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--gateway-workers", type=int, default=1)
    parser.add_argument("--lifeline-fd", type=int, default=None)
    parser.add_argument("--readiness-timeout", type=float, default=Timeouts().readiness)
    args = parser.parse_args()
    settings = DaemonSettings(paths=Paths(args.home), host=args.host, port=args.port,
                              gateway_workers=args.gateway_workers, lifeline_fd=args.lifeline_fd,
                              timeouts=Timeouts(readiness=args.readiness_timeout))
    try:
        run(settings, os.environ)
    except BerthError as exc:
        print(f"berth daemon: error: {exc.message}", file=sys.stderr, flush=True)
        if exc.hint:
            print(f"berth daemon: hint: {exc.hint}", file=sys.stderr, flush=True)
        return EXIT_GIVE_UP
    return 0


if __name__ == "__main__":
    sys.exit(main())
