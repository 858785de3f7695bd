"""Who has which file open, across all SMB connections, and what each may cache: oplocks
and leases (MS-SMB2 3.3.1.4 Open, 3.3.1.13 Lease, 3.3.4.6/3.3.4.7 breaks, 3.3.5.9.8/.11
granting, 3.3.5.22 acknowledgments). Sans-IO: the engine sends what this returns.

impacket's server keeps each connection's opens to itself and grants no oplock, so a
client could never cache a file it alone has open, and nothing told it when another client
opened that file. Here:

- a CREATE asks `opening` first: the breaks it causes on the opens of other clients (a
  BATCH/EXCLUSIVE oplock goes to Level II, a lease loses W; an overwrite takes all). The
  engine sends each notification on its holder's connection and `settle`s: waits until
  those that need an acknowledgment have one, or the timeout forces them down. One break
  at a time per open or lease: a second opener meanwhile waits for the first break, and
  asks `opening` again after it;
- then `grant`: what the new open may cache. BATCH/EXCLUSIVE or the lease asked (R, RW,
  RH, RWH) when no other client has the file open; Level II / lease R(H) when others do;
  nothing when nothing was asked;
- a WRITE breaks the others' Level II oplocks and R leases (no acknowledgment: `write`), a
  rename or delete their handle caching (BATCH to Level II, a lease loses H: `renaming`);
- `close` and `drop` (a connection gone) forget opens, and what waited on them goes on.

Opens with one lease (the same client GUID, user and lease key) are one client: no breaks
between them. The table holds one entry per open file of a connection, which the
connection's own cap bounds ([smb] max_open_files), and leases only while opens use them.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass

from impacket.nt_errors import (
    STATUS_FILE_CLOSED,
    STATUS_INVALID_DEVICE_STATE,
    STATUS_INVALID_OPLOCK_PROTOCOL,
    STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_REQUEST_NOT_ACCEPTED,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
)

# Oplock levels (MS-SMB2 2.2.13): a CREATE's RequestedOplockLevel and the response's
NONE, LEVEL_II, EXCLUSIVE, BATCH, LEASE = 0x00, 0x01, 0x08, 0x09, 0xFF
# Lease states (2.2.13.2.8): read, handle and write caching; the valid combinations
R, H, W = 0x01, 0x02, 0x04
VALID_STATES = (0, R, R | H, R | W, R | W | H)
ACK_REQUIRED = 0x01  # a lease break notification's Flags (2.2.23.2)
BREAK_IN_PROGRESS = 0x02  # a lease response context's Flags (2.2.14.2.10)
SMB2_OPLOCK_BREAK = 0x12
NOTIFICATION_ID = 0xFFFFFFFFFFFFFFFF  # the MessageId of every break notification (2.2.23)
# What a notification's header says: no session, no tree, not signed (MS-SMB2 3.3.4.6;
# smbd's smbd_smb2_send_break sends the same); sealed when the session encrypts (engine)
HEADER = struct.Struct("<4sHHIHHIIQIIQ16s")
SERVER_TO_REDIR = 0x01
OPLOCK_BREAK = struct.Struct("<HBBI16s")  # 2.2.23.1 / 2.2.24.1 / 2.2.25.1, 24 bytes
LEASE_BREAK = struct.Struct("<HHI16sIIIII")  # 2.2.23.2 notification, 44 bytes
LEASE_ACK = struct.Struct("<HHI16sIQ")  # 2.2.24.2 / 2.2.25.2, 36 bytes
CONTEXT = struct.Struct("<IHHHHI")  # a create context's header (2.2.13.2)
LEVEL_NAMES = {NONE: "none", LEVEL_II: "level II", EXCLUSIVE: "exclusive", BATCH: "batch",
               LEASE: "lease"}


def state_name(state: int) -> str:
    """A lease state as Wireshark and smbd write it: "RWH", "RH", "none"."""
    return "".join(letter for bit, letter in ((R, "R"), (W, "W"), (H, "H")) if state & bit) or "none"


def valid(state: int) -> int:
    """The largest valid lease state within `state` (H or W without R: nothing)."""
    state &= R | W | H
    return state if state in VALID_STATES else (state & (R | W) if state & R else 0)


@dataclass
class Request:
    """What a CREATE asks to cache: its RequestedOplockLevel, and its lease context if any
    (lease_version 1 or 2; 0: none)."""

    level: int = NONE
    client: bytes = b""  # the connection's ClientGuid (NEGOTIATE)
    lease_key: bytes = b""
    lease_state: int = 0
    lease_version: int = 0
    epoch: int = 0


@dataclass(eq=False)
class Lease:
    client: bytes
    key: bytes
    path: str
    version: int
    state: int = 0
    epoch: int = 0
    breaking_to: int | None = None
    opens: int = 0


@dataclass(eq=False)
class Open:
    owner: Hashable  # the connection (the engine knows how to reach it)
    file_id: bytes
    path: str
    level: int = NONE  # an oplock level, or LEASE
    breaking_to: int | None = None
    lease: Lease | None = None
    gone: bool = False


@dataclass(eq=False)
class Break:
    """One notification to send to `owner`'s connection (`body` follows a notification
    header: `notification`); `ack_required` if the holder must acknowledge it."""

    owner: Hashable
    body: bytes
    ack_required: bool
    open: Open | None = None
    lease: Lease | None = None
    text: str = ""  # what it breaks, for the journal: "lease RWH -> RH"

    def pending(self) -> bool:
        if self.lease is not None:
            return self.lease.breaking_to is not None
        return self.open is not None and not self.open.gone and self.open.breaking_to is not None


@dataclass
class Granted:
    level: int  # the CREATE response's OplockLevel
    lease: Lease | None = None
    flags: int = 0  # the lease context's Flags (BREAK_IN_PROGRESS)


def notification(body: bytes) -> bytes:
    """A break notification: SMB2 header (MessageId 0xFFFFFFFFFFFFFFFF, SessionId and
    TreeId 0, no credits, unsigned) and `body`."""
    header = HEADER.pack(b"\xfeSMB", 64, 0, STATUS_SUCCESS, SMB2_OPLOCK_BREAK, 0,
                         SERVER_TO_REDIR, 0, NOTIFICATION_ID, 0, 0, 0, bytes(16))
    return header + body


def lease_context_data(lease: Lease, flags: int) -> bytes:
    """The data of the "RqLs" response context: lease V1 (32 bytes) or V2 (52, with the
    epoch; the parent lease key is for directory leases, not granted here)."""
    if lease.version == 2:
        return struct.pack("<16sIIQ16sHH", lease.key, lease.state, flags, 0, bytes(16),
                           lease.epoch & 0xFFFF, 0)
    return struct.pack("<16sIIQ", lease.key, lease.state, flags, 0)


def create_contexts(body: bytes, offset: int, length: int) -> dict[bytes, bytes]:
    """A CREATE request's create contexts, name to data (MS-SMB2 2.2.13.2), from its body
    (`offset` counts from the header, as the request says); a malformed one ends the list."""
    data = memoryview(body)[max(offset - 64, 0):][:length] if offset >= 64 else memoryview(b"")
    found: dict[bytes, bytes] = {}
    at = 0
    while at + CONTEXT.size <= len(data):
        following, name_at, name_length, _, data_at, data_length = CONTEXT.unpack_from(data, at)
        found[bytes(data[at + name_at:at + name_at + name_length])] = \
            bytes(data[at + data_at:at + data_at + data_length])
        if following < CONTEXT.size:
            break
        at += following
    return found


def create_context(name: bytes, data: bytes) -> bytes:
    """One create context of a CREATE response (the name padded to 8, then the data)."""
    return CONTEXT.pack(0, CONTEXT.size, len(name), 0, CONTEXT.size + 8, len(data)) \
        + name.ljust(8, b"\0") + data


def parse_lease_context(data: bytes) -> tuple[bytes, int, int, int] | None:
    """A "RqLs" request context's (lease key, state, version, epoch), or None if it is
    neither V1 (32 bytes) nor V2 (52)."""
    if len(data) >= 52:
        key, state, _, _, _, epoch = struct.unpack_from("<16sIIQ16sH", data)
        return key, state, 2, epoch
    if len(data) >= 32:
        key, state = struct.unpack_from("<16sI", data)
        return key, state, 1, 0
    return None


class OpenTable:
    """Every open of every connection of one server, by file; thread-safe (a connection
    is a thread: one waits in `settle` while another acknowledges)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._files: dict[str, list[Open]] = {}
        self._opens: dict[tuple[Hashable, bytes], Open] = {}
        self._leases: dict[tuple[bytes, bytes], Lease] = {}

    # --- a CREATE: breaks, then the grant

    def opening(self, owner: Hashable, path: str, request: Request,
                overwrite: bool) -> list[Break] | int:
        """The breaks a new open of `path` causes on other clients' opens (each open marked
        breaking), or a status if its lease key names another file (MS-SMB2 3.3.5.9.8)."""
        with self._changed:
            lease = self._leases.get((request.client, request.lease_key)) \
                if request.lease_version else None
            if lease is not None and lease.path != path:
                return STATUS_INVALID_PARAMETER
            breaks: list[Break] = []
            seen: set[int] = set()
            for other in self._files.get(path, []):
                if lease is not None and other.lease is lease:
                    continue  # the same client's own lease
                if other.lease is not None:
                    if id(other.lease) not in seen:
                        seen.add(id(other.lease))
                        keep = 0 if overwrite else other.lease.state & ~W
                        breaks += self._break_lease(other.owner, other.lease, keep)
                elif other.level in (BATCH, EXCLUSIVE):
                    breaks += self._break_oplock(other, NONE if overwrite else LEVEL_II)
                elif other.level == LEVEL_II and overwrite:
                    breaks += self._break_oplock(other, NONE)
            return breaks

    def grant(self, owner: Hashable, file_id: bytes, path: str, request: Request,
              directory: bool = False) -> Granted:
        """The open, registered, and what it may cache."""
        with self._changed:
            opened = Open(owner, file_id, path)
            lease = self._leases.get((request.client, request.lease_key)) \
                if request.lease_version else None
            others = [o for o in self._files.get(path, [])
                      if lease is None or o.lease is not lease]
            granted = Granted(NONE)
            if directory:
                pass  # no directory leases, no oplocks on directories
            elif request.level == LEASE and request.lease_version:
                if lease is None:
                    lease = Lease(request.client, request.lease_key, path, request.lease_version,
                                  epoch=request.epoch)
                    self._leases[(request.client, request.lease_key)] = lease
                wanted = request.lease_state if not others else request.lease_state & (R | H)
                if lease.breaking_to is None:
                    state = valid(lease.state | wanted)
                    if state != lease.state:
                        lease.state, lease.epoch = state, lease.epoch + 1
                lease.opens += 1
                opened.level, opened.lease = LEASE, lease
                granted = Granted(LEASE, lease,
                                  BREAK_IN_PROGRESS if lease.breaking_to is not None else 0)
            elif request.level in (BATCH, EXCLUSIVE):
                opened.level = request.level if not others else LEVEL_II
                granted = Granted(opened.level)
            elif request.level == LEVEL_II:
                opened.level = LEVEL_II
                granted = Granted(LEVEL_II)
            self._files.setdefault(path, []).append(opened)
            self._opens[(owner, file_id)] = opened
            return granted

    # --- what other requests do to other opens

    def write(self, owner: Hashable, file_id: bytes | None) -> list[Break]:
        """A WRITE on this open: the others' read caching goes (Level II to none, a lease
        loses R; MS-FSA 2.1.5.4), without waiting for anyone."""
        with self._changed:
            opened = self._opens.get((owner, file_id or b""))
            if opened is None or len(self._files.get(opened.path, ())) < 2:
                return []
            breaks: list[Break] = []
            for other in self._files[opened.path]:
                if other is opened or (other.lease is not None and other.lease is opened.lease):
                    continue
                if other.lease is not None and other.lease.state & R:
                    breaks += self._break_lease(other.owner, other.lease, 0)
                elif other.lease is None and other.level == LEVEL_II:
                    breaks += self._break_oplock(other, NONE)
            return breaks

    def renaming(self, owner: Hashable, file_id: bytes) -> list[Break]:
        """A rename or delete through this open: the others' handle caching goes (BATCH to
        Level II, a lease loses H; MS-SMB2 3.3.4.7), so they can close what they kept."""
        with self._changed:
            opened = self._opens.get((owner, file_id))
            if opened is None:
                return []
            breaks: list[Break] = []
            for other in list(self._files.get(opened.path, [])):
                if other is opened or (other.lease is not None and other.lease is opened.lease):
                    continue
                if other.lease is not None and other.lease.state & H:
                    breaks += self._break_lease(other.owner, other.lease, other.lease.state & ~H)
                elif other.lease is None and other.level == BATCH:
                    breaks += self._break_oplock(other, LEVEL_II)
            return breaks

    def moved(self, path: str, to: str) -> None:
        """A file renamed: its opens (and their leases) have the new name."""
        with self._changed:
            moved = self._files.pop(path, []) if path != to else []
            for each in moved:
                each.path = to
                if each.lease is not None:
                    each.lease.path = to
            if moved:
                self._files.setdefault(to, []).extend(moved)

    # --- acknowledgments (SMB2 OPLOCK_BREAK requests)

    def ack_oplock(self, owner: Hashable, file_id: bytes, level: int) -> tuple[int, int]:
        """(status, the open's level now) for an oplock break acknowledgment (3.3.5.22.1)."""
        with self._changed:
            opened = self._opens.get((owner, file_id))
            if opened is None:
                return STATUS_FILE_CLOSED, NONE
            if opened.lease is not None or level == LEASE:
                return STATUS_INVALID_PARAMETER, opened.level
            if opened.breaking_to is None:
                return STATUS_INVALID_DEVICE_STATE, opened.level
            status = STATUS_SUCCESS
            if level not in (NONE, LEVEL_II) or level > opened.breaking_to:
                status, level = STATUS_INVALID_OPLOCK_PROTOCOL, NONE
            opened.level, opened.breaking_to = level, None
            self._changed.notify_all()
            return status, level

    def ack_lease(self, owner: Hashable, client: bytes, key: bytes,
                  state: int) -> tuple[int, Lease | None]:
        """(status, the lease) for a lease break acknowledgment (3.3.5.22.2), on a
        connection that has an open with that lease."""
        with self._changed:
            lease = self._leases.get((client, key))
            if lease is None or not any(o.owner == owner and o.lease is lease
                                        for o in self._files.get(lease.path, [])):
                return STATUS_OBJECT_NAME_NOT_FOUND, None
            if lease.breaking_to is None:
                return STATUS_UNSUCCESSFUL, lease
            if state & ~lease.breaking_to:
                return STATUS_REQUEST_NOT_ACCEPTED, lease
            lease.state, lease.breaking_to = state, None
            self._changed.notify_all()
            return STATUS_SUCCESS, lease

    def settle(self, breaks: list[Break], timeout: float) -> bool:
        """Wait until each break that needs an acknowledgment has one (or its open went);
        at `timeout` (seconds) the rest are forced down: an oplock to none (MS-SMB2
        3.3.2.1), a lease to the state it was breaking to. True if none had to be."""
        waiting = [b for b in breaks if b.ack_required]
        deadline = time.monotonic() + timeout
        with self._changed:
            while any(b.pending() for b in waiting):
                left = deadline - time.monotonic()
                if left <= 0:
                    for late in waiting:
                        if late.pending() and late.lease is not None:
                            late.lease.state = late.lease.breaking_to or 0
                            late.lease.breaking_to = None
                        elif late.pending() and late.open is not None:
                            late.open.level, late.open.breaking_to = NONE, None
                    self._changed.notify_all()
                    return False
                self._changed.wait(left)
            return True

    # --- forgetting

    def close(self, owner: Hashable, file_id: bytes) -> None:
        with self._changed:
            opened = self._opens.pop((owner, file_id), None)
            if opened is not None:
                self._forget(opened)
                self._changed.notify_all()

    def drop(self, owner: Hashable) -> None:
        """Every open of a connection that went."""
        with self._changed:
            for key in [key for key in self._opens if key[0] == owner]:
                self._forget(self._opens.pop(key))
            self._changed.notify_all()

    def opens(self, path: str) -> list[Open]:
        with self._changed:
            return list(self._files.get(path, []))

    def __len__(self) -> int:
        with self._changed:
            return len(self._opens)

    # --- inside the lock

    def _forget(self, opened: Open) -> None:
        opened.gone = True
        siblings = self._files.get(opened.path, [])
        if opened in siblings:
            siblings.remove(opened)
        if not siblings:
            self._files.pop(opened.path, None)
        lease = opened.lease
        if lease is not None:
            lease.opens -= 1
            if lease.opens <= 0:
                lease.breaking_to = None
                self._leases.pop((lease.client, lease.key), None)

    def _break_oplock(self, opened: Open, to: int) -> list[Break]:
        if opened.breaking_to is not None:  # one at a time: wait for the break on its way
            return [Break(opened.owner, b"", True, open=opened)]
        ack = opened.level in (BATCH, EXCLUSIVE)  # Level II to none: no acknowledgment
        body = OPLOCK_BREAK.pack(24, to, 0, 0, opened.file_id)
        text = f"oplock {LEVEL_NAMES[opened.level]} -> {LEVEL_NAMES[to]}"
        if ack:
            opened.breaking_to = to
        else:
            opened.level = to
        return [Break(opened.owner, body, ack, open=opened, text=text)]

    def _break_lease(self, owner: Hashable, lease: Lease, to: int) -> list[Break]:
        to = valid(to)
        if lease.breaking_to is not None:  # one at a time: wait for the break on its way
            return [Break(owner, b"", True, lease=lease)]
        if to == lease.state:
            return []
        ack = bool(lease.state & (W | H))  # from R alone: no acknowledgment (3.3.4.7)
        current = lease.state
        lease.epoch += 1
        if ack:
            lease.breaking_to = to
        else:
            lease.state = to
        body = LEASE_BREAK.pack(44, lease.epoch & 0xFFFF if lease.version == 2 else 0,
                                ACK_REQUIRED if ack else 0, lease.key, current, to, 0, 0, 0)
        return [Break(owner, body, ack, lease=lease,
                      text=f"lease {state_name(current)} -> {state_name(to)}")]
