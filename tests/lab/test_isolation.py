"""Isolation across every protocol of one all-in-one lab (issue 11, defect 1 and the
isolation rule): alice reaches nothing of bob's and nothing of the data directory's own
files (lab.db, lab.db-wal, tls/ca.key, journal/), by any spelling of a path, and nothing
logs in with an empty, wrong or missing password, or with a hash instead of one.

The traps are planted on disk before the attack: a file and a mail of bob's with markers,
and links in alice's home to bob's home, the data directory, lab.db and the CA key. No
protocol of the lab makes links, but a link in a home stands for one a user got there any
other way (an unpacked archive, another tool on a shared volume): the rule is that the lab
never follows a link out of the tree it serves, whoever made it.

Every reply of every attempt is collected; none may hold a marker of what alice must not
see (the SQLite header, the CA key, a journal line, bob's file and mail).
"""

from __future__ import annotations

import base64
import ftplib
import imaplib
import io
import os
import poplib
import smtplib
from pathlib import Path

import pytest

from tests.conftest import Server
from tests.ftputil import ftp_login
from tests.hardening import (
    ALL,
    basic,
    http_request,
    imap_client,
    nt_hash_hex,
    pbkdf2_hash,
    pop3_client,
    send_mail,
    smb_client,
    smtp_auth_plain,
    smtp_client,
)

BOB_FILE = b"BOB-FILE-SECRET-7f3a"
BOB_MAIL = b"BOB-MAIL-SECRET-91c2"
OWNED = b"OWNED-BY-ALICE-55d0"  # what alice tries to write where she must not
# Names that no listing alice gets may show (they are bob's or the data directory's).
FORBIDDEN_NAMES = ("private.txt", "lab.db", "ca.key", "server.key", "passwd", "shadow")


def spellings(ups: int, target: str) -> list[str]:
    """Ways to write "`ups` levels up, then `target`" that a path rule must all refuse."""
    def up(dots: str, sep: str) -> str:
        return sep.join([dots] * ups) + sep + target.replace("/", sep)
    return [
        up("..", "/"), up("..", "\\"), "/" + up("..", "/"), "\\" + up("..", "\\"),
        "a/" + up("..", "/").replace("..", "../..", 1), "./" + up("..", "/"),
        up("\uff0e\uff0e", "/"),  # FULLWIDTH FULL STOP: NFKC folds it to "."
        up("\u2024\u2024", "/"),  # ONE DOT LEADER
        up("\u2025", "/"),        # TWO DOT LEADER: one character that folds to ".."
        up("\ufe52\ufe52", "/"),  # SMALL FULL STOP
        up("..", "\uff0f"), up("..", "\ufe68"),  # fullwidth solidus, small reverse solidus
        up("...", "/"), up(".. ", "/"), up("....", "//"),
    ]


def plant(server: Server) -> dict[str, bytes]:
    """Bob's secrets and links out of alice's home; returns what no reply may contain."""
    data = server.data
    bob, alice = data / "homes/bob", data / "homes/alice"
    for home in (bob, alice):
        (home / "public_html").mkdir(parents=True, exist_ok=True)
    (bob / "private.txt").write_bytes(BOB_FILE + b" in bob's home\n")
    send_mail(server, "bob@lab.test", b"Subject: for bob\r\n\r\n" + BOB_MAIL + b"\r\n")
    links = {"bobhome": bob, "data": data, "db": data / "lab.db", "key": data / "tls/ca.key",
             "public_html/bob": bob, "public_html/db": data / "lab.db",
             "public_html/data": data, "public_html/journal": data / "journal"}
    for name, target in links.items():
        (alice / name).symlink_to(target)
    journal_text = server.journal_until("smtp", "bob@lab.test")
    assert journal_text, "the journal never showed the delivery"
    journal = sorted((data / "journal").glob("*.jsonl"))[0].read_bytes().splitlines()[0][:40]
    key = (data / "tls/ca.key").read_bytes().splitlines()[1][:40]
    return {"sqlite": b"SQLite format 3", "ca.key": key, "journal": journal,
            "bob's file": BOB_FILE, "bob's mail": BOB_MAIL}


def assert_untouched(server: Server) -> None:
    """What alice tried to write outside her home did not land anywhere, and what she tried
    to overwrite through links is as it was (links are not followed by this walk)."""
    data = server.data
    assert (data / "lab.db").read_bytes().startswith(b"SQLite format 3")
    assert (data / "homes/bob/private.txt").read_bytes().startswith(BOB_FILE)
    assert (data / "tls/ca.key").read_bytes().startswith(b"-----BEGIN")
    alice = data / "homes/alice"
    for directory, _, files in os.walk(data):
        if Path(directory) == alice or alice in Path(directory).parents:
            continue
        for name in files:
            path = Path(directory, name)
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20:
                assert OWNED not in path.read_bytes(), f"alice's write landed in {path}"


def assert_clean(replies: list[bytes], markers: dict[str, bytes]) -> None:
    blob = b"\n".join(replies)
    leaked = [name for name, marker in markers.items() if marker in blob]
    assert not leaked, f"replies to alice held {leaked}"


def targets(ups_to_homes: int, links: str = "") -> list[str]:
    """Every escape: up from the root alice is given to bob's home and the data directory,
    and through the planted links (`links`: where that root is inside her home)."""
    out = []
    for ups, target in ((ups_to_homes, "bob/private.txt"), (ups_to_homes + 1, "lab.db"),
                        (ups_to_homes + 1, "lab.db-wal"), (ups_to_homes + 1, "tls/ca.key")):
        out += spellings(ups, target)
    through = ["bobhome/private.txt", "db", "key", "data/lab.db", "data/tls/ca.key",
               "public_html/bob/private.txt", "public_html/db", "public_html/data/lab.db"]
    return out + [path[len(links):] for path in through if path.startswith(links)]


@pytest.fixture
def planted(lab):
    server = lab.start(only=ALL)
    return server, plant(server)


def test_ftp(planted):
    server, markers = planted
    ftp = ftp_login(server)
    replies: list[bytes] = []
    # FTP's "/" is alice's home as a chroot: ".." above it stays there, so "../../lab.db"
    # may well be a file of her own. What counts is what comes back and where writes land.
    escapes = [*targets(1), str(server.data / "lab.db"), "/public/../../lab.db"]
    for path in escapes:
        out = io.BytesIO()
        try:
            ftp.retrbinary(f"RETR {path}", out.write)
        except ftplib.error_perm:
            pass
        replies.append(out.getvalue())
    for directory in ("..", "../bob", "../..", "bobhome", "data", "public_html/journal",
                      "\uff0e\uff0e/bob", "../../journal", "/public/.."):
        try:
            ftp.cwd(directory)
        except ftplib.error_perm:
            pass
        names = ftp.nlst()
        replies.append("\n".join(names).encode())
        assert not set(names) & set(FORBIDDEN_NAMES), (directory, names)
        ftp.cwd("/")
        for command in (f"LIST {directory}", f"NLST {directory}", f"MLSD {directory}"):
            lines: list[str] = []
            try:
                ftp.retrlines(command, lines.append)
            except ftplib.error_perm:
                pass
            text = "\n".join(lines)
            replies.append(text.encode())
            # Not even where a link points: the server's own paths are not alice's business.
            assert str(server.data) not in text, (command, text)
            if not command.startswith("LIST"):
                assert not set(text.split()) & set(FORBIDDEN_NAMES), (command, text)
    for path in escapes:  # last: a file alice makes may be called lab.db
        try:
            ftp.storbinary(f"STOR {path}", io.BytesIO(OWNED))
        except ftplib.error_perm:
            pass
    ftp.quit()
    assert_clean(replies, markers)
    assert_untouched(server)


def test_ftp_refuses_logins_without_the_password(planted):
    server, _ = planted
    for user, password in bad_logins(server):
        with pytest.raises(ftplib.error_perm, match=r"^530"):
            ftp_login(server, user, password)


def bad_logins(server: Server) -> list[tuple[str, str]]:
    """(user, password) pairs that must never log in: empty, wrong, another's, a hash."""
    return [("alice", ""), ("alice", "wrong"), ("alice", "ALICE"), ("bob", "alice"),
            ("alice", pbkdf2_hash(server.data, "alice")), ("alice", nt_hash_hex(server.data, "alice")),
            ("", ""), ("anonymous", ""), ("anonymous", "guest@"), ("alice\0", "alice"),
            ("../alice", "alice")]


def test_http_user_space_and_site(planted):
    server, markers = planted
    replies: list[bytes] = []
    paths = [f"/~alice/{path}" for path in targets(2, "public_html/")] + [f"/{p}" for p in targets(0)]
    encoded = ["/~alice/..%2f..%2f..%2flab.db", "/~alice/%2e%2e/%2e%2e/%2e%2e/lab.db",
               "/~alice/%252e%252e/%252e%252e/%252e%252e/lab.db", "/~alice/%c0%ae%c0%ae/x",
               "/~alice/%ef%bc%8e%ef%bc%8e/%ef%bc%8e%ef%bc%8e/bob/private.txt",
               "/~alice/..%5c..%5cbob%5cprivate.txt", "/~bob/../private.txt",
               "/~bob/..%2fprivate.txt", "/~alice/public_html/../../bob/private.txt",
               "/lab.db", "/tls/ca.key", "/ca.key", "/journal/", "/~../lab.db",
               "/~alice%2f..%2f..%2flab.db", "/~%2e%2e/lab.db", "/~bob%2f..%2f..%2flab.db",
               "/~alice/data/", "/~alice/journal/", "/~alice/bob/", "/~alice/db",
               "//etc/passwd", "/~alice//etc/passwd", "/~alice/%2fetc%2fpasswd"]
    for path in paths + encoded:
        status, body = http_request(server, "GET", path)
        replies.append(body)
        assert status != 200 or not any(n.encode() in body for n in FORBIDDEN_NAMES), path
        status, body = http_request(server, "PUT", path, OWNED, basic("alice", "alice"))
        assert status >= 400, (path, status)
    status, _ = http_request(server, "PUT", "/~bob/owned.html", OWNED, basic("alice", "alice"))
    assert status in (401, 403)
    assert_clean(replies, markers)
    assert_untouched(server)


def test_http_api(planted):
    server, markers = planted
    alice = basic("alice", "alice")
    replies: list[bytes] = []
    for path in ("/api/v1/users/bob/mailboxes", "/api/v1/users/bob/mailboxes/INBOX/messages",
                 "/api/v1/users/bob/mailboxes/INBOX/messages/1",
                 "/api/v1/users/bob/mailboxes/INBOX/messages/1/raw", "/api/v1/users/bob",
                 "/api/v1/users/BOB/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/bob@lab.test/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/bob%40lab.test/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/alice/../bob/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/alice%2f..%2fbob/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/alice/mailboxes/..%2f..%2fbob%2fmailboxes%2fINBOX/messages",
                 "/api/v1/users/%62ob/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/bob%00/mailboxes/INBOX/messages/1/raw",
                 "/api/v1/users/\uff42ob/mailboxes/INBOX/messages/1/raw".encode().decode("latin-1"),
                 "/api/v1/users", "/api/v1/journal", "/api/v1/journal?service=smtp"):
        status, body = http_request(server, "GET", path, headers=alice)
        replies.append(body)
        assert status in (400, 401, 403, 404), (path, status)
    status, _ = http_request(server, "DELETE", "/api/v1/users/bob/mailboxes/INBOX/messages/1",
                             headers=alice)
    assert status in (401, 403, 404)
    status, _ = http_request(server, "POST", "/api/v1/users", b'{"name":"eve","password":"e"}',
                             {**alice, "Content-Type": "application/json"})
    assert status in (401, 403)
    assert_clean(replies, markers)
    # bob's mail is still there, and bob (only bob) reads it.
    status, body = http_request(server, "GET", "/api/v1/users/bob/mailboxes/INBOX/messages/1/raw",
                                headers=basic("bob", "bob"))
    assert status == 200 and BOB_MAIL in body


def test_http_refuses_logins_without_the_password(planted):
    server, _ = planted
    route = "/api/v1/users/alice/mailboxes"
    assert http_request(server, "GET", route, headers=basic("alice", "alice"))[0] == 200
    attempts = [basic(user, password) for user, password in bad_logins(server)]
    attempts += [{}, {"Authorization": "Basic"}, {"Authorization": "Basic YWxpY2U="},  # "alice"
                 {"Authorization": "Basic YWxpY2U6"},  # "alice:"
                 {"Authorization": "Bearer alice"}, {"Authorization": "Basic !!!!"}]
    for headers in attempts:
        status, body = http_request(server, "GET", route, headers=headers)
        assert status == 401, (headers, status, body[:200])
        status, _ = http_request(server, "PUT", "/~alice/x.html", b"x", headers)
        assert status in (401, 403), (headers, status)
    assert not (server.data / "homes/alice/public_html/x.html").exists()


def test_smtp_auth(planted):
    server, _ = planted
    assert smtp_auth_plain(server, "", "alice", "alice") == 235
    assert smtp_auth_plain(server, "alice", "alice", "alice") == 235
    for authzid in ("bob", "bob@lab.test", "BOB", "admin", "alice\0bob", "*"):
        assert smtp_auth_plain(server, authzid, "alice", "alice") != 235, authzid
    for user, password in bad_logins(server):
        assert smtp_auth_plain(server, "", user, password) != 235, (user, password)
        client = smtp_client(server)
        with pytest.raises(smtplib.SMTPException):
            client.login(user, password)
        client.close()
    client = smtp_client(server)  # no AUTH at all: submission refuses to relay
    with pytest.raises(smtplib.SMTPException):
        client.sendmail("alice@lab.test", ["someone@elsewhere.test"], b"Subject: x\r\n\r\nx\r\n")
    client.close()


def test_pop3(planted):
    server, markers = planted
    for user, password in bad_logins(server):
        client = pop3_client(server)
        with pytest.raises(poplib.error_proto):
            client.user(user)
            client.pass_(password)
        client.close()
    client = pop3_client(server)
    for authzid in ("bob", "bob@lab.test"):
        token = base64.b64encode(f"{authzid}\0alice\0alice".encode()).decode()
        with pytest.raises(poplib.error_proto):
            client._shortcmd(f"AUTH PLAIN {token}")
    client.close()
    client = pop3_client(server)
    client.user("alice")
    client.pass_("alice")
    replies = [b"\n".join(client.list()[1])]
    for number in range(1, client.stat()[0] + 1):
        replies += client.retr(number)[1]
    client.quit()
    assert_clean(replies, markers)


IMAP_NAMES = ["../bob/INBOX", "..", "../bob", "~bob/INBOX", "~bob", "#shared/bob/INBOX",
              "#users/bob/INBOX", "Other Users/bob/INBOX", "/bob/INBOX", "bob/INBOX", "bob",
              "INBOX/../../bob/INBOX", "user.bob.INBOX", "user/bob/INBOX", "%", "*", "%/INBOX",
              "\uff0e\uff0e/bob/INBOX", "../../lab.db", "/etc/passwd", "~/../bob/INBOX",
              "INBOX/..", "bob@lab.test/INBOX", "BOB/INBOX"]


def quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_utf7(name: str) -> str:
    from services.imap import utf7

    return utf7.encode(name)


def test_imap(planted):
    server, markers = planted
    client = imap_client(server)
    client.login("alice", "alice")
    replies: list[bytes] = []

    def run(*args: str) -> tuple[str, list]:
        """The tagged result and the untagged LIST lines of one command (all kept)."""
        try:
            typ, data = client._simple_command(*args)
        except imaplib.IMAP4.error as error:
            typ, data = "BAD", [str(error).encode()]
        untagged = dict(client.untagged_responses)
        client.untagged_responses.clear()
        replies.append(repr((typ, data, untagged)).encode())
        return typ, untagged.get("LIST", [])

    own = {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"}
    for reference, pattern in (("", "*"), ("", "%"), ("../", "*"), ("~bob/", "*"),
                               ("", "../*"), ("/", "*"), ("", "%/%"), ("#shared/", "*"),
                               ("", "~bob/*"), ("..", "%"), ("", "*/../*"), ("~", "*")):
        typ, untagged = run("LIST", quoted(reference), quoted(pattern))
        for line in untagged:
            name = line.decode(errors="replace").rsplit(" ", 1)[-1].strip('"')
            assert name in own, (reference, pattern, line)
    run("NAMESPACE")
    for name in IMAP_NAMES:
        wire = quoted(imap_utf7(name))
        for command in ("SELECT", "EXAMINE"):
            typ, _ = run(command, wire)
            assert typ != "OK", (command, name)
        run("STATUS", wire, "(MESSAGES UIDNEXT)")
    # Then what changes mailboxes: a name alice makes (even "..") is hers, and stays hers.
    for name in IMAP_NAMES:
        wire = quoted(imap_utf7(name))
        run("CREATE", wire)
        run("DELETE", wire)
        run("RENAME", "Archive", wire)
        run("SUBSCRIBE", wire)
        try:
            client.append(wire, "", imaplib.Time2Internaldate(0), b"Subject: x\r\n\r\n" + OWNED)
        except imaplib.IMAP4.error:
            pass
    assert run("SELECT", "INBOX")[0] == "OK"
    for name in IMAP_NAMES[:4]:
        run("COPY", "1:*", quoted(name))
        run("MOVE", "1:*", quoted(name))
    run("FETCH", "1:*", "(BODY[])")
    client.logout()
    assert_clean(replies, markers)
    bob = imap_client(server)
    bob.login("bob", "bob")
    typ, listing = bob.list()
    names = {line.decode().rsplit(" ", 1)[-1].strip('"') for line in listing}
    assert names == own, names  # nothing alice did made, renamed or removed bob's mailboxes
    assert bob.select("INBOX") == ("OK", [b"1"])
    bob.logout()


def test_imap_refuses_logins_without_the_password(planted):
    server, _ = planted
    for user, password in bad_logins(server):
        client = imap_client(server)
        with pytest.raises(imaplib.IMAP4.error):
            client.login(user, password)
        client.shutdown()
    for authzid in ("bob", "bob@lab.test"):
        client = imap_client(server)
        with pytest.raises(imaplib.IMAP4.error):
            client.authenticate("PLAIN", lambda _, authzid=authzid: f"{authzid}\0alice\0alice".encode())
        client.shutdown()


def test_smb(planted):
    from impacket.smbconnection import SessionError

    server, markers = planted
    connection = smb_client(server)
    replies: list[bytes] = []
    problems = []  # every hole found, not only the first
    for path in targets(1):
        out = io.BytesIO()
        try:
            connection.getFile("alice", path, out.write)
            problems.append(f"alice served {path!r}")
        except SessionError:
            pass
        replies.append(out.getvalue())
    for share in ("bob", "BOB", "IPC$", "ipc$", "ADMIN$", "C$", "..", "alice\\..", "alice/..",
                  "alice\\..\\bob", "homes", "\uff42ob", "", "public\\..", "\\", "."):
        for path in ("lab.db", "lab.db-wal", "tls\\ca.key", "pyproject.toml",
                     "services\\paths.py", "bob\\private.txt", "private.txt",
                     "..\\..\\lab.db", "..\\bob\\private.txt", "\\etc\\passwd"):
            out = io.BytesIO()
            try:
                connection.getFile(share, path, out.write)
                problems.append(f"share {share!r} served {path!r}")
            except SessionError:
                pass
            replies.append(out.getvalue())
        try:
            names = [item.get_longname() for item in connection.listPath(share, "*")]
        except SessionError:
            names = []
        if names:
            problems.append(f"share {share!r} listed {names[:8]}")
    for pattern in ("..\\bob\\*", "../bob/*", "..\\..\\*", "..\\..\\..\\..\\etc\\*",
                    "\uff0e\uff0e\\*", "\uff0e\uff0e\\\uff0e\uff0e\\*", "bobhome\\*", "data\\*",
                    "data\\tls\\*", "public_html\\journal\\*", "..\\*", "\\..\\*",
                    "public_html\\..\\..\\*", "*\\..\\..\\*"):
        try:
            names = [item.get_longname() for item in connection.listPath("alice", pattern)]
        except SessionError:
            names = []
        replies.append("\n".join(names).encode())
        if set(names) & (set(FORBIDDEN_NAMES) | {"bob", "tls", "journal", "homes"}):
            problems.append(f"pattern {pattern!r} listed {names[:8]}")
    connection.close()
    assert not problems, problems
    assert_clean(replies, markers)


def test_smb_refuses_logins_without_the_password(planted):
    from impacket.smbconnection import SessionError

    server, _ = planted
    for user, password in [*bad_logins(server), ("guest", ""), ("alice", " "), ("LAB\\bob", "alice")]:
        try:
            connection = smb_client(server, user, password)
        except (SessionError, OSError):
            continue
        # A session that claims to be someone without their password reaches no user share.
        for share in ("alice", "bob"):
            with pytest.raises(SessionError):
                connection.listPath(share, "*")
        connection.close()


def test_the_secrets_are_where_the_attacks_tried(planted):
    """The markers exist where the attacks looked: a clean reply means refused, not absent."""
    server, _ = planted
    data: Path = server.data
    assert (data / "lab.db").read_bytes().startswith(b"SQLite format 3")
    assert (data / "homes/alice/bobhome/private.txt").read_bytes().startswith(BOB_FILE)
    assert (data / "homes/alice/key").read_bytes().startswith(b"-----BEGIN")
