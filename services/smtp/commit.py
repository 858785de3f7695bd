"""Group commit: the deliveries of concurrent SMTP sessions share one store transaction.

A durable commit costs an fsync (several ms on common disks), and the reactor must not
wait for it. So one batch at a time is written in a thread; deliveries that arrive
meanwhile queue up and go together in the next batch. A batch also waits WINDOW seconds
for company before it is written: sessions answered by the same commit come back at
slightly different moments, and without the wait they trickle into batches of one or two
(seen: 10 senders made mostly 1-message batches and 630 messages/s; with 2 ms, mostly
10-message batches and 1090/s). Every session still gets its 250 only once its message
is on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

if TYPE_CHECKING:
    from ..store import Store

WINDOW = 0.002  # seconds a batch waits for more deliveries before it is written

Items = list[tuple[str, str, bytes]]
Done = Callable[[Any], None]


class GroupCommit:
    log = Logger()

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: list[tuple[Items, Done]] = []
        self.busy = False  # a batch is being written, or waiting its window

    def __call__(self, items: Items, done: Done) -> None:
        self.queue.append((items, done))
        self._next()

    def _next(self) -> None:
        if not self.busy and self.queue:
            self.busy = True
            reactor.callLater(WINDOW, self._write)

    def _write(self) -> None:
        batch, self.queue = self.queue, []
        flat = [item for items, _ in batch for item in items]
        deferToThread(self.store.mail.append_many, flat).addBoth(self._written, batch)

    def _written(self, results: Any, batch: list[tuple[Items, Done]]) -> None:
        self.busy = False
        failed = not isinstance(results, list)
        error = RuntimeError(results.getErrorMessage()) if failed else None
        start = 0
        for items, done in batch:
            try:
                done(error if failed else results[start:start + len(items)])
            except Exception:  # one session's failure must not leave the others unanswered
                self.log.failure("delivery callback failed")
            start += len(items)
        self._next()
