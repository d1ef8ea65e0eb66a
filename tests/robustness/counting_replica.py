"""A raw asyncio replica on a unix socket that counts request body bytes as they arrive.

It stands in for a predictor that takes `body_stream`: tests see exactly when each byte reached the
replica (so a body that was streamed can be told from one buffered whole), can make it stop reading
(backpressure), or answer before the body is whole (as a predictor's 413 would).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httptools


@dataclass
class Seen:
    """One request as the replica got it."""

    headers: dict[str, str] = field(default_factory=dict)
    received: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    complete: bool = False


class CountingReplica:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.requests: list[Seen] = []
        self.open = 0  # connections open now
        self.hashing = True  # False: only count (a digest of a whole GiB costs seconds)
        self.answer_early_after: int | None = None  # answer 413 once this many body bytes arrived
        self.reading = asyncio.Event()  # cleared: the replica stops reading (its socket fills up)
        self.reading.set()
        self.server: asyncio.Server | None = None
        self.transports: list[asyncio.Transport] = []

    @property
    def received(self) -> int:
        return sum(seen.received for seen in self.requests)

    async def start(self) -> None:
        self.server = await asyncio.get_running_loop().create_unix_server(lambda: _Protocol(self), self.path)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for transport in self.transports:
            transport.close()
        await self.server.wait_closed()


class _Protocol(asyncio.Protocol):
    def __init__(self, replica: CountingReplica) -> None:
        self.replica = replica
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.seen = Seen()
        self.answered = False
        self.name = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.replica.open += 1
        self.replica.transports.append(self.transport)  # type: ignore[arg-type]
        if not self.replica.reading.is_set():
            self._hold()

    def connection_lost(self, exc: Exception | None) -> None:
        self.replica.open -= 1
        if self.transport in self.replica.transports:
            self.replica.transports.remove(self.transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()
        if not self.replica.reading.is_set():
            self._hold()

    def _hold(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._resume_later())

    async def _resume_later(self) -> None:
        await self.replica.reading.wait()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # --- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.seen = Seen()
        self.answered = False
        self.replica.requests.append(self.seen)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.seen.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.seen.received += len(body)
        if self.replica.hashing:
            self.seen.digest.update(body)
        early = self.replica.answer_early_after
        if early is not None and self.seen.received >= early and not self.answered:
            self._answer(413, {"error": "too large for this predictor", "received": self.seen.received})

    def on_message_complete(self) -> None:
        self.seen.complete = True
        if not self.answered:
            self._answer(200, {"received": self.seen.received, "sha256": self.seen.digest.hexdigest(),
                               "framing": "chunked" if "transfer-encoding" in self.seen.headers else "length"})

    def _answer(self, status: int, body: dict[str, object]) -> None:
        self.answered = True
        data = json.dumps(body).encode()
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
            status, len(data), data))


@asynccontextmanager
async def counting_replica(path: Path) -> AsyncIterator[CountingReplica]:
    replica = CountingReplica(path)
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()
