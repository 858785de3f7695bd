"""Users' homes and the public area: plain files under the data directory.

FTP, SMB and HTTP serve these same directories, so a file put by one is at once there for
the others. Paths that clients send go through services.paths before they reach these roots.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class Files:
    def __init__(self, data: Path) -> None:
        self.homes = data / "homes"
        self.public = data / "public"

    def home(self, user: str) -> Path:
        """The user's home (made if missing); its public_html is the user's web space."""
        home = self.homes / user
        (home / "public_html").mkdir(parents=True, exist_ok=True)
        return home

    def web(self, user: str) -> Path:
        return self.home(user) / "public_html"

    def ensure(self) -> None:
        self.homes.mkdir(parents=True, exist_ok=True)
        self.public.mkdir(parents=True, exist_ok=True)

    def remove_home(self, user: str) -> None:
        shutil.rmtree(self.homes / user, ignore_errors=True)
