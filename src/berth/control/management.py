"""The management API on a unix socket (owner-only): what the CLI and `berth.client` talk to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from berth import __version__
from berth.control import history, logs, splitters, views
from berth.control.deploy import Deployer, DeployResult
from berth.control.fleet import FleetView
from berth.control.gateways import GatewayLinks
from berth.control.keys import KeyService
from berth.control.paths import Paths
from berth.control.requestlogs import RequestLogReader
from berth.control.store import Store
from berth.errors import BerthError, ConfigError, Conflict, EnvironmentFailed, InsufficientCapacity, NotFound
from berth.pyenv import builder as environments
from berth.pyenv.builder import BUILD_LOG

STATUS_BY_ERROR: dict[type[BerthError], int] = {ConfigError: 400, NotFound: 404, Conflict: 409,
                                                 InsufficientCapacity: 422, EnvironmentFailed: 422}
DELETE_TIMEOUT = 90.0
log = logging.getLogger(__name__)

WaitFor = Callable[[Callable[[], bool], float], Awaitable[bool]]


def _result(result: DeployResult) -> dict[str, str]:
    return {"api": result.api, "action": result.action, "version": result.version, "message": result.message}


class ManagementAPI:
    def __init__(self, store: Store, fleet: FleetView, wait_for: WaitFor, gateways: GatewayLinks, deployer: Deployer,
                 paths: Paths, info: Callable[[], dict[str, Any]], shutdown: Callable[[], None],
                 clock: Callable[[], float], keys: KeyService | None = None) -> None:
        self.store = store
        self.fleet = fleet  # read only: changes go through the deployer
        self.wait_for = wait_for
        self.gateways = gateways
        self.deployer = deployer
        self.paths = paths
        self.info = info
        self.shutdown = shutdown
        self.clock = clock
        self.keys = keys
        self.app = Starlette(
            routes=[
                Route("/v1/info", self.get_info),
                Route("/v1/shutdown", self.post_shutdown, methods=["POST"]),
                Route("/v1/apis", self.list_apis),
                Route("/v1/apis", self.deploy, methods=["POST"]),
                Route("/v1/apis/{name}", self.get_api),
                Route("/v1/apis/{name}", self.delete_api, methods=["DELETE"]),
                Route("/v1/apis/{name}/logs", self.get_logs),
                Route("/v1/apis/{name}/refresh", self.refresh, methods=["POST"]),
                Route("/v1/apis/{name}/requests", self.get_requests),
                Route("/v1/apis/{name}/baseline", self.get_baseline),
                Route("/v1/apis/{name}/baseline", self.pin_baseline, methods=["POST"]),
                Route("/v1/apis/{name}/baseline", self.unpin_baseline, methods=["DELETE"]),
                Route("/v1/splitters", self.list_splitters),
                Route("/v1/splitters/{name}", self.get_splitter),
                *(keys.routes() if keys is not None else []),
            ],
            exception_handlers={BerthError: self._error},
        )

    @property
    def gateway_url(self) -> str:
        info = self.info()
        return f"http://{info['host']}:{info['port']}"

    async def _error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BerthError)
        status = next((code for kind, code in STATUS_BY_ERROR.items() if isinstance(exc, kind)), 500)
        return JSONResponse(_error_body(exc), status_code=status)

    async def get_info(self, request: Request) -> Response:
        return JSONResponse({**self.info(), "version": __version__, "apis": len(self.fleet.apis)})

    async def post_shutdown(self, request: Request) -> Response:
        self.shutdown()
        return JSONResponse({"stopping": True})

    async def list_apis(self, request: Request) -> Response:
        url, now = self.gateway_url, self.clock()
        since = _since(request, now)
        window = None if since is None else (self.store, since, now)
        return JSONResponse([views.summary(api, self.fleet, self.gateways, url, window) for api in self._apis()])

    async def get_api(self, request: Request) -> Response:
        api = self._api(request.path_params["name"])
        now = self.clock()
        view = views.detail(api, self.fleet, self.gateways, self.store, self.gateway_url, now, _since(request, now))
        view["environment"] = environments.describe(self.paths.envs, api.latest.environment)
        return JSONResponse(view)

    # --- prediction monitoring baseline -----------------------------------------------------------
    async def get_baseline(self, request: Request) -> Response:
        return JSONResponse(self._baseline(self._api(request.path_params["name"]).name))

    async def pin_baseline(self, request: Request) -> Response:
        name = self._api(request.path_params["name"]).name
        body = await request.json() if await request.body() else {}
        now = self.clock()
        until = float(body["until"]) if body.get("until") is not None else now
        since = float(body["since"]) if body.get("since") is not None else until - history.DRIFT_WINDOW
        if since >= until:
            raise BerthError(f"the baseline window must start before it ends; got {_span(since, until)}",
                             hint="pass --since earlier than --until")
        if since > now:
            raise BerthError(f"the baseline window starts in the future: {_span(since, until)}",
                             hint="pin a window of past predictions, e.g. --since 2h --until 1h")
        self.store.pin_baseline(name, since, min(until, now), at=now)
        return JSONResponse(self._baseline(name))

    async def unpin_baseline(self, request: Request) -> Response:
        name = self._api(request.path_params["name"]).name
        self.store.clear_baseline(name)
        return JSONResponse(self._baseline(name))

    def _baseline(self, name: str) -> dict[str, Any]:
        now = self.clock()
        return {"api": name, "reference": history.reference_window(self.store, name, now),
                "drift": history.drift(self.store, name, now)}

    # --- request logs -------------------------------------------------------------------------------
    async def get_requests(self, request: Request) -> Response:
        name, folder, tail, follow = self._log_query(request)
        return StreamingResponse(self._request_stream(folder, tail, follow, name), media_type="application/x-ndjson")

    async def _request_stream(self, folder: Path, tail: int, follow: bool, name: str) -> AsyncIterator[bytes]:
        reader = RequestLogReader(folder)
        yield _json_lines(reader.initial(tail))
        while follow and (name in self.fleet.apis):
            await asyncio.sleep(0.25)
            entries = reader.poll()
            if entries:
                yield _json_lines(entries)

    async def deploy(self, request: Request) -> Response:
        """JSON, or with `Accept: application/x-ndjson` a line per progress message (building the project's
        environment can take minutes), then `{"results": [...]}` or `{"error": {...}}`."""
        body = await request.json()
        if "application/x-ndjson" in request.headers.get("accept", ""):
            return StreamingResponse(self._deploy_stream(body), media_type="application/x-ndjson")
        results = await self.deployer.deploy(body["spec_file"], body["apis"], verify=bool(body.get("verify")),
                                             variables=body.get("variables") or {},
                                             raw_splitters=body.get("splitters") or [])
        return JSONResponse([_result(r) for r in results])

    async def _deploy_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        messages: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.create_task(self.deployer.deploy(
            body["spec_file"], body["apis"], verify=bool(body.get("verify")),
            variables=body.get("variables") or {}, progress=messages.put_nowait,
            raw_splitters=body.get("splitters") or []))
        try:
            while not task.done() or not messages.empty():
                if messages.empty():
                    waiting = asyncio.ensure_future(messages.get())
                    await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
                    if not waiting.done():
                        waiting.cancel()
                        continue
                    message = waiting.result()
                else:
                    message = messages.get_nowait()
                yield _json_lines([{"progress": message}])
            try:
                results = task.result()
            except BerthError as exc:
                yield _json_lines([{"error": _error_body(exc)}])
            except Exception as exc:  # a bug: say so on the stream, which has already answered 200
                log.exception("deploy failed")
                yield _json_lines([{"error": {"error": f"the deploy failed inside the daemon: {exc!r}",
                                              "hint": "see the daemon's log", "kind": "BerthError"}}])
            else:
                yield _json_lines([{"results": [_result(r) for r in results]}])
        finally:
            # The client went away: a deploy it can no longer hear about stops (a build is killed;
            # once applying began, there is no await left for the cancellation to land on).
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, BerthError):
                    await task

    async def refresh(self, request: Request) -> Response:
        return JSONResponse(_result(await self.deployer.refresh(request.path_params["name"])))

    async def delete_api(self, request: Request) -> Response:
        name = request.path_params["name"]
        if self.deployer.splitters.get(name) is not None:  # a traffic splitter: no replicas to stop
            keys_removed = self.keys.removed(name) if self.keys is not None else 0
            await self.deployer.delete_splitter(name)
            return JSONResponse({"api": name, "deleted": True, "stopped": True, "keys_removed": keys_removed})
        self._api(name)
        keys_removed = self.keys.removed(name) if self.keys is not None else 0
        await self.deployer.delete(name)
        gone = await self.wait_for(lambda: name not in self.fleet.apis, DELETE_TIMEOUT)
        api = self.fleet.apis.get(name)
        if api is not None and not api.deleting:
            # Deploys of an API being deleted are refused, so this is a bug, but a delete must
            # never say it succeeded for an API that is still there.
            raise Conflict(f"{name!r} was deployed again while it was being deleted; it is still deployed",
                           hint=f"run `berth delete {name}` again")
        return JSONResponse({"api": name, "deleted": True, "stopped": gone, "keys_removed": keys_removed})

    # --- traffic splitters ------------------------------------------------------------------------
    async def list_splitters(self, request: Request) -> Response:
        return JSONResponse([self._splitter_view(record) for record in self.deployer.splitters.all()])

    async def get_splitter(self, request: Request) -> Response:
        name = request.path_params["name"]
        record = self.deployer.splitters.get(name)
        if record is None:
            known = ", ".join(r.name for r in self.deployer.splitters.all()) or "none"
            raise NotFound(f"no traffic splitter named {name!r} (deployed: {known})")
        return JSONResponse(self._splitter_view(record))

    def _splitter_view(self, record: splitters.SplitterRecord) -> dict[str, Any]:
        url = self.gateway_url

        def status(api: str) -> str:
            deployed = self.fleet.apis.get(api)
            return str(views.summary(deployed, self.fleet, self.gateways, url)["status"]) if deployed else "missing"

        counters = self.gateways.split_counters().get(record.name, {})
        return splitters.summary(record, counters, status, url)

    def _log_query(self, request: Request) -> tuple[str, Path, int, bool]:
        """The API (deployed, or with logs left), its log folder, `tail` and `follow` of a logs request."""
        name = request.path_params["name"]
        folder = self.paths.logs / name
        if name not in self.fleet.apis and not folder.is_dir():
            raise NotFound(f"no API named {name!r}", hint="see `berth get` for the deployed APIs")
        return name, folder, int(request.query_params.get("tail", "200")), \
            request.query_params.get("follow") in ("1", "true")

    async def get_logs(self, request: Request) -> Response:
        name, folder, tail, follow = self._log_query(request)
        live = {r.id for r in self.fleet.replicas_of(name)}
        return StreamingResponse(self._log_stream(folder, live, tail, follow, name),
                                 media_type="text/plain; charset=utf-8")

    async def _log_stream(self, folder: Path, live: set[str], tail: int, follow: bool,
                          name: str) -> AsyncIterator[bytes]:
        reader = logs.LogReader(folder, live)
        build_log = self._build_log(name)
        if build_log is not None:
            yield logs.build_lines(build_log, tail)
        for chunk in reader.initial(tail):
            yield chunk
        while follow and (name in self.fleet.apis):
            await asyncio.sleep(0.25)
            reader.live = {r.id for r in self.fleet.replicas_of(name)}
            for chunk in reader.poll():
                yield chunk

    def _build_log(self, name: str) -> Path | None:
        """What building the environment of the API's current version printed (uv, dependencies.sh)."""
        api = self.fleet.apis.get(name)
        return self.paths.envs / api.latest.environment / BUILD_LOG if api and api.latest.environment else None

    def _apis(self) -> list[Any]:
        return sorted(self.fleet.apis.values(), key=lambda api: api.name)

    def _api(self, name: str) -> Any:
        api = self.fleet.apis.get(name)
        if api is None:
            known = ", ".join(sorted(self.fleet.apis)) or "none"
            raise NotFound(f"no API named {name!r} (deployed: {known})")
        return api


def _error_body(exc: BerthError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.message, "hint": exc.hint, "kind": type(exc).__name__}
    if isinstance(exc, ConfigError):
        body["problems"] = exc.problems
    return body


def _since(request: Request, now: float) -> float | None:
    """`?since=<seconds>`: a window of that many seconds before now (the daemon's clock)."""
    raw = request.query_params.get("since")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise BerthError(f"since must be a number of seconds, got {raw!r}") from None
    return now - max(seconds, 0.0)


def _span(since: float, until: float) -> str:
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} to " \
           f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(until))}"


def _json_lines(entries: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(entry, separators=(",", ":")).encode() + b"\n" for entry in entries)
