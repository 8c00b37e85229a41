"""Baselines the open-world model is compared against, on the same frames.

- ``degraded``: the input itself.
- ``classical``: a fixed chain with no learning: row/column destriping by a high-pass of the
  row/column profile (subtracting whole-frame column/row means flattens the sky-to-road gradient
  of road scenes: 13.4 dB on noise vs 21.2 for the input, cpu_budget.md), non-local means with
  its strength set from an estimate of the noise level, a gated robust linear contrast stretch, (optionally CLAHE)
  and unsharp masking.
- ``sequential``: one edge-sized network fine-tuned task after task through the seven tasks
  (no freezing, no replay), evaluated on every task after each one: the forgetting that
  ECMRNet's frozen branches avoid.
- ``joint``: the same network trained on all seven tasks at once for the same total steps.

The two networks use the single-route edge architecture (engines/training/models/ecmrnet.py
``create_model("edge")``, tone head included, trained on crops that carry their whole frame's
tone statistics like ours) and the project's loss (engines/training/losses.py: L1 + 0.5·(1 − MS-SSIM) +
0.1·Sobel L1, ecmrnet.md §1.2), so the only difference to ours is how tasks share weights.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from ..metrics import psnr

log = logging.getLogger(__name__)

NETWORK_BASELINES = ("sequential", "joint")


# ---------------------------------------------------------------------------------------------
# classical chain
# ---------------------------------------------------------------------------------------------

def estimate_noise_sigma(frame: np.ndarray) -> float:
    """Gaussian noise σ (same units as ``frame``), Immerkær 1996 (CVIU 64(2)): mean |I * N|·√(π/2)/6
    with N = [[1,-2,1],[-2,4,-2],[1,-2,1]], which cancels smooth image structure.

    Args:
        frame: (H, W) float array (float32 in [0, 1] here).

    Returns:
        σ in the frame's units (multiply by 255 for grey levels).
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = cv2.filter2D(np.asarray(frame, np.float32), -1, kernel, borderType=cv2.BORDER_REFLECT)
    return float(np.sqrt(np.pi / 2.0) / 6.0 * np.mean(np.abs(response[1:-1, 1:-1])))


def destripe(frame: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Remove column and row stripes: subtract the high-pass part of the column/row profile.

    The profile (median over rows for columns, over columns for rows) keeps the scene's slow
    gradient in its low-pass part, which stays; only column-to-column jumps are removed.

    Args:
        frame: (H, W) float32 frame in [0, 1].
        sigma: σ in px of the Gaussian low-pass of the profiles.

    Returns:
        (H, W) float32, not clipped.
    """
    x = np.asarray(frame, np.float32)
    for axis in (0, 1):
        profile = np.median(x, axis=axis).astype(np.float32)
        smooth = cv2.GaussianBlur(profile[None, :], (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)[0]
        high = profile - smooth
        x = x - (high[None, :] if axis == 0 else high[:, None])
    return x


def nlm_denoise(frame: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """cv2.fastNlMeansDenoising on 8 bits with h = strength·σ̂ (grey levels), σ̂ from Immerkær.

    Args:
        frame: (H, W) float32 frame in [0, 1] (quantised to uint8 for OpenCV).
        strength: h / σ̂; h is clipped to [1, 30] grey levels.

    Returns:
        (H, W) float32 in [0, 1] (8-bit precision).
    """
    sigma = estimate_noise_sigma(frame) * 255.0
    h = float(np.clip(strength * sigma, 1.0, 30.0))
    grey = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    out = cv2.fastNlMeansDenoising(grey, None, h=h, templateWindowSize=7, searchWindowSize=21)
    return out.astype(np.float32) / 255.0


def contrast_stretch(frame: np.ndarray, low: float = 0.5, high: float = 99.5, bounds=None) -> np.ndarray:
    """Linear map of the [low, high] percentiles (or given ``bounds`` (lo, hi)) onto [0, 1].

    Args:
        frame: (H, W) float array.
        low: lower percentile (0–100).
        high: upper percentile (0–100).
        bounds: ``(lo, hi)`` in the frame's units instead of the percentiles.

    Returns:
        (H, W) float32 clipped to [0, 1].
    """
    lo, hi = np.percentile(frame, (low, high)) if bounds is None else bounds
    return np.clip((frame - lo) / max(float(hi - lo), 1e-3), 0.0, 1.0).astype(np.float32)


def clahe(frame: np.ndarray, clip: float = 1.5, tiles: int = 8) -> np.ndarray:
    """CLAHE (cv2.createCLAHE) on the frame's 8-bit grey levels.

    Args:
        frame: (H, W) float32 frame in [0, 1] (quantised to uint8).
        clip: CLAHE clip limit (OpenCV's clipLimit).
        tiles: tiles per side (OpenCV's tileGridSize = (tiles, tiles)).

    Returns:
        (H, W) float32 in [0, 1].
    """
    grey = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)
    op = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(tiles, tiles))
    return op.apply(grey).astype(np.float32) / 255.0


def unsharp(frame: np.ndarray, sigma: float = 1.5, amount: float = 0.6) -> np.ndarray:
    """Unsharp masking: ``x + amount·(x − GaussianBlur(x, σ))``, clipped to [0, 1].

    Args:
        frame: (H, W) float32 frame in [0, 1].
        sigma: Gaussian σ in px.
        amount: gain of the high-pass part.

    Returns:
        (H, W) float32 in [0, 1].
    """
    blurred = cv2.GaussianBlur(frame, (0, 0), sigmaX=sigma)
    return np.clip(frame + amount * (frame - blurred), 0.0, 1.0).astype(np.float32)


CLASSICAL_STEPS = ("destripe", "denoise", "stretch", "clahe", "sharpen")


def classical_chain(frames: np.ndarray, steps: Sequence[str] = ("destripe", "denoise", "stretch", "sharpen"),
                    noise_gate: float = 2.0 / 255.0, stretch_below: float = 0.75) -> np.ndarray:
    """Apply the classical steps in order to (N,H,W) or (H,W) frames in [0, 1].

    Gates, so that a frame that does not need a step is left alone: destriping and NLM run only
    where the estimated noise σ exceeds ``noise_gate``; the contrast stretch only where the
    0.5–99.5 percentile span is below ``stretch_below`` (clean RoadScene val frames span
    0.76–0.96, contrast-degraded ones 0.18–0.50). CLAHE is available but not in the default
    chain: on RoadScene val it cost 2–11 dB on every task but CN/CBN (docs/eval.md).

    Args:
        frames: (N, H, W) or (H, W) float frames in [0, 1].
        steps: names of :data:`CLASSICAL_STEPS`, applied in this order.
        noise_gate: noise σ (fraction of the range: 2/255 = 2 grey levels) above which destripe and
            denoise run.
        stretch_below: percentile span under which the contrast stretch runs.

    Returns:
        float32 of the input's shape, in [0, 1].

    Raises:
        ValueError: a step is not one of :data:`CLASSICAL_STEPS`.
    """
    unknown = [s for s in steps if s not in CLASSICAL_STEPS]
    if unknown:
        raise ValueError(f"unknown classical steps {unknown}; choose from {', '.join(CLASSICAL_STEPS)}")
    x = np.asarray(frames, np.float32)
    single = x.ndim == 2
    batch = x[None] if single else x
    out = np.empty_like(batch)
    for i, f in enumerate(batch):
        noisy = estimate_noise_sigma(f) > noise_gate
        for step in steps:
            if step == "destripe" and noisy:
                f = destripe(f)
            elif step == "denoise" and noisy:
                f = nlm_denoise(np.clip(f, 0, 1))
            elif step == "stretch":
                lo, hi = np.percentile(f, (0.5, 99.5))
                if hi - lo < stretch_below:
                    f = contrast_stretch(f, bounds=(lo, hi))
            elif step == "clahe":
                f = clahe(f)
            elif step == "sharpen":
                f = unsharp(f)
        out[i] = np.clip(f, 0.0, 1.0)
    return out[0] if single else out


# ---------------------------------------------------------------------------------------------
# network baselines
# ---------------------------------------------------------------------------------------------

class _TaskPool:
    """Clean frames and one degraded copy per task (float16), re-degraded in part now and then."""

    def __init__(self, clean: np.ndarray, tasks: Sequence[str], seed: int, tone_pool: Optional[int] = None):
        from .. import degrade as deg

        self.deg = deg
        self.clean = np.asarray(clean, np.float32)
        self.tasks = list(tasks)
        self.rng = np.random.default_rng(seed)
        self.tone_pool = tone_pool
        self.degraded = {t: deg.degrade(self.clean, t, self.rng).astype(np.float16) for t in self.tasks}
        self.stats = {t: self._stats(t, np.arange(len(self.clean))) for t in self.tasks}

    def _stats(self, task: str, idx: np.ndarray):
        from .models.ecmrnet import frame_tone_stats

        return frame_tone_stats(self.degraded[task][idx], self.tone_pool)

    def refresh(self, fraction: float = 0.25) -> None:
        n = max(1, int(len(self.clean) * fraction))
        for t in self.tasks:
            idx = self.rng.choice(len(self.clean), n, replace=False)
            self.degraded[t][idx] = self.deg.degrade(self.clean[idx], t, self.rng).astype(np.float16)
            if self.stats[t] is not None:
                self.stats[t][idx] = self._stats(t, idx)

    def batch(self, size: int, crop: int):
        import torch

        n, h, w = self.clean.shape
        ch, cw = min(crop, h), min(crop, w)
        inp = np.empty((size, 1, ch, cw), np.float32)
        tgt = np.empty_like(inp)
        stats = []
        for k in range(size):
            t = self.tasks[self.rng.integers(len(self.tasks))]
            i, y, x = self.rng.integers(n), self.rng.integers(h - ch + 1), self.rng.integers(w - cw + 1)
            a = self.degraded[t][i, y:y + ch, x:x + cw].astype(np.float32)
            b = self.clean[i, y:y + ch, x:x + cw]
            if self.rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            inp[k, 0], tgt[k, 0] = a, b
            if self.stats[t] is not None:
                stats.append(self.stats[t][i])
        return torch.from_numpy(inp), torch.from_numpy(tgt), (torch.stack(stats) if stats else None)


def _crop_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    h, w = images.shape[-2:]
    return images[..., : h - h % multiple, : w - w % multiple]


def _eval_psnr(model, degraded: np.ndarray, clean: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        scores = []
        for i in range(len(degraded)):
            y = model(torch.from_numpy(np.ascontiguousarray(degraded[i:i + 1, None])))
            scores.append(psnr(y.clamp(0, 1).numpy()[0, 0], clean[i]))
    model.train()
    return float(np.mean(scores))


def _fit(model, pool: _TaskPool, steps: int, crop: int, batch: int, lr: float, desc: str) -> float:
    import torch
    from tqdm import tqdm

    from .losses import RestorationLoss

    loss_fn = RestorationLoss(crop)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    model.train()
    recent = []
    for step in tqdm(range(steps), desc=desc, unit="step"):
        if step and step % 100 == 0:
            pool.refresh()
        x, y, stats = pool.batch(batch, crop)
        loss = loss_fn(model(x, stats), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        recent.append(float(loss.detach()))
    return float(np.mean(recent[-50:])) if recent else float("nan")


def _export(model, path: Path, multiple: int) -> Path:
    from .export import export_onnx

    export_onnx(model, path, input_shape=(1, 1, 64, 64), metadata={"tir.multiple": multiple},
                audit=False)
    return path


def train_network_baseline(mode: str, clean_train: np.ndarray, out_dir, tasks: Sequence[str] = None,
                           steps_per_task: int = 300, crop: int = 128, batch: int = 8,
                           lr: float = 2e-3, seed: int = 0, threads: Optional[int] = 1,
                           preset: str = "edge", eval_clean: Optional[np.ndarray] = None,
                           command: str = "") -> dict:
    """Train the ``sequential`` or ``joint`` baseline; write ONNX files and a JSON summary.

    Both see ``steps_per_task × len(tasks)`` steps of ``batch`` crops in total. ``sequential``
    writes ``sequential-after-<task>.onnx`` after each task and, with ``eval_clean``, a
    forgetting matrix (PSNR on every task after each task); ``joint`` writes ``joint.onnx``.
    The final network of either is also ``<mode>.onnx``.

    Args:
        mode: ``"sequential"`` or ``"joint"``.
        clean_train: (N, H, W) float32 clean training frames in [0, 1].
        out_dir: folder for the ONNX files and the summary.
        tasks: training tasks (default: all of :data:`~tir.engines.degrade.TASKS`).
        steps_per_task: optimiser steps per task.
        crop: training crop side in px.
        batch: crops per step.
        lr: learning rate.
        seed: seed of crops and degradations.
        threads: torch CPU threads (None: torch's default).
        preset: ECMRNet preset of the network.
        eval_clean: (N, H, W) float32 clean evaluation frames for the forgetting matrix, or None.
        command: the command line recorded in the summary.

    Returns:
        the JSON summary (also written to ``out_dir``); PSNR in dB.

    Raises:
        ValueError: ``mode`` is not a network baseline.
    """
    import torch

    from .. import degrade as deg
    from .models.ecmrnet import create_model, get_config

    if mode not in NETWORK_BASELINES:
        raise ValueError(f"unknown baseline {mode!r}; network baselines: {', '.join(NETWORK_BASELINES)}")
    tasks = list(deg.TASKS if tasks is None else tasks)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    model = create_model(preset)
    cfg = get_config(preset)
    multiple = cfg.multiple
    tone_pool = cfg.tone_pool if getattr(cfg, "tone", False) else None
    evals = None
    if eval_clean is not None:
        ev = _crop_multiple(np.asarray(eval_clean, np.float32), multiple)
        evals = {t: (deg.make_eval_set(ev, t, seed), ev) for t in tasks}
    t0 = time.monotonic()
    summary = {"mode": mode, "preset": preset, "tasks": tasks, "steps_per_task": steps_per_task,
               "total_steps": steps_per_task * len(tasks), "crop": crop, "batch": batch, "lr": lr,
               "seed": seed, "command": command, "files": {}, "final_loss": {}}
    if mode == "sequential":
        summary["forgetting_psnr"] = {}
        for t in tasks:
            pool = _TaskPool(clean_train, [t], seed + tasks.index(t), tone_pool)
            summary["final_loss"][t] = _fit(model, pool, steps_per_task, crop, batch, lr, f"sequential {t}")
            name = f"sequential-after-{t}.onnx"
            _export(model, out / name, multiple)
            summary["files"][t] = name
            if evals is not None:
                row = {u: _eval_psnr(model, *evals[u]) for u in tasks}
                summary["forgetting_psnr"][t] = row
                log.info("sequential after %s: %s", t, {u: round(v, 2) for u, v in row.items()})
    else:
        pool = _TaskPool(clean_train, tasks, seed, tone_pool)
        summary["final_loss"]["all"] = _fit(model, pool, steps_per_task * len(tasks), crop, batch, lr, "joint")
        if evals is not None:
            summary["psnr"] = {u: _eval_psnr(model, *evals[u]) for u in tasks}
    _export(model, out / f"{mode}.onnx", multiple)
    torch.save({"state_dict": model.state_dict(), "preset": preset}, out / f"{mode}.pt")
    summary["file"] = f"{mode}.onnx"
    summary["train_seconds"] = round(time.monotonic() - t0, 1)
    (out / f"{mode}.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary
