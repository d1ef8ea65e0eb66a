"""Replica log files: the last lines of each, then what they append; pruning and capping them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator, Set
from pathlib import Path

MAX_READ = 1 << 20  # bytes a poll reads from one file
MAX_TAIL_READ = 16 << 20  # bytes read backwards from a file's end (and its .1) for the first lines shown
TAIL_BLOCK = 64 << 10
COMPARED = 4 << 10  # bytes of a new `.1` compared with its file's start, to tell whether it was emptied yet
RETENTION_SECONDS = 24 * 3600.0  # how long the logs of deleted APIs (or a replica gone) are kept
MAX_LOG_SIZE = 64 << 20  # daemon.log and a live replica's log are copied to .1 and emptied beyond this


class LogReader:
    """Lines from the log files of an API's live replicas (or its newest file when none is live)."""

    def __init__(self, folder: Path, live: set[str]) -> None:
        self.folder = folder
        self.live = live
        self.followers: dict[Path, Follower] = {}

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
            follower = self.followers[path] = Follower(path)
            lines, follower.offset, follower.inode = read_tail(path, tail)
            prefix = self._prefix(path, many)
            if lines:
                yield b"".join(prefix + _terminated(line) for line in lines)

    def poll(self) -> Iterator[bytes]:
        files = self.files()
        many = len(files) > 1 or len(self.followers) > 1
        for path in files:
            follower = self.followers.get(path)
            if follower is None:
                follower = self.followers[path] = Follower(path)
            complete = follower.lines()
            if complete:
                prefix = self._prefix(path, many)
                yield b"".join(prefix + line + b"\n" for line in complete.split(b"\n"))


class Follower:
    """One log file followed across the cap's copy-and-empty: what it got since the last read, in order.

    A cap shows as a new `.1` (another inode). What the file got between the last read and the copy is
    then in `.1` from the old offset on: that is read to its end first, a poll at a time, then the file
    from its start. A file emptied by hand (no new copy) is read from its start; one replaced under
    its name likewise."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.copy_path = rotation(path)
        self.offset = 0
        self.inode: int | None = None
        self.copy = _inode(self.copy_path)  # the `.1` there was when `offset` was taken
        self.draining: int | None = None  # where the rest of `.1` starts, until it is read
        self.partial = b""

    def lines(self) -> bytes:
        """The complete lines read since the last call (without the last newline), or b""."""
        data = self.partial + self._read()
        complete, newline, self.partial = data.rpartition(b"\n")
        return complete if newline else b""

    def _read(self) -> bytes:
        before = self._drain() if self.draining is not None else b""
        if self.draining is not None:
            return before  # more of the copy is left for the next poll
        try:
            stat = self.path.stat()
        except OSError:
            return before
        copy = _inode(self.copy_path)
        if self.inode is not None and stat.st_ino != self.inode:  # another file under the name
            self.offset, self.partial, self.copy = 0, b"", copy
        elif copy != self.copy and copy is not None:  # capped since the last read
            if self._not_emptied_yet(stat.st_size):
                return before  # the next poll sees it emptied
            self.draining, self.offset, self.copy = self.offset, 0, copy
            return self._read()
        elif stat.st_size < self.offset:  # emptied by hand
            self.offset = 0
        self.inode = stat.st_ino
        data = _read_from(self.path, self.offset)
        self.offset += len(data)
        return before + data

    def _not_emptied_yet(self, size: int) -> bool:
        """Whether the cap copied the file but has not emptied it yet: it still holds what the copy
        begins with (a file emptied and written again since begins with later lines)."""
        if size < _size(self.copy_path):
            return False
        head = _read_from(self.copy_path, 0, COMPARED)
        return bool(head) and _read_from(self.path, 0, len(head)) == head

    def _drain(self) -> bytes:
        assert self.draining is not None
        data = _read_from(self.copy_path, self.draining)
        if len(data) == MAX_READ:
            self.draining += len(data)
            return data
        self.draining = None
        # The copy may end inside a line the file then finished: keep it a line of its own rather than
        # glue it to the file's first one.
        unfinished = self.partial + data
        return data + b"\n" if unfinished and not unfinished.endswith(b"\n") else data


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


def cap_logs(files: Iterable[Path], max_bytes: int) -> tuple[list[Path], list[str]]:
    """Copy each file larger than `max_bytes` to `<name>.1` (replacing the previous copy) and empty it.
    Returns the files capped and, for those that could not be (a full disk refuses the copy), why:
    one file failing never stops the others; it is tried again next round."""
    capped: list[Path] = []
    failed: list[str] = []
    for path in files:
        try:
            if path.stat().st_size <= max_bytes:
                continue
            _copy_truncate(path)
        except FileNotFoundError:
            continue  # the replica's log went with it
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
            continue
        capped.append(path)
    return capped, failed


def _copy_truncate(path: Path) -> None:
    # Copied and emptied in place rather than renamed: the writers (the supervisor, the daemon and the
    # gateways on daemon.log, a replica on its own) keep the file open with O_APPEND, so their next
    # write lands at the new end, offset 0. What they write between the copy and the truncation is
    # lost: logrotate's copytruncate trade-off, for a file berth cannot make them reopen.
    copy, partial = rotation(path), _partial_copy(path)
    try:
        shutil.copyfile(path, partial)  # a disk filled by the log may refuse the copy: the log is kept
        partial.replace(copy)  # whole or not at all for a reader of the copy
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.truncate(path, 0)


def _partial_copy(path: Path) -> Path:
    return path.with_name(path.name + ".1.tmp")


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
                _partial_copy(path).unlink(missing_ok=True)  # left by a daemon killed while copying
                removed.append(f"{api_folder.name}/{path.name}")
    return removed


def replica_logs(folder: Path) -> list[Path]:
    """The replicas' output files; the gateway's request logs (requests-<worker>.log) live beside them."""
    return [path for path in folder.glob("*.log") if not path.name.startswith("requests-")]


def _read_from(path: Path, offset: int, size: int | None = None) -> bytes:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(MAX_READ if size is None else size)
    except OSError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


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
