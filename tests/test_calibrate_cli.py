"""tools/calibrate.py, tools/build.py, tools/export.py on a tiny bundle."""
import json

import numpy as np
import pytest
from tiny_models import calibration_bundle

from tir.calibration.trt_cache import TrtCalibrationCache
from tir.engines.training.export import audit_onnx
from tir.tools import cli


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return calibration_bundle(tmp_path_factory.mktemp("bundle"))


def test_calibrate_writes_models_cache_and_report(bundle, tmp_path, capsys):
    out = tmp_path / "int8"
    rc = cli.main(["calibrate", "--bundle", str(bundle.path), "--frames", "4", "--holdout", "2",
                   "--size", "32x24", "--out", str(out), "--bench-runs", "2", "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "noise" in text and "blur" in text and "cpu-u8s8" in text and "trt-qdq" in text
    report = json.loads((out / "calibration.json").read_text())
    assert set(report["routes"]) == {"noise", "blur"}
    for route, r in report["routes"].items():
        assert audit_onnx(r["files"]["int8-trt.onnx"]).ok
        cache = TrtCalibrationCache.read(r["files"]["calib.cache"])
        assert cache.header == "TRT-8502-EntropyCalibration2" and "input" in cache.scales
        assert {g["flavour"] for g in r["gate"]} == {"cpu-u8s8", "trt-qdq"}
        assert all(np.isfinite(g["fidelity_db"]) for g in r["gate"])
        assert set(r["latency_ms"]) == {"fp32", "int8-cpu-u8s8", "int8-trt-s8s8-on-ort"}
    assert report["reduce_range"] is True


def _max_weight_code(path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    dq_inputs = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return max(int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max()) for i in model.graph.initializer
               if i.name in dq_inputs and i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4)


def test_cpu_int8_weights_are_7_bit_by_default(bundle, tmp_path):
    # AVX2 without VNNI sums u8*s8 pairs in saturating int16: 2*255*63 fits, 2*255*127 does not
    args = ["calibrate", "--bundle", str(bundle.path), "--routes", "noise", "--frames", "3", "--holdout", "2",
            "--size", "32x24", "--bench-runs", "0", "--threads", "1", "--no-fp16-search"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "b"), "--no-reduce-range"]) == 0
    assert _max_weight_code(str(tmp_path / "a" / "noise.int8-cpu.onnx")) <= 64
    assert _max_weight_code(str(tmp_path / "b" / "noise.int8-cpu.onnx")) == 127
    # the model and the report say how it was quantised and on what CPU (runs elsewhere check it)
    from tir.edge.machine import int8_cpu_features
    from tir.engines.training.export import read_metadata

    for sub, bits in (("a", "7"), ("b", "8")):
        meta = read_metadata(str(tmp_path / sub / "noise.int8-cpu.onnx"))
        assert meta["tir.int8.weight_bits"] == bits and meta["tir.int8.activations"] == "uint8"
        assert json.loads(meta["tir.int8.calibrated_cpu"])["vnni"] == int8_cpu_features().vnni
        report = json.loads((tmp_path / sub / "calibration.json").read_text())
        assert report["reduce_range"] is (bits == "7")
        assert report["int8_cpu"]["saturating"] == int8_cpu_features().saturating


def test_calibrate_rejects_unknown_route_and_source(bundle, tmp_path, capsys):
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--routes", "fog", "--out", str(tmp_path)]) == 2
    assert "no route(s) ['fog']" in capsys.readouterr().err
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--source", "nowhere", "--out",
                     str(tmp_path), "--frames", "2", "--size", "32x24"]) == 2
    assert "unknown calibration source 'nowhere'" in capsys.readouterr().err


def test_build_without_tensorrt_says_what_to_install(bundle, capsys):
    pytest.importorskip("tir.tools.build")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    rc = cli.main(["build", "--bundle", str(bundle.path), "--precision", "fp16", "--size", "640x512"])
    out = capsys.readouterr().out
    assert rc == 3
    assert "tensorrt" in out and "JetPack" in out and "pycuda" in out


def test_export_validates_bundle(bundle, capsys):
    rc = cli.main(["export", "--bundle", str(bundle.path), "--size", "32x24"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "noise" in out and "blur" in out and "ok" in out


def test_refused_route_is_reported_with_fp16_search(bundle, tmp_path, capsys):
    out = tmp_path / "int8"
    rc = cli.main(["calibrate", "--bundle", str(bundle.path), "--routes", "noise", "--frames", "3", "--holdout",
                   "2", "--size", "32x24", "--out", str(out), "--bench-runs", "0", "--max-loss-db", "-100"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "REFUSED INT8 for: noise/cpu-u8s8, noise/trt-qdq" in text
    noise = json.loads((out / "calibration.json").read_text())["routes"]["noise"]
    assert noise["float_tail"] is True  # --float-tail auto: refused without the image tail, tried with it
    trt = next(g for g in noise["gate"] if g["flavour"] == "trt-qdq")
    assert not trt["passed"] and trt["fp16_layers"] and trt["mixed_passed"] is False
    assert "limit -100" in trt["reason"]


def test_build_picks_int8_model_from_gate_verdicts(tmp_path):
    from tir.tools.build import _int8_source

    (tmp_path / "a.int8-trt-mixed.onnx").write_bytes(b"x")
    report = {"routes": {
        "ok": {"gate": [{"flavour": "trt-qdq", "passed": True}]},
        "a": {"gate": [{"flavour": "trt-qdq", "passed": False, "reason": "INT8 loses 0.9 dB",
                        "mixed_passed": True, "fp16_layers": ["/tail/Conv"]}]},
        "bad": {"gate": [{"flavour": "trt-qdq", "passed": False, "reason": "INT8 loses 2.0 dB",
                          "mixed_passed": False, "fp16_layers": ["/x"]}]},
    }}
    onnx_path, _, layers = _int8_source("ok", tmp_path, report, "qdq")
    assert onnx_path.name == "ok.int8-trt.onnx" and layers == []
    onnx_path, _, layers = _int8_source("a", tmp_path, report, "qdq")
    assert onnx_path.name == "a.int8-trt-mixed.onnx" and layers == ["/tail/Conv"]
    with pytest.raises(ValueError, match="refused by the accuracy gate .*2.0 dB.*--precision fp16"):
        _int8_source("bad", tmp_path, report, "qdq")
    with pytest.raises(ValueError, match="run `tir calibrate"):
        _int8_source("missing", tmp_path, report, "qdq")


def test_fast_int8_by_compute_capability():
    from tir.tools.build import fast_int8

    assert fast_int8("8.7") and fast_int8("7.2")  # Orin, Xavier
    assert not fast_int8("5.3") and not fast_int8("6.2")  # Nano, TX2
    assert not fast_int8(None)


def test_calibrate_refuses_a_size_the_routes_cannot_take(bundle, tmp_path, capsys):
    # 33x24 with multiple 2 ran into an ONNX Runtime broadcast traceback inside a route; 0x0 a ZeroDivisionError
    for size, fit in (("33x24", "34x24"), ("0x0", None)):
        rc = cli.main(["calibrate", "--bundle", str(bundle.path), "--frames", "2", "--holdout", "1", "--size", size,
                       "--out", str(tmp_path / "c"), "--bench-runs", "0"])
        assert rc == 2
        assert capsys.readouterr().err == (
            f"tir calibrate: error: --size {size}: the routes of bundle 'tiny' take sizes that are multiples of 2 px "
            f"(manifest 'multiple'); use e.g. --size {fit}\n" if fit else
            f"tir calibrate: error: --size {size}: give a frame size WxH with each side 1..8192 px\n")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("mode, option, value, words", [
    ("calibrate", "--percentile", "200", "give a percentile > 0 and <= 100"),  # was calibrated with it
    ("calibrate", "--percentile", "nan", "give a percentile > 0 and <= 100"),
    ("calibrate", "--max-loss-db", "nan", "give a number of dB (finite)"),  # every route refused, then a long search
    ("calibrate", "--frames", "0", "give a number of frames >= 1"),  # "synthetic(seed=0): need at least one frame"
    ("calibrate", "--holdout", "-1", "give a number of frames >= 1"),
    ("export", "--tolerance", "nan", "give a max abs difference >= 0"),  # "differs by 7e-07 (> tolerance nan)"
])
def test_training_side_numbers_are_checked_by_argparse(bundle, tmp_path, capsys, mode, option, value, words):
    with pytest.raises(SystemExit) as info:
        cli.main([mode, "--bundle", str(bundle.path), "--out", str(tmp_path / "o"), option, value])
    assert info.value.code == 2 and f"argument {option}: {value}: {words}" in capsys.readouterr().err


def test_export_refuses_zero_size_and_unknown_targets_up_front(bundle, capsys):
    assert cli.main(["export", "--bundle", str(bundle.path), "--size", "0x0"]) == 2  # was checked at 2x2 silently
    assert capsys.readouterr() == ("", "tir export: error: --size 0x0: give a frame size WxH with each side 1..8192 px\n")
    assert cli.main(["export", "--bundle", str(bundle.path), "--targets", "bogus,10"]) == 2  # was FAIL per model, exit 1
    assert capsys.readouterr() == ("", "tir export: error: --targets 'bogus,10': unknown TensorRT parser version(s) "
                                       "bogus; known: 10, 8.5\n")   # was on stdout


@pytest.mark.parametrize("mode, size", [("export", "9000x8"), ("calibrate", "8x9000"), ("build", "9000x64")])
def test_a_size_beyond_any_camera_is_refused_before_any_work(bundle, tmp_path, capsys, mode, size):
    # tir export --size 99999x99999 was a MemoryError traceback (37 GiB); calibrate and build took any size
    # (sides above 8192 px with a small area here, so a regression fails the test without filling memory)
    rc = cli.main([mode, "--bundle", str(bundle.path), "--size", size]
                  + (["--out", str(tmp_path / "o")] if mode == "calibrate" else []))
    out, err = capsys.readouterr()
    assert rc == 2 and f"--size {size}: give a frame size WxH with each side 1..8192 px" in out + err
    assert not (tmp_path / "o").exists()


def test_full_range_model_is_not_timed_on_a_cpu_without_vnni(bundle, tmp_path, monkeypatch):
    # --no-reduce-range on an AVX2-only CPU: the gate still measures it (plain sessions), the ORT
    # engine refuses to run it (int8_cpu_problem), so the latency table names the reason instead
    from tir.edge import machine

    avx2 = machine.int8_cpu_features(["avx", "avx2", "fma"], "x86_64")
    monkeypatch.setattr(machine, "int8_cpu_features", lambda *a, **k: avx2)
    out = tmp_path / "q"
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--routes", "noise", "--frames", "3", "--holdout", "2",
                     "--size", "32x24", "--bench-runs", "2", "--threads", "1", "--no-fp16-search",
                     "--no-reduce-range", "--out", str(out)]) == 0
    report = json.loads((out / "calibration.json").read_text())
    lat = report["routes"]["noise"]["latency_ms"]
    assert "no VNNI" in lat["int8-cpu-u8s8"]["refused"] and "p50" in lat["fp32"] and "p50" in lat["int8-trt-s8s8-on-ort"]
    assert report["int8_cpu"]["saturating"] is True and report["reduce_range"] is False


def test_calibrate_refuses_a_missing_source_folder_before_it_makes_out(bundle, tmp_path, capsys):
    # "unknown calibration source '/x/y'" for a folder that is not there, and --out made empty
    out = tmp_path / "int8"
    (tmp_path / "frames").mkdir()
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--source", str(tmp_path / "frame"), "--out", str(out),
                     "--frames", "2", "--size", "32x24"]) == 2
    assert capsys.readouterr().err == (f"tir calibrate: error: --source: no such file or folder: {tmp_path / 'frame'}; "
                                       f"did you mean {tmp_path / 'frames'}?; give a folder of frames or one of "
                                       "synthetic, roadscene\n")
    (tmp_path / "f.png").write_bytes(b"x")
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--source", str(tmp_path / "f.png"), "--out", str(out),
                     "--frames", "2", "--size", "32x24"]) == 2
    assert "is a file: give the folder that holds the calibration frames" in capsys.readouterr().err
    # refused inside the run (an empty frames folder): the --out it made is removed again
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--source", str(tmp_path / "frames"), "--out", str(out),
                     "--frames", "2", "--size", "32x24", "--bench-runs", "0"]) == 2
    assert capsys.readouterr().err.startswith("tir calibrate: error: ")
    assert not out.exists()
