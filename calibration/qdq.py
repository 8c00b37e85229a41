"""Calibrated ranges → INT8 models: a TensorRT Q/DQ ONNX and a CPU (ONNX Runtime) U8S8 ONNX.

One calibration (:func:`collect_ranges`: the fp32 model run on the calibration frames with
every float tensor exposed, histograms in :mod:`tir.calibration.entropy`) feeds both flavours:

- **TensorRT** (:func:`write_trt_qdq`), following TensorRT's explicit-quantization rules
  (tensorrt_int8.md §1.3): symmetric INT8 with zero point 0 given as an explicit INT8 tensor
  (the TRT 8.5 DequantizeLinear importer asserts 3 inputs), positive scales, per-channel
  weights on axis 0 (K of KCRS), per-tensor activations; Q/DQ on the activation input and the
  weights of every Conv (weights as float → Q → DQ, the QAT form both parsers fold) and on both
  inputs of residual Adds so the add fuses as an INT8 epilogue; normalisation, GELU/Erf,
  sigmoid and shuffles are left in higher precision (built with the FP16 flag), and so is all
  input preprocessing before the stem and post-processing after the image-level skip
  (:func:`float_nodes`: unshuffle, tone head, field head), and the skip itself with its
  linear correction tail (:func:`image_tail`, docs/int8.md "Session 8").
- **CPU** (:func:`quantize_cpu`): ``onnxruntime.quantization.quantize_static`` in QDQ format
  with uint8 activations and int8 per-channel weights (U8S8), the fast integer path on x86;
  signed-int8 activations (S8S8) run slower than fp32 on this CPU (cpu_budget.md). The same
  ranges go in through ORT's JSON range cache (``calibration_cache_path``), clipped to the
  calibrated amax and made asymmetric from the observed min/max.
"""
from __future__ import annotations

import inspect
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from .entropy import RangeCollector, TensorRange
from . import prompt_scale

INT8_MAX = 127.0
WEIGHTED_OPS = ("Conv", "ConvTranspose")


@dataclass
class QdqReport:
    """What :func:`write_trt_qdq` did: the Q/DQ model's ``path``, the Conv and Add nodes it
    quantised, the nodes ``excluded`` on request, and tensors ``skipped`` (no usable range).
    """
    path: str
    quantized_convs: List[str] = field(default_factory=list)
    quantized_adds: List[str] = field(default_factory=list)
    excluded: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)  # tensors without a usable range


def _float_tensors(model) -> List[str]:
    """Graph inputs and node outputs of float type (after shape inference)."""
    import onnx
    from onnx import TensorProto

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    for node in model.graph.node:  # Constant outputs too: ORT quantises e.g. a Mul by a constant
        names.extend(o for o in node.output if o)
    return [n for n in dict.fromkeys(names) if types.get(n) == TensorProto.FLOAT]


def tensor_session(model, names: Sequence[str], threads: int = 2):
    """An ONNX Runtime CPU session of ``model`` (an onnx ModelProto, changed in place) whose
    outputs include the tensors ``names``, graph optimisation off so that every tensor exists.

    Args:
        model: the loaded ONNX model.
        names: tensor names to expose as outputs (those already outputs stay as they are).
        threads: intra-op threads.

    Returns:
        ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort
    from onnx import helper

    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def collect_ranges(onnx_path, frames, batch_size: int = 1, num_bins: int = 2048, threads: int = 2,
                   progress: bool = True, extra_inputs: Optional[Callable[[int, np.ndarray], Mapping[str, np.ndarray]]] = None
                   ) -> RangeCollector:
    """Run the fp32 model over ``frames`` and histogram every float tensor.

    Every float tensor is made a graph output, graph optimisation is off (so every tensor
    exists) and ONNX Runtime runs on ``threads`` CPU threads. The frames feed the model's first
    input; a model with more inputs (the distilled student's ``prompt``) gets them from
    ``extra_inputs``.

    Args:
        onnx_path: the fp32 ONNX model.
        frames: a :class:`~tir.calibration.data.CalibrationSet`; (N, 1, H, W) float32 batches
            in [0, 1] of ``batch_size``.
        num_bins: histogram bins per tensor.
        extra_inputs: ``f(first, batch) -> {input name: array}`` for every input but the first,
            called per batch with the index of the batch's first frame and the (N, 1, H, W)
            batch (e.g. the student's (N, K) float32 prompt weights).

    Returns:
        A :class:`~tir.calibration.entropy.RangeCollector` holding one histogram per tensor
        (the extra inputs included).

    Raises:
        ValueError: the model has inputs besides the first and ``extra_inputs`` does not give them.
    """
    import onnx

    model = onnx.load(os.fspath(onnx_path))
    names = _float_tensors(model)
    sess = tensor_session(model, names, threads)
    input_name, *others = [i.name for i in sess.get_inputs()]
    out_names = [o.name for o in sess.get_outputs()]
    collector = RangeCollector(num_bins)
    first = 0
    for batch in frames.batches(batch_size, progress=progress, desc="calibration"):
        feeds = {input_name: batch}
        if others:
            extra = dict(extra_inputs(first, batch)) if extra_inputs is not None else {}
            missing = [n for n in others if n not in extra]
            if missing:
                raise ValueError(f"{os.fspath(onnx_path)}: inputs {missing} besides {input_name!r} need values; "
                                 "pass extra_inputs (the student's prompt weights)")
            feeds.update({n: np.ascontiguousarray(extra[n]) for n in others})
        values = sess.run(out_names, feeds)
        collector.update({n: v for n, v in zip(out_names, values) if n in names or n in feeds})
        first += len(batch)
    return collector


def side_input_nodes(model, inputs: Iterable[str]) -> List[str]:
    """Nodes computed from the graph inputs ``inputs`` (and constants) alone, in graph order.

    For the distilled student (engines/training/models/student.py) with ``inputs=["prompt"]``
    this is the prompt branch: the (N, K) weights' MatMul with the prompt table, its reshape to
    N×D×1×1 and the FiLM convs that turn it into per-channel scales and shifts, up to (not
    including) the nodes where they meet the image features. Kept in float by
    :func:`quantize_cpu` and :func:`write_trt_qdq` (``float_inputs``): the prompt is a mixing
    weight per task, not an activation with a calibrated range, and the branch costs nothing.
    """
    inits = {i.name for i in model.graph.initializer}
    side = set(inputs)
    graph_inputs = {i.name for i in model.graph.input} - inits
    image = graph_inputs - side
    from_image: set = set(image)
    from_side: set = set(side)
    nodes: List[str] = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        dynamic = [i for i in node.input if i and i not in inits]
        if any(i in from_image for i in dynamic):
            from_image.update(node.output)
        elif any(i in from_side for i in dynamic):
            from_side.update(node.output)
            nodes.append(node.name)
    return nodes


def side_float_nodes(model, inputs: Iterable[str]) -> List[str]:
    """What ``float_inputs`` keeps out of INT8, in graph order: the branch computed from the graph
    inputs ``inputs`` alone (:func:`side_input_nodes`) and the nodes that read it, where it meets
    the image (the student's FiLM Mul/Add: a Q/DQ there would quantise the prompt-derived scale
    and shift with it)."""
    side = set(side_input_nodes(model, inputs))
    tensors = _side_tensors(model, inputs)
    return [n.name for n in model.graph.node if n.name in side or set(n.input) & tensors]


#: what ``quantize_cpu(film=...)`` does with the student's FiLM multiply/add (:func:`film_nodes`)
FILM_MODES = ("float", "int8")
#: the modes of ``quantize_cpu(film=...)``: :data:`FILM_MODES`, and ``"fold"``: ``"int8"`` with the FiLM
#: scale 1 + γ folded into the block convolution's weight scales (calibration/film_fold.py)
CPU_FILM_MODES = FILM_MODES + ("fold",)
#: the ops where the prompt branch meets the image features in a FiLM block, h·(1 + γ) + β
FILM_OPS = ("Mul", "Add")


def film_nodes(model, inputs: Iterable[str]) -> List[str]:
    """The FiLM multiply/add of the block path, node names in graph order: the Mul and Add nodes
    that read a tensor of the side branch of ``inputs`` (:func:`side_input_nodes`; for the student
    ``inputs=["prompt"]``: its 1 + γ(p) and β(p), (N, C, 1, 1)) together with an image feature
    (``conv1(x)·(1 + γ) + β``, engines/training/models/student.py), outside the pre- and
    post-processing that stays float by rule (:func:`float_regions`: the field head's FiLM).

    ``quantize_cpu(film="int8")`` quantises these (QLinearMul / QLinearAdd, their side inputs on
    uint8 grids of the calibrated ranges of 1 + γ and β); with ``film="float"`` they stay float
    (part of :func:`side_float_nodes`). Not the per-prompt output scale's Muls of a student
    rewritten by :mod:`tir.calibration.prompt_scale` (named ``prompt_scale.PREFIX/...``): they read
    the prompt branch too, but ``prompt_scale.fuse_cpu`` folds them into the quantisation scales."""
    inputs = list(inputs)
    side = set(side_input_nodes(model, inputs)) | {n.name for n in model.graph.node
                                                   if n.name.startswith(f"{prompt_scale.PREFIX}/")}
    tensors = _side_tensors(model, inputs)
    regions = float_regions(model)
    return [n.name for n in model.graph.node
            if n.op_type in FILM_OPS and n.name not in side and n.name not in regions.pre | regions.post
            and set(n.input) & tensors]


def _side_tensors(model, inputs: Iterable[str]) -> set:
    """The graph inputs ``inputs`` and every tensor computed from them alone
    (:func:`side_input_nodes`'s outputs)."""
    inputs = list(inputs)
    side = set(side_input_nodes(model, inputs))
    return set(inputs) | {o for n in model.graph.node if n.name in side for o in n.output}


def _consumers(model) -> Dict[str, list]:
    out: Dict[str, list] = {}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            out.setdefault(name, []).append((node, i))
    return out


def _spatial_ones(model) -> set:
    """Tensors whose inferred H and W are both 1 (global statistics, per-frame MLP vectors)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    ones = set()
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") and d.dim_value == 1 for d in dims[2:]):
            ones.add(vi.name)
    return ones


@dataclass
class FloatRegions:
    """The parts of a route graph kept out of INT8 by rule (node names), and the image tensors."""
    pre: set      # before the stem: unshuffle, tone head
    post: set     # after the image-level skip: field head
    image: set    # graph inputs and preprocessing outputs (what an image-level skip Add reads)
    tail: set = field(default_factory=set)  # the image-level skip and its linear correction tail


#: ops that are linear in their one non-constant input (with a constant/initialiser weight):
#: a chain of them after the last nonlinearity maps features to the image delta linearly.
LINEAR_OPS = ("Conv", "ConvTranspose", "DepthToSpace", "SpaceToDepth", "Reshape", "Transpose", "Identity",
              "Squeeze", "Unsqueeze", "Flatten", "Mul", "Div")
#: two-input merges of feature tensors (residual sums, the global-residual difference)
MERGE_OPS = ("Add", "Sub")


def image_tail(model, image: set, pre: set = frozenset(), blocks: int = 0) -> set:
    """The image-level skip Adds and their **linear correction tail**, node names.

    Walking back from each image-level skip (an Add, not in ``pre``, with exactly one input in
    ``image``) along its other input: every node linear in its one non-constant input
    (:data:`LINEAR_OPS`: the output projection and reconstruction convs, pixel shuffles) is
    taken and the walk goes on; the first two-input merge (:data:`MERGE_OPS`: the last residual
    Add, a route's global-residual Sub) is taken and the walk stops; anything else (a
    nonlinearity, a node reading two non-constant inputs otherwise) stops it untaken.

    ``blocks`` > 0 also takes that many residual blocks above that merge: a merge's *stream*
    input is the one its other input was computed from (only Adds: a Sub is a global-residual
    difference, not a block, and ends the walk); the block is every node that both
    depends on the stream tensor and feeds the other input (the residual branch, e.g. the
    student's conv1 → FiLM → ReLU → conv2), and the walk goes on up the stream to the next
    merge, which is taken for the next block.

    Why (docs/int8.md, "Session 8"): these tensors carry the image delta at image scale with no
    nonlinearity after them, so every quantisation step lands on the output pixel for pixel; on
    the distilled student, quantised alone they are the five worst nodes (33.9-39.5 dB fidelity
    to fp32), and ONNX Runtime quantises the skip Add itself (its output = the whole restored
    frame, whose calibrated range is set by rare outlier pixels: SQNR 37 dB).
    """
    inits = {i.name for i in model.graph.initializer}
    fixed = inits | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    tail: set = set()
    for node in model.graph.node:
        if node.op_type != "Add" or node.name in pre or len(node.input) != 2:
            continue
        if len(set(node.input) & image) != 1 or set(node.input) & fixed:
            continue
        tail.add(node.name)
        tensor = next(i for i in node.input if i not in image)
        while tensor in producer:
            n = producer[tensor]
            dynamic = [i for i in n.input if i and i not in fixed]
            if n.name in pre or n.name in tail or len(dynamic) == 0:
                break
            if n.op_type in MERGE_OPS and len(dynamic) == 2:
                tail.add(n.name)
                tail |= _residual_blocks(model, n, blocks, producer, fixed)
                break
            if n.op_type not in LINEAR_OPS or len(dynamic) != 1 or (n.op_type == "Div" and n.input[0] in fixed):
                break  # (constant / x is not linear)
            tail.add(n.name)
            tensor = dynamic[0]
    return tail


def _ancestors(tensor: str, producer: Mapping, stop: set) -> set:
    """Node names upstream of ``tensor``, not walking through the tensors in ``stop``."""
    seen: set = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if t in stop or n is None or n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(i for i in n.input if i)
    return seen


def _residual_blocks(model, merge, blocks: int, producer: Mapping, fixed: set) -> set:
    """``blocks`` residual blocks above the two-input ``merge`` node (see :func:`image_tail`)."""
    taken: set = set()
    while blocks > 0 and merge is not None and merge.op_type == "Add":
        a, b = [i for i in merge.input if i and i not in fixed][:2]
        up_b, up_a = _ancestors(b, producer, set()), _ancestors(a, producer, set())
        if a in producer and producer[a].name in up_b:
            stream, branch = a, b
        elif b in producer and producer[b].name in up_a:
            stream, branch = b, a
        else:
            break  # not a residual block: neither input is computed from the other
        body = _ancestors(branch, producer, {stream})
        downstream = _descendants(model, stream)
        taken |= body & downstream
        merge = producer.get(stream)
        if merge is not None and merge.op_type in MERGE_OPS and blocks > 1:
            taken.add(merge.name)
        blocks -= 1
    return taken


def _descendants(model, tensor: str) -> set:
    """Node names downstream of ``tensor`` (graph order is topological)."""
    live, seen = {tensor}, set()
    for node in model.graph.node:
        if any(i in live for i in node.input):
            seen.add(node.name)
            live.update(node.output)
    return seen


def float_regions(model, tail_blocks: int = 0) -> FloatRegions:
    """Find the preprocessing and post-processing of ``model`` (one shape inference).

    Preprocessing: the stem is the first weighted node that works on an image (its input is not
    1×1 spatially) with more than one output channel (a 1-channel conv is an average pool
    written as a conv by the export form of engines/training/fast_route.py); everything it depends on is
    input preprocessing: the pixel unshuffle and, in
    tone-head routes, the whole-frame statistics, their per-frame MLP and the affine tone
    correction (tir.engines.training.models.ecmrnet.ToneHead). Post-processing: every node after the
    image-level skip Add (``input + correction``), e.g. a route's whole-frame field head
    (tir.engines.training.models.ecmrnet.FieldHead), which pools the restored image and adds a smooth
    field to it. Quantising either would put the whole frame (or its few global statistics,
    which span different scales) through 8 bits; they cost next to nothing in higher precision.
    """
    ones = _spatial_ones(model)
    inits = {i.name for i in model.graph.initializer}
    pre: set = set()
    out_channels = {i.name: (i.dims[0] if len(i.dims) == 4 else 0) for i in model.graph.initializer}
    # a 1-output-channel conv on the image is a pooling written as a conv (engines/training/fast_route.py:
    # the tone head's and field head's average pools), not the stem
    stem = next((n for n in model.graph.node if n.op_type in WEIGHTED_OPS
                 and n.input[0] not in inits and n.input[0] not in ones
                 and not (n.op_type == "Conv" and len(n.input) > 1 and out_channels.get(n.input[1]) == 1)), None)
    if stem is not None:
        producer = {o: n for n in model.graph.node for o in n.output}
        stack = [stem.input[0]]
        while stack:
            node = producer.get(stack.pop())
            if node is not None and node.name not in pre:
                pre.add(node.name)
                stack.extend(i for i in node.input if i)
    image = ({i.name for i in model.graph.input} - inits) | {o for n in model.graph.node if n.name in pre
                                                             for o in n.output}
    consumers = _consumers(model)
    stack = [o for n in model.graph.node if n.op_type == "Add" and n.name not in pre
             and len(set(n.input) & image) == 1 for o in n.output]
    post: set = set()
    while stack:
        for node, _ in consumers.get(stack.pop(), []):
            if node.name not in post:
                post.add(node.name)
                stack.extend(node.output)
    return FloatRegions(pre, post, image, image_tail(model, image, pre, tail_blocks) - post)


def _in_graph_order(model, names: set) -> List[str]:
    return [n.name for n in model.graph.node if n.name in names]


def preprocess_nodes(model) -> List[str]:
    """Nodes before the stem, in graph order (:func:`float_regions`)."""
    return _in_graph_order(model, float_regions(model).pre)


def postprocess_nodes(model) -> List[str]:
    """Nodes after the image-level skip Add, in graph order (:func:`float_regions`)."""
    return _in_graph_order(model, float_regions(model).post)


def image_skips(model, regions: Optional[FloatRegions] = None) -> List[str]:
    """The image-level skip Adds (``input + correction``: an Add outside the preprocessing with
    exactly one input an image tensor of :func:`float_regions` and no constant input), node
    names in graph order. Their output is the whole restored frame (before any post-processing)."""
    regions = regions or float_regions(model)
    fixed = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                         for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "Add" and n.name not in regions.pre
            and len(n.input) == 2 and len(set(n.input) & regions.image) == 1 and not set(n.input) & fixed]


def read_float(path, nodes: Iterable[str]) -> List[str]:
    """Rewire, in the QDQ model at ``path``, every input of the float ``nodes`` that is the
    ``DequantizeLinear`` copy of a tensor produced by a float node (or a graph input) to that
    tensor itself, so a node kept float reads the float value and not its 8-bit copy. A tensor
    produced by a quantised node (one that reads a ``DequantizeLinear`` output) is left alone:
    reading it directly would keep ONNX Runtime from fusing its producer into an integer kernel.
    Saves the model in place; returns the rewired tensor names.

    Why: ONNX Runtime's QDQ quantiser gives a tensor one Q/DQ pair shared by all its consumers, so
    the image-level skip, kept float, still added the frame's 8-bit copy made for the stem
    (docs/int8.md, "Session 17").
    """
    import onnx

    model = onnx.load(os.fspath(path))
    keep = set(nodes)
    producer = {o: n for n in model.graph.node for o in n.output}
    inputs = {i.name for i in model.graph.input}
    done = []
    for node in model.graph.node:
        if node.name not in keep:
            continue
        for k, name in enumerate(node.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is None or q.op_type != "QuantizeLinear":
                continue
            src = q.input[0]
            made_by = producer.get(src)
            if src in inputs or (made_by is not None and not any(
                    producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in made_by.input)):
                node.input[k] = src
                done.append(src)
    if done:
        onnx.save(model, os.fspath(path))
    return done


def float_nodes(model, tail: bool = False, tail_blocks: int = 0) -> List[str]:
    """Everything kept out of INT8 by rule: before the stem, after the image-level skip and, with
    ``tail``, the skip itself with its linear correction tail and ``tail_blocks``
    residual blocks above it (:func:`image_tail`)."""
    regions = float_regions(model, tail_blocks)
    return _in_graph_order(model, regions.pre | regions.post | (regions.tail if tail else set()))


def qdq_targets(model, global_skip: bool = False, regions: Optional[FloatRegions] = None,
                float_tail: bool = False) -> Dict[str, list]:
    """{activation tensor: [(node index, input index)]} that TensorRT wants quantised.

    Nodes before the stem or after the image-level skip (:func:`float_regions`, computed here
    unless given) are never targets, nor (``float_tail``) the skip's linear correction
    tail (:func:`image_tail`; it also keeps the skip float whatever ``global_skip`` says). An Add fed directly by the graph input or by a
    preprocessing output is the image-level skip (output = input + correction); quantising it
    would put the whole frame through 8 bits (measured on PlainNet: 49 dB → 62 dB fidelity to
    fp32 when it is left in higher precision), so it is excluded unless ``global_skip=True``.
    """
    regions = regions or float_regions(model)
    inits = {i.name for i in model.graph.initializer}
    constants = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    skip_float = regions.pre | regions.post | (regions.tail if float_tail else set())
    fixed = inits | constants
    targets: Dict[str, list] = {}
    for k, node in enumerate(model.graph.node):
        if node.name in skip_float:
            continue
        if node.op_type in WEIGHTED_OPS and node.input[0] not in fixed:
            targets.setdefault(node.input[0], []).append((k, 0))
        elif node.op_type == "Add" and len(node.input) == 2 and not (set(node.input) & fixed):
            if not global_skip and set(node.input) & regions.image:
                continue
            for i in range(2):
                targets.setdefault(node.input[i], []).append((k, i))
    return targets


def write_trt_qdq(onnx_path, ranges: Mapping[str, TensorRange], out_path,
                  exclude_nodes: Iterable[str] = (), per_channel: bool = True,
                  quantize_adds: bool = True, global_skip: bool = False,
                  float_inputs: Sequence[str] = (), float_tail: bool = False, tail_blocks: int = 0) -> QdqReport:
    """Insert TensorRT-style Q/DQ pairs (see the module docstring) and save the model.

    Activation scales are per tensor, amax / 127 from ``ranges``; weight scales per output
    channel for Conv (axis 0), per tensor for ConvTranspose; all zero points 0 (TensorRT INT8
    is symmetric, tensorrt_int8.md §1.3).

    ``exclude_nodes``: node names left unquantised (they run FP16 when built with the FP16 flag);
    ``quantize_adds=False`` leaves residual Adds in higher precision; ``global_skip=True`` also
    quantises the image-level skip Add (see :func:`qdq_targets`); ``float_inputs``: graph inputs
    kept float with every node computed from them alone and the nodes that read those
    (:func:`side_float_nodes`, the student's prompt branch and FiLM Mul/Add), so no Q/DQ pair is
    ever put on them; ``float_tail``: the image-level skip and its linear correction
    tail stay float (:func:`image_tail`), with ``tail_blocks`` residual blocks above it.

    Returns:
        A :class:`QdqReport` (``excluded`` lists the nodes asked for, not those kept float by rule).

    Raises:
        ValueError: the model's opset is below 13 (no per-channel Q/DQ).
        onnx.checker.ValidationError: the rewritten model does not check.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(os.fspath(onnx_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise ValueError(f"{onnx_path}: opset {opset} < 13 has no per-channel Q/DQ; re-export with opset 17")
    exclude = set(exclude_nodes)
    report = QdqReport(path=os.fspath(out_path), excluded=sorted(exclude))
    regions = float_regions(model, tail_blocks)
    exclude |= regions.pre | regions.post | set(side_float_nodes(model, float_inputs) if float_inputs else ())
    exclude |= set(prompt_scale.float_nodes(model))
    if float_tail:
        exclude |= regions.tail
    inits = {i.name: i for i in model.graph.initializer}
    new_nodes: Dict[int, list] = {}  # insert before node index
    graph_nodes = list(model.graph.node)
    new_inits = []

    def add_qdq(tensor: str, scale: np.ndarray, axis: Optional[int], before: int, tag: str) -> str:
        scale = np.asarray(scale, np.float32)
        zp = np.zeros(scale.shape, np.int8)
        s_name, z_name = f"{tag}_scale", f"{tag}_zero_point"
        new_inits.extend([numpy_helper.from_array(scale, s_name), numpy_helper.from_array(zp, z_name)])
        attrs = {"axis": axis} if axis is not None else {}
        q_out, dq_out = f"{tag}_quantized", f"{tag}_dequantized"
        new_nodes.setdefault(before, []).extend([
            helper.make_node("QuantizeLinear", [tensor, s_name, z_name], [q_out], name=f"{tag}_QuantizeLinear", **attrs),
            helper.make_node("DequantizeLinear", [q_out, s_name, z_name], [dq_out], name=f"{tag}_DequantizeLinear", **attrs),
        ])
        return dq_out

    # activations: one Q/DQ pair per tensor, shared by all its targeted consumers
    for tensor, uses in qdq_targets(model, global_skip, regions, float_tail).items():
        uses = [(k, i) for k, i in uses if graph_nodes[k].name not in exclude
                and (quantize_adds or graph_nodes[k].op_type != "Add")]
        if not uses:
            continue
        r = ranges.get(tensor)
        if r is None or not r.amax > 0:
            report.skipped.append(tensor)
            continue
        first = min(k for k, _ in uses)
        dq = add_qdq(tensor, np.float32(r.amax / INT8_MAX), None, first, _safe(tensor))
        for k, i in uses:
            n = graph_nodes[k]
            n.input[i] = dq
            bucket = report.quantized_convs if n.op_type in WEIGHTED_OPS else report.quantized_adds
            if n.name not in bucket:
                bucket.append(n.name)

    # weights: per output channel for Conv (axis 0 = K of KCRS), per tensor for ConvTranspose
    done: Dict[str, str] = {}
    for k, node in enumerate(graph_nodes):
        if node.op_type not in WEIGHTED_OPS or node.name in exclude or len(node.input) < 2:
            continue
        w_name = node.input[1]
        if w_name in done:
            node.input[1] = done[w_name]
            continue
        if w_name not in inits:
            report.skipped.append(w_name)
            continue
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        if per_channel and node.op_type == "Conv":
            amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            axis = 0
        else:
            amax = np.array(np.abs(w).max(), np.float32)
            axis = None
        scale = np.maximum(amax, 1e-8) / INT8_MAX  # TensorRT: scales must all be positive
        done[w_name] = node.input[1] = add_qdq(w_name, scale, axis, k, _safe(w_name))

    nodes = []
    for k, node in enumerate(graph_nodes):
        nodes.extend(new_nodes.get(k, []))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(new_inits)
    onnx.checker.check_model(model)
    os.makedirs(os.path.dirname(os.path.abspath(report.path)), exist_ok=True)
    onnx.save(model, report.path)
    return report


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name).strip("_") or "t"


def _tensors_data(ranges: Mapping[str, TensorRange]):
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    data = {}
    for name, r in ranges.items():
        lo, hi = r.asymmetric()
        if hi - lo <= 0:
            hi = lo + 1e-6
        data[name] = TensorData(lowest=np.array(lo, np.float32), highest=np.array(hi, np.float32))
    return TensorsData(CalibrationMethod.MinMax, data)


def quantize_cpu(onnx_path, ranges: Mapping[str, TensorRange], out_path, activation: str = "uint8",
                 per_channel: bool = True, reader=None, exclude_nodes: Sequence[str] = (),
                 reduce_range: bool = True, float_inputs: Sequence[str] = (), float_tail: bool = False,
                 tail_blocks: int = 0, integer_form: bool = True, float_skip: bool = True,
                 fuse_prompt_scale: bool = True, film: str = "float") -> str:
    """ORT static QDQ quantisation from our ranges; ``activation`` "uint8" (U8S8) or "int8" (S8S8).

    ``float_inputs``: graph inputs kept float, with every node computed from them alone and
    the nodes that read those (:func:`side_float_nodes`: the student's prompt weights, its
    prompt branch and the FiLM Mul/Add); the branch's ranges are not given to ONNX Runtime, so
    it puts no QuantizeLinear on them. ``float_tail``: the image-level skip Add and its
    linear correction tail stay float (:func:`image_tail`, part of :func:`float_nodes`), with
    ``tail_blocks`` residual blocks above it.

    ``film`` (with ``float_inputs``): ``"float"`` (default) keeps the FiLM multiply/add where the
    side branch meets the image features (:func:`film_nodes`) float with the branch; ``"int8"``
    leaves them to the quantiser (QLinearMul / QLinearAdd on ONNX Runtime's integer kernels, so
    no dequantise, float NCHW transpose and requantise around each block: docs/int8.md,
    "Session 19" and "Session 23"), the branch's tensors they read (1 + γ, β) quantised on their
    calibrated ranges (uint8, per tensor), the branch itself still float. This changes the
    numerics: QAT with the same option (``engines/training/qat.py`` reads the quantisers back
    from this model) and the gate decide whether a model made so may ship. ``"fold"``: as
    ``"int8"``, then the FiLM scale 1 + γ(p) folded into the weight scales of the convolution it
    multiplies (calibration/film_fold.py: one QLinearMul per block fewer, the int8 weights and
    int32 bias unchanged; the model then takes one frame per run), checked against the unfolded
    model on ONNX Runtime before it is saved; only with ``fuse_prompt_scale`` (the model QAT reads
    back, ``fuse_prompt_scale=False``, is the ``"int8"`` one).

    ``float_skip`` (default on): the image-level skip Adds (:func:`image_skips`) stay float, as
    in the TensorRT flavour (:func:`qdq_targets`), and read the float frame, not the 8-bit copy
    made for the stem (:func:`read_float`): quantised, the skip put the restored frame itself
    on a uint8 grid whose range other inputs set (the student: [−0.50, 1.42], step 0.0075,
    error power 4.7e-6 alone, more than the clean prompt's whole 0.3 dB budget of 2.9e-6;
    docs/int8.md, "Session 17").

    ``reduce_range`` (default on): 7-bit weights. On x86 without VNNI, ONNX Runtime's U8S8
    kernels multiply with AVX2 ``vpmaddubsw``, which adds each pair of u8×s8 products into a
    *saturating int16*: 2·255·127 = 64770 > 32767, so with full-range weights a pair of large
    activations meeting large weights clips. Measured on the shipped bundle (docs/int8.md): the
    same QDQ model lost 1.25 dB on ``noise`` with ORT's integer kernels and 0.05 dB with graph
    optimisation off (float convs between Q/DQ), and 0.05 dB with 7-bit weights (2·255·63 =
    32130 fits). Turn it off only for a target with VNNI (``vpdpbusd`` accumulates in int32);
    on this session's AVX512-VNNI CPU 8-bit weights ran no faster and moved the gate loss by
    at most 0.02 dB (docs/int8.md), so 7-bit weights are the default everywhere. The model
    records both choices and the calibrating CPU in its metadata (:func:`stamp_int8_cpu`), and
    the ORT engines refuse full 8-bit U8S8 weights on a CPU without VNNI.

    A student rewritten with a per-prompt output scale (:mod:`tir.calibration.prompt_scale`)
    keeps its last residual merge float for the quantiser, then has the scale folded into the
    merge's QLinearAdd and the correction's DequantizeLinear (``prompt_scale.fuse_cpu``: no
    extra pass over the image; the model then takes one frame per run); ``fuse_prompt_scale=False``
    leaves the Muls and the merge's Q/DQ as they are (QAT reads the quantisers from them).

    ``integer_form`` (default on): before quantising, the exact rewrites of
    :mod:`tir.calibration.integer_form` (ConvTranspose k=stride → 1×1 Conv + DepthToSpace,
    ``(a + b) − a`` → ``b``, spatial ReduceMean → GlobalAveragePool) are applied to every node
    not kept float (and a bilinear Resize becomes two float MatMuls, kept float), so ONNX Runtime's integer kernels cover them instead of float islands
    between Q/DQ pairs (the module docstring there says why); the new tensors inherit the ranges of the
    tensors they permute, and DepthToSpace/SpaceToDepth are quantised with their input's
    range. The model records what was rewritten (:func:`stamp_int8_cpu`, key
    ``tir.int8.integer_form``).

    Returns:
        ``out_path``.

    Raises:
        KeyError: ``activation`` is neither "uint8" nor "int8".
        ValueError: this onnxruntime lacks ``calibration_cache_path`` and no ``reader`` was given;
            ``film`` is not one of :data:`CPU_FILM_MODES`; ``film="fold"`` on a student whose FiLM
            does not read a convolution's output, or whose folded model does not reproduce the
            unfolded one (``film_fold.foldable``, ``film_fold.fold_cpu``; nothing is written then).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    import onnx

    if film not in CPU_FILM_MODES:
        raise ValueError(f"film={film!r}: the FiLM multiply/add is one of {', '.join(CPU_FILM_MODES)}")
    act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[activation]
    out_path = os.fspath(out_path)
    model = onnx.load(os.fspath(onnx_path))
    films = film_nodes(model, float_inputs) if float_inputs and film in ("int8", "fold") else []
    film_int8 = set(films)
    fold = []
    if film == "fold":   # refused before anything is written
        from .film_fold import foldable

        fold = foldable(model, films)
    side_float = [n for n in (side_float_nodes(model, float_inputs) if float_inputs else []) if n not in film_int8]
    exclude_nodes = list(dict.fromkeys(list(exclude_nodes) + float_nodes(model, tail=float_tail, tail_blocks=tail_blocks)
                                       + side_float
                                       + (image_skips(model) if float_skip else [])
                                       + prompt_scale.float_nodes(model)))
    if float_inputs:
        side = _side_tensors(model, float_inputs)
        if film_int8:   # the FiLM's own side inputs (1 + γ, β) keep their ranges: the quantised FiLM reads them
            side -= {i for n in model.graph.node if n.name in film_int8 for i in n.input}
        ranges = {k: r for k, r in ranges.items() if k not in side}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    op_types = None
    rewritten = None
    if integer_form:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        from .integer_form import PERMUTATION_OPS, integer_form as _integer_form, ranges_for

        rewritten = _integer_form(model, keep=exclude_nodes)
        ranges = ranges_for(ranges, rewritten)
        exclude_nodes = list(dict.fromkeys(exclude_nodes + rewritten.float_nodes))
        op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry) | set(PERMUTATION_OPS))
    tensors = _tensors_data(ranges)
    kwargs = dict(quant_format=QuantFormat.QDQ, activation_type=act, weight_type=QuantType.QInt8,
                  per_channel=per_channel, reduce_range=reduce_range, calibrate_method=CalibrationMethod.MinMax,
                  nodes_to_exclude=list(exclude_nodes) or None, op_types_to_quantize=op_types,
                  extra_options={"ActivationSymmetric": activation == "int8", "WeightSymmetric": True})
    with tempfile.TemporaryDirectory(prefix="tir-qdq-") as tmp:
        source = os.fspath(onnx_path)
        if rewritten is not None and rewritten.changed:
            source = os.path.join(tmp, "integer_form.onnx")
            onnx.save(model, source)
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            from onnxruntime.quantization.calibrate import save_tensors_data

            cache = os.path.join(tmp, "ranges.json")
            save_tensors_data(tensors, cache)
            quantize_static(source, out_path, calibration_data_reader=None,
                            calibration_cache_path=cache, **kwargs)
        else:  # older ORT: pin every range through TensorQuantOverrides, calibration pass still runs
            if reader is None:
                raise ValueError("this onnxruntime has no calibration_cache_path; pass reader= (a FrameDataReader)")
            kwargs["extra_options"]["TensorQuantOverrides"] = {
                name: [{"rmin": float(td.lowest), "rmax": float(td.highest)}] for name, td in tensors.items()}
            quantize_static(source, out_path, calibration_data_reader=reader, **kwargs)
    if integer_form:
        from .integer_form import shapes_of_quantized

        shapes_of_quantized(out_path)
    read_float(out_path, exclude_nodes)
    if fuse_prompt_scale:   # a per-prompt output scale (student): folded into the quantisation scales
        prompt_scale.fuse_cpu(out_path)
        if fold:   # the FiLM scale into the block convolutions' weight scales
            from .film_fold import fold_cpu

            try:
                fold_cpu(out_path, fold)
            except ValueError:
                os.remove(out_path)
                raise
    stamp_int8_cpu(out_path, activation, reduce_range,
                   integer_form=rewritten.to_dict() if rewritten is not None else None)
    return out_path


def stamp_int8_cpu(path, activation: str, reduce_range: bool, cpu=None,
                   integer_form: Optional[Mapping[str, list]] = None) -> Dict[str, str]:
    """Record in the ONNX metadata of the CPU INT8 model at ``path`` how it was quantised and on
    what CPU, so that a run elsewhere can tell (``tir.engines.backends.onnxruntime.int8_cpu_problem``):
    ``tir.int8.activations`` (``"uint8"``/``"int8"``), ``tir.int8.weight_bits`` (``"7"`` with
    ``reduce_range``, else ``"8"``) and ``tir.int8.calibrated_cpu`` (JSON:
    :func:`tir.edge.machine.int8_cpu_features` of ``cpu``, default this CPU, and ``model``: this
    machine's CPU model name, or None when ``cpu`` describes another CPU, whose name is not known
    here), and with ``integer_form`` (the :class:`~tir.calibration.integer_form.IntegerFormReport`
    as a dict) ``tir.int8.integer_form`` (JSON: the node names each rewrite replaced). Rewrites
    the file; returns the keys written."""
    import json

    import onnx

    from tir.edge.machine import cpu_model, int8_cpu_features

    model_name = cpu_model() if cpu is None else None   # a given cpu is not necessarily this machine's
    cpu = cpu or int8_cpu_features()
    meta = {"tir.int8.activations": activation, "tir.int8.weight_bits": "7" if reduce_range else "8",
            "tir.int8.calibrated_cpu": json.dumps({"model": model_name, **cpu.to_dict()}, sort_keys=True)}
    if integer_form is not None:
        meta["tir.int8.integer_form"] = json.dumps(dict(integer_form), sort_keys=True)
    model = onnx.load(os.fspath(path))
    props = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        prop = props[key] if key in props else model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, os.fspath(path))
    return meta


def trt_cache_from_ranges(ranges: Mapping[str, TensorRange], path, version: str = "8.5.2",
                          algorithm: str = "EntropyCalibration2"):
    """The same ranges as a native TensorRT calibration cache (implicit path, TRT 8.5 / DLA),
    written to ``path``; tensors with amax 0 are left out.

    Returns:
        The :class:`~tir.calibration.trt_cache.TrtCalibrationCache` written.
    """
    from .trt_cache import TrtCalibrationCache

    cache = TrtCalibrationCache.from_amax({k: r.amax for k, r in ranges.items() if r.amax > 0}, version, algorithm)
    cache.write(path)
    return cache
