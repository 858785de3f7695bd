"""Isolation over HTTP, as a table: with alice's credentials, nothing of bob's (his web
space's writes, his home outside it, his mail over the API) and nothing of the data
directory's own files (lab.db, tls/ca.key, journal/) is reachable, by any spelling of a
path: "..", "%2e%2e", "%2f", "\\", absolute, overlong UTF-8, NFKC look-alikes (fullwidth
dots and slashes), and links alice made in her own web space."""

from __future__ import annotations

import base64
import os

import pytest

from services.store import Store

from tests.http.test_server import raw, running_web

SECRETS = (b"BOB-PRIVATE", b"BOB-MAIL", b"PRIVATE KEY", b"pbkdf2_sha256", b'"session"')


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "isolation") as server:
        data = server.data
        bob = data / "homes" / "bob"
        (bob / "private.txt").write_bytes(b"BOB-PRIVATE\n")
        (bob / "public_html" / "page.html").write_bytes(b"bob's page\n")
        store = Store(data)
        store.mail.append("bob", "INBOX", b"Subject: BOB-MAIL\r\n\r\nBOB-MAIL body\r\n")
        store.close()
        alice = data / "homes" / "alice" / "public_html"
        # Links alice could have made (FTP, SMB, a script): all lead out of her web space.
        for name, target in {"to-bob": bob, "to-bob-web": bob / "public_html",
                             "to-data": data, "to-db": data / "lab.db",
                             "to-key": data / "tls" / "ca.key", "to-journal": data / "journal",
                             "to-root": "/", "up": ".."}.items():
            os.symlink(target, alice / name)
        yield server


def ask(server, method: str, path: str, user: str | None = "alice",
        body: bytes | None = None) -> tuple[int, bytes]:
    """One request with `path` sent as it is (UTF-8 bytes, nothing normalised)."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: www", b"Connection: close",
            b"Content-Length: %d" % len(body or b"")]
    if user:
        head.append(b"Authorization: Basic " + base64.b64encode(f"{user}:{user}".encode()))
    answer = raw(server, b"\r\n".join(head) + b"\r\n\r\n" + (body or b""))
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


UP = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "..%2f..", "%2e%2e%2f%2e%2e", "..\\..",
      "..%5c..", "%EF%BC%8E%EF%BC%8E", "\uff0e\uff0e",
      "%c0%ae%c0%ae", "..%c0%af..", "%EF%BC%8F..", "...", "..%20", "..%00", "..%0a"]
# Paths from alice's web space to what is not hers, through every spelling of "up".
OUT = ([f"/~alice/{up}/{up}/bob/private.txt" for up in UP]
       + [f"/~alice/{up}/{up}/{up}/lab.db" for up in UP]
       + [f"/~alice/{up}/{up}/{up}/tls/ca.key" for up in UP[:6]]
       + ["/~alice//etc/passwd", "/~alice/%2fetc%2fpasswd", "/~alice/%5cetc%5cpasswd",
          "/~alice/C:%5cetc", "/~alice/to-bob/private.txt", "/~alice/to-bob-web/page.html",
          "/~alice/to-data/lab.db", "/~alice/to-db", "/~alice/to-key", "/~alice/to-journal/",
          "/~alice/to-data/tls/ca.key", "/~alice/to-root/etc/passwd", "/~alice/up/",
          "/~alice/up/to-bob", "/~alice/to-data/", "/~alice/\uff0f..\uff0f..",
          "/lab.db", "/tls/ca.key", "/journal/", "/../lab.db", "/%2e%2e/lab.db",
          "/~bob/../private.txt", "/~bob/%2e%2e/private.txt", "/~..%2fbob/private.txt",
          "/~alice%2f..%2fbob/private.txt", "/~%2e%2e/lab.db", "/~/lab.db"])


@pytest.mark.parametrize("path", OUT)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "MKCOL"])
def test_no_spelling_of_a_path_reaches_what_is_not_alices(web, method, path):
    status, payload = ask(web, method, path, body=b"owned by alice" if method == "PUT" else None)
    # (409: a path that stays inside, such as //etc/passwd, whose parent does not exist)
    assert status in (301, 400, 403, 404, 405, 409), (status, payload[:200])
    assert not any(secret in payload for secret in SECRETS), payload[:300]


def test_nothing_outside_was_touched(web):
    data = web.data
    assert (data / "homes" / "bob" / "private.txt").read_bytes() == b"BOB-PRIVATE\n"
    assert (data / "homes" / "bob" / "public_html" / "page.html").read_bytes() == b"bob's page\n"
    assert (data / "tls" / "ca.key").exists() and (data / "lab.db").exists()
    owned = [p for p in data.rglob("*") if p.is_file() and not p.is_symlink()
             and b"owned by alice" in p.read_bytes()]
    assert owned == []


BOB_WEB = ["/~bob/page.html", "/~bob/new.html", "/~bob/dir", "/~bob/", "/~bob/%2e/page.html",
           "/~bob/./page.html", "/~bob//page.html", "/~b%6Fb/page.html"]


@pytest.mark.parametrize("path", BOB_WEB)
@pytest.mark.parametrize("method", ["PUT", "DELETE", "MKCOL"])
def test_alice_cannot_change_bobs_web_space(web, method, path):
    status, _ = ask(web, method, path, body=b"owned by alice" if method == "PUT" else None)
    assert status in (301, 403), status
    bobs = web.data / "homes" / "bob" / "public_html"
    assert (bobs / "page.html").read_bytes() == b"bob's page\n"
    assert not (bobs / "new.html").exists() and not (bobs / "dir").exists()


BOX = "/api/v1/users/bob/mailboxes/INBOX/messages"
API = [("GET", "/api/v1/users/bob"), ("GET", "/api/v1/users/bob/mailboxes"), ("GET", BOX),
       ("GET", BOX + "/1"), ("GET", BOX + "/1/raw"), ("DELETE", BOX + "/1"),
       ("DELETE", "/api/v1/users/bob"), ("GET", "/api/v1/users"), ("POST", "/api/v1/users"),
       ("GET", "/api/v1/journal"), ("GET", "/api/v1/users/%62ob/mailboxes/INBOX/messages"),
       ("GET", "/api/v1/users/BOB/mailboxes"), ("GET", "/api/v1/users/bob%00/mailboxes"),
       ("GET", "/api/v1/users/alice/../bob/mailboxes"),
       ("GET", "/api/v1/users/alice%2f..%2fbob/mailboxes"),
       ("GET", "/api/v1/users/alice/mailboxes/..%2f..%2fbob%2fINBOX/messages"),
       ("GET", "/api/v1/users/alice/mailboxes/%2e%2e/messages"),
       ("GET", "/api/v1/users/bob/mailboxes/INBOX/messages/%31/raw"),
       ("GET", "/lab/dashboard")]


@pytest.mark.parametrize("method, path", API)
def test_the_api_gives_alice_nothing_of_bobs(web, method, path):
    status, payload = ask(web, method, path, body=b'{"name": "eve", "password": "x"}'
                          if method == "POST" else None)
    assert status in (400, 403, 404), (status, payload[:200])
    assert not any(secret in payload for secret in SECRETS), payload[:300]
    # ...and bob himself still has it all.
    status, payload = ask(web, "GET", BOX + "/1/raw", user="bob")
    assert status == 200 and b"BOB-MAIL body" in payload
