"""`protolab capture`: a capture of two students' TLS sessions, exported per student,
decrypts in tshark with no key log given, and holds only that student's packets and
secrets (issue 17, "captures that decrypt themselves")."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import need, need_root

pytestmark = pytest.mark.root
STUDENTS = {"alice": "127.0.0.2", "bob": "127.0.0.3"}  # each from an address of their own
MARKER_PORT = 9


def secrets_block(pcapng: Path) -> list[str]:
    """The key-log lines of a pcapng's Decryption Secrets Blocks (type 0x0A, TLS keys)."""
    data, lines, pos = pcapng.read_bytes(), [], 0
    while pos + 12 <= len(data):
        kind, length = struct.unpack_from("<II", data, pos)
        if kind == 0x0000000A:
            secrets_type, size = struct.unpack_from("<II", data, pos + 8)
            assert secrets_type == 0x544C534B  # "TLSK"
            lines += data[pos + 16:pos + 16 + size].decode().split()
        pos += length
    return [" ".join(lines[i:i + 3]) for i in range(0, len(lines), 3)]


def student(server, name: str, address: str, tmp: Path) -> None:
    """curl as the student: a page over HTTPS, the inbox over IMAPS, a message over SMTP
    with STARTTLS."""
    ca = str(server.data / "tls" / "ca.crt")
    auth = ["-sS", "--fail", "--interface", address, "--cacert", ca, "-u", f"{name}:{name}"]
    message = tmp / f"{name}.eml"
    message.write_text(f"From: {name}@lab.test\r\nSubject: from {name}\r\n\r\nhello\r\n")
    for command in (
        # a PUT into their own web space, a request that logs in; HTTP/1.1, whose request
        # line tshark shows as http.request.uri (ALPN would choose HTTP/2)
        [f"https://127.0.0.1:{server.port('http', 'https')}/~{name}/secret-{name}", "-T",
         str(message), "--http1.1"],
        [f"imaps://127.0.0.1:{server.port('imap', 'imaps')}/INBOX", "-X", "EXAMINE INBOX"],
        [f"smtp://127.0.0.1:{server.port('smtp', 'submission')}", "--ssl-reqd",
         "--mail-from", f"{name}@lab.test", "--mail-rcpt", f"{name}@lab.test", "-T", str(message)],
    ):
        result = subprocess.run(["curl", *auth, *command], capture_output=True, timeout=60)
        assert result.returncode == 0, result.stderr


def mark_and_stop(server, pcap: Path) -> None:
    """The capture's filter takes one marker datagram: once it is in the file, so is every
    packet before it (the kernel hands loopback packets over in order)."""
    marker = f"end-{time.monotonic_ns()}".encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(marker, ("127.0.0.1", MARKER_PORT))
    deadline = time.monotonic() + 30
    while marker not in pcap.read_bytes():
        assert time.monotonic() < deadline, "the capture never wrote the marker"
        time.sleep(0.01)  # tcpdump gives no other signal that it wrote a packet
    stopped = server.cli("capture", "stop")
    assert stopped.returncode == 0, stopped.stderr


def tshark(pcap: Path, decode: list[str], display: str, *fields: str) -> list[str]:
    command = ["tshark", "-r", str(pcap), *(x for rule in decode for x in ("-d", rule)),
               "-Y", display, "-T", "fields", *(x for f in fields for x in ("-e", f))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_export_per_student_decrypts_alone_and_holds_only_theirs(lab, tmp_path):
    need_root()  # tcpdump captures
    need("tcpdump", "tshark", "editcap", "curl")
    keylog = tmp_path / "keys.log"
    server = lab.start(only="http,imap,smtp", config=f'[tls]\nkeylog = "{keylog}"\n')
    https, imaps, sub = (server.port("http", "https"), server.port("imap", "imaps"),
                         server.port("smtp", "submission"))
    pcap = tmp_path / "class.pcap"
    bpf = f"tcp port {https} or tcp port {imaps} or tcp port {sub} or udp port {MARKER_PORT}"
    started = server.cli("capture", "start", "-i", "lo", "--filter", bpf, "-w", str(pcap))
    assert started.returncode == 0, started.stderr
    assert server.cli("capture", "start", "-i", "lo").returncode == 1  # one at a time
    for name, address in STUDENTS.items():
        student(server, name, address, tmp_path)
    mark_and_stop(server, pcap)
    server.journal_until("smtp", "bob auth")  # the journal is flushed twice a second
    decode = [f"tcp.port=={https},tls", f"tls.port=={https},http", f"tcp.port=={imaps},tls",
              f"tls.port=={imaps},imap", f"tcp.port=={sub},smtp"]
    every = {line.split()[1] for line in keylog.read_text().splitlines()}
    exported = {}
    for name, address in STUDENTS.items():
        for client in (address, name):  # by the address they used, and by their login
            out = tmp_path / f"{name}-{client}.pcapng"
            result = server.cli("capture", "export", str(out), "--client", client,
                                "--from", str(pcap))
            assert result.returncode == 0, result.stderr
            assert "secrets of 3 TLS sessions" in result.stdout, result.stdout
            # decrypted with no key log given: the page asked for, the IMAP login, the mail
            assert tshark(out, decode, "http.request", "http.request.uri") == [f"/~{name}/secret-{name}"]
            assert any("EXAMINE" in line for line in
                       tshark(out, decode, "imap.request", "imap.request"))
            assert tshark(out, decode, "imf", "imf.subject") == [f"from {name}"]
            # nobody else's packets, nobody else's secrets
            sources = set(tshark(out, decode, "tcp", "ip.src"))
            assert sources <= {address, "127.0.0.1"}, sources
            randoms = {line.split()[1] for line in secrets_block(out)}
            assert randoms and randoms < every
            exported[name, client] = randoms
    early = server.cli("capture", "export", str(tmp_path / "none.pcapng"), "--until", "1",
                       "--from", str(pcap))
    assert "0 packets, secrets of 0 TLS sessions" in early.stdout, early.stderr  # the window
    for client in ("address", "user"):
        pick = 0 if client == "address" else 1
        alice = exported["alice", ("127.0.0.2", "alice")[pick]]
        bob = exported["bob", ("127.0.0.3", "bob")[pick]]
        assert not alice & bob and alice | bob == every
    # The teacher downloads the same from the dashboard and the API (the latest capture)
    (server.data / "captures").mkdir(exist_ok=True)
    shutil.copyfile(pcap, server.data / "captures" / "class.pcap")
    web = f"http://127.0.0.1:{server.port('http', 'http')}"
    for path, name in (("/lab/dashboard/capture?client=alice", "alice"),
                       ("/api/v1/captures/export?client=127.0.0.3", "bob")):
        out = tmp_path / f"download-{name}.pcapng"
        got = subprocess.run(["curl", "-sS", "--fail", "-u", "admin:admin", "-o", str(out), "-D", "-",
                              web + path], capture_output=True, text=True, timeout=120)
        assert got.returncode == 0 and "filename=" in got.stdout, got.stderr
        assert tshark(out, decode, "http.request", "http.request.uri") == [f"/~{name}/secret-{name}"]
        assert {line.split()[1] for line in secrets_block(out)} == exported[name, name]


def test_errors_are_one_line(lab, tmp_path):
    server = lab.start(only="dns")
    stopped = server.cli("capture", "stop")
    assert stopped.returncode == 1
    assert stopped.stderr.strip().endswith("no capture is running (protolab capture start begins one)")
    missing = server.cli("capture", "export", str(tmp_path / "x.pcapng"), "--from",
                         str(tmp_path / "none.pcap"))
    assert missing.returncode == 1 and "none.pcap: no such capture" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    bad = server.cli("capture", "export", str(tmp_path / "x.pcapng"), "--since", "yesterday")
    assert bad.returncode == 1 and "'yesterday' is not an ISO time" in bad.stderr


def test_an_http3_session_exports_decrypted_too(lab, tmp_path):
    """QUIC's ClientHello is inside an Initial packet (encrypted with keys anyone can derive
    from the connection ID): the export finds its random there and embeds the session's
    secrets, so tshark shows the HTTP/3 streams with no key log given."""
    need_root()
    need("tcpdump", "tshark", "editcap")
    from tests.http.h3client import fetch

    keylog = tmp_path / "keys.log"
    server = lab.start(only="http", config=f'[tls]\nkeylog = "{keylog}"\n')
    port = server.port("http", "h3")
    pcap = tmp_path / "quic.pcap"
    started = server.cli("capture", "start", "-i", "lo", "--filter",
                         f"udp port {port} or udp port {MARKER_PORT}", "-w", str(pcap))
    assert started.returncode == 0, started.stderr
    answers = fetch(port, server.data / "tls" / "ca.crt", [{"path": "/lab/http/basic.html"}])
    assert answers[0][0] == 200
    mark_and_stop(server, pcap)
    decode = [f"udp.port=={port},quic"]
    for client, sessions in (("127.0.0.1", 1), ("127.0.0.9", 0)):
        out = tmp_path / f"{client}.pcapng"
        result = server.cli("capture", "export", str(out), "--client", client, "--from", str(pcap))
        assert result.returncode == 0, result.stderr
        assert f"secrets of {sessions} TLS sessions" in result.stdout, result.stdout
    out = tmp_path / "127.0.0.1.pcapng"
    assert len(secrets_block(out)) >= 4  # handshake and traffic secrets, both directions
    assert tshark(out, decode, "quic.frame_type == 0x0b || quic.frame_type == 0x0a "
                  "|| quic.frame_type == 0x0f || quic.frame_type == 0x0e", "frame.number")
