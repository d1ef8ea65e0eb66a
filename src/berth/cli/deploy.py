"""`berth deploy` and `berth validate`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from berth.cli.context import CLIContext, env_option, pass_context
from berth.cli.tracebacks import user_frames
from berth.core.status import APIStatus
from berth.errors import BerthError, DaemonUnavailable, DeployFailed, InsufficientCapacity, WaitTimedOut

if TYPE_CHECKING:
    from berth.backends.base import APIDocument, Backend, Change
    from berth.config.loader import SpecFile

# Statuses a new version does not leave by waiting; `--wait` gives up on them at once.
TERMINAL_ERRORS = frozenset({APIStatus.ERROR, APIStatus.ERROR_OOM, APIStatus.COMPUTE_UNAVAILABLE})
# What the daemon's reasons may begin with that the CLI's own sentence already says.
_SAID_ALREADY = ("compute unavailable: ", "out of memory: ", "error: ")


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--wait", is_flag=True, help="Wait until every API in the file is live.")
@click.option("--timeout", type=float, default=600.0, show_default=True, help="Seconds --wait waits.")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty",
              help="json: the changes; with --wait, once waiting ends, each with its API's final status and url.")
@click.option("-v", "--verbose", is_flag=True, help="With --wait, show berth's own frames in a failure's traceback.")
@env_option
@pass_context
def deploy(obj: CLIContext, path: Path, wait: bool, timeout: float, output: str, verbose: bool) -> None:
    """Deploy the APIs of berth.yaml (or cortex.yaml) in PATH, a folder or a spec file."""
    spec = _load(obj, path)
    obj.ensure_running()
    _refuse_taken_endpoints(obj, spec)
    changes = obj.backend().deploy(spec, verify=wait, progress=_progress(obj))
    names = [api.name for api in spec.apis]
    if output != "json":
        for change in changes:
            obj.console.print(escape(change.message))
        if wait:
            _wait_live(obj, names, timeout, quiet=False, verbose=verbose)
    elif not wait:
        click.echo(json.dumps([change.to_json() for change in changes], indent=2))
    else:
        # One document, printed once waiting is over, failed or not: what a script needs to act on.
        try:
            _wait_live(obj, names, timeout, quiet=True, verbose=verbose)
        finally:
            click.echo(json.dumps(_final_json(obj.backend(), changes), indent=2))


def _progress(obj: CLIContext) -> Callable[[str], None]:
    """Building the project's environment, line by line on stderr (stdout stays the result, for -o json)."""
    def show(message: str) -> None:
        obj.err.print(f"[dim]environment:[/dim] {escape(message)}", highlight=False, soft_wrap=True)
    return show


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@env_option
@pass_context
def validate(obj: CLIContext, path: Path) -> None:
    """Check a spec file without deploying it (and, when the daemon runs, against the APIs it serves)."""
    deployed, unchecked = _deployed_endpoints(obj)
    spec = _load(obj, path, deployed)
    names = ", ".join(api.name for api in spec.apis)
    obj.console.print(f"{spec.path.name} is valid: {len(spec.apis)} API(s): {escape(names)}"
                      + (f"; {len(spec.splitters)} traffic splitter(s): "
                         f"{escape(', '.join(s.name for s in spec.splitters))}" if spec.splitters else ""))
    if unchecked:
        obj.err.print(f"[dim]endpoints not checked against deployed APIs: {escape(unchecked)}[/dim]")


def _load(obj: CLIContext, path: Path, deployed: dict[str, str] | None = None) -> SpecFile:
    from berth.config.loader import load_spec  # the models load only for commands that read a spec
    from berth.pyenv.project import check_project

    spec = load_spec(path, deployed)
    check_project(spec.path.parent)
    for warning in spec.warnings:
        obj.err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    return spec


def _deployed_endpoints(obj: CLIContext) -> tuple[dict[str, str] | None, str | None]:
    """{endpoint: API name} of what the backend serves, or why it is not known. Never starts the daemon:
    validating a file must not start anything."""
    from berth.config.endpoints import owners

    try:
        return owners(obj.backend().list_apis()), None
    except DaemonUnavailable:
        return None, "the berth daemon is not running"
    except BerthError as exc:  # another environment's backend that cannot be asked: validate the file alone
        return None, exc.message


def _refuse_taken_endpoints(obj: CLIContext, spec: SpecFile) -> None:
    """Endpoints deployed APIs of other names use, refused at their line before anything is sent; the
    daemon checks again under its lock, for deploys racing this one."""
    from berth.config.endpoints import owners, taken_endpoints
    from berth.config.loader import conflict

    clashes = taken_endpoints(spec, owners(obj.backend().list_apis()))
    if clashes:
        raise conflict(clashes)


def _wait_live(obj: CLIContext, names: list[str], timeout: float, quiet: bool, verbose: bool = False) -> None:
    backend = obj.backend()
    deadline = time.monotonic() + timeout
    pending = list(names)
    last: dict[str, APIDocument] = {}
    with obj.err.status(f"waiting for {', '.join(pending)} to be live…") as spinner:
        while pending:
            for name in list(pending):
                api = last[name] = backend.get_api(name)
                if api["status"] == APIStatus.LIVE:
                    pending.remove(name)
                    if not quiet:
                        obj.console.print(f"{escape(name)} is live at {api['url']}")
                elif api["status"] in TERMINAL_ERRORS:
                    _report_failure(obj, api, verbose)
            if pending and time.monotonic() > deadline:
                raise _timed_out([last[name] for name in pending], timeout)
            if pending:
                spinner.update(f"waiting for {', '.join(pending)} to be live…")
                time.sleep(0.05)


def _timed_out(pending: list[APIDocument], timeout: float) -> WaitTimedOut:
    states = ", ".join(f"{api['name']} is {api['status']}" for api in pending)
    first = pending[0]["name"]
    return WaitTimedOut(f"not live after {timeout:g}s: {states}",
                        hint=f"it may still become live: `berth get {first}` shows its replicas and events, "
                             f"`berth logs {first}` its output; wait longer with --timeout")


def _report_failure(obj: CLIContext, api: APIDocument, verbose: bool = False) -> None:
    if api.get("traceback"):
        trace = str(api["traceback"]) if verbose else user_frames(str(api["traceback"]))
        obj.err.print(escape(trace.rstrip()), soft_wrap=True, highlight=False)
    raise failure(api)


def failure(api: APIDocument) -> BerthError:
    """The error `--wait` ends with, by cause: what is short on this machine, memory, or the predictor."""
    name, status = api["name"], api["status"]
    reason = _reason(str(api.get("error") or ""))
    logs = f"full output: `berth logs {name}`"
    if status == APIStatus.COMPUTE_UNAVAILABLE:
        return InsufficientCapacity(
            f"{name} does not fit this machine: {reason or 'the compute it asks for is not free'}",
            hint="lower its compute (cpu, mem, gpu) in the spec file, or free capacity (`berth get` lists what "
                 "runs, `berth delete` removes an API); then deploy again")
    if status == APIStatus.ERROR_OOM:
        what = f"{name}: {reason}" if reason.startswith("rollout of") else f"{name} ran out of memory: {reason}"
        return DeployFailed(what, hint=f"raise compute.mem in the spec file (or make the predictor use less "
                                       f"memory) and deploy again; {logs}")
    if reason.startswith("rollout of"):
        return DeployFailed(f"{name}: {reason}", hint=f"{logs}; fix the predictor and deploy again")
    if reason.startswith("the replica ran out of GPU memory"):
        return DeployFailed(f"{name} failed to start: {reason}",
                            hint=f"{logs}; the message says what to change (batch size, compute.gpu)")
    return DeployFailed(f"{name} failed to start: {reason or 'see its logs'}",
                        hint=f"{logs}; fix the predictor and deploy again")


def _reason(error: str) -> str:
    """The daemon's reason without a leading status word the sentence around it already says."""
    for prefix in _SAID_ALREADY:
        if error.startswith(prefix):
            return error[len(prefix):]
    return error


def _final_json(backend: Backend, changes: list[Change]) -> list[dict[str, object]]:
    """Each change with its API's status, url and error as they are now."""
    documents: list[dict[str, object]] = []
    for change in changes:
        try:
            api = backend.get_api(change.api)
        except BerthError as exc:  # the error that ended the wait is reported already; say what is known
            api = {"status": "unknown", "url": None, "error": exc.message}
        documents.append({**change.to_json(), "status": api["status"], "url": api.get("url"),
                          "error": api.get("error")})
    return documents
