"""The pure parts of streaming: which results stream, and how items are encoded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from starlette.responses import JSONResponse

from berth import EventStream
from berth.runtime.contract import BODY_STREAM, streams_request_body
from berth.runtime.errors import ClientDisconnected, SerialisationError
from berth.runtime.streaming import (
    JSON_LINES,
    RequestBody,
    chunk,
    chunk_content_type,
    classify,
    sse_error,
    sse_event,
)


def gen() -> Iterator[int]:
    yield 1


async def agen() -> AsyncIterator[int]:
    yield 1


class Numpyish:
    def tolist(self) -> list[float]:
        return [0.5]


@pytest.mark.parametrize(("result", "accept", "streams", "events", "is_async"), [
    (gen(), "", True, False, False),
    (agen(), "", True, False, True),
    (gen(), "text/event-stream", True, True, False),
    (agen(), "application/json, text/event-stream", True, True, True),
    (iter([1, 2]), "", True, False, False),
    (map(str, [1]), "", True, False, False),
    (EventStream([1, 2]), "", True, True, False),
    (EventStream(agen()), "application/json", True, True, True),
    ([1, 2], "text/event-stream", False, False, False),  # a list is a value, sent whole
    ((1, 2), "", False, False, False),
    ("text", "", False, False, False),
    (b"bytes", "", False, False, False),
    ({"a": 1}, "", False, False, False),
    (None, "", False, False, False),
    (JSONResponse({}), "", False, False, False),
])
def test_classify(result: Any, accept: str, streams: bool, events: bool, is_async: bool) -> None:
    streamed = classify(result, accept)
    assert (streamed is not None) == streams
    if streamed is not None:
        assert (streamed.events, streamed.is_async) == (events, is_async)


@pytest.mark.parametrize("items", ["text", b"bytes", 3, None])
def test_event_stream_needs_an_iterable(items: Any) -> None:
    with pytest.raises(TypeError, match="iterable or async iterable"):
        EventStream(items)


@pytest.mark.parametrize(("item", "event"), [
    ("token", b"data: token\n\n"),
    ("", b"data: \n\n"),
    ("two\nlines", b"data: two\ndata: lines\n\n"),
    ("crlf\r\nand\rcr", b"data: crlf\ndata: and\ndata: cr\n\n"),
    ("trailing\n", b"data: trailing\ndata: \n\n"),
    (b"utf-8 bytes \xc3\xa9", "data: utf-8 bytes é\n\n".encode()),
    ({"a": [1, 2]}, b'data: {"a":[1,2]}\n\n'),
    ([1, "x"], b'data: [1,"x"]\n\n'),
    (2.5, b"data: 2.5\n\n"),
    (None, b"data: null\n\n"),
    (True, b"data: true\n\n"),
    (Numpyish(), b"data: [0.5]\n\n"),
    ("é", "data: é\n\n".encode()),
])
def test_sse_event(item: Any, event: bytes) -> None:
    assert sse_event(item) == event


def test_sse_event_with_a_name_and_the_error_event() -> None:
    assert sse_event("x", event="done") == b"event: done\ndata: x\n\n"
    assert sse_error(RuntimeError("secret"), "r-1") == (
        b'event: error\ndata: {"error": "internal server error", "request_id": "r-1"}\n\n')
    assert sse_error(SerialisationError("cannot send it"), "r-2") == (
        b'event: error\ndata: {"error": "cannot send it", "request_id": "r-2"}\n\n')


@pytest.mark.parametrize("item", [object(), float("nan"), b"\xff"])
def test_unsendable_events(item: Any) -> None:
    with pytest.raises(SerialisationError, match=r"UTF-8|cannot be sent"):
        sse_event(item)


@pytest.mark.parametrize(("item", "data"), [
    (b"\x00\x01", b"\x00\x01"),
    (bytearray(b"ab"), b"ab"),
    ("tëxt", "tëxt".encode()),
    ({"a": 1}, b'{"a":1}\n'),
    (3, b"3\n"),
])
def test_chunk(item: Any, data: bytes) -> None:
    assert chunk(item) == data


@pytest.mark.parametrize(("first", "content_type"), [
    (b"x", b"application/octet-stream"),
    (bytearray(b"x"), b"application/octet-stream"),
    ("x", b"text/plain; charset=utf-8"),
    ({"a": 1}, JSON_LINES),
    (1, JSON_LINES),
])
def test_chunk_content_type(first: Any, content_type: bytes) -> None:
    assert chunk_content_type(first) == content_type


@pytest.mark.parametrize(("parameters", "streams"), [
    (["payload"], False),
    ([], False),
    ([BODY_STREAM], True),
    (["query_params", "body_stream", "headers"], True),
    (frozenset({"body"}), False),
])
def test_streams_request_body(parameters: list[str], streams: bool) -> None:
    assert streams_request_body(parameters) is streams


def test_request_body_reads_lazily_and_sees_a_disconnect() -> None:
    messages = [{"type": "http.request", "body": b"ab", "more_body": True},
                {"type": "http.request", "body": b"", "more_body": True},
                {"type": "http.request", "body": b"c", "more_body": True},
                {"type": "http.disconnect"}]
    taken: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        taken.append(messages[len(taken)])
        return taken[-1]

    async def read() -> list[bytes]:
        body = RequestBody(receive)
        first = await anext(body)
        assert len(taken) == 1  # nothing read ahead of the consumer
        rest = [first]
        with pytest.raises(ClientDisconnected, match="after sending 3 bytes"):
            async for data in body:
                rest.append(data)
        return rest

    assert asyncio.run(read()) == [b"ab", b"c"]


def test_request_body_ends_with_the_last_message() -> None:
    messages = iter([{"type": "http.request", "body": b"x", "more_body": False}])

    async def read() -> list[bytes]:
        async def receive() -> dict[str, Any]:
            return next(messages)
        return [data async for data in RequestBody(receive)]

    assert asyncio.run(read()) == [b"x"]
