"""Oplocks and leases: the open table's decisions (services.smb.oplocks, sans-IO), then real
clients over real sockets: smbprotocol (signing required, as Windows) asks for a lease or
a batch oplock on one connection, a second connection's open breaks it, the first
acknowledges and the second completes; the holder that never answers; smbclient at every
dialect beside it; tshark on the break notification. Durable handles are declined."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from services.smb import oplocks
from services.smb.oplocks import BATCH, LEASE, LEVEL_II, NONE, H, OpenTable, R, Request, W
from tests.conftest import need
from tests.ftputil import Capture, smbclient

CLIENT_A, CLIENT_B = b"A" * 16, b"B" * 16
KEY_A, KEY_B = b"a" * 16, b"b" * 16


def lease(client: bytes, key: bytes, state: int = R | W | H, version: int = 2) -> Request:
    return Request(LEASE, client, key, state, version, epoch=3)


# --- the table (sans-IO)

def test_a_lone_client_gets_what_it_asks_and_a_second_client_breaks_it():
    table = OpenTable()
    assert table.opening("a", "/f", lease(CLIENT_A, KEY_A), overwrite=False) == []
    granted = table.grant("a", b"1", "/f", lease(CLIENT_A, KEY_A))
    assert (granted.level, granted.lease.state, granted.lease.epoch) == (LEASE, R | W | H, 4)
    breaks = table.opening("b", "/f", lease(CLIENT_B, KEY_B), overwrite=False)
    assert isinstance(breaks, list) and len(breaks) == 1
    (each,) = breaks
    assert each.owner == "a" and each.ack_required and each.text == "lease RWH -> RH"
    size, epoch, flags, key, current, new = struct.unpack_from("<HHI16sII", each.body)
    assert (size, epoch, flags, key, current, new) == (44, 5, oplocks.ACK_REQUIRED, KEY_A,
                                                       R | W | H, R | H)
    assert table.ack_lease("a", CLIENT_A, KEY_A, R | W)[0] == oplocks.STATUS_REQUEST_NOT_ACCEPTED
    assert table.ack_lease("a", CLIENT_A, KEY_A, R | H)[0] == oplocks.STATUS_SUCCESS
    assert table.settle(breaks, timeout=5)
    second = table.grant("b", b"2", "/f", lease(CLIENT_B, KEY_B))
    assert second.lease is not None and second.lease.state == R | H  # no W: not alone
    assert table.ack_lease("a", CLIENT_A, KEY_A, R)[0] == oplocks.STATUS_UNSUCCESSFUL  # not breaking


def test_the_same_lease_is_one_client_and_a_key_names_one_file():
    table = OpenTable()
    table.grant("a", b"1", "/f", lease(CLIENT_A, KEY_A))
    assert table.opening("a2", "/f", lease(CLIENT_A, KEY_A), overwrite=False) == []
    again = table.grant("a2", b"2", "/f", lease(CLIENT_A, KEY_A))
    assert again.lease is not None and again.lease.state == R | W | H and again.lease.opens == 2
    assert table.opening("a", "/g", lease(CLIENT_A, KEY_A), False) == oplocks.STATUS_INVALID_PARAMETER
    table.close("a", b"1")
    table.close("a2", b"2")
    assert len(table) == 0 and table.opening("a", "/g", lease(CLIENT_A, KEY_A), False) == []


def test_oplocks_batch_alone_level_ii_together_none_when_not_asked():
    table = OpenTable()
    assert table.grant("a", b"1", "/f", Request(BATCH)).level == BATCH
    (each,) = table.opening("b", "/f", Request(BATCH), overwrite=False)
    assert each.body == oplocks.OPLOCK_BREAK.pack(24, LEVEL_II, 0, 0, b"1") and each.ack_required
    assert table.ack_oplock("a", b"1", BATCH)[0] == oplocks.STATUS_INVALID_OPLOCK_PROTOCOL
    assert table.grant("b", b"2", "/f", Request(BATCH)).level == LEVEL_II
    assert table.grant("c", b"3", "/f", Request(NONE)).level == NONE
    assert table.ack_oplock("c", b"3", NONE)[0] == oplocks.STATUS_INVALID_DEVICE_STATE
    assert table.ack_oplock("c", b"9", NONE)[0] == oplocks.STATUS_FILE_CLOSED
    # a write by another opener takes Level II away, without an acknowledgment
    (to_none,) = table.write("c", b"3")
    assert to_none.owner == "b" and not to_none.ack_required and to_none.body[2] == NONE
    assert table.write("c", b"3") == []  # nothing left to break
    assert table.grant("d", b"4", "/dir", Request(BATCH), directory=True).level == NONE


def test_an_overwrite_takes_everything_and_a_rename_the_handle_caching():
    table = OpenTable()
    table.grant("a", b"1", "/f", lease(CLIENT_A, KEY_A, R | H, version=1))
    (handle,) = table.opening("b", "/f", Request(NONE), overwrite=True)
    assert handle.text == "lease RH -> none" and handle.ack_required
    assert struct.unpack_from("<H", handle.body, 2)[0] == 0  # V1: no epoch
    assert table.ack_lease("b", CLIENT_A, KEY_A, 0)[0] == oplocks.STATUS_OBJECT_NAME_NOT_FOUND
    table.ack_lease("a", CLIENT_A, KEY_A, 0)
    table.grant("b", b"2", "/f", Request(NONE))
    table.grant("c", b"3", "/f", lease(CLIENT_B, KEY_B, R | H))
    (renamed,) = table.renaming("b", b"2")
    assert renamed.owner == "c" and renamed.text == "lease RH -> R"
    table.moved("/f", "/g")
    assert {o.file_id for o in table.opens("/g")} == {b"1", b"2", b"3"} and not table.opens("/f")


def test_a_holder_that_never_answers_is_broken_at_the_timeout_and_a_closed_one_at_once():
    table = OpenTable()
    table.grant("a", b"1", "/f", Request(BATCH))
    breaks = table.opening("b", "/f", Request(BATCH), overwrite=False)
    assert not table.settle(breaks, timeout=0.05)
    assert table.opens("/f")[0].level == NONE  # MS-SMB2 3.3.2.1: to none
    table.grant("b", b"2", "/f", Request(BATCH))
    table.close("a", b"1")
    table.grant("c", b"3", "/h", Request(BATCH))
    waiting = table.opening("d", "/h", Request(NONE), overwrite=False)
    closer = threading.Thread(target=table.drop, args=("c",))
    closer.start()
    assert table.settle(waiting, timeout=30)  # the drop ends the wait, not the timeout
    closer.join()
    assert len(table) == 1


def test_create_contexts_and_the_lease_response():
    lease_data = struct.pack("<16sIIQ16sHH", KEY_A, R | W | H, 0, 0, bytes(16), 7, 0)
    first = oplocks.create_context(b"DH2Q", bytes(32))
    chain = struct.pack("<I", len(first) + -len(first) % 8) + first[4:] + b"\0" * (-len(first) % 8) \
        + oplocks.create_context(b"RqLs", lease_data)
    found = oplocks.create_contexts(b"\0" * 56 + chain, 64 + 56, len(chain))
    assert set(found) == {b"DH2Q", b"RqLs"}
    assert oplocks.parse_lease_context(found[b"RqLs"]) == (KEY_A, R | W | H, 2, 7)
    assert oplocks.create_contexts(b"\0" * 60, 64 + 56, 1000) == {}  # nothing there
    assert oplocks.parse_lease_context(b"short") is None
    assert oplocks.valid(W | H) == 0 and oplocks.valid(R | W | H) == R | W | H


# --- real clients

NOTIFICATION = 0xFFFFFFFFFFFFFFFF


class Raw:
    """A request body smbprotocol sends as given (it has no OPLOCK_BREAK acknowledgment)."""

    def __init__(self, command: int, body: bytes) -> None:
        self.COMMAND, self.body = command, body  # (smbprotocol's names)

    def pack(self) -> bytes:
        return self.body

    def __len__(self) -> int:
        return len(self.body)


class Client:
    """smbprotocol logged in on its own connection (signing required, as Windows), with
    what smbprotocol 1.17 lacks: its message thread looks every MessageId up among its
    requests, so a break notification (0xFFFFFFFFFFFFFFFF) killed it with a KeyError; a
    standing request at that id takes the notifications here."""

    def __init__(self, port: int, user: str, encrypt: bool = False, dialect: int | None = None,
                 share: str = "", guid: uuid.UUID | None = None):
        from smbprotocol.connection import Connection, Request
        from smbprotocol.header import SMB2HeaderRequest
        from smbprotocol.session import Session
        from smbprotocol.tree import TreeConnect

        self.connection = Connection(guid or uuid.uuid4(), "127.0.0.1", port, require_signing=True)
        self.connection.connect(dialect, timeout=15)
        self.session = Session(self.connection, user, user, require_encryption=encrypt,
                               auth_protocol="ntlm")
        self.session.connect()
        self.tree = TreeConnect(self.session, rf"\\127.0.0.1\{share or user}")
        self.tree.connect()
        self.notifications = Request(SMB2HeaderRequest(), None, self.connection)
        self.connection.outstanding_requests[NOTIFICATION] = self.notifications

    def next_break(self, timeout: float = 30) -> bytes:
        assert self.notifications.response_event.wait(timeout), "no break notification"
        body = self.notifications.response["data"].get_value()
        self.notifications.response_event.clear()
        self.notifications.response = None
        return body

    def open(self, name: str, oplock: int = NONE, lease_state: int = 0, key: bytes = b"",
             durable: bool = False, wait: bool = True, raw: tuple[bytes, bytes] | None = None):
        """Open (or create) `name` for reading and writing; returns (Open, contexts), or
        with wait=False (Open, the sent request, the response reader)."""
        from smbprotocol.create_contexts import (
            CreateContextName,
            SMB2CreateContextRequest,
            SMB2CreateDurableHandleRequestV2,
            SMB2CreateRequestLeaseV2,
        )
        from smbprotocol.open import (
            CreateDisposition,
            CreateOptions,
            FilePipePrinterAccessMask,
            ImpersonationLevel,
            Open,
            ShareAccess,
        )

        contexts = []
        if oplock == LEASE:
            data = SMB2CreateRequestLeaseV2()
            data["lease_key"], data["lease_state"] = key, lease_state
            data["parent_lease_key"], data["epoch"] = bytes(16), b"\0\0"
            context = SMB2CreateContextRequest()
            context["buffer_name"] = CreateContextName.SMB2_CREATE_REQUEST_LEASE
            context["buffer_data"] = data
            contexts.append(context)
        if durable:
            handle = SMB2CreateDurableHandleRequestV2()
            handle["create_guid"] = uuid.uuid4().bytes
            context = SMB2CreateContextRequest()
            context["buffer_name"] = CreateContextName.SMB2_CREATE_DURABLE_HANDLE_REQUEST_V2
            context["buffer_data"] = handle
            contexts.append(context)
        if raw is not None:  # (name, data) as given
            context = SMB2CreateContextRequest()
            context["buffer_name"], context["buffer_data"] = raw
            contexts.append(context)
        opened = Open(self.tree, name)
        access = FilePipePrinterAccessMask.FILE_READ_DATA | FilePipePrinterAccessMask.FILE_WRITE_DATA
        message, receive = opened.create(
            ImpersonationLevel.Impersonation, access, 0x80,
            ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE,
            CreateDisposition.FILE_OPEN_IF, CreateOptions.FILE_NON_DIRECTORY_FILE,
            create_contexts=contexts or None, oplock_level=oplock, send=False)
        request = self.connection.send(message, self.session.session_id, self.tree.tree_connect_id)
        if not wait:
            return opened, request, receive
        return opened, receive(request)

    def acknowledge(self, body: bytes) -> bytes:
        from smbprotocol.header import Commands

        request = self.connection.send(Raw(Commands.SMB2_OPLOCK_BREAK, body),
                                       self.session.session_id, self.tree.tree_connect_id)
        return self.connection.receive(request)["data"].get_value()

    def close(self) -> None:
        self.connection.disconnect(True)


def lease_state(contexts) -> int:
    (context,) = [c for c in contexts or [] if hasattr(c, "fields") and "lease_state" in c.fields]
    return context["lease_state"].get_value()


def dissected(capture: Capture, port: int, keylog: Path | None, display_filter: str) -> int:
    """How many frames of the capture tshark shows for the filter, sealed messages decrypted
    with the key log's lines (Wireshark's smb2_seskey_list table, in a profile of its own)."""
    env = dict(os.environ)
    if keylog is not None:
        profile = capture.file.parent / "home"
        (profile / ".config/wireshark").mkdir(parents=True, exist_ok=True)
        (profile / ".config/wireshark/smb2_seskey_list").write_text(keylog.read_text())
        env.update(HOME=str(profile), XDG_CONFIG_HOME=str(profile / ".config"))
    out = subprocess.run(["tshark", "-r", str(capture.file), "-d", f"tcp.port=={port},nbss",
                          "-Y", display_filter], capture_output=True, text=True, timeout=120,
                         env=env).stdout
    return len(out.splitlines())


@pytest.mark.parametrize("encrypt, config", [(False, ""), (True, ""), (True, "encrypt = true\n")],
                         ids=["signed", "sealed-on-request", "encrypt-all"])
def test_a_second_client_breaks_the_first_s_lease_which_acknowledges(lab, tmp_path, encrypt,
                                                                     config):
    need("tshark", "tcpdump")
    keylog = tmp_path / "keys" if encrypt else None
    server = lab.start(only="smb", config=f'[smb]\n{config}keylog = "{keylog or ""}"\n')
    port = server.port("smb", "smb")
    sniff = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))
    first, second = Client(port, "alice", encrypt), Client(port, "alice", encrypt)
    held, contexts = first.open("shared.txt", LEASE, R | W | H, KEY_A)
    assert held.oplock_level == LEASE and lease_state(contexts) == R | W | H
    held.write(b"cached by the first client", 0)
    opened, request, receive = second.open("shared.txt", LEASE, R | W | H, KEY_B, wait=False)
    notification = first.next_break()
    size, epoch, flags, key, current, new = struct.unpack_from("<HHI16sII", notification)
    assert (size, flags, key, current, new) == (44, oplocks.ACK_REQUIRED, KEY_A, R | W | H, R | H)
    assert epoch == 2  # V2: the grant made it 1 (the request's 0, + 1), the break 2
    assert not request.response_event.is_set()  # the second CREATE waits for the ack
    answer = first.acknowledge(oplocks.LEASE_ACK.pack(36, 0, 0, KEY_A, R | H, 0))
    assert oplocks.LEASE_ACK.unpack(answer[:36])[3:5] == (KEY_A, R | H)
    contexts = receive(request)
    assert opened.oplock_level == LEASE and lease_state(contexts) == R | H
    assert opened.read(0, 26) == b"cached by the first client"
    # a write by the second breaks the first's read caching
    opened.write(b"X", 0)
    size, _, flags, key, current, new = struct.unpack_from("<HHI16sII", first.next_break())
    assert (key, current, new) == (KEY_A, R | H, 0)
    first.acknowledge(oplocks.LEASE_ACK.pack(36, 0, 0, KEY_A, 0, 0))
    held.close()
    opened.close()
    first.close()
    second.close()
    server.stop()
    journal = server.cli("journal", "--service", "smb").stdout
    assert "lease RWH -> RH (acknowledgment required) sent to" in journal
    assert "oplock-ack" in journal and "Traceback" not in server.stderr()
    sniff.stop()
    notifications = "smb2.cmd == 18 && smb2.msg_id == 0xffffffffffffffff"
    if encrypt:  # sealed: nothing of it in clear, the session's keys show it
        assert sniff.count(notifications) == 0
        assert sniff.count(f"{notifications} && smb2.header.transform.msg_size") == 0
    assert dissected(sniff, port, keylog, f"{notifications} && smb2.lease.lease_key") == 2
    assert dissected(sniff, port, keylog, f"{notifications} && smb2.flags.signature == 0") == 2
    assert dissected(sniff, port, keylog, "smb2.cmd == 18 && smb2.flags.response == 1 && "
                                          "smb2.msg_id != 0xffffffffffffffff") == 2  # the acks'
    assert dissected(sniff, port, keylog,
                     "(smb2 || nbss) && (_ws.malformed || _ws.expert.severity == error)") == 0


def test_a_batch_oplock_breaks_to_level_ii_at_2_0_2(lab):
    from smbprotocol.connection import Dialects

    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    first = Client(port, "alice", dialect=Dialects.SMB_2_0_2)
    second = Client(port, "alice", dialect=Dialects.SMB_2_0_2)
    held, _ = first.open("batch.txt", BATCH)
    assert held.oplock_level == BATCH
    opened, request, receive = second.open("batch.txt", BATCH, wait=False)
    notification = first.next_break()
    assert notification[:3] == struct.pack("<HB", 24, LEVEL_II)
    assert notification[8:24] == held.file_id
    answer = first.acknowledge(notification[:2] + bytes([LEVEL_II]) + notification[3:])
    assert answer[2] == LEVEL_II
    receive(request)
    assert opened.oplock_level == LEVEL_II
    first.close()
    second.close()
    server.stop()


def test_smb_2_1_gets_a_v1_lease_and_a_break_without_epoch(lab):
    from smbprotocol.connection import Dialects

    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    first, second = (Client(port, "alice", dialect=Dialects.SMB_2_1_0) for _ in range(2))
    held, contexts = first.open("v1.txt", LEASE, R | W | H, KEY_A)
    (context,) = contexts
    assert len(context.pack()) == 32 and context["lease_state"].get_value() == R | W | H  # V1
    _, request, receive = second.open("v1.txt", LEASE, R | W | H, KEY_B, wait=False)
    size, epoch, flags, key, current, new = struct.unpack_from("<HHI16sII", first.next_break())
    assert (size, epoch, flags, key, current, new) == (44, 0, oplocks.ACK_REQUIRED, KEY_A,
                                                       R | W | H, R | H)
    held.close()  # closing instead of acknowledging ends the wait too (Windows does this)
    assert lease_state(receive(request)) == R | W | H  # alone now
    first.close()
    second.close()
    server.stop()
    assert "no acknowledgment" not in server.cli("journal", "--service", "smb").stdout


def test_a_second_open_on_the_holder_s_own_connection_does_not_wait_for_itself(lab):
    """The holder's acknowledgment can only come after the CREATE that broke it (one
    connection is one thread of requests): the break is sent, the CREATE answered at once."""
    server = lab.start(only="smb", config="[smb]\noplock_break_timeout = 60\n")
    client = Client(server.port("smb", "smb"), "alice")
    held, _ = client.open("twice.txt", BATCH)
    again, _ = client.open("twice.txt", BATCH)
    assert again.oplock_level == LEVEL_II
    notification = client.next_break()
    assert notification[2] == LEVEL_II and notification[8:24] == held.file_id
    assert client.acknowledge(notification)[2] == LEVEL_II
    client.close()
    server.stop()
    assert "no acknowledgment" not in server.cli("journal", "--service", "smb").stdout


def test_a_holder_that_never_acknowledges_holds_the_open_only_the_timeout(lab):
    server = lab.start(only="smb", config="[smb]\noplock_break_timeout = 1\n")
    port = server.port("smb", "smb")
    first, second = Client(port, "alice"), Client(port, "alice")
    first.open("silent.txt", LEASE, R | W | H, KEY_A)
    _, contexts = second.open("silent.txt", LEASE, R | W | H, KEY_B)  # completes
    assert first.next_break()[24:36] == struct.pack("<II", R | W | H, R | H) + b"\0" * 4
    assert lease_state(contexts) == R | H
    first.close()
    second.close()
    server.stop()
    assert "no acknowledgment within 1 s (oplock_break_timeout)" in \
        server.cli("journal", "--service", "smb").stdout


def test_durable_handles_are_declined_and_a_reconnect_finds_none(lab):
    from smbprotocol.exceptions import SMBResponseException

    server = lab.start(only="smb")
    client = Client(server.port("smb", "smb"), "alice")
    opened, contexts = client.open("durable.txt", durable=True)
    assert not contexts  # no DH2Q answer: a normal handle (MS-SMB2 3.3.5.9.10 allows it)
    opened.write(b"still written", 0)
    opened.close()
    with pytest.raises(SMBResponseException) as refused:  # DH2C: FileId, CreateGuid, Flags
        client.open("durable.txt", raw=(b"DH2C", bytes(36)))
    assert refused.value.status == 0xC0000034  # STATUS_OBJECT_NAME_NOT_FOUND
    client.close()
    server.stop()
    assert (server.data / "homes/alice/durable.txt").read_bytes() == b"still written"


@pytest.mark.parametrize("dialect", ["SMB2_02", "SMB2_10", "SMB3_00", "SMB3_11"])
def test_smbclient_still_works_beside_a_lease_holder(lab, tmp_path, dialect):
    """smbclient asks no oplock; its open of a file another client holds a lease on breaks
    the lease's write caching, its rename the handle caching (the holder acknowledges
    each), and its get and rename complete."""
    need("smbclient")
    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    (server.data / "homes/alice").mkdir(parents=True, exist_ok=True)
    holder = Client(port, "alice")
    held, _ = holder.open("held.txt", LEASE, R | W | H, KEY_A)
    held.write(b"from the holder\n", 0)
    seen: list[tuple[int, int]] = []

    def acknowledge() -> None:
        while len(seen) < 2:
            current, new = struct.unpack_from("<II", holder.next_break(), 24)
            seen.append((current, new))
            holder.acknowledge(oplocks.LEASE_ACK.pack(36, 0, 0, KEY_A, new, 0))

    worker = threading.Thread(target=acknowledge, daemon=True)
    worker.start()
    got = tmp_path / "got.txt"
    result = smbclient(server, "alice", f"get held.txt {got}; rename held.txt moved.txt",
                       "alice", None, "-m", dialect)
    assert result.returncode == 0, result.stdout + result.stderr
    assert got.read_bytes() == b"from the holder\n"
    worker.join(30)
    assert seen == [(R | W | H, R | H), (R | H, R)]
    assert (server.data / "homes/alice/moved.txt").exists()
    held.close()
    holder.close()
    server.stop()
    assert "Traceback" not in server.stderr()


def test_an_open_file_renamed_or_moved_by_another_client_still_closes(lab):
    """impacket's CLOSE stats the file by the name its own open kept: after another
    client's rename it failed (OBJECT_NAME_NOT_FOUND) and kept the entry, whose descriptor
    it had closed already (to be closed again at the end, whoever had the number then)."""
    need("smbclient")
    server = lab.start(only="smb")
    home = server.data / "homes/alice"
    (home / "d1").mkdir(parents=True)
    (home / "d1/f.txt").write_bytes(b"f")
    (home / "d2").mkdir()
    (home / "d2/g.txt").write_bytes(b"g")
    client = Client(server.port("smb", "smb"), "alice")
    renamed, _ = client.open("d1\\f.txt")
    inside, _ = client.open("d2\\g.txt")
    result = smbclient(server, "alice", "rename d1\\f.txt d1\\h.txt; rename d2 d3")
    assert result.returncode == 0, result.stdout + result.stderr
    renamed.close()  # was STATUS_OBJECT_NAME_NOT_FOUND
    inside.close()
    again, _ = client.open("d1\\h.txt")
    assert again.read(0, 1) == b"f"
    client.close()
    server.stop()
    assert (home / "d3/g.txt").read_bytes() == b"g"
    assert "Traceback" not in server.stderr()


def test_another_user_with_the_same_client_guid_and_lease_key_shares_nothing(lab):
    """A ClientGuid and a lease key are only what a client says (and a capture shows
    them): bob saying alice's gets his own lease, which breaks hers, and cannot
    acknowledge her break (from another connection: his first one waits)."""
    from smbprotocol.exceptions import SMBResponseException

    server = lab.start(only="smb")
    port, guid = server.port("smb", "smb"), uuid.uuid4()
    alice = Client(port, "alice", share="public", guid=guid)
    bob, bob_again = (Client(port, "bob", share="public", guid=guid) for _ in range(2))
    alice.open("both.txt", LEASE, R | W | H, KEY_A)
    _, request, receive = bob.open("both.txt", LEASE, R | W | H, KEY_A, wait=False)
    assert struct.unpack_from("<II", alice.next_break(), 24) == (R | W | H, R | H)
    with pytest.raises(SMBResponseException) as refused:
        bob_again.acknowledge(oplocks.LEASE_ACK.pack(36, 0, 0, KEY_A, R | H, 0))
    assert refused.value.status == 0xC0000034  # not his lease: OBJECT_NAME_NOT_FOUND
    assert not request.response_event.is_set()
    alice.acknowledge(oplocks.LEASE_ACK.pack(36, 0, 0, KEY_A, R | H, 0))
    assert lease_state(receive(request)) == R | H
    for client in (alice, bob, bob_again):
        client.close()
    server.stop()
    assert "no acknowledgment" not in server.cli("journal", "--service", "smb").stdout
