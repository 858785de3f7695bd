"""What one SMB2 request may name and ask for, checked before impacket sees it.

impacket resolves names with its own normpath-and-join (an empty share path is the
process's working directory, "//x" becomes "/x", a search pattern may climb with ".."),
binds a file id to the connection but not to the tree it was opened in, and takes READ
and WRITE lengths as given. The lab's rules:

- every name goes through services.paths (the lab's one path rule), and what impacket
  gets is the canonical form that rule returns, so the two can never disagree;
- a QUERY_DIRECTORY search pattern is one name in the open directory (no separator, no
  "..", in any Unicode spelling), as on Windows (STATUS_OBJECT_NAME_INVALID);
- a file id works only in the tree that opened it (STATUS_FILE_CLOSED elsewhere);
- READ and WRITE lengths stay within what NEGOTIATE announced (STATUS_INVALID_PARAMETER):
  64 KiB for 2.0.2, 8 MiB from 2.1 on (dialects.Connection.max_io).
"""

from __future__ import annotations

from impacket import smb3structs as smb2

from .. import paths

# The longest message taken is a full WRITE (MaxWriteSize, services.smb.dialects: max_io)
# or a compound around it, with its headers (and a transform header): this much more.
HEADROOM = 4096
LAST_CREATED = b"\xff" * 16  # "the file the previous request of this compound created"

# Requests that name an open file, and where their FileId starts in the body (MS-SMB2
# 2.2.15-2.2.39): read with a slice, not by parsing impacket's structure (services.smb.structures)
FILE_ID_REQUESTS = {
    smb2.SMB2_CLOSE: 8, smb2.SMB2_FLUSH: 8, smb2.SMB2_READ: 16, smb2.SMB2_WRITE: 16,
    smb2.SMB2_LOCK: 8, smb2.SMB2_IOCTL: 8, smb2.SMB2_QUERY_DIRECTORY: 8,
    smb2.SMB2_CHANGE_NOTIFY: 8, smb2.SMB2_QUERY_INFO: 24, smb2.SMB2_SET_INFO: 16,
}


def canonical(name: str) -> str:
    """A client's path as impacket should see it: names joined by "/", nothing to fold
    (no "..", ".", separators doubled or leading); PathError where the lab's rule says."""
    return "/".join(paths.parts(name))


def search_pattern(pattern: str) -> None:
    """PathError unless `pattern` is one name (wildcards allowed) of the open directory."""
    if "/" in pattern or "\\" in pattern:
        raise paths.PathError(f"a search pattern is one name: {pattern!r}")
    if pattern not in ("", ".") and len(paths.parts(pattern)) != 1:
        raise paths.PathError(f"a search pattern is one name: {pattern!r}")


def file_id(conn: dict, command: int, body: bytes) -> bytes | None:
    """The open file a request names (LAST_CREATED resolved), or None if it names none."""
    at = FILE_ID_REQUESTS.get(command)
    if at is None or len(body) < at + 16:
        return None
    fid = bytes(body[at:at + 16])
    if fid == LAST_CREATED and "SMB2_CREATE" in conn.get("LastRequest", {}):
        created = conn["LastRequest"]["SMB2_CREATE"]["FileID"]
        fid = created if isinstance(created, bytes) else created.getData()
    return fid
