"""Spec files: parsed once, at the edge, into frozen models."""

from berth.config.loader import SpecFile, load_spec, parse_spec_text
from berth.config.schema import API, RealtimeAPI

__all__ = ["API", "RealtimeAPI", "SpecFile", "load_spec", "parse_spec_text"]
