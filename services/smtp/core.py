"""The SMTP server state machine (RFC 5321 with ESMTP extensions), sans-IO.

Lines in, reply lines out (see lines.Conversation); delivery and password checks are
synchronous calls into the store, so one command is wholly handled before the next is
read and pipelined replies come out in order.

Extensions: PIPELINING, SIZE (MAIL FROM's SIZE= parameter honoured), 8BITMIME,
ENHANCEDSTATUSCODES, STARTTLS, AUTH PLAIN LOGIN (and CRAM-MD5 when the store keeps
passwords in clear). NOOP, RSET, VRFY (252), HELP, QUIT.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..credentials import Credentials
from ..line.conversation import Conversation, FaultFinder
from ..line.sasl import Exchange, Outcome, mechanisms
from .delivery import Delivery, MailDrop, address_literal, valid_address

if TYPE_CHECKING:
    from ..journal import Session

# Postfix's line_length_limit: RFC 5321 says 1000 for text lines and 512 for commands;
# clients exceed both, so tolerate up to this, then answer 500 5.5.2 and carry on.
COMMAND_LIMIT = 2048
TEXT_LIMIT = 65536  # a text line in DATA; longer ones get the message refused at its end
AUTH_LIMIT = 12288  # RFC 4954 section 4: SASL response lines
MAX_RECIPIENTS = 100
INSUFFICIENT_STORAGE = "4.3.1 Insufficient system storage"

# The faults' numbers (FAULTS in __init__.py)
GREYLIST_SECONDS = 5  # a retry of the same triple after this is accepted
SLOW_BANNER_SECONDS = 8  # RFC 5321 4.5.3.2 gives clients 5 minutes for the greeting

PATH_RE = re.compile(r"^(FROM|TO):\s*(<[^<>]*>|[^\s<>]+)(.*)$", re.IGNORECASE)


def valid_literal(text: str) -> bool:
    """Whether `[...]` is an IPv4 or `IPv6:` address literal (RFC 5321 4.1.3)."""
    inner = text[1:-1] if text.endswith("]") else ""
    want: type[ipaddress.IPv4Address] | type[ipaddress.IPv6Address] = ipaddress.IPv4Address
    if inner[:5].upper() == "IPV6:":
        inner, want = inner[5:], ipaddress.IPv6Address
    try:
        want(inner)
    except ValueError:
        return False
    return True


def final_dot(data: bytes, limit: int) -> tuple[int, int] | None:
    """Where the line "." that ends DATA starts and ends in data[:limit] (data starts at
    a line's start), or None. bytes.find, not a regex: this runs over every message."""
    for ending in (b".\r\n", b".\n"):
        if data.startswith(ending) and len(ending) <= limit:
            return 0, len(ending)
    found = [(at + 1, at + 1 + len(ending) - 1) for ending in (b"\n.\r\n", b"\n.\n")
             if (at := data.find(ending, 0, limit)) >= 0]
    return min(found) if found else None


@dataclass(frozen=True)
class Options:
    hostname: str  # mail.lab.test: in the greeting and the Received header
    size_limit: int
    plaintext_auth: bool  # AUTH offered before TLS
    auth_required: bool  # submission: MAIL only after AUTH
    cram: bool  # CRAM-MD5 offered (the store keeps passwords in clear)
    starttls: bool  # STARTTLS offered on this port (not on implicit-TLS ports)
    idle_timeout: float = 300
    max_errors: int = 10


class Greylist:
    """The greylist fault's memory: when each (fault, client, sender, recipient) was first
    seen. Bounded: past LIMIT triples it starts over (and greylists them again)."""

    LIMIT = 10_000

    def __init__(self, seconds: float = GREYLIST_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self.seen: dict[tuple[str, str, str, str], float] = {}

    def wait(self, key: tuple[str, str, str, str]) -> float:
        """Seconds before `key` passes (0: now); its first attempt starts the clock."""
        now = self.clock()
        first = self.seen.get(key)
        if first is None:
            if len(self.seen) >= self.LIMIT:
                self.seen.clear()
            first = self.seen[key] = now
        return max(0.0, first + self.seconds - now)


class SMTPConversation(Conversation):
    timeout_reply = "421 4.4.2 Idle timeout, closing the connection"
    crash_reply = "421 4.3.0 Internal server error, closing the connection"

    def __init__(self, journal: Session, options: Options, drop: MailDrop,
                 credentials: Credentials, secure: bool, peer: str,
                 faults: FaultFinder | None = None, greylist: Greylist | None = None) -> None:
        super().__init__(journal)
        self.faults = faults
        self.greylist = greylist or Greylist()
        self.options = options
        self.drop = drop
        self.credentials = credentials
        self.secure = secure
        self.peer = peer
        self.idle_timeout = options.idle_timeout
        self.max_errors = options.max_errors
        self.line_limit = COMMAND_LIMIT
        self.helo: str | None = None
        self.esmtp = False
        self.user: str | None = None
        self.auth: Exchange | None = None
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.recipients: list[tuple[str, str]] = []  # (address, user)
        self.body: list[bytes] | None = None  # collecting DATA when not None
        self.size = 0
        self.oversize = False
        self.long_line = False

    # --- replies -------------------------------------------------------------------------

    def reply(self, code: int, text: str) -> None:
        self.send(f"{code} {text}")
        if self.counted(code < 400):
            self.send("421 4.7.0 Too many errors, closing the connection")
            self.close("too many errors")

    def reply_lines(self, code: int, lines: list[str]) -> None:
        for line in lines[:-1]:
            self.send(f"{code}-{line}")
        self.reply(code, lines[-1])

    def greet(self) -> None:
        if self.fault("smtp.slow-banner", self.peer):
            self.waiting = True  # nothing the client sends is read before the banner
            self.later(SLOW_BANNER_SECONDS, self._banner)
        else:
            self._banner()

    def _banner(self) -> None:
        self.waiting = False
        self.send(f"220 {self.options.hostname} ESMTP protolab")

    def tls_started(self) -> None:
        super().tls_started()
        # RFC 3207 section 4.2: forget everything learnt in clear, including EHLO.
        self.secure = True
        self.helo = None
        self.esmtp = False
        self._reset()

    def too_long(self) -> None:
        if self.body is not None:
            self.long_line = True
        elif self.auth is not None:
            self.auth = None
            self.line_limit = COMMAND_LIMIT
            self.reply(500, "5.5.6 Authentication exchange line is too long")
        else:
            self.reply(500, f"5.5.2 Line too long (limit {COMMAND_LIMIT} bytes)")

    # --- lines -------------------------------------------------------------------------

    def receive(self, line: bytes) -> None:
        if self.body is not None:
            self.text(line + b"\r\n")  # the adapter took one CR off: give it back
        elif self.auth is not None:
            self._auth_line(line)
        else:
            self._command(line)

    def _command(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        verb, _, arg = text.strip().partition(" ")
        verb = verb.upper()
        words = arg.split()
        if verb == "AUTH" and len(words) > 1:  # the initial response holds the password
            text = f"AUTH {words[0]} {self.journal.secret(words[1])}"
        self.journal.command(text)
        handler = getattr(self, f"smtp_{verb}", None) if verb.isalpha() else None
        if handler is None:
            self.reply(500, "5.5.2 Error: command not recognized")
        else:
            handler(arg.strip())

    # --- commands ----------------------------------------------------------------------

    def smtp_HELO(self, arg: str) -> None:
        self._hello(arg, esmtp=False)

    def smtp_EHLO(self, arg: str) -> None:
        self._hello(arg, esmtp=True)

    def _hello(self, arg: str, esmtp: bool) -> None:
        if not arg or " " in arg:
            self.reply(501, "5.5.4 Syntax: EHLO hostname" if esmtp else
                       "5.5.4 Syntax: HELO hostname")
            return
        if arg.startswith("[") and not valid_literal(arg):
            self.reply(501, "5.5.4 Invalid address literal (RFC 5321 4.1.3: [192.0.2.1] "
                            "or [IPv6:2001:db8::1])")
            return
        self._reset()
        self.helo, self.esmtp = arg, esmtp
        greeting = f"{self.options.hostname} Hello {arg} {address_literal(self.peer)}"
        if not esmtp:
            self.reply(250, greeting)
            return
        lines = [greeting, "PIPELINING", f"SIZE {self.options.size_limit}", "8BITMIME",
                 "ENHANCEDSTATUSCODES"]
        if self.options.starttls and not self.secure:
            lines.append("STARTTLS")
        if self._auth_offered():
            lines.append("AUTH " + " ".join(mechanisms(self.credentials, self.options.cram)))
        lines.append("HELP")
        self.reply_lines(250, lines)

    def _auth_offered(self) -> bool:
        return self.user is None and (self.secure or self.options.plaintext_auth)

    def smtp_STARTTLS(self, arg: str) -> None:
        if not self.options.starttls or self.secure:
            self.reply(503, "5.5.1 TLS already active" if self.secure else
                       "5.5.1 STARTTLS not offered here")
        elif arg:
            self.reply(501, "5.5.4 Syntax: STARTTLS")
        else:
            self.reply(220, "2.0.0 Ready to start TLS")
            self.want_tls = True
            # as a server whose certificate cannot be loaded: offered, 220, then the
            # handshake fails (OpenSSL's "no shared cipher", a handshake_failure alert)
            self.broken_tls = self.fault("smtp.starttls-fails", self.peer) is not None

    def smtp_AUTH(self, arg: str) -> None:
        parts = arg.split()
        if not self.esmtp:
            self.reply(503, "5.5.1 Send EHLO first")
        elif self.user is not None:
            self.reply(503, "5.5.1 Already authenticated")
        elif self.sender is not None:
            self.reply(503, "5.5.1 AUTH not allowed during a mail transaction")
        elif not self._auth_offered():
            self.reply(538, "5.7.11 Encryption required for requested authentication "
                            "mechanism (STARTTLS first)")
        elif not parts or len(parts) > 2:
            self.reply(501, "5.5.4 Syntax: AUTH mechanism [initial-response]")
        elif parts[0].upper() not in mechanisms(self.credentials, self.options.cram):
            self.reply(504, "5.5.4 Unrecognized authentication type")
        else:
            self.auth = Exchange(parts[0].upper(), self.credentials, self.options.hostname)
            self._auth_step(*self.auth.start(parts[1] if len(parts) > 1 else None))

    def _auth_line(self, line: bytes) -> None:
        self.journal.command(self.journal.secret(line.decode("ascii", "replace")))
        assert self.auth is not None
        self._auth_step(*self.auth.respond(line.decode("ascii", "replace")))

    def _auth_step(self, challenge: str | None, outcome: Outcome | None) -> None:
        if challenge is not None:
            self.line_limit = AUTH_LIMIT
            self.send(f"334 {challenge}")
            return
        mechanism = self.auth.mechanism if self.auth else ""
        self.auth = None
        self.line_limit = COMMAND_LIMIT
        assert outcome is not None
        if outcome.error == "cancelled":
            self.reply(501, "5.7.0 Authentication cancelled")
        elif outcome.error:
            self.reply(501, "5.5.2 Cannot decode the response")
        elif outcome.user is None:
            self.journal.auth(outcome.login, False, mechanism, outcome.secret)
            self.reply(535, "5.7.8 Error: authentication failed")
        else:
            self.journal.auth(outcome.user, True, mechanism, outcome.secret)
            self.user = outcome.user
            self.reply(235, "2.7.0 Authentication successful")

    def smtp_MAIL(self, arg: str) -> None:
        if self.helo is None:
            self.reply(503, "5.5.1 Error: send HELO/EHLO first")
            return
        if self.sender is not None:
            self.reply(503, "5.5.1 Error: nested MAIL command")
            return
        if self.options.auth_required and self.user is None:
            self.reply(530, "5.7.0 Authentication required")
            return
        parsed = self._path(arg, "FROM")
        if parsed is None:
            self.reply(501, "5.5.4 Syntax: MAIL FROM:<address>")
            return
        address, params = parsed
        if address and not valid_address(address):
            self.reply(501, f"5.1.7 <{address}>: Bad sender address syntax")
            return
        for key, value in params:
            if key == "SIZE" and self.esmtp:
                if not value.isdigit():
                    self.reply(501, "5.5.4 Bad SIZE parameter")
                    return
                if int(value) > self.options.size_limit:
                    self.reply(552, "5.3.4 Message size exceeds fixed limit")
                    return
                if int(value) > self.drop.room():  # RFC 1870: try again later
                    self.reply(452, INSUFFICIENT_STORAGE)
                    return
            elif key == "BODY" and self.esmtp and value.upper() in ("7BIT", "8BITMIME"):
                pass
            elif key == "AUTH" and self.esmtp:
                pass  # RFC 4954 section 5: the original submitter; nothing to relay it to
            else:
                self.reply(555, f"5.5.4 Unsupported parameter {key}")
                return
        self.sender = address
        self.reply(250, "2.1.0 Ok")

    def smtp_RCPT(self, arg: str) -> None:
        if self.sender is None:
            self.reply(503, "5.5.1 Error: need MAIL command")
            return
        parsed = self._path(arg, "TO")
        if parsed is None or not parsed[0]:
            self.reply(501, "5.5.4 Syntax: RCPT TO:<address>")
            return
        address, params = parsed
        if params:
            self.reply(555, f"5.5.4 Unsupported parameter {params[0][0]}")
        elif not valid_address(address):
            self.reply(501, f"5.1.3 <{address}>: Bad recipient address syntax")
        elif len(self.recipients) >= MAX_RECIPIENTS:
            self.reply(452, "4.5.3 Error: too many recipients")
        else:
            verdict = self.drop.resolve(address)
            code, text = verdict.code, verdict.text
            if code < 300:
                code, text = self._recipient_faults(address, verdict.user) or (code, text)
            if verdict.user is not None and code < 300:
                self.recipients.append((address, verdict.user))
            self.reply(code, text)

    def _recipient_faults(self, address: str, user: str | None) -> tuple[int, str] | None:
        """The reply the faults (FAULTS in __init__.py) give an accepted recipient instead."""
        if self.faults is None:
            return None
        sender = self.sender or ""
        if self.fault("smtp.reject-recipient", self.peer, sender, address, user):
            return 550, f"5.1.1 <{address}>: Recipient address rejected: User unknown in " \
                        "local recipient table"
        if user is not None and self.fault("imap.over-quota", user, address):
            return 552, f"5.2.2 <{address}> Quota exceeded (mailbox for user is full)"
        fault = self.faults("smtp.greylist", self.peer, sender, address, user)
        if fault is not None:
            # the store reuses a cleared fault's id: its creation time tells them apart
            which = f"{fault.id}@{fault.created}"
            wait = self.greylist.wait((which, self.peer, sender.lower(), address.lower()))
            if wait > 0:
                self.acted(fault)
                return 451, f"4.7.1 Greylisting in action, please come back in " \
                            f"{time.strftime('%H:%M:%S', time.gmtime(round(wait)))}"
        return None

    @staticmethod
    def _path(arg: str, keyword: str) -> tuple[str, list[tuple[str, str]]] | None:
        """(address, [(PARAM, value)]) of `FROM:<a> K=V ...`; None when malformed."""
        match = PATH_RE.match(arg)
        if match is None or match.group(1).upper() != keyword:
            return None
        address = match.group(2).strip("<>")
        if address.startswith("@") and ":" in address:  # an obsolete source route
            address = address.split(":", 1)[1]
        params = []
        for item in match.group(3).split():
            key, _, value = item.partition("=")
            params.append((key.upper(), value))
        return address, params

    def smtp_DATA(self, arg: str) -> None:
        if arg:
            self.reply(501, "5.5.4 Syntax: DATA")
        elif self.sender is None:
            self.reply(503, "5.5.1 Error: need MAIL command")
        elif not self.recipients:
            self.reply(554, "5.5.1 Error: no valid recipients")
        else:
            self.body = []
            self.line_limit = TEXT_LIMIT
            self.send("354 End data with <CR><LF>.<CR><LF>")

    @property
    def text_mode(self) -> bool:  # type: ignore[override]
        return self.body is not None

    def text(self, data: bytes) -> int:
        """Message text in bulk: whole lines, up to and including the final "."."""
        assert self.body is not None
        cut = data.rfind(b"\n") + 1
        end = final_dot(data, cut)
        if end is not None:
            body, cut = data[:end[0]], end[1]
        else:
            body = data[:cut]
        if body:
            # Line ends stay as sent (a CR before each LF or not, as netcat sends): the
            # store makes them CRLF, and the size counts them so. (A bare-LF line may be
            # one byte longer than TEXT_LIMIT allows a CRLF one: not worth a Python loop.)
            if max(map(len, body.split(b"\n"))) + 1 > TEXT_LIMIT:
                self.long_line = True
            if body.startswith(b"."):
                body = body[1:]  # dot-stuffing (RFC 5321 section 4.5.2)
            body = body.replace(b"\n.", b"\n")
            crlfs = body.count(b"\r\n")
            self.size += len(body) + body.count(b"\n") + body.count(b"\r") - 2 * crlfs
            if self.size > self.options.size_limit:
                self.oversize = True
                self.body.clear()  # nothing of it will be kept: do not hold it in memory
            else:
                self.body.append(body)
        if end is not None:
            self._end_data()
        return cut

    def _end_data(self) -> None:
        assert self.body is not None
        self.line_limit = COMMAND_LIMIT
        self.journal.command(".")
        body = b"".join(self.body)
        bare = body.count(b"\n") - body.count(b"\r\n")
        if bare:  # netcat's Enter: the tell of SMTP typed by hand (a classroom exercise)
            self.journal.event("bare-lf", f"{bare} lines of the message end in LF alone")
        size, sender, recipients = self.size, self.sender or "", self.recipients
        oversize, long_line = self.oversize, self.long_line
        self._reset()
        if oversize:
            self.reply(552, "5.3.4 Message size exceeds fixed limit")
            return
        if long_line:
            self.reply(500, f"5.5.2 Message has a line longer than {TEXT_LIMIT} bytes; "
                            "not delivered")
            return
        protocol = ("ESMTP" if self.esmtp else "SMTP") + ("S" if self.secure else "") + \
            ("A" if self.user and self.esmtp else "")
        self.waiting = True
        self.drop.deliver(sender, recipients, body, helo=self.helo or "", peer=self.peer,
                          protocol=protocol,
                          then=lambda delivery: self._delivered(delivery, size, sender))

    def _delivered(self, delivery: Delivery, size: int, sender: str) -> None:
        self.waiting = False
        if delivery.error:  # the store could not take it: the client tries again later
            self.journal.event("error", f"delivery failed: {delivery.error}")
            if delivery.disk_full:
                self.reply(452, INSUFFICIENT_STORAGE)
            else:
                self.reply(451, "4.3.0 Error: could not store the message, try again later")
        else:
            self.journal.event("delivered", f"{size} bytes from <{sender}> to " + ", ".join(
                f"{user} uid {uid}" for user, uid in delivery.delivered))
            self.reply(250, f"2.0.0 Ok: queued as {delivery.queue_id}")
        self.wake()

    def smtp_RSET(self, arg: str) -> None:
        self._reset()
        self.reply(250, "2.0.0 Ok")

    def smtp_NOOP(self, arg: str) -> None:
        self.reply(250, "2.0.0 Ok")

    def smtp_VRFY(self, arg: str) -> None:
        if not arg:
            self.reply(501, "5.5.4 Syntax: VRFY address")
        else:
            self.reply(252, "2.5.2 Cannot VRFY user, but will accept message and attempt "
                            "delivery")

    def smtp_EXPN(self, arg: str) -> None:
        self.reply(502, "5.5.1 EXPN not available")

    def smtp_HELP(self, arg: str) -> None:
        self.reply_lines(214, ["2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP "
                               "QUIT STARTTLS AUTH", "2.0.0 End of HELP info"])

    def smtp_QUIT(self, arg: str) -> None:
        self.send(f"221 2.0.0 {self.options.hostname} closing connection")
        self.close("quit")
