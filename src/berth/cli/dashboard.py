"""`berth dashboard`: the address of the running instance's dashboard, opened in a browser when one is there.

The URL goes to stdout alone (a script can read it); notes go to stderr. A browser is opened with
`--open`, never with `--no-open`, and by default only when stdout is a terminal and a browser can be
shown: on Linux and the BSDs that needs a graphical session (DISPLAY or WAYLAND_DISPLAY), so an SSH
session prints the address and opens nothing (forward the port instead: ssh -L 8888:127.0.0.1:8888).
"""

from __future__ import annotations

import ipaddress
import os
import sys
import webbrowser
from collections.abc import Mapping

import click

from berth.cli.context import CLIContext, env_option, pass_context
from berth.control.launcher import daemon_info
from berth.errors import DaemonUnavailable

PATH = "/_berth/"


def dashboard_url(host: str, port: int) -> str:
    """The address a browser on this machine reaches: a wildcard bind is reached through loopback."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}{PATH}"  # a host name
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}{PATH}"


def should_open(choice: bool | None, stdout_is_terminal: bool, environ: Mapping[str, str], platform: str) -> bool:
    """--open / --no-open decide; otherwise a person at a terminal with a graphical session gets a browser."""
    if choice is not None:
        return choice
    if not stdout_is_terminal:
        return False
    if platform.startswith(("darwin", "win")):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY") or environ.get("BROWSER"))


@click.command()
@click.option("--open/--no-open", "open_browser", default=None,
              help="Open the page in a browser (default: only when run at a terminal with a graphical session).")
@env_option
@pass_context
def dashboard(obj: CLIContext, open_browser: bool | None) -> None:
    """Print the address of the live dashboard (every API, history, predictions), opening a browser when one is there.

    Exit 5 when the daemon does not run (`berth cluster up` starts it)."""
    obj.local()
    info = daemon_info(obj.paths)
    if info is None:
        raise DaemonUnavailable(f"the berth daemon is not running (home {obj.home}), so there is no dashboard to show",
                                hint="start it with `berth cluster up` (or deploy an API), then run this again")
    url = dashboard_url(str(info["host"]), int(info["port"]))
    click.echo(url)
    if should_open(open_browser, sys.stdout.isatty(), os.environ, sys.platform) and not _open(url):
        obj.err.print("no browser could be opened here: open the address above in one")


def _open(url: str) -> bool:
    try:
        return webbrowser.open(url, new=2)
    except webbrowser.Error:
        return False
