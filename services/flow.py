"""Flow control of one TCP connection: the rules every stream protocol of the lab keeps.

- Write side (Flow): the protocol's Flow is its transport's streaming producer. The
  transport pauses it while its write buffer is full (the client does not read its
  answers) and resumes it once drained. While `blocked`, a protocol runs no further
  command; output made outside the reactor thread (IMAP's workers) waits on `drained()`;
  the `resumed` callback goes on with what was held back. What one connection costs the
  server stays bounded: its unread input waits in the kernel, not in our memory.
- Read side (Flow.hold): stop reading the socket, so TCP holds the client back, while a
  command waits (a durable delivery) or too much input is buffered.
- Close (Flow.close): once what was written is sent, and the producer goes first:
  Twisted's TLS (TLSMemoryBIOProtocol.loseConnection) never sends its close_notify nor
  closes while a producer is registered, so a session hung until the client's timeout.
- Half close (HalfClose): a client that shuts its sending side after its commands
  (`printf ... | nc -N`, shutdown(SHUT_WR)) gets every complete one answered, then the
  close. A protocol that is not IHalfCloseableProtocol gets the FIN as connectionLost,
  and Twisted drops the answers still unsent.

Used by the line protocols (services/line/adapter.py), IMAP (imap/server.py) and, for the
half close, HTTP (http/channel.py, whose HTTPChannel is its own producer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from zope.interface import implementer


@implementer(IPushProducer)
class Flow:
    """Registers itself as `transport`'s streaming producer; `resumed` is called when the
    client reads again."""

    def __init__(self, transport: Any, resumed: Callable[[], None]) -> None:
        self.transport = transport
        self._resumed = resumed
        self.blocked = False  # the write buffer is full (or TLS is handshaking)
        self.lost = False  # the connection is gone: nothing more goes out
        self.holding = False  # the socket is not read
        self._waiters: list[Deferred[None]] = []
        self._registered = True
        transport.registerProducer(self, True)

    # --- IPushProducer: the transport's write buffer says whether the client reads

    def pauseProducing(self) -> None:
        # Reading goes on: TLS pauses its producer during the handshake, which needs reads.
        self.blocked = True

    def resumeProducing(self) -> None:
        self.blocked = False
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._resumed()

    def stopProducing(self) -> None:
        self.lost = self.blocked = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(ConnectionDone("the client went away"))

    # --- what the protocol asks

    def drained(self) -> Deferred[None] | None:
        """None while the client reads; else a Deferred that fires once it reads again
        (and fails with ConnectionDone if it goes away first)."""
        if not self.blocked:
            return None
        waiter: Deferred[None] = Deferred()
        if self.lost:
            waiter.errback(ConnectionDone("the client went away"))
        else:
            self._waiters.append(waiter)
        return waiter

    def hold(self, hold: bool) -> None:
        """Read the socket, or not (what the client sends meanwhile waits in the kernel)."""
        if hold != self.holding:
            self.holding = hold
            if hold:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def close(self) -> None:
        """Close once what was written is sent (unregistering the producer first)."""
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class HalfClose:
    """Mixed into a Protocol (before it): the half-close rule. The protocol says when it
    has `answered()` all it received and calls `close_if_done()` whenever that may have
    become true; `close_when_sent()` is its Flow's close unless it says otherwise."""

    read_closed = False  # the client's FIN came: it will send nothing more
    flow: Flow

    def readConnectionLost(self) -> None:
        self.read_closed = True
        self.close_if_done()

    def writeConnectionLost(self) -> None:
        """Our own side was shut (HTTP's lingering close): reading goes on until the end."""

    def close_if_done(self) -> None:
        if self.read_closed and self.answered():
            self.close_when_sent()

    def answered(self) -> bool:
        raise NotImplementedError

    def close_when_sent(self) -> None:
        self.flow.close()
