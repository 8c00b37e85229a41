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

A frame **carries column FPN** when its amplitude is at least :data:`AMPLITUDE` and its
consistency at least :data:`CONSISTENCY`. :data:`AMPLITUDE` is the geometric mean of the column
FPN left on NUC'd cameras (≤ 0.5 % of the span, docs/cameras.md) and the weakest column FPN the
``sensor_fpn`` op draws (1.5 %, the low end of what was measured on non-NUC'd frames): half-way,
in the log domain, between "corrected" and "uncorrected", as the contrast gate's ratio is.

Then the verdict gains the bundle's noise part (:func:`noise_partners`: clean or unknown →
noise, contrast → CN, blur → BN, CB → CBN; derived from the task specs, so a task ``tir learn``
adds is handled the same way). It never removes a verdict's noise part and never acts on a frame
without the signature; the router decides everything else.

numpy + OpenCV only (runtime).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, NamedTuple, Sequence, Tuple

import cv2
import numpy as np

from .router import CLEAN, UNKNOWN

#: σ in pixels of the 1-D Gaussian (along each row) whose residual is the horizontal high-pass
SIGMA = 2.0
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


class ColumnPattern(NamedTuple):
    """One frame's column signature: ``amplitude`` (fraction of the scene span, ≥ 0) and
    ``consistency`` (median band-to-band correlation, in [−1, 1]; 0 for a flat frame)."""
    amplitude: float
    consistency: float


def column_pattern(frame: np.ndarray, bands: int = BANDS, sigma: float = SIGMA) -> ColumnPattern:
    """Measure the column fixed-pattern noise of one frame (module docstring).

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1]; H ≥
            ``bands`` and W ≥ 2.
        bands: horizontal bands whose signatures are correlated (≥ 2).
        sigma: σ in pixels of the row-wise Gaussian of the high-pass (> 0).

    Returns:
        :class:`ColumnPattern`.

    Raises:
        ValueError: the frame is not a single 2-D image, is smaller than ``bands`` × 2, or
            ``bands`` < 2 or ``sigma`` ≤ 0.
    """
    x = np.asarray(frame, dtype=np.float32)
    x = x.reshape(x.shape[-2:]) if x.ndim > 2 and int(np.prod(x.shape[:-2])) == 1 else x
    if x.ndim != 2:
        raise ValueError(f"column_pattern expects one (H, W) frame, got shape {np.shape(frame)}")
    if int(bands) < 2 or not float(sigma) > 0.0:
        raise ValueError(f"column_pattern needs bands ≥ 2 and sigma > 0, got {bands}, {sigma}")
    h, w = x.shape
    if h < int(bands) or w < 2:
        raise ValueError(f"column_pattern needs a frame of at least {bands}×2 pixels, got {h}×{w}")
    k = 2 * int(math.ceil(3 * sigma)) + 1
    high = x - cv2.GaussianBlur(x, (k, 1), sigmaX=float(sigma), sigmaY=0, borderType=cv2.BORDER_REFLECT)
    sigs = [np.median(b, axis=0) for b in np.array_split(high, int(bands), axis=0)]
    signature = np.median(np.stack(sigs), axis=0)   # median of the bands' column medians
    lo, hi = np.percentile(x[::4, ::4], (1.0, 99.0))
    amplitude = 1.4826 * float(np.median(np.abs(signature - np.median(signature)))) / max(float(hi - lo), MIN_SPAN)
    keep = np.logical_and.reduce([_inliers(v) for v in sigs])
    if keep.sum() < max(8, keep.size // 2):   # mostly scene: no pattern to speak of
        return ColumnPattern(amplitude, 0.0)
    kept = [v[keep] for v in sigs]
    corr = []
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            a, b = kept[i] - kept[i].mean(), kept[j] - kept[j].mean()
            den = float(np.sqrt((a * a).sum() * (b * b).sum()))
            corr.append(float((a * b).sum()) / den if den > 1e-12 else 0.0)
    return ColumnPattern(amplitude, float(np.median(corr)))


def _inliers(v: np.ndarray, k: float = OUTLIER) -> np.ndarray:
    """Mask of the entries of ``v`` within its median ± ``k`` robust standard deviations
    (1.4826 × MAD)."""
    med = float(np.median(v))
    return np.abs(v - med) <= k * 1.4826 * float(np.median(np.abs(v - med))) + 1e-12


def carries_fpn(pattern: ColumnPattern, amplitude: float = AMPLITUDE, consistency: float = CONSISTENCY) -> bool:
    """True when the pattern is the column FPN of an uncalibrated FPA (both thresholds met)."""
    return pattern.amplitude >= amplitude and pattern.consistency >= consistency


def _key(steps: Sequence[dict]) -> tuple:
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
    by_steps = {_key(s): n for n, s in carrying.items()}
    out = {CLEAN: noise, UNKNOWN: noise}
    for name, steps in specs.items():
        if name in carrying:
            continue
        partner = by_steps.get(_key(list(steps) + part))
        if partner is not None:
            out[name] = partner
    return out


class FPNGate:
    """Adds the noise part to verdicts on frames that carry column FPN.

    Args:
        partners: {task without FPN: task with it} (:func:`noise_partners`).
        amplitude: amplitude threshold, fraction of the scene span (> 0).
        consistency: consistency threshold, in (−1, 1).

    Raises:
        ValueError: a threshold outside its range.
    """

    def __init__(self, partners: Mapping[str, str], amplitude: float = AMPLITUDE,
                 consistency: float = CONSISTENCY):
        if not float(amplitude) > 0.0 or not -1.0 < float(consistency) < 1.0:
            raise ValueError(f"FPN gate thresholds: amplitude > 0 and consistency in (-1, 1), "
                             f"got {amplitude}, {consistency}")
        self.partners = dict(partners)
        self.amplitude = float(amplitude)
        self.consistency = float(consistency)
        self.checked = 0
        self.promoted = 0
        self.last: ColumnPattern = ColumnPattern(0.0, 0.0)

    @classmethod
    def for_bundle(cls, specs: Mapping[str, Sequence[dict]]) -> "FPNGate":
        """The gate of a bundle: partners from its task specs (module docstring)."""
        return cls(noise_partners(specs))

    def step(self, task: str, frame: np.ndarray) -> Tuple[str, bool]:
        """One routed frame: (``task`` with the noise part added when the frame carries column
        FPN and ``task`` has a partner, counted in :attr:`promoted`, else ``task``; whether the
        frame carries column FPN).

        Args:
            task: the verdict so far (a task, ``clean`` or ``unknown``).
            frame: (H, W) float32 model input in [0, 1] (:func:`column_pattern`).
        """
        self.checked += 1
        self.last = column_pattern(frame)
        fpn = carries_fpn(self.last, self.amplitude, self.consistency)
        if fpn and task in self.partners:
            self.promoted += 1
            return self.partners[task], True
        return task, fpn

    def carry_from(self, old: "FPNGate") -> None:
        """Take over ``old``'s counters (a bundle hot-swap, engines/hotswap.py)."""
        self.checked += int(old.checked)
        self.promoted += int(old.promoted)

    def status(self) -> dict:
        """``amplitude`` and ``consistency`` of the last routed frame, the thresholds, ``checked``
        frames and ``promoted`` verdicts."""
        return {"amplitude": round(self.last.amplitude, 5), "consistency": round(self.last.consistency, 3),
                "amplitude_threshold": round(self.amplitude, 5), "consistency_threshold": self.consistency,
                "checked": self.checked, "promoted": self.promoted}
