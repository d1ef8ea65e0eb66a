import json

import numpy as np
import pytest
from starlette.responses import PlainTextResponse

from berth.runtime.errors import PayloadError, SerialisationError
from berth.runtime.payload import media_type, parse_payload
from berth.runtime.response import encode

SCOPE = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"a": [1, 2]}', {"a": [1, 2]}),
        ("application/json; charset=utf-8", b"3", 3),
        ("application/vnd.api+json", b'"x"', "x"),
        ("text/plain", "héllo".encode(), "héllo"),
        ("text/plain; charset=latin-1", "héllo".encode("latin-1"), "héllo"),
        ("application/octet-stream", b"\x00\x01", b"\x00\x01"),
        ("", b"raw", b"raw"),
        ("image/png", b"\x89PNG", b"\x89PNG"),
    ],
)
@pytest.mark.anyio
async def test_payload_by_content_type(content_type: str, body: bytes, expected: object) -> None:
    assert await parse_payload(content_type, body, SCOPE) == expected


@pytest.mark.anyio
async def test_form_payload() -> None:
    form = await parse_payload("application/x-www-form-urlencoded", b"a=1&b=two", SCOPE)
    assert (form["a"], form["b"]) == ("1", "two")


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [("application/json", b"{bad", "not valid JSON"), ("application/json", b"", "empty"),
     ("text/plain", b"\xff\xfe\xfa", "not valid utf-8"), ("text/plain; charset=nope", b"x", "not valid nope")],
)
@pytest.mark.anyio
async def test_bad_payloads(content_type: str, body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        await parse_payload(content_type, body, SCOPE)


def test_media_type() -> None:
    assert media_type("Text/Plain; Charset=\"ISO-8859-1\"") == ("text/plain", "ISO-8859-1")


@pytest.mark.parametrize(
    ("value", "body", "content_type"),
    [
        (b"\x00", b"\x00", b"application/octet-stream"),
        ("text", b"text", b"text/plain; charset=utf-8"),
        ({"a": 1}, b'{"a":1}', b"application/json"),
        (np.arange(3), b"[0,1,2]", b"application/json"),
        ({"p": np.float32(0.5), "n": np.int64(7)}, b'{"p":0.5,"n":7}', b"application/json"),
        ([np.array([[1.5]])], b"[[[1.5]]]", b"application/json"),
        (None, b"null", b"application/json"),
    ],
)
def test_encode(value: object, body: bytes, content_type: bytes) -> None:
    assert encode(value) == (body, content_type)


def test_encode_passes_responses_through() -> None:
    response = PlainTextResponse("x", status_code=201)
    assert encode(response) is response


@pytest.mark.parametrize("value", [object(), {"a": {1, 2}.__iter__()}, float("nan")])
def test_unserialisable_values(value: object) -> None:
    with pytest.raises(SerialisationError, match="JSON serializable"):
        encode(value)


def test_encoded_json_is_valid() -> None:
    body, _ = encode({"nested": [np.float64(1.25), (1, 2)]})  # type: ignore[misc]
    assert json.loads(body) == {"nested": [1.25, [1, 2]]}
