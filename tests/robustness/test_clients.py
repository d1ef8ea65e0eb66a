"""Slow, vanishing and half-closing clients: nothing they do may hang the gateway or leak a slot."""

import asyncio
import json
import socket
import struct
from pathlib import Path

import pytest

from .harness import close, post, read_response, stack, until

pytestmark = pytest.mark.anyio

BIG = 4 << 20


def abort(writer: asyncio.StreamWriter) -> None:
    """Vanish with a reset, as a killed client does."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def test_a_slow_reader_gets_everything_and_the_pool_stays_usable(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect(rcvbuf=4096)
        writer.write(post(f"/t?kind=big&size={BIG}"))
        await until(lambda: any(c.write_paused for c in s.gateway.connections), message="client writes paused")
        await asyncio.sleep(0.2)  # the slow reader sits on its window for a while
        response = await read_response(reader)
        assert len(response.body) == BIG
        upstream = s.route.upstreams[0]
        await until(lambda: upstream.idle)
        assert all(c.flow is not None and not c.flow.read_paused for c in upstream.idle)  # pooled only reading
        for index in range(3):  # the pooled connection answers again
            writer.write(post(body=str(index).encode()))
            assert json.loads((await read_response(reader)).body)["payload"] == index
        await close(writer)
        await s.settled()


async def test_a_client_vanishing_mid_response_releases_everything(tmp_path: Path) -> None:
    async with stack(tmp_path, count=2) as s:
        for _ in range(3):
            reader, writer = await s.connect(rcvbuf=4096)
            writer.write(post(f"/t?kind=big&size={BIG}"))
            await reader.readexactly(1000)  # the response started; upstream reads are paused by now
            await until(lambda: any(c.write_paused for c in s.gateway.connections))
            abort(writer)
            await until(lambda: s.in_flight() == 0, message="slot released")
        await s.settled()


async def test_a_client_vanishing_before_the_answer_releases_its_slot(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.route.max_replica_concurrency = 1
        for _ in range(3):
            _, writer = await s.connect()
            writer.write(post("/t?sleep=0.3"))
            await until(lambda: s.in_flight() == 2)
            abort(writer)
            await until(lambda: s.in_flight() == 0, message="slot released")
        reader, writer = await s.connect()  # the limit of 1 is free again
        writer.write(post(body=b"5"))
        assert json.loads((await read_response(reader)).body)["payload"] == 5
        await close(writer)
        await s.settled()


async def test_a_client_that_pipelines_and_never_reads_holds_bounded_memory(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect(rcvbuf=4096)
        writer.write(post("/t?kind=big&size=1000000") * 10)
        await until(lambda: any(c.write_paused for c in s.gateway.connections))
        await asyncio.sleep(0.3)  # it does not read: the gateway must not keep answering into its buffer
        (connection,) = s.gateway.connections
        assert connection.transport is not None and connection.transport.get_write_buffer_size() < 2_000_000
        assert connection.pending  # the rest wait their turn, unanswered, until the client reads
        for _ in range(10):
            assert len((await read_response(reader)).body) == 1000000
        await close(writer)
        await s.settled()


async def test_a_request_with_both_length_and_chunked_framing_is_refused(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(b"POST /t HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n")
        assert (await read_response(reader)).status == 400
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await close(writer)
        await s.settled()
