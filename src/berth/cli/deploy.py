"""`berth deploy` and `berth validate`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.markup import escape

from berth.cli.context import CLIContext, env_option, pass_context
from berth.config.loader import SpecFile, load_spec
from berth.core.status import APIStatus
from berth.errors import DeployFailed

# Statuses a new version does not leave by waiting; `--wait` gives up on them at once.
TERMINAL_ERRORS = frozenset({APIStatus.ERROR, APIStatus.ERROR_OOM, APIStatus.COMPUTE_UNAVAILABLE})


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--wait", is_flag=True, help="Wait until every API in the file is live.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds --wait waits.")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def deploy(obj: CLIContext, path: Path, wait: bool, timeout: float, output: str) -> None:
    """Deploy the APIs of berth.yaml (or cortex.yaml) in PATH, a folder or a spec file."""
    spec = _load(obj, path)
    obj.ensure_running()
    changes = obj.backend().deploy(spec)
    if output == "json":
        click.echo(json.dumps([change.to_json() for change in changes], indent=2))
    else:
        for change in changes:
            obj.console.print(escape(change.message))
    if wait:
        _wait_live(obj, [api.name for api in spec.apis], timeout, quiet=output == "json")


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@env_option
@pass_context
def validate(obj: CLIContext, path: Path) -> None:
    """Check a spec file without deploying it."""
    spec = _load(obj, path)
    names = ", ".join(api.name for api in spec.apis)
    obj.console.print(f"{spec.path.name} is valid: {len(spec.apis)} API(s): {escape(names)}")


def _load(obj: CLIContext, path: Path) -> SpecFile:
    spec = load_spec(path)
    for warning in spec.warnings:
        obj.err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    return spec


def _wait_live(obj: CLIContext, names: list[str], timeout: float, quiet: bool) -> None:
    backend = obj.backend()
    deadline = time.monotonic() + timeout
    pending = list(names)
    with obj.err.status(f"waiting for {', '.join(pending)} to be live…") as spinner:
        while pending:
            for name in list(pending):
                api = backend.get_api(name)
                if api["status"] == APIStatus.LIVE:
                    pending.remove(name)
                    if not quiet:
                        obj.console.print(f"{escape(name)} is live at {api['url']}")
                elif api["status"] in TERMINAL_ERRORS:
                    _report_failure(obj, api)
            if pending and time.monotonic() > deadline:
                raise DeployFailed(f"{', '.join(pending)} not live after {timeout:g}s",
                                   hint=f"see `berth get {pending[0]}` and `berth logs {pending[0]}`")
            if pending:
                spinner.update(f"waiting for {', '.join(pending)} to be live…")
                time.sleep(0.05)


def _report_failure(obj: CLIContext, api: dict[str, object]) -> None:
    name = api["name"]
    if api.get("traceback"):
        obj.err.print(escape(str(api["traceback"]).rstrip()), soft_wrap=True, highlight=False)
    raise DeployFailed(f"{name} is {api['status']}: {api.get('error') or 'see the logs'}",
                       hint=f"full output: `berth logs {name}`; fix the predictor and deploy again")
