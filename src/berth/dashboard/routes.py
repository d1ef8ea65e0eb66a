"""The dashboard's routes: the page, its static assets, JSON views and a server-sent events stream.

Mounted by the daemon's read-only observe app (the gateway proxies GET/HEAD under /_berth/ to it).
Every route reads through a `DashboardSource`; nothing here writes state. The stream is bounded:
one message is built at a time (no queue), it ends when the client goes away or after
`STREAM_LIFETIME` seconds (EventSource reconnects by itself), and at most `MAX_STREAMS` are open at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from berth.dashboard.assets import Assets, load_assets
from berth.dashboard.source import DashboardSource
from berth.errors import NotFound

STREAM_INTERVAL = 2.0  # seconds between two pushes of the stream
STREAM_LIFETIME = 600.0  # a stream ends after this; the browser's EventSource reconnects (retry below)
MAX_STREAMS = 32  # open streams at once; more get a 503 and the page falls back to polling
SPARK_MINUTES = 60  # the overview's per-API sparkline covers the last hour
TAIL_SECONDS = 180.0  # the stream's per-API series tail: the buckets still changing
OVERVIEW_TTL = 1.0  # one overview serves every stream (and poll) asking within this many seconds
PREDICTIONS_TTL = 10.0  # prediction summaries and drift are recomputed at most this often per API
WINDOWS = {"15m": 900.0, "1h": 3600.0, "6h": 6 * 3600.0, "24h": 86400.0, "14d": 14 * 86400.0}


class Dashboard:
    """The state behind the routes: the source, a clock, the assets and a small cache of predictions."""

    def __init__(self, source: DashboardSource, clock: Callable[[], float], assets: Assets) -> None:
        self.source = source
        self.clock = clock
        self.assets = assets
        self.streams = 0
        self._predictions: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._overview: tuple[float, dict[str, Any]] | None = None

    def predictions(self, name: str) -> dict[str, Any] | None:
        """Cached per API for PREDICTIONS_TTL: drift reads a day of history, the stream asks every 2 s."""
        now = self.clock()
        cached = self._predictions.get(name)
        if cached is not None and now - cached[0] < PREDICTIONS_TTL:
            return cached[1]
        value = self.source.predictions(name)
        self._predictions[name] = (now, value)
        return value

    def overview(self) -> dict[str, Any]:
        """Shared by every open stream for OVERVIEW_TTL: ten tabs cost the store what one does."""
        now = self.clock()
        if self._overview is not None and 0 <= now - self._overview[0] < OVERVIEW_TTL:
            return self._overview[1]
        value = self._build_overview(now)
        self._overview = (now, value)
        return value

    def _build_overview(self, now: float) -> dict[str, Any]:
        rows = self.source.overview()
        names = {row["name"] for row in rows}
        for gone in [name for name in self._predictions if name not in names]:
            del self._predictions[gone]  # bounded by the APIs that exist
        return {"now": now, "apis": [self._row(row, now) for row in rows]}

    def _row(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        try:
            return {**row, "recent": self._recent(row["name"], now), "drift": _drift(self.predictions(row["name"]))}
        except (NotFound, KeyError):  # deleted since the overview was read: shown without its history
            return {**row, "recent": None, "drift": None}

    def _recent(self, name: str, now: float) -> dict[str, Any]:
        """The last hour as sparkline arrays, plus the latest bucket's p50/p99."""
        rows = self.source.series(name, now - SPARK_MINUTES * 60, now)
        latest = next((row for row in reversed(rows) if row.get("count")), None)
        return {"count": [row["count"] for row in rows],
                "p50": latest.get("p50") if latest else None, "p99": latest.get("p99") if latest else None}

    def detail(self, name: str, since: float) -> dict[str, Any]:
        now = self.clock()
        # The spec is left out (the page does not show it and the stream would resend it every 2 s), and
        # of the autoscaler's recent decisions only those that asked for a change are kept.
        api = {key: value for key, value in self.source.api(name).items() if key != "spec"}
        api["autoscaler"] = [d for d in api.get("autoscaler") or [] if d.get("request") != d.get("current_replicas")]
        return {"now": now, "api": api, "series": self.source.series(name, now - since, now),
                "predictions": self.predictions(name), "since": now - since}


def routes(source: DashboardSource, clock: Callable[[], float] = time.time) -> list[BaseRoute]:
    """The dashboard under /_berth/: the page, /static/{file}, /api/overview, /api/apis/{name}, /api/stream."""
    board = Dashboard(source, clock, load_assets())

    async def page(request: Request) -> Response:
        return board.assets.page(request)

    async def static(request: Request) -> Response:
        return board.assets.file(request, request.path_params["file"])

    async def overview(request: Request) -> Response:
        return _json(board.overview())

    async def api(request: Request) -> Response:
        name = request.path_params["name"]
        window = request.query_params.get("window", "1h")
        if window not in WINDOWS:
            return _json({"error": f"window must be one of {', '.join(WINDOWS)} (got {window!r})"}, 400)
        try:
            return _json(board.detail(name, WINDOWS[window]))
        except (NotFound, KeyError):
            return _json({"error": f"no API named {name!r}", "hint": "the overview at /_berth/ lists them"}, 404)

    async def stream(request: Request) -> Response:
        if request.method == "HEAD":  # the headers a GET would get, without starting a stream
            return Response(status_code=200, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        if board.streams >= MAX_STREAMS:
            return _json({"error": f"{MAX_STREAMS} dashboard streams are open already",
                          "hint": "close a dashboard tab; the page polls meanwhile"}, 503)
        return StreamingResponse(_events(board, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return [
        Route("/_berth/", page, methods=["GET"]),
        Route("/_berth/static/{file}", static, methods=["GET"]),
        Route("/_berth/api/overview", overview, methods=["GET"]),
        Route("/_berth/api/apis/{name}", api, methods=["GET"]),
        Route("/_berth/api/stream", stream, methods=["GET"]),
    ]


async def _events(board: Dashboard, request: Request) -> AsyncIterator[bytes]:
    """Overview (and the selected API's detail with its latest buckets) every STREAM_INTERVAL seconds."""
    name = request.query_params.get("api") or None
    board.streams += 1
    try:
        yield b"retry: 2000\n\n"
        ends = board.clock() + STREAM_LIFETIME
        while board.clock() < ends and not await request.is_disconnected():
            yield _event("overview", board.overview())
            if name is not None:
                yield _api_event(board, name)
            await asyncio.sleep(STREAM_INTERVAL)
    finally:
        board.streams -= 1


def _api_event(board: Dashboard, name: str) -> bytes:
    try:
        return _event("api", board.detail(name, TAIL_SECONDS))
    except (NotFound, KeyError):
        return _event("missing", {"api": name})


def _event(kind: str, data: Any) -> bytes:
    return f"event: {kind}\ndata: {_dumps(data)}\n\n".encode()


def _json(data: Any, status: int = 200) -> Response:
    return Response(_dumps(data), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def _dumps(data: Any) -> str:
    # NaN and infinities are not JSON: the browser's JSON.parse would reject the whole message.
    return json.dumps(_finite(data), separators=(",", ":"), default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _drift(predictions: dict[str, Any] | None) -> dict[str, Any] | None:
    drift = predictions.get("drift") if predictions else None
    return {"psi": drift.get("psi"), "verdict": drift.get("verdict")} if drift else None
