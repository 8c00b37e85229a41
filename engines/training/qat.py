"""Quantisation-aware fine-tuning (QAT) of the distilled student from its ONNX graph (issue #11).

The shipped student exists only as ONNX (``student.onnx``, convolutions folded; no torch
checkpoint survives), so the graph itself is loaded into torch (onnx2torch, plus the
``SpaceToDepth`` converter it lacks), fake-quantised where ONNX Runtime's CPU QDQ model
quantises it, fine-tuned against the unquantised student's own output (self-distillation) and
written back into a copy of ``student.onnx`` by initialiser name.

Where it quantises: exactly the tensors the project's own CPU model quantises. A first
:func:`tir.calibration.qdq.quantize_cpu` pass (PTQ ranges) is read back: every
``QuantizeLinear`` whose input is a float tensor of the original graph gives that tensor's
uint8 scale and zero point (the initial values), and every Conv / ConvTranspose whose weight
the QDQ model quantises gets per-channel symmetric int8 weights (``reduce_range``: [-64, 64],
scale = max|w| / 64; else [-127, 127], scale = max|w| / 127; onnxruntime.quantization.quant_utils
``compute_scale_zp`` with ``ONNX_INT_TYPE_REDUCED_RANGE`` / ``..._SYMMETRIC_RANGE``). A
ConvTranspose (k = stride) is quantised per (output channel, tap), the channels of the 1×1 conv
:mod:`tir.calibration.integer_form` rewrites it into.

Activations: uint8 asymmetric, r = s (q − z), with learned range ends (lo, hi) (LSQ, Esser et
al. 2020, "Learned Step Size Quantization", ICLR; learned offset as LSQ+, Bhalgat et al. 2020),
s = (hi − lo) / 255, z = round(−lo / s), the straight-through estimator for the rounding.
The learned ranges are what :func:`learned_ranges` hands to ``quantize_cpu``.

Training only (torch); nothing under edge/ or the engines' runtime imports this module.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import fx, nn

#: ONNX Runtime's int8 weight range: reduce_range (7-bit) and full symmetric
WEIGHT_QMAX = {True: 64.0, False: 127.0}


def _register_space_to_depth() -> None:
    """Teach onnx2torch ONNX ``SpaceToDepth`` (opsets 1 and 13), which it lacks.

    ONNX definition: output (N, C·b², H/b, W/b), channel (i·b + j)·C + c holds input channel c
    at pixel (b·h + i, b·w + j)."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node

    if any(d.operation_type == "SpaceToDepth" for d in _CONVERTER_REGISTRY if isinstance(d, OperationDescription)):
        return

    class SpaceToDepth(nn.Module, OnnxToTorchModule):
        """ONNX SpaceToDepth with block ``b`` on an (N, C, H, W) tensor (H, W multiples of b)."""

        def __init__(self, blocksize: int):
            super().__init__()
            self.b = int(blocksize)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            b = self.b
            y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
            return y.reshape(n, b * b * c, h // b, w // b)

    def convert(node, graph):
        del graph
        return OperationConverterResult(torch_module=SpaceToDepth(node.attributes["blocksize"]),
                                        onnx_mapping=onnx_mapping_from_node(node=node))

    for version in (1, 13):
        add_converter(operation_type="SpaceToDepth", version=version)(convert)


def load_onnx(path) -> fx.GraphModule:
    """The ONNX model at ``path`` as a torch ``fx.GraphModule`` (float32, eval mode); every
    converted node module carries ``onnx_mapping`` (its ONNX input and output tensor names)
    and ``onnx_inputs`` (all of its ONNX node's inputs, initialisers included).
    Inputs in the ONNX graph's order (the student: ``input`` (N, 1, H, W), ``prompt`` (N, K)).

    Raises:
        NotImplementedError: raised by onnx2torch's ``convert`` for an ONNX op it has no
            converter for (SpaceToDepth is registered here, :func:`_register_space_to_depth`).
    """
    import onnx
    from onnx2torch import convert

    _register_space_to_depth()
    model = onnx.load(os.fspath(path))
    gm = convert(model, attach_onnx_mapping=True).float().eval()
    by_output = {n.output[0]: n for n in model.graph.node if n.output}
    for mod in gm.modules():
        m = _mapping(mod)
        if m is not None and len(m.outputs) and m.outputs[0] in by_output:
            mod.onnx_inputs = tuple(by_output[m.outputs[0]].input)  # with the initialiser names
    return gm


@dataclass
class QdqPlan:
    """What the CPU QDQ model quantises, read back from it (:func:`qdq_plan`).

    ``activations``: float tensor name of the original graph → (scale, zero point) of its
    uint8 QuantizeLinear. ``weights``: initialiser names of the Conv / ConvTranspose weights
    it quantises. ``unmatched``: QuantizeLinear inputs that are not tensors of the original
    graph (created by the integer-form rewrites; they permute a matched tensor). ``float_reads``:
    quantised tensor name → the output tensor names of the nodes that read it directly, not
    through its DequantizeLinear (float nodes given the float value,
    :func:`tir.calibration.qdq.read_float`: the student's image-level skip)."""
    activations: Dict[str, Tuple[float, int]]
    weights: List[str]
    unmatched: List[str]
    float_reads: Dict[str, List[str]] = field(default_factory=dict)


def qdq_plan(fp32_path, qdq_path) -> QdqPlan:
    """Read the uint8 activation Q/DQ and the quantised weights of the CPU QDQ model at
    ``qdq_path`` (written by :func:`tir.calibration.qdq.quantize_cpu` from ``fp32_path``)."""
    import onnx
    from onnx import numpy_helper

    src = onnx.load(os.fspath(fp32_path))
    names = {i.name for i in src.graph.input} | {o for n in src.graph.node for o in n.output}
    weights_src = {i.name for i in src.graph.initializer}
    q = onnx.load(os.fspath(qdq_path))
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    acts, unmatched, wts = {}, [], []
    for node in q.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        x = node.input[0]
        zp = init.get(node.input[2]) if len(node.input) > 2 else None
        if x in weights_src:
            wts.append(x)
            continue
        if zp is None or zp.dtype != np.uint8:
            continue
        if x not in names and x.endswith("_QuantizeLinear_Input") and x[:-len("_QuantizeLinear_Input")] in names:
            x = x[:-len("_QuantizeLinear_Input")]  # a graph output: ONNX Runtime renames its producer's tensor
        if x in names:
            acts[x] = (float(init[node.input[1]]), int(zp))
        else:
            unmatched.append(x)
    for node in q.graph.node:  # weights stored already quantised: DequantizeLinear of an int8 initialiser
        if node.op_type == "DequantizeLinear" and node.input[0] in init and init[node.input[0]].dtype == np.int8:
            base = node.input[0]
            for suffix in ("_quantized", "_TransposeInt8"):
                base = base.replace(suffix, "")
            if base.endswith("_as_conv_w"):  # integer_form's 1x1 conv from a ConvTranspose node
                node_src = next((n for n in src.graph.node if n.name == base[:-len("_as_conv_w")]), None)
                base = node_src.input[1] if node_src is not None and node_src.op_type == "ConvTranspose" else base
            if base in weights_src:
                wts.append(base)
    float_reads = {}
    for node in q.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for x in node.input:
            if x in acts:
                float_reads.setdefault(x, []).extend(node.output)
    return QdqPlan(acts, sorted(set(wts)), unmatched, float_reads)


class ActFakeQuant(nn.Module):
    """uint8 asymmetric fake quantisation with learned range ends (LSQ/LSQ+, module docstring).

    Initialised from ONNX Runtime's (scale, zero point): lo = −s·z, hi = s·(255 − z). Input
    and output: any float32 tensor."""

    def __init__(self, scale: float, zero_point: int):
        super().__init__()
        self.lo = nn.Parameter(torch.tensor(-scale * zero_point, dtype=torch.float32))
        self.hi = nn.Parameter(torch.tensor(scale * (255 - zero_point), dtype=torch.float32))
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the uint8 grid of [lo, hi] (any shape, float32; unchanged when disabled)."""
        if not self.enabled:
            return x
        lo = torch.clamp(self.lo, max=0.0)
        hi = torch.clamp(self.hi, min=0.0)
        s = torch.clamp((hi - lo) / 255.0, min=1e-8)
        z = lo / s
        z = torch.clamp(-(z + (torch.round(z) - z).detach()), 0.0, 255.0)  # round with STE
        g = 1.0 / float(np.sqrt(max(x.numel() // (x.shape[0] if x.dim() else 1), 1) * 255.0))  # LSQ gradient scale
        s = s * g + (s - s * g).detach()
        v = x / s + z
        q = torch.clamp(v + (torch.round(v) - v).detach(), 0.0, 255.0)
        return (q - z) * s

    def range(self) -> Tuple[float, float]:
        """(lo, hi) in float units, lo ≤ 0 ≤ hi."""
        return min(float(self.lo.detach()), 0.0), max(float(self.hi.detach()), 0.0)


def fake_quant_weight(w: torch.Tensor, axes: Tuple[int, ...], reduce_range: bool) -> torch.Tensor:
    """Per-channel symmetric int8 fake quantisation of ``w``: channels are the indices along
    ``axes`` (max |w| over the other axes), q ∈ [−Q, Q], Q = :data:`WEIGHT_QMAX`, STE rounding."""
    qmax = WEIGHT_QMAX[bool(reduce_range)]
    other = tuple(d for d in range(w.dim()) if d not in axes)
    amax = w.detach().abs().amax(dim=other, keepdim=True).clamp(min=1e-12)
    s = amax / qmax
    v = w / s
    q = torch.clamp(v + (torch.round(v) - v).detach(), -qmax, qmax)
    return q * s


class QatConv(nn.Module):
    """A converted Conv2d / ConvTranspose2d with fake-quantised weights (per output channel;
    ConvTranspose: per output channel and kernel tap). Same call signature as the wrapped module."""

    def __init__(self, conv: nn.Module, reduce_range: bool):
        super().__init__()
        self.conv, self.reduce_range, self.enabled = conv, reduce_range, True
        self.onnx_mapping = getattr(conv, "onnx_mapping", None)
        self.onnx_inputs = getattr(conv, "onnx_inputs", ())

    def forward(self, x):
        """The wrapped convolution of ``x`` ((N, C, H, W) float32) with fake-quantised weights."""
        c = self.conv
        if not self.enabled:
            return c(x)
        if isinstance(c, nn.ConvTranspose2d):
            w = fake_quant_weight(c.weight, (1, 2, 3), self.reduce_range)
            return nn.functional.conv_transpose2d(x, w, c.bias, c.stride, c.padding, c.output_padding, c.groups,
                                                  c.dilation)
        w = fake_quant_weight(c.weight, (0,), self.reduce_range)
        return c._conv_forward(x, w, c.bias)


def _mapping(module) -> Optional[object]:
    return getattr(module, "onnx_mapping", None)


def prepare_qat(gm: fx.GraphModule, plan: QdqPlan, reduce_range: bool = True,
                input_names: Iterable[str] = ("input",)) -> fx.GraphModule:
    """Insert :class:`ActFakeQuant` after every fx node (or graph input) whose ONNX tensor is in
    ``plan.activations`` (read by every consumer but those of ``plan.float_reads``, which keep the
    float value as in the QDQ model) and wrap every Conv / ConvTranspose whose weight is in
    ``plan.weights`` in :class:`QatConv`. Changes ``gm`` in place and returns it."""
    acts = nn.ModuleDict()
    gm.add_module("qat_acts", acts)
    graph_inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]   # torch.fx names a graph input's node op "placeholder"
    tensor_of = dict(zip(graph_inputs, input_names))
    for node in list(gm.graph.nodes):
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            m = _mapping(mod)
            if m is None:
                continue
            outs = list(m.outputs)
            if len(outs) == 1:
                tensor_of[node] = outs[0]
            inputs = getattr(mod, "onnx_inputs", ())
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)) and len(inputs) > 1 and inputs[1] in plan.weights:
                parent, _, leaf = node.target.rpartition(".")
                setattr(gm.get_submodule(parent) if parent else gm, leaf, QatConv(mod, reduce_range))
    for node, name in list(tensor_of.items()):
        if name not in plan.activations:
            continue
        key = f"a{len(acts)}"
        acts[key] = ActFakeQuant(*plan.activations[name])
        acts[key].tensor = name
        with gm.graph.inserting_after(node):
            fq = gm.graph.call_module(f"qat_acts.{key}", (node,))
        direct = set(plan.float_reads.get(name, ()))

        def quantised_reader(user, fq=fq, direct=direct):
            outs = set(getattr(_mapping(gm.get_submodule(user.target)), "outputs", ()) if user.op == "call_module" else ())
            return user is not fq and not (outs & direct)

        node.replace_all_uses_with(fq, delete_user_cb=quantised_reader)
    gm.graph.lint()
    gm.recompile()
    return gm


def set_quant(gm: nn.Module, enabled: bool) -> None:
    """Turn every fake quantiser of ``gm`` on or off (off: the float graph, same weights)."""
    for m in gm.modules():
        if isinstance(m, (ActFakeQuant, QatConv)):
            m.enabled = enabled


def learned_ranges(gm: nn.Module):
    """{tensor name: :class:`~tir.calibration.entropy.TensorRange`} from the learned (lo, hi)
    of every :class:`ActFakeQuant` (amax = max(|lo|, hi), so ``asymmetric()`` gives (lo, hi))."""
    from tir.calibration.entropy import TensorRange

    out = {}
    for m in gm.modules():
        if isinstance(m, ActFakeQuant):
            lo, hi = m.range()
            out[m.tensor] = TensorRange(amax=max(-lo, hi), min=lo, max=hi)
    return out


def write_back(gm: nn.Module, src_path, out_path, extra: Optional[Mapping[str, object]] = None) -> List[str]:
    """Copy ``src_path`` (ONNX) to ``out_path`` with every Conv / ConvTranspose weight and bias
    initialiser replaced, by name, with the module's current float32 values, and each initialiser
    named in ``extra`` ({name: tensor or array of its shape}) with those values (inputs, outputs,
    metadata and every other initialiser unchanged). Returns the initialiser names written.

    Raises:
        ValueError: an ``extra`` name that is no initialiser, or a written tensor's shape that
            differs from the initialiser's.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(os.fspath(src_path))
    by_name = {i.name: i for i in model.graph.initializer}
    written = []

    def replace(name: str, value) -> None:
        arr = (value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)).astype(np.float32)
        old = by_name[name]
        if tuple(old.dims) != arr.shape:
            raise ValueError(f"{name}: shape {arr.shape} != initialiser {tuple(old.dims)}")
        old.CopyFrom(numpy_helper.from_array(arr, name))
        written.append(name)

    for conv in gm.modules():
        if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)):
            continue
        inputs = getattr(conv, "onnx_inputs", ())
        for name, value in zip(list(inputs)[1:3], (conv.weight, conv.bias)):
            if value is None or name not in by_name or name in written:
                continue
            replace(name, value)
    for name, value in (extra or {}).items():
        if name not in by_name:
            raise ValueError(f"{src_path}: no initialiser {name!r}")
        replace(name, value)
    onnx.save(model, os.fspath(out_path))
    return written


def _crop_size(crop: int, h: int, w: int, multiple: int) -> int:
    side = min(int(crop), h, w)
    return max(multiple, side - side % multiple) if side >= multiple else side


def crop_loss(output: torch.Tensor, target: torch.Tensor, reference: Optional[torch.Tensor] = None):
    """The fine-tuning loss of :func:`finetune` for a batch of (N, 1, H, W) float32 crops:
    ``(loss, e_q)``, loss the batch mean of log10 of each crop's error, e_q (N,) each crop's
    mean squared difference of ``output`` (the fake-quantised student) and ``target`` (the
    unquantised student, no gradient).

    Without ``reference``: log10(e_q + 1e-10), −PSNR/10 per crop against the teacher. With
    ``reference`` (the crops' clean targets, the gate's references): log10(e_q + e_ref), both
    outputs clipped to [0, 1] as the gate clips them and e_ref the teacher's own squared error
    to the reference; that is the gate's loss, 10·log10((e_ref + e_q) / e_ref), up to a
    constant per crop, when the INT8 error is independent of the teacher's (docs/int8.md,
    "Session 17")."""
    if reference is None:
        e_q = torch.mean((output - target) ** 2, dim=(1, 2, 3))
        return torch.mean(torch.log10(e_q + 1e-10)), e_q
    target = target.clamp(0.0, 1.0)
    e_ref = torch.mean((target - reference) ** 2, dim=(1, 2, 3))
    e_q = torch.mean((output.clamp(0.0, 1.0) - target) ** 2, dim=(1, 2, 3))
    return torch.mean(torch.log10(e_q + e_ref + 1e-10)), e_q


def finetune(gm: fx.GraphModule, teacher: nn.Module, frames: List[np.ndarray], prompts: List[np.ndarray],
             steps: int, minutes: Optional[float] = None, batch: int = 8, crop: int = 192, multiple: int = 32,
             lr: float = 2e-5, range_lr: float = 2e-3, seed: int = 0, progress: bool = True,
             references: Optional[List[np.ndarray]] = None) -> dict:
    """Self-distillation QAT: minimise the mean over the batch of log10 of each crop's mean squared
    difference between ``gm`` (fake-quantised, :func:`prepare_qat`) and ``teacher`` (the
    unquantised student), i.e. −PSNR/10 per crop: every crop counts in dB, as the gate judges each
    prompt in dB, so the prompts whose INT8 error is smallest in absolute terms (clean, blur)
    are not outweighed by those whose error is largest (contrast: the clipped out-of-range
    pixels); on random ``crop``-pixel
    square crops (a multiple of ``multiple``, at most the frame) of ``frames``, frame i fed the
    (K,) float32 prompt weights ``prompts[i]``.

    With ``references`` (one clean (H, W) float32 target per frame, as the gate's pairs), each
    crop's loss is log10(e_q + e_ref) instead (:func:`crop_loss`), e_ref the teacher's own
    squared error to the reference: this weights each crop by what the gate charges for it
    (gradient 1/(e_ref + e_q)): a crop the teacher restores well (a clean frame
    under the clean prompt, e_ref ≈ 4e-5) counts tens of times more than one it restores
    coarsely (contrast, e_ref ≈ 3e-3), where log10(e_q) alone (gradient 1/e_q) weighed them
    about alike (docs/int8.md, "Session 17").

    ``frames``: (H, W) float32 frames in [0, 1] (degraded inputs). Adam, the Conv weights and
    biases at ``lr`` and the activation range ends at ``range_lr``, cosine decay to 0 over
    ``steps`` steps or ``minutes`` minutes, whichever ends first. ``torch`` threads are left as
    the caller set them.

    Returns:
        {"steps", "seconds", "first_mse", "last_mse"}: steps run, wall time, the mean loss of
        the first and the last 10 % of the steps (squared output units, output in [0, 1]).

    Raises:
        ValueError: ``steps`` < 1, no frames, or ``frames`` and ``prompts`` (or ``references``)
            differ in length.
    """
    import time

    from tqdm import tqdm

    if steps < 1 or not len(frames) or len(frames) != len(prompts) or (
            references is not None and len(references) != len(frames)):
        raise ValueError(f"finetune needs steps >= 1 and one prompt per frame (steps={steps}, "
                         f"{len(frames)} frames, {len(prompts)} prompts)")
    rng = np.random.default_rng(seed)
    wparams = [p for n, p in gm.named_parameters() if not n.startswith("qat_acts.")]
    rparams = [p for n, p in gm.named_parameters() if n.startswith("qat_acts.")]
    groups = [{"params": wparams, "lr": lr, "base": lr}]
    if rparams:
        groups.append({"params": rparams, "lr": range_lr, "base": range_lr})
    opt = torch.optim.Adam(groups)
    teacher.eval()
    gm.train()
    budget = None if minutes is None else float(minutes) * 60.0
    losses = []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc="student QAT", unit="step", disable=not progress)
    step = 0
    try:
        while step < steps:
            elapsed = time.perf_counter() - t0
            if budget is not None and elapsed >= budget:
                break
            frac = max(step / steps, elapsed / budget if budget else 0.0)
            for g in opt.param_groups:
                g["lr"] = g["base"] * 0.5 * (1.0 + np.cos(np.pi * min(frac, 1.0)))
            xs, ps, rs = [], [], []
            for _ in range(batch):
                i = int(rng.integers(len(frames)))
                f = np.asarray(frames[i], np.float32)
                c = _crop_size(crop, *f.shape, multiple)
                y0, x0 = int(rng.integers(f.shape[0] - c + 1)), int(rng.integers(f.shape[1] - c + 1))
                xs.append(f[y0:y0 + c, x0:x0 + c])
                if references is not None:
                    rs.append(np.asarray(references[i], np.float32)[y0:y0 + c, x0:x0 + c])
                ps.append(np.asarray(prompts[i], np.float32))
            x = torch.from_numpy(np.stack(xs)[:, None].copy())
            p = torch.from_numpy(np.stack(ps))
            with torch.no_grad():
                target = teacher(x, p)
            ref = torch.from_numpy(np.stack(rs)[:, None].copy()) if references is not None else None
            loss, mse = crop_loss(gm(x, p), target, ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(mse.mean().detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(mse=f"{losses[-1]:.2e}")
    finally:
        bar.close()
        gm.eval()
    tenth = max(1, len(losses) // 10)
    return {"steps": step, "seconds": round(time.perf_counter() - t0, 1),
            "first_mse": float(np.mean(losses[:tenth])) if losses else None,
            "last_mse": float(np.mean(losses[-tenth:])) if losses else None}


def qat_student(fp32_path, ranges: Mapping, frames: List[np.ndarray], prompts: List[np.ndarray], out_path,
                steps: int, minutes: Optional[float] = None, reduce_range: bool = True,
                float_inputs: Iterable[str] = ("prompt",), quantize_options: Optional[dict] = None,
                progress: bool = True, init_path=None, **train) -> dict:
    """QAT of the student at ``fp32_path`` (ONNX), written as an fp32 ONNX to ``out_path``.

    1. :func:`tir.calibration.qdq.quantize_cpu` with ``ranges`` (the PTQ ranges,
       {name: TensorRange}) into a temporary file, read back by :func:`qdq_plan`;
    2. the graph in torch (:func:`load_onnx`), fake-quantised there (:func:`prepare_qat`);
    3. :func:`finetune` against the unquantised graph (``train``: its keyword options);
    4. :func:`write_back` into a copy of the graph trained (``init_path`` or ``fp32_path``; same
       inputs, outputs, metadata).

    ``init_path``: start the fake-quantised student from this ONNX instead (an earlier run's
    ``student.qat.onnx``, to go on fine-tuning it, ``ranges`` then its learned ranges; or the
    student rewritten with a per-prompt output scale, :mod:`tir.calibration.prompt_scale`, which
    computes the same function with another graph); the teacher stays ``fp32_path`` and the
    weights are written into a copy of ``init_path`` (the graph that was trained).

    ``frames``: (H, W) float32 frames in [0, 1]; ``prompts``: one (K,) float32 weight row each.
    ``fp32_path`` is only read. Returns {"path", "written" (initialiser names), "ranges" (the
    learned {name: TensorRange}), "plan" (counts), "train" (:func:`finetune`'s report)}.
    """
    import tempfile

    from tir.calibration.qdq import quantize_cpu

    with tempfile.TemporaryDirectory(prefix="tir-qat-") as tmp:
        ptq = os.path.join(tmp, "ptq.onnx")
        start = os.fspath(init_path) if init_path is not None else fp32_path
        quantize_cpu(start, ranges, ptq, activation="uint8", reduce_range=reduce_range,
                     float_inputs=list(float_inputs), fuse_prompt_scale=False, **(quantize_options or {}))
        plan = qdq_plan(start, ptq)
    teacher = load_onnx(fp32_path)
    for p in teacher.parameters():
        p.requires_grad_(False)
    gm = prepare_qat(load_onnx(start), plan, reduce_range=reduce_range)
    report = finetune(gm, teacher, frames, prompts, steps, minutes=minutes, progress=progress, **train)
    written = write_back(gm, start, out_path)
    return {"path": os.fspath(out_path), "written": written, "ranges": learned_ranges(gm),
            "plan": {"activations": len(plan.activations), "weights": len(plan.weights)}, "train": report}
