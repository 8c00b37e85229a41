"""What column FPN alone gets from the noise task and from subtracting its column offsets
(engines/fpn_gate.py ``remove_column_fpn``), on real frames: the measurements behind the FPN
gate's choice between them (docs/cameras.md "Session 11").

Usage: python3 tools/scripts/column_fpn_check.py [--sets S[,S]] [--split val] [--max-frames 12]

Three tables, printed as they come:

1. **Column FPN added to clean frames** of each set (a random column offset of robust std
   a × the frame's span, span = 99th − 1st percentile, a in :data:`AMPLITUDES`): PSNR (dB) against
   the frame without the pattern of the input, of the noise task as deployed (the bundle's
   ``deploy`` for ``noise``, its output's extremes mapped onto the set's median block ends as the
   camera's tone alignment does), and of the input with its column offsets removed.
2. **Frames without column FPN** through ``remove_column_fpn`` (what a false detection would
   cost): PSNR of the output against the input.
3. **lynred_nonuc** (real frames of a microbolometer without NUC, no clean reference): column FPN
   (:func:`tir.engines.metrics.column_fpn`, grey levels) of the input, after the noise task and
   after ``remove_column_fpn``, and the low-pass correlation of each output with the input (the
   scene kept).

Frames are read from ``$TIR_DATA_ROOT`` (engines/training/datasets.py); nothing is written.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np

#: column-pattern amplitudes added in table 1, fraction of the frame's span (the sensor_fpn op's
#: weakest draw is 0.015)
AMPLITUDES = (0.005, 0.01, 0.015, 0.03, 0.05)
DEFAULT_SETS = ("roadscene", "hit_uav", "m3svd_magnity", "anti_uav", "chips_lepton35")


def _map_ends(y: np.ndarray, dst) -> np.ndarray:
    from tir.engines.contrast_gate import lowpass_ends

    lo, hi = lowpass_ends(y)
    a, b = dst
    return np.clip(a + (y - lo) * (b - a) / max(hi - lo, 1e-6), 0.0, 1.0)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    import cv2

    la = cv2.GaussianBlur(a.astype(np.float32), (0, 0), 3).ravel()
    lb = cv2.GaussianBlur(b.astype(np.float32), (0, 0), 3).ravel()
    return float(np.corrcoef(la, lb)[0, 1])


def check(sets: List[str], split: str = "val", max_frames: Optional[int] = 12, threads: int = 1) -> dict:
    """Print the three tables (module docstring) and return them: ``added`` [(set, a, input dB,
    noise task dB, offsets removed dB)], ``without`` [(set, mean dB, min dB)], ``lynred`` (column
    FPN of the input, the noise task's and the destriped output in grey levels, then the two
    scene correlations).

    Raises:
        DatasetError: a set is unknown or has no frames (engines/training/datasets.py).
    """
    from tir.engines.bundle import default_bundle_path
    from tir.engines.contrast_gate import lowpass_ends
    from tir.engines.fpn_gate import remove_column_fpn
    from tir.engines.metrics import column_fpn, psnr
    from tir.engines.restorer import Restorer
    from tir.engines.training import camera_eval as ce
    from tir.engines.training import datasets as ds

    noise = Restorer(default_bundle_path(), task="noise", threads=threads)
    out: dict = {"added": [], "without": [], "lynred": None}
    meta = {"bits": 14, "source_bits": 8}

    def run_noise(x: np.ndarray) -> np.ndarray:   # 8-bit grey in [0, 1] -> the noise task's output in [0, 1]
        g = np.round(x * 255.0).astype(np.uint16) << 6
        return ce.user_path(noise, g, meta) / 64.0 / 255.0

    print(f"1. column FPN added to clean {split} frames: PSNR (dB) against the frame without it; "
          f"noise task = {noise.runs} with the camera's tone")
    for name in sets:
        frames = [f.astype(np.float32) / 255.0 for f in ds.load_counts(name, split, None, max_frames)]
        camera = tuple(np.median([lowpass_ends(f) for f in frames], axis=0))
        for a in AMPLITUDES:
            rows = []
            for i, x0 in enumerate(frames):
                lo, hi = np.percentile(x0, (1, 99))
                z = np.random.default_rng([1, i]).standard_normal(x0.shape[1]).astype(np.float32)
                x = np.round(np.clip(x0 + a * max(hi - lo, 0.02) * z[None, :], 0, 1) * 255.0) / 255.0
                x = x.astype(np.float32)
                rows.append((psnr(x, x0), psnr(_map_ends(run_noise(x), camera), x0),
                             psnr(remove_column_fpn(x), x0)))
            m = np.mean(rows, axis=0)
            out["added"].append((name, a, *map(float, m)))
            print(f"  {name:15s} a={100 * a:4.1f} %: input {m[0]:6.2f}  noise task {m[1]:6.2f}  "
                  f"offsets removed {m[2]:6.2f}", flush=True)
    print(f"2. {split} frames without added FPN through remove_column_fpn: PSNR (dB) against themselves")
    for name in sets:
        frames = [f.astype(np.float32) / 255.0 for f in ds.load_counts(name, split, None, max_frames)]
        v = [min(psnr(remove_column_fpn(x), x), 99.0) for x in frames]
        out["without"].append((name, float(np.mean(v)), float(np.min(v))))
        print(f"  {name:15s} mean {np.mean(v):6.2f}  min {np.min(v):6.2f}", flush=True)
    print("3. lynred_nonuc (real, no NUC): column FPN in grey levels, scene kept (low-pass correlation)")
    frames = [f.astype(np.float32) / 255.0 for f in ds.load_counts("lynred_nonuc", ds.ALL, None, max_frames)]
    rows = []
    for x in frames:
        y, d = run_noise(x), remove_column_fpn(x)
        rows.append((column_fpn(x) * 255, column_fpn(y) * 255, column_fpn(d) * 255, _correlation(y, x),
                     _correlation(d, x)))
    m = np.mean(rows, axis=0)
    out["lynred"] = tuple(map(float, m))
    print(f"  input {m[0]:.2f}  noise task {m[1]:.2f} ({100 * (1 - m[1] / m[0]):.0f} % cut, scene {m[3]:.3f})  "
          f"offsets removed {m[2]:.2f} ({100 * (1 - m[2] / m[0]):.0f} % cut, scene {m[4]:.3f})")
    noise.close()
    return out


def main(argv=None) -> int:
    from tir.engines.training.datasets import DatasetError

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(DEFAULT_SETS), help="registered 8-bit sets, comma-separated")
    ap.add_argument("--split", default="val")
    ap.add_argument("--max-frames", type=int, default=12)
    args = ap.parse_args(argv)
    try:
        check([s for s in args.sets.split(",") if s], args.split, args.max_frames)
    except DatasetError as exc:
        print(f"column_fpn_check: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
