"""The gateway in-process: real replica apps on unix sockets, in the test's own event loop."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.routes import RoutingTable, Target
from tests.robustness.harness import replicas, until  # the same real replica apps the robustness suite uses

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def gateway(max_body_size: int = 1 << 20) -> AsyncIterator[tuple[Gateway, str]]:
    routes = RoutingTable()
    gw = Gateway(routes, GatewaySettings(max_body_size=max_body_size))
    await gw.start("127.0.0.1", 0)
    assert gw.server is not None
    port = gw.server.sockets[0].getsockname()[1]
    try:
        yield gw, f"http://127.0.0.1:{port}"
    finally:
        await gw.stop()


def route(gw: Gateway, sockets: list[str], limit: int = 1024) -> None:
    gw.routes.upsert("t", "/t", limit).set_targets(Target(s.rsplit("/", 1)[-1], s) for s in sockets)


async def test_proxies_requests_and_request_ids(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        response = await client.post(f"{url}/t", json={"x": 1}, headers={"x-request-id": "mine"})
        assert response.json() == {"replica": "r0", "payload": {"x": 1}}
        assert response.headers["x-request-id"] == "mine"
        generated = await client.post(f"{url}/t?sleep=0", json=1)
        assert generated.headers["x-request-id"] and generated.headers["x-request-id"] != "mine"
        info = await client.get(f"{url}/t")
        assert info.json()["api"] == "t"
        assert (await client.get(f"{url}/t/healthz")).text == "ok"
        stats = gw.routes.by_api["t"].stats
        assert stats.code_2xx == 4 and gw.routes.by_api["t"].in_flight == 0


async def test_unknown_endpoint_is_a_404_listing_endpoints(tmp_path: Path) -> None:
    async with gateway() as (gw, url), httpx.AsyncClient() as client:
        gw.routes.upsert("t", "/t", 10)
        response = await client.post(f"{url}/nope", json={})
        assert response.status_code == 404
        assert response.headers["x-berth-reason"] == "no-such-endpoint"
        assert "/t" in response.json()["error"]


async def test_no_ready_replica_is_a_503_with_reason() -> None:
    async with gateway() as (gw, url), httpx.AsyncClient() as client:
        gw.routes.upsert("t", "/t", 10)
        response = await client.post(f"{url}/t", json={})
        assert (response.status_code, response.headers["x-berth-reason"]) == (503, "no-ready-replica")


async def test_bodies_over_the_limit_are_a_413(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway(max_body_size=1000) as (gw, url):
        route(gw, sockets)
        async with httpx.AsyncClient() as client:
            declared = await client.post(f"{url}/t", content=b"x" * 2000)
            assert (declared.status_code, declared.headers["x-berth-reason"]) == (413, "body-too-large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"y" * 300

        async with httpx.AsyncClient() as client:
            chunked = await client.post(f"{url}/t", content=chunks())
            assert chunked.status_code == 413
        async with httpx.AsyncClient() as client:
            assert (await client.post(f"{url}/t", json="small")).status_code == 200


async def test_connect_failure_is_retried_on_another_replica(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, [str(tmp_path / "dead.sock"), *sockets])
        statuses = [(await client.post(f"{url}/t", json=i)).status_code for i in range(10)]
        assert statuses == [200] * 10


async def test_all_replicas_unreachable_is_a_503(tmp_path: Path) -> None:
    async with gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, [str(tmp_path / "dead.sock")])
        response = await client.post(f"{url}/t", json={})
        assert (response.status_code, response.headers["x-berth-reason"]) == (503, "replica-unreachable")


async def test_load_is_balanced_on_in_flight_requests(tmp_path: Path) -> None:
    async with replicas(tmp_path, 2) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        responses = await asyncio.gather(*(client.post(f"{url}/t?sleep=0.2", json=i) for i in range(8)))
        seen = [r.json()["replica"] for r in responses]
        assert sorted(seen) == ["r0"] * 4 + ["r1"] * 4


async def test_max_replica_concurrency_answers_503_beyond_the_limit(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets, limit=2)
        responses = await asyncio.gather(*(client.post(f"{url}/t?sleep=0.5", json=i) for i in range(5)))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 503, 503, 503]
        rejected = [r for r in responses if r.status_code == 503]
        assert all(r.headers["x-berth-reason"] == "max-replica-concurrency" for r in rejected)


async def raw_exchange(url: str, data: bytes, responses: int) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    received = b""
    while received.count(b"HTTP/1.1 200") < responses:
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        received += chunk
    writer.close()
    return received


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url):
        route(gw, sockets)
        request = b"POST /t HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
        data = request % (1, b"1") + request % (1, b"2")
        received = await raw_exchange(url, data, 2)
        assert received.index(b'"payload":1') < received.index(b'"payload":2')


async def test_expect_100_continue(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url):
        route(gw, sockets)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /t HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 2\r\nexpect: 100-continue\r\n\r\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"HTTP/1.1 100 Continue\r\n"
        await reader.readline()
        writer.write(b"42")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_malformed_http_is_a_400() -> None:
    async with gateway() as (_gw, url):
        received = await raw_exchange(url, b"NOT HTTP AT ALL\r\n\r\n", 1)
        assert received.startswith(b"HTTP/1.1 400")


async def test_admin_paths(tmp_path: Path) -> None:
    async with gateway() as (_gw, url), httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/_berth/healthz")).text == "ok"


async def test_a_request_the_replica_never_read_goes_to_another(tmp_path: Path) -> None:
    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()  # accepts, then dies without reading: like a replica SIGKILLed mid-accept

    dying = await asyncio.start_unix_server(slam, str(tmp_path / "dying.sock"))
    try:
        async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
            route(gw, [str(tmp_path / "dying.sock"), *sockets])
            statuses = [(await client.post(f"{url}/t", json=i)).status_code for i in range(10)]
            assert statuses == [200] * 10
            assert gw.routes.by_api["t"].in_flight == 0
            assert all(u.in_flight == 0 for u in gw.routes.by_api["t"].upstreams)
    finally:
        dying.close()


async def test_requests_are_held_while_an_api_scales_from_zero(tmp_path: Path) -> None:
    woken: list[str] = []
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        gw.wake = woken.append
        route_ = gw.routes.upsert("t", "/t", 10)
        route_.hold_requests(True, limit=1, timeout=5)
        first = asyncio.create_task(client.post(f"{url}/t", json=1))
        await until(lambda: route_.waiting)
        assert woken == ["t"] and route_.load == 1
        full = await client.post(f"{url}/t", json=2)
        assert (full.status_code, full.headers["x-berth-reason"]) == (503, "scale-from-zero-queue-full")
        route(gw, sockets)  # the replica is ready: held requests go to it
        assert (await first).json()["payload"] == 1


async def test_held_requests_time_out_or_fail_with_the_replica() -> None:
    async with gateway() as (gw, url), httpx.AsyncClient() as client:
        route_ = gw.routes.upsert("t", "/t", 10)
        route_.hold_requests(True, limit=10, timeout=0.2)
        expired = await client.post(f"{url}/t", json=1)
        assert (expired.status_code, expired.headers["x-berth-reason"]) == (503, "scale-from-zero-timeout")
        route_.hold_requests(True, limit=10, timeout=30)
        held = asyncio.create_task(client.post(f"{url}/t", json=1))
        await until(lambda: route_.waiting)
        route_.fail_waiting("RuntimeError: no weights")
        failed = await held
        assert (failed.status_code, failed.headers["x-berth-reason"]) == (503, "replica-failed-to-start")
        assert "no weights" in failed.json()["error"] and not route_.waiting


async def test_a_held_request_counts_its_wait_in_its_time(tmp_path: Path) -> None:
    """`avg request` is what the client waited, the replica's start from zero included."""
    hold = 0.3  # how long the replica "takes to start": the test releases the request after it
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route_ = gw.routes.upsert("t", "/t", 10)
        route_.hold_requests(True, limit=10, timeout=30)
        held = asyncio.create_task(client.post(f"{url}/t", json=1))
        await until(lambda: route_.waiting)
        await asyncio.sleep(hold)
        route_.set_targets(Target(s.rsplit("/", 1)[-1], s) for s in sockets)
        assert (await held).status_code == 200
        assert route_.stats.latency_count == 1 and route_.stats.latency_sum >= hold
        route_.set_targets([])
        route_.hold_requests(True, limit=10, timeout=hold)
        expired = await client.post(f"{url}/t", json=1)
        assert expired.headers["x-berth-reason"] == "scale-from-zero-timeout"
        assert route_.stats.latency_count == 2 and route_.stats.latency_sum >= 2 * hold


async def test_serves_a_listening_socket_handed_over() -> None:
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    gw = Gateway(RoutingTable(), GatewaySettings())
    await gw.start(sock=listening)
    try:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"http://127.0.0.1:{port}/_berth/healthz")).text == "ok"
    finally:
        await gw.stop()


async def test_route_timeout_defaults_to_ten_minutes() -> None:
    assert RoutingTable().upsert("t", "/t", 1).timeout == 600.0
