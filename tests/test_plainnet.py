import numpy as np
import onnx
import pytest
import torch

from tir.engines.training.models.plainnet import PRESETS, PlainNet, PlainNetConfig, build_plainnet, export_plainnet_onnx, resolve_config


def test_presets_and_resolution():
    assert resolve_config("bench") == PlainNetConfig(channels=32, blocks=4)
    assert resolve_config("plainnet:tiny") == PRESETS["tiny"]
    with pytest.raises(ValueError, match="bench"):
        resolve_config("huge")


def test_shape_multiple_and_global_residual():
    model = build_plainnet("tiny")
    assert model.multiple == 4
    x = torch.rand(2, 1, 24, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    # near the input (small tail) but not equal: every layer computes
    diff = (y - x).abs()
    assert 0 < diff.mean().item() < 0.2


def test_seeded_weights_are_reproducible():
    a = build_plainnet("tiny", seed=3)
    b = build_plainnet("tiny", seed=3)
    c = build_plainnet("tiny", seed=4)
    assert torch.equal(a.head[0].weight, b.head[0].weight)
    assert not torch.equal(a.head[0].weight, c.head[0].weight)


def test_bench_preset_layer_count():
    model = PlainNet(PRESETS["bench"])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 + 2 * 4  # head, tail, two per block
    assert convs[0].in_channels == 16 and convs[0].out_channels == 32


def test_onnx_export_dynamic_and_metadata(tmp_path):
    import onnxruntime as ort

    model = build_plainnet("tiny")
    path = export_plainnet_onnx(model, tmp_path / "tiny.onnx")
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["tir.multiple"] == "4"
    assert proto.opset_import[0].version == 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in [(32, 48), (120, 160)]:
        x = np.random.default_rng(0).random((1, 1, h, w), dtype=np.float32)
        y = session.run(None, {"input": x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == x.shape
        assert np.abs(y - ref).max() < 1e-4
