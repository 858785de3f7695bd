"""Mailboxes and messages: what SMTP delivers into and POP3 and IMAP read.

IMAP's rules are the model: a mailbox has a UIDVALIDITY that changes only when the mailbox
is made anew, UIDs ascend and are never reused, every change takes the next mod-sequence
(CONDSTORE), and expunged UIDs leave a tombstone with their mod-sequence (QRESYNC).
Mailbox names are Unicode with "/" as the hierarchy delimiter; "INBOX" is matched in any
case. Message bytes live in the database, so a message is either wholly there or not.
They are kept as they go on the wire, with CRLF line ends: append() and append_many(), the
ways in, make every bare LF or CR a CRLF (SMTP from netcat, a script's message, an APPEND
of a Unix file), so readers send what is stored and IMAP's RFC822.SIZE, POP3's LIST and
STAT are `size`, the length of what FETCH BODY[] and RETR send.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .db import Database, StoreError, Tx

MIGRATIONS = [
    """
    CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL DEFAULT 1,
        modseq INTEGER NOT NULL DEFAULT 1,
        special_use TEXT NOT NULL DEFAULT '',
        UNIQUE (user, name)
    );
    CREATE TABLE subscriptions (
        user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        name TEXT NOT NULL,
        PRIMARY KEY (user, name)
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        mailbox INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        size INTEGER NOT NULL,
        flags TEXT NOT NULL DEFAULT '',
        internaldate REAL NOT NULL,
        modseq INTEGER NOT NULL,
        UNIQUE (mailbox, uid)
    );
    CREATE INDEX messages_modseq ON messages (mailbox, modseq);
    CREATE TABLE bodies (
        message INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        data BLOB NOT NULL
    );
    CREATE TABLE expunged (
        mailbox INTEGER NOT NULL REFERENCES mailboxes (id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        PRIMARY KEY (mailbox, uid)
    );
    """,
    # IMAP \Recent across sessions and processes: the first session to see a message
    # claims it by raising this high-water mark (see Mail.claim_recent).
    """
    ALTER TABLE mailboxes ADD COLUMN recent_uid INTEGER NOT NULL DEFAULT 0;
    """,
    # The zone an IMAP APPEND gave INTERNALDATE in (minutes east of UTC): FETCH gives the
    # date back as it was given, and BEFORE/ON/SINCE compare days in that zone.
    """
    ALTER TABLE messages ADD COLUMN zone INTEGER NOT NULL DEFAULT 0;
    """,
    # IMAP DELETE of a mailbox with inferiors (RFC 3501 6.3.4) keeps its name as a
    # placeholder without messages: LIST shows it \Noselect, nothing can be stored in it.
    """
    ALTER TABLE mailboxes ADD COLUMN noselect INTEGER NOT NULL DEFAULT 0;
    """,
    # CRLF line ends for what older versions stored as given (what crlf() does, in SQL;
    # CAST keeps the bytes a BLOB), and sizes to match.
    """
    UPDATE bodies SET data = CAST(replace(replace(replace(data, x'0d0a', x'0a'), x'0d', x'0a'),
                                          x'0a', x'0d0a') AS BLOB);
    UPDATE messages SET size = (SELECT length(data) FROM bodies WHERE message = messages.id)
        WHERE size != (SELECT length(data) FROM bodies WHERE message = messages.id);
    """,
    # vanished() after every change an IMAP session is told of: without this it read
    # every tombstone of the mailbox (thousands after a while of imaptest's stress mode).
    """
    CREATE INDEX expunged_modseq ON expunged (mailbox, modseq);
    """,
]

DELIMITER = "/"
INBOX = "INBOX"
# Every user gets these (RFC 6154 SPECIAL-USE); clients find them by the attribute.
SPECIAL = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk",
           "Archive": "\\Archive"}
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                       "\\Draft")}


# What append_many() takes: (user, mailbox, data), or with the flags, internal date and
# its zone (minutes east of UTC) as append() takes them.
AppendItem = tuple[str, str, bytes] | tuple[str, str, bytes, Iterable[str], float | None, int]


class MailError(StoreError):
    pass


class NoMailbox(MailError):
    pass


class MailboxExists(MailError):
    pass


class HasChildren(MailError):
    pass


@dataclass(frozen=True)
class Mailbox:
    id: int
    user: str
    name: str
    uidvalidity: int
    uidnext: int
    modseq: int
    special_use: str
    noselect: bool = False  # a name kept only for its inferiors: no messages, no SELECT


@dataclass(frozen=True)
class Message:
    uid: int
    size: int
    flags: frozenset[str]
    internaldate: float
    modseq: int
    zone: int = 0  # minutes east of UTC that internaldate was given in


@dataclass(frozen=True)
class Status:
    messages: int
    unseen: int
    uidnext: int
    uidvalidity: int
    modseq: int
    size: int


def crlf(data: bytes) -> bytes:
    """`data` with CRLF line ends: every bare LF or bare CR becomes CRLF. The counts
    first, so a message that is CRLF already (nearly all) costs three passes in C."""
    if data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def canonical_flags(flags: Iterable[str]) -> frozenset[str]:
    """System flags in their RFC 3501 spelling; keywords as given (one spelling per flag)."""
    out: dict[str, str] = {}
    for flag in flags:
        out.setdefault(flag.lower(), SYSTEM_FLAGS.get(flag.lower(), flag))
    out.pop("\\recent", None)  # a session property, never stored
    return frozenset(out.values())


def _merge_flags(old: frozenset[str], wanted: frozenset[str], mode: str) -> frozenset[str]:
    """Flags after a STORE; flags are case-insensitive (RFC 3501 2.3.2), and a flag a
    message has keeps its spelling."""
    have = {f.lower(): f for f in old}
    asked = {f.lower(): f for f in wanted}
    if mode == "set":
        return frozenset(asked.values())
    if mode == "add":
        return frozenset({**asked, **have}.values())
    return frozenset(f for key, f in have.items() if key not in asked)


def _flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def _flags(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _name(name: str) -> str:
    return INBOX if name.upper() == INBOX else name


_MAILBOX_COLUMNS = "id, user, name, uidvalidity, uidnext, modseq, special_use, noselect"
_MESSAGE_COLUMNS = "uid, size, flags, internaldate, modseq, zone"
_IN_CHUNK = 500  # UIDs per "uid IN (...)": well under SQLite's limit of bound parameters


def _mailbox(row: Sequence[Any]) -> Mailbox:
    return Mailbox(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))


def _message(row: Sequence[Any]) -> Message:
    return Message(row[0], row[1], _flags(row[2]), row[3], row[4], row[5])


class Mail:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- mailboxes ---------------------------------------------------------------------

    def create_defaults(self, tx: Tx, user: str) -> None:
        """The mailboxes every user has: INBOX and the special-use ones."""
        for name, use in [(INBOX, ""), *SPECIAL.items()]:
            self._create(tx, user, name, use)
            tx.execute("INSERT OR IGNORE INTO subscriptions VALUES (?, ?)", (user, name))

    def _create(self, tx: Tx, user: str, name: str, special_use: str = "",
                noselect: bool = False) -> int:
        # UIDVALIDITY: seconds since the epoch, kept strictly ascending across the store.
        row = tx.execute("SELECT value FROM meta WHERE key = 'uidvalidity'").fetchone()
        uidvalidity = max(int(time.time()), int(row[0]) + 1 if row else 0)
        tx.execute("INSERT OR REPLACE INTO meta VALUES ('uidvalidity', ?)", (str(uidvalidity),))
        cursor = tx.execute(
            "INSERT INTO mailboxes (user, name, uidvalidity, special_use, noselect) "
            "VALUES (?, ?, ?, ?, ?)",
            (user, name, uidvalidity, special_use, int(noselect)),
        )
        tx.changed(f"mailboxes:{user}")
        return cursor.lastrowid  # type: ignore[return-value]

    def mailboxes(self, user: str) -> list[Mailbox]:
        rows = self.db.query(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user = ? ORDER BY name", (user,)
        )
        return [_mailbox(row) for row in rows]

    def mailbox(self, user: str, name: str) -> Mailbox | None:
        row = self.db.one(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE user = ? AND name = ?",
            (user, _name(name)),
        )
        return _mailbox(row) if row else None

    def mailbox_by_id(self, mailbox_id: int) -> Mailbox | None:
        row = self.db.one(f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = ?", (mailbox_id,))
        return _mailbox(row) if row else None

    def create_mailbox(self, user: str, name: str, special_use: str = "") -> Mailbox:
        name = _name(name)
        with self.db.write() as tx:
            row = tx.execute("SELECT id, noselect FROM mailboxes WHERE user = ? AND name = ?",
                             (user, name)).fetchone()
            if row and not row[1]:
                raise MailboxExists(f"mailbox {name!r} exists")
            if row:  # a \Noselect placeholder becomes a mailbox again, made anew
                tx.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
                tx.changed(f"mailbox:{row[0]}")
            mailbox_id = self._create(tx, user, name, special_use)
        return self.mailbox_by_id(mailbox_id)  # type: ignore[return-value]

    def delete_mailbox(self, user: str, name: str) -> None:
        """Delete a mailbox and its messages, as RFC 3501 6.3.4 says: one with inferiors
        keeps its name as a \\Noselect placeholder (made anew, so no message, tombstone or
        UIDVALIDITY survives), and a placeholder itself goes only once it has none. A
        placeholder left without inferiors goes too."""
        name = _name(name)
        if name == INBOX:
            raise MailError("INBOX cannot be deleted")
        with self.db.write() as tx:
            row = tx.execute("SELECT id, noselect FROM mailboxes WHERE user = ? AND name = ?",
                             (user, name)).fetchone()
            if not row:
                raise NoMailbox(f"no mailbox {name!r}")
            children = self._has_children(tx, user, name)
            if children and row[1]:
                raise HasChildren(f"mailbox {name!r} has inferiors and no messages")
            tx.execute("DELETE FROM mailboxes WHERE id = ?", (row[0],))
            tx.changed(f"mailboxes:{user}", f"mailbox:{row[0]}")
            if children:
                self._create(tx, user, name, noselect=True)
            else:
                self._prune(tx, user, name)

    def _has_children(self, tx: Tx, user: str, name: str) -> bool:
        prefix = name + DELIMITER
        return tx.execute("SELECT 1 FROM mailboxes WHERE user = ? AND substr(name, 1, ?) = ?",
                          (user, len(prefix), prefix)).fetchone() is not None

    def _prune(self, tx: Tx, user: str, name: str) -> None:
        """Remove the \\Noselect placeholders above `name` that have no inferiors left
        (they exist only for their inferiors, as Dovecot does)."""
        parts = name.split(DELIMITER)
        for i in range(len(parts) - 1, 0, -1):
            parent = DELIMITER.join(parts[:i])
            if self._has_children(tx, user, parent):
                return
            # A level with no row at all is passed over: a placeholder may sit higher up.
            row = tx.execute("DELETE FROM mailboxes WHERE user = ? AND name = ? AND noselect "
                             "RETURNING id", (user, parent)).fetchone()
            if row is not None:
                tx.changed(f"mailbox:{row[0]}")

    def rename_mailbox(self, user: str, old: str, new: str) -> None:
        """Rename a mailbox and everything below it, keeping their UIDVALIDITY and messages;
        subscriptions to them follow (a client keeps seeing what it subscribed to)."""
        old, new = _name(old), _name(new)
        if INBOX in (old, new):
            raise MailError("INBOX cannot be renamed here (IMAP moves its messages instead)")
        prefix = old + DELIMITER
        with self.db.write() as tx:
            rows = tx.execute(
                "SELECT id, name FROM mailboxes WHERE user = ? AND (name = ? OR substr(name, 1, ?) = ?)",
                (user, old, len(prefix), prefix),
            ).fetchall()
            if not any(name == old for _, name in rows):
                raise NoMailbox(f"no mailbox {old!r}")
            if tx.execute("SELECT 1 FROM mailboxes WHERE user = ? AND name = ?",
                          (user, new)).fetchone():
                raise MailboxExists(f"mailbox {new!r} exists")
            for mailbox_id, name in rows:
                tx.execute("UPDATE mailboxes SET name = ? WHERE id = ?",
                           (new + name[len(old):], mailbox_id))
                tx.changed(f"mailbox:{mailbox_id}")
                # OR REPLACE: the new name may already be subscribed (RFC 3501 allows
                # subscribing to names that do not exist).
                tx.execute("UPDATE OR REPLACE subscriptions SET name = ? "
                           "WHERE user = ? AND name = ?", (new + name[len(old):], user, name))
            self._prune(tx, user, old)
            tx.changed(f"mailboxes:{user}")

    def subscriptions(self, user: str) -> list[str]:
        return [r[0] for r in self.db.query(
            "SELECT name FROM subscriptions WHERE user = ? ORDER BY name", (user,))]

    def subscribe(self, user: str, name: str, on: bool = True) -> None:
        with self.db.write() as tx:
            if on:
                tx.execute("INSERT OR IGNORE INTO subscriptions VALUES (?, ?)", (user, _name(name)))
            else:
                tx.execute("DELETE FROM subscriptions WHERE user = ? AND name = ?",
                           (user, _name(name)))
            tx.changed(f"mailboxes:{user}")

    def status(self, mailbox_id: int) -> Status:
        row = self.db.one(
            "SELECT count(m.id), count(m.id) - coalesce(sum(instr(' ' || m.flags || ' ', "
            "' \\Seen ') > 0), 0), b.uidnext, b.uidvalidity, b.modseq, coalesce(sum(m.size), 0) "
            "FROM mailboxes b LEFT JOIN messages m ON m.mailbox = b.id WHERE b.id = ?",
            (mailbox_id,),
        )
        if row is None or row[2] is None:
            raise NoMailbox(f"no mailbox #{mailbox_id}")
        return Status(*row)

    # --- messages ----------------------------------------------------------------------

    def _bump(self, tx: Tx, mailbox_id: int) -> int:
        """The next mod-sequence of the mailbox (the transaction holds the write lock)."""
        row = tx.execute("UPDATE mailboxes SET modseq = modseq + 1 WHERE id = ? RETURNING modseq",
                         (mailbox_id,)).fetchone()
        if row is None:
            raise NoMailbox(f"no mailbox #{mailbox_id}")
        tx.changed(f"mailbox:{mailbox_id}")
        return row[0]

    def append(self, user: str, mailbox: str, data: bytes, flags: Iterable[str] = (),
               internaldate: float | None = None, zone: int = 0) -> tuple[int, int]:
        """Store a message (its line ends made CRLF); returns (mailbox id, uid). On disk
        when this returns."""
        data = crlf(data)
        with self.db.write() as tx:
            row = tx.execute("SELECT id FROM mailboxes WHERE user = ? AND name = ? "
                             "AND NOT noselect", (user, _name(mailbox))).fetchone()
            if row is None:
                raise NoMailbox(f"no mailbox {mailbox!r} for {user!r}")
            return row[0], self._insert(tx, row[0], data, flags, internaldate, zone)

    def _insert(self, tx: Tx, mailbox_id: int, data: bytes, flags: Iterable[str],
                internaldate: float | None, zone: int = 0) -> int:
        modseq = self._bump(tx, mailbox_id)
        uid = tx.execute(
            "UPDATE mailboxes SET uidnext = uidnext + 1 WHERE id = ? RETURNING uidnext - 1",
            (mailbox_id,),
        ).fetchone()[0]
        cursor = tx.execute(
            "INSERT INTO messages (mailbox, uid, size, flags, internaldate, modseq, zone) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mailbox_id, uid, len(data), _flags_text(canonical_flags(flags)),
             time.time() if internaldate is None else internaldate, modseq, zone),
        )
        tx.execute("INSERT INTO bodies VALUES (?, ?)", (cursor.lastrowid, data))
        return uid

    def messages(self, mailbox_id: int, changed_since: int = 0) -> list[Message]:
        """The mailbox's messages in UID order (only those changed after a mod-sequence)."""
        rows = self.db.query(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox = ? AND modseq > ? "
            "ORDER BY uid",
            (mailbox_id, changed_since),
        )
        return [_message(row) for row in rows]

    def data(self, mailbox_id: int, uid: int) -> bytes | None:
        row = self.db.one(
            "SELECT b.data FROM messages m JOIN bodies b ON b.message = m.id "
            "WHERE m.mailbox = ? AND m.uid = ?",
            (mailbox_id, uid),
        )
        return row[0] if row else None

    def set_flags(self, mailbox_id: int, uids: Iterable[int], flags: Iterable[str],
                  mode: str = "set", unchanged_since: int | None = None
                  ) -> tuple[list[Message], list[int]]:
        """Replace ("set"), add or remove flags. Returns the messages whose flags changed
        and the UIDs left alone because they changed after `unchanged_since` (CONDSTORE).
        One transaction, not fsync'd (`Database.write(durable=False)`): a power loss may
        take back the last flag changes, never a message."""
        if mode not in ("set", "add", "remove"):
            raise ValueError(mode)
        wanted = canonical_flags(flags)
        wanted_uids = sorted(set(uids))
        changed: list[Message] = []
        failed: list[int] = []
        with self.db.write(durable=False) as tx:
            modseq = 0
            rows = []
            for start in range(0, len(wanted_uids), _IN_CHUNK):
                chunk = wanted_uids[start:start + _IN_CHUNK]
                rows += tx.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE mailbox = ? AND uid IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY uid", (mailbox_id, *chunk),
                ).fetchall()
            for row in rows:
                message = _message(row)
                if unchanged_since is not None and message.modseq > unchanged_since:
                    failed.append(message.uid)
                    continue
                new = _merge_flags(message.flags, wanted, mode)
                if new == message.flags:
                    continue
                modseq = modseq or self._bump(tx, mailbox_id)
                changed.append(replace(message, flags=new, modseq=modseq))
            tx.executemany(
                "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox = ? AND uid = ?",
                [(_flags_text(m.flags), modseq, mailbox_id, m.uid) for m in changed])
        return changed, failed

    def expunge(self, mailbox_id: int, uids: Iterable[int]) -> list[int]:
        """Remove messages for good; returns the UIDs that were there."""
        gone = []
        with self.db.write() as tx:
            modseq = None
            for uid in sorted(set(uids)):
                if tx.execute("DELETE FROM messages WHERE mailbox = ? AND uid = ?",
                              (mailbox_id, uid)).rowcount:
                    modseq = modseq or self._bump(tx, mailbox_id)
                    tx.execute("INSERT OR REPLACE INTO expunged VALUES (?, ?, ?)",
                               (mailbox_id, uid, modseq))
                    gone.append(uid)
        return gone

    def copy(self, source_id: int, uids: Iterable[int], target_id: int, move: bool = False
             ) -> list[tuple[int, int]]:
        """Copy (or move) messages with their flags and dates; returns (old uid, new uid)
        pairs in ascending order, as UIDPLUS's COPYUID reports them."""
        pairs = []
        with self.db.write() as tx:
            for uid in sorted(set(uids)):
                row = tx.execute(
                    "SELECT m.flags, m.internaldate, b.data, m.zone FROM messages m "
                    "JOIN bodies b ON b.message = m.id WHERE m.mailbox = ? AND m.uid = ?",
                    (source_id, uid),
                ).fetchone()
                if row is None:
                    continue
                pairs.append((uid, self._insert(tx, target_id, row[2], _flags(row[0]), row[1],
                                                row[3])))
            if move and pairs:
                modseq = self._bump(tx, source_id)
                for uid, _ in pairs:
                    tx.execute("DELETE FROM messages WHERE mailbox = ? AND uid = ?",
                               (source_id, uid))
                    tx.execute("INSERT OR REPLACE INTO expunged VALUES (?, ?, ?)",
                               (source_id, uid, modseq))
        return pairs

    def recent_mark(self, mailbox_id: int) -> int:
        """The highest UID some IMAP session has already seen as \\Recent."""
        row = self.db.one("SELECT recent_uid FROM mailboxes WHERE id = ?", (mailbox_id,))
        return row[0] if row else 0

    def claim_recent(self, mailbox_id: int, up_to_uid: int) -> int:
        """Claim \\Recent for UIDs up to `up_to_uid` for the calling session (RFC 3501: a
        message is recent in one session only). Returns the previous mark: UIDs above it
        (and up to `up_to_uid`) are recent for the caller, none for anyone else."""
        mark = self.recent_mark(mailbox_id)
        if mark >= up_to_uid:
            return mark
        with self.db.write(durable=False) as tx:  # a hint: losing it costs nothing
            row = tx.execute("SELECT recent_uid FROM mailboxes WHERE id = ?",
                             (mailbox_id,)).fetchone()
            if row is None or row[0] >= up_to_uid:
                return up_to_uid if row is None else row[0]
            tx.execute("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (up_to_uid, mailbox_id))
            return row[0]

    def vanished(self, mailbox_id: int, since_modseq: int) -> list[int]:
        """UIDs expunged after a mod-sequence (QRESYNC's VANISHED)."""
        return [r[0] for r in self.db.query(
            "SELECT uid FROM expunged WHERE mailbox = ? AND modseq > ? ORDER BY uid",
            (mailbox_id, since_modseq))]

    def append_many(self, items: Sequence[AppendItem]) -> list[tuple[int, int] | None]:
        """Store several messages in one transaction: one fsync for all (SMTP's group
        commit), and all or none (IMAP's MULTIAPPEND, RFC 3502: a full disk halfway
        stores nothing). Each item is (user, mailbox, data), or (user, mailbox, data,
        flags, internal date, zone) as append() takes them; line ends made CRLF as in
        append(). Returns (mailbox id, uid) per item, None for an item whose mailbox is
        missing. On disk when this returns."""
        results: list[tuple[int, int] | None] = []
        datas = [crlf(item[2]) for item in items]  # before the write lock is taken
        with self.db.write() as tx:
            for item, data in zip(items, datas, strict=True):
                flags, internaldate, zone = (item[3], item[4], item[5]) if len(item) == 6 \
                    else ((), None, 0)
                row = tx.execute("SELECT id FROM mailboxes WHERE user = ? AND name = ? "
                                 "AND NOT noselect", (item[0], _name(item[1]))).fetchone()
                results.append(None if row is None else
                               (row[0], self._insert(tx, row[0], data, flags, internaldate,
                                                     zone)))
        return results
