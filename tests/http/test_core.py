"""Sans-IO parts of the HTTP service, without sockets: the streaming multipart parser, the
fast path's request-head parser, the autoconfig document and the dashboard's sessions."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.http import fast
from services.http.autoconfig import document
from services.http.dashboard import RECENT_EVENTS, live_sessions, recent_rows
from services.http.exercises import UploadSink, long_page
from services.http.labinfo import ServiceInfo
from services.http.multipart import MultipartError, MultipartParser, boundary_of
from services.listeners import Listener

BOUNDARY = "----protolab-boundary-1234"


def encode(parts: list[tuple[str, str | None, bytes]], boundary: str = BOUNDARY) -> bytes:
    out = b"preamble to ignore\r\n"
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue".encode()


def run(body: bytes, cuts: list[int], boundary: str = BOUNDARY) -> list[tuple[str, str | None, bytes]]:
    parser = MultipartParser(boundary)
    events = []
    start = 0
    for cut in [*sorted({c % (len(body) + 1) for c in cuts}), len(body)]:
        events += parser.feed(body[start:cut])
        start = cut
    parser.close()
    parts: list[list] = []
    for kind, value in events:
        if kind == "part":
            parts.append([value.name, value.filename, b""])
        elif kind == "data":
            parts[-1][2] += value
    return [tuple(p) for p in parts]


part_data = st.binary(max_size=300) | st.sampled_from([b"", b"\r\n", b"--", b"\r\n--",
                                                       ("\r\n--" + BOUNDARY[:-1]).encode()])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["file", "note", "x y"]),
                          st.none() | st.sampled_from(["a.txt", "über.bin", ""]), part_data),
                max_size=4),
       st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_multipart_parts_survive_any_split(parts, cuts):
    assert run(encode(parts), cuts) == parts


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=600), max_size=6))
def test_multipart_garbage_raises_only_multipart_error(data, cuts):
    try:
        run(b"--" + BOUNDARY.encode() + b"\r\n" + data, cuts)
    except MultipartError:
        pass


def test_multipart_errors_and_boundaries():
    assert boundary_of('multipart/form-data; boundary="a b"') == "a b"
    assert boundary_of("multipart/form-data; charset=x; boundary=abc") == "abc"
    assert boundary_of("application/octet-stream") is None
    with pytest.raises(MultipartError):
        run(encode([("f", "a", b"x")])[:-20], [])  # no closing delimiter
    with pytest.raises(MultipartError):
        MultipartParser("")


def test_upload_sink_hashes_file_parts_and_raw_bodies():
    body = encode([("note", None, b"hello"), ("file", "a.bin", b"\x00" * 1000)])
    sink = UploadSink(f"multipart/form-data; boundary={BOUNDARY}")
    for i in range(0, len(body), 7):
        sink.write(body[i:i + 7])
    assert sink.result() == [{"field": "file", "filename": "a.bin", "bytes": 1000,
                              "sha256": hashlib.sha256(b"\x00" * 1000).hexdigest()}]
    assert sink.fields == {"note": "hello"}
    raw = UploadSink("application/octet-stream")
    raw.write(b"abc")
    assert raw.result()[0]["sha256"] == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("size", [1500, 4608, 10000])
def test_long_page_has_the_exact_size(size):
    assert len(long_page(size)) == size


GET = b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"t\"\r\n\r\n"


def test_fast_parse_accepts_a_plain_get():
    head = fast.parse(GET, 100)
    assert (head.method, head.path, head.target) == (b"GET", b"/a", b"/a?b=c")
    assert head.getHeader(b"If-None-Match") == b'"t"' and head.keep_alive()


@pytest.mark.parametrize("data", [
    GET[:-2],  # incomplete
    GET + GET,  # pipelined: the ordinary path keeps order
    b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nAuthorization: Basic eDp5\r\n\r\n",
    b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET http://x/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET  / HTTP/1.1\r\n\r\n",
])
def test_fast_parse_declines_what_it_does_not_handle(data):
    assert fast.parse(data, 100) is None


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_fast_parse_never_raises(data):
    head = fast.parse(data, 100)
    assert head is None or head.method in (b"GET", b"HEAD")


def info(name: str, listeners: list[tuple[str, int, str]]) -> ServiceInfo:
    from services import config, registry

    # the roles and preferences the package gives its listeners of these names
    real = {item.name: item for item in registry.listeners(config.default(), name)}
    return ServiceInfo(name=name, summary="", enabled=True, running=True,
                       host="mail.lab.test", aliases=[], address="127.0.0.1", address6="::1",
                       listeners=[Listener(name, n, p + 3000, tls=t, role=real[n].role,
                                           preference=real[n].preference)
                                  for n, p, t in listeners])


def test_autoconfig_lists_tls_first_and_submission_not_relay():
    xml = document("lab.test", [
        info("imap", [("imap", 143, "starttls"), ("imaps", 993, "implicit")]),
        info("smtp", [("smtp", 25, "starttls"), ("submission", 587, "starttls"),
                      ("smtps", 465, "implicit")]),
    ])
    provider = ET.fromstring(xml).find("emailProvider")
    incoming = [(s.findtext("port"), s.findtext("socketType"))
                for s in provider.iter("incomingServer")]
    outgoing = [(s.findtext("port"), s.findtext("socketType"))
                for s in provider.iter("outgoingServer")]
    assert incoming == [("3993", "SSL"), ("3143", "STARTTLS")]
    assert outgoing == [("3465", "SSL"), ("3587", "STARTTLS")]
    assert provider.find("incomingServer").findtext("username") == "%EMAILLOCALPART%"
    assert not list(ET.fromstring(document("lab.test", [])).iter("incomingServer"))


def test_live_sessions_are_opened_and_not_closed():
    def event(session, kind, ts, user=""):
        return {"session": session, "kind": kind, "ts": ts, "service": "http",
                "peer": "p", "user": user, "text": kind}

    events = [event("a", "open", 1), event("b", "open", 2), event("a", "auth", 3, "alice"),
              event("b", "close", 4), event("c", "command", 5)]
    live = live_sessions(events)
    assert [(s["opened"], s["user"]) for s in live] == [(1, "alice")]


def test_a_flood_of_dns_events_is_one_row_and_the_class_stays_in_view():
    def event(service, ts, text, peer="10.0.0.5:4000"):
        return {"session": str(ts), "kind": "packet", "ts": ts, "service": service,
                "peer": peer, "user": "", "text": text}

    events = [event("smtp", 1, "MAIL FROM:<a@lab.test>")]
    events += [event("dns", 2 + n, f"udp www{n % 5}.lab.test A", f"10.0.0.{n % 4}:53")
               for n in range(500)]
    events += [event("imap", 600, "a LOGIN alice ****")]
    rows = recent_rows(events)
    assert [row[1] for row in rows] == ["imap", "dns", "smtp"]  # newest first
    assert rows[1][4] == "500 events" and "(5 different)" in rows[1][5]
    assert len(recent_rows([event("http", n, "GET /") for n in range(200)])) == RECENT_EVENTS


def test_settings_refuse_an_image_host_outside_the_zone(tmp_path):
    from services.config import ConfigError, load

    path = tmp_path / "lab.toml"
    path.write_text('[http]\nimage_host = "elsewhere"\n')
    with pytest.raises(ConfigError, match="image_host"):
        load(path)
    path.write_text('[http]\naliases = ["pics"]\nimage_host = "pics"\nupload_limit = 0\n')
    with pytest.raises(ConfigError, match="upload_limit: must be positive"):
        load(path)
