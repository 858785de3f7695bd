"""SORT (RFC 5256 section 3, SORT=DISPLAY RFC 5957) over a mailbox's messages, pure.

Each message is reduced once to the keys a sort or a thread compares (`Keys`: base subject,
first addresses, sent date, message ids), cached process-wide like SEARCH's headers.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial

from .cache import LRU
from .mime import Entity, parse_addresses
from .search import decode_header

_TRAILER = re.compile(r"(?:\(fwd\)|\s)+$", re.I)
_LEADER = re.compile(r"^(?:(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\]\s*)?:|\s+)", re.I)
_BLOB = re.compile(r"^\[[^\[\]]*\]\s*")
_FWD = re.compile(r"^\[fwd:(.*)\]$", re.I | re.S)
_MSG_ID = re.compile(r"<[^<>\s]+>")


def base_subject(subject: str) -> tuple[str, bool]:
    """RFC 5256 2.1's base subject (upper-cased for i;ascii-casemap) and whether the
    subject was a reply or forward (something was taken off besides blobs and spaces)."""
    text = re.sub(r"\s+", " ", decode_header(subject))
    reply = False
    while True:
        trimmed = _TRAILER.sub("", text)  # (2) trailers: "(fwd)" and spaces
        reply = reply or "(fwd)" in text[len(trimmed):].lower()
        text = trimmed
        while True:  # (3)-(5) leaders ("Re:", "Fwd[2]:", spaces), then one blob
            before = text
            match = _LEADER.match(text)
            while match and match.end():
                reply = reply or not match.group().isspace()
                text = text[match.end():]
                match = _LEADER.match(text)
            blob = _BLOB.match(text)
            if blob and text[blob.end():]:
                text = text[blob.end():]
            if text == before:
                break
        fwd = _FWD.match(text)  # (6) "[fwd: ...]"
        if not fwd:
            return text.upper(), reply
        text, reply = fwd.group(1), True


@dataclass(frozen=True)
class Keys:
    """What SORT and THREAD compare of one message (never changes: messages don't)."""

    subject: str
    reply: bool
    sent: float | None  # the Date: header as a timestamp, None when absent or invalid
    from_: str  # the first address's mailbox (local part), upper-cased
    to: str
    cc: str
    display_from: str  # the first address's name, else its address, case-folded
    display_to: str
    message_id: str | None
    references: tuple[str, ...]  # References:, else the first id of In-Reply-To:

    @classmethod
    def of(cls, entity: Entity) -> Keys:
        subject, reply = base_subject(entity.get("subject") or "")
        date = entity.get("date")
        parsed = email.utils.parsedate_tz(date) if date else None
        sent = None
        if parsed:
            try:
                sent = float(email.utils.mktime_tz(parsed))
            except (OverflowError, ValueError):
                sent = None
        ids = _MSG_ID.findall(entity.get("references") or "")
        if not ids:
            ids = _MSG_ID.findall(entity.get("in-reply-to") or "")[:1]
        message_id = _MSG_ID.findall(entity.get("message-id") or "")
        return cls(subject, reply, sent, _mailbox(entity, "from"), _mailbox(entity, "to"),
                   _mailbox(entity, "cc"), _display(entity, "from"), _display(entity, "to"),
                   message_id[0] if message_id else None, tuple(ids))


def _first(entity: Entity, name: str) -> tuple[str | None, str | None, str | None] | None:
    value = entity.get(name)
    for address_name, _, mailbox, host in parse_addresses(value) if value else []:
        return address_name, mailbox, host  # a group's first entry is its name
    return None


def _mailbox(entity: Entity, name: str) -> str:
    first = _first(entity, name)
    return (first[1] or "").upper() if first else ""


def _display(entity: Entity, name: str) -> str:
    """RFC 5957: the display name, decoded, else the address (a group: its name)."""
    first = _first(entity, name)
    if first is None:
        return ""
    display, mailbox, host = first
    if display:
        return decode_header(display).casefold()
    return (f"{mailbox}@{host}" if host else mailbox or "").casefold()


KEYS: LRU[Keys] = LRU(50_000)


@dataclass
class Item:
    """One message to sort or thread."""

    seq: int
    uid: int
    arrival: float  # INTERNALDATE (UTC)
    size: int
    keys: Keys

    @property
    def date(self) -> float:
        """RFC 5256's sent date: the Date: header, else the INTERNALDATE."""
        return self.keys.sent if self.keys.sent is not None else self.arrival


def keys(cache_key: Hashable, load: Callable[[], Entity | None]) -> Keys:
    """A message's keys: from the cache, else from the message (`load` parses it)."""
    found = KEYS.get(cache_key)
    if found is None:
        entity = load()
        found = Keys.of(entity if entity is not None else Entity(b"", b""))
        if entity is not None:
            KEYS.put(cache_key, found)
    return found


def _value(item: Item, *, key: str) -> float | str:
    if key == "ARRIVAL":
        return item.arrival
    if key == "DATE":
        return item.date
    if key == "SIZE":
        return item.size
    if key == "SUBJECT":
        return item.keys.subject
    return {"FROM": item.keys.from_, "TO": item.keys.to, "CC": item.keys.cc,
            "DISPLAYFROM": item.keys.display_from, "DISPLAYTO": item.keys.display_to}[key]


def sort(items: list[Item], criteria: list[tuple[str, bool]]) -> list[Item]:
    """Items in the order of the criteria, (key, reverse) each; ties in sequence order
    (REVERSE turns one key around, never the final tie-break)."""
    out = sorted(items, key=lambda item: item.seq)
    for key, reverse in reversed(criteria):  # stable sorts, least significant first
        out.sort(key=partial(_value, key=key), reverse=reverse)
    return out
