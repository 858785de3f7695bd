"""The Twisted side of DHCP: UDP 67 on the configured interface only (and, with [dhcp]
ipv6_prefix, router advertisements and DHCPv6 there: server6.py), the store as the lease
database, and a sweep that forgets stale offers and ended leases' record rows (DNS never
waits for it: the store's live records leave ended leases out by themselves)."""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService
from twisted.internet import protocol, reactor
from twisted.internet.interfaces import IReactorSocket

from ..serving import Chore, describe
from . import NO_ROUTER, parse_range
from .core import DHCPCore, Held, Pool
from .interface import ipv4
from .server6 import IPv6Service

if TYPE_CHECKING:
    from ..lab import Lab

SWEEP_SECONDS = 5.0
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class StoreBackend:
    """The core's leases, in the lab store (they survive restarts; DNS reads them)."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def leases(self) -> list[Held]:
        return [Held(lease.mac, lease.ip, lease.hostname, lease.client_id, lease.expires, lease.state)
                for lease in self.net.leases(include_expired=True)]

    def bind(self, lease: Held, record: tuple[str, int] | None) -> None:
        self.net.bind_lease(lease.mac, lease.ip, lease.hostname, lease.client_id,
                            lease.expires, record)

    def end(self, mac: str, state: str) -> None:
        self.net.end_lease(mac, state)

    def decline(self, ip: str, until: float) -> None:
        self.net.decline(ip, until)


def make_pool(lab: Lab) -> Pool:
    s = lab.settings("dhcp")
    try:
        server, netmask = ipv4(s.interface)
    except OSError as error:
        raise RuntimeError(f"interface {s.interface}: no IPv4 address ({error.strerror or error})") from None
    network = ipaddress.IPv4Network(f"{server}/{netmask}", strict=False)
    if s.range:
        first, last = parse_range(s.range)
    else:
        base = int(network.network_address)
        top = int(network.broadcast_address) - 1
        first = str(ipaddress.IPv4Address(min(base + 100, top)))
        last = str(ipaddress.IPv4Address(min(base + 199, top)))
    for address in (first, last):
        if ipaddress.IPv4Address(address) not in network:
            raise RuntimeError(f"range {first}-{last} is not in {s.interface}'s network {network}")
    dns = tuple(s.dns_servers)
    if not dns:
        # the lab's name server, wherever the zone puts it (unless that is loopback:
        # then this host, which the clients can reach)
        nameservers = lab.config.hosts_with_role("nameserver")
        lab_dns = lab.config.host_names().get(nameservers[0]) if nameservers else None
        dns = (lab_dns,) if lab_dns and not ipaddress.ip_address(lab_dns).is_loopback else (server,)
    router = "" if s.router == NO_ROUTER else s.router or server
    return Pool(server=server, first=first, last=last, netmask=netmask, router=router, dns=dns,
                domain=s.domain or lab.config.lab.domain, lease_time=s.lease_time,
                reservations={k.lower(): v for k, v in s.reservations.items()})


class DHCPProtocol(protocol.DatagramProtocol):
    def __init__(self, service: DHCPService, core: DHCPCore) -> None:
        self.service, self.core = service, core

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        service = self.service
        session = service.lab.journal.open("dhcp", f"{addr[0]}:{addr[1]}")
        try:
            result = self.core.handle(data, addr[:2], time.time())
        except Exception as error:  # the store could not record the lease (a full disk...)
            session.event("error", f"{len(data)} bytes not answered: {describe(error)}")
            session.close()
            return  # the client retries; an unrecorded lease is never handed out
        session.packet(result.request.summary() if result.request else f"{len(data)} bytes")
        for reply in result.replies:
            # replies leave through the interface-bound socket: broadcasts must go out there
            port = service.sender if reply.to[0] == "255.255.255.255" else self.transport
            if port is None:
                break  # the port closed under us (the lab is stopping): nothing goes out
            try:
                port.write(reply.data, reply.to)
            except OSError as error:  # e.g. a unicast to an unreachable relay
                session.event("error", f"cannot send to {reply.to[0]}: {error}")
                continue
            session.reply(f"{reply.packet.summary()} to {reply.to[0]}:{reply.to[1]}")
        for fault in result.faults:
            session.event("fault", f"dhcp.{fault}")
        if result.note:
            session.event("dhcp", result.note)
        session.close()


class DHCPService(MultiService):
    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self.settings = lab.settings("dhcp")
        self.listener = lab.listener("dhcp", "dhcp")
        self.core: DHCPCore | None = None
        self.ports: list[Any] = []
        self.sender: Any = None
        self.v6: IPv6Service | None = None
        self.sweeper = Chore(lab, "dhcp sweep", self.sweep, SWEEP_SECONDS)

    def startService(self) -> None:
        from ..serving import StartError

        if not self.listener.active:
            return super().startService()
        try:
            pool = make_pool(self.lab)
        except RuntimeError as error:
            raise StartError(f"dhcp: cannot start: {error}") from None
        names = set(self.lab.config.host_names())
        faults = self.lab.faults
        core = self.core = DHCPCore(
            pool, StoreBackend(self.lab.store.net), dns_ttl=self.lab.config.lab.ttl,
            static_names=names,
            faults=lambda name, mac, host: faults.find(f"dhcp.{name}", mac, host) is not None)
        port = self.listener.port
        try:
            # Broadcasts from clients without an address: 0.0.0.0, tied to the interface.
            self.sender = self._listen(DHCPProtocol(self, core), "0.0.0.0", port,
                                       self.settings.interface)
            self.ports.append(self.sender)
            # Unicasts to our own address (renewals, relays, `protolab check` from this host,
            # which the kernel routes through lo, not through the bound interface).
            self.ports.append(self._listen(DHCPProtocol(self, core), pool.server, port, None))
        except OSError as error:
            for opened in self.ports:
                opened.stopListening()
            self.ports = []
            raise StartError(f"dhcp: cannot listen on udp {port} ({self.settings.interface}): "
                             f"{error.strerror or error}") from None
        if self.settings.ipv6_prefix:
            self._start_v6()
        self.sweeper.run()  # leases that ended while the lab was down (guarded, as later)
        self.sweeper.start()
        super().startService()

    def _start_v6(self) -> None:
        """Router advertisements and DHCPv6 on the same interface ([dhcp] ipv6_prefix)."""
        from ..serving import StartError

        v6 = IPv6Service(self.lab)
        try:
            v6.start(self.lab.listener("dhcp", "dhcpv6").port)
        except (RuntimeError, OSError) as error:
            for opened in self.ports:
                opened.stopListening()
            self.ports = []
            why = error.strerror or str(error) if isinstance(error, OSError) else str(error)
            if isinstance(error, PermissionError):
                why += " (a raw ICMPv6 socket for router advertisements needs root or CAP_NET_RAW)"
            raise StartError(f"dhcp: cannot start IPv6 on {self.settings.interface}: {why}") from None
        self.v6 = v6

    def _listen(self, handler: DHCPProtocol, address: str, port: int, device: str | None) -> Any:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            if device:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, device.encode())
            sock.bind((address, port))
            sock.setblocking(False)
            return IReactorSocket(reactor).adoptDatagramPort(
                sock.fileno(), socket.AF_INET, handler, maxPacketSize=8192)  # Twisted's default
        finally:
            sock.close()  # the reactor has its own duplicate of the descriptor

    def sweep(self) -> None:
        """Housekeeping only: memory (offers) and rows nobody reads (ended leases'
        records); nothing anyone sees changes with it."""
        if self.core is not None:
            self.core.expired(time.time())
        if self.v6 is not None:
            self.v6.sweep(time.time())
        self.lab.store.net.sweep()

    def stopService(self) -> Any:
        self.sweeper.stop()
        if self.v6 is not None:
            self.v6.stop()
            self.v6 = None
        for port in self.ports:
            port.stopListening()
        self.ports = []
        return super().stopService()


def make_service(lab: Lab) -> DHCPService:
    return DHCPService(lab)

