"""The replica's ASGI app: the predict route on a lean path, everything else through Starlette."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from berth.config.schema import RealtimeAPI
from berth.errors import PredictorLoadError
from berth.runtime import oip
from berth.runtime import predictor as loader
from berth.runtime.batching import Batcher
from berth.runtime.clients import PythonClient
from berth.runtime.concurrency import send_busy
from berth.runtime.contract import BODY_STREAM, STATS_PATH, streams_request_body
from berth.runtime.errors import (
    REQUEST_ID_KEY,
    BatchError,
    GpuOutOfMemory,
    MethodNotAllowed,
    NotReady,
    PayloadError,
    PredictError,
    ReplicaError,
    RouteNotFound,
    error_response,
)
from berth.runtime.gpu import gpu_out_of_memory_error, init_failure_message
from berth.runtime.metrics import CONTENT_TYPE, ReplicaMetrics
from berth.runtime.models import ModelCache, sources
from berth.runtime.monitoring import PredictionMonitor
from berth.runtime.payload import parse_payload
from berth.runtime.remote import RemoteStore
from berth.runtime.response import encode
from berth.runtime.streaming import RequestBody, Streamed, StreamSender, classify, disconnect_watch, open_source

if TYPE_CHECKING:  # numpy and onnxruntime load only for APIs that serve models
    from berth.runtime.onnx import OnnxClient

log = logging.getLogger("berth.replica")

INFO_MESSAGE = "make a prediction by sending a post request to this endpoint with a json payload"
JSON = b"application/json"
# A client's X-Request-ID is echoed when it is printable ASCII without spaces and at most 200
# bytes (the gateway applies the same rule); anything else is replaced by a generated one.
REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,200}")


@dataclass(frozen=True)
class ReplicaSettings:
    api: RealtimeAPI
    project: Path
    replica_id: str = "local"
    process_index: int = 0
    model_cache: Path | None = None  # where remote models are mirrored (shared by every replica)
    version: str | None = None  # the API version served, reported by GET /stats
    max_concurrency: int | None = None  # predicts in flight beyond this get 503 (Kubernetes: no gateway in front)

    @property
    def predictor_path(self) -> Path:
        return (self.project / (self.api.predictor.path or "")).resolve()

    @property
    def python_path(self) -> Path:
        return (self.project / (self.api.predictor.python_path or ".")).resolve()


class ReplicaApp:
    """Constructing stores; the predictor loads when the ASGI lifespan starts."""

    def __init__(self, settings: ReplicaSettings,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        self.settings = settings
        self.on_fatal = on_fatal
        self.ready = False
        self.instance: Any = None
        self.predict: loader.BoundMethod | None = None
        self.post_predict: loader.BoundMethod | None = None
        self.post_worker: loader.PostPredictWorker | None = None
        self.init_thread: Callable[[], Any] | None = None
        self.batcher: Batcher | None = None
        self.models: oip.ModelClient | None = None
        threads = settings.api.predictor.threads_per_process
        # With one thread, the event loop's thread is that thread: handing each call to a pool
        # thread and back costs a wake-up and a GIL switch per request (a third of the req/s and
        # a 10 ms p99 at 32 connections), and buys no concurrency.
        self.inline = threads == 1
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="predict")
        self.metrics = ReplicaMetrics(settings.api.name, settings.process_index, settings.version)
        monitoring = settings.api.monitoring
        self.monitor = None if monitoring is None else PredictionMonitor(
            settings.api.name, monitoring.model_type, monitoring.key)
        self.metrics.predictions = self.monitor
        self._ids = itertools.count()
        self._id_prefix = f"{settings.replica_id}-{settings.process_index}-{os.getpid()}"
        self._loading: asyncio.Task[None] | None = None
        self._pool_init: asyncio.Future[None] | None = None  # init_thread on the pool's threads, for streams
        self._router = Starlette(routes=[
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
            Route(STATS_PATH, self._stats),
            Route("/", self._info, methods=["GET"]),
            *oip.routes(self),
        ], exception_handlers={404: self._http_error, 405: self._http_error, Exception: self._crashed})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/":
            await self._handle_predict(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            request_id = self._request_id(scope["headers"])
            await self._router({**scope, REQUEST_ID_KEY: request_id}, receive, _with_request_id(send, request_id))
        else:
            await self._router(scope, receive, send)

    def _request_id(self, headers: list[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
        return f"{self._id_prefix}-{next(self._ids)}"

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loading = asyncio.create_task(self.load())
                if self.inline:
                    await self._loading  # nothing can be served meanwhile: bind once ready
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=False)
                if self.post_worker is not None:
                    await self.post_worker.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def load(self) -> None:
        """Run `__init__` once, then the optional `init_thread` once on each thread `predict` runs on.

        With one thread, `__init__` runs on the event loop's thread, which is where `predict` runs;
        with more, on one of the pool's threads, and only `init_thread` reaches the others.
        """
        started = time.perf_counter()
        try:
            if self.inline:
                self._load_sync()
            else:
                await asyncio.get_running_loop().run_in_executor(self.executor, self._load_sync)
            await self._init_threads()
        except BaseException as exc:
            log.exception("the predictor failed to initialise: %s", self.init_failure(exc))
            if self.on_fatal:
                self.on_fatal(exc)
            return
        self.metrics.init_seconds = time.perf_counter() - started
        self.ready = True
        log.info("predictor ready in %.2fs", self.metrics.init_seconds)

    def _load_sync(self) -> None:
        settings = self.settings
        spec = settings.api.predictor
        clients, self.models = build_clients(settings.api, settings.project, settings.model_cache)
        if spec.path is not None:
            cls = loader.load_class(settings.predictor_path, settings.python_path, spec.class_name)
            self.instance = loader.construct(cls, spec.config, clients)
        else:
            from berth.runtime.onnx import DefaultONNXPredictor

            self.instance = DefaultONNXPredictor(clients["onnx_client"])
        if isinstance(self.models, PythonClient):
            self.models.bind(self.instance)
        self.predict = loader.bind_predict(self.instance)
        self.post_predict = loader.bind(self.instance, "post_predict", loader.POST_PREDICT_ARGS)
        if self.post_predict is not None:
            self.post_worker = loader.PostPredictWorker(self.post_predict)
        self.init_thread = loader.bind_init_thread(self.instance)
        batching = settings.api.predictor.server_side_batching
        if batching is not None and streams_request_body(self.predict.args):
            raise PredictorLoadError(
                f"predict declares {BODY_STREAM}, which server_side_batching cannot give it (a batch is formed "
                f"from bodies already read): remove server_side_batching, or take payload instead of {BODY_STREAM}")
        if batching is not None:
            self.batcher = Batcher(self._call_batch, self.predict.args, batching.max_batch_size,
                                   batching.batch_interval, self.metrics.observe_batch,
                                   concurrency=settings.api.predictor.threads_per_process)

    async def _init_threads(self) -> None:
        """`init_thread` on every thread that will run predict: the pool's, or the event loop's."""
        init = self.init_thread
        if init is None:
            return
        assert self.predict is not None
        if self.inline or self.predict.is_async:
            init()
        else:
            await loader.on_every_thread(self.executor, self.settings.api.predictor.threads_per_process, init)

    async def _pool_thread_initialised(self) -> None:
        """A sync generator's items are made on the pool's threads. Where predict does not run there
        (one thread: the loop's; or an async predict), init_thread never reached them: it runs on each,
        once, before the first such stream, so an API that never streams never pays for it. A failure
        is the stream's 500, and the next stream tries again."""
        assert self.predict is not None
        if self.init_thread is None or not (self.inline or self.predict.is_async):
            return
        if self._pool_init is None:
            threads = self.settings.api.predictor.threads_per_process
            self._pool_init = asyncio.ensure_future(loader.on_every_thread(self.executor, threads, self.init_thread))
        pending = self._pool_init
        try:
            await asyncio.shield(pending)  # one run, shared by the streams that start meanwhile
        except BaseException:
            if pending.done() and self._pool_init is pending:
                self._pool_init = None
            raise

    async def _handle_predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        content_type, given, accept = "", b"", ""
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"x-request-id":
                given = value
            elif name == b"accept":
                accept = value.decode("latin-1")
        if given and REQUEST_ID.fullmatch(given):
            request_id = given.decode("ascii")
        else:
            request_id = f"{self._id_prefix}-{next(self._ids)}"
        limit = self.settings.max_concurrency
        if limit is not None and self.metrics.in_flight >= limit:
            self.metrics.observe(await send_busy(send, self.settings.api.name, limit, request_id),
                                 time.perf_counter() - started)
            return
        self.metrics.in_flight += 1
        try:
            status = await self._predict(scope, receive, send, content_type, request_id, accept)
        finally:
            self.metrics.in_flight -= 1
        self.metrics.observe(status, time.perf_counter() - started)

    async def _predict(self, scope: Scope, receive: Receive, send: Send,
                       content_type: str, request_id: str, accept: str = "") -> int:
        predict = self.predict
        if not self.ready or predict is None:
            return await _send_error(send, NotReady("the predictor is still initialising"), request_id)
        values: dict[str, Any] = {"batch_id": None}
        body_stream = RequestBody(receive) if BODY_STREAM in predict.args else None
        if body_stream is not None:
            values[BODY_STREAM], values["payload"] = body_stream, None  # read by the predictor, as it goes
        else:
            body = await _read_body(receive)
            try:
                values["payload"] = await parse_payload(content_type, body, scope) if (
                    "payload" in predict.args or self.post_predict) else None
            except PayloadError as exc:
                return await _send_error(send, exc, request_id)
        if "query_params" in predict.args:
            values["query_params"] = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        if "headers" in predict.args:
            values["headers"] = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        seconds: float | None = None  # the call's time, observed here unless a batch observed it
        try:
            if self.batcher:
                result = await self.batcher.submit(values)
            else:
                result, seconds = await self._call_timed(predict, values)
            streamed = classify(result, accept)
            if streamed is not None:
                return await self._stream(send, receive, streamed, body_stream, seconds, request_id)
            if seconds is not None:
                self.metrics.predict.observe(seconds)
            encoded = encode(result)
        except Exception as raised:
            error = self.request_error(raised)
            _log_failure(error, request_id)
            return await _send_error(send, error, request_id)
        if isinstance(encoded, Response):
            encoded.headers["x-request-id"] = request_id
            await encoded(scope, receive, send)
            status = encoded.status_code
        else:
            status = await _send(send, 200, encoded[0], encoded[1], request_id)
        if self.monitor is not None:
            self.monitor.observe(result)  # after the response is sent: the client does not wait for it
        if self.post_worker is not None:
            self.post_worker.submit({"query_params": {}, "headers": {}, **values, "response": result}, request_id)
        return status

    async def _stream(self, send: Send, receive: Receive, streamed: Streamed, body: RequestBody | None,
                      seconds: float | None, request_id: str) -> int:
        """Send a generator's items as they come. The predict histogram gets the call plus the time spent
        producing items (not the time waiting for the client); a batch's call was observed already.
        post_predict and the prediction monitor are skipped: there is no single response to give them."""
        if not streamed.is_async:
            try:
                await self._pool_thread_initialised()
            except BaseException:
                close = getattr(streamed.items, "close", None)
                if close is not None:
                    close()  # never started: its finally (if any) runs now, not at garbage collection
                raise
        sender = StreamSender(send, disconnect_watch(receive, body), streamed,
                              open_source(streamed, self.executor), request_id)
        try:
            result = await sender.run()
        finally:
            if seconds is not None:
                self.metrics.predict.observe(seconds + sender.source.seconds)
        return result.status

    async def _call(self, predict: loader.BoundMethod, values: dict[str, Any]) -> Any:
        """The predictor call (one request, or one batch), timed into the predict histogram."""
        result, seconds = await self._call_timed(predict, values)
        self.metrics.predict.observe(seconds)
        return result

    async def _call_timed(self, predict: loader.BoundMethod, values: dict[str, Any]) -> tuple[Any, float]:
        """The predictor call and the seconds it took; a failed call is observed before it is raised."""
        if predict.is_async or self.inline:
            started = time.perf_counter()
            try:
                result = await predict.call(values) if predict.is_async else predict.call(values)
            except BaseException:
                self.metrics.predict.observe(time.perf_counter() - started)
                raise
            return result, time.perf_counter() - started
        # Timed on the pool's thread, so the hop there and back is not counted as the model's time;
        # observed by the caller, as the histogram belongs to the event loop's thread.
        result, error, seconds = await asyncio.get_running_loop().run_in_executor(
            self.executor, _timed, predict.call, values)
        if error is not None:
            self.metrics.predict.observe(seconds)
            raise error
        return result, seconds

    def request_error(self, exc: Exception) -> Exception:
        """What a failed request answers with: a GPU out of memory said as such, anything else as raised."""
        spec = self.settings.api
        return gpu_out_of_memory_error(exc, spec.compute.gpu, spec.predictor.server_side_batching is not None) or exc

    def init_failure(self, exc: BaseException) -> str:
        """The message recorded for a failed `__init__` (a GPU out of memory said as such)."""
        spec = self.settings.api
        return init_failure_message(exc, spec.compute.gpu, spec.predictor.server_side_batching is not None)

    async def run_sync(self, func: Callable[[], Any]) -> Any:
        """Model work off the request path's thread policy: inline with one thread, else the pool."""
        if self.inline:
            return func()
        return await asyncio.get_running_loop().run_in_executor(self.executor, func)

    async def call_predict(self, values: dict[str, Any]) -> Any:
        assert self.predict is not None
        return await self._call(self.predict, {"batch_id": None, **values})

    async def _call_batch(self, batch: dict[str, list[Any]]) -> Any:
        assert self.predict is not None
        return await self._call(self.predict, batch)

    async def _healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def _readyz(self, request: Request) -> Response:
        if self.ready:
            return PlainTextResponse("ready")
        return _error(request, NotReady("the predictor is still initialising"))

    async def _metrics(self, request: Request) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.metrics.stats())

    async def _info(self, request: Request) -> Response:
        api = self.settings.api
        info: dict[str, Any] = {"message": INFO_MESSAGE, "api": api.name, "ready": self.ready}
        if self.predict is not None:
            info["predict_args"] = sorted(self.predict.args - {"batch_id"})
        return JSONResponse(info)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        """Starlette's 404 and 405, as JSON errors like every other."""
        assert isinstance(exc, HTTPException)
        path, method = request.url.path, request.method
        error: ReplicaError
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            error = MethodNotAllowed(f"{method} is not allowed on {path}; it allows {allowed}")
        else:
            error = RouteNotFound(
                f"API {self.settings.api.name!r} has no route {path}; it serves POST (predict) and GET (API info) "
                "at its endpoint, /healthz, /readyz, /metrics, /stats and the inference protocol under /v2")
        status, body = error_response(error, request.scope.get(REQUEST_ID_KEY))
        return Response(body, status_code=status, headers=exc.headers, media_type="application/json")

    async def _crashed(self, request: Request, exc: Exception) -> Response:
        # Starlette still re-raises it afterwards, so uvicorn logs its traceback.
        return _error(request, exc)


def build_clients(api: RealtimeAPI, project: Path,
                  model_cache: Path | None) -> tuple[dict[str, Any], OnnxClient | PythonClient | None]:
    """`onnx_client` or `python_client` for the constructor, from predictor.models."""
    models = api.predictor.models
    if models is None:
        return {}, None
    remote = RemoteStore(model_cache or project / ".berth-models", keep=models.disk_cache_size)
    found = sources(models, project, api.name, remote)
    for source in found.values():
        source.versions()  # lists remote prefixes now: a missing model fails the start, not a request
    if api.predictor.type == "onnx":
        from berth.runtime.onnx import OnnxClient, session_factory

        onnx_client = OnnxClient(ModelCache(found, session_factory(api), models.cache_size))
        return {"onnx_client": onnx_client}, onnx_client
    python_client = PythonClient(found, models.cache_size)
    return {"python_client": python_client}, python_client


def _timed(call: Callable[[dict[str, Any]], Any],
           values: dict[str, Any]) -> tuple[Any, Exception | None, float]:
    """Run `call` and time it where it runs; an exception is handed back to be raised by the caller."""
    started = time.perf_counter()
    try:
        return call(values), None, time.perf_counter() - started
    except Exception as exc:
        return None, exc, time.perf_counter() - started


def _error(request: Request, exc: BaseException) -> Response:
    status, body = error_response(exc, request.scope.get(REQUEST_ID_KEY))
    return Response(body, status_code=status, media_type="application/json")


def _with_request_id(send: Send, request_id: str) -> Send:
    """`send` that puts the request's id on the response head (a handler's own copy is replaced)."""
    header = (b"x-request-id", request_id.encode("ascii"))

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [item for item in message.get("headers", ()) if item[0].lower() != b"x-request-id"]
            message = {**message, "headers": [*headers, header]}
        await send(message)
    return sending


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body  # type: ignore[no-any-return]
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _log_failure(exc: Exception, request_id: str) -> None:
    """The API's log gets what the client may not see; a request's own mistake (4xx) is not logged."""
    if not isinstance(exc, ReplicaError) or not exc.exposed:
        log.error("request %s: predict raised", request_id, exc_info=exc)
    elif isinstance(exc, PredictError):
        # A batch's (or a GPU out of memory's) cause is the user's exception, worth its traceback; a
        # serialisation error says it all.
        log.error("request %s: %s", request_id, exc,
                  exc_info=exc.__cause__ if isinstance(exc, BatchError | GpuOutOfMemory) else None)


async def _send_error(send: Send, exc: BaseException, request_id: str) -> int:
    status, body = error_response(exc, request_id)
    return await _send(send, status, body, JSON, request_id)


async def _send(send: Send, status: int, body: bytes, content_type: bytes, request_id: str) -> int:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode("latin-1")),
        ],
    })
    await send({"type": "http.response.body", "body": body})
    return status
