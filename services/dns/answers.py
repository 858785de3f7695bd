"""Answers to queries (sans-IO): what records an answer holds, and the per-query path.

`Engine.respond(data, tcp, peer)` takes a datagram or a TCP message and says what to send:
the reply messages, or that the query goes to a forwarder, or nothing (dropped). `resolve()`
says which records answer a name and type; `set_zone` has packed.py pack all of those
answers when the zone is built, so a query costs a parse, a few dict lookups and a header,
whether or not the name exists. Whole UDP replies are also kept by query bytes (bounded).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dnslib import AAAA, QTYPE, RR, A, DNSLabel

from . import packed, wire
from .packed import Body, Sections
from .wire import FORMERR, NOERROR, NOTAUTH, NOTIMP, NXDOMAIN, REFUSED, SERVFAIL, Malformed, Query
from .zone import Name, Zone

if TYPE_CHECKING:  # dnssec.py imports dnspython: only a lab that signs pays for it
    from .dnssec import Signed

ANY, AXFR, IXFR, DS = 255, 252, 251, 43
CLASS_IN, CLASS_ANY = 1, 255
CACHE_LIMIT = 50_000  # whole UDP replies kept; a random-name flood just resets them
AXFR_CHUNK = 64  # records per AXFR message
GLUE_TYPES = (QTYPE.A, QTYPE.AAAA)

# Asked where a fault would act (services/dns FAULTS): (fault name, client address, name
# asked) -> what the journal calls the fault that acts ("dns.servfail #3"), or None.
FaultCheck = Callable[[str, str, str], "str | None"]
SLOW_SECONDS = 4.0  # the slow fault: under dig's 5 s timeout, so dig waits rather than retries
FAULT_NAMES = ("truncate-no-tcp", "servfail", "nxdomain", "wrong-address", "ttl-zero", "slow")
WRONG_ADDRESSES = {QTYPE.A: A("192.0.2.1"), QTYPE.AAAA: AAAA("2001:db8::1")}  # TEST-NET-1, RFC 3849


@dataclass(slots=True)
class Outcome:
    messages: list[bytes] = field(default_factory=list)
    query: Query | None = None
    forward: bool = False
    rcode: int = NOERROR
    faults: tuple[str, ...] = ()  # the faults that acted (never cached)
    delay: float = 0.0  # send the messages this many seconds later (the slow fault)


def allow_list(networks: list[str]) -> Callable[[str], bool]:
    """Who may transfer zones: everyone when `networks` is empty."""
    parsed = [ipaddress.ip_network(n, strict=False) for n in networks]
    if not parsed:
        return lambda peer: True

    def allowed(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in parsed)

    return allowed


def pack(zone: Zone) -> packed.Tables:
    """Every answer of `zone`, packed (pure: may run in a worker thread)."""
    return packed.build(names(zone), lambda owner: query_types(zone, owner),
                        lambda labels, qtype: resolve(zone, labels, qtype),
                        [*zone.apexes, *zone.delegations])


class Engine:
    view = "lab"  # the fake root's engines are "root" and "tld": the journal says which answered

    def __init__(self, zone: Zone, *, forwarding: bool = False, axfr: bool = True,
                 axfr_allowed: Callable[[str], bool] = lambda peer: True,
                 signed: Signed | None = None) -> None:
        self.forwarding = forwarding
        self.axfr = axfr
        self.axfr_allowed = axfr_allowed
        # Set (by the service) only while a DNS fault is on: the hot path's one check.
        # While it is set, no cached reply is served, and a faulty reply is never cached.
        self.faults: FaultCheck | None = None
        self.set_zone(zone, signed)

    def set_zone(self, zone: Zone, signed: Signed | None = None,
                 tables: packed.Tables | None = None) -> None:
        """Packs every answer of `zone` (packed.py; `tables`: pack(zone) done already, off
        the reactor), and forgets the replies of the last. With `signed` (dnssec.py),
        queries with the DO bit get signatures and proofs."""
        self.zone, self.signed = zone, signed
        # DO answers, made when asked (a denial's NSEC depends on the name): name, type -> body
        self._proven: dict[tuple[Name, int], Body | None] = {}
        self.tables = pack(zone) if tables is None else tables
        # UDP query bytes after the ID -> (reply after the ID, its outcome): a repeated
        # query (same name spelling, flags and EDNS) is answered by one dict lookup.
        self.replies: dict[bytes, tuple[bytes, Outcome]] = {}
        # The same for names spelt in mixed case (0x20), by packed.fold()'s key: (reply
        # header after the ID, reply after the question name, outcome).
        self.folded: dict[bytes, tuple[bytes, bytes, Outcome]] = {}
        # Names that do not exist, by shape: the query after the ID without its first
        # label's bytes -> the reply around them (see quick()).
        self.shapes: dict[bytes, tuple[bytes, bytes, int]] = {}
        self.existing = {packed.wire_name(owner) for owner in self.tables.names}

    def respond_udp(self, data: bytes, peer: str) -> tuple[bytes | None, Outcome]:
        """respond() for a datagram, through the cache of whole replies (names that exist)
        or of reply shapes (names that do not: a random-name flood fills no cache)."""
        if self.faults is None:  # while a fault is on, no cached reply is served
            hit = self.replies.get(data[2:])
            if hit is not None:
                return data[:2] + hit[0], hit[1]
        folded = packed.fold(data)  # a mixed-case name (0x20): the lower-case spelling's
        if folded is not None and self.faults is None:
            spelt = self.folded.get(folded[0])
            if spelt is not None:
                reply = data[:2] + spelt[0] + data[12:folded[1]] + spelt[1]
                self._keep(data, reply, spelt[2])  # this spelling again: the inlined path
                return reply, spelt[2]
        outcome = self.respond(data, False, peer)
        if not outcome.messages or outcome.faults:
            return (outcome.messages[0] if outcome.messages else None), outcome
        query, reply = outcome.query, outcome.messages[0]
        if query is not None and query.qtype not in (AXFR, IXFR):
            if query.do and self.signed is not None:
                pass  # a denial's proof depends on the name: neither cache nor shape
            elif query.labels in self.tables.names or not query.labels:
                if folded is not None:
                    if len(self.folded) >= CACHE_LIMIT:
                        self.folded = {}
                    self.folded[folded[0]] = (reply[2:12], reply[folded[1]:], outcome)
                self._keep(data, reply, outcome)
            else:
                if len(self.shapes) >= CACHE_LIMIT:
                    self.shapes = {}
                first = 13 + len(query.labels[0])
                self.shapes[data[2:13] + data[first:]] = (reply[2:12], reply[first:],
                                                          len(query.question) - 4)
        return reply, outcome

    def _keep(self, data: bytes, reply: bytes, outcome: Outcome) -> None:
        if len(self.replies) >= CACHE_LIMIT:
            self.replies = {}
        self.replies[data[2:]] = (reply[2:], outcome)

    def quick(self, data: bytes) -> bytes | None:
        """The reply to a datagram asking for a name that does not exist, made from the reply
        to an earlier one that differed only in its first label: below an existing name,
        every child that does not exist has the same answer, and that answer moves only
        with the question's length (the label's length is part of the shape). None: no
        such reply yet, or the name exists; respond_udp() then answers and learns."""
        if len(data) < 14 or not 0 < data[12] < 64:
            return None
        first = 13 + data[12]
        shape = self.shapes.get(data[2:13] + data[first:])
        if shape is None:
            return None
        head, tail, length = shape
        if data[12:12 + length].lower() in self.existing:
            return None
        return data[:2] + head + data[12:first] + tail

    # -- the per-query path ---------------------------------------------------------------

    def respond(self, data: bytes, tcp: bool, peer: str = "") -> Outcome:
        try:
            query = wire.parse(data)
        except Malformed:
            # UPDATE, NOTIFY and the like have sections a query has not: not ours to read
            rcode = NOTIMP if len(data) >= 12 and (data[2] >> 3) & 0x0F else FORMERR
            message = wire.error(data, rcode)
            return Outcome([message] if message else [], rcode=rcode)
        limit = 65535 if tcp else min(query.udp_size, wire.OUR_UDP_SIZE)
        if query.edns and query.edns_version > 0:
            return self._bare(query, wire.BADVERS, limit)
        if query.opcode != 0:
            return self._bare(query, NOTIMP, limit)
        if query.qclass not in (CLASS_IN, CLASS_ANY):
            return self._bare(query, REFUSED, limit)
        if query.qtype in (AXFR, IXFR):
            return self._transfer(query, tcp, peer)
        if self.faults is not None:
            return self._faulty(query, tcp, peer, limit)
        return self._answer(query, limit)

    def _answer(self, query: Query, limit: int) -> Outcome:
        if query.do and self.signed is not None:
            body = self._with_proofs(query.labels, query.qtype)
        else:
            body = self.tables.body(query.labels, query.qtype)
        if body is None:  # not ours
            if self.forwarding:
                return Outcome(query=query, forward=True)
            return self._bare(query, REFUSED, limit)
        data = body.at(len(query.question) - 4)
        return Outcome([wire.reply(query, body.rcode, body.aa, body.counts, data, limit=limit)],
                       query, rcode=body.rcode)

    def _faulty(self, query: Query, tcp: bool, peer: str, limit: int) -> Outcome:
        """The answer with the faults that are on for this client or name (FAULTS in
        __init__.py): an error or truncation instead of the answer, or the answer with its
        addresses or TTLs changed, or the answer late. Signed answers lose their proofs.
        The records are looked up again (slow, dnslib's) only when a fault changes them."""
        apex = self.zone.apex_of(query.labels)
        if apex is None:  # not ours (forwarded or refused): the faults are the lab's names'
            return self._answer(query, limit)
        check = self.faults
        assert check is not None
        asked = b".".join(query.labels).decode("ascii", "backslashreplace")
        on = {fault: label for fault in FAULT_NAMES
              if (label := check(fault, peer, asked)) is not None}
        if not on:
            return self._answer(query, limit)
        acted = []
        outcome: Outcome | None = None
        for fault in ("truncate-no-tcp", "servfail", "nxdomain"):  # one of them, in this order
            if fault in on:
                acted.append(on[fault])
                break
        if acted and "truncate-no-tcp" in on:
            # UDP: TC and no records, so the client asks over TCP, where nothing answers
            outcome = Outcome([] if tcp else [wire.reply(query, NOERROR, True, (0, 0, 0), b"",
                                                          limit=0)], query)
        elif acted and "servfail" in on:
            outcome = self._bare(query, SERVFAIL, limit)
        elif acted:
            outcome = self._packed(query, Sections(NXDOMAIN, True, [], [negative(self.zone, apex)]),
                                   limit)
        elif "wrong-address" in on or "ttl-zero" in on:
            sections = resolve(self.zone, query.labels, query.qtype)
            assert sections is not None  # the name has an apex
            wrong = WRONG_ADDRESSES.get(query.qtype)
            if "wrong-address" in on and wrong is not None \
                    and any(rr.rtype == query.qtype for rr in sections.answer):
                acted.append(on["wrong-address"])
                sections.answer = [RR(rr.rname, rr.rtype, rr.rclass, rr.ttl, wrong)
                                   if rr.rtype == query.qtype else rr for rr in sections.answer]
            if "ttl-zero" in on:
                acted.append(on["ttl-zero"])
                for rrs in (sections.answer, sections.authority, sections.additional):
                    rrs[:] = [RR(rr.rname, rr.rtype, rr.rclass, 0, rr.rdata) for rr in rrs]
            if acted:
                outcome = self._packed(query, sections, limit)
        if outcome is None:
            outcome = self._answer(query, limit)
        if outcome.messages and "slow" in on:
            acted.append(on["slow"])
            outcome.delay = SLOW_SECONDS
        outcome.faults = tuple(acted)
        return outcome

    def _packed(self, query: Query, sections: Sections, limit: int) -> Outcome:
        body = Body(sections, query.labels, len(query.labels))
        return Outcome([wire.reply(query, body.rcode, body.aa, body.counts, body.data, limit=limit)],
                       query, rcode=body.rcode)

    def _with_proofs(self, labels: Name, qtype: int) -> Body | None:
        key = (labels, qtype)
        if key in self._proven:
            return self._proven[key]
        assert self.signed is not None
        sections = resolve(self.zone, labels, qtype)
        body = None
        if sections is not None:
            body = Body(self.signed.add_proofs(sections, labels, qtype), labels, len(labels))
        if len(self._proven) >= CACHE_LIMIT:
            self._proven = {}
        self._proven[key] = body
        return body

    def _bare(self, query: Query, rcode: int, limit: int) -> Outcome:
        return Outcome([wire.reply(query, rcode, False, (0, 0, 0), b"", limit=limit)], query,
                       rcode=rcode)

    # -- zone transfers -------------------------------------------------------------------

    def _transfer(self, query: Query, tcp: bool, peer: str) -> Outcome:
        if query.qtype == IXFR:
            return self._bare(query, NOTIMP, 65535 if tcp else 512)
        if not tcp or not self.axfr or not self.axfr_allowed(peer):
            return self._bare(query, REFUSED, 65535 if tcp else 512)
        soa = self.zone.apexes.get(query.labels)
        if soa is None:
            return self._bare(query, NOTAUTH, 65535)
        records = [soa, *self.zone.rrs(query.labels), soa]
        messages = []
        for start in range(0, len(records), AXFR_CHUNK):
            body = Body(Sections(NOERROR, True, records[start:start + AXFR_CHUNK]),
                        query.labels, len(query.labels))
            messages.append(wire.reply(query, NOERROR, True, body.counts, body.data))
        return Outcome(messages, query)


# -- what an answer holds ---------------------------------------------------------------------

def names(zone: Zone) -> set[Name]:
    """Every name that exists in `zone`: owners, empty non-terminals, apexes, cuts."""
    return {*zone.records, *zone.nonterminals, *zone.apexes, *zone.delegations}


def query_types(zone: Zone, owner: Name) -> set[int]:
    """The query types that have an answer of their own at `owner`: its types, ANY, and
    the types at the end of its CNAME chain. Every other type gets the same answer."""
    by_type = zone.records.get(owner)
    if by_type is None:
        return set()
    found = {*by_type, ANY}
    for _ in range(8):
        if QTYPE.CNAME not in by_type:
            break
        by_type = zone.records.get(packed.lower(by_type[QTYPE.CNAME][0].rdata.label.label), {})
        found |= set(by_type)
    return found


def resolve(zone: Zone, labels: Name, qtype: int) -> Sections | None:
    """The records answering a name and type, or None when the name is not ours."""
    apex = zone.apex_of(labels)
    if apex is None:
        return None
    if qtype == DS and labels == apex and labels and labels in zone.delegations:
        parent = zone.apex_of(labels[1:])  # a DS is the parent's (RFC 4035 3.1.4.1)
        apex = apex if parent is None else parent
    for i in range(len(labels) - len(apex)):  # below a delegation (the fake root/TLD)
        cut = labels[i:]
        if cut in zone.delegations:
            ds = [rr for rr in zone.delegations[cut] if rr.rtype == DS]
            if i == 0 and qtype == DS and ds:
                return Sections(NOERROR, True, ds)
            ns = [rr for rr in zone.delegations[cut] if rr.rtype == QTYPE.NS]
            glue = [rr for rr in zone.delegations[cut] if rr.rtype in GLUE_TYPES]
            return Sections(NOERROR, False, [], ns, glue)
    by_type = zone.records.get(labels)
    exists = by_type is not None or labels in zone.nonterminals
    wildcard = None
    if not exists:  # RFC 4592: the wildcard child of the closest encloser, if there is one
        wildcard = (b"*", *closest_encloser(zone, labels, apex))
        by_type = zone.records.get(wildcard)
    answer: list[RR] = []
    if by_type is not None:
        if qtype == ANY:
            answer = [rr for rrs in by_type.values() for rr in rrs]
        elif qtype in by_type:
            answer = list(by_type[qtype])
        elif QTYPE.CNAME in by_type:
            answer = _chase(zone, by_type[QTYPE.CNAME], qtype)
    if wildcard is not None:  # synthesised: the wildcard's records under the asked name
        owner = DNSLabel(list(labels))
        answer = [RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata)
                  if packed.lower(rr.rname.label) == wildcard else rr for rr in answer]
    if answer:
        return Sections(NOERROR, True, answer, [], _glue(zone, answer))
    found = exists or by_type is not None
    return Sections(NOERROR if found else NXDOMAIN, True, [], [negative(zone, apex)], [])


def negative(zone: Zone, apex: Name) -> RR:
    """The SOA of a negative answer, with the negative TTL (RFC 2308)."""
    soa = zone.apexes[apex]
    return RR(soa.rname, QTYPE.SOA, ttl=min(soa.ttl, soa.rdata.times[4]), rdata=soa.rdata)


def closest_encloser(zone: Zone, labels: Name, apex: Name) -> Name:
    for i in range(1, len(labels) - len(apex)):
        if labels[i:] in zone.records or labels[i:] in zone.nonterminals:
            return labels[i:]
    return apex


def _chase(zone: Zone, cnames: list[RR], qtype: int) -> list[RR]:
    """The CNAME and, when its target is ours, the target's records (a few links deep)."""
    chain = list(cnames)
    for _ in range(8):
        by_type = zone.records.get(packed.lower(chain[-1].rdata.label.label), {})
        if qtype in by_type:
            return chain + by_type[qtype]
        if QTYPE.CNAME not in by_type or by_type[QTYPE.CNAME][0] in chain:
            break
        chain += by_type[QTYPE.CNAME]
    return chain


def _glue(zone: Zone, answer: list[RR]) -> list[RR]:
    """Addresses of the hosts NS, MX and SRV answers name, when they are ours."""
    extra = []
    for rr in answer:
        if rr.rtype in (QTYPE.NS, QTYPE.MX):
            target = rr.rdata.label
        elif rr.rtype == QTYPE.SRV:
            target = rr.rdata.target
        else:
            continue
        by_type = zone.records.get(packed.lower(target.label), {})
        for rtype in GLUE_TYPES:
            extra += [g for g in by_type.get(rtype, []) if g not in extra]
    return extra


def describe(query: Query | None, rcode: int) -> str:
    """A query as the journal shows it: NAME TYPE -> RCODE."""
    if query is None:
        return f"malformed query -> {wire_rcode(rcode)}"
    name = b".".join(query.labels).decode("ascii", "backslashreplace") or "."
    return f"{name} {QTYPE.get(query.qtype)} -> {wire_rcode(rcode)}"


def wire_rcode(rcode: int) -> str:
    from dnslib import RCODE

    return str(RCODE.get(rcode))
