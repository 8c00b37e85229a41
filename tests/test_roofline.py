"""tir bench --roofline: the dense-conv reference, MAC counts and shares (engines/training/roofline.py),
and the per-precision ORT optimisation level (engines/backends/onnxruntime.py)."""
import numpy as np
import onnxruntime as ort
import pytest

from tir.engines.training import roofline
from tir.engines.backends.onnxruntime import ONNXRuntimeEngine, is_quantized, optimization_level


def _int8_level():
    """INT8 QDQ models' level on this CPU: ALL with VNNI or AVX2, EXTENDED without (tests/test_int8_cpu.py)."""
    from tir.edge.machine import int8_cpu_features

    cpu = int8_cpu_features()
    return (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if cpu.vnni or "avx2" in cpu.flags
            else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)


def test_reference_macs_and_models(tmp_path):
    size = (64, 48)
    assert roofline.reference_macs(size) == 4 * 32 * 32 * 9 * 12 * 16
    paths = roofline.write_reference(tmp_path, size)
    assert not is_quantized(paths["fp32"]) and is_quantized(paths["int8"])
    assert optimization_level(paths["fp32"]) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert optimization_level(paths["int8"]) == _int8_level()
    x = np.random.default_rng(0).random((1, 32, 12, 16), dtype=np.float32)
    ref = ort.InferenceSession(paths["fp32"], providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    q = ort.InferenceSession(paths["int8"], providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert ref.shape == q.shape == (1, 32, 12, 16) and np.corrcoef(ref.ravel(), q.ravel())[0, 1] > 0.99


def test_engine_uses_the_level_of_its_precision(tmp_path):
    paths = roofline.write_reference(tmp_path, (32, 32))
    for prec, level in (("fp32", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                        ("int8", _int8_level())):
        eng = ONNXRuntimeEngine(paths[prec], threads=1)
        assert eng.session.get_session_options().graph_optimization_level == level


def test_shares_are_relative_to_the_same_precision_reference():
    x = np.zeros((1, 1, 4, 4), np.float32)
    items = [roofline.Item("ref", "-", 2_000_000_000, "fp32", x, kind="reference", times_ms=[20.0, 10.0, 30.0]),
             roofline.Item("ref8", "-", 2_000_000_000, "int8", x, kind="reference", times_ms=[10.0]),
             roofline.Item("a", "-", 1_000_000_000, "fp32", x, times_ms=[20.0]),
             roofline.Item("a", "-", 1_000_000_000, "int8", x, times_ms=[20.0]),
             roofline.Item("b", "-", None, "fp32", x, times_ms=[5.0])]
    rows = {(r["model"], r["precision"]): r for r in roofline.shares(items)}
    assert rows[("ref", "fp32")]["gmac_per_s"] == 100.0 and rows[("ref", "fp32")]["share"] == 1.0
    assert rows[("a", "fp32")]["gmac_per_s"] == 50.0 and rows[("a", "fp32")]["share"] == 0.5
    assert rows[("a", "int8")]["share"] == 0.25        # against the int8 reference (200 GMAC/s)
    assert rows[("b", "fp32")]["share"] is None


def test_bundle_items_count_routes_from_the_checkpoint(tmp_path):
    from tir.engines.bundle import load_bundle
    from tir.engines.training.continual import RouteModule
    from tir.engines.training.macs import count_macs
    from test_fast_route import _model, _old_bundle

    model = _model()
    bundle = load_bundle(_old_bundle(tmp_path, model))
    items = roofline.bundle_items(bundle, (96, 64)) + roofline.reference_items((96, 64), int8=False,
                                                                               work_dir=tmp_path / "ref")
    by = {it.label: it for it in items}
    assert by["CN"].macs == count_macs(RouteModule(model, "CN"), (1, 1, 64, 96)).macs
    roofline.measure(items, rounds=1, warmup=0, threads=1)
    rows = roofline.shares(items)
    assert all(r["ms"] > 0 for r in rows) and all(0 < r["share"] for r in rows)


def test_bench_roofline_cli(tmp_path, capsys, monkeypatch):
    import json
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))   # where the reference models are written

    from tir.tools.cli import main
    from test_fast_route import _model, _old_bundle

    bundle = _old_bundle(tmp_path, _model())
    rc = main(["bench", "--roofline", "96x64,64x48", "--model", str(bundle), "--task", "noise", "--rounds", "1",
               "--threads", "1", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "roofline at 96x64" in out and "roofline at 64x48" in out and "dense conv" in out
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["size"] for r in doc["roofline"]] == ["96x64", "64x48"]
    assert [row["model"] for row in doc["roofline"][0]["rows"]][1:] == ["noise"]
    assert not list(scratch.glob("tir-roofline-*"))      # the reference models are gone after the run
    assert main(["bench", "--roofline", "--model", str(bundle), "--int8", str(tmp_path / "nope")]) == 2


def test_bundle_items_time_the_student_with_its_prompt(tmp_path):
    """A bundle's student is timed with a one-hot prompt; its MACs are the manifest's
    gmac_640x512 scaled by pixel count."""
    from tir.engines.bundle import add_student, load_bundle
    from test_fast_route import _model, _old_bundle
    from test_student import FactorStudent
    from tiny_models import export_prompted

    routes = _old_bundle(tmp_path, _model())
    prompts = list(load_bundle(routes).tasks) + ["clean"]
    onnx_path = export_prompted(FactorStudent([1.0] * len(prompts)), tmp_path / "s.onnx", len(prompts), prompts)
    add_student(routes, tmp_path / "with-student", onnx_path, {"prompts": prompts, "gmac_640x512": 0.5})
    items = roofline.bundle_items(load_bundle(tmp_path / "with-student"), (96, 64), routes=["noise"])
    student = [it for it in items if it.label == "student"]
    assert len(student) == 1 and student[0].macs == round(0.5e9 * 96 * 64 / (640 * 512))
    assert student[0].feeds["prompt"].shape == (1, len(prompts)) and student[0].feeds["prompt"].sum() == 1.0
    roofline.measure(student, rounds=1, warmup=0, threads=1)
    assert student[0].ms > 0
