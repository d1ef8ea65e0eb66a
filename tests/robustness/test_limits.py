"""Timeouts and size limits, from raw sockets: each ends with the counters and descriptors settled."""

import asyncio
import json
from pathlib import Path

import pytest

from berth.gateway.proxy import GatewaySettings

from .harness import at_eof, close, get, post, read_response, stack, until

pytestmark = pytest.mark.anyio


async def test_an_oversize_request_line_is_a_414(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(get("/t?" + "q" * 9000))
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (414, "uri-too-long")
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_an_oversize_header_block_is_a_431(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(get(extra="".join(f"x-h{i}: {'v' * 1000}\r\n" for i in range(70))))
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (431, "headers-too-large")
        assert await at_eof(reader)
        await close(writer)

        reader, writer = await s.connect()  # one endless header, dribbled in: bounded all the same
        writer.write(b"GET /t HTTP/1.1\r\nx-endless: ")
        for _ in range(100):
            writer.write(b"v" * 2000)
            await asyncio.sleep(0)
        assert (await read_response(reader)).status == 431
        await close(writer)
        await s.settled()


async def test_an_oversize_body_is_a_413_declared_or_chunked(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(max_body_size=1000)) as s:
        reader, writer = await s.connect()
        writer.write(post(body=b"x" * 5000))
        assert (await read_response(reader)).status == 413
        assert await at_eof(reader)
        await close(writer)
        reader, writer = await s.connect()
        writer.write(b"POST /t HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + b"200\r\n" + b"y" * 512 + b"\r\n")
        writer.write(b"200\r\n" + b"y" * 512 + b"\r\n")
        assert (await read_response(reader)).status == 413
        await close(writer)
        await s.settled()


async def test_a_head_that_never_completes_times_out_with_a_408(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(header_timeout=0.3)) as s:
        reader, writer = await s.connect()
        writer.write(b"GET /t HTTP/1.1\r\nhost: x\r\n")
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (408, "request-timeout")
        assert await at_eof(reader)
        await close(writer)
        reader, writer = await s.connect()  # a connection that never sends a byte is closed too
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_a_body_that_stops_arriving_times_out_with_a_408(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(body_timeout=0.3)) as s:
        reader, writer = await s.connect()
        writer.write(post(body=b"12345")[:-3])
        assert (await read_response(reader)).status == 408
        await close(writer)
        await s.settled()


async def test_idle_keep_alive_connections_are_closed(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(keep_alive_timeout=0.3)) as s:
        reader, writer = await s.connect()
        writer.write(post())
        assert (await read_response(reader)).status == 200
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_a_slow_replica_is_a_504_and_its_slot_is_freed(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.route.timeout = 0.3
        reader, writer = await s.connect()
        writer.write(post("/t?sleep=1"))
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (504, "upstream-timeout")
        assert s.in_flight() == 0
        writer.write(post(body=b"4"))  # the client connection goes on
        assert json.loads((await read_response(reader)).body)["payload"] == 4
        await close(writer)
        await s.settled()


async def test_a_stream_that_keeps_moving_may_outlast_the_timeout(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.route.timeout = 0.4  # counted from the last byte moved, as nginx's proxy_read_timeout
        reader, writer = await s.connect()
        writer.write(post("/t?kind=chunked&n=8&gap=0.15"))  # 1.05 s in all, never 0.4 s without a piece
        response = await read_response(reader)
        assert (response.status, response.body) == (200, b"".join(b"piece%d;" % i for i in range(8)))
        assert s.route.stats.codes == {200: 1}
        await close(writer)
        await s.settled()


async def test_a_stream_that_stalls_past_the_timeout_is_cut(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.route.timeout = 0.4
        reader, writer = await s.connect()
        writer.write(post("/t?kind=chunked&n=3&gap=2"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
        rest = await asyncio.wait_for(reader.read(), 5)  # the connection closes: no last chunk
        assert b"piece0;" in rest and not rest.endswith(b"0\r\n\r\n")
        assert s.route.stats.codes == {504: 1}  # what the client could not be told
        assert s.in_flight() == 0
        await close(writer)
        await s.settled()


async def test_idle_pooled_upstream_connections_are_closed(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(upstream_idle_timeout=0.2)) as s:
        reader, writer = await s.connect()
        writer.write(post())
        assert (await read_response(reader)).status == 200
        upstream = s.route.upstreams[0]
        assert len(upstream.idle) == 1
        await until(lambda: not upstream.idle, timeout=5, message="the idle upstream connection swept")
        writer.write(post(body=b"3"))  # a fresh one is opened on demand
        assert json.loads((await read_response(reader)).body)["payload"] == 3
        await close(writer)
        await s.settled()


async def test_connections_beyond_the_limit_are_refused_cleanly(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(max_connections=2)) as s:
        busy = [await s.connect() for _ in range(2)]
        for _, writer in busy:
            writer.write(post("/t?sleep=0.5"))
        await until(lambda: s.in_flight() == 4)  # route + upstream, twice
        reader, writer = await s.connect()
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (503, "too-many-connections")
        await close(writer)
        for busy_reader, _ in busy:
            assert (await read_response(busy_reader)).status == 200
        # Both are idle keep-alive connections now: a newcomer takes the place of one of them.
        reader, writer = await s.connect()
        writer.write(post(body=b"6"))
        assert json.loads((await read_response(reader)).body)["payload"] == 6
        for _, busy_writer in busy:
            await close(busy_writer)
        await close(writer)
        await s.settled()
