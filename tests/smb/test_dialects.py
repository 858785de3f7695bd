"""SMB 2.1 and 3.x (services.smb.dialects): smbclient at every dialect, signing and
encryption; smbprotocol as Windows behaves (signing required, encryption asked); the
traffic as tshark dissects it."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import need
from tests.ftputil import Capture, journal, smbclient

DIALECTS = {"SMB2_02": "SMB 2.0.2", "SMB2_10": "SMB 2.1", "SMB3_00": "SMB 3.0",
            "SMB3_02": "SMB 3.0.2", "SMB3_11": "SMB 3.1.1"}
SEALED = "smb2.header.transform.msg_size"  # a message in a transform header (tshark)
SECRET = b"the plaintext a capture must not show " * 64


def negotiated(server) -> list[str]:
    return [e["text"].removeprefix("negotiate ") for e in journal(server.data, "smb")
            if e["text"].startswith("negotiate ")]


def capture_of(tmp_path, server) -> Capture:
    port = server.port("smb", "smb")
    return Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))


@pytest.mark.parametrize("protocol", list(DIALECTS))
def test_smbclient_at_every_dialect_puts_and_gets(lab, tmp_path, protocol):
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb")
    (tmp_path / "up.bin").write_bytes(SECRET)
    os.chdir(tmp_path)
    capture = capture_of(tmp_path, server)
    result = smbclient(server, "alice", "put up.bin; get up.bin down.bin; ls", "alice", None,
                       "-m", protocol, "--client-protection=sign")
    capture.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "down.bin").read_bytes() == SECRET
    dialect = int(DIALECTS[protocol][4:].replace(".", "").ljust(3, "0"), 16)
    assert capture.count(f"smb2.cmd == 0 && smb2.flags.response == 1 && smb2.dialect == 0x{dialect:04x}") == 1
    assert capture.count("smb2.flags.signature == 1 && smb2.cmd == 8") >= 1  # signed READs
    assert capture.bad("smb2") == []
    server.stop()
    assert negotiated(server)[-1].startswith(DIALECTS[protocol])


def test_smbclient_lists_shares_at_every_dialect_signed_and_sealed(lab, tmp_path):
    """smbclient -L (srvsvc over IPC$) at each dialect, signed, and sealed where the dialect
    can encrypt (3.x); each capture dissects cleanly."""
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    runs = [(protocol, "sign") for protocol in DIALECTS]
    runs += [(protocol, "encrypt") for protocol in DIALECTS if protocol.startswith("SMB3")]
    for protocol, protection in runs:
        capture = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))
        listed = subprocess.run(
            ["smbclient", "-L", "//127.0.0.1", "-p", str(port), "-U", "alice%alice", "-g",
             "-m", protocol, f"--client-protection={protection}"],
            capture_output=True, text=True, timeout=60)
        capture.stop()
        assert listed.returncode == 0, (protocol, protection, listed.stdout + listed.stderr)
        shares = {line.split("|")[1] for line in listed.stdout.splitlines() if line.count("|") == 2}
        assert shares == {"alice", "public", "IPC$"}, (protocol, protection)
        if protection == "sign":
            assert capture.count("smb2.flags.signature == 1 && smb2.cmd == 11") >= 2  # signed IOCTLs (RPC)
        else:
            assert capture.count("smb2.cmd == 11") == 0 and capture.count(SEALED) >= 4
        assert capture.bad("smb2 || dcerpc || srvsvc") == [], (protocol, protection)
        capture.file.unlink()


def test_smb311_negotiate_contexts_and_signing_algorithm(lab, tmp_path):
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb")
    capture = capture_of(tmp_path, server)
    for algorithm in ("AES-128-GMAC", "AES-128-CMAC"):
        result = smbclient(server, "alice", "ls", "alice", None, "-m", "SMB3_11",
                           "--client-protection=sign",
                           f"--option=client smb3 signing algorithms={algorithm}")
        assert result.returncode == 0, result.stdout + result.stderr
    capture.stop()
    response = "smb2.cmd == 0 && smb2.flags.response == 1"
    assert capture.count(f"{response} && smb2.negotiate_context.type == 1") == 2  # preauth
    assert capture.count(f"{response} && smb2.negotiate_context.hash_algorithm == 1") == 2  # SHA-512
    assert capture.count(f"{response} && smb2.negotiate_context.signing_id == 2") == 1  # GMAC
    assert capture.count(f"{response} && smb2.negotiate_context.signing_id == 1") == 1  # CMAC
    assert capture.bad("smb2") == []
    server.stop()
    assert [n.split(", ")[2] for n in negotiated(server)] == ["signing AES-128-GMAC",
                                                              "signing AES-128-CMAC"]


@pytest.mark.parametrize("protocol", ["SMB3_00", "SMB3_02", "SMB3_11"])
def test_encryption_when_the_client_asks(lab, tmp_path, protocol):
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb")
    (tmp_path / "up.bin").write_bytes(SECRET)
    os.chdir(tmp_path)
    capture = capture_of(tmp_path, server)
    result = smbclient(server, "alice", "put up.bin; get up.bin down.bin", "alice", None,
                       "-m", protocol, "--client-protection=encrypt")
    capture.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "down.bin").read_bytes() == SECRET
    assert capture.count("smb2.cmd == 8") == 0 and capture.count(SEALED) >= 4
    assert SECRET[:38] not in capture.file.read_bytes()
    assert capture.bad("smb2") == []


def test_encrypt_setting_seals_every_session_and_refuses_clear(lab, tmp_path):
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb", config="[smb]\nencrypt = true\n")
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    (server.data / "homes/alice/secret.bin").write_bytes(SECRET)
    os.chdir(tmp_path)
    capture = capture_of(tmp_path, server)
    sealed = smbclient(server, "alice", "get secret.bin got.bin", "alice", None, "-m", "SMB3")
    capture.stop()
    assert sealed.returncode == 0, sealed.stdout + sealed.stderr
    assert (tmp_path / "got.bin").read_bytes() == SECRET
    assert SECRET[:38] not in capture.file.read_bytes() and capture.count(SEALED) >= 4
    # SMB 2.1 cannot encrypt: refused at login
    clear = smbclient(server, "alice", "ls", "alice", None, "-m", "SMB2_10")
    assert "NT_STATUS_ACCESS_DENIED" in clear.stdout + clear.stderr
    server.stop()
    assert any("refused: [smb] encrypt = true, and SMB 2.1" in e["text"]
               for e in journal(server.data, "smb"))


def test_keylog_lets_tshark_decrypt_the_read(lab, tmp_path):
    need("smbclient", "tshark", "tcpdump")
    keylog = tmp_path / "smb2_seskey_list"
    server = lab.start(only="smb", config=f'[smb]\nkeylog = "{keylog}"\n')
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    (server.data / "homes/alice/secret.bin").write_bytes(SECRET)
    os.chdir(tmp_path)
    capture = capture_of(tmp_path, server)
    result = smbclient(server, "alice", "get secret.bin got.bin", "alice", None,
                       "--client-protection=encrypt")
    capture.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert SECRET[:38] not in capture.file.read_bytes()
    (line,) = keylog.read_text().splitlines()
    assert [len(field) for field in line.split(",")] == [16, 32, 32, 32]
    port = server.port("smb", "smb")
    dump = subprocess.run(
        ["tshark", "-r", str(capture.file), "-d", f"tcp.port=={port},nbss", "-o",
         f"uat:smb2_seskey_list:{line}", "-x", "-Y", "smb2.cmd == 8 && smb2.flags.response == 1"],
        capture_output=True, text=True, timeout=120).stdout
    assert "Decrypted SMB3" in dump and "the plaintext a" in dump


def test_smbprotocol_requires_signing_and_encrypts_like_windows(lab):
    smbclient_api = pytest.importorskip("smbclient")  # smbprotocol's high-level client
    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    smbclient_api.register_session("127.0.0.1", username="alice", password="alice", port=port,
                                   encrypt=True, require_signing=True)
    try:
        path = r"\\127.0.0.1\alice\from-smbprotocol.txt"
        with smbclient_api.open_file(path, mode="wb", port=port) as handle:  # CREATE: created
            handle.write(SECRET)
        with smbclient_api.open_file(path, mode="rb", port=port) as handle:
            assert handle.read() == SECRET
        with smbclient_api.open_file(path, mode="wb", port=port) as handle:  # overwritten
            handle.write(b"again")
        assert "from-smbprotocol.txt" in smbclient_api.listdir(r"\\127.0.0.1\alice", port=port)
    finally:
        smbclient_api.reset_connection_cache()
    assert (server.data / "homes/alice/from-smbprotocol.txt").read_bytes() == b"again"
    server.stop()
    assert negotiated(server)[-1].startswith("SMB 3.1.1")


def test_impacket_client_at_its_best_dialect(lab):
    from impacket.smbconnection import SMBConnection

    server = lab.start(only="smb")
    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"), timeout=15)
    connection.login("alice", "alice")
    assert connection.getDialect() == 0x0311
    assert [s["shi1_netname"][:-1] for s in connection.listShares()] == ["alice", "public", "IPC$"]
    connection.close()


def kernel_cifs_missing() -> str | None:
    """Why the Linux kernel's SMB client cannot be tried here, or None."""
    if os.geteuid() != 0:
        return "mount needs root"
    filesystems = Path("/proc/filesystems")
    if "cifs" in filesystems.read_text().split():
        return None
    if not Path("/lib/modules", os.uname().release).is_dir():
        return "this kernel has no cifs (not in /proc/filesystems) and no modules to load"
    subprocess.run(["modprobe", "cifs"], capture_output=True, timeout=60)
    return None if "cifs" in filesystems.read_text().split() else "modprobe cifs failed"


def test_linux_kernel_client_mounts_at_311_sealed(lab, tmp_path):
    """mount -t cifs vers=3.1.1,seal: the kernel's client (no mount.cifs helper needed: the
    address is given as ip=) writes and reads through the mount, all of it sealed."""
    missing = kernel_cifs_missing()
    if missing:
        pytest.skip(missing)
    need("mount", "umount", "tshark", "tcpdump")
    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    capture = capture_of(tmp_path, server)
    options = (f"ip=127.0.0.1,port={port},username=alice,password=alice,vers=3.1.1,seal,"
               "cache=none,noserverino")
    try:
        mounted = subprocess.run(["mount", "-t", "cifs", "//127.0.0.1/alice", str(mountpoint),
                                  "-o", options], capture_output=True, text=True, timeout=60)
        assert mounted.returncode == 0, mounted.stderr
        (mountpoint / "from-kernel.bin").write_bytes(SECRET)
        assert (mountpoint / "from-kernel.bin").read_bytes() == SECRET
        assert "from-kernel.bin" in os.listdir(mountpoint)
    finally:
        unmounted = subprocess.run(["umount", str(mountpoint)], capture_output=True, timeout=60)
        if unmounted.returncode:
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, timeout=60)
        capture.stop()
    assert (server.data / "homes/alice/from-kernel.bin").read_bytes() == SECRET
    assert SECRET[:38] not in capture.file.read_bytes() and capture.count(SEALED) >= 4
    assert capture.bad("smb2") == []
    server.stop()
    assert negotiated(server)[-1].startswith("SMB 3.1.1")


def test_impacket_client_signs_and_seals_when_the_server_asks(lab, tmp_path):
    """impacket's client at 3.1.1 with `[smb] encrypt = true` (it seals when the session
    says so) and signing required: it lists, writes and reads; the capture shows no SMB2 in
    clear after the login."""
    from impacket.smbconnection import SMBConnection

    need("tshark", "tcpdump")
    server = lab.start(only="smb", config="[smb]\nencrypt = true\nsigning_required = true\n")
    capture = capture_of(tmp_path, server)
    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"), timeout=15)
    connection.login("alice", "alice")
    assert connection.getDialect() == 0x0311 and connection.isSigningRequired()
    assert [s["shi1_netname"][:-1] for s in connection.listShares()] == ["alice", "public", "IPC$"]
    connection.putFile("alice", "sealed.bin", io.BytesIO(SECRET).read)
    got = io.BytesIO()
    connection.getFile("alice", "sealed.bin", got.write)
    connection.close()
    capture.stop()
    assert got.getvalue() == SECRET
    assert SECRET[:38] not in capture.file.read_bytes() and capture.count(SEALED) >= 8
    assert capture.count("smb2.cmd == 5 || smb2.cmd == 8 || smb2.cmd == 9") == 0
    assert capture.bad("smb2") == []
