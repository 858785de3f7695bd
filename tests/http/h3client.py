"""A small HTTP/3 client on aioquic for the tests (no Debian client speaks HTTP/3 yet:
bookworm's curl is built without it)."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent

Response = tuple[int, dict[str, str], bytes]


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.waiting: dict[int, asyncio.Future] = {}
        self.heads: dict[int, list[tuple[bytes, bytes]]] = {}
        self.bodies: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self.heads.setdefault(h3_event.stream_id, []).extend(h3_event.headers)
            elif isinstance(h3_event, DataReceived):
                self.bodies.setdefault(h3_event.stream_id, bytearray()).extend(h3_event.data)
            else:
                continue
            if h3_event.stream_ended and h3_event.stream_id in self.waiting:
                self.waiting.pop(h3_event.stream_id).set_result(None)

    async def request(self, path: str, method: str = "GET",
                      headers: dict[str, str] | None = None, body: bytes = b"") -> Response:
        stream = self._quic.get_next_available_stream_id()
        fields = [(b":method", method.encode()), (b":scheme", b"https"),
                  (b":authority", b"localhost"), (b":path", path.encode()),
                  *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
        if body:
            fields.append((b"content-length", b"%d" % len(body)))
        self.h3.send_headers(stream, fields, end_stream=not body)
        if body:
            self.h3.send_data(stream, body, end_stream=True)
        done = self.waiting[stream] = asyncio.get_running_loop().create_future()
        self.transmit()
        await asyncio.wait_for(done, 30)
        head = {k.decode(): v.decode() for k, v in self.heads.pop(stream)}
        return int(head.pop(":status")), head, bytes(self.bodies.pop(stream, b""))


def fetch(port: int, ca: Path, requests: list[dict], keylog: Path | None = None) -> list[Response]:
    """Each request (path, method, headers, body) in turn on one QUIC connection."""

    async def run() -> list[Response]:
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
        config.load_verify_locations(str(ca))
        if keylog is not None:
            config.secrets_log_file = open(keylog, "a")  # closed below
        try:
            async with connect("127.0.0.1", port, configuration=config,
                               create_protocol=Client) as client:
                return [await client.request(**r) for r in requests]  # type: ignore[attr-defined]
        finally:
            if config.secrets_log_file is not None:
                config.secrets_log_file.close()

    return asyncio.run(run())



def session(port: int, ca: Path, source: str = "127.0.0.1", token: bytes = b"",
            act: Callable[[QuicConnection, H3Connection], None] | None = None,
            read_on: bool = False) -> list[QuicEvent]:
    """A sans-IO aioquic client from `source` (aioquic's asyncio client cannot choose its
    address), with `token` in its Initial if given; follows a Retry, as any client. Its
    events until the handshake completes; then act(its QuicConnection, an H3Connection
    on it) sends what it likes, and with read_on the client reads on until the connection
    ends, without it stops reading at once (a client that never acknowledges)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost",
                               token=token)
    config.load_verify_locations(str(ca))
    client = QuicConnection(configuration=config)
    h3: H3Connection | None = None
    events: list[QuicEvent] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        client.connect(("127.0.0.1", port), now=time.monotonic())
        deadline = time.monotonic() + 60  # a hung lab fails the test; nothing is judged by it
        while time.monotonic() < deadline:
            for data, address in client.datagrams_to_send(now=time.monotonic()):
                s.sendto(data, address)
            timer = client.get_timer()
            wait = 1.0 if timer is None else max(0.0, min(1.0, timer - time.monotonic()))
            if select.select([s], [], [], wait)[0]:
                data, address = s.recvfrom(65536)
                client.receive_datagram(data, address, now=time.monotonic())
            elif timer is not None and timer <= time.monotonic():
                client.handle_timer(now=time.monotonic())
            while (event := client.next_event()) is not None:
                events.append(event)
                if h3 is not None:
                    h3.handle_event(event)
                if isinstance(event, ConnectionTerminated):
                    return events
                if isinstance(event, HandshakeCompleted):
                    h3 = H3Connection(client)
                    if act is not None:
                        act(client, h3)
                    if not read_on:
                        for data, address in client.datagrams_to_send(now=time.monotonic()):
                            s.sendto(data, address)
                        return events
    raise TimeoutError("the QUIC connection did not end in 60 s")
