"""The convolution-dominated export form of a route (engines/training/fast_route.py) computes the same
function as RouteModule, and a bundle re-exported with it keeps valid hashes and outputs."""
import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from tir.engines.training.continual import OpenWorldModel, RouteModule
from tir.engines.training.fast_route import FastRoute, export_route, reexport_bundle
from tir.engines.training.models.ecmrnet import PRESETS

torch.set_num_threads(1)


def _model(field=16):
    torch.manual_seed(0)
    model = OpenWorldModel(dataclasses.replace(PRESETS["tiny"], field=field))
    for t in ("contrast", "noise"):
        model.add_task(t)
    model.add_task("CN", parts=("contrast", "noise"))
    with torch.no_grad():   # zero-initialised tails would make every route the identity
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("field", [0, 16])
def test_fast_route_equals_reference_route(field):
    model = _model(field)
    x = torch.rand(2, 1, 48, 64)
    with torch.no_grad():
        for task in model.tasks:
            ref = RouteModule(model, task)(x)
            assert not torch.allclose(ref, x, atol=1e-3)      # the route does something
            assert torch.max(torch.abs(FastRoute(model, task)(x) - ref)).item() <= 1e-5


def test_exported_graph_has_no_full_resolution_transposes_and_matches(tmp_path):
    model = _model()
    for task in ("CN", "noise"):   # a compound route (miner) and a single one
        rec = export_route(model, task, tmp_path / f"{task}.onnx", metadata={"tir.multiple": 16})
        assert rec["max_abs_diff_vs_torch"] <= 1e-4
    graph = onnx.load(tmp_path / "noise.onnx").graph
    ops = [n.op_type for n in graph.node]
    assert "Transpose" not in ops and ops.count("SpaceToDepth") == 1 and ops.count("DepthToSpace") == 1
    producers = {o: n for n in graph.node for o in n.output}
    resize = [n for n in graph.node if n.op_type == "Resize"]
    # the field upsample reads a reshaped (plain NCHW) tensor, not a conv output in NCHWc
    assert len(resize) == 1 and producers[resize[0].input[0]].op_type == "Reshape"


def _old_bundle(tmp_path, model):
    """A bundle as `tir train` wrote it before the fast export (RouteModule graphs + model.pt)."""
    from tir.engines.bundle import sha256_file, write_bundle
    from tir.engines.training.export import export_onnx

    out = tmp_path / "old"
    out.mkdir()
    torch.save({"architecture": model.architecture(), "state_dict": model.state_dict(), "specs": {}},
               out / "model.pt")
    routes = {}
    for t in model.tasks:
        routes[t] = tmp_path / f"{t}.onnx"
        export_onnx(RouteModule(model, t), routes[t], input_shape=(1, 1, 64, 64), metadata={"tir.multiple": 16})
    manifest = {"name": "old", "preset": "tiny", "multiple": 16,
                "tasks": [{"name": t, "metrics": {"val_psnr_trained": 30.0}} for t in model.tasks],
                "checkpoint": {"file": "model.pt", "sha256": sha256_file(out / "model.pt")}}
    write_bundle(out, routes, None, manifest)
    return out


def test_reexport_bundle_keeps_outputs_hashes_and_counts_every_conv(tmp_path):
    import onnxruntime as ort

    from tir.engines.bundle import load_bundle
    from tir.engines.training.macs import count_macs

    model = _model()
    old = load_bundle(_old_bundle(tmp_path, model))
    before = {t: (old.route_path(t).read_bytes()) for t in old.tasks}
    new = load_bundle(reexport_bundle(old.path, tmp_path / "new", size=(96, 64), progress=None))  # verifies sha256
    assert new.tasks == old.tasks
    assert {t: old.route_path(t).read_bytes() for t in old.tasks} == before        # original untouched
    x = np.random.default_rng(1).random((1, 1, 64, 96), dtype=np.float32)
    for t in new.tasks:
        info = new.task_info(t)
        assert info["export"]["max_abs_diff_vs_previous"] <= 1e-4
        assert info["metrics"] == {"val_psnr_trained": 30.0}
        assert info["gmac_640x512"] == round(count_macs(RouteModule(model, t)).gmac, 4)
        a = ort.InferenceSession(str(old.route_path(t)), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        b = ort.InferenceSession(str(new.route_path(t)), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        assert np.max(np.abs(a - b)) <= 1e-4
    assert json.loads((new.path / "manifest.json").read_text())["training"]["reexport"]["from"] == str(old.path)
    with pytest.raises(Exception, match="another folder"):
        reexport_bundle(old.path, old.path, progress=None)


def test_reexport_refuses_a_bundle_without_checkpoint(tmp_path):
    from tir.engines.bundle import BundleError, write_bundle
    from tir.engines.training.export import export_onnx

    model = _model()
    export_onnx(RouteModule(model, "noise"), tmp_path / "n.onnx", input_shape=(1, 1, 64, 64))
    write_bundle(tmp_path / "b", {"noise": tmp_path / "n.onnx"}, None, {"name": "b", "multiple": 16})
    with pytest.raises(BundleError, match="no checkpoint"):
        reexport_bundle(tmp_path / "b", tmp_path / "c", progress=None)


def test_uncovered_geometry_exports_the_plain_route_and_says_why(tmp_path):
    model = _model(field=0)
    model.tones["noise"].pool = 6          # not a multiple of the ×4 unshuffle
    with pytest.raises(ValueError, match="tone pool 6"):
        FastRoute(model, "noise")
    rec = export_route(model, "noise", tmp_path / "n.onnx", metadata={"tir.multiple": 8}, check_shape=(1, 1, 48, 48))
    assert rec["form"].startswith("reference RouteModule (") and "tone pool 6" in rec["form"]
    assert rec["max_abs_diff_vs_torch"] <= 1e-4


def test_reexport_carries_the_distilled_student(tmp_path):
    """A bundle that ships a student keeps it, byte for byte, through a route re-export."""
    from tir.engines.bundle import add_student, load_bundle
    from tir.engines.training.distill import export_student
    from tir.engines.training.models.student import create_student

    model = _model()
    old = _old_bundle(tmp_path, model)
    net = create_student("tiny", list(model.tasks) + ["clean"])
    export_student(net, tmp_path / "student.onnx")
    with_student = add_student(old, tmp_path / "with", tmp_path / "student.onnx",
                               {"preset": "tiny", "prompts": list(net.prompts)})
    new = load_bundle(reexport_bundle(with_student.path, tmp_path / "new", size=(96, 64), progress=None))
    assert new.student["sha256"] == with_student.student["sha256"]
    assert (new.path / "student.onnx").read_bytes() == (with_student.path / "student.onnx").read_bytes()


@pytest.mark.parametrize("existing", [False, True])
def test_reexport_onto_a_full_disk_is_one_bundle_error_and_leaves_nothing(tmp_path, monkeypatch, existing):
    """A full disk while the bundle was written was a traceback (OSError) and left a folder
    holding a partial model.pt.tmp; now a BundleError and nothing left (an empty --out folder
    given by the user stays, empty)."""
    import shutil as real_shutil

    from tir.engines import bundle as bundle_module
    from tir.engines.bundle import BundleError, load_bundle

    old = load_bundle(_old_bundle(tmp_path, _model()))
    out = tmp_path / "new"
    if existing:
        out.mkdir()
    copied = []

    def full_disk(src, dst, *args, **kwargs):
        if copied:
            raise OSError(28, "No space left on device")
        copied.append(dst)
        return real_shutil.copyfile(src, dst, *args, **kwargs)  # the first file goes in, the next one fails
    monkeypatch.setattr(bundle_module.shutil, "copyfile", full_disk)
    with pytest.raises(BundleError, match="No space left on device; free space or choose another --out"):
        reexport_bundle(old.path, out, size=(96, 64), progress=None)
    assert copied and (list(out.iterdir()) == [] if existing else not out.exists())
