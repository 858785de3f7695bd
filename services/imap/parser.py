"""IMAP command framing and parsing, sans-IO (RFC 3501 section 9, LITERAL+ RFC 7888).

`Reader` cuts the byte stream into whole commands: a command is one line, or several
lines joined by literals ({n} synchronising, {n+} not). It decides on a literal's size from
the line that announces it, before any byte of it is buffered, and skips the bytes of an
oversized non-synchronising literal without keeping them.

`Parser` reads the arguments of one command from its wire bytes (literals inline, as
sent), and `parse_command` turns a command into a `Command` with typed arguments.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .commands import (
    Append,
    AppendMessage,
    Authenticate,
    CancelUpdate,
    Command,
    Copy,
    Create,
    Enable,
    Fetch,
    FetchAtt,
    Id,
    ListCommand,
    Login,
    MailboxCommand,
    Notify,
    Rename,
    Search,
    SearchKey,
    Section,
    Select,
    SeqSet,
    Sort,
    Status,
    Store,
    Thread,
    UidExpunge,
    UnknownCharset,
)

# What one command may hold. Before login nobody is known, so a command is small (LOGIN's
# credentials); after it, APPEND's message literal may be `size_limit` and everything else
# of a command (lines and other literals together) COMMAND_LIMIT.
PRE_AUTH_LITERAL_LIMIT = 4 * 1024
# 64 KiB as Dovecot's imap_max_line_length: imaptest's `id` sends a 31 KiB ID before login.
PRE_AUTH_COMMAND_LIMIT = 64 * 1024
LINE_LIMIT = 64 * 1024  # one line of a command, literals excluded
COMMAND_LITERAL_LIMIT = 64 * 1024  # a literal in anything but APPEND's message
COMMAND_LIMIT = 256 * 1024
_NEXT_MESSAGE = re.compile(rb' (\([^()\r\n]*\) )?("[^"\r\n]*" )?~?\{\d{1,20}\+?\}\r?\n')
_LITERAL_AT_END = re.compile(rb"\{(\d{1,20})(\+?)\}\r?\n?$")


class ParseError(ValueError):
    """A malformed command: answered BAD (tagged if the tag could be read)."""

    tag: str | None = None


class BadCharset(Exception):
    """SEARCH CHARSET we do not know: answered NO [BADCHARSET]."""


# --- framing -----------------------------------------------------------------------------


@dataclass
class Frame:
    """A whole command as sent (final CRLF removed)."""

    raw: bytes


@dataclass
class Continue:
    """A synchronising literal was announced and is acceptable: send "+ ..."."""


@dataclass
class Reject:
    """The command is dropped before completion: answer `tag` with `text` (BAD or NO)."""

    tag: str
    text: str


@dataclass
class Line:
    """A raw line, read when the session asked for one (AUTHENTICATE data, IDLE's DONE)."""

    raw: bytes


@dataclass
class Bye:
    """Before login, a non-synchronising literal over the limit: say `* BYE text` and close
    (RFC 7888 section 4 leaves the server to read and discard it or to close; a client
    nobody knows yet gets no free reading of its megabytes)."""

    text: str


class Reader:
    def __init__(self, append_limit: int) -> None:
        self.append_limit = append_limit
        self.authenticated = False  # the session has logged in: the larger limits apply
        self.buffer = bytearray()
        self.parts: list[bytes] = []  # the command so far, joined once when it is whole
        self.held = 0  # bytes in parts, APPEND's message literal excluded
        self.message = 0  # bytes of APPEND's message literals among the parts (MULTIAPPEND)
        self.after_message = False  # the line being read follows a message literal
        self.literal = 0  # bytes of a literal still to read into parts
        self.skip = 0  # bytes of a rejected literal still to throw away
        self.discard = False  # rest of a rejected command: drop lines until one ends it
        self.raw_line = False  # the session wants the next line as is
        self.overlong = False  # inside a line longer than the line limit
        self.scanned = 0  # bytes of buffer known to hold no LF

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def _limits(self) -> tuple[int, int, int]:
        """(line, literal, command) limits in the session's state."""
        if self.authenticated:
            return LINE_LIMIT, COMMAND_LITERAL_LIMIT, COMMAND_LIMIT
        return PRE_AUTH_COMMAND_LIMIT, PRE_AUTH_LITERAL_LIMIT, PRE_AUTH_COMMAND_LIMIT

    def _reset(self) -> None:
        self.parts = []
        self.held = 0
        self.message = 0
        self.after_message = False

    def next(self) -> Frame | Continue | Reject | Line | Bye | None:
        """The next event, or None until more bytes arrive."""
        line_limit, literal_limit, command_limit = self._limits()
        while True:
            if self.skip:
                taken = min(self.skip, len(self.buffer))
                del self.buffer[:taken]
                self.skip -= taken
                if self.skip:
                    return None
                continue
            if self.literal:
                # Taken as it arrives, so the buffer stays small while a big APPEND comes.
                taken = min(self.literal, len(self.buffer))
                if taken:
                    self.parts.append(bytes(self.buffer[:taken]))
                    del self.buffer[:taken]
                    self.literal -= taken
                if self.literal:
                    return None
                continue
            end = self.buffer.find(b"\n", self.scanned)
            if end < 0:
                self.scanned = len(self.buffer)
                if len(self.buffer) > line_limit:
                    # Too long: drop what we have and the rest of the line when it comes.
                    first = not self.overlong and not self.discard
                    tag = self._tag(self.parts[0] if self.parts else bytes(self.buffer[:200]))
                    self.buffer.clear()
                    self.scanned = 0
                    self._reset()
                    self.overlong = True
                    if first:
                        self.discard = True
                        return Reject(tag, "BAD Line too long")
                return None
            line = bytes(self.buffer[:end + 1])
            del self.buffer[:end + 1]
            self.scanned = 0
            if self.overlong:
                self.overlong = False
                self.discard = False
                self._reset()
                continue
            if self.raw_line:
                self.raw_line = False
                return Line(line.rstrip(b"\r\n"))
            match = _LITERAL_AT_END.search(line)
            if self.discard:
                if match:  # a rejected command goes on with another literal: skip it too
                    if match.group(2):
                        self.skip = int(match.group(1))
                    continue
                self.discard = False
                continue
            if len(line) > line_limit or self.held + len(line) > command_limit:
                return self._refuse("BAD [TOOBIG] Command too long", line, match)
            if not match:
                self.parts.append(line[:-2] if line.endswith(b"\r\n") else line[:-1])
                raw = b"".join(self.parts)
                self._reset()
                if not raw.strip():
                    continue  # an empty line is not a command; ignore it as servers do
                return Frame(raw)
            size = int(match.group(1))
            head = line[:match.start()] + b"{%d}\r\n" % size
            self.parts.append(head)
            self.held += len(head)
            # APPEND's first message, or the next one of a MULTIAPPEND (RFC 3502): a line
            # that follows a message literal and holds only [flags] [date] and a literal.
            message = self.authenticated and (
                (not self.message and len(self.parts) <= 3
                 and _append_message(b"".join(self.parts)))
                or (self.after_message and _NEXT_MESSAGE.fullmatch(line) is not None))
            self.after_message = bool(message)
            if message and self.message + size > self.append_limit:  # all of them together
                return self._refuse("NO [TOOBIG] Message too large", line, match)
            if not message and size > literal_limit:
                return self._refuse("BAD [TOOBIG] Literal too large", line, match)
            if not message and self.held + size > command_limit:
                return self._refuse("BAD [TOOBIG] Command too long", line, match)
            if message:
                self.message += size
            else:
                self.held += size
            self.literal = size
            if not match.group(2):
                return Continue()

    def _refuse(self, text: str, line: bytes, literal: re.Match | None) -> Reject | Bye:
        """Drop the command so far. A synchronising literal is never sent once refused; a
        non-synchronising one comes anyway, with the rest of the command: skipped as it
        arrives after login, the end of the connection before it."""
        tag = self._tag(self.parts[0] if self.parts else line)
        self._reset()
        if literal is not None and literal.group(2):
            if not self.authenticated:
                return Bye("[TOOBIG] Literal too large before login")
            self.skip = int(literal.group(1))
            self.discard = True
        return Reject(tag, text)

    @staticmethod
    def _tag(first: bytes) -> str:
        tag = first.split(b" ", 1)[0]
        return tag.decode("ascii", "replace") if _TAG.fullmatch(tag) else "*"


def _append_message(prefix: bytes) -> bool:
    """Whether the literal announced at the end of `prefix` is APPEND's message: the
    mailbox (perhaps a literal itself), the optional flags and date are all before it."""
    p = Parser(prefix)
    try:
        p.tag()
        p.sp()
        if p.atom().upper() != "APPEND":
            return False
        p.sp()
        p.astring()
        p.sp()
        if p.peek() == b"(":
            p.flag_list()
            p.sp()
        if p.peek() == b'"':
            p.date_time()
            p.sp()
        p.maybe(b"~")
        p.expect(b"{")
        p.number()
        p.expect(b"}\r\n")
        return p.at_end()
    except ParseError:
        return False


SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
             "DISPLAYTO"}  # RFC 5256, RFC 5957

# --- tokens ------------------------------------------------------------------------------

_ATOM_SPECIALS = set(b'(){ %*"\\]') | set(range(0x20)) | {0x7F}
_TAG = re.compile(rb"[\x21-\x7e]+")
_TAG_BAD = set(b'(){ %*"\\+') | set(range(0x21)) | {0x7F}
_NUMBER = re.compile(rb"\d+")
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


class Parser:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    # primitives

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos:self.pos + n]

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def end(self) -> None:
        if not self.at_end():
            rest = self.data[self.pos:self.pos + 20]
            raise ParseError(f"unexpected characters at the end: {rest!r}")

    def expect(self, token: bytes) -> None:
        if self.data[self.pos:self.pos + len(token)].upper() != token.upper():
            raise ParseError(f"expected {token.decode()!r}")
        self.pos += len(token)

    def sp(self) -> None:
        self.expect(b" ")

    def maybe(self, token: bytes) -> bool:
        if self.data[self.pos:self.pos + len(token)].upper() == token.upper():
            self.pos += len(token)
            return True
        return False

    def _chars(self, allowed: Any) -> bytes:
        start = self.pos
        data = self.data
        while self.pos < len(data) and allowed(data[self.pos]):
            self.pos += 1
        return data[start:self.pos]

    def word(self, stop: bytes) -> str:
        """A keyword (fetch attribute, search key, STORE item) in upper case: printable
        ASCII up to a character of `stop`, so no byte a client sends can fail to decode."""
        return self._chars(lambda c: 0x20 < c < 0x7F and c not in stop).decode().upper()

    def tag(self) -> str:
        tag = self._chars(lambda c: c not in _TAG_BAD and c < 0x80)
        if not tag:
            raise ParseError("missing tag")
        return tag.decode()

    def atom(self) -> str:
        value = self._chars(lambda c: c not in _ATOM_SPECIALS and c < 0x80)
        if not value:
            raise ParseError("expected an atom")
        return value.decode()

    def number(self) -> int:
        match = _NUMBER.match(self.data, self.pos)
        if not match:
            raise ParseError("expected a number")
        if match.end() - match.start() > 20:  # number64 at most; int() refuses 4300 digits
            raise ParseError("number too large")
        self.pos = match.end()
        return int(match.group())

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise ParseError("zero is not allowed here")
        return value

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        data = self.data
        while True:
            if self.pos >= len(data):
                raise ParseError("unterminated quoted string")
            c = data[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.pos >= len(data) or data[self.pos] not in b'"\\':
                    raise ParseError("bad escape in a quoted string")
                out.append(data[self.pos])
                self.pos += 1
            elif c in (0x0D, 0x0A, 0x00):
                raise ParseError("CR, LF or NUL in a quoted string")
            else:
                out.append(c)

    def literal(self) -> bytes:
        self.expect(b"{")
        size = self.number()
        self.maybe(b"+")
        self.expect(b"}\r\n")
        value = self.data[self.pos:self.pos + size]
        if len(value) != size:
            raise ParseError("short literal")
        self.pos += size
        return value

    def string(self) -> bytes:
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        raise ParseError("expected a string")

    def astring(self) -> bytes:
        c = self.peek()
        if c in (b'"', b"{"):
            return self.string()
        value = self._chars(lambda c: (c not in _ATOM_SPECIALS or c == 0x5D) and c < 0x80)
        if not value:
            raise ParseError("expected a string or atom")
        return value

    def astr(self) -> str:
        return _text(self.astring())

    def nstring(self) -> bytes | None:
        if self.maybe(b"NIL"):
            return None
        return self.string()

    def list_mailbox(self) -> str:
        """A LIST pattern: list-char (atom chars plus % * ]) or a string."""
        if self.peek() in (b'"', b"{"):
            return _text(self.string())
        value = self._chars(lambda c: (c not in _ATOM_SPECIALS or c in b"%*]") and c < 0x80)
        if not value:
            raise ParseError("expected a mailbox pattern")
        return value.decode()

    def paren_list(self, item: Any) -> list:
        """ "(" [item *(SP item)] ")" """
        self.expect(b"(")
        items: list = []
        if self.maybe(b")"):
            return items
        while True:
            items.append(item())
            if self.maybe(b")"):
                return items
            self.sp()

    def flag(self) -> str:
        if self.maybe(b"\\"):
            if self.maybe(b"*"):
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> list[str]:
        return self.paren_list(self.flag)

    def seq_set(self) -> SeqSet:
        ranges = []
        while True:
            lo = self._seq_number()
            hi = lo
            if self.maybe(b":"):
                hi = self._seq_number()
            ranges.append((lo, hi))
            if not self.maybe(b","):
                return SeqSet(ranges)

    def _seq_number(self) -> int | None:
        if self.maybe(b"*"):
            return None
        return self.nz_number()

    def date(self) -> tuple[int, int, int]:
        """date = date-text / DQUOTE date-text DQUOTE; returns (year, month, day)."""
        quoted = self.maybe(b'"')
        day = self.number()
        self.expect(b"-")
        month = self._month()
        self.expect(b"-")
        year = self.number()
        if quoted:
            self.expect(b'"')
        try:
            datetime.date(year, month, day)
        except ValueError:
            raise ParseError("bad date") from None
        return year, month, day

    def _month(self) -> int:
        name = self.data[self.pos:self.pos + 3].decode("ascii", "replace").capitalize()
        if name not in MONTHS:
            raise ParseError("bad month")
        self.pos += 3
        return MONTHS.index(name) + 1

    def date_time(self) -> tuple[float, int]:
        """RFC 3501 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz" -> (seconds since the epoch,
        the zone in minutes east of UTC)."""
        import calendar

        self.expect(b'"')
        self.maybe(b" ")  # date-day-fixed: (SP DIGIT) / 2DIGIT
        day = self._digits(2) if self.peek(2).isdigit() else self._digits(1)
        self.expect(b"-")
        month = self._month()
        self.expect(b"-")
        year = self._digits(4)
        self.sp()
        hour = self._digits(2)
        self.expect(b":")
        minute = self._digits(2)
        self.expect(b":")
        second = self._digits(2)
        self.sp()
        sign = self.peek()
        if sign not in (b"+", b"-"):
            raise ParseError("bad zone")
        self.pos += 1
        zone = self._digits(4)
        self.expect(b'"')
        if not (1 <= day <= 31 and hour < 24 and minute < 60 and second < 61
                and zone % 100 < 60):
            raise ParseError("bad date-time")
        minutes = (zone // 100 * 60 + zone % 100) * (1 if sign == b"+" else -1)
        try:
            stamp = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
        except (OverflowError, ValueError):
            raise ParseError("bad date-time") from None
        return float(stamp - minutes * 60), minutes

    def _digits(self, n: int) -> int:
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) != n or not chunk.isdigit():
            raise ParseError("expected digits")
        self.pos += n
        return int(chunk)


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("string is not UTF-8") from None


# --- commands ---------------------------------------------------------------------------


MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
          "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
          "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}
SIMPLE_ATTS = {"FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT",
               "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ"}


def _fetch_att(p: Parser) -> FetchAtt:
    name = p.word(b" ()[<]")
    if name in ("BODY", "BODY.PEEK") and p.peek() == b"[":
        return _section(p, peek=name == "BODY.PEEK")
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and p.peek() == b"[":
        return _binary_section(p, name)
    if name in SIMPLE_ATTS:
        return name
    raise ParseError(f"unknown fetch attribute {name!r}")


def _section(p: Parser, peek: bool) -> Section:
    p.expect(b"[")
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while p.peek().isdigit():
        part.append(p.nz_number())
        if not p.maybe(b"."):
            break
    if p.peek() != b"]":
        word = p.word(b" ]")
        allowed = ["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT"]
        if part:
            allowed.append("MIME")  # only a part has a MIME header
        if word not in allowed:
            raise ParseError(f"bad section text {word!r}")
        text = word
        if word.startswith("HEADER.FIELDS"):
            p.sp()
            # Echoed in upper case, as Dovecot does.
            fields = tuple(f.upper() for f in p.paren_list(p.astr))
            if not fields:
                raise ParseError("empty header list")
    elif part and p.data[p.pos - 1:p.pos] == b".":
        raise ParseError("bad section")
    p.expect(b"]")
    partial = None
    if p.maybe(b"<"):
        origin = p.number()
        p.expect(b".")
        count = p.nz_number()
        p.expect(b">")
        partial = (origin, count)
    return Section(tuple(part), text, fields, partial, peek)


def parse_section(text: bytes) -> Section:
    """A section spec alone ("1.HEADER", "TEXT", ""), as IMAP URLs name one (RFC 5092)."""
    p = Parser(b"[" + text + b"]")
    section = _section(p, peek=True)
    p.end()
    return section


def _binary_section(p: Parser, name: str) -> Section:
    """BINARY[part]<partial>, BINARY.PEEK, BINARY.SIZE[part] (RFC 3516): part numbers only."""
    p.expect(b"[")
    part: list[int] = []
    while p.peek().isdigit():
        part.append(p.nz_number())
        if not p.maybe(b"."):
            break
    p.expect(b"]")
    partial = None
    if name != "BINARY.SIZE" and p.maybe(b"<"):
        origin = p.number()
        p.expect(b".")
        count = p.nz_number()
        p.expect(b">")
        partial = (origin, count)
    kind = "BINARY.SIZE" if name == "BINARY.SIZE" else "BINARY"
    return Section(tuple(part), "", (), partial, name != "BINARY", kind)


def _fetch_atts(p: Parser) -> list[FetchAtt]:
    if p.peek() == b"(":
        atts = p.paren_list(lambda: _fetch_att(p))
        if not atts:
            raise ParseError("empty fetch list")
        return atts
    start = p.pos
    word = p.word(b" ()[")
    if word in MACROS:
        return list(MACROS[word])
    p.pos = start
    return [_fetch_att(p)]


def _search_keys(p: Parser, depth: int = 0) -> list[SearchKey]:
    keys = [_search_key(p, depth)]
    while p.maybe(b" "):
        keys.append(_search_key(p, depth))
    return keys


_NO_ARG = {"ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
           "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN"}
_STRING_ARG = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_DATE_ARG = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"}


def _search_key(p: Parser, depth: int) -> SearchKey:
    if depth > 50:
        raise ParseError("search too deeply nested")
    c = p.peek()
    if c == b"(":
        p.pos += 1
        keys = _search_keys(p, depth + 1)
        p.expect(b")")
        return ("AND", keys)
    if c == b"*" or c.isdigit():
        return ("SEQ", p.seq_set())
    word = p.word(b" ()")
    if word in _NO_ARG:
        return (word,)
    p.sp()
    if word in _STRING_ARG:
        return (word, p.astring())
    if word in _DATE_ARG:
        return (word, p.date())
    if word in ("KEYWORD", "UNKEYWORD"):
        return (word, p.flag())
    if word in ("LARGER", "SMALLER"):
        return (word, p.number())
    if word == "UID":
        return ("UID", p.seq_set())
    if word == "HEADER":
        name = p.astr()
        p.sp()
        return ("HEADER", name, p.astring())
    if word == "NOT":
        return ("NOT", _search_key(p, depth + 1))
    if word == "OR":
        a = _search_key(p, depth + 1)
        p.sp()
        return ("OR", a, _search_key(p, depth + 1))
    if word == "MODSEQ":  # CONDSTORE: MODSEQ [entry-name entry-type] mod-sequence
        if p.peek() == b'"':
            p.quoted()
            p.sp()
            p.atom()
            p.sp()
        return ("MODSEQ", p.number())
    raise ParseError(f"unknown search key {word!r}")


def _mailbox(p: Parser) -> str:
    return mailbox_name(p.astring())


def mailbox_name(raw: bytes) -> str:
    """A mailbox name from the wire (modified UTF-7) as Unicode; INBOX in any case."""
    from . import utf7

    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = _text(raw)  # UTF-8 names from clients that never learnt modified UTF-7
        return "INBOX" if text.upper() == "INBOX" else text
    try:
        name = utf7.decode(text)
    except utf7.UTF7Error:
        name = text  # keep what the client sent rather than refuse its folder
    return "INBOX" if name.upper() == "INBOX" else name


def _store(p: Parser, tag: str, name: str) -> Store:
    p.sp()
    seqset = p.seq_set()
    p.sp()
    unchangedsince = None
    if p.maybe(b"(UNCHANGEDSINCE "):
        unchangedsince = p.number()
        p.expect(b")")
        p.sp()
    word = p.word(b" ()")
    mode = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove",
            "FLAGS.SILENT": "set", "+FLAGS.SILENT": "add", "-FLAGS.SILENT": "remove"}.get(word)
    if mode is None:
        raise ParseError("expected FLAGS, +FLAGS or -FLAGS")
    p.sp()
    if p.peek() == b"(":
        flags = p.flag_list()
    else:
        flags = [p.flag()]
        while p.maybe(b" "):
            flags.append(p.flag())
    return Store(tag, name, seqset, mode, word.endswith(".SILENT"), flags, unchangedsince)


def _fetch(p: Parser, tag: str, name: str) -> Fetch:
    p.sp()
    command = Fetch(tag, name, p.seq_set(), [])
    p.sp()
    command.atts = _fetch_atts(p)
    if p.maybe(b" "):
        def modifier() -> str:
            word = p.atom().upper()
            if word == "CHANGEDSINCE":
                p.sp()
                command.changedsince = p.number()
            elif word == "VANISHED":
                command.vanished = True
            else:
                raise ParseError(f"unknown fetch modifier {word}")
            return word
        p.paren_list(modifier)
    return command


def _returns(p: Parser) -> tuple[list[str], tuple[int, int] | None]:
    """RETURN (...)'s options (RFC 4731, RFC 5267): atoms, and PARTIAL's range of result
    positions (low first, as RFC 5267 4.4 says either order means the same range)."""
    partial: list[tuple[int, int]] = []

    def option() -> str:
        word = p.atom().upper()
        if word == "PARTIAL":
            p.sp()
            low = p.nz_number()
            p.expect(b":")
            high = p.nz_number()
            partial.append((min(low, high), max(low, high)))
        return word

    p.expect(b"RETURN ")
    returns = p.paren_list(option)
    p.sp()
    return returns, partial[0] if partial else None


def _search(p: Parser, tag: str, name: str) -> Search:
    p.sp()
    returns, partial = _returns(p) if p.peek(7).upper() == b"RETURN " else (None, None)
    if p.maybe(b"CHARSET "):
        charset = p.astr().upper()
        if charset not in ("UTF-8", "US-ASCII"):
            raise BadCharset(charset)
        p.sp()
    return Search(tag, name, _search_keys(p), returns, partial)


NOTIFY_FILTERS = {"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED",
                  "SUBTREE", "MAILBOXES"}


def _notify(p: Parser, tag: str, name: str) -> Notify:
    """NOTIFY (RFC 5465 8): the events are kept as sent (checked by the session); a
    MessageNew's fetch attributes are read and not used (the lab sends EXISTS only)."""
    p.sp()
    if p.maybe(b"NONE"):
        return Notify(tag, name, [])
    p.expect(b"SET")
    status = p.maybe(b" STATUS")
    groups = []
    while not p.at_end():
        p.sp()
        p.expect(b"(")
        kind = p.atom().upper()
        if kind not in NOTIFY_FILTERS:
            raise ParseError(f"unknown NOTIFY filter {kind[:40]}")
        names: list[str] = []
        if kind in ("SUBTREE", "MAILBOXES"):
            p.sp()
            names = p.paren_list(lambda: _mailbox(p)) if p.peek() == b"(" else [_mailbox(p)]
            if not names:
                raise ParseError("a mailbox is missing")
        p.sp()
        events: list[str] = []
        if not p.maybe(b"NONE"):
            def event() -> str:
                word = p.atom()
                if word.upper() == "MESSAGENEW" and p.peek(2) == b" (":
                    p.sp()
                    p.paren_list(lambda: p.word(b" ()"))
                return word
            events = p.paren_list(event)
        p.expect(b")")
        groups.append((kind, names, events))
    if not groups:
        raise ParseError("NOTIFY SET needs at least one event group")
    return Notify(tag, name, groups, status)


def _cancelupdate(p: Parser, tag: str, name: str) -> CancelUpdate:
    """CANCELUPDATE tag-string *(SP tag-string) (RFC 5267 4.3)."""
    tags = []
    while not p.at_end():
        p.sp()
        tags.append(_text(p.string()))
    if not tags:
        raise ParseError("CANCELUPDATE needs the tags of the searches")
    return CancelUpdate(tag, name, tags)


def _charset(p: Parser) -> None:
    charset = p.astr().upper()
    if charset not in ("UTF-8", "US-ASCII"):
        raise BadCharset(charset)
    p.sp()


def _sort(p: Parser, tag: str, name: str) -> Sort:
    p.sp()
    returns, partial = _returns(p) if p.peek(7).upper() == b"RETURN " else (None, None)
    words = [w.upper() for w in p.paren_list(p.atom)]
    criteria: list[tuple[str, bool]] = []
    reverse = False
    for word in words:
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise ParseError(f"unknown sort key {word[:40]}")
        criteria.append((word, reverse))
        reverse = False
    if reverse or not criteria:
        raise ParseError("a sort criterion is missing")
    p.sp()
    _charset(p)
    return Sort(tag, name, criteria, _search_keys(p), returns, partial)


def _thread(p: Parser, tag: str, name: str) -> Thread:
    p.sp()
    algorithm = p.atom().upper()
    if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise ParseError(f"unknown thread algorithm {algorithm[:40]}")
    p.sp()
    _charset(p)
    return Thread(tag, name, algorithm, _search_keys(p))


def _select(p: Parser, tag: str, name: str) -> Select:
    command = Select(tag, name, _one_name(p))
    if not p.maybe(b" "):
        return command

    def param() -> str:
        word = p.atom().upper()
        if word == "QRESYNC":
            p.sp()
            p.expect(b"(")
            uidvalidity = p.nz_number()
            p.sp()
            modseq = p.number()
            known = None
            if p.maybe(b" ") and p.peek() != b"(":
                known = p.seq_set()
            if p.maybe(b" ") or p.peek() == b"(":
                p.expect(b"(")
                p.seq_set()
                p.sp()
                p.seq_set()
                p.expect(b")")
            p.expect(b")")
            command.qresync = (uidvalidity, modseq, known)
        elif word != "CONDSTORE":
            raise ParseError(f"unknown select parameter {word}")
        return word

    command.params = p.paren_list(param)
    return command


def _list(p: Parser, tag: str, name: str) -> ListCommand:
    p.sp()
    select_opts = []
    if p.peek() == b"(":
        select_opts = [a.upper() for a in p.paren_list(p.atom)]
        p.sp()
    reference = _mailbox(p)
    p.sp()
    if p.peek() == b"(":
        patterns = p.paren_list(p.list_mailbox)
    else:
        patterns = [p.list_mailbox()]
    command = ListCommand(tag, name, reference, patterns, select_opts)
    if p.maybe(b" RETURN "):
        def option() -> str:
            word = p.atom().upper()
            if word == "STATUS":
                p.sp()
                command.status = [a.upper() for a in p.paren_list(p.atom)]
            return word
        command.returns = p.paren_list(option)
    return command


def parse_command(raw: bytes) -> Command:
    """One whole command (CRLF removed). Raises ParseError; its `tag` attribute says the
    tag when the tag could be read."""
    p = Parser(raw)
    tag = None
    try:
        tag = p.tag()
        p.sp()
        name = p.atom().upper()
        if name == "UID":
            p.sp()
            name = "UID " + p.atom().upper()
        command = _COMMANDS.get(name, _unknown)(p, tag, name)
        p.end()
        return command
    except ParseError as error:
        error.tag = tag
        raise
    except BadCharset as error:
        return UnknownCharset(tag or "*", "BADCHARSET", str(error))


def _unknown(p: Parser, tag: str, name: str) -> Command:
    raise ParseError("unknown command")


def _none(p: Parser, tag: str, name: str) -> Command:
    return Command(tag, name)


def _one_name(p: Parser) -> str:
    p.sp()
    return _mailbox(p)


def _one_mailbox(p: Parser, tag: str, name: str) -> MailboxCommand:
    return MailboxCommand(tag, name, _one_name(p))


def _login(p: Parser, tag: str, name: str) -> Login:
    p.sp()
    user = p.astr()
    p.sp()
    return Login(tag, name, user, p.astr())


def _authenticate(p: Parser, tag: str, name: str) -> Authenticate:
    p.sp()
    mechanism = p.atom().upper()
    initial = None
    if p.maybe(b" "):
        initial = p._chars(lambda c: c > 0x20 and c < 0x7F).decode()
    return Authenticate(tag, name, mechanism, initial)


def _create(p: Parser, tag: str, name: str) -> Create:
    command = Create(tag, name, _one_name(p))
    if p.maybe(b" "):
        p.expect(b"(USE ")
        command.use = p.flag_list()
        p.expect(b")")
    return command


def _rename(p: Parser, tag: str, name: str) -> Rename:
    old = _one_name(p)
    return Rename(tag, name, old, _one_name(p))


def _lsub(p: Parser, tag: str, name: str) -> ListCommand:
    reference = _one_name(p)
    p.sp()
    return ListCommand(tag, name, reference, [p.list_mailbox()])


def _status(p: Parser, tag: str, name: str) -> Status:
    mailbox = _one_name(p)
    p.sp()
    return Status(tag, name, mailbox, [a.upper() for a in p.paren_list(p.atom)])


def _append(p: Parser, tag: str, name: str) -> Append:
    command = Append(tag, name, _one_name(p), [])
    while p.maybe(b" "):  # one message, or several (MULTIAPPEND, RFC 3502)
        flags: list[str] = []
        date = None
        if p.peek() == b"(":
            flags = p.flag_list()
            p.sp()
        if p.peek() == b'"':
            date = p.date_time()
            p.sp()
        if p.maybe(b"CATENATE "):
            command.messages.append(AppendMessage(b"", flags, date, _catenate(p)))
            continue
        if p.peek() == b"~":  # literal8 (BINARY): taken as a plain literal
            p.pos += 1
        command.messages.append(AppendMessage(p.literal(), flags, date))
    if not command.messages:
        raise ParseError("APPEND needs a message")
    return command


def _catenate(p: Parser) -> list[tuple[str, bytes]]:
    """CATENATE's parts (RFC 4469): TEXT literal or URL astring."""
    def part() -> tuple[str, bytes]:
        kind = p.atom().upper()
        p.sp()
        if kind == "TEXT":
            p.maybe(b"~")
            return kind, p.literal()
        if kind == "URL":
            return kind, p.astring()
        raise ParseError(f"unknown CATENATE part {kind[:40]}")

    parts = p.paren_list(part)
    if not parts:
        raise ParseError("CATENATE needs a part")
    return parts


def _copy(p: Parser, tag: str, name: str) -> Copy:
    p.sp()
    seqset = p.seq_set()
    return Copy(tag, name, seqset, _one_name(p))


def _uid_expunge(p: Parser, tag: str, name: str) -> UidExpunge:
    p.sp()
    return UidExpunge(tag, name, p.seq_set())


def _enable(p: Parser, tag: str, name: str) -> Enable:
    caps = []
    while p.maybe(b" "):
        caps.append(p.atom().upper())
    if not caps:
        raise ParseError("ENABLE needs a capability")
    return Enable(tag, name, caps)


def _id(p: Parser, tag: str, name: str) -> Id:
    p.sp()
    if p.maybe(b"NIL"):
        return Id(tag, name, None)
    items = p.paren_list(lambda: p.nstring())
    if len(items) % 2:
        raise ParseError("ID needs name/value pairs")
    return Id(tag, name, {(k or b"").decode("utf-8", "replace"):
                          (v or b"").decode("utf-8", "replace")
                          for k, v in zip(items[::2], items[1::2], strict=True)})


_COMMANDS: dict[str, Callable[[Parser, str, str], Command]] = {
    "CAPABILITY": _none, "NOOP": _none, "LOGOUT": _none, "STARTTLS": _none, "CHECK": _none,
    "CLOSE": _none, "EXPUNGE": _none, "UNSELECT": _none, "IDLE": _none, "NAMESPACE": _none,
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "SELECT": _select, "EXAMINE": _select,
    "CREATE": _create, "DELETE": _one_mailbox, "RENAME": _rename, "SUBSCRIBE": _one_mailbox,
    "UNSUBSCRIBE": _one_mailbox, "LIST": _list, "LSUB": _lsub, "STATUS": _status,
    "APPEND": _append, "FETCH": _fetch, "STORE": _store, "SEARCH": _search, "COPY": _copy,
    "MOVE": _copy, "UID FETCH": _fetch, "UID STORE": _store, "UID SEARCH": _search,
    "UID COPY": _copy, "UID MOVE": _copy, "UID EXPUNGE": _uid_expunge, "ENABLE": _enable,
    "ID": _id, "SORT": _sort, "UID SORT": _sort, "THREAD": _thread, "UID THREAD": _thread,
    "CANCELUPDATE": _cancelupdate, "NOTIFY": _notify,
}
