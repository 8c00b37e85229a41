"""``tir bench``: model-only and full-pipeline latency, side by side (after trtexec / yolo benchmark).

    tir bench                                   # both modes, 640x512, installed bundle or plainnet:bench
    tir bench --mode model --backend onnxruntime torch tensorrt --frames 200
    tir bench --mode pipeline --duration 300 --json bench.json   # frame age sampled every 10 s

Model-only pushes the same synthetic frames through ``engine.infer`` back to back;
pipeline runs the real pipeline (capture -> ... -> output, no clients needed) on
``synthetic://?realtime=0&loop=60&degrade=noise`` (frames rendered once, replayed) or ``--source``.
Both use frames with the ``noise`` degradation by default (``--degrade``), so a bundle's
router picks a real route: on clean frames it passes them through and the bench would time
no model work. Every row names the route that ran (``route``: the bundle route, ``passthrough``,
or ``-`` for a single model), in the table and the JSON. ``both`` reports pipeline fps / model fps,
the share of the model's speed the pipeline keeps (pipelines.md (c)7: why app latency
differs from the engine's). Reusable pieces: :func:`bench_model`, :func:`bench_pipeline`,
:func:`synthetic_batches`, :func:`machine_info`, :func:`format_table`.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tir.edge.pipeline.stats import StatsSnapshot, summarize_ms

from .run import ModelNotFound, add_common_model_arguments, load_model

DEFAULT_SIZE = "640x512"
DEFAULT_FALLBACK_MODEL = "plainnet:bench"
DEFAULT_DEGRADE = "noise"  # the demo source's degradation (tir run's synthetic://?degrade=noise)
DEFAULT_DISPLAY = "auto"  # headless, as measured in docs/BENCHMARKS.md (AGC only when an output wants it)


# ----------------------------------------------------------------------------------------
# reusable measurements
# ----------------------------------------------------------------------------------------
def synthetic_batches(size: Tuple[int, int], count: int = 8, seed: int = 0,
                      degrade: Optional[str] = None) -> List[np.ndarray]:
    """``count`` normalised 1×1×H×W float32 frames of the synthetic camera at ``size`` (w, h),
    with the degradation ``degrade`` (a task name of tir.engines.degrade, as the synthetic
    source's ``degrade=`` option) or clean."""
    import cv2

    from tir.edge.normalize import Normalizer
    from tir.edge.sources.synthetic import SIZES, render_frames

    w, h = size
    native = (w, h) if (w, h) in SIZES else (640, 512)
    if degrade:
        from tir.edge.sources.base import open_source

        source = open_source(f"synthetic://?size={native[0]}x{native[1]}&realtime=0&seed={seed}"
                             f"&degrade={degrade}&frames={count}")
        try:
            raws = [source.read().raw for _ in range(count)]
        finally:
            source.close()
    else:
        raws = render_frames(count, size=native, seed=seed)
    norm = Normalizer(alpha=1.0)
    batches = []
    for raw in raws:
        if native != (w, h):
            raw = cv2.resize(raw, (w, h), interpolation=cv2.INTER_LINEAR)
        x, _ = norm.forward(raw)
        batches.append(x[None, None])
    return batches


def bench_model(engine, batches: Sequence[np.ndarray], warmup: int = 10, n: int = 100,
                progress: bool = True, desc: str = "model") -> Dict[str, Any]:
    """Time ``engine.infer`` on ``n`` calls (after ``warmup``), cycling through ``batches``.

    Returns latency percentiles (ms), fps (frames per wall second, batch size counted)
    and the counts. Works for anything with ``infer(batch)``."""
    from tqdm import tqdm

    for i in range(warmup):
        engine.infer(batches[i % len(batches)])
    times = []
    frames = 0
    cpu_start = time.process_time()
    t_start = time.perf_counter()
    for i in tqdm(range(n), desc=desc, unit="frame", disable=not progress, leave=False):
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        engine.infer(batch)
        times.append(time.perf_counter() - t0)
        frames += batch.shape[0]
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu_start
    h, w = batches[0].shape[-2:]
    return {
        "mode": "model",
        "route": route_of(engine),
        "size": f"{w}x{h}",
        "batch": int(batches[0].shape[0]),
        "warmup": warmup,
        "frames": frames,
        "wall_s": round(wall, 3),
        "fps": round(frames / wall, 3) if wall > 0 else 0.0,
        "cpu_ms_per_frame": round(1000.0 * cpu / max(frames, 1), 3),
        "latency_ms": summarize_ms(times),
    }


def bench_pipeline(model, source_uri: str, frames: Optional[int] = None, duration: Optional[float] = None,
                   sample_every: float = 10.0, agc: str = "percentile", progress: bool = True,
                   outputs: Sequence = (), warmup_batch: Optional[np.ndarray] = None,
                   max_in_flight: Optional[int] = None, display: str = "always") -> Dict[str, Any]:
    """Run the full pipeline until ``frames`` reached the outputs or ``duration`` s passed.

    ``display="always"`` computes the AGC views on every frame, as with a viewer attached;
    ``"auto"`` leaves them to the outputs' interest (none here), as a headless deployment would.

    Samples the age of the newest output frame (capture -> output) every ``sample_every``
    seconds, so a long run shows whether latency grows. Returns the final stats plus the
    samples."""
    from tqdm import tqdm

    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.base import open_source

    if frames is None and duration is None:
        raise ValueError("bench_pipeline needs frames or duration")
    if warmup_batch is not None:
        for _ in range(3):
            model.infer(warmup_batch)
    source = open_source(source_uri)
    window = max(1000, frames or 0, int((duration or 0) * 200))
    pipeline = Pipeline(source, model, outputs, agc=agc, frames=frames, duration=duration, stats_window=window,
                        max_in_flight=max_in_flight, display=display)
    samples = []
    total = frames if frames is not None else duration
    bar = tqdm(total=total, desc="pipeline", unit="frame" if frames is not None else "s",
               disable=not progress, leave=False)
    pipeline.start()
    cpu_start = time.process_time()
    t0 = time.monotonic()
    next_sample = t0 + sample_every
    shown = 0
    sampled = 0  # frames output at the previous sample
    try:
        while not pipeline.wait(0.5):
            t = time.monotonic()
            snap = pipeline.snapshot() if t >= next_sample else None
            if snap is not None:
                samples.append(_age_sample(snap, t - t0, pipeline.stats, snap.frames - sampled))
                sampled = snap.frames
                next_sample += sample_every
            progress_now = pipeline.stats.output if frames is not None else min(duration, t - t0)
            bar.update(progress_now - shown)
            shown = progress_now
    finally:
        pipeline.stop()
        bar.close()
    cpu = time.process_time() - cpu_start
    final = pipeline.snapshot()
    samples.append(_age_sample(final, time.monotonic() - t0, pipeline.stats, final.frames - sampled))
    if pipeline.error is not None:
        raise RuntimeError(f"pipeline stage {pipeline.error_stage} failed: {pipeline.error}")
    stats = final.to_dict()  # the stats schema's JSON form (tir.edge.pipeline.stats), as /stats.json
    return {
        "mode": "pipeline",
        "route": route_of(model),
        "source": source_uri,
        "stats_schema_version": stats["schema_version"],
        "frames": stats["frames"],
        "wall_s": round(stats["uptime_s"], 3),
        "fps": stats["fps_mean"],
        "cpu_ms_per_frame": round(1000.0 * cpu / max(stats["frames"], 1), 3),
        "latency_ms": stats["latency_ms"],
        "busy_ms": stats["busy_ms"],
        "drops": stats["drops"],
        "corrupt": stats["corrupt_total"],
        "captured": stats["captured"],
        "lossless": pipeline.lossless,
        "max_in_flight": pipeline.max_in_flight,
        "infer_in_flight": pipeline.infer_in_flight,
        "age_samples": samples,
    }


def psnr_frames(sets: str, split: str, n: int, task: Optional[str]) -> Dict[str, Any]:
    """Clean frames (``n`` in all, drawn evenly from the first ⌈n/sets⌉ of each registered set's
    ``split``, 640×512 at native scale) and
    their copies degraded with ``task`` (seed 0, engines/degrade.make_eval_set). ValueError when
    there is no degradation to undo or the sets do not load."""
    from tir.engines.training import datasets as dsets
    from tir.engines.degrade import make_eval_set

    if not task:
        raise ValueError("--psnr-data needs frames to restore: give --degrade TASK or --task TASK")
    names = dsets.parse_sets(sets)
    per_set = -(-int(n) // len(names))        # the first frames of every set, n in all
    clean = dsets.load_unit_frames(names, split, max_frames=per_set)
    clean = clean[np.sort(np.random.default_rng(0).choice(len(clean), min(n, len(clean)), replace=False))]
    return {"clean": clean, "degraded": make_eval_set(clean, task, seed=0), "data": f"{sets} {split}",
            "task": task}


def bench_psnr(model, frames: Dict[str, Any]) -> Dict[str, Any]:
    """Mean PSNR (dB) of ``model`` on :func:`psnr_frames` output, one frame at a time; a
    Restorer forgets its route before each frame (routed as at start-up, as ``tir eval`` does)."""
    from tir.engines.metrics import psnr

    values = []
    for degraded, clean in zip(frames["degraded"], frames["clean"]):
        reset = getattr(model, "reset", None)
        if callable(reset):
            reset()
        out = np.asarray(model.infer(degraded[None, None]), np.float32)[0, 0]
        values.append(psnr(np.clip(out, 0, 1), clean))
    return {"db": round(float(np.mean(values)), 3), "frames": len(values), "data": frames["data"],
            "task": frames["task"]}


def route_of(model) -> str:
    """The route a bundle's Restorer ran last (``passthrough``: no model work), or ``-`` for a
    single model."""
    route = getattr(model, "route", None)
    return route if isinstance(route, str) else "-"


def _age_sample(snap: StatsSnapshot, t: float, stats, new_frames: int) -> Dict[str, Any]:
    """The newest output frame's age, and e2e percentiles of the frames since the last sample."""
    e2e = summarize_ms(stats.latency_values("e2e", last=new_frames)) if new_frames > 0 else {}
    return {"t_s": round(t, 1), "frames": snap.frames, "frame_age_ms": snap.frame_age_ms,
            "e2e_p50_ms": e2e.get("p50"), "e2e_p99_ms": e2e.get("p99"), "e2e_max_ms": e2e.get("max"),
            "fps": snap.fps,
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def machine_info() -> Dict[str, Any]:
    """What the numbers were measured on (pipelines.md (d)7: versions in every report)."""
    info: Dict[str, Any] = {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "load_avg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    import cv2

    info["opencv"] = cv2.__version__
    if "torch" in sys.modules:
        info["torch"] = sys.modules["torch"].__version__
    if "tensorrt" in sys.modules:
        info["tensorrt"] = getattr(sys.modules["tensorrt"], "__version__", None)
    info.update(_jetson_info())
    return info


def _jetson_info() -> Dict[str, Any]:
    """L4T release and power mode on a Jetson (pipelines.md (d)7, pain point 10), else nothing."""
    from .doctor import TEGRA_RELEASE, _run, parse_tegra_release

    if not os.path.exists(TEGRA_RELEASE):
        return {}
    with open(TEGRA_RELEASE, encoding="utf-8", errors="replace") as f:
        info: Dict[str, Any] = {"l4t": parse_tegra_release(f.read())}
    mode = _run(["nvpmodel", "-q"])
    if mode:
        info["nvpmodel"] = mode.strip().splitlines()[0]
    return info


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def format_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain fixed-width table."""
    cells = [[str(h) for h in header]] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(stats: Dict[str, Any], key: str):
    return None if stats.get(key) is None else f"{stats[key]:.1f}"


# ----------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--mode", choices=("model", "pipeline", "both"), default="both")
    add_common_model_arguments(parser, several_backends=True,
                               default_model=f"the installed bundle, else {DEFAULT_FALLBACK_MODEL}")
    parser.add_argument("--size", default=DEFAULT_SIZE, help="frame size WxH for model-only and the "
                                                             "default synthetic source (default 640x512)")
    parser.add_argument("--frames", type=int, default=200, help="frames to time (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed model-only calls first (default 10)")
    parser.add_argument("--duration", type=float, help="pipeline: run this many seconds instead of --frames")
    parser.add_argument("--sample-every", type=float, default=10.0,
                        help="pipeline: seconds between frame-age samples (default 10)")
    parser.add_argument("--source", help="pipeline source URI (default synthetic://?size=SIZE&realtime=0&loop=60"
                                         "&degrade=DEGRADE: 60 frames rendered once and replayed, so the camera "
                                         "simulation is not timed)")
    parser.add_argument("--degrade", default=DEFAULT_DEGRADE,
                        help=f"degradation of the default frames, model-only and pipeline (default "
                             f"{DEFAULT_DEGRADE}, so a bundle's router runs a real route; 'none': clean "
                             "frames, which a bundle passes through untouched)")
    parser.add_argument("--max-in-flight", type=int, default=None,
                        help="pipeline: frames inside the pipeline at once for non-live sources (default 2: "
                             "full overlap; 1: lowest latency, no overlap)")
    parser.add_argument("--agc", default="percentile", choices=("percentile", "plateau", "clahe"))
    parser.add_argument("--display", default=DEFAULT_DISPLAY, choices=("always", "auto"),
                        help="pipeline: auto (default): the AGC views only when an output wants them "
                             "(none in the bench: headless), or always, as with a viewer attached")
    parser.add_argument("--repeat", type=int, default=1,
                        help="alternate model-only and pipeline runs N times; the ratio is the median "
                             "(steadier on a shared machine)")
    parser.add_argument("--psnr-data", default=None, metavar="SET[,SET]",
                        help="model-only rows: also restore --psnr-frames frames of these registered sets' "
                             "--psnr-split, degraded with --degrade (seed 0), and report mean PSNR (a bundle "
                             "is re-routed per frame)")
    parser.add_argument("--psnr-split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--psnr-frames", type=int, default=16, help="frames for the PSNR column (default 16)")
    add_gpu_arguments(parser)
    parser.add_argument("--roofline", nargs="?", const="", default=None, metavar="WxH[,WxH...]",
                        help="instead of latency: each ONNX model's achieved GMAC/s and its share of this machine's "
                             "dense-conv rate measured in the same run (fp32, and int8 with --int8), at --size or "
                             "at each size given (engines/roofline.py; needs the onnx package)")
    parser.add_argument("--int8", metavar="DIR", help="--roofline: also time the <route>.int8-cpu.onnx models "
                        "`tir calibrate --out DIR` wrote")
    parser.add_argument("--rounds", type=int, default=10,
                        help="--roofline: interleaved timing rounds (default 10; the median counts)")
    parser.add_argument("--json", metavar="PATH", help="write all results as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def main(args) -> int:
    from tir.edge.uri import parse_size
    from tir.engines.engine import EngineError

    try:
        size = parse_size(args.size)
    except ValueError as exc:
        return _fail(str(exc))
    if getattr(args, "roofline", None) is not None:
        return roofline_main(args, size)
    backends = list(dict.fromkeys(args.backend))  # in the order given, once each
    degrade = None if args.degrade in ("", "none") else args.degrade
    source = args.source or (f"synthetic://?size={size[0]}x{size[1]}&realtime=0&loop=60"
                             + (f"&degrade={degrade}" if degrade else ""))
    progress = not args.no_progress
    results: List[Dict[str, Any]] = []
    batches = synthetic_batches(size, degrade=degrade)
    psnr_set = None
    if args.psnr_data:
        try:
            psnr_set = psnr_frames(args.psnr_data, args.psnr_split, args.psnr_frames, args.task or degrade)
        except ValueError as exc:
            return _fail(str(exc))
    deploys = list(dict.fromkeys(args.deploy or [None]))
    for deploy, (backend, precision) in [(d, bp) for d in deploys for bp in backend_precisions(backends, args.precision)]:
        skipped = precision_skip_reason(backend, precision)
        if skipped:
            print(f"tir bench: {backend} {precision}: skipped: {skipped}", flush=True)
            results.append({"backend": backend, "precision": precision, "skipped": skipped})
            continue
        label = backend if precision is None else f"{backend} {precision}"
        if deploy is not None:
            label += f" ({deploy})"
        try:
            model, description = load_model(args.model, backend, args.task, args.threads,
                                            fallback=DEFAULT_FALLBACK_MODEL, precision=precision, deploy=deploy)
        except (ModelNotFound, EngineError, ValueError, RuntimeError) as exc:
            print(f"tir bench: {label}: {exc}", file=sys.stderr, flush=True)
            results.append({"backend": backend, "precision": precision, "error": str(exc)})
            continue
        print(f"tir bench: {label}: {description}", flush=True)
        entry: Dict[str, Any] = {"backend": getattr(model, "backend", backend), "requested": backend,
                                 "model": description}
        if precision is not None:
            entry["precision"] = precision
        if getattr(model, "deploy", None) is not None:
            entry["deploy"] = model.deploy
        try:
            if args.trt_style and args.mode in ("model", "both"):
                entry["trt_style"] = bench_trt_style(model, batches, args.warmup, args.frames, args.in_flight)
            rounds = []
            for _ in range(max(1, args.repeat)):
                if args.mode in ("model", "both"):
                    entry["model_only"] = bench_model(model, batches, args.warmup, args.frames, progress,
                                                      desc=f"model {backend}")
                if args.mode in ("pipeline", "both"):
                    entry["pipeline"] = bench_pipeline(
                        model, source, frames=None if args.duration else args.frames, duration=args.duration,
                        sample_every=args.sample_every, agc=args.agc, progress=progress,
                        warmup_batch=batches[0], max_in_flight=args.max_in_flight, display=args.display)
                rounds.append(_round_summary(entry))
            if psnr_set is not None and args.mode in ("model", "both"):
                entry["psnr"] = bench_psnr(model, psnr_set)
            if args.repeat > 1:
                entry["rounds"] = rounds
            ratios = [r["ratio"] for r in rounds if r.get("ratio") is not None]
            if ratios:
                entry["ratio_pipeline_over_model"] = round(float(np.median(ratios)), 3)
        except Exception as exc:  # one backend failing must not hide the others' results
            entry["error"] = f"{type(exc).__name__}: {exc}"
            print(f"tir bench: {backend}: {entry['error']}", file=sys.stderr, flush=True)
        finally:
            entry["backend"] = _backend_of(model, entry["backend"])
            close = getattr(model, "close", None)
            if callable(close):
                close()
        results.append(entry)
    report = {"args": {k: v for k, v in vars(args).items() if not callable(v)}, "machine": machine_info(),
              "size": f"{size[0]}x{size[1]}", "results": results}
    if args.json:  # first, so the results survive whatever happens to stdout
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(render_report(results), flush=True)
    if any("trt_style" in r for r in results):
        print(render_trt_style(results), flush=True)
    if args.json:
        print(f"tir bench: wrote {args.json}", flush=True)
    return 0 if any("error" not in r and "skipped" not in r for r in results) else 2


def roofline_main(args, size) -> int:
    """``tir bench --roofline``: interleaved timing of the dense-conv reference and the bundle's
    routes and router (engines/roofline.py), one table per size."""
    from tir.edge.uri import parse_size
    from tir.engines.training import roofline
    from tir.engines.bundle import BundleError, default_bundle_path, load_bundle

    try:
        sizes = [parse_size(v) for v in args.roofline.split(",") if v.strip()] or [size]
        path = args.model or default_bundle_path()
        if path is None:
            raise BundleError("no bundle installed; give one with --model DIR")
        bundle = load_bundle(path)
        import onnx  # noqa: F401  (the reference graphs are built with it)
    except ImportError:
        return _fail("--roofline needs the onnx package (pip install onnx, or the [test] extras)")
    except (BundleError, ValueError) as exc:
        return _fail(f"--roofline needs a bundle: {exc}")
    if args.int8 and not Path(args.int8).is_dir():
        return _fail(f"--int8 {args.int8}: no such folder (run `tir calibrate --out {args.int8}` first)")
    routes = [args.task] if args.task else None
    threads = args.threads if args.threads is not None else 2
    reports = []
    for w, h in sizes:
        m = bundle.multiple
        wh = (-(-w // m) * m, -(-h // m) * m)
        x = synthetic_batches(wh, count=1, degrade=None if args.degrade in ("", "none") else args.degrade)[0]
        items = roofline.reference_items(wh, int8=bool(args.int8))
        items += roofline.bundle_items(bundle, wh, routes, args.int8, np.ascontiguousarray(x, np.float32))
        load_before = roofline.load_average()
        roofline.measure(items, rounds=max(1, args.rounds), threads=threads)
        rows = roofline.shares(items)
        print(roofline.format_rows(rows, wh), flush=True)
        reports.append({"size": f"{wh[0]}x{wh[1]}", "rows": rows, "rounds": args.rounds, "threads": threads,
                        "load_avg_before": load_before, "load_avg_after": roofline.load_average()})
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if not callable(v)},
                                               "machine": machine_info(), "bundle": str(bundle.path),
                                               "roofline": reports}, indent=2) + "\n", encoding="utf-8")
        print(f"tir bench: wrote {args.json}", flush=True)
    return 0


# ----------------------------------------------------------------------------------------
# --precision lists and --trt-style (the GPU check, docs/gpu-check.md)
# ----------------------------------------------------------------------------------------
TRT_STYLE_PERCENTILES = (90, 95, 99)


def add_gpu_arguments(parser) -> None:
    from .build import precision_list

    parser.add_argument("--precision", type=precision_list, default=None, metavar="P[,P...]",
                        help="TensorRT plan precision(s) to compare, e.g. fp32,fp16,int8 (each needs `tir build` "
                             "first); other backends run fp32 only. Default: the best plan built")
    parser.add_argument("--trt-style", action="store_true",
                        help="model-only breakdown after trtexec: throughput, latency, enqueue, H2D, GPU compute, "
                             "D2H (min/mean/median/p90/p95/p99), from CUDA events with frames in flight on "
                             "separate streams (TensorRT); host-timed where a backend has no CUDA events")
    parser.add_argument("--in-flight", type=int, default=2, choices=(1, 2, 3, 4),
                        help="--trt-style: frames in flight on separate CUDA streams (default 2)")


def backend_precisions(backends: Sequence[str], precisions: Optional[Sequence[str]]):
    """(backend, precision) pairs in the order given; precision None when no list was given."""
    if not precisions:
        return [(b, None) for b in backends]
    return [(b, p) for b in backends for p in precisions]


def precision_skip_reason(backend: str, precision: Optional[str]) -> Optional[str]:
    """Why a (backend, precision) pair is not run, or None. Only TensorRT has plans per precision;
    the other backends run the fp32 ONNX/torch model."""
    if precision is None or precision == "fp32" or backend == "tensorrt":
        return None
    return (f"{backend} runs the fp32 model; {precision} is a TensorRT plan precision (`tir build`). "
            "The CPU INT8 (U8S8) model is timed by `tir calibrate --bench-runs`")


def _single_engine(model):
    """(engine, route) for --trt-style: a Restorer's forced route, else its first route; an
    engine is itself."""
    from tir.engines.router import CLEAN

    routes = getattr(model, "routes", None)
    if routes is None or not callable(getattr(model, "engine", None)):
        return model, None
    route = model.current if getattr(model, "forced", False) and model.current not in (None, CLEAN) else routes[0]
    return model.engine(route), route


def trt_style_stats(values_ms: Sequence[float]) -> Dict[str, float]:
    """trtexec's statistics of one quantity: min, max, mean, median and p90/p95/p99 (ms), n."""
    v = np.asarray(values_ms, np.float64)
    if v.size == 0:
        return {"n": 0}
    out = {"min": float(v.min()), "max": float(v.max()), "mean": float(v.mean()), "median": float(np.median(v))}
    for q, value in zip(TRT_STYLE_PERCENTILES, np.percentile(v, TRT_STYLE_PERCENTILES)):
        out[f"p{q}"] = float(value)
    out = {k: round(x, 4) for k, x in out.items()}
    out["n"] = int(v.size)
    return out


def trt_style_summary(parts: Dict[str, Sequence[float]], frames: int, wall_s: float, in_flight: int,
                      timing: str) -> Dict[str, Any]:
    """trtexec's performance summary from per-frame part times in ms.

    ``parts``: ``h2d``, ``compute``, ``d2h`` (CUDA events), ``enqueue`` (host time to submit) and
    ``latency`` (host: submit -> result on the host), lists of equal length (``h2d``/``d2h`` may be
    empty when ``timing == "host"``). As trtexec defines it (TensorRT developer guide, "trtexec",
    performance summary), *Latency* is H2D + GPU compute + D2H of one inference and *Throughput*
    is inferences per second of wall time; *Total GPU Compute Time* is the sum of compute times.
    """
    compute = np.asarray(parts.get("compute", []), np.float64)
    h2d = np.asarray(parts.get("h2d", []), np.float64)
    d2h = np.asarray(parts.get("d2h", []), np.float64)
    if timing == "cuda-events":
        if not (len(h2d) == len(compute) == len(d2h)):
            raise ValueError(f"h2d/compute/d2h counts differ: {len(h2d)}/{len(compute)}/{len(d2h)}")
        latency = h2d + compute + d2h
    else:
        latency = np.asarray(parts.get("latency", compute), np.float64)
    return {
        "timing": timing,
        "in_flight": int(in_flight),
        "frames": int(frames),
        "throughput_qps": round(frames / wall_s, 3) if wall_s > 0 else 0.0,
        "latency_ms": trt_style_stats(latency),
        "enqueue_ms": trt_style_stats(parts.get("enqueue", [])),
        "h2d_ms": trt_style_stats(h2d),
        "gpu_compute_ms": trt_style_stats(compute),
        "d2h_ms": trt_style_stats(d2h),
        "host_latency_ms": trt_style_stats(parts.get("latency", [])),
        "total_host_walltime_s": round(wall_s, 4),
        "total_gpu_compute_s": round(float(compute.sum()) / 1000.0, 4),
    }


def bench_trt_style(model, batches: Sequence[np.ndarray], warmup: int = 10, n: int = 100,
                    in_flight: int = 2) -> Dict[str, Any]:
    """``n`` frames (after ``warmup``) through ``in_flight`` CUDA streams, timed like trtexec.

    An engine with ``pipeline(shape, in_flight)`` (TensorRT) runs a
    :class:`~tir.engines.cuda_pipeline.CudaStreamPipeline`; its CUDA events give H2D / compute /
    D2H per frame. Any other engine is timed on the host, one ``infer`` at a time (compute =
    the call's wall time; no H2D/D2H): ``timing`` says which. Batches are padded to the model's
    multiple as ``infer`` does. Returns :func:`trt_style_summary` plus ``route``."""
    from tir.engines.engine import pad_to_multiple

    engine, route = _single_engine(model)
    multiple = int(getattr(engine, "multiple", 1) or 1)
    padded = [np.ascontiguousarray(pad_to_multiple(np.asarray(b, np.float32), multiple)[0]) for b in batches]
    feed = lambda count: (padded[i % len(padded)] for i in range(count))  # noqa: E731
    if callable(getattr(engine, "pipeline", None)):
        from tir.engines.cuda_pipeline import PartTimes

        pipe = engine.pipeline(padded[0].shape, in_flight=in_flight)
        try:
            for _ in pipe.run(feed(warmup)):
                pass
            pipe.times = PartTimes()
            t0 = time.perf_counter()
            frames = sum(1 for _ in pipe.run(feed(n)))
            wall = time.perf_counter() - t0
            times = pipe.times
        finally:
            pipe.close()
        parts = {k: getattr(times, k) for k in ("h2d", "compute", "d2h", "enqueue", "latency")}
        summary = trt_style_summary(parts, frames, wall, in_flight, "cuda-events")
    else:
        for b in feed(warmup):
            engine.infer(b)
        compute = []
        t0 = time.perf_counter()
        for b in feed(n):
            t = time.perf_counter()
            engine.infer(b)
            compute.append((time.perf_counter() - t) * 1000.0)
        wall = time.perf_counter() - t0
        summary = trt_style_summary({"compute": compute, "latency": compute}, len(compute), wall, 1, "host")
    h, w = batches[0].shape[-2:]
    summary.update({"size": f"{w}x{h}", "route": route, "engine": getattr(engine, "backend", type(engine).__name__)})
    return summary


def render_trt_style(results: Sequence[Dict[str, Any]]) -> str:
    """One trtexec-like block per result that has ``trt_style``."""
    text = []
    for r in results:
        t = r.get("trt_style")
        if not t:
            continue
        title = f"{r.get('backend')}" + (f" {r['precision']}" if r.get("precision") else "")
        text.append(f"\n=== Performance summary ({title}, {t['size']}, {t['frames']} frames, "
                    f"{t['in_flight']} in flight, timing: {t['timing']}) ===")
        text.append(f"Throughput: {t['throughput_qps']:.2f} qps")
        for label, key in (("Latency", "latency_ms"), ("Enqueue Time", "enqueue_ms"), ("H2D Latency", "h2d_ms"),
                           ("GPU Compute Time", "gpu_compute_ms"), ("D2H Latency", "d2h_ms"),
                           ("Host Latency", "host_latency_ms")):
            s = t[key]
            if not s.get("n"):
                text.append(f"{label}: n/a" + (" (no CUDA events on this backend)" if t["timing"] == "host" else ""))
                continue
            text.append(f"{label}: min = {s['min']:.4f} ms, max = {s['max']:.4f} ms, mean = {s['mean']:.4f} ms, "
                        f"median = {s['median']:.4f} ms, percentile(90%) = {s['p90']:.4f} ms, "
                        f"percentile(95%) = {s['p95']:.4f} ms, percentile(99%) = {s['p99']:.4f} ms")
        text.append(f"Total Host Walltime: {t['total_host_walltime_s']:.4f} s")
        text.append(f"Total GPU Compute Time: {t['total_gpu_compute_s']:.4f} s")
    return "\n".join(text)


def _backend_of(model, fallback: str) -> str:
    """The backend that ran: a Restorer reports the one of the route it used."""
    name = getattr(model, "backend", fallback)
    route = getattr(model, "route", None)
    if name == "auto" and route not in (None, "passthrough") and callable(getattr(model, "engine", None)):
        try:
            name = getattr(model.engine(route), "backend", name)
        except Exception:  # a route that cannot load has already been reported as an error
            pass
    return name


def _round_summary(entry: Dict[str, Any]) -> Dict[str, Any]:
    """One model-only + pipeline round: fps of each, their ratio, e2e p50, the load."""
    model, pipe = entry.get("model_only"), entry.get("pipeline")
    summary: Dict[str, Any] = {"load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    if model:
        summary["model_fps"] = model["fps"]
    if pipe:
        summary["pipeline_fps"] = pipe["fps"]
        summary["e2e_p50_ms"] = pipe["latency_ms"]["e2e"].get("p50")
    if model and pipe and model["fps"] > 0:
        summary["ratio"] = round(pipe["fps"] / model["fps"], 3)
    return summary


def render_report(results: Sequence[Dict[str, Any]]) -> str:
    rows = []
    extra = any("deploy" in r or "psnr" in r for r in results)   # routes vs student, PSNR on real frames
    for r in results:
        if "model_only" in r:
            m = r["model_only"]
            lat = m["latency_ms"]
            rows.append(["model", r["backend"], m.get("route", "-"), m["size"], m["frames"], f"{m['fps']:.1f}",
                         _ms(lat, "p50"), _ms(lat, "p90"), _ms(lat, "p99"), _ms(lat, "max"),
                         f"{m['cpu_ms_per_frame']:.1f}", "-", "-"]
                        + ([r.get("deploy", "-"), f"{r['psnr']['db']:.2f}" if "psnr" in r else "-"] if extra else []))
        if "pipeline" in r:
            p = r["pipeline"]
            lat = p["latency_ms"]["e2e"]
            rows.append(["pipeline (e2e)", r["backend"], p.get("route", "-"), "", p["frames"], f"{p['fps']:.1f}",
                         _ms(lat, "p50"), _ms(lat, "p90"), _ms(lat, "p99"), _ms(lat, "max"),
                         f"{p['cpu_ms_per_frame']:.1f}", sum(p["drops"].values()),
                         r.get("ratio_pipeline_over_model", "-")] + ([r.get("deploy", "-"), "-"] if extra else []))
        if "error" in r:
            rows.append(["error", r.get("backend"), "", r["error"][:60], "", "", "", "", "", "", "", "", ""]
                        + (["", ""] if extra else []))
    text = [format_table(rows, ["mode", "backend", "route", "size", "frames", "fps", "p50 ms", "p90 ms",
                                "p99 ms", "max ms", "cpu ms/f", "drops", "pipe/model"]
                         + (["deploy", "PSNR dB"] if extra else []))]
    psnr = next((r["psnr"] for r in results if "psnr" in r), None)
    if psnr:
        text.append(f"PSNR dB: mean over {psnr['frames']} frames of {psnr['data']} degraded with {psnr['task']} "
                    "(seed 0), each restored on its own")
    if any("passthrough" in (r.get(k) or {}).get("route", "") for r in results
           for k in ("model_only", "pipeline")):
        text.append("note: route passthrough: the router found the frames clean and ran no model; "
                    "these rows time no restoration (use --degrade TASK or --task TASK)")
    for r in results:
        if "rounds" in r:
            text.append(f"\nrounds ({r['backend']}), model-only and pipeline alternated; pipe/model above is the median")
            text.append(format_table([[i + 1, x.get("model_fps"), x.get("pipeline_fps"), x.get("ratio"),
                                       x.get("e2e_p50_ms"), x.get("load_avg_1m")] for i, x in enumerate(r["rounds"])],
                                     ["round", "model fps", "pipeline fps", "pipe/model", "e2e p50 ms", "load 1m"]))
    for r in results:
        if "pipeline" not in r:
            continue
        p = r["pipeline"]
        stage_rows = []
        for stage, lat in p["latency_ms"].items():
            busy = p["busy_ms"].get(stage, {})
            stage_rows.append([stage, _ms(lat, "p50"), _ms(lat, "p90"), _ms(lat, "p99"), _ms(lat, "max"),
                               _ms(busy, "p50"), p["drops"].get(stage, "")])
        text.append(f"\npipeline stages ({r['backend']}): latency = since the previous stamp (wait + work); "
                    "busy = work only")
        text.append(format_table(stage_rows, ["stage", "p50 ms", "p90 ms", "p99 ms", "max ms", "busy p50", "drops"]))
        if len(p["age_samples"]) > 2:
            text.append("\nframe age at output over time (e2e columns: the frames since the previous row)")
            text.append(format_table([[s["t_s"], s["frames"], s["frame_age_ms"], s["e2e_p50_ms"], s["e2e_p99_ms"],
                                       s["e2e_max_ms"], s["fps"], s["load_avg_1m"]] for s in p["age_samples"]],
                                     ["t s", "frames", "newest age ms", "e2e p50 ms", "e2e p99 ms", "e2e max ms",
                                      "fps", "load 1m"]))
    return "\n".join(text)


def _fail(message: str) -> int:
    print(f"tir bench: error: {message}", file=sys.stderr, flush=True)
    return 2
