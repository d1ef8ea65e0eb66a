"""`berth cluster up|status|down`: the local daemon, managed explicitly."""

from __future__ import annotations

import os
from typing import Any

import click

from berth.cli.context import CLIContext, pass_context
from berth.config.units import parse_quantity
from berth.control.launcher import StartOptions, daemon_info, stop_daemon
from berth.errors import DaemonUnavailable


@click.group()
def cluster() -> None:
    """Start, inspect and stop the local control plane."""


@cluster.command()
@click.option("--foreground", is_flag=True, help="Run in this terminal instead of the background.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Gateway port (default: --port / BERTH_PORT).")
@click.option("--host", default=None, help="Gateway address (default 127.0.0.1).")
@click.option("--gateway-workers", type=click.IntRange(1, 64), default=None,
              help="Gateway processes sharing the port (default: 1 up to 4 cores, then one per 4 cores).")
@click.option("--readiness-timeout", type=click.FloatRange(min=1), default=None,
              help="Seconds a replica may take to become ready before it counts as failed (default 600).")
@click.option("--max-body-size", default=None, metavar="QUANTITY",
              help="Largest request body the gateway accepts, e.g. 64Mi (default) or 1Gi; larger ones get a 413.")
@pass_context
def up(obj: CLIContext, foreground: bool, port: int | None, host: str | None, gateway_workers: int | None,
       readiness_timeout: float | None, max_body_size: str | None) -> None:
    """Start the daemon (supervisor, gateway workers, control plane)."""
    obj.port = port or obj.port
    obj.host = host or obj.host
    gateway: dict[str, Any] = {}
    if max_body_size:
        gateway["max_body_size"] = _bytes(max_body_size)
    options = StartOptions(readiness_timeout=readiness_timeout, gateway_workers=gateway_workers, gateway=gateway)
    info = daemon_info(obj.paths)
    if info is not None:
        obj.console.print(f"berth is already running (pid {info['pid']}, gateway "
                          f"http://{info['host']}:{info['port']})")
        return
    if foreground:
        _run_in_foreground(obj, options)
        return
    obj.ensure_daemon(options)


def _run_in_foreground(obj: CLIContext, options: StartOptions) -> None:
    # Only the supervisor runs in this process; it starts the daemon and the gateways as its children.
    from berth.control.master import SupervisorSettings, default_gateway_workers, run

    obj.err.print(f"berth daemon: gateway http://{obj.host}:{obj.port}, home {obj.home} (Ctrl-C stops it)")
    daemon_options = ("--readiness-timeout", str(options.readiness_timeout)) if options.readiness_timeout else ()
    settings = SupervisorSettings(
        paths=obj.paths, host=obj.host, port=obj.port, daemon_options=daemon_options,
        gateway_workers=options.gateway_workers or default_gateway_workers(os.cpu_count() or 1),
        gateway_settings=options.gateway)
    code = run(settings)
    if code:
        raise SystemExit(code)


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
