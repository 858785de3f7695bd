"""SMB isolation: alice reaches nothing of bob's share and nothing of the data directory
(lab.db, lab.db-wal, tls/ca.key, journal/) by any spelling, through any request that takes
a name or a file id, with the server's working directory set to the data directory as in
the container (WORKDIR /var/lib/protolab), where IPC$ used to hand out lab.db."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import conftest
from tests.conftest import need
from tests.ftputil import smbclient
from tests.smb.test_clients import impacket_login
from tests.smb.test_wire import STATUS_SUCCESS, create, request, tree_connect

SECRET = b"bob's secret\n"
OBJECT_NAME_INVALID, OBJECT_NAME_NOT_FOUND, FILE_CLOSED = 0xC0000033, 0xC0000034, 0xC0000128


def start_in_data_dir(lab, **kwargs):
    """A lab whose server process runs in its data directory, as the container's does."""
    data = lab.tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    popen = subprocess.Popen

    def in_data(*args, **options):
        return popen(*args, **{**options, "cwd": data})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(conftest.subprocess, "Popen", in_data)
        server = lab.start(only="smb", data=data, **kwargs)
    assert os.readlink(f"/proc/{server.process.pid}/cwd") == str(data)
    homes = data / "homes"
    (homes / "bob").mkdir(parents=True, exist_ok=True)
    (homes / "bob/secret.txt").write_bytes(SECRET)
    (homes / "alice").mkdir(parents=True, exist_ok=True)
    # impacket's own jail compares paths character by character (os.path.commonprefix):
    # homes/alice2 "is inside" homes/alice to it
    (homes / "alice2").mkdir(exist_ok=True)
    (homes / "alice2/secret.txt").write_bytes(SECRET)
    (data / "tls").mkdir(exist_ok=True)
    if not (data / "tls/ca.key").exists():
        (data / "tls/ca.key").write_text("stand-in for the lab CA's key\n")
    return server


def test_ipc_serves_no_files_whatever_the_working_directory(lab, tmp_path):
    need("smbclient")
    server = start_in_data_dir(lab)
    assert (server.data / "lab.db").exists()
    os.chdir(tmp_path)
    for name in ("lab.db", "lab.db-wal", "tls\\ca.key", "homes\\bob\\secret.txt", "srvsvc"):
        result = smbclient(server, "IPC$", f"get {name} stolen")
        assert "NT_STATUS_OBJECT_NAME_NOT_FOUND" in result.stdout + result.stderr, result.stdout
        assert not (tmp_path / "stolen").exists()
    listing = smbclient(server, "IPC$", "ls")
    assert "lab.db" not in listing.stdout and "homes" not in listing.stdout
    connection = impacket_login(server)
    tree = connection.connectTree("IPC$")
    for name in ("lab.db", "", ".", "journal", "/etc/passwd", "\\srvsvc", "srvsvc", "wkssvc"):
        assert create(connection, tree, name)[0] == OBJECT_NAME_NOT_FOUND, name
        assert create(connection, tree, name, directory=True)[0] == OBJECT_NAME_NOT_FOUND, name
    connection.close()


# Names relative to alice's share root (DATA/homes/alice) that lead to bob's file or to the
# data directory's own files, in every spelling a client can send.
OUT_OF_THE_SHARE = [
    "../bob/secret.txt", "..\\bob\\secret.txt", "\\..\\bob\\secret.txt", "/../bob/secret.txt",
    "a\\..\\..\\bob\\secret.txt", "public_html/../../bob/secret.txt", "..\\\\bob\\secret.txt",
    "../../lab.db", "..\\..\\lab.db", "..\\..\\lab.db-wal", "../../tls/ca.key", "../../journal",
    "\uff0e\uff0e/bob/secret.txt", "..\uff0fbob\uff0fsecret.txt", "\uff0e\uff0e\\\uff0e\uff0e\\lab.db",
    "..\uff3cbob\uff3csecret.txt", "... /bob/secret.txt", ".. /bob/secret.txt",
    "linked-bob/secret.txt", "linked-data/lab.db", "linked-data", "linked-lab.db",
    "secret.txt:$DATA", "x\x00/../../bob/secret.txt", "../alice2/secret.txt", "..\\alice2",
]


def _absolute(server) -> list[str]:
    """Absolute spellings of the same files ("//x" is "/x" to impacket's folding)."""
    names = []
    for path in (server.data / "homes/bob/secret.txt", server.data / "lab.db"):
        names += [str(path), "/" + str(path), "\\" + str(path).replace("/", "\\"),
                  "\\\\?\\" + str(path).replace("/", "\\"), "C:" + str(path)]
    return names


def _links(server) -> None:
    """Links alice could have made with another protocol (or a teacher's mistake)."""
    home = server.data / "homes/alice"
    (home / "linked-bob").symlink_to(server.data / "homes/bob")
    (home / "linked-data").symlink_to(server.data)
    (home / "linked-lab.db").symlink_to(server.data / "lab.db")


def test_no_create_name_leaves_the_share(lab):
    server = start_in_data_dir(lab)
    _links(server)
    connection = impacket_login(server)
    tree = connection.connectTree("alice")
    for name in OUT_OF_THE_SHARE + _absolute(server):
        for directory in (False, True):
            status, _ = create(connection, tree, name, directory=directory)
            assert status != STATUS_SUCCESS, (name, directory)
    for name in OUT_OF_THE_SHARE[:12]:  # creating files there neither
        assert create(connection, tree, name.replace("secret.txt", "new.txt"), disposition=2)[0] \
            != STATUS_SUCCESS, name
    assert not (server.data / "homes/bob/new.txt").exists()
    assert not list(server.data.glob("new.txt")) and not list(server.data.glob("*/new.txt"))
    # what is alice's still works, spelled in every harmless way
    (server.data / "homes/alice/mine.txt").write_bytes(b"mine")
    for name in ("mine.txt", "\\mine.txt", "public_html\\..\\mine.txt", "./mine.txt"):
        assert create(connection, tree, name)[0] == STATUS_SUCCESS, name
    connection.close()


SEARCH_PATTERNS = ["../bob/*", "..\\bob\\*", "../../*", "..\\..\\*", "../../../../etc/*", "..",
                   "..\\*", "/etc/*", "\\*", "*/../../*", "\uff0e\uff0e", "\uff0e\uff0e\uff0f*",
                   "..\uff3c*", "a:b", "...", "linked-data/*", "../alice2/*"]


def test_search_patterns_stay_in_the_open_directory(lab):
    from impacket import smb3structs as smb2
    from impacket.smb3 import SessionError

    server = start_in_data_dir(lab)
    _links(server)
    (server.data / "homes/alice/mine.txt").write_bytes(b"mine")
    connection = impacket_login(server)
    smb3 = connection.getSMBServer()
    tree = connection.connectTree("alice")
    root = smb3.create(tree, "", smb2.FILE_LIST_DIRECTORY | smb2.FILE_READ_ATTRIBUTES,
                       smb2.FILE_SHARE_READ, smb2.FILE_DIRECTORY_FILE, smb2.FILE_OPEN, 0)
    for pattern in SEARCH_PATTERNS:
        with pytest.raises(SessionError) as refused:
            smb3.queryDirectory(tree, root, pattern, informationClass=smb2.FILE_DIRECTORY_INFORMATION,
                                enumRestart=True)
        assert refused.value.get_error_code() == OBJECT_NAME_INVALID, pattern
    listing = smb3.queryDirectory(tree, root, "*", informationClass=smb2.FILENAMES_INFORMATION,
                                  enumRestart=True)
    assert b"m\x00i\x00n\x00e\x00" in listing and b"s\x00e\x00c\x00r\x00e\x00t" not in listing
    connection.close()
    server.stop()
    assert "Traceback" not in server.stderr()


def _set_info(connection, tree: int, fid: bytes, info_class: int, blob: bytes) -> int:
    from impacket import smb3structs as smb2

    body = smb2.SMB2SetInfo()
    body["InfoType"], body["FileInfoClass"] = smb2.SMB2_0_INFO_FILE, info_class
    body["FileID"], body["BufferLength"], body["Buffer"] = fid, len(blob), blob
    body["BufferOffset"] = 0x60
    return request(connection, smb2.SMB2_SET_INFO, tree, body)["Status"]


def _rename_info(target: str) -> bytes:
    from impacket import smb3structs as smb2

    info = smb2.FILE_RENAME_INFORMATION_TYPE_2()
    info["ReplaceIfExists"], info["RootDirectory"] = 1, b"\0" * 8
    info["FileName"] = target.encode("utf-16le")
    info["FileNameLength"] = len(info["FileName"])
    return info.getData()


def test_renames_and_links_stay_in_the_share(lab):
    """SET_INFO rename targets go through the lab's rule; FileLinkInformation (hard links)
    is not supported; nothing leaves alice's share, nothing of bob's is replaced."""
    from impacket import smb3structs as smb2

    server = start_in_data_dir(lab)
    home = server.data / "homes/alice"
    (home / "move.txt").write_bytes(b"alice's")
    connection = impacket_login(server)
    tree = connection.connectTree("alice")
    status, fid = create(connection, tree, "move.txt",
                         access=smb2.DELETE | smb2.FILE_READ_DATA | smb2.FILE_WRITE_DATA)
    assert status == STATUS_SUCCESS
    for target in ["../bob/secret.txt", "..\\bob\\secret.txt", "../../lab.db", "/" + str(server.data / "lab.db"),
                   "\\\\" + str(server.data / "x").replace("/", "\\"), "\uff0e\uff0e\\bob\\x",
                   "../../journal/x", "a:b", "..\\..\\tls\\ca.key"]:
        # refused by the path rule, or (absolute spellings) a missing directory in alice's share
        assert _set_info(connection, tree, fid, smb2.SMB2_FILE_RENAME_INFO, _rename_info(target)) \
            in (OBJECT_NAME_INVALID, 0xC0000022), target
        assert (home / "move.txt").exists()
    link = b"\x01" + b"\0" * 7 + b"\0" * 8 + struct_len("../bob/hard.txt") + "../bob/hard.txt".encode("utf-16le")
    assert _set_info(connection, tree, fid, 11, link) != STATUS_SUCCESS  # FileLinkInformation
    assert (server.data / "homes/bob/secret.txt").read_bytes() == SECRET
    assert (server.data / "lab.db").read_bytes()[:16] == b"SQLite format 3\x00"
    assert not (server.data / "homes/bob/hard.txt").exists()
    assert _set_info(connection, tree, fid, smb2.SMB2_FILE_RENAME_INFO, _rename_info("sub\\..\\moved.txt")) \
        == STATUS_SUCCESS
    connection.close()
    assert (home / "moved.txt").read_bytes() == b"alice's" and not (home / "move.txt").exists()


def struct_len(name: str) -> bytes:
    return len(name.encode("utf-16le")).to_bytes(4, "little")


def test_a_file_id_works_only_in_the_tree_that_opened_it(lab):
    """impacket keeps open files per connection, not per tree: a file opened in one tree
    was readable, writable and renameable through another (a read-only one, IPC$)."""
    from impacket import smb3structs as smb2

    from tests.smb.test_wire import _read_request, _write_request

    server = start_in_data_dir(lab, config="[smb]\nanonymous = true\n")
    (server.data / "homes/alice/f.txt").write_bytes(b"alice's file")
    connection = impacket_login(server)
    home, public, ipc = (connection.connectTree(s) for s in ("alice", "public", "IPC$"))
    status, fid = create(connection, home, "f.txt", access=smb2.FILE_READ_DATA | smb2.FILE_WRITE_DATA)
    assert status == STATUS_SUCCESS
    for other in (public, ipc):
        for command, body in ((smb2.SMB2_READ, _read_request(other, fid, 5)),
                              (smb2.SMB2_WRITE, _write_request(fid, b"x"))):
            assert request(connection, command, other, body)["Status"] == FILE_CLOSED
        assert _set_info(connection, other, fid, smb2.SMB2_FILE_RENAME_INFO, _rename_info("g.txt")) \
            == FILE_CLOSED
    assert request(connection, smb2.SMB2_READ, home, _read_request(home, fid, 5))["Status"] == STATUS_SUCCESS
    connection.close()
    assert (server.data / "homes/alice/f.txt").read_bytes() == b"alice's file"


SHARE_NAMES = ["bob", "BOB", "\\\\files\\alice\\..\\bob", "alice/../bob", "\\\\files\\bob\\",
               "//files/bob", "..\\bob", "bob\x00", "\uff42\uff4f\uff42", "..", "\\\\files\\..",
               "homes\\bob", "\\\\files\\public\\..\\..\\bob", "\\\\files\\bob/", "../homes/bob"]


def test_share_names_with_dots_and_separators_reach_nothing_of_bob(lab):
    server = start_in_data_dir(lab)
    connection = impacket_login(server)
    for unc in SHARE_NAMES:
        status, tree = tree_connect(connection, unc)
        if status != STATUS_SUCCESS:
            assert status in (0xC0000022, 0xC00000CC), (unc, hex(status))  # ACCESS_DENIED, BAD_NETWORK_NAME
        else:  # a spelling that names alice's share or public is fine; it must not be bob's
            assert create(connection, tree, "secret.txt")[0] != STATUS_SUCCESS, unc
    connection.close()
    server.stop()
    assert "Traceback" not in server.stderr()
