"""How much of the machine's convolution rate each model achieves (``tir bench --roofline``).

The reference is the machine's **dense-conv rate measured in the same run**: a chain of
``REF_BLOCKS`` 3×3 convolutions at ``REF_CHANNELS`` → ``REF_CHANNELS`` channels + ReLU on the
H/4 × W/4 grid of the frame size (the shape of the routes' dense blocks), run by ONNX Runtime
with the same session options as the models (engines/backends/onnxruntime.py), in fp32 and as
a U8S8 QDQ model for INT8. Each model's achieved rate is its MACs per frame
(:func:`tir.engines.training.macs.count_macs` on the routes rebuilt from the bundle's checkpoint at
the frame size, or the manifest's ``gmac_640x512`` scaled by pixel count; the router network
counted at its fixed input size, every convolution including its fixed band-feature blurs, or
the same count recorded when its graph was rewritten into the fast form,
:func:`router_macs`) divided by its median latency;
its **share** is that rate over the reference rate of the same precision. The reference and
the models are timed interleaved, round by round, so a shared machine's load affects them alike.
Compare shares within one run: across runs they move with the load as well (memory-bound ops
and the dense conv suffer differently from contention; docs/BENCHMARKS.md, "Roofline").

Needs the ``onnx`` package (the test/train extras) to build the reference graphs.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REF_CHANNELS = 32
REF_BLOCKS = 4
ROUTE_GMAC_SIZE = (640, 512)   # the manifest's gmac_640x512 is per frame at this size


@dataclass
class Item:
    """One timed model: ``label``, ONNX ``path``, MACs per call, precision ("fp32"/"int8"),
    the input array it runs on (its first input), any further inputs by name (``feeds``: the
    student's prompt weights), and (after :func:`measure`) its latencies in ms."""
    label: str
    path: str
    macs: Optional[int]
    precision: str
    x: np.ndarray
    kind: str = "model"          # "reference" for the dense-conv chain
    times_ms: List[float] = field(default_factory=list)
    feeds: Dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def ms(self) -> float:
        """The median latency in ms (NaN before :func:`measure`)."""
        return float(np.median(self.times_ms)) if self.times_ms else float("nan")

    @property
    def gmacs(self) -> Optional[float]:
        """Achieved GMAC/s (None without a MAC count)."""
        return None if self.macs is None or not self.times_ms else self.macs / (self.ms * 1e6)


def reference_macs(size: Tuple[int, int]) -> int:
    """MACs of the dense-conv reference at frame ``size`` (w, h)."""
    w, h = size
    return REF_BLOCKS * REF_CHANNELS * REF_CHANNELS * 9 * (h // 4) * (w // 4)


def write_reference(out_dir, size: Tuple[int, int], int8: bool = True, reduce_range: bool = False,
                    seed: int = 0) -> Dict[str, str]:
    """Write the dense-conv reference as ``ref-fp32.onnx`` (and ``ref-int8.onnx``, U8S8 QDQ per-channel
    from ONNX Runtime's static quantiser, calibrated on 4 random inputs, ``reduce_range`` as the
    routes' INT8 models) into ``out_dir``; returns {precision: path}. Raises ImportError without onnx."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, h = size
    rng = np.random.default_rng(seed)
    c = REF_CHANNELS
    nodes, inits = [], []
    prev = "input"
    for i in range(REF_BLOCKS):
        wt = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{i}"), numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(nodes, "dense_conv_reference",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h // 4, w // 4])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, c, h // 4, w // 4])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"fp32": str(out / "ref-fp32.onnx")}
    onnx.save(model, paths["fp32"])
    if int8:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.left = [{"input": rng.random((1, c, h // 4, w // 4), dtype=np.float32)} for _ in range(4)]

            def get_next(self):
                return self.left.pop() if self.left else None

        paths["int8"] = str(out / "ref-int8.onnx")
        quantize_static(paths["fp32"], paths["int8"], Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        reduce_range=reduce_range)
    return paths


def measure(items: Sequence[Item], rounds: int = 10, warmup: int = 2, threads: Optional[int] = 2) -> None:
    """Time every item once per round, interleaved, after ``warmup`` untimed rounds; fills
    ``times_ms``. Sessions use tir's options (:func:`~tir.engines.backends.onnxruntime.session_options`)."""
    import onnxruntime as ort

    from ..backends.onnxruntime import session_options

    sessions = [ort.InferenceSession(it.path, session_options(it.path, threads),
                                     providers=["CPUExecutionProvider"]) for it in items]
    names = [s.get_inputs()[0].name for s in sessions]
    for r in range(warmup + rounds):
        for it, sess, name in zip(items, sessions, names):
            t0 = time.perf_counter()
            sess.run(None, {name: it.x, **it.feeds})
            if r >= warmup:
                it.times_ms.append(1000.0 * (time.perf_counter() - t0))


def shares(items: Sequence[Item]) -> List[dict]:
    """One row per item: label, precision, ms, GMAC, GMAC/s and the share of the same-precision
    reference rate (None where there is no MAC count or no reference)."""
    ref = {it.precision: it.gmacs for it in items if it.kind == "reference"}
    rows = []
    for it in items:
        rate = it.gmacs
        base = ref.get(it.precision)
        rows.append({"model": it.label, "precision": it.precision, "kind": it.kind, "ms": round(it.ms, 2),
                     "gmac": None if it.macs is None else round(it.macs / 1e9, 4),
                     "gmac_per_s": None if rate is None else round(rate, 2),
                     "share": None if rate is None or not base else round(rate / base, 3)})
    return rows


def router_macs(bundle) -> Optional[int]:
    """MACs of one router call: the reference network's at its fixed input size, every
    convolution counted (the band-feature blurs as well as the trunk and head). A router
    rewritten into its fast form (tir.engines.training.fast_router) carries that count in its
    manifest ``export`` record (``macs``: the reference graph's convolutions, counted before the
    rewrite; the fast graph executes more, zero taps and strip halos, like the routes' fast
    forms it is credited with the function's MACs only); otherwise the network is rebuilt in
    torch and counted (:func:`tir.engines.training.macs.count_macs`). None without either."""
    recorded = ((bundle.router or {}).get("export") or {}).get("macs")
    if isinstance(recorded, int) and recorded > 0:
        return recorded
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    from .macs import count_macs
    from ..router import ROUTER_INPUT_SIZE
    from .router_train import build_router_net

    router = bundle.router or {}
    dim = len(router["codebook"][0]) if router.get("codebook") else 48
    w, h = router.get("input_size") or ROUTER_INPUT_SIZE
    return count_macs(build_router_net(dim), (1, 1, int(h), int(w))).macs


def route_macs(bundle, size: Tuple[int, int], routes: Sequence[str]) -> Dict[str, Optional[int]]:
    """MACs per frame of each route at ``size`` (w, h): :func:`tir.engines.training.macs.count_macs` on the
    route rebuilt from the bundle's hash-checked checkpoint when torch and a checkpoint are there
    (so a manifest written before the count was fixed does not matter), else the manifest's
    ``gmac_640x512`` scaled by pixel count (None when it has none)."""
    w, h = size
    out: Dict[str, Optional[int]] = {}
    info = bundle.manifest.get("checkpoint")
    try:
        import io

        import torch

        from ..bundle import read_verified
        from .continual import OpenWorldModel, RouteModule
        from .macs import count_macs
    except ImportError:
        info = None
    if info:
        ckpt = torch.load(io.BytesIO(read_verified(bundle, info["file"])), map_location="cpu", weights_only=True)
        model = OpenWorldModel.from_checkpoint(ckpt)
        for route in routes:
            if route in model.tasks:
                out[route] = count_macs(RouteModule(model, route), (1, 1, h, w)).macs
    scale = (w * h) / float(ROUTE_GMAC_SIZE[0] * ROUTE_GMAC_SIZE[1])
    for route in routes:
        if route not in out:
            gmac = bundle.task_info(route).get("gmac_640x512")
            out[route] = None if gmac is None else int(round(gmac * 1e9 * scale))
    return out


def bundle_items(bundle, size: Tuple[int, int], routes: Optional[Sequence[str]] = None,
                 int8_dir=None, x: Optional[np.ndarray] = None) -> List[Item]:
    """Items for a bundle's routes (fp32, and the ``<route>.int8-cpu.onnx`` of ``int8_dir`` from
    ``tir calibrate`` where present), its distilled student (fp32; its MACs the manifest's
    ``gmac_640x512``, counted by the same forward hooks when ``tir distill`` built it, scaled by
    pixel count; a one-hot prompt, which does not change the cost) and its router, on frame
    ``x`` (1×1×H×W; random when None)."""
    w, h = size
    if x is None:
        x = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
    routes = list(routes or bundle.tasks)
    counts = route_macs(bundle, size, routes)
    items = []
    for route in routes:
        macs = counts[route]
        items.append(Item(route, str(bundle.route_path(route)), macs, "fp32", x))
        if int8_dir is not None:
            q = Path(int8_dir) / f"{route}.int8-cpu.onnx"
            if q.is_file():
                items.append(Item(route, str(q), macs, "int8", x))
    student = bundle.student
    if student is not None and bundle.student_path is not None:
        gmac = student.get("gmac_640x512")
        macs = None if not isinstance(gmac, (int, float)) else \
            int(round(float(gmac) * 1e9 * (w * h) / (ROUTE_GMAC_SIZE[0] * ROUTE_GMAC_SIZE[1])))
        prompt = np.zeros((1, len(student.get("prompts") or [])), np.float32)
        prompt[0, 0] = 1.0
        items.append(Item("student", str(bundle.student_path), macs, "fp32", x, feeds={"prompt": prompt}))
    if bundle.router_path is not None:
        rw, rh = (bundle.router or {}).get("input_size") or (640, 512)
        rx = np.random.default_rng(1).random((1, 1, int(rh), int(rw)), dtype=np.float32)
        items.append(Item("router", str(bundle.router_path), router_macs(bundle), "fp32", rx))
    return items


def reference_items(size: Tuple[int, int], int8: bool, work_dir=None, reduce_range: bool = False) -> List[Item]:
    """The dense-conv reference items at frame ``size`` (w, h): fp32, and INT8 (U8S8 QDQ) when
    ``int8``; ONNX files written under ``work_dir`` (default: a new temporary folder), input a
    (1, REF_CHANNELS, h/4, w/4) float32 array, MACs from :func:`reference_macs`.
    """
    w, h = size
    work = work_dir or tempfile.mkdtemp(prefix="tir-roofline-")
    paths = write_reference(work, size, int8=int8, reduce_range=reduce_range)
    x = np.random.default_rng(2).random((1, REF_CHANNELS, h // 4, w // 4), dtype=np.float32)
    return [Item(f"dense conv {REF_CHANNELS}ch 3x3 ×{REF_BLOCKS}", p, reference_macs(size), prec, x, kind="reference")
            for prec, p in paths.items()]


def format_rows(rows: Sequence[dict], size: Tuple[int, int]) -> str:
    """The roofline table as text: model, precision, ms (median latency), GMAC per frame, GMAC/s
    achieved and share (percent of the same-precision dense-conv rate) at ``size`` (w, h) px.
    """
    head = f"{'model':<26}{'prec':>6}{'ms':>10}{'GMAC':>9}{'GMAC/s':>9}{'share':>8}"
    lines = [f"roofline at {size[0]}x{size[1]} (share = GMAC/s over the dense-conv rate of the same precision, "
             "measured in this run)", head, "-" * len(head)]
    for r in rows:
        share = "-" if r["share"] is None else f"{100 * r['share']:.0f} %"
        gmac = "-" if r["gmac"] is None else f"{r['gmac']:.3f}"
        rate = "-" if r["gmac_per_s"] is None else f"{r['gmac_per_s']:.1f}"
        lines.append(f"{r['model']:<26}{r['precision']:>6}{r['ms']:>10.2f}{gmac:>9}{rate:>9}{share:>8}")
    return "\n".join(lines)


def load_average() -> Optional[List[float]]:
    """The 1, 5 and 15 minute load averages (os.getloadavg), None where the OS has none."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
