"""What one HTTP client can make the server hold: a huge directory listing is capped (and
the server answers others meanwhile), a thousand connections that send half a request
and drop leave descriptors and memory at their level, and a connection that sends
nothing, or trickles its request head, is closed after [http] idle_timeout."""

from __future__ import annotations

import os
import re
import socket
import struct
import time

import pytest

from services.http.userweb import MAX_LISTED

from tests.http.test_server import raw, running_web, status_of

IDLE = 2  # seconds, [http] idle_timeout for these tests
CONNECTIONS = 1000


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "resources", f"[http]\nidle_timeout = {IDLE}\n") as server:
        yield server


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port("http", "http")), timeout=30)


def get(server, path: str) -> bytes:
    return raw(server, f"GET {path} HTTP/1.1\r\nHost: www\r\nConnection: close\r\n\r\n".encode())


def test_a_directory_of_20000_files_lists_the_first_ones_with_a_note(web):
    directory = web.data / "homes" / "alice" / "public_html" / "many"
    directory.mkdir()
    for number in range(20_000):
        (directory / f"file{number:05d}.txt").touch()
    answer = get(web, "/~alice/many/")
    assert status_of(answer) == [200]
    assert b"20000 entries; the first %d by name are shown" % MAX_LISTED in answer
    names = re.findall(rb'<li><a href="(file\d+\.txt)">', answer)
    assert names == [b"file%05d.txt" % n for n in range(MAX_LISTED)]
    assert status_of(get(web, "/~alice/many/file19999.txt")) == [200]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


def settled_fds(pid: int, level: int) -> int:
    """The server's descriptor count once it is back to `level` (it closes each
    connection when it reads the EOF; there is no other signal), or after 10 s."""
    deadline = time.monotonic() + 10
    while (count := fds(pid)) > level and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def half_requests(server, count: int, reset: bool) -> None:
    for number in range(count):
        with connect(server) as s:
            s.sendall(b"GET /lab/http/basic.html HTTP/1.1\r\nHost: www\r\nX-N: %d\r\n" % number)
            if reset:  # close with a RST instead of a FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "reset"])
def test_dropped_half_requests_leave_fds_and_rss_at_their_level(web, reset):
    pid = web.process.pid
    half_requests(web, 100, reset)  # warm-up: caches, journal buffers, allocator arenas
    base_fds, base_rss = settled_fds(pid, fds(pid)), rss_kib(pid)
    half_requests(web, CONNECTIONS, reset)
    after_fds = settled_fds(pid, base_fds)
    after_rss = rss_kib(pid)
    print(f"\n{CONNECTIONS} half requests dropped ({'RST' if reset else 'FIN'}): fds "
          f"{base_fds} -> {after_fds}, RSS {base_rss} -> {after_rss} KiB")
    assert after_fds <= base_fds
    assert after_rss - base_rss < 4096  # no per-connection leak (4 KiB each would be 4 MB)
    assert status_of(get(web, "/lab/http/basic.html")) == [200]


def test_a_connection_that_sends_nothing_is_closed_after_idle_timeout(web):
    with connect(web) as s:
        started = time.monotonic()
        assert s.recv(1024) == b""  # closed by the server, without a word
        assert time.monotonic() - started >= IDLE * 0.9


def test_a_trickled_request_head_is_cut_at_the_timeout_with_408(web):
    """A byte every 0.2 s used to keep the connection for ever (slowloris): Twisted
    restarts its timer on every byte."""
    head = b"GET /lab/http/basic.html HTTP/1.1\r\nHost: www\r\nX-Slow: " + b"a" * 200
    answer = b""
    with connect(web) as s:
        for byte in head:
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.2)  # the shape of the attack, not a wait for the server
            s.setblocking(False)
            try:
                answer += s.recv(1024)
            except BlockingIOError:
                pass
            s.setblocking(True)
            if answer:
                break
        s.settimeout(10)
        try:
            answer += b"".join(iter(lambda: s.recv(1024), b""))
        except ConnectionResetError:
            pass
    assert status_of(answer) == [408], answer[:200]


def test_a_slow_body_is_not_cut_while_it_keeps_coming(web):
    """The timeout bounds the head; an upload's body may take its time, byte by byte."""
    with connect(web) as s:
        s.sendall(b"POST /lab/http/upload HTTP/1.1\r\nHost: www\r\nContent-Length: 16\r\n\r\n")
        for _ in range(16):
            time.sleep(IDLE / 8)  # 16 bytes over twice the idle timeout
            s.sendall(b"x")
        s.shutdown(socket.SHUT_WR)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert status_of(answer) == [200] and b"bytes: 16" in answer
