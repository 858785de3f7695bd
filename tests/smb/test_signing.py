"""Incoming signatures (MS-SMB2 3.3.5.2.4), which impacket's server never checked: on a
signed session a request with a bad signature, or without one where the session requires
signing, is refused with STATUS_ACCESS_DENIED and journaled; a real client that signs
(smbclient) still works, and the connection goes on serving after a refusal."""

from __future__ import annotations

import os

import pytest

from tests.conftest import need
from tests.ftputil import journal, smbclient
from tests.smb.test_clients import impacket_login
from tests.smb.test_wire import STATUS_SUCCESS, request

STATUS_ACCESS_DENIED = 0xC0000022


def in_clear(connection):
    """impacket's client seals every message of a 3.x session that can: not these."""
    from impacket import smb3structs as smb2

    connection.getSMBServer()._Session["SessionFlags"] &= ~smb2.SMB2_SESSION_FLAG_ENCRYPT_DATA
    return connection


def echo(connection) -> int:
    """An SMB2 ECHO as impacket's client sends it (signed when its session signs): its status."""
    from impacket import smb3structs as smb2

    return request(connection, smb2.SMB2_ECHO, 0, smb2.SMB2Echo())["Status"]


def tampered(connection) -> None:
    """From now on the client's signatures are wrong in one bit."""
    smb3 = connection.getSMBServer()
    sign = smb3.signSMB

    def bad(packet) -> None:
        sign(packet)
        signature = bytearray(packet["Signature"])
        signature[0] ^= 1
        packet["Signature"] = bytes(signature)
    smb3.signSMB = bad


@pytest.mark.parametrize("dialect", [0x0210, 0x0300, 0x0311])  # HMAC-SHA256, CMAC, CMAC
def test_a_bad_or_missing_signature_is_refused_on_a_session_that_requires_signing(lab, dialect):
    server = lab.start(only="smb", config="[smb]\nsigning_required = true\n")
    connection = in_clear(impacket_login(server, preferredDialect=dialect))
    smb3 = connection.getSMBServer()
    assert smb3._Session["SigningActivated"]  # impacket's client signs what follows
    assert echo(connection) == STATUS_SUCCESS
    sign = smb3.signSMB
    tampered(connection)
    assert echo(connection) == STATUS_ACCESS_DENIED
    smb3.signSMB = sign
    smb3._Session["SigningActivated"] = False  # an unsigned request
    assert echo(connection) == STATUS_ACCESS_DENIED
    smb3._Session["SigningActivated"] = True
    assert echo(connection) == STATUS_SUCCESS  # the connection still serves signed requests
    connection.close()
    server.stop()
    refusals = [e["text"] for e in journal(server.data, "smb") if e["text"].startswith("refused")]
    assert refusals == [f"refused command 0x0d MessageId {mid}: {why}" for mid, why in (
        (4, "bad signature"), (5, "unsigned, and the session requires signing"))], refusals


def test_a_bad_signature_is_refused_even_when_signing_is_only_enabled(lab):
    """Signing not required: an unsigned request is fine, a signed one must verify."""
    server = lab.start(only="smb")
    connection = impacket_login(server, preferredDialect=0x0210)
    smb3 = connection.getSMBServer()
    assert not smb3._Session["SigningActivated"]
    assert echo(connection) == STATUS_SUCCESS
    smb3._Session["SigningActivated"] = True
    assert echo(connection) == STATUS_SUCCESS  # signed and right
    tampered(connection)
    assert echo(connection) == STATUS_ACCESS_DENIED
    connection.close()


@pytest.mark.parametrize("protection", ["sign", "encrypt"])
def test_smbclient_signing_or_sealing_is_verified_and_served(lab, tmp_path, protection):
    need("smbclient")
    server = lab.start(only="smb", config="[smb]\nsigning_required = true\n")
    (tmp_path / "s.txt").write_bytes(os.urandom(3 << 20))
    os.chdir(tmp_path)
    result = smbclient(server, "alice", "put s.txt; get s.txt back.txt; ls", "alice", None,
                       "--client-protection", protection)
    assert result.returncode == 0 and "NT_STATUS" not in result.stdout, result.stdout + result.stderr
    assert (tmp_path / "back.txt").read_bytes() == (tmp_path / "s.txt").read_bytes()
    server.stop()
    assert not [e for e in journal(server.data, "smb") if e["text"].startswith("refused")]
