"""The per-prompt output scale of the student's output path (calibration/prompt_scale.py) and
``tir calibrate --student --prompt-scale``."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from tir.calibration import prompt_scale
from tir.calibration.entropy import TensorRange
from tir.calibration.qdq import quantize_cpu, write_trt_qdq
from tir.engines.bundle import add_student
from tir.tools import cli

from test_calibrate_student import TinyStudent
from tiny_models import calibration_bundle, export_prompted

PROMPTS = ["blur", "noise", "clean"]
K = len(PROMPTS)


class PathStudent(nn.Module):
    """The distilled student's output path in small (engines/training/models/student.py): frame →
    space-to-depth t → stem h → one prompt-scaled residual block, merge a = h/100 + conv2(relu(conv1(h)·g))
    → 1×1 ``out`` conv (bias) → bias-free ``recon`` conv → t + correction (the image-level skip)
    → depth-to-space. g is the prompt's table row (0.2, 1, 0.03: ``clean`` makes a small correction)."""

    def __init__(self, k):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("table", torch.tensor([[0.2], [1.0], [0.03]])[:k].repeat(1, 8))
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.stem, self.c1, self.c2 = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.out, self.recon = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.out.bias.normal_(0, 0.002)
            self.c2.weight.mul_(4.0)
            self.c2.bias.normal_(0, 0.002)

    def forward(self, x, w):
        g = (w @ self.table).reshape(-1, 8, 1, 1)
        t = self.down(x)
        h = torch.relu(self.stem(t))
        a = h * 0.01 + self.c2(torch.relu(self.c1(h) * g))
        return self.up(t + self.recon(self.out(a)))


def _export(path):
    return export_prompted(PathStudent(K), path, K, PROMPTS, multiple=2)


def _run(path, x, w):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x, "prompt": w})[0]


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("pscale") / "s.onnx")


def _rewritten(src, dst, scales):
    model = onnx.load(str(src))
    path = prompt_scale.scale_output_path(model, scales)
    onnx.save(model, str(dst))
    return path


def test_output_path_is_found(student):
    path = prompt_scale.output_path(onnx.load(str(student)))
    ops = {n.name: n.op_type for n in onnx.load(str(student)).graph.node}
    assert (ops[path.skip], ops[path.recon], ops[path.out], ops[path.merge], ops[path.fold]) == \
        ("Add", "Conv", "Conv", "Add", "Conv")


def test_rewrite_leaves_the_fp32_output_unchanged(student, tmp_path):
    dst = tmp_path / "ps.onnx"
    path = _rewritten(student, dst, [0.5, 3.0, 20.0])
    rng = np.random.default_rng(0)
    x = rng.random((2, 1, 24, 32), dtype=np.float32)
    eye = np.eye(K, dtype=np.float32)
    for w in [eye[[0, 2]], eye[[1, 1]], np.full((2, K), 1 / K, np.float32), rng.random((2, K)).astype(np.float32),
              np.zeros((2, K), np.float32)]:
        np.testing.assert_allclose(_run(dst, x, w), _run(student, x, w), atol=1e-5, rtol=0)
    model = onnx.load(str(dst))
    by = {n.name: n for n in model.graph.node}
    assert len(by[path.out].input) == 2   # the out conv's bias moved in front of the scale
    assert prompt_scale.recorded(model)["scales"] == pytest.approx([0.5, 3.0, 20.0])
    with pytest.raises(ValueError, match="rewritten already"):
        prompt_scale.scale_output_path(model, [1.0] * K)


def _tensor(path, name, x, w):
    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([name], {"input": x, "prompt": w})[0]


def test_scaled_tensors_carry_each_prompts_correction_over_its_scale(student, tmp_path):
    dst = tmp_path / "ones.onnx"
    path = _rewritten(student, dst, np.ones(K))
    x = np.random.default_rng(1).random((1, 1, 24, 32), dtype=np.float32)
    eye = np.eye(K, dtype=np.float32)
    merged = [_tensor(dst, path.tensor, x, eye[j:j + 1]) for j in range(K)]
    scales = prompt_scale.prompt_scales(merged, list(range(K)), K, percentile=100)
    model = onnx.load(str(dst))
    prompt_scale.set_scales(model, scales)
    onnx.save(model, str(dst))
    recon = prompt_scale.scaled_tensors(model)[2]
    plain = onnx.load(str(student))
    recon_plain = next(n.output[0] for n in plain.graph.node if n.name == path.recon)
    for j in range(K):
        w = eye[j:j + 1]
        np.testing.assert_allclose(_tensor(dst, recon, x, w) * scales[j], _tensor(student, recon_plain, x, w),
                                   atol=1e-5, rtol=1e-4)
        assert np.abs(_tensor(dst, prompt_scale.scaled_tensors(model)[0], x, w)).max() == pytest.approx(1.0, rel=1e-5)


def _ranges(path, x, eye):
    """min/max ranges of every tensor over the prompts' one-hot rows (the CLI's collection in small)."""
    model = onnx.load(str(path))
    names = [o for n in model.graph.node for o in n.output]
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    lo, hi = {}, {}
    for j in range(len(eye)):
        for name, v in zip(names, sess.run(names, {"input": x, "prompt": eye[j:j + 1]})):
            if v.dtype == np.float32 and v.size:
                lo[name], hi[name] = min(lo.get(name, 0.0), float(v.min())), max(hi.get(name, 0.0), float(v.max()))
    return {k: TensorRange(amax=max(-lo[k], hi[k]), min=lo[k], max=hi[k]) for k in lo}


def _scaled_student(student, tmp_path):
    """The tiny student rewritten with s_k from one frame's merge (100th percentile)."""
    x = np.random.default_rng(2).random((1, 1, 24, 32), dtype=np.float32)
    eye = np.eye(K, dtype=np.float32)
    ones = tmp_path / "ones.onnx"
    path = _rewritten(student, ones, np.ones(K))
    merged = [_tensor(ones, path.tensor, x, eye[j:j + 1]) for j in range(K)]
    model = onnx.load(str(ones))
    prompt_scale.set_scales(model, prompt_scale.prompt_scales(merged, list(range(K)), K, percentile=100))
    onnx.save(model, str(tmp_path / "ps.onnx"))
    return tmp_path / "ps.onnx", _ranges(tmp_path / "ps.onnx", x, eye), x, eye


def test_int8_writers_keep_the_merge_float_and_the_clean_prompt_gains(student, tmp_path):
    scaled, _, x, eye = _scaled_student(student, tmp_path)
    path = prompt_scale.output_path(onnx.load(str(student)))   # the rewrite keeps the merge's names
    model = onnx.load(str(scaled))
    errors = {}
    for name, src in (("plain", student), ("scaled", scaled)):
        q = quantize_cpu(src, _ranges(src, x, eye), tmp_path / f"{name}.int8.onnx", float_inputs=("prompt",))
        qm = onnx.load(q)
        if name == "scaled":
            quantised = {n.input[0] for n in qm.graph.node if n.op_type == "QuantizeLinear"}
            assert path.tensor not in quantised           # the merge stays float: no 8-bit grid before the scale
            assert set(prompt_scale.scaled_tensors(model)) & quantised   # the scaled path is quantised
            trt = write_trt_qdq(src, _ranges(src, x, eye), tmp_path / "ps.trt.onnx", float_inputs=["prompt"])
            assert path.merge not in {c for c in trt.quantized_adds}
        errors[name] = [float(np.mean((_run(q, x, eye[j:j + 1]) - _run(student, x, eye[j:j + 1])) ** 2))
                        for j in range(K)]
    # the clean prompt's small correction now uses the whole uint8 range of the scaled path
    assert errors["scaled"][2] < 0.5 * errors["plain"][2]


def test_graphs_without_the_output_path_are_refused(tmp_path):
    path = export_prompted(TinyStudent(K), tmp_path / "tiny.onnx", K, PROMPTS, multiple=2)
    with pytest.raises(ValueError, match="prompt scale"):
        prompt_scale.output_path(onnx.load(str(path)))
    with pytest.raises(ValueError, match="positive"):
        prompt_scale.scale_output_path(onnx.load(str(path)), [1.0, 0.0, 1.0])


def test_prompt_scales_per_slot():
    values = [np.array([1.0, -4.0]), np.array([2.0]), np.array([0.5, 0.25])]
    assert prompt_scale.prompt_scales(values, [0, 1, 0], 2, percentile=100) == pytest.approx([4.0, 2.0])
    with pytest.raises(ValueError, match="slot 2"):
        prompt_scale.prompt_scales(values, [0, 1, 0], 3)


def test_calibrate_student_prompt_scale(tmp_path, capsys):
    plain = calibration_bundle(tmp_path / "b")
    bundle = add_student(plain.path, tmp_path / "student", _export(tmp_path / "s.onnx"),
                         {"prompts": PROMPTS, "gmac_640x512": 0.1})
    out = tmp_path / "int8"
    rc = cli.main(["calibrate", "--bundle", str(bundle.path), "--student", "--routes", "student", "--prompt-scale",
                   "--frames", "6", "--holdout", "2", "--size", "32x24", "--out", str(out),
                   "--bench-runs", "0", "--threads", "1", "--float-tail", "off"])
    assert rc == 0, capsys.readouterr().out
    s = json.loads((out / "calibration.json").read_text())["student"]
    assert len(s["prompt_scale"]["scales"]) == K and all(v > 0 for v in s["prompt_scale"]["scales"])
    rewritten = onnx.load(str(out / "student.pscale.onnx"))
    assert prompt_scale.recorded(rewritten)["scales"] == pytest.approx(s["prompt_scale"]["scales"])
    int8 = onnx.load(str(out / "student.int8-cpu.onnx"))
    assert any(n.name == f"{prompt_scale.PREFIX}/QLinearAdd" for n in int8.graph.node)   # made from the rewrite, fused
    x = np.random.default_rng(3).random((1, 1, 24, 32), dtype=np.float32)
    w = np.eye(K, dtype=np.float32)[2:3]
    np.testing.assert_allclose(_run(out / "student.pscale.onnx", x, w), _run(bundle.student_path, x, w), atol=1e-5)


def test_cpu_model_folds_the_scale_into_its_quantisation(student, tmp_path):
    src, ranges, x, eye = _scaled_student(student, tmp_path)
    fused = quantize_cpu(src, ranges, tmp_path / "fused.onnx", float_inputs=("prompt",))
    plain = quantize_cpu(src, ranges, tmp_path / "unfused.onnx", float_inputs=("prompt",), fuse_prompt_scale=False)
    ops = {n.name: n.op_type for n in onnx.load(fused).graph.node}
    assert ops[f"{prompt_scale.PREFIX}/QLinearAdd"] == "QLinearAdd"   # the merge is an integer kernel again
    assert f"{prompt_scale.PREFIX}/Mul_in" not in ops and f"{prompt_scale.PREFIX}/Mul_out" not in ops
    assert f"{prompt_scale.PREFIX}/Mul_in" in {n.name for n in onnx.load(plain).graph.node}
    meta = {p.key: p.value for p in onnx.load(fused).metadata_props}
    assert meta[prompt_scale.FUSED_KEY] == "1" and prompt_scale.META_KEY in meta
    for j in range(K):
        a, b = _run(fused, x, eye[j:j + 1]), _run(plain, x, eye[j:j + 1])
        assert np.abs(a - b).max() < 1e-3 and np.mean(np.abs(a - b)) < 1e-5   # float rounding at most
    assert not prompt_scale.fuse_cpu(fused)   # once only


def test_student_engine_runs_a_fused_model_frame_by_frame(student, tmp_path):
    from tir.engines.backends.student import StudentEngine

    src, ranges, x, eye = _scaled_student(student, tmp_path)
    fused = quantize_cpu(src, ranges, tmp_path / "fused.onnx", float_inputs=("prompt",))
    engine = StudentEngine(fused, threads=1)
    assert engine.one_frame
    batch = np.concatenate([x, x[:, :, ::-1].copy()])
    got = engine.infer(batch, eye[[0, 2]])
    for i, j in enumerate((0, 2)):
        np.testing.assert_array_equal(got[i:i + 1], engine.infer(batch[i:i + 1], eye[j]))
    assert not StudentEngine(src, threads=1).one_frame


def test_qat_trains_and_writes_the_rewritten_graph(student, tmp_path):
    pytest.importorskip("onnx2torch", exc_type=ImportError)
    try:
        from tir.engines.training import qat
    except Exception as exc:  # noqa: BLE001  (a torchvision that does not match torch)
        pytest.skip(f"needs onnx2torch with a matching torchvision: {exc}")
    src, ranges, x, eye = _scaled_student(student, tmp_path)
    frames = [np.random.default_rng(i).random((24, 32), dtype=np.float32) for i in range(K)]
    result = qat.qat_student(student, ranges, frames, list(eye), tmp_path / "qat.onnx", steps=2, progress=False,
                             init_path=src, batch=2, crop=16, multiple=2)
    model = onnx.load(str(tmp_path / "qat.onnx"))
    assert prompt_scale.recorded(model) is not None   # the graph trained is the graph written
    assert set(prompt_scale.scaled_tensors(model)) <= set(result["ranges"])   # the scaled path is fake-quantised
    np.testing.assert_allclose(_run(tmp_path / "qat.onnx", x, eye[2:3]), _run(student, x, eye[2:3]), atol=0.05)


def test_prompt_scale_needs_the_student(tmp_path, capsys):
    plain = calibration_bundle(tmp_path / "b")
    rc = cli.main(["calibrate", "--bundle", str(plain.path), "--routes", "noise", "--prompt-scale", "--frames", "3",
                   "--size", "32x24", "--out", str(tmp_path / "x")])
    assert rc == 2 and "--prompt-scale rewrites the distilled student" in capsys.readouterr().err
