"""SEARCH (RFC 3501 6.4.4) over one mailbox view: keys from parser.py, evaluated per message.

String keys match case-insensitively as substrings of the decoded text: headers with
their encoded words decoded, bodies with their transfer encoding and charset undone, so
a UTF-8 search finds "Grüße" however the sender encoded it.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import email.header
import email.utils
import quopri
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import cached_property

from .cache import LRU
from .mime import Entity, parse_addresses

# Keys that need the message's bytes; the rest are answered from the index alone.
_CONTENT_KEYS = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO", "HEADER",
                 "SENTBEFORE", "SENTON", "SENTSINCE"}


def needs_content(keys: list) -> bool:
    for key in keys:
        name = key[0]
        if name in _CONTENT_KEYS:
            return True
        if name == "AND" and needs_content(key[1]):
            return True
        if name == "NOT" and needs_content([key[1]]):
            return True
        if name == "OR" and needs_content([key[1], key[2]]):
            return True
    return False


# Decoded headers of messages searched lately, shared by every session of the process:
# messages never change, and the key includes the UIDVALIDITY.
HEADERS: LRU[Headers] = LRU(50_000)
ADDRESS_KEYS = ("from", "to", "cc", "bcc")


@dataclass
class Headers:
    """A message's header fields, decoded and case-folded, as searches compare them."""

    fields: dict[str, list[str]]  # by lower-case name, every occurrence
    addresses: dict[str, list[str]]  # FROM/TO/CC/BCC: each parsed address, written out

    @classmethod
    def of(cls, entity: Entity) -> Headers:
        fields: dict[str, list[str]] = {}
        addresses: dict[str, list[str]] = {}
        for name, _, value in entity.fields:
            fields.setdefault(name, []).append(decode_header(value).casefold())
            if name in ADDRESS_KEYS:
                addresses.setdefault(name, []).extend(
                    text.casefold() for text in _written_addresses(value))
        return cls(fields, addresses)


def _written_addresses(value: str) -> list[str]:
    """Each address as Dovecot writes it for FROM/TO/CC/BCC searches: `Name <local@domain>`
    (comments dropped; a trailing comment is the name when there is none), a bare
    `local@domain` without a name; a group's name is an entry of its own."""
    out = []
    for name, _, mailbox, host in parse_addresses(value):
        if mailbox is None:
            continue  # the end of a group
        spec = f"{mailbox}@{host}" if host else mailbox
        out.append(f"{decode_header(name)} <{spec}>" if name else spec)
    return out


@dataclass
class Candidate:
    key: Hashable  # (mailbox id, UIDVALIDITY, UID)
    seq: int
    uid: int
    flags: frozenset[str]
    recent: bool
    internaldate: float  # shifted into its own zone: BEFORE/ON/SINCE compare its days
    size: int
    modseq: int
    load: Callable[[], Entity | None]

    @cached_property
    def entity(self) -> Entity | None:
        return self.load()

    @cached_property
    def headers(self) -> Headers:
        out = HEADERS.get(self.key)
        if out is None:
            if self.entity is None:
                return Headers({}, {})
            out = Headers.of(self.entity)
            HEADERS.put(self.key, out)
        return out

    @cached_property
    def body_text(self) -> str:
        return "\n".join(_texts(self.entity, False)).casefold() if self.entity else ""

    @cached_property
    def inner_headers(self) -> str:
        """Headers of attached messages: TEXT finds them, BODY does not (as Dovecot)."""
        return "\n".join(_texts(self.entity, True)).casefold() if self.entity else ""


def decode_header(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value  # AssertionError, binascii.Error, LookupError...: the raw text then


def _texts(entity: Entity, headers: bool) -> list[str]:
    """The decoded text of the leaf parts (headers=False), or the headers of the messages
    attached inside (headers=True)."""
    if headers:
        return [decode_header(e.message.header.decode("utf-8", "replace"))
                for e in entity.walk() if e.message is not None]
    return [text for e in entity.walk() if e.leaf for text in _leaf_text(e)]


def _leaf_text(entity: Entity) -> list[str]:
    body = entity.body
    encoding = (entity.get("content-transfer-encoding") or "").strip().lower()
    try:
        if encoding == "base64":
            body = base64.b64decode(body, validate=False)
        elif encoding == "quoted-printable":
            body = quopri.decodestring(body)
    except (binascii.Error, ValueError):
        pass
    if entity.maintype not in ("text", "message") and encoding == "base64":
        return []
    charset = entity.params.get("charset", "utf-8")
    try:
        return [body.decode(charset, "replace")]
    except (LookupError, UnicodeError):  # unknown, or a codec such as idna that refuses
        return [body.decode("utf-8", "replace")]  # "replace"


def _day(stamp: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).date()


_NO_DATE = datetime.date(1970, 1, 1)


def _sent_day(candidate: Candidate) -> datetime.date:
    """The Date: header's day in its own zone; no (valid) Date: counts as the epoch, as
    Dovecot (which compliance suites were written against) does."""
    value = candidate.entity.get("date") if candidate.entity else None
    parsed = email.utils.parsedate_tz(value) if value else None
    if not parsed:
        return _NO_DATE
    try:
        return datetime.date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return _NO_DATE


def _contains(haystacks: list[str], needle: bytes) -> bool:
    text = needle.decode("utf-8", "replace").casefold()
    return any(text in h for h in haystacks)


@dataclass
class Context:
    largest_seq: int
    largest_uid: int


def matches(key: tuple, c: Candidate, ctx: Context) -> bool:
    name = key[0]
    if name == "AND":
        return all(matches(k, c, ctx) for k in key[1])
    if name == "ALL":
        return True
    if name == "SEQ":
        return key[1].contains(c.seq, ctx.largest_seq)
    if name == "UID":
        return key[1].contains(c.uid, ctx.largest_uid)
    if name == "NOT":
        return not matches(key[1], c, ctx)
    if name == "OR":
        return matches(key[1], c, ctx) or matches(key[2], c, ctx)
    flag = _FLAG_KEYS.get(name)
    if flag is not None:
        return (flag[0] in c.flags) == flag[1]
    if name == "RECENT":
        return c.recent
    if name == "NEW":
        return c.recent and "\\Seen" not in c.flags
    if name == "OLD":
        return not c.recent
    if name in ("KEYWORD", "UNKEYWORD"):
        has = key[1].lower() in {f.lower() for f in c.flags}
        return has == (name == "KEYWORD")
    if name == "LARGER":
        return c.size > key[1]
    if name == "SMALLER":
        return c.size < key[1]
    if name == "MODSEQ":
        return c.modseq >= key[1]
    if name in ("BEFORE", "ON", "SINCE"):
        return _compare(name, _day(c.internaldate), datetime.date(*key[1]))
    if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
        return _compare(name[4:], _sent_day(c), datetime.date(*key[1]))
    if name in ("FROM", "TO", "CC", "BCC"):  # the parsed addresses, as Dovecot
        return _contains(c.headers.addresses.get(name.lower(), []), key[1])
    if name == "SUBJECT":
        return _contains(c.headers.fields.get("subject", []), key[1])
    if name == "HEADER":
        values = c.headers.fields.get(key[1].lower())
        return values is not None and _contains(values, key[2])
    if name == "BODY":
        return _contains([c.body_text], key[1])
    if name == "TEXT":
        headers = [v for values in c.headers.fields.values() for v in values]
        return _contains([*headers, c.body_text, c.inner_headers], key[1])
    raise ValueError(f"unknown search key {name}")


def _compare(how: str, day: datetime.date, wanted: datetime.date) -> bool:
    if how == "BEFORE":
        return day < wanted
    if how == "ON":
        return day == wanted
    return day >= wanted


_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
