"""`berth env list|default|configure|delete`: the environments commands run against (`-e/--env`), as in Cortex."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import click
from rich.markup import escape

from berth.backends import environments
from berth.backends.environments import LOCAL, Environment, Provider
from berth.backends.kubernetes.settings import ClusterSettings, kubeconfig_paths, read_contexts
from berth.cli import render
from berth.cli.context import CLIContext, pass_context
from berth.errors import BerthError, ConfigError, NotFound

SETTINGS = ("context", "namespace", "prometheus", "image", "gateway")  # the order `env list` shows them in


@click.group()
def env() -> None:
    """Add, change, list and delete environments, and pick the default one; `local` is built in."""


@env.command(name="list")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@pass_context
def list_(obj: CLIContext, output: str) -> None:
    """Every environment, its provider, its settings, and which one is the default."""
    registry = environments.load(obj.home)
    rows: list[dict[str, Any]] = [
        {"name": env.name, "provider": str(env.provider), "default": env.name == registry.default,
         "settings": _shown_settings(env)} for env in registry.environments]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    # Only the settings some environment has: with `local` alone, the table is name, provider, default.
    shown = [key for key in SETTINGS if any(key in row["settings"] for row in rows)]
    table = render.table("name", "provider", "default", *shown)
    for row in rows:
        settings: dict[str, Any] = row["settings"]
        table.add_row(escape(str(row["name"])), str(row["provider"]), "*" if row["default"] else "",
                      *(escape(str(settings.get(key) or "")) for key in shown))
    obj.console.print(table)


def _shown_settings(env: Environment) -> dict[str, Any]:
    """The settings as stored (a hand-edited file's invalid ones too: list must show them), in SETTINGS' order."""
    order = {key: index for index, key in enumerate(SETTINGS)}
    return {key: env.settings[key] for key in sorted(env.settings, key=lambda key: (order.get(key, len(order)), key))}


def _normalized(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Kubernetes settings with their defaults filled in, or as they are when they are not valid."""
    try:
        return dict(ClusterSettings.from_settings(settings).to_settings())
    except ConfigError:
        return dict(settings)


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


@env.command()
@click.argument("name")
@click.option("--provider", type=click.Choice([str(provider) for provider in Provider]), default=None,
              metavar="PROVIDER", help="Where its APIs run: kubernetes (needed when NAME is new; local is built "
                                       "in as the environment local).")
@click.option("--context", metavar="C", default=None,
              help="Kube context in your kubeconfig (default: its current context). Credentials stay there.")
@click.option("--namespace", metavar="N", default=None, help="Namespace the APIs go to (default: default).")
@click.option("--prometheus", metavar="URL", default=None,
              help="Prometheus address KEDA's trigger queries, e.g. http://prometheus.monitoring:9090.")
@click.option("--image", metavar="IMAGE", default=None,
              help="Image the API pods run (default: berth's runtime image of this version, -cpu or -cuda).")
@click.option("--gateway", metavar="NAME", default=None,
              help="Gateway API Gateway routing to the APIs, as name or namespace/name (default: no HTTPRoute).")
@pass_context
def configure(obj: CLIContext, name: str, provider: str | None, context: str | None, namespace: str | None,
              prometheus: str | None, image: str | None, gateway: str | None) -> None:
    """Create environment NAME, or change the settings given (an empty value unsets one); berth stores
    only these names: credentials stay in your kubeconfig."""
    given = {"context": context, "namespace": namespace, "prometheus": prometheus, "image": image,
             "gateway": gateway}
    if name == LOCAL:
        raise BerthError(f"{LOCAL!r} is built in (this machine's daemon) and has nothing to configure",
                         hint="give a kubernetes environment another name: "
                              "`berth env configure prod --provider kubernetes`")
    if provider == Provider.LOCAL:
        raise BerthError(f"the local provider is built in as the environment {LOCAL!r}; there is no other to "
                         "configure", hint="configure a cluster with `--provider kubernetes`")
    registry = environments.load(obj.home)
    existing = _find(registry, name)
    if existing is None and provider is None:
        raise BerthError(f"{name!r} is a new environment: say where its APIs run with `--provider kubernetes`")
    if existing is not None and provider is not None and provider != existing.provider:
        raise BerthError(f"environment {name!r} uses the {existing.provider} provider; it cannot change",
                         hint=f"delete it (`berth env delete {name}`) and configure it again")
    kind = existing.provider if existing is not None else Provider(provider or Provider.KUBERNETES)
    before = dict(existing.settings) if existing is not None else {}
    after = dict(before)
    for key, value in given.items():
        if value is None:
            continue
        if value == "":
            after.pop(key, None)
        else:
            after[key] = value
    settings = ClusterSettings.from_settings(after)  # ConfigError: every bad value at once, nothing saved
    stored = settings.to_settings()
    updated = registry.with_environment(Environment(name, kind, stored))  # checks the name
    _check_context(obj, settings, asked=bool(context))
    if existing is not None and stored == before:
        obj.console.print(f"environment {escape(name)} is unchanged")
        return
    environments.save(obj.home, updated)
    if existing is None:
        described = ", ".join(f"{key} {value}" for key, value in _ordered(stored))
        obj.console.print(f"created environment {escape(name)} ({kind}): {escape(described)}")
        obj.console.print(f"[dim]use it with `-e {escape(name)}`, or make it the default with "
                          f"`berth env default {escape(name)}`[/dim]")
        return
    old = _normalized(before)
    changes = [f"{key}: {old.get(key, '(unset)')} -> {stored.get(key, '(unset)')}"
               for key in SETTINGS if old.get(key) != stored.get(key)]
    changes += [f"{key}: removed" for key in before if key not in SETTINGS]
    obj.console.print(f"updated environment {escape(name)}: {escape('; '.join(changes))}")


def _find(registry: environments.Registry, name: str) -> Environment | None:
    try:
        return registry.get(name)
    except NotFound:
        return None


def _ordered(settings: Mapping[str, str]) -> list[tuple[str, str]]:
    return [(key, settings[key]) for key in SETTINGS if key in settings]


def _check_context(obj: CLIContext, settings: ClusterSettings, asked: bool) -> None:
    """The context must be one of the kubeconfig's when one can be read; none (the cluster may be set up
    later) is a warning. A context given now that is not there is refused; a stored one, a warning."""
    paths = kubeconfig_paths()
    found = read_contexts(paths)
    for problem in found.problems:
        if problem.endswith("does not exist"):
            continue  # kubectl skips the missing files of a KUBECONFIG list too; none at all is said below
        obj.err.print(f"[yellow]warning:[/yellow] {escape(problem)}")
    if not found.found:
        names = ", ".join(str(path) for path in paths)
        obj.err.print(f"[yellow]warning:[/yellow] no kubeconfig could be read ({escape(names)}): the context is not "
                      "checked; berth needs one before it can reach the cluster")
        return
    files = ", ".join(str(path) for path in found.files)
    if settings.context is None:
        if found.current is None:
            obj.err.print(f"[yellow]warning:[/yellow] the kubeconfig ({escape(files)}) has no current context: "
                          "give one with --context")
        return
    if settings.context in found.contexts:
        return
    known = ", ".join(sorted(found.contexts)) or "none"
    message = f"no context named {settings.context!r} in the kubeconfig ({files}; known: {known})"
    if asked:
        raise NotFound(message, hint="`kubectl config get-contexts` lists them; KUBECONFIG names the files read")
    obj.err.print(f"[yellow]warning:[/yellow] {escape(message)}")


@env.command()
@click.argument("name")
@pass_context
def delete(obj: CLIContext, name: str) -> None:
    """Forget environment NAME (what it deployed keeps running); `local` cannot be deleted."""
    registry = environments.load(obj.home)
    removed = registry.get(name) if name != LOCAL else None
    environments.save(obj.home, registry.without(name))
    obj.console.print(f"deleted environment {escape(name)}")
    if registry.default == name:
        obj.console.print(f"it was the default: the default environment is {LOCAL} again")
    if removed is not None and removed.provider is not Provider.LOCAL:
        obj.err.print("[dim]the APIs it deployed keep running on its cluster; configure it again to manage "
                      "them[/dim]")
