"""The journal: every session, command, reply and decoded packet, for every service.

Services call it through small Session objects:

    session = lab.journal.open("smtp", peer="10.0.0.5:40112")
    session.command("EHLO pc1")  /  session.reply("250-mail.lab.test")
    session.auth("alice", ok=True, mechanism="PLAIN", secret="alice")
    session.event("transfer", "RETR a.txt 5120 bytes binary")
    session.event("tls", "handshake TLSv1.3 ...", {"sni": "www.lab.test", "keylog": True})
    session.close()

An event may carry structured fields (`fields`, a JSON object beside its text) for what a
check reads (the classroom's exercises): a fact is a field, not words to parse. They are in
the day files; the store's window keeps the text only.

Events are buffered and flushed twice a second (and at stop) into DATA/journal/DATE.jsonl,
one JSON object per line, and into a bounded window in the store that feeds the dashboard
and the API. Services may call from any thread (impacket's SMB server runs in threads).

The day files are bounded over a long class: the first flush of a process and the first of
each new (UTC) day remove the files beyond `keep_days` and, oldest first, past days beyond
`max_bytes` in all (today's file is never removed: it is the class going on), and say so
in the journal.
"""

from __future__ import annotations

import calendar
import errno
import ipaddress
import itertools
import json
import json.encoder
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Store

MASK = "••••"


@dataclass
class Session:
    journal: Journal
    service: str
    peer: str
    id: str
    user: str = ""
    closed: bool = field(default=False)

    def _add(self, kind: str, text: str, fields: dict[str, Any] | None = None) -> None:
        self.journal.add(self.service, self.id, self.peer, self.user, kind, text, fields)

    def command(self, text: str) -> None:
        self._add("command", text)

    def reply(self, text: str) -> None:
        self._add("reply", text)

    def packet(self, summary: str) -> None:
        self._add("packet", summary)

    def event(self, what: str, text: str = "", fields: dict[str, Any] | None = None) -> None:
        self._add("event", f"{what} {text}".strip(), fields)

    def secret(self, value: str) -> str:
        """`value` as the journal should show it (masked unless show_secrets)."""
        return self.journal.mask(value)

    def auth(self, user: str, ok: bool, mechanism: str = "", secret: str | None = None) -> None:
        if ok:
            self.user = user
        parts = [mechanism, user, "ok" if ok else "failed"]
        if secret is not None:
            parts.append(f"secret={self.journal.mask(secret)}")
        self._add("auth", " ".join(p for p in parts if p))

    def close(self, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self._add("close", reason)


# Events kept in memory while the journal cannot be written (a full disk): about 200
# bytes each, so at most ~20 MB; beyond it the oldest go, counted, and the count is
# journaled once writing works again.
MAX_BUFFERED = 100_000
FLUSH_AT = 5000  # a flood between two timed flushes is written at once


class Journal:
    def __init__(self, directory: Path, store: Store | None = None, show_secrets: bool = False,
                 recent: int = 2000, keep_days: int = 0, max_bytes: int = 0) -> None:
        self.directory = directory
        self.store = store
        self.show_secrets = show_secrets
        self.recent = recent
        self.keep_days, self.max_bytes = keep_days, max_bytes
        self._pruned_on = ""  # the day of the last pruning (none yet: the first flush prunes)
        self._buffer: list[dict[str, Any]] = []  # not yet encoded
        self._pending: list[tuple[str, bytes, list[dict[str, Any]]]] = []  # encoded, unwritten
        self._waiting = 0  # events in _buffer and _pending
        self._window: list[dict[str, Any]] = []  # in the file, not yet in the store
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one flush at a time: order is kept on retry
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(2)  # tells sessions of different processes apart
        self.dropped = 0  # events lost to MAX_BUFFERED, not yet reported in the journal
        self.dropped_total = 0
        self.failing = False  # the last flush failed: no flush from add() until one works
        self._lines = LineEncoder()
        self._days = DayFiles()

    @property
    def waiting(self) -> int:
        """Events not yet in the journal file."""
        return self._waiting

    def mask(self, value: str) -> str:
        return value if self.show_secrets else MASK

    def open(self, service: str, peer: str, detail: str = "") -> Session:
        session = Session(self, service, peer, f"{self._prefix}{next(self._ids):05x}")
        self.add(service, session.id, peer, "", "open", detail)
        return session

    def add(self, service: str, session: str, peer: str, user: str, kind: str, text: str,
            fields: dict[str, Any] | None = None) -> None:
        """Never raises: a service's session must not fail because the journal does."""
        if peer.count(":") > 1 and peer[0] != "[":  # an IPv6 HOST:PORT, as URLs write it
            peer = _bracketed(peer)
        event = {"ts": time.time(), "service": service, "session": session, "peer": peer,
                 "user": user, "kind": kind, "text": text}
        if fields:
            event["fields"] = fields
        with self._lock:
            self._buffer.append(event)
            self._waiting += 1
            if self._waiting > MAX_BUFFERED:
                self._drop_oldest()
            flood = len(self._buffer) >= FLUSH_AT and not self.failing
        if flood:
            self.flush_quietly(window=False)

    def _drop_oldest(self) -> None:
        """Called with the lock held, over the bound: the oldest unwritten batch goes."""
        if self._pending:
            _, _, events = self._pending.pop(0)
            lost = len(events)
        else:
            lost = len(self._buffer) - MAX_BUFFERED
            del self._buffer[:lost]
        self._waiting -= lost
        self.dropped += lost
        self.dropped_total += lost

    def flush_quietly(self, window: bool = True) -> bool:
        """flush(), for callers that cannot report its failure (the timed flush can)."""
        try:
            self.flush(window)
        except Exception:  # kept buffered; the timed flush says what fails
            return False
        return True

    def flush(self, window: bool = True) -> None:
        """Write what is buffered to the day's file, then to the store's window. On an
        error (ENOSPC, EMFILE, SQLITE_FULL) nothing is lost: the events wait, already
        encoded so a retry costs one write (bounded by MAX_BUFFERED), and it is raised.
        window=False (a flood's flush between two timed ones) leaves the store's window
        to the next flush: its newest `recent` events are all it keeps, and a flood's
        flush would rewrite them several times a second."""
        with self._flushing:
            self._prune_daily()
            try:
                self._encode()
                self._write_pending()
                if window:
                    self._flush_window()
            except Exception:
                self.failing = True
                raise
            self.failing = False

    def _prune_daily(self) -> None:
        """At the first flush and the first of each new day: the old day files go. A file
        that cannot be removed is said, not raised: the events must still be written."""
        today = _day(time.time())
        if today == self._pruned_on or not (self.keep_days or self.max_bytes):
            return
        self._pruned_on = today
        try:
            removed = prune(self.directory, today, self.keep_days, self.max_bytes)
        except OSError as error:
            self._note(f"journal: old day files not removed: {error}")
            return
        if removed:
            self._note(f"journal: removed {len(removed)} old day files ({removed[0]} to "
                       f"{removed[-1]}; keep_days {self.keep_days}, max_mb "
                       f"{self.max_bytes // 1024 // 1024})")

    def _note(self, text: str) -> None:
        """The journal's own event, from inside flush() (add() could flush again)."""
        with self._lock:
            self._buffer.append({"ts": time.time(), "service": "lab", "session": "-",
                                 "peer": "-", "user": "", "kind": "event", "text": text})
            self._waiting += 1

    def _encode(self) -> None:
        """Move the buffer into encoded batches, one per day file, in order."""
        with self._lock:
            if self.dropped:
                self._buffer.insert(0, self._dropped_event())
                self._waiting += 1
                self.dropped = 0
            events, self._buffer = self._buffer, []
        by_day: dict[str, tuple[list[str], list[dict[str, Any]]]] = {}
        line, days = self._lines.line, self._days
        for event in events:
            lines, day_events = by_day.setdefault(days.day(event["ts"]), ([], []))
            lines.append(line(event))
            day_events.append(event)
        # A lone surrogate (a name decoded with surrogateescape) cannot be UTF-8: it is
        # written as JSON's own escape for it, which reads back as the same string.
        batches = [(day, "".join(lines).encode("utf-8", "backslashreplace"), day_events)
                   for day, (lines, day_events) in by_day.items()]
        with self._lock:
            self._pending.extend(batches)

    def _dropped_event(self) -> dict[str, Any]:
        return {"ts": self._buffer[0]["ts"] if self._buffer else time.time(),
                "service": "lab", "session": "-", "peer": "-", "user": "", "kind": "event",
                "text": f"journal: {self.dropped} events dropped while it could not be "
                        f"written (more than {MAX_BUFFERED} waiting)"}

    def _write_pending(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                day, data, events = self._pending[0]
            self.directory.mkdir(parents=True, exist_ok=True)
            _append(self.directory / f"{day}.jsonl", data)
            with self._lock:
                if self._pending and self._pending[0][2] is events:  # not dropped meanwhile
                    self._pending.pop(0)
                    self._waiting -= len(events)
            if self.store is not None and self.recent:
                self._window = (self._window + events)[-self.recent:]

    def _flush_window(self) -> None:
        if not self._window or self.store is None:
            return
        events = self._window[-self.recent:]  # older ones would be deleted at once anyway
        # not fsync'd, as the day's file is not: a flush on the reactor must not wait for
        # the disk (it held IMAP's reactor 20-60 ms a second under load)
        with self.store.db.write(durable=False) as tx:
            tx.executemany(
                "INSERT INTO journal (ts, service, session, peer, user, kind, text) "
                "VALUES (:ts, :service, :session, :peer, :user, :kind, :text)", events)
            tx.execute("DELETE FROM journal WHERE id <= (SELECT max(id) FROM journal) - ?",
                       (self.recent,))
        self._window = []


def _day(ts: float) -> str:
    """The day file an event at `ts` goes to (UTC): DATA/journal/DAY.jsonl."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class DayFiles:
    """_day() for a flush's events, which are nearly all of one day: the day's bounds are
    kept, so an event costs two comparisons instead of a strftime."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.name = ""

    def day(self, ts: float) -> str:
        if not self.start <= ts < self.end:
            self.name = _day(ts)
            self.start = float(calendar.timegm(time.strptime(self.name, "%Y-%m-%d")))
            self.end = self.start + 86400  # UTC days have no leap seconds in Unix time
        return self.name


_string = json.encoder.encode_basestring  # ensure_ascii=False's string encoder (C)
KEYS = ("ts", "service", "session", "peer", "user", "kind", "text")
MAX_MIDDLES = 4096  # a line's middles (its session's fields and kind) kept encoded


class LineEncoder:
    """json.dumps(event, ensure_ascii=False) + "\n", the same characters (the tests check
    it against json.dumps), at a fraction of the cost: JSON encoding was most of a
    flush's time, and a flush runs on the reactor. An event's session fields and kind are
    the same on many lines, so their part of the line is made once."""

    def __init__(self) -> None:
        self.middles: dict[tuple[str, str, str, str, str], str] = {}

    def line(self, event: dict[str, Any]) -> str:
        fields = event.get("fields")
        ts = event["ts"]
        if len(event) != len(KEYS) + (fields is not None) or type(ts) is not float:
            return json.dumps(event, ensure_ascii=False) + "\n"  # not one of add()'s
        key = (event["service"], event["session"], event["peer"], event["user"],
               event["kind"])
        try:
            middle = self.middles.get(key)
            if middle is None:
                middle = "".join(f", {_string(name)}: {_string(value)}"
                                 for name, value in zip(KEYS[1:6], key, strict=True))
                if len(self.middles) >= MAX_MIDDLES:
                    self.middles.clear()
                self.middles[key] = middle
            text = _string(event["text"])
        except TypeError:  # a field that is not a string
            return json.dumps(event, ensure_ascii=False) + "\n"
        if fields is None:
            return f'{{"ts": {ts!r}{middle}, "text": {text}}}\n'
        return (f'{{"ts": {ts!r}{middle}, "text": {text}, '
                f'"fields": {json.dumps(fields, ensure_ascii=False)}}}\n')


def prune(directory: Path, today: str, keep_days: int, max_bytes: int) -> list[str]:
    """Remove the day files older than `keep_days` days (today being one; 0: none is too
    old), then the oldest past days while all the files hold more than `max_bytes` (0: no
    cap). Today's file and files not named DAY.jsonl stay. Returns the days removed,
    oldest first. Another process sharing the directory may remove a file first: fine."""
    import datetime

    first = datetime.date.fromisoformat(today) - datetime.timedelta(days=keep_days - 1)
    days: list[tuple[str, Path, int]] = []
    for path in sorted(directory.glob("*.jsonl")):
        try:
            datetime.date.fromisoformat(path.stem)
            size = path.stat().st_size
        except (ValueError, FileNotFoundError):
            continue
        days.append((path.stem, path, size))
    total = sum(size for _, _, size in days)
    removed = []
    for day, path, size in days:
        if day >= today:
            break
        too_old = bool(keep_days) and day < first.isoformat()
        if not too_old and not (max_bytes and total > max_bytes):
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(day)
    return removed


def _append(path: Path, data: bytes) -> None:
    """One write per batch with O_APPEND: processes sharing the file never interleave
    lines. A short write (the disk filled mid-way) is cut back, so a retry never leaves
    half a line in the file (unless another process appended meanwhile: its line stays)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        start = os.fstat(fd).st_size
        done = 0
        try:
            done = os.write(fd, data)
            if done != len(data):
                raise OSError(errno.ENOSPC, "short write to the journal", str(path))
        except OSError:
            if done and os.fstat(fd).st_size == start + done:
                os.ftruncate(fd, start)
            raise
    finally:
        os.close(fd)


def recent(store: Store, service: str | None = None, since: float = 0.0, limit: int = 500
           ) -> list[dict[str, Any]]:
    """The newest events of the store's window, oldest first (for the API and dashboard)."""
    sql = "SELECT ts, service, session, peer, user, kind, text FROM journal WHERE ts > ?"
    params: list[Any] = [since]
    if service:
        sql += " AND service = ?"
        params.append(service)
    rows = store.db.query(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
    keys = ("ts", "service", "session", "peer", "user", "kind", "text")
    return [dict(zip(keys, row, strict=True)) for row in reversed(rows)]


def read(directory: Path, days: int | None = None) -> Iterator[dict[str, Any]]:
    """Every event of the journal files (DATA/journal/DATE.jsonl), oldest first; the last
    `days` files only when given. A line still being written is skipped."""
    files = sorted(directory.glob("*.jsonl"))
    for path in files[-days:] if days else files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def format_event(event: dict[str, Any]) -> str:
    """One journal event as `protolab journal` prints it."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    millis = int(event["ts"] * 1000) % 1000
    arrow = {"command": "C:", "reply": "S:", "packet": "P:"}.get(event["kind"], event["kind"] + ":")
    return (f"{stamp}.{millis:03d} {event['service']:<5} {event['session']} "
            f"{event['peer']:<21} {event['user'] or '-':<8} {arrow} {event['text']}").rstrip()


def _bracketed(peer: str) -> str:
    """[HOST]:PORT for an IPv6 HOST:PORT (protocols write f"{host}:{port}"); else as is."""
    host, _, port = peer.rpartition(":")
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return peer
    return f"[{host}]:{port}" if port.isdigit() else peer
