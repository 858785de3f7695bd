"""How values are written in server responses (RFC 3501 section 4)."""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str | bytes) -> str:
    """A string as a quoted string, or as a literal when a quoted string cannot hold it
    (CR, LF, NUL or 8-bit characters)."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if any(c in "\r\n\0" or ord(c) > 0x7E for c in text):
        raw = text.encode("utf-8")
        return f"{{{len(raw)}}}\r\n{text}"
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nstring(value: str | bytes | None) -> str:
    return "NIL" if value is None else quote(value)


def quote_list(items: Iterable[str]) -> str:
    return "(" + " ".join(quote(item) for item in items) + ")"


def literal(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data
