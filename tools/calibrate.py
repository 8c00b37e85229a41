"""``tir calibrate``: INT8 calibration of every route of a bundle, with an accuracy gate.

For each route: run the fp32 ONNX over the calibration frames (``--source``), compute activation
ranges (``--method``), and write into ``--out``:

- ``<route>.int8-trt.onnx``   TensorRT explicit-quantization model (symmetric S8 Q/DQ, §1.3 rules)
- ``<route>.int8-cpu.onnx``   ONNX Runtime U8S8 QDQ model for the CPU (same ranges)
- ``<route>.calib.cache``     native TensorRT calibration cache (implicit path: TRT 8.5 / DLA)
- ``<route>.ranges.json``     the ranges themselves
- ``<route>.int8-trt-mixed.onnx`` only when the TensorRT flavour fails the gate and keeping
  some layers in FP16 makes it pass (the layers are named in the report)
- ``calibration.json``        report: gate verdicts (PSNR INT8 vs FP32 on held-out frames) and
  ORT CPU latency fp32 vs int8 per route; the same table is printed.

With ``--student`` (or ``student`` among ``--routes``) the bundle's distilled student
(``student.onnx``, two inputs: the frame and the (1, K) prompt weights) is calibrated too, into
``student.int8-cpu.onnx``, ``student.int8-trt.onnx``, ``student.calib.cache`` and
``student.ranges.json``: ranges over the calibration frames with each prompt slot's one-hot
weights in turn (frame i gets slot i mod K; RoadScene frames degraded with that slot's task),
the prompt input and its branch kept float in both INT8 models, and one gate row per prompt
(``student/<task>``) on that task's held-out frames; the report's ``student`` entry holds them.
The student gets no FP16-layer search.

``--float-tail auto`` (default): each model is first written with the session-7 float regions;
when the gate refuses it, it is written and gated again with the image-level skip and its
linear tail float (``calibration.qdq.image_tail``, ``--tail-blocks``), and those models are
kept (the report's ``float_tail`` says which). ``--sensitivity N`` adds a per-node and
per-tensor diagnosis of the CPU model (``calibration/sensitivity.py``).

The TensorRT flavour's numbers here are ONNX Runtime CPU simulating its Q/DQ (S8S8); on the
device, re-check with ``tir bench --backend tensorrt``.
"""
from __future__ import annotations

import argparse
import contextlib

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from tir.edge import jsontext
from tir.edge.errors import ModelError, OutputFailed, UsageError

from .cli import add_bundle_argument, add_source_argument, add_threads_argument, number, refusing

log = logging.getLogger("tir.calibrate")


#: the gated INT8 flavours and the file suffix each is written to (:func:`_write_int8`)
GATED_FILES = (("cpu-u8s8", "int8-cpu.onnx"), ("trt-qdq", "int8-trt.onnx"))

def add_arguments(parser) -> None:
    """Add ``tir calibrate``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--frames``, ``--source``, ``--method``, ``--percentile``, ``--out``, ``--size WxH`` (px),
    ``--holdout``, ``--routes``, ``--max-loss-db`` / ``--min-fidelity-db`` (dB, the gate),
    ``--trt-version``, ``--bench-runs``, ``--threads``, ``--reduce-range``, ``--trt-adds``,
    ``--no-fp16-search``, ``--data``, ``--seed``, ``--student``, ``--student-percentile``, ``--float-tail``,
    ``--tail-blocks N``,
    ``--sensitivity N``.
    """
    add_bundle_argument(parser, "model bundle folder (manifest.json + route-*.onnx)", required=True)
    parser.add_argument("--frames", type=number(int, 1, what="a number of frames"), default=500,
                        help="calibration frames (default 500)")
    add_source_argument(parser, "synthetic | roadscene | a folder of recordings/images (default synthetic)",
                        default="synthetic")
    parser.add_argument("--method", default="percentile", choices=("entropy", "percentile", "minmax"),
                        help="activation ranges (default percentile 99.99: on our image-to-image nets "
                             "TensorRT's entropy/KL clipping cost 10-17 dB of fidelity, docs/int8.md)")
    parser.add_argument("--percentile", type=number(float, 0, 100, low_open=True, what="a percentile"), default=99.99,
                        help="for --method percentile (0 < P <= 100)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", default="640x512", help="frame size WxH (default 640x512)")
    parser.add_argument("--holdout", type=number(int, 1, what="a number of frames"), default=16,
                        help="held-out frames for the gate (default 16)")
    parser.add_argument("--routes", default=None,
                        help="comma-separated routes (default: all); 'student' names the distilled student "
                             "(--routes student: the student alone)")
    parser.add_argument("--student", action="store_true",
                        help="also calibrate the bundle's distilled student (student.onnx): ranges with each "
                             "prompt's one-hot weights, one gate row per prompt (student/<task>); with --routes, "
                             "only the routes listed (--student --routes student: the student alone)")
    parser.add_argument("--max-loss-db", type=number(what="a number of dB"), default=0.3,
                        help="gate: max dB lost vs fp32 (0.3)")
    parser.add_argument("--min-fidelity-db", type=number(what="a number of dB"), default=40.0,
                        help="gate without clean references: min PSNR(int8, fp32) (40)")
    parser.add_argument("--trt-version", default="8.5.2", help="header version of the TRT cache (8.5.2)")
    parser.add_argument("--bench-runs", type=number(int, 0, what="a number of runs"), default=20,
                        help="timed ORT runs per model, interleaved across fp32/u8s8/s8s8 (20; 0 = skip)")
    add_threads_argument(parser, default=2, help="ORT intra-op threads (2)")
    parser.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=True,
                        help="CPU model: 7-bit weights (default on, on every CPU). Without VNNI (AVX2 only) ONNX "
                             "Runtime's u8xs8 kernel sums pairs of products in int16 and saturates with 8-bit "
                             "weights: blur/noise/BN lost 0.7-1.4 dB that way (docs/int8.md). With VNNI 8-bit "
                             "weights ran no faster and moved the gate loss by <= 0.02 dB, so 7-bit stays the default: "
                             "its models run right on any CPU. --no-reduce-range models record it and are "
                             "refused at load on a CPU without VNNI")
    parser.add_argument("--trt-adds", default="inner", choices=("inner", "all", "none"),
                        help="TensorRT Q/DQ on residual Adds: inner (default; not the image-level skip), all, none")
    parser.add_argument("--no-fp16-search", action="store_true", help="skip the FP16-layer search on refusal")
    parser.add_argument("--data", default=None, help="RoadScene folder (default ../shared/data/roadscene-ir)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-tail", default="auto", choices=("auto", "on", "off"),
                        help="keep the image-level skip Add and its linear correction tail (reconstruction conv "
                             "back to the last residual merge, --tail-blocks blocks above) float in both INT8 "
                             "models: on, off, or auto (default: off, and on only for a model the gate refuses "
                             "without it, since on the CPU it costs speed; calibration.qdq.image_tail, "
                             "docs/int8.md 'Session 8')")
    parser.add_argument("--tail-blocks", type=number(int, 0, what="a number of blocks"), default=1, metavar="N",
                        help="with --float-tail, also keep the N residual blocks above the tail float (default 1: "
                             "the student's last block; a route's tail ends at its global-residual Sub, so N does "
                             "not change the routes)")
    parser.add_argument("--student-percentile", type=number(float, 0, 100, low_open=True, what="a percentile"),
                        default=99.9,
                        help="the student's --percentile (default 99.9: its activations are heavy-tailed, peak/RMS "
                             "30-60; 99.9 beat 99.99 and min-max on it, docs/int8.md 'Session 8')")
    parser.add_argument("--qat-steps", type=number(int, 0, what="a number of steps"), default=0, metavar="N",
                        help="with --student: quantisation-aware fine-tuning of the student for N steps before it is "
                             "quantised (default 0 = post-training quantisation only): the graph of student.onnx in "
                             "torch, fake-quantised where the CPU model quantises it, fitted to the unquantised "
                             "student's own output on the calibration frames (engines/training/qat.py); written to "
                             "<out>/student.qat.onnx, whose INT8 models are gated against the unchanged fp32 student. "
                             "Needs torch and onnx2torch (pip install -e '.[qat]')")
    parser.add_argument("--qat-minutes", type=number(float, 0, low_open=True, what="a number of minutes"), default=None,
                        metavar="M", help="with --qat-steps: stop the fine-tuning after M minutes at the latest")
    parser.add_argument("--qat-init", metavar="DIR", default=None,
                        help="with --qat-steps: go on fine-tuning an earlier run's student (DIR/student.qat.onnx, "
                             "from its learned ranges DIR/student.ranges.json) instead of starting from the fp32 "
                             "student, which stays the teacher and the gate's reference")
    parser.add_argument("--prompt-scale", action="store_true",
                        help="with --student: before quantising, rewrite the student's output path (last residual "
                             "merge -> out conv -> reconstruction conv) to carry its correction divided by a "
                             "per-prompt scale, multiplied back in float before the image-level skip (exact in fp32; "
                             "calibration/prompt_scale.py), so each prompt's correction gets the whole uint8 range; "
                             "written to <out>/student.pscale.onnx, which --qat-steps then fine-tunes")
    parser.add_argument("--film", default="float", choices=("float", "int8", "fold"),
                        help="with --student: the FiLM multiply/add of the student's blocks (conv1(x)*(1 + gamma(p)) "
                             "+ beta(p)) in the CPU (U8S8) model: float (default; dequantised around each block) or "
                             "int8 (QLinearMul/QLinearAdd, gamma and beta on uint8 grids of their calibrated ranges; "
                             "faster, changes the numerics, so --qat-steps trains the same quantisers; "
                             "calibration.qdq.film_nodes, docs/int8.md 'Session 23'), or fold (int8 with 1 + gamma folded into "
                             "the weight scales of the convolution it multiplies: one QLinearMul per block fewer, "
                             "one frame per run; refused where the FiLM does not read a convolution's output; "
                             "calibration/film_fold.py, docs/int8.md 'Session 24'). The TensorRT flavour keeps it float")
    parser.add_argument("--sensitivity", type=number(int, 0, what="a number of frames"), default=0, metavar="N",
                        help="diagnose the CPU (U8S8) model on N held-out frames (per prompt for the student): "
                             "per-node sensitivity (only this node INT8 / all but this node INT8) and per-tensor "
                             "uint8 SQNR, printed and written to <stem>.sensitivity.json (default 0 = off; "
                             "calibration/sensitivity.py)")


def _latency(paths: dict, size, threads: int, runs: int, prompt=None) -> dict:
    """p50/p90/... ms per model, runs interleaved (A, B, C, A, B, C, ...) so load drift on a shared
    machine hits every model alike. ``prompt``: (K,) float32 weights; the models are then students
    (:class:`~tir.engines.backends.student.StudentEngine`) and get them with every frame. A model
    the engine refuses on this CPU (full 8-bit U8S8 weights without VNNI:
    :func:`~tir.engines.backends.onnxruntime.int8_cpu_problem`) is not timed; its entry is
    ``{"refused": reason}``."""
    from tir.edge.pipeline.stats import summarize_ms
    from tir.engines.backends.onnxruntime import ONNXRuntimeEngine
    from tir.engines.backends.student import StudentEngine

    w, h = size
    batch = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
    extra = () if prompt is None else (np.asarray(prompt, np.float32),)
    kind = ONNXRuntimeEngine if prompt is None else StudentEngine
    from tir.engines.engine import EngineError

    engines, refused = {}, {}
    for k, p in paths.items():
        try:
            engines[k] = kind(p, providers="cpu", threads=threads, name=Path(p).stem)
        except EngineError as exc:  # an INT8 model this CPU would run wrongly (int8_cpu_problem): not timed
            refused[k] = {"refused": str(exc)}
            log.warning("not timed: %s", exc)
    times = {k: [] for k in engines}
    try:
        for _ in range(max(2, runs // 5)):
            for e in engines.values():
                e.infer(batch, *extra)
        for _ in range(runs):
            for k, e in engines.items():
                t0 = time.perf_counter()
                e.infer(batch, *extra)
                times[k].append(time.perf_counter() - t0)
    finally:
        for e in engines.values():
            e.close()
    return {**{k: summarize_ms(v) for k, v in times.items()}, **refused}


def _runner(path: str, threads: int):
    from tir.engines.backends.onnxruntime import ort_session

    sess = ort_session(path, threads=threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def _prompted_runners(path: str, threads: int, prompts) -> list:
    """One runner per row of ``prompts`` ((K, K) float32): the student at ``path`` (one ORT
    session) fed a (1, 1, H, W) batch and that row as its (1, K) ``prompt`` input."""
    from tir.engines.backends.onnxruntime import ort_session
    from tir.engines.backends.student import PROMPT_INPUT

    sess = ort_session(path, threads=threads)
    name = next(i.name for i in sess.get_inputs() if i.name != PROMPT_INPUT)

    def runner(w):
        w = np.ascontiguousarray(np.asarray(w, np.float32)[None])
        return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32), PROMPT_INPUT: w})[0]

    return [runner(w) for w in prompts]


def _prompt_tasks(prompt: str):
    """The RoadScene degradations for prompt slot ``prompt``: its own task, none for ``clean``,
    every task for a slot that is no task (calibration_set's ``tasks``)."""
    from tir.engines.degrade import TASKS

    return [prompt] if prompt in TASKS else ([] if prompt == "clean" else None)


def _student_frames(args, size, prompts):
    """The student's calibration frames: frame i is frame i // K of slot i mod K's own set
    (:func:`_prompt_tasks`; seed + slot, so synthetic slots see different scenes), ``--frames``
    in all. Returns ``(CalibrationSet, extra_inputs)`` for
    :func:`~tir.calibration.qdq.collect_ranges`; ``extra_inputs`` gives each frame its slot's
    one-hot (N, K) float32 ``prompt``."""
    from tir.calibration.data import CalibrationSet, calibration_set
    from tir.engines.backends.student import PROMPT_INPUT

    k = len(prompts)
    per_slot = -(-args.frames // k)
    sets = [calibration_set(args.source, per_slot, size, seed=args.seed + j, data_root=args.data,
                            tasks=_prompt_tasks(p)) for j, p in enumerate(prompts)]
    eye = np.eye(k, dtype=np.float32)

    def frame(i):
        return sets[i % k][i // k]

    def pair(i):
        return sets[i % k].pair(i // k)

    def extra(first, batch):
        return {PROMPT_INPUT: eye[[(first + r) % k for r in range(len(batch))]]}

    name = f"{sets[0].name.split('(')[0]} x {k} prompts"
    return CalibrationSet(name, args.frames, size, frame, pair if all(s.has_references for s in sets) else None), extra


def _write_int8(fp32: str, stem: str, ranges: dict, args, out: Path, float_inputs=(), tail: bool = False):
    """Write ``<stem>.ranges.json``, the TensorRT Q/DQ and ONNX Runtime U8S8 models and the
    TensorRT calibration cache from ``ranges`` into ``out``; ``float_inputs``: graph inputs kept
    float with their branch (the student's prompt, :func:`tir.calibration.qdq.side_float_nodes`);
    ``tail``: the image tail stays float (:func:`tir.calibration.qdq.image_tail`, ``--tail-blocks``).

    Returns:
        ``(files, trt_report, qdq_options)``: {kind: path}, the Q/DQ writer's report and the
        options it was given (for the FP16-layer search).
    """
    from tir.calibration.qdq import quantize_cpu, trt_cache_from_ranges, write_trt_qdq

    files = {k: str(out / f"{stem}.{k}") for k in ("int8-trt.onnx", "int8-cpu.onnx", "calib.cache", "ranges.json")}
    Path(files["ranges.json"]).write_text(json.dumps(
        {k: {"amax": r.amax, "min": r.min, "max": r.max} for k, r in ranges.items()}, indent=1) + "\n")
    qdq_options = {"quantize_adds": args.trt_adds != "none", "global_skip": args.trt_adds == "all",
                   **_tail_options(args, tail)}
    trt_report = write_trt_qdq(fp32, ranges, files["int8-trt.onnx"], float_inputs=list(float_inputs), **qdq_options)
    # --film fold refuses a student whose FiLM it cannot fold (calibration/film_fold.py): a refused model
    fold = getattr(args, "film", "float") == "fold"
    with refusing(ValueError, kind=ModelError) if fold else contextlib.nullcontext():
        quantize_cpu(fp32, ranges, files["int8-cpu.onnx"], activation="uint8", reduce_range=args.reduce_range,
                     float_inputs=list(float_inputs), **_tail_options(args, tail), **_film_options(args, float_inputs))
    trt_cache_from_ranges({k: r for k, r in ranges.items() if k not in float_inputs}, files["calib.cache"],
                          version=args.trt_version)
    return files, trt_report, qdq_options


def _file_digests(files: dict) -> dict:
    """{kind: sha256 hex} of the files :func:`_write_int8` wrote (the ones the gate judged), so that
    a runtime using one of them can refuse a file changed after calibration."""
    from tir.engines.bundle import sha256_file

    return {kind: sha256_file(path) for kind, path in files.items() if Path(path).is_file()}


def _sensitivity(fp32: str, stem: str, ranges: dict, cases, args, out: Path, float_inputs=(), tail: bool = False) -> dict:
    """``--sensitivity``: rank the U8S8 model's nodes and tensors by the INT8 error they cause
    (:mod:`tir.calibration.sensitivity`), print both tables and write ``<stem>.sensitivity.json``.

    ``cases``: ``[(feeds, runner_for)]``, one per prompt slot (one for a route): ``feeds`` the
    fp32 model's input dicts for the diagnosed frames, ``runner_for(path)`` a list of the
    (H, W) outputs of the model at ``path`` on those frames. The figure is the mean fidelity
    PSNR(int8, fp32) in dB over all cases' frames.

    Returns:
        {"path": the JSON file, "reference_db": fully quantised fidelity}.
    """
    from tir.calibration import gate, sensitivity as sens

    refs = [outputs(fp32) for _, outputs in cases]

    def evaluate(path: str) -> float:
        return float(np.mean([gate.measure(r, outputs(path))["fidelity_db"] for r, (_, outputs) in zip(refs, cases)]))

    work = out / f".{stem}-sensitivity"
    result = {}
    for mode in ("only", "float"):
        reference, rows = sens.node_sensitivity(fp32, ranges, evaluate, work, mode=mode, float_inputs=float_inputs,
                                                reduce_range=args.reduce_range, progress=True, **_tail_options(args, tail))
        print(f"\n{stem}: " + sens.format_sensitivity(reference, rows, mode))
        result["reference_db"] = reference
        result[mode] = [r.to_dict() for r in rows]
    import onnx

    model = onnx.load(fp32)
    side = set(float_inputs)
    names = [n for n in ranges if n not in side and n in {o for node in model.graph.node for o in node.output}]
    values = sens.tensor_values(fp32, [f for feeds, _ in cases for f in feeds], names, threads=args.threads)
    errors = sens.tensor_errors(values, ranges)
    print(f"\n{stem}: tensors on the uint8 grid, worst SQNR first\n" + sens.format_tensor_errors(errors))
    result["tensors"] = [t.to_dict() for t in errors]
    path = out / f"{stem}.sensitivity.json"
    path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return {"path": str(path), "reference_db": result["reference_db"]}


def _remove_partial(out: Path, stem) -> None:
    """Remove the files of route (or student) ``stem`` a failed write left in ``out``
    (``<stem>.*`` and the ``.<stem>-sensitivity`` work folder); nothing else is touched."""
    import shutil

    if not stem:
        return
    for path in out.glob(f"{stem}.*"):
        path.unlink(missing_ok=True)
    shutil.rmtree(out / f".{stem}-sensitivity", ignore_errors=True)


def _tail_options(args, tail: bool) -> dict:
    """The image-tail rule (``tail``, ``--tail-blocks``) as keyword arguments of the Q/DQ writers."""
    return {"float_tail": bool(tail), "tail_blocks": int(getattr(args, "tail_blocks", 1))}


def _film_options(args, float_inputs) -> dict:
    """``--film`` as a keyword argument of :func:`tir.calibration.qdq.quantize_cpu`: only where a
    side input (the student's prompt) is kept float; the routes have no FiLM."""
    return {"film": getattr(args, "film", "float")} if float_inputs else {}


def _tail_tries(args) -> list:
    """The ``float_tail`` settings to try in turn (``--float-tail``): auto = without, then with
    the image tail float when the gate refuses the first; on / off = that one."""
    mode = getattr(args, "float_tail", "auto")
    return {"on": [True], "off": [False]}.get(mode, [False, True])


def _qdq_summary(report) -> dict:
    return {"convs": len(report.quantized_convs), "adds": len(report.quantized_adds), "skipped": report.skipped}


def _int8_latency(fp32: str, files: dict, size, args, prompt=None) -> dict:
    """fp32 vs U8S8 vs S8S8-on-ORT latency (:func:`_latency`); {} with ``--bench-runs 0``."""
    if args.bench_runs <= 0:
        return {}
    return _latency({"fp32": fp32, "int8-cpu-u8s8": files["int8-cpu.onnx"],
                     "int8-trt-s8s8-on-ort": files["int8-trt.onnx"]}, size, args.threads, args.bench_runs,
                    prompt=prompt)


def _frames_of(held, n: int) -> list:
    """The first ``n`` held-out frames as (1, 1, H, W) float32 batches (the degraded input of pairs)."""
    return [(held.pair(i)[0] if held.has_references else held[i])[None, None].astype(np.float32)
            for i in range(min(n, len(held)))]


def _student_case(held, n: int, weights, threads: int):
    """One ``--sensitivity`` case (:func:`_sensitivity`) for a student prompt slot: the first
    ``n`` held-out frames with the (K,) ``weights`` as the (1, K) prompt."""
    from tir.engines.backends.student import PROMPT_INPUT

    w = np.asarray(weights, np.float32)[None]
    xs = _frames_of(held, n)
    feeds = [{"input": x, PROMPT_INPUT: w} for x in xs]

    def outputs(path: str) -> list:
        run = _prompted_runners(path, threads, w)[0]
        return [np.clip(run(x)[0, 0], 0, 1) for x in xs]

    return feeds, outputs


def _route_case(held, n: int, threads: int):
    """One ``--sensitivity`` case for a route: its first ``n`` held-out frames."""
    xs = _frames_of(held, n)

    def outputs(path: str) -> list:
        run = _runner(path, threads)
        return [np.clip(run(x)[0, 0], 0, 1) for x in xs]

    return [{"input": x} for x in xs], outputs


def _prompt_scaled(base: str, frames, extra, k: int, args, out: Path):
    """``--prompt-scale``: the student at ``base`` rewritten with a per-prompt output scale
    (:func:`tir.calibration.prompt_scale.scale_output_path`), s_k the ``--student-percentile`` of
    |x| of its output path's merge tensor over the calibration frames of prompt slot k (frame i
    fed slot i mod K, ``extra`` its prompt), measured on the rewritten graph (the merge then holds
    the out conv's moved bias); a ``base`` rewritten already (``--qat-init`` of an earlier
    ``--prompt-scale`` run) keeps its graph and scales. Writes ``<out>/student.pscale.onnx``.

    Returns:
        ``(path, report)``: the rewritten fp32 ONNX and {"scales", "path" (node names)}.
    """
    import tempfile
    from dataclasses import asdict

    import onnx

    from tir.calibration import prompt_scale
    from tir.engines.backends.onnxruntime import ort_session

    model = onnx.load(base)
    dst = out / "student.pscale.onnx"
    done = prompt_scale.recorded(model)
    if done is not None:   # --qat-init of an earlier --prompt-scale run: its graph and scales go on
        onnx.save(model, str(dst))
        log.info("student: per-prompt output scale of %s %s", base, np.round(done["scales"], 3).tolist())
        return str(dst), {"scales": done["scales"], "path": {k_: v for k_, v in done.items() if k_ != "scales"},
                          "file": str(dst)}
    path = prompt_scale.scale_output_path(model, np.ones(k))
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(path.tensor))
    with tempfile.TemporaryDirectory(prefix="tir-pscale-") as tmp:
        onnx.save(probe, os.path.join(tmp, "probe.onnx"))
        sess = ort_session(os.path.join(tmp, "probe.onnx"), threads=args.threads)
        name = next(i.name for i in sess.get_inputs() if i.name != "prompt")
        values, slots = [], []
        for i in range(len(frames)):
            x = np.asarray(frames[i], np.float32)[None, None]
            v = sess.run([path.tensor], {name: x, **extra(i, x)})[0]
            values.append(v.ravel()[::7].copy())   # a 1/7 sample keeps 192 frames' tensors in memory
            slots.append(i % k)
    scales = prompt_scale.prompt_scales(values, slots, k, percentile=getattr(args, "student_percentile", 99.9))
    prompt_scale.set_scales(model, scales)
    onnx.save(model, str(dst))
    log.info("student: per-prompt output scale %s", np.round(scales, 3).tolist())
    return str(dst), {"scales": [float(s) for s in scales], "path": asdict(path), "file": str(dst)}


def _qat_source(fp32: str, ranges: dict, frames, eye, args, out: Path, start: str = None):
    """``--qat-steps``: fine-tune the student at ``fp32`` quantisation-aware
    (:func:`tir.engines.training.qat.qat_student`) on the calibration ``frames`` (frame i with
    prompt row ``eye[i mod K]``, the slots :func:`_student_frames` gave it), starting from the
    PTQ ``ranges``. Writes ``<out>/student.qat.onnx`` (``fp32`` is only read). ``start``: the
    graph to fine-tune instead (``--prompt-scale``'s rewrite, of ``--qat-init``'s student when
    given); ``--qat-init``'s learned ranges still apply to the tensors it shares.

    Returns:
        ``(path, ranges, report)``: the fine-tuned fp32 ONNX that the INT8 models are made
        from, the activation ranges it learned ({name: TensorRange}; the PTQ range of every
        tensor it did not fake-quantise), and a JSON-ready summary.

    Raises:
        CalibrationDataError: torch or onnx2torch is missing (the training extra).
    """
    from tir.calibration.data import CalibrationDataError
    from tir.engines.backends.student import PROMPT_INPUT

    try:
        import onnx2torch  # noqa: F401  (imports torchvision: a build that does not match torch's raises RuntimeError)
        import torch

        from tir.engines.training import qat
    except Exception as exc:  # noqa: BLE001
        raise CalibrationDataError(f"--qat-steps needs torch and onnx2torch with a torchvision that matches torch "
                                   f"({type(exc).__name__}: {exc}); pip install -e '.[qat]'") from None
    k = len(eye)
    if frames.has_references:  # the gate's pairs: the loss weighs each crop as the gate charges it
        pairs = [frames.pair(i) for i in range(len(frames))]
        xs, refs = [np.asarray(x, np.float32) for x, _ in pairs], [np.asarray(y, np.float32) for _, y in pairs]
    else:
        xs, refs = [np.asarray(frames[i], np.float32) for i in range(len(frames))], None
    torch.set_num_threads(max(1, int(args.threads)))
    path = out / "student.qat.onnx"
    log.info("student: QAT for %d steps%s on %d frames", args.qat_steps,
             f" (at most {args.qat_minutes:g} min)" if args.qat_minutes else "", len(xs))
    init = getattr(args, "qat_init", None)
    if init is not None:   # go on from an earlier run: its weights and its learned ranges
        from tir.calibration.entropy import TensorRange

        earlier = json.loads((Path(init) / "student.ranges.json").read_text())
        ranges = {**ranges, **{name: TensorRange(**r) for name, r in earlier.items()}}
        init = str(Path(init) / "student.qat.onnx")
    if start is not None:
        init = start
    if init is not None:
        if Path(init).resolve() == path.resolve():
            raise CalibrationDataError(f"--qat-init {args.qat_init} is --out: write the new run elsewhere")
    result = qat.qat_student(fp32, ranges, xs, [eye[i % k] for i in range(len(xs))], path, args.qat_steps,
                             minutes=args.qat_minutes, reduce_range=args.reduce_range,
                             float_inputs=(PROMPT_INPUT,), seed=args.seed, references=refs, init_path=init,
                             # --float-tail on: train the model that is gated, the tail float (auto: the all-INT8 first try)
                             quantize_options={**_tail_options(args, getattr(args, "float_tail", "auto") == "on"),
                                               **_film_options(args, (PROMPT_INPUT,))})
    learned = {**ranges, **result["ranges"]}
    report = {"path": str(path), "steps": result["train"]["steps"], "seconds": result["train"]["seconds"],
              "first_mse": result["train"]["first_mse"], "last_mse": result["train"]["last_mse"],
              "written": len(result["written"]), "init": init, **result["plan"]}
    return str(path), learned, report


def calibrate_student(bundle, args, size, out: Path):
    """Calibrate the bundle's distilled student (``student.onnx``; inputs ``input`` (N, 1, H, W)
    and ``prompt`` (N, K) float32, K = the manifest's prompt slots; engines/backends/student.py).

    Ranges come from ``--frames`` calibration frames, frame i fed slot i mod K's one-hot prompt
    (every slot exercised; RoadScene frames degraded with that slot's task), at
    ``--student-percentile`` with ``--method percentile``. Both INT8 models
    keep the prompt input and its branch float (``float_inputs``, :func:`tir.calibration.qdq.side_input_nodes`).
    The gate runs once per prompt slot: ``student/<task>`` on ``--holdout`` held-out frames of
    that task (RoadScene: degraded with it, clean ones for ``clean``; synthetic and folders: the
    routes' held-out protocol) with the one-hot prompt, same rule and limits as the routes. No
    FP16-layer search. Latency (``--bench-runs``) is timed with uniform prompt weights.

    Returns:
        ``(report, verdicts)`` as :func:`calibrate_route`, ``report["route"] == "student"``,
        ``report["prompts"]`` the slots.

    Raises:
        CalibrationDataError: the calibration or held-out frames cannot be had, or ``--frames``
            is below the number of prompt slots.
        BundleError: the student does not take ``input`` and a K-wide ``prompt`` (K from the manifest).
    """
    from tir.calibration import gate
    from tir.calibration.data import CalibrationDataError, calibration_set
    from tir.calibration.qdq import collect_ranges
    from tir.engines.backends.onnxruntime import ort_session
    from tir.engines.backends.student import PROMPT_INPUT
    from tir.engines.bundle import BundleError

    fp32 = str(bundle.student_path)
    prompts = list(bundle.student["prompts"])
    k = len(prompts)
    inputs = {i.name: i.shape for i in ort_session(fp32).get_inputs()}
    width = inputs[PROMPT_INPUT][-1] if PROMPT_INPUT in inputs else None
    if len(inputs) != 2 or PROMPT_INPUT not in inputs or (isinstance(width, int) and width != k):
        raise BundleError(f"{fp32}: a student takes 'input' and a (N, {k}) '{PROMPT_INPUT}' ({k} prompts in the "
                         f"manifest), this one takes {inputs}; re-export it with `tir distill`")
    if args.frames < k:
        raise CalibrationDataError(f"the student has {k} prompt slots; calibrate it with --frames >= {k} "
                                   f"(got {args.frames}) so every slot is exercised")
    frames, extra = _student_frames(args, size, prompts)
    log.info("student: calibrating on %s (%d frames, %d prompts)", frames.name, len(frames), k)
    t0 = time.perf_counter()
    source, scaled = fp32, None
    if getattr(args, "prompt_scale", False):   # the rewrite of the graph that is quantised (or fine-tuned)
        init = getattr(args, "qat_init", None) if getattr(args, "qat_steps", 0) > 0 else None
        source, scaled = _prompt_scaled(str(Path(init) / "student.qat.onnx") if init else fp32, frames, extra, k,
                                        args, out)
    collector = collect_ranges(source, frames, threads=args.threads, progress=True, extra_inputs=extra)
    ranges = collector.ranges(args.method, percentile=getattr(args, "student_percentile", args.percentile))
    if scaled is not None and args.method == "percentile":
        # every prompt's merge is divided by its own p-th percentile, so a p-th percentile over all prompts
        # would clip each prompt's top (100 - p) %: the scaled path takes the routes' 99.99 instead
        import onnx

        from tir.calibration import prompt_scale

        wide = collector.ranges(args.method, percentile=max(99.99, args.percentile))
        ranges.update({t: wide[t] for t in prompt_scale.scaled_tensors(onnx.load(source)) if t in wide})
    t_collect = time.perf_counter() - t0

    eye = np.eye(k, dtype=np.float32)
    qat = None
    if getattr(args, "qat_steps", 0) > 0:
        source, ranges, qat = _qat_source(fp32, ranges, frames, eye, args, out,
                                          start=source if scaled is not None else None)
    fp32_runners = _prompted_runners(fp32, args.threads, eye)
    held_sets, held_names, cases, refs = [], {}, [], []
    for j, prompt in enumerate(prompts):
        held = calibration_set(args.source, args.holdout, size, seed=args.seed, holdout=True,
                               data_root=args.data, tasks=_prompt_tasks(prompt))
        held_sets.append(held)
        held_names[prompt] = held.name
        if args.sensitivity > 0:
            cases.append(_student_case(held, args.sensitivity, eye[j], args.threads))
        refs.append(gate.held_out_outputs(fp32_runners[j], held))

    tries = _tail_tries(args)
    for tail in tries:
        files, trt_report, _ = _write_int8(source, "student", ranges, args, out, float_inputs=(PROMPT_INPUT,), tail=tail)
        runners = {flavour: _prompted_runners(files[name], args.threads, eye)
                   for flavour, name in GATED_FILES}
        verdicts = [gate.gate_route(f"student/{prompt}", flavour, None, runners[flavour][j], held_sets[j],
                                    args.max_loss_db, args.min_fidelity_db, fp32_outputs=refs[j])
                    for j, prompt in enumerate(prompts) for flavour, _ in GATED_FILES]
        if all(v.passed for v in verdicts):
            break
        if tail is not tries[-1]:
            log.info("student: refused without the image tail float; again with it (--float-tail auto)")

    diagnosis = (_sensitivity(source, "student", ranges, cases, args, out, float_inputs=(PROMPT_INPUT,), tail=tail)
                 if cases else None)
    return {
        "route": "student", "fp32_onnx": fp32, "student_sha256": (bundle.student or {}).get("sha256"), "qat": qat, "prompt_scale": scaled, "sensitivity": diagnosis, "float_tail": tail,
        "film": getattr(args, "film", "float"),
        "percentile": getattr(args, "student_percentile", args.percentile) if args.method == "percentile" else None,
        "prompts": prompts, "files": files, "file_sha256": _file_digests(files),
        "calibration_frames": len(frames), "holdout_frames": args.holdout, "calibration_source": frames.name,
        "holdout_source": held_names, "collect_s": round(t_collect, 1), "tensors": len(ranges),
        "trt_qdq": _qdq_summary(trt_report), "gate": [v.to_dict() for v in verdicts],
        "latency_ms": _int8_latency(fp32, files, size, args, prompt=np.full(k, 1.0 / k, np.float32)),
    }, verdicts


def calibrate_route(bundle, route: str, args, size, out: Path) -> dict:
    """Calibrate one route: collect activation ranges on the calibration frames, write the INT8
    models, cache and ranges into ``out`` (see the module docstring), gate them against fp32 on
    held-out frames (PSNR, dB), again with the image tail float if refused (``--float-tail
    auto``) and, unless ``--no-fp16-search``, look for FP16 layers that make a failing
    TensorRT flavour pass.

    Args:
        bundle: the loaded bundle.
        route: one of its routes.
        args: the parsed ``tir calibrate`` options.
        size: ``(w, h)`` of the calibration frames in px.
        out: the output folder (exists).

    Returns:
        ``(report, verdicts)``: the route's report dict (files, frame counts, ``collect_s`` in
        seconds, gate verdicts, ``latency_ms``) and its gate verdicts (CPU and TensorRT flavours).

    Raises:
        CalibrationDataError: the calibration or held-out frames cannot be had.
    """
    from tir.calibration import gate
    from tir.calibration.data import calibration_set
    from tir.calibration.qdq import collect_ranges, float_regions, qdq_targets
    from tir.engines.degrade import TASKS

    fp32 = str(bundle.route_path(route))
    tasks = [route] if route in TASKS else None
    frames = calibration_set(args.source, args.frames, size, seed=args.seed, data_root=args.data, tasks=tasks)
    held = calibration_set(args.source, args.holdout, size, seed=args.seed, holdout=True,
                           data_root=args.data, tasks=tasks)
    log.info("%s: calibrating on %s (%d frames), gate on %s (%d frames)", route, frames.name, len(frames),
             held.name, len(held))
    t0 = time.perf_counter()
    collector = collect_ranges(fp32, frames, threads=args.threads, progress=True)
    ranges = collector.ranges(args.method, percentile=args.percentile)
    t_collect = time.perf_counter() - t0

    ref = gate.held_out_outputs(_runner(fp32, args.threads), held)
    tries = _tail_tries(args)
    for tail in tries:
        files, trt_report, qdq_options = _write_int8(fp32, route, ranges, args, out, tail=tail)
        verdicts = [gate.gate_route(route, flavour, None, _runner(files[name], args.threads), held,
                                    args.max_loss_db, args.min_fidelity_db, fp32_outputs=ref)
                    for flavour, name in GATED_FILES]
        if all(v.passed for v in verdicts):
            break
        if tail is not tries[-1]:
            log.info("%s: refused without the image tail float; again with it (--float-tail auto)", route)
    for v in verdicts:
        flavour = v.flavour
        if flavour == "trt-qdq" and not v.passed and not args.no_fp16_search:
            import onnx

            model = onnx.load(fp32)
            nodes = list(model.graph.node)
            candidates = list(dict.fromkeys(
                nodes[k].name for uses in qdq_targets(model, qdq_options["global_skip"], float_tail=qdq_options["float_tail"],
                                                      regions=float_regions(model, qdq_options["tail_blocks"])).values()
                for k, _ in uses
                if qdq_options["quantize_adds"] or nodes[k].op_type != "Add"))
            work = out / f".{route}-fp16-search"
            work.mkdir(exist_ok=True)
            layers, numbers, passed, mixed = gate.find_fp16_layers(
                fp32, ranges, held, work, candidates, args.max_loss_db, args.min_fidelity_db,
                fp32_outputs=ref, progress=True, qdq_options=qdq_options)
            v.fp16_layers, v.mixed_passed = layers, passed
            v.mixed_loss_db = numbers.get("loss_db", None) if numbers else None
            if passed:
                files["int8-trt-mixed.onnx"] = str(out / f"{route}.int8-trt-mixed.onnx")
                os.replace(mixed, files["int8-trt-mixed.onnx"])

    diagnosis = (_sensitivity(fp32, route, ranges, [_route_case(held, args.sensitivity, args.threads)], args, out,
                              tail=tail) if args.sensitivity > 0 else None)
    return {
        "route": route, "fp32_onnx": fp32, "sensitivity": diagnosis, "float_tail": tail, "files": files,
        "file_sha256": _file_digests(files), "calibration_frames": len(frames),
        "holdout_frames": len(held), "calibration_source": frames.name, "holdout_source": held.name,
        "collect_s": round(t_collect, 1), "tensors": len(ranges), "trt_qdq": _qdq_summary(trt_report),
        "gate": [v.to_dict() for v in verdicts], "latency_ms": _int8_latency(fp32, files, size, args),
    }, verdicts


def latency_table(results) -> str:
    """The ONNX Runtime CPU latency table: per route the p50 in ms of fp32, U8S8 and S8S8 (TensorRT
    Q/DQ on ORT); routes without latencies are left out.
    """
    head = f"{'route':<12} {'fp32 p50':>9} {'u8s8 p50':>9} {'s8s8 p50':>9}  (ms, ONNX Runtime CPU)"
    lines = [head, "-" * len(head)]
    for r in results:
        lat = r["latency_ms"]
        if not lat:
            continue
        cells = [lat.get(k, {}).get("p50") for k in ("fp32", "int8-cpu-u8s8", "int8-trt-s8s8-on-ort")]
        lines.append(f"{r['route']:<12} " + " ".join(f"{c:9.1f}" if c is not None else f"{'':>9}" for c in cells))
    return "\n".join(lines)


def main(args) -> int:
    """Run ``tir calibrate`` with the parsed ``args``: every route (or ``--routes``), then
    ``calibration.json`` and the gate and latency tables in ``--out``.

    Returns:
        0 done (routes refused by the gate are listed, not an error).

    Raises:
        UsageError, ModelError, BundleError, CalibrationDataError: (exit 2) the bundle,
            ``--size``, ``--routes``, ``--student`` (a bundle without a student), the
            calibration data or ``--out`` (not writable, or holding another bundle's or size's
            ``calibration.json``: an earlier report of the same bundle and size is merged,
            :func:`keep_earlier`) were refused.
        OutputFailed: (exit 3) a route's files could not be written (its partial files removed).
        ``tir`` (tools/cli.py) prints each as one line ``tir calibrate: error: ...`` on stderr
        (they were printed on stdout).
    """
    from tir.engines.bundle import load_bundle

    from .cli import frame_size

    with refusing(ValueError):
        bundle = load_bundle(args.bundle)
        size = frame_size(args.size)  # UsageError (a ValueError): sides 1..MAX_SIDE px
    multiple = bundle.multiple
    if min(size) < 1 or size[0] % multiple or size[1] % multiple:  # ONNX Runtime failed inside a route
        fit = "x".join(str(max(multiple, -(-v // multiple) * multiple)) for v in size)
        raise UsageError(f"--size {args.size}: the routes of bundle {bundle.name!r} take sizes that are multiples "
                         f"of {multiple} px (manifest 'multiple'); use e.g. --size {fit}")
    routes = bundle.tasks if not args.routes else [r.strip() for r in args.routes.split(",") if r.strip()]
    student = bool(getattr(args, "student", False)) or "student" in routes
    routes = [r for r in routes if r != "student"]
    unknown = [r for r in routes if r not in bundle.tasks]
    if unknown:
        raise UsageError(f"bundle {bundle.name!r} has no route(s) {unknown}; routes: {', '.join(bundle.tasks)}")
    if getattr(args, "prompt_scale", False) and not student:
        raise UsageError("--prompt-scale rewrites the distilled student's output path; add --student (or --routes student)")
    if getattr(args, "film", "float") != "float" and not student:
        raise UsageError("--film quantises the distilled student's FiLM blocks; add --student (or --routes student)")
    if getattr(args, "qat_steps", 0) and not student:
        raise UsageError("--qat-steps fine-tunes the distilled student; add --student (or --routes student)")
    if getattr(args, "qat_minutes", None) is not None and not getattr(args, "qat_steps", 0):
        raise UsageError("--qat-minutes bounds --qat-steps; give --qat-steps N (N >= 1) with it")
    if getattr(args, "qat_init", None) is not None:
        if not getattr(args, "qat_steps", 0):
            raise UsageError("--qat-init goes on with an earlier QAT; give --qat-steps N (N >= 1) with it")
        missing = [f for f in ("student.qat.onnx", "student.ranges.json") if not (Path(args.qat_init) / f).is_file()]
        if missing:
            raise UsageError(f"--qat-init {args.qat_init}: no {' or '.join(missing)} there (an earlier "
                             "`tir calibrate --student --qat-steps N --out DIR` writes both)")
    if student and bundle.student is None:
        raise ModelError(f"bundle {bundle.name!r} ({bundle.path}) has no student (manifest key 'student'); "
                         "add one with `tir distill`, or calibrate its routes without --student")
    from .cli import folder_problem

    out = Path(args.out)
    problem = folder_problem(out)  # was a traceback (or after every route, none of it written)
    if problem:
        raise UsageError(f"--out {args.out}: {problem}; give a writable folder")
    with refusing(ValueError):
        earlier = earlier_report(out, bundle, size)
    from tir.calibration.data import check_source

    check_source(args.source)   # a missing folder: refused before --out is made
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _calibrate_into(args, bundle, routes, student, size, out, earlier)
    except BaseException:
        if made and not any(out.iterdir()):   # a run refused before it wrote anything leaves no empty --out
            out.rmdir()
        raise


def _calibrate_into(args, bundle, routes, student, size, out, earlier) -> int:
    """:func:`main` once the arguments are checked and ``out`` exists: calibrate, write the
    report, print the tables. Raises as :func:`main`."""
    from tir.calibration import gate

    results, verdicts = [], []
    stem = None
    try:
        for route in routes:
            stem = route
            result, v = calibrate_route(bundle, route, args, size, out)
            results.append(result)
            verdicts.extend(v)
        if student:
            stem = "student"
            result, v = calibrate_student(bundle, args, size, out)
            results.append(result)
            verdicts.extend(v)
    except OSError as exc:  # a full disk: was a traceback and a 0-byte <route>.ranges.json left behind
        _remove_partial(out, stem)
        raise OutputFailed(f"cannot write {stem}'s files in --out {out}: {exc.strerror or exc}; its partial files "
                           f"were removed (routes finished before it are kept: "
                           f"{', '.join(r['route'] for r in results) or 'none'}); free space or choose another --out") \
            from exc
    report = {
        "bundle": str(bundle.path), "bundle_name": bundle.name, "source": args.source, "frames": args.frames,
        "method": args.method, "reduce_range": bool(args.reduce_range), "int8_cpu": _int8_cpu(),
        "float_tail": getattr(args, "float_tail", "auto"), "tail_blocks": int(getattr(args, "tail_blocks", 1)), "size": f"{size[0]}x{size[1]}",
        "threads": args.threads,
        "max_loss_db": args.max_loss_db, "trt_cache_version": args.trt_version,
        "command": "tir calibrate " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if v not in (None, False) and k not in ("func",)),
        "routes": {r["route"]: r for r in results if r["route"] != "student"},
    }
    if student:
        report["student"] = results[-1]
    kept = keep_earlier(report, earlier)
    from .cli import write_json

    write_json(out / "calibration.json", report, indent=2, option="--out")  # OutputFailed (exit 3) on a full disk
    print(gate.format_table(verdicts))
    if any(r["latency_ms"] for r in results):
        print()
        print(latency_table(results))
    refused = [f"{v.route}/{v.flavour}" for v in verdicts if not v.passed]
    if refused:
        print(f"\nREFUSED INT8 for: {', '.join(refused)} (see reasons above; such routes stay fp32/fp16 "
              "unless the listed FP16 layers make them pass)")
    if kept:
        print(f"\nkept the earlier verdicts of {', '.join(kept)} from {out / 'calibration.json'} (not calibrated in "
              "this run; the report's kept_from_earlier names their command)")
    print(f"\nwrote {out / 'calibration.json'}")
    return 0


def _int8_cpu() -> dict:
    """The calibrating CPU for the report: its model name and
    :func:`tir.edge.machine.int8_cpu_features` (arch, vnni, flags, saturating, reduce_range: what
    its U8S8 kernel needs). The CPU INT8 models carry the same in their ONNX metadata
    (:func:`tir.calibration.qdq.stamp_int8_cpu`)."""
    from tir.edge.machine import cpu_model, int8_cpu_features

    return {"model": cpu_model(), **int8_cpu_features().to_dict()}


def earlier_report(out: Path, bundle, size) -> dict:
    """The ``calibration.json`` an earlier ``tir calibrate`` left in ``out`` (``{}`` when none),
    so that calibrating one route (``--routes noise``) into the same ``--out`` as the others keeps
    their verdicts, which ``tir build --precision int8`` reads: before, the report was replaced and
    the other routes' INT8 models stayed in the folder without a verdict.

    Args:
        out: the ``--out`` folder (may not exist yet).
        bundle: the loaded :class:`~tir.engines.bundle.Bundle` being calibrated.
        size: (w, h) px of this run.

    Returns:
        the earlier report, or ``{}``.

    Raises:
        ValueError: the earlier report is not readable JSON, or is of another bundle or size (its
            verdicts would not describe this run's models): one line naming it and what to do.
    """
    path = out / "calibration.json"
    if not path.is_file():
        return {}
    try:
        report = jsontext.loads(path.read_text(encoding="utf-8"))
        routes = report["routes"]
        if not isinstance(routes, dict):
            raise TypeError("routes is not an object")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--out {out}: its calibration.json is not a tir calibrate report ({exc}); choose another "
                         "--out or move that file away") from None
    this = {"bundle": str(bundle.path), "size": f"{size[0]}x{size[1]}"}
    other = {k: v for k, v in this.items() if report.get(k) != v}
    if other:
        what = ", ".join(f"{k} {report.get(k)} (this run: {v})" for k, v in other.items())
        raise ValueError(f"--out {out} holds the calibration of another run: {what}; its verdicts would not describe "
                         "this run's models: choose another --out")
    return report


def keep_earlier(report: dict, earlier: dict) -> list:
    """Carry into ``report`` the routes (and the student) of ``earlier`` (:func:`earlier_report`)
    that this run did not calibrate; each is named in ``report["kept_from_earlier"]`` with the
    command that made it. Returns the names kept."""
    kept = {}
    for route, entry in (earlier.get("routes") or {}).items():
        if route not in report["routes"]:
            report["routes"][route] = entry
            kept[route] = (earlier.get("kept_from_earlier") or {}).get(route, earlier.get("command"))
    if "student" in earlier and "student" not in report:
        report["student"] = earlier["student"]
        kept["student"] = (earlier.get("kept_from_earlier") or {}).get("student", earlier.get("command"))
    if kept:
        report["kept_from_earlier"] = kept
    return list(kept)
