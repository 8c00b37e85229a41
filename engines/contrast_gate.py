"""Low contrast is relative to the camera: keep a contrast-carrying verdict only when the frame's
contrast is low *for this camera*.

Why (docs/cameras.md, "Session 6"): a frame's contrast alone cannot tell a low-contrast camera from
a contrast-degraded frame. The robust span of an Anti-UAV sky camera's *clean* 8-bit frames is
0.43 of full scale (median), the same as RoadScene's contrast-degraded frames (0.41), so any
router that reads contrast from one frame either sends the sky camera's clean frames to the
contrast route (18 dB from themselves) or misses the degradation elsewhere. What tells them apart
is the camera's own history: the contrast degradation (``contrast`` op, ecmrnet.md §1.3) scales a
frame's span by α = 1 + U(contrast) ∈ [0.2, 0.6], so a degraded frame's span is at most 0.6× what
the same camera delivers on the same kind of scene.

The gate (:class:`ContrastGate`):

- measures each routed frame's **low-pass span** (:func:`lowpass_span`: the frame area-averaged
  onto a fixed grid of 80×64 cells, the 8×8-pixel blocks of a 640×512 frame, 99th minus 1st
  percentile; the cell mean keeps contrast and removes per-pixel noise, which would otherwise
  widen the span of a noisy frame). The grid is fixed, not the block size, so the same scene has
  the same span at any resolution and a prior measured on 640×512 training frames holds for a
  160×120 or 1280×1024 camera (with 8-pixel blocks the median span of M3SVD's frames was 0.62 at
  640×512, 0.49 at 160×128 and 0.40 at 80×64: a small camera's clean frames read as low against
  the prior);
- keeps the camera's **reference span**: the median low-pass span of the last ``window`` routed
  frames, shrunk towards the router's training prior (the median over its clean training frames,
  ``contrast_span`` in the router entry) with the weight of ``prior_frames`` frames, in the log
  domain (empirical-Bayes shrinkage: at start-up the prior decides, after a few seconds of video
  the camera's own frames do);
- calls a frame **low** when its **extent** (:func:`lowpass_extent`: the coldest to the hottest
  0.02 % of 4×4-pixel blocks) is below ``ratio`` × the camera's median extent, once the camera
  has ``prior_frames`` of them, and also beyond the camera's own scatter (more than
  :data:`EXTENT_Z` robust σ of its extents below the median, :meth:`ContrastGate.beyond_scatter`:
  a small sensor's extent follows its scenes) unless its ends wander (:meth:`ContrastGate.ends_wander`); before that (start-up), when its span is below ``ratio`` × the
  reference. The extent is the measure because a camera's AGC puts the extremes of each frame
  near the ends of its output scale whatever the scene, while the span (1st-99th percentile)
  follows the scene's histogram; a contrast loss ``x·α + β`` after the AGC compresses the
  extremes by α. A scene whose bulk is flat but whose hot spots still reach the top of the
  camera's scale (a UAV camera over uniform ground with a few warm targets: span 0.27-0.39
  against the camera's 0.59, hottest pixels at 0.97-1.0) is not a contrast loss. The blocks
  stay at least 4×4 pixels on any frame, so per-pixel noise is averaged down (σ/4) on a 160×120
  Lepton as on a 640×512 camera: with one cell per pixel, noise widened a small camera's
  extremes and hid a contrast loss under noise. Measured on val (docs/cameras.md, "Session 9"),
  over frames with and without noise, against "span and extent both low" (session 8) and
  "span alone" for noise-carrying verdicts: contrast-degraded noisy frames missed 0-17 %
  (span: 13-24 %), other noisy frames called low 0 % (span: 4-16 %);
  The default ratio is the geometric mean of the largest contrast factor of the bundle's specs and 1 (√0.6 = 0.775 for
  the shipped specs): half-way, in the log domain, between "as the camera delivers it" and the
  mildest contrast degradation;
- **demotes** a contrast-carrying verdict on a frame that is not low to its partner without the
  contrast part (contrast → clean, CB → blur, CN → noise, CBN → BN; partners derived from the
  bundle's degradation specs, so a task ``tir learn`` adds is handled the same way);
- **promotes** a verdict without the contrast part to its partner with it (``clean`` and
  ``unknown`` → contrast, noise → CN, BN → CBN: :func:`contrast_gains`) when the frame's contrast
  is *clearly* compressed for this camera (:meth:`ContrastGate.is_compressed`; docs/cameras.md
  K10: a Boson-like DDE camera's contrast-reduced frames the router called unknown or clean passed
  through). Do no harm decides the rule, since a clean frame sent to the contrast route comes out
  ~18 dB from itself while a missed contrast loss leaves the frame as the camera delivered it; a
  frame is promoted only when both hold:

  - its extent is at most ``α_max`` × the camera's median extent (``promote_ratio``, 0.6 for the
    shipped specs): as low as the *mildest* contrast loss of the bundle's specs makes a frame of
    the camera's usual extent. Between ``α_max`` and ``ratio`` = √α_max (the veto's midpoint) the
    gate neither demotes nor promotes: a dead band, since a frame there is as far from the
    camera's look as from the mildest loss. Nor is a frame promoted below ``α_min`` × ``ratio``
    × the camera's extent (``promote_floor``, 0.2 × 0.775 = 0.155 for the shipped specs): the
    *strongest* loss of the specs applied to the flattest frame the gate still finds normal for
    this camera. A constant frame, a lens cap or a uniform wall the normaliser holds at its
    minimum span is flatter than any loss the bundle restores leaves, and the contrast route
    stretches its noise;
  - both of its ends lie inside the camera's own: its coldest blocks above the 90th percentile
    (:data:`PROMOTE_END_PERCENTILE`) of the block lows of the camera's frames the gate did not
    find low (under any verdict) and its hottest below the 10th percentile of their highs. A camera's AGC stretches every frame, a uniform wall,
    the sky or a cold night as well, onto its output range, so a clean frame with a small scene
    span still reaches the camera's usual ends at one side at least; a contrast loss ``x·α + β``
    after the AGC compresses the range about a level inside it, so both ends move inward. A
    camera whose ends wander (no AGC, a tone curve that lifts the cold end) has wide percentiles
    and is promoted only on frames far inside them.

  Verdicts whose task is noise-free and carries blur (``blur`` for the shipped specs) are not
  promoted: a blur averages the hottest and coldest blocks into their surroundings, so a blurred
  frame's extent is below the camera's without any contrast loss (measured on val and the
  emulated cameras: as many blur frames as CB frames under a blur verdict passed both tests),
  unless the blur gate then finds the frame not soft for this camera and makes the verdict
  ``clean``: the Restorer promotes that (:meth:`ContrastGate.promote_last`), a blur no longer
  explaining the low extent. Noise widens a frame's extremes, so a noise-carrying frame whose extent is still compressed is
  compressed the more. Before the camera has an extent reference and the ends of
  ``prior_frames`` frames, nothing is promoted. Measured before/after in docs/cameras.md (K10).

**Tone alignment** (:meth:`ContrastGate.align`, run by the Restorer after a contrast-carrying
route or student prompt, ``tone_align``). How much contrast to give back is the camera's, not the
route's: a route learned the contrast of its training cameras, and a sky camera's frames came back
from it at 22.5 dB. The gate knows this camera's extremes: it keeps the block low and high
(:func:`lowpass_ends`) of the routed frames that are neither low in contrast for this camera nor
under a noise-carrying verdict (a contrast loss compresses the extremes, noise widens them), and
their medians are the camera's tone. The restored frame's extremes are mapped linearly onto them,
as the camera's AGC maps a scene's extremes onto its output scale. Measured on val through the live path (docs/cameras.md,
"Session 9").

Raw 16-bit cameras: the normaliser's percentile stretch is the AGC there and undoes a global
contrast loss before the router sees it, so the spans stay at the reference and contrast-carrying
verdicts are demoted to the task that is still visible (camera_eval.visible_task).

numpy + OpenCV only (runtime).
"""
from __future__ import annotations

import logging
import math
from collections import deque
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from .router import CLEAN, UNKNOWN

log = logging.getLogger(__name__)

#: the router entry's key of the training prior (:func:`contrast_prior`)
CONTRAST_SPAN_KEY = "contrast_span"
#: the degradation op whose loss the gate judges against the camera (engines/degrade.py)
CONTRAST_OP = "contrast"
#: low-pass grid (width, height) in cells for :func:`lowpass_span`: the 8×8-pixel blocks of a
#: 640×512 frame, whatever the frame's size
SPAN_GRID = (80, 64)
#: percentiles of the low-pass frame whose difference is the span
SPAN_PERCENTILES = (1.0, 99.0)
#: largest grid and percentiles of :func:`lowpass_extent`: 4×4-pixel blocks of a 640×512 frame,
#: the coldest and hottest 0.02 % of them (about 4 blocks at 640×512)
EXTENT_GRID = (160, 128)
EXTENT_PERCENTILES = (0.02, 99.98)
#: smallest block side (px) of :func:`lowpass_extent` on any frame: per-pixel noise σ averaged down 4×
EXTENT_MIN_BLOCK = 4
#: percentiles of the camera's history of block lows and highs that are its tone reference
#: (:meth:`ContrastGate.tone_reference`): the medians, over frames that are neither low in
#: contrast for this camera nor under a noise-carrying verdict (noise widens the extremes)
TONE_PERCENTILES = (50.0, 50.0)
#: a restored frame whose block extent is below this (frame units) is flat: no tone to align
MIN_TONE_EXTENT = 1e-3
#: the robust σ of the camera's block lows and highs (:meth:`ContrastGate.tone_spread`) is the
#: interquartile range over this (a normal distribution's IQR is 1.349 σ)
IQR_PER_SIGMA = 1.349
#: a frame's extent must lie this many robust σ of the camera's own extents below its median to
#: count as a contrast loss (:meth:`ContrastGate.beyond_scatter`): the one-sided 1 % point of a
#: normal distribution (Φ⁻¹(0.99) = 2.326), so at most about 1 in 100 of the camera's own frames
#: reads as a loss whatever the ratio says
EXTENT_Z = 2.326
#: the resolution of a white-noise σ read on an 8-bit frame (frame units): the diagonal Haar detail
#: of 8-bit grey levels moves in steps of 0.5 grey level and the MAD estimator divides it by 0.6745
#: (engines/fpn_gate.py ``noise_sigma``), so σ moves in steps of 0.74 grey level (0.0029)
NOISE_STEP = 0.5 / 0.6745 / 255.0


def iqr_sigma(values) -> float:
    """The robust σ of ``values`` (any iterable of floats): interquartile range /
    :data:`IQR_PER_SIGMA`."""
    return float(np.subtract(*np.percentile(np.asarray(list(values), np.float64), [75.0, 25.0]))) / IQR_PER_SIGMA


#: routed frames the camera's reference is the median of (≈ 2.3 min at 30 fps, router every 8 frames)
DEFAULT_WINDOW = 512
#: weight of the training prior, in frames, when the reference is shrunk towards it
DEFAULT_PRIOR_FRAMES = 8
#: a run of routed frames found low that ends before this many (:meth:`ContrastGate.add`) was the
#: camera's own scenes, not a loss that set in: its frames join the camera's extents. Twice the
#: Restorer's hysteresis (3 verdicts, engines/restorer.py): a shorter run can give a route no more
#: than it takes to be taken and left
DEFAULT_LOSS_FRAMES = 6
#: percentile of the camera's tone-history lows a frame's low end must exceed, and 100 minus it of
#: the highs its high end must stay under, for a promotion (:meth:`ContrastGate.is_compressed`):
#: both ends outside the range nine in ten of the camera's own frames reach
PROMOTE_END_PERCENTILE = 90.0
#: largest contrast factor α of the shipped contrast spec (1 + (-0.4), ecmrnet.md §1.3), used
#: when a bundle's specs state no contrast range
DEFAULT_MAX_FACTOR = 0.6
#: smallest contrast factor α of the shipped contrast spec (1 + (-0.8), ecmrnet.md §1.3), used
#: when a bundle's specs state no contrast range
DEFAULT_MIN_FACTOR = 0.2


def one_frame(frame: np.ndarray, name: str) -> np.ndarray:
    """One frame as a 2-D float32 array, for the gates' measures.

    Args:
        frame: (H, W), (1, H, W) or (1, 1, H, W) array.
        name: the measure's name, for the error.

    Returns:
        (H, W) float32 (a view where possible; a float64 value beyond float32's range is ±inf).

    Raises:
        ValueError: ``frame`` is not a single 2-D image.
    """
    with np.errstate(over="ignore"):   # a float64 value beyond float32's range becomes ±inf: not finite
        x = np.asarray(frame, dtype=np.float32)
    x = x.reshape(x.shape[-2:]) if x.ndim > 2 and int(np.prod(x.shape[:-2])) == 1 else x
    if x.ndim != 2:
        raise ValueError(f"{name} expects one (H, W) frame, got shape {np.shape(frame)}")
    return x


#: (width, height) px of the centred window the per-frame measures of the gates look at on larger
#: frames (engines/blur_gate.py, engines/fpn_gate.py): their cost per routed frame stays that of a
#: 640×512 frame at any resolution, and a camera's references are measured on the same window
MEASURE_WINDOW = (640, 512)


def centre_window(x: np.ndarray, size: Sequence[int] = MEASURE_WINDOW) -> np.ndarray:
    """The centred ``size`` (width, height) window of an (H, W) frame (a view; the frame itself
    when it fits)."""
    h, w = x.shape
    mw, mh = int(size[0]), int(size[1])
    top, left = max((h - mh) // 2, 0), max((w - mw) // 2, 0)
    return x[top:top + mh, left:left + mw]


def lowpass_span(frame: np.ndarray, grid: Sequence[int] = SPAN_GRID,
                 percentiles: Sequence[float] = SPAN_PERCENTILES) -> float:
    """The contrast of one frame that per-pixel noise and the frame's resolution do not change.

    Args:
        frame: (H, W) or (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1].
        grid: (width, height) in cells (each ≥ 1) the frame is area-averaged onto; a frame
            side with fewer pixels than cells keeps its pixels (never upsampled).
        percentiles: (low, high) percentiles of the cell means whose difference is the span.

    Returns:
        The high minus the low percentile (default 99th minus 1st) of the cell means, in the
        frame's units (≥ 0).

    Raises:
        ValueError: the frame is not a single 2-D image, is empty, or holds a non-finite value
            (NaN, ±inf, or values near float32's limit that overflow the cell means; frames from
            a source are integer counts, so this is a caller's bug).
    """
    lo, hi = _cell_percentiles(frame, grid, 1, percentiles, "lowpass_span")
    return float(max(hi - lo, 0.0))


def _cell_percentiles(frame: np.ndarray, grid: Sequence[int], min_block: int, percentiles: Sequence[float],
                      name: str) -> Tuple[float, float]:
    """The (low, high) ``percentiles`` of the frame area-averaged onto at most ``grid`` cells of at
    least ``min_block`` px a side (at least one cell). Raises ValueError for what is not one
    frame, an empty frame, or one whose cells are not finite (NaN, inf, float32 overflow)."""
    x = one_frame(frame, name)
    h, w = x.shape
    if x.size == 0:
        raise ValueError(f"{name} needs a frame with pixels, got shape {x.shape}")
    cells = (max(min(int(grid[0]), w // int(min_block)), 1), max(min(int(grid[1]), h // int(min_block)), 1))
    small = cv2.resize(x, cells, interpolation=cv2.INTER_AREA)
    if not np.isfinite(small).all():   # every pixel weighs in some cell: a NaN or inf shows there
        raise ValueError(f"{name}: the frame holds NaN, infinite or float32-overflowing values "
                         "(|x| near 3.4e38); pass finite [0, 1] frames")
    lo, hi = np.percentile(small, percentiles)
    return float(lo), float(hi)


def lowpass_ends(frame: np.ndarray, grid: Sequence[int] = EXTENT_GRID,
                 min_block: int = EXTENT_MIN_BLOCK) -> Tuple[float, float]:
    """The coldest and the hottest few blocks of one frame, per-pixel noise averaged out: the
    frame area-averaged onto ``grid`` cells (4×4-pixel blocks of a 640×512 frame) but onto blocks
    of at least ``min_block`` × ``min_block`` pixels on a smaller frame, at the
    :data:`EXTENT_PERCENTILES`.

    Args:
        frame: (H, W) or (1, H, W) or (1, 1, H, W) float frame, the model input in [0, 1].
        grid: the largest (width, height) in cells (each ≥ 1).
        min_block: the smallest block side in pixels (≥ 1).

    Returns:
        (low, high) in the frame's units, low ≤ high.

    Raises:
        ValueError: the frame is not a single 2-D image, is empty or holds a non-finite value
            (as :func:`lowpass_span`), or ``min_block`` < 1.
    """
    if int(min_block) < 1:
        raise ValueError(f"lowpass_ends needs min_block ≥ 1, got {min_block}")
    lo, hi = _cell_percentiles(frame, grid, min_block, EXTENT_PERCENTILES, "lowpass_ends")
    return lo, max(hi, lo)


def lowpass_extent(frame: np.ndarray, grid: Sequence[int] = EXTENT_GRID,
                   min_block: int = EXTENT_MIN_BLOCK) -> float:
    """The full extent of one frame's values, per-pixel noise averaged out: high minus low of
    :func:`lowpass_ends` (same arguments).

    A scene with low contrast over most of the frame may still hold a few hot spots at the top of
    the camera's scale; a contrast loss (``x·α + β``) compresses those too.

    Returns:
        The extent in the frame's units (≥ 0).

    Raises:
        ValueError: the frame is not a single 2-D image, is empty or holds a non-finite value
            (:func:`lowpass_span`), or ``min_block`` < 1.
    """
    lo, hi = lowpass_ends(frame, grid, min_block)
    return hi - lo


def _contrast_free(steps: Sequence[dict]) -> tuple:
    return tuple(repr(sorted(s.items())) for s in steps if s.get("op") != CONTRAST_OP)


def contrast_partners(specs: Mapping[str, Sequence[dict]]) -> Dict[str, str]:
    """Each contrast-carrying task -> the task that is the same degradation without the contrast
    part (``clean`` when nothing else is left).

    Args:
        specs: task name -> its spec's steps (list of op dicts, as bundles store them).

    Returns:
        {task: partner} for every task with a ``contrast`` step whose partner exists (a task whose
        remaining steps match no other task is left out: the gate never touches it).
    """
    carrying = {name for name, steps in specs.items() if any(s.get("op") == CONTRAST_OP for s in steps)}
    by_steps = {_contrast_free(steps): name for name, steps in specs.items() if name not in carrying}
    by_steps[()] = CLEAN
    return {name: by_steps[_contrast_free(steps)] for name, steps in specs.items()
            if name in carrying and _contrast_free(steps) in by_steps}


#: degradation ops that leave a frame's extremes where the tone map puts them (no additive noise)
NOISE_FREE_OPS = frozenset({CONTRAST_OP, "blur"})


def contrast_gains(specs: Mapping[str, Sequence[dict]]) -> Dict[str, str]:
    """The verdicts the gate may promote, each -> its partner with the contrast part: the inverse
    of :func:`contrast_partners` (``clean`` -> contrast, noise -> CN, BN -> CBN for the shipped
    specs), with ``unknown`` going where ``clean`` goes, less the noise-free tasks with a step
    other than contrast (``blur``: a blur lowers a frame's extent by itself; module docstring).

    Args:
        specs: task name -> its spec's steps (list of op dicts, as bundles store them).

    Returns:
        {verdict: contrast-carrying task}; empty when no task carries contrast.
    """
    gains = {partner: task for task, partner in contrast_partners(specs).items()}
    blurring = {name for name, steps in specs.items()
                if steps and all(s.get("op") in NOISE_FREE_OPS for s in steps)
                and any(s.get("op") != CONTRAST_OP for s in steps)}
    gains = {v: t for v, t in gains.items() if v not in blurring}
    if CLEAN in gains:
        gains[UNKNOWN] = gains[CLEAN]
    return gains


def noise_free_tasks(specs: Mapping[str, Sequence[dict]]) -> Tuple[str, ...]:
    """The tasks whose every step is a :data:`NOISE_FREE_OPS` op (contrast, blur, CB for the
    shipped specs): the blur gate judges and records frames under these verdicts only."""
    return tuple(name for name, steps in specs.items()
                 if steps and all(s.get("op") in NOISE_FREE_OPS for s in steps))


def noise_free_verdicts(specs: Mapping[str, Sequence[dict]]) -> Tuple[str, ...]:
    """``clean`` and the :func:`noise_free_tasks`: the verdicts whose frames show the camera's own
    noise floor and extremes (the contrast gate's tone history, the FPN gate's white-noise floor)."""
    return (CLEAN, *noise_free_tasks(specs))


def max_contrast_factor(specs: Iterable[Sequence[dict]]) -> float:
    """The largest contrast factor α = 1 + contrast[1] over the ``contrast`` steps of ``specs``
    (:data:`DEFAULT_MAX_FACTOR` when none states a range); clipped to (0, 1)."""
    found = [1.0 + float(s["contrast"][1]) for steps in specs for s in steps
             if s.get("op") == CONTRAST_OP and isinstance(s.get("contrast"), (list, tuple))]
    factor = max(found) if found else DEFAULT_MAX_FACTOR
    return float(min(max(factor, 1e-3), 0.999))


def min_contrast_factor(specs: Iterable[Sequence[dict]]) -> float:
    """The smallest contrast factor α = 1 + contrast[0] over the ``contrast`` steps of ``specs``
    (:data:`DEFAULT_MIN_FACTOR` when none states a range): the strongest contrast loss the bundle
    restores; clipped to [0, 1)."""
    found = [1.0 + float(s["contrast"][0]) for steps in specs for s in steps
             if s.get("op") == CONTRAST_OP and isinstance(s.get("contrast"), (list, tuple))]
    factor = min(found) if found else DEFAULT_MIN_FACTOR
    return float(min(max(factor, 0.0), 0.999))


class ContrastGate:
    """The camera's reference contrast, the demotion of contrast-carrying verdicts and the
    promotion of verdicts without the contrast part (module docstring).

    Args:
        partners: {contrast-carrying task: partner} (:func:`contrast_partners`).
        prior: the training prior of the low-pass span (median over clean training frames), or
            None (then the camera's own frames alone; with none yet every contrast verdict is
            demoted).
        ratio: a frame is low below ``ratio`` × reference, in (0, 1).
        window: routed frames the camera's median is taken over (≥ 1).
        prior_frames: weight of the prior in frames (≥ 0).
        tone_tasks: verdicts whose frames' extremes join the tone history (None: every one).
        gains: {verdict: its partner with the contrast part} the gate may promote
            (:func:`contrast_gains`); None or empty: it never promotes.
        promote_ratio: a frame is compressed at an extent of at most ``promote_ratio`` × the
            camera's extent reference (the largest contrast factor of the specs,
            :func:`max_contrast_factor`), in (0, ``ratio``]; None: ``ratio`` squared.
        promote_floor: a frame is promoted only at an extent of at least ``promote_floor`` × the
            camera's extent reference (the smallest contrast factor of the specs,
            :func:`min_contrast_factor`, × ``ratio``: the strongest contrast loss the bundle
            restores, applied to the flattest frame not low for this camera; a flatter frame is
            no such loss), in [0, ``promote_ratio``); None: :data:`DEFAULT_MIN_FACTOR` ×
            ``ratio``, or 0 when that is not below ``promote_ratio``.
        loss_frames: a run of routed frames found low that ends shorter than this joins the
            camera's extents (:meth:`add`; ≥ 1; :data:`DEFAULT_LOSS_FRAMES`).

    Raises:
        ValueError: ``ratio`` outside (0, 1), ``window`` or ``loss_frames`` < 1, ``prior_frames`` < 0, a prior ≤ 0 or
            ``promote_ratio`` outside (0, ``ratio``] or ``promote_floor`` outside [0, ``promote_ratio``).
    """

    def __init__(self, partners: Mapping[str, str], prior: Optional[float], ratio: float,
                 window: int = DEFAULT_WINDOW, prior_frames: int = DEFAULT_PRIOR_FRAMES,
                 tone_tasks: Optional[Iterable[str]] = None, gains: Optional[Mapping[str, str]] = None,
                 promote_ratio: Optional[float] = None, promote_floor: Optional[float] = None,
                 loss_frames: int = DEFAULT_LOSS_FRAMES):
        if not 0.0 < float(ratio) < 1.0:
            raise ValueError(f"contrast gate ratio must be in (0, 1), got {ratio}")
        promote_ratio = float(ratio) ** 2 if promote_ratio is None else float(promote_ratio)
        if not 0.0 < promote_ratio <= float(ratio):
            raise ValueError(f"contrast gate promote_ratio must be in (0, ratio={ratio}], got {promote_ratio}")
        if promote_floor is None:
            promote_floor = DEFAULT_MIN_FACTOR * float(ratio)
            promote_floor = promote_floor if promote_floor < promote_ratio else 0.0
        if not 0.0 <= float(promote_floor) < promote_ratio:
            raise ValueError(f"contrast gate promote_floor must be in [0, promote_ratio={promote_ratio}), "
                             f"got {promote_floor}")
        if int(window) < 1 or int(prior_frames) < 0 or int(loss_frames) < 1:
            raise ValueError(f"contrast gate window and loss_frames must be ≥ 1 and prior_frames ≥ 0, got {window}, "
                             f"{loss_frames}, {prior_frames}")
        if prior is not None and not float(prior) > 0.0:
            raise ValueError(f"contrast gate prior span must be > 0, got {prior}")
        self.partners = dict(partners)
        self.prior = None if prior is None else float(prior)
        self.ratio = float(ratio)
        self.prior_frames = int(prior_frames)
        self.spans: deque = deque(maxlen=int(window))
        self.extents: deque = deque(maxlen=int(window))
        #: per entry of :attr:`extents`: the frame was found low for this camera when it came
        #: (:meth:`step`): held out of the camera's extent reference and scatter (:meth:`own_extents`)
        self.extent_low: deque = deque(maxlen=int(window))
        #: times the held-out low frames became most of the history and were taken as the camera's
        #: look (:meth:`add`)
        self.adopted = 0
        #: a run of held frames that ends shorter than this joins the camera's extents (:meth:`add`)
        self.loss_frames = int(loss_frames)
        self._run = 0   # held frames in a row at the end of the history
        self._pending: list = []   # their ((low, high), tone) until the run ends (add)
        self._changes = 0   # the histories' changes so far (add, restart, carry_from): _extent_stats' key
        self._extent_cache: Optional[tuple] = None
        self.lows: deque = deque(maxlen=int(window))
        self.highs: deque = deque(maxlen=int(window))
        #: block lows and highs of every frame the gate did not find low, whatever its verdict: the
        #: camera's own ends, the promotion's second test (:meth:`is_compressed`)
        self.end_lows: deque = deque(maxlen=int(window))
        self.end_highs: deque = deque(maxlen=int(window))
        self._tone_cache: Optional[tuple] = None   # (lows, highs) appended so far, tone_reference()
        self._spread_cache: Optional[tuple] = None   # the same for tone_spread()
        #: (low, high) of each frame :meth:`align` weighed with ``own_sigma``, less the camera's
        #: tone reference then: how far this camera's restored frames' own ends fall from it
        #: (:meth:`own_error`)
        self.own_devs: deque = deque(maxlen=int(window))
        self._own_sq = [0.0, 0.0]   # sums of squares of own_devs' lows and highs (_add_own)
        self._tone_added = 0
        #: verdicts whose frames' extremes may join the tone history (None: every one); noise widens
        #: a frame's extremes, so a frame under a noise-carrying verdict does not
        self.tone_tasks = None if tone_tasks is None else frozenset(tone_tasks)
        #: restored frames whose tone :meth:`align` mapped to the camera's, and the last scale
        self.aligned = 0
        self.last_scale: Optional[float] = None
        self.demoted = 0
        #: verdicts without the contrast part -> their partner with it (:func:`contrast_gains`)
        self.gains = dict(gains or {})
        self.promote_ratio = promote_ratio
        #: no promotion below this × the camera's extent reference (:meth:`is_compressed`)
        self.promote_floor = float(promote_floor)
        #: verdicts promoted to their partner with the contrast part (:meth:`is_compressed`)
        self.promoted = 0
        #: the last frame :meth:`step` saw passed the promotion's test (:meth:`promote_last`)
        self.last_compressed = False
        #: the camera's references are pinned (:meth:`step` records nothing): frames of its
        #: healthy look were shown with :meth:`add` (``tir run --reference``; engines/restorer.py
        #: ``Restorer.pin_camera``)
        self.pinned = False

    @classmethod
    def for_bundle(cls, specs: Mapping[str, Sequence[dict]], router_entry: Optional[dict]) -> "ContrastGate":
        """The gate of a bundle: partners and ratio from its task specs, the prior from its
        router entry's ``contrast_span`` (``{"median": float, ...}``; None when absent)."""
        prior = ((router_entry or {}).get(CONTRAST_SPAN_KEY) or {}).get("median")
        factor = max_contrast_factor(specs.values())
        return cls(contrast_partners(specs), prior if prior and prior > 0 else None, math.sqrt(factor),
                   tone_tasks=noise_free_verdicts(specs), gains=contrast_gains(specs), promote_ratio=factor,
                   promote_floor=min(min_contrast_factor(specs.values()) * math.sqrt(factor), 0.999 * factor))

    @property
    def reference(self) -> Optional[float]:
        """The camera's reference span: the median of the recent spans shrunk towards the prior
        (geometric weighting by frame counts); None with neither."""
        spans = [s for s in self.spans if s > 0]
        if not spans:
            return self.prior
        own = float(np.median(spans))
        if self.prior is None or self.prior_frames == 0:
            return own
        n, w0 = len(spans), self.prior_frames
        return float(math.exp((w0 * math.log(self.prior) + n * math.log(own)) / (w0 + n)))

    def _extent_stats(self) -> Tuple[Optional[float], Optional[float], bool]:
        """(:attr:`extent_reference`, :meth:`extent_spread`, :meth:`ends_wander`), computed once per
        change of the histories: the Restorer asks them on every frame the contrast route restores
        (``Restorer._released``), ~0.35 ms a frame over a full window when taken afresh."""
        if self._extent_cache is not None and self._extent_cache[0] == self._changes:
            return self._extent_cache[1]
        extents = self.own_extents()
        enough = len(extents) >= max(self.prior_frames, 1)
        ref = float(np.median(extents)) if enough else None
        spread = iqr_sigma(extents) if enough else None
        wander = False
        if ref is not None and len(self.end_lows) >= max(self.prior_frames, 1):
            margin = (1.0 - self.ratio) * ref
            wander = iqr_sigma(self.end_lows) > margin and iqr_sigma(self.end_highs) > margin
        self._extent_cache = (self._changes, (ref, spread, wander))
        return ref, spread, wander

    @property
    def extent_reference(self) -> Optional[float]:
        """The camera's reference extent (:func:`lowpass_extent`): the median of the recent
        extents; None before ``prior_frames`` of them (there is no training prior for it)."""
        return self._extent_stats()[0]

    def extent_spread(self) -> Optional[float]:
        """The robust σ of the camera's recent extents: their interquartile range /
        :data:`IQR_PER_SIGMA` over :attr:`extents`; None before ``prior_frames`` (at least 1) of
        them.

        Why the quartiles: a small sensor's scenes can be bimodal (round 1's seek_206x156: half
        its clean frames at extent 0.34-0.61, half at 0.79-0.84); the median absolute deviation
        sees only the central half (σ 0.05-0.07 in ``tir eval``'s history) and keeps calling the
        camera's own narrow scenes a contrast loss, the lower quartile reaches them (σ 0.2). The
        quartiles break at a quarter: over every routed frame, a contrast loss that set in on a
        running camera widened the scatter once it was a quarter of the history, so the frames
        found low are held out of it until they are most of the history (:meth:`own_extents`)."""
        return self._extent_stats()[1]

    def beyond_scatter(self, extent: float) -> bool:
        """Whether ``extent`` lies more than :data:`EXTENT_Z` robust σ (:meth:`extent_spread`)
        below the camera's median extent: outside what the camera's own frames scatter to. True
        before the camera has a spread (the ratio alone decides then).

        Why: the veto's ratio rests on a camera's AGC holding its frames' extent nearly fixed
        (robust σ 0.000-0.04 of a median near 1 on the 8-bit sets and most emulated cameras). A
        small sensor's block extremes follow the scene (seek_206x156: median 0.70, σ 0.22;
        tiny_80x60: 0.61, σ 0.22), so a quarter of its own clean frames fall under ``ratio`` × its
        median: with its gate history holding only its own frames (``tir eval`` since session
        16), 6 of seek's 12 clean frames kept a contrast verdict and came out 19 dB from
        themselves. Where the scatter is that wide, only a loss beyond it is told from the scene;
        do no harm keeps the rest as the camera gives them."""
        spread = self.extent_spread()
        ref_extent = self.extent_reference
        if spread is None or ref_extent is None:
            return True
        return float(extent) < ref_extent - EXTENT_Z * spread

    def ends_wander(self) -> bool:
        """Whether this camera's frames' ends wander by more than the veto's margin: the robust σ
        (interquartile range / :data:`IQR_PER_SIGMA`) of the block lows *and* of the block highs of
        the frames the gate did not find low (:attr:`end_lows`, :attr:`end_highs`) both above
        (1 − ``ratio``) × the camera's extent reference. False before the camera has an extent
        reference and ``prior_frames`` (at least 1) frames of ends.

        Why: the extent veto (:meth:`is_low`) rests on the camera's AGC putting every frame's
        extremes near the ends of its output scale, so a frame's extent is the camera's whatever
        the scene. A camera without that AGC (a Tau2/Quark in manual gain and level, FLIR app note
        102-PS242-100-01; a fixed temperature span) shows each scene at its own place and width on
        the scale: its frames' ends move with the scene's temperatures and its extent with the
        scene's span, and a narrow scene reads as a contrast loss (round 5's
        manual_agc_narrow_640x512: a 15-grey-level camera's clean frames sent to the contrast
        route, 15.6 dB from themselves). An AGC camera's ends stay within a small part of its
        extent (σ 0.000-0.009 on the 8-bit sets' train frames, HIT-UAV's cold end 0.12 of an
        extent near 0.9: docs/cameras.md "Session 15"); when both ends wander by more than the
        margin the veto judges a frame's extent with, that extent tells a contrast loss from the
        scene no better than chance, and do no harm says keep the frame as the camera gives it."""
        return self._extent_stats()[2]

    def is_low(self, span: float, extent: Optional[float] = None) -> bool:
        """True when the frame's contrast is low for this camera: ``extent`` below ``ratio`` × the
        camera's extent reference once it has one (and ``extent`` is given) and beyond the
        camera's own scatter (:meth:`beyond_scatter`), unless the camera's ends wander
        (:meth:`ends_wander`: then False); else ``span`` below ``ratio`` × the reference span
        (False with no reference)."""
        ref_extent = self.extent_reference
        if extent is not None and ref_extent is not None:
            return (float(extent) < self.ratio * ref_extent and self.beyond_scatter(extent)
                    and not self.ends_wander())
        ref = self.reference
        return ref is not None and float(span) < self.ratio * ref

    def noise_kept(self, noise: Optional[Sequence[float]]) -> bool:
        """Whether a frame under a noise-free verdict kept the camera's own noise amplitude, so that
        no contrast loss was applied to it (K23, docs/cameras.md "Session 19"): ``noise`` = (σ₁ of
        the frame, :func:`~tir.engines.fpn_gate.flat_noise_sigmas`; the camera's white-noise floor
        σ before the frame, ``FPNGate.floor_sigma``; frame units, engines/fpn_gate.py
        ``FPNGate.last_noise``), σ₁ within ``ratio`` × the floor and the floor / ``ratio`` (above it
        the frame carries more noise than the camera's, which a noise added after a loss gives:
        on the emulated dde_max_640x512 CN frames the FPN gate took for the camera's own noise were
        demoted without that bound, CN +2.44 → +1.28 dB) and only where the specs' weakest white
        noise ``noise[3]`` added after the mildest loss lands above that band,
        √((α_max·floor)² + σ_white²) > floor / ``ratio``: on a camera whose own noise is as strong
        as the added one (dde_max) a CN frame reads as the camera's noise. False
        without ``noise`` or when the mildest loss of the specs would not take a frame's σ₁ out of
        what the camera's own frames show: (1 − ``promote_ratio``) × floor under :data:`NOISE_STEP`
        (an 8-bit σ moves in steps of 0.74 grey level: a floor under 1.85 grey levels) or under
        :data:`EXTENT_Z` × the robust σ of the camera's own σ₁ (``noise[2]``, the third element; 0
        when absent), as K20 judges the extent beyond the camera's own scatter (a DDE camera's own
        "noise" is the scene's amplified texture and moves with the scene: emulated
        boson_dde_640x512's clean frames σ₁ 0.5-1.33 × its floor).

        Why: a contrast loss ``x·α + β`` after the camera scales everything the frame holds by α,
        the camera's own temporal noise too (σ → α·σ, α ≤ ``promote_ratio``), while a scene of small
        span does not touch the noise: an AGC that stretches it stretches its noise with it (σ up),
        a linear AGC at its maximum gain (Tau 2/Quark, FLIR app note 102-PS242-100-01, thermal_io.md
        §4.1) shows it at the gain's fixed noise (σ the same) and its extent follows the scene's
        span. So a frame whose noise is at the camera's floor was not contrast-compressed, however
        narrow its extent; the threshold is the veto's midpoint √α_max, as for the extent. Only for
        noise-free verdicts (the FPN gate found no noise above the camera's own): added noise
        after a contrast loss lifts σ by itself. Measured (tools/scripts/noise_vs_extent.py): the emulated
        max-gain camera's clean frames σ₁/floor 1.0 (all 12), its frames under the specs'
        ``contrast`` 0.33-0.67, under CB 0 (a blur removes the noise); the real 8-bit sets' floors
        (0-1.1 grey levels: JPEG, H.264) are under the resolution, so the test never acts there."""
        if noise is None or noise[0] is None or noise[1] is None:
            return False
        sigma, floor = float(noise[0]), float(noise[1])
        scatter = float(noise[2]) if len(noise) > 2 and noise[2] is not None else 0.0
        if not (math.isfinite(sigma) and math.isfinite(floor) and math.isfinite(scatter)):
            return False
        if (1.0 - self.promote_ratio) * floor < max(NOISE_STEP, EXTENT_Z * scatter):
            return False
        added = float(noise[3]) if len(noise) > 3 and noise[3] is not None else None
        if added is not None and math.hypot(self.promote_ratio * floor, added) <= floor / self.ratio:
            return False   # the specs' weakest added noise after a loss lands inside the camera's own band
        # at the camera's noise: neither compressed (under ratio × floor) nor added to (over floor /
        # ratio: the FPN gate may take added noise for a noisy camera's own, emulated dde_max's CN)
        return self.ratio * floor <= sigma <= floor / self.ratio

    def is_compressed(self, extent: float, ends: Optional[Tuple[float, float]] = None) -> bool:
        """True when the frame's contrast is clearly compressed for this camera, the promotion's
        test (module docstring): ``extent`` at most :attr:`promote_ratio` × the camera's extent
        reference and at least :attr:`promote_floor` × it (a frame flatter than the strongest
        contrast loss of the specs leaves of a frame normal for this camera, a constant frame, a lens cap, a uniform wall: nothing
        the contrast route knows how to give back, and stretching it amplifies its noise), and ``ends`` (the frame's :func:`lowpass_ends`) both inside the camera's: the
        low above the :data:`PROMOTE_END_PERCENTILE` th percentile of the lows of the camera's
        frames the gate did not find low (:attr:`end_lows`, any verdict: a camera the router
        calls noisy fills it as fast as another), the high below the (100 − it) th percentile of
        their highs. False without ``ends``, before the camera has an extent reference or
        ``prior_frames`` (at least 1) frames of ends."""
        ref_extent = self.extent_reference
        if ends is None or ref_extent is None or len(self.end_lows) < max(self.prior_frames, 1):
            return False
        if not self.promote_floor * ref_extent <= float(extent) <= self.promote_ratio * ref_extent:
            return False
        if not self.beyond_scatter(extent):
            return False
        low_end = float(np.percentile(self.end_lows, PROMOTE_END_PERCENTILE))
        high_end = float(np.percentile(self.end_highs, 100.0 - PROMOTE_END_PERCENTILE))
        return float(ends[0]) > low_end and float(ends[1]) < high_end

    def judge(self, task: str, span: float, extent: Optional[float] = None,
              ends: Optional[Tuple[float, float]] = None) -> str:
        """The verdict after the gate: ``task`` itself, its partner without contrast when
        ``task`` carries contrast and the frame is not low for this camera (:meth:`is_low`;
        counted in :attr:`demoted`), or its partner with contrast when ``task`` is in
        :attr:`gains` and the frame is compressed (:meth:`is_compressed`, needs ``ends``;
        counted in :attr:`promoted`). Records nothing (:meth:`add`)."""
        if extent is None and ends is not None:
            extent = float(ends[1]) - float(ends[0])
        task = self._demote(task, self.is_low(span, extent))
        return self._promote(task, task in self.gains and extent is not None and self.is_compressed(extent, ends))

    def step(self, task: str, span: float, extent: Optional[float] = None,
             ends: Optional[Tuple[float, float]] = None,
             noise: Optional[Sequence[float]] = None) -> Tuple[str, bool]:
        """One routed frame: (the verdict after the gate as :meth:`judge` gives it, whether the
        frame is low for this camera; a promoted frame is low), then its ``span`` (and ``extent``, or ``ends``: its
        :func:`lowpass_ends`, whose difference is the extent) join the history; the ends join the
        camera's ends (:attr:`end_lows`, :attr:`end_highs`) only when the frame is not low, and
        the tone history only when besides its verdict is in :attr:`tone_tasks` (the camera's own
        tone, not a contrast loss's nor a noise's), and its extent is held out of the camera's
        reference and scatter when it was found low against them (:meth:`own_extents`), unless the
        references are :attr:`pinned`. The references are computed once.
        With ``noise`` (the frame's σ₁, the camera's floor and its scatter, frame units; pass it only for a
        verdict the FPN gate left noise-free) a frame that kept the camera's noise
        (:meth:`noise_kept`) is neither low nor promoted."""
        if extent is None and ends is not None:
            extent = float(ends[1]) - float(ends[0])
        # a frame whose noise the camera's floor still shows was not contrast-compressed (K23)
        kept = self.noise_kept(noise)
        narrow = self.is_low(span, extent)   # the history keeps judging by the extent alone
        # judged against the camera's extents (not the start-up's span prior): held out of them
        held = narrow and self.extent_reference is not None
        low = narrow and not kept
        tone = not narrow and (self.tone_tasks is None or task in self.tone_tasks)
        # the promotion's test on this frame, before it joins the history (:meth:`promote_last`)
        self.last_compressed = extent is not None and not kept and self.is_compressed(extent, ends)
        task = self.promote_last(self._demote(task, low))
        if not self.pinned:
            # a held frame's ends wait for its run's end: a short run's join the camera's (add)
            pending = (ends, self.tone_tasks is None or task in self.tone_tasks) if held and ends is not None else None
            self.add(span, extent, None if narrow else ends, tone=tone, low=held, pending=pending)
        return task, low

    def _demote(self, task: str, low: bool) -> str:
        if task in self.partners and not low:
            self.demoted += 1
            return self.partners[task]
        return task

    def revoke(self) -> None:
        """Take the last promotion back from the count (:attr:`promoted`): another gate found the
        frame's low extent explained otherwise (the Restorer: the blur gate measured the frame
        soft for this camera, and a blur lowers a frame's extent by itself)."""
        self.promoted = max(self.promoted - 1, 0)

    def promote_last(self, task: str) -> str:
        """``task``'s partner with the contrast part when it is in :attr:`gains` and the last
        frame :meth:`step` saw was compressed for this camera (:meth:`is_compressed`; counted in
        :attr:`promoted`), else ``task``. For a verdict another gate changed after :meth:`step`
        (the Restorer: a ``blur`` verdict the blur gate found not soft becomes ``clean``; ``blur``
        is not in :attr:`gains` because a blur lowers the extent by itself, and the blur gate has
        just ruled that out)."""
        return self._promote(task, self.last_compressed)

    def _promote(self, task: str, compressed: bool) -> str:
        """``task``'s partner with the contrast part when the frame was ``compressed`` and ``task``
        is in :attr:`gains` (counted in :attr:`promoted`), else ``task``."""
        if compressed and task in self.gains:
            self.promoted += 1
            return self.gains[task]
        return task

    def add(self, span: float, extent: Optional[float] = None,
            ends: Optional[Tuple[float, float]] = None, tone: bool = True, low: bool = False,
            pending: Optional[Tuple[Tuple[float, float], bool]] = None) -> None:
        """Record one routed frame's low-pass span (and extent, or its :func:`lowpass_ends`) in the
        camera's history; its ends join the camera's ends (:attr:`end_lows`, :attr:`end_highs`)
        and, with ``tone``, its tone history. With ``low`` (the frame was found low for this camera,
        :meth:`step`) its extent is held out of the camera's reference and scatter
        (:meth:`own_extents`) until such frames are most of a full history window (more than
        ``window`` / 2 of them): then every one of them is taken as the camera's look (counted in
        :attr:`adopted`); a run of such frames that ends
        (a frame not ``low``) shorter than :attr:`loss_frames` joins them at once: a small sensor
        whose extent follows its scenes shows a narrow one now and then (seek_206x156: runs of 1-3
        routed frames), a loss that set in lasts. ``pending`` (a held frame's (ends, tone)) waits
        with its run: its ends join the camera's ends (and, with tone, its tone history) when the
        run ends short or is adopted, and are dropped when the run reaches :attr:`loss_frames`.
        """
        self.spans.append(float(span))
        if extent is None and ends is not None:
            extent = float(ends[1]) - float(ends[0])
        if extent is not None:
            if not low and 0 < self._run < self.loss_frames:
                # a short run of low frames ended: the camera's own scenes, not a loss that set in
                for i in range(len(self.extent_low) - min(self._run, len(self.extent_low)), len(self.extent_low)):
                    self.extent_low[i] = False
                self._flush_pending()
            self._run = self._run + 1 if low else 0
            if low and pending is not None:
                self._pending.append(pending)
            if self._run >= self.loss_frames:
                self._pending = []   # a loss that set in: its ends are not the camera's
            self.extents.append(float(extent))
            self.extent_low.append(bool(low))
            if low and 2 * sum(self.extent_low) > self.extent_low.maxlen:
                # most of a full window is this look: it is the camera's now (not most of a short
                # history: a loss that set in 10 s after the start was adopted 10 s later)
                held = sum(self.extent_low)
                self.extent_low = deque([False] * len(self.extents), maxlen=self.extents.maxlen)
                self._run = 0
                self._flush_pending()
                self.adopted += 1
                self._changes += 1   # the reference said below is the adopted look's
                log.info("contrast gate: %d routed frames held as a contrast loss are most of the camera's "
                         "window: taken as its look from now on (extent reference %.3f)", held,
                         self.extent_reference or 0.0)
        if ends is not None:
            self._add_ends(ends, tone)
        self._changes += 1

    def _add_ends(self, ends: Tuple[float, float], tone: bool) -> None:
        """One frame's block (low, high) joins the camera's ends and, with ``tone``, its tone history."""
        self.end_lows.append(float(ends[0]))
        self.end_highs.append(float(ends[1]))
        if tone:
            self.lows.append(float(ends[0]))
            self.highs.append(float(ends[1]))
            self._tone_added += 1

    def _flush_pending(self) -> None:
        """The held frames' ends waiting with their run (:meth:`add`) join the camera's ends, and those
        of tone verdicts its tone history."""
        for ends, tone in self._pending:
            self._add_ends(ends, tone)
        self._pending = []

    def own_extents(self) -> list:
        """The extents (frame units, > 0) of :attr:`extents` that show the camera's own look: every
        one but those of frames found low for this camera when they came (:attr:`extent_low`).

        Why (docs/cameras.md "Session 22"): the reference and the scatter (:meth:`extent_spread`,
        the interquartile range) judge whether a frame is low; taken over every routed frame, a
        contrast loss that set in on a running camera joined them, and once its frames were a
        quarter of the history the quartiles reached them: the loss was the camera's scatter, its
        frames passed through after about a dozen verdicts (3 s at 30 fps, router every 8 frames;
        chips_lepton35, 192-frame segments: the contrast route on 88 of 192 frames), and the widened
        scatter kept the gate from calling any frame low for the whole window after (the next CN
        segment: never CN). Held out, such frames weigh in only when they are most of a full
        window (:meth:`add`): the median itself breaks at a half, so a camera that shows a look
        that long has it (a camera whose own look changed: about a minute of it at 30 fps, router
        every 8 frames, window 512; counted against the window, not the history so far, since a
        loss that set in 10 s after a start was otherwise adopted 10 s later), and a run of them
        shorter than :attr:`loss_frames` joins them when it ends (a small sensor whose extent
        follows its scenes)."""
        return [e for e, low in zip(self.extents, self.extent_low) if e > 0 and not low]

    def tone_reference(self) -> Optional[Tuple[float, float]]:
        """The camera's own extremes: the :data:`TONE_PERCENTILES` (medians) of its tone history of
        block lows and highs (frames neither low in contrast nor noisy, :meth:`step`; frames shown
        with :meth:`add`), frame units; None before ``prior_frames`` (at least 1) of them or when
        they are not apart by :data:`MIN_TONE_EXTENT`."""
        # asked several times per restored frame (Restorer.plan, runner, align); the history
        # changes only when a frame joins it, so the percentiles are taken once per change
        if self._tone_cache is not None and self._tone_cache[0] == self._tone_added:
            return self._tone_cache[1]
        ref = None
        if len(self.lows) >= max(self.prior_frames, 1):
            lo = float(np.percentile(self.lows, TONE_PERCENTILES[0]))
            hi = float(np.percentile(self.highs, TONE_PERCENTILES[1]))
            ref = (lo, hi) if hi - lo >= MIN_TONE_EXTENT else None
        self._tone_cache = (self._tone_added, ref)
        return ref

    def tone_spread(self) -> Optional[Tuple[float, float]]:
        """How far this camera's frames' extremes wander about its tone reference: the robust σ
        (interquartile range / :data:`IQR_PER_SIGMA`) of its tone history of block lows and of
        block highs, frame units; None while :meth:`tone_reference` is None.

        A camera whose AGC pins both ends of every frame to its output range (most: σ 0.000-0.009 on
        the 8-bit sets' train frames) has a tone a restored frame's ends can be mapped onto; a
        camera whose scenes move an end (HIT-UAV's cold end: σ 0.122; docs/cameras.md "Session
        15") has no fixed value there."""
        ref = self.tone_reference()
        if ref is None:
            return None
        # asked once per aligned frame; the history changes only when a frame joins it
        if self._spread_cache is not None and self._spread_cache[0] == self._tone_added:
            return self._spread_cache[1]
        spread = (iqr_sigma(self.lows), iqr_sigma(self.highs))
        self._spread_cache = (self._tone_added, spread)
        return spread

    def own_error(self, prior_sigma: float) -> Tuple[float, float]:
        """The rms error (frame units) of a restored frame's own low and high end as estimates
        of the clean frame's, for this camera: empirical Bayes. The mean square of
        :attr:`own_devs` (own end − camera's median) is the own error's mean square plus the
        camera's spread² (:meth:`tone_spread`; independent), so their difference estimates the
        own error's; it is shrunk towards ``prior_sigma``² with the weight of ``prior_frames``
        frames, as the gate's span reference is (module docstring). A camera whose restored
        frames' ends fall far from its own (a route that removes the camera's own shading, or
        frames whose contrast part was missed) gets a large error, so its ends go to the
        camera's; one whose restored ends follow its scenes keeps about ``prior_sigma``.

        Args:
            prior_sigma: the error before this camera's frames say otherwise (> 0).

        Returns:
            (σ_low, σ_high), each > 0."""
        spread = self.tone_spread() or (0.0, 0.0)
        n, k = len(self.own_devs), max(self.prior_frames, 1)
        out = []
        for end in (0, 1):
            est = max(self._own_sq[end] / n - spread[end] ** 2, 0.0) if n else 0.0
            out.append(math.sqrt((k * prior_sigma ** 2 + n * est) / (k + n)))
        return out[0], out[1]

    def _add_own(self, dev: Tuple[float, float]) -> None:
        """Append one frame's (own end − camera's median) to :attr:`own_devs`, keeping the sums of
        squares :meth:`own_error` reads (O(1) per frame; the oldest leaves a full window)."""
        if len(self.own_devs) == self.own_devs.maxlen:
            old = self.own_devs[0]
            self._own_sq = [self._own_sq[i] - old[i] ** 2 for i in (0, 1)]
        self.own_devs.append((float(dev[0]), float(dev[1])))
        self._own_sq = [self._own_sq[i] + dev[i] ** 2 for i in (0, 1)]

    def align(self, restored: np.ndarray, fallback: Optional[Tuple[float, float]] = None,
              own_sigma: Optional[float] = None) -> np.ndarray:
        """Map each restored frame's extremes onto the camera's own (the tone alignment after a
        contrast-carrying or noise-carrying task; module docstring): y' = lo_t + (y − lo_y)·
        (hi_t − lo_t) / (hi_y − lo_y), with (lo_y, hi_y) the frame's :func:`lowpass_ends` and
        (lo_t, hi_t) :meth:`tone_reference`, or ``fallback`` (frame units) while the camera has
        none, clipped to [0, 1]. Frames pass unchanged without either, when flat (extent under
        :data:`MIN_TONE_EXTENT`), empty or not finite. Counted in :attr:`aligned`.

        With ``own_sigma`` and the camera's reference, each end's target is the inverse-variance
        weighted mean of two estimates of the clean frame's end (e.g. Kay, *Fundamentals of
        Statistical Signal Processing: Estimation Theory*, 1993, §6; the best linear unbiased
        combination of independent estimates): the camera's (σ: :meth:`tone_spread` at that end)
        and the restored frame's own (σ_own: :meth:`own_error` from ``own_sigma`` and this camera's
        restored frames so far, each joining :attr:`own_devs`), lo_t = w·lo_ref + (1 − w)·lo_y with
        w = σ_own² / (σ_own² + σ_end²). An end the camera's AGC pins (σ_end ≪ own_sigma)
        goes to the camera's value as before; an end the camera's scenes move keeps mostly the
        frame's own.

        Args:
            restored: (N, 1, H, W) float32 restored frames in [0, 1].
            fallback: (low, high) to map onto when the camera has no tone reference yet, or None.
            own_sigma: prior rms error (frame units) of the restored frame's own block extremes as
                an estimate of the clean frame's, or None: the camera's ends alone.

        Returns:
            (N, 1, H, W) float32 (a new array when any frame is aligned, else ``restored``).

        Raises:
            ValueError: ``own_sigma`` is not a finite number > 0.
        """
        if own_sigma is not None and not (math.isfinite(float(own_sigma)) and float(own_sigma) > 0.0):
            raise ValueError(f"align needs own_sigma > 0, got {own_sigma}")
        ref = self.tone_reference()
        weights = (1.0, 1.0)
        weighed = ref is not None and own_sigma is not None
        if weighed:
            weights = tuple(e * e / (e * e + sd * sd)
                            for e, sd in zip(self.own_error(float(own_sigma)), self.tone_spread()))
        if ref is None and fallback is not None and fallback[1] - fallback[0] >= MIN_TONE_EXTENT:
            ref = (float(fallback[0]), float(fallback[1]))
        y = np.asarray(restored, dtype=np.float32)
        if ref is None:
            return y
        out = None
        for i in range(y.shape[0]):
            frame = y[i].reshape(y.shape[-2:])
            try:
                lo, hi = lowpass_ends(frame)   # refuses a non-finite (or float32-overflowing) frame
            except ValueError:
                continue
            if hi - lo < MIN_TONE_EXTENT:
                continue
            if weighed:
                self._add_own((lo - ref[0], hi - ref[1]))
            t_lo = weights[0] * ref[0] + (1.0 - weights[0]) * lo
            t_hi = weights[1] * ref[1] + (1.0 - weights[1]) * hi
            if t_hi - t_lo < MIN_TONE_EXTENT:
                continue
            scale = (t_hi - t_lo) / (hi - lo)
            if out is None:
                out = y.copy()
            # ref_lo + (y − lo)·scale, in place (one pass each: ~0.2 ms at 640×512 against ~1.9 ms
            # for the expression with its temporaries)
            view = out[i]
            view *= np.float32(scale)
            view += np.float32(t_lo - lo * scale)
            np.clip(view, 0.0, 1.0, out=view)
            self.aligned += 1
            self.last_scale = float(scale)
        return y if out is None else out

    def restart(self) -> bool:
        """Forget the camera's extent and tone history (spans, extents, block lows/highs, ends):
        another camera, or the same one in another state (engines/restorer.py
        ``Restorer.new_camera``), has its own look; the reference falls back to the bundle's prior
        as at start-up. Counters stay. Pinned references (``tir run --reference``) stay.

        Returns:
            True when the history was forgotten, False when it is pinned."""
        if self.pinned:
            return False
        for history in (self.spans, self.extents, self.extent_low, self.lows, self.highs, self.end_lows,
                        self.end_highs):
            history.clear()
        self._tone_cache = None
        self._spread_cache = None
        self._run = 0
        self._pending = []
        self._changes += 1
        self.own_devs.clear()
        self._own_sq = [0.0, 0.0]
        return True

    def carry_from(self, old: "ContrastGate") -> None:
        """Take over ``old``'s camera history and demoted and promoted counts (a bundle hot-swap: the camera is
        the same, so its reference must not start cold again; engines/hotswap.py). The history
        keeps this gate's window (the newest spans when it is shorter); prior and ratio stay
        this bundle's."""
        self.spans.extend(old.spans)
        self.extents.extend(old.extents)
        flags = list(getattr(old, "extent_low", ()))
        self.extent_low.extend(flags if len(flags) == len(old.extents) else [False] * len(old.extents))
        self._run = int(getattr(old, "_run", 0)) if len(flags) == len(old.extents) else 0
        self.lows.extend(old.lows)
        for dev in getattr(old, "own_devs", ()):
            self._add_own(dev)
        self.highs.extend(old.highs)
        self.end_lows.extend(getattr(old, "end_lows", ()))
        self.end_highs.extend(getattr(old, "end_highs", ()))
        self._tone_added += len(old.lows)
        self.aligned += int(old.aligned)
        self.demoted += int(old.demoted)
        self.promoted += int(getattr(old, "promoted", 0))
        self.adopted += int(getattr(old, "adopted", 0))
        self.pinned = self.pinned or bool(getattr(old, "pinned", False))
        self._changes += 1

    def status(self) -> dict:
        """``reference`` (span, or None), ``extent_reference`` (or None), ``frames`` in the
        history, ``ratio``, ``demoted``, ``promoted`` (verdicts given the contrast part) and
        ``promote_ratio``; ``held`` (frames of the history found low, held out of the camera's
        extent reference: :meth:`own_extents`; they stay counted until they leave the window),
        ``holding`` (the routed frames in a row found low up to now: a loss going on; 0 once a frame
        is not) and ``adopted`` (times such frames became the camera's look); ``tone_reference`` ([low, high], or None), ``aligned``
        (restored frames whose tone was mapped to the camera's) and ``tone_scale`` (the last
        alignment's scale, or None)."""
        ref, ref_extent, tone = self.reference, self.extent_reference, self.tone_reference()
        return {"reference": None if ref is None else round(ref, 4),
                "extent_reference": None if ref_extent is None else round(ref_extent, 4),
                "frames": len(self.spans), "ratio": round(self.ratio, 4), "demoted": self.demoted,
                "promoted": self.promoted, "promote_ratio": round(self.promote_ratio, 4),
                "held": int(sum(self.extent_low)), "holding": self._run, "adopted": self.adopted,
                "tone_reference": None if tone is None else [round(tone[0], 4), round(tone[1], 4)],
                "aligned": self.aligned,
                "tone_scale": None if self.last_scale is None else round(self.last_scale, 4)}


def span_summary(spans: Sequence[float]) -> dict:
    """``{"median", "p10", "p90", "frames"}`` of low-pass spans (:func:`lowpass_span`), the form a
    router entry's ``contrast_span`` takes.

    Raises:
        ValueError: no spans.
    """
    v = np.asarray(list(spans), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no spans to summarise")
    return {"median": float(np.median(v)), "p10": float(np.percentile(v, 10)),
            "p90": float(np.percentile(v, 90)), "frames": int(v.size)}


def contrast_prior(frames: np.ndarray) -> dict:
    """The training prior of the low-pass span, stored in a router entry as ``contrast_span``.

    Args:
        frames: (N, H, W) float32 clean training frames in [0, 1] (as the router trained on them).

    Returns:
        ``{"median": float, "p10": float, "p90": float, "frames": N, "grid": [80, 64]}``
        (:data:`SPAN_GRID`).

    Raises:
        ValueError: no frames, or frames that are not (N, H, W).
    """
    x = np.asarray(frames, dtype=np.float32)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"contrast_prior expects (N, H, W) frames, got shape {x.shape}")
    return {**span_summary([lowpass_span(f) for f in x]), "grid": list(SPAN_GRID)}
