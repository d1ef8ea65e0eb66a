"""`berth cluster up|status|down`: the local daemon, managed explicitly."""

from __future__ import annotations

import dataclasses
import os

import click

from berth.cli.context import CLIContext, pass_context
from berth.config.units import parse_quantity
from berth.control.launcher import daemon_info, stop_daemon
from berth.errors import DaemonUnavailable


@click.group()
def cluster() -> None:
    """Start, inspect and stop the local control plane."""


@cluster.command()
@click.option("--foreground", is_flag=True, help="Run in this terminal instead of the background.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Gateway port (default: --port / BERTH_PORT).")
@click.option("--host", default=None, help="Gateway address (default 127.0.0.1).")
@click.option("--readiness-timeout", type=click.FloatRange(min=1), default=None,
              help="Seconds a replica may take to become ready before it counts as failed (default 600).")
@click.option("--max-body-size", default=None, metavar="QUANTITY",
              help="Largest request body the gateway accepts, e.g. 64Mi (default) or 1Gi; larger ones get a 413.")
@pass_context
def up(obj: CLIContext, foreground: bool, port: int | None, host: str | None,
       readiness_timeout: float | None, max_body_size: str | None) -> None:
    """Start the daemon (gateway, supervisor, management API)."""
    obj.port = port or obj.port
    obj.host = host or obj.host
    body_limit = _bytes(max_body_size) if max_body_size else None
    info = daemon_info(obj.paths)
    if info is not None:
        obj.console.print(f"berth is already running (pid {info['pid']}, gateway "
                          f"http://{info['host']}:{info['port']})")
        return
    if foreground:
        # The daemon's modules (uvicorn, the gateway, the reconciler) load only here: every other
        # command stays a light client.
        from berth.control.daemon import DaemonSettings, run
        from berth.control.reconciler import Timeouts

        obj.err.print(f"berth daemon: gateway http://{obj.host}:{obj.port}, home {obj.home} (Ctrl-C stops it)")
        timeouts = Timeouts(readiness=readiness_timeout) if readiness_timeout else Timeouts()
        settings = DaemonSettings(paths=obj.paths, host=obj.host, port=obj.port, timeouts=timeouts)
        if body_limit:
            settings = dataclasses.replace(settings, max_body_size=body_limit)
        run(settings, os.environ)
        return
    obj.ensure_daemon(readiness_timeout, body_limit)


def _bytes(quantity: str) -> int:
    try:
        value = int(parse_quantity(quantity))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-body-size") from exc
    if value < 1024:
        raise click.BadParameter(f"at least 1Ki (got {quantity})", param_hint="--max-body-size")
    return value


@cluster.command()
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@pass_context
def status(obj: CLIContext, output: str) -> None:
    """Say whether the daemon runs, and where."""
    info = daemon_info(obj.paths)
    if info is None:
        raise DaemonUnavailable(f"the berth daemon is not running (home {obj.home})",
                                hint="start it with `berth cluster up`")
    if output == "json":
        import json

        click.echo(json.dumps(info, indent=2))
        return
    obj.console.print(f"berth {info['version']} running: pid {info['pid']}, gateway "
                      f"http://{info['host']}:{info['port']}, {info['apis']} API(s), home {info['home']}")


@cluster.command()
@pass_context
def down(obj: CLIContext) -> None:
    """Drain every replica and stop the daemon. Deployed APIs come back at the next `cluster up`."""
    if stop_daemon(obj.paths):
        obj.console.print("berth daemon stopped")
    else:
        obj.console.print("berth daemon was not running")
