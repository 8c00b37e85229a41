"""calibration/qdq.py: TensorRT Q/DQ ONNX and the CPU U8S8 model from one calibration."""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from tir.calibration.data import calibration_set
from tir.calibration.qdq import collect_ranges, quantize_cpu, trt_cache_from_ranges, write_trt_qdq
from tir.calibration.trt_cache import TrtCalibrationCache
from tir.engines.backends.onnxruntime import ort_session
from tir.engines.training.export import audit_onnx, export_onnx
from tir.engines.metrics import psnr


class ResNetLite(nn.Module):
    def __init__(self, c=8):
        super().__init__()
        torch.manual_seed(0)
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.head = nn.Conv2d(4, c, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.tail = nn.Conv2d(c, 4, 3, padding=1)

    def forward(self, x):
        f = self.head(self.down(x))
        f = f + self.block(f)
        return x + 0.1 * self.up(self.tail(f))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    d = tmp_path_factory.mktemp("qdq")
    fp32 = d / "fp32.onnx"
    export_onnx(ResNetLite(), fp32, input_shape=(1, 1, 32, 32))
    frames = calibration_set("synthetic", 6, (48, 32))
    ranges = collect_ranges(fp32, frames, progress=False).ranges("entropy")
    held = calibration_set("synthetic", 2, (48, 32), holdout=True).array()
    ref = ort_session(fp32).run(None, {"input": held})[0]
    return d, fp32, ranges, held, ref


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_trt_qdq_follows_tensorrt_rules(calibrated):
    d, fp32, ranges, held, ref = calibrated
    report = write_trt_qdq(fp32, ranges, d / "trt.onnx")
    # the block residual Add is quantised, the image-level skip (input + correction) is not
    assert len(report.quantized_convs) == 4 and len(report.quantized_adds) == 1
    assert len(write_trt_qdq(fp32, ranges, d / "trt_all.onnx", global_skip=True).quantized_adds) == 2
    # with the image tail float: the tail conv and the last residual Add are not quantised
    tail = write_trt_qdq(fp32, ranges, d / "trt_tail.onnx", float_tail=True)
    assert tail.quantized_convs == ["/head/Conv", "/block/block.0/Conv", "/block/block.2/Conv"]
    assert tail.quantized_adds == []
    model = onnx.load(d / "trt.onnx")
    assert audit_onnx(model).ok  # 3-input DQ, int8 zero point 0, positive scales, 8.5 + 10
    inits = _inits(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert len(node.input) == 3
            zp = inits[node.input[2]]
            assert zp.dtype == np.int8 and not zp.any()
            assert np.all(inits[node.input[1]] > 0)
        if node.op_type == "Conv":
            assert producers[node.input[0]].op_type == "DequantizeLinear"
            w_dq = producers[node.input[1]]
            assert w_dq.op_type == "DequantizeLinear"
            k = inits[producers[w_dq.input[0]].input[0]].shape[0]
            assert inits[w_dq.input[1]].shape == (k,)  # per output channel
            assert next(a.i for a in w_dq.attribute if a.name == "axis") == 0
    out = ort_session(d / "trt.onnx").run(None, {"input": held})[0]
    assert psnr(ref, out) > 30.0


def test_exclusions_stay_float(calibrated):
    d, fp32, ranges, held, ref = calibrated
    report = write_trt_qdq(fp32, ranges, d / "trt_ex.onnx", exclude_nodes=["/tail/Conv"], quantize_adds=False)
    assert "/tail/Conv" not in report.quantized_convs and report.quantized_adds == []
    model = onnx.load(d / "trt_ex.onnx")
    producers = {o: n for n in model.graph.node for o in n.output}
    tail = next(n for n in model.graph.node if n.name == "/tail/Conv")
    assert tail.input[0] not in producers or producers[tail.input[0]].op_type != "DequantizeLinear"
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in add.input)


def test_cpu_u8s8_model(calibrated):
    d, fp32, ranges, held, ref = calibrated
    path = quantize_cpu(fp32, ranges, d / "u8s8.onnx")
    model = onnx.load(path)
    inits = _inits(model)
    q_nodes = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert q_nodes
    zps = [inits[n.input[2]] for n in q_nodes if len(n.input) > 2 and n.input[2] in inits]
    assert zps and all(z.dtype == np.uint8 for z in zps)  # U8 activations
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].ndim == 4]
    assert weight_dq and all(inits[n.input[0]].dtype == np.int8 for n in weight_dq)  # S8 weights
    assert all(inits[n.input[1]].ndim == 1 for n in weight_dq)  # per channel
    out = ort_session(path).run(None, {"input": held})[0]
    assert psnr(ref, out) > 30.0


def test_trt_cache_from_same_ranges(calibrated, tmp_path):
    _, _, ranges, _, _ = calibrated
    cache = trt_cache_from_ranges(ranges, tmp_path / "calib.cache", version="10.3.0")
    back = TrtCalibrationCache.read(tmp_path / "calib.cache")
    assert back.header == "TRT-100300-EntropyCalibration2"
    assert "input" in back.scales
    assert back.amax["input"] == pytest.approx(ranges["input"].amax, rel=1e-6)
    assert set(back.scales) == set(cache.scales)


def test_tone_and_field_heads_stay_in_higher_precision(tmp_path):
    """Tone head (before the stem) and field head (after the image-level skip): no Q/DQ in
    either flavour; the stem and the branch convs are quantised."""
    import dataclasses

    from tir.calibration.qdq import postprocess_nodes, preprocess_nodes, qdq_targets
    from tir.engines.training.continual import OpenWorldModel, RouteModule
    from tir.engines.training.models.ecmrnet import PRESETS

    torch.manual_seed(0)
    model = OpenWorldModel(dataclasses.replace(PRESETS["tiny"], field=16))
    model.add_task("contrast")
    with torch.no_grad():  # non-identity heads, so the float paths matter
        model.tones["contrast"].fc2.weight.normal_(std=0.1)
        model.fields["contrast"].out.weight.normal_(std=0.1)
    fp32 = tmp_path / "route.onnx"
    export_onnx(RouteModule(model, "contrast"), fp32, input_shape=(1, 1, 32, 32))
    graph = onnx.load(fp32)
    pre = set(preprocess_nodes(graph))
    post = set(postprocess_nodes(graph))
    field_convs = [n.name for n in graph.graph.node if n.op_type == "Conv" and n.input[1].startswith("model.fields.")]
    assert len(field_convs) == 5 and set(field_convs) <= post
    assert any(n.op_type == "Resize" for n in graph.graph.node if n.name in post)
    assert not pre & post
    tone_convs = [n.name for n in graph.graph.node if n.op_type == "Conv"
                  and n.input[1].startswith("model.tones.")]
    assert len(tone_convs) == 2 and set(tone_convs) <= pre
    assert any(n.op_type == "ReduceMin" for n in graph.graph.node if n.name in pre)
    stem = next(n for n in graph.graph.node if n.op_type == "Conv" and n.input[1] == "model.stem.conv.weight")
    assert stem.name not in pre
    nodes = list(graph.graph.node)
    targeted = {nodes[k].name for uses in qdq_targets(graph).values() for k, _ in uses}
    assert stem.name in targeted and not targeted & (pre | post)
    skip = [n for n in nodes if n.op_type == "Add" and n.name not in pre | post
            and any(i == o for i in n.input for m in nodes if m.name in pre for o in m.output)]
    assert len(skip) == 1 and skip[0].name not in targeted                # the image-level skip

    frames = calibration_set("synthetic", 4, (48, 32))
    ranges = collect_ranges(fp32, frames, progress=False).ranges("entropy")
    for path in (write_trt_qdq(fp32, ranges, tmp_path / "trt.onnx").path,
                 quantize_cpu(fp32, ranges, tmp_path / "cpu.onnx")):
        q = onnx.load(path)
        producers = {o: n for n in q.graph.node for o in n.output}
        heads = [n for n in q.graph.node if n.op_type == "Conv" and n.input[1].startswith(("model.tones.", "model.fields."))]
        assert len(heads) == 7, path           # weights still float initialisers, not DQ outputs
        assert all(producers[n.input[0]].op_type != "DequantizeLinear" for n in heads), path
        stem_q = next(n for n in q.graph.node if n.op_type == "Conv" and "stem" in n.name)
        assert producers[stem_q.input[0]].op_type == "DequantizeLinear", path


class _TinyRoute(nn.Module):
    """Pixel-unshuffled stem, one residual block of two convs and a recon conv, seeded; the
    subclasses' ``forward`` wires them."""

    def __init__(self, seed, recon_bias, c=8):
        super().__init__()
        torch.manual_seed(seed)
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.stem = nn.Conv2d(4, c, 3, padding=1)
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.recon = nn.Conv2d(c, 4, 3, padding=1, bias=recon_bias)


class GlobalResidual(_TinyRoute):
    """Route-like: stem s, one residual block, then recon(features − s) added to the frame (the
    routes' global-residual difference, engines/training/models/ecmrnet.py)."""

    def __init__(self, c=8):
        super().__init__(seed=1, recon_bias=False, c=c)

    def forward(self, x):
        s = torch.relu(self.stem(self.down(x)))
        h = s + self.conv2(torch.relu(self.conv1(s)))
        return x + self.up(self.recon(h - s))


def test_image_tail_rule_keeps_the_linear_correction_float(calibrated, tmp_path):
    """The rule from the graph's structure: the image-level skip, the linear chain feeding its
    correction (tail conv, pixel shuffle, constant scale) and the last merge stay float; with
    tail_blocks=1 the residual block above it too; a global-residual Sub ends the walk."""
    from tir.calibration.qdq import float_nodes, float_regions

    d, fp32, ranges, held, ref = calibrated
    model = onnx.load(fp32)
    assert float_regions(model).tail == {"/Add_1", "/Mul", "/up/DepthToSpace", "/tail/Conv", "/Add"}
    assert float_regions(model, tail_blocks=1).tail == float_regions(model).tail | {
        "/block/block.0/Conv", "/block/block.1/Relu", "/block/block.2/Conv"}
    assert "/head/Conv" not in float_nodes(model, tail=True, tail_blocks=5)  # the stream's source stays INT8
    assert {"/tail/Conv", "/Add_1"} <= set(float_nodes(model, tail=True))
    assert not {"/tail/Conv", "/Add_1"} & set(float_nodes(model))         # off unless asked (session-7 rules)

    route = tmp_path / "route.onnx"
    export_onnx(GlobalResidual(), route, input_shape=(1, 1, 32, 32))
    graph = onnx.load(route)
    ops = {n.name: n.op_type for n in graph.graph.node}
    tail = float_regions(graph).tail
    assert sorted(ops[n] for n in tail) == ["Add", "Conv", "DepthToSpace", "Sub"]
    assert float_regions(graph, tail_blocks=3).tail == tail                # Sub is no residual block

    # the U8S8 CPU model: the tensors inside the tail are not quantised (the tail conv reads the
    # merge's sum and the skip reads the scaled correction directly), its weights stay float, and
    # the block convs are quantised (their outputs, the merge's inputs, too)
    path = quantize_cpu(fp32, ranges, d / "u8s8_tail.onnx", float_tail=True)
    q = onnx.load(path)
    producers = {o: n for n in q.graph.node for o in n.output}
    nodes = {n.name: n for n in q.graph.node}
    assert producers[nodes["/tail/Conv"].input[0]].name == "/Add"
    assert producers[nodes["/Add_1"].input[1]].name == "/Mul"
    assert nodes["/tail/Conv"].input[1] == "tail.weight"
    block = next(n for n in q.graph.node if n.name == "/block/block.2/Conv")
    assert producers[block.input[0]].op_type == "DequantizeLinear"
    out = ort_session(path).run(None, {"input": held})[0]
    assert psnr(ref, out) > 30.0


class SharedFrame(_TinyRoute):
    """Student-like: a float preprocessing (an affine tone map of the unshuffled frame) feeds both
    the stem and the image-level skip, as the distilled student's tone head does
    (``/Add_5`` → ``/stem/Conv`` and ``/Add_10``)."""

    def __init__(self, c=8):
        super().__init__(seed=2, recon_bias=True, c=c)

    def forward(self, x):
        z = self.down(x) * 0.9 + 0.05
        s = torch.relu(self.stem(z))
        h = s + self.conv2(torch.relu(self.conv1(s)))
        return self.up(z + 0.1 * self.recon(h))


def test_cpu_model_keeps_the_image_skip_float_reading_the_float_frame(tmp_path):
    """U8S8: the image-level skip Add stays float (as in the TensorRT flavour) and adds the float
    preprocessed frame, not the 8-bit copy made for the stem; the frame then never passes an
    8-bit grid, and the INT8 output is closer to fp32 than with the skip quantised."""
    from tir.calibration.qdq import image_skips

    fp32 = tmp_path / "shared.onnx"
    export_onnx(SharedFrame(), fp32, input_shape=(1, 1, 32, 32))
    graph = onnx.load(fp32)
    skips = image_skips(graph)
    assert len(skips) == 1
    skip_src = next(n for n in graph.graph.node if n.name == skips[0])
    frames = calibration_set("synthetic", 6, (48, 32))
    ranges = collect_ranges(fp32, frames, progress=False).ranges("percentile")
    held = calibration_set("synthetic", 2, (48, 32), holdout=True).array()
    ref = ort_session(fp32).run(None, {"input": held})[0]
    fid = {}
    for float_skip in (True, False):
        path = quantize_cpu(fp32, ranges, tmp_path / f"cpu-{float_skip}.onnx", float_skip=float_skip)
        q = onnx.load(path)
        producers = {o: n for n in q.graph.node for o in n.output}
        consumers = [n for n in q.graph.node if skip_src.output[0] in n.input]
        skip = next(n for n in q.graph.node if n.name == skips[0])
        frame_in = producers[skip.input[0]]
        if float_skip:
            assert frame_in.op_type == "Add" and frame_in.output[0] == skip_src.input[0]   # the float frame
            assert not any(n.op_type == "QuantizeLinear" for n in consumers)               # no 8-bit restored frame
            stem = next(n for n in q.graph.node if n.name == "/stem/Conv")
            assert producers[stem.input[0]].op_type == "DequantizeLinear"                   # the stem stays INT8
        else:
            assert frame_in.op_type == "DequantizeLinear"
            assert any(n.op_type == "QuantizeLinear" for n in consumers)
        fid[float_skip] = psnr(ref, ort_session(path).run(None, {"input": held})[0])
    assert fid[True] > fid[False] + 1.0, fid
