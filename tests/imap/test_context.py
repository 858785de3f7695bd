"""Dialogues of the extensions that tell a client about changes it did not ask for:
CONTEXT=SEARCH's updating searches (RFC 5267) and NOTIFY (RFC 5465), with the changes made
by another session, as imaptest's search-context-update* and notify groups check them."""

from __future__ import annotations

import pytest

from tests.imap.test_dialogue import Raw, msg


@pytest.fixture
def imap(lab):
    return lab.start(only="imap")


def login(imap) -> Raw:
    conn = Raw(imap.port("imap", "imap"))
    assert conn.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    return conn


def append(conn: Raw, subject: str, flags: str = "", box: str = "INBOX") -> None:
    data = msg(subject)
    lines = conn.cmd(b"APPEND %s %s{%d+}\r\n%s" % (box.encode(), flags.encode(), len(data), data))
    assert lines[-1].startswith(b"t OK"), lines


def test_search_return_update_follows_own_and_other_sessions_changes(imap):
    raw, other = login(imap), login(imap)
    for subject in ("one", "two", "three"):
        append(raw, subject)
    assert b"CONTEXT=SEARCH" in raw.cmd("CAPABILITY")[0]
    raw.cmd("SELECT INBOX")
    other.cmd("SELECT INBOX")
    assert raw.cmd("SEARCH RETURN (UPDATE) SEEN", b"s1") == [
        b'* ESEARCH (TAG "s1")\r\n', b"s1 OK SEARCH completed\r\n"]
    lines = raw.cmd("STORE 1,3 +FLAGS.SILENT (\\Seen)")
    assert lines[0] == b'* ESEARCH (TAG "s1") ADDTO (1 1,3)\r\n', lines
    other.cmd("STORE 2 +FLAGS.SILENT (\\Seen)")  # another session's change, heard at NOOP
    assert b'* ESEARCH (TAG "s1") ADDTO (2 2)\r\n' in raw.cmd("NOOP")
    other.cmd("STORE 1 +FLAGS.SILENT (\\Deleted)")
    other.cmd("EXPUNGE")
    lines = raw.cmd("NOOP")  # REMOVEFROM while message 1 still has its number
    assert lines.index(b'* ESEARCH (TAG "s1") REMOVEFROM (1 1)\r\n') < lines.index(
        b"* 1 EXPUNGE\r\n"), lines
    append(other, "four", "(\\Seen) ")
    lines = raw.cmd("NOOP")
    assert b"* 3 EXISTS\r\n" in lines and b'* ESEARCH (TAG "s1") ADDTO (3 3)\r\n' in lines
    assert raw.cmd('CANCELUPDATE "s1"')[-1].startswith(b"t OK")
    assert not any(b"ESEARCH" in line for line in raw.cmd("STORE 1:* -FLAGS (\\Seen)"))
    assert raw.cmd('CANCELUPDATE "s1"')[-1].startswith(b"t BAD")
    raw.cmd("STORE 1 +FLAGS.SILENT (\\Seen)")
    assert raw.cmd("UID SEARCH RETURN (UPDATE ALL) UNSEEN", b"u") == [
        b'* ESEARCH (TAG "u") UID ALL 3:4\r\n', b"u OK SEARCH completed\r\n"]
    assert raw.cmd("STORE 2 +FLAGS.SILENT (\\Seen)")[0] == \
        b'* ESEARCH (TAG "u") UID REMOVEFROM (1 3)\r\n'  # UIDs: the search was a UID SEARCH
    raw.cmd("UNSELECT")  # the updates end with the mailbox
    raw.cmd("SELECT INBOX")
    assert raw.cmd('CANCELUPDATE "u"')[-1].startswith(b"t BAD")


def test_search_return_partial(imap):
    raw = login(imap)
    for subject in ("a", "b", "c", "d", "e"):
        append(raw, subject)
    raw.cmd("SELECT INBOX")
    assert raw.cmd("SEARCH RETURN (PARTIAL 4:2) 1:2,4:5")[0] == \
        b'* ESEARCH (TAG "t") PARTIAL (2:4 2,4:5)\r\n'
    assert raw.cmd("UID SEARCH RETURN (PARTIAL 6:9) ALL")[0] == \
        b'* ESEARCH (TAG "t") UID PARTIAL (6:9 NIL)\r\n'
    for bad in ("PARTIAL 1", "PARTIAL 1:*", "PARTIAL 0:2"):
        assert raw.cmd(f"SEARCH RETURN ({bad}) ALL")[-1].startswith(b"t BAD"), bad


def test_notify_status_of_other_mailboxes_and_the_selected_one_as_it_changes(imap):
    raw, other = login(imap), login(imap)
    raw.cmd("CREATE Lists")
    append(raw, "kept", box="Lists")
    assert b"NOTIFY" in raw.cmd("CAPABILITY")[0]
    lines = raw.cmd("NOTIFY SET STATUS (mailboxes Lists (MessageNew MessageExpunge))")
    assert lines[0].startswith(b'* STATUS "Lists" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY '), lines
    assert raw.cmd("NOTIFY SET (mailboxes Lists (MessageExpunge))") == [
        b"t OK NOTIFY completed\r\n"]  # without STATUS: no initial STATUS
    assert raw.cmd("NOTIFY SET (personal (AnnotationChange))")[-1].startswith(
        b"t NO [BADEVENT (")
    assert raw.cmd("NOTIFY SET (bogus (MessageNew))")[-1].startswith(b"t BAD")
    raw.cmd("SELECT INBOX")
    raw.cmd("NOTIFY SET (selected (MessageNew MessageExpunge FlagChange)) "
            "(subtree Lists (MessageNew MessageExpunge)) (personal (MailboxName))")
    append(other, "news", box="Lists")  # heard without a command: the store's poll
    assert raw.line().startswith(b'* STATUS "Lists" (MESSAGES 2 UIDNEXT 3 UIDVALIDITY ')
    append(other, "for the selected one")
    assert raw.line() == b"* 1 EXISTS\r\n"
    assert raw.line() == b"* 1 RECENT\r\n"
    other.cmd("SELECT INBOX")
    other.cmd("STORE 1 +FLAGS.SILENT (\\Flagged)")
    assert raw.line() == b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))\r\n"
    other.cmd("CREATE Fresh")
    assert raw.line() == b'* LIST () "/" "Fresh"\r\n'
    assert raw.cmd("NOTIFY NONE") == [b"t OK NOTIFY completed\r\n"]
    other.cmd("DELETE Fresh")
    assert raw.cmd("NOOP") == [b"t OK NOOP completed\r\n"]  # NONE: nothing more


def test_notify_mailbox_name_of_a_rename_carries_oldname(imap):
    """RFC 5465 5.4: a renamed mailbox is one LIST of the new name with the OLDNAME
    extended data item (RFC 5258's syntax), not a LIST (\\NonExistent) and a new name;
    its inferiors are renamed with it, each with its own OLDNAME."""
    raw, other = login(imap), login(imap)
    assert other.cmd("CREATE Projects/Alpha")[-1].startswith(b"t OK")
    raw.cmd("NOTIFY SET (personal (MailboxName))")
    assert other.cmd("RENAME Projects Work")[-1].startswith(b"t OK")
    assert raw.line() == b'* LIST () "/" "Work" ("OLDNAME" ("Projects"))\r\n'
    assert raw.line() == b'* LIST () "/" "Work/Alpha" ("OLDNAME" ("Projects/Alpha"))\r\n'
    other.cmd("DELETE Work/Alpha")  # a deletion stays a LIST (\NonExistent)
    assert raw.line() == b'* LIST (\\NonExistent) "/" "Work/Alpha"\r\n'
    assert raw.cmd("NOOP") == [b"t OK NOOP completed\r\n"]


def test_notify_events_heard_during_a_worker_command_follow_its_tagged_reply(imap):
    """A change to another mailbox while this session's command runs in a worker thread
    is held and sent right after that command's tagged reply (RFC 5465 5: not during a
    command, but then), not dropped. The command is a big FETCH that the client does not
    read yet, so flow control keeps it in the worker while the change happens; a second
    session, IDLE on that mailbox, hears it from the same poll of the store."""
    import imaplib
    import socket

    from imapclient import IMAPClient

    port = imap.port("imap", "imap")
    filler = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    filler.login("alice", "alice")
    big = msg("big") + (b"z" * 998 + b"\r\n") * 1000  # 1 MB
    for _ in range(8):  # 8 MB: more than the socket buffers on both sides hold
        assert filler.append("INBOX", None, None, big)[0] == "OK"
    watcher = IMAPClient("127.0.0.1", port, ssl=False, timeout=30)
    watcher.login("alice", "alice")
    watcher.select_folder("Archive")

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    raw = Raw.over(sock)
    assert raw.cmd("LOGIN alice alice")[-1].startswith(b"t OK")
    raw.cmd("NOTIFY SET STATUS (mailboxes Archive (MessageNew))")
    raw.cmd("SELECT INBOX")
    raw.send(b"f FETCH 1:* BODY.PEEK[]\r\n")  # not read yet: it stays in the worker
    imap.journal_until("imap", "f FETCH 1:* BODY.PEEK[]")
    watcher.idle()
    assert filler.append("Archive", None, None, msg("meanwhile"))[0] == "OK"
    assert any(b"EXISTS" in response for response in watcher.idle_check(timeout=10))
    watcher.idle_done()
    lines = raw.until(b"f")
    assert lines[-1].startswith(b"f OK"), lines[-1]
    assert not any(b"STATUS" in line for line in lines[:-1])  # not during the command
    rest = raw.cmd("NOOP", b"n")
    assert rest[0].startswith(b'* STATUS "Archive" (MESSAGES 1 UIDNEXT 2 '), rest
    for conn in (watcher, filler):
        conn.logout()
