"""`berth get`: the one-screen view of every API, or one API with its replicas."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from berth.cli import render
from berth.cli.context import CLIContext, env_option, pass_context

WATCH_INTERVAL = 2.0


@click.command()
@click.argument("api", required=False)
@click.option("-w", "--watch", is_flag=True, help="Re-run the command every 2 seconds.")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def get(obj: CLIContext, api: str | None, watch: bool, output: str) -> None:
    """List the APIs, or show one API with its endpoint and replicas."""
    backend = obj.backend()

    def fetch() -> Any:
        return backend.get_api(api) if api else backend.list_apis()

    if output == "json":
        click.echo(json.dumps(fetch(), indent=2))
        return
    if not watch:
        for part in _view(fetch(), api):
            obj.console.print(part, soft_wrap=True)
        return
    with Live(Group(*_view(fetch(), api)), console=obj.console, auto_refresh=False) as live:
        while True:
            time.sleep(WATCH_INTERVAL)
            live.update(Group(*_view(fetch(), api)), refresh=True)


def _view(data: Any, api: str | None) -> list[RenderableType]:
    now = time.time()
    if api is None:
        if not data:
            return [Text("no APIs are deployed; deploy one with `berth deploy`")]
        return [render.api_table(data, now)]
    return _detail(data, now)


def _detail(api: dict[str, Any], now: float) -> list[RenderableType]:
    parts: list[RenderableType] = [render.api_table([api], now), Text("")]
    parts.append(Text.from_markup(f"[bold]endpoint:[/bold] {escape(api['url'])}"))
    parts.append(Text.from_markup(f"[bold]example:[/bold]  {escape(render.curl_example(api))}"))
    if api.get("error"):
        parts.append(Text.from_markup(f"\n[red]error:[/red] {escape(api['error'])}"))
        if api.get("traceback"):
            parts.append(Text(api["traceback"].rstrip(), style="dim"))
    parts.append(Text(""))
    if api["replicas"]:
        parts.append(render.replica_table(api["replicas"]))
    else:
        parts.append(Text("no replicas"))
    events = api.get("events") or []
    if events:
        parts.append(Text.from_markup("\n[bold]recent events[/bold]"))
        for event in events[-8:]:
            parts.append(Text(f"  {render.age(now - event['at'])} ago  {event['message']}"))
    return parts
