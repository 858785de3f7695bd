"""A lingering close: the answer sent, our side shut, what the client still sends read and
dropped for a moment. Closing with the client's bytes still arriving (a request body, a
frame flood) makes the kernel send a reset, which can destroy the answer - a 413, an HTTP/2
GOAWAY - before the client reads it (nginx's lingering_close, for the same reason)."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

LINGER_SECONDS = 5  # how long what still comes is read and dropped
LINGER_BYTES = 64 * 1024 * 1024  # and how much of it, at most


class Linger:
    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.discarded = 0
        self._timer: Any = None

    @property
    def possible(self) -> bool:
        """Whether the transport can shut our side only (TCP can, TLS cannot)."""
        return hasattr(self.transport, "loseWriteConnection")

    def start(self) -> None:
        """Shut our side and linger (after unregistering any producer: with one
        registered, Twisted resumes it instead of shutting)."""
        self.transport.loseWriteConnection()
        self._timer = reactor.callLater(LINGER_SECONDS, self.transport.loseConnection)

    def drop(self, data: bytes) -> None:
        self.discarded += len(data)
        if self.discarded > LINGER_BYTES:
            self.transport.loseConnection()

    def cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
