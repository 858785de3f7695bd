"""twisted.web's connection and request, with the limits and behaviour the lab promises.

HTTPChannel as shipped answers every bad request with a bare "400 Bad Request" (even for
oversize headers), drops a connection whose header line is too long without a word
(twisted#4892), has no request-body limit (twisted#4898, #10191), never keeps an
HTTP/1.0 connection alive (its checkPersistence: "Just use HTTP 1.1, okay?"), and spools
every body to a temporary file before the resource sees it. Here:

- malformed request lines and headers: 400 with a body, then the connection is closed;
- request line + headers over [http] header_limit, or more than max_headers lines: 431;
  a request line longer than that: 414;
- a body (Content-Length or chunked) over [http] upload_limit: 413, before it is read;
- HTTP/1.0 with "Connection: keep-alive" stays open when the response has a length;
- a resource can take the body as it arrives (BodySink), so uploads are streamed;
- lines may end in a bare LF, as `nc` sends them (RFC 9112 2.2 allows it; Twisted waits
  for a CRLF that never comes);
- a client that half-closes (`nc -N`, shutdown(SHUT_WR)) after its requests gets every
  complete one answered, then the close (services/flow.py's rule: Twisted's channel is
  not IHalfCloseableProtocol, so the FIN became connectionLost and dropped the answer
  still in the write buffer);
- message framing as RFC 9112 6.1-6.3 requires (Twisted took "chunked" followed by a
  second "Transfer-Encoding: identity" line, and answered the request smuggled behind):
  see framing_error();
- obsolete line folding (a header line starting with a space) is refused (RFC 9112 5.2
  allows either that or joining; refusing leaves no two readings of one header);
- [http] idle_timeout closes a connection that sends nothing, and bounds the time a
  request head may take from its first byte (Twisted resets its timer on every byte, so
  a head trickled a byte at a time held a connection forever); a head cut short by the
  timeout gets 408;
- every connection is a journal session; every request is a command and a reply line;
- HTTP/2 (ALPN h2, the h2c preface, Upgrade: h2c) hands the connection over to http2.py.
"""

from __future__ import annotations

import io
import tempfile
from typing import TYPE_CHECKING, Any, Protocol

from twisted.web import http, server

from ..flow import HalfClose
from ..store import is_disk_full
from . import fast, http2
from .linger import Linger

if TYPE_CHECKING:
    from ..journal import Session

STATUS_TEXT = {400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
               408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long",
               431: b"Request Header Fields Too Large", 501: b"Not Implemented",
               505: b"HTTP Version Not Supported", 507: b"Insufficient Storage"}
SPOOL_IN_MEMORY = 64 * 1024  # request bodies up to this stay in memory; larger ones go to a temp file
MAX_LENGTH_DIGITS = 18  # a Content-Length longer than this is no length (int() has limits too)


def framing_error(header: bytes, value: bytes, framed: bool,
                  version: bytes) -> tuple[int, str] | None:
    """Why a Content-Length or Transfer-Encoding header makes the request's length
    ambiguous, as (status, reason), or None when it is sound. `framed`: an earlier header
    of the two already gave the length. One length, from one header line, or 400:
    whatever a front end in another reading would take for the end of the body is where a
    smuggled request would start (RFC 9112 6.1, 6.3)."""
    if framed:
        return 400, "more than one Content-Length or Transfer-Encoding header"
    if header == b"Content-Length":
        if not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
            return 400, "Content-Length must be one decimal number"
        return None
    if version != b"HTTP/1.1":
        return 400, "Transfer-Encoding in an HTTP/1.0 request"
    codings = [coding.strip(b" \t").lower() for coding in value.split(b",")]
    if codings[-1] != b"chunked" or b"chunked" in codings[:-1]:
        return 400, "chunked must be the final transfer coding, and only once"
    if len(codings) > 1:
        return 501, "no transfer coding but chunked is implemented"
    return None


class ChunkedDecoder(http._ChunkedTransferDecoder):
    """Twisted's decoder (strict about CRLF and hex sizes), refusing a chunk size over
    the body limit at once instead of waiting for data that would be refused anyway."""

    def __init__(self, limit: int, data_callback: Any, finish_callback: Any) -> None:
        super().__init__(data_callback, finish_callback)
        self.limit = limit

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        done = super()._dataReceived_CHUNK_LENGTH()
        if done and self.length > self.limit:
            raise http._MalformedChunkedDataError("chunk size over the body limit")
        return done


class Refusal(Exception):
    """Raised by a sink factory to answer before the body is read (and close)."""

    def __init__(self, status: int, why: str, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(why)
        self.status, self.why, self.headers = status, why, headers or {}


class BodySink(Protocol):
    """Takes a request body as it arrives (see LabRequest.sink_for)."""

    def write(self, data: bytes) -> None: ...


class LabChannel(HalfClose, http.HTTPChannel):
    session: Session
    settings: Any  # services.http.Settings
    site: Any  # the LabSite (set by its buildProtocol)
    transport: Any  # TCP or TLS: the sendfile path and the half-close look at which
    _HTTPChannel__first_line: int  # HTTPChannel's private flag, as mangled (the fast path)
    delimiter = b"\n"  # and a CR before it is dropped in lineReceived

    def connectionMade(self) -> None:
        super().connectionMade()
        self.refused = False
        self.linger = Linger(self.transport)
        self.h2_unchecked = True  # until the first bytes say whether this is HTTP/2
        peer = self.transport.getPeer()
        kind = "https" if self.isSecure() else "http"
        self.session = self.site.lab.journal.open("http", f"{peer.host}:{peer.port}", kind)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.linger.cancel()
        self.session.close()

    # --- half-close ---------------------------------------------------------------------

    def answered(self) -> bool:
        """After the client's FIN: a request being answered is finished (and pipelined
        ones after it, see requestDone); an incomplete one never will be."""
        return self.refused or not self._handlingRequest

    def close_when_sent(self) -> None:
        self.loseConnection()  # HTTPChannel's: it is its own producer, and unregisters it

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)  # may answer buffered pipelined requests meanwhile
        self.close_if_done()

    # --- timeouts ----------------------------------------------------------------------

    def in_head(self) -> bool:
        """Whether part of a request head (line, headers) has arrived but not all of it."""
        return bool(self.line_mode) and (bool(self._buffer) or hasattr(self, "_command"))

    def resetTimeout(self) -> None:
        if not self.in_head():  # the timer runs from the head's first byte, not its last
            super().resetTimeout()

    def timeoutConnection(self) -> None:
        if self.in_head() and not self.refused:
            self.session.event("timeout", "request head incomplete")
            self.refuse(408, f"the request head took over {self.timeOut} s")
            return
        self.session.event("timeout", "idle")
        super().timeoutConnection()

    # --- refusing bad requests ---------------------------------------------------------

    def refuse(self, status: int, why: str, headers: dict[bytes, bytes] | None = None) -> None:
        """Answer `status` with a one-line body, close, and ignore whatever else arrives."""
        if self.refused:
            return
        self.refused = True
        self.session.command(f"{getattr(self, '_command', b'?').decode('latin-1')} "
                             f"{getattr(self, '_path', b'?').decode('latin-1')[:200]}")
        self.session.reply(f"{status} {why}")
        body = f"{status} {STATUS_TEXT[status].decode()}: {why}\n".encode()
        extra = b"".join(name + b": " + value + b"\r\n" for name, value in (headers or {}).items())
        self.transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n%s"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (status, STATUS_TEXT[status], extra, len(body), body))
        # A lingering close (linger.py): what still comes is read and dropped until the
        # client closes (or LINGER_SECONDS / LINGER_BYTES pass).
        if self.read_closed or not self.linger.possible:
            self.loseConnection()
            return
        self._networkProducer.unregisterProducer()
        self.linger.start()
        self.setTimeout(None)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(400, "malformed request line or header")

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            self.linger.drop(data)
            return
        if self.h2_unchecked:
            self.h2_unchecked = False
            if data.startswith(http2.PREFACE_LINE) or (
                    getattr(self.transport, "negotiatedProtocol", None) == b"h2"):
                http2.take_over(self, data)
                return
        # The fast path, only between requests: nothing buffered, no request in progress
        # (HTTPChannel's private state: its line buffer and first-line flag).
        if (self.line_mode and not self._buffer and not self.requests
                and self._HTTPChannel__first_line and self.persistent):
            head = fast.parse(data, self.maxHeaders)
            if head is not None:
                body = self.site.fast_body(head.path)
                if body is not None:
                    self.resetTimeout()
                    self.answer_fast(head, body)
                    return
        super().dataReceived(data)

    def answer_fast(self, head: fast.Head, body: Any) -> None:
        keep_alive = head.keep_alive()
        data, status, length = fast.response(head, body, keep_alive, self.site.alt_svc)
        self.session.command(f"{head.method.decode()} {head.target.decode()} "
                             f"{head.version.decode()}")
        fast.write_now(self.transport, data)
        self.session.reply(f"{status} {length} bytes")
        if not keep_alive:
            self.persistent = False
            self.refused = True  # whatever follows is ignored, as HTTPChannel does
            self.loseConnection()

    def lineLengthExceeded(self, line: bytes) -> None:
        if hasattr(self, "_command"):
            self.refuse(431, f"a header line is longer than {self.MAX_LENGTH} bytes")
        else:
            self.refuse(414, f"the request line is longer than {self.MAX_LENGTH} bytes")

    def lineReceived(self, line: bytes) -> None:
        if self.refused:
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        if line[:1] in (b" ", b"\t") and hasattr(self, "_command"):
            self.refuse(400, "obsolete line folding (a header line starting with a space)")
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            if hasattr(self, "_command"):
                self.refuse(431, f"request headers exceed {self.totalHeadersSize} bytes")
            else:
                self.refuse(414, f"the request line exceeds {self.totalHeadersSize} bytes")
            return
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        if self.refused:
            return False
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(431, f"more than {self.maxHeaders} header lines")
            return False
        return super().headerReceived(line)

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        if header not in (b"Content-Length", b"Transfer-Encoding"):
            return True
        error = framing_error(header, data, self._transferDecoder is not None, self._version)
        if error is not None:
            self.refuse(*error)
            self.length = None
            return False
        if header == b"Content-Length":
            return super()._maybeChooseTransferDecoder(header, data)
        self.length = None
        self._transferDecoder = ChunkedDecoder(
            self.settings.upload_limit, self.requests[-1].handleContentChunk,
            self._finishRequestBody)
        return True

    def allHeadersReceived(self) -> None:
        limit = self.settings.upload_limit
        if self.length is not None and self.length > limit:
            self.refuse(413, f"the body ({self.length} bytes) is over the limit of {limit}")
            return
        super().allHeadersReceived()

    def _send100Continue(self) -> None:
        if not self.refused:  # a sink factory may have answered already (Refusal)
            super()._send100Continue()

    def allContentReceived(self) -> None:
        if not self.refused:
            super().allContentReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self.refused:
            super().rawDataReceived(data)

    # --- persistence -------------------------------------------------------------------

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive" (Twisted: never)."""
        tokens = {t.strip().lower() for value in request.requestHeaders.getRawHeaders(
            b"Connection", []) for t in value.split(b",")}
        if version == b"HTTP/1.1":
            if b"close" in tokens:
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
                return False
            return True
        if version == b"HTTP/1.0" and b"keep-alive" in tokens:
            request.responseHeaders.setRawHeaders(b"Connection", [b"keep-alive"])
            request.keep_alive_10 = True
            return True
        return False


class LabRequest(server.Request):
    """A request whose body goes to a sink its resource chooses, and is journaled."""

    channel: LabChannel
    keep_alive_10 = False
    lab_user = ""  # who authenticated on this request (for the journal)
    body_size = 0
    sink: Any = None
    content: Any  # the spool file, or an empty BytesIO when a sink took the body

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        try:
            self.sink = channel.site.sink_for(channel._command, channel._path, self)
        except Refusal as refusal:
            channel.refuse(refusal.status, refusal.why, refusal.headers)
            self.sink = None
        if self.sink is None:
            self.sink = tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY)

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel.refused:
            return
        self.body_size += len(data)
        limit = self.channel.settings.upload_limit
        if self.body_size > limit:  # chunked bodies have no length to check up front
            self.channel.refuse(413, f"the body is over the limit of {limit} bytes")
            return
        try:
            self.sink.write(data)
        except OSError as error:  # the spool file (a temp dir on a full disk)
            if not is_disk_full(error):
                raise
            self.channel.refuse(507, "no space left to take the body")

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # Twisted measures and rewinds self.content; a streaming sink is not a file.
        self.content = self.sink if hasattr(self.sink, "seek") else io.BytesIO()
        super().requestReceived(command, path, version)

    def process(self) -> None:
        self.channel.session.command(
            f"{self.method.decode('latin-1')} {self.uri.decode('latin-1')} "
            f"{self.clientproto.decode('latin-1')}")
        if self.requestHeaders.hasHeader(b"Upgrade") and isinstance(self.channel, LabChannel):
            settings = http2.wants_h2c(self)
            if settings is not None:
                http2.upgrade(self.channel, self, settings)
                return
        super().process()

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self.channel.site.alt_svc:
            self.responseHeaders.setRawHeaders(b"Alt-Svc", [self.channel.site.alt_svc])
        if not self.startedWriting and self.keep_alive_10 and \
                not self.responseHeaders.hasHeader(b"Content-Length") and \
                self.code not in http.NO_BODY_CODES and self.method != b"HEAD":
            # HTTP/1.0 has no chunking: a body of unknown length ends with the connection.
            self.channel.persistent = False
            self.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        super().write(data)

    def processingFailed(self, reason: Any) -> Any:
        """A bug of ours: logged with its traceback (stderr), answered 500 with no details."""
        self.channel.session.event("error", reason.getErrorMessage()[:200])
        if self.startedWriting:
            self._log.failure("", failure=reason)
            self.channel.loseConnection()
            return None
        return super().processingFailed(reason)
