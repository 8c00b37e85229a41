"""TensorRT engine, INT8 builds and the CUDA-stream pipeline. Needs a CUDA GPU (marker ``gpu``).

Skipped with the reason on machines without CUDA / pycuda / tensorrt. The pipeline test runs with
a torch-CUDA runner, so it exercises streams, pinned buffers, events and overlap on any CUDA
machine even without TensorRT.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.gpu


def _need_cuda_pycuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device (torch.cuda.is_available() is False)")
    try:
        import pycuda.driver  # noqa: F401
    except Exception as exc:  # ImportError, or a driver error on import
        pytest.skip(f"pycuda unavailable: {exc}")


def _need_tensorrt():
    _need_cuda_pycuda()
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:
        pytest.skip(f"tensorrt unavailable: {exc}")


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down, self.up = nn.PixelUnshuffle(2), nn.PixelShuffle(2)
        self.body = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 3, padding=1))

    def forward(self, x):
        return x + 0.1 * self.up(self.body(self.down(x)))


def test_cuda_stream_pipeline_with_torch_runner():
    _need_cuda_pycuda()
    from tir.engines.cuda_pipeline import CudaStreamPipeline, TorchCudaRunner

    model = Tiny().cuda()
    shape = (1, 1, 64, 96)
    batches = [np.random.default_rng(i).random(shape, dtype=np.float32) for i in range(9)]
    pipe = CudaStreamPipeline(TorchCudaRunner(model), shape, in_flight=3)
    outs = list(pipe.run(batches))
    with torch.no_grad():
        refs = [model(torch.from_numpy(b).cuda()).cpu().numpy() for b in batches]
    assert len(outs) == len(batches)
    for got, ref in zip(outs, refs):  # in order, and right
        np.testing.assert_allclose(got, ref, atol=1e-5)
    stats = pipe.stats()
    assert {"h2d", "compute", "d2h", "enqueue", "latency"} <= set(stats)
    assert stats["compute"]["n"] == len(batches)
    pipe.close()


def _build(tmp_path, onnx_path, precision, **kw):
    from tir.engines.cache import EngineCache, EngineKey, build_command, current_platform, profile_for_sizes, sha256_file
    from tir.engines.trt_build import BuildOptions, build_serialized

    profile = profile_for_sizes([(96, 64), (48, 32)], multiple=2)
    opts = BuildOptions(precision=precision, profile=profile, timing_cache=str(tmp_path / "timing.cache"), **kw)
    plan = build_serialized(onnx_path, opts)
    key = EngineKey(onnx_sha256=sha256_file(onnx_path), precision=precision, profile=profile,
                    **current_platform())
    cache = EngineCache(tmp_path / "plans")
    return cache.store(key, plan, "tiny", {"multiple": 2, "rebuild_command": build_command("B", precision, [(96, 64)])})


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from tir.engines.training.export import export_onnx

    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    export_onnx(Tiny(), path, input_shape=(1, 1, 32, 32), metadata={"tir.multiple": 2})
    return path


@pytest.mark.parametrize("precision,atol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_tensorrt_engine_matches_onnxruntime(tmp_path, tiny_onnx, precision, atol):
    _need_tensorrt()
    from tir.engines.backends.tensorrt import TensorRTEngine
    from tir.engines.backends.onnxruntime import ort_session

    plan = _build(tmp_path, tiny_onnx, precision)
    engine = TensorRTEngine(plan)
    sess = ort_session(str(tiny_onnx))
    for shape in ((1, 1, 64, 96), (1, 1, 32, 48)):  # both ends of the profile
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        np.testing.assert_allclose(engine.infer(x), sess.run(None, {"input": x})[0], atol=atol)
    assert set(engine.last_times) == {"h2d", "compute", "d2h"}
    with pytest.raises(Exception, match="outside the plan's profile"):
        engine.infer(np.zeros((1, 1, 128, 128), np.float32))
    pipe = engine.pipeline((1, 1, 64, 96), in_flight=2)
    batches = [np.random.default_rng(i).random((1, 1, 64, 96), dtype=np.float32) for i in range(5)]
    for got, b in zip(pipe.run(batches), batches):
        np.testing.assert_allclose(got, sess.run(None, {"input": b})[0], atol=atol)
    pipe.close()
    engine.close()


def test_mismatched_plan_is_refused(tmp_path, tiny_onnx):
    _need_tensorrt()
    from tir.engines.backends.tensorrt import TensorRTEngine
    from tir.engines.engine import EngineError

    plan = _build(tmp_path, tiny_onnx, "fp16")
    side = plan.with_suffix(".json")
    doc = json.loads(side.read_text())
    doc["key"]["trt_version"] = "0.0.0"
    side.write_text(json.dumps(doc))
    with pytest.raises(EngineError, match="tir build --bundle B --precision fp16"):
        TensorRTEngine(plan)


def test_int8_qdq_and_calibrator_builds(tmp_path, tiny_onnx):
    _need_tensorrt()
    from tir.calibration.calibrator import EntropyCalibrator
    from tir.calibration.data import calibration_set
    from tir.calibration.qdq import collect_ranges, trt_cache_from_ranges, write_trt_qdq
    from tir.engines.backends.tensorrt import TensorRTEngine
    from tir.engines.backends.onnxruntime import ort_session
    from tir.engines.metrics import psnr

    frames = calibration_set("synthetic", 8, (96, 64))
    ranges = collect_ranges(tiny_onnx, frames, progress=False).ranges("entropy")
    qdq = tmp_path / "tiny.int8-trt.onnx"
    write_trt_qdq(tiny_onnx, ranges, qdq)
    x = frames.array()[:1]
    ref = ort_session(str(tiny_onnx)).run(None, {"input": x})[0]
    explicit = TensorRTEngine(_build(tmp_path, qdq, "int8", int8_mode="qdq"))
    assert psnr(ref, explicit.infer(x)) > 30.0
    cache = tmp_path / "tiny.calib.cache"
    trt_cache_from_ranges(ranges, cache, version=__import__("tensorrt").__version__)
    implicit = TensorRTEngine(_build(tmp_path, tiny_onnx, "int8", int8_mode="calibrator",
                                     calibrator=EntropyCalibrator(frames, cache)))
    assert psnr(ref, implicit.infer(x)) > 30.0
