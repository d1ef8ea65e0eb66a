"""`berth deploy` and `berth validate`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.markup import escape

from berth.cli.context import CLIContext, env_option, pass_context
from berth.config.endpoints import owners, taken_endpoints
from berth.config.loader import SpecFile, conflict, load_spec
from berth.core.status import APIStatus
from berth.errors import BerthError, DaemonUnavailable, DeployFailed

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
    _refuse_taken_endpoints(obj, spec)
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
    """Check a spec file without deploying it (and, when the daemon runs, against the APIs it serves)."""
    deployed, unchecked = _deployed_endpoints(obj)
    spec = _load(obj, path, deployed)
    names = ", ".join(api.name for api in spec.apis)
    obj.console.print(f"{spec.path.name} is valid: {len(spec.apis)} API(s): {escape(names)}")
    if unchecked:
        obj.err.print(f"[dim]endpoints not checked against deployed APIs: {escape(unchecked)}[/dim]")


def _load(obj: CLIContext, path: Path, deployed: dict[str, str] | None = None) -> SpecFile:
    spec = load_spec(path, deployed)
    for warning in spec.warnings:
        obj.err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    return spec


def _deployed_endpoints(obj: CLIContext) -> tuple[dict[str, str] | None, str | None]:
    """{endpoint: API name} of what the backend serves, or why it is not known. Never starts the daemon:
    validating a file must not start anything."""
    try:
        return owners(obj.backend().list_apis()), None
    except DaemonUnavailable:
        return None, "the berth daemon is not running"
    except BerthError as exc:  # another environment's backend that cannot be asked: validate the file alone
        return None, exc.message


def _refuse_taken_endpoints(obj: CLIContext, spec: SpecFile) -> None:
    """Endpoints deployed APIs of other names use, refused at their line before anything is sent; the
    daemon checks again under its lock, for deploys racing this one."""
    clashes = taken_endpoints(spec, owners(obj.backend().list_apis()))
    if clashes:
        raise conflict(clashes)


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
