"""SMB2 QUERY_DIRECTORY (MS-SMB2 3.3.5.18, entries as MS-FSCC 2.4): a directory listed
once per enumeration and answered in chunks as the client asks.

impacket 0.13.1 lists, stats and packs the whole directory into Structure objects for
every QUERY_DIRECTORY, then sends the part after the enumeration's position, appending
entry by entry to one bytes object: a directory of 20,000 files takes about 40 requests
of 20,000 entries each (quadratic, tens of seconds holding the GIL, so the reactor and
every other client wait). Here the names are read once when an enumeration starts (or
restarts); each response stats and packs only the entries it carries, at most
CHUNK_LIMIT bytes of them whatever OutputBufferLength allows, and the client asks again
until STATUS_NO_MORE_FILES.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import struct
from dataclasses import dataclass

# FileInformationClass values (MS-FSCC 2.4) and each one's fixed part before FileName
DIRECTORY, FULL, BOTH, NAMES, ID_BOTH, ID_FULL = 0x01, 0x02, 0x03, 0x0C, 0x25, 0x26
COMMON = struct.Struct("<IIqqqqqqII")  # NextEntryOffset ... FileNameLength (64 bytes)
NAMES_ENTRY = struct.Struct("<III")  # NextEntryOffset, FileIndex, FileNameLength
TAILS = {DIRECTORY: struct.Struct("<"), FULL: struct.Struct("<I"),  # EaSize
         BOTH: struct.Struct("<IBB24s"),  # EaSize, ShortNameLength, Reserved1, ShortName
         ID_BOTH: struct.Struct("<IBB24sHQ"),  # ... Reserved2, FileId
         ID_FULL: struct.Struct("<IIQ")}  # EaSize, Reserved, FileId
CLASSES = {*TAILS, NAMES}
RESTART_SCANS, RETURN_SINGLE_ENTRY, INDEX_SPECIFIED, REOPEN = 0x01, 0x02, 0x04, 0x10
CHUNK_LIMIT = 256 * 1024  # bytes of entries in one response: bounded work per request
MAX_NAMES = 100_000  # names an enumeration keeps (a few MB): beyond, not listed (journaled)
ATTRIBUTE_DIRECTORY, ATTRIBUTE_ARCHIVE = 0x10, 0x20
EPOCH_AS_FILETIME = 116444736000000000  # 1970-01-01 in 100 ns units since 1601


@dataclass
class Enumeration:
    """An open directory's enumeration (Open.EnumerationLocation/SearchPattern)."""

    pattern: str
    names: list[str]
    position: int = 0


def matching(names: list[str], pattern: str) -> list[str]:
    """The names a search pattern matches, case-insensitively, "." and ".." first for
    "*" as Windows and smbd list them (smbclient shows them; an empty directory is not an
    error then)."""
    if pattern in ("", "*"):
        return [".", "..", *names]
    if not any(wild in pattern for wild in "*?"):
        lowered = pattern.lower()
        return [name for name in names if name.lower() == lowered]
    folded = pattern.lower()
    return [name for name in names if fnmatch.fnmatchcase(name.lower(), folded)]


def filetime(nanoseconds: int) -> int:
    return EPOCH_AS_FILETIME + nanoseconds // 100


def entry(info_class: int, name: str, status: os.stat_result) -> bytes:
    """One entry of `info_class` (NextEntryOffset 0), unpadded."""
    encoded = name.encode("utf-16le", "surrogatepass")
    if info_class == NAMES:
        return NAMES_ENTRY.pack(0, 0, len(encoded)) + encoded
    directory = stat.S_ISDIR(status.st_mode)
    size = 0 if directory else status.st_size
    written, changed = filetime(status.st_mtime_ns), filetime(status.st_ctime_ns)
    # as impacket's CREATE and QUERY_INFO answer: created = ctime, changed = mtime
    head = COMMON.pack(0, 0, changed, filetime(status.st_atime_ns), written, written, size,
                       status.st_blocks * 512 if not directory else 0,
                       ATTRIBUTE_DIRECTORY if directory else ATTRIBUTE_ARCHIVE, len(encoded))
    tail = TAILS[info_class]
    if info_class == FULL:
        extra = tail.pack(0)
    elif info_class == BOTH:
        extra = tail.pack(0, 0, 0, b"")
    elif info_class == ID_BOTH:
        extra = tail.pack(0, 0, 0, b"", 0, status.st_ino)
    elif info_class == ID_FULL:
        extra = tail.pack(0, 0, status.st_ino)
    else:
        extra = b""
    return head + extra + encoded


def chunk(entries: list[bytes], limit: int) -> tuple[bytes, int]:
    """As many of `entries` as fit in `limit` bytes, chained (each 8-aligned, its
    NextEntryOffset set, the last one's 0): (buffer, how many)."""
    out = bytearray()
    last = 0  # where the previous entry starts
    for taken, packed in enumerate(entries):
        start = len(out) + -len(out) % 8
        if start + len(packed) > limit:
            return bytes(out), taken
        if taken:
            out += b"\0" * (start - len(out))
            struct.pack_into("<I", out, last, start - last)
        last = start
        out += packed
    return bytes(out), len(entries)


def scan(directory: str) -> list[str]:
    """The names in `directory` (I/O), in the order the file system gives them."""
    with os.scandir(directory) as listing:
        return [item.name for item in listing]


def answer(directory: str, enumeration: Enumeration, info_class: int, limit: int,
           single: bool) -> tuple[bytes, int]:
    """(buffer, entries) for the next chunk of `enumeration`, moving its position: each
    entry is stat'ed now (a name gone meanwhile is skipped), at most CHUNK_LIMIT bytes."""
    limit = min(limit, CHUNK_LIMIT)
    packed: list[bytes] = []
    places: list[int] = []  # the index in names of each packed entry
    size, at = 0, enumeration.position
    names = enumeration.names
    while at < len(names) and size <= limit and not (single and packed):
        name = names[at]
        # ".." is described as the directory itself: nothing of what is above a share
        path = directory if name in (".", "..") else os.path.join(directory, name)
        try:
            status = os.stat(path, follow_symlinks=False)
        except OSError:
            at += 1
            continue
        packed.append(entry(info_class, name, status))
        places.append(at)
        size += len(packed[-1]) + 7
        at += 1
    buffer, taken = chunk(packed, limit)
    # the entries that did not fit are sent next time
    enumeration.position = places[taken] if taken < len(packed) else at
    return buffer, taken
