"""Modified UTF-7 (RFC 3501 section 5.1.3): mailbox names on the wire.

Printable ASCII stands for itself except "&", written "&-"; anything else is UTF-16BE in
modified base64 ("," for "/", no padding) between "&" and "-". The store keeps Unicode.
"""

from __future__ import annotations

import base64


class UTF7Error(ValueError):
    pass


def _b64(chunk: str) -> str:
    raw = chunk.encode("utf-16-be")
    return base64.b64encode(raw).decode().rstrip("=").replace("/", ",")


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out.append("&" + _b64("".join(pending)) + "-")
                pending = []
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    if pending:
        out.append("&" + _b64("".join(pending)) + "-")
    return "".join(out)


def decode(text: str) -> str:
    """The Unicode name of a wire name; raises UTF7Error on anything RFC 3501 forbids."""
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if not 0x20 <= ord(char) <= 0x7E:
            raise UTF7Error("8-bit or control character in a mailbox name")
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise UTF7Error("unterminated &-sequence")
        chunk = text[i + 1:end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if len(chunk) % 4 == 1 or not all(c.isalnum() or c in "+," for c in chunk):
            raise UTF7Error("bad modified base64")
        raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
        if len(raw) % 2:
            raise UTF7Error("odd UTF-16 length")
        try:
            decoded = raw.decode("utf-16-be")
        except UnicodeDecodeError:
            raise UTF7Error("bad UTF-16") from None
        if any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise UTF7Error("printable ASCII must not be base64-encoded")
        if encode(decoded) != "&" + chunk + "-":
            raise UTF7Error("non-canonical encoding")
        out.append(decoded)
    return "".join(out)
