"""What a protocol acknowledges is durable before the acknowledgement (DESIGN.md, principle 2;
issue 11): the server is killed with SIGKILL the instant each acknowledgement arrives
(SMTP 250 after DATA, IMAP APPEND OK, FTP 226, HTTP PUT 201, SMB CLOSE), then started
again on the same data directory, 25 rounds per protocol; every item is there afterwards,
byte-identical, none lost and none twice.

Each round is a fresh server (the restart of the round before), so a write that only lived
in the killed process's memory, or a file that was renamed into place after the answer,
is missing at the end. `python -m tests.bench.durability` runs more rounds and prints them.
"""

from __future__ import annotations

import imaplib
import io
import os
import random
import signal

import pytest

from tests.ftputil import ftp_login
from tests.hardening import (ascii_body, basic, http_request, imap_client, mail_texts,
                             smb_client, smtp_client)

ROUNDS = 25
FILE_SIZE = 256 * 1024  # big enough that a write still in flight at the kill would show


def smtp_write(server, rng, i):
    body = b"Subject: durable %d\r\n\r\n" % i + ascii_body(rng, 16 * 1024)
    client = smtp_client(server, "smtp")
    client.sendmail("sender@outside.test", ["alice@lab.test"], body)
    return body  # the 250 to DATA has come: the caller kills now, no QUIT


def imap_write(server, rng, i):
    body = b"Subject: durable %d\r\n\r\n" % i + ascii_body(rng, 16 * 1024)
    client = imap_client(server)
    client.login("alice", "alice")
    typ, _ = client.append("INBOX", "", imaplib.Time2Internaldate(1_700_000_000), body)
    assert typ == "OK"
    return body


def ftp_write(server, rng, i):
    data = rng.randbytes(FILE_SIZE)
    reply = ftp_login(server).storbinary(f"STOR durable-{i}.bin", io.BytesIO(data))
    assert reply.startswith("226"), reply
    return data


def http_write(server, rng, i):
    data = rng.randbytes(FILE_SIZE)
    status, _ = http_request(server, "PUT", f"/~alice/durable-{i}.bin", data,
                             basic("alice", "alice"))
    assert status == 201, status
    return data


def smb_write(server, rng, i):
    data = rng.randbytes(FILE_SIZE)
    smb_client(server).putFile("alice", f"durable-{i}.bin", io.BytesIO(data).read)
    return data  # putFile returns once CLOSE is answered


def mail_stored(data, written):
    texts = mail_texts(data, "alice")
    # SMTP puts its trace (Received:) in front of what was sent; IMAP stores it as it is.
    assert len(texts) == len(written), f"{len(texts)} messages stored of {len(written)} acknowledged"
    for i, (text, body) in enumerate(zip(texts, written)):
        assert text.endswith(body), f"message {i} is not what was acknowledged"


def files_stored(directory):
    def check(data, written):
        for i, body in enumerate(written):
            path = data / directory / f"durable-{i}.bin"
            assert path.exists(), f"{path.name} acknowledged, then lost"
            assert path.read_bytes() == body, f"{path.name} is not what was acknowledged"
    return check


CASES = {
    "smtp": (smtp_write, mail_stored), "imap": (imap_write, mail_stored),
    "ftp": (ftp_write, files_stored("homes/alice")),
    "http": (http_write, files_stored("homes/alice/public_html")),
    "smb": (smb_write, files_stored("homes/alice")),
}


@pytest.mark.parametrize("protocol", sorted(CASES))
def test_kill_at_every_acknowledgement_loses_nothing(lab, protocol):
    write, stored = CASES[protocol]
    rng = random.Random(f"durability-{protocol}")
    written = []
    for i in range(ROUNDS):
        server = lab.start(only=protocol)
        written.append(write(server, rng, i))
        os.kill(server.process.pid, signal.SIGKILL)  # the instant the acknowledgement came
        server.process.wait()
        lab.servers.remove(server)  # killed on purpose: teardown's exit-0 rule is not for it
    server = lab.start(only=protocol)  # the last restart; it must come up on what was left
    stored(server.data, written)
    checked = server.check()
    assert checked.returncode == 0, checked.stdout + checked.stderr
