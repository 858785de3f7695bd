"""The SMB2 fast paths: READ/WRITE without sockets (what they answer and what they leave
to impacket, and the write past the end of file impacket drops while saying success); the
lab's CREATE, CLOSE and QUERY_INFO packing against impacket's Structures and as smbprotocol
reads the fields; the checks the lab's open keeps."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import struct
import uuid

import pytest
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import algorithms
from impacket import smb3structs as smb2

from services.smb import dialects, fastpath, packing
from tests.conftest import need
from tests.ftputil import Capture, journal, smbclient

FILE_ID = bytes(range(16))
SIGNER = dialects.Connection(signing_key=b"k" * 16)  # SMB 2.x: HMAC-SHA256


def header(command: int, tree: int = 7, flags: int = 0, next_command: int = 0) -> bytes:
    return fastpath.HEADER.pack(b"\xfeSMB", 64, 1, 0, command, 31, flags, next_command, 42,
                                0xFEFF, tree, 0, b"\0" * 16)


def read(file_id: bytes = FILE_ID, length: int = 5, offset: int = 2, **kwargs) -> bytes:
    body = fastpath.READ_REQUEST.pack(49, 0x50, 0, length, offset, file_id, 0, 0, 0, 0, 0)
    return header(kwargs.pop("command", fastpath.SMB2_READ), **kwargs) + body + b"\0"


def write(data: bytes, offset: int, file_id: bytes = FILE_ID, **kwargs) -> bytes:
    body = fastpath.WRITE_REQUEST.pack(49, 64 + 48, len(data), offset, file_id, 0, 0, 0, 0, 0)
    return header(fastpath.SMB2_WRITE, **kwargs) + body + data


def connection(tmp_path, signed: bool = False, read_only: bool = False) -> dict:
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    return {"Authenticated": True, "Uid": 99, "SignatureEnabled": signed,
            "ConnectedShares": {7: {"read only": "yes" if read_only else "no"}},
            "OpenedFiles": {FILE_ID: {"FileHandle": fd, "LabTree": 7}}, "SigningSessionKey": b"k" * 16}


def test_a_plain_read_is_answered(tmp_path):
    packet, file_id, counter, count = fastpath.answer(connection(tmp_path), read(), SIGNER, 30)
    fields = fastpath.HEADER.unpack_from(packet)
    assert fields[4] == fastpath.SMB2_READ and fields[3] == 0  # command, STATUS_SUCCESS
    # fields[5]: the credits granted (30, as the engine says), not the 31 the request asked
    assert fields[5] == 30 and fields[8] == 42 and fields[10] == 7 and fields[11] == 99
    assert fastpath.READ_RESPONSE.unpack_from(packet, 64)[:4] == (17, 0x50, 0, 5)
    assert packet[0x50:] == b"23456" and file_id == FILE_ID
    assert (counter, count) == (fastpath.READ, 5)


def test_writes_land_where_asked_even_past_the_end(tmp_path):
    conn = connection(tmp_path)
    packet, _, counter, count = fastpath.answer(conn, write(b"ab", 3), SIGNER, 1)
    assert fastpath.WRITE_RESPONSE.unpack_from(packet, 64)[:3] == (17, 0, 2)
    assert (counter, count) == (fastpath.WRITTEN, 2)
    fastpath.answer(conn, write(b"END", 20), SIGNER, 1)  # impacket would drop this one
    assert (tmp_path / "f.bin").read_bytes() == b"012ab56789" + b"\0" * 10 + b"END"


def test_signed_replies_carry_the_hmac(tmp_path):
    packet, *_ = fastpath.answer(connection(tmp_path, signed=True), read(flags=fastpath.SIGNED), SIGNER, 1)
    assert fastpath.HEADER.unpack_from(packet)[6] & fastpath.SIGNED
    unsigned = packet[:48] + b"\0" * 16 + packet[64:]
    assert packet[48:64] == hmac.new(b"k" * 16, unsigned, hashlib.sha256).digest()[:16]


def test_smb3_replies_carry_the_aes_cmac(tmp_path):
    signer = dialects.Connection(dialect=dialects.SMB300, signer=dialects.AES_CMAC,
                                 signing_key=b"s" * 16)
    packet, *_ = fastpath.answer(connection(tmp_path, signed=True), read(flags=fastpath.SIGNED), signer, 1)
    mac = cmac.CMAC(algorithms.AES(b"s" * 16))
    mac.update(packet[:48] + b"\0" * 16 + packet[64:])
    assert packet[48:64] == mac.finalize()


def test_everything_else_goes_to_impacket(tmp_path):
    conn = connection(tmp_path)
    for data in (read(length=65537), read(offset=10), read(file_id=b"\xff" * 16), read(file_id=b"x" * 16),
                 read(tree=8), read(flags=fastpath.RELATED), read(next_command=128),
                 read(command=5), read()[:80], b"\xffSMB" + b"\0" * 200,
                 write(b"abc", 0)[:-1]):  # a WRITE shorter than it says
        assert fastpath.answer(conn, data, SIGNER, 1) is None
    assert fastpath.answer({**conn, "Authenticated": False}, read(), SIGNER, 1) is None
    assert fastpath.answer(connection(tmp_path, read_only=True), write(b"x", 0), SIGNER, 1) is None
    assert (tmp_path / "f.bin").read_bytes() == b"0123456789"


# --- CREATE and CLOSE packed by the lab (services.smb.packing), against impacket's Structures

def impacket_create(name: str = "dir\\f.txt", contexts: bytes = b"") -> bytes:
    request = smb2.SMB2Create()
    request["DesiredAccess"], request["CreateDisposition"] = 0x80000000 | 0x80, 1
    request["CreateOptions"], request["ShareAccess"] = 0x40, 7
    encoded = name.encode("utf-16le")
    request["NameLength"], request["Buffer"] = len(encoded), encoded + contexts
    request["CreateContextsLength"] = len(contexts)
    return request.getData()


def test_a_create_request_reads_as_impacket_reads_it():
    for data in (impacket_create(), impacket_create(""), impacket_create("a", b"ctx" * 8)):
        ours, theirs = packing.CreateRequest(data), smb2.SMB2Create(data)
        for field in (*packing.CREATE_REQUEST_FIELDS, "Buffer"):
            assert ours[field] == theirs[field], field
    renamed = smb2.SMB2Create(packing.CreateRequest(impacket_create(contexts=b"x" * 24)).with_name("a/b"))
    assert renamed["Buffer"][:renamed["NameLength"]] == "a/b".encode("utf-16le")
    assert (renamed["CreateContextsLength"], renamed["NameOffset"]) == (0, 0x78)
    with pytest.raises(packing.Malformed):
        packing.CreateRequest(impacket_create()[:55])


def test_create_and_close_responses_pack_as_ms_smb2_lays_them_out():
    times = {"CreationTime": 1, "LastAccessTime": 2, "LastWriteTime": 3, "ChangeTime": 4,
             "AllocationSize": 4096, "EndOfFile": 5, "FileAttributes": 0x20}
    ours = packing.CreateResponse(CreateAction=1, FileID=FILE_ID, **times).getData()
    theirs = smb2.SMB2Create_Response()
    for field, value in {**times, "CreateAction": 1, "FileID": FILE_ID, "Buffer": b"\0"}.items():
        theirs[field] = value
    assert ours == theirs.getData() and len(ours) == 89  # StructureSize 89: 88 + 1 byte
    asked = packing.CloseResponse(Flags=packing.POSTQUERY_ATTRIB, **times).getData()
    assert smb2.SMB2Close_Response(asked)["EndofFile"] == 5 and asked[2] == packing.POSTQUERY_ATTRIB
    # not asked: Flags and every attribute zero (MS-SMB2 2.2.16)
    assert packing.CloseResponse(Flags=0, **times).getData() == struct.pack("<H", 60) + bytes(58)
    assert packing.output_response(b"abc").getData() == struct.pack("<HHI", 9, 0x48, 3) + b"abc"


def test_attributes_of_files_and_directories(tmp_path):
    (tmp_path / "f").write_bytes(b"12345")
    file, directory = packing.attributes(os.stat(tmp_path / "f")), packing.attributes(os.stat(tmp_path))
    assert (file["FileAttributes"], file["EndOfFile"]) == (0x20, 5)  # ARCHIVE, never NORMAL|ARCHIVE
    assert (directory["FileAttributes"], directory["EndOfFile"], directory["AllocationSize"]) == (0x10, 0, 0)
    assert file["ChangeTime"] == file["LastWriteTime"]


def test_only_plain_opens_are_the_labs(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    file, directory = os.stat(tmp_path / "f"), os.stat(tmp_path)

    def asked(disposition: int, options: int) -> packing.CreateRequest:
        request = packing.CreateRequest(impacket_create())
        request["CreateDisposition"], request["CreateOptions"] = disposition, options
        return request

    assert packing.plain_open(asked(1, 0x40), file) and packing.plain_open(asked(1, 0), directory)
    assert packing.plain_open(asked(1, 0x01), directory)
    for disposition in (0, 2, 3, 4, 5):  # anything that may create or truncate: impacket's
        assert not packing.plain_open(asked(disposition, 0), file)
    assert not packing.plain_open(asked(1, 0x40), directory)  # STATUS_FILE_IS_A_DIRECTORY
    assert not packing.plain_open(asked(1, 0x01), file)  # a file asked as a directory
    os.mkfifo(tmp_path / "fifo")  # never opened by the lab (an open would wait for a writer)
    assert not packing.plain_open(asked(1, 0), os.stat(tmp_path / "fifo"))


def test_open_modes_are_impacket_s():
    assert packing.open_mode(0x80000000, False) == os.O_RDONLY  # GENERIC_READ
    assert packing.open_mode(0x02, False) == os.O_WRONLY
    assert packing.open_mode(0x03, False) == os.O_RDWR
    assert packing.open_mode(0x10000000, False) == os.O_RDWR  # GENERIC_ALL
    assert packing.open_mode(0x10000000 | 0x40000000, True) == os.O_RDONLY  # a read-only tree


# --- the same, from real clients

def smbprotocol_tree(server, share: str = "alice"):
    from smbprotocol.connection import Connection
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    connection = Connection(uuid.uuid4(), "127.0.0.1", server.port("smb", "smb"))
    connection.connect(timeout=15)
    session = Session(connection, "alice", "alice", require_encryption=False)  # for tshark
    session.connect()
    tree = TreeConnect(session, rf"\\127.0.0.1\{share}")
    tree.connect()
    return connection, tree


def opened(tree, name: str, disposition: int, options: int, access: int = 0x80000000):
    from smbprotocol.open import ImpersonationLevel, Open

    handle = Open(tree, name)
    handle.create(ImpersonationLevel.Impersonation, access, 0x80, 7, disposition, options)
    return handle


def test_create_query_info_and_close_fields_seen_by_smbprotocol(lab, tmp_path):
    """MS-SMB2 2.2.14 and 2.2.16 field by field, as a client that reads them sees them, on
    the lab's own open and on impacket's (a new file); tshark finds nothing malformed."""
    pytest.importorskip("smbprotocol")
    need("tshark", "tcpdump")
    server = lab.start(only="smb")
    home = server.data / "homes/alice"
    (home / "dir").mkdir(parents=True)
    (home / "f.bin").write_bytes(b"x" * 5000)
    port = server.port("smb", "smb")
    capture = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))
    connection, tree = smbprotocol_tree(server)
    try:
        status = os.stat(home / "f.bin")
        file = opened(tree, "f.bin", 1, 0x40)  # FILE_OPEN, FILE_NON_DIRECTORY_FILE
        assert (file.create_action, file.file_attributes, file.end_of_file) == (1, 0x20, 5000)
        assert file.allocation_size == status.st_blocks * 512
        assert abs(file.last_write_time.timestamp() - status.st_mtime) < 1e-3
        assert file.read(0, 5000) == b"x" * 5000
        closed = file.close(get_attributes=True)
        assert closed["flags"].get_value() == packing.POSTQUERY_ATTRIB
        assert (closed["end_of_file"].get_value(), closed["file_attributes"].get_value()) == (5000, 0x20)
        directory = opened(tree, "dir", 1, 0x01)  # FILE_DIRECTORY_FILE
        assert (directory.create_action, directory.file_attributes) == (1, 0x10)
        assert (directory.end_of_file, directory.allocation_size) == (0, 0)
        closed = directory.close(get_attributes=False)
        assert closed.pack()[2:] == bytes(58)  # Flags and every attribute zero
        created = opened(tree, "new.txt", 2, 0x40, 0x80000000 | 0x40000000)  # FILE_CREATE
        assert (created.create_action, created.file_attributes, created.end_of_file) == (2, 0x20, 0)
        assert created.close(get_attributes=False).pack()[2:] == bytes(58)
    finally:
        connection.disconnect()
        capture.stop()
    assert capture.count("smb2.cmd == 5 && smb2.flags.response == 1") == 3
    assert capture.bad("smb2") == []
    server.stop()
    texts = [e["text"] for e in journal(server.data, "smb")]
    assert "create alice\\f.bin open -> ok" in texts and "create alice\\new.txt create -> ok" in texts


def test_the_labs_open_keeps_a_read_only_tree_read_only(lab):
    """An anonymous session's `public` is read-only: a plain open asking to write is opened
    for reading (as impacket's), and the WRITE is refused."""
    from impacket.smbconnection import SessionError, SMBConnection

    server = lab.start(only="smb", config="[smb]\nanonymous = true\n")
    public = server.data / "public"
    public.mkdir(parents=True, exist_ok=True)
    (public / "notice.txt").write_bytes(b"read me")
    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"), timeout=15)
    connection.login("", "")
    tree = connection.connectTree("public")
    handle = connection.openFile(tree, "notice.txt", desiredAccess=0xC0000000, creationOption=0x40,
                                 creationDisposition=1)
    assert connection.readFile(tree, handle) == b"read me"
    with pytest.raises(SessionError, match="ACCESS_DENIED"):
        connection.writeFile(tree, handle, b"defaced")
    connection.closeFile(tree, handle)
    connection.close()
    assert (public / "notice.txt").read_bytes() == b"read me"


def test_query_info_records_as_ms_fscc_lays_them_out(tmp_path):
    from services.smb import fileinfo

    (tmp_path / "f").write_bytes(b"12345")
    status = os.stat(tmp_path / "f")
    standard = fileinfo.record(fileinfo.STANDARD, status, "f", 0, delete_pending=True)
    assert fileinfo.STANDARD_RECORD.unpack(standard) == (status.st_blocks * 512, 5, 1, 1, 0, 0)
    full = fileinfo.record(fileinfo.ALL, status, "d\\f", 0x120089)
    assert len(full) == fileinfo.FIXED[fileinfo.ALL] + 8 and full[-8:] == "\\d\\f".encode("utf-16le")
    tail = fileinfo.ALL_TAIL.unpack_from(full, 64)  # after Basic (40) and Standard (24)
    assert tail == (status.st_ino, 0, 0x120089, 0, 0, 0, 8)  # EaSize 0, the access granted


def test_compounded_create_query_info_close_answered_as_a_chain(lab, tmp_path):
    """smbprotocol's stat() sends CREATE, QUERY_INFO and CLOSE as one related chain, signed
    (it checks each reply's signature): the lab answers each, and when the CREATE fails
    the related requests after it fail with its status (MS-SMB2 3.3.5.2.7.2)."""
    smbclient_api = pytest.importorskip("smbclient")  # smbprotocol's high-level client
    need("tshark", "tcpdump")
    server = lab.start(only="smb")
    home = server.data / "homes/alice"
    home.mkdir(parents=True, exist_ok=True)
    (home / "f.bin").write_bytes(b"z" * 1234)
    port = server.port("smb", "smb")
    capture = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))
    smbclient_api.register_session("127.0.0.1", username="alice", password="alice", port=port,
                                   encrypt=False, require_signing=True)
    try:
        assert smbclient_api.stat(r"\\127.0.0.1\alice\f.bin", port=port).st_size == 1234
        with pytest.raises(OSError) as missing:  # (STATUS_NO_SUCH_FILE was no ENOENT to it)
            smbclient_api.stat(r"\\127.0.0.1\alice\missing.bin", port=port)
        assert missing.value.errno == errno.ENOENT
    finally:
        smbclient_api.reset_connection_cache()
        capture.stop()
    reply = "smb2.flags.response == 1 && smb2.flags.chained == 1"
    assert capture.count(f"{reply} && smb2.cmd == 16 && smb2.nt_status == 0") >= 1
    assert capture.count(f"{reply} && smb2.cmd == 6 && smb2.nt_status == 0") >= 1
    not_found = "smb2.nt_status == 0xc0000034"  # OBJECT_NAME_NOT_FOUND, the CREATE's
    assert capture.count(f"{reply} && smb2.cmd == 16 && {not_found}") >= 1
    assert capture.count(f"{reply} && smb2.cmd == 6 && {not_found}") >= 1
    assert capture.bad("smb2") == []


def test_file_system_classes_say_the_share_s_disk(lab):
    """smbclient's `volume` (FileFsVolumeInformation: impacket packed SMB1's layout, and
    smbclient said INVALID_NETWORK_RESPONSE) and `du` (the size classes) as statvfs has it."""
    from services.smb import fileinfo

    need("smbclient")
    server = lab.start(only="smb")
    home = server.data / "homes/alice"
    home.mkdir(parents=True, exist_ok=True)
    result = smbclient(server, "alice", "volume; du")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Volume: |alice| serial number 0x" in result.stdout
    space = os.statvfs(home)
    assert f"{space.f_blocks} blocks of size {space.f_frsize}." in result.stdout
    full = fileinfo.fs_record(fileinfo.FS_FULL_SIZE, space, os.stat(home), "alice")
    assert fileinfo.FULL_SIZE_RECORD.unpack(full) == (space.f_blocks, space.f_bavail, space.f_bfree,
                                                      space.f_frsize // 512, 512)
    attribute = fileinfo.fs_record(fileinfo.FS_ATTRIBUTE, space, os.stat(home), "alice")
    assert attribute[12:] == "NTFS".encode("utf-16le") and len(attribute) == 12 + 8
