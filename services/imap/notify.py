"""NOTIFY (RFC 5465) without I/O: which events a client asked for, per mailbox.

The session keeps one Notify after NOTIFY SET; it asks `events(name)` for a mailbox that
changed and sends what those events call for: the selected mailbox's EXISTS, EXPUNGE and
FETCH FLAGS as they happen, STATUS for other mailboxes, LIST for names and subscriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store.mail import INBOX

MESSAGE_EVENTS = {"MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE"}
MAILBOX_EVENTS = {"MAILBOXNAME", "SUBSCRIPTIONCHANGE"}
# Known to RFC 5465 (and RFC 5464's METADATA), but the lab has no annotations or metadata.
UNSUPPORTED = {"ANNOTATIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE"}
SPELLING = {"MESSAGENEW": "MessageNew", "MESSAGEEXPUNGE": "MessageExpunge",
            "FLAGCHANGE": "FlagChange", "MAILBOXNAME": "MailboxName",
            "SUBSCRIPTIONCHANGE": "SubscriptionChange"}


class BadEvent(ValueError):
    """An event the lab does not offer: NO [BADEVENT (what it offers)] (RFC 5465 5.10)."""

    def __init__(self) -> None:
        super().__init__("[BADEVENT (" + " ".join(SPELLING.values()) + ")] Unsupported event")


@dataclass
class Group:
    kind: str  # SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED, SUBTREE, MAILBOXES
    names: list[str]
    events: set[str]  # upper case


class Notify:
    def __init__(self, groups: list[tuple[str, list[str], list[str]]], status: bool) -> None:
        self.status = status  # STATUS now for every mailbox watched (RFC 5465 3.1)
        self.groups = []
        for kind, names, events in groups:
            wanted = {e.upper() for e in events}
            if wanted - MESSAGE_EVENTS - MAILBOX_EVENTS:
                raise BadEvent()
            self.groups.append(Group(kind, names, wanted))

    def selected(self) -> tuple[set[str], bool] | None:
        """The selected mailbox's events, and whether expunges wait for a command
        (selected-delayed); None when the client asked nothing for it."""
        for group in self.groups:
            if group.kind in ("SELECTED", "SELECTED-DELAYED"):
                return group.events & MESSAGE_EVENTS, group.kind == "SELECTED-DELAYED"
        return None

    def events(self, name: str, subscribed: set[str]) -> set[str]:
        """The events of a mailbox other than the selected one: the first group whose
        filter takes it decides (RFC 5465 6)."""
        for group in self.groups:
            if _covers(group, name, subscribed):
                return group.events
        return set()

    def wants(self, event: str) -> bool:
        return any(event in group.events for group in self.groups)


def _covers(group: Group, name: str, subscribed: set[str]) -> bool:
    kind = group.kind
    if kind == "PERSONAL":
        return True  # every mailbox of the lab is in the personal namespace
    if kind == "INBOXES":
        return name == INBOX  # the only mailbox mail is delivered to
    if kind == "SUBSCRIBED":
        return name in subscribed
    if kind == "MAILBOXES":
        return name in group.names
    if kind == "SUBTREE":
        return any(name == n or name.startswith(n + "/") for n in group.names)
    return False


def status_items(events: set[str]) -> list[str]:
    """The STATUS items that tell a client about these events in a mailbox it has not
    selected, in the order Dovecot sends them."""
    items = []
    if events & {"MESSAGENEW", "MESSAGEEXPUNGE"}:
        items.append("MESSAGES")
    if "MESSAGENEW" in events:
        items += ["UIDNEXT", "UIDVALIDITY"]
    if "FLAGCHANGE" in events:
        if "UIDVALIDITY" not in items:
            items.append("UIDVALIDITY")
        items.append("HIGHESTMODSEQ")  # what changes with a flag (CONDSTORE's counter)
    return items
