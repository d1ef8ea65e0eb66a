"""API keys in the store (tables `api_keys` and `api_key_counters` of store.py's schema).

A row holds what verifies a key (salt, sha256 digest), never the key. Per-key request counts are
saved with the gateway workers' counters they were computed from, in one transaction, as the request
ledger does, so a daemon restart neither loses nor double-counts them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from berth.control.store import Store
from berth.errors import Conflict
from berth.gateway.keys import KeyEntry

Seen = dict[int, tuple[str, dict[str, Any]]]  # worker -> (incarnation, its cumulative key counters)


@dataclass(frozen=True)
class KeyRecord:
    target: str
    name: str
    id: str
    salt: str
    digest: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None
    rate: float | None = None  # requests per second, for the whole instance
    requests: dict[str, int] = field(default_factory=dict)  # by status class, as last saved

    def entry(self) -> KeyEntry:
        return KeyEntry(id=self.id, name=self.name, salt=self.salt, digest=self.digest, expires=self.expires_at,
                        revoked=self.revoked_at is not None, rate=self.rate)


class KeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, record: KeyRecord) -> None:
        try:
            self.store.db.execute(
                "INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.target, record.name, record.id, record.salt, record.digest, record.created_at,
                 record.expires_at, record.revoked_at, record.rate, json.dumps(record.requests)))
        except sqlite3.IntegrityError:
            raise Conflict(f"API {record.target!r} already has a key named {record.name!r}",
                           hint=f"pick another --name; `berth key list {record.target}` shows the names "
                                "taken") from None

    def of(self, target: str | None = None) -> list[KeyRecord]:
        if target is None:
            rows = self.store.db.execute("SELECT * FROM api_keys ORDER BY target, created_at")
        else:
            rows = self.store.db.execute("SELECT * FROM api_keys WHERE target = ? ORDER BY created_at", (target,))
        return [_record(row) for row in rows]

    def revoke(self, target: str, name: str, at: float) -> bool:
        """False when there is no such key; revoking twice keeps the first time."""
        cursor = self.store.db.execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE target = ? AND name = ?",
            (at, target, name))
        return cursor.rowcount > 0

    def count(self, target: str) -> int:
        return int(self.store.db.execute("SELECT COUNT(*) FROM api_keys WHERE target = ?", (target,)).fetchone()[0])

    def seen(self) -> Seen:
        rows = self.store.db.execute("SELECT worker, incarnation, counters FROM api_key_counters")
        return {row[0]: (row[1], json.loads(row[2])) for row in rows}

    def save_counts(self, totals: dict[tuple[str, str], dict[str, int]], seen: Seen) -> None:
        with self.store.transaction() as db:
            db.executemany("UPDATE api_keys SET requests = ? WHERE target = ? AND name = ?",
                           [(json.dumps(counts), target, name) for (target, name), counts in totals.items()])
            db.execute("DELETE FROM api_key_counters")
            db.executemany("INSERT INTO api_key_counters VALUES (?, ?, ?)",
                           [(worker, incarnation, json.dumps(counters))
                            for worker, (incarnation, counters) in seen.items()])


def _record(row: tuple[Any, ...]) -> KeyRecord:
    target, name, key_id, salt, digest, created, expires, revoked, rate, requests = row
    return KeyRecord(target, name, key_id, salt, digest, created, expires, revoked, rate,
                     {str(k): int(v) for k, v in json.loads(requests or "{}").items()})
