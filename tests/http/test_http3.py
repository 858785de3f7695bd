"""HTTP/3 over QUIC on UDP 443 with aioquic's client (tests/http/h3client.py) and headless
Chromium forced onto QUIC: the same site (ranges, codings, big files under flow control,
uploads and their limit), the same journal; Alt-Svc on every TCP answer; tshark decrypts
the QUIC session from the lab's key log."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.http.h3client import fetch
from tests.http.test_ranges import headers_of
from tests.http.test_server import curl, running_web, url

UPLOAD_LIMIT = 200_000
BIG = 3 * 1024 * 1024 + 11


@pytest.fixture(scope="module")
def keylog(tmp_path_factory):
    return tmp_path_factory.mktemp("h3keys") / "keys.log"


@pytest.fixture(scope="module")
def web(tmp_path_factory, keylog):
    config = f'[tls]\nkeylog = "{keylog}"\n[http]\nupload_limit = {UPLOAD_LIMIT}\n'
    with running_web(tmp_path_factory, "h3", config) as server:
        curl(url(server, "/~alice/"))
        (server.data / "homes" / "alice" / "public_html" / "big.bin").write_bytes(
            os.urandom(BIG))
        yield server


def h3(web, *requests: dict, keylog=None):
    return fetch(web.port("http", "h3"), web.data / "tls" / "ca.crt", list(requests), keylog)


def test_the_same_pages_over_http3(web):
    paths = ["/lab/http/basic.html", "/lab/http/long.html", "/ca.crt", "/lab/http/img/local.png",
             "/~alice/big.bin"]
    answers = h3(web, *({"path": p} for p in paths), {"path": "/nothing"})
    for path, (status, head, body) in zip(paths, answers[:-1], strict=True):
        assert status == 200, path
        assert body == curl(url(web, path)).stdout, path
        assert int(head["content-length"]) == len(body)
    assert answers[-1][0] == 404


def test_ranges_and_codings_over_http3(web):
    whole = curl(url(web, "/~alice/big.bin")).stdout
    (status, head, body), (p_status, p_head, _) = h3(
        web, {"path": "/~alice/big.bin", "headers": {"range": "bytes=100-199"}},
        {"path": "/lab/http/text.html", "headers": {"accept-encoding": "gzip"}})
    assert status == 206 and body == whole[100:200]
    assert head["content-range"] == f"bytes 100-199/{len(whole)}"
    assert p_status == 200 and p_head["content-encoding"] == "gzip"
    assert p_head["etag"].endswith('-gzip"') and p_head["vary"] == "Accept-Encoding"


def test_uploads_and_their_limit_over_http3(web):
    small = os.urandom(50_000)
    (status, _, body), (big_status, _, big_body), (after, _, _) = h3(
        web, {"path": "/lab/http/upload", "method": "POST", "body": small},
        {"path": "/lab/http/upload", "method": "POST", "body": os.urandom(UPLOAD_LIMIT + 1)},
        {"path": "/lab/http/basic.html"})
    assert status == 200 and hashlib.sha256(small).hexdigest().encode() in body
    assert big_status == 413, big_body
    assert after == 200  # the connection outlives a refused stream


def test_alt_svc_on_tcp_answers_and_the_journal(web):
    advert = f'h3=":{web.port("http", "h3")}"; ma=3600'
    for args in (["-I", url(web, "/lab/http/basic.html")],  # the fast path
                 ["-I", url(web, "/lab/http/embedded.html")],  # twisted.web's
                 ["-I", "--cacert", str(web.data / "tls" / "ca.crt"),
                  url(web, "/lab/http/basic.html", tls=True)]):  # HTTP/2
        assert headers_of(curl(*args).stdout)["alt-svc"] == advert
    h3(web, {"path": "/lab/http/basic.html?journal-h3"})
    journal = web.journal_until("http", "journal-h3 HTTP/3")
    assert "C: GET /lab/http/basic.html?journal-h3 HTTP/3" in journal
    assert "event: protocol h3" in journal


def test_tshark_decrypts_quic(web, keylog, capture):
    port = web.port("http", "h3")
    cap = capture(f"udp port {port}")
    h3(web, {"path": "/lab/http/long.html?tshark"})
    decode = (f"udp.port=={port},quic",)
    assert cap.read("quic", keylog=keylog, decode_as=decode)
    # Decrypted: the handshake's TLS messages and the request's STREAM frames are visible.
    assert cap.read("tls.handshake.type == 1", keylog=keylog, decode_as=decode)
    streams = cap.read("quic.frame_type == 0x0b || quic.frame_type == 0x0a "
                       "|| quic.frame_type == 0x0f || quic.frame_type == 0x0e",
                       keylog=keylog, decode_as=decode)
    assert streams
    assert not cap.problems(keylog=keylog, decode_as=decode)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (tests/run "
                    "installs it)")
def test_headless_chromium_loads_the_portal_over_quic(web, tmp_path):
    port = web.port("http", "h3")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}",
         # Chromium's QUIC ignores --ignore-certificate-errors; it takes the server key's
         # SPKI hash. localhost would be ::1 first, and the lab listens on IPv4 here.
         f"--ignore-certificate-errors-spki-list={spki_hash(web)}",
         "--host-resolver-rules=MAP localhost 127.0.0.1",
         "--enable-quic", f"--origin-to-force-quic-on=localhost:{port}", "--dump-dom",
         f"https://localhost:{port}/?chromium-quic"],
        capture_output=True, text=True, timeout=120)
    assert "protolab" in result.stdout, result.stderr[-2000:]
    journal = web.journal_until("http", "chromium-quic HTTP/3")
    assert "C: GET /?chromium-quic HTTP/3" in journal


def spki_hash(web) -> str:
    cert = x509.load_pem_x509_certificate((web.data / "tls" / "server.crt").read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_garbage_datagrams_leave_http3_serving(web):
    """Random datagrams, truncated and corrupted Initials: nothing answered that should
    not be, no traceback (the module's fixture checks stderr), and the port still serves."""
    import random
    import socket

    rng = random.Random(19)
    port = web.port("http", "h3")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for size in (0, 1, 5, 20, 1199, 1200, 1350):
            for first in (0x00, 0x40, 0xC0, 0xC3, 0xFF):
                packet = bytes([first]) + rng.randbytes(max(0, size - 1))
                s.sendto(packet[:size], ("127.0.0.1", port))
        # A long-header Initial of QUIC v1 with random contents: a connection is made for
        # it, the packet fails to decrypt and is dropped.
        for _ in range(50):
            cid = rng.randbytes(8)
            packet = bytes([0xC0]) + b"\x00\x00\x00\x01" + bytes([8]) + cid + bytes([0]) + \
                b"\x00" + b"\x44\xd0" + rng.randbytes(1250)
            s.sendto(packet, ("127.0.0.1", port))
    status, _, _ = h3(web, {"path": "/lab/http/basic.html"})[0]
    assert status == 200


def test_an_initial_flood_is_bounded_and_a_real_client_still_gets_in(web):
    """Real Initials from clients that never finish: the lab keeps a bounded number of
    half-open connections per address (http3.HALF_OPEN_PER_HOST), then asks for a Retry;
    clients that prove their address and go quiet evict the oldest. A real client (aioquic's,
    which follows the Retry) still gets its page."""
    from services.http.http3 import HALF_OPEN_PER_HOST
    from tests.http.quicflood import flood

    port = web.port("http", "h3")
    spoofed = flood(port, 300)
    assert len(spoofed.handshakes) <= HALF_OPEN_PER_HOST
    assert spoofed.retries >= 300 - HALF_OPEN_PER_HOST
    quiet = flood(port, 100, follow_retry=True)
    assert quiet.retries == 100  # under pressure: every new client is asked to prove itself
    assert len(quiet.handshakes) == 100  # ... and then gets its connection, evicting
    status, _, _ = h3(web, {"path": "/lab/http/basic.html?after-the-flood"})[0]
    assert status == 200
    journal = web.journal_until("http", "evicted: too many handshakes")
    assert journal.count("evicted: too many handshakes") >= 100 - HALF_OPEN_PER_HOST
    assert "GET /lab/http/basic.html?after-the-flood HTTP/3" in journal


def test_header_sections_over_the_limits_are_431_over_http3(web):
    """A HEADERS frame over [http] header_limit (16384 by default) is refused from its
    first bytes, before aioquic would buffer it; a section under it that decodes to more
    than max_headers fields too; the connection serves on."""
    (big, _, body), (many, _, _), (after, _, _) = h3(
        web, {"path": "/lab/http/basic.html", "headers": {"x-big": "a" * 40_000}},
        {"path": "/lab/http/basic.html", "headers": {f"x-{i}": "v" for i in range(150)}},
        {"path": "/lab/http/basic.html"})
    assert big == 431 and b"header section over 16384 bytes" in body
    assert many == 431
    assert after == 200


def test_frame_sizes_walks_frames_in_any_split():
    """core: FrameSizes finds a long HEADERS (or unknown) frame from its header, whatever
    the split of the stream's bytes; DATA frames of any length pass; random bytes never
    raise."""
    import random

    from services.http.http3 import FrameSizes

    def frame(kind: int, length: int) -> bytes:  # 1-byte type, 4-byte varint length
        return bytes([kind]) + (0x80000000 | length).to_bytes(4, "big") + b"x" * length

    ok = frame(0x1, 100) + frame(0x0, 50_000) + frame(0x21, 10) + frame(0x1, 1000)
    rng = random.Random(19)
    for bad, stream in ((False, ok), (True, ok + frame(0x1, 1001)),
                        (True, frame(0x0, 10) + frame(0x3f, 5000))):
        for _ in range(20):
            frames, at, found = FrameSizes(1000), 0, False
            while at < len(stream):
                step = rng.randint(1, 7000)
                found = frames.feed(stream[at:at + step]) or found
                at += step
            assert found == bad
    for _ in range(2000):
        FrameSizes(1000).feed(rng.randbytes(rng.randint(0, 64)))
