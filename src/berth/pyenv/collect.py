"""Removing the Python environments no deployed version uses, keeping the last few for a quick way back."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Set
from pathlib import Path

from berth.pyenv.builder import INDEX, LOCKS, MARKER

KEEP_RECENT = 3  # unused environments kept anyway, the most recently used first
GRACE_SECONDS = 600.0  # a deploy builds (or reuses) one a moment before the store names it


def collect_environments(envs: Path, keep: Set[str], now: float, keep_recent: int = KEEP_RECENT,
                         grace: float = GRACE_SECONDS) -> list[str]:
    """Remove environments not in `keep` beyond the `keep_recent` most recently used, and what an
    interrupted build left; never one younger than `grace` or one being built. Returns the keys removed."""
    if not envs.is_dir():
        return []
    unused = sorted((folder for folder in envs.iterdir() if _environment(folder) and folder.name not in keep),
                    key=_last_used, reverse=True)
    built = [folder for folder in unused if (folder / MARKER).is_file()]
    spare = {folder.name for folder in built[:keep_recent]}
    removed = [folder.name for folder in unused
               if folder.name not in spare and now - _last_used(folder) > grace and _remove(envs, folder, now, grace)]
    if removed:
        _forget(envs, set(removed))
    return removed


def _environment(folder: Path) -> bool:
    return folder.is_dir() and not folder.is_symlink() and not folder.name.startswith(".")


def _last_used(folder: Path) -> float:
    for path in (folder / MARKER, folder):
        with contextlib.suppress(OSError):
            return path.stat().st_mtime
    return 0.0


def _remove(envs: Path, folder: Path, now: float, grace: float) -> bool:
    """Under the build's lock, so a deploy never sees half of one. The lock file stays: removing it
    would let two builders lock two different files of one name."""
    lock = envs / LOCKS / f"{folder.name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # being built right now
        try:
            if now - _last_used(folder) <= grace:
                return False  # reused since it was looked at
            (folder / MARKER).unlink(missing_ok=True)  # first: an interrupted removal reads as unbuilt
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return not folder.exists()


def _forget(envs: Path, keys: Set[str]) -> None:
    """Index entries that point at a removed environment: the next deploy resolves again."""
    index = envs / INDEX
    if not index.is_dir():
        return
    for entry in index.iterdir():
        with contextlib.suppress(OSError):
            if entry.read_text().strip() in keys:
                entry.unlink()
