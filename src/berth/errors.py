"""The one exception tree. Only the CLI turns these into exit codes and messages."""

from __future__ import annotations


class BerthError(Exception):
    """Base of every error berth raises on purpose. `hint` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class ConfigError(BerthError):
    """A spec file that cannot be used; `problems` lists every problem found at once."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        super().__init__("\n".join(problems), hint)


class PredictorLoadError(BerthError):
    """The predictor module or class could not be loaded."""


class NotFound(BerthError):
    exit_code = 3


class Conflict(BerthError):
    """The request clashes with existing state: an endpoint another API uses, an API being deleted."""

    exit_code = 4


class DaemonUnavailable(BerthError):
    """The control-plane daemon is not running or cannot be reached."""

    exit_code = 5


class DaemonStartError(BerthError):
    exit_code = 5


class DeployFailed(BerthError):
    """`deploy --wait` saw the API fail: `error`, `error (out of memory)`, or its rollout rolled back."""

    exit_code = 6


class EnvironmentFailed(DeployFailed):
    """A project's Python environment could not be built: a requirement uv could not resolve or install,
    or dependencies.sh failed. Nothing was changed."""


class WaitTimedOut(BerthError):
    """`--wait` ran out of `--timeout` before the API was live (it may still become live)."""

    exit_code = 7


class InsufficientCapacity(BerthError):
    """What was asked for does not fit this machine: refused at deploy, or `compute unavailable` seen by `--wait`."""

    exit_code = 8


class UnsafeFolder(BerthError):
    """A folder berth keeps sockets in is not private to this user: a symlink, someone else's, or open to others."""
