"""tir calibrate --student: INT8 for the distilled student (two inputs, the prompt kept float)."""
import hashlib
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tir.calibration.qdq import side_input_nodes
from tir.engines.bundle import add_student
from tir.tools import cli

from tiny_models import calibration_bundle, export_prompted

PROMPTS = ["noise", "blur", "clean"]


class TinyStudent(nn.Module):
    """Student-like: prompt weights (N, K) -> MatMul with a table -> FiLM conv -> scale/shift of
    the image features, as engines/training/models/student.py wires its prompt. Table row j is
    0.1·(j+1) everywhere, so the MatMul output's range tells which slots calibration fed."""

    def __init__(self, k):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("table", 0.1 * torch.arange(1, k + 1, dtype=torch.float32)[:, None].repeat(1, 8))
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.c1, self.c2 = nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1)
        self.film = nn.Conv2d(8, 16, 1)

    def forward(self, x, w):
        gamma, beta = self.film((w @ self.table).reshape(-1, 8, 1, 1)).chunk(2, 1)
        h = torch.relu(self.c1(self.down(x))) * (1 + gamma) + beta
        return x + 0.1 * self.up(self.c2(h))


def _export_student(path, k):
    return export_prompted(TinyStudent(k), path, k, PROMPTS, multiple=2)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("sbundle")
    plain = calibration_bundle(d)
    student = add_student(plain.path, d / "student", _export_student(d / "s.onnx", len(PROMPTS)),
                          {"prompts": PROMPTS, "gmac_640x512": 0.1})
    return plain, student


def sha256_of(path):
    """The sha256 hex digest of the file at ``path`` (a file only read must keep it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibrate_student(bundle, out, *extra):
    """``tir calibrate`` of the tiny student bundle's student on 6 frames (1 held out) at 32×24, one
    thread, no speed runs, the image tail quantised, written to ``out``; ``extra``: more options.
    Returns the exit code."""
    return cli.main(["calibrate", "--bundle", str(bundle.path), "--routes", "student", "--frames", "6",
                     "--holdout", "1", "--size", "32x24", "--out", str(out), "--bench-runs", "0", "--threads", "1",
                     "--float-tail", "off", *extra])


def _prompt_tensors(model):
    side = set(side_input_nodes(model, ["prompt"]))
    return {"prompt"} | {o for n in model.graph.node if n.name in side for o in n.output}


def test_side_input_nodes_are_the_prompt_branch_only(bundles):
    model = onnx.load(str(bundles[1].student_path))
    ops = {n.name: n.op_type for n in model.graph.node}
    side = side_input_nodes(model, ["prompt"])
    assert "MatMul" in {ops[n] for n in side}
    film = next(n.name for n in model.graph.node if n.op_type == "Conv" and "film" in n.name)
    assert film in side
    image_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name != film]
    assert len(image_convs) == 2 and not set(image_convs) & set(side)
    relu = next(n.output[0] for n in model.graph.node if n.op_type == "Relu")
    side_out = _prompt_tensors(model)
    merge = [n for n in model.graph.node if relu in n.input]
    assert merge and any(set(n.input) & side_out for n in merge)  # where the FiLM scale meets the features
    assert not any(n.name in side for n in merge)


def test_student_int8_keeps_the_prompt_float_and_gates_every_prompt(bundles, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "int8"
    rc = cli.main(["calibrate", "--bundle", str(bundles[1].path), "--student", "--routes", "student",
                   "--frames", "6", "--holdout", "2", "--size", "32x24", "--out", str(out),
                   "--bench-runs", "2", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "calibration.json").read_text())
    assert report["routes"] == {}  # --routes student: the student alone
    s = report["student"]
    assert s["prompts"] == PROMPTS and s["calibration_frames"] == 6
    rows = [(g["route"], g["flavour"]) for g in s["gate"]]
    assert sorted(rows) == sorted((f"student/{p}", f) for p in PROMPTS for f in ("cpu-u8s8", "trt-qdq"))
    assert all(np.isfinite(g["fidelity_db"]) and g["frames"] == 2 for g in s["gate"])
    assert all(f"student/{p}" in text for p in PROMPTS)
    assert set(s["latency_ms"]) == {"fp32", "int8-cpu-u8s8", "int8-trt-s8s8-on-ort"}

    # every prompt slot was fed in turn: table row j is 0.1·(j+1), so the MatMul output spans 0.1..0.3
    fp32 = onnx.load(str(bundles[1].student_path))
    matmul = next(n.output[0] for n in fp32.graph.node if n.op_type == "MatMul")
    ranges = json.loads((out / "student.ranges.json").read_text())
    assert ranges[matmul]["min"] == pytest.approx(0.1) and ranges[matmul]["max"] == pytest.approx(0.3)

    prompt_side = _prompt_tensors(fp32)
    x = np.random.default_rng(1).random((1, 1, 24, 32), dtype=np.float32)
    ref = ort.InferenceSession(str(bundles[1].student_path), providers=["CPUExecutionProvider"])
    for flavour in ("int8-cpu.onnx", "int8-trt.onnx"):
        path = out / f"student.{flavour}"
        model = onnx.load(str(path))
        quantised = [n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
        assert quantised, f"{flavour}: nothing was quantised"
        assert not set(quantised) & prompt_side, f"{flavour} quantises the prompt branch"
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = {i.name: i.type for i in sess.get_inputs()}
        assert inputs == {"input": "tensor(float)", "prompt": "tensor(float)"}
        for j in range(len(PROMPTS)):
            w = np.eye(len(PROMPTS), dtype=np.float32)[j:j + 1]
            y = sess.run(None, {"input": x, "prompt": w})[0]
            y32 = ref.run(None, {"input": x, "prompt": w})[0]
            assert y.shape == (1, 1, 24, 32) and np.abs(y - y32).max() < 0.05


def test_routes_and_student_together(bundles, tmp_path, capsys):
    out = tmp_path / "both"
    rc = cli.main(["calibrate", "--bundle", str(bundles[1].path), "--student", "--routes", "noise",
                   "--frames", "3", "--holdout", "1", "--size", "32x24", "--out", str(out),
                   "--bench-runs", "0", "--threads", "1", "--no-fp16-search"])
    assert rc == 0, capsys.readouterr().out
    report = json.loads((out / "calibration.json").read_text())
    assert set(report["routes"]) == {"noise"} and len(report["student"]["gate"]) == 2 * len(PROMPTS)


@pytest.mark.parametrize("flags", [["--student"], ["--routes", "student"]])
def test_student_on_a_bundle_without_one_is_one_clear_error(bundles, tmp_path, capsys, flags):
    rc = cli.main(["calibrate", "--bundle", str(bundles[0].path), *flags, "--out", str(tmp_path / "x"),
                   "--frames", "3", "--size", "32x24"])
    text = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(text.splitlines()) == 1 and "has no student (manifest key 'student')" in text and "tir distill" in text


def test_student_needs_a_frame_per_prompt_slot(bundles, tmp_path, capsys):
    rc = cli.main(["calibrate", "--bundle", str(bundles[1].path), "--routes", "student", "--frames", "2",
                   "--out", str(tmp_path / "x"), "--size", "32x24", "--bench-runs", "0"])
    assert rc == 2
    assert "--frames >= 3" in capsys.readouterr().err


def test_sensitivity_diagnosis_and_tail_options(bundles, tmp_path, capsys):
    """--sensitivity N ranks the student's U8S8 nodes and tensors (printed and in
    student.sensitivity.json); --no-float-tail quantises the image tail; the report records the
    tail options and the student's percentile."""
    out = tmp_path / "diag"
    rc = cli.main(["calibrate", "--bundle", str(bundles[1].path), "--routes", "student", "--frames", "3",
                   "--holdout", "1", "--size", "32x24", "--out", str(out), "--bench-runs", "0", "--threads", "1",
                   "--sensitivity", "1", "--student-percentile", "99.5"])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "calibration.json").read_text())
    assert report["float_tail"] == "auto" and report["tail_blocks"] == 1 and report["student"]["percentile"] == 99.5
    assert report["student"]["float_tail"] is (not all(g["passed"] for g in report["student"]["gate"]))
    diag = json.loads((out / "student.sensitivity.json").read_text())
    assert report["student"]["sensitivity"]["path"] == str(out / "student.sensitivity.json")
    fp32 = onnx.load(str(bundles[1].student_path))
    ops = {n.name: n.op_type for n in fp32.graph.node}
    only = [r["node"] for r in diag["only"]]
    assert only and sorted(only) == sorted(r["node"] for r in diag["float"])
    assert "/c1/Conv" in only and not {n for n in only if ops[n] == "MatMul"}  # the prompt branch stays float
    assert all(a["fidelity_db"] <= b["fidelity_db"] for a, b in zip(diag["only"], diag["only"][1:]))
    assert diag["tensors"] and np.isfinite(diag["tensors"][0]["sqnr_db"])  # worst first
    assert all(a["sqnr_db"] <= b["sqnr_db"] for a, b in zip(diag["tensors"], diag["tensors"][1:]))
    assert "node sensitivity (only this node INT8)" in text and "SQNR dB" in text

    # TinyStudent's tail: x + 0.1·up(c2(h)). --float-tail on: the skip Add float; off: quantised; auto:
    # off while the gate passes (a limit nothing misses), on when it refuses (a limit nothing meets)
    skip = next(n for n in fp32.graph.node if n.op_type == "Add" and "input" in n.input).name
    lenient, strict = ["--max-loss-db", "100", "--min-fidelity-db", "0"], ["--max-loss-db", "-100", "--min-fidelity-db", "1000"]
    for j, (flags, tail) in enumerate(((["--float-tail", "on"], True), (["--float-tail", "off"], False),
                                       (lenient, False), (strict, True))):
        o = tmp_path / f"t{j}"
        assert cli.main(["calibrate", "--bundle", str(bundles[1].path), "--routes", "student", "--frames", "3",
                         "--holdout", "1", "--size", "32x24", "--out", str(o), "--bench-runs", "0",
                         "--threads", "1", *flags]) == 0
        assert json.loads((o / "calibration.json").read_text())["student"]["float_tail"] is tail, flags
        q = onnx.load(str(o / "student.int8-cpu.onnx"))
        producers = {p: n.op_type for n in q.graph.node for p in n.output}
        node = next(n for n in q.graph.node if n.name == skip)
        assert any(producers.get(i) == "DequantizeLinear" for i in node.input) is not tail, flags
