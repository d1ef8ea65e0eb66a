"""`berth export`: the Kubernetes objects a deploy to a kubernetes environment applies, as YAML, for GitOps.

Nothing here talks to the cluster: the objects come from the spec file, the project's files and the
environment's settings alone. Without a cluster to ask whether KEDA is installed, the environment's
`prometheus` setting decides: set, a KEDA ScaledObject; unset, the autoscaling/v2 HPA fallback (and a warning).

A project's `.env` never appears in the output: its Secret is left out (the Deployment mounts it by name),
and stderr says the one kubectl command that creates it from the file.
Export renders no `replicas` for an autoscaled Deployment (a GitOps tool applies the same file again and
again; berth deploy sets init_replicas only when it creates the Deployment).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from berth.backends import environments
from berth.backends.environments import Environment, Provider
from berth.backends.kubernetes.settings import ClusterSettings
from berth.cli.context import CLIContext, env_option, pass_context
from berth.cli.deploy import _load
from berth.errors import BerthError

SHARED = "_shared"  # objects of no single API (never an API name: those are DNS labels)


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Write one file per API, DIR/<api>.yaml, instead of printing one YAML stream.")
@env_option
@pass_context
def export(obj: CLIContext, path: Path, out: Path | None) -> None:
    """Print the Kubernetes objects a deploy of PATH (a folder or spec file) to a kubernetes environment
    applies; nothing is sent to the cluster."""
    env = _kubernetes_environment(obj)
    settings = ClusterSettings.from_settings(env.settings)
    spec = _load(obj, path)
    from berth.backends.kubernetes.labels import API_LABEL
    from berth.backends.kubernetes.render import render_spec, to_yaml
    from berth.backends.kubernetes.render_activator import needs_activator, render_activator

    def note(message: str) -> None:
        obj.err.print(f"[yellow]note:[/yellow] {escape(message)}", soft_wrap=True)

    objects = render_spec(spec, settings, keda=settings.prometheus is not None, secret_data=False, progress=note)
    if needs_activator(spec.apis, settings):
        objects = render_activator(settings) + objects  # its RBAC and Service before the routes that use them
    secrets = sorted({volume["secret"]["secretName"] for item in objects if item.get("kind") == "Deployment"
                      for volume in item["spec"]["template"]["spec"].get("volumes", []) if "secret" in volume})
    if secrets:
        context = f" --context {shlex.quote(settings.context)}" if settings.context else ""
        dotenv = shlex.quote(f"{spec.root / '.env'}")
        commands = "\n".join(f"  kubectl{context} -n {settings.namespace} create secret generic {name} "
                             f"--from-file=.env={dotenv}" for name in secrets)
        obj.err.print(f"[yellow]note:[/yellow] the project's .env is not in this output (its values are secret). "
                      f"Create the Secret the pods mount before applying it:\n{escape(commands)}", soft_wrap=True)
    fallback = [item["metadata"]["name"] for item in objects if item.get("kind") == "HorizontalPodAutoscaler"]
    if fallback:
        obj.err.print(f"[yellow]warning:[/yellow] environment {escape(env.name)} has no prometheus address, so "
                      f"the autoscaler of {escape(', '.join(fallback))} is the autoscaling/v2 "
                      "HorizontalPodAutoscaler fallback instead of a KEDA ScaledObject scaling on in-flight "
                      f"requests; set one with `berth env configure {escape(env.name)} --prometheus URL`",
                      soft_wrap=True)
    if out is None:
        click.echo(to_yaml(objects), nl=False)
        return
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in objects:
        labels = item.get("metadata", {}).get("labels") or {}
        groups.setdefault(str(labels.get(API_LABEL, SHARED)), []).append(item)
    out.mkdir(parents=True, exist_ok=True)
    for name, group in groups.items():
        target = out / f"{name}.yaml"
        _write(target, to_yaml(group))
        kinds = ", ".join(str(item.get("kind")) for item in group)
        obj.console.print(f"wrote {escape(str(target))}: {escape(kinds)}", soft_wrap=True)


def _kubernetes_environment(obj: CLIContext) -> Environment:
    env = obj.environment()
    if env.provider is Provider.KUBERNETES:
        return env
    clusters = [known.name for known in environments.load(obj.home).environments
                if known.provider is Provider.KUBERNETES]
    choose = (f"pass -e NAME (kubernetes environments: {', '.join(clusters)})" if clusters
              else "configure one first: `berth env configure prod --provider kubernetes --context CONTEXT`")
    if obj.env_name is None:
        raise BerthError("export renders Kubernetes objects for a kubernetes environment, and the default "
                         f"environment is {env.name!r} (this machine's daemon)", hint=choose)
    raise BerthError(f"export renders Kubernetes objects for a kubernetes environment; {env.name!r} is this "
                     "machine's daemon", hint=choose)


def _write(target: Path, text: str) -> None:
    """Replace `target` whole (a half-written manifest must never reach a GitOps pipeline), with the
    permissions a new file gets under the user's umask."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
