"""The journal: every session, command, reply and decoded packet, for every service.

Services call it through small Session objects:

    session = lab.journal.open("smtp", peer="10.0.0.5:40112")
    session.command("EHLO pc1")  /  session.reply("250-mail.lab.test")
    session.auth("alice", ok=True, mechanism="PLAIN", secret="alice")
    session.event("transfer", "RETR a.txt 5120 bytes binary")
    session.close()

Events are buffered and flushed twice a second (and at stop) into DATA/journal/DATE.jsonl,
one JSON object per line, and into a bounded window in the store that feeds the dashboard
and the API. Services may call from any thread (impacket's SMB server runs in threads).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import threading
import time
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

    def _add(self, kind: str, text: str) -> None:
        self.journal.add(self.service, self.id, self.peer, self.user, kind, text)

    def command(self, text: str) -> None:
        self._add("command", text)

    def reply(self, text: str) -> None:
        self._add("reply", text)

    def packet(self, summary: str) -> None:
        self._add("packet", summary)

    def event(self, what: str, text: str = "") -> None:
        self._add("event", f"{what} {text}".strip())

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


class Journal:
    def __init__(self, directory: Path, store: Store | None = None, show_secrets: bool = False,
                 recent: int = 2000) -> None:
        self.directory = directory
        self.store = store
        self.show_secrets = show_secrets
        self.recent = recent
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(2)  # tells sessions of different processes apart

    def mask(self, value: str) -> str:
        return value if self.show_secrets else MASK

    def open(self, service: str, peer: str, detail: str = "") -> Session:
        session = Session(self, service, peer, f"{self._prefix}{next(self._ids):05x}")
        self.add(service, session.id, peer, "", "open", detail)
        return session

    def add(self, service: str, session: str, peer: str, user: str, kind: str, text: str) -> None:
        event = {"ts": time.time(), "service": service, "session": session, "peer": peer,
                 "user": user, "kind": kind, "text": text}
        with self._lock:
            self._buffer.append(event)
            too_many = len(self._buffer) >= 5000
        if too_many:  # a flood between two flushes: write now rather than grow without bound
            self.flush()

    def flush(self) -> None:
        with self._lock:
            events, self._buffer = self._buffer, []
        if not events:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        by_day: dict[str, list[str]] = {}
        for event in events:
            day = time.strftime("%Y-%m-%d", time.gmtime(event["ts"]))
            by_day.setdefault(day, []).append(json.dumps(event, ensure_ascii=False) + "\n")
        for day, lines in by_day.items():
            # One write per batch with O_APPEND: processes sharing the file never interleave lines.
            fd = os.open(self.directory / f"{day}.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, "".join(lines).encode())
            finally:
                os.close(fd)
        if self.store is not None and self.recent:
            with self.store.db.write() as tx:
                tx.executemany(
                    "INSERT INTO journal (ts, service, session, peer, user, kind, text) "
                    "VALUES (:ts, :service, :session, :peer, :user, :kind, :text)", events)
                tx.execute("DELETE FROM journal WHERE id <= (SELECT max(id) FROM journal) - ?",
                           (self.recent,))


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
    return [dict(zip(keys, row)) for row in reversed(rows)]


def format_event(event: dict[str, Any]) -> str:
    """One journal event as `protolab journal` prints it."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event["ts"]))
    millis = int(event["ts"] * 1000) % 1000
    arrow = {"command": "C:", "reply": "S:", "packet": "P:"}.get(event["kind"], event["kind"] + ":")
    return (f"{stamp}.{millis:03d} {event['service']:<5} {event['session']} "
            f"{event['peer']:<21} {event['user'] or '-':<8} {arrow} {event['text']}").rstrip()
