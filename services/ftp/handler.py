"""pyftpdlib's control and data channels with what the lab adds: the journal, durable
uploads, implicit TLS, active mode from port 20, and path errors as clean 550 replies."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from OpenSSL import SSL
from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.handlers.ftp.data import DTPHandler
from pyftpdlib.handlers.ftp.dispatchers import ActiveDTP, PassiveDTP
from pyftpdlib.log import logger as pyftpdlib_logger

from ..paths import PathError
from ..store import is_disk_full
from .fs import NoSpace
from .upload import Upload

CHUNK = 1 << 20  # bytes per send()/sendfile()/recv() on a data channel (pyftpdlib: 64 KiB)
NO_SPACE = "452 Insufficient storage space; nothing was stored."


# The mixin goes in front of pyftpdlib's TLS handlers; to mypy its base is Any (they are
# untyped), at run time plain object, so the handlers' own MRO is unchanged.
_TLSHandler: Any = object


class _TLSFailureHangsUp(_TLSHandler):
    """A TLS error after the handshake (a corrupt record, a bad MAC: garbage under TLS)
    ends that connection only. pyftpdlib's SSLConnectionMixin.recv()/send() handle
    would-block and EOF; any other SSL.Error escaped into its handle_error() as an
    "unhandled exception" traceback on stderr, though the client caused it."""

    _error: bool  # SSLConnectionMixin's "broken": close() then skips the TLS shutdown

    def recv(self, buffer_size: int) -> bytes:
        try:
            return super().recv(buffer_size)
        except SSL.Error as error:
            self._error = True
            self.tls_failed(error)
            return b""

    def send(self, data: bytes) -> int:
        try:
            return super().send(data)
        except SSL.Error as error:
            self._error = True
            self.tls_failed(error)
            return 0

    def tls_failed(self, error: Exception) -> None:
        """Journal `error` and close (without a TLS shutdown: the connection is broken)."""
        raise NotImplementedError


class _ResetAborts(DTPHandler):
    """A data connection reset mid-upload aborts it. pyftpdlib turns ECONNRESET from
    recv() (and a TLS socket's SysCallError) into handle_close(), the end of file of a
    stream-mode upload, so a broken upload got 226 and stayed as if complete. It calls
    handle_close() inside its except clause: the error is there to tell the two apart.
    Between SSLConnectionMixin and DTPHandler in the MRO, so both recv() paths reach it."""

    def handle_close(self) -> None:
        error = sys.exc_info()[1]
        number = error.args[0] if isinstance(error, SSL.SysCallError) else \
            getattr(error, "errno", None)
        if self.receive and not self._closed and isinstance(number, int) and number > 0:
            self._resp = (f"426 Data connection broken ({os.strerror(number)}); "
                          "upload not stored.", pyftpdlib_logger.warning)
            self.close()
        else:
            super().handle_close()


class LabDTPHandler(_TLSFailureHangsUp, TLS_DTPHandler, _ResetAborts):
    ac_in_buffer_size = CHUNK
    ac_out_buffer_size = CHUNK
    transfer_finished: bool  # pyftpdlib's: the whole file came, then the close

    def handle_error(self) -> None:
        # Called inside pyftpdlib's except clause: a write that found the disk full gets
        # 452 (pyftpdlib says 426, as for a broken connection), then close() abandons it.
        # pyftpdlib wraps the write's OSError without its errno: the cause has it.
        error = sys.exc_info()[1]
        if error is not None and (is_disk_full(error) or (
                error.__cause__ is not None and is_disk_full(error.__cause__))):
            self._resp = (NO_SPACE, pyftpdlib_logger.warning)
            self.close()
        else:
            super().handle_error()

    def close(self) -> None:
        # The upload is committed or abandoned before the data connection closes: a client
        # that sees the close finds the file as the reply will say.
        upload = self.file_obj
        if (not self._closed and self.receive and isinstance(upload, Upload)
                and not upload.closed):
            try:
                if self.transfer_finished:
                    upload.commit()
            except OSError as error:  # a disk that fails now: the client must not see 226
                self.transfer_finished = False
                self._resp = (NO_SPACE if is_disk_full(error) else
                              f"451 Upload not saved: {error.strerror}.", pyftpdlib_logger.warning)
            finally:
                upload.close()  # abandons it unless committed
        super().close()

    def tls_failed(self, error: Exception) -> None:
        session = self.cmd_channel.session
        if session is not None:
            session.event("tls", f"data channel error: {error}")
        # close() replies with _resp on the control channel. pyftpdlib's own path
        # (SSLConnectionMixin.handle_error) closes without one: the client waited forever.
        self._resp = ("426 TLS error on the data channel; transfer aborted.",
                      pyftpdlib_logger.debug)
        self.close()


class LabActiveDTP(ActiveDTP):
    """PORT/EPRT data connections leave from the lab's port 20 (+offset) when it can bind it,
    as the classic labs (and their firewall rules) expect, else from any port."""

    data_port = 0  # set per lab by make_handler

    def bind(self, address: tuple[str, int]) -> None:
        if self.data_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                self.socket.bind((address[0], self.data_port))
                return
            except OSError:
                pass
        self.socket.bind(address)


class PassiveRangeFull(Exception):
    """Every port of the passive range is taken: the handler answers 425."""


class LabPassiveDTP(PassiveDTP):
    """PASV/EPSV listen only inside the passive range. pyftpdlib falls back to a port the
    kernel picks when the range is full (bind to port 0, or listen() unbound after EPERM
    on every port): set-ups that publish only the range then hand out a dead port."""

    def bind(self, address: tuple[str, int]) -> None:
        if address[1] == 0:
            self._refuse()
        super().bind(address)

    def bind_af_unspecified(self, addr: tuple[str, int]) -> int:
        """On a server socket other than IPv4 pyftpdlib binds (HOST, 0) here only to learn
        the family, and closes it: that bind must not count as a full range (EPSV over
        IPv6 got 425). The socket it will close, unbound."""
        family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
        self.create_socket(family, socket.SOCK_STREAM)
        return family

    def listen(self, num: int) -> None:
        if self.socket.getsockname()[1] not in self.cmd_channel.passive_ports:
            self._refuse()
        super().listen(num)

    def _refuse(self) -> None:
        self.close()  # its socket is in the IOLoop's map already
        raise PassiveRangeFull


class LabFTPHandler(_TLSFailureHangsUp, TLS_FTPHandler):
    """The control channel; make_handler() sets the lab's class attributes."""

    dtp_handler = LabDTPHandler
    active_dtp = LabActiveDTP
    passive_dtp = LabPassiveDTP
    journal: Any = None
    faults: Any = None  # services.faults.Board
    public_root = ""
    implicit = False  # TLS from the first byte (the 990 listener)
    session: Any = None
    _greeted = False  # implicit TLS: the banner has been sent

    def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
        super().__init__(conn, server, ioloop)
        if self.connected:
            self.session = self.journal.open(
                "ftp", f"{self.remote_ip}:{self.remote_port}", "implicit TLS" if self.implicit else "")

    def handle(self) -> None:
        if self.implicit:
            # pyftpdlib has no implicit mode (upstream #160): start the handshake and send
            # the banner only once it is done (handle_ssl_established). Pushing the banner
            # now would run the handshake inside send(), where a client's bad hello raises
            # SSL.Error past pyftpdlib's handshake error handling (an "unhandled exception"
            # traceback); the reader path instead ends in handle_failed_ssl_handshake. Data
            # is private by default there, as clients of implicit FTPS expect.
            self.secure_connection(self.ssl_context)
            self._pbsz = self._prot = True
        else:
            super().handle()

    def flush_account(self) -> None:
        super().flush_account()
        if self.implicit:
            self._pbsz = self._prot = True

    _discarding = False  # inside an over-long command line, up to its end

    def collect_incoming_data(self, data: bytes) -> None:
        # pyftpdlib answers "500 Command too long." and empties its buffer at every 2 KiB
        # of a long line: one 100 MB line got 50,000 replies. One reply per line here.
        if self._discarding:
            return
        super().collect_incoming_data(data)
        if data and not self._in_buffer:  # it just emptied it, with its 500
            self._discarding = True

    def found_terminator(self) -> None:
        # asynchat goes on with the lines still buffered after the session closed (QUIT
        # with pipelined commands behind it): pyftpdlib then ran them on a closed session
        # (fs None, socket gone) and printed tracebacks.
        if self._closed:
            return
        if self._discarding:
            self._discarding = False
            self._in_buffer: list[bytes] = []  # the long line's tail
            self._in_buffer_len = 0
            return
        super().found_terminator()

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if self.session is not None:
            self.session.command(f"PASS {self.session.secret(arg)}" if cmd == "PASS" else line)
        try:
            super().pre_process_command(line, cmd, arg)
        except PathError as error:
            self.respond(f"550 {error}.")
        except NoSpace:  # STOR/APPE/MKD/RNTO that could not even start
            self.respond(NO_SPACE)
        except PassiveRangeFull:
            low, high = self.passive_ports[0], self.passive_ports[-1]
            self.respond(f"425 No free passive port in {low}-{high}; try again later.")

    # --- faults (services/faults.py; the kinds are FAULTS in __init__.py) -------------------

    def _fault(self, kind: str) -> Any:
        user = self.session.user if self.session is not None else ""
        fault = self.faults.find(f"ftp.{kind}", self.remote_ip, user) if self.faults else None
        if fault is not None and self.session is not None:
            self.session.event("fault", f"{fault.kind} #{fault.id}")
        return fault

    # --- IPv6 (RFC 2428): PORT and PASV carry IPv4 addresses; EPRT and EPSV are for both

    def _ipv6(self) -> bool:
        return self.socket.family == socket.AF_INET6

    def ftp_PORT(self, line: str) -> Any:
        if self._ipv6():
            return self.respond("522 PORT is IPv4 only: on IPv6 use EPRT |2|ADDRESS|PORT| "
                                "or EPSV (RFC 2428).")
        return super().ftp_PORT(line)

    def ftp_PASV(self, line: str) -> Any:
        if self._ipv6():  # a 227 reply has room for an IPv4 address only
            return self.respond("522 PASV is IPv4 only: on IPv6 use EPSV (RFC 2428).")
        if self._fault("wrong-pasv-address"):
            # TEST-NET-1 (RFC 5737): nobody answers there, so the data connection hangs
            return self._pasv_reply("192.0.2.1", self.passive_ports[0])
        if self._fault("dead-data-port"):
            host = self.masquerade_address or self.socket.getsockname()[0]
            return self._pasv_reply(host, self._dead_port())
        return super().ftp_PASV(line)

    def _pasv_reply(self, host: str, port: int) -> None:
        self.respond(f"227 Entering passive mode ({host.replace('.', ',')},{port >> 8},{port & 255}).")

    def ftp_EPSV(self, line: str) -> Any:
        if self._fault("wrong-pasv-address"):
            # EPSV carries no address: refused, so the client falls back to PASV
            return self.respond("502 EPSV not available; use PASV.")
        if self._fault("dead-data-port"):
            return self.respond(f"229 Entering extended passive mode (|||{self._dead_port()}|).")
        return super().ftp_EPSV(line)

    @staticmethod
    def _dead_port() -> int:
        """A port nobody listens on: one the kernel just gave out and took back."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])

    def respond(self, resp: str, logfun: Any = None) -> None:
        if self.session is not None:
            self.session.reply(resp)
        if logfun is None:
            super().respond(resp)
        else:
            super().respond(resp, logfun)

    def log(self, msg: str, logfun: Any = pyftpdlib_logger.info) -> None:
        # pyftpdlib's per-session log. Its warnings are about this session (a command too
        # long, a passive port outside the range, a rejected data connection): they belong
        # in the journal, not on stderr (server.py keeps its logger to ERROR and above).
        if logfun == pyftpdlib_logger.warning and self.session is not None:
            self.session.event("warning", msg)
        super().log(msg, logfun)

    def handle_ssl_established(self) -> None:
        if self.session is not None:
            self.session.event("tls", f"{self.socket.get_protocol_version_name()} "
                                      f"{self.socket.get_cipher_name()}")
        if self.implicit and not self._greeted:
            self._greeted = True
            super().handle()  # the banner, deferred by handle()

    def handle_failed_ssl_handshake(self) -> None:
        # A client's mistake, not a server fault: journal it and hang up without a reply
        # (pyftpdlib's own version only logs). Called from inside pyftpdlib's
        # `except SSL.Error`, so the reason is the exception being handled.
        if self.session is not None:
            reason = sys.exc_info()[1]
            self.session.event("tls", f"handshake failed: {reason or 'unknown'}")
        self.close()

    def tls_failed(self, error: Exception) -> None:
        if self.session is not None:
            self.session.event("tls", f"error: {error}")
        self.close()

    def log_transfer(self, cmd: str, filename: str, receive: bool, completed: bool,
                     elapsed: float, bytes: int) -> None:
        if self.session is None:
            return
        where = self.fs.fs2ftp(filename) if self.fs is not None else filename
        tls = " tls" if self._prot else ""  # PROT P: the data channel was TLS
        self.session.event("transfer", (
            f"{cmd} {where} {bytes} bytes {'upload' if receive else 'download'} "
            f"{'binary' if self._current_type == 'i' else 'ascii'}{tls} "
            f"{'complete' if completed else 'aborted'} {elapsed:.3f}s"))

    def close(self) -> None:
        super().close()
        if self.session is not None:
            self.session.close()


def make_handler(lab: Any, settings: Any, authorizer: Any, implicit: bool) -> type:
    """A handler class carrying one lab's settings (pyftpdlib configures by class)."""
    from . import passive_range
    from .fs import LabFS

    passive = passive_range(settings, lab.offset)
    active = type("ActiveDTP", (LabActiveDTP,), {"data_port": lab.port(20)})
    return type("FTPHandler", (LabFTPHandler,), {
        "authorizer": authorizer,
        "abstracted_fs": LabFS,
        "journal": lab.journal,
        "faults": lab.faults,
        "public_root": str(lab.store.files.public),
        "implicit": implicit,
        "active_dtp": active,
        "ssl_context": lab.tls.context(),
        "tls_control_required": settings.tls_required,
        "tls_data_required": settings.tls_required,
        "passive_ports": passive,
        "masquerade_address": settings.masquerade_address or None,
        "timeout": settings.idle_timeout,
        "banner": f"{lab.config.fqdn(settings.host)} protolab FTP ready.",
        "auth_failed_timeout": 1,
    })
