"""The SMTP state machine without sockets: a real store, lines in, replies out."""

from __future__ import annotations

import base64
import hmac
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.credentials import Credentials
from services.journal import Journal
from services.smtp.core import COMMAND_LIMIT, Options, SMTPConversation
from services.smtp.delivery import MailDrop, valid_address
from services.store import Store
from services.store.mail import crlf

DOMAINS = {"lab.test", "mail.lab.test"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("data"), keep_plaintext=True)
    store.users.add("alice", "alice")
    store.users.add("bob", "bob")
    return store


class Client:
    def __init__(self, store: Store, tmp: Path, secure: bool = False, **overrides) -> None:
        values = dict(hostname="mail.lab.test", size_limit=10_000, plaintext_auth=True,
                      auth_required=False, cram=True, starttls=True, max_errors=5)
        values.update(overrides)
        catch_all = values.pop("catch_all", "")
        options = Options(**values)
        self.journal = Journal(tmp / "journal")
        session = self.journal.open("smtp", "127.0.0.1:1")
        drop = MailDrop(store, "mail.lab.test", DOMAINS, {"info": "bob", "x@lab.test": "alice"},
                        catch_all)
        self.core = SMTPConversation(session, options, drop, Credentials(store.users, DOMAINS),
                                     secure, "127.0.0.1")
        self.core.greet()
        self.greeting = self.take()
        self.store = store

    def take(self) -> list[str]:
        return self.core.take().decode().split("\r\n")[:-1]

    def send(self, *lines: str | bytes) -> list[str]:
        for line in lines:
            self.core.receive(line.encode() if isinstance(line, str) else line)
        return self.take()

    def code(self, line: str | bytes) -> int:
        return int(self.send(line)[-1][:3])


def inbox(store: Store, user: str) -> list[bytes]:
    box = store.mail.mailbox(user, "INBOX")
    return [store.mail.data(box.id, m.uid) for m in store.mail.messages(box.id)]


def test_ehlo_lists_the_extensions(store, tmp_path):
    client = Client(store, tmp_path)
    assert client.greeting == ["220 mail.lab.test ESMTP protolab"]
    lines = client.send("EHLO pc1")
    assert [line[4:] for line in lines[1:]] == [
        "PIPELINING", "SIZE 10000", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS",
        "AUTH PLAIN LOGIN CRAM-MD5", "HELP"]
    assert all(line.startswith("250-") for line in lines[:-1]) and lines[-1].startswith("250 ")


def test_delivery_with_trace_headers_and_dot_stuffing(store, tmp_path):
    client = Client(store, tmp_path)
    before = len(inbox(store, "bob"))
    replies = client.send("EHLO pc1", "MAIL FROM:<x@ext.org> SIZE=100 BODY=8BITMIME",
                          "RCPT TO:<Bob@LAB.test>", "RCPT TO:<info@mail.lab.test>", "DATA",
                          "Subject: t", "", "..leading dot", "end", ".")
    assert replies[-5:-1] == ["250 2.1.0 Ok", "250 2.1.5 <Bob@LAB.test>: OK",
                              "250 2.1.5 <info@mail.lab.test>: OK",
                              "354 End data with <CR><LF>.<CR><LF>"]
    assert replies[-1].startswith("250 2.0.0 Ok: queued as ")
    messages = inbox(store, "bob")
    assert len(messages) == before + 1  # two addresses of one user: one copy
    data = messages[-1]
    assert data.startswith(b"Return-Path: <x@ext.org>\r\nReceived: from pc1 ([127.0.0.1])\r\n")
    assert b"with ESMTP id" in data and b"for <" not in data  # two recipients: no "for"
    assert data.endswith(b"\r\nSubject: t\r\n\r\n.leading dot\r\nend\r\n")


def test_recipients(store, tmp_path):
    client = Client(store, tmp_path)
    client.send("HELO pc1", "MAIL FROM:<>")
    assert client.send("RCPT TO:<nobody@lab.test>") == [
        "550 5.1.1 <nobody@lab.test>: Recipient address rejected: User unknown"]
    assert client.send("RCPT TO:<a@elsewhere.org>") == [
        "554 5.7.1 <a@elsewhere.org>: Relay access denied"]
    assert client.code("RCPT TO:<alice+tag@lab.test>") == 250
    assert client.code("RCPT TO:<x@lab.test>") == 250  # alias by full address
    assert client.code("RCPT TO:<a b@lab.test>") == 501
    assert client.code("RCPT TO:<alice@lab.test> NOTIFY=NEVER") == 555


def test_catch_all_takes_everything(store, tmp_path):
    client = Client(store, tmp_path, catch_all="alice")
    before = len(inbox(store, "alice"))
    client.send("EHLO pc", "MAIL FROM:<ci@build>", "RCPT TO:<who@example.com>",
                "RCPT TO:<nobody@lab.test>", "DATA", "x", ".")
    assert len(inbox(store, "alice")) == before + 1


def test_size_parameter_and_oversize_data(store, tmp_path):
    client = Client(store, tmp_path)
    client.send("EHLO pc")
    assert client.send("MAIL FROM:<a@b.c> SIZE=10001") == [
        "552 5.3.4 Message size exceeds fixed limit"]  # Twisted ignores SIZE= (#8128)
    assert client.code("MAIL FROM:<a@b.c> SIZE=x") == 501
    assert client.code("MAIL FROM:<a@b.c> FOO=1") == 555
    before = len(inbox(store, "bob"))
    client.send("MAIL FROM:<a@b.c>", "RCPT TO:<bob@lab.test>", "DATA")
    lines = ["y" * 99] * 120
    assert client.send(*lines, ".") == ["552 5.3.4 Message size exceeds fixed limit"]
    assert len(inbox(store, "bob")) == before
    assert client.code("MAIL FROM:<a@b.c>") == 250  # the session carries on


def test_sequence_errors(store, tmp_path):
    client = Client(store, tmp_path)
    assert client.code("MAIL FROM:<a@b.c>") == 503  # no HELO yet
    client.send("EHLO pc")
    assert client.code("RCPT TO:<bob@lab.test>") == 503
    assert client.code("DATA") == 503
    client.send("MAIL FROM:<a@b.c>")
    assert client.code("MAIL FROM:<a@b.c>") == 503
    assert client.send("DATA") == ["554 5.5.1 Error: no valid recipients"]
    assert client.code("RSET") == 250
    assert client.code("RCPT TO:<bob@lab.test>") == 503


def test_noop_vrfy_help_quit(store, tmp_path):
    client = Client(store, tmp_path)
    assert client.code("NOOP") == 250
    assert client.code("VRFY alice") == 252
    assert client.code("HELP") == 214
    assert client.code("EXPN list") == 502
    assert client.send("QUIT") == ["221 2.0.0 mail.lab.test closing connection"]
    assert client.core.closing


def test_too_many_errors_close_the_session(store, tmp_path):
    client = Client(store, tmp_path, max_errors=3)
    assert client.code("BOGUS") == 500
    assert client.code("NOOP") == 250  # a success resets the count
    client.send("BOGUS", "BOGUS")
    assert not client.core.closing
    assert client.send("BOGUS")[-1].startswith("421 4.7.0")
    assert client.core.closing


def test_overlong_lines(store, tmp_path):
    client = Client(store, tmp_path)
    client.core.too_long()
    assert client.take() == [f"500 5.5.2 Line too long (limit {COMMAND_LIMIT} bytes)"]
    before = len(inbox(store, "bob"))
    client.send("EHLO pc", "MAIL FROM:<a@b.c>", "RCPT TO:<bob@lab.test>", "DATA", "x")
    client.core.too_long()
    assert client.send(".")[0].startswith("500 5.5.2 Message has a line longer")
    assert len(inbox(store, "bob")) == before


def auth_plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def test_auth_mechanisms(store, tmp_path):
    client = Client(store, tmp_path)
    client.send("EHLO pc")
    assert client.send("AUTH PLAIN " + auth_plain("alice", "wrong")) == [
        "535 5.7.8 Error: authentication failed"]
    assert client.send("AUTH LOGIN") == ["334 VXNlcm5hbWU6"]
    assert client.send(base64.b64encode(b"bob").decode()) == ["334 UGFzc3dvcmQ6"]
    assert client.code(base64.b64encode(b"bob").decode()) == 235
    assert client.core.user == "bob"
    assert client.code("AUTH PLAIN " + auth_plain("bob", "bob")) == 503

    client = Client(store, tmp_path)
    client.send("EHLO pc")
    challenge = base64.b64decode(client.send("AUTH CRAM-MD5")[0][4:])
    digest = hmac.new(b"alice", challenge, "md5").hexdigest()
    assert client.code(base64.b64encode(f"alice@lab.test {digest}".encode())) == 235
    assert client.core.user == "alice"

    client = Client(store, tmp_path)
    client.send("EHLO pc", "AUTH PLAIN")
    assert client.send("*") == ["501 5.7.0 Authentication cancelled"]
    assert client.code("AUTH PLAIN !!!") == 501
    assert client.code("AUTH GSSAPI") == 504


def test_secrets_are_masked_in_the_journal(store, tmp_path):
    client = Client(store, tmp_path)
    client.send("EHLO pc", "AUTH PLAIN " + auth_plain("alice", "alice"), "AUTH LOGIN")
    events = client.journal._buffer
    texts = [e["text"] for e in events]
    assert "AUTH PLAIN ••••" in texts
    assert not any(auth_plain("alice", "alice") in t for t in texts)
    assert any(e["kind"] == "auth" and e["text"] == "PLAIN alice ok secret=••••" for e in events)


def test_plaintext_auth_off_hides_auth_until_tls(store, tmp_path):
    client = Client(store, tmp_path, plaintext_auth=False, auth_required=True)
    assert not any("AUTH" in line for line in client.send("EHLO pc"))
    assert client.code("AUTH PLAIN " + auth_plain("alice", "alice")) == 538
    assert client.code("MAIL FROM:<alice@lab.test>") == 530
    assert client.send("STARTTLS") == ["220 2.0.0 Ready to start TLS"]
    assert client.core.want_tls
    client.core.tls_started()
    assert client.code("MAIL FROM:<a@b.c>") == 503  # RFC 3207: EHLO again after TLS
    lines = client.send("EHLO pc")
    assert "250-AUTH PLAIN LOGIN CRAM-MD5" in lines and "250-STARTTLS" not in lines
    assert client.code("AUTH PLAIN " + auth_plain("alice", "alice")) == 235
    assert client.code("MAIL FROM:<alice@lab.test>") == 250
    assert client.code("STARTTLS") == 503


@pytest.mark.parametrize("address,ok", [
    ("alice@lab.test", True), ("a.b+c@x-y.org", True), ('"a b"@lab.test', True),
    ("postmaster", True), ("user@[127.0.0.1]", True), ("a b@lab.test", False),
    ("a@-x.org", False), ("a@", False), ("@x.org", False), ("a" * 255, False)])
def test_address_syntax(address, ok):
    assert valid_address(address) is ok


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=80), max_size=12))
def test_any_lines_get_replies_never_exceptions(store, tmp_path, lines):
    client = Client(store, tmp_path)
    for line in lines:
        if client.core.closing:
            break
        client.core.receive(line.replace(b"\n", b""))
        client.take()


class Capturing(MailDrop):
    """Records what would be delivered instead of storing it (as the store keeps it: with
    CRLF line ends, which the store gives to whatever enters it)."""

    def __init__(self, store: Store) -> None:
        super().__init__(store, "h", DOMAINS, {}, "")
        self.bodies: list[bytes] = []

    def deliver(self, sender, recipients, body, *, helo, peer, protocol, then):
        self.bodies.append(crlf(body))


def bare(store: Store, tmp: Path, drop: MailDrop) -> SMTPConversation:
    options = Options(hostname="h", size_limit=10**6, plaintext_auth=True, auth_required=False,
                      cram=False, starttls=False)
    core = SMTPConversation(Journal(tmp / "j").open("smtp", "p"), options, drop,
                            Credentials(store.users, DOMAINS), False, "127.0.0.1")
    for line in (b"EHLO pc", b"MAIL FROM:<a@b.c>", b"RCPT TO:<bob@lab.test>", b"DATA"):
        core.receive(line)
    return core


line_bytes = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(line_bytes, st.booleans()), max_size=20), st.data())
def test_bulk_text_equals_line_by_line(store, tmp_path, lines, data):
    """DATA taken many lines at a time (the fast path) stores exactly what line-by-line
    handling stores, whatever the line endings and however TCP cut the stream."""
    lines = [(line, crlf) for line, crlf in lines if line.rstrip(b"\r") != b"."]
    stream = b"".join(line + (b"\r\n" if crlf else b"\n") for line, crlf in lines) + b".\r\n"
    one, many = Capturing(store), Capturing(store)
    by_line = bare(store, tmp_path, one)
    for line in stream.split(b"\n")[:-1]:  # as the adapter does: LF, then one CR, off
        by_line.receive(line[:-1] if line.endswith(b"\r") else line)
    in_bulk = bare(store, tmp_path, many)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    buffer, pos = b"", 0
    for cut in [*cuts, len(stream)]:
        buffer += stream[pos:cut]
        pos = max(pos, cut)
        while in_bulk.text_mode and (taken := in_bulk.text(buffer)):
            buffer = buffer[taken:]
    assert one.bodies == many.bodies and len(one.bodies) == 1
    assert buffer == b""


def test_auth_plain_authorization_identity(store, tmp_path):
    client = Client(store, tmp_path)
    client.send("EHLO pc")
    as_bob = base64.b64encode(b"bob\0alice\0alice").decode()
    assert client.code("AUTH PLAIN " + as_bob) == 535  # alice may not act as bob
    as_self = base64.b64encode(b"alice@lab.test\0alice\0alice").decode()
    assert client.code("AUTH PLAIN " + as_self) == 235


def test_address_literals_in_ehlo_and_the_received_header(store, tmp_path):
    client = Client(store, tmp_path)
    client.core.peer = "2001:db8::7"  # the conversation of an IPv6 client
    lines = client.send("EHLO [IPv6:2001:db8::7]")
    assert lines[0] == "250-mail.lab.test Hello [IPv6:2001:db8::7] [IPv6:2001:db8::7]"
    for bad in ("[IPv6:zz]", "[300.1.1.1]", "[2001:db8::7]", "[1.2.3.4"):
        assert client.send(f"EHLO {bad}")[0].startswith("501 5.5.4 Invalid address literal")
    assert client.code("EHLO [192.0.2.1]") == 250
    client.send("MAIL FROM:<x@ext.org>", "RCPT TO:<bob@lab.test>", "DATA", "Subject: six",
                "", "body", ".")
    assert inbox(store, "bob")[-1].startswith(
        b"Return-Path: <x@ext.org>\r\nReceived: from [192.0.2.1] ([IPv6:2001:db8::7])\r\n")
