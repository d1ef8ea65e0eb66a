"""Request logs: one JSON line per sampled request, in logs/<api>/requests-<worker index>.log.

The request path only appends a tuple to a list. A timer every half second (and the worker's stop)
turns the list into lines and writes each API's lines with one write() on a file opened for that
flush, so a log folder removed or replaced meanwhile (an API deleted and deployed again) is simply
created anew. A file that would grow past `max_bytes` is first renamed to `.1` (replacing the one
before): at most twice the cap per worker and API.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from json.encoder import encode_basestring_ascii
from pathlib import Path

log = logging.getLogger("berth.gateway")

# Formatting runs on the worker's event loop: small, frequent flushes keep each stall short (a
# 0.5 s batch at ~7,000 req/s held the loop ~10 ms, which showed at p99).
FLUSH_INTERVAL = 0.05
MAX_BYTES = 64 * 2**20

# (api, monotonic end, request id, method, path, status, seconds, replica, reason)
Entry = tuple[str, float, bytes, bytes, bytes, int, float, str | None, str | None]

LINE = ('{"ts":%.6f,"request_id":%s,"api":%s,"method":%s,"path":%s,"status":%d,"seconds":%.6f,'
        '"replica":%s,"reason":%s}\n')


def format_line(entry: Entry, wall_offset: float) -> str:
    """One JSON line; `wall_offset` turns the monotonic end time into unix time."""
    api, ended, request_id, method, path, status, seconds, replica, reason = entry
    return LINE % (ended + wall_offset, _text(request_id), _name(api), _name(method.decode("latin-1")), _text(path),
                   status, seconds, _name(replica), _name(reason))


_names: dict[str, str] = {}  # API names, methods, replica ids, reasons: few, and repeated


def _text(value: bytes) -> str:
    return encode_basestring_ascii(value.decode("latin-1"))


def _name(value: str | None) -> str:
    if value is None:
        return "null"
    found = _names.get(value)
    if found is None:
        if len(_names) > 4096:  # replica ids come and go: start over rather than grow for ever
            _names.clear()
        found = _names[value] = encode_basestring_ascii(value)
    return found


class RequestLog:
    """The buffered request log of one gateway worker, for every API it routes."""

    def __init__(self, folder: Path, worker: int, max_bytes: int = MAX_BYTES,
                 interval: float = FLUSH_INTERVAL) -> None:
        self.folder = folder
        self.file_name = f"requests-{worker}.log"
        self.max_bytes = max_bytes
        self.interval = interval
        self.pending: list[Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._failed: set[str] = set()  # APIs whose log could not be written: warned once each

    def path(self, api: str) -> Path:
        return self.folder / api / self.file_name

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def stop(self) -> None:
        """Cancel the timer and write what is buffered (the worker is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()

    def _tick(self) -> None:
        try:
            self.flush()
        finally:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def flush(self) -> None:
        entries, self.pending = self.pending, []
        if not entries:
            return
        wall_offset = time.time() - time.monotonic()
        lines: dict[str, list[str]] = {}
        for entry in entries:
            lines.setdefault(entry[0], []).append(format_line(entry, wall_offset))
        for api, text in lines.items():
            self._write(api, "".join(text).encode())

    def _write(self, api: str, data: bytes) -> None:
        path = self.path(api)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = self._open(path, len(data))
            try:
                _write_all(descriptor, data)
            finally:
                os.close(descriptor)
        except OSError as exc:
            if api not in self._failed:  # a full disk must not flood the worker's log twice a second
                self._failed.add(api)
                log.warning("request log %s could not be written (%s); its lines are dropped until it can",
                            path, exc)
            return
        self._failed.discard(api)

    def _open(self, path: Path, adding: int) -> int:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        size = os.fstat(descriptor).st_size
        if size and size + adding > self.max_bytes:
            os.close(descriptor)
            os.replace(path, path.with_name(path.name + ".1"))
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return descriptor


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]
