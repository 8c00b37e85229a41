"""Compare the CPU INT8 flavours of a bundle's routes on *this* CPU, accuracy and speed.

Usage::

    python tools/scripts/int8_cpu_compare.py BUNDLE OUT [--routes a,b] [--frames 64] [--holdout 16]
        [--size 640x512] [--rounds 20] [--threads 2] [--seed 0]

Per route, one range collection (``tir calibrate``'s: percentile 99.99 on ``--frames``
RoadScene train frames degraded with the route's task, ``--seed``) and from it three ONNX
Runtime QDQ models (``calibration.qdq.quantize_cpu``, the session-7 float regions, as ``tir
calibrate --float-tail auto`` writes first):

- ``u8s8-7bit``: uint8 activations, 7-bit int8 weights (``reduce_range``, the AVX2 default),
- ``u8s8-7bit-plain``: the same without the integer-form rewrites (``integer_form=False``,
  calibration/integer_form.py: the session-14 model, float ConvTranspose/Sub/ReduceMean islands),
- ``u8s8-8bit``: uint8 activations, full 8-bit weights (``--no-reduce-range``),
- ``s8s8-8bit``: int8 activations, 8-bit weights.

Each is gated like ``tir calibrate`` (``calibration.gate.gate_route``: loss = PSNR(fp32, clean)
− PSNR(int8, clean) on ``--holdout`` RoadScene val frames, 0.3 dB limit; fidelity = PSNR(int8,
fp32)), then fp32 and every INT8 model are timed **interleaved** (one round = each model once,
``--rounds`` rounds after 3 warm-up rounds, one random (1, 1, H, W) float32 frame) with tir's
session options; the INT8 models twice, at ``ORT_ENABLE_EXTENDED`` and ``ORT_ENABLE_ALL``. The
dense-conv reference (engines/training/roofline.py; fp32, U8S8 8-bit and 7-bit weights) runs
in the same rounds of the first route. Prints one table and writes ``OUT/compare.json`` with
the machine (CPU model, VNNI flags, load average before and after).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

#: (name, activations, 7-bit weights, integer-form rewrites)
VARIANTS = (("u8s8-7bit", "uint8", True, True), ("u8s8-7bit-plain", "uint8", True, False),
            ("u8s8-8bit", "uint8", False, True), ("s8s8-8bit", "int8", False, True))


def _session(path, threads, level):
    import onnxruntime as ort

    from tir.engines.backends.onnxruntime import session_options

    o = session_options(path, threads)
    o.graph_optimization_level = level
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def timed(models, x, rounds, threads):
    """models: {label: (path, level)} -> {label: [ms, ...]} interleaved."""
    sessions = {k: _session(p, threads, lvl) for k, (p, lvl) in models.items()}
    feeds = {k: {s.get_inputs()[0].name: (x if s.get_inputs()[0].shape[1] == 1 else
                                          np.random.default_rng(1).random((1, 32, x.shape[2] // 4, x.shape[3] // 4),
                                                                          dtype=np.float32))}
             for k, s in sessions.items()}
    times = {k: [] for k in sessions}
    for r in range(3 + rounds):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feeds[k])
            if r >= 3:
                times[k].append(1000.0 * (time.perf_counter() - t0))
    return times


def main(argv=None) -> int:
    import onnxruntime as ort

    from tir.calibration import gate
    from tir.calibration.data import calibration_set
    from tir.calibration.qdq import collect_ranges, quantize_cpu
    from tir.edge.machine import cpu_model, int8_cpu_features
    from tir.engines.backends.onnxruntime import ort_session
    from tir.engines.bundle import load_bundle
    from tir.engines.degrade import TASKS
    from tir.engines.training import roofline

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("out")
    ap.add_argument("--routes", default=None)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--holdout", type=int, default=16)
    ap.add_argument("--size", default="640x512")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.size.split("x"))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_bundle(a.bundle)
    routes = a.routes.split(",") if a.routes else list(bundle.tasks)
    EXT, ALL = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    x = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
    report = {"command": " ".join(sys.argv), "cpu": cpu_model(), "int8_cpu": int8_cpu_features().to_dict(),
              "onnxruntime": ort.__version__, "load_before": list(os.getloadavg()), "routes": {}}

    def runner(path):
        s = ort_session(path, threads=a.threads)
        return lambda v: s.run(None, {"input": np.ascontiguousarray(v, np.float32)})[0]

    for i, route in enumerate(routes):
        fp32 = str(bundle.route_path(route))
        tasks = [route] if route in TASKS else None
        frames = calibration_set("roadscene", a.frames, (w, h), seed=a.seed, tasks=tasks)
        held = calibration_set("roadscene", a.holdout, (w, h), seed=a.seed, holdout=True, tasks=tasks)
        ranges = collect_ranges(fp32, frames, threads=a.threads, progress=False).ranges("percentile", percentile=99.99)
        ref = gate.held_out_outputs(runner(fp32), held)
        row = {"gate": {}, "ms": {}}
        models = {"fp32": (fp32, ALL)}
        for name, act, rr, itf in VARIANTS:
            p = str(out / f"{route}.{name}.onnx")
            quantize_cpu(fp32, ranges, p, activation=act, reduce_range=rr, integer_form=itf)
            v = gate.gate_route(route, name, None, runner(p), held, 0.3, 40.0, fp32_outputs=ref)
            row["gate"][name] = {"loss_db": v.loss_db, "fidelity_db": v.fidelity_db, "passed": v.passed,
                                 "psnr_fp32": v.psnr_fp32, "psnr_int8": v.psnr_int8}
            models[f"{name}@ext"] = (p, EXT)
            models[f"{name}@all"] = (p, ALL)
        if i == 0:
            for rr in (False, True):
                paths = roofline.write_reference(out / f"ref-rr{int(rr)}", (w, h), int8=True, reduce_range=rr)
                models.setdefault("ref-fp32", (paths["fp32"], ALL))
                models[f"ref-u8s8-{'7' if rr else '8'}bit@ext"] = (paths["int8"], EXT)
                models[f"ref-u8s8-{'7' if rr else '8'}bit@all"] = (paths["int8"], ALL)
        load0 = os.getloadavg()[0]
        times = timed(models, x, a.rounds, a.threads)
        row["load_1min"] = [load0, os.getloadavg()[0]]
        row["ms"] = {k: float(np.median(v)) for k, v in times.items()}
        report["routes"][route] = row
        f = row["ms"]["fp32"]
        print(f"\n{route}  (1-min load {load0:.1f} -> {row['load_1min'][1]:.1f}; p50 ms, x = fp32/int8)")
        print(f"  fp32 {f:8.1f}")
        for name, _, _, _ in VARIANTS:
            g = row["gate"][name]
            e, al = row["ms"][f"{name}@ext"], row["ms"][f"{name}@all"]
            print(f"  {name:10s} loss {g['loss_db']:+.3f} dB fid {g['fidelity_db']:.1f} dB "
                  f"{'PASS' if g['passed'] else 'REFUSED':7s} ext {e:7.1f} ({f / e:.2f}x)  all {al:7.1f} ({f / al:.2f}x)")
        for k in [k for k in row["ms"] if k.startswith("ref-")]:
            print(f"  {k:22s} {row['ms'][k]:7.1f} ms  ({row['ms']['ref-fp32'] / row['ms'][k]:.2f}x)")
        (out / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
    report["load_after"] = list(os.getloadavg())
    (out / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
