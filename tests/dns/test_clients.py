"""The lab DNS server judged by real clients over real sockets: dig, kdig, nslookup,
dnspython for several queries on one TCP connection, tshark for the captures."""

from __future__ import annotations

import re
import socket
import struct
import time

import dns.message
import dns.rcode
import pytest

from tests.conftest import need

ZONE = """
[hosts]
pc9 = "10.9.8.7"
v6 = "fd00::5"
"""


def dig(port: int, *args: str, tool: str = "dig") -> str:
    import subprocess

    tries = "+tries=1" if tool == "dig" else "+retry=0"
    result = subprocess.run([tool, "@127.0.0.1", "-p", str(port), "+time=3", tries, *args],
                            capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def short(port: int, *args: str) -> list[str]:
    return sorted(dig(port, "+short", *args).split("\n")[:-1])


@pytest.fixture
def server(lab):
    return lab.start(only="dns", config=ZONE)


def test_dig_every_record_type(server):
    need("dig")
    port = server.port("dns", "dns")
    for args in (("_x._tcp", "SRV", "0 1 143 pc9"), ("alias9", "CNAME", "pc9"),
                 ("lab.test", "MX", "20 pc9")):
        assert server.cli("dns", "add", *args).returncode == 0
    deadline = time.monotonic() + 5  # the store's change reaches the server by polling
    while "20 pc9" not in dig(port, "+short", "lab.test", "MX") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert short(port, "pc9.lab.test") == ["10.9.8.7"]
    assert short(port, "v6.lab.test", "AAAA") == ["fd00::5"]
    assert short(port, "lab.test", "NS") == ["ns.lab.test."]
    assert short(port, "lab.test", "TXT") == ['"protolab teaching lab"']
    assert "20 pc9.lab.test." in short(port, "lab.test", "MX")
    assert short(port, "_x._tcp.lab.test", "SRV") == ["0 1 143 pc9.lab.test."]
    assert short(port, "alias9.lab.test") == ["10.9.8.7", "pc9.lab.test."]
    assert short(port, "-x", "10.9.8.7") == ["pc9.lab.test."]
    assert short(port, "-x", "fd00::5") == ["v6.lab.test."]
    soa = dig(port, "lab.test", "SOA", "+tcp")
    assert "status: NOERROR" in soa and "flags: qr aa" in soa and "(TCP)" in soa
    nx = dig(port, "nothing.lab.test")
    assert "status: NXDOMAIN" in nx and re.search(r"AUTHORITY SECTION:\nlab\.test\.\s+\d+\s+IN\s+SOA", nx)
    refused = dig(port, "example.com")
    assert "status: REFUSED" in refused and " ra" not in refused.split("flags:")[1].split(";")[0]
    assert server.check().returncode == 0


def test_queries_are_journaled(server):
    need("dig")
    port = server.port("dns", "dns")
    dig(port, "pc9.lab.test")
    dig(port, "+tcp", "nothing.lab.test")
    deadline = time.monotonic() + 5  # the journal is flushed twice a second
    while True:
        text = server.cli("journal", "--service", "dns").stdout
        if "nothing.lab.test A -> NXDOMAIN" in text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "udp pc9.lab.test A -> NOERROR" in text and "tcp nothing.lab.test A -> NXDOMAIN" in text


def test_mail_discovery_records_use_the_real_ports(server):
    need("dig")
    from services import registry

    if "imap" not in registry.names():
        pytest.skip("no imap service in this tree")
    port = server.port("dns", "dns")
    imaps = short(port, "_imaps._tcp.lab.test", "SRV")
    assert imaps == [f"0 1 {server.port('imap', 'imaps')} imap.lab.test."]
    assert short(port, "lab.test", "MX") == ["10 mail.lab.test."]


def test_kdig_and_nslookup(server):
    need("kdig", "nslookup")
    port = server.port("dns", "dns")
    out = dig(port, "pc9.lab.test", "A", "+edns=0", "+nsid", tool="kdig")
    assert "10.9.8.7" in out and "Version: 0; flags: ; UDP size: 1232" in out, out
    out = dig(port, "+tcp", "v6.lab.test", "AAAA", tool="kdig")
    assert "fd00::5" in out and "TCP" in out
    import subprocess

    ns = subprocess.run(["nslookup", "-port=" + str(port), "pc9.lab.test", "127.0.0.1"],
                        capture_output=True, text=True, timeout=30).stdout
    assert "Address: 10.9.8.7" in ns, ns
    rev = subprocess.run(["nslookup", "-port=" + str(port), "10.9.8.7", "127.0.0.1"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "name = pc9.lab.test." in rev, rev


def test_truncation_retried_over_tcp(server):
    need("dig", "kdig")
    port = server.port("dns", "dns")
    for i in range(8):
        assert server.cli("dns", "add", "big", "TXT", f"{i} " + "x" * 200).returncode == 0
    deadline = time.monotonic() + 5
    while "ANSWER: 8" not in dig(port, "+tcp", "big.lab.test", "TXT") and time.monotonic() < deadline:
        time.sleep(0.05)
    plain = dig(port, "+noedns", "big.lab.test", "TXT")
    assert "Truncated, retrying in TCP mode" in plain and "ANSWER: 8" in plain, plain
    edns = dig(port, "+bufsize=1232", "big.lab.test", "TXT")
    assert "Truncated, retrying in TCP mode" in edns and "ANSWER: 8" in edns
    ignored = dig(port, "+noedns", "+ignore", "big.lab.test", "TXT")
    assert "flags: qr aa tc" in ignored and "QUERY: 1, ANSWER: 0" in ignored, ignored
    assert "ANSWER: 8" in dig(port, "big.lab.test", "TXT", tool="kdig")


def test_several_queries_on_one_tcp_connection(server):
    port = server.port("dns", "dns-tcp")
    names = ["pc9.lab.test", "ns.lab.test", "nothing.lab.test"]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for i, name in enumerate(names):
            wire = dns.message.make_query(name, "A", id=100 + i).to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        stream = sock.makefile("rb")
        replies = []
        for _ in names:
            (length,) = struct.unpack("!H", stream.read(2))
            replies.append(dns.message.from_wire(stream.read(length)))
    assert [r.id for r in replies] == [100, 101, 102]
    assert [r.rcode() for r in replies] == [0, 0, dns.rcode.NXDOMAIN]


def test_axfr_allowed_then_restricted(lab):
    need("dig", "kdig")
    open_lab = lab.start(only="dns", config=ZONE)
    port = open_lab.port("dns", "dns")
    out = dig(port, "lab.test", "AXFR")
    assert "XFR size" in out and "pc9.lab.test." in out and out.count("SOA") >= 2
    assert "pc9" in dig(port, "8.9.10.in-addr.arpa", "AXFR", tool="kdig")
    open_lab.stop()
    closed = lab.start(only="dns", config=ZONE + '[dns]\naxfr_clients = ["10.0.0.0/8"]\n',
                       data=lab.tmp_path / "closed")
    refused = dig(closed.port("dns", "dns"), "lab.test", "AXFR")
    assert "Transfer failed" in refused and "pc9.lab.test" not in refused


def test_cli_changes_seen_by_the_running_server_and_serial_moves(server):
    need("dig")
    port = server.port("dns", "dns")
    serial = int(short(port, "lab.test", "SOA")[0].split()[2])
    result = server.cli("dns", "add", "pc1", "A", "10.9.8.20")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5
    while short(port, "pc1.lab.test") != ["10.9.8.20"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert short(port, "pc1.lab.test") == ["10.9.8.20"]
    assert short(port, "-x", "10.9.8.20") == ["pc1.lab.test."]
    assert int(short(port, "lab.test", "SOA")[0].split()[2]) > serial
    listing = server.cli("dns", "list").stdout
    assert "pc1.lab.test" in listing and "10.9.8.20" in listing
    assert server.cli("dns", "del", "pc1").returncode == 0
    while short(port, "pc1.lab.test") and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    assert short(port, "pc1.lab.test") == []
    bad = server.cli("dns", "add", "pc2", "A", "not-an-address")
    assert bad.returncode == 2 and bad.stderr.startswith("protolab: ")
    outside = server.cli("dns", "add", "host.example.com.", "A", "10.0.0.1")
    assert outside.returncode == 2 and "not in the lab's zones" in outside.stderr


def test_forwarding_through_a_second_instance(lab):
    need("dig")
    upstream = lab.start(only="dns", config='[lab]\ndomain = "other.test"\n[hosts]\nfar = "10.5.5.5"\n',
                         data=lab.tmp_path / "upstream")
    up_port = upstream.port("dns", "dns")
    local = lab.start(only="dns", config=ZONE + f'[dns]\nforwarders = ["127.0.0.1#{up_port}"]\n',
                      data=lab.tmp_path / "local")
    port = local.port("dns", "dns")
    out = dig(port, "far.other.test")
    assert "10.5.5.5" in out and re.search(r"flags: qr[a-z ]* rd ra", out), out
    assert "10.5.5.5" in dig(port, "+tcp", "far.other.test")
    assert "10.9.8.7" in dig(port, "pc9.lab.test")  # our own names stay ours
    for i in range(8):  # an upstream answer too big for UDP: TCP clients get it whole
        assert upstream.cli("dns", "add", "big", "TXT", f"{i} " + "x" * 200).returncode == 0
    deadline = time.monotonic() + 5
    while "ANSWER: 8" not in dig(up_port, "+tcp", "big.other.test", "TXT") and time.monotonic() < deadline:
        time.sleep(0.05)
    relayed = dig(port, "big.other.test", "TXT")
    assert "Truncated, retrying in TCP mode" in relayed and "ANSWER: 8" in relayed, relayed
    upstream.stop()
    dead = dig(port, "+time=5", "gone.other.test")
    assert "status: SERVFAIL" in dead


def test_captures_dissect_cleanly(server, capture):
    need("tshark", "dig")
    port = server.port("dns", "dns")
    running = capture(f"port {port}")
    for args in (("pc9.lab.test",), ("+tcp", "lab.test", "SOA"), ("lab.test", "AXFR"),
                 ("-x", "10.9.8.7"), ("nothing.lab.test",), ("+noedns", "lab.test", "ANY"),
                 ("example.com",)):
        dig(port, *args)
    # tshark dissects DNS by port: a non-standard port needs "Decode As"
    decode = (f"udp.port=={port},dns", f"tcp.port=={port},dns")
    assert running.problems(decode_as=decode) == []
    assert len(running.read("dns.flags.response == 1", decode_as=decode)) >= 7
