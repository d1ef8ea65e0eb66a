"""`berth build`: bake a project (its code and its Python environment) into an image FROM berth's runtime image.

For projects whose code is too big for a ConfigMap or whose requirements are too heavy to install at pod
start. berth writes a build folder (`<project>/.berth-build`, or `--out`): the project's files as a deploy
takes them (`.berthignore` applies; `.env` stays out: images get pushed) and a `Containerfile` that copies
them to /srv/berth/project and builds their environment into /opt/berth/envs with the same builder as pod
start (`python -m berth.runtime.bootstrap --prepare-only`), as root, so dependencies.sh may apt-get. It then
builds the image with the first engine it finds: docker (when its daemon answers), podman, buildah
(daemonless); with none, or with `--print`, it prints the one command to run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from berth import __version__
from berth.backends.environments import Provider
from berth.cli.context import CLIContext, env_option, pass_context
from berth.cli.deploy import _load
from berth.errors import BerthError, ConfigError

if TYPE_CHECKING:
    from berth.config.project import ProjectFile

ENGINES = ("docker", "podman", "buildah")
RUNTIME_REPOSITORY = "berth/runtime"
BUILD_FOLDER = ".berth-build"
CONTAINERFILE = "Containerfile"
MARKER = "# Written by `berth build`"
PROJECT_IN_IMAGE = "/srv/berth/project"
ENVS_IN_IMAGE = "/opt/berth/envs"
USER = "10001:10001"  # the runtime images' berth user
# Package-index settings of the building shell handed to the build (`--build-arg NAME`, value from the
# environment). Build arguments show in the image's history: keep credentials out of these URLs.
INDEX_ARGS = ("UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL",
              "PIP_FIND_LINKS", "PIP_TRUSTED_HOST")
DOCKER_PROBE_SECONDS = 15.0


def default_base(gpu: bool) -> str:
    """berth's runtime image for this version (the one the pods of an environment without --image run)."""
    return f"{RUNTIME_REPOSITORY}:{__version__}-{'cuda' if gpu else 'cpu'}"


def containerfile(base: str, spec_name: str) -> str:
    args = "".join(f"ARG {name}\n" for name in INDEX_ARGS)
    return f"""{MARKER} (berth {__version__}) for {spec_name}; written again by each run.
# The project's files are in project/ next to this file: build with this folder as the context.
FROM {base}
USER root
{args}ENV BERTH_PROJECT={PROJECT_IN_IMAGE} \\
    BERTH_BAKED_ENVS={ENVS_IN_IMAGE}
COPY --chown={USER} project/ {PROJECT_IN_IMAGE}/
# The project's environment, as a pod would build it at start (dependencies.sh runs as root here).
RUN python -m berth.runtime.bootstrap --prepare-only --project {PROJECT_IN_IMAGE} --envs {ENVS_IN_IMAGE} \\
    && rm -rf {ENVS_IN_IMAGE}/.uv-cache
USER {USER}
"""


@dataclass(frozen=True)
class BuildFolder:
    path: Path
    containerfile: Path
    digest: str  # of the project's files: the default tag


def write_build_folder(root: Path, spec_file: Path, out: Path, base: str) -> BuildFolder:
    """`out/Containerfile` and `out/project/` (a fresh copy of the project's files)."""
    from berth.config.project import scan_project  # pathspec loads for a build, not for every command

    scan = scan_project(root, spec_file)
    if scan.problems:
        raise ConfigError(scan.problems)
    files = sorted((f for f in scan.files if not _secret(f)), key=lambda f: f.relative.as_posix())
    target = out / CONTAINERFILE
    if target.exists() and not target.read_text(errors="replace").startswith(MARKER):
        raise BerthError(f"{target} exists and was not written by `berth build`; it is left as it is",
                         hint="choose another folder with --out")
    out.mkdir(parents=True, exist_ok=True)
    project = out / "project"
    shutil.rmtree(project, ignore_errors=True)
    digest = hashlib.sha256()
    for file in files:
        destination = project / file.relative.as_posix()
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(file.source, destination)
        shutil.copymode(file.source, destination)
        digest.update(file.relative.as_posix().encode() + b"\0" + file.source.read_bytes() + b"\0")
    project.mkdir(exist_ok=True)  # an empty project still builds
    text = containerfile(base, spec_file.name)
    digest.update(text.encode())
    target.write_text(text)
    return BuildFolder(out, target, digest.hexdigest())


def _secret(file: ProjectFile) -> bool:
    """`.env` stays out of images, as out of ConfigMaps: images are pushed to registries."""
    from berth.config.project import ROOT_DOTFILES

    return len(file.relative.parts) == 1 and file.relative.name in ROOT_DOTFILES


def default_tag(root: Path, digest: str) -> str:
    name = re.sub(r"[^a-z0-9._-]+", "-", root.name.lower()).strip(".-_") or "berth-project"
    return f"{name}:{digest[:10]}"


def build_command(engine: str, folder: BuildFolder, tag: str, environ: dict[str, str]) -> list[str]:
    verb = ["bud", "--isolation", "chroot"] if Path(engine).name == "buildah" else ["build"]
    args = [arg for name in INDEX_ARGS if environ.get(name) for arg in ("--build-arg", name)]
    return [engine, *verb, "-f", str(folder.containerfile), "-t", tag, *args, str(folder.path)]


def find_engine(wanted: str | None) -> tuple[str | None, list[str]]:
    """(the engine to build with, or None; why others were passed over)."""
    notes: list[str] = []
    if wanted is not None:
        found = shutil.which(wanted)
        if found is None:
            raise BerthError(f"--engine {wanted}: {wanted} is not installed (not on PATH)",
                             hint=f"install it, or leave --engine out to use the first of {', '.join(ENGINES)} found")
        return found, notes
    for name in ENGINES:
        found = shutil.which(name)
        if found is None:
            continue
        if name == "docker" and not _docker_answers(found):
            notes.append("docker is installed but its daemon does not answer (is it running?)")
            continue
        return found, notes
    return None, notes


def _docker_answers(docker: str) -> bool:
    try:
        return subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=DOCKER_PROBE_SECONDS).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@click.command()
@click.argument("path", type=click.Path(path_type=Path), default=".")
@click.option("--tag", default=None, metavar="IMAGE",
              help="Name of the image (default: <project folder>:<hash of its files>).")
@click.option("--base", default=None, metavar="IMAGE",
              help="Image to build FROM (default: berth's runtime image, -cuda when an API asks for a GPU).")
@click.option("--engine", type=click.Choice(ENGINES), default=None,
              help="Build with this engine (default: the first of docker, podman, buildah that works).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help=f"Where to write the Containerfile and the build context (default: <project>/{BUILD_FOLDER}).")
@click.option("--print", "print_only", is_flag=True,
              help="Write the Containerfile and print the build command instead of running it.")
@env_option
@pass_context
def build(obj: CLIContext, path: Path, tag: str | None, base: str | None, engine: str | None, out: Path | None,
          print_only: bool) -> None:
    """Bake the project at PATH (a folder or spec file) and its requirements into an image for Kubernetes."""
    spec = _load(obj, path)
    root = spec.path.parent
    gpu = any(api.compute.gpu > 0 for api in spec.apis)
    folder = write_build_folder(root, spec.path, (out or root / BUILD_FOLDER).absolute(), base or default_base(gpu))
    tag = tag or default_tag(root, folder.digest)
    obj.err.print(f"wrote {escape(str(folder.containerfile))} (FROM {escape(base or default_base(gpu))}) and the "
                  f"project's files beside it", soft_wrap=True)
    environ = dict(os.environ)
    found, notes = (None, []) if print_only else find_engine(engine)
    for note in notes:
        obj.err.print(f"[yellow]note:[/yellow] {escape(note)}", soft_wrap=True)
    if found is None:
        command = build_command(engine or "docker", folder, tag, environ)
        if not print_only:
            obj.err.print(f"[yellow]note:[/yellow] no container engine ({', '.join(ENGINES)}) to build with here; "
                          "run this where one is:", soft_wrap=True)
        click.echo(" ".join(_quote(part) for part in command))
        return
    command = build_command(found, folder, tag, environ)
    obj.err.print(f"$ {escape(' '.join(_quote(part) for part in command))}", soft_wrap=True)
    code = subprocess.run(command, stdin=subprocess.DEVNULL).returncode  # its output streams through
    if code != 0:
        raise BerthError(f"the image build failed ({Path(found).name} exited with {code}); its output is above",
                         hint=f"the Containerfile is {folder.containerfile}")
    obj.err.print(f"[green]built[/green] {escape(tag)}: push it to a registry your cluster pulls from, then "
                  f"`{escape(_configure_command(obj, tag))}`", soft_wrap=True)
    click.echo(tag)


def _configure_command(obj: CLIContext, tag: str) -> str:
    """What points the environment (`-e`, or the default when it is a cluster) at the new image."""
    env = obj.environment()
    if env.provider is Provider.KUBERNETES:
        return f"berth env configure {env.name} --image {tag}"
    return f"berth env configure NAME --provider kubernetes --image {tag}"


def _quote(part: str) -> str:
    return shlex.quote(part)
