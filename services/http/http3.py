"""HTTP/3 over QUIC on UDP 443: the same site, answered by the same resources.

aioquic (a kept library) does QUIC, its TLS 1.3 and HTTP/3 framing, sans-IO: datagrams
in, datagrams and events out. Here is only the glue to the reactor - one UDP port, the
datagrams routed to their connection by connection ID (as aioquic's own asyncio server
does), timers on the reactor - and Http3Stream, which stands in for a twisted.web channel
so the site's Request objects (LabRequest) render exactly as over HTTP/1.1 and HTTP/2.
TLS secrets go to the lab's key log ([tls] keylog), so Wireshark decrypts QUIC too.

Limits, so that junk or a client that never reads costs a bounded amount:
- Initial floods (RFC 9000 8.1, 21.1.1): an Initial that does not decrypt leaves no state;
  at most HALF_OPEN_PER_HOST handshake-incomplete connections per client address and
  HALF_OPEN handshake-incomplete connections in all, the oldest evicted for a new one, each
  given HANDSHAKE_TIMEOUT to finish. [http] quic_retry says when a new client is asked to
  prove its address with a Retry (aioquic's tokens) before any state is kept, so that
  spoofed Initials cost nothing: "pressure" (the default) once RETRY_ABOVE are half-open
  (in all, or from one address), "always", or "never". Without pressure there is no
  Retry by default: it is a round trip and a packet a Wireshark class would see in every
  handshake. The lab sends no NEW_TOKEN, so every token a client brings is a Retry token:
  one that does not validate (another process's, expired after aioquic's 30 s, another
  address's) is answered with CONNECTION_CLOSE INVALID_TOKEN and no state, as RFC 9000
  8.1.2 asks (not taken for no token: the client would never get a Retry it accepts).
  At most MAX_CONNECTIONS connections at once; beyond that, or while the buffer limit
  below is reached, a new client's Initial is answered CONNECTION_REFUSED.
- Sending: a response's producer (big files) pauses once BUFFER_HIGH of its bytes, or
  CONNECTION_HIGH of the whole connection's, or [http] quic_buffer_limit of all
  connections', wait unacknowledged (aioquic keeps whatever is given to it until it is
  acknowledged); meanwhile no new request of that connection is rendered (they queue,
  headers and bodies bounded as below).
- Receiving: a HEADERS (or any non-DATA) frame longer than [http] header_limit is refused
  with 431 before aioquic's H3Connection buffers it, as is a decoded field section over
  header_limit or max_headers fields (RFC 9114 4.2.2; the limit is announced as
  SETTINGS_MAX_FIELD_SECTION_SIZE); a body over [http] upload_limit is 413 on its stream.
  QPACK: a field section is decoded only if it has at most HARD_FIELD_FACTOR times
  max_headers field lines (counted from its encoded bytes, field_lines()); each line may
  name a dynamic-table entry of up to 4 KB, so a 16 KB section could decode to 64 MB, and
  the count bounds it to max_headers x 16 KB. One with more lines is a connection error
  H3_EXCESSIVE_LOAD (as HTTP/2's ENHANCE_YOUR_CALM).
- TLS faults (services/tls.py, tls.expired, tls.wrong-name, tls.unknown-ca) act here too:
  a client with one on gets that certificate in its QUIC handshake.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, ProtocolError
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.h3.exceptions import H3Error
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.packet import (
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.retry import QuicRetryTokenHandler
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import LabSite

clock: Any = reactor  # (mypy cannot type the reactor's zope interface methods)
MAX_CONNECTIONS = 1000
CLOSE_DATAGRAM_SIZE = 1200  # room for a stateless CONNECTION_CLOSE (it is much shorter)
SMALLEST_INITIAL = 1200  # RFC 9000 14.1: a client's Initial datagram is at least this long
BUFFER_HIGH = 1024 * 1024  # unacknowledged bytes of a response before its producer pauses
CONNECTION_HIGH = 4 * 1024 * 1024  # ... of a connection's, before it stops rendering
HALF_OPEN = 256  # connections whose handshake is not complete, in all
HALF_OPEN_PER_HOST = 16  # ... from one client address
RETRY_ABOVE = 64  # half-open connections (or HALF_OPEN_PER_HOST // 2 from one address)
HANDSHAKE_TIMEOUT = 10.0  # seconds a handshake may take (aioquic's idle timeout is 60)
HARD_FIELD_FACTOR = 4  # max_headers times this: field lines a section may have to be decoded
DATA_FRAME = 0x0  # RFC 9114 7.2: frame types
HEADERS_FRAME = 0x1
MAX_FIELD_SECTION_SIZE = 0x6  # RFC 9114 7.2.4.1: the setting


class FrameSizes:
    """The frames of one request stream walked as its bytes arrive, ahead of aioquic's
    H3Connection, which buffers every frame but DATA whole before it looks at it: a
    HEADERS frame (or an unknown one) longer than the limit is found from its first bytes.
    Sans-IO: feed() says whether the stream has sent such a frame."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.skip = 0  # bytes left of the current frame's payload
        self.head = b""  # an incomplete frame header (type and length, two varints)

    def feed(self, data: bytes) -> bool:
        at = 0
        while at < len(data):
            if self.skip:
                step = min(self.skip, len(data) - at)
                self.skip -= step
                at += step
                continue
            kept = len(self.head)
            self.head += data[at:at + 16]  # a frame header is at most 16 bytes
            parsed = _two_varints(self.head)
            if parsed is None:
                if len(self.head) >= 16:
                    return True  # cannot happen: two varints fit in 16 bytes
                at = len(data)
                continue
            frame_type, length, used = parsed
            at += used - kept
            self.head = b""
            if frame_type != DATA_FRAME and length > self.limit:
                return True
            self.skip = length
        return False


def _two_varints(data: bytes) -> tuple[int, int, int] | None:
    """RFC 9000 16: two variable-length integers at the start of data, and their size."""
    values, at = [], 0
    for _ in range(2):
        if at >= len(data):
            return None
        size = 1 << (data[at] >> 6)
        if at + size > len(data):
            return None
        values.append(int.from_bytes(data[at:at + size], "big") & ((1 << (8 * size - 2)) - 1))
        at += size
    return values[0], values[1], at


def _prefix_int(data: bytes, at: int, bits: int) -> tuple[int, int]:
    """RFC 7541 5.1 (QPACK's integers): the integer whose prefix is the low `bits` bits
    of data[at], and where it ends. IndexError when data ends first."""
    mask = (1 << bits) - 1
    value, at = data[at] & mask, at + 1
    if value < mask:
        return value, at
    shift = 0
    while True:
        byte = data[at]
        at += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at
        if shift > 62:
            raise IndexError("integer too long")


def field_lines(section: bytes) -> int | None:
    """The number of field lines of an encoded QPACK field section (RFC 9204 4.5), read
    from their representations alone (no table, no Huffman: nothing is decoded), or None
    when the bytes are no field section (the decoder then says what is wrong)."""
    try:
        _, at = _prefix_int(section, 0, 8)  # Required Insert Count
        _, at = _prefix_int(section, at, 7)  # sign and Delta Base
        lines = 0
        while at < len(section):
            first = section[at]
            if first & 0x80:  # indexed field line
                _, at = _prefix_int(section, at, 6)
            elif first & 0x40:  # literal with name reference: then the value
                _, at = _prefix_int(section, at, 4)
                length, at = _prefix_int(section, at, 7)
                at += length
            elif first & 0x20:  # literal with literal name: the name, then the value
                length, at = _prefix_int(section, at, 3)
                at += length
                length, at = _prefix_int(section, at, 7)
                at += length
            elif first & 0x10:  # indexed field line, post-base index
                _, at = _prefix_int(section, at, 4)
            else:  # literal with post-base name reference
                _, at = _prefix_int(section, at, 3)
                length, at = _prefix_int(section, at, 7)
                at += length
            lines += 1
        return lines if at == len(section) else None
    except IndexError:
        return None


class ExcessiveLoad(ProtocolError):
    error_code = ErrorCode.H3_EXCESSIVE_LOAD


class LabH3Connection(H3Connection):
    """aioquic's H3Connection announcing the lab's field-section limit (it announces
    none, so a client may send any size; RFC 9114 4.2.2), and decoding only field
    sections with at most `max_lines` lines (see the module's docstring)."""

    def __init__(self, quic: QuicConnection, field_section_limit: int, max_lines: int) -> None:
        self.field_section_limit = field_section_limit
        self.max_lines = max_lines
        super().__init__(quic)

    def _get_local_settings(self) -> dict[int, int]:  # aioquic's hook for its SETTINGS
        settings = super()._get_local_settings()
        settings[MAX_FIELD_SECTION_SIZE] = self.field_section_limit
        return settings

    def _decode_headers(self, stream_id: int, frame_data: bytes | None) -> Any:
        # frame_data is None when a blocked section resumes: it was counted when it came.
        if frame_data is not None and (field_lines(frame_data) or 0) > self.max_lines:
            raise ExcessiveLoad(f"a field section of over {self.max_lines} lines")
        return super()._decode_headers(stream_id, frame_data)


class KeyLog:
    """aioquic's secrets_log_file: NSS key log lines appended with O_APPEND (the same file
    and the same way as services.tls for TCP)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, text: str) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            return os.write(fd, text.encode())
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Each write is whole already."""


def configuration(lab: Lab) -> QuicConfiguration:
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN,
                               idle_timeout=float(lab.settings("http").idle_timeout))
    config.load_cert_chain(str(lab.tls.server_cert), str(lab.tls.server_key))
    if lab.tls.keylog:
        config.secrets_log_file = KeyLog(lab.tls.keylog)  # type: ignore[assignment]
    return config


class Http3Stream:
    """One request stream, as twisted.web's Request sees a channel (the interface
    H2Stream offers), with what LabRequest expects (session, settings, refuse)."""

    transport = None  # no socket of its own: files.py then sends with a producer

    def __init__(self, connection: Http3Connection, stream_id: int,
                 headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        self.connection, self.stream_id = connection, stream_id
        connection.streams[stream_id] = self  # before the request may render and finish
        self.session, self.settings = connection.session, connection.site.settings
        self.site = self.factory = connection.site
        self.refused = False
        self.finished = False
        self.producer: Any = None
        self.paused = False
        self.command, self.path = b"?", b"?"
        request = self._request = self.site.requestFactory(self, queued=False)
        length = None
        for name, value in headers:
            if name == b":method":
                self.command = value
            elif name == b":path":
                self.path = value
            elif name == b":authority":
                request.requestHeaders.addRawHeader(b"host", value)
            elif not name.startswith(b":"):
                request.requestHeaders.addRawHeader(name, value)
                if name == b"content-length" and value.isdigit():
                    length = int(value)
        request.gotLength(0 if ended else length)
        if ended:
            self.ended()

    @property
    def _command(self) -> bytes:
        return self.command

    @property
    def _path(self) -> bytes:
        return self.path

    # --- from the connection -----------------------------------------------------------

    def received(self, data: bytes, ended: bool) -> None:
        if data and not self.refused:
            self._request.handleContentChunk(data)
        if ended:
            self.ended()

    def ended(self) -> None:
        if not self.refused:
            self.connection.render(self)

    def render(self) -> None:
        if not self.refused and not self.finished:
            self._request.requestReceived(self.command, self.path, b"HTTP/3")

    def lost(self, why: str) -> None:
        if not self.finished:
            self.finished = True
            self._request.connectionLost(Failure(ConnectionLost(why)))

    def acknowledged(self, waiting: int) -> None:
        """Called after every datagram exchange with what the connection has waiting (and
        when the port's total falls under its limit): a paused producer resumes once the
        client has taken enough of what was sent, and all clients of what all were sent."""
        if self.paused and waiting < CONNECTION_HIGH // 2 and \
                self.connection.unacknowledged(self.stream_id) < BUFFER_HIGH // 2 and \
                not self.connection.port.crowded(self.connection, waiting, low=True):
            self.paused = False
            self.producer.resumeProducing()

    # --- what twisted.web's Request calls ----------------------------------------------

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        fields = [(b":status", code)] + [
            (name.lower(), value) for name, values in headers.getAllRawHeaders()
            for value in values if name.lower() not in (b"connection", b"transfer-encoding")]
        self.connection.send_headers(self.stream_id, fields)

    def write(self, data: bytes) -> None:
        if data:
            self.connection.send_data(self.stream_id, data, False)
            if self.producer is not None and not self.paused:
                waiting = self.connection.waiting()
                if (self.connection.unacknowledged(self.stream_id) > BUFFER_HIGH
                        or waiting > CONNECTION_HIGH
                        or self.connection.port.crowded(self.connection, waiting)):
                    self.paused = True
                    self.connection.port.blocked.add(self.connection)
                    self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def requestDone(self, request: Any) -> None:
        if not self.finished:
            self.finished = True
            self.connection.send_data(self.stream_id, b"", True)
        self.connection.done(self.stream_id)

    def loseConnection(self) -> None:
        self.requestDone(self._request)

    def abortConnection(self) -> None:
        self.finished = True
        self.connection.reset(self.stream_id)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None
        self.paused = False

    def getPeer(self) -> Any:
        return self.connection.peer

    def getHost(self) -> Any:
        return self.connection.host

    def isSecure(self) -> bool:
        return True

    def _send100Continue(self) -> None:
        """HTTP/3 clients send their bodies without waiting for 100 Continue."""

    def refuse(self, status: int, why: str, headers: dict[bytes, bytes] | None = None) -> None:
        if self.refused:
            return
        self.refused = self.finished = True
        self.connection.refuse(self.stream_id, status, why, f"{self.command.decode('latin-1')} "
                               f"{self.path.decode('latin-1')[:200]}", headers)


class Http3Connection:
    """One QUIC connection: aioquic's QuicConnection and H3Connection, driven by the
    datagrams the port routes here and by one reactor timer."""

    def __init__(self, port: Http3Port, quic: QuicConnection, address: tuple[str, int]) -> None:
        self.port, self.quic, self.address = port, quic, address
        self.site = port.site
        self.h3: LabH3Connection | None = None
        self.streams: dict[int, Http3Stream] = {}
        self.heads: dict[int, FrameSizes] = {}  # request streams whose headers are not in
        self.ignored: set[int] = set()  # refused streams whose further bytes are dropped
        self.queued: list[Http3Stream] = []  # requests waiting for CONNECTION_HIGH
        self.timer: Any = None  # aioquic's (loss detection, idle, ...)
        self.flush: Any = None  # transmit_soon's
        self.deadline: Any = clock.callLater(HANDSHAKE_TIMEOUT, self.handshake_timeout)
        self.established = False
        self.closed = False
        self.counted = 0  # its unacknowledged bytes in the port's total, as last counted
        kind = IPv6Address if ":" in address[0] else IPv4Address
        self.peer = kind("UDP", address[0], address[1])
        host = port.address()
        self.host = kind("UDP", host.host, host.port)
        self.session: Any = None  # opened once the first datagram decrypts

    def datagram(self, data: bytes, address: tuple[str, int]) -> None:
        self.quic.receive_datagram(data, address, now=time.monotonic())
        self.process()

    def decrypted(self) -> bool:
        """Whether any packet of this connection has decrypted (aioquic has no public
        accessor: its state leaves FIRSTFLIGHT at the first one)."""
        return self.quic._state is not QuicConnectionState.FIRSTFLIGHT

    def process(self) -> None:
        if self.session is None:
            if not self.decrypted():
                return
            self.session = self.site.lab.journal.open(
                "http", f"{self.address[0]}:{self.address[1]}", "h3")
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, ConnectionIdIssued):
                self.port.connections[event.connection_id] = self
            elif isinstance(event, ConnectionIdRetired):
                self.port.connections.pop(event.connection_id, None)
            elif isinstance(event, ConnectionTerminated):
                self.terminated(event.reason_phrase or "closed")
                return
            elif isinstance(event, HandshakeCompleted):
                self.established = True
                self.port.established(self)
            elif isinstance(event, StreamReset) and event.stream_id in self.streams:
                self.streams.pop(event.stream_id).lost("reset by the client")
            elif isinstance(event, StreamDataReceived) and not self.admit(event):
                event = self.quic.next_event()
                continue
            if self.h3 is None and self.quic.tls.alpn_negotiated in H3_ALPN:
                limits = self.site.settings
                self.h3 = LabH3Connection(self.quic, limits.header_limit,
                                          HARD_FIELD_FACTOR * limits.max_headers)
                self.session.event("protocol", "h3")
            if self.h3 is not None:
                try:
                    for h3_event in self.h3.handle_event(event):
                        self.h3_event(h3_event)
                except H3Error as error:  # aioquic closes the connection with the code
                    self.session.event("error", f"HTTP/3: {error!r}"[:200])
            event = self.quic.next_event()
        self.transmit()

    def admit(self, event: StreamDataReceived) -> bool:
        """Whether the bytes of a request stream go on to the H3Connection: not once it
        is refused, nor a frame over the header limit (then 431)."""
        stream_id = event.stream_id
        if stream_id in self.ignored:
            return False
        if stream_id % 4 or self.h3 is None:  # not a client's request stream
            return True
        frames = self.heads.get(stream_id)
        if frames is None:
            frames = self.heads[stream_id] = FrameSizes(self.site.settings.header_limit)
        if frames.feed(event.data):
            stream = self.streams.get(stream_id)
            if stream is None:
                self.refuse(stream_id, 431, "header section over "
                            f"{self.site.settings.header_limit} bytes", "?")
            else:  # a trailer section: the answer may be under way, so the stream ends
                stream.refused = True
                stream.lost("trailer section too large")
                self.reset(stream_id)
                self.ignored.add(stream_id)
            return False
        return True

    def h3_event(self, event: Any) -> None:
        if isinstance(event, HeadersReceived):
            stream = self.streams.get(event.stream_id)
            limits = self.site.settings
            size = sum(len(name) + len(value) + 32 for name, value in event.headers)
            if stream is None and (size > limits.header_limit
                                   or len(event.headers) > limits.max_headers):
                self.heads.pop(event.stream_id, None)
                self.refuse(event.stream_id, 431, f"header section over {limits.header_limit}"
                            f" bytes or {limits.max_headers} fields", "?")
            elif stream is None:
                Http3Stream(self, event.stream_id, event.headers, event.stream_ended)
            elif event.stream_ended:  # trailers: their end is the request's end
                stream.received(b"", True)
        elif isinstance(event, DataReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].received(event.data, event.stream_ended)

    def render(self, stream: Http3Stream) -> None:
        """A complete request is rendered now, or once the connection's unacknowledged
        bytes fall under CONNECTION_HIGH // 2."""
        waiting = self.waiting()
        if self.queued or waiting > CONNECTION_HIGH or self.port.crowded(self, waiting):
            self.queued.append(stream)
            self.port.blocked.add(self)
        else:
            stream.render()

    # --- for the streams ---------------------------------------------------------------

    def send_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        if self.h3 is not None and not self.closed:
            self.h3.send_headers(stream_id, fields)
            self.transmit_soon()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.h3 is not None and not self.closed:
            self.h3.send_data(stream_id, data, end_stream=end)
            self.transmit_soon()

    def refuse(self, stream_id: int, status: int, why: str, request: str,
               headers: dict[bytes, bytes] | None = None) -> None:
        """A status answered on a stream and the rest of its request dropped."""
        self.session.command(f"{request} HTTP/3")
        self.session.reply(f"{status} {why}")
        body = f"{status}: {why}\n".encode()
        self.send_headers(stream_id, [
            (b":status", b"%d" % status), (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *((name.lower(), value) for name, value in (headers or {}).items())])
        self.send_data(stream_id, body, True)
        self.stop_reading(stream_id)

    def unacknowledged(self, stream_id: int) -> int:
        """Bytes of a response sent but not yet acknowledged (aioquic's stream buffer)."""
        stream = self.quic._streams.get(stream_id)  # no public accessor in aioquic 1.x
        if stream is None:
            return 0
        return stream.sender._buffer_stop - stream.sender._buffer_start

    def waiting(self) -> int:
        """Unacknowledged bytes of all the connection's streams."""
        return sum(stream.sender._buffer_stop - stream.sender._buffer_start
                   for stream in self.quic._streams.values())

    def done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        self.heads.pop(stream_id, None)

    def reset(self, stream_id: int) -> None:
        self.done(stream_id)
        if not self.closed:
            self.quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_CANCELLED
            self.transmit_soon()

    def stop_reading(self, stream_id: int) -> None:
        """A refused request's stream: its answer is out; the rest of its body is not
        wanted (STOP_SENDING with H3_NO_ERROR, RFC 9114 4.1)."""
        self.done(stream_id)
        self.ignored.add(stream_id)
        try:
            self.quic.stop_stream(stream_id, 0x100)
        except ValueError:  # the client finished sending already
            pass
        self.transmit_soon()

    # --- sending and timers ------------------------------------------------------------

    def transmit_soon(self) -> None:
        """Writes from a resource are gathered into datagrams once per reactor turn."""
        if self.flush is None:
            self.flush = clock.callLater(0, self.transmit)

    def transmit(self) -> None:
        if self.flush is not None and self.flush.active():
            self.flush.cancel()
        self.flush = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        now = time.monotonic()
        for data, address in self.quic.datagrams_to_send(now=now):
            self.port.send(data, address)
        self.port.count(self, self.waiting())
        self.resume()
        self.ignored.intersection_update(self.quic._streams)  # forget the discarded
        at = self.quic.get_timer()
        if at is not None and not self.closed:
            self.timer = clock.callLater(max(0.0, at - now), self.expire)

    def resume(self) -> None:
        """Paused producers and queued requests go on as far as the limits allow."""
        waiting = self.waiting()
        for stream in list(self.streams.values()):
            stream.acknowledged(waiting)
        while self.queued and waiting < CONNECTION_HIGH // 2 and \
                not self.port.crowded(self, waiting, low=True):
            self.queued.pop(0).render()
            waiting = self.waiting()

    def expire(self) -> None:
        self.timer = None
        self.quic.handle_timer(now=time.monotonic())
        self.process()

    def handshake_timeout(self) -> None:
        self.deadline = None
        if not self.established:
            self.terminated("handshake timeout")

    def terminated(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self.decrypted():
            for data, address in self.quic.datagrams_to_send(now=time.monotonic()):
                self.port.send(data, address)
        for call in (self.timer, self.flush, self.deadline):
            if call is not None and call.active():
                call.cancel()
        self.timer = self.flush = self.deadline = None
        for stream in list(self.streams.values()):
            stream.lost(why)
        self.streams.clear()
        self.queued.clear()
        self.port.count(self, 0)
        self.port.forget(self)
        if self.session is not None:
            if why != "closed":
                self.session.event("closed", why)
            self.session.close()


def must_retry(mode: str, half_open: int, from_host: int) -> bool:
    """Whether a new client without a token gets a Retry ([http] quic_retry), given the
    handshakes unfinished in all and from its address."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return half_open >= RETRY_ABOVE or from_host >= HALF_OPEN_PER_HOST // 2


def stateless_close(header: Any, error_code: int, reason: str) -> bytes:
    """An Initial packet with CONNECTION_CLOSE for a client's first Initial, made from
    its header alone (the Initial keys come from its destination connection ID, RFC 9001
    5.2): no connection, no TLS, shorter than what it answers."""
    crypto = CryptoPair()
    crypto.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
    builder = QuicPacketBuilder(host_cid=os.urandom(8), peer_cid=header.source_cid,
                                version=header.version, is_client=False,
                                max_datagram_size=CLOSE_DATAGRAM_SIZE)
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    phrase = reason.encode()
    buf = builder.start_frame(QuicFrameType.TRANSPORT_CLOSE)
    buf.push_uint_var(error_code)
    buf.push_uint_var(QuicFrameType.PADDING)  # no frame caused it
    buf.push_uint_var(len(phrase))
    buf.push_bytes(phrase)
    datagrams, _ = builder.flush()
    return b"".join(datagrams)


class Http3Port(DatagramProtocol):
    def __init__(self, lab: Lab, site: LabSite) -> None:
        self.site = site
        self.lab = lab
        self.config = configuration(lab)
        self.retry_mode = site.settings.quic_retry
        self.buffer_limit = site.settings.quic_buffer_limit
        self.total = 0  # unacknowledged bytes of all connections (each's `counted`)
        self.blocked: set[Http3Connection] = set()  # with a paused producer or a queue
        self.wake: Any = None  # the call that resumes them once `total` is low again
        self.full = False  # over the limit (journaled), until under half of it
        self.connections: dict[bytes, Http3Connection] = {}  # by connection ID
        # Handshake-incomplete connections, oldest first, in all and by client address.
        self.half_open: dict[Http3Connection, None] = {}
        self.half_open_from: dict[str, dict[Http3Connection, None]] = {}
        self.retry = QuicRetryTokenHandler()
        self.live: set[Http3Connection] = set()

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        transport: Any = self.transport
        if transport is not None:  # None once the port has closed (stopProtocol)
            transport.write(data, address)

    def address(self) -> Any:
        transport: Any = self.transport
        return transport.getHost()

    def crowded(self, connection: Http3Connection, waiting: int, low: bool = False) -> bool:
        """Whether all connections' unacknowledged bytes, with `waiting` for
        `connection`, are over the buffer limit (with low: over half of it, the mark
        to resume under)."""
        total = self.total - connection.counted + waiting
        return total > (self.buffer_limit // 2 if low else self.buffer_limit)

    def count(self, connection: Http3Connection, waiting: int) -> None:
        """`connection` has `waiting` unacknowledged bytes now; once the total is under
        half the limit, the connections that paused for it resume (in a reactor turn of
        their own: this is called while one of them transmits)."""
        self.total += waiting - connection.counted
        connection.counted = waiting
        if not self.full and self.total > self.buffer_limit:
            self.journal(f"QUIC buffers full: {self.total} bytes unacknowledged (limit "
                         f"{self.buffer_limit}), new connections refused")
            self.full = True
        elif self.full and self.total <= self.buffer_limit // 2:
            self.journal(f"QUIC buffers under half the limit again: {self.total} bytes")
            self.full = False
        if self.blocked and self.total <= self.buffer_limit // 2 and self.wake is None:
            self.wake = clock.callLater(0, self.resume_blocked)

    def journal(self, text: str, peer: str = "-") -> None:
        """An event of the port's (no connection's session)."""
        self.lab.journal.add("http", "-", peer, "", "event", text)

    def resume_blocked(self) -> None:
        self.wake = None
        blocked, self.blocked = self.blocked, set()
        for connection in blocked:
            if not connection.closed:
                connection.resume()
                connection.transmit_soon()

    def datagramReceived(self, data: bytes, address: Any) -> None:
        try:
            header = pull_quic_header(Buffer(data=data),
                                      host_cid_length=self.config.connection_id_length)
        except ValueError:
            return  # not QUIC: nothing to answer
        if (header.packet_type != QuicPacketType.VERSION_NEGOTIATION
                and header.version is not None
                and header.version not in self.config.supported_versions):
            self.send(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=self.config.supported_versions), address)
            return
        connection = self.connections.get(header.destination_cid)
        new = connection is None
        if connection is None:
            if header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL:
                return
            if len(self.live) >= MAX_CONNECTIONS or self.full:
                self.send(stateless_close(header, QuicErrorCode.CONNECTION_REFUSED,
                                          "the lab is busy, try again later"), address)
                return
            connection = self.accept(header, address)
            if connection is None:
                return
        try:
            connection.datagram(data, address)
        except Exception as error:  # a bug of ours or aioquic's: that connection only
            if connection.session is not None:
                connection.session.event("error", f"HTTP/3: {error!r}"[:200])
            connection.terminated("internal error")
            raise
        if not connection.decrypted():  # junk: no state kept for it, nobody evicted
            connection.terminated("undecryptable Initial")
        elif new and not connection.closed:
            self.half_opened(connection)

    def accept(self, header: Any, address: tuple[str, int]) -> Http3Connection | None:
        """A connection for a new client's Initial, unless the lab is under pressure and
        the client has not yet proved its address (then a Retry, and no state)."""
        original, retry_source = header.destination_cid, None
        if header.token:
            try:
                original = self.retry.validate_token(
                    address=address, destination_cid=header.destination_cid,
                    token=header.token, now=time.monotonic())
                retry_source = header.destination_cid
            except ValueError as error:  # expired, another address's, not ours
                self.send(stateless_close(header, QuicErrorCode.INVALID_TOKEN, str(error)),
                          address)
                self.journal(f"QUIC Initial refused, INVALID_TOKEN: {error}",
                             f"{address[0]}:{address[1]}")
                return None
        if retry_source is None and self.pressure(address[0]):
            source_cid = os.urandom(8)
            self.send(encode_quic_retry(
                version=header.version, source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=self.retry.create_token(
                    address=address, original_destination_connection_id=header.destination_cid,
                    retry_source_connection_id=source_cid, now=time.monotonic())), address)
            return None
        config = self.config
        fault = self.lab.tls.fault_certificate(address[0], address[1], "http")
        if fault is not None:  # services/tls.py's faults, for QUIC's own TLS
            config = dataclasses.replace(config, certificate=fault[0], private_key=fault[1],
                                         certificate_chain=[])
        quic = QuicConnection(configuration=config,
                              original_destination_connection_id=original,
                              retry_source_connection_id=retry_source)
        connection = Http3Connection(self, quic, address)
        self.connections[header.destination_cid] = connection
        self.connections[quic.host_cid] = connection
        self.live.add(connection)
        return connection

    def half_opened(self, connection: Http3Connection) -> None:
        """A new connection whose Initial decrypted: counted as half-open until its
        handshake completes, the oldest evicted if there are too many."""
        host = connection.address[0]
        for crowd, cap in ((self.half_open_from.get(host, {}), HALF_OPEN_PER_HOST),
                           (self.half_open, HALF_OPEN)):
            while len(crowd) >= cap:
                oldest = next(iter(crowd))
                oldest.terminated("evicted: too many handshakes")
                self.established(oldest)  # out of the count, even if it had closed
        self.half_open[connection] = None
        self.half_open_from.setdefault(host, {})[connection] = None

    def pressure(self, host: str) -> bool:
        return must_retry(self.retry_mode, len(self.half_open),
                          len(self.half_open_from.get(host, ())))

    def established(self, connection: Http3Connection) -> None:
        self.half_open.pop(connection, None)
        from_host = self.half_open_from.get(connection.address[0])
        if from_host is not None:
            from_host.pop(connection, None)
            if not from_host:
                del self.half_open_from[connection.address[0]]

    def forget(self, connection: Http3Connection) -> None:
        self.established(connection)
        self.live.discard(connection)
        self.blocked.discard(connection)
        for cid in [cid for cid, known in self.connections.items() if known is connection]:
            del self.connections[cid]

    def stopProtocol(self) -> None:
        """The socket is closed already: the connections end without a word (clients
        find out by their idle timeout)."""
        for connection in set(self.connections.values()):
            connection.terminated("the lab stops")
