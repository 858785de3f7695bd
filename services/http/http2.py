"""HTTP/2 on the same site: over TLS when ALPN picks h2 (port 443), and in cleartext (h2c)
on port 80 with prior knowledge (the client's first bytes are the connection preface) or
with "Upgrade: h2c" on a GET or HEAD (RFC 7540 3.2; curl --http2 does this).

Twisted's H2Connection (through the h2 library) does the framing, flow control and
priorities. A connection always starts as a LabChannel (journal session, limits, the
fast path for HTTP/1.1); when it turns out to be HTTP/2 the channel hands its transport
to a LabH2Connection, which keeps the channel's journal session (so the session's entries
are the same, request lines saying HTTP/2), and ends through the channel's connectionLost
(which closes the session and lets the lab's connection limits count it out).

Header limits, as HTTP/1.1's ([http] header_limit and max_headers): a decoded field section
over them is 431 on its stream (RFC 9113 10.5.1: the block is decoded, so HPACK state
stays whole); one over HARD_HEADER_FACTOR times header_limit - announced as
SETTINGS_MAX_HEADER_LIST_SIZE - and a header block (HEADERS plus CONTINUATIONs) whose
encoded bytes pass that are a connection error (GOAWAY ENHANCE_YOUR_CALM) before more is
buffered. h2 itself stops a block at 64 CONTINUATION frames, but each may be a full frame
(16 KB): 1 MB buffered per connection for the 2024 "CONTINUATION flood" without the byte
bound.

Twisted builds plain H2Streams, which lack what LabRequest expects of its channel (the
journal session, the settings, refusals), so _requestReceived is Twisted's with LabStream
in their place.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import TYPE_CHECKING, Any

import h2.errors
import h2.events
import priority
from h2.connection import ConnectionInputs
from h2.exceptions import DenialOfServiceError, H2Error
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from h2.stream import StreamInputs
from hpack import Encoder
from OpenSSL import SSL
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.server import version as server_version

from . import fast, h2memo
from .linger import Linger
from .responses import assemble

if TYPE_CHECKING:
    from .channel import LabChannel

PREFACE_LINE = b"PRI * HTTP/2.0\r\n"  # the connection preface's first line (RFC 9113 3.4)
ALPN = (b"h2", b"http/1.1")  # the server's order of preference
# Request headers that belong to the HTTP/1.1 connection and may not go into HTTP/2.
HARD_HEADER_FACTOR = 4  # header_limit times this: a connection error, not a 431
CONNECTION_HEADERS = {b"connection", b"upgrade", b"http2-settings", b"keep-alive",
                      b"proxy-connection", b"transfer-encoding", b"host", b"te"}


def select_alpn(connection: Any, offered: list[bytes]) -> Any:  # bytes or pyOpenSSL's marker
    """h2 if the client offers it, else http/1.1; a client offering neither (the lab's
    other TLS services share this context: IMAPS, SMTPS...) gets no ALPN answer."""
    for protocol in ALPN:
        if protocol in offered:
            return protocol
    return SSL.NO_OVERLAPPING_PROTOCOLS


def offer_h2(context: SSL.Context) -> None:
    context.set_alpn_select_callback(select_alpn)


class LabStream(H2Stream):
    """A stream with what LabRequest asks of its channel: the connection's journal session
    and settings, and refuse() (413 for a body over the limit, 401/403 for a PUT that waits
    for 100-continue), answered on this stream alone."""

    def __init__(self, stream_id: int, connection: LabH2Connection, *args: Any) -> None:
        self.session = connection.session
        self.settings = connection.settings
        self.refused = False
        self.registered = False  # in connection.streams (refusals during __init__ wait)
        self.pending: tuple[int, str, dict[bytes, bytes]] | None = None
        super().__init__(stream_id, connection, *args)

    @property
    def _command(self) -> bytes:
        return self.command or b"?"

    @property
    def _path(self) -> bytes:
        return self.path or b"?"

    def requestComplete(self) -> None:
        if self.refused:
            return
        state = self._conn.conn.streams.get(self.streamID)
        if state is None or state.closed:
            # Reset by the client later in the same read (h2 reads a read's frames before
            # any event is handled): nothing to answer on, and Twisted's answer would
            # raise in h2. Its StreamReset comes next (and counts against Rapid Reset).
            self.session.command(f"{self._command.decode('latin-1')} "
                                 f"{self._path.decode('latin-1')[:200]} HTTP/2")
            self.session.reply("stream reset by the client")
            return
        super().requestComplete()

    def _send100Continue(self) -> None:
        # Twisted sends it after gotLength, even when the request was refused there.
        if not self.refused:
            super()._send100Continue()

    def refuse(self, status: int, why: str, headers: dict[bytes, bytes] | None = None) -> None:
        if self.refused:
            return
        self.refused = True
        if not self.registered:
            self.pending = (status, why, headers or {})
            return
        self.session.command(f"{self._command.decode('latin-1')} "
                             f"{self._path.decode('latin-1')[:200]} HTTP/2")
        self.session.reply(f"{status} {why}")
        body = f"{status}: {why}\n".encode()
        fields = [(b":status", b"%d" % status), (b"content-type", b"text/plain; charset=utf-8"),
                  (b"content-length", b"%d" % len(body)),
                  *((name.lower(), value) for name, value in (headers or {}).items())]
        conn = self._conn
        try:
            conn.conn.send_headers(self.streamID, fields)
            conn.conn.send_data(self.streamID, body, end_stream=True)
            if status == 413:
                # The answer is whole; the client may stop sending the body (RFC 9113 8.1).
                # Only when a body is on its way: a client refused before it sent one (it
                # waits for 100 Continue) sends none, and curl 7.88 takes a reset that
                # arrives with the answer as "Stream error in the HTTP/2 framing layer".
                conn.conn.reset_stream(self.streamID, h2.errors.ErrorCodes.NO_ERROR)
        except H2Error:
            pass  # the client reset the stream first, or its window is shut: nothing to say
        if conn._tryToWriteControlData():
            self.connectionLost(Failure(ConnectionLost("refused")))
            conn._requestDone(self.streamID)


class BoundedFrameBuffer(FrameBuffer):
    """h2's FrameBuffer with a bound on the bytes of a header block being gathered from
    CONTINUATION frames (h2 bounds only their number)."""

    def __init__(self, limit: int) -> None:
        super().__init__(server=True)
        self.limit = limit

    def _update_header_buffer(self, f: Any) -> Any:  # h2's hook for each frame
        f = super()._update_header_buffer(f)
        if sum(len(frame.data) for frame in self._headers_buffer) > self.limit:
            raise DenialOfServiceError(f"a header block over {self.limit} bytes")
        return f


# Frame types and flags (RFC 9113 6), for the frames the fast path makes itself; the
# header is hyperframe's layout: a 24-bit length, the type, the flags, the stream.
FRAME_HEADER = struct.Struct(">HBBBL")
DATA, HEADERS, CONTINUATION = 0x0, 0x1, 0x9
END_STREAM, END_HEADERS = 0x1, 0x4
BLOCK_CACHE_SIZE = 16  # fast-path header blocks kept per connection (the Date changes)


class BlockCache:
    """HPACK blocks of the fast path's answers on one connection, kept while they are
    still right. A page's answer has the same fields for a second (its Date): once the
    connection's encoder has every field in its dynamic table, encoding them again makes
    a block of indices that leaves the table as it was - the same bytes every time, until
    anything else changes the table (another answer, a size update). So each block is
    kept with the table's fingerprint, and used while the fingerprint holds."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        table = encoder.header_table
        if not isinstance(table, h2memo.CountedTable):
            raise TypeError("BlockCache needs an encoder whose table counts its changes")
        self.table = table
        self.blocks: dict[tuple[tuple[bytes, bytes], ...], tuple[Any, bytes]] = {}

    def fingerprint(self) -> tuple[int, bool]:
        # The table counts its changes (h2memo.CountedTable); a size update waits in
        # `resized` until the next block says it.
        return self.table.changes, self.table.resized

    def block(self, fields: tuple[tuple[bytes, bytes], ...]) -> bytes:
        before = self.fingerprint()
        kept = self.blocks.get(fields)
        if kept is not None and kept[0] == before:
            return kept[1]
        block = self.encoder.encode(fields)
        if self.fingerprint() == before:  # it changed nothing: good as long as that holds
            if len(self.blocks) >= BLOCK_CACHE_SIZE:
                self.blocks.clear()
            self.blocks[fields] = (before, block)
        return block


class LabH2Connection(H2Connection):
    site: Any  # the LabSite (Twisted's attribute, declared None there)

    def __init__(self, channel: LabChannel,
                 upgrade: tuple[bytes, list[tuple[bytes, bytes]]] | None = None) -> None:
        super().__init__()
        self.conn = h2memo.h2_state()  # (Twisted's own is not used yet)
        self.channel = channel
        self.session = channel.session
        self.settings = channel.settings
        # Before anything is sent or received: h2 announces these settings in its first
        # SETTINGS frame and bounds its HPACK decoder by them.
        hard = HARD_HEADER_FACTOR * self.settings.header_limit
        self.conn.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: 100, SettingCodes.MAX_HEADER_LIST_SIZE: hard})
        self.conn.decoder.max_header_list_size = hard
        self.conn.incoming_buffer = BoundedFrameBuffer(hard)
        self.site = channel.site
        self.factory = channel.factory
        self.requestFactory = channel.requestFactory
        self.timeOut = channel.timeOut
        self.upgrade = upgrade
        self.upgraded_request: list[tuple[bytes, bytes]] | None = None  # stream 1's
        self.blocks: BlockCache | None = None  # the fast path's HPACK blocks
        self.looked: dict[bytes, Any] = {}  # fast-path bodies (or None) of the current read
        self.ended = False
        self.linger: Linger | None = None  # after a connection error's GOAWAY (_terminate)

    def connectionMade(self) -> None:
        if self.upgrade is None:
            super().connectionMade()
            return
        # h2c by Upgrade: the client's HTTP2-Settings stand for its first SETTINGS frame,
        # and its request is stream 1, already complete (RFC 7540 3.2).
        settings, headers = self.upgrade
        transport: Any = self.transport  # (zope interfaces confuse mypy)
        self.setTimeout(self.timeOut)
        try:
            self.conn.initiate_upgrade_connection(settings)
        except (H2Error, ValueError):  # HTTP2-Settings not base64url SETTINGS
            self.conn.close_connection(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            transport.write(self.conn.data_to_send())
            transport.loseConnection()
            return
        transport.write(self.conn.data_to_send())
        # Answered once the client's preface has come: it sends that only after reading
        # the 101, and an answer in the same burst as the 101 overflows curl's buffer
        # ("connection buffer size is too small ... following HTTP Upgrade", curl 7.88).
        self.upgraded_request = headers

    def dataReceived(self, data: bytes) -> None:
        if self.linger is not None:
            self.linger.drop(data)
            return
        self.looked.clear()
        super().dataReceived(data)
        if self.upgraded_request is not None and not self.ended:
            headers, self.upgraded_request = self.upgraded_request, None
            ended = h2.events.StreamEnded(stream_id=1)
            self._requestReceived(h2.events.RequestReceived(stream_id=1, headers=headers,
                                                            stream_ended=ended))
            self._requestEnded(ended)
            self._tryToWriteControlData()

    def _terminate(self, reason: Failure) -> None:
        """A connection error (h2's ProtocolError, the header-block bound): the GOAWAY,
        then a lingering close (linger.py) where Twisted's closes at once - in a frame
        flood, the reset answering the frames still arriving destroyed the GOAWAY before
        the client read it."""
        if not self._tryToWriteControlData():
            return  # the client is not reading: the timers stay armed, as in Twisted's
        transport: Any = self.transport
        linger = Linger(transport)
        if linger.possible:
            transport.unregisterProducer()
            linger.start()
        else:
            transport.loseConnection()
        self.connectionLost(reason, _cancelTimeouts=linger.possible)
        self.linger = linger  # (after: the transport's own connectionLost ends it)

    def connectionLost(self, reason: Any = None, *args: Any, **options: Any) -> None:
        super().connectionLost(reason, *args, **options)  # (Twisted's own _cancelTimeouts)
        if self.linger is not None:
            self.linger.cancel()
        # Twisted calls this twice when the client says GOAWAY (once itself, once from the
        # transport); the channel's (the session's close, the limits' count) goes once.
        if not self.ended:
            self.ended = True
            self.channel.connectionLost(reason)

    def _tryToWriteControlData(self) -> bool:
        """Twisted's, with what goes out at once sent straight to the socket when nothing
        waits before it (fast.write_now): a read's answers are one write."""
        if self._consumerBlocked is None and not self._bufferedControlFrames:
            data = self.conn.data_to_send()
            if data:
                fast.write_now(self.transport, data)
            return True
        return bool(super()._tryToWriteControlData())

    # A stream refused (and reset) while its frames were being read: h2 still reports the
    # rest of that read's events for it, which Twisted would look up and not find.
    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestDataReceived(event)
            return
        # The body of a stream answered already (refused from its headers, not reset):
        # dropped, its flow-control credit given back so the client's sending completes.
        try:
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        except H2Error:
            pass  # the stream is gone on h2's side too: the connection's window only

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestReceived(self, event: Any) -> None:
        size = sum(len(name) + len(value) + 32 for name, value in event.headers)
        if size > self.settings.header_limit or len(event.headers) > self.settings.max_headers:
            self.refuse_headers(event.stream_id, event.headers, size)
            return
        if event.stream_ended is not None and self.answer_fast(event.stream_id, event.headers):
            return  # (the StreamEnded that follows is for a stream Twisted never knew)
        # Twisted's, building a LabStream (see the module's docstring).
        stream = LabStream(event.stream_id, self, event.headers, self.requestFactory,
                           self.site, self.factory)
        self.streams[event.stream_id] = stream
        self._streamCleanupCallbacks[event.stream_id] = Deferred()
        self._outboundStreamQueues[event.stream_id] = deque()
        try:
            self.priority.insert_stream(event.stream_id)
        except priority.DuplicateStreamError:  # a PRIORITY frame came before the HEADERS
            pass
        else:
            self.priority.block(event.stream_id)
        stream.registered = True
        if stream.pending is not None:
            stream.refused = False
            stream.refuse(*stream.pending)

    def refuse_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]],
                       size: int) -> None:
        """431 for a field section over the limits, without a Request or stream object
        (the StreamEnded or DATA that follow are for a stream Twisted never knew)."""
        why = (f"request headers exceed {self.settings.header_limit} bytes"
               if size > self.settings.header_limit
               else f"more than {self.settings.max_headers} header fields")
        head = dict(headers)
        self.session.command(f"{head.get(b':method', b'?').decode('latin-1')} "
                             f"{head.get(b':path', b'?').decode('latin-1')[:200]} HTTP/2")
        self.session.reply(f"431 {why}")
        body = f"431: {why}\n".encode()
        self.conn.send_headers(stream_id, [
            (b":status", b"431"), (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body))])
        self.conn.send_data(stream_id, body, end_stream=True)
        try:  # the answer is whole; the client may stop sending (RFC 9113 8.1)
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
        except H2Error:
            pass  # the client ended the stream already
        self._tryToWriteControlData()

    def answer_fast(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> bool:
        """HTTP/1.1's fast path (fast.py) for a stream: a bodiless GET or HEAD of a page
        in memory, answered at once with HEADERS and DATA frames, without a Request, a
        stream object or Twisted's per-frame scheduling (one reactor turn per frame:
        about 0.01x nginx's requests/s with it). Declines - the ordinary way answers -
        when anything is unusual, when the answer does not fit the stream's flow-control
        window, or while the client is not reading (Twisted's own buffer then decides)."""
        if self._consumerBlocked is not None or self._bufferedControlFrames:
            return False
        # h2 reads all of a read's frames before any event is handled: a client may have
        # reset the stream already, later in the same read (h2 may even have forgotten
        # it). Twisted's way knows what to do with a reset stream.
        stream = self.conn.streams.get(stream_id)
        if stream is None or stream.closed:
            return False
        method = target = None
        fields: dict[bytes, bytes] = {}
        for name, value in headers:
            if name == b":method":
                method = value
            elif name == b":path":
                target = value
            elif name.startswith(b":"):
                continue
            elif name in fast.DECLINE or name in fields:
                return False
            else:
                fields[name] = value
        if method not in (b"GET", b"HEAD") or target is None or not fast.TARGET.match(target):
            return False
        path = target.partition(b"?")[0]
        # The streams of one read are answered against one look at each file (a stat
        # each: the most costly step left of a fast answer, ten times per read of h2load).
        body = self.looked.get(path, False)
        if body is False:
            body = self.looked[path] = self.site.fast_body(path)
        if body is None:
            return False
        head = fast.Head(method, target, path, b"HTTP/2", fields)
        response, status, payload = self.prepare(head, body)
        if len(payload) > self.conn.local_flow_control_window(stream_id):
            return False
        self.session.command(f"{method.decode()} {target.decode()} HTTP/2")
        self.send_answer(stream_id, response, payload)
        self.session.reply(f"{status} {len(payload)} bytes")
        return True

    def prepare(self, head: fast.Head, body: Any) -> tuple[tuple[tuple[bytes, bytes], ...],
                                                          int, bytes]:
        """The fields, status and payload of the fast path's answer to `head`."""
        answer, data = body.answer(head)
        payload = assemble(answer.pieces, data) if answer.length is not None and \
            head.method == b"GET" else b""
        response = [(b":status", b"%d" % answer.status), (b"server", server_version),
                    (b"date", fast.http_date())]
        if self.site.alt_svc:
            response.append((b"alt-svc", self.site.alt_svc))
        response += [(name.lower(), value) for name, value in answer.headers]
        if answer.length is not None:
            response.append((b"content-length", b"%d" % answer.length))
        return tuple(response), answer.status, payload

    def send_answer(self, stream_id: int, fields: tuple[tuple[bytes, bytes], ...],
                    payload: bytes) -> None:
        """h2's send_headers and send_data for a fast-path answer (fields of our own making,
        lowercase and valid; a payload within the flow-control windows): the same
        transitions of h2's connection and stream state machines and of its windows, in
        h2's order, the header block from the connection's BlockCache, and the frames'
        bytes made here. h2 makes each frame an object of three classes and serializes its
        body twice (once for an assert): half of a fast answer's time, profiled with
        h2load. Its state machines still check every step; as in h2, the headers'
        transitions come before the encoding, which changes the HPACK table for good."""
        conn = self.conn
        stream = conn.streams[stream_id]
        machine, size = stream.state_machine, conn.max_outbound_frame_size
        conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
        machine.process_input(StreamInputs.SEND_HEADERS)
        if not payload:
            machine.process_input(StreamInputs.SEND_END_STREAM)
        if self.blocks is None:
            self.blocks = BlockCache(conn.encoder)
        block = self.blocks.block(fields)
        pieces = [block[start:start + size] for start in range(0, len(block), size)] or [b""]
        out = []
        for number, piece in enumerate(pieces):
            flags = END_HEADERS if number == len(pieces) - 1 else 0
            if number == 0:
                kind, flags = HEADERS, flags | (0 if payload else END_STREAM)
            else:
                kind = CONTINUATION
            out += [FRAME_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, kind, flags,
                                      stream_id), piece]
        for start in range(0, len(payload), size):
            piece = payload[start:start + size]
            last = start + size >= len(payload)
            conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
            machine.process_input(StreamInputs.SEND_DATA)
            if last:
                machine.process_input(StreamInputs.SEND_END_STREAM)
            stream.outbound_flow_control_window -= len(piece)
            conn.outbound_flow_control_window -= len(piece)
            out += [FRAME_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, DATA,
                                      END_STREAM if last else 0, stream_id), piece]
        conn._data_to_send += b"".join(out)


def upgrade_headers(request: Any) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 form of an HTTP/1.1 request's head, for stream 1 of an upgrade."""
    scheme = b"https" if request.isSecure() else b"http"
    host = request.requestHeaders.getRawHeaders(b"Host", [b""])[0]
    fields = [(b":method", request.method), (b":scheme", scheme), (b":authority", host),
              (b":path", request.uri)]
    for name, values in request.requestHeaders.getAllRawHeaders():
        name = name.lower()
        if name not in CONNECTION_HEADERS:
            fields += [(name, value) for value in values]
    return fields


def wants_h2c(request: Any) -> bytes | None:
    """The HTTP2-Settings of a request asking to upgrade to h2c, or None. Only a GET or
    HEAD (no body to carry over) in HTTP/1.1 over cleartext, with the header fields RFC
    7540 3.2 requires; anything else is answered in HTTP/1.1, as if Upgrade were absent."""
    if request.clientproto != b"HTTP/1.1" or request.method not in (b"GET", b"HEAD"):
        return None
    if request.isSecure():
        return None
    headers = request.requestHeaders
    upgrade = b",".join(headers.getRawHeaders(b"Upgrade", []))
    connection = b",".join(headers.getRawHeaders(b"Connection", []))
    settings = headers.getRawHeaders(b"HTTP2-Settings", [])
    if b"h2c" not in {token.strip().lower() for token in upgrade.split(b",")}:
        return None
    tokens = {token.strip().lower() for token in connection.split(b",")}
    if b"upgrade" not in tokens or b"http2-settings" not in tokens or len(settings) != 1:
        return None
    return settings[0].strip()


def take_over(channel: LabChannel, data: bytes = b"",
              upgrade: tuple[bytes, list[tuple[bytes, bytes]]] | None = None) -> None:
    """Hand `channel`'s transport to a new LabH2Connection (as Twisted's own ALPN switch in
    _GenericHTTPChannelProtocol does, without a proxy in front of every connection), then
    give it the bytes that arrived."""
    connection = LabH2Connection(channel, upgrade)
    transport: Any = channel.transport
    channel.setTimeout(None)
    producer = channel._networkProducer
    producer.unregisterProducer()
    if getattr(transport, "wrappedProtocol", None) is channel:  # TLS: the wrapper delivers
        transport.wrappedProtocol = connection
    else:  # TCP: the transport itself
        transport.protocol = connection
    channel.session.event("protocol", "h2" if channel.isSecure() else "h2c")
    connection.makeConnection(transport)
    producer.registerProducer(connection, True)
    if data:
        connection.dataReceived(data)


def upgrade(channel: LabChannel, request: Any, settings: bytes) -> None:
    """101 to h2c; the request goes on as stream 1 of the new connection."""
    transport: Any = channel.transport
    transport.write(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
    channel.session.reply("101 Switching Protocols")
    take_over(channel, upgrade=(settings, upgrade_headers(request)))
