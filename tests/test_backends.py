import numpy as np
import onnx
import pytest
import torch

from tir.engines.backends import available_backends, backend_details, load_engine
from tir.engines.backends.onnxruntime import DEFAULT_MULTIPLE, ONNXRuntimeEngine, resolve_providers
from tir.engines.backends.torch import TorchEngine
from tir.engines.engine import EngineError
from tir.engines.training.models.plainnet import build_plainnet, export_plainnet_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model = build_plainnet("tiny", seed=1)
    return model, export_plainnet_onnx(model, folder / "tiny.onnx")


def test_onnxruntime_engine_runs_any_size(tiny):
    model, path = tiny
    engine = load_engine(path)
    assert isinstance(engine, ONNXRuntimeEngine)
    assert engine.multiple == 4 and engine.backend == "onnxruntime"
    assert engine.provider == "CPUExecutionProvider"
    x = np.random.default_rng(0).random((1, 1, 30, 45), dtype=np.float32)  # not a multiple of 4
    y = engine.infer(x)
    assert y.shape == x.shape and y.dtype == np.float32
    with torch.no_grad():
        padded = np.pad(x, ((0, 0), (0, 0), (0, 2), (0, 3)), mode="reflect")
        ref = model(torch.from_numpy(padded)).numpy()[..., :30, :45]
    assert np.abs(y - ref).max() < 1e-4


def test_onnxruntime_threads_and_spinning_options(tiny):
    assert ONNXRuntimeEngine(tiny[1]).spinning is False  # off unless asked for
    engine = ONNXRuntimeEngine(tiny[1], providers="cpu", threads=1, spinning=True)
    assert engine.spinning is True and engine.threads == 1
    assert engine.infer(np.zeros((1, 1, 16, 16), np.float32)).shape == (1, 1, 16, 16)


def test_multiple_defaults_without_metadata(tiny, tmp_path):
    proto = onnx.load(str(tiny[1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    assert ONNXRuntimeEngine(bare).multiple == DEFAULT_MULTIPLE


def test_providers_are_checked():
    assert resolve_providers(None)[-1] == "CPUExecutionProvider"
    with pytest.raises(EngineError, match="not available"):
        resolve_providers(["NoSuchExecutionProvider"])


def test_torch_engine_matches_onnx(tiny, tmp_path):
    model, path = tiny
    engine = load_engine(model)
    assert isinstance(engine, TorchEngine) and engine.multiple == 4
    x = np.random.default_rng(1).random((2, 1, 32, 40), dtype=np.float32)
    assert np.abs(engine.infer(x) - load_engine(path).infer(x)).max() < 1e-4
    saved = tmp_path / "tiny.pt"
    torch.jit.save(torch.jit.trace(model.eval(), torch.from_numpy(x)), str(saved))
    from_file = load_engine(saved)
    assert np.abs(from_file.infer(x) - engine.infer(x)).max() < 1e-6


def test_pickled_module_is_refused_without_running_it(tiny, tmp_path):
    """torch.load(weights_only=False) would run a pickled file's code: never done (issue 10 item 9)."""
    import os
    import pickle

    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump(Evil(), f, protocol=2)
    with pytest.raises(EngineError, match="as weights only .*torch.jit.save"):
        load_engine(path)
    pickled = tmp_path / "module.pt"
    torch.save(tiny[0], pickled)
    with pytest.raises(EngineError, match="a pickled module runs code when loaded"):
        load_engine(pickled)
    assert not flag.exists()


def test_torch_state_dict_is_explained(tiny, tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(tiny[0].state_dict(), path)
    with pytest.raises(EngineError, match="state_dict"):
        load_engine(path)


def test_clear_errors(tmp_path, tiny):
    with pytest.raises(EngineError, match="does not exist"):
        load_engine(tmp_path / "missing.onnx")
    with pytest.raises(EngineError, match="cannot tell the backend"):
        load_engine(tmp_path / "model.bin")
    with pytest.raises(EngineError, match="folder"):
        load_engine(tmp_path)
    with pytest.raises(EngineError, match="is ONNX"):
        load_engine(tiny[1], backend="torch")
    with pytest.raises(EngineError, match="unknown backend"):
        load_engine(tiny[1], backend="tflite")


def test_tensorrt_missing_says_what_to_install(tmp_path):
    if "tensorrt" in available_backends():
        pytest.skip("TensorRT is installed here")
    with pytest.raises(EngineError, match="pycuda|tensorrt"):
        load_engine(tmp_path / "model.engine")


def test_available_backends_lists_this_machine():
    names = available_backends()
    assert "onnxruntime" in names and "torch" in names
    assert set(backend_details()) == {"onnxruntime", "torch", "tensorrt"}
