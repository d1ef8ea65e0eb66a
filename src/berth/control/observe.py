"""The observe app: what the daemon shows without changing anything, on its own unix socket.

The gateway proxies GET/HEAD under /_berth/ (but /_berth/healthz) to this socket, so the metrics and
the dashboard are served at the instance's address while the management API (which can change
things) stays on berth.sock. Every route here reads in-memory state or the store and returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from berth.control import history, views
from berth.control.fleet import FleetView
from berth.control.gateways import GatewayLinks
from berth.control.metrics import render
from berth.control.store import Store
from berth.dashboard import DashboardSource, routes
from berth.errors import NotFound

PREDICTION_WINDOW = 3600.0  # the dashboard's prediction summary covers the last hour


class ObserveSource:
    """The dashboard's DashboardSource (berth.dashboard.source), read from the daemon's state."""

    def __init__(self, fleet: FleetView, gateways: GatewayLinks, store: Store, collector: Collector,
                 gateway_url: Callable[[], str], clock: Callable[[], float] = time.time) -> None:
        self.fleet = fleet
        self.gateways = gateways
        self.store = store
        self.collector = collector
        self.gateway_url = gateway_url
        self.clock = clock

    def overview(self) -> list[dict[str, Any]]:
        url = self.gateway_url()
        return [views.summary(api, self.fleet, self.gateways, url)
                for api in sorted(self.fleet.apis.values(), key=lambda api: api.name)]

    def api(self, name: str) -> dict[str, Any]:
        return views.detail(self._api(name), self.fleet, self.gateways, self.store, self.gateway_url(), self.clock())

    def series(self, name: str, since: float, until: float) -> list[dict[str, Any]]:
        self._api(name)
        rows = history.request_series(self.store, name, since, until)
        return [_row(row) for row in rows]

    def predictions(self, name: str) -> dict[str, Any] | None:
        monitoring = self._api(name).spec.monitoring
        if monitoring is None:
            return None
        now = self.clock()
        return {"model_type": monitoring.model_type, "key": monitoring.key,
                "summary": history.prediction_summary(self.store, name, now - PREDICTION_WINDOW, now),
                "drift": history.drift(self.store, name, now)}

    def metrics_text(self) -> bytes:
        return render(self.collector, None)[0]

    def _api(self, name: str) -> Any:
        api = self.fleet.apis.get(name)
        if api is None:
            known = ", ".join(sorted(self.fleet.apis)) or "none"
            raise NotFound(f"no API named {name!r} (deployed: {known})",
                           hint="`berth get` lists the deployed APIs")
        return api


def _row(row: Any) -> dict[str, Any]:
    return {"start": row.start, "seconds": row.seconds, "code_2xx": row.code_2xx, "code_4xx": row.code_4xx,
            "code_5xx": row.code_5xx, "count": row.count, "seconds_sum": row.seconds_sum,
            "replicas_ready": row.replicas_ready, "replicas_desired": row.replicas_desired,
            "in_flight": row.in_flight, "p50": row.latency.quantile(0.5), "p99": row.latency.quantile(0.99)}


def observe_app(collector: Collector, source: DashboardSource | None = None) -> Starlette:
    """/_berth/metrics, and the dashboard's routes (page, assets, JSON, events) when `source` is given."""

    async def metrics(request: Request) -> Response:
        body, content_type = render(collector, request.headers.get("accept"))
        return Response(body, media_type=content_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error = "not found: see /_berth/ and /_berth/metrics" if exc.status_code == 404 else exc.detail
        return JSONResponse({"error": error, "request_id": request.headers.get("x-request-id")},
                            status_code=exc.status_code, headers=exc.headers)

    mounted: list[BaseRoute] = [Route("/_berth/metrics", metrics, methods=["GET", "HEAD"])]
    if source is not None:
        mounted += routes(source)
    app = Starlette(routes=mounted, exception_handlers={HTTPException: http_error})
    app.add_middleware(EchoRequestID)
    return app


class EchoRequestID:
    """Every answer carries the X-Request-ID the gateway sent with the request, as replicas' answers do."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = next((value for name, value in scope.get("headers", ()) if name == b"x-request-id"), None)
        if scope["type"] != "http" or request_id is None:
            await self.app(scope, receive, send)
            return

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id)]}
            await send(message)

        await self.app(scope, receive, send_with_id)
