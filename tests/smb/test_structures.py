"""services.smb.structures: impacket's Structure with its field lookups remembered per
class gives the very same answers and bytes as impacket's scans."""

from __future__ import annotations

import inspect
import os

from impacket import smb3structs as smb2
from impacket.structure import Structure

from services.smb import fastpath, structures


def scanned(kind: type, method: str, name: str) -> str | None:
    """What impacket's own scan says (the function remember_field_lookups wrapped)."""
    descriptor = ("&" if method == "address" else "-") + name
    for field in kind.commonHdr + kind.structure:
        if field[1].endswith(descriptor):
            return field[0]
    return None


def test_remembered_lookups_answer_as_the_scan_for_every_smb2_structure():
    structures.remember_field_lookups()
    structures.remember_field_lookups()  # twice: installed once
    assert getattr(Structure.findAddressFieldFor, "remembered", False)
    kinds = [kind for _, kind in inspect.getmembers(smb2, inspect.isclass)
             if issubclass(kind, Structure) and kind.structure]
    assert len(kinds) > 50
    for kind in kinds:
        instance = kind.__new__(kind)
        for field in kind.commonHdr + kind.structure:
            for _ in range(2):  # the first asks the scan, the second the memory
                assert instance.findAddressFieldFor(field[0]) == scanned(kind, "address", field[0])
                assert instance.findLengthFieldFor(field[0]) == scanned(kind, "length", field[0])


def test_an_instance_with_its_own_field_list_is_scanned():
    structures.remember_field_lookups()

    class Shifting(Structure):
        structure = (("Length", "<H-Name"), ("Name", ":"))

    shifting = Shifting()
    assert shifting.findLengthFieldFor("Name") == "Length"
    shifting.structure = (("Size", "<H-Name"), ("Name", ":"))
    assert shifting.findLengthFieldFor("Name") == "Size"


def test_packet_is_what_impacket_parses():
    data = fastpath.HEADER.pack(b"\xfeSMB", 64, 3, 0, 5, 10, 0x8, 0, 42, 0xFEFF, 7, 99,
                                os.urandom(16)) + os.urandom(57)
    made, parsed = structures.packet(data), smb2.SMB2Packet(data=data)
    assert made.fields == parsed.fields
    assert made.getData() == parsed.getData() == data
    create = smb2.SMB2Create(made["Data"])  # what a handler does with it
    assert create.getData() == smb2.SMB2Create(parsed["Data"]).getData()
