"""API and replica status, derived from replica states with Cortex's words."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class ReplicaState(enum.StrEnum):
    PENDING = "pending"
    INITIALIZING = "initializing"
    READY = "ready"
    TERMINATING = "terminating"
    FAILED = "failed"
    KILLED = "killed"
    KILLED_OOM = "killed_oom"


class APIStatus(enum.StrEnum):
    LIVE = "live"
    UPDATING = "updating"
    ERROR = "error"
    ERROR_OOM = "error (out of memory)"
    COMPUTE_UNAVAILABLE = "compute unavailable"


@dataclass(frozen=True)
class ReplicaView:
    """What status derivation needs to know of one replica."""

    state: ReplicaState
    current: bool  # belongs to the version the API should run
    failures: int = 0  # consecutive failed starts
    unplaceable: bool = False  # pending: the machine lacks the cpu, memory or GPU it asks for


@dataclass(frozen=True)
class StatusSummary:
    status: APIStatus
    up_to_date: int  # ready replicas of the newest version
    stale: int  # ready replicas of older versions
    failed: int


def derive_status(replicas: Iterable[ReplicaView], requested: int, rollout_failed: bool = False) -> StatusSummary:
    """Cortex's decision order (reference §5), fixed so a crash loop reads `error`, not `updating`.

    `rollout_failed`: the newest version never became ready and the previous one serves instead.
    """
    views = list(replicas)
    current = [view for view in views if view.current]
    up_to_date = sum(view.state is ReplicaState.READY for view in current)
    stale = sum(view.state is ReplicaState.READY and not view.current for view in views)
    failed = sum(view.failures > 0 and view.state is not ReplicaState.READY for view in current)
    oom = any(view.state is ReplicaState.KILLED_OOM for view in current)
    if rollout_failed:
        status = APIStatus.ERROR_OOM if oom else APIStatus.ERROR
    elif up_to_date >= requested:
        status = APIStatus.LIVE
    elif oom:
        status = APIStatus.ERROR_OOM
    elif failed:
        status = APIStatus.ERROR
    elif any(view.unplaceable for view in current) and not making_room(views):
        status = APIStatus.COMPUTE_UNAVAILABLE
    else:
        status = APIStatus.UPDATING
    return StatusSummary(status=status, up_to_date=up_to_date, stale=stale, failed=failed)


def making_room(views: Iterable[ReplicaView]) -> bool:
    """Replicas of the API are stopping: what they free may fit a replica that waits for compute
    (a rolling update replacing in place on a full machine), so it is not `compute unavailable` yet."""
    return any(view.state is ReplicaState.TERMINATING for view in views)
