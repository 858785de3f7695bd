"""Share enumeration (srvsvc over IPC$): smbclient -L, rpcclient and impacket's client see
exactly the shares the user may open, with comments; the pipe takes nothing else."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import need
from tests.ftputil import Capture, journal

SHARES = {"alice": "alice's home", "public": "files every lab user shares", "IPC$": "Remote IPC"}


def listing(server, user: str) -> dict[str, tuple[str, str]]:
    """smbclient -L's table: share -> (type, comment)."""
    result = subprocess.run(
        ["smbclient", "-L", "//127.0.0.1", "-p", str(server.port("smb", "smb")),
         "-U", f"{user}%{user}", "-g"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split("|") for line in result.stdout.splitlines() if line.count("|") == 2]
    return {name: (kind, comment) for kind, name, comment in rows}


def srvsvc(server, user: str = "alice"):
    from impacket.dcerpc.v5 import srvs, transport
    from impacket.smbconnection import SMBConnection

    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"), timeout=15)
    connection.login(user, user)
    pipe = transport.SMBTransport("127.0.0.1", filename=r"\srvsvc", smb_connection=connection)
    dce = pipe.get_dce_rpc()
    dce.connect()
    dce.bind(srvs.MSRPC_UUID_SRVS)
    return connection, dce


def test_smbclient_lists_the_users_shares_with_comments_never_anothers(lab, tmp_path):
    need("smbclient", "tshark", "tcpdump")
    server = lab.start(only="smb")
    (server.data / "homes/bob").mkdir(parents=True, exist_ok=True)
    port = server.port("smb", "smb")
    capture = Capture(tmp_path, f"tcp port {port}", decode_as=(f"tcp.port=={port},nbss",))
    alice = listing(server, "alice")
    capture.stop()
    assert alice == {"alice": ("Disk", SHARES["alice"]), "public": ("Disk", SHARES["public"]),
                     "IPC$": ("IPC", SHARES["IPC$"])}
    assert set(listing(server, "bob")) == {"bob", "public", "IPC$"}
    assert capture.count("srvsvc.opnum == 15 && dcerpc.pkt_type == 2") == 1  # the response
    assert capture.bad("smb2 || dcerpc || srvsvc") == []
    server.stop()
    calls = [e["text"] for e in journal(server.data, "smb") if e["text"].startswith("srvsvc ")]
    assert "srvsvc NetrShareEnum level 1" in calls


def test_share_info_is_given_for_the_users_shares_only(lab):
    from impacket.dcerpc.v5 import srvs
    from impacket.dcerpc.v5.rpcrt import DCERPCException

    server = lab.start(only="smb")
    (server.data / "homes/bob").mkdir(parents=True, exist_ok=True)
    connection, dce = srvsvc(server)
    names = {s["shi1_netname"][:-1]: s["shi1_remark"][:-1]
             for s in srvs.hNetrShareEnum(dce, 1)["InfoStruct"]["ShareInfo"]["Level1"]["Buffer"]}
    assert names == SHARES
    info = srvs.hNetrShareGetInfo(dce, "PUBLIC", 1)["InfoStruct"]["ShareInfo1"]
    assert (info["shi1_netname"], info["shi1_remark"]) == ("public\0", SHARES["public"] + "\0")
    assert srvs.hNetrShareGetInfo(dce, "IPC$", 1005)["InfoStruct"]["ShareInfo1005"]["shi1005_flags"] == 0x30
    for share in ("bob", "nosuch"):  # another's home is as absent as no share
        with pytest.raises(DCERPCException) as refused:
            srvs.hNetrShareGetInfo(dce, share, 1)
        assert refused.value.get_error_code() == 2310  # NERR_NetNameNotFound
    with pytest.raises(DCERPCException) as denied:  # paths: administrators only
        srvs.hNetrShareEnum(dce, 502)
    assert denied.value.get_error_code() == 5  # ERROR_ACCESS_DENIED
    server_info = srvs.hNetrServerGetInfo(dce, 101)["InfoStruct"]["ServerInfo101"]
    assert server_info["sv101_name"] == "FILES\0" and server_info["sv101_platform_id"] == 500
    connection.close()


def test_rpcclient_agrees(lab):
    need("rpcclient")
    server = lab.start(only="smb")
    result = subprocess.run(
        ["rpcclient", "-p", str(server.port("smb", "smb")), "-U", "alice%alice", "127.0.0.1",
         "-c", "netshareenumall 1; netsharegetinfo public 1; netsharegetinfo bob 1"],
        capture_output=True, text=True, timeout=60)
    out = result.stdout + result.stderr
    assert "netname: alice" in out and "remark:\tfiles every lab user shares" in out
    assert "WERR_NERR_NETNAMENOTFOUND" in out and "netname: bob" not in out


def test_the_pipe_takes_dce_rpc_only_and_other_pipes_are_not_there(lab):
    from impacket import smb3
    from impacket.nt_errors import STATUS_INVALID_DEVICE_REQUEST
    from impacket.smb3structs import FILE_READ_DATA, FILE_WRITE_DATA
    from impacket.smbconnection import SessionError, SMBConnection

    server = lab.start(only="smb")
    connection = SMBConnection("FILES", "127.0.0.1", sess_port=server.port("smb", "smb"), timeout=15)
    connection.login("alice", "alice")
    tree = connection.connectTree("IPC$")
    with pytest.raises(SessionError, match="STATUS_OBJECT_NAME_NOT_FOUND"):
        connection.openFile(tree, r"\samr")
    pipe = connection.openFile(tree, r"\srvsvc", desiredAccess=FILE_READ_DATA | FILE_WRITE_DATA)
    with pytest.raises(smb3.SessionError) as refused:  # a pipe is no file: impacket would stat it
        connection.getSMBServer().queryInfo(tree, pipe)
    assert refused.value.get_error_code() == STATUS_INVALID_DEVICE_REQUEST
    with pytest.raises(SessionError, match="STATUS_ACCESS_DENIED"):  # a PDU of 8 bytes
        connection.writeFile(tree, pipe, b"\x05\x00\x0b\x03\x10\x00\x00\x00\x08\x00" + b"\0" * 20)
    connection.closeFile(tree, pipe)
    pipe = connection.openFile(tree, r"\srvsvc", desiredAccess=FILE_READ_DATA | FILE_WRITE_DATA)
    bind = b"\x05\x00\x0b\x03\x10\x00\x00\x00\x48\x00\x00\x00\x01\x00\x00\x00"
    with pytest.raises(SessionError, match="STATUS_ACCESS_DENIED"):  # five contexts, none there
        connection.writeFile(tree, pipe, bind + b"\xb8\x10\xb8\x10\0\0\0\0\x05" + b"\0" * 47)
    connection.closeFile(tree, pipe)
    # the connection still answers, and a new open of the pipe works
    assert [s["shi1_netname"][:-1] for s in connection.listShares()] == list(SHARES)
    connection.close()
