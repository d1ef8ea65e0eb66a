"""A bounded soak: thousands of requests mixing every hostile client against two replicas."""

import asyncio
import json
import random
import resource
import socket
import struct
from pathlib import Path

import pytest

from berth.gateway.proxy import GatewaySettings

from .harness import Stack, close, get, post, read_response, stack

pytestmark = pytest.mark.anyio

WORKERS = 16
ROUNDS = 150  # per worker; each round sends 1 to 8 requests


async def _round(s: Stack, rng: random.Random) -> tuple[int, int]:
    """One client doing one hostile thing; returns (well-formed requests sent, answered)."""
    kind = rng.choice(["plain", "pipelined", "head", "slow-reader", "abort", "oversize-head", "oversize-body",
                       "gateway-answers"])
    reader, writer = await s.connect(rcvbuf=4096 if kind in ("slow-reader", "abort") else None)
    try:
        if kind == "plain":
            writer.write(post(body=b"1"))
            return 1, int(json.loads((await read_response(reader)).body)["payload"] == 1)
        if kind == "pipelined":
            count = rng.randint(2, 8)
            writer.write(b"".join(post(body=str(i).encode()) for i in range(count)))
            payloads = [json.loads((await read_response(reader)).body)["payload"] for _ in range(count)]
            return count, sum(p == i for i, p in enumerate(payloads))
        if kind == "head":
            writer.write(get(method="HEAD") + post(body=b"2"))
            ok = (await read_response(reader, head=True)).status == 200
            return 2, ok + (json.loads((await read_response(reader)).body)["payload"] == 2)
        if kind == "slow-reader":
            writer.write(post("/t?kind=big&size=300000"))
            await asyncio.sleep(rng.uniform(0, 0.05))
            return 1, int(len((await read_response(reader)).body) == 300000)
        if kind == "abort":
            writer.write(post(f"/t?kind=big&size=300000&sleep={rng.choice([0, 0.01])}"))
            if rng.random() < 0.5:
                await reader.readexactly(100)
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return 0, 0
        if kind == "oversize-head":
            writer.write(get(extra="x-big: " + "v" * 70000 + "\r\n"))
            assert (await read_response(reader)).status == 431
            return 0, 0
        if kind == "oversize-body":
            writer.write(post(body=b"2") + post(body=b"z" * 70000))
            ok = json.loads((await read_response(reader)).body)["payload"] == 2
            assert (await read_response(reader)).status == 413
            return 1, int(ok)
        writer.write(get("/nope") * 5 + get("/_berth/healthz"))
        statuses = [(await read_response(reader)).status for _ in range(6)]
        return 6, int(statuses == [404] * 5 + [200]) * 6
    finally:
        await close(writer)


async def test_soak(tmp_path: Path) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with stack(tmp_path, GatewaySettings(max_body_size=65536), count=2) as s:
        rng = random.Random(7)

        async def worker() -> tuple[int, int]:
            sent = answered = 0
            for _ in range(ROUNDS):
                a, b = await _round(s, random.Random(rng.random()))
                sent, answered = sent + a, answered + b
            return sent, answered

        results = await asyncio.gather(*(worker() for _ in range(WORKERS)))
        sent = sum(r[0] for r in results)
        answered = sum(r[1] for r in results)
        assert sent > 4000 and answered == sent
        await s.settled()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 200, f"the test process grew by {grown_mb:.0f} MB"
