"""The SMB2 READ/WRITE fast path, without sockets: what it answers and what it leaves to
impacket (and the write past the end of file that impacket drops while saying success)."""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms

from services.smb import dialects, fastpath

FILE_ID = bytes(range(16))
SIGNER = dialects.Connection(signing_key=b"k" * 16)  # SMB 2.x: HMAC-SHA256


def header(command: int, tree: int = 7, flags: int = 0, next_command: int = 0) -> bytes:
    return fastpath.HEADER.pack(b"\xfeSMB", 64, 1, 0, command, 31, flags, next_command, 42,
                                0xFEFF, tree, 0, b"\0" * 16)


def read(file_id: bytes = FILE_ID, length: int = 5, offset: int = 2, **kwargs) -> bytes:
    body = fastpath.READ_REQUEST.pack(49, 0x50, 0, length, offset, file_id, 0, 0, 0, 0, 0)
    return header(kwargs.pop("command", fastpath.SMB2_READ), **kwargs) + body + b"\0"


def write(data: bytes, offset: int, file_id: bytes = FILE_ID, **kwargs) -> bytes:
    body = fastpath.WRITE_REQUEST.pack(49, 64 + 48, len(data), offset, file_id, 0, 0, 0, 0, 0)
    return header(fastpath.SMB2_WRITE, **kwargs) + body + data


def connection(tmp_path, signed: bool = False, read_only: bool = False) -> dict:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    return {"Authenticated": True, "Uid": 99, "SignatureEnabled": signed,
            "ConnectedShares": {7: {"read only": "yes" if read_only else "no"}},
            "OpenedFiles": {FILE_ID: {"FileHandle": fd, "LabTree": 7}}, "SigningSessionKey": b"k" * 16}


def test_a_plain_read_is_answered(tmp_path):
    packet, file_id, counter, count = fastpath.answer(connection(tmp_path), read(), SIGNER, 30)
    fields = fastpath.HEADER.unpack_from(packet)
    assert fields[4] == fastpath.SMB2_READ and fields[3] == 0  # command, STATUS_SUCCESS
    # fields[5]: the credits granted (30, as the engine says), not the 31 the request asked
    assert fields[5] == 30 and fields[8] == 42 and fields[10] == 7 and fields[11] == 99
    assert fastpath.READ_RESPONSE.unpack_from(packet, 64)[:4] == (17, 0x50, 0, 5)
    assert packet[0x50:] == b"23456" and file_id == FILE_ID
    assert (counter, count) == (fastpath.READ, 5)


def test_writes_land_where_asked_even_past_the_end(tmp_path):
    conn = connection(tmp_path)
    packet, _, counter, count = fastpath.answer(conn, write(b"ab", 3), SIGNER, 1)
    assert fastpath.WRITE_RESPONSE.unpack_from(packet, 64)[:3] == (17, 0, 2)
    assert (counter, count) == (fastpath.WRITTEN, 2)
    fastpath.answer(conn, write(b"END", 20), SIGNER, 1)  # impacket would drop this one
    assert (tmp_path / "f.bin").read_bytes() == b"012ab56789" + b"\0" * 10 + b"END"


def test_signed_replies_carry_the_hmac(tmp_path):
    packet, *_ = fastpath.answer(connection(tmp_path, signed=True), read(flags=fastpath.SIGNED), SIGNER, 1)
    assert fastpath.HEADER.unpack_from(packet)[6] & fastpath.SIGNED
    unsigned = packet[:48] + b"\0" * 16 + packet[64:]
    assert packet[48:64] == hmac.new(b"k" * 16, unsigned, hashlib.sha256).digest()[:16]


def test_smb3_replies_carry_the_aes_cmac(tmp_path):
    signer = dialects.Connection(dialect=dialects.SMB300, signer=dialects.AES_CMAC,
                                 signing_key=b"s" * 16)
    packet, *_ = fastpath.answer(connection(tmp_path, signed=True), read(flags=fastpath.SIGNED), signer, 1)
    mac = cmac.CMAC(algorithms.AES(b"s" * 16))
    mac.update(packet[:48] + b"\0" * 16 + packet[64:])
    assert packet[48:64] == mac.finalize()


def test_everything_else_goes_to_impacket(tmp_path):
    conn = connection(tmp_path)
    for data in (read(length=65537), read(offset=10), read(file_id=b"\xff" * 16), read(file_id=b"x" * 16),
                 read(tree=8), read(flags=fastpath.RELATED), read(next_command=128),
                 read(command=5), read()[:80], b"\xffSMB" + b"\0" * 200,
                 write(b"abc", 0)[:-1]):  # a WRITE shorter than it says
        assert fastpath.answer(conn, data, SIGNER, 1) is None
    assert fastpath.answer({**conn, "Authenticated": False}, read(), SIGNER, 1) is None
    assert fastpath.answer(connection(tmp_path, read_only=True), write(b"x", 0), SIGNER, 1) is None
    assert (tmp_path / "f.bin").read_bytes() == b"0123456789"
