"""Every service on IPv4 and IPv6 (issue 18 part 1), judged by real clients over ::1.

One lab on the dual-stack wildcard (`--bind ::`) serves both families; IPv4 clients of its
dual-stack sockets are IPv4 to the journal and to the per-address limits.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from services import journal, listeners
from tests.conftest import ROOT, need, need_root, read_until
from tests.lab.test_startup import HOLDER  # holds 127.0.0.53:53 as systemd-resolved does
from tests.netns import Network

pytestmark = pytest.mark.skipif(
    not (listeners.stack().ipv6 and "::1" in listeners.local_addresses(6)),
    reason="needs IPv6 with ::1 on this host")

DUAL = ("--bind", "::")


def peers(server, service: str, text: str) -> set[str]:
    """The peers of the journal's sessions of `service`, once one shows `text`."""
    server.journal_until(service, text)
    return {event["peer"] for event in journal.read(server.data / "journal")
            if event["service"] == service}


def run(*command: str, exit: int = 0, timeout: float = 30) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == exit, (command, result.stdout, result.stderr)
    return result.stdout + result.stderr


def test_the_table_shows_both_families_and_check_probes_both(lab):
    server = lab.start(only="http,dns,smtp", extra=DUAL)
    assert any("listening on :: (IPv4 and IPv6)" in line for line in server.output), server.output
    rows = {tuple(line.split()[:2]): line.split() for line in server.output
            if line.startswith(("http ", "dns ", "smtp "))}
    port = server.port("http", "http")
    assert rows[("http", "http")][2:4] == [f"[::]:{port}/tcp", "v4+v6"], rows
    assert rows[("dns", "dns")][3] == "v4+v6"  # UDP: a socket per family
    result = server.check()
    assert result.returncode == 0, result.stdout + result.stderr
    for service in ("http", "dns", "smtp"):
        for host in ("127.0.0.1", "[::1]"):
            assert any(line.startswith(f"{service} ") and f" {host}:" in line and " ok " in line
                       for line in result.stdout.splitlines()), result.stdout


def test_http_over_both_families_and_the_journal_writes_ipv4_clients_as_ipv4(lab):
    need("curl")
    server = lab.start(only="http", extra=DUAL)
    port = server.port("http", "http")
    for url, option in ((f"http://[::1]:{port}/", "-6"), (f"http://127.0.0.1:{port}/", "-4")):
        out = run("curl", "-sS", option, "-o", "/dev/null", "-w", "%{http_code}", url)
        assert out == "200"
    # a redirect over IPv6 keeps the client on [::1]:PORT (Location is a path)
    moved = run("curl", "-sS", "-6", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                f"http://[::1]:{port}/lab/http")
    assert moved == f"301 http://[::1]:{port}/lab/http/", moved
    followed = run("curl", "-sS", "-6", "-L", "-o", "/dev/null", "-w",
                   "%{http_code} %{url_effective}", f"http://[::1]:{port}/lab/http")
    assert followed == f"200 http://[::1]:{port}/", followed
    seen = {peer.rsplit(":", 1)[0] for peer in peers(server, "http", "200")}
    assert {"[::1]", "127.0.0.1"} <= seen, seen
    assert not any("ffff" in peer for peer in seen), seen


def test_the_per_address_limit_counts_an_ipv4_client_of_the_dual_socket_as_ipv4(lab):
    server = lab.start(only="smtp", config="[lab]\nmax_connections_per_peer = 2\n", extra=DUAL)
    port = server.port("smtp", "smtp")
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for sock in held:
            assert sock.recv(100).startswith(b"220")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            assert third.recv(100).startswith(b"421")  # the same address: over its limit
        with socket.create_connection(("::1", port), timeout=10) as other:
            assert other.recv(100).startswith(b"220")  # another address: its own count
    finally:
        for sock in held:
            sock.close()


def test_dns_over_ipv6_udp_and_tcp_answers_aaaa_and_ip6_arpa_ptr(lab):
    need("dig")
    server = lab.start(only="dns", extra=DUAL)
    port = str(server.port("dns", "dns"))
    for transport in ("+notcp", "+tcp"):
        answer = run("dig", "@::1", "-p", port, transport, "+short", "mail.lab.test", "AAAA")
        assert answer.split() == ["::1"], answer
        ptr = run("dig", "@::1", "-p", port, transport, "+short", "-x", "::1")
        assert ptr.strip().endswith(".lab.test."), ptr
    # IPv4 over the IPv4 socket beside it: the A record, from a client seen as IPv4
    assert run("dig", "@127.0.0.1", "-p", port, "+short", "mail.lab.test", "A").split() == [
        "127.0.0.1"]
    seen = {peer.rsplit(":", 1)[0] for peer in peers(server, "dns", " A -> NOERROR")}
    assert {"[::1]", "127.0.0.1"} <= seen, seen


def test_swaks_over_ipv6_with_an_address_literal_in_ehlo_and_received(lab):
    need("swaks", "curl")
    server = lab.start(only="smtp,imap", extra=DUAL)
    port = str(server.port("smtp", "smtp"))
    out = run("swaks", "-6", "--server", "::1", "--port", port, "--helo", "[IPv6:::1]",
              "--from", "bob@lab.test", "--to", "alice@lab.test", "--body", "over six")
    assert "Hello [IPv6:::1] [IPv6:::1]" in out, out
    imap = server.port("imap", "imap")
    message = run("curl", "-sS", "-u", "alice:alice", f"imap://[::1]:{imap}/INBOX;UID=1")
    assert "Received: from [IPv6:::1] ([IPv6:::1])" in message, message
    bad = run("swaks", "-6", "--server", "::1", "--port", port, "--helo", "[IPv6:nonsense]",
              "--quit-after", "EHLO", "--from", "bob@lab.test", "--to", "alice@lab.test",
              exit=22)  # swaks: the server refused EHLO
    assert "501 5.5.4 Invalid address literal" in bad, bad


def test_pop3_and_imap_over_ipv6(lab):
    need("curl")
    server = lab.start(only="smtp,pop3,imap", extra=DUAL)
    with socket.create_connection(("::1", server.port("smtp", "smtp")), timeout=10) as smtp:
        smtp.recv(200)
        smtp.sendall(b"HELO six\r\nMAIL FROM:<bob@lab.test>\r\nRCPT TO:<alice@lab.test>\r\n"
                     b"DATA\r\n")
        reply = b""
        while b"354" not in reply:
            reply += smtp.recv(200)
        smtp.sendall(b"Subject: six\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        while b"221" not in reply:
            reply += smtp.recv(200)
    pop3 = server.port("pop3", "pop3")
    listing = run("curl", "-sS", "-6", "-u", "alice:alice", f"pop3://[::1]:{pop3}/")
    assert listing.split()[0] == "1", listing
    imap = server.port("imap", "imap")
    search = run("curl", "-sS", "-6", "-u", "alice:alice", "-X", "SEARCH SUBJECT six",
                 f"imap://[::1]:{imap}/INBOX")
    assert search.split() == ["*", "SEARCH", "1"], search
    for service in ("pop3", "imap"):
        assert any(p.startswith("[::1]:") for p in peers(server, service, "LOGOUT"
                                                          if service == "imap" else "QUIT"))


def test_ftp_over_ipv6_epsv_and_eprt_work_and_port_and_pasv_are_refused(lab, tmp_path):
    need("lftp", "curl")
    server = lab.start(only="ftp", extra=DUAL)
    port = server.port("ftp", "ftp")
    upload = tmp_path / "six.txt"
    upload.write_text("over IPv6\n")
    out = run("lftp", "-d", "-u", "alice,alice", "-e",
              f"set ftp:ssl-allow no; put {upload} -o six.txt; cat six.txt; quit",
              f"ftp://[::1]:{port}")
    assert "---> EPSV" in out and "229 Entering extended passive mode" in out, out
    assert "over IPv6" in out
    active = run("curl", "-sS", "-v", "-P", "-", "-u", "alice:alice", f"ftp://[::1]:{port}/six.txt")
    assert "EPRT |2|::1|" in active and "over IPv6" in active, active
    with socket.create_connection(("::1", port), timeout=10) as control:
        replies = control.makefile("rb")
        assert replies.readline().startswith(b"220")
        for command, answer in ((b"USER alice", b"331"), (b"PASS alice", b"230"),
                                (b"PORT 127,0,0,1,4,1", b"522 PORT is IPv4 only"),
                                (b"PASV", b"522 PASV is IPv4 only")):
            control.sendall(command + b"\r\n")
            line = replies.readline()
            assert line.startswith(answer), (command, line)
    # IPv4 clients keep PASV on the IPv4 socket beside it
    assert run("curl", "-sS", "--ftp-pasv", "-u", "alice:alice",
               f"ftp://127.0.0.1:{port}/six.txt") == "over IPv6\n"


def test_smbclient_over_ipv6(lab):
    need("smbclient")
    server = lab.start(only="smb", extra=DUAL)
    out = run("smbclient", "//::1/public", "-p", str(server.port("smb", "smb")),
              "-U", "alice%alice", "-c", "ls")
    assert "blocks of size" in out, out
    assert any(p.startswith("[::1]:") for p in peers(server, "smb", "tree"))


def test_an_ipv6_http_exchange_dissects_cleanly(lab, capture):
    need("curl")
    server = lab.start(only="http", extra=DUAL)
    port = server.port("http", "http")
    traffic = capture(f"ip6 and tcp port {port}")
    run("curl", "-sS", "-6", "-o", "/dev/null", f"http://[::1]:{port}/")
    frames = traffic.read("http", "ipv6.src", "http.host", decode_as=(f"tcp.port=={port},http",))
    assert any(f"[::1]:{port}" in frame for frame in frames), frames
    assert traffic.problems() == []


def test_a_host_without_ipv6_serves_ipv4_on_the_default_bind(lab, tmp_path):
    """IPv6 switched off in a namespace (disable_ipv6): serve starts on the default
    bind, IPv4 clients are served, and check asks IPv4 only."""
    need_root()
    with Network() as net:
        host = net.host("nosix", "10")
        for name in ("all", "default", "lo", "eth0"):
            host.run("sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1")
        data = tmp_path / "data"
        serve = host.popen(
            sys.executable, "-m", "services", "serve", "--only", "http", "--data", str(data),
            "--port-offset", "20000", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            lines: list[str] = []
            assert read_until(serve, "protolab ready", 60, lines), lines
            assert any("listening on ::" in line for line in lines), lines
            http = host.run("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                            "http://127.0.0.1:20080/", check=False)
            assert http.stdout == "200", http
            check = host.run(sys.executable, "-m", "services", "check", "--only", "http",
                             "--data", str(data), "--port-offset", "20000", check=False,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert check.returncode == 0 and "[::1]" not in check.stdout, check
        finally:
            serve.terminate()
            serve.wait(10)

def test_dns_on_the_dual_stack_wildcard_binds_around_a_resolver_on_127_0_0_53(tmp_path):
    """systemd-resolved's 127.0.0.53:53 takes the IPv4 wildcard: 53/udp keeps its IPv6
    socket and binds the IPv4 addresses around; 53/tcp binds every address of both."""
    need_root()
    need("dig")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with Network() as net:
        host = net.host("six", address="10")
        holder = host.popen(sys.executable, "-c", HOLDER, stdout=subprocess.PIPE)
        serve = None
        try:
            assert read_until(holder, "held", 30, [])
            serve = host.popen(
                sys.executable, "-m", "services", "serve", "--only", "dns", "--port-offset", "0",
                "--data", str(tmp_path / "data"), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=ROOT, env=env)
            lines: list[str] = []
            assert read_until(serve, "protolab ready", 60, lines), lines
            rows = {tuple(row.split()[:2]): row for row in lines if row.startswith("dns ")}
            v4 = f"10.199.{net.subnet}.10 127.0.0.1"
            assert f"0.0.0.0:53 is taken: bound to :: {v4}" in rows[("dns", "dns")], lines
            assert f"[::]:53 is taken: bound to {v4} ::1" in rows[("dns", "dns-tcp")], lines
            for address in ("127.0.0.1", "::1", host.address):
                for transport in ("+notcp", "+tcp"):
                    answer = host.run("dig", transport, "+short", f"@{address}", "ns.lab.test",
                                      "AAAA")
                    assert answer.stdout.strip() == "::1", (address, transport, answer)
        finally:
            for process in (serve, holder):
                if process is not None:
                    process.terminate()
                    process.wait(10)
        assert serve is not None and serve.returncode == 0, serve.stderr
