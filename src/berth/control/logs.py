"""Replica log files: the last lines of each, then what they append; pruning and capping them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Set
from pathlib import Path

MAX_READ = 1 << 20  # bytes a poll reads from one file
MAX_TAIL_READ = 16 << 20  # bytes read backwards from a file's end (and its .1) for the first lines shown
TAIL_BLOCK = 64 << 10
RETENTION_SECONDS = 24 * 3600.0  # how long the logs of deleted APIs (or a replica gone) are kept
MAX_LOG_SIZE = 64 << 20  # daemon.log and a live replica's log are copied to .1 and emptied beyond this


class LogReader:
    """Lines from the log files of an API's live replicas (or its newest file when none is live)."""

    def __init__(self, folder: Path, live: set[str]) -> None:
        self.folder = folder
        self.live = live
        self.offsets: dict[Path, int] = {}
        self.inodes: dict[Path, int] = {}
        self.copies: dict[Path, int | None] = {}  # the inode of each file's .1 when it was last read
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
            self.copies[path] = _inode(rotation(path))
            lines, end, inode = read_tail(path, tail)
            self.offsets[path] = end
            if inode is not None:
                self.inodes[path] = inode
            prefix = self._prefix(path, many)
            if lines:
                yield b"".join(prefix + _terminated(line) for line in lines)

    def poll(self) -> Iterator[bytes]:
        files = self.files()
        many = len(files) > 1 or len(self.offsets) > 1
        for path in files:
            data = self._read_new(path)
            if not data:
                continue
            data = self.partial.pop(path, b"") + data
            complete, _, rest = data.rpartition(b"\n")
            if rest:
                self.partial[path] = rest
            if complete:
                prefix = self._prefix(path, many)
                yield b"".join(prefix + line + b"\n" for line in complete.split(b"\n"))

    def _read_new(self, path: Path) -> bytes:
        """What `path` got since the last read. After the cap emptied it, the rest of its copy in `.1`
        comes first, then the file from its start (not from the old offset, which it may never reach)."""
        try:
            stat = path.stat()
        except OSError:
            return b""
        offset = self.offsets.get(path, 0)
        copy, before = _inode(rotation(path)), b""
        if self.inodes.get(path, stat.st_ino) != stat.st_ino:  # another file under the name
            offset = 0
            self.partial.pop(path, None)
        elif stat.st_size < offset:  # truncated in place; by the cap when it made a new copy since
            before = _read_from(rotation(path), offset) if copy != self.copies.get(path) else b""
            offset = 0
        self.inodes[path], self.copies[path] = stat.st_ino, copy
        data = _read_from(path, offset)
        self.offsets[path] = offset + len(data)
        return before + data


def build_lines(path: Path, tail: int) -> bytes:
    """The last `tail` lines of an environment's build log, each marked as such."""
    lines, _, _ = read_tail(path, tail)
    return b"".join(b"[environment] " + _terminated(line) for line in lines)


def read_tail(path: Path, tail: int, limit: int = MAX_TAIL_READ) -> tuple[list[bytes], int, int | None]:
    """The last `tail` lines of `path`, the offset they end at (where following it starts) and its inode
    (None when it is missing). When the file holds fewer lines (the cap just emptied it), the rest come
    from the end of its copy `.1`. Read backwards in blocks, at most `limit` bytes over both: a log of
    gigabytes is not read whole to show its last lines."""
    lines, end, inode, scanned = _read_backwards(path, tail, limit)
    if len(lines) < tail and scanned == end and limit > scanned:
        older, _, _, _ = _read_backwards(rotation(path), tail - len(lines), limit - scanned)
        lines = older + lines
    return lines, end, inode


def _read_backwards(path: Path, tail: int, limit: int) -> tuple[list[bytes], int, int | None, int]:
    """The last `tail` lines, the file's size and inode, and how many bytes were read from its end."""
    try:
        with path.open("rb") as handle:
            inode = os.fstat(handle.fileno()).st_ino
            end = handle.seek(0, os.SEEK_END)
            start, blocks, newlines = end, [], 0
            # tail + 1 newlines: the one before the first line shown tells it starts there
            while tail > 0 and start > 0 and end - start < limit and newlines <= tail:
                size = min(TAIL_BLOCK, start, limit - (end - start))
                start -= size
                handle.seek(start)
                blocks.append(handle.read(size))
                newlines += blocks[-1].count(b"\n")
    except OSError:
        return [], 0, None, 0
    lines = b"".join(reversed(blocks)).splitlines(keepends=True)
    if start > 0:
        lines = lines[1:]  # it began before what was read: cut
    return (lines[-tail:] if tail > 0 else []), end, inode, end - start


def cap_logs(files: Iterable[Path], max_bytes: int) -> list[Path]:
    """Copy each file larger than `max_bytes` to `<name>.1` (replacing the previous copy) and empty it.
    Returns the files capped, for the daemon's log."""
    capped: list[Path] = []
    for path in files:
        try:
            if path.stat().st_size <= max_bytes:
                continue
            _copy_truncate(path)
        except FileNotFoundError:
            continue  # the replica's log went with it
        capped.append(path)
    return capped


def _copy_truncate(path: Path) -> None:
    # Copied and emptied in place rather than renamed: the writers (the supervisor, the daemon and the
    # gateways on daemon.log, a replica on its own) keep the file open with O_APPEND, so their next
    # write lands at the new end, offset 0. What they write between the copy and the truncation is
    # lost: logrotate's copytruncate trade-off, for a file berth cannot make them reopen.
    copy = rotation(path)
    partial = copy.with_name(copy.name + ".tmp")
    try:
        shutil.copyfile(path, partial)  # a disk filled by the log may refuse the copy: the log is kept
        partial.replace(copy)  # whole or not at all for a reader of the copy
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.truncate(path, 0)


def rotation(path: Path) -> Path:
    """Where the cap keeps a log's previous contents (not a `*.log` file, so never taken for a replica's)."""
    return path.with_name(path.name + ".1")


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
                rotation(path).unlink(missing_ok=True)
                removed.append(f"{api_folder.name}/{path.name}")
    return removed


def replica_logs(folder: Path) -> list[Path]:
    """The replicas' output files; the gateway's request logs (requests-<worker>.log) live beside them."""
    return [path for path in folder.glob("*.log") if not path.name.startswith("requests-")]


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(MAX_READ)
    except OSError:
        return b""


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _terminated(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"
