"""berth: turn a Python predictor into a scalable, monitored web service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["EventStream", "__version__"]

if TYPE_CHECKING:
    from berth.runtime.streaming import EventStream


def __getattr__(name: str) -> Any:
    # `from berth import EventStream` for predictors; loaded on first use, so that `import berth`
    # (the CLI, the control plane) does not load the replica's web framework.
    if name == "EventStream":
        from berth.runtime.streaming import EventStream

        return EventStream
    raise AttributeError(f"module 'berth' has no attribute {name!r}")
