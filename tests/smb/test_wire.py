"""SMB requests as a client could craft them (impacket's packets, sent raw): NEGOTIATE
without a common dialect, READ/WRITE beyond what NEGOTIATE announced, messages longer
than the server takes, and a seeded mutation loop over the front door. Also the raw
helpers the other SMB test files use."""

from __future__ import annotations

import random
import socket
import struct
import threading

import pytest

from tests.smb.test_clients import impacket_login

STATUS_SUCCESS = 0
STATUS_INVALID_PARAMETER = 0xC000000D
STATUS_NOT_SUPPORTED = 0xC00000BB


def request(connection, command: int, tree_id: int, body, charge: int = 1):
    """Send one SMB2 request on a logged-in impacket connection; its answer packet.
    `charge`: its CreditCharge (a READ/WRITE over 64 KiB needs one per 64 KiB)."""
    smb3 = connection.getSMBServer()
    packet = smb3.SMB_PACKET()
    packet["Command"], packet["TreeID"], packet["Data"] = command, tree_id, body
    packet["CreditCharge"] = charge
    return smb3.recvSMB(smb3.sendSMB(packet))


def create(connection, tree_id: int, name: str, directory: bool = False, disposition: int = 1,
           access: int | None = None) -> tuple[int, bytes]:
    """CREATE with `name` exactly as given (impacket's client would normalise it):
    (status, file id)."""
    from impacket import smb3structs as smb2

    body = smb2.SMB2Create()
    body["ImpersonationLevel"] = smb2.SMB2_IL_IMPERSONATION
    body["DesiredAccess"] = access if access is not None else (
        smb2.FILE_READ_DATA | smb2.FILE_READ_ATTRIBUTES | smb2.FILE_LIST_DIRECTORY)
    body["ShareAccess"] = smb2.FILE_SHARE_READ | smb2.FILE_SHARE_WRITE | smb2.FILE_SHARE_DELETE
    body["CreateDisposition"] = disposition
    body["CreateOptions"] = smb2.FILE_DIRECTORY_FILE if directory else smb2.FILE_NON_DIRECTORY_FILE
    encoded = name.encode("utf-16le")
    body["NameLength"] = len(encoded)
    body["Buffer"] = encoded or b"\0"
    answer = request(connection, smb2.SMB2_CREATE, tree_id, body)
    if answer["Status"] != STATUS_SUCCESS:
        return answer["Status"], b""
    return STATUS_SUCCESS, smb2.SMB2Create_Response(answer["Data"])["FileID"].getData()


def tree_connect(connection, unc: str) -> tuple[int, int]:
    """TREE_CONNECT with `unc` exactly as given (impacket's client keeps only its last
    name): (status, tree id)."""
    from impacket import smb3structs as smb2

    body = smb2.SMB2TreeConnect()
    body["Buffer"] = unc.encode("utf-16le")
    body["PathLength"] = len(body["Buffer"])
    answer = request(connection, smb2.SMB2_TREE_CONNECT, 0, body)
    if answer["Status"] == STATUS_SUCCESS:  # so that impacket's client lets it be used
        connection.getSMBServer()._Session["TreeConnectTable"][answer["TreeID"]] = {"EncryptData": False}
    return answer["Status"], answer["TreeID"]


def raw_connection(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(15)
    sock.connect(("127.0.0.1", port))
    return sock


def exchange(sock: socket.socket, message: bytes) -> bytes:
    """Send one session message, return the next one's payload (b"" once closed)."""
    sock.sendall(len(message).to_bytes(4, "big") + message)
    header = _read(sock, 4)
    return _read(sock, int.from_bytes(header[1:], "big")) if len(header) == 4 else b""


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        try:
            chunk = sock.recv(count - len(data))
        except ConnectionResetError:
            return b""
        if not chunk:
            break
        data += chunk
    return data


def smb2_negotiate(dialects: list[int], message_id: int = 0) -> bytes:
    header = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, 0, 0, 1, 0, 0, message_id,
                         0xFEFF, 0, 0, b"\0" * 16)
    body = struct.pack("<HHHHI16sQ", 36, len(dialects), 1, 0, 0, b"g" * 16, 0)
    return header + body + struct.pack(f"<{len(dialects)}H", *dialects)


def smb1_negotiate(*dialects: bytes) -> bytes:
    names = b"".join(b"\x02" + d for d in dialects)
    header = struct.pack("<4sBIBHH8sHHHHH", b"\xffSMB", 0x72, 0, 0x18, 0xC853, 0, b"\0" * 8,
                         0, 0, 0x1234, 0, 7)
    return header + struct.pack("<BH", 0, len(names)) + names


def status_of(answer: bytes) -> int:
    return struct.unpack_from("<I", answer, 8)[0]


def test_smb2_negotiate_without_a_common_dialect_is_not_supported_and_the_client_may_retry(lab):
    server = lab.start(only="smb")
    sock = raw_connection(server.port("smb", "smb"))
    answer = exchange(sock, smb2_negotiate([0x0201, 0x0222, 0x0400]))  # none the lab speaks
    assert answer[:4] == b"\xfeSMB" and status_of(answer) == STATUS_NOT_SUPPORTED
    assert status_of(exchange(sock, smb2_negotiate([], 1))) == STATUS_INVALID_PARAMETER
    answer = exchange(sock, smb2_negotiate([0x0202, 0x0210], 2))  # same connection, still served
    assert status_of(answer) == STATUS_SUCCESS and struct.unpack_from("<H", answer, 68)[0] == 0x0210
    sock.close()
    server.stop()
    assert "Traceback" not in server.stderr()


@pytest.mark.parametrize("dialects", [(b"NT LM 0.12\x00",), (b"SMB 2.0025\x00",),
                                      (b"SMB 2.002",), (b"PC NETWORK PROGRAM 1.0\x00", b"SMB 2.")])
def test_smb1_negotiate_without_an_smb2_dialect_gets_no_dialect_then_the_end(lab, dialects):
    """impacket printed a traceback for these (its own SMB2-in-SMB1 check raises), then
    answered with its SMB1 code, whose login checks no password."""
    server = lab.start(only="smb")
    sock = raw_connection(server.port("smb", "smb"))
    answer = exchange(sock, smb1_negotiate(*dialects))
    assert answer[:5] == b"\xffSMB\x72" and answer[32:35] == b"\x01\xff\xff"  # DialectIndex 0xFFFF
    assert _read(sock, 1) == b""  # then closed
    sock.close()
    assert impacket_login(server).getDialect() == 0x0311
    server.stop()
    assert "Traceback" not in server.stderr()


def _read_request(tree_id: int, file_id: bytes, length: int):
    from impacket import smb3structs as smb2

    body = smb2.SMB2Read()
    body["Padding"], body["FileID"], body["Length"], body["Offset"] = 0x50, file_id, length, 0
    return body


def _write_request(file_id: bytes, data: bytes):
    from impacket import smb3structs as smb2

    body = smb2.SMB2Write()
    body["FileID"], body["Length"], body["Offset"], body["Buffer"] = file_id, len(data), 0, data
    body["WriteChannelInfoOffset"] = 0
    return body


@pytest.mark.parametrize("dialect,max_io", [(0x0202, 65536), (0x0210, 8 << 20)])
def test_read_and_write_beyond_the_announced_sizes_are_invalid_parameter(lab, dialect, max_io):
    """MaxReadSize = MaxWriteSize: 64 KiB for 2.0.2 (one credit each), 8 MiB from 2.1 on.
    (2.1, not 3.x: impacket's client signs with AES-CMAC in pure Python, minutes for a
    few 8 MiB writes.)"""
    from impacket import smb3structs as smb2

    server = lab.start(only="smb")
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    (server.data / "homes/alice/big.bin").write_bytes(b"b" * (3 * max_io))
    connection = impacket_login(server, preferredDialect=dialect)
    tree = connection.connectTree("alice")
    status, fid = create(connection, tree, "big.bin",
                         access=smb2.FILE_READ_DATA | smb2.FILE_WRITE_DATA)
    assert status == STATUS_SUCCESS
    # impacket's client keeps at most 1 MiB of what NEGOTIATE announced; the raw requests
    # below go up to the server's own limit
    assert connection.getSMBServer()._Connection["MaxReadSize"] == min(max_io, 1 << 20)
    charge = (max_io + 1 + 65535) // 65536  # enough for max_io + 1 (2.0.2 ignores it)
    for length in (max_io + 1, 16 << 20, 0xFFFFFFFF):
        answer = request(connection, smb2.SMB2_READ, tree, _read_request(tree, fid, length), charge)
        assert answer["Status"] == STATUS_INVALID_PARAMETER, hex(answer["Status"])
    if dialect != 0x0202:  # the CreditCharge must pay for the length (MS-SMB2 3.3.5.2.5)
        answer = request(connection, smb2.SMB2_READ, tree, _read_request(tree, fid, max_io), 1)
        assert answer["Status"] == STATUS_INVALID_PARAMETER, hex(answer["Status"])
    answer = request(connection, smb2.SMB2_READ, tree, _read_request(tree, fid, max_io),
                     max_io // 65536)
    assert answer["Status"] == STATUS_SUCCESS
    assert len(smb2.SMB2Read_Response(answer["Data"])["Buffer"]) == max_io
    answer = request(connection, smb2.SMB2_WRITE, tree, _write_request(fid, b"w" * (max_io + 1)),
                     charge)
    assert answer["Status"] == STATUS_INVALID_PARAMETER, hex(answer["Status"])
    answer = request(connection, smb2.SMB2_WRITE, tree, _write_request(fid, b"w" * max_io),
                     max_io // 65536)
    assert answer["Status"] == STATUS_SUCCESS
    connection.close()
    assert (server.data / "homes/alice/big.bin").read_bytes() == b"w" * max_io + b"b" * (2 * max_io)


def test_a_message_longer_than_the_server_takes_ends_that_connection_unread(lab):
    server = lab.start(only="smb")
    sock = raw_connection(server.port("smb", "smb"))
    sock.sendall(b"\x00\xff\xff\xff" + b"\xfeSMB" + b"\0" * 60)  # announces 16 MiB, sends 64 bytes
    assert _read(sock, 1) == b""  # closed without waiting for the rest
    sock.close()
    impacket_login(server).close()
    server.stop()
    assert "Traceback" not in server.stderr()


def _mutate(rng: random.Random, message: bytes) -> bytes:
    data = bytearray(message)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(5)
        at = rng.randrange(len(data)) if data else 0
        if kind == 0 and data:  # flip bits
            data[at] ^= 1 << rng.randrange(8)
        elif kind == 1:  # an extreme 16- or 32-bit value (lengths, offsets, counts)
            width = rng.choice((2, 4))
            value = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF)) & ((1 << 8 * width) - 1)
            data[at:at + width] = value.to_bytes(width, "little")
        elif kind == 2:  # truncate
            del data[max(64, at):]
        elif kind == 3:  # insert junk
            data[at:at] = rng.randbytes(rng.randint(1, 32))
        else:  # a random byte
            if data:
                data[at] = rng.randrange(256)
    return bytes(data)


def _seeds(connection, tree: int, fid: bytes) -> list[bytes]:
    """The front door's requests as a real client sends them, whole SMB2 messages."""
    from impacket import ntlm
    from impacket import smb3structs as smb2
    from impacket.spnego import SPNEGO_NegTokenInit, TypesMech

    def message(command: int, body, tree_id: int = tree) -> bytes:
        packet = smb2.SMB2Packet()
        packet["Command"], packet["TreeID"], packet["Data"] = command, tree_id, body
        packet["SessionID"] = connection.getSMBServer()._Session["SessionID"]
        packet["CreditCharge"], packet["CreditRequestResponse"] = 1, 1
        return packet.getData()

    setup = smb2.SMB2SessionSetup()
    blob = SPNEGO_NegTokenInit()
    blob["MechTypes"] = [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]
    blob["MechToken"] = ntlm.getNTLMSSPType1("", "", True).getData()
    setup["SecurityBufferLength"] = len(blob.getData())
    setup["Buffer"] = blob.getData()
    create_body = smb2.SMB2Create()
    create_body["DesiredAccess"], create_body["CreateDisposition"] = smb2.FILE_READ_DATA, 1
    create_body["NameLength"], create_body["Buffer"] = 8, "f.txt".encode("utf-16le")[:8]
    return [smb2_negotiate([0x0202, 0x0210]), message(smb2.SMB2_SESSION_SETUP, setup, 0),
            message(smb2.SMB2_CREATE, create_body), message(smb2.SMB2_READ, _read_request(tree, fid, 100)),
            smb1_negotiate(b"NT LM 0.12\x00", b"SMB 2.002\x00", b"SMB 2.???\x00")]


def test_fuzzed_front_door_no_traceback_and_still_serving(lab):
    """A seeded mutation loop of NEGOTIATE, SESSION_SETUP, CREATE and READ (and the SMB1
    NEGOTIATE that leads to SMB2), sent on a logged-in connection (a new one whenever the
    server ends one): no traceback on stderr, and the server serves afterwards."""
    server = lab.start(only="smb")
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    (server.data / "homes/alice/f.txt").write_bytes(b"fuzz me")
    rng = random.Random(0x5EB)

    def session():
        connection = impacket_login(server)
        tree = connection.connectTree("alice")
        return connection, tree, create(connection, tree, "f.txt")[1]

    connection, tree, fid = session()
    seeds, sent, dropped = _seeds(connection, tree, fid), 0, 0
    for number in range(400):
        sock = connection.getSMBServer().get_socket()
        answer = exchange(sock, _mutate(rng, rng.choice(seeds)))
        sent += 1
        dropped += not answer
        if not answer or number % 50 == 49:  # ended, or maybe logged out by a mutated setup
            sock.close()
            connection, tree, fid = session()
            seeds = _seeds(connection, tree, fid)
    print(f"{sent} mutated requests, {dropped} connections ended by the server")
    connection.getSMBServer().get_socket().close()
    check = impacket_login(server)
    assert [f.get_longname() for f in check.listPath("alice", "f.txt")] == ["f.txt"]
    check.close()
    assert server.check().returncode == 0
    server.stop()
    assert "Traceback" not in server.stderr()


# --- services.smb.wire's reader and writer, over a socket pair

def message(payload: bytes) -> bytes:
    return b"\x00" + len(payload).to_bytes(3, "big") + payload


def test_the_reader_takes_messages_however_they_arrive():
    from services.smb import wire

    ours, theirs = socket.socketpair()
    with ours, theirs:
        wire.blocking_with_timeout(ours, 5)
        reader = wire.Reader(ours)
        big = bytes(range(256)) * 4096  # 1 MiB: more than one recv
        theirs.sendall(message(b"one") + message(b"two") + message(big)[:1000])
        assert reader.receive(1 << 21) == (0, b"one")
        assert reader.receive(1 << 21) == (0, b"two")  # from the same recv
        rest = threading.Thread(target=theirs.sendall, args=(message(big)[1000:] + b"\x85\x00",))
        rest.start()  # (then half a keep-alive header)
        assert reader.receive(1 << 21) == (0, big)
        rest.join(10)
        theirs.sendall(b"\x00\x00")
        assert reader.receive(1 << 21) == (0x85, b"")
        theirs.sendall(message(b"x" * 100))
        with pytest.raises(wire.TooLong):
            reader.receive(99)
        theirs.close()
        with pytest.raises(ConnectionResetError):
            wire.Reader(ours).receive(100)


def test_silence_is_a_timeout_and_the_writer_sends_everything():
    from services.smb import wire

    ours, theirs = socket.socketpair()
    with ours, theirs:
        wire.blocking_with_timeout(ours, 1)
        with pytest.raises(TimeoutError):
            wire.Reader(ours).receive(100)  # SO_RCVTIMEO, as Python's own timeout said
        packet = bytearray(b"y" * 300_000)  # more than the socket buffer: sent in parts
        theirs.settimeout(5)
        received = bytearray()

        def drain() -> None:
            while len(received) < 4 + len(packet):
                received.extend(theirs.recv(1 << 16))

        reading = threading.Thread(target=drain)
        reading.start()
        wire.send(ours, packet)
        reading.join(10)
        assert bytes(received) == message(bytes(packet))
