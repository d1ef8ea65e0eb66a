"""API keys in the gateway, in-process: a keyed route and an open one side by side, real replica apps."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

import berth.core.apikeys as apikeys
from berth.core.apikeys import digest, format_key
from berth.gateway.control import RouteApplier
from berth.gateway.keys import KeyEntry, KeyState, TargetKeys, attach_keys
from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.routes import RoutingTable, Target
from tests.robustness.harness import replicas, until

pytestmark = pytest.mark.anyio


@dataclass
class Key:
    entry: KeyEntry
    key: str


def make_key(name: str, *, expires: float | None = None, revoked: bool = False, rate: float | None = None) -> Key:
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    entry = KeyEntry(id=key_id, name=name, salt=salt.hex(), digest=digest(salt, secret).hex(), expires=expires,
                     revoked=revoked, rate=rate)
    return Key(entry, format_key(key_id, secret))


KEYS = {"ci": make_key("ci"), "old": make_key("old", expires=time.time() - 1),
        "gone": make_key("gone", revoked=True), "slow": make_key("slow", rate=0.5)}


@asynccontextmanager
async def keyed(tmp_path: Path, sockets: list[str] | None = None) -> AsyncIterator[tuple[Gateway, str, KeyState]]:
    """/k requires keys, /o does not; both route to the same replicas."""
    table = RoutingTable()
    gw = Gateway(table, GatewaySettings())
    await gw.start("127.0.0.1", 0)
    assert gw.server is not None
    for api in ("k", "o"):
        gw.routes.upsert(api, f"/{api}", 1024).set_targets(Target(s.rsplit("/", 1)[-1], s) for s in sockets or [])
    state = KeyState()
    attach_keys(table, state.rings({"k": TargetKeys(True, tuple(k.entry for k in KEYS.values()))}, time.monotonic()))
    try:
        yield gw, f"http://127.0.0.1:{gw.server.sockets[0].getsockname()[1]}", state
    finally:
        await gw.stop()


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name].key}"}


async def test_a_valid_key_passes_in_either_header_and_the_replica_never_sees_it(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, keyed(tmp_path, sockets) as (gw, url, state), \
            httpx.AsyncClient() as client:
        for headers in (bearer("ci"), {"X-API-Key": KEYS["ci"].key}, {"authorization": f"bearer {KEYS['ci'].key}"}):
            response = await client.post(f"{url}/k?kind=headers", json={}, headers={**headers, "x-other": "kept"})
            assert response.status_code == 200, response.text
            seen = response.json()["headers"]
            assert "authorization" not in seen and "x-api-key" not in seen and seen["x-other"] == "kept"
        assert state.stats() == {"k": {"ci": {"2XX": 3}}}
        # The open route beside it needs no key, and counts nothing under any key.
        assert (await client.post(f"{url}/o", json={})).status_code == 200
        assert gw.routes.by_api["o"].keys is None and state.stats() == {"k": {"ci": {"2XX": 3}}}


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing-api-key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing-api-key"),
    ({"Authorization": "Bearer"}, "missing-api-key"),
    ({"X-API-Key": "not-a-key"}, "invalid-api-key"),
    ({"X-API-Key": format_key("0123456789abcdef", "a" * 43)}, "invalid-api-key"),  # no such id
    ({"X-API-Key": KEYS["ci"].key[:-2] + ("AA" if not KEYS["ci"].key.endswith("AA") else "BB")}, "invalid-api-key"),
    ({"X-API-Key": KEYS["old"].key}, "expired-api-key"),
    ({"Authorization": f"Bearer {KEYS['gone'].key}"}, "revoked-api-key"),
])
async def test_refusals_are_401s_with_a_reason_and_cost_no_replica_anything(
        tmp_path: Path, headers: dict[str, str], reason: str) -> None:
    # The routes point at a socket nobody listens on: touching a replica would be a 503, not a 401.
    async with keyed(tmp_path, [str(tmp_path / "nobody.sock")]) as (gw, url, _), httpx.AsyncClient() as client:
        response = await client.post(f"{url}/k", json={"x": 1}, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["x-berth-reason"] == reason
        assert response.headers["www-authenticate"] == "Bearer"
        body = response.json()
        assert "berth key create k" in body["error"] and body["request_id"] == response.headers["x-request-id"]
        route = gw.routes.by_api["k"]
        assert route.stats.refusals == {reason: 1} and route.stats.code_4xx == 1 and route.in_flight == 0
        # Keep-alive survives a refusal: the next request on the connection is served normally.
        assert (await client.post(f"{url}/k", json={}, headers=headers)).status_code == 401


async def test_refusals_of_a_known_key_count_under_its_name(tmp_path: Path) -> None:
    async with keyed(tmp_path, []) as (_, url, state), httpx.AsyncClient() as client:
        await client.post(f"{url}/k", json={}, headers=bearer("old"))
        await client.post(f"{url}/k", json={}, headers=bearer("gone"))
        await client.post(f"{url}/k", json={})
        assert state.stats() == {"k": {"old": {"4XX": 1}, "gone": {"4XX": 1}}}


async def test_the_digest_comparison_is_constant_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[int] = []
    real = apikeys.hmac.compare_digest
    monkeypatch.setattr(apikeys.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    async with keyed(tmp_path, []) as (_, url, _state), httpx.AsyncClient() as client:
        wrong = KEYS["ci"].key[:-1] + ("x" if not KEYS["ci"].key.endswith("x") else "y")
        assert (await client.post(f"{url}/k", json={}, headers={"X-API-Key": wrong})).status_code == 401
    assert compared == [1]


async def test_over_its_rate_a_key_gets_429_with_retry_after(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, keyed(tmp_path, sockets) as (gw, url, state), \
            httpx.AsyncClient() as client:
        first = await client.post(f"{url}/k", json={}, headers=bearer("slow"))
        second = await client.post(f"{url}/k", json={}, headers=bearer("slow"))
        assert first.status_code == 200
        assert (second.status_code, second.headers["x-berth-reason"]) == (429, "rate-limited")
        assert int(second.headers["retry-after"]) == 2  # 0.5/s: the next token in 2 s
        assert "retry after 2s" in second.json()["error"]
        # Another key of the same API is not slowed by it.
        assert (await client.post(f"{url}/k", json={}, headers=bearer("ci"))).status_code == 200
        assert state.stats()["k"]["slow"] == {"2XX": 1, "4XX": 1}
        assert gw.routes.by_api["k"].stats.refusals == {"rate-limited": 1}


async def test_a_held_request_is_checked_once_and_resumes_when_a_replica_is_ready(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, keyed(tmp_path, []) as (gw, url, _), \
            httpx.AsyncClient() as client:
        route = gw.routes.by_api["k"]
        route.hold_requests(True, 10, 10.0)
        refused = await client.post(f"{url}/k", json={})
        assert refused.status_code == 401  # a request without a key is never held
        pending = asyncio.create_task(client.post(f"{url}/k", json={}, headers=bearer("ci")))
        await until(lambda: len(route.waiting) == 1)
        route.set_targets([Target("r0", sockets[0])])
        assert (await pending).status_code == 200


async def test_keys_reach_the_gateway_in_the_routes_message_and_counts_leave_in_its_stats(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, keyed(tmp_path, sockets) as (gw, url, _), \
            httpx.AsyncClient() as client:
        applier = RouteApplier(gw.routes)
        entry = {"api": "k", "endpoint": "/k", "max_replica_concurrency": 10, "holds": False, "hold_limit": 0,
                 "hold_timeout": 0.0, "timeout": 60.0, "targets": [["r0", sockets[0]]]}
        keys = {"k": {"required": True, "entries": [KEYS["ci"].entry.as_json()]}}
        applier.apply({"op": "routes", "generation": 1, "routes": [entry], "keys": keys})
        assert (await client.post(f"{url}/k", json={}, headers=bearer("ci"))).status_code == 200
        assert (await client.post(f"{url}/k", json={}, headers=bearer("slow"))).status_code == 401  # not sent
        assert applier.stats("gw")["keys"] == {"k": {"ci": {"2XX": 1}}}
        # Revoked in the next table: refused at once; its counters carry on.
        revoked = {"k": {"required": True, "entries": [{**KEYS["ci"].entry.as_json(), "revoked": True}]}}
        applier.apply({"op": "routes", "generation": 2, "routes": [entry], "keys": revoked})
        response = await client.post(f"{url}/k", json={}, headers=bearer("ci"))
        assert response.headers["x-berth-reason"] == "revoked-api-key"
        assert applier.stats("gw")["keys"] == {"k": {"ci": {"2XX": 1, "4XX": 1}}}
