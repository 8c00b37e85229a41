"""Always the newest frame from a live device, and reconnection when it goes away.

A live camera must be read continuously: OpenCV's V4L2 backend queues ~4 buffers, so a
consumer slower than the camera gets ever older frames (pipelines.md pain point 1,
recommendation 1: a capture thread with a one-slot "latest frame" mailbox, drop-oldest,
count the drops). :class:`Grabber` is that thread around any :class:`Source`:

- it reads as fast as the source delivers and puts each frame in a
  :class:`~tir.edge.pipeline.slots.LatestWinsSlot`,
  which replaces an unread frame (counted as dropped) instead of queueing it;
- when the source fails (``read`` raises, or no frame arrives for ``stall_timeout``) it
  closes it and calls ``source_factory()`` again after 0.5 s, 1 s, 2 s, ... capped at 5 s,
  until the device is back; the run goes on and ``read`` returns None meanwhile; each frame's
  ``meta["connection"]`` counts the reopenings before it (a reopened device may be another
  camera: edge/pipeline/stages.py ``Preprocess`` marks the first frame after one ``camera_change``);
- a finite source's :class:`EndOfStream` ends the grabber; ``read`` then re-raises it.

How live sources get one: ``V4L2Source.start()`` runs a Grabber over fresh
``V4L2Camera`` objects, so anything that uses the :class:`Source` interface (``start()``
or ``with source:``) gets newest-frame reads and reconnection; an unstarted V4L2Source
reads the device directly (probing, ``tir doctor``). ``Grabber.for_uri(uri)`` wraps any
other live source the same way. ``synthetic://`` needs no thread: it simulates a live
camera by rendering the frame the wall clock says is due and counting the ones skipped.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, Iterator, Optional

from ..frame import Frame, now
from ..pipeline.slots import LatestWinsSlot
from ..uri import URI
from .base import Source, SourceError, open_source
from .file import EndOfStream

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 5.0


def backoff_delays(initial: float = BACKOFF_INITIAL_S, cap: float = BACKOFF_MAX_S) -> Iterator[float]:
    """0.5, 1, 2, 4, 5, 5, ... seconds (doubling, capped)."""
    delay = initial
    while True:
        yield min(delay, cap)
        delay = min(delay * 2.0, cap)


class Grabber(Source):
    """A reader thread over ``source_factory()`` sources (see the module docstring).

    The first source is opened here (or passed as ``first_source``), so a device that is
    missing at start-up fails loudly with its :class:`SourceError`; later losses are retried.
    """

    live = True

    def __init__(self, source_factory: Callable[[], Source], uri: Optional[URI] = None,
                 first_source: Optional[Source] = None, backoff_initial: float = BACKOFF_INITIAL_S,
                 backoff_max: float = BACKOFF_MAX_S, stall_timeout: float = 2.0, read_timeout: float = 0.5):
        self.source_factory = source_factory
        self._source = first_source if first_source is not None else source_factory()
        super().__init__(uri if uri is not None else self._source.uri)
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.stall_timeout, self.read_timeout = stall_timeout, read_timeout
        self._size = self._source.size
        self._fps = self._source.fps
        self.slot: LatestWinsSlot[Frame] = LatestWinsSlot("grabber")
        self.connected = True
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._ended: Optional[EndOfStream] = None
        self._frames = 0
        self._reconnects = 0
        self._last_error: Optional[str] = None
        self._closed_counts = {"dropped": 0, "corrupt": 0}  # from sources already closed
        self._closed_kinds: Dict[str, int] = {}

    @classmethod
    def for_uri(cls, uri, **options) -> "Grabber":
        """A grabber that (re)opens ``open_source(uri, **options)``."""
        text = uri.text if isinstance(uri, URI) else str(uri)
        return cls(lambda: open_source(text, **options))

    @property
    def size(self):
        """(width, height) of the frames in pixels (the current source's, updated on reconnect)."""
        return self._size

    @property
    def fps(self):
        """The wrapped source's frames per second (kept from before when a reopened one says none)."""
        return self._fps

    # ---- the thread ------------------------------------------------------------------
    def start(self) -> "Grabber":
        """Start the capture thread (once); returns the grabber."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"grabber {self.uri.text}", daemon=True)
            self._thread.start()
        return self

    def _fail(self, source: Optional[Source], exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._last_error = message
            self.connected = False
            if source is not None:
                counts = source.stats()
                for key in self._closed_counts:
                    self._closed_counts[key] += int(counts.get(key, 0))
                for kind, n in (counts.get("corrupt_kinds") or {}).items():
                    self._closed_kinds[kind] = self._closed_kinds.get(kind, 0) + int(n)
                self._source = None
        if source is not None:
            log.warning("%s lost (%s); reconnecting", self.uri.text, message)
            try:
                source.close()
            except Exception as close_exc:  # a vanished device may fail to close; keep going
                log.debug("closing %s failed: %s", self.uri.text, close_exc)

    def _reopen(self, delays: Iterator[float]) -> Optional[Source]:
        if self._stop.wait(next(delays)):
            return None
        try:
            source = self.source_factory()
        except Exception as exc:  # device still missing or unusable: try again later
            self._fail(None, exc)
            return None
        with self._lock:
            self._source = source
            self._size = source.size
            self._fps = source.fps or self._fps
            self._reconnects += 1
            self.connected = True
        log.warning("%s reconnected", self.uri.text)
        return source

    def _run(self) -> None:
        source = self._source
        delays = backoff_delays(self.backoff_initial, self.backoff_max)
        last_frame = now()
        while not self._stop.is_set():
            if source is None:
                source = self._reopen(delays)
                last_frame = now()
                continue
            try:
                frame = source.read(timeout=self.read_timeout)
            except EndOfStream as exc:
                self._ended = exc
                break
            except Exception as exc:  # device gone, driver error, cv2.error: reconnect
                self._fail(source, exc)
                source = None
                continue
            if frame is None:
                if now() - last_frame > self.stall_timeout:
                    self._fail(source, SourceError(f"no frame for {self.stall_timeout:g} s"))
                    source = None
                continue
            last_frame = now()
            delays = backoff_delays(self.backoff_initial, self.backoff_max)
            with self._lock:
                self._frames += 1
                # the times the device was reopened: a frame after a reconnect may come from another
                # camera (edge/pipeline/stages.py Preprocess marks it ``camera_change``)
                frame.meta["connection"] = self._reconnects
            self.slot.put(frame)
        self.slot.close()

    # ---- consumer side ---------------------------------------------------------------
    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The newest frame not yet returned, or None if none arrives within ``timeout`` seconds.

        Starts the thread on first use.

        Raises:
            EndOfStream: the wrapped source ended and every frame it gave was returned.
        """
        self.start()
        frame = self.slot.get(timeout)
        if frame is None and self._ended is not None and not self.slot.pending:
            raise self._ended
        return frame

    def close(self) -> None:
        """Stop the thread (waiting up to ``read_timeout`` + 2 s) and close the wrapped source."""
        self._stop.set()
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout=self.read_timeout + 2.0)
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            source.close()

    def stats(self) -> Dict[str, object]:
        """Counters over every source opened so far.

        Returns:
            ``frames``, ``dropped`` (overwritten in the slot plus the sources' own), ``corrupt``,
            ``reconnects``, ``connected``, ``last_error`` and, where the sources count by kind,
            ``corrupt_kinds``.
        """
        with self._lock:
            source = self._source
            counts = dict(self._closed_counts)
            live = source.stats() if source is not None else {}
            kinds = dict(self._closed_kinds)
            for kind, n in (live.get("corrupt_kinds") or {}).items():
                kinds[kind] = kinds.get(kind, 0) + int(n)
            result = {
                "frames": self._frames,
                "dropped": self.slot.dropped + counts["dropped"] + int(live.get("dropped", 0)),
                "corrupt": counts["corrupt"] + int(live.get("corrupt", 0)),
                "reconnects": self._reconnects,
                "connected": self.connected,
                "last_error": self._last_error,
            }
            if kinds:  # sources that count by kind: the pipeline shows them by kind
                result["corrupt_kinds"] = kinds
            return result
