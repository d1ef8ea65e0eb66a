"""The root command group and the only place exceptions become exit codes and messages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from berth import __version__
from berth.cli import build, cluster, dashboard, deploy, describe, env, export, inspect, monitor, operate
from berth.cli.context import CLIContext, make_console
from berth.cli.keys import key as key_commands
from berth.errors import BerthError, ConfigError


class BerthGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BerthError as exc:
            _report(exc)
            raise SystemExit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise SystemExit(130) from None


def _report(exc: BerthError) -> None:
    err = make_console(stderr=True)
    if isinstance(exc, ConfigError) and len(exc.problems) > 1:
        err.print(f"[red]error:[/red] {len(exc.problems)} problems:")
        for problem in exc.problems:
            err.print(f"  {escape(problem)}")
    else:
        err.print(f"[red]error:[/red] {escape(exc.message)}")
    if exc.hint:
        err.print(f"[dim]{escape(exc.hint)}[/dim]")


@click.group(cls=BerthGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", type=click.Path(path_type=Path), envvar="BERTH_HOME", default="~/.berth",
              show_default=True, help="State folder of this berth instance [env: BERTH_HOME].")
@click.option("--port", type=click.IntRange(1, 65535), envvar="BERTH_PORT", default=8888, show_default=True,
              help="Gateway port, used when the daemon is started [env: BERTH_PORT].")
@click.version_option(__version__, prog_name="berth")
@click.pass_context
def cli(ctx: click.Context, home: Path, port: int) -> None:
    """berth: deploy a Python predictor as a scalable, monitored web service."""
    ctx.obj = CLIContext(home=home.expanduser().resolve(), port=port)
    ctx.call_on_close(ctx.obj.close)


for command in (deploy.deploy, deploy.validate, inspect.get, describe.describe, describe.refresh, operate.predict,
                operate.logs, operate.delete, cluster.cluster, env.env, monitor.monitor, dashboard.dashboard,
                export.export, build.build):
    cli.add_command(command)
cli.add_command(key_commands)  # berth key create|list|revoke


def main() -> None:
    cli(prog_name="berth")
