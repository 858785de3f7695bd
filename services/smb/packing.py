"""SMB2 CREATE and CLOSE packed with struct, for the requests a small-file copy repeats
(CREATE, QUERY_INFO, READ, CLOSE for every file). Sans-IO but for the stat results given.

impacket parses a CREATE request through Structure twice (the lab's hook, then its own
handler) and packs CREATE and CLOSE responses through Structure objects with eval'd
length fields: about 0.2 ms each here, most of a small file's time. These classes keep
the Structure interface the engine's hooks use (item access by impacket's field names,
`.fields`, `getData()`), so an answer built here and one built by impacket go through the
same hooks and the same reply path.
"""

from __future__ import annotations

import os
import stat
import struct
from typing import Any

from .listing import ATTRIBUTE_ARCHIVE, ATTRIBUTE_DIRECTORY, filetime

# MS-SMB2 2.2.13: StructureSize .. CreateContextsLength (56 bytes), then the Buffer
CREATE_REQUEST = struct.Struct("<HBBIQQIIIIIHHII")
CREATE_REQUEST_FIELDS = ("StructureSize", "SecurityFlags", "RequestedOplockLevel",
                         "ImpersonationLevel", "SmbCreateFlags", "Reserved", "DesiredAccess",
                         "FileAttributes", "ShareAccess", "CreateDisposition", "CreateOptions",
                         "NameOffset", "NameLength", "CreateContextsOffset",
                         "CreateContextsLength")
# MS-SMB2 2.2.14: StructureSize .. CreateContextsLength (88 bytes), then the Buffer
CREATE_RESPONSE = struct.Struct("<HBBIqqqqqqII16sII")
CREATE_RESPONSE_AT = 64 + CREATE_RESPONSE.size  # where its Buffer starts in the message
# MS-SMB2 2.2.15 (24 bytes) and 2.2.16 (60 bytes)
CLOSE_REQUEST = struct.Struct("<HHI16s")
CLOSE_RESPONSE = struct.Struct("<HHIqqqqqqI")
OUTPUT_RESPONSE = struct.Struct("<HHI")  # MS-SMB2 2.2.38 and 2.2.34, the buffer follows
POSTQUERY_ATTRIB = 0x0001  # SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB
CLOSE_ATTRIBUTES = ("CreationTime", "LastAccessTime", "LastWriteTime", "ChangeTime",
                    "AllocationSize", "EndOfFile", "FileAttributes")

FILE_OPEN = 1  # CreateDisposition: open what is there, fail otherwise
FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE = 0x01, 0x40
FILE_READ_DATA, FILE_WRITE_DATA = 0x01, 0x02
GENERIC_ALL, GENERIC_WRITE, GENERIC_READ = 0x10000000, 0x40000000, 0x80000000


class Malformed(ValueError):
    """A request too short for its fixed part or its name: STATUS_INVALID_PARAMETER."""


class CreateRequest:
    """A CREATE request's fields by impacket's names (SMB2Create): "AlignPad" is what lies
    between the fixed part and NameOffset, "Buffer" all after it (the name, then any create
    contexts), as there."""

    def __init__(self, body: bytes) -> None:
        if len(body) < CREATE_REQUEST.size:
            raise Malformed("a CREATE shorter than its fixed part")
        self.fields: dict[str, Any] = dict(zip(CREATE_REQUEST_FIELDS,
                                               CREATE_REQUEST.unpack_from(body), strict=True))
        name_at = max(CREATE_REQUEST.size, self.fields["NameOffset"] - 64)
        self.fields["AlignPad"], self.fields["Buffer"] = body[CREATE_REQUEST.size:name_at], body[name_at:]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.fields[name] = value

    def with_name(self, name: str) -> bytes:
        """The body again with `name` as its file name, and no create contexts (impacket's
        handler reads none)."""
        encoded = name.encode("utf-16le")
        values = {**self.fields, "NameOffset": 64 + CREATE_REQUEST.size,
                  "NameLength": len(encoded), "CreateContextsOffset": 0, "CreateContextsLength": 0}
        return CREATE_REQUEST.pack(*(values[f] for f in CREATE_REQUEST_FIELDS)) + (encoded or b"\0")


class _Packed:
    """A response body by impacket's field names, packed by `pack` (Structure's interface:
    item access, .fields, getData)."""

    def __init__(self, **fields: Any) -> None:
        self.fields: dict[str, Any] = fields

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.fields[name] = value

    def getData(self) -> bytes:  # (impacket's name)
        raise NotImplementedError


class CreateResponse(_Packed):
    """MS-SMB2 2.2.14. impacket's handler leaves the change time in "LastChangeTime" (a
    field its structure lacks), which the engine's hook moves to ChangeTime: kept so here."""

    def getData(self) -> bytes:
        f = self.fields
        contexts = f.get("Buffer", b"")
        return CREATE_RESPONSE.pack(
            89, f.get("OplockLevel", 0), f.get("Flags", 0), f["CreateAction"], f["CreationTime"],
            f["LastAccessTime"], f["LastWriteTime"], f["ChangeTime"], f["AllocationSize"],
            f["EndOfFile"], f["FileAttributes"], 0, f["FileID"],
            f.get("CreateContextsOffset", 0), f.get("CreateContextsLength", 0)) + (contexts or b"\0")


class CloseResponse(_Packed):
    """MS-SMB2 2.2.16: the attributes only when the request asked (POSTQUERY_ATTRIB), else
    all zero (impacket filled them always, with Flags 0)."""

    def getData(self) -> bytes:
        f = self.fields
        if not f["Flags"] & POSTQUERY_ATTRIB:
            return CLOSE_RESPONSE.pack(60, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return CLOSE_RESPONSE.pack(60, POSTQUERY_ATTRIB, 0, f["CreationTime"], f["LastAccessTime"],
                                   f["LastWriteTime"], f["ChangeTime"], f["AllocationSize"],
                                   f["EndOfFile"], f["FileAttributes"])


class Body(_Packed):
    """A body packed already (QUERY_INFO's)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self.data = data

    def getData(self) -> bytes:
        return self.data


def attributes(status: os.stat_result) -> dict[str, int]:
    """The times, sizes and attributes of a CREATE or CLOSE response, as the listing and
    QUERY_INFO answer them (services.smb.fileinfo): created = ctime, changed = mtime,
    ARCHIVE for a file (NORMAL is valid only alone), sizes 0 for a directory."""
    directory = stat.S_ISDIR(status.st_mode)
    written = filetime(status.st_mtime_ns)
    return {"CreationTime": filetime(status.st_ctime_ns),
            "LastAccessTime": filetime(status.st_atime_ns), "LastWriteTime": written,
            "ChangeTime": written, "AllocationSize": 0 if directory else status.st_blocks * 512,
            "EndOfFile": 0 if directory else status.st_size,
            "FileAttributes": ATTRIBUTE_DIRECTORY if directory else ATTRIBUTE_ARCHIVE}


def open_mode(desired_access: int, read_only: bool) -> int:
    """The os.open flags impacket's CREATE takes for a DesiredAccess (bit for bit, so an
    open here fails or succeeds where impacket's would)."""
    if read_only:
        return os.O_RDONLY
    mode = 0
    reads = desired_access & (FILE_READ_DATA | GENERIC_READ)
    if desired_access & (FILE_WRITE_DATA | GENERIC_WRITE):
        mode |= os.O_RDWR if reads else os.O_WRONLY
    if desired_access & GENERIC_ALL:
        mode |= os.O_RDWR
    return mode


def plain_open(request: CreateRequest, status: os.stat_result) -> bool:
    """Whether a CREATE is a plain open of what `status` describes: FILE_OPEN, and a
    directory asked as one (or as either), a file not asked as a directory. The rest
    (creating, overwriting, STATUS_FILE_IS_A_DIRECTORY, ...) stays impacket's."""
    options = request["CreateOptions"]
    if request["CreateDisposition"] != FILE_OPEN:
        return False
    if stat.S_ISDIR(status.st_mode):
        return not options & FILE_NON_DIRECTORY_FILE
    return stat.S_ISREG(status.st_mode) and not options & FILE_DIRECTORY_FILE


def output_response(data: bytes) -> Body:
    """A QUERY_INFO or QUERY_DIRECTORY response (MS-SMB2 2.2.38, 2.2.34: the same layout):
    the output buffer right after the 8-byte body (offset 0x48)."""
    return Body(OUTPUT_RESPONSE.pack(9, 0x48, len(data)) + data)
