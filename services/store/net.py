"""DHCP leases and the dynamic DNS records that follow them (and `protolab dns`).

The lease-to-name rule lives here, with the two tables it joins: a record a lease owns is
live while its lease is (`expires > now`), and nowhere else is that decided. Readers ask
for `live_records()` and `next_expiry()`; the owner string that ties a record to its lease
is this module's own business. The "dns" topic means "the live records changed" (or their
next expiry came earlier): a renewal that changes no name says nothing to DNS.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .db import Database

if TYPE_CHECKING:
    from .db import Tx

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
    # DHCPv6 IA_NA leases: one per (client DUID, IAID), an address never in two rows
    """
    CREATE TABLE leases6 (
        duid TEXT NOT NULL,
        iaid INTEGER NOT NULL,
        ip TEXT NOT NULL UNIQUE,
        hostname TEXT NOT NULL DEFAULT '',
        expires REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'bound',
        PRIMARY KEY (duid, iaid)
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
class Lease6:
    duid: str  # hex
    iaid: int
    ip: str
    hostname: str
    expires: float
    state: str


@dataclass(frozen=True)
class Record:
    id: int
    name: str
    type: str
    value: str
    ttl: int
    owner: str  # "" for records added by hand, "lease:MAC" / "lease6:DUID/IAID" for a lease's


def _owner(mac: str) -> str:
    return f"lease:{mac}"


def _owner6(duid: str, iaid: int) -> str:
    return f"lease6:{duid}/{iaid}"


_OWNER6_SQL = "'lease6:' || l.duid || '/' || l.iaid"
# A record is live when no lease owns it, or its lease has not ended: the one rule.
# (Two parameters, both the time now.)
_LIVE = ("((r.owner NOT LIKE 'lease:%' AND r.owner NOT LIKE 'lease6:%') OR EXISTS (SELECT 1 "
         "FROM leases l WHERE r.owner = 'lease:' || l.mac AND l.expires > ?) OR EXISTS "
         f"(SELECT 1 FROM leases6 l WHERE r.owner = {_OWNER6_SQL} AND l.expires > ?))")


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
        """Every record row, live or not (the sweep removes the ended ones later)."""
        rows = self.db.query("SELECT id, name, type, value, ttl, owner FROM dns_records ORDER BY name, type")
        return [Record(*r) for r in rows]

    def live_records(self, now: float | None = None) -> list[Record]:
        """The records to answer with now: those added by hand, and those of the leases
        that have not ended (whether or not a sweep has removed the ended ones yet)."""
        now = time.time() if now is None else now
        rows = self.db.query("SELECT id, name, type, value, ttl, owner FROM dns_records r "
                             f"WHERE {_LIVE} ORDER BY name, type, value", (now, now))
        return [Record(*r) for r in rows]

    def next_expiry(self, now: float | None = None) -> float | None:
        """When the next live record goes because its lease ends (None: none will)."""
        now = time.time() if now is None else now
        ends = []
        for table, owner in (("leases", "'lease:' || l.mac"), ("leases6", _OWNER6_SQL)):
            row = self.db.one(f"SELECT min(l.expires) FROM {table} l WHERE l.expires > ? AND "
                              f"EXISTS (SELECT 1 FROM dns_records r WHERE r.owner = {owner})",
                              (now,))
            if row and row[0] is not None:
                ends.append(float(row[0]))
        return min(ends, default=None)

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
                sql, params = sql + " AND type = ?", [*params, type.upper()]
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
        `record` = (fully qualified name, ttl): the A record the lease's host name gets.
        A renewal that keeps the name and moves the end later changes no live record:
        no "dns" topic, so the zone and its serial stay."""
        now = time.time()
        with self.db.write() as tx:
            old = tx.execute("SELECT mac, expires FROM leases WHERE ip = ? AND mac != ?",
                             (ip, mac)).fetchone()
            if old is not None:
                if old[1] > now:
                    raise ValueError(f"{ip} is leased to {old[0]}")
                tx.execute("DELETE FROM leases WHERE mac = ?", (old[0],))
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (_owner(old[0]),))
            before = tx.execute("SELECT expires FROM leases WHERE mac = ?", (mac,)).fetchone()
            tx.execute("INSERT OR REPLACE INTO leases (mac, ip, hostname, client_id, expires, "
                       "state) VALUES (?, ?, ?, ?, ?, 'bound')",
                       (mac, ip, hostname, client_id, expires))
            _follow(tx, _owner(mac), "A", ip, record, before[0] if before else None, expires, now)
            tx.changed("leases")

    # -- DHCPv6 leases (IA_NA): the same rules, keyed by (DUID, IAID), AAAA records ----------

    def leases6(self, include_expired: bool = False) -> list[Lease6]:
        sql = "SELECT duid, iaid, ip, hostname, expires, state FROM leases6"
        if not include_expired:
            return [Lease6(*r) for r in self.db.query(sql + " WHERE expires > ? ORDER BY ip",
                                                      (time.time(),))]
        return [Lease6(*r) for r in self.db.query(sql + " ORDER BY ip")]

    def bind_lease6(self, duid: str, iaid: int, ip: str, hostname: str, expires: float,
                    record: tuple[str, int] | None = None) -> None:
        """bind_lease's rules for an IA_NA: `ip` to (duid, iaid) until `expires`, durable
        when this returns; an ended holder of the address goes, a live one is an error.
        `record` = (fully qualified name, ttl) gets an AAAA (and so, in the DNS, a PTR)."""
        now = time.time()
        with self.db.write() as tx:
            old = tx.execute("SELECT duid, iaid, expires FROM leases6 WHERE ip = ? AND NOT "
                             "(duid = ? AND iaid = ?)", (ip, duid, iaid)).fetchone()
            if old is not None:
                if old[2] > now:
                    raise ValueError(f"{ip} is leased to {old[0]}/{old[1]}")
                tx.execute("DELETE FROM leases6 WHERE duid = ? AND iaid = ?", (old[0], old[1]))
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (_owner6(old[0], old[1]),))
            before = tx.execute("SELECT expires FROM leases6 WHERE duid = ? AND iaid = ?",
                                (duid, iaid)).fetchone()
            tx.execute("INSERT OR REPLACE INTO leases6 (duid, iaid, ip, hostname, expires, "
                       "state) VALUES (?, ?, ?, ?, ?, 'bound')",
                       (duid, iaid, ip, hostname, expires))
            _follow(tx, _owner6(duid, iaid), "AAAA", ip, record, before[0] if before else None,
                    expires, now)
            tx.changed("leases")

    def end_lease6(self, duid: str, iaid: int, state: str = "released") -> None:
        """The IA_NA's lease ends now (RELEASE); the row stays, so the client gets the same
        address back if it is still free."""
        with self.db.write() as tx:
            tx.execute("UPDATE leases6 SET expires = min(expires, ?), state = ? WHERE duid = ? "
                       "AND iaid = ?", (time.time(), state, duid, iaid))
            if tx.execute("DELETE FROM dns_records WHERE owner = ?",
                          (_owner6(duid, iaid),)).rowcount:
                tx.changed("dns")
            tx.changed("leases")

    def decline6(self, ip: str, until: float) -> None:
        """Set `ip` aside until `until` (DECLINE: a client's duplicate address detection
        found it in use)."""
        with self.db.write() as tx:
            for duid, iaid in tx.execute("SELECT duid, iaid FROM leases6 WHERE ip = ?",
                                         (ip,)).fetchall():
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (_owner6(duid, iaid),))
            tx.execute("DELETE FROM leases6 WHERE ip = ?", (ip,))
            tx.execute("INSERT INTO leases6 (duid, iaid, ip, expires, state) VALUES "
                       "(?, 0, ?, ?, 'declined')", (f"declined:{ip}", ip, until))
            tx.changed("leases", "dns")

    def end_lease(self, mac: str, state: str = "released") -> None:
        """The lease ends now (RELEASE, or a client that declined its address); the row stays
        so the client gets the same address back if it is still free."""
        with self.db.write() as tx:
            tx.execute("UPDATE leases SET expires = min(expires, ?), state = ? WHERE mac = ?",
                       (time.time(), state, mac))
            if tx.execute("DELETE FROM dns_records WHERE owner = ?", (_owner(mac),)).rowcount:
                tx.changed("dns")
            tx.changed("leases")

    def decline(self, ip: str, until: float) -> None:
        """Set `ip` aside until `until` (a client found it in use: DHCPDECLINE)."""
        with self.db.write() as tx:
            for (mac,) in tx.execute("SELECT mac FROM leases WHERE ip = ?", (ip,)).fetchall():
                tx.execute("DELETE FROM dns_records WHERE owner = ?", (_owner(mac),))
            tx.execute("DELETE FROM leases WHERE ip = ?", (ip,))
            tx.execute("INSERT INTO leases (mac, ip, expires, state) VALUES (?, ?, ?, 'declined')",
                       (f"declined:{ip}", ip, until))
            tx.changed("leases", "dns")

    def sweep(self, now: float | None = None) -> int:
        """Remove the records of leases that have ended; returns how many went. Only
        housekeeping: live_records() already leaves them out, so no topic."""
        now = time.time() if now is None else now
        with self.db.write() as tx:
            return int(tx.execute(f"DELETE FROM dns_records AS r WHERE NOT {_LIVE}",
                                  (now, now)).rowcount)

    # -- the SOA serial, kept so that it never goes back across restarts ----------------------

    def serial(self, zone: str) -> int:
        row = self.db.one("SELECT serial FROM dns_serial WHERE zone = ?", (zone,))
        return int(row[0]) if row else 0

    def set_serial(self, zone: str, serial: int) -> None:
        with self.db.write() as tx:  # no topic: nobody else needs to hear of it
            tx.execute("INSERT OR REPLACE INTO dns_serial (zone, serial) VALUES (?, ?)",
                       (zone, serial))


def _follow(tx: Tx, owner: str, rtype: str, ip: str, record: tuple[str, int] | None,
            before: float | None, expires: float, now: float) -> None:
    """The records of a lease (re)bound in `tx`: its one name to `ip`, or none. A renewal
    that keeps the name and moves the end later changes no live record: no "dns" topic."""
    current = tx.execute("SELECT name, value, ttl FROM dns_records WHERE owner = ?",
                         (owner,)).fetchall()
    wanted = [(record[0].lower(), ip, record[1])] if record else []
    if [tuple(r) for r in current] != wanted:
        tx.execute("DELETE FROM dns_records WHERE owner = ?", (owner,))
        tx.executemany("INSERT OR REPLACE INTO dns_records (name, type, value, ttl, owner) "
                       "VALUES (?, ?, ?, ?, ?)", [(name, rtype, value, ttl, owner)
                                                   for name, value, ttl in wanted])
        tx.changed("dns")
    elif wanted and (before is None or before <= now or expires < before):
        tx.changed("dns")  # its name comes back to life, or ends sooner than said
