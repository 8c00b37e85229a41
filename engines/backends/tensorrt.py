"""TensorRT backend: a serialized plan behind the :class:`~tir.engines.engine.Engine` interface.

Name-based v3 API only, present in TensorRT 8.5 and 10.x (tensorrt_int8.md §0.2, §3):
``runtime.deserialize_cuda_engine`` → ``num_io_tensors`` / ``get_tensor_name`` /
``get_tensor_mode`` / ``get_tensor_dtype`` → per call ``set_input_shape`` (dynamic profile),
``set_tensor_address`` and ``execute_async_v3(stream)``. Buffers are preallocated page-locked
host + device memory (pycuda), reallocated only when the frame size changes; each call runs
H2D → execute → D2H on a non-default stream (the default stream "may lead to performance issues
due to additional cudaDeviceSynchronize() calls") and times each part with CUDA events
(``last_times`` / ``stats()``, ms).

A plan whose JSON sidecar (:mod:`tir.engines.cache`) names another TensorRT, GPU, compute
capability or L4T release is refused with the ``tir build`` command that rebuilds it.
TensorRT and pycuda are imported lazily: without them this raises a clear EngineError.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..engine import DEFAULT_MULTIPLE, Engine, EngineError


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        from ..trt_build import INSTALL_HINT

        raise EngineError(f"TensorRT backend unavailable: tensorrt is not importable ({exc}). {INSTALL_HINT}") from None
    return trt


class TensorRTEngine(Engine):
    """One TensorRT plan; ``check_platform=False`` skips the sidecar/platform check (tests).

    A ``.onnx`` path is a bundle route: the plan ``tir build`` cached for it (``precision``,
    ``cache_dir``) is used. ``device`` is the CUDA device index.

    Raises:
        EngineError: TensorRT or pycuda missing, the plan (or a cached plan for the route)
            missing, a sidecar naming another platform (with the rebuild command), no sidecar
            with ``check_platform``, a plan that does not deserialize, or not exactly one input
            and one output.
    """

    backend = "tensorrt"

    def __init__(self, path, name: Optional[str] = None, check_platform: bool = True, device: int = 0,
                 precision: Optional[str] = None, cache_dir=None, threads: Optional[int] = None):
        # ``threads`` is accepted for interface parity with the CPU backends and ignored: the GPU
        # does the work here.
        from ..cache import EngineCache, EngineCacheError, current_platform, resolve_plan
        from ..cuda_pipeline import cuda_driver, primary_context, pushed

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"TensorRT plan {str(path)!r} does not exist; build it with `tir build`")
        trt = _import_tensorrt()
        self.cuda = cuda_driver()
        if path.suffix.lower() == ".onnx":  # a bundle route: use the plan `tir build` cached for it
            try:
                path = resolve_plan(path, precision, EngineCache(cache_dir), current_platform()).plan
            except EngineCacheError as exc:
                raise EngineError(str(exc)) from None
        super().__init__(name or path.stem)
        self.trt, self.path = trt, path
        self.meta: dict = {}
        sidecar = EngineCache.sidecar(path)
        if sidecar.is_file():
            try:
                entry = EngineCache(path.parent).read_entry(path)
                self.meta = entry.meta
                if check_platform:
                    EngineCache(path.parent).check_platform(entry, current_platform())
            except EngineCacheError as exc:
                raise EngineError(str(exc)) from None
        elif check_platform:
            raise EngineError(f"plan {path} has no sidecar {sidecar.name}, so it cannot be checked against this "
                              "machine; rebuild it with `tir build` (or pass check_platform=False)")
        self.multiple = int(self.meta.get("multiple", DEFAULT_MULTIPLE))
        self.ctx = primary_context(device)
        self._pushed = lambda: pushed(self.ctx)
        self.logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(self.logger, "")
        with self._pushed():
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if self.engine is None:
                raise EngineError(f"TensorRT {trt.__version__} could not deserialize {path} (built by another "
                                  f"version or GPU?); rebuild: {self.meta.get('rebuild_command', 'tir build ...')}")
            self.context = self.engine.create_execution_context()
            self.stream = self.cuda.Stream()
            self.events = [self.cuda.Event() for _ in range(4)]
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(f"{path.name}: expected one input and one output, got {inputs} -> {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.in_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.out_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        self._engine_shape = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))
        self.profile = None
        if -1 in self._engine_shape:
            lo, opt, hi = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.profile = (tuple(lo), tuple(opt), tuple(hi))
        self._shape: Optional[Tuple[int, ...]] = None
        self._buffers = None
        self.last_times: Dict[str, float] = {}
        self._times: Dict[str, List[float]] = {"h2d": [], "compute": [], "d2h": []}

    @property
    def input_shape(self):
        """The plan's input (N, C, H, W), ``None`` for dynamic axes of its profile."""
        return tuple(None if d == -1 else d for d in self._engine_shape)

    def _check_shape(self, shape: Tuple[int, ...]) -> None:
        if self.profile is None:
            if shape != self._engine_shape:
                raise EngineError(f"{self.name}: plan is static {self._engine_shape}, got {shape}; rebuild "
                                  f"with --size {shape[3]}x{shape[2]}")
            return
        lo, _, hi = self.profile
        if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            raise EngineError(f"{self.name}: input {shape} is outside the plan's profile {lo}..{hi}; rebuild "
                              f"with `tir build ... --size {shape[3]}x{shape[2]}`")

    def _allocate(self, shape: Tuple[int, ...]) -> None:
        from ..cuda_pipeline import DeviceBuffer

        cuda = self.cuda
        self._check_shape(shape)
        with self._pushed():
            if self.profile is not None:
                self.context.set_input_shape(self.input_name, shape)
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output_name))
            if self._buffers is not None:
                for buf in self._buffers[2:]:
                    buf.allocation.free()
            host_in = cuda.pagelocked_empty(shape, self.in_dtype)
            host_out = cuda.pagelocked_empty(out_shape, self.out_dtype)
            dev_in, dev_out = DeviceBuffer(shape, self.in_dtype), DeviceBuffer(out_shape, self.out_dtype)
            self.context.set_tensor_address(self.input_name, dev_in.ptr)
            self.context.set_tensor_address(self.output_name, dev_out.ptr)
        self._buffers = (host_in, host_out, dev_in, dev_out)
        self._shape = shape

    def _run(self, batch: np.ndarray) -> np.ndarray:
        shape = tuple(batch.shape)
        if shape != self._shape:
            self._allocate(shape)
        host_in, host_out, dev_in, dev_out = self._buffers
        cuda, ev, stream = self.cuda, self.events, self.stream
        np.copyto(host_in, batch, casting="same_kind")  # float32 → float16 for FP16 I/O plans
        with self._pushed():
            ev[0].record(stream)
            cuda.memcpy_htod_async(dev_in.allocation, host_in, stream)
            ev[1].record(stream)
            if not self.context.execute_async_v3(stream.handle):
                raise EngineError(f"{self.name}: execute_async_v3 failed (see the TensorRT log)")
            ev[2].record(stream)
            cuda.memcpy_dtoh_async(host_out, dev_out.allocation, stream)
            ev[3].record(stream)
            stream.synchronize()
            self.last_times = {"h2d": ev[1].time_since(ev[0]), "compute": ev[2].time_since(ev[1]),
                               "d2h": ev[3].time_since(ev[2])}
        for k, v in self.last_times.items():
            self._times[k].append(v)
        return host_out.astype(np.float32, copy=True)

    def stats(self) -> Dict[str, Dict[str, float]]:
        """Per part (``h2d``, ``compute``, ``d2h``): p50 and mean in ms (CUDA events) and the count ``n`` of
        runs.
        """
        out = {}
        for k, values in self._times.items():
            if values:
                v = np.asarray(values)
                out[k] = {"p50": float(np.median(v)), "mean": float(v.mean()), "n": int(v.size)}
        return out

    def pipeline(self, shape: Tuple[int, int, int, int], in_flight: int = 2):
        """A :class:`~tir.engines.cuda_pipeline.CudaStreamPipeline` over this plan (frames in flight).

        Args:
            shape: the padded (N, 1, H, W) input shape every frame will have.
            in_flight: frames on the GPU at once (each with its own buffers and streams).

        Raises:
            EngineError: ``shape`` is outside the plan's profile (or not its static shape).
        """
        from ..cuda_pipeline import CudaStreamPipeline, TensorRTRunner

        self._check_shape(tuple(shape))
        return CudaStreamPipeline(TensorRTRunner(self.engine, self.input_name, self.output_name), shape, in_flight)

    def close(self) -> None:
        """Free the device buffers and drop the execution context and engine."""
        if self._buffers is not None:
            with self._pushed():
                for buf in self._buffers[2:]:
                    buf.allocation.free()
            self._buffers = None
        self.context = None
        self.engine = None

    def describe(self) -> str:
        """One JSON line: the plan path, the TensorRT version and the sidecar's meta."""
        return json.dumps({"plan": os.fspath(self.path), "trt": self.trt.__version__, "meta": self.meta})
