"""DNS faults (issue 17): dig sees SERVFAIL, NXDOMAIN, a TEST-NET address, TTL 0, a
truncated answer with nothing over TCP, and a late answer; for the target only, journaled,
and gone when cleared. The engine's part is tested sans-IO first."""

from __future__ import annotations

import struct

import pytest
from dnslib import DNSRecord

from services.dns.answers import SLOW_SECONDS, Engine
from tests.conftest import need
from tests.dns.test_clients import dig
from tests.dns.test_core import engine as lab_engine
from tests.lab.test_faults import settled

ZONE = """
[hosts]
pc9 = "10.9.8.7"
"""


def engine_with(faults: dict[str, str]) -> Engine:
    """An engine whose faults are on for targets (client address or name): name -> target."""
    engine = lab_engine()

    def check(fault: str, peer: str, asked: str) -> str | None:
        target = faults.get(fault)
        return f"dns.{fault} #1" if target in (peer, asked) else None

    engine.faults = check
    return engine


def ask(engine: Engine, name: str, qtype: str = "A", peer: str = "10.0.0.5",
        tcp: bool = False) -> tuple[DNSRecord | None, object]:
    data = bytes(DNSRecord.question(name, qtype).pack())
    if tcp:
        outcome = engine.respond(data, True, peer)
        return (DNSRecord.parse(outcome.messages[0]) if outcome.messages else None), outcome
    reply, outcome = engine.respond_udp(data, peer)
    return (DNSRecord.parse(reply) if reply else None), outcome


def test_core_faults_change_only_their_target():
    engine = engine_with({"servfail": "pc9.lab.test", "wrong-address": "10.0.0.6",
                          "ttl-zero": "10.0.0.6", "truncate-no-tcp": "10.0.0.7",
                          "slow": "10.0.0.8", "nxdomain": "10.0.0.9"})
    reply, outcome = ask(engine, "pc9.lab.test")
    assert reply.header.rcode == 2 and outcome.faults == ("dns.servfail #1",)
    reply, _ = ask(engine, "ns.lab.test", peer="10.0.0.6")
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("192.0.2.1", 0)]
    reply, outcome = ask(engine, "ns.lab.test", "AAAA", peer="10.0.0.6")  # ::1 in the zone
    assert set(outcome.faults) == {"dns.wrong-address #1", "dns.ttl-zero #1"}
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("2001:db8::1", 0)]
    reply, _ = ask(engine, "ns.lab.test", peer="10.0.0.7")
    assert reply.header.tc and not reply.rr and reply.q.qname == "ns.lab.test."
    reply, outcome = ask(engine, "ns.lab.test", peer="10.0.0.7", tcp=True)
    assert reply is None and not outcome.forward  # TCP: closed, unanswered
    reply, outcome = ask(engine, "ns.lab.test", peer="10.0.0.8")
    assert reply.rr and outcome.delay == SLOW_SECONDS
    reply, _ = ask(engine, "ns.lab.test", peer="10.0.0.9")
    assert reply.header.rcode == 3 and reply.auth[0].rtype == 6  # NXDOMAIN with the SOA
    reply, outcome = ask(engine, "ns.lab.test")  # anyone else: the real answer
    assert reply.header.rcode == 0 and str(reply.rr[0].rdata) != "192.0.2.1"
    assert not outcome.faults and outcome.delay == 0


def test_core_cache_never_keeps_or_serves_a_faulty_answer():
    engine = engine_with({})
    engine.faults = None
    data = bytes(DNSRecord.question("pc9.lab.test").pack())
    engine.respond_udp(data, "10.0.0.5")
    assert data[2:] in engine.replies  # cached while no fault is on
    engine.faults = lambda fault, peer, asked: "dns.servfail #1" if fault == "servfail" else None
    reply, _ = engine.respond_udp(data, "10.0.0.5")
    assert struct.unpack("!H", reply[2:4])[0] & 0xF == 2  # not the cached NOERROR
    engine.replies.clear()
    engine.respond_udp(data, "10.0.0.5")
    assert data[2:] not in engine.replies  # the faulty answer was not kept


@pytest.fixture
def server(lab):
    need("dig")
    return lab.start(only="dns", config=ZONE)


def status(output: str) -> str:
    return output.split("status: ", 1)[1].split(",", 1)[0] if "status: " in output else output


def test_dig_sees_servfail_for_a_name_then_cleared(server):
    port = server.port("dns", "dns")
    assert status(dig(port, "pc9.lab.test")) == "NOERROR"  # and now cached
    assert server.cli("fault", "add", "dns.servfail", "--target", "pc9.lab.test").returncode == 0
    hit = settled(lambda: dig(port, "pc9.lab.test"), lambda out: status(out) == "SERVFAIL")
    assert status(hit) == "SERVFAIL"
    assert status(dig(port, "ns.lab.test")) == "NOERROR"  # another name is unchanged
    assert "fault dns.servfail #1" in server.journal_until("dns", "fault dns.servfail")
    assert server.cli("fault", "clear").returncode == 0
    again = settled(lambda: dig(port, "pc9.lab.test"), lambda out: status(out) == "NOERROR")
    assert "10.9.8.7" in again


def test_dig_sees_nxdomain_wrong_address_and_ttl_zero(server):
    port = server.port("dns", "dns")
    server.cli("fault", "add", "dns.nxdomain", "--target", "pc9.lab.test")
    hit = settled(lambda: dig(port, "pc9.lab.test"), lambda out: status(out) == "NXDOMAIN")
    assert status(hit) == "NXDOMAIN" and "SOA" in hit
    server.cli("fault", "clear")
    server.cli("fault", "add", "dns.wrong-address", "--target", "127.0.0.1")
    server.cli("fault", "add", "dns.ttl-zero", "--target", "127.0.0.1")
    answer = settled(lambda: dig(port, "+noall", "+answer", "pc9.lab.test"),
                     lambda out: "192.0.2.1" in out and "\t0\t" in out)
    assert answer.split() == ["pc9.lab.test.", "0", "IN", "A", "192.0.2.1"]
    # A fault for another client leaves this one's answers alone
    server.cli("fault", "clear")
    server.cli("fault", "add", "dns.wrong-address", "--target", "10.99.0.1")
    clean = settled(lambda: dig(port, "+short", "pc9.lab.test"), lambda out: "10.9.8.7" in out)
    assert clean.split() == ["10.9.8.7"]


def test_dig_sees_truncation_and_nothing_over_tcp(server):
    port = server.port("dns", "dns")
    server.cli("fault", "add", "dns.truncate-no-tcp", "--target", "pc9.lab.test")
    udp = settled(lambda: dig(port, "+ignore", "pc9.lab.test"), lambda out: " tc" in out)
    assert " tc" in udp.split("flags:", 1)[1].split(";", 1)[0] and "ANSWER: 0" in udp
    tcp = dig(port, "+tcp", "pc9.lab.test")
    assert "status:" not in tcp and ("communications error" in tcp or "end of file" in tcp), tcp
    assert "status: NOERROR" in dig(port, "+tcp", "ns.lab.test")  # another name over TCP


def test_dig_waits_for_a_slow_answer(server):
    port = server.port("dns", "dns")
    server.cli("fault", "add", "dns.slow", "--target", "127.0.0.1")
    server.journal_until("dns", "zone lab.test")  # the lab is up; the fault is read at start
    # a timeout under the delay (dig's last +time wins): the answer never comes in time...
    late = settled(lambda: dig(port, "+time=2", "pc9.lab.test"), lambda out: "timed out" in out)
    assert "timed out" in late
    # ...and with room for it, it comes (dig's "Query time" says how late)
    patient = dig(port, "+time=8", "pc9.lab.test")
    assert "10.9.8.7" in patient
    assert "fault dns.slow #1" in server.journal_until("dns", "fault dns.slow")
