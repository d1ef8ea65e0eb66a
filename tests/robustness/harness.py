"""A real Gateway in the test's event loop, real replica apps on unix sockets, raw-socket clients.

Every test ends with `settled`: in-flight counts at 0 and the process's descriptors back at the
baseline taken before any traffic, waited for with a deadline.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from berth.config.schema import RealtimeAPI
from berth.gateway.proxy import Gateway, GatewaySettings
from berth.gateway.routes import Route as APIRoute
from berth.gateway.routes import RoutingTable, Target
from berth.runtime.app import ReplicaApp, ReplicaSettings

PREDICTOR = """
import asyncio
from starlette.responses import Response, StreamingResponse

class PythonPredictor:
    def __init__(self, config):
        self.name = config["name"]

    async def predict(self, payload, query_params, headers):
        await asyncio.sleep(float(query_params.get("sleep", 0)))
        kind = query_params.get("kind", "")
        if kind == "204":
            return Response(status_code=204)
        if kind == "big":
            return b"x" * int(query_params.get("size", 1 << 20))
        if kind == "chunked":
            async def pieces():
                for index in range(int(query_params.get("n", 3))):
                    if index:
                        await asyncio.sleep(float(query_params.get("gap", 0)))
                    yield b"piece%d;" % index
            return StreamingResponse(pieces())
        if kind == "headers":
            return {"headers": headers}
        if kind == "hop":
            return Response(b"ok", headers={"Connection": "x-secret", "x-secret": "1", "keep-alive": "timeout=5",
                                            "proxy-authenticate": "Basic", "x-kept": "yes"})
        return {"replica": self.name, "payload": payload}
"""


class Quiet(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test owns the process's signals
        pass


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def until(condition: Callable[[], object], timeout: float = 10, message: str = "condition") -> None:
    """Wait for a condition with a deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{message} not met in time"
        await asyncio.sleep(0.01)


@dataclass
class Stack:
    gateway: Gateway
    host: str
    port: int
    sockets: list[str]
    baseline: int = 0
    route: APIRoute = field(init=False)

    def __post_init__(self) -> None:
        self.route = self.gateway.routes.upsert("t", "/t", 1024)
        self.route.set_targets(Target(s.rsplit("/", 1)[-1], s) for s in self.sockets)

    async def connect(self, rcvbuf: int | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if rcvbuf is None:
            return await asyncio.open_connection(self.host, self.port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        return await asyncio.open_connection(sock=sock, limit=rcvbuf)

    def in_flight(self) -> int:
        return in_flight(self.gateway)

    async def settled(self) -> None:
        await settled(self.gateway, self.baseline)


def in_flight(gateway: Gateway) -> int:
    """The in-flight counts of every route and upstream, summed: 0 once nothing is held."""
    return sum(r.in_flight + sum(u.in_flight for u in r.upstreams) for r in gateway.routes.by_api.values())


async def settled(gateway: Gateway, baseline: int, replica_closed: Callable[[], bool] = lambda: True) -> None:
    """Nothing in flight, no client connection left, the replica's side closed, descriptors back at the
    baseline."""
    await until(lambda: in_flight(gateway) == 0, message="in-flight counts back at 0")
    await until(lambda: not gateway.connections, message="client connections closed")
    for route in gateway.routes.by_api.values():
        for upstream in route.upstreams:
            upstream.close_idle()  # pooled connections are kept on purpose; they are not leaks
    await until(replica_closed, message="replica connections closed")
    await until(lambda: open_fds() <= baseline, message=f"descriptors back at {baseline}")


@asynccontextmanager
async def replicas(tmp_path: Path, count: int) -> AsyncIterator[list[str]]:
    (tmp_path / "predictor.py").write_text(textwrap.dedent(PREDICTOR))
    servers, tasks, sockets = [], [], []
    for index in range(count):
        api = RealtimeAPI.model_validate({"name": "t", "kind": "RealtimeAPI", "predictor": {
            "type": "python", "path": "predictor.py", "config": {"name": f"r{index}"}}})
        app = ReplicaApp(ReplicaSettings(api=api, project=tmp_path))
        sock = str(tmp_path / f"r{index}.sock")
        server = Quiet(uvicorn.Config(app, uds=sock, log_level="warning", lifespan="on"))
        servers.append(server)
        tasks.append(asyncio.create_task(server.serve()))
        sockets.append(sock)
        await until(functools.partial(_ready, server, app), timeout=10)
    try:
        yield sockets
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*tasks)


def _ready(server: uvicorn.Server, app: ReplicaApp) -> bool:
    return bool(server.started and app.ready)


class ObserveStub:
    """Stands in for the daemon's read-only observe app: echoes what it was asked, streams events.

    /_berth/events sends one event at once and the next only when `release` is set, so a client that
    reads the first event while the stream is still open shows the gateway forwards as it comes."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.open_streams = 0
        self.app = Starlette(routes=[Route("/_berth/events", self.events), Route("/_berth/{rest:path}", self.echo,
                                                                                methods=["GET", "HEAD"])])

    async def echo(self, request: Request) -> JSONResponse:
        # Like a replica, the observe app echoes the X-Request-ID the gateway sends it.
        return JSONResponse({"path": request.url.path, "query": request.url.query, "method": request.method},
                            headers={"x-request-id": request.headers.get("x-request-id", "")})

    async def events(self, request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            self.open_streams += 1
            try:
                yield b"data: first\n\n"
                await self.release.wait()
                yield b"data: second\n\n"
            finally:
                self.open_streams -= 1

        return StreamingResponse(stream(), media_type="text/event-stream")


@asynccontextmanager
async def observe_app(socket_path: Path) -> AsyncIterator[ObserveStub]:
    stub = ObserveStub()
    server = Quiet(uvicorn.Config(stub.app, uds=str(socket_path), log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started, message="the observe stub listening")
    try:
        yield stub
    finally:
        stub.release.set()
        server.should_exit = True
        await task


@asynccontextmanager
async def stack(tmp_path: Path, settings: GatewaySettings | None = None, count: int = 1,
                observe_socket: str | None = None) -> AsyncIterator[Stack]:
    async with replicas(tmp_path, count) as sockets:
        gateway = Gateway(RoutingTable(), settings or GatewaySettings(max_body_size=1 << 20),
                          observe_socket=observe_socket)
        await gateway.start("127.0.0.1", 0)
        assert gateway.server is not None
        port = gateway.server.sockets[0].getsockname()[1]
        result = Stack(gateway, "127.0.0.1", port, sockets)
        result.baseline = open_fds()
        try:
            yield result
        finally:
            await gateway.stop()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


async def read_response(reader: asyncio.StreamReader, head: bool = False, timeout: float = 10) -> Response:
    """One response off the wire: framed by length, chunks, or the connection's end."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if head or status in (204, 304) or status < 200:
        return Response(status, headers, b"", raw)
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    elif headers.get("transfer-encoding") == "chunked":
        body = await asyncio.wait_for(_read_chunked(reader), timeout)
    else:
        body = await asyncio.wait_for(reader.read(), timeout)
    return Response(status, headers, body, raw)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def at_eof(reader: asyncio.StreamReader, timeout: float = 5) -> bool:
    return await asyncio.wait_for(reader.read(), timeout) == b""


def post(path: str = "/t", body: bytes = b"1", extra: str = "", version: str = "1.1") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nhost: test\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n").encode() + body


def get(path: str = "/t", extra: str = "", method: str = "GET", version: str = "1.1") -> bytes:
    return f"{method} {path} HTTP/{version}\r\nhost: test\r\n{extra}\r\n".encode()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with suppress(ConnectionError, OSError):
        await writer.wait_closed()
