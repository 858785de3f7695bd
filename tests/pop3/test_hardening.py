"""POP3 between users, and with messages any sender can make."""

from __future__ import annotations

import poplib
import smtplib
import socket

import pytest

from tests.pop3.test_server import deliver
from tests.lab.test_connection_costs import status


def login(server, user: str, password: str | None = None) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=30)
    client.user(user)
    client.pass_(user if password is None else password)
    return client


def test_each_user_sees_only_their_own_inbox(lab):
    server = lab.start(only="pop3")
    deliver(server, "alice", b"Subject: for alice\r\n\r\nalice's\r\n")
    deliver(server, "bob", b"Subject: for bob 1\r\n\r\nbob's\r\n",
            b"Subject: for bob 2\r\n\r\nbob's too\r\n")
    bobs = [b"for bob 1", b"for bob 2"]
    for user, subjects in (("alice", [b"for alice"]), ("bob", bobs),
                           ("alice@lab.test", [b"for alice"]), ("BOB", bobs)):
        client = login(server, user, user.split("@")[0].lower())
        count = client.stat()[0]
        seen = [b"\r\n".join(client.retr(n)[1]) for n in range(1, count + 1)]
        assert [any(s in m for m in seen) for s in subjects] == [True] * len(subjects)
        assert count == len(subjects)
        with pytest.raises(poplib.error_proto):
            client.retr(count + 1)  # nothing beyond: no other user's numbering
        client.quit()
    for user, password in (("bob", "alice"), ("alice", "bob"), ("alice", ""), ("", "")):
        with pytest.raises(poplib.error_proto):
            login(server, user, password)


def pathological() -> list[bytes]:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % n
                     for n in range(5000))
    return [
        b"From: " + b"(" * 5000 + b"\r\nSubject: parens\r\n\r\nbody\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\nSubject: parts\r\n\r\n" + parts
        + b"--b--\r\n",
        b"Subject: \xff\xfe\x00 bytes\r\nX: \x80\x81\r\n\r\n\xff\xfe\xfd\r\n\x00\r\n",
        b"no header and no blank line \xc3\x28",
        b"Subject: " + b"=?utf-8?q?" * 2000 + b"\r\n\r\n.\r\n..\r\n",
    ]


def test_top_and_retr_of_pathological_messages_that_came_over_smtp(lab, monkeypatch):
    monkeypatch.setattr(poplib, "_MAXLINE", 1 << 20)  # these headers are one long line
    server = lab.start(only="smtp,pop3")
    messages = pathological()
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=30) as sender:
        for body in messages:
            sender.sendmail("x@y.example", ["alice@lab.test"], body)
    client = login(server, "alice")
    assert client.stat()[0] == len(messages)
    for number in range(1, len(messages) + 1):
        for lines in (0, 3, 100000):
            reply, top, _ = client.top(number, lines)
            assert reply.startswith(b"+OK") and top
        assert client.retr(number)[0].startswith(b"+OK")
    assert client.uidl()[0].startswith(b"+OK")
    client.quit()
    assert server.stop() == 0
    assert "Traceback" not in server.stderr()


def test_pipelined_retrs_that_are_never_read_do_not_pile_up(lab):
    """A client that sends 200 RETRs of a 1 MB message and reads nothing: the server stops
    reading once its write buffer is full, instead of holding 200 MB of replies."""
    server = lab.start(only="pop3")
    deliver(server, "alice", b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 1000)
    raw = socket.create_connection(("127.0.0.1", server.port("pop3", "pop3")), timeout=30)
    replies = raw.makefile("rb")
    replies.readline()
    raw.sendall(b"USER alice\r\nPASS alice\r\n")
    replies.readline(), replies.readline()
    before = status(server.process.pid, "VmHWM")
    raw.sendall(b"RETR 1\r\n" * 200)
    assert replies.readline().startswith(b"+OK")  # it runs them, as the client reads
    grown = status(server.process.pid, "VmHWM") - before
    raw.close()
    print(f"pop3: peak RSS grew {grown / 1e6:.1f} MB for 200 unread RETRs of 1 MB")
    assert grown < 64 << 20, grown
    assert server.stop() == 0
