"""IMAP with real clients over real sockets: Python's imaplib and IMAPClient first."""

from __future__ import annotations

import imaplib
import ssl
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

MESSAGE = (b"From: Bob <bob@lab.test>\r\nTo: alice@lab.test\r\nSubject: hello\r\n"
           b"Date: Sun, 22 Nov 2026 04:00:00 +0000\r\nMessage-ID: <1@lab.test>\r\n\r\n"
           b"Hello Alice,\r\nthis is the body.\r\n")


def connect(server, user: str = "alice") -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    client.login(user, user)
    return client


@pytest.fixture
def imap(lab):
    return lab.start(only="imap")


def test_login_append_select_fetch(imap):
    client = connect(imap)
    typ, data = client.append("INBOX", r"(\Flagged)", None, MESSAGE)
    assert typ == "OK" and b"APPENDUID" in data[0]
    typ, data = client.select("INBOX")
    assert (typ, data) == ("OK", [b"1"])
    for code in ("UIDVALIDITY", "UIDNEXT", "PERMANENTFLAGS", "HIGHESTMODSEQ"):
        assert client.untagged_responses.get(code), code
    typ, data = client.fetch("1", "(FLAGS RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK"
    assert data[0][1] == MESSAGE
    assert b"RFC822.SIZE %d" % len(MESSAGE) in data[0][0]
    assert b"\\Flagged" in data[0][0] and b"\\Seen" not in data[0][0]
    # BODY[] (not PEEK) sets \Seen and says so.
    typ, data = client.fetch("1", "(BODY[TEXT])")
    assert data[0][1] == b"Hello Alice,\r\nthis is the body.\r\n"
    typ, data = client.fetch("1", "(FLAGS)")
    assert b"\\Seen" in data[0]
    assert client.logout()[0] == "BYE"


def test_partial_fetch_and_header_fields(imap):
    client = connect(imap)
    client.append("INBOX", None, None, MESSAGE)
    client.select("INBOX")
    _typ, data = client.fetch("1", "(BODY.PEEK[]<5.10>)")
    assert data[0][0].endswith(b"BODY[]<5> {10}") and data[0][1] == MESSAGE[5:15]
    _typ, data = client.fetch("1", "(BODY.PEEK[]<1000.10>)")
    assert data[0][0].endswith(b"BODY[]<1000> {0}") or b'BODY[]<1000> ""' in data[0][0]
    _typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert data[0][1] == b"From: Bob <bob@lab.test>\r\nSubject: hello\r\n\r\n"
    _typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT FROM)])")
    assert b"Subject" not in data[0][1] and b"Message-ID: <1@lab.test>" in data[0][1]


def test_bad_commands_keep_the_session(imap):
    client = connect(imap)
    for bad in ("FETCH", "FOO BAR", 'LIST "unterminated'):
        tag = client._new_tag().decode()
        client.send(f"{tag} {bad}\r\n".encode())
        line = client.readline()
        assert line.startswith(f"{tag} BAD".encode()), line
    assert client.noop()[0] == "OK"


def test_plaintext_switch_off_means_logindisabled(lab):
    server = lab.start(only="imap", config="[imap]\nplaintext_auth = false\n")
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    assert "LOGINDISABLED" in client.capabilities
    assert "AUTH=PLAIN" not in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login("alice", "alice")
    context = ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt"))
    client.starttls(context)
    assert "AUTH=PLAIN" in client.capabilities
    assert client.login("alice", "alice")[0] == "OK"


def test_imaps(imap):
    context = ssl.create_default_context(cafile=str(imap.data / "tls" / "ca.crt"))
    client = imaplib.IMAP4_SSL("127.0.0.1", imap.port("imap", "imaps"), ssl_context=context)
    assert client.login("alice", "alice")[0] == "OK"
    assert client.select("Sent")[0] == "OK"


def test_wrong_password_and_other_users_mail(imap):
    client = imaplib.IMAP4("127.0.0.1", imap.port("imap", "imap"))
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("alice", "bob")
    bob = connect(imap, "bob")
    bob.append("INBOX", None, None, MESSAGE)
    alice = connect(imap)
    alice.select("INBOX")
    assert alice.search(None, "ALL") == ("OK", [b""])


def test_check_probe(imap):
    result = imap.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "imap" in result.stdout


def test_imapclient_two_sessions_see_each_other(imap):
    from imapclient import IMAPClient

    port = imap.port("imap", "imap")
    a = IMAPClient("127.0.0.1", port=port, ssl=False)
    b = IMAPClient("127.0.0.1", port=port, ssl=False)
    a.login("alice", "alice")
    b.login("alice", "alice")
    for i in range(3):
        a.append("INBOX", MESSAGE.replace(b"hello", b"hello %d" % i))
    a.select_folder("INBOX")
    b.select_folder("INBOX")
    uids = a.search("ALL")
    assert len(uids) == 3
    # A flag set by one session reaches the other as an untagged FETCH at its next NOOP.
    a.add_flags([uids[0]], [b"\\Flagged"])
    seen = b.noop()[1]
    assert any(r[1] == b"FETCH" and b"\\Flagged" in r[2][r[2].index(b"FLAGS") + 1]
               for r in seen), seen
    # An expunge: the other session gets EXPUNGE with its own sequence number.
    a.delete_messages([uids[1]])
    a.expunge()
    assert (2, b"EXPUNGE") in b.noop()[1]
    # A move to Archive: gone from INBOX for both, there in Archive.
    a.move([uids[2]], "Archive")
    assert (2, b"EXPUNGE") in b.noop()[1]
    assert b.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"] == 1
    assert sorted(b.search("ALL")) == [uids[0]]
    a.logout()
    b.logout()


def test_idle_woken_by_delivery_from_another_process(imap):
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", port=imap.port("imap", "imap"), ssl=False)
    client.login("alice", "alice")
    client.select_folder("INBOX")
    client.idle()
    deliver = textwrap.dedent(f"""
        from pathlib import Path
        from services.store import Store
        store = Store(Path({str(imap.data)!r}))
        print(store.mail.append("alice", "INBOX", {MESSAGE!r}))
    """)
    done = subprocess.run([sys.executable, "-c", deliver], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    responses = client.idle_check(timeout=5)  # the store promises < 1 s
    client.idle_done()
    assert (1, b"EXISTS") in responses, responses
    assert (1, b"RECENT") in responses, responses
    client.logout()


def test_idle_woken_by_smtp_delivery(lab):
    import smtplib

    from imapclient import IMAPClient

    server = lab.start(only="smtp,imap")
    client = IMAPClient("127.0.0.1", port=server.port("imap", "imap"), ssl=False)
    client.login("bob", "bob")
    client.select_folder("INBOX")
    client.idle()
    with smtplib.SMTP("127.0.0.1", server.port("smtp", "smtp")) as smtp:
        smtp.sendmail("alice@lab.test", ["bob@lab.test"], MESSAGE)
    responses = client.idle_check(timeout=5)
    client.idle_done()
    assert (1, b"EXISTS") in responses, responses
    fetched = client.fetch([1], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    assert b"hello" in next(iter(fetched.values()))[b"BODY[HEADER.FIELDS (SUBJECT)]"]
    client.logout()


def test_uidplus_condstore_and_folders(imap):
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", port=imap.port("imap", "imap"), ssl=False)
    client.login("alice", "alice")
    caps = client.capabilities()
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"SPECIAL-USE", b"LITERAL+",
                b"UNSELECT", b"ENABLE", b"ID", b"CHILDREN", b"CONDSTORE"):
        assert cap in caps, cap
    server_id = client.id_({"name": "pytest"})[0]
    assert dict(zip(server_id[::2], server_id[1::2], strict=True))[b"name"] == b"protolab"
    client.create_folder("Projects/2026/Grüße")
    names = [name for _, _, name in client.list_folders()]
    assert "Projects/2026/Grüße" in names and "Projects/2026" in names
    flags = {name: f for f, _, name in client.list_folders()}
    assert b"\\HasChildren" in flags["Projects"] and b"\\Sent" in flags["Sent"]
    client.rename_folder("Projects", "Work")
    assert "Work/2026/Grüße" in [n for _, _, n in client.list_folders()]
    client.select_folder("Work/2026/Grüße")
    client.append("Work/2026/Grüße", MESSAGE)
    info = client.select_folder("Work/2026/Grüße", readonly=False)
    assert info[b"EXISTS"] == 1 and info[b"UIDNEXT"] == 2
    modseq = info[b"HIGHESTMODSEQ"]
    client.add_flags([1], ["$Label1"])
    changed = client.fetch([1], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
    assert changed[1][b"MODSEQ"][0] > modseq and b"$Label1" in changed[1][b"FLAGS"]
    assert client.fetch([1], ["FLAGS"], modifiers=[f"CHANGEDSINCE {changed[1][b'MODSEQ'][0]}"]) == {}
    client.unselect_folder()
    client.delete_folder("Work")  # it has inferiors: kept as \Noselect (RFC 3501 6.3.4)
    assert {name: f for f, _, name in client.list_folders()}["Work"] == \
        (b"\\Noselect", b"\\HasChildren")
    with pytest.raises(Exception, match="HASCHILDREN"):
        client.delete_folder("Work")
    with pytest.raises(Exception, match="TRYCREATE"):
        client.append("Nowhere", MESSAGE)
    client.logout()


def test_big_message_fetched_in_chunks_like_thunderbird(imap):
    from imapclient import IMAPClient

    attachment = bytes(range(256)) * 400
    import base64
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    big = (b"From: bob@lab.test\r\nSubject: big\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
           b"Content-Type: text/plain\r\n\r\nsee attachment\r\n--BB\r\n"
           b"Content-Type: application/octet-stream; name=data.bin\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r\n--BB--\r\n")
    client = IMAPClient("127.0.0.1", port=imap.port("imap", "imap"), ssl=False)
    client.login("alice", "alice")
    uid = int(client.append("INBOX", big).split()[2].rstrip(b"]"))  # [APPENDUID v uid]
    client.select_folder("INBOX")
    size = client.fetch([uid], ["RFC822.SIZE"])[uid][b"RFC822.SIZE"]
    assert size == len(big)
    chunks, offset = [], 0
    while offset < size:
        key = f"BODY[]<{offset}>".encode()
        data = client.fetch([uid], [f"BODY.PEEK[]<{offset}.32768>"])[uid][key]
        chunks.append(data)
        offset += 32768
    assert b"".join(chunks) == big
    part = client.fetch([uid], ["BODY.PEEK[2]<0.100>", "BODY.PEEK[2.MIME]"])[uid]
    assert part[b"BODY[2]<0>"] == encoded[:100]
    assert part[b"BODY[2.MIME]"].startswith(b"Content-Type: application/octet-stream")
    structure = client.fetch([uid], ["BODYSTRUCTURE"])[uid][b"BODYSTRUCTURE"]
    assert structure.is_multipart and structure[0][1][6] == len(encoded)
    assert b"\\Seen" not in client.get_flags([uid])[uid]
    client.logout()


def test_pop3_deletion_reaches_an_imap_session(lab):
    import poplib

    server = lab.start(only="pop3,imap")
    client = connect(server)
    for i in range(2):
        client.append("INBOX", None, None, MESSAGE.replace(b"hello", b"hello %d" % i))
    client.select("INBOX")
    pop = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"))
    pop.user("alice")
    pop.pass_("alice")
    pop.dele(1)
    pop.quit()
    typ, _ = client.noop()
    assert typ == "OK"
    assert client.untagged_responses.get("EXPUNGE") == [b"1"]
    assert client.search(None, "ALL") == ("OK", [b"1"])
    assert b"hello 1" in client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1]
