"""The routing table the control plane wants every gateway worker to hold.

Each change makes a new generation. Gateways report the generation they last applied, so "replica R
holds no request" is known only from a report made after the table without R reached that gateway:
a replica is drained by generation, never by a guess about timing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path

from berth.config.schema import RealtimeAPI
from berth.config.signature import predict_parameters
from berth.gateway.control import RouteEntry, routes_message
from berth.gateway.keys import KeyEntry, TargetKeys, keys_field
from berth.gateway.routes import Target
from berth.gateway.splitting import SplitEntry
from berth.runtime.contract import streams_request_body


class Routing:
    def __init__(self, workers: int = 1, generation: int = 0) -> None:
        self.workers = max(1, workers)
        self.generation = generation
        self.entries: dict[str, RouteEntry] = {}
        self.left_at: dict[str, int] = {}  # replica id -> the generation that took it out
        self.splitters: dict[str, SplitEntry] = {}  # traffic splitters, by name
        # False until the reconciler has probed the replicas it adopted: a table pushed before that
        # would take every serving replica out of a gateway that routes to them right now.
        self.established = False
        self.keys: dict[str, TargetKeys] = {}  # target (API or splitter) -> whether it requires keys, its keys

    def configure(self, api: str, endpoint: str, max_replica_concurrency: int, *, holds: bool,
                  hold_limit: int, hold_timeout: float, timeout: float,
                  request_log_sample_rate: float = 1.0, stream_body: bool = False) -> None:
        """Settings of an API's route; its targets stay. Per-API limits are shared out between workers."""
        current = self.entries.get(api)
        entry = RouteEntry(api=api, endpoint=endpoint, timeout=timeout, holds=holds, hold_timeout=hold_timeout,
                           max_replica_concurrency=math.ceil(max_replica_concurrency / self.workers),
                           hold_limit=math.ceil(hold_limit / self.workers),
                           targets=current.targets if current else (),
                           request_log_sample_rate=request_log_sample_rate, stream_body=stream_body)
        if entry != current:
            self.entries[api] = entry
            self.generation += 1

    def require_keys(self, target: str, required: bool) -> None:
        current = self.keys.get(target, TargetKeys(False))
        if current.required != required:
            self.keys[target] = TargetKeys(required, current.entries)
            self.generation += 1

    def set_keys(self, target: str, entries: Iterable[KeyEntry]) -> None:
        """A target's key entries, each rate already shared out between the workers."""
        current = self.keys.get(target, TargetKeys(False))
        wanted = tuple(dataclasses.replace(e, rate=None if e.rate is None else e.rate / self.workers)
                       for e in entries)
        if current.entries != wanted:
            self.keys[target] = TargetKeys(current.required, wanted)
            self.generation += 1

    def targets(self, api: str) -> tuple[Target, ...]:
        entry = self.entries.get(api)
        return entry.targets if entry else ()

    def set_targets(self, api: str, targets: Iterable[Target]) -> None:
        entry = self.entries.get(api)
        wanted = tuple(dict.fromkeys(targets))
        if entry is None or entry.targets == wanted:
            return
        self.entries[api] = dataclasses.replace(entry, targets=wanted)
        self._changed(entry.targets, wanted)

    def remove(self, api: str) -> None:
        entry = self.entries.pop(api, None)
        self.keys.pop(api, None)
        if entry is not None:
            self._changed(entry.targets, ())

    def retire(self, replica_id: str) -> None:
        """A replica no table of ours routes to (adopted only to be stopped): drained once gateways
        report on a table newer than any they may still hold from before."""
        self.generation += 1
        self.left_at[replica_id] = self.generation

    def forget(self, replica_id: str) -> None:
        self.left_at.pop(replica_id, None)

    def set_splitter(self, entry: SplitEntry) -> None:
        if self.splitters.get(entry.name) != entry:
            self.splitters[entry.name] = entry
            self.generation += 1

    def remove_splitter(self, name: str) -> None:
        if self.splitters.pop(name, None) is not None:
            self.generation += 1

    def forget_keys(self, target: str) -> None:
        if self.keys.pop(target, None) is not None:
            self.generation += 1

    def message(self) -> dict[str, object]:
        return routes_message(self.generation, self.entries.values(), self.splitters.values(), keys_field(self.keys))

    def _changed(self, before: tuple[Target, ...], after: tuple[Target, ...]) -> None:
        self.generation += 1
        staying = {t.replica_id for t in after}
        for target in before:
            if target.replica_id not in staying:
                self.left_at[target.replica_id] = self.generation


def streams_body(spec: RealtimeAPI, project: Path) -> bool:
    """Whether the API's predict takes its request body as a stream, read from the deployed source
    (the control plane never imports it). Unreadable or unclear source: buffered, as before."""
    if not spec.predictor.path:
        return False
    try:
        source = (project / spec.predictor.path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    parameters = predict_parameters(source, spec.predictor.class_name)
    return parameters is not None and streams_request_body(parameters)
