"""A gateway worker process: serves the listening socket it inherits, routed by the control plane.

It never depends on the control plane being up: it starts from the last saved routing table and
keeps serving on whatever table it last received. It stops when told (SIGTERM) or when the
supervisor that started it is gone (its lifeline pipe closes), finishing the requests it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from berth.gateway.control import ControlChannel, RouteApplier, read_table
from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.requestlog import RequestLog
from berth.gateway.routes import RoutingTable

log = logging.getLogger("berth.gateway")

DRAIN_TIMEOUT = 30.0


@dataclass(frozen=True)
class WorkerSettings:
    listen_fd: int
    control_socket: Path
    routes_file: Path
    index: int = 0
    lifeline_fd: int | None = None
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    observe_socket: Path | None = None  # the daemon's read-only app (metrics, dashboard): run/observe.sock
    request_logs: Path | None = None    # BERTH_HOME/logs: request lines go to <api>/requests-<index>.log


class GatewayWorker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.routes = RoutingTable()
        self.applier = RouteApplier(self.routes)
        self.incarnation = f"{os.getpid()}-{time.time_ns()}"
        self.channel = ControlChannel(self.applier, settings.control_socket, self.incarnation)
        request_log = RequestLog(settings.request_logs, settings.index) if settings.request_logs else None
        self.gateway = Gateway(self.routes, settings.gateway, wake=self.channel.wake,
                               observe_socket=str(settings.observe_socket) if settings.observe_socket else None,
                               request_log=request_log)
        self._stop = asyncio.Event()

    async def start(self) -> None:
        _raise_file_limit()
        saved = read_table(self.settings.routes_file)
        if saved is not None:
            self.applier.apply(saved)
        listener = socket.socket(fileno=self.settings.listen_fd)
        listener.setblocking(False)
        await self.gateway.start(sock=listener)
        await self.channel.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        if self.settings.lifeline_fd is not None:
            loop.add_reader(self.settings.lifeline_fd, self._lifeline_readable)
        log.info("gateway worker %d (pid %d) serving %d API(s)", self.settings.index, os.getpid(),
                 len(self.routes.by_api))

    def _lifeline_readable(self) -> None:
        # Readable means EOF: the supervisor that holds the other end has died.
        assert self.settings.lifeline_fd is not None
        asyncio.get_running_loop().remove_reader(self.settings.lifeline_fd)
        log.warning("gateway worker %d: the supervisor is gone; stopping", self.settings.index)
        self._stop.set()

    async def serve(self) -> None:
        await self.start()
        await self._stop.wait()
        await self.stop()

    async def stop(self) -> None:
        """Stop accepting, let the requests in flight (and held ones) finish, bounded; then close."""
        await self.gateway.stop(grace=DRAIN_TIMEOUT)
        await self.channel.stop()


def _raise_file_limit() -> None:
    """Each client and upstream connection is a descriptor: allow as many as the hard limit lets us."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    log.debug("file limit %d -> %d", soft, hard)


def run(settings: WorkerSettings) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = GatewayWorker(settings)
    try:
        import uvloop
    except ImportError:
        asyncio.run(worker.serve())
    else:
        uvloop.run(worker.serve())
