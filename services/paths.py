"""The one path-safety rule of every file-serving protocol (FTP, SMB, HTTP).

A client names a file by a path relative to a root it may use (a home, public_html, the
public area). `resolve(root, path)` returns the real file system path, or raises PathError
when the path would leave the root in any way:

- ".." that climbs above the root (inside it, "a/../b" is just "b");
- "\\" is a separator too (SMB's, and Windows clients' over FTP and HTTP);
- absolute paths and drive letters are taken relative to the root, never to "/";
- ":" (NTFS alternate data streams, drive letters), NUL and control characters are refused;
- a symbolic link anywhere on the way that points outside the root is refused.

- a name that Unicode compatibility folding (NFKC) would turn into a separator, a ":" or
  dots (fullwidth "／", "．．", "：", ONE DOT LEADER "․", TWO DOT LEADER "‥"): a client or
  a later layer that folds must not find a way up in what passed here as one harmless name.
  The folding used for that check also drops the default-ignorable code points (zero-width
  space, BOM, variation selectors, ...), as NFKC_Casefold and IDNA-style mappings do: "..\u200b"
  is ".." to such a layer. Names that merely contain them (ZWNJ in a Persian word, ZWJ in
  an emoji) stay allowed: only what they would fold into is judged.

Percent-decoding is the HTTP layer's job and happens exactly once before this: a literal
"%2e%2e" that arrives here is a file name, not a way up. Case does not matter for escaping
on Linux: a root is one directory, and names in it are whatever case they are; what must
not depend on case (SMB share names, user names) is compared folded by its protocol.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path


class PathError(ValueError):
    """A path that would leave its root or that no protocol may use."""


# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt), as (first, last) ranges.
_IGNORABLE = ((0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160),
              (0x17B4, 0x17B5), (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E),
              (0x2060, 0x206F), (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF),
              (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A),
              (0xE0000, 0xE0FFF))


def _ignorable(char: str) -> bool:
    code = ord(char)
    return any(first <= code <= last for first, last in _IGNORABLE)


def fold(name: str) -> str:
    """What a folding layer makes of `name`: NFKC without default-ignorable code points."""
    if name.isascii():
        return name  # NFKC leaves ASCII as it is, and no default-ignorable is ASCII
    return unicodedata.normalize("NFKC", "".join(c for c in name if not _ignorable(c)))


def parts(path: str) -> list[str]:
    """The path's names after folding ".", "" and "..", or PathError if ".." leaves the top."""
    out: list[str] = []
    for name in path.replace("\\", "/").split("/"):
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise PathError(f"control character in path {path!r}")
        folded = fold(name)
        if ":" in folded:
            raise PathError(f"':' is not allowed in a name ({path!r})")
        if "/" in folded or "\\" in folded:
            raise PathError(f"a name may not hold a separator in any form ({path!r})")
        if name in ("", "."):
            continue
        if name == "..":
            if not out:
                raise PathError(f"path leaves its root: {path!r}")
            out.pop()
            continue
        # Windows ignores trailing dots and spaces; "..." or ".. " would mean ".." there.
        if folded.rstrip(". ") == "":
            raise PathError(f"name made of dots and spaces: {path!r}")
        out.append(name)
    return out


def _real(path: str) -> str:
    """os.path.realpath(path), asked of the kernel when the path is there: one open with
    O_PATH (no access needed, a FIFO does not block) and its /proc/self/fd link, where
    realpath's Python walk lstat's each component (0.1 ms for a path of a share, most of
    an SMB CREATE's time). realpath itself for what is not there (a new name, a dangling
    link: it follows the link's text as far as it can)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (OSError, AttributeError):  # (AttributeError: no O_PATH on this system)
        return os.path.realpath(path)
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)


def resolve(root: Path, path: str) -> Path:
    """The file system path of `path` under `root` (which need not exist yet)."""
    names = parts(path)
    real_root = _real(os.fspath(root))
    target = os.path.join(real_root, *names)
    real = _real(target)
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        raise PathError(f"path leaves its root through a link: {path!r}")
    return Path(target)


def relative(root: Path, path: Path) -> str:
    """The client's view of `path`: "/" + its names below `root`."""
    rel = Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    return "/" + rel.as_posix() if str(rel) != "." else "/"
