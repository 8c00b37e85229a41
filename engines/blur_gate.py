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
the contrast gate's √α and the FPN gate's amplitude, here in the log-ratio domain). A camera's
sharpness drifts (focus, scenes): when its last :data:`MIN_FRAMES` frames are softer than its
history, the reference follows them up to a quarter of the interval (:meth:`BlurGate.drift`,
docs/cameras.md "Session 19").

The gate demotes a blur verdict on a frame that is not soft to its partner without the blur part
(blur → clean, CB → contrast; partners from the bundle's specs). It never promotes a noise-free
verdict (do no harm: a missed blur leaves the frame as the camera delivered it), and it stays
silent until it has seen :data:`MIN_FRAMES` frames of the camera.

**Under noise.** Additive noise raises the fine band more than any blur lowers it (measured:
noise frames read +0.6 to +1.5 in the log ratio), and the noise spec's row/column stripes sit in
the fine band too. So a noise-carrying verdict of a blur pair (BN/noise, CBN/CN:
:func:`noisy_blur_partners`) is judged on another measure, :func:`noisy_blur_drop`: the same drop
on the frame at half resolution (2×2 area average: white noise σ/2), destriped
(:func:`destripe`: row and column medians of the high-pass out), with the frame's own white noise
(:func:`noise_sigma`, the MAD estimator on the finest diagonal Haar detail, in which row and
column offsets cancel) taken out of both bands as the value step's noise is above. The camera's
references for it come from the same frames as the noise-free ones (frames under noise-free
verdicts, measured both ways), so a noisy frame is compared with the camera's own clean detail.
The noise-carrying verdict takes the blur part (noise → BN, CN → CBN) when the frame's measure is
in the quarter of the interval nearest the blurred reference, loses it (BN → noise, CBN → CN)
in the quarter nearest the reference, and keeps the router's call in the middle half
(:data:`NOISY_MARGIN`): the measure is noisier than without noise. On a frame whose detail is
all noise (a band's energy not above the noise's), it is not measured and the router's call stands.
Measured on val and on held-out cameras: docs/cameras.md, "Session 9" (it loses on the raw set
that mixes 19 FLIR models and three sizes in one folder: there "the camera's history" is a mixture).

numpy + OpenCV only (runtime).
"""
from __future__ import annotations

import functools
import math
from collections import deque
from typing import Dict, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .contrast_gate import MEASURE_WINDOW, centre_window, noise_free_tasks, one_frame
from .fpn_gate import noise_sigma, steps_key
from .resampling import enlargement
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
#: the mildest blur's drop is measured on every DROP_EVERY-th recorded frame (its median moves
#: slowly; it costs as much as the ratio itself)
DROP_EVERY = 4
#: band energies below this (squared [0, 1] units) are a flat frame: nothing to measure
MIN_ENERGY = 1e-10
#: σ (px) of the blur whose residual is the high-pass :func:`destripe` takes row and column medians of
DESTRIPE_SIGMA = 2.0
#: under noise the gate decides only outside the middle half of the interval between the camera's
#: reference and its blurred reference (each quarter of it nearest a reference decides)
NOISY_MARGIN = 0.25
#: :meth:`BlurGate.drift`: the camera's reference follows its recent frames up to this share of the
#: interval between its reference and its blurred reference (the quarter :data:`NOISY_MARGIN`
#: counts as the camera's sharp look), so the threshold stays below the blurred reference
DRIFT_MARGIN = NOISY_MARGIN


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """``x`` ((H, W) float32) blurred by the isotropic Gaussian of σ ``sigma`` px (±3σ taps,
    reflected at the borders), the same shape and dtype."""
    k = 2 * int(math.ceil(3 * float(sigma))) + 1   # ±3σ taps
    return cv2.GaussianBlur(x, (k, k), float(sigma), borderType=cv2.BORDER_REFLECT)


@functools.lru_cache(maxsize=8)
def _band_gains(pre_sigma: float = 0.0) -> Tuple[float, float]:
    """Σh² of the fine and the coarse band filters (after a Gaussian pre-blur of ``pre_sigma`` px,
    0: none): the share of a white noise's variance each band passes."""
    d = np.zeros((8 * int(BAND_SIGMAS[-1] + pre_sigma + 1) + 1,) * 2, np.float32)
    d[d.shape[0] // 2, d.shape[1] // 2] = 1.0
    if pre_sigma > 0:
        d = gaussian_blur(d, pre_sigma)
    g = [gaussian_blur(d, s) for s in BAND_SIGMAS]
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


def _ratio(x: np.ndarray, noise_var: float, pre_sigma: float = 0.0) -> Optional[float]:
    """The band ratio of ``x`` (already blurred by ``pre_sigma`` px when > 0), a white noise of
    variance ``noise_var`` in the original frame (through the same filters) taken out of each
    band."""
    g = [gaussian_blur(x, s) for s in BAND_SIGMAS]
    fine, coarse = (float(cv2.meanStdDev(cv2.subtract(a, b))[1][0, 0]) ** 2 for a, b in ((g[0], g[1]), (g[1], g[2])))
    gain_fine, gain_coarse = _band_gains(float(pre_sigma))
    fine, coarse = fine - noise_var * gain_fine, coarse - noise_var * gain_coarse
    # a flat band, or NaN: values near float32's limit overflow the filters
    if not (fine >= MIN_ENERGY and coarse >= MIN_ENERGY):
        return None
    r = math.log(fine / coarse)
    return r if math.isfinite(r) else None


def _measurable(frame: np.ndarray, name: str) -> Optional[np.ndarray]:
    x = one_frame(frame, name)
    return x if min(x.shape) >= MIN_SIDE and np.isfinite(x).all() else None


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
        non-finite value (or values near float32's limit, 3.4e38, that overflow the filters)
        or a flat band (nothing to measure).

    Raises:
        ValueError: the frame is not a single 2-D image.
    """
    x = _measurable(frame, "band_ratio")
    return None if x is None else _ratio(x, quantum(x) ** 2 / 12.0)


def _ratios(x: np.ndarray, sigma: float, noise_var: float, n: int) -> list:
    """The band ratios of x, G_σ x, G_σ G_σ x, … (``n`` of them, each blur taken once), a white
    noise of variance ``noise_var`` in x taken out through the filters applied so far; shorter
    when one cannot be measured (the rest are not computed)."""
    out, y = [], x
    for k in range(n):
        if k:
            y = gaussian_blur(y, sigma)
        r = _ratio(y, noise_var, sigma * math.sqrt(k))
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
    r = [] if x is None else _ratios(x, float(sigma), quantum(x) ** 2 / 12.0, 2)
    return r[1] - r[0] if len(r) == 2 else None


def destripe(x: np.ndarray) -> np.ndarray:
    """The frame without its row and column offsets (stripe noise, an uncalibrated FPA's column
    FPN): the median over each column of the frame's high-pass (the frame less its Gaussian
    σ :data:`DESTRIPE_SIGMA` blur) is subtracted from that column, then the median over each row
    of what is left. A median, so a scene's vertical edge (a pole) crossing part of a column stays.

    Args:
        x: (H, W) float32 frame.

    Returns:
        (H, W) float32.

    Raises:
        ValueError: ``x`` is not one 2-D frame, is empty or holds a non-finite value."""
    x = one_frame(x, "destripe")
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError(f"destripe needs a non-empty frame of finite values, got shape {x.shape}"
                         f"{'' if x.size == 0 else ' with NaN or infinite values'}")
    hp = cv2.subtract(x, gaussian_blur(x, DESTRIPE_SIGMA))
    col = np.median(hp, axis=0)[None, :]
    row = np.median(hp - col, axis=1)[:, None]
    return (x - col - row).astype(np.float32)


def _half_res(frame: np.ndarray, name: str) -> Optional[np.ndarray]:
    """The frame's centred :data:`MEASURE_WINDOW`, area-averaged 2×2 and destriped (:func:`destripe`);
    None when a side would be under :data:`MIN_SIDE` or a value is not finite (or overflows the 2×2 mean)."""
    x = one_frame(frame, name)
    if min(x.shape) < 2 * MIN_SIDE or not np.isfinite(x).all():
        return None
    x = centre_window(x)
    half = cv2.resize(x, (x.shape[1] // 2, x.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return destripe(half) if np.isfinite(half).all() else None   # values near float32's limit overflow the mean


def _noisy_ratios(x: np.ndarray, step: float, sigma: float, n: int) -> list:
    """:func:`_ratios` of a half-resolution frame (:func:`_half_res`) with its white noise (:func:`noise_sigma`,
    and the full-resolution value ``step``'s q²/12 averaged over 4 pixels) taken out."""
    return _ratios(x, sigma, noise_sigma(x) ** 2 + step * step / 48.0, n)


def noisy_blur_drop(frame: np.ndarray, sigma: float = DEFAULT_SIGMA_MIN) -> Optional[float]:
    """The gate's measure under noise (module docstring): :func:`blur_drop` of the frame at half
    resolution, destriped, with its estimated white noise taken out of both bands.

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1].
        sigma: σ of the further blur in half-resolution px (> 0).

    Returns:
        The drop in the log band ratio; None when the frame is too small (a side under
        2 × :data:`MIN_SIDE` px), not finite (or so large its filters overflow), or its detail is
        all noise (a band's energy is not above the noise's).

    Raises:
        ValueError: the frame is not a single 2-D image, or ``sigma`` ≤ 0.
    """
    if not float(sigma) > 0.0:
        raise ValueError(f"noisy_blur_drop needs sigma > 0, got {sigma}")
    x = _half_res(frame, "noisy_blur_drop")
    r = [] if x is None else _noisy_ratios(x, quantum(one_frame(frame, "noisy_blur_drop")), float(sigma), 2)
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
    noise_free = set(noise_free_tasks(specs))
    return {t: p for t, p in _without_blur(specs).items() if t in noise_free}


def _without_blur(specs: Mapping[str, Sequence[dict]]) -> Dict[str, str]:
    """Each task with a blur step -> the task whose steps are its own without the blur (``clean``
    when nothing is left); tasks without such a partner are left out."""
    by_steps = {steps_key(steps): name for name, steps in specs.items()}
    by_steps[()] = CLEAN
    out = {}
    for name, steps in specs.items():
        if BLUR_OP in [s.get("op") for s in steps]:
            partner = by_steps.get(steps_key([s for s in steps if s.get("op") != BLUR_OP]))
            if partner is not None:
                out[name] = partner
    return out


def noisy_blur_partners(specs: Mapping[str, Sequence[dict]]) -> Dict[str, str]:
    """Each task that carries noise (a step outside the contrast gate's ``NOISE_FREE_OPS``) and a
    blur -> the same task without the blur (BN → noise, CBN → CN for the shipped specs).

    Args:
        specs: task name -> its spec's steps (list of op dicts, as bundles store them).

    Returns:
        {task: partner}; a task whose remaining steps match no task is left out."""
    noise_free = set(noise_free_tasks(specs))
    return {t: p for t, p in _without_blur(specs).items() if t not in noise_free and p not in noise_free}


def min_blur_sigma(specs: Mapping[str, Sequence[dict]]) -> float:
    """The smallest blur σ (px) over the ``blur`` steps of ``specs`` (their ``sigma`` range's low
    end; :data:`DEFAULT_SIGMA_MIN` when none states one)."""
    found = [float(s["sigma"][0]) for steps in specs.values() for s in steps
             if s.get("op") == BLUR_OP and isinstance(s.get("sigma"), (list, tuple)) and float(s["sigma"][0]) > 0]
    return min(found) if found else DEFAULT_SIGMA_MIN


def _step_sigma(step: Mapping) -> float:
    """The largest σ (px) one ``blur`` step applies: its ``sigma`` range's high end (or single
    value), else the op's own default range's (engines/degrade.py ``BlurParams``: what the step
    draws when it states none)."""
    sigma = step.get("sigma")
    values = sigma if isinstance(sigma, (list, tuple)) else [] if sigma is None else [sigma]
    found = [float(v) for v in values if float(v) > 0]
    if found:
        return max(found)
    if values:   # stated, and none of it blurs (σ 0)
        return 0.0
    from .degrade import BlurParams
    return float(max(BlurParams.__dataclass_fields__["sigma"].default))


def blur_only_tasks(specs: Mapping[str, Sequence[dict]]) -> Dict[str, float]:
    """{task: the strongest blur σ (px) its own steps apply} for each task whose steps are blurs
    alone (``blur``): its restoration only undoes a blur (a compound with contrast or noise parts
    changes the frame's tone by design). Each task is held to the blur it was trained to undo, not
    to another task's: a learned task (``tir learn``) of σ up to 9 px would otherwise loosen the
    shipped σ ≤ 2 route's bound (:func:`blur_keeps_tone`) four-fold. Successive Gaussian blurs
    compose into one of σ = √(Σ σᵢ²), so a task of several blur steps is held to that of their
    strongest; a step that states no σ draws the op's default range (σ ≤ 2 px). A task whose
    steps blur by nothing (σ 0) is left out.

    Args:
        specs: {task: its spec's steps (dicts with ``op`` and the op's parameters)}.

    Returns:
        {task: σ in px (> 0)}; empty when no task is blur-only.
    """
    out = {}
    for task, steps in specs.items():
        if not steps or not all(s.get("op") == BLUR_OP for s in steps):
            continue
        sigma = math.sqrt(sum(_step_sigma(s) ** 2 for s in steps))
        if sigma > 0.0:
            out[task] = sigma
    return out


#: :func:`blur_keeps_tone`: the low-pass the tone is compared on has σ this many times the specs'
#: largest blur σ (a Gaussian of σ_b leaves a low-pass of σ 4·σ_b nearly as it was: √(16 + 1) σ_b)
TONE_SCALE = 4.0
#: :func:`blur_keeps_tone`: the move of the tone is measured on an area average over blocks of
#: this side (enough for a low-pass of σ ≥ 4 px)
TONE_STRIDE = 4


def blur_reach(x: np.ndarray, sigma: float) -> float:
    """The RMS change the strongest blur makes to a frame, ``rms(x − G_sigma(x))``: what a blur of
    σ ≤ ``sigma`` px could take from ``x`` ((H, W) float32, frame units), so the most a deblur may
    give back (:func:`blur_keeps_tone`, :func:`blur_below_step`). Float, ``x``'s units."""
    return float(np.sqrt(np.mean(np.square(x - gaussian_blur(x, float(sigma))), dtype=np.float64)))


def blur_keeps_tone(frame: np.ndarray, restored: np.ndarray, sigma: float) -> bool:
    """Whether a blur restoration of ``frame`` kept its tone, as undoing a blur must: a Gaussian
    blur of σ ≤ ``sigma`` (the strongest its task applies) keeps every region's mean, so the frame's low-pass
    at σ :data:`TONE_SCALE` × ``sigma`` is the sharp scene's, and a deblur that restores the scene
    leaves it where it is. The restoration is taken as a deblur while the RMS move of its low-pass,
    ``rms(L(restored − frame))``, is at most the RMS change the strongest blur makes to the frame
    at all, ``rms(frame − G_sigma(frame))`` (what a blur could have taken, so the most a deblur
    may give back). Measured (docs: K17, the blur task's frames of ``tir eval``): the blur route
    moves RoadScene's and anti-UAV's val frames' low-pass by 0.04-0.33 of that, a fixed-gain
    camera's posterised frames' (8-20 grey levels, where a blur moves a pixel by a fraction of a
    level) by 7-17: the route lifted their tone and they came out 6.8 dB further from the scene
    than they went in.

    Args:
        frame: (H, W) float32 model input in [0, 1] (what the route restored).
        restored: (H, W) float32 route output, the frame's shape.
        sigma: the strongest blur σ in px the route undoes (> 0; :func:`blur_only_tasks`).

    Returns:
        True when the tone was kept (and for a frame under :data:`TONE_STRIDE` pixels along a
        side: too small to measure).

    Raises:
        ValueError: the two are not single 2-D images of one shape, or ``sigma`` ≤ 0.
    """
    x = np.asarray(one_frame(frame, "blur_keeps_tone"), dtype=np.float32)
    y = np.asarray(one_frame(restored, "blur_keeps_tone"), dtype=np.float32)
    if x.shape != y.shape or not float(sigma) > 0.0:
        raise ValueError(f"blur_keeps_tone needs one shape and sigma > 0, got {x.shape}, {y.shape}, {sigma}")
    h, w = x.shape
    if min(h, w) < TONE_STRIDE:
        return True
    reach = blur_reach(x, sigma)
    d = cv2.resize(y - x, (w // TONE_STRIDE, h // TONE_STRIDE), interpolation=cv2.INTER_AREA)
    move = float(np.sqrt(np.mean(np.square(gaussian_blur(d, TONE_SCALE * float(sigma) / TONE_STRIDE)), dtype=np.float64)))
    return move <= reach


#: :func:`blur_below_step`: the share of the count step q the strongest blur's RMS change of a frame
#: must reach for the change to survive rounding: a change of rms < q/2 leaves most pixels inside
#: the step they were rounded to (half a step is where rounding starts to show a change)
STEP_SHARE = 0.5


def blur_below_step(frame: np.ndarray, sigma: float, quantum: float) -> bool:
    """Whether the strongest blur a route undoes (σ ``sigma``) changes ``frame`` by less than its
    counts resolve: ``rms(frame − G_sigma(frame)) < STEP_SHARE · quantum`` (the same reach as
    :func:`blur_keeps_tone`'s). On counts that the camera's own noise does not dither (its noise
    under half a step, engines/restorer.py ``DITHER_SHARE``: Widrow, Kollár & Liu, IEEE Trans.
    Instrum. Meas. 45(2), 1996), rounding erased whatever such a blur took: the counts of the
    sharp and of the blurred scene are the same but for the few pixels along the rounding's
    contours, and what a deblur adds is the contours sharpened, not the scene. Measured (docs:
    session 21): y16_fog's blur frames (a scene of 40 counts at a 64-count display span) reach
    0.28-0.37 of a step and 10 of 11 came out 0.6-4.7 dB further from the scene.

    Args:
        frame: (H, W) float32 model input in [0, 1] (what the route restored).
        sigma: the strongest blur σ in px the route undoes (> 0).
        quantum: the frame's count step in the same units (> 0).

    Returns:
        True when the blur's reach is under :data:`STEP_SHARE` of the step.

    Raises:
        ValueError: ``frame`` is not one 2-D image, or ``sigma`` or ``quantum`` is not > 0.
    """
    x = np.asarray(one_frame(frame, "blur_below_step"), dtype=np.float32)
    if not (float(sigma) > 0.0 and float(quantum) > 0.0):
        raise ValueError(f"blur_below_step needs sigma > 0 and quantum > 0, got {sigma}, {quantum}")
    return blur_reach(x, sigma) < STEP_SHARE * float(quantum)


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
                 window: int = DEFAULT_WINDOW, min_frames: int = MIN_FRAMES,
                 noisy_partners: Optional[Mapping[str, str]] = None):
        if not float(sigma_min) > 0.0 or int(window) < 1 or int(min_frames) < 1:
            raise ValueError(f"blur gate needs sigma_min > 0, window ≥ 1 and min_frames ≥ 1, got "
                             f"{sigma_min}, {window}, {min_frames}")
        self.partners = dict(partners)
        #: noise-carrying blur task -> the same without the blur (BN → noise, CBN → CN), judged on
        #: :func:`noisy_blur_drop` in both directions
        self.noisy_partners = dict(noisy_partners or {})
        self._noisy_blurred = {v: k for k, v in self.noisy_partners.items()}
        self.sigma_min = float(sigma_min)
        self.min_frames = int(min_frames)
        self.drops: deque = deque(maxlen=int(window))
        self.blurred_drops: deque = deque(maxlen=max(int(window) // DROP_EVERY, 1))
        self.noisy_drops: deque = deque(maxlen=int(window))
        self.noisy_blurred_drops: deque = deque(maxlen=max(int(window) // DROP_EVERY, 1))
        self.demoted = 0
        #: the lowest measure under noise of a frame :meth:`shows_sharp` read blurred at full resolution
        #: since :meth:`forget_reads` (engines/restorer.py calls it on every verdict and route switch)
        self.read_blurred: Optional[float] = None
        #: full-resolution reads :meth:`shows_sharp` made (each ~4 ms at 640×512)
        self.full_reads = 0
        #: the camera's references are pinned: routed frames no longer join the history (frames
        #: of its healthy look were shown with :meth:`add`; engines/restorer.py ``pin_camera``)
        self.pinned = False
        #: noise-carrying verdicts whose blur part the measure under noise changed (either way)
        self.changed_noisy = 0
        #: blur-carrying verdicts given back their partner without the blur before the camera had a
        #: sharpness reference, while the restorer warmed up (:meth:`hold_unmeasured`)
        self.held = 0
        #: blur verdicts on frames soft for this camera that carry an enlargement's traces
        #: (:func:`~tir.engines.resampling.enlargement`: a digital zoom), demoted as not soft
        self.enlarged = 0
        self.last: Optional[float] = None
        self.last_noisy: Optional[float] = None
        #: the last judged noise-carrying frame: True blurred, False sharp, None not decided
        self.noisy_soft: Optional[bool] = None
        self._noise_free = {CLEAN, *self.partners, *self.partners.values()}

    @classmethod
    def for_bundle(cls, specs: Mapping[str, Sequence[dict]]) -> "BlurGate":
        """The gate of a bundle: partners (noise-free and noise-carrying) and σ_min from its task specs."""
        return cls(blur_partners(specs), min_blur_sigma(specs), noisy_partners=noisy_blur_partners(specs))

    def threshold(self) -> Optional[float]:
        """The mid-point of the camera's reference drop and the reference drop of its frames with
        the mildest blur, each the :data:`REFERENCE_PERCENTILE` of its history (module
        docstring), raised by :meth:`drift` when the camera's recent frames are softer than its
        history; None before :attr:`min_frames` frames."""
        if len(self.drops) < self.min_frames or not self.blurred_drops:
            return None
        ref = float(np.percentile(self.drops, REFERENCE_PERCENTILE))
        blurred = float(np.percentile(self.blurred_drops, REFERENCE_PERCENTILE))
        return 0.5 * (ref + blurred) + self._drift(ref, blurred)

    def drift(self) -> float:
        """How far the camera's sharpness reference follows its recent frames: the
        :data:`REFERENCE_PERCENTILE` of the last :attr:`min_frames` drops of its history above the
        reference of the whole history, at most :data:`DRIFT_MARGIN` of the interval to its blurred
        reference (0 before :attr:`min_frames` frames, and when the recent frames are not softer).

        Why (docs/cameras.md, "Session 19"): a camera's sharpness drifts (a focus that wanders with
        the housing's temperature, a scene's range): the held-out Anti-UAV camera's val frames
        read softer than its train frames, half of its clean val frames above the threshold of the
        long history, so the router's CB verdicts on its contrast-degraded frames kept their blur
        part (2.5 dB each). The reference follows the camera's recent frames, but only within the
        quarter of the interval nearest it (the quarter the gate under noise already counts as
        the camera's sharp look, :data:`NOISY_MARGIN`): the threshold then stays below the
        blurred reference, so a lasting blur does not become the camera's look (a reference free
        to follow half the interval read a lasting σ 1 px blur of synthetic frames as sharp after
        :attr:`min_frames` frames; at a quarter 3 of 4 such frames still read soft, every σ 1.5 px
        one: tests/test_blur_gate.py), and a sudden blur reads as a drop against the frames
        before it.
        The shift is upward only: frames sharper than the history never make the gate stricter
        (the reference is the low end already)."""
        if len(self.drops) < self.min_frames or not self.blurred_drops:
            return 0.0
        return self._drift(float(np.percentile(self.drops, REFERENCE_PERCENTILE)),
                           float(np.percentile(self.blurred_drops, REFERENCE_PERCENTILE)))

    def _drift(self, ref: float, blurred: float) -> float:
        gap = blurred - ref
        if not gap > 0.0:
            return 0.0
        recent = np.asarray(self.drops, dtype=np.float64)[-self.min_frames:]
        return float(min(max(float(np.percentile(recent, REFERENCE_PERCENTILE)) - ref, 0.0), DRIFT_MARGIN * gap))

    def noisy_band(self) -> Optional[Tuple[float, float]]:
        """(low, high) of the measure under noise: below ``low`` a noise-carrying frame is sharp,
        above ``high`` it is blurred, between the router's verdict stands. The middle half
        (:data:`NOISY_MARGIN`) of the interval between the camera's reference and its blurred
        reference, each the :data:`REFERENCE_PERCENTILE` of its half-resolution history; None
        before :attr:`min_frames` frames or when the blurred reference is not above the other."""
        if len(self.noisy_drops) < self.min_frames or not self.noisy_blurred_drops:
            return None
        ref = float(np.percentile(self.noisy_drops, REFERENCE_PERCENTILE))
        gap = float(np.percentile(self.noisy_blurred_drops, REFERENCE_PERCENTILE)) - ref
        if not gap > 0.0:
            return None
        return ref + NOISY_MARGIN * gap, ref + (1.0 - NOISY_MARGIN) * gap

    def shows_sharp(self, frame: np.ndarray, latched: bool = False) -> Optional[bool]:
        """Whether a frame between verdicts is clearly sharp for this camera: its measure under
        noise (:func:`noisy_blur_drop`, half resolution, ~5 ms at 640×512 against ~20 ms for the
        full-resolution measure) below the low end of :meth:`noisy_band`, the bound under which
        the gate takes a noise-carrying verdict's blur part away. A frame in the band's undecided
        middle is read at full resolution (the gate's own measure, :meth:`step`'s): sharp when that
        is at or under :meth:`threshold`, the bound under which the gate demotes a blur verdict.
        No history is recorded (only :attr:`read_blurred`).
        ``latched`` (the frames before it were let go, engines/restorer.py ``Restorer._released``):
        True unless it is clearly blurred, above the band's high end (a Schmitt trigger on the
        band: a frame in the middle keeps the state the frames before it set).

        Why the full-resolution read (docs/cameras.md "Round 9"): the band's further blur is σ_min
        half-resolution pixels, twice the specs' mildest blur, so that blur moves the measure under
        noise only part of the band's width: a camera's own clean frames and its frames with a σ 1 px
        blur overlap in the middle (val frames of roadscene, hit_uav and chips_lepton35, three
        emulated cameras of round 9: 8-33 % of the clean frames read above the band's low end, the
        σ 1 px frames' median 0.38-0.52 of the way from the reference to the blurred reference). So
        after a blur segment the clean frames of such scenes kept the blur route until the next
        verdict (``tir eval --sequence``, clean p5 28.4-33.8 dB). At full resolution the two do not
        meet: σ 1 px frames read 0.68 or more of the way, the clean frames under the mid-point but
        for 0-30 %. The read costs ~4-9 ms at 640×512 (timed under load), only on frames the measure under noise
        leaves undecided, and not on a frame that reads no sharper under noise than one the full read
        found blurred since the last :meth:`forget_reads` (:attr:`read_blurred`): a lasting blur's frames,
        most of them undecided, were read at full resolution one after another (371 of 400 frames of the
        virtual camera's blur) and now about once per verdict (docs/BENCHMARKS.md "Session 24").

        Args:
            frame: (H, W) float32 model input in [0, 1].

        Returns:
            True or False; None when it cannot be judged: no noise-carrying blur pair in the bundle,
            no band yet (:attr:`min_frames` noise-free frames), or a frame the measure refuses (too
            small, not finite, detail all noise).

        Raises:
            ValueError: the frame is not a single 2-D image.
        """
        band = self.noisy_band()
        if band is None:
            return None
        drop = self._measure_noisy(frame, record=False)
        if drop is None:
            return None
        if latched:
            return bool(drop <= band[1])
        if drop < band[0] or drop > band[1]:
            return bool(drop < band[0])
        if self.read_blurred is not None and drop >= self.read_blurred:
            return False   # no sharper under noise than a frame the full read found blurred since the verdict
        limit = self.threshold()
        full = None if limit is None else self._measure(frame, record=False)
        if full is None:
            return False
        self.full_reads += 1
        if full > limit:
            self.read_blurred = drop   # lower than any before it: a higher one was not read
            return False
        return True

    def forget_reads(self) -> None:
        """Forget :attr:`read_blurred`: the route's frames are judged afresh (a verdict, a switch)."""
        self.read_blurred = None

    def _measure_noisy(self, frame: np.ndarray, record: bool, step: Optional[float] = None) -> Optional[float]:
        """The frame's :func:`noisy_blur_drop`; with ``record`` (a noise-free frame) it joins the
        half-resolution history, and on every :data:`DROP_EVERY`-th frame its mildest-blur drop too.
        ``step``: the value step of the measured window (:func:`quantum`), when already known."""
        if not self.noisy_partners:
            return None
        x = _half_res(frame, "BlurGate")
        if x is None:
            return None
        if step is None:
            step = quantum(centre_window(one_frame(frame, "BlurGate")))
        blurred_too = record and (len(self.noisy_drops) % DROP_EVERY == 0 or not self.noisy_blurred_drops)
        r = _noisy_ratios(x, step, self.sigma_min, 3 if blurred_too else 2)
        if len(r) < 2:
            return None
        if record:
            if len(r) == 3:
                self.noisy_blurred_drops.append(r[2] - r[1])
            self.noisy_drops.append(r[1] - r[0])
        return r[1] - r[0]

    def _measure(self, frame: np.ndarray, record: bool = True) -> Optional[float]:
        x = _measurable(frame, "BlurGate")
        x = None if x is None else centre_window(x)
        step = None if x is None else quantum(x)        # once, for both measures
        if record:
            self._measure_noisy(frame, record=True, step=step)
        if x is None:
            return None
        # x, G_σ x and (every DROP_EVERY-th recorded frame, for the blurred reference) G_σ G_σ x, each once
        blurred_too = record and (len(self.drops) % DROP_EVERY == 0 or not self.blurred_drops)
        r = _ratios(x, self.sigma_min, step ** 2 / 12.0, 3 if blurred_too else 2)
        if len(r) < 2:
            return None
        drop = r[1] - r[0]
        if not record:
            return drop
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
        The threshold is the history's before this frame joins it (it joins none while the
        camera's references are :attr:`pinned`). A frame that cannot be
        measured (or is not measured: under a noise-carrying verdict, or ``unknown``; frames
        larger than :data:`MEASURE_WINDOW` are measured on its centred window), or a camera not
        yet seen for :attr:`min_frames` frames, keeps ``task``
        (and counts as soft), except a constant frame (one finite value, any size: a lens cap,
        a dead sensor): it holds no detail for a blur to have taken or a deblur to restore, so
        a blur verdict on it loses its blur part at once (the shipped router calls an
        all-zero frame ``blur`` with confidence 0.97), and a frame soft for this camera that is an
        enlargement whose interpolation traces no blur erased since (a digital zoom step,
        :func:`~tir.engines.resampling.enlargement`, counted in :attr:`enlarged` too): its softness
        is the sensor's sampling, so a blur verdict on it loses its blur part. The frame joins the camera's history only under a noise-free
        verdict (``clean``, a blur task the gate judges or its partner): noise changes the
        bands, and a reference made of noisy frames is not the camera's.

        Args:
            task: the verdict so far (a task, ``clean`` or ``unknown``).
            frame: (H, W) float32 model input in [0, 1].

        Raises:
            ValueError: the frame is not a single 2-D image.
        """
        limit = self.threshold()
        self.noisy_soft, self.last_noisy = None, None
        if task in self.noisy_partners or task in self._noisy_blurred:
            return self._judge_noisy(task, frame), True
        # a noise-carrying verdict is neither judged nor recorded: not measured at all
        self.last = self._measure(frame, record=not self.pinned) if task in self._noise_free else None
        soft = limit is None or self.last is None or self.last > limit
        if self.last is None and task in self.partners and _constant(frame):
            soft = False   # no detail at all: nothing a blur took away, nothing a deblur can restore
        elif soft and task in self.partners and enlargement(centre_window(one_frame(frame, "BlurGate"))) is not None:
            # an enlargement (a digital zoom) whose interpolation traces no blur erased since: its
            # softness is the sensor's sampling, not a blur (engines/resampling.py, K22)
            soft = False
            self.enlarged += 1
        if not soft and task in self.partners:
            self.demoted += 1
            return self.partners[task], False
        return task, soft

    def noisy_moves(self) -> Dict[str, str]:
        """Where the student's prompt weight moves after the last judged noise-carrying frame:
        {BN: noise, CBN: CN} when it was sharp, {noise: BN, CN: CBN} when it was blurred, {} when
        not decided (:attr:`noisy_soft` None)."""
        if self.noisy_soft is None:
            return {}
        return dict(self._noisy_blurred) if self.noisy_soft else dict(self.noisy_partners)

    def _judge_noisy(self, task: str, frame: np.ndarray) -> str:
        """A noise-carrying verdict of a blur pair (BN/noise, CBN/CN): its blur part set by the
        frame's measure under noise when that is outside the camera's undecided band
        (:meth:`noisy_band`); the frame is not recorded."""
        self.last = None
        band = self.noisy_band()
        if band is None:
            return task
        self.last_noisy = self._measure_noisy(frame, record=False)
        if self.last_noisy is None or band[0] <= self.last_noisy <= band[1]:
            return task
        self.noisy_soft = self.last_noisy > band[1]
        new = (self._noisy_blurred.get(task, task) if self.noisy_soft
               else self.noisy_partners.get(task, task))
        if new != task:
            self.changed_noisy += 1
        return new

    def restart(self) -> bool:
        """Forget the camera's sharpness history (all four drop histories): another camera, or the
        same one in another state (engines/restorer.py ``Restorer.new_camera``), has its own optics
        and noise, and a reference taken on a sharper camera judged every frame of a softer one
        blurred. Until :attr:`min_frames` frames joined the new history the gate does not judge
        (as at start-up). Counters stay. Pinned references (``tir run --reference``) stay.

        Returns:
            True when the history was forgotten, False when it is pinned."""
        if self.pinned:
            return False
        for history in (self.drops, self.blurred_drops, self.noisy_drops, self.noisy_blurred_drops):
            history.clear()
        self.read_blurred = None
        return True

    def hold_unmeasured(self, task: str) -> str:
        """``task`` without its blur part (:attr:`partners`, :attr:`noisy_partners`: blur → clean,
        CB → contrast, BN → noise, CBN → CN), counted in :attr:`held`; ``task`` itself when it has
        no blur part. Called by the restorer (engines/restorer.py ``Restorer._gate``) on a verdict
        :meth:`step` judged while the camera had no sharpness reference (:meth:`threshold` None
        before the step), while the restorer warms up after the start or a camera change.

        Why: the blur part of such a verdict is the router's word alone, and the gate cannot yet
        tell the camera's own softness (a low-resolution or defocused camera, a soft optic) from a
        blur that happened; an uncertain decision falls back to pass-through (issue "any thermal
        camera", item 4). What it costs: a camera blurred from its first frame has its first
        routed frames passed through; its frames then make its history, as they would have."""
        partner = self.partners.get(task, self.noisy_partners.get(task))
        if partner is None:
            return task
        self.held += 1
        return partner

    def carry_from(self, old: "BlurGate") -> None:
        """Take over ``old``'s camera history and demoted count (a bundle hot-swap: the camera is
        the same). The history is taken only when both measure with the same σ_min: drops
        measured with another further blur are another quantity (a new bundle whose specs start
        at a milder blur starts its history afresh, silent for :attr:`min_frames` frames)."""
        if float(old.sigma_min) == self.sigma_min:
            self.drops.extend(old.drops)
            self.blurred_drops.extend(old.blurred_drops)
            self.noisy_drops.extend(old.noisy_drops)
            self.noisy_blurred_drops.extend(old.noisy_blurred_drops)
            self.pinned = self.pinned or bool(getattr(old, "pinned", False))
        self.demoted += int(old.demoted)
        self.changed_noisy += int(old.changed_noisy)
        self.held += int(getattr(old, "held", 0))
        self.enlarged += int(getattr(old, "enlarged", 0))

    def status(self) -> dict:
        """``drop`` of the last routed frame (None: not measurable), ``threshold`` (None before
        :attr:`min_frames`), ``frames`` in the history, ``demoted`` verdicts, ``held`` verdicts
        (:meth:`hold_unmeasured`), ``enlarged``: of the demoted, the frames soft for this camera that
        are an enlargement (:func:`~tir.engines.resampling.enlargement`)."""
        limit, band = self.threshold(), self.noisy_band()
        return {"drop": None if self.last is None else round(self.last, 4),
                "threshold": None if limit is None else round(limit, 4),
                "drift": round(self.drift(), 4),
                "frames": len(self.drops), "demoted": self.demoted,
                "drop_noisy": None if self.last_noisy is None else round(self.last_noisy, 4),
                "band_noisy": None if band is None else [round(band[0], 4), round(band[1], 4)],
                "changed_noisy": self.changed_noisy, "held": self.held, "enlarged": self.enlarged}
