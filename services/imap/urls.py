"""IMAP URLs (RFC 5092) as CATENATE (RFC 4469) names the messages and parts it copies:
"/INBOX;UIDVALIDITY=3/;UID=7/;SECTION=1.TEXT/;PARTIAL=0.100", or the same after
"imap://user@host"; `resolve` gives the bytes one names, from the user's own mailboxes."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from ..store.mail import Mail
from .mime import Entity
from .parser import ParseError, mailbox_name, parse_section


class BadUrl(ValueError):
    """Not a URL of one message this server can resolve."""


@dataclass(frozen=True)
class MessageUrl:
    mailbox: str  # as sent on the wire (modified UTF-7), percent-decoding undone
    uid: int
    uidvalidity: int | None = None
    section: str = ""
    partial: tuple[int, int | None] | None = None  # (origin, length or None: to the end)


def parse(url: str) -> MessageUrl:
    if url[:7].lower() == "imap://":
        slash = url.find("/", 7)
        if slash < 0:
            raise BadUrl("no mailbox")
        url = url[slash:]
    if not url.startswith("/"):
        raise BadUrl("not an absolute path")
    first, *rest = url[1:].split("/;")
    mailbox, _, validity = first.partition(";")
    fields: dict[str, str] = {}
    for item in rest:
        key, eq, value = item.partition("=")
        if not eq or key.lower() in fields:
            raise BadUrl(f"bad part {item[:40]}")
        fields[key.lower()] = urllib.parse.unquote(value)
    try:
        uidvalidity = None
        if validity:
            key, _, value = validity.partition("=")
            if key.lower() != "uidvalidity":
                raise BadUrl(f"bad mailbox parameter {key[:40]}")
            uidvalidity = int(value)
        uid = int(fields.pop("uid"))
        partial = None
        if "partial" in fields:
            origin, _, length = fields.pop("partial").partition(".")
            partial = (int(origin), int(length) if length else None)
    except (KeyError, ValueError):
        raise BadUrl("no valid UID, UIDVALIDITY or PARTIAL") from None
    section = fields.pop("section", "")
    if fields or not mailbox or uid < 1:
        raise BadUrl("not a URL of one message")
    return MessageUrl(urllib.parse.unquote(mailbox), uid, uidvalidity, section, partial)


def resolve(mail: Mail, user: str, value: bytes) -> bytes:
    """The bytes a URL names (its section and partial) among `user`'s messages, whoever
    the URL says it belongs to; BadUrl when there is no such message or part."""
    url = parse(value.decode("utf-8", "replace"))
    try:
        section = parse_section(url.section.upper().encode())
    except ParseError:
        raise BadUrl("bad section") from None
    mailbox = mail.mailbox(user, mailbox_name(url.mailbox.encode()))
    if mailbox is None or mailbox.noselect or url.uidvalidity not in (None, mailbox.uidvalidity):
        raise BadUrl("no such mailbox (or another UIDVALIDITY)")
    data = mail.data(mailbox.id, url.uid)
    found = None if data is None else Entity.parse(data).section(
        section.part, section.text, section.fields)
    if found is None:
        raise BadUrl("no such message or part")
    if url.partial is not None:
        origin, length = url.partial
        found = found[origin:] if length is None else found[origin:origin + length]
    return found
