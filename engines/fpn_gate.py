"""Column fixed-pattern noise is measured, not guessed: add the noise part to a verdict when the
frame carries the column FPN of an uncalibrated microbolometer.

Why (docs/cameras.md, "Session 7"): the router reads a degradation from what it learned; a real
non-NUC'd sensor (``shared/data/lynred_nonuc``) lies far from every class of a router trained on
synthetic noise and is called "unknown" (passed through with its FPN in), and another router
names it by luck. Column FPN, though, has a physical signature no scene shares: a microbolometer
FPA is read out column by column, so each column carries its own offset along its *whole* height
(docs/cameras.md; thermal_io.md), while scene structure changes from the top of the frame to the
bottom.

The gate (:class:`FPNGate`) measures per routed frame (:func:`column_pattern`):

- the **column signature**: the median down each column of the horizontal high-pass
  ``x − G_σ,x * x`` (σ = 2 px along the rows; the median ignores objects that fill part of a
  column; taken per band, then the median of the bands), and its **amplitude**: the robust standard deviation (1.4826 × MAD) of the signature
  across columns, as a fraction of the frame's scene span (1st-99th percentile, at least 0.02:
  the convention of the ``sensor_fpn`` op, engines/degrade.py);
- the **consistency**: the median Pearson correlation between the signatures of
  :data:`BANDS` horizontal bands (top to bottom), over the columns that are inliers (within ±3 robust standard
  deviations, :data:`OUTLIER`) in every band, so that a few columns of scene do not decide it
  (0 when fewer than half the columns are inliers). A column offset is the same in every band; a
  scene's vertical edges are not.

A frame **carries column FPN** when its amplitude is at least :data:`AMPLITUDE`, its
consistency at least :data:`CONSISTENCY`, and its signature is not periodic (**periodicity**,
the largest autocorrelation of the signature at lags of 8 px and more, below
:data:`PERIODICITY`): an FPA's column offsets are random from column to column, while a fence or
a facade that fills the frame repeats. A sensor whose column FPN is itself periodic (e.g. an
odd/even readout mismatch) is therefore left to the router: a missed FPN leaves the frame as the
camera delivered it, a fence taken for FPN would be erased by the noise route. Frames with fewer
than two bands of :data:`MIN_BAND_ROWS` rows or fewer than :data:`MIN_COLUMNS` columns carry no
measurable pattern. :data:`AMPLITUDE` is the geometric mean of the column
FPN left on NUC'd cameras (≤ 0.5 % of the span, docs/cameras.md) and the weakest column FPN the
``sensor_fpn`` op draws (1.5 %, the low end of what was measured on non-NUC'd frames): half-way,
in the log domain, between "corrected" and "uncorrected", as the contrast gate's ratio is.

Then, when the frame's white noise is above the camera's own (:meth:`FPNGate.fpn_only_threshold`),
the verdict gains the bundle's noise part (:func:`noise_partners`: clean or unknown → noise,
contrast → CN, blur → BN, CB → CBN; derived from the task specs, so a task ``tir learn`` adds is
handled the same way): the frame carries the noise the routes were trained on. When it is not,
the verdict stays (a noise-carrying verdict of the router's loses its noise part: noise → clean,
BN → blur, …) and the column offsets alone are removed (:func:`remove_column_fpn`,
:attr:`FPNGate.offsets`; the restorer subtracts them from what it outputs until the next
verdict). Why (docs/cameras.md, "Session 11"): the noise task learned to remove the spec's white noise, shading and stripes
together, and on a frame whose only fault is column FPN it changes far more than the FPN
(tools/scripts/column_fpn_check.py, val frames of five cameras with a column pattern of 0.5-5 %
of the span: the noise task's output is 25-27 dB from the frame without the pattern, the input
itself 27-54 dB and the input with its offsets removed 32-61 dB; on the real lynred_nonuc frames
the noise task cut column FPN by 65 % with a low-pass correlation to the input of 0.956,
subtracting the offsets cuts it by 67 % and keeps 1.000). The gate never removes a verdict's noise
part and never acts on a frame without the signature; the router decides everything else.

**White noise on an unknown verdict.** The gate also keeps the camera's white-noise floor: the
median :func:`flat_noise_sigma` (the MAD on the frame's least textured blocks; session 13, K2: the
MAD over every block read an 80×60 sensor's scene detail as noise) of recent frames under the
``clean`` verdict (a frame under a blur or
contrast verdict shows the camera's noise smoothed or scaled down by the degradation, and lowered
the floor: on an emulated camera with white noise of 3.5 grey levels in its clean frames, the
frames it delivered were then taken for noisier than its own; docs/cameras.md "Session 11").
An ``unknown`` verdict on a frame whose white noise is clearly above what the camera's own frames
reach (the 90th percentile of those σ, :meth:`FPNGate.floor_high`: the camera's noise varies with
its AGC's gain on each scene, session 13; at least the median routed frame as far as that is the
camera's own by the clean frames' measure, session 21: the router calls a small sensor's most
textured own frames noisy, so they never join the floor), σ² > high² + (σ_min/2)² with σ_min the weakest white noise of the bundle's specs (5 grey levels
for the shipped ``gaussian_noise`` step, ecmrnet.md §1.3), becomes the noise task: half-way
between "as the camera delivers it" and the mildest noise the routes restore. Measured on val
(docs/cameras.md, "Session 9"): noisy frames read σ ≥ 5.2 grey levels (5th percentile), clean
frames of every camera ≤ 2.9 (the raw set's 95th percentile 4.3). Only unknown verdicts: a
confident router is not overridden by a measure that a finely textured scene can also raise, and
the router named no noisy val frame clean or noise-free; it called some "unknown" on cameras it
never saw. Silent before :data:`MIN_FLOOR_FRAMES` frames of the camera. A camera whose every frame
the router calls noisy never shows a ``clean`` verdict: until :data:`MIN_FLOOR_FRAMES` frames were
called clean, its floor is the median σ of every routed frame (:meth:`FPNGate.floor_sigma`, K8: a
DDE camera's enhanced detail and an NETD-limited camera's own noise read as the spec's noise, and
the noise task ran on every frame of ``tir run``; docs/cameras.md "Session 12").

**The shape of the camera's own noise** (K21, docs/cameras.md "Session 18"). The floor is built
from the frames called clean, so it never holds the camera's noisiest scenes, the ones the router
calls noise. Where the camera's own noise is shaped (its noisier frames' σ₂/σ₁ at two Haar scales,
:func:`flat_noise_sigmas`, at least √2 at their whitest: :meth:`FPNGate.own_shape`), a frame whose
σ is above the thresholds but whose noise keeps that shape is the camera's own too (a noise verdict
given back, an unknown one not made the noise task, column FPN destriped); white noise added
downstream of the camera (the specs') pulls the ratio toward 1. A camera whose own noise is white
is judged by σ alone, as before.

numpy + OpenCV only (runtime).
"""
from __future__ import annotations

import math
from collections import deque
from typing import Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

from .contrast_gate import centre_window, iqr_sigma, one_frame
from .router import CLEAN, UNKNOWN

#: σ in pixels of the 1-D Gaussian (along each row) whose residual is the horizontal high-pass
SIGMA = 2.0
#: frames under noise-free verdicts the camera's white-noise floor needs before the gate uses it
MIN_FLOOR_FRAMES = 8
#: routed frames the floor is the median of
FLOOR_WINDOW = 512
#: percentile of the noise-free frames' σ the thresholds are measured above (:meth:`FPNGate.floor_high`):
#: the noise nine in ten of the camera's own frames stay under
FLOOR_HIGH_PERCENTILE = 90.0
#: σ₂/σ₁ (:func:`flat_noise_sigmas`) the whitest tenth of the camera's own frames must still reach for
#: its own noise to count as shaped (:meth:`FPNGate.own_shape`): √2, at least half of what they show at
#: the coarser scale is not white (σ₂² ≥ 2σ₁², σ₂² − σ₁² ≥ σ₁²); white noise reads 1
SHAPED_RATIO = math.sqrt(2.0)

#: horizontal bands whose column signatures must agree
BANDS = 4
#: column FPN left on NUC'd cameras, fraction of the scene span (0.3-0.5 %, docs/cameras.md)
NUC_RESIDUAL = 0.005
#: weakest column FPN of an uncalibrated FPA the sensor_fpn op draws (engines/degrade.py
#: SensorFPNParams.column_rel low end, bracketing shared/data/lynred_nonuc's 2.5 %)
UNCORRECTED_MIN = 0.015
#: amplitude threshold: geometric mean of the two above (0.87 % of the span)
AMPLITUDE = math.sqrt(NUC_RESIDUAL * UNCORRECTED_MIN)
#: consistency threshold: median correlation of the bands' column signatures
CONSISTENCY = 0.5
#: ops that put fixed-pattern noise into a frame (engines/degrade.py); a task spec with one of
#: them carries the noise part
FPN_OPS = ("stripes", "sensor_fpn")
#: a column whose signature lies beyond its band's median ± this many robust standard
#: deviations in any band is scene (a pole, a hot object's edge) and left out of the correlation
OUTLIER = 3.0
#: minimum scene span a frame's amplitude is relative to (as the sensor_fpn op)
MIN_SPAN = 0.02
#: rows per band at least, and columns at least, for a measurable pattern (fewer: the band
#: medians and correlations are noise, and clean 32×24 frames gave false signatures)
MIN_BAND_ROWS = 16
MIN_COLUMNS = 32
#: lags of the periodicity test start beyond the high-pass's own support (3σ = 6 px)
MIN_LAG = 8
#: a signature at least this autocorrelated at some lag ≥ MIN_LAG is periodic: scene (a fence, a
#: facade), not the random offsets of an FPA's columns (tests/test_fpn_gate.py: white offsets stay
#: below it at 80 columns; lynred_nonuc's real FPN shows only a weak peak at its 128-column
#: readout blocks)
PERIODICITY = 0.5


def noise_sigma(x: np.ndarray) -> float:
    """The standard deviation of the frame's white noise: the median absolute diagonal Haar detail
    of 2×2 blocks, (a − b − c + d)/2, over 0.6745 (Donoho & Johnstone, "Ideal spatial adaptation by
    wavelet shrinkage", Biometrika 81(3), 1994: the MAD estimator on the finest diagonal
    subband). The diagonal detail of a white noise of σ has σ; row and column offsets cancel in
    it, and the median ignores the few blocks an edge crosses.

    Args:
        x: (H, W) float32 frame (≥ 2×2 px; an odd last row or column is not used).

    Returns:
        σ in the frame's units (≥ 0).

    Raises:
        ValueError: ``x`` is not one 2-D frame, has a side under 2 px, or holds a non-finite
            value in the 2×2 blocks used."""
    x = one_frame(x, "noise_sigma")
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    if h == 0 or w == 0:
        raise ValueError(f"noise_sigma needs a frame of at least 2×2 px, got shape {x.shape}")
    y = x[:h, :w].astype(np.float64)   # finite float32 values never overflow the sum in float64
    with np.errstate(invalid="ignore"):   # inf − inf: NaN, refused below
        hh = 0.5 * (y[0::2, 0::2] - y[0::2, 1::2] - y[1::2, 0::2] + y[1::2, 1::2])
    if not np.isfinite(hh).all():   # each pixel used is in one block: a NaN or inf shows there
        raise ValueError("noise_sigma: the frame holds NaN or infinite values; pass finite frames")
    return float(np.median(np.abs(hh)) / 0.6745)


#: share of a frame's 2×2 blocks, the least active ones, :func:`flat_noise_sigma` reads the noise on
FLAT_SHARE = 0.25
#: blocks :func:`flat_noise_sigma` needs left after clipped blocks are set aside (fewer: all blocks)
MIN_FLAT_BLOCKS = 64


def _haar(x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One level of the 2-D Haar transform of an (H, W) float frame's 2×2 blocks, each band scaled by
    2 (an odd last row or column is not used): (LL, LH, HL, HH, clipped), each (H//2, W//2)
    float32 (float64 for values near float32's limit); ``clipped`` is True on a block holding the frame's minimum or maximum value."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    y = np.asarray(x[:h, :w], dtype=np.float32)
    lo, hi = y.min(), y.max()
    if max(abs(float(lo)), abs(float(hi))) > 1e37:   # sums of four values near float32's limit overflow it
        y = y.astype(np.float64)
    a, b, c, d = y[0::2, 0::2], y[0::2, 1::2], y[1::2, 0::2], y[1::2, 1::2]
    clipped = (np.minimum(np.minimum(a, b), np.minimum(c, d)) <= lo) | \
        (np.maximum(np.maximum(a, b), np.maximum(c, d)) >= hi)
    ab, cd, a_b, c_d = a + b, c + d, a - b, c - d
    return ab + cd, a_b + c_d, ab - cd, a_b - c_d, clipped


def flat_noise_sigma(x: np.ndarray, share: float = FLAT_SHARE) -> float:
    """The standard deviation of the frame's white noise read on its least textured 2×2 blocks: the
    median absolute diagonal Haar detail (HH) over 0.6745, as :func:`noise_sigma`, of the ``share`` of
    the blocks whose activity (|LH| + |HL| of the block and half the central differences of its
    neighbours' means) is lowest; blocks that hold the frame's minimum or maximum (clipped: their
    noise is cut) are set aside unless fewer than :data:`MIN_FLAT_BLOCKS` would remain.

    Why: on a small sensor (80×60) or a finely textured scene most 2×2 blocks hold scene detail,
    and the median over every block read 5-9 grey levels of "noise" on clean frames whose sensor
    noise is about 1 (docs/cameras.md "Session 13", K2). Restricting the MAD to weakly textured
    regions is the principle of Tai & Yang ("A fast method for image noise estimation using
    Laplacian operator and adaptive edge detection", ISCCSP 2008) and Liu, Tanaka & Okutomi
    ("Single-image noise level estimation for blind denoising", IEEE TIP 22(12), 2013). The
    selection does not bias the estimate on white noise: the Haar transform is orthonormal, so
    for i.i.d. Gaussian noise a block's HH is independent of its LH, HL and of other blocks' LL,
    which the activity is made of. Row and column offsets cancel in HH as in :func:`noise_sigma`.

    Args:
        x: (H, W) float frame (≥ 6×6 px; smaller frames fall back to :func:`noise_sigma`).
        share: fraction of the blocks kept, in (0, 1].

    Returns:
        σ in the frame's units (≥ 0).

    Raises:
        ValueError: ``x`` is not one 2-D frame, has a side under 2 px, holds a non-finite value,
            or ``share`` is outside (0, 1]."""
    x = _flat_input(x, share, "flat_noise_sigma")
    if min(x.shape) < 6:
        return noise_sigma(x)
    return _flat_sigma(x, share)[0]


def _flat_input(x: np.ndarray, share: float, name: str) -> np.ndarray:
    """``x`` as one finite 2-D frame for :func:`flat_noise_sigma` / :func:`flat_noise_sigmas`;
    ValueError (naming ``name``) for a ``share`` outside (0, 1] or a frame that is not one finite
    2-D frame."""
    if not 0.0 < float(share) <= 1.0:
        raise ValueError(f"{name} share must be in (0, 1], got {share}")
    x = one_frame(x, name)
    if min(x.shape) >= 2 and not np.isfinite(x).all():   # at every size, unused odd rows included
        raise ValueError(f"{name}: the frame holds NaN or infinite values; pass finite frames")
    return x


def _flat_sigma(x: np.ndarray, share: float) -> Tuple[float, np.ndarray, int]:
    """:func:`flat_noise_sigma` of a finite (H, W) frame of at least 6×6 px: (σ, the orthonormal Haar
    approximation LL/2 of its 2×2 blocks, (H//2, W//2), the number of flat blocks σ was read on,
    0 when clipped blocks could not be set aside)."""
    ll, lh, hl, hh, clipped = _haar(x)   # each band ×2: the scale cancels in the ranking, HH halved below
    activity = np.abs(lh[1:-1, 1:-1]) + np.abs(hl[1:-1, 1:-1]) + 0.5 * (
        np.abs(ll[1:-1, 2:] - ll[1:-1, :-2]) + np.abs(ll[2:, 1:-1] - ll[:-2, 1:-1]))
    hh, keep = hh[1:-1, 1:-1], ~clipped[1:-1, 1:-1]
    kept = int(keep.sum()) >= MIN_FLAT_BLOCKS
    if kept:
        activity, hh = activity[keep], hh[keep]
    else:
        activity, hh = activity.ravel(), hh.ravel()
    n = max(1, int(round(float(share) * activity.size)))
    flat = hh[np.argpartition(activity, n - 1)[:n]] if n < activity.size else hh
    return float(np.median(np.abs(flat))) * 0.5 / 0.6745, 0.5 * ll, n if kept else 0


def flat_noise_sigmas(x: np.ndarray, share: float = FLAT_SHARE) -> Tuple[float, Optional[float]]:
    """The frame's white-noise σ read at two scales on its least textured blocks: (σ₁, σ₂), σ₁
    :func:`flat_noise_sigma` of the frame, σ₂ the same of its orthonormal Haar approximation (the
    2×2 blocks' sums / 2: half the resolution, white noise of σ still σ), or None when that
    approximation is under 6×6 px or has fewer than :data:`MIN_FLAT_BLOCKS` flat blocks (the
    ``share`` of its unclipped blocks; an 80×60 frame has 58: its flattest 4×4-px blocks hold
    scene).

    Why (docs/cameras.md "Session 18", K21): white noise, which is what a degradation downstream
    of the camera's processing adds (the specs' ``gaussian_noise``, a grabber's), has the same σ at
    every scale of an orthonormal transform, so σ₂/σ₁ is 1 for it; what a camera's own frames show
    as "noise" on their flattest blocks is often not white: a detail-enhancing (DDE) camera at its
    top setting amplifies the scene's fine texture with its noise, and that variance grows toward
    coarser scales (the emulated ``dde_max_640x512``'s clean frames: σ₂/σ₁ 1.14-1.96, median 1.8,
    σ₁ nearly the same without its sensor noise; the specs' noise-carrying degradations of them
    0.88-1.54). Added white noise pulls the ratio toward 1. One frame's ratio scatters: white noise
    on 160×120 frames read 1.02 ± 0.10 (40 frames), on 640×512 0.96-1.03 (10 frames).

    Args:
        x: (H, W) float frame (≥ 6×6 px; smaller frames: (:func:`noise_sigma`, None)).
        share: fraction of the blocks kept at each scale, in (0, 1].

    Returns:
        (σ₁, σ₂ or None) in the frame's units (≥ 0).

    Raises:
        ValueError: as :func:`flat_noise_sigma`."""
    x = _flat_input(x, share, "flat_noise_sigmas")
    if min(x.shape) < 6:
        return noise_sigma(x), None
    sigma, coarse, _ = _flat_sigma(x, share)
    if min(coarse.shape) < 6:
        return sigma, None
    sigma2, _, used = _flat_sigma(coarse, share)
    return sigma, (sigma2 if used >= MIN_FLAT_BLOCKS else None)


#: the op whose σ range sets the white-noise threshold (engines/degrade.py; σ in grey levels of 255)
WHITE_NOISE_OP = "gaussian_noise"


def min_white_sigma(specs: Mapping[str, Sequence[dict]]) -> Optional[float]:
    """The weakest white noise the bundle's routes restore: the low end of the ``sigma`` range of
    its :data:`WHITE_NOISE_OP` steps, in [0, 1] frame units (grey levels / 255); None when no task
    states one (then the gate does not judge white noise)."""
    found = [float(st["sigma"][0]) / 255.0 for steps in specs.values() for st in steps
             if st.get("op") == WHITE_NOISE_OP and isinstance(st.get("sigma"), (list, tuple))
             and float(st["sigma"][0]) > 0]
    return min(found) if found else None


class ColumnPattern(NamedTuple):
    """One frame's column signature: ``amplitude`` (fraction of the scene span, ≥ 0),
    ``consistency`` (median band-to-band correlation, in [−1, 1]) and ``periodicity`` (largest
    normalised autocorrelation of the signature at lags ≥ :data:`MIN_LAG`, ≤ 1). All 0 for a frame
    too small to measure (:func:`column_pattern`)."""
    amplitude: float
    consistency: float
    periodicity: float = 0.0


#: no measurable pattern (a frame too small, flat or with non-finite values)
NO_PATTERN = ColumnPattern(0.0, 0.0, 0.0)


def row_highpass(x: np.ndarray, sigma: float = SIGMA) -> np.ndarray:
    """The horizontal high-pass of :func:`column_pattern`: ``x − G_σ,x * x``, the 1-D Gaussian of σ
    ``sigma`` px (±3σ taps) along each row, reflected at the borders.

    Args:
        x: (H, W) float32 or float64 array.
        sigma: σ in pixels (> 0).

    Returns:
        (H, W) array of ``x``'s dtype.
    """
    k = 2 * int(math.ceil(3 * sigma)) + 1
    return x - cv2.GaussianBlur(x, (k, 1), sigmaX=float(sigma), sigmaY=0, borderType=cv2.BORDER_REFLECT)


def column_pattern(frame: np.ndarray, bands: int = BANDS, sigma: float = SIGMA) -> ColumnPattern:
    """Measure the column fixed-pattern noise of one frame (module docstring).

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1].
        bands: horizontal bands whose signatures are correlated (≥ 2); fewer are used when the
            frame has fewer than :data:`MIN_BAND_ROWS` rows per band.
        sigma: σ in pixels of the row-wise Gaussian of the high-pass (> 0).

    Returns:
        :class:`ColumnPattern`; :data:`NO_PATTERN` for a frame with fewer than two bands of
        :data:`MIN_BAND_ROWS` rows, fewer than :data:`MIN_COLUMNS` columns, or a value that is
        not finite (nothing there can be told from scene).

    Raises:
        ValueError: the frame is not a single 2-D image, or ``bands`` < 2 or ``sigma`` ≤ 0.
    """
    return _measure(frame, bands, sigma)[0]


def _measure(frame: np.ndarray, bands: int = BANDS, sigma: float = SIGMA) -> Tuple[ColumnPattern, Optional[list]]:
    """:func:`column_pattern` and the bands' column signatures it was measured from
    (:func:`_band_signatures`; None when there is no measurable pattern)."""
    x = one_frame(frame, "column_pattern")
    if int(bands) < 2 or not float(sigma) > 0.0:
        raise ValueError(f"column_pattern needs bands ≥ 2 and sigma > 0, got {bands}, {sigma}")
    sigs = _band_signatures(x, bands, sigma)
    if sigs is None:
        return NO_PATTERN, None
    signature = np.median(np.stack(sigs), axis=0)   # median of the bands' column medians
    # every column, every 4th row: a column-periodic scene must not alias the span
    lo, hi = np.percentile(x[::4], (1.0, 99.0))
    amplitude = 1.4826 * float(np.median(np.abs(signature - np.median(signature)))) / max(float(hi - lo), MIN_SPAN)
    periodicity = _periodicity(signature)
    keep = np.logical_and.reduce([_inliers(v) for v in sigs])
    if keep.sum() < max(8, keep.size // 2):   # mostly scene: no pattern to speak of
        return ColumnPattern(amplitude, 0.0, periodicity), sigs
    kept = [v[keep] for v in sigs]
    corr = []
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            a, b = kept[i] - kept[i].mean(), kept[j] - kept[j].mean()
            den = float(np.sqrt((a * a).sum() * (b * b).sum()))
            corr.append(float((a * b).sum()) / den if den > 1e-12 else 0.0)
    return ColumnPattern(amplitude, float(np.median(corr)), periodicity), sigs


def _band_signatures(x: np.ndarray, bands: int, sigma: float) -> Optional[list]:
    """The column medians of the horizontal high-pass in each of ``bands`` horizontal bands
    (fewer when the frame has fewer than :data:`MIN_BAND_ROWS` rows per band): a list of (W,)
    arrays, or None for a frame with no measurable pattern (:func:`column_pattern`)."""
    h, w = x.shape
    n_bands = min(int(bands), h // MIN_BAND_ROWS)
    if n_bands < 2 or w < MIN_COLUMNS or not np.isfinite(x).all():
        return None
    high = row_highpass(x, sigma)
    return [np.median(b, axis=0) for b in np.array_split(high, n_bands, axis=0)]


def remove_column_fpn(frame: np.ndarray, bands: int = BANDS, sigma: float = SIGMA) -> np.ndarray:
    """Subtract the frame's column fixed-pattern noise. Per column, the offset every band
    carries: the bands' column medians of the horizontal high-pass (as :func:`column_pattern`
    measures them, each band's median removed), the smallest in magnitude when all bands agree
    in sign, else 0; clipped to ±:data:`OUTLIER` robust standard deviations of the signature. A
    column offset is the same from top to bottom, so every band carries it; a pole or a hot
    object's edge fills only part of the height, so some band does not and the column keeps its
    scene (on val frames of five cameras, a frame without FPN comes out 54-94 dB from itself; the
    real lynred_nonuc frames lose 67 % of their column FPN, docs/cameras.md "Session 11"). Column offsets are
    what a microbolometer FPA read out column by column adds (module docstring); subtracting an
    estimate of them is the scene-based column equalisation of destriping (e.g. Tendero,
    Landeau & Gilles, "Non-uniformity correction of infrared images by midway equalization",
    IPOL 2, 2012, column-wise histogram matching; here the offsets only). The level of the
    frame is kept (the signature's median is 0).

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float32 frame in [0, 1] (the model input or
            a restored frame).

    Returns:
        The destriped frame, float32, the shape of ``frame``, clipped to [0, 1]; a copy of
        ``frame`` when it has no measurable pattern (too small, or a value that is not finite).

    Raises:
        ValueError: the frame is not a single 2-D image, or ``bands`` < 2 or ``sigma`` ≤ 0.
    """
    arr = np.asarray(frame, dtype=np.float32)
    x = one_frame(arr, "remove_column_fpn")
    if int(bands) < 2 or not float(sigma) > 0.0:
        raise ValueError(f"remove_column_fpn needs bands ≥ 2 and sigma > 0, got {bands}, {sigma}")
    sigs = _band_signatures(x, bands, sigma)
    if sigs is None:
        return arr.copy()
    return subtract_offsets(x, column_offsets(sigs)).reshape(arr.shape)


def column_offsets(sigs: Sequence[np.ndarray]) -> np.ndarray:
    """The column offsets every band carries (:func:`remove_column_fpn`): from the bands'
    column signatures, each (W,), as :func:`column_pattern` measures them. Returns (W,) float32
    in the frame's units, median 0."""
    bands = np.stack(sigs).astype(np.float32)
    bands -= np.median(bands, axis=1, keepdims=True)
    # what every band carries: the smallest offset when all bands agree in sign, else none
    agree = np.all(bands > 0, axis=0) | np.all(bands < 0, axis=0)
    offsets = np.where(agree, np.sign(bands[0]) * np.abs(bands).min(axis=0), 0.0)
    spread = OUTLIER * 1.4826 * float(np.median(np.abs(np.median(bands, axis=0))))
    return np.clip(offsets, -spread, spread).astype(np.float32)


def subtract_offsets(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``x`` (…, W) float32 in [0, 1] minus (W,) column offsets, clipped to [0, 1] (float32);
    ``x`` unchanged (a float32 copy) when its width is not the offsets' (the source changed size
    since they were measured)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-1] != offsets.shape[-1]:
        return x.copy()
    return np.clip(x - offsets, 0.0, 1.0).astype(np.float32)



#: :func:`offsets_shown`: rows of a frame (at most) whose column means are compared with the offsets
SHOWN_ROWS = 128


def offsets_shown(frame: np.ndarray, offsets: np.ndarray, sigma: float = SIGMA) -> Optional[float]:
    """How much of the column ``offsets`` being removed a frame itself still carries: the
    least-squares gain ``g = <s, o> / <o, o>`` of the frame's column signature ``s`` (its column
    means over at most :data:`SHOWN_ROWS` evenly spaced rows, high-passed along the row by the
    Gaussian of σ ``sigma`` that :func:`column_pattern` uses) on the offsets ``o`` (high-passed the
    same way), over the columns where ``s`` is an inlier (:func:`_inliers`: a pole or a hot object's
    edge is scene). An FPA's offsets are fixed between flat-field corrections, so a frame of the
    same FPA reads g ≈ 1 (more while they drift further, fewer as they settle); after an FFC that
    renewed them it reads g ≈ 0. Subtracting ``o`` lowers the frame's column-signature energy
    (``|s − o|² < |s|²``) exactly when g > 1/2: below that the offsets do more harm than good.

    Args:
        frame: (H, W) float32 model input in [0, 1] (any real dtype).
        offsets: (W,) float32 column offsets in the frame's units (:attr:`FPNGate.offsets`).
        sigma: σ in pixels of the row-wise high-pass (> 0).

    Returns:
        g (float), or None when it cannot be measured: another width than the offsets', fewer than
        :data:`MIN_COLUMNS` columns, a value that is not finite, or offsets with no energy.
    """
    x = np.asarray(frame, dtype=np.float32)
    o = np.asarray(offsets, dtype=np.float32).ravel()
    if x.ndim != 2 or x.shape[1] != o.size or o.size < MIN_COLUMNS:
        return None
    step = max(1, x.shape[0] // SHOWN_ROWS)
    s = x[::step].mean(axis=0, dtype=np.float64)
    if not (np.isfinite(s).all() and np.isfinite(o).all()):
        return None
    s, o = (row_highpass(v.astype(np.float64)[None, :], sigma)[0] for v in (s, o))
    keep = _inliers(s - o)   # the residual after removing the offsets: what is left is scene (and noise)
    energy = float((o[keep] * o[keep]).sum())
    if not energy > 1e-18:
        return None
    return float((s[keep] * o[keep]).sum()) / energy


#: a dead column is flat along its height: its standard deviation below this share of its
#: neighbours' (which carry the scene)
DEAD_FLAT = 0.1
#: … and its median far from its neighbours': beyond this many robust standard deviations of the
#: columns' differences from their neighbours
DEAD_FAR = 6.0


def repair_dead_columns(frame: np.ndarray) -> Tuple[np.ndarray, int]:
    """Replace the frame's dead columns by the mean of their two neighbours: what the router is
    shown, so that a dead column does not hide a degradation from it (an emulated camera with one
    dead column reading 0 had 3 of 12 contrast-degraded frames called clean; docs/cameras.md
    "Session 11", K5). A column is dead when it is flat along its height (standard deviation under
    :data:`DEAD_FLAT` × the median of its four nearest neighbours') and its median is far from
    theirs (beyond :data:`DEAD_FAR` robust standard deviations of every column's difference from
    its neighbours): a readout line stuck at one value, which no scene draws (measured on every 4th
    row). On 1,376 val frames of eight sets, clean and under each of the seven degradations, it
    repaired none. The restored output keeps what this one-frame test finds: a stream's dead and
    stuck read-outs are replaced before any of this, from the camera's own frames over time
    (edge/defects.py, the pipeline's Preprocess stage), and this test covers a camera's first
    frames, before that map has its evidence.

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float32 frame in [0, 1].

    Returns:
        (the frame with its dead columns replaced, float32, the shape of ``frame``: ``frame``
        itself when none; the number replaced). Frames under 8 rows or 5 columns, or holding a
        value that is not finite, are returned as they are.

    Raises:
        ValueError: the frame is not a single 2-D image.
    """
    arr = np.asarray(frame, dtype=np.float32)
    x = one_frame(arr, "repair_dead_columns")
    h, w = x.shape
    if w < 5 or h < 8 or not np.isfinite(x).all():
        return arr, 0
    rows = x[::4] if h >= 32 else x
    spread, level = rows.std(axis=0), np.median(rows, axis=0)

    def neighbours(v: np.ndarray) -> np.ndarray:   # median of the two columns on either side
        p = np.pad(v, 2, mode="edge")
        return np.median(np.stack([p[0:w], p[1:w + 1], p[3:w + 3], p[4:w + 4]]), axis=0)

    near_spread = neighbours(spread)
    diff = level - neighbours(level)
    robust = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) + 1e-6
    dead = np.flatnonzero((spread < DEAD_FLAT * near_spread) & (np.abs(diff) > DEAD_FAR * robust))
    if dead.size == 0:
        return arr, 0
    out = x.copy()
    for j in dead:
        out[:, j] = 0.5 * (x[:, max(j - 1, 0)] + x[:, min(j + 1, w - 1)])
    return out.reshape(arr.shape), int(dead.size)


def _periodicity(signature: np.ndarray) -> float:
    """The largest autocorrelation of the signature (mean removed, normalised by its energy)
    at lags :data:`MIN_LAG` .. W/4; 0 for a flat signature."""
    v = signature.astype(np.float64) - float(signature.mean())
    energy = float((v * v).sum())
    w = v.size
    top = max(w // 4, MIN_LAG + 1)
    if energy <= 1e-18 or w <= MIN_LAG:
        return 0.0
    spec = np.fft.rfft(v, 2 * w)
    ac = np.fft.irfft(spec * np.conj(spec))[:w] / energy
    return float(ac[MIN_LAG:top].max())


def _inliers(v: np.ndarray, k: float = OUTLIER) -> np.ndarray:
    """Mask of the entries of ``v`` within its median ± ``k`` robust standard deviations
    (1.4826 × MAD)."""
    med = float(np.median(v))
    return np.abs(v - med) <= k * 1.4826 * float(np.median(np.abs(v - med))) + 1e-12


def carries_fpn(pattern: ColumnPattern, amplitude: float = AMPLITUDE, consistency: float = CONSISTENCY,
                periodicity: float = PERIODICITY) -> bool:
    """True when the pattern is the column FPN of an uncalibrated FPA: amplitude and consistency
    at or above their thresholds, and periodicity below its own (a periodic signature is scene)."""
    return (pattern.amplitude >= amplitude and pattern.consistency >= consistency
            and pattern.periodicity < periodicity)


def steps_key(steps: Sequence[dict]) -> tuple:
    """An order-free identity of a spec's steps (list of op dicts): two tasks with the same steps
    in any order have the same key. Used to pair tasks by their parts (this gate, the blur gate)."""
    return tuple(sorted(repr(sorted(s.items())) for s in steps))


def noise_partners(specs: Mapping[str, Sequence[dict]]) -> Dict[str, str]:
    """Each task without fixed-pattern noise (and ``clean``) -> the task that is the same
    degradation plus the bundle's noise part.

    The noise part is the steps of the smallest task with an :data:`FPN_OPS` step (the single
    ``noise`` task of the shipped specs). A task's partner is the task whose steps are its own
    plus the noise part (order-free); ``clean`` and ``unknown`` map to the noise task itself.

    Args:
        specs: task name -> its spec's steps (list of op dicts, as bundles store them).

    Returns:
        {task: partner}; empty when no task carries fixed-pattern noise. A task whose steps plus
        the noise part match no task is left out (the gate never touches it).
    """
    carrying = {n: s for n, s in specs.items() if any(st.get("op") in FPN_OPS for st in s)}
    if not carrying:
        return {}
    noise = min(carrying, key=lambda n: (len(carrying[n]), n))
    part = list(carrying[noise])
    by_steps = {steps_key(s): n for n, s in carrying.items()}
    out = {CLEAN: noise, UNKNOWN: noise}
    for name, steps in specs.items():
        if name in carrying:
            continue
        partner = by_steps.get(steps_key(list(steps) + part))
        if partner is not None:
            out[name] = partner
    return out


def _counts_per_unit(scale) -> Optional[float]:
    """``scale`` (counts one frame unit stands for, :meth:`FPNGate.step`) as a float, or None when it
    is absent, not finite or not positive (a display-referred frame)."""
    return float(scale) if scale is not None and np.isfinite(scale) and scale > 0.0 else None


class FPNGate:
    """Adds the noise part to verdicts on frames that carry column FPN, and the noise task to an
    unknown verdict on a frame whose white noise is clearly above the camera's floor.

    Args:
        partners: {task without FPN: task with it} (:func:`noise_partners`).
        amplitude: amplitude threshold, fraction of the scene span (> 0).
        consistency: consistency threshold, in (−1, 1).
        periodicity: periodicity threshold, in (0, 1].
        white_sigma: the weakest white noise of the bundle's specs (:func:`min_white_sigma`, frame
            units, > 0), or None: white noise not judged.
        noise_free: verdicts whose frames join the camera's white-noise floor (default ``clean``).

    Raises:
        ValueError: a threshold outside its range.
    """

    def __init__(self, partners: Mapping[str, str], amplitude: float = AMPLITUDE,
                 consistency: float = CONSISTENCY, periodicity: float = PERIODICITY,
                 white_sigma: Optional[float] = None, noise_free: Sequence[str] = (CLEAN,)):
        if not float(amplitude) > 0.0 or not -1.0 < float(consistency) < 1.0 or not 0.0 < float(periodicity) <= 1.0:
            raise ValueError(f"FPN gate thresholds: amplitude > 0, consistency in (-1, 1) and periodicity in "
                             f"(0, 1], got {amplitude}, {consistency}, {periodicity}")
        if white_sigma is not None and not float(white_sigma) > 0.0:
            raise ValueError(f"FPN gate white_sigma must be > 0 or None, got {white_sigma}")
        self.partners = dict(partners)
        self.amplitude = float(amplitude)
        self.consistency = float(consistency)
        self.periodicity = float(periodicity)
        self.white_sigma = None if white_sigma is None else float(white_sigma)
        self.noise_free = frozenset(noise_free)
        self.floor: deque = deque(maxlen=FLOOR_WINDOW)
        #: (σ₁, σ₂/σ₁) (:func:`flat_noise_sigmas`) of the floor's frames whose σ₁ is at least half the
        #: specs' weakest white noise: the shape of the camera's own noise (:meth:`own_shape`)
        self.shapes: deque = deque(maxlen=FLOOR_WINDOW)
        #: the white-noise σ of every routed frame, whatever its verdict: the camera's floor while
        #: fewer than MIN_FLOOR_FRAMES frames were called noise-free (:meth:`floor_sigma`)
        self.seen: deque = deque(maxlen=FLOOR_WINDOW)
        #: the floor's frames' white-noise σ in the camera's counts (σ₁ × the counts one frame unit
        #: stood for, :meth:`step`'s ``scale``): Y16 (scene-referred) frames only (:meth:`counts_limit`)
        self.floor_counts: deque = deque(maxlen=FLOOR_WINDOW)
        #: the counts one frame unit stands for in the frame being judged (None: display-referred)
        self.scale: Optional[float] = None
        #: noise-carrying verdicts given back, or unknown ones not made the noise task, because the
        #: frame's white noise in counts was the camera's own though it read above it in frame units
        #: (a low-span scene stretched by the normaliser; :meth:`counts_limit`)
        self.own_counts = 0
        self.checked = 0
        self.promoted = 0
        self.promoted_white = 0
        #: noise-carrying verdicts on frames whose white noise is the camera's own (no column FPN)
        #: given back their partner without the noise part
        self.demoted_white = 0
        #: of the verdicts given back or kept on the camera's own noise (demoted_white, destriped, unknown
        #: verdicts not made the noise task), those whose σ₁ was above the camera's own but whose
        #: noise had the camera's own shape (:meth:`own_shape`)
        self.own_shaped = 0
        #: verdicts kept on frames whose column FPN came without white noise above the camera's
        #: own (:meth:`fpn_only_threshold`): the column offsets are removed instead
        #: (:func:`remove_column_fpn`), the frame is not given to the noise task
        self.destriped = 0
        #: noise-carrying verdicts given back their partner without noise because the camera had no
        #: white-noise floor yet while the restorer warmed up (:meth:`hold_unmeasured`)
        self.held = 0
        #: the column offsets of the last routed frame when it carries column FPN alone (W,) float32
        #: (:func:`column_offsets`; the restorer subtracts them from the frames until the next
        #: verdict: an FPA's offsets are fixed), else None
        self.offsets: Optional[np.ndarray] = None
        self._without_noise = {with_: without for without, with_ in self.partners.items() if without != UNKNOWN}
        #: the camera's white-noise floor is pinned: routed frames no longer join it (frames of its
        #: healthy look were shown with :meth:`add`; engines/restorer.py ``pin_camera``)
        self.pinned = False
        #: (σ₁ of the last frame :meth:`step` measured, the camera's :meth:`floor_sigma` before the
        #: frame joined it, the robust σ of the σ₁ that floor is the median of, the specs' weakest
        #: white noise :attr:`white_sigma`), frame units; None
        #: when the frame or the floor was not measured
        self.last_noise: Optional[Tuple[float, float, float, float]] = None
        self.last: ColumnPattern = NO_PATTERN
        self.last_sigma: Optional[float] = None

    @classmethod
    def for_bundle(cls, specs: Mapping[str, Sequence[dict]]) -> "FPNGate":
        """The gate of a bundle: partners and the weakest white noise from its task specs; the
        camera's floor from frames under the ``clean`` verdict (module docstring)."""
        return cls(noise_partners(specs), white_sigma=min_white_sigma(specs), noise_free=(CLEAN,))

    def white_threshold(self) -> Optional[float]:
        """σ above which an unknown verdict's frame carries white noise for this camera:
        √(high² + (white_sigma/2)²), high :meth:`floor_high`; None before
        :data:`MIN_FLOOR_FRAMES` frames or without ``white_sigma``."""
        return self._above_floor(0.25)

    def own_noise_threshold(self) -> Optional[float]:
        """σ at or under which a noise-carrying verdict's frame carries only the camera's own
        white noise: √(high² + white_sigma²/2), high :meth:`floor_high`: the midpoint in variance
        between what the camera's own frames reach and that plus the specs' weakest noise; None
        when :meth:`white_threshold` is."""
        return self._above_floor(0.5)

    @property
    def without_noise(self) -> Dict[str, str]:
        """{noise-carrying task: its partner without the noise part} (the inverse of
        :attr:`partners`, ``unknown`` left out): where a verdict goes when the gate takes its noise
        part away (the camera's own noise, or column FPN alone)."""
        return dict(self._without_noise)

    def fpn_only_threshold(self) -> Optional[float]:
        """σ at or under which a frame that carries column FPN carries no more white noise than
        the camera's own: :meth:`own_noise_threshold`, or before the camera's floor is known
        (a camera whose every frame carries FPN never shows a noise-free one) the same with a
        floor of 0, white_sigma/√2: below the specs' weakest noise by the same midpoint in
        variance. None without ``white_sigma`` (then column FPN always takes the noise part)."""
        if self.white_sigma is None:
            return None
        own = self.own_noise_threshold()
        return own if own is not None else math.sqrt(0.5) * self.white_sigma

    def floor_sigma(self) -> Tuple[Optional[float], Optional[str]]:
        """(the camera's white-noise floor σ in frame units, where it comes from): the median σ of the
        frames under noise-free verdicts (``"clean"``) once there are :data:`MIN_FLOOR_FRAMES` of
        them; before that the median σ of every routed frame (``"routed"``) once there are as many;
        else (None, None).

        Why the second (K8, docs/cameras.md "Session 12"): a camera whose every frame the router
        calls noisy never shows a noise-free verdict. A Boson-class camera's detail enhancement
        (DDE) reads as 3.7-6.7 grey levels of white noise on its clean frames, the spec's weakest
        noise is 5; an NETD-limited camera carries 3.5 in every frame. Without a floor the gate
        let the noise task run on every frame of them in ``tir run`` (0 of 96 frames passed
        through). What a camera shows in every frame is its own look: the noise a degradation
        adds is measured above it."""
        if len(self.floor) >= MIN_FLOOR_FRAMES:
            return float(np.median(self.floor)), "clean"
        if len(self.seen) >= MIN_FLOOR_FRAMES:
            return float(np.median(self.seen)), "routed"
        return None, None

    def floor_counts_sigma(self) -> Optional[float]:
        """The camera's white-noise floor in its own count steps: the median of :attr:`floor_counts`
        (σ₁ of the frames under noise-free verdicts, each times the count steps one frame unit stood
        for, Y16 frames only) once there are :data:`MIN_FLOOR_FRAMES` of them; else None (a
        display-referred camera, or too few frames). Whether the camera's own noise dithers its
        counts (engines/restorer.py ``Restorer._keep_blur_tone``) is read against it."""
        if len(self.floor_counts) < MIN_FLOOR_FRAMES:
            return None
        return float(np.median(self.floor_counts))

    def floor_high(self) -> Optional[float]:
        """The white noise the camera's own frames reach (frame units), what the thresholds are
        measured above: the :data:`FLOOR_HIGH_PERCENTILE` th percentile σ of the frames under
        noise-free verdicts once :meth:`floor_sigma` comes from them, the median of every routed
        frame while it comes from those (they hold degraded frames too: only their middle is the
        camera's); None before a floor exists.

        Why not the median of the noise-free frames (session 13, K2): a camera's own white noise is
        not one number. A per-frame AGC stretches a low-span scene's noise with it and a DDE
        camera's enhancement varies with the scene: on the emulated 80×60 Lepton, the DDE camera
        and a Y16 indoor camera the clean frames' σ spread 1.5-5.2 grey levels about a median of
        3-3.7, so the clean frames of the noisier scenes read above the midpoint to the spec's
        weakest noise and kept the noise task.

        Once it comes from the noise-free frames it is at least the median σ of every routed frame
        (the camera's look on half of what it shows, K8's principle), as far as that median is
        itself the camera's own by the noise-free frames' measure (at most √(p90² + white_sigma²/2),
        the own-noise threshold they set; :meth:`routed_reach`). Why (session 21): the floor holds
        only the frames the router calls clean, and the router calls a camera's most textured own
        frames noise, the very ones the σ reads highest: on the emulated radiometric 80×60 Lepton
        (``lepton25_y16_80x60``) the clean frames read 1.9-6.2 grey levels on their flattest blocks
        (an 80×60 frame's flattest quarter still holds scene), the four the router called clean
        1.9-3.9 (90th percentile 3.35, threshold 4.87), and two called noise (5.6, 6.2) were given the
        noise task, 24-26 dB from themselves; the median of every routed frame was 4.5."""
        if len(self.floor) >= MIN_FLOOR_FRAMES:   # floor_sigma's "clean" case
            high = float(np.percentile(self.floor, FLOOR_HIGH_PERCENTILE))
            routed = self.routed_reach(high)
            return high if routed is None else max(high, routed)
        return self.floor_sigma()[0]

    def routed_reach(self, high: float) -> Optional[float]:
        """The median σ of every routed frame (:attr:`seen`, frame units), capped at
        √(high² + white_sigma²/2) (the own-noise threshold the noise-free frames' ``high`` sets: a
        median above it is not the camera's own by their measure, and a raise past it would let each
        raise lift the next); None before :data:`MIN_FLOOR_FRAMES` routed frames or without
        ``white_sigma``.

        The cap bounds what routed frames can do to the thresholds: white noise at least the specs'
        weakest on a frame at the noise-free frames' ``high`` (σ² ≥ high² + white_sigma²) stays
        above :meth:`own_noise_threshold` (√(cap² + white_sigma²/2) = the same), however long a
        degradation lasts in the window of :data:`FLOOR_WINDOW` routed frames."""
        if self.white_sigma is None or len(self.seen) < MIN_FLOOR_FRAMES:
            return None
        return min(float(np.median(self.seen)), math.sqrt(high ** 2 + 0.5 * self.white_sigma ** 2))

    def _above_floor(self, share: float) -> Optional[float]:
        """√(high² + share·white_sigma²), high :meth:`floor_high`; None before it exists or
        without ``white_sigma``."""
        high = self.floor_high()
        if self.white_sigma is None or high is None:
            return None
        return math.sqrt(high ** 2 + share * self.white_sigma ** 2)

    def counts_limit(self, share: float, scale: Optional[float] = None) -> Optional[float]:
        """The same threshold as :meth:`_above_floor` with the camera's floor taken in its counts
        (Y16 frames, session 19): √((high_c / scale)² + share·white_sigma²), high_c the
        :data:`FLOOR_HIGH_PERCENTILE` th percentile of :attr:`floor_counts` and ``scale`` the counts
        one frame unit of the frame being judged stands for (``scale``: a frame's own, as
        :meth:`step` takes it; None: the last routed frame's, :attr:`scale`); frame units. None for a
        display-referred frame (no scale), before :data:`MIN_FLOOR_FRAMES` floor frames in
        counts, or without ``white_sigma``.

        Why: a microbolometer's temporal noise is a property of the sensor in counts (its NETD over
        its responsivity), whatever the scene; the live normaliser stretches each raw frame's
        0.5-99.5 % range to [0, 1], so a low-span scene (or a contrast loss in counts) shows the
        same sensor noise larger in frame units. On flir_raw16_mixed's val frames the clean frames
        read 5-22 counts of white noise; a 382-count scene's 6.7 counts read 0.0175 of the frame,
        above every other frame's, and the frame was given the noise task (docs/cameras.md
        "Session 19"). The specs' noise is added to what the display shows, so its part
        (``share``·white_sigma²) stays in frame units."""
        per_unit = self.scale if scale is None else _counts_per_unit(scale)
        if self.white_sigma is None or per_unit is None or len(self.floor_counts) < MIN_FLOOR_FRAMES:
            return None
        high = float(np.percentile(self.floor_counts, FLOOR_HIGH_PERCENTILE)) / per_unit
        return math.sqrt(high ** 2 + share * self.white_sigma ** 2)

    def own_shape(self) -> Optional[float]:
        """The σ₂/σ₁ (:func:`flat_noise_sigmas`) the camera's own noise keeps where it is strong, at
        its whitest: the (100 − :data:`FLOOR_HIGH_PERCENTILE`)th percentile over the :attr:`shapes`
        of the floor's frames whose σ₁ is at least the floor's median σ₁ (and half the specs'
        weakest noise) once there are :data:`MIN_FLOOR_FRAMES` of them and it is at least
        :data:`SHAPED_RATIO`; else None (the camera's own noise is white, too weak to read a shape
        from, or not yet measured: the σ thresholds alone judge).

        Why (docs/cameras.md "Session 18", K21): a camera's own noise is not one number, and the
        floor is built from the frames the router calls clean, so it never holds the camera's
        noisiest scenes: those are the ones it calls noise. On a DDE camera at its top setting their
        σ₁ (12.6-13.3 grey levels) lay above the own-noise threshold (10.7-11.0 in ``tir eval``),
        and they were restored 19-20 dB away from themselves. Their noise has the camera's shape (σ₂/σ₁ 1.68-1.86 against its
        clean frames' 1.51 at the tenth percentile), which white noise added downstream of the
        camera pulls toward 1 (the spec's noise on the same camera: 0.9-1.35 where σ₁ kept the
        noise task). Only frames whose σ₁ is at least half the specs' weakest noise give a shape:
        below that an 8-bit frame's MAD moves in steps of 0.74 grey levels and their ratio is the
        quantisation's (1.0-2.5 on clean frames of 1-2 grey levels). Only the camera's noisier half
        gives it: its quiet scenes show mostly its sensor's white noise, its noisy ones mostly the
        texture its processing amplified (the DDE camera: σ₁ 5.2 at σ₂/σ₁ 1.14, σ₁ 8.9-10.4 at
        1.75-1.96), and the frames judged by it are the ones above every σ threshold."""
        if self.white_sigma is None or len(self.shapes) < MIN_FLOOR_FRAMES or len(self.floor) < MIN_FLOOR_FRAMES:
            return None
        middle = float(np.median(self.floor))
        noisier = [ratio for sigma, ratio in self.shapes if sigma >= middle]
        if len(noisier) < MIN_FLOOR_FRAMES:
            return None
        low = float(np.percentile(noisier, 100.0 - FLOOR_HIGH_PERCENTILE))
        return low if low >= SHAPED_RATIO else None

    def _own_shaped(self, sigmas: Optional[Tuple[float, Optional[float]]]) -> bool:
        """Whether a frame of white-noise σ (σ₁, σ₂) (:meth:`_sigmas`) shows the camera's own noise
        shape: σ₂/σ₁ at least :meth:`own_shape`."""
        own = self.own_shape()
        if own is None or sigmas is None or sigmas[1] is None or not sigmas[0] > 0.0:
            return False
        return sigmas[1] / sigmas[0] >= own

    def _record(self, sigmas: Tuple[float, Optional[float]]) -> None:
        """Add a frame of the camera's own look to its floor (σ₁) and, when its σ₁ is at least half
        the specs' weakest noise and σ₂ was measured, its shape (σ₂/σ₁) to :attr:`shapes`."""
        sigma, sigma2 = sigmas
        self.floor.append(sigma)
        if self.scale is not None:
            self.floor_counts.append(sigma * self.scale)
        if sigma2 is not None and self.white_sigma is not None and sigma >= 0.5 * self.white_sigma and sigma > 0.0:
            self.shapes.append((sigma, sigma2 / sigma))

    @staticmethod
    def _measurable(frame: np.ndarray) -> Optional[np.ndarray]:
        """The (H, W) frame when its white noise can be measured; None when it is not finite or
        under 2 px on a side."""
        x = one_frame(frame, "FPNGate")
        return None if min(x.shape) < 2 or not np.isfinite(x).all() else x

    def _sigmas(self, frame: np.ndarray) -> Optional[Tuple[float, Optional[float]]]:
        """(σ₁, σ₂ or None) of :func:`flat_noise_sigmas` on the frame's centre window; None for a
        frame that is not finite or under 2 px."""
        x = self._measurable(frame)
        return None if x is None else flat_noise_sigmas(centre_window(x))

    def add(self, frame: np.ndarray, scale: Optional[float] = None) -> Optional[float]:
        """Record a frame the camera delivered (unlabeled, taken as noise-free: e.g. the frames
        shown before an evaluation) in its white-noise floor.

        Args:
            frame: (H, W) float32 model input in [0, 1].
            scale: the counts one unit of ``frame`` stands for (Y16 frames; :meth:`step`), or None.

        Returns:
            Its white-noise σ (frame units), or None when not measured (no ``white_sigma``, or a
            value that is not finite)."""
        if self.white_sigma is None:
            return None
        sigmas = self._sigmas(frame)
        if sigmas is None:
            return None
        self.scale = _counts_per_unit(scale)
        self._record(sigmas)
        return sigmas[0]

    def step(self, task: str, frame: np.ndarray, scale: Optional[float] = None) -> Tuple[str, bool]:
        """One routed frame: (``task`` with the noise part added when the frame carries column
        FPN with white noise above :meth:`fpn_only_threshold` and ``task`` has a partner, counted
        in :attr:`promoted`; ``task`` itself (a noise-carrying ``task``: its partner without the
        noise part) with the column :attr:`offsets` to remove when its column FPN comes without
        such white noise, counted in :attr:`destriped`; or the noise task when
        ``task`` is ``unknown`` and the frame's white noise is above :meth:`white_threshold`,
        counted in :attr:`promoted_white`, else ``task``; whether the noise part was measured).
        A frame under a noise-free verdict joins the camera's white-noise floor (unless it is
        :attr:`pinned`).

        Args:
            task: the verdict so far (a task, ``clean`` or ``unknown``).
            frame: (H, W) float32 model input in [0, 1] (:func:`column_pattern`).
            scale: the counts (in the camera's count steps) one unit of ``frame`` stands for, for a
                Y16 (scene-referred) frame: its normaliser's ``hi − lo`` over its count step; None
                for a display-referred one (8-bit: the camera's AGC ran). With it the frame's white
                noise is also judged against the camera's floor in counts (:meth:`counts_limit`).
        """
        self.scale = _counts_per_unit(scale)
        # one assignment once the frame is measured: a status read meanwhile (the stats thread)
        # sees the last verdict's offsets, not none
        task, fpn, self.offsets = self._step(task, frame)
        return task, fpn

    def _step(self, task: str, frame: np.ndarray) -> Tuple[str, bool, Optional[np.ndarray]]:
        """:meth:`step`, with the column offsets the frame gives (None: none to remove)."""
        self.checked += 1
        self.last, sigs = _measure(frame)
        # every routed frame's white noise, judged against the camera's history before it joins it
        sigmas = None if self.white_sigma is None else self._sigmas(frame)
        # the frame's σ₁ and the camera's floor before the frame joins it: the
        # contrast gate's noise test (engines/contrast_gate.py ``ContrastGate.noise_kept``, K23)
        floor, source = self.floor_sigma()
        self.last_noise = None if sigmas is None or floor is None else (
            float(sigmas[0]), floor, iqr_sigma(self.floor if source == "clean" else self.seen),
            self.white_sigma)
        verdict = self._judge(task, sigs, sigmas)
        if sigmas is not None and not self.pinned:
            self.seen.append(sigmas[0])
        return verdict

    def shows_own_noise(self, frame: np.ndarray, scale: Optional[float] = None,
                        latched: bool = False) -> Optional[bool]:
        """Whether a frame between verdicts shows no more white noise than the camera's own
        frames reach: σ₁ (:func:`flat_noise_sigma` on the centre quarter of the window
        :meth:`step` measures) at or under :meth:`floor_high`, or, for a Y16 frame (``scale``: the counts one unit of
        ``frame`` stands for, :meth:`step`), at or under the same reach in counts
        (:meth:`counts_limit` with no share of the specs' noise). Nothing is recorded or counted:
        the camera's history learns from routed frames only.

        ``latched`` (the frames before it were let go, engines/restorer.py ``Restorer._released``):
        the verdicts' own bound instead, :meth:`own_noise_threshold` (and :meth:`counts_limit` at
        the same share): a Schmitt trigger, so a stream whose noise hovers about the reach is not
        restored and let go on alternate frames.

        Stricter than the verdicts' own-noise rule (:meth:`own_noise_threshold`, the midpoint in
        variance to the specs' weakest noise): a frame carrying the specs' weakest white noise
        ``white_sigma`` on top of its own reads σ₁ ≥ ``white_sigma``, so above the reach wherever
        the camera's own noise reaches less than that, and a frame on the border between a
        degradation and the camera's look keeps the route rather than flicker between the two.

        Args:
            frame: (H, W) float32 model input in [0, 1].
            scale: counts per frame unit (Y16), or None (display-referred).

        Returns:
            True or False; None when it cannot be judged: no ``white_sigma``, no floor yet
            (:data:`MIN_FLOOR_FRAMES`), the last routed frame carried column FPN (its noise part is
            the FPA's, fixed over frames: the verdicts judge it), or the frame is not finite.
        """
        share = 0.5 if latched else 0.0
        limit = self._above_floor(share)   # None without white_sigma or before the floor exists
        if limit is None or carries_fpn(self.last, self.amplitude, self.consistency, self.periodicity):
            return None
        x = self._measurable(frame)
        if x is None:
            return None
        # σ₁ alone on the centre quarter of the measured window: the same per-pixel statistic on
        # a quarter of the blocks (~1 ms at 640×512 against ~4 ms for both σ on the whole window,
        # which cost the default stream about 2 fps when checked on every frame; docs/BENCHMARKS.md
        # "Session 23"); a crop's flattest blocks are no flatter, so it reads no lower
        window = centre_window(x)
        sigma = flat_noise_sigma(centre_window(window, (max(window.shape[1] // 2, 2), max(window.shape[0] // 2, 2))))
        if sigma <= limit:
            return True
        # a display-referred frame (no scale) has no counts to judge in
        counts = None if _counts_per_unit(scale) is None else self.counts_limit(share, scale=scale)
        return counts is not None and bool(sigma <= counts)

    def _own(self, sigmas: Tuple[float, Optional[float]], limit: float, share: Optional[float] = None) -> bool:
        """Whether a frame's white noise (σ₁, σ₂) is the camera's own: σ₁ at or under ``limit``, or,
        for a Y16 frame, at or under the same threshold with the camera's floor in counts
        (:meth:`counts_limit` at ``share``; counted in :attr:`own_counts`), or above both with the
        camera's own shape (:meth:`own_shape`; counted in :attr:`own_shaped`)."""
        if sigmas[0] <= limit:
            return True
        counts = None if share is None else self.counts_limit(share)
        if counts is not None and sigmas[0] <= counts:
            self.own_counts += 1
            return True
        if self._own_shaped(sigmas):
            self.own_shaped += 1
            return True
        return False

    def _judge(self, task: str, sigs, sigmas: Optional[Tuple[float, Optional[float]]]) -> Tuple[str, bool, Optional[np.ndarray]]:
        """:meth:`_step` after the measures: ``sigs`` the frame's band signatures, ``sigmas`` its
        white-noise (σ₁, σ₂) (:meth:`_sigmas`; None: not measured)."""
        self.last_sigma = None
        sigma = None if sigmas is None else sigmas[0]
        fpn = carries_fpn(self.last, self.amplitude, self.consistency, self.periodicity)
        if fpn and (task in self.partners or task in self._without_noise):
            limit = self.fpn_only_threshold()
            self.last_sigma = None if limit is None else sigma
            if self.last_sigma is not None and self._own(sigmas, limit, 0.5):
                # column FPN without the white noise of the noise part: the offsets alone are removed,
                # and a noise-carrying verdict loses its noise part (the router's or the gate's)
                self.destriped += 1
                return self._without_noise.get(task, task), False, column_offsets(sigs)
            if task in self._without_noise:
                return task, True, None
            self.promoted += 1
            return self.partners[task], True, None
        limit = self.white_threshold() if task == UNKNOWN else \
            self.own_noise_threshold() if task in self._without_noise else None
        if task in self.noise_free:
            # the camera's floor (measured only, while it is pinned)
            self.last_sigma = sigma
            if sigmas is not None and not self.pinned:
                self._record(sigmas)
        elif limit is not None:
            self.last_sigma = sigma
        if limit is None or self.last_sigma is None:
            return task, fpn, None
        if task == UNKNOWN and task in self.partners and not self._own(sigmas, limit, 0.25):
            self.promoted_white += 1
            return self.partners[task], True, None
        if task in self._without_noise and not fpn and self._own(sigmas, limit, 0.5):
            # the frame's white noise is the camera's own and it carries no column FPN: nothing to remove
            self.demoted_white += 1
            return self._without_noise[task], False, None
        return task, fpn, None

    def hold_unmeasured(self, task: str) -> str:
        """``task`` without its noise part, counted in :attr:`held`; ``task`` itself when it has no
        noise part. Called by the restorer (engines/restorer.py ``Restorer._gate``) on a verdict
        :meth:`step` judged while the camera had no white-noise floor (:meth:`floor_sigma` None
        before the step) and whose noise part it did not measure (no column FPN, no white noise
        promotion), while the restorer warms up after the start or a camera change.

        Why: the noise part of such a verdict is the router's word alone, and the gate cannot yet
        tell the camera's own noise (a DDE or NETD-limited camera reads as noisy) from an added
        one; an uncertain decision falls back to pass-through (issue "any thermal camera", item 4).
        Measured on a clean DDE camera met cold: the noise task ran on its first 12 frames before
        the floor existed (docs/cameras.md session 14). What it costs: a camera noisy from its
        first frame has those frames passed through, and its floor then comes from its noisy
        frames (K8), which it would have had anyway."""
        partner = self.without_noise.get(task)
        if partner is None:
            return task
        self.held += 1
        return partner

    def restart(self) -> bool:
        """Forget the camera's white-noise floor (``floor``, ``seen``) and the column offsets: another
        camera, or the same one in another state (engines/restorer.py ``Restorer.new_camera``: a
        reconnect, a new frame size), has its own noise in frame units,
        and the old floor judged the new camera's own noise as a degradation (or hid a real one).
        Counters stay. A pinned floor (``tir run --reference``) is the user's statement and stays.

        Returns:
            True when the history was forgotten, False when it is pinned."""
        if self.pinned:
            return False
        self.floor.clear()
        self.floor_counts.clear()
        self.shapes.clear()
        self.seen.clear()
        self.offsets = None
        return True

    def carry_from(self, old: "FPNGate") -> None:
        """Take over ``old``'s counters, the camera's white-noise floor and the column offsets it
        measured (a bundle hot-swap, engines/hotswap.py: the camera is the same)."""
        self.checked += int(old.checked)
        self.promoted += int(old.promoted)
        self.promoted_white += int(old.promoted_white)
        self.demoted_white += int(getattr(old, "demoted_white", 0))
        self.own_shaped += int(getattr(old, "own_shaped", 0))
        self.destriped += int(getattr(old, "destriped", 0))
        self.held += int(getattr(old, "held", 0))
        self.own_counts += int(getattr(old, "own_counts", 0))
        self.floor.extend(old.floor)
        self.floor_counts.extend(getattr(old, "floor_counts", ()))
        self.shapes.extend(getattr(old, "shapes", ()))
        self.seen.extend(getattr(old, "seen", ()))
        # the FPA's column offsets measured on the old bundle's last verdict still hold (the camera is
        # the same); without them the frames up to the next verdict keep their stripes
        self.offsets = getattr(old, "offsets", None)
        self.pinned = self.pinned or bool(getattr(old, "pinned", False))

    def status(self) -> dict:
        """``amplitude``, ``consistency`` and ``periodicity`` of the last routed frame, the
        thresholds, ``checked`` frames and ``promoted`` verdicts; ``white_sigma`` (the last
        measured frame's white noise σ, fraction of full scale, or None), ``white_threshold``
        (None before the camera's floor exists), ``white_floor_from`` (``"clean"``: frames under
        noise-free verdicts, ``"routed"``: every routed frame, None: no floor yet;
        :meth:`floor_sigma`), ``promoted_white`` (unknown verdicts made
        the noise task), ``demoted_white`` (noise-carrying verdicts on frames whose white noise
        is the camera's own, without column FPN, given back their partner without noise) and
        ``held`` (noise-carrying verdicts given back their partner without noise before the camera
        had a floor, :meth:`hold_unmeasured`) and ``own_counts`` (verdicts given back or kept on a
        Y16 frame whose white noise was the camera's own in counts, :meth:`counts_limit`)."""
        limit, own = self.white_threshold(), self.own_shape()
        return {"amplitude": round(self.last.amplitude, 5), "consistency": round(self.last.consistency, 3),
                "periodicity": round(self.last.periodicity, 3),
                "amplitude_threshold": round(self.amplitude, 5), "consistency_threshold": self.consistency,
                "periodicity_threshold": self.periodicity, "checked": self.checked, "promoted": self.promoted,
                "white_sigma": None if self.last_sigma is None else round(self.last_sigma, 5),
                "white_threshold": None if limit is None else round(limit, 5),
                "white_floor_from": self.floor_sigma()[1],
                "promoted_white": self.promoted_white, "demoted_white": self.demoted_white,
                "own_shape": None if own is None else round(own, 3), "own_shaped": self.own_shaped,
                "own_counts": self.own_counts,
                "destriped": self.destriped, "destripe": self.offsets is not None, "held": self.held}
