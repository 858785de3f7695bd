"""SMTP: the lab's mail exchanger (25), submission (587, AUTH required) and SMTPS (465).

Mail for local addresses goes straight into the recipient's INBOX in the shared store,
where POP3 and IMAP read it; it is on disk before the 250. Our own RFC 5321 state machine
(core.py) rather than twisted.mail.smtp, whose reply order, parameters, extensions and
line handling would all need replacing (see core.py and the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import DOMAIN_RE, Invalid, ServiceSettings, check_name, setting
from ..listeners import Listener, Reach

if TYPE_CHECKING:
    from twisted.application.service import IService

    from ..check import ProbeTarget
    from ..config import LabConfig
    from ..lab import Lab

# What can break (services/faults.py): `protolab fault add smtp.NAME [--target ADDRESS|
# SENDER|RECIPIENT]` (the client's address, its MAIL FROM, or a recipient or user).
FAULTS = {
    "greylist": "the first attempt of each (client, sender, recipient) gets 451 4.7.1 "
                "Greylisting in action; the same one retried 5 s later is accepted",
    "reject-recipient": "RCPT TO the target gets 550 5.1.1 User unknown in local recipient "
                        "table, though the user exists",
    "slow-banner": "the 220 greeting comes 8 s after the connection: clients seem to hang "
                   "at connect",
    "starttls-fails": "STARTTLS is offered and answered 220, then the handshake fails with a "
                      "handshake_failure alert, as when the server cannot load its "
                      "certificate: the client's TLS start fails",
}


@dataclass
class Settings(ServiceSettings):
    host: str = setting("mail", "this service's host name in the lab zone")
    aliases: list[str] = setting(["smtp", "mx"], "more host names of the mail server")
    smtp_port: int = setting(25, "MX port: mail for local addresses, no AUTH needed")
    submission_port: int = setting(587, "submission port: AUTH required, STARTTLS offered")
    smtps_port: int = setting(465, "submission over implicit TLS: AUTH required")
    size_limit: int = setting(25 * 1024 * 1024, "largest message accepted, in bytes (EHLO "
                              "SIZE); larger -> 552")
    plaintext_auth: bool = setting(
        True, "offer AUTH before STARTTLS, so a class sees the base64 credentials in a "
              "capture; false: only over TLS")
    catch_all: str = setting(
        "", "a user who receives every message, for any address and domain (CI mode, like "
            "Mailpit); empty: unknown local users 550, other domains 554 relay denied")
    address_aliases: dict[str, str] = setting(
        {"postmaster": "alice"},
        "addresses delivered to a user: \"LOCAL\" (any local domain) or \"LOCAL@DOMAIN\" "
        "= \"USER\"")
    domains: list[str] = setting(
        [], "more domains whose mail is local (the lab's domain and the mail host names "
            "always are)")
    idle_timeout: int = setting(300, "seconds of silence before a session is closed (421)")
    max_errors: int = setting(10, "errors in a row before a session is closed (421)")

    def validate(self) -> None:
        super().validate()
        for key in ("size_limit", "idle_timeout", "max_errors"):
            if getattr(self, key) <= 0:
                raise Invalid(key, "must be positive")
        if self.catch_all:
            check_name(self.catch_all, "catch_all")
        for alias, user in self.address_aliases.items():
            check_name(user, f"address_aliases.{alias}")
            if not alias or any(c.isspace() or c in "<>" for c in alias):
                raise Invalid("address_aliases", f"{alias!r} is not an address")
        for domain in self.domains:
            if not DOMAIN_RE.match(domain):
                raise Invalid("domains", f"{domain!r} is not a domain name")


def listeners(config: LabConfig) -> list[Listener]:
    s = config.service("smtp")
    return [
        Listener("smtp", "smtp", s.smtp_port, tls="starttls", note="MX: local domains, no AUTH",
                 role="mail-relay"),
        Listener("smtp", "submission", s.submission_port, tls="starttls", note="AUTH required",
                 srv="_submission._tcp", role="mail-submission"),
        Listener("smtp", "smtps", s.smtps_port, tls="implicit", note="AUTH required",
                 srv="_submissions._tcp", role="mail-submission"),  # RFC 8314
    ]


def service(lab: Lab) -> IService:
    from .server import make_service

    return make_service(lab)


def probe(target: ProbeTarget) -> str:
    import smtplib

    client = smtplib.SMTP(timeout=target.timeout)
    try:
        code, banner = client.connect(target.host, target.port("smtp", "smtp"))
        if code != 220:
            raise RuntimeError(f"greeting {code} {banner.decode(errors='replace')}")
        code, _ = client.ehlo("protolab-check")
        if code != 250:
            raise RuntimeError(f"EHLO answered {code}")
        features = " ".join(sorted(k.upper() for k in client.esmtp_features))
        client.quit()
    finally:
        client.close()
    return f"220 {banner.decode(errors='replace').split()[0]}; EHLO: {features}"


def clients(reach: Reach) -> list[str]:
    """swaks, as a mail client submits (with AUTH) or as a server relays (without)."""
    listener, mail = reach.listener, f"{reach.user}@{reach.domain}"
    tls = {"implicit": " --tlsc", "starttls": " --tls"}.get(listener.tls, "")
    auth = "" if listener.role == "mail-relay" else \
        f" --auth-user {reach.user} --auth-password {reach.user}"
    return [f"swaks --server {reach.host}:{listener.port}{tls} --to {mail} --from {mail}{auth}"]
