"""Where an INT8 model loses: per-node sensitivity and per-tensor quantisation error.

Two measurements on a few held-out frames, both against the fp32 model's own output:

- :func:`node_sensitivity`: the CPU (U8S8) model rebuilt once per node that
  :func:`~tir.calibration.qdq.quantize_cpu` quantises, either with **only** that node
  quantised (``mode="only"``: the damage the node does by itself) or with everything but that
  node quantised (``mode="float"``: what keeping it float gives back). The figure is the
  fidelity PSNR(int8, fp32) in dB (peak 1.0), the gate's stable number (calibration/gate.py).
- :func:`tensor_errors`: each calibrated activation tensor quantised alone to ONNX Runtime's
  uint8 grid (scale = (hi − lo) / 255, zero point round(−lo / scale), the asymmetric range of
  :meth:`~tir.calibration.entropy.TensorRange.asymmetric`) on the fp32 run's values: its
  signal-to-quantisation-noise ratio SQNR = 10·log10(Σx² / Σ(x − q(x))²) dB, the fraction of
  values clipped, and the step relative to the tensor's RMS. A tensor whose values are small
  next to its calibrated range (a small residual, a range set by rare outliers) shows a low
  SQNR whatever the network does with it afterwards.

``tir calibrate --sensitivity N`` prints both rankings for the routes and the student
(docs/int8.md, "Session 8").
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .entropy import TensorRange

def _ort_quantised_ops() -> set:
    """Op types ONNX Runtime's quantize_static quantises in QDQ format when op_types_to_quantize
    is None (onnxruntime.quantization.registry: QLinearOpsRegistry ∪ QDQRegistry)."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


class _Row:
    """A table row of this module: ``to_dict`` gives its dataclass fields as a JSON-ready dict."""

    def to_dict(self) -> dict:
        """The row as a JSON-ready dict (its dataclass fields, numbers as floats)."""
        return asdict(self)


@dataclass
class NodeSensitivity(_Row):
    """One node's row: ``fidelity_db`` = PSNR(int8, fp32) in dB with the node alone quantised
    (mode ``only``) or alone kept float (mode ``float``); ``delta_db`` = fidelity_db minus the
    fully quantised model's fidelity (``float``: what keeping the node float gives back;
    ``only``: near 0 when this node alone explains the whole model's error)."""
    node: str
    op_type: str
    fidelity_db: float
    delta_db: float


def cpu_quantised_nodes(model, float_inputs: Sequence[str] = (), exclude_nodes: Sequence[str] = (),
                        float_tail: bool = False, tail_blocks: int = 0) -> List[str]:
    """Nodes that :func:`~tir.calibration.qdq.quantize_cpu` hands to ONNX Runtime for
    quantisation, in graph order: an op type ONNX Runtime quantises (Conv, Add, Mul, Relu, ...),
    not kept float by rule (:func:`~tir.calibration.qdq.float_nodes`), not on the side branch
    of ``float_inputs`` (:func:`~tir.calibration.qdq.side_float_nodes`) and not in
    ``exclude_nodes``. Nodes reading only constants (shape arithmetic) are left out."""
    from .qdq import float_nodes, side_float_nodes

    ops = _ort_quantised_ops()
    skip = set(float_nodes(model, float_tail, tail_blocks)) | set(exclude_nodes)
    if float_inputs:
        skip |= set(side_float_nodes(model, float_inputs))
    fixed = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                        for o in n.output}
    shape_like = _shape_tensors(model, fixed)
    return [n.name for n in model.graph.node if n.op_type in ops and n.name not in skip
            and any(i and i not in fixed and i not in shape_like for i in n.input)]


def _shape_tensors(model, fixed: set) -> set:
    """Tensors computed from Shape nodes and constants alone (shape arithmetic, never quantised)."""
    out: set = set()
    for node in model.graph.node:
        dynamic = [i for i in node.input if i and i not in fixed]
        if node.op_type == "Shape" or (dynamic and all(i in out for i in dynamic)):
            out.update(node.output)
    return out


def node_sensitivity(fp32_path, ranges: Mapping[str, TensorRange], evaluate: Callable[[str], float], work_dir,
                     mode: str = "only", candidates: Optional[Sequence[str]] = None,
                     float_inputs: Sequence[str] = (), exclude_nodes: Sequence[str] = (),
                     reduce_range: bool = True, progress: bool = False, float_tail: bool = False,
                     tail_blocks: int = 0):
    """Rank the quantised nodes of the U8S8 CPU model by how much INT8 error each one causes.

    Args:
        fp32_path: the fp32 ONNX model.
        ranges: the calibrated ranges (:meth:`~tir.calibration.entropy.RangeCollector.ranges`).
        evaluate: ``f(path) -> dB``, the fidelity PSNR(int8, fp32) of the INT8 model at ``path``
            on a few held-out frames (the caller runs fp32 once and compares).
        work_dir: folder for the candidate models (one file, overwritten).
        mode: ``"only"`` (quantise only the node) or ``"float"`` (quantise all but the node).
        candidates: the nodes to try (default :func:`cpu_quantised_nodes`).
        float_inputs, exclude_nodes, reduce_range, float_tail, tail_blocks: as for
            :func:`~tir.calibration.qdq.quantize_cpu`.

    Returns:
        ``(reference_db, rows)``: the fully quantised model's fidelity (dB) and one
        :class:`NodeSensitivity` per candidate, worst first (``only``: lowest fidelity;
        ``float``: largest gain).

    Raises:
        ValueError: ``mode`` is neither "only" nor "float".
    """
    import onnx

    from .qdq import quantize_cpu

    if mode not in ("only", "float"):
        raise ValueError(f"sensitivity mode {mode!r}: use 'only' (quantise one node) or 'float' (keep one float)")
    model = onnx.load(os.fspath(fp32_path))
    ops = {n.name: n.op_type for n in model.graph.node}
    names = list(candidates) if candidates is not None else cpu_quantised_nodes(model, float_inputs, exclude_nodes,
                                                                                        float_tail, tail_blocks)
    os.makedirs(os.fspath(work_dir), exist_ok=True)
    path = os.path.join(os.fspath(work_dir), "sensitivity.onnx")

    def fidelity(excluded) -> float:
        quantize_cpu(fp32_path, ranges, path, exclude_nodes=list(exclude_nodes) + list(excluded),
                     reduce_range=reduce_range, float_inputs=float_inputs, float_tail=float_tail,
                     tail_blocks=tail_blocks)
        return float(evaluate(path))

    reference = fidelity([])
    items = names
    if progress:
        from tqdm import tqdm

        items = tqdm(names, desc=f"node sensitivity ({mode})", unit="node")
    rows = []
    for name in items:
        excluded = [n for n in names if n != name] if mode == "only" else [name]
        fid = fidelity(excluded)
        rows.append(NodeSensitivity(name, ops.get(name, "?"), fid, fid - reference))
    rows.sort(key=lambda r: (r.fidelity_db if mode == "only" else -r.delta_db))
    return reference, rows


@dataclass
class TensorError(_Row):
    """One activation tensor on ORT's uint8 grid (see the module docstring): ``channels`` (dim 1,
    0 when unknown), observed ``lo``/``hi`` on these frames, the calibrated grid ``range_lo``/
    ``range_hi``, ``rms`` of the values, ``step`` = grid step, ``sqnr_db``, ``clipped`` (fraction
    of values outside the grid)."""
    tensor: str
    channels: int
    lo: float
    hi: float
    range_lo: float
    range_hi: float
    rms: float
    step: float
    sqnr_db: float
    clipped: float


def uint8_fake_quant(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``x`` quantised and dequantised on ONNX Runtime's asymmetric uint8 grid for [lo, hi]
    (lo ≤ 0 ≤ hi: scale = (hi − lo)/255, zero point = round(−lo/scale) clipped to 0…255).

    Raises:
        ValueError: hi ≤ lo.
    """
    if not hi > lo:
        raise ValueError(f"uint8 range [{lo}, {hi}] is empty; a calibrated tensor needs hi > lo")
    scale = (hi - lo) / 255.0
    zp = float(np.clip(np.round(-lo / scale), 0, 255))
    q = np.clip(np.round(np.asarray(x, np.float64) / scale) + zp, 0, 255)
    return ((q - zp) * scale).astype(np.float32)


def tensor_errors(values: Mapping[str, Sequence[np.ndarray]], ranges: Mapping[str, TensorRange]) -> List[TensorError]:
    """Each tensor of ``values`` (name -> arrays from the fp32 run, e.g. (N, C, H, W) float32)
    quantised alone with its calibrated range, worst SQNR first. Tensors without a range, or
    with an empty one, are left out.
    """
    rows = []
    for name, arrays in values.items():
        r = ranges.get(name)
        if r is None:
            continue
        lo, hi = r.asymmetric()
        if not hi > lo:
            continue
        x = np.concatenate([np.asarray(a, np.float32).ravel() for a in arrays])
        if not x.size:
            continue
        err = x - uint8_fake_quant(x, lo, hi)
        signal = float(np.sum(np.square(x, dtype=np.float64)))
        noise = float(np.sum(np.square(err, dtype=np.float64)))
        sqnr = float("inf") if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else float("-inf"))
        shape = np.shape(arrays[0])
        rows.append(TensorError(name, int(shape[1]) if len(shape) >= 2 else 0, float(x.min()), float(x.max()),
                                float(lo), float(hi), float(np.sqrt(signal / x.size)), (hi - lo) / 255.0, sqnr,
                                float(np.mean((x < lo) | (x > hi)))))
    rows.sort(key=lambda t: t.sqnr_db)
    return rows


def tensor_values(fp32_path, feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str],
                  threads: int = 2) -> Dict[str, List[np.ndarray]]:
    """The fp32 model's float tensors ``names`` on each feed dict of ``feeds`` (input name ->
    array, e.g. (1, 1, H, W) float32 frames and a (1, K) float32 prompt; graph optimisation
    off, so every tensor exists): name -> one float32 array per feed, e.g. (1, C, H/4, W/4)."""
    import onnx

    from .qdq import tensor_session

    sess = tensor_session(onnx.load(os.fspath(fp32_path)), names, threads)
    outs: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for n, v in zip(names, sess.run(list(names), dict(feed))):
            outs[n].append(v)
    return outs


def format_sensitivity(reference_db: float, rows: Sequence[NodeSensitivity], mode: str, top: int = 12) -> str:
    """The ``top`` rows of :func:`node_sensitivity` as a text table."""
    what = "only this node INT8" if mode == "only" else "all INT8 but this node"
    lines = [f"node sensitivity ({what}); all quantised: {reference_db:.2f} dB fidelity to fp32",
             f"{'node':<40} {'op':<14} {'fidelity dB':>11} {'delta dB':>9}"]
    for r in rows[:top]:
        lines.append(f"{r.node:<40} {r.op_type:<14} {r.fidelity_db:11.2f} {r.delta_db:9.2f}")
    return "\n".join(lines)


def format_tensor_errors(rows: Sequence[TensorError], top: int = 12) -> str:
    """The ``top`` rows of :func:`tensor_errors` as a text table."""
    lines = [f"{'tensor':<40} {'C':>3} {'observed lo..hi':>19} {'grid lo..hi':>19} {'rms':>8} "
             f"{'step':>8} {'SQNR dB':>8} {'clip %':>7}"]
    for t in rows[:top]:
        lines.append(f"{t.tensor:<40} {t.channels:>3} {t.lo:9.3f}..{t.hi:<8.3f} {t.range_lo:9.3f}..{t.range_hi:<8.3f} "
                     f"{t.rms:8.4f} {t.step:8.5f} {t.sqnr_db:8.2f} {100 * t.clipped:7.3f}")
    return "\n".join(lines)
