"""HTTP/3 over QUIC on UDP 443: the same site, answered by the same resources.

aioquic (a kept library) does QUIC, its TLS 1.3 and HTTP/3 framing, sans-IO: datagrams
in, datagrams and events out. Here is only the glue to the reactor - one UDP port, the
datagrams routed to their connection by connection ID (as aioquic's own asyncio server
does), timers on the reactor - and Http3Stream, which stands in for a twisted.web channel
so the site's Request objects (LabRequest) render exactly as over HTTP/1.1 and HTTP/2.
TLS secrets go to the lab's key log ([tls] keylog), so Wireshark decrypts QUIC too.

Limits: at most MAX_CONNECTIONS QUIC connections at once (more Initial packets are
dropped); a body over [http] upload_limit is 413 on its stream; a response sent faster
than the client acknowledges pauses its producer (big files) once BUFFER_HIGH bytes wait.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.h3.exceptions import H3Error
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    StreamReset,
)
from aioquic.quic.packet import QuicPacketType, encode_quic_version_negotiation, pull_quic_header
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
SMALLEST_INITIAL = 1200  # RFC 9000 14.1: a client's Initial datagram is at least this long
BUFFER_HIGH = 1024 * 1024  # unacknowledged bytes of a response before its producer pauses


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
            self._request.requestReceived(self.command, self.path, b"HTTP/3")

    def lost(self, why: str) -> None:
        if not self.finished:
            self.finished = True
            self._request.connectionLost(Failure(ConnectionLost(why)))

    def acknowledged(self) -> None:
        """Called after every datagram exchange: a paused producer resumes once the
        client has taken enough of what was sent."""
        if self.paused and self.connection.unacknowledged(self.stream_id) < BUFFER_HIGH // 2:
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
            if self.producer is not None and not self.paused and \
                    self.connection.unacknowledged(self.stream_id) > BUFFER_HIGH:
                self.paused = True
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
        self.session.command(f"{self.command.decode('latin-1')} "
                             f"{self.path.decode('latin-1')[:200]} HTTP/3")
        self.session.reply(f"{status} {why}")
        body = f"{status}: {why}\n".encode()
        self.connection.send_headers(self.stream_id, [
            (b":status", b"%d" % status), (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            *((name.lower(), value) for name, value in (headers or {}).items())])
        self.connection.send_data(self.stream_id, body, True)
        self.connection.stop_reading(self.stream_id)


class Http3Connection:
    """One QUIC connection: aioquic's QuicConnection and H3Connection, driven by the
    datagrams the port routes here and by one reactor timer."""

    def __init__(self, port: Http3Port, quic: QuicConnection, address: tuple[str, int]) -> None:
        self.port, self.quic, self.address = port, quic, address
        self.site = port.site
        self.h3: H3Connection | None = None
        self.streams: dict[int, Http3Stream] = {}
        self.timer: Any = None  # aioquic's (loss detection, idle, ...)
        self.flush: Any = None  # transmit_soon's
        self.closed = False
        kind = IPv6Address if ":" in address[0] else IPv4Address
        self.peer = kind("UDP", address[0], address[1])
        host = port.address()
        self.host = kind("UDP", host.host, host.port)
        self.session = self.site.lab.journal.open("http", f"{address[0]}:{address[1]}", "h3")

    def datagram(self, data: bytes, address: tuple[str, int]) -> None:
        self.quic.receive_datagram(data, address, now=time.monotonic())
        self.process()

    def process(self) -> None:
        event = self.quic.next_event()
        while event is not None:
            if isinstance(event, ConnectionIdIssued):
                self.port.connections[event.connection_id] = self
            elif isinstance(event, ConnectionIdRetired):
                self.port.connections.pop(event.connection_id, None)
            elif isinstance(event, ConnectionTerminated):
                self.terminated(event.reason_phrase or "closed")
                return
            elif isinstance(event, StreamReset) and event.stream_id in self.streams:
                self.streams.pop(event.stream_id).lost("reset by the client")
            if self.h3 is None and self.quic.tls.alpn_negotiated in H3_ALPN:
                self.h3 = H3Connection(self.quic)
                self.session.event("protocol", "h3")
            if self.h3 is not None:
                try:
                    for h3_event in self.h3.handle_event(event):
                        self.h3_event(h3_event)
                except H3Error as error:  # aioquic closes the connection with the code
                    self.session.event("error", f"HTTP/3: {error!r}"[:200])
            event = self.quic.next_event()
        self.transmit()

    def h3_event(self, event: Any) -> None:
        if isinstance(event, HeadersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.streams[event.stream_id] = Http3Stream(
                    self, event.stream_id, event.headers, event.stream_ended)
            elif event.stream_ended:  # trailers: their end is the request's end
                stream.received(b"", True)
        elif isinstance(event, DataReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].received(event.data, event.stream_ended)

    # --- for the streams ---------------------------------------------------------------

    def send_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        if self.h3 is not None and not self.closed:
            self.h3.send_headers(stream_id, fields)
            self.transmit_soon()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> None:
        if self.h3 is not None and not self.closed:
            self.h3.send_data(stream_id, data, end_stream=end)
            self.transmit_soon()

    def unacknowledged(self, stream_id: int) -> int:
        """Bytes of a response sent but not yet acknowledged (aioquic's stream buffer)."""
        stream = self.quic._streams.get(stream_id)  # no public accessor in aioquic 1.x
        if stream is None:
            return 0
        return stream.sender._buffer_stop - stream.sender._buffer_start

    def done(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)

    def reset(self, stream_id: int) -> None:
        self.streams.pop(stream_id, None)
        if not self.closed:
            self.quic.reset_stream(stream_id, 0x10C)  # H3_REQUEST_CANCELLED
            self.transmit_soon()

    def stop_reading(self, stream_id: int) -> None:
        """A refused request's stream: its answer is out; the rest of its body is not
        wanted (STOP_SENDING with H3_NO_ERROR, RFC 9114 4.1)."""
        self.streams.pop(stream_id, None)
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
        for stream in list(self.streams.values()):
            stream.acknowledged()
        at = self.quic.get_timer()
        if at is not None and not self.closed:
            self.timer = clock.callLater(max(0.0, at - now), self.expire)

    def expire(self) -> None:
        self.timer = None
        self.quic.handle_timer(now=time.monotonic())
        self.process()

    def terminated(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        for data, address in self.quic.datagrams_to_send(now=time.monotonic()):
            self.port.send(data, address)
        for call in (self.timer, self.flush):
            if call is not None and call.active():
                call.cancel()
        self.timer = self.flush = None
        for stream in list(self.streams.values()):
            stream.lost(why)
        self.streams.clear()
        self.port.forget(self)
        self.session.close()


class Http3Port(DatagramProtocol):
    def __init__(self, lab: Lab, site: LabSite) -> None:
        self.site = site
        self.config = configuration(lab)
        self.connections: dict[bytes, Http3Connection] = {}  # by connection ID

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        transport: Any = self.transport
        if transport is not None:  # None once the port has closed (stopProtocol)
            transport.write(data, address)

    def address(self) -> Any:
        transport: Any = self.transport
        return transport.getHost()

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
        if connection is None:
            if (header.packet_type != QuicPacketType.INITIAL or len(data) < SMALLEST_INITIAL
                    or len(self.connections) >= MAX_CONNECTIONS):
                return
            quic = QuicConnection(configuration=self.config,
                                  original_destination_connection_id=header.destination_cid)
            connection = Http3Connection(self, quic, address)
            self.connections[header.destination_cid] = connection
            self.connections[quic.host_cid] = connection
        try:
            connection.datagram(data, address)
        except Exception as error:  # a bug of ours or aioquic's: that connection only
            connection.session.event("error", f"HTTP/3: {error!r}"[:200])
            connection.terminated("internal error")
            raise

    def forget(self, connection: Http3Connection) -> None:
        for cid in [cid for cid, known in self.connections.items() if known is connection]:
            del self.connections[cid]

    def stopProtocol(self) -> None:
        """The socket is closed already: the connections end without a word (clients
        find out by their idle timeout)."""
        for connection in set(self.connections.values()):
            connection.terminated("the lab stops")
