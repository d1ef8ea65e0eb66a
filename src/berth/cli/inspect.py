"""`berth get`: the one-screen view of every API, or one API with its replicas."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from berth.cli import monitor, render, splitters
from berth.cli.context import CLIContext, env_option, pass_context
from berth.cli.tracebacks import user_frames
from berth.errors import NotFound

WATCH_INTERVAL = 2.0


@click.command()
@click.argument("api", required=False)
@click.option("-w", "--watch", is_flag=True,
              help="Re-run the command every 2 seconds (with -o json: one JSON document a line).")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@click.option("-v", "--verbose", is_flag=True, help="Show berth's own frames in the last error's traceback.")
@click.option("--since", "since", default=None, metavar="WHEN",
              help="Request counts, avg request and predictions over a window: 1h, 30m, 2d, or a date and time "
                   "(default: all time).")
@env_option
@pass_context
def get(obj: CLIContext, api: str | None, watch: bool, output: str, verbose: bool, since: str | None) -> None:
    """List the APIs, or show one API with its endpoint, replicas and prediction monitoring."""
    backend = obj.backend()
    if since is not None:
        monitor.window_seconds(since, time.time())  # a bad value fails before anything is asked

    def fetch() -> Any:
        # Only asked with a window when one is given (a window moves with each refresh of -w).
        window = None if since is None else monitor.window_seconds(since, time.time())
        if api is None:
            apis = backend.list_apis() if window is None else backend.list_apis(window)
            return apis + splitters.listed(backend)  # splitters carry "kind": "TrafficSplitter"
        with obj.naming_known(api):
            try:
                return backend.get_api(api) if window is None else backend.get_api(api, window)
            except NotFound:
                found = splitters.find(backend, api)
                if found is None:
                    raise
                return found

    def view() -> list[RenderableType]:
        return _view(fetch(), api, verbose, obj.console.width, since)

    if output == "json" and not watch:
        click.echo(json.dumps(fetch(), indent=2))
    elif output == "json":
        _repeat(lambda: click.echo(json.dumps(fetch(), separators=(",", ":"))))  # JSON lines: one per refresh
    elif not watch:
        _print(obj, view())
    elif not obj.console.is_terminal:
        _repeat(lambda: _print(obj, [Text(f"--- {time.strftime('%H:%M:%S')} ---"), *view()]))
    else:
        with Live(Group(*view()), console=obj.console, auto_refresh=False) as live:
            _repeat(lambda: live.update(Group(*view()), refresh=True), first=False)


def _repeat(show: Callable[[], None], first: bool = True) -> None:
    """Show now (unless `first` is False) and again every WATCH_INTERVAL seconds, until interrupted."""
    if first:
        show()
    while True:
        time.sleep(WATCH_INTERVAL)
        show()


def _print(obj: CLIContext, parts: list[RenderableType]) -> None:
    # Flushed at once: a file or pipe reading `get -w` sees each refresh as it happens.
    for part in parts:
        obj.console.print(part, soft_wrap=isinstance(part, Text))
    obj.console.file.flush()


def _view(data: Any, api: str | None, verbose: bool, width: int, since: str | None = None) -> list[RenderableType]:
    now = time.time()
    if api is None:
        if not data:
            return [Text("no APIs are deployed; deploy one with `berth deploy`")]
        split = [doc for doc in data if doc.get("kind") == "TrafficSplitter"]
        apis = [doc for doc in data if doc.get("kind") != "TrafficSplitter"]
        tables: list[RenderableType] = [render.api_table(apis, now, width)] if apis else []
        if split:
            tables += [Text(""), splitters.table(split, now, width)] if tables else [splitters.table(split, now, width)]
        return [*tables, *_window_note(since)]
    if data.get("kind") == "TrafficSplitter":
        return splitters.detail(data, width)
    return _detail(data, now, verbose, width, since)


def _window_note(since: str | None) -> list[RenderableType]:
    if since is None:
        return []
    return [Text(f"avg request and 2XX/4XX/5XX: the last {since} (from the request history)", style="dim")]


def _detail(api: dict[str, Any], now: float, verbose: bool, width: int,
            since: str | None = None) -> list[RenderableType]:
    parts: list[RenderableType] = [render.api_table([api], now, width), *_window_note(since), Text("")]
    parts.append(Text.from_markup(f"[bold]endpoint:[/bold] {escape(api['url'])}"))
    if api.get("access"):  # a cluster without a Gateway: the command that makes the endpoint reachable
        parts.append(Text.from_markup(f"[bold]reach it:[/bold] {escape(api['access'])}"))
    parts.append(Text.from_markup(f"[bold]example:[/bold]  {escape(render.curl_example(api))}"))
    if api.get("error"):
        parts.append(Text.from_markup(f"\n[red]error:[/red] {escape(api['error'])}"))
        if api.get("traceback"):
            trace = api["traceback"] if verbose else user_frames(api["traceback"])
            parts.append(Text(trace.rstrip(), style="dim"))
    parts.append(Text(""))
    if api["replicas"]:
        parts.append(render.replica_table(api["replicas"], width))
    else:
        parts.append(Text("no replicas"))
    parts += monitor.prediction_block(api, since)
    events = api.get("events") or []
    if events:
        parts.append(Text.from_markup("\n[bold]recent events[/bold]"))
        for event in events[-8:]:
            parts.append(Text(f"  {render.age(now - event['at'])} ago  {event['message']}"))
    return parts
