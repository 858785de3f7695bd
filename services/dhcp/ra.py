"""Router advertisements (RFC 4861 4.2, options 4.6, RFC 8106 RDNSS and DNSSL): the ICMPv6
messages to and from bytes, and when to send them. Sans-IO: server6.py owns the socket.

The kernel fills the ICMPv6 checksum of a raw ICMPv6 socket's messages (RFC 3542 3.1), so
the bytes here leave it zero; parse() does not check it either (the kernel drops bad ones).
"""

from __future__ import annotations

import ipaddress
import random
import struct
from dataclasses import dataclass, field

from .codec6 import decode_name, domain_names

ROUTER_SOLICITATION, ROUTER_ADVERTISEMENT = 133, 134
SOURCE_LL, PREFIX_INFO, MTU, RDNSS, DNSSL = 1, 3, 5, 25, 31
FLAG_M, FLAG_O = 0x80, 0x40  # managed (addresses by DHCPv6), other (the rest by DHCPv6)
PREFIX_L, PREFIX_A = 0x80, 0x40  # on-link, autonomous (SLAAC)

# RFC 4861 6.2.1 and 10: the lab advertises more often than the defaults (600 s), so a
# class sees them in Wireshark without waiting, and well inside every lifetime below.
MAX_INTERVAL, MIN_INTERVAL = 60.0, 20.0
INITIAL_INTERVAL, INITIAL_ADVERTISEMENTS = 8.0, 3  # MAX_INITIAL_RTR_ADVERT_INTERVAL, ..._ADVERTISEMENTS
MIN_DELAY_BETWEEN_RAS = 3.0  # multicast RAs, solicited or not
UNICAST_PER_SECOND = 20  # answers to solicitations from an address: a flood gets no more
ROUTER_LIFETIME = 1800
VALID_LIFETIME, PREFERRED_LIFETIME = 86400, 14400
DNS_LIFETIME = 3 * int(MAX_INTERVAL)  # RFC 8106 5.1: at least MaxRtrAdvInterval, 3x advised


class Malformed(Exception):
    """Not a router solicitation or advertisement we can read."""


@dataclass
class Advertisement:
    prefix: str  # "fd00:203::/64"
    managed: bool
    other: bool
    mac: bytes = b""  # the source link-layer address option, when known
    dns: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    router_lifetime: int = ROUTER_LIFETIME  # 0: not a default router
    hop_limit: int = 64
    mtu: int = 0  # 0: no MTU option
    autonomous: bool = True
    valid: int = VALID_LIFETIME
    preferred: int = PREFERRED_LIFETIME
    dns_lifetime: int = DNS_LIFETIME
    unknown: list[int] = field(default_factory=list)  # option types parse() skipped


def pack(ra: Advertisement) -> bytes:
    flags = (FLAG_M if ra.managed else 0) | (FLAG_O if ra.other else 0)
    out = bytearray(struct.pack("!BBHBBHII", ROUTER_ADVERTISEMENT, 0, 0, ra.hop_limit, flags,
                                ra.router_lifetime, 0, 0))
    if ra.mac:
        out += _option(SOURCE_LL, ra.mac)
    if ra.mtu:
        out += _option(MTU, struct.pack("!HI", 0, ra.mtu))
    network = ipaddress.IPv6Network(ra.prefix)
    out += _option(PREFIX_INFO, struct.pack(
        "!BBIII", network.prefixlen, PREFIX_L | (PREFIX_A if ra.autonomous else 0), ra.valid,
        ra.preferred, 0) + network.network_address.packed)
    if ra.dns:
        out += _option(RDNSS, struct.pack("!HI", 0, ra.dns_lifetime) +
                       b"".join(ipaddress.IPv6Address(a).packed for a in ra.dns))
    if ra.domains:
        out += _option(DNSSL, struct.pack("!HI", 0, ra.dns_lifetime) + domain_names(*ra.domains))
    return bytes(out)


def _option(kind: int, body: bytes) -> bytes:
    """Type, length in units of 8 octets, body zero-padded to fill them (RFC 4861 4.6)."""
    size = -(-(len(body) + 2) // 8) * 8
    return bytes([kind, size // 8]) + body.ljust(size - 2, b"\x00")


def options(data: bytes) -> list[tuple[int, bytes]]:
    found = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data) or data[pos + 1] == 0:
            raise Malformed("an option of length 0 or cut short")  # RFC 4861 4.6: discard
        end = pos + data[pos + 1] * 8
        if end > len(data):
            raise Malformed(f"option {data[pos]} runs past the end")
        found.append((data[pos], data[pos + 2:end]))
        pos = end
    return found


def parse(data: bytes) -> Advertisement:
    """An RA's fields (tests and `rdisc6`'s view of what we send)."""
    if len(data) < 16 or data[0] != ROUTER_ADVERTISEMENT or data[1] != 0:
        raise Malformed("not a router advertisement")
    hop_limit, flags, lifetime = struct.unpack_from("!BBH", data, 4)
    ra = Advertisement(prefix="::/0", managed=bool(flags & FLAG_M), other=bool(flags & FLAG_O),
                       router_lifetime=lifetime, hop_limit=hop_limit)
    for kind, body in options(data[16:]):
        if kind == SOURCE_LL:
            ra.mac = body[:6]
        elif kind == MTU and len(body) >= 6:
            ra.mtu = struct.unpack_from("!I", body, 2)[0]
        elif kind == PREFIX_INFO and len(body) >= 30:
            length, pflags, ra.valid, ra.preferred = struct.unpack_from("!BBII", body)
            ra.autonomous = bool(pflags & PREFIX_A)
            ra.prefix = str(ipaddress.IPv6Network(
                (ipaddress.IPv6Address(body[14:30]), min(length, 128)), strict=False))
        elif kind == RDNSS and len(body) >= 22:
            ra.dns_lifetime = struct.unpack_from("!I", body, 2)[0]
            ra.dns = tuple(str(ipaddress.IPv6Address(body[i:i + 16]))
                           for i in range(6, len(body) - 15, 16))
        elif kind == DNSSL and len(body) >= 6:
            names, rest = [], body[6:]
            while rest and rest[0]:  # zero padding ends the list
                labels, _ = decode_name(rest)
                names.append(".".join(label.decode("ascii", "replace") for label in labels))
                rest = rest[sum(len(label) + 1 for label in labels) + 1:]
            ra.domains = tuple(names)
        else:
            ra.unknown.append(kind)
    return ra


def is_solicitation(data: bytes) -> bool:
    """A router solicitation we may answer (RFC 4861 6.1.1: code 0, options well formed)."""
    if len(data) < 8 or data[0] != ROUTER_SOLICITATION or data[1] != 0:
        return False
    try:
        options(data[8:])
    except Malformed:
        return False
    return True


class Schedule:
    """When RAs go out (RFC 4861 6.2.4 and 6.2.6), as decisions on times given to it.

    Unsolicited: a few quickly after start, then at random intervals in [MIN, MAX].
    Solicited: unicast straight back to a solicitation with a source address (RFC 4861
    6.2.6 allows it), up to UNICAST_PER_SECOND; from the unspecified address, multicast,
    no sooner than MIN_DELAY_BETWEEN_RAS after the last multicast one."""

    def __init__(self, now: float, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self.sent_initial = 0
        self.last_multicast = -MIN_DELAY_BETWEEN_RAS
        self.next_at = now
        self.window = int(now)
        self.unicasts = 0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def multicast_sent(self, now: float) -> None:
        self.last_multicast = now
        self.sent_initial += 1
        if self.sent_initial < INITIAL_ADVERTISEMENTS:
            interval = min(INITIAL_INTERVAL, self.rng.uniform(MIN_INTERVAL, MAX_INTERVAL))
        else:
            interval = self.rng.uniform(MIN_INTERVAL, MAX_INTERVAL)
        self.next_at = now + interval

    def solicited(self, source: str, now: float) -> str | None:
        """Where the answer to a solicitation from `source` goes now: that address, or
        "ff02::1" (all nodes) when it was unspecified and a multicast one is allowed (else
        the next multicast RA is brought forward), or None: not now."""
        if source not in ("::", ""):
            if int(now) != self.window:
                self.window, self.unicasts = int(now), 0
            self.unicasts += 1
            return source if self.unicasts <= UNICAST_PER_SECOND else None
        if now - self.last_multicast >= MIN_DELAY_BETWEEN_RAS:
            return "ff02::1"
        self.next_at = min(self.next_at, self.last_multicast + MIN_DELAY_BETWEEN_RAS)
        return None
