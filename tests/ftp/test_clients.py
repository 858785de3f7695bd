"""FTP and FTPS with real clients: ftplib, curl, lftp; journal, durability, captures."""

from __future__ import annotations

import ftplib
import os
import socket
import subprocess

import pytest

from tests.conftest import need
from tests.ftputil import Capture, ftp_login, get, journal, put


def test_ftplib_passive_session(lab):
    server = lab.start(only="ftp")
    ftp = ftp_login(server)
    assert "UTF8" in ftp.sendcmd("FEAT") and "MLST" in ftp.sendcmd("FEAT")
    assert put(ftp, "notes.txt", b"line one\n").startswith("226")
    # After 226 the upload is on disk, whole (it was fsync'd before the reply).
    assert (server.data / "homes/alice/notes.txt").read_bytes() == b"line one\n"
    ftp.storbinary("APPE notes.txt", __import__("io").BytesIO(b"line two\n"))
    assert get(ftp, "notes.txt") == b"line one\nline two\n"
    assert ftp.size("notes.txt") == 18
    assert ftp.sendcmd("MDTM notes.txt").startswith("213 20")
    ftp.sendcmd("REST 9")
    assert get(ftp, "notes.txt") == b"line two\n"
    facts = dict(ftp.mlsd())
    assert facts["notes.txt"]["type"] == "file" and facts["notes.txt"]["size"] == "18"
    assert facts["public"]["type"] == "dir" and facts["public_html"]["type"] == "dir"
    assert "size=18;" in ftp.sendcmd("MLST notes.txt")
    ftp.mkd("dir")
    ftp.rename("notes.txt", "dir/renamed.txt")
    assert ftp.nlst("dir") == ["dir/renamed.txt"] or ftp.nlst("dir") == ["renamed.txt"]
    ftp.delete("dir/renamed.txt")
    ftp.rmd("dir")
    put(ftp, "café ☕.txt", b"utf8")  # RFC 2640 names, UTF-8 on the wire and on disk
    assert "café ☕.txt" in ftp.nlst()
    assert (server.data / "homes/alice/café ☕.txt").read_bytes() == b"utf8"
    ftp.cwd("/public")
    assert ftp.pwd() == "/public"
    put(ftp, "shared.txt", b"for all")
    assert (server.data / "public/shared.txt").read_bytes() == b"for all"
    ftp.quit()
    bob = ftp_login(server, "bob")
    assert get(bob, "/public/shared.txt") == b"for all"
    assert ("notes.txt" not in bob.nlst("/") and bob.nlst("/public") == ["shared.txt"]) or \
        bob.nlst("/public") == ["/public/shared.txt"]
    bob.quit()
    assert server.check().returncode == 0


def test_roots_cannot_be_removed_or_renamed(lab):
    server = lab.start(only="ftp")
    ftp = ftp_login(server)
    for command in ("RMD /public", "DELE public", "RNFR /public", "RMD /", "RNFR /"):
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            ftp.sendcmd(command)
    assert (server.data / "public").is_dir()
    ftp.quit()


def _data_listener() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(15)
    return listener


def test_active_mode_comes_from_port_20(lab):
    server = lab.start(only="ftp")
    ftp = ftp_login(server)
    put(ftp, "a.txt", b"active")
    listener = _data_listener()
    port = listener.getsockname()[1]
    ftp.sendcmd(f"PORT 127,0,0,1,{port >> 8},{port & 255}")
    ftp.sendcmd("RETR a.txt")
    connection, peer = listener.accept()
    assert peer[1] == server.offset + 20  # the classic data port, shifted by the offset
    assert connection.makefile("rb").read() == b"active"
    connection.close()
    assert ftp.voidresp().startswith("226")
    # ftplib's own active mode (PORT and EPRT) works end to end too.
    ftp.set_pasv(False)
    assert get(ftp, "a.txt") == b"active"
    listener = _data_listener()
    port = listener.getsockname()[1]
    ftp.sendcmd(f"EPRT |1|127.0.0.1|{port}|")
    ftp.sendcmd("RETR a.txt")
    connection, peer = listener.accept()
    assert peer[1] == server.offset + 20
    assert connection.makefile("rb").read() == b"active"
    connection.close()
    assert ftp.voidresp().startswith("226")
    ftp.quit()


def test_port_and_eprt_to_foreign_addresses_are_refused(lab):
    server = lab.start(only="ftp")
    ftp = ftp_login(server)
    for command in ("PORT 127,0,0,2,100,1", "EPRT |1|10.1.2.3|25600|", "PORT 127,0,0,1,0,25"):
        with pytest.raises(ftplib.error_perm, match=r"^501"):
            ftp.sendcmd(command)
    ftp.quit()


def test_explicit_tls_with_key_log(lab, tmp_path):
    keylog = tmp_path / "keys.log"
    server = lab.start(only="ftp", config=f'[tls]\nkeylog = "{keylog}"\n')
    ftp = ftp_login(server, "bob", tls=True)
    put(ftp, "secret.txt", b"x" * 100_000)
    assert get(ftp, "secret.txt") == b"x" * 100_000
    ftp.quit()
    assert "CLIENT_HANDSHAKE_TRAFFIC_SECRET" in keylog.read_text() or \
        "CLIENT_RANDOM" in keylog.read_text()
    server.stop()
    events = journal(server.data, "ftp")
    assert any(e["kind"] == "event" and e["text"].startswith("tls TLSv1.") for e in events)
    transfers = [e["text"] for e in events if e["text"].startswith("transfer ")]
    assert any(t.startswith("transfer STOR /secret.txt 100000 bytes upload binary tls complete")
               for t in transfers), transfers
    assert any(t.startswith("transfer RETR /secret.txt 100000 bytes download") for t in transfers)
    commands = [e["text"] for e in events if e["kind"] == "command"]
    assert "PASS ••••" in commands and "PASS bob" not in commands


def test_tls_required_refuses_clear_logins(lab):
    server = lab.start(only="ftp", config="[ftp]\ntls_required = true\n")
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", server.port("ftp", "ftp"), timeout=15)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        ftp.login("alice", "alice")
    ftp.close()
    ftp_login(server, tls=True).quit()


def test_logins_follow_the_store_at_run_time(lab):
    server = lab.start(only="ftp")
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp_login(server, "alice", "wrong")
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp_login(server, "carol", "carol")
    assert server.cli("user", "add", "carol", "--password", "carol").returncode == 0
    ftp_login(server, "carol").quit()
    assert server.cli("user", "passwd", "carol", "--password", "new").returncode == 0
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp_login(server, "carol", "carol")
    ftp_login(server, "carol", "new").quit()


def test_anonymous_is_off_by_default_and_read_only_when_on(lab, tmp_path):
    server = lab.start(only="ftp")
    with pytest.raises(ftplib.error_perm, match=r"^530"):
        ftp_login(server, "anonymous", "guest@")
    server.stop()
    (server.data / "public/readme.txt").write_text("welcome")
    server = lab.start(only="ftp", config="[ftp]\nanonymous = true\n", data=server.data)
    ftp = ftp_login(server, "anonymous", "guest@")
    assert ftp.pwd() == "/" and ftp.nlst() == ["readme.txt"]
    assert get(ftp, "readme.txt") == b"welcome"
    for action in (lambda: put(ftp, "x.txt", b"no"), lambda: ftp.mkd("d"),
                   lambda: ftp.delete("readme.txt"), lambda: ftp.cwd("/../homes")):
        with pytest.raises(ftplib.error_perm, match=r"^550"):
            action()
    assert ftp.pwd() == "/"
    ftp.quit()


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "30", *args], capture_output=True,
                          timeout=60)


def test_curl_passive_active_and_tls(lab, tmp_path):
    """Explicit and implicit FTPS with curl (pyftpdlib has no implicit mode, upstream #160:
    the lab's handler starts TLS before the banner)."""
    need("curl")
    server = lab.start(only="ftp")
    port, implicit = server.port("ftp", "ftp"), server.port("ftp", "ftps")
    ca = str(server.data / "tls/ca.crt")
    source = tmp_path / "up.bin"
    source.write_bytes(bytes(range(256)) * 4096)
    base = f"ftp://alice:alice@127.0.0.1:{port}"
    assert _curl("-T", str(source), f"{base}/up.bin").returncode == 0
    assert _curl(f"{base}/up.bin").stdout == source.read_bytes()
    assert _curl("-P", "-", f"{base}/up.bin").stdout == source.read_bytes()  # active (PORT/EPRT)
    tls = _curl("--ssl-reqd", "--cacert", ca, f"{base}/up.bin")
    assert tls.stdout == source.read_bytes(), tls.stderr
    listing = _curl("--cacert", ca, f"ftps://alice:alice@localhost:{implicit}/")
    assert b"up.bin" in listing.stdout, listing.stderr
    assert _curl("-u", "alice:bad", f"ftp://127.0.0.1:{port}/").returncode != 0


def test_lftp_mirror_of_a_tree(lab, tmp_path):
    need("lftp")
    server = lab.start(only="ftp")
    local = tmp_path / "tree"
    (local / "sub").mkdir(parents=True)
    (local / "a.txt").write_text("a")
    (local / "sub/b.txt").write_text("b" * 5000)
    ca = server.data / "tls/ca.crt"
    script = (f"set ssl:ca-file {ca}; set ftp:ssl-force true; set ftp:ssl-protect-data true; "
              f"open -u bob,bob ftp://localhost:{server.port('ftp', 'ftp')}; "
              f"mirror -R {local} /up; cls -1 /up/sub; "
              f"mirror /up {tmp_path / 'back'}; bye")
    result = subprocess.run(["lftp", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "b.txt" in result.stdout
    assert (server.data / "homes/bob/up/sub/b.txt").read_text() == "b" * 5000
    assert (tmp_path / "back/sub/b.txt").read_text() == "b" * 5000


def test_capture_dissects_cleanly(lab, tmp_path):
    need("tshark")
    server = lab.start(only="ftp")
    port = server.port("ftp", "ftp")
    capture = Capture(tmp_path, f"tcp port {port} or tcp portrange "
                                f"{server.offset + 30000}-{server.offset + 30099} "
                                f"or tcp port {server.offset + 20}",
                      decode_as=(f"tcp.port=={port},ftp",))
    ftp = ftp_login(server)
    put(ftp, "c.txt", b"capture me\n" * 100)
    ftp.nlst()
    ftp.set_pasv(False)
    assert get(ftp, "c.txt") == b"capture me\n" * 100
    ftp.quit()
    capture.stop()
    assert capture.count("ftp.request.command == \"STOR\"") == 1
    assert capture.count("ftp-data") > 0
    assert capture.bad("ftp || ftp-data") == []


def test_passive_range_and_masquerade_address(lab):
    server = lab.start(only="ftp", config='[ftp]\nmasquerade_address = "10.9.8.7"\n'
                                          "passive_low_port = 30010\npassive_high_port = 30019\n")
    ftp = ftp_login(server)
    reply = ftp.sendcmd("PASV")
    numbers = [int(n) for n in reply[reply.index("(") + 1:reply.index(")")].split(",")]
    assert numbers[:4] == [10, 9, 8, 7]  # what a client behind NAT must be told
    assert server.offset + 30010 <= numbers[4] * 256 + numbers[5] <= server.offset + 30019
    epsv = ftp.sendcmd("EPSV")
    port = int(epsv.split("|")[3])
    assert server.offset + 30010 <= port <= server.offset + 30019
    ftp.close()


def test_garbage_gets_protocol_errors_not_crashes(lab):
    server = lab.start(only="ftp")
    raw = socket.create_connection(("127.0.0.1", server.port("ftp", "ftp")), timeout=15)
    replies = raw.makefile("rb")
    assert replies.readline().startswith(b"220")
    for line in (b"FOO bar", b"USER", b"\xff\xfe\x00garbage", b"RETR x", b"PORT 1,2,3",
                 b"EPRT |9|x|y|", b"A" * 5000, b"MKD \x00", b"REST -1", b"TYPE Z"):
        raw.sendall(line + b"\r\n")
        reply = replies.readline()
        assert reply[:1] in (b"3", b"5"), (line[:20], reply)
    raw.close()
    ftp_login(server).quit()  # still serving
    server.stop()
    assert "Traceback" not in server.stderr()


def test_tls_capture_decrypts_with_the_key_log(lab, tmp_path):
    need("tshark", "tcpdump")
    keylog = tmp_path / "keys.log"
    server = lab.start(only="ftp", config=f'[tls]\nkeylog = "{keylog}"\n')
    port = server.port("ftp", "ftp")
    capture = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},ftp",))
    ftp = ftp_login(server, tls=True)
    ftp.mkd("secret-dir")
    ftp.quit()
    capture.stop()
    assert capture.count('ftp.request.command == "MKD"') == 0  # encrypted on the wire
    capture.decode += ["-o", f"tls.keylog_file:{keylog}"]
    assert capture.count('ftp.request.command == "MKD"') == 1  # and readable with the key log
    assert capture.bad("ftp || tls") == []


def test_cwd_never_moves_the_server_process(lab):
    """pyftpdlib's AbstractedFS.chdir() calls os.chdir(): in a process that runs every
    protocol, the next relative path anyone opens would resolve in a user's directory."""
    server = lab.start(only="ftp")
    before = os.readlink(f"/proc/{server.process.pid}/cwd")
    ftp = ftp_login(server)
    ftp.cwd("public_html")
    assert ftp.pwd() == "/public_html"
    ftp.cwd("/public")
    assert os.readlink(f"/proc/{server.process.pid}/cwd") == before
    ftp.quit()


def test_bad_tls_at_the_implicit_port_is_a_journaled_hang_up(lab):
    """Plain text at the implicit FTPS port used to raise SSL.Error out of the banner's
    send() (the handshake ran there) and print pyftpdlib's "unhandled exception" traceback.
    The banner now waits for the handshake; a failed one is journaled and hung up on."""
    server = lab.start(only="ftp")
    raw = socket.create_connection(("127.0.0.1", server.port("ftp", "ftps")), timeout=15)
    raw.sendall(b"USER alice\r\n")
    received = b""
    try:
        while chunk := raw.recv(4096):  # until the server hangs up (maybe with an alert)
            received += chunk
    except ConnectionResetError:  # it closed with our bytes unread
        pass
    raw.close()
    assert b"220" not in received  # no banner in clear text before TLS
    assert server.stop() == 0
    assert "Traceback" not in server.stderr() and "unhandled" not in server.stderr()
    texts = [e["text"] for e in journal(server.data, "ftp") if e["kind"] == "event"]
    assert any(t.startswith("tls handshake failed: ") for t in texts), texts


def test_session_warnings_go_to_the_journal_not_stderr(lab):
    server = lab.start(only="ftp")
    raw = socket.create_connection(("127.0.0.1", server.port("ftp", "ftp")), timeout=15)
    replies = raw.makefile("rb")
    assert replies.readline().startswith(b"220")
    raw.sendall(b"A" * 5000 + b"\r\n")
    assert replies.readline().startswith(b"500 Command too long.")
    raw.close()
    assert server.stop() == 0
    assert "Command too long" not in server.stderr()
    events = journal(server.data, "ftp")
    assert ("event", "warning Command too long.") in [(e["kind"], e["text"]) for e in events]


def test_corrupt_tls_record_after_the_handshake_ends_that_session_only(lab):
    """pyftpdlib's TLS recv() lets SSL.Error (here a bad record MAC) escape as an
    "unhandled exception" traceback: the lab journals it and hangs up."""
    import ssl

    server = lab.start(only="ftp")
    raw = socket.create_connection(("127.0.0.1", server.port("ftp", "ftp")), timeout=15)
    replies = raw.makefile("rb")
    assert replies.readline().startswith(b"220")
    raw.sendall(b"AUTH TLS\r\n")
    assert replies.readline().startswith(b"234")
    context = ssl.create_default_context(cafile=str(server.data / "tls" / "ca.crt"))
    context.check_hostname = False
    tls = context.wrap_socket(raw)
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(100).startswith(b"200")
    under = socket.socket(fileno=tls.detach())
    under.settimeout(15)  # the descriptor is still non-blocking from the TLS socket
    under.sendall(b"\x17\x03\x03\x00\x20" + b"\x01" * 32)  # application data, bad MAC
    try:
        while under.recv(4096):  # until the server hangs up
            pass
    except ConnectionResetError:
        pass
    under.close()
    ftp_login(server).quit()  # still serving
    assert server.stop() == 0
    assert "Traceback" not in server.stderr() and "unhandled" not in server.stderr()
    texts = [e["text"] for e in journal(server.data, "ftp") if e["kind"] == "event"]
    assert any("bad record mac" in t for t in texts if t.startswith("tls error: ")), texts


def test_corrupt_tls_record_on_a_data_channel_aborts_that_transfer(lab):
    server = lab.start(only="ftp")
    ftp = ftp_login(server, tls=True)
    data = ftp.transfercmd("STOR broken.bin")  # PROT P: TLS on the data channel
    data.sendall(b"first bytes")
    under = socket.socket(fileno=data.detach())
    under.sendall(b"\x17\x03\x03\x00\x20" + b"\x01" * 32)  # application data, bad MAC
    with pytest.raises(ftplib.error_temp, match=r"^426"):
        ftp.voidresp()
    under.close()
    ftp.voidcmd("NOOP")  # the control channel lives on
    ftp.quit()
    assert server.stop() == 0
    assert "Traceback" not in server.stderr() and "unhandled" not in server.stderr()
    texts = [e["text"] for e in journal(server.data, "ftp") if e["kind"] == "event"]
    assert any(t.startswith("tls data channel error: ") for t in texts), texts
