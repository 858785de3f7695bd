"""Group commit: the deliveries of concurrent SMTP sessions share one store transaction.

A durable commit costs an fsync (several ms on common disks), and the reactor must not
wait for it. So one batch at a time is written in a thread; deliveries that arrive
meanwhile queue up and go together in the next batch.

Sessions answered by one commit come back with their next message at slightly different
moments; written as they come, they trickle into batches of one or two (seen: 10 senders
made mostly 1-message batches, 630 messages/s). So a batch waits until as many
deliveries are queued as the previous batch had, or WINDOW seconds at most: busy senders
then share one fsync per round (mostly 10-message batches, about 1000/s), and a lone
sender is written at once. Every session still gets its 250 only once its message is on
disk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

if TYPE_CHECKING:
    from ..store import Store

WINDOW = 0.005  # at most this long a batch waits for company before it is written

Items = list[tuple[str, str, bytes]]
Done = Callable[[Any], None]


class GroupCommit:
    log = Logger()

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: list[tuple[Items, Done]] = []
        self.writing = False
        self.expected = 1  # deliveries the previous batch had: what a batch waits for
        self.timer: Any = None

    def __call__(self, items: Items, done: Done) -> None:
        self.queue.append((items, done))
        self._next()

    def _next(self) -> None:
        if self.writing or not self.queue:
            return
        if len(self.queue) >= self.expected:
            self._write()
        elif self.timer is None:
            self.timer = reactor.callLater(WINDOW, self._write)

    def _write(self) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None
        batch, self.queue = self.queue, []
        self.writing = True
        self.expected = len(batch)
        flat = [item for items, _ in batch for item in items]
        deferToThread(self.store.mail.append_many, flat).addBoth(self._written, batch)

    def _written(self, results: Any, batch: list[tuple[Items, Done]]) -> None:
        self.writing = False
        failed = not isinstance(results, list)
        error = results.value if failed else None  # the store's own (DiskFull tells a full disk)
        start = 0
        for items, done in batch:
            try:
                done(error if failed else results[start:start + len(items)])
            except Exception:  # one session's failure must not leave the others unanswered
                self.log.failure("delivery callback failed")
            start += len(items)
        self._next()
