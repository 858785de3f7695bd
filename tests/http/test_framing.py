"""HTTP connection handling under the shapes a class and an attacker send: clients that
half-close after their request (`nc -N`, shutdown(SHUT_WR)), and request smuggling
(ambiguous Content-Length / Transfer-Encoding framing, RFC 9112 6.1-6.3)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from services.http.channel import framing_error

from tests.conftest import need
from tests.http.test_server import running_web, status_of

ROUNDS = 50  # the lost answer was a race: most tries, not all, lost it
GET = b"GET /lab/http/basic.html HTTP/1.1\r\nHost: www\r\n\r\n"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "framing") as server:
        yield server


def half_closed(server, data: bytes, half_close: bool = True) -> bytes:
    """Send `data`, shut our sending side (FIN) unless told not to, read until the server
    closes (a reset fails the test)."""
    with socket.create_connection(("127.0.0.1", server.port("http", "http")), timeout=20) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def kept_open(server, data: bytes) -> bytes:
    """Send `data` and keep our side open: the server must close after its refusal."""
    return half_closed(server, data, half_close=False)


def netcat(server, data: bytes) -> bytes:
    """The class's exercise: printf ... | nc -N HOST PORT (-N: shutdown after EOF)."""
    need("nc")
    result = subprocess.run(["nc", "-N", "127.0.0.1", str(server.port("http", "http"))],
                            input=data, capture_output=True, timeout=20)
    return result.stdout


@pytest.mark.parametrize("client", [half_closed, netcat])
def test_a_half_closing_client_gets_its_answer_every_time(web, client):
    for _ in range(ROUNDS):
        answer = client(web, GET)
        assert status_of(answer) == [200], answer[:200]
        assert answer.rstrip().endswith(b"</html>")


@pytest.mark.parametrize("client", [half_closed, netcat])
def test_a_malformed_request_before_the_fin_sees_its_400(web, client):
    for _ in range(ROUNDS):
        assert status_of(client(web, b"NONSENSE\r\n\r\n")) == [400]


def test_pipelined_requests_before_the_fin_are_all_answered_in_order(web):
    pipelined = (GET + b"GET /lab/http/long.html HTTP/1.1\r\nHost: www\r\n\r\n"
                 + b"GET /nothing-here HTTP/1.1\r\nHost: www\r\n\r\n"
                 + b"POST /lab/http/form HTTP/1.1\r\nHost: www\r\nContent-Length: 3\r\n\r\na=b")
    for _ in range(ROUNDS // 5):
        answer = half_closed(web, pipelined)
        assert status_of(answer) == [200, 200, 404, 200]
        assert answer.index(b"A small page") < answer.index(b"A long page")


def test_an_incomplete_request_before_the_fin_is_closed_without_an_answer(web):
    assert half_closed(web, b"GET / HTTP/1.1\r\nHost: www\r\n") == b""
    assert half_closed(web, b"POST /lab/http/form HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc") == b""


SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: www\r\n\r\n"
POST = b"POST /lab/http/upload HTTP/1.1\r\nHost: www\r\n"

# Each is refused with 400 (or 501 for a coding we do not implement), and nothing after it
# is answered: a front end reading it another way would see a second request there.
SHAPES = {
    "te-chunked-then-identity": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"
                                 b"\r\n0\r\n\r\n", 400),
    "te-identity-then-chunked": (b"Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"
                                 b"\r\n0\r\n\r\n", 400),
    "te-identity-chunked-list": (b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501),
    "te-chunked-identity-list": (b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    # RFC 9112 6.1: chunked is never applied twice
    "te-chunked-twice-list": (b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    "te-chunked-twice-lines": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
                               b"\r\n0\r\n\r\n", 400),
    "te-gzip": (b"Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n", 400),
    "te-unknown-then-chunked": (b"Transfer-Encoding: xyz, chunked\r\n\r\n0\r\n\r\n", 501),
    "te-identity-alone": (b"Transfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n", 400),
    "te-chunked-x": (b"Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n", 400),
    "te-vertical-tab": (b"Transfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n", 400),
    "te-and-cl": (b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    "cl-and-te": (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "cl-cl-differing": (b"Content-Length: 5\r\nContent-Length: 0\r\n\r\nhello", 400),
    "cl-cl-same": (b"Content-Length: 0\r\nContent-Length: 0\r\n\r\n", 400),
    "cl-list": (b"Content-Length: 0, 5\r\n\r\nhello", 400),
    "cl-plus": (b"Content-Length: +0\r\n\r\n", 400),
    "cl-negative": (b"Content-Length: -1\r\n\r\n", 400),
    "cl-hex": (b"Content-Length: 0x0\r\n\r\n", 400),
    "cl-huge": (b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", 400),
    "te-obs-fold": (b"Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n", 400),
    "te-obs-fold-tab": (b"Transfer-Encoding:\r\n\tchunked\r\n\r\n0\r\n\r\n", 400),
    "te-space-before-colon": (b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    "te-tab-before-colon": (b"Transfer-Encoding\t: chunked\r\n\r\n0\r\n\r\n", 400),
    "chunk-size-0x": (b"Transfer-Encoding: chunked\r\n\r\n0x0\r\n\r\n", 400),
    "chunk-size-negative": (b"Transfer-Encoding: chunked\r\n\r\n-0\r\n\r\n", 400),
    "chunk-size-plus": (b"Transfer-Encoding: chunked\r\n\r\n+0\r\n\r\n", 400),
    "chunk-size-space": (b"Transfer-Encoding: chunked\r\n\r\n 0\r\n\r\n", 400),
    "chunk-size-overflow": (b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nab\r\n", 400),
    "chunk-size-bare-lf": (b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
    "chunk-end-bare-lf": (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400),
    "chunk-last-bare-lf": (b"Transfer-Encoding: chunked\r\n\r\n0\n\n", 400),
    "chunk-data-too-long": (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n", 400),
    "chunk-ext-bad": (b"Transfer-Encoding: chunked\r\n\r\n0;\x00\r\n\r\n", 400),
    "te-http-1.0": (b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "header-bare-cr": (b"Transfer-Encoding: chunked\rX: y\r\n\r\n0\r\n\r\n", 400),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_smuggling_shapes_are_refused_and_the_smuggled_request_never_answered(web, shape):
    headers, status = SHAPES[shape]
    head = POST.replace(b"HTTP/1.1", b"HTTP/1.0") if shape == "te-http-1.0" else POST
    for send in (half_closed, kept_open):
        answer = send(web, head + headers + SMUGGLED)
        assert status_of(answer) == [status], (shape, answer[:300])
        assert b"Connection: close" in answer
        assert b"smuggled" not in answer  # status_of: exactly one response
    journal = web.journal_until("http", f"{status} ")
    assert "/smuggled" not in journal


def test_a_sound_chunked_body_still_passes(web):
    body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    answer = half_closed(web, POST + b"Transfer-Encoding: chunked\r\n\r\n" + body + GET)
    assert status_of(answer) == [200, 200]
    assert b"bytes: 11\n" in answer  # "hello world"


@pytest.mark.parametrize("header, value, framed, version, expected", [
    (b"Content-Length", b"10", False, b"HTTP/1.1", None),
    (b"Content-Length", b"10", True, b"HTTP/1.1", 400),
    (b"Content-Length", b"1" * 19, False, b"HTTP/1.1", 400),
    (b"Content-Length", "١".encode(), False, b"HTTP/1.1", 400),  # an Arabic-Indic digit
    (b"Transfer-Encoding", b"chunked", False, b"HTTP/1.1", None),
    (b"Transfer-Encoding", b"CHUNKED", False, b"HTTP/1.1", None),
    (b"Transfer-Encoding", b"chunked", True, b"HTTP/1.1", 400),
    (b"Transfer-Encoding", b"chunked", False, b"HTTP/1.0", 400),
    (b"Transfer-Encoding", b"gzip, chunked", False, b"HTTP/1.1", 501),
    (b"Transfer-Encoding", b"chunked,", False, b"HTTP/1.1", 400),
    (b"Transfer-Encoding", b"", False, b"HTTP/1.1", 400),
    (b"Transfer-Encoding", b"chunked, gzip, chunked", False, b"HTTP/1.1", 400),
])
def test_framing_error(header, value, framed, version, expected):
    error = framing_error(header, value, framed, version)
    assert (error and error[0]) == expected
