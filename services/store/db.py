"""SQLite in WAL mode, shared by every thread and every process of the lab.

Each thread gets its own connection (impacket's SMB server runs a thread per client), and
that connection is closed when its thread ends (or calls release()): a server that makes
a thread per connection must not keep a descriptor per connection it ever had. Writes run in
`BEGIN IMMEDIATE` transactions with synchronous=FULL, so a commit that returned is on disk:
that is what lets a protocol acknowledge (SMTP 250, IMAP APPEND OK) right after it.

Every write names the topics it changed ("mailbox:12", "users", ...); they go into the
`changes` table in the same transaction. Any process finds out what others did by polling
that table, which is one index lookup (see Store.poll).
"""

from __future__ import annotations

import errno
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

APP_ID = 0x70726C62  # "prlb": marks a lab database (PRAGMA application_id)

# The tables the store itself needs; each store module migrates its own tables.
CORE_MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        service TEXT NOT NULL,
        session TEXT NOT NULL,
        peer TEXT NOT NULL,
        user TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX journal_service ON journal (service, id);
    """,
]


class StoreError(Exception):
    """A store problem worth one line to the user (foreign or unreadable data, ...)."""


class DiskFull(StoreError):
    """A write that found no space (or quota) left: nothing of it was stored. Protocols
    answer their own "insufficient storage" (452, NO, 507, STATUS_DISK_FULL) and keep the
    session, and the same write works again once space is freed."""


_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` means "no space left": DiskFull, an OSError with ENOSPC/EDQUOT/EFBIG,
    or SQLite's SQLITE_FULL (which also covers a failed journal or WAL write)."""
    if isinstance(error, DiskFull):
        return True
    if isinstance(error, OSError):
        return error.errno in _FULL_ERRNOS
    if isinstance(error, sqlite3.Error):
        return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or \
            "database or disk is full" in str(error)
    return False


class Tx:
    """One write transaction: execute statements, name the topics they change."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.topics: set[str] = set()

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        return self.conn.executemany(sql, rows)

    def changed(self, *topics: str) -> None:
        self.topics.update(topics)


class _Held:
    """A thread's connection, kept in its thread-local storage: when the thread ends, the
    storage goes, and with it (a finalizer) the connection. sqlite3.Connection itself takes
    no weak references, so this wrapper is what close() and the finalizer can see."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: weakref.WeakSet[_Held] = weakref.WeakSet()
        conn = self.conn()
        try:
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{path}: not a protolab database ({error})") from None
        if tables and app != APP_ID:
            raise StoreError(f"{path}: not a protolab database (it holds other tables)")
        if not tables:
            conn.execute(f"PRAGMA application_id = {APP_ID}")
        if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
            raise StoreError(f"{path}: cannot switch the database to WAL mode")
        self.migrate("core", CORE_MIGRATIONS)

    def conn(self) -> sqlite3.Connection:
        held = getattr(self._local, "held", None)
        if held is None:
            try:
                # check_same_thread=False: only its own thread uses it (thread-local), but
                # close() and the finalizer may close it from another thread.
                conn = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                       check_same_thread=False)
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.DatabaseError as error:
                raise StoreError(f"{self.path}: not a protolab database ({error})") from None
            except sqlite3.Error as error:
                raise StoreError(f"{self.path}: cannot open the database: {error}") from None
            held = _Held(conn)
            weakref.finalize(held, conn.close)
            self._local.held = held
            with self._lock:
                self._all.add(held)
        return held.conn

    def release(self) -> None:
        """Close the calling thread's connection now (a thread that is about to end or to
        idle for long); its next call opens a new one."""
        held = getattr(self._local, "held", None)
        if held is not None:
            del self._local.held
            held.conn.close()

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self.conn().execute(sql, params).fetchone()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """A write transaction, committed (durably) when the block ends without error."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        tx = Tx(conn)
        try:
            yield tx
            if tx.topics:
                now = time.time()
                conn.executemany(
                    "INSERT INTO changes (topic, at) VALUES (?, ?)",
                    [(topic, now) for topic in sorted(tx.topics)],
                )
            conn.execute("COMMIT")
        except BaseException as error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if is_disk_full(error) and not isinstance(error, DiskFull):
                raise DiskFull(f"{self.path}: no space left on the device") from error
            raise

    def migrate(self, module: str, migrations: list[str]) -> None:
        """Bring `module`'s tables to the newest of its `migrations` (run once each, in order)."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = 0
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                row = conn.execute(
                    "SELECT value FROM meta WHERE key = ?", (f"schema:{module}",)
                ).fetchone()
                done = int(row[0]) if row else 0
            if done > len(migrations):
                raise StoreError(
                    f"{self.path}: made by a newer protolab ({module} schema {done}, "
                    f"this one knows {len(migrations)})"
                )
            for script in migrations[done:]:
                for statement in _statements(script):
                    conn.execute(statement)
            if done < len(migrations):
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                    (f"schema:{module}", str(len(migrations))),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        with self._lock:
            for held in list(self._all):
                held.conn.close()
            self._all = weakref.WeakSet()
        self._local = threading.local()


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split on complete statements instead.
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return [s for s in out if s]
