"""Small helpers every page uses: whole bodies with a length, errors, conditional GET."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass, field
from typing import Any

from twisted.web import http
from twisted.web.server import NOT_DONE_YET

from .style import html_page

HTML = b"text/html; charset=utf-8"
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"


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


@dataclass
class Body:
    """A body served with its validators: ETag, Last-Modified, and 304 when they match."""

    data: bytes
    ctype: bytes
    mtime: float
    etag: bytes = b""
    headers: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.etag:
            self.etag = b'"%s"' % hashlib.sha256(self.data).hexdigest()[:20].encode()
        self.last_modified = http.datetimeToString(int(self.mtime))

    def serve(self, request: Any) -> bytes:
        request.setHeader(b"ETag", self.etag)
        request.setHeader(b"Last-Modified", self.last_modified)
        for name, value in self.headers.items():
            request.setHeader(name, value)
        if not_modified(request, self.etag, self.mtime):
            return send_no_body(request)
        request.setHeader(b"Content-Type", self.ctype)
        return self.data
