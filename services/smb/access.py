"""Who may use which share: the lab's rules, apart from impacket's single global model.

impacket's server knows one set of shares and one credentials table for everybody. The
lab's rule is per user: a share named after each user (their home) for that user only,
`public` for every logged-in user (and for anonymous sessions when allowed, read-only),
IPC$ for every session, and a class team's share (named after the team, its folder
DATA/teams/TEAM) for its members only. Share names are compared case-insensitively, as SMB
does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .srvsvc import STYPE_DISKTREE, STYPE_IPC, STYPE_SPECIAL, Share

PUBLIC = "public"
IPC = "ipc$"


@dataclass(frozen=True)
class Grant:
    share: str  # lower case
    path: str  # "" for IPC$
    read_only: bool


class Denied(Exception):
    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status  # "access denied" or "no such share"


def share_name(unc: str) -> str:
    """The share a TREE_CONNECT names, lower-cased: "\\\\host\\Alice" -> "alice"."""
    return unc.replace("/", "\\").rstrip("\\").rsplit("\\", 1)[-1].lower()


def grant(files: Any, users: Any, user: str | None, share: str, roster: Any = None) -> Grant:
    """What `user` (None: anonymous) gets on `share`, or Denied. `roster`: the store's
    (services.store.roster), whose teams have shares."""
    if share == IPC:
        return Grant(IPC, "", True)
    if share == PUBLIC:
        return Grant(PUBLIC, str(files.public), user is None)
    if user is not None and share == user:
        return Grant(share, str(files.home(user)), False)
    if users.get(share) is not None:
        raise Denied("access denied")  # another user's home
    if roster is not None and share in roster.teams():
        if user is not None and roster.team_of(user) == share:
            return Grant(share, str(files.team(share)), False)
        raise Denied("access denied")  # another team's folder
    raise Denied("no such share")


def visible(user: str | None, team: str = "") -> list[Share]:
    """The shares `user` (None: anonymous; in `team`) is shown (srvsvc): exactly those
    grant opens."""
    shares = [Share(user, STYPE_DISKTREE, f"{user}'s home")] if user else []
    if user and team:
        shares.append(Share(team, STYPE_DISKTREE, f"team {team}'s shared folder"))
    return [*shares, Share(PUBLIC, STYPE_DISKTREE, "files every lab user shares"),
            Share("IPC$", STYPE_IPC | STYPE_SPECIAL, "Remote IPC")]


class StoreCredentials:
    """impacket's credentials table, read from the store at each login: a user added or
    re-passworded while the lab runs logs in at once. impacket looks up the user name the
    client sent (`alice`, `Alice`, `alice@lab.test`, `LAB\\alice`); the lab's identity
    rule (services.credentials) says whose NT hash that is. The NTLMv2 proof itself is
    checked against the name as sent, as the client computed it."""

    def __init__(self, credentials: Any) -> None:
        self.credentials = credentials

    def _get(self, name: str) -> Any:
        user = self.credentials.smb_name("", name)
        return self.credentials.users.get(user) if user else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._get(name) is not None

    def __getitem__(self, name: str) -> tuple[int, bytes, bytes]:
        user = self._get(name)
        if user is None:
            raise KeyError(name)
        return 0, b"", bytes(user.nt_hash)  # (uid, LM hash: never used, NT hash)

    def __len__(self) -> int:
        return 1  # impacket checks passwords only when the table is not empty: always
