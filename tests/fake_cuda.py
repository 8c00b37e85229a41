"""Test doubles for ``pycuda.driver`` and ``tensorrt`` that do the "GPU" work with numpy on the CPU.

:func:`install` puts them into ``sys.modules`` (as ``pycuda``, ``pycuda.driver``, ``tensorrt``)
so the TensorRT backend, the CUDA-stream pipeline, ``tir build`` and ``tir bench --trt-style``
run their real control flow in CI. Only the API surface tir uses is modelled:

- device memory is numpy byte arrays keyed by a fake address (``int(allocation)``);
- a :class:`Stream` queues its operations and runs them only when the stream, or an event
  recorded on it, is synchronised, so work really stays "in flight" until collected;
- every operation advances one simulated device clock by a fixed cost (copies
  ``nbytes / COPY_BYTES_PER_MS``, an ``execute_async_v3`` ``compute_ms`` from the plan), and an
  event records the clock when it runs, so ``Event.time_since`` gives exact, known
  milliseconds to assert on;
- a fake plan (the bytes ``build_serialized_network`` returns) is ``FAKEPLAN`` + JSON naming
  the ONNX file; its execution context runs that ONNX with ONNX Runtime on the numpy
  "device" buffers, so outputs can be compared with the ONNX Runtime backend.

:data:`STATE` records what happened (calls, peak number of streams with queued work) for tests.
"""
from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from typing import Dict, List

import numpy as np

COPY_BYTES_PER_MS = 1_000_000  # 1 MB per simulated ms
PLAN_MAGIC = b"FAKEPLAN"
DEVICE_NAME = "Fake GPU (numpy)"
COMPUTE_CAPABILITY = (9, 0)


class _State:
    def __init__(self):
        self.reset()

    def reset(self):
        self.clock_ms = 0.0
        self.memory: Dict[int, np.ndarray] = {}
        self.next_ptr = 0x10000
        self.streams: Dict[int, "Stream"] = {}
        self.next_handle = 1
        self.calls: List[str] = []
        self.peak_busy_streams = 0
        self.context_depth = 0
        self.executions = 0
        self.builds: List[dict] = []

    def busy_streams(self) -> int:
        return sum(1 for s in self.streams.values() if s.queue)

    def note_queue(self):
        self.peak_busy_streams = max(self.peak_busy_streams, self.busy_streams())


STATE = _State()


# ------------------------------------------------------------------------------------------------
# pycuda.driver
# ------------------------------------------------------------------------------------------------
class LogicError(RuntimeError):
    pass


class DeviceAllocation:
    def __init__(self, nbytes: int):
        self.ptr = STATE.next_ptr
        STATE.next_ptr += (int(nbytes) + 255) // 256 * 256 + 256
        STATE.memory[self.ptr] = np.zeros(int(nbytes), np.uint8)
        self.freed = False

    def __int__(self):
        return self.ptr

    def free(self):
        if self.freed:
            raise LogicError("double free")
        STATE.memory.pop(self.ptr)
        self.freed = True


def _device_bytes(ptr: int) -> np.ndarray:
    if ptr not in STATE.memory:
        raise LogicError(f"invalid device pointer {ptr:#x}")
    return STATE.memory[ptr]


class Stream:
    def __init__(self, flags: int = 0):
        self.handle = STATE.next_handle
        STATE.next_handle += 1
        self.queue: List = []
        STATE.streams[self.handle] = self

    def enqueue(self, op):
        if STATE.context_depth <= 0:
            raise LogicError("no current CUDA context (push one first)")
        self.queue.append(op)
        STATE.note_queue()

    def run_until(self, op=None):
        while self.queue:
            item = self.queue.pop(0)
            item()
            if item is op:
                return

    def synchronize(self):
        self.run_until()


class Event:
    def __init__(self, flags: int = 0):
        self.time_ms = None
        self.stream = None
        self._op = None

    def record(self, stream: Stream = None):
        self.time_ms = None
        self.stream = stream

        def mark():
            self.time_ms = STATE.clock_ms
        self._op = mark
        stream.enqueue(mark)
        return self

    def synchronize(self):
        if self.stream is not None and self.time_ms is None:
            self.stream.run_until(self._op)
        return self

    def query(self):
        return self.time_ms is not None

    def time_since(self, other: "Event") -> float:
        if self.time_ms is None or other.time_ms is None:
            raise LogicError("cuEventElapsedTime failed: event not ready")
        return self.time_ms - other.time_ms


def _copy_cost(nbytes: int) -> float:
    return nbytes / COPY_BYTES_PER_MS


def memcpy_htod_async(dest, src: np.ndarray, stream: Stream = None):
    src_ref = src

    def op():
        data = np.ascontiguousarray(src_ref).view(np.uint8).reshape(-1)
        _device_bytes(int(dest))[: data.size] = data
        STATE.clock_ms += _copy_cost(data.size)
    STATE.calls.append("htod")
    stream.enqueue(op)


def memcpy_dtoh_async(dest: np.ndarray, src, stream: Stream = None):
    def op():
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = _device_bytes(int(src))[: flat.size]
        STATE.clock_ms += _copy_cost(flat.size)
    STATE.calls.append("dtoh")
    stream.enqueue(op)


def mem_alloc(nbytes: int) -> DeviceAllocation:
    return DeviceAllocation(nbytes)


def pagelocked_empty(shape, dtype=np.float32, order="C", mem_flags=0):
    return np.empty(shape, dtype, order=order)


class Context:
    def push(self):
        STATE.context_depth += 1

    @staticmethod
    def pop():
        if STATE.context_depth <= 0:
            raise LogicError("context stack is empty")
        STATE.context_depth -= 1


class Device:
    def __init__(self, index: int):
        if index >= Device.count():
            raise LogicError(f"invalid device ordinal {index}")
        self.index = index

    @staticmethod
    def count() -> int:
        return 1

    def name(self) -> str:
        return DEVICE_NAME

    def compute_capability(self):
        return COMPUTE_CAPABILITY

    def retain_primary_context(self) -> Context:
        return Context()


def init(flags: int = 0):
    STATE.calls.append("init")


# ------------------------------------------------------------------------------------------------
# tensorrt
# ------------------------------------------------------------------------------------------------
class Logger:
    VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = range(5)

    def __init__(self, level=WARNING):
        self.level = level


def init_libnvinfer_plugins(logger, namespace):
    STATE.calls.append("init_plugins")
    return True


class TensorIOMode:
    NONE, INPUT, OUTPUT = "NONE", "INPUT", "OUTPUT"


class DataType:
    FLOAT, HALF, INT8, INT32 = "FLOAT", "HALF", "INT8", "INT32"


_NPTYPE = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
           DataType.INT32: np.int32}


def nptype(dtype):
    return _NPTYPE[dtype]


class MemoryPoolType:
    WORKSPACE = "WORKSPACE"


class BuilderFlag:
    FP16, INT8, OBEY_PRECISION_CONSTRAINTS, GPU_FALLBACK = "FP16", "INT8", "OBEY", "GPU_FALLBACK"


class NetworkDefinitionCreationFlag:
    EXPLICIT_BATCH = 0


class DeviceType:
    GPU, DLA = "GPU", "DLA"


class _Session:
    cache: Dict[str, object] = {}

    @classmethod
    def get(cls, path: str):
        if path not in cls.cache:
            import onnxruntime as ort

            cls.cache[path] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return cls.cache[path]


class ExecutionContext:
    def __init__(self, engine: "CudaEngine"):
        self.engine = engine
        self.shape = None
        self.addresses: Dict[str, int] = {}

    def set_input_shape(self, name, shape):
        if name != self.engine.plan["input"]:
            raise LogicError(f"{name} is not an input")
        lo, _, hi = self.engine.plan["profile"]
        if any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            return False
        self.shape = tuple(int(s) for s in shape)
        return True

    def get_tensor_shape(self, name):
        if self.shape is None:
            return tuple(self.engine.plan["shape"])
        return self.shape  # image in, image out

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        plan, shape = self.engine.plan, self.shape
        src, dst = self.addresses[plan["input"]], self.addresses[plan["output"]]
        stream = STATE.streams[int(stream_handle)]

        def op():
            n = int(np.prod(shape)) * 4
            x = _device_bytes(src)[:n].view(np.float32).reshape(shape)
            y = _Session.get(plan["onnx"]).run(None, {plan["input"]: x.copy()})[0].astype(np.float32)
            _device_bytes(dst)[: y.nbytes] = y.reshape(-1).view(np.uint8)
            STATE.clock_ms += float(plan["compute_ms"])
            STATE.executions += 1
        stream.enqueue(op)
        return True


class CudaEngine:
    def __init__(self, plan: dict):
        self.plan = plan
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return (self.plan["input"], self.plan["output"])[i]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == self.plan["input"] else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return DataType.FLOAT

    def get_tensor_shape(self, name):
        return tuple(self.plan["shape"])

    def get_tensor_profile_shape(self, name, profile):
        return tuple(tuple(s) for s in self.plan["profile"])

    def create_execution_context(self):
        return ExecutionContext(self)


class Runtime:
    def __init__(self, logger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes):
        if not bytes(data).startswith(PLAN_MAGIC):
            return None
        return CudaEngine(json.loads(bytes(data)[len(PLAN_MAGIC):]))


class _Tensor:
    def __init__(self, name, shape):
        self.name, self.shape = name, tuple(shape)


class Network:
    def __init__(self):
        self.inputs: List[_Tensor] = []
        self.outputs: List[_Tensor] = []
        self.onnx = None
        self.num_layers = 0

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, i):
        return self.inputs[i]

    def get_layer(self, i):
        raise IndexError(i)


class OnnxParser:
    def __init__(self, network: Network, logger):
        self.network = network
        self.num_errors = 0

    def parse_from_file(self, path) -> bool:
        import onnx

        model = onnx.load(str(path), load_external_data=False)

        def dims(value):
            return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        self.network.inputs = [_Tensor(v.name, dims(v)) for v in model.graph.input]
        self.network.outputs = [_Tensor(v.name, dims(v)) for v in model.graph.output]
        self.network.onnx = str(path)
        self.network.num_layers = len(model.graph.node)
        return True

    def get_error(self, i):
        raise IndexError(i)


class TimingCache:
    def __init__(self, data: bytes):
        self.data = bytes(data) or b"fake-timing-cache"

    def serialize(self):
        return self.data


class OptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, lo, opt, hi):
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class BuilderConfig:
    def __init__(self):
        self.flags, self.profiles, self.pools = set(), [], {}
        self.timing_cache = None
        self.int8_calibrator = None
        self.builder_optimization_level = 3

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def create_timing_cache(self, data):
        return TimingCache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache = cache
        return True

    def get_timing_cache(self):
        return self.timing_cache

    def set_flag(self, flag):
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_calibration_profile(self, profile):
        pass


class HostMemory(bytes):
    @property
    def nbytes(self):
        return len(self)


class Builder:
    compute_ms = 1.0  # what every plan built by the fake "computes" for, per execution

    def __init__(self, logger):
        self.logger = logger

    def create_network(self, flags=0):
        return Network()

    def create_builder_config(self):
        return BuilderConfig()

    def create_optimization_profile(self):
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig):
        inp, out = network.inputs[0], network.outputs[0]
        if config.profiles:
            lo, opt, hi = config.profiles[0].shapes[inp.name]
        else:
            lo = opt = hi = inp.shape
        plan = {"onnx": network.onnx, "input": inp.name, "output": out.name, "shape": list(inp.shape),
                "profile": [list(lo), list(opt), list(hi)], "flags": sorted(config.flags),
                "compute_ms": self.compute_ms}
        STATE.builds.append(plan)
        return HostMemory(PLAN_MAGIC + json.dumps(plan).encode())


# ------------------------------------------------------------------------------------------------
def _module(name: str, namespace: dict, attrs: List[str]) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for attr in attrs:
        setattr(module, attr, namespace[attr])
    return module


_DRIVER = ["LogicError", "DeviceAllocation", "Stream", "Event", "memcpy_htod_async", "memcpy_dtoh_async",
           "mem_alloc", "pagelocked_empty", "Context", "Device", "init"]
_TRT = ["Logger", "init_libnvinfer_plugins", "TensorIOMode", "DataType", "nptype", "MemoryPoolType", "BuilderFlag",
        "NetworkDefinitionCreationFlag", "DeviceType", "Runtime", "Builder", "OnnxParser"]


def install(monkeypatch, compute_ms: float = 1.0):
    """Inject the fakes into ``sys.modules`` for one test; returns :data:`STATE` (reset)."""
    from tir.engines import cuda_pipeline

    STATE.reset()
    _Session.cache = {}
    Builder.compute_ms = compute_ms
    g = globals()
    driver = _module("pycuda.driver", g, _DRIVER)
    pycuda = _module("pycuda", g, [])
    pycuda.__path__ = []
    pycuda.driver = driver
    trt = _module("tensorrt", g, _TRT)
    trt.__version__ = "10.99.0"
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(cuda_pipeline, "_PRIMARY", {})
    return STATE
