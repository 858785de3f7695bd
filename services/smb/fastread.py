"""A fast path for SMB2 READ, the one request a file transfer repeats thousands of times.

impacket answers each READ by parsing the request into Structure objects, packing the
response through three layers of them, and HMAC-ing the request it just received (for
nothing): about a millisecond per 64 KiB here. A plain READ of an open file is simple
enough to answer directly with struct and os.pread; anything else (compounded requests,
the "last created file" id, pipes, end of file, errors) still goes to impacket.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from typing import Any

HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")  # the 64-byte SMB2 sync header
READ_REQUEST = struct.Struct("<HBBIQ16sIIIHH")  # MS-SMB2 2.2.19, without its Buffer byte
READ_RESPONSE = struct.Struct("<HBBIII")  # MS-SMB2 2.2.20, the data follows at 0x50
SMB2_READ = 0x0008
SERVER_TO_REDIR, RELATED, SIGNED = 0x1, 0x4, 0x8
LAST_CREATED = b"\xff" * 16


def answer(conn: dict, data: bytes) -> tuple[bytes, bytes, int] | None:
    """(response, file id, bytes read) for a plain READ on `conn`, or None for impacket."""
    if len(data) < HEADER.size + READ_REQUEST.size or data[:4] != b"\xfeSMB":
        return None
    (_, _, charge, _, command, credits, flags, next_command, message_id, process_id,
     tree_id, _, _) = HEADER.unpack_from(data)
    if command != SMB2_READ or next_command or flags & RELATED:
        return None
    if not conn.get("Authenticated") or tree_id not in conn["ConnectedShares"]:
        return None
    _, _, _, length, offset, file_id, _, _, _, _, _ = READ_REQUEST.unpack_from(data, HEADER.size)
    opened = conn["OpenedFiles"].get(file_id)
    if file_id == LAST_CREATED or opened is None or opened["FileHandle"] < 0:
        return None
    try:
        content = os.pread(opened["FileHandle"], length, offset)
    except OSError:
        return None  # impacket turns it into the right status
    if not content:
        return None  # STATUS_END_OF_FILE: impacket's
    signed = bool(conn["SignatureEnabled"])
    header = HEADER.pack(b"\xfeSMB", 64, charge, 0, command, credits,
                         SERVER_TO_REDIR | (SIGNED if signed else 0), 0, message_id,
                         process_id, tree_id, conn["Uid"], b"\0" * 16)
    packet = header + READ_RESPONSE.pack(17, 0x50, 0, len(content), 0, 0) + content
    if signed:
        signature = hmac.new(conn["SigningSessionKey"], packet, hashlib.sha256).digest()[:16]
        packet = packet[:48] + signature + packet[64:]
    return packet, file_id, len(content)


def send(sock: Any, packet: bytes) -> None:
    """One NetBIOS session message (RFC 1002: type 0, 24-bit length), without copying."""
    sock.sendmsg([b"\x00" + len(packet).to_bytes(3, "big"), packet])
