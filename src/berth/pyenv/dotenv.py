"""A project's `.env`: `NAME=value` lines loaded into every replica's environment.

The values are often secrets, so nothing here ever puts one in a message: a problem names its line.
"""

from __future__ import annotations

import io
from pathlib import Path

from dotenv.main import resolve_variables
from dotenv.parser import parse_stream

from berth.errors import ConfigError

DOTENV_FILE = ".env"


def parse_dotenv(text: str, label: str = DOTENV_FILE) -> dict[str, str]:
    """Variables in order (a later line wins); `${NAME}` refers to a variable above it or the daemon's own."""
    problems: list[str] = []
    pairs: list[tuple[str, str | None]] = []
    for binding in parse_stream(io.StringIO(text)):
        # python-dotenv counts a binding from the blank lines before it.
        original = binding.original.string
        line = binding.original.line + original[: len(original) - len(original.lstrip())].count("\n")
        if binding.error:
            problems.append(f"{label}:{line}: not a NAME=value line")
        elif binding.key is not None:
            if binding.value is None:  # the "name" may well be a pasted secret: do not repeat it
                problems.append(f"{label}:{line}: no `=` on this line (write NAME= for an empty value)")
            pairs.append((binding.key, binding.value))
    if problems:
        raise ConfigError(problems, hint="each line of .env is NAME=value (quotes, `export` and # comments "
                                         "allowed); the values are not shown here, as they may be secrets")
    return {name: value or "" for name, value in resolve_variables(pairs, override=True).items()}


def read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{path.name}: not UTF-8 text"], hint="save .env as UTF-8") from None
    return parse_dotenv(text, path.name)
