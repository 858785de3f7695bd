"""Thunderbird's mail autoconfig (config-v1.1.xml) for this lab's IMAP, POP3 and SMTP.

Thunderbird's account wizard asks http://autoconfig.DOMAIN/mail/config-v1.1.xml and
/.well-known/autoconfig/mail/config-v1.1.xml on the domain; both are served here on every
host name. The servers come from the registry's listeners, so only the mail services this
tree has (and the config enables) are offered, TLS variants first.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from .labinfo import ServiceInfo, services
from .responses import Body

if TYPE_CHECKING:
    from ..lab import Lab
    from .site import Router

PATHS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
SOCKET = {"implicit": "SSL", "starttls": "STARTTLS", "": "plain"}
PREFERENCE = {"implicit": 0, "starttls": 1, "": 2}
KINDS = (("imap", "incomingServer", "imap"), ("pop3", "incomingServer", "pop3"),
         ("smtp", "outgoingServer", "smtp"))
RELAY_PORT = 25  # SMTP between servers: mail clients submit on 587 or 465 instead


def server_entries(info: ServiceInfo) -> list[tuple[str, int, str]]:
    """(host, port, socketType) for each usable listener, TLS first."""
    listeners = [l for l in info.listeners if l.active and l.transport == "tcp"]
    if info.name == "smtp":
        submission = [l for l in listeners if info.base_ports.get(l.name) != RELAY_PORT]
        listeners = submission or listeners
    listeners.sort(key=lambda l: PREFERENCE.get(l.tls, 3))
    return [(info.host, l.port, SOCKET.get(l.tls, "plain")) for l in listeners]


def document(domain: str, infos: list[ServiceInfo]) -> bytes:
    by_name = {info.name: info for info in infos if info.enabled}
    servers = []
    for name, element, kind in KINDS:
        info = by_name.get(name)
        if info is None:
            continue
        for host, port, socket_type in server_entries(info):
            servers.append(
                f'    <{element} type="{kind}">\n'
                f"      <hostname>{escape(host or domain)}</hostname>\n"
                f"      <port>{port}</port>\n"
                f"      <socketType>{socket_type}</socketType>\n"
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


def register(router: Router, lab: Lab) -> None:
    started = time.time()

    def serve(request: Any) -> Any:
        body = document(lab.config.lab.domain, services(lab))
        return Body(body, b"application/xml; charset=utf-8", started).serve(request)

    for path in PATHS:
        router.page(path, serve)
