"""ONNX Runtime backend: the same ONNX file on CPU, CUDA, or any provider ORT offers.

The spatial multiple a model needs is read from the ONNX metadata key ``tir.multiple``
(:data:`tir.engines.engine.MULTIPLE_KEY`, written by every exporter); foreign models without
it get :data:`DEFAULT_MULTIPLE` = 4, the pixel-unshuffle ×4 of the reference design.
Height and width are dynamic: any frame size runs, padded by :class:`Engine`.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from ..engine import DEFAULT_MULTIPLE, MULTIPLE_KEY, Engine, EngineError, read_multiple  # noqa: F401

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


def available_providers() -> List[str]:
    """The execution providers this ONNX Runtime build offers (``ort.get_available_providers()``)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_providers(providers: Union[None, str, Sequence[str]] = None) -> List[str]:
    """``None``/``"auto"`` -> CUDA then CPU where CUDA exists, else CPU; names or aliases
    (``cpu``, ``cuda``, ``tensorrt``, ``openvino``, ``coreml``; comma-separated allowed) are
    checked against what ORT offers.

    Raises:
        EngineError: a provider this ONNX Runtime does not offer (the message lists those it does).
    """
    have = available_providers()
    if providers is None or providers == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []) + ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p for p in providers.split(",") if p.strip()]
    chosen = []
    for p in providers:
        name = _PROVIDER_ALIASES.get(p.strip().lower(), p.strip())
        if name not in have:
            raise EngineError(
                f"ONNX Runtime provider {p!r} is not available here; available: {', '.join(have)} "
                "(CUDA needs the onnxruntime-gpu package, on a Jetson the JetPack wheel)"
            )
        chosen.append(name)
    return chosen


#: ONNX ops that mark a quantised (QDQ or QOperator) model
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"})


def is_quantized(path) -> bool:
    """True when the ONNX model at ``path`` holds quantisation nodes (an INT8 model from
    ``tir calibrate``). The runtime does not depend on the ``onnx`` package, so this looks for
    the op-type strings in the serialised graph (protobuf stores them as plain bytes)."""
    pattern = [op.encode() for op in _QUANT_OPS]
    tail = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return False
            window = tail + chunk
            if any(p in window for p in pattern):
                return True
            tail = window[-32:]


#: ONNX metadata keys :func:`tir.calibration.qdq.stamp_int8_cpu` writes into a CPU INT8 model
INT8_ACTIVATIONS_KEY = "tir.int8.activations"
INT8_WEIGHT_BITS_KEY = "tir.int8.weight_bits"
INT8_CPU_KEY = "tir.int8.calibrated_cpu"


def int8_cpu_problem(metadata, cpu=None) -> Optional[str]:
    """Why this CPU would run the INT8 model whose ONNX metadata is ``metadata`` (a dict of
    strings) wrongly, or None when it runs as calibrated.

    The one known case: uint8 activations with full 8-bit weights (``tir.int8.weight_bits`` "8",
    written only by ``tir calibrate --no-reduce-range``: 7-bit weights are the default on every CPU) on a CPU whose
    U8S8 kernel sums pairs of products in saturating int16 (``cpu.saturating``: x86 AVX2 without
    VNNI, :func:`tir.edge.machine.int8_cpu_features`; default this CPU). Such models lost
    0.7-1.4 dB on an AVX2 EPYC (docs/int8.md "Why blur, noise and BN failed the gate"),
    2-5x the 0.3 dB gate. Models without the keys (older or foreign) are not judged.
    """
    if metadata.get(INT8_ACTIVATIONS_KEY) != "uint8" or metadata.get(INT8_WEIGHT_BITS_KEY) != "8":
        return None
    if cpu is None:
        from ...edge.machine import int8_cpu_features

        cpu = int8_cpu_features()
    if not cpu.saturating:
        return None
    return (f"INT8 model with uint8 activations and full 8-bit weights (calibrated on "
            f"{metadata.get(INT8_CPU_KEY, 'an unrecorded CPU')}), but this CPU ({cpu.arch}, "
            f"{' '.join(cpu.flags) or 'no flags read'}) has no VNNI: ONNX Runtime's u8 x s8 kernel sums pairs of "
            "products in saturating int16 here and such models lost 0.7-1.4 dB (docs/int8.md), over the 0.3 dB "
            "gate; recalibrate on this CPU or with `tir calibrate --reduce-range` (7-bit weights, same speed), "
            "or run the fp32 model")


def optimization_level(path, quantized: Optional[bool] = None, cpu=None):
    """The ORT graph optimisation level for the model at ``path``, chosen per precision and CPU
    by measurement: fp32 models get ``ORT_ENABLE_ALL`` (its NCHWc layout transform is what makes
    the dense convs fast, docs/BENCHMARKS.md "Roofline"); INT8 QDQ models ``ORT_ENABLE_ALL`` on an
    x86 CPU with VNNI or AVX2 (``cpu.vnni``, ``cpu.flags``, :func:`tir.edge.machine.int8_cpu_features`,
    default this CPU) and ``ORT_ENABLE_EXTENDED`` elsewhere (not measured). With VNNI, ALL was 0-5 %
    faster than EXTENDED on the U8S8 routes and the dense-conv reference (docs/int8.md "VNNI"). On
    the AVX2 EPYC (Zen 3) ALL was 18-19 % slower on the graphs of issue 11 (the layout optimiser
    added reorders around the integer convs); on today's integer-form graphs with ONNX Runtime 1.32
    it is 13-15 % faster there (the U8S8 student and four routes, fp32/INT8 ratios at 1 and 2
    threads, docs/int8.md "Session 23")."""
    import onnxruntime as ort

    if quantized is None:
        quantized = is_quantized(path)
    if not quantized:
        return ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if cpu is None:
        from ...edge.machine import int8_cpu_features

        cpu = int8_cpu_features()
    measured = cpu.vnni or "avx2" in cpu.flags
    return ort.GraphOptimizationLevel.ORT_ENABLE_ALL if measured else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


def session_options(path, threads: Optional[int] = None, spinning: bool = False):
    """The ``SessionOptions`` every tir ORT session uses: optimisation level by
    :func:`optimization_level`, ``threads`` intra-op threads (None: ORT's default) and one
    inter-op thread, spinning off unless asked for (see :class:`ONNXRuntimeEngine`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = optimization_level(path)
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def ort_session(path: str, threads: int = 1):
    """A plain CPU ``onnxruntime.InferenceSession`` of the ONNX file at ``path``: ``threads``
    intra-op threads, one inter-op thread, ORT's default graph optimisation. The reference
    session of the export parity check, the INT8 gate (tir.calibration.gate) and ``tir
    export``/``tir calibrate``; errors are onnxruntime's own (a missing or broken file)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class ONNXRuntimeEngine(Engine):
    """One ONNX model in an ``onnxruntime.InferenceSession``.

    ``threads`` sets the intra-op pool (None: ORT's default, one per physical core).
    ``spinning`` (ORT's ``session.intra_op.allow_spinning``) lets idle pool threads
    busy-wait for work. ORT turns it on by default; here it is off unless asked for:
    in a pipeline the spinning threads take the CPU the other stages need, and on a
    shared or small machine that costs far more than the wake-up it saves
    (docs/pipeline-bench.md has the measurement).

    Raises:
        EngineError: the file does not exist or ORT cannot load it, a provider is not available,
            the model has not exactly one input and one output, its ``tir.multiple`` metadata
            is not a positive integer, or it is an INT8 model this CPU would run wrongly
            (:func:`int8_cpu_problem`: full 8-bit weights on a CPU without VNNI).
    """

    backend = "onnxruntime"

    def __init__(self, path, providers=None, threads: Optional[int] = None,
                 spinning: bool = False, name: Optional[str] = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"ONNX model {str(path)!r} does not exist")
        super().__init__(name or path.stem)
        self.path = path
        self.providers = resolve_providers(providers)
        try:
            options = session_options(path, threads, spinning)
        except Exception as exc:  # onnx raises DecodeError & co. for a file that is not a model
            raise EngineError(f"ONNX Runtime cannot load {str(path)!r}: {exc}") from exc
        self.spinning = bool(spinning)
        self.threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise EngineError(f"ONNX Runtime cannot load {str(path)!r}: {exc}") from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(
                f"{path.name}: expected one input and one output, got "
                f"{[i.name for i in inputs]} -> {[o.name for o in outputs]}"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self._input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self._output_shape = tuple(d if isinstance(d, int) else None for d in outputs[0].shape)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.multiple = read_multiple(self.metadata, where=path.name)
        problem = int8_cpu_problem(self.metadata) if self.provider == "CPUExecutionProvider" else None
        if problem:
            raise EngineError(f"{path.name}: {problem}")

    @property
    def input_shape(self):
        """The ONNX input's shape, e.g. (None, 1, None, None): ``None`` for dynamic (symbolic) axes."""
        return self._input_shape

    @property
    def output_shape(self):
        """The ONNX output's shape, ``None`` for dynamic (symbolic) axes."""
        return self._output_shape

    @property
    def provider(self) -> str:
        """The provider that actually runs the model (the first one ORT accepted)."""
        return self.session.get_providers()[0]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def __repr__(self) -> str:
        return f"<ONNXRuntimeEngine {self.name} on {self.provider}>"
