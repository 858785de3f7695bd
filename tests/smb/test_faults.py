"""SMB's faults with Samba's smbclient and impacket's client (issue 17): access denied on
a share or for a user, signing required for a login or an address; journaled when they
act, for their target only, gone when cleared."""

from __future__ import annotations

import pytest

from tests.conftest import LabFactory, need
from tests.ftputil import smbclient
from tests.lab.test_faults import settled
from tests.smb.test_clients import impacket_login

DENIED = "tree connect failed: NT_STATUS_ACCESS_DENIED"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    need("smbclient")
    factory = LabFactory(tmp_path_factory.mktemp("smbfaults"))
    server = factory.start(only="smb")
    yield server
    problems = factory.cleanup()
    assert not problems, problems


@pytest.fixture
def fault(server):
    """fault(KIND, TARGET) -> "#N"; every fault is cleared after the test."""
    def add(kind: str, target: str) -> str:
        on = server.cli("fault", "add", kind, "--target", target)
        assert on.returncode == 0, on.stderr
        return on.stdout.split()[1]
    yield add
    assert server.cli("fault", "clear").returncode == 0


def test_access_denied_on_a_share(server, fault):
    number = fault("smb.access-denied", "public")
    hit = settled(lambda: smbclient(server, "public", "ls"), lambda r: r.returncode != 0)
    assert DENIED in hit.stdout + hit.stderr
    assert DENIED in (lambda r: r.stdout + r.stderr)(smbclient(server, "public", "ls", "bob"))
    assert smbclient(server, "alice", "ls").returncode == 0  # another share works on
    listed = smbclient(server, "", "", "alice", None, "-L", "127.0.0.1")
    assert "public          Disk" in listed.stdout  # still listed, as Windows does
    assert f"fault smb.access-denied {number}" in server.journal_until("smb", "fault smb.access")
    server.cli("fault", "clear")
    assert settled(lambda: smbclient(server, "public", "ls"),
                   lambda r: r.returncode == 0).returncode == 0


def test_access_denied_for_a_user_leaves_the_others(server, fault):
    fault("smb.access-denied", "bob")
    hit = settled(lambda: smbclient(server, "bob", "ls", "bob"), lambda r: r.returncode != 0)
    assert DENIED in hit.stdout + hit.stderr
    for share in ("alice", "public"):
        assert smbclient(server, share, "ls").returncode == 0


def test_signing_required_for_a_login(server, fault):
    """The NEGOTIATE was before the login: a client that chose not to sign is refused at
    its first unsigned request, as MS-SMB2 3.3.5.2.4 says; one that signs works."""
    number = fault("smb.signing-required", "alice")
    unsigned = ("--client-protection=off",)

    def attempt():
        return smbclient(server, "alice", "ls", "alice", None, *unsigned)
    hit = settled(attempt, lambda r: r.returncode != 0)
    assert "NT_STATUS_ACCESS_DENIED listing \\*" in hit.stdout + hit.stderr
    signed = smbclient(server, "alice", "ls", "alice", None, "--client-protection=sign")
    assert signed.returncode == 0 and "public_html" in signed.stdout
    assert smbclient(server, "bob", "ls", "bob", None, *unsigned).returncode == 0
    journal = server.journal_until("smb", "an unsigned request refused")
    assert f"fault smb.signing-required {number}: an unsigned request refused" in journal
    server.cli("fault", "clear")
    assert settled(attempt, lambda r: r.returncode == 0).returncode == 0


def test_signing_required_for_an_address_is_announced(server, fault):
    """For the client's address the NEGOTIATE says it: clients sign, even smbclient told
    not to (Samba's SMB2 client signs whenever the server requires it)."""
    fault("smb.signing-required", "127.0.0.9")  # another address: not this client

    def required() -> bool:
        from impacket.smb3structs import SMB2_DIALECT_30

        # (3.0: impacket's client takes every 3.1.1 session as one that must sign)
        connection = impacket_login(server, preferredDialect=SMB2_DIALECT_30)
        try:
            return connection.isSigningRequired()
        finally:
            connection.close()
    assert not required()
    fault("smb.signing-required", "127.0.0.1")
    assert settled(required, lambda r: r) is True
    assert smbclient(server, "alice", "ls", "alice", None,
                     "--client-protection=off").returncode == 0
    server.cli("fault", "clear")
    assert settled(required, lambda r: not r) is False
