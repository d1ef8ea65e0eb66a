"""An in-memory DashboardSource with the shapes the daemon's gives, and a server that mounts the routes.

Used by tests/integration/test_dashboard_routes.py and, to check the page itself without a daemon,
by the browser test. The figures are plain values a test can change between two reads.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette

from berth.dashboard import routes
from berth.errors import NotFound


class FakeSource:
    def __init__(self, now: float | None = None) -> None:
        self.now = now if now is not None else time.time()
        self.apis: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []

    def add(self, name: str, status: str = "live", requested: int = 2, codes: tuple[int, int, int] = (120, 3, 1),
            monitoring: str | None = "classification") -> dict[str, Any]:
        ok, client, server = codes
        api = {"name": name, "status": status, "up_to_date": requested, "stale": 0, "requested": requested,
               "failed": 0, "version": "v-" + name, "serving_version": "v-" + name, "endpoint": "/" + name,
               "url": "http://127.0.0.1:8888/" + name, "created_at": self.now - 7200, "last_update": self.now - 3600,
               "metrics": {"2XX": ok, "4XX": client, "5XX": server, "avg_request_seconds": 0.012,
                           "requests": ok + client + server},
               "in_flight": 1, "error": None, "traceback": None, "deleting": False, "monitoring": monitoring}
        self.apis[name] = api
        return api

    def overview(self) -> list[dict[str, Any]]:
        self.calls.append("overview")
        return [{k: v for k, v in api.items() if k != "monitoring"} for api in self.apis.values()]

    def api(self, name: str) -> dict[str, Any]:
        self.calls.append("api")
        if name not in self.apis:
            raise NotFound(f"no API named {name!r}")
        api = {k: v for k, v in self.apis[name].items() if k != "monitoring"}
        return {**api, "spec": {}, "spec_file": "berth.yaml",
                "replicas": [{"id": f"{name}-{i}", "version": api["version"], "status": "ready", "pid": 1000 + i,
                              "processes": 1, "restarts": 0, "age": 3000.0, "last_error": None,
                              "pending_reason": None, "cpu": 1.0, "mem": None, "gpus": [], "rss": 50 << 20}
                             for i in range(api["requested"])],
                "versions": [{"version": api["version"], "deployed_at": self.now - 3600},
                             {"version": "v-old", "deployed_at": self.now - 7200}],
                "events": [{"at": self.now - 3600, "kind": "deploy", "message": f"updated (version {api['version']})"},
                           {"at": self.now - 1800, "kind": "scale", "message": "replicas 1 -> 2 (autoscaler)"},
                           {"at": self.now - 900, "kind": "replica_failed",
                            "message": f"replica {name}-0 exited with code 1"}],
                "autoscaler": [{"at": self.now - 1800, "avg_in_flight": 3.2, "target_replica_concurrency": 2.0,
                                "raw_recommendation": 1.6, "current_replicas": 1, "downscale_factor_floor": 0,
                                "upscale_factor_ceil": 2, "recommendation": 2, "downscale_stabilization_floor": 1,
                                "upscale_stabilization_ceil": 2, "request": 2},
                               {"at": self.now - 1790, "avg_in_flight": 3.0, "target_replica_concurrency": 2.0,
                                "raw_recommendation": 1.5, "current_replicas": 2, "downscale_factor_floor": 1,
                                "upscale_factor_ceil": 4, "recommendation": 2, "downscale_stabilization_floor": 2,
                                "upscale_stabilization_ceil": 2, "request": 2}]}

    def series(self, name: str, since: float, until: float) -> list[dict[str, Any]]:
        self.calls.append("series")
        if name not in self.apis:
            return []
        first = int(max(since, self.now - 3 * 3600) // 60) * 60
        return [{"start": float(start), "seconds": 60.0, "code_2xx": 100 + start % 7, "code_4xx": start % 3,
                 "code_5xx": 1 if start % 11 == 0 else 0, "count": 101 + start % 7 + start % 3,
                 "seconds_sum": 1.2, "p50": 0.008, "p99": 0.040, "replicas_ready": 2, "replicas_desired": 2,
                 "in_flight": 0.7} for start in range(first, int(until), 60)]

    def predictions(self, name: str) -> dict[str, Any] | None:
        self.calls.append("predictions")
        kind = self.apis[name]["monitoring"] if name in self.apis else None
        if kind is None:
            return None
        drift = {"psi": 0.04, "verdict": "stable", "baseline": [self.now - 86400, self.now - 3600],
                 "window": [self.now - 3600, self.now]}
        if kind == "classification":
            return {"model_type": kind, "key": None, "summary": {"classes": {"cat": 70, "dog": 25, "bird": 5}},
                    "drift": drift}
        bounds = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
        return {"model_type": kind, "key": "score", "drift": {**drift, "psi": 0.3, "verdict": "drifted"},
                "summary": {"min": 0.05, "max": 4.2, "avg": 1.1,
                            "histogram": {"bounds": bounds, "counts": [3, 10, 25, 30, 12, 5, 0], "sum": 93.0,
                                          "count": 85}}}

    def metrics_text(self) -> bytes:
        return b"# fake\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(source: FakeSource) -> Iterator[str]:
    """The dashboard routes over a fake source, on a real port in a thread; yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes(source)), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the dashboard test server did not start within 10 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        server.force_exit = True  # open event streams would otherwise hold the shutdown
        thread.join(timeout=10)
