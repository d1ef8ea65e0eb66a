"""API keys in the daemon: create, list, revoke; the tables pushed to the gateways; per-key counts.

A key is shown once, when it is created. The store and the gateways get only its id, salt and
sha256(salt + secret). Creating or revoking a key returns once every connected gateway worker reports
the routing table that carries the change (bounded by EFFECT_TIMEOUT), so a revoked key is refused
as soon as `berth key revoke` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from berth.control.gateways import GatewayLinks
from berth.control.keystore import KeyRecord, KeyStore, Seen
from berth.control.routing import Routing
from berth.control.store import Store
from berth.core.apikeys import BadKeyOption, check_name, default_name, digest, format_key
from berth.errors import BerthError, ConfigError, NotFound

log = logging.getLogger("berth.control")

EFFECT_TIMEOUT = 2.0  # seconds a create/revoke waits for every gateway worker to hold the new table
FLUSH_SECONDS = 1.0
SECRET_BYTES = 32
CLASSES = ("2XX", "4XX", "5XX")


class KeyLedger:
    """Per-key responses by status class, summed over gateway workers from their cumulative counters."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.totals: dict[tuple[str, str], dict[str, int]] = {}
        self.seen: Seen = {}
        self._dirty = False

    def load(self) -> None:
        self.totals = {(r.target, r.name): dict(r.requests) for r in self.keys.of() if r.requests}
        self.seen = self.keys.seen()

    def observe(self, worker: int, incarnation: str, counters: Mapping[str, Any]) -> None:
        """One worker's report: {target: {key name: {"2XX": n, ...}}}, cumulative for its incarnation."""
        seen_incarnation, before = self.seen.get(worker, ("", {}))
        if seen_incarnation != incarnation:
            before = {}  # a new gateway process: its counters started from zero
        for target, names in counters.items():
            for name, classes in names.items():
                previous = before.get(target, {}).get(name, {})
                change = {c: int(classes.get(c, 0)) - int(previous.get(c, 0)) for c in CLASSES}
                if any(v < 0 for v in change.values()):  # counters restarted: all of them are new
                    change = {c: int(classes.get(c, 0)) for c in CLASSES}
                if any(change.values()):
                    totals = self.totals.setdefault((target, name), {})
                    for c, value in change.items():
                        if value:
                            totals[c] = totals.get(c, 0) + value
                    self._dirty = True
        if seen_incarnation != incarnation or before != counters:
            self.seen[worker] = (incarnation, dict(counters))
            self._dirty = True

    def forget(self, target: str, name: str | None = None) -> None:
        """Drop the counts of a target's keys (or of one of them): they start again from zero."""
        for key in [k for k in self.totals if k[0] == target and name in (None, k[1])]:
            del self.totals[key]

    def flush(self) -> None:
        if self._dirty:
            self.keys.save_counts(self.totals, self.seen)
            self._dirty = False

    def samples(self) -> list[tuple[str, str, str, int]]:
        """(target, key name, status class, count) for the Prometheus exposition."""
        return [(target, name, c, count) for (target, name), classes in sorted(self.totals.items())
                for c, count in sorted(classes.items())]


class KeyService:
    def __init__(self, store: Store, targets: Callable[[], Iterable[str]], routing: Routing,
                 gateways: GatewayLinks, clock: Callable[[], float] = time.time) -> None:
        self.keys = KeyStore(store)
        self.targets = targets  # the names keys may belong to: APIs (and, once merged, splitters)
        self.routing = routing
        self.gateways = gateways
        self.clock = clock
        self.ledger = KeyLedger(self.keys)

    def load(self) -> None:
        """Put every stored key into the routing table (before the first table goes out)."""
        self.ledger.load()
        by_target: dict[str, list[KeyRecord]] = {}
        for record in self.keys.of():
            by_target.setdefault(record.target, []).append(record)
        for target, records in by_target.items():
            self.routing.set_keys(target, [r.entry() for r in records])
        self.gateways.keys = self.ledger

    async def run(self) -> None:
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                try:
                    self.ledger.flush()
                except Exception:  # a busy database must not end key statistics for good
                    log.exception("saving API key statistics failed")
        finally:
            with contextlib.suppress(Exception):
                self.ledger.flush()

    # --- operations -------------------------------------------------------------------------------
    async def create(self, target: str, name: str | None, expires_in: float | None,
                     rate: float | None) -> dict[str, Any]:
        self._known(target)
        if expires_in is not None and expires_in <= 0:
            raise ConfigError([f"expires_in: must be a positive number of seconds (got {expires_in!r})"])
        if rate is not None and rate <= 0:
            raise ConfigError([f"rate: must be a positive number of requests per second (got {rate!r})"])
        existing = self.keys.of(target)
        try:
            name = check_name(name) if name is not None else default_name(r.name for r in existing)
        except BadKeyOption as exc:
            raise ConfigError([exc.message]) from None
        key_id, secret, salt = secrets.token_hex(8), secrets.token_urlsafe(SECRET_BYTES), secrets.token_bytes(16)
        now = self.clock()
        record = KeyRecord(target, name, key_id, salt.hex(), digest(salt, secret).hex(), now,
                           None if expires_in is None else now + expires_in, None, rate)
        self.keys.add(record)
        # A new key starts from zero, even under the name of a key deleted with its API or splitter
        # whose last requests the gateways reported after the delete.
        self.ledger.forget(target, name)
        effective = await self._publish(target)
        required = self.routing.keys.get(target)
        return {**self._view(record), "key": format_key(key_id, secret), "effective": effective,
                "required": bool(required and required.required)}

    def listing(self, target: str | None) -> list[dict[str, Any]]:
        if target is not None and target not in set(self.targets()) and not self.keys.count(target):
            self._known(target)
        return [self._view(record) for record in self.keys.of(target)]

    async def revoke(self, target: str, name: str) -> dict[str, Any]:
        self._known(target)
        if not self.keys.revoke(target, name, self.clock()):
            names = ", ".join(r.name for r in self.keys.of(target)) or "none"
            raise NotFound(f"API {target!r} has no key named {name!r} (its keys: {names})",
                           hint=f"`berth key list {target}` shows them")
        effective = await self._publish(target)
        record = next(r for r in self.keys.of(target) if r.name == name)
        return {**self._view(record), "effective": effective}

    def removed(self, target: str) -> int:
        """The API is being deleted: its keys go with it (the store's delete removes the rows)."""
        count = self.keys.count(target)
        self.ledger.forget(target)
        return count

    # --- helpers ------------------------------------------------------------------------------------
    def _known(self, target: str) -> None:
        known = sorted(self.targets())
        if target not in known:
            raise NotFound(f"no API named {target!r} (deployed: {', '.join(known) or 'none'})",
                           hint="`berth get` lists them; check the name")

    async def _publish(self, target: str) -> bool:
        """Push the target's keys; True once every connected gateway worker holds that table."""
        self.routing.set_keys(target, [r.entry() for r in self.keys.of(target)])
        self.gateways.push()
        generation = self.routing.generation
        deadline = asyncio.get_running_loop().time() + EFFECT_TIMEOUT
        while True:
            reports = [link.stats for link in self.gateways.connected]
            if all(s is not None and s.generation >= generation for s in reports):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.02)

    def _view(self, record: KeyRecord) -> dict[str, Any]:
        counts = self.ledger.totals.get((record.target, record.name), record.requests)
        return {"api": record.target, "name": record.name, "id": f"bk_{record.id}", "created_at": record.created_at,
                "expires_at": record.expires_at, "revoked_at": record.revoked_at, "rate": record.rate,
                "requests": sum(counts.values()), "requests_by_class": dict(counts)}

    # --- management API routes -------------------------------------------------------------------
    def routes(self) -> list[Route]:
        return [Route("/v1/keys", self._list), Route("/v1/keys", self._create, methods=["POST"]),
                Route("/v1/keys/{api}/{name}/revoke", self._revoke, methods=["POST"])]

    async def _list(self, request: Request) -> Response:
        return JSONResponse(self.listing(request.query_params.get("api")))

    async def _create(self, request: Request) -> Response:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("api"), str):
            raise BerthError("a key request needs a JSON object with the API's name in 'api'")
        return JSONResponse(await self.create(body["api"], body.get("name"), _number(body, "expires_in"),
                                              _number(body, "rate")))

    async def _revoke(self, request: Request) -> Response:
        return JSONResponse(await self.revoke(request.path_params["api"], request.path_params["name"]))


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError([f"{name}: expected a number (got {value!r})"])
    return float(value)
