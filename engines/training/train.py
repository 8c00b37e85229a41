"""Training of the open-world model: the whole continual sequence, resumable by stage.

Stages, in order (ecmrnet.md §1.2): ``pretrain`` (clean→clean: stem, reconstruction and clean
branch), then per task ``<task>-train`` → ``<task>-prune`` → ``<task>-finetune``, then
``router`` (tir.engines.training.router_train.train_router) and ``bundle`` (one ONNX per route through
tir.engines.training.export.export_onnx, tir.engines.bundle.write_bundle). After every stage the model
(``model.pt``: architecture + state dict) and ``state.json`` (finished stages and their
metrics) are written to the work dir; a restart loads them and skips finished stages.

Training pairs come from a pool of whole degraded frames per task (crops + flips drawn per
step; a quarter of the pool is re-degraded every ``refresh_every`` steps). Degrading whole
frames keeps the non-uniformity map's geometry of the recipe (ecmrnet.md §1.3), and costs
~1.5-11 ms per 640×512 frame in engines/degrade.py, measured on this machine.
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from tir.edge.errors import InputError

from .. import degrade as deg
from .continual import CLEAN, OpenWorldModel, RouteModule
from ..engine import MULTIPLE_KEY
from .models.ecmrnet import frame_tone_stats
from .losses import RestorationLoss
from .macs import count_macs
from ..metrics import psnr
from .pruning import apply_plans, collect_picks, select_groups

log = logging.getLogger("tir.train")

FRAME = (1, 1, 512, 640)          # the project's reference frame for MAC counts
SMALL_FRAME = (1, 1, 128, 160)    # same aspect, multiple of 32, for cheap MAC ratios while choosing p
P_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass
class TrainSettings:
    """The settings of one training run (``tir train`` builds them from its options, tools/train.py;
    ``tir learn`` for one new task); recorded in ``state.json`` and the bundle manifest.

    Attributes:
        preset: the model preset (``ecmrnet:NAME`` in the model registry: ``edge``, ``tiny``, ``paper``).
        tasks: the degradation tasks, trained in this order (default degrade.TASKS).
        steps: training steps per single-degradation task; compound_steps: per compound task
            (None: ``steps``); pretrain_steps, finetune_steps, field_steps: of those stages.
        field_batch: whole frames per field-head step; crop: crop side in px; batch: crops per step.
        lr: peak AdamW learning rate; seed: seeds pools, crops and initialisation; threads: torch
            CPU threads.
        data: registered data sets ``"a,b"`` or a RoadScene folder (None: the shared RoadScene set).
        randomize: domain-randomise the clean pool (engines/training/domain.py).
        group: channels per pruning group (keeps widths multiples of 8).
        prune_p: the pick-count threshold p of the structural-entropy pruning (ecmrnet.md §1.2);
            None: the smallest p on :data:`P_GRID` removing ``target_reduction`` (a fraction,
            0.40 = 40 %) of the branch's MACs; prune_samples: degraded frames it looks at.
        refresh_every: steps between re-degrading a quarter of the pool.
        router, router_steps: train the degradation router, for that many steps; router_from: a
            folder with router.json + ONNX to reuse instead; router_recalibrate: re-choose a
            reused router's unknown thresholds on this val set.
        bundle_dir: write the bundle there at the end (None: no bundle stage).
        val_limit: evaluate on the first N val frames (tests); init_from: task -> branch to copy
            (default: clean); command: the command line, for the record.
    """
    preset: str = "edge"
    tasks: Sequence[str] = deg.TASKS
    steps: int = 1500                  # training steps per single-degradation task
    compound_steps: Optional[int] = None   # per compound task (None: ``steps``)
    pretrain_steps: int = 600
    finetune_steps: int = 500
    field_steps: int = 600             # whole-frame steps of a route's field head (presets with ``field``)
    field_batch: int = 8
    crop: int = 128
    batch: int = 12
    lr: float = 2e-3
    seed: int = 0
    threads: int = 2
    data: Optional[str] = None         # registered sets "a,b" or a RoadScene folder (default: roadscene)
    randomize: bool = False            # domain-randomise the clean pool (engines/training/domain.py)
    group: int = 8                     # channels per pruning group (keeps widths multiples of 8)
    prune_p: Optional[float] = None    # None: smallest p on P_GRID reaching target_reduction
    target_reduction: float = 0.40
    prune_samples: int = 32
    refresh_every: int = 100
    router: bool = True
    router_steps: int = 1500
    router_from: Optional[str] = None  # folder with router.json + its ONNX from train_router: reuse it
    router_recalibrate: bool = True    # re-choose a reused router's unknown thresholds on this val set
    bundle_dir: Optional[str] = None
    val_limit: Optional[int] = None    # evaluate on the first N val frames (tests)
    init_from: Optional[Dict[str, str]] = None   # task -> branch to copy (default: clean)
    command: str = ""


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

class DegradedPool:
    """Whole clean frames and a degraded copy of each per task; random aligned crops."""

    def __init__(self, clean: np.ndarray, spec, seed: int, tone_pool: Optional[int] = None,
                 randomize: bool = False):
        self.base = np.asarray(clean, dtype=np.float32)
        self.spec = deg.load_spec(spec)
        self.rng = np.random.default_rng(seed)
        self.tone_pool = tone_pool
        self.randomize = bool(randomize)
        # the clean target is the (randomised) rendering; its degraded copy is made from it
        self.clean = self._render(np.arange(len(self.base)))
        self.degraded = deg.degrade(self.clean, self.spec, self.rng)
        self.stats = self._stats(np.arange(len(self.clean)))

    def _render(self, idx: np.ndarray) -> np.ndarray:
        """Clean frames ``idx``, re-rendered as another camera might (engines/training/domain.py) when
        the pool randomises; a copy of the base frames otherwise."""
        if not self.randomize:
            return self.base[idx].copy()
        from .domain import randomize

        return randomize(self.base[idx], self.rng)

    def _stats(self, idx: np.ndarray) -> Optional[torch.Tensor]:
        """Whole-frame tone statistics of degraded frames ``idx`` (None without a tone head)."""
        return frame_tone_stats(self.degraded[idx], self.tone_pool)

    def refresh(self, fraction: float = 0.25) -> np.ndarray:
        """Re-degrade a random ``fraction`` of the pool (re-rendering the clean frames first when the
        pool randomises) and update their tone statistics.

        Returns:
            (n,) int64 indices of the frames that changed, n = max(1, int(N·fraction)).
        """
        n = max(1, int(len(self.clean) * fraction))
        idx = self.rng.choice(len(self.clean), n, replace=False)
        if self.randomize:
            self.clean[idx] = self._render(idx)
        self.degraded[idx] = deg.degrade(self.clean[idx], self.spec, self.rng)
        if self.stats is not None:
            self.stats[idx] = self._stats(idx)
        return idx

    def batch(self, size: int, crop: int):
        """(degraded crops, clean crops, whole-frame tone stats of each crop's frame or None)."""
        n, h, w = self.clean.shape
        crop_h, crop_w = min(crop, h), min(crop, w)
        idx = self.rng.integers(0, n, size)
        ys = self.rng.integers(0, h - crop_h + 1, size)
        xs = self.rng.integers(0, w - crop_w + 1, size)
        inp = np.empty((size, 1, crop_h, crop_w), np.float32)
        tgt = np.empty_like(inp)
        for k in range(size):
            a = self.degraded[idx[k], ys[k]:ys[k] + crop_h, xs[k]:xs[k] + crop_w]
            b = self.clean[idx[k], ys[k]:ys[k] + crop_h, xs[k]:xs[k] + crop_w]
            if self.rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if self.rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            inp[k, 0], tgt[k, 0] = a, b
        stats = None if self.stats is None else self.stats[idx]
        return torch.from_numpy(inp), torch.from_numpy(tgt), stats


def load_split(data: Optional[str], split: str) -> np.ndarray:
    """Clean frames of ``split`` as (N, H, W) float32 [0, 1]: ``data`` names registered data sets
    (``roadscene,hit_uav``: engines/training/datasets.py, brought to 640×512 at native scale) or a
    RoadScene folder (None: the shared RoadScene set)."""
    from . import datasets as dsets

    names = [n.strip() for n in (data or "").split(",") if n.strip()]
    if names and all(n in dsets.DATASETS or n == dsets.ALL for n in names):
        return dsets.load_unit_frames(names, split)
    return deg.load_roadscene(split, data)


def crop_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    """``images`` (..., H, W), any dtype, cut at the bottom and right to H and W multiples of
    ``multiple`` px (a view, no copy).
    """
    h, w = images.shape[-2:]
    return images[..., : h - h % multiple, : w - w % multiple]


# ---------------------------------------------------------------------------------------------
# evaluation and costs
# ---------------------------------------------------------------------------------------------

def route_outputs(model: OpenWorldModel, task: str, degraded: np.ndarray, batch: int = 4,
                  field: bool = True) -> torch.Tensor:
    """``task``'s route on (N,H,W) frames, ``batch`` at a time, without autograd: N×1×H×W."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model.route_forward(torch.from_numpy(degraded[i:i + batch, None]), task, field=field)
                          for i in range(0, len(degraded), batch)])


def evaluate_route(model: OpenWorldModel, task: str, degraded: np.ndarray, clean: np.ndarray,
                   batch: int = 4, field: bool = True) -> float:
    """Mean per-frame PSNR in dB of ``task``'s route on fixed degraded frames.

    Args:
        degraded: (N, H, W) float32 frames in [0, 1]; H and W multiples of the model's multiple.
        clean: (N, H, W) float32 references in [0, 1].
        batch: frames per forward pass.
        field: run the route's field head.

    Returns:
        The mean PSNR (peak 1.0) of the outputs clipped to [0, 1], in dB.
    """
    y = route_outputs(model, task, degraded, batch, field).clamp(0, 1).numpy()[:, 0]
    return float(np.mean([psnr(a, b) for a, b in zip(y, clean)]))


def route_costs(model: OpenWorldModel, task: str, frame=FRAME) -> dict:
    """Cost of ``task``'s route on one frame of shape ``frame`` (N, 1, H, W), default 640×512.

    Returns:
        {"gmac": whole route, "branch_gmac": the task's own branch + miner + tone and field
        heads, both in GMAC (1e9 MACs, forward hooks on every conv), "params": the route's
        parameter count}.
    """
    report = count_macs(RouteModule(model, task), frame)
    own = (f"model.branches.{task}.", f"model.miners.{task}.", f"model.tones.{task}.", f"model.fields.{task}.")
    own_macs = sum(v for k, v in report.per_layer.items() if k.startswith(own))
    return {"gmac": report.macs / 1e9, "branch_gmac": own_macs / 1e9, "params": model.route_params(task)}


# ---------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------

class ContinualTrainer:
    """Runs (or resumes) the stage sequence in ``work_dir``.

    Raises:
        DegradationError: a task of ``settings.tasks`` is no built-in degradation and no spec
            file nor recorded in the work dir's state.json (checked before anything is trained).
        ValueError: ``settings.crop`` is not a multiple of the network's input multiple
            (``cfg.multiple`` px; checked before anything is trained).
    """

    def __init__(self, settings: TrainSettings, work_dir, train_clean: Optional[np.ndarray] = None,
                 val_clean: Optional[np.ndarray] = None):
        self.s = settings
        self.work = open_work_dir(work_dir, settings.threads, log, "train.log")
        self.state = self._load_state()
        for task in settings.tasks:  # an unknown task is refused before the pretrain stage runs
            if task not in self.state.get("specs", {}):  # (tir learn records its spec there first)
                deg.load_spec(task)
        if train_clean is None:
            train_clean = load_split(settings.data, "train")
        if val_clean is None:
            val_clean = load_split(settings.data, "val")
        if settings.val_limit:
            val_clean = val_clean[: settings.val_limit]
        self.model = self._load_model()
        m = self.model.cfg.multiple
        if settings.crop < m or settings.crop % m:
            # the network's pixel-unshuffle stages need a side divisible by m; any other crop
            # failed at the first training step with a convolution shape error
            raise ValueError(f"crop {settings.crop} px: the {settings.preset} network takes crops whose side is "
                             f"a multiple of {m} px (e.g. {max(m, settings.crop // m * m)}); pick such a --crop")
        self.train_clean = crop_to_multiple(train_clean, m)
        self.val_clean = crop_to_multiple(val_clean, m)
        self.loss = RestorationLoss(settings.crop)
        self._val_sets: Dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- bookkeeping
    def _load_state(self) -> dict:
        path = self.work / "state.json"
        state = {"done": [], "metrics": {}, "started": now_iso(), "wall_s": {}, "runs": []}
        if path.is_file():
            state = load_state_file(path)
        state["settings"] = asdict(self.s)             # the settings of the latest run
        state.setdefault("runs", []).append({"date": now_iso(), "command": self.s.command})
        return state

    def _save(self) -> None:
        torch.save({"architecture": self.model.architecture(), "state_dict": self.model.state_dict()},
                   self.work / "model.pt.tmp")
        os.replace(self.work / "model.pt.tmp", self.work / "model.pt")
        save_state(self.work, self.state)

    def _load_model(self) -> OpenWorldModel:
        path = self.work / "model.pt"
        if path.is_file():
            model = OpenWorldModel.from_checkpoint(load_checkpoint_file(path))
            log.info("resumed from %s (done: %s)", path, ", ".join(self.state["done"]) or "nothing")
            return model
        torch.manual_seed(self.s.seed)
        return OpenWorldModel(self.s.preset)

    def stages(self) -> List[str]:
        """The stage names in order: ``pretrain``; per task ``<task>-train``, ``<task>-prune``,
        ``<task>-finetune`` (and ``<task>-field`` when the preset has a field head); ``router`` when
        ``settings.router``; ``bundle`` when ``settings.bundle_dir``.
        """
        names = ["pretrain"]
        for t in self.s.tasks:
            names += [f"{t}-train", f"{t}-prune", f"{t}-finetune"]
            if self.model.cfg.field:
                names.append(f"{t}-field")
        if self.s.router:
            names.append("router")
        if self.s.bundle_dir:
            names.append("bundle")
        return names

    def run(self) -> dict:
        """Run every stage of :meth:`stages` not yet done, saving ``model.pt`` and ``state.json`` after
        each (``bundle`` always runs again; ``router`` again when ``router_from`` names another
        router). Returns the state dict (``done``, ``metrics``, ``wall_s`` in s, ``settings``,
        ``runs`` ...).
        """
        for stage in self.stages():
            if stage in self.state["done"] and stage != "bundle" and not self._router_changed(stage):
                log.info("stage %s: done, skipped", stage)   # the bundle is always rewritten
                continue
            t0 = time.monotonic()
            log.info("stage %s: start", stage)
            self._run_stage(stage)
            if stage not in self.state["done"]:
                self.state["done"].append(stage)
            self.state["wall_s"][stage] = round(time.monotonic() - t0, 1)
            self._save()
            log.info("stage %s: finished in %.0f s", stage, time.monotonic() - t0)
        return self.state

    def _router_changed(self, stage: str) -> bool:
        """A finished router stage runs again when ``--router-from`` names another router."""
        if stage != "router" or not self.s.router_from:
            return False
        source = (self.state.get("router") or {}).get("source")
        changed = source is not None and Path(source).resolve() != Path(self.s.router_from).resolve()
        if changed:
            log.info("router: --router-from %s differs from the finished stage's %s; running it again",
                     self.s.router_from, source)
        return changed

    def _run_stage(self, stage: str) -> None:
        if stage == "pretrain":
            self.pretrain()
        elif stage == "router":
            self.train_router()
        elif stage == "bundle":
            self.write_bundle(self.s.bundle_dir)
        else:
            task, _, kind = stage.rpartition("-")
            {"train": self.train_task, "prune": self.prune_task, "finetune": self.finetune_task,
             "field": self.field_task}[kind](task)

    # ---------------------------------------------------------------- stages
    @property
    def tone_pool(self) -> Optional[int]:
        """The tone head's statistics pooling in px (8: an 8×8-average frame), or None when the preset
        has no tone head.
        """
        return self.model.cfg.tone_pool if self.model.cfg.tone else None

    def _metrics(self, task: str) -> dict:
        return self.state["metrics"].setdefault(task, {})

    def val_set(self, task: str) -> np.ndarray:
        """``task``'s seeded degraded val frames (degrade.make_eval_set of the val split with ``seed``),
        cached: (N, H, W) float32 in [0, 1], aligned with ``val_clean``.

        Raises:
            DegradationError: as :meth:`spec`.
        """
        if task not in self._val_sets:
            self._val_sets[task] = deg.make_eval_set(self.val_clean, self.spec(task), seed=self.s.seed)
        return self._val_sets[task]

    def spec(self, task: str):
        """``task``'s degradation spec: the one recorded in ``state.json`` (so a resumed run degrades
        as the first did), else the built-in of that name, which is then recorded.

        Raises:
            DegradationError: nothing recorded and no built-in spec of that name.
        """
        specs = self.state.setdefault("specs", {})
        if task in specs:
            return deg.DegradationSpec.from_json(specs[task])
        spec = deg.load_spec(task)
        specs[task] = json.loads(spec.to_json())
        return spec

    def _optimise(self, params, steps: int, forward, pool: DegradedPool, desc: str, lr: float) -> float:
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-5, betas=(0.9, 0.999))
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: (i + 1) / warm if i < warm else
            0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (i - warm) / max(1, steps - warm))))
        self.model.train()
        running = None
        bar = tqdm(range(steps), desc=desc, mininterval=5.0, dynamic_ncols=True)
        for step in bar:
            if step and step % self.s.refresh_every == 0:
                pool.refresh()
            x, y, stats = pool.batch(self.s.batch, self.s.crop)
            loss = self.loss(forward(x, stats), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
            bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            if (step + 1) % 200 == 0:
                log.info("%s step %d/%d loss %.4f", desc, step + 1, steps, running)
        return float(running or 0.0)

    def pretrain(self) -> None:
        """Stage ``pretrain``: clean→clean autoencoder training of the stem, reconstruction and clean
        branch for ``pretrain_steps`` (ecmrnet.md §1.2 stage 0), then freeze them; records the loss
        and the autoencoder's PSNR in dB on the first 4 val frames.
        """
        self.model.unfreeze_autoencoder()
        params = [p for p in self.model.parameters() if p.requires_grad]
        pool = _CleanPool(self.train_clean, self.s.seed)
        loss = self._optimise(params, self.s.pretrain_steps, lambda x, _stats: self.model.autoencode(x), pool,
                              "pretrain", self.s.lr)
        self.model.eval()
        with torch.no_grad():
            x = torch.from_numpy(self.val_clean[:4, None])
            ae = float(np.mean([psnr(a, b) for a, b in
                                zip(self.model.autoencode(x).clamp(0, 1).numpy()[:, 0], self.val_clean[:4])]))
        self.model.freeze_except(None)
        self.state["metrics"]["pretrain"] = {"loss": loss, "val_psnr_autoencoder": ae}
        log.info("pretrain: loss %.4f, autoencoder val PSNR %.2f dB", loss, ae)

    def train_task(self, task: str) -> None:
        """Stage ``<task>-train``: add ``task``'s branch (copied from ``init_from[task]``, default the
        clean branch; a compound task also gets a miner over its parts' frozen branches) and train
        it on crops for ``steps`` (``compound_steps``); records val PSNR in dB before and after and
        the unpruned cost in GMAC per 640×512 frame.

        Raises:
            DegradationError: ``task`` has no degradation spec.
            ValueError: a compound task's parts are not learned yet, or ``init_from`` names no branch.
        """
        parts = deg.COMPOUND_PARTS.get(task, ())
        if task not in self.model.branches:
            init = (self.s.init_from or {}).get(task, CLEAN)
            self.model.add_task(task, parts=parts, init=init)
        steps = self.s.compound_steps if parts and self.s.compound_steps is not None else self.s.steps
        self._train(task, steps, "train", self.s.lr)
        m = self._metrics(task)
        m["val_psnr_degraded"] = float(np.mean([psnr(a, b) for a, b in zip(self.val_set(task), self.val_clean)]))
        m["val_psnr_trained"] = evaluate_route(self.model, task, self.val_set(task), self.val_clean)
        m.update({f"unpruned_{k}": v for k, v in route_costs(self.model, task).items()})
        log.info("%s: val PSNR degraded %.2f -> trained %.2f dB", task, m["val_psnr_degraded"],
                 m["val_psnr_trained"])

    def _train(self, task: str, steps: int, kind: str, lr: float) -> float:
        self.model.freeze_except(task)
        params = self.model.trainable_parameters(task)
        pool = DegradedPool(self.train_clean, self.spec(task), self.s.seed + len(self.state["done"]),
                            self.tone_pool, randomize=self.s.randomize)
        loss = self._optimise(params, steps, lambda x, stats: self.model.route_forward(x, task, stats, field=False),
                              pool,
                              f"{task} {kind}", lr)
        self.model.freeze_except(None)
        self._metrics(task)[f"{kind}_loss"] = loss
        return loss

    def prune_task(self, task: str) -> None:
        """Stage ``<task>-prune``: structural-entropy group picks (ecmrnet.md §1.2 stage 2,
        engines/training/pruning.py) on ``prune_samples`` degraded train frames, then ``prune_p``,
        or the smallest p on :data:`P_GRID` that removes ``target_reduction`` of the branch's MACs
        (measured on :data:`SMALL_FRAME`); records p, the kept inner widths, GMAC before and after
        (per 640×512 frame) and the pruned val PSNR in dB.
        """
        m = self._metrics(task)
        pool = DegradedPool(self.train_clean, self.spec(task), self.s.seed + 7919)
        n = min(self.s.prune_samples, len(pool.clean))
        samples = [torch.from_numpy(pool.degraded[i:i + 2, None]) for i in range(0, n, 2)]
        self.model.eval()
        blocks = _blocks_of(self.model, task)
        plans, means, n_samples = collect_picks(blocks, lambda x: self.model.route_forward(x, task, field=False),
                                                tqdm(samples, desc=f"{task} SE picks", mininterval=5.0),
                                                self.s.group)
        before = route_costs(self.model, task)
        before_small = route_costs(self.model, task, SMALL_FRAME)
        choice = None
        for p in ([self.s.prune_p] if self.s.prune_p is not None else P_GRID):
            trial = copy.deepcopy(self.model)
            select_groups(plans, n_samples, p)
            apply_plans(_blocks_of(trial, task), plans, self.s.group, means)
            # conv MACs scale with pixels, so the ratio is taken on a small frame
            cost = route_costs(trial, task, SMALL_FRAME)
            reduction = 1.0 - cost["branch_gmac"] / before_small["branch_gmac"]
            choice = (p, trial, cost, reduction)
            if reduction >= self.s.target_reduction:
                break
        p, self.model, _, _ = choice
        after = route_costs(self.model, task)
        reduction = 1.0 - after["branch_gmac"] / before["branch_gmac"]
        m.update({"prune_p": p, "prune_samples": n_samples, "group": self.s.group,
                  "pick_counts": {k: v.counts for k, v in plans.items()},
                  "kept_mids": self.model.branches[task].mids(),
                  "branch_gmac_before": before["branch_gmac"], "branch_gmac_after": after["branch_gmac"],
                  "route_gmac_after": after["gmac"], "params_after": after["params"],
                  "branch_mac_reduction": reduction,
                  "val_psnr_pruned": evaluate_route(self.model, task, self.val_set(task), self.val_clean)})
        log.info("%s: pruned with p=%.2f, branch %.3f -> %.3f GMAC (-%.0f%%), val PSNR %.2f", task, p,
                 before["branch_gmac"], after["branch_gmac"], 100 * reduction, m["val_psnr_pruned"])

    def finetune_task(self, task: str) -> None:
        """Fine-tune the pruned branch; keep the fine-tuned weights only if val improves."""
        m = self._metrics(task)
        pruned = [copy.deepcopy(mod.state_dict()) for mod in self.model.task_modules(task)]
        self._train(task, self.s.finetune_steps, "finetune", self.s.lr * 0.5)
        m["val_psnr_finetuned"] = evaluate_route(self.model, task, self.val_set(task), self.val_clean)
        m["val_psnr_finetune_raw"] = m["val_psnr_finetuned"]
        m["finetune_kept"] = m["val_psnr_finetuned"] >= m.get("val_psnr_pruned", -math.inf)
        if not m["finetune_kept"]:
            for mod, state in zip(self.model.task_modules(task), pruned):
                mod.load_state_dict(state)
            log.info("%s: fine-tuning lowered val PSNR (%.2f < %.2f); pruned weights kept", task,
                     m["val_psnr_finetuned"], m["val_psnr_pruned"])
            m["val_psnr_finetuned"] = m["val_psnr_pruned"]
        m["psnr_loss_from_pruning"] = m["val_psnr_trained"] - m["val_psnr_finetuned"]
        m.update(route_costs(self.model, task))
        log.info("%s: fine-tuned val PSNR %.2f dB (unpruned %.2f)", task, m["val_psnr_finetuned"],
                 m["val_psnr_trained"])

    def field_task(self, task: str) -> None:
        """Fit the route's field head on whole frames; keep it only if val improves.

        The route without its head is frozen and run once per pool frame (again for re-degraded
        frames), so a step costs only the head: avg-pool, a few convs on the 16×20 thumbnail,
        upsample, L1 against the clean whole frame.
        """
        m = self._metrics(task)
        head = self.model.fields[task]
        pool = DegradedPool(self.train_clean, self.spec(task), self.s.seed + 4241 + len(self.state["done"]),
                            self.tone_pool, randomize=self.s.randomize)
        self.model.freeze_except(None)

        def base(idx) -> torch.Tensor:
            return route_outputs(self.model, task, pool.degraded[idx], batch=2, field=False)

        t0 = time.monotonic()
        outputs = base(np.arange(len(pool.clean)))
        clean = torch.from_numpy(pool.clean[:, None])
        before = evaluate_route(self.model, task, self.val_set(task), self.val_clean, field=False)
        params = list(head.parameters())
        for q in params:
            q.requires_grad_(True)
        steps = self.s.field_steps
        opt = torch.optim.AdamW(params, lr=self.s.lr, weight_decay=1e-5)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.s.lr, total_steps=max(1, steps), pct_start=0.05)
        rng = np.random.default_rng(self.s.seed + 17)
        running = None
        for step in tqdm(range(steps), desc=f"{task} field", mininterval=5.0, dynamic_ncols=True):
            if step and step % self.s.refresh_every == 0:
                idx = pool.refresh()
                outputs[idx] = base(idx)
            idx = rng.choice(len(outputs), min(self.s.field_batch, len(outputs)), replace=False)
            loss = (head(outputs[idx]) - clean[idx]).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        self.model.freeze_except(None)
        after = evaluate_route(self.model, task, self.val_set(task), self.val_clean)
        kept = after > before
        if not kept:  # a zero output conv makes the head the exact identity again
            with torch.no_grad():
                head.out.weight.zero_()
                head.out.bias.zero_()
        m.update({"field_loss": float(running or 0.0), "val_psnr_before_field": before,
                  "val_psnr_field": after, "field_kept": kept, "field_seconds": round(time.monotonic() - t0, 1)})
        m.update(route_costs(self.model, task))
        log.info("%s: field head val PSNR %.2f -> %.2f dB (%s)", task, before, after,
                 "kept" if kept else "dropped: identity")

    def train_router(self) -> None:
        """Stage ``router``: copy the router of ``router_from`` (and re-choose its unknown thresholds
        on val when ``router_recalibrate``), else train one with router_train.train_router on the
        train frames; its description goes to ``state["router"]``.

        Raises:
            ValueError: ``router_from`` lacks router.json or its ONNX, or does not know a task.
        """
        out = self.work / "router"
        if self.s.router_from:
            info = reuse_router(Path(self.s.router_from), out, self.model.tasks)
            if self.s.router_recalibrate:
                from .router_train import recalibrate_router

                info = recalibrate_router(out, out, self.val_clean, threads=self.s.threads,
                                          seed=self.s.seed + 1000)
                log.info("router: thresholds re-chosen on val: %s", info["metrics"])
        else:
            from .router_train import train_router

            info = train_router(self.train_clean, list(self.s.tasks), out_dir=out,
                                steps=self.s.router_steps, seed=self.s.seed, threads=self.s.threads,
                                val_images=self.val_clean)
        self.state["router"] = info

    def write_bundle(self, out_dir):
        """Stage ``bundle``: :func:`export_bundle` of the model to ``out_dir``; returns the Bundle.

        Raises:
            ExportError: a route's ONNX export fails its parity check.
            BundleError: the written bundle does not verify.
        """
        return export_bundle(self.model, self.state, self.work, out_dir, self.s)


def reuse_router(src: Path, out: Path, tasks: Sequence[str]) -> dict:
    """Copy a router trained earlier by ``train_router`` (``router.json`` = its return value)
    from ``src`` to ``out``; returns that description with ``source`` = ``src``.

    Raises:
        ValueError: ``src`` has no router.json, the ONNX file it names is missing, or the
            router does not know one of ``tasks``.
    """
    import shutil

    meta_path = src / "router.json"
    if not meta_path.is_file():
        raise ValueError(f"no router.json in {src}; it must hold what train_router returned")
    info = json.loads(meta_path.read_text())
    onnx_path = src / info.get("file", "router.onnx")
    if not onnx_path.is_file():
        raise ValueError(f"router.json in {src} names {onnx_path.name}, which is missing")
    missing = [t for t in tasks if t not in info.get("tasks", [])]
    if missing:
        raise ValueError(f"router in {src} does not know tasks {missing}; its classes: {info.get('tasks')}")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, out / onnx_path.name)
    info["source"] = str(src)
    (out / "router.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


class _CleanPool:
    """Clean→clean pairs for autoencoder pretraining."""

    def __init__(self, clean: np.ndarray, seed: int):
        self.pool = DegradedPool.__new__(DegradedPool)
        self.pool.clean = clean
        self.pool.degraded = clean
        self.pool.stats = None
        self.pool.rng = np.random.default_rng(seed)

    def refresh(self, fraction: float = 0.25) -> None:
        pass

    def batch(self, size: int, crop: int):
        return self.pool.batch(size, crop)


def _blocks_of(model: OpenWorldModel, task: str) -> dict:
    blocks = {f"branch.{i}": b for i, b in enumerate(model.branches[task].res_blocks())}
    if task in model.miners:
        blocks["miner.refine"] = model.miners[task].refine
    return blocks


def open_work_dir(work_dir, threads: int, logger: logging.Logger, log_name: str) -> Path:
    """Make ``work_dir`` (a trainer's work dir), set torch's CPU threads to ``threads`` and log
    ``logger`` to ``work_dir/log_name`` too (:func:`log_to_file`); returns the folder as a Path.

    Raises:
        OSError: the folder cannot be made.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(threads))
    log_to_file(logger, work / log_name)
    return work


class WorkDirError(ValueError, InputError):
    """A file of a work dir (``state.json``, a checkpoint) that cannot be read back; the message
    names the file and what to do (exit 2)."""


def load_state_file(path: Path) -> dict:
    """A work dir's ``state.json`` as a dict.

    Raises:
        WorkDirError: it is not JSON or not an object (edited, or written by something else: a run
            killed while writing it leaves the previous state whole, :func:`save_state`); the
            message names the file. It was a bare "Expecting ',' delimiter" line (tir distill) or
            a traceback.
    """
    try:
        state = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise WorkDirError(f"{path} cannot be read back ({exc}): the work dir's record of finished stages is "
                           "lost; give a new --work-dir (or remove this one) to start afresh") from None
    if not isinstance(state, dict):
        raise WorkDirError(f"{path} holds {type(state).__name__}, not a work dir state (an object); give a new "
                           "--work-dir")
    return state


def load_checkpoint_file(path: Path) -> dict:
    """A work dir's torch checkpoint (``model.pt``, ``student.pt``, ``best.pt``) read with
    ``weights_only=True`` (tensors and plain containers only).

    Raises:
        WorkDirError: it cannot be read (cut short, damaged, or not a weights-only checkpoint): the
            message names the file and says to remove it (that stage is trained again) or to give
            a new --work-dir; a damaged student.pt was a RuntimeError traceback out of tir distill.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError (zip), UnpicklingError, EOFError, ...
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise WorkDirError(f"{path} cannot be read back ({first}); remove it to train that part again, or "
                           "give a new --work-dir") from None
    if not isinstance(ckpt, dict):
        raise WorkDirError(f"{path} holds {type(ckpt).__name__}, not a checkpoint; remove it or give a new "
                           "--work-dir")
    return ckpt


def save_state(work: Path, state: dict) -> None:
    """Write ``state`` as ``work/state.json`` (indented JSON, numpy scalars as floats) through a
    temporary file and a rename, so a run killed while writing leaves the previous state whole."""
    tmp = work / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=float))
    os.replace(tmp, work / "state.json")


def log_to_file(logger: logging.Logger, path: Path) -> None:
    """Also write ``logger``'s INFO lines to ``path`` (a work dir's log), once per path."""
    if not any(getattr(h, "baseFilename", None) == str(path) for h in logger.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def now_iso() -> str:
    """The current UTC time as ISO 8601 to the second, e.g. ``2026-11-29T22:19:35+00:00``."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

CHECKPOINT_FILE = "model.pt"
NORMALISATION = {"input": "float32 N×1×H×W in [0,1]: 8-bit frames /255, 16-bit frames robust "
                          "percentile stretch (tir.engines.degrade.to_unit_float)",
                 "output": "same scale as the input; clip to [0,1]"}


def export_bundle(model: OpenWorldModel, state: dict, work: Path, out_dir, settings: TrainSettings):
    """Export every route to ONNX, then write the bundle (routes, router, manifest, checkpoint)."""
    from ..bundle import sha256_file, write_bundle
    from .fast_route import export_route

    work, out = Path(work), Path(out_dir)
    onnx_dir = work / "onnx"
    routes, entries = {}, []
    m = model.cfg.multiple
    for task in model.tasks:
        path = onnx_dir / f"{task}.onnx"
        meta = {"task": task, "preset": model.cfg.name, MULTIPLE_KEY: m}
        # the convolution-dominated export form, checked against RouteModule (engines/training/fast_route.py)
        record = export_route(model, task, path, metadata=meta)
        routes[task] = path
        metrics = state["metrics"].get(task, {})
        cost = route_costs(model, task)
        entries.append({"name": task, "params": cost["params"], "gmac_640x512": round(cost["gmac"], 4),
                        "branch_gmac_640x512": round(cost["branch_gmac"], 4),
                        "parts": list(model.parts.get(task, ())),
                        "spec": state.get("specs", {}).get(task), "export": record,
                        "metrics": {k: v for k, v in metrics.items() if k != "pick_counts"}})
    router_info = state.get("router")
    router_file = None
    if router_info:
        router_file = router_info.get("file")
        if router_file and not Path(router_file).is_absolute():
            router_file = work / "router" / router_file
        router_info = {k: v for k, v in router_info.items() if k != "file"}
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_FILE
    torch.save({"architecture": model.architecture(), "state_dict": model.state_dict(),
                "specs": state.get("specs", {})}, ckpt)
    manifest = {
        "name": out.name, "preset": model.cfg.name, "multiple": m, "normalisation": NORMALISATION,
        "tasks": entries, "router": router_info,
        "training": {"data": settings.data or "roadscene (train split; val for choices)",
                     "command": settings.command or state.get("settings", {}).get("command", ""),
                     "date": now_iso(), "started": state.get("started"),
                     "settings": {k: v for k, v in state.get("settings", {}).items()},
                     "stages": state.get("done", []), "wall_s": state.get("wall_s", {}),
                     "pretrain": state.get("metrics", {}).get("pretrain")},
        "checkpoint": {"file": CHECKPOINT_FILE, "sha256": sha256_file(ckpt),
                       "note": "architecture + state dict of the open-world model; tir learn expands it"},
        "config": model.cfg.to_dict(),
    }
    return write_bundle(out, routes, router_file, manifest)


def balanced_repeats(sizes: Sequence[int], cap: int) -> List[int]:
    """How often to repeat each set's frames: ``round(largest / size)``, at least 1, at most
    ``cap`` (``cap`` 1: no repeats). E.g. sizes (171, 22), cap 4 -> (1, 4)."""
    top = max(sizes)
    return [int(min(max(1, round(top / max(n, 1))), max(1, int(cap)))) for n in sizes]


def router_train_frames(names: Sequence[str], balance: int = 1, max_frames: Optional[int] = None):
    """The router's training frames: each registered set's train split at the router's input
    size, a set smaller than the largest repeated up to ``balance`` times (:func:`balanced_repeats`).

    Returns:
        ((N, H, W) float32 frames in [0, 1], the repeat count per set).

    Raises:
        DatasetError: a set or its frames cannot be had.
    """
    from . import datasets as dsets
    from ..router import ROUTER_INPUT_SIZE

    per_set = [dsets.load_unit_frames(n, "train", ROUTER_INPUT_SIZE, max_frames=max_frames) for n in names]
    repeats = balanced_repeats([len(f) for f in per_set], balance)
    return np.concatenate([np.concatenate([f] * r) for f, r in zip(per_set, repeats)]), repeats


def train_router_for_bundle(bundle_dir, out_dir, sets, work_dir, steps: int = 1500, seed: int = 0,
                            threads: int = 2, draws: int = 3, randomize: bool = True,
                            max_frames: Optional[int] = None, command: str = "",
                            cache_size=(320, 256), crop=(56, 72), calibration_draws: int = 4,
                            sensor_variants: bool = True, quantize: float = 0.0,
                            balance: int = 1, extras: Sequence[str] = ()) -> Path:
    """Train a new router for an existing bundle on several cameras' frames and write a copy of
    the bundle with it (routes, checkpoint and their hashes unchanged; the original untouched).

    ``sets``: registered data sets (engines/training/datasets.py); their ``train`` splits train the
    router, their ``val`` splits choose the "unknown" thresholds. ``randomize`` applies the
    clean-pool domain randomisation (engines/training/domain.py) before every degradation; ``quantize``
    re-quantises that share of the degraded frames to 8 bits (router.degraded_batches);
    ``balance`` > 1 repeats the train frames of a set smaller than the largest one up to that
    many times (each repeat is randomised anew), so a camera with few frames is not drowned
    by one with many (:func:`balanced_repeats`). ``extras``: what else the randomisation varies
    (:data:`tir.engines.training.domain.EXTRAS`; recorded as ``randomisation_extras``, which
    :func:`tir.engines.training.domain.router_augment` reads back). The new
    manifest records the sets (``training.router_data``). Returns the new bundle's folder.
    Raises DatasetError / BundleError with the reason, ValueError for an unknown extra or
    extras without ``randomize``.
    """
    from . import datasets as dsets
    from ..bundle import load_bundle
    from .domain import check_extras, router_augment
    from ..router import ROUTER_INPUT_SIZE, SENSOR_VARIANTS
    from .router_train import train_router

    if not 0.0 <= float(quantize) <= 1.0:
        raise ValueError(f"router quantize share must be in [0, 1], got {quantize}")
    extras = check_extras(extras)
    if extras and not randomize:
        raise ValueError("randomisation extras need the domain randomisation (randomize=True)")
    augment = router_augment({"domain_randomisation": bool(randomize), "randomisation_extras": list(extras)})

    src = load_bundle(bundle_dir)
    names = dsets.parse_sets(sets)
    train, repeats = router_train_frames(names, balance, max_frames)
    val = dsets.load_unit_frames(names, "val", ROUTER_INPUT_SIZE, max_frames=max_frames)
    log.info("router: %d train (repeats %s) / %d val frames from %s", len(train),
             dict(zip(names, repeats)), len(val), ", ".join(names))
    work = Path(work_dir)
    train_router(train, list(src.tasks), out_dir=work / "router", steps=steps, seed=seed,
                 threads=threads, val_images=val, draws=draws, outliers=(),
                 augment=augment, cache_size=cache_size,
                 crop=crop, calibration_draws=calibration_draws,
                 variants=SENSOR_VARIANTS if sensor_variants else None, quantize=quantize)
    training = {"sets": dsets.describe(names), "steps": steps, "seed": seed, "draws": draws,
                "cache_size": list(cache_size), "crop": list(crop), "sensor_variants": bool(sensor_variants),
                "calibration_draws": calibration_draws, "domain_randomisation": bool(randomize),
                **({"randomisation_extras": list(extras)} if extras else {}),
                "quantize": float(quantize), "balance": int(balance),
                "command": command, "date": now_iso()}
    return bundle_with_router(src.path, work / "router", out_dir, names, training, train, threads)


def bundle_with_router(bundle_dir, router_dir, out_dir, names, training: dict, train_frames: np.ndarray,
                       threads: int = 2) -> Path:
    """A copy of a bundle with the router that ``train_router`` wrote to ``router_dir``
    (router.json + ONNX), ``training`` recorded in its entry, and the router's source
    statistics for test-time adaptation computed on ``train_frames`` ((N, H, W) float32 in
    [0, 1]) with the same randomisation and variants (engines/adapt.py). Returns the new folder.

    Raises:
        ValueError: ``out_dir`` is the source bundle's folder.
        FileNotFoundError: ``router_dir`` holds no router.json or its ONNX.
        BundleError: the source bundle does not load or the copy does not verify.
    """
    from ..bundle import copy_listed_files, load_bundle, write_bundle
    from .domain import router_augment
    from ..router import SENSOR_VARIANTS, load_router_entry

    src = load_bundle(bundle_dir)
    router_onnx, info = load_router_entry(router_dir)
    manifest = json.loads((src.path / "manifest.json").read_text())
    manifest.pop("files", None)
    manifest.pop("adapted_from", None)
    router_entry = {k: v for k, v in info.items() if k != "file"}
    router_entry["training"] = dict(training)
    manifest["router"] = router_entry
    manifest.setdefault("training", {})["router_data"] = names
    routes = {t: src.route_path(t) for t in src.tasks}
    out = Path(out_dir)
    if out.resolve() == src.path.resolve():
        raise ValueError("write the new bundle to another folder; the original is kept")
    copy_listed_files(src.path, manifest, out)   # the checkpoint and the student travel unchanged
    bundle = write_bundle(out, routes, router_onnx, manifest)
    # the embedding statistics test-time adaptation aligns to (engines/adapt.py), for this router
    from ..adapt import add_source_stats

    add_source_stats(out, train_frames, ",".join(names) + " (train)", threads=threads,
                     augment=router_augment(training),
                     variants=SENSOR_VARIANTS if training.get("sensor_variants") else None,
                     quantize=float(training.get("quantize", 0.0)))
    return bundle.path
