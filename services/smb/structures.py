"""impacket's Structure, made affordable per request.

Every impacket Structure parse or pack asks, for each field, which other field holds its
address or length (findAddressFieldFor, findLengthFieldFor), by scanning all the fields'
format strings: quadratic in the fields, about 55 scans for an SMB2 header alone, 0.3 ms
a header here and two thirds of the time a small-file request took. The answer depends
only on the class's field list, so it is remembered per class (instances that replace
their field list keep the scan). SMB2 headers the engine builds for impacket's handlers
are filled from one struct unpack instead of a parse (packet).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from impacket import smb3structs as smb2
from impacket.structure import Structure

from .fastpath import HEADER

ERROR_DATA = ("ErrorData", '"\xff')  # impacket's SMB2Error's last field
HEADER_FIELDS = ("ProtocolID", "StructureSize", "CreditCharge", "Status", "Command",
                 "CreditRequestResponse", "Flags", "NextCommand", "MessageID", "Reserved",
                 "TreeID", "SessionID", "Signature")  # smb2.SMB2Packet's, in HEADER's order


def _remembered(scan: Callable[[Any, str], str | None]) -> Callable[[Any, str], str | None]:
    found: dict[tuple[type, str], str | None] = {}  # bounded: impacket's classes x fields

    def lookup(self: Any, name: str) -> str | None:
        kind = type(self)
        if self.structure is not kind.structure or self.commonHdr is not kind.commonHdr:
            return scan(self, name)  # a field list of its own (ese, dpapi)
        key = (kind, name)
        if key not in found:
            found[key] = scan(self, name)
        return found[key]

    lookup.remembered = True  # type: ignore[attr-defined]
    return lookup


def remember_field_lookups() -> None:
    """Install the remembered lookups (once: the engine's import calls it), and the ERROR
    response's one byte of ErrorData as zero (MS-SMB2 2.2.2 says SHOULD; impacket: 0xFF)."""
    if smb2.SMB2Error.structure[-1] == ERROR_DATA:
        smb2.SMB2Error.structure = (*smb2.SMB2Error.structure[:-1], ("ErrorData", '"\x00'))
    if not getattr(Structure.findAddressFieldFor, "remembered", False):
        Structure.findAddressFieldFor = _remembered(Structure.findAddressFieldFor)
        Structure.findLengthFieldFor = _remembered(Structure.findLengthFieldFor)


def packet(data: bytes) -> smb2.SMB2Packet:
    """An SMB2Packet of one message (`data`, no chain), as SMB2Packet(data) parses it."""
    made = smb2.SMB2Packet()
    made.fields.update(zip(HEADER_FIELDS, HEADER.unpack_from(data), strict=True))
    made["ProtocolID"] = data[:4].decode("latin-1")  # (a literal: impacket keeps it as str)
    made["Data"] = data[HEADER.size:]
    made.rawData = data
    return made
