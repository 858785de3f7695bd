"""The Twisted side of IPv6 on the DHCP interface: router advertisements on a raw ICMPv6
socket and DHCPv6 on UDP 547, both tied to the interface, both read by the reactor
(addReader), the leases in the store next to DHCPv4's.

Plain sockets rather than Twisted's UDP port: replies go to link-local addresses, which
need the interface's index as scope, and ICMPv6 has no Twisted transport at all.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.interfaces import IDelayedCall, IReactorFDSet, IReactorTime, IReadDescriptor
from twisted.logger import Logger
from twisted.python import failure
from zope.interface import implementer

from ..serving import describe
from . import ra
from .core6 import CLIENT_PORT, DHCPv6Core, Held6, Pool6, duid_ll
from .interface import ipv6, mac

if TYPE_CHECKING:
    from ..lab import Lab

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)
ICMP6_FILTER = 1  # <netinet/icmp6.h>: a socket option of level IPPROTO_ICMPV6
ALL_DHCP = "ff02::1:2"  # All_DHCP_Relay_Agents_and_Servers (RFC 8415 7.1)
ALL_ROUTERS = "ff02::2"
READ_BUDGET = 64  # datagrams read per wake-up: a flood cannot hold the reactor
logger = Logger()


class StoreBackend6:
    """core6's leases, in the lab store (they survive restarts; DNS reads their AAAA)."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def leases(self) -> list[Held6]:
        return [Held6(lease.duid, lease.iaid, lease.ip, lease.hostname, lease.expires, lease.state)
                for lease in self.net.leases6(include_expired=True)]

    def bind(self, lease: Held6, record: tuple[str, int] | None) -> None:
        self.net.bind_lease6(lease.duid, lease.iaid, lease.ip, lease.hostname, lease.expires,
                             record)

    def end(self, duid: str, iaid: int, state: str) -> None:
        self.net.end_lease6(duid, iaid, state)

    def decline(self, ip: str, until: float) -> None:
        self.net.decline6(ip, until)


def own_address(interface: str, prefix: str) -> str:
    """The interface's address in `prefix`: never leased, and the hosts' DNS server."""
    network = ipaddress.IPv6Network(prefix)
    for address, _ in ipv6(interface):
        if ipaddress.IPv6Address(address) in network:
            return address
    raise RuntimeError(f"interface {interface} has no address in {prefix} "
                       f"(ip -6 addr add {network.network_address}1/64 dev {interface})")


@implementer(IReadDescriptor)
class Reader:
    """A non-blocking datagram socket the reactor watches; `handle(data, source)` per datagram."""

    def __init__(self, sock: socket.socket, handle: Callable[[bytes, tuple[Any, ...]], None],
                 name: str) -> None:
        self.sock, self.handle, self.name = sock, handle, name

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return self.name

    def doRead(self) -> None:
        for _ in range(READ_BUDGET):
            try:
                data, source = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EINTR, errno.ECONNREFUSED, errno.ENETUNREACH):
                    continue
                logger.error("{name}: cannot read: {error}", name=self.name, error=error)
                return
            try:
                self.handle(data, source)
            except Exception:  # a bug with one datagram: logged; the socket goes on serving
                # (raised from doRead, the reactor would drop the socket for good)
                logger.failure("{name}: a datagram from {source} not handled", name=self.name,
                               source=source)

    def connectionLost(self, reason: failure.Failure) -> None:
        self.sock.close()


class IPv6Service:
    """RA and DHCPv6 on one interface; started and stopped by the DHCP service."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.settings = s = lab.settings("dhcp")
        self.interface = s.interface
        self.readers: list[Reader] = []
        self.timer: IDelayedCall | None = None
        self.core: DHCPv6Core | None = None
        self.ra: ra.Advertisement | None = None
        self.schedule: ra.Schedule | None = None
        self.ra_sock: socket.socket | None = None
        self.dhcp_sock: socket.socket | None = None

    # -- start and stop -------------------------------------------------------------------

    def start(self, port: int) -> None:
        """Raises RuntimeError (the interface lacks an address in the prefix) or OSError."""
        s = self.settings
        server = own_address(self.interface, s.ipv6_prefix)
        domain = s.domain or self.lab.config.lab.domain
        hw = mac(self.interface)
        self.index = socket.if_nametoindex(self.interface)
        pool = Pool6(prefix=s.ipv6_prefix, server_duid=duid_ll(hw or b"\x00" * 6), dns=(server,),
                     domain=domain, lease_time=s.lease_time, server=server)
        self.core = DHCPv6Core(pool, StoreBackend6(self.lab.store.net),
                               dns_ttl=self.lab.config.lab.ttl,
                               static_names=set(self.lab.config.host_names()))
        # the v4 rule: "none" means this server routes nowhere, so it is no default router
        lifetime = 0 if s.router == "none" else ra.ROUTER_LIFETIME
        self.ra = ra.Advertisement(prefix=s.ipv6_prefix, managed=s.ra_managed, other=s.ra_other,
                                   mac=hw, dns=(server,), domains=(domain,),
                                   router_lifetime=lifetime)
        try:
            self.dhcp_sock = self._dhcp_socket(port)
            self.ra_sock = self._ra_socket()
        except OSError:
            self.stop()
            raise
        fdset = IReactorFDSet(reactor)
        for sock, handle, name in ((self.dhcp_sock, self._dhcp, "dhcpv6"),
                                   (self.ra_sock, self._solicitation, "ra")):
            reader = Reader(sock, handle, name)
            self.readers.append(reader)
            fdset.addReader(reader)
        self.schedule = ra.Schedule(time.monotonic())
        self._tick()

    def _dhcp_socket(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())
            sock.bind(("::", port))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, _group(ALL_DHCP, self.index))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def _ra_socket(self) -> socket.socket:
        """Raw ICMPv6 (root, or CAP_NET_RAW): router solicitations in, advertisements out with
        hop limit 255 (RFC 4861 6.1.2: hosts drop any other), from the link-local address
        the kernel picks for a link-local destination on this interface."""
        sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.interface.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
            # ICMP6_FILTER: a bit set blocks that type; only solicitations get through
            blocked = [0xFFFFFFFF] * 8
            blocked[ra.ROUTER_SOLICITATION >> 5] &= ~(1 << (ra.ROUTER_SOLICITATION & 31))
            sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("=8I", *blocked))
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            _group(ALL_ROUTERS, self.index))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def stop(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        fdset = IReactorFDSet(reactor)
        for reader in self.readers:
            fdset.removeReader(reader)
        self.readers = []
        for sock in (self.dhcp_sock, self.ra_sock):
            if sock is not None:
                sock.close()
        self.dhcp_sock = self.ra_sock = None

    def sweep(self, now: float) -> None:
        if self.core is not None:
            self.core.expired(now)

    # -- router advertisements ------------------------------------------------------------

    def _tick(self) -> None:
        """Unsolicited RAs on the schedule; reschedules itself."""
        assert self.schedule is not None
        now = time.monotonic()
        if self.schedule.due(now):
            self._advertise("ff02::1", "unsolicited")
            self.schedule.multicast_sent(now)
        delay = max(0.05, self.schedule.next_at - time.monotonic())
        self.timer = IReactorTime(reactor).callLater(delay, self._tick)

    def _solicitation(self, data: bytes, source: tuple[Any, ...]) -> None:
        assert self.schedule is not None
        address = str(source[0]).split("%")[0]
        if not ra.is_solicitation(data):
            return  # the filter lets only solicitations through; a malformed one: nothing
        session = self.lab.journal.open("dhcp", f"[{address}]")
        session.packet(f"ICMPv6 router solicitation from {address}")
        now = time.monotonic()
        to = self.schedule.solicited(address, now)
        if to is None:
            session.event("dhcp", "answered by the next multicast advertisement")
        else:
            self._advertise(to, "solicited", session)
            if to == "ff02::1":
                self.schedule.multicast_sent(now)
        session.close()

    def _advertise(self, to: str, why: str, session: Any = None) -> None:
        assert self.ra is not None and self.ra_sock is not None
        own = session or self.lab.journal.open("dhcp", f"[{to}]")
        try:
            self.ra_sock.sendto(ra.pack(self.ra), (to, 0, 0, self.index))
        except OSError as error:  # no link-local address yet (DAD), or the link went down
            own.event("error", f"router advertisement to {to} not sent: {describe(error)}")
        else:
            flags = "".join(f for f, on in (("M", self.ra.managed), ("O", self.ra.other)) if on)
            own.reply(f"ICMPv6 router advertisement ({why}) to {to}: prefix {self.ra.prefix}"
                      f"{', flags ' + flags if flags else ''}, RDNSS {' '.join(self.ra.dns)}, "
                      f"DNSSL {' '.join(self.ra.domains)}")
        if session is None:
            own.close()

    # -- DHCPv6 ---------------------------------------------------------------------------

    def _dhcp(self, data: bytes, source: tuple[Any, ...]) -> None:
        assert self.core is not None and self.dhcp_sock is not None
        address = str(source[0]).split("%")[0]
        session = self.lab.journal.open("dhcp", f"[{address}]:{source[1]}")
        try:
            result = self.core.handle(data, time.time())
        except Exception as error:  # the store could not record the lease (a full disk...)
            session.event("error", f"{len(data)} bytes not answered: {describe(error)}")
            session.close()
            return  # the client retries; an unrecorded lease is never handed out
        session.packet(result.request.summary() if result.request else f"{len(data)} bytes")
        if result.reply is not None:
            # to the client's port (546 unless a tool asks from its own), same scope
            to = (address, source[1] or CLIENT_PORT, 0, source[3] if len(source) > 3 else self.index)
            try:
                self.dhcp_sock.sendto(result.data, to)
            except OSError as error:
                session.event("error", f"cannot send to {address}: {describe(error)}")
            else:
                session.reply(f"{result.reply.summary()} to [{address}]:{to[1]}")
        if result.note:
            session.event("dhcp", result.note)
        session.close()


def _group(address: str, index: int) -> bytes:
    """struct ipv6_mreq: the group, then the interface index."""
    return socket.inet_pton(socket.AF_INET6, address) + struct.pack("@I", index)
