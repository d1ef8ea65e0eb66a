"""What the replicas measure, pulled by the daemon: predict time, batches, predictions, CPU, memory, GPUs.

Every replica process keeps cumulative counters and answers `GET /stats` on its own unix socket
(contract: berth.runtime.contract). Every 2 s the collector asks each process of each ready replica,
turns the readings into deltas per process incarnation (a restarted process starts from zero), and
adds them into per-API, per-version aggregates kept in memory; prediction deltas also go to the
history recorder. A replica being stopped is asked once more after its drain, so nothing it counted
is lost. Nothing here is on the request path: a slow or dead replica costs one timed-out poll.

The last reading of each process is saved beside the store after every history flush (`save`), so a
restarted daemon takes deltas from where the last one stopped instead of counting a running
process's predictions again; a process it knows nothing of that started before it is read as a
baseline only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from berth.control.fleet import FleetView
from berth.control.replica import Replica
from berth.control.usage import GPUSample, ResourceSampler
from berth.core.lifecycle import Event, Phase
from berth.observability.histogram import Histogram

log = logging.getLogger("berth.control")

POLL_SECONDS = 2.0
RESOURCE_SECONDS = 5.0
REQUEST_TIMEOUT = 1.0
MAX_RESPONSE = 4 * 2**20


class PredictionSink(Protocol):
    def add_predictions(self, api: str, delta: dict[str, Any]) -> None: ...


@dataclass
class VersionAggregate:
    """What the processes of every replica of one version reported, added up since the daemon started."""

    predict: Histogram | None = None
    batch_size: Histogram | None = None
    batch_wait: Histogram | None = None


@dataclass
class PredictionAggregate:
    model_type: str | None = None
    classes: dict[str, int] = field(default_factory=dict)
    values: Histogram | None = None
    min: float | None = None
    max: float | None = None
    wrong_type: int = 0


@dataclass
class APIAggregate:
    versions: dict[str, VersionAggregate] = field(default_factory=dict)
    predictions: PredictionAggregate = field(default_factory=PredictionAggregate)
    init_seconds: dict[tuple[str, str], float] = field(default_factory=dict)  # (version, replica) -> seconds
    restarts: int = 0
    oom_kills: int = 0


@dataclass
class ReplicaUsage:
    api: str
    cpu_seconds: float
    rss: float


class ReplicaCollector:
    def __init__(self, fleet: FleetView, replicas: Callable[[], Mapping[str, Replica]],
                 sink: PredictionSink | None = None, wake: Callable[[], None] = lambda: None,
                 state_file: Path | None = None, started_at: float | None = None) -> None:
        self.fleet = fleet
        self.state_file = state_file
        self.started_at = time.time() if started_at is None else started_at
        self.replicas = replicas
        self.sink = sink
        self.wake = wake  # the reconciler, when a final poll it waits for is done
        self.apis: dict[str, APIAggregate] = {}
        self.seen: dict[tuple[str, int], tuple[str, dict[str, Any]]] = {}  # (replica, process) -> last reading
        self.usage: dict[str, ReplicaUsage] = {}
        self.gpus: list[GPUSample] = []
        self.sampler = ResourceSampler()
        self._final: dict[str, asyncio.Task[None]] = {}

    # --- the readings seen, across daemon restarts -----------------------------------------------
    def load(self) -> None:
        if self.state_file is None:
            return
        try:
            saved = json.loads(self.state_file.read_text())
            self.seen = {(replica, int(process)): (incarnation, reading)
                         for replica, process, incarnation, reading in saved}
        except (OSError, ValueError, TypeError) as exc:
            log.info("no saved replica readings (%s): processes that were running are read as baselines", exc)

    def save(self) -> None:
        """Called right after the history flush, which holds the deltas up to these readings."""
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps([[r, p, inc, reading] for (r, p), (inc, reading) in self.seen.items()]))
        os.replace(tmp, self.state_file)

    # --- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_resources = 0.0
        while True:
            started = loop.time()
            try:
                await self.poll_all()
                if started >= next_resources:
                    next_resources = started + RESOURCE_SECONDS
                    await self.sample_resources()
            except Exception:  # statistics must never take the control plane down
                log.exception("collecting replica statistics failed")
            await asyncio.sleep(max(0.0, POLL_SECONDS - (loop.time() - started)))

    async def poll_all(self) -> None:
        replicas = self.replicas()
        ready = [r for r in replicas.values() if r.phase is Phase.READY and r.id not in self._final]
        await asyncio.gather(*(self.poll(replica) for replica in ready))
        self._forget_gone(replicas)

    async def poll(self, replica: Replica) -> None:
        readings = await asyncio.gather(*(fetch_stats(sock) for sock in replica.sockets))
        for index, reading in enumerate(readings):
            if reading is not None:
                self.add_reading(replica, index, reading)

    def final_poll_done(self, replica: Replica) -> bool:
        """Draining's hook before SIGTERM: True once the replica's last counters are in. The first call
        starts the poll and answers False; the reconciler is woken when it is done."""
        if replica.gone or replica.ready_at is None:
            return True  # it never served, or its process is gone: nothing to ask
        task = self._final.get(replica.id)
        if task is None:
            self._final[replica.id] = task = asyncio.get_running_loop().create_task(self.poll(replica))
            task.add_done_callback(lambda _: self.wake())
        return task.done()

    async def sample_resources(self) -> None:
        replicas = [r for r in self.replicas().values() if r.phase.running and r.pid is not None]
        cpu = await asyncio.to_thread(self.sampler.cpu_seconds, {r.id: r.pid for r in replicas if r.pid})
        self.usage = {r.id: ReplicaUsage(r.api, cpu.get(r.id, 0.0), r.rss) for r in replicas if r.id in cpu}
        self.gpus = await asyncio.to_thread(self.sampler.gpus)

    # --- failures (Health.failed is wrapped by the daemon to call this) -----------------------
    def replica_failed(self, replica: Replica, event: Event) -> None:
        aggregate = self.apis.setdefault(replica.api, APIAggregate())
        aggregate.restarts += 1  # every failure is followed by a start after its backoff
        if event is Event.OUT_OF_MEMORY:
            aggregate.oom_kills += 1

    # --- deltas -------------------------------------------------------------------------------
    def add_reading(self, replica: Replica, process: int, reading: dict[str, Any]) -> None:
        key = (replica.id, process)
        incarnation = str(reading.get("incarnation", ""))
        seen = self.seen.get(key)
        self.seen[key] = (incarnation, reading)
        if seen is None and _started(incarnation) < self.started_at:
            return  # counted by an earlier daemon whose readings were not saved: a baseline only
        before = seen[1] if seen is not None and seen[0] == incarnation else {}
        aggregate = self.apis.setdefault(replica.api, APIAggregate())
        version = str(reading.get("version") or replica.version)
        per_version = aggregate.versions.setdefault(version, VersionAggregate())
        per_version.predict = _merge(per_version.predict, _since(reading, before, "predict"))
        per_version.batch_size = _merge(per_version.batch_size, _since(reading, before, "batch_size"))
        per_version.batch_wait = _merge(per_version.batch_wait, _since(reading, before, "batch_wait"))
        init = reading.get("init_seconds")
        if isinstance(init, (int, float)):
            slot = (version, replica.id)  # the slowest process of a replica is when it could serve
            aggregate.init_seconds[slot] = max(aggregate.init_seconds.get(slot, 0.0), float(init))
        change = prediction_delta(reading.get("predictions"), before.get("predictions"))
        if change is not None:
            _add_predictions(aggregate.predictions, change)
            if self.sink is not None:
                self.sink.add_predictions(replica.api, change)

    def _forget_gone(self, replicas: Mapping[str, Replica]) -> None:
        for key in [key for key in self.seen if key[0] not in replicas]:
            del self.seen[key]
        for replica_id in [r for r in self._final if r not in replicas]:
            del self._final[replica_id]
        apis = set(self.fleet.apis)
        for api in [api for api in self.apis if api not in apis]:
            del self.apis[api]
        for replica_id in [r for r in self.usage if r not in replicas]:
            del self.usage[replica_id]
        for aggregate in self.apis.values():
            for slot in [slot for slot in aggregate.init_seconds if slot[1] not in replicas]:
                del aggregate.init_seconds[slot]


def _started(incarnation: str) -> float:
    """The process start time in an incarnation ("<pid>-<start time>"); +inf when it has none."""
    try:
        return float(incarnation.split("-", 1)[1])
    except (IndexError, ValueError):
        return float("inf")


def _since(now: Mapping[str, Any], before: Mapping[str, Any], name: str) -> Histogram | None:
    current = _histogram(now.get(name))
    if current is None:
        return None
    return current.since(_histogram(before.get(name)))


def _histogram(data: Any) -> Histogram | None:
    if not isinstance(data, Mapping):
        return None
    try:
        return Histogram.from_json(dict(data))
    except (KeyError, TypeError, ValueError):
        return None


def _merge(total: Histogram | None, change: Histogram | None) -> Histogram | None:
    if change is None or change.count == 0:
        return total
    if total is None or total.bounds != change.bounds:
        return change.copy()
    total.merge(change)
    return total


def prediction_delta(now: Any, before: Any) -> dict[str, Any] | None:
    """The /stats "predictions" block as a delta against the same process's previous one; None when the
    API has no monitoring or nothing new was predicted."""
    if not isinstance(now, Mapping):
        return None
    before = before if isinstance(before, Mapping) else {}
    classes_now = now.get("classes") or {}
    classes_before = before.get("classes") or {}
    classes = {str(k): int(v) - int(classes_before.get(k, 0)) for k, v in classes_now.items()}
    values_now = _histogram(now.get("values"))
    values = values_now.since(_histogram(before.get("values"))) if values_now is not None else None
    wrong = int(now.get("wrong_type") or 0) - int(before.get("wrong_type") or 0)
    if any(v < 0 for v in classes.values()) or wrong < 0:
        return prediction_delta(now, None)  # a counter went backwards: a new process after all
    classes = {k: v for k, v in classes.items() if v}
    if not classes and not wrong and (values is None or values.count == 0):
        return None
    delta: dict[str, Any] = {"model_type": now.get("model_type"), "key": now.get("key"),
                             "classes": classes if now.get("model_type") == "classification" else None,
                             "values": values.as_json() if values is not None else None,
                             "wrong_type": wrong}
    if values is not None and values.count:
        delta["values"]["min"] = now.get("values", {}).get("min")
        delta["values"]["max"] = now.get("values", {}).get("max")
    return delta


def _add_predictions(total: PredictionAggregate, change: Mapping[str, Any]) -> None:
    total.model_type = change.get("model_type") or total.model_type
    for label, count in (change.get("classes") or {}).items():
        total.classes[label] = total.classes.get(label, 0) + count
    total.wrong_type += int(change.get("wrong_type") or 0)
    values = change.get("values")
    if isinstance(values, Mapping):
        total.values = _merge(total.values, _histogram(values))
        low, high = values.get("min"), values.get("max")
        if isinstance(low, (int, float)):
            total.min = low if total.min is None else min(total.min, low)
        if isinstance(high, (int, float)):
            total.max = high if total.max is None else max(total.max, high)


# --- one GET over a unix socket ------------------------------------------------------------------
async def fetch_stats(sock: str, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any] | None:
    """GET /stats from one replica process; None when it does not answer in time or answers nonsense."""
    try:
        return await asyncio.wait_for(_get_json(sock, "/stats"), timeout)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        log.debug("GET /stats on %s: %s", sock, exc)
        return None


async def _get_json(sock: str, path: str) -> dict[str, Any]:
    # A raw HTTP/1.1 request: an HTTP client per socket would cost more than the poll itself.
    reader, writer = await asyncio.open_unix_connection(sock)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: replica\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head)
        if status != 200:
            raise ValueError(f"status {status}")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read(MAX_RESPONSE)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            return bytes(body)
        body += await reader.readexactly(size + 2)
        del body[-2:]
        if len(body) > MAX_RESPONSE:
            raise ValueError("response too large")
