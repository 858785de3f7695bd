"""SMB2 file sharing (impacket's server, in its own threads) over the users' homes and public."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Invalid, ServiceSettings, setting
from ..listeners import Listener, Reach

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab

PORT = 445

# What can break (services/faults.py, acting in engine.py):
# `protolab fault add smb.NAME [--target USER|ADDRESS|SHARE]`.
FAULTS = {
    "signing-required": "the server requires signing: its NEGOTIATE says so (for an address: "
                        "clients that can sign then do), and an unsigned request of a "
                        "session is refused, so a client that does not sign fails with "
                        "NT_STATUS_ACCESS_DENIED (smbclient --client-protection=off, with "
                        "the fault for its login)",
    "access-denied": "TREE_CONNECT to the share (or any share of the user or address) is "
                     "answered STATUS_ACCESS_DENIED: smbclient says NT_STATUS_ACCESS_DENIED",
}


@dataclass
class Settings(ServiceSettings):
    host: str = setting("files", "this service's host name in the lab zone (also its NetBIOS name)")
    anonymous: bool = setting(
        False, "let anonymous (null session) clients read the 'public' share, read-only")
    signing_required: bool = setting(
        False, "every message must be signed: clients are told so, unsigned requests are refused "
               "(the server always signs once a user is logged in, and checks signed requests)")
    encrypt: bool = setting(
        False, "seal every message of every session (SMB 3: AES-CCM/GCM); a client that "
               "cannot encrypt (SMB 2.x) is refused at login (ACCESS_DENIED)")
    keylog: str = setting(
        "", "append each SMB 3 session's keys to this file as lines of Wireshark's SMB2 "
            "\"Secret session keys\" table (smb2_seskey_list), so captures of sealed "
            "sessions decrypt; empty = off")
    max_connections: int = setting(
        256, "most SMB connections at once (impacket runs a thread for each); one more is "
             "closed as soon as it is accepted")
    max_connections_per_peer: int = setting(
        64, "most SMB connections at once from one address (a class behind one NAT "
            "address shares it); one more is closed as soon as it is accepted")
    max_open_files: int = setting(
        512, "most files (and directories) one SMB connection may have open at once; one "
             "more CREATE is answered STATUS_TOO_MANY_OPENED_FILES, as smbd does (all "
             "connections share one process and its descriptor limit)")
    oplock_break_timeout: float = setting(
        10.0, "seconds a CREATE that breaks another client's oplock or lease waits for that "
              "client's acknowledgment before going on without it (smbd: 35)")

    def validate(self) -> None:
        super().validate()
        for key in ("max_connections", "max_connections_per_peer", "max_open_files"):
            if getattr(self, key) < 1:
                raise Invalid(key, "must be at least 1")
        if not 0 < self.oplock_break_timeout <= 60:
            raise Invalid("oplock_break_timeout", "must be more than 0 and at most 60 seconds")


def listeners(config: LabConfig) -> list[Listener]:
    return [Listener("smb", "smb", PORT, note="SMB 2.0.2-3.1.1, NTLMv2; shares: USER, public")]


def service(lab: Lab) -> IService:
    from .server import SMBService

    return SMBService(lab)


def probe(target: ProbeTarget) -> str:
    from impacket.smbconnection import SMBConnection

    # The remote name is the address: with "*SMBSERVER" on a port other than 445 impacket
    # first waits out a NetBIOS session attempt (4 s here, whatever the timeout).
    connection = SMBConnection(target.host, target.host, sess_port=target.port("smb", "smb"),
                               timeout=int(max(1, target.timeout)))
    try:
        dialect = connection.getDialect()
        name = connection.getServerName()
    finally:
        connection.close()
    return f"negotiated dialect 0x{dialect:04x}" + (f", server {name}" if name else "")


def clients(reach: Reach) -> list[str]:
    user, listener = reach.user, reach.listener
    return [f"smbclient //{reach.host}/{user} -p {listener.port} -U {user}%{user}"]
