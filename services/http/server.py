"""The HTTP service: one site on port 80 and, with implicit TLS, on 443."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService

from . import api, autoconfig, classview, dashboard, exercises, http2, portal, userweb
from .responses import Body, error_page
from .site import LabSite, Router

if TYPE_CHECKING:
    from ..lab import Lab


def build_router(lab: Lab) -> Router:
    router = Router()
    router.page("/", lambda request: portal.render(lab, request))
    router.page("/index.html", lambda request: portal.render(lab, request))

    def ca(request: Any) -> bytes:
        path = lab.tls.ca_cert
        body = Body(path.read_bytes(), b"application/x-x509-ca-cert", path.stat().st_mtime,
                    headers={b"Content-Disposition": b'attachment; filename="protolab-ca.crt"'})
        return body.serve(request)

    router.page(portal.CA, ca)

    def anchor(request: Any) -> bytes:
        """The DNSSEC trust anchor the DNS service writes when it signs (delv -a FILE)."""
        path = lab.data / "dns" / "trust-anchor.conf"
        try:
            data, mtime = path.read_bytes(), path.stat().st_mtime
        except OSError:
            return error_page(request, 404, "The lab DNS does not sign its zones "
                              "([dns] dnssec = \"on\" makes it), or has not started yet.")
        body = Body(data, b"text/plain; charset=utf-8", mtime, headers={
            b"Content-Disposition": b'attachment; filename="protolab-trust-anchor.conf"'})
        return body.serve(request)

    router.page(portal.TRUST_ANCHOR, anchor)
    exercises.register(router, lab)
    userweb.register(router, lab)
    autoconfig.register(router, lab)
    api.register(router, lab)
    dashboard.register(router, lab)
    classview.register(router, lab)
    from ..dns.doh import lab_relay, serve  # DoH on the HTTPS port too (issue 21)

    relay = lab_relay(lab)
    if relay is not None:
        router.page("/dns-query", lambda request: serve(request, relay))
    return router


_BUSY_TEXT = b"503 Service Unavailable: too many connections to the lab; try again soon\n"
# What a connection over the lab's connection limits is sent before it is closed.
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Retry-After: 5\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (len(_BUSY_TEXT), _BUSY_TEXT))


def make_service(lab: Lab) -> MultiService:
    lab.tls.ensure()  # the portal offers ca.crt even when only port 80 is open
    if lab.settings("http").https:
        http2.offer_h2(lab.tls.context())
    site = LabSite(lab, build_router(lab))
    parent = MultiService()
    for listener in lab.listeners("http"):
        if not listener.active:
            continue
        if listener.transport == "udp":
            from .http3 import Http3Port  # aioquic only when HTTP/3 is on

            lab.udp(listener, lambda: Http3Port(lab, site)).setServiceParent(parent)
            site.alt_svc = b'h3=":%d"; ma=3600' % listener.port
        else:
            lab.tcp(listener, site, busy=BUSY).setServiceParent(parent)
    return parent
