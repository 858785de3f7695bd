"""The shared store: the only state the services share, in one data directory.

    DATA/lab.db        SQLite (WAL): users, mailboxes and messages, leases, DNS records,
                       the recent journal, the change log
    DATA/homes/USER    each user's files (public_html inside is the user's web space)
    DATA/public        the area every user (and, by a switch, anonymous users) can read
    DATA/teams/TEAM    a class team's shared folder (its members only: SMB, FTP)
    DATA/tls/          the lab CA and server certificate
    DATA/journal/      the journal as JSON lines
    DATA/run/          one lock per service being served

Several processes use one data directory at once (one container per service). A change
made by one reaches the others through `poll()`, which the lab calls several times a second.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .db import Database, DiskFull, StoreError, Tx, is_disk_full
from .faults import Faults
from .files import Files
from .mail import Mail
from .net import Net
from .roster import Roster
from .users import UserError, Users

__all__ = ["DiskFull", "Store", "StoreError", "UserError", "is_disk_full"]

Subscriber = Callable[[set[str]], None]


class Store:
    def __init__(self, data: Path, *, keep_plaintext: bool = False) -> None:
        self.data = data
        _check_directory(data)
        self.db = Database(data / "lab.db")
        from . import faults, mail, net, roster, users

        self.db.migrate("users", users.MIGRATIONS)
        self.db.migrate("mail", mail.MIGRATIONS)
        self.db.migrate("net", net.MIGRATIONS)
        self.db.migrate("roster", roster.MIGRATIONS)
        self.db.migrate("faults", faults.MIGRATIONS)
        self.users = Users(self.db, keep_plaintext)
        self.mail = Mail(self.db)
        self.net = Net(self.db)
        self.roster = Roster(self.db)
        self.faults = Faults(self.db)
        self.files = Files(data)
        self.files.ensure()
        self.users.on_add.append(self.mail.create_defaults)
        self.users.on_add.append(self._make_home)
        self._subscribers: list[tuple[str, Subscriber]] = []
        self.subscribe("roster", self.roster.invalidate)
        self._seq = self.db.one("SELECT coalesce(max(seq), 0) FROM changes")[0]
        self._locks: list[int] = []

    def _make_home(self, tx: Tx, name: str) -> None:
        """A new user's home exists as soon as the user does (FTP and SMB open it)."""
        self.files.home(name)

    def subscribe(self, prefix: str, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(topics)` from poll() when topics starting with `prefix` change.
        Returns a function that ends the subscription."""
        entry = (prefix, callback)
        self._subscribers.append(entry)
        return lambda: self._subscribers.remove(entry) if entry in self._subscribers else None

    def poll(self) -> set[str]:
        """Topics changed (by any process) since the last poll; subscribers are told."""
        rows = self.db.query("SELECT seq, topic FROM changes WHERE seq > ?", (self._seq,))
        if not rows:
            return set()
        self._seq = max(seq for seq, _ in rows)
        topics = {topic for _, topic in rows}
        for prefix, callback in list(self._subscribers):
            matching = {t for t in topics if t.startswith(prefix)}
            if matching:
                callback(matching)
        return topics

    def prune(self, keep_seconds: float = 600) -> None:
        """Forget old change-log rows (every process has long polled past them)."""
        with self.db.write() as tx:
            tx.execute("DELETE FROM changes WHERE at < strftime('%s', 'now') - ?", (keep_seconds,))

    def seed_users(self, seeds: list) -> list[str]:
        """Create the config's users that do not exist yet; returns their names."""
        made = []
        for seed in seeds:
            if self.users.get(seed.name) is None:
                try:
                    self.users.add(seed.name, seed.password)
                    made.append(seed.name)
                except UserError:
                    pass  # another process made it first
        return made

    def lock(self, service: str) -> None:
        """Claim `service` for this process: two servers of one service on one data
        directory would fight over its ports and leases."""
        run = self.data / "run"
        run.mkdir(exist_ok=True)
        path = run / f"{service}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"{service} is already served from {self.data} (pid {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._locks.append(fd)

    def close(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        self.db.close()


def _check_directory(data: Path) -> None:
    try:
        if data.exists() and not data.is_dir():
            raise StoreError(f"{data}: not a directory")
        if data.is_dir() and not (data / "lab.db").exists() and any(data.iterdir()):
            raise StoreError(
                f"{data}: not a protolab data directory (no lab.db); "
                "choose an empty or new directory"
            )
        data.mkdir(mode=0o750, parents=True, exist_ok=True)
    except PermissionError as error:
        raise StoreError(f"{data}: permission denied ({error.strerror})") from None
    if not os.access(data, os.R_OK | os.W_OK | os.X_OK):
        raise StoreError(f"{data}: not readable and writable by this user")


# sqlite3 errors that reach the CLI get the same one-line treatment as StoreError.
DatabaseErrors = (StoreError, sqlite3.Error)
