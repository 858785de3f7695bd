"""impacket's SMB server with the lab's rules: a subclass and hooks on its SMB2 commands.

impacket 0.13.1's server was written as a pentest tool; as a lab server it needs these
fixes (library-facts.md; each has a test in tests/test_smb.py):

- A failed (or unfinished) session setup left the connection "Authenticated", able to
  tree-connect and list files: here only STATUS_SUCCESS authenticates.
- Logins with an empty user name were granted as guest/anonymous even with users defined:
  here they fail unless [smb] anonymous allows them, for `public` only, read-only.
- The NTLM server challenge was fixed (b"A" * 8, or the config's): here it is random for
  every NTLM negotiation.
- SMB1's non-extended-security login never checks the password: SMB1 is off (a client
  that offers no SMB2 dialect is disconnected), as on Windows 10/11.
- One global share table and credentials list: here the store is the credentials table,
  and TREE_CONNECT decides per user (services.smb.access).
- Its final SPNEGO answer has no mechListMIC, so clients that require signing give up
  (upstream #1883): services.smb.mechlistmic adds it.
- Paths are checked by impacket's own jail; here every CREATE and rename target goes
  through services.paths first, the lab's one rule.
- A WRITE starting past the end of the file was dropped while answering success; plain
  READs and WRITEs are answered by services.smb.fastpath (pwrite), 4x faster too.
- A directory deleted on close was removed with shutil.rmtree, contents and all, and the
  share root itself could be: here only empty directories below the root are removed.
"""

from __future__ import annotations

import configparser
import logging
import os
import socket
import socketserver
import struct
import threading
from typing import Any

from impacket import nmb, smb
from impacket import smb3structs as smb2
from impacket.nt_errors import (STATUS_ACCESS_DENIED, STATUS_BAD_NETWORK_NAME,
                                STATUS_DIRECTORY_NOT_EMPTY, STATUS_LOGON_FAILURE,
                                STATUS_MORE_PROCESSING_REQUIRED, STATUS_OBJECT_NAME_INVALID,
                                STATUS_SUCCESS)
from impacket.smbserver import SMBSERVER

from .. import paths
from . import fastpath, mechlistmic
from .access import Denied, StoreCredentials, grant, share_name

log = logging.getLogger(__name__)
IDLE_TIMEOUT = 300  # seconds a connection may stay silent
SMB2_DIALECTS = (b"SMB 2.002", b"SMB 2.???")
DISPOSITIONS = {0: "supersede", 1: "open", 2: "create", 3: "open-if", 4: "overwrite",
                5: "overwrite-if"}


def _smb1_offers_smb2(data: bytes) -> bool:
    """Whether an SMB1 NEGOTIATE lists an SMB2 dialect (then impacket answers with SMB2)."""
    return data[4:5] == bytes([smb.SMB.SMB_COM_NEGOTIATE]) and any(d in data for d in SMB2_DIALECTS)


def _ntlm_message_type(blob: bytes) -> int:
    at = blob.find(b"NTLMSSP\x00")
    if at < 0 or len(blob) < at + 12:
        return 0
    return struct.unpack("<I", blob[at + 8:at + 12])[0]


def _shown(tree: dict, real: str) -> str:
    """A file as the journal shows it: SHARE\\path\\below."""
    below = os.path.relpath(real, tree["path"])
    return tree["shareName"] + ("" if below == "." else "\\" + below.replace("/", "\\"))


class Handler(socketserver.BaseRequestHandler):
    """One connection: NetBIOS session framing, then impacket's processRequest.

    Replaces impacket's SMBSERVERHandler to journal the connection, to turn SMB1 away, and
    to end quietly (impacket prints tracebacks to stderr for every dropped connection)."""

    server: LabSMBServer

    def handle(self) -> None:
        server = self.server
        ip, port = self.client_address[:2]
        conn_id = threading.current_thread().name
        local = server.local
        local.session = server.journal.open("smb", f"{ip}:{port}")
        local.challenge = os.urandom(8)
        server.addConnection(conn_id, ip, port)
        server.connections.add(self.request)
        netbios = nmb.NetBIOSTCPSession(server.getServerName(), "HOST", ip, sess_port=port,
                                        sock=self.request)
        reason = "client closed"
        try:
            while True:
                packet = netbios.recv_packet(IDLE_TIMEOUT)
                if packet.get_type() == nmb.NETBIOS_SESSION_REQUEST:
                    answer = nmb.NetBIOSSessionPacket()
                    answer.set_type(nmb.NETBIOS_SESSION_POSITIVE_RESPONSE)
                    answer.set_trailer(packet.get_trailer())
                    self.request.sendall(answer.rawData())
                    continue
                data = packet.get_trailer()
                if data[:4] == b"\xffSMB" and not _smb1_offers_smb2(data):
                    reason = "SMB1 refused (SMB1 is off; SMB2 needed)"
                    break
                fast = fastpath.answer(server.getConnectionData(conn_id, checkStatus=False), data)
                if fast is not None:
                    reply, file_id, counter, count = fast
                    server.count(file_id, counter, count)
                    fastpath.send(self.request, reply)
                    continue
                for reply in server.processRequest(conn_id, data):
                    netbios.send_packet(reply.getData() if hasattr(reply, "getData") else reply)
        except nmb.NetBIOSTimeout:
            reason = "idle timeout"
        except (nmb.NetBIOSError, OSError):
            reason = "connection lost" if not server.stopping else "server stopping"
        except Exception as error:  # a request impacket could not handle: drop this client
            reason = f"error: {type(error).__name__}: {error}"
            log.debug("smb connection %s:%s", ip, port, exc_info=True)
        finally:
            local.session.close(reason)

    def finish(self) -> None:
        self.server.connections.discard(self.request)
        self.server.removeConnection(threading.current_thread().name)


class LabSMBServer(SMBSERVER):
    daemon_threads = True  # a client that never closes must not keep the process alive
    block_on_close = False

    def __init__(self, listening: socket.socket, lab: Any, settings: Any) -> None:
        self._listening = listening
        self.lab, self.settings = lab, settings
        self.store, self.journal = lab.store, lab.journal
        self.local = threading.local()
        self.connections: set[socket.socket] = set()
        self.stopping = False
        self._shares_lock = threading.Lock()
        super().__init__(listening.getsockname()[:2], handler_class=Handler,
                         config_parser=self._config())
        self.processConfigFile()
        self._credentials = StoreCredentials(self.store.users)
        self._hook()

    # --- the pre-bound socket (bound in the reactor thread, so `ready` means listening)

    def server_bind(self) -> None:
        self.socket.close()
        self.socket = self._listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Already listening."""

    def _config(self) -> configparser.ConfigParser:
        config = configparser.ConfigParser()
        config["global"] = {
            "server_name": self.settings.host.upper()[:15],
            "server_os": "protolab",
            "server_domain": self.lab.config.lab.domain,
            "log_file": "None",  # any other value reconfigures the whole process's logging
            "credentials_file": "",
            "SMB2Support": "yes",
            "anonymous_logon": "yes" if self.settings.anonymous else "no",
        }
        config["IPC$"] = {"comment": "", "read only": "yes", "share type": "3", "path": ""}
        return config

    # --- what impacket asks the server for

    def getCredentials(self) -> StoreCredentials:  # noqa: N802 - impacket's name
        return self._credentials

    def getSMBChallenge(self) -> bytes:  # noqa: N802
        return self.local.challenge

    # --- hooks on SMB2 commands

    def _hook(self) -> None:
        self._original: dict[int, Any] = {}
        for command, hook in ((smb2.SMB2_NEGOTIATE, self._negotiate),
                              (smb2.SMB2_SESSION_SETUP, self._session_setup),
                              (smb2.SMB2_TREE_CONNECT, self._tree_connect),
                              (smb2.SMB2_CREATE, self._create),
                              (smb2.SMB2_SET_INFO, self._set_info),
                              (smb2.SMB2_READ, self._read),
                              (smb2.SMB2_WRITE, self._write),
                              (smb2.SMB2_CLOSE, self._close)):
            self._original[command] = self.hookSmb2Command(command, hook)
        self.getIoctls()[smb2.FSCTL_VALIDATE_NEGOTIATE_INFO] = self._validate_negotiate

    def _security_mode(self) -> int:
        mode = smb2.SMB2_NEGOTIATE_SIGNING_ENABLED
        return mode | smb2.SMB2_NEGOTIATE_SIGNING_REQUIRED if self.settings.signing_required else mode

    def _validate_negotiate(self, conn_id: str, server: Any, request: Any) -> tuple[bytes, int]:
        """What NEGOTIATE said, again: a signing client compares the two and hangs up on any
        difference (impacket always says "signing enabled, not required")."""
        answer = smb2.VALIDATE_NEGOTIATE_INFO_RESPONSE()
        answer["Capabilities"] = 0
        answer["Guid"] = b"A" * 16  # impacket's NEGOTIATE sends this GUID
        answer["SecurityMode"] = self._security_mode()
        answer["Dialect"] = smb2.SMB2_DIALECT_002
        return answer.getData(), STATUS_SUCCESS

    @property
    def session(self) -> Any:
        return self.local.session

    def _negotiate(self, conn_id: str, server: Any, packet: Any, isSMB1: bool = False) -> Any:  # noqa: N803
        commands, packets, status = self._original[smb2.SMB2_NEGOTIATE](conn_id, server, packet, isSMB1)
        packets[0]["Data"]["SecurityMode"] = self._security_mode()
        self.session.event("negotiate", "SMB 2.0.2" + (" (from an SMB1 negotiate)" if isSMB1 else ""))
        return commands, packets, status

    def _session_setup(self, conn_id: str, server: Any, packet: Any) -> Any:
        conn = self.getConnectionData(conn_id, checkStatus=False)
        setup = smb2.SMB2SessionSetup(packet["Data"])
        message = _ntlm_message_type(setup["Buffer"])
        if message == 1:  # NTLM NEGOTIATE: a new login on this connection
            self.local.challenge = os.urandom(8)
            self._end_session(conn)
            conn["LabMechTypes"] = mechlistmic.offered_mechanisms(setup["Buffer"])
        commands, packets, status = self._original[smb2.SMB2_SESSION_SETUP](conn_id, server, packet)
        conn = self.getConnectionData(conn_id, checkStatus=False)
        if message == 3:
            user = str(conn.get("user_name") or "").lower() if status == STATUS_SUCCESS else ""
            claimed = self._claimed_user(setup["Buffer"])
            if status == STATUS_SUCCESS and not claimed:
                if not self.settings.anonymous:
                    status = STATUS_LOGON_FAILURE  # impacket would grant guest access
                conn["LabUser"] = None
                self.session.auth("anonymous", ok=status == STATUS_SUCCESS, mechanism="NTLM null session")
            elif status == STATUS_SUCCESS:
                conn["LabUser"] = user
                self.session.auth(user, ok=True, mechanism="NTLMv2")
                if conn.get("LabMechTypes") and conn.get("SigningSessionKey"):
                    token = mechlistmic.accept_with_mic(
                        conn["LabMechTypes"], conn["AUTHENTICATE_MESSAGE"]["flags"],
                        conn["SigningSessionKey"])
                    commands[0]["Buffer"] = token
                    commands[0]["SecurityBufferLength"] = len(token)
            else:
                self.session.auth(claimed or "anonymous", ok=False, mechanism="NTLMv2")
                status = STATUS_LOGON_FAILURE
        conn["Authenticated"] = status == STATUS_SUCCESS
        if status not in (STATUS_SUCCESS, STATUS_MORE_PROCESSING_REQUIRED):
            conn["SignatureEnabled"] = False
        self.setConnectionData(conn_id, conn)
        return commands, packets, status

    @staticmethod
    def _claimed_user(blob: bytes) -> str:
        from impacket import ntlm

        at = blob.find(b"NTLMSSP\x00")
        message = ntlm.NTLMAuthChallengeResponse()
        message.fromString(blob[at:])
        return message["user_name"].decode("utf-16le", "replace").lower()

    def _end_session(self, conn: dict) -> None:
        """A new login on a connection: the trees and files of the previous one go."""
        for opened in conn.get("OpenedFiles", {}).values():
            handle = opened.get("FileHandle")
            if isinstance(handle, int) and handle > 0:
                try:
                    os.close(handle)
                except OSError:
                    pass
        conn["OpenedFiles"] = {}
        conn["ConnectedShares"] = {}
        conn.pop("LabUser", None)
        conn["Authenticated"] = False

    def _tree_connect(self, conn_id: str, server: Any, packet: Any) -> Any:
        conn = self.getConnectionData(conn_id)
        request = smb2.SMB2TreeConnect(packet["Data"])
        unc = packet.getData()[request["PathOffset"]:][:request["PathLength"]].decode("utf-16le", "replace")
        name = share_name(unc)
        try:
            granted = grant(self.store.files, self.store.users, conn.get("LabUser"), name)
        except Denied as denied:
            self.session.event("tree-connect", f"{unc} {denied.status}")
            status = STATUS_ACCESS_DENIED if denied.status == "access denied" else STATUS_BAD_NETWORK_NAME
            return [smb2.SMB2Error()], None, status
        section = granted.share.upper()
        with self._shares_lock:  # one section per share; impacket looks them up by name
            config = self.getServerConfig()
            if not config.has_section(section):
                config[section] = {"comment": "", "share type": "0", "path": granted.path,
                                   "read only": "no"}
        commands, packets, status = self._original[smb2.SMB2_TREE_CONNECT](conn_id, server, packet)
        if status == STATUS_SUCCESS:
            conn = self.getConnectionData(conn_id)
            tid = packets[0]["TreeID"]
            tree = dict(conn["ConnectedShares"][tid])  # impacket shares its dict between users
            tree["read only"] = "yes" if granted.read_only else "no"
            conn["ConnectedShares"][tid] = tree
            self.setConnectionData(conn_id, conn)
        self.session.event("tree-connect", f"{unc} {'ok' if status == STATUS_SUCCESS else hex(status)}"
                           f"{' read-only' if granted.read_only else ''}")
        return commands, packets, status

    def _tree(self, conn_id: str, packet: Any) -> dict | None:
        return self.getConnectionData(conn_id)["ConnectedShares"].get(packet["TreeID"])

    def _create(self, conn_id: str, server: Any, packet: Any) -> Any:
        tree = self._tree(conn_id, packet)
        request = smb2.SMB2Create(packet["Data"])
        name = request["Buffer"][:request["NameLength"]].decode("utf-16le", "replace")
        if tree is not None and tree.get("path"):
            try:
                paths.resolve(tree["path"], name)
            except paths.PathError as error:
                self.session.event("create", f"{tree['shareName']}\\{name} refused: {error}")
                return [smb2.SMB2Error()], None, STATUS_OBJECT_NAME_INVALID
        commands, packets, status = self._original[smb2.SMB2_CREATE](conn_id, server, packet)
        if tree is not None and tree.get("path"):
            options = request["CreateOptions"]
            detail = " ".join(filter(None, [
                DISPOSITIONS.get(request["CreateDisposition"], str(request["CreateDisposition"])),
                "dir" if options & smb2.FILE_DIRECTORY_FILE else "",
                "delete-on-close" if options & smb2.FILE_DELETE_ON_CLOSE else ""]))
            if status == STATUS_SUCCESS:
                counters = self.local.__dict__.setdefault("transfers", {})
                file_id = commands[0]["FileID"]  # impacket puts the bytes of a new id here
                counters[file_id if isinstance(file_id, bytes) else file_id.getData()] = [0, 0]
            self.session.event("create", f"{tree['shareName']}\\{name} {detail} -> "
                                         f"{'ok' if status == STATUS_SUCCESS else hex(status)}")
        return commands, packets, status

    def _set_info(self, conn_id: str, server: Any, packet: Any) -> Any:
        request = smb2.SMB2SetInfo(packet["Data"])
        tree = self._tree(conn_id, packet)
        event = ""
        if (tree is not None and request["InfoType"] == smb2.SMB2_0_INFO_FILE
                and request["FileInfoClass"] == smb2.SMB2_FILE_RENAME_INFO):
            target = smb2.FILE_RENAME_INFORMATION_TYPE_2(request["Buffer"])["FileName"]
            target = target.decode("utf-16le", "replace")
            try:
                paths.resolve(tree["path"], target)
            except paths.PathError as error:
                self.session.event("rename", f"to {target} refused: {error}")
                return [smb2.SMB2Error()], None, STATUS_OBJECT_NAME_INVALID
            event = f"rename {self._file_name(conn_id, request, tree)} -> {tree['shareName']}\\{target}"
        elif (tree is not None and request["InfoType"] == smb2.SMB2_0_INFO_FILE
              and request["FileInfoClass"] == smb2.SMB2_FILE_DISPOSITION_INFO):
            event = f"delete {self._file_name(conn_id, request, tree)}"
        commands, packets, status = self._original[smb2.SMB2_SET_INFO](conn_id, server, packet)
        if event:
            what, _, text = event.partition(" ")
            self.session.event(what, f"{text} -> {'ok' if status == STATUS_SUCCESS else hex(status)}")
        return commands, packets, status

    def _file_name(self, conn_id: str, request: Any, tree: dict) -> str:
        opened = self.getConnectionData(conn_id)["OpenedFiles"].get(request["FileID"].getData())
        return _shown(tree, opened["FileName"]) if opened else "?"

    def count(self, file_id: bytes, index: int, amount: int) -> None:
        """Add to a file's bytes read (index 0) or written (1), journaled at CLOSE."""
        counters = self.local.__dict__.get("transfers", {})
        if file_id in counters:
            counters[file_id][index] += amount

    def _read(self, conn_id: str, server: Any, packet: Any) -> Any:
        commands, packets, status = self._original[smb2.SMB2_READ](conn_id, server, packet)
        if status == STATUS_SUCCESS:
            self.count(smb2.SMB2Read(packet["Data"])["FileID"].getData(), 0,
                       commands[0]["DataLength"])
        return commands, packets, status

    def _write(self, conn_id: str, server: Any, packet: Any) -> Any:
        request = smb2.SMB2Write(packet["Data"])
        commands, packets, status = self._original[smb2.SMB2_WRITE](conn_id, server, packet)
        if status == STATUS_SUCCESS:
            self.count(request["FileID"].getData(), 1, request["Length"])
        return commands, packets, status

    def _close(self, conn_id: str, server: Any, packet: Any) -> Any:
        conn = self.getConnectionData(conn_id)
        request = smb2.SMB2Close(packet["Data"])
        file_id = request["FileID"].getData()
        opened = conn["OpenedFiles"].get(file_id)
        tree = self._tree(conn_id, packet)
        written = self.local.__dict__.get("transfers", {}).pop(file_id, [0, 0])
        if opened is not None and tree is not None and tree.get("path"):
            name = opened["FileName"]
            if opened["DeleteOnClose"] and os.path.isdir(name):
                root = os.path.realpath(tree["path"])
                if os.path.realpath(name) == root or os.listdir(name):
                    self.session.event("delete", f"{_shown(tree, name)} refused: the share root "
                                                 "or not empty")
                    opened["DeleteOnClose"] = False
                    status = STATUS_ACCESS_DENIED if os.path.realpath(name) == root \
                        else STATUS_DIRECTORY_NOT_EMPTY
                    self._original[smb2.SMB2_CLOSE](conn_id, server, packet)
                    return [smb2.SMB2Error()], None, status
            handle = opened.get("FileHandle")
            if written[1] and isinstance(handle, int) and handle > 0:
                os.fsync(handle)  # what the client wrote is durable once CLOSE answers
            if written[0] or written[1]:
                self.session.event("transfer", f"{_shown(tree, name)} read {written[0]} "
                                               f"bytes, wrote {written[1]} bytes")
            if opened["DeleteOnClose"]:
                self.session.event("delete", f"{_shown(tree, name)} (on close)")
        return self._original[smb2.SMB2_CLOSE](conn_id, server, packet)

    # --- stopping

    def close_connections(self) -> None:
        self.stopping = True
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
