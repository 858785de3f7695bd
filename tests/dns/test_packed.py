"""The pre-packed answers (packed.py) against dnslib's packer: for a seeded set of queries,
the reply the server sends and the one dnslib packs from the same records say the same
thing when dnspython reads them (the bytes differ: compression is free to differ)."""

from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest
from dnslib import EDNS0, QTYPE, DNSHeader, DNSLabel, DNSQuestion, DNSRecord

from services.dns import wire
from services.dns.answers import Engine, resolve
from services.dns.zone import DynamicRecord, build
from tests.dns.test_core import lab_config

RECORDS = [
    DynamicRecord("*.w.lab.test", "A", "10.0.0.42", 30),  # a wildcard (RFC 4592)
    DynamicRecord("*.w.lab.test", "TXT", "wild", 30),
    DynamicRecord("*.cw.lab.test", "CNAME", "alias1.lab.test", 30),  # a wildcard CNAME
    DynamicRecord("alias1.lab.test", "CNAME", "alias2.lab.test", 30),  # a chain of two
    DynamicRecord("alias2.lab.test", "CNAME", "pc9.lab.test", 30),
    DynamicRecord("out.lab.test", "CNAME", "www.example.com.", 30),  # a CNAME leaving the zone
    DynamicRecord("deep.a.b.lab.test", "AAAA", "fd00::9", 30),  # empty non-terminals above
    DynamicRecord("_ldap._tcp.lab.test", "SRV", "0 5 389 pc9", 30),
    *(DynamicRecord("big.lab.test", "TXT", f"{i:02d}" + "y" * 150, 30) for i in range(9)),
]
EXISTING = ["lab.test", "pc9.lab.test", "v6.lab.test", "ns.lab.test", "mail.lab.test",
            "smtp.lab.test", "alias1.lab.test", "out.lab.test", "deep.a.b.lab.test",
            "a.b.lab.test", "b.lab.test", "_ldap._tcp.lab.test", "_tcp.lab.test",
            "big.lab.test", "w.lab.test", "*.w.lab.test", "7.8.9.10.in-addr.arpa",
            "8.9.10.in-addr.arpa"]
TYPES = ["A", "AAAA", "MX", "TXT", "SRV", "NS", "SOA", "CNAME", "PTR", "ANY", "HTTPS", "CAA"]


def zone_and_engine() -> tuple[object, Engine]:
    zone = build(lab_config(pc9="10.9.8.7", v6="fd00::5"), 0, RECORDS, 9)
    return zone, Engine(zone)


def random_case(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


def random_label(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-")
                   for _ in range(rng.randint(1, 20)))


def queries(seed: int, count: int) -> list[tuple[dns.message.Message, bool]]:
    """Existing names, children and grandchildren of them that do not exist (NXDOMAIN or
    a wildcard's answer), names outside the zone; random case, types, EDNS and transport."""
    rng = random.Random(seed)
    out: list[tuple[dns.message.Message, bool]] = []
    asked: list[tuple[str, str, bool, int, bool]] = []
    for _ in range(count):
        if asked and rng.random() < 0.3:  # an earlier query, another first label as long
            # (the rest in the same case: shapes are case-sensitive, so 0x20 clients miss)
            name, rtype, edns, payload, rd = rng.choice(asked)
            first, _, rest = name.partition(".")
            name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in first) + "." + rest
        else:
            base = rng.choice(EXISTING)
            name = base if rng.random() < 0.4 else ".".join(
                [random_label(rng) for _ in range(rng.randint(1, 2))] + [base])
            if rng.random() < 0.05:
                name = random_label(rng) + ".example.com"
            name = random_case(rng, name)
            rtype, edns = rng.choice(TYPES), rng.random() < 0.5
            payload, rd = rng.choice([512, 1232, 4096]), rng.random() < 0.7
            asked.append((name, rtype, edns, payload, rd))
        query = dns.message.make_query(name, rtype,
                                       use_edns=0 if edns else None, payload=payload)
        query.id = rng.randrange(65536)
        if not rd:
            query.flags &= ~dns.flags.RD
        out.append((query, rng.random() < 0.2))
    return out


def reference(zone, query: dns.message.Message, tcp: bool) -> bytes:
    """The reply as dnslib packs it from the records resolve() picks."""
    question = query.question[0]
    labels = tuple(label.lower() for label in question.name.labels[:-1])
    sections = resolve(zone, labels, question.rdtype)
    record = DNSRecord(DNSHeader(id=query.id, qr=1, rd=int(bool(query.flags & dns.flags.RD))),
                       q=DNSQuestion(DNSLabel(question.name.to_text()), question.rdtype))
    if sections is None:
        record.header.rcode = wire.REFUSED
    else:
        record.header.rcode, record.header.aa = sections.rcode, int(sections.aa)
        record.rr, record.auth, record.ar = sections.answer, sections.authority, sections.additional
    if query.edns >= 0:
        record.add_ar(EDNS0(udp_len=wire.OUR_UDP_SIZE))
    packed = bytes(record.pack())
    limit = 65535 if tcp else min(max(512, query.payload) if query.edns >= 0 else 512,
                                  wire.OUR_UDP_SIZE)
    if len(packed) > limit:  # what a truncated reply keeps: the question and the OPT record
        record.rr, record.auth, record.ar = [], [], []
        if query.edns >= 0:
            record.add_ar(EDNS0(udp_len=wire.OUR_UDP_SIZE))
        record.header.tc = 1
        packed = bytes(record.pack())
    return packed


def meaning(message: bytes) -> tuple:
    """What a reply says, as dnspython reads it; names compared case-insensitively."""
    reply = dns.message.from_wire(message)

    def section(rrsets) -> set[str]:
        return {f"{r.name.to_text().lower()} {r.ttl} {dns.rdatatype.to_text(r.rdtype)} "
                f"{item.to_text().lower()}" for r in rrsets for item in r}

    return (reply.id, reply.flags, reply.rcode(), reply.question[0].to_text(),
            reply.edns, reply.payload if reply.edns >= 0 else None,
            section(reply.answer), section(reply.authority), section(reply.additional))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_packed_answers_mean_what_dnslib_packs(seed):
    zone, engine = zone_and_engine()
    shapes = 0
    for query, tcp in queries(seed, 700):
        data = query.to_wire()
        expected = meaning(reference(zone, query, tcp))
        if tcp:
            assert meaning(engine.respond(data, True).messages[0]) == expected, query.question
            continue
        quick = engine.quick(data)  # from the reply to an earlier query of the same shape
        if quick is not None:
            shapes += 1
            assert meaning(quick) == expected, query.question
        reply, _ = engine.respond_udp(data, "127.0.0.1")
        assert meaning(reply) == expected, query.question
        assert len(reply) <= wire.OUR_UDP_SIZE
    assert shapes > 10  # the shape path was exercised, not only the full one


def test_shapes_see_the_question_case_and_stand_for_missing_names_only():
    _, engine = zone_and_engine()
    learn = dns.message.make_query("zz.lab.test", "A").to_wire()
    engine.respond_udp(learn, "127.0.0.1")
    other = dns.message.make_query("Qx.lab.test", "A")
    reply = dns.message.from_wire(engine.quick(other.to_wire()))
    assert reply.id == other.id and reply.question[0].name.to_text() == "Qx.lab.test."
    assert reply.rcode() == 3 and reply.authority[0].name.to_text().lower() == "lab.test."
    # same shape, but the name exists: the shape must not answer it
    assert engine.quick(dns.message.make_query("NS.lab.test", "A").to_wire()) is None


def test_wildcard_answers_carry_the_asked_name():
    _, engine = zone_and_engine()
    reply = dns.message.from_wire(engine.respond(
        dns.message.make_query("Host-7.W.lab.test", "A").to_wire(), False).messages[0])
    assert [r.to_text() for r in reply.answer] == ["Host-7.W.lab.test. 30 IN A 10.0.0.42"]
    nodata = dns.message.from_wire(engine.respond(
        dns.message.make_query("x.w.lab.test", "MX").to_wire(), False).messages[0])
    assert nodata.rcode() == 0 and not nodata.answer and nodata.authority
    chain = dns.message.from_wire(engine.respond(
        dns.message.make_query("a.cw.lab.test", "A").to_wire(), False).messages[0])
    assert [r.rdtype for r in chain.answer] == [QTYPE.CNAME, QTYPE.CNAME, QTYPE.CNAME, QTYPE.A]
    assert chain.answer[0].name == dns.name.from_text("a.cw.lab.test")


def test_caches_stay_bounded_under_a_flood_of_shapes(monkeypatch):
    from services.dns import answers

    monkeypatch.setattr(answers, "CACHE_LIMIT", 50)
    _, engine = zone_and_engine()
    rng = random.Random(7)
    for i in range(400):  # every query a new shape: another parent name each time
        name = f"{random_label(rng)}.{random_label(rng)}.lab.test"
        engine.respond_udp(dns.message.make_query(name, "A").to_wire(), "127.0.0.1")
        engine.respond_udp(dns.message.make_query("pc9.lab.test", "A", payload=512 + i,
                                                  use_edns=0).to_wire(), "127.0.0.1")
    assert 0 < len(engine.shapes) <= 50 and 0 < len(engine.replies) <= 50
    assert all(len(body._by_length) <= 256 for entry in engine.tables.below.values()
               for body in (entry[1], *entry[0].values()))


def test_mixed_case_queries_share_one_cached_reply_in_their_own_case():
    """0x20 (a resolver mixing the case of every query): each spelling is answered from
    one cached reply, its question and answer names in the client's case, its records
    those of the lower-case name; an all-lower spelling keeps the exact-bytes cache."""
    _, engine = zone_and_engine()
    plain = engine.respond_udp(dns.message.make_query("pc9.lab.test", "A").to_wire(), "-")[0]
    rng = random.Random(20)
    for n in range(30):
        spelt = "".join(c.upper() if rng.random() < 0.5 else c for c in "pc9.lab.test")
        if spelt == "pc9.lab.test":
            continue
        query = dns.message.make_query(spelt, "A")
        reply = dns.message.from_wire(engine.respond_udp(query.to_wire(), "-")[0])
        assert reply.id == query.id and reply.question[0].name.to_text() == spelt + "."
        assert [r.to_text() for r in reply.answer] == [f"{spelt}. 60 IN A 10.9.8.7"], n
        assert reply.answer[0].name.to_text() == spelt + "."  # the case is the client's
    assert len(engine.folded) == 1  # (each spelling also in the exact-bytes cache)
    assert dns.message.from_wire(plain).answer[0].to_text() == "pc9.lab.test. 60 IN A 10.9.8.7"
    # Names that differ in more than case never share a reply; junk is not folded.
    other = dns.message.make_query("PC9.lab.test", "AAAA")
    assert dns.message.from_wire(engine.respond_udp(other.to_wire(), "-")[0]).answer == []
    from services.dns.packed import fold

    assert fold(b"\x00" * 12 + b"\x40" + b"A" * 64) is None and fold(b"\x00" * 12) is None
