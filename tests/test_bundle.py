"""Model bundle: write, load, verify hashes, reject broken bundles with a clear reason."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tir.engines import bundle as B


def conv_model(path, in_dims=("N", 1, "H", "W"), out_channels=1, seed=0):
    """A one-layer 3×3 conv ONNX model (opset 17) with the given input dims."""
    rng = np.random.default_rng(seed)
    channels = in_dims[1] if isinstance(in_dims[1], int) else 1
    weight = rng.standard_normal((out_channels, channels, 3, 3)).astype(np.float32)
    if len(in_dims) == 4:
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        out_dims = (in_dims[0], out_channels, in_dims[2], in_dims[3])
    else:  # a rank-3 model for the bad-input test
        weight = weight[:, :, :, 0]
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1])
        out_dims = (in_dims[0], out_channels, in_dims[2])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_dims))],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    routes = {t: conv_model(src / f"{t}.onnx", seed=i) for i, t in enumerate(("blur", "CB"))}
    router = conv_model(src / "router.onnx", in_dims=("N", 1, 64, 64), out_channels=4, seed=9)
    return routes, router


def make(tmp_path, sources, **extra):
    routes, router = sources
    manifest = {
        "name": "tiny", "preset": "edge-s",
        "tasks": [{"name": "CB", "gmac_640x512": 1.7, "psnr_val": 17.8}],
        "router": {"codebook": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
                   "tasks": ["blur", "CB", "clean"], "threshold": 0.6, "temperature": 0.1,
                   "input_size": [64, 64]},
        "normalisation": {"low_pct": 0.5, "high_pct": 99.5},
        "training": {"data": "roadscene-ir train", "steps": 100},
        "multiple": 8, "notes": "test bundle",
    }
    manifest.update(extra)
    return B.write_bundle(tmp_path / "bundle", routes, router, manifest)


def test_write_then_load_round_trip(tmp_path, sources):
    written = make(tmp_path, sources)
    bundle = B.load_bundle(tmp_path / "bundle")
    assert bundle.tasks == ["blur", "CB"] == written.tasks
    assert bundle.name == "tiny" and bundle.preset == "edge-s" and bundle.multiple == 8
    assert bundle.route_path("blur") == tmp_path / "bundle" / "route-blur.onnx"
    assert bundle.route_path("blur").is_file()
    info = bundle.task_info("CB")
    assert info["gmac_640x512"] == 1.7 and info["psnr_val"] == 17.8
    assert info["sub_tasks"] == ["contrast", "blur"] and bundle.task_info("blur")["sub_tasks"] == []
    assert info["params"] == 9
    assert info["sha256"] == B.sha256_file(bundle.route_path("CB"))
    assert bundle.router_path == tmp_path / "bundle" / "router.onnx"
    assert bundle.router["threshold"] == 0.6 and bundle.router["tasks"][-1] == "clean"
    assert bundle.normalisation == {"low_pct": 0.5, "high_pct": 99.5}
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["notes"] == "test bundle"
    assert manifest["training"]["data"] == "roadscene-ir train" and manifest["training"]["date"]
    assert set(manifest["files"]) == {"route-blur.onnx", "route-CB.onnx", "router.onnx"}
    assert B.load_bundle(tmp_path / "bundle" / "manifest.json").tasks == bundle.tasks
    with pytest.raises(B.BundleError, match="routes: blur, CB"):
        bundle.route_path("noise")


def test_bundle_without_router_and_defaults(tmp_path, sources):
    routes, _ = sources
    bundle = B.write_bundle(tmp_path / "b", {"blur": routes["blur"]}, None, {"name": "n"})
    assert bundle.router is None and bundle.router_path is None
    assert bundle.multiple == 4 and bundle.normalisation == {} and bundle.preset is None
    with pytest.raises(B.BundleError, match="router metadata"):
        B.write_bundle(tmp_path / "c", {"blur": routes["blur"]}, None, {"router": {"threshold": 1}})
    with pytest.raises(B.BundleError, match="no route file"):
        B.write_bundle(tmp_path / "d", {"blur": routes["blur"]}, None, {"tasks": [{"name": "CBN"}]})


def test_tampered_byte_is_refused_naming_the_file(tmp_path, sources):
    make(tmp_path, sources)
    path = tmp_path / "bundle" / "route-blur.onnx"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(B.BundleError, match=r"tampered or mismatched bundle: route-blur\.onnx sha256"):
        B.load_bundle(tmp_path / "bundle")


def test_missing_file_and_extra_files(tmp_path, sources):
    make(tmp_path, sources)
    (tmp_path / "bundle" / "notes.txt").write_text("ignored")
    assert B.load_bundle(tmp_path / "bundle").tasks == ["blur", "CB"]
    (tmp_path / "bundle" / "router.onnx").unlink()
    with pytest.raises(B.BundleError, match="router.onnx is listed in manifest.json but missing"):
        B.load_bundle(tmp_path / "bundle")
    with pytest.raises(B.BundleError, match="no manifest.json"):
        B.load_bundle(tmp_path / "elsewhere")


def edit_manifest(tmp_path, change):
    path = tmp_path / "bundle" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_wrong_format_version_and_missing_keys(tmp_path, sources):
    make(tmp_path, sources)
    edit_manifest(tmp_path, lambda m: m.update(format_version=2))
    with pytest.raises(B.BundleError, match="format_version 2"):
        B.load_bundle(tmp_path / "bundle")
    edit_manifest(tmp_path, lambda m: (m.update(format_version=1), m.pop("normalisation")))
    with pytest.raises(B.BundleError, match="normalisation"):
        B.load_bundle(tmp_path / "bundle")
    edit_manifest(tmp_path, lambda m: m.update(normalisation={}, files={"../x": "00"}))
    with pytest.raises(B.BundleError, match="plain name"):
        B.load_bundle(tmp_path / "bundle")


def test_bad_input_rank_or_channels_is_refused(tmp_path, sources):
    routes, router = sources
    rank3 = conv_model(tmp_path / "rank3.onnx", in_dims=("N", 1, "W"))
    with pytest.raises(B.BundleError, match="N×1×H×W"):
        B.write_bundle(tmp_path / "b", {"blur": rank3}, None, {})
    rgb = conv_model(tmp_path / "rgb.onnx", in_dims=("N", 3, "H", "W"))
    with pytest.raises(B.BundleError, match=r"N×3×H×W"):
        B.write_bundle(tmp_path / "b", {"blur": routes["blur"]}, rgb, {})
    # a valid bundle whose route is swapped (with a matching hash) for a bad model
    make(tmp_path, sources)
    bad = tmp_path / "bundle" / "route-blur.onnx"
    bad.write_bytes(rank3.read_bytes())
    digest = B.sha256_file(bad)

    def swap(m):
        m["files"]["route-blur.onnx"] = digest
        m["tasks"][0]["sha256"] = digest
    edit_manifest(tmp_path, swap)
    with pytest.raises(B.BundleError, match="route-blur.onnx: input must be N×1×H×W"):
        B.load_bundle(tmp_path / "bundle")


def test_onnxruntime_fallback_reads_the_same_dims(sources):
    routes, router = sources
    assert B._input_dims_ort(routes["blur"]) == ["N", 1, "H", "W"]
    assert B._input_dims_ort(router) == ["N", 1, 64, 64]


def test_not_an_onnx_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(B.BundleError, match="not a loadable ONNX model"):
        B.write_bundle(tmp_path / "b", {"blur": junk}, None, {})


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_exported_route_loads(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Conv2d(1, 1, 3, padding=1)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 16, 16), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N", 2: "H", 3: "W"}, "y": {0: "N", 2: "H", 3: "W"}})
    bundle = B.write_bundle(tmp_path / "b", {"noise": path}, None, {"name": "t"})
    assert bundle.task_info("noise")["params"] == 10


def test_default_bundle_path_is_shipped_folder_or_none():
    path = B.default_bundle_path()
    assert path is None or (path / "manifest.json").is_file()
    if path is not None:
        assert path.name == "edge" and path.parent.name == "bundles"


# --- issue 10 items 9 and 13: every listed file hash-checked, the manifest validated at load --------

@pytest.mark.parametrize("change,line", [
    (lambda m: m["router"].update(threshold=99),
     "router.threshold 99 must be a cosine similarity in [-1, 1]"),
    (lambda m: m["router"].update(thresholds=[0.5, 1.5, 0.2]),
     "router.thresholds must be a list of cosine similarities in [-1, 1]"),
    (lambda m: m["router"].update(temperature=-5), "router.temperature -5 must be a number > 0"),
    (lambda m: m["router"].update(temperature=0), "router.temperature 0 must be a number > 0"),
    (lambda m: m.update(multiple=0), "multiple 0 must be a power of two from 1 to 256"),
    (lambda m: m.update(multiple=12), "multiple 12 must be a power of two from 1 to 256"),
    (lambda m: m.update(multiple=512), "multiple 512 must be a power of two from 1 to 256"),
    (lambda m: m.update(multiple="8"), "multiple '8' must be a power of two"),
    (lambda m: m["router"].update(tasks=["blur", "CB"]),
     "router.tasks lists 2 classes but router.codebook has 3 rows"),
    (lambda m: m["router"].update(codebook=[[1.0, 0.0], [0.0]]), "router.codebook rows differ in length"),
    (lambda m: m["router"].update(codebook=[["a"]]), "router.codebook must be a non-empty list of rows"),
    (lambda m: m["router"].update(input_size=[0, 64]), "router.input_size [0, 64] must be [width, height]"),
    (lambda m: m["router"].pop("tasks"), "router lacks ['tasks']"),
    (lambda m: m["router"].update(thershold=0.5), "router: unknown keys ['thershold']"),
    (lambda m: m.update(mutliple=8), "unknown keys ['mutliple']; known: format_version"),
    (lambda m: m["tasks"][0].update(sha256="abc"), "tasks[0].sha256 must be 64 lowercase hex digits"),
    (lambda m: m["tasks"][1].update(name="../x"), "tasks[1].name '../x' must be letters, digits"),
    (lambda m: m.update(name=""), "name must be a non-empty string"),
    (lambda m: m.update(checkpoint={"file": "/etc/passwd", "sha256": "0" * 64}),
     "checkpoint.file '/etc/passwd' must be a plain name inside the folder"),
])
def test_schema_violation_is_refused_at_load_with_one_line(tmp_path, sources, change, line):
    make(tmp_path, sources)
    edit_manifest(tmp_path, change)
    with pytest.raises(B.BundleError) as err:
        B.load_bundle(tmp_path / "bundle")
    lines = str(err.value).splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(str(tmp_path / "bundle" / "manifest.json") + ": ")
    assert line in lines[0]


def test_every_violation_gets_its_own_line(tmp_path, sources):
    make(tmp_path, sources)
    edit_manifest(tmp_path, lambda m: (m["router"].update(threshold=99, temperature=-5), m.update(multiple=0)))
    with pytest.raises(B.BundleError) as err:
        B.load_bundle(tmp_path / "bundle")
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert any("multiple 0" in x for x in lines) and any("threshold 99" in x for x in lines)
    assert any("temperature -5" in x for x in lines)


def test_write_bundle_refuses_unknown_keys(tmp_path, sources):
    routes, _ = sources
    with pytest.raises(B.BundleError, match=r"unknown manifest keys \['treshold'\]"):
        B.write_bundle(tmp_path / "b", {"blur": routes["blur"]}, None, {"treshold": 0.5})
    assert not (tmp_path / "b").exists()


def test_shipped_bundle_with_router_tasks_cut_to_three_is_refused_at_load(tmp_path):
    import shutil

    shipped = B.default_bundle_path()
    if shipped is None:
        pytest.skip("the shipped bundle engines/bundles/edge/ is not installed")
    assert B.validate_manifest(json.loads((shipped / "manifest.json").read_text())) == []
    copy = tmp_path / "edge"
    shutil.copytree(shipped, copy)
    path = copy / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["router"]["tasks"] = manifest["router"]["tasks"][:3]
    path.write_text(json.dumps(manifest))
    with pytest.raises(B.BundleError, match="router.tasks lists 3 classes but router.codebook has 8 rows"):
        B.load_bundle(copy)


def test_checkpoint_is_hash_checked_at_load_and_when_read(tmp_path, sources):
    torch = pytest.importorskip("torch")
    import io

    ckpt = tmp_path / "src" / "model.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, ckpt)
    make(tmp_path, sources)
    (tmp_path / "bundle" / "model.pt").write_bytes(ckpt.read_bytes())
    edit_manifest(tmp_path, lambda m: m.update(checkpoint={"file": "model.pt", "sha256": B.sha256_file(ckpt)}))
    bundle = B.load_bundle(tmp_path / "bundle")
    data = B.read_verified(bundle, "model.pt")
    assert torch.load(io.BytesIO(data), weights_only=True)["state_dict"]["w"].tolist() == [1.0, 1.0]

    # swapped after load: the bytes read are checked again
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "bundle" / "model.pt")
    with pytest.raises(B.BundleError, match=r"tampered or mismatched bundle: model\.pt sha256 is"):
        B.read_verified(bundle, "model.pt")
    with pytest.raises(B.BundleError, match=r"tampered or mismatched bundle: model\.pt sha256 is"):
        B.load_bundle(tmp_path / "bundle")
    (tmp_path / "bundle" / "other.pt").write_bytes(ckpt.read_bytes())
    with pytest.raises(B.BundleError, match="other.pt is not listed in manifest.json"):
        B.read_verified(bundle, "other.pt")


def test_schema_checks_router_adaptation_entries():
    """router.adapt_source / router.adaptation (engines/adapt.py) must match the codebook width."""
    def manifest(**router_extra):
        router = {"file": "router.onnx", "sha256": "0" * 64, "codebook": np.eye(3).tolist(),
                  "tasks": ["a", "b", "clean"], **router_extra}
        return {"format_version": B.FORMAT_VERSION, "name": "x", "tasks": [], "router": router,
                "normalisation": {}, "files": {}, "adapted_from": "/some/bundle"}

    good = {"adapt_source": {"mean": [0.0] * 3, "covariance": np.eye(3).tolist(), "count": 9},
            "adaptation": {"A": np.eye(3).tolist(), "b": [0.0] * 3, "frames": 200}}
    assert not [p for p in B.validate_manifest(manifest(**good)) if "adapt" in p]
    bad_map = {"adaptation": {"A": np.eye(2).tolist(), "b": [0.0] * 3}}
    assert any("router.adaptation must hold A (3×3) and b (3)" in p for p in B.validate_manifest(manifest(**bad_map)))
    bad_stats = {"adapt_source": {"mean": [float("nan")] * 3, "covariance": np.eye(3).tolist()}}
    assert any("router.adapt_source must hold mean (3)" in p for p in B.validate_manifest(manifest(**bad_stats)))


def test_rewriting_a_bundle_in_place_never_writes_through_a_symlink(tmp_path, sources):
    # a bundle folder whose route file is a symlink to a file outside it (same bytes, so it
    # verifies): writing the bundle again in place (tir learn/distill with --out = the bundle)
    # replaces the link with a file and leaves the outside file untouched
    written = make(tmp_path, sources)
    outside = tmp_path / "elsewhere" / "shared.onnx"
    outside.parent.mkdir()
    link = written.path / B.route_file("CB")
    outside.write_bytes(link.read_bytes())
    link.unlink()
    link.symlink_to(outside)
    before = outside.read_bytes()
    B.load_bundle(written.path)  # the link's bytes match the manifest
    planted = written.path / (B.MANIFEST + ".tmp")
    planted.symlink_to(tmp_path / "elsewhere" / "manifest-victim.json")
    routes, router = sources
    new_cb = conv_model(tmp_path / "src" / "CB2.onnx", seed=5)
    again = B.write_bundle(written.path, {"blur": routes["blur"], "CB": new_cb}, None,
                           {"name": "tiny", "multiple": 8})
    assert outside.read_bytes() == before
    assert not link.is_symlink() and link.read_bytes() == new_cb.read_bytes()
    assert not (tmp_path / "elsewhere" / "manifest-victim.json").exists()
    assert again.manifest["tasks"][1]["sha256"] == B.sha256_file(new_cb)
