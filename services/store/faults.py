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
    # The scenario (services/scenarios) that switched the fault on, so it can be ended
    # whole; and AUTOINCREMENT, so a cleared fault's #ID is never given to the next one
    # (the journal names faults by #ID: "fault dns.servfail #3" must mean one fault).
    """
    CREATE TABLE faults_new (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL DEFAULT '',
        until REAL,
        created REAL NOT NULL,
        scenario TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO faults_new (id, kind, target, until, created)
        SELECT id, kind, target, until, created FROM faults;
    DROP TABLE faults;
    ALTER TABLE faults_new RENAME TO faults;
    """,
]


@dataclass(frozen=True)
class Fault:
    id: int
    kind: str
    target: str  # "" for everyone; else a host or query name, a client address or a user
    until: float | None  # None: until cleared
    created: float
    scenario: str = ""  # the scenario that switched it on, if one did


class Faults:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, kind: str, target: str = "", seconds: float | None = None,
            scenario: str = "") -> Fault:
        return self.add_many([(kind, target, seconds)], scenario)[0]

    def add_many(self, faults: list[tuple[str, str, float | None]], scenario: str = "") -> list[Fault]:
        """Switch on several (kind, target, seconds) at once: a scenario is all on or none,
        and starting it again replaces its running copy."""
        now = time.time()
        added = []
        with self.db.write() as tx:
            if scenario:
                tx.execute("DELETE FROM faults WHERE scenario = ?", (scenario,))
            for kind, target, seconds in faults:
                until = now + seconds if seconds is not None else None
                cursor = tx.execute(
                    "INSERT INTO faults (kind, target, until, created, scenario) VALUES (?, ?, ?, ?, ?)",
                    (kind, target, until, now, scenario))
                assert cursor.lastrowid is not None
                added.append(Fault(cursor.lastrowid, kind, target, until, now, scenario))
            tx.changed("faults")
        return added

    def active(self, now: float | None = None) -> list[Fault]:
        now = time.time() if now is None else now
        return [Fault(*row) for row in self.db.query(
            "SELECT id, kind, target, until, created, scenario FROM faults WHERE until IS NULL OR until > ? "
            "ORDER BY id", (now,))]

    def clear(self, fault_id: int | None = None, scenario: str = "") -> int:
        """Remove one fault, a scenario's, or all of them (and the expired ones' rows)."""
        with self.db.write() as tx:
            if fault_id is not None:
                count = tx.execute("DELETE FROM faults WHERE id = ?", (fault_id,)).rowcount
            elif scenario:
                count = tx.execute("DELETE FROM faults WHERE scenario = ?", (scenario,)).rowcount
            else:
                count = tx.execute("DELETE FROM faults").rowcount
            if count:
                tx.changed("faults")
            return count
