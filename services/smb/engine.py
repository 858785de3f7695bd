"""impacket's SMB server with the lab's rules: a subclass and hooks on its SMB2 commands.

impacket 0.13.1's server was written as a pentest tool; as a lab server it needs these
fixes (library-facts.md; each has a test in tests/smb/test_clients.py):

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
- IPC$ had an empty path, so CREATE names resolved against the process's working
  directory (the data directory in the container: lab.db and its NT hashes): here IPC$
  opens the lab's named pipes only (srvsvc, in memory: services.smb.srvsvc), anything
  else is STATUS_OBJECT_NAME_NOT_FOUND, and a pipe open takes only pipe requests.
- Its srvsvc listed one global share table to everybody, through a thread and a
  loopback TCP port per server: services.smb.srvsvc lists what the user may open.
- CREATE answered CreateAction = the request's disposition (4 and 5 are no action in
  MS-SMB2 2.2.14; smbprotocol refuses them) and never set ChangeTime.
- Paths were checked by impacket's own jail, with its own folding ("//x" is "/x"), search
  patterns could climb ("../bob/*"), file ids worked in any tree of the connection, and
  TREE_CONNECT parsed the share name apart from the lab's rule: services.smb.rules, and
  impacket gets the canonical names the lab's path rule returns (renames are the lab's).
- READ/WRITE lengths were not checked against the MaxReadSize/MaxWriteSize announced,
  and messages of any length (16 MiB) were read whole: services.smb.rules and .wire.
- A NEGOTIATE without 2.0.2 got 2.0.2 anyway (SMB2) or a traceback and the SMB1 code
  (SMB1): services.smb.negotiate answers as Windows does.
- A connection that went left its open files (and the store's connection of its thread)
  behind: the handler releases everything at the end; connections are limited in all
  and per address (services.smb.limits).
- A failed WRITE said ACCESS_DENIED even on a full disk: STATUS_DISK_FULL here.
- Setting the end of file wrote a zero byte at the new size - 1 instead of truncating:
  a file made shorter kept its length and lost a byte; here it is ftruncate.
- A WRITE starting past the end of the file was dropped while answering success; plain
  READs and WRITEs are answered by services.smb.fastpath (pwrite), 4x faster too.
- A directory deleted on close was removed with shutil.rmtree, contents and all, and the
  share root itself could be: here only empty directories below the root are removed.
- It granted no oplock or lease (clients could not cache a file they alone had open) and
  kept each connection's opens apart: services.smb.oplocks is the open table of all
  connections; breaks go out on the holder's connection (Link) and the CREATE that
  caused them waits for the acknowledgment (OPLOCK_BREAK, which impacket lacks) or
  [smb] oplock_break_timeout (tests/smb/test_leases.py).
- Its CLOSE of a file another connection had renamed failed (it stats the file by the
  name its own open kept) and kept the entry whose descriptor it had already closed:
  a rename renames every connection's opens, and such an entry goes (test_leases.py).
- It opened a descriptor for every CREATE without a bound: [smb] max_open_files
  (services.smb.limits; test_resources.py).
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

from impacket import smb, uuid
from impacket import smb3structs as smb2
from impacket.nt_errors import (
    STATUS_ACCESS_DENIED,
    STATUS_BAD_NETWORK_NAME,
    STATUS_BUFFER_OVERFLOW,
    STATUS_BUFFER_TOO_SMALL,
    STATUS_DIRECTORY_NOT_EMPTY,
    STATUS_DISK_FULL,
    STATUS_FILE_CLOSED,
    STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_HANDLE,
    STATUS_INVALID_INFO_CLASS,
    STATUS_INVALID_PARAMETER,
    STATUS_LOGON_FAILURE,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_NO_MORE_FILES,
    STATUS_NO_SUCH_FILE,
    STATUS_NOT_SUPPORTED,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_INVALID,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_SUCCESS,
    STATUS_TOO_MANY_OPENED_FILES,
)
from impacket.smbserver import PIPE_FILE_DESCRIPTOR, SMBSERVER

from .. import listeners, paths
from ..store import is_disk_full
from . import (
    compound,
    credits,
    dialects,
    fastpath,
    fileinfo,
    listing,
    mechlistmic,
    negotiate,
    oplocks,
    packing,
    rules,
    structures,
    wire,
)
from .access import IPC, Denied, StoreCredentials, grant, share_name, visible
from .limits import ConnectionLimits, open_refusal
from .srvsvc import SrvsvcPipe

log = logging.getLogger(__name__)
structures.remember_field_lookups()
IDLE_TIMEOUT = 300  # seconds a connection may stay silent
DISPOSITIONS = {0: "supersede", 1: "open", 2: "create", 3: "open-if", 4: "overwrite",
                5: "overwrite-if"}
# CreateAction (MS-SMB2 2.2.14) for each disposition, when the file (was there, was not);
# impacket echoes the disposition, and 4 and 5 mean nothing there.
SUPERSEDED, OPENED, CREATED, OVERWRITTEN = 0, 1, 2, 3
ANY_TREE = 0xFFFFFFFF  # a related request's TreeId: the previous one's (MS-SMB2 3.3.5.2.7.2)
CREATE_ACTIONS = {0: (SUPERSEDED, CREATED), 1: (OPENED, OPENED), 2: (CREATED, CREATED),
                  3: (OPENED, CREATED), 4: (OVERWRITTEN, OVERWRITTEN), 5: (OVERWRITTEN, CREATED)}
PIPES = {"srvsvc"}  # the named pipes IPC$ serves
# What a pipe open takes; anything else on it (QUERY_INFO, ...) would reach impacket's
# file code with a name that is no file.
PIPE_REQUESTS = {smb2.SMB2_READ, smb2.SMB2_WRITE, smb2.SMB2_IOCTL, smb2.SMB2_CLOSE, smb2.SMB2_FLUSH}
OVERWRITING = {0, 4, 5}  # supersede, overwrite, overwrite-if: an existing file's data goes
RECONNECTS = (b"DHnC", b"DH2C")  # durable handle reconnects (none kept to reconnect to)


def _ntlm_message_type(blob: bytes) -> int:
    at = blob.find(b"NTLMSSP\x00")
    if at < 0 or len(blob) < at + 12:
        return 0
    return struct.unpack("<I", blob[at + 8:at + 12])[0]


def _shown(tree: dict, real: str) -> str:
    """A file as the journal shows it: SHARE\\path\\below."""
    below = os.path.relpath(real, tree["path"])
    return tree["shareName"] + ("" if below == "." else "\\" + below.replace("/", "\\"))


def _status_of(error: OSError) -> int:
    return STATUS_DISK_FULL if is_disk_full(error) else STATUS_ACCESS_DENIED  # as impacket


def _error(status: int) -> tuple[list, None, int]:
    return [smb2.SMB2Error()], None, status


def _bounded(data: bytes, grants: list[int]) -> bytes:
    """The chain with each message's CreditRequest set to what the window grants it:
    impacket echoes a request's CreditRequest as the reply's grant."""
    if data[:4] != compound.MAGIC:
        return data  # an SMB1 NEGOTIATE
    pieces, at = [], 0
    for (start, _), credit in zip(compound.split(data), grants, strict=True):
        if struct.unpack_from("<H", data, start + 14)[0] != credit:
            pieces += [data[at:start + 14], struct.pack("<H", credit)]
            at = start + 16
    return b"".join([*pieces, data[at:]]) if pieces else data


def _append(path: str, line: bytes) -> None:
    """A line to a key log: O_APPEND keeps lines whole when processes share the file."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _sync(handle: int, name: str) -> None:
    """What the client wrote, and the file's name in its directory, durable (CLOSE)."""
    os.fsync(handle)
    directory = os.open(os.path.dirname(name), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Link:
    """How to reach a connection from another one's thread: its socket (sends under
    `sending`), its keys, and what its NEGOTIATE said (ClientGuid: a lease's owner)."""

    def __init__(self, sock: socket.socket, crypto: dialects.Connection, peer: str) -> None:
        self.socket, self.crypto, self.peer = sock, crypto, peer
        self.sending = threading.Lock()
        self.client = b""  # ClientGuid
        self.sealed = False  # its last request came sealed: so do its breaks

    def send(self, message: bytes) -> bool:
        """A message the server sends on its own (a break notification): sealed when the
        session seals (MS-SMB2 3.3.4.6, 3.3.4.1.4); False if the connection is gone."""
        crypto = self.crypto
        if crypto.encryption_key and (crypto.encrypt_all or self.sealed):
            message = crypto.encrypt(message)
        try:
            with self.sending:
                wire.send(self.socket, message)
        except OSError:
            return False  # going: its thread's finish() drops its opens
        return True


class Handler(socketserver.BaseRequestHandler):
    """One connection: SMB over TCP framing, then impacket's processRequest.

    Replaces impacket's SMBSERVERHandler to journal the connection, to bound what one
    message may be, to turn SMB1 away, to end quietly (impacket prints tracebacks to
    stderr for every dropped connection) and to release all the connection held."""

    server: LabSMBServer
    window: credits.Window  # the connection's MessageIds (services.smb.credits)

    def handle(self) -> None:
        server = self.server
        ip, port = self.client_address[:2]
        conn_id = threading.current_thread().name
        local = server.local
        local.session = server.journal.open("smb", f"{ip}:{port}")
        local.ip = ip
        local.signing = None  # the smb.signing-required fault on this connection, if any
        local.announced = False  # its NEGOTIATE said signing is required
        local.challenge = os.urandom(8)
        local.crypto = dialects.Connection()
        # what another connection's thread needs to send this one a break (_settle)
        local.link = link = Link(self.request, local.crypto, f"{ip}:{port}")
        server.links[conn_id] = link
        self.window = credits.Window()
        server.addConnection(conn_id, ip, port)
        server.connections.add(self.request)
        wire.blocking_with_timeout(self.request, IDLE_TIMEOUT)
        reader = wire.Reader(self.request)
        reason = "client closed"
        try:
            while True:
                kind, data = reader.receive(local.crypto.max_io + rules.HEADROOM)
                if kind == wire.SESSION_REQUEST:
                    wire.positive_response(self.request)
                    continue
                if kind != wire.SESSION_MESSAGE:
                    continue  # keep-alive
                if data[:4] == b"\xffSMB" and not negotiate.smb1_offers_smb2(data):
                    if data[4:5] == bytes([negotiate.SMB1_NEGOTIATE]):
                        wire.send(self.request, negotiate.smb1_no_common_dialect(data))
                    reason = "SMB1 refused (SMB1 is off; SMB2 needed)"
                    break
                link.sealed = data[:4] == dialects.TRANSFORM_MAGIC
                for reply in self._answer(conn_id, data):
                    with link.sending:  # (a break from another thread goes whole, between)
                        wire.send(self.request, reply)
        except TimeoutError:
            reason = "idle timeout"
        except (wire.TooLong, dialects.Refused) as error:
            reason = str(error)
        except OSError:
            reason = "connection lost" if not server.stopping else "server stopping"
        except Exception as error:  # a request impacket could not parse: drop this client
            reason = f"error: {type(error).__name__}: {error}"
            log.debug("smb connection %s:%s", ip, port, exc_info=True)
        finally:
            local.session.close(reason)

    def _answer(self, conn_id: str, data: bytes) -> list[bytes | bytearray]:
        """The replies to one SMB2 message: unsealed if sealed, admitted (credits,
        signatures: _admit), answered by the fast path or impacket, signed as the dialect
        signs, sealed when the session encrypts; the 3.1.1 preauth hash follows NEGOTIATE
        and SESSION_SETUP on the way, and the window learns the credits the replies grant."""
        crypto = self.server.local.crypto
        sealed = data[:4] == dialects.TRANSFORM_MAGIC
        if sealed:
            data = crypto.decrypt(data)
        command = struct.unpack_from("<H", data, 12)[0] if data[:4] == b"\xfeSMB" else -1
        if command < 0:
            self.window.consume(0, 1)  # an SMB1 NEGOTIATE takes id 0 (MS-SMB2 3.3.5.3.1)
            replies = self._process(conn_id, data, command, [1])
        else:
            grants, refused = self._admit(data, sealed)
            if refused is not None:
                replies = [refused]
            elif crypto.encrypt_all and not sealed and command not in (smb2.SMB2_NEGOTIATE,
                                                                       smb2.SMB2_SESSION_SETUP):
                # MS-SMB2 3.3.5.2.9: a session that encrypts takes no message in clear
                replies = [crypto.sign(dialects.error_reply(data, STATUS_ACCESS_DENIED))]
            else:
                replies = self._process(conn_id, data, command, grants)
        for reply in replies:
            if reply[:4] == b"\xfeSMB":
                self.window.granted(sum(struct.unpack_from("<H", reply, start + 14)[0]
                                        for start, _ in compound.split(reply)))
        if (sealed or (crypto.encrypt_all and command != smb2.SMB2_SESSION_SETUP)) and crypto.encryption_key:
            replies = [crypto.encrypt(reply) for reply in replies]
        return replies

    def _process(self, conn_id: str, data: bytes, command: int, grants: list[int]) -> list[bytes | bytearray]:
        """The replies to an admitted chain, granting `grants` credits (one a message)."""
        server, crypto = self.server, self.server.local.crypto
        if command == smb2.SMB2_SESSION_SETUP:
            if not struct.unpack_from("<Q", data, 40)[0]:  # SessionId 0: a new session
                crypto.reset_session()
            crypto.client_requires_signing = bool(data[67] & smb2.SMB2_NEGOTIATE_SIGNING_REQUIRED)
            crypto.hash_session(data)
        crypto.request_signed = bool(data[16] & dialects.SIGNED)  # (a chain signs all or none)
        fast = fastpath.answer(server.getConnectionData(conn_id, checkStatus=False), data, crypto,
                               grants[0])
        if fast is not None:
            reply, file_id, counter, count = fast
            server.count(file_id, counter, count)
            replies: list[bytes | bytearray] = [reply]
        else:
            alone = server.answer_alone(conn_id, data, grants)
            replies = [alone] if alone is not None else [
                r.getData() if hasattr(r, "getData") else r
                for r in server.processRequest(conn_id, _bounded(data, grants))]
        if command == smb2.SMB2_NEGOTIATE and replies:
            crypto.hash_negotiate(data, replies[0])
        elif command == smb2.SMB2_SESSION_SETUP and replies and \
                struct.unpack_from("<I", replies[0], 8)[0] == STATUS_MORE_PROCESSING_REQUIRED:
            crypto.hash_session(replies[0])
        return replies

    def _admit(self, data: bytes, sealed: bool) -> tuple[list[int], bytes | None]:
        """Each message of the chain checked before anything answers it: its MessageIds
        spent from the credit window (outside it the connection ends: Refused), its
        CreditCharge enough for its READ/WRITE (MS-SMB2 3.3.5.2.5), its signature right
        when it is not sealed (dialects.Connection.refusal). Returns the credits the window
        grants each message, and the chain's error replies when a check fails (else None)."""
        crypto, window = self.server.local.crypto, self.window
        try:
            spans = compound.split(data)
        except compound.Malformed as error:
            raise dialects.Refused(str(error)) from error
        grants, problems, promised = [], [], 0
        for start, end in spans:
            charge, command, asked = struct.unpack_from("<H4xHH", data, start + 6)
            if crypto.dialect == dialects.SMB202:
                charge = 1  # CreditCharge is reserved in 2.0.2: one credit a request
            message_id = struct.unpack_from("<Q", data, start + 24)[0]
            if command == smb2.SMB2_NEGOTIATE:
                window.begin_at(message_id)
            if command != smb2.SMB2_CANCEL and not window.consume(message_id, charge):
                raise dialects.Refused(
                    f"MessageId {message_id} (charge {charge}) outside the credit window "
                    f"[{window.low}, {window.high})")
            grants.append(window.offer(asked, promised))
            promised += grants[-1]
            problem = None
            if crypto.dialect != dialects.SMB202 and command in (smb2.SMB2_READ, smb2.SMB2_WRITE) \
                    and end - start >= 72:
                length = struct.unpack_from("<I", data, start + 68)[0]
                if credits.needed(length) > max(charge, 1):
                    problem = (STATUS_INVALID_PARAMETER, f"CreditCharge {charge} for {length} bytes")
            why = None if sealed or problem else crypto.refusal(memoryview(data)[start:end])
            if why:
                problem = (STATUS_ACCESS_DENIED, why)
                fault = self.server.local.signing
                if fault is not None and why.startswith("unsigned"):  # the fault's doing
                    self.server.session.event("fault", f"{fault.kind} #{fault.id}: an unsigned "
                                                       "request refused (ACCESS_DENIED)")
            if problem:
                self.server.session.event("refused", f"command 0x{command:02x} MessageId "
                                                     f"{message_id}: {problem[1]}")
            problems.append(problem)
        if any(problems):
            return grants, compound.join([
                self._refused(data[start:end], problem or (STATUS_ACCESS_DENIED, ""), credit)
                for (start, end), problem, credit in zip(spans, problems, grants, strict=True)])
        return grants, None

    def _refused(self, request: bytes, problem: tuple[int, str], credit: int) -> bytes:
        """The error reply to one refused request: signed, unless its own signature was the
        problem (MS-SMB2 3.3.5.2.4: the client cannot trust that session's key here)."""
        reply = bytearray(dialects.error_reply(request, problem[0]))
        struct.pack_into("<H", reply, 14, credit)
        crypto = self.server.local.crypto
        signature_problem = problem[0] == STATUS_ACCESS_DENIED
        return crypto.sign(bytes(reply)) if crypto.signing_key and not signature_problem else bytes(reply)

    def finish(self) -> None:
        """Whatever way the connection went: its open files, impacket's state for it, the
        store's connection of this thread and its place in the limits go too."""
        server = self.server
        conn_id = threading.current_thread().name
        conn = server.getActiveConnections().get(conn_id)
        if conn is not None:
            release_files(conn)
        server.opens.drop(conn_id)
        server.links.pop(conn_id, None)
        server.removeConnection(conn_id)
        server.connections.discard(self.request)
        server.limits.leave(self.client_address[0])
        server.store.db.release()


def release_files(conn: dict) -> None:
    """Close what a connection's open files hold (descriptors, pipe sockets)."""
    for opened in conn.get("OpenedFiles", {}).values():
        handle = opened.get("FileHandle")
        try:
            if handle == PIPE_FILE_DESCRIPTOR:
                opened["Socket"].close()
            elif isinstance(handle, int) and handle > 0:
                os.close(handle)
        except (OSError, KeyError):
            pass
    conn["OpenedFiles"] = {}


class LabSMBServer(SMBSERVER):
    daemon_threads = True  # a client that never closes must not keep the process alive
    block_on_close = False

    def __init__(self, listening: socket.socket, lab: Any, settings: Any) -> None:
        self._listening = listening
        # socketserver's own (impacket's base is untyped, so say its type): __init__ below
        # makes a new one, which server_bind swaps for this one
        self.socket: socket.socket = listening
        self.lab, self.settings = lab, settings
        self.store, self.journal = lab.store, lab.journal
        self.local = threading.local()
        self.connections: set[socket.socket] = set()
        self.limits = ConnectionLimits(settings.max_connections, settings.max_connections_per_peer)
        self.opens = oplocks.OpenTable()  # every connection's opens: oplocks, leases, breaks
        self.links: dict[str, Link] = {}  # each connection, for the breaks sent to it
        self.stopping = False
        self.guid = os.urandom(16)  # impacket's is b"A" * 16 for every server
        super().__init__(listening.getsockname()[:2], handler_class=Handler,
                         config_parser=self._config())
        self.processConfigFile()
        self._credentials = StoreCredentials(lab.credentials)
        self._hook()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """An IPv4 client of the dual-stack socket is its IPv4 address to the lab."""
        request, address = self.socket.accept()
        return request, (listeners.client_address(address[0]), address[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Over a connection limit: socketserver closes the socket at once."""
        refused = self.limits.admit(client_address[0])
        if refused is not None:
            self.journal.open("smb", f"{client_address[0]}:{client_address[1]}").close(refused)
        return refused is None

    # --- the pre-bound socket (bound in the reactor thread, so `ready` means listening)

    def server_bind(self) -> None:
        self.socket.close()  # socketserver's own, made in its __init__
        self.socket = self._listening
        self.server_address = self._listening.getsockname()

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
        return config  # no shares: TREE_CONNECT is the lab's (access.grant)

    # --- what impacket asks the server for

    def getCredentials(self) -> StoreCredentials:
        return self._credentials

    def getSMBChallenge(self) -> bytes:
        return self.local.challenge

    # --- hooks on SMB2 commands

    def _hook(self) -> None:
        self._original: dict[int, Any] = {}
        hooks = {smb2.SMB2_NEGOTIATE: self._negotiate, smb2.SMB2_SESSION_SETUP: self._session_setup,
                 smb2.SMB2_TREE_CONNECT: self._tree_connect, smb2.SMB2_CREATE: self._create,
                 smb2.SMB2_SET_INFO: self._set_info, smb2.SMB2_READ: self._read,
                 smb2.SMB2_WRITE: self._write, smb2.SMB2_QUERY_DIRECTORY: self._query_directory,
                 smb2.SMB2_QUERY_INFO: self._query_info,
                 smb2.SMB2_CLOSE: self._close}
        for command in [*range(smb2.SMB2_OPLOCK_BREAK), 0xFF]:  # every command impacket has
            hook = hooks.get(command)
            self._original[command] = self.hookSmb2Command(
                command, self._guarded(command, hook or (lambda *args, c=command: self._original[c](*args))))
        # impacket has no OPLOCK_BREAK (it grants no oplock): the acknowledgments are the lab's
        self.hookSmb2Command(smb2.SMB2_OPLOCK_BREAK,
                             self._guarded(smb2.SMB2_OPLOCK_BREAK, self._oplock_break))
        self.getIoctls()[smb2.FSCTL_VALIDATE_NEGOTIATE_INFO] = self._validate_negotiate

    def _guarded(self, command: int, handler: Any) -> Any:
        """`handler` behind the lab's rules for every request (services.smb.rules), and
        STATUS_INVALID_PARAMETER rather than a dropped connection when a malformed request
        makes impacket's code raise."""
        def run(conn_id: str, server: Any, packet: Any, *more: Any) -> Any:
            try:
                refused = self._refusal(conn_id, command, packet)
                return _error(refused) if refused else handler(conn_id, server, packet, *more)
            except Exception as error:
                if more:  # an SMB1 NEGOTIATE: impacket's own fallback takes it
                    raise
                log.debug("smb command 0x%x", command, exc_info=True)
                return _error(STATUS_DISK_FULL if is_disk_full(error) else STATUS_INVALID_PARAMETER)
        return run

    def _refusal(self, conn_id: str, command: int, packet: Any) -> int:
        """The status a request gets before impacket sees it, or 0 to let it through."""
        conn = self.getConnectionData(conn_id, checkStatus=False)
        if not conn.get("Authenticated") or command not in rules.FILE_ID_REQUESTS:
            return 0
        body = packet["Data"]
        opened = conn["OpenedFiles"].get(rules.file_id(conn, command, body))
        if opened is not None and opened.get("LabTree") != packet["TreeID"]:
            return STATUS_FILE_CLOSED  # a file id of another tree of this connection
        if opened is not None and opened["FileHandle"] == PIPE_FILE_DESCRIPTOR \
                and command not in PIPE_REQUESTS:
            return STATUS_INVALID_DEVICE_REQUEST
        max_io = self.local.crypto.max_io
        if command == smb2.SMB2_READ and smb2.SMB2Read(body)["Length"] > max_io:
            return STATUS_INVALID_PARAMETER
        if command == smb2.SMB2_WRITE and smb2.SMB2Write(body)["Length"] > max_io:
            return STATUS_INVALID_PARAMETER
        if command == smb2.SMB2_QUERY_DIRECTORY:
            pattern = smb2.SMB2QueryDirectory(body)["Buffer"].decode("utf-16le", "replace")
            try:
                rules.search_pattern(pattern)
            except paths.PathError as error:
                self.session.event("query-directory", f"pattern {pattern!r} refused: {error}")
                return STATUS_OBJECT_NAME_INVALID
        return 0

    def _security_mode(self) -> int:
        mode = smb2.SMB2_NEGOTIATE_SIGNING_ENABLED
        required = self.settings.signing_required or self.local.announced
        return mode | smb2.SMB2_NEGOTIATE_SIGNING_REQUIRED if required else mode

    # --- faults (services/faults.py; the kinds are FAULTS in __init__.py)

    def _fault(self, kind: str, *targets: str | None) -> Any:
        """The fault of `kind` on for this client (its address or `targets`), journaled."""
        fault = self.lab.faults.find(f"smb.{kind}", self.local.ip, *targets)
        if fault is not None:
            self.session.event("fault", f"{fault.kind} #{fault.id}")
        return fault

    def _validate_negotiate(self, conn_id: str, server: Any, request: Any) -> tuple[bytes, int]:
        """What NEGOTIATE said, again: a signing client compares the two and hangs up on any
        difference (impacket always says "signing enabled, not required")."""
        crypto = self.local.crypto
        answer = smb2.VALIDATE_NEGOTIATE_INFO_RESPONSE()
        answer["Capabilities"] = crypto.capabilities()
        answer["Guid"] = self.guid
        answer["SecurityMode"] = self._security_mode()
        answer["Dialect"] = crypto.dialect
        return answer.getData(), STATUS_SUCCESS

    @property
    def session(self) -> Any:
        return self.local.session

    def _negotiate(self, conn_id: str, server: Any, packet: Any, isSMB1: bool = False) -> Any:  # noqa: N803
        crypto = self.local.crypto
        offer, dialect = None, dialects.SMB202
        if not isSMB1:  # (an SMB1 NEGOTIATE got here only if it offers SMB 2: Handler)
            offer = dialects.parse_offer(packet.getData())
            if offer is None or negotiate.smb2_dialects(packet["Data"]) is None:
                self.session.event("negotiate", "malformed: refused")
                return _error(STATUS_INVALID_PARAMETER)
            self.local.link.client = bytes(packet["Data"][12:28])  # ClientGuid: owns its leases
            chosen = dialects.choose(offer)
            if chosen is None:
                offered = " ".join(f"0x{d:04x}" for d in offer.dialects)
                self.session.event("negotiate", f"no common dialect (offered {offered})")
                return _error(STATUS_NOT_SUPPORTED)
            dialect = chosen
        if self.local.signing is None:  # the login is not known yet: only the address
            self.local.signing = self._fault("signing-required")
            self.local.announced = self.local.signing is not None
        commands, packets, status = self._original[smb2.SMB2_NEGOTIATE](conn_id, server, packet, isSMB1)
        # impacket grants 1 credit here whatever was asked; the request's CreditRequest is
        # already what the credit window grants (Handler._admit)
        if not isSMB1:
            packets[0]["CreditRequestResponse"] = packet["CreditRequestResponse"]
        answer = packets[0]["Data"]
        answer["SecurityMode"] = self._security_mode()
        answer["ServerGuid"] = self.guid
        if offer is None:
            # SMB1 multi-protocol NEGOTIATE: "SMB 2.???" asks for the wildcard, and the
            # client negotiates again in SMB2 (MS-SMB2 3.3.5.3.1); "SMB 2.002" alone: 2.0.2
            smb1 = smb.SMBCommand(packet["Data"][0])["Data"]
            dialect = dialects.WILDCARD if b"SMB 2.???\0" in smb1.split(b"\x02") else dialects.SMB202
            answer["DialectRevision"] = dialect
            self.session.event("negotiate", f"{dialects.NAMES[dialect]} (from an SMB1 negotiate)")
            return commands, packets, status
        crypto.negotiated(offer, dialect)
        answer["DialectRevision"] = dialect
        answer["Capabilities"] = crypto.capabilities()
        answer["MaxTransactSize"] = answer["MaxReadSize"] = answer["MaxWriteSize"] = crypto.max_io
        detail = ""
        if dialect == dialects.SMB311:
            contexts, count = crypto.contexts()
            blob_end = answer["SecurityBufferOffset"] + answer["SecurityBufferLength"]
            answer["NegotiateContextOffset"] = blob_end + -blob_end % 8
            answer["NegotiateContextCount"] = count
            answer["Padding"] = b"\0" * (-blob_end % 8)
            answer["NegotiateContextList"] = contexts
            detail = (f", SHA-512 preauth, signing {dialects.SIGNER_NAMES[crypto.signer]}, "
                      f"cipher {dialects.CIPHER_NAMES.get(crypto.cipher, 'none')}")
        elif dialect >= dialects.SMB300:
            detail = f", signing AES-128-CMAC, cipher {'AES-128-CCM' if crypto.cipher else 'none'}"
        self.session.event("negotiate", dialects.NAMES[dialect] + detail)
        return commands, packets, status

    def signSMBv2(self, packet: Any, session_key: bytes, padLength: int = 0) -> None:  # noqa: N803 (impacket passes padLength by name)
        """impacket's signing of a response (_sign). impacket also "signs" every request it
        receives, for nothing: skipped."""
        if not packet["Flags"] & smb2.SMB2_FLAGS_SERVER_TO_REDIR:
            return
        message = bytearray(packet.getData() + b"\0" * padLength)
        if self._sign(message, session_key):
            packet["Flags"], packet["Signature"] = packet["Flags"] | smb2.SMB2_FLAGS_SIGNED, message[48:64]

    def _sign(self, message: bytearray, session_key: bytes) -> bool:
        """`message` (a response) signed in place as the dialect signs (HMAC-SHA256,
        AES-CMAC or AES-GMAC) if the session signs it (dialects.Connection.signs: impacket
        signed every one); whether it did."""
        crypto = self.local.crypto
        if not crypto.signing_key:
            crypto.signing_key = session_key  # 2.x: the session key itself
        if not crypto.signs(dialects.SIGNED if crypto.request_signed else 0,
                            struct.unpack_from("<H", message, 12)[0]):
            return False
        message[16] |= smb2.SMB2_FLAGS_SIGNED
        message[48:64] = bytes(16)
        message[48:64] = crypto.signature(message)
        return True

    def answer_alone(self, conn_id: str, data: bytes, grants: list[int]) -> bytearray | None:
        """The reply to an SMB2 request or chain (CREATE, QUERY_INFO, CLOSE compounded, as
        Windows asks of every file), from impacket's command handlers (the lab's hooks) but
        without impacket's processRequest, which first parses every message as SMB1 (an
        exception), then builds and packs each reply through Structure objects: half the
        time of a CREATE, QUERY_INFO or CLOSE. `grants`: the credits each message's reply
        grants. A related request after a failed one fails with its status, unrun, and one
        with TreeId 0xFFFFFFFF is in the previous one's tree (MS-SMB2 3.3.5.2.7.2; impacket
        ran it, in no tree). As processRequest, "the file just created" is known
        only within a chain. None (impacket's processRequest answers) for NEGOTIATE,
        SESSION_SETUP and before a login."""
        conn = self.getConnectionData(conn_id, checkStatus=False)
        if not conn.get("Authenticated") or data[:4] != compound.MAGIC:  # (SMB1: NEGOTIATE)
            return None
        spans = compound.split(data)  # (checked already: Handler._admit)
        commands = {struct.unpack_from("<H", data, start + 12)[0] for start, _ in spans}
        if commands & {smb2.SMB2_NEGOTIATE, smb2.SMB2_SESSION_SETUP}:
            return None
        replies, failed, tree_id = [], 0, 0
        for index, ((start, end), credit) in enumerate(zip(spans, grants, strict=True)):
            message = data[start:end]
            related = message[16] & fastpath.RELATED
            if related and failed:
                reply, status = bytearray(dialects.error_reply(message, failed)), failed
                struct.pack_into("<HI", reply, 14, credit, fastpath.SERVER_TO_REDIR)
                reply[48:64] = bytes(16)  # (the request's signature: signed below if due)
            else:
                if related and struct.unpack_from("<I", message, 36)[0] == ANY_TREE:
                    message = message[:36] + struct.pack("<I", tree_id) + message[40:]
                reply, status = self._answer_one(conn_id, conn, message, credit, len(spans) > 1)
            tree_id = struct.unpack_from("<I", reply, 36)[0]
            if len(spans) > 1:  # each of a chain says so as its request did, 8-aligned
                reply[16] |= related
                if index + 1 < len(spans):
                    reply += bytes(-len(reply) % 8)
                    struct.pack_into("<I", reply, 20, len(reply))
            if conn["SignatureEnabled"]:
                self._sign(reply, conn["SigningSessionKey"])  # each message on its own
            failed = status if status >> 30 == 3 else 0  # (error severity)
            replies.append(reply)
        conn["LastRequest"] = {}
        return replies[0] if len(replies) == 1 else bytearray(b"".join(replies))

    def _answer_one(self, conn_id: str, conn: dict, message: bytes, credit: int,
                    chained: bool) -> tuple[bytearray, int]:
        """(unsigned reply, status) to one message, from the command's handler."""
        fields = fastpath.HEADER.unpack_from(message)
        command = fields[4]
        packet = structures.packet(message)
        packet["CreditRequestResponse"] = credit  # impacket's own packets echo it
        handlers = self._SMBSERVER__smb2Commands  # (name-mangled: impacket's table)
        commands, packets, status = handlers.get(command, handlers[0xFF])(conn_id, self, packet)
        if packets is not None:  # the handler built its reply (no lab hook does)
            if chained:
                raise ValueError("a handler that builds its own reply, in a chain")
            (built,) = packets
            return bytearray(built.getData()), status
        (body,) = commands  # (impacket's SMB2 handlers answer one structure)
        content = body.getData() if hasattr(body, "getData") else body.encode()
        reply = bytearray(fastpath.HEADER.size + len(content))
        fastpath.HEADER.pack_into(reply, 0, b"\xfeSMB", 64, fields[2], status, command, credit,
                                  fastpath.SERVER_TO_REDIR, 0, fields[8], fields[9],
                                  packet["TreeID"], conn["Uid"], bytes(16))
        reply[fastpath.HEADER.size:] = content
        return reply, status

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
        if message == 1 and status == STATUS_MORE_PROCESSING_REQUIRED and "NEGOTIATE_MESSAGE" in conn:
            commands[0]["Buffer"] = mechlistmic.echo_seal(commands[0]["Buffer"],
                                                          conn["NEGOTIATE_MESSAGE"]["flags"])
        if message == 3:
            user = (self.lab.credentials.smb_name("", str(conn.get("user_name") or "")) or ""
                    if status == STATUS_SUCCESS else "")
            claimed = self._claimed_user(setup["Buffer"])
            if status == STATUS_SUCCESS and not claimed:
                if not self.settings.anonymous:
                    status = STATUS_LOGON_FAILURE  # impacket would grant guest access
                conn["LabUser"] = None
                self.session.auth("anonymous", ok=status == STATUS_SUCCESS, mechanism="NTLM null session")
            elif status == STATUS_SUCCESS and self.settings.encrypt and not self.local.crypto.cipher:
                # MS-SMB2 3.3.5.5 (RejectUnencryptedAccess): this connection cannot seal
                self.session.event("session-setup", f"{user} refused: [smb] encrypt = true, and "
                                   f"{dialects.NAMES[self.local.crypto.dialect]} without a cipher "
                                   "cannot encrypt")
                status = STATUS_ACCESS_DENIED
            elif status == STATUS_SUCCESS:
                conn["LabUser"] = user
                self.session.auth(user, ok=True, mechanism="NTLMv2")
                if self.local.signing is None:
                    # Too late to say so in NEGOTIATE: a client that chose not to sign
                    # finds out at its next request (ACCESS_DENIED, _answer).
                    self.local.signing = self._fault("signing-required", user)
                crypto = self.local.crypto
                crypto.session_established(conn["Uid"], conn["SigningSessionKey"], self.settings.encrypt,
                                           self.settings.signing_required or self.local.signing is not None)
                if self.settings.keylog and crypto.smb3:
                    _append(self.settings.keylog, crypto.keylog_line(conn["SigningSessionKey"]))
                if crypto.encrypt_all:
                    commands[0]["SessionFlags"] = smb2.SMB2_SESSION_FLAG_ENCRYPT_DATA
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
        release_files(conn)
        self.opens.drop(threading.current_thread().name)
        conn["ConnectedShares"] = {}
        conn.pop("LabUser", None)
        conn["Authenticated"] = False

    def _tree_connect(self, conn_id: str, server: Any, packet: Any) -> Any:
        """The lab's own: the share is what access.grant decides for this user, named as
        share_name reads the UNC (impacket parsed it its own way and kept one global table)."""
        conn = self.getConnectionData(conn_id)
        request = smb2.SMB2TreeConnect(packet["Data"])
        unc = packet.getData()[request["PathOffset"]:][:request["PathLength"]].decode("utf-16le", "replace")
        try:
            granted = grant(self.store.files, self.store.users, conn.get("LabUser"),
                            share_name(unc), self.store.roster)
            if granted.share != IPC and self._fault("access-denied", conn.get("LabUser"),
                                                    granted.share):
                raise Denied("access denied")  # IPC$ stays: the share list still shows it
        except Denied as denied:
            self.session.event("tree-connect", f"{unc} {denied.status}")
            return _error(STATUS_ACCESS_DENIED if denied.status == "access denied"
                          else STATUS_BAD_NETWORK_NAME)
        tid = max(conn["ConnectedShares"], default=0) + 1
        conn["ConnectedShares"][tid] = {
            "shareName": granted.share, "path": granted.path, "pipe": granted.share == IPC,
            "read only": "yes" if granted.read_only else "no"}
        packet["TreeID"] = tid  # the response header echoes it
        answer = smb2.SMB2TreeConnect_Response()
        answer["ShareType"] = smb2.SMB2_SHARE_TYPE_PIPE if granted.share == IPC else smb2.SMB2_SHARE_TYPE_DISK
        answer["ShareFlags"] = 0x30 if granted.share == IPC else 0  # no client-side caching
        answer["Capabilities"] = 0
        answer["MaximalAccess"] = 0x001200A9 if granted.read_only else 0x001F01FF
        self.session.event("tree-connect", f"{unc} ok{' read-only' if granted.read_only else ''}")
        return [answer], None, STATUS_SUCCESS

    def _tree(self, conn_id: str, packet: Any) -> dict | None:
        return self.getConnectionData(conn_id)["ConnectedShares"].get(packet["TreeID"])

    def _create(self, conn_id: str, server: Any, packet: Any) -> Any:
        tree = self._tree(conn_id, packet)
        if tree is None:
            return self._original[smb2.SMB2_CREATE](conn_id, server, packet)  # STATUS_SMB_BAD_TID
        request = packing.CreateRequest(packet["Data"])
        name = request["Buffer"][:request["NameLength"]].decode("utf-16le", "replace")
        contexts = oplocks.create_contexts(packet["Data"], request["CreateContextsOffset"],
                                           request["CreateContextsLength"])
        refused = self._open_refusal(conn_id, tree, name, contexts)
        if refused:
            return _error(refused)
        if tree["pipe"]:  # IPC$: named pipes only
            return self._open_pipe(conn_id, packet, name, request["CreateOptions"])
        try:
            canonical = rules.canonical(name)
            resolved = paths.resolve(tree["path"], canonical)
        except paths.PathError as error:
            self.session.event("create", f"{tree['shareName']}\\{name} refused: {error}")
            return _error(STATUS_OBJECT_NAME_INVALID)
        packet["Data"] = request.with_name(canonical)
        real = str(resolved)
        existed = os.path.lexists(real)
        wanted = self._wanted(request["RequestedOplockLevel"], contexts)
        refused = self._break_for(conn_id, f"{tree['shareName']}\\{name}", real, wanted,
                                  existed and request["CreateDisposition"] in OVERWRITING)
        if refused:
            self.session.event("create", f"{tree['shareName']}\\{name} refused: lease key in use")
            return _error(refused)
        commands, packets, status = self._open(conn_id, server, packet, request, tree, canonical)
        options = request["CreateOptions"]
        detail = " ".join(filter(None, [
            DISPOSITIONS.get(request["CreateDisposition"], str(request["CreateDisposition"])),
            "dir" if options & smb2.FILE_DIRECTORY_FILE else "",
            "delete-on-close" if options & smb2.FILE_DELETE_ON_CLOSE else ""]))
        if status == STATUS_SUCCESS:
            actions = CREATE_ACTIONS.get(request["CreateDisposition"], (OPENED, CREATED))
            commands[0]["CreateAction"] = actions[0 if existed else 1]
            # impacket fills "LastChangeTime", a field its own structure does not have
            commands[0]["ChangeTime"] = commands[0].fields.get("LastChangeTime", 0)
            file_id = commands[0]["FileID"]  # impacket puts the bytes of a new id here
            file_id = file_id if isinstance(file_id, bytes) else file_id.getData()
            opened = self.getConnectionData(conn_id)["OpenedFiles"][file_id]
            opened["LabTree"], opened["LabAccess"] = packet["TreeID"], request["DesiredAccess"]
            opened["LabFileId"], opened["LabPath"] = file_id, real
            self.local.__dict__.setdefault("transfers", {})[file_id] = [0, 0]
            detail += self._grant(conn_id, file_id, real, wanted, commands[0], os.path.isdir(real))
        self.session.event("create", f"{tree['shareName']}\\{name} {detail} -> "
                                     f"{'ok' if status == STATUS_SUCCESS else hex(status)}")
        return commands, packets, status

    # --- open files across connections: the cap, oplocks and leases (services.smb.oplocks)

    def _open_refusal(self, conn_id: str, tree: dict, name: str, contexts: dict) -> int:
        """The status a CREATE gets before anything opens: the connection's cap on open
        files ([smb] max_open_files; smbd's answer), a durable reconnect (MS-SMB2 3.3.5.9.7:
        no durable handle is granted, so none is found), or 0."""
        why = open_refusal(len(self.getConnectionData(conn_id)["OpenedFiles"]),
                           self.settings.max_open_files)
        if why:
            self.session.event("create", f"{tree['shareName']}\\{name} {why}")
            return STATUS_TOO_MANY_OPENED_FILES
        if any(kind in contexts for kind in RECONNECTS):
            self.session.event("create", f"{tree['shareName']}\\{name} refused: a durable "
                                         "handle reconnect (no durable handles are granted)")
            return STATUS_OBJECT_NAME_NOT_FOUND
        return 0

    def _wanted(self, level: int, contexts: dict) -> oplocks.Request:
        """What a CREATE asks to cache: a lease (from 2.1 on, V2 from 3.0 on) or an oplock."""
        dialect = self.local.crypto.dialect
        lease = oplocks.parse_lease_context(contexts.get(b"RqLs", b"")) \
            if level == oplocks.LEASE and dialects.SMB210 <= dialect != dialects.WILDCARD else None
        if lease is None:
            return oplocks.Request(oplocks.NONE if level == oplocks.LEASE else level)
        key, state, version, epoch = lease
        return oplocks.Request(oplocks.LEASE, self._lease_client(), key, state,
                               version if dialect >= dialects.SMB300 else 1, epoch)

    def _lease_client(self) -> bytes:
        """Whose leases this connection's are: its ClientGuid (MS-SMB2 3.3.1.13), and its
        user, since a ClientGuid is only what a client says (one seen in a capture must
        not let another user share, or acknowledge, that client's lease)."""
        user = self.getConnectionData(threading.current_thread().name).get("LabUser") or ""
        return self.local.link.client + user.encode()

    def _break_for(self, conn_id: str, shown: str, path: str, wanted: oplocks.Request,
                   overwrite: bool) -> int:
        """The breaks a new open of `path` causes, sent and settled (twice at most: an
        open that came meanwhile waited for a break on its way, and may need its own);
        0, or the status refusing the open."""
        for _ in range(2):
            breaks = self.opens.opening(conn_id, path, wanted, overwrite)
            if isinstance(breaks, int):
                return breaks
            if not breaks:
                break
            self._settle(conn_id, shown, breaks)
        return 0

    def _settle(self, conn_id: str, shown: str, breaks: list[oplocks.Break],
                wait: bool = True) -> None:
        """Send each break to its holder, then (if `wait`) wait for the acknowledgments of
        the holders on other connections, [smb] oplock_break_timeout at most (a holder on
        this one cannot answer while its own request waits: its acknowledgment comes after)."""
        for each in breaks:
            link = self.links.get(str(each.owner))
            if each.body and link is not None:
                sent = link.send(oplocks.notification(each.body))
                self.session.event("oplock-break", f"{shown}: {each.text}"
                                   f"{' (acknowledgment required)' if each.ack_required else ''}"
                                   f" sent to {link.peer}{'' if sent else ': connection gone'}")
        waiting = [each for each in breaks if wait and each.ack_required and each.owner != conn_id]
        timeout = self.settings.oplock_break_timeout
        if waiting and not self.opens.settle(waiting, timeout):
            self.session.event("oplock-break", f"{shown}: no acknowledgment within {timeout:g} s "
                                               "(oplock_break_timeout): broken without")

    def _grant(self, conn_id: str, file_id: bytes, path: str, wanted: oplocks.Request,
               answer: Any, directory: bool) -> str:
        """The new open in the table, and what it may cache in its CREATE response
        (OplockLevel, the lease context). Durable handle requests (DHnQ, DH2Q) are
        declined by answering without their context: Windows copies without them."""
        granted = self.opens.grant(conn_id, file_id, path, wanted, directory)
        answer["OplockLevel"] = granted.level
        if granted.lease is None:
            return f" oplock {oplocks.LEVEL_NAMES[granted.level]}" if granted.level else ""
        context = oplocks.create_context(b"RqLs", oplocks.lease_context_data(granted.lease,
                                                                              granted.flags))
        answer["CreateContextsOffset"] = 64 + 88  # the header, the fixed response (2.2.14)
        answer["CreateContextsLength"] = len(context)
        answer["Buffer"] = context
        return f" lease {oplocks.state_name(granted.lease.state)}"

    def _oplock_break(self, conn_id: str, server: Any, packet: Any) -> Any:
        """An oplock or lease break acknowledgment (MS-SMB2 3.3.5.22): the table's state
        moves on (and what waits for it), the reply says the level or state now."""
        conn = self.getConnectionData(conn_id, checkStatus=False)
        body = bytes(packet["Data"])
        if not conn.get("Authenticated"):
            return _error(STATUS_ACCESS_DENIED)
        size = struct.unpack_from("<H", body)[0] if len(body) >= 2 else 0
        if size == 24 and len(body) >= oplocks.OPLOCK_BREAK.size:
            _, level, _, _, file_id = oplocks.OPLOCK_BREAK.unpack_from(body)
            status, level = self.opens.ack_oplock(conn_id, file_id, level)
            answer = oplocks.OPLOCK_BREAK.pack(24, level, 0, 0, file_id)
            what = f"oplock {oplocks.LEVEL_NAMES.get(level, hex(level))}"
        elif size == 36 and len(body) >= oplocks.LEASE_ACK.size:
            _, _, _, key, state, _ = oplocks.LEASE_ACK.unpack_from(body)
            status, _lease = self.opens.ack_lease(conn_id, self._lease_client(), key, state)
            answer = oplocks.LEASE_ACK.pack(36, 0, 0, key, state, 0)
            what = f"lease {oplocks.state_name(state)}"
        else:
            return _error(STATUS_INVALID_PARAMETER)
        self.session.event("oplock-ack", f"{what} -> {'ok' if status == STATUS_SUCCESS else hex(status)}")
        if status != STATUS_SUCCESS:
            return _error(status)
        return [packing.Body(answer)], None, STATUS_SUCCESS

    def _open_pipe(self, conn_id: str, packet: Any, name: str, options: int) -> Any:
        """A CREATE on IPC$: a named pipe the lab serves (srvsvc), opened as impacket's
        pipe code expects (a "socket" that takes requests and gives answers)."""
        pipe = name.replace("/", "\\").lstrip("\\").lower()
        if pipe not in PIPES or options & smb2.FILE_DIRECTORY_FILE:
            self.session.event("create", f"IPC$\\{name} refused: no such pipe")
            return _error(STATUS_OBJECT_NAME_NOT_FOUND)
        conn = self.getConnectionData(conn_id)
        file_id = uuid.generate()
        conn["OpenedFiles"][file_id] = {
            "FileHandle": PIPE_FILE_DESCRIPTOR, "FileName": f"\\PIPE\\{pipe}",
            "DeleteOnClose": False, "LabTree": packet["TreeID"],
            "Open": {"EnumerationLocation": 0, "EnumerationSearchPattern": ""},
            "Socket": SrvsvcPipe(visible(conn.get("LabUser"),
                                         self.store.roster.team_of(conn.get("LabUser") or "")),
                                 self.settings.host.upper()[:15])}
        answer = smb2.SMB2Create_Response()
        answer["CreateAction"], answer["AllocationSize"] = OPENED, 4096
        answer["FileAttributes"] = 0x80  # FILE_ATTRIBUTE_NORMAL, as Windows answers for a pipe
        answer["FileID"], answer["Buffer"] = file_id, b""
        conn["LastRequest"]["SMB2_CREATE"] = answer
        self.session.event("create", f"IPC$\\{name} -> ok")
        return [answer], None, STATUS_SUCCESS

    def _opened(self, conn_id: str, command: int, packet: Any) -> dict | None:
        conn = self.getConnectionData(conn_id)
        return conn["OpenedFiles"].get(rules.file_id(conn, command, packet["Data"]))

    def _set_info(self, conn_id: str, server: Any, packet: Any) -> Any:
        request = smb2.SMB2SetInfo(packet["Data"])
        tree = self._tree(conn_id, packet)
        opened = self._opened(conn_id, smb2.SMB2_SET_INFO, packet)
        if tree is None or opened is None or request["InfoType"] != smb2.SMB2_0_INFO_FILE:
            return self._original[smb2.SMB2_SET_INFO](conn_id, server, packet)
        if request["FileInfoClass"] == smb2.SMB2_FILE_RENAME_INFO:
            return self._rename(tree, opened, request)
        if request["FileInfoClass"] == smb2.SMB2_FILE_END_OF_FILE_INFO:
            return self._set_end_of_file(tree, opened, request)
        if request["FileInfoClass"] == smb2.SMB2_FILE_DISPOSITION_INFO and request["Buffer"][:1] != b"\0":
            self._handle_break(tree, opened)  # (delete pending)
        commands, packets, status = self._original[smb2.SMB2_SET_INFO](conn_id, server, packet)
        if request["FileInfoClass"] == smb2.SMB2_FILE_DISPOSITION_INFO:
            self.session.event("delete", f"{_shown(tree, opened['FileName'])} -> "
                                         f"{'ok' if status == STATUS_SUCCESS else hex(status)}")
        return commands, packets, status

    def _set_end_of_file(self, tree: dict, opened: dict, request: Any) -> Any:
        """The file's size, made so (impacket wrote one zero byte at the new size - 1: a
        file made shorter kept its length and lost that byte)."""
        size = struct.unpack_from("<q", request["Buffer"].ljust(8, b"\0"))[0]
        if tree["read only"] == "yes":
            return _error(STATUS_ACCESS_DENIED)
        if size < 0 or opened["FileHandle"] == PIPE_FILE_DESCRIPTOR:
            return _error(STATUS_INVALID_PARAMETER)
        try:
            os.ftruncate(opened["FileHandle"], size)
        except OSError as error:
            return _error(_status_of(error))
        return [smb2.SMB2SetInfo_Response()], None, STATUS_SUCCESS

    def _handle_break(self, tree: dict, opened: dict) -> None:
        """Before a rename or delete: the other clients' handle caching of the file broken
        (so they can close what they kept open), and their acknowledgments waited for."""
        conn_id = threading.current_thread().name
        breaks = self.opens.renaming(conn_id, opened.get("LabFileId", b""))
        if breaks:
            self._settle(conn_id, _shown(tree, opened["FileName"]), breaks)

    def _moved(self, opened: dict, real: str) -> None:
        """A file renamed: every connection's opens of it have the new name (impacket's
        CLOSE stats the file by the name its own open kept)."""
        self.opens.moved(opened.get("LabPath", opened["FileName"]), real)
        opened["FileName"] = opened["LabPath"] = real
        active = self.getActiveConnections()
        for each in self.opens.opens(real):
            record = active.get(each.owner, {}).get("OpenedFiles", {}).get(each.file_id)
            if record is not None:
                record["FileName"] = record["LabPath"] = real

    def _rename(self, tree: dict, opened: dict, request: Any) -> Any:
        """The lab's own rename: to exactly the path the lab's rule resolved."""
        info = smb2.FILE_RENAME_INFORMATION_TYPE_2(request["Buffer"])
        target = info["FileName"].decode("utf-16le", "replace")
        shown = f"{_shown(tree, opened['FileName'])} -> {tree['shareName']}\\{target}"
        try:
            real = paths.resolve(tree["path"], rules.canonical(target))
        except paths.PathError as error:
            self.session.event("rename", f"{shown} refused: {error}")
            return _error(STATUS_OBJECT_NAME_INVALID)
        if tree["read only"] == "yes":
            status = STATUS_ACCESS_DENIED
        elif not info["ReplaceIfExists"] and os.path.lexists(real):
            status = STATUS_OBJECT_NAME_COLLISION
        else:
            self._handle_break(tree, opened)
            try:
                os.rename(opened["FileName"], real)
                self._moved(opened, str(real))
                status = STATUS_SUCCESS
            except OSError as error:
                status = STATUS_DISK_FULL if is_disk_full(error) else STATUS_ACCESS_DENIED
        self.session.event("rename", f"{shown} -> {'ok' if status == STATUS_SUCCESS else hex(status)}")
        if status != STATUS_SUCCESS:
            return _error(status)
        return [smb2.SMB2SetInfo_Response()], None, status

    def _file_name(self, conn_id: str, request: Any, tree: dict) -> str:
        opened = self.getConnectionData(conn_id)["OpenedFiles"].get(request["FileID"].getData())
        return _shown(tree, opened["FileName"]) if opened else "?"

    def _query_info(self, conn_id: str, server: Any, packet: Any) -> Any:
        """The file classes clients ask of every open and the file system classes
        (services.smb.fileinfo); the rest, and security, impacket's."""
        tree = self._tree(conn_id, packet)
        opened = self._opened(conn_id, smb2.SMB2_QUERY_INFO, packet)
        body = packet["Data"]
        info_type, info_class, room = struct.unpack_from("<xxBBI", body) if len(body) >= 8 \
            else (0, 0, 0)
        if tree is None or opened is None or tree["pipe"]:
            return self._original[smb2.SMB2_QUERY_INFO](conn_id, server, packet)
        if info_type == smb2.SMB2_0_INFO_FILESYSTEM and info_class in fileinfo.FS_FIXED:
            try:
                data = fileinfo.fs_record(info_class, os.statvfs(tree["path"]),
                                          os.stat(tree["path"]), tree["shareName"])
            except OSError:
                return _error(STATUS_INVALID_PARAMETER)
            fixed = fileinfo.FS_FIXED[info_class]
        elif info_type == smb2.SMB2_0_INFO_FILE and info_class in fileinfo.CLASSES:
            handle = opened["FileHandle"]
            try:
                status = os.fstat(handle) if isinstance(handle, int) and handle > 0 \
                    else os.stat(opened["FileName"], follow_symlinks=False)
            except OSError:
                return _error(STATUS_INVALID_PARAMETER)
            below = os.path.relpath(opened["FileName"], tree["path"])
            data = fileinfo.record(info_class, status, "" if below == "." else below.replace("/", "\\"),
                                   opened.get("LabAccess", 0), bool(opened.get("DeleteOnClose")))
            fixed = fileinfo.FIXED[info_class]
        else:
            return self._original[smb2.SMB2_QUERY_INFO](conn_id, server, packet)
        code = STATUS_SUCCESS
        if len(data) > room:  # MS-SMB2 3.3.5.20.1: a name is cut, a fixed record is refused
            if room < fixed:
                return _error(STATUS_INFO_LENGTH_MISMATCH)
            data, code = data[:room], STATUS_BUFFER_OVERFLOW
        return [packing.output_response(data)], None, code

    def _query_directory(self, conn_id: str, server: Any, packet: Any) -> Any:
        """The lab's own (services.smb.listing): a chunk of the enumeration per request."""
        tree = self._tree(conn_id, packet)
        opened = self._opened(conn_id, smb2.SMB2_QUERY_DIRECTORY, packet)
        if tree is None or opened is None:  # impacket's errors (NETWORK_NAME_DELETED, FILE_CLOSED)
            return self._original[smb2.SMB2_QUERY_DIRECTORY](conn_id, server, packet)
        request = smb2.SMB2QueryDirectory(packet["Data"])
        directory = opened["FileName"]
        if not os.path.isdir(directory):
            return _error(STATUS_INVALID_PARAMETER)
        if request["FileInformationClass"] not in listing.CLASSES:
            return _error(STATUS_INVALID_INFO_CLASS)
        pattern = request["Buffer"][:request["FileNameLength"]].decode("utf-16le", "replace")
        flags, enumeration = request["Flags"], opened.get("LabListing")
        first = enumeration is None or bool(flags & (listing.RESTART_SCANS | listing.REOPEN)) \
            or bool(flags & listing.INDEX_SPECIFIED and pattern)
        if first:
            pattern = pattern or (enumeration.pattern if enumeration else "*")
            try:
                names = listing.scan(directory)
            except OSError as error:
                self.session.event("query-directory", f"{_shown(tree, directory)} failed: "
                                                      f"{error.strerror}")
                return _error(STATUS_ACCESS_DENIED)
            if len(names) > listing.MAX_NAMES:
                self.session.event("query-directory", f"{_shown(tree, directory)}: "
                                   f"{len(names)} names, the first {listing.MAX_NAMES} listed")
                del names[listing.MAX_NAMES:]
            enumeration = listing.Enumeration(pattern, listing.matching(names, pattern))
            opened["LabListing"] = enumeration
            self.session.event("query-directory", f"{_shown(tree, directory)}\\{pattern}: "
                                                  f"{len(enumeration.names)} entries")
        assert enumeration is not None
        buffer, taken = listing.answer(directory, enumeration, request["FileInformationClass"],
                                       request["OutputBufferLength"],
                                       bool(flags & listing.RETURN_SINGLE_ENTRY))
        if not taken:
            if enumeration.position < len(enumeration.names):
                return _error(STATUS_BUFFER_TOO_SMALL)  # not even one entry fits
            return _error(STATUS_NO_SUCH_FILE if first else STATUS_NO_MORE_FILES)
        return [packing.output_response(buffer)], None, STATUS_SUCCESS

    def count(self, file_id: bytes | None, index: int, amount: int) -> None:
        """Add to a file's bytes read (index 0) or written (1), journaled at CLOSE; a
        write breaks the other clients' read caching of the file (oplocks.OpenTable.write)."""
        if index == fastpath.WRITTEN and amount:
            conn_id = threading.current_thread().name
            breaks = self.opens.write(conn_id, file_id)
            if breaks:  # (the writer does not wait: a write breaks read caching)
                opened = self.getConnectionData(conn_id)["OpenedFiles"].get(file_id, {})
                self._settle(conn_id, f"write to {os.path.basename(opened.get('FileName', '?'))}",
                             breaks, wait=False)
        counters = self.local.__dict__.get("transfers", {})
        if file_id in counters:
            counters[file_id][index] += amount

    def _read(self, conn_id: str, server: Any, packet: Any) -> Any:
        commands, packets, status = self._original[smb2.SMB2_READ](conn_id, server, packet)
        if status == STATUS_SUCCESS:
            self.count(rules.file_id(self.getConnectionData(conn_id), smb2.SMB2_READ, packet["Data"]),
                       fastpath.READ, commands[0]["DataLength"])
        return commands, packets, status

    def _write(self, conn_id: str, server: Any, packet: Any) -> Any:
        """The lab's own WRITE for what the fast path left (compounds, the last-created id,
        errors): pwrite where asked, STATUS_DISK_FULL when there is no space."""
        tree, opened = self._tree(conn_id, packet), self._opened(conn_id, smb2.SMB2_WRITE, packet)
        if tree is None or opened is None or opened["FileHandle"] == PIPE_FILE_DESCRIPTOR:
            return self._original[smb2.SMB2_WRITE](conn_id, server, packet)
        if tree["read only"] == "yes":
            return _error(STATUS_ACCESS_DENIED)
        request = smb2.SMB2Write(packet["Data"])
        data = request["Buffer"][:request["Length"]]
        try:
            fastpath.write_all(opened["FileHandle"], memoryview(data), request["Offset"])
        except OSError as error:
            self.session.event("write", f"{_shown(tree, opened['FileName'])} failed: {error.strerror}")
            return _error(_status_of(error))
        self.count(rules.file_id(self.getConnectionData(conn_id), smb2.SMB2_WRITE, packet["Data"]),
                   fastpath.WRITTEN, len(data))
        answer = smb2.SMB2Write_Response()
        answer["Count"], answer["Remaining"] = len(data), 0
        return [answer], None, STATUS_SUCCESS

    def _close(self, conn_id: str, server: Any, packet: Any) -> Any:
        conn = self.getConnectionData(conn_id)
        file_id = rules.file_id(conn, smb2.SMB2_CLOSE, packet["Data"])
        opened = conn["OpenedFiles"].get(file_id)
        tree = self._tree(conn_id, packet)
        written = self.local.__dict__.get("transfers", {}).pop(file_id, [0, 0])
        if opened is not None and file_id is not None:
            self.opens.close(conn_id, file_id)  # (what waited for its break goes on)
        if opened is not None and isinstance(opened.get("Socket"), SrvsvcPipe):
            calls = opened["Socket"].calls
            self.session.event("srvsvc", ", ".join(calls) if calls else "no calls")
        if opened is not None and tree is not None and not tree["pipe"]:
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
            if written[1]:
                try:
                    _sync(opened["FileHandle"], name)
                except OSError as error:
                    self.session.event("write", f"{_shown(tree, name)} not stored: {error.strerror}")
                    self._original[smb2.SMB2_CLOSE](conn_id, server, packet)
                    return _error(_status_of(error))
            if written[0] or written[1]:
                self.session.event("transfer", f"{_shown(tree, name)} read {written[0]} "
                                               f"bytes, wrote {written[1]} bytes")
            if opened["DeleteOnClose"]:
                self.session.event("delete", f"{_shown(tree, name)} (on close)")
        return self._close_file(conn_id, server, packet)

    def _open(self, conn_id: str, server: Any, packet: Any, request: packing.CreateRequest,
              tree: dict, canonical: str) -> Any:
        """CREATE's open, once the lab's rules let the name through (_create): the lab's
        own for a plain open of a file or directory that is there (packing.plain_open:
        impacket's handler parses the request again and packs its answer through Structure,
        most of a small file's time), impacket's for everything else and for errors. Its
        entry in OpenedFiles and LastRequest are impacket's, field for field."""
        name = os.path.join(tree["path"], os.path.normpath(canonical))  # impacket's FileName
        try:
            if not packing.plain_open(request, os.stat(name)):
                return self._impacket_open(conn_id, server, packet, name)
            handle = os.open(name, packing.open_mode(request["DesiredAccess"],
                                                     tree["read only"] == "yes"))
        except OSError:
            return self._impacket_open(conn_id, server, packet, name)  # its status
        try:
            status = os.fstat(handle)
        except OSError:
            os.close(handle)
            return self._impacket_open(conn_id, server, packet, name)
        conn, file_id = self.getConnectionData(conn_id), uuid.generate()
        conn["OpenedFiles"][file_id] = {
            "FileHandle": handle, "FileName": name,
            "DeleteOnClose": bool(request["CreateOptions"] & smb2.FILE_DELETE_ON_CLOSE),
            "Open": {"EnumerationLocation": 0, "EnumerationSearchPattern": ""}}
        answer = packing.CreateResponse(CreateAction=request["CreateDisposition"], FileID=file_id,
                                        **packing.attributes(status))
        answer["LastChangeTime"] = answer["ChangeTime"]  # where impacket's handler leaves it
        conn["LastRequest"]["SMB2_CREATE"] = answer
        return [answer], None, STATUS_SUCCESS

    def _impacket_open(self, conn_id: str, server: Any, packet: Any, name: str) -> Any:
        """impacket's CREATE, its answer's times, sizes and attributes then taken from the
        open file as the lab's own open answers them (packing.attributes): impacket gave
        NORMAL with ARCHIVE (NORMAL is valid only alone, MS-FSCC 2.6), a directory's
        st_size as its EndOfFile and the size as the AllocationSize. A name not there is
        STATUS_OBJECT_NAME_NOT_FOUND, or _PATH_NOT_FOUND when its directory is not, as
        Windows and smbd answer (impacket: STATUS_NO_SUCH_FILE, which is QUERY_DIRECTORY's:
        smbprotocol takes it for an unknown error, not a missing file)."""
        commands, packets, status = self._original[smb2.SMB2_CREATE](conn_id, server, packet)
        if status == STATUS_NO_SUCH_FILE:
            missing = os.path.isdir(os.path.dirname(name))
            return _error(STATUS_OBJECT_NAME_NOT_FOUND if missing else STATUS_OBJECT_PATH_NOT_FOUND)
        if status == STATUS_SUCCESS:
            file_id = commands[0]["FileID"]
            opened = self.getConnectionData(conn_id)["OpenedFiles"].get(
                file_id if isinstance(file_id, bytes) else file_id.getData())
            try:
                for field, value in packing.attributes(os.fstat(opened["FileHandle"])).items():
                    commands[0][field] = value
                commands[0]["LastChangeTime"] = commands[0]["ChangeTime"]
            except (OSError, TypeError, KeyError):
                pass  # (no descriptor to ask: impacket's figures stay)
        return commands, packets, status

    def _close_file(self, conn_id: str, server: Any, packet: Any) -> Any:
        """CLOSE's end, once the lab's checks are done (_close): the lab's own for an open
        file or directory (its attributes when asked, MS-SMB2 2.2.16), impacket's for pipes,
        delete-on-close, a tree or id it does not know and errors."""
        conn, body = self.getConnectionData(conn_id), packet["Data"]
        file_id = rules.file_id(conn, smb2.SMB2_CLOSE, body)
        opened = conn["OpenedFiles"].get(file_id)
        handle = opened["FileHandle"] if opened is not None else None
        flags = struct.unpack_from("<H", body, 2)[0] if len(body) >= 4 else 0
        if opened is None or opened["DeleteOnClose"] or not isinstance(handle, int) \
                or handle <= 0 or packet["TreeID"] not in conn["ConnectedShares"]:
            return self._impacket_close(conn_id, server, packet, opened, flags)
        try:
            status = os.fstat(handle)
        except OSError:
            return self._impacket_close(conn_id, server, packet, opened, flags)
        try:
            os.close(handle)
        except OSError:
            return _error(STATUS_INVALID_HANDLE)  # as impacket answers it
        del conn["OpenedFiles"][file_id]
        return [packing.CloseResponse(Flags=flags, **packing.attributes(status))], None, STATUS_SUCCESS

    def _impacket_close(self, conn_id: str, server: Any, packet: Any, opened: dict | None,
                        flags: int) -> Any:
        """impacket's CLOSE, its answer as MS-SMB2 2.2.16 has it: the attributes only when
        the request asked for them (impacket filled them always, with Flags 0)."""
        commands, packets, status = self._original[smb2.SMB2_CLOSE](conn_id, server, packet)
        opened_files = self.getConnectionData(conn_id)["OpenedFiles"]
        if status != STATUS_SUCCESS and opened is not None \
                and opened["FileHandle"] != PIPE_FILE_DESCRIPTOR \
                and opened_files.get(opened.get("LabFileId")) is opened:
            # impacket closed the descriptor, then failed (to stat the file by its name:
            # another client renamed a directory above it, or deleted it; or to delete it)
            # and kept the entry: its descriptor number would be closed again at the end,
            # whoever has it then. The file is closed: a stat that failed is no error.
            del opened_files[opened["LabFileId"]]
            if status in (STATUS_OBJECT_NAME_NOT_FOUND, STATUS_NO_SUCH_FILE):
                return [packing.CloseResponse(Flags=0)], None, STATUS_SUCCESS
        if status == STATUS_SUCCESS and isinstance(commands[0], smb2.SMB2Close_Response):
            given = commands[0].fields  # (none for a pipe: impacket's zeros)
            values = {name: given.get(name, 0) for name in packing.CLOSE_ATTRIBUTES}
            values["EndOfFile"] = given.get("EndofFile", 0)  # (impacket's spelling)
            values["FileAttributes"] = values["FileAttributes"] & ~0x80 or 0x80  # NORMAL alone
            commands = [packing.CloseResponse(Flags=flags, **values)]
        return commands, packets, status

    # --- stopping

    def close_connections(self) -> None:
        self.stopping = True
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
