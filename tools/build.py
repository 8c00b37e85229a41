"""``tir build``: build TensorRT plans for a bundle's routes (and router) on this machine.

    tir build --bundle DIR --precision fp16|int8|fp32 --size 640x512 [--size 320x256 ...]
    tir build --bundle DIR --precision fp16,int8 --size 640x512    # several precisions, one run

INT8 uses the outputs of ``tir calibrate`` (``--calib DIR``, default ``<bundle>/int8``): the Q/DQ
ONNX (explicit quantization, default; TRT ≥ 8.5) or, with ``--int8-mode calibrator`` (TRT 8.5,
DLA), the fp32 ONNX plus the TensorRT calibration cache. A route whose INT8 failed the accuracy
gate in ``calibration.json`` is refused, unless the gate found FP16 layers that make it pass —
then the mixed Q/DQ model is built and the layers are printed. Never a silent fallback.

Plans go to the engine cache (:mod:`tir.engines.cache`, ``~/.cache/tir-edge/engines``), keyed on
model, TensorRT, GPU, L4T, precision, profile and calibration; an existing matching plan is reused.
A timing cache in the same folder is shared by all builds on this machine.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from tir.edge import jsontext
from tir.edge.machine import fast_int8  # noqa: F401  (tir.tools.build.fast_int8, as before)

from .cli import PRECISIONS, add_bundle_argument, frame_size, precision_list  # noqa: F401

log = logging.getLogger("tir.build")
EXIT_NO_TENSORRT = 3


def add_arguments(parser) -> None:
    """Add ``tir build``'s options to ``parser`` (an argparse.ArgumentParser): ``--bundle``,
    ``--precision``, ``--size WxH`` (px, repeatable), ``--route``, ``--calib``, ``--int8-mode``,
    ``--workspace-mb`` (MiB), ``--dla``, ``--cache-dir``, ``--force``, ``--allow-slow-int8``.
    """
    add_bundle_argument(parser, required=True)
    parser.add_argument("--precision", default=["fp16"], type=precision_list, metavar="P[,P...]",
                        help="fp32, fp16 or int8, or several comma-separated (fp16,int8); default fp16")
    parser.add_argument("--size", action="append", default=None,
                        help="camera frame size WxH; repeat for several (default 640x512)")
    parser.add_argument("--route", action="append", default=None, help="only these routes (repeatable)")
    parser.add_argument("--calib", default=None, help="tir calibrate output folder (default <bundle>/int8)")
    parser.add_argument("--int8-mode", default="qdq", choices=("qdq", "calibrator"),
                        help="qdq: explicit Q/DQ ONNX (default); calibrator: implicit, TRT 8.5 / DLA")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace limit (1024 MB)")
    parser.add_argument("--dla", type=int, default=None, help="DLA core (FP16/INT8, GPU fallback)")
    parser.add_argument("--cache-dir", default=None, help="engine cache folder (default $TIR_ENGINE_CACHE or "
                        "~/.cache/tir-edge/engines)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching plan exists")
    parser.add_argument("--allow-slow-int8", action="store_true",
                        help="build INT8 even on GPUs without fast INT8 (SM < 7: Jetson Nano, TX2)")


def _missing_tensorrt_message(exc: Exception) -> str:
    from tir.engines.trt_build import INSTALL_HINT

    return (f"tir build needs TensorRT, which is not importable here ({exc}).\n{INSTALL_HINT}\n"
            "What to install:\n"
            "  Jetson, JetPack 5.x: TensorRT 8.5 ships with JetPack (python3-libnvinfer); pip install pycuda\n"
            "  Jetson, JetPack 6.x: TensorRT 10.x ships with JetPack; pip install pycuda\n"
            "  x86 + NVIDIA GPU:    pip install tensorrt pycuda\n"
            "Check with `tir doctor`.")


def _gate_for(report: dict, route: str) -> dict:
    for verdict in report.get("routes", {}).get(route, {}).get("gate", []):
        if verdict.get("flavour") == "trt-qdq":
            return verdict
    return {}


def _int8_source(route: str, calib: Path, report: dict, mode: str):
    """(onnx path, calibration file, fp16 layers) for an INT8 build, or raise ValueError why not."""
    verdict = _gate_for(report, route)
    if not verdict:
        raise ValueError(f"route {route}: no TensorRT gate verdict in {calib / 'calibration.json'}; "
                         f"run `tir calibrate --bundle ... --out {calib}` first")
    if mode == "calibrator":
        cache = calib / f"{route}.calib.cache"
        if not cache.is_file():
            raise ValueError(f"route {route}: no {cache}")
        if not verdict.get("passed"):
            raise ValueError(f"route {route}: INT8 refused by the accuracy gate ({verdict.get('reason')})")
        return None, cache, []
    if verdict.get("passed"):
        return calib / f"{route}.int8-trt.onnx", calib / f"{route}.int8-trt.onnx", []
    mixed = calib / f"{route}.int8-trt-mixed.onnx"
    if verdict.get("mixed_passed") and mixed.is_file():
        return mixed, mixed, list(verdict.get("fp16_layers") or [])
    raise ValueError(f"route {route}: INT8 refused by the accuracy gate ({verdict.get('reason')}); no FP16-layer "
                     "mix passes either. Build it with --precision fp16.")


def main(args) -> int:
    """Run ``tir build`` with the parsed ``args``: every precision in turn, each building (or
    finding up to date) the plans of the bundle's routes and router in the engine cache.

    Returns:
        0 all built or up to date; 1 a target failed or was refused by the INT8 gate; 2 a
        precision was refused before building (slow INT8, no calibration report); 3
        (EXIT_NO_TENSORRT) the tensorrt package is missing.

    Raises:
        BundleError: the bundle does not load.
        UsageError: a ``--size`` is not WIDTHxHEIGHT with sides 1..8192 px (checked first).
        EngineCacheError: the engine cache or this platform cannot be used.
    """
    # UsageError (size): a TirError printed once by tir.tools.cli (exit 2), before the machine is asked
    sizes = [frame_size(s) for s in (args.size or ["640x512"])]
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        print(_missing_tensorrt_message(exc))
        return EXIT_NO_TENSORRT
    from tir.engines.bundle import load_bundle
    from tir.engines.cache import EngineCache, current_platform

    # BundleError, EngineCacheError: TirErrors, printed once by tir.tools.cli (exit 2)
    bundle = load_bundle(args.bundle)
    platform = current_platform()
    cache = EngineCache(args.cache_dir)
    rc = 0
    for precision in args.precision:  # one precision failing does not stop the next
        if len(args.precision) > 1:
            print(f"== {precision}", flush=True)
        rc = max(rc, _build_precision(args, precision, bundle, sizes, platform, cache))
    return rc


def _build_precision(args, precision_arg: str, bundle, sizes, platform, cache) -> int:
    """Build (or find up to date) every target at one precision.

    Returns 0 (all built or up to date), 1 (some target failed or was refused by the gate) or
    2 (this precision was refused before any build: slow INT8, no calibration report; one line
    ``tir build: error: ...`` on stderr, as ``tir`` prints a refusal, while the other precisions
    still build)."""
    from tir.calibration.data import calibration_set
    from tir.engines.cache import EngineCacheError, EngineKey, build_command, profile_for_sizes, sha256_file
    from tir.engines.trt_build import BuildError, BuildOptions, build_serialized

    if precision_arg == "int8" and not fast_int8(platform["compute_capability"]) and not args.allow_slow_int8:
        print(f"tir build: error: REFUSED INT8 on {platform['gpu_name']} (SM {platform['compute_capability']}): this GPU "
              "has no fast INT8 and runs it slower than FP16. Use --precision fp16, or --allow-slow-int8 to build "
              "anyway.", file=sys.stderr, flush=True)   # the other precisions still build
        return 2
    calib = Path(args.calib) if args.calib else bundle.path / "int8"
    report = {}
    if precision_arg == "int8":
        try:
            report = jsontext.loads((calib / "calibration.json").read_text(encoding="utf-8"))
        except OSError:
            print(f"tir build: error: no {calib / 'calibration.json'}; run `tir calibrate --bundle {bundle.path} "
                  f"--out {calib}` first", file=sys.stderr, flush=True)
            return 2
        except ValueError as exc:   # a damaged report (malformed JSON, not UTF-8) was a traceback
            print(f"tir build: error: {calib / 'calibration.json'} is not a tir calibrate report ({exc}); run "
                  f"`tir calibrate --bundle {bundle.path} --out {calib}` again", file=sys.stderr, flush=True)
            return 2
    routes = args.route or bundle.tasks
    targets = [(r, bundle.route_path(r)) for r in routes]
    if bundle.router_path is not None and not args.route:
        targets.append(("router", bundle.router_path))
    failures = 0
    for name, fp32 in targets:
        onnx_path, calib_file, fp16_layers, calibrator = fp32, None, [], None
        precision = precision_arg
        if precision == "int8":
            if name == "router":
                precision = "fp16"  # the router is tiny; it is not calibrated
            else:
                try:
                    q, calib_file, fp16_layers = _int8_source(name, calib, report, args.int8_mode)
                except ValueError as exc:
                    print(f"REFUSED {exc}")
                    failures += 1
                    continue
                onnx_path = q or fp32
                if args.int8_mode == "calibrator":
                    from tir.calibration.calibrator import EntropyCalibrator

                    frames = calibration_set(report.get("source", "synthetic"), 8, sizes[0])
                    calibrator = EntropyCalibrator(frames, calib_file)
        mode = f"int8-{args.int8_mode}" if precision == "int8" else precision
        multiple = bundle.multiple
        key = EngineKey(onnx_sha256=sha256_file(onnx_path), precision=mode,
                        profile=profile_for_sizes(sizes, multiple=multiple),
                        calib_sha256=sha256_file(calib_file) if calib_file else None,
                        flags=tuple(sorted(fp16_layers)) + ((f"dla{args.dla}",) if args.dla is not None else ()),
                        **platform)
        if not args.force:
            try:
                cached = cache.lookup(key, name)
            except EngineCacheError as exc:  # altered plan or bad sidecar: this build replaces it
                print(f"{name}: {exc}; building a new one")
                cached = None
            if cached is not None:
                print(f"{name}: up to date {cache.plan_path(key, name)}")
                continue
        opts = BuildOptions(precision=precision, int8_mode=args.int8_mode, profile=key.profile,
                            workspace_bytes=args.workspace_mb << 20, timing_cache=str(cache.root / "timing.cache"),
                            calibrator=calibrator, dla_core=args.dla, fp16_layers=fp16_layers)
        try:
            plan = build_serialized(onnx_path, opts, progress=lambda m, n=name: print(f"{n}: {m}", flush=True))
        except BuildError as exc:
            print(f"{name}: FAILED {exc}")
            failures += 1
            continue
        path = cache.store(key, plan, name, {
            "route": name, "bundle": str(bundle.path), "onnx": str(onnx_path), "multiple": multiple,
            "source_onnx_sha256": sha256_file(fp32),
            "fp16_layers": fp16_layers, "flags": opts.flags,
            "rebuild_command": build_command(bundle.path, precision_arg, sizes, route=name)})
        print(f"{name}: wrote {path}" + (f" (FP16 layers: {', '.join(fp16_layers)})" if fp16_layers else ""))
    return 1 if failures else 0
