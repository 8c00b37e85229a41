"""A per-prompt scale on the distilled student's output path (issue 11, item 6; docs/int8.md, "Session 18").

Why: the student's INT8 error on the clean prompt sits in its output path, the tensors after the
last nonlinearity (the last residual merge, the 1×1 ``out`` conv, the bias-free reconstruction
conv ``recon`` whose output the image-level skip adds to the frame). Their per-tensor uint8
ranges are set by the prompts with large corrections (contrast, CB: the merge reaches |x| ≈ 17
there, 2.5 under the clean prompt), so the clean prompt's small correction gets a few dozen
levels (docs/int8.md, "Session 17").

What: an exact reparametrisation of that path. With s(p) = exp(Σ_k p_k · log s_k) (p the (N, K)
prompt weights, s_k > 0 one scale per prompt slot; a weighted geometric mean, 1 when p = 0):

    A   = merge output (Add)                         kept float
    A'  = A · (1 / s(p))                             new Mul (float: it reads the prompt)
    O'  = W_out A'            (out conv, bias moved into the merge's conv, below)
    D'  = W_recon O'          (recon conv, bias-free)
    D   = D' · s(p)                                  new Mul (float), read by the skip Add

Every quantised tensor between the two Muls (A', O', D') then carries the correction divided by
its prompt's own scale, so each prompt's range is its own and the clean prompt's correction uses
the whole uint8 range; in fp32 the output is unchanged (up to rounding). The out conv's bias b
cannot be divided by s(p) (it is a constant), so it is moved in front of the Mul: the conv
feeding the merge gets the extra bias W_out⁻¹ b (exact: a 1×1 conv has no padding, so
W_out (A + W_out⁻¹ b) = W_out A + b everywhere; W_out square and well conditioned, else refused).

The merge itself stays float (:func:`float_nodes`): quantised, its output would go through an
8-bit grid on the unscaled range before the Mul. Runtime code may import this module (numpy and
onnx only).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Iterable, List, Optional, Sequence

import numpy as np

#: model metadata key recording the rewrite (:func:`scale_output_path`)
META_KEY = "tir.int8.prompt_scale"
#: W_out condition numbers above this are refused (the moved bias would be amplified)
MAX_CONDITION = 1e4
#: prefix of every node and tensor the rewrite adds
PREFIX = "/prompt_scale"


@dataclass
class OutputPath:
    """The student's output path, node names (:func:`output_path`): ``skip`` the image-level skip
    Add, ``recon`` the bias-free Conv feeding it, ``out`` the 1×1 Conv feeding ``recon``,
    ``merge`` the Add feeding ``out`` and ``fold`` the Conv feeding ``merge`` that takes the out
    conv's bias (None when ``out`` has none); ``tensor`` is ``merge``'s output, the tensor whose
    per-prompt range gives s_k (:func:`prompt_scales`)."""
    skip: str
    recon: str
    out: str
    merge: str
    fold: Optional[str]
    tensor: str


def _init(model) -> dict:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _bias(node, init) -> Optional[np.ndarray]:
    if len(node.input) > 2 and node.input[2]:
        return init[node.input[2]]
    return None


def output_path(model) -> OutputPath:
    """Find the output path of a student-like ONNX ``model``: image-level skip Add ←
    bias-free Conv (``recon``) ← 1×1 group-1 Conv with C_in = C_out (``out``) ← Add (``merge``);
    each intermediate tensor read by the next node only.

    Raises:
        ValueError: naming the first link that is missing or has another shape.
    """
    from .qdq import image_skips

    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    readers: dict = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    init = _init(model)
    skips = image_skips(model)
    if len(skips) != 1:
        raise ValueError(f"prompt scale: expected one image-level skip Add, found {skips}")
    skip = next(n for n in nodes if n.name == skips[0])

    def conv_feeding(node, what):
        for x in node.input:
            p = producer.get(x)
            if p is not None and p.op_type == "Conv" and len(readers.get(x, [])) == 1:
                return p
        raise ValueError(f"prompt scale: {node.name} is not fed by a Conv read by it alone ({what})")

    recon = conv_feeding(skip, "the reconstruction conv")
    if _bias(recon, init) is not None and np.any(_bias(recon, init)):
        raise ValueError(f"prompt scale: {recon.name} has a bias; the correction must be linear in its input")
    out = conv_feeding(recon, "the output conv")
    w = init.get(out.input[1])
    groups = next((a.i for a in out.attribute if a.name == "group"), 1)
    if w is None or w.shape[2:] != (1, 1) or w.shape[0] != w.shape[1] or groups != 1:
        raise ValueError(f"prompt scale: {out.name} is not a square 1x1 conv (weight {None if w is None else w.shape})")
    merge = producer.get(out.input[0])
    if merge is None or merge.op_type != "Add" or len(readers.get(out.input[0], [])) != 1:
        raise ValueError(f"prompt scale: {out.name} does not read an Add of its own (the last residual merge)")
    fold = None
    if _bias(out, init) is not None:
        fold = conv_feeding(merge, "the conv that takes the output conv's bias")
        if init[fold.input[1]].shape[0] != w.shape[1]:
            raise ValueError(f"prompt scale: {fold.name} has {init[fold.input[1]].shape[0]} channels, "
                             f"{out.name} reads {w.shape[1]}")
    return OutputPath(skip.name, recon.name, out.name, merge.name, fold.name if fold is not None else None,
                      merge.output[0])


def prompt_scales(values: Sequence[np.ndarray], slots: Sequence[int], k: int, percentile: float = 99.99) -> np.ndarray:
    """s_k, the ``percentile`` of |x| of the output path's merge tensor (:attr:`OutputPath.tensor`)
    over the calibration frames of prompt slot k: ``values[i]`` that tensor on frame i (any
    shape, float32), fed slot ``slots[i]``'s one-hot prompt. Returns (k,) float64, > 0.

    Raises:
        ValueError: a slot has no frame, or its tensor is all zero.
    """
    out = np.zeros(k)
    for j in range(k):
        xs = [np.abs(np.asarray(v, np.float32)).ravel() for v, s in zip(values, slots) if s == j]
        if not xs:
            raise ValueError(f"prompt scale: prompt slot {j} has no calibration frame")
        out[j] = float(np.percentile(np.concatenate(xs), percentile))
        if not out[j] > 0:
            raise ValueError(f"prompt scale: the output path is all zero on prompt slot {j}'s frames")
    return out


def scale_output_path(model, scales: Sequence[float], prompt_input: str = "prompt") -> OutputPath:
    """Rewrite ``model`` (an ``onnx.ModelProto`` of a student, changed in place) with the per-prompt
    scale of the module docstring: ``scales`` the (K,) s_k > 0 (K the width of ``prompt_input``).
    The out and recon convs' outputs are renamed (``<name>_pscaled``: their values change, so no
    range of the unscaled model applies to them), and so is the output of the conv that takes the
    out conv's bias (``<name>_biased``); the skip still reads the recon's old tensor
    name, now the rescaled correction. Records :data:`META_KEY` (the path and the scales).

    Raises:
        ValueError: :func:`output_path` finds no such path, a scale is not > 0, the model is
            already rewritten, or W_out's condition number exceeds :data:`MAX_CONDITION`.
    """
    from onnx import helper, numpy_helper

    if any(p.key == META_KEY for p in model.metadata_props):
        raise ValueError("prompt scale: this model is rewritten already")
    s = np.asarray(scales, np.float64)
    if s.ndim != 1 or not np.all(s > 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"prompt scale: scales must be positive and finite, got {scales}")
    path = output_path(model)
    nodes = list(model.graph.node)
    by = {n.name: n for n in nodes}
    init = _init(model)
    inits = {i.name: i for i in model.graph.initializer}
    out, recon, merge = by[path.out], by[path.recon], by[path.merge]
    fold_old = None
    if path.fold is not None:
        w = init[out.input[1]][:, :, 0, 0].astype(np.float64)
        cond = float(np.linalg.cond(w))
        if not cond <= MAX_CONDITION:
            raise ValueError(f"prompt scale: {out.name}'s weight has condition number {cond:.3g} (> {MAX_CONDITION:g})")
        shift = np.linalg.solve(w, _bias(out, init).astype(np.float64))
        fold = by[path.fold]
        c = init[fold.input[1]].shape[0]
        old = _bias(fold, init)
        new = (np.zeros(c) if old is None else old.astype(np.float64)) + shift
        name = fold.input[2] if old is not None else f"{PREFIX}/{fold.name}/bias"
        if old is not None:
            inits[name].CopyFrom(numpy_helper.from_array(new.astype(np.float32), name))
        else:
            model.graph.initializer.append(numpy_helper.from_array(new.astype(np.float32), name))
            while len(fold.input) < 3:
                fold.input.append("")
            fold.input[2] = name
        bias_name = out.input[2]
        del out.input[2:]
        fold_old = fold.output[0]   # its values change: renamed, so no range of the old model applies
        fold.output[0] = f"{fold_old}_biased"
        merge.input[list(merge.input).index(fold_old)] = fold.output[0]
        if not any(bias_name in n.input for n in nodes):
            model.graph.initializer.remove(inits[bias_name])
    log_s, shape = f"{PREFIX}/log_scale", f"{PREFIX}/shape"
    model.graph.initializer.extend([numpy_helper.from_array(np.log(s).astype(np.float32)[:, None], log_s),
                                    numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), shape)])
    t_s, t_t = f"{PREFIX}/s", f"{PREFIX}/inv_s"
    branch = [helper.make_node("MatMul", [prompt_input, log_s], [f"{PREFIX}/log_mix"], name=f"{PREFIX}/MatMul"),
              helper.make_node("Reshape", [f"{PREFIX}/log_mix", shape], [f"{PREFIX}/log_mix4"], name=f"{PREFIX}/Reshape"),
              helper.make_node("Exp", [f"{PREFIX}/log_mix4"], [t_s], name=f"{PREFIX}/Exp"),
              helper.make_node("Neg", [f"{PREFIX}/log_mix4"], [f"{PREFIX}/neg_log_mix4"], name=f"{PREFIX}/Neg"),
              helper.make_node("Exp", [f"{PREFIX}/neg_log_mix4"], [t_t], name=f"{PREFIX}/Exp_inv")]
    scaled_in = f"{path.tensor}{PREFIX}"
    mul_in = helper.make_node("Mul", [path.tensor, t_t], [scaled_in], name=f"{PREFIX}/Mul_in")
    out.input[0] = scaled_in
    out_old, recon_old = out.output[0], recon.output[0]
    out.output[0] = f"{out_old}_pscaled"
    recon.input[0] = out.output[0]
    recon.output[0] = f"{recon_old}_pscaled"
    mul_out = helper.make_node("Mul", [recon.output[0], t_s], [recon_old], name=f"{PREFIX}/Mul_out")
    order = branch[:]
    for n in nodes:
        order.append(n)
        if n is merge:
            order.append(mul_in)
        elif n is recon:
            order.append(mul_out)
    del model.graph.node[:]
    model.graph.node.extend(order)
    for vi in list(model.graph.value_info):   # shapes inferred for the renamed tensors no longer apply
        if vi.name in (out_old, recon_old) or vi.name == fold_old:
            model.graph.value_info.remove(vi)
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                   META_KEY: json.dumps({**asdict(path), "scales": [float(x) for x in s]})})
    return path


def recorded(model) -> Optional[dict]:
    """The :data:`META_KEY` record of a rewritten ``model`` (path node names and ``scales``), or None."""
    for p in model.metadata_props:
        if p.key == META_KEY:
            return json.loads(p.value)
    return None


def float_nodes(model) -> List[str]:
    """Nodes the INT8 writers keep float in a rewritten ``model``: the merge Add (its output is
    scaled by the float Mul; quantised, it would be rounded on the unscaled range first). []
    for a model without the rewrite."""
    rec = recorded(model)
    return [rec["merge"]] if rec else []


def scaled_tensors(model) -> Iterable[str]:
    """The tensors between the two Muls of a rewritten ``model`` (their ranges are per-prompt
    scaled): the Mul_in output and the out and recon convs' outputs; () without the rewrite."""
    rec = recorded(model)
    if not rec:
        return ()
    by = {n.name: n for n in model.graph.node}
    return (by[f"{PREFIX}/Mul_in"].output[0], by[rec["out"]].output[0], by[rec["recon"]].output[0])


def set_scales(model, scales: Sequence[float]) -> None:
    """Replace the s_k of a rewritten ``model`` (in place; e.g. after :func:`prompt_scales` on the
    model rewritten with s_k = 1, whose merge tensor then includes the moved bias).

    Raises:
        ValueError: the model is not rewritten, or ``scales`` is not K positive finite numbers.
    """
    from onnx import helper, numpy_helper

    rec = recorded(model)
    s = np.asarray(scales, np.float64)
    inits = {i.name: i for i in model.graph.initializer}
    if rec is None:
        raise ValueError("prompt scale: the model has no per-prompt scale to set")
    old = numpy_helper.to_array(inits[f"{PREFIX}/log_scale"])
    if s.shape != (old.shape[0],) or not np.all(s > 0) or not np.all(np.isfinite(s)):
        raise ValueError(f"prompt scale: need {old.shape[0]} positive finite scales, got {scales}")
    inits[f"{PREFIX}/log_scale"].CopyFrom(numpy_helper.from_array(np.log(s).astype(np.float32)[:, None],
                                                                 f"{PREFIX}/log_scale"))
    rec["scales"] = [float(x) for x in s]
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, META_KEY: json.dumps(rec)})


#: metadata key set on a CPU QDQ model whose scale Muls are fused (:func:`fuse_cpu`): it runs one frame per call
FUSED_KEY = "tir.int8.prompt_scale_fused"


def fuse_cpu(path) -> bool:
    """Fold the two scale Muls of a rewritten student's ONNX Runtime QDQ model (written by
    :func:`tir.calibration.qdq.quantize_cpu`) into the quantisation scales, so the per-prompt
    scale costs no pass over the image:

    - ``Q(merge(DQ(a), DQ(b)) · (1/s))`` → ``QLinearAdd(a, σ_a/s, z_a, b, σ_b/s, z_b, σ_q, z_q)``
      (com.microsoft QLinearAdd: y = round(((a − z_a)·σ_a/s + (b − z_b)·σ_b/s) / σ_q) + z_q, its
      input scales read at run time), the merge an integer kernel again;
    - ``DQ(d)·s`` → ``DQ(d, σ_d·s, z_d)`` (DequantizeLinear with a run-time scale).

    Equal to the unfused model up to float rounding (a value on a rounding boundary of the
    QLinearAdd may land one level off). The scales are then scalars, so the model takes one frame
    per run (N = 1; another N fails in ONNX Runtime's Reshape): marked :data:`FUSED_KEY`, and
    :class:`~tir.engines.backends.student.StudentEngine` runs a batch frame by frame. Saves the
    model in place; returns whether it was changed (False: no rewrite recorded, or the Q/DQ
    pattern around the Muls is not the one described).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    if recorded(model) is None or any(p.key == FUSED_KEY for p in model.metadata_props):
        return False
    nodes = list(model.graph.node)
    by = {n.name: n for n in nodes}
    producer = {o: n for n in nodes for o in n.output}
    readers: dict = {}
    for n in nodes:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    consts = {i.name for i in model.graph.initializer}
    mul_in, mul_out = by.get(f"{PREFIX}/Mul_in"), by.get(f"{PREFIX}/Mul_out")
    if mul_in is None or mul_out is None:
        return False

    def dq_of(name):
        d = producer.get(name)
        ok = d is not None and d.op_type == "DequantizeLinear" and len(d.input) == 3 and d.input[1] in consts \
            and d.input[2] in consts
        return d if ok else None

    merge = producer.get(mul_in.input[0])
    q_list = readers.get(mul_in.output[0], [])
    dq_d = dq_of(mul_out.input[0])
    if merge is None or merge.op_type != "Add" or len(q_list) != 1 or q_list[0].op_type != "QuantizeLinear" \
            or dq_d is None or readers.get(merge.output[0]) != [mul_in]:
        return False
    q = q_list[0]
    dqs = [dq_of(x) for x in merge.input]
    if any(d is None for d in dqs) or len(q.input) != 3:
        return False
    empty = f"{PREFIX}/scalar_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.int64), empty))
    side = [helper.make_node("Reshape", [mul_in.input[1], empty], [f"{PREFIX}/inv_s0"], name=f"{PREFIX}/inv_s0"),
            helper.make_node("Reshape", [mul_out.input[1], empty], [f"{PREFIX}/s0"], name=f"{PREFIX}/s0"),
            helper.make_node("Mul", [dqs[0].input[1], f"{PREFIX}/inv_s0"], [f"{PREFIX}/scale_a"], name=f"{PREFIX}/scale_a"),
            helper.make_node("Mul", [dqs[1].input[1], f"{PREFIX}/inv_s0"], [f"{PREFIX}/scale_b"], name=f"{PREFIX}/scale_b"),
            helper.make_node("Mul", [dq_d.input[1], f"{PREFIX}/s0"], [f"{PREFIX}/scale_d"], name=f"{PREFIX}/scale_d")]
    qla = helper.make_node("QLinearAdd", [dqs[0].input[0], f"{PREFIX}/scale_a", dqs[0].input[2],
                                          dqs[1].input[0], f"{PREFIX}/scale_b", dqs[1].input[2],
                                          q.input[1], q.input[2]], [q.output[0]], name=f"{PREFIX}/QLinearAdd",
                           domain="com.microsoft")
    dq_new = helper.make_node("DequantizeLinear", [dq_d.input[0], f"{PREFIX}/scale_d", dq_d.input[2]],
                              [mul_out.output[0]], name=f"{PREFIX}/DequantizeLinear")
    drop = {id(merge), id(mul_in), id(q), id(mul_out)}
    for d in (*dqs, dq_d):   # a DQ read by nothing else goes too
        if all(id(r) in drop for r in readers.get(d.output[0], [])):
            drop.add(id(d))
    order = []
    placed, need = False, {mul_in.input[1], mul_out.input[1]}
    for n in nodes:
        if id(n) in drop:
            if n is merge:
                order.append(qla)
            elif n is mul_out:
                order.append(dq_new)
            continue
        order.append(n)
        need -= set(n.output)
        if not placed and not need:   # s and 1/s are made (the prompt branch comes first)
            order.extend(side)
            placed = True
    if not placed:
        return False
    del model.graph.node[:]
    model.graph.node.extend(order)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, FUSED_KEY: "1"})
    onnx.save(model, str(path))
    return True
