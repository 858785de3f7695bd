"""A seeded fuzz campaign against a running HTTP server: request heads and bodies built
from HTTP's own pieces (methods, targets, framing headers, multipart, chunked bodies,
bytes), and bodies for the JSON API. Every input gets a response that is not a 5xx, or
a clean close (an incomplete request); the server prints no traceback; after the
campaign the server still answers.

PROTOLAB_FUZZ_EXAMPLES=N runs N inputs per test instead of the default.
"""

from __future__ import annotations

import base64
import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.test_server import running_web, status_of
from tests.http.test_framing import half_closed
from tests.http.test_resources import fds, rss_kib, settled_fds

EXAMPLES = int(os.environ.get("PROTOLAB_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
ADMIN = b"Authorization: Basic " + base64.b64encode(b"admin:admin") + b"\r\n"
ALICE = b"Authorization: Basic " + base64.b64encode(b"alice:alice") + b"\r\n"
CONFIG = "[http]\nupload_limit = 100000\nheader_limit = 4096\nmax_headers = 30\n"


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "fuzz", CONFIG) as server:
        (server.data / "homes" / "alice" / "public_html" / "page.html").write_text("<p>hi</p>")
        half_closed(server, b"GET / HTTP/1.1\r\nHost: www\r\n\r\n")  # warm the portal
        server.level = fds(server.process.pid), rss_kib(server.process.pid)
        yield server


def statuses(answer: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^HTTP/1\.[01] (\d{3}) ", answer, re.M)]


def assert_answered(answer: bytes) -> None:
    codes = statuses(answer)
    assert answer == b"" or codes, answer[:300]  # an answer, or a clean close
    assert all(code < 500 or code in (501, 505) for code in codes), answer[:600]


METHODS = st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"MKCOL", b"OPTIONS",
                           b"get", b"G\x00T", b"", b"CONNECT", b"TRACE"])
TARGETS = st.sampled_from([
    b"/", b"/lab/http/upload", b"/lab/http/form", b"/lab/http/basic.html",
    b"/lab/http/protected/", b"/~alice/", b"/~alice/page.html", b"/~alice/new.txt",
    b"/~alice/%2e%2e/", b"/~alice/..%2f..%2f", b"/~bob/", b"/~%ff/", b"/api/v1/users",
    b"/api/v1/users/alice/mailboxes/INBOX/messages", b"/api/v1/%ff", b"/lab/dashboard",
    b"*", b"http://www/", b"/" + b"a" * 5000, b"/\x7f", b"//", b"/?a=%"]) | st.binary(max_size=40)
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"http/1.1",
                            b"HTTP/1.1 ", b""])
BOUNDARY = st.sampled_from([b"b", b"x" * 70, b"x" * 71, b"x" * 500, b"a b", b'"q"', b"\xff",
                            b"", b"a;b", b"----WebKitFormBoundary7MA4YWxkTrZu0gW"])
HEADERS = st.one_of(
    st.sampled_from([b"Host: www", b"Connection: close", b"Connection: keep-alive",
                     b"Expect: 100-continue", b"Transfer-Encoding: chunked",
                     b"Transfer-Encoding: identity", b"Transfer-Encoding: gzip, chunked",
                     b"Content-Length: 0", b"Content-Length: 5", b"Content-Length: -1",
                     b"Content-Length: 99999999999", b"Content-Type: application/json",
                     ADMIN.rstrip(), ALICE.rstrip(), b"Authorization: Basic ???",
                     b"If-None-Match: *", b"If-Modified-Since: garbage", b" folded",
                     b"Bad Name: x", b"X: \x00", b"X:" + b"y" * 5000, b"Range: bytes=0-1"]),
    BOUNDARY.map(lambda b: b"Content-Type: multipart/form-data; boundary=" + b),
    st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=60)).map(
        lambda nv: nv[0] + b": " + nv[1]),
)
EOLS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n"])
CHUNKED = st.lists(st.binary(max_size=50), max_size=4).map(
    lambda chunks: b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")
MULTIPART = st.tuples(BOUNDARY, st.binary(max_size=100)).map(
    lambda bd: b"--" + bd[0] + b"\r\nContent-Disposition: form-data; name=\"f\"; "
               b"filename=\"x\"\r\n\r\n" + bd[1] + b"\r\n--" + bd[0] + b"--\r\n")
BODIES = st.one_of(st.binary(max_size=300), CHUNKED, MULTIPART, st.just(b""))


@st.composite
def requests(draw) -> bytes:
    eol = draw(EOLS)
    line = b" ".join([draw(METHODS), draw(TARGETS), draw(VERSIONS)])
    headers = draw(st.lists(HEADERS, max_size=8))
    body = draw(BODIES)
    if draw(st.booleans()):
        headers.append(b"Content-Length: %d" % len(body))
    head = eol.join([line, *headers, b"", b""])
    return head + body + draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\n\r\n"]))


@FUZZ
@given(requests())
def test_fuzzed_requests_get_an_answer_or_a_clean_close(web, data):
    assert_answered(half_closed(web, data))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "password", "x", ""]) | st.text(max_size=5),
                      children, max_size=4),
    max_leaves=20)
API_BODIES = st.one_of(
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 90_000).map(lambda n: b"[" * n),
    st.integers(1, 15_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@FUZZ
@given(API_BODIES, st.sampled_from([b"/api/v1/users", b"/api/v1/users/alice",
                                    b"/api/v1/users/alice/mailboxes"]))
def test_fuzzed_api_bodies_get_a_json_answer(web, body, path):
    data = (b"POST " + path + b" HTTP/1.1\r\nHost: www\r\n" + ADMIN
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    answer = half_closed(web, data)
    assert_answered(answer)
    assert statuses(answer), answer[:200]
    head, _, payload = answer.partition(b"\r\n\r\n")
    if statuses(answer)[0] != 201:  # (a valid new user is possible, if rare)
        assert b"application/json" in head and "status" in json.loads(payload)


def test_the_server_still_answers_after_the_campaign(web):
    answer = half_closed(web, b"GET /lab/http/basic.html HTTP/1.1\r\nHost: www\r\n\r\n")
    assert status_of(answer) == [200]
    base_fds, base_rss = web.level
    after_fds = settled_fds(web.process.pid, base_fds)
    print(f"\nafter {2 * EXAMPLES} fuzzed inputs: fds {base_fds} -> {after_fds}, "
          f"RSS {base_rss} -> {rss_kib(web.process.pid)} KiB")
    assert after_fds <= base_fds


def upload(boundary: bytes) -> bytes:
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="f"; filename="a"'
            b"\r\n\r\ndata\r\n--" + boundary + b"--\r\n")
    return (b"POST /lab/http/upload HTTP/1.1\r\nHost: www\r\nContent-Type: multipart/form-data; "
            b"boundary=" + boundary + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def test_a_boundary_over_70_characters_is_400_and_the_connection_goes_on(web):
    """It dropped the connection without a response (MultipartError escaped the body
    sink's constructor, before any resource ran)."""
    follow = b"GET /lab/http/basic.html HTTP/1.1\r\nHost: www\r\n\r\n"
    answer = half_closed(web, upload(b"x" * 71) + upload(b"x" * 70) + upload(b"a\x01b") + follow)
    assert status_of(answer) == [400, 200, 400, 200]
    assert b"1-70 characters" in answer and b"bytes: 4\n" in answer


def test_deeply_nested_json_is_a_400_with_a_json_error(web):
    """json.loads raised RecursionError, which the API did not catch: 500."""
    for body in (b"[" * 100_000, b'{"a":' * 10_000 + b"1" + b"}" * 10_000, b"[" * 33 + b"]" * 33):
        answer = half_closed(web, b"POST /api/v1/users HTTP/1.1\r\nHost: www\r\n" + ADMIN
                             + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert status_of(answer) == [400]
        error = json.loads(answer.partition(b"\r\n\r\n")[2])
        assert error == {"status": 400, "message": "the body nests deeper than 32 levels"}
