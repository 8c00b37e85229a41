"""calibration/gate.py: INT8 accuracy gate verdicts and the FP16-layer search."""
import numpy as np
import pytest

from tiny_models import TwoConv

from tir.calibration.data import CalibrationSet, calibration_set
from tir.calibration.entropy import TensorRange
from tir.calibration.gate import find_fp16_layers, format_table, gate_route, judge, measure
from tir.engines.training.export import export_onnx


def _frames_with_refs(n=3, size=(32, 24)):
    rng = np.random.default_rng(0)
    clean = [rng.random((size[1], size[0])).astype(np.float32) for _ in range(n)]
    noisy = [np.clip(c + rng.normal(0, 0.05, c.shape), 0, 1).astype(np.float32) for c in clean]
    return CalibrationSet("t", n, size, lambda i: noisy[i], lambda i: (noisy[i], clean[i])), clean


def test_loss_vs_clean_passes_and_refuses():
    frames, clean = _frames_with_refs()
    lookup = [frames.pair(i) for i in range(3)]

    def perfect(x):  # returns the clean frame: fp32 "restores" perfectly
        i = next(k for k, (inp, _) in enumerate(lookup) if np.array_equal(inp, x[0, 0]))
        return lookup[i][1][None, None]

    def fp32(x):  # 40 dB from clean
        return perfect(x) + 0.01

    def int8_close(x):  # 0.17 dB worse
        return perfect(x) + 0.0102

    def int8_far(x):  # 6 dB worse
        return perfect(x) + 0.02

    ok = gate_route("noise", "cpu-u8s8", fp32, int8_close, frames)
    assert ok.rule == "vs-clean" and ok.passed, ok
    assert ok.psnr_fp32 == pytest.approx(40.0, abs=0.1) and ok.loss_db == pytest.approx(0.17, abs=0.03)  # outputs are clipped to [0, 1]
    bad = gate_route("noise", "cpu-u8s8", fp32, int8_far, frames)
    assert not bad.passed and bad.loss_db == pytest.approx(6.0, abs=0.2)
    assert "limit 0.3 dB" in bad.reason
    assert "REFUSED" in format_table([ok, bad]) and "PASS" in format_table([ok, bad])


def test_fidelity_rule_without_references():
    a = [np.full((4, 4), 0.5, np.float32)]
    numbers = measure(a, [a[0] + 0.001])
    assert "loss_db" not in numbers and numbers["fidelity_db"] == pytest.approx(60.0, abs=0.01)
    v = judge("blur", "trt-qdq", numbers, 1)
    assert v.rule == "fidelity" and v.passed
    v = judge("blur", "trt-qdq", measure(a, [a[0] + 0.05]), 1)
    assert not v.passed and "no clean references" in v.reason




def test_fp16_layer_search_names_the_sensitive_layer(tmp_path):
    fp32 = tmp_path / "m.onnx"
    export_onnx(TwoConv(), fp32, input_shape=(1, 1, 16, 16))
    synthetic = calibration_set("synthetic", 2, (32, 24))
    frames = CalibrationSet("no-refs", 2, (32, 24), lambda i: synthetic[i])
    # a deliberately terrible range on /b/Conv's input: quantising that layer wrecks the output
    ranges = {"input": TensorRange(1.0, 0.0, 1.0), "/Relu_output_0": TensorRange(1e-3, 0.0, 5.0)}
    layers, numbers, passed, path = find_fp16_layers(fp32, ranges, frames, tmp_path,
                                                     candidates=["/a/Conv", "/b/Conv"], min_fidelity_db=30.0)
    assert layers[0] == "/b/Conv"
    assert passed and path.endswith("mixed.onnx")
