"""Deploys: validate, snapshot, decide create/update/up-to-date for every API, then apply them all."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import secrets
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from berth.config.schema import RealtimeAPI
from berth.config.splitter import TrafficSplitter
from berth.control.apis import DeployedAPI
from berth.control.paths import Paths
from berth.control.reconciler import Reconciler
from berth.control.snapshot import snapshot
from berth.control.splitters import Splitters
from berth.control.store import APIRecord, Store
from berth.core.placement import Request, never_fits
from berth.errors import ConfigError, Conflict, InsufficientCapacity, NotFound
from berth.pyenv.builder import EnvironmentBuilder, Progress
from berth.pyenv.dotenv import DOTENV_FILE, read_dotenv

Validated = TypeVar("Validated", bound=BaseModel)


@dataclass(frozen=True)
class DeployResult:
    api: str
    action: str  # creating | updating | up to date | restarting
    version: str

    @property
    def message(self) -> str:
        return f"{self.api} is up to date" if self.action == "up to date" else f"{self.action} {self.api}"


def version_id(api: RealtimeAPI, project_digest: str, nonce: str = "", environment: str = "") -> str:
    """Cortex's PredictorID: what the replicas run. Autoscaling or networking changes keep it;
    a refresh changes only the nonce (Cortex's deploymentID)."""
    fields: dict[str, Any] = {"predictor": api.predictor.model_dump(mode="json"),
                              "compute": api.compute.model_dump(mode="json"),
                              "project": project_digest, "nonce": nonce}
    if environment:  # absent rather than empty: versions without one keep the ids they had
        fields["environment"] = environment
    material = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:10]


def _quiet(message: str) -> None:
    """Progress nobody asked to see."""


class Deployer:
    def __init__(self, store: Store, reconciler: Reconciler, paths: Paths, clock: Callable[[], float],
                 builder: EnvironmentBuilder | None = None) -> None:
        self.store = store
        self.reconciler = reconciler
        self.paths = paths
        self.clock = clock
        self.builder = builder or EnvironmentBuilder(paths.envs)
        self._lock = asyncio.Lock()  # deploys (and deletes) of any API happen one at a time
        # Snapshots taken by deploys still building: no store row names them yet, the collector must keep them.
        self.in_flight: Counter[str] = Counter()
        # Operations on an API take effect in the order they were asked for, though builds finish in any order.
        self._tickets = itertools.count(1)
        self._applied: dict[str, int] = {}
        self.splitters = Splitters(store, reconciler.routing)  # kind: TrafficSplitter (no replicas)

    async def deploy(self, spec_file: str, raw_apis: Sequence[dict[str, Any]], verify: bool = False,
                     variables: Mapping[str, str] | None = None, progress: Progress = _quiet,
                     raw_splitters: Sequence[dict[str, Any]] = ()) -> list[DeployResult]:
        """`verify` (`deploy --wait`): an API at zero replicas starts one, so a failing `__init__` shows now.
        `variables`: the deploying shell's package-index settings, for building the project's environment.
        `raw_splitters`: the file's traffic splitters, applied after its APIs."""
        ticket = next(self._tickets)
        apis = _validate(RealtimeAPI, raw_apis, spec_file)
        splitters = _validate(TrafficSplitter, raw_splitters, spec_file)
        self._check_splitters(apis, splitters)
        if not apis:  # splitters alone: nothing to snapshot or build
            async with self._lock:
                self._check_splitters(apis, splitters)
                return self._apply_splitters(splitters)
        self._check_capacity(apis)
        self._check_not_deleting([api.name for api in apis], "deploy")
        self._check_endpoints(apis)
        spec_path = Path(spec_file)
        digest, project = await asyncio.to_thread(snapshot, spec_path.parent, spec_path, self.paths.snapshots)
        self.in_flight[digest] += 1
        try:
            # Built before the lock: a long install must not hold up other APIs' deploys, deletes and refreshes.
            dotenv = read_dotenv(project / DOTENV_FILE)
            built = await self.builder.prepare(project, variables or {}, dotenv, progress)
            environment = built.key if built is not None else ""
            async with self._lock:
                self._check_splitters(apis, splitters)
                results = self._deploy_built(apis, ticket, digest, project, spec_file, environment, verify)
                return results + self._apply_splitters(splitters)
        finally:
            self.in_flight[digest] -= 1
            if self.in_flight[digest] <= 0:
                del self.in_flight[digest]

    def _deploy_built(self, apis: Sequence[RealtimeAPI], ticket: int, digest: str, project: Path, spec_file: str,
                      environment: str, verify: bool) -> list[DeployResult]:
        # Building let other calls run: a delete may have begun, an endpoint been taken, meanwhile.
        self._check_not_deleting([api.name for api in apis], "deploy")
        self._check_endpoints(apis)
        self._check_not_superseded(apis, ticket)
        os.utime(project)  # fresh again for the snapshot collector, however long the build took
        decisions = [self._decide(api, digest, environment) for api in apis]
        now = self.clock()
        for api, result in zip(apis, decisions, strict=True):
            self._applied[api.name] = ticket
            if result.action != "up to date":
                self._apply(api, result, digest, project, spec_file, now, environment)
            if verify:
                self.reconciler.verify(api.name)
        return decisions

    def _check_not_superseded(self, apis: Sequence[RealtimeAPI], ticket: int) -> None:
        later = [api.name for api in apis if self._applied.get(api.name, 0) > ticket]
        if later:
            raise Conflict(f"{', '.join(map(repr, later))}: a later deploy, refresh or delete was applied while this "
                           "deploy was building its environment; this deploy changed nothing",
                           hint="`berth get` shows what is deployed; deploy again if this one was meant to win")

    async def refresh(self, name: str) -> DeployResult:
        """A new version of the same code and spec: every replica is replaced, rolling, without downtime."""
        async with self._lock:
            self._applied[name] = next(self._tickets)
            self._check_not_deleting([name], "refresh")
            existing = self.store.get_api(name)
            if existing is None:
                raise NotFound(f"no API named {name!r}")
            api = RealtimeAPI.model_validate(existing.spec)
            version = version_id(api, existing.snapshot, nonce=secrets.token_hex(5),
                                 environment=existing.environment)
            result = DeployResult(name, "restarting", version)
            self._apply(api, result, existing.snapshot, self.paths.snapshots / existing.snapshot,
                        existing.spec_file, self.clock(), existing.environment)
            return result

    def _check_splitters(self, apis: Sequence[RealtimeAPI], splitters: Sequence[Any]) -> None:
        self.splitters.check_apis((api.name, api.endpoint) for api in apis)
        if splitters:
            deployed = {record.name: record.endpoint for record in self.store.list_apis()}
            self.splitters.check(splitters, deployed, {api.name: api.endpoint for api in apis})
            self._check_split_keys(apis, splitters)

    def _check_split_keys(self, apis: Sequence[RealtimeAPI], splitters: Sequence[Any]) -> None:
        """A splitter in front of an API that requires keys must require them too, or it would be a way round."""
        keyed = {name for name, api in self.reconciler.apis.items() if api.spec.networking.api_keys == "required"}
        keyed -= {api.name for api in apis}
        keyed |= {api.name for api in apis if api.networking.api_keys == "required"}
        open_ways = [f"traffic splitter {s.name!r} sends requests to {', '.join(map(repr, sorted(used)))}, which "
                     f"require{'s' if len(used) == 1 else ''} API keys, but does not require them itself"
                     for s in splitters if s.networking.api_keys != "required"
                     and (used := {b.name for b in s.apis} & keyed)]
        if open_ways:
            raise ConfigError(open_ways,
                              hint="set networking.api_keys: required on the splitter (and create its keys with "
                                   "`berth key create <splitter>`); nothing was changed")

    def _apply_splitters(self, splitters: Sequence[Any]) -> list[DeployResult]:
        now = self.clock()
        results = []
        for splitter in splitters:
            action = self.splitters.put(splitter, now)
            results.append(DeployResult(splitter.name, action, ""))
        if splitters:
            self.reconciler.wake()  # the next tick pushes the new table to the gateways
        return results

    async def delete_splitter(self, name: str) -> None:
        async with self._lock:
            if self.splitters.get(name) is None:
                raise NotFound(f"no traffic splitter named {name!r}")
            self.splitters.delete(name)
            self.reconciler.wake()

    async def delete(self, name: str) -> None:
        async with self._lock:
            self.splitters.check_delete(name)
            self._applied[name] = next(self._tickets)
            self.store.delete_api(name)
            self.reconciler.remove(name)

    def _check_not_deleting(self, names: Sequence[str], action: str) -> None:
        """Operations on one API are ordered: nothing starts on an API until its deletion is over."""
        deleting = {name: found for name in names if (found := self.reconciler.deletion(name)) is not None}
        if deleting:
            raise Conflict("\n".join(f"cannot {action} {name!r}: it is being deleted ({replicas} replica(s) still "
                                     f"stopping, finishing {held} request(s))"
                                     for name, (replicas, held) in deleting.items()),
                           hint=f"{action} again once `berth get` no longer lists "
                                f"{' or '.join(map(repr, deleting))}")

    def _check_capacity(self, apis: Sequence[RealtimeAPI]) -> None:
        """A replica bigger than the whole machine would wait forever: refuse it now, saying what fits."""
        capacity = self.reconciler.capacity
        problems = [f"{api.name}: {problem}" for api in apis for problem in never_fits(
            Request(api.compute.cpu, api.compute.mem or 0.0, api.compute.gpu), capacity)]
        if problems:
            raise InsufficientCapacity("\n".join(problems),
                                       hint="each replica reserves its compute on this one machine; "
                                            "lower the values above and deploy again")

    def _check_endpoints(self, apis: Sequence[RealtimeAPI]) -> None:
        taken = {record.endpoint: record.name for record in self.store.list_apis()}
        problems = [
            f"endpoint {api.endpoint} of {api.name!r} is already used by API {taken[api.endpoint]!r}"
            for api in apis if taken.get(api.endpoint, api.name) != api.name
        ]
        if problems:
            raise Conflict("\n".join(problems),
                           hint="set networking.endpoint to another path, or delete the other API first")

    def _decide(self, api: RealtimeAPI, digest: str, environment: str) -> DeployResult:
        """A deploy during a rollout supersedes it: the planner retires the half-rolled version."""
        version = version_id(api, digest, environment=environment)
        existing = self.store.get_api(api.name)
        if existing is None:
            return DeployResult(api.name, "creating", version)
        if existing.version == version and existing.spec == api.model_dump(mode="json"):
            return DeployResult(api.name, "up to date", version)
        return DeployResult(api.name, "updating", version)

    def _apply(self, api: RealtimeAPI, result: DeployResult, digest: str, project: Path,
               spec_file: str, now: float, environment: str) -> None:
        existing = self.store.get_api(api.name)
        scaling = api.autoscaling
        # Cortex: keep the current replica count across deploys, else start at init_replicas.
        requested = existing.requested if existing and existing.requested > 0 else api.init_replicas
        record = APIRecord(
            name=api.name, endpoint=api.endpoint, spec=api.model_dump(mode="json"), version=result.version,
            snapshot=digest, spec_file=spec_file, created_at=existing.created_at if existing else now,
            updated_at=now, requested=min(max(requested, scaling.min_replicas), scaling.max_replicas),
            environment=environment,
        )
        self.store.put_api(record)
        self.store.add_event(api.name, "deploy", f"{result.message} (version {result.version})", now)
        self.reconciler.put(DeployedAPI(record, api, project))


def _validate(model: type[Validated], raw: Sequence[dict[str, Any]], spec_file: str) -> list[Validated]:
    """The daemon's own check of what the CLI sent: every problem of every entry at once."""
    validated: list[Validated] = []
    problems: list[str] = []
    for item in raw:
        try:
            validated.append(model.model_validate(item))
        except ValidationError as exc:
            problems.extend(f"{spec_file}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    if problems:
        raise ConfigError(problems)
    return validated
