"""tir calibrate --student --qat-steps N [--qat-minutes M]: QAT of the student before INT8 (engines/training/qat.py)."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

try:   # the `qat` extra; onnx2torch imports torchvision, which fails (RuntimeError) on a torch build it does not match
    import onnx2torch  # noqa: F401
    QAT_SKIP = None
except Exception as exc:  # noqa: BLE001
    QAT_SKIP = f"needs onnx2torch with a torchvision that matches torch (pip install -e '.[qat]'): {exc}"

from tir.tools import cli  # noqa: E402

from test_calibrate_student import PROMPTS, bundles, calibrate_student, sha256_of  # noqa: E402,F401  (the tiny student bundle fixture)

K = len(PROMPTS)


@pytest.mark.skipif(QAT_SKIP is not None, reason=str(QAT_SKIP))
def test_calibrate_qat_steps_fine_tunes_a_copy_and_gates_it(bundles, tmp_path, capsys):  # noqa: F811
    fp32 = bundles[1].student_path
    before = sha256_of(fp32)
    out = tmp_path / "qat"
    rc = calibrate_student(bundles[1], out, "--qat-steps", "3")
    text = capsys.readouterr().out
    assert rc == 0, text
    assert sha256_of(fp32) == before  # the fp32 student is only read
    s = json.loads((out / "calibration.json").read_text())["student"]
    assert s["fp32_onnx"] == str(fp32) and s["qat"]["steps"] == 3 and s["qat"]["written"] >= 2
    tuned = out / "student.qat.onnx"
    assert s["qat"]["path"] == str(tuned) and tuned.exists()
    changed = {i.name for i in onnx.load(str(tuned)).graph.initializer} & {n.input[1] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"}
    a = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tuned)).graph.initializer}
    assert any(not np.array_equal(a[n], b[n]) for n in changed)  # trained weights, written back by name
    assert len(s["gate"]) == 2 * K  # gated against the unchanged fp32 student, every prompt


@pytest.mark.parametrize("argv, needle", [
    (["--routes", "student", "--qat-steps", "-1"], None),
    (["--routes", "student", "--qat-steps", "2", "--qat-minutes", "0"], None),
    (["--routes", "noise", "--qat-steps", "2"], "add --student"),
    (["--routes", "student", "--qat-minutes", "1"], "give --qat-steps"),
    (["--routes", "student", "--qat-init", "."], "give --qat-steps"),
    (["--routes", "student", "--qat-steps", "2", "--qat-init", "."], "no student.qat.onnx or student.ranges.json"),
])
def test_qat_options_validate(bundles, tmp_path, capsys, argv, needle):  # noqa: F811
    args = ["calibrate", "--bundle", str(bundles[1].path), "--frames", "6", "--size", "32x24",
            "--out", str(tmp_path / "x"), *argv]
    if needle is None:
        with pytest.raises(SystemExit) as exc:
            cli.main(args)
        assert exc.value.code == 2
    else:
        assert cli.main(args) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "x" / "student.qat.onnx").exists()


def test_qat_without_onnx2torch_says_what_to_install(bundles, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A machine without the `qat` extra (or with a torchvision that does not match torch) gets one
    line naming the extra, before any fine-tuning, and no student.qat.onnx."""
    import sys

    monkeypatch.setitem(sys.modules, "onnx2torch", None)   # import onnx2torch -> ImportError
    rc = cli.main(["calibrate", "--bundle", str(bundles[1].path), "--routes", "student", "--frames", "6",
                   "--holdout", "1", "--size", "32x24", "--out", str(tmp_path / "q"), "--bench-runs", "0",
                   "--threads", "1", "--qat-steps", "2", "--float-tail", "off"])
    out = capsys.readouterr().err
    assert rc != 0 and "pip install -e '.[qat]'" in out
    assert not (tmp_path / "q" / "student.qat.onnx").exists()


def test_student_frames_carry_the_gate_references(tmp_path):
    """The student's calibration set gives each frame its clean reference (the pair the gate
    judges with), so QAT can weigh each crop as the gate charges it; the input of a pair is
    the calibration frame itself."""
    import argparse

    from tir.tools.calibrate import _student_frames

    args = argparse.Namespace(frames=6, source="synthetic", seed=0, data=None)
    frames, _ = _student_frames(args, (32, 24), PROMPTS)
    assert frames.has_references
    for i in range(len(frames)):
        x, y = frames.pair(i)
        np.testing.assert_array_equal(x, frames[i])
        assert y.shape == x.shape and np.isfinite(y).all()


@pytest.mark.skipif(QAT_SKIP is not None, reason=str(QAT_SKIP))
def test_crop_loss_weighs_crops_by_the_teachers_own_error():
    """With references the loss is log10(e_q + e_ref): the same INT8 error costs a crop the
    teacher restores well (e_ref small: a clean frame under the clean prompt) far more gradient
    than one it restores coarsely; without, log10(e_q) weighs both alike."""
    import torch

    from tir.engines.training import qat

    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(0.2, 0.8, (2, 1, 16, 16)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(0, 0.003, (1, 1, 16, 16)).astype(np.float32))
    ref = target.clone()
    ref[0] += 0.002   # crop 0: the teacher is 54 dB from its reference
    ref[1] += 0.05    # crop 1: 26 dB
    grads = {}
    for with_ref in (True, False):
        out = (target + noise).requires_grad_(True)   # the same INT8 error on both crops
        loss, e_q = qat.crop_loss(out, target, ref if with_ref else None)
        loss.backward()
        g = out.grad.abs().sum(dim=(1, 2, 3))
        grads[with_ref] = float(g[0] / g[1])
        assert torch.allclose(e_q, torch.mean(noise ** 2).expand(2), rtol=1e-4)
    assert abs(grads[False] - 1.0) < 1e-3
    assert grads[True] > 50.0, grads


@pytest.mark.skipif(QAT_SKIP is not None, reason=str(QAT_SKIP))
def test_finetune_takes_one_reference_per_frame(bundles):  # noqa: F811
    from tir.engines.training import qat

    gm = qat.load_onnx(bundles[1].student_path)
    x = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError):
        qat.finetune(gm, gm, [x], [np.eye(K, dtype=np.float32)[0]], steps=1, references=[x, x], progress=False)


@pytest.mark.skipif(QAT_SKIP is not None, reason=str(QAT_SKIP))
def test_qat_init_goes_on_from_an_earlier_run(bundles, tmp_path, capsys):  # noqa: F811
    """--qat-init DIR: the second run starts from DIR's fine-tuned weights (not the fp32 student's)
    and learned ranges; the fp32 student stays the teacher and the gate's reference."""
    fp32 = bundles[1].student_path
    before = sha256_of(fp32)
    common = ["calibrate", "--bundle", str(bundles[1].path), "--routes", "student", "--frames", "6", "--holdout", "1",
              "--size", "32x24", "--bench-runs", "0", "--threads", "1", "--float-tail", "off"]
    first, second = tmp_path / "q1", tmp_path / "q2"
    assert cli.main(common + ["--out", str(first), "--qat-steps", "3"]) == 0
    assert cli.main(common + ["--out", str(second), "--qat-steps", "1", "--qat-init", str(first)]) == 0
    capsys.readouterr()
    s = json.loads((second / "calibration.json").read_text())["student"]
    assert s["qat"]["init"] == str(first / "student.qat.onnx") and s["fp32_onnx"] == str(fp32)
    assert sha256_of(fp32) == before
    w = {name: [numpy_helper.to_array(i) for i in onnx.load(str(p)).graph.initializer if i.name == name][0]
         for p in (fp32,) for name in [n.input[1] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]}
    one = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(first / "student.qat.onnx")).graph.initializer}
    two = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(second / "student.qat.onnx")).graph.initializer}
    # one step at lr ~2e-5 from the first run's weights: nearer to them than to the fp32 student's
    moved = [n for n in w if not np.array_equal(one[n], w[n])]
    assert moved
    assert sum(np.abs(two[n] - one[n]).sum() for n in moved) < sum(np.abs(two[n] - w[n]).sum() for n in moved)


@pytest.mark.skipif(QAT_SKIP is not None, reason=str(QAT_SKIP))
def test_qat_trains_the_float_tail_model_when_it_is_asked_for(bundles, tmp_path, capsys):  # noqa: F811
    """--float-tail on: QAT fake-quantises only what the gated model quantises (the image tail
    float), so it trains that model; off: every tensor of the all-INT8 model."""
    seen = {}
    for mode in ("on", "off"):
        out = tmp_path / mode
        assert cli.main(["calibrate", "--bundle", str(bundles[1].path), "--routes", "student", "--frames", "6",
                         "--holdout", "1", "--size", "32x24", "--out", str(out), "--bench-runs", "0", "--threads", "1",
                         "--qat-steps", "1", "--float-tail", mode, "--tail-blocks", "0"]) == 0
        seen[mode] = json.loads((out / "calibration.json").read_text())["student"]["qat"]
    capsys.readouterr()
    assert seen["on"]["activations"] < seen["off"]["activations"]
    assert seen["on"]["weights"] < seen["off"]["weights"]   # the tail conv keeps float weights
