"""CUDA stream pipeline: 2–3 frames in flight on separate streams so copies overlap compute.

Each slot owns a CUDA stream, page-locked host buffers, device buffers and four events. For a
frame: CPU copy into the slot's pinned input → event → H2D (async) → event → the model enqueued
on the slot's stream → event → D2H (async) → event. While slot k computes, slot k+1's H2D and
slot k-1's D2H run (pipelines.md rec. 3, tensorrt_int8.md §4 "timing pattern"). Per-part times
come from the events (``Event.time_since``, ms); ``enqueue`` is the host time spent submitting,
which shows a host-bound (Python/enqueue-bound) run.

Runners (what computes on a stream):
- :class:`TensorRTRunner`: one TensorRT execution context per slot (a context must not be
  enqueued on two streams at once), addresses bound once per slot, ``execute_async_v3``;
- :class:`TorchCudaRunner`: a torch CUDA module run on the same external stream
  (``torch.cuda.ExternalStream(stream.handle)``) over the slot's device buffers, exposed through
  ``__cuda_array_interface__``, so the stream/buffer/overlap logic runs for real on any CUDA
  machine without TensorRT.

pycuda shares the device's *primary* context with TensorRT and torch (``retain_primary_context``;
NVIDIA's 8.5 samples use ``pycuda.autoprimaryctx`` for this reason). pycuda has no CUDA-graph or
stream-capture API (tensorrt_int8.md §0.5); graphs would need cuda-python on the same stream
handle, which is not done here.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np

from .engine import EngineError

_PRIMARY = {}
_LOCK = threading.Lock()


def cuda_driver():
    """``pycuda.driver``, initialised once per process.

    Raises:
        EngineError: pycuda is not importable (the message says what to install).
    """
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineError(
            f"pycuda is not importable ({exc}): on a Jetson `pip install pycuda` with "
            "PATH=/usr/local/cuda/bin:$PATH (see docs/jetson.md); elsewhere use --backend onnxruntime") from None
    with _LOCK:
        if "init" not in _PRIMARY:
            cuda.init()
            _PRIMARY["init"] = True
    return cuda


def primary_context(device: int = 0):
    """The device's primary context (shared with TensorRT's runtime API and torch), retained once.

    Raises:
        EngineError: pycuda is missing, or there is no CUDA device ``device``.
    """
    cuda = cuda_driver()
    with _LOCK:
        if device not in _PRIMARY:
            if cuda.Device.count() <= device:
                raise EngineError(f"no CUDA device {device} (found {cuda.Device.count()})")
            _PRIMARY[device] = cuda.Device(device).retain_primary_context()
    return _PRIMARY[device]


class pushed:
    """``with pushed(ctx):`` makes ``ctx`` current in this thread for the block."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __enter__(self):
        self.ctx.push()
        return self.ctx

    def __exit__(self, *exc):
        cuda_driver().Context.pop()
        return False


class DeviceBuffer:
    """A pycuda device allocation with ``__cuda_array_interface__`` (torch/cupy can view it).

    ``shape`` and ``dtype`` describe the array it holds; ``nbytes`` = prod(shape) × itemsize
    (at least 1 byte is allocated).
    """

    def __init__(self, shape: Tuple[int, ...], dtype=np.float32):
        cuda = cuda_driver()
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self.allocation = cuda.mem_alloc(max(self.nbytes, 1))

    @property
    def ptr(self) -> int:
        """The device address as an int (what TensorRT's ``set_tensor_address`` takes)."""
        return int(self.allocation)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 2}


@dataclass
class Slot:
    """One frame's worth of CUDA resources: a stream, page-locked (pinned) host input/output
    arrays (float32, the pipeline's input and output shapes), device buffers, four events
    (before H2D, after H2D, after compute, after D2H), and the ticket and submit times of the
    batch it holds.
    """
    index: int
    stream: object
    host_in: np.ndarray
    host_out: np.ndarray
    dev_in: DeviceBuffer
    dev_out: DeviceBuffer
    events: List[object]
    ticket: Optional[int] = None
    t_submit: float = 0.0
    enqueue_s: float = 0.0


@dataclass
class PartTimes:
    """Per-batch times in ms: ``h2d``, ``compute``, ``d2h`` from CUDA events, ``enqueue`` (host time
    spent submitting) and ``latency`` (submit to result on the host, wall clock).
    """
    h2d: List[float] = field(default_factory=list)
    compute: List[float] = field(default_factory=list)
    d2h: List[float] = field(default_factory=list)
    enqueue: List[float] = field(default_factory=list)
    latency: List[float] = field(default_factory=list)  # submit → result on host

    def summary(self) -> Dict[str, Dict[str, float]]:
        """Per part with data: p50, p90, p99 and mean in ms (rounded to 0.001) and the count ``n``."""
        out = {}
        for name in ("h2d", "compute", "d2h", "enqueue", "latency"):
            values = np.asarray(getattr(self, name), np.float64)
            if values.size:
                p50, p90, p99 = np.percentile(values, (50, 90, 99))
                out[name] = {"p50": round(float(p50), 3), "p90": round(float(p90), 3),
                             "p99": round(float(p99), 3), "mean": round(float(values.mean()), 3),
                             "n": int(values.size)}
        return out


class TensorRTRunner:
    """Enqueue a deserialized TensorRT engine on a slot's stream (one context per slot)."""

    def __init__(self, engine, input_name: str, output_name: str):
        self.engine, self.input_name, self.output_name = engine, input_name, output_name
        self.contexts: Dict[int, object] = {}

    def output_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """The output shape TensorRT infers for an input of ``shape`` (N, C, H, W)."""
        ctx = self._context(-1)
        ctx.set_input_shape(self.input_name, tuple(shape))
        return tuple(int(d) for d in ctx.get_tensor_shape(self.output_name))

    def _context(self, key: int):
        if key not in self.contexts:
            ctx = self.engine.create_execution_context()
            if ctx is None:
                raise EngineError("TensorRT could not create an execution context (out of device memory?)")
            self.contexts[key] = ctx
        return self.contexts[key]

    def bind(self, slot: Slot, shape: Tuple[int, ...]) -> None:
        """Give ``slot`` its own execution context, set the input ``shape`` and bind the slot's
        device buffers.

        Raises:
            EngineError: TensorRT cannot create an execution context (out of device memory?).
        """
        ctx = self._context(slot.index)
        ctx.set_input_shape(self.input_name, tuple(shape))
        ctx.set_tensor_address(self.input_name, slot.dev_in.ptr)
        ctx.set_tensor_address(self.output_name, slot.dev_out.ptr)

    def enqueue(self, slot: Slot) -> None:
        """Enqueue the slot's context on the slot's stream (``execute_async_v3``); returns at once.

        Raises:
            EngineError: TensorRT refused the enqueue (see the TensorRT log).
        """
        if not self.contexts[slot.index].execute_async_v3(slot.stream.handle):
            raise EngineError("TensorRT execute_async_v3 failed (see the TensorRT log)")


class TorchCudaRunner:
    """Run a torch CUDA module on the slot's stream, reading/writing the slot's device buffers.

    ``dtype`` is the dtype the module computes in (default: its parameters'); inputs are cast to
    it and outputs copied back into the slot's float32 buffer.

    Raises:
        EngineError: torch sees no CUDA device.
    """

    def __init__(self, module, dtype=None):
        import torch

        if not torch.cuda.is_available():
            raise EngineError("torch has no CUDA device here")
        self.torch = torch
        self.module = module.eval()
        self.dtype = dtype or next(module.parameters()).dtype
        self.views: Dict[int, tuple] = {}

    def output_shape(self, shape: Tuple[int, ...]) -> Tuple[int, ...]:
        """The module's output shape for a zero input of ``shape`` (N, C, H, W), run once on the GPU."""
        torch = self.torch
        with torch.no_grad():
            x = torch.zeros(shape, device="cuda", dtype=self.dtype)
            return tuple(self.module(x).shape)

    def bind(self, slot: Slot, shape: Tuple[int, ...]) -> None:
        """View the slot's device buffers as torch tensors and wrap its stream
        (``torch.cuda.ExternalStream``).
        """
        torch = self.torch
        x = torch.as_tensor(slot.dev_in, device="cuda")
        y = torch.as_tensor(slot.dev_out, device="cuda")
        self.views[slot.index] = (torch.cuda.ExternalStream(slot.stream.handle), x, y)

    def enqueue(self, slot: Slot) -> None:
        """Run the module on the slot's stream, writing into the slot's output buffer; returns without
        waiting.
        """
        torch = self.torch
        stream, x, y = self.views[slot.index]
        with torch.no_grad(), torch.cuda.stream(stream):
            y.copy_(self.module(x.to(self.dtype)))


class CudaStreamPipeline:
    """``in_flight`` slots round-robin; :meth:`run` yields results in submission order.

    Args:
        runner: a :class:`TensorRTRunner` or :class:`TorchCudaRunner`.
        shape: the (N, C, H, W) float32 input shape every batch must have.
        in_flight: slots (batches on the GPU at once), 1..4.
        device: CUDA device index.

    Raises:
        ValueError: ``in_flight`` is outside 1..4.
        EngineError: pycuda or the device is missing, or the runner cannot bind a slot.
    """

    def __init__(self, runner, shape: Tuple[int, int, int, int], in_flight: int = 2, device: int = 0):
        if not 1 <= in_flight <= 4:
            raise ValueError(f"in_flight must be 1..4, got {in_flight}")
        cuda = cuda_driver()
        self.cuda, self.runner, self.shape = cuda, runner, tuple(int(s) for s in shape)
        self.ctx = primary_context(device)
        self.times = PartTimes()
        self._next_ticket = 0
        self._order: Deque[Slot] = deque()
        with pushed(self.ctx):
            self.out_shape = tuple(runner.output_shape(self.shape))
            self.slots = []
            for k in range(in_flight):
                slot = Slot(
                    index=k, stream=cuda.Stream(),
                    host_in=cuda.pagelocked_empty(self.shape, np.float32),
                    host_out=cuda.pagelocked_empty(self.out_shape, np.float32),
                    dev_in=DeviceBuffer(self.shape), dev_out=DeviceBuffer(self.out_shape),
                    events=[cuda.Event() for _ in range(4)],
                )
                runner.bind(slot, self.shape)
                self.slots.append(slot)
        self._free: Deque[Slot] = deque(self.slots)

    def submit(self, batch: np.ndarray) -> int:
        """Queue one batch: copy into a free slot's pinned input, then H2D, model, D2H on its stream.

        Args:
            batch: float32 array of exactly :attr:`shape` (N, C, H, W).

        Returns:
            The batch's ticket (0, 1, 2, ... in submission order).

        Raises:
            EngineError: ``batch`` has another shape, or every slot is in flight (collect first).
        """
        batch = np.asarray(batch, np.float32)
        if batch.shape != self.shape:
            raise EngineError(f"pipeline built for {self.shape}, got {batch.shape}")
        if not self._free:
            raise EngineError("all slots are in flight: collect() before submitting more")
        slot = self._free.popleft()
        cuda = self.cuda
        t0 = time.perf_counter()
        with pushed(self.ctx):
            np.copyto(slot.host_in, batch)
            ev = slot.events
            ev[0].record(slot.stream)
            cuda.memcpy_htod_async(slot.dev_in.allocation, slot.host_in, slot.stream)
            ev[1].record(slot.stream)
            self.runner.enqueue(slot)
            ev[2].record(slot.stream)
            cuda.memcpy_dtoh_async(slot.host_out, slot.dev_out.allocation, slot.stream)
            ev[3].record(slot.stream)
        slot.enqueue_s = time.perf_counter() - t0
        slot.t_submit = t0
        slot.ticket = self._next_ticket
        self._next_ticket += 1
        self._order.append(slot)
        return slot.ticket

    def collect(self) -> Tuple[int, np.ndarray]:
        """Wait for the oldest batch in flight and record its part times.

        Returns:
            (ticket, output): a float32 copy of the output, shape :attr:`out_shape`.

        Raises:
            EngineError: nothing is in flight.
        """
        if not self._order:
            raise EngineError("nothing in flight")
        slot = self._order.popleft()
        with pushed(self.ctx):
            slot.events[3].synchronize()
            ev = slot.events
            self.times.h2d.append(ev[1].time_since(ev[0]))
            self.times.compute.append(ev[2].time_since(ev[1]))
            self.times.d2h.append(ev[3].time_since(ev[2]))
        self.times.enqueue.append(slot.enqueue_s * 1000.0)
        self.times.latency.append((time.perf_counter() - slot.t_submit) * 1000.0)
        out = slot.host_out.copy()
        ticket, slot.ticket = slot.ticket, None
        self._free.append(slot)
        return ticket, out

    @property
    def in_flight(self) -> int:
        """The number of batches submitted and not yet collected."""
        return len(self._order)

    def oldest_ready(self) -> bool:
        """True when the oldest batch in flight has reached the host (its last event completed),
        so :meth:`collect` will not block; False when none is in flight or it is still running."""
        if not self._order:
            return False
        with pushed(self.ctx):
            return bool(self._order[0].events[3].query())

    def run(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Keep every slot busy; yield outputs in order.

        Args:
            batches: float32 arrays of :attr:`shape` (N, C, H, W).

        Yields:
            float32 outputs of :attr:`out_shape`, one per batch, in submission order.

        Raises:
            EngineError: a batch has another shape.
        """
        for batch in batches:
            if not self._free:
                yield self.collect()[1]
            self.submit(batch)
        while self._order:
            yield self.collect()[1]

    def stats(self) -> Dict[str, Dict[str, float]]:
        """The part times so far (:meth:`PartTimes.summary`): p50/p90/p99/mean in ms per part."""
        return self.times.summary()

    def close(self) -> None:
        """Collect what is still in flight, then free every slot's device buffers."""
        while self._order:
            self.collect()
        with pushed(self.ctx):
            for slot in self.slots:
                slot.dev_in.allocation.free()
                slot.dev_out.allocation.free()
        self.slots = []
        self._free.clear()
