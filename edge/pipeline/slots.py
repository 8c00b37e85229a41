"""The hand-off between two stages: one slot where the newest item wins.

A producer never waits: ``put`` replaces an item the consumer has not taken yet, and the
replaced one is counted as dropped (and handed to ``on_drop``). So a slow stage makes the
stages before it drop frames instead of queueing them, and latency cannot grow with load
(pipelines.md (c)1 and (d)1: the "latest frame" mailbox, like jetson-utils'
``ReadLatestOnce`` or Holoscan's ``kPop`` policy with capacity 1).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class LatestWinsSlot(Generic[T]):
    def __init__(self, name: str, on_drop: Optional[Callable[[T], None]] = None):
        self.name = name
        self.on_drop = on_drop
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self.puts = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        """Offer ``item``; an item still waiting is replaced and counted as dropped."""
        with self._cond:
            replaced = self._item
            self._item = item
            self.puts += 1
            if replaced is not None:
                self.dropped += 1
            self._cond.notify_all()
        if replaced is not None and self.on_drop is not None:
            self.on_drop(replaced)

    def put_when_empty(self, item: T, poll_s: float = 0.1) -> bool:
        """Lossless hand-off for non-live sources: wait until the slot is empty, then put.
        Returns False (item not put) once the slot is closed."""
        with self._cond:
            while self._item is not None and not self._closed:
                self._cond.wait(poll_s)
            if self._closed:
                return False
            self._item = item
            self.puts += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """Take the waiting item; ``None`` after ``timeout`` seconds or once closed and empty."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()  # a producer may wait for room
            return item

    def take_nowait(self) -> Optional[T]:
        with self._cond:
            item, self._item = self._item, None
            return item

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake every waiting consumer; ``get`` returns what is left, then ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
