"""The activator's ASGI app: forward, or hold and wake, requests for APIs that scale to zero.

Requests arrive from the Gateway with `x-berth-api: <api>` (the HTTPRoute's RequestHeaderModifier) and the
endpoint already rewritten to `/`. Requests without that header are the activator's own: `/healthz`,
`/readyz` and `/metrics` (`berth_activator_held_requests{api_name=...}`). Every request with the header is the
API's, whatever its path (an API's own `/healthz` included).

A request body is bounded like the local gateway's (`max_body_size`, 64 MiB): 413 `body-too-large` beyond.
While a request is held its body is read (so at most `scale_from_zero_queue` bodies of at most that size are
in memory per API) and its connection watched: a client that leaves frees its place at once. A forwarded
body is streamed, not buffered. An answer the replica cuts short mid-body is cut short to the client too
(its connection is closed, never ended as if complete).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive

from berth.activator import state as s
from berth.activator.cluster import ClusterReader

log = logging.getLogger("berth.activator")

# RFC 9110 §7.6.1, as the local gateway drops them (berth.gateway.http), plus what the activator rewrites.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                        "proxy-connection", "proxy-authorization", "proxy-authenticate"})
REQUEST_DROPPED = HOP_BY_HOP | {"host", "x-request-id", s.API_HEADER}
VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")
CONNECT_TIMEOUT = 5.0
# After a 413 the rest of the body is read and dropped for up to this long (the local gateway's linger_timeout),
# so that the client reads the answer instead of a reset.
LINGER_SECONDS = 2.0
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def service_url(namespace: str) -> Callable[[str], str]:
    """Where an API's pods are reached in the cluster: its Service (port 80 to the pods' 8080)."""
    return lambda api: f"http://{api}.{namespace}.svc.cluster.local:80"


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    pass


class Body:
    """A request's body read from the ASGI `receive` once: buffered while the request is held (and then its
    connection watched for a disconnect), streamed when forwarded; bounded by `limit` bytes either way."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.complete = False

    async def _next(self) -> bytes:
        message: Message = await self.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = bytes(message.get("body", b""))
        self.size += len(chunk)
        self.complete = not message.get("more_body", False)
        if self.size > self.limit:
            raise BodyTooLarge()
        return chunk

    async def watch(self) -> None:
        """Read the whole body into memory, then wait for the client to leave (raises ClientGone or
        BodyTooLarge; cancelled once the request is forwarded or answered)."""
        while not self.complete:
            chunk = await self._next()
            if chunk:
                self.chunks.append(chunk)
        while True:  # after the body, uvicorn's receive returns only on a disconnect
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()

    async def drop_rest(self, seconds: float) -> None:
        """Read and drop what the client still sends, for at most `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self.complete:
                    message = await self.receive()
                    if message["type"] == "http.disconnect":
                        return
                    self.complete = not message.get("more_body", False)

    async def stream(self) -> AsyncIterator[bytes]:
        while self.chunks:
            yield self.chunks.pop(0)
        while not self.complete:
            chunk = await self._next()
            if chunk:
                yield chunk


@dataclass
class _API:
    state: s.APIState = field(default_factory=s.APIState)
    seen: s.Observation | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    waker: asyncio.Task[None] | None = None


class Activator:
    """Per-API state, the readiness cache, the wakers, and the forwarding client."""

    def __init__(self, cluster: ClusterReader, upstream: Callable[[str], str], *,
                 poll: float = s.POLL_SECONDS, cache: float = s.CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, max_body_size: int = s.MAX_BODY_SIZE) -> None:
        self.cluster = cluster
        self.upstream = upstream
        self.poll = poll
        self.cache = cache
        self.clock = clock
        self.max_body_size = max_body_size
        self.apis: dict[str, _API] = {}
        self.specs: dict[str, s.Limits] = {}  # by code ConfigMap name: those are immutable
        self.http: httpx.AsyncClient | None = None

    # --- the cluster, cached ----------------------------------------------------------------------------
    async def observe(self, api: str, *, refresh: bool = False) -> s.Observation:
        entry = self.apis.get(api)
        now = self.clock()
        if not refresh and entry is not None and entry.seen is not None and s.fresh(entry.seen, now, self.cache):
            return entry.seen
        found = await self.cluster.deployment(api)  # raises before an entry exists: names are not kept
        entry = self.apis.setdefault(api, _API())
        entry.seen = s.observation_of(found, api, self.clock())
        return entry.seen

    async def limits(self, observation: s.Observation) -> s.Limits:
        if observation.code is None:
            return s.Limits()
        if observation.code not in self.specs:
            self.specs[observation.code] = s.Limits.from_spec(await self.cluster.api_spec(observation.code))
        return self.specs[observation.code]

    # --- waking ---------------------------------------------------------------------------------------------
    def _ensure_waker(self, api: str) -> None:
        entry = self.apis[api]
        if entry.waker is None or entry.waker.done():
            entry.waker = asyncio.create_task(self._wake(api), name=f"wake-{api}")

    async def _wake(self, api: str) -> None:
        """Poll the Deployment while requests are held: scale it to 1 if it is at 0, release them once a pod
        is ready. One such task per API, so one patch however many requests arrive together."""
        entry = self.apis[api]
        while entry.state.waking:
            try:
                seen = await self.observe(api, refresh=True)
                if seen.ready:
                    entry.state.woke()
                    entry.ready.set()
                    entry.ready = asyncio.Event()  # for the next time the API is at zero
                    return
                if entry.state.should_scale(seen):
                    await self.cluster.scale_to_one(api)
                    entry.state.scaled(self.clock())
                    log.info("scaling %s from zero (%d held)", api, entry.state.holding)
            except Exception as exc:  # the API server may come back: keep polling while requests wait
                log.warning("reading %s while waking it: %s", api, exc)
            await asyncio.sleep(self.poll)

    async def hold(self, api: str, arrived: float, limits: s.Limits, body: Body) -> bool:
        """Wait (already admitted as held) until the API has a ready pod; False when the time is up. Meanwhile
        the body is read and the connection watched: raises ClientGone or BodyTooLarge, its place freed."""
        entry = self.apis[api]
        ready = asyncio.ensure_future(entry.ready.wait())
        watcher = asyncio.ensure_future(body.watch())
        self._ensure_waker(api)
        try:
            await asyncio.wait({ready, watcher}, timeout=s.remaining(arrived, limits, self.clock()),
                               return_when=asyncio.FIRST_COMPLETED)
            if watcher.done():
                watcher.result()  # ClientGone or BodyTooLarge
            return ready.done()
        finally:
            for task in (ready, watcher):
                task.cancel()
            await asyncio.gather(ready, watcher, return_exceptions=True)
            entry.state.release()

    async def close(self) -> None:
        for entry in self.apis.values():
            if entry.waker is not None:
                entry.waker.cancel()
        if self.http is not None:
            await self.http.aclose()

    def held(self) -> dict[str, int]:
        return {api: entry.state.holding for api, entry in sorted(self.apis.items())}


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _answer(status: int, message: str, request_id: str, reason: str | None) -> Response:
    headers = {"x-request-id": request_id}
    if reason:
        headers["x-berth-reason"] = reason
    return Response(json.dumps({"error": message, "request_id": request_id}), status_code=status,
                    media_type="application/json", headers=headers)


def _connection_listed(request: Request) -> set[str]:
    """Headers the client's Connection header names: hop-by-hop too (RFC 9110 §7.6.1)."""
    return {token.strip().lower() for value in request.headers.getlist("connection") for token in value.split(",")}


async def forward(activator: Activator, request: Request, api: str, limits: s.Limits,
                  request_id: str, body: Body) -> Response:
    """Stream the request to the API's Service and its answer back."""
    assert activator.http is not None
    dropped = REQUEST_DROPPED | _connection_listed(request)
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in dropped]
    headers.append(("x-request-id", request_id))
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    url = activator.upstream(api) + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    upstream = activator.http.build_request(
        request.method, url, headers=headers, content=body.stream() if has_body else None,
        timeout=httpx.Timeout(limits.request_timeout, connect=CONNECT_TIMEOUT))
    try:
        answer = await activator.http.send(upstream, stream=True)
    except httpx.ConnectError as exc:
        activator.apis[api].seen = None  # read the Deployment again for the next request
        return _answer(503, f"API {api!r} could not be reached: {exc}", request_id, s.REPLICA_UNREACHABLE)
    except httpx.TimeoutException:
        return _answer(504, f"API {api!r} did not answer within {limits.request_timeout:g}s (networking.timeout)",
                       request_id, s.UPSTREAM_TIMEOUT)
    except httpx.HTTPError as exc:
        return _answer(502, f"API {api!r} failed to answer: {exc}", request_id, s.REPLICA_UNREACHABLE)
    except BodyTooLarge:
        return await _too_large(activator, body, request_id)
    listed = {token.strip().lower() for value in answer.headers.get_list("connection") for token in value.split(",")}
    response = StreamingResponse(_body(answer), status_code=answer.status_code,
                                 background=BackgroundTask(answer.aclose))
    response.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.multi_items()
                            if k.lower() not in HOP_BY_HOP and k.lower() not in listed]
    return response


async def _body(answer: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in answer.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:  # the replica went away mid-answer: so does the client's connection
        log.warning("answer cut short: %s", exc)
        raise


async def handle(activator: Activator, request: Request) -> Response:
    request_id = _request_id(request)
    api = request.headers.get(s.API_HEADER)
    if api is None:
        return await own(activator, request, request_id)
    if not s.valid_api_name(api):  # never sent to the API server, never kept
        return _answer(404, f"no API {api[:80]!r} in this namespace", request_id, s.UNKNOWN_API)
    body = Body(request.receive, activator.max_body_size)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > activator.max_body_size:
        return await _too_large(activator, body, request_id)
    try:
        seen = await activator.observe(api)
        limits = await activator.limits(seen) if seen.exists else s.Limits()
    except Exception as exc:  # the API server cannot be read: nothing can be decided
        log.warning("reading %s: %s", api, exc)
        return _answer(503, f"the activator cannot read API {api!r} from the cluster: {exc}", request_id,
                       s.CLUSTER_UNAVAILABLE)
    arrived = activator.clock()
    verdict = activator.apis[api].state.admit(seen, limits, arrived)
    if verdict is s.Verdict.UNKNOWN:
        activator.apis.pop(api, None)  # names from headers are not kept
        return _answer(404, f"no API {api!r} in this namespace", request_id, s.UNKNOWN_API)
    if verdict is s.Verdict.QUEUE_FULL:
        return _answer(s.QUEUE_FULL_STATUS, s.queue_full_message(api, limits), request_id, s.QUEUE_FULL)
    if verdict is s.Verdict.HOLD:
        try:
            if not await activator.hold(api, arrived, limits, body):
                return _answer(s.TIMED_OUT_STATUS, s.timed_out_message(api, limits), request_id, s.TIMED_OUT)
        except BodyTooLarge:
            return await _too_large(activator, body, request_id)
        except ClientGone:  # nobody reads this answer; the local gateway counts it as 499 client-gone
            return _answer(499, f"the client left while API {api!r} was scaling from zero", request_id,
                           s.CLIENT_GONE)
    return await forward(activator, request, api, limits, request_id, body)


async def _too_large(activator: Activator, body: Body, request_id: str) -> Response:
    await body.drop_rest(LINGER_SECONDS)
    answer = _answer(413, f"the request body exceeds the limit of {activator.max_body_size} bytes", request_id,
                     s.BODY_TOO_LARGE)
    answer.headers["connection"] = "close"  # what is left of the body is not read
    return answer


async def own(activator: Activator, request: Request, request_id: str) -> Response:
    path = request.url.path
    if path in ("/healthz", "/readyz"):
        return Response("ok\n", media_type="text/plain")
    if path == "/metrics":
        lines = ["# HELP berth_activator_held_requests Requests the activator holds while an API scales from zero.",
                 "# TYPE berth_activator_held_requests gauge"]
        lines += [f'berth_activator_held_requests{{api_name="{api}"}} {n}' for api, n in activator.held().items()]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
    return _answer(400, f"no {s.API_HEADER} header: the activator serves APIs through their HTTPRoute",
                   request_id, s.NO_API_HEADER)


def create_app(cluster: ClusterReader, upstream: Callable[[str], str], *, poll: float = s.POLL_SECONDS,
               cache: float = s.CACHE_SECONDS, clock: Callable[[], float] = time.monotonic,
               on_close: Callable[[], Any] | None = None, max_body_size: int = s.MAX_BODY_SIZE) -> Starlette:
    """The app; `upstream(api)` is the base URL of an API's Service (`service_url(namespace)` in a cluster)."""
    activator = Activator(cluster, upstream, poll=poll, cache=cache, clock=clock, max_body_size=max_body_size)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        activator.http = httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                           limits=httpx.Limits(max_connections=None, max_keepalive_connections=100))
        try:
            yield
        finally:
            await activator.close()
            if on_close is not None:
                result = on_close()
                if asyncio.iscoroutine(result):
                    await result

    async def endpoint(request: Request) -> Response:
        return await handle(activator, request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=METHODS)], lifespan=lifespan)
    app.state.activator = activator
    return app
