"""Router accuracy on held-out cameras before and after adaptation (``tir adapt --measure``).

Evaluation with the registered data sets (:mod:`tir.engines.training.datasets`) of the
runtime's adaptation (:mod:`tir.engines.adapt`: :func:`~tir.engines.adapt.fit_adaptation`,
:func:`~tir.engines.adapt.apply_adaptation`), so it lives on the training side.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..adapt import DEFAULT_FRAMES, AdaptationRefused, apply_adaptation, fit_adaptation, source_of


def live_input(counts: np.ndarray, bits: int, task: str, rng) -> np.ndarray:
    """One stored frame of counts -> the router's input on the user's path.

    Args:
        counts: (H, W) clean frame as stored (uint8 grey levels for 8-bit sets, uint16 counts).
        bits: the set's bit depth (8 or 16).
        task: a degradation task name, or ``"clean"`` for none.
        rng: numpy Generator (ignored for ``"clean"``).

    Returns:
        (H, W) float32, nominally in [0, 1]: :func:`~tir.engines.training.camera_eval.degrade_counts`
        (degrade the counts, re-quantise 8-bit frames) then
        :func:`~tir.engines.training.camera_eval.model_input` (the pipeline's ``Preprocess`` stage).

    Raises:
        DegradationError: ``task`` is not a known degradation.
    """
    from .camera_eval import degrade_counts, model_input

    degraded, _, meta, _ = degrade_counts(counts, bits, task, rng)
    return model_input(degraded, meta)[0]


def measure_adaptation(bundle_path, sets: Sequence[str], data_root=None, frames: int = DEFAULT_FRAMES, seed: int = 0,
                       backend: str = "auto", threads: Optional[int] = None, progress: bool = True,
                       **fit_options) -> dict:
    """Router accuracy on held-out cameras before and after :func:`fit_adaptation` (issue 9 item 6).

    Per registered set in ``sets`` (engines/training/datasets.py; ``data_root`` as
    ``datasets.data_root``), every frame takes the user's path at its native size
    (:func:`live_input`: degraded on its counts as a sensor would and, for an 8-bit set,
    re-quantised to 8 bits, then the pipeline's own ``Preprocess`` stage; the same path as
    ``tir eval --data``): ``frames`` unlabeled fitting frames are drawn from the train split
    (frames in seeded random order, each with a seeded random class of the router, tasks +
    clean; the fit never sees the class); the report is on the test split degraded once per
    task (frame i with the seed ``[degrade.task_seed(task, seed), i]``) plus the clean frames.
    (Before session 5 the frames were degraded in float and never re-quantised, which is not
    what an 8-bit camera delivers: the router read 8-bit sets 25 points better that way.)
    Accuracies: ``tasks`` (the router's decision on task frames, unknown counted wrong; what
    the runtime routes by), ``tasks_nearest`` (nearest codebook entry), ``with_clean``.
    A refused fit is reported with its reason and the unadapted accuracy.
    """
    from tqdm import tqdm

    from . import datasets
    from .. import degrade as deg
    from ..bundle import load_bundle
    from .evaluate import RouterRunner
    from ..router import CLEAN

    bundle = load_bundle(bundle_path)
    router = bundle.router
    stats = source_of(router, bundle.name)
    classes = list(router["tasks"])
    runner = RouterRunner(bundle.router_path, router, backend, threads)
    result = {"bundle": str(bundle.path), "frames": int(frames), "seed": int(seed), "data_root": str(datasets.data_root(data_root)),
              "sets": {}}

    def accuracy(decisions, labels):
        task, near = np.array([d["task"] for d in decisions]), np.array([d["nearest"] for d in decisions])
        truth = np.array(labels)
        is_task = truth != CLEAN
        return {"tasks": float(np.mean(task[is_task] == truth[is_task])),
                "tasks_nearest": float(np.mean(near[is_task] == truth[is_task])),
                "with_clean": float(np.mean(task == truth)),
                "unknown": float(np.mean(task == "unknown"))}

    for name in datasets.parse_sets(sets):
        bits = datasets.dataset(name).bits
        train, test = (datasets.load_counts(name, split, data_root) for split in ("train", "test"))
        rng = np.random.default_rng([int(seed), 9])
        order = np.concatenate([rng.permutation(len(train)) for _ in range(-(-int(frames) // len(train)))])
        fit_frames = []
        for i in tqdm(order[: int(frames)], desc=f"{name}: fitting frames", unit="frame", disable=not progress):
            cls = classes[int(rng.integers(len(classes)))]  # the class is drawn, used to degrade, then dropped
            fit_frames.append(live_input(train[i], bits, cls, rng))
        target = np.concatenate([runner.embed(f[None]) for f in fit_frames])  # sizes may differ
        emb, labels = [], []
        for cls in classes:
            for i, f in enumerate(test):
                rng_i = None if cls == CLEAN else np.random.default_rng([deg.task_seed(cls, seed), i])
                f = live_input(f, bits, cls, rng_i)
                emb.append(runner.embed(f[None]))
                labels.append(cls)
        emb = np.concatenate(emb)

        def decide(adaptation):
            from ..router import DEFAULT_TEMPERATURE, classify

            return classify(apply_adaptation(emb, adaptation), runner.codebook, classes, runner.threshold,
                            float(router.get("temperature", DEFAULT_TEMPERATURE)))
        sizes = sorted({f.shape[::-1] for f in test + train})
        row = {"train_frames": int(len(train)), "test_frames": int(len(test)), "classes": len(classes),
               "frame_size": list(sizes[0]) if len(sizes) == 1 else "mixed",
               "before": accuracy(decide(None), labels)}
        try:
            fit = fit_adaptation(target, stats, router["codebook"], classes, **fit_options)
            row["after"] = accuracy(decide(fit), labels)
            row["fit"] = {k: fit[k] for k in ("condition", "shrinkage", "similarity_before", "similarity_after")}
        except AdaptationRefused as exc:
            row["after"] = None
            row["refused"] = str(exc)
        result["sets"][name] = row
    return result


def format_measurement(result: dict) -> str:
    """The before/after table of :func:`measure_adaptation` (Markdown)."""
    lines = ["| set | frame size | test frames × classes | router accuracy on tasks before → after | "
             "nearest entry before → after | with clean before → after | unknown before → after |",
             "|---|---|---|---|---|---|---|"]
    for name, row in result["sets"].items():
        b, a = row["before"], row["after"]

        def pair(key):
            return f"{100 * b[key]:.1f} % → " + ("refused" if a is None else f"{100 * a[key]:.1f} %")
        size = row["frame_size"] if isinstance(row["frame_size"], str) else "×".join(map(str, row["frame_size"]))
        lines.append(f"| `{name}` | {size} | {row['test_frames']} × {row['classes']} | {pair('tasks')} | {pair('tasks_nearest')} | "
                     f"{pair('with_clean')} | {pair('unknown')} |")
    for name, row in result["sets"].items():
        if row.get("refused"):
            lines.append(f"\n`{name}`: refused: {row['refused']}")
    return "\n".join(lines)
