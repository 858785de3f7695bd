"""DNS without sockets: the zone, the fast query parser, answers, truncation, EDNS0, AXFR,
and fuzzing of the whole path (dnspython is the oracle for what we send)."""

from __future__ import annotations

import dataclasses

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import config as config_module
from services.config import ServiceSettings
from services.dns import wire
from services.dns.answers import Engine, allow_list
from services.dns.zone import DynamicRecord, build, fake_root


def lab_config(**hosts: str) -> config_module.LabConfig:
    config = config_module.default()
    # the mail services on one host "mail" (stand-ins where the tree has no such service)
    for package, aliases in (("smtp", ["smtp"]), ("imap", []), ("pop3", [])):
        existing = config.services.get(package, ServiceSettings())
        config.services[package] = dataclasses.replace(existing, host="mail", aliases=aliases)
    config.hosts.update(hosts)
    return config


def engine(dynamic=(), offset=0, **kw) -> Engine:
    return Engine(build(lab_config(pc9="10.9.8.7", v6="fd00::5"), offset, list(dynamic), 7), **kw)


def ask(eng: Engine, name: str, rtype: str, tcp: bool = False, peer: str = "127.0.0.1",
        **make) -> dns.message.Message:
    query = dns.message.make_query(name, rtype, **make)
    query.id = 4242
    outcome = eng.respond(query.to_wire(), tcp, peer)
    assert len(outcome.messages) == 1
    reply = dns.message.from_wire(outcome.messages[0])
    assert reply.id == 4242 and reply.flags & dns.flags.QR
    return reply


def rrset(reply: dns.message.Message, section: str = "answer") -> set[str]:
    return {f"{r.name} {dns.rdatatype.to_text(r.rdtype)} {item}"
            for r in getattr(reply, section) for item in r}


def test_forward_records_are_authoritative():
    eng = engine()
    reply = ask(eng, "ns.lab.test", "A")
    assert reply.flags & dns.flags.AA and not reply.flags & dns.flags.RA
    assert rrset(reply) == {"ns.lab.test. A 127.0.0.1"}
    assert rrset(ask(eng, "pc9.lab.test", "A")) == {"pc9.lab.test. A 10.9.8.7"}
    assert rrset(ask(eng, "v6.lab.test", "AAAA")) == {"v6.lab.test. AAAA fd00::5"}
    assert rrset(ask(eng, "lab.test", "NS")) == {"lab.test. NS ns.lab.test."}
    assert rrset(ask(eng, "lab.test", "TXT")) == {'lab.test. TXT "protolab teaching lab"'}


def test_mx_srv_and_cname_with_additional_data():
    eng = engine(offset=3000)
    mx = ask(eng, "lab.test", "MX")
    assert rrset(mx) == {"lab.test. MX 10 mail.lab.test."}
    assert rrset(mx, "additional") == {"mail.lab.test. A 127.0.0.1", "mail.lab.test. AAAA ::1"}
    srv = ask(eng, "_imaps._tcp.lab.test", "SRV")
    assert rrset(srv) == {"_imaps._tcp.lab.test. SRV 0 1 3993 mail.lab.test."}  # port + offset
    for label, port in (("_imap", 3143), ("_pop3", 3110), ("_pop3s", 3995), ("_submission", 3587)):
        assert f" {port} " in next(iter(rrset(ask(eng, f"{label}._tcp.lab.test", "SRV"))))
    cname = ask(eng, "smtp.lab.test", "A")  # an alias is a CNAME, followed in the answer
    assert rrset(cname) == {"smtp.lab.test. CNAME mail.lab.test.", "mail.lab.test. A 127.0.0.1"}


def test_negative_answers_carry_the_soa():
    eng = engine()
    nx = ask(eng, "nothing.lab.test", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
    assert [r.rdtype for r in nx.authority] == [dns.rdatatype.SOA]
    nodata = ask(eng, "ns.lab.test", "MX")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert [r.rdtype for r in nodata.authority] == [dns.rdatatype.SOA]
    between = ask(eng, "_tcp.lab.test", "A")  # an empty non-terminal exists
    assert between.rcode() == dns.rcode.NOERROR and not between.answer


def test_outside_names_refused_without_recursion():
    reply = ask(engine(), "example.com", "A")
    assert reply.rcode() == dns.rcode.REFUSED and not reply.flags & dns.flags.RA
    query = dns.message.make_query("example.com", "A")
    assert engine(forwarding=True).respond(query.to_wire(), False).forward


def test_reverse_zones_follow_addresses():
    eng = engine([DynamicRecord("pc1.lab.test", "A", "10.9.8.20", 60)])
    assert rrset(ask(eng, "7.8.9.10.in-addr.arpa", "PTR")) == {"7.8.9.10.in-addr.arpa. PTR pc9.lab.test."}
    assert rrset(ask(eng, "20.8.9.10.in-addr.arpa", "PTR")) == {"20.8.9.10.in-addr.arpa. PTR pc1.lab.test."}
    nx = ask(eng, "99.8.9.10.in-addr.arpa", "PTR")
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].name.to_text() == "8.9.10.in-addr.arpa."
    v6 = ask(eng, "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa", "PTR")
    assert rrset(v6) == {f"{v6.question[0].name} PTR v6.lab.test."}
    assert ask(eng, "1.1.1.1.in-addr.arpa", "PTR").rcode() == dns.rcode.REFUSED


def test_every_host_has_aaaa_at_the_lab_ipv6_address_and_its_ip6_arpa_ptr():
    eng = engine()
    assert rrset(ask(eng, "ns.lab.test", "AAAA")) == {"ns.lab.test. AAAA ::1"}
    assert rrset(ask(eng, "pc9.lab.test", "AAAA")) == set()  # [hosts] gives it IPv4 only
    ptr = ask(eng, "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa", "PTR")
    (answer,) = rrset(ptr)
    assert answer.endswith(".lab.test.") and ptr.flags & dns.flags.AA
    config = lab_config()
    config.lab.address6 = ""  # no IPv6 address: no AAAA
    quiet = Engine(build(config, 0, [], 7))
    assert rrset(ask(quiet, "ns.lab.test", "AAAA")) == set()
    moved = lab_config()
    moved.lab.address = "10.203.0.1"  # on a network (net up): ::1 is no address of the lab
    assert rrset(ask(Engine(build(moved, 0, [], 7)), "ns.lab.test", "AAAA")) == set()
    moved.lab.address6 = "fd00:203::1"
    assert rrset(ask(Engine(build(moved, 0, [], 7)), "ns.lab.test", "AAAA")) == {
        "ns.lab.test. AAAA fd00:203::1"}


def test_question_case_is_echoed():
    reply = ask(engine(), "Ns.LaB.TeSt", "A")
    assert reply.question[0].name.to_text() == "Ns.LaB.TeSt."
    assert reply.answer[0][0].address == "127.0.0.1"


def test_edns_answered_and_badvers():
    eng = engine()
    reply = ask(eng, "ns.lab.test", "A", use_edns=0, payload=4096)
    assert reply.edns == 0 and reply.payload == wire.OUR_UDP_SIZE
    assert ask(eng, "ns.lab.test", "A").edns == -1  # no OPT unless asked
    bad = ask(eng, "ns.lab.test", "A", use_edns=1)
    assert bad.rcode() == dns.rcode.BADVERS


def big_engine(count: int) -> Engine:
    return engine([DynamicRecord("big.lab.test", "TXT", f"{i:03d}" + "x" * 200, 60) for i in range(count)])


def test_udp_truncation_keeps_the_question():
    eng = big_engine(8)  # ~1.7 kB of TXT
    plain = ask(eng, "big.lab.test", "TXT")
    assert plain.flags & dns.flags.TC and not plain.answer
    assert plain.question[0].name.to_text() == "big.lab.test."  # dnslib's truncate() drops it
    edns = ask(eng, "big.lab.test", "TXT", use_edns=0, payload=4096)
    assert edns.flags & dns.flags.TC and edns.edns == 0  # over our 1232
    full = ask(eng, "big.lab.test", "TXT", tcp=True)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 8
    fits = ask(big_engine(4), "big.lab.test", "TXT", use_edns=0, payload=1232)
    assert not fits.flags & dns.flags.TC and len(fits.answer[0]) == 4


def test_axfr_over_tcp_only_and_restricted():
    eng = engine(axfr_allowed=allow_list(["10.0.0.0/8"]))
    query = dns.message.make_query("lab.test", "AXFR")
    outcome = eng.respond(query.to_wire(), True, "10.1.2.3")
    records = [r for m in outcome.messages for r in dns.message.from_wire(m, one_rr_per_rrset=True).answer]
    assert records[0].rdtype == records[-1].rdtype == dns.rdatatype.SOA
    assert any(r.name.to_text() == "pc9.lab.test." for r in records)
    for tcp, peer in ((True, "192.168.1.1"), (False, "10.1.2.3")):
        answer = eng.respond(query.to_wire(), tcp, peer).messages[0]
        assert dns.message.from_wire(answer).rcode() == dns.rcode.REFUSED
    reverse = dns.message.make_query("8.9.10.in-addr.arpa", "AXFR")
    assert eng.respond(reverse.to_wire(), True, "10.1.2.3").messages


def test_serial_and_zone_change_reset_the_cache():
    eng = engine()
    assert ask(eng, "new.lab.test", "A").rcode() == dns.rcode.NXDOMAIN
    eng.set_zone(build(lab_config(), 0, [DynamicRecord("new.lab.test", "A", "10.0.0.9", 60)], 8))
    assert rrset(ask(eng, "new.lab.test", "A")) == {"new.lab.test. A 10.0.0.9"}
    assert ask(eng, "lab.test", "SOA").answer[0][0].serial == 8


def test_fake_root_and_tld_refer_down_to_the_lab():
    root, tld = fake_root(lab_config(), "10.199.0.1")
    referral = ask(Engine(root), "pc.lab.test", "A")
    assert not referral.flags & dns.flags.AA and not referral.answer
    assert rrset(referral, "authority") == {"test. NS tld.lab.test."}
    assert rrset(referral, "additional") == {"tld.lab.test. A 127.0.0.3"}
    down = ask(Engine(tld), "pc.lab.test", "A")
    assert rrset(down, "authority") == {"lab.test. NS ns.lab.test."}
    assert rrset(down, "additional") == {"ns.lab.test. A 10.199.0.1"}
    assert rrset(ask(Engine(root), ".", "NS")) == {". NS root.lab.test."}


@pytest.mark.parametrize("data, expect", [
    (b"", None), (b"\x12\x34", None),
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", wire.FORMERR),  # question missing
    # a pointer loop
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01", wire.FORMERR),
    (b"\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", wire.FORMERR),  # wrong count
    # a label that is not UTF-8
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03\xff\xfe\xfd\x00\x00\x01\x00\x01",
     wire.REFUSED),
    (b"\x12\x34\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01", None),  # a response
    (b"\x12\x34\x28\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x00\x06\x00\x01\x00", wire.NOTIMP),  # UPDATE
])
def test_malformed_queries(data, expect):
    outcome = engine().respond(data, False)
    if expect is None:
        assert outcome.messages == []
    else:
        reply = outcome.messages[0]
        assert reply[:2] == b"\x12\x34" and reply[3] & 0x0F == expect and reply[2] & 0x80


def _check(data: bytes, tcp: bool) -> None:
    outcome = engine().respond(data, tcp)
    for message in outcome.messages:
        assert message[2] & 0x80  # a reply
        assert message[:2] == data[:2]
        dns.message.from_wire(message, question_only=True)  # dnspython reads it
        assert tcp or len(message) <= wire.OUR_UDP_SIZE


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_fuzz_random_bytes(data, tcp):
    _check(data, tcp)


VALID = dns.message.make_query("ns.lab.test", "A", use_edns=0).to_wire()


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(VALID)))
def test_fuzz_mutated_queries(changes, cut):
    data = bytearray(VALID)
    for position, value in changes:
        data[position] = value
    _check(bytes(data[:max(cut, 2)]), False)


def test_fake_root_listeners_name_their_own_addresses_for_the_table():
    from services import dns

    config = lab_config()
    settings = config.service("dns")
    config.services["dns"] = dataclasses.replace(settings, fake_root=True,
                                                 root_address="127.0.0.2", tld_address="127.0.0.3")
    by_name = {listener.name: listener for listener in dns.listeners(config)}
    assert (by_name["root"].address, by_name["tld"].address) == ("127.0.0.2", "127.0.0.3")
    assert by_name["dns"].address == ""  # the lab's bind address
