"""`berth env list|default`: the environments commands run against (`-e/--env`), as in Cortex."""

from __future__ import annotations

import json

import click
from rich.markup import escape

from berth.backends import environments
from berth.cli import render
from berth.cli.context import CLIContext, pass_context


@click.group()
def env() -> None:
    """List the environments and pick the default one; `local` is built in."""


@env.command(name="list")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@pass_context
def list_(obj: CLIContext, output: str) -> None:
    """Every environment, its provider, and which one is the default."""
    registry = environments.load(obj.home)
    rows = [{"name": env.name, "provider": str(env.provider), "default": env.name == registry.default}
            for env in registry.environments]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = render.table("name", "provider", "default")
    for row in rows:
        table.add_row(escape(str(row["name"])), str(row["provider"]), "*" if row["default"] else "")
    obj.console.print(table)


@env.command()
@click.argument("name", required=False)
@pass_context
def default(obj: CLIContext, name: str | None) -> None:
    """Make NAME the environment commands use without `-e`; without NAME, print the current one."""
    registry = environments.load(obj.home)
    if name is None:
        click.echo(registry.default)
        return
    environments.save(obj.home, registry.with_default(name))
    obj.console.print(f"default environment: {escape(name)}")
