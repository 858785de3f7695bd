"""The DHCP server's logic (RFC 2131): messages in, replies and lease changes out. Sans-IO.

The core keeps every lease in memory (one DHCP server owns a data directory: the store's
lock says so) and writes each change through to a Backend before the reply that depends
on it is sent, so a restart finds the same leases. Offers are held in memory only, for
OFFER_SECONDS: an address offered to one client is not offered to another meanwhile.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from . import codec
from .codec import ACK, DECLINE, DISCOVER, INFORM, NAK, OFFER, RELEASE, REQUEST, Malformed, Packet

OFFER_SECONDS = 30
DECLINE_SECONDS = 600
CLIENT_PORT, SERVER_PORT = 68, 67


@dataclass(frozen=True)
class Pool:
    server: str  # our address on the served network: option 54, and where relays reach us
    first: str
    last: str
    netmask: str
    router: str  # "": no router option (a network that leads nowhere else)
    dns: tuple[str, ...]
    domain: str
    lease_time: int
    reservations: dict[str, str] = field(default_factory=dict)  # MAC -> address

    @property
    def broadcast(self) -> str:
        network = ipaddress.IPv4Network(f"{self.server}/{self.netmask}", strict=False)
        return str(network.broadcast_address)


@dataclass
class Held:
    mac: str
    ip: str
    hostname: str = ""
    client_id: str = ""
    expires: float = 0.0
    state: str = "bound"


class Backend(Protocol):
    def leases(self) -> Iterable[Held]: ...
    def bind(self, lease: Held, record: tuple[str, int] | None) -> None: ...
    def end(self, mac: str, state: str) -> None: ...
    def decline(self, ip: str, until: float) -> None: ...


class MemoryBackend:
    """Leases kept nowhere else (unit tests, the benchmark's pure-logic run)."""

    def __init__(self) -> None:
        self.rows: dict[str, Held] = {}
        self.records: dict[str, tuple[str, int]] = {}

    def leases(self) -> Iterable[Held]:
        return list(self.rows.values())

    def bind(self, lease: Held, record: tuple[str, int] | None) -> None:
        self.rows[lease.mac] = Held(**vars(lease))
        if record:
            self.records[lease.mac] = record
        else:
            self.records.pop(lease.mac, None)

    def end(self, mac: str, state: str) -> None:
        self.records.pop(mac, None)
        if mac in self.rows:
            self.rows[mac].state = state

    def decline(self, ip: str, until: float) -> None:
        self.rows[f"declined:{ip}"] = Held(f"declined:{ip}", ip, expires=until, state="declined")


@dataclass
class Reply:
    packet: Packet
    to: tuple[str, int]

    @property
    def data(self) -> bytes:
        return codec.pack(self.packet)


@dataclass
class Result:
    request: Packet | None
    replies: list[Reply]
    note: str = ""  # what happened, for the journal


HOST_LABEL = re.compile(rb"[^a-z0-9-]")


def host_label(raw: bytes) -> str:
    """A client-sent host name as a DNS label: first label, lower case, letters, digits, '-'."""
    label = HOST_LABEL.sub(b"", raw.split(b".")[0].lower()).strip(b"-")[:63]
    return label.decode("ascii")


class DHCPCore:
    def __init__(self, pool: Pool, backend: Backend, *, dns_ttl: int = 60,
                 static_names: Iterable[str] = ()) -> None:
        self.pool = pool
        self.backend = backend
        self.dns_ttl = dns_ttl
        self.static_names = {n.lower() for n in static_names}
        self.first = int(ipaddress.IPv4Address(pool.first))
        self.last = int(ipaddress.IPv4Address(pool.last))
        self.leases: dict[str, Held] = {}
        self.holder: dict[str, str] = {}  # ip -> mac of the lease row that has it
        self.names: dict[str, str] = {}  # host name -> mac of the lease that had it last
        for lease in backend.leases():
            self._remember(lease)
        self.offers: dict[str, tuple[str, float]] = {}  # mac -> (ip, until)
        self.offered: dict[str, str] = {}  # ip -> mac
        self.reserved_ips = {ip: mac.lower() for mac, ip in pool.reservations.items()}
        self._cursor = self.first
        network = self.network = ipaddress.IPv4Network(f"{pool.server}/{pool.netmask}", strict=False)
        self._never = {pool.server, pool.router, str(network.network_address), pool.broadcast}

    def _remember(self, lease: Held) -> None:
        old = self.leases.get(lease.mac)
        if old is not None and self.holder.get(old.ip) == lease.mac:
            del self.holder[old.ip]
        previous = self.holder.get(lease.ip)
        if previous is not None and previous != lease.mac:
            self.leases.pop(previous, None)
        self.leases[lease.mac] = lease
        self.holder[lease.ip] = lease.mac
        if lease.hostname:
            self.names[lease.hostname] = lease.mac

    # -- addresses ------------------------------------------------------------------------

    def in_range(self, ip: str) -> bool:
        try:
            value = int(ipaddress.IPv4Address(ip))
        except ValueError:
            return False
        return self.first <= value <= self.last or ip in self.reserved_ips

    def free_for(self, ip: str, mac: str, now: float) -> bool:
        """Whether `ip` may go to `mac` now: nobody else holds, was offered or reserved it."""
        if ip in self._never or not self.in_range(ip):
            return False
        reserved = self.reserved_ips.get(ip)
        if reserved is not None and reserved != mac:
            return False
        offered = self.offered.get(ip)
        if offered is not None and offered != mac and self.offers.get(offered, ("", 0))[1] > now:
            return False
        holder = self.holder.get(ip)
        if holder is None or holder == mac:
            return True
        return self.leases[holder].expires <= now

    def choose(self, mac: str, requested: str | None, now: float) -> str | None:
        reserved = self.pool.reservations.get(mac)
        if reserved:
            return reserved if self.free_for(reserved, mac, now) else None
        offer = self.offers.get(mac)
        if offer and offer[1] > now and self.free_for(offer[0], mac, now):
            return offer[0]
        lease = self.leases.get(mac)
        if lease and self.free_for(lease.ip, mac, now):
            return lease.ip
        if requested and self.free_for(requested, mac, now):
            return requested
        size = self.last - self.first + 1
        for step in range(size):  # from a moving cursor: new clients do not rescan the start
            value = self.first + (self._cursor - self.first + step) % size
            ip = str(ipaddress.IPv4Address(value))
            if self.free_for(ip, mac, now) and self.holder.get(ip) in (None, mac):
                self._cursor = value + 1 if value < self.last else self.first
                return ip
        for step in range(size):  # full: take the address of an ended lease
            ip = str(ipaddress.IPv4Address(self.first + step))
            if self.free_for(ip, mac, now):
                return ip
        return None

    # -- messages -------------------------------------------------------------------------

    def handle(self, data: bytes, source: tuple[str, int], now: float) -> Result:
        try:
            request = codec.parse(data)
        except (Malformed, ValueError) as error:
            return Result(None, [], f"dropped: {error}")
        if request.op != 1:
            return Result(request, [], "dropped: not a request")
        if request.giaddr != "0.0.0.0" and \
                ipaddress.IPv4Address(request.giaddr) not in self.network:
            # a relay on another subnet: our one range is not there (RFC 2131 4.3.1)
            return Result(request, [], f"dropped: no range for relay {request.giaddr}'s subnet")
        handler = {DISCOVER: self._discover, REQUEST: self._request, DECLINE: self._decline,
                   RELEASE: self._release, INFORM: self._inform}.get(request.type)
        if handler is None:
            return Result(request, [], f"dropped: message type {request.type}")
        return handler(request, source, now)

    def _discover(self, request: Packet, source: tuple[str, int], now: float) -> Result:
        mac = request.mac
        ip = self.choose(mac, request.address(codec.REQUESTED_IP), now)
        if ip is None:
            return Result(request, [], "no free address")
        old = self.offers.get(mac)
        if old and self.offered.get(old[0]) == mac:
            del self.offered[old[0]]
        self.offers[mac] = (ip, now + OFFER_SECONDS)
        self.offered[ip] = mac
        reply = self._reply(request, OFFER, ip, lease=True)
        return Result(request, [Reply(reply, self._destination(request, source, reply))],
                      f"offered {ip}")

    def _request(self, request: Packet, source: tuple[str, int], now: float) -> Result:
        mac = request.mac
        server_id = request.address(codec.SERVER_ID)
        requested = request.address(codec.REQUESTED_IP)
        if server_id is not None and server_id != self.pool.server:
            self._drop_offer(mac)  # SELECTING: the client took another server's offer
            return Result(request, [], f"client chose server {server_id}")
        if server_id is not None or requested is not None:
            ip = requested or request.ciaddr  # SELECTING or INIT-REBOOT
        else:
            ip = request.ciaddr  # RENEWING (unicast) or REBINDING (broadcast)
        if ip == "0.0.0.0" or not self.free_for(ip, mac, now):
            lease = self.leases.get(mac)
            if server_id is None and requested is None and lease is None:
                return Result(request, [], f"no lease of {ip} to renew")  # not ours: silent
            return self._nak(request, source, f"{ip} is not available to {mac}")
        reserved = self.pool.reservations.get(mac)
        if reserved and reserved != ip:
            return self._nak(request, source, f"{mac} is reserved {reserved}")
        hostname = self._hostname(request, mac, now)
        lease = Held(mac, ip, hostname, request.options.get(codec.CLIENT_ID, b"").hex(),
                     now + self.pool.lease_time)
        record = (f"{hostname}.{self.pool.domain}", self.dns_ttl) if hostname else None
        self.backend.bind(lease, record)  # durable before the ACK
        self._remember(lease)
        self._drop_offer(mac)
        reply = self._reply(request, ACK, ip, lease=True, fqdn=hostname)
        return Result(request, [Reply(reply, self._destination(request, source, reply))],
                      f"bound {ip} to {mac}" + (f" as {hostname}" if hostname else ""))

    def _nak(self, request: Packet, source: tuple[str, int], why: str) -> Result:
        reply = Packet(op=2, xid=request.xid, flags=request.flags | codec.BROADCAST_FLAG,
                       giaddr=request.giaddr, chaddr=request.chaddr, htype=request.htype)
        reply.options = {codec.MESSAGE_TYPE: bytes([NAK]),
                         codec.SERVER_ID: codec.ip_option(self.pool.server),
                         codec.MESSAGE: why.encode()[:255]}
        to = (request.giaddr, SERVER_PORT) if request.giaddr != "0.0.0.0" else \
            ("255.255.255.255", CLIENT_PORT)
        return Result(request, [Reply(reply, to)], f"NAK: {why}")

    def _decline(self, request: Packet, source: tuple[str, int], now: float) -> Result:
        ip = request.address(codec.REQUESTED_IP)
        lease = self.leases.get(request.mac)
        if ip is None or lease is None or lease.ip != ip:
            return Result(request, [], "DECLINE of an address that is not this client's")
        self.backend.decline(ip, now + DECLINE_SECONDS)
        self.leases.pop(request.mac, None)
        self._remember(Held(f"declined:{ip}", ip, expires=now + DECLINE_SECONDS, state="declined"))
        return Result(request, [], f"{ip} declined: set aside for {DECLINE_SECONDS} s")

    def _release(self, request: Packet, source: tuple[str, int], now: float) -> Result:
        lease = self.leases.get(request.mac)
        if lease is None or lease.ip != request.ciaddr or lease.expires <= now:
            return Result(request, [], "RELEASE of no current lease")
        self.backend.end(request.mac, "released")
        lease.expires, lease.state = now, "released"
        return Result(request, [], f"released {lease.ip}")

    def _inform(self, request: Packet, source: tuple[str, int], now: float) -> Result:
        reply = self._reply(request, ACK, "0.0.0.0", lease=False)
        if source[1] != CLIENT_PORT:
            to = source  # a tool asking from its own port (protolab check): answer it there
        elif request.giaddr != "0.0.0.0":
            to = (request.giaddr, SERVER_PORT)
        else:
            to = (request.ciaddr if request.ciaddr != "0.0.0.0" else source[0], CLIENT_PORT)
        return Result(request, [Reply(reply, to)], "informed")

    # -- replies --------------------------------------------------------------------------

    def _drop_offer(self, mac: str) -> None:
        offer = self.offers.pop(mac, None)
        if offer and self.offered.get(offer[0]) == mac:
            del self.offered[offer[0]]

    def _hostname(self, request: Packet, mac: str, now: float) -> str:
        """The client's name for DNS (option 81's, else 12's), unless it is a lab host's
        or another current client's name (dnsmasq's rule: first come keeps it)."""
        raw = b""
        fqdn = request.options.get(codec.FQDN)
        if fqdn and len(fqdn) > 3:
            raw = fqdn[3:]
            if fqdn[0] & 0x04:  # E: the name in DNS wire format
                raw = raw[1:1 + raw[0]] if raw else b""
        raw = raw or request.options.get(codec.HOSTNAME, b"")
        name = host_label(raw)
        if not name or name in self.static_names:
            return ""
        owner = self.leases.get(self.names.get(name, ""))
        if owner is not None and owner.mac != mac and owner.hostname == name and \
                owner.state == "bound" and owner.expires > now and self.holder.get(owner.ip) == owner.mac:
            return ""
        return name

    def _reply(self, request: Packet, kind: int, ip: str, lease: bool, fqdn: str = "") -> Packet:
        pool = self.pool
        reply = Packet(op=2, xid=request.xid, flags=request.flags, ciaddr=request.ciaddr,
                       yiaddr=ip, siaddr="0.0.0.0", giaddr=request.giaddr,
                       chaddr=request.chaddr, htype=request.htype)
        available: dict[int, bytes] = {
            codec.SUBNET_MASK: codec.ip_option(pool.netmask),
            codec.DNS_SERVERS: codec.ip_option(*pool.dns),
            codec.DOMAIN_NAME: pool.domain.encode(),
            codec.BROADCAST: codec.ip_option(pool.broadcast),
        }
        if pool.router:
            available[codec.ROUTER] = codec.ip_option(pool.router)
        if not pool.dns:
            del available[codec.DNS_SERVERS]
        if lease:
            available[codec.LEASE_TIME] = codec.u32(pool.lease_time)
            available[codec.RENEWAL_T1] = codec.u32(pool.lease_time // 2)
            available[codec.REBINDING_T2] = codec.u32(pool.lease_time * 7 // 8)
        if fqdn:  # the name the client has in the lab DNS
            available[codec.HOSTNAME] = fqdn.encode()
        if fqdn and codec.FQDN in request.options:
            flags = request.options[codec.FQDN][0]
            # S: we update A and PTR; O: we overrode a client that asked to do it itself
            out = (flags & 0x04) | 0x01 | (0x02 if not flags & 0x01 else 0)
            name = f"{fqdn}.{pool.domain}"
            encoded = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\x00" \
                if flags & 0x04 else name.encode()
            available[codec.FQDN] = bytes([out, 255, 255]) + encoded
        options = {codec.MESSAGE_TYPE: bytes([kind]),
                   codec.SERVER_ID: codec.ip_option(pool.server)}
        for code in request.options.get(codec.PARAMETER_LIST, b""):  # the client's order
            if code in available and code not in options:
                options[code] = available[code]
        for code, value in available.items():
            options.setdefault(code, value)
        reply.options = options
        return reply

    def _destination(self, request: Packet, source: tuple[str, int], reply: Packet) -> tuple[str, int]:
        """RFC 2131 4.1, with one lab choice: clients without an address always get
        broadcasts (unicast to an address the client does not have yet needs an ARP entry
        we cannot add without CAP_NET_ADMIN; dhclient and udhcpc both clear the flag)."""
        if request.giaddr != "0.0.0.0":
            return request.giaddr, SERVER_PORT
        if request.ciaddr != "0.0.0.0":
            return request.ciaddr, CLIENT_PORT
        return "255.255.255.255", CLIENT_PORT

    def expired(self, now: float) -> list[str]:
        """MACs whose leases ended by time since the last call, marked so; offers past
        their time go. (Their names leave DNS by the store's rule, not by this call.)"""
        ended = [lease.mac for lease in self.leases.values()
                 if lease.state == "bound" and lease.expires <= now]
        for mac in ended:
            self.leases[mac].state = "expired"
        for mac, (_, until) in list(self.offers.items()):
            if until <= now:
                self._drop_offer(mac)
        return ended
