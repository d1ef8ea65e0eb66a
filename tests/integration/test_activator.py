"""The activator's ASGI app in-process, against kmock (the Deployment, its scale subresource, the code ConfigMap)
and a real local HTTP server standing in for the API's Service (its base URL is passed in, so no cluster DNS).

kmock is not faithful, and these tests lean on that where they say so:
* it runs no controllers: a Deployment's status (readyReplicas) is seeded by the test, as a scripted state;
* a PATCH of `deployments/<name>/scale` is merged into the Deployment object itself, so `spec.replicas`
  reads back as the patch set it (a real API server does the same through the scale subresource).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from lightkube import AsyncClient, KubeConfig
from starlette.applications import Starlette

from berth.activator.app import create_app
from berth.activator.cluster import LightkubeCluster

pytestmark = [pytest.mark.fake_api, pytest.mark.asyncio]

NS = "ml"
DEPLOYMENTS = "apps/v1/deployments"
CONFIGMAPS = "v1/configmaps"
LABELS = {"app.kubernetes.io/managed-by": "berth", "app.kubernetes.io/name": "iris", "berth.dev/api": "iris"}


def deployment(api: str = "iris", *, replicas: int = 0, ready: int = 0, labels: dict[str, str] | None = None,
               code: str = "iris-code-0123456789") -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": api, "namespace": NS, "labels": dict(LABELS if labels is None else labels)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"berth.dev/api": api}},
                     "template": {"metadata": {"labels": dict(LABELS)}, "spec": {
                         "containers": [], "volumes": [{"name": "code", "configMap": {"name": code}}]}}},
            "status": {"replicas": ready, "readyReplicas": ready} if ready else {}}


def code_map(queue: int = 1024, timeout: float = 120.0, name: str = "iris-code-0123456789") -> dict[str, Any]:
    spec = {"name": "iris", "autoscaling": {"min_replicas": 0, "scale_from_zero_queue": queue,
                                            "scale_from_zero_timeout": timeout},
            "networking": {"timeout": 30.0}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS, "labels": LABELS},
            "data": {"spec.json": json.dumps(spec)}}


@pytest.fixture()
def fake(kmock: Any) -> Any:
    for resource in (DEPLOYMENTS, CONFIGMAPS):
        kmock.resources[resource] = {}
    return kmock


@pytest_asyncio.fixture()
async def upstream() -> AsyncIterator[str]:
    """The API's Service: answers what it received (method, path, query, body, a few headers)."""
    async def answer(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({
            "method": request.method, "path": request.path, "query": request.query_string, "body": body.decode(),
            "request_id": request.headers.get("x-request-id"), "api_header": request.headers.get("x-berth-api"),
            "connection_listed": request.headers.get("x-hop")}, headers={"x-from": "replica"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def kube_client(url: str) -> AsyncClient:
    config = KubeConfig.from_dict({
        "clusters": [{"name": "fake", "cluster": {"server": url}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "nobody", "namespace": NS}}],
        "users": [{"name": "nobody", "user": {}}], "current-context": "fake"})
    return AsyncClient(config, namespace=NS)


@pytest_asyncio.fixture()
async def activator(fake: Any, upstream: str) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    cluster = LightkubeCluster(kube_client(str(fake.url)), NS)
    app = create_app(cluster, lambda api: upstream, poll=0.05, cache=0.2, on_close=cluster.close)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://activator") as client:
            yield app, client


def scale_patches(fake: Any) -> list[Any]:
    return [r for r in fake if r.method == "PATCH" and str(r.url.path).endswith("/deployments/iris/scale")]


def stored(fake: Any, name: str) -> dict[str, Any]:
    for (res, namespace, found), value in fake.objects.items():
        if res.plural == "deployments" and (namespace, found) == (NS, name) and not value.deleted:
            return dict(value.raw)
    raise AssertionError(f"no Deployment {name}")


def set_ready(fake: Any, ready: int) -> None:
    current = stored(fake, "iris")
    current["status"] = {"replicas": ready, "readyReplicas": ready}
    fake.objects[DEPLOYMENTS, NS, "iris"] = current


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_fake_api_at_zero_five_requests_make_one_scale_patch_and_are_held_until_ready(
        fake: Any, activator: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = activator
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment(replicas=0)
    fake.objects[CONFIGMAPS, NS, "iris-code-0123456789"] = code_map()
    calls = [asyncio.create_task(client.post("/", content=f"sample {i}", headers={
        "x-berth-api": "iris", "x-request-id": f"req-{i}"})) for i in range(5)]
    state = app.state.activator.apis
    await until(lambda: "iris" in state and state["iris"].state.holding == 5)
    await until(lambda: stored(fake, "iris")["spec"]["replicas"] == 1)
    await asyncio.sleep(0.3)  # several polls at spec.replicas 1, not ready: no second patch, nothing answered
    assert not any(call.done() for call in calls)
    assert len(scale_patches(fake)) == 1
    assert json.loads(scale_patches(fake)[0].body) == {"spec": {"replicas": 1}}

    set_ready(fake, 1)  # the pod became ready (kmock runs no controllers: the test says so)
    answers = await asyncio.wait_for(asyncio.gather(*calls), timeout=5)
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-from"] == "replica"
        echoed = answer.json()
        assert (echoed["method"], echoed["path"], echoed["body"]) == ("POST", "/", f"sample {i}")
        assert echoed["request_id"] == f"req-{i}" and echoed["api_header"] is None
    assert len(scale_patches(fake)) == 1
    assert state["iris"].state.holding == 0 and state["iris"].state.waking_since is None


async def test_fake_api_a_ready_api_is_forwarded_at_once_without_any_patch(
        fake: Any, activator: tuple[Starlette, httpx.AsyncClient]) -> None:
    _, client = activator
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment(replicas=2, ready=2)
    fake.objects[CONFIGMAPS, NS, "iris-code-0123456789"] = code_map()
    answer = await client.get("/healthz?x=1", headers={"x-berth-api": "iris", "connection": "x-hop",
                                                        "x-hop": "dropped"})
    assert answer.status_code == 200
    echoed = answer.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == ("GET", "/healthz", "x=1")  # the API's own
    assert echoed["connection_listed"] is None  # named by Connection: hop-by-hop, not forwarded
    assert echoed["request_id"] and echoed["request_id"] == answer.headers.get("x-request-id", echoed["request_id"])
    assert scale_patches(fake) == []


async def test_fake_api_the_queue_bound_turns_requests_away_with_the_local_gateways_word(
        fake: Any, activator: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = activator
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment(replicas=0)
    fake.objects[CONFIGMAPS, NS, "iris-code-0123456789"] = code_map(queue=2, timeout=5)
    held = [asyncio.create_task(client.post("/", content=b"x", headers={"x-berth-api": "iris"})) for _ in range(2)]
    await until(lambda: "iris" in app.state.activator.apis and app.state.activator.apis["iris"].state.holding == 2)
    turned = await client.post("/", content=b"x", headers={"x-berth-api": "iris", "x-request-id": "third"})
    assert turned.status_code == 503
    assert turned.headers["x-berth-reason"] == "scale-from-zero-queue-full"
    assert turned.json() == {"error": turned.json()["error"], "request_id": "third"}
    assert "scale_from_zero_queue" in turned.json()["error"]
    set_ready(fake, 1)
    assert [a.status_code for a in await asyncio.wait_for(asyncio.gather(*held), timeout=5)] == [200, 200]


async def test_fake_api_a_request_held_past_the_timeout_gets_the_local_gateways_answer(
        fake: Any, activator: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = activator
    fake.objects[DEPLOYMENTS, NS, "iris"] = deployment(replicas=0)
    fake.objects[CONFIGMAPS, NS, "iris-code-0123456789"] = code_map(timeout=0.5)
    answer = await asyncio.wait_for(client.post("/", content=b"x", headers={"x-berth-api": "iris"}), timeout=5)
    assert answer.status_code == 503
    assert answer.headers["x-berth-reason"] == "scale-from-zero-timeout"
    assert "0.5s" in answer.json()["error"] and answer.json()["request_id"] == answer.headers["x-request-id"]
    assert len(scale_patches(fake)) == 1  # it did try to wake the API
    assert app.state.activator.apis["iris"].state.holding == 0


async def test_fake_api_unknown_apis_are_404_and_nothing_is_scaled(
        fake: Any, activator: tuple[Starlette, httpx.AsyncClient]) -> None:
    _, client = activator
    fake.objects[DEPLOYMENTS, NS, "other"] = deployment("other", replicas=0, labels={"app": "not-berth"})
    for api in ("missing", "other"):
        answer = await client.post("/", content=b"x", headers={"x-berth-api": api})
        assert answer.status_code == 404, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-berth-reason"] == "unknown-api" and api in answer.json()["error"]
    assert [r for r in fake if r.method == "PATCH"] == []


async def test_own_probes_answer_without_the_api_header_and_anything_else_is_400(
        fake: Any, activator: tuple[Starlette, httpx.AsyncClient]) -> None:
    _, client = activator
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    metrics = await client.get("/metrics")
    assert "berth_activator_held_requests" in metrics.text
    stray = await client.post("/predict", content=b"x")
    assert stray.status_code == 400 and stray.headers["x-berth-reason"] == "no-api-header"
