"""SMB over TCP framing (RFC 1002 session messages, MS-SMB2 2.1): one message in, one out.

impacket's NetBIOS reader takes any length the 24-bit header announces (16 MiB) and reads
it whole before anyone looks at it; here a message longer than anything the server
announced it would take (MaxWriteSize plus headers) ends the connection before its body
is read, as Windows does.

The socket is blocking with the kernel's own timeouts (SO_RCVTIMEO, SO_SNDTIMEO) rather
than Python's, which polls before every recv and send; and the messages are read through
a buffer, one recv for a small request and the next ones that came with it: a small-file
copy's four requests a file cost three system calls each otherwise.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

SESSION_MESSAGE, SESSION_REQUEST, POSITIVE_RESPONSE, KEEPALIVE = 0x00, 0x81, 0x82, 0x85


class TooLong(Exception):
    """A message longer than the server takes: the connection ends."""


BUFFER = 1 << 16  # bytes asked of each recv: a small request and what follows it


def blocking_with_timeout(sock: socket.socket, seconds: int) -> None:
    """`sock` blocking, its recv and send ending in TimeoutError after `seconds` of
    silence (or of a peer that takes nothing)."""
    sock.settimeout(None)
    timeval = struct.pack("@ll", seconds, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


class Reader:
    """The session messages of one connection, read through a buffer: what one recv
    brings beyond a message is the start of the next ones."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()  # what was read and not yet taken

    def _recv(self, size: int) -> bytes:
        try:
            chunk = self.sock.recv(size)
        except BlockingIOError as error:  # SO_RCVTIMEO ran out
            raise TimeoutError("no request in time") from error
        if not chunk:
            raise ConnectionResetError("peer closed the connection")
        return chunk

    def receive(self, limit: int) -> tuple[int, bytes]:
        """(type, payload) of the next message; raises OSError (timeout, closed) or
        TooLong (before reading its body)."""
        while len(self.buffer) < 4:
            self.buffer += self._recv(BUFFER)
        kind, length = self.buffer[0], int.from_bytes(self.buffer[1:4], "big")
        if length > limit:
            raise TooLong(f"a message of {length} bytes (at most {limit} taken)")
        end = 4 + length
        if len(self.buffer) >= end:
            payload = bytes(memoryview(self.buffer)[4:end])
            del self.buffer[:end]
            return kind, payload
        # the rest of a big message (a WRITE of 8 MiB) in parts joined once: one copy
        # after the kernel's, as a bytearray grown or zero-filled would not be
        parts, left = [bytes(memoryview(self.buffer)[4:])], end - len(self.buffer)
        self.buffer.clear()
        while left:
            parts.append(self._recv(min(left, 1 << 20)))
            left -= len(parts[-1])
        return kind, b"".join(parts)


def send(sock: Any, packet: bytes | bytearray) -> None:
    """One session message (type 0, 24-bit length), without copying the packet: a big one
    may go in parts (a send timeout, a signal), each the rest of the same buffer."""
    header = b"\x00" + len(packet).to_bytes(3, "big")
    try:
        sent = sock.sendmsg([header, packet])
        if sent < len(header):
            sock.sendall(header[sent:])
            sent = len(header)
        rest = memoryview(packet)[sent - len(header):]
        while rest:
            rest = rest[sock.send(rest):]
    except BlockingIOError as error:  # SO_SNDTIMEO ran out: the client takes nothing
        raise TimeoutError("the client takes no reply") from error


def positive_response(sock: Any) -> None:
    """The answer to a NetBIOS session request (port 139 style clients): granted."""
    sock.sendall(bytes([POSITIVE_RESPONSE, 0, 0, 0]))
