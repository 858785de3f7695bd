"""The IMAP session state machine (RFC 3501 section 3 and 6), without any I/O.

A Session takes parsed commands (and the raw lines AUTHENTICATE and IDLE ask for) and
writes responses through `send`; the Twisted adapter (server.py) owns the socket, TLS and
timers and asks the session what it wants through a few flags. Store calls are
synchronous (SQLite, durable on return), so a command is answered before the next one is
read: pipelined commands are answered in order.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..credentials import Credentials
from ..line.conversation import FaultFinder, find_fault
from ..store import DiskFull
from ..store.mail import INBOX, SPECIAL, HasChildren, Mail, MailboxExists, NoMailbox
from . import fetch, listing, notify, search, sort, thread, urls, utf7
from .cache import LRU
from .commands import (
    Append,
    Authenticate,
    CancelUpdate,
    Command,
    Copy,
    Create,
    Enable,
    Fetch,
    Id,
    ListCommand,
    Login,
    MailboxCommand,
    Notify,
    Rename,
    Search,
    SearchKey,
    Section,
    Select,
    Sort,
    Status,
    Store,
    Thread,
    UidExpunge,
    UnknownCharset,
    format_set,
)
from .mime import Entity, without_nul
from .parser import Bye, Continue, Frame, Line, ParseError, Reject, parse_command
from .view import View
from .wire import quote

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
BASE_CAPS = ["IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"]
AUTH_CAPS = ["NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "SPECIAL-USE",
             "CREATE-SPECIAL-USE", "CONDSTORE", "QRESYNC", "ESEARCH", "STATUS=SIZE",
             "MULTIAPPEND", "LIST-EXTENDED", "LIST-STATUS", "SORT", "SORT=DISPLAY", "ESORT",
             "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "BINARY", "CATENATE",
             "CONTEXT=SEARCH", "NOTIFY"]
NOT_AUTH = {"STARTTLS", "AUTHENTICATE", "LOGIN"}
AUTHENTICATED = {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE",
                 "LIST", "LSUB", "STATUS", "APPEND", "NAMESPACE", "ENABLE", "IDLE", "NOTIFY"}
SELECTED = {"CHECK", "CLOSE", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
            "UNSELECT", "UID FETCH", "UID STORE", "UID SEARCH", "UID COPY", "UID MOVE",
            "UID EXPUNGE", "SORT", "UID SORT", "THREAD", "UID THREAD", "CANCELUPDATE"}
# While these run, EXPUNGE must not be sent (RFC 3501 7.4.1); their UID forms may.
NO_EXPUNGE = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}
# Parsed messages, shared by every session of the process: a message never changes and
# the key holds the UIDVALIDITY. Ten sessions on one INBOX each parsed every message again
# with a cache per session (issue 14's stress mix: a third of a FETCH's time).
ENTITIES: LRU[Entity] = LRU(1024, 32 * 1024 * 1024, lambda e: len(e.header) + len(e.body))
FLUSH_AT = 64 * 1024  # queued output handed on at this size: a huge FETCH is not kept whole
# A FETCH, STORE or EXPUNGE of at most this many messages (a FETCH of at most QUICK_BYTES
# together), and an APPEND of at most QUICK_APPEND bytes, is answered on the reactor
# thread: the hand-off to a worker and back costs more than it (issue 14's stress mix: 40%
# more commands/s with APPEND and EXPUNGE here). Their writes wait at most for another
# writer's transaction, never for the disk: flags and \Seen are not fsync'd, and a durable
# write's fsync (10 ms and more on a loaded machine) is done in a worker while the reply
# waits (server.py, store/db.py's later()). Bigger ones go to a worker.
QUICK_MESSAGES = 64
QUICK_BYTES = 2 * 1024 * 1024
QUICK_APPEND = 256 * 1024
QUICK_PARSE = 64 * 1024  # a FETCH that parses a bigger message not in ENTITIES: a worker's
CHEAP_ATTS = {"UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"}  # no parse needed
QUICK_SEARCH = 2000  # messages a SEARCH without content keys walks on the reactor
# Each SEARCH RETURN (UPDATE) is searched again after every command that changed the
# mailbox: a few per session keep that cost bounded (RFC 5267 4.3 lets a server refuse).
MAX_UPDATES = 8


def forget(mailbox: Any, uids: Iterable[int]) -> None:
    """Drop expunged messages from ENTITIES: another session's FETCH of one it has not
    yet been told is gone then answers NIL and [EXPUNGEISSUED] (as Dovecot), not the
    bytes from the cache. (An expunge by another process, POP3's, is not seen here: that
    FETCH gets the bytes, which RFC 2180 4.1.1 allows.)"""
    for uid in uids:
        ENTITIES.discard((mailbox.id, mailbox.uidvalidity, uid))
# RETURN options that name no result (RFC 4731 3.1): with only these, ALL is meant.
NO_RESULTS = {"UPDATE", "CONTEXT", "SAVE"}


class No(Exception):
    """Answer the command NO with this text (which may start with a [CODE])."""


class Bad(Exception):
    """Answer the command BAD with this text."""


STATUS_ITEMS = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ",
                "SIZE", "DELETED"}


def _check_status_items(items: list[str]) -> None:
    """STATUS, and LIST's RETURN (STATUS (...)) (RFC 5819), know these items only."""
    unknown = [item for item in items if item not in STATUS_ITEMS]
    if unknown:
        raise Bad(f"Unknown STATUS item {unknown[0][:40]}")


@dataclass
class Update:
    """A SEARCH RETURN (UPDATE) still running (RFC 5267 4.3): what its client was told."""

    tag: str
    uid: bool
    keys: list[SearchKey]
    uids: list[int]  # the result as the client knows it, ascending


class Session:
    def __init__(self, mail: Any, credentials: Credentials, send: Callable[[bytes], None], *,
                 journal: Any, plaintext_auth: bool, tls: bool, starttls: bool,
                 subscribe: Callable[[str, Callable[[set[str]], None]], Callable[[], None]],
                 faults: FaultFinder | None = None, peer: str = "") -> None:
        self.mail: Mail = mail
        self.faults, self.peer = faults, peer  # FAULTS in __init__.py
        self.credentials = credentials  # the lab's one identity rule
        self._send = send
        self.journal = journal
        self.plaintext_auth = plaintext_auth
        self.tls = tls
        self.starttls_offered = starttls and not tls
        self._subscribe = subscribe
        self._unsubscribe: Callable[[], None] | None = None
        self.user: str | None = None
        self.view: View | None = None
        self.enabled: set[str] = set()
        self.idling: Command | None = None
        self.authenticating: dict[str, Any] | None = None
        self.wants_line = False  # the adapter must hand the next line to line()
        self.wants_tls = False  # the adapter must start TLS now
        self.closing = False  # the adapter must close after what was sent
        self._fetches = 0  # untagged FETCH responses of the current command (journal)
        self._parsed: tuple[bytes, Command] | None = None  # quick()'s, for command()
        self._out: list[bytes] = []
        self._queued = 0  # bytes in _out
        self._updates: dict[str, Update] = {}  # by the SEARCH's tag
        self._updates_stale = False  # the view changed since _updates were last checked
        self._notify: notify.Notify | None = None  # NOTIFY SET's, until NOTIFY NONE
        self._notify_ends: list[Callable[[], None]] = []  # its store subscriptions
        self._known: dict[int, tuple[int, int, int]] = {}  # watched: (messages, uidnext, modseq)
        self._names: dict[int, str] = {}  # mailbox names by id, as MailboxName last saw them
        self._subscribed: set[str] = set()  # subscriptions, as SubscriptionChange saw them

    # --- output -----------------------------------------------------------------------

    def send(self, line: str | bytes) -> None:
        """Queue one response line; flush() hands the queue to the socket in one write."""
        data = line.encode("utf-8") if isinstance(line, str) else line
        self._out.append(data)
        self._out.append(b"\r\n")
        self._queued += len(data) + 2
        if data.startswith(b"* ") and b" FETCH (" in data[:40]:
            self._fetches += 1
        else:
            self.journal.reply(_summary(data))
        if self._queued >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        if self._out:
            data, self._out, self._queued = b"".join(self._out), [], 0
            self._send(data)

    def greeting(self) -> None:
        self.send(f"* OK [CAPABILITY {' '.join(self.capabilities())}] protolab IMAP4rev1 ready")

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPS)
        if self.user is None:
            if self.starttls_offered:
                caps.append("STARTTLS")
            if self.plaintext_auth or self.tls:
                caps += ["AUTH=PLAIN", "AUTH=LOGIN"]
            else:
                caps.append("LOGINDISABLED")
        else:
            caps += AUTH_CAPS
        return caps

    # --- input ------------------------------------------------------------------------

    def handle(self, event: Frame | Line | Continue | Reject | Bye) -> None:
        """One event of parser.Reader, answered and flushed."""
        if isinstance(event, Frame):
            self.command(event.raw)
        elif isinstance(event, Line):
            self.line(event.raw)
        elif isinstance(event, Continue):
            self.send("+ Ready for literal data")
        elif isinstance(event, Reject):
            self.journal.command(f"{event.tag} (command rejected: {event.text})")
            self.send(f"{event.tag} {event.text}")
        elif isinstance(event, Bye):
            self.journal.command(f"(connection refused: {event.text})")
            self.send(f"* BYE {event.text}")
            self.closing = True
        self.flush()

    def command(self, raw: bytes) -> None:
        """One whole command, as framed by parser.Reader."""
        parsed, self._parsed = self._parsed, None
        try:
            command = parsed[1] if parsed is not None and parsed[0] is raw \
                else parse_command(raw)
        except ParseError as error:
            self.journal.command(_summary(raw))
            self.send(f"{error.tag or '*'} BAD {error}")
            return
        self.journal.command(self._journal_text(command, raw))
        self.run(command)

    def quick(self, raw: bytes) -> bool:
        """Whether a command is cheap enough for the reactor thread (see QUICK_MESSAGES);
        the adapter sends the others to a worker. A command that does not parse is quick;
        so is one of the selected state without a mailbox (answered BAD)."""
        words = raw[:64].split(b" ", 2)
        if len(words) > 2 and words[1].upper() == b"APPEND":
            return len(raw) <= QUICK_APPEND  # CATENATE's URLs count as small: one message
        try:
            command = parse_command(raw)
        except ParseError:
            return True
        self._parsed = (raw, command)  # command() takes it from here, if it runs here
        view = self.view
        if view is None:
            return True
        if isinstance(command, Search) and not isinstance(command, Sort | Thread):
            return len(view) <= QUICK_SEARCH and not search.needs_content(command.keys)
        if isinstance(command, UidExpunge) or command.name == "EXPUNGE":
            uids = self._uids(command.set, True) if isinstance(command, UidExpunge) \
                else view.uids
            deleted = (uid for uid in uids if "\\Deleted" in view.flags(uid))
            return next(itertools.islice(deleted, QUICK_MESSAGES, None), None) is None
        if not isinstance(command, Fetch | Store):
            return False  # COPY and MOVE read and write the messages; SORT and THREAD read all
        try:
            uids = self._uids(command.set, command.uid)
        except Bad:
            return True
        if len(uids) > QUICK_MESSAGES:
            return False
        if isinstance(command, Store):
            return True
        if sum(view.index[u].size for u in uids) > QUICK_BYTES:
            return False
        # A message's first parse (thousands of MIME parts: 0.1-0.3 s) is not done here
        return all(isinstance(a, str) and a in CHEAP_ATTS for a in command.atts) or all(
            view.index[u].size <= QUICK_PARSE
            or ENTITIES.get((view.id, view.mailbox.uidvalidity, u)) is not None for u in uids)

    def _journal_text(self, command: Command, raw: bytes) -> str:
        if isinstance(command, Login):
            return f"{command.tag} LOGIN {command.user} {self.journal.secret('')}"
        if isinstance(command, Authenticate) and command.initial:
            mechanism = command.mechanism
            return f"{command.tag} AUTHENTICATE {mechanism} {self.journal.secret('')}"
        return _summary(raw)

    def run(self, command: Command) -> None:
        name = command.name
        self._fetches = 0
        handler = getattr(self, "do_" + name.replace(" ", "_"), None)
        try:
            if isinstance(command, UnknownCharset):
                raise No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
            if handler is None:
                raise Bad("Unknown command")
            if name in NOT_AUTH and self.user is not None:
                raise Bad("Already authenticated")
            if name in AUTHENTICATED and self.user is None:
                raise Bad("Log in first")
            if name in SELECTED and self.view is None:
                raise Bad("No mailbox selected")
            text = handler(command)
        except DiskFull:
            # RFC 5530's OVERQUOTA, as Dovecot answers ENOSPC: retrying will not help until
            # space is freed; the write was not done (the store's transactions are whole).
            self._end(command, "NO", "[OVERQUOTA] Not enough disk space on the server; "
                                     "nothing was stored")
            return
        except No as error:
            self._end(command, "NO", str(error))
            return
        except Bad as error:
            self._end(command, "BAD", str(error))
            return
        if text is not None:  # None: the command goes on (IDLE, AUTHENTICATE, LOGOUT)
            self._end(command, "OK", text)

    def _end(self, command: Command, status: str, text: str) -> None:
        if self.view is not None and not self.closing:
            self.report(allow_expunge=command.name not in NO_EXPUNGE)
            self._search_updates()
        if self._fetches:
            self.journal.reply(f"({self._fetches} untagged FETCH responses)")
            self._fetches = 0
        self.send(f"{command.tag} {status} {text}")

    def line(self, raw: bytes) -> None:
        """A line the session asked for: AUTHENTICATE data or IDLE's DONE."""
        self.wants_line = False
        if self.authenticating is not None:
            self.journal.command(self.journal.secret(""))
            self._auth_step(raw)
        elif self.idling is not None:
            self.journal.command(_summary(raw))
            command, self.idling = self.idling, None
            if raw.strip().upper() == b"DONE":
                self._end(command, "OK", "IDLE terminated")
            else:
                self._end(command, "BAD", "Expected DONE")

    def changed(self, topics: set[str]) -> None:
        """The store says our mailbox changed (any process): an IDLE client hears now, and
        so does one that asked NOTIFY for the selected mailbox's events."""
        if self.view is None or f"mailbox:{self.view.id}" not in topics:
            return
        if self.idling is not None:
            self.report(allow_expunge=True)
        elif self._notify is not None and (selected := self._notify.selected()) is not None:
            if selected[0]:
                self.report(allow_expunge=not selected[1])
                self._search_updates()
        self.flush()

    def close(self) -> None:
        """The connection is gone: no more store callbacks for this session."""
        self._unwatch_selected()
        self._end_notify()

    def _unwatch_selected(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # --- reporting changes -----------------------------------------------------------

    def report(self, allow_expunge: bool) -> None:
        view = self.view
        assert view is not None
        changes = view.sync(allow_expunge, "CONDSTORE" in self.enabled)
        if changes.gone:
            self.send("* BYE The selected mailbox was deleted or renamed")
            self._deselect()
            self.closing = True
            return
        if changes.expunged:
            self._expunged(changes.expunged)
        if changes.new_uids or changes.flags:
            self._updates_stale = True
        if view.new_keywords(changes.flags + changes.new_uids):
            self._send_flags()
        for uid in changes.flags:
            seq = view.seq(uid)
            if seq:
                self.send(f"* {seq} FETCH ({self._flags_items(uid, with_uid=True)})")
        if changes.new_uids or changes.expunged:
            self.send(f"* {len(view)} EXISTS")
        if changes.new_uids:
            self.send(f"* {len(view.recent)} RECENT")

    def _expunged(self, uids: list[int]) -> None:
        view = self.view
        assert view is not None
        if self._updates:  # told while the expunged still have their numbers (RFC 5267 4.3)
            gone = set(uids)
            for update in self._updates.values():
                self._send_update(update, [u for u in update.uids if u not in gone])
        removed = view.remove(uids)
        if "QRESYNC" in self.enabled:
            if removed:
                self.send(f"* VANISHED {format_set(sorted(uid for _, uid in removed))}")
        else:
            for seq, _ in removed:
                self.send(f"* {seq} EXPUNGE")

    def _flags_items(self, uid: int, with_uid: bool = False) -> str:
        assert self.view is not None
        return self.view.flags_items(uid, with_uid, "CONDSTORE" in self.enabled)

    # --- any state -------------------------------------------------------------------

    def do_CAPABILITY(self, command: Command) -> str:
        self.send("* CAPABILITY " + " ".join(self.capabilities()))
        return "CAPABILITY completed"

    def do_NOOP(self, command: Command) -> str:
        return "NOOP completed"

    def do_LOGOUT(self, command: Command) -> None:
        self.send("* BYE protolab IMAP server logging out")
        self._deselect()
        self.closing = True
        self.send(f"{command.tag} OK LOGOUT completed")
        return None

    def do_ID(self, command: Id) -> str:
        self.send('* ID ("name" "protolab" "vendor" "protolab" "support-url" "https://lab.test/")')
        params = command.params
        if params:
            self.journal.event("id", " ".join(f"{k}={v}" for k, v in params.items())[:300])
        return "ID completed"

    # --- not authenticated -----------------------------------------------------------

    def do_STARTTLS(self, command: Command) -> None:
        if not self.starttls_offered:
            raise Bad("TLS is already active" if self.tls else "STARTTLS is not offered here")
        self.send(f"{command.tag} OK Begin TLS negotiation now")
        self.wants_tls = True
        return None

    def tls_started(self) -> None:
        self.tls = True
        self.starttls_offered = False
        self.journal.event("tls", "STARTTLS handshake started")

    def _plaintext_allowed(self) -> None:
        if not (self.plaintext_auth or self.tls):
            raise No("[PRIVACYREQUIRED] Plaintext authentication disallowed without TLS; "
                     "use STARTTLS first")

    def do_LOGIN(self, command: Login) -> str | None:
        self._plaintext_allowed()
        return self._login(command.user, command.password, "LOGIN")

    def _login(self, user: str, password: str, mechanism: str) -> str:
        name = self.credentials.check(user, password)
        if name is not None and self._fault("imap.login-refused", name, user):
            name = None  # refused as a wrong password is: the client cannot tell
        self.journal.auth(name or user, name is not None, mechanism, secret=password)
        if name is None:
            raise No("[AUTHENTICATIONFAILED] Authentication failed")
        self.user = name
        return f"[CAPABILITY {' '.join(self.capabilities())}] Logged in"

    def do_AUTHENTICATE(self, command: Authenticate) -> str | None:
        mechanism = command.mechanism
        if mechanism not in ("PLAIN", "LOGIN"):
            raise No("Unsupported authentication mechanism")
        self._plaintext_allowed()
        self.authenticating = {"command": command, "mechanism": mechanism, "step": 0}
        initial = command.initial
        if initial is not None:
            self._auth_step(b"" if initial == "=" else initial.encode())
            return None
        self._challenge(b"" if mechanism == "PLAIN" else b"Username:")
        return None

    def _challenge(self, text: bytes) -> None:
        self._out.append(b"+ " + base64.b64encode(text) + b"\r\n")
        self.wants_line = True

    def _auth_step(self, raw: bytes) -> None:
        state = self.authenticating
        assert state is not None
        command = state["command"]
        if raw.strip() == b"*":
            self.authenticating = None
            self._end(command, "BAD", "Authentication cancelled")
            return
        try:
            data = base64.b64decode(raw.strip(), validate=True)
        except (binascii.Error, ValueError):
            self.authenticating = None
            self._end(command, "BAD", "Invalid base64 data")
            return
        if state["mechanism"] == "LOGIN" and state["step"] == 0:
            state["user"], state["step"] = data.decode("utf-8", "replace"), 1
            self._challenge(b"Password:")
            return
        self.authenticating = None
        if state["mechanism"] == "PLAIN":
            parts = data.split(b"\0")
            if len(parts) != 3:
                self._end(command, "BAD", "Malformed PLAIN response")
                return
            authz, user, password = (p.decode("utf-8", "replace") for p in parts)
            if authz and authz != user:
                self.journal.auth(user, False, "PLAIN")
                self._end(command, "NO", "[AUTHORIZATIONFAILED] Cannot act as another user")
                return
        else:
            user, password = state["user"], data.decode("utf-8", "replace")
        try:
            text = self._login(user, password, state["mechanism"])
        except No as error:
            self._end(command, "NO", str(error))
            return
        self._end(command, "OK", text)

    # --- authenticated ---------------------------------------------------------------

    def do_NAMESPACE(self, command: Command) -> str:
        self.send('* NAMESPACE (("" "/")) NIL NIL')
        return "NAMESPACE completed"

    def do_ENABLE(self, command: Enable) -> str:
        done = []
        for cap in command.caps:
            if cap in ("CONDSTORE", "QRESYNC") and cap not in self.enabled:
                self.enabled.add(cap)
                done.append(cap)
        if "QRESYNC" in self.enabled:
            self.enabled.add("CONDSTORE")
        self.send("* ENABLED" + "".join(" " + c for c in done))
        return "ENABLE completed"

    def do_IDLE(self, command: Command) -> None:
        self._out.append(b"+ idling\r\n")
        self.journal.reply("+ idling")
        self.idling = command
        self.wants_line = True
        if self.view is not None:
            self.report(allow_expunge=True)
        return None

    def _fault(self, kind: str, *targets: str | None) -> bool:
        """Whether fault KIND is on for this client (its address, and `targets` or its
        user); journaled when it is, as it then acts."""
        if self.faults is None:
            return False
        return find_fault(self.faults, self.journal, kind, self.peer,
                          *(targets or (self.user,))) is not None

    def _over_quota(self) -> None:
        if self._fault("imap.over-quota"):  # RFC 5530's code, Dovecot's words
            raise No("[OVERQUOTA] Quota exceeded (mailbox for user is full)")

    def _mailbox(self, name: str) -> Any:
        assert self.user is not None
        mailbox = self.mail.mailbox(self.user, name)
        if mailbox is None:
            raise No("[NONEXISTENT] Mailbox does not exist")
        return mailbox

    def _selectable(self, name: str) -> Any:
        """A mailbox that holds messages: a \\Noselect placeholder (kept by DELETE for its
        inferiors) can't be selected, examined, asked for STATUS or stored into."""
        mailbox = self._mailbox(name)
        if mailbox.noselect:
            raise No("[CANNOT] Mailbox is \\Noselect")
        return mailbox

    def _deselect(self) -> None:
        self._unwatch_selected()
        self.view = None
        self._updates.clear()

    def do_SELECT(self, command: Select, readonly: bool = False) -> str:
        if self.view is not None:
            self._deselect()
            if "QRESYNC" in self.enabled:
                self.send("* OK [CLOSED] Previous mailbox closed")
        params = command.params
        if "CONDSTORE" in params:
            self.enabled.add("CONDSTORE")
        qresync = command.qresync
        if qresync and "QRESYNC" not in self.enabled:
            raise Bad("QRESYNC is not enabled")
        mailbox = self._selectable(command.mailbox)
        if mailbox.name == INBOX and not readonly and self._fault("imap.mailbox-locked"):
            raise No("[INUSE] Mailbox is locked by another session, try again later")
        view = View(self.mail, mailbox, readonly)
        self.view = view
        self._send_flags()
        self.send(f"* {len(view)} EXISTS")
        self.send(f"* {len(view.recent)} RECENT")
        unseen = view.unseen_first()
        if unseen:
            self.send(f"* OK [UNSEEN {unseen}] First unseen")
        self.send(f"* OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid")
        self.send(f"* OK [UIDNEXT {mailbox.uidnext}] Predicted next UID")
        self.send(f"* OK [HIGHESTMODSEQ {mailbox.modseq}] Highest")
        self._unsubscribe = self._subscribe(f"mailbox:{mailbox.id}", self.changed)
        if qresync and qresync[0] == mailbox.uidvalidity:
            self._qresync(qresync[1], qresync[2])
        return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {command.name} completed"

    def _send_flags(self) -> None:
        view = self.view
        assert view is not None
        flags = " ".join([*SYSTEM_FLAGS, *sorted(view.defined)])
        self.send(f"* FLAGS ({flags})")
        self.send(f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted" if not view.readonly
                  else "* OK [PERMANENTFLAGS ()] Read-only mailbox")

    def _qresync(self, modseq: int, known: Any) -> None:
        view = self.view
        assert view is not None
        largest = view.largest_uid()
        gone = [uid for uid in self.mail.vanished(view.id, modseq)
                if known is None or known.contains(uid, max(largest, uid))]
        if gone:
            self.send(f"* VANISHED (EARLIER) {format_set(gone)}")
        for uid in view.uids:
            if view.index[uid].modseq > modseq:
                self.send(f"* {view.seq(uid)} FETCH ({self._flags_items(uid, with_uid=True)})")

    def do_EXAMINE(self, command: Select) -> str:
        return self.do_SELECT(command, readonly=True)

    def _check_name(self, name: str) -> str:
        name = name.rstrip("/")
        if not name or "//" in name or name.startswith("/") or any(c in name for c in "%*\r\n\0"):
            raise No("[CANNOT] Invalid mailbox name")
        if len(name.encode()) > 500:
            raise No("[LIMIT] Mailbox name too long")
        return name

    def do_CREATE(self, command: Create) -> str:
        assert self.user is not None
        name = self._check_name(command.mailbox)
        if name == INBOX:
            raise No("[ALREADYEXISTS] INBOX always exists")
        use = command.use
        known = {u.lower(): u for u in SPECIAL.values()}
        if any(u.lower() not in known for u in use):
            raise No("[USEATTR] Unsupported special-use attribute")
        existing = self.mail.mailbox(self.user, name)
        if existing is not None and not existing.noselect:  # a placeholder may be made real
            raise No("[ALREADYEXISTS] Mailbox exists")
        self._create_parents(name)
        try:
            self.mail.create_mailbox(self.user, name, " ".join(known[u.lower()] for u in use))
        except MailboxExists:
            raise No("[ALREADYEXISTS] Mailbox exists") from None
        return "CREATE completed"

    def _create_parents(self, name: str) -> None:
        assert self.user is not None
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if self.mail.mailbox(self.user, parent) is None:
                try:
                    self.mail.create_mailbox(self.user, parent)
                except MailboxExists:
                    pass

    def do_DELETE(self, command: MailboxCommand) -> str:
        assert self.user is not None
        name = command.mailbox
        if name == INBOX:
            raise No("[CANNOT] INBOX cannot be deleted")
        mailbox = self._mailbox(name)
        if self.view is not None and self.view.id == mailbox.id:
            self._deselect()
        try:  # with inferiors it stays as a \Noselect name (RFC 3501 6.3.4)
            self.mail.delete_mailbox(self.user, mailbox.name)
        except HasChildren:
            raise No("[HASCHILDREN] Mailbox is \\Noselect and has children; delete them first"
                     ) from None
        except NoMailbox:  # deleted by another session meanwhile
            raise No("[NONEXISTENT] Mailbox does not exist") from None
        return "DELETE completed"

    def do_RENAME(self, command: Rename) -> str:
        assert self.user is not None
        old, new = command.mailbox, self._check_name(command.new)
        source = self._mailbox(old)
        if self.mail.mailbox(self.user, new) is not None:
            raise No("[ALREADYEXISTS] Target mailbox exists")
        if new == INBOX or new.startswith(source.name + "/"):
            raise No("[CANNOT] Cannot rename there")
        self._create_parents(new)
        if source.name == INBOX:  # RFC 3501: move INBOX's messages, INBOX stays (empty)
            target = self.mail.create_mailbox(self.user, new)
            uids = [m.uid for m in self.mail.messages(source.id)]
            self.mail.copy(source.id, uids, target.id, move=True)
            forget(source, uids)
            return "RENAME completed"
        try:
            self.mail.rename_mailbox(self.user, source.name, new)
        except (MailboxExists, NoMailbox) as error:
            raise No(f"[CANNOT] {error}") from None
        return "RENAME completed"

    def do_SUBSCRIBE(self, command: MailboxCommand) -> str:
        assert self.user is not None
        self._mailbox(command.mailbox)
        self.mail.subscribe(self.user, command.mailbox, True)
        return "SUBSCRIBE completed"

    def do_UNSUBSCRIBE(self, command: MailboxCommand) -> str:
        assert self.user is not None
        self.mail.subscribe(self.user, command.mailbox, False)
        return "UNSUBSCRIBE completed"

    def _wire_name(self, name: str) -> str:
        return quote(utf7.encode(name))

    def do_LIST(self, command: ListCommand, lsub: bool = False) -> str:
        assert self.user is not None
        _check_status_items(command.status)  # LIST-STATUS: before any line goes out
        reference = command.reference
        patterns = command.patterns
        opts = command.select_opts
        returns = [r.upper() for r in command.returns]
        problem = listing.check_options(opts, returns)
        if problem:
            raise Bad(problem)
        if patterns == [""] and not opts:
            self.send(f'* {"LSUB" if lsub else "LIST"} (\\Noselect) "/" ""')
            return f"{command.name} completed"
        mailboxes = {m.name: m for m in self.mail.mailboxes(self.user)}
        subscribed = set(self.mail.subscriptions(self.user))
        for name, attrs, childinfo in listing.listed(mailboxes, subscribed, reference,
                                                     patterns, opts, returns, lsub):
            extra = ' ("CHILDINFO" ("SUBSCRIBED"))' if childinfo else ""
            self.send(f'* {"LSUB" if lsub else "LIST"} ({" ".join(attrs)}) "/" '
                      f'{self._wire_name(name)}{extra}')
            if command.status and name in mailboxes and not mailboxes[name].noselect:
                self._status_line(mailboxes[name], command.status)
        return f"{command.name} completed"

    def do_LSUB(self, command: ListCommand) -> str:
        return self.do_LIST(command, lsub=True)

    def do_STATUS(self, command: Status) -> str:
        mailbox = self._selectable(command.mailbox)
        items = command.items
        if not items:
            raise Bad("Unknown STATUS item")
        _check_status_items(items)
        self._status_line(mailbox, items)
        return "STATUS completed"

    def _status_line(self, mailbox: Any, items: list[str]) -> None:
        status = self.mail.status(mailbox.id)
        values = {"MESSAGES": status.messages, "UNSEEN": status.unseen,
                  "UIDNEXT": status.uidnext, "UIDVALIDITY": status.uidvalidity,
                  "HIGHESTMODSEQ": status.modseq, "SIZE": status.size}
        if "RECENT" in items:
            if self.view is not None and self.view.id == mailbox.id:
                values["RECENT"] = len(self.view.recent)  # ours, as this session sees them
            else:
                mark = self.mail.recent_mark(mailbox.id)
                values["RECENT"] = sum(1 for m in self.mail.messages(mailbox.id) if m.uid > mark)
        if "DELETED" in items:
            values["DELETED"] = sum(1 for m in self.mail.messages(mailbox.id)
                                    if "\\Deleted" in m.flags)
        body = " ".join(f"{item} {values[item]}" for item in items)
        self.send(f"* STATUS {self._wire_name(mailbox.name)} ({body})")

    def do_APPEND(self, command: Append) -> str:
        assert self.user is not None
        mailbox = self.mail.mailbox(self.user, command.mailbox)
        if mailbox is None:
            raise No("[TRYCREATE] Mailbox does not exist")
        if mailbox.noselect:
            raise No("[CANNOT] Mailbox is \\Noselect")
        self._over_quota()
        # Every message checked before any is stored: a MULTIAPPEND is all or none.
        messages = []
        for message in command.messages:
            raw = message.data if message.catenate is None else self._catenated(message.catenate)
            # BINARY (RFC 3516 4.4): stored 7-bit; the store makes its line ends CRLF
            data = without_nul(raw)
            if not data:
                raise No("Cannot append an empty message")
            messages.append((data, _check_flags(message.flags), *(message.date or (None, 0))))
        # One transaction: on a full disk halfway (DiskFull, answered by run()) none stays.
        stored = self.mail.append_many([(self.user, mailbox.name, data, flags, stamp, zone)
                                        for data, flags, stamp, zone in messages])
        uids: list[int] = []
        for (data, *_), where in zip(messages, stored, strict=True):
            if where is None:  # deleted by another session meanwhile
                raise No("[TRYCREATE] Mailbox does not exist")
            uids.append(where[1])
            self.journal.event("append", f"{mailbox.name} uid {where[1]} {len(data)} bytes")
        return f"[APPENDUID {mailbox.uidvalidity} {format_set(uids)}] APPEND completed"

    def _catenated(self, parts: list[tuple[str, bytes]]) -> bytes:
        """CATENATE's message (RFC 4469): its TEXT parts and what its URLs name, in order."""
        out = []
        for kind, value in parts:
            if kind == "TEXT":
                out.append(value)
                continue
            assert self.user is not None
            try:
                out.append(urls.resolve(self.mail, self.user, value))
            except urls.BadUrl:
                text = value.decode("utf-8", "replace")[:200]
                raise No(f"[BADURL {quote(text)}] The URL names no message of yours") from None
        return b"".join(out)

    # --- NOTIFY (RFC 5465) --------------------------------------------------------------

    def do_NOTIFY(self, command: Notify) -> str:
        assert self.user is not None
        try:
            watch = notify.Notify(command.groups, command.status) if command.groups else None
        except notify.BadEvent as error:
            raise No(str(error)) from None
        self._end_notify()
        if watch is None:
            return "NOTIFY completed"
        self._notify = watch
        mailboxes = self.mail.mailboxes(self.user)
        self._names = {m.id: m.name for m in mailboxes}
        self._subscribed = set(self.mail.subscriptions(self.user))
        for mailbox in mailboxes:
            if mailbox.noselect or (self.view is not None and self.view.id == mailbox.id):
                continue
            events = watch.events(mailbox.name, self._subscribed) & notify.MESSAGE_EVENTS
            if not events:
                continue
            status = self.mail.status(mailbox.id)
            self._known[mailbox.id] = (status.messages, status.uidnext, status.modseq)
            if watch.status:
                self._status_line(mailbox, notify.status_items(events))
        self._notify_ends = [self._subscribe("mailbox:", self._notified),
                             self._subscribe(f"mailboxes:{self.user}", self._notified)]
        return "NOTIFY completed"

    def _end_notify(self) -> None:
        for end in self._notify_ends:
            end()
        self._notify_ends, self._notify, self._known = [], None, {}

    def _notified(self, topics: set[str]) -> None:
        """Another mailbox changed, or the list of mailboxes did (any process)."""
        watch = self._notify
        if watch is None or self.user is None:
            return
        if f"mailboxes:{self.user}" in topics:
            self._mailbox_events(watch)
        selected = self.view.id if self.view is not None else None
        for topic in topics:
            if not topic.startswith("mailbox:") or topic == f"mailbox:{selected}":
                continue  # the selected one: changed(), through its own subscription
            mailbox = self.mail.mailbox_by_id(int(topic.removeprefix("mailbox:")))
            if mailbox is None or mailbox.user != self.user or mailbox.noselect:
                continue
            events = watch.events(mailbox.name, self._subscribed) & notify.MESSAGE_EVENTS
            if events:
                self._status_change(mailbox, events)
        self.flush()

    def _status_change(self, mailbox: Any, events: set[str]) -> None:
        """STATUS for a watched mailbox, with the items of the events that happened."""
        status = self.mail.status(mailbox.id)
        now = (status.messages, status.uidnext, status.modseq)
        before = self._known.get(mailbox.id, (status.messages, status.uidnext, 0))
        self._known[mailbox.id] = now
        happened = set()
        if now[1] != before[1]:
            happened.add("MESSAGENEW")
        if now[0] < before[0] + (now[1] - before[1]):  # fewer than before plus the new
            happened.add("MESSAGEEXPUNGE")
        if now[2] != before[2] and not happened:
            happened.add("FLAGCHANGE")
        items = notify.status_items(events & happened)
        if items:
            self._status_line(mailbox, items)

    def _mailbox_events(self, watch: notify.Notify) -> None:
        """MailboxName (LIST for a new name, LIST (\\NonExistent) for a gone one, LIST
        with ("OLDNAME" (old)) for a renamed one: a mailbox keeps its id through RENAME)
        and SubscriptionChange (LIST with or without \\Subscribed), RFC 5465 5.4 and 5.5."""
        assert self.user is not None
        now = {m.id: m.name for m in self.mail.mailboxes(self.user)}
        names, before = set(now.values()), set(self._names.values())
        subscribed = set(self.mail.subscriptions(self.user))
        if watch.wants("MAILBOXNAME"):
            renamed = {now[i]: old for i, old in self._names.items()
                       if i in now and now[i] != old}
            for name in sorted((names - before) | renamed.keys()):
                old = renamed.get(name)
                if "MAILBOXNAME" in watch.events(name, subscribed) or (
                        old is not None and "MAILBOXNAME" in watch.events(old, self._subscribed)):
                    extra = "" if old is None else f' ("OLDNAME" ({self._wire_name(old)}))'
                    self.send(f'* LIST () "/" {self._wire_name(name)}{extra}')
            for name in sorted(before - names - set(renamed.values())):
                if "MAILBOXNAME" in watch.events(name, self._subscribed):
                    self.send(f'* LIST (\\NonExistent) "/" {self._wire_name(name)}')
        if watch.wants("SUBSCRIPTIONCHANGE"):
            for name in sorted(subscribed ^ self._subscribed):
                if "SUBSCRIPTIONCHANGE" in watch.events(name, subscribed | self._subscribed):
                    attrs = "\\Subscribed" if name in subscribed else ""
                    self.send(f'* LIST ({attrs}) "/" {self._wire_name(name)}')
        self._names, self._subscribed = now, subscribed

    # --- selected --------------------------------------------------------------------

    def do_CHECK(self, command: Command) -> str:
        return "CHECK completed"

    def do_CLOSE(self, command: Command) -> str:
        view = self.view
        assert view is not None
        if not view.readonly:
            deleted = [uid for uid in view.uids if "\\Deleted" in view.flags(uid)]
            if deleted:
                forget(view.mailbox, self.mail.expunge(view.id, deleted))
        self._deselect()
        return "CLOSE completed"

    def do_UNSELECT(self, command: Command) -> str:
        self._deselect()
        return "UNSELECT completed"

    def do_EXPUNGE(self, command: Command, within: Any = None) -> str:
        view = self.view
        assert view is not None
        if view.readonly:
            raise No("[READ-ONLY] Mailbox is read-only")
        self.report(allow_expunge=False)  # \Deleted set by others counts too; told first
        if self.view is None:
            raise No("[NONEXISTENT] The mailbox was deleted")
        deleted = [uid for uid in view.uids if "\\Deleted" in view.flags(uid)
                   and (within is None or uid in within)]
        gone = self.mail.expunge(view.id, deleted)
        forget(view.mailbox, gone)
        self._expunged(gone)
        return f"{command.name} completed"

    def do_UID_EXPUNGE(self, command: UidExpunge) -> str:
        return self.do_EXPUNGE(command, set(self._uids(command.set, True)))

    def _uids(self, seqset: Any, uid: bool) -> list[int]:
        """The view's UIDs a sequence set names (UID sets ignore UIDs not present). Ranges
        are merged first, so a set of many overlapping ranges costs no more than one."""
        view = self.view
        assert view is not None
        if uid:
            out: list[int] = []
            for lo, hi in _merge(seqset.resolve(view.largest_uid())):
                start = bisect.bisect_left(view.uids, lo)
                out += view.uids[start:bisect.bisect_right(view.uids, hi)]
            return out
        count = len(view)
        ranges = seqset.resolve(count)
        if any(hi > count or lo < 1 for lo, hi in ranges):
            raise Bad("Invalid message sequence number")
        return [uid for lo, hi in _merge(ranges) for uid in view.uids[lo - 1:hi]]

    def do_SEARCH(self, command: Search) -> str:
        view = self.view
        assert view is not None
        keys = command.keys
        found = self._found(keys)
        numbers = [uid if command.uid else seq for seq, uid in found]
        uses_modseq = _uses_modseq(keys)
        if uses_modseq:
            self._condstore()
        returns = command.returns
        if returns is not None:
            self._esearch(command, found, returns, uses_modseq, command.partial)
            if "UPDATE" in returns:
                return self._start_update(command, [uid for _, uid in found])
            return "SEARCH completed"
        text = "* SEARCH" + "".join(f" {n}" for n in numbers)
        if uses_modseq and found:
            text += f" (MODSEQ {max(view.index[uid].modseq for _, uid in found)})"
        self.send(text)
        return "SEARCH completed"

    def _found(self, keys: list[SearchKey]) -> list[tuple[int, int]]:
        """(seq, uid) of the view's messages that match every key, ascending."""
        view = self.view
        assert view is not None
        content = search.needs_content(keys)
        ctx = search.Context(len(view), view.largest_uid())
        found = []
        for seq, uid in enumerate(view.uids, 1):
            message = view.index[uid]
            load: Callable[[], Entity | None] = partial(self._entity, uid) if content \
                else _no_entity
            candidate = search.Candidate(
                (view.id, view.mailbox.uidvalidity, uid), seq, uid, message.flags,
                uid in view.recent, message.internaldate + message.zone * 60, message.size,
                message.modseq, load)
            if all(search.matches(key, candidate, ctx) for key in keys):
                found.append((seq, uid))
        return found

    def _sort_items(self, found: list[tuple[int, int]]) -> list[sort.Item]:
        view = self.view
        assert view is not None
        items = []
        for seq, uid in found:
            message = view.index[uid]
            keys = sort.keys((view.id, view.mailbox.uidvalidity, uid),
                             partial(self._entity, uid))
            items.append(sort.Item(seq, uid, message.internaldate, message.size, keys))
        return items

    def do_SORT(self, command: Sort) -> str:
        """RFC 5256 SORT; with RETURN, ESORT's ESEARCH answer in sort order (RFC 5267)."""
        found = self._found(command.keys)
        uses_modseq = _uses_modseq(command.keys)
        if uses_modseq:
            self._condstore()
        ordered = [(i.seq, i.uid) for i in sort.sort(self._sort_items(found), command.criteria)]
        if command.returns is not None:
            if "UPDATE" in command.returns:  # CONTEXT=SORT is not offered
                raise Bad("RETURN (UPDATE) is for SEARCH only here")
            self._esearch(command, ordered, command.returns, uses_modseq, command.partial)
        else:
            self.send("* SORT" + "".join(f" {uid if command.uid else seq}"
                                         for seq, uid in ordered))
        return f"{command.name} completed"

    do_UID_SORT = do_SORT

    def do_THREAD(self, command: Thread) -> str:
        items = self._sort_items(self._found(command.keys))
        threads = thread.references(items) if command.algorithm == "REFERENCES" \
            else thread.ordered_subject(items)
        self.send("* THREAD " + thread.render(threads, command.uid))
        return f"{command.name} completed"

    do_UID_THREAD = do_THREAD

    def _condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1): the client hears HIGHESTMODSEQ."""
        if "CONDSTORE" not in self.enabled:
            self.enabled.add("CONDSTORE")
            if self.view is not None:
                self.send(f"* OK [HIGHESTMODSEQ {self.view.modseq}] Highest")

    def _esearch(self, command: Search | Sort, found: list[tuple[int, int]], returns: list[str],
                 modseq: bool, partial: tuple[int, int] | None) -> None:
        """RFC 4731's answer; with a MODSEQ key, the highest mod-sequence of the messages
        it names (RFC 7162 3.1.10); PARTIAL: the results at those positions (RFC 5267 4.4)."""
        view = self.view
        assert view is not None
        returns = [r for r in returns if r not in NO_RESULTS] or ["ALL"]
        numbers = [uid if command.uid else seq for seq, uid in found]
        parts = [f'(TAG "{command.tag}")'] + (["UID"] if command.uid else [])
        named = found if "ALL" in returns or returns == ["COUNT"] else []
        if numbers:
            if "MIN" in returns:
                parts.append(f"MIN {numbers[0]}")
                named.append(found[0])
            if "MAX" in returns:
                parts.append(f"MAX {numbers[-1]}")
                named.append(found[-1])
            if "ALL" in returns:
                parts.append(f"ALL {format_set(numbers)}")
        if "COUNT" in returns:
            parts.append(f"COUNT {len(numbers)}")
        if partial is not None:
            low, high = partial
            parts.append(f"PARTIAL ({low}:{high} {format_set(numbers[low - 1:high]) or 'NIL'})")
            named += found[low - 1:high]
        if modseq and named:
            parts.append(f"MODSEQ {max(view.index[uid].modseq for _, uid in named)}")
        self.send("* ESEARCH " + " ".join(parts))

    do_UID_SEARCH = do_SEARCH

    # --- CONTEXT=SEARCH (RFC 5267 4.3) ---------------------------------------------------

    def _start_update(self, command: Search, uids: list[int]) -> str:
        if command.tag not in self._updates and len(self._updates) >= MAX_UPDATES:
            return f'[NOUPDATE "{command.tag}"] SEARCH completed, without updates'
        self._updates[command.tag] = Update(command.tag, command.uid, command.keys, uids)
        return "SEARCH completed"

    def do_CANCELUPDATE(self, command: CancelUpdate) -> str:
        unknown = [tag for tag in command.tags if tag not in self._updates]
        if unknown:
            raise Bad(f"No SEARCH RETURN (UPDATE) has the tag {quote(unknown[0][:40])}")
        for tag in command.tags:
            del self._updates[tag]
        return "CANCELUPDATE completed"

    def _search_updates(self) -> None:
        """Each running SEARCH RETURN (UPDATE) searched again, its client told what changed:
        after any command, once the view saw new messages or changed flags."""
        if not (self._updates and self._updates_stale) or self.view is None:
            return
        self._updates_stale = False
        for update in self._updates.values():
            self._send_update(update, [uid for _, uid in self._found(update.keys)])

    def _send_update(self, update: Update, uids: list[int]) -> None:
        """ESEARCH REMOVEFROM, then ADDTO (context-position: where the first of them is in
        the old, resp. new, result), in the numbers the search used."""
        view = self.view
        assert view is not None
        old, new = set(update.uids), set(uids)
        head = f'* ESEARCH (TAG "{update.tag}"){" UID" if update.uid else ""}'
        for kind, changed, within in (("REMOVEFROM", old - new, update.uids),
                                      ("ADDTO", new - old, uids)):
            if not changed:
                continue
            ordered = sorted(changed)
            position = bisect.bisect_left(within, ordered[0]) + 1
            numbers = ordered if update.uid else [view.seq(uid) for uid in ordered]
            self.send(f"{head} {kind} ({position} {format_set(numbers)})")
        update.uids = uids

    def _entity(self, uid: int) -> Entity | None:
        view = self.view
        assert view is not None
        key = (view.id, view.mailbox.uidvalidity, uid)
        entity = ENTITIES.get(key)
        if entity is None:
            data = self.mail.data(view.id, uid)
            if data is None:
                return None
            entity = Entity.parse(data)  # CRLF already: the store makes it so
            ENTITIES.put(key, entity)
        return entity

    def do_FETCH(self, command: Fetch) -> str:
        view = self.view
        assert view is not None
        atts = list(command.atts)
        changedsince = command.changedsince
        if command.vanished and not (command.uid and "QRESYNC" in self.enabled
                                         and changedsince is not None):
            raise Bad("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
        if changedsince is not None or "MODSEQ" in atts:
            self._condstore()
        uids = self._uids(command.set, command.uid)
        if command.uid and "UID" not in atts:
            atts.insert(0, "UID")
        if changedsince is not None:
            uids = [u for u in uids if view.index[u].modseq > changedsince]
            if "MODSEQ" not in atts:
                atts.append("MODSEQ")
            if command.vanished:
                largest = view.largest_uid()
                gone = [u for u in self.mail.vanished(view.id, changedsince)
                        if command.set.contains(u, max(largest, u))]
                if gone:
                    self.send(f"* VANISHED (EARLIER) {format_set(gone)}")
        sets_seen = not view.readonly and any(
            a in ("RFC822", "RFC822.TEXT") or (isinstance(a, Section) and not a.peek) for a in atts)
        seen_now: set[int] = set()
        if sets_seen:
            unseen = [u for u in uids if "\\Seen" not in view.flags(u) and u not in view.ghosts]
            if unseen:
                changed, _ = self.mail.set_flags(view.id, unseen, ["\\Seen"], "add")
                self._updates_stale = self._updates_stale or bool(changed)
                for message in changed:
                    view.update(message)
                    seen_now.add(message.uid)
        missing = False
        for uid in uids:
            try:
                found, lost = fetch.items(view, uid, atts, self._entity, uid in seen_now,
                                          "CONDSTORE" in self.enabled)
            except fetch.UnknownEncoding as error:
                raise No(f"[UNKNOWN-CTE] {error}: unknown Content-Transfer-Encoding") from None
            missing = missing or lost
            self.send(b"* %d FETCH (" % view.seq(uid) + b" ".join(found) + b")")
        if missing:  # RFC 5530's code, as Dovecot answers: what was known has been sent
            return "[EXPUNGEISSUED] Some messages were expunged meanwhile"
        return f"{command.name} completed"

    do_UID_FETCH = do_FETCH

    def do_STORE(self, command: Store) -> str:
        view = self.view
        assert view is not None
        if view.readonly:
            raise No("[READ-ONLY] Mailbox is read-only")
        flags = _check_flags(command.flags)
        unchanged = command.unchangedsince
        if unchanged is not None:
            self._condstore()
        uids = self._uids(command.set, command.uid)
        live = [u for u in uids if u not in view.ghosts]
        changed, failed = self.mail.set_flags(view.id, live, flags, command.mode, unchanged)
        for message in changed:
            view.update(message)
        self._updates_stale = self._updates_stale or bool(changed)
        changed_uids = {m.uid for m in changed}
        if view.new_keywords(sorted(changed_uids)):
            self._send_flags()
        failed_set = set(failed)
        for uid in uids:
            if uid in failed_set or uid in view.ghosts:
                continue
            if command.silent and not (unchanged is not None and uid in changed_uids):
                continue
            items = self._flags_items(uid, with_uid=command.uid)
            if unchanged is not None and "MODSEQ" not in items:
                items += f" MODSEQ ({view.index[uid].modseq})"
            self.send(f"* {view.seq(uid)} FETCH ({items})")
        if failed:
            numbers = failed if command.uid else [view.seq(u) for u in failed]
            return f"[MODIFIED {format_set(sorted(numbers))}] Conditional STORE failed"
        return f"{command.name} completed"

    do_UID_STORE = do_STORE

    def do_COPY(self, command: Copy, move: bool = False) -> str:
        view = self.view
        assert view is not None
        assert self.user is not None
        uids = self._uids(command.set, command.uid)
        target = self.mail.mailbox(self.user, command.mailbox)
        if target is None:
            raise No("[TRYCREATE] Target mailbox does not exist")
        if target.noselect:
            raise No("[CANNOT] Target mailbox is \\Noselect")
        if move and view.readonly:
            raise No("[READ-ONLY] Mailbox is read-only")
        self._over_quota()
        live = [u for u in uids if u not in view.ghosts]
        if not live:
            if uids:
                raise No("[EXPUNGEISSUED] The messages were expunged")
            return f"{command.name} completed (nothing to do)"
        pairs = self.mail.copy(view.id, live, target.id, move=move)
        if move:
            forget(view.mailbox, live)
        code = ""
        if pairs:
            code = (f"[COPYUID {target.uidvalidity} {format_set([a for a, _ in pairs])} "
                    f"{format_set([b for _, b in pairs])}] ")
        if move:
            if code:
                self.send(f"* OK {code}Moved")
            self._expunged([a for a, _ in pairs])
            return f"{command.name} completed"
        return f"{code}{command.name} completed"

    do_UID_COPY = do_COPY

    def do_MOVE(self, command: Copy) -> str:
        return self.do_COPY(command, move=True)

    do_UID_MOVE = do_MOVE


def _check_flags(flags: list[str]) -> list[str]:
    out = []
    for flag in flags:
        if flag.startswith("\\"):
            if flag.lower() == "\\recent":
                continue
            if flag.lower() not in {f.lower() for f in SYSTEM_FLAGS}:
                raise Bad(f"Invalid system flag {flag}")
        out.append(flag)
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ascending, non-overlapping ranges covering the same numbers."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _no_entity() -> None:
    """A SEARCH whose keys need no message bytes never loads one."""
    return None


def _uses_modseq(keys: list) -> bool:
    for key in keys:
        if key[0] == "MODSEQ":
            return True
        if key[0] == "AND" and _uses_modseq(key[1]):
            return True
        if key[0] == "NOT" and _uses_modseq([key[1]]):
            return True
        if key[0] == "OR" and _uses_modseq([key[1], key[2]]):
            return True
    return False


def _summary(data: bytes) -> str:
    """A line for the journal: literals summarised by size, long lines cut."""
    text = re.sub(rb"\{(\d+)\+?\}\r\n", lambda m: b"{%s}" % m.group(1), data)
    out, pos = [], 0
    for match in re.finditer(rb"\{(\d+)\}", text):
        if match.start() < pos:
            continue  # inside a literal already summarised
        out.append(text[pos:match.end()])
        size = int(match.group(1))
        out.append(b" <%d bytes>" % size)
        pos = match.end() + size
    out.append(text[pos:])
    line = b"".join(out).decode("utf-8", "replace").replace("\r\n", " ")
    return line if len(line) <= 300 else line[:300] + "..."

