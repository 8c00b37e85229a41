"""Paired, interleaved latency of the distilled student (or a route): fp32 against its CPU INT8 (U8S8) model(s).

Why paired: on a shared machine the load moves between runs, so separate timings of two models
compare two loads. Here every round runs each model once on the same frame and prompt (order
rotated from round to round), and the ratio fp32 / model is taken *within* the round; the
reported figure is the median of those per-round ratios (docs/int8.md, "Session 19").

    python tools/scripts/int8_student_speed.py fp32=engines/bundles/edge/student.onnx \\
        int8=/path/to/student.int8-cpu.onnx [more=...] --rounds 200 --threads 2 --size 640x512

Prints, per model: median latency (ms), the median and the 25/75 % quantiles of the per-round
ratio against the first model, and the 1-minute load average before and after the rounds.

``--level all|extended|basic|default`` sets ONNX Runtime's graph optimisation level of the INT8
models (``default``: what the project picks, engines/backends/onnxruntime.py
``optimization_level``); fp32 models always run at ``ORT_ENABLE_ALL``. A model name may carry
its own level, ``int8@extended=path``. ``--profile DIR`` also writes ONNX Runtime's per-node
profile of each model (``enable_profiling``) over ``--profile-runs`` extra runs and prints the
time per op type and the ten slowest nodes (kernel time per run, ms).

The input is a uniform random frame (the cost of these graphs does not depend on the values)
and, for a student, uniform prompt weights 1/K, one frame per run; a route (one input) takes the
frame alone.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict

import numpy as np


def _load() -> str:
    try:
        return "%.2f" % os.getloadavg()[0]
    except OSError:
        return "n/a"


def _level(name: str, path: str):
    import onnxruntime as ort

    from tir.engines.backends.onnxruntime import is_quantized, optimization_level

    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
    if not is_quantized(path):
        return levels["all"]
    return optimization_level(path) if name == "default" else levels[name]


def session(path: str, threads: int, level: str, profile: str = ""):
    """An ORT CPU session for ``path`` with ``threads`` intra-op threads (no spinning, as the
    project's engines run), at ``level`` for a quantised model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = _level(level, path)
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def feeds(sess, size):
    """Inputs for ``sess``: a uniform random N=1 frame for its image input and, for a student,
    uniform prompt weights 1/K (a route, one input, takes the frame alone)."""
    w, h = size
    rng = np.random.default_rng(0)
    out = {}
    for i in sess.get_inputs():
        if i.name == "prompt":
            k = int(i.shape[1])
            out[i.name] = np.full((1, k), 1.0 / k, np.float32)
        else:
            out[i.name] = rng.random((1, 1, h, w), dtype=np.float32)
    return out


def profile_table(path: str, runs: int):
    """(ms per run by op type, [(ms per run, node name, op type)] slowest first) from an ORT
    profile JSON written over ``runs`` timed runs (the warm-up run excluded by the caller)."""
    with open(path) as f:
        events = json.load(f)
    by_op, by_node = defaultdict(float), defaultdict(float)
    op_of = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e.get("args", {}).get("op_name", "?")
        by_op[op] += e["dur"] / 1000.0 / runs
        by_node[node] += e["dur"] / 1000.0 / runs
        op_of[node] = op
    nodes = sorted(((ms, n, op_of[n]) for n, ms in by_node.items()), reverse=True)
    return dict(sorted(by_op.items(), key=lambda kv: -kv[1])), nodes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", help="name[@level]=path; the first is the reference (fp32)")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="640x512", help="WxH")
    ap.add_argument("--level", default="default", choices=["default", "all", "extended", "basic"],
                    help="ORT graph optimisation level of the INT8 models")
    ap.add_argument("--profile", default="", help="folder for per-node ORT profiles (none: no profile)")
    ap.add_argument("--profile-runs", type=int, default=40)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the CPU time of the calling thread (time.thread_time) instead of wall time; "
                         "with --threads 1 ORT runs every kernel on that thread, so this is the work done, "
                         "much less moved by other jobs on a shared machine than the wall time")
    ap.add_argument("--json", default="", help="write the summary here too")
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    models = []
    for spec in args.models:
        if "=" not in spec:
            ap.error(f"model {spec!r} is not name=path")
        name, path = spec.split("=", 1)
        level = args.level
        if "@" in name:
            name, level = name.split("@", 1)
        if not os.path.isfile(path):
            ap.error(f"{path} does not exist")
        models.append((name, path, level))
    sessions = [session(p, args.threads, lv) for _, p, lv in models]
    inputs = [feeds(s, size) for s in sessions]
    for s, f in zip(sessions, inputs):
        for _ in range(args.warmup):
            s.run(None, f)
    if args.cpu_time and args.threads != 1:
        ap.error("--cpu-time needs --threads 1 (other threads' work is not on the calling thread's clock)")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    load0 = _load()
    times = np.zeros((args.rounds, len(models)))
    order = list(range(len(models)))
    for r in range(args.rounds):
        rot = order[r % len(order):] + order[:r % len(order)]
        for i in rot:
            t0 = clock()
            sessions[i].run(None, inputs[i])
            times[r, i] = (clock() - t0) * 1000.0
    load1 = _load()
    print(f"{args.rounds} rounds, {args.threads} thread(s), {size[0]}x{size[1]}, "
          f"{'thread CPU time' if args.cpu_time else 'wall time'}, 1-minute load {load0} -> {load1}")
    summary = {"rounds": args.rounds, "threads": args.threads, "cpu_time": args.cpu_time, "size": list(size), "load": [load0, load1], "models": {}}
    for i, (name, path, level) in enumerate(models):
        ratio = times[:, 0] / times[:, i]
        q25, q50, q75 = np.percentile(ratio, [25, 50, 75])
        p50 = float(np.median(times[:, i]))
        print(f"  {name:12s} level={level:8s} p50 {p50:7.2f} ms   {models[0][0]}/{name} median {q50:.3f} "
              f"(IQR {q25:.3f}-{q75:.3f})   {path}")
        summary["models"][name] = {"path": path, "level": level, "p50_ms": p50, "ratio_median": float(q50),
                                   "ratio_q25": float(q25), "ratio_q75": float(q75)}
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
        for name, path, level in models:
            s = session(path, args.threads, level, os.path.join(args.profile, name))
            f = feeds(s, size)
            for _ in range(args.profile_runs + 1):
                s.run(None, f)
            prof = s.end_profiling()
            with open(prof) as f:
                events = json.load(f)
            # drop the first run's events (allocations, first-run caches)
            runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
            first_end = runs[0]["ts"] + runs[0]["dur"] if runs else 0
            with open(prof, "w") as f:
                json.dump([e for e in events if e.get("ts", 0) > first_end], f)
            by_op, nodes = profile_table(prof, args.profile_runs)
            total = sum(by_op.values())
            print(f"\nprofile {name} ({args.profile_runs} runs, load {_load()}): kernel time {total:.2f} ms/run")
            print("  by op: " + ", ".join(f"{op} {ms:.3f}" for op, ms in by_op.items()))
            for ms, node, op in nodes[:10]:
                print(f"    {ms:6.3f} ms  {op:22s} {node}")
            summary["models"][name]["profile"] = {"kernel_ms": total, "by_op": by_op,
                                                  "slowest": [[ms, n, op] for ms, n, op in nodes[:20]]}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
