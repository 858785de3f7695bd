"""The walks that are the point of the suite, each with the command-line clients a class uses:
mail sent over SMTP is read over IMAP and POP3, a file put over FTP is fetched over SMB and
HTTP (and the other way round). Each protocol's own tests go deep; these go across, on one
lab, through the one store. The third walk, a DHCP lease naming its client in DNS, needs a
network of hosts and lives with DHCP's clients (tests/dhcp/test_clients.py).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import need
from tests.ftputil import smbclient


def run(*command: str, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, input=data, capture_output=True, timeout=60)


def curl(*args: str, data: bytes | None = None) -> bytes:
    result = run("curl", "-sS", "--fail", *args, data=data)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def test_smtp_to_imap_to_pop3(lab):
    """swaks sends to bob; curl reads the same bytes over IMAP and POP3; a deletion over
    IMAP is what POP3 sees next."""
    need("swaks", "curl")
    server = lab.start(only="smtp,imap,pop3")
    sent = run("swaks", "--server", f"127.0.0.1:{server.port('smtp', 'smtp')}", "--helo", "pc1",
               "--from", "alice@lab.test", "--to", "bob@lab.test",
               "--header", "Subject: one message, three protocols", "--body", "walked\n")
    assert sent.returncode == 0 and b"<** " not in sent.stdout, sent.stdout.decode()
    imap = f"imap://127.0.0.1:{server.port('imap', 'imap')}/INBOX"
    pop3 = f"pop3://127.0.0.1:{server.port('pop3', 'pop3')}"
    over_imap = curl("-u", "bob:bob", imap + ";UID=1")
    over_pop3 = curl("-u", "bob:bob", pop3 + "/1")
    assert b"Subject: one message, three protocols" in over_imap
    assert b"\r\nwalked\r\n" in over_imap
    assert over_imap == over_pop3  # the same stored bytes, CRLF and all, by both
    listing = curl("-u", "bob:bob", pop3).split(b"\r\n")
    assert listing[0] == f"1 {len(over_pop3)}".encode()  # POP3's size is the message's
    curl("-u", "bob:bob", imap, "-X", "UID STORE 1 +FLAGS.SILENT (\\Deleted)")
    curl("-u", "bob:bob", imap, "-X", "EXPUNGE")
    # (curl prints an empty POP3 listing as a bare CRLF)
    assert curl("-u", "bob:bob", pop3).strip() == b""  # gone for POP3 too
    assert curl("-u", "alice:alice", pop3).strip() == b""  # and alice's box never held it


def test_ftp_to_smb_to_http_and_back(lab, tmp_path: Path):
    """curl puts a page over FTP; smbclient fetches it from alice's share and curl from her
    web space; a file put over SMB comes back over FTP and HTTP byte for byte."""
    need("curl", "smbclient")
    server = lab.start(only="ftp,smb,http")
    ftp = f"ftp://127.0.0.1:{server.port('ftp', 'ftp')}"
    web = f"http://127.0.0.1:{server.port('http', 'http')}/~alice"
    page = b"<p>put over FTP</p>\n"
    curl("-u", "alice:alice", "--ftp-create-dirs", "-T", "-", ftp + "/public_html/walk.html",
         data=page)
    fetched = tmp_path / "walk.html"
    got = smbclient(server, "alice", f"get public_html\\walk.html {fetched}")
    assert got.returncode == 0, got.stdout + got.stderr
    assert fetched.read_bytes() == page
    assert curl(web + "/walk.html") == page
    blob = bytes(range(256)) * 4096  # 1 MiB, every byte value: no text-mode mangling
    (tmp_path / "blob.bin").write_bytes(blob)
    put = smbclient(server, "alice", f"put {tmp_path / 'blob.bin'} public_html\\blob.bin")
    assert put.returncode == 0, put.stdout + put.stderr
    assert curl("-u", "alice:alice", ftp + "/public_html/blob.bin") == blob
    assert curl(web + "/blob.bin") == blob
    # bob, with his own credentials, cannot open alice's share
    denied = smbclient(server, "alice", "ls", "bob")
    assert denied.returncode != 0 and "NT_STATUS_ACCESS_DENIED" in denied.stdout + denied.stderr
