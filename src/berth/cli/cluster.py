"""`berth cluster up|status|down`: the local daemon, managed explicitly."""

from __future__ import annotations

import os
from typing import Any

import click

from berth.cli.context import CLIContext, env_option, pass_context
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
@click.option("--max-request-line", default=None, metavar="QUANTITY",
              help="Longest request line (default 8Ki); longer ones get a 414.")
@click.option("--max-header-size", default=None, metavar="QUANTITY",
              help="Largest header block (default 64Ki); larger ones get a 431.")
@click.option("--max-connections", type=click.IntRange(min=1), default=None,
              help="Client connections per gateway worker (default 10000, capped by the descriptor limit).")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Time a client has to send a request's head (default 60).")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Longest pause between two reads of a request body (default 60).")
@click.option("--keep-alive-timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Idle time before a keep-alive client connection is closed (default 75).")
@click.option("--upstream-idle-timeout", type=click.FloatRange(min=0.1), default=None, metavar="SECONDS",
              help="Idle time before a pooled connection to a replica is closed (default 60).")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDRESS",
              help="An address or network (10.0.0.0/8) whose X-Forwarded-For is extended rather than replaced; "
                   "repeat for several.")
@env_option
@pass_context
def up(obj: CLIContext, foreground: bool, port: int | None, host: str | None, gateway_workers: int | None,
       readiness_timeout: float | None, max_body_size: str | None, max_request_line: str | None,
       max_header_size: str | None, max_connections: int | None, header_timeout: float | None,
       body_timeout: float | None, keep_alive_timeout: float | None, upstream_idle_timeout: float | None,
       trusted_proxies: tuple[str, ...]) -> None:
    """Start the daemon (supervisor, gateway workers, control plane)."""
    obj.port = port or obj.port
    obj.host = host or obj.host
    sizes = {"max_body_size": ("--max-body-size", max_body_size),
             "max_request_line": ("--max-request-line", max_request_line),
             "max_header_bytes": ("--max-header-size", max_header_size)}
    gateway: dict[str, Any] = {name: _bytes(value, flag) for name, (flag, value) in sizes.items() if value}
    numbers = {"max_connections": max_connections, "header_timeout": header_timeout, "body_timeout": body_timeout,
               "keep_alive_timeout": keep_alive_timeout, "upstream_idle_timeout": upstream_idle_timeout}
    gateway.update({name: value for name, value in numbers.items() if value is not None})
    if trusted_proxies:
        gateway["trusted_proxies"] = [_network(value) for value in trusted_proxies]
    options = StartOptions(readiness_timeout=readiness_timeout, gateway_workers=gateway_workers, gateway=gateway)
    obj.local()
    info = daemon_info(obj.paths)
    if info is not None:
        obj.console.print(f"berth is already running (pid {info['pid']}, gateway "
                          f"http://{info['host']}:{info['port']})")
        if (gateway_workers and gateway_workers != info.get("gateway_workers")) or gateway:
            obj.err.print("its settings are those it was started with; to change them: "
                          "`berth cluster down`, then `berth cluster up` with the new options")
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


def _bytes(quantity: str, flag: str) -> int:
    try:
        value = int(parse_quantity(quantity))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from exc
    if value < 1024:
        raise click.BadParameter(f"at least 1Ki (got {quantity})", param_hint=flag)
    return value


def _network(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError as exc:
        raise click.BadParameter(f"expected an IP address or network such as 10.0.0.0/8 (got {value!r})",
                                 param_hint="--trusted-proxy") from exc


@cluster.command()
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def status(obj: CLIContext, output: str) -> None:
    """Say whether the daemon runs, and where."""
    obj.local()
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
@env_option
@pass_context
def down(obj: CLIContext) -> None:
    """Drain every replica and stop the daemon. Deployed APIs come back at the next `cluster up`."""
    obj.local()
    if stop_daemon(obj.paths):
        obj.console.print("berth daemon stopped")
    else:
        obj.console.print("berth daemon was not running")
