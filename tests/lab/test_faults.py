"""`protolab fault`: faults switched on while the lab runs, for one target or everyone,
with the symptom a real client shows, journaled when they act, gone when cleared
(issue 17, part 1: the framework, and FTP's faults)."""

from __future__ import annotations

import io
import subprocess
import time

import pytest

from services.faults import Board, FaultError, duration, kinds
from services.store import Store
from tests.conftest import need
from tests.ftputil import ftp_login


def test_durations_and_kinds():
    assert [duration(t) for t in ("90", "90s", "10m", "2h", "1d", "1.5m")] == [
        90, 90, 600, 7200, 86400, 90]
    for bad in ("", "0", "-5m", "10 minutes", "5y"):
        with pytest.raises(FaultError, match="a duration such as"):
            duration(bad)
    assert {"ftp.wrong-pasv-address", "ftp.dead-data-port"} <= set(kinds())


def test_board_matches_target_everyone_and_expiry(tmp_path):
    store = Store(tmp_path / "data")
    try:
        board = Board(store)
        assert board.find("ftp.dead-data-port", "10.0.0.5", "alice") is None
        store.faults.add("ftp.dead-data-port", "ALICE")
        board._changed({"faults"})  # the store's poll would say so in a running lab
        assert board.find("ftp.dead-data-port", "10.0.0.5", "alice").target == "ALICE"
        assert board.find("ftp.dead-data-port", "10.0.0.6", "bob") is None  # not bob's
        assert board.find("ftp.wrong-pasv-address", "10.0.0.5", "alice") is None
        store.faults.add("ftp.wrong-pasv-address")
        store.faults.add("ftp.dead-data-port", "bob", seconds=-1)  # already over
        board._changed({"faults"})
        assert board.find("ftp.wrong-pasv-address", "10.0.0.6", "bob") is not None  # everyone
        assert board.find("ftp.dead-data-port", "10.0.0.6", "bob") is None
        assert store.faults.clear() == 3 and store.faults.active() == []
    finally:
        store.close()


def curl_get(server, user: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-u", f"{user}:{user}",
                           f"ftp://127.0.0.1:{server.port('ftp', 'ftp')}/f.txt"],
                          capture_output=True, text=True, timeout=60)


def settled(attempt, want, seconds: float = 5):
    """attempt() until want(result): the serving process learns of a fault change at its
    next store poll (0.2 s), and nothing signals that it has."""
    deadline = time.monotonic() + seconds
    while not want(result := attempt()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def test_dead_data_port_for_one_user_then_cleared(lab):
    need("curl")
    server = lab.start(only="ftp")
    for user in ("alice", "bob"):
        ftp = ftp_login(server, user)
        ftp.storbinary("STOR f.txt", io.BytesIO(f"{user}'s\n".encode()))
        ftp.quit()
    unknown = server.cli("fault", "add", "ftp.no-such-thing")
    assert unknown.returncode == 2 and "unknown fault 'ftp.no-such-thing'" in unknown.stderr
    on = server.cli("fault", "add", "ftp.dead-data-port", "--target", "alice", "--for", "1h")
    assert on.returncode == 0 and on.stdout.startswith("on: #1 ftp.dead-data-port for alice")
    assert "#1 ftp.dead-data-port for alice" in server.cli("fault", "list").stdout
    hit = settled(lambda: curl_get(server, "alice"), lambda r: r.returncode != 0)
    assert hit.returncode == 7, hit.stderr  # curl: "Failed to connect" to the data port
    assert curl_get(server, "bob").stdout == "bob's\n"  # the rest of the class works on
    assert "fault ftp.dead-data-port #1" in server.journal_until("ftp", "fault ftp.dead")
    cleared = server.cli("fault", "clear", "1")
    assert cleared.stdout.strip() == "cleared 1 fault"
    assert server.cli("fault", "clear", "1").returncode == 1  # no such fault any more
    again = settled(lambda: curl_get(server, "alice"), lambda r: r.returncode == 0)
    assert again.stdout == "alice's\n"


def test_wrong_pasv_address_for_an_address(lab):
    server = lab.start(only="ftp")
    assert server.cli("fault", "add", "ftp.wrong-pasv-address", "--target", "127.0.0.1").returncode == 0
    ftp = ftp_login(server)
    try:
        with pytest.raises(Exception, match=r"^502"):
            ftp.sendcmd("EPSV")  # refused, so that clients fall back to PASV
        assert ftp.sendcmd("PASV").startswith("227 Entering passive mode (192,0,2,1,")
    finally:
        ftp.close()
