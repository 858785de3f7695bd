"""pyftpdlib's authorizer, backed by the store: users added or re-passworded while the lab
runs log in at once, since every login asks the store. pyftpdlib hands every method the
name the client typed (`Alice`, `alice@lab.test`); the lab's identity rule
(services.credentials) turns it into the user's name for the home and the permissions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyftpdlib.authorizers import AuthenticationFailed

if TYPE_CHECKING:
    from ..credentials import Credentials

ANONYMOUS = ("anonymous", "ftp")
USER_PERMS = "elradfmwT"  # everything but SITE CHMOD
ANONYMOUS_PERMS = "elr"


class StoreAuthorizer:
    def __init__(self, store: Any, credentials: Credentials, anonymous: bool) -> None:
        self.store = store
        self.credentials = credentials
        self.anonymous = anonymous

    def is_anonymous(self, username: str) -> bool:
        return self.anonymous and username.lower() in ANONYMOUS

    def _name(self, username: str) -> str:
        """The lab user a (checked) login names; only validate_authentication lets a
        session get as far as the other methods."""
        return self.credentials.name(username) or ""

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        if self.is_anonymous(username):
            handler.session.auth(username, ok=True, mechanism="anonymous")
            return
        name = self.credentials.check(username, password)
        ok = name is not None
        handler.session.auth(name or username, ok=ok, mechanism="USER/PASS", secret=password)
        if not ok:
            raise AuthenticationFailed("Authentication failed.")

    def get_home_dir(self, username: str) -> str:
        if self.is_anonymous(username):
            return str(self.store.files.public)
        return str(self.store.files.home(self._name(username)))

    def team_dir(self, username: str) -> Path | None:
        """The folder of the user's class team (mounted at /TEAM), None outside a team."""
        team = self.store.roster.team_of(self._name(username))
        return self.store.files.team(team) if team else None

    def get_perms(self, username: str) -> str:
        return ANONYMOUS_PERMS if self.is_anonymous(username) else USER_PERMS

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        if perm not in self.get_perms(username):
            return False
        if path is not None and perm in "df":
            # The roots themselves (a home, the public area) are never deleted or renamed.
            real = os.path.realpath(path)
            team = self.team_dir(username)
            roots = {os.path.realpath(self.store.files.public),
                     os.path.realpath(self.store.files.homes / self._name(username)),
                     *([os.path.realpath(team)] if team else [])}
            return real not in roots
        return True

    def has_user(self, username: str) -> bool:
        name = self._name(username)
        return self.is_anonymous(username) or (bool(name) and self.store.users.get(name) is not None)

    def get_msg_login(self, username: str) -> str:
        if self.is_anonymous(username):
            return "Anonymous login ok, read-only access to the public area."
        return f"Welcome {self._name(username)}: your home is /, the shared area /public."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        """Files belong to the lab's own system user: nothing to switch."""

    def terminate_impersonation(self, username: str) -> None:
        """See impersonate_user."""
