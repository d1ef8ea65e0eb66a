"""`berth cluster up|status|down`: the local daemon, managed explicitly."""

from __future__ import annotations

import json
import os
import shlex
from typing import Any

import click
from click.core import ParameterSource

from berth.cli.context import CLIContext, env_option, pass_context
from berth.config.units import format_bytes, format_duration, parse_duration, parse_quantity
from berth.control.launcher import StartOptions, daemon_info, stop_daemon
from berth.errors import Conflict, DaemonUnavailable

# Every setting `cluster up` takes, as the daemon reports it: (name, flag, how its value reads).
SIZE, SECONDS, DURATION, PLAIN, LIST = "size", "seconds", "duration", "plain", "list"
SETTINGS = (("host", "--host", PLAIN), ("port", "--port", PLAIN), ("gateway_workers", "--gateway-workers", PLAIN),
            ("readiness_timeout", "--readiness-timeout", SECONDS), ("log_retention", "--log-retention", DURATION),
            ("max_log_size", "--max-log-size", SIZE),
            ("max_body_size", "--max-body-size", SIZE), ("max_request_line", "--max-request-line", SIZE),
            ("max_streamed_body_size", "--max-streamed-body-size", SIZE),
            ("max_header_size", "--max-header-size", SIZE), ("max_connections", "--max-connections", PLAIN),
            ("header_timeout", "--header-timeout", SECONDS), ("body_timeout", "--body-timeout", SECONDS),
            ("keep_alive_timeout", "--keep-alive-timeout", SECONDS),
            ("upstream_idle_timeout", "--upstream-idle-timeout", SECONDS),
            ("trusted_proxies", "--trusted-proxy", LIST))
GIVEN = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


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
@click.option("--max-streamed-body-size", default=None, metavar="QUANTITY",
              help="Largest request body streamed to an API whose predict takes body_stream (default: no limit); "
                   "larger ones get a 413.")
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
@click.option("--log-retention", default=None, metavar="DURATION",
              help="How long the logs of deleted APIs and of replicas no longer running are kept, "
                   "e.g. 24h (default) or 30m.")
@click.option("--max-log-size", default=None, metavar="QUANTITY",
              help="Size at which daemon.log or a running replica's log is copied to <name>.1 (replacing the "
                   "previous copy) and emptied, checked every minute, e.g. 64Mi (default) or 1Gi.")
@env_option
@pass_context
def up(obj: CLIContext, foreground: bool, port: int | None, host: str | None, gateway_workers: int | None,
       readiness_timeout: float | None, max_body_size: str | None, max_streamed_body_size: str | None,
       max_request_line: str | None,
       max_header_size: str | None, max_connections: int | None, header_timeout: float | None,
       body_timeout: float | None, keep_alive_timeout: float | None, upstream_idle_timeout: float | None,
       trusted_proxies: tuple[str, ...], log_retention: str | None, max_log_size: str | None) -> None:
    """Start the daemon (supervisor, gateway workers, control plane).

    When it already runs with other settings than the options given, nothing changes and this exits 4
    naming each: settings apply when the daemon starts (`berth cluster down`, then up again)."""
    obj.port = port or obj.port
    obj.host = host or obj.host
    sizes = {"max_body_size": ("--max-body-size", max_body_size),
             "max_streamed_body_size": ("--max-streamed-body-size", max_streamed_body_size),
             "max_request_line": ("--max-request-line", max_request_line),
             "max_header_bytes": ("--max-header-size", max_header_size)}
    gateway: dict[str, Any] = {name: _bytes(value, flag) for name, (flag, value) in sizes.items() if value}
    numbers = {"max_connections": max_connections, "header_timeout": header_timeout, "body_timeout": body_timeout,
               "keep_alive_timeout": keep_alive_timeout, "upstream_idle_timeout": upstream_idle_timeout}
    gateway.update({name: value for name, value in numbers.items() if value is not None})
    if trusted_proxies:
        gateway["trusted_proxies"] = [_network(value) for value in trusted_proxies]
    retention = _duration(log_retention, "--log-retention") if log_retention is not None else None
    log_size = _bytes(max_log_size, "--max-log-size") if max_log_size is not None else None
    options = StartOptions(readiness_timeout=readiness_timeout, gateway_workers=gateway_workers, gateway=gateway,
                           log_retention=retention, max_log_size=log_size)
    obj.local()
    info = daemon_info(obj.paths)
    if info is not None:
        asked = _asked(click.get_current_context(), obj, options)
        _refuse_other_settings(info, asked)
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
    settings = SupervisorSettings(
        paths=obj.paths, host=obj.host, port=obj.port, daemon_options=options.daemon_options(),
        gateway_workers=options.gateway_workers or default_gateway_workers(os.cpu_count() or 1),
        gateway_settings=options.gateway)
    code = run(settings)
    if code:
        raise SystemExit(code)


def _asked(ctx: click.Context, obj: CLIContext, options: StartOptions) -> dict[str, tuple[Any, str]]:
    """The settings the user gave (on the command line, or BERTH_PORT): name -> (value, as an option)."""
    given = {name for name in ctx.params if ctx.get_parameter_source(name) in GIVEN}
    root = ctx.find_root()
    if root.get_parameter_source("port") in GIVEN:
        given.add("port")
    values: dict[str, Any] = {"host": obj.host, "port": obj.port, "gateway_workers": options.gateway_workers,
                              "readiness_timeout": options.readiness_timeout, "log_retention": options.log_retention,
                              "max_log_size": options.max_log_size,
                              **{name: value for name, value in options.gateway.items() if name != "max_header_bytes"},
                              "max_header_size": options.gateway.get("max_header_bytes")}
    asked: dict[str, tuple[Any, str]] = {}
    for name, flag, _ in SETTINGS:
        if name not in given:
            continue
        raw = ctx.params.get(name)
        raw = values[name] if raw is None else raw  # --port given before `cluster`, or as BERTH_PORT
        items = raw if name == "trusted_proxies" else [raw]
        asked[name] = (values[name], " ".join(f"{flag} {shlex.quote(_text(item))}" for item in items))
    return asked


def _refuse_other_settings(info: dict[str, Any], asked: dict[str, tuple[Any, str]]) -> None:
    """Settings apply when the daemon starts; one asked for that differs is said, never silently ignored."""
    running: dict[str, Any] = info.get("settings") or {k: info.get(k) for k in ("host", "port", "gateway_workers")}
    kinds = {name: kind for name, _, kind in SETTINGS}
    differing = [f"  {name}: running {_show(running.get(name), kinds[name])}, asked {_show(value, kinds[name])}"
                 for name, (value, _) in asked.items() if not _same(running.get(name), value, kinds[name])]
    if not differing:
        return
    options = " ".join(shown for _, shown in asked.values())
    raise Conflict(
        f"berth is already running (pid {info['pid']}, gateway http://{info['host']}:{info['port']}) with other "
        f"settings than asked; nothing was changed:\n" + "\n".join(differing),
        hint=f"settings apply when the daemon starts: `berth cluster down && berth cluster up {options}` "
             "(down drains every replica; deployed APIs come back with up)")


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _same(running: Any, asked: Any, kind: str) -> bool:
    if running is None:
        return False
    if kind == LIST:
        return sorted(map(str, running)) == sorted(map(str, asked))
    if kind in (SECONDS, DURATION, SIZE):
        return float(running) == float(asked)
    return bool(running == asked)


def _show(value: Any, kind: str) -> str:
    if value is None:
        return "not reported"
    if kind == SIZE:
        return format_bytes(value)
    if kind == SECONDS:
        return f"{float(value):g}s"
    if kind == DURATION:
        return format_duration(float(value))
    if kind == LIST:
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _duration(value: str, flag: str) -> float:
    try:
        seconds = parse_duration(value if not value.replace(".", "", 1).isdigit() else float(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from exc
    if seconds < 60:
        raise click.BadParameter(f"at least 1m (got {value})", param_hint=flag)
    return seconds


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
    """Say whether the daemon runs, where, and with which settings (exit 5 when it does not run)."""
    obj.local()
    info = daemon_info(obj.paths)
    if info is None:
        down = DaemonUnavailable(f"the berth daemon is not running (home {obj.home})",
                                 hint="start it with `berth cluster up`")
        if output == "json":  # a script reading stdout gets an answer too, not only the exit code
            click.echo(json.dumps({"running": False, "home": str(obj.home), "error": down.message,
                                   "hint": down.hint}, indent=2))
        raise down
    if output == "json":
        click.echo(json.dumps({"running": True, **info}, indent=2))
        return
    obj.console.print(f"berth {info['version']} running: pid {info['pid']}, gateway "
                      f"http://{info['host']}:{info['port']}, {info['apis']} API(s), home {info['home']}")
    settings = info.get("settings") or {}
    obj.console.print("settings (`berth cluster up` options):")
    for name, flag, kind in SETTINGS:
        if name in settings:
            obj.console.print(f"  {flag:<25} {_show(settings[name], kind)}", markup=False)


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
