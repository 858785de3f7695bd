"""HTTP service with real clients: curl (HTTP/1.0, 1.1, keep-alive, conditional GET, Basic
auth, uploads, HTTPS with the lab CA), Python's http.client, and raw sockets for bad input."""

from __future__ import annotations

import hashlib
import http.client
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from services import registry

from tests.conftest import LabFactory, Server, need

CONFIG = """
[http]
long_page_size = 6000
upload_limit = 300000
header_limit = 4096
max_headers = 20
"""


@contextmanager
def running_web(tmp_path_factory, name: str, config: str | None = None) -> Iterator[Server]:
    """An HTTP server for a whole test module: stopped at the end (exit 0), and then its
    stderr must show no traceback: bad input never reached the reactor as an error."""
    factory = LabFactory(tmp_path_factory.mktemp(name))
    server = factory.start(only="http", config=config)
    yield server
    problems = factory.cleanup()
    assert not problems, problems
    stderr = server.stderr()
    assert "Traceback" not in stderr and "Unhandled" not in stderr, stderr[-3000:]


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "http", CONFIG) as server:
        yield server


def url(server, path: str, tls: bool = False) -> str:
    if tls:
        return f"https://localhost:{server.port('http', 'https')}{path}"
    return f"http://127.0.0.1:{server.port('http', 'http')}{path}"


def curl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    need("curl")
    result = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=30)
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


def status_of(output: bytes) -> list[int]:
    """The final statuses in curl -i output (interim 100 Continue left out)."""
    return [int(m) for m in re.findall(rb"^HTTP/1\.[01] (\d{3})", output, re.M) if m != b"100"]


def raw(server, data: bytes, read_until_close: bool = True) -> bytes:
    """Send bytes on a fresh connection and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port("http", "http")), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
        return b"".join(chunks)


def test_portal_lists_services_and_offers_the_ca(web):
    page = curl(url(web, "/")).stdout.decode()
    assert f"{web.port('http', 'http')}/tcp" in page and f"{web.port('http', 'https')}/tcp" in page
    assert "www.lab.test" in page and 'href="/ca.crt"' in page
    for name in registry.names():  # every registered service, whether served here or not
        assert f"<td>{name}</td>" in page
    assert "/.well-known/autoconfig/mail/config-v1.1.xml" in page
    ca = curl(url(web, "/ca.crt")).stdout
    assert ca == (web.data / "tls" / "ca.crt").read_bytes()
    assert ca.startswith(b"-----BEGIN CERTIFICATE-----")


def test_conditional_get_answers_304_without_body(web):
    first = curl("-i", url(web, "/lab/http/basic.html")).stdout
    etag = re.search(rb"^ETag: (.+?)\r$", first, re.M).group(1).decode()
    modified = re.search(rb"^Last-Modified: (.+?)\r$", first, re.M).group(1).decode()
    assert status_of(first) == [200]
    for header in (f"If-None-Match: {etag}", f"If-Modified-Since: {modified}"):
        again = curl("-i", "-H", header, url(web, "/lab/http/basic.html")).stdout
        assert status_of(again) == [304], again
        assert again.endswith(b"\r\n\r\n")  # headers only
        assert b"Content-Length" not in again
    changed = curl("-i", "-H", 'If-None-Match: "other"', "-H", f"If-Modified-Since: {modified}",
                   url(web, "/lab/http/basic.html")).stdout
    assert status_of(changed) == [200]  # If-None-Match wins over If-Modified-Since


def test_long_page_has_the_configured_size(web):
    body = curl(url(web, "/lab/http/long.html")).stdout
    assert len(body) == 6000 and body.rstrip().endswith(b"</html>")


def test_embedded_page_loads_an_image_from_a_second_host(web):
    port = web.port("http", "http")
    page = curl(url(web, "/lab/http/embedded.html")).stdout.decode()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sources == ["/lab/http/img/local.png", f"//images.lab.test:{port}/lab/http/img/remote.png"]
    for path in ("/lab/http/img/local.png", "/lab/http/img/remote.png"):
        image = curl("--resolve", f"images.lab.test:{port}:127.0.0.1",
                     f"http://images.lab.test:{port}{path}").stdout
        assert image.startswith(b"\x89PNG\r\n\x1a\n")


def test_keep_alive_and_close_for_http_1_0_and_1_1(web):
    """HTTPChannel.checkPersistence never keeps HTTP/1.0 alive; our subclass does when asked."""
    page = url(web, "/lab/http/basic.html")
    reused = curl("-v", "--http1.1", page, page).stderr.decode()
    assert "Re-using existing connection" in reused or "Reusing existing" in reused
    closed = curl("-v", "--http1.1", "-H", "Connection: close", page, page).stderr.decode()
    assert "Re-using" not in closed and "Reusing" not in closed
    ten = curl("-v", "--http1.0", "-H", "Connection: keep-alive", page, page).stderr.decode()
    assert "Re-using existing connection" in ten or "Reusing existing" in ten
    plain_ten = curl("-v", "--http1.0", page, page).stderr.decode()
    assert "Re-using" not in plain_ten and "Reusing" not in plain_ten
    # Two HTTP/1.0 keep-alive requests on one socket, then one without: the server closes.
    request = b"GET /lab/http/basic.html HTTP/1.0\r\nHost: x\r\n"
    answer = raw(web, request + b"Connection: keep-alive\r\n\r\n" + request + b"\r\n")
    assert status_of(answer) == [200, 200]
    assert answer.count(b"Connection: keep-alive") == 1


def test_basic_auth_protected_area(web):
    page = url(web, "/lab/http/protected/")
    denied = curl("-i", page).stdout
    assert status_of(denied) == [401]
    assert b'WWW-Authenticate: Basic realm="protolab lab users"' in denied
    assert status_of(curl("-i", "-u", "alice:wrong", page).stdout) == [401]
    allowed = curl("-i", "-u", "alice:alice", page).stdout
    assert status_of(allowed) == [200] and b"Hello, alice" in allowed


def test_form_echoes_the_fields(web):
    answer = curl("--data-urlencode", "user=alice", "--data-urlencode", "password=s3cr<t",
                  url(web, "/lab/http/form")).stdout.decode()
    assert "<td>password</td><td>s3cr&lt;t</td>" in answer
    assert "<form" in curl(url(web, "/lab/http/form")).stdout.decode()


def test_uploads_answer_size_and_sha256(web, tmp_path):
    """Twisted's multipart parsing drops the filename (twisted#12358) and needs the whole
    body; ours streams it and names the file."""
    data = bytes(range(256)) * 1000  # 256000 bytes, under the 300000 limit
    path = tmp_path / "blob name.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    multipart = curl("-F", f"file=@{path}", "-F", "note=hi", url(web, "/lab/http/upload")).stdout
    assert multipart.decode() == f"file: blob name.bin\nbytes: {len(data)}\nsha256: {digest}\n"
    raw_body = curl("--data-binary", f"@{path}", url(web, "/lab/http/upload")).stdout
    assert raw_body.decode() == f"bytes: {len(data)}\nsha256: {digest}\n"
    chunked = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}",
                   url(web, "/lab/http/upload")).stdout
    assert chunked.decode() == f"bytes: {len(data)}\nsha256: {digest}\n"
    path.write_bytes(data * 16)  # 4 MB: the refusal must reach curl while it still sends
    too_big = curl("-i", "--data-binary", f"@{path}", url(web, "/lab/http/upload"),
                   check=False).stdout
    assert status_of(too_big) == [413]
    too_big_chunked = curl("-i", "-H", "Transfer-Encoding: chunked", "--data-binary",
                           f"@{path}", url(web, "/lab/http/upload"), check=False).stdout
    assert status_of(too_big_chunked) == [413]
    assert status_of(curl("-i", url(web, "/lab/http/upload")).stdout) == [200]  # still serving


def test_https_with_the_lab_ca(web):
    ca = str(web.data / "tls" / "ca.crt")
    answer = curl("-i", "--cacert", ca, url(web, "/lab/http/basic.html", tls=True)).stdout
    assert status_of(answer) == [200]
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection("localhost", web.port("http", "https"),
                                             context=context, timeout=10)
    connection.request("GET", "/")
    response = connection.getresponse()
    assert response.status == 200 and b"protolab" in response.read()
    connection.close()


def test_http_client_keeps_one_connection(web):
    connection = http.client.HTTPConnection("127.0.0.1", web.port("http", "http"), timeout=10)
    for path in ("/lab/http/basic.html", "/lab/http/long.html", "/nowhere"):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
    assert response.status == 404
    first_socket = connection.sock
    connection.request("HEAD", "/lab/http/long.html")
    head = connection.getresponse()
    assert head.read() == b"" and head.getheader("Content-Length") == "6000"
    assert connection.sock is first_socket
    connection.close()


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
    (b"GET / HTTP/9.9\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(30)) + b"\r\n", 431),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"POST /lab/http/upload HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
])
def test_bad_requests_get_an_error_and_a_close(web, request_bytes, status):
    """Twisted answers a bare 400 to all of these, or closes without a word on a long
    header line (twisted#4892), and has no body limit at all (twisted#4898)."""
    answer = raw(web, request_bytes)  # returns only once the server has closed
    assert status_of(answer) == [status], answer[:200]
    assert b"Connection: close" in answer
    ok = raw(web, b"GET /lab/http/basic.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == [200]  # the next request is served


def test_requests_are_journaled(web):
    curl("-u", "bob:bob", url(web, "/lab/http/protected/"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        text = web.cli("journal", "--service", "http").stdout
        if "GET /lab/http/protected/" in text and "200" in text and "user=bob" in text:
            break
        time.sleep(0.2)  # the journal is flushed twice a second; poll for it
    assert re.search(r"GET /lab/http/protected/ HTTP/1.1", text)
    assert re.search(r"200 \d+ bytes user=bob", text)
    assert "Basic bob ok secret=••••" in text
    assert "bob:bob" not in text and "Ym9iOmJvYg" not in text


def test_check_probes_http(web):
    result = web.check("http")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "HTTP/1.1 200" in result.stdout


def response_parts(answer: bytes) -> tuple[bytes, list[bytes], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    return lines[0], sorted(l for l in lines[1:] if not l.startswith(b"Date:")), body


@pytest.mark.parametrize("version, extra", [
    (b"HTTP/1.1", b"Connection: close\r\n"),
    (b"HTTP/1.0", b""),
    (b"HTTP/1.0", b"Connection: keep-alive\r\n"),
])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_fast_path_answers_exactly_like_twisted_web(web, version, extra, method):
    """A plain GET of a page in memory skips twisted.web's Request (fast.py); an
    Authorization header sends the same request the ordinary way. Both must agree."""
    etag = re.search(rb"ETag: (.+?)\r\n", raw(web, b"GET /lab/http/basic.html HTTP/1.0\r\n\r\n"))
    for conditional in (b"", b"If-None-Match: " + etag.group(1) + b"\r\n"):
        request = method + b" /lab/http/basic.html " + version + b"\r\nHost: x\r\n" + extra \
            + conditional
        fast_answer = raw(web, request + b"\r\n", read_until_close=not extra.endswith(b"alive\r\n"))
        slow_answer = raw(web, request + b"Authorization: Basic eDp5\r\n\r\n",
                          read_until_close=not extra.endswith(b"alive\r\n"))
        assert response_parts(fast_answer) == response_parts(slow_answer)


def test_random_requests_never_break_the_server(web):
    import random

    rng = random.Random(20261122)
    pieces = [b"GET", b"POST", b"PUT", b" ", b"/", b"/~alice/", b"%2e%2e/", b"HTTP/1.1", b"HTTP/1.0",
              b"\r\n", b"\n", b":", b"Content-Length: ", b"Transfer-Encoding: chunked",
              b"Connection: keep-alive", b"Host: x", b"0", b"5", b"ffffffff", b"\x00", b"\xff",
              b"Expect: 100-continue", b"Authorization: Basic ", b"=="]
    for _ in range(150):
        data = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
        with socket.create_connection(("127.0.0.1", web.port("http", "http")), timeout=5) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # end of input: the server answers or closes
            try:
                while s.recv(65536):
                    pass
            except (ConnectionResetError, TimeoutError):
                pass
    ok = raw(web, b"GET /lab/http/basic.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == [200]


def test_netcat_style_bare_lf_and_pipelined_requests(web):
    """nc sends lines ending in LF alone; a pipelined pair is answered in order."""
    answer = raw(web, b"GET /lab/http/basic.html HTTP/1.0\nHost: x\n\n")
    assert status_of(answer) == [200] and answer.rstrip().endswith(b"</html>")
    both = raw(web, b"GET /lab/http/basic.html HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /lab/http/long.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(both) == [200, 200]
    assert both.index(b"A small page") < both.index(b"A long page")
    posted = raw(web, b"POST /lab/http/form HTTP/1.0\nContent-Length: 11\n\nuser=a%0Ab\r")
    assert status_of(posted) == [200] and b"<td>user</td><td>a\nb\r</td>" in posted
