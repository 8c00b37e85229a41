"""Benchmarks as a library (after ultralytics' ``utils/benchmarks.py``): model-only and
full-pipeline latency, PSNR on real frames, and trtexec-style GPU timing. ``tir bench``
(tools/bench.py) parses its options, calls these and prints their results.

Model-only pushes the same synthetic frames through ``engine.infer`` back to back;
pipeline runs the real pipeline (capture -> ... -> output, no clients needed) on a source URI
(``synthetic://?realtime=0&loop=60&degrade=noise`` in ``tir bench``: frames rendered once,
replayed). Every result names the route that ran (``route``: the bundle route,
``passthrough``, or ``-`` for a single model). Times are milliseconds (``*_ms``), rates frames
per wall second (``fps``); frames are float32 N×1×H×W normalised to [0, 1]. Torch-free at
import; the frames :func:`bench_psnr` scores come from the training side
(:func:`tir.engines.training.evaluate.psnr_frames`), which ``tir bench --psnr-data`` imports
only when asked.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..edge.pipeline.stats import StatsSnapshot, summarize_ms

TRT_STYLE_PERCENTILES = (90, 95, 99)


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


def pin_synthetic_reference(model, size: Tuple[int, int], frames: Optional[int] = None) -> Optional[str]:
    """Pin a routed model's gate references (engines/restorer.py ``Restorer.pin_camera``) to
    ``frames`` clean frames of the synthetic camera at ``size`` (w, h), normalised as
    :func:`synthetic_batches` normalises the frames :func:`bench_model` times, so the model-only
    timing of a degraded virtual camera runs the route ``tir run`` gives it (there, the virtual
    camera's clean frames are pinned too, engines/loading.py ``pin_source_reference``); without
    it the gates learn the always-degraded frames as the camera's own look within a few routed
    frames and the timing turns into pass-through's.

    Returns:
        What was pinned, in words, or None for a model without a router or with a forced task.
    """
    from tir.engines.loading import DEFAULT_REFERENCE_FRAMES, pinnable

    if not pinnable(model):
        return None
    n = DEFAULT_REFERENCE_FRAMES if frames is None else int(frames)
    if n < 1:
        return None
    if int(getattr(model, "pinned_frames", 0) or 0) == 0:   # once: --repeat rounds and --mode both reuse it
        model.pin_camera(np.concatenate(synthetic_batches(size, count=n)))
    return f"{int(model.pinned_frames)} clean frames of the virtual camera"


def bench_model(engine, batches: Sequence[np.ndarray], warmup: int = 10, n: int = 100,
                progress: bool = True, desc: str = "model") -> Dict[str, Any]:
    """Time ``engine.infer`` on ``n`` calls (after ``warmup``), cycling through ``batches``.

    Works for anything with ``infer(batch)``.

    Args:
        engine: the model (Engine, Restorer, ...).
        batches: (N, 1, H, W) float32 input batches, all of one shape.
        warmup: untimed calls first.
        n: timed calls.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        {"mode": "model", "route", "size" ("WxH" px), "batch", "warmup", "frames", "wall_s"
        (seconds), "fps" (frames per wall second, batch size counted), "cpu_ms_per_frame" (ms),
        "latency_ms" (per-call percentiles in ms)}, plus "runs" (route/student/passthrough) for a
        bundle's Restorer.
    """
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
        **runs_of(engine),
    }


def bench_pipeline(model, source_uri: str, frames: Optional[int] = None, duration: Optional[float] = None,
                   sample_every: float = 10.0, agc: str = "percentile", progress: bool = True,
                   outputs: Sequence = (), warmup_batch: Optional[np.ndarray] = None,
                   max_in_flight: Optional[int] = None, display: str = "always",
                   reference_frames: Optional[int] = None) -> Dict[str, Any]:
    """Run the full pipeline until ``frames`` reached the outputs or ``duration`` s passed, as
    ``tir run`` runs it: the model's own normaliser (engines/loading.py ``normalizer_for``) and,
    for a routed model on a source that offers clean frames of its own (the virtual camera), the
    gates pinned to them first (``pin_source_reference``; ``tir run``'s default reference).

    ``display="always"`` computes the AGC views on every frame, as with a viewer attached;
    ``"auto"`` leaves them to the outputs' interest (none here), as a headless deployment would.
    Samples the age of the newest output frame (capture -> output) every ``sample_every``
    seconds, so a long run shows whether latency grows.

    Args:
        model: the model the pipeline infers with.
        source_uri: a source URI (``synthetic://...``, a camera, a file).
        frames: stop after this many output frames, or None.
        duration: stop after this many seconds, or None.
        sample_every: age-sampling period in seconds.
        agc: the AGC name.
        progress: show a tqdm bar.
        outputs: pipeline outputs to attach.
        warmup_batch: (N, 1, H, W) float32 batch inferred 3 times before the source opens, or None.
        max_in_flight: the pipeline's in-flight limit (None: its default).
        display: ``"always"`` or ``"auto"``, see above.
        reference_frames: clean frames of the source pinned as the camera reference (None:
            ``tir run``'s default, engines/loading.py ``DEFAULT_REFERENCE_FRAMES``; 0: none).

    Returns:
        the final stats (frames, fps, latency_ms, busy_ms, drops, ... as /stats.json, times in
        ms, ``wall_s`` in seconds) plus ``age_samples``.

    Raises:
        ValueError: neither ``frames`` nor ``duration`` given.
        RuntimeError: a pipeline stage failed (names the stage and its error).
    """
    from tqdm import tqdm

    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.base import open_source
    from tir.engines.loading import DEFAULT_REFERENCE_FRAMES, normalizer_for, pin_source_reference

    if frames is None and duration is None:
        raise ValueError("bench_pipeline needs frames or duration")
    if warmup_batch is not None:
        for _ in range(3):
            model.infer(warmup_batch)
    source = open_source(source_uri)
    pinned = int(getattr(model, "pinned_frames", 0) or 0)
    # a model already pinned (the model-only row of tir bench --mode both, an earlier --repeat
    # round) keeps its reference: pinning again would count the same camera's frames twice
    reference = f"{pinned} frames pinned before the pipeline ran" if pinned else \
        pin_source_reference(model, source, DEFAULT_REFERENCE_FRAMES if reference_frames is None else reference_frames)
    window = max(1000, frames or 0, int((duration or 0) * 200))
    pipeline = Pipeline(source, model, outputs, agc=agc, normalizer=normalizer_for(model), frames=frames,
                        duration=duration, stats_window=window, max_in_flight=max_in_flight, display=display)
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
        **runs_of(model),
        "source": source_uri,
        "camera_reference": reference,
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


def runs_of(model) -> Dict[str, Any]:
    """``{"runs": "route" | "student" | "passthrough"}`` for a bundle's Restorer (what its last
    frame went through, engines/restorer.py ``Restorer.runs``), else {} (a single model)."""
    runs = getattr(model, "runs", None)
    return {"runs": runs} if isinstance(runs, str) else {}


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


def backend_of(model, fallback: str) -> str:
    """The backend that ran: a Restorer reports the one of the route it used."""
    name = getattr(model, "backend", fallback)
    route = getattr(model, "route", None)
    if name == "auto" and getattr(model, "runs", None) == "student":
        return "onnxruntime"   # the student runs on ONNX Runtime only; no route engine is loaded to ask
    if name == "auto" and route not in (None, "passthrough") and callable(getattr(model, "engine", None)):
        try:
            name = getattr(model.engine(route), "backend", name)
        except Exception:  # a route that cannot load has already been reported as an error
            pass
    return name


def round_summary(entry: Dict[str, Any]) -> Dict[str, Any]:
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


def backend_precisions(backends: Sequence[str], precisions: Optional[Sequence[str]]):
    """(backend, precision) pairs in the order given; precision None when no list was given."""
    if not precisions:
        return [(b, None) for b in backends]
    return [(b, p) for b in backends for p in precisions]


def precision_skip_reason(backend: str, precision: Optional[str], bundle: bool = False) -> Optional[str]:
    """Why a (backend, precision) pair is not run, or None. Only TensorRT has plans per precision;
    the other backends run the fp32 ONNX/torch model, except that a bundle (``bundle``) on ONNX
    Runtime runs its student's gated CPU INT8 model with int8 (engines/backends/student.py
    ``cpu_int8_student``; its routes stay fp32)."""
    if precision is None or precision == "fp32" or backend == "tensorrt":
        return None
    if bundle and precision == "int8" and backend in ("onnxruntime", "auto"):
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

    As trtexec defines it (TensorRT developer guide, "trtexec", performance summary),
    *Latency* is H2D + GPU compute + D2H of one inference and *Throughput* is inferences per
    second of wall time; *Total GPU Compute Time* is the sum of compute times.

    Args:
        parts: ``h2d``, ``compute``, ``d2h`` (CUDA events), ``enqueue`` (host time to submit)
            and ``latency`` (host: submit -> result on the host), lists of ms of equal length
            (``h2d``/``d2h`` may be empty when ``timing == "host"``).
        frames: inferences timed.
        wall_s: wall time of the timed run in seconds.
        in_flight: inferences kept in flight.
        timing: ``"cuda-events"`` or ``"host"``.

    Returns:
        {"timing", "in_flight", "frames", "throughput_qps", "latency_ms", "enqueue_ms",
        "h2d_ms", ...}: each ``*_ms`` the :func:`trt_style_stats` of those times.

    Raises:
        ValueError: with ``"cuda-events"``, the h2d/compute/d2h lists differ in length.
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

