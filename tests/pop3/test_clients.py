"""POP3 with the clients people use: curl (pop3://, pop3s://, APOP) and fetchmail."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import need
from tests.pop3.test_server import deliver, uids


def curl(server, url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--cacert", str(server.data / "tls" / "ca.crt"),
                           *args, url], capture_output=True, timeout=60)


def test_curl_pop3_list_retr_and_pop3s(lab):
    need("curl")
    server = lab.start(only="pop3")
    deliver(server, "alice", b"Subject: c1\r\n\r\n.dot line\r\n",
            b"Subject: c2\r\n\r\nsecond\r\n")
    plain = f"pop3://127.0.0.1:{server.port('pop3', 'pop3')}"
    listing = curl(server, plain + "/", "-u", "alice:alice")
    assert listing.returncode == 0, listing.stderr
    assert len(listing.stdout.splitlines()) == 2
    message = curl(server, plain + "/1", "-u", "alice:alice", "--ssl-reqd")  # via STLS
    assert message.returncode == 0, message.stderr
    assert message.stdout == b"Subject: c1\r\n\r\n.dot line\r\n"  # curl un-stuffs
    secure = curl(server, f"pop3s://127.0.0.1:{server.port('pop3', 'pop3s')}/2", "-u", "alice:alice")
    assert secure.returncode == 0 and secure.stdout.endswith(b"second\r\n"), secure.stderr
    wrong = curl(server, plain + "/1", "-u", "alice:nope")
    assert wrong.returncode == 67  # login denied


def test_curl_pop3_apop(lab):
    # curl picks APOP when the greeting has a timestamp: Twisted's APOP always failed here.
    need("curl")
    server = lab.start(only="pop3", config="[auth]\nkeep_plaintext = true\n")
    deliver(server, "bob", b"Subject: apop\r\n\r\nx\r\n")
    url = f"pop3://127.0.0.1:{server.port('pop3', 'pop3')}/1"
    result = curl(server, url, "-u", "bob:bob", "--login-options", "AUTH=+APOP", "-v")
    assert result.returncode == 0, result.stderr
    assert b"> APOP bob " in result.stderr and result.stdout.startswith(b"Subject: apop")


def fetchmail(tmp_path, server, port: int, *options: str) -> subprocess.CompletedProcess:
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"poll 127.0.0.1 service {port} protocol pop3 uidl\n"
                  f"  user bob password bob is root here\n"
                  f"  {' '.join(options)} sslcommonname localhost\n")  # it checks no IP names
    os.chmod(rc, 0o600)
    out = tmp_path / "bsmtp"
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run(
        ["fetchmail", "-f", str(rc), "--nosyslog", "--nodetach", "--pidfile",
         str(tmp_path / "pid"), "--idfile", str(tmp_path / "ids"), "--bsmtp", str(out)],
        capture_output=True, env=env, timeout=120)
    result.bsmtp = out.read_bytes() if out.exists() else b""  # type: ignore[attr-defined]
    return result


def test_fetchmail_over_pop3s_and_stls(lab, tmp_path):
    need("fetchmail")
    server = lab.start(only="pop3")
    ca = server.data / "tls" / "ca.crt"
    deliver(server, "bob", b"Subject: f1\r\n\r\none\r\n", b"Subject: f2\r\n\r\ntwo\r\n")
    first = fetchmail(tmp_path, server, server.port("pop3", "pop3s"), "ssl", "sslcertck",
                      f"sslcertfile {ca}", "keep")
    assert first.returncode == 0, first.stderr.decode()
    assert b"Subject: f1" in first.bsmtp and b"Subject: f2" in first.bsmtp
    assert len(uids(server, "bob")) == 2  # "keep": nothing deleted
    deliver(server, "bob", b"Subject: f3\r\n\r\nthree\r\n")
    (tmp_path / "bsmtp").unlink()
    second = fetchmail(tmp_path, server, server.port("pop3", "pop3"), "sslproto", "tls1.2+",
                       "sslcertck", f"sslcertfile {ca}")
    assert second.returncode == 0, second.stderr.decode()
    # UIDL told it what it had seen; without "keep" it deletes what it fetched, at QUIT.
    assert b"Subject: f3" in second.bsmtp and b"Subject: f1" not in second.bsmtp
    assert uids(server, "bob") == [1, 2]


def test_pop3_deletion_reaches_an_idling_imap_session(lab):
    import poplib

    from imapclient import IMAPClient

    server = lab.start(only="pop3,imap")
    deliver(server, "alice", b"Subject: keep\r\n\r\n1\r\n", b"Subject: gone\r\n\r\n2\r\n")
    imap = IMAPClient("127.0.0.1", port=server.port("imap", "imap"), ssl=False, timeout=10)
    imap.login("alice", "alice")
    assert imap.select_folder("INBOX")[b"EXISTS"] == 2
    imap.idle()
    pop = poplib.POP3("127.0.0.1", server.port("pop3", "pop3"), timeout=10)
    pop.user("alice")
    pop.pass_("alice")
    pop.dele(2)
    pop.quit()
    responses: list = []
    while (2, b"EXPUNGE") not in responses:
        got = imap.idle_check(timeout=10)  # returns as soon as the server says something
        if not got:
            break
        responses += got
    imap.idle_done()
    assert (2, b"EXPUNGE") in responses
    assert imap.search() == [1]
    imap.logout()
