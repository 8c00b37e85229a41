#!/usr/bin/env python3
"""noise_vs_extent.py CAMERA ...: a contrast loss compresses a frame's noise with its extent; a
camera's own narrow scene does not (docs/cameras.md "Session 19", K23).

Each CAMERA is a folder of 8-bit PNG frames (an emulated camera) or SET:SPLIT of the data root
($TIR_DATA_ROOT, a set's split list). For its first 12 frames, clean and under the specs'
``contrast`` and ``CB`` (engines/degrade.py, re-quantised to 8 bits as ``tir eval`` does), it
prints the extent (engines/contrast_gate.py ``lowpass_extent``) over the camera's median clean
extent and the white-noise σ₁ (engines/fpn_gate.py ``flat_noise_sigmas`` on the centre window)
over the camera's median clean σ₁ (its floor, in grey levels). Frames that are not 8-bit grey
are skipped. Scratch measurement only: reads frames, writes nothing.
"""
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from tir.engines import degrade as deg
from tir.engines.contrast_gate import centre_window, lowpass_extent
from tir.engines.fpn_gate import flat_noise_sigmas

FRAMES = 12


def frames(arg):
    """The camera's first :data:`FRAMES` frames as read (uint8 or other)."""
    if ":" in arg:
        name, split = arg.split(":")
        root = Path(os.environ.get("TIR_DATA_ROOT", "../shared/data"))
        names = (root / f"{name}-{split}.txt").read_text().split()[:FRAMES]
        paths = [root / name / n for n in names]
    else:
        paths = sorted(Path(arg).glob("*.png"))[:FRAMES]
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]


def main(argv):
    for arg in argv:
        shown = [f for f in frames(arg) if f is not None and f.dtype == np.uint8 and f.ndim == 2]
        if not shown:
            print(f"{arg}: no 8-bit grey frames")
            continue
        rows = []
        for i, f in enumerate(shown):
            x = f.astype(np.float32) / 255.0
            for k, task in enumerate(("clean", "contrast", "CB")):
                y = x if task == "clean" else (np.clip(np.rint(
                    deg.degrade(x[None], task, np.random.default_rng([0, i, k]))[0] * 255.0), 0, 255) / 255.0)
                rows.append((task, lowpass_extent(y), flat_noise_sigmas(centre_window(y.astype(np.float32)))[0] * 255.0))
        floor = float(np.median([r[2] for r in rows if r[0] == "clean"]))
        ext = float(np.median([r[1] for r in rows if r[0] == "clean"]))
        print(f"{arg}: floor σ₁ {floor:.2f} grey levels, median extent {ext:.2f}")
        for task in ("clean", "contrast", "CB"):
            e = np.array([r[1] for r in rows if r[0] == task]) / ext
            s = np.array([r[2] for r in rows if r[0] == task]) / floor if floor > 0 else np.full(len(e), np.nan)
            order = np.argsort(e)
            print(f"  {task:8s} extent/median {np.round(e[order], 2)}")
            print(f"  {'':8s} σ₁/floor      {np.round(s[order], 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
