"""How `berth get` shows traffic splitters: a table beside the APIs', and one splitter's backends."""

from __future__ import annotations

import time
from typing import Any

from rich.console import RenderableType
from rich.markup import escape
from rich.text import Text

from berth.cli import render
from berth.cli.render import Column
from berth.errors import BerthError, NotFound


def listed(backend: Any) -> list[dict[str, Any]]:
    """The backend's splitters; none from a backend that has no such notion."""
    lister = getattr(backend, "list_splitters", None)
    if lister is None:
        return []
    try:
        return list(lister())
    except BerthError:  # a daemon from before splitters (no such route): its APIs are still worth listing
        return []


def find(backend: Any, name: str) -> dict[str, Any] | None:
    """The splitter of that name, or None (then the caller's NotFound about APIs stands)."""
    getter = getattr(backend, "get_splitter", None)
    if getter is None:
        return None
    try:
        return dict(getter(name))
    except NotFound:
        return None
    except BerthError:
        return None  # a daemon too old to know splitters: the API error is the one to show


def _backends(splitter: dict[str, Any]) -> str:
    parts = [f"{api['name']} {'shadow' if api['shadow'] else str(api['weight']) + '%'}" for api in splitter["apis"]]
    return ", ".join(parts)


def table(splitters: list[dict[str, Any]], now: float, width: int | None = None) -> RenderableType:
    rows = [[escape(s["name"]), escape(s["endpoint"]), escape(_backends(s)), str(s["requests"]),
             render.age(now - s["last_update"])] for s in splitters]
    return render.table(Column("traffic splitter", "fold"), "endpoint", Column("apis", "wrap"), "requests",
                        Column("last update", "wrap"), rows=rows, width=width)


def detail(splitter: dict[str, Any], width: int | None = None) -> list[RenderableType]:
    now = time.time()
    parts: list[RenderableType] = [table([splitter], now, width), Text("")]
    parts.append(Text.from_markup(f"[bold]endpoint:[/bold] {escape(splitter['url'])}"))
    if splitter.get("split_by"):
        parts.append(Text.from_markup(f"[bold]split by:[/bold] {escape(splitter['split_by'])} "
                                      "(requests without it: weighted round robin)"))
    parts.append(Text(""))
    rows = []
    for api in splitter["apis"]:
        extra = (f"timeouts {api['timeouts']}, errors {api['errors']}, dropped {api['dropped']}"
                 if api["shadow"] else "")
        rows.append([escape(api["name"]), "shadow" if api["shadow"] else f"{api['weight']}%",
                     render.styled(api["status"]), str(api["requests"]), str(api["2XX"]), str(api["4XX"]),
                     str(api["5XX"]), extra])
    parts.append(render.table(Column("api", "fold"), "weight", Column("status", "wrap"), "requests", "2XX", "4XX",
                              "5XX", Column("shadow copies", "wrap"), rows=rows, width=width))
    parts.append(Text("requests: through this splitter, since the gateway workers started; a shadow's "
                      "answers are only counted", style="dim"))
    return parts
