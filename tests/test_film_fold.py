"""The student's FiLM scale 1 + γ(p) folded into its convolution's per-channel weight scale on the
CPU INT8 model (calibration/film_fold.py, ``quantize_cpu(film="fold")``, ``tir calibrate --student
--film fold``; docs/int8.md, "Session 24")."""
import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tir.calibration import film_fold
from tir.calibration.data import calibration_set
from tir.calibration.qdq import collect_ranges, film_nodes, quantize_cpu
from tir.engines.training.models.student import PRESETS, StudentNet

from test_calibrate_student import PROMPTS, bundles, calibrate_student  # noqa: F401  (the tiny student bundle fixture)
from test_film_int8 import _optimised_ops
from test_film_int8 import _ranges as film_ranges

K = len(PROMPTS)
SIZE = (32, 24)   # W, H: the tiny student without a field head takes multiples of 8


def _student(path):
    """The distilled student's network (engines/training/models/student.py, ``tiny`` widths, no
    field head), FiLM weights drawn so that 1 + γ is negative on some channels for some prompts
    (as on the shipped student: docs/int8.md, "Session 24"), exported like ``tir distill`` does."""
    torch.manual_seed(0)
    net = StudentNet(dataclasses.replace(PRESETS["tiny"], field=0), PROMPTS).eval()
    with torch.no_grad():
        for block in [*net.high_in, *net.low, *net.high_out]:
            block.film.weight.normal_(0, 0.6)
            block.film.bias.normal_(0, 0.3)
    torch.onnx.export(net, (torch.rand(1, 1, SIZE[1], SIZE[0]), torch.eye(K)[:1]), str(path),
                      input_names=["input", "prompt"], output_names=["output"], opset_version=17, dynamo=False,
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "prompt": {0: "n"}, "output": {0: "n"}})
    model = onnx.load(str(path))
    for key, value in (("tir.multiple", str(net.cfg.multiple)), ("tir.prompts", ",".join(PROMPTS))):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(model, str(path))
    return path


def _ranges(path):
    return film_ranges(path, SIZE[::-1], percentile=99.99)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("fold")
    src = _student(d / "s.onnx")
    ranges = _ranges(src)
    out = {m: quantize_cpu(str(src), ranges, d / f"{m}.onnx", float_inputs=["prompt"], film=m) for m in ("int8", "fold")}
    return src, out


def test_the_student_has_negative_film_scales(models):
    """The test student is the hard case: the sign of 1 + γ changes with the prompt on some channel."""
    src, _ = models
    model = onnx.load(str(src))
    muls = [n for n in model.graph.node if n.name in film_nodes(model, ["prompt"]) and n.op_type == "Mul"]
    for m in muls:
        model.graph.output.append(onnx.helper.make_tensor_value_info(m.input[1], onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 1, SIZE[1], SIZE[0]), dtype=np.float32)
    g = np.stack([np.concatenate([a.ravel() for a in sess.run(None, {"input": x, "prompt": np.eye(K, dtype=np.float32)[j:j + 1]})[1:]])
                  for j in range(K)])
    assert ((g < 0).any(axis=0) & (g > 0).any(axis=0)).any()


def test_fold_removes_the_film_multiply_and_keeps_the_student(models, tmp_path):
    src, out = models
    fold = onnx.load(str(out["fold"]))
    fp32 = onnx.load(str(src))
    ops = {n.name: n.op_type for n in fp32.graph.node}
    blocks = [n for n in film_nodes(fp32, ["prompt"]) if ops[n] == "Mul"]
    assert len(blocks) == sum(PRESETS["tiny"].blocks)   # one FiLM per residual block
    names = {n.name for n in fold.graph.node}
    assert not names & set(blocks)                        # the FiLM Muls are gone ...
    assert film_fold.recorded(fold) == blocks             # ... recorded ...
    meta = {p.key: p.value for p in fold.metadata_props}
    assert meta[film_fold.FOLD_KEY]
    ops = {m: _optimised_ops(p, tmp_path) for m, p in out.items()}
    # ... and ONNX Runtime runs one QLinearMul per block fewer, as many integer convolutions
    assert ops["int8"].count("QLinearMul") - ops["fold"].count("QLinearMul") == len(blocks)
    assert ops["fold"].count("QLinearConv") == ops["int8"].count("QLinearConv")
    ref, int8, folded = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (src, out["int8"], out["fold"]))
    rng = np.random.default_rng(1)
    mixes = [np.eye(K, dtype=np.float32)[j:j + 1] for j in range(K)] + [np.full((1, K), 1.0 / K, np.float32)]
    for w in mixes:
        x = rng.random((1, 1, SIZE[1], SIZE[0]), dtype=np.float32)
        y32, y8, yf = (s.run(None, {"input": x, "prompt": w})[0] for s in (ref, int8, folded))
        err8, errf = np.sqrt(np.mean((y8 - y32) ** 2)), np.sqrt(np.mean((yf - y32) ** 2))
        assert errf <= 1.1 * err8 + 1e-4, (w, err8, errf)   # one rounding fewer: no worse than the unfolded model


def test_fold_refuses_a_film_that_does_not_read_a_convolution(bundles, tmp_path):  # noqa: F811
    """The tiny bundle student modulates relu(conv(x)): the scale does not commute with the ReLU
    for 1 + γ < 0, so the fold refuses it (and writes nothing)."""
    path = bundles[1].student_path
    eye = np.eye(K, dtype=np.float32)
    frames = calibration_set("synthetic", 6, (24, 32), seed=0)
    ranges = collect_ranges(str(path), frames, threads=1, progress=False, extra_inputs=lambda first, batch: {
        "prompt": eye[[(first + r) % K for r in range(len(batch))]]}).ranges("percentile", percentile=99.9)
    with pytest.raises(ValueError, match="film fold"):
        quantize_cpu(str(path), ranges, tmp_path / "x.onnx", float_inputs=["prompt"], film="fold")
    assert not (tmp_path / "x.onnx").exists()


def test_a_folded_student_runs_frame_by_frame(models):
    """The folded weight scales are one prompt's: the engine runs a batch one frame per call."""
    from tir.engines.backends.student import StudentEngine

    src, out = models
    engine = StudentEngine(out["fold"], threads=1)
    assert engine.one_frame
    x = np.random.default_rng(2).random((2, 1, SIZE[1], SIZE[0]), dtype=np.float32)
    w = np.eye(K, dtype=np.float32)[[0, K - 1]]
    both = engine.infer(x, w)
    one = np.concatenate([engine.infer(x[i:i + 1], w[i:i + 1]) for i in range(2)])
    np.testing.assert_array_equal(both, one)


def test_calibrate_film_fold_is_refused_on_a_film_after_a_relu(bundles, tmp_path, capsys):  # noqa: F811
    rc = calibrate_student(bundles[1], tmp_path / "f", "--film", "fold")
    assert rc != 0
    assert "film fold" in capsys.readouterr().err
