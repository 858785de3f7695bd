"""DNS messages on the wire: the fast query parser and reply assembly (sans-IO).

dnslib is slow (tens of microseconds to parse, more to pack) and lets odd exceptions escape
on bad input, so the hot path never calls it: a query is read here by hand (header, one
question, at most an EDNS0 OPT record), and a reply is the header patched from the query,
the question as the client sent it, and a body packed once per (name, type) by answers.py.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct("!HBBHHHH")
OPT_TYPE = 41
OUR_UDP_SIZE = 1232  # the EDNS0 buffer we offer (DNS flag day 2020)

# rcodes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, NOTAUTH = 0, 1, 2, 3, 4, 5, 9
BADVERS = 16


class Malformed(Exception):
    """The message is not a well-formed query: answer FORMERR (if it has a header) or drop."""


class Query(NamedTuple):  # a tuple: made per query, five times cheaper than a dataclass
    id: int
    opcode: int
    rd: bool
    cd: bool
    question: bytes  # the question section exactly as received (name, type, class)
    labels: tuple[bytes, ...]  # the name's labels, lower-cased
    qtype: int
    qclass: int
    edns: bool
    udp_size: int  # the client's EDNS0 buffer (512 without EDNS0)
    edns_version: int
    do: bool = False  # EDNS0's DNSSEC OK bit: the client wants signatures and proofs


def parse(data: bytes) -> Query:
    """Read a query. Raises Malformed for anything that is not one well-formed query."""
    if len(data) < 12:
        raise Malformed("shorter than a header")
    ident, b1, b2, qd, an, ns, ar = HEADER.unpack_from(data)
    if b1 & 0x80:
        raise Malformed("a response, not a query")
    opcode = (b1 >> 3) & 0x0F
    if qd != 1 or an or ns or ar > 1:
        raise Malformed(f"counts qd={qd} an={an} ns={ns} ar={ar}")
    labels = []
    pos, end = 12, len(data)
    lowered = data[:min(end, 12 + 256)].lower()  # once, not label by label
    while True:
        if pos >= end:
            raise Malformed("name runs past the end")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:  # a compression pointer (never useful in a lone question) or junk
            raise Malformed("label pointer or bad label length in the question")
        pos += 1 + length
        if pos > 12 + 255:
            raise Malformed("name longer than 255 bytes")
        labels.append(lowered[pos - length:pos])
    if pos + 4 > end:
        raise Malformed("question runs past the end")
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    question = data[12:pos + 4]
    pos += 4
    edns, size, version, flags = False, 512, 0, 0
    if ar:
        # exactly one OPT record: root name, type 41, class = buffer size, ttl, rdata
        if end - pos < 11 or data[pos] != 0 or data[pos + 1:pos + 3] != b"\x00\x29":
            raise Malformed("additional record is not an EDNS0 OPT record")
        size, _ext, version, flags, rdlen = struct.unpack_from("!HBBHH", data, pos + 3)
        if pos + 11 + rdlen != end:
            raise Malformed("OPT record length does not match the message")
        edns, size = True, max(512, size)
        pos = end
    elif pos != end:
        raise Malformed("bytes after the question")
    return Query(ident, opcode, bool(b1 & 1), bool(b2 & 0x10), question, tuple(labels),
                 qtype, qclass, edns, size, version, bool(flags & 0x8000))


def opt_record(rcode_high: int = 0, do: bool = False) -> bytes:
    """Our OPT record; the DO bit echoes the query's (RFC 3225)."""
    return b"\x00" + struct.pack("!HHBBHH", OPT_TYPE, OUR_UDP_SIZE, rcode_high, 0,
                                  0x8000 if do else 0, 0)


def reply(query: Query, rcode: int, aa: bool, counts: tuple[int, int, int], body: bytes,
          ra: bool = False, limit: int = 65535) -> bytes:
    """The reply to `query`: its ID, RD and question, our flags, `body` (the sections after
    the question) and an OPT record when the query had one. Over `limit` it is truncated:
    TC set, sections emptied, the question kept (dnslib's truncate() drops the question,
    which leaves glibc waiting instead of retrying over TCP)."""
    an, ns, ar = counts
    opt = b""
    if query.edns:
        opt = opt_record(rcode >> 4, query.do)
        ar += 1
    b1 = 0x80 | (query.opcode << 3) | (0x04 if aa else 0) | (0x01 if query.rd else 0)
    b2 = (0x80 if ra else 0) | (0x10 if query.cd else 0) | (rcode & 0x0F)
    size = 12 + len(query.question) + len(body) + len(opt)
    if size > limit:
        return HEADER.pack(query.id, b1 | 0x02, b2, 1, 0, 0, 1 if opt else 0) + query.question + opt
    return HEADER.pack(query.id, b1, b2, 1, an, ns, ar) + query.question + body + opt


def error(data: bytes, rcode: int) -> bytes | None:
    """A bare error reply (no question) to a message we could not read; None: drop it
    (too short to have an ID, or itself a response: answering those makes loops)."""
    if len(data) < 12 or data[2] & 0x80:
        return None
    b1 = 0x80 | (data[2] & 0x78) | (data[2] & 0x01)
    return HEADER.pack(int.from_bytes(data[:2], "big"), b1, rcode, 0, 0, 0, 0)
