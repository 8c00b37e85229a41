"""calibration/integer_form.py: exact rewrites that put a route's float islands on the integer path."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import tir.calibration.integer_form as itf
from tir.calibration.data import calibration_set
from tir.calibration.integer_form import integer_form, shapes_of_quantized
from tir.calibration.qdq import collect_ranges, quantize_cpu
from tir.engines.backends.onnxruntime import ort_session
from tir.engines.metrics import psnr
from tir.engines.training.export import export_onnx


class MiniRoute(nn.Module):
    """A route's shape in small (engines/training/fast_route.py): unshuffled input, stem, a branch
    with a 2×2 stride-2 down conv, a spatial-mean FiLM, the folded up-sampling (ConvTranspose
    over [low, ones]) and the global-residual difference (s + b) − s before the recon conv."""

    def __init__(self, c=8):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(4, c, 3, padding=1)
        self.high = nn.Conv2d(c, c, 3, padding=1)
        self.down_w = nn.Parameter(torch.randn(2 * c, c, 2, 2) * 0.2)
        self.fc = nn.Conv2d(2 * c, 2 * c, 1)
        self.up_w = nn.Parameter(torch.randn(2 * c + 1, c, 2, 2) * 0.2)
        self.out = nn.Conv2d(c, c, 3, padding=1)
        self.recon = nn.Conv2d(c, 4, 3, padding=1, bias=False)

    def forward(self, x):
        u = F.pixel_unshuffle(x, 2)
        s = F.relu(self.stem(u))
        h = F.relu(self.high(s))
        low = F.relu(F.conv2d(h, self.down_w, None, stride=2))
        low = low * torch.sigmoid(self.fc(low.mean(dim=(2, 3), keepdim=True)))
        up = F.conv_transpose2d(torch.cat([low, torch.ones_like(low[:, :1])], dim=1), self.up_w, None, stride=2)
        feats = s + self.out(h + up)
        return F.pixel_shuffle(u + 0.1 * self.recon(feats - s), 2)


def _run(model_or_path, x):
    data = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(data, o, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _ops(model):
    return [n.op_type for n in model.graph.node]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    d = tmp_path_factory.mktemp("integer_form")
    fp32 = d / "fp32.onnx"
    export_onnx(MiniRoute(), fp32, input_shape=(1, 1, 32, 32))
    return d, fp32


@pytest.mark.parametrize("form", ["transpose", "op"])
def test_rewrites_are_exact(mini, monkeypatch, form):
    d, fp32 = mini
    monkeypatch.setattr(itf, "DEPTH_TO_SPACE", form)
    model = onnx.load(fp32)
    assert {"ConvTranspose", "Sub", "ReduceMean", "ConstantOfShape"} <= set(_ops(model))
    d2s_before = _ops(model).count("DepthToSpace")          # the final pixel shuffle
    report = integer_form(model)
    ops = _ops(model)
    assert "ConvTranspose" not in ops and "Sub" not in ops and "ReduceMean" not in ops
    assert "GlobalAveragePool" in ops
    assert ops.count("DepthToSpace") == d2s_before + (form == "op")
    # the all-ones channel went into the 1×1 conv's bias: no Concat/ConstantOfShape left for it
    assert "ConstantOfShape" not in ops and report.folded_constant_channels
    assert len(report.conv_transpose) == 1 and len(report.sub_of_add) == 1 and len(report.reduce_mean) == 1
    assert all(old in {o for n in onnx.load(fp32).graph.node for o in n.output} for old in report.range_of.values())
    rng = np.random.default_rng(0)
    for h, w in ((32, 32), (48, 80), (64, 24)):     # the dynamic reshape follows the frame size
        x = rng.random((2, 1, h, w), dtype=np.float32)
        np.testing.assert_allclose(_run(model, x), _run(fp32, x), atol=2e-6)


def _graph(nodes, inits, in_shape, opset=17, out_rank=4):
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"d{i}" for i in range(out_rank)])
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                          [out], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_other_forms_are_left_alone():
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((4, 4, 2, 2)).astype(np.float32), "w")
    cases = [
        # ConvTranspose with stride != kernel, with padding: not a pure depth-to-space
        _graph([helper.make_node("ConvTranspose", ["input", "w"], ["y"], strides=[1, 1])], [w], [1, 4, 6, 6]),
        _graph([helper.make_node("ConvTranspose", ["input", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])],
               [w], [1, 4, 6, 6]),
        # (a + b) − c, and (a + b) − a whose Sub is the graph output (nothing to rewire)
        _graph([helper.make_node("Relu", ["input"], ["a"]), helper.make_node("Add", ["a", "input"], ["p"]),
                helper.make_node("Sub", ["p", "input"], ["y"])], [], [1, 4, 6, 6]),
        # a mean over channels, and one without keepdims
        _graph([helper.make_node("ReduceMean", ["input"], ["y"], axes=[1], keepdims=1)], [], [1, 4, 6, 6], 13),
        _graph([helper.make_node("ReduceMean", ["input"], ["y"], axes=[2, 3], keepdims=0)], [], [1, 4, 6, 6], 13, 2),
    ]
    for model in cases:
        before = _ops(model)
        report = integer_form(model)
        assert _ops(model) == before and not report.changed
    # opset 18: ReduceMean's axes as an input
    axes = numpy_helper.from_array(np.array([-2, -1], np.int64), "axes")
    m = _graph([helper.make_node("ReduceMean", ["input", "axes"], ["y"], keepdims=1)], [axes], [1, 4, 6, 6], 18)
    x = rng.random((1, 4, 6, 6), dtype=np.float32)
    ref = _run(m, x)
    assert integer_form(m).reduce_mean and _ops(m) == ["GlobalAveragePool"]
    np.testing.assert_allclose(_run(m, x), ref, atol=1e-6)


def test_kept_nodes_are_not_rewritten(mini):
    d, fp32 = mini
    model = onnx.load(fp32)
    names = {n.op_type: n.name for n in model.graph.node}
    report = integer_form(model, keep=[names["ConvTranspose"], names["Sub"], names["ReduceMean"]])
    assert not report.changed and "ConvTranspose" in _ops(model)


def _optimized_ops(path, tmp):
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    o.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    m = onnx.load(str(tmp))
    producer = {out: n for n in m.graph.node for out in n.output}
    float_islands = [n.op_type for n in m.graph.node if n.op_type in ("ConvTranspose", "Sub", "ReduceMean")]
    dq_shape = [n.name for n in m.graph.node if n.op_type == "Shape" and n.input[0] in producer
                and producer[n.input[0]].op_type == "DequantizeLinear"]
    return _ops(m), float_islands, dq_shape


def test_quantize_cpu_puts_the_islands_on_the_integer_path(mini, tmp_path):
    d, fp32 = mini
    ranges = collect_ranges(fp32, calibration_set("synthetic", 4, (48, 32)), progress=False).ranges("percentile")
    on = quantize_cpu(fp32, ranges, tmp_path / "on.onnx")
    off = quantize_cpu(fp32, ranges, tmp_path / "off.onnx", integer_form=False)
    ops_on, islands_on, dq_shape = _optimized_ops(on, tmp_path / "on.opt.onnx")
    _, islands_off, _ = _optimized_ops(off, tmp_path / "off.opt.onnx")
    assert sorted(islands_off) == ["ConvTranspose", "ReduceMean", "Sub"]     # session 14's float islands
    assert islands_on == [] and dq_shape == []
    assert ops_on.count("DepthToSpace") == 1            # only the final shuffle, float by rule
    assert "QLinearGlobalAveragePool" in ops_on and ops_on.count("QLinearConv") > ops_on.count("Conv")
    meta = {p.key: p.value for p in onnx.load(on).metadata_props}
    assert json.loads(meta["tir.int8.integer_form"])["conv_transpose"] == ["/ConvTranspose"]
    assert "tir.int8.integer_form" not in {p.key for p in onnx.load(off).metadata_props}
    # no worse in fidelity to fp32 (one fewer re-quantisation: the Sub's output)
    x = calibration_set("synthetic", 2, (48, 32), holdout=True).array()
    ref = ort_session(fp32).run(None, {"input": x})[0]
    fid = {k: np.mean([psnr(np.clip(a, 0, 1), np.clip(b, 0, 1))
                       for a, b in zip(ref, ort_session(p).run(None, {"input": x})[0])]) for k, p in (("on", on), ("off", off))}
    assert fid["on"] > fid["off"] - 0.5 and fid["on"] > 35


def test_shape_reads_the_quantised_tensor(tmp_path):
    s, z = numpy_helper.from_array(np.array(0.1, np.float32), "s"), numpy_helper.from_array(np.array(0, np.uint8), "z")
    m = _graph([helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]),
                helper.make_node("Shape", ["dq"], ["shp"]),
                helper.make_node("Cast", ["shp"], ["y"], to=TensorProto.FLOAT)], [s, z], [1, 3, 5, 7], out_rank=1)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    assert shapes_of_quantized(p) == 1
    out = onnx.load(p)
    assert "DequantizeLinear" not in _ops(out) and [n.input[0] for n in out.graph.node if n.op_type == "Shape"] == ["q"]
    assert _run(out, np.zeros((1, 3, 5, 7), np.float32)).tolist() == [1, 3, 5, 7]


def _resize_graph(scales, mode="linear", ctm="half_pixel", shape=(1, 3, 5, 7)):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None] * 4)
    node = helper.make_node("Resize", ["input", "", "scales"], ["output"], name="/Resize", mode=mode,
                            coordinate_transformation_mode=ctm)
    graph = helper.make_graph([node], "g", [x], [y],
                              [numpy_helper.from_array(np.array(scales, np.float32), "scales")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("scales,shape", [([1, 1, 4, 3], (1, 3, 5, 7)), ([1, 1, 32, 32], (2, 1, 4, 5)),
                                          ([1, 1, 2, 2], (1, 2, 1, 1))])
def test_bilinear_resize_as_two_matmuls_is_exact(scales, shape):
    model = _resize_graph(scales, shape=shape)
    x = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    ref = _run(model, x)
    report = integer_form(model)
    assert report.resize_matmul == ["/Resize"] and "Resize" not in _ops(model)
    assert set(report.float_nodes) == {n.name for n in model.graph.node}     # all float, for quantize_cpu
    y = _run(model, x)
    assert y.shape == ref.shape == (shape[0], shape[1], shape[2] * scales[2], shape[3] * scales[3])
    assert np.abs(y - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    # the torch definition the student's field head uses (F.interpolate, bilinear, align_corners=False)
    t = F.interpolate(torch.from_numpy(x), scale_factor=(float(scales[2]), float(scales[3])), mode="bilinear",
                      align_corners=False).numpy()
    assert np.abs(y - t).max() <= 1e-5 * max(1.0, np.abs(t).max())


@pytest.mark.parametrize("scales,mode,ctm", [([1, 1, 2.5, 2], "linear", "half_pixel"),
                                             ([1, 1, 2, 2], "nearest", "half_pixel"),
                                             ([1, 1, 2, 2], "linear", "align_corners"),
                                             ([1, 2, 2, 2], "linear", "half_pixel"),
                                             ([1, 1, 0.5, 0.5], "linear", "half_pixel")])
def test_other_resizes_are_left_alone(scales, mode, ctm):
    model = _resize_graph(scales, mode, ctm)
    report = integer_form(model)
    assert report.resize_matmul == [] and _ops(model) == ["Resize"]


def test_tiny_student_field_head_resize_rewritten_exactly_and_left_float(tmp_path):
    from tir.engines.training.distill import export_student
    from tir.engines.training.models.student import create_student

    slots = ["blur", "noise", "clean"]
    torch.manual_seed(0)
    net = create_student("tiny", slots)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fp32 = tmp_path / "s.onnx"
    export_student(net, fp32)
    model = onnx.load(str(fp32))
    assert "Resize" in _ops(model)
    report = integer_form(model)
    assert report.resize_matmul and "Resize" not in _ops(model)
    o = ort.SessionOptions()
    o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    before = ort.InferenceSession(str(fp32), o, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(model.SerializeToString(), o, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    for hw in ((64, 96), (32, 32), (96, 64)):                 # any multiple of 32: matrices built from the shape
        x = rng.random((2, 1, *hw), dtype=np.float32)
        w = rng.dirichlet(np.ones(len(slots)), size=2).astype(np.float32)
        ref = before.run(None, {"input": x, "prompt": w})[0]
        assert np.abs(after.run(None, {"input": x, "prompt": w})[0] - ref).max() <= 1e-5
    # in the CPU INT8 model the interpolation stays float: its MatMuls read and write float tensors
    from test_prompt_scale import _ranges   # per-tensor min/max of the model on frames × one-hot prompts

    eye = np.eye(len(slots), dtype=np.float32)
    x = rng.random((1, 1, 64, 96), dtype=np.float32)
    q = onnx.load(quantize_cpu(fp32, _ranges(fp32, x, eye), tmp_path / "s.int8.onnx", float_inputs=("prompt",)))
    assert "Resize" not in _ops(q)
    producer = {o_: n.op_type for n in q.graph.node for o_ in n.output}
    matmuls = [n for n in q.graph.node if n.name.startswith("/Resize")]
    assert matmuls and all(producer.get(i) != "DequantizeLinear" for n in matmuls for i in n.input)
    meta = {p.key: p.value for p in q.metadata_props}
    assert json.loads(meta["tir.int8.integer_form"])["resize_matmul"] == ["/Resize"]
    ref = before.run(None, {"input": x, "prompt": eye[:1]})[0]
    y = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x, "prompt": eye[:1]})[0]
    assert psnr(np.clip(ref, 0, 1)[0, 0], np.clip(y, 0, 1)[0, 0]) > 30
