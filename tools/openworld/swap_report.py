"""The hot-swap part of tools/openworld_demo.sh, checked (docs/open-world.md).

Usage: python3 tools/openworld/swap_report.py OUT_DIR SHIPPED_BUNDLE

Reads OUT_DIR/swap-rec (the live run's recording: frames.csv, one line per frame delivered),
OUT_DIR/swap-stats.json (/stats.json right after the swap) and the live bundle OUT_DIR/live, and
prints: frame numbers continuous or not (and which are missing or out of order), the output
interval at the swap against the median and 99th percentile of the run, the swap's own numbers
(background load, the swap in the infer thread), the bundle version and task list the page
shows, and whether every route of SHIPPED_BUNDLE gives bit-identical outputs in the new bundle
(ONNX Runtime, CPU, on virtual-camera frames).
"""
import csv
import json
import sys
from pathlib import Path

import numpy as np


def main(out: Path, shipped: Path) -> int:
    import onnxruntime as ort

    from tir.edge.normalize import Normalizer
    from tir.edge.sources.base import open_source
    from tir.engines.bundle import load_bundle

    rows = list(csv.DictReader(open(out / "swap-rec" / "frames.csv")))
    seqs = [int(r["seq"]) for r in rows]
    t = np.array([float(r["t_wall"]) for r in rows])
    expected = list(range(seqs[0], seqs[0] + len(seqs)))
    missing = sorted(set(expected) - set(seqs))
    print(f"frames recorded {len(seqs)} (seq {seqs[0]}..{seqs[-1]}): "
          + ("continuous, in order, none lost" if seqs == expected else
             f"NOT continuous: missing {missing[:20]}, out of order {sum(b <= a for a, b in zip(seqs, seqs[1:]))}"))
    stats = json.loads((out / "swap-stats.json").read_text())
    bundle = stats["model"]["bundle"]
    swap = bundle.get("last_swap") or {}
    print(f"page/stats: bundle {bundle['name']} version {bundle['version']}, routes {', '.join(bundle['tasks'])}; "
          f"router classes {', '.join(bundle['router_tasks'])}; swaps {bundle['swaps']}; reload error "
          f"{bundle['reload_error']}")
    print(f"drops in the pipeline: {stats.get('drops')}")
    if swap:
        dt = np.diff(t) * 1000.0
        k = seqs.index(swap["at_frame"]) if swap["at_frame"] in seqs else None
        print(f"swap: version {swap['from_version']} -> {swap['to_version']} at frame {swap['at_frame']}; "
              f"background load + warm-up {swap['load_ms']} ms (off the frame path), swap in the infer thread "
              f"{swap['swap_ms']} ms, first frame on the new bundle {swap.get('first_frame_ms')} ms "
              f"(route {swap.get('first_frame_route')})")
        if k:
            around = dt[max(0, k - 3):k + 3]
            print(f"output interval at the swap {dt[k - 1]:.1f} ms (max of the 3 frames either side "
                  f"{around.max():.1f} ms); run median {np.median(dt):.1f} ms, p99 {np.percentile(dt, 99):.1f} ms")
    old, new = load_bundle(shipped), load_bundle(out / "live")
    src = open_source("synthetic://?size=320x256&realtime=0&frames=4&ffc=0&degrade=noise")
    src.start()
    norm = Normalizer()
    frames = np.stack([norm.forward(src.read(1.0).raw)[0] for _ in range(4)])[:, None].astype(np.float32)
    src.close()
    same = {}
    for task in old.tasks:
        outs = []
        for b in (old, new):
            sess = ort.InferenceSession(str(b.route_path(task)), providers=["CPUExecutionProvider"])
            outs.append(sess.run(None, {sess.get_inputs()[0].name: frames})[0])
        same[task] = bool(np.array_equal(*outs))
    print("earlier routes bit-identical in the new bundle: "
          + ", ".join(f"{t} {'yes' if v else 'NO'}" for t, v in same.items()))
    return 0 if seqs == expected and all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
