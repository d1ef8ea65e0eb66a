"""`berth predict`, `berth logs`, `berth delete`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

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
              help="Lines of past output per replica (0: only new output, with -f).")
@click.option("-v", "--verbose", is_flag=True, help="Show berth's own frames in tracebacks too.")
@env_option
@pass_context
def logs(obj: CLIContext, api: str, follow: bool, tail: int, verbose: bool) -> None:
    """Print the output of API's replicas (prints and tracebacks of the predictor included)."""
    frames = None if verbose else FrameFilter()
    with obj.naming_known(api):
        for chunk in obj.backend().logs(api, follow=follow, tail=tail):
            _write(chunk if frames is None else frames.feed(chunk))
    if frames is not None:
        _write(frames.flush())


def _write(text: str) -> None:
    if text:
        sys.stdout.write(text)
        sys.stdout.flush()


@click.command()
@click.argument("api")
@env_option
@pass_context
def delete(obj: CLIContext, api: str) -> None:
    """Drain and stop API's replicas and remove it."""
    if obj.backend().delete(api).stopped:
        obj.console.print(f"deleted {api}")
    else:
        obj.console.print(f"deleted {api}; its replicas are still finishing their requests")
