"""pyftpdlib's authorizer, backed by the store: users added or re-passworded while the lab
runs log in at once, since every login asks the store."""

from __future__ import annotations

import os
from typing import Any

from pyftpdlib.authorizers import AuthenticationFailed

ANONYMOUS = ("anonymous", "ftp")
USER_PERMS = "elradfmwT"  # everything but SITE CHMOD
ANONYMOUS_PERMS = "elr"


class StoreAuthorizer:
    def __init__(self, store: Any, anonymous: bool) -> None:
        self.store = store
        self.anonymous = anonymous

    def is_anonymous(self, username: str) -> bool:
        return self.anonymous and username in ANONYMOUS

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        if self.is_anonymous(username):
            handler.session.auth(username, ok=True, mechanism="anonymous")
            return
        ok = self.store.users.check(username, password)
        handler.session.auth(username, ok=ok, mechanism="USER/PASS", secret=password)
        if not ok:
            raise AuthenticationFailed("Authentication failed.")

    def get_home_dir(self, username: str) -> str:
        if self.is_anonymous(username):
            return str(self.store.files.public)
        return str(self.store.files.home(username))

    def get_perms(self, username: str) -> str:
        return ANONYMOUS_PERMS if self.is_anonymous(username) else USER_PERMS

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        if perm not in self.get_perms(username):
            return False
        if path is not None and perm in "df":
            # The roots themselves (a home, the public area) are never deleted or renamed.
            real = os.path.realpath(path)
            roots = {os.path.realpath(self.store.files.public),
                     os.path.realpath(self.store.files.homes / username)}
            return real not in roots
        return True

    def has_user(self, username: str) -> bool:
        return self.is_anonymous(username) or self.store.users.get(username) is not None

    def get_msg_login(self, username: str) -> str:
        if self.is_anonymous(username):
            return "Anonymous login ok, read-only access to the public area."
        return f"Welcome {username}: your home is /, the shared area /public."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def impersonate_user(self, username: str, password: str) -> None:
        """Files belong to the lab's own system user: nothing to switch."""

    def terminate_impersonation(self, username: str) -> None:
        """See impersonate_user."""
