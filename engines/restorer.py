"""Runtime routing: restore each frame with the route its degradation needs.

A :class:`Restorer` wraps a model bundle (engines/bundle.py): one restoration engine per task
(loaded lazily, on the first frame routed to it) and the degradation router (engines/router.py).
It looks like an engine to the pipeline: ``infer(batch) -> batch``, ``multiple``, ``name``.

Routing policy:
- the router runs on the newest frame of a batch every ``every`` frames; frames whose meta says
  ``ffc`` (the camera is doing a flat-field correction, thermal_io.md §5: a shutter image, not
  the scene), and frames that hold no scene (:func:`scene_free`: the flag of an FFC the stream
  did not mark), are not looked at, and the first frame after one is routed. Pass ``meta`` to :meth:`infer` (a dict, or one per frame) or call
  :meth:`observe` yourself;
- a frame whose meta carries ``camera_change`` (edge/pipeline/stages.py ``Preprocess``: the source
  reconnected, or the frame size changed) starts a new camera: the
  gates forget the old camera's histories, routing starts afresh, and every frame is routed until
  the FPN and blur gates have the new camera's references (:meth:`new_camera`); nothing in the
  frames' content restarts them, so a sustained degradation on an unchanged camera stays restored;
- the route is left only after ``hysteresis`` verdicts in a row disagree with it (no flicker
  between routes on borderline frames), for the task a strict majority of them names, else for
  pass-through (the router named no one task: do no harm), but never for a route on a verdict that
  says the frames are clean (the oldest vote drops out and the next verdicts decide); a verdict against the route brings the
  others sooner, every ``ceil(every / (hysteresis - 1))`` frames, so a switch is decided within
  ``every`` frames of the first verdict against the route (``tir eval --sequence``, docs/eval.md:
  with the next verdicts on the schedule a degradation was taken up, and a route left, 16 frames
  late at every=8, hysteresis=3; now 8); at start-up, with no route yet, the
  first confident decision is taken at once. Requiring the *same* new task every time (before)
  kept a route none of the verdicts named for as long as they alternated: a column-FPN camera whose
  first verdict was BN ran BN (−3.9 dB) while the router went on naming CN, noise and clean, and
  noisy sky frames called BN and noise in turn were never restored;
- ``clean`` routes to pass-through (the frame is returned unchanged);
- do no harm: ``unknown`` (best codebook similarity below the calibrated threshold) and an
  uncertain verdict are votes for pass-through, with the same hysteresis as any switch (never
  "keep the last route": a clean scene after a degraded one must not stay on that route); both are
  counted in :meth:`status`. Uncertain: the router's probability that the frame carries the parts
  of the gated verdict it named (the sum over every class carrying at least them,
  :meth:`Restorer._route_confidence`) is below ``min_confidence``, and no gate measured a part; a
  choice between classes that agree on a part (CN or noise) is not uncertainty about that part
  (session 22: before, the nearest class's probability alone);
- three gates then check the verdict against what the frame itself shows (:meth:`_gate`), in
  this order: the FPN gate (engines/fpn_gate.py) adds the noise part when the frame carries the
  column FPN of an uncalibrated FPA, and makes an unknown verdict the noise task when the frame's
  white noise is clearly above the camera's floor; the contrast gate (engines/contrast_gate.py)
  takes the contrast part away when the frame's contrast is normal for this camera, and gives a
  clean, unknown, noise or BN verdict the contrast part when the frame's contrast is clearly
  compressed for this camera (its extent at most the specs' mildest contrast factor × the
  camera's, both its ends inside the camera's own; K10); the blur
  gate (engines/blur_gate.py) takes the blur part of a noise-free verdict away when the frame is
  not soft for this camera, and sets the blur part of a noise-carrying one when its measure
  under noise is clear;
- the router and the gates see a frame whose count step is coarser for its span than one 8-bit grey
  level (a Y16 camera of 0.1 K per count whose scene spans a few dozen counts) de-quantised, each
  pixel kept inside its own count step (:func:`dequantised`, K19: the contours of such counts read
  as sharp detail, and blurred frames were called clean); the route restores the frame as it is;
- column offsets removed between verdicts are dropped on the first frame that no longer carries
  them, and that frame is routed at once (:meth:`Restorer._offsets_renewed`, K18: a flat-field
  correction the stream did not mark renews an FPA's offsets);
- a route that only undoes a blur gives a frame back as it came in when its output moved the
  frame's tone by more than the strongest blur of the specs can change the frame
  (:meth:`Restorer._keep_blur_tone`, K17: a blur keeps every region's mean; on a fixed-gain
  camera's posterised frames the blur route lifted the tone instead), and, on a Y16 camera whose
  own noise does not dither its counts, when the strongest blur changes the frame by less than
  half a count step (rounding erased what it took; :meth:`Restorer._undithered_step`, session 21);
- after a contrast-carrying task the restored frame's extremes are mapped onto the camera's own
  (``tone_align``, :meth:`ContrastGate.align`); after a noise-carrying task without a contrast
  part (noise, BN) too, or onto the frame's own while the camera has no tone reference: noise has
  no tone of its own (:meth:`Restorer.plan`). After noise and BN each end goes to the
  inverse-variance weighted mean of the camera's end and the restored frame's own
  (:data:`NOISE_TONE_SIGMA`): an end the camera's scenes move (a UAV camera's cold end) is not
  forced onto the camera's median;
- ``task=...`` forces one route and never runs the router.

Deploy (the manifest's ``deploy``, or ``deploy=...``): ``routes`` runs the route engine of the
current task, as above; ``student`` runs the bundle's distilled student (engines/training/distill.py,
ONNX Runtime only) for every frame that is not passed through, with a *prompt mix* instead of a
hard switch: the router's softmax scores over its classes (cosine/temperature, after the
adaptation map) of the latest verdict, mapped onto the student's prompt slots by name and
renormalised (a forced ``task`` is a one-hot prompt). Pass-through (clean, unknown, uncertain,
nothing chosen yet) follows the same hysteresis policy as the routes. ``auto`` decides per task
(:attr:`Restorer.deploy_tasks`, the manifest's ``auto_deploy`` table, engines/bundle.py
``choose_auto_deploy``): the routing and the gates run exactly as above, then the current task
runs its route or the student (with the prompt mix, as ``student``) as the table names it; the
student is loaded only when a task of the table uses it, and only on first use.

``tone`` in the table (a contrast-carrying task only): the contrast part is restored by the
camera's own tone, the rest by the partner's network (contrast → nothing, CB → the blur task's
route or student; :meth:`Restorer.runner`), then the output's extremes are mapped onto the
camera's (the tone alignment below). Why: the specs' contrast loss is linear (x·α + β,
RandomBrightnessContrast, ecmrnet.md §1.3), as a loss of transmission with path radiance is, so
its inverse is the linear map back onto the camera's extremes, and the partner's network is a
third of the compound route's cost (CB: 1.05 against 3.06 GMAC). Chosen per task on the user's
path by measurement (``tir deploy --measure``, docs/student.md); before the camera's tone
reference exists the task runs its own route.

Adaptation to the user's camera (engines/adapt.py): a router entry with an ``adaptation`` map
(written by ``tir adapt``) is applied to every embedding before classification. With
``adapt=N`` (``tir run --adapt N``) the router runs on every frame of the first N non-FFC
frames, their embeddings are collected, the map is fitted at N and used from then on (in
memory; ``adapt_save=DIR`` also writes an adapted copy of the bundle there). The state
(``collecting k/N``, ``adapted``, ``refused: reason``) is in :meth:`status` under ``adapt``.
"""
from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .adapt import ADAPTATION_KEY, OnlineAdapter, apply_adaptation
from .blur_gate import BlurGate, blur_below_step, blur_keeps_tone, blur_only_tasks, gaussian_blur
from .borders import BorderTracker, inner, pasted
from .bundle import TONE
from .contrast_gate import ContrastGate, lowpass_ends, lowpass_span, noise_free_verdicts
from .fpn_gate import FPNGate, noise_sigma, offsets_shown, repair_dead_columns, subtract_offsets
from .router import (CLEAN, DEFAULT_TEMPERATURE, UNKNOWN, added_rows, classify, parts_confidence, prepare_frames,
                     task_parts)

log = logging.getLogger(__name__)

PASSTHROUGH = "passthrough"
#: what :attr:`Restorer.runs` names the removal of column offsets (engines/fpn_gate.py)
DESTRIPE = "destripe"
#: below this softmax probability of its parts (:meth:`Restorer._route_confidence`) a verdict counts as uncertain
DEFAULT_MIN_CONFIDENCE = 0.5
#: rms error (frame units) of a noise task's restored frame's own block extremes as an estimate of
#: the clean frame's, the weight of the frame's own ends against the camera's in the tone
#: alignment after noise and BN (:meth:`ContrastGate.align` ``own_sigma``). Measured on val with
#: the alignment off (the shipped bundle, 12 frames per set and task, noise and BN; scratch
#: /work/runs/s15/own.py, docs/cameras.md "Session 15"): 0.014-0.078 per set, task and end over
#: roadscene, hit_uav, m3svd_magnity, anti_uav and chips_lepton35, 0.043 pooled (rms).
NOISE_TONE_SIGMA = 0.043


def _unchanged(x: np.ndarray) -> np.ndarray:
    return x


class _PromptedStudent:
    """The student with fixed prompt weights, as an engine with ``infer(batch)`` (no
    ``pipeline()``: it runs on ONNX Runtime only)."""

    def __init__(self, engine, weights: np.ndarray):
        self.engine, self.weights = engine, weights
        self.multiple = getattr(engine, "multiple", 1)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self.engine.infer(batch, self.weights), dtype=np.float32)


def _as_batch(batch) -> np.ndarray:
    x = np.asarray(batch, dtype=np.float32)
    if x.ndim == 2:
        x = x[None, None]
    elif x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"Restorer expects N×1×H×W frames, got shape {x.shape}")
    return x


def _norm_span(meta) -> Optional[float]:
    """The counts the newest frame's [0, 1] span stands for: ``hi - lo`` of its ``meta["norm"]``
    (edge/pipeline/stages.py ``Preprocess``); None without one (frames given without meta)."""
    if isinstance(meta, (list, tuple)):
        return _norm_span(meta[-1]) if meta else None
    norm = meta.get("norm") if isinstance(meta, Mapping) else None
    if not isinstance(norm, Mapping):
        return None
    try:
        span = float(norm["hi"]) - float(norm["lo"])
    except (KeyError, TypeError, ValueError):
        return None
    return span if np.isfinite(span) and span > 0.0 else None


def _counts_scale(meta) -> Optional[float]:
    """The camera's count steps one unit of the newest frame's [0, 1] model input stands for,
    ``(hi - lo) / count_step`` of its ``meta["norm"]`` (edge/pipeline/stages.py ``Preprocess``), for
    a Y16 (scene-referred) frame: its ``source_bits`` is not 8 (edge/pipeline/stages.py
    ``display_referred_range``). None for a display-referred (8-bit) frame, whose map is fixed and
    whose noise the camera's AGC already scaled, and without ``meta["norm"]``. The FPN gate judges a
    Y16 frame's white noise against the camera's floor in these units too (engines/fpn_gate.py
    ``FPNGate.counts_limit``)."""
    if isinstance(meta, (list, tuple)):
        return _counts_scale(meta[-1]) if meta else None
    if not isinstance(meta, Mapping) or meta.get("source_bits") == 8:
        return None
    span, quantum = _norm_span(meta), _count_quantum(meta)
    if span is None or quantum is None:
        return None
    return 1.0 / quantum


def _count_quantum(meta) -> Optional[float]:
    """The newest frame's count step in its [0, 1] model input: ``count_step`` (1 when absent) over
    ``hi - lo`` of its ``meta["norm"]`` (edge/pipeline/stages.py ``Preprocess``); None without one."""
    if isinstance(meta, (list, tuple)):
        return _count_quantum(meta[-1]) if meta else None
    span = _norm_span(meta)
    if span is None:
        return None
    try:
        step = float(meta["norm"].get("count_step", 1))
    except (TypeError, ValueError):
        return None
    return step / span if np.isfinite(step) and step > 0.0 else None


#: :meth:`Restorer._released`: a blur-carrying route passes frames through once this many frames in
#: a row under it read clearly sharp (:meth:`~tir.engines.blur_gate.BlurGate.shows_sharp`): one such
#: read alone let 5 of 40 frames of a lasting blur through on the 160×120 Lepton set (docs/cameras.md
#: "Session 23")
SHARP_RUN = 2
#: :func:`dequantised`: the finest count step the router and the gates know, in the [0, 1] model
#: input: one grey level of an 8-bit camera (its full-scale map, edge/normalize.py), the coarsest
#: quantisation of every frame the router was trained on
KNOWN_QUANTUM = 1.0 / 255.0
#: :meth:`Restorer._router_view`: a frame whose white noise (:func:`~tir.engines.fpn_gate.noise_sigma`)
#: is at least this share of its count step is dithered by it: rounding then adds a white error
#: independent of the scene and draws no contours (Widrow, Kollár & Liu, "Statistical theory of
#: quantization", IEEE Trans. Instrum. Meas. 45(2), 1996: Gaussian noise of σ ≥ q/2 makes the
#: quantisation error practically uniform and uncorrelated with the signal), so it is shown as it is
DITHER_SHARE = 0.5
#: :func:`dequantised`: σ in px of the smoothing whose values are kept inside each pixel's count
#: step
DEQUANT_SIGMA = 2.0


def _coarse(quantum: Optional[float]) -> bool:
    """Whether a count step (:func:`_count_quantum`) is coarser than one 8-bit grey level
    (:data:`KNOWN_QUANTUM`): the frames the router and the gates may see de-quantised
    (:meth:`Restorer._router_view`)."""
    return quantum is not None and quantum > KNOWN_QUANTUM * (1.0 + 1e-6)


def dequantised(frame: np.ndarray, quantum: float, sigma: float = DEQUANT_SIGMA) -> np.ndarray:
    """A frame whose counts are coarse for its span, as the router and the gates are shown it (K19):
    each pixel moved toward its neighbourhood's Gaussian mean (σ ``sigma`` px) but kept inside its
    own count step, ``clip(G(x), x − q/2, x + q/2)`` (one projection onto the set of frames that
    round to the same counts, the consistency step of set-theoretic de-quantisation, e.g. Youla &
    Webb, "Image restoration by the method of convex projections", IEEE TMI 1(2), 1982). On a
    camera of 0.1 K per count whose scene spans a few dozen counts (an Optris-like Y16 camera
    under a contrast loss), a step of 1/60 of the normalised span is a hard contour every few
    pixels of a smooth slope, which the router, trained on frames quantised no coarser than one
    8-bit grey level (:data:`KNOWN_QUANTUM`), read as sharp detail: blurred frames were called
    clean. The frame itself is restored as it is; this is what the router and the gates see.

    Args:
        frame: (H, W) float32 model input in [0, 1].
        quantum: the count step in the same units (> 0; :func:`_count_quantum`).
        sigma: σ in px of the smoothing (> 0).

    Returns:
        (H, W) float32, every pixel within ``quantum``/2 of ``frame``'s.
    """
    x = np.asarray(frame, dtype=np.float32)
    smooth = gaussian_blur(x, sigma)
    half = np.float32(0.5 * quantum)
    return np.clip(smooth, x - half, x + half).astype(np.float32)


#: :func:`on_count_grid`: how far (in [0, 1] model units) a value may lie off its count grid and
#: still be on it: float32 rounding of ``(count − lo) / span`` is ~1e-7, and every step this is
#: asked about is coarser than one 8-bit grey level (3.9e-3)
GRID_TOL = 1e-5
#: :func:`on_count_grid`: the least share of a frame's unclipped pixels on the grid: a step claimed
#: k times the true one puts 1/k of them on it by chance (≤ 1/2), a right one all but the few a
#: defect repair replaced
GRID_SHARE = 0.9
#: :func:`on_count_grid`: the most pixels it reads (a larger frame is subsampled evenly)
GRID_SAMPLES = 1 << 16


def on_count_grid(frame: np.ndarray, quantum: float) -> bool:
    """Whether a frame's values lie on the grid of a count step ``quantum``: all differences
    between its unclipped pixels (0 < x < 1) multiples of ``quantum`` to within :data:`GRID_TOL`,
    for at least :data:`GRID_SHARE` of them (measured against their median pixel).
    The counts a camera delivers are integers times its step and the normaliser maps them
    linearly (edge/normalize.py), so a frame of the step its meta states is on that grid (every
    frame of the emulated Y16 cameras: 100 %); a step that is not the frame's (a meta of another
    scale, a step larger than the span, a frame resampled or filtered after it was counted) leaves
    its pixels off it, and de-quantising by it (:func:`dequantised`) would move them by up to half
    that step: a sharp frame claimed at 64 counts of a 255-count span was shown to the router
    smoothed by up to 1/8 of its span.

    Args:
        frame: (H, W) float32 model input in [0, 1].
        quantum: the claimed count step in the same units (> 0).

    Returns:
        True when the frame is on the grid; False for a frame with fewer than 2 unclipped pixels.
    """
    x = np.asarray(frame, dtype=np.float32)
    stride = max(1, int(np.sqrt(x.size / GRID_SAMPLES)))
    v = x[::stride, ::stride].ravel().astype(np.float64)
    v = v[(v > 0.0) & (v < 1.0)]
    if v.size < 2 or not quantum > 0.0:
        return False
    d = v - np.partition(v, v.size // 2)[v.size // 2]   # the median pixel: a value of the frame
    off = np.abs(d - quantum * np.round(d / quantum))
    return float(np.mean(off <= GRID_TOL)) >= GRID_SHARE


def _is_ffc(meta) -> bool:
    """True when the newest frame's meta says a flat-field correction is in progress."""
    if meta is None:
        return False
    if isinstance(meta, (list, tuple)):
        return bool(meta) and _is_ffc(meta[-1])
    return bool(meta.get("ffc", False))


#: after a camera change every frame is routed for at most this many times ``every`` frames while
#: the FPN or blur gate has no reference (:meth:`Restorer._warming`): the frames the schedule takes
#: to route the gates' minimum of 8 frames (MIN_FLOOR_FRAMES, blur MIN_FRAMES), so a camera whose
#: verdicts never fill the blur history costs no more router runs than that
WARM_FRAMES_PER_EVERY = 8


#: :func:`scene_free`: the block side (samples) whose means are compared with the pixels', and the
#: largest grid (samples along the shorter side) measured: a larger frame is subsampled onto it
SCENE_BLOCK, SCENE_GRID = 4, 128
#: :func:`scene_free`: standard errors above white noise's block variance a frame may lie and still
#: hold no scene (a one-sided 3σ bound on the ratio, whose standard error is √(2/n) for n blocks)
SCENE_SIGMAS = 3.0
#: :func:`scene_free`: the least share of a frame's variance left after its row and column means
#: for the rest to be measured (std 1 %: more than float rounding); a frame whose variation lies
#: along its rows and columns alone (a ramp, a shading, stripes) is structure, not the sensor's noise
SCENE_MIN_RESIDUAL = 1e-4


def scene_free(frame: np.ndarray) -> bool:
    """Whether a frame holds no scene, only the sensor's own noise: the closed shutter (flag) of a
    flat-field correction as a camera without a control channel delivers it (thermal_io.md §5:
    the flag is a uniform scene; a host's per-frame min/max AGC, GetThermal's and BosonUSB's,
    §3.3, stretches its white noise over the whole scale), or a lens cap.

    The measure: the frame (float, any range; subsampled by ⌊min(H, W) / 128⌋ when larger) less
    its column and row means (a column-parallel read-out's offsets, row offsets and any additive
    separable shading: the flag carries the sensor's fixed patterns too), averaged over
    ``SCENE_BLOCK``-sample blocks. White noise gives a block-mean variance of 1/16 the pixels'
    (ratio ``16·var(blocks)/var(pixels)`` = 1, standard error √(2/n) over n blocks); a scene
    through optics is correlated over many pixels and its ratio is far larger (natural scenes'
    power falls with spatial frequency). A frame is scene-free when the ratio is within
    ``SCENE_SIGMAS`` standard errors of 1. Measured (docs: round 5): the val frames of the six
    registered sets under every task of the specs, and every emulated camera's clean frames,
    read 1.88 or more; the FFC flag frames 0.95-0.96. A constant frame, and one whose variation
    lies along its rows and columns alone (residual variance under ``SCENE_MIN_RESIDUAL`` of the
    frame's), is not counted here (the contrast gate's floor handles a constant frame).

    Args:
        frame: (H, W) array, any real dtype (a model input in [0, 1]).

    Returns:
        True when the frame is the sensor's noise alone.
    """
    f = np.asarray(frame, dtype=np.float32)
    step = max(1, min(f.shape) // SCENE_GRID)
    f = f[::step, ::step]
    h, w = (f.shape[0] // SCENE_BLOCK) * SCENE_BLOCK, (f.shape[1] // SCENE_BLOCK) * SCENE_BLOCK
    if h == 0 or w == 0:
        return False
    f = f[:h, :w]
    r = f - f.mean(0, keepdims=True) - f.mean(1, keepdims=True) + f.mean()
    var = float(r.var(dtype=np.float64))
    if not var > SCENE_MIN_RESIDUAL * float(f.var(dtype=np.float64)):
        return False   # all its variation lies along rows and columns (a ramp, a shading): structure
    blocks = r.reshape(h // SCENE_BLOCK, SCENE_BLOCK, w // SCENE_BLOCK, SCENE_BLOCK).mean((1, 3))
    n = blocks.size
    ratio = float(blocks.var(dtype=np.float64)) * SCENE_BLOCK * SCENE_BLOCK / var
    return n > 1 and ratio <= 1.0 + SCENE_SIGMAS * np.sqrt(2.0 / n)


def _camera_change(meta) -> Optional[List[str]]:
    """The reasons any frame of a batch's meta gives for a new camera state (``meta["camera_change"]``,
    set by edge/pipeline/stages.py ``Preprocess``: ``"connection"``, ``"size"``), or
    None when none does (frames given without meta never do)."""
    if isinstance(meta, (list, tuple)):
        reasons = [r for m in meta for r in (_camera_change(m) or [])]
        return reasons or None
    if not isinstance(meta, Mapping):
        return None
    reasons = meta.get("camera_change")
    return [str(r) for r in reasons] if reasons else None


class _Inside:
    """An engine run on the picture inside a frame's bars (engines/borders.py): ``infer`` gives the
    whole batch back with the picture restored and the bars as they came in."""

    def __init__(self, engine, box):
        self.engine, self.box = engine, box

    def infer(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        return pasted(x, np.asarray(self.engine.infer(np.ascontiguousarray(inner(x, self.box))), np.float32),
                      self.box)


def _paste_finish(finish: Callable[[np.ndarray], np.ndarray], box, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``finish`` on the picture inside ``box`` of ``y`` (N, 1, H, W), the bars ``x``'s."""
    return pasted(x, finish(np.ascontiguousarray(inner(np.asarray(y, np.float32), box))), box)


class Restorer:
    """Bundle + router as one engine-like object; see the module docstring for the policy.

    Args:
        bundle_or_path: a :class:`~tir.engines.bundle.Bundle` or its folder.
        backend: the engines' backend (``auto``, ``onnxruntime``, ``torch``, ``tensorrt``).
        task: force one route (or ``clean``/``passthrough``); the router never runs.
        every: run the router every this many frames.
        hysteresis: this many verdicts in a row against the route switch it (to the task a strict
            majority of them names, else to pass-through; not to a route on a verdict that says clean).
        threads: intra-op threads of each engine.
        min_confidence: a verdict whose parts (those of the gated task the router named) have a
            lower total softmax probability is uncertain (a vote for pass-through), in [0, 1)
            (:meth:`_route_confidence`).
        precision: which TensorRT plan runs (fp32/fp16/int8; None: the best built); ``int8`` also
            runs the student's gated CPU INT8 model (:meth:`student_file`).
        adapt: fit the camera adaptation map on the first N non-FFC frames.
        adapt_save: write the adapted bundle to this folder once fitted.
        deploy: ``routes``, ``student`` or ``auto`` (per task, the bundle's ``auto_deploy`` table;
            default: the manifest's), or an explicit table {task: routes|student|tone} naming
            every route (auto with that table; for measuring, engines/training/camera_eval.py).
            The manifest's ``auto`` on a backend the student cannot run on (TensorRT, torch) runs
            every task's route (``tone`` tasks keep it); a ``deploy`` given here is kept or refused.
        contrast_gate: judge contrast-carrying verdicts against the camera's own contrast
            (engines/contrast_gate.py; default on; never with a forced ``task``). Off: the
            router's verdicts as they are.
        fpn_gate: add the noise part to the verdict on a frame that carries the column FPN of
            an uncalibrated FPA (engines/fpn_gate.py; default on; never with a forced ``task``,
            nor on a bundle without a task carrying fixed-pattern noise).
        blur_gate: judge noise-free blur verdicts (blur, CB) against the camera's own detail
            (engines/blur_gate.py; default on; never with a forced ``task``). Off: the router's
            verdicts as they are.
        tone_align: after a contrast-carrying route (contrast, CB, CN, CBN), map the restored
            frame's extremes onto the camera's own (:meth:`ContrastGate.align`; default on; needs
            the contrast gate, so never with a forced ``task``), and after a noise-carrying one
            without contrast (noise, BN) onto the camera's or the frame's own (:meth:`plan`).
            Off: the route's output as it is.

    Raises:
        BundleError: the bundle fails :func:`~tir.engines.bundle.load_bundle`.
        ValueError: ``every``/``hysteresis`` < 1, ``min_confidence`` outside [0, 1), an unknown
            ``deploy``, the student (deploy=student, or auto with a task on the student) without
            one, without the val numbers auto needs, or off ONNX Runtime, an unknown forced ``task``,
            or ``adapt`` on a bundle that cannot be adapted (AdaptationRefused).
        EngineError: ``backend`` cannot run the bundle's files.
    """

    def __init__(self, bundle_or_path, backend: str = "auto", task: Optional[str] = None,
                 every: int = 8, hysteresis: int = 3, threads: Optional[int] = None,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE, precision: Optional[str] = None,
                 adapt: Optional[int] = None, adapt_save=None, source_uri: str = "",
                 deploy: Optional[str] = None, contrast_gate: bool = True, fpn_gate: bool = True,
                 blur_gate: bool = True, tone_align: bool = True):
        from .bundle import Bundle, load_bundle

        self.bundle = bundle_or_path if isinstance(bundle_or_path, Bundle) else load_bundle(bundle_or_path)
        if int(every) < 1 or int(hysteresis) < 1:
            raise ValueError(f"every and hysteresis must be ≥ 1, got every={every}, hysteresis={hysteresis}")
        self.backend = backend
        from .backends import check_backend

        from .bundle import DEFAULT_AUTO_MARGIN_DB, DEPLOY_CHOICES, BundleError, deploy_table_problems

        table = dict(deploy) if isinstance(deploy, Mapping) else None   # an explicit per-task table
        self.deploy = self.bundle.deploy if deploy is None else ("auto" if table is not None else deploy)
        self.deploy_forced = deploy is not None   # given by the caller (--deploy), not the manifest's
        if self.deploy not in DEPLOY_CHOICES:
            raise ValueError(f"deploy must be one of {', '.join(DEPLOY_CHOICES)}, got {self.deploy!r}")
        if table is not None:
            problems = deploy_table_problems(table, self.bundle.manifest, "deploy table")
            if problems:
                raise ValueError("; ".join(problems))
        elif self.deploy != "routes" and self.bundle.student is None:
            raise ValueError(f"bundle {self.bundle.name!r} has no student; distill one with `tir distill` "
                             "or run its routes (--deploy routes)")
        try:
            #: {task: "routes" | "student" | "tone"}: what runs each task (engines/bundle.py
            #: Bundle.deploy_table; "tone": the partner's network and the camera's tone, :meth:`runner`)
            self.deploy_tasks: Dict[str, str] = table if table is not None else self.bundle.deploy_table(self.deploy)
        except BundleError as exc:
            raise ValueError(str(exc)) from None
        # auto's margin in dB: the recorded table's, else the default the table was computed with
        self.deploy_margin_db = None if self.deploy != "auto" else \
            (self.bundle.auto_deploy or {}).get("margin_db", DEFAULT_AUTO_MARGIN_DB)
        self.uses_student = "student" in self.deploy_tasks.values()
        self.tone_align = False   # set with the gates below; a forced task has none (runs_student needs it)
        if self.uses_student and backend not in ("auto", "onnxruntime"):
            if self.deploy != "auto" or self.deploy_forced:
                raise ValueError(f"the student runs on ONNX Runtime only, not {backend!r}; use --backend "
                                 "onnxruntime or --deploy routes")
            # the manifest's auto means "the better of the two that runs here": on another backend
            # (TensorRT, torch) that is every task's route (a tone task keeps its tone: it runs a route)
            log.info("deploy auto: the student runs on ONNX Runtime only, so every task runs its route on %s",
                     backend)
            self.deploy_tasks = {t: TONE if v == TONE else "routes" for t, v in self.deploy_tasks.items()}
            self.uses_student = False
        # routes load on first use; a backend that cannot run their files fails here, at start
        for path in [self.bundle.route_path(t) for t in self.bundle.tasks] + [self.bundle.router_path]:
            if path is not None:
                check_backend(path, backend)
        self._student = None
        self.prompt_weights: Optional[np.ndarray] = None   # the student's current prompt mix (K floats)
        self.threads = threads
        self.precision = precision  # TensorRT plan precision (fp32/fp16/int8); None: the best one built
        if self.uses_student and precision == "int8":   # the student's CPU INT8 model: refuse a missing one at start
            from .engine import EngineError

            try:
                self.student_file()
            except EngineError as exc:
                raise ValueError(str(exc)) from None
            if backend != "tensorrt":
                log.info("--precision int8: the student runs its CPU INT8 model; routes run fp32 on %s", backend)
        self.every = int(every)
        if not 0.0 <= float(min_confidence) < 1.0:
            raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
        self.min_confidence = float(min_confidence)
        self.uncertain = 0
        self.hysteresis = int(hysteresis)
        self.routes = list(self.bundle.tasks)
        self._engines: Dict[str, object] = {}
        self._router_engine = None
        self.router_info = self.bundle.router
        self.forced = task is not None
        if self.forced:
            if task not in self.routes and task not in (CLEAN, PASSTHROUGH):
                raise ValueError(f"bundle {self.bundle.name!r} has no route {task!r}; routes: "
                                 f"{', '.join(self.routes)} (or {CLEAN} for pass-through)")
            self.current: Optional[str] = CLEAN if task == PASSTHROUGH else task
            if self.runs_student(self.current):
                self.prompt_weights = self._one_hot(self.current)
        else:
            self.current = None
            if self.router_info is None:
                log.warning("bundle %s has no router and no --task was given: frames pass through; "
                            "force a route with --task (routes: %s)", self.bundle.name, ", ".join(self.routes))
        if self.router_info is not None:
            self._codebook = np.asarray(self.router_info["codebook"], dtype=np.float64)
            self._classes = list(self.router_info["tasks"])
            self._threshold = self.router_info.get("thresholds", self.router_info.get("threshold", -1.0))
            self._temperature = float(self.router_info.get("temperature", DEFAULT_TEMPERATURE))
            self._input_size = tuple(self.router_info.get("input_size", (640, 512)))
            self._added = added_rows(self.router_info)   # rows tir learn added: claim only above threshold
        self._adaptation = None if self.router_info is None else self.router_info.get(ADAPTATION_KEY)
        #: the bundle's own adaptation (``tir adapt``), applied again when an online fit is dropped
        self._bundle_adaptation = self._adaptation
        self.contrast_gate: Optional[ContrastGate] = None
        self.fpn_gate: Optional[FPNGate] = None
        self.blur_gate: Optional[BlurGate] = None
        #: {task: the strongest blur σ its own spec applies} for the routed tasks that only undo a blur, whose output
        #: must keep the frame's tone (:meth:`_keep_blur_tone`; never for a forced route)
        self._blur_only: Dict[str, float] = {}
        if self.router_info is not None and not self.forced:   # a forced route is never gated
            specs = {t: (self.bundle.task_info(t).get("spec") or {}).get("steps") or [] for t in self.routes}
            self._blur_only = blur_only_tasks(specs)
            if contrast_gate:
                self.contrast_gate = ContrastGate.for_bundle(specs, self.router_info)
            if fpn_gate:
                gate = FPNGate.for_bundle(specs)
                self.fpn_gate = gate if gate.partners else None   # no task carries FPN: nothing to add
            if blur_gate:
                gate = BlurGate.for_bundle(specs)
                self.blur_gate = gate if gate.partners or gate.noisy_partners else None  # no blur task: nothing to judge
        self.tone_align = bool(tone_align) and self.contrast_gate is not None
        #: noise-carrying tasks without a contrast part (noise, BN): their output keeps the tone (:meth:`plan`)
        self._keeps_tone = frozenset() if self.contrast_gate is None else frozenset(
            t for t in self.routes if specs.get(t) and t not in noise_free_verdicts(specs)
            and t not in self.contrast_gate.partners)
        self._contrast_low = True   # the last routed frame's contrast was low for this camera
        #: verdicts whose frame shows only the camera's own noise (the contrast gate's noise test)
        self._noise_free = frozenset(noise_free_verdicts(specs)) | {UNKNOWN} if self.contrast_gate is not None else frozenset()
        self._contrast_promoted = False   # the contrast gate gave the last verdict the contrast part
        self._fpn = False           # the last routed frame carried column FPN (the FPN gate added noise)
        self._noise_taken = False   # the FPN gate took the last verdict's noise part away
        #: the counts the [0, 1] span stood for on the frame the offsets were measured on, and on
        #: the newest frame (``meta["norm"]``; None without): an FPA's offsets are fixed in counts,
        #: so :meth:`plan` rescales them when the normaliser's range moved since
        self._offsets_span: Optional[float] = None
        self._span: Optional[float] = None
        #: the newest frame's counts per model-input unit when it is Y16 (scene-referred), else None
        self._counts_scale: Optional[float] = None
        #: the newest frame's count step is coarser for its span than one 8-bit grey level: the
        #: router and the gates may see it de-quantised (:meth:`_router_view`), so its noise is not
        #: judged between verdicts (:meth:`_released`)
        self._coarse = False
        self._soft = True           # the last routed frame was soft for this camera (blur gate)
        self._blur_held = False     # the blur gate held the last verdict's blur part (no reference yet)
        self.adapter: Optional[OnlineAdapter] = None
        self.adapt_save = adapt_save
        self.adapt_saved: Optional[str] = None
        self._adapt_saved_path: Optional[str] = None   # the copy --adapt-save wrote, once
        if adapt is not None and not self.forced:
            # raises AdaptationRefused (a ValueError) when the bundle cannot be adapted
            self.adapter = OnlineAdapter(self.router_info, int(adapt), source_uri, self.bundle.name)
        self.frames = 0
        #: frames of the camera's healthy look its gate references are pinned to (:meth:`pin_camera`)
        self.pinned_frames = 0
        #: (H, W) of the frames the references were pinned to, and why a pin was let go (None: not)
        self._pinned_size: Optional[Tuple[int, int]] = None
        self.reference_dropped: Optional[str] = None
        self.switches = 0
        self.unknowns = 0
        self.decisions = 0
        self.skipped_ffc = 0
        #: frames not looked at because they held no scene (:func:`scene_free`: an FFC's flag that
        #: the stream did not mark), counted in ``skipped_ffc`` too
        self.skipped_scene_free = 0
        #: column offsets dropped because a frame no longer carried them (:meth:`_offsets_renewed`:
        #: a flat-field correction the stream did not mark renewed the FPA's offsets)
        self.offsets_renewed = 0
        #: frames shown to the router and the gates de-quantised: their count step was coarser for
        #: their span than one 8-bit grey level (:func:`dequantised`)
        self.dequantised = 0
        #: frames a blur-only route restored that were given back as they came in: the route moved
        #: their tone by more than a blur can change them (:meth:`_keep_blur_tone`)
        self.blur_tone_refused = 0
        #: frames a blur-only route restored that were given back as they came in: the strongest blur
        #: changes them by less than their count step resolves on a camera whose noise does not
        #: dither its counts (:meth:`_keep_blur_tone`, :func:`~tir.engines.blur_gate.blur_below_step`)
        self.blur_step_refused = 0
        #: frames the contrast route passed through, their contrast not low for this camera
        #: (:meth:`_released`)
        self.contrast_released = 0
        #: frames a noise-carrying route (noise; CN with the contrast part gone too) passed through,
        #: their white noise no more than the camera's own frames reach (:meth:`_released`)
        self.noise_released = 0
        #: frames a blur-carrying route (blur; CB, BN, CBN with their other parts gone too) passed
        #: through, clearly sharp for this camera (:meth:`_released`)
        self.blur_released = 0
        self._released_frames = 0   # each released frame once (:attr:`released`)
        #: frames in a row under the current route that the blur gate read clearly sharp (:meth:`_released`)
        self._sharp_run = 0
        #: the frames before this one under the current route were let go (:meth:`_released`): the
        #: noise and blur checks then hold that state until a frame crosses the verdicts' own bound
        #: (a Schmitt trigger); reset on a switch and on every verdict
        self._latched = False
        #: frames whose meta said the camera changed (:meth:`new_camera`), and the last one's reasons
        self.camera_changes = 0
        self.camera_change: Optional[List[str]] = None
        #: the constant bars around the camera's picture (a grabber's pillarbox or letterbox,
        #: engines/borders.py): the router and the gates see the picture inside them, the routes
        #: restore it, the bars come out as they went in
        self.borders = BorderTracker()
        #: frames left of the warm-up, in which every frame is routed while the FPN or blur gate has
        #: no reference yet and the router's unchecked noise and blur parts are held (:meth:`_warming`,
        #: :meth:`_gate`): from the start, as after a camera change (:meth:`new_camera`): a camera
        #: met cold is a new camera (a clean DDE camera read as noisy got the noise task on 80 of its
        #: first 400 frames with the 1-in-``every`` schedule, none with the warm-up, docs/cameras.md
        #: "Session 14"). A pinned reference (:meth:`pin_camera`) fills the references, which ends it
        #: at the first frame.
        self._warm_left = WARM_FRAMES_PER_EVERY * self.every \
            if self.router_info is not None and not self.forced else 0
        #: frames routed off the schedule while the gates warmed up: their verdicts fed the gates'
        #: histories but did not decide the route (:meth:`observe`)
        self.observed = 0
        self._warm_now = False      # the batch being routed is in the warm-up (:meth:`_warming`)
        #: routed frames whose router input had dead columns replaced, and the columns replaced
        self.dead_column_frames = 0
        self.dead_columns = 0
        #: verdicts in a row against the current route (:meth:`_decide`)
        self._votes: List[str] = []
        self._due = False           # route the next frame (the last one was an FFC frame, :meth:`observe`)
        #: the frame index from which a pending switch's next verdict is due (:meth:`observe`), or None
        self._confirm_at: Optional[int] = None
        self._last: dict = {"task": None, "confidence": None, "unknown": False, "nearest": None}
        self.router_ms: Optional[float] = None
        self.last_embeddings: Optional[np.ndarray] = None
        self.last_decision: Optional[dict] = None

    # --------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """``restorer:<bundle name>``."""
        return f"restorer:{self.bundle.name}"

    @property
    def multiple(self) -> int:
        """The spatial multiple in pixels every engine pads to (the bundle's)."""
        return self.bundle.multiple

    @property
    def prompts(self) -> List[str]:
        """The student's prompt slots (empty without a student)."""
        return list((self.bundle.student or {}).get("prompts", []))

    def runs_student(self, task: Optional[str]) -> bool:
        """True when frames of ``task`` run the student (per :attr:`deploy_tasks`, after
        :meth:`runner`); False for a route's task, ``clean`` and None."""
        task = self.runner(task)
        return task is not None and self.deploy_tasks.get(task) == "student"

    def by_tone(self, task: Optional[str]) -> bool:
        """True when the contrast part of ``task`` is restored by the camera's tone now: the
        table says ``tone`` for it (engines/bundle.py :data:`~tir.engines.bundle.TASK_DEPLOY_CHOICES`),
        the tone alignment is on and the contrast gate has the camera's tone reference
        (:meth:`ContrastGate.tone_reference`). Before that reference exists (a camera's first
        frames, or one whose every frame is low in contrast) the task runs its own route."""
        return (task is not None and self.deploy_tasks.get(task) == TONE and self.tone_align
                and task in self.contrast_gate.partners and self.contrast_gate.tone_reference() is not None)

    def runner(self, task: Optional[str]) -> Optional[str]:
        """The task whose network restores frames of ``task``: its contrast partner (``clean``:
        none) when :meth:`by_tone`, else ``task`` itself."""
        return self.contrast_gate.partners[task] if self.by_tone(task) else task

    @property
    def runs(self) -> str:
        """What the frames go through now: ``passthrough``, ``route`` or ``student``, with
        ``tone+`` before it when the contrast part is the camera's tone (``tone+route``;
        ``tone`` alone for a task whose partner is clean), ``+destripe`` after it when the
        column offsets are removed (``destripe`` alone on pass-through; :meth:`plan`)."""
        if self.route == PASSTHROUGH:
            kind = PASSTHROUGH
        else:
            net = self.runner(self.current)
            kind = PASSTHROUGH if net == CLEAN else ("student" if self.runs_student(self.current) else "route")
            if self.by_tone(self.current):
                kind = TONE if kind == PASSTHROUGH else f"{TONE}+{kind}"
        if self.offsets is None:
            return kind
        return DESTRIPE if kind == PASSTHROUGH else f"{kind}+{DESTRIPE}"

    def _one_hot(self, task: str) -> np.ndarray:
        w = np.zeros(len(self.prompts), np.float32)
        w[self.prompts.index(task)] = 1.0
        return w

    def prompt_mix(self, embedding: np.ndarray) -> np.ndarray:
        """The student's prompt weights from one raw router embedding, after the adaptation map
        (engines/backends/student.py ``prompt_mix``).

        Args:
            embedding: (D,) float router embedding (before adaptation).

        Returns:
            (K,) float32 weights summing to 1, K = len(:attr:`prompts`).
        """
        from .backends.student import prompt_mix

        emb = apply_adaptation(np.asarray(embedding, dtype=np.float32).reshape(1, -1), self._adaptation)
        return prompt_mix(emb[0], self._codebook, self._classes, self._temperature, self.prompts)

    def student_file(self) -> Path:
        """The student ONNX this restorer runs: ``student.onnx``, or with ``precision="int8"`` the
        gated CPU INT8 student (:func:`~tir.engines.backends.student.cpu_int8_student`; the student
        runs on ONNX Runtime, so ``--precision int8`` means its U8S8 model there).

        Raises:
            EngineError: ``precision="int8"`` and the bundle has no gated CPU INT8 student.
        """
        if self.precision == "int8":
            from .backends.student import cpu_int8_student

            return cpu_int8_student(self.bundle)
        return self.bundle.student_path

    def student_engine(self):
        """The student engine (ONNX Runtime), loaded on first use.

        Raises:
            BundleError: student.onnx changed since the bundle was loaded (sha256).
            EngineError: the student cannot be loaded, takes another number of prompt weights than
                the manifest lists, or states a spatial multiple that disagrees with the manifest.
        """
        if self._student is None:
            from .backends.student import StudentEngine
            from .engine import EngineError

            path = self.student_file()
            if path == self.bundle.student_path:
                self.bundle.check_file(path)   # loaded lazily: refuse a replaced file

            t0 = time.monotonic()
            engine = StudentEngine(path, threads=self.threads)
            if engine.slots != len(self.prompts):
                raise EngineError(f"bundle {self.bundle.name!r}: student.onnx takes {engine.slots} prompt weights, "
                                  f"the manifest lists {len(self.prompts)} prompts; re-export it with `tir distill`")
            if engine.multiple != self.bundle.multiple and self.bundle.multiple % engine.multiple != 0:
                raise EngineError(f"bundle {self.bundle.name!r}: the student states multiple {engine.multiple}, the "
                                  f"manifest says {self.bundle.multiple}; re-export it with `tir distill`")
            engine.multiple = max(engine.multiple, self.bundle.multiple)
            self._student = engine
            log.info("student loaded in %.0f ms", 1000 * (time.monotonic() - t0))
        return self._student

    @property
    def loaded_routes(self) -> List[str]:
        """The routes whose engines are loaded so far (routes load on first use)."""
        return list(self._engines)

    @property
    def route(self) -> str:
        """The route frames go through now (``passthrough`` for clean / none yet)."""
        return PASSTHROUGH if self.current in (None, CLEAN) else self.current

    @property
    def passes_through(self) -> bool:
        """True when frames come out exactly as they went in: pass-through without the column
        offsets removed (:meth:`plan`). The pipeline then gives back the raw counts bit-exact
        (edge/pipeline/stages.py ``Postprocess``)."""
        return self.route == PASSTHROUGH and self.offsets is None

    @property
    def offsets(self) -> Optional[np.ndarray]:
        """(W,) float32 column offsets subtracted from the frames now (:meth:`plan`): the FPN
        gate's (engines/fpn_gate.py ``FPNGate.offsets``), measured on the last routed frame when it
        carried column FPN alone; None otherwise or without the gate."""
        return None if self.fpn_gate is None else self.fpn_gate.offsets

    def _drop_offsets(self) -> None:
        if self.fpn_gate is not None:
            self.fpn_gate.offsets = None

    def _offsets_scaled(self) -> Optional[np.ndarray]:
        """The column offsets being removed ((W,) float32), in the newest frame's [0, 1] units, or
        None. They are fixed in counts: in a frame whose normaliser range grew (a hot object came
        in) they are smaller by the ratio of the spans, else they would be over-subtracted."""
        offsets = self.offsets
        if offsets is None or self._offsets_span is None or self._span is None or self._span == self._offsets_span:
            return offsets
        return (offsets * np.float32(self._offsets_span / self._span)).astype(np.float32)

    def _offsets_renewed(self, frame: np.ndarray) -> bool:
        """Drop the column offsets being removed when the newest frame no longer carries them
        (K18): an FPA's offsets are fixed only between flat-field corrections, and a correction the
        stream does not mark (no ``ffc`` meta; the shutter's flag frames may show, :func:`scene_free`,
        or not at all) renews them at once, so offsets measured before it, subtracted until the next
        scheduled verdict (up to ``every`` − 1 frames), put their negative into every frame after it.
        Measured on every frame while offsets are removed (:func:`~tir.engines.fpn_gate.offsets_shown`,
        the offsets rescaled to this frame's normaliser range as :meth:`plan` subtracts them): they
        are dropped when removing them would not lower the frame's own column signature (gain
        ≤ 1/2), counted in :attr:`offsets_renewed`. A frame of the same FPA, a uniform sky or a
        flag frame of the correction itself included, still carries them (gain ≈ 1 or more while
        they drift) and keeps them. About 0.1 ms at 640×512.

        Args:
            frame: (H, W) float32 model input in [0, 1].

        Returns:
            True when the offsets were dropped (the caller routes this frame to measure them again).
        """
        offsets = self._offsets_scaled()
        if offsets is None:
            return False
        gain = offsets_shown(frame, offsets)
        if gain is None or gain > 0.5:
            return False
        log.info("column offsets dropped: the frame carries %.2f of them (a flat-field correction renewed them)", gain)
        self._drop_offsets()
        self.offsets_renewed += 1
        return True

    def _load(self, path: Path, router: bool = False):
        from .backends import load_engine

        self.bundle.check_file(path)   # loaded lazily: refuse a file replaced since the bundle was verified

        kw = {} if self.threads is None else {"threads": self.threads}
        if self.precision is not None and self.backend == "tensorrt":
            # `tir build --precision int8` builds the router in FP16 (it is not calibrated)
            kw["precision"] = "fp16" if router and self.precision == "int8" else self.precision
        return load_engine(path, backend=self.backend, **kw)

    def engine(self, task: str):
        """The engine of one route, loaded on first use.

        Raises:
            BundleError: the bundle has no route ``task``, or its file changed since the bundle
                was loaded (sha256, :meth:`Bundle.check_file`).
            EngineError: the engine cannot be loaded, or its ``tir.multiple`` disagrees with the
                manifest's ``multiple``.
        """
        if task not in self._engines:
            t0 = time.monotonic()
            engine = self._load(self.bundle.route_path(task))
            multiple = int(getattr(engine, "multiple", 1))
            if multiple != self.bundle.multiple and self.bundle.multiple % multiple != 0:
                from .engine import MULTIPLE_KEY, EngineError

                engine.close()
                raise EngineError(
                    f"bundle {self.bundle.name!r}: route {task} states {MULTIPLE_KEY}={multiple} but the "
                    f"manifest says multiple={self.bundle.multiple}; re-export the route "
                    "(tir export) so the two agree")
            engine.multiple = max(multiple, self.bundle.multiple)
            self._engines[task] = engine
            log.info("route %s loaded in %.0f ms", task, 1000 * (time.monotonic() - t0))
        return self._engines[task]

    def preload(self, router: bool = True, tasks=(), shape=None) -> None:
        """Load the router's engine (``router``) and what runs each of ``tasks`` (its route, or the
        student where :attr:`deploy_tasks` says so; the partner's under ``tone``, :meth:`runner`)
        now instead of on first use, and with ``shape``
        (N×1×H×W of the frames to come) run each once on a zero frame: runtimes such as ONNX
        Runtime set up their buffers on the first run (about 200 ms measured on this machine for
        the router). A bundle hot-swapped in (engines/hotswap.py) is warmed this way before the
        swap, off the frame path; the routing state is not touched."""
        if router and self.router_info is not None and self._router_engine is None:
            self._router_engine = self._load(self.bundle.router_path, router=True)
        nets = [(task, self.runner(task)) for task in tasks]
        nets = [(task, net) for task, net in nets if net != CLEAN]   # the camera's tone alone: no network
        for task, net in nets:
            self.student_engine() if self.runs_student(task) else self.engine(net)
        if shape is None:
            return
        zeros = np.zeros(tuple(shape), dtype=np.float32)
        if router and self._router_engine is not None:
            self._router_engine.infer(prepare_frames(zeros[:1], self._input_size))
        for task, net in nets:
            if self.runs_student(task):
                self.student_engine().infer(zeros[:1], self._one_hot(net))
            else:
                self.engine(net).infer(zeros[:1])

    def check_networks(self) -> List[str]:
        """Load every network this restorer may run (each route the router or a forced task can
        pick, the router, the student where :attr:`deploy_tasks` runs it) and run each once on
        a zero frame (1, 1, 2m, 2m) px (m: the bundle's multiple; a TensorRT plan's own shape when
        it was built for one), so a file ONNX Runtime (or
        TensorRT) cannot load or run is found at start, naming the file and the reason, not when
        the router first picks its route minutes into a stream ("stage infer failed").

        The manifest's sha256 refuses a file changed since export; this finds one that matches
        but cannot load or run here: cut short before its sha was recorded, a newer opset, a
        custom operator, an input of another rank. The engines stay loaded (each would load on
        first use anyway; measured on the shipped bundle: about 0.8 s for seven routes, the
        router and the student, 1 thread, under load; docs/reliability.md "Session 19").

        Returns:
            The names checked (route tasks, ``router``, ``student``), in order.

        Raises:
            EngineError: a network cannot be loaded or does not run on a zero frame; the
                message names the bundle, the file and the reason.
            BundleError: a file changed since the bundle was loaded (sha256).
        """
        from .engine import EngineError

        side = 2 * max(1, int(self.bundle.multiple))
        zeros = np.zeros((1, 1, side, side), dtype=np.float32)
        if self.forced:
            tasks = [] if self.current in (None, CLEAN) else [self.current]
        else:
            tasks = list(self.routes)
        checked: List[str] = []

        def check_input(engine) -> np.ndarray:
            """A zero frame the engine takes: its plan's own shape where it has one (a TensorRT plan
            built static or with a profile, `tir build --size`), else the small one above."""
            profile = getattr(engine, "profile", None)
            if profile is not None:
                return np.zeros((1,) + tuple(int(d) for d in profile[1][1:]), dtype=np.float32)
            shape = tuple(getattr(engine, "input_shape", None) or ())
            if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape):
                return np.zeros((1,) + shape[1:], dtype=np.float32)
            return zeros

        def run_same_shape(engine, *weights) -> None:
            """Run ``engine`` on its zero frame; a route (or the student) gives back the shape it is given."""
            x = check_input(engine)
            out = engine.infer(x, *weights)
            if np.shape(out) != x.shape:
                raise EngineError(f"gives {tuple(np.shape(out))} for a {x.shape} input; a route gives back "
                                  "the shape it is given")

        def attempt(name: str, path, run) -> None:
            try:
                run()
            except EngineError as exc:
                text = str(exc)
                where = "" if path is None or str(path) in text else f"{path}: "
                raise EngineError(f"bundle {self.bundle.name!r}: {name} cannot run here: {where}{text}; re-export "
                                  "it with this tir-edge (`tir export`), or run another bundle") from exc
            except Exception as exc:   # ORT/TensorRT raise their own types when a loaded model cannot run
                raise EngineError(f"bundle {self.bundle.name!r}: {name} ({path}) loads but fails on a "
                                  f"{side}x{side} zero frame: {type(exc).__name__}: {exc}") from exc
            checked.append(name)

        for task in tasks:
            if self.runs_student(task):
                continue   # the student is checked once below
            attempt(f"route {task}", self.bundle.route_path(task), lambda t=task: run_same_shape(self.engine(t)))
        if self.router_info is not None and not self.forced:
            def run_router():
                if self._router_engine is None:
                    self._router_engine = self._load(self.bundle.router_path, router=True)
                self._router_engine.infer(prepare_frames(zeros, self._input_size))
            attempt("the router", self.bundle.router_path, run_router)
        if self.uses_student and (not self.forced or self.runs_student(self.current)):
            weights = self._one_hot(self.prompts[0]) if self.prompts else np.zeros(0, np.float32)
            attempt("the student", self.bundle.student_path if self.precision != "int8" else None,
                    lambda: run_same_shape(self.student_engine(), weights))
        return checked

    # --------------------------------------------------------------------------------------
    def embed(self, batch) -> np.ndarray:
        """The router's raw embeddings of a batch (before any adaptation).

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 frames in [0, 1]; dead columns
                replaced (engines/fpn_gate.py ``repair_dead_columns``), then fitted to the router's
                input size.

        Returns:
            (N, D) float32 embeddings; the per-frame router time in ms is kept in :attr:`router_ms`.

        Raises:
            ValueError: the bundle has no router, or ``batch`` has another shape.
            EngineError: the router engine cannot be loaded or run.
        """
        if self.router_info is None:
            raise ValueError(f"bundle {self.bundle.name!r} has no router")
        if self._router_engine is None:
            self._router_engine = self._load(self.bundle.router_path, router=True)
        # the router sees the frames with dead columns replaced (a stuck readout line hid a contrast
        # loss from it); what is restored keeps them
        shown = []
        for frame in _as_batch(batch):
            repaired, n = repair_dead_columns(frame)
            self.dead_columns += n
            self.dead_column_frames += int(n > 0)
            shown.append(repaired)
        frames = prepare_frames(np.stack(shown), self._input_size)
        t0 = time.perf_counter()
        emb = np.asarray(self._router_engine.infer(frames)).reshape(len(frames), -1)
        self.last_embeddings = emb
        self.router_ms = 1000.0 * (time.perf_counter() - t0) / len(frames)
        return emb

    def classify(self, batch, embeddings: Optional[np.ndarray] = None) -> List[dict]:
        """Run the router on every frame of a batch (no state change).

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 frames in [0, 1].
            embeddings: (N, D) embeddings from :meth:`embed`; skips running the router again.

        Returns:
            One decision dict per frame (``task``, ``confidence``, ``unknown``, ``nearest``, ...),
            after the adaptation map when there is one.

        Raises:
            ValueError: as :meth:`embed`.
        """
        emb = self.embed(batch) if embeddings is None else embeddings
        emb = apply_adaptation(emb, self._adaptation)
        return classify(emb, self._codebook, self._classes, self._threshold, self._temperature, self._added)

    def observe(self, batch, meta=None) -> Optional[dict]:
        """Count frames and, every ``every`` frames, on the first frame after an FFC frame and,
        while a switch is pending, every ``ceil(every / (hysteresis - 1))`` frames, route on the
        newest one.

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 frames in [0, 1].
            meta: the frames' meta (a dict, or one per frame); an FFC frame is not looked at.

        Returns:
            The decision taken this call, or None when the router did not run.

        Raises:
            ValueError: ``batch`` has another shape.
            EngineError: the router engine cannot be loaded or run.
        """
        x = _as_batch(batch)
        first = self.frames
        self.frames += len(x)
        self._span = _norm_span(meta)
        self._counts_scale = _counts_scale(meta)
        self._coarse = _coarse(_count_quantum(meta))
        reasons = _camera_change(meta)
        if reasons is not None and "bits" in reasons and self._pinned_size is not None:
            depth = (meta or {}).get("source_bits") or (meta or {}).get("bits")
            self._let_go_reference(f"the camera's bit depth changed (now {depth}-bit): the reference frames show "
                                   "its look at the previous depth, the gates learn this camera afresh", reasons)
        elif reasons is not None:
            self.new_camera(reasons)
        size = x.shape[-2:]
        if not _is_ffc(meta) and self.borders.add(x[-1, 0]):
            self._borders_changed()
        box = self.borders.box_for(x.shape)
        if box is not None:
            x = np.ascontiguousarray(inner(x, box))   # the camera's picture, without the grabber's bars
        if self.forced or self.router_info is None:
            return None
        self._check_reference(size)
        if self._offsets_renewed(x[-1, 0]):
            # the offsets measured before an FFC the stream did not mark no longer hold: this frame
            # is routed now, and the FPN gate measures the offsets it carries (none: none removed)
            self._due = True
        # a frame with no scene (:func:`scene_free`) is an FFC the stream did not mark: as after an
        # FFC its verdict would be the flag's (a cold start that met the power-up FFC's flag first took
        # the contrast route for 24 frames, 19 dB from the scene after it, docs: round 5)
        flag = not _is_ffc(meta) and scene_free(x[-1, 0])
        if flag or _is_ffc(meta):
            self.skipped_ffc += 1
            self.skipped_scene_free += int(flag)
            if not flag:
                # a flat-field correction renews the FPA's offsets: the measured ones no longer hold.
                # A frame that only holds no scene keeps them: a camera staring at a uniform sky or
                # wall shows its column FPN most there, and its offsets are measured again on the
                # next frame with a scene (routed at once, below) if an FFC renewed them
                self._drop_offsets()
            # the first frame after it is routed: a verdict this frame took the turn of is not lost
            # (FFC frames on the schedule's turns kept the router from ever running), and the
            # column offsets the correction renewed are measured again at once
            self._due = True
            return None
        # run when this batch holds a frame index that is a multiple of `every` (frame 0 counts),
        # or on the first frame after an FFC; while the gates warm up (:meth:`_warming`) the frames
        # between are routed too, but only to give the gates their references: the verdicts that
        # decide the route keep the schedule's cadence, so the hysteresis means what it means on
        # the schedule (verdicts on consecutive frames of a panning camera are not independent)
        on_turn = self._due or -(-first // self.every) * self.every < self.frames \
            or (self._confirm_at is not None and self._votes and self.frames > self._confirm_at)
        # counts the warm-up's frames down, on the schedule's turns too; the holds (:meth:`_gate`) act while it lasts
        warming = self._warm_now = self._warming(len(x))
        observe_only = not on_turn and warming
        scheduled = on_turn or observe_only
        self._due = False
        collecting = self.adapter is not None and not self.adapter.done
        if scheduled or collecting:
            x = self._router_view(x, meta)
        if collecting:
            emb = self.embed(x)  # while collecting the router sees every frame
            self._collect(emb)
            if not scheduled:
                return None
            decision = self.classify(x[-1:], emb[-1:])[0]
        elif not scheduled:
            return None
        else:
            decision = self.classify(x[-1:])[0]
        decision = self._gate(decision, x[-1])
        if observe_only:
            self.observed += 1
            return None
        self._decide(decision)
        self._judge_afresh()   # a verdict on the route
        if self.uses_student and self.last_embeddings is not None:
            self.prompt_weights = self._gate_prompt(self.prompt_mix(self.last_embeddings[-1]), decision["task"])
        # the verdict on this batch's newest frame with its router embedding (D floats), for
        # the open-world collector (edge/outputs/collect.py); ``decisions`` counts them
        self.last_decision = {**decision, "embedding": self.last_embeddings[-1].copy()}
        return decision

    def _router_view(self, x: np.ndarray, meta) -> np.ndarray:
        """The (N, 1, H, W) frames as the router and the gates are shown them: de-quantised
        (:func:`dequantised`, counted in :attr:`dequantised`) when the newest frame's count step is
        coarser for its span than one 8-bit grey level (:data:`KNOWN_QUANTUM`; a Y16 camera of
        0.1 K per count whose scene spans a few dozen counts) and the frame's white noise is under
        :data:`DITHER_SHARE` of that step (a noise above it dithers the counts: no contours), else
        ``x`` itself (every 8-bit camera, a Y16 camera whose span holds 255 count steps or more,
        and a noisy one: an MSB-aligned 14-bit core of 1.5 counts' noise over 30-60 counts showed
        a clean frame more to the router as blurred, p5 71 → 37 dB, when de-quantised), and a
        frame that is not on the grid of the step its meta states (:func:`on_count_grid`: the
        step is not the frame's; smoothing by it would blur the view). The route restores the
        frames as they came in."""
        quantum = _count_quantum(meta)
        if not _coarse(quantum):
            return x
        if not on_count_grid(x[-1, 0], quantum):
            return x   # the step is not this frame's (a wrong meta): de-quantising by it would blur the view
        if noise_sigma(x[-1, 0]) >= DITHER_SHARE * quantum:
            return x   # the camera's own noise dithers its counts: no contours to take away
        self.dequantised += len(x)
        return np.stack([dequantised(f[0], quantum)[None] for f in x])

    def _gate(self, decision: dict, frame: np.ndarray) -> dict:
        """The gates on one verdict, in this order (the noise part is measured first, then the
        contrast and blur parts are judged knowing it), ``gated_from`` naming the router's own
        verdict when they change it:

        - the FPN gate (engines/fpn_gate.py): on a frame that carries the column FPN of an
          uncalibrated FPA, the verdict gains the noise part (an unknown verdict becomes the
          noise task), and an unknown verdict on a frame whose white noise is clearly above the
          camera's floor becomes the noise task; either way ``fpn`` is True: the noise part is
          measured, so a verdict the router was unsure of is not dropped to pass-through
          (:meth:`_decide`); column FPN without white noise above the camera's own keeps the
          verdict and marks it ``destripe``: the column offsets are removed (:meth:`plan`);
        - the contrast gate (engines/contrast_gate.py): a contrast-carrying task on a frame whose
          contrast is not low for this camera becomes its partner without the contrast part; a
          clean, unknown, noise or BN verdict on a frame whose contrast is clearly compressed for
          this camera becomes its partner with it (``contrast_promoted`` True: the contrast part
          is measured, so a verdict the router was unsure of is not dropped to pass-through),
          unless the blur gate then measures the frame soft for this camera (a blur lowers the
          extent by itself: the promotion is taken back), and a ``blur`` verdict the blur gate
          turns into ``clean`` (the frame is not soft) is promoted when the frame is compressed
          (:meth:`~tir.engines.contrast_gate.ContrastGate.promote_last`: a blur no longer explains
          its low extent); the frame's span then joins the camera's history;
        - the blur gate (engines/blur_gate.py): a blur verdict without noise (blur, CB) on a
          frame that is not soft for this camera becomes its partner without the blur part;
          the frame then joins the camera's history. A noise-carrying verdict of a blur pair
          (BN/noise, CBN/CN) takes its blur part from the frame's measure under noise when
          that is clearly sharp or clearly blurred for this camera;
        - last, while the restorer warms up (:meth:`_warming`: the start, a camera change) and the
          camera had no white-noise floor before this frame, a noise part the FPN gate did not
          measure (no column FPN, no white-noise promotion) is held: the verdict goes on without it
          (:meth:`~tir.engines.fpn_gate.FPNGate.hold_unmeasured`, counted as the gate's ``held``);
          likewise, when the camera had no sharpness reference before this frame, the verdict's
          blur part (:meth:`~tir.engines.blur_gate.BlurGate.hold_unmeasured`).
        """
        task = decision["task"]
        self._fpn, self._noise_taken = False, False
        floorless = unjudged = False
        if self.fpn_gate is not None:
            before = task
            floorless = self._warm_now and self.fpn_gate.floor_sigma()[0] is None
            # sets the gate's offsets in one assignment; a Y16 frame's noise is judged in counts too
            task, self._fpn = self.fpn_gate.step(task, frame, scale=self._counts_scale)
            self._offsets_span = self._span
            # the gate took the noise part away (the camera's own noise, or column FPN alone)
            self._noise_taken = self.fpn_gate.without_noise.get(before) == task
        self._contrast_promoted = False
        if self.contrast_gate is not None:
            before, promoted = task, self.contrast_gate.promoted
            # a noise-free verdict's frame shows the camera's own noise: at its floor it was not
            # contrast-compressed (ContrastGate.noise_kept, K23)
            noise = (self.fpn_gate.last_noise if self.fpn_gate is not None and task in self._noise_free
                     else None)
            task, self._contrast_low = self.contrast_gate.step(task, lowpass_span(frame), ends=lowpass_ends(frame),
                                                               noise=noise)
            self._contrast_promoted = self.contrast_gate.promoted > promoted and task != before
        self._blur_held = False
        if self.blur_gate is not None:
            unjudged = self._warm_now and self.blur_gate.threshold() is None
            # the camera's, before this frame joins its history; only a promotion asks for it
            limit = self.blur_gate.threshold() if self._contrast_promoted else None
            blurred = task
            task, self._soft = self.blur_gate.step(task, frame)
            measured = self.blur_gate.last
            if self._contrast_promoted and limit is not None and measured is not None and measured > limit:
                # the frame is soft for this camera: a blur lowers a frame's extent by itself, so
                # its low extent is no evidence of a contrast loss; the router's verdict stands
                task, self._contrast_promoted = before, False
                self.contrast_gate.revoke()
            elif self.contrast_gate is not None and task != blurred and not self._soft:
                # the blur gate took the blur part of a verdict away (blur -> clean): the frame is not
                # soft, so a blur does not explain its low extent either; when the contrast gate found
                # it compressed, the contrast part is the frame's (its promotion skipped blur verdicts)
                promoted_task = self.contrast_gate.promote_last(task)
                if promoted_task != task:
                    task, self._contrast_promoted = promoted_task, True
        if self.blur_gate is not None and unjudged:
            # warming up without a sharpness reference: the router's blur part alone is not taken on
            # trust (after the gates, like the noise part's hold below)
            held = self.blur_gate.hold_unmeasured(task)
            task, self._blur_held = held, held != task
        if self.fpn_gate is not None and floorless and not self._fpn:
            # warming up without a white-noise floor: the router's noise part alone is not taken on
            # trust. Last, so the contrast and blur gates judged (and recorded) the verdict as before
            held = self.fpn_gate.hold_unmeasured(task)
            if held != task:
                task, self._noise_taken = held, True
        if self.offsets is not None:
            decision = {**decision, "destripe": True}
        if task == decision["task"] and not self._fpn:
            return decision
        out = {**decision, "task": task, "fpn": self._fpn}
        if self._contrast_promoted:
            out["contrast_promoted"] = True
        return out if task == decision["task"] else {**out, "gated_from": decision["task"]}

    def _gate_prompt(self, weights: np.ndarray, task: str) -> np.ndarray:
        """The student's prompt mix after the gates (:meth:`_gate`), moved in the gates' order:
        when the FPN gate measured the noise part, each prompt's weight moves to its partner with
        the noise part, when it took the noise part away (the camera's own noise, column FPN
        alone), each noise-carrying prompt's weight moves to its partner without it; when the frame's contrast is not low for this camera, each
        contrast-carrying prompt's weight moves to its partner without contrast (dropped when the
        partner is ``clean``); when the frame is not soft for this camera, each noise-free blur
        prompt's weight moves to its partner without the blur (the blur gate); when the blur
        gate's measure under noise found the frame sharp, each noise-carrying blur prompt's
        weight moves to its partner without the blur (BN → noise, CBN → CN), when it found it
        blurred, the other way; when the blur gate held the verdict's blur part (no sharpness
        reference yet, :meth:`_gate`), each blur prompt's weight moves to its partner without the
        blur; last, when the contrast gate promoted the verdict, each prompt of
        its :attr:`~tir.engines.contrast_gate.ContrastGate.gains` moves to its partner with
        contrast (after the blur gate's moves: a blur weight it moved to clean follows). Renormalised; a one-hot of the gated verdict when nothing is
        left. (K,) float32 in, (K,) float32 out."""
        moves = []
        if self.fpn_gate is not None and self._fpn:
            moves.append(self.fpn_gate.partners)
        if self.fpn_gate is not None and self._noise_taken:
            moves.append(self.fpn_gate.without_noise)
        if self.contrast_gate is not None and not self._contrast_low:
            moves.append(self.contrast_gate.partners)
        if self.blur_gate is not None and not self._soft:
            moves.append(self.blur_gate.partners)
        if self.blur_gate is not None and self.blur_gate.noisy_soft is not None:
            moves.append(self.blur_gate.noisy_moves())
        if self.blur_gate is not None and self._blur_held:
            moves.append({**self.blur_gate.noisy_partners, **self.blur_gate.partners})
        if self.contrast_gate is not None and self._contrast_promoted:
            moves.append(self.contrast_gate.gains)   # last: a blur weight the blur gate moved to clean follows
        if not moves or not self.prompts:
            return weights
        w = np.asarray(weights, dtype=np.float64).copy()
        for partners in moves:
            for k, prompt in enumerate(self.prompts):
                partner = partners.get(prompt)
                if partner is None:
                    continue
                if partner in self.prompts:
                    w[self.prompts.index(partner)] += w[k]
                w[k] = 0.0
        if w.sum() <= 0.0:
            return self._one_hot(task) if task in self.prompts else np.asarray(weights, dtype=np.float32)
        return (w / w.sum()).astype(np.float32)

    def warm_camera(self, batch) -> None:
        """Show the contrast, blur and FPN gates frames the camera delivered, without routing them (unlabeled:
        e.g. a camera set's frames before evaluation, as a running camera would have shown).

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 model inputs in [0, 1].

        Raises:
            ValueError: ``batch`` has another shape.
        """
        x = _as_batch(batch)
        x = x[[not scene_free(f[0]) for f in x]] if len(x) else x   # an FFC's flag is not the camera's look
        for f in x:
            # the camera's bars first (engines/borders.py): the gates learn the picture inside them
            if self.borders.add(f[0], force=True):
                self._restart_gates()
            box = self.borders.box_for(f.shape)
            frame = f if box is None else np.ascontiguousarray(inner(f, box))
            if self.contrast_gate is not None:
                self.contrast_gate.add(lowpass_span(frame), ends=lowpass_ends(frame))
            if self.blur_gate is not None:
                self.blur_gate.add(frame)
            if self.fpn_gate is not None:
                self.fpn_gate.add(frame)

    def pin_camera(self, batch) -> int:
        """Pin the gates' camera references to frames of the camera's healthy look (``tir run
        --reference``; the virtual camera's clean frames when it degrades its own): they are
        shown as :meth:`warm_camera` shows frames, then routed frames no longer join the
        contrast, blur and FPN gates' histories, so a camera whose every frame carries a
        degradation is still judged against its healthy look (without a pin such a stream
        becomes the camera's own look, and the gates pass it through). Shown in :meth:`status`
        as ``camera_reference``. Returns the number of frames shown so far.

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 model inputs in [0, 1].

        Raises:
            ValueError: ``batch`` has another shape, or holds no frame.
        """
        x = _as_batch(batch)
        if len(x) == 0:
            raise ValueError("pin_camera needs at least one frame of the camera's healthy look")
        self.warm_camera(x)
        for gate in (self.contrast_gate, self.blur_gate, self.fpn_gate, self.borders):
            if gate is not None:
                gate.pinned = True
        self.pinned_frames += len(x)
        self._pinned_size = tuple(int(v) for v in x.shape[-2:])
        self.reference_dropped = None
        return self.pinned_frames

    def freeze_camera(self, frozen: bool = True) -> None:
        """Keep the contrast, blur and FPN gates' camera histories as they stand (``frozen``):
        routed frames are still judged against them but do not join them (the gates' ``pinned``,
        without :meth:`pin_camera`'s unconditional frames); ``frozen=False`` lets routed frames
        join them again. For an evaluation (engines/training/camera_eval.py): the degradations it
        applies to a camera's frames are not the camera's look, so its degraded frames are routed
        frozen and its clean frames not, and the histories hold the camera's own frames as a
        running camera's do; joining them, the evaluated degradations made the camera's look a
        blend of them (docs/cameras.md "Session 15", K12: a narrow-span noisy Y16 camera's clean
        frames were routed in ``tir eval``, none at a cold start live). A pin (:meth:`pin_camera`)
        is never let go here."""
        if not frozen and self.pinned_frames:
            return
        for gate in (self.contrast_gate, self.blur_gate, self.fpn_gate, self.borders):
            if gate is not None:
                gate.pinned = bool(frozen)

    def _check_reference(self, size: Tuple[int, int]) -> None:
        """Let a pinned reference go when the camera's frames are not of the size it was pinned at
        (``tir run --reference`` of another camera or mode, or the camera changed its resolution
        since): the white-noise floor and the sharpness reference are measured per pixel, so they
        do not hold at another size. The gates are unpinned and restarted, the warm-up begins as at
        start-up (:meth:`new_camera`), a warning is logged once, and :attr:`reference_dropped`
        (shown in :meth:`status` as ``camera_reference``) says why."""
        if self._pinned_size is None or tuple(size) == self._pinned_size:
            return
        pinned = self._pinned_size
        why = (f"the reference frames are {pinned[1]}x{pinned[0]} px, the camera's {size[1]}x{size[0]} px: "
               "the pinned reference does not hold at another size, the gates learn this camera afresh")
        self._let_go_reference(why, ["reference size"])

    def _let_go_reference(self, why: str, reasons: Sequence[str]) -> None:
        """Unpin the gates, log ``why`` once, keep it in :attr:`reference_dropped` and restart
        as after a camera change (:meth:`new_camera` with ``reasons``): the frames the reference
        was pinned to no longer show this camera's look (another size, :meth:`_check_reference`;
        another bit depth, a camera change marked ``bits``: an 8-bit AGC output and 14-bit counts
        normalise to different noise floors and sharpness)."""
        log.warning("camera reference dropped: %s", why)
        for gate in (self.contrast_gate, self.blur_gate, self.fpn_gate, self.borders):
            if gate is not None:
                gate.pinned = False
        self.pinned_frames, self._pinned_size, self.reference_dropped = 0, None, why
        self.new_camera(reasons)

    def new_camera(self, reasons: Sequence[str] = ()) -> None:
        """Another camera, or the same camera in another state, delivers from now on: the contrast,
        blur and FPN gates forget their camera histories (their ``restart``; pinned ones stay), the
        routing state starts afresh (:meth:`reset`) and the next frame is routed. Called by
        :meth:`observe` when a frame's meta carries ``camera_change`` (edge/pipeline/stages.py
        ``Preprocess``: the source reconnected, or the frame size changed). Counted in :attr:`camera_changes`; ``reasons`` kept in :attr:`camera_change`.

        Why: the gates judge each frame against the camera's own history (its white-noise floor,
        sharpness, extent); kept across a camera change, the old camera's history made the new
        camera's own look a degradation for as long as the history lasted, and once it held only
        the new camera's routed frames, their restored verdicts kept it so (a clean Boson-like
        camera after RoadScene: the noise task on 384 of 400 clean frames, docs/cameras.md). A
        time-based forgetting instead stopped restoring a sustained degradation on an unchanged
        camera; these signals come from the stream, never from the frames' content. An online
        adaptation (``adapt``) starts its collection again
        (:meth:`~tir.engines.adapt.OnlineAdapter.restart`): fitted on two cameras' frames, the map
        aligned neither; a map already fitted on the previous camera is dropped (the bundle's own
        adaptation, if any, applies again) and fitted again on the new camera's frames, the state
        saying so (it was kept: the old camera's map moved the new camera's embeddings)."""
        self.camera_changes += 1
        self.camera_change = list(reasons)
        self.borders.restart()
        self._restart_gates(reasons)

    def _borders_changed(self) -> None:
        """The camera's bars changed (:attr:`borders`): the picture the router and the gates are
        shown is another from this frame on (its size, its statistics), so the gates' histories,
        measured on the old one, restart as on a camera change (:meth:`new_camera`, not counted as
        one) and the next frame is routed."""
        log.info("the camera's picture is %s from now on", self.borders.status() or "the whole frame")
        self._restart_gates(["borders"])

    def _restart_gates(self, reasons: Sequence[str] = ("borders",)) -> None:
        """:meth:`new_camera` without counting it and without forgetting the camera's bars."""
        if self.adapter is not None:   # --adapt N: one camera's frames only, fitted again once fitted
            self.adapter.restart(reasons)
            self._adaptation = self._bundle_adaptation   # the dropped online map no longer applies
        for gate in (self.contrast_gate, self.blur_gate, self.fpn_gate):
            if gate is not None:
                gate.restart()
        self.reset()
        self._due = True
        self._warm_left = WARM_FRAMES_PER_EVERY * self.every

    def _warming(self, n: int) -> bool:
        """Whether this batch of ``n`` frames is in the warm-up that the start or a camera change
        began, counting its frames down: it lasts while the FPN gate has no white-noise floor or
        the blur gate no sharpness reference that routed frames can give (:meth:`_cold`; at most
        :data:`WARM_FRAMES_PER_EVERY` × ``every`` frames, FFC frames not counted: :meth:`observe`
        never looks at them). In it every frame is routed, so the gates hold their
        :data:`~tir.engines.fpn_gate.MIN_FLOOR_FRAMES` / blur ``min_frames`` frames after that
        many frames instead of ``every`` times as many (the gates are silent without them and the
        router's own verdicts stand: a clean DDE camera read as noisy was given the noise task
        for 80 frames, docs/cameras.md); a frame off the schedule feeds the gates only
        (:attr:`observed`), the route is decided on the schedule's frames; and the router's
        unchecked noise and blur parts are held (:meth:`_gate`)."""
        if self._warm_left <= 0:
            return False
        self._warm_left -= n
        if not self._cold():
            self._warm_left = 0
            return False
        return True

    def _cold(self) -> bool:
        """Whether the FPN gate lacks a white-noise floor or the blur gate a sharpness reference that
        routed frames can still give it: a pinned gate (:meth:`pin_camera`) takes no routed frame
        into its history, so one pinned to fewer frames than its minimum is not warmed by routing
        every frame (``tir run --reference-frames 2`` routed all of the first 8 × ``every`` frames
        and held every noise verdict, passing a noisy stream through, for a floor that never came)."""
        fpn, blur = self.fpn_gate, self.blur_gate
        fpn_cold = fpn is not None and fpn.white_sigma is not None and not fpn.pinned \
            and fpn.floor_sigma()[0] is None
        blur_cold = blur is not None and bool(blur.partners) and not blur.pinned and blur.threshold() is None
        return fpn_cold or blur_cold

    def reset(self) -> None:
        """Forget the routing state (route, streak, last verdict; counters stay): the next
        frame is routed as at start-up. For independent frames (evaluation, a new scene). The
        contrast and blur gates' camera history stays: the camera is the same."""
        if not self.forced:
            self.current = None
        self._votes = []
        self._last = {"task": None, "confidence": None, "unknown": False, "nearest": None}
        self._drop_offsets()

    def _collect(self, emb: np.ndarray) -> None:
        fitted = self.adapter.add(emb)
        if fitted is None:
            return
        self._adaptation = fitted
        if self.adapt_save and self._adapt_saved_path is not None:
            # a refit after a camera change: the copy holds the first camera's map, a whole adapted
            # bundle of its own; it is not written over (the folder exists: a copy is always new)
            self.adapt_saved = (f"{self._adapt_saved_path} (the map of the camera before the change; the refitted "
                                "map is used in this run, not written)")
            return
        if self.adapt_save:
            from .adapt import write_adapted_bundle

            try:
                spans = None if self.contrast_gate is None else list(self.contrast_gate.spans)
                self.adapt_saved = self._adapt_saved_path = str(
                    write_adapted_bundle(self.bundle.path, self.adapt_save, fitted, camera_spans=spans).path)
                log.info("adapted bundle written to %s", self.adapt_saved)
            except (OSError, ValueError, RuntimeError) as exc:
                self.adapt_saved = f"not written: {exc}"
                log.warning("adapted bundle not written to %s: %s", self.adapt_save, exc)

    def _decide(self, decision: dict) -> None:
        self.decisions += 1
        self._last = {k: decision[k] for k in ("task", "confidence", "unknown", "nearest")}
        self._last["gated_from"] = decision.get("gated_from")   # the router's own verdict when the gate changed it
        self._last["uncertain"] = False
        task = decision["task"]
        if task != UNKNOWN and task != CLEAN and task not in self.routes:
            log.warning("router named %s, which this bundle has no route for; treated as unknown", task)
            task = UNKNOWN
            self._last["unknown"] = True
        confidence = self._route_confidence(decision, task)
        unsure = task != UNKNOWN and confidence is not None and confidence < self.min_confidence \
            and not decision.get("fpn") and not decision.get("contrast_promoted")
        if task == UNKNOWN or unsure:
            # do no harm: pass-through is the candidate (same hysteresis as any switch), never
            # "keep whatever route the last confident verdict chose"
            if unsure:
                self.uncertain += 1
                self._last["uncertain"] = True
            else:
                self.unknowns += 1
            if self.current is None:
                self._votes = []
                return  # nothing chosen yet: frames already pass through
            task = CLEAN
        if task == self.current:
            self._votes = []
            return
        if self.current is None:  # start-up: nothing to flicker away from
            self._switch(task)
            return
        # a verdict against the current route: `hysteresis` of them in a row leave it, for the task a
        # strict majority of them names, else for pass-through (they named no one task)
        self._votes.append(task)
        if len(self._votes) >= self.hysteresis:
            best, n = Counter(self._votes).most_common(1)[0]
            best = best if 2 * n > len(self._votes) else CLEAN
            if task != CLEAN or best == CLEAN:
                self._switch(best)
                return
            # the newest verdict says the frames are clean: no route is started on it (do no harm;
            # docs/cameras.md "Round 9"); the oldest vote drops out and the next verdicts decide
            self._votes.pop(0)
        # a pending switch is confirmed or dropped within one interval: its other verdicts come
        # every ceil(every / (hysteresis - 1)) frames
        self._confirm_at = self.frames - 1 + -(-self.every // max(self.hysteresis - 1, 1))

    def _route_confidence(self, decision: dict, task: str) -> Optional[float]:
        """How sure the router is of what the gated verdict ``task`` would do, compared with
        ``min_confidence`` in :meth:`_decide`: its probability that the frame carries at least the
        parts of ``task`` the router itself named (:func:`~tir.engines.router.parts_confidence` of
        the parts ``task`` shares with the router's ``nearest`` class; parts a gate added were
        measured, and all-measured is 1.0). The nearest class's ``confidence`` for ``clean`` (no
        parts: pass-through either way) and for a verdict without ``probabilities``.

        Why (session 22, docs/cameras.md): an uncertain choice between classes that agree on a part
        is not uncertainty about that part. Reading the nearest class's probability alone, hit_uav's
        BN segment (``tir eval --data hit_uav --sequence --segment-frames 192 --max-frames 12``, test,
        with the contrast gate's session-22 changes) voted CN p=0.50 -> noise, CBN 0.78, CN 0.44 ->
        noise: two votes for pass-through although every verdict said the frame carries noise, and
        the route fell from BN to pass-through for 40 of its 192 frames after the onset (+2.21 dB;
        judged by its parts: pass-through on the onset's 8 frames only, the noise route on 32 of the
        40, +2.99 dB). On val (``tir eval --data
        roadscene,hit_uav,m3svd_magnity,anti_uav,chips_lepton35 --split val --max-frames 12``):
        hit_uav BN +2.21 -> +2.76 dB, anti_uav BN +3.21 -> +3.78, roadscene CBN +4.66 -> +4.87,
        router % and clean frames (99 / 99 dB) unchanged. A router that cannot tell whether there
        is any degradation (its probability spread over clean and classes that share no part)
        still votes for pass-through: do no harm."""
        probabilities = decision.get("probabilities")
        if task == CLEAN or not probabilities:
            return decision.get("confidence")
        named = task_parts(task) & task_parts(decision.get("nearest") or task)
        return parts_confidence(probabilities, named)

    def _switch(self, task: str) -> None:
        if (PASSTHROUGH if task == CLEAN else task) == self.route:  # e.g. none yet -> clean: no switch
            self.current = task
            self._votes = []
            return
        log.info("route %s -> %s", self.route, PASSTHROUGH if task == CLEAN else task)
        self.current = task
        self.switches += 1
        self._votes = []
        self._sharp_run = 0
        self._judge_afresh()

    def _judge_afresh(self) -> None:
        """The route's frames are judged afresh (:meth:`_released`), after a verdict or a switch: the
        frames let go before no longer latch the release, and the blur gate's bound from its
        full-resolution reads is forgotten."""
        self._latched = False
        if self.blur_gate is not None:
            self.blur_gate.forget_reads()

    # --------------------------------------------------------------------------------------
    def infer(self, batch, meta=None) -> np.ndarray:
        """Restore a batch with the current route (routing on it first, see :meth:`observe`).

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 frames, normalised to [0, 1].
            meta: the frames' meta (a dict, or one per frame), for FFC skipping.

        Returns:
            (N, 1, H, W) float32 restored frames; a copy of the input on pass-through.

        Raises:
            ValueError: ``batch`` has another shape.
            EngineError: a route, the router or the student cannot be loaded or run.

        The current task runs its route or the student as :attr:`deploy_tasks` names it
        (:attr:`runs`); the student takes the router's prompt mix (:attr:`prompt_weights`). After
        a contrast-carrying task the output's extremes are mapped onto the camera's own
        (``tone_align``, :meth:`ContrastGate.align`).
        """
        x = _as_batch(batch)
        self.observe(x, meta)
        engine, finish = self.plan(x)
        if engine is None:
            return finish(x.copy())
        return finish(np.asarray(engine.infer(x), dtype=np.float32))

    def plan(self, x: Optional[np.ndarray] = None) -> Tuple[Optional[object], Callable[[np.ndarray], np.ndarray]]:
        """What restores frames ``x`` now, under the routing state :meth:`observe` left: ``(engine,
        finish)``. ``engine`` has ``infer(batch)`` ((N, 1, H, W) float32 -> the same shape): the
        route of :meth:`runner`'s task, or the student with its prompt weights; None for
        pass-through and for a task the camera's tone alone restores (contrast under ``tone``).
        ``finish`` maps its output (or the input copy) to the restored frames: the tone
        alignment after a contrast-carrying task (:meth:`ContrastGate.align`); after a
        noise-carrying task without a contrast part (noise, BN) the same map onto the camera's
        tone, or, before the camera has one, onto the extremes of ``x`` itself (``x`` None: no
        map): noise has no tone of its own, and the routes learned from the noise spec's
        one-signed shading to lower a frame's level (on the real lynred_nonuc frames 40 grey
        levels darker and 0.73 of the contrast without this; docs/cameras.md "Session 10"); else
        identity. When the FPN gate found column FPN alone on the last routed frame
        (engines/fpn_gate.py ``FPNGate.offsets``), ``finish`` then subtracts the column offsets
        measured on it (:func:`~tir.engines.fpn_gate.column_offsets`: an FPA's offsets are fixed,
        so they hold until the next verdict; rescaled to the newest frame's normaliser range when
        ``meta["norm"]`` gave one, as counts are what they are fixed in), on pass-through too; frames ``x`` of another
        width than the offsets' (the source changed size) drop them: nothing is subtracted and
        :attr:`passes_through` and :attr:`runs` say so, until the next verdict.
        Frames ``x`` with the camera's bars (:attr:`borders`, engines/borders.py: a grabber's
        pillarbox or letterbox) are planned on the picture inside them: ``engine`` restores that
        picture and gives the whole frame back with the bars as they came in, ``finish`` runs on the
        picture and pastes the bars back: those of ``x`` when they are the grabber's, else the
        grabber's own (``BorderTracker.bars``: a frame whose bars changed with its picture was
        degraded as a whole); an engine without ``pipeline()``: the TensorRT stage runs it at submit.
        :meth:`infer` is ``finish(engine.infer(x))``; the TensorRT stage that keeps several
        frames in flight (edge/pipeline/stages.py ``PipelinedInfer``) runs the two parts apart.

        Raises:
            EngineError: the route or the student cannot be loaded.
        """
        box = None if x is None else self.borders.box_for(np.shape(x))
        if box is None:
            return self._plan_picture(x)
        # the camera's picture inside the grabber's bars (engines/borders.py): restored and finished
        # as a frame of its own, the bars pasted back as they came in
        whole = _as_batch(x)
        engine, finish = self._plan_picture(np.ascontiguousarray(inner(whole, box)))
        return (None if engine is None else _Inside(engine, box)), \
            functools.partial(_paste_finish, finish, box, self.borders.bars(whole))

    def _plan_picture(self, x: Optional[np.ndarray]) -> Tuple[Optional[object], Callable[[np.ndarray], np.ndarray]]:
        """:meth:`plan` on the camera's picture ``x`` (the frames inside their bars)."""
        engine, finish = self._plan(x)
        offsets = self.offsets
        width = None if offsets is None or x is None else np.shape(x)[-1]
        if width is not None and width != offsets.shape[-1]:
            # the source changed width since the offsets were measured: they fit no column of
            # these frames, so they are dropped (the frames pass through as they are and say so)
            # until the next verdict measures them again
            log.info("column offsets measured at width %d dropped: the frames are %d wide now",
                     offsets.shape[-1], width)
            self._drop_offsets()
            offsets = None
        if offsets is None:
            return engine, finish
        offsets = self._offsets_scaled()
        # column FPN alone: its offsets (measured on the routed frame) come off what the frame comes out as
        return engine, lambda y: subtract_offsets(finish(y), offsets)

    def _released(self, x: Optional[np.ndarray]) -> str:
        """The task that restores frames ``x`` under the current route: the route's task, or
        ``clean`` (pass-through) when no frame of ``x`` shows any of the route's parts (each frame
        oldest first, :meth:`_parts_gone`: the batch is planned as one), each part checked in turn
        and the next only when it is absent:

        - the contrast part: the frame's contrast is not low for this camera
          (:meth:`~tir.engines.contrast_gate.ContrastGate.is_low` on its :func:`lowpass_ends`, against
          the camera's extent reference, ~1 ms);
        - the noise part: its white noise is no more than the camera's own frames reach
          (:meth:`~tir.engines.fpn_gate.FPNGate.shows_own_noise`, ~1 ms; not on frames whose count
          step is coarse for their span, which the gates see de-quantised, nor while the last routed
          frame carried column FPN);
        - the blur part: the frame is clearly sharp for this camera by the blur gate's measure under
          noise (:meth:`~tir.engines.blur_gate.BlurGate.shows_sharp`, ~5 ms at 640×512; a frame that
          measure leaves undecided by the gate's full-resolution measure, ~4-9 ms more), on
          :data:`SHARP_RUN` frames in a row (a frame the check does not read, as one that still shows
          noise under BN, ends the run).

        Once frames were let go (:attr:`_latched`), the noise and blur parts are taken as absent until
        a frame reads above the verdicts' own bound (``latched`` of the two checks: a Schmitt
        trigger, so a stream about the strict bound does not flicker between restored and let go);
        the state ends on a switch and on every verdict. Counted in :attr:`contrast_released`,
        :attr:`noise_released` and :attr:`blur_released` (a compound's frame in each of its parts).

        Why (docs/cameras.md "Session 22", "Session 23"): the route follows the router's verdicts,
        every ``every`` frames and after ``hysteresis`` of them, so a degradation that stops is
        restored for up to ``every`` frames more: the contrast route stretched a frame of normal
        contrast onto the camera's tone, 18.6-41 dB from itself, the noise and blur routes changed
        the clean frames after their segments (p5 21.6-39.3 dB, ``tir eval --sequence``). The
        checks cost a frame 1-8 ms, the router's verdict 14 ms and a route 20-40 ms. A part is
        only ever taken away (a frame found degraded between verdicts keeps waiting for the router:
        do no harm), and only where nothing is left: a frame that still shows one part keeps the
        whole route (on clean frames the CN route with the camera's tone came out closer to them
        than its partner without the contrast part: m3svd_magnity, the clean segment after CN, p5
        37.7 dB on the CN route, 28.7 dB on the noise route). A forced task (``--task``) is run as
        it is, as its frames are not gated."""
        task = self.current
        if x is None or self.forced:
            return task   # a forced task (--task) is the user's: no gate judges its frames
        batch = _as_batch(x)
        # every frame of the batch, oldest first: the batch is planned as one, so it passes through
        # only when none of its frames shows a part (a blurred frame before a sharp one was let go)
        for frame in batch[:, 0]:
            parts = self._parts_gone(task, frame)
            if parts is None:
                self._latched = False
                return task
        self._latched = True
        contrast, noise, blurred = parts
        self._released_frames += len(batch)
        self.contrast_released += len(batch) * int(contrast)
        self.noise_released += len(batch) * int(noise)
        self.blur_released += len(batch) * int(blurred)
        return CLEAN

    @property
    def released(self) -> int:
        """Frames a route passed through between verdicts, every part checked gone (:meth:`_released`):
        those counted in :attr:`contrast_released`, :attr:`noise_released` or :attr:`blur_released`,
        each once."""
        return self._released_frames

    def _parts_gone(self, task: str, frame: np.ndarray) -> Optional[Tuple[bool, bool, bool]]:
        """:meth:`_released` on one (H, W) frame: None when it shows a part of ``task`` (or one
        cannot be judged), else which parts were checked gone (contrast, noise, blur). Moves the
        run of clearly sharp reads: a frame the blur check does not read ends it (a frame that
        still shows the noise part is not sharp in a row)."""
        run, self._sharp_run = self._sharp_run, 0
        left = task
        gate = self.contrast_gate
        contrast = gate is not None and gate.partners.get(left) is not None and gate.extent_reference is not None
        if contrast:
            try:
                lo, hi = lowpass_ends(frame)
            except ValueError:
                return None
            if gate.is_low(0.0, hi - lo):
                return None
            left = gate.partners[left]
        fpn = self.fpn_gate
        noise = fpn is not None and left in fpn.without_noise and not self._coarse
        if noise:
            if not fpn.shows_own_noise(frame, scale=self._counts_scale, latched=self._latched):
                return None
            left = fpn.without_noise[left]
        blur = self.blur_gate
        blurred = blur is not None and blur.partners.get(left) == CLEAN
        if blurred:
            # clearly sharp on this frame and the one before it under this route: a frame of a
            # lasting blur that reads sharp now and then keeps the route (docs/cameras.md "Session 23")
            sharp = blur.shows_sharp(frame, latched=self._latched)
            self._sharp_run = run + 1 if sharp else 0
            if not sharp or (self._sharp_run < SHARP_RUN and not self._latched):
                return None
            left = CLEAN
        if left != CLEAN:
            return None
        return contrast, noise, blurred

    def _plan(self, x: Optional[np.ndarray]) -> Tuple[Optional[object], Callable[[np.ndarray], np.ndarray]]:
        """:meth:`plan` before the column offsets are removed."""
        if self.route == PASSTHROUGH:
            return None, _unchanged
        current = self._released(x)   # the route's task, less a contrast part this frame does not show
        task = self.runner(current)   # the partner when the camera's tone restores the contrast part
        if task == CLEAN:
            engine = None
        elif self.runs_student(current):
            # no mix yet (a route carried over a bundle swap before the router ran): the task's one-hot;
            # under tone the partner's one-hot (the mix carries the contrast part the tone restores)
            weights = self.prompt_weights if self.prompt_weights is not None and task == self.current \
                else self._one_hot(task)
            engine = _PromptedStudent(self.student_engine(), weights)
        else:
            engine = self.engine(task)
        if self.tone_align and current in self.contrast_gate.partners:
            return engine, self.contrast_gate.align
        if self.tone_align and current in self._keeps_tone:
            # noise has no tone of its own: the camera's, or before it is known the frame's own
            gate = self.contrast_gate
            if gate.tone_reference() is not None:
                return engine, functools.partial(gate.align, own_sigma=NOISE_TONE_SIGMA)
            try:
                ends = None if x is None else lowpass_ends(_as_batch(x)[-1, 0])
            except ValueError:
                ends = None
            return (engine, _unchanged) if ends is None else (engine, lambda y: gate.align(y, fallback=ends))
        if self.tone_align and engine is not None and x is not None and task in self._blur_only:
            return engine, functools.partial(self._keep_blur_tone, _as_batch(x), self._blur_only[task])
        return engine, _unchanged

    def _keep_blur_tone(self, x: np.ndarray, sigma: float, y: np.ndarray) -> np.ndarray:
        """Do no harm after a route that only undoes a blur (K17): each restored frame of ``y``
        whose tone the route moved by more than the strongest blur its task undoes (σ ``sigma``) can
        change its input at all (engines/blur_gate.py :func:`~tir.engines.blur_gate.blur_keeps_tone`:
        a blur keeps every region's mean, so undoing one keeps it too) is given back as its input,
        counted in :attr:`blur_tone_refused`. Such a route is not restoring the frame: on a camera
        whose frames span a dozen grey levels (a fixed gain set for a wider scene) a blur moves a
        pixel by a fraction of a level and the route lifted their tone instead. Each frame whose
        counts the camera's own noise does not dither and which the strongest blur changes by less
        than half a count step (:meth:`_undithered_step`, engines/blur_gate.py
        :func:`~tir.engines.blur_gate.blur_below_step`; on the grid of that step,
        :func:`on_count_grid`: a step the frame is not on is not its own) is given back too, counted in
        :attr:`blur_step_refused`: rounding erased what such a blur took, and the route sharpened
        the rounding's contours (y16_fog: blur −2.11 dB, docs/cameras.md "Session 21"). With
        ``tone_align`` only (the restorer's judgement of the output's tone).

        Args:
            x: (N, 1, H, W) float32 frames the route restored.
            sigma: the task's strongest blur σ in px (engines/blur_gate.py :func:`~tir.engines.blur_gate.blur_only_tasks`).
            y: (N, 1, H, W) float32 route output.

        Returns:
            (N, 1, H, W) float32: ``y``, its refused frames replaced by ``x``'s.
        """
        y = np.asarray(y, dtype=np.float32)
        n_frames = min(len(x), len(y))
        toned = [n for n in range(n_frames) if not blur_keeps_tone(x[n, 0], y[n, 0], sigma)]
        step = self._undithered_step()
        rounded = [] if step is None else \
            [n for n in range(n_frames) if n not in toned and on_count_grid(x[n, 0], step)
             and blur_below_step(x[n, 0], sigma, step)]
        if not toned and not rounded:
            return y
        out = y.copy()
        for n in toned + rounded:
            out[n] = x[n]
        self.blur_tone_refused += len(toned)
        self.blur_step_refused += len(rounded)
        return out

    def _undithered_step(self) -> Optional[float]:
        """The newest frame's count step in model-input units when the camera's own white noise does
        not dither its counts: a Y16 frame (:func:`_counts_scale`) of a camera whose white-noise floor
        in count steps (engines/fpn_gate.py ``FPNGate.floor_counts_sigma``, measured on the frames
        under noise-free verdicts) is under :data:`DITHER_SHARE` of a step. None otherwise: an 8-bit
        (display-referred) frame, no FPN gate, too few floor frames, or a camera whose noise dithers
        its counts (its counts then hold the scene below one step on average and a deblur can use
        it: a sensor of 1.5 counts' noise as y16_msb_640x512's, whose blurred frames look to the
        model as y16_fog's and gain +1.17 dB, docs/cameras.md "Session 21")."""
        if self._counts_scale is None or self.fpn_gate is None:
            return None
        floor = self.fpn_gate.floor_counts_sigma()
        if floor is None or floor >= DITHER_SHARE:
            return None
        return 1.0 / self._counts_scale

    def status(self) -> dict:
        """The routing state for the stats page: ``task`` (the route now), the last verdict
        (``decision``, ``confidence``, ``unknown``, ``nearest``), ``router_ms`` (ms per frame),
        counters (``frames``, ``decisions``, ``switches``, ``unknowns``, ``uncertain``,
        ``skipped_ffc``, ``skipped_scene_free``: those of them that held no scene, :func:`scene_free`,
        ``offsets_renewed``: column offsets dropped because a frame no longer carried them,
        :meth:`_offsets_renewed`, ``blur_tone_refused``: frames a blur-only route gave back as they came
        in, its output having moved their tone, :meth:`_keep_blur_tone`, ``blur_step_refused``: frames a
        blur-only route gave back because the blur changes them by less than their undithered count
        step resolves, :meth:`_keep_blur_tone`, ``contrast_released``: frames the contrast route (or
        CN) passed through, their contrast not low for this camera, ``noise_released``: frames the
        noise route (or CN) passed through, their white noise the camera's own, ``blur_released``: frames
        a blur-carrying route passed through, clearly sharp for this camera, :meth:`_released`, ``dequantised``: frames the
        router and the gates saw de-quantised, their count step coarse for their span,
        :func:`dequantised`, ``dead_column_frames``: routed frames shown to the router with dead columns
        replaced, ``camera_changes``: frames whose meta said the camera changed, :meth:`new_camera`,
        ``observed``: frames routed off the schedule while the gates warmed up, their verdicts fed
        the gates but did not decide the route, :meth:`_warming`),
        ``camera_change`` (the last one's reasons, or None), ``gated_from`` (the router's own verdict when a gate changed it, else
        None), ``loaded_routes``, ``forced``, ``adapt``, ``deploy`` (routes/student/auto),
        ``deploy_tasks`` ({task: routes|student|tone}), ``deploy_margin_db`` (auto's margin in dB, else
        None), ``runs`` (what the current task goes through: passthrough/route/student, with
        ``tone+`` before it when the camera's tone restores the contrast part, :attr:`runs`),
        ``student_loaded``, ``camera_reference`` (``{"pinned": N}``: the gates' references are
        pinned to N frames of the camera's healthy look, :meth:`pin_camera`; ``{"dropped": why}``:
        a pin let go because the camera's frames are of another size, :meth:`_check_reference`;
        None), ``contrast`` (the
        contrast gate: camera reference span, history frames, ratio, demoted verdicts; None when
        off), ``fpn`` (the FPN gate: the last routed frame's column-FPN amplitude and
        consistency, thresholds, checked frames, promoted verdicts; None when off), ``blur`` (the
        blur gate: the last routed frame's drop, the camera's threshold, history frames,
        demoted verdicts; None when off) and the student's ``prompt`` weights (None without).
        """
        return {"task": self.route, "confidence": self._last["confidence"],
                "unknown": bool(self._last["unknown"]), "switches": self.switches,
                "router_ms": self.router_ms, "decision": self._last["task"],
                "nearest": self._last["nearest"], "gated_from": self._last.get("gated_from"),
                "forced": self.forced, "frames": self.frames,
                "decisions": self.decisions, "unknowns": self.unknowns, "uncertain": self.uncertain,
                "skipped_ffc": self.skipped_ffc, "skipped_scene_free": self.skipped_scene_free,
                "offsets_renewed": self.offsets_renewed,
                "blur_tone_refused": self.blur_tone_refused, "blur_step_refused": self.blur_step_refused,
                "contrast_released": self.contrast_released, "noise_released": self.noise_released,
                "blur_released": self.blur_released,
                "dequantised": self.dequantised,
                "dead_column_frames": self.dead_column_frames,
                "camera_changes": self.camera_changes, "camera_change": self.camera_change,
                "observed": self.observed, "loaded_routes": self.loaded_routes, "borders": self.borders.status(),
                "adapt": self.adapt_status(), "deploy": self.deploy, "deploy_tasks": dict(self.deploy_tasks),
                "deploy_margin_db": self.deploy_margin_db, "runs": self.runs, "destripe": self.offsets is not None,
                "student_loaded": self._student is not None,
                "camera_reference": {"pinned": self.pinned_frames} if self.pinned_frames else
                ({"dropped": self.reference_dropped} if self.reference_dropped else None),
                "contrast": None if self.contrast_gate is None else self.contrast_gate.status(),
                "fpn": None if self.fpn_gate is None else self.fpn_gate.status(),
                "blur": None if self.blur_gate is None else self.blur_gate.status(),
                "prompt": None if self.prompt_weights is None else
                {p: round(float(w), 4) for p, w in zip(self.prompts, self.prompt_weights)}}

    def adapt_status(self) -> Optional[dict]:
        """``{"state", "frames", "saved"}`` while/after ``adapt=N``; ``{"state": "adapted"}``
        for a bundle adapted offline (``tir adapt``); None when the router is not adapted."""
        if self.adapter is not None:
            return {"state": self.adapter.state, "frames": self.adapter.frames, "saved": self.adapt_saved}
        if self._adaptation is not None:
            return {"state": "adapted", "frames": self._adaptation.get("frames"),
                    "source": self._adaptation.get("source"), "date": self._adaptation.get("date")}
        return None

    def close(self) -> None:
        """Close every loaded engine (routes, router, student); they load again on next use."""
        for engine in list(self._engines.values()) + [self._router_engine, self._student]:
            if engine is not None and hasattr(engine, "close"):
                engine.close()
        self._engines.clear()
        self._router_engine = None
        self._student = None

    def __repr__(self) -> str:
        return f"<Restorer {self.bundle.name} route={self.route} routes={self.routes}>"
