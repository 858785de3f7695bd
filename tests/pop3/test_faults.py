"""POP3 faults (issue 17) as curl sees them: a login refused with the right password, a
mailbox locked (-ERR [IN-USE], RFC 2449); for the target only, journaled, gone when cleared."""

from __future__ import annotations

import pytest

from tests.conftest import need
from tests.lab.test_faults import settled
from tests.pop3.test_clients import curl
from tests.pop3.test_server import deliver


@pytest.fixture
def server(lab):
    need("curl")
    server = lab.start(only="pop3")
    for user in ("alice", "bob"):
        deliver(server, user, f"Subject: for {user}\r\n\r\nhi\r\n".encode())
    return server


def pop3(server, user: str):
    return curl(server, f"pop3://127.0.0.1:{server.port('pop3', 'pop3')}/1", "-v", "-u",
                f"{user}:{user}")


@pytest.mark.parametrize("kind, reply", [
    ("pop3.login-refused", b"< -ERR [AUTH] Authentication failed"),
    ("pop3.mailbox-locked", b"< -ERR [IN-USE] Mailbox is locked by another POP3 session"),
])
def test_curl_is_refused_for_the_target_only(server, kind, reply):
    assert server.cli("fault", "add", kind, "--target", "bob").returncode == 0
    refused = settled(lambda: pop3(server, "bob"), lambda r: r.returncode != 0)
    assert refused.returncode == 67 and reply in refused.stderr, refused.stderr  # login denied
    other = pop3(server, "alice")
    assert other.returncode == 0 and b"for alice" in other.stdout
    assert f"fault {kind} #1" in server.journal_until("pop3", f"fault {kind}")
    server.cli("fault", "clear")
    again = settled(lambda: pop3(server, "bob"), lambda r: r.returncode == 0)
    assert b"for bob" in again.stdout
