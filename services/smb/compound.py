"""The messages of an SMB2 compound chain (MS-SMB2 3.2.4.1.4, 3.3.5.2.7). Sans-IO.

Each message of a chain is signed on its own (its bytes up to the next one's start) and
consumes its own MessageIds, so the signing and credit checks look at them one by one.
"""

from __future__ import annotations

import struct

HEADER_SIZE = 64
MAGIC = b"\xfeSMB"


class Malformed(Exception):
    """A chain whose NextCommand points nowhere: the connection ends."""


def split(data: bytes | bytearray | memoryview) -> list[tuple[int, int]]:
    """(start, end) of each message of the chain in `data`; Malformed if a NextCommand is
    not 8-aligned, too short to hold a header or past the end (MS-SMB2 3.3.5.2.7)."""
    spans, start = [], 0
    while True:
        if len(data) - start < HEADER_SIZE or bytes(data[start:start + 4]) != MAGIC:
            raise Malformed("a compound message without an SMB2 header")
        following = struct.unpack_from("<I", data, start + 20)[0]
        if not following:
            spans.append((start, len(data)))
            return spans
        if following % 8 or following < HEADER_SIZE or start + following > len(data):
            raise Malformed(f"a compound NextCommand of {following} at {start}")
        spans.append((start, start + following))
        start += following


def join(messages: list[bytes]) -> bytes:
    """Replies as one compound: each padded to 8 bytes, NextCommand set but on the last."""
    out = bytearray()
    for index, message in enumerate(messages):
        packet = bytearray(message)
        if index + 1 < len(messages):
            packet += b"\0" * (-len(packet) % 8)
            struct.pack_into("<I", packet, 20, len(packet))
        out += packet
    return bytes(out)
