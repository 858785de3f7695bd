"""Where mail goes: recipient addresses to lab users, and delivery into their INBOX.

Local domains are the lab's domain, the mail hosts' names in it, [smtp] domains, and each
class team's domain (TEAM.LABDOMAIN, from the store's roster: a running lab takes a new team
within a poll). At a team's domain a member is themselves and any other local part is the
team's catch-all: every member gets it.
A local address is a user (NAME, NAME+detail), or an [smtp] address_aliases entry; an
unknown one is 550 5.1.1; any other domain is 554 relay denied, unless [smtp] catch_all
names a user who then gets everything (CI mode, like Mailpit).

A delivery is acknowledged (250) only once the store has it on disk. With a group commit
(commit.py) the deliveries of concurrent sessions share one transaction and one fsync.
"""

from __future__ import annotations

import email.utils
import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store import is_disk_full

if TYPE_CHECKING:
    from ..store import Store

# RFC 5321 dot-atom or quoted-string local part, then a domain or an address literal.
ADDRESS_RE = re.compile(
    r'^(?:[A-Za-z0-9!#$%&\'*+/=?^_`{|}~.-]+|"(?:[^"\\\r\n]|\\.)*")'
    r"(?:@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\]))?$")

TEAM = "team:"  # a Verdict's user that is a team's catch-all (no user name has a colon)


def address_literal(address: str) -> str:
    """An address as SMTP writes it (RFC 5321 4.1.3): [192.0.2.1], [IPv6:2001:db8::1]."""
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


def valid_address(address: str) -> bool:
    return len(address) <= 254 and bool(ADDRESS_RE.match(address))


@dataclass(frozen=True)
class Verdict:
    """What RCPT TO answers: the reply, and the user it delivers to when accepted."""

    code: int
    text: str
    user: str | None = None


Writer = Callable[[list[tuple[str, str, bytes]],
                   Callable[[list[tuple[int, int] | None] | Exception], None]], None]


@dataclass(frozen=True)
class Delivery:
    queue_id: str
    delivered: list[tuple[str, int]]  # (user, uid)
    error: str = ""  # why nothing could be stored (the client should try again later)
    disk_full: bool = False  # ...because the disk is full


def write_now(store: Store) -> Writer:
    """Each delivery in its own transaction, before returning (no group commit)."""

    def write(items: list[tuple[str, str, bytes]],
              done: Callable[[list[tuple[int, int] | None] | Exception], None]) -> None:
        try:
            results: list[tuple[int, int] | None] | Exception = store.mail.append_many(items)
        except Exception as error:  # the store could not take it
            results = error
        done(results)

    return write


class MailDrop:
    def __init__(self, store: Store, hostname: str, local_domains: set[str],
                 aliases: dict[str, str], catch_all: str, write: Writer | None = None,
                 lab_domain: str = "") -> None:
        self.store = store
        self.lab_domain = lab_domain  # "": no team domains
        self.write = write or write_now(store)
        self.hostname = hostname
        self.local_domains = {d.lower() for d in local_domains}
        self.aliases = {k.lower(): v for k, v in aliases.items()}
        self.catch_all = catch_all

    def room(self) -> int:
        """Bytes free where messages are stored (for MAIL FROM's SIZE=): a statvfs."""
        return shutil.disk_usage(self.store.data).free

    def resolve(self, address: str) -> Verdict:
        local, at, domain = address.rpartition("@") if "@" in address else (address, "", "")
        domain = domain.lower()
        team = self.store.roster.domains(self.lab_domain).get(domain) if at and \
            self.lab_domain else None
        if team is not None:
            member = local.lower().split("+", 1)[0]
            if member in self.store.roster.teams().get(team, ()):
                return Verdict(250, f"2.1.5 <{address}>: OK", member)
            return Verdict(250, f"2.1.5 <{address}>: OK (team {team})", TEAM + team)
        if at and domain not in self.local_domains:
            if self.catch_all:
                return self._user(self.catch_all, address)
            return Verdict(554, f"5.7.1 <{address}>: Relay access denied")
        local = local.lower()
        for key in (f"{local}@{domain}" if domain else None, local):
            if key and key in self.aliases:
                return self._user(self.aliases[key], address)
        name = local.split("+", 1)[0]
        if self.store.users.get(name) is not None:
            return Verdict(250, f"2.1.5 <{address}>: OK", name)
        if self.catch_all:
            return self._user(self.catch_all, address)
        return Verdict(550, f"5.1.1 <{address}>: Recipient address rejected: User unknown")

    def _user(self, name: str, address: str) -> Verdict:
        if self.store.users.get(name) is None:  # an alias or catch-all naming nobody
            return Verdict(550, f"5.1.1 <{address}>: Recipient address rejected: User unknown")
        return Verdict(250, f"2.1.5 <{address}>: OK", name)

    def deliver(self, sender: str, recipients: list[tuple[str, str]], body: bytes, *,
                helo: str, peer: str, protocol: str, then: Callable[[Delivery], None]) -> None:
        """Store `body` in each recipient user's INBOX, with Return-Path and Received
        prepended; `recipients` are (address, user). `then(Delivery)` is called once the
        messages are on disk (at once, or later when a group commit is used)."""
        queue_id = secrets.token_hex(6).upper()
        date = email.utils.formatdate(localtime=True)
        by_user: dict[str, list[str]] = {}
        for address, user in recipients:
            team = user[len(TEAM):] if user.startswith(TEAM) else None
            for name in self.store.roster.teams().get(team, ()) if team is not None else [user]:
                by_user.setdefault(name, []).append(address)
        items = []
        for user, addresses in by_user.items():
            # "for" only when there is one recipient: it would disclose Bcc recipients.
            towards = f"\r\n\tfor <{addresses[0]}>" if len(addresses) == 1 else ""
            trace = (f"Return-Path: <{sender}>\r\n"
                     f"Received: from {helo} ({address_literal(peer)})\r\n"
                     f"\tby {self.hostname} (protolab) with {protocol} id {queue_id}"
                     f"{towards}; {date}\r\n").encode("utf-8", "replace")
            items.append((user, "INBOX", trace + body))

        def stored(results: list[tuple[int, int] | None] | Exception) -> None:
            if isinstance(results, Exception):
                then(Delivery(queue_id, [], str(results), is_disk_full(results)))
                return
            delivered = [(item[0], r[1]) for item, r in zip(items, results, strict=True) if r]
            missing = [item[0] for item, r in zip(items, results, strict=True) if r is None]
            then(Delivery(queue_id, delivered, f"no INBOX for {', '.join(missing)}"
                          if missing and not delivered else ""))

        self.write(items, stored)

