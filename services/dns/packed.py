"""Answers packed into wire format once, when the zone is built (sans-IO).

A reply is header + question + body. For a name that exists, the body never changes: it is
packed at zone build with its names compressed against the question and against each other.
For a name that does not exist (a typo, a random name, a search suffix) the body depends only
on the closest name that does exist (the NXDOMAIN and its SOA, a wildcard's records, a
referral) and on how long the question's name is: the body is packed once for a stand-in
question, and the compression pointers that move with the question's length are listed, so
another length costs one patched copy, kept per length. A miss then costs a few dict lookups,
which is what makes all-distinct names (dnsperf with random names, a browser's search suffixes)
nearly as fast as repeated ones.

The packer is ours, not dnslib's: dnslib packs a whole message per call (tens of
microseconds) and cannot say where its pointers are; the tests check our bodies against
dnslib's packing of the same records, parsed by dnspython.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from dnslib import QTYPE, RR, DNSBuffer

Name = tuple[bytes, ...]
Part = bytes | Name  # rdata in pieces: bytes as they are, names to compress
POINTER_LIMIT = 0x3FFF - 256  # a pointer must stay valid after moving by a name's length
STAND_IN = b"\x00"  # the first label of the stand-in question below an existing name
NAMED_RDATA = {QTYPE.CNAME, QTYPE.NS, QTYPE.PTR}


@dataclass
class Sections:
    """What an answer holds, as dnslib records: the resolver's output, the packer's input."""

    rcode: int
    aa: bool
    answer: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)


def wire_length(name: Name) -> int:
    return sum(len(label) + 1 for label in name) + 1


def wire_name(name: Name) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in name) + b"\x00"


def lower(name: Iterable[bytes]) -> Name:
    return tuple(label.lower() for label in name)


def fold(data: bytes) -> tuple[bytes, int] | None:
    """For a query whose name has upper-case letters (0x20: resolvers such as Unbound mix
    the case of each query and check it comes back): a cache key with the name lower-cased,
    and where the name ends. None when it is all lower case already, or not well formed.
    Every reply body points at the question for its names, so one cached reply answers
    every spelling with the client's own case, once its question is put back in."""
    pos, end = 12, min(len(data), 12 + 255)
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            break
        if length > 63:
            return None
        pos += 1 + length
    pos += 1
    name = data[12:pos]
    lowered = name.lower()  # ASCII letters only; length bytes (< 64) are never letters
    if lowered == name:
        return None
    return data[2:12] + lowered + data[pos:], pos


def parts(rr: RR) -> Sequence[Part]:
    """A record's rdata as bytes and names; names in CNAME, NS, PTR, MX and SOA may be
    compressed (RFC 1035), not those of SRV (RFC 2782) or of DNSSEC types (RFC 4034)."""
    rtype, data = rr.rtype, rr.rdata
    if rtype in NAMED_RDATA:
        return (tuple(data.label.label),)
    if rtype == QTYPE.MX:
        return (struct.pack("!H", data.preference), tuple(data.label.label))
    if rtype == QTYPE.SOA:
        return (tuple(data.mname.label), tuple(data.rname.label), struct.pack("!5I", *data.times))
    buffer = DNSBuffer()
    data.pack(buffer)
    return (bytes(buffer.data),)


class Writer:
    """Packs records after a question whose name is `qname`, of which only the last `known`
    labels are the same in every question the body will answer. Names compress against
    those labels, the whole question name (offset 12) and names written before; it notes
    the pointers that move when the question's name is longer or shorter."""

    def __init__(self, qname: Name, known: int) -> None:
        self.out = bytearray()
        self.moving: list[int] = []  # positions in `out` of pointers that move
        self.start = 12 + wire_length(qname) + 4  # where `out` begins in the message
        self.fixed = known == len(qname)  # the exact name: nothing ever moves
        self.targets: dict[Name, tuple[int, bool]] = {lower(qname): (12, False)}
        offset = 12
        for i, label in enumerate(qname):
            if i and i >= len(qname) - known:
                self.targets.setdefault(lower(qname[i:]), (offset, not self.fixed))
            offset += len(label) + 1

    def name(self, name: Name, compress: bool = True) -> None:
        key = lower(name)
        for i in range(len(name)):
            target = self.targets.get(key[i:]) if compress else None
            if target is not None:
                offset, moves = target
                if moves:
                    self.moving.append(len(self.out))
                self.out += struct.pack("!H", 0xC000 | offset)
                return
            here = self.start + len(self.out)
            if compress and here < POINTER_LIMIT:
                self.targets[key[i:]] = (here, not self.fixed)
            self.out.append(len(name[i]))
            self.out += name[i]
        self.out.append(0)

    def record(self, rr: RR) -> None:
        self.name(tuple(rr.rname.label))
        self.out += struct.pack("!HHI", rr.rtype, rr.rclass, rr.ttl)
        length_at = len(self.out)
        self.out += b"\x00\x00"
        compress = rr.rtype in NAMED_RDATA or rr.rtype in (QTYPE.MX, QTYPE.SOA)
        for part in parts(rr):
            if isinstance(part, tuple):
                self.name(part, compress)
            else:
                self.out += part
        struct.pack_into("!H", self.out, length_at, len(self.out) - length_at - 2)


class Body:
    """The sections after the question, packed for a question name of `qlen` bytes, with
    the positions of the pointers that move with that length."""

    __slots__ = ("_by_length", "aa", "counts", "data", "moving", "qlen", "rcode")

    def __init__(self, sections: Sections, qname: Name, known: int) -> None:
        writer = Writer(qname, known)
        for rr in (*sections.answer, *sections.authority, *sections.additional):
            writer.record(rr)
        self.rcode, self.aa = sections.rcode, sections.aa
        self.counts = (len(sections.answer), len(sections.authority), len(sections.additional))
        self.data, self.qlen = bytes(writer.out), wire_length(qname)
        self.moving = tuple(writer.moving)
        self._by_length: dict[int, bytes] = {self.qlen: self.data}

    def at(self, qlen: int) -> bytes:
        """The body for a question name of `qlen` bytes (at most 255: at most 255 copies)."""
        data = self._by_length.get(qlen)
        if data is None:
            patched = bytearray(self.data)
            delta = qlen - self.qlen
            for position in self.moving:
                pointer = struct.unpack_from("!H", patched, position)[0] + delta
                struct.pack_into("!H", patched, position, pointer)
            data = self._by_length[qlen] = bytes(patched)
        return data


Entry = tuple[dict[int, Body], Body]  # bodies by query type, and the one for other types
Resolver = Callable[[Name, int], "Sections | None"]
OTHER_TYPE = 65280  # a private-use type no zone holds: "any type the name does not have"


@dataclass
class Tables:
    """Every answer of a zone: `names` for names that exist (each with its own bodies),
    `below` for names that do not, by the closest existing name above them."""

    names: dict[Name, Entry] = field(default_factory=dict)
    below: dict[Name, Entry] = field(default_factory=dict)

    def body(self, labels: Name, qtype: int) -> Body | None:
        """The body answering `labels` (lower-case) and `qtype`; None: not our name."""
        entry = self.names.get(labels)
        if entry is None:
            for i in range(1, len(labels) + 1):
                entry = self.below.get(labels[i:])
                if entry is not None:
                    break
            else:
                return None
        by_type, other = entry
        return by_type.get(qtype, other)


def build(existing: Iterable[Name], types: Callable[[Name], Iterable[int]],
          resolve: Resolver, tops: Iterable[Name]) -> Tables:
    """Packs the answers for every name in `existing`, for each query type in
    types(name) and one for every other type, and those for names below each of them.
    Below a name that is not in `tops` (apexes and cuts) and has no wildcard at or above
    it, a missing name gets what it gets below the nearest top: the search walks on up to
    that, so most names need no entry of their own for their missing children."""
    tables = Tables()
    tops = set(tops)
    wild = {owner[1:] for owner in existing if owner[:1] == (b"*",)}
    for owner in existing:
        entry = _entry(owner, len(owner), types(owner), resolve)
        if entry is not None:
            tables.names[owner] = entry
        if owner not in tops and not any(owner[i:] in wild for i in range(len(owner) + 1)):
            continue
        stand_in = (STAND_IN, *owner)
        entry = _entry(stand_in, len(owner), types((b"*", *owner)), resolve)
        if entry is not None:
            tables.below[owner] = entry
    return tables


def _entry(qname: Name, known: int, qtypes: Iterable[int], resolve: Resolver) -> Entry | None:
    other = resolve(qname, OTHER_TYPE)
    if other is None:
        return None
    by_type = {}
    for qtype in qtypes:
        sections = resolve(qname, qtype)
        if sections is not None:
            by_type[qtype] = Body(sections, qname, known)
    return by_type, Body(other, qname, known)
