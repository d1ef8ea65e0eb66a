"""Content-addressed copies of project folders, so files edited after a deploy change nothing."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Set
from contextlib import contextmanager
from pathlib import Path

from berth.config.project import ALWAYS_IGNORED, IGNORE_FILE, ProjectFile, scan_project
from berth.errors import BerthError, ConfigError

MAX_PROJECT_BYTES = 512 * 2**20
# A snapshot this fresh is never collected: a deploy takes (or reuses) it a moment before the store
# names it, and the collector cannot see that moment. Deploys touch what they reuse, so this holds.
GRACE_SECONDS = 600.0
LOCK_FILE = ".collect.lock"

__all__ = ["ALWAYS_IGNORED", "GRACE_SECONDS", "IGNORE_FILE", "MAX_PROJECT_BYTES", "collect_snapshots",
           "digest_files", "project_files", "snapshot"]


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
    # Shared: deploys do not wait for each other, only for a collection in progress (and it for them).
    with _locked(store, fcntl.LOCK_SH):
        if not target.is_dir():
            _copy(files, store, digest, target)
        os.utime(target)  # fresh again: the collector leaves it alone until the store names it
    return digest, target


def _copy(files: list[ProjectFile], store: Path, digest: str, target: Path) -> None:
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


def collect_snapshots(store: Path, keep: Set[str], now: float | None = None,
                      grace: float = GRACE_SECONDS) -> list[str]:
    """Remove the snapshots not in `keep` (and abandoned staging copies) older than `grace`.

    Returns the names removed; nothing when a deploy is snapshotting right now (the next round will).
    """
    if not store.is_dir():
        return []
    now = time.time() if now is None else now
    try:
        with _locked(store, fcntl.LOCK_EX | fcntl.LOCK_NB):
            return [folder.name for folder in sorted(store.iterdir())
                    if _collectable(folder, keep, now, grace) and _remove(folder)]
    except BlockingIOError:
        return []


def _collectable(folder: Path, keep: Set[str], now: float, grace: float) -> bool:
    if folder.name in keep or folder.name == LOCK_FILE or folder.is_symlink() or not folder.is_dir():
        return False
    try:
        return now - folder.stat().st_mtime > grace
    except FileNotFoundError:
        return False


def _remove(folder: Path) -> bool:
    shutil.rmtree(folder, ignore_errors=True)
    return not folder.exists()


@contextmanager
def _locked(store: Path, operation: int) -> Iterator[None]:
    """flock conflicts between two open files even in one process, so it orders the deploy's thread and
    the collector's thread inside the daemon as well as two processes."""
    store.mkdir(parents=True, exist_ok=True)
    with (store / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
