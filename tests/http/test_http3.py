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
from aioquic.quic.events import ConnectionTerminated
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
    journal = web.journal_until("http", "after-the-flood HTTP/3")  # the last to come
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


@pytest.fixture(scope="module")
def strict(tmp_path_factory):
    """A lab that asks every new QUIC client for a Retry and keeps at most 1 MB
    unacknowledged over QUIC; connections idle for 5 s end (so a client that stopped
    reading lets go of its bytes within the test)."""
    config = ('[http]\nquic_retry = "always"\nquic_buffer_limit = 1048576\n'
              'idle_timeout = 5\n')
    with running_web(tmp_path_factory, "h3strict", config) as server:
        curl(url(server, "/~alice/"))
        (server.data / "homes" / "alice" / "public_html" / "big.bin").write_bytes(
            os.urandom(BIG))
        yield server


def terminated(events) -> ConnectionTerminated:
    assert isinstance(events[-1], ConnectionTerminated), events
    return events[-1]


def test_quic_retry_always_asks_every_client(strict):
    """[http] quic_retry = "always": every new client gets a Retry, even one alone; a
    client that answers with the token (aioquic's) gets its connection and its page."""
    from tests.http.quicflood import flood

    port = strict.port("http", "h3")
    proving = flood(port, 3, follow_retry=True)
    assert proving.retries == 3 and len(proving.handshakes) == 3
    status, _, _ = h3(strict, {"path": "/lab/http/basic.html?after-a-retry"})[0]
    assert status == 200


def test_quic_retry_modes():
    """core: when a client without a token is asked for a Retry."""
    from services.http.http3 import HALF_OPEN_PER_HOST, RETRY_ABOVE, must_retry

    assert must_retry("always", 0, 0) and not must_retry("never", 10_000, 10_000)
    assert not must_retry("pressure", RETRY_ABOVE - 1, HALF_OPEN_PER_HOST // 2 - 1)
    assert must_retry("pressure", RETRY_ABOVE, 0)
    assert must_retry("pressure", 0, HALF_OPEN_PER_HOST // 2)


def test_quic_settings_are_checked():
    from services.config import Invalid
    from services.http import Settings

    for bad in ({"quic_retry": "sometimes"}, {"quic_buffer_limit": 0}):
        with pytest.raises(Invalid):
            Settings(**bad).validate()


def test_an_invalid_token_is_answered_invalid_token(web):
    """A token the lab did not make (or made by an earlier run, or expired: aioquic's
    tokens live 30 s) is not taken for no token: RFC 9000 8.1.2, CONNECTION_CLOSE with
    INVALID_TOKEN, and no connection kept. The next client without one gets in."""
    from aioquic.quic.packet import QuicErrorCode

    from tests.http.h3client import session

    ca = web.data / "tls" / "ca.crt"
    closed = terminated(session(web.port("http", "h3"), ca, token=os.urandom(60)))
    assert closed.error_code == QuicErrorCode.INVALID_TOKEN, closed
    assert "INVALID_TOKEN" in web.journal_until("http", "INVALID_TOKEN")
    status, _, _ = h3(web, {"path": "/lab/http/basic.html"})[0]
    assert status == 200


def test_quic_buffers_have_one_limit_for_all_connections(strict):
    """A client that asks for 3 MB and never acknowledges: once [http]
    quic_buffer_limit (1 MB here) waits unacknowledged, the producer pauses and a new
    client is refused (CONNECTION_REFUSED); when the silent connection ends (its idle
    timeout), the bytes are let go and new clients get in again."""
    from aioquic.quic.packet import QuicErrorCode

    from tests.http.h3client import session

    port, ca = strict.port("http", "h3"), strict.data / "tls" / "ca.crt"

    def ask(quic, h3) -> None:
        stream = quic.get_next_available_stream_id()
        h3.send_headers(stream, [(b":method", b"GET"), (b":scheme", b"https"),
                                 (b":authority", b"localhost"), (b":path", b"/~alice/big.bin")],
                        end_stream=True)

    session(port, ca, act=ask)  # and it stops reading
    assert "QUIC buffers full" in strict.journal_until("http", "QUIC buffers full")
    closed = terminated(session(port, ca))
    assert closed.error_code == QuicErrorCode.CONNECTION_REFUSED, closed
    journal = strict.journal_until("http", "under half the limit again", timeout=30)
    assert "under half the limit again" in journal
    status, _, _ = h3(strict, {"path": "/lab/http/basic.html?after-the-full-buffers"})[0]
    assert status == 200


def test_a_qpack_bomb_is_refused_before_it_is_decoded(web):
    """One 4 KB dynamic-table entry and a 2 KB field section naming it 2000 times would
    decode to 8 MB: the lab counts the section's field lines first (more than 4 x
    max_headers) and ends the connection with H3_EXCESSIVE_LOAD. Another connection is
    served."""
    from aioquic.buffer import encode_uint_var

    from tests.http.h3client import session

    def bomb(quic, h3) -> None:
        value = b"v" * 4000
        # Encoder stream (RFC 9204 4.3): Set Dynamic Table Capacity 4096, then Insert
        # With Literal Name "x-big" and the 4000-byte value.
        insert = (qpack_int(4096, 5, 0x20) + qpack_int(5, 5, 0x40) + b"x-big"
                  + qpack_int(len(value), 7, 0x00) + value)
        quic.send_stream_data(h3._local_encoder_stream_id, insert)
        # Field section: Required Insert Count 1 (encoded 2, RFC 9204 4.5.1.1), Base 1,
        # then 2000 indexed field lines naming dynamic entry 0.
        section = b"\x02\x00" + b"\x80" * 2000
        stream = quic.get_next_available_stream_id()
        quic.send_stream_data(stream, encode_uint_var(0x1) + encode_uint_var(len(section))
                              + section, end_stream=True)

    ca = web.data / "tls" / "ca.crt"
    closed = terminated(session(web.port("http", "h3"), ca, act=bomb, read_on=True))
    assert closed.error_code == 0x107, closed  # H3_EXCESSIVE_LOAD
    status, _, _ = h3(web, {"path": "/lab/http/basic.html"})[0]
    assert status == 200


def qpack_int(value: int, bits: int, pattern: int) -> bytes:
    """An integer with a `bits`-bit prefix (RFC 7541 5.1), `pattern` in the first byte's
    other bits."""
    from hpack.hpack import encode_integer

    encoded = encode_integer(value, bits)
    encoded[0] |= pattern
    return bytes(encoded)


def test_field_lines_counts_what_qpack_encodes():
    """core: field_lines() agrees with ls-qpack's encoder (static, dynamic, post-base
    and literal representations, Huffman or not) and never raises on junk."""
    import random

    import pylsqpack

    from services.http.http3 import field_lines

    encoder = pylsqpack.Encoder()
    encoder.apply_settings(max_table_capacity=4096, blocked_streams=16)
    rng = random.Random(19)
    for stream in range(0, 400, 4):
        headers = [(b":method", b"GET"), (b":path", b"/%d" % stream),
                   *((b"x-%d" % rng.randint(0, 20), rng.randbytes(rng.randint(0, 300)).hex()
                      .encode()) for _ in range(rng.randint(0, 60)))]
        _, section = encoder.encode(stream, headers)
        assert field_lines(section) == len(headers)
    for _ in range(5000):
        field_lines(rng.randbytes(rng.randint(0, 40)))


def test_tls_faults_act_on_the_quic_handshake(web):
    """services/tls.py's faults for one address: its QUIC handshake gets the expired,
    wrong-name or unknown-CA certificate (aioquic's client refuses it with a TLS alert,
    as curl does over TCP); another address verifies; journaled; cleared, it is whole."""
    from aioquic.quic.events import HandshakeCompleted

    from tests.http.h3client import session
    from tests.lab.test_faults import settled

    port, ca = web.port("http", "h3"), web.data / "tls" / "ca.crt"
    for kind in ("tls.expired", "tls.wrong-name", "tls.unknown-ca"):
        on = web.cli("fault", "add", kind, "--target", "127.0.0.2")
        assert on.returncode == 0, on.stderr
        number = on.stdout.split()[1]
        try:
            events = settled(lambda: session(port, ca, source="127.0.0.2"),
                             lambda e: isinstance(e[-1], ConnectionTerminated))
            closed = terminated(events)
            assert closed.error_code & ~0xFF == 0x100, closed  # CRYPTO_ERROR: a TLS alert
            assert isinstance(session(port, ca)[-1], HandshakeCompleted)
            journal = web.journal_until("http", f"fault {kind} {number}")
            assert f"fault {kind} {number}" in journal
        finally:
            assert web.cli("fault", "clear").returncode == 0
        again = settled(lambda: session(port, ca, source="127.0.0.2"),
                        lambda e: isinstance(e[-1], HandshakeCompleted))
        assert isinstance(again[-1], HandshakeCompleted), again
