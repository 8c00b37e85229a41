"""Sequence evaluation (``tir eval --data SET --sequence``): a camera's frames as one live stream
through the Restorer with ``tir run``'s own schedule, to measure what the per-frame table cannot:
how fast a degradation that sets in is taken up (onset), how fast a route is left when it stops
(recovery), and what the frames in between get.

The per-camera table (engines/training/camera_eval.py :func:`evaluate_set`) judges every frame on
its own: the router runs on every frame (``every=1``), one verdict switches the route
(``hysteresis=1``) and the gates' histories hold the camera's clean frames only. ``tir run`` runs the
router every ``every`` frames (engines/restorer.py, default 8) and leaves a route only after
``hysteresis`` verdicts in a row (default 3) disagree; its gates learn from the stream as it comes.
Here the Restorer is built as ``tir run`` builds it (engines/loading.py ``load_model``: the
Restorer's own defaults; nothing pinned, as for a camera without ``--reference``) and the frames
go through one ``Preprocess -> Infer -> Postprocess`` chain of the pipeline's own stages, kept for
the whole stream (edge/pipeline/pipeline.py builds the same three), so the normaliser, the
defect map and every gate carry from frame to frame as they do live.

The stream (:func:`stream_plan`): a start-up segment of clean frames, then for each task of the
bundle a segment of that degradation followed by a segment of clean frames, each ``segment``
frames long. A camera looks at a scene for a while: each stored frame is shown ``hold``
consecutive times (the set's frames in turn, looped), each time with a fresh draw of the
segment's degradation (the per-frame table's degradations, engines/degrade.py, seeded by
``[seed, frame index]``). A set of several frame sizes is one camera per size: the most common
size is streamed.

Per segment: ``right``, the share of its frames restored by the segment's own task (a clean
segment: passed through); ``first_right``, the index of the first such frame (frames after the
onset; None: never); ``gain_db``, the mean dB gained over the shown input against the clean frame
(a clean segment: ``identity`` median and p5 dB of the output from the frame itself, 99 for
identical frames). Y16 sets are also scored display-referred (``gain_display_db``, as
:func:`~tir.engines.training.camera_eval.display_map` shows them).
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import datasets as dsets
from .camera_eval import degrade_counts, display_map, scene_view
from ..metrics import psnr
from ..router import CLEAN

#: frames per segment: 6 router calls at ``tir run``'s default schedule (every 8 frames), enough for
#: a switch that needs 3 verdicts in a row; 1.6 s of a 30 fps camera
DEFAULT_SEGMENT = 48
#: consecutive frames that show the same stored scene (a camera looking at a scene for a while)
DEFAULT_HOLD = 4
CAP_DB = 99.0


def stream_plan(tasks: Sequence[str], segment: int = DEFAULT_SEGMENT) -> List[Tuple[str, int]]:
    """The stream's segments in order: ``[(CLEAN, segment)]`` (the start-up), then ``(task,
    segment), (CLEAN, segment)`` for each task. Raises ValueError for a segment under 1 frame."""
    if int(segment) < 1:
        raise ValueError(f"a segment needs at least 1 frame, got {segment}")
    plan = [(CLEAN, int(segment))]
    for t in tasks:
        plan += [(t, int(segment)), (CLEAN, int(segment))]
    return plan


def one_size(frames: Sequence[np.ndarray]) -> Tuple[List[np.ndarray], str]:
    """The frames of the most common (H, W) (one camera per size), in order, and that size as
    ``"WxH"``."""
    sizes = Counter(f.shape[:2] for f in frames)
    (h, w), _ = sizes.most_common(1)[0]
    return [f for f in frames if f.shape[:2] == (h, w)], f"{w}x{h}"


def _db(a: np.ndarray, b: np.ndarray) -> float:
    return min(float(psnr(a, b)), CAP_DB)


def _segment_summary(task: str, routes: List[str], gains: List[float], dgains: List[float],
                     identity: List[float], passthrough: str, released: Sequence[int] = ()) -> dict:
    want = passthrough if task == CLEAN else task
    right = [r == want for r in routes]
    row = {"task": task, "frames": len(routes), "right": float(np.mean(right)),
           "first_right": next((i for i, r in enumerate(right) if r), None),
           "routes": dict(sorted(Counter(routes).items())),
           # the routes frame by frame, run-length coded: [[route, frames], ...]
           "runs": [[r, len(list(g))] for r, g in itertools.groupby(routes)],
           # the frames (indices in the segment) the route passed through between verdicts, as they
           # showed none of its parts (Restorer._released): "passthrough" in runs, the route unchanged
           "released": [int(i) for i in released]}
    if task == CLEAN:
        row["identity"] = {"median": float(np.median(identity)), "p5": float(np.percentile(identity, 5))}
    else:
        row["gain_db"] = float(np.mean(gains))
        if dgains:
            row["gain_display_db"] = float(np.mean(dgains))
    return row


def evaluate_sequence(bundle, name: str, split: str = "test", seed: int = 0, max_frames: Optional[int] = None,
                      segment: int = DEFAULT_SEGMENT, hold: int = DEFAULT_HOLD, backend: str = "auto",
                      threads: Optional[int] = None, root=None, progress: bool = True,
                      contrast_gate: bool = True, fpn_gate: bool = True, blur_gate: bool = True,
                      tone_align: bool = True) -> dict:
    """Stream one registered set (module docstring) through a Restorer with ``tir run``'s schedule.

    Args:
        bundle: a bundle folder (or a loaded ``Bundle``) with a router.
        name: a registered set with clean frames (engines/training/datasets.py, or a folder
            registered by ``tir eval --data DIR``).
        split, max_frames: which stored frames (the first ``max_frames`` of the split).
        segment: frames per segment (>= 1); hold: consecutive frames per stored scene (>= 1).
        backend, threads: the Restorer's engine backend and intra-op threads.
        contrast_gate, fpn_gate, blur_gate, tone_align: the Restorer's gates (all on in ``tir run``).

    Returns:
        JSON-ready dict: ``set``, ``size`` ("WxH" streamed), ``frames`` (stored frames used),
        ``other_sizes`` (stored frames of other sizes, left out),
        ``every``/``hysteresis`` (the schedule), ``segments`` (list of per-segment dicts, module
        docstring), ``summary`` (``startup`` clean segment's row; ``onset_frames`` median of the
        task segments' ``first_right`` over those that get right, ``never_right`` the tasks whose
        segment never does; ``recovery_frames`` and ``never_recovered`` the same for the clean
        segments after a task whose route was taken (named by that task); ``clean_passed`` share of
        frames passed through in those clean segments; ``min_gain_db``), ``short`` (True when a
        segment is shorter than ``2 * every`` frames, what a switch may take: then no segment may
        ever change the route and the table says so), ``seconds``.

    Raises:
        DatasetError: an unknown set, a set without clean frames, or no frame in the split.
        ValueError: ``segment`` or ``hold`` under 1.
    """
    from tqdm import tqdm

    from tir.edge.frame import Frame
    from tir.edge.normalize import offset_binary, signed_words
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    from ..loading import normalizer_for
    from ..restorer import PASSTHROUGH, Restorer

    if int(hold) < 1:
        raise ValueError(f"hold needs at least 1 frame, got {hold}")
    ds = dsets.dataset(name)
    if not ds.clean:
        raise dsets.DatasetError(f"{name}: the sequence evaluation needs clean frames to score against; "
                                 "this set holds real degraded frames (use tir eval --data without --sequence)")
    split = split if ds.splits else dsets.ALL
    stored = dsets.load_counts(name, split, root, max_frames, dropped=[])
    if not stored:
        raise dsets.DatasetError(f"{name}: no frame of the set's {ds.bits}-bit depth in {split}")
    kept, size = one_size(stored)
    other_sizes = len(stored) - len(kept)   # one camera per size: the others are not this stream's
    stored = kept
    auto = Restorer(bundle, backend=backend, threads=threads, contrast_gate=contrast_gate, fpn_gate=fpn_gate,
                    blur_gate=blur_gate, tone_align=tone_align)
    plan = stream_plan(list(auto.routes), segment)
    normalizer = normalizer_for(auto)
    pre, infer, post = Preprocess(normalizer), Infer(auto), Postprocess(normalizer)
    scene_referred = ds.bits > 8
    segments: List[dict] = []
    t0 = time.monotonic()
    k = 0   # frame index in the stream
    bar = tqdm(total=sum(n for _, n in plan), desc=f"{name} sequence", unit="frame", disable=not progress)
    try:
        for task, n in plan:
            routes, gains, dgains, identity, released_at = [], [], [], [], []
            for _ in range(n):
                f = stored[(k // int(hold)) % len(stored)]
                order = offset_binary if scene_referred and signed_words(f) else (lambda x: x)
                counts, clean, meta, peak = degrade_counts(f, ds.bits, task, np.random.default_rng([seed, k]))
                frame = Frame(raw=counts, seq=k, t_capture=time.monotonic(), meta=dict(meta))
                released = auto.released
                pre(frame)
                infer(frame)
                post(frame)
                # what restored the frame: the route, or nothing when the frame showed none of the
                # route's parts and the route passed it through (Restorer._released)
                let_go = auto.released > released
                if let_go:
                    released_at.append(len(routes))
                routes.append(PASSTHROUGH if let_go else auto.route)
                out = order(frame.restored)
                # the reference and the input as the stream's own defect replacement gives them
                mask = None if pre.defects is None else pre.defects.mask
                ref, shown = order(scene_view(clean, mask)), order(scene_view(counts, mask))
                if task == CLEAN:
                    identity.append(_db(out / peak, ref / peak))
                else:
                    gains.append(_db(out / peak, ref / peak) - _db(shown / peak, ref / peak))
                    if scene_referred:
                        d_ref = display_map(ref)
                        dgains.append(_db(display_map(out), d_ref) - _db(display_map(shown), d_ref))
                k += 1
                bar.update(1)
            segments.append(_segment_summary(task, routes, gains, dgains, identity, PASSTHROUGH, released_at))
    finally:
        bar.close()
        auto.close()

    def median_or_none(values):
        values = [v for v in values if v is not None]
        return float(np.median(values)) if values else None

    tasks_rows = [s for s in segments if s["task"] != CLEAN]
    # the clean segments that follow a task whose route was taken: there is a route to leave
    after = [segments[i] for i in range(2, len(segments), 2) if segments[i - 1]["first_right"] is not None]
    summary = {"startup": segments[0],
               "onset_frames": median_or_none([s["first_right"] for s in tasks_rows]),
               "never_right": [s["task"] for s in tasks_rows if s["first_right"] is None],
               "recovery_frames": median_or_none([s["first_right"] for s in after]),
               "never_recovered": [segments[i - 1]["task"] for i in range(2, len(segments), 2)
                                   if segments[i]["first_right"] is None and segments[i - 1]["first_right"] is not None],
               "clean_passed": float(np.mean([s["right"] for s in after])) if after else None,
               "min_gain_db": min((s.get("gain_display_db", s["gain_db"]) for s in tasks_rows), default=None)}
    return {"set": name, "camera": ds.camera, "bits": ds.bits, "split": split, "size": size,
            "frames": len(stored), "other_sizes": other_sizes, "segment": int(segment), "hold": int(hold), "seed": seed,
            "every": auto.every, "hysteresis": auto.hysteresis, "segments": segments, "summary": summary,
            "short": int(segment) < 2 * auto.every,
            "seconds": round(time.monotonic() - t0, 1)}


def format_sequence(result: Dict[str, dict]) -> str:
    """The text table of :func:`evaluate_sequence` results, ``{set: result}``: one line per
    segment (task, share of frames right, first right frame, dB gained or clean identity)."""
    lines = []
    for name, r in result.items():
        left = f", {r['other_sizes']} of other sizes left out" if r.get("other_sizes") else ""
        lines.append(f"\n{name} ({r['size']}, {r['frames']} stored frames{left}, each shown {r['hold']}x; "
                     f"router every {r['every']} frames, hysteresis {r['hysteresis']}; {r['seconds']} s)")
        if r.get("short"):
            lines.append(f"note: segments of {r['segment']} frames are shorter than a switch may take (up to "
                         f"{2 * r['every'] - 1} frames: the first verdict against the route and the others within "
                         f"{r['every']}); give --segment-frames {2 * r['every']} or more")
        lines.append(f"{'segment':<8} {'right':>6} {'first right':>11}  {'dB':>14}  routes")
        for s in r["segments"]:
            first = "never" if s["first_right"] is None else f"frame {s['first_right']}"
            if s["task"] == CLEAN:
                db = f"{s['identity']['median']:.1f}/{s['identity']['p5']:.1f}"
            else:
                db = f"{s.get('gain_display_db', s['gain_db']):+.2f}"
            routes = ", ".join(f"{k} {v}" for k, v in s["routes"].items())
            lines.append(f"{s['task']:<8} {100 * s['right']:5.1f}% {first:>11}  {db:>14}  {routes}")
        m = r["summary"]
        onset = "-" if m["onset_frames"] is None else f"{m['onset_frames']:g} frames"
        if m["never_right"]:
            onset += f" (never right: {', '.join(m['never_right'])})"
        recovery = "-" if m["recovery_frames"] is None else f"{m['recovery_frames']:g} frames"
        if m["never_recovered"]:
            recovery += f" (route kept through the whole clean segment after: {', '.join(m['never_recovered'])})"
        passed = "-" if m["clean_passed"] is None else f"{100 * m['clean_passed']:.1f} %"
        worst = "-" if m["min_gain_db"] is None else f"{m['min_gain_db']:+.2f} dB"
        lines.append(f"onset (median first right frame of a degradation): {onset}; recovery (median first "
                     f"pass-through after one whose route was taken): {recovery}; clean frames passed through "
                     f"after those: {passed}; worst degradation's gain {worst}")
    lines.append("(dB: a degradation's mean gain over the shown input; clean: the output's median/p5 dB from the "
                 "frame itself; Y16 sets display-referred)")
    return "\n".join(lines)


def evaluate_sequences(bundle, sets, out: Optional[dict] = None, **kw) -> dict:
    """:func:`evaluate_sequence` for every set of ``sets`` (names, ``"all"`` or a comma string;
    engines/training/datasets.py ``parse_sets``) that holds clean frames; ``bundle`` a folder or a
    loaded ``Bundle`` (loaded once for every set); keyword arguments as there. Returns ``{"bundle": str, "sets": {name: result}, "skipped": [names without clean
    frames]}``, built in ``out`` when given (filled set by set, so a caller interrupted by Ctrl-C
    still holds the sets measured before it)."""
    out = {} if out is None else out
    out.update({"bundle": str(getattr(bundle, "path", bundle)), "sets": {}, "skipped": []})
    for name in dsets.parse_sets(sets):
        if not dsets.dataset(name).clean:
            out["skipped"].append(name)
            continue
        out["sets"][name] = evaluate_sequence(bundle, name, **kw)
    return out


def plot_sequence(result: dict, path) -> str:
    """Two bars per set along the stream: the degradation shown (upper) and the route that
    restored each frame (lower), one colour per task (clean and pass-through share one), so a lag
    or a wrong route shows as a colour that differs. Needs matplotlib; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.patches import Patch

    from ..restorer import PASSTHROUGH

    sets = list(result["sets"])
    fig, axes = plt.subplots(len(sets), 1, figsize=(14, 1.2 + 1.4 * len(sets)), squeeze=False)
    colours = plt.get_cmap("tab10")
    names: List[str] = [PASSTHROUGH]

    def colour(route):
        if route not in names:
            names.append(route)
        return colours(names.index(route) % 10)

    for ax, name in zip(axes[:, 0], sets):
        x = 0
        for s in result["sets"][name]["segments"]:
            # upper bar: what the stream shows (a clean segment in pass-through's colour: what is right there)
            ax.barh(1, s["frames"], left=x, height=0.6, color=colour(PASSTHROUGH if s["task"] == CLEAN else s["task"]))
            for route, n in s["runs"]:   # lower bar: the route that restored each frame
                ax.barh(0, n, left=x, height=0.6, color=colour(route))
                x += n
        ax.set_yticks([0, 1], ["restored by", "shown"], fontsize=7)
        ax.set_xlim(0, x)
        ax.set_title(name, fontsize=8, loc="left")
    axes[0, 0].legend([Patch(color=colour(n)) for n in names], [n.replace(PASSTHROUGH, "clean / pass-through")
                                                                   for n in names],
                      ncol=len(names), fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1, 0].set_xlabel(f"frame of the stream (router every {result['sets'][sets[0]]['every']} frames, "
                           f"hysteresis {result['sets'][sets[0]]['hysteresis']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)
