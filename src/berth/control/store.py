"""Desired and observed state in SQLite (WAL), so a daemon restart loses no API."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS apis (
    name TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL UNIQUE,
    spec TEXT NOT NULL,
    version TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    spec_file TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    requested INTEGER NOT NULL,
    failed_version TEXT,
    failed_reason TEXT,
    environment TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS versions (
    api TEXT NOT NULL,
    id TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    spec TEXT NOT NULL,
    deployed_at REAL NOT NULL,
    environment TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (api, id, deployed_at)
);
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    api TEXT NOT NULL,
    version TEXT NOT NULL,
    pid INTEGER,
    pid_started REAL,
    created_at REAL NOT NULL,
    socket_dir TEXT NOT NULL,
    processes INTEGER NOT NULL,
    restarts INTEGER NOT NULL,
    placement TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recommendations (
    api TEXT NOT NULL,
    at REAL NOT NULL,
    replicas INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS recommendations_by_api ON recommendations (api, at);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api TEXT NOT NULL,
    at REAL NOT NULL,
    decision TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_by_api ON decisions (api, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_api ON events (api, id);
CREATE TABLE IF NOT EXISTS request_stats (
    api TEXT PRIMARY KEY,
    counters TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS gateway_counters (
    worker INTEGER PRIMARY KEY,
    incarnation TEXT NOT NULL,
    counters TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS request_history (
    api TEXT NOT NULL,
    start REAL NOT NULL,
    seconds INTEGER NOT NULL,
    code_2xx INTEGER NOT NULL,
    code_4xx INTEGER NOT NULL,
    code_5xx INTEGER NOT NULL,
    seconds_sum REAL NOT NULL,
    count INTEGER NOT NULL,
    latency TEXT,
    replicas_ready INTEGER NOT NULL,
    replicas_desired INTEGER NOT NULL,
    in_flight_sum REAL NOT NULL,
    samples INTEGER NOT NULL,
    PRIMARY KEY (api, start, seconds)
);
CREATE TABLE IF NOT EXISTS prediction_history (
    api TEXT NOT NULL,
    start REAL NOT NULL,
    seconds INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (api, start, seconds)
);
CREATE TABLE IF NOT EXISTS history_horizon (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    minutes_from REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS monitoring_baselines (
    api TEXT PRIMARY KEY,
    since REAL NOT NULL,
    until REAL NOT NULL,
    pinned_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    target TEXT NOT NULL,
    name TEXT NOT NULL,
    id TEXT NOT NULL UNIQUE,
    salt TEXT NOT NULL,
    digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL,
    rate REAL,
    requests TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (target, name)
);
CREATE TABLE IF NOT EXISTS api_key_counters (
    worker INTEGER PRIMARY KEY,
    incarnation TEXT NOT NULL,
    counters TEXT NOT NULL
);
"""


KEEP_VERSIONS = 10  # versions per API whose snapshots are kept for a rollback


@dataclass(frozen=True)
class APIRecord:
    name: str
    endpoint: str
    spec: dict[str, Any]
    version: str
    snapshot: str
    spec_file: str
    created_at: float
    updated_at: float
    requested: int
    failed_version: str | None = None
    failed_reason: str | None = None
    environment: str = ""  # the key of the Python environment under envs/; "" for berth's own


@dataclass(frozen=True)
class ReplicaRecord:
    """What a restarted daemon needs to adopt a replica process that outlived its predecessor."""

    id: str
    api: str
    version: str
    pid: int | None
    pid_started: float | None
    created_at: float
    socket_dir: str
    processes: int
    restarts: int
    placement: dict[str, Any]


@dataclass(frozen=True)
class Event:
    api: str
    at: float
    kind: str
    message: str


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since a store was created (SQLite appends them, as the INSERTs expect)."""
        for table in ("apis", "versions"):
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if "environment" not in columns:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN environment TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- APIs ---------------------------------------------------------------------------------
    def put_api(self, record: APIRecord) -> None:
        """Write the API and, when its version changed, the version's history row, atomically."""
        with self.transaction() as db:
            row = db.execute("SELECT version FROM apis WHERE name = ?", (record.name,)).fetchone()
            if row is None or row[0] != record.version:
                db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?)",
                           (record.name, record.version, record.snapshot, json.dumps(record.spec),
                            record.updated_at, record.environment))
            db.execute(
                "INSERT INTO apis VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "endpoint=excluded.endpoint, spec=excluded.spec, version=excluded.version, "
                "snapshot=excluded.snapshot, spec_file=excluded.spec_file, updated_at=excluded.updated_at, "
                "requested=excluded.requested, failed_version=excluded.failed_version, "
                "failed_reason=excluded.failed_reason, environment=excluded.environment",
                (record.name, record.endpoint, json.dumps(record.spec), record.version, record.snapshot,
                 record.spec_file, record.created_at, record.updated_at, record.requested,
                 record.failed_version, record.failed_reason, record.environment),
            )

    def set_requested(self, name: str, requested: int) -> None:
        self.db.execute("UPDATE apis SET requested = ? WHERE name = ?", (requested, name))

    def set_rollout_failure(self, name: str, version: str | None, reason: str | None) -> None:
        self.db.execute("UPDATE apis SET failed_version = ?, failed_reason = ? WHERE name = ?",
                        (version, reason, name))

    def get_version(self, api: str, version: str) -> tuple[dict[str, Any], str, str] | None:
        """The spec, snapshot and environment a version was deployed with."""
        row = self.db.execute("SELECT spec, snapshot, environment FROM versions WHERE api = ? AND id = ? "
                              "ORDER BY deployed_at DESC LIMIT 1", (api, version)).fetchone()
        return (json.loads(row[0]), row[1], row[2]) if row else None

    def get_api(self, name: str) -> APIRecord | None:
        row = self.db.execute("SELECT * FROM apis WHERE name = ?", (name,)).fetchone()
        return _api(row) if row else None

    def list_apis(self) -> list[APIRecord]:
        return [_api(row) for row in self.db.execute("SELECT * FROM apis ORDER BY name")]

    def delete_api(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM apis WHERE name = ?", (name,))
            db.execute("DELETE FROM events WHERE api = ?", (name,))
            db.execute("DELETE FROM versions WHERE api = ?", (name,))
            db.execute("DELETE FROM recommendations WHERE api = ?", (name,))
            db.execute("DELETE FROM decisions WHERE api = ?", (name,))
            db.execute("DELETE FROM request_stats WHERE api = ?", (name,))
            db.execute("DELETE FROM request_history WHERE api = ?", (name,))
            db.execute("DELETE FROM prediction_history WHERE api = ?", (name,))
            db.execute("DELETE FROM monitoring_baselines WHERE api = ?", (name,))
            db.execute("DELETE FROM api_keys WHERE target = ?", (name,))

    def versions(self, api: str, limit: int = 10) -> list[tuple[str, float]]:
        """(version, deployed at) of an API's deployed versions, newest first."""
        rows = self.db.execute(
            "SELECT id, deployed_at FROM versions WHERE api = ? ORDER BY deployed_at DESC LIMIT ?", (api, limit))
        return [(row[0], row[1]) for row in rows]

    def snapshots_in_use(self, keep_versions: int = KEEP_VERSIONS) -> set[str]:
        """Snapshots a deployed version references: each API's current one, those of its newest
        `keep_versions` versions (what `describe` lists, and what a rollback falls back to), and those of
        the versions a recorded replica runs."""
        return self._in_use("snapshot", keep_versions)

    def environments_in_use(self, keep_versions: int = KEEP_VERSIONS) -> set[str]:
        """Python environments the same versions use (as `snapshots_in_use`)."""
        return self._in_use("environment", keep_versions) - {""}

    def _in_use(self, column: str, keep_versions: int) -> set[str]:
        assert column in ("snapshot", "environment")
        rows = self.db.execute(
            f"SELECT {column} FROM apis "
            f"UNION SELECT {column} FROM (SELECT {column}, ROW_NUMBER() OVER "
            "(PARTITION BY api ORDER BY deployed_at DESC) AS n FROM versions) WHERE n <= ? "
            f"UNION SELECT v.{column} FROM versions v JOIN replicas r ON r.api = v.api AND r.version = v.id",
            (keep_versions,))
        return {row[0] for row in rows}

    # --- replicas -----------------------------------------------------------------------------
    def put_replica(self, record: ReplicaRecord) -> None:
        self.db.execute(
            "INSERT INTO replicas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "pid=excluded.pid, pid_started=excluded.pid_started, restarts=excluded.restarts, "
            "placement=excluded.placement",
            (record.id, record.api, record.version, record.pid, record.pid_started, record.created_at,
             record.socket_dir, record.processes, record.restarts, json.dumps(record.placement)),
        )

    def delete_replica(self, replica_id: str) -> None:
        self.db.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

    def list_replicas(self) -> list[ReplicaRecord]:
        rows = self.db.execute("SELECT * FROM replicas ORDER BY created_at")
        return [ReplicaRecord(id=row[0], api=row[1], version=row[2], pid=row[3], pid_started=row[4],
                              created_at=row[5], socket_dir=row[6], processes=row[7], restarts=row[8],
                              placement=json.loads(row[9])) for row in rows]

    # --- autoscaler -----------------------------------------------------------------------------
    def recommendations(self, api: str) -> list[tuple[float, int]]:
        rows = self.db.execute("SELECT at, replicas FROM recommendations WHERE api = ? ORDER BY at", (api,))
        return [(row[0], row[1]) for row in rows]

    def record_tick(self, api: str, kept: list[tuple[float, int]], decision: dict[str, Any],
                    keep_decisions: int = 100) -> None:
        """Replace the recommendation history and log the decision, in one transaction."""
        with self.transaction() as db:
            db.execute("DELETE FROM recommendations WHERE api = ?", (api,))
            db.executemany("INSERT INTO recommendations VALUES (?, ?, ?)", [(api, at, n) for at, n in kept])
            db.execute("INSERT INTO decisions (api, at, decision) VALUES (?, ?, ?)",
                       (api, decision["at"], json.dumps(decision)))
            db.execute("DELETE FROM decisions WHERE api = ? AND id NOT IN (SELECT id FROM decisions "
                       "WHERE api = ? ORDER BY id DESC LIMIT ?)", (api, api, keep_decisions))

    def decisions(self, api: str, limit: int = 10) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT decision FROM decisions WHERE api = ? ORDER BY id DESC LIMIT ?",
                               (api, limit))
        return [json.loads(row[0]) for row in rows][::-1]

    # --- request statistics ----------------------------------------------------------------------
    def request_stats(self) -> tuple[dict[str, dict[str, Any]], dict[int, tuple[str, dict[str, Any]]]]:
        """Totals per API, and the cumulative counters last seen from each gateway worker."""
        totals = {row[0]: json.loads(row[1]) for row in self.db.execute("SELECT api, counters FROM request_stats")}
        seen = {row[0]: (row[1], json.loads(row[2]))
                for row in self.db.execute("SELECT worker, incarnation, counters FROM gateway_counters")}
        return totals, seen

    def save_request_stats(self, totals: dict[str, dict[str, Any]],
                           seen: dict[int, tuple[str, dict[str, Any]]]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM request_stats")
            db.executemany("INSERT INTO request_stats VALUES (?, ?)",
                           [(api, json.dumps(counters)) for api, counters in totals.items()])
            db.execute("DELETE FROM gateway_counters")
            db.executemany("INSERT INTO gateway_counters VALUES (?, ?, ?)",
                           [(worker, incarnation, json.dumps(counters))
                            for worker, (incarnation, counters) in seen.items()])

    # --- prediction monitoring baseline ---------------------------------------------------------
    def pin_baseline(self, api: str, since: float, until: float, at: float) -> None:
        self.db.execute("INSERT INTO monitoring_baselines VALUES (?, ?, ?, ?) ON CONFLICT(api) DO UPDATE SET "
                        "since=excluded.since, until=excluded.until, pinned_at=excluded.pinned_at",
                        (api, since, until, at))

    def baseline(self, api: str) -> tuple[float, float, float] | None:
        """(since, until, pinned at) of the reference window the user pinned, if any."""
        row = self.db.execute("SELECT since, until, pinned_at FROM monitoring_baselines WHERE api = ?",
                              (api,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def clear_baseline(self, api: str) -> None:
        self.db.execute("DELETE FROM monitoring_baselines WHERE api = ?", (api,))

    # --- events -------------------------------------------------------------------------------
    def add_event(self, api: str, kind: str, message: str, at: float) -> None:
        self.db.execute("INSERT INTO events (api, at, kind, message) VALUES (?, ?, ?, ?)", (api, at, kind, message))

    def events(self, api: str, limit: int = 20) -> list[Event]:
        rows = self.db.execute(
            "SELECT api, at, kind, message FROM events WHERE api = ? ORDER BY id DESC LIMIT ?", (api, limit))
        return [Event(*row) for row in rows][::-1]


def _api(row: tuple[Any, ...]) -> APIRecord:
    name, endpoint, spec, version, snapshot, spec_file, created_at, updated_at, requested, failed, reason, env = row
    return APIRecord(name, endpoint, json.loads(spec), version, snapshot, spec_file, created_at, updated_at,
                     requested, failed, reason, env)
