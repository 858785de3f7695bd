"""POP3 over real sockets with Python's poplib against `protolab serve`."""

from __future__ import annotations

import poplib
import socket
import ssl

import pytest

from services.store import Store


def deliver(server, user: str, *bodies: bytes) -> None:
    store = Store(server.data)
    try:
        for body in bodies:
            store.mail.append(user, "INBOX", body)
    finally:
        store.close()


def uids(server, user: str) -> list[int]:
    store = Store(server.data)
    try:
        box = store.mail.mailbox(user, "INBOX")
        return [m.uid for m in store.mail.messages(box.id)]
    finally:
        store.close()


def tls_context(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt"))


def test_user_pass_list_retr_dele_and_check(lab):
    server = lab.start(only="pop3")
    deliver(server, "alice", b"Subject: a\r\n\r\n.starts with a dot\r\nend\r\n",
            b"Subject: b\r\n\r\nsecond\r\n")
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    capa = client.capa()
    assert {"TOP", "UIDL", "PIPELINING", "USER", "STLS", "RESP-CODES"} <= set(capa)
    assert "PIPELINE" not in capa and capa["SASL"] == ["PLAIN"]
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client.user("alice")
        client.pass_("wrong")
    client.user("alice")
    client.pass_("alice")
    assert client.stat()[0] == 2
    first_uidl = client.uidl()[1]
    response, lines, _ = client.retr(1)
    assert lines == [b"Subject: a", b"", b".starts with a dot", b"end"]  # poplib un-stuffs
    assert client.top(2, 0)[1] == [b"Subject: b", b""]
    client.dele(1)
    client.quit()
    assert uids(server, "alice") == [2]
    again = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    again.user("alice@lab.test")
    again.pass_("alice")
    # UIDL stable across sessions: message 2 is now number 1, with the same unique id
    assert again.uidl()[1] == [b"1 " + first_uidl[1].split()[1]]
    again.quit()
    result = server.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CAPA: AUTH-RESP-CODE IMPLEMENTATION PIPELINING" in result.stdout


def test_stls_and_pop3s(lab):
    server = lab.start(only="pop3", config="[pop3]\nplaintext_auth = false\n")
    deliver(server, "bob", b"Subject: tls\r\n\r\nx\r\n")
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    with pytest.raises(poplib.error_proto, match=r"Plaintext authentication disallowed"):
        client.user("bob")
    client.stls(context=tls_context(server))
    assert "STLS" not in client.capa()
    client.user("bob")
    client.pass_("bob")
    assert client.stat()[0] == 1
    client.quit()
    secure = poplib.POP3_SSL("127.0.0.1", server.port("pop3", "pop3s"), timeout=10,
                             context=tls_context(server))
    assert "STLS" not in secure.capa()
    secure.user("bob")
    secure.pass_("bob")
    assert secure.retr(1)[1][0] == b"Subject: tls"
    secure.quit()


def test_apop_works_when_passwords_are_kept(lab):
    # Twisted's APOP never succeeds on Python 3 (it compares bytes with str).
    server = lab.start(only="pop3", config="[auth]\nkeep_plaintext = true\n")
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    with pytest.raises(poplib.error_proto):
        client.apop("alice", "wrong")
    client.close()
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    assert client.apop("alice", "alice").startswith(b"+OK")
    client.quit()


def test_pipelined_commands_and_long_lines(lab):
    server = lab.start(only="pop3")
    deliver(server, "alice", b"Subject: p\r\n\r\nbody\r\n")
    with socket.create_connection(("127.0.0.1", server.port("pop3", "pop3")), timeout=10) as s:
        f = s.makefile("rb")
        assert f.readline().startswith(b"+OK")
        s.sendall(b"USER alice\r\nPASS alice\r\nSTAT\r\nNOOP\r\n" + b"X" * 300 + b"\r\nQUIT\r\n")
        lines = [f.readline() for _ in range(6)]
        assert [line.split()[0] for line in lines] == [b"+OK"] * 4 + [b"-ERR", b"+OK"]
        assert lines[4] == b"-ERR Line too long (limit 255 bytes)\r\n"
        assert f.read() == b""


def test_idle_timeout(lab):
    server = lab.start(only="pop3", config="[pop3]\nidle_timeout = 1\n")
    with socket.create_connection(("127.0.0.1", server.port("pop3", "pop3")), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        assert f.readline() == b"-ERR Disconnected for inactivity\r\n"
        assert f.read() == b""


def test_journal_masks_the_password_and_retr_marks_seen(lab):
    server = lab.start(only="pop3")
    deliver(server, "bob", b"Subject: j\r\n\r\nx\r\n")
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    client.user("bob")
    client.pass_("bob")
    client.retr(1)
    client.quit()
    store = Store(server.data)
    try:
        box = store.mail.mailbox("bob", "INBOX")
        assert [m.flags for m in store.mail.messages(box.id)] == [{"\\Seen"}]
    finally:
        store.close()
    assert server.stop() == 0  # the journal is flushed at stop
    journal = server.cli("journal", "--service", "pop3").stdout
    assert "C: PASS ••••" in journal and "auth: USER bob ok" in journal
    assert "C: RETR 1" in journal and "S: +OK" in journal and "PASS bob" not in journal
