"""Faults switched on while the lab runs (`protolab fault`): which, for whom, until when.
The services read them through services/faults.py; this module only keeps the table."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .db import Database

MIGRATIONS = [
    """
    CREATE TABLE faults (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        until REAL,
        created REAL NOT NULL
    );
    """,
]


@dataclass(frozen=True)
class Fault:
    id: int
    kind: str
    target: str  # "" for everyone; else a host or query name, a client address or a user
    until: float | None  # None: until cleared
    created: float


class Faults:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, kind: str, target: str = "", seconds: float | None = None) -> Fault:
        now = time.time()
        until = now + seconds if seconds is not None else None
        with self.db.write() as tx:
            cursor = tx.execute("INSERT INTO faults (kind, target, until, created) VALUES (?, ?, ?, ?)",
                                (kind, target, until, now))
            tx.changed("faults")
            fault_id = cursor.lastrowid
        assert fault_id is not None
        return Fault(fault_id, kind, target, until, now)

    def active(self, now: float | None = None) -> list[Fault]:
        now = time.time() if now is None else now
        return [Fault(*row) for row in self.db.query(
            "SELECT id, kind, target, until, created FROM faults WHERE until IS NULL OR until > ? "
            "ORDER BY id", (now,))]

    def clear(self, fault_id: int | None = None) -> int:
        """Remove one fault, or all of them (and the expired ones' rows)."""
        with self.db.write() as tx:
            if fault_id is None:
                count = tx.execute("DELETE FROM faults").rowcount
            else:
                count = tx.execute("DELETE FROM faults WHERE id = ?", (fault_id,)).rowcount
            if count:
                tx.changed("faults")
            return count
