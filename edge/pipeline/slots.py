"""The one "keep only the newest" holder: a slot where the newest item wins.

A producer never waits: ``put`` replaces an item the consumer has not taken yet, and the
replaced one is counted as dropped (and handed to ``on_drop``). So a slow consumer makes
the producer drop frames instead of queueing them, and latency cannot grow with load
(pipelines.md (c)1 and (d)1: the "latest frame" mailbox, like jetson-utils'
``ReadLatestOnce`` or Holoscan's ``kPop`` policy with capacity 1).

Every newest-frame hand-off of the runtime is this class: the pipeline's stage hand-offs
(:mod:`tir.edge.pipeline.pipeline`), the live-source grabber
(:class:`tir.edge.sources.grabber.Grabber`), the window/RTSP output worker
(:class:`tir.edge.outputs.window.NewestFrameWorker`) and the HTTP output's newest frame
(:class:`tir.edge.outputs.http.LatestFrame`, which only :meth:`~LatestWinsSlot.peek` s:
many clients read the same frame, nobody takes it).
"""
from __future__ import annotations

import threading
from typing import Callable, Generic, Optional, Tuple, TypeVar

T = TypeVar("T")


class LatestWinsSlot(Generic[T]):
    """Thread-safe one-item mailbox.

    ``puts`` counts every item put, ``dropped`` those replaced before anyone took them
    (``on_drop`` gets each, outside the lock). ``get`` hands each item out at most once;
    ``peek`` reads the newest item put (taken or not) without taking it. After ``close``
    nothing waits any more: ``get`` returns what is left, then ``None``, and
    ``put_when_empty`` refuses.
    """

    def __init__(self, name: str = "slot", on_drop: Optional[Callable[[T], None]] = None):
        self.name = name
        self.on_drop = on_drop
        self._cond = threading.Condition()
        self._item: Optional[T] = None  # put and not taken yet
        self._last: Optional[T] = None  # the newest item put, taken or not (peek)
        self._closed = False
        self.puts = 0
        self.dropped = 0

    def put(self, item: T) -> None:
        """Offer ``item``; an item still waiting is replaced and counted as dropped."""
        with self._cond:
            replaced = self._item
            self._item = self._last = item
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
            self._item = self._last = item
            self.puts += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: Optional[float] = None) -> Optional[T]:
        """Take the waiting item, waiting up to ``timeout`` seconds (None: for ever) for one;
        ``None`` when none came in time, or at once when the slot is closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()  # a producer may wait for room
            return item

    def take_nowait(self) -> Optional[T]:
        """Take the waiting item without waiting (None when there is none)."""
        with self._cond:
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()
            return item

    def peek(self) -> Tuple[Optional[T], int]:
        """(newest item put, taken or not, or None; ``puts`` at that moment): a generation
        number readers compare to see whether something new came."""
        with self._cond:
            return self._last, self.puts

    @property
    def pending(self) -> bool:
        """True while an item waits to be taken."""
        with self._cond:
            return self._item is not None

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Wake every waiting consumer; ``get`` returns what is left, then ``None``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
