"""The export form of the router: the same function as the reference ``router.onnx``, with its
fixed full-resolution band features restructured so ONNX Runtime's CPU graph runs them on
whole channel blocks.

Why (issue 11 item 7; ORT 1.32 profile of the shipped router at 640×512, 2 threads): the
reference graph (:func:`tir.engines.training.router_train.build_router_net`, exported by
:func:`~tir.engines.training.router_train.export_router_onnx`) measures the energy of two
frequency bands at full resolution with two separable Gaussian blurs (σ = 1 and 2.5, reflect
padding), each a 1×k and a k×1 convolution of a **1-channel** 512×640 tensor. ONNX Runtime's
blocked (NCHWc) layout pads a 1-channel tensor to a whole block (8 channels on AVX2, 16 on
AVX-512) and reorders every result back: the four blur convolutions were 65 % of the router's
time and the reorders 16 %; the router reached 7-11 % of the machine's dense-conv rate
(``tir bench --roofline``) while the routes reach 58-83 %.

The rewrite (:func:`fast_router_model`) is exact algebra on the same numbers (the outputs are
bit-identical on ORT's CPU provider in our tests; the check allows ``tolerance``):

* **Row strips as channels.** The frame's H rows are cut into K strips of H/K rows (K = 16
  where H allows it: one AVX-512 block, two AVX2 blocks), each with R rows of halo above and
  below (R = the larger blur radius), stacked as K channels: one ``Gather`` of rows, whose
  indices fold in the reflect padding of the rows, of the frame reflect-padded by R columns
  (``Pad``). The band features are per-pixel functions of a (2R+1)² neighbourhood, so each
  strip computes its own rows exactly.
* **Blurs as depthwise convolutions** (group = K) of 1×(2R+1) then (2R+1)×1 over the strips,
  the same taps in every channel; the narrower Gaussian's taps are zero-padded to 2R+1 (the
  added products are exact zeros). The output is K × H/K × W: the blurred frame, strip by strip.
* **The rest on the strips, in the blocked layout**: ORT's NCHWc layout has Add, Mul, Concat and
  AveragePool but no Sub, and converting between layouts costs a pass over the tensor each
  time. So G₁'s vertical taps are negated (−G₁x: IEEE negation commutes exactly with products
  and sums), x − G₁x is x + (−G₁x) and the second band is G₂.₅x + (−G₁x) = −(G₁x − G₂.₅x),
  whose square is the same number; the frame strips (a free ``Reshape`` of the input) enter the
  blocked layout through a 1×1 depthwise convolution of weight 1 (x·1 = x). The squares and
  the p×p average pools (p = 4; H/K is a multiple of p) of the frame and of both squares
  follow (three pools, then one ``Concat`` of the 16× smaller pooled strips); a ``Reshape``
  puts the pooled strips back as 3 × H/p × W/p and a ``Split`` gives the three maps the
  reference graph's pools gave.

Everything downstream (the quarter-resolution band, the logs, the learned trunk and head) is
the reference graph's own nodes, untouched. The rewrite finds the reference feature nodes by
structure (:func:`find_band_features`) and refuses a graph that does not have them, or a
geometry it does not cover, with :class:`ValueError`; :func:`rewrite_router` then checks the
new graph against the old one on ONNX Runtime. Needs the ``onnx`` package (test/train
extras); the rewritten file needs only ONNX Runtime, like every runtime model.
"""
from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

#: recorded in the ONNX metadata (:data:`FORM_KEY`) and in the manifest's router ``export`` entry
FAST_ROUTER_FORM = "fast-router v1 (engines/training/fast_router.py)"
#: ONNX metadata key naming a router graph's export form (absent: the reference graph)
FORM_KEY = "tir.router_form"
#: strip counts tried, best first: 16 and 8 fill whole NCHWc blocks (AVX-512: 16, AVX2: 8)
STRIP_COUNTS = (16, 8, 12, 4, 6, 2)
DEFAULT_TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------
# finding the reference band features
# ---------------------------------------------------------------------------------------------

def _attrs(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _constants(graph) -> Dict[str, np.ndarray]:
    """Initializers and Constant-node values of ``graph`` by name."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            value = next((a for a in n.attribute if a.name == "value"), None)
            if value is not None:
                out[n.output[0]] = numpy_helper.to_array(value.t)
    return out


def find_band_features(model) -> dict:
    """The reference router graph's full-resolution band features, found by structure.

    Looks for what :func:`~tir.engines.training.router_train.export_router_onnx` writes: the
    frame input ``x`` (N×1×H×W, H and W fixed), two separable blurs ``s = Conv_v(Conv_h(Pad(x)))``
    (1-channel 1×k and k×1 kernels), ``d1 = x − s1``, ``d2 = s1 − s2`` and the p×p stride-p
    average pools of x, d1² and d2².

    Args:
        model: an ``onnx.ModelProto``.

    Returns:
        {"input", "height", "width", "pool" (p), "pooled", "energy1", "energy2" (the names of
        the three pooled maps, N×1×H/p×W/p float32), "blur1", "blur2" (each {"h", "v"}: the
        horizontal and vertical taps as float32 vectors of odd length)}.

    Raises:
        ValueError: the graph does not have this structure (the message says what is missing).
    """
    graph = model.graph
    consts = _constants(graph)
    producers = {o: n for n in graph.node for o in n.output}
    consumers: Dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    if len(graph.input) < 1:
        raise ValueError("the graph has no input")
    x = graph.input[0].name
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 1 or dims[2] is None or dims[3] is None:
        raise ValueError(f"the router input {x!r} must be N×1×H×W with fixed H and W, got {dims}")
    height, width = int(dims[2]), int(dims[3])

    def blur_of(name: str) -> Optional[dict]:
        """Taps of a separable blur Conv_v(Conv_h(Pad(x))) ending in ``name``, else None."""
        v = producers.get(name)
        if v is None or v.op_type != "Conv" or len(v.input) != 2:
            return None
        h = producers.get(v.input[0])
        if h is None or h.op_type != "Conv" or len(h.input) != 2:
            return None
        pad = producers.get(h.input[0])
        if pad is None or pad.op_type != "Pad" or pad.input[0] != x:
            return None
        if _attrs(pad).get("mode", b"constant") not in (b"reflect", "reflect"):
            return None
        wh, wv = consts.get(h.input[1]), consts.get(v.input[1])
        if wh is None or wv is None or wh.shape[:3] != (1, 1, 1) or wv.shape[:2] != (1, 1) or wv.shape[3] != 1:
            return None
        for conv in (h, v):
            a = _attrs(conv)
            if a.get("group", 1) != 1 or any(s != 1 for s in a.get("strides", [1, 1])) \
                    or any(d != 1 for d in a.get("dilations", [1, 1])) or any(a.get("pads", [0, 0, 0, 0])):
                return None
        th, tv = wh.reshape(-1).astype(np.float32), wv.reshape(-1).astype(np.float32)
        if len(th) % 2 == 0 or len(tv) % 2 == 0:
            return None
        return {"h": th, "v": tv}

    def pooled_square(name: str, kind: str) -> Tuple[str, int]:
        """The output of AveragePool(Mul(name, name)) and its p; ValueError when absent."""
        for mul in consumers.get(name, []):
            if mul.op_type == "Mul" and list(mul.input) == [name, name]:
                for pool in consumers.get(mul.output[0], []):
                    if pool.op_type == "AveragePool":
                        return pool.output[0], _plain_pool(pool)
        raise ValueError(f"no average pool of the square of {kind} ({name!r})")

    d1 = d2 = None
    for n in graph.node:
        if n.op_type == "Sub" and n.input[0] == x and blur_of(n.input[1]) is not None:
            d1 = n
    if d1 is None:
        raise ValueError("no x − G(x) band: not a router graph with the reference band features "
                         "(router_train.build_router_net)")
    s1 = d1.input[1]
    for n in graph.node:
        if n.op_type == "Sub" and n.input[0] == s1 and blur_of(n.input[1]) is not None:
            d2 = n
    if d2 is None:
        raise ValueError("no G1(x) − G2(x) band: not a router graph with the reference band features")
    energy1, p1 = pooled_square(d1.output[0], "x − G1(x)")
    energy2, p2 = pooled_square(d2.output[0], "G1(x) − G2(x)")
    pooled = None
    for n in consumers.get(x, []):
        if n.op_type == "AveragePool":
            try:
                p0 = _plain_pool(n)
            except ValueError:
                continue
            pooled = n.output[0]
    if pooled is None:
        raise ValueError("no p×p average pool of the frame: not a router graph with the reference band features")
    if not p0 == p1 == p2:
        raise ValueError(f"the frame and band pools differ ({p0}, {p1}, {p2})")
    return {"input": x, "height": height, "width": width, "pool": p0, "pooled": pooled,
            "energy1": energy1, "energy2": energy2, "blur1": blur_of(s1), "blur2": blur_of(d2.input[1])}


def _plain_pool(node) -> int:
    """p of a p×p stride-p AveragePool without padding; ValueError for any other pool."""
    a = _attrs(node)
    k = list(a.get("kernel_shape", []))
    if len(k) != 2 or k[0] != k[1] or list(a.get("strides", [1, 1])) != k or any(a.get("pads", [0, 0, 0, 0])) \
            or a.get("ceil_mode", 0) or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"pool {node.name!r} is not a plain p×p stride-p average pool")
    return int(k[0])


def strip_count(height: int, pool: int, radius: int) -> int:
    """The number of row strips K for a frame of ``height`` rows: the first of :data:`STRIP_COUNTS`
    whose strips hold a whole number of ``pool``-row pooling windows.

    Raises:
        ValueError: no count fits, or the frame is not taller than the blur ``radius`` (reflect
            padding needs it).
    """
    if height <= radius:
        raise ValueError(f"frame height {height} px must exceed the blur radius {radius} px")
    for k in STRIP_COUNTS:
        if height % (k * pool) == 0:
            return k
    raise ValueError(f"frame height {height} px cannot be cut into {'/'.join(map(str, STRIP_COUNTS))} strips "
                     f"of whole {pool}-row pooling windows")


def reflect_rows(n: int, start: int, stop: int) -> np.ndarray:
    """Row indices ``start..stop-1`` of an ``n``-row frame with reflect padding (ONNX Pad
    ``reflect`` / torch ``F.pad(mode="reflect")``: the edge row is not repeated), as int64.
    Needs ``-n < start`` and ``stop < 2n``."""
    i = np.arange(start, stop)
    i = np.where(i < 0, -i, i)
    return np.where(i > n - 1, 2 * (n - 1) - i, i).astype(np.int64)


def _centred(taps: np.ndarray, radius: int) -> np.ndarray:
    """``taps`` (odd length ≤ 2·radius+1) zero-padded to 2·radius+1, centred."""
    r = len(taps) // 2
    out = np.zeros(2 * radius + 1, np.float32)
    out[radius - r:radius + r + 1] = taps
    return out


# ---------------------------------------------------------------------------------------------
# the rewrite
# ---------------------------------------------------------------------------------------------

def router_form(model) -> str:
    """The export form a router ``model`` (onnx.ModelProto) records (:data:`FORM_KEY`), or
    ``"reference"`` when it records none."""
    return next((p.value for p in model.metadata_props if p.key == FORM_KEY), "reference")


def fast_router_model(model):
    """The fast form of a reference router graph (module docstring): a new ``onnx.ModelProto``
    with the same input and output and the full-resolution band features computed on row
    strips; ``model`` is not changed. The metadata gains :data:`FORM_KEY`.

    Raises:
        ValueError: ``model`` is already in the fast form, lacks the reference band features
            (:func:`find_band_features`), or has a geometry the strips do not cover
            (:func:`strip_count`).
    """
    import onnx
    from onnx import helper, numpy_helper

    if router_form(model) != "reference":
        raise ValueError(f"the router graph is already in the form {router_form(model)!r}")
    f = find_band_features(model)
    h, w, p, x = f["height"], f["width"], f["pool"], f["input"]
    rh = max(len(f["blur1"]["h"]), len(f["blur2"]["h"])) // 2
    rv = max(len(f["blur1"]["v"]), len(f["blur2"]["v"])) // 2
    if w <= rh:
        raise ValueError(f"frame width {w} px must exceed the blur radius {rh} px")
    if w % p:
        raise ValueError(f"frame width {w} px is not a multiple of the {p}-px pool")
    k = strip_count(h, p, rv)
    th = h // k
    out = copy.deepcopy(model)
    g = out.graph
    nodes, inits = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), f"fast_router/const/{name}"))
        return f"fast_router/const/{name}"

    def node(op: str, inputs: Sequence[str], name: str, n_out: int = 1, **attrs) -> List[str]:
        outs = [f"fast_router/{name}" + (f":{i}" if n_out > 1 else "") for i in range(n_out)]
        nodes.append(helper.make_node(op, list(inputs), outs, name=f"fast_router/{name}", **attrs))
        return outs

    padded = node("Pad", [x, const("col_pads", np.array([0, 0, 0, rh, 0, 0, 0, rh], np.int64))], "pad_columns",
                  mode="reflect")[0]
    rows = np.stack([reflect_rows(h, i * th - rv, i * th + th + rv) for i in range(k)])
    gathered = node("Gather", [padded, const("strip_rows", rows)], "gather_strips", axis=2)[0]
    strips = node("Reshape", [gathered, const("strips_shape", np.array([0, k, th + 2 * rv, w + 2 * rh], np.int64))],
                  "strips")[0]
    blurred = []   # -G1(x) (negated vertical taps) and G2(x), strip by strip
    for b, sign in (("blur1", -1.0), ("blur2", 1.0)):
        wh = np.tile(_centred(f[b]["h"], rh), (k, 1)).reshape(k, 1, 1, 2 * rh + 1)
        wv = (sign * np.tile(_centred(f[b]["v"], rv), (k, 1))).reshape(k, 1, 2 * rv + 1, 1).astype(np.float32)
        t = node("Conv", [strips, const(f"{b}_h", wh)], f"{b}_h", group=k, kernel_shape=[1, 2 * rh + 1])[0]
        blurred.append(node("Conv", [t, const(f"{b}_v", wv)], f"{b}_v", group=k, kernel_shape=[2 * rv + 1, 1])[0])
    xs = node("Reshape", [x, const("frame_strips_shape", np.array([0, k, th, w], np.int64))], "frame_strips")[0]
    xs = node("Conv", [xs, const("identity", np.ones((k, 1, 1, 1), np.float32))], "frame_strips_blocked",
              group=k, kernel_shape=[1, 1])[0]                   # x·1 = x: puts x in the blocked layout
    d1 = node("Add", [xs, blurred[0]], "band1")[0]              # x + (-G1 x) = x - G1 x
    d2 = node("Add", [blurred[0], blurred[1]], "band2")[0]      # G2 x - G1 x: the same square
    q1 = node("Mul", [d1, d1], "band1_sq")[0]
    q2 = node("Mul", [d2, d2], "band2_sq")[0]
    pools = [node("AveragePool", [t], f"pool{i}", kernel_shape=[p, p], strides=[p, p])[0]
             for i, t in enumerate((xs, q1, q2))]
    zp = node("Concat", pools, "pooled_strips", axis=1)[0]
    maps = node("Reshape", [zp, const("maps_shape", np.array([0, 3, h // p, w // p], np.int64))], "maps")[0]
    split = node("Split", [maps, const("split", np.array([1, 1, 1], np.int64))], "split", n_out=3, axis=1)
    rename = {f["pooled"]: split[0], f["energy1"]: split[1], f["energy2"]: split[2]}
    for n in g.node:
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
    if any(o.name in rename for o in g.output):
        raise ValueError("a pooled band map is a graph output; the rewrite keeps only internal maps")
    g.initializer.extend(inits)
    all_nodes = _prune(list(g.node) + nodes, [o.name for o in g.output])
    del g.node[:]
    g.node.extend(all_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    keep_vi = [v for v in g.value_info if v.name in used]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    entry = out.metadata_props.add()
    entry.key, entry.value = FORM_KEY, FAST_ROUTER_FORM
    onnx.checker.check_model(out)
    return out


def _prune(nodes: list, outputs: Sequence[str]) -> list:
    """The nodes needed for ``outputs``, in a topological order (ties kept in list order)."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    needed, stack = set(), [producer[o] for o in outputs if o in producer]
    while stack:
        i = stack.pop()
        if i in needed:
            continue
        needed.add(i)
        stack += [producer[name] for name in nodes[i].input if name in producer]
    order, done = [], set()

    def visit(i: int) -> None:   # depth-first; the router graph is a few hundred nodes deep at most
        if i in done:
            return
        done.add(i)
        for name in nodes[i].input:
            if name in producer and producer[name] in needed:
                visit(producer[name])
        order.append(nodes[i])

    for i in sorted(needed):
        visit(i)
    return order


# ---------------------------------------------------------------------------------------------
# checking and writing
# ---------------------------------------------------------------------------------------------

def check_frames(height: int, width: int) -> List[np.ndarray]:
    """The frames a rewrite is checked on, float32 in [0, 1]: a batch of two uniform-noise frames
    (every pixel different: a wrong index or padding shows at once), a smooth frame (small
    band energies, where the log features are most sensitive) and a flat frame with faint
    noise (N×1×height×width each)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    smooth = 0.5 + 0.3 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    faint = 0.4 + 0.002 * rng.standard_normal((height, width))
    return [rng.random((2, 1, height, width), dtype=np.float32),
            smooth[None, None].astype(np.float32), faint[None, None].astype(np.float32)]


def max_abs_diff(a, b, frames: Sequence[np.ndarray], threads: int = 1) -> float:
    """The largest absolute difference (float, computed in float64) of the first outputs of ONNX
    models ``a`` and ``b`` (paths or serialised bytes) over ``frames`` (each an N×1×H×W float32
    array), inf when their shapes differ; each model run on ONNX Runtime's CPU provider with
    tir's session options (:func:`tir.engines.backends.onnxruntime.session_options`: the
    optimisation level the runtime uses)."""
    import onnxruntime as ort

    from ..backends.onnxruntime import session_options

    def session(m):
        if isinstance(m, (bytes, bytearray)):
            return ort.InferenceSession(bytes(m), _plain_options(threads), providers=["CPUExecutionProvider"])
        return ort.InferenceSession(str(m), session_options(str(m), threads), providers=["CPUExecutionProvider"])

    sa, sb = session(a), session(b)
    name_a, name_b = sa.get_inputs()[0].name, sb.get_inputs()[0].name
    worst = 0.0
    for x in frames:
        ya, yb = sa.run(None, {name_a: x})[0], sb.run(None, {name_b: x})[0]
        if ya.shape != yb.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(ya.astype(np.float64) - yb))))
    return worst


def _plain_options(threads: int):
    """fp32 session options as tir's runtime sets them (ORT_ENABLE_ALL) for an in-memory model."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    return opts


def onnx_conv_macs(model_or_path) -> int:
    """Multiply-accumulates per frame of every Conv, Gemm and MatMul node of an ONNX model with
    one input of fixed C×H×W (a router), from the node output shapes of one ONNX Runtime run on
    a zero frame: a Conv's ``N·C_out·H_out·W_out·(C_in/group)·k_h·k_w``, a Gemm's or MatMul's
    ``M·K·N``; divided by the batch (1). What the graph executes, zero taps included.

    Raises:
        ValueError: the input has a free dimension besides the batch.
    """
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_or_path)) if not hasattr(model_or_path, "graph") else copy.deepcopy(model_or_path)
    g = model.graph
    dims = [d.dim_value if d.HasField("dim_value") else None for d in g.input[0].type.tensor_type.shape.dim]
    if any(d is None for d in dims[1:]):
        raise ValueError(f"onnx_conv_macs needs fixed input dimensions besides the batch, got {dims}")
    consts = _constants(g)
    counted = [n for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    known = {o.name for o in g.output}
    for n in counted:
        for name in (n.output[0], n.input[0]):
            if name not in known and name not in consts:
                g.output.append(onnx.helper.make_empty_tensor_value_info(name))
                known.add(name)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    x = np.zeros([1] + [int(d) for d in dims[1:]], np.float32)
    shapes = {n: v.shape for n, v in zip(names, sess.run(None, {g.input[0].name: x}))}
    shapes[g.input[0].name] = x.shape
    macs = 0
    for n in counted:
        y = shapes[n.output[0]]
        if n.op_type == "Conv":
            wshape = consts[n.input[1]].shape
            macs += int(np.prod(y)) * int(np.prod(wshape[1:]))
        else:
            a = shapes.get(n.input[0], consts.get(n.input[0], np.zeros(0)).shape)
            trans_a = n.op_type == "Gemm" and _attrs(n).get("transA", 0)
            k_dim = a[-2] if trans_a else a[-1]
            macs += int(np.prod(y)) * int(k_dim)
    return macs


def rewrite_router(src, dst, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Write the fast form (:func:`fast_router_model`) of router ONNX file ``src`` to ``dst``
    (may be the same path: replaced only after the check) and check it against ``src`` on
    ONNX Runtime (:func:`check_frames` at the router's input size, :func:`max_abs_diff`).

    Returns:
        the export record: {"form", "max_abs_diff_vs_previous", "macs" (MACs per call of the
        reference graph: the router's function, counted by :func:`onnx_conv_macs`),
        "graph_macs" (what the new graph executes, zero taps and strip halos included), "strips",
        "from_sha256" (of ``src``), "date"}.

    Raises:
        ValueError: see :func:`fast_router_model` (nothing is written).
        ExportError: the new graph differs from ``src`` by more than ``tolerance`` (nothing is
            written).
    """
    import hashlib
    import os
    import tempfile

    import onnx

    from .export import ExportError

    src, dst = Path(src), Path(dst)
    data = src.read_bytes()
    model = onnx.load_from_string(data)
    new = fast_router_model(model)
    f = find_band_features(model)
    blob = new.SerializeToString()
    diff = max_abs_diff(data, blob, check_frames(f["height"], f["width"]))
    if not diff <= tolerance:
        raise ExportError(f"{src}: the fast router graph differs from it by {diff:.3g} (> {tolerance:g}); "
                          "nothing written")
    record = {"form": FAST_ROUTER_FORM, "max_abs_diff_vs_previous": diff, "macs": onnx_conv_macs(model),
              "graph_macs": onnx_conv_macs(new),
              "strips": strip_count(f["height"], f["pool"], max(len(f["blur1"]["v"]), len(f["blur2"]["v"])) // 2),
              "from_sha256": hashlib.sha256(data).hexdigest(),
              "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".router-", suffix=".onnx", dir=str(dst.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)   # mkstemp makes it 0600: a bundle file must stay readable by the service that runs it
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return record


def rewrite_bundle_router(bundle_dir, out_dir=None, tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Put a bundle's router into the fast form: in place (``out_dir`` None) or in a copy of the
    bundle at ``out_dir`` (:func:`tir.engines.bundle.copy_bundle`; the original is kept).

    The router is read hash-checked (a tampered ``router.onnx`` is refused), rewritten by
    :func:`rewrite_router` (checked against the old graph) and the manifest's router
    ``sha256``, ``files`` entry and ``export`` record updated (:func:`~tir.engines.bundle.save_manifest`
    reads the bundle back and verifies every hash). A router already in the fast form is left
    as it is. If the manifest cannot be written, the old router file is put back.

    Returns:
        the router's ``export`` record (:func:`rewrite_router`), with ``"changed": False`` when
        the router was already in the fast form.

    Raises:
        BundleError: the bundle has no router, fails its checks (a tampered file), ``out_dir``
            exists, or the new router or manifest cannot be written (a read-only bundle, a full
            disk; the bundle is left as it was); ValueError / ExportError: see
            :func:`rewrite_router`. On any error a copy made at ``out_dir`` is removed again.
    """
    from ..bundle import load_bundle, new_copy

    bundle = load_bundle(bundle_dir)
    if out_dir is None:
        return _rewrite_in_place(bundle, tolerance)
    # a router the rewrite refuses (another graph, a size the strips do not cover) or a failed
    # write left the unrewritten copy at --out, which a second try then refused as existing
    with new_copy(bundle.path, out_dir) as copy:
        return _rewrite_in_place(load_bundle(copy), tolerance)


def _rewrite_in_place(bundle, tolerance: float) -> dict:
    """:func:`rewrite_bundle_router` on a loaded bundle, in its own folder. An OSError while writing
    (a read-only bundle, a full disk) is raised as BundleError naming the folder and the reason
    (it was a traceback out of ``tir export --fast-router``)."""
    import json

    import onnx

    from ..bundle import BundleError, read_verified, save_manifest, sha256_file

    if bundle.router_path is None:
        raise BundleError(f"bundle {bundle.path} has no router")
    name = bundle.router["file"]
    data = read_verified(bundle, name)
    if router_form(onnx.load_from_string(data)) == FAST_ROUTER_FORM:
        return dict(bundle.router.get("export") or {"form": FAST_ROUTER_FORM}, changed=False)
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    path = bundle.path / name
    try:
        record = rewrite_router(path, path, tolerance)
    except OSError as exc:
        raise BundleError(f"cannot write the fast router into {bundle.path}: {exc.strerror or exc}; "
                          "give a writable copy with --out (the bundle is unchanged)") from exc
    try:
        digest = sha256_file(path)
        manifest["router"]["sha256"] = digest
        if name in (manifest.get("files") or {}):
            manifest["files"][name] = digest
        manifest["router"]["export"] = record
        save_manifest(bundle.path, manifest)
    except BaseException as exc:
        path.write_bytes(data)   # the old router matches the old manifest again
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write the manifest of {bundle.path}: {exc.strerror or exc}; "
                              "the bundle is unchanged") from exc
        raise
    return dict(record, changed=True)
