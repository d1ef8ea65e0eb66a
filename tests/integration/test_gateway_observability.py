"""What the gateway tells about the requests it serves: counters over the control channel, berth's own
pages passed to the daemon's observe app, and sampled request log lines."""

import asyncio
import json
import socket
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from berth.gateway.control import ControlChannel, RouteApplier, encode
from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.requestlog import RequestLog
from berth.gateway.routes import RoutingTable, Target
from berth.observability.histogram import LATENCY_BOUNDS, Histogram
from tests.robustness.harness import observe_app, replicas, until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def gateway(observe_socket: Path | None = None, log: RequestLog | None = None,
                  grace: float = 0.0) -> AsyncIterator[tuple[Gateway, str]]:
    gw = Gateway(RoutingTable(), GatewaySettings(max_body_size=1 << 20),
                 observe_socket=str(observe_socket) if observe_socket else None, request_log=log)
    await gw.start("127.0.0.1", 0)
    assert gw.server is not None
    try:
        yield gw, f"http://127.0.0.1:{gw.server.sockets[0].getsockname()[1]}"
    finally:
        await gw.stop(grace)


def route(gw: Gateway, sockets: list[str], api: str = "t", rate: float = 1.0) -> None:
    gw.routes.upsert(api, f"/{api}", 1024).set_targets(Target(s.rsplit("/", 1)[-1], s) for s in sockets)
    gw.routes.by_api[api].log_rate = rate


async def counters(gw: Gateway, socket_path: Path) -> dict[str, Any]:
    """The per-API counters as the daemon reads them: the "stats" op over a real control socket."""
    channel = ControlChannel(RouteApplier(gw.routes), socket_path, "incarnation")
    await channel.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(socket_path))
        writer.write(encode({"op": "stats"}))
        answer = json.loads(await asyncio.wait_for(reader.readline(), 5))
        writer.close()
    finally:
        await channel.stop()
    return {api: data["counters"] for api, data in answer["apis"].items()}


# --- counters -----------------------------------------------------------------------------------

async def test_counters_by_status_code_latency_and_refusal(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        gw.routes.upsert("cold", "/cold", 10)  # no replica: every request is refused
        assert [(await client.post(f"{url}/t", json=i)).status_code for i in range(3)] == [200] * 3
        assert (await client.post(f"{url}/t?kind=204", json=1)).status_code == 204
        assert (await client.post(f"{url}/t?sleep=0.3", json=1)).status_code == 200
        refused = [await client.post(f"{url}/cold", json=1) for _ in range(2)]
        assert {r.headers["x-berth-reason"] for r in refused} == {"no-ready-replica"}
        seen = await counters(gw, tmp_path / "control.sock")
    served, cold = seen["t"], seen["cold"]
    assert served["codes"] == {"200": 4, "204": 1} and served["refusals"] == {}
    assert cold["codes"] == {"503": 2} and cold["refusals"] == {"no-ready-replica": 2}
    # today's keys stay, for the ledger that reads them
    assert (served["code_2xx"], served["latency_count"], cold["code_5xx"]) == (5, 5, 2)
    latency = Histogram.from_json(served["latency"])
    assert latency.bounds == LATENCY_BOUNDS and latency.count == 5
    assert latency.counts[LATENCY_BOUNDS.index(0.5)] == 1  # the 0.3 s request: 0.25 < s <= 0.5
    assert latency.sum == pytest.approx(served["latency_sum"]) and latency.sum >= 0.3


async def test_a_client_gone_before_its_answer_counts_a_499(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url):
        route(gw, sockets)
        host, port = url.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /t?sleep=1 HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: 1\r\n\r\n1")
        await until(lambda: gw.routes.by_api["t"].in_flight == 1)
        # A reset, not a half-close (after which the gateway still answers what was asked).
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await until(lambda: gw.routes.by_api["t"].in_flight == 0)
        seen = (await counters(gw, tmp_path / "control.sock"))["t"]
    assert seen["codes"] == {"499": 1} and seen["refusals"] == {"client-gone": 1}


async def test_a_client_gone_while_its_request_is_held_counts_a_499() -> None:
    async with gateway() as (gw, url):
        held = gw.routes.upsert("cold", "/cold", 10)
        held.hold_requests(True, limit=10, timeout=30)
        host, port = url.removeprefix("http://").split(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /cold HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\n1")
        await until(lambda: held.waiting)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()
        await until(lambda: not held.waiting)
        assert held.stats.codes == {499: 1} and held.stats.refusals == {"client-gone": 1}


async def test_a_request_refused_before_it_was_read_counts_under_its_api(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        too_big = await client.post(f"{url}/t/sub?x=1", content=b"x" * (2 << 20))
        assert (too_big.status_code, too_big.headers["x-berth-reason"]) == (413, "body-too-large")
        assert (await client.post(f"{url}/elsewhere", content=b"x" * (2 << 20))).status_code == 413
        seen = (await counters(gw, tmp_path / "control.sock"))["t"]
    assert seen["codes"] == {"413": 1} and seen["refusals"] == {"body-too-large": 1}


async def test_latency_counts_from_the_request_head(tmp_path: Path) -> None:
    """A body that arrives slowly is part of what the client waited: timed from its head, not its end."""
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url):
        route(gw, sockets)
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /t HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1\r\n\r\n")
        await asyncio.sleep(0.3)  # the client's own pace, not a wait for the gateway
        writer.write(b"1")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        assert gw.routes.by_api["t"].stats.latency.sum >= 0.3


# --- /_berth/ -----------------------------------------------------------------------------------

async def test_berth_pages_are_passed_to_the_observe_app_with_path_and_query(tmp_path: Path) -> None:
    sock = tmp_path / "observe.sock"
    async with observe_app(sock), gateway(sock) as (gw, url), httpx.AsyncClient() as client:
        gw.routes.upsert("t", "/t", 10)
        response = await client.get(f"{url}/_berth/api/apis/t?since=3600&x=%2F", headers={"x-request-id": "o-1"})
        assert response.status_code == 200
        assert response.json() == {"path": "/_berth/api/apis/t", "query": "since=3600&x=%2F", "method": "GET"}
        assert response.headers["x-request-id"] == "o-1"
        head = await client.head(f"{url}/_berth/metrics")
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
        assert (await client.get(f"{url}/_berth/healthz")).text == "ok"  # answered by the gateway itself
        assert gw.routes.by_api["t"].stats.latency_count == 0  # berth's pages are no API's requests


async def test_an_event_stream_flows_through_as_it_comes(tmp_path: Path) -> None:
    sock = tmp_path / "observe.sock"
    async with observe_app(sock) as stub, gateway(sock) as (_gw, url), httpx.AsyncClient() as client:
        async with client.stream("GET", f"{url}/_berth/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            assert await asyncio.wait_for(anext(lines), 5) == "data: first"  # while the stream stays open
            stub.release.set()
            rest = [line async for line in lines if line]
        assert rest == ["data: second"]


async def test_a_stopping_gateway_does_not_wait_for_an_open_event_stream(tmp_path: Path) -> None:
    sock = tmp_path / "observe.sock"
    async with observe_app(sock) as stub:
        gw = Gateway(RoutingTable(), GatewaySettings(), observe_socket=str(sock))
        await gw.start("127.0.0.1", 0)
        assert gw.server is not None
        url = f"http://127.0.0.1:{gw.server.sockets[0].getsockname()[1]}"
        async with httpx.AsyncClient() as client, client.stream("GET", f"{url}/_berth/events") as response:
            await asyncio.wait_for(anext(response.aiter_lines()), 5)
            await asyncio.wait_for(gw.stop(grace=30), 5)
        await until(lambda: stub.open_streams == 0, message="the observe app's stream closed")


async def test_without_the_daemon_berth_pages_are_a_503_and_writes_a_405(tmp_path: Path) -> None:
    async with gateway(tmp_path / "absent.sock") as (_gw, url), httpx.AsyncClient() as client:
        for path in ("/_berth/metrics", "/_berth/", "/_berth"):
            response = await client.get(url + path)
            assert (response.status_code, response.headers["x-berth-reason"]) == (503, "control-plane-unavailable")
            assert "daemon" in response.json()["error"]
        assert (await client.get(f"{url}/_berth/healthz")).text == "ok"
        for method in ("POST", "PUT", "DELETE"):
            refused = await client.request(method, f"{url}/_berth/metrics", content=b"{}")
            assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")
            assert refused.json()["error"].startswith("/_berth/metrics is read-only")


async def test_a_daemon_closing_before_it_answers_is_a_503_too(tmp_path: Path) -> None:
    async def read_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # like a daemon stopping with the request read
        writer.close()

    server = await asyncio.start_unix_server(read_then_close, str(tmp_path / "observe.sock"))
    try:
        async with gateway(tmp_path / "observe.sock") as (_gw, url), httpx.AsyncClient() as client:
            response = await client.get(f"{url}/_berth/metrics")
            assert (response.status_code, response.headers["x-berth-reason"]) == (503, "control-plane-unavailable")
    finally:
        server.close()


# --- request logs -------------------------------------------------------------------------------

def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_every_request_is_logged_at_rate_one_and_flushed_at_stop(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "logs", 3, interval=3600)  # only the stop flushes in this test
    async with replicas(tmp_path, 1) as sockets, gateway(log=log) as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        gw.routes.upsert("cold", "/cold", 10)
        for i in range(4):
            await client.post(f"{url}/t?q=1", json=i, headers={"x-request-id": f"id-{i}"})
        await client.post(f"{url}/cold", json=1, headers={"x-request-id": "refused"})
        assert not log.path("t").exists()  # buffered until the flush
    logged = lines(tmp_path / "logs" / "t" / "requests-3.log")
    assert [line["request_id"] for line in logged] == ["id-0", "id-1", "id-2", "id-3"]
    first = logged[0]
    assert set(first) == {"ts", "request_id", "api", "method", "path", "status", "seconds", "replica", "reason"}
    assert (first["api"], first["method"], first["path"], first["status"]) == ("t", "POST", "/t", 200)
    assert first["replica"] == "r0.sock" and first["reason"] is None and 0 < first["seconds"] < 5
    assert abs(first["ts"] - time.time()) < 60
    (cold,) = lines(tmp_path / "logs" / "cold" / "requests-3.log")
    assert (cold["status"], cold["reason"], cold["replica"], cold["request_id"]) == (
        503, "no-ready-replica", None, "refused")


async def test_rate_zero_writes_nothing_and_lines_are_flushed_while_serving(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "logs", 0, interval=0.05)
    async with replicas(tmp_path, 1) as sockets, gateway(log=log) as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets, "t", rate=0.0)
        route(gw, sockets, "u", rate=1.0)
        for i in range(20):
            await client.post(f"{url}/t", json=i)
        await client.post(f"{url}/u", json=1)
        await until(lambda: log.path("u").exists(), message="the periodic flush")
        assert not log.path("t").exists() and not log.pending
        assert len(lines(log.path("u"))) == 1


async def test_a_sampled_rate_logs_about_that_share(tmp_path: Path) -> None:
    log = RequestLog(tmp_path / "logs", 0)
    async with replicas(tmp_path, 1) as sockets, gateway(log=log) as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets, rate=0.5)
        for i in range(200):
            await client.post(f"{url}/t", json=i)
    assert 60 <= len(lines(log.path("t"))) <= 140  # binomial(200, 0.5): outside this ~1e-8
