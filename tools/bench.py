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
differs from the engine's). The measurements are a library, :mod:`tir.engines.benchmarks`
(:func:`bench_model`, :func:`bench_pipeline`, :func:`synthetic_batches`, ...); this module parses
the options, calls them and prints the tables (:func:`format_table`, :func:`render_report`).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

from tir.edge.errors import TirError
from tir.edge.machine import machine_info
from tir.engines.benchmarks import (backend_of, backend_precisions, bench_model, bench_pipeline,  # noqa: F401
                                    bench_psnr, bench_trt_style, pin_synthetic_reference, precision_skip_reason,
                                    round_summary, route_of, synthetic_batches, trt_style_stats,
                                    trt_style_summary)
from tir.engines.loading import load_model

from .cli import (EVERY_RUN, MAX_SIDE, add_json_argument, add_model_arguments, add_source_argument,  # noqa: F401
                  frame_size, number, precision_list, refuse_ignored_options, write_json)

def _pipeline_model(args, model, entry, backend, precision, deploy):
    """The model the pipeline row runs: ``model`` itself, unless the model-only row pinned its gates
    to the virtual camera (``entry["camera_reference"]``) and ``--source`` is another camera; then a
    freshly loaded one (same model, backend, precision, deploy), which meets that camera as ``tir run
    --source`` does. A pinned reference stays for the model's life (engines/restorer.py
    ``Restorer.pin_camera``): ``--mode both --source <a clean Boson-like folder>`` timed the noise
    route on it, judged against the virtual camera's quieter look, where ``--mode pipeline`` (and
    ``tir run``) passed it through."""
    if not (entry.get("camera_reference") and args.source):
        return model
    return _fresh_model(args, backend, precision, deploy)


def _fresh_model(args, backend, precision, deploy):
    """The benchmarked model loaded once more (same ``--model``, backend, ``--task``, threads,
    precision and deploy), for a row whose gates must meet another camera than the model-only
    row's pinned virtual camera."""
    fresh, _ = load_model(args.model, backend, args.task, args.threads, fallback=DEFAULT_FALLBACK_MODEL,
                          precision=precision, deploy=deploy)
    return fresh


def psnr_frames(sets: str, split: str, n: int, task):
    """``--psnr-data``: :func:`tir.engines.training.evaluate.psnr_frames`, imported only when asked
    (the training side stays out of a plain ``tir bench``)."""
    from tir.engines.training.evaluate import psnr_frames as frames

    return frames(sets, split, n, task)


DEFAULT_SIZE = "640x512"
DEFAULT_FALLBACK_MODEL = "plainnet:bench"
DEFAULT_DEGRADE = "noise"  # the demo source's degradation (tir run's synthetic://?degrade=noise)
DEFAULT_DISPLAY = "auto"  # headless, as measured in docs/BENCHMARKS.md (AGC only when an output wants it)
FRAMES = number(int, low=1, what="a number of frames")  # 0 or -3 timed nothing and reported 0 fps, exit 0
SECONDS = number(float, low=0, low_open=True, what="a number of seconds")  # --duration 0 timed nothing
bench_size = frame_size  # --size / a --roofline size (tools/cli.py; kept under its old name for importers)


# ----------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------
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
    """Add ``tir bench``'s options to ``parser`` (an argparse.ArgumentParser): ``--mode``, the model
    options (``--model``, ``--backend`` several, ``--task``, ``--deploy``, ``--threads``),
    ``--size WxH`` (px), ``--frames``, ``--warmup``, ``--duration`` (s), ``--sample-every`` (s),
    ``--source``, ``--degrade``, ``--max-in-flight``, ``--agc``, ``--display``, ``--repeat``, the
    ``--psnr-*`` options, the GPU options (:func:`add_gpu_arguments`), ``--roofline``,
    ``--int8``, ``--rounds``, ``--json``, ``--no-progress``.
    """
    parser.add_argument("--mode", choices=("model", "pipeline", "both"), default="both")
    add_model_arguments(parser, several_backends=True,
                               default_model=f"the installed bundle, else {DEFAULT_FALLBACK_MODEL}")
    parser.add_argument("--size", default=DEFAULT_SIZE, help="frame size WxH for model-only and the "
                                                             "default synthetic source (default 640x512)")
    parser.add_argument("--frames", type=FRAMES, default=200, help="frames to time (default 200)")
    parser.add_argument("--warmup", type=number(int, low=0, what="a number of calls"), default=10,
                        help="untimed model-only calls first (default 10)")
    parser.add_argument("--duration", type=SECONDS, help="pipeline: run this many seconds instead of --frames")
    parser.add_argument("--sample-every", type=SECONDS, default=10.0,
                        help="pipeline: seconds between frame-age samples (default 10)")
    add_source_argument(parser, "pipeline source URI (default synthetic://?size=SIZE&realtime=0&loop=60"
                                "&degrade=DEGRADE: 60 frames rendered once and replayed, so the camera "
                                "simulation is not timed)")
    parser.add_argument("--degrade", default=DEFAULT_DEGRADE,
                        help=f"degradation of the default frames, model-only and pipeline (default "
                             f"{DEFAULT_DEGRADE}, so a bundle's router runs a real route; 'none': clean "
                             "frames, which a bundle passes through untouched)")
    parser.add_argument("--max-in-flight", type=number(int, low=1, what="a number of frames"), default=None,
                        help="pipeline: frames inside the pipeline at once for non-live sources (default 2: "
                             "full overlap; 1: lowest latency, no overlap)")
    parser.add_argument("--agc", default="percentile", choices=("percentile", "plateau", "clahe"))
    parser.add_argument("--display", default=DEFAULT_DISPLAY, choices=("always", "auto"),
                        help="pipeline: auto (default): the AGC views only when an output wants them "
                             "(none in the bench: headless), or always, as with a viewer attached")
    parser.add_argument("--repeat", type=number(int, low=1, what="a number of rounds"), default=1,
                        help="alternate model-only and pipeline runs N times; the ratio is the median "
                             "(steadier on a shared machine)")
    parser.add_argument("--psnr-data", default=None, metavar="SET[,SET]",
                        help="model-only rows: also restore --psnr-frames frames of these registered sets' "
                             "--psnr-split, degraded with --degrade (seed 0), and report mean PSNR (a bundle "
                             "is re-routed per frame)")
    parser.add_argument("--psnr-split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--psnr-frames", type=FRAMES, default=16, help="frames for the PSNR column (default 16)")
    add_gpu_arguments(parser)
    parser.add_argument("--roofline", nargs="?", const="", default=None, metavar="WxH[,WxH...]",
                        help="instead of latency: each ONNX model's achieved GMAC/s and its share of this machine's "
                             "dense-conv rate measured in the same run (fp32, and int8 with --int8), at --size or "
                             "at each size given (engines/training/roofline.py; needs the onnx package)")
    parser.add_argument("--int8", metavar="DIR", help="--roofline: also time the <route>.int8-cpu.onnx models "
                        "`tir calibrate --out DIR` wrote")
    parser.add_argument("--rounds", type=number(int, low=1, what="a number of rounds"), default=10,
                        help="--roofline: interleaved timing rounds (default 10; the median counts)")
    add_json_argument(parser, "write all results as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


#: where the options of :data:`BENCH_READS` act, by tag (the words of a refusal)
BENCH_ACTS_IN = {
    "model": "the model-only rows (--mode model or both)",
    "pipeline": "the pipeline rows (--mode pipeline or both)",
    "pipeline-frames": "the pipeline rows without --duration",
    "virtual-camera": "the pipeline rows' virtual camera (without --source: a source has its own size and frames)",
    "trt-style": "--trt-style",
    "psnr": "--psnr-data",
    "roofline": "--roofline",
}
_M, _P = "model", "pipeline"
#: ``tir bench`` option -> the kinds of run that read it (:func:`bench_run`'s tags); every option of
#: :func:`add_arguments` is here (tests/test_cli_run_bench.py checks), and one given to a run that
#: does not read it is refused (:func:`tir.tools.cli.refuse_ignored_options`)
BENCH_READS = {
    "mode": {_M, _P}, "model": EVERY_RUN, "backend": {_M, _P}, "task": EVERY_RUN, "deploy": {_M, _P},
    "threads": EVERY_RUN, "size": {_M, "virtual-camera", "roofline"}, "frames": {_M, "pipeline-frames"},
    "warmup": {_M}, "duration": {_P}, "sample_every": {_P}, "source": {_P},
    "degrade": {_M, "virtual-camera", "roofline"}, "max_in_flight": {_P}, "agc": {_P}, "display": {_P},
    "repeat": {_M, _P}, "psnr_data": {_M}, "psnr_split": {"psnr"}, "psnr_frames": {"psnr"},
    "precision": {_M, _P}, "trt_style": {_M}, "in_flight": {"trt-style"}, "roofline": EVERY_RUN,
    "int8": {"roofline"}, "rounds": {"roofline"}, "json": EVERY_RUN, "no_progress": {_M, _P},
}


def bench_run(args):
    """The tags of this ``tir bench`` run (which options it reads: :data:`BENCH_READS`) and the run
    in words: ``--roofline``; else the rows of ``--mode`` (``model``, ``pipeline``), the pipeline
    rows' virtual camera (no ``--source``) and frame count (no ``--duration``), ``--trt-style`` and
    ``--psnr-data`` where model-only rows run."""
    if getattr(args, "roofline", None) is not None:
        return {"roofline"}, "tir bench --roofline"
    mode = getattr(args, "mode", "both")
    tags = {t for t in (_M, _P) if mode in (t, "both")}
    run = f"tir bench --mode {mode}"
    if _P in tags:
        if getattr(args, "source", None):
            run += " with --source"
        else:
            tags.add("virtual-camera")
        if getattr(args, "duration", None):
            run += " with --duration"
        else:
            tags.add("pipeline-frames")
    if _M in tags and getattr(args, "trt_style", False):
        tags.add("trt-style")
    if _M in tags and getattr(args, "psnr_data", None):
        tags.add("psnr")
    return tags, run


def refuse_ignored(args) -> None:
    """Refuse the options this run of ``tir bench`` does not read (:data:`BENCH_READS`):
    ``--mode model --source DIR`` timed synthetic frames and never opened DIR, ``--roofline
    --backend tensorrt`` measured ONNX Runtime, ``--mode pipeline --warmup 50`` warmed nothing.

    Raises:
        UsageError: one line per such option, naming it and where it acts.
    """
    tags, run = bench_run(args)
    refuse_ignored_options(args, add_arguments, BENCH_READS, tags, run, BENCH_ACTS_IN)


def check_pipeline_source(source: str, size, given: bool) -> None:
    """Check the pipeline rows' source before any model loads or runs: its URI options
    (:func:`tir.edge.sources.base.check_source`) and that it opens (a file source lists its
    frames, a camera's device is opened; nothing is started, and it is closed again). A --size the
    virtual camera does not render, an empty folder or a missing camera was an error row after
    the whole model-only benchmark had run.

    Args:
        source: the pipeline source URI (``--source``, or the virtual camera at ``size``).
        size: (width, height) px of ``--size``.
        given: whether the user gave ``--source`` (else the message names ``--size``).

    Raises:
        UsageError: the source's options are refused, or the source cannot be opened.
    """
    from tir.edge.errors import UsageError
    from tir.edge.sources.base import SourceError, check_source, open_source
    from tir.edge.sources.synthetic import SIZES

    try:
        uri = check_source(source)
        close = getattr(open_source(uri), "close", None)   # a missing camera or file is named now
        if callable(close):
            close()
    except SourceError as exc:  # its message names the URI or path
        if given:
            raise UsageError(f"--source: {exc}") from None
        if tuple(size) not in SIZES:
            offered = ", ".join(f"{w}x{h}" for w, h in SIZES)
            raise UsageError(f"--size {size[0]}x{size[1]}: the pipeline rows capture from the virtual camera, which "
                             f"renders {offered}; give one of those, --mode model, or --source with frames of "
                             "that size") from None
        raise UsageError(str(exc)) from None


def main(args) -> int:
    """Run ``tir bench`` with the parsed ``args``: each backend (and precision, deploy) in turn,
    model-only and/or pipeline, then the table (and ``--json``); ``--roofline`` runs
    :func:`roofline_main` instead. A backend that fails is reported in its row; the others run.

    Returns:
        0 when at least one backend produced a result, else 2 (every row an error or skipped).

    Raises:
        UsageError: an option this run does not read (:func:`refuse_ignored`); ``--size`` is not
            WIDTHxHEIGHT; ``--psnr-data`` without a degradation; the pipeline source is refused
            (:func:`check_pipeline_source`).
        DatasetError: the ``--psnr-data`` sets do not load.
    """
    refuse_ignored(args)   # an option this run would not read: --mode model --source DIR, --roofline --frames 9
    size = bench_size(args.size)  # UsageError: tir bench: error: size 'big' is not WIDTHxHEIGHT ...
    if getattr(args, "roofline", None) is not None:
        return roofline_main(args, size)
    backends = list(dict.fromkeys(args.backend))  # in the order given, once each
    degrade = None if args.degrade in ("", "none") else args.degrade
    source = args.source or (f"synthetic://?size={size[0]}x{size[1]}&realtime=0&loop=60"
                             + (f"&degrade={degrade}" if degrade else ""))
    if args.mode in ("pipeline", "both"):
        check_pipeline_source(source, size, given=bool(args.source))
    progress = not args.no_progress
    results: List[Dict[str, Any]] = []
    batches = synthetic_batches(size, degrade=degrade)
    psnr_set = None
    if args.psnr_data:  # UsageError / DatasetError: one line, exit 2
        psnr_set = psnr_frames(args.psnr_data, args.psnr_split, args.psnr_frames, args.task or degrade)
    deploys = list(dict.fromkeys(args.deploy or [None]))
    for deploy, (backend, precision) in [(d, bp) for d in deploys for bp in backend_precisions(backends, args.precision)]:
        skipped = precision_skip_reason(backend, precision, bundle=Path(args.model or "").is_dir())
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
        except (TirError, ValueError, RuntimeError) as exc:  # reported in its row; the other backends still run
            print(f"tir bench: {label}: {exc}", file=sys.stderr, flush=True)
            results.append({"backend": backend, "precision": precision, "error": str(exc)})
            continue
        if precision == "int8" and backend != "tensorrt" and not getattr(model, "uses_student", False):
            # off TensorRT, int8 is the student's CPU INT8 model only: a bundle that runs no student runs fp32
            skipped = precision_skip_reason(backend, precision) + "; this bundle's deploy runs no student"
            getattr(model, "close", lambda: None)()
            print(f"tir bench: {backend} {precision}: skipped: {skipped}", flush=True)
            results.append({"backend": backend, "precision": precision, "skipped": skipped})
            continue
        print(f"tir bench: {label}: {description}", flush=True)
        entry: Dict[str, Any] = {"backend": getattr(model, "backend", backend), "requested": backend,
                                 "model": description}
        if precision is not None:
            entry["precision"] = precision
        if getattr(model, "deploy", None) is not None:
            entry["deploy"] = model.deploy
        pipe_model = None
        try:
            if args.mode in ("model", "both") and degrade:
                # the model-only frames are the virtual camera's, degraded: pinned to its clean look as in tir run
                entry["camera_reference"] = pin_synthetic_reference(model, size)
            if args.trt_style and args.mode in ("model", "both"):
                entry["trt_style"] = bench_trt_style(model, batches, args.warmup, args.frames, args.in_flight)
            rounds = []
            for _ in range(max(1, args.repeat)):
                if args.mode in ("model", "both"):
                    entry["model_only"] = bench_model(model, batches, args.warmup, args.frames, progress,
                                                      desc=f"model {backend}")
                if args.mode in ("pipeline", "both"):
                    if pipe_model is None:
                        pipe_model = _pipeline_model(args, model, entry, backend, precision, deploy)
                    entry["pipeline"] = bench_pipeline(
                        pipe_model, source, frames=None if args.duration else args.frames, duration=args.duration,
                        sample_every=args.sample_every, agc=args.agc, progress=progress,
                        warmup_batch=batches[0], max_in_flight=args.max_in_flight, display=args.display)
                rounds.append(round_summary(entry))
            if psnr_set is not None and args.mode in ("model", "both"):
                scorer = model
                if entry.get("camera_reference"):
                    # the timed model's gates are pinned to the virtual camera; the PSNR frames are
                    # another camera's: a fresh model, its gates pinned to that camera's clean look
                    # (as tir run --reference would), so they are judged against their own camera
                    scorer = _fresh_model(args, backend, precision, deploy)
                    scorer.pin_camera(np.stack(psnr_set["clean"])[:, None])
                try:
                    entry["psnr"] = bench_psnr(scorer, psnr_set)
                finally:
                    if scorer is not model and callable(getattr(scorer, "close", None)):
                        scorer.close()   # its engines (routes, router, student) are not needed after
            if args.repeat > 1:
                entry["rounds"] = rounds
            ratios = [r["ratio"] for r in rounds if r.get("ratio") is not None]
            if ratios:
                entry["ratio_pipeline_over_model"] = round(float(np.median(ratios)), 3)
        except Exception as exc:  # one backend failing must not hide the others' results
            entry["error"] = f"{type(exc).__name__}: {exc}"
            print(f"tir bench: {backend}: {entry['error']}", file=sys.stderr, flush=True)
        finally:
            entry["backend"] = backend_of(model, entry["backend"])
            for used in {id(m): m for m in (model, pipe_model) if m is not None}.values():
                close = getattr(used, "close", None)
                if callable(close):
                    close()
        results.append(entry)
    report = {"args": {k: v for k, v in vars(args).items() if not callable(v)}, "machine": machine_info(),
              "size": f"{size[0]}x{size[1]}", "results": results}
    json_error = _write_report(args.json, report)  # first, so the results survive whatever happens to stdout
    print(render_report(results), flush=True)
    if any("trt_style" in r for r in results):
        print(render_trt_style(results), flush=True)
    _report_written(args.json, json_error)
    return 0 if any("error" not in r and "skipped" not in r for r in results) else 2


def _report_written(path, error) -> None:
    """After the table: raise ``error`` (:func:`_write_report`'s OutputFailed) or say where
    ``--json`` went (nothing without ``path``)."""
    if error:
        raise error
    if path:
        print(f"tir bench: wrote {path}", flush=True)


def _write_report(path, report):
    """Write ``report`` to ``--json path`` (None: nothing); returns None, or the OutputFailed to
    raise once the table is printed where the write failed all the same (checked at parse time by
    :func:`tir.tools.cli.output_file`; a disk that filled since), so the numbers are not lost."""
    from tir.edge.errors import OutputFailed

    if not path:
        return None
    try:
        write_json(path, report)
    except OutputFailed as exc:
        return OutputFailed(f"{exc}; the results are in the table above")
    return None


def roofline_main(args, size) -> int:
    """``tir bench --roofline``: interleaved timing of the dense-conv reference and the bundle's
    routes and router (engines/training/roofline.py), one table per size.

    Args:
        args: the parsed ``tir bench`` options.
        size: ``(w, h)`` frame size in px.

    Returns:
        0.

    Raises:
        InputError: ``--int8 DIR`` does not exist.
        ModelError: no bundle given or installed, or the bundle does not load.
        MissingDependency: the onnx package is not installed.
    """
    from tir.engines.training import roofline
    from tir.edge.errors import InputError, MissingDependency, ModelError
    from tir.engines.bundle import default_bundle_path, load_bundle

    # UsageError, one line, exit 2 (inside the try below it read "--roofline needs a bundle: size 'abc' ...")
    sizes = [bench_size(v, "--roofline") for v in args.roofline.split(",") if v.strip()] or [size]
    try:
        path = args.model or default_bundle_path()
        if path is None:
            raise ModelError("no bundle installed; give one with --model DIR")
        bundle = load_bundle(path)
        import onnx  # noqa: F401  (the reference graphs are built with it)
    except ImportError as exc:
        raise MissingDependency("--roofline needs the onnx package (pip install onnx, or the [test] extras)") from exc
    except (TirError, ValueError) as exc:  # a bad size, no bundle or a refused one: exit 2
        raise ModelError(f"--roofline needs a bundle: {exc}") from exc
    if args.int8 and not Path(args.int8).is_dir():
        raise InputError(f"--int8 {args.int8}: no such folder (run `tir calibrate --out {args.int8}` first)")
    routes = [args.task] if args.task else None
    if args.int8:  # a route without its INT8 model was timed in fp32 only, with nothing said
        missing = [r for r in (routes or bundle.tasks) if not (Path(args.int8) / f"{r}.int8-cpu.onnx").is_file()]
        if missing:
            print(f"tir bench: --int8 {args.int8} has no {', '.join(f'{r}.int8-cpu.onnx' for r in missing)}: "
                  f"{'that route is' if len(missing) == 1 else 'those routes are'} timed in fp32 only (`tir "
                  f"calibrate --bundle {bundle.path} --routes {','.join(missing)} --out {args.int8}` writes them)",
                  flush=True)
    threads = args.threads if args.threads is not None else 2
    reports = []
    for w, h in sizes:
        m = bundle.multiple
        wh = (-(-w // m) * m, -(-h // m) * m)
        x = synthetic_batches(wh, count=1, degrade=None if args.degrade in ("", "none") else args.degrade)[0]
        # the dense-conv reference models live only while they are timed (a folder per size was
        # left in the temp folder by every run)
        with tempfile.TemporaryDirectory(prefix="tir-roofline-") as work:
            items = roofline.reference_items(wh, int8=bool(args.int8), work_dir=work)
            items += roofline.bundle_items(bundle, wh, routes, args.int8, np.ascontiguousarray(x, np.float32))
            load_before = roofline.load_average()
            roofline.measure(items, rounds=max(1, args.rounds), threads=threads)
        rows = roofline.shares(items)
        print(roofline.format_rows(rows, wh), flush=True)
        reports.append({"size": f"{wh[0]}x{wh[1]}", "rows": rows, "rounds": args.rounds, "threads": threads,
                        "load_avg_before": load_before, "load_avg_after": roofline.load_average()})
    json_error = _write_report(args.json, {"args": {k: v for k, v in vars(args).items() if not callable(v)},
                                           "machine": machine_info(), "bundle": str(bundle.path),
                                           "roofline": reports})
    _report_written(args.json, json_error)
    return 0


# ----------------------------------------------------------------------------------------
# --precision lists and --trt-style (the GPU check, docs/gpu-check.md)
# ----------------------------------------------------------------------------------------
def add_gpu_arguments(parser) -> None:
    """Add the GPU options to ``parser``: ``--precision P[,P...]`` (TensorRT plans to compare),
    ``--trt-style`` (trtexec-like breakdown from CUDA events) and ``--in-flight`` (1–4 CUDA streams).
    """
    parser.add_argument("--precision", type=precision_list, default=None, metavar="P[,P...]",
                        help="TensorRT plan precision(s) to compare, e.g. fp32,fp16,int8 (each needs `tir build` "
                             "first); other backends run fp32 only. Default: the best plan built")
    parser.add_argument("--trt-style", action="store_true",
                        help="model-only breakdown after trtexec: throughput, latency, enqueue, H2D, GPU compute, "
                             "D2H (min/mean/median/p90/p95/p99), from CUDA events with frames in flight on "
                             "separate streams (TensorRT); host-timed where a backend has no CUDA events")
    parser.add_argument("--in-flight", type=int, default=2, choices=(1, 2, 3, 4),
                        help="--trt-style: frames in flight on separate CUDA streams (default 2)")


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


def _deploy_cell(entry: Dict[str, Any], run: Dict[str, Any]) -> str:
    """The deploy column: the deploy, and for ``auto`` what the timed frames ran
    (``auto:student``, ``auto:route``)."""
    deploy = entry.get("deploy", "-")
    return f"{deploy}:{run['runs']}" if deploy == "auto" and run.get("runs") else deploy


def render_report(results: Sequence[Dict[str, Any]]) -> str:
    """The results as text: one row per mode and backend (fps; p50/p90/p99/max latency in ms; CPU
    ms per frame; drops; pipeline/model fps ratio; deploy (for auto with what ran: ``auto:student``)
    and PSNR in dB when present), then
    notes, per-round tables and the pipeline's per-stage latencies (ms).
    """
    rows = []
    extra = any("deploy" in r or "psnr" in r for r in results)   # routes vs student, PSNR on real frames
    for r in results:
        if "model_only" in r:
            m = r["model_only"]
            lat = m["latency_ms"]
            rows.append(["model", r["backend"], m.get("route", "-"), m["size"], m["frames"], f"{m['fps']:.1f}",
                         _ms(lat, "p50"), _ms(lat, "p90"), _ms(lat, "p99"), _ms(lat, "max"),
                         f"{m['cpu_ms_per_frame']:.1f}", "-", "-"]
                        + ([_deploy_cell(r, m), f"{r['psnr']['db']:.2f}" if "psnr" in r else "-"] if extra else []))
        if "pipeline" in r:
            p = r["pipeline"]
            lat = p["latency_ms"]["e2e"]
            rows.append(["pipeline (e2e)", r["backend"], p.get("route", "-"), "", p["frames"], f"{p['fps']:.1f}",
                         _ms(lat, "p50"), _ms(lat, "p90"), _ms(lat, "p99"), _ms(lat, "max"),
                         f"{p['cpu_ms_per_frame']:.1f}", sum(p["drops"].values()),
                         r.get("ratio_pipeline_over_model", "-")] + ([_deploy_cell(r, p), "-"] if extra else []))
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

