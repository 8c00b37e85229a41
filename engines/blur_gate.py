"""Blur is relative to the camera: keep a blur verdict on a noise-free frame only when the frame
is softer than what this camera delivers.

Why (docs/cameras.md, "Session 8"): how much fine detail a frame holds depends on the camera (its
optics, its resolution, its scenes) as much as on a blur. A router that learned "sharp" from
road scenes reads a sky camera's clean frames as blurred: with the router trained without the
Anti-UAV camera every contrast-degraded frame of it was called CB and its clean frames were
called unknown. What tells a blurred frame from a soft camera is, as for contrast
(engines/contrast_gate.py), the camera's own history.

The measure. :func:`band_ratio` is the log of the energy of the fine band (Gaussian σ 1 − σ 2)
over the energy of the next band (σ 2 − σ 4), two difference-of-Gaussian bands an octave apart.
A contrast change scales both bands alike (the ratio is contrast-free). The white noise of the
frame's value quantisation (variance q²/12 for a step q: 1/255 on an 8-bit frame) is taken out of
both bands first: a contrast loss on an 8-bit frame keeps the step and shrinks the detail, so
without this a low-contrast blurred frame read sharper than it is. The ratio itself depends on
the scene as much as on a blur (its spread over one camera's clean frames was as wide as the
effect of the mildest blur), so the gate's measure is the **drop** (:func:`blur_drop`): how much
a further blur of σ_min (the mildest blur of the bundle's specs, 1 px for the shipped ``blur``
spec, ecmrnet.md §1.3) lowers the ratio. A sharp frame loses much of its fine band to it; a frame
that is already blurred has less there to lose. Measured on the val splits of three cameras
(docs/cameras.md, "Session 8"): the drop of clean frames stayed within ±0.08 of the camera's
median, blurred frames (σ 1-2) sat +0.08 to +0.29 above it.

Per camera the gate keeps the drops of recent routed frames under a noise-free verdict and the
drops of the same frames blurred by σ_min first. A blur only softens (raises the drop), it never
sharpens, so the camera's **reference** is the low end of each history, its 25th percentile
(:data:`REFERENCE_PERCENTILE`; it holds while up to three quarters of the recent frames are
blurred). A frame is **soft** when its drop is above the mid-point of the two: half-way
between "as the camera delivers it" and "the camera's frames with the mildest blur" (the rule of
the contrast gate's √α and the FPN gate's amplitude, here in the log-ratio domain).

The gate demotes a blur verdict on a frame that is not soft to its partner without the blur part
(blur → clean, CB → contrast; partners from the bundle's specs). It acts only on tasks whose other
steps are contrast steps: additive noise raises the fine band more than any blur lowers it (measured:
noise frames read +0.6 to +1.5 in the log ratio), so a noise-carrying verdict is left to the
router, and a frame under a noise-carrying verdict does not join the camera's history. It never
promotes (do no harm: a missed blur leaves the frame as the camera delivered it), and it stays
silent until it has seen :data:`MIN_FRAMES` frames of the camera.

numpy + OpenCV only (runtime).
"""
from __future__ import annotations

import functools
import math
from collections import deque
from typing import Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .contrast_gate import noise_free_tasks, one_frame
from .fpn_gate import steps_key
from .router import CLEAN

#: the degradation op the gate judges (engines/degrade.py)
BLUR_OP = "blur"
#: Gaussian σ (px) of the band edges: fine band σ0 − σ1, coarse band σ1 − σ2, an octave apart
BAND_SIGMAS = (1.0, 2.0, 4.0)
#: the smallest frame side the coarse band can be measured on (≥ 2 × 3σ2 + 1 px)
MIN_SIDE = 2 * int(math.ceil(3 * BAND_SIGMAS[-1])) + 1
#: routed frames the camera's median is taken over (as the contrast gate's window)
DEFAULT_WINDOW = 512
#: frames of the camera the gate must have seen before it judges a verdict
MIN_FRAMES = 8
#: σ of the mildest blur when a bundle's specs state no blur range (the shipped ``blur`` spec's)
DEFAULT_SIGMA_MIN = 1.0
#: percentile of the history that is the camera's reference: a blur only softens a frame (its
#: drop rises), never sharpens it, so the camera's own sharpness is the low end of its history;
#: the 25th percentile holds while up to three quarters of the history is blurred
REFERENCE_PERCENTILE = 25.0
#: (width, height) px of the centred window the gate measures on larger frames
MEASURE_WINDOW = (640, 512)
#: the mildest blur's drop is measured on every DROP_EVERY-th recorded frame (its median moves
#: slowly; it costs as much as the ratio itself)
DROP_EVERY = 4
#: band energies below this (squared [0, 1] units) are a flat frame: nothing to measure
MIN_ENERGY = 1e-10


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    k = 2 * int(math.ceil(3 * float(sigma))) + 1   # ±3σ taps
    return cv2.GaussianBlur(x, (k, k), float(sigma), borderType=cv2.BORDER_REFLECT)


@functools.lru_cache(maxsize=8)
def _band_gains(pre_sigma: float = 0.0) -> Tuple[float, float]:
    """Σh² of the fine and the coarse band filters (after a Gaussian pre-blur of ``pre_sigma`` px,
    0: none): the share of a white noise's variance each band passes."""
    d = np.zeros((8 * int(BAND_SIGMAS[-1] + pre_sigma + 1) + 1,) * 2, np.float32)
    d[d.shape[0] // 2, d.shape[1] // 2] = 1.0
    if pre_sigma > 0:
        d = _blur(d, pre_sigma)
    g = [_blur(d, s) for s in BAND_SIGMAS]
    return float(((g[0] - g[1]) ** 2).sum()), float(((g[1] - g[2]) ** 2).sum())


def quantum(x: np.ndarray) -> float:
    """The frame's value step: the smallest positive difference between the values of every 4th
    pixel of every 4th row (1/255 for an 8-bit frame scaled to [0, 1]; ~0 for float data).

    Args:
        x: (H, W) float32 frame.

    Returns:
        The step in the frame's units (≥ 0; 0 for a flat frame)."""
    v = np.unique(x[::4, ::4])
    d = np.diff(v)
    d = d[d > 0]
    return float(d.min()) if d.size else 0.0


def _ratio(x: np.ndarray, step: float, pre_sigma: float = 0.0) -> Optional[float]:
    """The band ratio of ``x`` (already blurred by ``pre_sigma`` px when > 0), the white noise of
    the original frame's value ``step`` (variance step²/12, through the same filters) taken out
    of each band."""
    g = [_blur(x, s) for s in BAND_SIGMAS]
    fine, coarse = (float(cv2.meanStdDev(cv2.subtract(a, b))[1][0, 0]) ** 2 for a, b in ((g[0], g[1]), (g[1], g[2])))
    gain_fine, gain_coarse = _band_gains(float(pre_sigma))
    noise = step * step / 12.0
    fine, coarse = fine - noise * gain_fine, coarse - noise * gain_coarse
    if fine < MIN_ENERGY or coarse < MIN_ENERGY:
        return None
    return math.log(fine / coarse)


def _measurable(frame: np.ndarray, name: str) -> Optional[np.ndarray]:
    x = one_frame(frame, name)
    return x if min(x.shape) >= MIN_SIDE and np.isfinite(x).all() else None


def _window(x: np.ndarray) -> np.ndarray:
    """The centred :data:`MEASURE_WINDOW` of a larger frame (the frame itself when it fits): the
    gate's cost per routed frame stays that of a 640×512 frame at any resolution, and the camera's
    references are measured on the same window."""
    h, w = x.shape
    mw, mh = MEASURE_WINDOW
    top, left = max((h - mh) // 2, 0), max((w - mw) // 2, 0)
    return x[top:top + mh, left:left + mw]


def _constant(frame: np.ndarray) -> bool:
    """True for a finite frame of one value (a lens cap, a dead or saturated sensor, an all-zero
    frame): it holds no detail at any scale."""
    x = one_frame(frame, "BlurGate")
    return x.size > 0 and bool(np.isfinite(x).all()) and float(x.min()) == float(x.max())


def band_ratio(frame: np.ndarray) -> Optional[float]:
    """The log ratio of fine-band to coarse-band energy of one frame (module docstring).

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1].

    Returns:
        log(var(G_1 x − G_2 x) / var(G_2 x − G_4 x)) (σ in px, reflect borders), each band's
        energy less what the frame's value quantisation (:func:`quantum`, white, variance
        q²/12) puts into it; None for a frame with a side under :data:`MIN_SIDE` px, a
        non-finite value or a flat band (nothing to measure).

    Raises:
        ValueError: the frame is not a single 2-D image.
    """
    x = _measurable(frame, "band_ratio")
    return None if x is None else _ratio(x, quantum(x))


def _ratios(x: np.ndarray, sigma: float, step: float, n: int) -> list:
    """The band ratios of x, G_σ x, G_σ G_σ x, … (``n`` of them, each blur taken once), the value
    ``step``'s noise taken out through the filters applied so far; shorter when one cannot be
    measured (the rest are not computed)."""
    out, y = [], x
    for k in range(n):
        if k:
            y = _blur(y, sigma)
        r = _ratio(y, step, sigma * math.sqrt(k))
        if r is None:
            break
        out.append(r)
    return out


def blur_drop(frame: np.ndarray, sigma: float = DEFAULT_SIGMA_MIN) -> Optional[float]:
    """How much a further blur of ``sigma`` px lowers the frame's :func:`band_ratio`: the gate's
    measure. Negative for a frame with detail; the softer the frame already is, the less a
    further blur takes away (the drop is closer to 0).

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1].
        sigma: σ of the further blur in px (> 0).

    Returns:
        The drop in the log band ratio; None when either ratio cannot be measured.

    Raises:
        ValueError: the frame is not a single 2-D image, or ``sigma`` ≤ 0.
    """
    if not float(sigma) > 0.0:
        raise ValueError(f"blur_drop needs sigma > 0, got {sigma}")
    x = _measurable(frame, "blur_drop")
    r = [] if x is None else _ratios(x, float(sigma), quantum(x), 2)
    return r[1] - r[0] if len(r) == 2 else None


def blur_partners(specs: Mapping[str, Sequence[dict]]) -> Dict[str, str]:
    """Each task that is a blur plus only contrast steps -> the same task without the blur
    (``clean`` when nothing is left).

    Args:
        specs: task name -> its spec's steps (list of op dicts, as bundles store them).

    Returns:
        {task: partner}; a task with noise (any step outside the contrast gate's
        ``NOISE_FREE_OPS``: contrast, blur), or whose remaining steps match no task, is left out:
        the gate never touches it.
    """
    by_steps = {steps_key(steps): name for name, steps in specs.items()}
    by_steps[()] = CLEAN
    noise_free = set(noise_free_tasks(specs))
    out = {}
    for name, steps in specs.items():
        if name not in noise_free or BLUR_OP not in [s.get("op") for s in steps]:
            continue
        partner = by_steps.get(steps_key([s for s in steps if s.get("op") != BLUR_OP]))
        if partner is not None:
            out[name] = partner
    return out


def min_blur_sigma(specs: Mapping[str, Sequence[dict]]) -> float:
    """The smallest blur σ (px) over the ``blur`` steps of ``specs`` (their ``sigma`` range's low
    end; :data:`DEFAULT_SIGMA_MIN` when none states one)."""
    found = [float(s["sigma"][0]) for steps in specs.values() for s in steps
             if s.get("op") == BLUR_OP and isinstance(s.get("sigma"), (list, tuple)) and float(s["sigma"][0]) > 0]
    return min(found) if found else DEFAULT_SIGMA_MIN


class BlurGate:
    """The camera's reference drop and the demotion of blur verdicts on frames that are not soft
    for this camera (module docstring).

    Args:
        partners: {blur task: partner without the blur} (:func:`blur_partners`).
        sigma_min: σ (px) of the mildest blur, the further blur of the measure and of the
            threshold (> 0).
        window: routed frames the camera's medians are taken over (≥ 1).
        min_frames: frames needed before the gate judges (≥ 1).

    Raises:
        ValueError: ``sigma_min`` ≤ 0, ``window`` < 1 or ``min_frames`` < 1.
    """

    def __init__(self, partners: Mapping[str, str], sigma_min: float = DEFAULT_SIGMA_MIN,
                 window: int = DEFAULT_WINDOW, min_frames: int = MIN_FRAMES):
        if not float(sigma_min) > 0.0 or int(window) < 1 or int(min_frames) < 1:
            raise ValueError(f"blur gate needs sigma_min > 0, window ≥ 1 and min_frames ≥ 1, got "
                             f"{sigma_min}, {window}, {min_frames}")
        self.partners = dict(partners)
        self.sigma_min = float(sigma_min)
        self.min_frames = int(min_frames)
        self.drops: deque = deque(maxlen=int(window))
        self.blurred_drops: deque = deque(maxlen=max(int(window) // DROP_EVERY, 1))
        self.demoted = 0
        self.last: Optional[float] = None
        self._noise_free = {CLEAN, *self.partners, *self.partners.values()}

    @classmethod
    def for_bundle(cls, specs: Mapping[str, Sequence[dict]]) -> "BlurGate":
        """The gate of a bundle: partners and σ_min from its task specs."""
        return cls(blur_partners(specs), min_blur_sigma(specs))

    def threshold(self) -> Optional[float]:
        """The mid-point of the camera's reference drop and the reference drop of its frames with
        the mildest blur, each the :data:`REFERENCE_PERCENTILE` of its history (module
        docstring); None before :attr:`min_frames` frames."""
        if len(self.drops) < self.min_frames or not self.blurred_drops:
            return None
        return 0.5 * (float(np.percentile(self.drops, REFERENCE_PERCENTILE))
                      + float(np.percentile(self.blurred_drops, REFERENCE_PERCENTILE)))

    def _measure(self, frame: np.ndarray) -> Optional[float]:
        x = _measurable(frame, "BlurGate")
        if x is None:
            return None
        x = _window(x)
        # x, G_σ x and (every DROP_EVERY-th frame, for the blurred reference) G_σ G_σ x, each once
        blurred_too = len(self.drops) % DROP_EVERY == 0 or not self.blurred_drops
        r = _ratios(x, self.sigma_min, quantum(x), 3 if blurred_too else 2)
        if len(r) < 2:
            return None
        drop = r[1] - r[0]
        if blurred_too:
            if len(r) < 3:
                return drop
            self.blurred_drops.append(r[2] - r[1])
        self.drops.append(drop)
        return drop

    def add(self, frame: np.ndarray) -> Optional[float]:
        """Record one frame of the camera: its drop (:func:`blur_drop`), and on every
        :data:`DROP_EVERY`-th frame the drop of the frame with the mildest blur. Returns the
        frame's drop (None: not measurable, not recorded).

        Raises:
            ValueError: the frame is not a single 2-D image.
        """
        return self._measure(frame)

    def step(self, task: str, frame: np.ndarray) -> Tuple[str, bool]:
        """One routed frame: (``task``, or its partner when ``task`` carries a blur the frame
        does not show, counted in :attr:`demoted`; whether the frame is soft for this camera).
        The threshold is the history's before this frame joins it. A frame that cannot be
        measured (or is not measured: under a noise-carrying verdict, or ``unknown``; frames
        larger than :data:`MEASURE_WINDOW` are measured on its centred window), or a camera not
        yet seen for :attr:`min_frames` frames, keeps ``task``
        (and counts as soft), except a constant frame (one finite value, any size: a lens cap,
        a dead sensor): it holds no detail for a blur to have taken or a deblur to restore, so
        a blur verdict on it loses its blur part at once (the shipped router calls an
        all-zero frame ``blur`` with confidence 0.97). The frame joins the camera's history only under a noise-free
        verdict (``clean``, a blur task the gate judges or its partner): noise changes the
        bands, and a reference made of noisy frames is not the camera's.

        Args:
            task: the verdict so far (a task, ``clean`` or ``unknown``).
            frame: (H, W) float32 model input in [0, 1].

        Raises:
            ValueError: the frame is not a single 2-D image.
        """
        limit = self.threshold()
        # a noise-carrying verdict is neither judged nor recorded: not measured at all
        self.last = self._measure(frame) if task in self._noise_free else None
        soft = limit is None or self.last is None or self.last > limit
        if self.last is None and task in self.partners and _constant(frame):
            soft = False   # no detail at all: nothing a blur took away, nothing a deblur can restore
        if not soft and task in self.partners:
            self.demoted += 1
            return self.partners[task], False
        return task, soft

    def carry_from(self, old: "BlurGate") -> None:
        """Take over ``old``'s camera history and demoted count (a bundle hot-swap: the camera is
        the same). The history is taken only when both measure with the same σ_min: drops
        measured with another further blur are another quantity (a new bundle whose specs start
        at a milder blur starts its history afresh, silent for :attr:`min_frames` frames)."""
        if float(old.sigma_min) == self.sigma_min:
            self.drops.extend(old.drops)
            self.blurred_drops.extend(old.blurred_drops)
        self.demoted += int(old.demoted)

    def status(self) -> dict:
        """``drop`` of the last routed frame (None: not measurable), ``threshold`` (None before
        :attr:`min_frames`), ``frames`` in the history, ``demoted`` verdicts."""
        limit = self.threshold()
        return {"drop": None if self.last is None else round(self.last, 4),
                "threshold": None if limit is None else round(limit, 4),
                "frames": len(self.drops), "demoted": self.demoted}
