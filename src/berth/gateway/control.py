"""The gateway's control channel: routes pushed in, statistics pulled out, wake-ups sent up.

The control plane connects to each gateway worker's unix socket and speaks newline-delimited JSON:

    daemon → gateway   {"op": "routes", "generation": 7, "routes": [RouteEntry, ...]}
                       {"op": "fail_waiting", "api": "iris", "message": "..."}
                       {"op": "stats"}
    gateway → daemon   {"op": "stats", ...}                 (the answer to "stats")
                       {"op": "wake", "api": "iris"}        (a request waits for an API scaled to zero)

Routes are a whole table each time, so a gateway that missed messages (it restarted, the daemon
restarted) is right again after the next one. The table is also kept in a file the gateway reads when
it starts, so a restarted gateway serves the last routes before any control plane has spoken to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from berth.gateway.keys import KeyState, attach_keys, parse_keys
from berth.gateway.routes import RoutingTable, Target, Upstream
from berth.gateway.splitting import SplitEntry

log = logging.getLogger("berth.gateway")

MAX_MESSAGE = 64 * 2**20  # a routing table of thousands of APIs still fits


@dataclass(frozen=True)
class RouteEntry:
    """One API as the control plane wants every gateway worker to route it."""

    api: str
    endpoint: str
    max_replica_concurrency: int
    holds: bool = False
    hold_limit: int = 0
    hold_timeout: float = 0.0
    timeout: float = 600.0
    targets: tuple[Target, ...] = ()
    request_log_sample_rate: float = 1.0  # networking.request_log_sample_rate
    stream_body: bool = False  # predict takes body_stream: request bodies stream to the replica as they arrive

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["targets"] = [[t.replica_id, t.socket_path] for t in self.targets]
        return data

    @classmethod
    def from_json(cls, data: Any) -> RouteEntry:
        """Checked field by field: a malformed table must fail whole, before any of it is applied."""
        if not isinstance(data, dict):
            raise ValueError(f"a route must be an object, not {type(data).__name__}")
        targets = data.get("targets", [])
        if not isinstance(targets, list) or not all(
                isinstance(t, list) and len(t) == 2 and all(isinstance(v, str) for v in t) for t in targets):
            raise ValueError("targets must be a list of [replica id, socket path] pairs")
        return cls(api=_typed(data, "api", str), endpoint=_typed(data, "endpoint", str),
                   max_replica_concurrency=_typed(data, "max_replica_concurrency", int),
                   holds=_typed(data, "holds", bool), hold_limit=_typed(data, "hold_limit", int),
                   hold_timeout=float(_typed(data, "hold_timeout", (int, float))),
                   timeout=float(_typed(data, "timeout", (int, float))),
                   targets=tuple(Target(replica, sock) for replica, sock in targets),
                   request_log_sample_rate=_sample_rate(data),
                   # Optional: a table saved by an older daemon has none (bodies buffered, as then).
                   stream_body=_typed(data, "stream_body", bool) if "stream_body" in data else False)


def _sample_rate(data: dict[str, Any]) -> float:
    """Optional: a table saved by an older daemon has none, and means every request."""
    if "request_log_sample_rate" not in data:
        return 1.0
    rate = float(_typed(data, "request_log_sample_rate", (int, float)))
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"route field 'request_log_sample_rate' must be from 0 to 1, not {rate!r}")
    return rate


def _typed(data: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"route field {name!r} has the wrong type: {value!r}")
    return value


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def routes_message(generation: int, entries: Iterable[RouteEntry],
                   splitters: Iterable[SplitEntry] = (), keys: dict[str, Any] | None = None) -> dict[str, Any]:
    message = {"op": "routes", "generation": generation, "routes": [e.as_json() for e in entries]}
    split = [s.as_json() for s in splitters]
    if split:  # optional: a table saved by an older daemon has none
        message["splitters"] = split
    if keys:  # optional: targets that require API keys, and their key entries (gateway/keys.py)
        message["keys"] = keys
    return message


def write_table(path: Path, message: dict[str, Any]) -> None:
    """Replace the saved table atomically: a gateway starting now reads the old one or the new one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(encode(message))
    os.replace(temporary, path)


def read_table(path: Path) -> dict[str, Any] | None:
    try:
        message = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return message if isinstance(message, dict) and message.get("op") == "routes" else None


class RouteApplier:
    """Applies routing tables to the live RoutingTable and remembers upstreams that still hold requests."""

    def __init__(self, routes: RoutingTable) -> None:
        self.routes = routes
        self.generation = 0
        self.retired: list[Upstream] = []  # left the table, still finishing requests
        self.keys = KeyState()

    def apply(self, message: dict[str, Any]) -> None:
        """Replace the table; raises ValueError, having changed nothing, when the message is malformed."""
        generation, routes = message.get("generation"), message.get("routes")
        if not isinstance(generation, int) or not isinstance(routes, list):
            raise ValueError("a routes message needs an integer generation and a list of routes")
        entries = [RouteEntry.from_json(data) for data in routes]
        splitters = message.get("splitters", [])
        if not isinstance(splitters, list):
            raise ValueError("a routes message's splitters must be a list")
        split_entries = [SplitEntry.from_json(data) for data in splitters]
        keys = parse_keys(message.get("keys"))
        wanted = {entry.api for entry in entries}
        for api in [api for api in self.routes.by_api if api not in wanted]:
            route = self.routes.by_api[api]
            self.retired.extend(route.upstreams)
            self.routes.remove(api)
        for entry in entries:
            route = self.routes.upsert(entry.api, entry.endpoint, entry.max_replica_concurrency)
            route.hold_requests(entry.holds, entry.hold_limit, entry.hold_timeout)
            route.timeout = entry.timeout
            route.log_rate = entry.request_log_sample_rate
            route.stream_body = entry.stream_body
            self.retired.extend(route.set_targets(entry.targets))
        self.routes.count_streaming()
        self.routes.set_splitters(split_entries)
        attach_keys(self.routes, self.keys.rings(keys, time.monotonic()))
        self.generation = generation
        self.retired = [u for u in self.retired if u.in_flight > 0]

    def fail_waiting(self, api: str, message: str) -> None:
        route = self.routes.by_api.get(api)
        if route is not None and not route.upstreams:
            route.fail_waiting(message)

    def stats(self, incarnation: str) -> dict[str, Any]:
        """In flight per API and per replica (retired upstreams included), and cumulative counters."""
        self.retired = [u for u in self.retired if u.in_flight > 0]
        replicas: dict[str, int] = {}
        for upstream in [*self.retired, *(u for r in self.routes.by_api.values() for u in r.upstreams)]:
            replica = upstream.target.replica_id
            replicas[replica] = replicas.get(replica, 0) + upstream.in_flight
        apis = {name: {"load": route.load, "held": len(route.waiting), "counters": route.stats.counters()}
                for name, route in self.routes.by_api.items()}
        report = {"op": "stats", "generation": self.generation, "incarnation": incarnation, "pid": os.getpid(),
                  "apis": apis, "replicas": replicas, "keys": self.keys.stats()}
        if self.routes.splitters:
            report["splitters"] = {name: route.split.counters() for name, route in self.routes.splitters.items()
                                   if route.split is not None}
        return report


class ControlChannel:
    """The gateway end: a unix socket server the control plane connects to."""

    def __init__(self, applier: RouteApplier, socket_path: Path, incarnation: str) -> None:
        self.applier = applier
        self.socket_path = socket_path
        self.incarnation = incarnation
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        old_umask = os.umask(0o177)  # owner-only from the start: this socket changes routing
        try:
            self.server = await asyncio.start_unix_server(self._serve, str(self.socket_path), limit=MAX_MESSAGE)
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.close()
        self.socket_path.unlink(missing_ok=True)

    def wake(self, api: str) -> None:
        """Ask every connected control plane for a replica of an API scaled to zero."""
        for writer in list(self._writers):
            with contextlib.suppress(ConnectionError, RuntimeError):
                writer.write(encode({"op": "wake", "api": api}))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        # A control plane that just (re)connected may have missed wake-ups sent while none was.
        for name, route in self.applier.routes.by_api.items():
            if route.waiting:
                writer.write(encode({"op": "wake", "api": name}))
        try:
            while line := await reader.readline():
                self._handle(line, writer)
        except (ConnectionError, ValueError, asyncio.LimitOverrunError) as exc:
            log.warning("control connection dropped: %s", exc)
        finally:
            self._writers.discard(writer)
            writer.close()

    def _handle(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        """One message; a bad one is logged and answered with an error, and changes nothing."""
        try:
            message = json.loads(line)
            op = message.get("op") if isinstance(message, dict) else None
            if op == "routes":
                self.applier.apply(message)
            elif op == "fail_waiting" and isinstance(message.get("api"), str):
                self.applier.fail_waiting(message["api"], str(message.get("message", "")))
            elif op == "stats":
                writer.write(encode(self.applier.stats(self.incarnation)))
            else:
                raise ValueError(f"unknown control message {line[:200]!r}")
        except ValueError as exc:
            log.warning("control message refused: %s", exc)
            writer.write(encode({"op": "error", "error": str(exc)}))
