"""calibration/sensitivity.py: per-node sensitivity ranking and per-tensor uint8 error."""
import numpy as np
import onnx
import pytest

from tiny_models import TwoConv

from tir.calibration.entropy import TensorRange
from tir.calibration.sensitivity import (cpu_quantised_nodes, node_sensitivity, tensor_errors, tensor_values,
                                         uint8_fake_quant)
from tir.engines.training.export import export_onnx




def test_uint8_grid_is_orts():
    lo, hi = -1.0, 3.0
    scale = 4.0 / 255
    zp = round(1.0 / scale)
    grid = (np.arange(256) - zp) * scale
    assert np.allclose(uint8_fake_quant(grid, lo, hi), grid, atol=1e-6)       # grid points are exact
    assert uint8_fake_quant(np.array([10.0, -10.0]), lo, hi).tolist() == pytest.approx([(255 - zp) * scale, -zp * scale])
    with pytest.raises(ValueError, match="empty"):
        uint8_fake_quant(np.zeros(3), 0.0, 0.0)


def test_tensor_errors_rank_a_small_signal_on_a_wide_range_first():
    rng = np.random.default_rng(0)
    full = rng.uniform(0, 1, (2, 4, 64, 64)).astype(np.float32)
    small = rng.uniform(-0.01, 0.01, (2, 1, 64, 64)).astype(np.float32)
    ranges = {"full": TensorRange(1.0, 0.0, 1.0), "small": TensorRange(1.0, -1.0, 1.0),
              "clipped": TensorRange(0.5, 0.0, 0.5)}
    rows = tensor_errors({"full": [full], "small": [small], "clipped": [full], "no_range": [full]}, ranges)
    by = {r.tensor: r for r in rows}
    assert set(by) == {"full", "small", "clipped"}
    # uniform on [0, 1] with step 1/255: SQNR = 10 log10((1/3) / (step² / 12)) = 54.2 dB
    assert by["full"].sqnr_db == pytest.approx(10 * np.log10((1 / 3) / ((1 / 255) ** 2 / 12)), abs=0.3)
    assert by["full"].clipped == 0.0 and by["full"].channels == 4
    assert rows[0].tensor == "small" and by["small"].sqnr_db < 15          # rms 0.0058 vs step 2/255
    assert by["clipped"].clipped == pytest.approx(0.5, abs=0.02)


def test_node_sensitivity_ranks_the_node_that_hurts(tmp_path):
    fp32 = tmp_path / "m.onnx"
    export_onnx(TwoConv(), fp32, input_shape=(1, 1, 16, 16))
    model = onnx.load(fp32)
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert convs == ["/a/Conv", "/b/Conv"]
    assert set(convs) <= set(cpu_quantised_nodes(model))
    assert not set(convs) & set(cpu_quantised_nodes(model, exclude_nodes=convs))
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    names = [o for n in model.graph.node for o in n.output] + ["input"]
    values = tensor_values(fp32, [{"input": x}], names)
    ranges = {k: TensorRange(float(np.abs(v[0]).max()), float(v[0].min()), float(v[0].max())) for k, v in values.items()}

    def evaluate(path):
        """60 dB, minus 20 dB when /b/Conv's weights are quantised (a DequantizeLinear feeds them)."""
        q = onnx.load(path)
        producers = {o: n.op_type for n in q.graph.node for o in n.output}
        b = next(n for n in q.graph.node if n.name == "/b/Conv")
        return 40.0 if producers.get(b.input[1]) == "DequantizeLinear" else 60.0

    ref, only = node_sensitivity(fp32, ranges, evaluate, tmp_path / "w", mode="only", candidates=convs)
    assert ref == 40.0
    assert [r.node for r in only] == ["/b/Conv", "/a/Conv"] and only[0].fidelity_db == 40.0
    ref, keep = node_sensitivity(fp32, ranges, evaluate, tmp_path / "w", mode="float", candidates=convs)
    assert keep[0].node == "/b/Conv" and keep[0].delta_db == 20.0 and keep[1].delta_db == 0.0
    with pytest.raises(ValueError, match="only"):
        node_sensitivity(fp32, ranges, evaluate, tmp_path / "w", mode="one")
