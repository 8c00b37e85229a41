"""Per-camera evaluation through the live pipeline's own stages: what the user gets.

Every frame goes the way ``tir run`` sends it: counts as the camera delivers them ->
:class:`tir.edge.pipeline.stages.Preprocess` (the same object the pipeline runs: fixed
full-scale map for 8-bit display-referred input, robust-percentile normaliser for raw counts)
-> the :class:`~tir.engines.restorer.Restorer` with automatic routing -> ``Postprocess`` back to
counts. No resizing, no cropping: each frame at its own size.

Degradations are applied *before* that preprocessing, to the counts, as a real sensor would:
an 8-bit frame is degraded on its grey levels (/255, the ECMRNet recipe, ecmrnet.md §1.3) and
re-quantised to 8 bits; raw counts are degraded on the frame's robust range
(:func:`tir.engines.degrade.counts_range`, the map the virtual camera uses) and rounded to
integer counts. Frame i, class k uses the generator seeded ``[seed, i, k]``.

The gates judge each frame against the camera's own history (engines/restorer.py), and that
history is the camera's frames: the set's unlabeled frames routed first as ``tir run`` routes
them (:func:`warm_camera`: 48 train frames, or a folder's own frames looped to 48 as ``tir run``
loops a folder), then each evaluated clean frame; a degraded frame is judged against it without
joining it (``Restorer.freeze_camera``). The degradations the evaluation applies are not the
camera's look: joining the history (7 of every 8 frames routed), they pulled its references
toward themselves (docs/cameras.md "Session 15", K12).

A sensor's dead and stuck read-outs (pixels, columns, rows: edge/defects.py) are the sensor's,
not the scene's: the set's frames first go through the camera stream's ``DefectMap`` as ``tir
run``'s Preprocess learns it (the warm-up's frames, :func:`warm_camera`); what it holds then is
the camera's defect list, stamped back on every degraded frame as the sensor reads them
(:func:`stamp_defects`: a blur or noise of the scene does not reach a dead column), and the
clean reference and the degraded input are scored with those pixels replaced as a camera's
bad-pixel replacement gives them (:func:`tir.edge.defects.replace_defects`), so filling a dead
column is not scored as harm, nor leaving it as a gain. The live path keeps learning on the
evaluated frames; ``defects`` in the result says how many pixels were found and replaced.

Scores are PSNR of restored vs clean counts with the peak = the frame's full scale (8-bit:
255 grey levels; raw: the span of its degradation range), per camera set:

- router: share of degraded frames whose verdict is their task (strict: "unknown" is wrong),
  share of clean frames sent to pass-through, confusion counts;
- do no harm: PSNR of the output of a clean frame against itself (median, 5th percentile);
- per task: mean PSNR of the degraded input, of the automatic route, of the true route, and the
  gain (automatic minus degraded); mean SSIM (:func:`tir.engines.metrics.ssim`, the same peak) of
  the degraded input and of the automatic route;
- routing regret per task: mean PSNR of the automatic route minus the true route's (0 = the
  router's choice cost nothing; positive = it chose better than the label);
- raw counts (scene-referred input, the normaliser is the AGC): a global contrast/brightness
  change of the counts is an affine map that the live percentile normaliser undoes exactly, so
  the user's picture does not show it, and for a radiometric camera the counts are the scene's
  temperatures, not something to "restore". Such sets are therefore also scored as the user
  sees them (``display``): restored and clean each through the pipeline's display map (robust
  0.5-99.5 % linear range widened to the normaliser's 64-count minimum span,
  :func:`display_map`), and the router against the *visible* task (the contrast part dropped:
  contrast -> clean, CB -> blur, CN -> noise, CBN -> BN; kept on a frame whose range the
  normaliser widened, where an affine change is not undone; :func:`visible_task`). The strict
  count-domain numbers stay in the result next to them;
- sets of real degraded frames without a clean target (``lynred_nonuc``): share routed to a
  noise-carrying task, column FPN (:func:`tir.engines.metrics.column_fpn`) before/after, in grey
  levels and relative to the scene's contrast (p1-p99 of the low-passed frame: a contrast
  stretch scales FPN and scene alike), and the scene kept (Pearson correlation of the Gaussian
  low-passes, σ = 4 px, of input and output: 1 = the same picture up to contrast).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from tir.edge.defects import DefectMap, replace_defects
from tir.edge.normalize import offset_binary, signed_words

from . import datasets as dsets
from .. import degrade as deg
from ..metrics import column_fpn, psnr, ssim
from ..router import CLEAN

NOISE_TASKS = ("noise", "CN", "BN", "CBN")
SCENE_SIGMA = 4.0
#: unlabeled frames of the same camera routed (the gates' camera history) before a set is evaluated
WARM_FRAMES = 48


def warm_camera(auto, name: str, split: str, root=None, frames: int = WARM_FRAMES, defects=None) -> int:
    """Route up to ``frames`` unlabeled frames of camera set ``name`` through the live
    preprocessing, router and gates without restoring them (:func:`user_route`), as a running
    camera would have routed them before the evaluated frames: the set's ``train`` split when the
    evaluated split is another one (other scenes of the same camera), else the evaluated frames
    themselves (a set without splits), looped to ``frames`` when there are fewer (a running camera
    has shown the gates that many frames). Returns the number of frames routed (0 with every
    gate off).

    The gates' camera histories then hold what ``tir run`` without ``--reference`` gives them:
    the contrast gate every routed frame, the blur gate frames under a noise-free verdict and the
    FPN gate's white-noise floor frames under the ``clean`` verdict (engines/*_gate.py). Showing
    every frame to every gate unconditionally (``Restorer.warm_camera``, what ``--reference``
    pins) gave a camera whose clean frames the router calls noise a floor that ``tir run`` never
    builds: its own noise was kept in the evaluation and removed from every frame live
    (docs/cameras.md, round 3: a Boson-like DDE camera and netd_noise, 100 % of the clean frames
    passed through in ``tir eval``, none in ``tir run``).

    ``defects`` (an edge/defects.py ``DefectMap``, the stream's, as ``tir run``'s Preprocess keeps
    it): the same frames go through it first, as they would live, also with every gate off (then
    they are preprocessed only and 0 is returned)."""
    gated = not all(getattr(auto, g, None) is None for g in ("contrast_gate", "blur_gate", "fpn_gate"))
    if frames <= 0 or (not gated and defects is None):
        return 0
    ds = dsets.dataset(name)
    source = "train" if ds.splits and split != "train" else (split if ds.splits else dsets.ALL)
    shown = dsets.load_counts(name, source, root, frames, dropped=[])  # its own drops are the evaluated set's
    # fewer frames than that (a folder of a dozen): looped, as tir run loops a folder (file://...?loop=true),
    # so the gates get the references a running camera has (12 frames, 8 of them in the restorer's own
    # warm-up, left the blur gate without its 8-frame reference: K12)
    shown = [shown[i % len(shown)] for i in range(frames)] if shown else shown
    for f in shown:
        counts, _, meta, _ = degrade_counts(f, ds.bits, CLEAN, None)
        if not gated:
            model_input(counts, meta, defects)
            continue
        auto.reset()
        user_route(auto, counts, meta, defects)
    auto.reset()
    return len(shown) if gated else 0


def visible_task(task: str, bits: int, widened: bool = False) -> str:
    """The task a frame still shows after the live preprocessing.

    8-bit (display-referred) frames keep every degradation: ``task`` unchanged. Raw counts
    (``bits`` > 8, scene-referred) lose the contrast part, since the robust-percentile
    normaliser is invariant to an affine change of the counts: "contrast" -> "clean", "CB" ->
    "blur", "CN" -> "noise", "CBN" -> "BN"; others unchanged. Except when ``widened``: the
    normaliser widened the degraded frame's range to its minimum span (:func:`span_widened`,
    a flat scene or a contrast loss under ``Normalizer.min_span`` counts), so it does *not*
    undo the contrast change and the task is kept whole.
    """
    if bits <= 8 or task == CLEAN or widened:
        return task
    parts = deg.COMPOUND_PARTS.get(task, (task,))  # the degradation catalogue's parts
    if "contrast" not in parts:
        return task
    rest = tuple(p for p in parts if p != "contrast")
    if not rest:
        return CLEAN
    if len(rest) == 1:
        return rest[0]
    return next((t for t, ps in deg.COMPOUND_PARTS.items() if ps == rest), task)


def live_range(counts: np.ndarray) -> Tuple[float, float]:
    """(lo, hi) in counts that the live normaliser maps one raw frame with on its own: a fresh
    :class:`tir.edge.normalize.Normalizer` with the pipeline's defaults (robust 0.5 % / 99.5 %
    percentiles of a subsample of the image rows, widened about their centre to ``min_span`` = 64
    counts, the max-gain analogue, kept inside 0..65535), the minimum span in stored values as
    the viewer's AGC counts it (``count_steps`` off, edge/agc.py).

    Args:
        counts: (H, W) raw frame, uint16 counts (any real dtype).

    Raises:
        ValueError: an empty frame.
    """
    from tir.edge.normalize import Normalizer

    # the viewer's map (edge/agc.py): the minimum span in stored values, so a restored frame whose
    # values fall on a lattice (a tone stretch) is shown as the camera's frames are
    p = Normalizer(count_steps=False).update(counts)
    return p.lo, p.hi


def span_widened(counts: np.ndarray) -> bool:
    """True when the live normaliser widens this raw frame's robust 0.5-99.5 % range to its
    minimum span (the range of its image rows, status rows left out, is under
    ``Normalizer.span_floor``: ``min_span`` = 64 of the camera's count steps): the frame is then
    shown at its own count scale, not stretched, and a contrast change of it stays visible.

    Args:
        counts: (H, W) raw frame, uint16 counts (any real dtype).

    Raises:
        ValueError: an empty frame.
    """
    from tir.edge.normalize import Normalizer, robust_range, status_rows

    norm = Normalizer()
    top, bottom = status_rows(counts, norm.low_pct, norm.high_pct, norm.stride)
    image = counts[top:counts.shape[0] - bottom]
    lo, hi = robust_range(image, norm.low_pct, norm.high_pct, norm.stride)
    return hi - lo < norm.span_floor(image)


def display_map(counts: np.ndarray) -> np.ndarray:
    """Counts (H×W, any dtype) -> float64 [0, 1] through the display map the pipeline applies
    to raw frames: linear between the robust 0.5 % / 99.5 % percentiles, widened to the
    normaliser's minimum span (64 counts; :func:`live_range`), clipped. Without the minimum span
    a flat scene (fog, sea: a few tens of counts) would be scored stretched to full scale, as
    the user never sees it."""
    lo, hi = live_range(counts)
    return np.clip((counts.astype(np.float64) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def stamp_defects(counts: np.ndarray, clean_counts: np.ndarray, defects: Optional[np.ndarray]) -> np.ndarray:
    """``counts`` (a degraded frame) with the sensor's dead read-outs stamped back: their pixels
    read what the clean frame's read (a dead or stuck read-out returns its value whatever the
    scene and the optics do, so a degradation of the scene does not reach it). ``defects``: (H, W)
    bool mask (edge/defects.py), or None; a mask of another shape stamps nothing. Changes and
    returns ``counts``."""
    if defects is not None and defects.shape == counts.shape:
        counts[defects] = clean_counts[defects]
    return counts


def scene_view(counts: np.ndarray, defects: Optional[np.ndarray]) -> np.ndarray:
    """A stored frame (8-bit grey levels or raw counts, any integer dtype) with the sensor's dead
    read-outs ``defects`` ((H, W) bool mask, or None) replaced by their neighbours, rounded to its
    count step (:func:`tir.edge.defects.replace_defects`, :func:`tir.edge.normalize.count_step`):
    the scene as a camera's bad-pixel replacement gives it, the reference the evaluation scores
    against. ``counts`` itself without a mask of its shape."""
    if defects is None or defects.shape != counts.shape:
        return counts
    from tir.edge.normalize import count_step

    return replace_defects(counts, defects, step=count_step(counts))[0]


def degrade_counts(clean: np.ndarray, bits: int, task: str, rng,
                   defects: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, dict, float]:
    """One stored frame -> (degraded counts uint16, clean counts uint16, source meta, peak).

    8-bit frames become counts as ``file://`` delivers them (grey << 6 in 14 bits,
    ``source_bits`` 8); raw frames stay 16-bit counts, degraded on their image rows' range
    (:func:`tir.edge.normalize.status_rows`: a camera's telemetry rows are neither degraded nor
    part of the range) and rounded to the camera's count step
    (:func:`tir.edge.normalize.count_step`). ``task`` "clean" degrades nothing. The degradation is
    the scene's: with the sensor's dead read-outs ``defects`` ((H, W) bool mask, edge/defects.py)
    the frame is degraded with them replaced (:func:`scene_view`: the scene as a camera's
    bad-pixel replacement estimates it; a blur must not smear a dead column into its neighbours)
    and they are stamped back afterwards as the sensor reads them (:func:`stamp_defects`); the
    clean counts returned are the frame as stored, defects and all. A frame of signed words
    (:func:`tir.edge.normalize.signed_words`) is degraded as offset binary (its values in order)
    and returned in its own words.
    """
    if bits == 8:
        clean_counts = clean.astype(np.uint16) << 6
        meta = {"bits": 14, "source_bits": 8}
        if task == CLEAN:
            return clean_counts.copy(), clean_counts, meta, 255.0 * 64
        scene = scene_view(clean, defects)
        y = deg.degrade(scene.astype(np.float32)[None] / 255.0, task, rng)[0]
        grey = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint16)
        return stamp_defects(grey << 6, clean_counts, defects), clean_counts, meta, 255.0 * 64
    # a raw frame's status rows (a Lepton's telemetry, tir.edge.normalize.status_rows) are not
    # image: the degradation's range is the image rows' and only they are degraded
    from tir.edge.normalize import count_step, status_rows

    if signed_words(clean):
        # a camera of signed words (two's complement read as unsigned: tir run reads them as offset
        # binary, edge/pipeline/stages.py Preprocess): the scene is degraded in its order and given
        # back in the camera's words
        counts, _, meta, peak = degrade_counts(offset_binary(clean), bits, task, rng, defects)
        return offset_binary(counts), clean.astype(np.uint16), meta, peak
    top, bottom = status_rows(clean)
    image = slice(top, clean.shape[0] - bottom)
    clean_counts = clean.astype(np.uint16)
    scene = scene_view(clean_counts, defects)
    lo, hi = deg.counts_range(scene[image])
    meta = {"bits": 16, "source_bits": 16}
    if task == CLEAN:
        return clean_counts.copy(), clean_counts, meta, hi - lo
    x = (scene[image].astype(np.float32) - lo) / (hi - lo)
    y = deg.degrade(x[None], task, rng)[0]
    counts = clean_counts.copy()
    # rounded to the camera's count step: a camera stored MSB-aligned delivers its degraded frames
    # in multiples of its step too (tir.edge.normalize.count_step; 1 for every other camera)
    step = count_step(scene[image])
    counts[image] = np.clip(np.rint((y * (hi - lo) + lo) / step) * step, 0, 65535).astype(np.uint16)
    return stamp_defects(counts, clean_counts, defects), clean_counts, meta, hi - lo


#: the counters of each gate's status that say what it changed over a set
GATE_COUNTERS = {"contrast": ("demoted", "promoted", "aligned"), "blur": ("demoted", "changed_noisy"),
                 "fpn": ("promoted", "promoted_white", "demoted_white", "destriped", "own_shaped", "own_counts")}


def gate_counts(auto, since: Optional[dict] = None) -> dict:
    """What the Restorer's gates changed over the evaluated frames: {gate: {counter: n}} from its
    status (:data:`GATE_COUNTERS`: the contrast gate's demoted and promoted verdicts and
    tone-aligned frames,
    the blur gate's demoted verdicts and noise-carrying verdicts whose blur part it changed, the
    FPN gate's verdicts given the noise part, unknown verdicts made the noise task, noise verdicts
    given back on the camera's own noise and frames whose column offsets alone it removed), less
    the counts in ``since`` (an earlier result of this function: the warm-up's); a gate that is
    off is None."""
    status = auto.status()
    since = since or {}
    return {gate: None if status.get(gate) is None else
            {k: int(status[gate].get(k) or 0) - int((since.get(gate) or {}).get(k, 0)) for k in keys}
            for gate, keys in GATE_COUNTERS.items()}


def user_path(model, counts: np.ndarray, meta: dict, defects=None, learn: bool = True) -> np.ndarray:
    """Restore one frame of counts exactly as the pipeline does (Preprocess -> Infer ->
    Postprocess, the pipeline's own stage classes; a fresh normaliser: frames are independent
    scenes). ``defects``: the camera stream's edge/defects.py ``DefectMap`` (the dead read-outs
    Preprocess replaces, learned from the frames so far, this one included unless ``learn`` is
    False); None: none replaced. Returns uint16 counts of the same shape."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    frame = Frame(raw=counts, seq=0, t_capture=time.monotonic(), meta=dict(meta))
    pre = Preprocess(defects=defects or False, learn=learn)
    pre(frame)
    Infer(model)(frame)
    Postprocess(pre.normalizer)(frame)
    return frame.restored


def model_input(counts: np.ndarray, meta: dict, defects=None) -> Tuple[np.ndarray, dict]:
    """One frame of counts through the pipeline's own ``Preprocess`` stage (a fresh normaliser),
    as the infer stage receives it.

    Args:
        counts: (H, W) raw frame as a source delivers it: uint16 Y16 counts, or 8-bit grey levels
            shifted into counts (``meta["bits"]``/``meta["source_bits"]`` say which).
        meta: the frame's metadata (copied; ``bits`` picks the normalisation map).
        defects: the camera stream's edge/defects.py ``DefectMap`` (:func:`user_path`), or None.

    Returns:
        ((H, W) float32 model input, nominally in [0, 1]; the frame's meta after preprocessing).
    """
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import MODEL_INPUT_KEY, REPAIRED_KEY, Preprocess

    frame = Frame(raw=counts, seq=0, t_capture=time.monotonic(), meta=dict(meta))
    Preprocess(defects=defects or False)(frame)
    frame.meta.pop(REPAIRED_KEY, None)   # the replaced counts are Postprocess's; no Postprocess here
    return frame.meta.pop(MODEL_INPUT_KEY), frame.meta


def user_route(model, counts: np.ndarray, meta: dict, defects=None) -> None:
    """Route one frame of counts exactly as the pipeline does, without restoring it:
    :func:`model_input`, then ``model.observe`` (the Restorer's routing step that ``infer``
    runs before its route; same verdict, same state change). For router-only evaluation
    (``tir eval --data ... --router-only``).

    Args:
        model: the Restorer (anything with ``observe(x, meta)``).
        counts: (H, W) raw frame as a source delivers it (see :func:`model_input`).
        meta: the frame's metadata (copied).
        defects: the camera stream's edge/defects.py ``DefectMap`` (:func:`user_path`), or None.
    """
    x, frame_meta = model_input(counts, meta, defects)
    model.observe(x[None, None], frame_meta)


def _lowpass(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x.astype(np.float32), (0, 0), SCENE_SIGMA, borderType=cv2.BORDER_REFLECT)


def _scene_span(x: np.ndarray) -> float:
    """The scene's contrast: 1st to 99th percentile of the low-passed frame (same units as x);
    column FPN divided by it is FPN relative to the picture, unchanged by a contrast stretch."""
    lo, hi = np.percentile(_lowpass(x), (1, 99))
    return float(max(hi - lo, 1e-6))


#: below this column FPN (grey levels) a frame has none to cut: its "cut" is not reported
MIN_FPN_GREY = 0.01


def _cut(before: Sequence[float], after: Sequence[float]) -> Optional[float]:
    """1 − mean(after) / mean(before), column FPN in grey levels: the share removed; None when the
    input has (almost) none, e.g. a constant or saturated frame."""
    b = float(np.mean(before))
    return None if b < MIN_FPN_GREY else float(1.0 - np.mean(after) / b)


def _scene_correlation(out: np.ndarray, counts: np.ndarray) -> Optional[float]:
    """Correlation of the low-passed input and output; None for a frame without scene (constant)."""
    a, b = _lowpass(out).ravel(), _lowpass(counts).ravel()
    if float(a.std()) <= 0.0 or float(b.std()) <= 0.0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _summary(values: Sequence[float]) -> dict:
    v = np.asarray([min(x, 99.0) for x in values], dtype=np.float64)  # identical frames: inf -> 99 dB
    return {"mean": float(v.mean()), "median": float(np.median(v)), "p5": float(np.percentile(v, 5)),
            "min": float(v.min()), "n": int(v.size)}


def _replaced(result: dict, camera, since: Tuple[int, int]) -> None:
    """Put into ``result["defects"]`` what the live path replaced over the evaluated frames:
    ``replaced_frames`` / ``replaced_pixels`` (the stream's ``DefectMap`` counters less ``since``,
    the warm-up's) and ``found_end``, its defect pixels after the last frame."""
    result["defects"].update(replaced_frames=camera.repaired_frames - since[0],
                             replaced_pixels=camera.repaired_pixels - since[1],
                             found_end=camera.summary()["pixels"])


def evaluate_set(bundle, name: str, split: str = "test", seed: int = 0, max_frames: Optional[int] = None,
                 backend: str = "auto", threads: Optional[int] = None, true_routes: bool = True,
                 root=None, progress: bool = True, router_only: bool = False,
                 contrast_gate: bool = True, fpn_gate: bool = True, blur_gate: bool = True,
                 tone_align: bool = True, deploy: Union[str, Mapping[str, str], None] = None) -> dict:
    """Evaluate one registered set (see the module docstring); returns a JSON-ready dict.

    ``contrast_gate``: the Restorer's contrast gate on (as ``tir run``), its camera history
    built by routing the set's own unlabeled frames first, as a running camera routes them
    (:func:`warm_camera`); off: the router's verdicts as they are. ``fpn_gate``, ``blur_gate``: the Restorer's FPN gate (engines/fpn_gate.py)
    and blur gate (engines/blur_gate.py, warmed as the contrast gate) on, as ``tir run``.
    ``tone_align``: the Restorer's tone alignment after contrast-carrying routes (on in ``tir run``).
    ``deploy``: routes/student/auto for the Restorer, or a per-task table {task:
    routes|student|tone} (None: the bundle's own).

    ``router_only``: route every frame through the same preprocessing and routing step but
    restore nothing (:func:`user_route`): the ``router`` block (and, for sets without a
    clean target, the routes and the noise-routed share) only, in a fraction of the time;
    for choosing among routers on val. Raises DatasetError for an unknown set."""
    from tqdm import tqdm

    from ..restorer import PASSTHROUGH, Restorer

    ds = dsets.dataset(name)
    split = split if ds.splits else dsets.ALL
    dropped: List[Tuple[str, str]] = []  # frames of another bit depth, skipped as tir run's file source does
    frames = dsets.load_counts(name, split, root, max_frames, dropped=dropped)
    if not frames:
        raise dsets.DatasetError(f"{name}: no frame of the set's {ds.bits}-bit depth in {split} "
                                 f"({len(dropped)} of another depth skipped)")
    auto = Restorer(bundle, backend=backend, every=1, hysteresis=1, threads=threads, contrast_gate=contrast_gate,
                    fpn_gate=fpn_gate, blur_gate=blur_gate, tone_align=tone_align, deploy=deploy)
    tasks = list(auto.routes)
    # the camera stream's dead read-outs, learned as tir run's Preprocess learns them (the warm-up's
    # frames, then every evaluated frame); what it holds after the warm-up is the sensor's defect
    # list the evaluation stamps on the degraded frames and replaces in the clean reference
    camera = DefectMap()
    result: Dict[str, object] = {"set": name, "camera": ds.camera, "bits": ds.bits, "split": split,
                                 "frames": len(frames), "sizes": sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames}),
                                 "seed": seed, "tasks": tasks,
                                 "dropped": [{"file": f, "reason": r} for f, r in dropped],
                                 "contrast_gate": {"on": bool(contrast_gate),
                                                   "warm_frames": warm_camera(auto, name, split, root, defects=camera)},
                                 "fpn_gate": {"on": auto.fpn_gate is not None},
                                 "blur_gate": {"on": auto.blur_gate is not None},
                                 "tone_align": {"on": auto.tone_align}}
    sensor = None if camera.mask is None else camera.mask.copy()
    result["defects"] = {**camera.summary(), "stamped": sensor is not None}
    warmed = gate_counts(auto)   # what the gates did to the warm-up's frames is not the set's
    repaired0 = (camera.repaired_frames, camera.repaired_pixels)
    t0 = time.monotonic()
    if not ds.clean:  # real degraded frames: no reference, no-reference checks only
        routed, fpn_in, fpn_out, scene, fpn_rel_in, fpn_rel_out, level, gain = [], [], [], [], [], [], [], []
        destriped = []   # the column offsets alone were removed (engines/fpn_gate.py), not the noise task
        for f in tqdm(frames, desc=name, unit="frame", disable=not progress):
            counts, _, meta, peak = degrade_counts(f, ds.bits, CLEAN, None)
            auto.reset()
            if router_only:
                user_route(auto, counts, meta, camera)
            else:
                out = user_path(auto, counts, meta, camera)
            routed.append(auto.route)
            destriped.append(auto.offsets is not None)
            if router_only:
                continue
            fpn_in.append(column_fpn(counts / peak * 255.0))
            fpn_out.append(column_fpn(out / peak * 255.0))
            fpn_rel_in.append(fpn_in[-1] / _scene_span(counts / peak * 255.0))
            fpn_rel_out.append(fpn_out[-1] / _scene_span(out / peak * 255.0))
            corr = _scene_correlation(out, counts)
            if corr is not None:
                scene.append(corr)
            # the tone a restoration must keep: level (mean) and scene contrast of output against input
            level.append(float(out.mean() - counts.mean()) / peak * 255.0)
            gain.append(_scene_span(out / peak * 255.0) / _scene_span(counts / peak * 255.0))
        result["routes"] = {r: routed.count(r) for r in sorted(set(routed))}
        result["noise_routed"] = float(np.mean([r in NOISE_TASKS for r in routed]))
        # the frames whose noise is taken out: by a noise-carrying task or, column FPN alone, by its offsets
        result["destriped"] = float(np.mean(destriped))
        result["noise_removed"] = float(np.mean([r in NOISE_TASKS or d for r, d in zip(routed, destriped)]))
        result["gates"] = gate_counts(auto, since=warmed)
        _replaced(result, camera, repaired0)
        if router_only:
            result.update(router_only=True, seconds=round(time.monotonic() - t0, 1))
            auto.close()
            return result
        cut = _cut(fpn_in, fpn_out)   # None: no column FPN in the input, so no relative cut either
        result.update({
            "column_fpn_in": float(np.mean(fpn_in)), "column_fpn_out": float(np.mean(fpn_out)),
            "column_fpn_cut": cut,
            "column_fpn_rel_in": float(np.mean(fpn_rel_in)), "column_fpn_rel_out": float(np.mean(fpn_rel_out)),
            "column_fpn_rel_cut": None if cut is None else float(1.0 - np.mean(fpn_rel_out) / np.mean(fpn_rel_in)),
            "scene_correlation": ({"median": float(np.median(scene)), "min": float(np.min(scene))} if scene
                                  else None),
            "level_shift": _summary(level), "contrast_ratio": _summary(gain),
            "seconds": round(time.monotonic() - t0, 1)})
        auto.close()
        return result

    classes = tasks + [CLEAN]
    scene_referred = ds.bits > 8
    per = {c: {"degraded": [], "auto": [], "true": [], "verdicts": [], "widened": [],
               "d_degraded": [], "d_auto": [], "d_true": [], "s_degraded": [], "s_auto": []} for c in classes}
    for i, f in enumerate(tqdm(frames, desc=name, unit="frame", disable=not progress)):
        # a camera of signed words is scored in their order (offset binary), as tir run reads and shows it
        order = offset_binary if ds.bits > 8 and signed_words(f) else (lambda x: x)
        for k, c in enumerate(classes):
            rng = np.random.default_rng([seed, i, k])
            counts, clean, meta, peak = degrade_counts(f, ds.bits, c, rng, defects=sensor)
            # the reference and the degraded input as a camera that replaces its dead read-outs
            # gives them: filling a dead column is no harm, leaving it no gain
            clean, shown = order(scene_view(clean, sensor)), order(scene_view(counts, sensor))
            # the gates' histories hold the camera's own frames, not the degradations evaluated on
            # them (K12): a degraded frame is judged against them without joining them
            auto.freeze_camera(c != CLEAN)
            auto.reset()
            if router_only:
                user_route(auto, counts, meta, camera)
            else:
                out = order(user_path(auto, counts, meta, camera))
            status = auto.status()
            per[c]["verdicts"].append(status["decision"] if status["decision"] is not None else PASSTHROUGH)
            per[c]["widened"].append(scene_referred and span_widened(shown))
            per[c].setdefault("routes", []).append(auto.route)
            if router_only:
                continue
            per[c]["auto"].append(psnr(out / peak, clean / peak))
            if scene_referred:
                if k == 0:  # the clean reference is the same frame for every class
                    d_clean = display_map(clean)
                per[c]["d_auto"].append(psnr(display_map(out), d_clean))
            if c == CLEAN:
                continue
            per[c]["degraded"].append(psnr(shown / peak, clean / peak))
            per[c]["s_degraded"].append(ssim(shown / peak, clean / peak))
            per[c]["s_auto"].append(ssim(out / peak, clean / peak))
            if scene_referred:
                per[c]["d_degraded"].append(psnr(display_map(shown), d_clean))
            if true_routes:
                # the true route: the same engine the automatic path loads (Restorer.engine caches it),
                # on the same read-out (the stream's replacement; this frame is counted already)
                true_out = order(user_path(auto.engine(c), counts, meta, camera, learn=False))
                per[c]["true"].append(psnr(true_out / peak, clean / peak))
                if scene_referred:
                    per[c]["d_true"].append(psnr(display_map(true_out), d_clean))
    result["gates"] = gate_counts(auto, since=warmed)
    _replaced(result, camera, repaired0)
    verdict_tasks = [v == c for c in tasks for v in per[c]["verdicts"]]
    result["router"] = {
        "accuracy_tasks": float(np.mean(verdict_tasks)),
        "clean_to_passthrough": float(np.mean([r == PASSTHROUGH for r in per[CLEAN]["routes"]])),
        "clean_verdict_clean": float(np.mean([v == CLEAN for v in per[CLEAN]["verdicts"]])),
        "confusion": {c: {v: per[c]["verdicts"].count(v) for v in sorted(set(per[c]["verdicts"]))}
                      for c in classes}}
    if scene_referred:
        visible = [v == visible_task(c, ds.bits, w)
                   for c in tasks for v, w in zip(per[c]["verdicts"], per[c]["widened"])]
        result["router"]["accuracy_visible"] = float(np.mean(visible))
        # share of the degraded frames the normaliser did not stretch (range under its min span)
        result["router"]["widened"] = float(np.mean([w for c in tasks for w in per[c]["widened"]]))
    if router_only:
        result.update(router_only=True, seconds=round(time.monotonic() - t0, 1))
        auto.close()
        return result
    result["clean_identity"] = _summary(per[CLEAN]["auto"])

    def mean_db(values):   # identical frames (a blur of a constant frame): inf -> 99 dB, as _summary
        return float(np.mean(np.minimum(values, 99.0)))

    def rows(key_deg, key_auto, key_true):
        out = {}
        for t in tasks:
            row = {"degraded": mean_db(per[t][key_deg]), "auto": mean_db(per[t][key_auto])}
            if true_routes:
                row["true_route"] = mean_db(per[t][key_true])
                row["regret"] = float(np.mean(np.minimum(per[t][key_auto], 99.0)
                                              - np.minimum(per[t][key_true], 99.0)))
            row["gain_auto"] = row["auto"] - row["degraded"]
            out[t] = row
        return out

    result["per_task"] = rows("degraded", "auto", "true")
    for t, row in result["per_task"].items():   # SSIM (metrics.ssim, the frame's full scale) of the same frames
        row["ssim_degraded"] = float(np.mean(per[t]["s_degraded"]))
        row["ssim_auto"] = float(np.mean(per[t]["s_auto"]))
    result["min_gain_auto"] = min(r["gain_auto"] for r in result["per_task"].values())
    if scene_referred:
        result["display"] = {"clean_identity": _summary(per[CLEAN]["d_auto"]),
                             "per_task": rows("d_degraded", "d_auto", "d_true")}
        result["display"]["min_gain_auto"] = min(r["gain_auto"] for r in result["display"]["per_task"].values())
    result["seconds"] = round(time.monotonic() - t0, 1)
    auto.close()
    return result


def evaluate_cameras(bundle, sets: Sequence[str], split: str = "test", seed: int = 0,
                     max_frames: Optional[int] = None, backend: str = "auto",
                     threads: Optional[int] = None, true_routes: bool = True, root=None,
                     router_only: bool = False, contrast_gate: bool = True, fpn_gate: bool = True,
                     blur_gate: bool = True, tone_align: bool = True, deploy: Union[str, Mapping[str, str], None] = None,
                     progress: bool = True, out: Optional[dict] = None) -> dict:
    """:func:`evaluate_set` for every set in ``sets``; returns {"sets": {name: result}, ...}.

    ``out``: the dict the result is built in (filled set by set, so a caller interrupted by
    Ctrl-C still holds the sets measured before it: ``tir eval --json`` writes them marked
    partial); default a new one."""
    names = dsets.parse_sets(sets)
    out = {} if out is None else out
    out.update({"split": split, "seed": seed, "bundle": str(bundle), "contrast_gate": bool(contrast_gate),
           "fpn_gate": bool(fpn_gate), "blur_gate": bool(blur_gate), "tone_align": bool(tone_align), "sets": {}})
    for name in names:
        out["sets"][name] = evaluate_set(bundle, name, split, seed, max_frames, backend, threads,
                                         true_routes, root, progress=progress, router_only=router_only,
                                         contrast_gate=contrast_gate, fpn_gate=fpn_gate, blur_gate=blur_gate,
                                         tone_align=tone_align, deploy=deploy)
    return out


def user_path_table(bundle, sets: Sequence[str], split: str = "val", max_frames: Optional[int] = 12,
                    seed: int = 0, threads: Optional[int] = None, root=None, progress: bool = True,
                    margin_db: Optional[float] = None) -> dict:
    """What each task gets through the user's path with the student, with the routes and, for the
    contrast-carrying tasks, with ``tone`` (the partner's network and the camera's tone map,
    engines/restorer.py): the per-camera evaluation (:func:`evaluate_set`, automatic routing, the
    gates and the tone alignment as ``tir run``) once with ``deploy=routes``, once with
    ``deploy=student`` and once with every contrast-carrying task on ``tone`` (the other tasks as
    :func:`~tir.engines.bundle.choose_auto_deploy` picks them from the first two at ``margin_db``,
    so a partner runs what it will run), each task's automatic-route PSNR averaged over the sets
    (each camera weighs the same). The table ``tir deploy --measure`` records and deploy=auto then
    chooses on (engines/bundle.py :func:`~tir.engines.bundle.auto_deploy_entry`).

    Args:
        bundle: a bundle with a student (path or Bundle).
        sets: registered sets with a clean target (names, or "all"); sets without one are skipped.
        split: the split to measure on (val: never test for a choice).
        max_frames: frames per set (None: all).
        margin_db: the margin the partners' choice is made with (None: the default, 0.3 dB).

    Returns:
        ``{"split", "seed", "max_frames", "sets": [names], "student": {task: dB}, "routes": {task: dB},
        "tone": {contrast-carrying task: dB}}`` (no ``tone`` when no task carries a contrast part).

    Raises:
        DatasetError: an unknown set; ValueError: no set with a clean target, or as the Restorer.
    """
    from ..bundle import DEFAULT_AUTO_MARGIN_DB, TONE, Bundle, choose_auto_deploy, contrast_carrying, load_bundle

    given = dsets.parse_sets(sets)
    names = [n for n in given if dsets.dataset(n).clean]
    if not names:  # was "... ['l', 'y', 'n', ...] has none": the letters of the name
        with_clean = [n for n in dsets.DATASETS if dsets.dataset(n).clean]
        raise ValueError(f"no clean target frames in {', '.join(given)} to measure PSNR against (real degraded "
                         f"frames only); give sets with clean frames, e.g. {', '.join(with_clean[:2])}")
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    out = {"split": split, "seed": seed, "max_frames": max_frames, "sets": names}

    def measure(deploy, tasks=None):
        per = [r["per_task"] for r in evaluate_cameras(bundle, names, split, seed, max_frames, threads=threads,
                                                        true_routes=False, root=root, deploy=deploy,
                                                        progress=progress)["sets"].values()]
        return {t: float(np.mean([p[t]["auto"] for p in per])) for t in per[0] if tasks is None or t in tasks}

    for deploy in ("student", "routes"):
        out[deploy] = measure(deploy)
    partners = contrast_carrying(bundle.manifest)
    if partners:
        margin = DEFAULT_AUTO_MARGIN_DB if margin_db is None else margin_db
        base = choose_auto_deploy(out["student"], out["routes"], bundle.tasks, margin)["tasks"]
        out[TONE] = measure({t: TONE if t in partners else v for t, v in base.items()}, partners)
    return out


def format_cameras(result: dict) -> str:
    """The per-camera table (one row per set) and the per-task gains, as text."""
    lines = [f"per camera, {result['split']} split, seed {result['seed']}, automatic routing through "
             "the live preprocessing"]
    head = (f"{'set':<17} {'n':>3} {'bits':>4} {'router':>7} {'clean->pass':>11} "
            f"{'clean dB med':>12} {'p5':>6} {'min gain':>8}")
    if any("router" in r for r in result["sets"].values()):   # sets without a reference have their own lines
        lines += [head, "-" * len(head)]
    for name, r in result["sets"].items():
        if "router" not in r:
            continue
        if r.get("router_only"):
            lines.append(f"{name:<17} {r['frames']:>3} {r['bits']:>4} {100 * r['router']['accuracy_tasks']:>6.1f}% "
                         f"{100 * r['router']['clean_to_passthrough']:>10.1f}%   (router only: nothing restored)")
            continue
        lines.append(f"{name:<17} {r['frames']:>3} {r['bits']:>4} {100 * r['router']['accuracy_tasks']:>6.1f}% "
                     f"{100 * r['router']['clean_to_passthrough']:>10.1f}% {r['clean_identity']['median']:>12.2f} "
                     f"{r['clean_identity']['p5']:>6.2f} {r['min_gain_auto']:>+8.2f}")
    for name, r in result["sets"].items():
        if r.get("dropped"):
            files = [Path(d["file"]).name for d in r["dropped"]]
            lines.append(f"{name}: {len(files)} frame(s) dropped, as tir run drops them: {r['dropped'][0]['reason']}: "
                         + ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else ""))
    for name, r in result["sets"].items():
        d = r.get("defects") or {}
        if d.get("pixels") or d.get("replaced_pixels") or d.get("found_end"):
            lines.append(f"{name}: dead read-outs: {d.get('pixels', 0)} pixels ({d.get('columns', 0)} columns, "
                         f"{d.get('rows', 0)} rows) found on the camera's own frames, stamped on every degraded "
                         f"frame and replaced in the reference and the degraded input; the live path replaced "
                         f"{d.get('replaced_pixels', 0)} pixels in {d.get('replaced_frames', 0)} frames "
                         f"({d.get('found_end', 0)} found after the last)")
    for name, r in result["sets"].items():
        g = r.get("gates")
        if g:
            parts = [f"{gate} " + ", ".join(f"{k} {v}" for k, v in counts.items()) for gate, counts in g.items() if counts]
            lines.append(f"{name}: gates changed: " + ("; ".join(parts) if parts else "(all off)"))
    for name, r in result["sets"].items():
        if "accuracy_visible" in r.get("router", {}):
            gain = "" if r.get("router_only") else \
                f", display-referred min gain {r['display']['min_gain_auto']:+.2f} dB"
            lines.append(f"{name}: raw counts; router {100 * r['router']['accuracy_visible']:.1f}% against the task "
                         f"visible after the live normaliser (contrast part dropped, kept on the "
                         f"{100 * r['router'].get('widened', 0.0):.0f}% of frames under its minimum span){gain}")
    for name, r in result["sets"].items():
        if "per_task" in r:
            views = [("counts", r["per_task"])] + ([("display", r["display"]["per_task"])] if "display" in r else [])
            for view, table in views:
                lines.append("")
                lines.append(f"{name} ({view}): PSNR dB  degraded / auto route / true route (gain of auto, regret)"
                             + ("; SSIM degraded -> auto" if view == "counts" else ""))
                for t, row in table.items():
                    true = f"{row['true_route']:6.2f}" if "true_route" in row else "     -"
                    regret = f", {row['regret']:+.2f}" if "regret" in row else ""
                    sim = f"; {row['ssim_degraded']:.3f} -> {row['ssim_auto']:.3f}" if "ssim_auto" in row else ""
                    lines.append(f"  {t:<9} {row['degraded']:6.2f} / {row['auto']:6.2f} / {true}  "
                                 f"({row['gain_auto']:+.2f}{regret}){sim}")
        elif r.get("router_only"):
            if "noise_routed" in r:
                lines.append("")
                lines.append(f"{name} (real degraded, no reference): {100 * r['noise_routed']:.0f}% routed to a "
                             f"noise task {r['routes']}, {100 * r.get('destriped', 0.0):.0f}% destriped")
        else:
            lines.append("")
            lines.append(f"{name} (real degraded, no reference): {100 * r['noise_routed']:.0f}% routed to a "
                         f"noise task {r['routes']}, {100 * r.get('destriped', 0.0):.0f}% destriped (column FPN "
                         f"alone: its offsets removed); column FPN {r['column_fpn_in']:.2f} -> "
                         f"{r['column_fpn_out']:.2f} grey levels ({_pct(r['column_fpn_cut'])}), relative to "
                         f"the scene's contrast {100 * r['column_fpn_rel_in']:.2f}% -> {100 * r['column_fpn_rel_out']:.2f}% "
                         f"({_pct(r['column_fpn_rel_cut'])}); " + (
                             f"scene kept: low-pass correlation of input and output {r['scene_correlation']['median']:.3f} "
                             f"(median; min {r['scene_correlation']['min']:.3f})" if r["scene_correlation"]
                             else "no scene to keep (constant frames)")
                         + (f"; tone kept? level {r['level_shift']['median']:+.1f} grey levels, scene contrast "
                            f"×{r['contrast_ratio']['median']:.2f} (medians, output against input)"
                            if r.get("level_shift") else ""))
    return "\n".join(lines)


def _pct(cut: Optional[float]) -> str:
    return "no column FPN in the input to cut" if cut is None else f"{100 * cut:+.0f}% cut"


def plot_cameras(result: dict, path) -> str:
    """Bar chart per camera set: router accuracy, clean identity (median dB) and per-task gain
    of the automatic route over the degraded input. Needs matplotlib; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [n for n, r in result["sets"].items() if "router" in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].bar(sets, [100 * result["sets"][n]["router"]["accuracy_tasks"] for n in sets], color="tab:blue")
    axes[0].axhline(90, color="k", ls="--", lw=1)
    axes[0].set_title("router right on the 7 tasks (%)")
    axes[1].bar(sets, [result["sets"][n]["clean_identity"]["median"] for n in sets], color="tab:green")
    axes[1].axhline(35, color="k", ls="--", lw=1)
    axes[1].set_title("clean frame vs itself, median dB (99 = untouched)")
    tasks = result["sets"][sets[0]]["tasks"] if sets else []
    width = 0.8 / max(len(sets), 1)
    for j, n in enumerate(sets):
        axes[2].bar(np.arange(len(tasks)) + j * width, [result["sets"][n]["per_task"][t]["gain_auto"] for t in tasks],
                    width, label=n)
    axes[2].axhline(2, color="k", ls="--", lw=1)
    axes[2].set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, tasks)
    axes[2].set_title("gain of automatic routing over the input (dB)")
    axes[2].legend(fontsize=7)
    for ax in axes[:2]:
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def before_after(bundle, name: str, path, frames: int = 2, backend: str = "auto",
                 threads: Optional[int] = None, root=None, dropped: Optional[list] = None) -> str:
    """A PNG of ``frames`` frames of set ``name`` before (left) and after (right) automatic
    routing through the live path, each image with its own linear display range (0.5-99.5 %, as
    the page's AGC shows it), the route and the relative column FPN in the title. For sets without a clean target
    (``lynred_nonuc``) this is the picture the numbers stand for. Returns the path.

    The frames are spread evenly over the split; a frame of another bit depth than the set's is
    skipped as ``tir run`` and the scoring skip it (datasets.py :func:`read_counts_kept`: it was
    refused, and the whole plot with it), the nearest kept frame shown instead, and
    ``(file, reason)`` appended to ``dropped`` (a list) and counted in the figure's title.

    Raises:
        DatasetError: no frame of the set's depth to show, or an unreadable frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..restorer import Restorer

    ds = dsets.dataset(name)
    skipped: list = []
    if ds.virtual:
        picks = dsets.load_counts(name, "test", root, frames)
    else:  # decode only the frames shown
        paths = dsets.split_files(name, dsets.ALL if not ds.splits else "test", root)
        picks, tried = [], set()
        for target in (int(i) for i in np.linspace(0, len(paths) - 1, frames)):
            for i in sorted(range(len(paths)), key=lambda i: (abs(i - target), i)):   # nearest first
                if i in tried:
                    continue
                tried.add(i)
                image = dsets.read_counts_kept(paths[i], ds.bits, skipped)
                if image is not None:
                    picks.append(image)
                    break
        if not picks:
            raise dsets.DatasetError(f"{name}: no frame of the set's {ds.bits}-bit depth to show "
                                     f"({len(skipped)} of another depth skipped)")
    if dropped is not None:
        dropped.extend(skipped)
    auto = Restorer(bundle, backend=backend, every=1, hysteresis=1, threads=threads)
    camera = DefectMap()   # the stream's dead read-outs (edge/defects.py), as tir run keeps them
    warm_camera(auto, name, "test", root, defects=camera)
    fig, axes = plt.subplots(len(picks), 2, figsize=(10, 3.9 * len(picks)), squeeze=False)
    for row, f in zip(axes, picks):
        counts, _, meta, _ = degrade_counts(f, ds.bits, CLEAN, None)
        auto.reset()
        out = user_path(auto, counts, meta, camera)
        for ax, img, title in ((row[0], counts, "input"), (row[1], out, f"restored ({auto.runs})")):
            lo, hi = np.percentile(img, (0.5, 99.5))
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            rel = column_fpn(img.astype(np.float32)) / _scene_span(img.astype(np.float32))
            ax.set_title(f"{title}: column FPN {100 * rel:.2f} % of the scene's contrast", fontsize=9)
            ax.axis("off")
    auto.close()
    note = (f" ({len(skipped)} frame(s) of another bit depth skipped, as tir run skips them: "
            f"{', '.join(Path(f).name for f, _ in skipped[:3])}{' …' if len(skipped) > 3 else ''})" if skipped else "")
    fig.suptitle(f"{name}: {ds.camera}{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return str(path)
