"""Fine-tuning of a bundle's shipped student from its ONNX graph against the bundle's routes, with
a loss in dB per tile (issue 11; ``tir distill --init-from onnx``).

Why: the distillation loss (:meth:`tir.engines.training.distill.Distiller.loss_terms`) is L1 to the
clean target and to the teacher, averaged over the batch. A blurred crop's residual (input −
clean) is 10-30× smaller than a noisy one's, so in that average the blur task's gradient is
negligible, and the shipped student's blur output is no better than its blurred input (docs/student.md,
Session 9). The gate and the tables judge each task in dB (PSNR); the loss here is the mean over
the tiles of log10 of each tile's mean squared difference to its teacher's output (−PSNR/10 per
tile, as :func:`tir.engines.training.qat.finetune` uses per crop), so every task counts as it is
judged.

Why whole frames, not crops: the student's and the routes' ONNX graphs compute their tone head's
and field head's statistics from the frame they are given (the torch distillation feeds each crop
its whole frame's statistics; the ONNX graphs have no such input). On 128-px tiles of 6 val frames
(docs/student.md, Session 17) the blur route scores 35.57 dB against 36.60 on the whole frame, the
contrast route 15.32 against 35.42 and the student's blur prompt 25.14 against 35.20: a crop's
output is not the whole frame's. Both networks therefore run on whole frames here, and the loss
is taken per ``tile``-px tile of the whole-frame output.

What it does:

- **Student:** the bundle's ``student.onnx`` loaded into torch (:func:`tir.engines.training.qat.load_onnx`,
  onnx2torch); the shipped student has no torch checkpoint. Trained: the Conv / ConvTranspose
  weights and biases whose initialiser is a module parameter (a dotted name, as
  ``torch.onnx.export`` names them: ``net.stem.weight``) outside the ``frozen`` parts (default the
  tone and field heads, which act on whole-frame statistics a crop does not have). Not trained:
  the constants the export folded into convs (``down_w``, ``up_w``, ``tone_w``, ``field_pool_w``:
  no dot) and the prompt table (a MatMul initialiser). The trained convs are written back by name
  (:func:`tir.engines.training.qat.write_back`).
- **Teachers:** each task's route ONNX of the bundle on ONNX Runtime, on the same whole frames,
  computed once per pool frame (and again when it is re-degraded); ``clean``: the identity.
  **Anchored** tasks (``anchor``) take the source student's own output instead (its ONNX on ONNX
  Runtime, that task's one-hot prompt): self-distillation. Why: on a task where the shipped
  student is *better* than its route (docs/student.md, Session 17: BN +0.45, CBN +0.42 dB on every
  val frame), the route as the target pulls the student down to the route, and the body shared by
  every prompt moves while blur and contrast are taught (run 1 lost 0.24 dB on CBN). With the
  student's own output as the target, the anchored tasks' loss is zero at step 0 and any drift
  away from what shipped is a loss. ``anchor="auto"`` (:func:`anchor_tasks`): the tasks whose
  recorded student val PSNR (manifest ``student.metrics.val_psnr``) is at least the route's
  (``teacher_val_psnr``), the tasks where the student is the better target.
- **Data:** per task a pool of whole train frames degraded with the task's spec (the bundle's
  recorded spec, else the built-in of that name), a quarter re-degraded every
  ``refresh_every`` steps; each of a step's ``batch`` whole frames draws its slot (``clean``
  with ``clean_prob``, else task T with probability w_T / Σ w,
  :func:`tir.engines.training.distill.sampling_probabilities`) and a frame of that slot's pool
  (upright as stored: the field head's correction depends on where the sky is).
- **Schedule:** Adam at ``lr`` peak, 5 % warm-up then cosine to 1 %
  (:meth:`tir.engines.training.distill.Distiller.lr_factor`), until ``steps`` or ``max_minutes``.
- **Choice (val, never test):** every ``val_every`` steps each task's seeded val set
  (:func:`tir.engines.degrade.make_eval_set`, ``val_limit`` whole frames) is restored by the student
  (one-hot prompt) and scored in PSNR against the clean frames. The chosen checkpoint has the best
  mean over the tasks among those where no *guarded* task (default: the tasks the source bundle's
  ``auto_deploy`` table runs on the student) fell more than ``guard_db`` below its step-0 value;
  step 0 (the shipped student) is always a candidate.

Training only (torch); nothing under edge/ or the engines' runtime imports this module.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .. import degrade as deg
from ..backends.onnxruntime import ort_session
from ..metrics import psnr

log = logging.getLogger("tir.student_tune")

CLEAN = "clean"
#: parts of the student not trained by default: their statistics are whole-frame ones
FROZEN_PARTS = ("tone", "field")
STATE_FILE = "state.json"
STUDENT_FILE = "student.onnx"
#: the student ONNX's prompt table initialiser ((K, D): one row per slot; StudentNet.prompt_table)
PROMPT_TABLE = "net.prompt_table"


@dataclass
class TuneSettings:
    """Settings of :func:`tune` (units in the field comments)."""
    bundle: str                              # source bundle: its student.onnx and its routes
    data: Optional[str] = None               # registered sets (default: the student's training data)
    steps: int = 4000                        # optimiser steps
    max_minutes: Optional[float] = None      # wall-time budget of the training loop (minutes)
    tile: int = 128                          # side of the loss's tiles (px)
    batch: int = 2                           # whole frames per step
    lr: float = 1e-4                         # peak learning rate (Adam)
    task_weights: Optional[Dict[str, float]] = None   # relative draw weights (tasks not named: 1)
    clean_prob: float = 0.1                  # share of clean (identity) samples
    max_frames: int = 32                     # whole train frames per task pool
    refresh_every: int = 200                 # steps between re-degrading a quarter of each pool
    val_limit: int = 24                      # val frames per task for the checkpoint choice (12 missed a
                                             # 0.24 dB CBN loss that 24 saw: docs/student.md, Session 17)
    val_every: int = 500                     # steps between val evaluations
    guard_db: float = 0.1                    # a guarded task may lose at most this many dB (val)
    guard_tasks: Optional[List[str]] = None  # None: the tasks the source auto_deploy runs on the student
    anchor: object = None                    # None / []: every task's teacher is its route; "auto" or
                                             # [task, ...]: these tasks' teacher is the source student
    frozen: Sequence[str] = FROZEN_PARTS     # parameter-name parts not trained
    prompt_slots: object = None              # None / []: the prompt table frozen; "auto" (the tasks not
                                             # anchored) or [slot, ...]: these slots' rows of it trained
    convs: bool = True                       # False: no conv trained (only the prompt rows)
    seed: int = 0
    threads: int = 1                         # torch and ONNX Runtime intra-op threads
    command: str = ""


def db_loss(pred: torch.Tensor, target: torch.Tensor, tile: Optional[int] = None, eps: float = 1e-10) -> torch.Tensor:
    """Mean over the tiles of log10 of each tile's mean squared error: −PSNR/10 per tile (peak 1),
    averaged, so a tile counts by its error in dB, not by its size.

    Args:
        pred, target: (N, C, H, W) float32 tensors of the same shape (outputs in [0, 1] units).
        tile: tile side in px: each image is cut into ``tile``×``tile`` tiles from its top-left
            corner (a rest narrower than ``tile`` at the bottom and right is left out; a side
            shorter than ``tile`` is one tile); None: each image is one tile.
        eps: added to each tile's MSE (a perfect tile stays finite).

    Returns:
        0-d float32 tensor. Source: PSNR = 10·log10(1 / MSE); per image, the same loss as
        :func:`tir.engines.training.qat.finetune`.
    """
    err = (pred - target) ** 2
    if tile is not None:
        n, c, h, w = err.shape
        th, tw = min(int(tile), h), min(int(tile), w)
        err = err[:, :, : h - h % th, : w - w % tw]
        err = err.reshape(n, c, h // th, th, w // tw, tw).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, th, tw)
    mse = torch.mean(err, dim=tuple(range(1, err.dim())))
    return torch.mean(torch.log10(mse + eps))


def trainable_convs(gm: nn.Module, frozen: Sequence[str] = FROZEN_PARTS) -> List[nn.Module]:
    """The converted Conv2d / ConvTranspose2d modules of ``gm`` (:func:`~tir.engines.training.qat.load_onnx`)
    whose weight initialiser is a module parameter (a dotted name, e.g. ``net.stem.weight``)
    with no dotted part in ``frozen`` (e.g. ``net.tone.fc1.weight`` is frozen by ``tone``);
    the export's folded constants (``down_w``: no dot) are never returned."""
    out = []
    for mod in gm.modules():
        if not isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        inputs = getattr(mod, "onnx_inputs", ())
        if len(inputs) < 2 or "." not in inputs[1]:
            continue
        if set(inputs[1].split(".")[:-1]) & set(frozen):
            continue
        out.append(mod)
    return out


def anchor_tasks(student: Mapping, tasks: Sequence[str]) -> List[str]:
    """The tasks of ``tasks`` whose recorded student val PSNR is at least the route's: the bundle
    manifest's ``student`` entry's ``metrics.val_psnr[T] >= metrics.teacher_val_psnr[T]`` (dB, the
    same val frames, both on ONNX Runtime). On those the shipped student's output is closer to the
    clean frame than the route's, so it is the better distillation target (``anchor="auto"``).

    Raises:
        ValueError: the entry records no ``val_psnr`` / ``teacher_val_psnr`` (name the tasks instead).
    """
    m = (student or {}).get("metrics") or {}
    s, t = m.get("val_psnr") or {}, m.get("teacher_val_psnr") or {}
    if not s or not t:
        raise ValueError("anchor auto needs the student's metrics.val_psnr and teacher_val_psnr in the manifest; "
                         "name the anchored tasks instead")
    return [k for k in tasks if k in s and k in t and float(s[k]) >= float(t[k])]


def prompt_rows(which: object, prompts: Sequence[str], anchor: Sequence[str], tasks: Sequence[str]) -> List[str]:
    """The prompt slots whose rows of the student's prompt table are trained (``prompt_slots``):
    ``which`` None or []: none; ``"auto"``: the tasks of ``tasks`` not in ``anchor`` (the tasks
    whose target is their route); else the named slots. Why rows: the network forms its prompt as
    p = w·P (w the (N, K) mixing weights, P the (K, D) table), so a change of row k moves the output
    only where w_k ≠ 0; a one-hot prompt of any other slot gives the shipped output exactly, and
    the tone head (its MLP reads p), the field head (its FiLM) and every block's FiLM are steered
    per task by the trained row.

    Raises:
        ValueError: a name that is not a slot of ``prompts``, an anchored task named, or a string
            other than ``"auto"``.
    """
    if not which:
        return []
    if isinstance(which, str):
        if which != "auto":
            raise ValueError(f"prompt slots {which!r}: 'auto' or a list of slots")
        return [t for t in tasks if t not in anchor and t in prompts]
    names = list(which)
    unknown = [t for t in names if t not in prompts]
    if unknown:
        raise ValueError(f"prompt slots {unknown} are not slots of the student ({', '.join(prompts)})")
    held = [t for t in names if t in anchor]
    if held:
        raise ValueError(f"prompt slots {held} are anchored: their rows stay as shipped")
    return names


def choose(history: List[dict], guard: Sequence[str], guard_db: float) -> dict:
    """The chosen val entry of ``history`` (entries {"step", "psnr": {task: dB}, "mean"}; the
    first one is step 0): the best ``mean`` among entries where every ``guard`` task is at least
    its step-0 PSNR − ``guard_db``; the earliest wins a tie. The step-0 entry always qualifies.

    Raises:
        ValueError: empty ``history``.
    """
    if not history:
        raise ValueError("no val entries to choose from")
    base = history[0]["psnr"]
    ok = [h for h in history if all(h["psnr"][t] >= base[t] - guard_db for t in guard)]
    return max(ok, key=lambda h: (h["mean"], -h["step"]))


class _Pools:
    """Per slot, whole train frames, their degraded copies (``clean``: the frames themselves) and
    the teacher's output of each (``teach``: (n, 1, H, W) float32 in, (n, 1, H, W) float32 out)."""

    def __init__(self, clean: np.ndarray, specs: Mapping[str, object], max_frames: int, seed: int, teach):
        self.rng = np.random.default_rng(seed)
        self.clean = np.asarray(clean, np.float32)
        self.specs = dict(specs)
        self.teach = teach
        self.idx: Dict[str, np.ndarray] = {}
        self.degraded: Dict[str, np.ndarray] = {}
        self.target: Dict[str, np.ndarray] = {}
        n = min(int(max_frames), len(self.clean))
        for slot in [*self.specs, CLEAN]:
            self.idx[slot] = np.sort(self.rng.choice(len(self.clean), n, replace=False))
            base = self.clean[self.idx[slot]]
            self.degraded[slot] = base if slot == CLEAN else deg.degrade(base, self.specs[slot], self.rng)
            self.target[slot] = self._teach(slot, np.arange(n))

    def _teach(self, slot: str, k: np.ndarray) -> np.ndarray:
        """(len(k), H, W) float32: the teacher's output of frames ``k`` of ``slot``'s pool, one by one."""
        return np.stack([self.teach(slot, self.degraded[slot][i][None, None].copy())[0, 0] for i in k])

    def refresh(self, fraction: float = 0.25) -> None:
        """Re-degrade a random ``fraction`` of every task's pool (new parameters from the pool's rng)
        and run the teacher on those frames again."""
        for slot, spec in self.specs.items():
            n = max(1, int(len(self.idx[slot]) * fraction))
            k = self.rng.choice(len(self.idx[slot]), n, replace=False)
            self.degraded[slot][k] = deg.degrade(self.clean[self.idx[slot][k]], spec, self.rng)
            self.target[slot][k] = self._teach(slot, k)

    def frames(self, slot: str, n: int):
        """(degraded, teacher output): two (n, 1, H, W) float32 arrays of ``n`` random frames of
        ``slot``'s pool."""
        k = self.rng.integers(len(self.idx[slot]), size=n)
        return self.degraded[slot][k][:, None].copy(), self.target[slot][k][:, None].copy()


class StudentTuner:
    """Loads the bundle, the student graph, the teachers and the data; :meth:`train` runs the
    fine-tuning, :meth:`write` the bundle. See the module docstring.

    Args:
        settings: :class:`TuneSettings`.
        work_dir: folder for ``state.json``, ``tune.log`` and the tuned ``student.onnx`` (made).
        train_clean, val_clean: (N, H, W) float32 clean frames in [0, 1] (default: ``settings.data``'s
            train and val splits, train.load_split), cut to the student's multiple.

    Raises:
        BundleError: the bundle cannot be loaded or has no student.
        ValueError: a ``task_weights`` / ``guard_tasks`` / ``anchor`` name that is not a route, an
            ``anchor`` string other than ``"auto"``, ``anchor="auto"`` on a manifest without the
            student's val metrics (:func:`anchor_tasks`), or a ``tile`` or ``batch`` below 1.
    """

    def __init__(self, settings: TuneSettings, work_dir, train_clean: Optional[np.ndarray] = None,
                 val_clean: Optional[np.ndarray] = None):
        from ..bundle import BundleError, load_bundle
        from .distill import sampling_probabilities
        from .qat import load_onnx
        from .train import crop_to_multiple, load_split, open_work_dir

        self.s = settings
        self.bundle = load_bundle(settings.bundle)
        if self.bundle.student_path is None:
            raise BundleError(f"bundle {self.bundle.path} has no student to fine-tune")
        self.tasks = list(self.bundle.tasks)
        self.prompts = list(self.bundle.student["prompts"])
        self.sampling = sampling_probabilities(self.tasks, settings.task_weights, settings.clean_prob)
        auto = (self.bundle.auto_deploy or {}).get("tasks", {})
        self.guard = list(settings.guard_tasks) if settings.guard_tasks is not None else \
            [t for t in self.tasks if auto.get(t) == "student"]
        unknown = [t for t in self.guard if t not in self.tasks]
        if unknown:
            raise ValueError(f"guard tasks {unknown} are not routes of {self.bundle.path} ({', '.join(self.tasks)})")
        if settings.anchor == "auto":
            self.anchor = anchor_tasks(self.bundle.student, self.tasks)
        elif isinstance(settings.anchor, str):
            raise ValueError(f"anchor {settings.anchor!r}: 'auto' or a list of tasks")
        else:
            self.anchor = list(settings.anchor or [])
        unknown = [t for t in self.anchor if t not in self.tasks]
        if unknown:
            raise ValueError(f"anchor tasks {unknown} are not routes of {self.bundle.path} ({', '.join(self.tasks)})")
        self.multiple = math.lcm(int(self.bundle.multiple), 32)
        if settings.tile < 1 or settings.batch < 1:
            raise ValueError(f"tile {settings.tile} and batch {settings.batch} must be at least 1")
        self.work = open_work_dir(work_dir, settings.threads, log, "tune.log")
        self.data = settings.data or ((self.bundle.student.get("training") or {}).get("data"))
        if train_clean is None:
            train_clean = load_split(self.data, "train")
        if val_clean is None:
            val_clean = load_split(self.data, "val")
        self.train_clean = crop_to_multiple(np.asarray(train_clean, np.float32), self.multiple)
        val_all = crop_to_multiple(np.asarray(val_clean, np.float32), self.multiple)
        rng = np.random.default_rng(settings.seed)
        self.val_all = val_all
        self.val_clean = val_all if len(val_all) <= settings.val_limit else \
            val_all[np.sort(rng.choice(len(val_all), settings.val_limit, replace=False))]
        self.specs = {t: self.spec(t) for t in self.tasks}
        self.source = Path(self.bundle.student_path)
        self.gm = load_onnx(self.source)
        for p in self.gm.parameters():
            p.requires_grad_(False)
        self.convs = trainable_convs(self.gm, settings.frozen) if settings.convs else []
        self.params = [p for c in self.convs for p in (c.weight, c.bias) if p is not None]
        self.prompt_slots = prompt_rows(settings.prompt_slots, self.prompts, self.anchor, self.tasks)
        self.table = self._prompt_table() if self.prompt_slots else None
        if self.table is not None:
            self.params.append(self.table)
        if not self.params:
            raise ValueError("nothing to train: no conv (convs off) and no prompt row")
        for p in self.params:
            p.requires_grad_(True)
        self.teachers = {t: ort_session(self.bundle.route_path(t), settings.threads) for t in self.tasks
                         if t not in self.anchor}
        self.anchor_session = ort_session(self.source, settings.threads) if self.anchor else None
        self.eye = np.eye(len(self.prompts), dtype=np.float32)
        self.history: List[dict] = []
        self.best: Optional[Dict[int, torch.Tensor]] = None   # the chosen entry's trained values
        self.state: dict = {"settings": asdict(settings), "source_sha256": self.bundle.student["sha256"],
                            "trained": [c.onnx_inputs[1] for c in self.convs], "guard": self.guard,
                            "prompt_rows": self.prompt_slots,
                            "anchor": self.anchor,
                            "sampling": self.sampling, "data": self.data}
        log.info("student %s: %d convs trained (%d parameters), guard %s, anchored to itself %s", self.source,
                 len(self.convs), sum(p.numel() for p in self.params), self.guard, self.anchor)

    def _prompt_table(self) -> nn.Parameter:
        """The converted graph's prompt table (the initialiser that the MatMul with the ``prompt``
        input reads: ``PROMPT_TABLE`` in a student exported by tir distill; its name is kept in
        :attr:`table_init`), made a trainable (K, D) float32 parameter in place of its buffer,
        with a gradient hook that zeroes every row outside :attr:`prompt_slots`.

        Raises:
            ValueError: the graph has no such MatMul or its table is not (K, D) with K the slots.
        """
        import onnx
        from onnx import numpy_helper

        graph = onnx.load(os.fspath(self.source)).graph
        inits = {i.name: i for i in graph.initializer}
        node = next((n for n in graph.node if n.op_type == "MatMul" and list(n.input)[:1] == ["prompt"]
                     and len(n.input) > 1 and n.input[1] in inits), None)
        if node is None:
            raise ValueError(f"{self.source}: no MatMul of the prompt with an initialiser (the prompt table)")
        self.table_init = node.input[1]      # PROMPT_TABLE in a student exported by tir distill
        ref = numpy_helper.to_array(inits[self.table_init])
        if ref.ndim != 2 or ref.shape[0] != len(self.prompts):
            raise ValueError(f"{self.table_init} of {self.source} is {ref.shape}, not one row per slot ({len(self.prompts)})")
        holder = self.gm.initializers
        name = next((n for n, b in holder.named_buffers(recurse=False)
                     if tuple(b.shape) == ref.shape and np.array_equal(b.detach().numpy(), ref)), None)
        if name is None:
            raise ValueError(f"the converted graph holds no buffer equal to {self.table_init}")
        value = getattr(holder, name)
        delattr(holder, name)
        table = nn.Parameter(value.detach().clone().float())
        setattr(holder, name, table)
        mask = torch.zeros(len(self.prompts), 1)
        mask[[self.prompts.index(s) for s in self.prompt_slots]] = 1.0
        table.register_hook(lambda g: g * mask)
        self.table_name = name
        return table

    def spec(self, task: str):
        """``task``'s degradation spec: the bundle's recorded one, else the built-in of that name."""
        info = self.bundle.task_info(task)
        return deg.DegradationSpec.from_json(info["spec"]) if info.get("spec") else deg.load_spec(task)

    def prompt(self, slots: Sequence[str]) -> np.ndarray:
        """(N, K) float32 one-hot prompt weights of ``slots`` (slot names of the student)."""
        return self.eye[[self.prompts.index(s) for s in slots]]

    def teacher(self, slot: str, x: np.ndarray) -> np.ndarray:
        """The teacher's output of ``x`` ((n, 1, h, w) float32): ``slot``'s route on ONNX Runtime,
        for an anchored task the source student (ONNX Runtime, ``slot``'s one-hot prompt),
        ``clean``: ``x`` itself."""
        if slot == CLEAN:
            return x
        if slot in self.anchor:
            return self.anchor_session.run(None, {"input": x, "prompt": self.prompt([slot] * len(x))})[0]
        return self.teachers[slot].run(None, {"input": x})[0]

    def draw(self, pools: _Pools, rng: np.random.Generator):
        """One batch: (x (B, 1, H, W), prompt (B, K), teacher output (B, 1, H, W)), float32 tensors
        (B = ``batch`` whole frames)."""
        p = np.array([self.sampling[t] for t in self.tasks])
        p = p / p.sum()
        slots = [CLEAN if rng.random() < self.s.clean_prob else self.tasks[int(rng.choice(len(self.tasks), p=p))]
                 for _ in range(self.s.batch)]
        xs, ws, ts = [], [], []
        for slot in dict.fromkeys(slots):
            x, t = pools.frames(slot, slots.count(slot))
            xs.append(x)
            ws.append(self.prompt([slot] * len(x)))
            ts.append(t)
        return tuple(torch.from_numpy(np.concatenate(a)) for a in (xs, ws, ts))

    def val_set(self, task: str, clean: np.ndarray) -> np.ndarray:
        """Seeded degraded copies of ``clean`` ((N, H, W) float32 in [0, 1]) for ``task``
        (degrade.make_eval_set with the seed): (N, H, W) float32 in [0, 1]."""
        return deg.make_eval_set(clean, self.specs[task], seed=self.s.seed)

    def evaluate(self, clean: Optional[np.ndarray] = None) -> Dict[str, float]:
        """{task: mean per-frame PSNR (dB) of the student in torch, one-hot prompt, output clipped
        to [0, 1]} on ``clean`` ((N, H, W) float32 in [0, 1]; default the checkpoint-choice val
        frames)."""
        clean = self.val_clean if clean is None else clean
        self.gm.eval()
        out = {}
        with torch.no_grad():
            for task in self.tasks:
                deg_frames = self.val_set(task, clean)
                w = torch.from_numpy(self.prompt([task]))
                scores = [psnr(self.gm(torch.from_numpy(f[None, None].copy()), w).clamp(0, 1).numpy()[0, 0], c)
                          for f, c in zip(deg_frames, clean)]
                out[task] = float(np.mean(scores))
        return out

    def _validate(self, step: int) -> None:
        scores = self.evaluate()
        entry = {"step": step, "psnr": {t: round(v, 4) for t, v in scores.items()},
                 "mean": round(float(np.mean(list(scores.values()))), 4)}
        self.history.append(entry)
        best = choose(self.history, self.guard, self.s.guard_db)
        if best is entry:
            self.best = {id(p): p.detach().clone() for p in self.params}
        log.info("val step %d: mean %.2f dB (%s)%s", step, entry["mean"],
                 ", ".join(f"{t} {v:.2f}" for t, v in scores.items()), " best" if best is entry else "")
        self.state.update(history=self.history, best=best)
        self._save_state()

    def _save_state(self) -> None:
        (self.work / STATE_FILE).write_text(json.dumps(self.state, indent=1), encoding="utf-8")

    def train(self, progress: bool = True) -> dict:
        """Run the fine-tuning (val at step 0, every ``val_every`` steps and at the end), load the
        chosen weights and write the tuned student ONNX into the work dir.

        Returns:
            ``state``: settings, ``history`` (val entries), ``best`` (the chosen entry), ``steps``,
            ``wall_s``, ``loss_first`` / ``loss_last`` (mean dB loss of the first / last 10 % of
            the steps, log10 MSE units), ``student`` (path of the tuned ONNX), ``parity_max_abs_err``.
        """
        from tqdm import tqdm

        from .distill import Distiller

        torch.manual_seed(self.s.seed)
        rng = np.random.default_rng(self.s.seed + 1)
        pools = _Pools(self.train_clean, self.specs, self.s.max_frames, self.s.seed + 2, self.teacher)
        opt = torch.optim.Adam(self.params, lr=self.s.lr)
        budget = None if self.s.max_minutes is None else 60.0 * float(self.s.max_minutes)
        self._validate(0)
        losses: List[float] = []
        t0 = time.perf_counter()
        step = 0
        bar = tqdm(total=self.s.steps, desc="student tune", unit="step", disable=not progress)
        try:
            while step < self.s.steps:
                elapsed = time.perf_counter() - t0
                if budget is not None and elapsed >= budget:
                    break
                frac = max(step / self.s.steps, elapsed / budget if budget else 0.0)
                for g in opt.param_groups:
                    g["lr"] = self.s.lr * Distiller.lr_factor(min(frac, 1.0))
                x, w, t = self.draw(pools, rng)
                self.gm.train()
                loss = db_loss(self.gm(x, w), t, self.s.tile)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                if step % self.s.refresh_every == 0:
                    pools.refresh()
                if step % self.s.val_every == 0 and step < self.s.steps:
                    self._validate(step)
        finally:
            bar.close()
        if not self.history or self.history[-1]["step"] != step:
            self._validate(step)
        best = self.state["best"]
        if best["step"] == 0:
            log.info("no step beat the shipped student on val: it is kept as it was")
        with torch.no_grad():
            for p in self.params:
                p.copy_(self.best[id(p)])
        tenth = max(1, len(losses) // 10)
        self.state.update(steps=step, wall_s=round(time.perf_counter() - t0, 1),
                          loss_first=float(np.mean(losses[:tenth])) if losses else None,
                          loss_last=float(np.mean(losses[-tenth:])) if losses else None)
        path = self.export()
        self.state["student"] = os.fspath(path)
        self._save_state()
        log.info("chose step %d (val mean %.2f dB); %d steps in %.0f s", best["step"], best["mean"], step,
                 self.state["wall_s"])
        return self.state

    def export(self) -> Path:
        """Write the trained convs (and the trained prompt table, :attr:`prompt_slots`) back into a
        copy of the source ``student.onnx`` (``work/student.onnx``) and check it on ONNX Runtime against the torch graph (one random
        frame per prompt); the largest |Δ| is ``state["parity_max_abs_err"]``.

        Raises:
            RuntimeError: ONNX Runtime and torch differ by more than 1e-4.
        """
        from .qat import write_back

        path = self.work / STUDENT_FILE
        extra = {self.table_init: self.table} if self.table is not None else None
        self.state["written"] = write_back(self.gm, self.source, path, extra=extra)
        sess = ort_session(path, self.s.threads)
        rng = np.random.default_rng(self.s.seed + 3)
        x = rng.random((1, 1, 2 * self.multiple, 3 * self.multiple), dtype=np.float32)
        err = 0.0
        self.gm.eval()
        with torch.no_grad():
            for j in range(len(self.prompts)):
                w = self.eye[j:j + 1]
                ref = self.gm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
                got = sess.run(None, {"input": x, "prompt": w})[0]
                err = max(err, float(np.abs(ref - got).max()))
        self.state["parity_max_abs_err"] = err
        if err > 1e-4:
            raise RuntimeError(f"tuned student on ONNX Runtime differs from torch by {err:.2e} (> 1e-4)")
        return path

    def _route(self, task: str):
        """``task``'s route session (made on first use for an anchored task)."""
        if task not in self.teachers:
            self.teachers[task] = ort_session(self.bundle.route_path(task), self.s.threads)
        return self.teachers[task]

    def val_table(self, path: Path) -> Dict[str, Dict[str, float]]:
        """Student ONNX at ``path`` and every route on every val frame on ONNX Runtime:
        {"val_psnr": {task: dB}, "teacher_val_psnr": {task: dB}} (mean per-frame PSNR, outputs
        clipped to [0, 1]), the numbers the manifest records."""
        student = ort_session(path, self.s.threads)
        out: Dict[str, Dict[str, float]] = {"val_psnr": {}, "teacher_val_psnr": {}}
        for task in self.tasks:
            frames = self.val_set(task, self.val_all)
            w = self.prompt([task])
            s_scores, t_scores = [], []
            for f, c in zip(frames, self.val_all):
                x = f[None, None].copy()
                s_scores.append(psnr(np.clip(student.run(None, {"input": x, "prompt": w})[0][0, 0], 0, 1), c))
                t_scores.append(psnr(np.clip(self._route(task).run(None, {"input": x})[0][0, 0], 0, 1), c))
            out["val_psnr"][task] = round(float(np.mean(s_scores)), 4)
            out["teacher_val_psnr"][task] = round(float(np.mean(t_scores)), 4)
        return out

    def write(self, out_dir, deploy: str = "routes", margin_db: Optional[float] = None):
        """Write ``out_dir``: a copy of the source bundle with the tuned student
        (:func:`tir.engines.bundle.add_student`: the manifest's student entry and sha256 written by
        the project's code path). The entry keeps the source's preset, prompts, GMAC, parameters
        and config, records this run under ``training`` (``init_from: onnx``) and its val numbers
        on every val frame under ``metrics``. Returns the Bundle."""
        from ..bundle import DEFAULT_AUTO_MARGIN_DB, add_student

        path = self.work / STUDENT_FILE
        table = self.val_table(path)
        self.state["metrics"] = dict(table, val_frames=len(self.val_all))
        self._save_state()
        src = self.bundle.student
        info = {k: src[k] for k in ("preset", "prompts", "gmac_640x512", "params", "config") if k in src}
        info["metrics"] = {**table, "val_frames": len(self.val_all), "best": self.state.get("best"),
                           "parity_max_abs_err": self.state.get("parity_max_abs_err")}
        info["training"] = {"teachers": str(self.bundle.path), "data": self.data, "command": self.s.command,
                            "init_from": "onnx", "source_sha256": src.get("sha256"),
                            "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                         for k, v in asdict(self.s).items()},
                            "sampling": self.sampling, "trained": self.state.get("trained"),
                            "steps": self.state.get("steps"), "wall_s": self.state.get("wall_s"),
                            "history": self.state.get("history"), "previous": src.get("training"),
                            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return add_student(self.bundle.path, out_dir, path, info, deploy=deploy,
                           margin_db=DEFAULT_AUTO_MARGIN_DB if margin_db is None else margin_db)
