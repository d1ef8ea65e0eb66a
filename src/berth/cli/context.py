"""What every command shares: where the instance lives, its port, the environment and its backend, the console."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from berth.backends import environments
from berth.backends.base import Backend
from berth.backends.environments import Environment, Provider
from berth.client import LocalBackend
from berth.control.launcher import StartOptions
from berth.control.paths import Paths
from berth.errors import BerthError, NotFound

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CLIContext:
    home: Path
    port: int
    host: str = "127.0.0.1"
    console: Console = field(default_factory=lambda: make_console(stderr=False))
    err: Console = field(default_factory=lambda: make_console(stderr=True))
    env_name: str | None = None  # `-e/--env`; None: the registry's default
    _environment: Environment | None = None
    _backend: Backend | None = None

    @property
    def paths(self) -> Paths:
        return Paths(self.home)

    def select_env(self, name: str | None) -> Environment:
        """The environment named with `-e` (None: the default); an unknown name fails here, with the known ones."""
        self.env_name = name
        self._environment = None
        return self.environment()

    def environment(self) -> Environment:
        if self._environment is None:
            self._environment = environments.load(self.home).resolve(self.env_name)
        return self._environment

    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.environment(), self)
        return self._backend

    def local(self) -> LocalBackend:
        """The local daemon itself, for the commands that manage it (`berth cluster`)."""
        env = self.environment()
        if env.provider is not Provider.LOCAL:
            raise BerthError(f"`berth cluster` manages the local daemon; environment {env.name!r} is {env.provider}",
                             hint="run it with `-e local`")
        backend = self.backend()
        assert isinstance(backend, LocalBackend)
        return backend

    def ensure_running(self) -> None:
        """Start what the environment serves with when it is not running, and say so."""
        self.notice(self.backend().ensure_running())

    def ensure_daemon(self, options: StartOptions) -> None:
        self.notice(self.local().ensure_running(options))

    def notice(self, line: str | None) -> None:
        if line:
            self.err.print(line)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    @contextmanager
    def naming_known(self, name: str) -> Iterator[None]:
        """An unknown API name fails with the deployed ones listed, whichever command met it."""
        try:
            yield
        except NotFound as exc:
            if "(deployed:" in exc.message:
                raise
            try:
                known = ", ".join(api["name"] for api in self.backend().list_apis()) or "none"
            except BerthError:
                raise exc from None
            raise NotFound(f"no API named {name!r} (deployed: {known})",
                           hint="`berth get` lists them; check the name") from None


def open_backend(env: Environment, obj: CLIContext) -> Backend:
    if env.provider is Provider.LOCAL:
        return LocalBackend(obj.paths, obj.host, obj.port)
    if env.provider is Provider.KUBERNETES:
        # Imported here: lightkube and the renderer load only for commands that talk to a cluster.
        from berth.backends.kubernetes.backend import KubernetesBackend

        return KubernetesBackend(env)
    raise BerthError(f"environment {env.name!r} uses the {env.provider} provider, which this berth cannot "
                     "talk to yet", hint="use `-e local`, or `berth env default local`")


def make_console(stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # piped or captured: tables should not be squeezed to 80 columns
        console = Console(stderr=stderr, highlight=False, width=200)
    return console


pass_context = click.make_pass_decorator(CLIContext)


def _select_env(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    # Resolved now, while parsing, so an unknown name fails before the command does anything.
    obj = ctx.find_object(CLIContext)
    if obj is not None:
        obj.select_env(value)


def env_option(command: F) -> F:
    """`-e/--env NAME` on a command: the environment it runs against."""
    return click.option("-e", "--env", "env", default=None, metavar="NAME", expose_value=False,
                        callback=_select_env,
                        help="Environment to run against (default: `berth env default`, initially local).")(command)
