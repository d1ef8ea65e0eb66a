"""Reading the gateway's request logs: logs/<api>/requests-<worker>.log (and one rotation, .log.1).

Each gateway worker appends JSON lines in its own file, so the files are merged by `ts`. `initial`
returns the last lines over every file; `poll` what was appended since, following a rotation (the
rest of the renamed file is read from `.1` before the new file from its start).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_READ = 8 << 20  # bytes read from the end of each file for the first lines shown


@dataclass
class _Position:
    inode: int
    offset: int
    partial: bytes = b""


@dataclass
class RequestLogReader:
    folder: Path
    positions: dict[Path, _Position] = field(default_factory=dict)

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("requests-*.log")) if self.folder.is_dir() else []

    def initial(self, tail: int) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for path in self.files():
            entries += _parse(_read_end(path.with_name(path.name + ".1"))[0])
            inode = _inode(path)
            data, end = _read_end(path)
            if inode is None:
                continue
            data, partial = _complete_lines(data)
            # A line still being written is read whole by the next poll.
            self.positions[path] = _Position(inode, end - len(partial))
            entries += _parse(data)
        entries.sort(key=_ts)
        return entries[-tail:] if tail > 0 else []

    def poll(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = []
        for path in self.files():
            entries += self._poll_file(path)
        entries.sort(key=_ts)
        return entries

    def _poll_file(self, path: Path) -> list[dict[str, Any]]:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        known = self.positions.get(path)
        data = b""
        if known is not None and known.inode != stat.st_ino:
            # Rotated: the file we were reading is now .1; read its rest before the new file.
            rotated = path.with_name(path.name + ".1")
            if _inode(rotated) == known.inode:
                data = known.partial + _read_from(rotated, known.offset)
            known = None
        if known is None:
            known = self.positions[path] = _Position(stat.st_ino, 0, data)
            data = b""
        elif stat.st_size < known.offset:  # truncated or replaced in place: start over
            known.offset, known.partial = 0, b""
        chunk = _read_from(path, known.offset)
        known.offset += len(chunk)
        data, known.partial = _complete_lines(data + known.partial + chunk)
        return _parse(data)


def _complete_lines(data: bytes) -> tuple[bytes, bytes]:
    """The complete lines, and the part after the last newline (a line still being written)."""
    cut = data.rfind(b"\n") + 1
    return data[:cut], data[cut:]


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


def _read_end(path: Path) -> tuple[bytes, int]:
    """The last MAX_READ bytes (from a line start) and the offset they end at."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - MAX_READ))
            data = file.read()
    except FileNotFoundError:
        return b"", 0
    end = max(0, size - MAX_READ) + len(data)
    if size > MAX_READ:
        data = data[data.find(b"\n") + 1:]  # the first line read is cut
    return data, end


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read(MAX_READ)
    except FileNotFoundError:
        return b""


def _parse(data: bytes) -> list[dict[str, Any]]:
    entries = []
    for line in data.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash is skipped, not fatal
        if isinstance(entry, dict) and isinstance(entry.get("ts"), int | float):
            entries.append(entry)
    return entries


def _ts(entry: dict[str, Any]) -> float:
    return float(entry["ts"])
