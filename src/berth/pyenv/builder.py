"""Building a project's Python environment with uv, once per set of resolved requirements.

    resolve  -> the pins of what the project asks for, preferring what berth's environment holds and
                holding berth's runtime at its own versions;
    subtract -> pins berth's environment already holds are seen through it, not installed again;
    key      -> the hash of the pins and the Python: the same key is the same environment, shared;
    build    -> `uv venv`, dependencies.sh, `uv pip install --no-deps` of the rest, then a .pth that puts
                berth's own site-packages after the environment's own.

A build happens at deploy time, before any replica of the new version exists; a failed one leaves
nothing behind and changes nothing. Each environment's folder holds `build.log` (what uv and
dependencies.sh printed) and, written last, `built.json`: a folder without it is not an environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import site
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from berth.errors import EnvironmentFailed
from berth.pyenv.project import ProjectDependencies, python_identity
from berth.pyenv.requirements import INDEX_OPTIONS, BaseEnvironment, Line, parse

Progress = Callable[[str], None]
_LINE_END = re.compile(rb"\r\n|\r|\n")
MARKER = "built.json"
BUILD_LOG = "build.log"
BASE_PTH = "_berth_base.pth"
INDEX = ".index"  # <input key> -> <environment key>: a repeat deploy skips resolving
LOCKS = ".locks"


@dataclass(frozen=True)
class Environment:
    key: str
    path: Path
    reused: bool

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


def python_of(envs: Path, key: str) -> Path | None:
    """The interpreter of a built environment, or None when it is not there (or was never finished)."""
    folder = envs / key
    return folder / "bin" / "python" if (folder / MARKER).is_file() else None


def describe(envs: Path, key: str) -> dict[str, object] | None:
    """What `berth describe` shows of an environment: its key, the files it came from, its packages."""
    if not key:
        return None
    try:
        info = json.loads((envs / key / MARKER).read_text())
    except (OSError, ValueError):
        return {"key": key, "missing": True}
    return {"key": key, "files": info.get("files", []), "packages": info.get("pins", []),
            "bytes": info.get("bytes", 0), "built_at": info.get("built_at")}


def touch(envs: Path, key: str) -> None:
    """Used now: the collector keeps the recently used ones."""
    with contextlib.suppress(OSError):
        os.utime(envs / key / MARKER)


class EnvironmentBuilder:
    def __init__(self, envs: Path, uv: str | None = None, base_python: str = sys.executable,
                 environ: Mapping[str, str] | None = None) -> None:
        self.envs = envs.absolute()
        self.uv = uv
        self.base_python = base_python
        # What uv and dependencies.sh inherit (PATH, HOME), below what each deploy sends.
        self.environ = dict(os.environ if environ is None else environ)

    def _uv(self) -> str:
        if self.uv is None:
            try:
                from uv import find_uv_bin

                self.uv = find_uv_bin()
            except (ImportError, FileNotFoundError):
                raise EnvironmentFailed("uv, which builds project environments, is not installed where berth runs",
                                        hint="pip install uv (in berth's own environment) and deploy again") from None
        return self.uv

    async def prepare(self, project: Path, variables: Mapping[str, str], dotenv: Mapping[str, str],
                      progress: Progress) -> Environment | None:
        """The environment `project` runs in (built now if need be), or None for berth's own."""
        project = project.absolute()
        wants = ProjectDependencies.find(project)
        if wants.empty:
            return None
        base = BaseEnvironment.current()
        wants.check(base)
        # dependencies.sh sees .env and may act on it: its values (hashed, never stored) are part of the keys.
        script_environment = hashlib.sha256(json.dumps(sorted(dotenv.items())).encode()).digest()
        input_key = wants.input_key(base, script_environment)
        known = self._indexed(input_key)
        if known is not None:
            if known == "":
                progress(f"{', '.join(wants.files)}: met by berth's own environment (unchanged)")
                return None
            if python_of(self.envs, known) is not None:
                touch(self.envs, known)
                progress(f"reusing environment {known} ({', '.join(wants.files)} unchanged)")
                return Environment(known, self.envs / known, reused=True)
        progress(f"{', '.join(wants.files)}: {len(wants.requirements)} requirement(s)"
                 + (" and uv.lock" if wants.lock is not None else ""))
        run = _Run(self, project, {**self.environ, **wants.index_variables(variables)}, progress, base)
        pins, relied = await run.resolve(wants, base)
        if not pins and wants.script is None:
            progress(f"{', '.join(wants.files)}: every requirement is met by berth's own environment; "
                     "nothing to install")
            self._index(input_key, "")
            return None
        key = _key(pins, relied, wants, script_environment)
        environment = await self._build_once(run, key, pins, wants, dotenv)
        self._index(input_key, key)
        return environment

    async def _build_once(self, run: _Run, key: str, pins: list[str], wants: ProjectDependencies,
                          dotenv: Mapping[str, str]) -> Environment:
        async with _locked(self.envs / LOCKS / f"{key}.lock"):
            if python_of(self.envs, key) is not None:  # built meanwhile, by a deploy that held the lock
                touch(self.envs, key)
                run.progress(f"reusing environment {key} (same resolved requirements)")
                return Environment(key, self.envs / key, reused=True)
            folder = self.envs / key
            shutil.rmtree(folder, ignore_errors=True)  # what an interrupted build left
            try:
                await run.build(folder, pins, wants, dotenv)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return Environment(key, folder, reused=False)

    def _indexed(self, input_key: str) -> str | None:
        try:
            return (self.envs / INDEX / input_key).read_text().strip()
        except OSError:
            return None

    def _index(self, input_key: str, key: str) -> None:
        folder = self.envs / INDEX
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{input_key}.{os.getpid()}"
        staging.write_text(key)
        os.replace(staging, folder / input_key)


def _key(pins: list[str], relied: list[str], wants: ProjectDependencies, script_environment: bytes) -> str:
    digest = hashlib.sha256(python_identity().encode())
    for part in (sorted(pins), sorted(relied)):
        digest.update(b"\0" + "\n".join(part).encode())
    if wants.script is not None:
        digest.update(b"\0" + wants.script.read_bytes() + b"\0" + script_environment)
    return digest.hexdigest()[:16]


class _Run:
    """One build's uv invocations: their environment, their output, their failure."""

    def __init__(self, builder: EnvironmentBuilder, project: Path, environ: Mapping[str, str],
                 progress: Progress, base: BaseEnvironment) -> None:
        self.builder = builder
        self.base = base
        self.project = project
        # uv must not fetch an interpreter: environments are made from berth's own.
        self.environ = {**environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
        self.environ.pop("VIRTUAL_ENV", None)
        self.progress = progress
        self.log: list[str] = []

    async def resolve(self, wants: ProjectDependencies, base: BaseEnvironment) -> tuple[list[str], list[str]]:
        """(what to install: the index options, then pins; pins berth's environment already holds)."""
        lines = [line for line in wants.requirements if not base.satisfies(line)]
        met = [line.text for line in wants.requirements if base.satisfies(line)]
        if met:
            self.progress(f"{len(met)} of {len(wants.requirements)} requirement(s) already met by berth's own "
                          "environment")
        texts = [self._absolute(line.text) for line in lines]
        if wants.lock is not None:
            texts += await self._exported_lock(base)
        if not any(not text.startswith("-") for text in texts):
            return [], []
        with tempfile.TemporaryDirectory(prefix="berth-resolve-") as scratch:
            folder = Path(scratch)
            (folder / "requirements.in").write_text("\n".join(texts) + "\n")
            # What berth's environment met still bounds the rest: a package may not need another version of it.
            (folder / "constraints.txt").write_text("\n".join([*base.pins(), *met]) + "\n")
            (folder / "resolved.txt").write_text("\n".join(base.freeze()) + "\n")  # preferences
            self.progress(f"resolving {len(texts)} requirement(s)…")
            started = time.monotonic()
            await self._uv("pip", "compile", str(folder / "requirements.in"), "-c", str(folder / "constraints.txt"),
                           "-o", str(folder / "resolved.txt"), "--no-header", "--no-annotate", "--quiet",
                           "--python", self.builder.base_python, what="resolving")
            resolved = [line.strip() for line in (folder / "resolved.txt").read_text().splitlines()
                        if line.strip() and not line.lstrip().startswith(("#", "-"))]
        pins = [pin for pin in resolved if not _held(pin, base)]
        relied = [pin for pin in resolved if _held(pin, base)]
        self.progress(f"resolved {len(resolved)} package(s) in {time.monotonic() - started:.2f}s: "
                      f"{len(pins)} to install, {len(relied)} from berth's own environment")
        options = [text for text in texts if text.startswith(INDEX_OPTIONS)]
        return ([*options, *pins] if pins else []), relied

    def _absolute(self, text: str) -> str:
        """Relative paths in a requirement are the project's: make them so wherever uv reads them. A local
        editable install becomes a plain one: the snapshot it would point into is not forever."""
        for option in ("-e ", "--editable "):
            if text.startswith(option):
                text = text[len(option):].strip()
                return text if _remote(text) and not text.startswith("file:") else self._absolute(text)
        for option in ("-c ", "--constraint ", "-f ", "--find-links "):
            if text.startswith(option):
                rest = text[len(option):].strip()
                return f"{option}{self.project / rest}" if not _remote(rest) else text
        return str(self.project / text) if text.startswith(".") else text

    async def _exported_lock(self, base: BaseEnvironment) -> list[str]:
        output = await self._uv("export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header",
                                "--format", "requirements-txt", what="reading uv.lock", capture=True)
        texts = [line.strip() for line in output.splitlines()
                 if line.strip() and not line.lstrip().startswith(("#", "-"))]
        return [text for text in texts if not base.satisfies(Line("uv.lock", 0, text, parse(text)))]

    async def build(self, folder: Path, pins: list[str], wants: ProjectDependencies,
                    dotenv: Mapping[str, str]) -> None:
        started = time.monotonic()
        self.progress(f"creating environment {folder.name}…")
        await self._uv("venv", str(folder), "--python", self.builder.base_python, "--quiet", what="creating")
        if wants.script is not None:
            await self._script(folder, wants.script, dotenv)
        if pins:
            (folder / "requirements.lock").write_text("\n".join(pins) + "\n")
            self.progress(f"installing {sum(not pin.startswith('-') for pin in pins)} package(s)…")
            await self._uv("pip", "install", "--no-deps", "-r", str(folder / "requirements.lock"),
                           "--python", str(folder / "bin" / "python"), what="installing")
        sizes = _installed_sizes(folder)
        _link_base(folder)
        total = sum(sizes.values())
        listed = ", ".join(f"{name} {_size(size)}" for name, size in sorted(sizes.items(), key=lambda i: -i[1])[:8])
        self.progress(f"environment {folder.name} ready in {time.monotonic() - started:.2f}s: "
                      f"{len(sizes)} package(s), {_size(total)}" + (f" ({listed})" if listed else ""))
        (folder / BUILD_LOG).write_text("".join(self.log))
        info = {"key": folder.name, "python": python_identity(), "pins": pins, "files": list(wants.files),
                "built_at": time.time(), "bytes": total, "project": str(self.project)}
        staging = folder / f".{MARKER}"
        staging.write_text(json.dumps(info, indent=2))
        os.replace(staging, folder / MARKER)

    async def _script(self, folder: Path, script: Path, dotenv: Mapping[str, str]) -> None:
        self.progress(f"running {script.name}…")
        bin_dir = str(folder / "bin")
        env = {**self.environ, **dotenv, "VIRTUAL_ENV": str(folder),
               "PATH": f"{bin_dir}{os.pathsep}{self.environ.get('PATH', os.defpath)}"}
        await self._exec(["bash", "-e", str(script)], env, what=f"running {script.name}", prefix=f"{script.name}: ")

    async def _uv(self, *args: str, what: str, capture: bool = False) -> str:
        argv = [self.builder._uv(), *args]
        if capture:
            return await self._capture(argv, what)
        await self._exec(argv, self.environ, what=what)
        return ""

    async def _capture(self, argv: list[str], what: str) -> str:
        """A short command whose standard output is the answer (its messages go to stderr)."""
        process = await _start(argv, self.project, self.environ, what, asyncio.subprocess.PIPE)
        try:
            stdout, stderr = await process.communicate()
        except BaseException:
            _kill(process)
            await process.wait()
            raise
        if process.returncode != 0:
            raise _failure(what, stderr.decode(errors="replace").splitlines(), process.returncode or 1, self.base)
        return stdout.decode(errors="replace")

    async def _exec(self, argv: list[str], env: Mapping[str, str], what: str, prefix: str = "") -> None:
        """Run to the end, its output (stdout and stderr, in order) in the build log and shown as progress."""
        process = await _start(argv, self.project, env, what, asyncio.subprocess.STDOUT)
        output: list[str] = []
        assert process.stdout is not None

        def heard(raw: bytes) -> None:
            line = raw.decode(errors="replace").rstrip()
            output.append(line)
            self.log.append(f"{prefix}{line}\n")
            if _worth_showing(line, prefix):
                self.progress(f"{prefix}{line.strip()}")

        try:
            # In chunks, not lines: a progress bar redrawn with \r is one endless "line" to readline().
            pending = b""
            while chunk := await process.stdout.read(1 << 16):
                *complete, pending = _LINE_END.split(pending + chunk)
                for raw in complete:
                    heard(raw)
                if len(pending) > 1 << 16:
                    heard(pending)
                    pending = b""
            if pending:
                heard(pending)
            code = await process.wait()
        except BaseException:  # cancelled (the deploy's client went away): nothing may outlive it
            _kill(process)
            await process.wait()
            raise
        if code != 0:
            raise _failure(what, output, code, self.base)


async def _start(argv: list[str], cwd: Path, env: Mapping[str, str], what: str,
                 stderr: int) -> asyncio.subprocess.Process:
    """Its own session, so a kill reaches whatever it started too."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=stderr, start_new_session=True)
    except OSError as exc:
        raise EnvironmentFailed(f"the Python environment could not be built ({what}: cannot run {argv[0]}: "
                                f"{exc.strerror})", hint="nothing was changed") from None


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _worth_showing(line: str, prefix: str) -> bool:
    """uv's own summary and size lines; everything dependencies.sh prints."""
    text = line.strip()
    if prefix:
        return bool(text)
    return text.startswith(("Downloading", "Downloaded", "Prepared", "Installed", "Built", "Building", "+ ",
                            "warning"))


def _failure(what: str, output: list[str], code: int, base: BaseEnvironment) -> EnvironmentFailed:
    lines = [line.removeprefix("error: ") for line in output
             if line.strip() and not line.startswith(("Using ", "Resolved "))]
    detail = "\n".join(lines[-25:]) or f"exit status {code}"
    held = [pin for pin in base.pins() if pin in detail]
    if held:  # uv calls them "you require": say whose requirement they are
        detail += (f"\n({', '.join(held)}: berth's runtime {'versions' if len(held) > 1 else 'version'}, "
                   "held in every environment)")
    return EnvironmentFailed(
        f"the Python environment could not be built ({what} failed):\n{detail}",
        hint="fix the requirement or the index settings named above (requirements.txt, pyproject.toml, uv.lock, "
             "dependencies.sh, UV_INDEX_URL…) and deploy again; nothing was changed, what runs keeps running")


def _held(pin: str, base: BaseEnvironment) -> bool:
    name, sep, version = pin.partition("==")
    return bool(sep) and base.installed.get(canonicalize_name(name.strip())) == version.split(";")[0].strip()


def _remote(text: str) -> bool:
    return "://" in text


def _installed_sizes(folder: Path) -> dict[str, int]:
    """Bytes each installed distribution takes, from its RECORD."""
    sizes: dict[str, int] = {}
    for record in folder.glob("lib/python*/site-packages/*.dist-info/RECORD"):
        name = record.parent.name.split("-")[0]
        total = 0
        for row in record.read_text(errors="replace").splitlines():
            size = row.rsplit(",", 1)[-1]
            total += int(size) if size.isdigit() else 0
        sizes[name] = total
    return sizes


def _link_base(folder: Path) -> None:
    """berth's site-packages, after the environment's own: its runtime, and whatever it holds that the
    project did not ask for in another version. addsitedir also runs their .pth files (editable installs)."""
    targets = [path for path in site.getsitepackages() if Path(path).is_dir()]
    source = Path(__file__).resolve().parents[2]  # the folder berth is imported from
    lines = [f"import site; site.addsitedir({path!r})" for path in targets]
    if not any(source == Path(path).resolve() for path in targets):
        lines.append(str(source))
    for packages in folder.glob("lib/python*/site-packages"):
        (packages / BASE_PTH).write_text("\n".join(lines) + "\n")


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


@contextlib.asynccontextmanager
async def _locked(path: Path):  # type: ignore[no-untyped-def]
    """One build of a key at a time, across deploys and processes; waiting does not block the loop."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
