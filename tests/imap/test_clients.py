"""IMAP with the command-line clients people use: curl, mbsync, fetchmail, mutt; tshark."""

from __future__ import annotations

import imaplib
import os
import signal
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import need


def message(subject: str, body: str = "body") -> bytes:
    return (f"From: Bob <bob@lab.test>\r\nTo: alice@lab.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@lab.test>\r\n\r\n{body}\r\n").encode()


@pytest.fixture
def imap(lab):
    server = lab.start(only="imap")
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    client.login("alice", "alice")
    for i in range(3):
        client.append("INBOX", None, None, message(f"m{i}", f"body {i}"))
    client.logout()
    return server


def login(server) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
    client.login("alice", "alice")
    return client


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


def test_curl_imap_imaps_and_starttls(imap):
    need("curl")
    port, tls_port = imap.port("imap", "imap"), imap.port("imap", "imaps")
    ca = str(imap.data / "tls" / "ca.crt")
    got = run("curl", "-sS", f"imap://127.0.0.1:{port}/INBOX;UID=2", "-u", "alice:alice")
    assert got.returncode == 0, got.stderr
    assert "Subject: m1" in got.stdout and "body 1" in got.stdout
    got = run("curl", "-sS", "--cacert", ca, f"imaps://localhost:{tls_port}/INBOX;UID=3;SECTION=TEXT",
              "-u", "alice:alice")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "body 2\n"  # text mode: CRLF read as LF
    got = run("curl", "-sS", "--ssl-reqd", "--cacert", ca,
              f"imap://localhost:{port}/INBOX?SUBJECT%20m1", "-u", "alice:alice")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "* SEARCH 2"
    got = run("curl", "-sS", "-u", "alice:alice", f"imap://127.0.0.1:{port}/")
    assert '"Sent"' in got.stdout and "\\Sent" in got.stdout


MBSYNCRC = """\
IMAPAccount lab
Host 127.0.0.1
Port {port}
User alice
Pass alice
SSLType None

IMAPStore remote
Account lab

MaildirStore local
Path {root}/
Inbox {root}/INBOX
SubFolders Verbatim

Channel lab
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
Remove Both
SyncState *
"""


def snapshot(server) -> dict[str, str]:
    client = login(server)
    state = {}
    for line in client.list()[1]:
        assert isinstance(line, bytes), line  # names without literals here
        name = line.decode().rsplit(' "/" ', 1)[1].strip('"')
        status = client.status(f'"{name}"', "(MESSAGES UIDNEXT HIGHESTMODSEQ)")[1][0]
        assert isinstance(status, bytes), status  # one STATUS line, no literal
        state[name] = status.decode().split("(", 1)[1]
    client.logout()
    return state


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_mbsync_both_ways_then_nothing_to_do(imap, tmp_path):
    need("mbsync")
    root = tmp_path / "maildir"
    root.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(MBSYNCRC.format(port=imap.port("imap", "imap"), root=root))

    def sync() -> None:
        done = run("mbsync", "-c", str(rc), "lab")
        assert done.returncode == 0, done.stdout + done.stderr

    sync()
    inbox = root / "INBOX"
    assert len(list((inbox / "new").iterdir()) + list((inbox / "cur").iterdir())) == 3
    assert (root / "Sent").is_dir() and (root / "Archive").is_dir()
    # Local changes: a new folder with a message, and a message marked seen in INBOX.
    project = root / "Project"
    for sub in ("cur", "new", "tmp"):
        (project / sub).mkdir(parents=True)
    (project / "cur" / "1700000000.1.host:2,S").write_bytes(message("local one"))
    first = sorted((inbox / "new").iterdir())[0]
    first.rename(inbox / "cur" / (first.name.split(":")[0] + ":2,FS"))
    # A remote change: a new message appended by another client.
    client = login(imap)
    client.append("INBOX", None, None, message("remote four"))
    client.logout()
    sync()
    client = login(imap)
    assert client.select("Project")[1] == [b"1"]
    assert b"local one" in client.fetch("1", "(BODY.PEEK[HEADER])")[1][0][1]
    client.select("INBOX")
    assert client.search(None, "FLAGGED SEEN")[1] == [b"1"]
    client.logout()
    assert len([f for f in files(inbox) if "U=" in f]) == 4
    # Nothing changed on either side: a second sync changes nothing on either side.
    before_remote, before_local = snapshot(imap), files(root)
    sync()
    assert snapshot(imap) == before_remote
    assert files(root) == before_local


def test_fetchmail(imap, tmp_path):
    need("fetchmail")
    out = tmp_path / "fetched.mbox"
    sink = tmp_path / "sink.sh"
    sink.write_text(f"#!/bin/sh\ncat >> {out}\n")
    sink.chmod(0o755)
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f'poll 127.0.0.1 protocol IMAP port {imap.port("imap", "imap")} '
                  f'user "alice" password "alice" is "root" here options keep fetchall '
                  f'mda "{sink}"\n')
    rc.chmod(0o600)
    done = run("fetchmail", "-f", str(rc), "--nodetach", "--sslproto", "",
               env={**os.environ, "FETCHMAILHOME": str(tmp_path), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_text().count("Subject: m") == 3
    client = login(imap)
    client.select("INBOX")
    assert client.search(None, "SEEN")[1] == [b"1 2 3"]


def test_mutt_batch_saves_sent_message_over_imap(imap, tmp_path):
    need("mutt")
    sink = tmp_path / "sink.sh"
    sink.write_text("#!/bin/sh\ncat > /dev/null\n")
    sink.chmod(0o755)
    rc = tmp_path / "muttrc"
    rc.write_text(f'set imap_user = "alice"\nset imap_pass = "alice"\nset ssl_starttls = no\n'
                  f'set ssl_force_tls = no\nset folder = "imap://127.0.0.1:{imap.port("imap", "imap")}/"\n'
                  f'set record = "=Sent"\nset copy = yes\nset sendmail = "{sink}"\n'
                  f'set from = "alice@lab.test"\nset use_from = yes\n')
    done = run("mutt", "-n", "-F", str(rc), "-s", "mutt batch", "bob@lab.test",
               input="hello from mutt\n", env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    client = login(imap)
    client.select("Sent")
    data = client.fetch("1", "(BODY.PEEK[])")[1][0][1]
    assert b"Subject: mutt batch" in data and b"hello from mutt" in data


def capture_session(server, capture: Path, session, read: list[str]) -> None:
    """Run `session()` while tshark captures the IMAP port into `capture`."""
    port = server.port("imap", "imap")
    tshark = subprocess.Popen(["tshark", "-i", "lo", "-f", f"tcp port {port}", "-w", str(capture)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert tshark.stderr is not None  # stderr=PIPE
    try:
        for line in tshark.stderr:  # "Capture started." is the ready signal ("Capturing
            if "Capture started" in line:  # on 'lo'" comes before the capture is running)
                break
        session()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the last packets to be written
            counted = run("tshark", "-r", str(capture), *read, "-Y", "imap.response")
            if "LOGOUT completed" in counted.stdout:
                break
            time.sleep(0.2)  # polling the capture file: tshark has no "written" signal
    finally:
        tshark.send_signal(signal.SIGINT)
        tshark.wait(10)


def check_capture(capture: Path, read: list[str]) -> str:
    summary = run("tshark", "-r", str(capture), *read, "-Y", "imap").stdout
    bad = run("tshark", "-r", str(capture), *read, "-Y",
              "_ws.malformed || _ws.expert.severity == error")
    assert bad.stdout.strip() == "", bad.stdout
    return summary


def test_tshark_dissects_a_session_cleanly(imap, tmp_path):
    need("tshark")
    capture = tmp_path / "imap.pcap"
    read = ["-d", f"tcp.port=={imap.port('imap', 'imap')},imap"]  # the test port is not 143

    def session() -> None:
        client = login(imap)
        client.select("INBOX")
        client.fetch("1:*", "(FLAGS ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
        client.store("1", "+FLAGS", "(\\Flagged)")
        client.search(None, "ALL")
        client.logout()

    capture_session(imap, capture, session, read)
    summary = check_capture(capture, read)
    assert "FETCH" in summary and "LOGOUT" in summary


def test_tshark_decrypts_starttls_with_the_key_log(lab, tmp_path):
    need("tshark")
    keylog = tmp_path / "keys.log"
    server = lab.start(only="imap", config=f'[tls]\nkeylog = "{keylog}"\n')
    capture = tmp_path / "imaps.pcap"
    read = ["-d", f"tcp.port=={server.port('imap', 'imap')},imap",
            "-o", f"tls.keylog_file:{keylog}"]

    def session() -> None:
        client = imaplib.IMAP4("127.0.0.1", server.port("imap", "imap"))
        client.starttls(ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt")))
        client.login("alice", "alice")
        client.select("INBOX")
        client.logout()

    capture_session(server, capture, session, read)
    summary = check_capture(capture, read)
    assert "STARTTLS" in summary and "SELECT INBOX" in summary  # decrypted after STARTTLS


def test_mbsync_over_imaps_and_starttls(imap, tmp_path):
    need("mbsync")
    ca = imap.data / "tls" / "ca.crt"
    for name, port, ssl_type in (("imaps", imap.port("imap", "imaps"), "IMAPS"),
                                 ("starttls", imap.port("imap", "imap"), "STARTTLS")):
        root = tmp_path / name
        root.mkdir()
        rc = tmp_path / f"{name}.rc"
        rc.write_text(MBSYNCRC.format(port=port, root=root)
                      .replace("Host 127.0.0.1", "Host localhost")
                      .replace("SSLType None", f"SSLType {ssl_type}\nCertificateFile {ca}")
                      .replace("Patterns *", "Patterns INBOX")
                      .replace("Expunge Both\nRemove Both\n", ""))
        done = run("mbsync", "-c", str(rc), "lab")
        assert done.returncode == 0, done.stdout + done.stderr
        assert len([f for f in files(root / "INBOX") if "U=" in f]) == 3
