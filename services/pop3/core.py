"""The POP3 server state machine (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH),
sans-IO, over the INBOX in the shared store.

Concurrent sessions get snapshots rather than RFC 1939's exclusive lock: at login a
session numbers the INBOX's messages as they are then, and keeps that numbering (mail
arriving later waits for the next session). DELE only marks; at QUIT the marked messages
are expunged from the store, which IMAP sessions see as EXPUNGE. A message another session
removed meanwhile answers -ERR. Messages are sent as the store keeps them (CRLF line ends,
so LIST and STAT give the octets RETR sends), with lines starting with "." dot-stuffed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..credentials import Credentials
from ..line.conversation import Conversation, FaultFinder
from ..line.sasl import Exchange, Outcome

if TYPE_CHECKING:
    from ..journal import Session
    from ..store import Store

COMMAND_LIMIT = 255  # RFC 2449 section 4
AUTH_LIMIT = 8192  # SASL responses (RFC 5034 lifts the 255 limit for them)


@dataclass(frozen=True)
class Options:
    hostname: str
    plaintext_auth: bool  # USER/PASS and AUTH PLAIN before TLS
    apop: bool  # APOP and CRAM-MD5 (the store keeps passwords in clear)
    stls: bool  # STLS offered on this port
    idle_timeout: float = 600  # RFC 1939: at least 10 minutes
    max_errors: int = 10


def to_wire(data: bytes) -> bytes:
    """A stored message (CRLF lines) as RETR sends it: dot-stuffed, with the final "."."""
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"  # a last line without its end (an APPEND may store one)
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


def top(data: bytes, lines: int) -> bytes:
    """The header, the blank line and the first `lines` lines of the body (RFC 1939 TOP)."""
    head, blank, body = data.partition(b"\r\n\r\n")
    end = 0
    for _ in range(lines if blank else 0):
        end = body.find(b"\r\n", end)
        if end < 0:
            end = len(body)  # fewer lines than asked: all of them
            break
        end += 2
    return head + blank + body[:end]


@dataclass
class Entry:
    uid: int
    size: int
    deleted: bool = False
    retrieved: bool = False


class POP3Conversation(Conversation):
    timeout_reply = "-ERR Disconnected for inactivity"
    crash_reply = "-ERR [SYS/TEMP] Internal server error, closing the connection"

    def __init__(self, journal: Session, options: Options, store: Store,
                 credentials: Credentials, secure: bool, peer: str = "",
                 faults: FaultFinder | None = None) -> None:
        super().__init__(journal)
        self.peer, self.faults = peer, faults
        self.options = options
        self.store = store
        self.credentials = credentials
        self.secure = secure
        self.idle_timeout = options.idle_timeout
        self.max_errors = options.max_errors
        self.line_limit = COMMAND_LIMIT
        self.banner = f"<{os.getpid()}.{os.urandom(4).hex()}.{int(time.time())}@{options.hostname}>"
        self.pending_user: str | None = None
        self.auth: Exchange | None = None
        self.user: str | None = None
        self.mailbox_id = 0
        self.uidvalidity = 0
        self.entries: list[Entry] = []

    # --- replies -------------------------------------------------------------------------

    def ok(self, text: str = "") -> None:
        self.counted(True)
        self.send(f"+OK {text}".rstrip())

    def err(self, text: str) -> None:
        self.send(f"-ERR {text}")
        if self.counted(False):
            self.send("-ERR Too many errors, closing the connection")
            self.close("too many errors")

    def listing(self, first: str, lines: list[str]) -> None:
        """A multi-line reply; only its first line goes to the journal."""
        self.ok(first)
        for line in lines:
            self.send(line, journal=False)
        self.send(".", journal=False)

    def greet(self) -> None:
        self.send("+OK protolab POP3 server ready" +
                  (f" {self.banner}" if self.options.apop else ""))

    def tls_started(self) -> None:
        super().tls_started()
        self.secure = True
        self.pending_user = None

    def too_long(self) -> None:
        if self.auth is not None:
            self.auth = None
            self.line_limit = COMMAND_LIMIT
        self.err(f"Line too long (limit {self.line_limit} bytes)")

    # --- lines -------------------------------------------------------------------------

    def receive(self, line: bytes) -> None:
        if self.auth is not None:
            self.journal.command(self.journal.secret(line.decode("ascii", "replace")))
            self._auth_step(*self.auth.respond(line.decode("ascii", "replace")))
            return
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.strip().partition(" ")
        verb = verb.upper()
        self.journal.command(self._journaled(verb, arg, text))
        state = "auth" if self.user is None else "trans"
        handler = getattr(self, f"{state}_{verb}", None) if verb.isalpha() else None
        if handler is not None:
            handler(arg.strip())
        elif getattr(self, f"{'trans' if state == 'auth' else 'auth'}_{verb}", None):
            self.err("Command not valid in this state")
        else:
            self.err("Unknown command")

    def _journaled(self, verb: str, arg: str, text: str) -> str:
        words = arg.split()
        if verb == "PASS":
            return f"PASS {self.journal.secret(arg)}"
        if verb in ("APOP", "AUTH") and len(words) > 1:
            return f"{verb} {words[0]} {self.journal.secret(words[1])}"
        return text

    def _plaintext_allowed(self) -> bool:
        return self.secure or self.options.plaintext_auth

    def _mechanisms(self) -> list[str]:
        # CRAM-MD5 sends no password: it needs no TLS, but the password kept in clear.
        plain = ["PLAIN"] if self._plaintext_allowed() else []
        return plain + (["CRAM-MD5"] if self.options.apop else [])

    # --- both states ---------------------------------------------------------------------

    def _capa(self, arg: str) -> None:
        caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.user is None:
            if self._plaintext_allowed():
                caps.append("USER")
            if self._mechanisms():
                caps.append("SASL " + " ".join(self._mechanisms()))
            if self.options.stls and not self.secure:
                caps.append("STLS")
        caps.append("IMPLEMENTATION protolab")
        self.listing("Capability list follows", caps)

    auth_CAPA = trans_CAPA = _capa

    def _quit(self, arg: str) -> None:
        """The UPDATE state: retrieved messages become \\Seen (as Dovecot does, so IMAP
        shows them read), deleted ones are expunged."""
        removed = 0
        if self.user is not None:
            read = [e.uid for e in self.entries if e.retrieved and not e.deleted]
            uids = [e.uid for e in self.entries if e.deleted]
            try:
                if read:
                    self.store.mail.set_flags(self.mailbox_id, read, ["\\Seen"], "add")
                if uids:
                    removed = len(self.store.mail.expunge(self.mailbox_id, uids))
            except Exception as error:
                self.journal.event("error", f"update failed: {error}")
                self.send("-ERR [SYS/TEMP] Some deleted messages were not removed")
                self.close("quit, update failed")
                return
            if uids:
                self.journal.event("expunged", f"{removed} messages: uids "
                                   + ",".join(map(str, uids)))
        self.send(f"+OK protolab POP3 server signing off ({removed} messages deleted)")
        self.close("quit")

    auth_QUIT = trans_QUIT = _quit

    def _noop(self, arg: str) -> None:
        self.ok()

    trans_NOOP = _noop

    # --- authorization state -----------------------------------------------------------

    def auth_STLS(self, arg: str) -> None:
        if not self.options.stls or self.secure:
            self.err("TLS already active" if self.secure else "STLS not offered here")
        else:
            self.ok("Begin TLS negotiation")
            self.want_tls = True

    def auth_USER(self, arg: str) -> None:
        if not self._plaintext_allowed():
            self.err("[AUTH] Plaintext authentication disallowed on non-secure connections "
                     "(STLS first)")
        elif not arg:
            self.err("Syntax: USER name")
        else:
            self.pending_user = arg
            self.ok()

    def auth_PASS(self, arg: str) -> None:
        if self.pending_user is None:
            self.err("No USER given")
            return
        login, self.pending_user = self.pending_user, None
        self._login(Outcome(self.credentials.check(login, arg), login, arg), "USER")

    def auth_APOP(self, arg: str) -> None:
        login, _, digest = arg.rpartition(" ")
        if not self.options.apop:
            self.err("APOP not offered (the lab keeps no plaintext passwords)")
            return
        if not login:
            self.err("Syntax: APOP name digest")
            return
        known = self.credentials.plaintext(login)
        user = None
        if known is not None:
            expected = hashlib.md5((self.banner + known[1]).encode()).hexdigest()
            # Twisted compares bytes to str here, so its APOP never succeeds on Python 3.
            user = known[0] if hmac.compare_digest(expected, digest.lower()) else None
        self._login(Outcome(user, login, digest), "APOP")

    def auth_AUTH(self, arg: str) -> None:
        words = arg.split()
        if not words:
            self.listing("", self._mechanisms())
        elif len(words) > 2:
            self.err("Syntax: AUTH mechanism [initial-response]")
        elif words[0].upper() not in self._mechanisms():
            self.err("Unrecognized authentication type" if self._plaintext_allowed() or
                     words[0].upper() != "PLAIN" else
                     "[AUTH] Plaintext authentication disallowed on non-secure connections")
        else:
            self.auth = Exchange(words[0].upper(), self.credentials, self.options.hostname)
            self._auth_step(*self.auth.start(words[1] if len(words) > 1 else None))

    def _auth_step(self, challenge: str | None, outcome: Outcome | None) -> None:
        if challenge is not None:
            self.line_limit = AUTH_LIMIT
            self.send(f"+ {challenge}")
            return
        mechanism = self.auth.mechanism if self.auth else ""
        self.auth = None
        self.line_limit = COMMAND_LIMIT
        assert outcome is not None
        if outcome.error == "cancelled":
            self.err("Authentication cancelled")
        elif outcome.error:
            self.err("Cannot decode the response")
        else:
            self._login(outcome, mechanism)

    def _login(self, outcome: Outcome, mechanism: str) -> None:
        user = outcome.user
        if user is not None and self.fault("pop3.login-refused", user, outcome.login, self.peer):
            user = None  # refused as a wrong password is: the client cannot tell
        self.journal.auth(user or outcome.login, user is not None, mechanism, outcome.secret)
        if user is None:
            self.err("[AUTH] Authentication failed")
            return
        if self.fault("pop3.mailbox-locked", user, outcome.login, self.peer):
            self.err("[IN-USE] Mailbox is locked by another POP3 session")  # RFC 2449 8.1.1
            return
        box = self.store.mail.mailbox(user, "INBOX")
        if box is None:
            self.err("[SYS/PERM] No INBOX")
            return
        self.user = user
        self.mailbox_id, self.uidvalidity = box.id, box.uidvalidity
        self.entries = [Entry(m.uid, m.size) for m in self.store.mail.messages(box.id)]
        count, size = self._stat()
        self.ok(f"Logged in, {count} messages ({size} octets)")

    # --- transaction state -------------------------------------------------------------

    def _stat(self) -> tuple[int, int]:
        live = [e for e in self.entries if not e.deleted]
        return len(live), sum(e.size for e in live)

    def _entry(self, arg: str) -> tuple[int, Entry] | None:
        """The message numbered `arg`, or None after answering -ERR."""
        if not arg.isdigit():
            self.err("Syntax: a message number is needed")
            return None
        number = int(arg)
        if not 1 <= number <= len(self.entries):
            self.err(f"No such message, only {len(self.entries)} messages in maildrop")
            return None
        entry = self.entries[number - 1]
        if entry.deleted:
            self.err(f"Message {number} already deleted")
            return None
        return number, entry

    def _data(self, number: int, entry: Entry) -> bytes | None:
        data = self.store.mail.data(self.mailbox_id, entry.uid)
        if data is None:
            self.err(f"Message {number} was removed by another session")
        return data

    def trans_STAT(self, arg: str) -> None:
        count, size = self._stat()
        self.ok(f"{count} {size}")

    def trans_LIST(self, arg: str) -> None:
        if arg:
            found = self._entry(arg)
            if found:
                self.ok(f"{found[0]} {found[1].size}")
            return
        count, size = self._stat()
        self.listing(f"{count} messages ({size} octets)",
                     [f"{n} {e.size}" for n, e in enumerate(self.entries, 1) if not e.deleted])

    def trans_UIDL(self, arg: str) -> None:
        if arg:
            found = self._entry(arg)
            if found:
                self.ok(f"{found[0]} {self.uidvalidity}.{found[1].uid}")
            return
        self.listing("", [f"{n} {self.uidvalidity}.{e.uid}"
                          for n, e in enumerate(self.entries, 1) if not e.deleted])

    def trans_RETR(self, arg: str) -> None:
        found = self._entry(arg)
        data = self._data(*found) if found else None
        if found and data is not None:
            found[1].retrieved = True
            self.ok(f"{len(data)} octets")
            self.send_raw(to_wire(data))

    def trans_TOP(self, arg: str) -> None:
        number, _, lines = arg.partition(" ")
        if not lines.strip().isdigit():
            self.err("Syntax: TOP message lines")
            return
        found = self._entry(number)
        data = self._data(*found) if found else None
        if data is not None:
            part = top(data, int(lines))
            # Wireshark reads the number after +OK as the length, as for RETR.
            self.ok(f"{len(part)} octets")
            self.send_raw(to_wire(part))

    def trans_DELE(self, arg: str) -> None:
        found = self._entry(arg)
        if found:
            found[1].deleted = True
            self.ok(f"Message {found[0]} deleted")

    def trans_RSET(self, arg: str) -> None:
        for entry in self.entries:
            entry.deleted = False
        count, size = self._stat()
        self.ok(f"{count} messages ({size} octets)")
