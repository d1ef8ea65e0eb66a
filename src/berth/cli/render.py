"""Formatting for tables: ages, latencies, counts."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.cells import cell_len
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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


@dataclass(frozen=True)
class Column:
    """A column, and how it gives way when the terminal is narrow.

    `shrink`: "" keeps its width; "wrap" wraps at spaces, down to its longest word (headers such as
    `last update` become two lines); "fold" breaks its values anywhere, down to FOLD_MIN (long names).
    Headers are never cut to `stat…`: what must give way wraps or folds, in that order.
    """

    header: str
    shrink: str = ""


FOLD_MIN = 8
GAP = 2  # the padding between two columns: one cell each side


def table(*columns: str | Column, rows: list[list[str]] | None = None, width: int | None = None) -> Table:
    """A borderless table; with `width`, the columns that may give way are narrowed until the rows fit it."""
    specs = [c if isinstance(c, Column) else Column(c) for c in columns]
    rows = rows or []
    widths = _fit(specs, rows, width) if width is not None else None
    result = Table(box=None, header_style="bold", pad_edge=False)
    for index, spec in enumerate(specs):
        limit = widths[index] if widths is not None else None
        result.add_column(spec.header, no_wrap=not spec.shrink, overflow="fold", max_width=limit)
    if widths is not None and _total(widths) > (width or 0):  # narrower than anything can fit: fold it all
        for column in result.columns:
            column.no_wrap = False
    for row in rows:
        result.add_row(*row)
    return result


def fits(columns: list[str | Column], rows: list[list[str]], width: int) -> bool:
    """Whether the rows fit `width` once the columns that may give way have given way."""
    specs = [c if isinstance(c, Column) else Column(c) for c in columns]
    return _total(_fit(specs, rows, width)) <= width


def _fit(specs: list[Column], rows: list[list[str]], width: int | None) -> list[int]:
    cells = [[Text.from_markup(spec.header).plain, *(Text.from_markup(row[i]).plain for row in rows)]
             for i, spec in enumerate(specs)]
    widths = [max(cell_len(cell) for cell in column) for column in cells]
    excess = _total(widths) - (width or 0)
    for mode in ("wrap", "fold"):
        # Right to left: the last columns (errors, notes) give way before the name and the status.
        for index, spec in reversed(list(enumerate(specs))):
            if excess <= 0 or spec.shrink != mode:
                continue
            floor = (max(cell_len(word) for cell in cells[index] for word in cell.split() or [""])
                     if mode == "wrap" else min(widths[index], FOLD_MIN))
            cut = min(excess, widths[index] - floor)
            widths[index] -= cut
            excess -= cut
    return widths


def _total(widths: list[int]) -> int:
    return sum(widths) + GAP * (len(widths) - 1)


def api_table(apis: list[dict[str, Any]], now: float, width: int | None = None) -> Table:
    rows = []
    for api in apis:
        metrics = api.get("metrics") or {}
        rows.append([
            escape(api["name"]), styled(api["status"]), str(api["up_to_date"]), str(api["requested"]),
            age(now - api["last_update"]), latency(metrics.get("avg_request_seconds")),
            str(metrics.get("2XX", 0)), str(metrics.get("4XX", 0)), str(metrics.get("5XX", 0)),
        ])
    return table(Column("api", "fold"), Column("status", "wrap"), "up-to-date", "requested",
                 Column("last update", "wrap"), Column("avg request", "wrap"), "2XX", "4XX", "5XX",
                 rows=rows, width=width)


def replica_table(replicas: list[dict[str, Any]], width: int | None = None) -> Table:
    rows = [[escape(r["id"]), styled(r["status"]), str(r["pid"] or "-"), str(r["restarts"]), age(r["age"]),
             escape(_short(r.get("last_error")))] for r in replicas]
    return table(Column("replica", "fold"), "status", "pid", "restarts", "age", Column("last error", "wrap"),
                 rows=rows, width=width)


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
