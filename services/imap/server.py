"""The Twisted side of IMAP: sockets, TLS, timers; everything else is in session.py.

Why not twisted.mail.imap4.IMAP4Server: it has no per-session sequence numbers, tells no
session about another's expunges, mislabels partial fetches (#5613), answers pipelined
commands BAD (#9282), desyncs on LITERAL+ and lacks UIDPLUS (#7336), MOVE and the rest
(see the shared library notes). Fixing that in subclasses would replace nearly every
method, so this adapter only frames bytes (parser.Reader) and feeds a sans-IO Session.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import blockingCallFromThread, deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..flow import Flow, HalfClose
from ..serving import LabContextFactory
from .parser import Frame, Reader
from .session import Session

_log = Logger()

# Commands whose work grows with the mailbox or the messages (a TEXT search over
# thousands of messages, FETCH 1:* BODY[], a message of thousands of MIME parts, COPY of
# everything), or that wait for the disk (APPEND's fsync): run in a worker thread, so the
# reactor that every service shares goes on. The rest are quick and stay in the reactor
# thread.
WORKER_COMMANDS = {b"FETCH", b"SEARCH", b"STORE", b"COPY", b"MOVE", b"EXPUNGE", b"SORT",
                   b"THREAD", b"APPEND"}
# Unread input kept while a command runs or the client does not read our output; beyond
# it the socket is not read (TCP then holds the client back).
INPUT_HELD = 256 * 1024


def _worker_command(raw: bytes) -> bool:
    words = raw.split(b" ", 3)
    name = words[1].upper() if len(words) > 1 else b""
    if name == b"UID" and len(words) > 2:
        name = words[2].upper()
    return name in WORKER_COMMANDS


class IMAPProtocol(HalfClose, Protocol):
    """When the socket's buffer is full (a client that does not read: see services/flow.py)
    no more commands are run and a worker's output is held back, so what the server keeps
    for one connection stays bounded."""

    def __init__(self, lab: Any, settings: Any, implicit_tls: bool, clock: Any = reactor) -> None:
        self.lab = lab
        self.clock = clock  # IReactorTime: the autologout timer
        self.settings = settings
        self.implicit_tls = implicit_tls
        self.reader = Reader(settings.size_limit)
        self.session: Session | None = None
        self.journal: Any = None
        self.timer: Any = None
        self.busy = False  # a command runs in a worker thread
        # Store changes heard while busy, by subscriber: NOTIFY's events of other
        # mailboxes, sent once the command's tagged reply is (RFC 5465 allows it then)
        self.held: dict[Callable[[set[str]], None], set[str]] = {}
        self.io_thread = threading.get_ident()  # the reactor's: writes from it go straight
        # A reactor command's output while its durable writes wait for their fsync
        self.unsynced: list[bytes] | None = None

    def connectionMade(self) -> None:
        # Replies go out whole in one write; Nagle would hold the next one back for the
        # client's delayed ACK (40 ms on Linux) when a client pipelines.
        self.transport.setTcpNoDelay(True)
        self.flow = Flow(self.transport, self._go_on)
        peer = self.transport.getPeer()
        self.journal = self.lab.journal.open(
            "imap", f"{peer.host}:{peer.port}", "imaps" if self.implicit_tls else "imap")
        self.session = Session(
            self.lab.store.mail, self.lab.credentials, self._write,
            journal=self.journal,
            plaintext_auth=self.settings.plaintext_auth, tls=self.implicit_tls,
            starttls=True, subscribe=self._subscribe, faults=self.lab.faults.find,
            peer=peer.host)
        self.timer = self.clock.callLater(self.settings.autologout, self._autologout)
        self.session.greeting()
        self.session.flush()

    # --- output and its backpressure ---------------------------------------------------

    def _write(self, data: bytes) -> None:
        """The session's output: to the socket in the reactor thread; from a worker, handed
        to the reactor, and the worker waits while the socket's buffer is full."""
        if threading.get_ident() == self.io_thread:
            if self.unsynced is not None:
                self.unsynced.append(data)
            else:
                self.transport.write(data)
        else:
            blockingCallFromThread(reactor, self._write_from_worker, data)

    def _write_from_worker(self, data: bytes) -> Deferred[None] | None:
        if self.flow.lost:
            raise ConnectionDone("the client went away")  # ends the worker's command
        self.transport.write(data)
        return self.flow.drained()

    # --- input ----------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.settings.autologout)
        self.reader.feed(data)
        self._go_on()

    def _go_on(self) -> None:
        """Run what was received, unless a command is in a worker or the client does not
        read; then read on, or not, by how much input waits."""
        if self.flow.lost:
            return
        if not self.busy and not self.flow.blocked:
            self._guarded(self._pump)
        self.flow.hold(len(self.reader.buffer) > INPUT_HELD)
        self.close_if_done()

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run session work; a bug costs this session (logged), never the reactor or the
        store's change poll that every service shares."""
        try:
            work()
        except Exception as error:
            self._failed(Failure(error))

    def _failed(self, failure: Failure) -> None:
        _log.failure("IMAP session error", failure)
        self.journal.event("error", f"{failure.type.__name__}: {failure.value}")
        self.transport.write(b"* BYE Internal server error\r\n")
        self._close()

    def _subscribe(self, topic: str, callback: Callable[[set[str]], None]) -> Callable[[], None]:
        def guarded(topics: set[str]) -> None:
            if self.busy:  # the worker owns the session: told after its tagged reply
                self.held.setdefault(callback, set()).update(topics)
                return
            self._tell(callback, topics)
        return self.lab.store.subscribe(topic, guarded)

    def _tell(self, callback: Callable[[set[str]], None], topics: set[str]) -> None:
        self._guarded(lambda: callback(topics))
        if self.session is not None and self.session.closing:  # BYE sent in IDLE
            self._close()

    def _pump(self) -> None:
        session = self.session
        assert session is not None
        while not session.closing:
            if self.busy or self.flow.blocked:
                return
            event = self.reader.next()
            if event is None:
                return
            if isinstance(event, Frame) and _worker_command(event.raw) \
                    and not session.quick(event.raw):
                self._in_worker(event.raw)
                return
            if self._handle(event):
                return
            self._settle()
        self._close()

    def _handle(self, event: Any) -> bool:
        """Run one event on the reactor. Its durable writes (a small APPEND or EXPUNGE,
        CREATE, ...) are fsync'd in a worker (store/db.py's later()), and what it answered
        is held until then: no client hears OK before its write is on disk, and the
        reactor does not wait for the disk (an fsync takes 20-60 ms while others write).
        Returns whether it waits for that fsync (busy, as with a worker's command)."""
        session = self.session
        assert session is not None
        db = self.lab.store.mail.db
        self.unsynced = []
        try:
            with db.later() as later:
                session.handle(event)
                session.flush()
        finally:
            output, self.unsynced = self.unsynced, None
        if not later.commit:
            self.transport.writeSequence(output)
            return False
        self.busy = True
        deferToThread(db.sync, later.commit).addBoth(self._synced, output)
        return True

    def _synced(self, result: Any, output: list[bytes]) -> None:
        if not isinstance(result, Failure) and not self.flow.lost:
            self.transport.writeSequence(output)
        self._worker_done(result)

    def _settle(self) -> None:
        """After an event: what the session now wants of the reader and the socket."""
        session = self.session
        assert session is not None
        session.flush()
        self.reader.raw_line = session.wants_line
        self.reader.authenticated = session.user is not None
        if session.wants_tls:
            session.wants_tls = False
            # Bytes pipelined after STARTTLS came in clear: never run them as commands.
            self.reader.buffer.clear()
            self.transport.startTLS(LabContextFactory(self.lab.tls))
            session.tls_started()

    def _in_worker(self, raw: bytes) -> None:
        session = self.session
        assert session is not None
        self.busy = True
        deferToThread(session.command, raw).addBoth(self._worker_done)

    def _worker_done(self, result: Any) -> None:
        self.busy = False
        held, self.held = self.held, {}
        session = self.session
        assert session is not None
        if self.flow.lost:
            session.close()
            return
        if isinstance(result, Failure):
            self._failed(result)
            return
        self._guarded(self._settle)
        for callback, topics in held.items():
            if not self.flow.lost:
                self._tell(callback, topics)
        self._go_on()

    def answered(self) -> bool:
        """For the half close (`printf ... | nc -N`): all it sent before is answered."""
        return not self.busy and not self.flow.blocked

    def _close(self) -> None:
        self.flow.close()

    def _autologout(self) -> None:
        self.bye("Autologout; idle for too long")

    def bye(self, text: str) -> None:
        """An untagged BYE (RFC 3501 7.1.5), then the close; a session in the middle of a
        command gets the close alone."""
        if self.session is not None and not self.busy:
            self.session.send(f"* BYE {text}")
            self.session.flush()
        self._close()

    def connectionLost(self, reason: Any = None) -> None:
        if self.factory is not None:
            self.factory.live.discard(self)
        self.flow.stopProducing()
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.session is not None and not self.busy:  # else closed when the worker ends
            self.session.close()
        if self.journal is not None:
            self.journal.close(reason.getErrorMessage() if reason is not None else "")


class IMAPFactory(Factory):
    def __init__(self, lab: Any, implicit_tls: bool) -> None:
        self.lab = lab
        self.settings = lab.settings("imap")
        self.implicit_tls = implicit_tls
        self.live: set[IMAPProtocol] = set()  # told BYE when the lab stops

    def buildProtocol(self, addr: Any) -> IMAPProtocol:
        protocol = IMAPProtocol(self.lab, self.settings, self.implicit_tls)
        protocol.factory = self
        self.live.add(protocol)
        return protocol


class IMAPService(MultiService):
    """IMAP's listeners; at stop every open session hears `* BYE [UNAVAILABLE]` before
    its connection closes, so a client reconnects later instead of reporting an error."""

    def __init__(self) -> None:
        super().__init__()
        self.factories: list[IMAPFactory] = []

    def stopService(self) -> Any:
        for factory in self.factories:
            for protocol in list(factory.live):
                protocol.bye("[UNAVAILABLE] Server shutting down")
        return super().stopService()


def make_service(lab: Any) -> MultiService:
    root = IMAPService()
    for listener in lab.listeners("imap"):
        if listener.active:
            factory = IMAPFactory(lab, listener.tls == "implicit")
            root.factories.append(factory)
            lab.tcp(listener, factory, busy=b"* BYE [UNAVAILABLE] Too many connections\r\n"
                    ).setServiceParent(root)
    return root
