"""A bundle whose manifest is sound (every sha256 matches) but one route's ONNX cannot load or run
here: refused when the bundle opens (``tir run``, a hot swap), naming the file and the reason, not
when the router first picks that route minutes into a stream (session 19, docs/reliability.md)."""
import hashlib

import numpy as np
import pytest
import torch

from tiny_models import Scale, export, one_hot_bundle

from tir.engines.engine import EngineError
from tir.engines.restorer import Restorer
from tir.tools.cli import main

H, W = 24, 32
SOURCE = "synthetic://?size=160x120&realtime=0"


def _custom_op(path):
    """An ONNX model holding an operator of a domain ONNX Runtime does not know (a custom op)."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Denoise", ["input"], ["output"], domain="com.example.vendor")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, None, None])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, None, None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.example.vendor", 1)])
    onnx.save(model, str(path))
    return path


class FixedSize(torch.nn.Module):
    """A route traced with its frame size baked in (a reshape to 24x32): loads, fails on any other size."""

    def forward(self, x):
        return x.reshape(1, 1, H, W) * 2.0


def _broken(kind, tmp):
    """An ONNX file that parses and has one (N, 1, H, W) input (what the bundle checks when it
    opens) but that ONNX Runtime cannot load or run: ``custom_op``, ``newer_opset`` (an opset this
    ONNX Runtime does not know), ``fixed_size``."""
    import onnx

    path = tmp / f"{kind}.onnx"
    if kind == "custom_op":
        return _custom_op(path)
    if kind == "newer_opset":
        model = onnx.load(str(export(Scale(2.0), tmp / "good.onnx", H, W)))
        for op in model.opset_import:
            if op.domain in ("", "ai.onnx"):
                op.version = 99
        onnx.save(model, str(path))
        return path
    torch.onnx.export(FixedSize(), (torch.rand(1, 1, H, W),), str(path), input_names=["x"], output_names=["y"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n"}})
    return path


def _bundle_with_broken_route(tmp, kind):
    """A bundle (written by the project's own writer: every sha256 matches) whose router always
    says clean, so its broken route ``noise`` is never picked by the frames."""
    from tiny_models import OneHotRouter

    from tir.engines import degrade as deg
    from tir.engines.bundle import write_bundle

    classes = ["noise", "blur", "clean"]
    routes = {"noise": export(Scale(0.5), tmp / "noise.onnx", H, W), "blur": export(Scale(2.0), tmp / "blur.onnx", H, W)}
    router = export(OneHotRouter(classes.index("clean"), len(classes)), tmp / "router.onnx", H, W)
    meta = {"name": "one-hot",
            "tasks": [{"name": t, "spec": {"name": t, "steps": deg.load_spec(t).steps}} for t in routes],
            "router": {"codebook": np.eye(len(classes)).tolist(), "tasks": classes, "threshold": 0.5,
                       "temperature": 0.1, "input_size": [W, H]}}
    write_bundle(tmp / "bundle", routes, router, meta)
    bundle = tmp / "bundle"
    # the route replaced and its sha256 put in the manifest's every mention: the bundle as a newer
    # exporter (or a copy cut short before its digest was taken) would have written it
    route = bundle / "route-noise.onnx"
    before = hashlib.sha256(route.read_bytes()).hexdigest()
    route.write_bytes(_broken(kind, tmp).read_bytes())
    after = hashlib.sha256(route.read_bytes()).hexdigest()
    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace(before, after))
    return bundle


@pytest.mark.parametrize("kind", ["custom_op", "newer_opset", "fixed_size"])
def test_a_route_that_cannot_load_or_run_is_refused_when_the_bundle_opens(tmp_path, kind):
    bundle = _bundle_with_broken_route(tmp_path, kind)
    restorer = Restorer(bundle, backend="onnxruntime", threads=1)
    with pytest.raises(EngineError) as caught:
        restorer.check_networks()
    assert "route noise" in str(caught.value) and "route-noise.onnx" in str(caught.value)
    restorer.close()


def test_check_networks_loads_every_network_a_sound_bundle_may_run(tmp_path):
    bundle = one_hot_bundle(tmp_path, {"noise": 0.5, "blur": 2.0}, "clean", H, W)
    restorer = Restorer(bundle, backend="onnxruntime", threads=1)
    assert restorer.check_networks() == ["route noise", "route blur", "the router"]
    assert sorted(restorer.loaded_routes) == ["blur", "noise"]
    out = restorer.infer(np.full((1, 1, H, W), 0.5, np.float32))   # routing is untouched: clean passes through
    assert np.array_equal(out, np.full((1, 1, H, W), 0.5, np.float32))
    forced = Restorer(bundle, backend="onnxruntime", threads=1, task="blur")
    assert forced.check_networks() == ["route blur"]   # a forced route runs alone: only it is checked
    restorer.close()
    forced.close()


def test_tir_run_refuses_a_bundle_with_an_unloadable_route_at_start(tmp_path, capsys):
    # before: the router never picked noise on these frames, so the run went on with a bundle
    # that would stop with "stage infer failed" (exit 1) the first time it did
    bundle = _bundle_with_broken_route(tmp_path, "custom_op")
    code = main(["run", "--source", SOURCE, "--model", str(bundle), "--frames", "3", "--output", "none",
                 "--backend", "onnxruntime", "--threads", "1", "--reference-frames", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert "route-noise.onnx" in err and "route noise cannot run here" in err and "Denoise" in err


def test_a_hot_swap_to_a_bundle_with_an_unloadable_route_is_refused_and_the_old_one_runs_on(tmp_path):
    import shutil

    from tir.engines.hotswap import HotSwapRestorer

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    good = one_hot_bundle(tmp_path / "a", {"noise": 0.5, "blur": 2.0}, "clean", H, W)
    bad = _bundle_with_broken_route(tmp_path / "b", "custom_op")
    old = Restorer(good, backend="onnxruntime", threads=1)
    closed = []

    def factory(path):
        new = Restorer(path, backend="onnxruntime", threads=1)
        real = new.close
        new.close = lambda: closed.append(path) or real()
        return new

    swap = HotSwapRestorer(old, factory, watch=False)
    shutil.rmtree(good)
    shutil.copytree(bad, good)   # a new version published over the running one: its noise route holds a custom op
    assert swap.request_reload()
    assert swap.wait_loaded(60)
    # before: the swap loaded only the route running now and took the bundle; the stream stopped
    # ("stage infer failed") when its router first picked noise
    assert swap.reload_state == "failed" and "route-noise.onnx" in swap.reload_error
    assert swap.active is old
    assert closed == [good]   # the refused version's engines were closed, not kept
    swap.close()


def test_check_networks_runs_a_plan_of_a_fixed_size_at_that_size(tmp_path):
    # a TensorRT plan built for one size (`tir build --size`) refuses any other: the check runs it
    # at its own shape, not at the small frame it gives a dynamic ONNX model
    bundle = one_hot_bundle(tmp_path, {"noise": 0.5, "blur": 2.0}, "clean", H, W)
    restorer = Restorer(bundle, backend="onnxruntime", threads=1)
    seen = []

    class FixedPlan:
        input_shape, multiple = (1, 1, 48, 64), 1

        def infer(self, x):
            seen.append(x.shape)
            if x.shape != self.input_shape:
                raise EngineError(f"plan is static {self.input_shape}, got {x.shape}")
            return x

    class ProfilePlan(FixedPlan):
        input_shape, profile = (-1, 1, -1, -1), ((1, 1, 16, 16), (1, 1, 96, 128), (4, 1, 512, 640))

        def infer(self, x):
            seen.append(x.shape)
            return x

    restorer._engines = {"noise": FixedPlan(), "blur": ProfilePlan()}
    assert restorer.check_networks()[:2] == ["route noise", "route blur"]
    assert seen == [(1, 1, 48, 64), (1, 1, 96, 128)]
    restorer.close = lambda: None
