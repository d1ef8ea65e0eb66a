"""Starting a replica in a Kubernetes pod: `python -m berth.runtime.bootstrap` is the container's command.

    1. unpack the project's code (the tarball of the API's code ConfigMap) into a writable folder, or use
       the project baked into the image by `berth build` (`BERTH_PROJECT`) when no tarball is mounted;
    2. build the project's Python environment into the environments cache (a volume the API's pods share),
       with the same builder, the same keys and the same lock as locally: a restarted pod reuses it, pods
       of one node that start together build it once. Environments baked into the image
       (`BERTH_BAKED_ENVS`) are linked into the cache first, so a matching one is reused, not rebuilt;
    3. make the replica's environment as the local supervisor does: the image's variables, thread caps
       from compute.cpu, `.env`, the environment's PATH and VIRTUAL_ENV, predictor.env;
    4. exec the runtime (`python -m berth.runtime --port 8080 --host 0.0.0.0 ...`) in its place: the same
       process (PID 1), so SIGTERM reaches the runtime itself and it drains.

What it does is printed on stdout, one line per step: the pod's log. A failure is printed there and to
the termination log (`kubectl describe pod` shows it), and the container exits 1.

`--prepare-only` stops after step 2: what `berth build`'s Containerfile runs to bake the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from berth.config.schema import RealtimeAPI
from berth.errors import BerthError
from berth.pyenv.builder import INDEX, EnvironmentBuilder
from berth.pyenv.dotenv import DOTENV_FILE, read_dotenv
from berth.runtime.concurrency import VARIABLE as MAX_CONCURRENCY_VARIABLE
from berth.runtime.contract import ReplicaArgs

MODULE = "berth.runtime.bootstrap"
# The pod contract (/work/notes/k8s-pod.md, docs/kubernetes.md): where the pod mounts what.
CODE_FILE = "/srv/berth/code/code.tar.gz"
SPEC_FILE = "/srv/berth/code/spec.json"
WORK_DIR = "/srv/berth/work"
ENVS_DIR = "/var/cache/berth/envs"
PORT = 8080
HOST = "0.0.0.0"  # a pod's port is reached through its Service
# Set by images that `berth build` made (its Containerfile's ENV).
PROJECT_VARIABLE = "BERTH_PROJECT"
BAKED_ENVS_VARIABLE = "BERTH_BAKED_ENVS"
REPLICA_ID_VARIABLE = "BERTH_REPLICA_ID"
TERMINATION_LOG = "/dev/termination-log"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
UV_CACHE = ".uv-cache"  # in the environments cache: downloads shared like the environments

Progress = Callable[[str], None]


def pod_command() -> list[str]:
    return ["python", "-m", MODULE]


def pod_args(version: str | None = None) -> list[str]:
    args = ["--code", CODE_FILE, "--spec", SPEC_FILE, "--work", WORK_DIR, "--envs", ENVS_DIR, "--port", str(PORT)]
    return [*args, "--version", version] if version else args


@dataclass(frozen=True)
class Plan:
    """What to exec: the runtime's command line, its environment, its working folder."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}",
                                     description="Prepare a berth replica in a container, then become it.")
    parser.add_argument("--code", type=Path, default=None,
                        help="the project as a .tar.gz (the code ConfigMap's key); absent: the baked project")
    parser.add_argument("--project", type=Path, default=None,
                        help=f"a project folder already in the image (default: ${PROJECT_VARIABLE})")
    parser.add_argument("--spec", type=Path, default=None, help="the API spec as JSON (one RealtimeAPI)")
    parser.add_argument("--work", type=Path, default=Path(WORK_DIR),
                        help="a writable folder: the unpacked project, sockets, the model cache")
    parser.add_argument("--envs", type=Path, default=Path(ENVS_DIR), help="the environments cache")
    parser.add_argument("--baked-envs", type=Path, default=None,
                        help=f"environments built into the image (default: ${BAKED_ENVS_VARIABLE})")
    parser.add_argument("--dotenv", type=Path, default=None,
                        help="a .env file mounted from a Secret (the code bundle leaves .env out); over the project's")
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--version", default=None, help="the API version served (GET /stats, metrics)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="build the project's environment and stop (what `berth build` bakes)")
    return parser


def say(line: str) -> None:
    print(f"berth: {line}", flush=True)


def unpack(code: Path, work: Path, progress: Progress = say) -> Path:
    """The tarball's files in `work/project`, fresh: what an earlier start of the container left is replaced."""
    work.mkdir(parents=True, exist_ok=True)
    staging = work / f".project-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    with tarfile.open(code, "r:*") as archive:
        # "data": no absolute paths, no links out of the folder, no devices (the standard library's filter).
        archive.extractall(staging, filter="data")
    target = work / "project"
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    files = sum(1 for path in target.rglob("*") if path.is_file())
    progress(f"unpacked {code.name} ({code.stat().st_size} bytes, {files} files) into {target}")
    return target


def seed(baked: Path, envs: Path, progress: Progress = say) -> None:
    """Link the image's environments (and their index entries) into the cache where it lacks them."""
    if not baked.is_dir() or baked.resolve() == envs.resolve():
        return
    envs.mkdir(parents=True, exist_ok=True)
    (envs / INDEX).mkdir(exist_ok=True)
    for entry in (baked / INDEX).glob("*") if (baked / INDEX).is_dir() else ():
        if entry.is_file() and not entry.name.startswith(".") and not (envs / INDEX / entry.name).exists():
            shutil.copyfile(entry, envs / INDEX / entry.name)
    linked = 0
    for folder in baked.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and not (envs / folder.name).exists():
            (envs / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
            linked += 1
    if linked:
        progress(f"{linked} environment(s) built into the image linked into {envs}")


def index_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """The container's package-index settings (PIP_*, UV_*), as the deploying shell's are locally."""
    return {name: value for name, value in environ.items() if name.startswith(("PIP_", "UV_"))}


def build_environment(project: Path, envs: Path, environ: Mapping[str, str], dotenv: Mapping[str, str],
                      progress: Progress = say) -> Path | None:
    """The interpreter of the project's environment (built now if need be), or None for berth's own."""
    builder_environ = {**environ, "UV_CACHE_DIR": environ.get("UV_CACHE_DIR", str(envs / UV_CACHE))}
    builder = EnvironmentBuilder(envs, environ=builder_environ)
    started = time.monotonic()
    built = asyncio.run(builder.prepare(project, index_variables(environ), dotenv, progress))
    if built is None:
        progress("the project runs in berth's own environment")
        return None
    if not built.reused:
        progress(f"environment {built.key} built in {time.monotonic() - started:.2f}s")
    # An environment linked from the image: run it where it is, not through the link.
    return built.path.resolve() / "bin" / "python"


def thread_caps(api: RealtimeAPI) -> dict[str, str]:
    """What the local supervisor sets from the replica's cpu (the cgroup limit is the pod's)."""
    threads = str(max(1, math.floor(api.compute.cpu / api.predictor.processes_per_replica)))
    return dict.fromkeys(THREAD_VARIABLES, threads)


def replica_environment(api: RealtimeAPI, environ: Mapping[str, str], dotenv: Mapping[str, str],
                        python: Path | None) -> dict[str, str]:
    """In the local supervisor's order: .env below predictor.env; the environment's PATH above .env."""
    environment: dict[str, str] = {}
    if python is not None:
        environment = {"VIRTUAL_ENV": str(python.parent.parent),
                       "PATH": f"{python.parent}{os.pathsep}{environ.get('PATH', os.defpath)}"}
    return {**environ, **thread_caps(api), **dotenv, **environment, **api.predictor.env,
            MAX_CONCURRENCY_VARIABLE: str(api.autoscaling.max_replica_concurrency), "PYTHONUNBUFFERED": "1"}


def read_spec(path: Path) -> RealtimeAPI:
    try:
        return RealtimeAPI.model_validate(json.loads(path.read_text()))
    except OSError as exc:
        raise BerthError(f"cannot read the API spec {path}: {exc.strerror}",
                         hint="the pod must mount the code ConfigMap (key spec.json) there") from None
    except (ValueError, ValidationError) as exc:
        raise BerthError(f"the API spec {path} is not a valid RealtimeAPI: {exc}",
                         hint="deploy again with this version of berth: the image and the CLI must agree") from None


def find_project(args: argparse.Namespace, environ: Mapping[str, str], progress: Progress) -> Path:
    if args.code is not None and args.code.is_file():
        try:
            return unpack(args.code, args.work, progress)
        except (OSError, tarfile.TarError) as exc:
            raise BerthError(f"cannot unpack the project's code {args.code}: {exc}") from None
    project = args.project or (Path(environ[PROJECT_VARIABLE]) if environ.get(PROJECT_VARIABLE) else None)
    if project is None or not project.is_dir():
        where = f"{args.code} is missing and " if args.code is not None else ""
        raise BerthError(f"no project to serve: {where}no project folder is in the image "
                         f"(--project or ${PROJECT_VARIABLE})",
                         hint="mount the API's code ConfigMap, or use an image made by `berth build`")
    progress(f"serving the project in {project}")
    return project


def plan(args: argparse.Namespace, environ: Mapping[str, str], progress: Progress = say) -> Plan | None:
    """Steps 1-3; None with --prepare-only (nothing to exec)."""
    project = find_project(args, environ, progress)
    dotenv = read_dotenv(project / DOTENV_FILE)
    if args.dotenv is not None:
        if not args.dotenv.is_file():
            raise BerthError(f"--dotenv {args.dotenv}: no such file", hint="mount the API's .env Secret there")
        dotenv = {**dotenv, **read_dotenv(args.dotenv)}
    if dotenv:
        progress(f"{DOTENV_FILE}: {len(dotenv)} variable(s)")  # never their values
    baked = args.baked_envs or (Path(environ[BAKED_ENVS_VARIABLE]) if environ.get(BAKED_ENVS_VARIABLE) else None)
    if baked is not None and not args.prepare_only:
        seed(baked, args.envs, progress)
    python = build_environment(project, args.envs, environ, dotenv, progress)
    if args.prepare_only:
        return None
    if args.spec is None:
        raise BerthError("--spec is required to start the replica")
    api = read_spec(args.spec)
    if api.predictor.processes_per_replica > 1:
        progress(f"processes_per_replica {api.predictor.processes_per_replica}: process 0 serves port "
                 f"{args.port}, the others only their local sockets")
    replica_id = environ.get(REPLICA_ID_VARIABLE) or environ.get("HOSTNAME") or socket.gethostname()
    run = args.work / "run"
    run.mkdir(parents=True, exist_ok=True, mode=0o700)
    replica = ReplicaArgs(spec=args.spec.absolute(), project=project, socket_dir=run, port=args.port,
                          host=args.host, model_cache=args.work / "models", replica_id=replica_id,
                          version=args.version)
    argv = replica.command(str(python) if python is not None else sys.executable)
    env = replica_environment(api, environ, dotenv, python)
    progress(f"starting API {api.name!r} on {args.host}:{args.port} (max_replica_concurrency "
             f"{api.autoscaling.max_replica_concurrency}, version {args.version or '-'})")
    return Plan(argv=argv, env=env, cwd=project)


def fail(message: str, hint: str | None, termination_log: Path) -> None:
    text = f"berth: error: {message}" + (f"\n  hint: {hint}" if hint else "")
    print(text, flush=True)
    if termination_log.exists():  # the kubelet makes it; elsewhere there is none to write
        with contextlib.suppress(OSError):
            termination_log.write_text(text + "\n")


def main(argv: Sequence[str] | None = None, exec_: Callable[[str, list[str], dict[str, str]], object] = os.execve,
         termination_log: Path = Path(TERMINATION_LOG)) -> int:
    args = parser().parse_args(argv)
    environ = dict(os.environ)
    say(f"bootstrap of API {environ.get('BERTH_API', '?')!r} (python {sys.version.split()[0]}, pid {os.getpid()})")
    try:
        found = plan(args, environ)
    except BerthError as exc:  # ConfigError (.env, requirements files), EnvironmentFailed (the build) too
        fail(exc.message, exc.hint, termination_log)
        return 1
    if found is None:
        say("prepared; not starting (--prepare-only)")
        return 0
    os.chdir(found.cwd)
    sys.stdout.flush()
    sys.stderr.flush()
    exec_(found.argv[0], found.argv, found.env)  # returns only when replaced by a test double
    return 0


if __name__ == "__main__":
    sys.exit(main())
