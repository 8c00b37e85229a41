"""engines/training/export.py: parity with torch, TensorRT operator audit, metadata round trip."""
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from tir.engines.training.export import ExportError, audit_onnx, export_onnx, read_metadata


class TinyShuffleNet(nn.Module):
    """Pixel-unshuffle ×2 → conv → ReLU → conv → pixel-shuffle, plus a residual."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down = nn.PixelUnshuffle(2)
        self.body = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        return x + self.up(self.body(self.down(x)))


class GroupNormGeluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.act = nn.GELU()
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        return self.out(self.act(self.norm(self.conv(x))))


def test_parity_with_pixel_shuffle(tmp_path):
    path = tmp_path / "tiny.onnx"
    report = export_onnx(TinyShuffleNet(), path, input_shape=(1, 1, 16, 16), metadata={"tir.multiple": 2})
    assert report.max_abs_err <= 1e-4
    assert report.ops["Conv"] == 2
    assert report.ops["DepthToSpace"] == 1  # PixelShuffle
    assert (1, 1, 32, 32) in report.checked_shapes  # the dynamic H/W axes were exercised
    model = onnx.load(path)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.opset_import[0].version == 17
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and dims[3].dim_param and dims[1].dim_value == 1


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "meta.onnx"
    export_onnx(TinyShuffleNet(), path, input_shape=(1, 1, 8, 8), check_parity=False,
                metadata={"tir.multiple": "4", "tir.task": "noise"})
    assert read_metadata(path) == {"tir.multiple": "4", "tir.task": "noise"}


def test_groupnorm_at_opset17_passes_with_plugin_warning(tmp_path):
    report = export_onnx(GroupNormGeluNet(), tmp_path / "gn.onnx", input_shape=(1, 1, 16, 16))
    assert "GroupNormalization" not in report.ops
    assert report.ops["InstanceNormalization"] >= 1 and report.ops["Erf"] == 1
    assert any("InstanceNormalization_TRT" in w for w in report.warnings)


def test_parity_failure_is_an_error(tmp_path):
    class Switchy(nn.Module):  # traced at export, behaves differently in eager
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return x * (1.0 if self.calls == 1 else 3.0)

    with pytest.raises(ExportError, match="differs from torch"):
        export_onnx(Switchy(), tmp_path / "s.onnx", input_shape=(1, 1, 8, 8), audit=False)


def _graph_with(op_type, opset, name="/blocks.0/Foo", **attrs):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "bias")
    node = helper.make_node(op_type, ["input", "scale", "bias"], ["output"], name=name, **attrs)
    graph = helper.make_graph([node], "g", [x], [y], initializer=[scale, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_audit_names_disallowed_node():
    model = _graph_with("GroupNormalization", 18, num_groups=2)
    result = audit_onnx(model)
    assert not result.ok
    joined = "\n".join(result.errors)
    assert "node /blocks.0/Foo (GroupNormalization) is not supported by the TensorRT 8.5 parser" in joined
    assert "opset 18" in joined
    # TensorRT 10 alone parses GroupNormalization-18
    assert audit_onnx(model, targets=("10",)).ok


def test_audit_layernorm_only_on_trt10():
    model = _graph_with("LayerNormalization", 17, axis=1)
    assert any("LayerNormalization" in e for e in audit_onnx(model, targets=("8.5",)).errors)
    assert audit_onnx(model, targets=("10",)).ok


def test_export_fails_on_unsupported_op(tmp_path):
    class WithLayerNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(8)

        def forward(self, x):
            return self.norm(x)

    with pytest.raises(ExportError, match=r"\(LayerNormalization\) is not supported by the TensorRT 8.5"):
        export_onnx(WithLayerNorm(), tmp_path / "ln.onnx", input_shape=(1, 1, 8, 8), dynamic_hw=False)


def test_audit_qdq_rules():
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 4, 4])
    inits = [
        numpy_helper.from_array(np.array(0.01, np.float32), "s"),
        numpy_helper.from_array(np.array(128, np.uint8), "zp"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "s", "zp"], ["q"], name="q0"),
        helper.make_node("DequantizeLinear", ["q", "s"], ["output"], name="dq0"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    errors = "\n".join(audit_onnx(model).errors)
    assert "node q0 (QuantizeLinear): zero point is uint8" in errors
    assert "must be 0" in errors
    assert "node dq0 (DequantizeLinear) has 2 inputs" in errors
