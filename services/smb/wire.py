"""SMB over TCP framing (RFC 1002 session messages, MS-SMB2 2.1): one message in, one out.

impacket's NetBIOS reader takes any length the 24-bit header announces (16 MiB) and reads
it whole before anyone looks at it; here a message longer than anything the server
announced it would take (MaxWriteSize plus headers) ends the connection before its body
is read, as Windows does.
"""

from __future__ import annotations

import socket
from typing import Any

SESSION_MESSAGE, SESSION_REQUEST, POSITIVE_RESPONSE, KEEPALIVE = 0x00, 0x81, 0x82, 0x85


class TooLong(Exception):
    """A message longer than the server takes: the connection ends."""


def _exactly(sock: socket.socket, count: int) -> bytes:
    parts, left = [], count
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionResetError("peer closed the connection")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def receive(sock: socket.socket, limit: int) -> tuple[int, bytes]:
    """(type, payload) of the next message; raises OSError (timeout, closed) or TooLong."""
    header = _exactly(sock, 4)
    kind, length = header[0], int.from_bytes(header[1:], "big")
    if length > limit:
        raise TooLong(f"a message of {length} bytes (at most {limit} taken)")
    return kind, _exactly(sock, length)


def send(sock: Any, packet: bytes | bytearray) -> None:
    """One session message (type 0, 24-bit length), without copying the packet: a socket
    with a timeout sends a big one in parts, each the rest of the same buffer."""
    header = b"\x00" + len(packet).to_bytes(3, "big")
    sent = sock.sendmsg([header, packet])
    if sent < len(header):
        sock.sendall(header[sent:])
        sent = len(header)
    rest = memoryview(packet)[sent - len(header):]
    while rest:
        rest = rest[sock.send(rest):]


def positive_response(sock: Any) -> None:
    """The answer to a NetBIOS session request (port 139 style clients): granted."""
    sock.sendall(bytes([POSITIVE_RESPONSE, 0, 0, 0]))
