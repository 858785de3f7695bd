"""The Twisted side of IMAP: sockets, TLS, timers; everything else is in session.py.

Why not twisted.mail.imap4.IMAP4Server: it has no per-session sequence numbers, tells no
session about another's expunges, mislabels partial fetches (#5613), answers pipelined
commands BAD (#9282), desyncs on LITERAL+ and lacks UIDPLUS (#7336), MOVE and the rest
(see the shared library notes). Fixing that in subclasses would replace nearly every
method, so this adapter only frames bytes (parser.Reader) and feeds a sans-IO Session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from .parser import Bye, Continue, Frame, Line, Reader, Reject
from .session import Session

_log = Logger()


@implementer(IHalfCloseableProtocol)
class IMAPProtocol(Protocol):
    def __init__(self, lab: Any, settings: Any, implicit_tls: bool, clock: Any = reactor) -> None:
        self.lab = lab
        self.clock = clock  # IReactorTime: the autologout timer
        self.settings = settings
        self.implicit_tls = implicit_tls
        self.reader = Reader(settings.size_limit)
        self.session: Session | None = None
        self.journal: Any = None
        self.timer: Any = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        # Replies go out whole in one write; Nagle would hold the next one back for the
        # client's delayed ACK (40 ms on Linux) when a client pipelines.
        self.transport.setTcpNoDelay(True)
        peer = self.transport.getPeer()
        self.journal = self.lab.journal.open(
            "imap", f"{peer.host}:{peer.port}", "imaps" if self.implicit_tls else "imap")
        self.session = Session(
            self.lab.store.mail, self.lab.credentials, self.transport.write,
            journal=self.journal,
            plaintext_auth=self.settings.plaintext_auth, tls=self.implicit_tls,
            starttls=True, subscribe=self._subscribe)
        self.timer = self.clock.callLater(self.settings.autologout, self._autologout)
        self.session.greeting()
        self.session.flush()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self.timer is not None and self.timer.active():
            self.timer.reset(self.settings.autologout)
        self.reader.feed(data)
        self._guarded(self._pump)

    def _guarded(self, work: Callable[[], None]) -> None:
        """Run session work; a bug costs this session (logged), never the reactor or the
        store's change poll that every service shares."""
        try:
            work()
        except Exception as error:
            _log.failure("IMAP session error")
            self.journal.event("error", f"{type(error).__name__}: {error}")
            self.transport.write(b"* BYE Internal server error\r\n")
            self.transport.loseConnection()

    def _subscribe(self, topic: str, callback: Callable[[set[str]], None]) -> Callable[[], None]:
        def guarded(topics: set[str]) -> None:
            self._guarded(lambda: callback(topics))
            if self.session is not None and self.session.closing:  # BYE sent in IDLE
                self.transport.loseConnection()
        return self.lab.store.subscribe(topic, guarded)

    def _pump(self) -> None:
        session = self.session
        assert session is not None
        while not session.closing:
            event = self.reader.next()
            if event is None:
                return
            if isinstance(event, Frame):
                session.command(event.raw)
            elif isinstance(event, Line):
                session.line(event.raw)
            elif isinstance(event, Continue):
                session.send("+ Ready for literal data")
            elif isinstance(event, Reject):
                self.journal.command(f"{event.tag} (command rejected: {event.text})")
                session.send(f"{event.tag} {event.text}")
            elif isinstance(event, Bye):
                self.journal.command(f"(connection refused: {event.text})")
                session.send(f"* BYE {event.text}")
                session.closing = True
            session.flush()
            self.reader.raw_line = session.wants_line
            self.reader.authenticated = session.user is not None
            if session.wants_tls:
                session.wants_tls = False
                # Bytes pipelined after STARTTLS came in clear: never run them as commands.
                self.reader.buffer.clear()
                self.transport.startTLS(self.lab.tls.twisted())
                session.tls_started()
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:  # noqa: N802
        """The client half-closed (`printf ... | nc -N`): what it sent before is answered,
        and then the connection closes; without this Twisted drops the unsent answers."""
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:  # noqa: N802
        self.transport.loseConnection()

    def _autologout(self) -> None:
        if self.session is not None:
            self.session.send("* BYE Autologout; idle for too long")
            self.session.flush()
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        if self.session is not None:
            self.session.close()
        if self.journal is not None:
            self.journal.close(reason.getErrorMessage() if reason is not None else "")


class IMAPFactory(Factory):
    def __init__(self, lab: Any, implicit_tls: bool) -> None:
        self.lab = lab
        self.settings = lab.settings("imap")
        self.implicit_tls = implicit_tls

    def buildProtocol(self, addr: Any) -> IMAPProtocol:  # noqa: N802
        protocol = IMAPProtocol(self.lab, self.settings, self.implicit_tls)
        protocol.factory = self
        return protocol


def make_service(lab: Any) -> MultiService:
    root = MultiService()
    for listener in lab.listeners("imap"):
        if listener.active:
            factory = IMAPFactory(lab, listener.tls == "implicit")
            lab.tcp(listener, factory, busy=b"* BYE [UNAVAILABLE] Too many connections\r\n").setServiceParent(root)
    return root
