"""The DHCPv6 server's logic (RFC 8415 18.3): messages in, a reply and lease changes out.
Sans-IO, like core.py for DHCPv4.

Leases are IA_NA bindings, one per (client DUID, IAID), kept in memory and written through
to a Backend before the reply that depends on them. An address is chosen from the client's
identity (a hash into the pool, then the next free one), so ADVERTISE reserves nothing and
the REQUEST that follows it finds the same address: a flood of SOLICITs with made-up DUIDs
leaves no state behind. Only a binding (REQUEST, or SOLICIT with rapid commit) holds an
address, until its lease ends.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from . import codec6
from .codec6 import (
    ADVERTISE,
    CONFIRM,
    DECLINE,
    IA_NA,
    IANA,
    INFORMATION_REQUEST,
    NO_ADDRS_AVAIL,
    NO_BINDING,
    NOT_ON_LINK,
    REBIND,
    RELEASE,
    RENEW,
    REPLY,
    REQUEST,
    SOLICIT,
    SUCCESS,
    IAAddr,
    Malformed,
    Message,
)
from .core import host_label

DECLINE_SECONDS = 600
CLIENT_PORT, SERVER_PORT = 546, 547
POOL_FIRST, POOL_SIZE = 0x1000, 0x1000  # PREFIX::1000 to PREFIX::1fff: away from SLAAC's
INFO_REFRESH = 600  # how soon a stateless client asks again (RFC 8415 21.23)


@dataclass(frozen=True)
class Pool6:
    prefix: str  # "fd00:203::/64"
    server_duid: bytes
    dns: tuple[str, ...]
    domain: str
    lease_time: int
    server: str = ""  # our address in the prefix (never leased)

    def network(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network(self.prefix)


@dataclass
class Held6:
    duid: str  # hex
    iaid: int
    ip: str
    hostname: str = ""
    expires: float = 0.0
    state: str = "bound"

    @property
    def key(self) -> tuple[str, int]:
        return self.duid, self.iaid


class Backend6(Protocol):
    def leases(self) -> Iterable[Held6]: ...
    def bind(self, lease: Held6, record: tuple[str, int] | None) -> None: ...
    def end(self, duid: str, iaid: int, state: str) -> None: ...
    def decline(self, ip: str, until: float) -> None: ...


class MemoryBackend6:
    """Leases kept nowhere else (unit tests)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], Held6] = {}
        self.records: dict[tuple[str, int], tuple[str, int]] = {}

    def leases(self) -> Iterable[Held6]:
        return list(self.rows.values())

    def bind(self, lease: Held6, record: tuple[str, int] | None) -> None:
        self.rows[lease.key] = Held6(**vars(lease))
        if record:
            self.records[lease.key] = record
        else:
            self.records.pop(lease.key, None)

    def end(self, duid: str, iaid: int, state: str) -> None:
        self.records.pop((duid, iaid), None)
        if (duid, iaid) in self.rows:
            self.rows[duid, iaid].state = state

    def decline(self, ip: str, until: float) -> None:
        self.rows[f"declined:{ip}", 0] = Held6(f"declined:{ip}", 0, ip, expires=until,
                                               state="declined")


@dataclass
class Result6:
    request: Message | None
    reply: Message | None
    note: str = ""  # what happened, for the journal

    @property
    def data(self) -> bytes:
        return codec6.pack(self.reply) if self.reply is not None else b""


class DHCPv6Core:
    def __init__(self, pool: Pool6, backend: Backend6, *, dns_ttl: int = 60,
                 static_names: Iterable[str] = ()) -> None:
        self.pool = pool
        self.backend = backend
        self.dns_ttl = dns_ttl
        self.static_names = {n.lower() for n in static_names}
        self.network = pool.network()
        self.base = int(self.network.network_address) + POOL_FIRST
        self.size = min(POOL_SIZE, self.network.num_addresses - POOL_FIRST - 1)
        self.leases: dict[tuple[str, int], Held6] = {}
        self.holder: dict[str, tuple[str, int]] = {}  # ip -> key of the row that has it
        self.names: dict[str, tuple[str, int]] = {}  # host name -> key of the lease that had it last
        for lease in backend.leases():
            self._remember(lease)

    def _remember(self, lease: Held6) -> None:
        old = self.leases.get(lease.key)
        if old is not None and self.holder.get(old.ip) == lease.key:
            del self.holder[old.ip]
        previous = self.holder.get(lease.ip)
        if previous is not None and previous != lease.key:
            self.leases.pop(previous, None)
        self.leases[lease.key] = lease
        self.holder[lease.ip] = lease.key
        if lease.hostname:
            self.names[lease.hostname] = lease.key

    # -- addresses ------------------------------------------------------------------------

    def in_pool(self, ip: str) -> bool:
        try:
            value = int(ipaddress.IPv6Address(ip)) - self.base
        except ValueError:
            return False
        return 0 <= value < self.size and ip != self.pool.server

    def free_for(self, ip: str, key: tuple[str, int], now: float) -> bool:
        if not self.in_pool(ip):
            return False
        holder = self.holder.get(ip)
        return holder is None or holder == key or self.leases[holder].expires <= now

    def choose(self, key: tuple[str, int], hints: list[str], now: float) -> str | None:
        """The address for IA `key`: its binding's, one it asks for, else one derived from
        its identity (so ADVERTISE and REQUEST agree without a reservation)."""
        lease = self.leases.get(key)
        if lease is not None and self.free_for(lease.ip, key, now):
            return lease.ip
        for hint in hints:
            if self.free_for(hint, key, now) and self.holder.get(hint) in (None, key):
                return hint
        digest = hashlib.sha256(f"{key[0]}/{key[1]}".encode()).digest()
        start = int.from_bytes(digest[:8], "big") % self.size
        ended = None
        for step in range(self.size):
            ip = str(ipaddress.IPv6Address(self.base + (start + step) % self.size))
            if not self.free_for(ip, key, now):
                continue
            if self.holder.get(ip) in (None, key):
                return ip
            ended = ended or ip  # an ended lease's address: only when none is unused
        return ended

    # -- messages -------------------------------------------------------------------------

    def handle(self, data: bytes, now: float) -> Result6:
        try:
            request = codec6.parse(data)
        except (Malformed, ValueError) as error:
            return Result6(None, None, f"dropped: {error}")
        handler = {SOLICIT: self._solicit, REQUEST: self._request, RENEW: self._renew,
                   REBIND: self._renew, RELEASE: self._release, DECLINE: self._decline,
                   CONFIRM: self._confirm, INFORMATION_REQUEST: self._information}.get(request.type)
        if handler is None:
            return Result6(request, None, f"dropped: message type {request.type}")
        # RFC 8415 16: who must and must not name a server, and a client always itself
        duid = request.client_duid
        server = request.get(codec6.SERVERID)
        needs_server = request.type in (REQUEST, RENEW, DECLINE, RELEASE)
        if request.type != INFORMATION_REQUEST and not duid:
            return Result6(request, None, "dropped: no client identifier")
        if needs_server and server is None:
            return Result6(request, None, "dropped: no server identifier")
        if request.type in (SOLICIT, REBIND, CONFIRM) and server is not None:
            return Result6(request, None, "dropped: a server identifier where none belongs")
        if server is not None and server != self.pool.server_duid:
            return Result6(request, None, "dropped: for another server")
        if request.type == INFORMATION_REQUEST and request.get(IA_NA) is not None:
            return Result6(request, None, "dropped: an INFORMATION-REQUEST with an IA")
        return handler(request, now)

    def _key(self, request: Message, ia: IANA) -> tuple[str, int]:
        return (request.client_duid or b"").hex(), ia.iaid

    def _solicit(self, request: Message, now: float) -> Result6:
        if request.get(codec6.RAPID_COMMIT) is not None:
            return self._bind_all(request, now, rapid=True)
        reply = self._reply(request, ADVERTISE)
        offered = []
        for ia in request.iana():
            ip = self.choose(self._key(request, ia), [a.address for a in ia.addresses], now)
            reply.options.append((IA_NA, self._ia(ia.iaid, ip).pack()))
            offered.append(ip or "none")
        if not request.iana():
            return Result6(request, None, "SOLICIT without IA_NA: nothing to offer")
        if all(ip == "none" for ip in offered):
            reply.options.append((codec6.STATUS_CODE, codec6.status(
                NO_ADDRS_AVAIL, "no free address")))
        return Result6(request, reply, f"offered {', '.join(offered)}")

    def _request(self, request: Message, now: float) -> Result6:
        return self._bind_all(request, now, rapid=False)

    def _bind_all(self, request: Message, now: float, rapid: bool) -> Result6:
        reply = self._reply(request, REPLY)
        if rapid:
            reply.options.append((codec6.RAPID_COMMIT, b""))
        hostname = self._hostname(request, now)
        bound = []
        for ia in request.iana():
            key = self._key(request, ia)
            ip = self.choose(key, [a.address for a in ia.addresses], now)
            if ip is not None:
                self._bind(key, ip, hostname, now)
                bound.append(ip)
            reply.options.append((IA_NA, self._ia(ia.iaid, ip).pack()))
        if not request.iana():
            return Result6(request, None, "no IA_NA to bind")
        self._fqdn(request, reply, hostname if bound else "")
        name = f" as {hostname}" if hostname and bound else ""
        return Result6(request, reply, (f"bound {', '.join(bound)}{name}" if bound else
                                        "no free address") + (" (rapid commit)" if rapid else ""))

    def _bind(self, key: tuple[str, int], ip: str, hostname: str, now: float) -> None:
        lease = Held6(key[0], key[1], ip, hostname, now + self.pool.lease_time)
        record = (f"{hostname}.{self.pool.domain}", self.dns_ttl) if hostname else None
        self.backend.bind(lease, record)  # durable before the reply
        self._remember(lease)

    def _renew(self, request: Message, now: float) -> Result6:
        """RENEW and REBIND (RFC 8415 18.3.4, 18.3.5): a binding's lease is extended; an
        address not on this link gets lifetimes 0; no binding at all: NoBinding."""
        reply = self._reply(request, REPLY)
        hostname = self._hostname(request, now)
        notes = []
        for ia in request.iana():
            key = self._key(request, ia)
            lease = self.leases.get(key)
            out = IANA(ia.iaid)
            if lease is not None and self.holder.get(lease.ip) == key and lease.state in (
                    "bound", "expired") and self.free_for(lease.ip, key, now):
                self._bind(key, lease.ip, hostname or lease.hostname, now)
                out = self._ia(ia.iaid, lease.ip)
                notes.append(f"renewed {lease.ip}")
            else:
                out.status = (NO_BINDING, "no binding for this IA")
                notes.append(f"IA {ia.iaid}: no binding")
            for asked in ia.addresses:  # what the client has and may no longer use
                if asked.address not in {a.address for a in out.addresses}:
                    out.addresses.append(IAAddr(asked.address, 0, 0))
            if out.addresses and out.status is not None and all(
                    a.valid == 0 for a in out.addresses):
                out.status = None  # zero lifetimes say it all (RFC 8415 18.3.4)
            reply.options.append((IA_NA, out.pack()))
        if not request.iana():
            return Result6(request, None, "nothing to renew")
        self._fqdn(request, reply, hostname)
        return Result6(request, reply, "; ".join(notes))

    def _release(self, request: Message, now: float) -> Result6:
        reply = self._reply(request, REPLY)
        reply.options.append((codec6.STATUS_CODE, codec6.status(SUCCESS, "released")))
        notes = []
        for ia in request.iana():
            key = self._key(request, ia)
            lease = self.leases.get(key)
            if lease is None or lease.expires <= now or lease.state != "bound":
                reply.options.append((IA_NA, IANA(ia.iaid, status=(
                    NO_BINDING, "no binding for this IA")).pack()))
                continue
            self.backend.end(key[0], key[1], "released")
            lease.expires, lease.state = now, "released"
            notes.append(f"released {lease.ip}")
        return Result6(request, reply, "; ".join(notes) or "RELEASE of no current lease")

    def _decline(self, request: Message, now: float) -> Result6:
        reply = self._reply(request, REPLY)
        reply.options.append((codec6.STATUS_CODE, codec6.status(SUCCESS, "declined")))
        notes = []
        for ia in request.iana():
            key = self._key(request, ia)
            lease = self.leases.get(key)
            for asked in ia.addresses:
                if lease is None or lease.ip != asked.address:
                    continue
                self.backend.decline(asked.address, now + DECLINE_SECONDS)
                self.leases.pop(key, None)
                self._remember(Held6(f"declined:{asked.address}", 0, asked.address,
                                     expires=now + DECLINE_SECONDS, state="declined"))
                notes.append(f"{asked.address} declined: set aside for {DECLINE_SECONDS} s")
        return Result6(request, reply, "; ".join(notes) or "DECLINE of no address of this client")

    def _confirm(self, request: Message, now: float) -> Result6:
        """Whether the client's addresses are on this link (RFC 8415 18.3.3)."""
        asked = [a.address for ia in request.iana() for a in ia.addresses]
        if not asked:
            return Result6(request, None, "CONFIRM without addresses")
        on_link = all(ipaddress.IPv6Address(a) in self.network for a in asked)
        reply = self._reply(request, REPLY)
        reply.options.append((codec6.STATUS_CODE, codec6.status(
            SUCCESS if on_link else NOT_ON_LINK, "on link" if on_link else "not on this link")))
        return Result6(request, reply, "confirmed" if on_link else "not on link")

    def _information(self, request: Message, now: float) -> Result6:
        reply = self._reply(request, REPLY)
        reply.options.append((codec6.INFORMATION_REFRESH_TIME, INFO_REFRESH.to_bytes(4, "big")))
        return Result6(request, reply, "informed")

    # -- replies --------------------------------------------------------------------------

    def _ia(self, iaid: int, ip: str | None) -> IANA:
        seconds = self.pool.lease_time
        if ip is None:
            return IANA(iaid, status=(NO_ADDRS_AVAIL, "no free address"))
        return IANA(iaid, seconds // 2, seconds * 4 // 5, [IAAddr(ip, seconds, seconds)])

    def _reply(self, request: Message, kind: int) -> Message:
        """The options every reply has: both identifiers, then DNS servers and the domain
        list (RFC 8415 21.7: the client's Option Request asks for them; dhclient -S does)."""
        options: codec6.Options = [(codec6.SERVERID, self.pool.server_duid)]
        if request.client_duid:
            options.insert(0, (codec6.CLIENTID, request.client_duid))
        if self.pool.dns:
            options.append((codec6.DNS_SERVERS, codec6.addresses(*self.pool.dns)))
        if self.pool.domain:
            options.append((codec6.DOMAIN_LIST, codec6.domain_names(self.pool.domain)))
        return Message(kind, request.xid, options)

    def _hostname(self, request: Message, now: float) -> str:
        """The first label of the client's FQDN option (RFC 4704), unless a lab host or
        another client's current lease has it (first come keeps it, as for DHCPv4)."""
        raw = request.get(codec6.CLIENT_FQDN)
        if not raw or len(raw) < 2:
            return ""
        try:
            labels, _ = codec6.decode_name(raw[1:])
        except Malformed:
            return ""
        name = host_label(labels[0]) if labels else ""
        if not name or name in self.static_names:
            return ""
        owner = self.leases.get(self.names.get(name, ("", 0)))
        if owner is not None and owner.duid != (request.client_duid or b"").hex() and \
                owner.hostname == name and owner.state == "bound" and owner.expires > now:
            return ""
        return name

    def _fqdn(self, request: Message, reply: Message, hostname: str) -> None:
        """The Client FQDN option back (RFC 4704 5): S set, we update AAAA and PTR; O set
        when the client asked to update them itself."""
        raw = request.get(codec6.CLIENT_FQDN)
        if not raw or not hostname:
            return
        flags = codec6.FQDN_S | (0 if raw[0] & codec6.FQDN_S else codec6.FQDN_O)
        reply.options.append((codec6.CLIENT_FQDN, codec6.fqdn(
            flags, f"{hostname}.{self.pool.domain}")))

    def expired(self, now: float) -> list[tuple[str, int]]:
        """IAs whose leases ended by time since the last call, marked so."""
        ended = [key for key, lease in self.leases.items()
                 if lease.state == "bound" and lease.expires <= now]
        for key in ended:
            self.leases[key].state = "expired"
        return ended


def duid_ll(mac: bytes) -> bytes:
    """DUID-LL (RFC 8415 11.4) of an Ethernet address: the server's identity, stable across
    restarts as long as its interface's address is."""
    return b"\x00\x03\x00\x01" + mac

