"""SMB with Samba's smbclient and impacket's own client; the holes of impacket's server,
closed (library-facts.md), each with a test; journal; captures; cross-protocol."""

from __future__ import annotations

import io
import os

import pytest

from tests.conftest import need
from tests.ftputil import Capture, ftp_login, get, journal, put, smbclient


def impacket_login(server, user: str = "alice", password: str | None = None, **kwargs):
    from impacket.smbconnection import SMBConnection

    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"),
                               timeout=15, **kwargs)
    connection.login(user, user if password is None else password)
    return connection


def test_smbclient_does_everything(lab, tmp_path):
    need("smbclient")
    server = lab.start(only="smb")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1 << 20) * 24)  # 24 MiB: many READ/WRITE requests of 64 KiB
    (tmp_path / "small.txt").write_text("hello smb\n")
    os.chdir(tmp_path)
    script = ("put small.txt; put big.bin; mkdir docs; rename small.txt docs\\moved.txt; "
              "ls; ls docs\\*; get docs\\moved.txt back.txt; get big.bin big.back; "
              "mkdir gone; rmdir gone; rm big.bin; ls")
    result = smbclient(server, "alice", script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "moved.txt" in result.stdout and "NT_STATUS" not in result.stdout
    assert (tmp_path / "back.txt").read_text() == "hello smb\n"
    assert (tmp_path / "big.back").read_bytes() == big.read_bytes()
    home = server.data / "homes/alice"
    assert (home / "docs/moved.txt").read_text() == "hello smb\n"
    assert not (home / "big.bin").exists() and not (home / "gone").exists()
    assert server.check().returncode == 0


def test_shares_are_per_user_and_case_does_not_help(lab):
    need("smbclient")
    server = lab.start(only="smb")
    (server.data / "homes/bob").mkdir(parents=True, exist_ok=True)
    assert smbclient(server, "ALICE", "ls").returncode == 0  # share names ignore case
    for share in ("bob", "BOB", "Bob"):
        denied = smbclient(server, share, "ls")
        assert "NT_STATUS_ACCESS_DENIED" in denied.stdout + denied.stderr
    missing = smbclient(server, "nosuch", "ls")
    assert "NT_STATUS_BAD_NETWORK_NAME" in missing.stdout + missing.stderr
    assert smbclient(server, "public", "mkdir shared").returncode == 0
    assert "shared" in smbclient(server, "public", "ls", "bob").stdout
    assert (server.data / "public/shared").is_dir()


def test_wrong_password_and_runtime_users(lab):
    need("smbclient")
    server = lab.start(only="smb")
    wrong = smbclient(server, "alice", "ls", "alice", "nope")
    assert "NT_STATUS_LOGON_FAILURE" in wrong.stdout + wrong.stderr
    assert server.cli("user", "add", "carol", "--password", "pw").returncode == 0
    assert smbclient(server, "carol", "ls", "carol", "pw").returncode == 0
    assert server.cli("user", "passwd", "carol", "--password", "pw2").returncode == 0
    stale = smbclient(server, "carol", "ls", "carol", "pw")
    assert "NT_STATUS_LOGON_FAILURE" in stale.stdout + stale.stderr


def test_anonymous_only_when_allowed_and_only_public_read_only(lab):
    need("smbclient")
    server = lab.start(only="smb")
    refused = smbclient(server, "public", "ls", "")
    assert refused.returncode != 0
    server.stop()
    (server.data / "public/readme.txt").write_text("hi")
    server = lab.start(only="smb", config="[smb]\nanonymous = true\n", data=server.data)
    listing = smbclient(server, "public", "ls", "")
    assert listing.returncode == 0 and "readme.txt" in listing.stdout
    write = smbclient(server, "public", "mkdir nope", "")
    assert "NT_STATUS_ACCESS_DENIED" in write.stdout + write.stderr
    assert not (server.data / "public/nope").exists()
    home = smbclient(server, "alice", "ls", "")
    assert home.returncode != 0


def test_impacket_client(lab):
    from impacket.smbconnection import SessionError

    server = lab.start(only="smb")
    connection = impacket_login(server, "bob")
    assert connection.getDialect() == 0x0202
    connection.createDirectory("bob", "dir")
    connection.putFile("bob", "dir\\a.txt", io.BytesIO(b"from impacket").read)
    connection.rename("bob", "dir\\a.txt", "dir\\b.txt")
    names = sorted(f.get_longname() for f in connection.listPath("bob", "dir\\*"))
    assert [n for n in names if n not in (".", "..")] == ["b.txt"]
    out = io.BytesIO()
    connection.getFile("bob", "dir\\b.txt", out.write)
    assert out.getvalue() == b"from impacket"
    connection.deleteFile("bob", "dir\\b.txt")
    connection.deleteDirectory("bob", "dir")
    with pytest.raises(SessionError, match="ACCESS_DENIED"):
        connection.connectTree("alice")
    connection.close()
    with pytest.raises(SessionError, match="LOGON_FAILURE"):
        impacket_login(server, "bob", "wrong")


def test_failed_session_setup_cannot_tree_connect(lab):
    """impacket's server left a connection whose login FAILED able to tree-connect and list
    files (library-facts.md, seen): here it gets ACCESS_DENIED."""
    from impacket.smbconnection import SessionError, SMBConnection

    server = lab.start(only="smb")
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"),
                               timeout=15)
    with pytest.raises(SessionError, match="LOGON_FAILURE"):
        connection.login("alice", "wrong")
    for share in ("alice", "public", "IPC$"):
        with pytest.raises(SessionError) as refused:
            connection.connectTree(share)
        assert "ACCESS_DENIED" in str(refused.value), refused.value
    connection.close()


def test_smb1_is_off(lab):
    """SMB1's non-extended-security login never checks the password in impacket: SMB1 is
    refused altogether (a client offering no SMB2 dialect is disconnected)."""
    from impacket.smb import SMB_DIALECT

    need("smbclient")
    server = lab.start(only="smb")
    old = smbclient(server, "alice", "ls", "alice", None, "--option=client max protocol=NT1",
                    "--option=client min protocol=NT1")
    assert old.returncode != 0
    with pytest.raises(Exception):
        impacket_login(server, preferredDialect=SMB_DIALECT)
    assert smbclient(server, "alice", "ls").returncode == 0  # SMB2 still fine
    server.stop()
    events = journal(server.data, "smb")
    assert any("SMB1 refused" in e["text"] for e in events if e["kind"] == "close")


def test_rmdir_of_a_full_directory_keeps_its_files(lab):
    """impacket removed a directory marked delete-on-close with shutil.rmtree, contents and
    all; here a directory that is not empty stays."""
    server = lab.start(only="smb")
    connection = impacket_login(server)
    connection.createDirectory("alice", "full")
    connection.putFile("alice", "full\\keep.txt", io.BytesIO(b"keep").read)
    with pytest.raises(Exception):
        connection.deleteDirectory("alice", "full")
    from impacket import smb3structs as smb2

    tree = connection.connectTree("alice")
    with pytest.raises(Exception):  # CREATE with FILE_DELETE_ON_CLOSE, then CLOSE
        fid = connection.openFile(tree, "full", desiredAccess=smb2.DELETE | smb2.FILE_READ_ATTRIBUTES,
                                  creationOption=smb2.FILE_DIRECTORY_FILE | smb2.FILE_DELETE_ON_CLOSE)
        connection.closeFile(tree, fid)
    with pytest.raises(Exception):
        fid = connection.openFile(tree, "", desiredAccess=smb2.DELETE | smb2.FILE_READ_ATTRIBUTES,
                                  creationOption=smb2.FILE_DIRECTORY_FILE | smb2.FILE_DELETE_ON_CLOSE)
        connection.closeFile(tree, fid)
    connection.close()
    assert (server.data / "homes/alice/full/keep.txt").read_bytes() == b"keep"


def test_challenge_is_random_and_capture_is_clean(lab, tmp_path):
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    capture = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))
    for _ in range(2):
        assert smbclient(server, "alice", "ls").returncode == 0
    capture.stop()
    out = __import__("subprocess").run(
        ["tshark", "-r", str(capture.file), "-d", f"tcp.port=={port},nbss", "-Y",
         "ntlmssp.messagetype == 2", "-T", "fields", "-e", "ntlmssp.ntlmserverchallenge"],
        capture_output=True, text=True, timeout=60).stdout.split()
    assert len(out) == 2 and out[0] != out[1] and "4141414141414141" not in out, out
    assert capture.count("smb2.cmd == 3") >= 2  # tree connects dissected as SMB2
    assert capture.bad("smb2 || ntlmssp || nbss") == []


def test_journal_has_logins_trees_and_files(lab):
    need("smbclient")
    server = lab.start(only="smb")
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    (server.data / "homes/alice/f.bin").write_bytes(b"x" * 200_000)
    smbclient(server, "alice", f"mkdir j; ls; get f.bin /dev/null; put {server.data}/homes/alice/f.bin g.bin")
    smbclient(server, "alice", "ls", "alice", "bad")
    server.stop()
    texts = [(e["kind"], e["text"]) for e in journal(server.data, "smb")]
    assert ("auth", "NTLMv2 alice ok") in texts and ("auth", "NTLMv2 alice failed") in texts
    assert ("event", "negotiate SMB 2.0.2") in texts or \
        ("event", "negotiate SMB 2.0.2 (from an SMB1 negotiate)") in texts
    assert any(k == "event" and t.startswith("tree-connect ") and t.endswith("\\alice ok")
               for k, t in texts)
    assert ("event", "create alice\\j create dir -> ok") in texts
    # READs answered on the fast path are counted like the others.
    assert ("event", "transfer alice\\f.bin read 200000 bytes, wrote 0 bytes") in texts
    assert ("event", "transfer alice\\g.bin read 0 bytes, wrote 200000 bytes") in texts


def test_stop_with_a_client_connected(lab):
    server = lab.start(only="smb")
    connection = impacket_login(server)
    connection.listPath("alice", "*")
    assert server.stop(timeout=2) == 0  # HACKING: a threaded service stops within 2 s


def test_ftp_to_smb_and_back(lab):
    need("smbclient")
    server = lab.start(only="ftp,smb")
    ftp = ftp_login(server)
    put(ftp, "via-ftp.txt", b"put over FTP\n")
    connection = impacket_login(server)
    out = io.BytesIO()
    connection.getFile("alice", "via-ftp.txt", out.write)
    assert out.getvalue() == b"put over FTP\n"
    connection.putFile("public", "via-smb.txt", io.BytesIO(b"put over SMB\n").read)
    connection.close()
    assert get(ftp, "/public/via-smb.txt") == b"put over SMB\n"
    ftp.quit()


def test_ftp_smb_and_http_share_one_web_space(lab):
    """A page put over FTP is served at /~alice/ and read over SMB; one PUT over HTTP is
    fetched over SMB and FTP."""
    import urllib.request

    need("curl")
    server = lab.start(only="http,ftp,smb")
    web = f"http://127.0.0.1:{server.port('http', 'http')}/~alice/"
    ftp = ftp_login(server)
    put(ftp, "public_html/page.html", b"<p>from FTP</p>\n")
    assert urllib.request.urlopen(web + "page.html", timeout=10).read() == b"<p>from FTP</p>\n"
    connection = impacket_login(server)
    out = io.BytesIO()
    connection.getFile("alice", "public_html\\page.html", out.write)
    assert out.getvalue() == b"<p>from FTP</p>\n"
    upload = __import__("subprocess").run(
        ["curl", "-sS", "-f", "-u", "alice:alice", "-T", "-", web + "via-http.txt"],
        input=b"put over HTTP\n", capture_output=True, timeout=30)
    assert upload.returncode == 0, upload.stderr
    out = io.BytesIO()
    connection.getFile("alice", "public_html\\via-http.txt", out.write)
    assert out.getvalue() == b"put over HTTP\n"
    assert get(ftp, "/public_html/via-http.txt") == b"put over HTTP\n"
    connection.close()
    ftp.quit()


def test_clients_that_require_signing(lab, tmp_path):
    """smbclient --client-protection sign checks the SPNEGO mechListMIC impacket never sends
    (upstream fortra/impacket#1883), then signatures on every reply, like Windows 11 24H2."""
    need("smbclient")
    server = lab.start(only="smb", config="[smb]\nsigning_required = true\n")
    (tmp_path / "s.txt").write_text("signed")
    os.chdir(tmp_path)
    result = smbclient(server, "alice", "put s.txt; get s.txt back.txt; ls", "alice", None,
                       "--client-protection", "sign")
    assert result.returncode == 0 and "NT_STATUS" not in result.stdout, \
        result.stdout + result.stderr
    assert (tmp_path / "back.txt").read_text() == "signed"
    impacket_login(server).close()  # clients that do not check the MIC are still fine


def test_garbage_drops_that_client_only(lab):
    import socket
    import struct

    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    junk = [b"\x00\x00\x00\x05hello", b"\x00\x00\x00\x40" + b"\xfeSMB" + b"\xff" * 60,
            b"\x00\x00\x00\x44" + b"\xfeSMB" + struct.pack("<HHIHH", 64, 0, 0, 5, 0) + b"\0" * 52,
            b"\x81\x00\x00\x04abcd", b"\x00\x00\x00\x08\xffSMBrest"]
    for data in junk:
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        raw.sendall(data)
        raw.settimeout(5)
        try:
            raw.recv(4096)
        except OSError:
            pass
        raw.close()
    impacket_login(server).close()  # still serving
    server.stop()
    assert "Traceback" not in server.stderr()


def test_stop_during_start_up_ends_the_serving_thread_quietly(caplog):
    """SIGTERM right after `ready`: stopService closes the socket while the serving thread is
    still importing impacket. The thread must then end without building a server on the
    closed descriptor (it logged EBADF with a traceback)."""
    import logging
    import types

    from services.smb.server import SMBService

    lab = types.SimpleNamespace(
        bind="127.0.0.1",
        listener=lambda *_: types.SimpleNamespace(port=0),
        settings=lambda *_: pytest.fail("the thread built a server after the stop"))
    service = SMBService(lab)
    service.startService()
    sock = service._socket
    service.stopService()  # before the reactor's next turn: the thread has not run yet
    assert sock.fileno() == -1
    with caplog.at_level(logging.DEBUG, logger="services.smb"):
        service._serve()  # what the thread does once its import returns
    assert not caplog.records and service.server is None
