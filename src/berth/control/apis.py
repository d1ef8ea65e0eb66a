"""An API as the control plane holds it: its latest deploy, and the version it should run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from berth.config.schema import RealtimeAPI
from berth.control.store import APIRecord, Store


@dataclass(frozen=True)
class Version:
    """What replicas of one version run."""

    id: str
    spec: RealtimeAPI
    project: Path
    environment: str = ""  # the key of its Python environment under envs/; "" runs in berth's own


@dataclass
class DeployedAPI:
    record: APIRecord
    spec: RealtimeAPI
    project: Path
    deleting: bool = False
    # The version serving while the latest one's rollout has failed (it never became ready).
    fallback: Version | None = None
    versions: dict[str, Version] = field(default_factory=dict)
    # `deploy --wait` of an API that may scale to zero: this version keeps one replica until one
    # has been ready, so a failing `__init__` shows at deploy rather than at the first request.
    verifying: str | None = None
    in_place_noted: str | None = None  # the version whose in-place replacement has its event already
    in_place_from: str | None = None  # the version it replaced: the one to roll back to

    def __post_init__(self) -> None:
        self.versions.setdefault(self.record.version, Version(self.record.version, self.spec, self.project,
                                                                  self.record.environment))

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def latest(self) -> Version:
        return self.versions[self.record.version]

    @property
    def target(self) -> Version:
        """The version the reconciler converges to."""
        return self.fallback or self.latest

    @property
    def rollout_failed(self) -> bool:
        return self.record.failed_version == self.record.version and self.fallback is not None

    @property
    def requested(self) -> int:
        return self.record.requested

    @property
    def desired(self) -> int:
        """The replicas to run: the requested count, and one while the version is being verified."""
        return max(self.requested, 1) if self.verifying is not None and not self.deleting else self.requested


def load_version(store: Store, snapshots: Path, name: str, version: str) -> Version | None:
    """A version as it was deployed, from the store's history (a fallback, or an adopted replica's)."""
    found = store.get_version(name, version)
    if found is None:
        return None
    spec, snapshot, environment = found
    return Version(version, RealtimeAPI.model_validate(spec), snapshots / snapshot, environment)
