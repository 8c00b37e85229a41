"""PyTorch → ONNX export with a numerical parity check and a TensorRT operator audit.

One ONNX file (opset 17, input ``input``, output ``output``, dynamic batch/H/W) serves
TensorRT 8.5 (JetPack 5), TensorRT 10.x (JetPack 6) and ONNX Runtime everywhere else:
TRT 8.5's parser supports opsets ≤ 17, TRT 10.0/10.1 opsets 9–20 (onnx-tensorrt
``docs/operators.md``, branches 8.5-GA / 10.1-GA; see ../shared/reference/tensorrt_int8.md §6).

The audit names the offending node, e.g.::

    node /blocks.0/Foo (GroupNormalization) is not supported by the TensorRT 8.5 parser: ...
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..backends.onnxruntime import ort_session

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17
TRT_TARGETS = ("8.5", "10")

# Operators the TensorRT ONNX parser imports (onnx-tensorrt docs/operators.md, "Y" rows of
# the 8.4/8.5-GA matrix; ops the TorchScript exporter does not emit for our models are left
# out on purpose: a false refusal is a clear message, a false acceptance is a failed build
# on the device).
_TRT_COMMON_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GRU HardSigmoid Identity If ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log
LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg Not Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where Xor
""".split())
# TRT 10.x adds (10.1-GA operators.md): native LayerNormalization (opset 17), GroupNormalization
# (opset 18), HardSwish, Reciprocal, Mod, NonZero, OneHot, RoiAlign, Trilu, Gelu (opset 20).
_TRT10_EXTRA_OPS = frozenset(
    "LayerNormalization GroupNormalization HardSwish Reciprocal Mod NonZero OneHot RoiAlign Trilu "
    "Gelu IsInf Shrink Hardmax".split()
)
TRT_SUPPORTED_OPS: Dict[str, frozenset] = {
    "8.5": _TRT_COMMON_OPS,
    "10": _TRT_COMMON_OPS | _TRT10_EXTRA_OPS,
}
TRT_MAX_OPSET = {"8.5": 17, "10": 20}

# Why an op is refused, where we know more than "not in the matrix".
_REASONS = {
    "GroupNormalization": "it is an opset-18 op (TRT 8.5 parses opset ≤ 17) and ONNX GroupNormalization-18 "
    "takes per-group scale/bias; export GroupNorm at opset 17 so the TorchScript exporter decomposes it "
    "(Reshape → InstanceNormalization → Reshape → Mul → Add)",
    "LayerNormalization": "TRT 8.5 has no native LayerNormalization importer; use a channel-wise "
    "ReduceMean/Sub/Pow decomposition or target TRT 10",
    "Gelu": "the Gelu op needs opset 20; at opset 17 nn.GELU exports as Erf, which both parsers accept",
}
_WARNINGS = {
    "InstanceNormalization": "TensorRT 8.5 imports InstanceNormalization as the InstanceNormalization_TRT "
    "plugin: the builder must call trt.init_libnvinfer_plugins(logger, '') (trt_build.py does); "
    "scale/bias must be initializers",
    "Resize": "TensorRT supports Resize modes nearest/linear only (no cubic)",
    "Loop": "control flow blocks CUDA-graph capture and slows TensorRT",
    "If": "control flow blocks CUDA-graph capture and slows TensorRT",
}


class ExportError(RuntimeError):
    """Export failed, parity was exceeded or the graph will not parse on TensorRT."""


@dataclass
class AuditResult:
    """What :func:`audit_onnx` found.

    Attributes:
        ops: ONNX op type -> number of nodes.
        errors: reasons the graph will not parse on a TensorRT target (empty: it will).
        warnings: things that parse but may be slow or lossy.
    """
    ops: Counter
    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the audit found no error."""
        return not self.errors


@dataclass
class ExportReport:
    """What an ONNX export wrote and how it was checked.

    Attributes:
        path: the ONNX file.
        max_abs_err: worst |torch − ONNX Runtime| over the checked shapes (float32 output in
            [0, 1] units; 0.0 when parity was not checked).
        ops: ONNX op type -> number of nodes.
        warnings: the audit's warnings.
        checked_shapes: (N, 1, H, W) input shapes the parity check ran on.
    """
    path: str
    max_abs_err: float
    ops: Counter
    warnings: List[str] = field(default_factory=list)
    checked_shapes: List[Tuple[int, ...]] = field(default_factory=list)


def _initializer_like(model, name: str, producers: dict) -> bool:
    """True if tensor ``name`` is an initializer or Constant, possibly behind Q/DQ nodes."""
    inits = {i.name for i in model.graph.initializer}
    if name in inits:
        return True
    node = producers.get(name)
    if node is None:
        return False
    if node.op_type in ("Constant", "Identity"):
        return node.op_type == "Constant" or _initializer_like(model, node.input[0], producers)
    if node.op_type in ("DequantizeLinear", "QuantizeLinear"):  # int8 weights, or QAT-style Q→DQ
        return _initializer_like(model, node.input[0], producers)
    return False


def _constant_values(model, name: str, producers: dict) -> Optional[np.ndarray]:
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for attr in node.attribute:
            if attr.name == "value":
                return numpy_helper.to_array(attr.t)
    return None


def _check_qdq(model, node, producers, label: str, errors: List[str]) -> None:
    """TensorRT Q/DQ rules (tensorrt_int8.md §1.3): INT8, zero point 0, positive scales, 3 inputs."""
    if node.op_type == "DequantizeLinear" and len(node.input) < 3:
        errors.append(
            f"{label} has {len(node.input)} inputs: the TensorRT 8.5 importer requires 3 "
            "(give it an explicit INT8 zero-point tensor)"
        )
    if len(node.input) >= 3 and node.input[2]:
        zp = _constant_values(model, node.input[2], producers)
        if zp is None:
            errors.append(f"{label}: zero point must be a constant for TensorRT")
        else:
            if zp.dtype != np.int8:
                errors.append(f"{label}: zero point is {zp.dtype}, TensorRT needs INT8 (UINT8 is rejected)")
            if np.any(zp != 0):
                errors.append(f"{label}: zero point must be 0 (TensorRT quantization is symmetric)")
    scale = _constant_values(model, node.input[1], producers) if len(node.input) > 1 else None
    if scale is None:
        errors.append(f"{label}: scale must be a constant for TensorRT")
    elif np.any(scale <= 0):
        errors.append(f"{label}: scale coefficients must all be positive")


def audit_onnx(model_or_path, targets: Sequence[str] = TRT_TARGETS) -> AuditResult:
    """Check a model against the TensorRT ONNX parsers of ``targets`` ("8.5", "10").

    Raises:
        ValueError: a target is not a known TensorRT version.
    """
    import onnx

    model = onnx.load(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    for t in targets:
        if t not in TRT_SUPPORTED_OPS:
            raise ValueError(f"unknown TensorRT target {t!r}; known: {sorted(TRT_SUPPORTED_OPS)}")
    ops = Counter(n.op_type for n in model.graph.node)
    result = AuditResult(ops=ops)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    for t in targets:
        if opset is not None and opset > TRT_MAX_OPSET[t]:
            result.errors.append(
                f"model opset {opset} is above what the TensorRT {t} parser supports ({TRT_MAX_OPSET[t]}); "
                f"export with opset_version={DEFAULT_OPSET}"
            )
    producers = {out: n for n in model.graph.node for out in n.output}
    warned = set()
    for i, node in enumerate(model.graph.node):
        label = f"node {node.name or f'#{i}'} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            result.errors.append(f"{label} is in custom domain {node.domain!r}: no TensorRT importer")
            continue
        for t in targets:
            if node.op_type not in TRT_SUPPORTED_OPS[t]:
                why = _REASONS.get(node.op_type, "it is not in the parser's operator support matrix")
                result.errors.append(f"{label} is not supported by the TensorRT {t} parser: {why}")
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            if not _initializer_like(model, node.input[1], producers):
                result.errors.append(f"{label}: weights {node.input[1]!r} must be an initializer for TensorRT")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            _check_qdq(model, node, producers, label, result.errors)
        if node.op_type == "Resize":
            mode = next((a.s.decode() for a in node.attribute if a.name == "mode"), "nearest")
            if mode not in ("nearest", "linear"):
                result.errors.append(f"{label}: Resize mode {mode!r} is not supported by TensorRT")
        if node.op_type in _WARNINGS and node.op_type not in warned:
            warned.add(node.op_type)
            result.warnings.append(f"{node.op_type} ({ops[node.op_type]}×): {_WARNINGS[node.op_type]}")
    return result


def set_metadata(model, metadata: Optional[Dict[str, object]]) -> None:
    """Write ``metadata`` into ``model.metadata_props`` (values as strings), replacing keys."""
    if not metadata:
        return
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            prop = model.metadata_props.add()
            prop.key, prop.value = str(key), str(value)


def read_metadata(model_or_path) -> Dict[str, str]:
    """The ONNX model's metadata_props (``tir.*`` keys ...) as a dict; from a model or a file path."""
    import onnx

    model = onnx.load(model_or_path) if isinstance(model_or_path, (str, os.PathLike)) else model_or_path
    return {p.key: p.value for p in model.metadata_props}


def parity_error(module, onnx_path: str, shapes: Iterable[Tuple[int, ...]], seed: int = 0) -> float:
    """Max abs difference between torch (fp32, eval) and ONNX Runtime CPU over ``shapes``.

    Args:
        module: the torch module (evaluated in fp32, eval mode).
        onnx_path: the exported ONNX file.
        shapes: (N, 1, H, W) input shapes; inputs are uniform float32 in [0, 1] from ``seed``.
        seed: the inputs' seed.

    Returns:
        the largest absolute difference, in output units.

    Raises:
        ExportError: the ONNX output shape differs from torch's.
    """
    import torch

    sess = ort_session(onnx_path)
    in_name = sess.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    worst = 0.0
    with torch.no_grad():
        for shape in shapes:
            x = rng.random(shape, dtype=np.float32)
            ref = module(torch.from_numpy(x)).detach().cpu().numpy()
            got = sess.run(None, {in_name: x})[0]
            if ref.shape != got.shape:
                raise ExportError(f"{onnx_path}: ONNX output shape {got.shape} != torch {ref.shape} for input {shape}")
            worst = max(worst, float(np.max(np.abs(ref.astype(np.float32) - got))))
    return worst


def export_onnx(
    module,
    path,
    input_shape: Tuple[int, int, int, int] = (1, 1, 64, 64),
    dynamic_hw: bool = True,
    opset: int = DEFAULT_OPSET,
    check_parity: bool = True,
    audit: bool = True,
    metadata: Optional[Dict[str, object]] = None,
    tolerance: float = 1e-4,
    targets: Sequence[str] = TRT_TARGETS,
) -> ExportReport:
    """Export ``module`` to ``path``; verify it numerically and against the TensorRT parsers.

    Raises :class:`ExportError` when parity exceeds ``tolerance`` or the audit finds a node
    TensorRT cannot parse (the file is still written so it can be inspected).
    """
    import onnx
    import torch

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    was_training = module.training
    module.eval()
    try:
        dummy = torch.zeros(input_shape, dtype=torch.float32)
        axes = {0: "batch"}
        if dynamic_hw:
            axes.update({2: "height", 3: "width"})
        with warnings.catch_warnings():
            # the TorchScript exporter is deprecated in favour of dynamo, but dynamo emits
            # opset ≥ 18 constructs; TensorRT 8.5 needs opset 17 (tensorrt_int8.md §6)
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                dummy,
                path,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: dict(axes)},
                do_constant_folding=True,
            )
        model = onnx.load(path)
        set_metadata(model, metadata)
        onnx.checker.check_model(model)
        onnx.save(model, path)

        report = ExportReport(path=path, max_abs_err=0.0, ops=Counter(n.op_type for n in model.graph.node))
        if audit:
            result = audit_onnx(model, targets)
            report.warnings.extend(result.warnings)
            if result.errors:
                raise ExportError(f"{path}: " + "; ".join(result.errors))
        if check_parity:
            n, c, h, w = input_shape
            shapes = [tuple(input_shape)]
            if dynamic_hw:
                shapes.append((n, c, 2 * h, 2 * w))  # stays a multiple of whatever h, w were
            report.checked_shapes = shapes
            report.max_abs_err = parity_error(module, path, shapes)
            if not report.max_abs_err <= tolerance:
                raise ExportError(
                    f"{path}: ONNX Runtime differs from torch by {report.max_abs_err:.3g} "
                    f"(> tolerance {tolerance:g}) on inputs {shapes}"
                )
        return report
    finally:
        module.train(was_training)
