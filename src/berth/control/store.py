"""Desired and observed state in SQLite (WAL), so a daemon restart loses no API."""

from __future__ import annotations

import json
import sqlite3
import time
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
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    api TEXT NOT NULL,
    id TEXT NOT NULL,
    snapshot TEXT NOT NULL,
    spec TEXT NOT NULL,
    deployed_at REAL NOT NULL,
    PRIMARY KEY (api, id, deployed_at)
);
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    api TEXT NOT NULL,
    version TEXT NOT NULL,
    pid INTEGER,
    pid_started REAL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    api TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_api ON events (api, id);
"""


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


@dataclass(frozen=True)
class ReplicaRecord:
    id: str
    api: str
    version: str
    pid: int | None
    pid_started: float | None


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
                db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?)",
                           (record.name, record.version, record.snapshot, json.dumps(record.spec),
                            record.updated_at))
            db.execute(
                "INSERT INTO apis VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "endpoint=excluded.endpoint, spec=excluded.spec, version=excluded.version, "
                "snapshot=excluded.snapshot, spec_file=excluded.spec_file, updated_at=excluded.updated_at",
                (record.name, record.endpoint, json.dumps(record.spec), record.version, record.snapshot,
                 record.spec_file, record.created_at, record.updated_at),
            )

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

    def versions(self, api: str, limit: int = 10) -> list[tuple[str, float]]:
        """(version, deployed at) of an API's deployed versions, newest first."""
        rows = self.db.execute(
            "SELECT id, deployed_at FROM versions WHERE api = ? ORDER BY deployed_at DESC LIMIT ?", (api, limit))
        return [(row[0], row[1]) for row in rows]

    # --- replicas -----------------------------------------------------------------------------
    def put_replica(self, record: ReplicaRecord) -> None:
        self.db.execute(
            "INSERT INTO replicas VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "pid=excluded.pid, pid_started=excluded.pid_started",
            (record.id, record.api, record.version, record.pid, record.pid_started, time.time()),
        )

    def delete_replica(self, replica_id: str) -> None:
        self.db.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

    def list_replicas(self) -> list[ReplicaRecord]:
        rows = self.db.execute("SELECT id, api, version, pid, pid_started FROM replicas")
        return [ReplicaRecord(*row) for row in rows]

    # --- events -------------------------------------------------------------------------------
    def add_event(self, api: str, kind: str, message: str, at: float | None = None) -> None:
        self.db.execute("INSERT INTO events (api, at, kind, message) VALUES (?, ?, ?, ?)",
                        (api, at if at is not None else time.time(), kind, message))

    def events(self, api: str, limit: int = 20) -> list[Event]:
        rows = self.db.execute(
            "SELECT api, at, kind, message FROM events WHERE api = ? ORDER BY id DESC LIMIT ?", (api, limit))
        return [Event(*row) for row in rows][::-1]


def _api(row: tuple[Any, ...]) -> APIRecord:
    name, endpoint, spec, version, snapshot, spec_file, created_at, updated_at = row
    return APIRecord(name, endpoint, json.loads(spec), version, snapshot, spec_file, created_at, updated_at)
