"""How many SMB connections the lab takes at once, in all and from one address, and how
many files one connection may hold open.

impacket runs a thread per connection and never refuses one: 500 idle sockets from one
student are 500 threads, and the next client waits behind them. A connection over either
limit is closed as soon as it is accepted (no SMB answer: it has sent nothing yet).

impacket also opens a descriptor for every CREATE and never refuses one: one client could
take all of the process's descriptors (every service's). Over [smb] max_open_files a
CREATE gets STATUS_TOO_MANY_OPENED_FILES, smbd's answer past its "max open files"."""

from __future__ import annotations

import threading
from collections import Counter


class ConnectionLimits:
    def __init__(self, total: int, per_peer: int) -> None:
        self.total, self.per_peer = total, per_peer
        self._lock = threading.Lock()
        self._peers: Counter[str] = Counter()

    def admit(self, peer: str) -> str | None:
        """Count a new connection from `peer`; or, over a limit, say which (and count nothing)."""
        with self._lock:
            if sum(self._peers.values()) >= self.total:
                return f"refused: {self.total} connections already (max_connections)"
            if self._peers[peer] >= self.per_peer:
                return (f"refused: {self.per_peer} connections from this address already "
                        "(max_connections_per_peer)")
            self._peers[peer] += 1
            return None

    def leave(self, peer: str) -> None:
        with self._lock:
            self._peers[peer] -= 1
            if self._peers[peer] <= 0:
                del self._peers[peer]


def open_refusal(open_files: int, cap: int) -> str | None:
    """Why a connection that has `open_files` open may not open one more, or None."""
    if open_files >= cap:
        return f"refused: {cap} files open on this connection already (max_open_files)"
    return None
