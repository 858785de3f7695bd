"""Range requests (RFC 9110 14): which bytes of a representation a request asks for, and
how a 206 answer frames them. Sans-IO: header bytes and a size in, byte ranges out.

A Range header this server cannot use (another unit, bad syntax, too many ranges) is
ignored, as RFC 9110 14.2 allows: the whole representation is sent with 200, which every
client handles. Only a well-formed header none of whose ranges overlaps the
representation is 416.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

MAX_RANGES = 32  # more is a denial-of-service pattern (RFC 9110 17.15), not a download
MAX_DIGITS = 18  # a position longer than this is no position (and int() has limits too)

ByteRange = tuple[int, int]  # first and last byte position, inclusive


class Unsatisfiable:
    """A Range header whose every range starts past the end (-> 416)."""


UNSATISFIABLE = Unsatisfiable()


def _number(text: bytes) -> int | None:
    if not text.isdigit() or len(text) > MAX_DIGITS:  # bytes.isdigit: ASCII digits only
        return None
    return int(text)


def requested(header: bytes | None, size: int) -> list[ByteRange] | Unsatisfiable | None:
    """The ranges of a `size`-byte representation that `header` asks for, in the order
    to send them; UNSATISFIABLE; or None: send the whole representation."""
    if header is None:
        return None
    unit, equals, spec = header.partition(b"=")
    if not equals or unit.strip(b" \t").lower() != b"bytes":
        return None
    items = [item.strip(b" \t") for item in spec.split(b",")]
    items = [item for item in items if item]  # a list may have empty elements (RFC 9110 5.6.1)
    if not items or len(items) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for item in items:
        first_text, dash, last_text = item.partition(b"-")
        if not dash:
            return None
        if not first_text:  # "-N": the last N bytes
            suffix = _number(last_text)
            if suffix is None:
                return None
            if suffix and size:
                ranges.append((max(0, size - suffix), size - 1))
            continue
        first = _number(first_text)
        last = _number(last_text) if last_text else first  # "N-": to the end
        if first is None or last is None or last < first:
            return None  # an invalid range-spec makes the whole header invalid
        if first < size:
            ranges.append((first, size - 1 if not last_text else min(last, size - 1)))
    if not ranges:
        return UNSATISFIABLE
    return coalesced(ranges)


def coalesced(ranges: list[ByteRange]) -> list[ByteRange]:
    """`ranges` as asked, unless some overlap: then merged, in ascending order (RFC 9110
    14.2 lets a server coalesce; sending a byte twice only serves an attack)."""
    ordered = sorted(ranges)
    if all(a[1] < b[0] for a, b in itertools.pairwise(ordered)):
        return ranges
    merged = [ordered[0]]
    for first, last in ordered[1:]:
        if first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def if_range_holds(value: bytes | None, etag: bytes, last_modified: bytes) -> bool:
    """Whether If-Range lets the Range header apply (RFC 9110 13.1.5): an entity tag must
    match strongly (a weak one never does), a date must be the Last-Modified exactly."""
    if value is None:
        return True
    value = value.strip(b" \t")
    if value.startswith((b'"', b"W/")):
        return value == etag and not etag.startswith(b"W/")
    try:
        parsedate_to_datetime(value.decode("latin-1"))
    except (ValueError, TypeError):
        return False  # neither a tag nor a date: no evidence the client's copy is current
    return value == last_modified


@dataclass
class Framing:
    """A 206 body: its Content-Type and Content-Range (None for multipart), and the pieces
    to send: literal bytes, or (offset, length) of the representation."""

    content_type: bytes
    content_range: bytes | None
    pieces: list[bytes | tuple[int, int]]
    length: int


def framing(ranges: list[ByteRange], size: int, ctype: bytes) -> Framing:
    if len(ranges) == 1:
        first, last = ranges[0]
        return Framing(ctype, b"bytes %d-%d/%d" % (first, last, size),
                       [(first, last - first + 1)], last - first + 1)
    boundary = secrets.token_hex(12).encode()  # hex never occurs as a line of its own
    pieces: list[bytes | tuple[int, int]] = []
    for index, (first, last) in enumerate(ranges):
        pieces.append(b"%s--%s\r\nContent-Type: %s\r\nContent-Range: bytes %d-%d/%d\r\n\r\n"
                      % (b"\r\n" if index else b"", boundary, ctype, first, last, size))
        pieces.append((first, last - first + 1))
    pieces.append(b"\r\n--%s--\r\n" % boundary)
    length = sum(p[1] if isinstance(p, tuple) else len(p) for p in pieces)
    return Framing(b"multipart/byteranges; boundary=" + boundary, None, pieces, length)
