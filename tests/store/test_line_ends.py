"""The store's promise of CRLF line ends, kept where messages enter it: a message with bare
LFs that comes in over SMTP (netcat style), IMAP APPEND or the store API goes out over POP3
RETR and IMAP FETCH with CRLF, and every size (RFC822.SIZE, LIST, STAT) is what is sent."""

from __future__ import annotations

import imaplib
import poplib
import re
import socket

from services.store import Store
from services.store.db import Database
from services.store.mail import MIGRATIONS, crlf
from services.store.users import MIGRATIONS as USER_MIGRATIONS

BARE = b"Subject: %s\n\nline one\n.dot line\nline three\n"


def wire(subject: bytes) -> bytes:
    """What every way out must send for BARE % subject."""
    return BARE.replace(b"\n", b"\r\n") % subject


def smtp_bare_lf(port: int) -> None:
    """`nc host 25` typing a message: every line ends in a bare LF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        file = sock.makefile("rb")
        file.readline()
        body = BARE.replace(b"\n.", b"\n..") % b"smtp"
        sock.sendall(b"HELO nc\nMAIL FROM:<nc@lab.test>\nRCPT TO:<alice@lab.test>\nDATA\n")
        assert [file.readline()[:3] for _ in range(4)] == [b"250", b"250", b"250", b"354"]
        sock.sendall(body + b".\nQUIT\n")
        assert file.readline().startswith(b"250 2.0.0")
        assert file.readline().startswith(b"221")


def imap_append_bare_lf(port: int) -> None:
    """An APPEND whose literal holds bare LFs (imaplib would make them CRLF: raw here)."""
    message = BARE % b"imap"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        file = sock.makefile("rb")
        file.readline()
        sock.sendall(b"a LOGIN alice alice\r\n")
        assert file.readline().startswith(b"a OK")
        sock.sendall(b"b APPEND INBOX {%d}\r\n" % len(message))
        assert file.readline().startswith(b"+")
        sock.sendall(message + b"\r\n")
        assert file.readline().startswith(b"b OK")


def test_bare_lf_in_over_smtp_imap_and_the_store_comes_out_crlf(lab):
    server = lab.start(only="smtp,imap,pop3")
    smtp_bare_lf(server.port("smtp", "smtp"))
    imap_append_bare_lf(server.port("imap", "imap"))
    store = Store(server.data)
    try:
        store.mail.append("alice", "INBOX", BARE % b"store")
        box = store.mail.mailbox("alice", "INBOX")
        stored = [store.mail.data(box.id, m.uid) for m in store.mail.messages(box.id)]
        sizes = [m.size for m in store.mail.messages(box.id)]
    finally:
        store.close()
    # SMTP adds its trace fields at the top; the message itself ends the stored bytes.
    assert [m.endswith(wire(s)) for m, s in zip(stored, (b"smtp", b"imap", b"store"),
                                                 strict=True)] == [True] * 3
    assert [len(m) for m in stored] == sizes

    pop = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    pop.user("alice")
    pop.pass_("alice")
    assert pop.stat() == (3, sum(sizes))
    assert [int(entry.split()[1]) for entry in pop.list()[1]] == sizes
    for number, expected in enumerate(stored, 1):
        _, lines, _ = pop.retr(number)  # poplib undoes the dot-stuffing, splits on CRLF
        assert b"\r\n".join(lines) + b"\r\n" == expected
    pop.quit()

    imap = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    imap.login("alice", "alice")
    imap.select("INBOX", readonly=True)
    _, data = imap.fetch("1:3", "(RFC822.SIZE BODY.PEEK[])")
    fetched = [item for item in data if isinstance(item, tuple)]
    assert [item[1] for item in fetched] == stored
    assert [int(re.search(rb"RFC822\.SIZE (\d+)", item[0]).group(1)) for item in fetched] == sizes
    imap.logout()


def test_crlf_rule():
    assert crlf(b"a\nb\r\nc\rd\r\r\n\n\r") == b"a\r\nb\r\nc\r\nd\r\n\r\n\r\n\r\n"
    already = b"a\r\nb\r\n"
    assert crlf(already) is already  # the common case is not copied


def test_older_stores_are_made_crlf_by_the_migration(tmp_path):
    """What an older version stored as given (a bare LF, a bare CR) is CRLF after the
    migration, with its size, as if it had come in now."""
    db = Database(tmp_path / "lab.db")
    db.migrate("users", USER_MIGRATIONS)
    before_crlf = next(i for i, script in enumerate(MIGRATIONS) if "x'0d0a'" in script)
    db.migrate("mail", MIGRATIONS[:before_crlf])
    with db.write() as tx:
        tx.execute("INSERT INTO users VALUES ('u', '', x'', NULL, 0, 0)")
        tx.execute("INSERT INTO mailboxes (id, user, name, uidvalidity) VALUES (1, 'u', 'INBOX', 1)")
        for uid, data in enumerate((b"a\nb\rc\r\n\xff\x00\n", b"ok\r\n"), 1):
            cursor = tx.execute("INSERT INTO messages (mailbox, uid, size, internaldate, modseq) "
                                "VALUES (1, ?, ?, 0, 1)", (uid, len(data)))
            tx.execute("INSERT INTO bodies VALUES (?, ?)", (cursor.lastrowid, data))
    db.migrate("mail", MIGRATIONS)
    rows = db.query("SELECT m.size, b.data FROM messages m JOIN bodies b ON b.message = m.id "
                    "ORDER BY m.uid")
    assert [tuple(row) for row in rows] == [(13, b"a\r\nb\r\nc\r\n\xff\x00\r\n"), (4, b"ok\r\n")]
    db.close()
