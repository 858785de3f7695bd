"""Who may use which SMB share (services.smb.access), without sockets."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.credentials import Credentials
from services.smb.access import Denied, StoreCredentials, grant, share_name
from services.store.files import Files


class Users:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def get(self, name: str):
        return type("User", (), {"nt_hash": b"h" * 16})() if name in self.names else None


@pytest.mark.parametrize("unc, share", [("\\\\host\\Alice", "alice"), ("\\\\1.2.3.4\\IPC$", "ipc$"),
                                        ("PUBLIC", "public"), ("\\\\h\\bob\\", "bob"),
                                        ("//h/Bob", "bob")])
def test_share_names_are_folded(unc, share):
    assert share_name(unc) == share


def test_each_user_gets_their_home_and_public(tmp_path: Path):
    files, users = Files(tmp_path), Users("alice", "bob")
    home = grant(files, users, "alice", "alice")
    assert home.path == str(tmp_path / "homes/alice") and not home.read_only
    assert not grant(files, users, "alice", "public").read_only
    assert grant(files, users, "alice", "ipc$").path == ""
    with pytest.raises(Denied, match="access denied"):
        grant(files, users, "alice", "bob")
    with pytest.raises(Denied, match="no such share"):
        grant(files, users, "alice", "nosuch")


def test_anonymous_gets_public_read_only_and_nothing_else(tmp_path: Path):
    files, users = Files(tmp_path), Users("alice")
    assert grant(files, users, None, "public").read_only
    with pytest.raises(Denied):
        grant(files, users, None, "alice")


def test_credentials_come_from_the_store_case_insensitively():
    users = Users("alice")
    credentials = StoreCredentials(Credentials(users, {"lab.test"}))
    assert "ALICE" in credentials and "carol" not in credentials and len(credentials) > 0
    assert credentials["Alice"] == (0, b"", b"h" * 16)
    users.names.add("carol")  # added while the lab runs: known at the next login
    assert "carol" in credentials
