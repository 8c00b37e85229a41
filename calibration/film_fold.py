"""The FiLM scale of the distilled student folded into its convolution's weight scales on the CPU
INT8 model (issue 11; docs/int8.md, "Session 24").

Why: with ``quantize_cpu(film="int8")`` each FiLM block of the student
(engines/training/models/student.py ``PromptBlock``: u = conv1(x)·(1 + γ(p)) + β(p), then ReLU)
runs conv1 as a QLinearConv, then a QLinearMul and a QLinearAdd with their (N, C, 1, 1) side
inputs; ONNX Runtime keeps those two in NCHW, so each block also pays a layout transpose pair
(docs/int8.md, "Session 23"). The multiply is one per-output-channel factor on a convolution's
output, and a convolution with per-output-channel weight quantisation can carry it in its
weight scales.

What (exact, per frame): with per-output-channel weight scales σ_w (the int8 weights q_w are not
touched), input scale σ_x and the int32 bias q_b = round(b / (σ_x σ_w)) that ONNX Runtime's
quantiser wrote (its bias scale is σ_x σ_w),

    conv1(x)_c · g_c = σ_x (σ_w,c · g_c) Σ q_w (q_x − z_x) + (σ_x σ_w,c · g_c) q_b,c,   g = 1 + γ(p)

so ``QLinearConv(q_x, σ_x, z_x, q_w, σ_w ⊙ g, z_w, σ_y, z_y, q_b)`` with σ_y, z_y the grid of the
Mul's output computes Q(conv1(x) · (1 + γ)) directly: the same int8 weights and int32 bias, the
weight scales computed in the graph from the prompt branch's float 1 + γ (a Reshape and a Mul
per block, on C numbers). The int32 bias needs no change because it scales with σ_w: read with
the new weight scale it is the bias b·g of the folded convolution, quantised as the ONNX
QLinearConv specification asks (bias scale = x_scale · w_scale, zero point 0). A negative
or zero g_c is allowed: the sign of 1 + γ changes with the prompt on some channels of the shipped
student, and ONNX Runtime's requantisation multiplies by σ_x σ_w,c g_c / σ_y as a float (checked
below on the model itself). Against the unfolded INT8 model this drops two roundings (conv1's
output grid and the uint8 grid of 1 + γ) and the QLinearMul; the QLinearAdd of β stays.

Why not β as well: β would go into the int32 bias, which then depends on the prompt, and ONNX
Runtime's fast symmetric QLinearConv kernel folds the bias into its packed column sums at session
start (qlinearconv.cc ``TryConvSymPrepack`` reads it as a constant initializer): with a computed
bias the convolution takes the generic path, measured 1.2 ms slower over the four blocks on this
session's CPU, more than the fold saves (docs/int8.md, "Session 24").

Conditions (checked; the fold refuses what it does not recognise): in the float model each FiLM
Mul (:func:`tir.calibration.qdq.film_nodes`) reads a Conv's output that nothing else reads (a
ReLU or any other op between would not commute with a negative scale); in the QDQ model the
pattern DQ(x)→Conv(DQ(w), DQ(b))→Q→DQ→Mul(·, DQ(Q(1 + γ)))→Q with constant scales and zero
points and bias scale σ_x σ_w. The weight scales are then one prompt's, so the model takes one
frame per run (N = 1; another N fails in the QLinearConv), recorded as :data:`FOLD_KEY` and read by
:class:`~tir.engines.backends.student.StudentEngine` like the per-prompt output scale's fold
(calibration/prompt_scale.py ``fuse_cpu``). Runtime code may import this module (numpy and onnx
only; onnxruntime for the check).
"""
from __future__ import annotations

import json
from typing import Dict, List, Optional, Sequence

import numpy as np

from .integer_form import _prune

#: metadata key of a CPU QDQ student whose FiLM scales are folded (:func:`fold_cpu`): the Mul names, JSON
FOLD_KEY = "tir.int8.film_fold"
#: prefix of every node and tensor the fold adds
PREFIX = "/film_fold"
#: the check (:func:`check`): the folded FiLM outputs may differ from the fold's algebra in float by
#: at most this mean |Δ| (levels of their uint8 grid) ...
CHECK_MEAN = 0.05
#: ... and at most this fraction of them by more than one level
CHECK_OVER = 0.001


def _graph_maps(model):
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers: Dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return nodes, producer, readers


def foldable(model, film: Sequence[str]) -> List[str]:
    """The FiLM Mul nodes of the float student ``model`` (an ``onnx.ModelProto``; ``film`` the FiLM
    node names of :func:`tir.calibration.qdq.film_nodes`) whose scale can be folded: each Mul's
    image input must be a Conv output read by that Mul alone. Returns the Mul names in ``film``'s
    order.

    Raises:
        ValueError: ``film`` names no Mul, or a Mul's image input is not such a Conv output
            (e.g. a ReLU between: relu(c)·g ≠ relu(c·g) for g < 0).
    """
    nodes, producer, readers = _graph_maps(model)
    by = {n.name: n for n in nodes}
    muls = [name for name in film if name in by and by[name].op_type == "Mul"]
    if not muls:
        raise ValueError("film fold: the model has no FiLM multiply (calibration.qdq.film_nodes)")
    for name in muls:
        mul = by[name]
        convs = [producer.get(i) for i in mul.input]
        conv = next((c for c in convs if c is not None and c.op_type == "Conv"), None)
        if conv is None or len(readers.get(conv.output[0], [])) != 1:
            ops = [c.op_type if c is not None else "input" for c in convs]
            raise ValueError(f"film fold: {name} reads {ops}, not a convolution's output read by it alone; "
                             f"its scale cannot be folded into a convolution")
    return muls


def _match(mul, producer, readers, init):
    """The QDQ nodes around one FiLM Mul, or a reason string."""
    def only(tensor, reader):
        return readers.get(tensor, []) == [reader]

    def dq_q(tensor):
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 3:
            return None, None
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 3:
            return dq, None
        return dq, q

    sides = [dq_q(t) for t in mul.input]
    for k in (0, 1):
        dq_h, q_h = sides[k]
        if q_h is None:
            continue
        conv = producer.get(q_h.input[0])
        if conv is None or conv.op_type != "Conv":
            continue
        dq_g, q_g = sides[1 - k]
        if q_g is None:
            return f"{mul.name}: its prompt-side input is not on a Q/DQ grid"
        if not (only(conv.output[0], q_h) and only(q_h.output[0], dq_h) and only(dq_h.output[0], mul)):
            return f"{mul.name}: conv {conv.name}'s output is read elsewhere too"
        outs = readers.get(mul.output[0], [])
        if len(outs) != 1 or outs[0].op_type != "QuantizeLinear" or len(outs[0].input) < 3:
            return f"{mul.name}: its output is not quantised by one QuantizeLinear"
        dqs = [producer.get(i) for i in conv.input[:3]] + [None] * (3 - len(conv.input[:3]))
        dq_x, dq_w, dq_b = dqs[0], dqs[1], (dqs[2] if len(conv.input) > 2 and conv.input[2] else None)
        if any(d is None or d.op_type != "DequantizeLinear" for d in (dq_x, dq_w)) or \
                (dq_b is not None and dq_b.op_type != "DequantizeLinear"):
            return f"{mul.name}: conv {conv.name} is not DQ(x), DQ(w), DQ(b)"
        consts = [dq_x.input[1], dq_x.input[2], *dq_w.input, outs[0].input[1], outs[0].input[2]]
        if dq_b is not None:
            consts += list(dq_b.input)
        if any(c not in init for c in consts):
            return f"{mul.name}: a weight, bias, scale or zero point of {conv.name} is not a constant"
        return dict(mul=mul, conv=conv, q_h=q_h, dq_h=dq_h, q_g=q_g, dq_g=dq_g, q_y=outs[0],
                    dq_x=dq_x, dq_w=dq_w, dq_b=dq_b)
    return f"{mul.name}: no input is DQ(Q(Conv(...)))"


def _toposort(nodes, available) -> list:
    """``nodes`` in an order where each reads only ``available`` tensors or earlier outputs; the
    given order is kept where it is valid."""
    have = set(available) | {""}
    order, pending = [], list(nodes)
    while pending:
        rest = []
        for n in pending:
            if all(i in have for i in n.input):
                order.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"film fold: cannot order {[n.name for n in rest[:3]]}")
        pending = rest
    return order


def fold_model(model, muls: Sequence[str]):
    """Fold the FiLM scale of each Mul in ``muls`` into its convolution (module docstring), on the
    ONNX Runtime QDQ student ``model`` (``onnx.ModelProto``, changed in place). Returns one dict per
    block for :func:`check`: ``mul`` (its name), ``tensor`` (the quantised FiLM output, the same
    name before and after) and ``float_inputs`` (the Mul's inputs without their Q/DQ pairs: the
    convolution's float output and the float 1 + γ).

    Raises:
        ValueError: a Mul is missing or not in the pattern of the module docstring, the bias scale
            is not σ_x σ_w, the weight scales are not per output channel, the model is folded
            already or its opset is below 10.
    """
    from onnx import helper, numpy_helper

    if any(p.key == FOLD_KEY for p in model.metadata_props):
        raise ValueError("film fold: this model is folded already")
    if not any(o.domain in ("", "ai.onnx") and o.version >= 10 for o in model.opset_import):
        raise ValueError("film fold: QLinearConv needs opset 10 or later")
    nodes, producer, readers = _graph_maps(model)
    by = {n.name: n for n in nodes}
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    drop, new_nodes, new_inits, checks = set(), {}, [], []
    for name in muls:
        if name not in by:
            raise ValueError(f"film fold: the QDQ model has no node {name}")
        m = _match(by[name], producer, readers, init)
        if isinstance(m, str):
            raise ValueError(f"film fold: {m}")
        conv, dq_w, dq_b, dq_x, q_y = m["conv"], m["dq_w"], m["dq_b"], m["dq_x"], m["q_y"]
        w_q = init[dq_w.input[0]]
        c_out = w_q.shape[0]
        w_s = np.broadcast_to(init[dq_w.input[1]].astype(np.float32).reshape(-1), (c_out,)).copy()
        axis = next((a.i for a in dq_w.attribute if a.name == "axis"), 1)
        if init[dq_w.input[1]].size > 1 and axis != 0:
            raise ValueError(f"film fold: {conv.name}'s weight scales are not per output channel (axis {axis})")
        w_zp = init[dq_w.input[2]].reshape(-1)
        if w_zp.size > 1 and np.any(w_zp != w_zp[0]):
            raise ValueError(f"film fold: {conv.name}'s weight zero points differ between channels")
        x_s = float(init[dq_x.input[1]].reshape(-1)[0])
        bias = None
        if dq_b is not None:
            b_s = init[dq_b.input[1]].astype(np.float64).reshape(-1)
            if not np.allclose(b_s, x_s * w_s.astype(np.float64), rtol=1e-5, atol=0):
                raise ValueError(f"film fold: {conv.name}'s bias scale is not input scale × weight scale")
            bias = dq_b.input[0]
        p = f"{PREFIX}/{name.strip('/')}"
        g = m["q_g"].input[0]   # the float 1 + γ(p), (1, C, 1, 1)
        new_inits += [numpy_helper.from_array(np.array([-1], np.int64), f"{p}/flat"),
                      numpy_helper.from_array(w_s, f"{p}/weight_scale")]
        reshape = helper.make_node("Reshape", [g, f"{p}/flat"], [f"{p}/g"], name=f"{p}/Reshape")
        scale = helper.make_node("Mul", [f"{p}/weight_scale", f"{p}/g"], [f"{p}/w_scale"], name=f"{p}/Mul")
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        ins = [dq_x.input[0], dq_x.input[1], dq_x.input[2], dq_w.input[0], f"{p}/w_scale", dq_w.input[2],
               q_y.input[1], q_y.input[2]] + ([bias] if bias is not None else [])
        qconv = helper.make_node("QLinearConv", ins, [q_y.output[0]], name=f"{p}/QLinearConv", **attrs)
        new_nodes[id(conv)] = [reshape, scale, qconv]
        drop |= {id(conv), id(m["q_h"]), id(m["dq_h"]), id(m["mul"]), id(q_y)}
        mul = m["mul"]
        float_inputs = [conv.output[0] if i == m["dq_h"].output[0] else g for i in mul.input]
        checks.append({"mul": name, "tensor": q_y.output[0], "float_inputs": float_inputs})
    order = []
    for n in nodes:
        if id(n) in new_nodes:
            order.extend(new_nodes[id(n)])
        if id(n) not in drop:
            order.append(n)
    available = {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input} | \
        {i.name for i in new_inits}
    del model.graph.node[:]
    model.graph.node.extend(_toposort(order, available))
    model.graph.initializer.extend(new_inits)
    _prune(model)   # the Q/DQ pairs of 1 + γ and the weights' and biases' DQ are read by nothing now
    produced = {o for n in model.graph.node for o in n.output}
    for vi in [vi for vi in model.graph.value_info if vi.name not in produced]:
        model.graph.value_info.remove(vi)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, FOLD_KEY: json.dumps(list(muls))})
    return checks


def recorded(model) -> Optional[List[str]]:
    """The FiLM Mul names folded in ``model`` (:data:`FOLD_KEY`), or None."""
    for p in model.metadata_props:
        if p.key == FOLD_KEY:
            return json.loads(p.value)
    return None


def _tensor_session(model, tensors, optimise: bool):
    import onnx
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in tensors:
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.UINT8, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimise:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def reference(before, checks):
    """The fold's algebra in float on the unfolded QDQ model ``before`` (a copy is changed): each
    FiLM Mul reads its convolution's float output and the float 1 + γ directly (the Q/DQ pairs on
    both bypassed), its output still quantised on its own grid. Run without graph optimisation
    (every QDQ convolution in float), this is what :func:`fold_model`'s QLinearConv must compute.

    Returns:
        The changed ``onnx.ModelProto``.
    """
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(before)
    for c in checks:
        mul = next(n for n in m.graph.node if n.name == c["mul"])
        for k, src in enumerate(c["float_inputs"]):
            mul.input[k] = src
    return m


def check(before, after, checks, size: Optional[Sequence[int]] = None, seed: int = 0) -> List[dict]:
    """Run the folded ``after`` model (``onnx.ModelProto``, ONNX Runtime's CPU kernels, full graph
    optimisation) against :func:`reference` of the unfolded ``before`` with one synthetic frame
    and every one-hot prompt plus the uniform mix, and compare each FiLM output (uint8 on the same
    grid in both; ``checks`` from :func:`fold_model`). Only float rounding separates the two
    (a value on a rounding boundary lands one level off, and that propagates to later blocks).

    Args:
        size: (H, W) of the frame; None: 4 × the model's ``tir.multiple`` (default 8) each way.

    Returns:
        One dict per block and prompt: ``mul``, ``prompt`` (slot index, or -1 for the mix),
        ``mean`` (mean |Δ| in levels), ``over`` (fraction of |Δ| > 1 level), ``max``.

    Raises:
        ValueError: a block's outputs differ more than float rounding explains: a mean |Δ| above
            :data:`CHECK_MEAN` levels or more than :data:`CHECK_OVER` of them beyond one level.
    """
    meta = {p.key: p.value for p in before.metadata_props}
    if size is None:
        m = int(meta.get("tir.multiple", "8") or 8)
        size = (4 * m, 4 * m)
    tensors = [c["tensor"] for c in checks]
    s0, s1 = _tensor_session(reference(before, checks), tensors, False), _tensor_session(after, tensors, True)
    k = int(next(i for i in s0.get_inputs() if i.name == "prompt").shape[1])
    x = np.random.default_rng(seed).random((1, 1, *size), dtype=np.float32)
    prompts = [(j, np.eye(k, dtype=np.float32)[j:j + 1]) for j in range(k)] + [(-1, np.full((1, k), 1.0 / k, np.float32))]
    out = []
    for j, w in prompts:
        a = s0.run(tensors, {"input": x, "prompt": w})
        b = s1.run(tensors, {"input": x, "prompt": w})
        for c, ya, yb in zip(checks, a, b):
            d = np.abs(ya.astype(np.int32) - yb.astype(np.int32))
            row = {"mul": c["mul"], "prompt": j, "mean": float(d.mean()), "over": float(np.mean(d > 1)), "max": int(d.max())}
            out.append(row)
            if row["mean"] > CHECK_MEAN or row["over"] > CHECK_OVER:
                raise ValueError(f"film fold: {c['mul']} differs from the fold's algebra on prompt {j}: "
                                 f"mean |Δ| {row['mean']:.3f} levels, {100 * row['over']:.2f} % beyond one level")
    return out


def fold_cpu(path, muls: Sequence[str]) -> List[dict]:
    """Fold the FiLM scales of ``muls`` (names from :func:`foldable`) in the ONNX Runtime QDQ
    student at ``path`` (written by ``quantize_cpu(film="int8")``), check the folded model on ONNX
    Runtime against the fold's algebra on the unfolded one (:func:`check`), then save it in place. Returns the check's rows.

    Raises:
        ValueError: from :func:`fold_model` (pattern not recognised) or :func:`check` (the folded
            model does not compute the fold's algebra); the file is left as it was.
    """
    import onnx

    before = onnx.load(str(path))
    after = onnx.ModelProto()
    after.CopyFrom(before)
    checks = fold_model(after, muls)
    rows = check(before, after, checks)
    onnx.save(after, str(path))
    return rows
