"""DHCP messages (RFC 2131 BOOTP frame, RFC 2132 options) to and from bytes. Sans-IO.

Options are kept as an ordered dict of code -> raw bytes; repeated options are joined
(RFC 3396), pad and end are handled here, and helpers read and write the typed ones.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

MAGIC = b"\x63\x82\x53\x63"
FRAME = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes before the magic cookie

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK",
              7: "RELEASE", 8: "INFORM"}

# option codes
SUBNET_MASK, ROUTER, DNS_SERVERS, HOSTNAME, DOMAIN_NAME, BROADCAST = 1, 3, 6, 12, 15, 28
REQUESTED_IP, LEASE_TIME, OVERLOAD, MESSAGE_TYPE, SERVER_ID = 50, 51, 52, 53, 54
PARAMETER_LIST, MESSAGE, RENEWAL_T1, REBINDING_T2, CLIENT_ID, FQDN = 55, 56, 58, 59, 61, 81
BROADCAST_FLAG = 0x8000


class Malformed(Exception):
    """Not a DHCP message we can read: dropped (DHCP has no error reply)."""


@dataclass
class Packet:
    op: int = 2
    xid: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: str = "0.0.0.0"
    yiaddr: str = "0.0.0.0"
    siaddr: str = "0.0.0.0"
    giaddr: str = "0.0.0.0"
    chaddr: bytes = b"\x00" * 6
    htype: int = 1
    hops: int = 0
    sname: bytes = b""
    file: bytes = b""
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def mac(self) -> str:
        return ":".join(f"{b:02x}" for b in self.chaddr)

    @property
    def type(self) -> int:
        value = self.options.get(MESSAGE_TYPE, b"")
        return value[0] if len(value) == 1 else 0

    def address(self, code: int) -> str | None:
        value = self.options.get(code)
        return str(ipaddress.IPv4Address(value)) if value is not None and len(value) == 4 else None

    def summary(self) -> str:
        name = TYPE_NAMES.get(self.type, f"type {self.type}")
        parts = [f"DHCP{name}", f"xid 0x{self.xid:08x}", f"mac {self.mac}"]
        for label, value in (("ciaddr", self.ciaddr), ("yiaddr", self.yiaddr), ("giaddr", self.giaddr)):
            if value != "0.0.0.0":
                parts.append(f"{label} {value}")
        requested = self.address(REQUESTED_IP)
        if requested:
            parts.append(f"requested {requested}")
        return " ".join(parts)


def parse(data: bytes) -> Packet:
    if len(data) < FRAME.size + 4:
        raise Malformed(f"{len(data)} bytes: shorter than a DHCP message")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = FRAME.unpack_from(data)
    if data[FRAME.size:FRAME.size + 4] != MAGIC:
        raise Malformed("no DHCP magic cookie (plain BOOTP)")
    if op not in (1, 2) or hlen > 16:
        raise Malformed(f"op {op}, hlen {hlen}")
    options = _options(data[FRAME.size + 4:])
    overload = options.get(OVERLOAD, b"\x00")[:1]
    if overload in (b"\x01", b"\x03"):
        _merge(options, _options(file, need_end=False))
        file = b""
    if overload in (b"\x02", b"\x03"):
        _merge(options, _options(sname, need_end=False))
        sname = b""
    return Packet(op, xid, secs, flags, _ip(ciaddr), _ip(yiaddr), _ip(siaddr), _ip(giaddr),
                  chaddr[:hlen], htype, hops, sname.rstrip(b"\x00"), file.rstrip(b"\x00"),
                  options)


def _ip(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _merge(into: dict[int, bytes], more: dict[int, bytes]) -> None:
    for code, value in more.items():
        into[code] = into.get(code, b"") + value


def _options(data: bytes, need_end: bool = False) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        code = data[pos]
        if code == 0:
            pos += 1
            continue
        if code == 255:
            return options
        if pos + 1 >= len(data) or pos + 2 + data[pos + 1] > len(data):
            raise Malformed(f"option {code} runs past the end")
        length = data[pos + 1]
        options[code] = options.get(code, b"") + data[pos + 2:pos + 2 + length]  # RFC 3396
        pos += 2 + length
    if need_end:
        raise Malformed("options without an end")
    return options


def pack(packet: Packet) -> bytes:
    chaddr = packet.chaddr[:16]
    head = FRAME.pack(packet.op, packet.htype, len(chaddr), packet.hops, packet.xid,
                      packet.secs, packet.flags, *(ipaddress.IPv4Address(a).packed for a in (
                          packet.ciaddr, packet.yiaddr, packet.siaddr, packet.giaddr)),
                      chaddr.ljust(16, b"\x00"), packet.sname[:64].ljust(64, b"\x00"),
                      packet.file[:128].ljust(128, b"\x00"))
    body = bytearray(MAGIC)
    for code, value in packet.options.items():
        for start in range(0, max(len(value), 1), 255):  # long options split (RFC 3396)
            chunk = value[start:start + 255]
            body += bytes([code, len(chunk)]) + chunk
    body.append(255)
    out = head + bytes(body)
    return out.ljust(300, b"\x00")  # BOOTP's minimum size: some relays and clients want it


def ip_option(*addresses: str) -> bytes:
    return b"".join(ipaddress.IPv4Address(a).packed for a in addresses)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)
