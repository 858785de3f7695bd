"""Which dialect a NEGOTIATE can have: SMB 2.0.2 (impacket 0.13.1's only SMB2 dialect), or
a refusal in the words Windows uses, instead of impacket's answers.

impacket answers an SMB2 NEGOTIATE with 2.0.2 whatever the client offered, and an SMB1
NEGOTIATE without an SMB2 dialect string with a traceback on stderr and its SMB1 code
(whose login checks no password). Here:
- SMB2 NEGOTIATE without 0x0202: STATUS_NOT_SUPPORTED (MS-SMB2 3.3.5.4, no common
  dialect); malformed (no dialects, counts past the end): STATUS_INVALID_PARAMETER.
- SMB1 NEGOTIATE without "SMB 2.002" or "SMB 2.???": an SMB1 NEGOTIATE response with
  DialectIndex 0xFFFF (MS-CIFS 2.2.4.52.2: none of the dialects), then the connection ends.
"""

from __future__ import annotations

import struct

from impacket import smb

SMB2_DIALECT_202 = 0x0202
SMB2_DIALECT_STRINGS = (b"SMB 2.002\x00", b"SMB 2.???\x00")
NEGOTIATE_REQUEST = struct.Struct("<HHHHI16sQ")  # MS-SMB2 2.2.3, dialects follow
SMB1_HEADER = struct.Struct("<4sBIBHH8sHHHHH")  # MS-CIFS 2.2.3.1, 32 bytes
SMB1_NEGOTIATE = 0x72
SMB1_FLAGS_REPLY, SMB1_FLAGS2_NT_STATUS = 0x80, 0x4000


def smb2_dialects(body: bytes) -> list[int] | None:
    """The dialects an SMB2 NEGOTIATE request's body offers, or None if malformed."""
    if len(body) < NEGOTIATE_REQUEST.size:
        return None
    size, count, *_ = NEGOTIATE_REQUEST.unpack_from(body)
    if size != 36 or count == 0 or NEGOTIATE_REQUEST.size + 2 * count > len(body):
        return None
    return list(struct.unpack_from(f"<{count}H", body, NEGOTIATE_REQUEST.size))


def smb1_offers_smb2(data: bytes) -> bool:
    """Whether an SMB1 NEGOTIATE lists an SMB2 dialect, read as impacket reads it (so that
    impacket's own check, which raises otherwise, always passes)."""
    try:
        packet = smb.NewSMBPacket(data=data)
        if packet["Command"] != SMB1_NEGOTIATE:
            return False
        dialects = smb.SMBCommand(packet["Data"][0])["Data"].split(b"\x02")
    except Exception:  # impacket's parser fails in many ways on a malformed packet
        return False
    return any(d in dialects for d in SMB2_DIALECT_STRINGS)


def smb1_no_common_dialect(data: bytes) -> bytes:
    """An SMB1 NEGOTIATE response choosing none of the dialects (DialectIndex 0xFFFF)."""
    fields = SMB1_HEADER.unpack_from(data.ljust(SMB1_HEADER.size, b"\0"))
    tid, pid, uid, mid = fields[8], fields[9], fields[10], fields[11]
    header = SMB1_HEADER.pack(b"\xffSMB", SMB1_NEGOTIATE, 0, SMB1_FLAGS_REPLY,
                              SMB1_FLAGS2_NT_STATUS, 0, b"\0" * 8, 0, tid, pid, uid, mid)
    return header + struct.pack("<BHH", 1, 0xFFFF, 0)  # WordCount 1, DialectIndex, ByteCount 0
