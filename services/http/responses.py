"""Small helpers every page uses: whole bodies with a length, errors, conditional GET."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass, field
from typing import Any

from twisted.web import http
from twisted.web.server import NOT_DONE_YET

from . import codings, ranges
from .style import html_page

HTML = b"text/html; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
RANGE_NOT_SATISFIABLE = b"Range Not Satisfiable"  # RFC 9110's phrase (Twisted's is older)


def send(request: Any, body: bytes, ctype: bytes = HTML, status: int = 200,
         headers: dict[bytes, bytes] | None = None) -> bytes:
    """Answer with a whole body: Twisted adds Content-Length for bytes returned by render."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", ctype)
    for name, value in (headers or {}).items():
        request.setHeader(name, value)
    return body


def send_json(request: Any, value: Any, status: int = 200) -> bytes:
    return send(request, json.dumps(value, indent=1).encode() + b"\n", JSON, status)


def error_page(request: Any, status: int, message: str,
               headers: dict[bytes, bytes] | None = None) -> bytes:
    reason = http.RESPONSES.get(status, b"Error").decode()
    body = html_page(f"{status} {reason}",
                     f"<h1>{status} {reason}</h1><p>{html.escape(message)}</p>")
    return send(request, body.encode(), HTML, status, headers)


def redirect(request: Any, to: str) -> bytes:
    """301 to `to` (a path on this site), with a link for whoever reads the body."""
    request.setHeader(b"Location", to.encode())
    return error_page(request, 301, f"Moved to {to}")


def not_modified(request: Any, etag: bytes, mtime: float) -> bool:
    """Whether a conditional GET matches (RFC 9110 13.2.2: If-None-Match wins over
    If-Modified-Since)."""
    none_match = request.getHeader(b"If-None-Match")
    if none_match is not None:
        tags = [t.strip().removeprefix(b"W/") for t in none_match.split(b",")]
        return b"*" in tags or etag in tags
    since = request.getHeader(b"If-Modified-Since")
    if since is not None:
        try:
            return int(mtime) <= http.stringToDatetime(since)
        except (ValueError, IndexError):  # a malformed date is ignored (RFC 9110 13.1.3)
            return False
    return False


def send_no_body(request: Any, status: int = http.NOT_MODIFIED) -> Any:
    """204 or 304: no body and no Content-Length (render() would add "Content-Length: 0",
    which RFC 9110 forbids on 204 and which would claim a 304's page is empty)."""
    request.setResponseCode(status)
    request.write(b"")
    request.finish()
    return NOT_DONE_YET


Piece = bytes | tuple[int, int]  # literal bytes, or (offset, length) of the representation


@dataclass
class Answer:
    """What to answer a GET or HEAD of a representation: status, headers (but Server and
    Date), the body's pieces (sent for GET only) and its Content-Length (None: none)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    pieces: list[Piece]
    length: int | None


def plan(request: Any, size: int, ctype: bytes, etag: bytes, last_modified: bytes,
         mtime: float, extra: dict[bytes, bytes] | None = None, coding: bytes | None = None,
         vary: bool = False) -> Answer:
    """The answer for a `size`-byte representation, by RFC 9110's order of evaluation
    (13.2.2): If-None-Match / If-Modified-Since (304), then Range (206 or 416) as
    If-Range allows. `request` needs getHeader() and method: a twisted.web Request, or the
    fast path's parsed head."""
    headers = [(b"ETag", etag), (b"Last-Modified", last_modified), *(extra or {}).items(),
               (b"Accept-Ranges", b"bytes")]
    if vary:  # on the 304 too: a cache must know the answer depends on Accept-Encoding
        headers.append((b"Vary", b"Accept-Encoding"))
    if not_modified(request, etag, mtime):
        return Answer(304, headers, [], None)
    wanted = ranges.requested(request.getHeader(b"Range"), size)
    if wanted is not None and not ranges.if_range_holds(
            request.getHeader(b"If-Range"), etag, last_modified):
        wanted = None
    if isinstance(wanted, ranges.Unsatisfiable):
        text = b"416 Range Not Satisfiable: the representation has %d bytes\n" % size
        headers += [(b"Content-Range", b"bytes */%d" % size), (b"Content-Type", TEXT)]
        return Answer(416, headers, [text], len(text))
    if coding is not None:
        headers.append((b"Content-Encoding", coding))
    if wanted:
        framing = ranges.framing(wanted, size, ctype)
        headers.append((b"Content-Type", framing.content_type))
        if framing.content_range is not None:
            headers.append((b"Content-Range", framing.content_range))
        return Answer(206, headers, framing.pieces, framing.length)
    headers.append((b"Content-Type", ctype))
    return Answer(200, headers, [(0, size)], size)


def assemble(pieces: list[Piece], data: bytes) -> bytes:
    """The body of an answer about `data` (in memory)."""
    if len(pieces) == 1 and isinstance(pieces[0], tuple) and pieces[0] == (0, len(data)):
        return data  # the common case, without a copy
    return b"".join(piece if isinstance(piece, bytes) else data[piece[0]:piece[0] + piece[1]]
                    for piece in pieces)


def apply(request: Any, answer: Answer) -> None:
    """Status and headers of `answer` on a twisted.web request."""
    if answer.status == 416:
        request.setResponseCode(416, RANGE_NOT_SATISFIABLE)
    else:
        request.setResponseCode(answer.status)
    for name, value in answer.headers:
        request.setHeader(name, value)


@dataclass
class Body:
    """A representation in memory served with its validators (ETag, Last-Modified, 304),
    byte ranges (206, 416) and, for text, a content coding the client asks for: each coding
    a variant with its own ETag, made the first time it is asked for."""

    data: bytes
    ctype: bytes
    mtime: float
    etag: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)
    compress: bool | None = None  # None: when the media type is text-like

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = b'"%s"' % hashlib.sha256(self.data).hexdigest()[:20].encode()
        self.last_modified = http.datetimeToString(int(self.mtime))
        if self.compress is None:
            self.compress = codings.compressible(self.ctype)
        # coding -> (bytes, ETag, the coding sent: None when compressing did not help)
        self.variants: dict[bytes, tuple[bytes, bytes, bytes | None]] = {}

    def variant(self, coding: bytes | None) -> tuple[bytes, bytes, bytes | None]:
        if coding is None:
            return self.data, self.etag, None
        variant = self.variants.get(coding)
        if variant is None:
            packed = codings.COMPRESSORS[coding](self.data)
            if len(packed) < len(self.data):
                variant = (packed, self.etag[:-1] + b"-" + coding + b'"', coding)
            else:
                variant = (self.data, self.etag, None)
            self.variants[coding] = variant
        return variant

    def answer(self, request: Any) -> tuple[Answer, bytes]:
        """The answer to `request` and the bytes its pieces are cut from."""
        coding = codings.choose(request.getHeader(b"Accept-Encoding")) if self.compress else None
        data, etag, sent = self.variant(coding)
        return plan(request, len(data), self.ctype, etag, self.last_modified, self.mtime,
                    self.headers, sent, bool(self.compress)), data

    def serve(self, request: Any) -> Any:
        answer, data = self.answer(request)
        apply(request, answer)
        if answer.status == 304:
            return send_no_body(request)
        return assemble(answer.pieces, data)
