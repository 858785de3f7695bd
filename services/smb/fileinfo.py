"""SMB2 QUERY_INFO's file information classes (MS-FSCC 2.4) that clients ask of every file
they open, packed from a stat result. Sans-IO.

impacket 0.13.1 builds them through Structure objects (a third of a small-file get's
time here) and fills FileAllInformation with what MS-FSCC does not say: the attributes
as EaSize, st_mode as the FILE_MODE flags, NORMAL with ARCHIVE (NORMAL is valid only
alone), the base name as the name (it is the path from the share's root). The other
classes (streams, EA, attribute tag, internal) stay impacket's.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib

from .listing import ATTRIBUTE_ARCHIVE, ATTRIBUTE_DIRECTORY, filetime

BASIC, STANDARD, ALL, NETWORK_OPEN = 0x04, 0x05, 0x12, 0x22
BASIC_RECORD = struct.Struct("<qqqqII")  # times, FileAttributes, Reserved (40)
STANDARD_RECORD = struct.Struct("<qqIBBH")  # AllocationSize, EndOfFile, links, ... (24)
# Internal (IndexNumber), EA (EaSize), Access (AccessFlags), Position, Mode, Alignment,
# Name (FileNameLength): the rest of FileAllInformation before its name
ALL_TAIL = struct.Struct("<QIIqIII")
NETWORK_OPEN_RECORD = struct.Struct("<qqqqqqII")  # times, sizes, attributes, Reserved (56)
# each class's size before any name: a buffer smaller is STATUS_INFO_LENGTH_MISMATCH, a
# larger one that cannot hold the name gets it cut (STATUS_BUFFER_OVERFLOW)
FIXED = {BASIC: BASIC_RECORD.size, STANDARD: STANDARD_RECORD.size,
         NETWORK_OPEN: NETWORK_OPEN_RECORD.size,
         ALL: BASIC_RECORD.size + STANDARD_RECORD.size + ALL_TAIL.size}
CLASSES = set(FIXED)


def record(info_class: int, status: os.stat_result, path: str, access: int,
           delete_pending: bool = False) -> bytes:
    """The class's record for a file: `path` from the share's root ("dir\\\\f.txt"),
    `access` the open's granted access mask (FileAccessInformation), `delete_pending` whether
    it goes at its close (FileStandardInformation's DeletePending, MS-FSCC 2.4.47)."""
    directory = stat.S_ISDIR(status.st_mode)
    attributes = ATTRIBUTE_DIRECTORY if directory else ATTRIBUTE_ARCHIVE
    size = 0 if directory else status.st_size
    allocation = 0 if directory else status.st_blocks * 512
    # as the listing and impacket's CREATE answer: created = ctime, changed = mtime
    created, accessed = filetime(status.st_ctime_ns), filetime(status.st_atime_ns)
    written = filetime(status.st_mtime_ns)
    if info_class == NETWORK_OPEN:
        return NETWORK_OPEN_RECORD.pack(created, accessed, written, written, allocation, size,
                                        attributes, 0)
    basic = BASIC_RECORD.pack(created, accessed, written, written, attributes, 0)
    if info_class == BASIC:
        return basic
    standard = STANDARD_RECORD.pack(allocation, size, status.st_nlink, delete_pending, directory, 0)
    if info_class == STANDARD:
        return standard
    name = ("\\" + path.lstrip("\\")).encode("utf-16le", "surrogatepass")
    return basic + standard + ALL_TAIL.pack(status.st_ino, 0, access, 0, 0, 0, len(name)) + name


# File system classes (MS-FSCC 2.5), InfoType SMB2_0_INFO_FILESYSTEM. impacket 0.13.1 packs
# FileFsVolumeInformation in SMB1's layout (smbclient's `volume`: INVALID_NETWORK_RESPONSE)
# and answers FileFsFullSizeInformation (7) with 4 zero bytes (it takes the class for
# FileEaInformation, a file class of the same number).
FS_VOLUME, FS_SIZE, FS_DEVICE, FS_ATTRIBUTE, FS_FULL_SIZE = 1, 3, 4, 5, 7
VOLUME_RECORD = struct.Struct("<qIIBB")  # creation time, serial, label length, objects (18)
SIZE_RECORD = struct.Struct("<qqII")  # total, available units, sectors a unit, bytes a sector
DEVICE_RECORD = struct.Struct("<II")  # DeviceType, Characteristics
ATTRIBUTE_RECORD = struct.Struct("<III")  # attributes, longest name, name length
FULL_SIZE_RECORD = struct.Struct("<qqqII")  # total, caller's, actual available, sector sizes
FS_FIXED = {FS_VOLUME: VOLUME_RECORD.size, FS_SIZE: SIZE_RECORD.size,
            FS_DEVICE: DEVICE_RECORD.size, FS_ATTRIBUTE: ATTRIBUTE_RECORD.size,
            FS_FULL_SIZE: FULL_SIZE_RECORD.size}
FILE_DEVICE_DISK, FILE_DEVICE_IS_MOUNTED = 0x07, 0x20
# FILE_CASE_SENSITIVE_SEARCH | FILE_CASE_PRESERVED_NAMES | FILE_UNICODE_ON_DISK
FS_ATTRIBUTES = 0x1 | 0x2 | 0x4
SECTOR = 512


def fs_record(info_class: int, space: os.statvfs_result, root: os.stat_result, label: str) -> bytes:
    """The file system class's record for a share: `space` its statvfs, `root` the stat of
    its directory (the volume's creation time), `label` its name (as smbd labels it)."""
    unit = max(space.f_frsize, SECTOR)
    if info_class == FS_VOLUME:
        name = label.encode("utf-16le")
        serial = zlib.crc32(label.encode()) & 0xFFFFFFFF
        return VOLUME_RECORD.pack(filetime(root.st_ctime_ns), serial, len(name), 0, 0) + name
    if info_class == FS_SIZE:
        return SIZE_RECORD.pack(space.f_blocks, space.f_bavail, unit // SECTOR, SECTOR)
    if info_class == FS_DEVICE:
        return DEVICE_RECORD.pack(FILE_DEVICE_DISK, FILE_DEVICE_IS_MOUNTED)
    if info_class == FS_ATTRIBUTE:
        name = "NTFS".encode("utf-16le")  # as smbd says: clients know what NTFS can do
        return ATTRIBUTE_RECORD.pack(FS_ATTRIBUTES, min(space.f_namemax, 255), len(name)) + name
    return FULL_SIZE_RECORD.pack(space.f_blocks, space.f_bavail, space.f_bfree, unit // SECTOR, SECTOR)
