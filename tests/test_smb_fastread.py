"""The SMB2 READ fast path, without sockets: what it answers and what it leaves to impacket."""

from __future__ import annotations

import hashlib
import hmac
import os

from services.smb import fastread

FILE_ID = bytes(range(16))


def request(file_id: bytes = FILE_ID, length: int = 5, offset: int = 2, tree: int = 7,
            flags: int = 0, next_command: int = 0, command: int = fastread.SMB2_READ) -> bytes:
    header = fastread.HEADER.pack(b"\xfeSMB", 64, 1, 0, command, 31, flags, next_command, 42,
                                  0xFEFF, tree, 0, b"\0" * 16)
    body = fastread.READ_REQUEST.pack(49, 0x50, 0, length, offset, file_id, 0, 0, 0, 0, 0)
    return header + body + b"\0"


def connection(tmp_path, signed: bool = False) -> dict:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    return {"Authenticated": True, "ConnectedShares": {7: {}}, "Uid": 99,
            "OpenedFiles": {FILE_ID: {"FileHandle": fd}}, "SignatureEnabled": signed,
            "SigningSessionKey": b"k" * 16}


def test_a_plain_read_is_answered(tmp_path):
    packet, file_id, count = fastread.answer(connection(tmp_path), request())
    fields = fastread.HEADER.unpack_from(packet)
    assert fields[4] == fastread.SMB2_READ and fields[3] == 0  # command, STATUS_SUCCESS
    assert fields[5] == 31 and fields[8] == 42 and fields[10] == 7 and fields[11] == 99
    assert fastread.READ_RESPONSE.unpack_from(packet, 64)[:4] == (17, 0x50, 0, 5)
    assert packet[0x50:] == b"23456" and file_id == FILE_ID and count == 5


def test_signed_reads_carry_the_hmac(tmp_path):
    packet, _, _ = fastread.answer(connection(tmp_path, signed=True), request())
    flags = fastread.HEADER.unpack_from(packet)[6]
    assert flags & fastread.SIGNED
    unsigned = packet[:48] + b"\0" * 16 + packet[64:]
    assert packet[48:64] == hmac.new(b"k" * 16, unsigned, hashlib.sha256).digest()[:16]


def test_everything_else_goes_to_impacket(tmp_path):
    conn = connection(tmp_path)
    for data in (request(offset=10), request(file_id=b"\xff" * 16), request(file_id=b"x" * 16),
                 request(tree=8), request(flags=fastread.RELATED), request(next_command=128),
                 request(command=9), request()[:80], b"\xffSMB" + b"\0" * 200):
        assert fastread.answer(conn, data) is None
    assert fastread.answer({**conn, "Authenticated": False}, request()) is None
