"""Reading replica log files: the last lines of each, then what they append."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path

MAX_READ = 1 << 20


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
        found = sorted(self.folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
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


def _terminated(line: bytes) -> bytes:
    return line if line.endswith(b"\n") else line + b"\n"
