"""HTTP/2 with real clients: curl --http2 (ALPN h2 on the TLS port, Upgrade: h2c on the
cleartext one), curl --http2-prior-knowledge, nghttp and h2load (many streams on one
connection); the same site (ranges, codings, uploads, limits) and the same journal; tshark
decrypts the h2 session from the lab's key log and dissects it without errors."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest

from tests.conftest import need
from tests.http.test_ranges import headers_of, parse_byteranges
from tests.http.test_server import curl, running_web, url

UPLOAD_LIMIT = 200_000


@pytest.fixture(scope="module")
def keylog(tmp_path_factory):
    return tmp_path_factory.mktemp("h2keys") / "keys.log"


@pytest.fixture(scope="module")
def web(tmp_path_factory, keylog):
    config = f'[tls]\nkeylog = "{keylog}"\n[http]\nupload_limit = {UPLOAD_LIMIT}\n'
    with running_web(tmp_path_factory, "h2", config) as server:
        curl(url(server, "/~alice/"))  # the web space exists once alice is known
        (server.data / "homes" / "alice" / "public_html" / "big.bin").write_bytes(
            os.urandom(3 * 1024 * 1024 + 5))
        yield server


def tls(web) -> tuple[str, ...]:
    return ("--cacert", str(web.data / "tls" / "ca.crt"))


MODES = {
    "alpn": lambda web, path: ("--http2", *tls(web), url(web, path, tls=True)),
    "prior-knowledge": lambda web, path: ("--http2-prior-knowledge", url(web, path)),
    "upgrade": lambda web, path: ("--http2", url(web, path)),
}


@pytest.mark.parametrize("mode", MODES)
def test_curl_speaks_http2_in_each_way(web, mode):
    result = curl("-i", "-w", "\nversion=%{http_version}", *MODES[mode](web, "/lab/http/basic.html"))
    assert result.stdout.endswith(b"version=2")
    if mode == "upgrade":
        assert result.stdout.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert re.search(rb"^HTTP/2 200", result.stdout, re.M)
    assert b"<h1>A small page</h1>" in result.stdout


def test_http2_serves_the_same_site(web):
    for path in ("/", "/lab/http/long.html", "/ca.crt", "/lab/http/img/local.png"):
        over_h1 = curl(url(web, path)).stdout
        over_h2 = curl(*MODES["alpn"](web, path)).stdout
        if path != "/":  # the portal says what it was asked over
            assert over_h2 == over_h1, path
    missing = curl("-i", *MODES["prior-knowledge"](web, "/nothing-here")).stdout
    assert re.match(rb"HTTP/2 404", missing)


def test_fast_answers_of_many_frames_arrive_whole(web):
    """A page in memory (up to 256 KB) bigger than a frame: the fast path's own HEADERS
    and DATA frames (http2.send_answer), the window shared by many streams at once (the
    fast path declines when a stream's window is short: Twisted's way then waits)."""
    need("h2load")
    page = os.urandom(100_000)
    (web.data / "homes" / "alice" / "public_html" / "frames.bin").write_bytes(page)
    got = curl(*MODES["prior-knowledge"](web, "/~alice/frames.bin")).stdout
    assert hashlib.sha256(got).digest() == hashlib.sha256(page).digest()
    load = subprocess.run(
        ["h2load", "-n", "200", "-c", "2", "-m", "20",
         f"http://127.0.0.1:{web.port('http', 'http')}/~alice/frames.bin"],
        capture_output=True, text=True, timeout=120)
    assert "requests: 200 total, 200 started, 200 done, 200 succeeded" in load.stdout, \
        load.stdout
    assert "status codes: 200 2xx" in load.stdout
    assert re.search(r"\((\d+)\) data", load.stdout).group(1) == str(200 * len(page))


@pytest.mark.parametrize("mode", MODES)
def test_ranges_and_codings_over_http2(web, mode):
    whole = curl(url(web, "/~alice/big.bin")).stdout
    single = curl("-r", "1000-1999", *MODES[mode](web, "/~alice/big.bin")).stdout
    assert single == whole[1000:2000]
    answer = curl("-i", "-r", "0-9,-10", *MODES[mode](web, "/~alice/big.bin")).stdout
    body = answer.split(b"\r\n\r\n", 2 if mode == "upgrade" else 1)[-1]  # after 101's head too
    head = headers_of(answer)
    assert parse_byteranges(head["content-type"], body) == [
        (f"bytes 0-9/{len(whole)}", whole[:10]),
        (f"bytes {len(whole) - 10}-{len(whole) - 1}/{len(whole)}", whole[-10:])]
    packed = headers_of(curl("-i", "--compressed", *MODES[mode](web, "/lab/http/text.html")).stdout)
    assert packed["content-encoding"] == "br" and packed["vary"] == "Accept-Encoding"
    full = curl(*MODES[mode](web, "/~alice/big.bin")).stdout  # flow control, many windows
    assert hashlib.sha256(full).digest() == hashlib.sha256(whole).digest()


def test_uploads_auth_and_limits_over_http2(web, tmp_path):
    source = tmp_path / "page.html"
    source.write_bytes(b"<p>sent over HTTP/2</p>\n")
    created = curl("-i", "-u", "alice:alice", "-T", str(source),
                   *MODES["alpn"](web, "/~alice/h2.html")).stdout
    assert status_of_h2(created) == [201]
    assert curl(*MODES["prior-knowledge"](web, "/~alice/h2.html")).stdout == source.read_bytes()
    refused = curl("-i", "-u", "bob:bob", "-T", str(source),
                   *MODES["alpn"](web, "/~alice/h2.html")).stdout
    assert status_of_h2(refused) == [403]
    # Refused from its headers alone (it waits for 100 Continue): before its stream is set up.
    early = curl("-i", "-u", "bob:bob", "-H", "Expect: 100-continue", "-T", str(source),
                 *MODES["prior-knowledge"](web, "/~alice/h2.html")).stdout
    assert status_of_h2(early) == [403], early
    # Refused from its headers while its body (over one window's 64 KiB) is already coming:
    # the body is dropped with its flow-control credit given back, so the client finishes.
    body = tmp_path / "body"
    body.write_bytes(os.urandom(150_000))
    eager = curl("-i", "-u", "bob:bob", "-H", "Expect:", "-T", str(body),
                 *MODES["prior-knowledge"](web, "/~alice/h2.html")).stdout
    assert status_of_h2(eager) == [403], eager
    big = tmp_path / "big"
    big.write_bytes(os.urandom(UPLOAD_LIMIT + 1))
    for mode in ("alpn", "prior-knowledge"):
        over = curl("-i", "--data-binary", f"@{big}",
                    *MODES[mode](web, "/lab/http/upload"), check=False).stdout
        assert status_of_h2(over) == [413], over[:300]
        # The connection is still good for other streams: the refusal ended one stream.
        after = curl("-i", *MODES[mode](web, "/lab/http/basic.html"), "-H", "X-After: 1").stdout
        assert status_of_h2(after) == [200]
    small = curl("--data-binary", f"@{source}", *MODES["alpn"](web, "/lab/http/upload")).stdout
    assert hashlib.sha256(source.read_bytes()).hexdigest().encode() in small


def status_of_h2(output: bytes) -> list[int]:
    return [int(m) for m in re.findall(rb"^HTTP/2 (\d{3})", output, re.M)]


def test_journal_says_http2(web):
    curl(*MODES["prior-knowledge"](web, "/lab/http/basic.html?journal-h2"))
    journal = web.journal_until("http", "basic.html?journal-h2 HTTP/2")
    assert "C: GET /lab/http/basic.html?journal-h2 HTTP/2" in journal
    curl(*MODES["upgrade"](web, "/lab/http/basic.html?journal-upgrade"))
    journal = web.journal_until("http", "journal-upgrade HTTP/2")
    lines = [line for line in journal.splitlines() if "journal-upgrade" in line
             or "101 Switching" in line or "protocol h2c" in line]
    assert any("journal-upgrade HTTP/1.1" in line for line in lines)
    assert any("S: 101 Switching Protocols" in line for line in lines)
    assert any("journal-upgrade HTTP/2" in line for line in lines)


def test_nghttp_and_h2load_multiplex_many_streams(web):
    need("nghttp", "h2load")
    port = web.port("http", "https")
    result = subprocess.run(
        ["nghttp", "-ns", "-m", "20", f"https://localhost:{port}/lab/http/long.html"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("/lab/http/long.html") >= 20  # one line per stream
    load = subprocess.run(
        ["h2load", "-n", "400", "-c", "4", "-m", "10",
         f"http://127.0.0.1:{web.port('http', 'http')}/lab/http/basic.html"],
        capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stderr
    assert re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded", load.stdout), \
        load.stdout
    assert "status codes: 400 2xx" in load.stdout


def test_tshark_decrypts_the_h2_session(web, keylog, capture):
    port = web.port("http", "https")
    cap = capture(f"tcp port {port}")
    curl("--compressed", *MODES["alpn"](web, "/lab/http/text.html"))
    curl("-r", "0-9", *MODES["alpn"](web, "/lab/http/long.html"))
    paths = cap.read("http2.type == 1", "http2.headers.path", keylog=keylog,
                     decode_as=(f"tcp.port=={port},tls",))
    assert "/lab/http/text.html" in paths and "/lab/http/long.html" in paths, paths
    statuses = cap.read("http2.headers.status", "http2.headers.status", keylog=keylog,
                        decode_as=(f"tcp.port=={port},tls",))
    assert "200" in statuses and "206" in statuses, statuses
    assert not cap.problems(keylog=keylog, decode_as=(f"tcp.port=={port},tls",))


def test_broken_frames_end_one_connection_only(web):
    """A client that sends the preface and then garbage gets a GOAWAY and the close; the
    server goes on serving (the module's fixture checks its stderr for tracebacks)."""
    import socket

    with socket.create_connection(("127.0.0.1", web.port("http", "http")), timeout=10) as s:
        # The preface, then a DATA frame on stream 0 where SETTINGS must come: an error.
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        received = b""
        while chunk := s.recv(65536):
            received += chunk
    # The server's SETTINGS, then a GOAWAY (frame type 7) with PROTOCOL_ERROR (1).
    goaway = received.find(b"\x07\x00\x00\x00\x00\x00")
    assert goaway > 0 and received[goaway + 10:goaway + 14] == b"\x00\x00\x00\x01", received
    assert status_of_h2(curl("-i", *MODES["prior-knowledge"](web, "/lab/http/basic.html")).stdout) == [200]


def test_tshark_dissects_h2c(web, capture):
    port = web.port("http", "http")
    cap = capture(f"tcp port {port}")
    curl(*MODES["prior-knowledge"](web, "/lab/http/basic.html"))
    curl(*MODES["upgrade"](web, "/lab/http/long.html"))
    paths = cap.read("http2.type == 1", "http2.headers.path",
                     decode_as=(f"tcp.port=={port},http2",))
    assert "/lab/http/basic.html" in paths, paths
    assert not cap.problems(decode_as=(f"tcp.port=={port},http2",))


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (tests/run "
                    "installs it)")
def test_headless_chromium_loads_the_portal_over_h2(web, tmp_path):
    port = web.port("http", "https")
    profile = tmp_path / "profile"
    # --ignore-certificate-errors: a fresh profile does not trust the lab CA, and importing
    # it takes NSS tools; what is judged here is the protocol Chromium picks by ALPN.
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--ignore-certificate-errors", "--dump-dom",
         f"https://localhost:{port}/?chromium"],
        capture_output=True, text=True, timeout=120)
    assert "protolab" in result.stdout, result.stderr[-2000:]
    journal = web.journal_until("http", "GET /?chromium HTTP/2")
    assert "C: GET /?chromium HTTP/2" in journal


class H2Client:
    """The h2 library as a raw client over h2c (prior knowledge): for what curl will not
    send - oversized header sections, endless CONTINUATION frames."""

    def __init__(self, web) -> None:
        import socket

        import h2.config
        import h2.connection

        self.sock = socket.create_connection(("127.0.0.1", web.port("http", "http")),
                                             timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def get(self, path: str, fields: list[tuple[str, str]]) -> tuple[int | None, bytes]:
        """(status, body) of a GET, or (None, the GOAWAY's error code) if the lab ends
        the connection instead."""
        import h2.events

        stream = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream, [(":method", "GET"), (":scheme", "http"),
                                        (":authority", "localhost"), (":path", path),
                                        *fields], end_stream=True)
        self.sock.sendall(self.conn.data_to_send())
        status, body = None, b""
        while data := self.sock.recv(65536):
            for event in self.conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    body += event.data
                    self.conn.acknowledge_received_data(len(event.data), stream)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    return status, body
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return None, b"%d" % (event.error_code or 0)
            self.sock.sendall(self.conn.data_to_send())
        return None, b"closed"

    def raw(self, frames: list[bytes]) -> tuple[bytes, bool]:
        """Frames of our own making, all sent even after the lab has answered (a flood does
        not stop to read); then what the lab answers until it closes, and whether it closed
        with a reset. It should not: with our frames unread, a reset can destroy its answer
        before we read it, so the lab lingers, reading and dropping them."""
        received, reset = b"", False
        try:
            self.sock.sendall(b"".join(frames))
        except (BrokenPipeError, ConnectionResetError):
            reset = True
        try:
            while chunk := self.sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            reset = True
        return received, reset


@pytest.mark.parametrize("path", ["/lab/http/basic.html?reset", "/~alice/?reset"])
def test_streams_reset_in_the_same_read_as_their_request(web, path):
    """HEADERS then RST_STREAM in one read: h2 has closed (or forgotten) the stream when
    its request comes to be answered, on the fast path (a page in memory) as on Twisted's
    (a listing). The stream between them is answered, the connection serves on, and the
    server's stderr stays clean (the module's fixture checks it); main dropped the
    connection with a StreamClosedError."""
    client = H2Client(web)
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"),
               (":path", path)]
    for stream in (1, 3, 5):
        client.conn.send_headers(stream, request, end_stream=True)
        if stream != 3:
            client.conn.reset_stream(stream)
    assert client.get(path + "-after", [])[0] == 200  # sent in the same write as the rest
    journal = web.journal_until("http", f"{path}-after HTTP/2")
    lines = journal[journal.index(f"C: GET {path} HTTP/2"):].splitlines()
    replies = [line.split(" S: ")[1] for line in lines if " S: " in line]
    assert sorted(reply.split()[0] for reply in replies) == ["200", "200", "stream", "stream"]
    assert replies.count("stream reset by the client") == 2  # (a listing ends later)


def test_header_sections_over_the_limit_are_431_over_http2(web):
    """Over [http] header_limit (16384 here) or max_headers (100): 431 on that stream, the
    connection serves on (h2 splits the 20 KB block into HEADERS and CONTINUATION)."""
    client = H2Client(web)
    status, body = client.get("/lab/http/basic.html?big", [("x-big", "a" * 20_000)])
    assert status == 431 and b"request headers exceed 16384 bytes" in body
    status, body = client.get("/lab/http/basic.html?many", [(f"x-{i}", "v") for i in range(150)])
    assert status == 431 and b"more than 100 header fields" in body
    assert client.get("/lab/http/basic.html", [])[0] == 200
    journal = web.journal_until("http", "basic.html?many HTTP/2")
    assert "C: GET /lab/http/basic.html?big HTTP/2" in journal
    # Past four times the limit (the SETTINGS_MAX_HEADER_LIST_SIZE the lab announces):
    # the connection ends with ENHANCE_YOUR_CALM (11).
    assert client.get("/lab/http/basic.html", [("x-huge", "a" * 70_000)]) == (None, b"11")


@pytest.mark.parametrize("frame_size", [16384, 0])
def test_a_continuation_flood_ends_the_connection(web, frame_size):
    """The 2024 CONTINUATION flood: a HEADERS frame without END_HEADERS, then CONTINUATION
    frames without end. Full frames: GOAWAY ENHANCE_YOUR_CALM once the block passes four
    times header_limit (the lab's bound); empty ones: h2's own bound of 64 frames
    (PROTOCOL_ERROR). Either way the lab closes the connection without a reset (it lingers,
    reading and dropping the rest: 32 MB of full frames is more than loopback buffers
    hold), and serves on."""
    from hyperframe.frame import ContinuationFrame, HeadersFrame

    client = H2Client(web)
    headers = HeadersFrame(1, data=client.conn.encoder.encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]))
    flood = [headers.serialize()] + [
        ContinuationFrame(1, data=b"\x00" * frame_size).serialize() for _ in range(2000)]
    received, reset = client.raw(flood)
    assert not reset
    goaway = received.find(b"\x07\x00\x00\x00\x00\x00")
    code = 11 if frame_size else 1
    assert goaway > 0 and received[goaway + 10:goaway + 14] == code.to_bytes(4, "big")
    assert status_of_h2(curl("-i", *MODES["prior-knowledge"](web, "/lab/http/basic.html")).stdout) == [200]



def test_fast_path_header_blocks_are_reused_only_while_right():
    """core: BlockCache's blocks, interleaved with other encodings, a table resize and a
    field too big for the table, always decode to their fields on the client's side; a
    block is reused (the same bytes) once the fields are all in the table."""
    from hpack import Decoder, Encoder

    from services.http.h2memo import CountedTable
    from services.http.http2 import BlockCache

    page = ((b":status", b"200"), (b"server", b"TwistedWeb"), (b"content-length", b"445"),
            (b"date", b"Wed, 02 Dec 2026 08:01:17 GMT"), (b"etag", b'"abc"'))
    later = (*page[:3], (b"date", b"Wed, 02 Dec 2026 08:01:18 GMT"), *page[4:])
    encoder, decoder = Encoder(), Decoder()
    encoder.header_table = CountedTable()  # (as h2memo.LabH2State's)
    cache = BlockCache(encoder)
    sent = []
    for step in ("page", "page", "page", "other", "page", "page", "resize", "page",
                 "later", "later", "later", "huge", "page", "page"):
        if step == "other":
            fields = ((b":status", b"404"), (b"x-other", b"1"))
            block = encoder.encode(fields)
        elif step == "resize":
            encoder.header_table_size = 256
            continue
        elif step == "huge":
            fields = ((b"x-huge", b"h" * 5000),)
            block = encoder.encode(fields)
        else:
            fields = page if step == "page" else later
            block = cache.block(fields)
        assert tuple(decoder.decode(block, raw=True)) == fields, step
        sent.append((step, block))
    pages = [block for step, block in sent if step == "page"]
    assert pages[1] == pages[2] and len(pages[2]) == len(page)  # one byte per index
    assert pages[2] != pages[0]
