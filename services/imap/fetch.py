"""FETCH rendering (RFC 3501 6.4.5 and 7.4.2): one message's response items from the
view (flags, UID, sizes, dates) and its parsed MIME tree (sections, ENVELOPE,
BODYSTRUCTURE). Which messages are fetched, and \\Seen, are the session's."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..store.mail import Message
from .commands import FetchAtt, Section
from .mime import Entity
from .view import View
from .wire import literal


class UnknownEncoding(Exception):
    """BINARY of a part whose Content-Transfer-Encoding is unknown: NO [UNKNOWN-CTE]."""


# Items that need the message parsed; the rest come from the view's index.
STRUCTURE_ATTS = {"ENVELOPE", "BODY", "BODYSTRUCTURE"}
CONTENT_ATTS = {"RFC822", "RFC822.HEADER", "RFC822.TEXT", *STRUCTURE_ATTS}

def items(view: View, uid: int, atts: list[FetchAtt], load: Callable[[int], Entity | None],
          flags_changed: bool, condstore: bool) -> tuple[list[bytes], bool]:
    """The items of one message's FETCH response, in the order asked, and whether its bytes
    were gone (expunged by another session meanwhile): then, as Dovecot, what the view
    still knows (UID, FLAGS, sizes) and NIL for the sections. `load` parses a message (the
    session's cache); `flags_changed`: this FETCH has just set \\Seen."""
    message = view.index[uid]
    out: list[bytes] = []
    entity: Entity | None = None
    gone = False
    wrote_flags = False
    for att in atts:
        if isinstance(att, Section) or att in CONTENT_ATTS:
            if entity is None and not gone:
                entity = load(uid)
                gone = entity is None
            if entity is not None:
                out.append(_content(att, entity))
            elif att not in STRUCTURE_ATTS:  # no NIL form in RFC 3501's grammar: left out
                out.append((att.name() if isinstance(att, Section) else att).encode() + b" NIL")
        elif att == "UID":
            out.append(b"UID %d" % uid)
        elif att == "FLAGS":
            out.append(b"FLAGS " + view.flag_text(uid).encode())
            wrote_flags = True
        elif att == "INTERNALDATE":
            out.append(f'INTERNALDATE "{internaldate(message)}"'.encode())
        elif att == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % message.size)
        elif att == "MODSEQ":
            out.append(b"MODSEQ (%d)" % message.modseq)
    if flags_changed and not wrote_flags:  # \Seen just set: said first, as Dovecot does
        out.insert(1 if out and out[0].startswith(b"UID ") else 0,
                   b"FLAGS " + view.flag_text(uid).encode())
    if condstore and "MODSEQ" not in atts and (wrote_flags or flags_changed):
        out.append(b"MODSEQ (%d)" % message.modseq)
    return out, gone


def _content(att: FetchAtt, entity: Entity) -> bytes:
    """An item made of the message's bytes or structure."""
    if isinstance(att, Section) and att.kind != "BODY":
        decoded = entity.binary(att.part)
        if decoded is None:
            raise UnknownEncoding(att.name())
        if att.kind == "BINARY.SIZE":
            return f"{att.name()} {len(decoded)}".encode()
        if att.partial:
            origin, count = att.partial
            decoded = decoded[origin:origin + count]
        # literal8 (~{n}) only when the bytes need it: a NUL cannot go in a literal.
        return att.name().encode() + b" " + (b"~" if b"\0" in decoded else b"") + literal(decoded)
    if isinstance(att, Section):
        data = entity.section(att.part, att.text, att.fields)
        if data is None:
            data = b""
        if att.partial:
            origin, count = att.partial
            data = data[origin:origin + count]
        return att.name().encode() + b" " + literal(data)
    if att == "RFC822":
        return b"RFC822 " + literal(entity.header + entity.body)
    if att == "RFC822.HEADER":
        return b"RFC822.HEADER " + literal(entity.header)
    if att == "RFC822.TEXT":
        return b"RFC822.TEXT " + literal(entity.body)
    if att == "ENVELOPE":
        return b"ENVELOPE " + entity.envelope().encode()
    if att == "BODY":
        return b"BODY " + entity.bodystructure(False).encode()
    return b"BODYSTRUCTURE " + entity.bodystructure(True).encode()


def internaldate(message: Message) -> str:
    """INTERNALDATE in the zone it was given in (RFC 3501 date-time)."""
    local = time.gmtime(message.internaldate + message.zone * 60)
    sign = "-" if message.zone < 0 else "+"
    zone = abs(message.zone)
    return time.strftime("%d-%b-%Y %H:%M:%S ", local) + f"{sign}{zone // 60:02d}{zone % 60:02d}"
