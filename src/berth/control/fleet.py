"""What the control plane runs: the deployed APIs and their replicas, shared by the reconciler's parts.

The reconciler's parts (rollout, starting, health, draining, adoption) change it; the management
API and its views read it through `FleetView`, which has no way to change anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from berth.control.apis import DeployedAPI
from berth.control.replica import Replica
from berth.core.placement import Placement


@dataclass(frozen=True)
class Timeouts:
    drain: float = 30.0  # wait this long for the gateways' in-flight requests before SIGTERM
    stop: float = 30.0  # then this long for the process to finish and exit before SIGKILL
    readiness: float = 600.0  # a replica not ready by then has failed to start


class FleetView(Protocol):
    """The read-only surface the management API and its views use."""

    @property
    def apis(self) -> Mapping[str, DeployedAPI]: ...

    def replicas_of(self, name: str) -> Sequence[Replica]: ...


@dataclass
class Fleet:
    apis: dict[str, DeployedAPI] = field(default_factory=dict)
    replicas: dict[str, Replica] = field(default_factory=dict)

    def replicas_of(self, name: str) -> list[Replica]:
        return sorted((r for r in self.replicas.values() if r.api == name), key=lambda r: r.created_at)

    def placements(self) -> list[Placement]:
        return [r.placement for r in self.replicas.values() if r.placement is not None]
