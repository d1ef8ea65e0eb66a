"""Hostile clients against a route that requires API keys: refusals cost nothing lasting."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from berth.core.apikeys import digest, format_key
from berth.gateway.keys import KeyEntry, KeyState, TargetKeys, attach_keys

from .harness import Stack, close, post, read_response, stack

pytestmark = pytest.mark.anyio


def protect(s: Stack) -> tuple[str, KeyState]:
    key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(32), secrets.token_bytes(16)
    entry = KeyEntry(id=key_id, name="ci", salt=salt.hex(), digest=digest(salt, secret).hex())
    state = KeyState()
    attach_keys(s.gateway.routes, state.rings({"t": TargetKeys(True, (entry,))}, 0.0))
    return format_key(key_id, secret), state


async def test_pipelined_refusals_and_a_valid_key_are_answered_in_order(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        key, state = protect(s)
        reader, writer = await s.connect()
        burst = [post(), post(extra="x-api-key: bk_nope\r\n"), post(extra=f"authorization: Bearer {key}\r\n"),
                 post(extra=f"x-api-key: {key[:-1]}\r\n"), post(extra=f"x-api-key: {key}\r\n")]
        writer.write(b"".join(burst))
        statuses = [(await read_response(reader)).status for _ in burst]
        assert statuses == [401, 401, 200, 401, 200]
        assert state.stats() == {"t": {"ci": {"2XX": 2}}}
        await close(writer)
        await s.settled()


async def test_oversized_and_odd_key_headers_are_refused_without_hashing_them(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        key, _ = protect(s)
        reader, writer = await s.connect()
        odd = [f"x-api-key: {key}{'A' * 30000}\r\n", "authorization: Bearer\r\n", "authorization: bk_\r\n",
               "x-api-key: \r\n", f"x-api-key: {key.replace('bk_', 'BK_')}\r\n", "x-api-key: bk_\xe9_\xe9\r\n"]
        for extra in odd:
            writer.write(post(extra=extra))
            response = await read_response(reader)
            assert response.status == 401 and response.header("x-berth-reason") in ("missing-api-key",
                                                                                    "invalid-api-key")
        assert s.route.stats.code_4xx == len(odd) and s.route.upstreams[0].in_flight == 0
        await close(writer)
        await s.settled()


async def test_a_client_that_vanishes_after_a_valid_key_leaks_nothing(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        key, state = protect(s)
        for _ in range(5):
            _, writer = await s.connect()
            writer.write(post("/t?sleep=0.2", extra=f"x-api-key: {key}\r\n"))
            await asyncio.sleep(0.05)
            writer.transport.abort()
        await s.settled()
        assert sum(state.stats()["t"]["ci"].values()) == 5  # each counted once, as client-gone (4XX) or answered
