"""A message's MIME structure on its exact bytes: what FETCH needs (RFC 3501 6.4.5, 7.4.2).

Python's email package re-serialises what it parses, so BODY[1.2]<0.100> would not be the
bytes the client stored; this module only finds offsets and reads headers, and every
section is a slice of the original message (whose line ends the store made CRLF).
ENVELOPE and BODYSTRUCTURE strings are raw header text, as RFC 3501 asks (encoded words
are the client's to decode).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

from .wire import nstring, quote_list

_FIELD_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def split_header(data: bytes) -> tuple[bytes, bytes]:
    """(header including the blank line, body)."""
    if data.startswith(b"\r\n"):
        return b"\r\n", data[2:]
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b""
    return data[:end + 4], data[end + 4:]


def header_fields(header: bytes) -> list[tuple[str, bytes, str]]:
    """[(lower-case name, the field's raw bytes with folding and CRLF, unfolded value)]."""
    out: list[tuple[str, bytes, str]] = []
    lines = header.split(b"\r\n")
    current: list[bytes] = []

    def flush() -> None:
        if current:
            raw = b"\r\n".join(current) + b"\r\n"
            match = _FIELD_NAME.match(current[0])
            if match:
                # Unfolding removes the CRLFs only (RFC 5322 2.2.3).
                value = b"".join([current[0][match.end():], *current[1:]]).strip()
                out.append((match.group(1).decode("ascii").lower(), raw,
                            value.decode("utf-8", "replace")))
        current.clear()

    for line in lines:
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
        else:
            flush()
            if line:
                current.append(line)
    flush()
    return out


def select_fields(fields: list[tuple[str, bytes, str]], names: tuple[str, ...], negate: bool
                  ) -> bytes:
    """HEADER.FIELDS (names) or HEADER.FIELDS.NOT of a header's `header_fields`: the chosen
    fields and a blank line."""
    wanted = {n.lower() for n in names}
    chosen = [raw for name, raw, _ in fields if (name in wanted) != negate]
    return b"".join(chosen) + b"\r\n"


def params(text: str) -> tuple[str, dict[str, str]]:
    """'text/plain; charset="utf-8"' -> ("text/plain", {"charset": "utf-8"}), keys lower."""
    items = _split_semicolons(text)
    out: dict[str, str] = {}
    for item in items[1:]:
        name, sep, value = item.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        out.setdefault(name.strip().lower(), value)
    return items[0].strip() if items else "", out


def _split_semicolons(text: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ";" and not quoted:
            out.append("".join(current))
            current = []
            continue
        current.append(char)
    out.append("".join(current))
    return out


@dataclass
class Entity:
    """A message or body part: its MIME header, its body, and what is inside."""

    header: bytes
    body: bytes
    default_type: str = "text/plain"
    children: list[Entity] = field(default_factory=list)
    message: Entity | None = None  # the message inside a message/rfc822 part
    # ENVELOPE and BODY[STRUCTURE] once made: entities are shared by every session
    # (session.ENTITIES), and ten sessions fetching one INBOX asked for them again and again
    _made: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, data: bytes, default_type: str = "text/plain", depth: int = 0) -> Entity:
        header, body = split_header(data)
        entity = cls(header, body, default_type)
        if depth > 20:  # a bomb of nested messages: stop looking inside
            return entity
        if entity.maintype == "multipart":
            child_default = "message/rfc822" if entity.subtype == "digest" else "text/plain"
            parts = _split_multipart(body, entity.params.get("boundary", ""))
            entity.children = [cls.parse(part, child_default, depth + 1) for part in parts]
        elif (entity.maintype, entity.subtype) in (("message", "rfc822"), ("message", "global")):
            entity.message = cls.parse(body, "text/plain", depth + 1)
        return entity

    @cached_property
    def fields(self) -> list[tuple[str, bytes, str]]:
        return header_fields(self.header)

    def get(self, name: str) -> str | None:
        for key, _, value in self.fields:
            if key == name:
                return value
        return None

    @cached_property
    def _type(self) -> tuple[str, str, dict[str, str]]:
        value = self.get("content-type")
        kind, found = params(value) if value else ("", {})
        main, _, sub = kind.lower().partition("/")
        if not main or not sub or not re.fullmatch(r"[!#-'*+.0-9A-Z^-~-]+", main + sub, re.I):
            main, sub = self.default_type.split("/")
            if not value:
                found = {"charset": "us-ascii"} if main == "text" else {}
        if main == "multipart" and not found.get("boundary"):
            main, sub, found = "text", "plain", {"charset": "us-ascii"}
        if main == "text" and "charset" not in found:  # RFC 2045 5.2's default, said aloud
            found = {"charset": "us-ascii", **found}
        return main, sub, found

    @property
    def maintype(self) -> str:
        return self._type[0]

    @property
    def subtype(self) -> str:
        return self._type[1]

    @property
    def params(self) -> dict[str, str]:
        return self._type[2]

    def walk(self) -> Iterator[Entity]:
        """This entity and every one inside it, depth first in part order, into the
        messages of message/rfc822 parts too: the one tree walk SEARCH's texts use."""
        yield self
        for child in self.children:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()

    @property
    def leaf(self) -> bool:
        """A part with content of its own: neither multipart nor an attached message."""
        return not self.children and self.message is None

    def decoded(self) -> bytes | None:
        """The body with its Content-Transfer-Encoding undone (BINARY, RFC 3516); None
        for an encoding nobody knows."""
        encoding = (self.get("content-transfer-encoding") or "").strip().lower()
        if encoding in ("", "7bit", "8bit", "binary"):
            return self.body
        if encoding == "base64":
            try:
                return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", self.body))
            except (binascii.Error, ValueError):  # bad padding: what decodes, as Dovecot
                clean = re.sub(rb"[^A-Za-z0-9+/]", b"", self.body)
                return base64.b64decode(clean[:len(clean) // 4 * 4])
        if encoding == "quoted-printable":
            return decode_qp(self.body)
        return None

    def lines(self) -> int:
        return self.body.count(b"\n")  # as Dovecot counts: line ends, not a last partial line

    # --- FETCH responses ------------------------------------------------------------------

    def bodystructure(self, extended: bool) -> str:
        key = "BODYSTRUCTURE" if extended else "BODY"
        made = self._made.get(key)
        if made is None:
            made = self._made[key] = self._bodystructure(extended)
        return made

    def _bodystructure(self, extended: bool) -> str:
        if self.children:
            inner = "".join(child.bodystructure(extended) for child in self.children)
            out = f"({inner} {nstring(self.subtype.upper())}"
            if extended:
                out += f" {_param_list(self.params)} {self._disposition()} {self._language()} " \
                       f"{nstring(self.get('content-location'))}"
            return out + ")"
        main, sub = self.maintype.upper(), self.subtype.upper()
        encoding = (self.get("content-transfer-encoding") or "7BIT").strip().upper()
        parts = [nstring(main), nstring(sub), _param_list(self.params),
                 nstring(self.get("content-id")), nstring(self.get("content-description")),
                 nstring(encoding), str(len(self.body))]
        if self.message is not None:
            parts += [self.message.envelope(), self.message.bodystructure(extended),
                      str(self.lines())]
        elif main == "TEXT":
            parts.append(str(self.lines()))
        if extended:
            parts += [nstring(self.get("content-md5")), self._disposition(), self._language(),
                      nstring(self.get("content-location"))]
        return "(" + " ".join(parts) + ")"

    def _disposition(self) -> str:
        value = self.get("content-disposition")
        if not value:
            return "NIL"
        kind, found = params(value)
        return f"({nstring(kind.upper())} {_param_list(found)})"

    def _language(self) -> str:
        value = self.get("content-language")
        if not value:
            return "NIL"
        return quote_list([v.strip() for v in value.split(",") if v.strip()])

    def envelope(self) -> str:
        made = self._made.get("ENVELOPE")
        if made is None:
            made = self._made["ENVELOPE"] = self._envelope()
        return made

    def _envelope(self) -> str:
        def addresses(name: str, fallback: str | None = None) -> str:
            value = self.get(name)
            if not (value or "").strip() and fallback:  # absent or empty: From (RFC 3501)
                value = self.get(fallback)
            return address_list(value) if value else "NIL"

        return "(" + " ".join([
            nstring(self.get("date")), nstring(self.get("subject")),
            addresses("from"), addresses("sender", "from"), addresses("reply-to", "from"),
            addresses("to"), addresses("cc"), addresses("bcc"),
            nstring(self.get("in-reply-to")), nstring(self.get("message-id")),
        ]) + ")"

    # --- sections -------------------------------------------------------------------------

    def find(self, path: tuple[int, ...]) -> Entity | None:
        """The entity a section's part numbers name (RFC 3501 6.4.5), or None."""
        message, part = self, None
        for number in path:
            if part is not None:
                if part.message is not None:
                    message, part = part.message, None
                elif part.children:
                    if number > len(part.children):
                        return None
                    part = part.children[number - 1]
                    continue
                elif number == 1:  # a leaf is its own part 1, as a simple message is
                    continue
                else:
                    return None
            if message.children:
                if number > len(message.children):
                    return None
                part = message.children[number - 1]
            elif number == 1:
                part = message
            else:
                return None
        return part if part is not None else message

    def binary(self, path: tuple[int, ...]) -> bytes | None:
        """BINARY[path]: a leaf part's content decoded, anything else as BODY[path] has
        it; b"" for no such part. None: the part's encoding is unknown (UNKNOWN-CTE)."""
        entity = self.find(path)
        if entity is None:
            return b""
        if not path:
            return self.header + self.body
        return entity.decoded() if entity.leaf else entity.body

    def section(self, path: tuple[int, ...], text: str, fields: tuple[str, ...]) -> bytes | None:
        """The bytes of BODY[path.text (fields)], or None when there is no such part."""
        entity = self.find(path)
        if entity is None:
            return None
        if text == "MIME":
            return entity.header
        if path and text:  # HEADER/TEXT of a part: the message inside a message/rfc822 part
            if entity.message is None:
                return b""
            entity = entity.message
        if text == "":
            return entity.body if path else entity.header + entity.body
        if text == "HEADER":
            return entity.header
        if text == "TEXT":
            return entity.body
        return select_fields(entity.fields, fields, text.endswith(".NOT"))  # parsed once


_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_qp(body: bytes) -> bytes:
    """Quoted-printable (RFC 2045 6.7): trailing spaces of a line dropped, "=" at a line's
    end (spaces after it too) a soft break. quopri keeps the spaces and misses "=  \r\n"."""
    out = []
    lines = body.split(b"\r\n")
    for i, line in enumerate(lines):
        line = line.rstrip(b" \t")
        last = i == len(lines) - 1
        if line.endswith(b"="):
            out.append(line[:-1])
        else:
            out.append(line if last else line + b"\r\n")
    return _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), b"".join(out))


def without_nul(data: bytes, depth: int = 0) -> bytes:
    """A message whose leaf parts hold NUL bytes (BINARY's APPEND of a literal8) with those
    parts re-encoded as base64, as Dovecot stores them: BODY[] stays a valid literal and
    BINARY[] decodes the bytes back. Other messages (and parts) are left byte for byte."""
    if b"\0" not in data or depth > 20:
        return data
    entity = Entity.parse(data)
    if entity.children:
        out, pos = [], 0
        for child in entity.children:
            raw = child.header + child.body  # the part's bytes, as split from the body
            start = entity.body.find(raw, pos)
            if start < 0:
                return data
            out += [entity.body[pos:start], without_nul(raw, depth + 1)]
            pos = start + len(raw)
        return entity.header + b"".join(out) + entity.body[pos:]
    if entity.message is not None:
        return entity.header + without_nul(entity.body, depth + 1)
    if b"\0" not in entity.body:
        return data
    content = entity.decoded()
    encoded = base64.encodebytes(entity.body if content is None else content)
    return _with_encoding(entity.header, "base64") + encoded.replace(b"\n", b"\r\n")


def _with_encoding(header: bytes, encoding: str) -> bytes:
    """A header with its Content-Transfer-Encoding field (folded lines too) replaced."""
    lines = header.split(b"\r\n")[:-2]  # the fields' lines, without the blank line
    kept: list[bytes] = []
    dropping = False
    for line in lines:
        if line[:1] in (b" ", b"\t") and dropping:
            continue
        dropping = line.lower().startswith(b"content-transfer-encoding:")
        if not dropping:
            kept.append(line)
    kept.append(b"Content-Transfer-Encoding: " + encoding.encode())
    return b"\r\n".join(kept) + b"\r\n\r\n"


def _split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The parts between the delimiter lines ("--" boundary, at the start of a line,
    then only blanks; "--" boundary "--" ends them). bytes.find, not a regular expression
    tried at every position: this was a tenth of a FETCH's time in the stress mix."""
    marker = b"--" + boundary.encode("utf-8", "replace")
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    consumed = 0  # the CRLF that ends a delimiter line does not begin the next one
    while (at := body.find(marker, pos)) >= 0:
        pos = at + 1
        if at and (body[at - 2:at] != b"\r\n" or at - 2 < consumed):
            continue  # not at the start of a line
        line_end = body.find(b"\r\n", at + len(marker))
        if line_end < 0:
            line_end = len(body)
        rest = body[at + len(marker):line_end]
        closing = rest.startswith(b"--")
        if (rest[2:] if closing else rest).strip(b" \t"):
            continue  # a line that only begins like the delimiter
        if start is not None:
            parts.append(body[start:max(at - 2, 0)])
        if closing:
            return parts
        start = pos = consumed = min(line_end + 2, len(body))
    if start is not None:
        parts.append(body[start:])
    return parts


def _param_list(found: dict[str, str]) -> str:
    if not found:
        return "NIL"
    return "(" + " ".join(f"{nstring(k.upper())} {nstring(v)}" for k, v in found.items()) + ")"


# --- addresses ----------------------------------------------------------------------------


def parse_addresses(value: str) -> list[tuple[str | None, str | None, str | None, str | None]]:
    """RFC 5322 address list -> ENVELOPE address tuples (name, adl, mailbox, host); a
    group is (None, None, name, None) ... (None, None, None, None), as RFC 3501 writes it."""
    out: list[tuple[str | None, str | None, str | None, str | None]] = []
    phrase: list[str] = []
    comment: str | None = None
    angle: str | None = None
    i = 0
    in_group = False

    def finish() -> None:
        nonlocal phrase, comment, angle
        if angle is not None:
            name = " ".join(phrase) or None
            route, _, spec = angle.rpartition(":")
            out.append((name, route or None, *_spec(spec)))
        elif phrase:
            spec = "".join(phrase)
            out.append((comment, None, *_spec(spec)))
        phrase, comment, angle = [], None, None

    while i < len(value):
        char = value[i]
        if char == '"':
            j, text = i + 1, []
            while j < len(value) and value[j] != '"':
                if value[j] == "\\" and j + 1 < len(value):
                    j += 1
                text.append(value[j])
                j += 1
            phrase.append("".join(text))
            i = j + 1
        elif char == "(":
            depth, j = 1, i + 1
            while j < len(value) and depth:
                depth += {"(": 1, ")": -1}.get(value[j], 0)
                j += 1
            comment = value[i + 1:j - 1].strip() or None
            i = j
        elif char == "<":
            j = value.find(">", i)
            j = len(value) if j < 0 else j
            angle = _uncomment(value[i + 1:j]).strip()  # <a (c)@ (c) b>: Dovecot drops them
            i = j + 1
        elif char == ",":
            finish()
            i += 1
        elif char == ":" and angle is None and not in_group:
            out.append((None, None, " ".join(phrase), None))
            phrase, comment, in_group = [], None, True
            i += 1
        elif char == ";" and in_group:
            finish()
            out.append((None, None, None, None))
            in_group = False
            i += 1
        elif char in " \t\r\n" or char == ";":  # a ";" outside a group ends nothing: skipped
            i += 1
        else:
            j = i
            while j < len(value) and value[j] not in ' \t\r\n"(<,;' \
                    and not (value[j] == ":" and not in_group):
                j += 1
            j = max(j, i + 1)  # a ":" after <...> starts no group: a word, not a loop
            phrase.append(value[i:j])
            i = j
    finish()
    if in_group:
        out.append((None, None, None, None))
    return out


def _spec(spec: str) -> tuple[str | None, str | None]:
    local, at, domain = spec.strip().rpartition("@")
    if not at:
        return spec.strip() or None, None
    return local.strip(), domain.strip()


def _uncomment(text: str) -> str:
    """Text without its (nested) RFC 5322 comments."""
    out, depth = [], 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(char)
    return "".join(out)


def address_list(value: str) -> str:
    found = parse_addresses(value)
    if not found:
        return "NIL"
    return "(" + "".join("(" + " ".join(nstring(x) for x in item) + ")" for item in found) + ")"
