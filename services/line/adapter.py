"""The Twisted side of a line Conversation (conversation.py): bytes, TLS, timeouts, the
journal; backpressure and the half close as services/flow.py has them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from ..flow import Flow, HalfClose
from ..journal import Session
from .conversation import Conversation

# Makes the conversation of one connection: (journal session, secure already, peer address).
Maker = Callable[[Session, bool, str], Conversation]


class NoCertificate:
    """A TLS server context without a certificate, as a server whose certificate could not
    be loaded has: every handshake ends in a handshake_failure alert (the STARTTLS faults)."""

    def getContext(self) -> SSL.Context:
        return SSL.Context(SSL.TLS_SERVER_METHOD)


class LineFactory(Factory):
    def __init__(self, service: str, journal: Any, tls: Any, make: Maker, listener: str,
                 implicit_tls: bool) -> None:
        self.service, self.journal, self.tls, self.make = service, journal, tls, make
        self.listener, self.implicit_tls = listener, implicit_tls

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = LineProtocol()
        protocol.factory = self
        return protocol


class LineProtocol(HalfClose, Protocol, TimeoutMixin):
    """Reads no further while a command waits (a delivery), nor while the client does not
    read its replies (the transport's write buffer is full: pipelined RETRs), so what one
    connection holds stays bounded: a line, a write buffer, one command's reply."""

    log = Logger()
    factory: LineFactory
    # A TCP or TLS transport; Twisted's zope interfaces (ITransport | None) do not type-check.
    transport: Any

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        host = getattr(peer, "host", "?")
        self.session = self.factory.journal.open(
            self.factory.service, f"{host}:{getattr(peer, 'port', 0)}", self.factory.listener)
        self.buffer = b""
        self.discarding = False  # inside an over-long line, dropping bytes up to its end
        self.processing = False
        self.timers: list[Any] = []  # the conversation's later() calls, pending
        self.core = self.factory.make(self.session, self.factory.implicit_tls, host)
        self.core.wake = self._wake
        self.flow = Flow(self.transport, self._wake)
        self.setTimeout(self.core.idle_timeout)
        self.core.greet()
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.buffer = self.buffer + data if self.buffer else data
        self._process()

    def _process(self) -> None:
        core = self.core
        buffer, pos = self.buffer, 0
        self.processing = True
        while not core.closing and not core.waiting and not self.flow.blocked:
            if core.text_mode and not self.discarding:
                taken = self._call(core.text, buffer[pos:] if pos else buffer)
                if taken:
                    pos += taken
                    continue
            end = buffer.find(b"\n", pos)
            if end < 0:
                if len(buffer) - pos > core.line_limit:
                    self.discarding = True  # keep memory bounded: drop what we cannot use
                    pos = len(buffer)
                break
            line = buffer[pos:end]
            pos = end + 1
            if self.discarding:
                self.discarding = False
                self._call(core.too_long)
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) + 2 > core.line_limit:
                self._call(core.too_long)
            else:
                self._call(core.receive, line)
            if core.out:
                self._flush()  # may tell the flow that the client is not reading
            if core.want_tls:
                # Whatever the client sent after STARTTLS/STLS in clear is dropped, never
                # read as if it came over TLS (the command injection of CVE-2011-0411).
                pos = len(buffer)
                self._flush()
                self.transport.startTLS(NoCertificate() if core.broken_tls else self.factory.tls)
                core.tls_started()
                break
        self.processing = False
        self.buffer = buffer[pos:]
        self._flush()
        # Hold further pipelined input in the kernel while a command waits or replies pile up.
        self.flow.hold((core.waiting or self.flow.blocked) and not core.closing)
        self.close_if_done()

    def _wake(self) -> None:
        """The conversation finished waiting (a delivery is on disk), or the client reads
        its replies again: answer, read on."""
        if self.processing:
            return  # woken from inside _process (no wait after all): its loop goes on
        self._process()

    def answered(self) -> bool:
        """Every complete line received is handled (what is left has no line end, and
        after the client's FIN never will)."""
        return not self.core.waiting and not self.flow.blocked

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        before = len(self.core.out)
        try:
            return method(*args)
        except Exception:
            self.log.failure("{service} session {session} failed", service=self.factory.service,
                             session=self.session.id)
            del self.core.out[before:]  # half a reply of the failed command, if any
            self.core.crashed()
            return 0

    def _flush(self) -> None:
        data = self.core.take()
        if data:
            self.transport.write(data)
        while self.core.timers:
            seconds, call = self.core.timers.pop(0)
            self.timers = [t for t in self.timers if t.active()]
            self.timers.append(reactor.callLater(seconds, self._timer, call))
        if self.core.closing:
            self.setTimeout(None)
            self.flow.close()

    def _timer(self, call: Callable[[], None]) -> None:
        self._call(call)
        self._process()

    def timeoutConnection(self) -> None:
        self.core.timed_out()
        self._flush()
        self.flow.close()

    def connectionLost(self, reason: Any = None) -> None:
        self.setTimeout(None)
        for timer in getattr(self, "timers", []):
            if timer.active():
                timer.cancel()
        if hasattr(self, "core"):
            self.core.wake = lambda: None  # a delivery finishing later has no one to tell
        if hasattr(self, "session"):
            self.session.close(getattr(reason, "getErrorMessage", lambda: "")())
