"""Every route of the shipped bundle runs at every common thermal sensor size (issue: any frame
size on every path). The routes need H, W multiples of 32; the frame is padded and cropped back
in one place (Engine.infer), driven by the one metadata key (tir.multiple)."""
import numpy as np
import pytest

from tir.engines.bundle import load_bundle
from tir.engines.engine import MULTIPLE_KEY, EngineError, read_multiple
from tir.engines.restorer import Restorer

SHIPPED = "engines/bundles/edge"
# Lepton 2.x, Lepton 3.x, TC001/P2 Pro, Tau 336, a 4:3 crop, VGA, Boson 640, 1.3 MP
SIZES = [(80, 60), (160, 120), (256, 192), (336, 256), (360, 270), (640, 480), (640, 512), (1280, 1024)]


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(SHIPPED)


def test_shipped_routes_state_the_manifest_multiple(bundle):
    import onnxruntime as ort

    for task in bundle.tasks:
        meta = ort.InferenceSession(str(bundle.route_path(task)), providers=["CPUExecutionProvider"]
                                    ).get_modelmeta().custom_metadata_map
        assert read_multiple(meta, default=0) == bundle.multiple == 32, task


@pytest.mark.parametrize("task", ["contrast", "blur", "noise", "CB", "CN", "BN", "CBN"])
def test_every_route_runs_at_every_size(bundle, task):
    restorer = Restorer(bundle, backend="onnxruntime", task=task, threads=2)
    rng = np.random.default_rng(0)
    for w, h in SIZES:
        if task in ("CB", "CN", "BN", "CBN") and w * h > 640 * 512:
            continue  # the compounds at 1.3 MP take seconds each on 2 cores; one compound is enough
        x = rng.random((1, 1, h, w), dtype=np.float32)
        y = restorer.infer(x)
        assert y.shape == (1, 1, h, w), (task, w, h)
        assert np.isfinite(y).all()
    restorer.close()


def test_a_compound_route_runs_at_1280x1024(bundle):
    restorer = Restorer(bundle, backend="onnxruntime", task="CN", threads=2)
    y = restorer.infer(np.full((1, 1, 1024, 1280), 0.5, np.float32))
    assert y.shape == (1, 1, 1024, 1280)


def test_read_multiple_rejects_nonsense():
    assert read_multiple({}, default=4) == 4
    assert read_multiple({MULTIPLE_KEY: "32"}) == 32
    for bad in ("0", "-8", "abc"):
        with pytest.raises(EngineError, match=MULTIPLE_KEY):
            read_multiple({MULTIPLE_KEY: bad}, where="m.onnx")


def test_restorer_refuses_a_route_whose_multiple_disagrees(tmp_path):
    """A route exported with a smaller multiple than the manifest's can crash at odd sizes:
    refused at load, naming both values."""
    torch = pytest.importorskip("torch")
    from tir.engines.bundle import write_bundle
    from tir.engines.training.export import export_onnx

    class Tiny(torch.nn.Module):
        def forward(self, x):
            return x * 1.0

    path = tmp_path / "r.onnx"
    export_onnx(Tiny(), path, input_shape=(1, 1, 16, 16), metadata={MULTIPLE_KEY: 3})
    b = write_bundle(tmp_path / "b", {"noise": path}, None, {"name": "t", "multiple": 8})
    restorer = Restorer(b, backend="onnxruntime", task="noise")
    with pytest.raises(EngineError, match="multiple=8"):
        restorer.infer(np.zeros((1, 1, 16, 16), np.float32))
