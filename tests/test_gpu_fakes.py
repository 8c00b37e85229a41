"""The TensorRT/pycuda control flow on CPU, with the test doubles of tests/fake_cuda.py.

The real GPU tests are tests/test_tensorrt_gpu.py (marker ``gpu``); these run everywhere and
check what does not need a GPU: plan build + cache + load, buffers and events, frames in
flight on separate streams, order, nothing lost, and the event arithmetic.
"""
import json

import numpy as np
import pytest

from fake_cuda import COPY_BYTES_PER_MS, install
from tir.engines.training.models.plainnet import export_plainnet_onnx


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export_plainnet_onnx("tiny", tmp_path_factory.mktemp("fake") / "tiny.onnx")


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setenv("TIR_ENGINE_CACHE", str(tmp_path / "engines"))
    return install(monkeypatch, compute_ms=2.0)


def _ort(path, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _plan(tmp_path, onnx_path, sizes=((64, 48),)):
    from tir.engines.cache import EngineCache, EngineKey, current_platform, profile_for_sizes, sha256_file
    from tir.engines.trt_build import BuildOptions, build_serialized

    profile = profile_for_sizes(list(sizes), multiple=4)
    plan = build_serialized(onnx_path, BuildOptions(precision="fp16", profile=profile,
                                                    timing_cache=str(tmp_path / "timing.cache")))
    key = EngineKey(onnx_sha256=sha256_file(onnx_path), precision="fp16", profile=profile, **current_platform())
    return EngineCache(tmp_path / "plans").store(key, plan, "tiny", {"multiple": 4})


def test_engine_runs_plan_with_event_times(fake, tmp_path, tiny_onnx):
    from tir.engines.backends.tensorrt import TensorRTEngine

    plan = _plan(tmp_path, tiny_onnx)
    assert (tmp_path / "timing.cache").is_file()  # the timing cache was written back
    assert fake.builds[0]["flags"] == ["FP16"]
    engine = TensorRTEngine(plan)
    x = np.random.default_rng(0).random((1, 1, 48, 64), dtype=np.float32)
    np.testing.assert_allclose(engine.infer(x), _ort(tiny_onnx, x), atol=1e-6)
    nbytes = x.nbytes
    assert engine.last_times == pytest.approx({"h2d": nbytes / COPY_BYTES_PER_MS, "compute": 2.0,
                                               "d2h": nbytes / COPY_BYTES_PER_MS})
    assert fake.context_depth == 0  # every push popped
    engine.close()


def test_stream_pipeline_keeps_three_in_flight_in_order(fake, tmp_path, tiny_onnx):
    from tir.engines.backends.tensorrt import TensorRTEngine

    engine = TensorRTEngine(_plan(tmp_path, tiny_onnx))
    pipe = engine.pipeline((1, 1, 48, 64), in_flight=3)
    batches = [np.random.default_rng(i).random((1, 1, 48, 64), dtype=np.float32) for i in range(7)]
    outs = list(pipe.run(batches))
    assert len(outs) == 7
    for got, b in zip(outs, batches):
        np.testing.assert_allclose(got, _ort(tiny_onnx, b), atol=1e-6)
    assert fake.peak_busy_streams == 3  # three streams had queued work at once
    stats = pipe.stats()
    assert stats["compute"]["n"] == 7 and stats["compute"]["p50"] == pytest.approx(2.0)
    assert stats["h2d"]["mean"] == pytest.approx(batches[0].nbytes / COPY_BYTES_PER_MS, abs=1e-3)  # summary rounds to µs
    pipe.close()
    engine.close()
    assert fake.memory == {}  # every device allocation freed


# ------------------------------------------------------------------------------------------------
# tir build --precision LIST, tir bench --precision LIST --trt-style, on a tiny bundle
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def calibrated_bundle(tmp_path_factory):
    from tiny_models import calibration_bundle
    from tir.tools import cli

    bundle = calibration_bundle(tmp_path_factory.mktemp("bundle"))
    assert cli.main(["calibrate", "--bundle", str(bundle.path), "--frames", "4", "--holdout", "2",
                     "--size", "32x24", "--bench-runs", "1", "--threads", "1", "--out", str(bundle.path / "int8")]) == 0
    return bundle


def test_precision_list_parsing():
    import argparse

    from tir.tools.build import precision_list

    assert precision_list("fp16,int8") == ["fp16", "int8"]
    assert precision_list(" FP32 , fp16,fp32") == ["fp32", "fp16"]
    with pytest.raises(argparse.ArgumentTypeError, match="'fp8'.*fp32, fp16, int8"):
        precision_list("fp16,fp8")
    with pytest.raises(argparse.ArgumentTypeError):
        precision_list(",")


def test_build_several_precisions_then_bench_them(fake, tmp_path, calibrated_bundle, capsys):
    from tir.tools import cli

    path = str(calibrated_bundle.path)
    assert cli.main(["build", "--bundle", path, "--precision", "fp16,int8", "--size", "32x24"]) == 0
    out = capsys.readouterr().out
    assert "== fp16" in out and "== int8" in out
    assert out.count("wrote") == 4  # two routes × two precisions (no router in this bundle)
    flags = sorted(tuple(b["flags"]) for b in fake.builds)
    assert flags == [("FP16",), ("FP16",), ("FP16", "INT8"), ("FP16", "INT8")]
    assert all(b["onnx"].endswith(".int8-trt.onnx") for b in fake.builds if "INT8" in b["flags"])
    assert cli.main(["build", "--bundle", path, "--precision", "fp16", "--size", "32x24"]) == 0
    assert capsys.readouterr().out.count("up to date") == 2  # the cache is hit, nothing rebuilt

    report = tmp_path / "bench.json"
    rc = cli.main(["bench", "--mode", "model", "--model", path, "--task", "noise", "--backend", "tensorrt",
                   "onnxruntime", "--precision", "fp32,fp16,int8", "--size", "32x24", "--frames", "4",
                   "--warmup", "1", "--no-progress", "--json", str(report)])
    assert rc == 0
    results = {(r["requested"] if "requested" in r else r["backend"], r.get("precision")): r
               for r in json.loads(report.read_text())["results"]}
    assert "no TensorRT plan" in results[("tensorrt", "fp32")]["error"]  # fp32 was not built: said, not hidden
    for precision in ("fp16", "int8"):
        assert results[("tensorrt", precision)]["model_only"]["frames"] == 4
        assert results[("tensorrt", precision)]["backend"] == "tensorrt"
    assert results[("onnxruntime", "fp32")]["model_only"]["frames"] == 4
    assert "fp32 model" in results[("onnxruntime", "int8")]["skipped"]
    assert fake.executions >= 2 * (4 + 1)


def test_trt_style_breakdown_from_cuda_events(fake, tmp_path, calibrated_bundle, capsys):
    from tir.tools import cli

    path = str(calibrated_bundle.path)
    assert cli.main(["build", "--bundle", path, "--precision", "fp16", "--size", "160x120"]) == 0
    report = tmp_path / "bench.json"
    rc = cli.main(["bench", "--mode", "both", "--model", path, "--task", "blur", "--backend", "tensorrt",
                   "--trt-style", "--in-flight", "3", "--size", "160x120", "--frames", "6", "--warmup", "2",
                   "--no-progress", "--json", str(report)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Throughput:" in out and "GPU Compute Time: min = 2.0000 ms" in out and "H2D Latency" in out
    result = json.loads(report.read_text())["results"][0]
    assert "error" not in result, result.get("error")
    pipe = result["pipeline"]  # the full pipeline, its infer stage on two CUDA streams
    assert pipe["infer_in_flight"] == 2 and pipe["frames"] >= 6 and sum(pipe["drops"].values()) == 0
    t = result["trt_style"]
    copy_ms = 160 * 120 * 4 / COPY_BYTES_PER_MS
    assert t["timing"] == "cuda-events" and t["route"] == "blur" and t["in_flight"] == 3
    assert t["frames"] == 6 and t["gpu_compute_ms"]["n"] == 6  # warm-up frames not counted
    assert t["gpu_compute_ms"]["median"] == pytest.approx(2.0)
    assert t["h2d_ms"]["mean"] == pytest.approx(copy_ms, abs=1e-4)
    assert t["latency_ms"]["median"] == pytest.approx(2.0 + 2 * copy_ms, abs=1e-4)  # H2D + compute + D2H
    assert t["total_gpu_compute_s"] == pytest.approx(0.012)
    assert fake.peak_busy_streams >= 3


def test_trt_style_summary_arithmetic_and_host_fallback(tiny_onnx):
    from tir.engines.backends import load_engine
    from tir.tools.bench import bench_trt_style, trt_style_summary

    s = trt_style_summary({"h2d": [1, 1, 1, 1], "compute": [2, 4, 6, 8], "d2h": [0.5] * 4,
                           "enqueue": [0.1] * 4, "latency": [9, 9, 9, 9]}, 4, 2.0, 2, "cuda-events")
    assert s["throughput_qps"] == 2.0 and s["total_gpu_compute_s"] == 0.02
    assert s["latency_ms"]["min"] == 3.5 and s["latency_ms"]["max"] == 9.5 and s["latency_ms"]["median"] == 6.5
    assert s["gpu_compute_ms"]["p90"] == pytest.approx(7.4)
    with pytest.raises(ValueError, match="counts differ"):
        trt_style_summary({"h2d": [1], "compute": [1, 2], "d2h": [1]}, 2, 1.0, 1, "cuda-events")
    engine = load_engine(tiny_onnx, backend="onnxruntime")  # no CUDA events: host-timed
    t = bench_trt_style(engine, [np.zeros((1, 1, 24, 32), np.float32)], warmup=1, n=3)
    assert t["timing"] == "host" and t["gpu_compute_ms"]["n"] == 3 and t["h2d_ms"] == {"n": 0}


# ------------------------------------------------------------------------------------------------
# the pipeline's infer stage fed by the multi-slot CudaStreamPipeline
# ------------------------------------------------------------------------------------------------
def _frame(seq, value):
    from tir.edge.frame import Frame, now
    from tir.edge.pipeline.stages import _INPUT_KEY

    frame = Frame(raw=np.zeros((48, 64), np.uint16), seq=seq, t_capture=now())
    frame.meta[_INPUT_KEY] = np.random.default_rng(value).random((48, 64), dtype=np.float32)
    return frame


def test_pipelined_infer_keeps_n_in_flight_and_order(fake, tmp_path, tiny_onnx):
    from tir.edge.pipeline.stages import _INPUT_KEY, _OUTPUT_KEY, PipelinedInfer
    from tir.engines.backends.tensorrt import TensorRTEngine

    engine = TensorRTEngine(_plan(tmp_path, tiny_onnx))
    work = PipelinedInfer(engine, in_flight=3)
    frames = [_frame(i, i) for i in range(5)]
    inputs = [f.meta[_INPUT_KEY].copy() for f in frames]
    for f in frames[:3]:
        work.submit(f)
    assert work.pending == 3 and fake.busy_streams() == 3  # three frames queued on three streams
    with pytest.raises(RuntimeError, match="3 frames already in flight"):
        work.submit(frames[3])
    done = [work.collect()[0]]
    work.submit(frames[3])
    done.append(work.collect()[0])
    work.submit(frames[4])
    while work.pending:
        done.append(work.collect()[0])
    assert [f.seq for f in done] == [0, 1, 2, 3, 4]  # in order, none lost
    for f, x in zip(done, inputs):
        np.testing.assert_allclose(f.meta[_OUTPUT_KEY], _ort(tiny_onnx, x[None, None]), atol=1e-6)
    work.close()
    engine.close()
    assert fake.memory == {}


class _Collector:
    """An output keeping (seq, restored) of what it is given."""

    wants_display = None

    def __init__(self):
        from tir.edge.uri import parse_uri

        self.uri, self.got = parse_uri("collect://"), []

    def start(self):
        return self

    def write(self, frame):
        self.got.append((frame.seq, frame.restored.copy()))

    def close(self):
        pass


def _run_pipeline(model, frames=10, **kw):
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources import open_source

    out = _Collector()
    pipeline = Pipeline(open_source("synthetic://?size=160x120&realtime=0&seed=3"), model, [out], frames=frames, **kw)
    pipeline.run()
    return pipeline, out.got


def test_pipeline_infer_stage_runs_on_cuda_streams(fake, tmp_path, tiny_onnx):
    from tir.edge.pipeline.stages import PipelinedInfer
    from tir.engines.backends import load_engine
    from tir.engines.backends.tensorrt import TensorRTEngine

    engine = TensorRTEngine(_plan(tmp_path, tiny_onnx, sizes=((160, 120),)))
    pipeline, got = _run_pipeline(engine, frames=10)
    assert pipeline.infer_in_flight == 2 and pipeline.max_in_flight == 3  # TensorRT: auto
    assert any(isinstance(t.work, PipelinedInfer) for t in pipeline.threads[1:])
    assert [seq for seq, _ in got][:10] == sorted(seq for seq, _ in got)[:10]  # in order
    assert sum(pipeline.snapshot()["drops"].values()) == 0 and len(got) >= 10  # lossless: none lost
    assert fake.executions >= 10
    _, reference = _run_pipeline(load_engine(tiny_onnx, backend="onnxruntime"), frames=10)
    ref = dict(reference)
    for seq, restored in got[:10]:  # same frames, same counts as ONNX Runtime
        assert np.abs(restored.astype(np.int32) - ref[seq].astype(np.int32)).max() <= 1
    engine.close()
    assert fake.memory == {}  # the infer thread freed its stream pipelines


def test_build_refuses_int8_without_a_calibration_report_on_stderr(fake, tmp_path, capsys):
    # the refusal was printed on stdout, among the build's results
    from tiny_models import calibration_bundle
    from tir.tools import cli

    bundle = calibration_bundle(tmp_path / "b")
    assert cli.main(["build", "--bundle", str(bundle.path), "--precision", "int8", "--size", "32x24"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"tir build: error: no {bundle.path / 'int8' / 'calibration.json'}; run `tir calibrate")
    assert "calibration.json" not in out


@pytest.mark.parametrize("text", ['{"routes": ', '{"a": ' + "[" * 200000 + "]" * 200000 + "}"])
def test_build_refuses_a_damaged_calibration_report_in_one_line(fake, tmp_path, capsys, text):
    # session 17: a cut calibration.json was a JSONDecodeError traceback (exit 1), a deeply nested one a RecursionError
    from tiny_models import calibration_bundle
    from tir.tools import cli

    bundle = calibration_bundle(tmp_path / "b")
    (bundle.path / "int8").mkdir(exist_ok=True)
    (bundle.path / "int8" / "calibration.json").write_text(text)
    assert cli.main(["build", "--bundle", str(bundle.path), "--precision", "int8", "--size", "32x24"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tir build: error: {bundle.path / 'int8' / 'calibration.json'} is not a tir calibrate "
                          "report (") and "Traceback" not in err
