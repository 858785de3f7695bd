"""One session's view of its selected mailbox: its own sequence numbers (RFC 3501 2.3.1.2).

The store is the truth; the view is what this session has told its client. `sync()`
compares the two through the mailbox's mod-sequence and returns what the client must be
told: new messages, changed flags, expunged UIDs. Expunges wait (as "ghosts" that keep
their sequence numbers) until the session may report them: never during FETCH, STORE or
SEARCH (RFC 3501 7.4.1).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from ..store import DiskFull
from ..store.mail import Mail, Mailbox, Message


@dataclass
class Changes:
    new_uids: list[int] = field(default_factory=list)  # appended to the view: EXISTS
    flags: list[int] = field(default_factory=list)  # UIDs whose flags changed
    expunged: list[int] = field(default_factory=list)  # UIDs removed from the view, ascending
    gone: bool = False  # the mailbox was deleted or renamed away


class View:
    def __init__(self, mail: Mail, mailbox: Mailbox, readonly: bool) -> None:
        self.mail = mail
        self.mailbox = mailbox
        self.id = mailbox.id
        self.readonly = readonly
        messages = mail.messages(mailbox.id)
        self.uids: list[int] = [m.uid for m in messages]
        self.index: dict[int, Message] = {m.uid: m for m in messages}
        self.modseq = mailbox.modseq
        self.ghosts: set[int] = set()  # expunged in the store, not yet reported
        self.recent: set[int] = set()
        self.uidnext = mailbox.uidnext
        self.defined = self.keywords()  # keywords the client was told of in FLAGS
        self._claim(self.uids)

    def _claim(self, uids: list[int]) -> None:
        if not uids:
            return
        if self.readonly:  # EXAMINE sees \Recent without taking it from other sessions
            mark = self.mail.recent_mark(self.id)
        else:
            try:
                mark = self.mail.claim_recent(self.id, uids[-1])
            except DiskFull:  # \Recent is a hint: on a full disk nobody gets it, no error
                mark = uids[-1]
        self.recent.update(uid for uid in uids if uid > mark)

    # --- numbers ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.uids)

    def seq(self, uid: int) -> int:
        """The sequence number of a UID in the view (0 if absent)."""
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0

    def uid(self, seq: int) -> int:
        return self.uids[seq - 1]

    def largest_uid(self) -> int:
        return self.uids[-1] if self.uids else 0

    def flags(self, uid: int) -> frozenset[str]:
        return self.index[uid].flags

    def flag_text(self, uid: int) -> str:
        """The parenthesised FLAGS of a message as this session sees it: system flags
        first, then keywords, and \\Recent when this session holds it."""
        flags = sorted(self.flags(uid), key=_flag_order)
        if uid in self.recent:
            flags.append("\\Recent")
        return "(" + " ".join(flags) + ")"

    def flags_items(self, uid: int, with_uid: bool, modseq: bool) -> str:
        """The FETCH items of a flag change: [UID n] FLAGS (...) [MODSEQ (m)] (CONDSTORE)."""
        items = f"FLAGS {self.flag_text(uid)}"
        if with_uid:
            items = f"UID {uid} " + items
        if modseq:
            items += f" MODSEQ ({self.index[uid].modseq})"
        return items

    def unseen_first(self) -> int:
        for seq, uid in enumerate(self.uids, 1):
            if "\\Seen" not in self.index[uid].flags:
                return seq
        return 0

    def keywords(self) -> set[str]:
        return {f for m in self.index.values() for f in m.flags if not f.startswith("\\")}

    def new_keywords(self, uids: list[int]) -> bool:
        """Whether these messages carry keywords the client has not been told of (RFC
        3501 7.2.6: FLAGS must list every flag in use); if so they count as told now."""
        fresh = {f for uid in uids if uid in self.index for f in self.index[uid].flags
                 if not f.startswith("\\")} - self.defined
        self.defined |= fresh
        return bool(fresh)

    # --- changes ----------------------------------------------------------------------

    def update(self, message: Message) -> None:
        """A message this session changed itself (STORE): the view follows at once."""
        if message.uid in self.index:
            self.index[message.uid] = message

    def remove(self, uids: list[int]) -> list[tuple[int, int]]:
        """Take UIDs out of the view; returns (seq, uid) in the order they must be
        reported as EXPUNGE (each number as it was when its response is sent)."""
        out = []
        for uid in sorted(set(uids), reverse=True):
            seq = self.seq(uid)
            if seq:
                out.append((seq, uid))
                del self.uids[seq - 1]
                del self.index[uid]
                self.recent.discard(uid)
                self.ghosts.discard(uid)
        return out

    def sync(self, allow_expunge: bool, condstore: bool = False) -> Changes:
        """What changed in the store since the last sync. With `condstore` a message
        whose mod-sequence moved counts as changed even when its flags came back to what
        they were (another session's +FLAGS then -FLAGS): a CONDSTORE client keeps each
        message's MODSEQ, and imaptest's checkpoints compare them across sessions."""
        changes = Changes()
        mailbox = self.mail.mailbox_by_id(self.id)
        if mailbox is None or mailbox.user != self.mailbox.user:
            changes.gone = True
            return changes
        self.mailbox = mailbox
        self.uidnext = mailbox.uidnext
        if mailbox.modseq != self.modseq:
            since = self.modseq
            changed = self.mail.messages(self.id, changed_since=since)
            vanished = self.mail.vanished(self.id, since)
            self.modseq = mailbox.modseq
            largest = self.largest_uid()
            fresh = []
            for message in changed:
                old = self.index.get(message.uid)
                if old is None:
                    if message.uid > largest:
                        fresh.append(message)
                elif message.uid not in self.ghosts:
                    self.index[message.uid] = message
                    if old.flags != message.flags or (condstore and old.modseq != message.modseq):
                        changes.flags.append(message.uid)
            self.ghosts.update(uid for uid in vanished if uid in self.index)
            for message in fresh:
                self.uids.append(message.uid)
                self.index[message.uid] = message
            changes.new_uids = [m.uid for m in fresh]
            self._claim([m.uid for m in fresh])
        if allow_expunge and self.ghosts:
            changes.expunged = sorted(self.ghosts)
        return changes


def _flag_order(flag: str) -> tuple[int, str]:
    return (0 if flag.startswith("\\") else 1, flag)
