"""Leave-one-camera-out: does the router generalise to a camera it never saw?

For each camera set k of ``sets``, a router is trained on the other sets' train splits
(:func:`tir.engines.training.train.train_router_for_bundle`, same recipe as the shipped router:
domain randomisation and the sensor-FPN variants), written into a copy of the bundle (routes
unchanged), and camera k's test split is measured through the live pipeline
(:func:`tir.engines.training.camera_eval.evaluate_set`: router accuracy, clean identity, gain per task).
Then the router is adapted to camera k from its unlabeled train frames
(:func:`tir.engines.training.adapt_measure.measure_adaptation`, UDAIR-style CORAL) and the router accuracy is
measured again. Nothing of camera k's labels or test frames is used for training or choices.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional, Sequence

from . import datasets as dsets


def leave_one_out(bundle, sets: Sequence[str], work_dir, steps: int = 1500, draws: int = 2,
                  seed: int = 0, threads: int = 2, max_frames: Optional[int] = None,
                  adapt_frames: int = 200, command: str = "", only: Optional[Sequence[str]] = None,
                  quantize: float = 0.0, balance: int = 1, out: Optional[dict] = None) -> dict:
    """Run the protocol above for every set; returns (and writes ``work_dir/leave_out.json``)
    {"sets": {k: {"trained_on", "camera", "router_live" (live path, engines/training/camera_eval.py),
    "router_before_adapt" / "router_after_adapt" (both in tir adapt --measure's protocol),
    "clean_identity", "min_gain_auto", "per_task", "seconds"}}}. The two protocols differ
    (the live path degrades counts before the preprocessing), so only before/after compare. Raises DatasetError for an
    unknown set or one without clean frames, ValueError for fewer than two sets. ``only``: leave
    out just these sets (each still trained on all the others), e.g. to spread the work. A virtual
    set (the virtual camera) trains every router and is never left out. ``quantize``, ``balance``
    and ``draws``: the router recipe (:func:`tir.engines.training.train.train_router_for_bundle`).
    ``out``: the dict the result is built in (set by set, so a caller interrupted by Ctrl-C still
    holds the sets finished before it)."""
    from .adapt_measure import measure_adaptation
    from .camera_eval import evaluate_set
    from .train import train_router_for_bundle

    names = dsets.parse_sets(sets)
    if len(names) < 2:
        raise ValueError("leave-one-out needs at least two camera sets")
    cameras = [n for n in names if not dsets.dataset(n).virtual]
    for n in cameras:
        if not dsets.dataset(n).clean:
            raise dsets.DatasetError(f"data set {n} cannot be left out: it has no clean camera frames")
    if not cameras:
        raise ValueError("leave-one-out needs at least one camera set to leave out (virtual sets only train)")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    out = {} if out is None else out
    out.update({"bundle": str(bundle), "steps": steps, "draws": draws, "quantize": quantize, "balance": balance,
                "seed": seed, "command": command, "sets": {}})
    targets = cameras if not only else [k for k in cameras if k in set(only)]
    if only and len(targets) != len(set(only)):
        raise ValueError(f"--leave-out-only {list(only)} must name sets of --leave-out {names}")
    for k in targets:
        t0 = time.monotonic()
        rest = [n for n in names if n != k]
        b = train_router_for_bundle(bundle, work / k / "bundle", rest, work / k, steps=steps, seed=seed,
                                    threads=threads, draws=draws, max_frames=max_frames, command=command,
                                    quantize=quantize, balance=balance)
        r = evaluate_set(b, k, "test", seed, max_frames=max_frames, threads=threads, true_routes=False)
        a = measure_adaptation(b, [k], frames=adapt_frames, seed=seed, threads=threads)["sets"][k]
        out["sets"][k] = {
            "trained_on": rest, "camera": dsets.dataset(k).camera,
            "router_live": r["router"]["accuracy_tasks"],
            "router_before_adapt": (a.get("before") or {}).get("tasks"),
            "router_after_adapt": (a.get("after") or {}).get("tasks"),
            "adapt": a, "clean_identity": r["clean_identity"], "min_gain_auto": r["min_gain_auto"],
            "per_task": r["per_task"], "seconds": round(time.monotonic() - t0, 1)}
        (work / "leave_out.json").write_text(json.dumps(out, indent=1))
    return out


def format_leave_out(result: dict) -> str:
    """One row per left-out camera."""
    head = (f"{'left out':<17} {'router':>7} {'adapt: before':>13} {'after':>8} {'clean med':>9} {'p5':>6} "
            f"{'min gain':>8}  trained on")
    lines = [head, "-" * len(head)]
    for k, r in result["sets"].items():
        before, after = r["router_before_adapt"], r["router_after_adapt"]
        lines.append(f"{k:<17} {100 * r['router_live']:>6.1f}% "
                     f"{(f'{100 * before:.1f}%' if before is not None else '-'):>13} "
                     f"{(f'{100 * after:.1f}%' if after is not None else 'refused'):>8} "
                     f"{r['clean_identity']['median']:>9.2f} {r['clean_identity']['p5']:>6.2f} "
                     f"{r['min_gain_auto']:>+8.2f}  {','.join(r['trained_on'])}")
    return "\n".join(lines)
