"""Streamed predict results: a generator's items sent to the client as they are produced.

`predict` may return a sync generator (any iterator), an async generator (any async iterator) or
`EventStream(items)`. Items go out as chunks of a chunked response, or, for an `EventStream` or a
request that accepts `text/event-stream`, as server-sent events (one event per item).

* The response head goes out with the first item, not before: the content type follows the first
  item, and a predictor that fails before its first item answers a JSON 500 like any other. Every
  item is written to the transport as soon as it is yielded.
* A sync generator runs on the replica's thread pool, one `next()` per item, so it never holds the
  event loop (health checks, /metrics and the disconnect watch keep running); an async one runs on
  the loop.
* Backpressure: the next item is pulled only once the previous one was handed to uvicorn, whose
  `send` waits for its write buffer to drain: a slow client slows the generator.
* A client that disconnects stops the generator: `receive()` is watched for `http.disconnect`, and
  the generator is closed (its `finally` runs) once its current item is done.
* An exception after the first item: an `error` event that ends an event stream normally, or a
  chunked response cut without its last chunk (the client sees an incomplete body).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import Message, Receive, Send

from berth.runtime.errors import ClientDisconnected, SerialisationError, error_response
from berth.runtime.response import UNSERIALISABLE, json_default

log = logging.getLogger("berth.replica")

EVENT_STREAM = "text/event-stream"
STATUS_DISCONNECTED = 499  # nginx's: the client closed the connection before its answer was complete
CHUNK_TYPES: dict[type, bytes] = {bytes: b"application/octet-stream", str: b"text/plain; charset=utf-8"}
JSON_LINES = b"application/x-ndjson"


class EventStream:
    """A predict result sent as server-sent events, one event per item of `items` (sync or async).

    `return EventStream(tokens())` streams `data: <item>` events whatever the request's Accept says;
    strings are sent as they are, anything else JSON-encoded.
    """

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any]) -> None:
        if isinstance(items, str | bytes | bytearray) or not isinstance(items, Iterable | AsyncIterable):
            raise TypeError(f"EventStream takes an iterable or async iterable of events (a generator, a list); "
                            f"it got {type(items).__name__}")
        self.items = items


@dataclass(frozen=True)
class Streamed:
    """A predict result to stream: its items, and how to send them."""

    items: Iterator[Any] | AsyncIterator[Any]
    events: bool  # server-sent events; otherwise chunks

    @property
    def is_async(self) -> bool:
        return isinstance(self.items, AsyncIterator)


def classify(result: Any, accept: str = "") -> Streamed | None:
    """The stream `result` is, or None when it is a plain value (sent whole, as before)."""
    if isinstance(result, EventStream):
        items = result.items
        return Streamed(items.__aiter__() if isinstance(items, AsyncIterable) else iter(items), events=True)
    if isinstance(result, AsyncIterator | Iterator) and not isinstance(result, str | bytes | bytearray):
        return Streamed(result, events=EVENT_STREAM in accept)
    return None


# --- encoding: pure ---------------------------------------------------------------------------------

def _text(item: Any) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, bytes | bytearray | memoryview):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SerialisationError(f"an event must be text; the stream yielded bytes that are not UTF-8 ({exc})"
                                     ) from exc
    try:
        return json.dumps(item, default=json_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SerialisationError(f"the stream yielded an item that cannot be sent: {UNSERIALISABLE}: {exc}") from exc


def sse_event(item: Any, event: str | None = None) -> bytes:
    """One server-sent event: a `data:` line per line of the item (the spec's way to send several lines)."""
    lines = _text(item).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode("utf-8")


def sse_error(exc: BaseException, request_id: str) -> bytes:
    """The event that ends a stream whose generator failed: the same JSON as an error response's body."""
    return sse_event(error_response(exc, request_id)[1].decode("utf-8"), event="error")


def chunk(item: Any) -> bytes:
    """A chunk of a chunked stream: bytes as they are, text as UTF-8, anything else a line of JSON."""
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    return (_text(item) + "\n").encode("utf-8")


def chunk_content_type(first: Any) -> bytes:
    """A chunked stream's content type, from its first item (bytes, text, or JSON lines)."""
    for kind, content_type in CHUNK_TYPES.items():
        if isinstance(first, kind):
            return content_type
    return b"application/octet-stream" if isinstance(first, bytearray | memoryview) else JSON_LINES


def stream_headers(events: bool, first: Any, request_id: str) -> list[tuple[bytes, bytes]]:
    """The response head of a stream (no content-length: uvicorn sends it chunked)."""
    if events:
        # x-accel-buffering: nginx (and proxies that follow it) must not hold events back.
        return [(b"content-type", EVENT_STREAM.encode()), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"), (b"x-request-id", request_id.encode("latin-1"))]
    return [(b"content-type", chunk_content_type(first)), (b"x-request-id", request_id.encode("latin-1"))]


# --- where items come from: a sync generator off the loop, an async one on it -----------------------

_END = object()


class SyncSource:
    """A sync iterator pulled one item at a time on the thread pool.

    `next()` gives the next item or _END and adds the seconds spent producing it to `seconds`;
    `close()` stops the generator (its `finally` runs) once its current item is done.
    """

    def __init__(self, items: Iterator[Any], executor: Executor) -> None:
        self.items = items
        self.executor = executor
        self.seconds = 0.0
        self._pending: asyncio.Future[tuple[Any, float]] | None = None

    async def next(self) -> Any:
        self._pending = asyncio.get_running_loop().run_in_executor(self.executor, _next_timed, self.items)
        item, seconds = await self._pending
        self.seconds += seconds
        return item

    async def close(self) -> None:
        # A generator cannot be closed while its thread runs it: wait for the item in progress.
        if self._pending is not None and not self._pending.done():
            await asyncio.wait([self._pending])
        close = getattr(self.items, "close", None)
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(self.executor, close)


def _next_timed(items: Iterator[Any]) -> tuple[Any, float]:
    # StopIteration cannot cross a Future: the end is a sentinel.
    started = time.perf_counter()
    return next(items, _END), time.perf_counter() - started


class AsyncSource:
    """An async iterator, on the event loop."""

    def __init__(self, items: AsyncIterator[Any]) -> None:
        self.items = items
        self.seconds = 0.0

    async def next(self) -> Any:
        started = time.perf_counter()
        try:
            return await anext(self.items, _END)
        finally:
            self.seconds += time.perf_counter() - started

    async def close(self) -> None:
        aclose = getattr(self.items, "aclose", None)
        if aclose is not None:
            await aclose()


def open_source(streamed: Streamed, executor: Executor) -> SyncSource | AsyncSource:
    if isinstance(streamed.items, AsyncIterator):
        return AsyncSource(streamed.items)
    return SyncSource(streamed.items, executor)


# --- sending -------------------------------------------------------------------------------------------

Outcome = Literal["complete", "failed", "disconnected"]


@dataclass
class StreamResult:
    outcome: Outcome
    status: int  # what the request is counted as: 200, 500 when the generator failed, 499 when the client left
    seconds: float  # spent producing items (the predict histogram's share of the stream)
    items: int


class StreamSender:
    """Sends one stream: pulls items, writes them, watches for the client leaving, closes the source."""

    def __init__(self, send: Send, wait_disconnect: Callable[[], Awaitable[None]], streamed: Streamed,
                 items: SyncSource | AsyncSource, request_id: str) -> None:
        self.send = send
        self.wait_disconnect = wait_disconnect
        self.streamed = streamed
        self.source = items
        self.request_id = request_id
        self.started = False  # the response head went out
        self.count = 0

    async def run(self) -> StreamResult:
        """Raises what the generator raised before its first item (nothing was sent: a plain error answers)."""
        pump = asyncio.ensure_future(self._pump())
        watch = asyncio.ensure_future(self.wait_disconnect())
        try:
            await asyncio.wait([pump, watch], return_when=asyncio.FIRST_COMPLETED)
            if not pump.done():
                pump.cancel()
                await asyncio.wait([pump])
                return self._result("disconnected")
            return self._result(pump.result())
        finally:
            watch.cancel()
            pump.cancel()
            await self.source.close()

    def _result(self, outcome: Outcome) -> StreamResult:
        status = {"complete": 200, "failed": 500, "disconnected": STATUS_DISCONNECTED}[outcome]
        return StreamResult(outcome, status, self.source.seconds, self.count)

    async def _pump(self) -> Outcome:
        item = await self.source.next()  # a failure here is not caught: nothing was sent yet
        self.started = True
        await self.send({"type": "http.response.start", "status": 200,
                         "headers": stream_headers(self.streamed.events, item, self.request_id)})
        try:
            while item is not _END:
                self.count += 1
                data = sse_event(item) if self.streamed.events else chunk(item)
                await self.send({"type": "http.response.body", "body": data, "more_body": True})
                item = await self.source.next()
        except Exception as exc:
            return await self._failed(exc)
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        return "complete"

    async def _failed(self, exc: Exception) -> Outcome:
        log.error("request %s: the stream failed after %d items", self.request_id, self.count, exc_info=exc)
        if self.streamed.events:
            # An event stream ends normally with an error event the client can tell from success.
            await self.send({"type": "http.response.body", "body": sse_error(exc, self.request_id), "more_body": True})
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        # A chunked one is left without its last chunk: uvicorn closes the connection, so the
        # client sees an incomplete body, never a complete one.
        return "failed"


def disconnect_watch(receive: Receive, body: RequestBody | None) -> Callable[[], Awaitable[None]]:
    """Waits until the client is gone. With a streamed request body, `receive()` belongs to the body
    until it was read to its end (the body sees the disconnect itself meanwhile)."""

    async def wait() -> None:
        if body is not None:
            await body.finished.wait()
            if body.disconnected:
                return
        while (await receive())["type"] != "http.disconnect":
            pass
    return wait


# --- a streamed request body -------------------------------------------------------------------------

class RequestBody:
    """The request body as an async iterator of bytes chunks, read from `receive()` as it is consumed.

    Nothing is buffered beyond the chunk in hand; uvicorn stops reading the socket until the next
    chunk is asked for, so a large upload is held neither here nor in the replica's buffers.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.finished = asyncio.Event()
        self.disconnected = False
        self.received = 0  # bytes so far

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        while not self.finished.is_set():
            message: Message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                self.finished.set()
                break
            if not message.get("more_body"):
                self.finished.set()
            data: bytes = message.get("body", b"")
            if data:
                self.received += len(data)
                return data
        if self.disconnected:
            raise ClientDisconnected(
                f"the client closed the connection after sending {self.received} bytes of its body")
        raise StopAsyncIteration
