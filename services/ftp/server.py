"""pyftpdlib driven by the lab's one Twisted reactor.

pyftpdlib has its own poller (an IOLoop over epoll). Its epoll descriptor is itself
readable whenever one of its sockets is ready, so the reactor watches that one descriptor
and, when it fires, lets the IOLoop handle what is ready without blocking. The IOLoop's
scheduler (idle timeouts, delayed 530s) runs after every poll and on a reactor timer set
for its next deadline. No thread: FTP commands run in the reactor like every other service.
"""

from __future__ import annotations

import logging
from typing import Any

from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.interfaces import IReadDescriptor
from zope.interface import implementer

from ..listeners import addresses, endpoint
from ..serving import StartError, listening_socket
from .auth import StoreAuthorizer
from .handler import make_handler

IDLE_TICK = 1.0  # seconds between scheduler runs when pyftpdlib asks for none sooner


@implementer(IReadDescriptor)
class _Poller:
    """The IOLoop's epoll descriptor, as the reactor sees it."""

    def __init__(self, ioloop: Any) -> None:
        self.ioloop = ioloop
        self._timer: Any = None

    def fileno(self) -> int:
        return self.ioloop.fileno()

    def logPrefix(self) -> str:
        return "ftp"

    def doRead(self) -> None:
        try:
            self.ioloop.poll(0)
        finally:  # a fault in one handler (logged by the reactor) must not stop the timers
            self.tick()

    def tick(self) -> None:
        """Run due scheduled calls and set the timer for the next one. The timer is set
        again whatever the calls raised: if the chain broke, every FTP timeout (idle
        sessions, stalled data channels) would stop for good."""
        delay = IDLE_TICK
        try:
            next_due = self.ioloop.sched.poll()
            delay = IDLE_TICK if next_due is None else min(next_due, IDLE_TICK)
        finally:
            if self._timer is not None and self._timer.active():
                self._timer.reset(delay)
            else:
                self._timer = reactor.callLater(delay, self.tick)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def connectionLost(self, reason: Any) -> None:
        self.stop()


class _LimitedServer(FTPServer):
    """max_cons counts control connections. pyftpdlib counts every socket of the IOLoop
    (listeners, data channels, passive acceptors) against it, so the limit meant fewer
    sessions than configured, and fewer still while transfers ran."""

    def _accept_new_cons(self) -> bool:
        return len(self.ip_map) <= self.max_cons


class FTPService(Service):
    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.ioloop: Any = None
        self.poller: _Poller | None = None

    def startService(self) -> None:
        lab, settings = self.lab, self.lab.settings("ftp")
        # What pyftpdlib logs below ERROR is about sessions (connections at INFO; clients'
        # mistakes such as "Command too long." at WARNING, sent as replies the journal
        # has); stderr is for server faults, which it logs at ERROR and above (tracebacks,
        # "unhandled exception in instance ...").
        logging.getLogger("pyftpdlib").setLevel(logging.ERROR)
        authorizer = StoreAuthorizer(lab.store, lab.credentials, settings.anonymous)
        self.ioloop = IOLoop.factory()
        connections: list[str] = []  # one per control connection, of FTP and FTPS alike
        try:
            for listener in lab.listeners("ftp"):
                if not listener.active:
                    continue
                handler = make_handler(lab, settings, authorizer, listener.tls == "implicit")
                # a socket per family: pyftpdlib compares data connections' addresses with
                # the control connection's as text, which a v4-mapped address would fail
                bound = addresses(lab.bind, one_socket=False)
                for address in bound:
                    try:
                        sock = listening_socket(address, listener.port, one_socket=False)
                    except OSError as error:
                        raise StartError(
                            f"ftp: cannot listen on tcp {endpoint(address, listener.port)} "
                            f"({listener.name}): {error.strerror or error}") from None
                    server = _LimitedServer(sock, handler, ioloop=self.ioloop)
                    server.ip_map = connections
                    server.max_cons = settings.max_connections
                    server.max_cons_per_ip = settings.max_connections_per_ip
                lab.bound(listener, bound)
        except BaseException:
            self.ioloop.close()
            raise
        self.poller = _Poller(self.ioloop)
        reactor.addReader(self.poller)
        self.poller.tick()
        super().startService()

    def stopService(self) -> None:
        super().stopService()
        if self.poller is not None:
            reactor.removeReader(self.poller)
            self.poller.stop()
            self.poller = None
        if self.ioloop is not None:
            self.ioloop.close()  # every session, data channel and listening socket
            self.ioloop = None
