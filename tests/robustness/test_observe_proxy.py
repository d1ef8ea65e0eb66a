"""berth's pages passed to the daemon's observe app: whatever clients do there, and whether the daemon
answers or not, no connection, descriptor or slot is left behind."""

import asyncio
import json
import socket
import struct
from pathlib import Path

import pytest

from .harness import Stack, close, get, observe_app, post, read_response, stack, until

pytestmark = pytest.mark.anyio


def observe_in_flight(s: Stack) -> int:
    observe = s.gateway.observe
    assert observe is not None
    return observe.in_flight + sum(u.in_flight + len(u.idle) for u in observe.upstreams)


async def test_the_observe_path_leaves_connections_and_descriptors_at_baseline(tmp_path: Path) -> None:
    sock = tmp_path / "observe.sock"
    async with observe_app(sock) as stub, stack(tmp_path, observe_socket=str(sock)) as s:
        # keep-alive: pages, HEAD, a refused write, a health check and an API request, pipelined
        reader, writer = await s.connect()
        writer.write(get("/_berth/metrics?a=1") + get("/_berth/x", method="HEAD") + post("/_berth/metrics")
                     + get("/_berth/healthz") + post())
        answers = [await read_response(reader, head=index == 1) for index in range(5)]
        assert [a.status for a in answers] == [200, 200, 405, 200, 200]
        assert json.loads(answers[0].body)["query"] == "a=1" and answers[3].body == b"ok"
        await close(writer)
        # a dashboard's event stream the client drops mid-way, with a reset
        for _ in range(3):
            reader, writer = await s.connect()
            writer.write(get("/_berth/events"))
            await asyncio.wait_for(reader.readuntil(b"data: first"), 5)
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        await until(lambda: stub.open_streams == 0, message="the observe app's streams ended")
        await until(lambda: observe_in_flight(s) == 0, message="observe exchanges released")
        await s.settled()


async def test_a_daemon_that_is_not_there_leaves_nothing_behind(tmp_path: Path) -> None:
    async with stack(tmp_path, observe_socket=str(tmp_path / "absent.sock")) as s:
        reader, writer = await s.connect()
        writer.write(get("/_berth/metrics") * 20 + post())
        statuses = [(await read_response(reader)).status for _ in range(21)]
        assert statuses == [503] * 20 + [200]
        await close(writer)
        assert observe_in_flight(s) == 0
        await s.settled()
