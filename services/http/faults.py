"""HTTP's faults (services/faults.py; the kinds are FAULTS in __init__.py): a 500, a slow
answer, a redirect loop, for a path, a client address or a login.

Every request of HTTP/1.1, HTTP/2 and HTTP/3 that is not a fast-path answer enters the
site at Root.render (site.py), which asks here first. The fast path (fast.py, and its
HTTP/2 twin) never sees a fault: the site declines it while any HTTP fault is on, so a lab
without one pays a single test of a cached flag per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from .auth import credentials
from .responses import TEXT, send

if TYPE_CHECKING:
    from ..lab import Lab
    from ..store.faults import Fault

SLOW_SECONDS = 5.0  # long enough to notice, and to see the gap in Wireshark
KINDS = ("http.error-500", "http.slow", "http.redirect-loop")
ERROR_TEXT = b"500 Internal Server Error\n\nThe server could not answer this request.\n"


class HttpFaults:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def any_on(self) -> bool:
        """Whether some HTTP fault may act (for someone): the fast path then declines."""
        return self.lab.faults.any_on("http")

    def find(self, request: Any) -> Fault | None:
        """The HTTP fault that acts on this request, journaled, or None."""
        if not self.any_on():
            return None
        targets = [request.path.decode("latin-1"), request.getClientAddress().host]
        given = credentials(request)
        if given:  # the login as sent: NAME, NAME@DOMAIN or DOMAIN\NAME
            user = given[0]
            targets += [user, user.partition("@")[0], user.rpartition("\\")[2]]
        for kind in KINDS:
            fault = self.lab.faults.find(kind, *targets)
            if fault is not None:
                request.channel.session.event("fault", f"{fault.kind} #{fault.id}")
                return fault
        return None


def act(fault: Fault, request: Any, render: Callable[[Any], Any]) -> Any:
    """What `request` gets under `fault`; `render` is the site's own answer."""
    if fault.kind == "http.error-500":
        return send(request, ERROR_TEXT, TEXT, 500)
    if fault.kind == "http.redirect-loop":
        # To itself: curl -L stops at --max-redirs (47), a browser at ERR_TOO_MANY_REDIRECTS.
        return send(request, b"302 Found\n", TEXT, 302,
                    {b"Location": request.uri, b"Cache-Control": b"no-store"})
    later = IReactorTime(reactor).callLater(SLOW_SECONDS, _answer_late, request, render)
    # A client that gives up first takes the timer with it.
    request.notifyFinish().addErrback(lambda _: later.cancel() if later.active() else None)
    return NOT_DONE_YET


def _answer_late(request: Any, render: Callable[[Any], Any]) -> None:
    """The ordinary answer, as Request.process would have made it (Request.render adds
    the length and finishes), with its errors answered the same way too."""
    try:
        request.render(_Late(render))
    except Exception:  # a bug of the page, answered 500 as process() would
        request.processingFailed(Failure())


class _Late:
    """Request.render takes a resource; this one is the site's answer without faults."""

    def __init__(self, render: Callable[[Any], Any]) -> None:
        self.render = render
