"""Start-up serves what can start: a port the lab cannot have costs that listener only,
said in one line, a FAILED row in the table, a FAIL row in check and on the portal."""

from __future__ import annotations

import imaplib
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import urllib.request

import pytest

from services import registry
from services.listeners import ephemeral_range
from tests.conftest import ROOT, cli, need, need_root, read_until
from tests.netns import Network

pytestmark = pytest.mark.skipif(
    not {"http", "imap", "dns", "dhcp"} <= set(registry.names()), reason="needs those services")

LENIENT = {"PROTOLAB_STRICT": ""}  # the fixture's servers are strict; these are not


def squat(transport: str, port: int, address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if transport == "tcp"
                         else socket.SOCK_DGRAM)
    sock.bind((address, port))
    if transport == "tcp":
        sock.listen()
    return sock


def portal_rows(page: str, service: str) -> list[str]:
    return [row for row in page.split("<tr")[1:]
            if row.split("</td>")[0].endswith(f"<td>{service}")]


def free_offset() -> int:
    return random.randrange(10000, 29000)


def test_a_taken_port_costs_its_listener_only(lab):
    offset = free_offset()
    taken = 143 + offset
    with squat("tcp", taken):
        server = lab.start(only="http,imap", offset=offset, env=LENIENT)
        line = f"imap: cannot listen on tcp 127.0.0.1:{taken} (imap): Address already in use"
        assert server.stderr().strip() == f"protolab: {line}"  # one line, and only that
        rows = {row.split()[1]: row for row in server.output if row.startswith(("http ", "imap "))}
        assert "FAILED: cannot listen on tcp" in rows["imap"], server.output
        assert "FAILED" not in rows["imaps"] and "FAILED" not in rows["http"]
        assert server.output[-1].endswith("; failed: imap"), server.output[-1]
        # What could start serves.
        context = ssl.create_default_context(cafile=server.data / "tls" / "ca.crt")
        context.check_hostname = False
        client = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap", "imaps"), ssl_context=context)
        assert client.login("alice", "alice")[0] == "OK"
        client.logout()
        checked = server.cli("check", "--only", "http,imap", "--port-offset", str(offset))
        assert checked.returncode == 1
        state = {row.split()[0]: row for row in checked.stdout.splitlines()}
        assert " ok " in state["http"] and " FAIL " in state["imap"] and line in state["imap"]
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port('http', 'http')}/",
                                    timeout=10) as page:
            portal = page.read().decode()
        assert f'<span class="down">FAIL: {line}</span>' in portal
        rows = portal_rows(portal, "imap")
        assert len(rows) == 2 and '<span class="up">running</span>' in rows[1], rows
        assert server.stop() == 0
    assert not (server.data / "run" / "imap.failed").exists()  # a stopped lab fails nothing
    assert server.cli("check", "--only", "imap", "--port-offset", str(offset),
                      "--timeout", "1").returncode == 1


def test_a_taken_dns_udp_port_leaves_dns_over_tcp_and_check_says_fail(lab):
    offset = free_offset()
    with squat("udp", 53 + offset):
        server = lab.start(only="dns", offset=offset, env=LENIENT)
        assert "cannot listen on udp 127.0.0.1" in server.stderr()
        need("dig")
        answer = subprocess.run(["dig", "+tcp", "+short", "-p", str(53 + offset),
                                 "@127.0.0.1", "www.lab.test"], capture_output=True, text=True,
                                timeout=30)
        assert answer.stdout.strip() == "127.0.0.1", answer
        checked = server.cli("check", "--only", "dns", "--port-offset", str(offset),
                             "--timeout", "1")
        assert checked.returncode == 1 and " FAIL " in checked.stdout, checked.stdout


def test_a_lab_where_nothing_can_start_exits_1(tmp_path):
    offset = free_offset()
    with squat("tcp", 143 + offset), squat("tcp", 993 + offset):
        result = cli("serve", "--only", "imap", "--bind", "127.0.0.1", "--port-offset",
                     str(offset), data=tmp_path / "data", env=LENIENT)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and lines[-1] == "protolab: no service could start", lines
    rows = [line for line in result.stdout.splitlines() if line.startswith("imap ")]
    assert len(rows) == 2 and all("FAILED: " in row for row in rows), result.stdout


def test_dhcp_without_an_interface_is_never_shown_running(lab):
    server = lab.start(only="http,dhcp")
    base = f"http://127.0.0.1:{server.port('http', 'http')}"
    with urllib.request.urlopen(f"{base}/", timeout=10) as page:
        portal = page.read().decode()
    (row,) = portal_rows(portal, "dhcp")
    assert "running" not in row and '<span class="off">off</span>' in row, row
    with urllib.request.urlopen(f"{base}/api/v1/services", timeout=10) as answer:
        services = {s["name"]: s for s in json.load(answer)}
    assert services["dhcp"]["running"] is False and services["http"]["running"] is True


def test_an_offset_that_pushes_a_port_past_65535_is_one_line(tmp_path):
    config = tmp_path / "lab.toml"
    config.write_text("[imap]\ntls_port = 6000\n")
    result = cli("serve", "--only", "imap", "--config", str(config), "--port-offset", "60000",
                 data=tmp_path / "data")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == ("protolab: port offset 60000: imap imaps would listen on port "
                             "66000, above 65535\n")


def test_ports_in_the_ephemeral_range_are_warned_about(lab):
    ephemeral = ephemeral_range()
    if ephemeral is None or ephemeral[1] - ephemeral[0] < 2000:
        pytest.skip("no usable ephemeral port range here")
    for _ in range(5):  # a client of the machine may hold a port there: that is the point
        offset = random.randrange(ephemeral[0], min(ephemeral[1], 64000) - 1000)
        try:
            server = lab.start(only="imap", offset=offset)
            break
        except AssertionError as error:
            if "Address already in use" not in str(error):
                raise
    else:
        pytest.skip("five offsets in the ephemeral range were all partly taken")
    warning = [row for row in server.output if row.startswith("warning: ports ")]
    assert warning and f"{143 + offset} {993 + offset}" in warning[0], server.output
    assert "ephemeral range" in warning[0]


# --- DNS next to a resolver on 127.0.0.53 (Ubuntu's systemd-resolved) ---------------

HOLDER = """
import socket, sys, time
held = []
for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.53", 53))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    held.append(sock)
print("held", flush=True)
time.sleep(120)
"""


def output_until(process: subprocess.Popen, prefix: str) -> list[str]:
    lines: list[str] = []
    if not read_until(process, prefix, 60, lines):
        errors = process.stderr.read().decode() if process.poll() is not None else ""
        raise AssertionError(f"no {prefix!r} line: {lines} {errors}")
    return lines


def test_dns_binds_around_a_resolver_holding_127_0_0_53(tmp_path):
    need_root()
    need("dig")
    with Network() as net:
        host = net.host("srv", address="10")
        holder = host.popen(sys.executable, "-c", HOLDER, stdout=subprocess.PIPE)
        serve = None
        try:
            output_until(holder, "held")
            serve = host.popen(
                sys.executable, "-m", "services", "serve", "--only", "dns", "--bind", "0.0.0.0",
                "--port-offset", "0", "--data", str(tmp_path / "data"), stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
            lines = output_until(serve, "protolab ready")
            # port 53's rows (DoT and DoH have other ports: nobody holds them)
            rows = [row for row in lines if row.split()[:2] in (["dns", "dns"], ["dns", "dns-tcp"])]
            around = f"0.0.0.0:53 is taken: bound to 10.199.{net.subnet}.10 127.0.0.1"
            assert len(rows) == 2 and all(around in r for r in rows), lines
            for address in ("127.0.0.1", host.address):
                for transport in ("+notcp", "+tcp"):
                    answer = host.run("dig", transport, "+short", f"@{address}", "www.lab.test")
                    assert answer.stdout.strip() == "127.0.0.1", (address, transport, answer)
        finally:
            for process in (serve, holder):
                if process is not None:
                    process.terminate()
                    process.wait(10)
        assert serve.returncode == 0, serve.stderr.read()
