"""Connection limits: one client holding many idle connections cannot lock the others
out, and a refused connection hears the protocol's own busy reply."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
import urllib.request

import pytest

from services import registry

pytestmark = pytest.mark.skipif(
    not {"http", "smtp", "pop3", "imap"} <= set(registry.names()),
    reason="needs the mail and web services")

HOG = "127.0.0.2"  # the greedy client; 127.0.0.1 is everyone else
BUSY = {
    ("smtp", "smtp"): b"421 4.7.0 Too many connections",
    ("pop3", "pop3"): b"-ERR [SYS/TEMP] too many connections",
    ("imap", "imap"): b"* BYE [UNAVAILABLE] Too many connections",
    ("http", "http"): b"HTTP/1.1 503 Service Unavailable\r\n",
}


def connect_from(address: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((address, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def greeting(sock: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and (chunk := sock.recv(4096)):
        data += chunk
    return data


def test_500_idle_connections_from_one_peer_do_not_lock_out_another(lab):
    server = lab.start(only="http,smtp,pop3,imap")
    port = server.port("smtp", "smtp")
    hog = [connect_from(HOG, port) for _ in range(500)]
    try:
        answers = [greeting(sock) for sock in hog]
        served = [a for a in answers if a.startswith(b"220 ")]
        refused = [a for a in answers if a.startswith(BUSY["smtp", "smtp"])]
        assert len(served) == 50 and len(refused) == 450, answers[:3] + answers[-3:]
        assert all(read_until_closed(sock) == b"" for sock, a in zip(hog, answers, strict=True)
                   if a.startswith(b"421"))  # then closed
        # Everyone else is served, on that port and on the others.
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            assert smtp.noop()[0] == 250
        imap = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"), timeout=10)
        assert imap.login("alice", "alice")[0] == "OK"
        imap.logout()
        pop = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
        assert pop.user("alice").startswith(b"+OK")
        pop.quit()
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port('http', 'http')}/",
                                    timeout=10) as page:
            assert page.status == 200
        # The hog's count goes down as its connections go: one closed, one more admitted.
        hog[answers.index(served[0])].close()
        admitted(port, b"220 ", HOG).close()
    finally:
        for sock in hog:
            sock.close()


CONFIG = "[lab]\nmax_connections_per_peer = 1\nmax_connections = 3\n"


@pytest.mark.parametrize("service,listener", sorted(BUSY))
def test_a_refused_connection_hears_the_protocols_busy_reply(lab, service, listener):
    server = lab.start(only=service, config=CONFIG)
    port = server.port(service, listener)
    with connect_from("127.0.0.1", port) as first:
        if service != "http":
            assert not greeting(first).startswith(BUSY[service, listener])
        with connect_from("127.0.0.1", port) as second:
            if service == "http":  # a client sends its request at once: still answered
                second.sendall(b"GET / HTTP/1.1\r\nHost: www\r\n\r\n")
            reply = read_until_closed(second)
    assert reply.startswith(BUSY[service, listener]), reply
    if service == "http":
        head, _, body = reply.partition(b"\r\n\r\n")
        assert b"Retry-After: " in head and b"Connection: close" in head
        assert f"Content-Length: {len(body)}".encode() in head


def test_the_total_limit_counts_a_service_over_all_its_ports_and_peers(lab):
    server = lab.start(only="imap", config=CONFIG)
    plain, tls_port = server.port("imap", "imap"), server.port("imap", "imaps")
    held = [connect_from(f"127.0.0.{n}", plain) for n in (1, 2, 3)]
    try:
        for sock in held:
            assert greeting(sock).startswith(b"* OK")
        # A fourth peer, on the TLS port: refused, in words it can read over TLS.
        context = ssl.create_default_context(cafile=server.data / "tls" / "ca.crt")
        context.check_hostname = False
        with context.wrap_socket(connect_from("127.0.0.4", tls_port)) as refused:
            assert greeting(refused).startswith(BUSY["imap", "imap"])
    finally:
        for sock in held:
            sock.close()


def test_starttls_and_implicit_tls_work_through_the_limits(lab):
    server = lab.start(only="imap")
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"), timeout=10)
    context = ssl.create_default_context(cafile=server.data / "tls" / "ca.crt")
    context.check_hostname = False
    client.starttls(context)
    assert client.login("alice", "alice")[0] == "OK"  # LOGIN is allowed once TLS is on
    client.logout()
    secure = imaplib.IMAP4_SSL("127.0.0.1", server.port("imap", "imaps"), ssl_context=context)
    assert secure.login("alice", "alice")[0] == "OK"
    secure.logout()


SILENT = "[http]\nidle_timeout = 1\n[smtp]\nidle_timeout = 1\n[pop3]\nidle_timeout = 1\n"


def test_a_silent_connection_is_closed_by_every_service_with_a_timeout(lab):
    """A held slot is given back: what the limits count cannot stay forever. (IMAP's
    autologout is at least 1800 s by RFC 3501 and DNS over TCP's 30 s is fixed, so they
    are not waited for here.)"""
    server = lab.start(only="http,smtp,pop3", config=SILENT)
    for service, listener, speaks_first in (("http", "http", False), ("smtp", "smtp", True),
                                            ("pop3", "pop3", True)):
        with connect_from("127.0.0.1", server.port(service, listener)) as sock:
            if speaks_first:
                assert greeting(sock)
            read_until_closed(sock)  # returns: the server hung up (the timeout is 10 s)


def admitted(port: int, welcome: bytes, address: str = "127.0.0.1",
             seconds: float = 5) -> socket.socket:
    """A connection the server admits, once it has seen the last one go: a close the
    client made is news to the server a moment later, and it says nothing when it knows."""
    deadline = time.monotonic() + seconds
    while True:
        sock = connect_from(address, port)
        if greeting(sock).startswith(welcome):
            return sock
        sock.close()
        assert time.monotonic() < deadline, "a connection that ended is still counted"
        time.sleep(0.05)


def test_connections_that_end_badly_are_counted_out(lab):
    """A failed TLS handshake, a reset, a plain close: each gives its slot back (a leak
    would refuse this one peer for good)."""
    server = lab.start(only="imap", config=CONFIG)
    tls_port, plain = server.port("imap", "imaps"), server.port("imap", "imap")
    for _ in range(3):
        with connect_from("127.0.0.1", tls_port) as sock:  # garbage instead of a ClientHello
            sock.sendall(b"\x16\x03\x01\x00\x05hello" + b"\0" * 100)
            try:
                read_until_closed(sock)
            except ConnectionResetError:
                pass
        sock = admitted(plain, b"* OK")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        sock.close()  # linger 0: a reset
    admitted(plain, b"* OK").close()
