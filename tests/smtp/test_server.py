"""SMTP over real sockets: Python's smtplib and raw netcat-style sessions against
`protolab serve`."""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage

import pytest

from services.store import Store


def message(subject: str = "hello", to: str = "bob@lab.test", body: str = "hi\n") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@lab.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def tls_context(server) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt"))


def inbox(server, user: str) -> list[bytes]:
    store = Store(server.data)
    try:
        box = store.mail.mailbox(user, "INBOX")
        return [store.mail.data(box.id, m.uid) for m in store.mail.messages(box.id)]
    finally:
        store.close()


class Raw:
    """A netcat-style client: bytes out, reply lines in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def line(self) -> str:
        return self.file.readline().decode().rstrip("\r\n")

    def reply(self) -> list[str]:
        """One (possibly multi-line) reply."""
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_mx_delivery_and_check(lab):
    server = lab.start(only="smtp")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as client:
        code, text = client.ehlo("pc1")
        assert code == 250
        for feature in ("pipelining", "size", "8bitmime", "enhancedstatuscodes", "starttls",
                        "auth"):
            assert client.has_extn(feature), feature
        assert client.noop()[0] == 250
        assert client.verify("alice")[0] == 252
        refused = client.send_message(message("one"), "x@example.org",
                                      ["bob@lab.test", "nobody@lab.test"])
        assert refused == {"nobody@lab.test": (550, b"5.1.1 <nobody@lab.test>: Recipient "
                                               b"address rejected: User unknown")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.send_message(message("two"), "x@example.org", ["a@elsewhere.example"])
    stored = inbox(server, "bob")
    assert len(stored) == 1 and b"Subject: one" in stored[0]
    assert stored[0].startswith(b"Return-Path: <x@example.org>\r\nReceived: from pc1")
    result = server.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "EHLO: 8BITMIME AUTH ENHANCEDSTATUSCODES HELP PIPELINING SIZE STARTTLS" in result.stdout


def test_submission_starttls_auth(lab):
    server = lab.start(only="smtp")
    port = server.port("smtp", "submission")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("pc1")
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(message(), "alice@lab.test", ["bob@lab.test"])
        assert refused.value.smtp_code == 530
        client.starttls(context=tls_context(server))
        client.ehlo("pc1")
        assert not client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong")
        client.login("alice", "alice")
        client.send_message(message("over tls"), "alice@lab.test", ["bob@lab.test"])
    stored = inbox(server, "bob")
    assert b"with ESMTPSA" in stored[-1] and b"Subject: over tls" in stored[-1]


def test_implicit_tls_and_auth_login(lab):
    server = lab.start(only="smtp")
    port = server.port("smtp", "smtps")
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=tls_context(server)) as client:
        client.ehlo("pc1")
        assert not client.has_extn("starttls")
        client.user, client.password = "bob@lab.test", "bob"
        assert client.auth("LOGIN", client.auth_login)[0] == 235
        client.send_message(message("smtps", to="alice@lab.test"), "bob@lab.test",
                            ["alice@lab.test"])
    assert b"Subject: smtps" in inbox(server, "alice")[-1]


def test_plaintext_auth_off(lab):
    server = lab.start(only="smtp", config="[smtp]\nplaintext_auth = false\n")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "submission"), timeout=10) as client:
        client.ehlo("pc1")
        assert not client.has_extn("auth")
        client.starttls(context=tls_context(server))
        client.ehlo("pc1")
        assert "PLAIN" in client.esmtp_features["auth"]


def test_pipelined_replies_come_in_order(lab):
    # Twisted #8126: under PIPELINING its replies can overtake each other.
    server = lab.start(only="smtp")
    raw = Raw(server.port("smtp", "smtp"))
    assert raw.reply()[0].startswith("220 ")
    raw.send(b"EHLO pc1\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<nobody@lab.test>\r\n"
             b"RCPT TO:<bob@lab.test>\r\nRCPT TO:<c@far.example>\r\nDATA\r\n"
             b"Subject: piped\r\n\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n")
    replies = [raw.reply()[-1][:3] for _ in range(9)]
    assert replies == ["250", "250", "550", "250", "554", "354", "250", "250", "221"]
    raw.close()


def test_bare_lf_session_and_long_lines(lab):
    server = lab.start(only="smtp")
    raw = Raw(server.port("smtp", "smtp"))
    raw.reply()
    raw.send(b"HELO nc\n")
    assert raw.reply() == ["250 mail.lab.test Hello nc [127.0.0.1]"]
    raw.send(b"NOOP " + b"x" * 5000 + b"\n")
    assert raw.reply()[0].startswith("500 5.5.2 Line too long")
    raw.send(b"MAIL FROM:<nc@lab.test>\nRCPT TO:<alice@lab.test>\nDATA\n")
    assert [raw.reply()[0][:3] for _ in range(3)] == ["250", "250", "354"]
    raw.send(b"Subject: bare lf\n\n..dot\nline two\n.\n")
    assert raw.reply()[0].startswith("250 2.0.0")
    raw.send(b"QUIT\n")
    assert raw.reply()[0].startswith("221")
    raw.close()
    assert inbox(server, "alice")[-1].endswith(b"\r\nSubject: bare lf\r\n\r\n.dot\r\nline two\r\n")


def test_size_limit_and_idle_timeout(lab):
    server = lab.start(only="smtp", config="[smtp]\nsize_limit = 2000\nidle_timeout = 1\n")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as client:
        client.ehlo("pc1")
        assert client.esmtp_features["size"] == "2000"
        code, _ = client.mail("a@b.example", ["SIZE=5000"])
        assert code == 552
        client.rset()
        client.mail("a@b.example")  # no SIZE=: the limit must catch it in DATA
        client.rcpt("bob@lab.test")
        assert client.data(b"x" * 3000)[0] == 552
        assert client.noop()[0] == 250
    raw = Raw(server.port("smtp", "smtp"))
    raw.reply()
    assert raw.line() == "421 4.4.2 Idle timeout, closing the connection"  # waits for it
    assert raw.file.read() == b""  # then the server closes
    raw.close()


KILL_ROUNDS = 25


def test_250_survives_kill_9(lab):
    """25 rounds: a message acknowledged with 250, SIGKILL at once, restart; every one is
    there, byte for byte, after the last restart."""
    data = None
    sent = []
    for round_ in range(KILL_ROUNDS):
        server = lab.start(only="smtp", data=data)
        data = server.data
        body = f"durable round {round_}\r\n".encode() * (round_ * 500 + 1)
        with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as client:
            client.ehlo("pc1")
            client.sendmail("a@b.example", ["bob@lab.test"],
                            b"Subject: round %d\r\n\r\n" % round_ + body)
            server.process.kill()  # SIGKILL right after the 250
            server.process.wait()
        lab.servers.remove(server)  # it cannot exit 0 now
        sent.append(body)
    again = lab.start(only="smtp", data=data)
    assert again
    stored = inbox(again, "bob")
    assert len(stored) == KILL_ROUNDS
    assert [b"Subject: round %d\r\n" % n in m for n, m in enumerate(stored)] == \
        [True] * KILL_ROUNDS
    assert [m.endswith(body) for m, body in zip(stored, sent)] == [True] * KILL_ROUNDS


def test_cram_md5_when_passwords_are_kept_and_the_journal(lab):
    server = lab.start(only="smtp", config="[auth]\nkeep_plaintext = true\n")
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "submission"), timeout=10) as client:
        client.ehlo("pc1")
        assert "CRAM-MD5" in client.esmtp_features["auth"].split()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "not-alice")  # smtplib prefers CRAM-MD5
        client.login("alice", "alice")
        client.send_message(message("cram"), "alice@lab.test", ["bob@lab.test"])
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as client:
        client.ehlo("pc2")
        client.user, client.password = "bob", "secret-bob"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.auth("PLAIN", client.auth_plain)
    assert server.stop() == 0  # the journal is flushed at stop
    journal = server.cli("journal", "--service", "smtp").stdout
    assert "C: ehlo pc1" in journal and "auth: CRAM-MD5 alice ok" in journal
    assert "auth: CRAM-MD5 alice failed" in journal and "auth: PLAIN bob failed" in journal
    assert "C: AUTH PLAIN ••••" in journal and "event: delivered" in journal
    assert "secret-bob" not in journal and "AGJvYgBzZWNyZXQtYm9i" not in journal


def test_catch_all_keeps_every_message(lab):
    server = lab.start(only="smtp", config='[smtp]\ncatch_all = "alice"\n')
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp"), timeout=10) as client:
        refused = client.sendmail("ci@build.example", ["someone@example.org", "nobody@lab.test"],
                                  b"Subject: ci\r\n\r\nx\r\n")
        assert refused == {}
    stored = inbox(server, "alice")
    assert len(stored) == 1 and b"Subject: ci" in stored[0]  # one copy for both addresses
