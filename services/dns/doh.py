"""DNS over HTTPS (RFC 8484): `/dns-query`, GET with `?dns=BASE64URL` and POST with an
`application/dns-message` body.

One implementation, `serve(request, answer)`, in two places:
- the DNS service's own HTTPS listener (`[dns] doh_port`, 8443), answered by the same
  Engine as port 53 (`engine_answer`);
- the web server's HTTPS port (443, HTTP/1.1, HTTP/2 and HTTP/3 alike), where issue 21 and
  browsers' secure-DNS settings look for it. The web server may run in another process or
  container than the DNS (compose, Kubernetes), so there it asks the lab's name server over
  DNS/TCP (`relay`): the answer is the name server's, byte for byte.
Both with the lab's certificate and key log, so the class sees DoH next to Do53 and DoT
in one capture and decrypts it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import deferLater
from twisted.protocols.basic import Int16StringReceiver
from twisted.python.failure import Failure
from twisted.web import resource
from twisted.web.server import NOT_DONE_YET

from .answers import Engine

if TYPE_CHECKING:
    from ..lab import Lab

MESSAGE_TYPE = b"application/dns-message"
MAX_MESSAGE = 65535
RELAY_TIMEOUT = 5.0  # seconds the lab's name server has to answer a relayed query
clock: Any = reactor  # (mypy cannot type the reactor's zope interface methods)

# (query, the client's address) -> the reply message, or a Deferred of it; raises NoAnswer
Answer = Callable[[bytes, Any], "bytes | Deferred[bytes]"]


class NoAnswer(Exception):
    """No DNS reply to give: the HTTP status that says why."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status, self.why = status, why


def decode_get(value: bytes) -> bytes | None:
    """The `dns` parameter: base64url without padding (RFC 8484 4.1); None if it is not."""
    try:
        return base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def serve(request: Any, answer: Answer) -> bytes | int:
    """RFC 8484 on any twisted.web request: bytes (an error at once) or NOT_DONE_YET."""
    if request.method == b"GET":
        values = request.args.get(b"dns")
        message = decode_get(values[0]) if values else None
    elif request.method == b"POST":
        if request.getHeader("content-type") != MESSAGE_TYPE.decode():
            request.setResponseCode(415)
            return b"send application/dns-message\n"
        message = request.content.read(MAX_MESSAGE + 1)
    else:
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, POST")
        return b"DNS over HTTPS is GET ?dns=BASE64URL or POST application/dns-message\n"
    if not message or len(message) > MAX_MESSAGE:
        request.setResponseCode(400)
        return b"a DNS query is missing (GET ?dns=BASE64URL or POST application/dns-message)\n"
    gone: list[bool] = []
    request.notifyFinish().addErrback(lambda _: gone.append(True))

    def reply(message: bytes) -> None:
        request.setHeader(b"content-type", MESSAGE_TYPE)
        # RFC 8484 5.1: cache no longer than the answer's smallest TTL; ours are short
        request.setHeader(b"cache-control", b"max-age=0")
        request.setHeader(b"content-length", b"%d" % len(message))
        request.write(message)

    def refuse(failure: Failure) -> None:
        error = failure.value
        status, why = (error.status, error.why) if isinstance(error, NoAnswer) else \
            (500, "internal error")
        request.setResponseCode(status)
        request.write(f"{why}\n".encode())

    def finish(_: Any) -> None:
        if not gone:
            request.finish()

    def deliver(outcome: Any) -> Any:
        if gone:  # the client left while the name server thought
            return None
        return refuse(outcome) if isinstance(outcome, Failure) else reply(outcome)

    maybeDeferred(answer, message, request.getClientAddress()).addBoth(deliver) \
        .addBoth(finish)
    return NOT_DONE_YET


def engine_answer(engine: Engine, log: Any) -> Answer:
    """Answers from the DNS service's own Engine (the doh_port listener)."""

    def answer(message: bytes, peer: Any) -> bytes | Deferred[bytes]:
        host = getattr(peer, "host", "")
        outcome = engine.respond(message, True, host)
        log("doh", (host or "-", getattr(peer, "port", 0)), outcome)
        if outcome.messages and outcome.delay:  # the slow fault: later, the reactor serves on
            return deferLater(clock, outcome.delay, bytes, outcome.messages[0])
        if outcome.messages:
            return bytes(outcome.messages[0])
        if outcome.forward:  # a query for the forwarders: only port 53's server asks them
            raise NoAnswer(502, "no answer (a forwarded name: ask port 53)")
        raise NoAnswer(400, "no answer (not a DNS query)")

    return answer


class _Exchange(Int16StringReceiver):
    """One query over DNS/TCP (RFC 1035 4.2.2), its first reply message, then close."""

    transport: ITCPTransport

    def __init__(self, query: bytes, done: Deferred[bytes]) -> None:
        self.query, self.done = query, done

    def connectionMade(self) -> None:
        self.sendString(self.query)

    def stringReceived(self, reply: bytes) -> None:
        if not self.done.called:
            self.done.callback(reply)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(NoAnswer(502, "the lab's name server closed without an answer"))


def relay(host: str, port: int) -> Answer:
    """Answers from the lab's name server at host:port, asked over DNS/TCP."""

    def answer(message: bytes, peer: Any) -> Deferred[bytes]:
        done: Deferred[bytes] = Deferred()
        exchange = _Exchange(message, done)

        def unreachable(failure: Failure) -> None:
            if not done.called:
                done.errback(NoAnswer(502, f"the lab's name server ({host} port {port}) "
                                           f"does not answer: {failure.getErrorMessage()}"))

        def late() -> None:
            if exchange.connected:
                exchange.transport.abortConnection()
            unreachable(Failure(TimeoutError(f"no answer in {RELAY_TIMEOUT:g} s")))

        timer = clock.callLater(RELAY_TIMEOUT, late)
        done.addBoth(lambda result: (timer.cancel() if timer.active() else None, result)[1])
        endpoint = HostnameEndpoint(reactor, host, port, timeout=RELAY_TIMEOUT)
        connectProtocol(endpoint, exchange).addErrback(unreachable)
        return done

    return answer


def lab_relay(lab: Lab) -> Answer | None:
    """The relay to this lab's name server (for the web server's /dns-query), or None
    when the lab has none. It listens where the lab zone says (its own container in
    compose, the Pod's address in Kubernetes), or on the lab's bind address when the lab
    binds one (then every service of the process listens there)."""
    hosts = lab.config.hosts_with_role("nameserver")
    if not hosts or not lab.config.service("dns").enabled:
        return None
    address = lab.config.host_names()[hosts[0]]
    if lab.bind not in ("", "0.0.0.0", "::"):
        address = lab.bind
    return relay(address, lab.listener("dns", "dns-tcp").port)


class DNSQuery(resource.Resource):
    isLeaf = True

    def __init__(self, answer: Answer) -> None:
        super().__init__()
        self.answer = answer

    def render(self, request: Any) -> bytes | int:
        return serve(request, self.answer)


def site(engine: Engine, log: Any) -> Any:
    from twisted.web.server import Site

    root = resource.Resource()
    root.putChild(b"dns-query", DNSQuery(engine_answer(engine, log)))
    return Site(root)
