"""Constant borders around a camera's picture: the black (or white) bars a grabber, a scaler or an
OSD draws around it (pillarbox, letterbox, windowbox), found and kept out of the picture that is
judged and restored.

Why (docs/cameras.md, "Session 21"): a 640×480 camera recorded through a 1080p HDMI grabber
delivers its picture enlarged to 1440×1080 between 240 black columns either side. The bars are a
quarter of the frame: they move its statistics (the histogram's low end, the extent, the share
of detail the blur gate's sharpness is measured on), so 7 of 12 clean frames were sent through the
blur route (43 dB from themselves) and 8 of 12 noisy ones read as blur + noise (−4.48 dB). The
bars are the grabber's, not the camera's: a user expects them to come out as they went in and the
picture inside to be judged and restored as the camera's picture.

What counts as a bar (:func:`flat_borders`): at least :data:`MIN_BAR` whole rows (columns) at an
edge of the frame, each flat (its values within :data:`FLAT_TOL` of each other: a drawn constant,
not a dark sky or a cold scene edge, which carry the sensor's noise) and all at the same value,
which is an extreme of the picture (at or below its minimum, or at or above its maximum, within
:data:`FLAT_TOL`). The picture left must keep :data:`MIN_PICTURE` of each side.

What is trusted (:class:`BorderTracker`): one frame's bars are not the camera's; the picture's
box changes only when :data:`AGREE_FRAMES` consecutive frames of the camera's own history (the
frames the gates learn from, not a frame under evaluation, ``pinned``) find the same bars. A frame
of another size than the box's gets none.

numpy only (runtime).
"""
from __future__ import annotations

from collections import deque
from typing import Deque, Optional, Tuple

import numpy as np

#: a line's values count as one constant within this spread, in model-input units ([0, 1]): 1.5
#: 8-bit grey levels (a drawn bar is exact; an analog grabber's black may wobble by one level;
#: a thermal scene's rows carry the sensor's noise, well above a level over a whole row)
FLAT_TOL = 1.5 / 255.0
#: the fewest lines a bar holds: a single flat edge line is a sensor's dead row or column or a
#: telemetry line (edge/defects.py, edge/normalize.py ``status_rows``), not a bar
MIN_BAR = 4
#: the share of each side the picture must keep (bars beyond it: not a picture between bars)
MIN_PICTURE = 0.5
#: consecutive frames of the camera that must find the same bars before the box follows them
AGREE_FRAMES = 3

#: (top, bottom, left, right): the lines of bar at each edge
Box = Tuple[int, int, int, int]
NONE: Box = (0, 0, 0, 0)


def _flat_run(lo: np.ndarray, hi: np.ndarray, tol: float) -> Tuple[int, float]:
    """Leading lines (by their per-line minima ``lo`` and maxima ``hi``) that are flat and at the
    first line's value: (count, value)."""
    if len(lo) == 0 or hi[0] - lo[0] > tol:
        return 0, 0.0
    v = 0.5 * (float(lo[0]) + float(hi[0]))
    ok = (hi - lo <= tol) & (np.abs(hi - v) <= tol) & (np.abs(lo - v) <= tol)
    n = int(np.argmin(ok)) if not ok.all() else len(ok)
    return n, v


def flat_borders(frame: np.ndarray, tol: float = FLAT_TOL) -> Box:
    """The constant bars at the edges of one frame (module docstring): (top, bottom, left, right)
    lines, :data:`NONE` when there are none.

    Each side's run of flat lines at one value counts when it holds at least :data:`MIN_BAR`
    lines and its value is an extreme of the picture the bars leave (within ``tol`` of its
    minimum or below, or of its maximum or above); the picture must keep :data:`MIN_PICTURE` of
    each side, else :data:`NONE`.

    Args:
        frame: (H, W) real array in model-input units (``tol``'s; the model input in [0, 1]).
        tol: the spread within which a line counts as flat and at the bar's value.

    Raises:
        ValueError: ``frame`` is not 2-D."""
    f = np.asarray(frame)
    if f.ndim != 2:
        raise ValueError(f"flat_borders needs a 2-D frame, got shape {f.shape}")
    h, w = f.shape
    if h < 2 * MIN_BAR or w < 2 * MIN_BAR:
        return NONE
    f = f.astype(np.float32, copy=False)
    rlo, rhi = f.min(axis=1), f.max(axis=1)
    clo, chi = f.min(axis=0), f.max(axis=0)
    top, vt = _flat_run(rlo, rhi, tol)
    bottom, vb = _flat_run(rlo[::-1], rhi[::-1], tol)
    left, vl = _flat_run(clo, chi, tol)
    right, vr = _flat_run(clo[::-1], chi[::-1], tol)
    sides = [[top, vt], [bottom, vb], [left, vl], [right, vr]]
    for s in sides:
        if s[0] < MIN_BAR:
            s[0] = 0
    t, b, l, r = (s[0] for s in sides)
    if t + b > (1.0 - MIN_PICTURE) * h or l + r > (1.0 - MIN_PICTURE) * w or not (t or b or l or r):
        return NONE
    inner = f[t:h - b, l:w - r]
    lo, hi = float(inner.min()), float(inner.max())
    if hi - lo <= tol:
        return NONE   # a flat picture (a shutter, a lens cap): nothing tells bars from it
    out = []
    for n, v in sides:
        out.append(n if n and (v <= lo + tol or v >= hi - tol) else 0)
    if out != [t, b, l, r]:
        return flat_borders_without(f, out, tol)
    return (t, b, l, r)


def flat_borders_without(f: np.ndarray, keep, tol: float) -> Box:
    """:func:`flat_borders` with the sides not in ``keep`` (0) dropped: the picture's extremes
    are taken again without them (a side that was not a bar is picture).

    Args:
        f: (H, W) float32 frame (model input, nominally [0, 1]).
        keep: (top, bottom, left, right) bar widths in px, 0 for a side that is not a bar.
        tol: the spread in frame units under which the picture counts as flat (no picture).

    Returns:
        ``keep`` as a tuple of ints, or :data:`NONE` when no side is kept or the rest is flat.
    """
    h, w = f.shape
    t, b, l, r = keep
    if not (t or b or l or r):
        return NONE
    inner = f[t:h - b, l:w - r]
    lo, hi = float(inner.min()), float(inner.max())
    return tuple(int(n) for n in keep) if hi - lo > tol else NONE


def inner(x: np.ndarray, box: Box) -> np.ndarray:
    """The picture inside ``box`` ((top, bottom, left, right) px) of frames ``x`` (..., H, W), any
    dtype: a view of shape (..., H - top - bottom, W - left - right) and ``x``'s dtype."""
    t, b, l, r = box
    h, w = x.shape[-2:]
    return x[..., t:h - b, l:w - r]


def pasted(outer: np.ndarray, picture: np.ndarray, box: Box) -> np.ndarray:
    """``outer`` (..., H, W) with its picture inside ``box`` replaced by ``picture`` (..., h, w):
    a new float32 array; the bars are ``outer``'s as they are."""
    out = np.array(outer, dtype=np.float32, copy=True)
    inner(out, box)[...] = picture
    return out


class BorderTracker:
    """The camera's bars, learned from its own frames (module docstring).

    :meth:`add` a frame of the camera's history (not while :attr:`pinned`); :attr:`box` is the
    bars (top, bottom, left, right) every frame of :attr:`shape` is cropped by, or None; it changes
    only when :data:`AGREE_FRAMES` consecutive added frames of one size find the same bars.
    :meth:`restart` forgets all (a camera change)."""

    def __init__(self, agree: int = AGREE_FRAMES):
        if int(agree) < 1:
            raise ValueError(f"agree must be >= 1, got {agree}")
        self.agree = int(agree)
        self.pinned = False
        #: frames whose box changed (counted for the status)
        self.changes = 0
        self.restart()

    def restart(self) -> None:
        """Forget the bars and the frames that agreed on them (a camera change, engines/restorer.py
        ``Restorer.new_camera``): the next frames find them afresh. The change count stays."""
        self.box: Optional[Box] = None
        self.shape: Optional[Tuple[int, int]] = None
        #: (H, W) bool, True on the box's bars (set with the box: every frame's bars are read through it)
        self._mask: Optional[np.ndarray] = None
        #: the bars' pixels ((B,) float32, :attr:`_mask` order) of the newest added frame that showed
        #: the box's bars: what the grabber draws
        self.drawn: Optional[np.ndarray] = None
        self._seen: Deque[Tuple[Tuple[int, int], Box]] = deque(maxlen=self.agree)

    def add(self, frame: np.ndarray, force: bool = False) -> bool:
        """Look at one frame of the camera ((H, W) model input); returns True when the box
        changed (the picture the gates judge is another from now on). Nothing while pinned,
        unless ``force`` (a frame of the camera's look shown as such: ``Restorer.warm_camera``)."""
        if self.pinned and not force:
            return False
        f = np.asarray(frame)
        self._seen.append((tuple(int(v) for v in f.shape[-2:]), flat_borders(f)))
        if self._seen[-1] == (self.shape, self.box):
            self.drawn = f[self._mask].astype(np.float32)   # the bars as the grabber draws them now
        if len(self._seen) < self.agree or any(s != self._seen[0] for s in self._seen):
            return False
        shape, box = self._seen[0]
        new = None if box == NONE else box
        if new == self.box and (new is None or shape == self.shape):
            return False
        self.box, self.shape = new, (shape if new is not None else None)
        self._mask = None if new is None else self._bars_mask(shape, new)
        self.drawn = None if new is None else f[self._mask].astype(np.float32)
        self.changes += 1
        return True

    def bars(self, x: np.ndarray) -> np.ndarray:
        """Frames ``x`` (N, 1, H, W) of :attr:`box`'s size with the bars they come out with: their
        own where each frame's bars are the grabber's (within :data:`FLAT_TOL` of :attr:`drawn`'s:
        a live stream's frames, bit-exact), else :attr:`drawn`'s (the bars a frame carries
        otherwise were changed with the picture: the whole signal degraded after the grabber,
        and the grabber's bars are known). ``x`` itself when nothing was changed; else a copy.

        Raises:
            ValueError: no box, or ``x`` not of its size."""
        x = np.asarray(x, dtype=np.float32)
        if self.box is None or self.drawn is None or tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"bars() needs frames of the box's size {self.shape}, got {x.shape}")
        mask = self._mask
        off = [float(np.abs(f[0][mask] - self.drawn).max()) > FLAT_TOL for f in x.reshape(-1, 1, *self.shape)]
        if not any(off):
            return x
        out = x.copy().reshape(-1, 1, *self.shape)
        for n, o in enumerate(off):
            if o:
                out[n, 0][mask] = self.drawn
        return out.reshape(x.shape)

    @staticmethod
    def _bars_mask(shape: Tuple[int, int], box: Box) -> np.ndarray:
        """(H, W) bool of ``shape``, True on the bars of ``box``."""
        mask = np.ones(shape, bool)
        inner(mask, box)[...] = False
        return mask

    def box_for(self, shape) -> Optional[Box]:
        """The box for frames of ``shape`` (..., H, W): :attr:`box` when they are of its size, else None."""
        if self.box is None or tuple(int(v) for v in tuple(shape)[-2:]) != self.shape:
            return None
        return self.box

    def status(self) -> Optional[dict]:
        """The bars for the stats page: ``{"top", "bottom", "left", "right"}`` in px, ``"size"``
        [H, W] px of the frames they were found on, ``"changes"`` (times the box changed); None
        while no bars are found."""
        if self.box is None:
            return None
        t, b, l, r = self.box
        return {"top": t, "bottom": b, "left": l, "right": r, "size": list(self.shape), "changes": self.changes}
