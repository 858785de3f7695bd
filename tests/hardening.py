"""What the hardening tests share (not a test module): a client for every protocol that
logs in the way real clients do, one session per protocol that logs in and leaves without
saying goodbye, and what a server process holds (open descriptors, resident memory).

The clients are the stdlib's (http.client, smtplib, poplib, imaplib, ftplib), impacket's
SMB client and dnslib's codec over a TCP socket: the same ones the protocol tests use.
"""

from __future__ import annotations

import base64
import http.client
import imaplib
import io
import os
import poplib
import smtplib
import socket
import string
import struct
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from tests.ftputil import ftp_login

# Every service an all-in-one lab runs on loopback (DHCP needs an interface of its own).
ALL = "http,smtp,pop3,imap,dns,ftp,smb"
HOST = "127.0.0.1"
TIMEOUT = 15


def fds(pid: int) -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def settle_fds(pid: int, limit: int, timeout: float = 15) -> int:
    """The process's descriptor count once it is at most `limit`, or after `timeout`.
    A server closes a dropped connection when its reactor (or SMB thread) gets to it, and
    tells nobody: polling /proc is the only signal there is."""
    deadline = time.monotonic() + timeout
    while True:
        count = fds(pid)
        if count <= limit or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def http_request(server, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of one request sent with `path` as given (no normalising); only
    characters outside ASCII are percent-encoded (as UTF-8), as a browser sends them."""
    path = urllib.parse.quote(path, safe=string.punctuation)
    connection = http.client.HTTPConnection(HOST, server.port("http", "http"), timeout=TIMEOUT)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def smtp_client(server, listener: str = "submission") -> smtplib.SMTP:
    client = smtplib.SMTP(HOST, server.port("smtp", listener), timeout=TIMEOUT)
    client.ehlo("attacker.test")
    return client


def smtp_auth_plain(server, authzid: str, user: str, password: str) -> int:
    """The reply code to AUTH PLAIN with these three fields (235 is a login)."""
    client = smtp_client(server)
    try:
        token = base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()
        return client.docmd("AUTH", f"PLAIN {token}")[0]
    finally:
        client.close()


def send_mail(server, to: str, body: bytes) -> None:
    """Mail to a lab user through the MX port (no AUTH), acknowledged with 250."""
    client = smtp_client(server, "smtp")
    try:
        client.sendmail("sender@outside.test", [to], body)
    finally:
        client.quit()


def pop3_client(server) -> poplib.POP3:
    return poplib.POP3(HOST, server.port("pop3", "pop3"), timeout=TIMEOUT)


def imap_client(server) -> imaplib.IMAP4:
    return imaplib.IMAP4(HOST, server.port("imap", "imap"), timeout=TIMEOUT)


def smb_client(server, user: str = "alice", password: str | None = None, nthash: str = ""):
    from impacket.smbconnection import SMBConnection

    connection = SMBConnection("FILES", HOST, sess_port=server.port("smb", "smb"),
                               timeout=TIMEOUT)
    connection.login(user, user if password is None else password, nthash=nthash)
    return connection


def dns_tcp(server, name: str = "www.lab.test", qtype: str = "A") -> bytes:
    """One query over DNS's TCP listener; the raw answer."""
    from dnslib import DNSRecord

    query = DNSRecord.question(name, qtype).pack()
    with socket.create_connection((HOST, server.port("dns", "dns-tcp")), timeout=TIMEOUT) as s:
        s.sendall(struct.pack("!H", len(query)) + query)
        return _read_framed(s)


def _read_framed(sock: socket.socket) -> bytes:
    head = _read_exactly(sock, 2)
    return _read_exactly(sock, struct.unpack("!H", head)[0])


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        if not chunk:
            raise ConnectionError("closed before the answer was complete")
        out += chunk
    return out


def _drop(sock: socket.socket, reset: bool) -> None:
    """Leave without a goodbye: a plain FIN, or (reset) an RST like a killed client."""
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _http_session(server, reset: bool) -> None:
    connection = http.client.HTTPConnection(HOST, server.port("http", "http"), timeout=TIMEOUT)
    connection.request("GET", "/api/v1/users/alice/mailboxes", headers=basic("alice", "alice"))
    response = connection.getresponse()
    assert response.status == 200, response.status
    response.read()
    _drop(connection.sock, reset)


def _smtp_session(server, reset: bool) -> None:
    client = smtp_client(server)
    client.login("alice", "alice")
    _drop(client.sock, reset)


def _pop3_session(server, reset: bool) -> None:
    client = pop3_client(server)
    client.user("alice")
    client.pass_("alice")
    client.stat()
    _drop(client.sock, reset)


def _imap_session(server, reset: bool) -> None:
    client = imap_client(server)
    client.login("alice", "alice")
    client.select("INBOX")
    _drop(client.sock, reset)


def _ftp_session(server, reset: bool) -> None:
    client = ftp_login(server)
    client.nlst()
    _drop(client.sock, reset)


def _smb_session(server, reset: bool) -> None:
    connection = smb_client(server)
    connection.listPath("alice", "*")
    # No LOGOFF: the transport under impacket's connection is dropped as it is.
    _drop(connection.getSMBServer().get_socket(), reset)


def _dns_session(server, reset: bool) -> None:
    from dnslib import DNSRecord

    query = DNSRecord.question("www.lab.test").pack()
    sock = socket.create_connection((HOST, server.port("dns", "dns-tcp")), timeout=TIMEOUT)
    sock.sendall(struct.pack("!H", len(query)) + query)
    _read_framed(sock)
    _drop(sock, reset)


# protocol -> one session that logs in (where there is a login) and leaves without goodbye.
SESSIONS: dict[str, Callable[[object, bool], None]] = {
    "http": _http_session, "smtp": _smtp_session, "pop3": _pop3_session,
    "imap": _imap_session, "ftp": _ftp_session, "smb": _smb_session, "dns": _dns_session,
}


def pbkdf2_hash(data: Path, user: str) -> str:
    """The stored password hash of `user`, read straight from the database (an attacker
    must never get this far; the tests check that holding it does not help either)."""
    import sqlite3

    with sqlite3.connect(data / "lab.db") as db:
        return db.execute("SELECT pw_hash FROM users WHERE name = ?", (user,)).fetchone()[0]


def nt_hash_hex(data: Path, user: str) -> str:
    import sqlite3

    with sqlite3.connect(data / "lab.db") as db:
        return db.execute("SELECT nt_hash FROM users WHERE name = ?", (user,)).fetchone()[0].hex()


def ascii_body(rng, size: int) -> bytes:
    """A mail body of `size` bytes or so: random hex in 76-character CRLF lines."""
    text = rng.randbytes(size // 2).hex()
    return b"".join(text[i:i + 76].encode() + b"\r\n" for i in range(0, len(text), 76))


def mail_texts(data: Path, user: str, mailbox: str = "INBOX") -> list[bytes]:
    """Every message stored in a user's mailbox, read from the store directly (as another
    process of the lab would), in UID order."""
    from services.store import Store

    store = Store(data)
    try:
        box = store.mail.mailbox(user, mailbox)
        return [store.mail.data(box.id, m.uid) or b"" for m in store.mail.messages(box.id)]
    finally:
        store.close()


# What the durability test and benchmark kill the server after: protocol -> (write, check).
# write(server, rng, i) makes item i and returns once it is acknowledged (the caller kills
# then); check(data, written) asserts every written item is stored, byte-identical.
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
    for i, (text, body) in enumerate(zip(texts, written, strict=True)):
        assert text.endswith(body), f"message {i} is not what was acknowledged"


def files_stored(directory):
    def check(data, written):
        for i, body in enumerate(written):
            path = data / directory / f"durable-{i}.bin"
            assert path.exists(), f"{path.name} acknowledged, then lost"
            assert path.read_bytes() == body, f"{path.name} is not what was acknowledged"
    return check


DURABLE_WRITES = {
    "smtp": (smtp_write, mail_stored), "imap": (imap_write, mail_stored),
    "ftp": (ftp_write, files_stored("homes/alice")),
    "http": (http_write, files_stored("homes/alice/public_html")),
    "smb": (smb_write, files_stored("homes/alice")),
}


def kill_at_acknowledgements(factory, protocol: str, rounds: int, seed: str
                             ) -> tuple[list[bytes], list[float]]:
    """`rounds` times: start a server of `protocol` on the factory's data directory, write
    one item, SIGKILL the server the instant the acknowledgement arrives. Returns the items
    written and each round's seconds (start, write, kill)."""
    import random
    import signal

    write = DURABLE_WRITES[protocol][0]
    rng = random.Random(seed)
    written, seconds = [], []
    for i in range(rounds):
        began = time.monotonic()
        server = factory.start(only=protocol)
        written.append(write(server, rng, i))
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        factory.servers.remove(server)  # killed on purpose: the exit-0 rule is not for it
        seconds.append(time.monotonic() - began)
    return written, seconds
