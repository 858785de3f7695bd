"""SQLite in WAL mode, shared by every thread and every process of the lab.

Each thread gets its own connection (impacket's SMB server runs a thread per client), and
that connection is closed when its thread ends (or calls release()): a server that makes
a thread per connection must not keep a descriptor per connection it ever had. Writes run in
`BEGIN IMMEDIATE` transactions, and a commit that returned is on disk: that is what lets a
protocol acknowledge (SMTP 250, IMAP APPEND OK) right after it.

Group commit: SQLite's synchronous=FULL fsyncs the WAL inside COMMIT, with the write lock
held, so concurrent writers queued behind each other's fsync (ten IMAP sessions: a 1 ms
flag change took tens of ms). Here SQLite runs with synchronous=NORMAL (under WAL the
database stays whole after any crash; the WAL is fsync'd before each checkpoint), and a
durable commit fsyncs the WAL itself after the lock is released: one fsync covers every
commit written before it, so writers that commit meanwhile share it, and the commit
returns only once its fsync is done, as with FULL. `write(durable=False)` skips that
fsync, for what a client may lose without harm (IMAP flags, \\Recent): such a commit is
on disk with the next durable commit or checkpoint; a killed process loses nothing (the
WAL frames are written), a power loss or OS crash at most the last such commits.
`later()` puts a thread's fsyncs off instead: its durable commits are recorded, and the
caller makes them durable with `sync()`, in another thread, before it says they are done
(IMAP runs small APPENDs and EXPUNGEs on the reactor, which must not wait for the disk).
The threads of one process take turns at writing on a lock of their own: waiting for
another writer inside SQLite is its busy handler's polling (sleeps of 1 to 100 ms).

Every write names the topics it changed ("mailbox:12", "users", ...); they go into the
`changes` table in the same transaction. Any process finds out what others did by polling
that table, which is one index lookup (see Store.poll).
"""

from __future__ import annotations

import errno
import os
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


class Later:
    """The durable commits of one thread whose fsync `Database.later()` put off."""

    __slots__ = ("commit",)

    def __init__(self) -> None:
        self.commit = 0  # the last of them (0: none); Database.sync(commit) covers all


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
        self._wal = Path(f"{path}-wal")
        self._writing = threading.RLock()  # one writer of this process at a time
        self._syncing = threading.Lock()  # one WAL fsync at a time
        self._committed = 0  # commits of this process so far
        self._synced = 0  # of them, the ones an fsync of the WAL has covered
        self._wal_inode = 0  # the WAL whose directory entry was fsync'd
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
                conn.execute("PRAGMA synchronous = NORMAL")  # + sync(): module doc
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
    def write(self, durable: bool = True) -> Iterator[Tx]:
        """A write transaction, committed when the block ends without error: on disk when
        this returns, or with `durable=False` crash-safe but not yet fsync'd (module doc)."""
        conn = self.conn()
        with self._writing:
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
            self._committed += 1
            commit = self._committed
        if durable:
            later = getattr(self._local, "later", None)
            if later is None:
                self.sync(commit)
            else:
                later.commit = commit

    @contextmanager
    def later(self) -> Iterator[Later]:
        """Within the block, the calling thread's durable commits skip their fsync: the
        Later names the last one, and the caller must `sync()` it (from any thread, so
        that an event loop need not wait for the disk) before it acknowledges them. Until
        then they are crash-safe as `write(durable=False)` is, and other sessions may
        already read them (as they may between any commit and its fsync)."""
        later = Later()
        self._local.later = later
        try:
            yield later
        finally:
            del self._local.later

    def sync(self, commit: int) -> None:
        """Make this process's commits up to `commit` durable: fsync the WAL, unless an
        fsync that began after that commit has done it already (the group commit)."""
        with self._syncing:
            if self._synced >= commit:
                return
            covered = self._committed  # every commit counted here is written to the WAL
            try:
                fd = os.open(self._wal, os.O_RDONLY)
            except FileNotFoundError:  # checkpointed and removed: it is in the database,
                self._synced = covered  # which SQLite fsyncs after a checkpoint
                return
            try:
                os.fsync(fd)
                inode = os.fstat(fd).st_ino
                if inode != self._wal_inode:  # a new WAL: its name durable too, as SQLite does
                    _fsync_directory(self._wal.parent)
                    self._wal_inode = inode
            except OSError as error:
                if is_disk_full(error):
                    raise DiskFull(f"{self.path}: no space left on the device") from error
                raise
            finally:
                os.close(fd)
            self._synced = max(self._synced, covered)

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
        with self._writing:
            self._committed += 1
            commit = self._committed
        self.sync(commit)

    def close(self) -> None:
        with self._lock:
            for held in list(self._all):
                held.conn.close()
            self._all = weakref.WeakSet()
        self._local = threading.local()


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
