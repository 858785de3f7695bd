"""The fast path: a plain GET or HEAD of a page already in memory, answered without
building a twisted.web Request.

twisted.web spends most of a small request in machinery (a line callback per header, a
Request with its Headers objects, resource traversal, the producer dance). For the common
case - one whole request head in one read, no body, a page from the cache - the channel
parses the head here and writes the response in one go. Anything else (a body, an
unusual or invalid header, a page that is not in memory, pipelined requests) goes the
ordinary twisted.web way, which also gives every error its answer: the fast path never
refuses anything, it only declines.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from twisted.internet import tcp
from twisted.web import http
from twisted.web.server import version as server_version

from .responses import RANGE_NOT_SATISFIABLE, Body, assemble

TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
TARGET = re.compile(rb"/[!-~]*\Z")  # origin-form, printable ASCII, no spaces
# Headers that need the ordinary path: bodies, 100-continue, credentials, upgrades.
DECLINE = {b"content-length", b"transfer-encoding", b"expect", b"authorization", b"upgrade"}


@dataclass
class Head:
    """A parsed request head: enough for responses.not_modified() and the journal."""

    method: bytes
    target: bytes
    path: bytes
    version: bytes
    headers: dict[bytes, bytes]

    def getHeader(self, name: bytes) -> bytes | None:
        return self.headers.get(name.lower())

    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get(b"connection", b"").split(b",")}
        if self.version == b"HTTP/1.1":
            return b"close" not in tokens
        return b"keep-alive" in tokens


def parse(data: bytes, max_headers: int) -> Head | None:
    """The head of a lone GET/HEAD request in `data`, or None to decline."""
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 != len(data):
        return None  # incomplete, or more than one request (or a body) in this read
    lines = data[:end].split(b"\r\n")
    if len(lines) - 1 > max_headers:
        return None
    request_line = lines[0].split(b" ")
    if len(request_line) != 3:
        return None
    method, target, version = request_line
    if method not in (b"GET", b"HEAD") or version not in (b"HTTP/1.1", b"HTTP/1.0"):
        return None
    if not TARGET.match(target):
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not TOKEN.match(name):
            return None  # also folded lines (they start with a space)
        name = name.lower()
        if name in DECLINE or name in headers or b"\x00" in value:
            return None
        headers[name] = value.strip(b" \t")
    return Head(method, target, target.partition(b"?")[0], version, headers)


_date = (0, b"")


def http_date() -> bytes:
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, http.datetimeToString(now))
    return _date[1]


REASONS = {200: b"OK", 206: b"Partial Content", 304: b"Not Modified",
           416: RANGE_NOT_SATISFIABLE}  # as the ordinary path says them


def response(head: Head, body: Body, keep_alive: bool,
             alt_svc: bytes = b"") -> tuple[bytes, int, int]:
    """(the response bytes, status, body length) for `body`, as twisted.web would send
    them: same status line, headers and connection handling."""
    answer, data = body.answer(head)
    lines = [b"Server: " + server_version, b"Date: " + http_date()]
    if alt_svc:
        lines.append(b"Alt-Svc: " + alt_svc)
    lines += [name + b": " + value for name, value in answer.headers]
    payload = b""
    if answer.length is not None:
        lines.append(b"Content-Length: %d" % answer.length)
        if head.method != b"HEAD":
            payload = assemble(answer.pieces, data)
    if head.version == b"HTTP/1.1" and not keep_alive:
        lines.append(b"Connection: close")
    elif head.version == b"HTTP/1.0" and keep_alive:
        lines.append(b"Connection: keep-alive")
    first = head.version + b" %d " % answer.status + REASONS[answer.status]
    return b"\r\n".join([first, *lines, b"", b""]) + payload, answer.status, len(payload)


def write_now(transport: Any, data: bytes) -> None:
    """transport.write(data), sent at once when nothing waits before it on a TCP
    transport. Twisted's write only buffers and asks the reactor to watch the socket for
    writability: two epoll_ctl calls and a turn of the loop for every small answer
    (a fifth of the fast path's time, profiled with wrk). Not under TLS (started on this
    transport, its writes go through the TLS protocol). What the socket does not take
    at once is left to Twisted's write, and so is any error (it ends the connection)."""
    if isinstance(transport, tcp.Server) and not transport.TLS and transport.connected \
            and not transport.disconnecting and not transport._writeDisconnected and \
            not transport.dataBuffer and not transport._tempDataBuffer:
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)
