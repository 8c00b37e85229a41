"""The student's FiLM multiply/add on ONNX Runtime's integer kernels (``quantize_cpu(film="int8")``,
``tir calibrate --student --film int8``) and the QAT fake quantisers that match it
(docs/int8.md, "Session 23")."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tir.calibration.data import calibration_set
from tir.calibration.qdq import FILM_MODES, collect_ranges, film_nodes, quantize_cpu
from tir.tools import cli

from test_calibrate_student import PROMPTS, bundles, calibrate_student, sha256_of  # noqa: F401  (the tiny student bundle fixture)

K = len(PROMPTS)


def _ranges(path, size=(32, 24), percentile=99.9):
    """Percentile ranges of the student at ``path`` on 6 synthetic frames of ``size``, one-hot prompts in turn."""
    eye = np.eye(K, dtype=np.float32)
    frames = calibration_set("synthetic", 6, size, seed=0)
    col = collect_ranges(str(path), frames, threads=1, progress=False, extra_inputs=lambda first, batch: {
        "prompt": eye[[(first + r) % K for r in range(len(batch))]]})
    return col.ranges("percentile", percentile=percentile)


def _optimised_ops(path, tmp_path):
    """Op types of ONNX Runtime's optimised CPU graph of ``path`` (what its kernels run)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node]


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_film_nodes_are_the_mul_and_add_where_the_prompt_meets_the_features(bundles):  # noqa: F811
    model = onnx.load(str(bundles[1].student_path))
    nodes = {n.name: n for n in model.graph.node}
    film = film_nodes(model, ["prompt"])
    assert sorted(nodes[n].op_type for n in film) == ["Add", "Mul"]
    mul = next(nodes[n] for n in film if nodes[n].op_type == "Mul")
    assert _producers(model)[mul.input[0]].op_type == "Relu"   # h = relu(c1(x)) · (1 + γ) + β


def test_film_int8_quantises_the_film_on_integer_kernels(bundles, tmp_path):  # noqa: F811
    path = bundles[1].student_path
    ranges = _ranges(path)
    model = onnx.load(str(path))
    film = film_nodes(model, ["prompt"])
    out = {}
    for mode in FILM_MODES:
        out[mode] = tmp_path / f"{mode}.onnx"
        quantize_cpu(str(path), ranges, out[mode], float_inputs=["prompt"], film=mode)
    q = onnx.load(str(out["int8"]))
    prod = _producers(q)
    consumers = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    for name in film:
        node = next(n for n in q.graph.node if n.name == name)
        # every input from a DequantizeLinear, the output into a QuantizeLinear: a QLinearMul / QLinearAdd
        assert all(prod[i].op_type == "DequantizeLinear" for i in node.input), name
        assert [c.op_type for c in consumers[node.output[0]]] == ["QuantizeLinear"], name
    # the prompt branch itself stays float: only its outputs the FiLM reads get a Q/DQ pair
    matmul = next(n for n in q.graph.node if n.op_type == "MatMul")
    assert all(prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in matmul.input)
    ops = {m: _optimised_ops(p, tmp_path) for m, p in out.items()}
    # one more QLinearMul and QLinearAdd, one float Mul and Add fewer (the tiny student's `0.1 ·` is
    # a QLinearMul in both); default: the FiLM stays float as before
    for op, n in (("QLinearMul", 1), ("QLinearAdd", 1), ("Mul", -1), ("Add", -1)):
        assert ops["int8"].count(op) - ops["float"].count(op) == n, (op, ops)
    # the INT8 model with the FiLM quantised still computes the student
    x = np.random.default_rng(1).random((1, 1, 24, 32), dtype=np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sess = ort.InferenceSession(str(out["int8"]), providers=["CPUExecutionProvider"])
    for j in range(K):
        w = np.eye(K, dtype=np.float32)[j:j + 1]
        y, y32 = (s.run(None, {"input": x, "prompt": w})[0] for s in (sess, ref))
        assert np.abs(y - y32).max() < 0.05


def test_film_float_is_the_default_and_unknown_modes_are_refused(bundles, tmp_path):  # noqa: F811
    path = bundles[1].student_path
    ranges = _ranges(path)
    a, b = tmp_path / "default.onnx", tmp_path / "float.onnx"
    quantize_cpu(str(path), ranges, a, float_inputs=["prompt"])
    quantize_cpu(str(path), ranges, b, float_inputs=["prompt"], film="float")
    ga, gb = onnx.load(str(a)).graph, onnx.load(str(b)).graph
    assert [n.op_type for n in ga.node] == [n.op_type for n in gb.node]
    with pytest.raises(ValueError, match="film"):
        quantize_cpu(str(path), ranges, tmp_path / "x.onnx", float_inputs=["prompt"], film="int4")


def test_calibrate_film_int8_leaves_the_fp32_student_and_records_the_mode(bundles, tmp_path, capsys):  # noqa: F811
    fp32 = bundles[1].student_path
    before = sha256_of(fp32)
    out = tmp_path / "film"
    rc = calibrate_student(bundles[1], out, "--film", "int8")
    assert rc == 0, capsys.readouterr().out
    assert sha256_of(fp32) == before
    s = json.loads((out / "calibration.json").read_text())["student"]
    assert s["film"] == "int8"
    q = onnx.load(str(out / "student.int8-cpu.onnx"))
    prod = _producers(q)
    film = film_nodes(onnx.load(str(fp32)), ["prompt"])
    assert all(prod[i].op_type == "DequantizeLinear" for n in q.graph.node if n.name in film for i in n.input)


@pytest.mark.parametrize("argv, needle", [
    (["--routes", "student", "--film", "int4"], "invalid choice"),
    (["--routes", "noise", "--film", "int8"], "add --student"),
])
def test_film_option_validates(bundles, tmp_path, capsys, argv, needle):  # noqa: F811
    args = ["calibrate", "--bundle", str(bundles[1].path), "--frames", "6", "--size", "32x24",
            "--out", str(tmp_path / "x"), *argv]
    if needle == "invalid choice":   # argparse refuses it (exit 2)
        with pytest.raises(SystemExit) as exc:
            cli.main(args)
        assert exc.value.code == 2
    else:
        assert cli.main(args) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_qat_fake_quantises_the_film_as_the_int8_model_does(bundles, tmp_path):  # noqa: F811
    """γ, β (as the FiLM reads them: 1 + γ and β) and the FiLM Mul and Add outputs get a fake
    quantiser from the film="int8" model, and the fake-quantised torch graph reproduces its error."""
    try:   # the `qat` extra
        import onnx2torch  # noqa: F401
        import torch

        from tir.engines.training import qat
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs onnx2torch (pip install -e '.[qat]'): {exc}")
    path = bundles[1].student_path
    ranges = _ranges(path)
    model = onnx.load(str(path))
    nodes = {n.name: n for n in model.graph.node}
    film = film_nodes(model, ["prompt"])
    film_tensors = {t for n in film for t in list(nodes[n].input) + list(nodes[n].output)}
    plans = {}
    for mode in FILM_MODES:
        ptq = tmp_path / f"{mode}.onnx"
        quantize_cpu(str(path), ranges, ptq, float_inputs=["prompt"], film=mode, fuse_prompt_scale=False)
        plans[mode] = (ptq, qat.qdq_plan(path, ptq))
    assert film_tensors <= set(plans["int8"][1].activations)
    # film="float": the FiLM's input features and its output (the next conv's input) only
    add = next(nodes[n] for n in film if nodes[n].op_type == "Add")
    assert film_tensors & set(plans["float"][1].activations) == {nodes[film[0]].input[0], add.output[0]}
    ptq, plan = plans["int8"]
    gm = qat.prepare_qat(qat.load_onnx(path), plan, reduce_range=True)
    fp32, int8 = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (path, ptq))
    rng = np.random.default_rng(3)
    for j in range(K):
        x, w = rng.random((1, 1, 24, 32), dtype=np.float32), np.eye(K, dtype=np.float32)[j:j + 1]
        ref = fp32.run(None, {"input": x, "prompt": w})[0]
        q = int8.run(None, {"input": x, "prompt": w})[0]
        with torch.no_grad():
            fq = gm(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        assert np.sqrt(np.mean((fq - q) ** 2)) < 0.3 * np.sqrt(np.mean((ref - q) ** 2))


def test_film_int8_leaves_the_prompt_scale_to_its_fold(tmp_path):
    """A student rewritten with the per-prompt output scale (calibration/prompt_scale.py): its two
    scale Muls also read the prompt branch, but they are no FiLM: ``prompt_scale.fuse_cpu`` folds
    them into the quantisation scales with ``film="int8"`` as without it."""
    from tir.calibration import prompt_scale

    from test_prompt_scale import _export, _scaled_student

    src, ranges, x, eye = _scaled_student(_export(tmp_path / "s.onnx"), tmp_path)
    model = onnx.load(str(src))
    film = film_nodes(model, ["prompt"])
    assert film and not [n for n in film if n.startswith(f"{prompt_scale.PREFIX}/")]
    out = quantize_cpu(src, ranges, tmp_path / "film.onnx", float_inputs=("prompt",), film="int8")
    q = onnx.load(out)
    ops = {n.name: n.op_type for n in q.graph.node}
    assert ops[f"{prompt_scale.PREFIX}/QLinearAdd"] == "QLinearAdd"
    assert f"{prompt_scale.PREFIX}/Mul_in" not in ops and f"{prompt_scale.PREFIX}/Mul_out" not in ops
    prod = _producers(q)
    assert all(prod[i].op_type == "DequantizeLinear" for n in q.graph.node if n.name in film for i in n.input)


def test_calibrate_qat_with_film_int8_trains_the_film_quantisers(bundles, tmp_path, capsys):  # noqa: F811
    """``--qat-steps`` with ``--film int8`` fake-quantises what the written CPU model quantises: the
    FiLM's 1 + γ, β and Mul output get learned ranges (with ``--film float`` they get none)."""
    try:   # the `qat` extra
        import onnx2torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs onnx2torch (pip install -e '.[qat]'): {exc}")
    fp32 = onnx.load(str(bundles[1].student_path))
    nodes = {n.name: n for n in fp32.graph.node}
    film = film_nodes(fp32, ["prompt"])
    mul = next(nodes[n] for n in film if nodes[n].op_type == "Mul")
    add = next(nodes[n] for n in film if nodes[n].op_type == "Add")
    film_only = {mul.input[1], mul.output[0], next(i for i in add.input if i != mul.output[0])}   # 1 + γ, h·(1 + γ), β
    counts = {}
    for mode in FILM_MODES:
        out = tmp_path / mode
        rc = calibrate_student(bundles[1], out, "--qat-steps", "2", "--film", mode)
        assert rc == 0, capsys.readouterr().out
        s = json.loads((out / "calibration.json").read_text())["student"]
        counts[mode] = s["qat"]["activations"]
    assert counts["int8"] - counts["float"] == len(film_only)
