"""The Twisted side of the lab: services that listen, and the root service of a lab.

Kept apart from lab.py so that commands which serve nothing (`protolab user`, `init`)
never import Twisted.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet import task, tcp, udp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IOpenSSLServerConnectionCreator,
    ISSLTransport,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from .listeners import (
    WILDCARDS,
    Listener,
    addresses,
    client_address,
    endpoint,
    family,
    local_addresses,
    stack,
)

if TYPE_CHECKING:
    from OpenSSL import SSL

    from .lab import Lab
    from .tls import LabTLS

_log = Logger()

POLL_SECONDS = 0.2  # how often a process looks for other processes' changes (< 1 s promised)
FLUSH_SECONDS = 0.5  # journal buffer to disk and store
PRUNE_SECONDS = 300


class StartError(Exception):
    """A service that could not start, in one line naming the service and address."""


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


class Chore:
    """A periodic call that survives its own failure. A full disk or too many open files
    is transient: the call is retried at its usual pace, and the lab says once that it
    fails and once that it works again, never once per attempt."""

    def __init__(self, lab: Lab, name: str, call: Callable[[], Any], seconds: float) -> None:
        self.lab, self.name, self.call, self.seconds = lab, name, call, seconds
        self.failures = 0
        self.loop = task.LoopingCall(self.run)

    def run(self) -> None:
        try:
            self.call()
        except Exception as error:  # any failure: the next round may succeed
            self.failures += 1
            if self.failures == 1:
                self.lab.say(f"{self.name} failing ({describe(error)}); "
                             f"retrying every {self.seconds:g} s")
            return
        if self.failures:
            failures, self.failures = self.failures, 0
            self.lab.say(f"{self.name} works again after {failures} failed attempts")

    def start(self) -> None:
        self.loop.start(self.seconds, now=False)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class LabContextFactory:
    """What Twisted's listenSSL and transport.startTLS take: every TLS listener and
    STARTTLS shares the lab's one context (and so its key log). Each connection carries
    its TLS protocol as app data (as Twisted's own client connections do), so the context
    can tell whose handshake starts and serve a TLS fault's certificate to that client
    only (services/tls.py). Declaring the interfaces keeps Twisted from warning about a
    legacy factory. Here, not in tls.py, which must not import Twisted (commands that
    serve nothing import it)."""

    def __init__(self, tls: LabTLS) -> None:
        self._tls = tls

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        from OpenSSL import SSL

        connection = SSL.Connection(self._tls.context(), None)
        connection.set_app_data(protocol)
        return connection

    def getContext(self) -> SSL.Context:
        """What listenSSL's signature asks for; Twisted calls serverConnectionForTLS when
        a creator provides it, as this one does."""
        return self._tls.context()


class Refused(Protocol):
    """A connection over a limit: the protocol's busy line, then a close; the service
    never sees it. Over TCP the close is a half-close, and what the client sends
    meanwhile is read and dropped for a moment: closing with unread data would send a
    reset that can destroy the busy line before the client reads it (an HTTP client
    sends its request at once). At most MAX_LINGERING wait so at once, so a flood of
    refused connections cannot pile up descriptors."""

    LINGER_SECONDS = 10.0  # then a reset: a client that never closes gets no more time
    MAX_LINGERING = 64
    transport: ITCPTransport  # a TCP or TLS connection, set by Twisted before connectionMade

    def __init__(self, busy: bytes, limits: Limits) -> None:
        self.busy, self.limits = busy, limits
        self._linger: Any = None

    def connectionMade(self) -> None:
        from twisted.internet import reactor

        if self.busy:
            self.transport.write(self.busy)
        if ISSLTransport.providedBy(self.transport) or self.limits.lingering >= self.MAX_LINGERING:
            self.transport.loseConnection()  # TLS: close_notify after the handshake
            return
        self.transport.loseWriteConnection()
        self.limits.lingering += 1
        self._linger = reactor.callLater(self.LINGER_SECONDS, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        pass  # what a refused client sends is not the service's

    def connectionLost(self, reason: Any = None) -> None:
        if self._linger is not None:
            self.limits.lingering -= 1
            if self._linger.active():
                self._linger.cancel()


class Limits:
    """One service's connection counts, shared by all its listeners."""

    def __init__(self, total: int, per_peer: int) -> None:
        self.total, self.per_peer = total, per_peer
        self.open = 0
        self.peers: dict[str, int] = {}
        self.lingering = 0  # refused connections still being closed

    def admit(self, peer: str) -> bool:
        if (self.total and self.open >= self.total) or (
                self.per_peer and self.peers.get(peer, 0) >= self.per_peer):
            return False
        self.open += 1
        self.peers[peer] = self.peers.get(peer, 0) + 1
        return True

    def release(self, peer: str) -> None:
        self.open -= 1
        left = self.peers[peer] - 1
        if left:
            self.peers[peer] = left
        else:
            del self.peers[peer]


class LimitedFactory(ServerFactory):
    """A protocol's factory under the lab's connection limits. Not a
    policies.WrappingFactory: its ProtocolWrapper would stand between the protocol and
    its transport, and what looks at the transport (STARTTLS marking it ISSLTransport,
    HTTP's sendfile path wanting the real TCP transport) would see the wrapper. Here the
    protocol keeps its transport; only its connectionLost is chained, to count it out.
    (LimitConnectionsByPeer also only drops, silently, and counts per factory.)"""

    def __init__(self, factory: Any, limits: Limits, busy: bytes) -> None:
        self.wrapped, self.limits, self.busy = factory, limits, busy

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> Any:
        peer = getattr(addr, "host", str(addr))
        if not self.limits.admit(peer):
            return Refused(self.busy, self.limits)
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is None:  # the wrapped factory refused it itself
            self.limits.release(peer)
            return None
        lost, release = protocol.connectionLost, self.limits.release

        def connection_lost(reason: Any) -> Any:
            release(peer)
            return lost(reason)

        protocol.connectionLost = connection_lost
        return protocol


def _unmapped(address: tuple[Any, ...]) -> tuple[Any, ...]:
    """A socket address with a v4-mapped IPv6 host as the IPv4 (host, port) it is."""
    host = client_address(address[0])
    return (host, address[1]) if host != address[0] else address


def _address(address: tuple[Any, ...]) -> IPv4Address | IPv6Address:
    kind = IPv4Address if len(address) == 2 else IPv6Address
    return kind("TCP", *address)


class _Connection(tcp.Server):
    """A connection accepted by a DualStackPort: its addresses in the lab's one text form
    (an IPv4 client of the dual-stack socket is IPv4 to every protocol)."""

    def __init__(self, sock: socket.socket, protocol: Any, client: tuple[Any, ...],
                 server: Any, sessionno: int, reactor: Any) -> None:
        super().__init__(sock, protocol, _unmapped(client), server, sessionno, reactor)

    def getHost(self) -> IPv4Address | IPv6Address:
        # Twisted's own builds the address with the type the peer's tuple had, which the
        # unmapped peer changed; _getsockname is what it reads (scope ids included)
        return _address(_unmapped(tcp._getsockname(self.socket)))


class DualStackPort(tcp.Port):
    """Twisted's TCP port, where IPv4 and IPv6 clients of one wildcard socket enter the
    lab: IPV6_V6ONLY set as listeners.addresses() decided (off: one socket for both
    families; on: the IPv4 socket beside it takes the same port), and v4-mapped client
    addresses turned into IPv4 before any protocol, limit, fault or journal sees them."""

    transport = _Connection

    def createInternetSocket(self) -> socket.socket:
        sock: socket.socket = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            _v6only(sock, not (self.interface == "::" and stack().dual))
        return sock

    def _buildAddr(self, address: tuple[Any, ...]) -> IPv4Address | IPv6Address:
        return _address(_unmapped(address))


class UDPPort(udp.Port):
    """Twisted's UDP port; an IPv6 one takes IPv6 only, so the wildcard :: has an IPv4
    socket beside it (listeners.addresses) and no datagram carries a mapped address."""

    def createInternetSocket(self) -> socket.socket:
        sock: socket.socket = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET6:
            _v6only(sock, True)
        return sock


def _v6only(sock: socket.socket, only: bool) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(only))
    except OSError:
        pass  # the stack's own default then (listeners.stack() saw it refuse)


def listening_socket(address: str, port: int, one_socket: bool = True) -> socket.socket:
    """A listening TCP socket for the services that accept on their own (pyftpdlib,
    impacket): IPV6_V6ONLY as listeners.addresses(bind, one_socket) decided."""
    sock = socket.socket(socket.AF_INET6 if family(address) == 6 else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            _v6only(sock, not (address == "::" and one_socket and stack().dual))
        sock.bind((address, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


def listen_tcp(port: int, factory: Any, interface: str,
               context: IOpenSSLContextFactory | None = None) -> IListeningPort:
    """reactor.listenTCP (listenSSL with `context`) on a DualStackPort."""
    from twisted.internet import reactor
    from twisted.protocols.tls import TLSMemoryBIOFactory

    if context is not None:
        factory = TLSMemoryBIOFactory(context, False, factory)
    listening = DualStackPort(port, factory, interface=interface, reactor=reactor)
    listening.startListening()
    return listening


class PortGroup:
    """Several listening ports that stop as one (a socket per family, or a listener
    bound address by address)."""

    def __init__(self, ports: list[IListeningPort]) -> None:
        self.ports = ports

    def stopListening(self) -> Deferred:
        return DeferredList([maybeDeferred(p.stopListening) for p in self.ports])


class ListenerService(Service):
    """Listens when started, on every socket the lab's bind address means for it
    (listeners.addresses: the wildcard :: is IPv4 and IPv6). A port it cannot have is one
    line naming it: a StartError under --strict, else a failure the lab records (the
    table, check and the portal show it) while the other services serve. A listener
    marked `around` whose wildcard address is taken (systemd-resolved holds
    127.0.0.53:53) binds each local address of that wildcard's families instead, as
    dnsmasq's bind-dynamic does."""

    def __init__(self, lab: Lab, listener: Listener, start: Callable[[str], IListeningPort],
                 interface: str | None = None) -> None:
        self.lab, self.listener, self._start = lab, listener, start
        self.interface = lab.bind if interface is None else interface
        self.port: IListeningPort | PortGroup | None = None

    def startService(self) -> None:
        super().startService()
        ports: list[IListeningPort] = []
        bound: list[str] = []
        taken: list[str] = []
        for address in addresses(self.interface, self.listener.transport == "tcp"):
            try:
                ports.append(self._start(address))
                bound.append(address)
                continue
            except CannotListenError as error:
                first = error
            around = self._bind_around(address) if (
                self.listener.around and address in WILDCARDS
                and getattr(first.socketError, "errno", None) == errno.EADDRINUSE) else []
            if not around:
                PortGroup(ports).stopListening()
                self._fail(self._line(address, first))
                return
            taken.append(endpoint(address, self.listener.port))
            for item, where in around:
                ports.append(item)
                bound.append(where)
        self.port = ports[0] if len(ports) == 1 else PortGroup(ports)
        self.lab.bound(self.listener, bound)
        if taken:
            self.lab.note(self.listener, f"{' '.join(taken)} is taken: "
                                         f"bound to {' '.join(bound)}")

    def _bind_around(self, wildcard: str) -> list[tuple[IListeningPort, str]]:
        versions = [4, 6] if wildcard == "::" and len(
            addresses(wildcard, self.listener.transport == "tcp")) == 1 else [family(wildcard)]
        ports = []
        for version in versions:
            for address in local_addresses(version):
                try:
                    ports.append((self._start(address), address))
                except CannotListenError:
                    continue  # this address is the one taken (or it went away)
        return ports

    def _fail(self, line: str) -> None:
        if self.lab.strict:
            raise StartError(line)
        self.lab.fail(self.listener, line)

    def _line(self, interface: str, error: CannotListenError) -> str:
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        return (f"{self.listener.service}: cannot listen on {self.listener.transport} "
                f"{endpoint(interface, self.listener.port)} ({self.listener.name}): {reason}")

    def stopService(self) -> Deferred | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return maybeDeferred(port.stopListening)
        return None


class LabService(MultiService):
    """Starts every protocol that can start (under --strict: all or none); polls the
    store for other processes' changes and flushes the journal, in loops that survive
    their own failures."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self._chores = [Chore(lab, "store poll", lab.store.poll, POLL_SECONDS),
                        Chore(lab, "journal flush", lab.journal.flush, FLUSH_SECONDS),
                        Chore(lab, "store prune", lab.store.prune, PRUNE_SECONDS)]

    def startService(self) -> None:
        started: list[Any] = []
        for service in list(self):  # a copy: a service that fails is removed on the way
            try:
                service.startService()
            except Exception as error:  # a protocol's own failure (a StartError names it)
                line = str(error) if isinstance(error, StartError) else \
                    f"{service.name}: cannot start: {describe(error)}"
                _stop_quietly(service)
                service.disownServiceParent()  # stopped once here, not again at SIGTERM
                if self.lab.strict:
                    self._stop_all(started)
                    raise StartError(line) from error
                self.lab.fail_service(service.name, line)
                continue
            started.append(service)
        self.running = 1
        for chore in self._chores:
            chore.start()
        # Upload temporaries a kill -9 left behind: a walk of every home, in a thread so
        # that start-up does not wait for it.
        from twisted.internet.threads import deferToThread

        deferToThread(self.lab.store.files.sweep_temporaries).addErrback(
            lambda failure: _log.failure("sweeping upload temporaries failed", failure))

    @staticmethod
    def _stop_all(services: list[Any]) -> None:
        for service in reversed(services):
            _stop_quietly(service)

    def stopService(self) -> Deferred:
        for chore in self._chores:
            chore.stop()
        stopped = super().stopService() or DeferredList([])

        def flush(result: Any) -> Any:
            journal = self.lab.journal
            if not journal.flush_quietly():  # the last chance: say what is lost
                print(f"protolab: journal: {journal.waiting} events could not be written "
                      "before exit", file=sys.stderr, flush=True)
            return result

        return stopped.addBoth(flush)


def _stop_quietly(service: Any) -> None:
    """Stop what a service that failed half-way had started (its stop may trip over what
    it never made: that failure is not news)."""
    maybeDeferred(service.stopService).addErrback(lambda _: None)
