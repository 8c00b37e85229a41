"""Raw sensor counts <-> the model's float32 [0, 1] input, invertibly.

Two kinds of input, told apart by the source (``meta["source_bits"]``):

- **display-referred** (8-bit streams: a camera's or a file's AGC already ran, e.g. MJPEG,
  8-bit PNG/video): the map is fixed, full scale -> [0, 1] (:meth:`Normalizer.set_fixed_range`).
  The image is what the camera meant to show; a low-contrast 8-bit frame stays low-contrast
  for the model, which is exactly the domain the restoration routes were trained in
  (8-bit frames / 255, ecmrnet.md §1.3).
- **scene-referred** (raw 14/16-bit counts, Y16): the normaliser is the AGC. A raw frame is
  mapped linearly between two robust percentiles (0.5 % / 99.5 % of a
subsampled frame by default; min/max would let one dead or hot pixel set the scale,
thermal_io.md §4.2). The percentiles are smoothed over time with an EMA so the scale does
not flicker, and the span never drops below ``min_span`` counts (the max-gain analogue:
a flat scene is not stretched into noise). The EMA smooths the range's frame-to-frame flicker; a
frame whose own span differs from the smoothed one by 2× or more, or whose range does not overlap
it (:data:`JUMP_RATIO`; a gain switch changes a camera's span 4-8× at once, a reconnect may bring
another camera), restarts it
at that frame's range: smoothing across such an event squeezed the new frames into a sliver of
[0, 1] or clipped them for tens of frames (:meth:`Normalizer.update`). The mapping used for each frame travels with
the frame as :class:`NormParams`, so :meth:`Normalizer.inverse` maps the restored frame
back to counts exactly as it came in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np


@dataclass(frozen=True)
class NormParams:
    """The linear map used for one frame: ``x = (counts - lo) / (hi - lo)``; ``top`` and
    ``bottom`` are the frame's status rows (:func:`status_rows`: rows at its top and bottom that
    are not image, e.g. a Lepton's telemetry), left out of the range, given the nearest image
    row in the model input and their raw counts back in the restored frame; ``step`` the
    camera's count step (:func:`count_step`), which the minimum span is counted in and the
    restored counts are rounded to."""

    lo: float
    hi: float
    top: int = 0
    bottom: int = 0
    #: the camera's count step in the stored values (:func:`count_step`; 1: every count)
    step: int = 1

    @property
    def span(self) -> float:
        """``hi - lo`` in counts: the count range mapped onto [0, 1]."""
        return self.hi - self.lo


#: the most rows at each end of a raw frame that :func:`status_rows` may call status rows: a
#: Lepton 2.x adds 3 telemetry rows (80x63), a Lepton 3.x on PureThermal 2 (160x122), a Boson a
#: 2-row header (640x514; edge/camera/formats.py, thermal_io.md §3.2)
MAX_STATUS_ROWS = 4
#: a row is a status row when more than this share of its pixels lies beyond the image's range
#: widened by one span on each side (:func:`status_rows`)
STATUS_OUTSIDE = 0.5

MIN_SAMPLES = 4096  # a subsample never goes below this many pixels (small frames use a finer stride)
#: a frame whose robust span differs from the smoothed one by this factor either way restarts the EMA
#: at its own range (:meth:`Normalizer.jumped`): √4, half-way in the log domain between a steady
#: camera (1) and the smallest gain switch (4×)
JUMP_RATIO = 2.0


def robust_range(raw: np.ndarray, low_pct: float, high_pct: float, stride: int = 8) -> Tuple[float, float]:
    """Robust (lo, hi) of a frame: two percentiles of a subsample.

    Every ``stride``-th pixel in each direction is used (a finer stride on small frames, so at
    least :data:`MIN_SAMPLES` pixels are used); min/max are avoided so one dead or hot pixel
    cannot set the scale (thermal_io.md §4.2).

    Args:
        raw: (H, W) counts, uint16 (any real dtype works).
        low_pct, high_pct: the percentiles in % (0..100).
        stride: the subsampling step in pixels.

    Returns:
        (lo, hi) as floats, in counts.

    Raises:
        ValueError: ``raw`` is empty.
    """
    stride = max(1, min(stride, int((raw.size / MIN_SAMPLES) ** 0.5)))
    sample = raw[::stride, ::stride].ravel() if stride > 1 else raw.ravel()
    n = sample.size
    if n == 0:
        raise ValueError("empty frame")
    k_lo = int(round(low_pct / 100.0 * (n - 1)))
    k_hi = int(round(high_pct / 100.0 * (n - 1)))
    part = np.partition(sample, (k_lo, k_hi))
    return float(part[k_lo]), float(part[k_hi])


#: the largest count step :func:`count_step` reports (8 bits of padding: an 8-bit image stored
#: in the high byte of a 16-bit word)
MAX_COUNT_STEP = 256
#: the evidence :func:`count_step` needs for a step of 2^b: among k distinct levels that are not
#: on a step, all k − 1 differences multiples of 2^b by chance has probability 2^−b(k−1); a step
#: stands when b(k − 1) is at least this (a chance of 1e-6 or less: step 2 from 21 levels, step 4
#: from 11; a posterised restored frame of a dozen levels had read step 2)
STEP_EVIDENCE_BITS = 20


def count_step(raw: np.ndarray, stride: int = 8) -> int:
    """The camera's count step in the stored values: the largest power of two dividing every
    difference of a subsample (that of :func:`robust_range`) from its minimum,
    1..:data:`MAX_COUNT_STEP`.

    A 14-bit core whose counts a recorder or grabber stores MSB-aligned in 16-bit words
    (``counts << 2``) steps by 4 stored counts, a 12-bit one by 16: the stored scale is the
    camera's times the step. Only a bit shift makes such a step, hence powers of two. A sensor's
    noise and scene fill every count, so for a camera that fills its low bits the step is 1 from
    a few pixels on. A few levels can share a factor of two by chance: a step needs
    :data:`STEP_EVIDENCE_BITS` of evidence from the subsample's distinct values, else it is 1.

    Args:
        raw: (H, W) counts, an integer dtype (uint16 Y16); other dtypes give 1.
        stride: the subsampling step in pixels (finer on small frames, as :func:`robust_range`).

    Returns:
        The step, an int; 1 without the evidence (a constant frame too), for an empty frame or
        a step above :data:`MAX_COUNT_STEP`.
    """
    if raw.size == 0 or not np.issubdtype(raw.dtype, np.integer):
        return 1
    stride = max(1, min(stride, int((raw.size / MIN_SAMPLES) ** 0.5)))
    sample = np.unique((raw[::stride, ::stride] if stride > 1 else raw).ravel()).astype(np.int64)
    common = int(np.gcd.reduce(sample - sample[0]))
    step = common & -common   # the largest power of two dividing it (0 for a constant frame)
    if not 1 < step <= MAX_COUNT_STEP or (sample.size - 1) * (step.bit_length() - 1) < STEP_EVIDENCE_BITS:
        return 1
    return step


#: the share of a frame's pixels (subsampled as :func:`robust_range`) that :func:`signed_words` needs in
#: each outer quarter of the 16-bit range, and the most it allows in the middle half: the normaliser's
#: own tail (its 0.5 % percentile), so a side it would clip away anyway does not decide
SIGNED_TAIL = 0.005
#: the sign bit of a 16-bit word; ``word ^ SIGN_BIT`` turns two's complement into offset binary
SIGN_BIT = 0x8000


def signed_words(raw: np.ndarray, stride: int = 8) -> bool:
    """Whether a 16-bit frame holds signed (two's complement) words read as unsigned: at least
    :data:`SIGNED_TAIL` of its (subsampled) pixels in each outer quarter (0..16383 and
    49152..65535) and at most that share in the middle half.

    Why: a camera whose Y16 is a signed temperature (e.g. 0.01 °C as int16 [an assumption about such
    modules]) stores the values just below zero as 65535, 65534, …: a winter scene across 0 °C
    becomes two clusters at the ends of the unsigned range, its coldest pixels read as the hottest,
    and a percentile AGC stretches over the whole 16 bits (the emulated signed_cc_winter_640x512,
    tools/scripts/emulate_cameras.py --round 8). A scene's counts are one contiguous range (its
    temperature range); the two's complement wrap is the only way a camera's range fills both ends
    of the word with the middle empty (a 14-bit core ends at 16383; an offset camera's range sits in
    one part; a few dead or saturated pixels stay under the tail). ``raw ^`` :data:`SIGN_BIT`
    (offset binary: −32768 → 0, −1 → 32767, 0 → 32768) puts the values back in their order
    (ITU-T/IEEE two's complement; the offset-binary identity is standard).

    Args:
        raw: (H, W) counts; anything but uint16 gives False.
        stride: the subsampling step in pixels (finer on small frames, as :func:`robust_range`).

    Returns:
        bool; False for an empty frame.
    """
    if raw.dtype != np.uint16 or raw.size == 0:
        return False
    stride = max(1, min(stride, int((raw.size / MIN_SAMPLES) ** 0.5)))
    sample = raw[::stride, ::stride] if stride > 1 else raw
    quarter = np.bincount((sample >> 14).ravel(), minlength=4) / sample.size
    return bool(quarter[0] >= SIGNED_TAIL and quarter[3] >= SIGNED_TAIL and quarter[1] + quarter[2] <= SIGNED_TAIL)


def offset_binary(words: np.ndarray) -> np.ndarray:
    """``words ^`` :data:`SIGN_BIT` as uint16 (same shape): signed (two's complement) 16-bit words
    read as unsigned put in their values' order (offset binary), and back, since the flip is its
    own inverse (:func:`signed_words` says why)."""
    return np.asarray(words).astype(np.uint16, copy=False) ^ np.uint16(SIGN_BIT)


def status_rows(raw: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5, stride: int = 8) -> Tuple[int, int]:
    """How many rows at the top and at the bottom of a raw frame are not image (status rows:
    telemetry or a header a camera appends to its Y16 frame, e.g. a Lepton's 2-3 telemetry rows,
    which hold status words, serial numbers and mostly zeros, edge/camera/formats.py).

    The image's range is taken on the frame's middle rows (all but :data:`MAX_STATUS_ROWS` at
    each end; :func:`robust_range` with ``low_pct``/``high_pct``/``stride``) and widened by its
    span on each side: a sensor row lies inside it almost everywhere (a scene's coldest and
    hottest 0.5 % at most, and nothing beyond a span past them in a row's majority), while a
    status row's words are zeros, counters and codes that do not follow the scene's counts. Rows
    with more than :data:`STATUS_OUTSIDE` of their pixels outside that range are status rows,
    counted from each end inward while they last (at most :data:`MAX_STATUS_ROWS`).

    Args:
        raw: (H, W) counts (uint16 Y16; any real dtype).
        low_pct, high_pct, stride: as :func:`robust_range`.

    Returns:
        (top, bottom): the status rows at each end, each 0..:data:`MAX_STATUS_ROWS`; (0, 0) for a
        frame under 4 × :data:`MAX_STATUS_ROWS` rows or not 2-D.
    """
    if raw.ndim != 2 or raw.shape[0] < 4 * MAX_STATUS_ROWS or raw.shape[1] < 2:
        return 0, 0
    h = raw.shape[0]
    lo, hi = robust_range(raw[MAX_STATUS_ROWS:h - MAX_STATUS_ROWS], low_pct, high_pct, stride)
    span = max(hi - lo, 1.0)
    low, high = lo - span, hi + span

    def status(row: np.ndarray) -> bool:
        outside = np.count_nonzero((row < low) | (row > high))
        return outside > STATUS_OUTSIDE * row.size

    top = 0
    while top < MAX_STATUS_ROWS and status(raw[top]):
        top += 1
    bottom = 0
    while bottom < MAX_STATUS_ROWS and status(raw[h - 1 - bottom]):
        bottom += 1
    return top, bottom


class Normalizer:
    """Stateful counts -> [0, 1] mapping with temporal smoothing; see the module docstring.

    ``alpha`` is the EMA weight of the newest frame's percentiles (1.0 = no smoothing).
    ``max_count`` is the top of the valid count range that :meth:`inverse` clips to
    (65535 for 16-bit cameras, 16383 for 14-bit ones). ``count_steps`` counts the minimum span in
    the camera's count steps (:func:`count_step`, :meth:`span_floor`; the restoration's
    normaliser); off, in stored values (the viewer's AGC, edge/agc.py: its raw and restored views
    map alike, while a restored frame's values can fall on a lattice of their own, e.g. a tone
    stretch ×2 of a low-span frame's integer counts).

    Raises:
        ValueError: not 0 <= ``low_pct`` < ``high_pct`` <= 100, ``alpha`` outside (0, 1], or
            ``min_span`` <= 0.
    """

    def __init__(
        self,
        low_pct: float = 0.5,
        high_pct: float = 99.5,
        alpha: float = 0.1,
        min_span: float = 64.0,
        stride: int = 8,
        clip: bool = True,
        max_count: int = 65535,
        count_steps: bool = True,
    ):
        if not 0.0 <= low_pct < high_pct <= 100.0:
            raise ValueError(f"need 0 <= low_pct < high_pct <= 100, got {low_pct}, {high_pct}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if min_span <= 0:
            raise ValueError(f"min_span must be > 0 counts, got {min_span}")
        self.low_pct = low_pct
        self.high_pct = high_pct
        self.alpha = alpha
        self.min_span = float(min_span)
        self.stride = max(1, int(stride))
        self.clip = clip
        self.max_count = int(max_count)
        self.count_steps = bool(count_steps)
        self._lo: Optional[float] = None
        self._hi: Optional[float] = None
        #: frames whose range restarted the EMA (:meth:`jumped`)
        self.jumps = 0
        self.fixed: Optional[NormParams] = None

    def reset(self) -> None:
        """Forget the smoothed percentiles (a fixed range stays); the next frame sets them afresh."""
        self._lo = self._hi = None

    def set_fixed_range(self, lo: float, hi: float) -> None:
        """Map counts ``lo..hi`` to 0..1 for every frame (display-referred input); no percentiles.

        Raises ValueError unless ``hi > lo``.
        """
        if not float(hi) > float(lo):
            raise ValueError(f"fixed range needs hi > lo, got {lo}..{hi}")
        self.fixed = NormParams(float(lo), float(hi))

    def update(self, raw: np.ndarray) -> NormParams:
        """Fold this frame's percentiles into the smoothed range and return the params.

        Args:
            raw: (H, W) uint16 counts.

        Returns:
            The :class:`NormParams` (lo, hi in counts) for this frame: the EMA of the percentiles
            of its image rows (its status rows, :func:`status_rows`, left out and named in
            ``top``/``bottom``)
            (restarted at this frame's when they jumped, :meth:`jumped`), widened to
            :meth:`span_floor` counts (``min_span`` of the camera's count steps; kept inside
            0..``max_count``); the fixed range instead,
            when one is set. A frame whose robust high lies above ``max_count`` (a bit depth
            guessed from an earlier frame) first raises ``max_count`` to 65535 (16 bits).

        Raises:
            ValueError: ``raw`` is empty.
        """
        if self.fixed is not None:
            return self.fixed
        top, bottom = status_rows(raw, self.low_pct, self.high_pct, self.stride)
        image = raw[top:raw.shape[0] - bottom] if top or bottom else raw
        lo, hi = robust_range(image, self.low_pct, self.high_pct, self.stride)
        # the frame's own range above the top of the bit depth (a depth guessed from the first
        # frame, then a gain switch): the widening below must not pin the range to that top (a
        # near-flat frame at 60000 counts read 16319..16383, i.e. 1.0 everywhere)
        self.widen_to(hi)
        if self._lo is None or self.jumped(lo, hi):
            self._lo, self._hi = lo, hi
        else:
            a = self.alpha
            self._lo = a * lo + (1.0 - a) * self._lo
            self._hi = a * hi + (1.0 - a) * self._hi
        lo, hi = self._lo, self._hi
        step = count_step(image, self.stride) if self.count_steps else 1
        floor = self.min_span * step
        if hi - lo < floor:
            centre = 0.5 * (lo + hi)
            lo = centre - 0.5 * floor
            hi = centre + 0.5 * floor
            if lo < 0.0:
                lo, hi = 0.0, floor
            elif hi > self.max_count:
                lo, hi = self.max_count - floor, float(self.max_count)
        return NormParams(lo, hi, top, bottom, step)

    def span_floor(self, raw: np.ndarray) -> float:
        """The smallest span this frame is mapped with: ``min_span`` of the camera's own count
        steps, ``min_span`` × :func:`count_step` stored counts (``min_span`` stored counts when
        ``count_steps`` is off). Why: the floor is the max-gain
        analogue, how far a flat scene may be stretched before its noise fills the frame, and the
        noise is counted in the camera's steps: a 14-bit core stored MSB-aligned (``<< 2``) gave
        64 stored counts = 16 of its counts, four times the stretch the same core gets
        LSB-aligned (the emulated y16_msb_640x512, tools/scripts/emulate_cameras.py --round 4).

        Args:
            raw: (H, W) counts (the frame's image rows).
        """
        return self.min_span * (count_step(raw, self.stride) if self.count_steps else 1)

    def widen_to(self, count: float) -> bool:
        """Raise :attr:`max_count` to 65535 (16 bits) when ``count`` lies above it: the bit depth was
        guessed from an earlier frame (a 16-bit stream whose first frame fit in 14 bits, then a gain
        switch). Returns whether it was raised."""
        if count <= self.max_count:
            return False
        self.max_count = 65535
        return True

    def jumped(self, lo: float, hi: float) -> bool:
        """Whether a frame's robust range (``lo``, ``hi``, counts) is an event, not flicker: its span
        and the smoothed range's differ by :data:`JUMP_RATIO` or more either way (each span at least
        1 count), or the two ranges do not overlap. Then :meth:`update` restarts the EMA at this
        range (counted in :attr:`jumps`).

        Why: the EMA (weight ``alpha`` = 0.1 by default) takes tens of frames to follow a range that
        changed several-fold. After a gain switch from a 20000-count span to a 300-count one (the
        emulated raw16 cameras, /tmp/unseen) the new frames filled 1.5-30 % of [0, 1] for 30
        frames: the router and the gates judged near-flat frames, and their spans joined the
        contrast gate's history; the other way, the new frames were clipped. A gain switch changes
        the span 4-8× at once; a steady camera's range moves by a fraction of its span from frame to
        frame. :data:`JUMP_RATIO` is half-way between the two in the log domain (√4), as the gates'
        thresholds are; a range that left the smoothed one entirely is a new camera state too (a
        reconnect, a new offset after a shutter event)."""
        if self._lo is None:
            return False
        new, old = max(hi - lo, 1.0), max(self._hi - self._lo, 1.0)
        if max(new / old, old / new) >= JUMP_RATIO or lo > self._hi or hi < self._lo:
            self.jumps += 1
            return True
        return False

    def forward(self, raw: np.ndarray, params: Optional[NormParams] = None) -> Tuple[np.ndarray, NormParams]:
        """Counts -> model input: ``x = (counts - lo) / (hi - lo)``, clipped to [0, 1] when ``clip``.

        Args:
            raw: (H, W) uint16 counts.
            params: the map to use; None updates the smoothed range from this frame first.

        Returns:
            (x, params): x is (H, W) float32, in [0, 1] when ``clip``. The frame's status rows
            (``params.top`` / ``params.bottom``, :func:`status_rows`) are given the nearest
            image row, so the model, the router and the gates see the image alone.

        Raises:
            ValueError: ``raw`` is empty (when ``params`` is None).
        """
        if params is None:
            params = self.update(raw)
        x = np.empty(raw.shape, dtype=np.float32)
        np.subtract(raw, np.float32(params.lo), out=x)
        np.multiply(x, np.float32(1.0 / params.span), out=x)
        if self.clip:
            np.clip(x, 0.0, 1.0, out=x)
        h = x.shape[0]
        if 0 < params.top + params.bottom < h:
            if params.top:
                x[:params.top] = x[params.top]
            if params.bottom:
                x[h - params.bottom:] = x[h - params.bottom - 1]
        return x, params

    def inverse(self, y: np.ndarray, params: NormParams) -> np.ndarray:
        """Model output -> counts: ``counts = y * (hi - lo) + lo``, rounded and clipped to
        0..``max_count``.

        Args:
            y: (H, W), (1, H, W) or (1, 1, H, W) float32, nominally in [0, 1].
            params: the :class:`NormParams` the frame was normalised with.

        Returns:
            (H, W) uint16 counts.

        Raises:
            ValueError: ``y`` holds more than one frame (a leading axis other than 1).
        """
        y = np.asarray(y, dtype=np.float32)
        while y.ndim > 2:
            if y.shape[0] != 1:
                raise ValueError(f"inverse expects one frame, got shape {y.shape}")
            y = y[0]
        # one OpenCV pass: scale, shift, round to nearest and saturate to 0..65535
        y = np.ascontiguousarray(y)
        counts = cv2.addWeighted(y, params.span, y, 0.0, params.lo, dtype=cv2.CV_16U)
        if self.max_count < 65535:
            cv2.min(counts, self.max_count, dst=counts)
        return counts
