"""Traffic splitters in the gateway in-process: weighted choice, the x-berth-api header, sticky
header, and a shadow that never answers (it must not delay the primary, and its counts go back to 0)."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from berth.gateway.control import RouteApplier, routes_message
from berth.gateway.routes import Target
from berth.gateway.splitting import SplitEntry
from tests.integration.test_gateway import gateway
from tests.robustness.harness import replicas, until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def silent_replica(path: Path) -> AsyncIterator[tuple[str, list[asyncio.StreamWriter]]]:
    """A replica that reads requests and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield str(path), held
    finally:
        server.close()
        for writer in held:
            writer.close()


def split(gw, backends: list[tuple[str, int]], shadow: str | None = None, header: str | None = None) -> None:
    gw.routes.set_splitters([SplitEntry("sp", "/sp", tuple(backends), shadow, header)])


def api(gw, name: str, sockets: list[str], timeout: float = 600.0) -> None:
    route = gw.routes.upsert(name, f"/{name}", 1024)
    route.timeout = timeout
    route.set_targets(Target(s.rsplit("/", 1)[-1], s) for s in sockets)


async def test_weights_split_exactly_and_the_header_names_the_api(tmp_path: Path) -> None:
    async with replicas(tmp_path, 2) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        api(gw, "a", sockets[:1])
        api(gw, "b", sockets[1:])
        split(gw, [("a", 90), ("b", 10)])
        seen = Counter()
        for n in range(100):
            response = await client.post(f"{url}/sp", json=n)
            assert response.status_code == 200
            assert response.json()["replica"] == {"a": "r0", "b": "r1"}[response.headers["x-berth-api"]]
            seen[response.headers["x-berth-api"]] += 1
        assert seen == {"a": 90, "b": 10}
        plain = await client.post(f"{url}/a", json=1)
        assert "x-berth-api" not in plain.headers  # only split exchanges carry it
        counts = gw.routes.splitters["sp"].split.counters()["backends"]
        assert (counts["a"]["requests"], counts["a"]["2xx"], counts["b"]["2xx"]) == (90, 90, 10)
        assert gw.routes.by_api["a"].in_flight == gw.routes.by_api["b"].in_flight == 0


async def test_gateway_errors_of_a_split_request_name_the_api(tmp_path: Path) -> None:
    async with gateway() as (gw, url), httpx.AsyncClient() as client:
        gw.routes.upsert("a", "/a", 10)  # no ready replica
        split(gw, [("a", 100)])
        response = await client.post(f"{url}/sp", json=1)
        assert (response.status_code, response.headers["x-berth-api"]) == (503, "a")
        assert response.headers["x-berth-reason"] == "no-ready-replica"
        assert gw.routes.splitters["sp"].split.counters()["backends"]["a"]["5xx"] == 1


async def test_sticky_header_sends_one_user_to_one_api(tmp_path: Path) -> None:
    async with replicas(tmp_path, 2) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        api(gw, "a", sockets[:1])
        api(gw, "b", sockets[1:])
        split(gw, [("a", 50), ("b", 50)], header="x-user")
        for user in ("alice", "bob", "carol", "dave"):
            answers = {(await client.post(f"{url}/sp", json=1, headers={"X-User": user})).headers["x-berth-api"]
                       for _ in range(5)}
            assert len(answers) == 1
        users = {(await client.post(f"{url}/sp", json=1, headers={"X-User": f"u{n}"})).headers["x-berth-api"]
                 for n in range(40)}
        assert users == {"a", "b"}
        anonymous = Counter([(await client.post(f"{url}/sp", json=1)).headers["x-berth-api"] for _ in range(10)])
        assert anonymous == {"a": 5, "b": 5}  # no header: smooth weighted round robin


async def test_a_shadow_that_never_answers_does_not_delay_the_primary(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, silent_replica(tmp_path / "silent.sock") as (silent, _), \
            gateway() as (gw, url), httpx.AsyncClient() as client:
        api(gw, "a", sockets)
        api(gw, "s", [silent], timeout=1.0)
        split(gw, [("a", 100)], shadow="s")
        shadow_route = gw.routes.by_api["s"]
        started = time.monotonic()
        for n in range(10):
            response = await client.post(f"{url}/sp", json=n)
            assert (response.status_code, response.headers["x-berth-api"]) == (200, "a")
        assert time.monotonic() - started < 0.9  # far below the shadow's 1 s timeout: nobody waited for it
        counters = gw.routes.splitters["sp"].split.counters()["shadow"]["s"]
        assert counters["requests"] == 10 and counters["in_flight"] == 10 and shadow_route.in_flight == 10
        await until(lambda: shadow_route.in_flight == 0, timeout=5)
        counters = gw.routes.splitters["sp"].split.counters()["shadow"]["s"]
        assert (counters["timeouts"], counters["in_flight"]) == (10, 0)
        assert all(u.in_flight == 0 for u in shadow_route.upstreams)


async def test_shadow_copies_are_answered_and_counted_or_dropped(tmp_path: Path) -> None:
    async with replicas(tmp_path, 2) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        api(gw, "a", sockets[:1])
        api(gw, "s", sockets[1:])
        split(gw, [("a", 100)], shadow="s")
        for n in range(5):
            assert (await client.post(f"{url}/sp", json=n)).status_code == 200
        shadow = gw.routes.splitters["sp"].split
        await until(lambda: shadow.counters()["shadow"]["s"]["2xx"] == 5)
        assert gw.routes.by_api["s"].stats.code_2xx == 5  # the shadow API counts what it received
        gw.routes.by_api["s"].set_targets(())  # no ready replica: copies are dropped
        assert (await client.post(f"{url}/sp", json=1)).status_code == 200
        assert shadow.counters()["shadow"]["s"]["dropped"] == 1
        assert gw.routes.by_api["s"].in_flight == 0


def test_routes_message_carries_splitters_and_an_old_table_has_none() -> None:
    from berth.gateway.control import RouteEntry
    from berth.gateway.routes import RoutingTable

    table = RoutingTable()
    applier = RouteApplier(table)
    entry = RouteEntry(api="a", endpoint="/a", max_replica_concurrency=4)
    splitter = SplitEntry("sp", "/sp", (("a", 100),), None, "x-user", "required")
    applier.apply(routes_message(1, [entry], [splitter]))
    assert table.by_endpoint["/sp"] is table.splitters["sp"]
    assert table.splitters["sp"].split.entry == splitter
    assert "splitters" in applier.stats("i")
    applier.apply(routes_message(2, [entry]))  # e.g. a table saved by an older daemon
    assert table.splitters == {} and "/sp" not in table.by_endpoint
    with pytest.raises(ValueError, match="backends"):
        applier.apply({**routes_message(3, [entry]), "splitters": [{"name": "x", "endpoint": "/x", "backends": []}]})
    assert applier.generation == 2


async def test_a_held_split_request_keeps_its_api_and_is_counted_once(tmp_path: Path) -> None:
    woken: list[str] = []
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        gw.wake = woken.append
        cold = gw.routes.upsert("cold", "/cold", 10)
        cold.hold_requests(True, limit=4, timeout=5)
        split(gw, [("cold", 100)], shadow=None)
        request = asyncio.create_task(client.post(f"{url}/sp", json=1))
        await until(lambda: cold.waiting)
        assert woken == ["cold"]
        api(gw, "cold", sockets)  # the replica is ready: the held request goes on to it
        response = await request
        assert (response.status_code, response.headers["x-berth-api"]) == (200, "cold")
        counts = gw.routes.splitters["sp"].split.counters()["backends"]["cold"]
        assert (counts["requests"], counts["2xx"]) == (1, 1)
        assert cold.in_flight == 0 and not cold.waiting
