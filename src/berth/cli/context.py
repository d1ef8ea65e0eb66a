"""What every command shares: where the instance lives, its port, the client, the console."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console

from berth.client import Client
from berth.control.launcher import StartOptions, ensure_daemon
from berth.control.paths import Paths


@dataclass
class CLIContext:
    home: Path
    port: int
    host: str = "127.0.0.1"
    console: Console = field(default_factory=lambda: make_console(stderr=False))
    err: Console = field(default_factory=lambda: make_console(stderr=True))
    _client: Client | None = None

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.paths)
        return self._client

    def ensure_daemon(self, options: StartOptions | None = None) -> None:
        """Start the daemon in the background when it is not running, and say so."""
        started = ensure_daemon(self.paths, self.host, self.port, options)
        if started.started:
            info = started.info
            self.err.print(f"started the berth daemon (pid {info['pid']}, gateway "
                           f"http://{info['host']}:{info['port']}); its log is {self.paths.daemon_log}")


def make_console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: tables should not be squeezed to 80 columns
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


pass_context = click.make_pass_decorator(CLIContext)
