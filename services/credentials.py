"""The one identity rule: which lab user a login names, for every protocol.

A student types the user name, or the mail address (Thunderbird's account wizard and most
tutorials do), in any case; Windows sends `DOMAIN\\user` or `user@domain`. Every protocol
asks this module, so one login name gets one answer everywhere:

    alice, Alice, ALICE                      -> alice
    alice@lab.test, ALICE@LAB.TEST           -> alice   (the lab's domain or a mail domain)
    alice@team07.lab.test                    -> alice   (a class team's domain, live)
    alice@elsewhere.test                     -> nobody  (not a lab address)
    LAB\\alice, WORKGROUP\\alice (SMB only)   -> alice   (the NTLM domain is not checked, as
                                                         a standalone Samba server does)
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .store.users import Users


class Credentials:
    def __init__(self, users: Users, domains: Iterable[str],
                 more: Callable[[], Container[str]] = frozenset) -> None:
        self.users = users
        self.domains = {domain.lower().rstrip(".") for domain in domains}
        self.more = more  # the domains that come and go with the store (class teams')

    def name(self, login: str) -> str | None:
        """The lab user `login` names (not checked to exist), or None when it cannot name
        one: an address in a domain that is not the lab's."""
        login = login.strip()
        local, at, domain = login.rpartition("@")
        if at:
            domain = domain.lower().rstrip(".")
            if domain not in self.domains and domain not in self.more():
                return None
            login = local
        name = login.lower()
        return name or None

    def smb_name(self, domain: str, user: str) -> str | None:
        """SMB's pair (NTLM domain, user): the domain field is not checked; the user field
        may itself be `DOMAIN\\user` or `user@domain` (smbclient -U passes them on)."""
        user = user.rsplit("\\", 1)[-1]
        return self.name(user)

    def check(self, login: str, password: str) -> str | None:
        """The user's name if `password` is theirs, else None."""
        name = self.name(login)
        return name if name and self.users.check(name, password) else None

    def plaintext(self, login: str) -> tuple[str, str] | None:
        """(name, password in clear) when the store keeps it; for APOP and CRAM-MD5."""
        name = self.name(login)
        user = self.users.get(name) if name else None
        if user is None or user.plaintext is None:
            return None
        return user.name, user.plaintext
