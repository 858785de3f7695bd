"""Zone rebuilds off the reactor: building, signing (DNSSEC) and packing a zone of 1,000
hosts takes seconds of CPU (signing most: 3 s the first time here, 0.4 s after one
change, more on a loaded machine), and the reactor must go on answering meanwhile.

A ZoneWorker runs one rebuild at a time in a worker thread; the server keeps answering
from the zone it has until the new one is installed, on the reactor. Rebuilds asked for
while one runs collapse into one more, made from the latest inputs: a burst of DHCP
leases costs two rebuilds, not one per lease. The work must be pure (it builds new
objects from its inputs and touches nothing the reactor reads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from twisted.internet.threads import deferToThread
from twisted.logger import Logger

Made = TypeVar("Made")
logger = Logger()


class ZoneWorker(Generic[Made]):
    def __init__(self, install: Callable[[Made], None],
                 in_thread: Callable[..., Any] = deferToThread) -> None:
        self.install = install
        self.in_thread = in_thread  # (the tests' stands in for the thread pool)
        self.waiting: Callable[[], Made] | None = None
        self.busy = False

    def submit(self, work: Callable[[], Made]) -> None:
        """`work` runs in the worker thread once the running rebuild (if any) is done,
        unless a later submit replaces it first; its result is installed on the reactor."""
        self.waiting = work
        if not self.busy:
            self._next()

    def _next(self) -> None:
        work, self.waiting = self.waiting, None
        if work is None:
            return
        self.busy = True
        done = self.in_thread(work)
        done.addCallback(self.install)
        done.addErrback(lambda failure: logger.failure("DNS: cannot rebuild the zone",
                                                       failure))  # the old zone serves on
        done.addBoth(self._finished)

    def _finished(self, _: Any) -> None:
        self.busy = False
        self._next()
