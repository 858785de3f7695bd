"""DHCPv6 messages (RFC 8415) and the options the lab uses, to and from bytes. Sans-IO.

A message is a type, a 24-bit transaction id and options; an option is a 16-bit code, a
16-bit length and its data, and may repeat (one IA_NA per interface identity), so options
are kept as an ordered list of (code, raw bytes). IA_NA and IAADDR carry options of their
own: `IANA` and `IAAddr` read and write them. Written by hand, as DHCPv4's codec: the
messages are small and a library (scapy) would be a large runtime dependency.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = range(1, 10)
RECONFIGURE, INFORMATION_REQUEST, RELAY_FORW, RELAY_REPL = range(10, 14)
TYPE_NAMES = {1: "SOLICIT", 2: "ADVERTISE", 3: "REQUEST", 4: "CONFIRM", 5: "RENEW",
              6: "REBIND", 7: "REPLY", 8: "RELEASE", 9: "DECLINE", 10: "RECONFIGURE",
              11: "INFORMATION-REQUEST", 12: "RELAY-FORW", 13: "RELAY-REPL"}

# option codes
CLIENTID, SERVERID, IA_NA, IA_TA, IAADDR, ORO, PREFERENCE, ELAPSED_TIME = 1, 2, 3, 4, 5, 6, 7, 8
STATUS_CODE, RAPID_COMMIT, DNS_SERVERS, DOMAIN_LIST, IA_PD, CLIENT_FQDN = 13, 14, 23, 24, 25, 39
INFORMATION_REFRESH_TIME = 32

# status codes
SUCCESS, UNSPEC_FAIL, NO_ADDRS_AVAIL, NO_BINDING, NOT_ON_LINK, USE_MULTICAST = range(6)
STATUS_NAMES = {0: "Success", 1: "UnspecFail", 2: "NoAddrsAvail", 3: "NoBinding",
                4: "NotOnLink", 5: "UseMulticast"}

INFINITY = 0xFFFFFFFF
MAX_OPTIONS = 64  # more than any real client sends; a message with more is not read further


class Malformed(Exception):
    """Not a DHCPv6 message we can read: dropped (a server answers nothing to those)."""


Options = list[tuple[int, bytes]]


def parse_options(data: bytes) -> Options:
    options: Options = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise Malformed(f"{len(data) - pos} stray bytes after the options")
        code, length = struct.unpack_from("!HH", data, pos)
        if pos + 4 + length > len(data):
            raise Malformed(f"option {code} runs past the end")
        options.append((code, data[pos + 4:pos + 4 + length]))
        if len(options) > MAX_OPTIONS:
            raise Malformed(f"more than {MAX_OPTIONS} options")
        pos += 4 + length
    return options


def pack_options(options: Options) -> bytes:
    return b"".join(struct.pack("!HH", code, len(value)) + value for code, value in options)


def first(options: Options, code: int) -> bytes | None:
    return next((value for c, value in options if c == code), None)


@dataclass
class IAAddr:
    address: str
    preferred: int
    valid: int
    options: Options = field(default_factory=list)

    @staticmethod
    def parse(data: bytes) -> IAAddr:
        if len(data) < 24:
            raise Malformed(f"IAADDR of {len(data)} bytes")
        preferred, valid = struct.unpack_from("!II", data, 16)
        return IAAddr(str(ipaddress.IPv6Address(data[:16])), preferred, valid,
                      parse_options(data[24:]))

    def pack(self) -> bytes:
        return ipaddress.IPv6Address(self.address).packed + \
            struct.pack("!II", self.preferred, self.valid) + pack_options(self.options)


@dataclass
class IANA:
    iaid: int
    t1: int = 0
    t2: int = 0
    addresses: list[IAAddr] = field(default_factory=list)
    status: tuple[int, str] | None = None  # its own status code option, when it has one

    @staticmethod
    def parse(data: bytes) -> IANA:
        if len(data) < 12:
            raise Malformed(f"IA_NA of {len(data)} bytes")
        iaid, t1, t2 = struct.unpack_from("!III", data)
        ia = IANA(iaid, t1, t2)
        for code, value in parse_options(data[12:]):
            if code == IAADDR:
                ia.addresses.append(IAAddr.parse(value))
            elif code == STATUS_CODE:
                ia.status = parse_status(value)
        return ia

    def pack(self) -> bytes:
        options: Options = [(IAADDR, a.pack()) for a in self.addresses]
        if self.status is not None:
            options.append((STATUS_CODE, status(*self.status)))
        return struct.pack("!III", self.iaid, self.t1, self.t2) + pack_options(options)


@dataclass
class Message:
    type: int
    xid: int  # 24 bits
    options: Options = field(default_factory=list)

    def get(self, code: int) -> bytes | None:
        return first(self.options, code)

    def iana(self) -> list[IANA]:
        return [IANA.parse(value) for code, value in self.options if code == IA_NA]

    @property
    def client_duid(self) -> bytes | None:
        return self.get(CLIENTID)

    def summary(self) -> str:
        name = TYPE_NAMES.get(self.type, f"type {self.type}")
        parts = [f"DHCPv6 {name}", f"xid 0x{self.xid:06x}"]
        duid = self.client_duid
        if duid:
            parts.append(f"duid {duid.hex()}")
        for ia in self.iana():
            addresses = ",".join(a.address for a in ia.addresses)
            parts.append(f"IA_NA {ia.iaid}" + (f" {addresses}" if addresses else ""))
            if ia.status is not None:
                parts.append(STATUS_NAMES.get(ia.status[0], str(ia.status[0])))
        top = self.get(STATUS_CODE)
        if top is not None:
            parts.append(STATUS_NAMES.get(parse_status(top)[0], "status"))
        if self.get(RAPID_COMMIT) is not None:
            parts.append("rapid-commit")
        return " ".join(parts)


def parse(data: bytes) -> Message:
    if len(data) < 4:
        raise Malformed(f"{len(data)} bytes: shorter than a DHCPv6 message")
    if data[0] in (RELAY_FORW, RELAY_REPL):
        raise Malformed("a relay message (the lab serves its own link only)")
    message = Message(data[0], int.from_bytes(data[1:4], "big"), parse_options(data[4:]))
    for code, value in message.options:  # the nested ones too: a reply never trips on them
        if code == IA_NA:
            IANA.parse(value)
        elif code == STATUS_CODE:
            parse_status(value)
    return message


def pack(message: Message) -> bytes:
    return bytes([message.type]) + message.xid.to_bytes(3, "big") + pack_options(message.options)


def status(code: int, text: str = "") -> bytes:
    return struct.pack("!H", code) + text.encode("utf-8")


def parse_status(data: bytes) -> tuple[int, str]:
    if len(data) < 2:
        raise Malformed("a status code of fewer than 2 bytes")
    return struct.unpack_from("!H", data)[0], data[2:].decode("utf-8", "replace")


def addresses(*values: str) -> bytes:
    return b"".join(ipaddress.IPv6Address(v).packed for v in values)


def domain_names(*names: str) -> bytes:
    """Names in DNS wire format without compression (RFC 8415 10, RFC 1035 3.1)."""
    return b"".join(encode_name(n) for n in names)


def encode_name(name: str, partial: bool = False) -> bytes:
    """One name; `partial` leaves the root label off (RFC 4704's partial names)."""
    labels = [label.encode("ascii") for label in name.strip(".").split(".") if label]
    return b"".join(bytes([len(label)]) + label for label in labels if len(label) < 64) + \
        (b"" if partial else b"\x00")


def decode_name(data: bytes) -> tuple[list[bytes], bool]:
    """The labels of one wire-format name, and whether it was complete (ended by the root)."""
    labels: list[bytes] = []
    pos = 0
    while pos < len(data):
        length = data[pos]
        if length == 0:
            return labels, True
        if length > 63 or pos + 1 + length > len(data):
            raise Malformed("a domain name label runs past its option")
        labels.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length
    return labels, False


def fqdn(flags: int, name: str, partial: bool = False) -> bytes:
    """Client FQDN option data (RFC 4704 4): flags, then the name in wire format."""
    return bytes([flags]) + encode_name(name, partial)


FQDN_S, FQDN_O, FQDN_N = 0x01, 0x02, 0x04
