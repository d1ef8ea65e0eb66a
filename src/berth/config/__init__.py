"""Spec files: parsed once, at the edge, into frozen models."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from berth.config.loader import SpecFile, load_spec, parse_spec_text
    from berth.config.schema import API, RealtimeAPI

__all__ = ["API", "RealtimeAPI", "SpecFile", "load_spec", "parse_spec_text"]
_HOMES = {"API": "schema", "RealtimeAPI": "schema", "SpecFile": "loader", "load_spec": "loader",
          "parse_spec_text": "loader"}


def __getattr__(name: str) -> Any:
    # Loaded on first use: building the models costs a CLI command that reads no spec (`berth get`)
    # a fifth of a second, and the units and positions modules beside them need none of it.
    if name not in _HOMES:
        raise AttributeError(f"module 'berth.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"berth.config.{_HOMES[name]}"), name)
