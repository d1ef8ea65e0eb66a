"""What a project asks to have installed, and how that meets the environment berth itself runs in.

Berth's runtime (the replica server) runs inside every project environment, so its own dependencies must
stay at the versions berth was tested with: they are constraints, and a requirement that contradicts one is
refused by name before anything is built. Everything else berth's environment happens to hold is a base
layer: a requirement it already satisfies is not installed again.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from berth.errors import ConfigError

REQUIREMENTS_FILE = "requirements.txt"
PYPROJECT_FILE = "pyproject.toml"
LOCK_FILE = "uv.lock"
DEPENDENCIES_SCRIPT = "dependencies.sh"
CONDA_FILE = "conda-packages.txt"
UV_CONFIG = "uv.toml"
PIP_CONFIG = "pip.conf"

# pip's rules: a comment starts at a `#` at the start or after whitespace (not in a URL's fragment).
_COMMENT = re.compile(r"(^|\s+)#.*$")
_INCLUDE = re.compile(r"^(-r|--requirement|-c|--constraint)(?:\s+|=)(\S+)$")
_PER_REQUIREMENT = re.compile(r"\s+--(?:hash|config-settings|global-option)[=\s]\S+")
INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "--no-index")


@dataclass(frozen=True)
class Line:
    """One requirement of a requirements file, where it was written."""

    file: str
    number: int  # 0: a file without lines of its own (pyproject.toml's list)
    text: str
    requirement: Requirement | None  # None: an option (-c, --index-url), a URL or a path: left to uv

    @property
    def where(self) -> str:
        return f"{self.file}:{self.number}" if self.number else self.file


@dataclass(frozen=True)
class Conflict:
    line: Line
    runs: str  # the version berth runs

    def __str__(self) -> str:
        assert self.line.requirement is not None
        name = self.line.requirement.name
        return (f"{self.line.where}: {self.line.text} conflicts with berth's runtime, which runs "
                f"{name} {self.runs}")


@dataclass
class RequirementFiles:
    """A requirements file with the files its `-r` and `-c` lines name, read in order."""

    root: Path
    lines: list[Line] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def read(self, path: Path, label: str) -> RequirementFiles:
        if path.resolve() in {file.resolve() for file in self.files}:
            return self  # included twice (or in a loop): once is enough
        self.files.append(path)
        for number, text in _logical_lines(path):
            include = _INCLUDE.match(text)
            if include is None:
                self.lines.append(Line(label, number, text, parse(text)))
                continue
            target = self._inside(path, include.group(2), f"{label}:{number}")
            if include.group(1) in ("-r", "--requirement"):
                self.read(target, target.relative_to(self.root.resolve()).as_posix())
            else:  # constraints shape the resolution; they are not requirements of their own
                self.files.append(target)
                self.lines.append(Line(label, number, f"-c {target}", None))
        return self

    def _inside(self, path: Path, name: str, where: str) -> Path:
        target = (path.parent / name).resolve()
        root = self.root.resolve()
        if not target.is_relative_to(root):
            raise ConfigError([f"{where}: {name} is outside the project folder"],
                              hint="only the project folder is copied at deploy: copy the file into it (or "
                                   "paste its lines in) and name it by a path inside the project")
        if not target.is_file():
            raise ConfigError([f"{where}: {name} does not exist"], hint="create it, or remove the line")
        return target


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """(number of its first physical line, text) of each line with content: continuations joined,
    comments and per-requirement options (hashes) removed."""
    physical = path.read_text(encoding="utf-8", errors="replace").splitlines()
    found: list[tuple[int, str]] = []
    index = 0
    while index < len(physical):
        number, text = index + 1, physical[index]
        while text.endswith("\\") and index + 1 < len(physical):
            index += 1
            text = text[:-1] + " " + physical[index]
        index += 1
        content = _PER_REQUIREMENT.sub("", _COMMENT.sub("", text)).strip().removesuffix("\\").strip()
        if content:
            found.append((number, content))
    return found


def read_lines(path: Path, label: str) -> list[Line]:
    """The requirements of a requirements file with their line numbers (`-r` files read in)."""
    return RequirementFiles(path.parent).read(path, label).lines


def parse(text: str) -> Requirement | None:
    if text.startswith("-") or "://" in text or text.startswith((".", "/")):
        return None
    try:
        return Requirement(text)
    except InvalidRequirement:
        return None


def pyproject_lines(path: Path, label: str) -> list[Line]:
    """`[project].dependencies` of a pyproject.toml (its line numbers are not tracked: the file's name is)."""
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{label}: not valid TOML: {exc}"], hint="fix the file and deploy again") from None
    dependencies = data.get("project", {}).get("dependencies", [])
    if not isinstance(dependencies, list) or not all(isinstance(item, str) for item in dependencies):
        raise ConfigError([f"{label}: [project].dependencies must be a list of requirement strings"])
    return [Line(label, 0, text, parse(text)) for text in dependencies]


def has_pyproject_dependencies(path: Path) -> bool:
    return path.is_file() and bool(pyproject_lines(path, path.name))


# --- berth's own environment ------------------------------------------------------------------------

@dataclass(frozen=True)
class BaseEnvironment:
    """The distributions installed where berth runs ({canonical name: version}) and which of them the
    runtime needs (berth's dependency closure)."""

    installed: Mapping[str, str]
    runtime: frozenset[str]

    @classmethod
    def current(cls) -> BaseEnvironment:
        """Read again only when an install or removal has touched a folder on sys.path since last time."""
        return _current(_path_stamp())

    @classmethod
    def read(cls) -> BaseEnvironment:
        installed: dict[str, str] = {}
        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"]
            if name:
                installed.setdefault(canonicalize_name(name), dist.version)
        return cls(installed, frozenset(_closure("berth", installed)))

    def pins(self) -> list[str]:
        """Constraints that keep the runtime's packages at berth's versions."""
        return sorted(f"{name}=={self.installed[name]}" for name in self.runtime if name != "berth")

    def conflicts(self, lines: Iterable[Line]) -> list[Conflict]:
        found = []
        for line in lines:
            requirement = line.requirement
            if requirement is None or not _applies(requirement):
                continue
            name = canonicalize_name(requirement.name)
            if name in self.runtime and name in self.installed and not requirement.specifier.contains(
                    self.installed[name], prereleases=True):
                found.append(Conflict(line, self.installed[name]))
        return found

    def satisfies(self, line: Line) -> bool:
        """Whether the requirement is met as it stands by what berth's environment holds."""
        requirement = line.requirement
        if requirement is None:
            return False
        if not _applies(requirement):
            return True
        version = self.installed.get(canonicalize_name(requirement.name))
        return (version is not None and not requirement.extras and not requirement.url
                and requirement.specifier.contains(version, prereleases=True))

    def freeze(self) -> list[str]:
        return sorted(f"{name}=={version}" for name, version in self.installed.items() if name != "berth")


@functools.lru_cache(maxsize=1)
def _current(stamp: tuple[tuple[str, int], ...]) -> BaseEnvironment:
    return BaseEnvironment.read()


def _path_stamp() -> tuple[tuple[str, int], ...]:
    stamps = []
    for entry in sys.path:
        with contextlib.suppress(OSError):
            stamps.append((entry, os.stat(entry or ".").st_mtime_ns))
    return tuple(stamps)


def _applies(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate()


def _closure(root: str, installed: Mapping[str, str]) -> set[str]:
    """Every distribution `root` needs (with the extras its dependents ask for), from installed metadata."""
    seen: set[tuple[str, str]] = set()
    pending: list[tuple[str, str]] = [(root, "")]
    while pending:
        name, extra = pending.pop()
        name = canonicalize_name(name)
        if (name, extra) in seen or name not in installed:
            continue
        seen.add((name, extra))
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        environment = {**default_environment(), "extra": extra}
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if requirement.marker is None or requirement.marker.evaluate(environment):  # type: ignore[arg-type]
                pending += [(requirement.name, ""), *((requirement.name, wanted) for wanted in requirement.extras)]
    return {name for name, _ in seen}
