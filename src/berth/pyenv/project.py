"""The dependency files a project folder holds, read once into what a build needs."""

from __future__ import annotations

import configparser
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from berth.errors import ConfigError
from berth.pyenv.requirements import (
    CONDA_FILE,
    DEPENDENCIES_SCRIPT,
    LOCK_FILE,
    PIP_CONFIG,
    PYPROJECT_FILE,
    REQUIREMENTS_FILE,
    UV_CONFIG,
    BaseEnvironment,
    Line,
    RequirementFiles,
    pyproject_lines,
)

# What a deploy forwards from the user's shell to the build: how they reach their package index.
FORWARDED_PREFIXES = ("UV_",)
FORWARDED = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST", "HTTP_PROXY",
             "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
             "SSL_CERT_FILE", "SSL_CERT_DIR")
# pip's names for what uv calls otherwise (uv reads neither pip.conf nor PIP_*).
_PIP_TO_UV = {"index-url": "UV_INDEX_URL", "extra-index-url": "UV_EXTRA_INDEX_URL",
              "find-links": "UV_FIND_LINKS", "trusted-host": "UV_INSECURE_HOST"}


def forwarded(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of a shell that say where packages come from (sent with a deploy)."""
    return {name: value for name, value in environ.items()
            if name.startswith(FORWARDED_PREFIXES) or name in FORWARDED}


@dataclass(frozen=True)
class ProjectDependencies:
    """What one project asks to have installed, as its files say it."""

    root: Path
    requirements: tuple[Line, ...] = ()
    lock: Path | None = None  # uv.lock: its exported pins replace pyproject.toml's dependencies
    script: Path | None = None  # dependencies.sh
    files: tuple[str, ...] = ()  # the files found, by name, for messages
    material: bytes = field(default=b"", repr=False)  # every byte that decides the build

    @property
    def empty(self) -> bool:
        return not self.files

    @classmethod
    def find(cls, root: Path) -> ProjectDependencies:
        if (root / CONDA_FILE).is_file():
            raise ConfigError(
                [f"{CONDA_FILE}: berth does not use conda"],
                hint=f"list these packages in {REQUIREMENTS_FILE} (most are on PyPI under the same name), "
                     f"or install system libraries from {DEPENDENCIES_SCRIPT}; then delete {CONDA_FILE}")
        lines: list[Line] = []
        files: list[str] = []
        included: list[Path] = []
        lock = root / LOCK_FILE if (root / LOCK_FILE).is_file() and (root / PYPROJECT_FILE).is_file() else None
        if (root / REQUIREMENTS_FILE).is_file():
            tree = RequirementFiles(root).read(root / REQUIREMENTS_FILE, REQUIREMENTS_FILE)
            lines += tree.lines
            included = tree.files[1:]
            files.append(REQUIREMENTS_FILE)
        if lock is not None:
            files.append(LOCK_FILE)
        elif (root / PYPROJECT_FILE).is_file():
            declared = pyproject_lines(root / PYPROJECT_FILE, PYPROJECT_FILE)
            if declared:
                lines += declared
                files.append(PYPROJECT_FILE)
        script = root / DEPENDENCIES_SCRIPT if (root / DEPENDENCIES_SCRIPT).is_file() else None
        if script is not None:
            files.append(DEPENDENCIES_SCRIPT)
        names = [*files, *(path.resolve().relative_to(root.resolve()).as_posix() for path in included),
                 UV_CONFIG, PIP_CONFIG]
        material = _material(root, names)
        return cls(root, tuple(lines), lock, script, tuple(files), material)

    def check(self, base: BaseEnvironment) -> None:
        """Refuse, before anything is built, what would break berth's runtime inside the environment."""
        conflicts = base.conflicts(self.requirements)
        if conflicts:
            raise ConfigError([str(conflict) for conflict in conflicts],
                              hint="the replica server runs inside your environment and needs these versions: "
                                   "loosen or remove the pins above (berth's own versions satisfy most code "
                                   "written for nearby ones) and deploy again; nothing was changed")

    def input_key(self, base: BaseEnvironment, script_environment: bytes = b"") -> str:
        """Same files, same Python, same base: the same environment, without resolving again.
        `script_environment`: a digest of what dependencies.sh sees of `.env` (it may act on it)."""
        digest = hashlib.sha256(python_identity().encode() + b"\0" + self.material)
        digest.update("\n".join(base.freeze()).encode())
        if self.script is not None:
            digest.update(b"\0" + script_environment)
        return digest.hexdigest()[:16]

    def index_variables(self, deployed: Mapping[str, str] | None = None) -> dict[str, str]:
        """Where packages come from, in uv's words: the project's pip.conf, below the deploying shell's
        PIP_* variables, below its UV_* ones (pip's own order: the environment overrides config files)."""
        found = self._pip_conf()
        deployed = deployed or {}
        found.update(pip_to_uv({name: value for name, value in deployed.items() if name.startswith("PIP_")}))
        found.update({name: value for name, value in deployed.items() if not name.startswith("PIP_")})
        return found

    def _pip_conf(self) -> dict[str, str]:
        path = self.root / PIP_CONFIG
        if not path.is_file():
            return {}
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError([f"{PIP_CONFIG}: not a valid ini file: {exc.message}"]) from None
        except UnicodeDecodeError:
            raise ConfigError([f"{PIP_CONFIG}: not UTF-8 text"], hint=f"save {PIP_CONFIG} as UTF-8") from None
        options = {key: parser.get(section, key) for section in ("global", "install") for key in _PIP_TO_UV
                   if parser.has_option(section, key)}
        return pip_to_uv({f"PIP_{key.upper().replace('-', '_')}": value for key, value in options.items()})


def pip_to_uv(variables: Mapping[str, str]) -> dict[str, str]:
    """PIP_INDEX_URL and friends as the UV_* variables uv reads (uv reads no PIP_* and no pip.conf)."""
    found: dict[str, str] = {}
    for key, uv_name in _PIP_TO_UV.items():
        value = variables.get(f"PIP_{key.upper().replace('-', '_')}")
        if value:
            # pip separates several values with whitespace; uv splits find-links on commas.
            found[uv_name] = ",".join(value.split()) if key == "find-links" else " ".join(value.split())
    return found


def _material(root: Path, names: list[str]) -> bytes:
    parts = []
    for name in names:
        path = root / name
        if path.is_file():
            parts.append(name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return b"\0".join(parts)


def python_identity() -> str:
    """The interpreter environments are made from: berth's own, so its runtime imports in them."""
    return f"{sys.implementation.name}-{sys.version}-{Path(sys.executable).resolve()}"


def check_project(root: Path) -> None:
    """What can be told without building: conda files, pins against berth's runtime, `.env`'s syntax."""
    from berth.pyenv.dotenv import DOTENV_FILE, read_dotenv

    wants = ProjectDependencies.find(root)
    if wants.requirements:  # reading berth's environment costs a few hundred ms: only when there is a need
        wants.check(BaseEnvironment.current())
    read_dotenv(root / DOTENV_FILE)
