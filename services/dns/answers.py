"""Answers to queries, packed once per (name, type) and patched per query (sans-IO).

`Engine.respond(data, tcp, peer)` takes a datagram or a TCP message and says what to send:
the reply messages, or that the query goes to a forwarder, or nothing (dropped). Bodies are
packed with dnslib the first time a (name, type, class) is asked and kept until the zone
changes, so a repeated query costs a dict lookup and a header: that is the speed target.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from dnslib import QTYPE, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from . import wire
from .wire import FORMERR, NOERROR, NOTAUTH, NOTIMP, NXDOMAIN, REFUSED, Malformed, Query
from .zone import Zone

ANY, AXFR, IXFR = 255, 252, 251
CLASS_IN, CLASS_ANY = 1, 255
CACHE_LIMIT = 50_000  # distinct (name, type) bodies kept; a random-name flood just resets it
AXFR_CHUNK = 64  # records per AXFR message
GLUE_TYPES = (QTYPE.A, QTYPE.AAAA)

Body = tuple[int, bool, tuple[int, int, int], bytes]  # rcode, aa, counts, packed sections


@dataclass
class Outcome:
    messages: list[bytes] = field(default_factory=list)
    query: Query | None = None
    forward: bool = False
    rcode: int = NOERROR


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


class Engine:
    def __init__(self, zone: Zone, *, forwarding: bool = False, axfr: bool = True,
                 axfr_allowed: Callable[[str], bool] = lambda peer: True) -> None:
        self.zone = zone
        self.forwarding = forwarding
        self.axfr = axfr
        self.axfr_allowed = axfr_allowed
        self._cache: dict[tuple[tuple[bytes, ...], int], Body | None] = {}
        # UDP query bytes after the ID -> (reply after the ID, its outcome): a repeated
        # query (same name spelling, flags and EDNS) is answered by one dict lookup.
        self.replies: dict[bytes, tuple[bytes, Outcome]] = {}

    def set_zone(self, zone: Zone) -> None:
        self.zone = zone
        self._cache = {}
        self.replies = {}

    def respond_udp(self, data: bytes, peer: str) -> tuple[bytes | None, Outcome]:
        """respond() for a datagram, through the cache of whole replies."""
        hit = self.replies.get(data[2:])
        if hit is not None:
            return data[:2] + hit[0], hit[1]
        outcome = self.respond(data, False, peer)
        if not outcome.messages:
            return None, outcome
        if outcome.query is not None and outcome.query.qtype not in (AXFR, IXFR):
            if len(self.replies) >= CACHE_LIMIT:
                self.replies = {}
            self.replies[data[2:]] = (outcome.messages[0][2:], outcome)
        return outcome.messages[0], outcome

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
        key = (query.labels, query.qtype)
        body = self._cache.get(key, False)
        if body is False:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache = {}
            body = self._cache[key] = self.resolve(query.labels, query.qtype)
        if body is None:  # not ours
            if self.forwarding:
                return Outcome(query=query, forward=True)
            return self._bare(query, REFUSED, limit)
        rcode, aa, counts, packed = body
        return Outcome([wire.reply(query, rcode, aa, counts, packed, limit=limit)], query, rcode=rcode)

    def _bare(self, query: Query, rcode: int, limit: int) -> Outcome:
        return Outcome([wire.reply(query, rcode, False, (0, 0, 0), b"", limit=limit)], query,
                       rcode=rcode)

    # -- building bodies ------------------------------------------------------------------

    def resolve(self, labels: tuple[bytes, ...], qtype: int) -> Body | None:
        """The packed answer for a name and type, or None when the name is not ours."""
        zone = self.zone
        apex = zone.apex_of(labels)
        if apex is None:
            return None
        for i in range(len(labels) - len(apex)):  # below a delegation (the fake root/TLD)
            cut = labels[i:]
            if cut in zone.delegations:
                ns = [rr for rr in zone.delegations[cut] if rr.rtype == QTYPE.NS]
                glue = [rr for rr in zone.delegations[cut] if rr.rtype != QTYPE.NS]
                return self._pack(labels, qtype, NOERROR, False, [], ns, glue)
        by_type = zone.records.get(labels)
        answer: list[RR] = []
        if by_type is not None:
            if qtype == ANY:
                answer = [rr for rrs in by_type.values() for rr in rrs]
            elif qtype in by_type:
                answer = list(by_type[qtype])
            elif QTYPE.CNAME in by_type:
                answer = self._chase(by_type[QTYPE.CNAME], qtype)
        if answer:
            return self._pack(labels, qtype, NOERROR, True, answer, [], self._glue(answer))
        soa = zone.apexes[apex]
        negative = RR(soa.rname, QTYPE.SOA, ttl=min(soa.ttl, soa.rdata.times[4]), rdata=soa.rdata)
        exists = by_type is not None or labels in zone.nonterminals
        return self._pack(labels, qtype, NOERROR if exists else NXDOMAIN, True, [], [negative], [])

    def _chase(self, cnames: list[RR], qtype: int) -> list[RR]:
        """The CNAME and, when its target is ours, the target's records (a few links deep)."""
        chain = list(cnames)
        for _ in range(8):
            target = tuple(label.lower() for label in chain[-1].rdata.label.label)
            by_type = self.zone.records.get(target, {})
            if qtype in by_type:
                return chain + by_type[qtype]
            if QTYPE.CNAME not in by_type or by_type[QTYPE.CNAME][0] in chain:
                break
            chain += by_type[QTYPE.CNAME]
        return chain

    def _glue(self, answer: list[RR]) -> list[RR]:
        """Addresses of the hosts NS, MX and SRV answers name, when they are ours."""
        extra = []
        for rr in answer:
            if rr.rtype in (QTYPE.NS, QTYPE.MX):
                target = rr.rdata.label
            elif rr.rtype == QTYPE.SRV:
                target = rr.rdata.target
            else:
                continue
            by_type = self.zone.records.get(tuple(l.lower() for l in target.label), {})
            for rtype in GLUE_TYPES:
                extra += [g for g in by_type.get(rtype, []) if g not in extra]
        return extra

    @staticmethod
    def _pack(labels: tuple[bytes, ...], qtype: int, rcode: int, aa: bool, answer: list[RR],
              authority: list[RR], additional: list[RR]) -> Body:
        record = DNSRecord(DNSHeader(qr=1), q=DNSQuestion(DNSLabel(labels), qtype))
        record.rr, record.auth, record.ar = answer, authority, additional
        packed = record.pack()
        question = sum(len(l) + 1 for l in labels) + 1 + 4
        return rcode, aa, (len(answer), len(authority), len(additional)), packed[12 + question:]

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
            chunk = records[start:start + AXFR_CHUNK]
            _, _, counts, body = self._pack(query.labels, AXFR, NOERROR, True, chunk, [], [])
            messages.append(wire.reply(query, NOERROR, True, counts, body))
        return Outcome(messages, query)


def describe(query: Query | None, rcode: int) -> str:
    """A query as the journal shows it: NAME TYPE -> RCODE."""
    if query is None:
        return f"malformed query -> {wire_rcode(rcode)}"
    name = b".".join(query.labels).decode("ascii", "backslashreplace") or "."
    return f"{name} {QTYPE.get(query.qtype)} -> {wire_rcode(rcode)}"


def wire_rcode(rcode: int) -> str:
    from dnslib import RCODE

    return str(RCODE.get(rcode))
