"""The class roster: which lab users a roster made, their teams, and the passwords the
lab generated for them (kept so that `protolab class sheet` can print the slips again;
the store is the lab's own 0600 data, like [auth] keep_plaintext).

A team is its members' shared `team` column, nothing more: its mail domain
(TEAM.LABDOMAIN), its DNS records and its shared folder follow from it. Every write names
the topic "roster", and "dns:teams" when the set of teams may have changed (the DNS server
rebuilds its zone on "dns" topics). Reads of the teams are cached per process and the cache
is dropped when a poll sees "roster" (Store subscribes it), so SMTP's per-RCPT domain check
is a dict lookup, not a query.
"""

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
        self._teams: dict[str, tuple[str, ...]] | None = None

    def members(self) -> list[tuple[str, str, str]]:
        """(name, team, password) of every student, by team then name."""
        return [(row[0], row[1], row[2]) for row in self.db.query(
            "SELECT name, team, password FROM roster ORDER BY team, name")]

    def teams(self) -> dict[str, tuple[str, ...]]:
        """Team -> its members' names (sorted); students without a team are in none."""
        if self._teams is None:
            teams: dict[str, list[str]] = {}
            for name, team in self.db.query(
                    "SELECT name, team FROM roster WHERE team != '' ORDER BY team, name"):
                teams.setdefault(team, []).append(name)
            self._teams = {team: tuple(names) for team, names in teams.items()}
        return self._teams

    def team_of(self, name: str) -> str:
        """The student's team ("" for none, or for a user the roster did not make)."""
        return next((team for team, names in self.teams().items() if name in names), "")

    def domains(self, lab_domain: str) -> dict[str, str]:
        """Each team's mail domain (TEAM.LABDOMAIN, lower case) -> the team."""
        suffix = lab_domain.lower().rstrip(".")
        return {f"{team}.{suffix}": team for team in self.teams()}

    def invalidate(self, topics: set[str] | None = None) -> None:
        """Forget the cached teams (another process changed the roster)."""
        self._teams = None

    def put(self, name: str, team: str, password: str) -> None:
        self.put_many([(name, team, password)])

    def put_many(self, students: list[tuple[str, str, str]]) -> None:
        """Add or change (name, team, password) rows, in one transaction."""
        with self.db.write() as tx:
            for name, team, password in students:
                before = tx.execute("SELECT team FROM roster WHERE name = ?", (name,)).fetchone()
                tx.execute("INSERT INTO roster VALUES (?, ?, ?, ?) ON CONFLICT (name) DO "
                           "UPDATE SET team = excluded.team, password = excluded.password",
                           (name, team, password, time.time()))
                tx.changed("roster")
                if before is None or before[0] != team:
                    tx.changed("dns:teams")
        self.invalidate()

    def forget(self, name: str) -> None:
        with self.db.write() as tx:
            tx.execute("DELETE FROM roster WHERE name = ?", (name,))
            tx.changed("roster", "dns:teams")
        self.invalidate()
