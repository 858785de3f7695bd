"""Line-oriented conversations: a sans-IO base for SMTP and POP3, and its Twisted adapter.

A Conversation takes whole lines (without their ending) and collects what to send, plus
two requests for the transport: start TLS, close. The adapter owns everything about
bytes: splitting on LF with or without CR before it (netcat-style clients send bare LF),
the line length limit the conversation asks for (an over-long line is discarded up to its
end and reported once, so the session carries on), the idle timeout, and writing replies.

Replies go out once per received chunk, in order, after every pipelined command in it has
been handled: commands are handled synchronously, one after the other, so a reply can
never overtake an earlier one (what Twisted's SMTP gets wrong, #8126).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..journal import Session
    from ..store.faults import Fault

# Where a fault would act (services/faults.py): (KIND, *targets) -> the fault on for any of
# them, or None. The lab's Board.find: a sans-IO core gets the callable, not the Board.
FaultFinder = Callable[..., "Fault | None"]


def find_fault(faults: FaultFinder | None, journal: Session, kind: str,
               *targets: str | None) -> Fault | None:
    """The fault KIND if it is on for any of `targets`, journaled: the caller acts on it."""
    found = faults(kind, *targets) if faults is not None else None
    if found is not None:
        journal.event("fault", f"{found.kind} #{found.id}")
    return found


class Conversation:
    """Sans-IO base: `receive(line)` in; `take()` bytes, `want_tls` and `closing` out."""

    line_limit = 1000  # bytes per line including CRLF; the adapter enforces it
    # The protocol's last words before it closes: after idle_timeout, after our own bug.
    timeout_reply = ""
    crash_reply = ""
    idle_timeout: float = 300
    max_errors = 10  # errors in a row before the session is closed

    def __init__(self, journal: Session) -> None:
        self.journal = journal
        self.out: list[bytes] = []
        self.want_tls = False
        self.broken_tls = False  # with want_tls: a TLS that fails its handshake (a fault)
        self.closing = False
        self.errors = 0
        # True while a command waits for something (a durable delivery): the adapter reads
        # no further line until wake() says it is done.
        self.waiting = False
        self.wake: Callable[[], None] = lambda: None
        self.faults: FaultFinder | None = None
        # (seconds, call) for the adapter to run later: a pause that holds no thread
        self.timers: list[tuple[float, Callable[[], None]]] = []

    # --- what subclasses implement ---------------------------------------------------

    def greet(self) -> None:
        raise NotImplementedError

    def receive(self, line: bytes) -> None:
        raise NotImplementedError

    # Message text (SMTP DATA) is taken in bulk, many lines per call, when text_mode is on.
    text_mode = False

    def text(self, data: bytes) -> int:
        """Complete lines of text at the start of `data`; returns how many bytes it took
        (0: no complete line yet)."""
        raise NotImplementedError

    def too_long(self) -> None:
        """A line over line_limit arrived (and was discarded)."""
        raise NotImplementedError

    def timed_out(self) -> None:
        self.send(self.timeout_reply)
        self.close("idle timeout")

    def crashed(self) -> None:
        """Our own bug while handling a line: say so and close."""
        self.send(self.crash_reply)
        self.close("internal error")

    def tls_started(self) -> None:
        """The transport now speaks TLS (after want_tls)."""
        self.want_tls = False

    # --- helpers -----------------------------------------------------------------------

    def send(self, text: str, journal: bool = True) -> None:
        self.out.append(text.encode("utf-8", "replace") + b"\r\n")
        if journal:
            self.journal.reply(text)

    def send_raw(self, data: bytes) -> None:
        """Bytes that are not a reply line (message text); not journaled."""
        self.out.append(data)

    def fault(self, kind: str, *targets: str | None) -> Fault | None:
        return find_fault(self.faults, self.journal, kind, *targets)

    def acted(self, fault: Fault) -> None:
        """Journal a fault found without fault() (one that acts only sometimes)."""
        self.journal.event("fault", f"{fault.kind} #{fault.id}")

    def later(self, seconds: float, call: Callable[[], None]) -> None:
        """Run `call` in `seconds` (then the adapter reads on, if no longer waiting)."""
        self.timers.append((seconds, call))

    def counted(self, ok: bool) -> bool:
        """Count an error in a row (or reset the count); True when it is one too many."""
        self.errors = 0 if ok else self.errors + 1
        return self.errors >= self.max_errors

    def close(self, reason: str) -> None:
        self.closing = True
        self.journal.event("close", reason)

    def take(self) -> bytes:
        data = b"".join(self.out)
        self.out.clear()
        return data

