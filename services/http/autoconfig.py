"""Thunderbird's mail autoconfig (config-v1.1.xml) for this lab's IMAP, POP3 and SMTP.

Thunderbird's account wizard asks http://autoconfig.DOMAIN/mail/config-v1.1.xml and
/.well-known/autoconfig/mail/config-v1.1.xml on the domain; both are served here on every
host name. The servers are the registry's listeners by role (mail-access, mail-submission),
so only the mail services this tree has (and the config enables) are offered, TLS first.
The domain is the one asked about: a team's (TEAM.DOMAIN, from the class roster) or another
mail domain of the lab's when the wizard's `emailaddress` or the host asked
(autoconfig.TEAM.DOMAIN) names it, else the lab's; the servers stay the lab's hosts, which
serve every domain (and which the certificate names).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from ..listeners import Listener
from .labinfo import ServiceInfo, services
from .responses import Body

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
SOCKET = {"implicit": "SSL", "starttls": "STARTTLS", "": "plain"}
TLS_FIRST = {"implicit": 0, "starttls": 1, "": 2}


def server_entries(info: ServiceInfo) -> list[tuple[str, Listener]]:
    """(element, listener) for each usable listener: its mail-access listeners are
    incoming servers, its mail-submission ones outgoing (a relay only when it has none:
    mail clients submit on 587 or 465, servers relay on 25)."""
    listeners = [item for item in info.listeners if item.active and item.transport == "tcp"]
    incoming = [("incomingServer", item) for item in listeners if item.role == "mail-access"]
    outgoing = [item for item in listeners if item.role == "mail-submission"] or \
        [item for item in listeners if item.role == "mail-relay"]
    return incoming + [("outgoingServer", item) for item in outgoing]


def document(domain: str, infos: list[ServiceInfo]) -> bytes:
    hosts = {info.name: info.host for info in infos if info.enabled}
    entries = [entry for info in infos if info.enabled for entry in server_entries(info)]
    # Incoming first, the preferred protocol first (IMAP before POP3), TLS first.
    entries.sort(key=lambda e: (e[0] != "incomingServer", e[1].preference,
                                TLS_FIRST.get(e[1].tls, 3)))
    servers = []
    for element, listener in entries:
        # the type is the protocol's name in autoconfig's terms: imap, pop3, smtp
        servers.append(
            f'    <{element} type="{escape(listener.service)}">\n'
            f"      <hostname>{escape(hosts[listener.service] or domain)}</hostname>\n"
            f"      <port>{listener.port}</port>\n"
            f"      <socketType>{SOCKET.get(listener.tls, 'plain')}</socketType>\n"
            f"      <authentication>password-cleartext</authentication>\n"
            f"      <username>%EMAILLOCALPART%</username>\n"
            f"    </{element}>\n")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<clientConfig version="1.1">\n'
        f'  <emailProvider id="{escape(domain)}">\n'
        f"    <domain>{escape(domain)}</domain>\n"
        f"    <displayName>protolab {escape(domain)}</displayName>\n"
        "    <displayShortName>protolab</displayShortName>\n"
        + "".join(servers)
        + "  </emailProvider>\n</clientConfig>\n").encode()


def asked_domain(lab_domain: str, teams: set[str], mail_domains: set[str], host: str,
                 address: str) -> str:
    """The mail domain a wizard asks about: that of its `emailaddress` (Thunderbird sends
    it) when mail to it is the lab's (`mail_domains`, `teams`), else a team's domain the
    host names (autoconfig.TEAM.DOMAIN); else the lab's own (the host names of the lab,
    www.lab.test, are no domain to configure)."""
    domain = address.rpartition("@")[2].lower().rstrip(".")
    if domain in teams or domain in mail_domains:
        return domain
    name = (host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host).lower()
    name = name.rstrip(".").removeprefix("autoconfig.")
    return name if name in teams else lab_domain


def register(router: Router, lab: Lab) -> None:
    started = time.time()

    def serve(request: Any) -> Any:
        config = lab.config
        teams = set(lab.store.roster.domains(config.lab.domain))
        host = (request.getHeader(b"host") or b"").decode("ascii", "replace")
        address = (request.args.get(b"emailaddress") or [b""])[0].decode("utf-8", "replace")
        domain = asked_domain(config.lab.domain, teams, config.mail_domains(), host, address)
        body = document(domain, services(lab))
        return Body(body, b"application/xml; charset=utf-8", started).serve(request)

    for path in PATHS:
        router.page(path, serve)
