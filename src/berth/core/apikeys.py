"""API keys, the pure parts: the key format, its digest, `--expires`/`--rate` parsing, the default name.

A key reads `bk_<id>_<secret>`: the id (hex, no `_`) finds the key's entry in O(1), the secret (urlsafe
base64 of at least 32 random bytes) is what proves it. Only sha256(salt + secret) is ever stored or sent
to a gateway, so neither the store nor a gateway's routing table can give a key away.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from berth.errors import BerthError

PREFIX = "bk_"
ID_PATTERN = re.compile(r"[0-9a-f]{8,32}")
MAX_SECRET = 128
SECRET_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{43,{MAX_SECRET}}}")  # 32 bytes in urlsafe base64: 43 characters
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")

_EXPIRY_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_EXPIRY = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_RATE_UNITS = {"s": 1, "m": 60, "h": 3600}
_RATE = re.compile(r"(\d+(?:\.\d+)?)/([smh])")


class BadKeyOption(BerthError):
    """A `--expires`, `--rate` or `--name` the CLI cannot use (exit 2, like a bad spec)."""

    exit_code = 2


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}_{secret}"


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None. The secret may itself contain `_`."""
    if not text.startswith(PREFIX):
        return None
    key_id, _, secret = text[len(PREFIX):].partition("_")
    if not ID_PATTERN.fullmatch(key_id) or not SECRET_PATTERN.fullmatch(secret):
        return None
    return key_id, secret


def digest(salt: bytes, secret: str | bytes) -> bytes:
    return hashlib.sha256(salt + (secret if isinstance(secret, bytes) else secret.encode())).digest()


def split_key(presented: bytes) -> tuple[bytes, bytes] | None:
    """(id, secret) as the gateway reads them from a header: only what finding the entry needs. The
    digest comparison is the real check, so a wrong character anywhere simply fails it."""
    if presented[:3] != b"bk_":
        return None
    key_id, found, secret = presented[3:].partition(b"_")
    return (key_id, secret) if found and 0 < len(secret) <= MAX_SECRET else None


def verify(salt: bytes, expected: bytes, secret: bytes) -> bool:
    """Constant-time: how long it takes says nothing about how much of the secret was right."""
    return hmac.compare_digest(hashlib.sha256(salt + secret).digest(), expected)


def parse_expires(text: str) -> float:
    """Seconds from `30d`, `12h`, `90m`, `2s`, `1w`."""
    match = _EXPIRY.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise BadKeyOption(f"--expires: expected a positive duration such as 30d, 12h, 90m or 2s (got {text!r})",
                           hint="units: s (seconds), m (minutes), h (hours), d (days), w (weeks)")
    return float(match.group(1)) * _EXPIRY_UNITS[match.group(2)]


def parse_rate(text: str) -> float:
    """Requests per second from `100/s`, `600/m`, `1000/h`."""
    match = _RATE.fullmatch(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise BadKeyOption(f"--rate: expected a positive number of requests per unit such as 100/s, 600/m or "
                           f"1000/h (got {text!r})", hint="units: s (second), m (minute), h (hour)")
    return float(match.group(1)) / _RATE_UNITS[match.group(2)]


def format_rate(per_second: float | None) -> str:
    if per_second is None:
        return "-"
    for unit, seconds in (("s", 1), ("m", 60), ("h", 3600)):
        value = per_second * seconds
        if value >= 1 and abs(value - round(value)) < 1e-9:
            return f"{round(value)}/{unit}"
    return f"{per_second:g}/s"


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise BadKeyOption(f"--name: expected letters, digits, '.', '_' or '-', starting with a letter or digit, "
                           f"at most 63 characters (got {name!r})")
    return name


def default_name(taken: Iterable[str]) -> str:
    """key-1, key-2, ...: the first not taken, counting from the number of keys already there."""
    names = set(taken)
    number = len(names) + 1
    while f"key-{number}" in names:
        number += 1
    return f"key-{number}"
