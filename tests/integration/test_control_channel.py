"""The gateway's control socket, driven as the daemon drives it and as a broken peer would."""

import asyncio
import json
from pathlib import Path

import pytest

from berth.control.routing import Routing
from berth.gateway.control import ControlChannel, RouteApplier, encode
from berth.gateway.routes import RoutingTable, Target

pytestmark = pytest.mark.anyio


async def test_garbage_is_answered_with_errors_and_the_table_survives(tmp_path: Path) -> None:
    table = RoutingTable()
    channel = ControlChannel(RouteApplier(table), tmp_path / "gw.sock", "incarnation-1")
    await channel.start()
    routing = Routing()
    routing.configure("api", "/api", 4, holds=True, hold_limit=2, hold_timeout=1.0, timeout=5.0)
    routing.set_targets("api", [Target("r1", "/nowhere.sock")])
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "gw.sock"))
        writer.write(encode(routing.message()))
        for garbage in (b"not json\n", b"[]\n", b"null\n", b'{"op": "fail_waiting"}\n',
                        b'{"op": "routes", "generation": "x", "routes": []}\n', b'{"op": "reboot"}\n'):
            writer.write(garbage)
            answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert answer["op"] == "error"
        writer.write(encode({"op": "stats"}))
        stats = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert stats["generation"] == routing.generation and stats["incarnation"] == "incarnation-1"
        assert stats["apis"]["api"]["load"] == 0 and stats["replicas"] == {"r1": 0}
        assert table.by_api["api"].timeout == 5.0
        writer.close()
    finally:
        await channel.stop()
    assert not (tmp_path / "gw.sock").exists()


async def test_a_new_control_connection_hears_of_requests_already_held(tmp_path: Path) -> None:
    table = RoutingTable()
    channel = ControlChannel(RouteApplier(table), tmp_path / "gw.sock", "i")
    await channel.start()
    route = table.upsert("sleepy", "/sleepy", 4)
    route.hold_requests(True, 4, 60.0)

    class Waiting:
        def resume(self) -> None: ...

        def fail(self, message: str) -> None: ...

    route.waiting.append(Waiting())
    try:
        reader, writer = await asyncio.open_unix_connection(str(tmp_path / "gw.sock"))
        assert json.loads(await asyncio.wait_for(reader.readline(), 5)) == {"op": "wake", "api": "sleepy"}
        writer.close()
    finally:
        await channel.stop()
