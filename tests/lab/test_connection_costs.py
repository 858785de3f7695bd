"""What one connection may cost SMTP, POP3 and FTP, and what fuzzed command lines do to them.

- A 100 MB line without CRLF costs bounded memory and gets one error; the session goes on.
- 1,000 connections that log in and drop without QUIT leave descriptors and memory where
  they were.
- A seeded mutation loop of command lines, in each state, leaves no traceback and every
  service alive (PROTOLAB_FUZZ_INPUTS=N for a longer run).
"""

from __future__ import annotations

import base64
import os
import random
import socket
import time
from dataclasses import dataclass

import pytest


def fill(disk) -> None:
    """small_disk.fill(), whose buffered file raises ENOSPC from its final close (after it
    has taken every byte, which is all a test needs)."""
    try:
        disk.fill()
    except OSError:
        pass


def status(pid: int, key: str) -> int:
    """A /proc/PID/status figure in bytes (VmRSS now, VmHWM the peak so far)."""
    with open(f"/proc/{pid}/status") as lines:
        line = next(line for line in lines if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass(frozen=True)
class Protocol:
    name: str  # the service, and its plain listener
    login: tuple[bytes, ...]  # lines that log alice in
    logged_in: bytes  # how the reply to the last of them starts
    probe: bytes  # a harmless command in any state...
    answer: bytes  # ...and how its reply starts
    too_long: bytes  # how the reply to an over-long line starts
    seeds: tuple[bytes, ...]  # command lines the fuzzer mutates


PLAIN = base64.b64encode(b"\0alice\0alice")
PROTOCOLS = {
    "smtp": Protocol(
        "smtp", (b"EHLO pc1", b"AUTH PLAIN " + PLAIN), b"235", b"NOOP", b"250", b"500 5.5.2",
        (b"EHLO pc", b"HELO pc", b"MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME",
         b"RCPT TO:<alice@lab.test>", b"RCPT TO:<bob+x@lab.test> NOTIFY=NEVER", b"DATA",
         b"Subject: x", b".", b"RSET", b"VRFY alice", b"AUTH PLAIN " + PLAIN, b"AUTH LOGIN",
         b"YWxpY2U=", b"AUTH CRAM-MD5", b"*", b"NOOP", b"HELP", b"EXPN x", b"BDAT 10 LAST",
         b"MAIL FROM:<@route:a@b> AUTH=<>", b"STARTTLS")),
    "pop3": Protocol(
        "pop3", (b"USER alice", b"PASS alice"), b"+OK Logged in", b"CAPA", b"+OK", b"-ERR Line",
        (b"USER alice", b"PASS alice", b"APOP alice 0123456789abcdef", b"AUTH PLAIN", PLAIN,
         b"AUTH", b"CAPA", b"STAT", b"LIST", b"LIST 1", b"RETR 1", b"TOP 1 0", b"TOP 1 99",
         b"UIDL", b"UIDL 1", b"DELE 1", b"RSET", b"NOOP", b"STLS", b"QUIT")),
    "ftp": Protocol(
        "ftp", (b"USER alice", b"PASS alice"), b"230", b"NOOP", b"200", b"500 Command too long",
        (b"USER alice", b"PASS alice", b"SYST", b"FEAT", b"PWD", b"CWD /public", b"CDUP",
         b"MKD d", b"RMD d", b"TYPE I", b"TYPE A", b"MODE S", b"STRU F", b"PASV", b"EPSV",
         b"EPSV ALL", b"LIST", b"NLST -la", b"MLSD", b"MLST /", b"SIZE x", b"MDTM x",
         b"REST 1", b"RNFR a", b"RNTO b", b"DELE x", b"SITE HELP", b"OPTS UTF8 ON", b"STAT",
         b"STAT /", b"ABOR", b"HELP", b"ALLO 10", b"STOR x", b"RETR x", b"PROT P", b"PBSZ 0",
         b"AUTH TLS", b"CCC", b"NOOP", b"QUIT")),
}
# Never mutated into: data connections to whatever listens on loopback.
OUTBOUND = (b"PORT", b"EPRT", b"LPRT")


class Client:
    """A raw line client (netcat-like) on a protocol's plain port."""

    def __init__(self, server, protocol: Protocol, source: str = "127.0.0.1") -> None:
        self.protocol = protocol
        self.sock = socket.create_connection(
            ("127.0.0.1", server.port(protocol.name, protocol.name)), timeout=30,
            source_address=(source, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def until(self, prefix: bytes, limit: int = 200) -> bytes:
        """Reply lines up to the first that starts with `prefix`; that line."""
        for _ in range(limit):
            line = self.file.readline()
            if not line or line.startswith(prefix):
                return line
        return b""

    def login(self) -> bytes:
        self.sock.sendall(b"".join(line + b"\r\n" for line in self.protocol.login))
        return self.until(self.protocol.logged_in)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.mark.parametrize("name,data", [("smtp", False), ("smtp", True), ("pop3", False),
                                       ("ftp", False)])
def test_a_100_mb_line_costs_bounded_memory_and_gets_one_error(lab, name, data):
    protocol = PROTOCOLS[name]
    server = lab.start(only=name)
    client = Client(server, protocol)
    if data:  # inside DATA, where lines may be longer (TEXT_LIMIT) but not endless
        client.sock.sendall(b"EHLO pc1\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@lab.test>\r\n"
                            b"DATA\r\n")
        assert client.until(b"354").startswith(b"354")
    before = status(server.process.pid, "VmHWM")
    chunk = b"A" * (1 << 20)
    for _ in range(100):
        client.sock.sendall(chunk)
    client.sock.sendall(b"\r\n" + (b".\r\n" if data else b"") + protocol.probe + b"\r\n")
    reply = client.file.readline()
    expected = b"500 5.5.2 Message has a line longer" if data else protocol.too_long
    assert reply.startswith(expected), reply[:100]
    assert client.file.readline().startswith(protocol.answer)  # one error, then on
    grown = status(server.process.pid, "VmHWM") - before
    client.close()
    print(f"{name}{' DATA' if data else ''}: peak RSS grew {grown / 1e6:.1f} MB "
          "for a 100 MB line")
    assert grown < 32 << 20, grown  # a kept line would be 100 MB at least
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()


CONNECTIONS = 1000


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_1000_connections_that_leave_without_quit_leave_nothing_behind(lab, name):
    protocol = PROTOCOLS[name]
    server = lab.start(only=name)
    pid = server.process.pid

    def rounds(count: int) -> None:
        for _ in range(count):
            client = Client(server, protocol)
            assert client.login().startswith(protocol.logged_in)
            client.close()  # no QUIT
        # One full session after them: by its end the server has seen every earlier close.
        client = Client(server, protocol)
        client.login()
        client.sock.sendall(b"QUIT\r\n")
        client.file.read()  # up to the server's close
        client.close()

    rounds(50)  # warm-up: caches, the journal's first files, allocator pools
    fds, rss = descriptors(pid), status(pid, "VmRSS")
    rounds(CONNECTIONS)
    # The last session's socket closes when the server reads the client's FIN, which may
    # come after the client has read to the end: no signal to wait on, so the count is
    # polled for a while (a leak of a descriptor a session would never come down).
    deadline = time.monotonic() + 10
    while (fds_after := descriptors(pid)) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    rss_after = status(pid, "VmRSS")
    print(f"{name}: {CONNECTIONS} connections: fds {fds} -> {fds_after}, "
          f"RSS {rss / 1e6:.1f} -> {rss_after / 1e6:.1f} MB")
    assert fds_after <= fds
    assert rss_after - rss < 16 << 20  # a leak of a session each would show
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()


INTERESTING = [b"\x00", b"\xff", b"\r", b"\n", b" ", b"(", b"%", b"..", b"/", b"\\", b"<",
               b">", b"=", b":", b"*", b'"', b"\xc3\x28", b"\xe2\x80\xae", b"-1",
               b"99999999999999999999", b"%s%n", b"{}"]


def mutate(rng: random.Random, line: bytes) -> bytes:
    """One seeded mutation (or a few) of a command line."""
    for _ in range(rng.randint(1, 3)):
        choice = rng.randrange(7)
        at = rng.randint(0, len(line))
        if choice == 0 and line:
            index = rng.randrange(len(line))
            line = line[:index] + bytes([line[index] ^ (1 << rng.randrange(8))]) + line[index + 1:]
        elif choice == 1:
            line = line[:at] + rng.choice(INTERESTING) + line[at:]
        elif choice == 2:
            line = line[:at] + line[rng.randint(at, len(line)):]
        elif choice == 3:
            line = line[:at] + line[at:] * rng.randint(2, 50)
        elif choice == 4:
            line = line + b" " + rng.choice(INTERESTING) * rng.randint(1, 3000)
        elif choice == 5:
            line = line.swapcase()
        else:
            line = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
    return line


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_fuzzed_command_lines_leave_no_traceback_and_the_service_alive(lab, name):
    protocol = PROTOCOLS[name]
    server = lab.start(only=name)
    rng = random.Random(f"protolab-fuzz-{name}")
    inputs = int(os.environ.get("PROTOLAB_FUZZ_INPUTS", "3000"))
    per_connection = 30
    sent = 0
    while sent < inputs:
        client = Client(server, protocol)
        if rng.random() < 0.5:  # half the connections are fuzzed after login
            client.login()
        lines = []
        for _ in range(per_connection):
            line = mutate(rng, rng.choice(protocol.seeds))
            line = line.replace(b"\r", b"").replace(b"\n", b"")
            if not line.lstrip().upper().startswith(OUTBOUND):
                lines.append(line)
        try:
            client.sock.sendall(b"".join(line + b"\r\n" for line in lines))
        except OSError:  # it hung up (QUIT, too many errors, TLS started): fine
            pass
        client.close()
        sent += len(lines)
    assert server.process.poll() is None
    client = Client(server, protocol)  # still serving, logins and all
    assert client.login().startswith(protocol.logged_in)
    client.close()
    print(f"{name}: {sent} fuzzed command lines")
    assert server.stop() == 0
    assert "Traceback" not in server.stderr() and "nhandled" not in server.stderr()
