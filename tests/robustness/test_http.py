"""HTTP/1.1 semantics through the gateway, from raw sockets."""

import asyncio
import json
from pathlib import Path

import pytest

from berth.gateway.proxy import GatewaySettings

from .harness import at_eof, close, get, post, read_response, stack, until

pytestmark = pytest.mark.anyio


async def test_head_through_to_a_replica_does_not_hang_or_leak(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        s.route.max_replica_concurrency = 2
        reader, writer = await s.connect()
        for _ in range(3):  # beyond max_replica_concurrency: a leaked slot would turn into 503s
            writer.write(get(method="HEAD"))
            response = await read_response(reader, head=True)
            assert response.status == 200 and int(response.headers["content-length"]) > 0
        writer.write(get(method="HEAD") + post(body=b"7"))  # pipelined: HEAD then POST
        assert (await read_response(reader, head=True)).status == 200
        second = await read_response(reader)
        assert json.loads(second.body)["payload"] == 7
        await close(writer)
        await s.settled()


async def test_204_from_a_predictor_ends_the_exchange(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?kind=204") + post(body=b"2"))
        assert (await read_response(reader)).status == 204
        assert json.loads((await read_response(reader)).body)["payload"] == 2
        await close(writer)
        await s.settled()


async def test_http10_gets_no_chunked_encoding(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?kind=chunked&n=4", version="1.0"))
        response = await read_response(reader)
        assert "transfer-encoding" not in response.headers
        assert response.body == b"piece0;piece1;piece2;piece3;"
        await close(writer)

        reader, writer = await s.connect()  # 1.0 keep-alive with a length: stays open
        writer.write(post(version="1.0", extra="Connection: keep-alive\r\n"))
        response = await read_response(reader)
        assert response.headers["connection"] == "keep-alive"
        writer.write(post(body=b"5", version="1.0"))  # no keep-alive this time: closed after
        assert json.loads((await read_response(reader)).body)["payload"] == 5
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_http11_chunked_responses_keep_their_framing(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?kind=chunked&n=3") + post(body=b"9"))
        response = await read_response(reader)
        assert response.headers["transfer-encoding"] == "chunked" and response.body == b"piece0;piece1;piece2;"
        assert json.loads((await read_response(reader)).body)["payload"] == 9
        await close(writer)
        await s.settled()


async def test_absolute_form_targets_are_routed_by_their_path(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("http://example.com:8080/t?kind=headers"))
        response = await read_response(reader)
        assert response.status == 200
        assert json.loads(response.body)["headers"]["host"] == "example.com:8080"
        await close(writer)
        await s.settled()


async def test_hop_by_hop_headers_are_dropped_both_ways(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?kind=headers", extra="Connection: keep-alive, x-private\r\nx-private: 1\r\n"
                          "Keep-Alive: timeout=9\r\nProxy-Authorization: Basic eA==\r\nTE: trailers\r\n"
                          "x-public: 2\r\n"))
        seen = json.loads((await read_response(reader)).body)["headers"]
        assert seen["x-public"] == "2"
        for name in ("x-private", "keep-alive", "proxy-authorization", "te", "connection"):
            assert name not in seen, name
        writer.write(post("/t?kind=hop"))
        response = await read_response(reader)
        assert response.body == b"ok" and response.headers["x-kept"] == "yes"
        for name in ("x-secret", "keep-alive", "proxy-authenticate", "connection"):
            assert name not in response.headers, name
        await close(writer)
        await s.settled()


@pytest.mark.parametrize("trusted", [False, True])
async def test_x_forwarded_headers_carry_the_real_client(tmp_path: Path, trusted: bool) -> None:
    settings = GatewaySettings(trusted_proxies=("127.0.0.0/8",) if trusted else ())
    async with stack(tmp_path, settings) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?kind=headers", extra="X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\n"))
        seen = json.loads((await read_response(reader)).body)["headers"]
        assert seen["host"] == "test"  # the original Host reaches the replica
        assert seen["x-forwarded-proto"] == "http"
        if trusted:
            assert (seen["x-forwarded-for"], seen["x-forwarded-host"]) == ("6.6.6.6, 127.0.0.1", "evil")
        else:
            assert (seen["x-forwarded-for"], seen["x-forwarded-host"]) == ("127.0.0.1", "test")
        await close(writer)
        await s.settled()


async def test_request_trailers_never_override_headers(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(b"POST /t HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\nx-request-id: mine\r\n"
                     b"transfer-encoding: chunked\r\ntrailer: x-request-id\r\n\r\n"
                     b"1\r\n3\r\n0\r\nx-request-id: evil\r\n\r\n")
        response = await read_response(reader)
        assert response.headers["x-request-id"] == "mine" and json.loads(response.body)["payload"] == 3
        await close(writer)
        await s.settled()


async def test_expectations_other_than_100_continue_are_a_417(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post(extra="Expect: the-impossible\r\n"))
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (417, "expectation-failed")
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_gateway_answers_to_head_have_no_body(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(get("/nope", method="HEAD") + get("/_berth/healthz", method="HEAD") + get("/_berth/healthz"))
        missing = await read_response(reader, head=True)
        assert missing.status == 404 and int(missing.headers["content-length"]) > 0
        admin = await read_response(reader, head=True)
        assert admin.status == 200 and admin.headers["content-length"] == "2"
        assert (await read_response(reader)).body == b"ok"  # framing intact after the bodiless ones
        await close(writer)
        await s.settled()


async def test_100_continue_is_never_injected_into_another_response(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?kind=chunked&n=50&sleep=0.2") +
                     post(body=b"", extra="Expect: 100-continue\r\n").replace(b"content-length: 0", b"content-length: 2"))
        first = await read_response(reader)  # the chunked response arrives whole, no 100 inside it
        assert first.status == 200 and b"Continue" not in first.body
        assert (await read_response(reader)).status == 100
        writer.write(b"42")
        assert json.loads((await read_response(reader)).body)["payload"] == 42
        await close(writer)
        await s.settled()


async def test_a_413_never_overtakes_the_response_before_it(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(max_body_size=1000)) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?sleep=0.2", body=b"1") + post(body=b"2" * 2000))
        first = await read_response(reader)
        assert first.status == 200 and json.loads(first.body)["payload"] == 1
        second = await read_response(reader)
        assert (second.status, second.headers["x-berth-reason"]) == (413, "body-too-large")
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_half_closed_clients_still_get_their_answers(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post("/t?sleep=0.1", body=b"1") + post(body=b"2"))
        writer.write_eof()
        assert json.loads((await read_response(reader)).body)["payload"] == 1
        assert json.loads((await read_response(reader)).body)["payload"] == 2
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_many_pipelined_requests_answered_by_the_gateway_never_stall(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(get("/nope") * 200 + get("/_berth/healthz") * 50 + post(body=b"8"))
        statuses = [(await read_response(reader)).status for _ in range(250)]
        assert statuses == [404] * 200 + [200] * 50
        assert json.loads((await read_response(reader)).body)["payload"] == 8
        await close(writer)
        await s.settled()


async def test_pipelined_bodies_are_buffered_one_ahead_at_most(tmp_path: Path) -> None:
    async with stack(tmp_path, GatewaySettings(max_body_size=4 << 20)) as s:
        reader, writer = await s.connect()
        body = b'"' + b"y" * (1 << 20) + b'"'
        sender = asyncio.create_task(_send_all(writer, post("/t?sleep=0.3") + post(body=body) * 6))
        # Wait until the gateway stops reading (the first request is still running), then check the bound.
        await until(lambda: any(c.flow is not None and c.flow.read_paused for c in s.gateway.connections),
                    message="reading paused")
        (connection,) = s.gateway.connections
        assert len(connection.pending) <= 1 and connection.flow is not None and connection.flow.read_paused
        for _ in range(7):
            assert (await read_response(reader)).status == 200
        await sender
        await close(writer)
        await s.settled()


async def _send_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def test_a_target_that_is_neither_a_path_nor_an_http_url_is_a_400(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(get("ftp://example.com/t"))
        response = await read_response(reader)
        assert (response.status, response.headers["x-berth-reason"]) == (400, "bad-request")
        assert await at_eof(reader)
        await close(writer)
        await s.settled()


async def test_connection_close_ends_the_connection_after_its_response(tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        reader, writer = await s.connect()
        writer.write(post(body=b"1", extra="Connection: close\r\n") + post(body=b"2"))
        response = await read_response(reader)
        assert response.headers["connection"] == "close" and json.loads(response.body)["payload"] == 1
        assert await at_eof(reader)  # the request pipelined after it is not answered
        await close(writer)
        await s.settled()
