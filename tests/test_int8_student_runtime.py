"""``--precision int8`` on the CPU runs the student's gated INT8 model (engines/backends/student.py
``cpu_int8_student``): ``tir calibrate --student --out <bundle>/int8``, then ``tir run`` / ``tir bench``."""
import json
import shutil

import pytest

from tir.engines.backends.student import INT8_DIR, INT8_FILE, cpu_int8_student
from tir.engines.benchmarks import precision_skip_reason
from tir.engines.bundle import load_bundle
from tir.engines.engine import EngineError
from tir.engines.loading import load_model
from tir.engines.restorer import Restorer
from tir.tools import cli

from test_calibrate_student import bundles  # noqa: F401  (the tiny student bundle fixture)


@pytest.fixture(scope="module")
def calibrated(bundles, tmp_path_factory):  # noqa: F811
    """A copy of the tiny student bundle with its CPU INT8 student in <copy>/int8 (the gate's
    limits opened so the tiny student passes: the rule under test is the runtime's, not the gate's)."""
    copy = tmp_path_factory.mktemp("int8rt") / "bundle"
    shutil.copytree(bundles[1].path, copy)
    rc = cli.main(["calibrate", "--bundle", str(copy), "--student", "--routes", "student", "--frames", "6",
                   "--holdout", "2", "--size", "32x24", "--out", str(copy / INT8_DIR), "--bench-runs", "0",
                   "--threads", "1", "--max-loss-db", "100", "--min-fidelity-db", "0", "--float-tail", "off"])
    assert rc == 0
    return copy


def test_precision_int8_runs_the_gated_cpu_int8_student(calibrated):
    int8 = Restorer(calibrated, backend="onnxruntime", precision="int8", deploy="student")
    assert int8.student_engine().path == calibrated / INT8_DIR / INT8_FILE
    assert Restorer(calibrated, backend="onnxruntime", deploy="student").student_engine().path == \
        load_bundle(calibrated).student_path
    _, description = load_model(str(calibrated), "onnxruntime", None, 1, precision="int8", deploy="student")
    assert f"CPU INT8 {calibrated / INT8_DIR / INT8_FILE}" in description


def _edit_report(path, change):
    report = json.loads(path.read_text())
    change(report["student"])
    path.write_text(json.dumps(report))


@pytest.mark.parametrize("case", ["refused", "other student", "missing", "int8 file changed", "int8 file not hashed"])
def test_precision_int8_refuses_what_the_gate_does_not_vouch_for(calibrated, tmp_path, case):
    copy = tmp_path / "b"
    shutil.copytree(calibrated, copy)
    report = copy / INT8_DIR / "calibration.json"
    if case == "refused":
        _edit_report(report, lambda s: s["gate"][0].update(passed=False))
        match = "did not pass the accuracy gate"
    elif case == "other student":
        _edit_report(report, lambda s: s.update(student_sha256="0" * 64))
        match = "not made from this bundle's student.onnx"
    elif case == "int8 file changed":   # another model put in its place after the gate passed
        (copy / INT8_DIR / INT8_FILE).write_bytes((copy / "student.onnx").read_bytes())
        match = "is not the file the accuracy gate passed"
    elif case == "int8 file not hashed":   # a report from before the INT8 file was hashed
        _edit_report(report, lambda s: s.pop("file_sha256"))
        match = "records no sha256 of student.int8-cpu.onnx"
    else:
        (copy / INT8_DIR / INT8_FILE).unlink()
        match = "has no CPU INT8 student"
    with pytest.raises(EngineError, match=match):
        cpu_int8_student(load_bundle(copy))
    with pytest.raises(ValueError, match="tir calibrate|fp32"):   # refused at start, not at the first student frame
        Restorer(copy, backend="onnxruntime", precision="int8", deploy="student")
    Restorer(copy, backend="onnxruntime", precision="int8", deploy="routes")   # no student, nothing to refuse


def test_bench_times_the_int8_student_on_onnxruntime(calibrated, capsys):
    assert precision_skip_reason("onnxruntime", "int8", bundle=True) is None
    assert "TensorRT plan precision" in precision_skip_reason("onnxruntime", "int8")   # a single model: fp32 only
    assert cli.main(["bench", "--mode", "model", "--model", str(calibrated), "--backend", "onnxruntime",
                     "--precision", "fp32,int8", "--deploy", "student", "--size", "32x24", "--frames", "3",
                     "--warmup", "1", "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "skipped" not in text and f"CPU INT8 {calibrated / INT8_DIR / INT8_FILE}" in text


def test_tir_run_precision_int8_runs_the_int8_student(calibrated, capsys):
    assert cli.main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--model", str(calibrated),
                     "--backend", "onnxruntime", "--precision", "int8", "--deploy", "student", "--frames", "2",
                     "--output", "http://127.0.0.1:0", "--quiet", "--threads", "1"]) == 0
    assert f"CPU INT8 {calibrated / INT8_DIR / INT8_FILE}" in capsys.readouterr().out


def test_bench_int8_on_a_bundle_that_runs_no_student_is_skipped(calibrated, capsys):
    assert cli.main(["bench", "--mode", "model", "--model", str(calibrated), "--backend", "onnxruntime",
                     "--precision", "fp32,int8", "--deploy", "routes", "--size", "32x24", "--frames", "2",
                     "--warmup", "1", "--no-progress", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "int8: skipped:" in text and "runs no student" in text
