"""The control plane's side of the gateway workers: push routes, pull statistics, take wake-ups.

The gateways run in their own processes (started by the supervisor); the daemon connects to each
worker's control socket, and reconnects whenever a worker or the daemon itself was restarted. Nothing
here is on the request path: a gateway with no daemon connected keeps serving its last table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from berth.control.ledger import RequestLedger
from berth.control.routing import Routing
from berth.control.splitters import add_counters
from berth.gateway.control import MAX_MESSAGE, encode, read_table, write_table
from berth.observability.stats import APIStats

if TYPE_CHECKING:
    from berth.control.keys import KeyLedger

log = logging.getLogger("berth.control")

POLL_SECONDS = 0.2
RECONNECT_SECONDS = 0.1
FLUSH_SECONDS = 1.0


@dataclass
class WorkerStats:
    generation: int
    pid: int
    loads: dict[str, int] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)  # of `loads`: waiting for a replica (scale from zero)


class GatewayLink:
    """One connection to one gateway worker, re-established for as long as the daemon runs."""

    def __init__(self, index: int, path: Path, links: GatewayLinks) -> None:
        self.index = index
        self.path = path
        self.links = links
        self.writer: asyncio.StreamWriter | None = None
        self.stats: WorkerStats | None = None
        self.sent_generation: int | None = None
        self.splitters: dict[str, Any] = {}  # the worker's traffic splitter counters, as last reported

    async def run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_MESSAGE)
            except OSError:
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            self.writer, self.sent_generation = writer, None
            self.push()
            poller = asyncio.create_task(self._poll(writer))
            try:
                while line := await reader.readline():
                    self._handle(json.loads(line))
            except (ConnectionError, ValueError) as exc:
                log.warning("gateway worker %d: control connection lost: %s", self.index, exc)
            finally:
                poller.cancel()
                self.writer, self.stats = None, None
                writer.close()
            await asyncio.sleep(RECONNECT_SECONDS)

    def push(self) -> None:
        routing = self.links.routing
        if self.writer is None or self.sent_generation == routing.generation or not routing.established:
            return
        self.send(routing.message())
        self.sent_generation = routing.generation

    def send(self, message: dict[str, Any]) -> None:
        if self.writer is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                self.writer.write(encode(message))

    async def _poll(self, writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(encode({"op": "stats"}))
            await asyncio.sleep(POLL_SECONDS)

    def _handle(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "stats":
            apis = message.get("apis", {})
            self.stats = WorkerStats(generation=int(message["generation"]), pid=int(message["pid"]),
                                     loads={api: int(v["load"]) for api, v in apis.items()},
                                     replicas={r: int(n) for r, n in message.get("replicas", {}).items()},
                                     held={api: int(v.get("held") or 0) for api, v in apis.items()})
            self.splitters = message.get("splitters") or {}
            self.links.ledger.observe(self.index, str(message["incarnation"]),
                                      {api: v["counters"] for api, v in apis.items()})
            if self.links.keys is not None:  # per API key counts (control/keys.py)
                self.links.keys.observe(self.index, str(message["incarnation"]), message.get("keys") or {})
            for api, values in apis.items():
                if values.get("held"):  # wake-ups are idempotent; a lost one must not leave requests waiting
                    self.links.wake(api)
            if self.stats.generation != self.sent_generation:
                # Messages on one connection are in order, so this report came after our last push:
                # the worker refused it. Send the table again rather than leave it on an old one.
                self.sent_generation = None
                self.push()
        elif op == "wake":
            self.links.wake(str(message["api"]))
        elif op == "error":
            log.warning("gateway worker %d refused a control message: %s", self.index, message.get("error"))


class GatewayLinks:
    """Every gateway worker of this instance, as one thing: the table they hold and what they count."""

    def __init__(self, routing: Routing, ledger: RequestLedger, sockets: list[Path], routes_file: Path,
                 wake: Callable[[str], None] = lambda api: None) -> None:
        self.routing = routing
        self.ledger = ledger
        self.routes_file = routes_file
        self.wake = wake
        self.links = [GatewayLink(index, path, self) for index, path in enumerate(sockets)]
        self._saved_generation: int | None = None
        self.keys: KeyLedger | None = None  # set by the key service
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def saved_generation(routes_file: Path) -> int:
        """Generations continue from the saved table, so they only grow across daemon restarts."""
        saved = read_table(routes_file)
        return int(saved.get("generation", 0)) if saved else 0

    def start(self) -> None:
        self.ledger.load()
        self._tasks = [asyncio.create_task(link.run()) for link in self.links]
        self._tasks.append(asyncio.create_task(self._flush_loop()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.ledger.flush(self.routing.entries)

    def push(self) -> None:
        """Send the current table to every worker that has not got it, saving it first for restarts."""
        if not self.routing.established:
            return
        if self._saved_generation != self.routing.generation:
            write_table(self.routes_file, self.routing.message())
            self._saved_generation = self.routing.generation
        for link in self.links:
            link.push()

    def fail_waiting(self, api: str, message: str) -> None:
        for link in self.links:
            link.send({"op": "fail_waiting", "api": api, "message": message})

    @property
    def connected(self) -> list[GatewayLink]:
        return [link for link in self.links if link.writer is not None]

    def loads(self) -> dict[str, int] | None:
        """Requests in flight or held per API across workers; None when no worker has reported."""
        reports = [link.stats for link in self.connected if link.stats is not None]
        if not reports:
            return None
        loads: dict[str, int] = {}
        for report in reports:
            for api, load in report.loads.items():
                loads[api] = loads.get(api, 0) + load
        return loads

    def held(self) -> dict[str, int]:
        """Requests held per API across workers (counted in `loads` too)."""
        held: dict[str, int] = {}
        for report in (link.stats for link in self.connected if link.stats is not None):
            for api, count in report.held.items():
                held[api] = held.get(api, 0) + count
        return held

    def load(self, api: str) -> int:
        return (self.loads() or {}).get(api, 0)

    def in_flight_of(self, replica_id: str, since: int) -> int | None:
        """Requests a replica holds across workers, or None until every connected worker has reported on a
        table of generation `since` or later (before that, a request may still be on its way to it)."""
        total = 0
        for link in self.connected:
            if link.stats is None or link.stats.generation < since:
                return None
            total += link.stats.replicas.get(replica_id, 0)
        return total

    def stats(self, api: str) -> APIStats:
        return self.ledger.stats(api)

    def split_counters(self) -> dict[str, Any]:
        """Traffic splitter counters summed over the connected workers (since each started)."""
        total: dict[str, Any] = {}
        for link in self.connected:
            add_counters(total, link.splitters)
        return total

    def pids(self) -> list[int]:
        return [link.stats.pid for link in self.connected if link.stats is not None]

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                self.ledger.flush(self.routing.entries)
            except Exception:  # a busy database must not end statistics for good
                log.exception("saving request statistics failed")
