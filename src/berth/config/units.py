"""Durations (`10ms`, `10s`, `5m`) and Kubernetes-style quantities (`500m`, `2`, `1Gi`)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|k|K|M|G|T|Ki|Mi|Gi|Ti)?\s*$")
_QUANTITY_UNITS = {
    None: 1,
    "m": 0.001,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_duration(value: object) -> float:
    """Seconds from `10ms`/`10s`/`5m`/`1h`; a bare number is taken as seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 10s or 5m (got {value!r})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"expected a duration such as 10ms, 10s or 5m (got {value!r})")


def _number(value: float) -> str:
    # Never scientific notation: "1e+06s" would not parse back.
    return f"{value:.3f}".rstrip("0").rstrip(".")


def format_duration(seconds: float) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{_number(seconds * 1000)}ms"
    if seconds % 3600 == 0:
        return f"{_number(seconds / 3600)}h"
    if seconds % 60 == 0:
        return f"{_number(seconds / 60)}m"
    return f"{_number(seconds)}s"


def parse_quantity(value: object) -> float:
    """A Kubernetes quantity as a plain number: `200m` -> 0.2, `1Gi` -> 1073741824."""
    if isinstance(value, bool):
        raise ValueError(f"expected a quantity such as 500m, 2 or 1Gi (got {value!r})")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"must not be negative (got {value})")
        return float(value)
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if match:
            return float(match.group(1)) * _QUANTITY_UNITS[match.group(2)]
    raise ValueError(f"expected a quantity such as 500m, 2 or 1Gi (got {value!r})")


def format_bytes(n: float) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size:
            return f"{n / size:.4g}{unit}"
    return f"{n:g}"
