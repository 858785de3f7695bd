"""The main headers of a stored message, for the API: decoded when they can be, raw text
when they cannot, whatever bytes the sender delivered (sans-IO: bytes in, text out).

Python's email header parser is built for well-formed mail: a From of a few thousand "("
makes it recurse past the interpreter's limit (RecursionError), and other shapes raise
ValueError, IndexError or worse. Anyone can deliver such a message to port 25, so the
header block is split here by a small loop of our own, and the email package is only
asked to decode one header value at a time: if it fails, that value is given as it was
sent (unfolded), and the rest of the message and of the listing are unaffected.
"""

from __future__ import annotations

import email.policy
import re

SUMMARY = ("from", "to", "cc", "subject", "date", "message-id")
DECODE_LIMIT = 8 * 1024  # longer values are given raw: the parser's cost grows with length
_END_OF_HEADERS = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")
_NAME = re.compile(rb"[!-9;-~]+\Z")  # printable ASCII but ":" (RFC 5322 ftext)


def text(raw: bytes) -> str:
    """Header bytes as text: UTF-8 (RFC 6532) where valid, U+FFFD where not."""
    return raw.decode("utf-8", "replace")


def raw_headers(data: bytes) -> dict[str, str]:
    """Each header's first occurrence (lower-case name -> unfolded value), up to the first
    empty line or the first line that is no header."""
    head = _END_OF_HEADERS.split(data, 1)[0]
    lines = _LINE.split(head)
    if lines[0].startswith(b"From "):  # an mbox separator line, as email's parser skips it
        del lines[0]
    fields: list[tuple[str, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not fields:
                continue  # a continuation with nothing to continue
            fields[-1][1].append(line.strip(b" \t"))
            continue
        name, colon, value = line.partition(b":")
        name = name.rstrip(b" \t")  # "Subject : x" is obsolete syntax, still a header
        if not colon or not _NAME.match(name):
            break
        fields.append((name.decode("ascii").lower(), [value.strip(b" \t")]))
    out: dict[str, str] = {}
    for name, pieces in fields:
        out.setdefault(name, text(b" ".join(p for p in pieces if p)))
    return out


def decoded(name: str, value: str) -> str:
    """`value` with RFC 2047 words decoded and structure checked by the email package,
    or `value` itself if the package cannot parse it."""
    if len(value) > DECODE_LIMIT:
        return value
    try:
        return str(email.policy.default.header_factory(name, value))
    except Exception:
        return value


def summary(data: bytes, names: tuple[str, ...] = SUMMARY) -> dict[str, str]:
    """The headers `names` of the message `data` that it has, decoded or raw."""
    raw = raw_headers(data)
    return {name: decoded(name, raw[name]) for name in names if name in raw}
