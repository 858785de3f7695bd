"""What an SMB connection holds goes with it (the store's connection of its thread, files
it never closed, impacket's state), and connections are limited per address and in all."""

from __future__ import annotations

import io
import os
import socket
import threading
import time

import pytest

from tests.hardening import fds, rss_kib
from tests.smb.test_clients import impacket_login
from tests.smb.test_wire import exchange, raw_connection, smb2_negotiate, status_of

LOGINS = 400  # sequential logins here take ~60 s on this 2-core machine under load;
# `python -m tests.bench.smb --logins 1000` runs the 1,000 and more


def test_a_thread_s_store_connection_goes_with_the_thread(tmp_path):
    """The store kept every thread's SQLite connection forever (a descriptor per SMB login)."""
    from services.store.db import Database

    database = Database(tmp_path / "lab.db")
    database.one("SELECT 1")
    before = fds(os.getpid())
    for _ in range(50):
        worker = threading.Thread(target=database.one, args=("SELECT 1",))
        worker.start()
        worker.join()
    # (the last thread's storage may go a moment after join() returns: one of slack)
    assert fds(os.getpid()) <= before + 1  # was one more per thread
    database.release()
    assert fds(os.getpid()) <= before  # the caller's own connection, closed now
    assert database.one("SELECT 1")[0] == 1  # and opened again when needed
    database.close()


def login_and_drop(port: int, open_file: bool) -> None:
    """Log in (SMB 2.0.2 straight away), maybe leave a file open, and vanish: no CLOSE,
    no LOGOFF, the socket just closes."""
    from impacket import smb3structs as smb2
    from impacket.smbconnection import SMBConnection

    connection = SMBConnection("FILES", "127.0.0.1", sess_port=port, timeout=15,
                               preferredDialect=smb2.SMB2_DIALECT_002)
    connection.login("alice", "alice")
    if open_file:
        smb3 = connection.getSMBServer()
        tree = connection.connectTree("alice")
        smb3.create(tree, "kept-open.txt", smb2.FILE_READ_DATA | smb2.FILE_WRITE_DATA,
                    smb2.FILE_SHARE_READ, smb2.FILE_NON_DIRECTORY_FILE, smb2.FILE_OPEN_IF, 0)
    connection.getSMBServer().get_socket().close()


def settle(pid: int, level: int, timeout: float = 30) -> int:
    """The server's open descriptors once they are back within `level` (its threads end
    when they see the close; there is no signal for that): the count then, or the last."""
    deadline = time.monotonic() + timeout
    while (count := fds(pid)) > level and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def test_logins_that_vanish_leave_nothing_behind(lab):
    server = lab.start(only="smb")
    port, pid = server.port("smb", "smb"), server.process.pid
    for _ in range(20):  # warm up: imports, caches, the first thread stacks
        login_and_drop(port, open_file=True)
    base_fds = settle(pid, 0, timeout=2)
    base_rss = rss_kib(pid)
    for number in range(LOGINS):
        login_and_drop(port, open_file=number % 2 == 0)
    fds = settle(pid, base_fds + 3)
    rss = rss_kib(pid)
    print(f"{LOGINS} logins dropped without logoff: fds {base_fds} -> {fds}, "
          f"RSS {base_rss} -> {rss} KiB")
    assert fds <= base_fds + 3, (base_fds, fds)  # was one more SQLite descriptor per login
    assert rss - base_rss < 16 * 1024, (base_rss, rss)
    impacket_login(server).close()  # still serving
    server.stop()
    assert "Traceback" not in server.stderr()


def _answered(sock: socket.socket) -> bool:
    try:
        answer = exchange(sock, smb2_negotiate([0x0202]))
    except OSError:
        return False
    return bool(answer) and status_of(answer) == 0


def test_idle_connections_from_one_address_do_not_stop_the_others(lab):
    """500 idle connections from 127.0.0.1: 64 ([smb] max_connections_per_peer) are
    served, the rest are closed at once; a client from 127.0.0.2 still logs in."""
    from impacket import nmb
    from impacket.smb3 import SMB3
    from impacket.smbconnection import SMBConnection

    server = lab.start(only="smb")
    port = server.port("smb", "smb")
    idle = [raw_connection(port) for _ in range(500)]
    other = raw_connection(port, source="127.0.0.2")
    session = nmb.NetBIOSTCPSession("CLIENT", "FILES", "127.0.0.1", sess_port=port, sock=other)
    connection = SMBConnection(existingConnection=SMB3("FILES", "127.0.0.1", sess_port=port,
                                                       session=session, timeout=15))
    connection.login("bob", "bob")
    assert connection.listPath("bob", "*")
    answered = [_answered(sock) for sock in idle]
    assert answered.count(True) == 64, answered.count(True)  # the others were closed
    for sock in idle:
        sock.close()
    connection.close()
    deadline = time.monotonic() + 30
    while True:  # their threads end when they see the close; then 127.0.0.1 is served again
        try:
            impacket_login(server).close()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    server.stop()
    assert "Traceback" not in server.stderr()
    journal = server.cli("journal", "--service", "smb").stdout
    assert "max_connections_per_peer" in journal


def test_the_total_limit_is_a_config_key(lab):
    server = lab.start(only="smb", config="[smb]\nmax_connections = 3\n")
    port = server.port("smb", "smb")
    held = [raw_connection(port, source=f"127.0.0.{n}") for n in (1, 2, 3)]
    assert all(_answered(sock) for sock in held)
    refused = raw_connection(port, source="127.0.0.4")
    assert not _answered(refused)
    for sock in (*held, refused):
        sock.close()
    server.stop()
    assert "max_connections)" in server.cli("journal", "--service", "smb").stdout


def test_a_connection_opens_at_most_max_open_files(lab):
    """impacket opened a descriptor for every CREATE without end (one client could take all
    of the process's): over [smb] max_open_files a CREATE is refused as smbd refuses it,
    and a CLOSE makes room again."""
    from impacket import smb3structs as smb2
    from impacket.smb3 import SessionError

    server = lab.start(only="smb", config="[smb]\nmax_open_files = 3\n")
    connection = impacket_login(server)
    smb3 = connection.getSMBServer()
    tree = connection.connectTree("alice")

    def create(name: str) -> bytes:
        return smb3.create(tree, name, smb2.FILE_READ_DATA | smb2.FILE_WRITE_DATA,
                           smb2.FILE_SHARE_READ, smb2.FILE_NON_DIRECTORY_FILE,
                           smb2.FILE_OPEN_IF, 0)

    held = [create(f"open-{n}.txt") for n in range(3)]
    with pytest.raises(SessionError) as refused:
        create("one-more.txt")
    assert refused.value.get_error_code() == 0xC000011F  # STATUS_TOO_MANY_OPENED_FILES, as smbd
    other = impacket_login(server)  # the cap is per connection
    other.putFile("alice", "elsewhere.txt", io.BytesIO(b"fine").read)
    smb3.close(tree, held.pop())
    smb3.close(tree, create("one-more.txt"))  # room again
    connection.close()
    other.close()
    server.stop()
    assert (server.data / "homes/alice/elsewhere.txt").read_bytes() == b"fine"
    assert "refused: 3 files open on this connection already (max_open_files)" in \
        server.cli("journal", "--service", "smb").stdout
