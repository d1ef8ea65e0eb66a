"""Predictor return values to HTTP responses (the Cortex rules, numpy included)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from berth.runtime.errors import SerialisationError

UNSERIALISABLE = (
    "please return an object that is JSON serializable (including its nested fields), "
    "a bytes object, a string, or a starlette.responses.Response object"
)


def json_default(value: Any) -> Any:
    # numpy arrays and scalars (and torch tensors) all offer tolist(); no numpy import needed.
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def encode(result: Any) -> tuple[bytes, bytes] | Response:
    """(body, content type) for a predictor's return value, or the Response it returned.

    Generators and `EventStream`s never get here: `berth.runtime.streaming` sends them.
    """
    if isinstance(result, Response):
        return result
    if isinstance(result, bytes | bytearray | memoryview):
        return bytes(result), b"application/octet-stream"
    if isinstance(result, str):
        return result.encode("utf-8"), b"text/plain; charset=utf-8"
    try:
        text = json.dumps(result, default=json_default, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise SerialisationError(f"{UNSERIALISABLE}: {exc}") from exc
    return text.encode("utf-8"), b"application/json"
