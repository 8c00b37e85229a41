"""The learn part of tools/openworld_demo.sh, measured on held-out frames (docs/open-world.md).

Usage: python3 tools/openworld/learn_report.py BUNDLE TASK SPEC [FRAMES]

RoadScene test-split frames (held out: tir learn trains on train and chooses on val), the first
FRAMES (default 16) at 640x512, degraded with SPEC (the true degradation, seeded), go through
BUNDLE's route TASK (ONNX Runtime, CPU, fp32); prints the mean PSNR of the degraded input and of
the route's output against the clean frames, and what the bundle's router says about the
degraded frames (its verdicts with the runtime's rules: class, unknown, uncertain).
"""
import sys

import numpy as np


def main(bundle_dir: str, task: str, spec: str, n: int = 16) -> int:
    import onnxruntime as ort

    from tir.engines import degrade as deg
    from tir.engines.metrics import psnr
    from tir.engines.restorer import Restorer

    clean = deg.load_roadscene("test")[:n]
    degraded = deg.degrade(clean, spec, np.random.default_rng(12345))
    r = Restorer(bundle_dir, backend="onnxruntime", threads=2)
    sess = ort.InferenceSession(str(r.bundle.route_path(task)), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [np.clip(sess.run(None, {name: d[None, None]})[0][0, 0], 0, 1) for d in degraded]
    before = float(np.mean([psnr(d, c) for d, c in zip(degraded, clean)]))
    after = float(np.mean([psnr(o, c) for o, c in zip(outs, clean)]))
    verdicts = {}
    for d in degraded:
        v = r.classify(d[None, None])[0]
        key = v["task"] if v["task"] == "unknown" or v["confidence"] >= r.min_confidence else "uncertain"
        verdicts[key] = verdicts.get(key, 0) + 1
    print(f"{len(clean)} RoadScene test frames degraded with {spec}: PSNR degraded {before:.2f} dB -> route "
          f"{task} {after:.2f} dB ({after - before:+.2f} dB); router verdicts {verdicts}")
    r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4], *(int(a) for a in sys.argv[4:5])))
