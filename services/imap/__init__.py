"""IMAP: IMAP4rev1 (RFC 3501) with the extensions mail clients look for, over the shared store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import Invalid, ServiceSettings, setting
from ..listeners import Listener, Reach, curl

if TYPE_CHECKING:
    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab


# What can break (services/faults.py): `protolab fault add imap.NAME [--target USER|ADDRESS]`.
FAULTS = {
    "login-refused": "the user's logins get NO [AUTHENTICATIONFAILED] Authentication failed, "
                     "even with the right password",
    "mailbox-locked": "SELECT INBOX gets NO [INUSE] Mailbox is locked by another session: "
                      "the client cannot open the inbox (EXAMINE and other folders work)",
    "over-quota": "APPEND, COPY and MOVE get NO [OVERQUOTA] Quota exceeded (RFC 5530), and "
                  "SMTP refuses mail to the user with 552 5.2.2 Quota exceeded",
}


@dataclass
class Settings(ServiceSettings):
    host: str = setting("imap", "this service's host name in the lab zone")
    port: int = setting(143, "IMAP port (STARTTLS offered)")
    tls_port: int = setting(993, "IMAPS port (implicit TLS)")
    plaintext_auth: bool = setting(
        True, "allow LOGIN and AUTHENTICATE PLAIN before TLS; false: LOGINDISABLED until "
              "STARTTLS")
    size_limit: int = setting(50 * 1024 * 1024, "largest message APPEND accepts, in bytes")
    autologout: int = setting(1800, "seconds of silence before a session is logged out "
                                    "(RFC 3501: at least 1800)")

    def validate(self) -> None:
        super().validate()
        if self.autologout < 1800:
            raise Invalid("autologout", "RFC 3501 asks for at least 1800 seconds")
        if self.size_limit < 1024:
            raise Invalid("size_limit", "must be at least 1024 bytes")


def listeners(config: LabConfig) -> list[Listener]:
    s = config.service("imap")
    return [Listener("imap", "imap", s.port, tls="starttls", srv="_imap._tcp", role="mail-access"),
            Listener("imap", "imaps", s.tls_port, tls="implicit", srv="_imaps._tcp",
                     role="mail-access")]


def service(lab: Lab) -> Any:
    from .server import make_service

    return make_service(lab)


def probe(target: ProbeTarget) -> str:
    """A greeting and CAPABILITY over the plain port."""
    import socket

    with socket.create_connection((target.host, target.port("imap", "imap")),
                                  timeout=target.timeout) as sock:
        stream = sock.makefile("rwb")
        greeting = stream.readline().decode("utf-8", "replace").strip()
        if not greeting.startswith("* OK"):
            raise RuntimeError(f"unexpected greeting: {greeting[:80]}")
        stream.write(b"p1 CAPABILITY\r\np2 LOGOUT\r\n")
        stream.flush()
        caps = ""
        while True:
            line = stream.readline().decode("utf-8", "replace").strip()
            if not line:
                raise RuntimeError("connection closed before CAPABILITY completed")
            if line.startswith("* CAPABILITY "):
                caps = line[len("* CAPABILITY "):]
            if line.startswith("p1 "):
                if not line.startswith("p1 OK"):
                    raise RuntimeError(line[:80])
                break
    if "IMAP4rev1" not in caps.split():
        raise RuntimeError("no IMAP4rev1 in CAPABILITY")
    return f"{greeting[:60]} ({len(caps.split())} capabilities)"


def clients(reach: Reach) -> list[str]:
    return [curl(reach, "imap")]
