"""The whole lab in one process: hostile input at every listener never takes it down."""

from __future__ import annotations

import os
import random
import socket
import time

import pytest

from services import registry
from services.config import default

pytestmark = pytest.mark.skipif(not registry.names(), reason="no protocol registered yet")

ALL = os.environ.get("LAB_ONLY") or ",".join(registry.names())


def listeners():
    return [one for name in ALL.split(",") for one in registry.module(name).listeners(default())
            if one.active]


def garbage(rng: random.Random) -> list[bytes]:
    return [
        os.urandom(rng.randrange(1, 4000)),
        b"\x00" * 70000,
        b"A" * 100_000 + b"\r\n",
        b"\r\n" * 500,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40),  # a TLS hello cut short
        "ünïcödé\r\n".encode() * 50 + b"\xff\xfe\r\n",
    ]


def throw_garbage(server, rng: random.Random) -> None:
    for listener in listeners():
        port = listener.port + server.offset
        for payload in garbage(rng):
            if listener.transport == "udp":
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.sendto(payload[:1400], ("127.0.0.1", port))
                continue
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                try:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                    while sock.recv(65536):  # read until the server closes or times us out
                        pass
                except OSError:  # reset, broken pipe, not connected, timed out
                    pass  # hanging up on garbage is a fine answer


def usage(pid: int) -> tuple[int, int]:
    """(open descriptors, resident KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss


def settled_fds(pid: int, level: int, timeout: float = 10) -> int:
    """The descriptor count once it is back to `level`, or what it is after `timeout`:
    a server closes its side a moment after the client saw the close, and says nothing."""
    deadline = time.monotonic() + timeout
    while (fds := usage(pid)[0]) > level and time.monotonic() < deadline:
        time.sleep(0.05)
    return fds


RSS_GROWTH_KIB = 16 * 1024  # allocator noise; a leak of 5 rounds of garbage is far more


def test_garbage_at_every_listener_leaves_every_service_answering(lab):
    server = lab.start(only=ALL)
    rng = random.Random(1234)
    pid = server.process.pid
    throw_garbage(server, rng)  # the first round warms caches (TLS, parsers, the journal)
    fds, rss = settled_fds(pid, 0, timeout=2), usage(pid)[1]
    for _ in range(5):
        throw_garbage(server, rng)
    after_fds = settled_fds(pid, fds)
    after_rss = usage(pid)[1]
    assert after_fds <= fds, f"descriptors {fds} -> {after_fds}: {os.listdir(f'/proc/{pid}/fd')}"
    assert after_rss - rss < RSS_GROWTH_KIB, f"RSS {rss} KiB -> {after_rss} KiB"
    print(f"fds {fds} -> {after_fds}, RSS {rss} -> {after_rss} KiB over 5 rounds")
    checked = server.check()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    errors = server.stderr()
    assert "Traceback" not in errors and "Unhandled" not in errors, errors[-3000:]


def test_sigterm_with_sessions_open_everywhere_exits_cleanly(lab):
    server = lab.start(only=ALL)
    open_sockets = []
    for listener in listeners():
        if listener.transport == "tcp":
            open_sockets.append(socket.create_connection(
                ("127.0.0.1", listener.port + server.offset), timeout=5))
    try:
        assert server.stop() == 0
    finally:
        for sock in open_sockets:
            sock.close()
    errors = server.stderr()
    assert "Traceback" not in errors and "Unhandled" not in errors, errors[-3000:]
