"""Tracebacks as the user needs them: their own frames, with berth's (and Python's import machinery) folded away.

A replica's traceback runs through berth's server, loader and thread pool before it reaches the
predictor; those frames say nothing about the user's bug, so they are hidden unless `--verbose`, and
a marker line says how many were hidden where. The filter works line by line on a stream (`berth logs
-f`), so it keeps what it needs between chunks: an unfinished line and, per log prefix, whether it is
inside a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import berth

BERTH_PACKAGE = str(Path(berth.__file__).resolve().parent) + "/"
# A replica of another berth install writes its own path: recognise any installed copy too.
_INSTALLED_BERTH = re.compile(r"[/\\]site-packages[/\\]berth[/\\]")
# Frames of the machinery that runs the user's module, not of the user's code.
_BOOTSTRAP = ("<frozen runpy>", "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>")
_BOOTSTRAP_FILES = re.compile(r"[/\\](runpy\.py|importlib[/\\]_bootstrap(_external)?\.py|concurrent[/\\]futures"
                              r"[/\\]thread\.py)$")
_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line \d+, in \S')
_PREFIX = re.compile(r"^\[[^\]\s]+\] ")  # `[replica-id] ` when `berth logs` interleaves several replicas
TRACEBACK_START = "Traceback (most recent call last):"


def hidden_file(filename: str) -> bool:
    """Whether a frame of this file belongs to berth or to the bootstrap that runs the user's module."""
    return (filename.startswith(BERTH_PACKAGE) or bool(_INSTALLED_BERTH.search(filename))
            or filename in _BOOTSTRAP or bool(_BOOTSTRAP_FILES.search(filename)))


def marker(count: int) -> str:
    frames = "frame" if count == 1 else "frames"
    return f"  [{count} berth {frames} hidden; --verbose shows them]"


@dataclass
class _Stream:
    """Where one log prefix is: outside a traceback, or inside one (in a shown or a hidden frame)."""

    inside: bool = False
    hiding: bool = False
    hidden: int = 0


@dataclass
class FrameFilter:
    """Feed it text as it comes; it returns the text with berth's frames replaced by marker lines."""

    partial: str = ""
    streams: dict[str, _Stream] = field(default_factory=dict)

    def feed(self, chunk: str) -> str:
        lines = (self.partial + chunk).split("\n")
        self.partial = lines.pop()
        return "".join(line + "\n" for done in map(self._line, lines) for line in done)

    def flush(self) -> str:
        """The unfinished last line, and a marker still owed when the text ended inside hidden frames."""
        rest, self.partial = self.partial, ""
        out = self._line(rest) if rest else []
        for prefix, stream in self.streams.items():
            if stream.hidden:
                out.append(prefix + marker(stream.hidden))
                stream.hidden = 0
        return "".join(line + "\n" for line in out)

    def _line(self, line: str) -> list[str]:
        match = _PREFIX.match(line)
        prefix = match.group(0) if match else ""
        body = line[len(prefix):]
        stream = self.streams.setdefault(prefix, _Stream())
        frame = _FRAME.match(body)
        if not stream.inside and frame is None:
            # A frame line is unmistakable, so `--tail` cutting a traceback after its first line still works.
            stream.inside = body.startswith(TRACEBACK_START)
            return [line]
        stream.inside = True
        if frame is not None:
            stream.hiding = hidden_file(frame.group("file"))
        elif not body.startswith("    ") and not body.startswith("  [Previous line repeated"):
            stream.inside = stream.hiding = False  # the exception line: the traceback ends here
            if body.startswith(TRACEBACK_START):
                stream.inside = True
        if stream.hiding:
            stream.hidden += 1 if frame is not None else 0
            return []
        out = [prefix + marker(stream.hidden)] if stream.hidden else []
        stream.hidden = 0
        return [*out, line]


def user_frames(text: str) -> str:
    """A whole traceback (or log text) with berth's frames hidden."""
    frames = FrameFilter()
    return frames.feed(text) + frames.flush()
