"""POP3's Twisted service: port 110 (STLS) and 995 (implicit TLS) over the shared store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import MultiService

from ..line.adapter import LineFactory
from ..serving import LabContextFactory
from .core import Options, POP3Conversation

if TYPE_CHECKING:
    from ..journal import Session
    from ..lab import Lab


def make_service(lab: Lab) -> MultiService:
    settings = lab.settings("pop3")
    hostname = lab.config.fqdn(settings.host)
    credentials = lab.credentials
    root = MultiService()
    for listener in lab.listeners("pop3"):
        if not listener.active:
            continue
        options = Options(hostname=hostname, plaintext_auth=settings.plaintext_auth,
                          apop=lab.config.auth.keep_plaintext,
                          stls=listener.tls == "starttls",
                          idle_timeout=settings.idle_timeout, max_errors=settings.max_errors)

        def make(journal: Session, secure: bool, peer: str,
                 options: Options = options) -> POP3Conversation:
            return POP3Conversation(journal, options, lab.store, credentials, secure, peer,
                                    lab.faults.find)

        factory = LineFactory("pop3", lab.journal, LabContextFactory(lab.tls), make,
                              listener.name, listener.tls == "implicit")
        lab.tcp(listener, factory, busy=b"-ERR [SYS/TEMP] too many connections\r\n").setServiceParent(root)
    return root
