"""Multi-teacher distillation of a bundle's routes into one prompt-conditioned student (issue 11).

After Uni-Removal (multi-teacher knowledge distillation of degradation-specific networks into
one student, with instance-grained contrastive learning across feature levels and image space)
and CPL (a sparse prompt per task, contrastive prompt regularisation with the other tasks'
prompts as negatives). Teachers are the bundle's routes, rebuilt in torch from its verified
``model.pt`` (the open-world checkpoint ``tir train`` writes; tensors only, sha256-checked).

One training step (``distill`` stage): a batch of crops whose samples each draw a prompt slot
(a task, or ``clean`` with clean crops); crops come from per-task pools of whole degraded
frames (tir.engines.training.train.DegradedPool: the recipe's non-uniformity geometry, whole-frame tone
statistics per crop). Each sample's teacher is its task's route (field head left out on crops,
as in ``tir train``); ``clean`` has the identity as teacher. The loss:

* output: ``w_gt``·(L1 + 0.5·(1−MS-SSIM) + 0.1·Sobel) against the clean crop (ecmrnet.md §1.2)
  + ``w_kd``·L1 against the teacher's output;
* feature: ``w_feat``·L1 between a 1×1 adapter of the student's H/4 body features and the
  teacher route's restored H/4 features (32 channels; the adapter is training-only);
* instance-grained contrastive (``w_inst``): InfoNCE over the batch at two levels, the adapted
  body features (4×4-cell pooled) and image space (8×8-pooled output): a frame's student
  vector is pulled to its teacher's vector of the same frame and pushed from the teacher's
  vectors of the other frames (temperature ``tau``);
* contrastive prompt regularisation (``w_cpr``, on the first half of the batch): the same frame
  run with another slot's prompt gives a negative: the teacher's features are the anchor, the student's features under the
  right prompt the positive, under the wrong prompt the negative;
* prompt sparsity: ``w_sparse``·mean |P| over the learned prompt table.

Then a ``field`` stage fits the student's prompt-conditioned field head on whole frames (the
body frozen, L1 to the clean frame), as ``tir train`` does for the routes' field heads. The head
sees the whole frame and learns its training scenes' layout too (sky at the top: a camera mounted in
portrait lost 0.1-4 dB to it, K6); ``field_orientations="all"`` trains it on every orientation a
camera can deliver (upright or mirrored half the steps, draw_orientation) and judges it on val
as stored and turned a quarter (docs/cameras.md "Session 12"). Val
(the data's val split, seeded eval sets) picks the checkpoint: the student is evaluated every
``val_every`` steps and the best mean PSNR over the tasks is kept. Test is not used.

Optional stage 2, ``calibrate`` (``calibrate_steps`` > 0; Uni-Removal's real-domain
calibration, unpaired): real degraded frames (``real_data``, default the Lynred set without NUC;
in file order, the first two thirds calibrate, the last third is held out for measurement) are restored by
the student with the router's prompt mix; a frozen clean-image encoder (the teacher bundle's
stem + clean branch, 4×4-cell pooled, normalised) embeds crops; k-means gives ``clusters``
centroids of real *clean* crops (the train frames) and of real degraded crops. The
cluster-grained contrastive loss pulls each restored crop's embedding to its nearest clean
centroid and pushes it from every degraded centroid (InfoNCE, temperature ``tau``); it is
added with weight ``w_cal`` to the distillation loss of synthetic batches, which anchors the
student to its teachers. Measured with and without: val PSNR (synthetic, the data's val split)
and, on the held-out real frames, the column FPN (tir.engines.metrics.column_fpn) of the output.
The calibrated weights are kept only when val PSNR falls by at most 0.1 dB and column FPN falls.

Work dir: ``student.pt`` (latest: student, adapter, optimiser, step), ``best.pt`` (chosen),
``state.json`` (settings, step, val history, metrics, wall time), ``distill.log``; a rerun
with the same work dir resumes from the latest step. tqdm bars on stderr.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import degrade as deg
from .continual import CLEAN, OpenWorldModel
from ..engine import MULTIPLE_KEY
from .losses import RestorationLoss
from ..metrics import psnr
from .models.ecmrnet import frame_tone_stats
from .models.student import (PROMPT_INPUT, StudentConfig, StudentNet, create_student, get_student_config,
                             student_gmac)

log = logging.getLogger("tir.distill")

STUDENT_FILE = "student.onnx"
STUDENT_CKPT = "student.pt"
BEST_CKPT = "best.pt"
#: what the field stage's frames are (DistillSettings.field_orientations)
FIELD_ORIENTATIONS = ("stored", "all")

#: the orientations of a frame a camera can deliver: the dihedral group of the square (4 quarter
#: turns, each also mirrored)
ORIENTATIONS = 8
#: the orientations (:func:`dihedral`) a field head's val averages over: as stored, a quarter turn
FIELD_VAL_ORIENTATIONS = (0, 1)
#: the share of a field head's training steps on upright frames (as stored or mirrored left-right,
#: orientations 0 and 4: how most cameras are mounted); the rest are spread evenly over the other six
UPRIGHT_SHARE = 0.5


def draw_orientation(rng: np.random.Generator, upright_share: float = UPRIGHT_SHARE) -> int:
    """One orientation of :func:`dihedral` for a field-head training step: 0 or 4 (upright) with
    probability ``upright_share``, else one of the other six, each equally likely."""
    if rng.random() < upright_share:
        return int(rng.choice((0, 4)))
    return int(rng.choice((1, 2, 3, 5, 6, 7)))


def dihedral(x, k: int):
    """``x`` (..., H, W), any dtype (torch tensor or numpy array; the same type and dtype back), in
    orientation ``k`` of :data:`ORIENTATIONS`:
    ``k % 4`` quarter turns counter-clockwise in the last two axes, then mirrored left-right when
    ``k >= 4``; (..., W, H) for an odd number of turns. Why: a camera may be mounted in portrait,
    upside down or behind a mirror, and a whole-frame head learns the layout of its training
    scenes (sky at the top) unless it sees every orientation (docs/cameras.md "Session 12").

    Raises:
        ValueError: ``k`` outside 0..7.
    """
    k = int(k)
    if not 0 <= k < ORIENTATIONS:
        raise ValueError(f"orientation {k} is not in 0..{ORIENTATIONS - 1}")
    if isinstance(x, torch.Tensor):
        y = torch.rot90(x, k % 4, dims=(-2, -1))
        return torch.flip(y, dims=(-1,)) if k >= 4 else y
    y = np.rot90(x, k % 4, axes=(-2, -1))
    return np.ascontiguousarray(y[..., ::-1] if k >= 4 else y)


@dataclass
class DistillSettings:
    """The settings of one distillation run (``tir distill`` builds them from its options, tools/distill.py);
    recorded in ``state.json`` and in the student's bundle entry.

    Attributes:
        bundle: the teacher bundle's folder (its routes and verified ``model.pt``).
        preset: the student preset (models/student.py ``PRESETS``: ``edge``, ``tiny``).
        init_from: the teacher route the student is copied from; ``auto``: ``noise``, else the
            first single-degradation route; ``none``: the preset from scratch; ``student``: the
            teacher bundle's own student (fine-tuning), whose torch weights are ``init_weights``.
        init_weights: for ``init_from="student"``, a ``student.pt``/``best.pt`` checkpoint of the
            ``tir distill`` work dir that produced the teacher bundle's student (the bundle holds
            the student only as ONNX, the FastStudent graph, not as torch weights); it is used only
            if it reproduces the bundle's ``student.onnx`` (:func:`check_student_weights`).
        task_weights: relative sampling weight per task name (tasks not named: 1; None: all 1);
            a non-``clean`` sample draws task T with probability w_T / Σ w (:func:`sampling_probabilities`).
        steps: optimiser steps of the ``distill`` stage (0: no distill stage, only with ``init_from``
            ``student``: the bundle's student goes to the later stages as it is); ``field_steps``: of
            the ``field`` stage.
        field_orientations: ``stored`` (the field head trains and is judged on the frames as stored)
            or ``all`` (each step in one of the 8 orientations a camera can deliver, upright half
            the steps, judged on val as stored and turned a quarter: a head for cameras mounted in
            portrait or upside down; on upright val it costs 0.1-1 dB, docs/cameras.md "Session 12").
        crop: training crop side in px; ``batch``: crops per step.
        lr: peak AdamW learning rate (warm-up, then cosine, :meth:`Distiller.lr_factor`).
        seed: seeds crops, degradations, val sets and initialisation; ``threads``: torch CPU threads.
        data: registered data sets ``"a,b"`` (default: the teacher bundle's training data).
        max_frames: whole frames per task pool (about 2×1.3 MB of memory per 640×512 frame).
        clean_prob: share of samples drawn with the ``clean`` prompt (identity target).
        w_gt, w_kd, w_feat, w_inst, w_cpr, w_sparse: weights of the loss terms (module docstring).
        tau: the contrastive temperature (InfoNCE, CPR and the cluster loss).
        max_minutes: wall-time budget of the ``distill`` stage in minutes (None: ``steps`` only).
        val_every, save_every, refresh_every: steps between val checks, checkpoints and pool
            re-degradations; val_limit: val frames per task (None: all).
        calibrate_steps: steps of stage 2 (0: off); real_data: its unpaired real frames;
            clusters: k-means centroids per side; w_cal: weight of the cluster-grained loss.
        command: the command line, for the record.
    """
    bundle: str = ""
    preset: str = "edge"
    init_from: str = "auto"              # a teacher route to copy the student from ("auto": noise, else the
                                         # first single task; "none": the preset, from scratch; "student":
                                         # the teacher bundle's student, weights from init_weights)
    init_weights: Optional[str] = None   # init_from="student": its torch checkpoint (checked against student.onnx)
    task_weights: Optional[Dict[str, float]] = None   # relative sampling weight per task (unnamed: 1)
    steps: int = 2000
    field_steps: int = 300
    field_orientations: str = "stored"   # "stored": frames as stored; "all": every orientation (K6)
    crop: int = 128
    batch: int = 8
    lr: float = 2e-3
    seed: int = 0
    threads: int = 2
    data: Optional[str] = None           # registered sets "a,b" (default: the teacher bundle's data, else roadscene)
    max_frames: int = 64                 # whole frames per task pool (memory: 2×1.3 MB per frame)
    clean_prob: float = 0.1              # share of samples drawn with the clean prompt (identity target)
    w_gt: float = 1.0
    w_kd: float = 1.0
    w_feat: float = 0.2
    w_inst: float = 0.05
    w_cpr: float = 0.05
    w_sparse: float = 1e-3
    tau: float = 0.1
    max_minutes: Optional[float] = None  # wall-time budget of the distill stage (None: steps only)
    val_every: int = 500
    val_limit: Optional[int] = 16        # val frames per task for checkpoint choice (None: all)
    save_every: int = 100
    refresh_every: int = 100
    # stage 2, real-domain calibration (0 steps: off)
    calibrate_steps: int = 0
    real_data: str = "lynred_nonuc"      # unpaired real degraded frames (their "all"/train split)
    clusters: int = 8
    w_cal: float = 0.1
    command: str = ""


# ---------------------------------------------------------------------------------------------
# teachers
# ---------------------------------------------------------------------------------------------

def load_teachers(bundle_dir) -> Tuple[object, OpenWorldModel]:
    """(bundle, its open-world model in eval mode, frozen) from the bundle's ``model.pt``.

    The checkpoint bytes are sha256-checked against the manifest and read with
    ``torch.load(weights_only=True)`` (tensors and plain containers only). Raises BundleError
    when the bundle has no checkpoint entry (then it cannot teach: retrain it with ``tir train``).
    """
    from ..bundle import BundleError, load_bundle, read_verified

    bundle = load_bundle(bundle_dir)
    ckpt = bundle.manifest.get("checkpoint") or {}
    if not ckpt.get("file"):
        raise BundleError(f"bundle {bundle.path} has no model.pt checkpoint in its manifest, so its routes "
                          "cannot teach; use a bundle written by `tir train`")
    data = read_verified(bundle, ckpt["file"])
    model = OpenWorldModel.from_checkpoint(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    model.eval()
    model.freeze_except(None)
    return bundle, model


def teacher_forward(model: OpenWorldModel, x: torch.Tensor, task: str, stats: Optional[torch.Tensor] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(output N×1×H×W without the field head, restored H/4 features N×32×H/4×W/4) of route
    ``task`` (``clean``: the identity and the clean branch's features)."""
    if task == CLEAN:
        s = model.stem(x)
        return x, s + model.branches[CLEAN](s)
    if task in model.tones:
        x = model.tones[task](x, stats)
    s, feats = model.route_features(x, task)
    return x + model.recon.residual(feats - s), feats


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------

def _vectors(maps: torch.Tensor, cells: int) -> torch.Tensor:
    """N×C×H×W -> L2-normalised N×(C·cells²) vectors of the cells×cells-pooled maps."""
    v = F.adaptive_avg_pool2d(maps, cells).flatten(1)
    return F.normalize(v, dim=1)


def info_nce(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Instance-grained contrastive loss (Uni-Removal's IGCL, ecmrnet.md §3): row i of ``student``
    is pulled to row i of ``teacher`` and pushed from the other rows; cross-entropy over cos/tau.

    Args:
        student: (N, D) float32 L2-normalised vectors.
        teacher: (N, D) float32 L2-normalised vectors of the same N frames.
        tau: temperature (> 0).

    Returns:
        A 0-d float32 tensor; 0 for N = 1 (no negatives).
    """
    if student.shape[0] < 2:
        return student.sum() * 0.0
    logits = student @ teacher.t() / tau
    return F.cross_entropy(logits, torch.arange(student.shape[0]))


def prompt_contrast(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, tau: float) -> torch.Tensor:
    """CPL-style contrastive prompt regularisation (ecmrnet.md §3, CPR): −log e^{a·p/τ} /
    (e^{a·p/τ} + e^{a·n/τ}), mean over rows.

    Args:
        anchor: (N, D) float32 normalised teacher vectors.
        positive: (N, D) float32 normalised student vectors under the right prompt.
        negative: (N, D) float32 normalised student vectors of the same frames under another
            slot's prompt.
        tau: temperature (> 0).

    Returns:
        A 0-d float32 tensor.
    """
    pos = (anchor * positive).sum(1) / tau
    neg = (anchor * negative).sum(1) / tau
    return (torch.logsumexp(torch.stack([pos, neg], 1), 1) - pos).mean()


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

def export_student(net: StudentNet, path, size: Tuple[int, int] = (64, 64), tolerance: float = 1e-4) -> dict:
    """Write the student as ONNX (opset 17) and check it.

    Inputs ``input`` N×1×H×W float32 and ``prompt`` (N, K) float32, output ``output`` N×1×H×W;
    metadata ``tir.multiple``, ``tir.model=student``, ``tir.preset``, ``tir.prompts``
    (comma-separated slots).

    Args:
        net: the student (put back in its train/eval mode after).
        path: the ``.onnx`` file to write (folders are made).
        size: (H, W) in px of the traced frame, rounded down to ``net.cfg.multiple``.
        tolerance: largest allowed absolute difference between ONNX Runtime and torch on random
            frames and soft prompts at two sizes.

    The graph is :class:`~tir.engines.training.fast_route.FastStudent` (the routes' FastRoute
    rewrites: convolutions instead of layout work; exact up to float rounding), or the plain
    network when its geometry is not covered (``form`` says which and why).

    Returns:
        {"path", "max_abs_err", "ops", "form"}.

    Raises:
        ExportError: the TensorRT op audit (tir.engines.training.export.audit_onnx) fails, or
            the ONNX Runtime parity check exceeds ``tolerance``.
    """
    import onnx

    from ..backends.onnxruntime import ort_session
    from .export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, ExportError, audit_onnx, set_metadata

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = net.cfg.multiple
    h, w = (max(m, size[0] - size[0] % m), max(m, size[1] - size[1] % m))
    k = len(net.prompts)
    was = net.training
    net.eval()
    from .fast_route import STUDENT_EXPORT_FORM, FastStudent

    try:
        module, form = FastStudent(net), STUDENT_EXPORT_FORM
    except ValueError as exc:   # a geometry the rewrites do not cover: the plain graph, said so
        module, form = net, f"reference StudentNet ({exc})"
    try:
        dummy = (torch.zeros(1, 1, h, w), torch.full((1, k), 1.0 / k))
        axes = {0: "batch", 2: "height", 3: "width"}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, dummy, str(path), dynamo=False, opset_version=DEFAULT_OPSET,
                              input_names=[INPUT_NAME, PROMPT_INPUT], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: axes, PROMPT_INPUT: {0: "batch"}, OUTPUT_NAME: dict(axes)},
                              do_constant_folding=True)
        model = onnx.load(str(path))
        set_metadata(model, {MULTIPLE_KEY: m, "tir.model": "student", "tir.preset": net.cfg.name,
                             "tir.prompts": ",".join(net.prompts)})
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        audit = audit_onnx(model)
        if audit.errors:
            raise ExportError(f"{path}: " + "; ".join(audit.errors))
        sess = ort_session(str(path))
        rng = np.random.default_rng(0)
        worst = 0.0
        with torch.no_grad():
            for n, hh, ww in ((1, h, w), (2, 2 * h, 2 * w)):
                x = rng.random((n, 1, hh, ww), dtype=np.float32)
                p = rng.random((n, k), dtype=np.float32)
                p /= p.sum(1, keepdims=True)
                ref = net(torch.from_numpy(x), torch.from_numpy(p)).numpy()
                got = sess.run(None, {INPUT_NAME: x, PROMPT_INPUT: p})[0]
                worst = max(worst, float(np.max(np.abs(ref - got))))
        if not worst <= tolerance:
            raise ExportError(f"{path}: ONNX Runtime differs from torch by {worst:.3g} (> {tolerance:g})")
        return {"path": str(path), "max_abs_err": worst, "ops": sorted(audit.ops), "form": form}
    finally:
        net.train(was)


# ---------------------------------------------------------------------------------------------
# the distiller
# ---------------------------------------------------------------------------------------------

def _checkpoint(net: StudentNet, adapter: nn.Module, **extra) -> dict:
    return {"architecture": net.architecture(), "state_dict": net.state_dict(),
            "adapter": adapter.state_dict(), **extra}


def load_student(path) -> StudentNet:
    """A student from a ``student.pt`` / ``best.pt`` checkpoint (weights_only load)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return StudentNet.from_checkpoint(ckpt)


def parse_task_weights(text: str) -> Dict[str, float]:
    """``"CB=3,blur=2,contrast=2"`` -> {"CB": 3.0, "blur": 2.0, "contrast": 2.0} (``tir distill
    --task-weights``). Task names are checked against the teachers later
    (:func:`sampling_probabilities`).

    Raises:
        ValueError: an item that is not NAME=WEIGHT, a name given twice, a weight that is not a
            finite number ≥ 0, or no item at all.
    """
    out: Dict[str, float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"task weight {item!r} must be NAME=WEIGHT, e.g. CB=3")
        try:
            w = float(value)
        except ValueError:
            raise ValueError(f"task weight {item!r}: {value.strip()!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"task weight {item!r} must be a finite number >= 0")
        if name in out:
            raise ValueError(f"task weight for {name!r} given twice")
        out[name] = w
    if not out:
        raise ValueError("task weights are empty; give NAME=WEIGHT[,NAME=WEIGHT...], e.g. CB=3,blur=2")
    return out


def sampling_probabilities(tasks: Sequence[str], weights: Optional[Dict[str, float]],
                           clean_prob: float) -> Dict[str, float]:
    """Probability that one training sample draws each prompt slot: ``clean`` with ``clean_prob``,
    else task T with (1 − clean_prob)·w_T / Σ w (w_T from ``weights``, 1 for a task not named;
    None: uniform over ``tasks``).

    Returns:
        {slot: probability} over ``tasks`` then ``clean``, summing to 1.

    Raises:
        ValueError: a name in ``weights`` that is not one of ``tasks`` (the teachers' routes), or
            every task weighted 0.
    """
    weights = dict(weights or {})
    unknown = [t for t in weights if t not in tasks]
    if unknown:
        raise ValueError(f"--task-weights names {', '.join(unknown)}, not a route of the teachers; "
                         f"use one of {', '.join(tasks)}")
    w = np.array([float(weights.get(t, 1.0)) for t in tasks])
    if not w.sum() > 0:
        raise ValueError("--task-weights gives every task weight 0; at least one task must be drawn")
    probs = {t: float((1.0 - clean_prob) * v / w.sum()) for t, v in zip(tasks, w)}
    probs[CLEAN] = float(clean_prob)
    return probs


#: largest |ONNX Runtime − torch| accepted when matching a checkpoint to a bundle's student.onnx
#: (the export's own parity tolerance, :func:`export_student`)
STUDENT_MATCH_TOLERANCE = 1e-4


def check_student_weights(bundle, net: StudentNet, tolerance: float = STUDENT_MATCH_TOLERANCE) -> float:
    """Check that ``net`` is the student of ``bundle``: the same prompt slots, and ONNX Runtime on
    the bundle's ``student.onnx`` (bytes sha256-verified against the manifest) matches ``net`` in
    torch within ``tolerance`` on random frames (N×1×H×W float32, two sizes, multiples of the
    student's ``tir.multiple``) under random soft prompts.

    Returns:
        The largest absolute difference (output units, [0, 1] frames).

    Raises:
        ValueError: the bundle has no student, other prompt slots, or outputs that differ by more
            than ``tolerance`` (then the checkpoint is another student).
        BundleError: the student file is missing or altered.
    """
    import onnxruntime as ort

    from ..bundle import read_verified
    from .export import INPUT_NAME

    entry = bundle.student
    if not entry:
        raise ValueError(f"--init-from student: bundle {bundle.path} has no student")
    if list(entry.get("prompts") or []) != list(net.prompts):
        raise ValueError(f"--init-weights holds a student for prompts {list(net.prompts)}, the bundle's student "
                         f"has {entry.get('prompts')}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(read_verified(bundle, entry["file"]), sess_options=opts,
                                providers=["CPUExecutionProvider"])
    m = net.cfg.multiple
    rng = np.random.default_rng(0)
    was = net.training
    net.eval()
    worst = 0.0
    try:
        with torch.no_grad():
            for n, h, w in ((1, 2 * m, 3 * m), (2, 4 * m, 2 * m)):
                x = rng.random((n, 1, h, w), dtype=np.float32)
                p = rng.random((n, len(net.prompts)), dtype=np.float32)
                p /= p.sum(1, keepdims=True)
                ref = net(torch.from_numpy(x), torch.from_numpy(p)).numpy()
                got = sess.run(None, {INPUT_NAME: x, PROMPT_INPUT: p})[0]
                worst = max(worst, float(np.max(np.abs(ref - got))))
    finally:
        net.train(was)
    if not worst <= tolerance:
        raise ValueError(f"--init-weights is not the student of {bundle.path}: its outputs differ from "
                         f"{entry['file']} by {worst:.3g} (> {tolerance:g}); give the checkpoint of the "
                         "tir distill work dir that wrote that student")
    return worst


class Distiller:
    """Runs (or resumes) the distillation in ``work_dir``; see the module docstring."""

    def __init__(self, settings: DistillSettings, work_dir, train_clean: Optional[np.ndarray] = None,
                 val_clean: Optional[np.ndarray] = None):
        from .train import crop_to_multiple, load_split, open_work_dir

        self.s = settings
        # the settings' own checks and the teachers' task names first: a refused run made the work
        # dir (and its distill.log) before it was refused
        if settings.init_weights and settings.init_from != "student":
            raise ValueError(f"--init-weights is used only with --init-from student, not --init-from {settings.init_from}")
        if settings.field_orientations not in FIELD_ORIENTATIONS:
            raise ValueError(f"field orientations {settings.field_orientations!r}: use one of "
                             f"{', '.join(FIELD_ORIENTATIONS)}")
        if settings.steps == 0 and settings.init_from != "student":
            raise ValueError("--steps 0 (no distill stage) needs --init-from student: a new student must be trained")
        self.bundle, self.teacher = load_teachers(settings.bundle)
        self.tasks = list(self.teacher.tasks)
        self.slots = self.tasks + [CLEAN]
        # unknown task names are refused before any data is loaded
        self.sampling = sampling_probabilities(self.tasks, settings.task_weights, settings.clean_prob)
        self.work = open_work_dir(work_dir, settings.threads, log, "distill.log")
        data = settings.data or self._bundle_data()
        if train_clean is None:
            train_clean = load_split(data, "train")
        if val_clean is None:
            val_clean = load_split(data, "val")
        self.data = data
        m = math.lcm(self.teacher.cfg.multiple, 32)
        rng = np.random.default_rng(settings.seed)
        self.train_clean = crop_to_multiple(np.asarray(train_clean, np.float32), m)
        val_clean = crop_to_multiple(np.asarray(val_clean, np.float32), m)
        #: every val frame: the numbers the bundle records (:meth:`run`) are on these
        self.val_all = val_clean
        if settings.val_limit and len(val_clean) > settings.val_limit:
            val_clean = val_clean[np.sort(rng.choice(len(val_clean), settings.val_limit, replace=False))]
        self.val_clean = val_clean
        self.state = self._load_state()
        torch.manual_seed(settings.seed)
        self.net = self._new_student()
        self.adapter = nn.Conv2d(self.net.cfg.width, self.teacher.cfg.width, 1)
        if self._init_adapter is not None:    # --init-from student: its training-only adapter too
            self.adapter.load_state_dict(self._init_adapter)
        self.loss = RestorationLoss(settings.crop)
        self.opt = torch.optim.AdamW(self._body_params(), lr=settings.lr, weight_decay=1e-5)
        self.step = 0
        self._resume()
        self._pools = None
        self._val_sets: Dict[str, np.ndarray] = {}

    def _new_student(self) -> StudentNet:
        """The student of a saved checkpoint (resume), else one copied from route ``init_from``,
        else the ``preset`` from scratch. Raises ValueError when a copied route would exceed
        :data:`MAX_GMAC`."""
        self._init_adapter = None
        path = self.work / STUDENT_CKPT
        if path.is_file():
            from .train import load_checkpoint_file

            arch = load_checkpoint_file(path)["architecture"]
            return StudentNet(StudentConfig.from_dict(arch["config"]), arch["prompts"])
        task = self.s.init_from
        if task == "student":
            return self._student_of_bundle()
        if task == "auto":
            singles = [t for t in self.tasks if t not in self.teacher.parts]
            task = "noise" if "noise" in singles else (singles[0] if singles else "none")
        if task == "none":
            return create_student(self.s.preset, self.slots)
        if task not in self.tasks or task in self.teacher.parts:
            raise ValueError(f"--init-from {task!r} must be a single-degradation route of the teachers "
                             f"({', '.join(t for t in self.tasks if t not in self.teacher.parts)}), none or student")
        net = student_from_route(self.teacher, task, self.slots, get_student_config(self.s.preset).prompt_dim)
        gmac = student_gmac(net)
        if gmac > MAX_GMAC:
            raise ValueError(f"a student copied from route {task} costs {gmac:.3f} GMAC at 640x512, over the "
                             f"{MAX_GMAC} budget; prune the teachers or use --init-from none")
        log.info("student initialised from route %s (%.3f GMAC)", task, gmac)
        self.state["init_from"] = task
        return net

    def _student_of_bundle(self) -> StudentNet:
        """``--init-from student``: the teacher bundle's student, rebuilt in torch from
        ``init_weights`` and checked against the bundle's ``student.onnx``
        (:func:`check_student_weights`). Raises ValueError when no checkpoint is given, it is
        not that student, or it exceeds :data:`MAX_GMAC`."""
        from ..bundle import sha256_file

        if not self.bundle.student:
            raise ValueError(f"--init-from student: bundle {self.bundle.path} has no student; use --init-from auto")
        if not self.s.init_weights:
            raise ValueError(f"--init-from student needs --init-weights: bundle {self.bundle.path} holds its student "
                             "only as ONNX (student.onnx), not as torch weights; give the student.pt of the "
                             "tir distill work dir that wrote it (its manifest's student.training.command)")
        path = Path(self.s.init_weights)
        if not path.is_file():
            raise ValueError(f"--init-weights {path}: no such file")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if "architecture" not in ckpt or "state_dict" not in ckpt:
            raise ValueError(f"--init-weights {path} is not a tir distill student checkpoint (student.pt / best.pt)")
        net = StudentNet.from_checkpoint(ckpt)
        if list(net.prompts) != self.slots:
            raise ValueError(f"--init-weights {path} holds a student for prompts {list(net.prompts)}, the teachers "
                             f"have {self.slots}")
        err = check_student_weights(self.bundle, net)
        gmac = student_gmac(net)
        if gmac > MAX_GMAC:
            raise ValueError(f"the bundle's student costs {gmac:.3f} GMAC at 640x512, over the {MAX_GMAC} budget")
        self._init_adapter = ckpt.get("adapter")
        self.state["init_from"] = "student"
        self.state["init_weights"] = {"path": str(path), "sha256": sha256_file(path), "step": ckpt.get("step"),
                                      "onnx_max_abs_err": err}
        log.info("student initialised from the bundle's student (%s, step %s; matches %s within %.2g)", path,
                 ckpt.get("step"), self.bundle.student["file"], err)
        return net

    # ---------------------------------------------------------------- bookkeeping
    def _bundle_data(self) -> Optional[str]:
        settings = ((self.bundle.manifest.get("training") or {}).get("settings") or {})
        return settings.get("data")

    def _load_state(self) -> dict:
        path = self.work / "state.json"
        state = {"done": [], "val": [], "metrics": {}, "wall_s": {}, "runs": []}
        if path.is_file():
            from .train import load_state_file

            state = load_state_file(path)
            if state.get("settings", {}).get("bundle") not in (None, self.s.bundle):
                log.warning("work dir %s was started with teachers %s; continuing with %s", self.work,
                            state["settings"]["bundle"], self.s.bundle)
        if "distill" not in state["done"]:     # the settings that trained the student; later runs are in "runs"
            state["settings"] = asdict(self.s)
        state.setdefault("runs", []).append({"date": _now(), "command": self.s.command})
        return state

    def _save_state(self) -> None:
        from .train import save_state

        save_state(self.work, self.state)

    def _save(self, name: str = STUDENT_CKPT, **extra) -> None:
        ckpt = _checkpoint(self.net, self.adapter, step=self.step, optimizer=self.opt.state_dict(), **extra)
        torch.save(ckpt, self.work / (name + ".tmp"))
        os.replace(self.work / (name + ".tmp"), self.work / name)

    def _resume(self) -> None:
        from .train import load_checkpoint_file

        path = self.work / STUDENT_CKPT
        if not path.is_file():
            return
        ckpt = load_checkpoint_file(path)
        if ckpt["architecture"]["prompts"] != self.slots:
            raise ValueError(f"{path} holds a student for prompts {ckpt['architecture']['prompts']}, the teachers "
                             f"have {self.slots}; use a new --work-dir")
        self.net.load_state_dict(ckpt["state_dict"])
        self.adapter.load_state_dict(ckpt["adapter"])
        try:
            self.opt.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError):   # the field stage's optimiser: the body is finished
            pass
        self.step = int(ckpt.get("step", 0))
        log.info("resumed from %s at step %d (done: %s)", path, self.step, ", ".join(self.state["done"]) or "nothing")

    def _body_params(self) -> List[nn.Parameter]:
        field = set(id(p) for p in self.net.field.parameters()) if self.net.field is not None else set()
        return [p for p in self.net.parameters() if id(p) not in field] + list(self.adapter.parameters())

    # ---------------------------------------------------------------- data
    def spec(self, task: str):
        """The degradation spec of ``task``: the one recorded in the teacher bundle's route entry, else
        the built-in of that name.

        Raises:
            BundleError: the teacher bundle has no route ``task``.
            DegradationError: no spec recorded and no built-in of that name.
        """
        info = self.bundle.task_info(task)
        return deg.DegradationSpec.from_json(info["spec"]) if info.get("spec") else deg.load_spec(task)

    def pools(self):
        """Per prompt slot, the training pool of whole frames (built on first use, cached): for each
        task a train.DegradedPool of at most ``max_frames`` train frames degraded with its spec, for
        ``clean`` a clean→clean pool. Frames are float32 (H, W) in [0, 1]; pools carry whole-frame
        tone statistics when the teachers have a tone head.
        """
        from .train import DegradedPool

        if self._pools is None:
            rng = np.random.default_rng(self.s.seed + 1)
            self._pools = {}
            tone_pool = self.teacher.cfg.tone_pool if self.teacher.cfg.tone else None
            for i, task in enumerate(self.tasks):
                n = min(self.s.max_frames, len(self.train_clean))
                idx = np.sort(rng.choice(len(self.train_clean), n, replace=False))
                self._pools[task] = DegradedPool(self.train_clean[idx], self.spec(task),
                                                 self.s.seed + 31 * (i + 1) + self.step, tone_pool)
            n = min(self.s.max_frames, len(self.train_clean))
            idx = np.sort(rng.choice(len(self.train_clean), n, replace=False))
            self._pools[CLEAN] = _clean_pool(self.train_clean[idx], self.s.seed + 7 + self.step, tone_pool)
        return self._pools

    def val_set(self, task: str) -> np.ndarray:
        """``task``'s seeded degraded val frames (degrade.make_eval_set of the val split with ``seed``),
        cached: (N, H, W) float32 in [0, 1], aligned with ``val_clean``.

        Raises:
            BundleError, DegradationError: as :meth:`spec`.
        """
        if task not in self._val_sets:
            self._val_sets[task] = deg.make_eval_set(self.val_clean, self.spec(task), seed=self.s.seed)
        return self._val_sets[task]

    def draw(self, rng: np.random.Generator) -> List[Tuple[str, torch.Tensor, torch.Tensor, Optional[torch.Tensor]]]:
        """One batch of ``batch`` crops as (slot, degraded crops, clean crops, whole-frame stats) groups,
        one group per slot drawn; crops are (n, 1, crop, crop) float32 in [0, 1], stats (n, 5, 1, 1)
        float32 or None.
        """
        pools = self.pools()
        if self.s.task_weights is None:   # uniform: the draw of every run before --task-weights
            slots = [CLEAN if rng.random() < self.s.clean_prob else self.tasks[int(rng.integers(len(self.tasks)))]
                     for _ in range(self.s.batch)]
        else:
            p = np.array([self.sampling[t] for t in self.tasks])
            p = p / p.sum()
            slots = [CLEAN if rng.random() < self.s.clean_prob else self.tasks[int(rng.choice(len(self.tasks), p=p))]
                     for _ in range(self.s.batch)]
        groups = []
        for slot in dict.fromkeys(slots):
            x, y, stats = pools[slot].batch(slots.count(slot), self.s.crop)
            groups.append((slot, x, y, stats))
        return groups

    # ---------------------------------------------------------------- training
    def loss_terms(self, groups) -> Dict[str, torch.Tensor]:
        """Every loss term of one batch (see the module docstring).

        Args:
            groups: :meth:`draw`'s (slot, degraded (n, 1, h, w), clean (n, 1, h, w), stats) groups.

        Returns:
            {"gt", "kd", "feat", "inst", "cpr", "sparse", "total"}: 0-d float32 tensors; ``total``
            is the weighted sum with ``w_gt`` ... ``w_sparse``.
        """
        xs, ys, ws, wrong, stats, t_out, t_feat = [], [], [], [], [], [], []
        rng = np.random.default_rng(self.step + 12345)
        for slot, x, y, st in groups:
            with torch.no_grad():
                out, feats = teacher_forward(self.teacher, x, slot, st)
            xs.append(x)
            ys.append(y)
            ws.append(self.net.one_hot([slot] * len(x)))
            others = [s for s in self.slots if s != slot]
            wrong.append(self.net.one_hot([others[int(rng.integers(len(others)))] for _ in range(len(x))]))
            stats.append(st if st is not None else frame_tone_stats(x[:, 0].numpy(), self.net.cfg.tone_pool))
            t_out.append(out)
            t_feat.append(feats)
        x, y, w, w_neg = torch.cat(xs), torch.cat(ys), torch.cat(ws), torch.cat(wrong)
        st, t_out, t_feat = torch.cat(stats), torch.cat(t_out), torch.cat(t_feat)
        pred, h, _ = self.net.run(x, w, st, field=False)
        f = self.adapter(h)
        terms = {"gt": self.loss(pred, y), "kd": (pred - t_out).abs().mean(),
                 "feat": (f - t_feat).abs().mean()}
        fs, ft = _vectors(f, 4), _vectors(t_feat, 4)
        terms["inst"] = info_nce(fs, ft, self.s.tau) + info_nce(_vectors(pred, 8), _vectors(t_out, 8), self.s.tau)
        if self.s.w_cpr > 0:   # on half the batch: the extra forward is the step's largest cost after the teachers
            k = max(1, len(x) // 2)
            _, h_neg, _ = self.net.run(x[:k], w_neg[:k], st[:k], field=False)
            terms["cpr"] = prompt_contrast(ft[:k], fs[:k], _vectors(self.adapter(h_neg), 4), self.s.tau)
        else:
            terms["cpr"] = pred.sum() * 0.0
        terms["sparse"] = self.net.prompt_table.abs().mean()
        weights = {"gt": self.s.w_gt, "kd": self.s.w_kd, "feat": self.s.w_feat, "inst": self.s.w_inst,
                   "cpr": self.s.w_cpr, "sparse": self.s.w_sparse}
        terms["total"] = sum(weights[k] * terms[k] for k in weights)
        return terms

    def _progress(self, elapsed: float) -> float:
        """How far the stage is, 0..1: the larger of steps done / ``steps`` and, with a time
        budget, seconds spent / ``max_minutes``·60 (so a slow or shared machine still ends on time,
        with the full learning-rate schedule)."""
        p = self.step / max(1, self.s.steps)
        if self.s.max_minutes:
            p = max(p, elapsed / (60.0 * self.s.max_minutes))
        return min(1.0, p)

    @staticmethod
    def lr_factor(p: float, warm: float = 0.05) -> float:
        """Linear warm-up over the first 5 %, then cosine down to 1 % of the peak."""
        if p < warm:
            return max(p / warm, 0.01)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (p - warm) / (1 - warm))))

    def distill(self) -> None:
        """The ``distill`` stage: until ``steps`` or the ``max_minutes`` budget (wall time of the
        stage, summed over resumed runs); resumes at the saved step."""
        rng = np.random.default_rng(self.s.seed + 100 + self.step)
        params = self._body_params()
        self.net.train()
        running = None
        spent = float(self.state["wall_s"].get("distill", 0.0))
        bar = tqdm(total=self.s.steps, initial=self.step, desc="distill", mininterval=5.0, dynamic_ncols=True)
        last_save = time.monotonic()      # ``spent`` holds everything up to here
        while True:
            p = self._progress(spent + time.monotonic() - last_save)
            if p >= 1.0 and self.step > 0:   # a fresh stage takes at least one step
                break
            if self.step and self.step % self.s.refresh_every == 0:
                for pool in self.pools().values():
                    pool.refresh()
            for group in self.opt.param_groups:
                group["lr"] = self.s.lr * self.lr_factor(p)
            terms = self.loss_terms(self.draw(rng))
            self.opt.zero_grad(set_to_none=True)
            terms["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            self.step += 1
            bar.update(1)
            value = terms["total"].item()
            running = value if running is None else 0.98 * running + 0.02 * value
            bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            if self.step % 200 == 0:
                log.info("distill step %d/%d loss %.4f (%s)", self.step, self.s.steps, running,
                         ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items() if k != "total"))
            if self.step % self.s.val_every == 0:
                self._validate()
            if self.step % self.s.save_every == 0:
                now = time.monotonic()
                spent += now - last_save
                last_save = now
                self._checkpoint_stage(spent)
        bar.close()
        spent += time.monotonic() - last_save
        log.info("distill: ended at step %d after %.0f s (loss %.4f)", self.step, spent, running or float("nan"))
        if not self.state["val"] or self.state["val"][-1]["step"] != self.step:
            self._validate()
        self._checkpoint_stage(spent)

    def _checkpoint_stage(self, spent: float) -> None:
        self._save()
        self.state["step"] = self.step
        self.state["wall_s"]["distill"] = round(spent, 1)
        self._save_state()

    def _validate(self) -> None:
        """Val PSNR per task with the one-hot prompt (field head included); keep the best."""
        scores = {t: self.evaluate(t) for t in self.tasks}
        mean = float(np.mean(list(scores.values())))
        self.state["val"].append({"step": self.step, "mean": mean, "psnr": scores})
        best = self.state.get("best")
        if best is None or mean > best["mean"]:
            self.state["best"] = {"step": self.step, "mean": mean, "psnr": scores}
            self._save(BEST_CKPT)
        log.info("val step %d: mean %.2f dB (%s)%s", self.step, mean,
                 ", ".join(f"{t} {v:.2f}" for t, v in scores.items()),
                 " best" if self.state["best"]["step"] == self.step else "")
        self.net.train()

    def evaluate(self, task: str, net: Optional[StudentNet] = None, weights=None, orientation: int = 0) -> float:
        """Mean per-frame val PSNR of the student on ``task``'s seeded val set (one-hot prompt,
        or ``weights``: a K-vector), the degraded and clean frames both in ``orientation``
        (dihedral: 0 as stored, 1 a quarter turn: a camera mounted in portrait)."""
        net = self.net if net is None else net
        net.eval()
        frames = dihedral(self.val_set(task), orientation)
        w = net.one_hot([task]) if weights is None else torch.as_tensor(weights, dtype=torch.float32).reshape(1, -1)
        out = []
        with torch.no_grad():
            for i in range(0, len(frames), 4):
                x = torch.from_numpy(frames[i:i + 4, None])
                out.append(net(x, w.expand(len(x), -1)).clamp(0, 1).numpy()[:, 0])
        y = np.concatenate(out)
        return float(np.mean([psnr(a, b) for a, b in zip(y, dihedral(self.val_clean, orientation))]))

    def evaluate_oriented(self, task: str) -> float:
        """The field stage's measure: :meth:`evaluate`, with ``field_orientations="all"`` averaged
        over the frames as stored and turned a quarter (portrait)."""
        turns = FIELD_VAL_ORIENTATIONS if self.s.field_orientations == "all" else (0,)
        return float(np.mean([self.evaluate(task, orientation=k) for k in turns]))

    def teacher_psnr(self) -> Dict[str, float]:
        """Val PSNR of every teacher route on the same frames (cached in state.json per frame count)."""
        from .train import evaluate_route

        cached = self.state.get("teacher_val") or {}
        if cached.get("frames") != len(self.val_clean):
            cached = {"frames": len(self.val_clean), "psnr": {}}
        for task in self.tasks:
            if task not in cached["psnr"]:
                cached["psnr"][task] = evaluate_route(self.teacher, task, self.val_set(task), self.val_clean)
        self.state["teacher_val"] = cached
        self._save_state()
        return dict(cached["psnr"])

    def evaluate_split(self, split: str) -> dict:
        """Student (one-hot prompts) and teacher routes on every frame of ``split`` of the data
        (seeded eval sets), recorded in ``state["eval"][split]``; trains nothing. For the final
        report on ``test``, once, for the chosen checkpoint."""
        from .train import crop_to_multiple, evaluate_route, load_split

        m = math.lcm(self.teacher.cfg.multiple, 32)
        self.val_clean = crop_to_multiple(load_split(self.data, split), m)
        self._val_sets = {}
        out = {"frames": len(self.val_clean), "data": self.data, "date": _now(), "step": self.step,
               "student": {t: self.evaluate(t) for t in self.tasks},
               "teacher": {t: evaluate_route(self.teacher, t, self.val_set(t), self.val_clean) for t in self.tasks}}
        self.state.setdefault("eval", {})[split] = out
        self._save_state()
        return out

    def field(self) -> None:
        """The ``field`` stage: fit the prompt-conditioned field head on whole frames (body and
        prompts frozen; with ``field_orientations="all"`` each step's frames in one of the 8
        orientations a camera can deliver, draw_orientation: portrait, upside down,
        mirrored); kept only if val mean PSNR (:meth:`evaluate_oriented`) improves, else the head
        is put back as it was before the stage (the weights whose val ``val_mean_before`` measured)."""

        head = self.net.field
        if head is None or self.s.field_steps <= 0:
            return
        for p in self.net.parameters():
            p.requires_grad_(False)
        params = list(head.parameters())
        for p in params:
            p.requires_grad_(True)
        before = float(np.mean([self.evaluate_oriented(t) for t in self.tasks]))
        saved = {k: v.clone() for k, v in head.state_dict().items()}
        pools = self.pools()
        rng = np.random.default_rng(self.s.seed + 4241)
        self.net.eval()
        bases, cleans, prompts = [], [], []
        with torch.no_grad():
            for slot in self.slots:
                pool = pools[slot]
                w = self.net.one_hot([slot])
                for i in range(0, len(pool.clean), 4):
                    x = torch.from_numpy(pool.degraded[i:i + 4, None])
                    y, _, _ = self.net.run(x, w.expand(len(x), -1), field=False)
                    bases.append(y)
                    cleans.append(torch.from_numpy(pool.clean[i:i + 4, None]))
                    prompts.append(w.expand(len(x), -1))
        base, clean, wts = torch.cat(bases), torch.cat(cleans), torch.cat(prompts)
        opt = torch.optim.AdamW(params, lr=self.s.lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.s.lr, total_steps=self.s.field_steps,
                                                    pct_start=0.05)
        t0 = time.monotonic()
        for _ in tqdm(range(self.s.field_steps), desc="student field", mininterval=5.0, dynamic_ncols=True):
            idx = torch.from_numpy(rng.choice(len(base), min(8, len(base)), replace=False))
            k = draw_orientation(rng) if self.s.field_orientations == "all" else 0
            with torch.no_grad():
                p = self.net.prompt_vector(wts[idx])
            loss = (head(dihedral(base[idx], k), p) - dihedral(clean[idx], k)).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        for p in self.net.parameters():
            p.requires_grad_(True)
        after = float(np.mean([self.evaluate_oriented(t) for t in self.tasks]))
        kept = after > before
        if not kept:   # back to the head val measured before (a fine-tuned student keeps its trained head)
            head.load_state_dict(saved)
        self.state["metrics"]["field"] = {"val_mean_before": before, "val_mean_after": after, "kept": kept,
                                          "seconds": round(time.monotonic() - t0, 1)}
        log.info("student field head: val mean %.2f -> %.2f dB (%s)", before, after, "kept" if kept else "dropped")

    # ---------------------------------------------------------------- stage 2
    def _encoder(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen clean-image embedding of N×1×h×w crops: N×(C·16), normalised."""
        s = self.teacher.stem(x)
        return _vectors(s + self.teacher.branches[CLEAN](s), 4)

    def real_frames(self) -> Tuple[np.ndarray, np.ndarray]:
        """(calibration, held-out) real degraded frames of ``real_data`` (train split, or ``all`` for
        a set without splits): per set, frames in file order, the last third held out as one block
        (the Lynred set is one recording, so a block in time is the cleanest split there is). Both
        (N, H, W) float32 in [0, 1], cropped to a multiple of lcm(teacher multiple, 32) px.

        Raises:
            ValueError: too few frames to split into calibration and held-out frames.
            DatasetError: ``real_data`` names an unknown set.
        """
        from . import datasets as dsets
        from .train import crop_to_multiple

        cal, held = [], []
        for name in dsets.parse_sets(self.s.real_data):
            split = "train" if dsets.dataset(name).splits else "all"
            frames = dsets.load_unit_frames([name], split, clean_only=False)
            cut = len(frames) - len(frames) // 3
            cal += list(frames[:cut])
            held += list(frames[cut:])
        if not cal or not held:
            raise ValueError(f"{self.s.real_data}: too few frames to split into calibration and held-out frames")
        m = math.lcm(self.teacher.cfg.multiple, 32)
        return crop_to_multiple(np.stack(cal), m), crop_to_multiple(np.stack(held), m)

    def router_mix(self, frames: np.ndarray) -> np.ndarray:
        """Prompt weights from the teacher bundle's router (with its adaptation map), or uniform over
        the tasks when it has none.

        Args:
            frames: (N, H, W) float32 frames in [0, 1].

        Returns:
            (N, K) float32 weights over the K slots, rows summing to 1.
        """
        if self.bundle.router is None:
            w = np.zeros((len(frames), len(self.slots)), np.float32)
            w[:, :len(self.tasks)] = 1.0 / len(self.tasks)
            return w
        from ..backends.student import prompt_mix
        from .evaluate import RouterRunner

        runner = RouterRunner(self.bundle.router_path, self.bundle.router, threads=self.s.threads)
        from ..adapt import apply_adaptation

        emb = apply_adaptation(runner.embed(frames), runner.adaptation)
        return np.stack([prompt_mix(e, runner.codebook, runner.classes, runner.temperature, self.slots) for e in emb])

    def _crops(self, frames: np.ndarray, n: int, rng: np.random.Generator):
        c = self.s.crop
        idx = rng.integers(0, len(frames), n)
        ys = rng.integers(0, frames.shape[1] - c + 1, n)
        xs = rng.integers(0, frames.shape[2] - c + 1, n)
        x = np.stack([frames[i, y:y + c, x0:x0 + c] for i, y, x0 in zip(idx, ys, xs)])[:, None]
        return torch.from_numpy(np.ascontiguousarray(x)), idx

    def real_scores(self, frames: np.ndarray, weights: np.ndarray) -> Dict[str, float]:
        """Mean column FPN (metrics.column_fpn, the frame's units: [0, 1]) of the input and of the
        student's output on real frames (no reference).

        Args:
            frames: (N, H, W) float32 frames in [0, 1]; H and W multiples of the student's multiple.
            weights: (N, K) float32 prompt weights, one row per frame.

        Returns:
            {"column_fpn_input", "column_fpn_output", "frames"}.
        """
        from ..metrics import column_fpn

        self.net.eval()
        fpn_in, fpn_out = [], []
        with torch.no_grad():
            for f, w in zip(frames, weights):
                y = self.net(torch.from_numpy(f[None, None]), torch.from_numpy(w[None])).clamp(0, 1).numpy()[0, 0]
                fpn_in.append(column_fpn(f))
                fpn_out.append(column_fpn(y))
        return {"column_fpn_input": float(np.mean(fpn_in)), "column_fpn_output": float(np.mean(fpn_out)),
                "frames": len(frames)}

    def calibrate(self) -> None:
        """Stage 2, see the module docstring; records before/after in ``metrics.calibrate``."""
        if self.s.calibrate_steps <= 0:
            return
        t0 = time.monotonic()
        rng = np.random.default_rng(self.s.seed + 777)
        cal, held = self.real_frames()
        w_cal, w_held = self.router_mix(cal), self.router_mix(held)
        with torch.no_grad():
            clean_c, _ = self._crops(self.train_clean, 256, rng)
            real_c, _ = self._crops(cal, 256, rng)
            pos = torch.from_numpy(kmeans(self._encoder(clean_c).numpy(), self.s.clusters, self.s.seed))
            neg = torch.from_numpy(kmeans(self._encoder(real_c).numpy(), self.s.clusters, self.s.seed + 1))
        pos, neg = F.normalize(pos, dim=1), F.normalize(neg, dim=1)
        before = {"val_mean": float(np.mean([self.evaluate(t) for t in self.tasks])),
                  **self.real_scores(held, w_held)}
        saved = {k: v.clone() for k, v in self.net.state_dict().items()}
        params = self._body_params()
        opt = torch.optim.AdamW(params, lr=self.s.lr * 0.1, weight_decay=1e-5)
        stats = frame_tone_stats(cal, self.net.cfg.tone_pool)
        self.net.train()
        for _ in tqdm(range(self.s.calibrate_steps), desc="calibrate", mininterval=5.0, dynamic_ncols=True):
            terms = self.loss_terms(self.draw(rng))
            x, idx = self._crops(cal, self.s.batch, rng)
            y, _, _ = self.net.run(x, torch.from_numpy(w_cal[idx]), stats[idx], field=False)
            v = self._encoder(y)
            loss_cal = cluster_contrast(v, pos, neg, self.s.tau)
            loss = terms["total"] + self.s.w_cal * loss_cal
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        after = {"val_mean": float(np.mean([self.evaluate(t) for t in self.tasks])),
                 **self.real_scores(held, w_held)}
        kept = after["val_mean"] >= before["val_mean"] - 0.1 and after["column_fpn_output"] < before["column_fpn_output"]
        if not kept:
            self.net.load_state_dict(saved)
        self.state["metrics"]["calibrate"] = {"before": before, "after": after, "kept": kept,
                                              "real_data": self.s.real_data, "calibration_frames": len(cal),
                                              "held_out_frames": len(held), "steps": self.s.calibrate_steps,
                                              "seconds": round(time.monotonic() - t0, 1)}
        log.info("calibrate: val mean %.2f -> %.2f dB, held-out real column FPN %.4f -> %.4f (input %.4f): %s",
                 before["val_mean"], after["val_mean"], before["column_fpn_output"], after["column_fpn_output"],
                 before["column_fpn_input"], "kept" if kept else "dropped")

    def run(self) -> dict:
        """Every stage not yet done: ``distill`` (from the best val checkpoint on), ``field``,
        ``calibrate`` (when ``calibrate_steps`` > 0)."""
        if "distill" not in self.state["done"] and self.s.steps == 0:
            # a fine-tune of the bundle's student in its later stages only (e.g. its field head)
            self.state["done"].append("distill")
            self._save()
            self._save_state()
            log.info("stage distill skipped (--steps 0): the bundle's student as it is")
        if "distill" not in self.state["done"]:
            t0 = time.monotonic()
            self.distill()
            self.state["done"].append("distill")
            best = self.work / BEST_CKPT
            if best.is_file():   # continue from the checkpoint val chose
                from .train import load_checkpoint_file

                ckpt = load_checkpoint_file(best)
                self.net.load_state_dict(ckpt["state_dict"])
                self.adapter.load_state_dict(ckpt["adapter"])
                log.info("distill: chose the step-%s checkpoint (val mean %.2f dB)", ckpt.get("step"),
                         self.state["best"]["mean"])
            self._save()
            self._save_state()
            log.info("stage distill finished in %.0f s", time.monotonic() - t0)
        if "field" not in self.state["done"]:
            t0 = time.monotonic()
            self.field()
            self.state["done"].append("field")
            self.state["wall_s"]["field"] = round(time.monotonic() - t0, 1)
            self._save()
            self._save_state()
        if self.s.calibrate_steps > 0 and "calibrate" not in self.state["done"]:
            t0 = time.monotonic()
            self.calibrate()
            self.state["done"].append("calibrate")
            self.state["wall_s"]["calibrate"] = round(time.monotonic() - t0, 1)
            self._save()
            self._save_state()
        metrics = self.state["metrics"]
        # the numbers the bundle records (and deploy=auto chooses on) are on every val frame: the
        # val_limit subset chose the checkpoint, so it is both smaller and not independent of it
        self.val_clean, self._val_sets = self.val_all, {}
        metrics["val_psnr"] = {t: self.evaluate(t) for t in self.tasks}
        metrics["val_frames"] = len(self.val_clean)
        metrics["teacher_val_psnr"] = self.teacher_psnr()
        metrics["gmac_640x512"] = round(student_gmac(self.net), 4)
        metrics["params"] = sum(p.numel() for p in self.net.parameters())
        self._save_state()
        return self.state

    def write_bundle(self, out_dir, deploy: str = "routes", margin_db: Optional[float] = None):
        """Export the student and write ``out_dir``: a copy of the teacher bundle with the student
        added (tir.engines.bundle.add_student, with ``deploy`` and the auto_deploy margin
        ``margin_db`` in dB, None: the default 0.3). Returns the Bundle."""
        from ..bundle import add_student

        onnx_path = self.work / STUDENT_FILE
        report = export_student(self.net, onnx_path)
        m = self.state.get("metrics", {})
        info = {"preset": self.net.cfg.name, "prompts": list(self.net.prompts),
                "gmac_640x512": m.get("gmac_640x512", round(student_gmac(self.net), 4)),
                "params": m.get("params", sum(p.numel() for p in self.net.parameters())),
                "config": self.net.cfg.to_dict(),
                "metrics": {"val_psnr": m.get("val_psnr"), "teacher_val_psnr": m.get("teacher_val_psnr"),
                            "val_frames": m.get("val_frames"),
                            "field": m.get("field"), "best": self.state.get("best"),
                            "parity_max_abs_err": report["max_abs_err"], "export_form": report["form"]},
                "training": {"teachers": str(self.bundle.path), "data": self.data, "command": self.s.command,
                             "settings": asdict(self.s),
                             "sampling": self.sampling, "init_from": self.state.get("init_from"),
                             "init_weights": self.state.get("init_weights"),
                             "wall_s": self.state.get("wall_s"), "date": _now()}}
        from ..bundle import DEFAULT_AUTO_MARGIN_DB

        return add_student(self.bundle.path, out_dir, onnx_path, info, deploy=deploy,
                           margin_db=DEFAULT_AUTO_MARGIN_DB if margin_db is None else margin_db)


def cluster_contrast(v: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, tau: float) -> torch.Tensor:
    """Cluster-grained contrastive loss (Uni-Removal stage 2, CGCL, ecmrnet.md §3): each row of
    ``v`` is pulled to its nearest ``positives`` centroid (by cosine) and pushed from every
    ``negatives`` centroid: mean of −log e^{v·p/τ} / (e^{v·p/τ} + Σ_j e^{v·n_j/τ}).

    Args:
        v: (N, D) float32 normalised embeddings of restored crops.
        positives: (P, D) float32 normalised clean centroids.
        negatives: (M, D) float32 normalised degraded centroids.
        tau: temperature (> 0).

    Returns:
        A 0-d float32 tensor.
    """
    sims = v @ positives.t()
    pos = sims.max(dim=1).values / tau
    neg = v @ negatives.t() / tau
    return (torch.logsumexp(torch.cat([pos[:, None], neg], dim=1), dim=1) - pos).mean()


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 20) -> np.ndarray:
    """k centroids (k×D float32) of the rows of ``x`` by Lloyd's algorithm, k-means++ seeding."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, np.float64)
    k = min(k, len(x))
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(x[rng.choice(len(x), p=d / d.sum())] if d.sum() > 0 else x[rng.integers(len(x))])
    c = np.array(centres)
    for _ in range(iters):
        label = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
        new = np.array([x[label == j].mean(0) if np.any(label == j) else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c.astype(np.float32)


#: the student's cost budget per 640×512 frame (issue 11)
MAX_GMAC = 1.2


def student_from_route(teacher: OpenWorldModel, task: str, prompts: Sequence[str], prompt_dim: int) -> StudentNet:
    """A student whose every prompt starts as route ``task`` (a single-degradation route): the
    route's stem, branch (its pruned inner widths), reconstruction, tone head and field head are
    copied; every prompt path (the block FiLMs, the prompt inputs of the tone, statistics and
    field MLPs) starts at zero, so the student's output equals the route's for any prompt."""
    tcfg = teacher.cfg
    branch = teacher.branches[task]
    cfg = StudentConfig(name=f"from-{task}", unshuffle=tcfg.unshuffle, width=tcfg.width, low_width=tcfg.low_width,
                        blocks=tuple(tcfg.blocks), prompt_dim=prompt_dim, stats_hidden=tcfg.stats_hidden,
                        tone_pool=tcfg.tone_pool, tone_hidden=tcfg.tone_hidden, field=tcfg.field or 0,
                        field_width=tcfg.field_width, feature_width=tcfg.width, mids=tuple(branch.mids()))
    net = StudentNet(cfg, prompts)
    with torch.no_grad():
        net.stem.load_state_dict(teacher.stem.conv.state_dict())
        net.recon.weight.copy_(teacher.recon.conv.weight)
        for mine, theirs in zip([*net.high_in, *net.low, *net.high_out], branch.res_blocks()):
            mine.conv1.load_state_dict(theirs.conv1.state_dict())
            mine.conv2.load_state_dict(theirs.conv2.state_dict())
        net.down.load_state_dict(branch.down.state_dict())
        net.up.load_state_dict(branch.up.state_dict())
        net.out.load_state_dict(branch.out.state_dict())
        lc = tcfg.low_width
        net.stats_fc1.weight.zero_()
        net.stats_fc1.weight[:, :lc] = branch.stats.fc1.weight
        net.stats_fc1.bias.copy_(branch.stats.fc1.bias)
        net.stats_fc2.load_state_dict(branch.stats.fc2.state_dict())
        if task in teacher.tones:
            tone = teacher.tones[task]
            net.tone.fc1.weight.zero_()
            net.tone.fc1.weight[:, :tone.fc1.in_channels] = tone.fc1.weight
            net.tone.fc1.bias.copy_(tone.fc1.bias)
            net.tone.fc2.load_state_dict(tone.fc2.state_dict())
        if net.field is not None and task in teacher.fields:
            head = teacher.fields[task]
            net.field.convs.load_state_dict(head.convs.state_dict())
            net.field.out.load_state_dict(head.out.state_dict())
    return net


def _clean_pool(clean: np.ndarray, seed: int, tone_pool: Optional[int]):
    """A pool whose degraded frames are the clean frames (the ``clean`` prompt's identity target)."""
    from .train import DegradedPool

    pool = DegradedPool.__new__(DegradedPool)
    pool.base = pool.clean = np.asarray(clean, np.float32)
    pool.degraded = pool.clean
    pool.rng = np.random.default_rng(seed)
    pool.tone_pool = tone_pool
    pool.randomize = False
    pool.spec = None
    pool.stats = frame_tone_stats(pool.clean, tone_pool)
    pool.refresh = lambda fraction=0.25: np.arange(0)
    return pool


def _now() -> str:
    from .train import now_iso

    return now_iso()
