"""A fast path for SMB2 READ and WRITE, the requests a file transfer repeats thousands of
times.

impacket answers each by parsing the request into Structure objects, packing the response
through three layers of them, and HMAC-ing the request it just received (for nothing):
about a millisecond per 64 KiB here. Its WRITE also drops, while answering success, any
write that starts past the current end of the file (data loss for clients that write out
of order). A plain READ or WRITE on an open file is simple enough to answer directly with
struct and os.pread/os.pwrite; anything else (compounded requests, the "last created
file" id, pipes, read-only trees, a file id of another tree, lengths over what NEGOTIATE
announced, end of file, errors) still goes to impacket, behind the lab's rules.
"""

from __future__ import annotations

import os
import struct
from typing import Any

HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")  # the 64-byte SMB2 sync header
READ_REQUEST = struct.Struct("<HBBIQ16sIIIHH")  # MS-SMB2 2.2.19, without its Buffer byte
READ_RESPONSE = struct.Struct("<HBBIII")  # MS-SMB2 2.2.20, the data follows at 0x50
WRITE_REQUEST = struct.Struct("<HHIQ16sIIHHI")  # MS-SMB2 2.2.21, data at DataOffset
WRITE_RESPONSE = struct.Struct("<HHIIHH")  # MS-SMB2 2.2.22
SMB2_READ, SMB2_WRITE = 0x0008, 0x0009
SERVER_TO_REDIR, RELATED, SIGNED = 0x1, 0x4, 0x8
READ, WRITTEN = 0, 1  # which counter a transfer adds to
READ_AT = HEADER.size + READ_RESPONSE.size  # where a READ response's data starts (0x50)


def answer(conn: dict, data: bytes, signer: Any, credit: int) -> tuple[bytearray, bytes, int, int] | None:
    """(response, file id, READ or WRITTEN, bytes) for a plain READ/WRITE, or None;
    `signer` (a services.smb.dialects.Connection) signs it as the dialect does and says
    the largest READ/WRITE the connection takes; `credit`: the credits the reply grants."""
    if len(data) < HEADER.size + READ_REQUEST.size or data[:4] != b"\xfeSMB":
        return None
    fields = HEADER.unpack_from(data)
    command, flags, next_command, tree_id = fields[4], fields[6], fields[7], fields[10]
    if command not in (SMB2_READ, SMB2_WRITE) or next_command or flags & RELATED:
        return None
    tree = conn["ConnectedShares"].get(tree_id) if conn.get("Authenticated") else None
    if tree is None:
        return None
    if command == SMB2_READ:
        _, _, _, length, offset, file_id, *_ = READ_REQUEST.unpack_from(data, HEADER.size)
        if length > signer.max_io:
            return None
    else:
        _, at, length, offset, file_id, *_ = WRITE_REQUEST.unpack_from(data, HEADER.size)
        if tree.get("read only") == "yes" or at + length > len(data) or length > signer.max_io:
            return None
    opened = conn["OpenedFiles"].get(file_id)
    if opened is None or opened["FileHandle"] < 0 or opened.get("LabTree") != tree_id:
        return None
    try:
        if command == SMB2_READ:
            # The file's bytes go straight into the reply, after its headers: one copy
            # from the kernel, none after (a READ of 8 MiB copied thrice cost half the time)
            packet = bytearray(READ_AT + length)
            got = os.preadv(opened["FileHandle"], [memoryview(packet)[READ_AT:]], offset)
            if not got:
                return None  # STATUS_END_OF_FILE: impacket's
            if got < length:
                del packet[READ_AT + got:]
            READ_RESPONSE.pack_into(packet, HEADER.size, 17, READ_AT, 0, got, 0, 0)
            return _reply(conn, fields, packet, signer, credit), file_id, READ, got
        write_all(opened["FileHandle"], memoryview(data)[at:at + length], offset)
    except OSError:
        return None  # the engine answers it again, with the right status
    packet = bytearray(HEADER.size + WRITE_RESPONSE.size)
    WRITE_RESPONSE.pack_into(packet, HEADER.size, 17, 0, length, 0, 0, 0)
    return _reply(conn, fields, packet, signer, credit), file_id, WRITTEN, length


def write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _reply(conn: dict, request: tuple, packet: bytearray, signer: Any, credits: int) -> bytearray:
    """`packet` (its body in place after 64 bytes) with the response header for `request`
    (ids echoed), signed as the session signs (dialects.Connection.signs)."""
    _, _, charge, _, command, _, flags, _, message_id, process_id, tree_id, _, _ = request
    signed = bool(conn["SignatureEnabled"]) and signer.signs(flags, command)
    HEADER.pack_into(packet, 0, b"\xfeSMB", 64, charge, 0, command, credits,
                     SERVER_TO_REDIR | (SIGNED if signed else 0), 0, message_id,
                     process_id, tree_id, conn["Uid"], b"\0" * 16)
    if signed:
        packet[48:64] = signer.signature(packet)
    return packet
