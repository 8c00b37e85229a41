"""Evaluation: a bundle, its router and the baselines on clean frames with seeded degradations.

Protocol (ecmrnet.md §1.4, made reproducible): clean frames (RoadScene ``test`` split by
default, or any folder) are degraded once per task with :func:`degrade.make_eval_set` (frame
i depends only on (i, task, seed)); every method restores the same degraded frames; PSNR and
SSIM (engines/metrics.py) are averaged per frame against the clean frame.

Rows of the continual table: "after task t" evaluates routes 1..t on tasks 1..t. For our
bundle this is exact without re-training: the continual model freezes every earlier branch,
so route u in the final bundle is bit-identical to route u right after task u was learned.
For the sequential baseline the row uses its checkpoint after task t (forgetting shows).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .. import degrade as deg
from ..adapt import ADAPTATION_KEY, apply_adaptation
from ..metrics import psnr, ssim
from ..router import CLEAN, UNKNOWN, classify, confusion, prepare_frames

log = logging.getLogger(__name__)

OURS = "ours"
OURS_AUTO = "ours (auto route)"
STUDENT = "student"
STUDENT_AUTO = "student (router mix)"


def load_clean(data: Optional[str] = None, split: str = "test", max_frames: Optional[int] = None):
    """Clean frames (N,H,W) in [0,1] and a description of where they came from.

    ``max_frames``: the first N frames at most, or None (all); a limit that is not a whole
    number >= 1 raises DatasetError (:func:`tir.engines.training.datasets.frame_limit`)."""
    from .datasets import frame_limit

    max_frames = frame_limit(max_frames)
    if data:
        frames, source = deg.load_folder(data), f"folder {data}"
    else:
        frames, source = deg.load_roadscene(split), f"RoadScene {split} split"
    if max_frames:
        frames = frames[:max_frames]
    return frames, source


def score(restored: np.ndarray, clean: np.ndarray) -> dict:
    """Mean PSNR (dB) and SSIM of restored frames against the clean ones (data range 1).

    Args:
        restored: (N, H, W) float32 restored frames (clipped to [0, 1] before scoring).
        clean: (N, H, W) float32 clean frames in [0, 1].

    Returns:
        {"psnr": mean PSNR in dB, "ssim": mean SSIM, "n": frames scored}.
    """
    p = [psnr(np.clip(r, 0, 1), c) for r, c in zip(restored, clean)]
    s = [ssim(np.clip(r, 0, 1), c) for r, c in zip(restored, clean)]
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)), "n": len(p)}


def run_engine(engine, frames: np.ndarray) -> np.ndarray:
    """Restore (N,H,W) frames one at a time (the pipeline's batch size) -> (N,H,W)."""
    return np.stack([np.asarray(engine.infer(f[None, None]))[0, 0] for f in frames]).astype(np.float32)


def time_engine(engine, frame: np.ndarray, repeats: int = 3) -> float:
    """Median ms for one frame after one warm-up run.

    Args:
        engine: anything with ``infer(batch)``.
        frame: (H, W) float32 frame in [0, 1] (inferred as a (1, 1, H, W) batch).
        repeats: timed calls.

    Returns:
        the median wall time of one ``infer`` in ms.
    """
    x = frame[None, None].astype(np.float32)
    engine.infer(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.infer(x)
        times.append(1000.0 * (time.perf_counter() - t0))
    return float(np.median(times))


class RouterRunner:
    """A router ONNX plus its manifest entry: classify frames (no routing state). The entry's
    ``adaptation`` map (engines/adapt.py), when present, is applied before classification."""

    def __init__(self, onnx_path, entry: dict, backend: str = "auto", threads: Optional[int] = None):
        from ..backends import load_engine

        kw = {} if threads is None else {"threads": threads}
        self.engine = load_engine(onnx_path, backend=backend, **kw)
        self.entry = entry
        self.classes = list(entry["tasks"])
        self.codebook = np.asarray(entry["codebook"], np.float64)
        self.threshold = entry.get("thresholds", entry.get("threshold", -1.0))
        self.temperature = float(entry.get("temperature", 0.1))
        self.input_size = tuple(entry.get("input_size", (640, 512)))
        self.adaptation = entry.get(ADAPTATION_KEY)

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Raw router embeddings N×D (no adaptation) of (N,H,W) frames, one frame at a time."""
        x = prepare_frames(frames, self.input_size)
        return np.concatenate([np.asarray(self.engine.infer(x[i:i + 1])).reshape(1, -1) for i in range(len(x))])

    def classify(self, frames: np.ndarray, adaptation="entry") -> List[dict]:
        """One decision per frame; ``adaptation``: "entry" (the entry's map, if any), None
        (raw router) or a map dict.

        Args:
            frames: (N, H, W) float32 frames in [0, 1].

        Returns:
            one decision dict per frame ("task", "nearest", scores ...), in order.
        """
        adaptation = self.adaptation if adaptation == "entry" else adaptation
        emb = apply_adaptation(self.embed(frames), adaptation)
        return classify(emb, self.codebook, self.classes, self.threshold, self.temperature)


def evaluate_router(runner: RouterRunner, clean: np.ndarray, degraded: Dict[str, np.ndarray],
                    unseen: Dict[str, np.ndarray]) -> dict:
    """Confusion over tasks + clean + unseen degradations; accuracies; unknown rates.

    Args:
        runner: the router to evaluate.
        clean: (N, H, W) float32 clean frames in [0, 1].
        degraded: task -> (N, H, W) float32 frames degraded with it.
        unseen: unseen degradation -> (N, H, W) float32 frames (should be answered "unknown").

    Returns:
        {"classes", "accuracy_tasks", "accuracy_tasks_nearest", "accuracy_with_clean",
        "false_unknown_rate", "unknown_rate" (per unseen degradation), "confusion",
        "ms_per_frame" (ms, one classification), "threshold"}; rates are fractions in [0, 1].
    """
    true, pred, nearest = [], [], []
    sets = dict(degraded)
    sets[CLEAN] = clean
    sets.update(unseen)
    for name, frames in sets.items():
        for d in runner.classify(frames):
            true.append(name)
            pred.append(d["task"])
            nearest.append(d["nearest"])
    true, pred, nearest = np.array(true), np.array(pred), np.array(nearest)
    tasks = list(degraded)
    in_tasks = np.isin(true, tasks)
    known = np.isin(true, tasks + [CLEAN])
    t0 = time.perf_counter()
    runner.classify(clean[:1])
    ms = 1000.0 * (time.perf_counter() - t0)
    out = {
        "classes": runner.classes,
        "accuracy_tasks": float(np.mean(pred[in_tasks] == true[in_tasks])),
        "accuracy_tasks_nearest": float(np.mean(nearest[in_tasks] == true[in_tasks])),
        "accuracy_with_clean": float(np.mean(pred[known] == true[known])),
        "false_unknown_rate": float(np.mean(pred[known] == UNKNOWN)),
        "unknown_rate": {u: float(np.mean(pred[true == u] == UNKNOWN)) for u in unseen},
        "confusion": confusion(list(true), list(pred), runner.classes),
        "ms_per_frame": ms,
        "threshold": runner.threshold,
    }
    return out


def _table_rows(tasks: Sequence[str], per_task: Dict[str, dict]) -> Dict[str, dict]:
    return {t: per_task[t] for t in tasks if t in per_task}


def evaluate(bundle=None, data: Optional[str] = None, split: str = "test", seed: int = 0,
             baselines: Sequence[str] = ("classical",), sequential: Optional[str] = None,
             joint: Optional[str] = None, router: Optional[str] = None,
             max_frames: Optional[int] = None, backend: str = "auto", threads: Optional[int] = None,
             tasks: Optional[Sequence[str]] = None, unseen: Sequence[str] = ("jpeg",),
             out: Optional[dict] = None) -> dict:
    """Run the whole evaluation; returns a JSON-ready dict (see :func:`format_report`), built in
    ``out`` when given (method by method, so a caller interrupted by Ctrl-C still holds the
    methods scored before it: ``tir eval --json`` writes them marked partial; while the run goes on
    ``out["planned"]`` lists what it will measure, the method names and ``router``, so the caller can
    say what was not; it is removed when the run completes).

    Raises:
        ValueError: the ``joint`` baseline without ``joint``, or the ``sequential`` one without
            ``sequential``.
    """
    from tqdm import tqdm

    from ..backends import load_engine

    clean, source = load_clean(data, split, max_frames)
    b = None
    if bundle is not None:
        from ..bundle import load_bundle

        b = load_bundle(bundle)
    if tasks is None:
        tasks = b.tasks if b is not None else list(deg.TASKS)
    tasks = list(tasks)
    kw = {} if threads is None else {"threads": threads}
    result = {} if out is None else out
    result.update({"data": source, "frames": int(len(clean)), "frame_size": list(clean.shape[1:][::-1]),
                   "seed": seed, "tasks": tasks, "methods": {}, "continual": {}, "routes": {},
                   "router": None, "bundle": str(b.path) if b is not None else None})

    has_router = router is not None or (b is not None and b.router is not None)
    # what this run will measure, in order, for a caller interrupted on the way (tir eval's partial
    # JSON lists what was not measured); removed when the run completes
    result["planned"] = (["degraded"] + [m for m in ("classical", "joint", "sequential") if m in baselines]
                         + ([OURS] if b is not None else []) + ([STUDENT] if b is not None and b.student is not None else [])
                         + (["router"] if has_router else []) + ([OURS_AUTO] if has_router and b is not None else [])
                         + ([STUDENT_AUTO] if has_router and b is not None and b.student is not None else []))

    degraded = {t: deg.make_eval_set(clean, t, seed) for t in tqdm(tasks, desc="degrading", unit="task")}
    unseen_sets = {u: deg.make_eval_set(clean, u, seed) for u in unseen}
    methods = result["methods"]
    methods["degraded"] = {t: score(degraded[t], clean) for t in tasks}

    if "classical" in baselines:
        from .baselines import classical_chain

        methods["classical"] = {t: score(classical_chain(degraded[t]), clean)
                                for t in tqdm(tasks, desc="classical", unit="task")}

    if "joint" in baselines:
        if not joint:
            raise ValueError("--baselines joint needs --joint PATH (joint.onnx from the baseline training)")
        engine = load_engine(_onnx_in(joint, "joint.onnx"), backend=backend, **kw)
        methods["joint"] = {t: score(run_engine(engine, degraded[t]), clean)
                            for t in tqdm(tasks, desc="joint", unit="task")}
        result["routes"]["joint"] = {"ms_per_frame": time_engine(engine, clean[0])}

    if "sequential" in baselines:
        if not sequential:
            raise ValueError("--baselines sequential needs --sequential DIR (the sequential-after-<task>.onnx files)")
        rows = {}
        for i, t in enumerate(tqdm(tasks, desc="sequential", unit="ckpt")):
            path = _onnx_in(sequential, f"sequential-after-{t}.onnx", required=False)
            if path is None:
                continue
            engine = load_engine(path, backend=backend, **kw)
            rows[t] = {u: score(run_engine(engine, degraded[u]), clean) for u in tasks[: i + 1]}
        result["continual"]["sequential"] = rows
        if rows:
            methods["sequential"] = rows[list(rows)[-1]]

    runner = None
    if b is not None:
        ours, rows = {}, {}
        for t in tqdm(tasks, desc="ours", unit="route"):
            engine = load_engine(b.route_path(t), backend=backend, **kw)
            ours[t] = score(run_engine(engine, degraded[t]), clean)
            info = b.task_info(t)
            result["routes"][t] = {"params": info.get("params"), "gmac_640x512": info.get("gmac_640x512"),
                                   "ms_per_frame": time_engine(engine, clean[0])}
        for i, t in enumerate(tasks):
            rows[t] = {u: ours[u] for u in tasks[: i + 1]}
        methods[OURS] = ours
        result["continual"][OURS] = rows
        if b.student is not None:
            _student_rows(b, tasks, degraded, clean, kw, result)
        if b.router is not None:
            runner = RouterRunner(b.router_path, b.router, backend, threads)
    if router is not None:
        from ..router import load_router_entry

        runner = RouterRunner(*load_router_entry(router), backend=backend, threads=threads)
    if runner is not None:
        result["router"] = evaluate_router(runner, clean, degraded, unseen_sets)
        if b is not None:
            methods[OURS_AUTO] = _auto_routed(b, runner, degraded, clean, backend, kw)
            if b.student is not None:
                methods[STUDENT_AUTO] = _student_mixed(b, runner, degraded, clean, kw)
    del result["planned"]
    return result


def _student_rows(b, tasks, degraded, clean, kw, result) -> None:
    """The bundle's student on every task with its own one-hot prompt (row ``student``) and its
    cost (``routes["student"]``)."""
    from ..backends.student import StudentEngine

    engine = StudentEngine(b.student_path, **kw)
    prompts = list(b.student["prompts"])
    rows = {}
    for t in tasks:
        if t not in prompts:
            continue
        w = np.zeros(len(prompts), np.float32)
        w[prompts.index(t)] = 1.0
        rows[t] = score(np.stack([engine.infer(f[None, None], w)[0, 0] for f in degraded[t]]), clean)
    result["methods"][STUDENT] = rows
    result["routes"]["student"] = {"params": b.student.get("params"), "gmac_640x512": b.student.get("gmac_640x512"),
                                   "ms_per_frame": time_engine(engine, clean[0])}


def _student_mixed(b, runner: RouterRunner, degraded, clean, kw) -> dict:
    """Every frame through the student with the router's soft scores as its prompt mix
    (clean/unknown verdicts: pass-through, as the Restorer does)."""
    from ..backends.student import StudentEngine, prompt_mix

    engine = StudentEngine(b.student_path, **kw)
    prompts = list(b.student["prompts"])
    out = {}
    for t, frames in degraded.items():
        emb = apply_adaptation(runner.embed(frames), runner.adaptation)
        decisions = classify(emb, runner.codebook, runner.classes, runner.threshold, runner.temperature)
        restored = []
        for f, e, d in zip(frames, emb, decisions):
            if d["task"] in (CLEAN, UNKNOWN):
                restored.append(f)
                continue
            w = prompt_mix(e, runner.codebook, runner.classes, runner.temperature, prompts)
            restored.append(np.asarray(engine.infer(f[None, None], w))[0, 0])
        out[t] = score(np.stack(restored), clean)
    return out


def _auto_routed(b, runner: RouterRunner, degraded, clean, backend, kw) -> dict:
    """Every frame goes through the route the router picks for it (clean/unknown: pass-through)."""
    from ..backends import load_engine

    engines = {}
    out = {}
    for t, frames in degraded.items():
        restored = []
        for f, d in zip(frames, runner.classify(frames)):
            route = d["task"]
            if route in (CLEAN, UNKNOWN) or route not in b.tasks:
                restored.append(f)
                continue
            if route not in engines:
                engines[route] = load_engine(b.route_path(route), backend=backend, **kw)
            restored.append(np.asarray(engines[route].infer(f[None, None]))[0, 0])
        out[t] = score(np.stack(restored), clean)
    return out


def _onnx_in(path, name: str, required: bool = True) -> Optional[Path]:
    p = Path(path)
    if p.is_file():
        return p
    if (p / name).is_file():
        return p / name
    if required:
        raise FileNotFoundError(f"no {name} in {p}" if p.is_dir() else f"no such file {p}")
    return None


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------

def _fmt(cell: Optional[dict]) -> str:
    return "      —      " if cell is None else f"{cell['psnr']:6.2f}/{cell['ssim']:.3f}"


def format_report(result: dict) -> str:
    """The :func:`evaluate` result as a plain-text report: per-task PSNR (dB) / SSIM tables of every
    method, then the router's figures when present.
    """
    tasks = result["tasks"]
    lines = [f"data: {result['data']}, {result['frames']} frames {result['frame_size'][0]}×"
             f"{result['frame_size'][1]}, seed {result['seed']}; cells: PSNR dB / SSIM"]
    head = f"{'method':<26}" + "".join(f"{t:>15}" for t in tasks) + f"{'mean':>15}"
    lines += ["", "per task", head]
    for name, per_task in result["methods"].items():
        cells = [per_task.get(t) for t in tasks]
        valid = [c for c in cells if c]
        mean = {"psnr": np.mean([c["psnr"] for c in valid]), "ssim": np.mean([c["ssim"] for c in valid])} if valid else None
        lines.append(f"{name:<26}" + "".join(f"{_fmt(c):>15}" for c in cells) + f"{_fmt(mean):>15}")
    for name, rows in result["continual"].items():
        if not rows:
            continue
        lines += ["", f"continual: {name}, row = model after task t (routes/checkpoint up to t)", head]
        for t, row in rows.items():
            cells = [row.get(u) for u in tasks]
            valid = [c for c in cells if c]
            mean = {"psnr": np.mean([c["psnr"] for c in valid]), "ssim": np.mean([c["ssim"] for c in valid])}
            lines.append(f"{'after ' + t:<26}" + "".join(f"{_fmt(c):>15}" for c in cells) + f"{_fmt(mean):>15}")
    if result["routes"]:
        lines += ["", f"{'route':<12}{'params':>10}{'GMAC@640x512':>14}{'ms/frame':>10}"]
        for t, r in result["routes"].items():
            params = "—" if r.get("params") is None else f"{r['params']:,}"
            gmac = "—" if r.get("gmac_640x512") is None else f"{r['gmac_640x512']:.2f}"
            lines.append(f"{t:<12}{params:>10}{gmac:>14}{r['ms_per_frame']:>10.1f}")
    r = result.get("router")
    if r:
        lines += ["", f"router: accuracy over the {len(tasks)} tasks {100 * r['accuracy_tasks']:.1f}% "
                      f"(nearest entry, ignoring unknown: {100 * r['accuracy_tasks_nearest']:.1f}%), "
                      f"with clean {100 * r['accuracy_with_clean']:.1f}%, false unknown "
                      f"{100 * r['false_unknown_rate']:.1f}%, {r['ms_per_frame']:.1f} ms/frame"]
        for u, rate in r["unknown_rate"].items():
            lines.append(f"unknown rate on unseen '{u}': {100 * rate:.1f}%")
        cols = list(r["classes"]) + [UNKNOWN]
        corner = "true/pred"
        lines.append(f"{corner:<12}" + "".join(f"{c[:8]:>9}" for c in cols))
        for t, row in r["confusion"].items():
            lines.append(f"{t:<12}" + "".join(f"{row[c]:>9}" for c in cols))
    return "\n".join(lines)


PLOT_ORDER = ("degraded", "classical", "sequential", "joint", OURS, OURS_AUTO)


def plot_report(result: dict, path) -> Path:
    """Bar chart of PSNR per task, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["tasks"]
    names = [m for m in PLOT_ORDER if m in result["methods"]]
    names += [m for m in result["methods"] if m not in names]
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 4))
    for k, name in enumerate(names):
        vals = [result["methods"][name].get(t, {}).get("psnr", np.nan) for t in tasks]
        ax.bar(np.arange(len(tasks)) + (k - (len(names) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(tasks)))
    ax.set_xticklabels(tasks)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{result['data']}, {result['frames']} frames, seed {result['seed']}")
    ax.legend(fontsize=8, ncol=min(3, len(names)))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def psnr_frames(sets: str, split: str, n: int, task: Optional[str]) -> Dict[str, Any]:
    """Clean frames (``n`` in all, drawn evenly from the first ⌈n/sets⌉ of each registered set's
    ``split``, 640×512 at native scale) and
    their copies degraded with ``task`` (seed 0, engines/degrade.make_eval_set). UsageError when
    there is no degradation to undo, DatasetError when the sets do not load (both exit 2).

    Raises:
        UsageError: ``task`` is None (nothing to undo).
        DatasetError: the sets do not load.
    """
    from tir.edge.errors import UsageError

    from ..degrade import make_eval_set
    from . import datasets as dsets

    if not task:
        raise UsageError("--psnr-data needs frames to restore: give --degrade TASK or --task TASK")
    names = dsets.parse_sets(sets)
    per_set = -(-int(n) // len(names))        # the first frames of every set, n in all
    clean = dsets.load_unit_frames(names, split, max_frames=per_set)
    clean = clean[np.sort(np.random.default_rng(0).choice(len(clean), min(n, len(clean)), replace=False))]
    return {"clean": clean, "degraded": make_eval_set(clean, task, seed=0), "data": f"{sets} {split}",
            "task": task}
