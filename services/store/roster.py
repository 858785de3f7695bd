"""The class roster: which lab users a roster made, their teams, and the passwords the
lab generated for them (kept so that `protolab class sheet` can print the slips again;
the store is the lab's own 0600 data, like [auth] keep_plaintext)."""

from __future__ import annotations

import time

from .db import Database

MIGRATIONS = [
    """
    CREATE TABLE roster (
        name TEXT PRIMARY KEY,
        team TEXT NOT NULL DEFAULT '',
        password TEXT NOT NULL,
        added REAL NOT NULL
    );
    """,
]


class Roster:
    def __init__(self, db: Database) -> None:
        self.db = db

    def members(self) -> list[tuple[str, str, str]]:
        """(name, team, password) of every student, by team then name."""
        return [(row[0], row[1], row[2]) for row in self.db.query(
            "SELECT name, team, password FROM roster ORDER BY team, name")]

    def put(self, name: str, team: str, password: str) -> None:
        with self.db.write() as tx:
            tx.execute("INSERT INTO roster VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE "
                       "SET team = excluded.team, password = excluded.password",
                       (name, team, password, time.time()))
            tx.changed("roster")

    def forget(self, name: str) -> None:
        with self.db.write() as tx:
            tx.execute("DELETE FROM roster WHERE name = ?", (name,))
            tx.changed("roster")
