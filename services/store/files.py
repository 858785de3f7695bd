"""Users' homes and the public area: plain files under the data directory.

FTP, SMB and HTTP serve these same directories, so a file put by one is at once there for
the others. Paths that clients send go through services.paths before they reach these roots.

A root is where the path rule starts, so it is checked here: a home is named by a valid
user name (never "..", "a/b" or "" from a client that slipped past its protocol's checks),
and a home that is a link (out of homes/, or to another user's home) is refused, since
every protocol would serve its target as that user's files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import Invalid, check_name
from .db import StoreError

# Files being uploaded (FTP STOR, HTTP PUT) are written under this prefix beside their
# name and renamed over it only when whole; every protocol hides them from listings.
TEMP_PREFIX = ".protolab-upload-"
STALE_SECONDS = 3600  # a temporary nobody wrote to for this long was left by a kill -9


class Files:
    def __init__(self, data: Path) -> None:
        self.homes = data / "homes"
        self.public = data / "public"
        self.teams = data / "teams"

    def home(self, user: str) -> Path:
        """The user's home (made if missing); its public_html is the user's web space.
        StoreError for a name that is not a user name or a home that leads out of homes/."""
        home = self._home(user)
        (home / "public_html").mkdir(parents=True, exist_ok=True)
        if os.path.realpath(home) != os.path.join(os.path.realpath(self.homes), user):
            raise StoreError(f"the home of {user!r} leads out of {self.homes}: refused")
        return home

    def team(self, team: str) -> Path:
        """A class team's shared folder (made if missing); `team` is one DNS label, as
        the roster checks, and checked again here as a name (the root of a path rule)."""
        self._home(team)  # a valid name, or StoreError
        folder = self.teams / team
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def web(self, user: str) -> Path:
        return self.home(user) / "public_html"

    def ensure(self) -> None:
        self.homes.mkdir(parents=True, exist_ok=True)
        self.public.mkdir(parents=True, exist_ok=True)

    def sweep_temporaries(self, now: float | None = None) -> int:
        """Remove upload temporaries left by a process that was killed mid-upload; those
        still written to (another process's upload in progress) are younger than
        STALE_SECONDS and stay. Returns how many went."""
        import time

        cutoff = (time.time() if now is None else now) - STALE_SECONDS
        removed = 0
        for root in (self.homes, self.public):
            for directory, _dirs, names in os.walk(root):  # never follows links out
                for name in names:
                    path = os.path.join(directory, name)
                    try:
                        if name.startswith(TEMP_PREFIX) and os.lstat(path).st_mtime < cutoff:
                            os.unlink(path)
                            removed += 1
                    except OSError:
                        continue  # gone already, or not ours to remove
        return removed

    def remove_home(self, user: str) -> None:
        shutil.rmtree(self._home(user), ignore_errors=True)

    def _home(self, user: str) -> Path:
        try:
            check_name(user)
        except Invalid as error:
            raise StoreError(error.message) from None
        return self.homes / user
