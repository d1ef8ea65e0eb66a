"""API keys in the gateway: the key entries of the routing table, and checking a request against them.

The daemon sends, per target (an API, or a splitter), whether keys are required and one entry per key:
its id, name, salt, digest, expiry, revoked flag and per-worker rate. The gateway never holds a key
itself: it recomputes sha256(salt + presented secret) and compares digests in constant time.

Routes that do not require keys carry `keys = None`: one attribute check on the hot path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from berth.core.apikeys import format_rate, split_key, verify
from berth.core.tokenbucket import TokenBucket, retry_after

if TYPE_CHECKING:
    from berth.gateway.http import ParsedRequest
    from berth.gateway.routes import RoutingTable

KEY_HEADERS = frozenset({b"authorization", b"x-api-key"})
CLASSES = ((2, "2XX"), (4, "4XX"), (5, "5XX"))


@dataclass(frozen=True)
class KeyEntry:
    """One key as a gateway worker gets it: never the key, only what verifies it."""

    id: str
    name: str
    salt: str    # hex
    digest: str  # hex of sha256(salt + secret)
    expires: float | None = None  # wall-clock seconds since the epoch
    revoked: bool = False
    rate: float | None = None     # requests per second this worker admits (the key's rate / workers)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> KeyEntry:
        if not isinstance(data, dict):
            raise ValueError(f"a key entry must be an object, not {type(data).__name__}")
        entry = cls(id=_typed(data, "id", str), name=_typed(data, "name", str), salt=_typed(data, "salt", str),
                    digest=_typed(data, "digest", str), expires=_number(data, "expires"),
                    revoked=_typed(data, "revoked", bool), rate=_number(data, "rate"))
        try:
            bytes.fromhex(entry.salt), bytes.fromhex(entry.digest)
        except ValueError:
            raise ValueError(f"key entry {entry.name!r}: salt and digest must be hex") from None
        if entry.rate is not None and entry.rate <= 0:
            raise ValueError(f"key entry {entry.name!r}: rate must be positive, not {entry.rate!r}")
        return entry


@dataclass(frozen=True)
class TargetKeys:
    """What one target's requests need: whether keys are required, and its keys."""

    required: bool
    entries: tuple[KeyEntry, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"required": self.required, "entries": [e.as_json() for e in self.entries]}


def keys_field(targets: Mapping[str, TargetKeys]) -> dict[str, Any]:
    """The routes message's optional "keys" field: only targets that require keys."""
    return {name: keys.as_json() for name, keys in sorted(targets.items()) if keys.required}


def parse_keys(data: Any) -> dict[str, TargetKeys]:
    """The "keys" field, checked whole; absent (a table saved by an older daemon) means no keys anywhere."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError("the routes message's keys must be an object of target name -> keys")
    parsed: dict[str, TargetKeys] = {}
    for name, value in data.items():
        if not isinstance(value, dict) or not isinstance(value.get("entries", []), list):
            raise ValueError(f"keys of {name!r} must be an object with a list of entries")
        parsed[name] = TargetKeys(_typed(value, "required", bool),
                                  tuple(KeyEntry.from_json(e) for e in value.get("entries", [])))
    return parsed


def _typed(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"key field {name!r} has the wrong type: {value!r}")
    return value


def _number(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"key field {name!r} must be a number or null, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    message: str
    headers: bytes  # extra response header lines, each ending with CRLF


class LiveKey:
    """A key entry ready for checking, with its counters and bucket (both outlive table updates)."""

    __slots__ = ("bucket", "conditional", "counts", "digest", "entry", "salt")

    def __init__(self, entry: KeyEntry, counts: list[int], bucket: TokenBucket | None) -> None:
        self.entry = entry
        self.salt = bytes.fromhex(entry.salt)
        self.digest = bytes.fromhex(entry.digest)
        self.counts = counts  # responses by status class, indexed by status // 100
        self.bucket = bucket
        self.conditional = entry.revoked or entry.expires is not None or bucket is not None


class KeyRing:
    """The keys of one target that requires them."""

    def __init__(self, target: str, keys: dict[bytes, LiveKey]) -> None:
        self.target = target
        self.keys = keys  # by key id

    def admit(self, request: ParsedRequest, wall: Callable[[], float] = time.time,
              now: Callable[[], float] = time.monotonic) -> Refusal | None:
        """None when the request may go on (its key headers removed); else the answer to give it.
        The clocks are read only for a key that expires (`wall`) or has a rate (`now`)."""
        if request.key_counts is not None:
            return None  # admitted already: a request held while its API scaled from zero, now resumed
        presented = _presented(request)
        if presented is None:
            return self._refuse(401, "missing-api-key", f"API {self.target!r} requires an API key: send it as "
                                f"`Authorization: Bearer <key>` or `X-API-Key: <key>`")
        parsed = split_key(presented)
        key = self.keys.get(parsed[0]) if parsed is not None else None
        if parsed is None or key is None or not verify(key.salt, key.digest, parsed[1]):
            return self._refuse(401, "invalid-api-key", f"the API key sent is not a key of API {self.target!r}; "
                                "check that it was copied whole")
        request.key_counts = key.counts  # from here on, the request counts under its key's name
        if key.conditional:
            refusal = self._conditions(key, wall, now)
            if refusal is not None:
                return refusal
        request.headers = [h for h in request.headers if h[0] not in KEY_HEADERS]  # the replica never sees keys
        return None

    def _conditions(self, key: LiveKey, wall: Callable[[], float], now: Callable[[], float]) -> Refusal | None:
        """Revoked, expired or over its rate: only keys that can be are looked at (`key.conditional`)."""
        entry = key.entry
        if entry.revoked:
            return self._refuse(401, "revoked-api-key", f"API key {entry.name!r} of {self.target!r} was revoked")
        if entry.expires is not None and wall() >= entry.expires:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.expires))
            return self._refuse(401, "expired-api-key", f"API key {entry.name!r} of {self.target!r} expired "
                                f"at {when}")
        if key.bucket is not None:
            wait = key.bucket.take(now())
            if wait:
                seconds = retry_after(wait)
                return Refusal(429, "rate-limited", f"API key {entry.name!r} is over its rate limit "
                               f"({format_rate(key.bucket.rate)} on this gateway worker); retry after {seconds}s",
                               b"retry-after: %d\r\n" % seconds)
        return None

    def _refuse(self, status: int, reason: str, message: str) -> Refusal:
        return Refusal(status, reason, f"{message}; create a key with `berth key create {self.target}`",
                       b"www-authenticate: Bearer\r\n")


def _presented(request: ParsedRequest) -> bytes | None:
    """The key from `X-API-Key`, else from `Authorization: Bearer`."""
    bearer = None
    for name, value in request.headers:
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                bearer = token.strip()
    return bearer


class KeyState:
    """A gateway worker's key state across routing tables: per-key counters and rate-limit buckets."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], list[int]] = {}              # (target, key name) -> by status class
        self.buckets: dict[tuple[str, str], TokenBucket] = {}          # (target, key id)

    def rings(self, targets: Mapping[str, TargetKeys], now: float) -> dict[str, KeyRing]:
        """Rings for the targets that require keys; counters and buckets of known keys carry over."""
        rings: dict[str, KeyRing] = {}
        buckets: dict[tuple[str, str], TokenBucket] = {}
        for target, keys in targets.items():
            if not keys.required:
                continue
            live: dict[bytes, LiveKey] = {}
            for entry in keys.entries:
                counts = self.counts.setdefault((target, entry.name), [0] * 6)
                bucket = None
                if entry.rate is not None:
                    bucket = self.buckets.get((target, entry.id))
                    if bucket is None or bucket.rate != entry.rate:
                        bucket = TokenBucket(entry.rate, now)
                    buckets[(target, entry.id)] = bucket
                live[entry.id.encode()] = LiveKey(entry, counts, bucket)
            rings[target] = KeyRing(target, live)
        self.buckets = buckets
        return rings

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        """Cumulative responses per target, key name and status class, for the "stats" message."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for (target, name), counts in self.counts.items():
            classes = {label: counts[index] for index, label in CLASSES if counts[index]}
            if classes:
                out.setdefault(target, {})[name] = classes
        return out


def attach_keys(table: RoutingTable, rings: Mapping[str, KeyRing]) -> None:
    """Point each route at its target's keys (None: the route requires none)."""
    for name, route in [*table.by_api.items(), *table.splitters.items()]:
        route.keys = rings.get(name)
