"""HTTP: the class web server, users' web space, mail autoconfig and the lab's JSON API.

twisted.web on port 80 and 443 (implicit TLS with the lab CA; HTTP/1.1 and HTTP/2 on both,
HTTP/3 on UDP 443): the portal at /, exercise
pages under /lab/http/, /~USER/ from the shared store (GET, and PUT/DELETE as that user),
Thunderbird autoconfig, the admin dashboard at /lab/dashboard and the API under /api/v1.
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

# What can break (services/faults.py, acting in faults.py):
# `protolab fault add http.NAME [--target PATH|ADDRESS|USER]`.
FAULTS = {
    "error-500": "the page answers 500 Internal Server Error (a plain-text page)",
    "slow": "the answer comes 5 s late (the rest of the class is answered meanwhile)",
    "redirect-loop": "302 to the same address, again and again: curl -L stops after its "
                     "--max-redirs, a browser shows ERR_TOO_MANY_REDIRECTS",
}

QUIC_RETRY = ("always", "pressure", "never")  # [http] quic_retry (http3.py)


@dataclass
class Settings(ServiceSettings):
    host: str = setting("www", "this service's host name in the lab zone")
    aliases: list[str] = setting(
        ["autoconfig", "images"],
        "more host names of the web server: autoconfig (Thunderbird's account wizard asks "
        "autoconfig.DOMAIN) and images (the second host of /lab/http/embedded.html)")
    image_host: str = setting(
        "images", "the host name /lab/http/embedded.html loads its second image from")
    https: bool = setting(True, "also serve the site over TLS (port 443) with the lab CA")
    http3: bool = setting(
        True, "also serve HTTP/3 over QUIC on UDP 443 (with https), advertised by Alt-Svc")
    quic_retry: str = setting(
        "pressure", "when a new QUIC client must first prove its address with a Retry: "
        "always, pressure (only while many handshakes are unfinished) or never")
    quic_buffer_limit: int = setting(
        64 * 1024 * 1024, "bytes sent over QUIC and not yet acknowledged, all connections "
        "together, beyond which responses pause and new QUIC connections are refused")
    long_page_size: int = setting(4608, "size in bytes of /lab/http/long.html (> one TCP segment)")
    upload_limit: int = setting(
        10 * 1024 * 1024, "largest request body (uploads, PUT), in bytes; larger -> 413")
    header_limit: int = setting(
        16384, "largest request line plus headers, in bytes; larger -> 431")
    max_headers: int = setting(100, "most header lines in one request; more -> 431")
    idle_timeout: int = setting(
        60, "seconds a connection may send nothing before it is closed, and the most a "
        "request head may take from its first byte (then 408)")

    def validate(self) -> None:
        super().validate()
        if self.image_host not in (self.host, *self.aliases):
            raise Invalid("image_host", f"{self.image_host!r} must be the host or one of the "
                          "aliases (only those are in the lab zone)")
        for key in ("long_page_size", "upload_limit", "header_limit", "max_headers",
                    "idle_timeout", "quic_buffer_limit"):
            if getattr(self, key) <= 0:
                raise Invalid(key, "must be positive")
        if self.quic_retry not in QUIC_RETRY:
            raise Invalid("quic_retry", f"{self.quic_retry!r} is not one of "
                          f"{', '.join(QUIC_RETRY)}")
        if self.header_limit < 1024:
            raise Invalid("header_limit", "must be at least 1024 bytes")


def listeners(config: LabConfig) -> list[Listener]:
    s = config.service("http")
    return [
        Listener("http", "http", 80),
        Listener("http", "https", 443, tls="implicit", active=s.https,
                 note="" if s.https else "[http] https = false"),
        Listener("http", "h3", 443, transport="udp", tls="implicit", active=s.https and s.http3,
                 note="" if s.https and s.http3 else "[http] https or http3 = false"),
    ]


def service(lab: Lab) -> IService:
    from .server import make_service

    return make_service(lab)


def probe(target: ProbeTarget) -> str:
    """GET the portal's cheapest page over plain HTTP."""
    import http.client

    connection = http.client.HTTPConnection(target.host, target.port("http", "http"),
                                            timeout=target.timeout)
    try:
        connection.request("GET", "/lab/http/basic.html")
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"GET /lab/http/basic.html: {response.status} {response.reason}")
    return f"HTTP/1.1 {response.status} {response.reason}, {len(body)} bytes"


def clients(reach: Reach) -> list[str]:
    return [curl(reach, "http", login=False)]
