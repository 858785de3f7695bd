"""The one identity rule, over every protocol with its real client library: a lab user
logs in as NAME or NAME@DOMAIN, in any case (SMB also DOMAIN\\NAME), and gets their own
things; an address in another domain is nobody."""

from __future__ import annotations

import base64
import ftplib
import imaplib
import poplib
import smtplib
import urllib.error
import urllib.request

import pytest

from services import credentials as credentials_module

LOGINS_OK = ["alice", "Alice", "alice@lab.test", "ALICE@LAB.TEST", " alice ", "alice@mail.lab.test"]
LOGINS_REFUSED = ["alice@elsewhere.test", "alice@", "@lab.test", "alicex", ""]


class Users:
    def __init__(self) -> None:
        self.checked: list[str] = []

    def check(self, name: str, password: str) -> bool:
        self.checked.append(name)
        return name == "alice" and password == "alice"

    def get(self, name: str):
        return None


@pytest.mark.parametrize("login", LOGINS_OK)
def test_rule_gives_the_user_name(login):
    rule = credentials_module.Credentials(Users(), {"lab.test", "mail.lab.test"})
    assert rule.check(login.strip() if login.strip() else login, "alice") == "alice"


@pytest.mark.parametrize("login", LOGINS_REFUSED)
def test_rule_refuses_what_names_nobody(login):
    assert credentials_module.Credentials(Users(), {"lab.test"}).check(login, "alice") is None


@pytest.mark.parametrize("sent", ["LAB\\alice", "WORKGROUP\\Alice", "alice@lab.test", "ALICE"])
def test_smb_forms(sent):
    assert credentials_module.Credentials(Users(), {"lab.test"}).smb_name("X", sent) == "alice"


# --- every protocol, over real sockets ----------------------------------------------------

def _smtp(server, login):
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "submission"), timeout=10) as smtp:
        try:
            smtp.login(login, "alice")
            return True
        except smtplib.SMTPAuthenticationError:
            return False


def _pop3(server, login):
    pop = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    try:
        pop.user(login)
        pop.pass_("alice")
        return True
    except poplib.error_proto:
        return False
    finally:
        pop.close()


def _imap(server, login):
    with imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"), timeout=10) as imap:
        try:
            imap.login(f'"{login}"', "alice")  # imaplib sends the name unquoted
        except imaplib.IMAP4.error:
            return False
        # whose mailboxes: alice's INBOX holds the marker message the test delivered
        imap.select("INBOX")
        return imap.search(None, "SUBJECT", "identity-marker")[1][0] != b""


def _ftp(server, login):
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port("ftp", "ftp"), timeout=10)
    try:
        ftp.login(login, "alice")
    except ftplib.error_perm:
        return False
    try:
        return "alice-only.txt" in ftp.nlst()  # alice's home, not a new one for "Alice"
    finally:
        ftp.quit()


def _http(server, login):
    token = base64.b64encode(f"{login}:alice".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port('http', 'http')}/~alice/identity.txt", data=b"mine",
        method="PUT", headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status in (201, 204)
    except urllib.error.HTTPError as error:
        assert error.code in (401, 403), error.code
        return False


def _smb(server, login):
    from impacket.smbconnection import SessionError, SMBConnection

    connection = SMBConnection("127.0.0.1", "127.0.0.1", sess_port=server.port("smb", "smb"),
                               timeout=10)
    domain, _, user = login.rpartition("\\")
    try:
        connection.login(user, "alice", domain)
        listing = connection.listPath("alice", "*")
        return any(f.get_longname() == "alice-only.txt" for f in listing)
    except SessionError:
        return False
    finally:
        connection.close()


PROTOCOLS = {"smtp": _smtp, "pop3": _pop3, "imap": _imap, "ftp": _ftp, "http": _http,
             "smb": _smb}


def test_every_protocol_follows_the_one_rule(lab):
    server = lab.start(only="smtp,pop3,imap,ftp,http,smb")
    (server.data / "homes" / "alice" / "alice-only.txt").write_text("alice's\n")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as smtp:
        smtp.sendmail("t@lab.test", ["alice@lab.test"],
                      b"Subject: identity-marker\r\n\r\nhello\r\n")
    results = {}
    for name, attempt in PROTOCOLS.items():
        logins = LOGINS_OK + (["LAB\\alice", "WORKGROUP\\Alice"] if name == "smb" else [])
        for login in logins:
            results[(name, login)] = attempt(server, login.strip() if name == "smb" else login)
        for login in LOGINS_REFUSED[:3]:
            results[(name, login)] = not attempt(server, login)
    failed = sorted(key for key, ok in results.items() if not ok)
    assert not failed, failed
