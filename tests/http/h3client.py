"""A small HTTP/3 client on aioquic for the tests (no Debian client speaks HTTP/3 yet:
bookworm's curl is built without it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

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
