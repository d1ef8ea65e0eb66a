"""Content-addressed copies of project folders, so files edited after a deploy change nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from berth.config.project import ALWAYS_IGNORED, IGNORE_FILE, ProjectFile, scan_project
from berth.errors import BerthError, ConfigError

MAX_PROJECT_BYTES = 512 * 2**20

__all__ = ["ALWAYS_IGNORED", "IGNORE_FILE", "MAX_PROJECT_BYTES", "digest_files", "project_files", "snapshot"]


def project_files(root: Path, spec_file: Path) -> list[ProjectFile]:
    """Files that make up the project; refused whole when a symlink leaves the project (validation
    reports the same problems earlier, this guards deploys that skipped it)."""
    scan = scan_project(root, spec_file)
    if scan.problems:
        raise ConfigError(scan.problems, hint=f"fix the links or list them in {root / IGNORE_FILE}; "
                                              "nothing was deployed")
    return scan.files


def digest_files(root: Path, files: list[ProjectFile]) -> str:
    digest = hashlib.sha256()
    total = 0
    for file in files:
        data = file.source.read_bytes()
        total += len(data)
        if total > MAX_PROJECT_BYTES:
            raise BerthError(
                f"the project folder {root} holds more than {MAX_PROJECT_BYTES // 2**20} MiB",
                hint=f"list large files (datasets, checkpoints) in {root / IGNORE_FILE} and load them "
                     "from their own path in your predictor's config",
            )
        digest.update(file.relative.as_posix().encode() + b"\0")
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
        for file in files:
            destination = staging / file.relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file.source, destination)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not target.is_dir():  # a concurrent deploy of the same content may have won the rename
            raise
    return digest, target
