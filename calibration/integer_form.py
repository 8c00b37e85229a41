"""Exact graph rewrites that let ONNX Runtime's CPU integer kernels cover more of a route.

Why (issue 11; profile of the ``noise`` route's U8S8 model against its fp32 model on ONNX
Runtime 1.32, 640×512, 2 threads, docs/int8.md): after ``quantize_static`` the integer
convolutions (QLinearConv) ran about twice as fast as the fp32 convolutions, but a few
float islands *inside* the quantised body kept their fp32 cost and added Q/DQ conversions
around them, so the route stayed below the other routes' INT8/fp32 ratio:

* the branch's up-sampling, a 2×2 stride-2 **ConvTranspose** (engines/training/fast_route.py
  folds 1×1 conv + PixelShuffle(2) into it, the fast fp32 form): ONNX Runtime's CPU
  provider has no integer ConvTranspose kernel, so it ran in float between a
  DequantizeLinear and a QuantizeLinear (the largest single node of the INT8 graph);
* the global-residual difference ``(s + b) − s`` in front of the reconstruction conv: ONNX
  Runtime has no integer Sub, so two DequantizeLinear, a float Sub and a QuantizeLinear ran
  on a 32-channel H/4 tensor (and the quantised Add before it);
* the branch statistics' spatial mean, a **ReduceMean** over H and W, ran in float on a
  dequantised channels-last tensor.

The rewrites here replace each by an equal form that the integer path covers. They are
applied by :func:`tir.calibration.qdq.quantize_cpu` to the CPU INT8 model only (TensorRT has
INT8 deconvolution and needs none of them; the fp32 models keep their faster float form):

1. ``ConvTranspose`` with kernel = stride = k (square), no padding, dilation 1, one group →
   a 1×1 ``Conv`` to k²·C_out channels followed by ``DepthToSpace(k, mode="DCR")``:
   ``W1[(i·k + j)·C_out + c, c_in] = Wt[c_in, c, i, j]``, bias tiled k² times (ONNX
   ConvTranspose and DepthToSpace definitions; each output pixel (k·h + i, k·w + j) reads
   input pixel (h, w) only, through the kernel tap (i, j)). When the ConvTranspose reads a
   channel ``Concat`` with channels filled by ``ConstantOfShape`` (the export's all-ones
   channel that carries the sub-pixel bias), those channels are folded into the 1×1 conv's
   bias (a 1×1 conv of a constant channel is a constant per output channel) and dropped.
   The DepthToSpace output is quantised with the same range as its input (a permutation),
   so ONNX Runtime drops its Q/DQ pair and runs it on uint8.
2. ``Sub(Add(a, b), a)`` → ``b`` (the Add is removed when nothing else reads it). Equal up
   to float rounding (|Δ| ≤ one ulp of |a| + |b|).
3. ``ReduceMean`` over the two spatial axes of a 4-D tensor with ``keepdims=1`` →
   ``GlobalAveragePool`` (same definition), which ONNX Runtime quantises
   (QLinearGlobalAveragePool).
4. A bilinear ``Resize`` (linear, ``half_pixel``, integer scales on H and W) → two float
   MatMuls with interpolation matrices built in the graph from the input's shape
   (:func:`_rewrite_resize_matmul`; the student's field head up-samples its 16×20 field 32× to
   the frame). It stays float (it is in the float tail) but costs a fraction of ONNX Runtime's
   CPU Resize (docs/int8.md, "Session 19"); applied to float nodes too, its new nodes are
   listed in ``IntegerFormReport.float_nodes`` so the quantiser leaves them float.

Every rewrite is checked against the original graph in tests/test_integer_form.py.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping

import numpy as np

#: op types whose output :func:`integer_form` asks ONNX Runtime's quantiser to quantise with
#: the range of their input (pure permutations of the input's values)
PERMUTATION_OPS = ("DepthToSpace", "SpaceToDepth")


@dataclass
class IntegerFormReport:
    """What :func:`integer_form` changed: node names per rewrite and, for every tensor it
    created, the original tensor whose calibrated range it inherits (``range_of``)."""
    conv_transpose: List[str] = field(default_factory=list)
    folded_constant_channels: List[str] = field(default_factory=list)
    sub_of_add: List[str] = field(default_factory=list)
    reduce_mean: List[str] = field(default_factory=list)
    resize_matmul: List[str] = field(default_factory=list)
    range_of: Dict[str, str] = field(default_factory=dict)
    #: nodes the rewrites created that must stay float (they replace a float node):
    #: :func:`tir.calibration.qdq.quantize_cpu` excludes them
    float_nodes: List[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when at least one rewrite applied."""
        return bool(self.conv_transpose or self.sub_of_add or self.reduce_mean or self.resize_matmul)

    def to_dict(self) -> dict:
        """The report as JSON-ready lists of node names."""
        return {"conv_transpose": list(self.conv_transpose),
                "folded_constant_channels": list(self.folded_constant_channels),
                "sub_of_add": list(self.sub_of_add), "reduce_mean": list(self.reduce_mean),
                "resize_matmul": list(self.resize_matmul)}


def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _shapes(model) -> Dict[str, list]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def _consumer_count(model, name: str) -> int:
    n = sum(1 for node in model.graph.node for i in node.input if i == name)
    return n + sum(1 for o in model.graph.output if o.name == name)


def _unique(model, base: str) -> str:
    taken = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.initializer} \
        | {i.name for i in model.graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _constant_fill(model, tensor: str):
    """The fill value of ``tensor`` when a ConstantOfShape makes it, else None."""
    from onnx import numpy_helper

    for node in model.graph.node:
        if tensor in node.output and node.op_type == "ConstantOfShape":
            value = _attrs(node).get("value")
            return 0.0 if value is None else float(numpy_helper.to_array(value).reshape(-1)[0])
    return None


def _rewrite_conv_transpose(model, report: IntegerFormReport, keep: set) -> None:
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    shapes = None
    nodes = list(model.graph.node)
    for node in nodes:
        if node.op_type != "ConvTranspose" or node.name in keep or len(node.input) < 2 or node.input[1] not in inits:
            continue
        a = _attrs(node)
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        if w.ndim != 4 or w.shape[2] != w.shape[3]:
            continue
        k = int(w.shape[2])
        if (k < 2 or list(a.get("strides", [1, 1])) != [k, k] or any(a.get("pads", [0, 0, 0, 0]))
                or any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("group", 1) != 1
                or any(a.get("output_padding", [0, 0])) or "output_shape" in a
                or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID")):
            continue
        if len(node.input) > 2 and node.input[2] and node.input[2] not in inits:
            continue
        c_in, c_out = w.shape[0], w.shape[1]
        w1 = w.transpose(2, 3, 1, 0).reshape(k * k * c_out, c_in)          # [(i·k + j)·C_out + c, c_in]
        bias = np.zeros(k * k * c_out, np.float32)
        if len(node.input) > 2 and node.input[2]:
            bias += np.tile(numpy_helper.to_array(inits[node.input[2]]).astype(np.float32), k * k)
        source = node.input[0]
        producer = next((n for n in model.graph.node if source in n.output), None)
        if producer is not None and producer.op_type == "Concat" and _attrs(producer).get("axis") in (1, -3):
            shapes = shapes or _shapes(model)
            widths = [(shapes.get(t) or [None, None])[1] for t in producer.input]
            if widths.count(None) == 1:   # a ConstantOfShape of a computed shape: the rest of C_in
                widths[widths.index(None)] = c_in - sum(c for c in widths if c is not None)
            fills = [_constant_fill(model, t) for t in producer.input]
            if all(c is not None for c in widths) and sum(widths) == c_in and any(f is not None for f in fills):
                keep_cols, kept_inputs, start = [], [], 0
                for t, c, f in zip(producer.input, widths, fills):
                    if f is None:
                        keep_cols.extend(range(start, start + c))
                        kept_inputs.append(t)
                    else:
                        bias += f * w1[:, start:start + c].sum(axis=1)
                    start += c
                if kept_inputs:
                    w1 = w1[:, keep_cols]
                    if len(kept_inputs) == 1:
                        source = kept_inputs[0]
                    else:
                        source = _unique(model, f"{producer.output[0]}_varying")
                        model.graph.node.insert(list(model.graph.node).index(producer) + 1, helper.make_node(
                            "Concat", kept_inputs, [source], name=_unique(model, f"{producer.name}_varying"), axis=1))
                    report.folded_constant_channels.append(producer.name)
        w_name, b_name = _unique(model, f"{node.name}_as_conv_w"), _unique(model, f"{node.name}_as_conv_b")
        model.graph.initializer.extend([numpy_helper.from_array(w1.reshape(*w1.shape, 1, 1).astype(np.float32), w_name),
                                        numpy_helper.from_array(bias.astype(np.float32), b_name)])
        mid = _unique(model, f"{node.output[0]}_depth")
        conv = helper.make_node("Conv", [source, w_name, b_name], [mid], name=_unique(model, f"{node.name}_as_conv"),
                                kernel_shape=[1, 1])
        if DEPTH_TO_SPACE == "op":
            after = [helper.make_node("DepthToSpace", [mid], [node.output[0]], name=_unique(model, f"{node.name}_as_d2s"),
                                      blocksize=k, mode="DCR")]
            permuted = []
        else:
            after, permuted = _depth_to_space_transposes(model, node.name, source, mid, node.output[0], k, c_out)
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for n in reversed([conv] + after):
            model.graph.node.insert(at, n)
        report.conv_transpose.append(node.name)
        for t in [mid] + permuted:
            report.range_of[t] = node.output[0]
    _prune(model)


#: how :func:`integer_form` writes the DCR depth-to-space after the 1×1 conv: "transpose"
#: (channels-last Transpose/Reshape whose inner Transpose keeps the channel axis last, see
#: :func:`_depth_to_space_transposes`) or "op" (one ONNX DepthToSpace)
DEPTH_TO_SPACE = "transpose"


def _depth_to_space_transposes(model, name: str, source: str, mid: str, out: str, k: int, c: int):
    """Nodes computing ``out = DepthToSpace(mid, k, "DCR")`` (``mid``: N×k²C×H×W, channel
    (i·k + j)·C + c; ``out``: N×C×kH×kW) as channels-last Transpose/Reshape, and the new float
    tensors (each a permutation of ``mid``):

    mid → Transpose(0,2,3,1) [N,H,W,k²C] → Reshape [N,H,W,k,k,C] → Transpose(0,1,3,2,4,5)
    [N,H,k,W,k,C] → Reshape [N,kH,kW,C] → Transpose(0,3,1,2) = out.

    Why: ONNX Runtime runs quantised convolutions channels-last and cancels the first
    Transpose against its own layout transpose; the middle Transpose keeps the C contiguous
    channels innermost (block copies), where its DepthToSpace kernel permutes element by
    element (measured on 1×128×64×80 uint8: 0.60 ms DepthToSpace, 0.16 ms this Transpose).
    H and W come from ``source`` (the 1×1 conv's input, N×C_in×H×W) at run time.
    """
    from onnx import helper, numpy_helper

    def const(base: str, values) -> str:
        tensor = _unique(model, f"{mid}_{base}")
        model.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), tensor))
        return tensor

    t = lambda base: _unique(model, f"{mid}_{base}")                       # noqa: E731
    n = lambda base: _unique(model, f"{name}_d2s_{base}")                  # noqa: E731
    shape6, k2 = const("shape6", [0, 0, 0, k, k, c]), const("k", [k, k])
    c_arr, s0, s1, s2, s4 = const("c", [c]), const("s0", [0]), const("s1", [1]), const("s2", [2]), const("s4", [4])
    nhwc, six, inter, flat = t("nhwc"), t("blocks"), t("interleaved"), t("nhwc_up")
    shp, hw, khw, n_dim, shape4 = t("in_shape"), t("hw"), t("khw"), t("n"), t("shape4")
    nodes = [
        helper.make_node("Transpose", [mid], [nhwc], name=n("to_nhwc"), perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", [nhwc, shape6], [six], name=n("split")),
        helper.make_node("Transpose", [six], [inter], name=n("interleave"), perm=[0, 1, 3, 2, 4, 5]),
        helper.make_node("Shape", [source], [shp], name=n("shape")),
        helper.make_node("Slice", [shp, s0, s1], [n_dim], name=n("batch")),
        helper.make_node("Slice", [shp, s2, s4], [hw], name=n("hw")),
        helper.make_node("Mul", [hw, k2], [khw], name=n("khw")),
        helper.make_node("Concat", [n_dim, khw, c_arr], [shape4], name=n("shape4"), axis=0),
        helper.make_node("Reshape", [inter, shape4], [flat], name=n("merge")),
        helper.make_node("Transpose", [flat], [out], name=n("to_nchw"), perm=[0, 3, 1, 2]),
    ]
    return nodes, [nhwc, six, inter, flat]


def _rewrite_sub_of_add(model, report: IntegerFormReport, keep: set) -> None:
    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    for node in list(model.graph.node):
        if node.op_type != "Sub" or node.name in keep or len(node.input) != 2 or node.output[0] in outputs:
            continue
        p, a = node.input
        add = producer.get(p)
        if add is None or add.op_type != "Add" or add.name in keep or a not in add.input or len(add.input) != 2:
            continue
        b = add.input[1] if add.input[0] == a else add.input[0]
        if b == a:
            continue
        for other in model.graph.node:
            for i, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[i] = b
        model.graph.node.remove(node)
        report.sub_of_add.append(node.name)
    _prune(model)


def _rewrite_reduce_mean(model, report: IntegerFormReport, keep: set) -> None:
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    shapes = None
    for node in list(model.graph.node):
        if node.op_type != "ReduceMean" or node.name in keep:
            continue
        a = _attrs(node)
        axes = a.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1]:
            if node.input[1] not in inits:
                continue
            axes = numpy_helper.to_array(inits[node.input[1]]).reshape(-1).tolist()
        if axes is None or a.get("keepdims", 1) != 1:
            continue
        shapes = shapes or _shapes(model)
        rank = len(shapes.get(node.input[0]) or [])
        if rank != 4 or sorted(int(x) % 4 for x in axes) != [2, 3]:
            continue
        pool = helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output),
                                name=_unique(model, f"{node.name}_as_gap"))
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(at, pool)
        report.reduce_mean.append(node.name)
    _prune(model)

def _rewrite_resize_matmul(model, report: IntegerFormReport, keep: set) -> None:
    """A bilinear ``Resize`` (mode linear, ``half_pixel``, scales 1 on N and C and an integer
    s ≥ 2 on H and W) → ``A_H · X · A_Wᵀ``, two MatMuls with interpolation matrices built in the
    graph from the input's shape (so any frame size works):

    A[o, i] = max(0, 1 − |clip((o + ½)/s − ½, 0, n − 1) − i|),  o < s·n, i < n,

    the ONNX Resize definition (linear mode, half_pixel coordinate transform, the source
    coordinate clamped to the input as ONNX Runtime's upsample does at the borders): each output
    is the two-tap interpolation of its neighbours, one matrix row per output row/column.
    Equal up to float rounding (the weights sum to 1; |Δ| ~ 1e-7 of the values). Why: ONNX
    Runtime's CPU Resize took 1.1 ms for the student's 32× up-sampling of its 16×20 field to
    640×512 (docs/int8.md "Session 19"), the MatMuls (6.5 MMAC) a fraction of that. The new
    nodes stay float (``report.float_nodes``).
    """
    from onnx import helper, numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    for node in list(model.graph.node):
        if node.op_type != "Resize" or len(node.input) < 3 or (len(node.input) > 3 and node.input[3]):
            continue
        a = _attrs(node)
        mode, ctm = a.get("mode", b"nearest"), a.get("coordinate_transformation_mode", b"half_pixel")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
        if mode != "linear" or ctm != "half_pixel" or a.get("antialias", 0) or a.get("axes") is not None:
            continue
        scales = inits.get(node.input[2], consts.get(node.input[2]))
        if scales is None or scales.size != 4:
            continue
        scales = [float(v) for v in scales.reshape(-1)]
        if scales[0] != 1 or scales[1] != 1 or any(v < 2 or v != int(v) for v in scales[2:]):
            continue
        x, out = node.input[0], node.output[0]
        name = node.name
        new = []

        def const(base, values, dtype=np.float32):
            t = _unique(model, f"{name}_{base}")
            model.graph.initializer.append(numpy_helper.from_array(np.array(values, dtype), t))
            return t

        def add(op, inputs, base, **attrs):
            t = _unique(model, f"{out}_{base}")
            n = helper.make_node(op, inputs, [t], name=_unique(model, f"{name}_{base}"), **attrs)
            new.append(n)
            model.graph.node.insert(list(model.graph.node).index(node), n)
            return t

        shape = add("Shape", [x], "shape")
        zero_f, one_f, half = const("zero", 0.0), const("one", 1.0), const("half", 0.5)
        matrices = []
        for axis, s in ((2, int(scales[2])), (3, int(scales[3]))):
            tag = "h" if axis == 2 else "w"
            n_i = add("Slice", [shape, const(f"{tag}_a", [axis], np.int64), const(f"{tag}_b", [axis + 1], np.int64)], f"{tag}_n")
            n_f = add("Cast", [add("Squeeze", [n_i], f"{tag}_n0")], f"{tag}_nf", to=1)
            n_out = add("Mul", [n_f, const(f"{tag}_s", float(s))], f"{tag}_no")
            o = add("Range", [zero_f, n_out, one_f], f"{tag}_o")
            src = add("Sub", [add("Div", [add("Add", [o, half], f"{tag}_o5"), const(f"{tag}_sd", float(s))], f"{tag}_od"),
                              half], f"{tag}_src")
            hi = add("Sub", [n_f, one_f], f"{tag}_hi")
            src = add("Min", [add("Max", [src, zero_f], f"{tag}_lo"), hi], f"{tag}_clip")
            i = add("Range", [zero_f, n_f, one_f], f"{tag}_i")
            col = add("Unsqueeze", [src, const(f"{tag}_ax1", [1], np.int64)], f"{tag}_col")
            dist = add("Abs", [add("Sub", [col, i], f"{tag}_d")], f"{tag}_ad")
            matrices.append(add("Relu", [add("Sub", [one_f, dist], f"{tag}_1md")], f"{tag}_A"))
        a_h, a_w = matrices
        a_wt = add("Transpose", [a_w], "w_At", perm=[1, 0])
        rows = add("MatMul", [x, a_wt], "xw")                      # N×C×h×(s·w)
        last = helper.make_node("MatMul", [a_h, rows], [out], name=_unique(model, f"{name}_hxw"))
        new.append(last)
        model.graph.node.insert(list(model.graph.node).index(node), last)
        model.graph.node.remove(node)
        report.resize_matmul.append(name)
        report.float_nodes.extend(n.name for n in new)
    _prune(model)


def _prune(model) -> None:
    """Remove nodes (repeatedly) whose outputs nothing reads, and initialisers no node reads."""
    outputs = {o.name for o in model.graph.output}
    while True:
        read = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in read for o in n.output if o)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    read = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in read]:
        model.graph.initializer.remove(init)


def integer_form(model, keep: Iterable[str] = ()) -> IntegerFormReport:
    """Apply the module's exact rewrites (see the module docstring) to ``model`` (an onnx ModelProto, changed in
    place); nodes named in ``keep`` (those that stay float anyway) are not rewritten.

    Returns:
        An :class:`IntegerFormReport`; ``range_of`` maps each new tensor to the original
        tensor with the same values up to order (its calibrated range applies).

    Raises:
        onnx.checker.ValidationError: the rewritten model does not check (a bug here).
    """
    import onnx

    keep = set(keep)
    report = IntegerFormReport()
    _rewrite_conv_transpose(model, report, keep)
    _rewrite_sub_of_add(model, report, keep)
    _rewrite_reduce_mean(model, report, keep)
    _rewrite_resize_matmul(model, report, keep)
    onnx.checker.check_model(model)
    return report


def shapes_of_quantized(path) -> int:
    """In the QDQ model at ``path`` (rewritten in place), let every ``Shape`` node that reads a
    DequantizeLinear output read the quantised tensor instead (a shape does not depend on the
    element type), and drop DequantizeLinear nodes nothing reads any more. Without it ONNX
    Runtime dequantises a whole feature map (and transposes it back from its channels-last
    layout) only to take its shape, e.g. for the dynamic Reshape of
    :func:`_depth_to_space_transposes`. Returns how many Shape nodes were rewired."""
    import onnx

    model = onnx.load(os.fspath(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    count = 0
    for node in model.graph.node:
        if node.op_type == "Shape" and node.input[0] in producer \
                and producer[node.input[0]].op_type == "DequantizeLinear":
            node.input[0] = producer[node.input[0]].input[0]
            count += 1
    if count:
        _prune(model)
        onnx.checker.check_model(model)
        onnx.save(model, os.fspath(path))
    return count


def ranges_for(ranges: Mapping, report: IntegerFormReport) -> dict:
    """``ranges`` (tensor → range) with an entry for every tensor :func:`integer_form` created,
    copied from the tensor whose values it permutes (``report.range_of``)."""
    out = dict(ranges)
    for new, old in report.range_of.items():
        if old in ranges:
            out[new] = ranges[old]
    return out
