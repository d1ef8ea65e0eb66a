"""Formatting for tables: ages, latencies, counts."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from rich.table import Table

from berth.core.status import APIStatus, ReplicaState

# Keyed by core's enums so a renamed status fails here at import instead of silently losing its colour;
# they are str enums, so the plain strings of a JSON document find their entries as they are.
STATUS_STYLE: dict[str, str] = {
    APIStatus.LIVE: "green", APIStatus.UPDATING: "yellow", APIStatus.ERROR: "red", APIStatus.ERROR_OOM: "red",
    APIStatus.COMPUTE_UNAVAILABLE: "red",
    ReplicaState.READY: "green", ReplicaState.INITIALIZING: "yellow", ReplicaState.PENDING: "yellow",
    ReplicaState.TERMINATING: "dim", ReplicaState.FAILED: "red", ReplicaState.KILLED: "red",
    ReplicaState.KILLED_OOM: "red",
}


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.3g} ms" if ms < 1000 else f"{seconds:.3g} s"


def styled(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    return table


def api_table(apis: list[dict[str, Any]], now: float) -> Table:
    rows = table("api", "status", "up-to-date", "requested", "last update", "avg request", "2XX", "4XX", "5XX")
    rows.columns[0].min_width = max((len(api["name"]) for api in apis), default=3)
    for api in apis:
        metrics = api.get("metrics") or {}
        rows.add_row(
            api["name"], styled(api["status"]), str(api["up_to_date"]), str(api["requested"]),
            age(now - api["last_update"]), latency(metrics.get("avg_request_seconds")),
            str(metrics.get("2XX", 0)), str(metrics.get("4XX", 0)), str(metrics.get("5XX", 0)),
        )
    return rows


def replica_table(replicas: list[dict[str, Any]]) -> Table:
    rows = table("replica", "status", "pid", "restarts", "age", "last error")
    for replica in replicas:
        rows.add_row(replica["id"], styled(replica["status"]), str(replica["pid"] or "-"),
                      str(replica["restarts"]), age(replica["age"]), _short(replica.get("last_error")))
    return rows


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.splitlines()[0]
    return line if len(line) <= width else line[: width - 1] + "…"


def curl_example(api: dict[str, Any]) -> str:
    """A command to paste: the project's sample.json when it ships one, else a placeholder body."""
    sample = Path(api.get("spec_file") or ".").parent / "sample.json"
    data = f"@{sample}" if sample.is_file() else json.dumps({"key": "value"})
    return (f"curl -X POST {api['url']} -H 'Content-Type: application/json' -d {shlex.quote(data)}")
