"""`berth predict`, `berth logs`, `berth delete`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

from berth.cli.context import CLIContext, env_option, pass_context
from berth.cli.tracebacks import FrameFilter
from berth.errors import BerthError


@click.command()
@click.argument("api")
@click.argument("file", type=click.Path(path_type=Path))
@env_option
@pass_context
def predict(obj: CLIContext, api: str, file: Path) -> None:
    """POST FILE (JSON) to API's endpoint and print the response."""
    if not file.is_file():
        raise BerthError(f"{file}: no such file", hint="pass a JSON file holding the request payload")
    body = file.read_bytes()
    try:
        json.loads(body)
    except ValueError as exc:
        raise BerthError(f"{file} is not valid JSON: {exc}") from exc
    url = obj.backend().url(api)
    try:
        response = httpx.post(url, content=body, headers={"Content-Type": "application/json"}, timeout=300)
    except httpx.HTTPError as exc:
        raise BerthError(f"request to {url} failed: {exc}") from exc
    text = response.text
    if response.status_code >= 400:
        raise BerthError(f"{api} answered {response.status_code}: {text}",
                         hint=f"request id {response.headers.get('x-request-id')}; see `berth logs {api}`")
    click.echo(text)


@click.command()
@click.argument("api")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output.")
@click.option("--tail", type=click.IntRange(min=0), default=200, show_default=True,
              help="Lines of past output per replica (0: only new output, with -f); with --requests, requests "
                   "in all.")
@click.option("-v", "--verbose", is_flag=True, help="Show berth's own frames in tracebacks too.")
@click.option("--requests", "requests", is_flag=True,
              help="The gateway's request log instead: time, request id, status, latency, replica, reason.")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty",
              help="With --requests: json prints one JSON object a line.")
@env_option
@pass_context
def logs(obj: CLIContext, api: str, follow: bool, tail: int, verbose: bool, requests: bool, output: str) -> None:
    """Print the output of API's replicas (prints and tracebacks of the predictor included), or with
    --requests one line per request the gateway served."""
    if requests:
        shown = 0
        with obj.naming_known(api):
            for entry in obj.backend().request_logs(api, follow=follow, tail=tail):
                _write(json.dumps(entry, separators=(",", ":")) + "\n" if output == "json" else request_line(entry))
                shown += 1
        if not shown and tail and not follow:
            obj.err.print(f"no requests logged for {api} yet (sampled at its networking.request_log_sample_rate)")
        return
    if output == "json":
        raise BerthError("-o json goes with --requests (replica output is plain text)",
                         hint=f"run `berth logs {api} --requests -o json`")
    frames = None if verbose else FrameFilter()
    with obj.naming_known(api):
        for chunk in obj.backend().logs(api, follow=follow, tail=tail):
            _write(chunk if frames is None else frames.feed(chunk))
    if frames is not None:
        _write(frames.flush())


def request_line(entry: dict[str, Any]) -> str:
    """`2026-12-02 10:00:01.234  <request id>  200    12.3 ms  <replica>  <reason>`: the fixed-width
    columns first, so lines stay aligned in a terminal."""
    ts = float(entry.get("ts") or 0.0)
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    seconds = entry.get("seconds")
    latency = f"{seconds * 1000:9.1f} ms" if isinstance(seconds, int | float) else " " * 12
    fields = [when, str(entry.get("request_id") or "-"), f"{entry.get('status', '-')!s:>3}", latency,
              str(entry.get("replica") or "-")]
    if entry.get("reason"):
        fields.append(str(entry["reason"]))
    return "  ".join(fields) + "\n"


def _write(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


@click.command()
@click.argument("api")
@env_option
@pass_context
def delete(obj: CLIContext, api: str) -> None:
    """Drain and stop API's replicas and remove it (or remove a traffic splitter)."""
    deletion = obj.backend().delete(api)
    if deletion.stopped:
        obj.console.print(f"deleted {api}")
    else:
        obj.console.print(f"deleted {api}; its replicas are still finishing their requests")
    if deletion.keys_removed:
        obj.console.print(f"deleted its {deletion.keys_removed} API key(s) too")
