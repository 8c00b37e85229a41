"""A frame that is an enlargement of a smaller image: a camera's digital zoom, a viewer's or a
grabber's upscaling, detected from the periodic traces the interpolation leaves.

Why (docs/cameras.md, round 7, K22): a camera with digital zoom (FLIR Tau 2's eZoom, the DJI thermal
SDK's ×2/×4/×8) delivers, zoomed in, the centre of its image enlarged by bilinear (or nearest)
interpolation. Such a frame is softer than the same camera's unzoomed frames, so the router calls
it ``blur`` and the blur gate, whose reference is the camera's sharpest frames, confirms it: the
blur route then ran on 8 of 12 clean frames of an eZoom 1×/2×/4× camera (39.6 / 32.0 dB from
themselves, median / p5) and on 24 of 96 frames of a live replay. Its softness is the sensor's
sampling seen through the enlargement, not a blur that happened to the frame.

The principle. Interpolating an image to k times its size makes the output's statistics periodic
with period k: output pixels that fall between the same source pixels are combinations of the
source with the same weights, so the energy of neighbouring differences differs between the k
phases of a row (or column), and the sensor's own white noise, which is white at the source's
sampling, is correlated in the output in the same periodic way (Popescu & Farid, "Exposing digital
forgeries by detecting traces of re-sampling", IEEE Trans. Signal Processing 53(2), 2005: the
periodic correlations of resampled signals). A blur applied to the frame **after** the enlargement
spreads each pixel over its neighbours' phases and erases the periodicity (measured on round 7's
eZoom frames: the periodic part of 2× frames falls from 0.21-0.25 of the mean energy to 0.02 after
a Gaussian σ 1 px; a 4× frame keeps most of it under σ 1 px, a quarter of one of its sensor's
pixels, and loses it under σ 2 px). So a frame that still carries the traces of an enlargement was
not blurred since it was enlarged: a blur verdict on it is the enlargement's softness.

The measure (:func:`enlargement`): along each axis, the per-column (per-row) mean of the squared
neighbouring differences (each capped at their 90th percentile, so a few strong edges do not decide),
folded into k phases; its periodic part is a z-score, the phase means' spread over the noise of
the profile after the phase means are taken out (the first differences of that residue, so the
scene's slow variation across the frame does not count). The frame is an enlargement by k when
both axes show period k (z ≥ :data:`Z_MIN`) and the profile folded at 2k repeats itself
(:data:`PERIOD_AGREEMENT`): the 8×8 blocks of JPEG or MPEG, which the data sets' frames carry
(M3SVD, Anti-UAV and the Lepton chips show period 8), have one boundary phase in eight and fold
into halves that do not agree. Only k in :data:`FACTORS` is tried (2, 3, 4: eZoom's steps and the
viewers' common ones; 8 is a block codec's period and is not told apart here).

Non-integer factors (:func:`spectral_period`; docs/cameras.md "Session 21"): a 640×480 camera
through a 1080p grabber is enlarged 2.25× (a 4:3 picture scaled to 1440×1080), a 640 px core shown
at 960 px 1.5×. The interpolation weights then repeat with the position's fraction ``x / k``, whose
period is k px, not an integer: the profile's periodic part is a line in its spectrum at the
frequency 1/k cycles/px (aliased into [0, 1/2]: 1/2.25 = 0.444; 1/1.5 = 2/3 reads 1/3), where
Popescu & Farid (2005, §III) look for it too. The fold at an integer k cannot hold it (2.25× folds
into 9 phases, each weak: z 13-14 on the pillarbox frames and the fold at 18 does not repeat), the
spectrum does: the line stands 59-286 times above its neighbours' median power on those frames,
where the clean frames of the other emulated cameras reach 28 (a 20× nearest-neighbour camera's harmonic) at
most. The same blur erases it. A line at a multiple of
1/16 (a block codec's 8×8 blocks and 16×16 macroblocks) is not looked at, nor below
:data:`MIN_FREQUENCY` (a line there survives a blur, and the scene's slow variation is there); both axes must show the line at the same
frequency (the picture enlarged by one factor: a grabber keeping the aspect ratio, a digital zoom).

numpy only (runtime).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

#: the enlargement factors tried, smallest first (8 is left out: a block codec's period)
FACTORS = (2, 3, 4)
#: the periodic part's z-score both axes must reach (chance gives about 1-3; round 7's 2× and 4× eZoom
#: frames reach 12-43 after rounding to 8 bits; chosen on those, the six val sets and the 76 emulated
#: cameras: frames that are neither an enlargement nor JPEG-compressed reach 4.0 (RoadScene val), the
#: JPEG-compressed sets' 8×8 blocks up to 17, which :data:`PERIOD_AGREEMENT` tells apart)
Z_MIN = 8.0
#: the profile folded at 2k repeats itself: the mean absolute difference of its two halves at most
#: this share of its mean absolute deviation (a true period k: about 0.1-0.3; a JPEG block's
#: boundary phase folded at 2k = 8: about 1)
PERIOD_AGREEMENT = 0.5
#: squared neighbouring differences are capped at this percentile of theirs: a scene's edges are rarer
#: than one difference in ten, and the cap is never 0 on a frame with detail (a median of an 8-bit
#: frame's squared differences is often 0 or 1, and a cap at a multiple of it flipped decisions)
EDGE_CAP_PERCENTILE = 90.0
#: the smallest side measured: at least 8 periods of the largest factor's 2k fold in each phase
MIN_SIDE = 16 * 2 * FACTORS[-1]


#: the spectral line's power over its neighbours' median power (:data:`LINE_NEIGHBOURS`; as an
#: exponential variable's mean, median / ln 2) both axes must reach at one frequency: the pillarbox
#: frames' 2.25× line 59-286; the other emulated cameras' clean frames' highest common line at or above
#: :data:`MIN_FREQUENCY` 28 (mlx90640_nn), 18.6 (pal_384x288), 12 or less elsewhere; their blurred
#: frames (the evaluation's blur and CB) 10 or less but mlx90640_nn's (:data:`MAX_PERIOD`)
LINE_MIN = 30.0
#: lines below this frequency (cycles/px) are not looked at: only a line that any blur of σ ≥ 1 px
#: erases (its power × exp(−4π²σ²f²) ≤ 0.03 of what it was) tells that no blur came after the
#: enlargement (K22's principle); a lower one survives a blur (a 20× nearest-neighbour enlargement's
#: line at 0.15 stood 1360 times above its neighbours after the evaluation's blur). Factors whose
#: line lies at or above it: 2.25 (0.444), 2.5 (0.4), 1.5 and 3 (0.333), 1.875 (0.467)
MIN_FREQUENCY = 0.3
#: a line within this many frequency bins of a multiple of 1/16 is a block codec's (8×8 blocks,
#: 16×16 macroblocks: emulated cameras built from video show lines at 5/16), not looked at
BLOCK_BINS = 3.0
#: the codec block period whose multiples of 1/period are left out, px
BLOCK_PERIOD = 16
#: a pattern whose strongest line has a period of this many px or more (an enlargement by 10× or
#: more, nearest-neighbour blocks) keeps its steps, and so its harmonics above
#: :data:`MIN_FREQUENCY`, through a blur of 1-2 px (a 20× nearest-neighbour camera's blurred frames:
#: lines at 0.05 and 0.1 standing 1160-3300 above their neighbours, at 0.3 36): its lines do not tell
#: that no blur came after it
MAX_PERIOD = 10.0
#: the lowest frequency (cycles/px) looked at for such a long-period line (periods up to 25 px)
LONG_LOWEST = 0.04
#: a bin's power is compared with the median of this many bins either side of it (its own ±2 left out)
LINE_NEIGHBOURS = 12
#: the profile's slow variation taken out before the spectrum: a Gaussian of this σ in px
DETREND_SIGMA = 6.0


def difference_profile(frame: np.ndarray, axis: int) -> np.ndarray:
    """Mean squared neighbouring difference along ``axis`` (1: between columns, per column gap; 0:
    between rows, per row gap), each squared difference capped at the :data:`EDGE_CAP_PERCENTILE`-th
    percentile of them (taken on every third difference of every third row). (W − 1,) or (H − 1,)
    float64.

    Raises:
        ValueError: ``frame`` is not 2-D or ``axis`` not 0 or 1."""
    f = np.asarray(frame)
    if f.ndim != 2 or axis not in (0, 1):
        raise ValueError(f"difference_profile needs a 2-D frame and axis 0 or 1, got {f.shape}, {axis}")
    d = np.diff(f.astype(np.float64, copy=False), axis=axis)
    d *= d
    cap = float(np.percentile(d[::3, ::3], EDGE_CAP_PERCENTILE))   # on every ninth difference: the same to a few %
    if cap > 0:
        np.minimum(d, cap, out=d)
    return d.mean(axis=1 - axis)


def _fold(e: np.ndarray, k: int) -> Tuple[np.ndarray, int]:
    m = len(e) // k
    return e[:m * k].reshape(m, k).mean(axis=0), m


def periodic_z(e: np.ndarray, k: int) -> float:
    """The periodic part of period ``k`` of a profile ``e`` (1-D) as a z-score: √(m · Σ(Pₚ − P̄)²)
    over σ, P the k phase means of m periods, σ the profile's noise after the phase means are taken
    out, from its first differences (/√2: the scene's slow variation does not count). 0.0 when
    the profile is flat or shorter than 4 periods."""
    phases, m = _fold(e, k)
    if m < 4:
        return 0.0
    resid = e[:m * k] - np.tile(phases, m)
    noise = float(np.std(np.diff(resid))) / math.sqrt(2.0)
    spread = math.sqrt(m * float(np.sum((phases - phases.mean()) ** 2)))
    if noise <= 0.0:
        return math.inf if spread > 0.0 else 0.0
    return spread / noise


def repeats_at_double(e: np.ndarray, k: int) -> bool:
    """Whether the profile ``e`` ((L,) float64, :func:`difference_profile`) folded at 2k repeats
    itself with period k (:data:`PERIOD_AGREEMENT`); False when it holds under 4 periods of 2k."""
    phases, m = _fold(e, 2 * k)
    if m < 4:
        return False
    dev = float(np.sum(np.abs(phases - phases.mean())))
    return dev > 0.0 and float(np.sum(np.abs(phases[:k] - phases[k:]))) <= PERIOD_AGREEMENT * dev


def line_spectrum(e: np.ndarray, lowest: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The spectrum of a profile ``e`` ((L,) float64, :func:`difference_profile`) where lines are
    looked for: (frequencies in cycles/px, power over its neighbours' median power / ln 2
    (:data:`LINE_NEIGHBOURS`)), both
    (F,) float64, only the frequencies at or above ``lowest`` (default :data:`MIN_FREQUENCY`) and away from the
    multiples of 1/16 (:data:`BLOCK_PERIOD`, :data:`BLOCK_BINS`). The profile's slow variation (a Gaussian of σ
    :data:`DETREND_SIGMA`) is taken out and a Hann window applied first. Empty for a profile
    under 64 long or flat."""
    e = np.asarray(e, dtype=np.float64)
    n = len(e)
    empty = np.zeros(0), np.zeros(0)
    if n < 64:
        return empty
    r = int(4 * DETREND_SIGMA)
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / DETREND_SIGMA) ** 2)
    slow = np.convolve(np.pad(e, r, mode="reflect"), g / g.sum(), mode="valid")
    power = np.abs(np.fft.rfft((e - slow) * np.hanning(n))) ** 2
    freq = np.fft.rfftfreq(n)
    # each bin's reference: the median power of its neighbours (±LINE_NEIGHBOURS bins, the line's
    # own ±2 left out, the spectrum's ends reflected): a line stands above its neighbourhood; a
    # blurred frame's steep spectrum, whose low end stands above the band's median, does not
    w = LINE_NEIGHBOURS
    padded = np.pad(power, w, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)
    keep = np.ones(2 * w + 1, bool)
    keep[w - 2:w + 3] = False
    ref = np.median(windows[:, keep], axis=1) / math.log(2.0)
    looked = (freq >= (MIN_FREQUENCY if lowest is None else lowest)) & (ref > 0.0) \
        & (np.abs(freq[:, None] - np.arange(BLOCK_PERIOD // 2 + 1)[None, :] / BLOCK_PERIOD).min(axis=1) > BLOCK_BINS / n)
    return freq[looked], power[looked] / ref[looked]


def spectral_period(frame: np.ndarray) -> Optional[float]:
    """The period 1/f px of an enlargement's interpolation pattern when both axes' difference
    profiles show a spectral line (:func:`line_spectrum`, ≥ :data:`LINE_MIN`) at the same
    frequency f (within 1.5 bins of the shorter axis; the strongest such line), else None: a non-integer enlargement (module
    docstring). 1/f is the factor k for k ≥ 2 (2.25 → 2.25) and the pattern's period otherwise
    (1.5× reads 3.0: 1/k and 1 − 1/k alias). ``frame`` (H, W), as :func:`enlargement`.

    Raises:
        ValueError: ``frame`` is not 2-D."""
    profiles = _profiles(frame, "spectral_period")
    return None if profiles is None else _line_period(*profiles)


def _profiles(frame: np.ndarray, who: str) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The (columns, rows) difference profiles (:func:`difference_profile`) of an (H, W) ``frame``,
    or None under :data:`MIN_SIDE` px on a side. Raises ValueError (naming ``who``) for another shape."""
    f = np.asarray(frame)
    if f.ndim != 2:
        raise ValueError(f"{who} needs a 2-D frame, got shape {f.shape}")
    if min(f.shape) < MIN_SIDE:
        return None
    return difference_profile(f, 1), difference_profile(f, 0)


def _line_period(cols: np.ndarray, rows: np.ndarray) -> Optional[float]:
    """1/f of the strongest line f ≥ :data:`MIN_FREQUENCY` both profiles hold (≥ :data:`LINE_MIN` on
    each, within 1.5 bins of the other's), or None; None too when both hold a stronger line of a
    period of :data:`MAX_PERIOD` px or longer (a long-period pattern, which a blur keeps)."""
    (fc, rc), (fr, rr) = line_spectrum(cols, LONG_LOWEST), line_spectrum(rows, LONG_LOWEST)
    if len(rc) == 0 or len(rr) == 0:
        return None
    tol = 1.5 / min(len(cols), len(rows))
    lines = []   # (strength on the weaker axis, frequency) of every line both axes hold
    for f, r in zip(fc, rc):
        near = np.abs(fr - f) <= tol
        if near.any():
            lines.append((min(float(r), float(rr[near].max())), float(f)))
    found = [(r, f) for r, f in lines if f >= MIN_FREQUENCY and r >= LINE_MIN]
    if not found:
        return None
    strength, best = max(found)
    if any(f <= 1.0 / MAX_PERIOD and r >= strength for r, f in lines):
        return None   # the pattern's own period is long: its steps, and its lines, survive a blur
    return 1.0 / best


def enlargement(frame: np.ndarray) -> Optional[float]:
    """The factor k (:data:`FACTORS`) by which ``frame`` is an enlargement of a smaller image whose
    traces no blur erased since (module docstring), or None: both axes periodic with period k
    (:func:`periodic_z` ≥ :data:`Z_MIN`) and repeating at 2k (:func:`repeats_at_double`); failing
    that, a non-integer enlargement's period (:func:`spectral_period`, a float). A frame
    under :data:`MIN_SIDE` px on a side, or constant, is None. About 25 ms at 640×512 on the shared
    2-core machine (the blur gate asks only on a blur verdict it finds soft).

    Args:
        frame: (H, W) array, any real dtype and scale (the model input in [0, 1], 8-bit grey levels, counts).

    Raises:
        ValueError: ``frame`` is not 2-D."""
    profiles = _profiles(frame, "enlargement")
    if profiles is None:
        return None
    cols, rows = profiles
    for k in FACTORS:
        if all(periodic_z(e, k) >= Z_MIN and repeats_at_double(e, k) for e in (cols, rows)):
            return k
    return _line_period(cols, rows)
