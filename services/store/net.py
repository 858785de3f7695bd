"""DHCP leases and the dynamic DNS records that follow them (and `protolab dns`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .db import Database

MIGRATIONS = [
    """
    CREATE TABLE leases (
        mac TEXT PRIMARY KEY,
        ip TEXT NOT NULL UNIQUE,
        hostname TEXT NOT NULL DEFAULT '',
        client_id TEXT NOT NULL DEFAULT '',
        expires REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'bound'
    );
    CREATE TABLE dns_records (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        value TEXT NOT NULL,
        ttl INTEGER NOT NULL DEFAULT 300,
        owner TEXT NOT NULL DEFAULT '',
        UNIQUE (name, type, value)
    );
    """,
]


@dataclass(frozen=True)
class Lease:
    mac: str
    ip: str
    hostname: str
    client_id: str
    expires: float
    state: str


@dataclass(frozen=True)
class Record:
    id: int
    name: str
    type: str
    value: str
    ttl: int
    owner: str  # "" for records added by hand, "lease:MAC" for a DHCP client's


class Net:
    def __init__(self, db: Database) -> None:
        self.db = db

    def leases(self, include_expired: bool = False) -> list[Lease]:
        sql = "SELECT mac, ip, hostname, client_id, expires, state FROM leases"
        if not include_expired:
            sql += " WHERE expires > ?"
            return [Lease(*r) for r in self.db.query(sql + " ORDER BY ip", (time.time(),))]
        return [Lease(*r) for r in self.db.query(sql + " ORDER BY ip")]

    def records(self) -> list[Record]:
        rows = self.db.query("SELECT id, name, type, value, ttl, owner FROM dns_records ORDER BY name, type")
        return [Record(*r) for r in rows]

    def add_record(self, name: str, type: str, value: str, ttl: int = 300, owner: str = "") -> None:
        with self.db.write() as tx:
            tx.execute(
                "INSERT OR REPLACE INTO dns_records (name, type, value, ttl, owner) VALUES (?, ?, ?, ?, ?)",
                (name.lower().rstrip("."), type.upper(), value, ttl, owner),
            )
            tx.changed("dns")

    def delete_records(self, name: str, type: str | None = None) -> int:
        with self.db.write() as tx:
            sql, params = "DELETE FROM dns_records WHERE name = ?", [name.lower().rstrip(".")]
            if type:
                sql, params = sql + " AND type = ?", params + [type.upper()]
            count = tx.execute(sql, params).rowcount
            if count:
                tx.changed("dns")
            return count
