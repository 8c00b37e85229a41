"""tools/gpu_check.sh: the GPU check's dry run (ONNX Runtime CPU in place of TensorRT) on a tiny bundle."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
STEPS = ["install", "pytest-gpu", "calibrate", "build", "bench-model", "bench-trt-style"]


def _run(*args, timeout=300):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("OUT", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from tiny_models import calibration_bundle

    return calibration_bundle(tmp_path_factory.mktemp("bundle")).path


def test_dry_run_runs_every_step_and_writes_one_folder(tmp_path, tiny_bundle):
    out = tmp_path / "out"
    proc = _run("--dry-run", "--out", str(out), "--bundle", str(tiny_bundle), "--task", "noise", "--size", "160x120",
                "--frames", "4", "--calib-frames", "4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry-run" and summary["ok"] is True
    status = {s["step"]: s["status"] for s in summary["steps"]}
    assert list(status) == STEPS
    assert status["build"] == "skipped" and all(status[s] == "ok" for s in STEPS if s != "build")
    assert {p.name for p in out.iterdir()} == {"summary.json", "gpu-check.log", "env.txt", "pytest-gpu.xml",
                                               "calibration.json", "bench-model.json", "bench-trt-style.json"}
    log = (out / "gpu-check.log").read_text()
    assert "== bench-trt-style" in log and "Performance summary" in log
    model = json.loads((out / "bench-model.json").read_text())["results"]
    assert [(r["backend"], r.get("precision"), "skipped" in r) for r in model] == [
        ("onnxruntime", "fp32", False), ("onnxruntime", "fp16", True), ("onnxruntime", "int8", True)]
    assert model[0]["model_only"]["frames"] == 4
    trt = json.loads((out / "bench-trt-style.json").read_text())["results"][0]
    assert trt["trt_style"]["timing"] == "host" and trt["trt_style"]["frames"] == 4
    assert trt["pipeline"]["frames"] >= 4
    assert 'tests="' in (out / "pytest-gpu.xml").read_text()  # the gpu tests were collected (and skipped here)


def test_no_budget_left_skips_and_fails(tmp_path):
    out = tmp_path / "out"
    proc = _run("--dry-run", "--out", str(out), "--budget", "0")
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False
    assert [s["step"] for s in summary["steps"]] == STEPS
    assert [s["status"] for s in summary["steps"]] == ["no-time"] * 3 + ["skipped"] + ["no-time"] * 2
    assert "no time left in the 0s budget" in summary["steps"][0]["command"]


def test_bad_arguments_exit_2_with_one_line(tmp_path):
    proc = _run("--frames", "many", "--out", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.strip() == "gpu_check.sh: many is not a whole number of frames/seconds"
    proc = _run("--nosuch")
    assert proc.returncode == 2 and "unknown option --nosuch" in proc.stderr
