"""Replica planning: scaling and rolling updates, paced by max_surge and max_unavailable.

The rules are Kubernetes' RollingUpdate: the API never has more than desired + surge replicas,
never fewer than desired - unavailable ready ones (counting old and new), and only replicas of
the current version are created. Old replicas that do not serve go at once; old ones that serve
go as the new ones become ready.

When the machine has no room for a surge replica (a new one waits, unplaceable, while old ones
serve), the update replaces in place instead, as Kubernetes does on a full node: no surge, and at
least one replica unavailable, the rule that already keeps surge 0 and unavailable 0 from deadlocking.
"""

from __future__ import annotations

import math
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
    unplaceable: bool = False  # pending because the cpu, memory or GPU it needs is not free


@dataclass(frozen=True)
class Strategy:
    max_surge: int
    max_unavailable: int


@dataclass(frozen=True)
class Plan:
    create: int = 0  # new replicas of the current version
    restart: tuple[str, ...] = ()  # failed replicas whose backoff has passed
    stop: tuple[str, ...] = field(default=())  # drain, then terminate
    in_place: bool = False  # no room for a surge replica: old replicas make room for new ones

    @property
    def empty(self) -> bool:
        return not (self.create or self.restart or self.stop)


def resolve_strategy(max_surge: int | str, max_unavailable: int | str, desired: int) -> Strategy:
    """Percentages of `desired`: surge rounds up, unavailable down; both 0 would deadlock, so 1 unavailable."""
    surge = _amount(max_surge, desired, math.ceil)
    unavailable = _amount(max_unavailable, desired, math.floor)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return Strategy(surge, unavailable)


def _amount(value: int | str, desired: int, rounding: object) -> int:
    if isinstance(value, int):
        return value
    fraction = int(value.rstrip("%")) / 100
    return int(rounding(fraction * desired))  # type: ignore[operator]


def in_place_strategy(strategy: Strategy) -> Strategy:
    """The strategy when a surge replica cannot be placed: none, and at least one unavailable."""
    return Strategy(max_surge=0, max_unavailable=max(strategy.max_unavailable, 1))


def plan_replicas(version: str, desired: int, replicas: Sequence[ReplicaFacts], strategy: Strategy,
                  now: float) -> Plan:
    alive = [r for r in replicas if r.state in LIVE_STATES]
    new = [r for r in alive if r.version == version]
    old = [r for r in alive if r.version != version]
    stop = [r.id for r in old if r.state is not ReplicaState.READY]
    old_ready = sorted((r for r in old if r.state is ReplicaState.READY), key=lambda r: r.created_at)
    blocked = any(r.unplaceable and r.state is ReplicaState.PENDING for r in new)
    in_place = blocked and bool(old_ready) and in_place_strategy(strategy) != strategy
    if in_place:
        strategy = in_place_strategy(strategy)

    surplus = len(new) - desired
    if surplus > 0:
        # Shed replicas that do not serve first, newest first among equals.
        ranked = sorted(new, key=lambda r: (r.state is ReplicaState.READY, -r.created_at))
        stop.extend(r.id for r in ranked[:surplus])
        new = ranked[surplus:]
    new_ready = sum(r.state is ReplicaState.READY for r in new)

    if new_ready >= desired:
        retire = len(old_ready)
    else:
        retire = max(0, new_ready + len(old_ready) - (desired - strategy.max_unavailable))
    stop.extend(r.id for r in old_ready[:retire])
    remaining = len(new) + len(old_ready) - retire

    create = max(0, min(desired - len(new), desired + strategy.max_surge - remaining))
    stopping = set(stop)
    restart = tuple(r.id for r in new if r.state in DOWN_STATES and r.id not in stopping and now >= r.next_start)
    return Plan(create=create, restart=restart, stop=tuple(stop), in_place=in_place)
