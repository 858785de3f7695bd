"""The one path-safety rule (services.paths), and every protocol that serves files by it.

The unit tests pin the rule; the protocol tests plant the same traps (a link to /etc, a
link to another user's home, "..", backslashes, ':' streams, fullwidth dots, case) in a
real lab and try them with real clients. HTTP's /~user/ space is tried once the http
service serves it on this tree.
"""

from __future__ import annotations

import ftplib
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services import paths, registry
from services.paths import PathError
from tests.ftputil import ftp_login

ESCAPES = [
    "..", "../x", "a/../../x", "/..", "\\..\\x", "a\\..\\..\\x", "C:\\Windows", "c:x",
    "file.txt:secret", "file.txt::$DATA", "x\x00y", "x\ny", "...", ".. ", " . .",
    "\uff0e\uff0e/x",  # fullwidth dots fold (NFKC) to ".."
    "a\uff0fb", "a\uff3cb", "a\uff1ab",  # fullwidth '/', '\' and ':'
    "\u2024\u2024/x", "\u2025/x", "\ufe52\ufe52", "a\ufe68b", "a\ufe55b",  # dot leaders, small forms
    "\u2026",  # HORIZONTAL ELLIPSIS folds to "..."
    # default-ignorables that NFKC_Casefold (and IDNA) drop: ".." to such a layer
    "..\u200b/x", ".\u200b.", "\ufeff..", "..\u00ad", "..\ufe0f", "\u2060..\u2060", "..\u180e",
    "\u200b\u00ad",  # a name of nothing but ignorables folds to ""
]


@pytest.mark.parametrize("path", ESCAPES)
def test_escapes_are_refused(tmp_path, path):
    with pytest.raises(PathError):
        paths.resolve(tmp_path, path)


@pytest.mark.parametrize("path, names", [
    ("", []), ("/", []), ("a/b", ["a", "b"]), ("/a//b/", ["a", "b"]), ("a/./b", ["a", "b"]),
    ("a/../b", ["b"]), ("a\\b", ["a", "b"]), ("%2e%2e", ["%2e%2e"]), ("café", ["café"]),
    ("..a", ["..a"]), ("a..", ["a.."]), ("UPPER/Case", ["UPPER", "Case"]),
    ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",  # ZWNJ in a Persian word
     ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"]),
    ("\U0001f468\u200d\U0001f469", ["\U0001f468\u200d\U0001f469"]),  # ZWJ in an emoji
    ("..\u0301", ["..\u0301"]),  # a combining accent makes it a name, even folded
])
def test_harmless_paths_keep_their_names(path, names):
    assert paths.parts(path) == names


def test_no_character_folds_into_a_way_up():
    """Every code point whose compatibility form holds a dot, a separator, a ':' or a
    control character: alone, doubled, tripled or inside a name, what passes the rule is a
    name that no folding layer reads as dots, a separator or a stream."""
    suspects = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and
                any(x in unicodedata.normalize("NFKC", chr(c)) for x in "./\\:\x00")]
    assert len(suspects) > 20  # the sweep did find the look-alikes it is about
    for char in suspects:
        for name in (char, char * 2, char * 3, "a" + char + "b", "x" + char, ". " + char):
            try:
                names = paths.parts(name)
            except PathError:
                continue
            for part in names:
                folded = paths.fold(part)
                assert folded.rstrip(". ") and not set(folded) & set("/\\:"), (name, names)


def test_absolute_paths_are_taken_below_the_root(tmp_path):
    assert paths.resolve(tmp_path, "/etc/passwd") == Path(os.path.realpath(tmp_path)) / "etc/passwd"


def test_links_out_of_the_root_are_refused_links_inside_allowed(tmp_path):
    root = tmp_path / "home"
    (root / "dir").mkdir(parents=True)
    (root / "out").symlink_to("/etc")
    (root / "dangling").symlink_to("/nonexistent/x")
    (root / "in").symlink_to(root / "dir")
    for path in ("out", "out/passwd", "dangling", "dir/../out/x"):
        with pytest.raises(PathError):
            paths.resolve(root, path)
    assert paths.resolve(root, "in/new.txt").name == "new.txt"
    # A root that is itself reached through a link is fine: it is compared resolved.
    (tmp_path / "alias").symlink_to(root)
    assert paths.resolve(tmp_path / "alias", "dir") == Path(os.path.realpath(root)) / "dir"


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from([*list("./\\:a\x00 ．／"), "..", "%2e", "/../"]),
                max_size=16).map("".join))
def test_no_path_resolves_outside_its_root(tmp_path_factory, path):
    root = Path(os.path.realpath(tmp_path_factory.getbasetemp())) / "fuzzroot"
    try:
        target = paths.resolve(root, path)
    except PathError:
        return
    assert target == root or root in target.parents


def test_relative_is_the_clients_view(tmp_path):
    assert paths.relative(tmp_path, tmp_path) == "/"
    assert paths.relative(tmp_path, tmp_path / "a" / "b") == "/a/b"


def plant_traps(data: Path) -> None:
    """Links in alice's home to /etc and to bob's home; a file bob owns."""
    alice, bob = data / "homes/alice", data / "homes/bob"
    (bob / "public_html").mkdir(parents=True, exist_ok=True)
    (alice / "public_html").mkdir(parents=True, exist_ok=True)
    (bob / "private.txt").write_text("bob's")
    (alice / "etc").symlink_to("/etc")
    (alice / "bob").symlink_to(bob)
    (alice / "public_html/up").symlink_to("..")  # inside the home: allowed, not outside


def test_ftp_paths(lab):
    server = lab.start(only="ftp")
    plant_traps(server.data)
    ftp = ftp_login(server)
    refused = ["RETR ../bob/private.txt", "RETR ..\\bob\\private.txt", "RETR etc/passwd",
               "RETR bob/private.txt", "CWD etc", "CWD bob", "RETR /public/../../lab.db",
               "RETR x.txt:stream", "RETR \uff0e\uff0e/\uff0e\uff0e/lab.db", "MKD a\uff0fb",
               "SIZE /public/..\\..\\lab.db", "RETR ../../lab.db"]
    for command in refused:
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.sendcmd(command)
        assert ftp.pwd() == "/"
    # ".." above "/" stays at "/" (a chroot); PUBLIC is not the public mount, just a name.
    ftp.cwd("../../..")
    assert ftp.pwd() == "/"
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.cwd("/PUBLIC")
    assert ftp.nlst("/public_html/up") != []  # a link that stays inside works
    ftp.quit()
    assert not (server.data / "homes/alice/a\uff0fb").exists()


@pytest.mark.skipif("http" not in registry.names(), reason="the http service is not on this "
                    "tree yet: its /~user/ space is tried here once it is")
def test_http_paths(lab):
    import urllib.error
    import urllib.request

    server = lab.start(only="http")
    plant_traps(server.data)
    (server.data / "homes/alice/public_html/ok.txt").write_text("ok")
    base = f"http://127.0.0.1:{server.port('http', 'http')}/~alice/"
    try:
        assert urllib.request.urlopen(base + "ok.txt", timeout=10).read() == b"ok"
    except urllib.error.HTTPError as error:
        if error.code == 404:
            pytest.skip("the http service does not serve /~user/ on this tree yet")
        raise
    for path in ("../private.txt", "..%2fprivate.txt", "%2e%2e/%2e%2e/bob/private.txt",
                 "up/../../bob/private.txt", "..%5c..%5cbob%5cprivate.txt", "ok.txt:x",
                 "%ef%bc%8e%ef%bc%8e/private.txt"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=10)
        assert refused.value.code in (400, 403, 404), path


def test_smb_paths(lab):
    from impacket.smbconnection import SessionError, SMBConnection

    server = lab.start(only="smb")
    plant_traps(server.data)
    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"),
                               timeout=15)
    connection.login("alice", "alice")
    refused = ["..\\bob\\private.txt", "../bob/private.txt", "etc\\passwd", "bob\\private.txt",
               "\\..\\..\\lab.db", "x.txt:stream", "x.txt::$DATA",
               "\uff0e\uff0e\\\uff0e\uff0e\\lab.db", "public_html\\up\\..\\..\\bob\\private.txt"]
    for path in refused:
        with pytest.raises(SessionError):
            connection.getFile("alice", path, lambda data: None)
    with pytest.raises(SessionError):
        connection.listPath("alice", "bob\\*")
    with pytest.raises(SessionError):
        connection.createDirectory("alice", "a\uff0fb")
    connection.putFile("alice", "ok.txt", lambda size: b"")
    with pytest.raises(SessionError):  # a rename target out of the share
        connection.rename("alice", "ok.txt", "..\\bob\\stolen.txt")
    connection.close()
    assert (server.data / "homes/bob/private.txt").read_text() == "bob's"
    assert not (server.data / "homes/bob/stolen.txt").exists()
