"""Request bodies streamed to the replica as they arrive (routes whose predict takes body_stream).

A real Gateway in the test's loop, a raw replica on a unix socket that counts body bytes as they
arrive, raw-socket clients. Hostile cases first; every test ends with in-flight counts, client
connections, upstream pools and descriptors back at their baseline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.routes import Route, RoutingTable, Target
from berth.gateway.upload import BUFFER
from tests.robustness.counting_replica import CountingReplica, counting_replica
from tests.robustness.harness import at_eof, close, in_flight, open_fds, read_response, settled, until

pytestmark = pytest.mark.anyio

PIECE = b"x" * 65536


@dataclass
class Streaming:
    gateway: Gateway
    replica: CountingReplica
    route: Route
    port: int
    baseline: int

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    def in_flight(self) -> int:
        return in_flight(self.gateway)

    async def settled(self) -> None:
        await settled(self.gateway, self.baseline, lambda: self.replica.open == 0)


@asynccontextmanager
async def streaming(tmp_path: Path, **settings: float) -> AsyncIterator[Streaming]:
    async with counting_replica(tmp_path / "r0.sock") as replica:
        routes = RoutingTable()
        gateway = Gateway(routes, GatewaySettings(**{"max_body_size": 1 << 16, **settings}))  # type: ignore[arg-type]
        route = routes.upsert("t", "/t", 1024)
        route.stream_body = True
        routes.count_streaming()
        route.set_targets([Target("r0", replica.path)])
        buffered = routes.upsert("b", "/b", 1024)  # an API whose predict takes the whole body
        buffered.set_targets([Target("r0", replica.path)])
        await gateway.start("127.0.0.1", 0)
        assert gateway.server is not None
        port = gateway.server.sockets[0].getsockname()[1]
        try:
            yield Streaming(gateway, replica, route, port, open_fds())
        finally:
            await gateway.stop()


def head(length: int | None, path: str = "/t", extra: str = "") -> bytes:
    framing = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    return f"POST {path} HTTP/1.1\r\nhost: test\r\n{framing}\r\n{extra}\r\n".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# --- hostile and failing clients first -------------------------------------------------------------
async def test_a_client_vanishing_mid_upload_ends_the_exchange_as_499(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        _, writer = await s.connect()
        writer.write(head(10 * len(PIECE)) + PIECE)
        await until(lambda: s.replica.received > 0, message="the replica got the first piece")
        assert s.in_flight() == 2
        await close(writer)
        await s.settled()  # the replica's connection was abandoned, not pooled half-read
        assert s.route.stats.codes == {499: 1} and s.route.stats.refusals == {"client-gone": 1}
        assert not s.replica.requests[0].complete


async def test_a_client_half_closing_mid_upload_lets_the_replica_go(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(head(None) + chunk(PIECE))
        await until(lambda: s.replica.received > 0, message="the replica got the first piece")
        writer.write_eof()
        assert await at_eof(reader)  # nothing to answer: as far as the gateway can tell, the client is gone
        await close(writer)
        await s.settled()
        assert s.route.stats.codes == {499: 1}


async def test_a_half_close_mid_upload_still_answers_the_request_ahead(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        s.replica.reading.clear()  # the first request waits at the replica
        reader, writer = await s.connect()
        writer.write(head(3) + b"abc" + head(None) + chunk(b"part"))
        await until(lambda: s.replica.open == 1, message="the first request at the replica")
        writer.write_eof()
        s.replica.reading.set()
        response = await read_response(reader)
        assert response.status == 200 and json.loads(response.body)["received"] == 3
        assert await at_eof(reader)
        await close(writer)
        await s.settled()
        assert s.route.stats.codes == {200: 1, 499: 1}


async def test_a_slow_client_gets_408_and_the_replica_connection_is_dropped(tmp_path: Path) -> None:
    async with streaming(tmp_path, body_timeout=0.3) as s:
        reader, writer = await s.connect()
        writer.write(head(4 * len(PIECE)) + PIECE)
        response = await read_response(reader)
        assert response.status == 408 and response.header("x-berth-reason") == "request-timeout"
        assert response.header("connection") == "close"
        assert await at_eof(reader)
        await close(writer)
        await s.settled()
        assert s.replica.received == len(PIECE) and not s.replica.requests[0].complete


async def test_an_upload_that_keeps_moving_may_outlast_the_timeout(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        s.route.timeout = 0.4  # counted from the last piece forwarded, not from the request's start
        reader, writer = await s.connect()
        writer.write(head(8 * len(PIECE)))
        for _ in range(8):  # 1.2 s in all, never 0.4 s without a piece
            writer.write(PIECE)
            await asyncio.sleep(0.15)
        response = await read_response(reader)
        assert response.status == 200 and json.loads(response.body)["received"] == 8 * len(PIECE)
        await close(writer)
        await s.settled()


async def test_a_replica_answering_early_is_forwarded_and_the_connection_closes(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        s.replica.answer_early_after = 1
        reader, writer = await s.connect()
        writer.write(head(64 * len(PIECE)) + PIECE)
        response = await read_response(reader)
        assert response.status == 413 and json.loads(response.body)["received"] >= 1
        for _ in range(4):  # the client may go on sending for a while: dropped, then the close
            writer.write(PIECE)
        assert await at_eof(reader)
        await close(writer)
        await s.settled()
        assert s.replica.received < 64 * len(PIECE)


async def test_a_streamed_body_over_its_own_limit_is_a_413(tmp_path: Path) -> None:
    async with streaming(tmp_path, max_streamed_body_size=3 * len(PIECE)) as s:
        reader, writer = await s.connect()
        writer.write(head(4 * len(PIECE)))
        response = await read_response(reader)  # by its length, before anything is sent on
        assert response.status == 413 and "streamed" in json.loads(response.body)["error"]
        await close(writer)
        reader, writer = await s.connect()
        writer.write(head(None) + b"".join(chunk(PIECE) for _ in range(4)))
        response = await read_response(reader)  # chunked: when it passes the limit
        assert response.status == 413
        await close(writer)
        await s.settled()
        assert s.replica.received <= 3 * len(PIECE)


async def test_malformed_chunks_midway_are_a_400(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(head(None) + chunk(PIECE))
        await until(lambda: s.replica.received > 0, message="the replica got the first piece")
        writer.write(b"zz\r\nnot a chunk\r\n")
        response = await read_response(reader)
        assert response.status == 400
        await close(writer)
        await s.settled()


async def test_the_replica_is_read_slower_than_the_client_sends_memory_stays_bounded(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        s.replica.reading.clear()  # the replica stops reading: its socket buffer fills, then ours
        reader, writer = await s.connect()
        total = 256 * len(PIECE)  # 16 MiB
        writer.write(head(total))
        sent = 0

        async def send() -> None:
            nonlocal sent
            while sent < total:
                writer.write(PIECE)
                sent += len(PIECE)
                await writer.drain()

        sender = asyncio.create_task(send())
        connection = next(iter(s.gateway.connections))
        await until(lambda: connection.flow is not None and connection.flow.read_paused and s.replica.open == 1,
                    message="the gateway pausing the client")
        await asyncio.sleep(0.2)  # it stays paused: nothing more is read while the replica does not read
        upload = connection.reader.upload
        assert upload is not None and upload.transport is not None
        assert upload.transport.get_write_buffer_size() < 4 * BUFFER
        assert sent < total
        s.replica.reading.set()
        response = await read_response(reader, timeout=20)
        await sender
        assert response.status == 200 and json.loads(response.body)["received"] == total
        await close(writer)
        await s.settled()


async def test_a_connect_failure_before_any_byte_went_out_is_retried(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        s.route.set_targets([Target("gone", str(tmp_path / "gone.sock")), Target("r0", s.replica.path)])
        s.route.upstreams[0].in_flight = -1  # least in-flight picks the dead one first
        reader, writer = await s.connect()
        writer.write(head(len(PIECE)) + PIECE)
        response = await read_response(reader)
        s.route.upstreams[0].in_flight = 0
        assert response.status == 200 and json.loads(response.body)["received"] == len(PIECE)
        await close(writer)
        await s.settled()


async def test_a_request_whose_body_went_out_is_never_retried(tmp_path: Path) -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # accepts, then dies without reading: like a replica SIGKILLed mid-accept

    dying = await asyncio.start_unix_server(slam, str(tmp_path / "dying.sock"))
    try:
        async with streaming(tmp_path) as s:
            s.route.set_targets([Target("dying", str(tmp_path / "dying.sock")), Target("r0", s.replica.path)])
            s.route.upstreams[1].in_flight = 1  # least in-flight picks the dying one
            reader, writer = await s.connect()
            writer.write(head(8 * len(PIECE)) + PIECE)  # some body arrives with the head: it goes out at once
            for _ in range(7):
                writer.write(PIECE)
            response = await read_response(reader)
            s.route.upstreams[1].in_flight = 0
            # Retried, the replica would have got a body without its first bytes, which the gateway no longer had.
            assert response.status == 502 and response.header("x-berth-reason") == "replica-connection-lost"
            assert s.replica.requests == []
            await close(writer)
            await s.settled()
    finally:
        dying.close()


async def test_a_request_held_for_a_replica_buffers_a_bounded_amount(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        s.route.set_targets([])
        s.route.hold_requests(True, 10, 10.0)
        reader, writer = await s.connect()
        total = 64 * len(PIECE)  # 4 MiB
        writer.write(head(total) + PIECE * 64)  # more than the gateway takes before it pauses
        connection = next(iter(s.gateway.connections))
        await until(lambda: connection.flow is not None and connection.flow.read_paused, message="the client paused")
        upload = connection.reader.upload
        assert upload is not None and upload.transport is None and upload.buffered <= 2 * BUFFER
        s.route.set_targets([Target("r0", s.replica.path)])  # the replica is ready: the held request goes
        response = await read_response(reader)
        assert response.status == 200 and json.loads(response.body)["received"] == total
        await close(writer)
        await s.settled()


# --- what it is for -------------------------------------------------------------------------------
async def test_a_length_body_reaches_the_replica_before_the_client_sent_it_all(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        reader, writer = await s.connect()
        body = [bytes([65 + i]) * len(PIECE) for i in range(4)]
        writer.write(head(4 * len(PIECE)) + body[0])
        # The last piece is not sent yet: the replica sees the first one anyway.
        await until(lambda: s.replica.received >= len(PIECE), message="the first piece streamed through")
        writer.write(b"".join(body[1:]))
        response = await read_response(reader)
        assert response.status == 200
        answer = json.loads(response.body)
        assert answer == {"received": 4 * len(PIECE), "framing": "length",
                          "sha256": hashlib.sha256(b"".join(body)).hexdigest()}
        assert s.replica.requests[0].headers["content-length"] == str(4 * len(PIECE))
        await close(writer)
        await s.settled()


async def test_a_chunked_body_is_rechunked_as_it_arrives(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(head(None) + chunk(b"first;") + chunk(b"second;"))
        await until(lambda: s.replica.received == len(b"first;second;"), message="the first chunks streamed")
        writer.write(chunk(b"third") + b"0\r\ntrailer-x: 1\r\n\r\n")
        response = await read_response(reader)
        answer = json.loads(response.body)
        assert answer["framing"] == "chunked" and answer["received"] == len(b"first;second;third")
        assert answer["sha256"] == hashlib.sha256(b"first;second;third").hexdigest()
        assert "trailer-x" not in s.replica.requests[0].headers
        await close(writer)
        await s.settled()


async def test_expect_100_continue_is_answered_when_the_request_goes_out(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(head(len(PIECE), extra="expect: 100-continue\r\n"))
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(PIECE)
        response = await read_response(reader)
        assert response.status == 200 and json.loads(response.body)["received"] == len(PIECE)
        assert "expect" not in s.replica.requests[0].headers
        await close(writer)
        await s.settled()


async def test_pipelined_requests_after_a_streamed_one_are_answered_in_order(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(head(len(PIECE)) + PIECE + head(3, path="/b") + b"abc" + head(None) + chunk(b"zz") +
                     b"0\r\n\r\n" + b"GET /t HTTP/1.1\r\nhost: test\r\n\r\n")
        received = [json.loads((await read_response(reader)).body)["received"] for _ in range(4)]
        assert received == [len(PIECE), 3, 2, 0]
        await close(writer)
        await s.settled()


async def test_only_streamed_routes_lift_the_buffered_body_limit(tmp_path: Path) -> None:
    async with streaming(tmp_path) as s:  # max_body_size 64 KiB
        reader, writer = await s.connect()
        writer.write(head(16 * len(PIECE)) + PIECE * 16)
        response = await read_response(reader)
        assert response.status == 200 and json.loads(response.body)["received"] == 16 * len(PIECE)
        writer.write(head(2 * len(PIECE), path="/b") + PIECE * 2)
        response = await read_response(reader)
        assert response.status == 413 and response.header("x-berth-reason") == "body-too-large"
        await close(writer)
        await s.settled()
