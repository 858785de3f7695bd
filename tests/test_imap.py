"""IMAP with real clients over real sockets: Python's imaplib and IMAPClient first."""

from __future__ import annotations

import imaplib
import ssl
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

MESSAGE = (b"From: Bob <bob@lab.test>\r\nTo: alice@lab.test\r\nSubject: hello\r\n"
           b"Date: Sun, 22 Nov 2026 04:00:00 +0000\r\nMessage-ID: <1@lab.test>\r\n\r\n"
           b"Hello Alice,\r\nthis is the body.\r\n")


def connect(server, user: str = "alice") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    client.login(user, user)
    return client


@pytest.fixture
def imap(lab):
    return lab.start(only="imap")


def test_login_append_select_fetch(imap):
    client = connect(imap)
    typ, data = client.append("INBOX", r"(\Flagged)", None, MESSAGE)
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = client.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    for code in ("UIDVALIDITY", "UIDNEXT", "PERMANENTFLAGS", "HIGHESTMODSEQ"):
        assert client.untagged_responses.get(code), code
    typ, data = client.fetch("1", "(FLAGS RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == MESSAGE
    assert b"RFC822.SIZE %d" % len(MESSAGE) in data[0][0]
    assert b"\\Flagged" in data[0][0] and b"\\Seen" not in data[0][0]
    # BODY[] (not PEEK) sets \Seen and says so.
    typ, data = client.fetch("1", "(BODY[TEXT])")
    assert data[0][1] == b"Hello Alice,\r\nthis is the body.\r\n"
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    assert client.logout()[0] == "BYE"


def test_partial_fetch_and_header_fields(imap):
    client = connect(imap)
    client.append("INBOX", None, None, MESSAGE)
    client.select("INBOX")
    typ, data = client.fetch("1", "(BODY.PEEK[]<5.10>)")
    assert data[0][0].endswith(b"BODY[]<5> {10}") and data[0][1] == MESSAGE[5:15]
    typ, data = client.fetch("1", "(BODY.PEEK[]<1000.10>)")
    assert data[0][0].endswith(b"BODY[]<1000> {0}") or b'BODY[]<1000> ""' in data[0][0]
    typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert data[0][1] == b"From: Bob <bob@lab.test>\r\nSubject: hello\r\n\r\n"
    typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM)])")
    assert b"Subject" not in data[0][1] and b"Message-ID: <1@lab.test>" in data[0][1]


def test_bad_commands_keep_the_session(imap):
    client = connect(imap)
    for bad in ("FETCH", "FOO BAR", 'LIST "unterminated'):
        tag = client._new_tag().decode()
        client.send(f"{tag} {bad}\r\n".encode())
        line = client.readline()
        assert line.startswith(f"{tag} BAD".encode()), line
    assert client.noop()[0] == "OK"


def test_plaintext_switch_off_means_logindisabled(lab):
    server = lab.start(only="imap", config="[imap]\nplaintext_auth = false\n")
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    assert "LOGINDISABLED" in client.capabilities
    assert "AUTH=PLAIN" not in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login("alice", "alice")
    context = ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt"))
    client.starttls(context)
    assert "AUTH=PLAIN" in client.capabilities
    assert client.login("alice", "alice")[0] == "OK"


def test_imaps(imap):
    context = ssl.create_default_context(cafile=str(imap.data / "tls" / "ca.crt"))
    client = imaplib.IMAP4_SSL("127.0.0.1", imap.port("imap", "imaps"), ssl_context=context)
    assert client.login("alice", "alice")[0] == "OK"
    assert client.select("Sent")[0] == "OK"


def test_wrong_password_and_other_users_mail(imap):
    client = imaplib.IMAP4("127.0.0.1", imap.port("imap", "imap"))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("alice", "bob")
    bob = connect(imap, "bob")
    bob.append("INBOX", None, None, MESSAGE)
    alice = connect(imap)
    alice.select("INBOX")
    assert alice.search(None, "ALL") == ("OK", [b""])


def test_check_probe(imap):
    result = imap.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imap" in result.stdout
