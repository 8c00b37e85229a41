"""TensorRT engine builder: ONNX → serialized plan in FP32, FP16 or INT8, on TRT 8.5 and 10.x.

API facts (tensorrt_int8.md §1.1, §3, checked in NVIDIA/TensorRT release/8.5 and release/10.3):
- ``trt.init_libnvinfer_plugins(logger, "")`` always (TRT 8.5 imports InstanceNormalization —
  our GroupNorm decomposition — as the ``InstanceNormalization_TRT`` plugin);
- network flags: TRT 8.5 needs ``1 << EXPLICIT_BATCH``; in 10.x it is deprecated/ignored, pass 0;
- ``config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, bytes)`` (``max_workspace_size`` is
  gone in 10); ``builder.build_serialized_network`` (``build_engine`` is gone in 10);
- timing cache: ``config.create_timing_cache(bytes)``, ``config.set_timing_cache(tc, False)``,
  after the build ``config.get_timing_cache().serialize()`` — reused across builds (ORT PR #14767
  reports yolov4 builds 108.6 s → 9.4 s with one, pipelines.md (b));
- one optimisation profile covering the camera resolution(s);
- INT8 explicit (Q/DQ ONNX from ``tir calibrate``): INT8 + FP16 flags so layers kept out of INT8
  run FP16 (TRT 8.x needs the INT8 flag for any quantized op; on 10.x weak typing with both flags
  is kept, strong typing would need an FP16 ONNX);
- INT8 implicit (TRT 8.5, DLA): ``config.int8_calibrator`` = our EntropyCalibrator reading the
  cache, plus ``config.set_calibration_profile`` with dynamic shapes. Deprecated since 10.1 and
  removed in 11 (``BuilderFlag.INT8``, ``int8_calibrator`` are gone there) — refused on TRT ≥ 11.

Everything imports tensorrt lazily; :func:`require_tensorrt` says what to install.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from ..edge.errors import TirError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("qdq", "calibrator")
DEFAULT_WORKSPACE = 1 << 30  # 1 GiB; Orin Nano has 8 GB shared with the CPU

INSTALL_HINT = (
    "TensorRT's Python bindings come with JetPack on a Jetson (JetPack 5.x: TensorRT 8.5, "
    "JetPack 6.x: TensorRT 10.x; `sudo apt install python3-libnvinfer` if missing; in a venv create it "
    "with --system-site-packages) and from `pip install tensorrt` on x86 with an NVIDIA GPU. The CUDA "
    "stream pipeline also needs pycuda (`pip install pycuda` with /usr/local/cuda/bin on PATH); see "
    "docs/jetson.md. Without them use `tir run --backend onnxruntime`."
)


class BuildError(RuntimeError, TirError):
    """The builder or parser failed; the message has the parser errors / what to change."""


def require_tensorrt():
    """The ``tensorrt`` module.

    Raises:
        BuildError: tensorrt is not importable (the message says how to install it).
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BuildError(f"tensorrt is not importable here ({exc}). {INSTALL_HINT}") from None
    return trt


def trt_major(trt) -> int:
    """The major version of the imported TensorRT module ``trt`` (8, 10, ...)."""
    return int(str(trt.__version__).split(".")[0])


@dataclass
class BuildOptions:
    """How to build one plan: ``precision`` (fp32 | fp16 | int8), ``int8_mode`` (qdq: explicit Q/DQ
    ONNX; calibrator: implicit, TRT 8.5 / DLA), the optimisation ``profile`` ((name, min, opt,
    max) (N, C, H, W) shapes), ``workspace_bytes`` (bytes, default 1 GiB), a ``timing_cache`` file,
    the ``calibrator``, a ``dla_core``, ``fp16_layers`` pinned to FP16 by the accuracy gate, the
    builder ``optimization_level`` (TRT >= 8.6) and the resulting ``flags``.
    """
    precision: str = "fp16"  # fp32 | fp16 | int8
    int8_mode: str = "qdq"  # qdq (explicit) | calibrator (implicit, TRT 8.5 / DLA)
    profile: Tuple = ()  # ((name, min, opt, max), ...) from engines.cache.profile_for_sizes
    workspace_bytes: int = DEFAULT_WORKSPACE
    timing_cache: Optional[str] = None  # file read before and written after the build
    calibrator: object = None  # for int8_mode == "calibrator"
    dla_core: Optional[int] = None
    fp16_layers: Sequence[str] = ()  # layer names pinned to FP16 (from the accuracy gate)
    optimization_level: Optional[int] = None  # TRT ≥ 8.6 builder_optimization_level
    flags: List[str] = field(default_factory=list)

    def check(self) -> None:
        """Refuse inconsistent options before anything is built.

        Raises:
            BuildError: unknown precision or INT8 mode, implicit INT8 without a calibrator, or DLA
                at FP32 (DLA runs FP16/INT8 only, tensorrt_int8.md §5).
        """
        if self.precision not in PRECISIONS:
            raise BuildError(f"precision {self.precision!r}: choose one of {PRECISIONS}")
        if self.int8_mode not in INT8_MODES:
            raise BuildError(f"int8 mode {self.int8_mode!r}: choose one of {INT8_MODES}")
        if self.precision == "int8" and self.int8_mode == "calibrator" and self.calibrator is None:
            raise BuildError("implicit INT8 needs a calibrator (run `tir calibrate` for the cache)")
        if self.dla_core is not None and self.precision == "fp32":
            raise BuildError("DLA runs FP16/INT8 only (tensorrt_int8.md §5)")


def _network_flags(trt) -> int:
    if trt_major(trt) < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def parse_onnx(trt, builder, logger, onnx_path: str):
    """Parse ``onnx_path`` into a new network (explicit batch on TRT < 10); returns (network, parser).

    Raises:
        BuildError: the parser fails; the message lists the parser's errors.
    """
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external data next to the model
    ok = parser.parse_from_file(str(onnx_path))
    if not ok:
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path}:\n  " + "\n  ".join(errors)
                         + "\nRun `tir export --bundle DIR` for the operator audit.")
    return network, parser


def _apply_precision(trt, config, network, opts: BuildOptions) -> None:
    if opts.precision in ("fp16", "int8") and hasattr(trt.BuilderFlag, "FP16"):  # removed in TRT 11
        config.set_flag(trt.BuilderFlag.FP16)
        opts.flags.append("fp16")
    if opts.precision == "int8":
        if trt_major(trt) >= 11:
            if opts.int8_mode == "calibrator":
                raise BuildError("TensorRT 11 removed implicit INT8 calibration; use the Q/DQ ONNX (--int8-mode qdq)")
        else:
            config.set_flag(trt.BuilderFlag.INT8)
        opts.flags.append(f"int8-{opts.int8_mode}")
        if opts.int8_mode == "calibrator":
            config.int8_calibrator = opts.calibrator
    if opts.fp16_layers:
        wanted = set(opts.fp16_layers)
        found = set()
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in wanted or any(layer.name.startswith(w) for w in wanted):
                layer.precision = trt.DataType.HALF
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.DataType.HALF)
                found.add(layer.name)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        opts.flags.append("fp16-layers:" + ",".join(sorted(wanted)))
        if not found:
            raise BuildError(f"none of the FP16 layers {sorted(wanted)} exist in the network")


def _apply_profile(trt, builder, config, network, opts: BuildOptions) -> None:
    dynamic = any(-1 in tuple(network.get_input(i).shape) for i in range(network.num_inputs))
    if not dynamic:
        return
    if not opts.profile:
        names = [network.get_input(i).name for i in range(network.num_inputs)]
        raise BuildError(f"inputs {names} have dynamic shapes: give the camera size(s) (--size WxH)")
    profile = builder.create_optimization_profile()
    for name, lo, opt, hi in opts.profile:
        profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
    config.add_optimization_profile(profile)
    if opts.precision == "int8" and opts.int8_mode == "calibrator":
        config.set_calibration_profile(profile)  # present in 8.5 and 10.x, removed in 11


def _timing_cache(config, path: Optional[str]):
    data = b""
    if path and os.path.isfile(path):
        data = Path(path).read_bytes()
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)  # ignore_mismatch=False: a foreign cache is rejected
    return bool(data)


def build_serialized(onnx_path, opts: BuildOptions, progress: Optional[Callable[[str], None]] = None) -> bytes:
    """Build and return the serialized plan; writes the timing cache back if one was given.

    ``progress`` receives one-line messages (default: logged at INFO).

    Raises:
        BuildError: bad options, TensorRT missing, a parse failure, dynamic inputs without a
            profile, FP16 layers that do not exist, implicit INT8 on TRT >= 11, or a failed build.
    """
    opts.check()
    trt = require_tensorrt()
    say = progress or (lambda msg: log.info("%s", msg))
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, str(onnx_path))
    say(f"parsed {onnx_path}: {network.num_layers} layers, TensorRT {trt.__version__}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_bytes))
    if opts.optimization_level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(opts.optimization_level)
    reused = _timing_cache(config, opts.timing_cache)
    _apply_precision(trt, config, network, opts)
    _apply_profile(trt, builder, config, network, opts)
    if opts.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        opts.flags.append(f"dla{opts.dla_core}+gpu-fallback")
    say(f"building {opts.precision}{'/' + opts.int8_mode if opts.precision == 'int8' else ''} "
        f"(timing cache {'reused' if reused else 'new'}; this can take minutes on a Jetson)")
    t0 = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError(f"TensorRT failed to build {onnx_path} ({opts.precision}); rerun with -v for the log")
    say(f"built in {time.perf_counter() - t0:.1f} s, {plan.nbytes / 1e6:.1f} MB")
    if opts.timing_cache:
        Path(opts.timing_cache).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(plan)
