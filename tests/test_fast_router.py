"""The fast form of the router (engines/training/fast_router.py): the same embeddings as the
reference router graph, no 1-channel full-resolution convolution left, every convolution of the
reference counted, and bundles rewritten with valid hashes (a tampered file still refused)."""
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tir.engines.training import fast_router as fr
from tir.engines.training.router_train import build_router_net, export_router_onnx

torch.set_num_threads(1)
SIZE = (160, 128)   # (w, h)


def _net(dim=8, seed=0):
    torch.manual_seed(seed)
    net = build_router_net(dim=dim)
    with torch.no_grad():   # BatchNorm running stats away from identity, so every layer matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _reference(tmp_path, size=SIZE, name="ref.onnx"):
    return export_router_onnx(_net(), tmp_path / name, size, fast=False)


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"frame": x})[0]


def _frames(n=3, size=SIZE, seed=1):
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = [0.3 + 0.4 * yy / h + 0.05 * np.sin(xx / rng.uniform(2, 9)) + 0.02 * rng.standard_normal((h, w))
           for _ in range(n)]
    return np.clip(np.stack(out), 0, 1)[:, None].astype(np.float32)


def test_fast_router_gives_the_reference_embeddings(tmp_path):
    ref = _reference(tmp_path)
    rec = fr.rewrite_router(ref, tmp_path / "fast.onnx")
    assert rec["form"] == fr.FAST_ROUTER_FORM and rec["max_abs_diff_vs_previous"] <= 1e-5
    x = np.concatenate([_frames(), np.random.default_rng(2).random((2, 1, 128, 160), dtype=np.float32)])
    a, b = _run(ref, x), _run(tmp_path / "fast.onnx", x)
    assert a.shape == b.shape == (5, 8) and np.max(np.abs(a - b)) <= 1e-5
    with torch.no_grad():   # and the torch network it was exported from
        t = _net()(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(t - b)) <= 1e-4
    assert fr.router_form(onnx.load(tmp_path / "fast.onnx")) == fr.FAST_ROUTER_FORM
    assert fr.router_form(onnx.load(ref)) == "reference"


def test_no_one_channel_full_resolution_convolution_is_left(tmp_path):
    """The blurs of the reference are 1-channel 1×k / k×1 convs (ORT's blocked layout pads
    them to a whole block); the fast graph runs them depthwise over the row strips."""
    ref = _reference(tmp_path)
    fr.rewrite_router(ref, tmp_path / "fast.onnx")

    def convs(path):
        g = onnx.load(path).graph
        weights = {t.name: tuple(t.dims) for t in g.initializer}
        return [(weights[n.input[1]], next((a.i for a in n.attribute if a.name == "group"), 1))
                for n in g.node if n.op_type == "Conv"]

    one_channel = lambda cs: [w for w, g in cs if w[0] == 1 and w[1] == 1 and max(w[2:]) > 3]  # noqa: E731
    assert len(one_channel(convs(ref))) == 6                 # three separable blurs
    fast = convs(tmp_path / "fast.onnx")
    assert len(one_channel(fast)) == 2                       # only the quarter-resolution blur is left
    depthwise = [(w, g) for w, g in fast if g > 1]      # 2 blurs × (1×17, 17×1) + the 1×1 identity
    assert len(depthwise) == 5 and all(g == w[0] == 16 and w[1] == 1 for w, g in depthwise)
    ops = [n.op_type for n in onnx.load(tmp_path / "fast.onnx").graph.node]
    assert ops.count("Gather") == 1 and ops.count("Split") == 1
    # no Sub at full resolution (ORT's blocked layout has Add but not Sub: a Sub costs two reorders)
    assert ops.count("Sub") == [n.op_type for n in onnx.load(ref).graph.node].count("Sub") - 2


def test_every_convolution_of_the_reference_is_counted(tmp_path):
    """The ONNX count of the reference graph (blurs, trunk, head) equals the torch count the
    roofline credits the router with; the fast graph executes more (zero taps, halos)."""
    from tir.engines.training.macs import count_macs

    ref = _reference(tmp_path)
    rec = fr.rewrite_router(ref, tmp_path / "fast.onnx")
    torch_macs = count_macs(_net(), (1, 1, 128, 160)).macs
    assert fr.onnx_conv_macs(ref) == torch_macs == rec["macs"]
    trunk = count_macs(_net().trunk, (1, 4, 32, 40)).macs
    blur = 2 * (134 + 128) * 160 * 7 // 2 + 2 * (144 + 128) * 160 * 17 // 2 + (44 + 32) * 40 * 13
    assert torch_macs > trunk + blur - 1   # the blurs are in it (head: the few MACs left over)
    assert rec["graph_macs"] > rec["macs"]


def test_reflect_rows_are_numpy_reflect_padding():
    n = 10
    idx = fr.reflect_rows(n, -4, n + 4)
    assert np.array_equal(np.arange(n)[idx], np.pad(np.arange(n), 4, mode="reflect"))


def test_refusals(tmp_path):
    ref = _reference(tmp_path)
    fr.rewrite_router(ref, tmp_path / "fast.onnx")
    with pytest.raises(ValueError, match="already in the form"):
        fr.fast_router_model(onnx.load(tmp_path / "fast.onnx"))
    odd = export_router_onnx(_net(), tmp_path / "odd.onnx", (160, 100), fast=False)   # 100 rows: 25 windows
    with pytest.raises(ValueError, match="cannot be cut"):
        fr.fast_router_model(onnx.load(odd))
    from tir.engines.training.roofline import write_reference
    dense = write_reference(tmp_path / "dense", (64, 48), int8=False)["fp32"]
    with pytest.raises(ValueError, match="N×1×H×W|band"):
        fr.fast_router_model(onnx.load(dense))


def test_export_router_onnx_writes_the_fast_form_where_the_size_allows(tmp_path):
    fast = export_router_onnx(_net(), tmp_path / "a.onnx", SIZE)
    assert fr.router_form(onnx.load(fast)) == fr.FAST_ROUTER_FORM
    plain = export_router_onnx(_net(), tmp_path / "b.onnx", (160, 100))     # not covered: kept plain
    assert fr.router_form(onnx.load(plain)) == "reference"
    x = _frames()
    with torch.no_grad():
        t = _net()(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(_run(fast, x) - t)) <= 1e-4


def _bundle(tmp_path):
    from tir.engines.bundle import write_bundle
    from tiny_models import Scale, export

    ref = _reference(tmp_path)
    route = export(Scale(1.0), tmp_path / "noise.onnx", 64, 64)
    meta = {"name": "b", "router": {"codebook": np.eye(3, 8).tolist(), "tasks": ["noise", "blur", "clean"],
                                    "threshold": 0.5, "input_size": list(SIZE)}}
    return write_bundle(tmp_path / "bundle", {"noise": route}, ref, meta).path


def test_bundle_router_rewritten_with_valid_hashes(tmp_path):
    from tir.engines.bundle import BundleError, load_bundle
    from tir.engines.training import roofline

    src = _bundle(tmp_path)
    old_bytes = (src / "router.onnx").read_bytes()
    x = _frames()
    before = _run(src / "router.onnx", x)
    rec = fr.rewrite_bundle_router(src, tmp_path / "copy")                 # a copy: the original is kept
    assert rec["changed"] and (src / "router.onnx").read_bytes() == old_bytes
    new = load_bundle(tmp_path / "copy")                                   # every hash verified
    umask = os.umask(0)
    os.umask(umask)
    assert (new.path / "router.onnx").stat().st_mode & 0o777 == 0o666 & ~umask   # not mkstemp's 0600
    assert new.router["export"]["form"] == fr.FAST_ROUTER_FORM
    manifest = json.loads((new.path / "manifest.json").read_text())
    assert manifest["files"]["router.onnx"] == manifest["router"]["sha256"] != load_bundle(src).router["sha256"]
    assert np.max(np.abs(_run(new.router_path, x) - before)) <= 1e-5
    assert (new.path / "route-noise.onnx").read_bytes() == (src / "route-noise.onnx").read_bytes()
    assert roofline.router_macs(new) == rec["macs"] == roofline.router_macs(load_bundle(src))
    again = fr.rewrite_bundle_router(new.path)                             # in place: already fast
    assert again["changed"] is False and load_bundle(new.path).router["sha256"] == new.router["sha256"]
    # a tampered router is still refused, before and after the rewrite
    data = bytearray((new.path / "router.onnx").read_bytes())
    data[-1] ^= 1
    (new.path / "router.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="tampered"):
        load_bundle(new.path)
    with pytest.raises(BundleError, match="tampered"):
        fr.rewrite_bundle_router(new.path)
    (src / "router.onnx").write_bytes(old_bytes[:-1] + bytes([old_bytes[-1] ^ 1]))
    with pytest.raises(BundleError, match="tampered"):
        fr.rewrite_bundle_router(src)


def test_tir_export_fast_router_cli(tmp_path, capsys):
    from tir.engines.bundle import load_bundle
    from tir.tools.cli import main

    src = _bundle(tmp_path)
    assert main(["export", "--bundle", str(src), "--fast-router", "--out", str(tmp_path / "out"),
                 "--size", "64x64"]) == 0
    out = capsys.readouterr().out
    assert "router: fast-router v1" in out and "GMAC per call" in out
    assert load_bundle(tmp_path / "out").router["export"]["form"] == fr.FAST_ROUTER_FORM
    assert load_bundle(src).router.get("export") is None
    assert main(["export", "--bundle", str(src), "--fast-router", "--size", "64x64"]) == 0     # in place
    assert load_bundle(src).router["export"]["form"] == fr.FAST_ROUTER_FORM
    assert main(["export", "--bundle", str(src), "--fast-router", "--out", str(tmp_path / "out")]) == 2


def test_route_reexport_puts_the_router_in_the_fast_form(tmp_path):
    """tir export --out (reexport_bundle) re-exports the routes and rewrites a reference router."""
    from tir.engines.bundle import load_bundle, sha256_file, write_bundle
    from tir.engines.training.fast_route import reexport_bundle
    from test_fast_route import _model, _old_bundle

    old = load_bundle(_old_bundle(tmp_path, _model()))
    manifest = json.loads((old.path / "manifest.json").read_text())
    manifest.pop("files")
    manifest["router"] = {"codebook": np.eye(3, 8).tolist(), "tasks": ["contrast", "noise", "clean"],
                          "threshold": 0.5, "input_size": list(SIZE)}
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "model.pt").write_bytes((old.path / "model.pt").read_bytes())
    manifest["checkpoint"]["sha256"] = sha256_file(tmp_path / "src" / "model.pt")
    src = write_bundle(tmp_path / "src", {t: old.route_path(t) for t in old.tasks}, _reference(tmp_path), manifest)
    lines = []
    new = load_bundle(reexport_bundle(src.path, tmp_path / "new", size=(96, 64), progress=lines.append))
    assert new.router["export"]["form"] == fr.FAST_ROUTER_FORM and any(line.startswith("router: fast") for line in lines)
    x = _frames()
    assert np.max(np.abs(_run(new.router_path, x) - _run(src.router_path, x))) <= 1e-5
    assert fr.router_form(onnx.load(src.router_path)) == "reference"            # the source is kept


def test_a_refused_rewrite_leaves_no_copy_at_out(tmp_path):
    """A router the rewrite refuses (here 100 rows: no whole strips) left the unrewritten copy at
    --out (exit 2), and the same command again was refused because --out now existed."""
    from tir.engines.bundle import write_bundle
    from tir.tools.cli import main
    from tiny_models import Scale, export

    odd = export_router_onnx(_net(), tmp_path / "odd.onnx", (160, 100), fast=False)
    route = export(Scale(1.0), tmp_path / "noise.onnx", 64, 64)
    meta = {"name": "b", "router": {"codebook": np.eye(3, 8).tolist(), "tasks": ["noise", "blur", "clean"],
                                    "threshold": 0.5, "input_size": [160, 100]}}
    src = write_bundle(tmp_path / "bundle", {"noise": route}, odd, meta).path
    with pytest.raises(ValueError, match="cannot be cut"):
        fr.rewrite_bundle_router(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["export", "--bundle", str(src), "--fast-router", "--size", "64x64", "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_an_unwritable_bundle_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    """tir export --fast-router on a bundle nobody may write (a package's site-packages, a read-only
    mount; simulated: the temporary file cannot be made): exit 2 with one line, the bundle intact."""
    import tempfile

    from tir.engines.bundle import load_bundle
    from tir.tools.cli import main

    src = _bundle(tmp_path)
    before = (src / "router.onnx").read_bytes()

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["export", "--bundle", str(src), "--fast-router", "--size", "64x64"]) == 2
    out = capsys.readouterr().err
    assert "cannot write the fast router" in out and "Permission denied" in out
    assert (src / "router.onnx").read_bytes() == before and load_bundle(src).router.get("export") is None
