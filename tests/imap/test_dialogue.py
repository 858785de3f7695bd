"""IMAP dialogues byte by byte over a socket: what RFC 3501 and the extensions say exactly."""

from __future__ import annotations

import socket
import ssl

import pytest


class Raw:
    """A bare IMAP connection: send bytes, read responses up to a tagged line."""

    def __init__(self, port: int) -> None:
        self._start(socket.create_connection(("127.0.0.1", port), timeout=10))

    @classmethod
    def over(cls, sock: socket.socket) -> Raw:
        """Over a socket connected already (with the options a test wants)."""
        conn = cls.__new__(cls)
        sock.settimeout(10)
        conn._start(sock)
        return conn

    def _start(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = self.sock.makefile("rb")
        self.greeting = self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        line = self.file.readline()
        assert line, "connection closed"
        return line

    def until(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(b"{") or line.rstrip().endswith(b"}"):
                size = int(line.rstrip()[line.rstrip().rindex(b"{") + 1:-1])
                lines.append(self.file.read(size))
            if line.startswith(tag + b" "):
                return lines

    def cmd(self, text: str | bytes, tag: bytes = b"t") -> list[bytes]:
        data = text.encode() if isinstance(text, str) else text
        self.send(tag + b" " + data + b"\r\n")
        return self.until(tag)


@pytest.fixture
def imap(lab):
    return lab.start(only="imap")


@pytest.fixture
def raw(imap):
    conn = Raw(imap.port("imap", "imap"))
    assert conn.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    return conn


def msg(subject: str, extra: str = "") -> bytes:
    return (f"From: Bob <bob@lab.test>\r\nTo: alice@lab.test\r\nSubject: {subject}\r\n"
            f"Date: Mon, 2 Feb 2026 10:00:00 +0100\r\n{extra}\r\nbody of {subject}\r\n").encode()


def append(raw: Raw, subject: str, mailbox: str = "INBOX", flags: str = "") -> bytes:
    data = msg(subject)
    lines = raw.cmd(f"APPEND {mailbox} {flags} {{{len(data)}+}}\r\n".encode().replace(b"  ", b" ")
                    + data)
    assert lines[-1].startswith(b"t OK [APPENDUID "), lines
    return lines[-1]


def test_pipelined_commands_answered_in_order(raw):
    raw.send(b"a NOOP\r\nb CAPABILITY\r\nc BOGUS\r\nd SELECT INBOX\r\ne NOOP\r\n")
    tags = []
    for tag in (b"a", b"b", b"c", b"d", b"e"):
        lines = raw.until(tag)
        tags.append(lines[-1].split()[:2])
    assert tags == [[b"a", b"OK"], [b"b", b"OK"], [b"c", b"BAD"], [b"d", b"OK"], [b"e", b"OK"]]


def test_synchronising_literal_gets_continuation(imap):
    conn = Raw(imap.port("imap", "imap"))
    conn.send(b"a LOGIN {5}\r\n")
    assert conn.line().startswith(b"+ ")
    conn.send(b"alice {5}\r\n")
    assert conn.line().startswith(b"+ ")
    conn.send(b"alice\r\n")
    assert conn.until(b"a")[-1].startswith(b"a OK")


def test_huge_literal_refused_before_any_byte(lab):
    server = lab.start(only="imap", config="[imap]\nsize_limit = 10000\n")
    raw = Raw(server.port("imap", "imap"))
    raw.cmd("LOGIN alice alice")
    raw.send(b"a APPEND INBOX {999999999}\r\n")
    assert raw.line().startswith(b"a NO [TOOBIG]")
    assert raw.cmd("NOOP")[-1].startswith(b"t OK")
    # Non-synchronising: refused, its bytes read and dropped, the session goes on.
    raw.send(b"b APPEND INBOX {20000+}\r\n" + b"x" * 20000 + b"\r\n")
    assert raw.line().startswith(b"b NO [TOOBIG]")
    assert raw.cmd("NOOP")[-1].startswith(b"t OK")
    assert raw.cmd("STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 0)\r\n'
    # Within the limit, a non-synchronising literal is taken at once.
    data = msg("fits")
    raw.send(b"c APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    assert raw.until(b"c")[-1].startswith(b"c OK [APPENDUID")


def test_select_reports_everything(raw):
    append(raw, "one", flags="(\\Seen)")
    append(raw, "two")
    lines = raw.cmd("SELECT INBOX")
    text = b"".join(lines).decode()
    for needle in ("* FLAGS (", "* OK [PERMANENTFLAGS (", "* 2 EXISTS", "* 2 RECENT",
                   "* OK [UNSEEN 2]", "* OK [UIDVALIDITY ", "* OK [UIDNEXT 3]",
                   "t OK [READ-WRITE]"):
        assert needle in text, needle
    other = raw.cmd("EXAMINE INBOX")
    assert other[-1].startswith(b"t OK [READ-ONLY]")
    assert raw.cmd("STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"t NO")


def test_examine_sees_recent_without_taking_it(raw):
    append(raw, "one")
    assert b"* 1 RECENT" in b"".join(raw.cmd("EXAMINE INBOX"))
    assert b"* 1 RECENT" in b"".join(raw.cmd("SELECT INBOX"))
    assert b"* 0 RECENT" in b"".join(raw.cmd("SELECT INBOX"))


def test_recent_belongs_to_one_session(imap, raw):
    append(raw, "one")
    second = Raw(imap.port("imap", "imap"))
    second.cmd("LOGIN alice alice")
    assert b"* 1 RECENT" in b"".join(raw.cmd("SELECT INBOX"))
    assert b"* 0 RECENT" in b"".join(second.cmd("SELECT INBOX"))
    second.cmd("SELECT Sent")
    append(second, "two")
    lines = b"".join(raw.cmd("NOOP"))  # first to see it: it is recent here, not there
    assert b"* 2 EXISTS" in lines and b"* 2 RECENT" in lines
    assert b"* 0 RECENT" in b"".join(second.cmd("SELECT INBOX"))
    assert second.cmd("SEARCH RECENT")[0] == b"* SEARCH\r\n"
    assert raw.cmd("SEARCH RECENT")[0] == b"* SEARCH 1 2\r\n"


def test_fetch_forms(raw):
    append(raw, "one")
    raw.cmd("SELECT INBOX")
    lines = raw.cmd("FETCH 1 (UID RFC822.SIZE INTERNALDATE FLAGS ENVELOPE BODY)")
    text = lines[0].decode()
    assert text.startswith("* 1 FETCH (UID 1 RFC822.SIZE ")
    assert 'INTERNALDATE "' in text and "+0000\"" in text
    assert 'ENVELOPE ("Mon, 2 Feb 2026 10:00:00 +0100" "one" (("Bob" NIL "bob" "lab.test"))' in text
    assert 'BODY ("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 13 1)' in text
    lines = raw.cmd("FETCH 1 (RFC822.HEADER)")
    assert lines[0].endswith(b"RFC822.HEADER {%d}\r\n" % len(msg("one").split(b"\r\n\r\n")[0] + b"\r\n\r\n"))
    assert b"FLAGS" not in lines[0]
    lines = raw.cmd("FETCH 1 (RFC822.TEXT)")  # sets \Seen and says so
    assert b"\\Seen" in b"".join(lines)
    assert raw.cmd("FETCH 2 FLAGS")[-1].startswith(b"t BAD")
    assert raw.cmd("UID FETCH 2:* FLAGS")[0].startswith(b"* 1 FETCH (UID 1 ")  # 2:* = 1:2
    assert raw.cmd("UID FETCH 5 FLAGS") == [b"t OK UID FETCH completed\r\n"]


def test_store_expunge_and_uidplus(raw):
    for subject in ("a", "b", "c", "d"):
        append(raw, subject)
    raw.cmd("SELECT INBOX")
    lines = raw.cmd("STORE 1:2 +FLAGS (\\Deleted $Work)")
    assert lines[0].startswith(b"* FLAGS (") and b"$Work" in lines[0]  # a new keyword
    assert b"* 1 FETCH (FLAGS (\\Deleted $Work \\Recent))" in b"".join(lines)
    assert raw.cmd("STORE 3 +FLAGS.SILENT (\\Seen)") == [b"t OK STORE completed\r\n"]
    lines = raw.cmd("UID EXPUNGE 2:3")
    assert lines[:2] == [b"* 2 EXPUNGE\r\n", b"t OK UID EXPUNGE completed\r\n"]
    lines = raw.cmd("EXPUNGE")
    assert lines == [b"* 1 EXPUNGE\r\n", b"t OK EXPUNGE completed\r\n"]
    lines = raw.cmd("UID COPY 3:4 Archive")
    assert lines[-1].startswith(b"t OK [COPYUID ") and lines[-1].split()[4:6] == [b"3:4", b"1:2]"]
    lines = raw.cmd("MOVE 1 Trash")
    assert lines[0].startswith(b"* OK [COPYUID ") and lines[1] == b"* 1 EXPUNGE\r\n"
    assert raw.cmd("COPY 1 Nowhere")[-1].startswith(b"t NO [TRYCREATE]")
    assert raw.cmd("UNSELECT")[-1].startswith(b"t OK")
    assert raw.cmd("FETCH 1 FLAGS")[-1].startswith(b"t BAD")


def test_expunge_waits_during_fetch_from_another_session(imap, raw):
    append(raw, "a")
    append(raw, "b")
    other = Raw(imap.port("imap", "imap"))
    other.cmd("LOGIN alice alice")
    raw.cmd("SELECT INBOX")
    other.cmd("SELECT INBOX")
    other.cmd("STORE 1 +FLAGS (\\Deleted)")
    other.cmd("EXPUNGE")
    lines = raw.cmd("FETCH 1:2 (FLAGS)")  # no EXPUNGE during FETCH (RFC 3501 7.4.1)
    assert not any(b"EXPUNGE" in line for line in lines)
    assert b"* 2 FETCH" in b"".join(lines)
    lines = raw.cmd("NOOP")
    assert lines[0] == b"* 1 EXPUNGE\r\n"


def test_search_keys(raw):
    append(raw, "alpha", flags="(\\Flagged)")
    append(raw, "beta")
    append(raw, "Grüße".encode("latin-1").decode("latin-1"))
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SEARCH FLAGGED")[0] == b"* SEARCH 1\r\n"
    assert raw.cmd("SEARCH NOT FLAGGED SUBJECT beta")[0] == b"* SEARCH 2\r\n"
    assert raw.cmd("SEARCH OR SUBJECT alpha SUBJECT beta")[0] == b"* SEARCH 1 2\r\n"
    assert raw.cmd("UID SEARCH 2:*")[0] == b"* SEARCH 2 3\r\n"
    assert raw.cmd("SEARCH SENTON 2-Feb-2026")[0] == b"* SEARCH 1 2 3\r\n"
    assert raw.cmd("SEARCH SENTBEFORE 2-Feb-2026")[0] == b"* SEARCH\r\n"
    assert raw.cmd('SEARCH BODY "of beta"')[0] == b"* SEARCH 2\r\n"
    assert raw.cmd('SEARCH HEADER Date "10:00"')[0] == b"* SEARCH 1 2 3\r\n"
    assert raw.cmd(b"SEARCH CHARSET UTF-8 SUBJECT {6+}\r\nGr\xc3\xbc\xc3\x9f")[0] == b"* SEARCH 3\r\n"
    assert raw.cmd("SEARCH CHARSET KOI8-R ALL")[-1].startswith(b"t NO [BADCHARSET")
    assert raw.cmd("SEARCH LARGER 1 SMALLER 100000 UNSEEN NEW")[0] == b"* SEARCH 1 2 3\r\n"
    assert raw.cmd("SEARCH RETURN (MIN MAX COUNT) ALL")[0] == b'* ESEARCH (TAG "t") MIN 1 MAX 3 COUNT 3\r\n'
    assert raw.cmd("SEARCH MODSEQ 1")[1].startswith(b"* SEARCH 1 2 3 (MODSEQ ")  # [0]: HIGHESTMODSEQ
    assert raw.cmd("SEARCH FOO")[-1].startswith(b"t BAD")


def test_list_lsub_and_mailbox_names(raw):
    assert raw.cmd('LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""\r\n'
    assert raw.cmd('CREATE "a/b/&AMQ-"')[-1].startswith(b"t OK")
    assert raw.cmd('CREATE a')[-1].startswith(b"t NO [ALREADYEXISTS]")
    lines = raw.cmd('LIST "" "a/%"')
    assert lines[0] == b'* LIST (\\HasChildren) "/" "a/b"\r\n'
    lines = raw.cmd('LIST "a/" "*"')
    assert b'"a/b/&AMQ-"' in b"".join(lines)
    lines = raw.cmd('LIST (SPECIAL-USE) "" "*"')
    assert len(lines) == 6 and all(b"\\HasNoChildren \\" in line for line in lines[:-1])
    raw.cmd("SUBSCRIBE a/b")
    lines = raw.cmd('LSUB "" "a/%"')
    assert lines[0] == b'* LSUB () "/" "a/b"\r\n'
    lines = raw.cmd('LSUB "" "%"')
    assert b'* LSUB (\\Noselect) "/" "a"\r\n' in lines and b'* LSUB () "/" "INBOX"\r\n' in lines
    lines = raw.cmd('LIST "" "*" RETURN (SUBSCRIBED STATUS (MESSAGES))')
    assert b'* LIST (\\HasChildren \\Subscribed) "/" "a/b"\r\n' in lines
    assert b'* STATUS "a/b" (MESSAGES 0)\r\n' in lines
    assert raw.cmd('RENAME a c')[-1].startswith(b"t OK")
    assert b'"c/b/&AMQ-"' in b"".join(raw.cmd('LIST "" "c/*"'))
    assert raw.cmd('DELETE c')[-1] == b"t OK DELETE completed\r\n"  # stays \Noselect
    assert raw.cmd('DELETE INBOX')[-1].startswith(b"t NO")
    assert raw.cmd('STATUS "c/b" (MESSAGES UIDNEXT UNSEEN RECENT)')[0] == \
        b'* STATUS "c/b" (MESSAGES 0 UIDNEXT 1 UNSEEN 0 RECENT 0)\r\n'
    assert raw.cmd('SELECT "inbox"')[-1].startswith(b"t OK")
    assert raw.cmd("NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'


def test_delete_with_inferiors_leaves_a_noselect_name(raw):
    # RFC 3501 6.3.4: the messages go, the name stays \Noselect while it has inferiors.
    assert raw.cmd("CREATE Box/Sub")[-1] == b"t OK CREATE completed\r\n"
    append(raw, "kept?", "Box")
    assert raw.cmd("SUBSCRIBE Box")[-1] == b"t OK SUBSCRIBE completed\r\n"
    assert raw.cmd("DELETE Box") == [b"t OK DELETE completed\r\n"]
    assert raw.cmd('LIST "" "Box*"') == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Box"\r\n',
        b'* LIST (\\HasNoChildren) "/" "Box/Sub"\r\n', b"t OK LIST completed\r\n"]
    assert raw.cmd('LSUB "" "Box"') == [b'* LSUB (\\Noselect) "/" "Box"\r\n',
                                        b"t OK LSUB completed\r\n"]
    assert raw.cmd('LIST "" "Box*" RETURN (STATUS (MESSAGES))') == [
        b'* LIST (\\Noselect \\HasChildren) "/" "Box"\r\n',
        b'* LIST (\\HasNoChildren) "/" "Box/Sub"\r\n', b'* STATUS "Box/Sub" (MESSAGES 0)\r\n',
        b"t OK LIST completed\r\n"]
    refused = [b"t NO [CANNOT] Mailbox is \\Noselect\r\n"]
    assert raw.cmd("SELECT Box") == refused
    assert raw.cmd("EXAMINE Box") == refused
    assert raw.cmd("STATUS Box (MESSAGES)") == refused
    data = msg("into a noselect")
    assert raw.cmd(b"APPEND Box {%d+}\r\n" % len(data) + data) == refused
    raw.cmd("SELECT INBOX")
    append(raw, "to copy")
    assert raw.cmd("COPY 1 Box") == [b"t NO [CANNOT] Target mailbox is \\Noselect\r\n"]
    assert raw.cmd("DELETE Box") == [
        b"t NO [HASCHILDREN] Mailbox is \\Noselect and has children; delete them first\r\n"]
    # The last inferior gone, the placeholder goes too (as Dovecot does).
    assert raw.cmd("DELETE Box/Sub") == [b"t OK DELETE completed\r\n"]
    assert raw.cmd('LIST "" "Box*"') == [b"t OK LIST completed\r\n"]
    # CREATE of a placeholder's name makes it a mailbox again, empty.
    raw.cmd("CREATE Top/Leaf")
    raw.cmd("DELETE Top")
    assert raw.cmd("CREATE Top") == [b"t OK CREATE completed\r\n"]
    assert raw.cmd("STATUS Top (MESSAGES)") == [b'* STATUS "Top" (MESSAGES 0)\r\n',
                                                b"t OK STATUS completed\r\n"]


def test_rename_moves_subscriptions(raw):
    raw.cmd("CREATE Old/Sub")
    raw.cmd("CREATE Older")
    for name in ("Old", "Old/Sub", "Older"):
        raw.cmd(f"SUBSCRIBE {name}")
    assert raw.cmd("RENAME Old New") == [b"t OK RENAME completed\r\n"]
    assert raw.cmd('LSUB "" "*"') == [
        b'* LSUB () "/" "INBOX"\r\n', b'* LSUB () "/" "Archive"\r\n',
        b'* LSUB () "/" "Drafts"\r\n', b'* LSUB () "/" "Junk"\r\n', b'* LSUB () "/" "New"\r\n',
        b'* LSUB () "/" "New/Sub"\r\n', b'* LSUB () "/" "Older"\r\n', b'* LSUB () "/" "Sent"\r\n',
        b'* LSUB () "/" "Trash"\r\n', b"t OK LSUB completed\r\n"]
    # RENAME INBOX moves messages, not the name: INBOX stays subscribed, the new one is not.
    assert raw.cmd("RENAME INBOX Moved") == [b"t OK RENAME completed\r\n"]
    assert raw.cmd('LSUB "" "INBOX"') == [b'* LSUB () "/" "INBOX"\r\n', b"t OK LSUB completed\r\n"]
    assert raw.cmd('LSUB "" "Moved"') == [b"t OK LSUB completed\r\n"]


def test_rename_inbox_moves_its_messages(raw):
    append(raw, "one")
    assert raw.cmd("RENAME INBOX Old")[-1].startswith(b"t OK")
    assert b"MESSAGES 0" in raw.cmd("STATUS INBOX (MESSAGES)")[0]
    assert b"MESSAGES 1" in raw.cmd("STATUS Old (MESSAGES)")[0]


def test_idle_done_and_bad(raw):
    raw.cmd("SELECT INBOX")
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    raw.send(b"DONE\r\n")
    assert raw.line().startswith(b"i OK")
    raw.send(b"j IDLE\r\n")
    raw.line()
    raw.send(b"NOOP\r\n")
    assert raw.line().startswith(b"j BAD")


def test_condstore_qresync(raw):
    for subject in ("a", "b", "c"):
        append(raw, subject)
    assert raw.cmd("ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC\r\n"
    lines = raw.cmd("SELECT INBOX")
    uidvalidity = next(one for one in lines if b"UIDVALIDITY" in one).split()[3].rstrip(b"]")
    modseq = int(next(one for one in lines if b"HIGHESTMODSEQ" in one).split()[3].rstrip(b"]"))
    lines = raw.cmd("STORE 1 (UNCHANGEDSINCE 1) +FLAGS (\\Seen)")
    assert lines[-1].startswith(b"t OK [MODIFIED 1]")
    raw.cmd("STORE 2 +FLAGS (\\Deleted)")
    raw.cmd("EXPUNGE")
    lines = raw.cmd(f"SELECT INBOX (QRESYNC ({uidvalidity.decode()} {modseq}))")
    text = b"".join(lines)
    assert b"* OK [CLOSED]" in text and b"* VANISHED (EARLIER) 2\r\n" in text
    lines = raw.cmd(f"UID FETCH 1:* FLAGS (CHANGEDSINCE {modseq} VANISHED)")
    assert lines[0] == b"* VANISHED (EARLIER) 2\r\n"


def test_authenticate_plain_and_sasl_ir(imap):
    import base64

    conn = Raw(imap.port("imap", "imap"))
    conn.send(b"a AUTHENTICATE PLAIN\r\n")
    assert conn.line() == b"+ \r\n"
    conn.send(base64.b64encode(b"\0alice\0alice") + b"\r\n")
    assert conn.until(b"a")[-1].startswith(b"a OK [CAPABILITY ")
    conn = Raw(imap.port("imap", "imap"))
    line = conn.cmd(b"AUTHENTICATE PLAIN " + base64.b64encode(b"\0alice\0wrong"))[-1]
    assert line.startswith(b"t NO [AUTHENTICATIONFAILED]")
    conn.send(b"b AUTHENTICATE PLAIN\r\n")
    conn.line()
    conn.send(b"*\r\n")
    assert conn.until(b"b")[-1].startswith(b"b BAD")


def test_starttls_drops_pipelined_plaintext(imap):
    conn = Raw(imap.port("imap", "imap"))
    conn.send(b"a STARTTLS\r\nb LOGIN alice alice\r\n")  # the injection of CVE-2011-0411
    assert conn.line().startswith(b"a OK")
    context = ssl.create_default_context(cafile=str(imap.data / "tls" / "ca.crt"))
    tls = context.wrap_socket(conn.sock, server_hostname="localhost")
    tls.sendall(b"c CAPABILITY\r\n")
    reply = tls.recv(4096)
    assert reply.startswith(b"* CAPABILITY ") and b"STARTTLS" not in reply
    assert b"b OK" not in reply


def test_journal_has_the_dialogue_with_secrets_masked(imap, raw):
    append(raw, "journalled")
    raw.cmd("LOGOUT")
    assert imap.stop() == 0  # the journal is flushed at stop (else every 0.5 s)
    result = imap.cli("journal", "--service", "imap")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "t LOGIN alice" in text and "alice alice" not in text
    assert "APPEND INBOX {" in text and "bytes>" in text
    assert "APPENDUID" in text


def test_esearch_with_modseq(raw):
    for subject in ("a", "b", "c", "d"):
        append(raw, subject)
    raw.cmd("SELECT INBOX")
    assert raw.cmd("FETCH 1 MODSEQ")[0].startswith(b"* OK [HIGHESTMODSEQ ")  # CONDSTORE on
    modseq = {}
    for n in (1, 3, 2, 4):
        line = raw.cmd(f"STORE {n} +FLAGS \\Seen")[0]
        modseq[n] = int(line.split(b"MODSEQ (")[1].split(b")")[0])
    search = 'SEARCH RETURN ({}) {} MODSEQ "/flags/\\\\seen" all {}'
    assert raw.cmd(search.format("MIN", "1:3", 1))[0] == \
        f'* ESEARCH (TAG "t") MIN 1 MODSEQ {modseq[1]}\r\n'.encode()
    assert raw.cmd(search.format("", "1:3", 1))[0] == \
        f'* ESEARCH (TAG "t") ALL 1:3 MODSEQ {modseq[2]}\r\n'.encode()
    assert raw.cmd(search.format("MIN MAX", "2:3", 1))[0] == \
        f'* ESEARCH (TAG "t") MIN 2 MAX 3 MODSEQ {modseq[2]}\r\n'.encode()
    assert raw.cmd(search.format("ALL", "2:3", modseq[4]))[0] == b'* ESEARCH (TAG "t")\r\n'


def test_selected_mailbox_deleted_by_another_session(imap, raw):
    raw.cmd("CREATE Doomed")
    raw.cmd("SELECT Doomed")
    other = Raw(imap.port("imap", "imap"))
    other.cmd("LOGIN alice alice")
    assert other.cmd("DELETE Doomed")[-1].startswith(b"t OK")
    lines = raw.cmd("EXPUNGE")
    assert lines[0].startswith(b"* BYE") and lines[-1].startswith(b"t NO")


def test_internaldate_keeps_its_zone(raw):
    data = msg("dated")
    raw.cmd(b'APPEND INBOX "25-Mar-2007 01:30:00 +0300" {%d+}\r\n' % len(data) + data)
    raw.cmd("SELECT INBOX")
    assert b'INTERNALDATE "25-Mar-2007 01:30:00 +0300"' in raw.cmd("FETCH 1 INTERNALDATE")[0]
    assert raw.cmd("SEARCH ON 25-Mar-2007")[0] == b"* SEARCH 1\r\n"  # 24-Mar in UTC
    assert raw.cmd("SEARCH BEFORE 25-Mar-2007")[0] == b"* SEARCH\r\n"
    assert raw.cmd("COPY 1 Archive")[-1].startswith(b"t OK")
    raw.cmd("SELECT Archive")
    assert b'"25-Mar-2007 01:30:00 +0300"' in raw.cmd("FETCH 1 INTERNALDATE")[0]


def test_list_status_with_an_unknown_item_is_bad_and_the_session_goes_on(raw):
    """Found by the fuzz campaign: LIST ... RETURN (STATUS (X)) raised KeyError."""
    assert raw.cmd('LIST "" "*" RETURN (STATUS (MESSAGESX))')[-1].startswith(
        b"t BAD Unknown STATUS item")
    lines = raw.cmd('LIST "" "INBOX" RETURN (STATUS (MESSAGES))')
    assert any(line.startswith(b"* STATUS \"INBOX\" (MESSAGES ") for line in lines), lines
    assert lines[-1].startswith(b"t OK")


def test_sort_thread_multiappend_and_list_extended(imap, raw):
    """What webmails ask for (Roundcube sorts and threads on the server), and imaplib's
    sort() and thread() as a client drives them."""
    import imaplib

    def message(subject: str, sender: str, date: str, extra: str = "") -> bytes:
        return (f"From: {sender}\r\nSubject: {subject}\r\nDate: {date}\r\n{extra}\r\nx\r\n").encode()

    one = message("Plans", "Zoe <zoe@lab.test>", "Mon, 2 Feb 2026 10:00:00 +0000",
                  "Message-ID: <p@lab.test>\r\n")
    two = message("Re: plans", "adam@lab.test", "Mon, 2 Feb 2026 09:00:00 +0000",
                  "Message-ID: <r@lab.test>\r\nIn-Reply-To: <p@lab.test>\r\n")
    three = message("[news] Agenda", "Bob <bob@lab.test>", "Mon, 2 Feb 2026 11:00:00 +0000")
    lines = raw.cmd(b"APPEND INBOX {%d+}\r\n%s (\\Seen) {%d+}\r\n%s {%d+}\r\n%s" % (
        len(one), one, len(two), two, len(three), three))  # MULTIAPPEND: one APPENDUID set
    assert lines[-1].startswith(b"t OK [APPENDUID ") and b" 1:3] " in lines[-1]
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SORT (SUBJECT) UTF-8 ALL")[0] == b"* SORT 3 1 2\r\n"  # base subjects
    assert raw.cmd("SORT (REVERSE DATE) UTF-8 ALL")[0] == b"* SORT 3 1 2\r\n"
    assert raw.cmd("SORT (DISPLAYFROM) UTF-8 ALL")[0] == b"* SORT 2 3 1\r\n"  # adam, bob, zoe
    assert raw.cmd("UID SORT RETURN (MIN COUNT) (FROM) UTF-8 1:2")[0] == \
        b'* ESEARCH (TAG "t") UID MIN 2 COUNT 2\r\n'  # ESORT: MIN is first in sort order
    assert raw.cmd("THREAD REFERENCES UTF-8 ALL")[0] == b"* THREAD (1 2)(3)\r\n"
    assert raw.cmd("THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD (2 1)(3)\r\n"
    assert raw.cmd("SORT (SUBJECT) KOI8-R ALL")[-1].startswith(b"t NO [BADCHARSET")
    assert raw.cmd("SORT (REVERSE) UTF-8 ALL")[-1].startswith(b"t BAD")
    raw.cmd("CREATE a/b")
    raw.cmd("SUBSCRIBE a/b")
    assert raw.cmd('LIST (SUBSCRIBED RECURSIVEMATCH) "" a RETURN (CHILDREN)')[:-1] == [
        b'* LIST (\\HasChildren) "/" "a" ("CHILDINFO" ("SUBSCRIBED"))\r\n']
    assert raw.cmd('LIST (RECURSIVEMATCH) "" %')[-1].startswith(b"t BAD")
    client = imaplib.IMAP4("127.0.0.1", imap.port("imap", "imap"))
    client.login("alice", "alice")
    client.select("INBOX")
    assert client.sort("(FROM)", "UTF-8", "ALL") == ("OK", [b"2 3 1"])
    assert client.thread("REFERENCES", "UTF-8", "ALL") == ("OK", [b"(1 2)(3)"])
    client.logout()


def test_binary_append_and_fetch(raw):
    """RFC 3516: a literal8 with NUL bytes is stored 7-bit (base64) and comes back
    decoded from BINARY[], in a literal8; BINARY.SIZE counts the decoded bytes."""
    data = b"Subject: bin\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02 bytes\r\n"
    assert raw.cmd(b"APPEND INBOX ~{%d+}\r\n%s" % (len(data), data))[-1].startswith(b"t OK")
    raw.cmd("SELECT INBOX")
    lines = raw.cmd("FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BODY.PEEK[1])")
    assert lines[0] == b"* 1 FETCH (BINARY.SIZE[1] 11 BINARY[1] ~{11}\r\n"
    assert lines[1] == b"\x00\x01\x02 bytes\r\n"
    assert b"\x00" not in b"".join(lines[2:])  # BODY[1]: the base64 the store holds
    assert raw.cmd("FETCH 1 FLAGS")[0] == b"* 1 FETCH (FLAGS (\\Recent))\r\n"  # PEEK: no \Seen
