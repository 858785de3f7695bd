"""The POP3 state machine without sockets, over a real store."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.credentials import Credentials
from services.journal import Journal
from services.pop3.core import Options, POP3Conversation, to_wire, top
from services.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "data", keep_plaintext=True)
    store.users.add("alice", "alice")
    store.mail.append("alice", "INBOX", b"Subject: one\r\n\r\nfirst\r\n.dot\r\n")
    store.mail.append("alice", "INBOX", b"Subject: two\r\nX: y\r\n\r\nl1\r\nl2\r\nl3\r\n")
    return store


class Client:
    def __init__(self, store: Store, tmp: Path, secure: bool = False, **overrides) -> None:
        values = dict(hostname="pop3.lab.test", plaintext_auth=True, apop=True, stls=True,
                      max_errors=4)
        values.update(overrides)
        self.journal = Journal(tmp / "journal")
        self.core = POP3Conversation(self.journal.open("pop3", "127.0.0.1:1"), Options(**values),
                                     store, Credentials(store.users, {"lab.test"}), secure)
        self.core.greet()
        self.greeting = self.take()[0]

    def take(self) -> list[str]:
        return self.core.take().decode().split("\r\n")[:-1]

    def send(self, *lines: str) -> list[str]:
        for line in lines:
            self.core.receive(line.encode())
        return self.take()

    def login(self) -> None:
        assert self.send("USER alice", "PASS alice")[-1].startswith("+OK Logged in, 2 messages")


def test_wire_form():
    assert to_wire(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert to_wire(b".x\nno crlf") == b"..x\r\nno crlf\r\n.\r\n"
    assert to_wire(b"") == b".\r\n"
    assert top(b"H: 1\r\n\r\nb1\r\nb2\r\n", 1) == b"H: 1\r\n\r\nb1\r\n"
    assert top(b"H: 1\n\nb1\n", 0) == b"H: 1\r\n\r\n"
    assert top(b"H: 1\r\n", 5) == b"H: 1\r\n"


def test_capa_names(store, tmp_path):
    client = Client(store, tmp_path)
    assert client.send("CAPA") == [
        "+OK Capability list follows", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE",
        "PIPELINING", "USER", "SASL PLAIN CRAM-MD5", "STLS", "IMPLEMENTATION protolab", "."]
    client.login()
    assert "USER" not in client.send("CAPA")


def test_transaction(store, tmp_path):
    client = Client(store, tmp_path)
    assert client.send("STAT") == ["-ERR Command not valid in this state"]
    client.login()
    box = store.mail.mailbox("alice", "INBOX")
    sizes = [m.size for m in store.mail.messages(box.id)]
    assert client.send("STAT") == [f"+OK 2 {sum(sizes)}"]
    assert client.send("LIST") == [f"+OK 2 messages ({sum(sizes)} octets)",
                                   f"1 {sizes[0]}", f"2 {sizes[1]}", "."]
    assert client.send("UIDL 2") == [f"+OK 2 {box.uidvalidity}.2"]
    assert client.send("RETR 1") == [f"+OK {sizes[0]} octets", "Subject: one", "", "first",
                                     "..dot", "."]
    assert client.send("TOP 2 1") == ["+OK 26 octets", "Subject: two", "X: y", "",
                                      "l1", "."]
    assert client.send("RETR 3")[0].startswith("-ERR No such message")
    assert client.send("DELE 1") == ["+OK Message 1 deleted"]
    assert client.send("RETR 1") == ["-ERR Message 1 already deleted"]
    assert client.send("LIST") == [f"+OK 1 messages ({sizes[1]} octets)", f"2 {sizes[1]}", "."]
    assert client.send("RSET")[0] == f"+OK 2 messages ({sum(sizes)} octets)"
    client.send("DELE 2")
    assert len(store.mail.messages(box.id)) == 2  # nothing removed before QUIT
    assert client.send("QUIT") == ["+OK protolab POP3 server signing off (1 messages deleted)"]
    assert [(m.uid, m.flags) for m in store.mail.messages(box.id)] == [(1, {"\\Seen"})]


def test_snapshot_between_sessions(store, tmp_path):
    first, second = Client(store, tmp_path), Client(store, tmp_path)
    first.login()
    second.login()
    store.mail.append("alice", "INBOX", b"Subject: three\r\n\r\nlate\r\n")
    assert first.send("STAT")[0].startswith("+OK 2 ")  # numbering unchanged
    first.send("DELE 1", "QUIT")
    assert second.send("RETR 1") == ["-ERR Message 1 was removed by another session"]
    assert second.send("RETR 2")[0].startswith("+OK")
    third = Client(store, tmp_path)  # a new session sees the new state
    assert third.send("USER alice", "PASS alice")[-1].startswith("+OK Logged in, 2 messages")


def test_no_deletion_without_quit(store, tmp_path):
    client = Client(store, tmp_path)
    client.login()
    client.send("DELE 1", "DELE 2")
    del client  # the connection drops
    box = store.mail.mailbox("alice", "INBOX")
    assert len(store.mail.messages(box.id)) == 2


def test_apop_and_auth(store, tmp_path):
    client = Client(store, tmp_path)
    banner = re.search(r"<[^>]+>", client.greeting).group(0)
    assert client.send("APOP alice " + "0" * 32) == ["-ERR [AUTH] Authentication failed"]
    digest = hashlib.md5((banner + "alice").encode()).hexdigest()
    assert client.send(f"APOP alice {digest}")[0].startswith("+OK Logged in")

    client = Client(store, tmp_path)
    assert client.send("AUTH") == ["+OK", "PLAIN", "CRAM-MD5", "."]
    assert client.send("AUTH PLAIN") == ["+ "]
    response = base64.b64encode(b"\0alice@lab.test\0alice").decode()
    assert client.send(response)[0].startswith("+OK Logged in")

    client = Client(store, tmp_path)
    assert client.send("PASS x") == ["-ERR No USER given"]
    assert client.send("USER alice", "PASS nope") == ["+OK", "-ERR [AUTH] Authentication failed"]
    assert client.send("AUTH PLAIN", "*") == ["+ ", "-ERR Authentication cancelled"]


def test_no_apop_without_plaintext_passwords(store, tmp_path):
    client = Client(store, tmp_path, apop=False)
    assert "<" not in client.greeting
    assert client.send("APOP alice " + "0" * 32)[0].startswith("-ERR APOP not offered")


def test_plaintext_off_until_stls(store, tmp_path):
    client = Client(store, tmp_path, plaintext_auth=False, apop=False)
    capa = client.send("CAPA")
    assert "USER" not in capa and not any(c.startswith("SASL") for c in capa)
    assert client.send("USER alice")[0].startswith("-ERR [AUTH] Plaintext authentication")
    assert client.send("AUTH PLAIN")[0].startswith("-ERR [AUTH] Plaintext authentication")
    assert client.send("STLS") == ["+OK Begin TLS negotiation"]
    client.core.tls_started()
    capa = client.send("CAPA")
    assert "USER" in capa and "SASL PLAIN" in capa and "STLS" not in capa
    client.login()


def test_secrets_masked(store, tmp_path):
    client = Client(store, tmp_path)
    client.send("USER alice", "PASS alice")
    texts = [e["text"] for e in client.journal._buffer]
    assert "PASS ••••" in texts and not any("PASS alice" in t for t in texts)


def test_errors_and_long_lines(store, tmp_path):
    client = Client(store, tmp_path)
    client.core.too_long()
    assert client.take() == ["-ERR Line too long (limit 255 bytes)"]
    assert client.send("FOO") == ["-ERR Unknown command"]
    client.send("FOO")
    assert client.send("FOO")[-1] == "-ERR Too many errors, closing the connection"
    assert client.core.closing


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=60), max_size=12), st.booleans())
def test_any_lines_get_replies_never_exceptions(store, tmp_path, lines, logged_in):
    client = Client(store, tmp_path, max_errors=100)
    if logged_in:  # (earlier examples may have deleted messages: no count asserted)
        client.send("USER alice", "PASS alice")
    for line in lines:
        client.core.receive(line.replace(b"\n", b""))
        client.take()
        if client.core.closing:
            break
