"""IMAP commands as typed values: what parser.parse_command returns (RFC 3501 section 6
and the extensions the lab speaks), one class per argument shape, as h11 types its events.

A class serves every command of the same shape (`Select` is SELECT and EXAMINE, `Copy` is
COPY, MOVE and their UID forms); `name` says which command it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- sequence sets ------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqSet:
    """Ranges of sequence numbers or UIDs; None stands for "*" (the largest in use)."""

    ranges: list[tuple[int | None, int | None]]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        out = []
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, number: int, largest: int) -> bool:
        return any(lo <= number <= hi for lo, hi in self.resolve(largest))

    def has_star(self) -> bool:
        return any(lo is None or hi is None for lo, hi in self.ranges)


def format_set(numbers: list[int]) -> str:
    """Ascending numbers as a compact sequence set ("1:3,7")."""
    out: list[str] = []
    start = prev = None
    for n in numbers:
        if prev is not None and n == prev + 1:
            prev = n
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)


# --- FETCH sections -----------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """BODY[section]<partial> of FETCH."""

    part: tuple[int, ...]
    text: str  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None  # (origin, count)
    peek: bool = False
    kind: str = "BODY"  # or BINARY, BINARY.SIZE (RFC 3516: the content decoded)

    def name(self) -> str:
        """As the response names it: BODY[spec]<origin>."""
        spec = ".".join(map(str, self.part))
        if self.kind != "BODY":
            origin = f"<{self.partial[0]}>" if self.partial else ""
            return f"{self.kind}[{spec}]{origin}"
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY[{spec}]{origin}"


FetchAtt = str | Section  # a simple attribute's name (FLAGS, UID, ...) or a body section

# A search key: (name, arguments...) as parser._search_key builds it, e.g. ("FROM", b"bob"),
# ("AND", [keys]), ("OR", key, key), ("NOT", key), ("SEQ", SeqSet).
SearchKey = tuple

# --- commands -----------------------------------------------------------------------------


@dataclass
class Command:
    """A command without arguments (CAPABILITY, NOOP, LOGOUT, IDLE, CHECK, ...); the base
    of every other command."""

    tag: str
    name: str  # upper case; "UID FETCH" etc. for the UID forms

    @property
    def uid(self) -> bool:
        return self.name.startswith("UID ")


@dataclass
class Login(Command):
    user: str
    password: str


@dataclass
class Authenticate(Command):
    mechanism: str
    initial: str | None  # SASL-IR's initial response ("=" for an empty one)


@dataclass
class MailboxCommand(Command):
    """DELETE, SUBSCRIBE, UNSUBSCRIBE: one mailbox name."""

    mailbox: str


@dataclass
class Select(MailboxCommand):
    """SELECT and EXAMINE, with CONDSTORE (RFC 7162) and QRESYNC parameters."""

    params: list[str] = field(default_factory=list)
    qresync: tuple[int, int, SeqSet | None] | None = None  # uidvalidity, modseq, known UIDs


@dataclass
class Create(MailboxCommand):
    use: list[str] = field(default_factory=list)  # CREATE-SPECIAL-USE (RFC 6154)


@dataclass
class Rename(MailboxCommand):
    new: str = ""


@dataclass
class Status(MailboxCommand):
    items: list[str] = field(default_factory=list)


@dataclass
class ListCommand(Command):
    """LIST (with RFC 5258's selection and RETURN options) and LSUB."""

    reference: str
    patterns: list[str]
    select_opts: list[str] = field(default_factory=list)
    returns: list[str] = field(default_factory=list)
    status: list[str] = field(default_factory=list)  # RETURN (STATUS (...)) (RFC 5819)


@dataclass
class AppendMessage:
    data: bytes
    flags: list[str] = field(default_factory=list)
    date: tuple[float, int] | None = None  # (timestamp, zone in minutes)
    # CATENATE (RFC 4469): the message is made of these, ("TEXT", bytes) or ("URL", url)
    catenate: list[tuple[str, bytes]] | None = None


@dataclass
class Append(MailboxCommand):
    """APPEND of one message or, with MULTIAPPEND (RFC 3502), several: all or none."""

    messages: list[AppendMessage] = field(default_factory=list)


@dataclass
class Fetch(Command):
    set: SeqSet
    atts: list[FetchAtt]
    changedsince: int | None = None
    vanished: bool = False


@dataclass
class Store(Command):
    set: SeqSet
    mode: str  # set, add, remove
    silent: bool
    flags: list[str]
    unchangedsince: int | None = None


@dataclass
class Search(Command):
    keys: list[SearchKey]
    returns: list[str] | None = None  # ESEARCH's RETURN (...) (RFC 4731); None: plain SEARCH
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL low:high) (RFC 5267 4.4)


@dataclass
class Notify(Command):
    """NOTIFY SET [STATUS] (filter (events))... or NOTIFY NONE (RFC 5465)."""

    groups: list[tuple[str, list[str], list[str]]]  # (filter, its mailboxes, events); []: NONE
    status: bool = False


@dataclass
class CancelUpdate(Command):
    """CANCELUPDATE (RFC 5267 4.3): the tags of the SEARCH ... RETURN (UPDATE) to end."""

    tags: list[str]


@dataclass
class Sort(Command):
    """SORT (RFC 5256), with ESORT's RETURN (RFC 5267)."""

    criteria: list[tuple[str, bool]]  # (key, REVERSE)
    keys: list[SearchKey]
    returns: list[str] | None = None
    partial: tuple[int, int] | None = None


@dataclass
class Thread(Command):
    algorithm: str  # ORDEREDSUBJECT or REFERENCES
    keys: list[SearchKey]


@dataclass
class Copy(Command):
    """COPY and MOVE (and UID forms)."""

    set: SeqSet
    mailbox: str


@dataclass
class UidExpunge(Command):
    set: SeqSet


@dataclass
class Enable(Command):
    caps: list[str]


@dataclass
class Id(Command):
    params: dict[str, str] | None


@dataclass
class UnknownCharset(Command):
    """A SEARCH in a charset the lab does not know: answered NO [BADCHARSET]."""

    charset: str
