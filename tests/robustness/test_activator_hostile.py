"""The activator from the hostile side: the real app under uvicorn on a loopback port, kmock as the API server,
a real aiohttp server standing in for the API's Service, raw-socket and httpx clients.

Every test ends with `settled`: nothing held (state and the /metrics gauge), no waker left running, no task
of a request left behind, no connection to the activator left open, every connection to the upstream idle in
the forwarding pool (one the activator gave up on mid-answer is closed), and the process's other descriptors
back where they were before any traffic.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio
import uvicorn
from aiohttp import web
from starlette.applications import Starlette

from berth.activator.app import Activator, create_app
from berth.activator.cluster import LightkubeCluster
from tests.integration.test_activator import (
    CONFIGMAPS,
    DEPLOYMENTS,
    NS,
    code_map,
    deployment,
    kube_client,
    scale_patches,
    set_ready,
)

pytestmark = [pytest.mark.fake_api, pytest.mark.asyncio]

BODY_LIMIT = 1 << 20  # the app's max_body_size here (64 MiB by default), so a test sends little


class Quiet(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test owns the process's signals
        pass


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(condition: Callable[[], object], timeout: float = 5, message: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{message} not met in time"
        await asyncio.sleep(0.01)


def _port(site: web.TCPSite) -> int:
    return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]


@dataclass
class Upstream:
    """The API's Service: /echo answers what it read; /big streams `size` bytes; /stream ticks until the
    client leaves; /reset cuts its answer (declared 100000 bytes) after 100; /hang-head never answers;
    /hang-body sends its head and a first piece, then nothing."""

    url: str = ""
    port: int = 0
    hits: list[str] = field(default_factory=list)
    stream_ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(f"{request.method} {request.path}")
        path = request.path
        if path == "/big":
            size = int(request.query.get("size", "0"))
            response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
            await response.prepare(request)
            piece = b"b" * 65536
            sent = 0
            while sent < size:
                await response.write(piece[: size - sent])
                sent += min(len(piece), size - sent)
            await response.write_eof()
            return response
        if path == "/stream":
            response = web.StreamResponse()
            await response.prepare(request)
            try:
                for _ in range(500):
                    await response.write(b"tick\n")
                    await asyncio.sleep(0.02)
            finally:
                self.stream_ended.set()
            return response
        if path == "/reset":
            response = web.StreamResponse(headers={"content-length": "100000"})
            await response.prepare(request)
            await response.write(b"r" * 100)
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return response
        if path == "/hang-head":
            await asyncio.sleep(30)
        if path == "/hang-body":
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b"first")
            await asyncio.sleep(30)
        body = await request.read()
        return web.json_response({"method": request.method, "size": len(body)}, headers={"x-from": "replica"})


@pytest_asyncio.fixture()
async def upstream() -> AsyncIterator[Upstream]:
    service = Upstream()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", service.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    service.port = _port(site)
    service.url = f"http://127.0.0.1:{service.port}"
    try:
        yield service
    finally:
        await runner.cleanup()


@dataclass
class Running:
    app: Starlette
    activator: Activator
    port: int
    upstream: Upstream
    fake: Any
    baseline_other_fds: int = 0
    baseline_tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    routes: dict[str, str] = field(default_factory=dict)  # api -> base URL, else the upstream's

    def held(self) -> int:
        return sum(self.activator.held().values())

    async def connect(self, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
        return await asyncio.open_connection(sock=sock, limit=1 << 20)

    async def metrics(self) -> dict[str, float]:
        async with httpx.AsyncClient(trust_env=False) as client:
            text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
        return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
                if line.startswith("berth_activator_held_requests{")}

    def _sockets(self) -> list[Any]:
        return psutil.Process().net_connections("inet")

    def _idle_pooled(self) -> int:
        assert self.activator.http is not None
        pool = self.activator.http._transport._pool  # type: ignore[attr-defined]
        return sum(1 for connection in pool.connections if connection.is_idle())

    def _clean(self) -> bool:
        conns = [c for c in self._sockets() if c.status != psutil.CONN_LISTEN]
        to_activator = [c for c in conns if self.port in (c.laddr.port, getattr(c.raddr, "port", None))]
        to_upstream = [c for c in conns if getattr(c.raddr, "port", None) == self.upstream.port]
        at_upstream = [c for c in conns if c.laddr.port == self.upstream.port]
        other_fds = open_fds() - len(self._sockets())
        leftover = [t for t in asyncio.all_tasks() - self.baseline_tasks
                    if not t.done() and t is not asyncio.current_task()
                    and not t.get_coro().__qualname__.startswith("RequestHandler.")]  # type: ignore[union-attr]
        return (not to_activator and len(to_upstream) == len(at_upstream) == self._idle_pooled()
                and other_fds <= self.baseline_other_fds and not leftover)

    async def settled(self) -> None:
        await until(lambda: self.held() == 0, message="nothing held")
        await until(lambda: all(e.waker is None or e.waker.done() for e in self.activator.apis.values()),
                    message="no waker running")
        assert all(v == 0 for v in (await self.metrics()).values())
        await until(self._clean, message="connections, tasks and descriptors back to the baseline")


@asynccontextmanager
async def serve(app: Starlette) -> AsyncIterator[int]:
    server = Quiet(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="on"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, message="the activator listening")
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest_asyncio.fixture()
async def running(kmock: Any, upstream: Upstream) -> AsyncIterator[Running]:
    for resource in (DEPLOYMENTS, CONFIGMAPS):
        kmock.resources[resource] = {}
    cluster = LightkubeCluster(kube_client(str(kmock.url)), NS)
    routes: dict[str, str] = {}
    app = create_app(cluster, lambda api: routes.get(api, upstream.url), poll=0.05, cache=0.2,
                     on_close=cluster.close, max_body_size=BODY_LIMIT)
    async with serve(app) as port:
        run = Running(app, app.state.activator, port, upstream, kmock, routes=routes)
        run.baseline_other_fds = open_fds() - len(run._sockets())
        run.baseline_tasks = set(asyncio.all_tasks())
        yield run


def at_zero(run: Running, *, queue: int = 1024, timeout: float = 10.0, request_timeout: float = 30.0) -> None:
    run.fake.objects[DEPLOYMENTS, NS, "iris"] = deployment(replicas=0)
    spec = code_map(queue=queue, timeout=timeout)
    data = json.loads(spec["data"]["spec.json"])
    data["networking"]["timeout"] = request_timeout
    spec["data"]["spec.json"] = json.dumps(data)
    run.fake.objects[CONFIGMAPS, NS, "iris-code-0123456789"] = spec


def ready(run: Running, *, request_timeout: float = 30.0) -> None:
    at_zero(run, request_timeout=request_timeout)
    run.fake.objects[DEPLOYMENTS, NS, "iris"] = deployment(replicas=1, ready=1)


def post(path: str, body: bytes, api: str = "iris", extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: a\r\nx-berth-api: {api}\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 answer (content-length or chunked)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
    if "content-length" in headers:
        return status, headers, await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)).strip(), 16)
            body += await asyncio.wait_for(reader.readexactly(size + 2), 5)
            if size == 0:
                return status, headers, body[:-2]
            body = body[:-2]
    return status, headers, b""


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(OSError):
        await writer.wait_closed()


# --- held at zero ----------------------------------------------------------------------------------------


async def test_a_client_that_leaves_while_held_frees_its_place_at_once_and_the_api_is_still_woken_once(
        running: Running) -> None:
    at_zero(running, queue=2, timeout=10)
    gone = []
    for _ in range(2):  # fill the queue, then leave
        _, writer = await running.connect()
        writer.write(post("/echo", b"payload"))
        await writer.drain()
        gone.append(writer)
    await until(lambda: running.held() == 2, message="two held")
    for writer in gone:
        await close(writer)
    await until(lambda: running.held() == 0, timeout=2, message="places freed on disconnect")
    await until(lambda: len(scale_patches(running.fake)) == 1, message="one scale patch")

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:  # the queue has room again
        waiting = asyncio.create_task(client.post(f"http://127.0.0.1:{running.port}/echo", content=b"12345",
                                                  headers={"x-berth-api": "iris"}))
        await until(lambda: running.held() == 1, message="the new request held, not turned away")
        set_ready(running.fake, 1)
        answer = await asyncio.wait_for(waiting, 5)
    assert answer.status_code == 200 and answer.json() == {"method": "POST", "size": 5}
    assert running.upstream.hits == ["POST /echo"]  # the two that left were never forwarded
    assert len(scale_patches(running.fake)) == 1
    await running.settled()


async def test_a_held_body_beyond_the_limit_is_413_and_frees_its_place(running: Running) -> None:
    at_zero(running, timeout=10)
    reader, writer = await running.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\ntransfer-encoding: chunked\r\n\r\n")
    await until(lambda: running.held() == 1, message="held")
    piece = b"z" * 65536
    for _ in range(BODY_LIMIT // len(piece) + 1):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    started = asyncio.get_running_loop().time()
    status, headers, _ = await read_answer(reader)
    assert status == 413 and headers["x-berth-reason"] == "body-too-large"
    assert asyncio.get_running_loop().time() - started < 1.5  # once the body ended, not after the linger
    assert running.held() == 0 and running.upstream.hits == []
    await close(writer)
    await running.settled()


async def test_pipelined_requests_while_held_are_answered_in_order(running: Running) -> None:
    at_zero(running, timeout=10)
    reader, writer = await running.connect()
    writer.write(post("/echo", b"one") + post("/echo", b"second") + b"HEAD /echo HTTP/1.1\r\nHost: a\r\n"
                 b"x-berth-api: iris\r\n\r\n")
    await writer.drain()
    await until(lambda: running.held() == 1, message="the first held")
    await asyncio.sleep(0.1)
    assert running.held() == 1  # the next ones wait behind it on the connection, as HTTP/1.1 says
    set_ready(running.fake, 1)
    answers = [await read_answer(reader) for _ in range(2)]
    assert [json.loads(body)["size"] for _, _, body in answers] == [3, 6]
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"content-length:" in head.lower()
    await close(writer)
    assert running.upstream.hits == ["POST /echo", "POST /echo", "HEAD /echo"]
    await running.settled()


# --- forwarding --------------------------------------------------------------------------------------------


async def test_head_is_forwarded_without_a_body_and_the_connection_stays_usable(running: Running) -> None:
    ready(running)
    reader, writer = await running.connect()
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\n\r\n" + post("/echo", b"after"))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200") and b"x-from: replica" in head
    status, _, body = await read_answer(reader)  # no HEAD body in between: this is the POST's answer
    assert status == 200 and json.loads(body) == {"method": "POST", "size": 5}
    await close(writer)
    await running.settled()


async def test_a_client_that_leaves_mid_answer_closes_the_upstream_connection(running: Running) -> None:
    ready(running)
    reader, writer = await running.connect()
    writer.write(b"GET /stream HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\n\r\n")
    await writer.drain()
    await asyncio.wait_for(reader.readuntil(b"tick\n"), 5)
    await close(writer)
    await asyncio.wait_for(running.upstream.stream_ended.wait(), 5)  # the replica saw its client go
    await running.settled()


async def test_a_slow_reader_gets_a_big_streamed_answer_whole(running: Running) -> None:
    ready(running)
    size = 8 << 20
    reader, writer = await running.connect(rcvbuf=4096)
    writer.write(f"GET /big?size={size} HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\n\r\n".encode())
    await writer.drain()
    await asyncio.sleep(0.3)  # not reading: the activator and the replica must wait, not fail
    status, _, body = await read_answer(reader)
    assert status == 200 and len(body) == size and body.count(b"b") == size
    await close(writer)
    await running.settled()


async def test_request_bodies_are_bounded_like_the_local_gateway(running: Running) -> None:
    ready(running)
    reader, writer = await running.connect()
    writer.write(f"POST /echo HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\ncontent-length: {BODY_LIMIT + 1}\r\n\r\n"
                 .encode() + b"a" * (BODY_LIMIT + 1))  # all of it: the answer is read, not a reset
    await writer.drain()
    status, headers, _ = await read_answer(reader)
    assert status == 413 and headers["x-berth-reason"] == "body-too-large" and headers["connection"] == "close"
    await close(writer)

    reader, writer = await running.connect()  # chunked, so no length to refuse up front: cut when it passes
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\ntransfer-encoding: chunked\r\n\r\n")
    piece = b"z" * 65536
    for _ in range(BODY_LIMIT // len(piece) + 1):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    status, headers, _ = await read_answer(reader)
    assert status == 413 and headers["x-berth-reason"] == "body-too-large"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then closed
    await close(writer)

    async with httpx.AsyncClient(trust_env=False) as client:  # at the limit: forwarded
        answer = await client.post(f"http://127.0.0.1:{running.port}/echo", content=b"a" * BODY_LIMIT,
                                   headers={"x-berth-api": "iris"})
    assert answer.status_code == 200 and answer.json()["size"] == BODY_LIMIT
    await running.settled()


@pytest.mark.parametrize("name", ["", "../configmaps/iris-code-0123456789", "IRIS", "iris/scale", "iris%2fscale",
                                  "-iris", "iris.v2", "a" * 64, "x" * 4000, "iris;x", "iris\u00e9"])
async def test_odd_api_header_values_are_unknown_without_asking_the_api_server(running: Running,
                                                                               name: str) -> None:
    at_zero(running)
    before = len(list(running.fake))
    reader, writer = await running.connect()
    writer.write(post("/echo", b"x", api=name))
    await writer.drain()
    status, headers, body = await read_answer(reader)
    await close(writer)
    assert status == 404 and headers["x-berth-reason"] == "unknown-api", body
    assert len(json.loads(body)["error"]) < 200
    assert len(list(running.fake)) == before  # no request to the API server at all
    assert running.activator.apis == {} and scale_patches(running.fake) == []
    await running.settled()


# --- the upstream misbehaves -------------------------------------------------------------------------------


async def test_an_upstream_that_refuses_connections_is_503_replica_unreachable(running: Running) -> None:
    ready(running)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        running.routes["iris"] = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
        async with httpx.AsyncClient(trust_env=False) as client:
            answer = await client.post(f"http://127.0.0.1:{running.port}/echo", content=b"x",
                                       headers={"x-berth-api": "iris"})
    assert answer.status_code == 503 and answer.headers["x-berth-reason"] == "replica-unreachable"
    await running.settled()


async def test_an_answer_cut_mid_body_is_cut_for_the_client_never_ended_as_complete(running: Running) -> None:
    ready(running)
    for path in ("/reset", "/hang-body"):
        if path == "/hang-body":
            ready(running, request_timeout=0.3)
            running.activator.specs.clear()
            await asyncio.sleep(0.25)  # past the readiness cache: the new spec is read
        reader, writer = await running.connect()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\nx-berth-api: iris\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        rest = await asyncio.wait_for(reader.read(), 5)  # until the activator closes the connection
        assert not rest.endswith(b"0\r\n\r\n"), (path, rest[-20:])  # a chunked answer would look complete
        if b"content-length" in head.lower():
            assert len(rest) < 100000
        await close(writer)
    await running.settled()


async def test_an_upstream_that_never_answers_is_504_after_networking_timeout(running: Running) -> None:
    ready(running, request_timeout=0.3)
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"http://127.0.0.1:{running.port}/hang-head", headers={"x-berth-api": "iris"},
                                  timeout=5)
    assert answer.status_code == 504 and answer.headers["x-berth-reason"] == "upstream-timeout"
    assert "0.3s" in answer.json()["error"]
    await running.settled()


# --- the API server down ---------------------------------------------------------------------------------


async def test_the_api_server_down_is_503_and_keeps_nothing(upstream: Upstream) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        cluster = LightkubeCluster(kube_client(f"http://127.0.0.1:{closed.getsockname()[1]}"), NS)
        app = create_app(cluster, lambda api: upstream.url, poll=0.05, cache=0.2, on_close=cluster.close)
        async with serve(app) as port, httpx.AsyncClient(trust_env=False) as client:
            for name in ("iris", "pear", "plum"):
                answer = await client.post(f"http://127.0.0.1:{port}/", content=b"x", headers={"x-berth-api": name})
                assert answer.status_code == 503, answer.text
                assert answer.headers["x-berth-reason"] == "control-plane-unavailable"
            assert app.state.activator.apis == {}  # names from headers are not kept when nothing was read
            assert upstream.hits == []


class Unreachable:
    """An API server that stopped answering."""

    async def deployment(self, name: str) -> dict[str, Any] | None:
        raise httpx.ConnectError("the API server went away")

    async def scale_to_one(self, name: str) -> None:
        raise httpx.ConnectError("the API server went away")

    async def api_spec(self, config_map: str) -> dict[str, Any] | None:
        raise httpx.ConnectError("the API server went away")


async def test_the_api_server_going_away_while_requests_are_held_times_them_out_cleanly(running: Running) -> None:
    at_zero(running, timeout=0.6)
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        calls = [asyncio.create_task(client.post(f"http://127.0.0.1:{running.port}/echo", content=b"x",
                                                 headers={"x-berth-api": "iris"})) for _ in range(3)]
        await until(lambda: running.held() == 3, message="three held")
        running.activator.cluster = Unreachable()  # the waker keeps polling, and fails, until they time out
        answers = await asyncio.wait_for(asyncio.gather(*calls), 5)
    assert {(a.status_code, a.headers["x-berth-reason"]) for a in answers} == {(503, "scale-from-zero-timeout")}
    assert len(scale_patches(running.fake)) <= 1 and running.upstream.hits == []
    await running.settled()
