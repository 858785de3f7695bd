"""What one IMAP command, and one connection, may make the server hold: literals, lines,
their total, before and after login; and what stays after many connections are dropped."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path

from services.imap.parser import COMMAND_LIMIT, PRE_AUTH_COMMAND_LIMIT, Bye, Continue, Frame, Reader, Reject
from tests.imap.test_core import events
from tests.imap.test_dialogue import Raw

MIB = 1 << 20


def held(reader: Reader) -> int:
    return len(reader.buffer) + sum(len(p) for p in reader.parts)


def test_before_login_a_big_non_synchronising_literal_ends_the_connection():
    reader = Reader(append_limit=50 * MIB)
    assert events(reader, b"a LOGIN {65536+}\r\n" + b"x" * 1000) == [
        Bye("[TOOBIG] Literal too large before login")]
    # APPEND's name lifts nothing before login.
    reader = Reader(append_limit=50 * MIB)
    assert events(reader, b"a APPEND INBOX {5000+}\r\n") == [
        Bye("[TOOBIG] Literal too large before login")]
    # A synchronising one is refused before the client sends it: the session goes on.
    reader = Reader(append_limit=50 * MIB)
    assert events(reader, b"a APPEND INBOX {5000}\r\nb NOOP\r\n") == [
        Reject("a", "BAD [TOOBIG] Literal too large"), Frame(b"b NOOP")]


def test_before_login_a_chain_of_small_literals_is_bounded():
    reader = Reader(append_limit=50 * MIB)
    got = []
    for _ in range(100):  # 100 x 1 KiB literals in one command
        got += events(reader, b" {1024+}\r\n" + b"y" * 1024 if got or reader.parts
                      else b"a LOGIN {1024+}\r\n" + b"y" * 1024)
        assert held(reader) <= PRE_AUTH_COMMAND_LIMIT + 1100
        if got:
            break
    assert got == [Bye("[TOOBIG] Literal too large before login")]


def test_after_login_only_appends_message_literal_may_be_big():
    reader = Reader(append_limit=1 * MIB)
    reader.authenticated = True
    message = b"Subject: x\r\n\r\n" + b"z" * (MIB - 100)
    got = events(reader, b"a APPEND {5+}\r\nINBOX (\\Seen) {%d+}\r\n" % len(message) + message
                 + b"\r\n")
    assert got == [Frame(b"a APPEND {5}\r\nINBOX (\\Seen) {%d}\r\n" % len(message) + message)]
    # Other literals of APPEND, and literals of anything else, stay small.
    assert events(reader, b"b APPEND {70000}\r\n") == [
        Reject("b", "BAD [TOOBIG] Literal too large")]
    assert events(reader, b"c APPEND INBOX {3}\r\n") == [Continue()]
    assert events(reader, b"abc {70000}\r\n") == [Reject("c", "BAD [TOOBIG] Literal too large")]
    assert events(reader, b"d LOGIN {70000}\r\n") == [Reject("d", "BAD [TOOBIG] Literal too large")]
    assert events(reader, b"e APPEND INBOX {%d}\r\n" % (MIB + 1)) == [
        Reject("e", "NO [TOOBIG] Message too large")]


def test_after_login_a_chain_of_literals_is_bounded_and_skipped():
    reader = Reader(append_limit=50 * MIB)
    reader.authenticated = True
    chunk = b"w" * 60000
    got = events(reader, b"a ID ({60000+}\r\n" + chunk)
    for _ in range(COMMAND_LIMIT // 60000 + 2):
        got += events(reader, b" {60000+}\r\n" + chunk)
        assert held(reader) <= COMMAND_LIMIT + 70000
    assert got == [Reject("a", "BAD [TOOBIG] Command too long")]
    # The rest of the command is skipped as it comes, then the session goes on.
    for _ in range(50):
        assert events(reader, b" {60000+}\r\n" + chunk) == []
        assert held(reader) < 70000
    assert events(reader, b")\r\nb NOOP\r\n") == [Frame(b"b NOOP")]


def test_reader_is_linear_in_the_literals_of_one_command():
    """Each literal is kept once and the command joined once, when it is whole: it was
    joined again at every literal (quadratic in the literals of one command)."""
    reader = Reader(append_limit=50 * MIB)
    reader.authenticated = True
    joins = 0

    def count(frame, event, arg) -> None:
        nonlocal joins
        if event == "c_call" and getattr(arg, "__name__", "") == "join":
            joins += 1

    data = b"a ID (" + b"".join(b"{10+}\r\n0123456789 " for _ in range(2000)) + b")\r\n"
    sys.setprofile(count)
    try:
        got = events(reader, data)
    finally:
        sys.setprofile(None)
    assert len(got) == 1 and isinstance(got[0], Frame) and got[0].raw.count(b"{10}") == 2000
    assert joins <= 5, joins


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def flood(port: int, login: bool, total: int) -> bytes:
    """One command of 1 MiB non-synchronising literals, `total` bytes in all; returns what
    the server said."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    heard = bytearray(sock.recv(1000))
    if login:
        sock.sendall(b"l LOGIN alice alice\r\n")
        while b"l OK" not in heard:
            heard += sock.recv(1000)
    block = b"x" * MIB
    sent = 0
    try:
        sock.sendall(b"a NOOP {%d+}\r\n" % MIB)
        while sent < total:
            sock.sendall(block + b" {%d+}\r\n" % MIB)
            sent += MIB
        sock.sendall(block + b"\r\nb NOOP\r\n")
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # closed by the server: what it does before login
    try:
        while chunk := sock.recv(65536):
            heard += chunk
    except OSError:
        pass
    sock.close()
    return bytes(heard)


def test_literal_floods_keep_server_memory_bounded_and_others_answered(lab):
    server = lab.start(only="imap")
    port, pid = server.port("imap", "imap"), server.process.pid
    other = Raw(port)
    assert other.cmd("LOGIN bob bob")[-1].startswith(b"t OK")
    before = rss_kib(pid)
    results: dict[str, bytes] = {}
    floods = [threading.Thread(target=lambda: results.__setitem__(
        "before", flood(port, False, 200 * MIB))),
        threading.Thread(target=lambda: results.__setitem__(
            "after", flood(port, True, 200 * MIB)))]
    for thread in floods:
        thread.start()
    answered = 0
    peak = before
    while any(thread.is_alive() for thread in floods):
        assert other.cmd("NOOP")[-1].startswith(b"t OK")  # the reactor is not held
        answered += 1
        peak = max(peak, rss_kib(pid))
    for thread in floods:
        thread.join()
    assert b"* BYE [TOOBIG]" in results["before"] and b"b OK" not in results["before"]
    assert b"a BAD [TOOBIG]" in results["after"] and b"b OK NOOP" in results["after"]
    assert answered > 0
    # 400 MiB sent; the server grew by a few buffers at most (it grew by all of it).
    print(f"400 MiB of literals: server RSS {before} KiB before, {peak} KiB at most")
    assert peak - before < 32 * 1024, (before, peak)
    assert "Traceback" not in server.stderr()


def test_dropped_connections_leave_fds_and_memory_at_their_level(lab):
    """1,000 connections that log in, select and go without LOGOUT: what the server holds
    for a connection (journal session, store subscription, worker's store connection) goes
    with it."""
    server = lab.start(only="imap")
    port, pid = server.port("imap", "imap"), server.process.pid

    def visit(count: int) -> None:
        for _ in range(count):
            conn = Raw(port)
            conn.send(b"a LOGIN alice alice\r\nb SELECT INBOX\r\nc FETCH 1:* (FLAGS)\r\n")
            conn.until(b"c")
            conn.sock.close()

    visit(100)  # warm: caches, the worker threads and their store connections
    fds, rss = open_fds(pid), rss_kib(pid)
    visit(1000)
    probe = Raw(port)  # answered, so every close before it was handled
    assert probe.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    probe.sock.close()
    after_fds, after_rss = open_fds(pid), rss_kib(pid)
    print(f"1,000 dropped connections: fds {fds} -> {after_fds}, RSS {rss} -> {after_rss} KiB")
    assert after_fds <= fds + 2, (fds, after_fds)
    assert after_rss - rss < 8 * 1024, (rss, after_rss)


def test_a_client_that_does_not_read_costs_bounded_memory(lab):
    """FETCH 1:* BODY[] of 24 MiB, five times pipelined, by a client that reads nothing
    until the end: the server streams with backpressure instead of building 120 MiB."""
    server = lab.start(only="imap")
    port, pid = server.port("imap", "imap"), server.process.pid
    conn = Raw(port)
    assert conn.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    message = b"Subject: big\r\n\r\n" + (b"x" * 1022 + b"\r\n") * 1024
    for _ in range(24):
        assert conn.cmd(b"APPEND INBOX {%d+}\r\n" % len(message) + message)[-1].startswith(b"t OK")
    assert conn.cmd("SELECT INBOX")[-1].startswith(b"t OK")
    before = rss_kib(pid)
    conn.send(b"".join(b"f%d FETCH 1:* BODY.PEEK[]\r\n" % i for i in range(5)))
    other = Raw(port)
    peak = before
    for _ in range(20):  # the server is stuck on our unread output, not on anything else
        assert other.cmd("LOGIN bob bob" if _ == 0 else "NOOP")[-1].startswith(b"t OK")
        peak = max(peak, rss_kib(pid))
    total = 0
    for i in range(5):
        lines = conn.until(b"f%d" % i)
        assert lines[-1].startswith(b"f%d OK" % i)
        total += sum(1 for line in lines if line == message)
    assert total == 5 * 24
    print(f"120 MiB of unread FETCH output: server RSS {before} KiB before, {peak} KiB at most")
    assert peak - before < 24 * 1024, (before, peak)
