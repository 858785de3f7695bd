"""Serving files from disk: small ones from a cache kept fresh by stat(), big ones with
sendfile(2) on plain TCP (no copy through Python) or in large chunks under TLS.

twisted.web's static.File reads every file through a 64 KB pull producer on each request,
and Twisted's transports send at most 128 KB per reactor turn: fine for pages, slow for a
100 MB file. Here a big file bypasses the transport's buffer once the headers are out.
"""

from __future__ import annotations

import mimetypes
import os
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from twisted.internet import interfaces, reactor
from twisted.internet.tcp import Server as TCPServer
from twisted.web import http
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from .responses import Body, Piece, apply, assemble, plan, send_no_body

SMALL = 256 * 1024  # files up to this size are served from memory
CACHE_BYTES = 32 * 1024 * 1024
CHUNK = 1024 * 1024  # read size under TLS
SENDFILE_MAX = 16 * 1024 * 1024  # per sendfile call; the loop repeats until EAGAIN


def content_type(path: Path) -> bytes:
    kind, encoding = mimetypes.guess_type(path.name)
    if encoding or not kind:
        return b"application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        return f"{kind}; charset=utf-8".encode()
    return kind.encode()


class FileCache:
    """Small files by path, each checked against a fresh stat() on every request; every
    file served through it, small or big, carries `headers`."""

    def __init__(self, limit: int = CACHE_BYTES, headers: dict[bytes, bytes] | None = None) -> None:
        self.entries: OrderedDict[str, tuple[tuple[int, int, int], Body]] = OrderedDict()
        self.size = 0
        self.limit = limit
        self.headers = headers or {}

    def get(self, path: Path, st: os.stat_result) -> Body:
        key = str(path)
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        entry = self.entries.get(key)
        if entry is not None and entry[0] == stamp:
            self.entries.move_to_end(key)
            return entry[1]
        body = Body(path.read_bytes(), content_type(path), st.st_mtime, etag=etag(st),
                    headers=self.headers)
        if entry is not None:
            self.size -= len(entry[1].data)
        self.entries[key] = (stamp, body)
        self.size += len(body.data)
        while self.size > self.limit and self.entries:
            _, (_, old) = self.entries.popitem(last=False)
            self.size -= len(old.data)
        return body


def etag(st: os.stat_result) -> bytes:
    return b'"%x-%x-%x"' % (st.st_ino, st.st_size, st.st_mtime_ns)


def serve(request: Any, path: Path, st: os.stat_result, cache: FileCache) -> Any:
    """Answer GET/HEAD for a regular file: whole, or the byte ranges asked for."""
    if st.st_size <= SMALL:
        return cache.get(path, st).serve(request)
    # Big files are sent as they are (no content coding): from disk, with sendfile.
    answer = plan(request, st.st_size, content_type(path), etag(st),
                  http.datetimeToString(int(st.st_mtime)), st.st_mtime, cache.headers)
    apply(request, answer)
    if answer.status == 304:
        return send_no_body(request)
    assert answer.length is not None
    request.setHeader(b"Content-Length", b"%d" % answer.length)
    if answer.status == 416:
        return assemble(answer.pieces, b"")  # one literal piece
    if request.method == b"HEAD":
        return b""  # (an empty body leaves the Content-Length above as it is)
    request.write(b"")  # the headers
    handle = open(path, "rb")
    send_body(request, handle, answer.pieces)
    return NOT_DONE_YET


def send_body(request: Any, handle: Any, pieces: list[Piece]) -> None:
    transport = request.channel.transport
    if type(transport) is TCPServer and hasattr(os, "sendfile"):
        sender: Any = SendfileWriter(request, transport, handle, pieces)
    else:
        sender = ChunkProducer(request, handle, pieces)
    sender.start()


@implementer(interfaces.IPushProducer)
class ChunkProducer:
    """Reads the file in large chunks while the transport keeps up (TLS, other transports)."""

    def __init__(self, request: Any, handle: Any, pieces: list[Piece]) -> None:
        self.request, self.handle = request, handle
        self.pieces = deque(pieces)
        self.remaining = 0  # of the file range being sent
        self.paused = False
        self.stopped = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.stopped and (self.remaining or self.pieces):
            if not self.remaining:
                piece = self.pieces.popleft()
                if isinstance(piece, bytes):
                    self.request.write(piece)
                    continue
                self.handle.seek(piece[0])
                self.remaining = piece[1]
            data = self.handle.read(min(CHUNK, self.remaining))
            if not data:  # the file shrank under us: end the connection, not the response
                self.stopProducing()
                channel = self.request.channel  # an HTTP/2 stream has no transport: reset it
                (channel.transport or channel).abortConnection()
                return
            self.remaining -= len(data)
            self.request.write(data)  # may call pauseProducing at once
        if not self.remaining and not self.pieces and not self.stopped:
            self.stopped = True
            self.handle.close()
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.handle.close()


@implementer(interfaces.IWriteDescriptor)
class SendfileWriter:
    """Sends the rest of a response with sendfile(2) on a duplicate of the socket's
    descriptor, registered with the reactor as a writer of its own.

    The headers were written through the transport; what it has not sent yet is taken out
    of its buffer and sent first, so the bytes stay in order. Meanwhile the channel writes
    nothing (it is busy with this request) and the transport keeps reading as usual.
    Literal pieces (multipart/byteranges part headers) are written between file ranges."""

    def __init__(self, request: Any, transport: TCPServer, handle: Any,
                 pieces: list[Piece]) -> None:
        self.request, self.transport, self.handle = request, transport, handle
        self.pieces = deque(pieces)
        self.offset = 0
        self.remaining = 0  # of the file range being sent
        self.sent = 0  # body bytes, for the journal
        self.fd = -1
        # Twisted's private buffers (abstract.FileDescriptor): the unsent headers.
        self.pending = (bytes(transport.dataBuffer[transport.offset:])
                        + b"".join(transport._tempDataBuffer))
        transport.dataBuffer, transport.offset = b"", 0
        transport._tempDataBuffer, transport._tempDataLen = [], 0
        self.done = False

    def start(self) -> None:
        self.transport.stopWriting()
        self.fd = os.dup(self.transport.fileno())
        self.request.notifyFinish().addErrback(lambda _: self._end(lost=True))
        reactor.addWriter(self)

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "sendfile"

    def doWrite(self) -> None:
        try:
            while True:
                while self.pending:
                    sent = os.write(self.fd, self.pending)
                    self.pending = self.pending[sent:]
                while self.remaining:
                    sent = os.sendfile(self.fd, self.handle.fileno(), self.offset,
                                       min(self.remaining, SENDFILE_MAX))
                    if sent == 0:  # the file shrank: the promised length cannot be kept
                        raise EOFError("file shorter than its Content-Length")
                    self.offset += sent
                    self.remaining -= sent
                    self.sent += sent
                if not self.pieces:
                    break
                piece = self.pieces.popleft()
                if isinstance(piece, bytes):
                    self.pending = piece
                    self.sent += len(piece)
                else:
                    self.offset, self.remaining = piece
        except BlockingIOError:
            return None
        except (OSError, EOFError):
            self._end(lost=True)
            self.transport.abortConnection()
            return None
        self._end(lost=False)
        return None

    def connectionLost(self, reason: Any) -> None:
        self._end(lost=True)

    def _end(self, lost: bool) -> None:
        if self.done:
            return
        self.done = True
        reactor.removeWriter(self)
        os.close(self.fd)
        self.handle.close()
        self.request.sentLength += self.sent
        if not lost:
            self.request.finish()


