"""The one least-recently-used cache of the IMAP package.

Two things are kept this way, both shared by every session of the process: parsed messages
(for the next FETCH of any session) and the decoded headers of messages searched lately (what
Dovecot's index cache does for repeated header searches). FETCH and SEARCH run in worker
threads, hence the lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class LRU(Generic[V]):
    """At most `items` entries and, when `weigh` is given, at most `weight` in total of
    what it says (but always the newest entry, however heavy: a FETCH of one big message
    must still find it parsed for its next item)."""

    def __init__(self, items: int, weight: int = 0,
                 weigh: Callable[[V], int] | None = None) -> None:
        self.items = items
        self.weight = weight
        self._weigh = weigh
        self._entries: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def discard(self, key: Hashable) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._total -= old[1]

    def put(self, key: Hashable, value: V) -> None:
        size = self._weigh(value) if self._weigh is not None else 0
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._total -= old[1]
            self._entries[key] = (value, size)
            self._total += size
            while len(self._entries) > self.items or (
                    self._weigh is not None and len(self._entries) > 1
                    and self._total > self.weight):
                _, (_, dropped) = self._entries.popitem(last=False)
                self._total -= dropped
