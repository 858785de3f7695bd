"""SMTP's Twisted service: the MX, submission and SMTPS listeners over one MailDrop."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.application.service import MultiService

from ..line.adapter import LineFactory
from ..serving import LabContextFactory
from .commit import GroupCommit
from .core import Greylist, Options, SMTPConversation
from .delivery import MailDrop

if TYPE_CHECKING:
    from ..journal import Session
    from ..lab import Lab


def local_domains(lab: Lab) -> set[str]:
    """The domains whose mail the lab keeps: its own, its mail hosts' names, [smtp] domains."""
    settings = lab.settings("smtp")
    config = lab.config
    names = {config.lab.domain, *settings.domains}
    names.update(config.fqdn(host) for host in [settings.host, *settings.aliases] if host)
    return {name.lower() for name in names}


def make_service(lab: Lab) -> MultiService:
    settings = lab.settings("smtp")
    hostname = lab.config.fqdn(settings.host)
    domains = local_domains(lab)
    drop = MailDrop(lab.store, hostname, domains, settings.address_aliases, settings.catch_all,
                    write=GroupCommit(lab.store), lab_domain=lab.config.lab.domain)
    credentials = lab.credentials
    faults, greylist = lab.faults.find, Greylist()
    root = MultiService()
    for listener in lab.listeners("smtp"):
        if not listener.active:
            continue
        options = Options(
            hostname=hostname, size_limit=settings.size_limit,
            plaintext_auth=settings.plaintext_auth,
            auth_required=listener.name != "smtp",
            cram=lab.config.auth.keep_plaintext,
            starttls=listener.tls == "starttls",
            idle_timeout=settings.idle_timeout, max_errors=settings.max_errors)

        def make(journal: Session, secure: bool, peer: str,
                 options: Options = options) -> SMTPConversation:
            return SMTPConversation(journal, options, drop, credentials, secure, peer,
                                    faults, greylist)

        factory = LineFactory("smtp", lab.journal, LabContextFactory(lab.tls), make,
                              listener.name, listener.tls == "implicit")
        busy = b"421 4.7.0 Too many connections, try later\r\n"
        lab.tcp(listener, factory, busy=busy).setServiceParent(root)
    return root
