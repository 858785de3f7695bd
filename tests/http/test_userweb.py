"""/~USER/ web space with curl: GET, PUT (201/204), DELETE, MKCOL as the owner, 403 for
others, and no way out of public_html (.., percent-encoded dots and slashes, absolute
paths, symlinks pointing out)."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.http.test_server import curl, running_web, status_of


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    with running_web(tmp_path_factory, "userweb") as server:
        yield server


def base(server) -> str:
    return f"http://127.0.0.1:{server.port('http', 'http')}"


def public_html(server, user: str):
    return server.data / "homes" / user / "public_html"


def test_put_get_replace_delete(web, tmp_path):
    page = base(web) + "/~alice/notes%20one.txt"
    source = tmp_path / "notes.txt"
    source.write_bytes(b"first version\n")
    assert status_of(curl("-i", "-u", "alice:alice", "-T", str(source), page).stdout) == [201]
    on_disk = public_html(web, "alice") / "notes one.txt"
    assert on_disk.read_bytes() == b"first version\n"  # the same file FTP and SMB see
    assert curl(page).stdout == b"first version\n"
    source.write_bytes(b"second\n")
    replaced = curl("-i", "-u", "alice:alice", "-T", str(source), page).stdout
    assert status_of(replaced) == [204] and b"Content-Length" not in replaced
    assert curl(page).stdout == b"second\n"
    assert not [p for p in on_disk.parent.iterdir() if p.name.startswith(".upload-")]
    assert status_of(curl("-i", "-u", "alice:alice", "-X", "DELETE", page).stdout) == [204]
    assert not on_disk.exists()
    assert status_of(curl("-i", page).stdout) == [404]


def test_big_put_and_get_are_byte_identical(web, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 7)  # over the small-file cache: sendfile path
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    page = base(web) + "/~bob/big.bin"
    assert status_of(curl("-i", "-u", "bob:bob", "-T", str(source), page).stdout) == [201]
    fetched = curl(page).stdout
    assert hashlib.sha256(fetched).digest() == hashlib.sha256(data).digest()
    headers = curl("-I", page).stdout
    assert f"Content-Length: {len(data)}".encode() in headers
    # Two in a row on one connection (the next response must follow the big one cleanly).
    both = curl("-v", page, base(web) + "/~bob/big.bin", "-o", "/dev/null", "-o",
                str(tmp_path / "second"))
    assert (tmp_path / "second").read_bytes() == data
    assert b"Re-using existing connection" in both.stderr or b"Reusing" in both.stderr
    over_tls = curl("--cacert", str(web.data / "tls" / "ca.crt"),
                    f"https://localhost:{web.port('http', 'https')}/~bob/big.bin").stdout
    assert hashlib.sha256(over_tls).digest() == hashlib.sha256(data).digest()


def test_mkcol_directories_and_listing(web, tmp_path):
    source = tmp_path / "a.html"
    source.write_text("<p>hi</p>")
    directory = base(web) + "/~alice/sub"
    assert status_of(curl("-i", "-u", "alice:alice", "-T", str(source),
                          directory + "/a.html").stdout) == [409]
    assert status_of(curl("-i", "-u", "alice:alice", "-X", "MKCOL", directory).stdout) == [201]
    assert status_of(curl("-i", "-u", "alice:alice", "-T", str(source),
                          directory + "/a.html").stdout) == [201]
    moved = curl("-i", directory).stdout
    assert status_of(moved) == [301] and b"Location: /~alice/sub/" in moved
    listing = curl(directory + "/").stdout
    assert b'href="a.html"' in listing and b"<title>Index of /~alice/sub/</title>" in listing
    not_empty = curl("-i", "-u", "alice:alice", "-X", "DELETE", directory).stdout
    assert status_of(not_empty) == [409]


def test_only_the_owner_may_write(web, tmp_path):
    source = tmp_path / "x.txt"
    source.write_text("x")
    page = base(web) + "/~alice/x.txt"
    anonymous = curl("-i", "-T", str(source), page).stdout
    assert status_of(anonymous) == [401] and b"WWW-Authenticate: Basic" in anonymous
    assert status_of(curl("-i", "-u", "alice:nope", "-T", str(source), page).stdout) == [401]
    assert status_of(curl("-i", "-u", "bob:bob", "-T", str(source), page).stdout) == [403]
    assert status_of(curl("-i", "-u", "bob:bob", "-X", "DELETE", page).stdout) == [403]
    assert not (public_html(web, "alice") / "x.txt").exists()
    assert status_of(curl("-i", base(web) + "/~nobody/").stdout) == [404]


@pytest.mark.parametrize("path", [
    "/~alice/../bob/public_html/secret.txt",
    "/~alice/..%2f..%2fbob/public_html/secret.txt",
    "/~alice/%2e%2e/%2e%2e/bob/public_html/secret.txt",
    "/~alice/%2E%2E%2F%2E%2E%2Fbob%2Fpublic_html%2Fsecret.txt",
    "/~alice/..%5c..%5cbob%5cpublic_html%5csecret.txt",
    "/~alice/escape/secret.txt",
    "/~alice/escape-file",
])
def test_no_path_leaves_the_web_space(web, path):
    (public_html(web, "bob") / "secret.txt").write_text("bob's secret")
    alice = public_html(web, "alice")
    for name, target in (("escape", public_html(web, "bob")),
                         ("escape-file", public_html(web, "bob") / "secret.txt")):
        if not (alice / name).is_symlink():
            (alice / name).symlink_to(target)
    answer = curl("-i", "--path-as-is", base(web) + path).stdout
    assert status_of(answer)[0] in (403, 404), answer[:300]
    assert b"bob's secret" not in answer
    put = curl("-i", "--path-as-is", "-u", "alice:alice", "-X", "PUT", "--data-binary", "owned",
               base(web) + path).stdout
    assert status_of(put)[0] in (403, 404), put[:300]
    assert (public_html(web, "bob") / "secret.txt").read_text() == "bob's secret"


def test_absolute_paths_stay_inside(web):
    for path in ("/~alice//etc/passwd", "/~alice/%2fetc%2fpasswd", "/~alice/C:/x"):
        answer = curl("-i", "--path-as-is", base(web) + path).stdout
        assert status_of(answer)[0] in (403, 404)
        assert b"root:" not in answer


def test_a_link_swapped_in_after_a_fetch_is_still_refused(web):
    """The fast path remembers resolved paths by file identity: a directory replaced by a
    link to another user's space after a fetch must not serve that user's file."""
    alice, bob = public_html(web, "alice"), public_html(web, "bob")
    (alice / "swap").mkdir()
    (alice / "swap" / "page.txt").write_text("alice's page")
    (bob / "page.txt").write_text("bob's page")
    page = base(web) + "/~alice/swap/page.txt"
    for _ in range(2):  # the second fetch comes from the fast path's memory
        assert curl(page).stdout == b"alice's page"
    (alice / "swap").rename(alice / "swap-old")
    (alice / "swap").symlink_to(bob)
    answer = curl("-i", page).stdout
    assert status_of(answer) == [403] and b"bob's page" not in answer
    (alice / "swap").unlink()
    (alice / "swap-old").rename(alice / "swap")
    (alice / "swap" / "page.txt").write_text("alice's new page, longer")
    assert curl(page).stdout == b"alice's new page, longer"


def test_an_index_html_link_out_is_refused(web):
    alice, bob = public_html(web, "alice"), public_html(web, "bob")
    (bob / "diary.html").write_text("bob's diary")
    (alice / "linked").mkdir()
    (alice / "linked" / "index.html").symlink_to(bob / "diary.html")
    answer = curl("-i", base(web) + "/~alice/linked/").stdout
    assert status_of(answer) == [403] and b"bob's diary" not in answer



def test_put_with_expect_is_refused_before_the_body(web, tmp_path):
    """curl sends "Expect: 100-continue" with -T: bad credentials are answered at once,
    without a 100 Continue, so the file is never sent."""
    import socket

    request = (b"PUT /~alice/early.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n"
               b"Expect: 100-continue\r\nAuthorization: Basic Ym9iOmJvYg==\r\n\r\n")  # bob:bob
    with socket.create_connection(("127.0.0.1", web.port("http", "http")), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 403 ") and b"100 Continue" not in answer
    anonymous = curl("-i", "-H", "Expect: 100-continue", "-T", str(__file__),
                     base(web) + "/~alice/early.bin").stdout
    assert status_of(anonymous) == [401] and b"100 Continue" not in anonymous
    assert b'WWW-Authenticate: Basic realm="web space of alice"' in anonymous
    assert not (public_html(web, "alice") / "early.bin").exists()
    good = curl("-i", "-u", "alice:alice", "-T", str(__file__), base(web) + "/~alice/early.bin")
    assert status_of(good.stdout) == [201]
    journal = web.journal_until("http", "Basic alice ok")
    assert journal.count("Basic alice ok") >= 1
