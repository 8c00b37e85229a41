"""A camera mounted in portrait, upside down or behind a mirror: its frames turned upright at capture.

``tir run --input-flip METHOD`` wraps the source in :class:`OrientedSource`, so every stage after it
(the router, the gates, the restoration, the outputs and the recorder) sees the scene upright.
Why it matters here: the restoration's whole-frame heads learned that the sky is at the top of
a scene, and a camera mounted in portrait lost 0.1-4 dB on the noise-carrying tasks to it
(docs/cameras.md "Session 12", K6).

Method names are GStreamer ``videoflip``'s ``method`` values (GStreamer Good Plug-ins,
videofilter/videoflip; jetson-utils' ``--input-flip`` takes the same kind of names):
``none``, ``clockwise`` (90° clockwise), ``rotate-180``, ``counterclockwise`` (90°
counter-clockwise), ``horizontal-flip`` (left-right mirror), ``vertical-flip`` (top-bottom
mirror), ``upper-left-diagonal`` (flip across the upper-left/lower-right diagonal: a transpose)
and ``upper-right-diagonal`` (across the upper-right/lower-left diagonal).

numpy only (runtime).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Optional

import numpy as np

from ..frame import Frame
from .base import Source

#: method -> the (H, W) array operation (a view; the wrapper makes it contiguous)
FLIP_METHODS: Dict[str, Optional[Callable[[np.ndarray], np.ndarray]]] = {
    "none": None,
    "clockwise": lambda x: np.rot90(x, -1),
    "rotate-180": lambda x: x[::-1, ::-1],
    "counterclockwise": lambda x: np.rot90(x, 1),
    "horizontal-flip": lambda x: x[:, ::-1],
    "vertical-flip": lambda x: x[::-1],
    "upper-left-diagonal": lambda x: x.T,
    "upper-right-diagonal": lambda x: x[::-1, ::-1].T,
}
#: the methods that swap width and height
SWAPS = frozenset({"clockwise", "counterclockwise", "upper-left-diagonal", "upper-right-diagonal"})


def check_flip(method: str) -> str:
    """``method`` if it is one of :data:`FLIP_METHODS`.

    Raises:
        ValueError: another name; the message lists the methods."""
    if method not in FLIP_METHODS:
        raise ValueError(f"input flip {method!r}: use one of {', '.join(FLIP_METHODS)}")
    return method


def flip_frame(raw: np.ndarray, method: str) -> np.ndarray:
    """``raw`` (H, W), any dtype, turned or mirrored by ``method`` (:data:`FLIP_METHODS`): a new
    C-contiguous array, (W, H) for the methods in :data:`SWAPS`; ``raw`` itself for ``none``.

    Raises:
        ValueError: an unknown method, or ``raw`` is not 2-D."""
    op = FLIP_METHODS[check_flip(method)]
    if raw.ndim != 2:
        raise ValueError(f"input flip needs one (H, W) frame, got shape {raw.shape}")
    return raw if op is None else np.ascontiguousarray(op(raw))


class OrientedSource(Source):
    """``inner``'s frames turned by ``method`` (:func:`flip_frame`); everything else (start, close,
    stats, fps, live, the camera-specific attributes such as a serial port) is ``inner``'s."""

    def __init__(self, inner: Source, method: str):
        # no URI options of its own: the inner source checked its URI already
        self.inner = inner
        self.method = check_flip(method)
        self.uri = inner.uri
        self.options = getattr(inner, "options", None)
        self.live = getattr(inner, "live", False)

    def _turn(self, frame: Optional[Frame]) -> Optional[Frame]:
        if frame is None:
            return None
        return dataclasses.replace(frame, raw=flip_frame(frame.raw, self.method),
                                   meta=dict(frame.meta, input_flip=self.method))

    @property
    def size(self):
        """(width, height) of the frames as this wrapper gives them."""
        w, h = self.inner.size
        return (h, w) if self.method in SWAPS else (w, h)

    @property
    def fps(self):
        """The inner source's frames per second (None when it does not say)."""
        return self.inner.fps

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The inner source's next frame, turned (None on timeout; its errors pass through)."""
        return self._turn(self.inner.read(timeout))

    def reference_frames(self, count: int) -> List[Frame]:
        """The inner source's reference frames (the virtual camera's healthy look), turned; [] when
        it offers none."""
        offer = getattr(self.inner, "reference_frames", None)
        return [self._turn(f) for f in offer(count)] if callable(offer) else []

    def start(self) -> "OrientedSource":
        """Start the inner source; returns this wrapper."""
        self.inner.start()
        return self

    def close(self) -> None:
        """Close the inner source."""
        self.inner.close()

    def stats(self):
        """The inner source's counters (frames, dropped, corrupt, reconnects ...)."""
        return self.inner.stats()

    def __getattr__(self, name):
        # only called for what this wrapper does not have: the inner source's own attributes
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def oriented(source: Source, method: Optional[str]) -> Source:
    """``source`` wrapped in :class:`OrientedSource`, or ``source`` itself for None or ``none``.

    Raises:
        ValueError: an unknown method."""
    if method is None or check_flip(method) == "none":
        return source
    return OrientedSource(source, method)
