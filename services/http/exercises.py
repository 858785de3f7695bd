"""The Wireshark exercise pages under /lab/http/ (our own content, made at start)."""

from __future__ import annotations

import hashlib
import html
import struct
import time
import urllib.parse
import zlib
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.web.server import NOT_DONE_YET

from .auth import challenge, login
from .multipart import MultipartError, MultipartParser, boundary_of
from .responses import HTML, TEXT, Body, error_page, redirect, send
from .style import html_page

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

BASE = "/lab/http/"
FORM_LIMIT = 64 * 1024  # the form echo shows at most this much of a body
STARTED = time.time()


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A small PNG: a diagonal gradient of one colour (made here, no image files shipped)."""
    rows = b"".join(
        b"\x00" + b"".join(bytes(min(255, c * (x + y) // (width + height) + 40) for c in colour)
                           for x in range(width))
        for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b""))


def _page(title: str, body: str) -> bytes:
    return html_page(title, f'<h1>{title}</h1>\n{body}\n'
                     '<p><a href="/">back to the lab portal</a></p>').encode()


def basic_page() -> bytes:
    return _page("A small page", (
        "<p>This page is small enough to travel in one TCP segment. Look at the response "
        "headers: <code>Last-Modified</code> and <code>ETag</code>. Reload the page and the "
        "browser asks again with <code>If-Modified-Since</code> and "
        "<code>If-None-Match</code>; the server answers <code>304 Not Modified</code> with "
        "no body at all.</p>"))


def long_page(size: int) -> bytes:
    """A page of exactly `size` bytes (when size allows the frame), spread over segments."""
    head = _page("A long page", "<p>This page is longer than one TCP segment: find "
                 "the segments Wireshark reassembled into this one response.</p>\n<pre>\nPAD</pre>")
    filler_size = max(0, size - (len(head) - 3))
    line = ("The quick network packet crossed the lazy loopback interface. ")
    lines, total, number = [], 0, 1
    while total < filler_size:
        text = f"{number:04d} {line}\n"
        lines.append(text)
        total += len(text)
        number += 1
    filler = "".join(lines)[:filler_size]
    return head.replace(b"PAD", filler.encode())


def embedded_page(image_host: str) -> bytes:
    return _page("A page with embedded images", (
        "<p>The browser fetches the page, then each image with a request of its own: one "
        f"from this host, one from <code>{html.escape(image_host)}</code> &mdash; a second "
        "DNS lookup and a second TCP connection.</p>\n"
        '<p><img src="/lab/http/img/local.png" alt="an image from this host" width="96" '
        'height="96">\n'
        f'<img src="//{image_host}/lab/http/img/remote.png" alt="an image from {image_host}" '
        'width="96" height="96"></p>'))


def text_page() -> bytes:
    """A page of repetitive text: it shrinks to a few percent of its size when compressed."""
    verse = ("<p>Every request says what codings it reads in <code>Accept-Encoding</code>; the "
             "answer says which one it used in <code>Content-Encoding</code>.</p>\n")
    return _page("A page of text", verse * 200)


def compression_page() -> bytes:
    return _page("Compressed and plain", (
        "<p>The two frames below show the same page of text. The browser asks for both with "
        "<code>Accept-Encoding: gzip, deflate, br, zstd</code>. The left one, "
        '<a href="/lab/http/text.html">text.html</a>, is sent compressed: find '
        "<code>Content-Encoding</code>, <code>Vary: Accept-Encoding</code> and an "
        "<code>ETag</code> ending in the coding's name, and compare the "
        "<code>Content-Length</code> with the right one, "
        '<a href="/lab/http/text-plain.html">text-plain.html</a>, which this server always '
        "sends as it is. Wireshark shows the compressed body decoded "
        '("Content-encoded entity body").</p>\n'
        '<p><iframe src="/lab/http/text.html" width="45%" height="300"></iframe>\n'
        '<iframe src="/lab/http/text-plain.html" width="45%" height="300"></iframe></p>\n'
        "<p>With curl: <code>curl -sv --compressed http://HOST/lab/http/text.html</code>, "
        "or <code>-H 'Accept-Encoding: gzip'</code> to see the raw compressed bytes.</p>"))


def protocols_page() -> bytes:
    return _page("HTTP/1.1, HTTP/2 and HTTP/3 side by side", (
        "<p>This server answers the same pages in three versions of HTTP. Capture all three "
        "with the lab's key log (<code>[tls] keylog</code>) set in Wireshark's TLS "
        "preferences, then fetch this page each way:</p>\n"
        "<table><tr><th></th><th>HTTP/1.1</th><th>HTTP/2</th><th>HTTP/3</th></tr>\n"
        "<tr><td>transport</td><td>TCP 80, or TLS on TCP 443</td><td>TLS on TCP 443 (ALPN "
        "<code>h2</code>), or cleartext h2c on 80</td><td>QUIC on UDP 443 (TLS 1.3 inside "
        "QUIC)</td></tr>\n"
        "<tr><td>how a client finds it</td><td>the default</td><td>ALPN in the TLS "
        "ClientHello; on 80 the preface <code>PRI * HTTP/2.0</code> or "
        "<code>Upgrade: h2c</code></td><td>the <code>Alt-Svc: h3=\":443\"</code> header "
        "of a TCP answer</td></tr>\n"
        "<tr><td>the request line</td><td>text: <code>GET /path HTTP/1.1</code></td><td>a "
        "HEADERS frame: <code>:method</code>, <code>:path</code>, HPACK-compressed</td>"
        "<td>a HEADERS frame on a QUIC stream, QPACK-compressed</td></tr>\n"
        "<tr><td>several requests at once</td><td>one per connection at a time (or "
        "several connections)</td><td>streams on one connection; one lost TCP segment "
        "holds them all</td><td>streams on one connection; a lost packet holds only its "
        "stream</td></tr>\n"
        "<tr><td>the end of a body</td><td><code>Content-Length</code> or "
        "<code>chunked</code></td><td>END_STREAM flag</td><td>the stream's FIN</td></tr>\n"
        "</table>\n"
        "<p>Try <code>curl --http1.1 -v</code>, <code>curl --http2 -v</code> and "
        "<code>curl --http2-prior-knowledge http://HOST/</code>; a browser picks HTTP/2 by "
        "itself and HTTP/3 once it has seen <code>Alt-Svc</code> (Chromium: "
        "<code>--origin-to-force-quic-on=HOST:443</code>). In Wireshark, filter on "
        "<code>http</code>, <code>http2</code> and <code>quic</code>; the journal shows "
        "the version on each request line.</p>"))


CHUNKS = 5
clock: Any = reactor  # (mypy cannot type the reactor's zope interface methods)
CHUNK_INTERVAL = 0.2  # seconds between chunks: each travels in a segment of its own


def chunked_line(number: int) -> bytes:
    return (f"chunk {number + 1} of {CHUNKS}: written {CHUNK_INTERVAL * number:.1f} s after the "
            "headers, so the server could not know the length up front\n").encode()


def chunked(request: Any) -> Any:
    """An answer of unknown length: HTTP/1.1 frames it with Transfer-Encoding: chunked
    (HTTP/1.0 ends it with the close, HTTP/2 with an END_STREAM flag)."""
    if request.method not in (b"GET", b"HEAD"):
        return error_page(request, 405, "GET only.", {b"Allow": b"GET, HEAD"})
    request.setHeader(b"Content-Type", TEXT)
    request.setHeader(b"Cache-Control", b"no-store")
    if request.method == b"HEAD":
        if request.clientproto == b"HTTP/1.1":  # what the GET would say (Twisted adds it then)
            request.setHeader(b"Transfer-Encoding", b"chunked")
        return b""
    pending: list[Any] = []

    def step(number: int) -> None:
        pending.clear()
        request.write(chunked_line(number))
        if number + 1 < CHUNKS:
            pending.append(clock.callLater(CHUNK_INTERVAL, step, number + 1))
        else:
            request.finish()

    def gone(_: Any) -> None:
        for call in pending:
            call.cancel()

    request.notifyFinish().addErrback(gone)
    step(0)
    return NOT_DONE_YET


class UploadSink:
    """Takes an upload as it arrives: multipart (each file part hashed on its own) or a raw
    body (hashed whole). Nothing is kept but counts and digests."""

    def __init__(self, content_type: str) -> None:
        self.files: list[dict[str, Any]] = []
        self.fields: dict[str, str] = {}
        self.error = ""
        boundary = boundary_of(content_type)
        try:
            self.parser = MultipartParser(boundary) if boundary else None
        except MultipartError as error:  # answered 400 once the body is read (result())
            self.parser, self.error = None, str(error)
        self._hash = hashlib.sha256()
        self._size = 0
        self._part: Any = None
        self._value = b""

    def write(self, data: bytes) -> None:
        if self.error:
            return
        if self.parser is None:
            self._hash.update(data)
            self._size += len(data)
            return
        try:
            events = self.parser.feed(data)
        except MultipartError as error:
            self.error = str(error)
            return
        for kind, value in events:
            if kind == "part":
                self._part, self._hash, self._size, self._value = value, hashlib.sha256(), 0, b""
            elif kind == "data":
                assert isinstance(value, bytes)  # the parser's "data" events carry bytes
                self._hash.update(value)
                self._size += len(value)
                if self._part.filename is None and len(self._value) < 1024:
                    self._value += value[:1024]
            elif kind == "end":
                if self._part.filename is not None:
                    self.files.append({"field": self._part.name, "filename": self._part.filename,
                                       "bytes": self._size, "sha256": self._hash.hexdigest()})
                else:
                    self.fields[self._part.name] = self._value[:1024].decode("utf-8", "replace")

    def result(self) -> list[dict[str, Any]]:
        """The uploaded files (a raw body is one file without a name); raises MultipartError."""
        if self.error:
            raise MultipartError(self.error)
        if self.parser is None:
            return [{"field": "", "filename": "", "bytes": self._size,
                     "sha256": self._hash.hexdigest()}]
        self.parser.close()
        return self.files


UPLOAD_FORM = _page("Upload a file", (
    '<form method="post" enctype="multipart/form-data" action="/lab/http/upload">\n'
    '<p><input type="file" name="file"> <input type="submit" value="Upload"></p>\n</form>\n'
    "<p>Or send a raw body: <code>curl --data-binary @FILE "
    "http://HOST/lab/http/upload</code>. The answer gives the size and SHA-256 of what "
    "arrived; compare with <code>sha256sum FILE</code>. Uploads over LIMIT bytes are "
    "refused with 413.</p>"))

FORM = _page("Log in", (
    '<form method="post" action="/lab/http/form">\n'
    '<p><label>User <input name="user" autocomplete="username"></label></p>\n'
    '<p><label>Password <input name="password" type="password" '
    'autocomplete="current-password"></label></p>\n'
    '<p><input type="submit" value="Log in"></p>\n</form>\n'
    "<p>This form is sent over plain HTTP as <code>application/x-www-form-urlencoded</code>: "
    "find the password in your capture.</p>"))


def register(router: Router, lab: Lab) -> None:
    settings = lab.settings("http")
    pages = {
        "basic.html": Body(basic_page(), HTML, STARTED),
        "long.html": Body(long_page(settings.long_page_size), HTML, STARTED),
        "img/local.png": Body(png(96, 96, (40, 120, 220)), b"image/png", STARTED),
        "img/remote.png": Body(png(96, 96, (220, 90, 40)), b"image/png", STARTED),
        "compression.html": Body(compression_page(), HTML, STARTED),
        "text.html": Body(text_page(), HTML, STARTED),
        "text-plain.html": Body(text_page(), HTML, STARTED, compress=False),
        "protocols.html": Body(protocols_page(), HTML, STARTED),
    }
    for name, body in pages.items():
        router.body(BASE + name, body)
    image_host = lab.config.fqdn(settings.image_host)

    def embedded(request: Any) -> bytes:
        port = request.getHost().port
        default = 443 if request.isSecure() else 80
        host = image_host if port == default else f"{image_host}:{port}"
        return Body(embedded_page(host), HTML, STARTED).serve(request)

    router.page(BASE + "embedded.html", embedded)
    router.page(BASE + "chunked", chunked)
    router.page(BASE.rstrip("/"), lambda request: redirect(request, BASE))
    router.page(BASE, lambda request: redirect(request, "/"))

    def protected(request: Any) -> bytes:
        if request.path == b"/lab/http/protected":
            return redirect(request, "/lab/http/protected/")
        user = login(lab, request)
        if user is None:
            return challenge(request, "protolab lab users")
        if request.path != b"/lab/http/protected/":
            return error_page(request, 404, "Only the index page is here.")
        return send(request, _page("Protected area", (
            f"<p>Hello, {html.escape(user)}. Your browser sent your name and password in the "
            "<code>Authorization</code> header, in Base64: not encrypted. Over HTTPS the "
            "same header travels inside TLS.</p>")))

    router.tree("/lab/http/protected", protected)

    def form(request: Any) -> bytes:
        if request.method == b"POST":
            data = request.content.read(FORM_LIMIT + 1)
            if len(data) > FORM_LIMIT:
                return error_page(request, 413, f"The form echo shows at most {FORM_LIMIT} bytes.")
            fields = urllib.parse.parse_qsl(data.decode("utf-8", "replace"),
                                            keep_blank_values=True)
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
                           for k, v in fields)
            return send(request, _page("What the server received", (
                "<p>These fields arrived in the request body, readable by anyone on the "
                f"path:</p>\n<table border=\"1\"><tr><th>field</th><th>value</th></tr>{rows}"
                f"</table>\n<pre>{html.escape(data.decode('utf-8', 'replace'))}</pre>")))
        if request.method in (b"GET", b"HEAD"):
            return send(request, FORM)
        return error_page(request, 405, "GET or POST only.", {b"Allow": b"GET, HEAD, POST"})

    router.page(BASE + "form", form)

    upload_form = UPLOAD_FORM.replace(b"LIMIT", str(settings.upload_limit).encode())

    def upload(request: Any) -> bytes:
        if request.method in (b"GET", b"HEAD"):
            return send(request, upload_form)
        if request.method != b"POST":
            return error_page(request, 405, "GET or POST only.", {b"Allow": b"GET, HEAD, POST"})
        try:
            files = request.sink.result()
        except MultipartError as error:
            return send(request, f"bad multipart body: {error}\n".encode(), TEXT, 400)
        request.channel.session.event("upload", "; ".join(
            f"{f['filename'] or '(raw body)'} {f['bytes']} bytes sha256={f['sha256']}"
            for f in files))
        lines = [f"file: {f['filename']}\nbytes: {f['bytes']}\nsha256: {f['sha256']}\n"
                 if f["filename"] else f"bytes: {f['bytes']}\nsha256: {f['sha256']}\n"
                 for f in files]
        return send(request, ("\n".join(lines) or "no file in the form\n").encode(), TEXT)

    router.page(BASE + "upload", upload)

    def upload_sink(method: bytes, path: bytes, request: Any) -> Any:
        if method != b"POST" or path.split(b"?")[0] != b"/lab/http/upload":
            return None
        ctype = request.requestHeaders.getRawHeaders(b"Content-Type", [b""])[0]
        return UploadSink(ctype.decode("latin-1"))

    router.body_sink("/lab/http/upload", upload_sink)
