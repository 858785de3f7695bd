"""A streaming multipart/form-data parser (RFC 7578), sans-IO: bytes in, events out.

twisted.web's own parser needs the whole body and drops file names (twisted#12358,
#4775); this one keeps a bounded buffer, so an upload of any size passes through in
constant memory, and it keeps each part's name and filename.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEADER_BLOCK = 16 * 1024


class MultipartError(ValueError):
    pass


@dataclass
class Part:
    headers: dict[str, str]

    @property
    def disposition(self) -> dict[str, str]:
        """The parameters of Content-Disposition (name, filename)."""
        value = self.headers.get("content-disposition", "")
        return {k.lower(): (q if q or not t else t) for k, q, t in _PARAM.findall(value)}

    @property
    def name(self) -> str:
        return self.disposition.get("name", "")

    @property
    def filename(self) -> str | None:
        return self.disposition.get("filename")


_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]\Z")
_PARAM = re.compile(r';\s*([\w*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))')


def boundary_of(content_type: str) -> str | None:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for key, quoted, token in _PARAM.findall(";" + params):
        if key.lower() == "boundary":
            return quoted or token or None
    return None


class MultipartParser:
    """feed(data) -> events: ("part", Part), ("data", bytes), ("end", None)
    for each part in order; finished is True once the closing delimiter was seen."""

    def __init__(self, boundary: str) -> None:
        if not 1 <= len(boundary) <= 70:
            raise MultipartError("the boundary must be 1-70 characters (RFC 2046 5.1.1)")
        if not _BOUNDARY.match(boundary):
            raise MultipartError("the boundary has characters RFC 2046 5.1.1 does not allow")
        self.delimiter = b"\r\n--" + boundary.encode("latin-1")
        # The first delimiter may start the body: a CRLF in front makes it like the others.
        self.buffer = b"\r\n"
        self.state = "preamble"
        self.finished = False

    def feed(self, data: bytes) -> list[tuple[str, object]]:
        self.buffer += data
        events: list[tuple[str, object]] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        if not self.finished:
            raise MultipartError("the body ended before the closing boundary")

    def _step(self, events: list[tuple[str, object]]) -> bool:
        buf, delim = self.buffer, self.delimiter
        if self.state in ("preamble", "body"):
            index = buf.find(delim)
            if index < 0:
                keep = len(delim) - 1  # a delimiter may be split across two feeds
                if self.state == "body" and len(buf) > keep:
                    events.append(("data", buf[:-keep]))
                    self.buffer = buf[-keep:]
                elif self.state == "preamble" and len(buf) > keep:
                    self.buffer = buf[-keep:]
                return False
            if self.state == "body":
                if index:
                    events.append(("data", buf[:index]))
                events.append(("end", None))
            self.buffer = buf[index + len(delim):]
            self.state = "delimiter"
            return True
        if self.state == "delimiter":
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self.finished = True
                self.state = "epilogue"
                self.buffer = b""
                return False
            line_end = buf.find(b"\r\n")
            if line_end < 0:
                if len(buf) > 256:
                    raise MultipartError("garbage after a boundary")
                return False
            if buf[:line_end].strip(b" \t"):
                raise MultipartError("garbage after a boundary")
            self.buffer = buf[line_end:]  # keep the CRLF: the header block starts with it
            self.state = "headers"
            return True
        if self.state == "headers":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BLOCK:
                    raise MultipartError("part headers too long")
                return False
            headers: dict[str, str] = {}
            for line in buf[2:end].split(b"\r\n") if end > 0 else []:
                name, sep, value = line.decode("utf-8", "replace").partition(":")
                if not sep:
                    raise MultipartError(f"malformed part header {line[:60]!r}")
                headers[name.strip().lower()] = value.strip()
            events.append(("part", Part(headers)))
            # The data starts after the blank line; an empty part's "\r\n--boundary"
            # follows at once and is found like any other.
            self.buffer = buf[end + 4:]
            self.state = "body"
            return True
        self.buffer = b""  # epilogue: ignored
        return False
