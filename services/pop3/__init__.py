"""POP3: users' INBOX from the shared store, on 110 (STLS) and 995 (implicit TLS).

The same messages IMAP shows; DELE takes effect at QUIT through the store, so IMAP sessions
see the EXPUNGE. Concurrent sessions each get a snapshot of the INBOX taken at login (see
core.py). Our own RFC 1939 state machine rather than twisted.mail.pop3, which lacks STLS,
fails every APOP on Python 3, advertises PIPELINE and joke capabilities, and wants messages
LF-delimited (#2071).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Invalid, ServiceSettings, setting
from ..listeners import Listener, Reach, curl

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab


# What can break (services/faults.py): `protolab fault add pop3.NAME [--target USER|ADDRESS]`.
FAULTS = {
    "login-refused": "the user's logins get -ERR [AUTH] Authentication failed, even with the "
                     "right password",
    "mailbox-locked": "the password is accepted, then -ERR [IN-USE] Mailbox is locked by "
                      "another POP3 session (RFC 2449): the client cannot open the mailbox",
}


@dataclass
class Settings(ServiceSettings):
    host: str = setting("pop3", "this service's host name in the lab zone")
    aliases: list[str] = setting(["pop"], "more host names of the POP3 server")
    pop3_port: int = setting(110, "POP3 port, STLS offered")
    pop3s_port: int = setting(995, "POP3 over implicit TLS")
    plaintext_auth: bool = setting(
        True, "allow USER/PASS and AUTH PLAIN before STLS (the class sees the password in a "
              "capture); false: only over TLS (APOP and CRAM-MD5 still work)")
    idle_timeout: int = setting(600, "seconds of silence before a session is closed")
    max_errors: int = setting(10, "errors in a row before a session is closed")

    def validate(self) -> None:
        super().validate()
        for key in ("idle_timeout", "max_errors"):
            if getattr(self, key) <= 0:
                raise Invalid(key, "must be positive")


def listeners(config: LabConfig) -> list[Listener]:
    s = config.service("pop3")
    return [
        # preference 10: RFC 6186 3.4, clients that can choose take IMAP first
        Listener("pop3", "pop3", s.pop3_port, tls="starttls", srv="_pop3._tcp",
                 role="mail-access", preference=10),
        Listener("pop3", "pop3s", s.pop3s_port, tls="implicit", srv="_pop3s._tcp",
                 role="mail-access", preference=10),
    ]


def service(lab: Lab) -> IService:
    from .server import make_service

    return make_service(lab)


def probe(target: ProbeTarget) -> str:
    import poplib

    client = poplib.POP3(target.host, target.port("pop3", "pop3"), timeout=target.timeout)
    try:
        greeting = client.getwelcome().decode(errors="replace")
        capabilities = " ".join(sorted(client.capa()))
        client.quit()
    finally:
        client.close()
    return f"{greeting.split(' <')[0]}; CAPA: {capabilities}"


def clients(reach: Reach) -> list[str]:
    return [curl(reach, "pop3")]
