"""SMTP with the clients people use: swaks and curl; and 100 messages over 10 concurrent
connections, all found again over POP3."""

from __future__ import annotations

import poplib
import re
import smtplib
import subprocess
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import need
from tests.smtp.test_server import inbox


def run(*command: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, input=input, timeout=60)


def swaks(port: int, *args: str) -> subprocess.CompletedProcess:
    return run("swaks", "--server", f"127.0.0.1:{port}", "--helo", "pc1", "--from",
               "alice@lab.test", *args)


def test_swaks_mx_pipelining_and_refusals(lab):
    need("swaks")
    server = lab.start(only="smtp")
    port = server.port("smtp", "smtp")
    sent = swaks(port, "--to", "bob@lab.test", "--pipeline", "--header", "Subject: swaks piped")
    assert sent.returncode == 0, sent.stdout.decode()
    assert b"<** " not in sent.stdout  # no error reply anywhere in the dialogue
    unknown = swaks(port, "--to", "nobody@lab.test")
    assert unknown.returncode != 0 and b"<** 550 5.1.1" in unknown.stdout
    relay = swaks(port, "--to", "someone@example.org")
    assert relay.returncode != 0 and b"<** 554 5.7.1" in relay.stdout
    assert b"Subject: swaks piped" in inbox(server, "bob")[-1]


def test_swaks_starttls_and_implicit_tls_auth(lab):
    need("swaks")
    server = lab.start(only="smtp")
    for flags, port, mechanism in (
            (["--tls"], server.port("smtp", "submission"), "LOGIN"),
            (["--tls-on-connect"], server.port("smtp", "smtps"), "PLAIN")):
        sent = swaks(port, "--to", "bob@lab.test", *flags, "--auth", mechanism, "--auth-user",
                     "alice", "--auth-password", "alice", "--header", f"Subject: {mechanism}")
        assert sent.returncode == 0, sent.stdout.decode()
        assert b"235 2.7.0 Authentication successful" in sent.stdout
    wrong = swaks(server.port("smtp", "submission"), "--to", "bob@lab.test", "--tls",
                  "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "nope")
    assert wrong.returncode != 0 and b"<~* 535 5.7.8" in wrong.stdout  # "~": over TLS
    subjects = [re.search(rb"Subject: (\S+)", m).group(1) for m in inbox(server, "bob")]
    assert subjects == [b"LOGIN", b"PLAIN"]


def test_curl_smtp_submission_with_starttls(lab, tmp_path):
    need("curl")
    server = lab.start(only="smtp")
    mail = tmp_path / "mail.txt"
    mail.write_bytes(b"From: alice@lab.test\r\nTo: bob@lab.test\r\nSubject: via curl\r\n\r\n"
                     b".leading dot\r\nbye\r\n")
    result = run("curl", "-sS", "--ssl-reqd", "--cacert", str(server.data / "tls" / "ca.crt"),
                 f"smtp://127.0.0.1:{server.port('smtp', 'submission')}/pc1",
                 "--user", "alice:alice", "--mail-from", "alice@lab.test",
                 "--mail-rcpt", "bob@lab.test", "--upload-file", str(mail))
    assert result.returncode == 0, result.stderr.decode()
    assert inbox(server, "bob")[-1].endswith(b"Subject: via curl\r\n\r\n.leading dot\r\nbye\r\n")
    wrong = run("curl", "-sS", "--ssl-reqd", "--cacert", str(server.data / "tls" / "ca.crt"),
                f"smtp://127.0.0.1:{server.port('smtp', 'submission')}/pc1",
                "--user", "alice:bad", "--mail-from", "alice@lab.test",
                "--mail-rcpt", "bob@lab.test", "--upload-file", str(mail))
    assert wrong.returncode == 67  # curl: login denied


def test_100_messages_over_10_connections_then_exactly_those_over_pop3(lab):
    server = lab.start(only="smtp,pop3")
    port = server.port("smtp", "smtp")

    def sender(worker: int) -> list[str]:
        tokens = []
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo(f"sender{worker}")
            for n in range(10):
                token = f"w{worker}-m{n}"
                client.sendmail("load@example.org", ["bob@lab.test"],
                                f"Subject: {token}\r\n\r\n{token}\r\n".encode())
                tokens.append(token)
        return tokens

    with ThreadPoolExecutor(10) as pool:
        sent = sorted(t for tokens in pool.map(sender, range(10)) for t in tokens)
    assert len(sent) == 100
    client = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=30)
    client.user("bob")
    client.pass_("bob")
    count, _ = client.stat()
    received = []
    for number in range(1, count + 1):
        lines = client.retr(number)[1]
        received.append(next(l for l in lines if l.startswith(b"Subject: "))[9:].decode())
    client.quit()
    assert sorted(received) == sent
