"""DNSSEC without sockets: the signed zone's answers validate with dnspython, offline, from
the fake root's key down (DNSKEY, RRSIG, NSEC, DS), and the lesson switches break them."""

from __future__ import annotations

import dataclasses
from typing import Any

import dns.dnssec
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from services.dns.answers import Engine
from services.dns.dnssec import Keys, combined, sign
from services.dns.zone import DynamicRecord, build, fake_root
from tests.dns.test_core import lab_config

LAB, TLD = (b"lab", b"test"), (b"test",)
IN = dns.rdataclass.IN


def signed_engine(mode: str = "on") -> tuple[Engine, Keys]:
    config = lab_config(pc9="10.9.8.7")
    config.services["dns"] = dataclasses.replace(config.service("dns"), fake_root=True)
    lab = build(config, 0, [DynamicRecord("*.w.lab.test", "A", "10.0.0.42", 30)], 11)
    root, tld = fake_root(config, "127.0.0.1")
    zone = combined(lab, root, tld)
    keys = Keys(None)
    return Engine(zone, signed=sign(zone, keys, mode, children=[TLD, LAB])), keys


def ask(engine: Engine, name: str, rtype: str) -> dns.message.Message:
    query = dns.message.make_query(name, rtype, want_dnssec=True)
    return dns.message.from_wire(engine.respond(query.to_wire(), False).messages[0])


def keyring(engine: Engine, zone: str) -> Any:
    """The zone's DNSKEY RRset, itself validated by its own signature."""
    reply = ask(engine, zone, "DNSKEY")
    keys = reply.find_rrset(reply.answer, dns.name.from_text(zone), IN, dns.rdatatype.DNSKEY)
    sig = reply.find_rrset(reply.answer, dns.name.from_text(zone), IN, dns.rdatatype.RRSIG,
                           dns.rdatatype.DNSKEY)
    ring: dict[dns.name.Name, Any] = {dns.name.from_text(zone): keys}
    dns.dnssec.validate(keys, sig, ring)
    return ring


def validate_all(reply: dns.message.Message, ring) -> int:
    count = 0
    for section in (reply.answer, reply.authority):
        for rrset in section:
            if rrset.rdtype == dns.rdatatype.RRSIG:
                continue
            sig = reply.find_rrset(section, rrset.name, IN, dns.rdatatype.RRSIG, rrset.rdtype)
            dns.dnssec.validate(rrset, sig, ring)
            count += 1
    return count


def test_chain_of_trust_from_the_root_key_down():
    engine, _ = signed_engine()
    parent = keyring(engine, ".")
    for child in ("test.", "lab.test."):
        ds = ask(engine, child, "DS")
        assert ds.flags & dns.flags.AA and validate_all(ds, parent) == 1
        ring = keyring(engine, child)
        key = ring[dns.name.from_text(child)][0]
        assert dns.dnssec.make_ds(child, key, "SHA256") == ds.answer[0][0]
        parent = ring
    reply = ask(engine, "pc9.lab.test", "A")
    assert reply.flags & dns.flags.AA and validate_all(reply, parent) == 1
    assert reply.edns == 0 and reply.ednsflags & dns.flags.DO


def test_denials_carry_signed_nsec_proofs():
    engine, _ = signed_engine()
    ring = keyring(engine, "lab.test.")
    nx = ask(engine, "nothing-here.lab.test", "A")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    nsecs = [r for r in nx.authority if r.rdtype == dns.rdatatype.NSEC]
    assert nsecs and validate_all(nx, ring) == 1 + len(nsecs)
    name = dns.name.from_text("nothing-here.lab.test")
    assert any(r.name < name < r[0].next or r[0].next == dns.name.from_text("lab.test")
               for r in nsecs)  # one NSEC spans the name
    nodata = ask(engine, "pc9.lab.test", "MX")
    assert nodata.rcode() == 0 and not nodata.answer
    own = [r for r in nodata.authority if r.rdtype == dns.rdatatype.NSEC]
    assert own[0].name == dns.name.from_text("pc9.lab.test")
    assert "MX" not in own[0][0].to_text().split()[1:] and "A" in own[0][0].to_text().split()
    validate_all(nodata, ring)
    wild = ask(engine, "any.w.lab.test", "A")
    assert wild.answer[0].name == dns.name.from_text("any.w.lab.test")
    validate_all(wild, ring)  # the wildcard's signature, under the asked name


def test_without_do_nothing_changes():
    engine, _ = signed_engine()
    query = dns.message.make_query("pc9.lab.test", "A")
    reply = dns.message.from_wire(engine.respond(query.to_wire(), False).messages[0])
    assert [r.rdtype for r in reply.answer] == [dns.rdatatype.A]


@pytest.mark.parametrize("mode, failure", [("expired", dns.dnssec.ValidationFailure),
                                           ("broken", AssertionError)])
def test_lesson_switches_break_validation(mode, failure):
    engine, _ = signed_engine(mode)
    with pytest.raises(failure):
        ring = keyring(engine, "lab.test.")
        ds = ask(engine, "lab.test.", "DS")
        key = ring[dns.name.from_text("lab.test.")][0]
        assert dns.dnssec.make_ds("lab.test.", key, "SHA256") == ds.answer[0][0]


def delv(server, mode: str, *args: str) -> str:
    import subprocess

    anchor = server.data / "dns" / "trust-anchor.conf"
    result = subprocess.run(["delv", "-a", str(anchor), "@127.0.0.1", "-p",
                             str(server.port("dns", "dns")), "+root=.", *args],
                            capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


@pytest.mark.parametrize("mode, verdict", [("on", "; fully validated"),
                                           ("broken", "resolution failed"),
                                           ("expired", "resolution failed")])
def test_delv_validates_from_the_fake_root(lab, mode, verdict):
    """delv (BIND's validating lookup tool) with the lab's root trust anchor: the answer is
    proven root -> test -> lab.test, and the lesson switches make it fail."""
    from tests.conftest import need

    need("delv")
    server = lab.start(only="dns", config=f'[hosts]\npc9 = "10.9.8.7"\n'
                                          f'[dns]\nfake_root = true\ndnssec = "{mode}"\n')
    out = delv(server, mode, "pc9.lab.test", "A")
    assert verdict in out, out
    if mode == "on":
        assert "10.9.8.7" in out and "RRSIG" in out
        nx = delv(server, mode, "nothing.lab.test", "A")
        assert "fully validated" in nx or "ncache nxdomain" in nx, nx


def test_the_portal_offers_the_trust_anchor_delv_validates_with(lab, tmp_path):
    import subprocess

    from tests.conftest import need

    need("delv", "curl")
    server = lab.start(only="dns,http", config='[dns]\nfake_root = true\ndnssec = "on"\n')
    web = f"http://127.0.0.1:{server.port('http', 'http')}"
    portal = subprocess.run(["curl", "-sS", web + "/"], capture_output=True, text=True, timeout=30)
    assert 'href="/dns/trust-anchor.conf"' in portal.stdout and "+root=." in portal.stdout
    anchor = tmp_path / "anchor.conf"
    got = subprocess.run(["curl", "-sS", "--fail", "-o", str(anchor), web + "/dns/trust-anchor.conf"],
                         capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, got.stderr
    out = subprocess.run(["delv", "-a", str(anchor), "@127.0.0.1", "-p", str(server.port("dns", "dns")),
                          "+root=.", "www.lab.test", "A"], capture_output=True, text=True, timeout=60)
    assert "; fully validated" in out.stdout + out.stderr, out.stdout + out.stderr


def test_no_trust_anchor_from_an_unsigned_lab(lab):
    import subprocess

    server = lab.start(only="http")
    web = f"http://127.0.0.1:{server.port('http', 'http')}"
    got = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                          web + "/dns/trust-anchor.conf"], capture_output=True, text=True, timeout=30)
    assert got.stdout == "404"
    portal = subprocess.run(["curl", "-sS", web + "/"], capture_output=True, text=True, timeout=30)
    assert "trust-anchor" not in portal.stdout
