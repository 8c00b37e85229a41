"""The TensorRT/pycuda control flow on CPU, with the test doubles of tests/fake_cuda.py.

The real GPU tests are tests/test_tensorrt_gpu.py (marker ``gpu``); these run everywhere and
check what does not need a GPU: plan build + cache + load, buffers and events, frames in
flight on separate streams, order, nothing lost, and the event arithmetic.
"""
import numpy as np
import pytest

from fake_cuda import COPY_BYTES_PER_MS, install
from tir.engines.models.plainnet import export_plainnet_onnx


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
