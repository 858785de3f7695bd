"""Range requests and content codings: the sans-IO cores (services.http.ranges, .codings),
then real clients: curl -r / -C - / --compressed, wget -c, on exercise pages, small files
(from memory) and big ones (sendfile, and chunked reads under TLS), over HTTP and HTTPS."""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import hashlib
import os
import re
import subprocess

import brotli
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from services.http import codings, ranges
from services.http.ranges import UNSATISFIABLE
from tests.conftest import need
from tests.http.test_server import curl, running_web, status_of, url

# --- sans-IO: ranges ----------------------------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    (b"bytes=0-499", [(0, 499)]),
    (b"bytes=500-", [(500, 999)]),
    (b"bytes=-200", [(800, 999)]),
    (b"bytes=-5000", [(0, 999)]),
    (b"bytes=900-5000", [(900, 999)]),
    (b"bytes=0-0, -1", [(0, 0), (999, 999)]),
    (b"bytes=500-599,0-99", [(500, 599), (0, 99)]),  # the client's order, when disjoint
    (b"bytes=0-99,50-149,140-200", [(0, 200)]),  # overlaps: merged
    (b"BYTES = 1-2 ,, 4-5", [(1, 2), (4, 5)]),  # case, spaces and empty list elements
    (b"bytes=1000-", UNSATISFIABLE),
    (b"bytes=-0", UNSATISFIABLE),
    (b"items=0-1", None), (b"bytes=5-1", None), (b"bytes=a-b", None), (b"bytes=1", None),
    (b"bytes=", None), (b"bytes 0-1", None), (b"bytes=+1-2", None), (b"bytes=0x1-2", None),
    (b"bytes=" + b"9" * 19 + b"-", None),
    (b"bytes=" + b",".join(b"%d-%d" % (i * 2, i * 2) for i in range(33)), None),
])
def test_range_header_parsing(header, expected):
    assert ranges.requested(header, 1000) == expected


def test_an_empty_representation_has_no_satisfiable_range():
    assert ranges.requested(b"bytes=0-", 0) is UNSATISFIABLE
    assert ranges.requested(b"bytes=-10", 0) is UNSATISFIABLE


@given(st.binary(max_size=80), st.integers(0, 10**6))
def test_range_parsing_never_raises_and_stays_inside(header, size):
    result = ranges.requested(b"bytes=" + header, size)
    if isinstance(result, list):
        assert result and len(result) <= ranges.MAX_RANGES
        assert all(0 <= first <= last < size for first, last in result)


def test_if_range():
    lm = b"Tue, 01 Dec 2026 10:00:00 GMT"
    assert ranges.if_range_holds(None, b'"a"', lm)
    assert ranges.if_range_holds(b'"a"', b'"a"', lm)
    assert not ranges.if_range_holds(b'"b"', b'"a"', lm)
    assert not ranges.if_range_holds(b'W/"a"', b'"a"', lm)  # weak tags never match
    assert ranges.if_range_holds(lm, b'"a"', lm)
    assert not ranges.if_range_holds(b"Tue, 01 Dec 2026 09:00:00 GMT", b'"a"', lm)
    assert not ranges.if_range_holds(b"yesterday", b'"a"', lm)


def test_multipart_framing_is_a_mime_document():
    data = bytes(range(256)) * 4
    framing = ranges.framing([(0, 9), (1000, 1023)], len(data), b"text/plain")
    body = b"".join(p if isinstance(p, bytes) else data[p[0]:p[0] + p[1]]
                    for p in framing.pieces)
    assert len(body) == framing.length
    parts = parse_byteranges(framing.content_type, body)
    assert parts == [("bytes 0-9/1024", data[:10]), ("bytes 1000-1023/1024", data[1000:])]


def parse_byteranges(content_type: bytes | str, body: bytes) -> list[tuple[str, bytes]]:
    """(Content-Range, bytes) of each part, read by the standard library's MIME parser."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    assert message.get_content_type() == "multipart/byteranges"
    return [(part["Content-Range"], part.get_payload(decode=True)) for part in message.iter_parts()]


# --- sans-IO: codings ---------------------------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    (None, None), (b"", None), (b"identity", None),
    (b"gzip", b"gzip"), (b"x-gzip", b"gzip"), (b"GZIP;Q=0.5", b"gzip"),
    (b"gzip, deflate, br, zstd", b"br"),  # curl --compressed, Chromium
    (b"gzip, deflate", b"gzip"),
    (b"gzip;q=1, br;q=0.5", b"gzip"),
    (b"br;q=0, gzip", b"gzip"),
    (b"*", b"br"), (b"*;q=0", None), (b"*, br;q=0", b"zstd"),
    (b"gzip;q=0.4, identity;q=0.5", None),
    (b"gzip;q=nonsense", None), (b"deflate", None), (b"compress, ;;, ,", None),
])
def test_accept_encoding(header, expected):
    assert codings.choose(header) == expected


@given(st.binary(max_size=100))
def test_accept_encoding_never_raises(header):
    assert codings.choose(header) in (None, *codings.PREFERENCE)


# --- real clients -------------------------------------------------------------------------

BIG = 1024 * 1024 + 123  # over files.SMALL: served from disk with sendfile


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "ranges") as server:
        home = server.data / "homes" / "alice" / "public_html"
        # The web space exists once the lab knows alice; a GET makes sure of it.
        curl(url(server, "/~alice/"))
        (home / "big.bin").write_bytes(os.urandom(BIG))
        (home / "small.txt").write_bytes(b"0123456789" * 100)
        yield server


def headers_of(output: bytes) -> dict[str, str]:
    """The last header block of curl -i / -I output, lower-case names."""
    blocks = re.split(rb"\r\n\r\n", output)
    heads = [b for b in blocks if re.match(rb"HTTP/[\d.]+ \d{3}", b)]
    lines = heads[-1].decode("latin-1").split("\r\n")[1:]
    return {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}


PAGES = ["/lab/http/long.html", "/~alice/small.txt", "/~alice/big.bin", "/ca.crt"]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_single_range_with_curl(web, path, tls):
    tls_args = ("--cacert", str(web.data / "tls" / "ca.crt")) if tls else ()
    whole = curl(*tls_args, url(web, path, tls)).stdout
    answer = curl(*tls_args, "-i", "-r", "100-299", url(web, path, tls)).stdout
    assert status_of(answer) == [206]
    head = headers_of(answer)
    assert head["content-range"] == f"bytes 100-299/{len(whole)}"
    assert head["content-length"] == "200" and head["accept-ranges"] == "bytes"
    assert answer.split(b"\r\n\r\n", 1)[1] == whole[100:300]
    suffix = curl(*tls_args, "-r", "-50", url(web, path, tls)).stdout
    assert suffix == whole[-50:]


@pytest.mark.parametrize("path", PAGES)
def test_multiple_ranges_are_multipart_byteranges(web, path):
    whole = curl(url(web, path)).stdout
    answer = curl("-i", "-r", "0-9,200-299,-5", url(web, path)).stdout
    assert status_of(answer) == [206]
    head = headers_of(answer)
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert int(head["content-length"]) == len(body)
    size = len(whole)
    assert parse_byteranges(head["content-type"], body) == [
        (f"bytes 0-9/{size}", whole[:10]), (f"bytes 200-299/{size}", whole[200:300]),
        (f"bytes {size - 5}-{size - 1}/{size}", whole[-5:])]


@pytest.mark.parametrize("path", PAGES)
def test_unsatisfiable_range_is_416_with_the_size(web, path):
    size = len(curl(url(web, path)).stdout)
    answer = curl("-i", "-r", f"{size}-", url(web, path)).stdout
    assert status_of(answer) == [416]
    assert headers_of(answer)["content-range"] == f"bytes */{size}"
    assert b"Range Not Satisfiable" in answer.split(b"\r\n", 1)[0]


@pytest.mark.parametrize("path", PAGES)
def test_if_range_with_etag_and_date(web, path):
    head = headers_of(curl("-I", url(web, path)).stdout)
    for validator in (head["etag"], head["last-modified"]):
        answer = curl("-i", "-r", "0-3", "-H", f"If-Range: {validator}", url(web, path)).stdout
        assert status_of(answer) == [206], validator
    for stale in ('"stale"', "Mon, 01 Jan 2001 00:00:00 GMT"):
        answer = curl("-i", "-r", "0-3", "-H", f"If-Range: {stale}", url(web, path)).stdout
        assert status_of(answer) == [200]  # changed since: the whole representation
        assert "content-range" not in headers_of(answer)


@pytest.mark.parametrize("path", [*PAGES, "/lab/http/text.html"])
@pytest.mark.parametrize("extra", [(), ("-r", "5-9"), ("-r", "0-1,4-5"), ("-r", "99999999-"),
                                   ("--compressed",)], ids=["whole", "range", "ranges", "416",
                                                            "compressed"])
def test_head_answers_the_get_headers(web, path, extra):
    get = headers_of(curl("-s", "-D", "-", "-o", "/dev/null", *extra, url(web, path)).stdout)
    head = headers_of(curl("-s", "-I", *extra, url(web, path)).stdout)
    for volatile in ("date",):
        get.pop(volatile), head.pop(volatile)
    if "boundary=" in get.get("content-type", ""):  # a fresh boundary per answer
        get.pop("content-type"), head.pop("content-type")
    assert head == get


@pytest.mark.parametrize("path", ["/~alice/big.bin", "/lab/http/long.html"])
def test_curl_and_wget_resume_a_download(web, tmp_path, path):
    need("wget")
    whole = curl(url(web, path)).stdout
    for tool in ("curl", "wget"):
        target = tmp_path / f"{tool}.part"
        target.write_bytes(whole[:len(whole) // 3])  # an interrupted download
        if tool == "curl":
            curl("-C", "-", "-o", str(target), url(web, path))
        else:
            subprocess.run(["wget", "-q", "-c", "-O", str(target), url(web, path)],
                           check=True, timeout=30)
        assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(whole).digest()
    # A file already complete: curl is told 416 and leaves it as it is.
    done = tmp_path / "done"
    done.write_bytes(whole)
    result = curl("-C", "-", "-o", str(done), url(web, path), check=False)
    assert done.read_bytes() == whole, result.stderr


def test_journal_counts_the_bytes_of_a_range(web):
    curl("-r", "10-19", url(web, "/~alice/big.bin?journal"))
    assert "206 10 bytes" in web.journal_until("http", "206 10 bytes")


DECODERS = {"gzip": gzip.decompress, "br": brotli.decompress,
            "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)}


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_text_is_compressed_on_request_with_its_own_etag(web, coding):
    plain = curl("-i", url(web, "/lab/http/text.html")).stdout
    packed = curl("-i", "-H", f"Accept-Encoding: {coding}", url(web, "/lab/http/text.html")).stdout
    plain_head, plain_body = headers_of(plain), plain.split(b"\r\n\r\n", 1)[1]
    head, body = headers_of(packed), packed.split(b"\r\n\r\n", 1)[1]
    assert "content-encoding" not in plain_head and plain_head["vary"] == "Accept-Encoding"
    assert head["content-encoding"] == coding and head["vary"] == "Accept-Encoding"
    assert DECODERS[coding](body) == plain_body
    assert len(body) * 5 < len(plain_body) and int(head["content-length"]) == len(body)
    assert head["etag"] != plain_head["etag"] and coding in head["etag"]
    # Each ETag validates its own variant only.
    again = curl("-i", "-H", f"Accept-Encoding: {coding}", "-H", f"If-None-Match: {head['etag']}",
                 url(web, "/lab/http/text.html")).stdout
    assert status_of(again) == [304] and headers_of(again)["vary"] == "Accept-Encoding"
    other = curl("-i", "-H", f"If-None-Match: {head['etag']}", url(web, "/lab/http/text.html"))
    assert status_of(other.stdout) == [200]
    # A range of the compressed variant is a range of its bytes.
    part = curl("-H", f"Accept-Encoding: {coding}", "-r", "0-9",
                url(web, "/lab/http/text.html")).stdout
    assert part == body[:10]


def test_curl_compressed_and_what_stays_plain(web):
    page = curl("--compressed", "-i", url(web, "/lab/http/text.html")).stdout
    assert headers_of(page)["content-encoding"] == "br"
    plain = curl("--compressed", "-i", url(web, "/lab/http/text-plain.html")).stdout
    assert "content-encoding" not in headers_of(plain)
    assert plain.split(b"\r\n\r\n", 1)[1] == page.split(b"\r\n\r\n", 1)[1]  # curl decoded it
    image = headers_of(curl("--compressed", "-I", url(web, "/lab/http/img/local.png")).stdout)
    assert "content-encoding" not in image and "vary" not in image
    big = headers_of(curl("--compressed", "-I", url(web, "/~alice/big.bin")).stdout)
    assert "content-encoding" not in big
    exercise = curl(url(web, "/lab/http/compression.html")).stdout
    assert b'src="/lab/http/text.html"' in exercise and b'src="/lab/http/text-plain.html"' in exercise


def test_chunked_exercise(web):
    raw = curl("--raw", "-i", url(web, "/lab/http/chunked")).stdout
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head and b"Content-Length" not in head
    sizes = re.findall(rb"^([0-9a-f]+)\r$", body, re.M)
    assert len(sizes) == 6 and sizes[-1] == b"0"  # five chunks and the last one
    decoded = curl(url(web, "/lab/http/chunked")).stdout
    assert decoded.count(b"\n") == 5 and decoded.startswith(b"chunk 1 of 5")
    http10 = curl("-0", "-i", url(web, "/lab/http/chunked")).stdout
    assert b"chunked" not in http10 and http10.count(b"chunk ") == 5  # ended by the close
    assert headers_of(curl("-I", url(web, "/lab/http/chunked")).stdout)[
        "transfer-encoding"] == "chunked"

