"""Floods of QUIC Initials for the HTTP/3 hardening tests, made with aioquic's own client
connection so that each Initial is real (a ClientHello the lab can decrypt), from clients
that never finish their handshake.

Run by hand against a lab: python -m tests.http.quicflood PORT [COUNT] [--follow-retry]
"""

from __future__ import annotations

import select
import socket
import sys
import time
from dataclasses import dataclass, field

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicPacketType, pull_quic_header


@dataclass
class Replies:
    retries: int = 0  # Retry packets received
    handshakes: set[bytes] = field(default_factory=set)  # clients the lab answered with
    # its Initial (its ServerHello): each is a connection the lab created


def flood(port: int, count: int, follow_retry: bool = False, source: str = "127.0.0.1",
          host: str = "127.0.0.1") -> Replies:
    """`count` clients send their first Initial from one socket at `source`; with
    follow_retry they answer a Retry with its token (clients that prove their address and
    then go quiet), otherwise they never answer (as spoofed sources cannot)."""
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    clients: dict[bytes, QuicConnection] = {}
    replies = Replies()

    def answered(s: socket.socket, awaited: bytes, wait: float) -> None:
        """Replies, until one to `awaited` or `wait` seconds of quiet (the lab answers at
        once: this ends a wait, it is not a threshold anything judges)."""
        while select.select([s], [], [], wait)[0]:
            data, _ = s.recvfrom(65536)
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            if header.packet_type == QuicPacketType.RETRY:
                replies.retries += 1
                client = clients.get(header.destination_cid)
                if follow_retry and client is not None:
                    client.receive_datagram(data, (host, port), now=time.monotonic())
                    for out, _ in client.datagrams_to_send(now=time.monotonic()):
                        s.sendto(out, (host, port))
                    continue  # the next reply to this client is the one awaited
            elif header.packet_type == QuicPacketType.INITIAL:
                replies.handshakes.add(header.destination_cid)
            if header.destination_cid == awaited:
                break

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for _ in range(count):  # one at a time: a burst would overflow the lab's socket
            client = QuicConnection(configuration=config)
            client.connect((host, port), now=time.monotonic())
            clients[client.host_cid] = client
            for data, _ in client.datagrams_to_send(now=time.monotonic()):
                s.sendto(data, (host, port))
            answered(s, client.host_cid, 2.0)
        answered(s, b"", 0.2)
    return replies


if __name__ == "__main__":
    got = flood(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1000,
                "--follow-retry" in sys.argv)
    print(f"{got.retries} Retry packets, {len(got.handshakes)} handshakes begun "
          "(connections the lab made)")
