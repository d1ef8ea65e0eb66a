"""The daemon: the control plane (store, reconcile loop, autoscaling, management API).

It runs under the supervisor (master.py), beside the gateway workers it routes; it may crash or be
restarted without a request failing, and takes over the running gateways and replicas when it comes
back. It exits 0 only when asked to stop, which the supervisor reads as "shut everything down".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import uvicorn

from berth.config.units import format_bytes, format_duration
from berth.control.autoscaling import AutoscalingLoop
from berth.control.capacity import detect_capacity
from berth.control.collector import ReplicaCollector
from berth.control.deploy import Deployer
from berth.control.gateways import GatewayLinks
from berth.control.history import HistoryRecorder
from berth.control.keys import KeyService
from berth.control.ledger import RequestLedger
from berth.control.logs import MAX_LOG_SIZE, RETENTION_SECONDS, cap_logs, collect_logs
from berth.control.management import ManagementAPI
from berth.control.master import EXIT_GIVE_UP
from berth.control.metrics import BerthCollector
from berth.control.observe import ObserveSource, observe_app
from berth.control.observing import Observing
from berth.control.paths import Paths
from berth.control.reconciler import Reconciler, Timeouts
from berth.control.routing import Routing
from berth.control.snapshot import collect_snapshots
from berth.control.store import Store
from berth.control.supervisor import Supervisor
from berth.core.placement import Capacity
from berth.errors import BerthError, DaemonStartError
from berth.gateway.limits import GatewaySettings
from berth.pyenv.collect import collect_environments

log = logging.getLogger("berth.control")

SHUTDOWN_TIMEOUT = 60.0
HOUSEKEEPING_SECONDS = 60.0
# The flag names of `berth cluster up` for GatewaySettings' fields, where they differ.
GATEWAY_FLAG_NAMES = {"max_header_bytes": "max_header_size"}
UNSET_GATEWAY_FIELDS = {"linger_timeout"}  # not a `cluster up` option


@dataclass(frozen=True)
class DaemonSettings:
    paths: Paths
    host: str = "127.0.0.1"
    port: int = 8888
    gateway_workers: int = 1
    lifeline_fd: int | None = None  # reads EOF when the supervisor is gone
    timeouts: Timeouts = field(default_factory=Timeouts)
    capacity: Capacity | None = None  # detected from the machine when not given
    gateway: Mapping[str, Any] = field(default_factory=dict)  # what the gateways were started with
    log_retention: float = RETENTION_SECONDS  # logs of deleted APIs and gone replicas
    max_log_size: int = MAX_LOG_SIZE  # bytes of daemon.log or a live replica's log before it is copied to .1

    def effective(self) -> dict[str, Any]:
        """Every setting `berth cluster up` takes, as this instance runs with it (defaults filled in)."""
        fields = {f.name: f for f in dataclasses.fields(GatewaySettings)}
        gateway = GatewaySettings(**{k: tuple(v) if isinstance(v, list) else v  # type: ignore[arg-type]
                                     for k, v in self.gateway.items() if k in fields})
        limits = {GATEWAY_FLAG_NAMES.get(name, name): getattr(gateway, name)
                  for name in fields if name not in UNSET_GATEWAY_FIELDS}
        limits["trusted_proxies"] = list(gateway.trusted_proxies)
        return {"host": self.host, "port": self.port, "gateway_workers": self.gateway_workers,
                "readiness_timeout": self.timeouts.readiness, "log_retention": self.log_retention,
                "max_log_size": self.max_log_size, **limits}


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
        self.history = HistoryRecorder(self.store, time.time)
        routes_file = self.paths.home / "routes.json"
        self.routing = Routing(settings.gateway_workers, GatewayLinks.saved_generation(routes_file))
        sockets = [self.paths.run / f"gateway-{index}.sock" for index in range(settings.gateway_workers)]
        self.gateways = GatewayLinks(self.routing, RequestLedger(self.store, self.history), sockets, routes_file)
        self.reconciler = Reconciler(self.store, Supervisor(self.paths.models), self.routing, self.gateways,
                                     self.paths, env, capacity=settings.capacity or detect_capacity(),
                                     timeouts=settings.timeouts)
        self.gateways.wake = self.reconciler.wake_from_zero
        self.autoscaling = AutoscalingLoop(self.store, self.reconciler, self.gateways, time.time)
        self.deployer = Deployer(self.store, self.reconciler, self.paths, time.time)
        self.keys = KeyService(self.store, lambda: [*(name for name, api in self.reconciler.apis.items()
                                                      if not api.deleting),
                                                    *(record.name for record in self.deployer.splitters.all())],
                               self.routing, self.gateways, time.time)
        self.management = ManagementAPI(self.store, self.reconciler, self.reconciler.wait_for, self.gateways,
                                        self.deployer, self.paths, self.info, self.request_stop, time.time,
                                        keys=self.keys)
        self.collector = ReplicaCollector(self.reconciler, lambda: self.reconciler.replicas, self.history,
                                          wake=self.reconciler.wake, state_file=self.paths.home / "replica-stats.json")
        self.observing = Observing(self.reconciler, self.gateways, self.store, self.collector, self.history)
        self.metrics = BerthCollector(self.observing.sources())
        self.metrics.sources.key_requests = self.keys.ledger.samples
        self.observe = ObserveSource(self.reconciler, self.gateways, self.store, self.metrics,
                                     self.gateway_url)
        self.started_at = time.time()
        self._servers: list[_ManagementServer] = []
        self._tasks: list[asyncio.Task[None]] = []  # the servers
        self._loops: list[asyncio.Task[None]] = []  # stopped first, in reverse order of start
        self._stop = asyncio.Event()

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "supervisor_pid": os.getppid(), "gateway_pids": self.gateways.pids(),
                "gateway_workers": self.settings.gateway_workers, "home": str(self.paths.home),
                "host": self.settings.host, "port": self.settings.port, "started_at": self.started_at,
                "settings": self.settings.effective()}

    def gateway_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def request_stop(self) -> None:
        self._stop.set()

    async def start(self) -> None:
        self.paths.ensure()
        self.store.open()
        self.reconciler.load()
        self.deployer.splitters.load()
        self.keys.load()
        self.collector.load()
        self.reconciler.health.on_failure = self.collector.replica_failed
        self.reconciler.draining.before_stop = self.collector.final_poll_done
        self.gateways.start()
        await self._serve(self.management.app, self.paths.socket, "management")
        # A dashboard's open event stream must not hold the daemon's stop for long.
        await self._serve(observe_app(self.metrics, self.observe), self.paths.observe_socket, "observe",
                          graceful=2)
        for work in (self._housekeeping(), self.observing.record_history(), self.collector.run(),
                     self.autoscaling.run(), self.reconciler.run(), self.keys.run()):
            self._loops.append(asyncio.create_task(work))
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
        for task in reversed(self._loops):
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self.reconciler.shutdown(SHUTDOWN_TIMEOUT)  # drained replicas are polled a last time
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.gateways.stop()  # the ledger's last deltas go to the history too
        try:
            self.observing.flush()
        except Exception:  # the store may be busy; the minute rows lost are the only cost
            log.exception("saving request history failed")
        self.store.close()
        self.paths.socket.unlink(missing_ok=True)
        self.paths.observe_socket.unlink(missing_ok=True)
        log.info("stopped")

    async def _serve(self, app: Any, sock: Path, kind: str, graceful: int | None = None) -> None:
        if sock.exists() or sock.is_symlink():  # we hold the lock, so a socket file here is stale
            log.info("removing the stale %s socket %s (the last daemon did not stop cleanly)", kind, sock)
            sock.unlink(missing_ok=True)
        config = uvicorn.Config(app, uds=str(sock), lifespan="off", log_level="warning",
                                access_log=False, loop="none", timeout_graceful_shutdown=graceful)
        server = _ManagementServer(config)
        self._servers.append(server)
        old_umask = os.umask(0o177)  # the socket is created owner-only, never briefly open to others
        try:
            self._tasks.append(asyncio.create_task(server.serve()))
            while not server.started:
                if self._tasks[-1].done():
                    self._tasks[-1].result()
                    raise DaemonStartError(f"the {kind} socket {sock} could not be opened")
                await asyncio.sleep(0.01)
        finally:
            os.umask(old_umask)
        os.chmod(sock, 0o600)

    # --- housekeeping ---------------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        """At start, then every minute: remove snapshots and logs nothing will use again."""
        chores: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("removing unused snapshots and logs", self.collect_garbage), ("capping logs", self.cap_logs),
            ("removing unused environments", self.collect_environments), ("folding history", self._fold_history)]
        while True:
            for what, chore in chores:
                try:
                    await chore()
                except Exception:  # housekeeping must never take the control plane down, nor one chore the rest
                    log.exception("housekeeping failed %s", what)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def _fold_history(self) -> None:
        self.history.fold(time.time())  # minute rows into hours, old hours dropped

    async def collect_garbage(self) -> tuple[list[str], list[str]]:
        """The snapshots and log files removed. What is in use is read here, on the loop, where deploys
        and the reconciler change it; the removal runs in a thread (a deploy's snapshot may hold it)."""
        keep = self._snapshots_in_use()
        apis = {record.name for record in self.store.list_apis()} | set(self.reconciler.apis)
        live = set(self.reconciler.replicas) | {record.id for record in self.store.list_replicas()}
        now = time.time()
        snapshots = await asyncio.to_thread(collect_snapshots, self.paths.snapshots, keep, now)
        logs = await asyncio.to_thread(collect_logs, self.paths.logs, apis, live, now,
                                       self.settings.log_retention)
        if snapshots:
            log.info("housekeeping: removed %d snapshot(s) no deployed version uses: %s", len(snapshots),
                     " ".join(snapshots))
        if logs:
            log.info("housekeeping: removed logs of deleted APIs and stopped replicas, untouched for over %s: %s",
                     format_duration(self.settings.log_retention), " ".join(logs))
        return snapshots, logs

    async def cap_logs(self) -> list[Path]:
        """The logs still written to that were over the size cap: each copied to `.1` and emptied."""
        files = {self.paths.daemon_log} | {replica.log_path for replica in self.reconciler.replicas.values()}
        files |= {self.paths.replica_log(record.api, record.id) for record in self.store.list_replicas()}
        capped, failed = await asyncio.to_thread(cap_logs, sorted(files), self.settings.max_log_size)
        for failure in failed:
            log.warning("housekeeping: could not copy %s to .1 (kept whole; tried again in a minute)", failure)
        if capped:
            names = " ".join(str(path.relative_to(self.paths.home)) for path in capped)
            log.info("housekeeping: logs over %s copied to .1 and emptied: %s",
                     format_bytes(self.settings.max_log_size), names)
        return capped

    async def collect_environments(self) -> list[str]:
        """The Python environments removed: unused by any deployed version, beyond the last few used."""
        keep = self.store.environments_in_use()
        for api in self.reconciler.apis.values():
            keep.update(version.environment for version in api.versions.values())
            if api.fallback is not None:
                keep.add(api.fallback.environment)
        removed = await asyncio.to_thread(collect_environments, self.paths.envs, keep - {""}, time.time())
        if removed:
            log.info("housekeeping: removed %d Python environment(s) no deployed version uses: %s", len(removed),
                     " ".join(removed))
        return removed

    def _snapshots_in_use(self) -> set[str]:
        keep = self.store.snapshots_in_use() | set(self.deployer.in_flight)
        for api in self.reconciler.apis.values():  # deleting ones too: their replicas still drain
            keep.update(version.project.name for version in api.versions.values())
            if api.fallback is not None:
                keep.add(api.fallback.project.name)
        for replica in self.reconciler.replicas.values():  # whatever it runs, it runs in its snapshot
            keep.update(_cwd_names(replica.pid))
        return keep


def _cwd_names(pid: int | None) -> set[str]:
    if pid is None:
        return set()
    try:
        return {Path(psutil.Process(pid).cwd()).name}
    except psutil.Error:
        return set()


def run(settings: DaemonSettings, env: Mapping[str, str]) -> None:
    """Run the daemon in this process until SIGTERM/SIGINT or `berth cluster down`."""
    # BERTH_LOG_LEVEL=debug adds what is routine: every autoscaler decision, for one.
    level = getattr(logging, env.get("BERTH_LOG_LEVEL", "info").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    parser.add_argument("--log-retention", type=float, default=RETENTION_SECONDS)
    parser.add_argument("--max-log-size", type=int, default=MAX_LOG_SIZE)
    parser.add_argument("--gateway-settings", default="{}", help="the gateways' settings as JSON, to report them")
    args = parser.parse_args()
    settings = DaemonSettings(paths=Paths(args.home), host=args.host, port=args.port,
                              gateway_workers=args.gateway_workers, lifeline_fd=args.lifeline_fd,
                              timeouts=Timeouts(readiness=args.readiness_timeout),
                              gateway=json.loads(args.gateway_settings), log_retention=args.log_retention,
                              max_log_size=args.max_log_size)
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
