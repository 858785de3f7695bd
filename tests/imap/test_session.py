"""The IMAP session state machine driven directly (no sockets), and fuzzed."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.credentials import Credentials
from services.imap.parser import Reader
from services.imap.session import Session
from services.journal import Journal
from services.store import Store


class Harness:
    def __init__(self, store: Store, journal: Journal) -> None:
        self.out = bytearray()
        self.reader = Reader(append_limit=100_000)
        self.session = Session(store.mail, Credentials(store.users, {"lab.test"}), self.out.extend,
                               journal=journal.open("imap", "test"),
                               plaintext_auth=True, tls=False, starttls=True,
                               subscribe=store.subscribe)
        self.session.greeting()
        self.session.flush()

    def feed(self, data: bytes) -> bytes:
        """What the adapter does, minus the socket."""
        start = len(self.out)
        self.reader.feed(data)
        while not self.session.closing and (event := self.reader.next()) is not None:
            self.session.handle(event)
            self.reader.raw_line = self.session.wants_line
            self.reader.authenticated = self.session.user is not None
            self.session.wants_tls = False
        return bytes(self.out[start:])


def make_store(tmp_path: Path) -> tuple[Store, Journal]:
    store = Store(tmp_path / "data")
    store.users.add("alice", "alice")
    store.mail.append("alice", "INBOX", b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n", ["\\Seen"])
    store.mail.append("alice", "INBOX", b"Content-Type: multipart/mixed; boundary=q\r\n\r\n"
                      b"--q\r\n\r\none\r\n--q\r\nContent-Type: message/rfc822\r\n\r\n"
                      b"Subject: in\r\n\r\ntwo\r\n--q--\r\n")
    return store, Journal(tmp_path / "journal", None)


def test_logged_in_session_answers_every_tag(tmp_path):
    store, journal = make_store(tmp_path)
    h = Harness(store, journal)
    assert h.feed(b"a LOGIN alice alice\r\n").startswith(b"a OK")
    out = h.feed(b"b SELECT INBOX\r\nc FETCH 2 (BODYSTRUCTURE BODY.PEEK[2.TEXT])\r\n")
    assert b"c OK" in out and b'"MESSAGE" "RFC822"' in out and b"two" in out
    store.close()


COMMANDS = [
    "NOOP", "CAPABILITY", "LOGIN alice alice", "LOGIN alice wrong", "SELECT INBOX",
    "EXAMINE Sent", "SELECT {n}", "CREATE x/{n}", "DELETE x/{n}", "RENAME x/{n} y/{n}",
    "LIST \"\" *", "LIST \"\" %/{n}", "LSUB \"\" *", "SUBSCRIBE x/{n}",
    "STATUS INBOX (MESSAGES UNSEEN RECENT)",
    "FETCH {n} (FLAGS BODY.PEEK[{n}.MIME] BODY[]<{n}.{m}>)", "FETCH {n}:* ALL", "FETCH * FULL",
    "UID FETCH {n}:{m} (UID BODYSTRUCTURE ENVELOPE RFC822.SIZE)",
    "STORE {n} +FLAGS (\\Deleted $k{m})", "STORE {n}:{m} -FLAGS.SILENT (\\Seen)",
    "UID STORE {n} (UNCHANGEDSINCE {m}) FLAGS ()", "EXPUNGE", "UID EXPUNGE {n}:{m}",
    "SEARCH OR {n} UNSEEN NOT SUBJECT x", "UID SEARCH SINCE 1-Jan-2020 TEXT hello",
    "SEARCH BEFORE 31-Feb-2020", "COPY {n} Trash", "MOVE {n}:* Archive", "UID MOVE {n} INBOX",
    "CLOSE", "UNSELECT", "ENABLE QRESYNC", "ID NIL", "NAMESPACE", "CHECK",
    "APPEND INBOX (\\Seen) {{5+}}\r\nhello", "APPEND x/{n} {{3+}}\r\nabc",
    "IDLE", "DONE", "AUTHENTICATE PLAIN", "AGpvZQBqb2U=", "*", "STARTTLS",
    "FETCH {n} BODY[{n}.{m}.HEADER.FIELDS ({n})]", "SEARCH HEADER {n} {m}",
    "SORT (REVERSE SUBJECT DISPLAYFROM) UTF-8 {n}:*", "UID SORT RETURN (MIN ALL) (DATE) UTF-8 ALL",
    "THREAD REFERENCES UTF-8 ALL", "UID THREAD ORDEREDSUBJECT US-ASCII {n}",
    "FETCH {n} (BINARY.SIZE[{m}] BINARY.PEEK[{n}]<{m}.{n}>)",
    'APPEND INBOX CATENATE (URL "/INBOX/;UID={n}/;SECTION={m}" TEXT {{2+}}\r\nhi)',
    'LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN STATUS (MESSAGES))',
]


@given(st.lists(st.tuples(st.sampled_from(COMMANDS), st.integers(0, 5), st.integers(0, 5)),
                max_size=25))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_command_sequences_never_crash(tmp_path_factory, script):
    store, journal = make_store(tmp_path_factory.mktemp("fuzz"))
    h = Harness(store, journal)
    try:
        for i, (template, n, m) in enumerate(script):
            command = template.format(n=n, m=m)
            untagged = command in ("DONE", "AGpvZQBqb2U=", "*") or h.session.wants_line
            out = h.feed((command if untagged else f"t{i} {command}").encode() + b"\r\n")
            if h.session.closing:
                break
            if not untagged and not h.session.wants_line and command != "IDLE":
                assert f"t{i} ".encode() in out, (command, out)
    finally:
        h.session.close()
        store.close()


@given(st.lists(st.tuples(st.booleans(), st.sampled_from(COMMANDS), st.integers(0, 5),
                          st.integers(0, 5)), max_size=30))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_two_sessions_interleaved_never_crash(tmp_path_factory, script):
    store, journal = make_store(tmp_path_factory.mktemp("fuzz2"))
    pair = [Harness(store, journal), Harness(store, journal)]
    for h in pair:
        h.feed(b"a LOGIN alice alice\r\nb SELECT INBOX\r\n")
    try:
        for i, (second, template, n, m) in enumerate(script):
            h = pair[second]
            if h.session.closing:
                continue
            command = template.format(n=n, m=m)
            untagged = command in ("DONE", "AGpvZQBqb2U=", "*") or h.session.wants_line
            out = h.feed((command if untagged else f"t{i} {command}").encode() + b"\r\n")
            store.poll()  # what the lab's loop does: the other session may be IDLE
            if not untagged and not h.session.wants_line and not h.session.closing \
                    and command != "IDLE":
                assert f"t{i} ".encode() in out, (command, out)
    finally:
        for h in pair:
            h.session.close()
        store.close()


def test_fetch_of_a_message_expunged_meanwhile_says_what_is_known(tmp_path):
    """RFC 5530 EXPUNGEISSUED, as Dovecot: UID and FLAGS, NIL for the bytes, OK."""
    store, journal = make_store(tmp_path)
    one, two = Harness(store, journal), Harness(store, journal)
    for h in (one, two):
        h.feed(b"a LOGIN alice alice\r\nb SELECT INBOX\r\n")
    assert b"c OK" in two.feed(b"c STORE 1 +FLAGS (\\Deleted)\r\nd EXPUNGE\r\n")
    out = one.feed(b"e FETCH 1 (UID FLAGS BODY.PEEK[] ENVELOPE)\r\n")
    assert b"* 1 FETCH (UID 1 FLAGS (\\Seen \\Recent) BODY[] NIL)\r\n" in out
    assert out.endswith(b"e OK [EXPUNGEISSUED] Some messages were expunged meanwhile\r\n")
    assert b"* 1 EXPUNGE" in one.feed(b"f NOOP\r\n")
    store.close()


def test_multiappend_stores_all_or_none(tmp_path):
    """RFC 3502: one APPENDUID for the set; an invalid message stores none of them."""
    store, journal = make_store(tmp_path)
    h = Harness(store, journal)
    h.feed(b"a LOGIN alice alice\r\n")
    out = h.feed(b"b APPEND INBOX {3+}\r\none (\\Seen) {3+}\r\ntwo\r\n")
    assert out.startswith(b"b OK [APPENDUID ") and out.split()[4] == b"3:4]"
    out = h.feed(b"c APPEND INBOX {5+}\r\nthree (\\Bogus) {4+}\r\nfour\r\n")
    assert out.startswith(b"c BAD Invalid system flag")
    assert b"* 4 EXISTS" in h.feed(b"d SELECT INBOX\r\n")
    list_out = h.feed(b'e LIST (SUBSCRIBED RECURSIVEMATCH) "" % RETURN (CHILDREN)\r\n')
    assert list_out.endswith(b"e OK LIST completed\r\n")
    assert h.feed(b'f LIST (RECURSIVEMATCH) "" %\r\n').startswith(b"f BAD")
    store.close()


def test_catenate_builds_a_message_from_text_and_urls(tmp_path):
    """RFC 4469: TEXT parts and the sections IMAP URLs name; a URL of nothing is BADURL."""
    store, journal = make_store(tmp_path)
    h = Harness(store, journal)
    h.feed(b"a LOGIN alice alice\r\n")
    out = h.feed(b'b APPEND Drafts CATENATE (URL "/INBOX/;UID=1/;SECTION=HEADER" '
                 b'TEXT {5+}\r\nnew\r\n URL "/INBOX/;UID=2/;SECTION=2.TEXT/;PARTIAL=0.3")\r\n')
    assert out.startswith(b"b OK [APPENDUID ")
    h.feed(b"c SELECT Drafts\r\n")
    assert b"From: a@b\r\nSubject: x\r\n\r\nnew\r\ntwo)" in h.feed(b"d FETCH 1 BODY.PEEK[]\r\n")
    out = h.feed(b'e APPEND Drafts CATENATE (TEXT {2+}\r\nhi URL "/INBOX;UIDVALIDITY=1234/;UID=1")\r\n')
    assert out.startswith(b'e NO [BADURL "/INBOX;UIDVALIDITY=1234/;UID=1"]')
    assert h.feed(b"g STATUS Drafts (MESSAGES)\r\n").startswith(b'* STATUS "Drafts" (MESSAGES 1)')  # none
    store.close()
