"""Reconcile planning: from the replicas an API has to the starts, restarts and stops it needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from berth.core.status import ReplicaState

LIVE_STATES = frozenset({ReplicaState.PENDING, ReplicaState.INITIALIZING, ReplicaState.READY,
                         ReplicaState.FAILED, ReplicaState.KILLED, ReplicaState.KILLED_OOM})
DOWN_STATES = frozenset({ReplicaState.FAILED, ReplicaState.KILLED, ReplicaState.KILLED_OOM})


@dataclass(frozen=True)
class ReplicaFacts:
    id: str
    version: str
    state: ReplicaState
    created_at: float
    next_start: float = 0.0  # when a failed replica may start again (backoff)


@dataclass(frozen=True)
class Plan:
    create: int = 0  # new replicas of the current version
    restart: tuple[str, ...] = ()  # failed replicas whose backoff has passed
    stop: tuple[str, ...] = field(default=())  # drain, then terminate

    @property
    def empty(self) -> bool:
        return not (self.create or self.restart or self.stop)


def plan_replicas(version: str, desired: int, replicas: Sequence[ReplicaFacts], now: float) -> Plan:
    """Bring the current version to `desired` replicas; retire older versions once it serves.

    Old replicas that serve keep serving until the current version has `desired` ready ones, so
    a broken new version never takes the API down. Old replicas that do not serve stop at once.
    """
    alive = [r for r in replicas if r.state in LIVE_STATES]
    current = [r for r in alive if r.version == version]
    old = [r for r in alive if r.version != version]
    ready_current = sum(r.state is ReplicaState.READY for r in current)

    stop: list[str] = []
    surplus = len(current) - desired
    if surplus > 0:
        # Shed replicas that do not serve first, newest first among equals.
        ranked = sorted(current, key=lambda r: (r.state is ReplicaState.READY, -r.created_at))
        stop.extend(r.id for r in ranked[:surplus])
    if ready_current >= desired:
        stop.extend(r.id for r in old)
    else:
        stop.extend(r.id for r in old if r.state is not ReplicaState.READY)

    stopping = set(stop)
    restart = tuple(r.id for r in current
                    if r.state in DOWN_STATES and r.id not in stopping and now >= r.next_start)
    return Plan(create=max(0, -surplus), restart=restart, stop=tuple(stop))
