"""IMAP faults (issue 17) as imapclient sees them: a login refused with the right
password, INBOX locked (NO [INUSE]), over quota (NO [OVERQUOTA] for APPEND, COPY, MOVE;
RFC 5530); for the target only, journaled, gone when cleared."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from tests.lab.test_faults import settled

NOTE = b"Subject: a note\r\n\r\nhello\r\n"


@pytest.fixture
def server(lab):
    server = lab.start(only="imap")
    for user in ("alice", "bob"):
        with connect(server, user) as client:
            client.append("INBOX", NOTE)
    return server


def connect(server, user: str, login: bool = True) -> IMAPClient:
    client = IMAPClient("127.0.0.1", server.port("imap", "imap"), ssl=False, timeout=30)
    if login:
        client.login(user, user)
    return client


def error(server, user: str, action: Callable[[IMAPClient], object]) -> str:
    """What the server refused of `action` (its text), or "" when it did it."""
    with connect(server, user, login=False) as client:
        try:
            client.login(user, user)
            action(client)
        except IMAPClientError as refused:
            return str(refused)
    return ""


def select(client: IMAPClient) -> object:
    return client.select_folder("INBOX")


def append(client: IMAPClient) -> object:
    return client.append("INBOX", NOTE)


def test_login_refused_with_the_right_password(server):
    server.cli("fault", "add", "imap.login-refused", "--target", "alice")
    refused = settled(lambda: error(server, "alice", lambda c: None), bool)
    assert "[AUTHENTICATIONFAILED] Authentication failed" in refused
    with pytest.raises(LoginError):
        connect(server, "alice")
    assert error(server, "bob", lambda c: c.select_folder("INBOX")) == ""
    assert "fault imap.login-refused #1" in server.journal_until("imap", "fault imap.login")
    server.cli("fault", "clear")
    assert settled(lambda: error(server, "alice", lambda c: None), lambda e: not e) == ""


def test_inbox_locked_for_one_user(server):
    server.cli("fault", "add", "imap.mailbox-locked", "--target", "alice")
    locked = settled(lambda: error(server, "alice", select), bool)
    assert "[INUSE]" in locked
    # the lock is a writer's: EXAMINE and the other folders open
    assert error(server, "alice", lambda c: c.select_folder("INBOX", readonly=True)) == ""
    assert error(server, "alice", lambda c: c.select_folder("Sent")) == ""
    assert error(server, "bob", select) == ""
    assert "fault imap.mailbox-locked #1" in server.journal_until("imap", "fault imap.mailbox")
    server.cli("fault", "clear")
    assert settled(lambda: error(server, "alice", select), lambda e: not e) == ""


def test_over_quota_refuses_append_copy_and_move(server):
    server.cli("fault", "add", "imap.over-quota", "--target", "alice")
    full = settled(lambda: error(server, "alice", append), bool)
    assert "[OVERQUOTA] Quota exceeded" in full
    with connect(server, "alice") as client:
        client.select_folder("INBOX")
        # (an APPEND before the server saw the fault may have stored one more: count now)
        before = client.search()
        for verb in (client.copy, client.move):
            with pytest.raises(IMAPClientError, match=r"\[OVERQUOTA\]"):
                verb([1], "Sent")
        assert client.search() == before  # nothing moved away
    assert error(server, "bob", append) == ""  # bob's quota is fine
    assert "fault imap.over-quota #1" in server.journal_until("imap", "fault imap.over-quota")
    server.cli("fault", "clear")
    assert settled(lambda: error(server, "alice", append), lambda e: not e) == ""
