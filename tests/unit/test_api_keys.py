"""API keys, the pure parts and the tables: format, digest, options, token bucket, spec field, routing."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from berth.config import parse_spec_text
from berth.control.gateways import GatewayLinks
from berth.control.keys import KeyLedger, KeyService
from berth.control.keystore import KeyRecord, KeyStore
from berth.control.ledger import RequestLedger
from berth.control.routing import Routing
from berth.control.store import Store
from berth.core.apikeys import (
    BadKeyOption,
    default_name,
    digest,
    format_key,
    format_rate,
    parse_expires,
    parse_key,
    parse_rate,
    split_key,
    verify,
)
from berth.core.tokenbucket import TokenBucket, retry_after
from berth.errors import ConfigError, Conflict
from berth.gateway.control import RouteApplier
from berth.gateway.keys import KeyEntry, parse_keys
from berth.gateway.routes import RoutingTable

SPEC = "- name: iris\n  kind: RealtimeAPI\n  predictor:\n    type: python\n    path: predictor.py\n"


def new_key() -> tuple[str, str, str]:
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return key_id, secret, format_key(key_id, secret)


# --- key format and verification ---------------------------------------------------------------
def test_a_key_parses_back_into_its_id_and_secret_even_with_underscores_in_the_secret() -> None:
    for _ in range(50):
        key_id, secret, key = new_key()
        assert key.startswith("bk_") and parse_key(key) == (key_id, secret)
    assert parse_key(format_key("0123456789abcdef", "a_b-" * 11)) == ("0123456789abcdef", "a_b-" * 11)


@pytest.mark.parametrize("text", ["", "bk_", "bk_abc", "xx_0123456789abcdef_" + "a" * 43,
                                  "bk_0123456789abcdef_short", "bk_NOTHEX0123456789_" + "a" * 43,
                                  "bk_0123456789abcdef_" + "a" * 42 + "!", "Bearer bk_0123456789abcdef_" + "a" * 43])
def test_malformed_keys_do_not_parse(text: str) -> None:
    assert parse_key(text) is None


@pytest.mark.parametrize(("presented", "split"), [
    (b"bk_0123_" + b"s" * 43, (b"0123", b"s" * 43)),
    (b"bk_0123_a_b", (b"0123", b"a_b")),  # the gateway's split: the secret keeps its underscores
    (b"bk_0123", None), (b"bk_0123_", None), (b"xx_0123_abc", None), (b"bk_0123_" + b"s" * 129, None),
])
def test_the_gateway_splits_a_presented_key_without_validating_more_than_it_needs(
        presented: bytes, split: tuple[bytes, bytes] | None) -> None:
    assert split_key(presented) == split


def test_verification_takes_the_salted_digest_and_only_the_right_secret() -> None:
    salt = secrets.token_bytes(16)
    _, secret, _ = new_key()
    stored = digest(salt, secret)
    assert len(stored) == 32 and secret.encode() not in stored
    assert verify(salt, stored, secret.encode())
    assert not verify(salt, stored, (secret[:-1] + ("A" if secret[-1] != "A" else "B")).encode())
    assert not verify(secrets.token_bytes(16), stored, secret.encode())  # the salt is part of it


def test_verification_compares_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import berth.core.apikeys as apikeys

    calls: list[tuple[bytes, bytes]] = []
    real = apikeys.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    salt = b"salt"
    assert verify(salt, digest(salt, "s" * 43), b"s" * 43)
    assert len(calls) == 1


# --- --expires, --rate, names --------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [("2s", 2), ("90m", 5400), ("12h", 43200), ("30d", 2592000),
                                               ("1w", 604800), ("1.5h", 5400), (" 3d ", 259200)])
def test_expiry_durations(text: str, seconds: float) -> None:
    assert parse_expires(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "30x", "0s", "-1d", "d", "1 d", "soon"])
def test_bad_expiry_says_what_was_expected(text: str) -> None:
    with pytest.raises(BadKeyOption, match=r"--expires: expected a positive duration such as 30d") as info:
        parse_expires(text)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(("text", "per_second"), [("100/s", 100), ("600/m", 10), ("3600/h", 1), ("0.5/s", 0.5)])
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["100", "100/d", "/s", "0/s", "-5/s", "fast", "100 / s"])
def test_bad_rate_says_what_was_expected(text: str) -> None:
    with pytest.raises(BadKeyOption, match=r"--rate: expected a positive number of requests per unit such as 100/s"):
        parse_rate(text)


@pytest.mark.parametrize(("per_second", "shown"), [(None, "-"), (100.0, "100/s"), (10 / 60, "10/m"),
                                                   (1 / 3600, "1/h"), (0.25, "15/m")])
def test_rates_read_back_in_their_own_unit(per_second: float | None, shown: str) -> None:
    assert format_rate(per_second) == shown


@pytest.mark.parametrize(("taken", "name"), [([], "key-1"), (["key-1"], "key-2"), (["ci", "key-2"], "key-3"),
                                             (["key-1", "key-3"], "key-4"), (["key-2"], "key-3")])
def test_default_names_count_up(taken: list[str], name: str) -> None:
    assert default_name(taken) == name


# --- the token bucket ---------------------------------------------------------------------------
@pytest.mark.parametrize(("rate", "steps", "expected"), [
    # rate 2/s, burst 2: two at once, the third waits half a second; refilled after it
    (2.0, [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]),
    (2.0, [0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.5]),
    # a slow rate still admits one (burst at least 1), then one every 10 s
    (0.1, [0.0, 0.0, 5.0, 10.0], [0.0, 10.0, 5.0, 0.0]),
    # a long idle spell does not bank more than one second's worth
    (3.0, [0.0, 100.0, 100.0, 100.0, 100.0], [0.0, 0.0, 0.0, 0.0, pytest.approx(1 / 3)]),
    # a clock that goes backwards refills nothing and breaks nothing
    (1.0, [10.0, 5.0], [0.0, 1.0]),
])
def test_token_bucket_table(rate: float, steps: list[float], expected: list[float]) -> None:
    bucket = TokenBucket(rate, now=steps[0])
    assert [bucket.take(now) for now in steps] == expected


@pytest.mark.parametrize(("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.2, 2), (10.0, 10)])
def test_retry_after_is_whole_seconds_and_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_a_bucket_needs_a_positive_rate() -> None:
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0.0, now=0.0)


# --- the spec field -----------------------------------------------------------------------------
def test_api_keys_default_to_none_and_take_required() -> None:
    assert parse_spec_text(SPEC, Path("/tmp/berth.yaml")).apis[0].networking.api_keys == "none"
    spec = parse_spec_text(SPEC + "  networking:\n    api_keys: required\n", Path("/tmp/berth.yaml"))
    assert spec.apis[0].networking.api_keys == "required"


def test_a_bad_api_keys_value_is_refused_with_its_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse_spec_text(SPEC + "  networking:\n    api_keys: yes-please\n", Path("/tmp/berth.yaml"))
    assert any("berth.yaml:7:5: networking.api_keys" in problem for problem in info.value.problems), info.value


# --- the routes message -------------------------------------------------------------------------
def entry(name: str = "ci", rate: float | None = None) -> KeyEntry:
    return KeyEntry(id=secrets.token_hex(8), name=name, salt="00", digest="11" * 32, rate=rate)


def test_keys_travel_only_for_targets_that_require_them_with_rates_shared_out_between_workers() -> None:
    routing = Routing(workers=4)
    routing.configure("iris", "/iris", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0)
    routing.configure("open", "/open", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0)
    before = routing.generation
    routing.require_keys("iris", True)
    routing.require_keys("open", False)
    routing.set_keys("iris", [entry(rate=100.0)])
    assert routing.generation == before + 2  # each change is a new table; no change is none
    message = routing.message()
    assert list(message["keys"]) == ["iris"]  # type: ignore[call-overload]
    table = RoutingTable()
    RouteApplier(table).apply(message)
    ring = table.by_api["iris"].keys
    assert ring is not None and table.by_api["open"].keys is None
    assert [k.entry.rate for k in ring.keys.values()] == [25.0]
    routing.require_keys("iris", False)
    RouteApplier(table).apply(routing.message())
    assert table.by_api["iris"].keys is None


def test_a_table_without_keys_from_an_older_daemon_protects_nothing_and_bad_keys_are_refused_whole() -> None:
    assert parse_keys(None) == {}
    good = {"iris": {"required": True, "entries": [entry().as_json()]}}
    assert parse_keys(good)["iris"].required
    for bad in ([], {"iris": []}, {"iris": {"required": "yes", "entries": []}},
                {"iris": {"required": True, "entries": [{**entry().as_json(), "salt": "zz"}]}},
                {"iris": {"required": True, "entries": [{**entry().as_json(), "rate": 0}]}},
                {"iris": {"required": True, "entries": [{**entry().as_json(), "expires": "tomorrow"}]}}):
        with pytest.raises(ValueError):
            parse_keys(bad)


def test_a_malformed_keys_field_changes_nothing_in_the_gateway() -> None:
    routing = Routing()
    routing.configure("iris", "/iris", 10, holds=False, hold_limit=0, hold_timeout=0.0, timeout=60.0)
    routing.require_keys("iris", True)
    table = RoutingTable()
    applier = RouteApplier(table)
    applier.apply(routing.message())
    ring = table.by_api["iris"].keys
    bad = {**routing.message(), "generation": routing.generation + 1, "keys": {"iris": {"required": 1}}}
    with pytest.raises(ValueError):
        applier.apply(bad)
    assert table.by_api["iris"].keys is ring and applier.generation == routing.generation


# --- the store and the per-key ledger -----------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "state.db")
    store.open()
    return store


def record(name: str, target: str = "iris") -> KeyRecord:
    return KeyRecord(target, name, secrets.token_hex(8), "00", "11" * 32, created_at=1.0)


def test_key_names_are_unique_per_target_and_go_with_their_api(store: Store) -> None:
    keys = KeyStore(store)
    keys.add(record("ci"))
    keys.add(record("ci", target="other"))
    with pytest.raises(Conflict, match="already has a key named 'ci'") as info:
        keys.add(record("ci"))
    assert info.value.exit_code == 4
    assert keys.revoke("iris", "ci", at=5.0) and keys.revoke("iris", "ci", at=9.0)
    assert keys.of("iris")[0].revoked_at == 5.0  # the first revocation stands
    assert not keys.revoke("iris", "nope", at=5.0)
    store.delete_api("iris")
    assert keys.of("iris") == [] and [r.target for r in keys.of()] == ["other"]


def test_per_key_counts_are_exact_across_gateway_and_daemon_restarts(store: Store) -> None:
    keys = KeyStore(store)
    keys.add(record("ci"))
    ledger = KeyLedger(keys)
    ledger.observe(0, "gw-a", {"iris": {"ci": {"2XX": 5}}})
    ledger.observe(0, "gw-a", {"iris": {"ci": {"2XX": 8, "4XX": 1}}})
    ledger.observe(1, "gw-b", {"iris": {"ci": {"2XX": 2}}})
    ledger.flush()
    again = KeyLedger(keys)
    again.load()
    again.observe(0, "gw-a", {"iris": {"ci": {"2XX": 8, "4XX": 1}}})  # seen before the restart: nothing new
    assert again.totals[("iris", "ci")] == {"2XX": 10, "4XX": 1}
    again.observe(0, "gw-c", {"iris": {"ci": {"5XX": 1}}})  # a new gateway process counts from zero
    assert again.samples() == [("iris", "ci", "2XX", 10), ("iris", "ci", "4XX", 1), ("iris", "ci", "5XX", 1)]
    again.flush()
    assert keys.of("iris")[0].requests == {"2XX": 10, "4XX": 1, "5XX": 1}


def test_a_new_key_under_a_deleted_keys_name_starts_from_zero(store: Store, tmp_path: Path) -> None:
    routing = Routing()
    service = KeyService(store, lambda: ["iris"], routing,
                         GatewayLinks(routing, RequestLedger(store), [], tmp_path / "routes.json"))
    asyncio.run(service.create("iris", "ci", None, None))
    service.ledger.observe(0, "gw-a", {"iris": {"ci": {"2XX": 5}}})
    service.removed("iris")
    store.delete_api("iris")
    service.ledger.observe(0, "gw-a", {"iris": {"ci": {"2XX": 7}}})  # reported after the delete
    created = asyncio.run(service.create("iris", "ci", None, None))
    assert created["requests"] == 0 and service.listing("iris")[0]["requests"] == 0
