"""Request bodies to predictor payloads, by Content-Type (the Cortex rules)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Scope

from berth.runtime.errors import PayloadError


def media_type(content_type: str) -> tuple[str, str]:
    """(`type/subtype`, charset) of a Content-Type header."""
    main, _, params = content_type.partition(";")
    charset = "utf-8"
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"')
    return main.strip().lower(), charset


async def parse_payload(content_type: str, body: bytes, scope: Scope) -> Any:
    kind, charset = media_type(content_type)
    if kind == "application/json" or kind.endswith("+json"):
        if not body:
            raise PayloadError("the request body is empty; expected JSON")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise PayloadError(f"the request body is not valid JSON: {exc}") from exc
    if kind == "text/plain":
        try:
            return body.decode(charset)
        except (LookupError, UnicodeDecodeError) as exc:
            raise PayloadError(f"the request body is not valid {charset} text: {exc}") from exc
    if kind.startswith("multipart/form") or kind == "application/x-www-form-urlencoded":
        return await _form(content_type, body, scope)
    return body


async def _form(content_type: str, body: bytes, scope: Scope) -> Any:
    headers = [(k, v) for k, v in scope.get("headers", []) if k != b"content-type"]
    scope = {**scope, "headers": [*headers, (b"content-type", content_type.encode("latin-1"))]}
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        return await Request(scope, receive).form()
    except Exception as exc:  # starlette raises several kinds for malformed forms
        raise PayloadError(f"the request body is not valid form data: {exc}") from exc
