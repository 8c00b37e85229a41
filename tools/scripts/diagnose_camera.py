"""Why a camera folder fails ``tir eval --data DIR``: per frame and class, the router's own verdict,
the gates' verdict and measures, and the PSNR of input and output, on camera_eval's own path.

Usage: python3 tools/scripts/diagnose_camera.py FOLDER [CLASS[,CLASS]] [--max-frames N] [--bundle DIR]

The loop is :func:`tir.engines.training.camera_eval.evaluate_set`'s for a folder (the gates warmed
with the folder's frames, frame i of class k degraded with the generator ``[seed, i, k]``, the
Restorer reset per frame, ``user_path``), restricted to the classes asked for (default ``clean``).
Since the gates' history grows with every routed frame, a subset of classes sees another history
than the full evaluation; the verdicts of the full run are in its JSON's ``router.confusion``.

One line per frame and class::

    i class router=<router's verdict> -> <after the gates> route=<route run> conf=<confidence>
      | ext=<lowpass_extent> ext_ref=<camera median extent> ratio=<contrast gate ratio>
      | sigma=<white noise, FPN gate> sigma_thr=<its threshold> amp=<column FPN amplitude> amp_thr=<its threshold>
        cons=<consistency>
      | drop=<blur drop> drop_thr=<threshold> drop_noisy=<under noise> band=<noisy band>
      | in=<PSNR degraded> out=<PSNR output> dB

Units: extent, sigma and amplitude in model-input units ([0, 1]; sigma × 255 is grey levels on an
8-bit frame); PSNR against the clean frame at the frame's full scale (camera_eval). A gate that is
off prints ``-``.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np


def _r(v, nd=4) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def diagnose(folder: str, classes: List[str], max_frames: Optional[int] = 12, bundle=None, seed: int = 0,
             threads: int = 1) -> List[dict]:
    """The per-frame rows (see the module docstring) as dicts, printed as they come.

    Raises:
        DatasetError: the folder holds no readable frames (engines/training/datasets.py).
        ValueError: a class the bundle has no route for (the message lists them).
    """
    from tir.engines.bundle import default_bundle_path
    from tir.engines.contrast_gate import lowpass_extent
    from tir.engines.metrics import psnr
    from tir.engines.restorer import Restorer
    from tir.engines.training import camera_eval as ce
    from tir.engines.training import datasets as ds

    name = ds.register_folder(folder)
    bits = ds.dataset(name).bits
    frames = ds.load_counts(name, ds.ALL, None, max_frames)
    auto = Restorer(bundle or default_bundle_path(), every=1, hysteresis=1, threads=threads)
    all_classes = list(auto.routes) + ["clean"]
    bad = [c for c in classes if c not in all_classes]
    if bad:
        raise ValueError(f"no class {', '.join(bad)}; classes: {', '.join(all_classes)}")
    ce.warm_camera(auto, name, ds.ALL)
    rows = []
    for i, f in enumerate(frames):
        for k, c in enumerate(all_classes):
            if c not in classes:
                continue
            counts, clean, meta, peak = ce.degrade_counts(f, bits, c, np.random.default_rng([seed, i, k]))
            auto.reset()
            x, _ = ce.model_input(counts, meta)
            out = ce.user_path(auto, counts, meta)
            s = auto.status()
            cg, fg, bg = s["contrast"] or {}, s["fpn"] or {}, s["blur"] or {}
            row = {"frame": i, "class": c, "router": s["gated_from"] or s["decision"], "verdict": s["decision"],
                   "route": s["task"], "confidence": s["confidence"], "extent": lowpass_extent(x),
                   "extent_reference": cg.get("extent_reference"), "ratio": cg.get("ratio"),
                   "sigma": fg.get("white_sigma"), "sigma_threshold": fg.get("white_threshold"),
                   "amplitude": fg.get("amplitude"), "amplitude_threshold": fg.get("amplitude_threshold"),
                   "consistency": fg.get("consistency"), "drop": bg.get("drop"), "drop_threshold": bg.get("threshold"),
                   "drop_noisy": bg.get("drop_noisy"), "band_noisy": bg.get("band_noisy"),
                   "psnr_in": min(psnr(counts / peak, clean / peak), 99.0),
                   "psnr_out": min(psnr(out / peak, clean / peak), 99.0)}
            rows.append(row)
            print(f"{i:2d} {c:8s} router={row['router']} -> {row['verdict']} route={row['route']} "
                  f"conf={_r(row['confidence'], 2)} | ext={_r(row['extent'], 3)} ext_ref={_r(row['extent_reference'])} "
                  f"ratio={_r(row['ratio'])} | sigma={_r(row['sigma'], 5)} sigma_thr={_r(row['sigma_threshold'], 5)} "
                  f"amp={_r(row['amplitude'], 5)} amp_thr={_r(row['amplitude_threshold'], 5)} "
                  f"cons={_r(row['consistency'], 3)} | drop={_r(row['drop'])} drop_thr={_r(row['drop_threshold'])} "
                  f"drop_noisy={_r(row['drop_noisy'])} band={row['band_noisy'] or '-'} "
                  f"| in={row['psnr_in']:.2f} out={row['psnr_out']:.2f} dB", flush=True)
    auto.close()
    return rows


def main(argv=None) -> int:
    """The command line (module docstring); 0, or 2 with one line on stderr for a folder without
    readable frames or an unknown class."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="a folder of one camera's frames (as tir eval --data DIR)")
    p.add_argument("classes", nargs="?", default="clean", help="comma list of classes (default: clean)")
    p.add_argument("--max-frames", type=int, default=12, help="frames (default 12, as the report's runs)")
    p.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0, help="degradation seed (default 0)")
    a = p.parse_args(argv)
    from tir.engines.training.datasets import DatasetError

    try:
        diagnose(a.folder, a.classes.split(","), a.max_frames, a.bundle, a.seed)
    except (DatasetError, ValueError) as e:
        print(f"diagnose_camera: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
