"""Every response carries X-Request-ID and every error body is JSON with `error` and `request_id`:
the replica's routes in-process, the gateway's own answers and what it proxies."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from tests.integration.test_gateway import gateway, route
from tests.integration.test_runtime_app import DECLARED, make_app, wait_ready
from tests.robustness.harness import replicas

TOO_LONG = "x" * 201


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path, DECLARED)) as client:
        wait_ready(client)
        yield client


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v2"),
    ("GET", "/v2/health/ready"), ("GET", "/v2/models/test"), ("GET", "/v2/models/test/ready"),
    ("POST", "/v2/models/test/infer"),
])
def test_every_replica_response_echoes_the_request_id(replica: TestClient, method: str, path: str) -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]} if method == "POST" else None
    response = replica.request(method, path, json=body, headers={"x-request-id": "client-7"})
    assert response.status_code < 400, response.text
    assert response.headers["x-request-id"] == "client-7"
    generated = replica.request(method, path, json=body).headers["x-request-id"]
    assert generated and generated != "client-7"


@pytest.mark.parametrize(("method", "path", "body", "status", "words"), [
    ("GET", "/nope", None, 404, "has no route /nope"),
    ("DELETE", "/", None, 405, "DELETE is not allowed on /"),
    ("PUT", "/v2/models/test/infer", None, 405, "PUT is not allowed"),
    ("GET", "/v2/models/other", None, 404, "no model named 'other'"),
    ("POST", "/v2/models/test/infer", {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", 1]}]},
     400, "input 'x'"),
    ("POST", "/v2/models/test/infer", {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]},
     400, "input 'x'"),
    ("POST", "/v2/models/test/infer", [1, 2], 400, "JSON object"),
])
def test_every_replica_error_is_json_with_the_request_id(replica: TestClient, method: str, path: str,
                                                         body: object, status: int, words: str) -> None:
    response = replica.request(method, path, json=body, headers={"x-request-id": "err-1"})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"] == "err-1"
    error = response.json()
    assert error["request_id"] == "err-1" and words in error["error"], error
    if status == 405:
        assert response.headers["allow"]


def test_a_predictor_crash_on_the_inference_protocol_is_a_json_500(tmp_path: Path) -> None:
    source = DECLARED.replace('return {"sum": payload["x"].sum(axis=1)}', 'raise RuntimeError("secret detail")')
    with TestClient(make_app(tmp_path, source)) as client:
        wait_ready(client)
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}
        response = client.post("/v2/models/test/infer", json=body, headers={"x-request-id": "boom"})
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error", "request_id": "boom"}


@pytest.mark.parametrize("given", ["has space", TOO_LONG, "tab\there", "naïve"])
def test_an_unusable_client_request_id_is_replaced(replica: TestClient, given: str) -> None:
    for method, path in (("POST", "/"), ("GET", "/healthz")):
        response = replica.request(method, path, content=b"{}",
                                   headers={"x-request-id": given.encode("utf-8")})
        echoed = response.headers["x-request-id"]
        assert echoed and echoed != given and len(echoed) <= 200 and echoed.isprintable()


def test_readyz_while_initialising_is_a_json_error(tmp_path: Path) -> None:
    source = """
    import threading
    GATE = threading.Event()
    class PythonPredictor:
        def __init__(self, config):
            GATE.wait(10)
        def predict(self, payload):
            return 1
    """
    with TestClient(make_app(tmp_path, source, threads_per_process=2)) as client:
        try:
            for path in ("/readyz", "/v2/health/ready"):
                response = client.get(path, headers={"x-request-id": "early"})
                assert response.status_code == 503
                assert response.json()["request_id"] == "early" and "initialising" in response.json()["error"]
        finally:
            import sys

            sys.modules["berth_predictor"].GATE.set()
        wait_ready(client)


# --- the gateway ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_gateways_own_answers_carry_the_request_id(tmp_path: Path) -> None:
    async with gateway() as (gw, url), httpx.AsyncClient() as client:
        gw.routes.upsert("t", "/t", 10)
        for path in ("/_berth/healthz", "/nope", "/_berth/nope", "/t"):
            response = await client.get(url + path, headers={"x-request-id": "gw-1"})
            assert response.headers["x-request-id"] == "gw-1", path
            if response.status_code >= 400:
                assert response.json()["request_id"] == "gw-1", path
                assert response.headers["content-type"] == "application/json"
            generated = (await client.get(url + path)).headers["x-request-id"]
            assert generated and generated != "gw-1"
        unknown = await client.get(f"{url}/_berth/nope")
        # Everything under /_berth/ but the health check is the daemon's: this gateway has none to ask.
        assert (unknown.status_code, unknown.headers["x-berth-reason"]) == (503, "control-plane-unavailable")
        assert (await client.get(f"{url}/_berth/metrics")).headers["x-request-id"]


@pytest.mark.anyio
async def test_the_gateway_replaces_an_unusable_request_id(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        for given in ("has space", TOO_LONG):
            for path in ("/t", "/nope"):
                response = await client.post(url + path, json=1, headers={"x-request-id": given})
                echoed = response.headers["x-request-id"]
                assert echoed != given and len(echoed) <= 200, path


@pytest.mark.anyio
async def test_proxied_routes_carry_the_request_id_and_json_errors(tmp_path: Path) -> None:
    async with replicas(tmp_path, 1) as sockets, gateway() as (gw, url), httpx.AsyncClient() as client:
        route(gw, sockets)
        for method, path, status in (("GET", "/t", 200), ("GET", "/t/v2", 200), ("GET", "/t/v2/health/ready", 200),
                                     ("GET", "/t/healthz", 200), ("GET", "/t/metrics", 200),
                                     ("GET", "/t/missing", 404), ("DELETE", "/t", 405),
                                     ("GET", "/t/v2/models/t", 404)):
            response = await client.request(method, url + path, headers={"x-request-id": "via-gw"})
            assert response.status_code == status, (path, response.text)
            assert response.headers["x-request-id"] == "via-gw", path
            if status >= 400:
                assert response.json()["request_id"] == "via-gw", path
            generated = await client.request(method, url + path)
            assert generated.headers["x-request-id"] not in ("", "via-gw"), path
            if status >= 400:  # the id the replica got from the gateway is the one the client sees
                assert generated.json()["request_id"] == generated.headers["x-request-id"], path
