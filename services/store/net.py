"""DHCP leases and the dynamic DNS records that follow them (and `protolab dns`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
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
    """
    CREATE TABLE dns_serial (
        zone TEXT PRIMARY KEY,
        serial INTEGER NOT NULL
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
        self.add_records([(name, type, value)], ttl, owner)

    def add_records(self, records: Iterable[tuple[str, str, str]], ttl: int = 300,
                    owner: str = "") -> None:
        """(name, type, value) records in one transaction (a zone's worth at once)."""
        with self.db.write() as tx:
            tx.executemany(
                "INSERT OR REPLACE INTO dns_records (name, type, value, ttl, owner) VALUES (?, ?, ?, ?, ?)",
                [(name.lower().rstrip("."), type.upper(), value, ttl, owner)
                 for name, type, value in records],
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

    # -- DHCP leases (written by the one DHCP server of a data directory) -------------------

    def lease(self, mac: str) -> Lease | None:
        row = self.db.one("SELECT mac, ip, hostname, client_id, expires, state FROM leases "
                          "WHERE mac = ?", (mac,))
        return Lease(*row) if row else None

    def bind_lease(self, mac: str, ip: str, hostname: str, client_id: str, expires: float,
                   record: tuple[str, int] | None = None) -> None:
        """Give `ip` to `mac` until `expires` (durable when this returns). Whatever held the
        address before (an ended lease, a declined mark) goes, with its DNS records; a live
        lease of another client on it is an error (the UNIQUE constraint), never a share.
        `record` = (fully qualified name, ttl): the A record the lease's host name gets."""
        with self.db.write() as tx:
            old = tx.execute("SELECT mac, expires FROM leases WHERE ip = ? AND mac != ?",
                             (ip, mac)).fetchone()
            if old is not None:
                if old[1] > time.time():
                    raise ValueError(f"{ip} is leased to {old[0]}")
                tx.execute("DELETE FROM leases WHERE mac = ?", (old[0],))
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (f"lease:{old[0]}",))
            tx.execute("INSERT OR REPLACE INTO leases (mac, ip, hostname, client_id, expires, "
                       "state) VALUES (?, ?, ?, ?, ?, 'bound')",
                       (mac, ip, hostname, client_id, expires))
            current = tx.execute("SELECT name, value FROM dns_records WHERE owner = ?",
                                 (f"lease:{mac}",)).fetchall()
            wanted = [(record[0].lower(), ip)] if record else []
            if [tuple(r) for r in current] != wanted:
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (f"lease:{mac}",))
                for name, value in wanted:
                    tx.execute("INSERT OR REPLACE INTO dns_records (name, type, value, ttl, owner) "
                               "VALUES (?, 'A', ?, ?, ?)", (name, value, record[1], f"lease:{mac}"))
                tx.changed("dns")
            tx.changed("leases")

    def end_lease(self, mac: str, state: str = "released") -> None:
        """The lease ends now (RELEASE, or a client that declined its address); the row stays
        so the client gets the same address back if it is still free."""
        with self.db.write() as tx:
            tx.execute("UPDATE leases SET expires = min(expires, ?), state = ? WHERE mac = ?",
                       (time.time(), state, mac))
            if tx.execute("DELETE FROM dns_records WHERE owner = ?", (f"lease:{mac}",)).rowcount:
                tx.changed("dns")
            tx.changed("leases")

    def decline(self, ip: str, until: float) -> None:
        """Set `ip` aside until `until` (a client found it in use: DHCPDECLINE)."""
        with self.db.write() as tx:
            for (mac,) in tx.execute("SELECT mac FROM leases WHERE ip = ?", (ip,)).fetchall():
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (f"lease:{mac}",))
            tx.execute("DELETE FROM leases WHERE ip = ?", (ip,))
            tx.execute("INSERT INTO leases (mac, ip, expires, state) VALUES (?, ?, ?, 'declined')",
                       (f"declined:{ip}", ip, until))
            tx.changed("leases", "dns")

    def sweep(self, now: float | None = None) -> int:
        """Remove the DNS records of leases that have ended; returns how many went."""
        now = time.time() if now is None else now
        with self.db.write() as tx:
            count = tx.execute(
                "DELETE FROM dns_records WHERE owner IN "
                "(SELECT 'lease:' || mac FROM leases WHERE expires <= ?)", (now,)).rowcount
            if count:
                tx.changed("dns", "leases")
            return count

    # -- the SOA serial, kept so that it never goes back across restarts ----------------------

    def serial(self, zone: str) -> int:
        row = self.db.one("SELECT serial FROM dns_serial WHERE zone = ?", (zone,))
        return int(row[0]) if row else 0

    def set_serial(self, zone: str, serial: int) -> None:
        with self.db.write() as tx:  # no topic: nobody else needs to hear of it
            tx.execute("INSERT OR REPLACE INTO dns_serial (zone, serial) VALUES (?, ?)",
                       (zone, serial))
