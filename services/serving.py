"""The Twisted side of the lab: services that listen, and the root service of a lab.

Kept apart from lab.py so that commands which serve nothing (`protolab user`, `init`)
never import Twisted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IOpenSSLContextFactory
from zope.interface import implementer

from .listeners import Listener

if TYPE_CHECKING:
    from OpenSSL import SSL

    from .lab import Lab
    from .tls import LabTLS

POLL_SECONDS = 0.2  # how often a process looks for other processes' changes (< 1 s promised)
FLUSH_SECONDS = 0.5  # journal buffer to disk and store
PRUNE_SECONDS = 300


class StartError(Exception):
    """A service that could not start, in one line naming the service and address."""


@implementer(IOpenSSLContextFactory)
class LabContextFactory:
    """Every TLS listener and STARTTLS shares the lab's one context (and so its key log).
    Declaring the interface keeps Twisted from warning about a legacy factory."""

    def __init__(self, tls: LabTLS) -> None:
        self._tls = tls

    def getContext(self) -> SSL.Context:  # noqa: N802 - Twisted's name
        return self._tls.context()


class ListenerService(Service):
    """Listens when started; a port it cannot have becomes a StartError naming it."""

    def __init__(self, lab: Lab, listener: Listener, start: Callable[[], IListeningPort]) -> None:
        self.lab, self.listener, self._start = lab, listener, start
        self.port: IListeningPort | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        try:
            self.port = self._start()
        except CannotListenError as error:
            reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
            raise StartError(
                f"{self.listener.service}: cannot listen on {self.listener.transport} "
                f"{self.lab.bind}:{self.listener.port} ({self.listener.name}): {reason}"
            ) from None
        super().startService()

    def stopService(self) -> Deferred | None:  # noqa: N802
        super().stopService()
        if self.port is not None:
            return maybeDeferred(self.port.stopListening)
        return None


class LabService(MultiService):
    """Starts protocols in order, stopping those already started if one fails; polls the
    store for other processes' changes and flushes the journal."""

    def __init__(self, lab: Lab) -> None:
        super().__init__()
        self.lab = lab
        self._loops = [(task.LoopingCall(lab.store.poll), POLL_SECONDS),
                       (task.LoopingCall(lab.journal.flush), FLUSH_SECONDS),
                       (task.LoopingCall(lab.store.prune), PRUNE_SECONDS)]

    def startService(self) -> None:  # noqa: N802
        started: list[Any] = []
        for service in self:
            try:
                service.startService()
            except StartError:
                self._stop_all(started)
                raise
            except Exception as error:  # a protocol's own failure, named
                self._stop_all(started)
                raise StartError(f"{service.name}: cannot start: {error}") from error
            started.append(service)
        self.running = 1
        for loop, seconds in self._loops:
            loop.start(seconds, now=False)

    @staticmethod
    def _stop_all(services: list[Any]) -> None:
        for service in reversed(services):
            service.stopService()

    def stopService(self) -> Deferred:  # noqa: N802
        for loop, _ in self._loops:
            if loop.running:
                loop.stop()
        stopped = super().stopService() or DeferredList([])

        def flush(result: Any) -> Any:
            self.lab.journal.flush()
            return result

        return stopped.addBoth(flush)
