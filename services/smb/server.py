"""impacket's SMB server under the lab's service lifecycle.

startService binds and listens in the reactor thread (so `protolab ready` means port 445
answers, and a port in use is a one-line StartError); right after, on the reactor's next
turn (once `ready` is out), one thread imports impacket (about 0.3 s, kept out of the
start-up path) and serves; connections that arrive meanwhile wait in the listen backlog.
stopService stops accepting (shutdown(), then server_close(): impacket's own stop() only
closes the socket and leaves serve_forever spinning at 100 % CPU), and ends every
connection; all threads are daemons.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from twisted.application.service import Service
from twisted.internet import reactor

from ..listeners import endpoint
from ..serving import StartError, listening_socket

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2  # how soon serve_forever notices shutdown()


class SMBService(Service):
    def __init__(self, lab: Any) -> None:
        self.lab = lab
        self.server: Any = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._serving = False
        self._start_call: Any = None

    def startService(self) -> None:
        listener = self.lab.listener("smb", "smb")
        # One socket for both families (the engine writes IPv4 clients' mapped addresses
        # as IPv4); where the stack has no dual-stack sockets, IPv6 only.
        try:
            sock = listening_socket(self.lab.bind, listener.port)
        except OSError as error:
            raise StartError(f"smb: cannot listen on tcp {endpoint(self.lab.bind, listener.port)} "
                             f"(smb): {error.strerror or error}") from None
        self._socket = sock
        self._stopping = self._serving = False
        self._thread = threading.Thread(target=self._serve, name="smb-accept", daemon=True)
        self._start_call = reactor.callLater(0, self._thread.start)
        super().startService()

    def _serve(self) -> None:
        # impacket logs client mistakes at ERROR; the journal has what clients did.
        logging.getLogger("impacket").setLevel(logging.CRITICAL)
        try:
            from .engine import LabSMBServer  # the slow import, outside the lock

            # Built under the lock, under which stopService closes the socket: a stop during
            # start-up (SIGTERM right after `ready`) either comes first and this thread just
            # ends, or waits for the server and shuts it down; never a server built on a
            # closed descriptor (EBADF).
            with self._lock:
                if self._stopping:
                    return
                assert self._socket is not None  # set before this thread starts
                server = LabSMBServer(self._socket, self.lab, self.lab.settings("smb"))
                self.server, self._serving = server, True
        except Exception:
            log.exception("smb: cannot start impacket's server")
            with self._lock:
                if self._socket is not None:
                    self._socket.close()  # refuse clients rather than leave them in the backlog
            return
        server.serve_forever(poll_interval=POLL_SECONDS)

    def stopService(self) -> None:
        super().stopService()
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        with self._lock:
            self._stopping = True
            server, serving = self.server, self._serving
            if not serving and self._socket is not None:
                self._socket.close()  # under the lock: see _serve
        if server is not None and serving:
            server.shutdown()  # returns once serve_forever has left its loop (< POLL_SECONDS)
            server.close_connections()
            server.server_close()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(2 * POLL_SECONDS)
        self.server = self._socket = self._thread = None
