"""Reading replica log files: the last lines of each, then what they append."""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Iterator, Set
from pathlib import Path

MAX_READ = 1 << 20
RETENTION_SECONDS = 24 * 3600.0  # how long the logs of a deleted API (or a replica gone) are kept


class LogReader:
    """Lines from the log files of an API's live replicas (or its newest file when none is live)."""

    def __init__(self, folder: Path, live: set[str]) -> None:
        self.folder = folder
        self.live = live
        self.offsets: dict[Path, int] = {}
        self.partial: dict[Path, bytes] = {}

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        found = sorted(replica_logs(self.folder), key=lambda p: p.stat().st_mtime)
        chosen = [path for path in found if path.stem in self.live]
        return chosen or found[-1:]

    def _prefix(self, path: Path, many: bool) -> bytes:
        return f"[{path.stem}] ".encode() if many else b""

    def initial(self, tail: int) -> Iterator[bytes]:
        files = self.files()
        many = len(files) > 1
        for path in files:
            data = path.read_bytes()
            self.offsets[path] = len(data)
            lines: deque[bytes] = deque(data.splitlines(keepends=True), maxlen=max(tail, 0))
            prefix = self._prefix(path, many)
            if lines:
                yield b"".join(prefix + _terminated(line) for line in lines)

    def poll(self) -> Iterator[bytes]:
        files = self.files()
        many = len(files) > 1 or len(self.offsets) > 1
        for path in files:
            offset = self.offsets.get(path, 0)
            try:
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read(MAX_READ)
            except OSError:
                continue
            if not data:
                continue
            self.offsets[path] = offset + len(data)
            data = self.partial.pop(path, b"") + data
            complete, _, rest = data.rpartition(b"\n")
            if rest:
                self.partial[path] = rest
            if complete:
                prefix = self._prefix(path, many)
                yield b"".join(prefix + line + b"\n" for line in complete.split(b"\n"))


def build_lines(path: Path, tail: int) -> bytes:
    """The last `tail` lines of an environment's build log, each marked as such."""
    try:
        data = path.read_bytes()
    except OSError:
        return b""
    lines: deque[bytes] = deque(data.splitlines(keepends=True), maxlen=max(tail, 0))
    return b"".join(b"[environment] " + _terminated(line) for line in lines)


def collect_logs(folder: Path, apis: Set[str], live: Set[str], now: float,
                 retention: float = RETENTION_SECONDS) -> list[str]:
    """Remove what no one will read: a deleted API's folder once nothing was written to it for
    `retention`, and the files of replicas gone that long from an API that remains (its newest file
    stays, as `berth logs` shows it when no replica runs). Returns what was removed, for the daemon's log."""
    if not folder.is_dir():
        return []
    removed: list[str] = []
    for api_folder in sorted(path for path in folder.iterdir() if path.is_dir() and not path.is_symlink()):
        files = sorted(replica_logs(api_folder), key=_mtime)
        if api_folder.name not in apis:
            quiet_since = max([_mtime(api_folder), *map(_mtime, files)])
            if not any(path.stem in live for path in files) and now - quiet_since > retention:
                shutil.rmtree(api_folder, ignore_errors=True)
                removed.append(f"{api_folder.name}/")
            continue
        for path in files[:-1]:
            if path.stem not in live and now - _mtime(path) > retention:
                path.unlink(missing_ok=True)
                removed.append(f"{api_folder.name}/{path.name}")
    return removed


def replica_logs(folder: Path) -> list[Path]:
    """The replicas' output files; the gateway's request logs (requests-<worker>.log) live beside them."""
    return [path for path in folder.glob("*.log") if not path.name.startswith("requests-")]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _terminated(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"
