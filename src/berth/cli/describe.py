"""`berth describe` (replicas, placement, versions, autoscaler decisions, events) and `berth refresh`."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import RenderableType
from rich.markup import escape
from rich.table import Table

from berth.cli import render
from berth.cli.context import CLIContext, env_option, pass_context
from berth.cli.render import Column
from berth.config.units import format_bytes


@click.command()
@click.argument("api")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def describe(obj: CLIContext, api: str, output: str) -> None:
    """Everything about API: replicas and their placement, versions, autoscaler decisions, events."""
    data = obj.backend().describe(api)
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    now = time.time()
    console = obj.console
    serving = "" if data["serving_version"] == data["version"] else f" (serving {data['serving_version']})"
    console.print(f"[bold]{escape(data['name'])}[/bold]  {render.styled(data['status'])}  "
                  f"requested {data['requested']}  version {data['version']}{serving}"
                  + (f"  in flight {data['in_flight']}" if data.get("in_flight") is not None else ""), soft_wrap=True)
    console.print(f"endpoint: {data['url']}", soft_wrap=True)
    if data.get("access"):
        console.print(f"reach it: {escape(data['access'])}", soft_wrap=True)
    if "environment" in data:  # the local daemon's: a version's Python environment
        console.print(f"python: {_environment(data.get('environment'))}", soft_wrap=True, highlight=False)
    if data.get("error"):
        console.print(f"[red]error:[/red] {escape(data['error'])}", soft_wrap=True)
    console.print()
    for part in _replicas(data["replicas"], console.width) if data["replicas"] else ["no replicas"]:
        console.print(part, soft_wrap=isinstance(part, str))
    if data.get("autoscaler"):
        console.print("\n[bold]autoscaler decisions[/bold] (every 10 s)")
        console.print(_decisions(data["autoscaler"], now, console.width))
    console.print("\n[bold]versions[/bold]")
    for version in data.get("versions", []):
        console.print(f"  {version['version']}  deployed {render.age(now - version['deployed_at'])} ago")
    console.print("\n[bold]events[/bold]")
    for event in data.get("events", [])[-15:]:
        console.print(f"  {render.age(now - event['at']):>4} ago  {escape(event['message'])}", soft_wrap=True)


def _environment(environment: dict[str, Any] | None) -> str:
    if not environment:
        return "berth's own environment (the project has no requirements it lacks)"
    if environment.get("missing"):
        return f"environment {environment['key']} (missing: deploy again to rebuild it)"
    packages = environment.get("packages") or []
    listed = ", ".join(packages[:6]) + (f", and {len(packages) - 6} more" if len(packages) > 6 else "")
    return (f"environment {environment['key']} from {', '.join(environment.get('files') or [])}: "
            f"{len(packages)} package(s) of its own, {format_bytes(environment.get('bytes') or 0)}"
            + (f" ({escape(listed)})" if listed else "") + "; the rest from berth's own")


def _replicas(replicas: list[dict[str, Any]], width: int) -> list[RenderableType]:
    """The replica table, with why each is pending or failed in its last column when that fits the
    terminal, else as lines under it."""
    rows = [_replica_row(r) for r in replicas]
    notes = [escape(r.get("pending_reason") or r.get("last_error") or "") for r in replicas]
    columns: list[str | Column] = [Column("replica", "fold"), Column("version", "fold"), "status", "pid",
                                   "restarts", "age", Column("compute", "wrap"), "rss"]
    with_notes = [*columns, Column("note", "wrap")]
    rows_with_notes = [[*row, note] for row, note in zip(rows, notes, strict=True)]
    if not any(notes) or render.fits(with_notes, rows_with_notes, width):
        return [render.table(*with_notes, rows=rows_with_notes, width=width)]
    below = [f"  {escape(r['id'])}: {note}" for r, note in zip(replicas, notes, strict=True) if note]
    return [render.table(*columns, rows=rows, width=width), *below]


def _replica_row(r: dict[str, Any]) -> list[str]:
    # One word a resource, so a narrow terminal wraps between them: `0.5cpu 512Mi gpu0:0.5`.
    gpus = " ".join(f"gpu{index}:{share:g}" for index, share in r["gpus"])
    placement = " ".join(part for part in (f"{r['cpu']:g}cpu" if r["cpu"] is not None else "",
                                           format_bytes(r["mem"]) if r["mem"] else "", gpus) if part) or "-"
    rss = f"{r['rss'] / 2**20:.0f}Mi" if r["rss"] else "-"
    return [escape(r["id"]), escape(r["version"]), render.styled(r["status"]), str(r["pid"] or "-"),
            str(r["restarts"]), render.age(r["age"]), escape(placement), rss]


def _decisions(decisions: list[dict[str, Any]], now: float, width: int) -> Table:
    rows = [[render.age(now - d["at"]), f"{d['avg_in_flight']:.3g}", f"{d['target_replica_concurrency']:g}",
             f"{d['raw_recommendation']:.3g}", str(d["current_replicas"]), str(d["downscale_factor_floor"]),
             str(d["upscale_factor_ceil"]), str(d["recommendation"]), _dash(d["downscale_stabilization_floor"]),
             _dash(d["upscale_stabilization_ceil"]), str(d["request"])] for d in decisions[-8:]]
    # Eleven columns in 80: two-word headers wrap onto two lines, and the long single words are said
    # shorter on purpose ("now": the replicas running, "recom.": recommended), never cut to `recomm…`.
    wrap = [Column(header, "wrap") for header in ("ago", "avg in flight", "target", "raw", "now", "factor floor",
                                                  "factor ceil", "recom.", "stab. floor", "stab. ceil",
                                                  "request")]
    return render.table(*wrap, rows=rows, width=width)


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


@click.command()
@click.argument("api")
@env_option
@pass_context
def refresh(obj: CLIContext, api: str) -> None:
    """Restart every replica of API without downtime (a rolling update to the same code)."""
    with obj.naming_known(api):
        change = obj.backend().refresh(api)
    obj.console.print(f"restarting {escape(change.api)} (version {change.version})")
