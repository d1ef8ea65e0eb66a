"""The seam between the CLI and whatever serves the APIs: the local daemon first, a Kubernetes cluster next.

Every backend answers with the same shapes, so the CLI renders them without knowing where they came
from and a new backend is a new implementation, not a fork of the CLI:

* an API is an `APIDocument`, the JSON object that `berth get API -o json` prints (the local
  daemon's are built in `control/views.py`; a list holds summaries, one API its detail as well);
* what a deploy or a refresh did to one API is a `Change`, what a delete did is a `Deletion`.

Backends raise the errors of `berth.errors` (NotFound, Conflict, DaemonUnavailable, ...); only the
CLI turns them into exit codes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from berth.config.loader import SpecFile


# A JSON object whose keys are the public contract of `-o json`; typing it field by field would
# duplicate the views for every backend without making the renderers any safer.
APIDocument = dict[str, Any]


@dataclass(frozen=True)
class Change:
    """What a deploy or a refresh did to one API."""

    api: str
    action: str  # creating | updating | up to date | restarting
    version: str  # the version the API will run once the change is rolled out
    message: str  # the line the CLI prints: "creating iris", "iris is up to date"

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(api=str(data["api"]), action=str(data["action"]), version=str(data["version"]),
                   message=str(data["message"]))


@dataclass(frozen=True)
class Deletion:
    """What a delete did: the API is gone from routing; `stopped` once its replicas have exited too."""

    api: str
    stopped: bool
    keys_removed: int = 0  # API keys deleted with it (local daemon)


class Backend(Protocol):
    """Where `berth` commands deploy and what they ask about APIs. One instance serves one command."""

    def ensure_running(self) -> str | None:
        """Make the backend able to take a deploy (the local one starts its daemon).

        Returns a line to tell the user when that did something, else None.
        """

    def deploy(self, spec: SpecFile, verify: bool = False,
               progress: Callable[[str], None] | None = None) -> list[Change]:
        """Apply every API of the spec file, in its order. `progress` hears each step of building the
        project's Python environment (resolving, downloading, installing) as it happens.

        `verify` (what `deploy --wait` asks): an API that would run no replica (scaled to zero)
        starts one anyway, until it has been ready once, so a version that cannot start reports
        `error` now rather than at its first request.
        """

    def list_apis(self, window: float | None = None) -> list[APIDocument]:
        """Every API, as summaries, sorted by name. `window` (seconds): request figures over the last
        `window` seconds from the request history, instead of all-time totals."""

    def get_api(self, name: str, window: float | None = None) -> APIDocument:
        """One API with its endpoint, replicas, last error, recent events, and its prediction monitoring
        (the predictions over `window`, else all history, and their drift)."""

    def describe(self, name: str) -> APIDocument:
        """`get_api` and everything `berth describe` shows: placement, versions, autoscaler decisions."""

    def url(self, name: str) -> str:
        """The address clients send the API's requests to."""

    def logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[str]:
        """The replicas' output: `tail` past lines per replica, then new output while `follow`."""

    def request_logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[dict[str, Any]]:
        """The gateway's request log lines (time, request id, status, seconds, replica, reason), merged
        by time: the last `tail`, then new ones while `follow`."""

    def pin_baseline(self, name: str, since: float | None, until: float | None) -> dict[str, Any]:
        """Pin the reference window drift is measured against (unix times; default: the last hour).
        Returns {"api", "reference", "drift"}."""

    def unpin_baseline(self, name: str) -> dict[str, Any]:
        """Back to the default reference: the first day after the latest deploy."""

    def refresh(self, name: str) -> Change:
        """Restart every replica without downtime: a rolling update to the same code."""

    def delete(self, name: str) -> Deletion:
        """Stop routing to the API, drain its replicas and remove it."""

    def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
