"""INT8 accuracy gate: a route whose INT8 model loses more than ``max_loss_db`` is refused.

Rule with clean references (RoadScene held-out frames degraded with the route's task, or the
synthetic camera's noise-free counts): loss = PSNR(fp32 output, clean) − PSNR(int8 output, clean),
mean over held-out frames; refused if loss > 0.3 dB. Without references (a plain recording
folder) the rule is fidelity: PSNR(int8 output, fp32 output) must reach ``min_fidelity_db``.
Both numbers are always reported. The verdict is never a silent fallback: a refused route stays
refused in the report; for TensorRT the gate also searches the layers to keep in FP16 (greedy, by
per-layer sensitivity) and names them, and the build uses them only because the report says so.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Mapping, Optional, Sequence

import numpy as np

from tir.engines.metrics import psnr

MAX_LOSS_DB = 0.3
MIN_FIDELITY_DB = 40.0

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class RouteVerdict:
    """The INT8 accuracy gate's verdict on one route.

    All PSNR figures are in dB (mean over the held-out frames): ``fidelity_db`` = PSNR(int8
    output, fp32 output); ``psnr_fp32``/``psnr_int8`` against the clean references, ``loss_db``
    their difference (None without references). ``rule`` says which decided (``vs-clean`` or
    ``fidelity``); ``fp16_layers``/``mixed_*`` report the TensorRT FP16-layer search.
    """
    route: str
    flavour: str  # "cpu-u8s8", "trt-qdq", ...
    rule: str  # "vs-clean" or "fidelity"
    fidelity_db: float  # PSNR(int8, fp32)
    psnr_fp32: Optional[float] = None  # vs clean
    psnr_int8: Optional[float] = None
    loss_db: Optional[float] = None
    passed: bool = False
    reason: str = ""
    fp16_layers: List[str] = field(default_factory=list)
    mixed_loss_db: Optional[float] = None  # with fp16_layers excluded from INT8
    mixed_passed: Optional[bool] = None
    frames: int = 0

    def to_dict(self) -> dict:
        """The verdict as a JSON-ready dict (dataclass fields)."""
        return asdict(self)


def _mean_db(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def held_out_outputs(run: Runner, frames, clip: bool = True) -> List[np.ndarray]:
    """Run ``run`` on every held-out frame (the degraded input of pairs when the set has
    references).

    Args:
        run: maps a (1, 1, H, W) float32 batch to the (1, 1, H, W) output.
        frames: a :class:`~tir.calibration.data.CalibrationSet`.
        clip: clip outputs to [0, 1].

    Returns:
        One (H, W) float32 output per frame.
    """
    outs = []
    for i in range(len(frames)):
        x = frames.pair(i)[0] if frames.has_references else frames[i]
        y = np.asarray(run(x[None, None]), np.float32)[0, 0]
        outs.append(np.clip(y, 0.0, 1.0) if clip else y)
    return outs


def measure(fp32_outputs: Sequence[np.ndarray], int8_outputs: Sequence[np.ndarray], frames=None) -> dict:
    """Mean dB numbers; clean-reference numbers only when ``frames`` has references.

    Args:
        fp32_outputs, int8_outputs: (H, W) float32 outputs in [0, 1], one per frame.
        frames: the :class:`~tir.calibration.data.CalibrationSet` they came from, or None.

    Returns:
        ``fidelity_db`` (mean PSNR(int8, fp32)), and with references ``psnr_fp32``,
        ``psnr_int8`` and ``loss_db`` = psnr_fp32 − psnr_int8, all in dB (PSNR with peak 1.0,
        :func:`tir.engines.metrics.psnr`; infinite values left out of the means).
    """
    fidelity = _mean_db([psnr(a, b) for a, b in zip(fp32_outputs, int8_outputs)])
    out = {"fidelity_db": fidelity}
    if frames is not None and frames.has_references:
        clean = [frames.pair(i)[1] for i in range(len(frames))]
        p32 = _mean_db([psnr(a, c) for a, c in zip(fp32_outputs, clean)])
        p8 = _mean_db([psnr(a, c) for a, c in zip(int8_outputs, clean)])
        out.update(psnr_fp32=p32, psnr_int8=p8, loss_db=p32 - p8)
    return out


def judge(route: str, flavour: str, numbers: Mapping[str, float], n_frames: int,
          max_loss_db: float = MAX_LOSS_DB, min_fidelity_db: float = MIN_FIDELITY_DB) -> RouteVerdict:
    """The verdict from ``numbers`` (as :func:`measure` returns them).

    With ``loss_db`` the route passes when loss_db <= ``max_loss_db`` (default 0.3 dB, the
    project's limit, docs/int8.md); without, when fidelity_db >= ``min_fidelity_db`` (default
    40 dB). Returns a :class:`RouteVerdict` whose ``reason`` states the figure and the limit.
    """
    if numbers.get("loss_db") is not None:
        loss = numbers["loss_db"]
        passed = loss <= max_loss_db
        reason = (f"INT8 loses {loss:.2f} dB vs clean (limit {max_loss_db} dB)" if not passed
                  else f"INT8 loses {loss:.2f} dB vs clean (≤ {max_loss_db} dB)")
        rule = "vs-clean"
    else:
        fid = numbers["fidelity_db"]
        passed = fid >= min_fidelity_db
        reason = (f"INT8 output is {fid:.1f} dB from fp32 (need ≥ {min_fidelity_db} dB; no clean references)"
                  if not passed else f"INT8 output is {fid:.1f} dB from fp32 (≥ {min_fidelity_db} dB)")
        rule = "fidelity"
    return RouteVerdict(route=route, flavour=flavour, rule=rule, fidelity_db=numbers["fidelity_db"],
                        psnr_fp32=numbers.get("psnr_fp32"), psnr_int8=numbers.get("psnr_int8"),
                        loss_db=numbers.get("loss_db"), passed=passed, reason=reason, frames=n_frames)


def gate_route(route: str, flavour: str, fp32: Runner, int8: Runner, frames,
               max_loss_db: float = MAX_LOSS_DB, min_fidelity_db: float = MIN_FIDELITY_DB,
               fp32_outputs: Optional[List[np.ndarray]] = None) -> RouteVerdict:
    """Run both models on the held-out ``frames`` and judge the INT8 one.

    ``fp32`` and ``int8`` map a (1, 1, H, W) float32 batch in [0, 1] to the restored batch;
    ``fp32_outputs`` reuses outputs computed before.
    """
    ref = fp32_outputs if fp32_outputs is not None else held_out_outputs(fp32, frames)
    got = held_out_outputs(int8, frames)
    return judge(route, flavour, measure(ref, got, frames), len(frames), max_loss_db, min_fidelity_db)


def _loss(numbers: Mapping[str, float], min_fidelity_db: float) -> float:
    """A single 'dB lost' figure for either rule (fidelity: shortfall below the floor)."""
    if numbers.get("loss_db") is not None:
        return numbers["loss_db"]
    return min_fidelity_db - numbers["fidelity_db"]


def find_fp16_layers(fp32_path, ranges, frames, work_dir, candidates: Sequence[str],
                     max_loss_db: float = MAX_LOSS_DB, min_fidelity_db: float = MIN_FIDELITY_DB,
                     max_layers: int = 8, fp32_outputs: Optional[List[np.ndarray]] = None,
                     progress: bool = False, qdq_options: Optional[dict] = None):
    """Greedy search for TensorRT layers to keep in FP16 until the route passes.

    Sensitivity of a layer = how close to fp32 the model gets when only that layer is excluded
    from INT8 (fidelity, stable even when the clean-reference loss is noisy). Layers are
    excluded in that order, at most ``max_layers``; ``qdq_options`` go to ``write_trt_qdq``.
    ``frames`` is a :class:`~tir.calibration.data.CalibrationSet` of (H, W) float32 frames in
    [0, 1]; each candidate Q/DQ model is written under ``work_dir`` and run on ONNX Runtime (CPU).

    Returns:
        (layers, numbers, passed, path of the mixed Q/DQ ONNX); ``numbers`` as :func:`measure`
        returns them (dB).
    """
    from tir.engines.backends.onnxruntime import ort_session

    from .qdq import write_trt_qdq

    ref = fp32_outputs if fp32_outputs is not None else held_out_outputs(
        _session_runner(ort_session(os.fspath(fp32_path))), frames)

    def evaluate(excluded: Sequence[str], tag: str):
        path = os.path.join(os.fspath(work_dir), f"{tag}.onnx")
        write_trt_qdq(fp32_path, ranges, path, exclude_nodes=excluded, **(qdq_options or {}))
        outs = held_out_outputs(_session_runner(ort_session(path)), frames)
        return measure(ref, outs, frames), path

    def ok(numbers) -> bool:
        if numbers.get("loss_db") is not None:
            return numbers["loss_db"] <= max_loss_db
        return numbers["fidelity_db"] >= min_fidelity_db

    items = list(candidates)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="layer sensitivity", unit="layer")
    sensitivity = []
    for j, name in enumerate(items):
        numbers, _ = evaluate([name], f"sens_{j}")
        sensitivity.append((-numbers["fidelity_db"], name))  # closest to fp32 when excluded = most sensitive
    sensitivity.sort()
    excluded: List[str] = []
    numbers, path = None, None
    for _, name in sensitivity[:max_layers]:
        excluded.append(name)
        numbers, path = evaluate(excluded, "mixed")
        if ok(numbers):
            return excluded, numbers, True, path
    return excluded, numbers, False, path


def _session_runner(sess) -> Runner:
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]


def format_table(verdicts: Sequence[RouteVerdict]) -> str:
    """The verdicts as an aligned text table: route, flavour, rule, PSNR figures in dB and the verdict."""
    width = max([12] + [len(v.route) for v in verdicts])  # student/<task> rows are wider than route names
    head = (f"{'route':<{width}} {'flavour':<10} {'rule':<9} {'fp32 dB':>8} {'int8 dB':>8} {'loss dB':>8} "
            f"{'vs fp32':>8}  verdict")
    lines = [head, "-" * len(head)]

    def f(v):
        return "" if v is None else f"{v:8.2f}"

    for v in verdicts:
        verdict = "PASS" if v.passed else "REFUSED"
        if not v.passed and v.fp16_layers:
            verdict += (f"; with FP16 layers {', '.join(v.fp16_layers)}: "
                        f"{'passes' if v.mixed_passed else 'still fails'}"
                        + (f" ({v.mixed_loss_db:.2f} dB)" if v.mixed_loss_db is not None else ""))
        lines.append(f"{v.route:<{width}} {v.flavour:<10} {v.rule:<9} {f(v.psnr_fp32):>8} {f(v.psnr_int8):>8} "
                     f"{f(v.loss_db):>8} {v.fidelity_db:8.2f}  {verdict}")
    return "\n".join(lines)
