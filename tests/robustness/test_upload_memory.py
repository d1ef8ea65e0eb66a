"""A 1 GiB request body streamed through the gateway keeps the gateway's memory flat.

Gateway, replica and client share this process (one event loop), so its RSS bounds what the gateway
holds: the client sends one reused buffer over and over, the replica only counts what it reads.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psutil
import pytest

from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.routes import RoutingTable, Target
from tests.robustness.counting_replica import counting_replica
from tests.robustness.harness import close, read_response, until

pytestmark = pytest.mark.anyio

SIZE = 2**30
PIECE = memoryview(b"u" * 2**20)


async def test_a_1_gib_upload_streams_through_in_bounded_memory(tmp_path: Path) -> None:
    async with counting_replica(tmp_path / "r0.sock") as replica:
        replica.hashing = False
        routes = RoutingTable()
        route = routes.upsert("t", "/t", 16)
        route.stream_body = True
        routes.count_streaming()
        route.set_targets([Target("r0", replica.path)])
        gateway = Gateway(routes, GatewaySettings())
        await gateway.start("127.0.0.1", 0)
        assert gateway.server is not None
        port = gateway.server.sockets[0].getsockname()[1]
        process = psutil.Process()
        before = peak = process.memory_info().rss

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, process.memory_info().rss)
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /t HTTP/1.1\r\nhost: test\r\ncontent-length: %d\r\n\r\n" % SIZE)
            for _ in range(SIZE // len(PIECE)):
                writer.write(PIECE)
                await writer.drain()
            response = await read_response(reader, timeout=60)
            assert response.status == 200 and json.loads(response.body)["received"] == SIZE
            await close(writer)
            await until(lambda: route.in_flight == 0, message="in flight back at 0")
        finally:
            sampler.cancel()
            await gateway.stop()
        grown = (peak - before) / 2**20
        print(f"1 GiB streamed in {time.monotonic() - started:.1f}s; RSS grew by {grown:.1f} MiB")
        assert grown < 50, f"RSS grew by {grown:.1f} MiB while 1 GiB streamed through"
