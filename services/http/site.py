"""The site: one leaf resource that routes on the raw path, and the Site that journals.

Routing on request.path ourselves (rather than twisted.web's child-by-child traversal)
keeps the hot path short and lets each part see the path exactly as it was sent, so it is
percent-decoded exactly once, by the part that serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.web import resource, server

from .channel import LabChannel, LabRequest
from .faults import HttpFaults, act
from .responses import Body, error_page

if TYPE_CHECKING:
    from ..lab import Lab

Handler = Callable[[Any], Any]  # request -> bytes or NOT_DONE_YET
SinkFactory = Callable[[bytes, bytes, Any], Any]  # (method, path, request) -> sink or None


class Router:
    def __init__(self) -> None:
        self.exact: dict[bytes, Handler] = {}
        self.prefixes: list[tuple[bytes, Handler]] = []
        self.sinks: list[tuple[bytes, SinkFactory]] = []
        # For the channel's fast path (fast.py): pages in memory by exact path, and trees
        # that can find a cached page for a path (or None: take the ordinary way).
        self.bodies: dict[bytes, Body] = {}
        self.fast_trees: list[tuple[bytes, Callable[[bytes], Body | None]]] = []

    def page(self, path: str, handler: Handler) -> None:
        self.exact[path.encode()] = handler

    def body(self, path: str, body: Body) -> None:
        """A fixed page in memory (GET, HEAD, conditional GET)."""
        self.page(path, body.serve)
        self.bodies[path.encode()] = body

    def fast_tree(self, prefix: str, finder: Callable[[bytes], Body | None]) -> None:
        self.fast_trees.append((prefix.encode(), finder))

    def fast_body(self, path: bytes) -> Body | None:
        body = self.bodies.get(path)
        if body is not None:
            return body
        for prefix, finder in self.fast_trees:
            if path.startswith(prefix):
                return finder(path)
        return None

    def tree(self, prefix: str, handler: Handler) -> None:
        """Every path starting with `prefix` (longest prefix wins)."""
        self.prefixes.append((prefix.encode(), handler))
        self.prefixes.sort(key=lambda item: -len(item[0]))

    def body_sink(self, prefix: str, factory: SinkFactory) -> None:
        """Requests under `prefix` stream their bodies into what `factory` returns."""
        self.sinks.append((prefix.encode(), factory))

    def find(self, path: bytes) -> Handler | None:
        handler = self.exact.get(path)
        if handler is not None:
            return handler
        for prefix, handler in self.prefixes:
            if path.startswith(prefix):
                return handler
        return None


class Root(resource.Resource):
    """Where every request that the fast path does not answer enters the site, over
    HTTP/1.1, HTTP/2 and HTTP/3 alike: so HTTP's faults act here."""

    isLeaf = True

    def __init__(self, router: Router, faults: HttpFaults) -> None:
        super().__init__()
        self.router = router
        self.faults = faults

    def render(self, request: Any) -> Any:
        fault = self.faults.find(request)
        if fault is not None:
            return act(fault, request, self.route)
        return self.route(request)

    def route(self, request: Any) -> Any:
        handler = self.router.find(request.path)
        if handler is None:
            return error_page(request, 404, "There is no page here. The portal is at /.")
        return handler(request)


class LabSite(server.Site):
    # The channel itself, without Twisted's HTTP/2 switch in front (a proxy object that
    # costs a call per event; no ALPN is offered, so it would only ever pass through).
    protocol: Callable[[], Any] = LabChannel
    requestFactory = LabRequest

    def __init__(self, lab: Lab, router: Router) -> None:
        self.faults = HttpFaults(lab)
        super().__init__(Root(router, self.faults), timeout=lab.settings("http").idle_timeout)
        self._parsePOSTFormSubmission = False  # bodies are streamed to sinks, never parsed whole
        self.lab = lab
        self.settings = lab.settings("http")
        self.router = router
        self.displayTracebacks = False
        self.alt_svc = b""  # the Alt-Svc every answer carries (HTTP/3's port), if any

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.settings = self.settings
        channel.maxHeaders = self.settings.max_headers
        channel.totalHeadersSize = self.settings.header_limit
        channel.MAX_LENGTH = self.settings.header_limit
        return channel

    def fast_body(self, path: bytes) -> Body | None:
        if self.faults.any_on():  # the ordinary way, where faults act (Root.render)
            return None
        return self.router.fast_body(path)

    def sink_for(self, method: bytes, path: bytes, request: Any) -> Any:
        for prefix, factory in self.router.sinks:
            if path.startswith(prefix):
                return factory(method, path, request)
        return None

    def log(self, request: Any) -> None:
        """Journal each finished request (its request line was journaled at its start):
        status, bytes sent and the authenticated user."""
        user = f" user={request.lab_user}" if request.lab_user else ""
        request.channel.session.reply(f"{request.code} {request.sentLength} bytes{user}")
