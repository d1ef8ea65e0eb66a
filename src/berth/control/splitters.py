"""Traffic splitters in the local control plane: stored in SQLite beside the APIs, validated against
them (one namespace, one endpoint space, backends deployed), routed by every gateway worker, and
reported with what each backend received through them.

A splitter has no replicas: deploying one is a row and a routing-table entry, applied at once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from berth.config.splitter import TrafficSplitter
from berth.control.routing import Routing
from berth.control.store import Store
from berth.errors import Conflict, NotFound
from berth.gateway.splitting import SplitEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS splitters (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SplitterRecord:
    name: str
    endpoint: str
    spec: dict[str, Any]
    created_at: float
    updated_at: float

    @property
    def splitter(self) -> TrafficSplitter:
        return TrafficSplitter.model_validate(self.spec)


def entry(splitter: TrafficSplitter) -> SplitEntry:
    """What the gateways route for a splitter."""
    shadow = splitter.shadow
    return SplitEntry(name=splitter.name, endpoint=splitter.endpoint,
                      backends=tuple((b.name, b.weight) for b in splitter.serving),
                      shadow=shadow.name if shadow else None, header=splitter.header,
                      api_keys=splitter.networking.api_keys)


def version_of(splitter: TrafficSplitter) -> str:
    material = json.dumps(splitter.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:10]




class Splitters:
    """The splitters table and their routing entries."""

    def __init__(self, store: Store, routing: Routing) -> None:
        self.store = store
        self.routing = routing
        self._ready = False

    @property
    def db(self) -> sqlite3.Connection:
        if not self._ready:
            self.store.db.executescript(SCHEMA)
            self._ready = True
        return self.store.db

    def load(self) -> None:
        """Into the routing table at daemon start, so the first table pushed keeps them."""
        for record in self.all():
            self.routing.set_splitter(entry(record.splitter))
            self.routing.require_keys(record.name, record.splitter.networking.api_keys == "required")

    def get(self, name: str) -> SplitterRecord | None:
        row = self.db.execute("SELECT * FROM splitters WHERE name = ?", (name,)).fetchone()
        return _record(row) if row else None

    def all(self) -> list[SplitterRecord]:
        return [_record(row) for row in self.db.execute("SELECT * FROM splitters ORDER BY name")]

    def using(self, api: str) -> list[str]:
        """The splitters that send requests (or copies) to an API."""
        return [record.name for record in self.all() if api in record.splitter.api_names]

    def put(self, splitter: TrafficSplitter, now: float) -> str:
        """Store and route it; returns creating | updating | up to date."""
        existing = self.get(splitter.name)
        spec = splitter.model_dump(mode="json")
        if existing is not None and existing.spec == spec:
            return "up to date"
        self.db.execute(
            "INSERT INTO splitters VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
            "endpoint=excluded.endpoint, spec=excluded.spec, updated_at=excluded.updated_at",
            (splitter.name, splitter.endpoint, json.dumps(spec), existing.created_at if existing else now, now))
        self.routing.set_splitter(entry(splitter))
        self.routing.require_keys(splitter.name, splitter.networking.api_keys == "required")
        return "creating" if existing is None else "updating"

    def delete(self, name: str) -> None:
        """Its keys go with it, as an API's do: a splitter deployed again under that name starts with none."""
        db = self.db
        with self.store.transaction():
            db.execute("DELETE FROM splitters WHERE name = ?", (name,))
            db.execute("DELETE FROM api_keys WHERE target = ?", (name,))
        self.routing.remove_splitter(name)
        self.routing.forget_keys(name)

    # --- the checks a deploy makes, under the deployer's lock ----------------------------------
    def check(self, splitters: Sequence[TrafficSplitter], api_endpoints: Mapping[str, str],
              deploying: Mapping[str, str]) -> None:
        """`api_endpoints`: {API name: endpoint} deployed; `deploying`: the same for APIs of this deploy."""
        names = {s.name for s in splitters}
        clashes = [f"{name!r} is the name of an API; APIs and traffic splitters share one namespace"
                   for name in sorted(names & (set(api_endpoints) | set(deploying)))]
        taken = {endpoint: api for api, endpoint in api_endpoints.items() if api not in deploying}
        taken.update({endpoint: api for api, endpoint in deploying.items()})
        taken.update({r.endpoint: r.name for r in self.all() if r.name not in names})
        clashes += [f"endpoint {s.endpoint} of traffic splitter {s.name!r} is already used by {taken[s.endpoint]!r}"
                    for s in splitters if taken.get(s.endpoint, s.name) != s.name]
        if clashes:
            raise Conflict("\n".join(clashes), hint="rename the splitter or set its networking.endpoint to another "
                                                    "path; nothing was changed")
        known = set(api_endpoints) | set(deploying)
        missing = {s.name: [b.name for b in s.apis if b.name not in known] for s in splitters}
        missing = {name: apis for name, apis in missing.items() if apis}
        if missing:
            raise NotFound("; ".join(f"traffic splitter {name!r} uses {', '.join(map(repr, apis))}, which "
                                     f"{'is' if len(apis) == 1 else 'are'} not deployed"
                                     for name, apis in missing.items()),
                           hint="deploy those APIs first, or list them in the same file; nothing was changed")

    def check_apis(self, apis: Iterable[tuple[str, str]]) -> None:
        """APIs being deployed (name, endpoint) must not take a splitter's name or endpoint."""
        records = self.all()
        by_name = {r.name for r in records}
        by_endpoint = {r.endpoint: r.name for r in records}
        problems = [f"{name!r} is the name of a traffic splitter; APIs and splitters share one namespace"
                    for name, _ in apis if name in by_name]
        problems += [f"endpoint {endpoint} of {name!r} is already used by traffic splitter {by_endpoint[endpoint]!r}"
                     for name, endpoint in apis if endpoint in by_endpoint and by_endpoint[endpoint] != name]
        if problems:
            raise Conflict("\n".join(problems), hint="set networking.endpoint to another path (or rename the API), "
                                                     "or delete the splitter first; nothing was changed")

    def check_delete(self, api: str) -> None:
        users = self.using(api)
        if users:
            raise Conflict(f"cannot delete {api!r}: traffic splitter {', '.join(map(repr, users))} "
                           f"sends requests to it",
                           hint=f"remove {api!r} from the splitter's apis (and deploy it), or delete "
                                f"{' and '.join(users)} first (`berth delete {users[0]}`)")


def _record(row: tuple[Any, ...]) -> SplitterRecord:
    return SplitterRecord(name=row[0], endpoint=row[1], spec=json.loads(row[2]), created_at=row[3],
                          updated_at=row[4])


# --- what `berth get` shows ---------------------------------------------------------------------------
Status = Callable[[str], str]


def summary(record: SplitterRecord, counters: Mapping[str, Any], status: Status, gateway_url: str) -> dict[str, Any]:
    """A splitter as `berth get` lists it; `counters`: the gateways' counts for it, summed."""
    splitter = record.splitter
    backends = counters.get("backends", {})
    shadows = counters.get("shadow", {})
    apis = []
    for backend in splitter.apis:
        counts = (shadows if backend.shadow else backends).get(backend.name, {})
        row: dict[str, Any] = {"name": backend.name, "weight": backend.weight, "shadow": backend.shadow,
                               "status": status(backend.name), "requests": counts.get("requests", 0),
                               "2XX": counts.get("2xx", 0), "4XX": counts.get("4xx", 0),
                               "5XX": counts.get("5xx", 0)}
        if backend.shadow:
            row.update({"timeouts": counts.get("timeouts", 0), "errors": counts.get("errors", 0),
                        "dropped": counts.get("dropped", 0), "in_flight": counts.get("in_flight", 0)})
        apis.append(row)
    return {"name": splitter.name, "kind": "TrafficSplitter", "endpoint": splitter.endpoint,
            "url": gateway_url + splitter.endpoint, "split_by": splitter.split_by,
            "api_keys": splitter.networking.api_keys, "apis": apis,
            "requests": sum(row["requests"] for row in apis if not row["shadow"]),
            "created_at": record.created_at, "last_update": record.updated_at}


def add_counters(total: dict[str, Any], report: Mapping[str, Any]) -> None:
    """Add one gateway worker's splitter counters ({splitter: {backends|shadow: {api: {field: n}}}})."""
    for name, groups in report.items():
        mine = total.setdefault(name, {})
        for group, apis in groups.items():
            into = mine.setdefault(group, {})
            for api, counts in apis.items():
                fields = into.setdefault(api, {})
                for key, value in counts.items():
                    fields[key] = fields.get(key, 0) + int(value)
