"""Content-addressed copies of project folders, so files edited after a deploy change nothing."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from berth.errors import BerthError

MAX_PROJECT_BYTES = 512 * 2**20
IGNORE_FILE = ".berthignore"
ALWAYS_IGNORED = ("__pycache__", "*.pyc", "*.pyo", "*.pyd")


def project_files(root: Path, spec_file: Path) -> list[Path]:
    """Files that make up the project: hidden entries, caches, the spec and ignored paths left out."""
    patterns = [*ALWAYS_IGNORED, *_ignore_patterns(root)]
    files: list[Path] = []
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _ignored(here / d, root, patterns))
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or path == spec_file or _ignored(path, root, patterns):
                continue
            if path.is_file():
                files.append(path)
    return files


def _ignore_patterns(root: Path) -> list[str]:
    ignore = root / IGNORE_FILE
    if not ignore.is_file():
        return []
    lines = (line.strip() for line in ignore.read_text(encoding="utf-8").splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def _ignored(path: Path, root: Path, patterns: list[str]) -> bool:
    relative = path.relative_to(root).as_posix()
    return any(fnmatch.fnmatch(path.name, p) or fnmatch.fnmatch(relative, p) for p in patterns)


def digest_files(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256()
    total = 0
    for path in files:
        data = path.read_bytes()
        total += len(data)
        if total > MAX_PROJECT_BYTES:
            raise BerthError(
                f"the project folder {root} holds more than {MAX_PROJECT_BYTES // 2**20} MiB",
                hint=f"list large files (datasets, checkpoints) in {root / IGNORE_FILE} and load them "
                     "from their own path in your predictor's config",
            )
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(data).digest())
    return digest.hexdigest()[:20]


def snapshot(root: Path, spec_file: Path, store: Path) -> tuple[str, Path]:
    """Copy the project into `store/<digest>` (once) and return the digest and the copy's path."""
    files = project_files(root, spec_file)
    digest = digest_files(root, files)
    target = store / digest
    if target.is_dir():
        return digest, target
    staging = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=store))
    try:
        for path in files:
            destination = staging / path.relative_to(root)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # a concurrent deploy of the same content may have won the rename
            raise
    return digest, target
