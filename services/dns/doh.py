"""DNS over HTTPS (RFC 8484): `/dns-query`, GET with `?dns=BASE64URL` and POST with an
`application/dns-message` body, answered by the same Engine as port 53.

A twisted.web resource: the DNS service serves it on its own HTTPS listener (`[dns]
doh_port`), with the lab's certificate and key log, so the class sees DoH next to Do53 and
DoT in one capture and decrypts it.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from twisted.internet import reactor
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET

from .answers import Engine

MESSAGE_TYPE = b"application/dns-message"
MAX_MESSAGE = 65535


def decode_get(value: bytes) -> bytes | None:
    """The `dns` parameter: base64url without padding (RFC 8484 4.1); None if it is not."""
    try:
        return base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


class DNSQuery(resource.Resource):
    isLeaf = True

    def __init__(self, engine: Engine, log: Any) -> None:
        super().__init__()
        self.engine, self.log = engine, log

    def render_GET(self, request: Any) -> bytes | int:
        values = request.args.get(b"dns")
        message = decode_get(values[0]) if values else None
        return self._answer(request, message)

    def render_POST(self, request: Any) -> bytes | int:
        if request.getHeader("content-type") != MESSAGE_TYPE.decode():
            request.setResponseCode(415)
            return b"send application/dns-message\n"
        return self._answer(request, request.content.read(MAX_MESSAGE + 1))

    def _answer(self, request: Any, message: bytes | None) -> bytes | int:
        if not message or len(message) > MAX_MESSAGE:
            request.setResponseCode(400)
            return b"a DNS query is missing (GET ?dns=BASE64URL or POST application/dns-message)\n"
        peer = request.getClientAddress()
        outcome = self.engine.respond(message, True, getattr(peer, "host", ""))
        self.log("doh", (getattr(peer, "host", "-"), getattr(peer, "port", 0)), outcome)
        if not outcome.messages:  # not even a header, or a query for a forwarder
            request.setResponseCode(400 if not outcome.forward else 502)
            return b"no answer\n"
        reply = outcome.messages[0]
        request.setHeader(b"content-type", MESSAGE_TYPE)
        # RFC 8484 5.1: cache no longer than the answer's smallest TTL; ours are short
        request.setHeader(b"cache-control", b"max-age=0")
        if outcome.delay:  # the slow fault: answered later, never blocking the reactor
            gone: list[bool] = []
            request.notifyFinish().addErrback(lambda _: gone.append(True))
            reactor.callLater(outcome.delay, self._late, request, reply, gone)
            return NOT_DONE_YET
        return reply

    @staticmethod
    def _late(request: Any, reply: bytes, gone: list[bool]) -> None:
        if not gone:  # the client is still there
            request.write(reply)
            request.finish()


def site(engine: Engine, log: Any) -> Any:
    from twisted.web.server import Site

    root = resource.Resource()
    root.putChild(b"dns-query", DNSQuery(engine, log))
    return Site(root)
