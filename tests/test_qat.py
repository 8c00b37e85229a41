"""Quantisation-aware fine-tuning of the student from its ONNX graph (engines/training/qat.py) and
``tir calibrate --student --qat-steps``."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

try:   # the `qat` extra; onnx2torch imports torchvision, which fails (RuntimeError) on a torch build it does not match
    import onnx2torch  # noqa: F401
except Exception as exc:  # noqa: BLE001
    pytest.skip(f"needs onnx2torch with a torchvision that matches torch (pip install -e '.[qat]'): {exc}",
                allow_module_level=True)

from tir.calibration.qdq import collect_ranges, quantize_cpu  # noqa: E402
from tir.calibration.data import calibration_set  # noqa: E402
from tir.engines.training import qat  # noqa: E402

from test_calibrate_student import PROMPTS, bundles  # noqa: E402,F401  (the tiny student bundle fixture)

K = len(PROMPTS)


def _ort(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(seed=0, h=24, w=32):
    rng = np.random.default_rng(seed)
    eye = np.eye(K, dtype=np.float32)
    return [(rng.random((1, 1, h, w), dtype=np.float32), eye[j:j + 1]) for j in range(K)]


def test_space_to_depth_converter_matches_onnxruntime(tmp_path):
    # channel order (i·b + j)·C + c of ONNX SpaceToDepth, not torch's pixel_unshuffle c·b² + i·b + j
    graph = helper.make_graph([helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)], "s2d",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 12, 2, 3])])
    path = tmp_path / "s2d.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    x = np.random.default_rng(0).random((1, 3, 4, 6), dtype=np.float32)
    with torch.no_grad():
        got = qat.load_onnx(path)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, _ort(path).run(None, {"x": x})[0])


def test_loaded_student_matches_onnxruntime_for_every_prompt(bundles):  # noqa: F811
    path = bundles[1].student_path
    gm, sess = qat.load_onnx(path), _ort(path)
    for x, w in _feeds():
        with torch.no_grad():
            got = gm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        assert np.abs(got - sess.run(None, {"input": x, "prompt": w})[0]).max() <= 1e-4


def _ptq(path, tmp_path):
    eye = np.eye(K, dtype=np.float32)
    frames = calibration_set("synthetic", 6, (32, 24), seed=0)
    col = collect_ranges(str(path), frames, threads=1, extra_inputs=lambda first, batch: {
        "prompt": eye[[(first + r) % K for r in range(len(batch))]]})
    ranges = col.ranges("percentile", percentile=99.9)
    out = tmp_path / "ptq.onnx"
    quantize_cpu(str(path), ranges, out, activation="uint8", reduce_range=True, float_inputs=["prompt"])
    return ranges, out


def test_fake_quant_forward_equals_the_ort_qdq_model(bundles, tmp_path):  # noqa: F811
    path = bundles[1].student_path
    ranges, ptq = _ptq(path, tmp_path)
    plan = qat.qdq_plan(path, ptq)
    assert plan.activations and len(plan.weights) == 2  # the two image convs; the FiLM conv stays float
    gm = qat.prepare_qat(qat.load_onnx(path), plan, reduce_range=True)
    fp32, int8 = _ort(path), _ort(ptq)
    for x, w in _feeds(3):
        ref = fp32.run(None, {"input": x, "prompt": w})[0]
        q = int8.run(None, {"input": x, "prompt": w})[0]
        with torch.no_grad():
            fq = gm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
            qat.set_quant(gm, False)
            plain = gm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
            qat.set_quant(gm, True)
        quant_err = np.abs(q - ref).max()
        assert quant_err > 1e-4  # the INT8 model does differ from fp32
        # the fake-quantised graph reproduces the INT8 model's error: what is left is integer
        # rounding inside ONNX Runtime's kernels, a small part of the quantisation error
        assert np.sqrt(np.mean((fq - q) ** 2)) < 0.3 * np.sqrt(np.mean((ref - q) ** 2))
        assert np.abs(plain - ref).max() <= 1e-4  # quantisers off: the float graph


def test_weight_fake_quant_is_per_channel_symmetric_on_the_7bit_grid():
    w = torch.tensor([[1.0, -0.5, 0.26], [0.01, 0.02, -0.04]]).reshape(2, 3, 1, 1)
    got = qat.fake_quant_weight(w, (0,), reduce_range=True)
    for c in range(2):
        s = w[c].abs().max() / 64.0
        q = got[c] / s
        assert torch.allclose(q, torch.round(q), atol=1e-4) and q.abs().max() <= 64
    full = qat.fake_quant_weight(w, (0,), reduce_range=False)
    assert torch.allclose(full[0] / (1.0 / 127.0), torch.round(full[0] * 127.0), atol=1e-3)


def test_write_back_replaces_conv_weights_by_name_and_nothing_else(bundles, tmp_path):  # noqa: F811
    path = bundles[1].student_path
    gm = qat.load_onnx(path)
    with torch.no_grad():
        for m in gm.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(1.5)
    out = tmp_path / "qat.onnx"
    written = qat.write_back(gm, path, out)
    src, new = onnx.load(str(path)), onnx.load(str(out))
    old_init = {i.name: numpy_helper.to_array(i) for i in src.graph.initializer}
    new_init = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    assert set(old_init) == set(new_init) and written
    convs = {n.input[1] for n in src.graph.node if n.op_type == "Conv"}
    assert convs <= set(written)
    for name in old_init:
        if name in convs:
            np.testing.assert_allclose(new_init[name], 1.5 * old_init[name], rtol=1e-6)
        elif name not in written:
            np.testing.assert_array_equal(new_init[name], old_init[name])
    assert [i.name for i in new.graph.input] == [i.name for i in src.graph.input]
    assert {p.key: p.value for p in new.metadata_props} == {p.key: p.value for p in src.metadata_props}
    sess = _ort(out)
    for x, w in _feeds(5):
        with torch.no_grad():
            ref = gm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        assert np.abs(sess.run(None, {"input": x, "prompt": w})[0] - ref).max() <= 1e-4


def test_fake_quant_keeps_the_float_reads_of_the_qdq_model(tmp_path):
    """A tensor ONNX Runtime quantises for one consumer (the stem) but that a float node reads
    directly (the image-level skip, calibration.qdq.read_float): the torch graph gives that node
    the float value too, so QAT trains the model that is deployed."""
    from test_qdq import SharedFrame
    from tir.engines.training.export import export_onnx

    fp32 = tmp_path / "shared.onnx"
    export_onnx(SharedFrame(), fp32, input_shape=(1, 1, 32, 32))
    frames = calibration_set("synthetic", 6, (32, 32), seed=0)
    ranges = collect_ranges(str(fp32), frames, threads=1).ranges("percentile", percentile=99.9)
    ptq = tmp_path / "ptq.onnx"
    quantize_cpu(str(fp32), ranges, ptq)
    plan = qat.qdq_plan(fp32, ptq)
    skip = next(n for n in onnx.load(str(fp32)).graph.node if n.op_type == "Add"
                and any(i.startswith("/Add") for i in n.input) and any("Mul" in i for i in n.input))
    frame = next(i for i in skip.input if i in plan.activations)
    assert plan.float_reads[frame] == list(skip.output)
    x = calibration_set("synthetic", 2, (32, 32), holdout=True, seed=0).array()
    q = _ort(ptq).run(None, {"input": x})[0]
    errs = {}
    for honour in (True, False):
        p = plan if honour else qat.QdqPlan(plan.activations, plan.weights, plan.unmatched)
        gm = qat.prepare_qat(qat.load_onnx(fp32), p, reduce_range=True)
        with torch.no_grad():
            errs[honour] = float(np.sqrt(np.mean((gm(torch.from_numpy(x)).numpy() - q) ** 2)))
    assert errs[True] < 0.5 * errs[False], errs
