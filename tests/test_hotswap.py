"""Hot-swap of the bundle in a running pipeline (issue 13 item 5): the swap happens between two
frames with no frame lost or reordered, a tampered new bundle is refused while the old one keeps
running, the manifest watcher reacts to a version bump only, POST /bundle/reload needs the token."""
import http.client
import json
import threading

import numpy as np
import pytest
import torch

from tir.edge.outputs import open_output
from tir.edge.outputs.base import Output
from tir.edge.pipeline import Pipeline
from tir.edge.sources import open_source
from tir.edge.uri import parse_uri
from tir.engines.bundle import write_bundle
from tir.engines.hotswap import HotSwapRestorer
from tir.engines.restorer import Restorer

from waiting import wait_until

torch.set_num_threads(1)


def scale_route(path, k):
    from tir.engines.training.export import export_onnx

    conv = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(k)
        conv.bias.zero_()
    export_onnx(conv, path, input_shape=(1, 1, 16, 16))
    return path


def write_version(folder, tmp, routes, version):
    """Write (in place) a router-less bundle with routes {name: gain} and manifest ``version``."""
    files = {name: scale_route(tmp / f"{name}-{k}.onnx", k) for name, k in routes.items()}
    return write_bundle(folder, files, None, {"name": "hs", "version": version, "normalisation": {}})


def factory(task="a"):
    return lambda path: Restorer(path, backend="onnxruntime", task=task, threads=1)


@pytest.fixture
def running(tmp_path):
    folder = tmp_path / "bundle"
    write_version(folder, tmp_path, {"a": 1.0}, 1)
    hs = HotSwapRestorer(factory()(folder), factory())
    yield hs, folder, tmp_path
    hs.close()


class Recorder(Output):
    """Keeps every frame's sequence number; at frame ``at`` runs ``hook`` (in the output thread)."""

    def __init__(self, at, hook):
        super().__init__(parse_uri("collect://"))
        self.seqs, self.at, self.hook = [], at, hook

    def start(self):
        return self

    def write(self, frame):
        self.seqs.append(frame.seq)
        if len(self.seqs) == self.at:
            self.hook()

    def close(self):
        pass


def test_swap_mid_run_keeps_every_frame_in_order(running):
    hs, folder, tmp = running
    n = 120

    def new_version():
        write_version(folder, tmp, {"a": 1.0, "b": 0.5}, 2)
        assert hs.request_reload() and hs.wait_loaded()
        assert hs.reload_state == "ready", hs.reload_error

    out = Recorder(40, new_version)
    source = open_source(f"synthetic://?size=160x120&realtime=0&frames={n}&ffc=0")
    snap = Pipeline(source, hs, [out]).run()
    assert out.seqs == list(range(n))                        # none lost, none repeated, in order
    assert sum(v for v in snap["drops"].values() if isinstance(v, int)) == 0
    assert hs.swaps == 1 and 40 <= hs.last_swap["at_frame"] < n
    assert hs.last_swap["from_version"] == 1 and hs.last_swap["to_version"] == 2
    assert hs.last_swap["first_frame_ms"] >= 0 and hs.last_swap["first_frame_route"] == "a"
    bundle = snap["model"]["bundle"]                          # what /stats.json and the page show
    assert bundle["version"] == 2 and bundle["tasks"] == ["a", "b"] and bundle["reload_error"] is None
    assert snap["model"]["frames"] == n                       # counters carried over the swap
    assert hs.route == "a"


def test_tampered_new_bundle_is_refused_and_the_old_one_keeps_running(running):
    hs, folder, tmp = running
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    before = hs.infer(x)
    write_version(folder, tmp, {"a": 2.0, "b": 0.5}, 2)
    route = folder / "route-b.onnx"
    good = route.read_bytes()
    data = bytearray(good)
    data[-5] ^= 0xFF
    route.write_bytes(bytes(data))
    assert hs.check_manifest()                                 # a higher version: reload
    assert hs.wait_loaded() and hs.reload_state == "failed"
    err = hs.status()["bundle"]["reload_error"]
    assert "version 1 keeps running" in err and "tampered or mismatched bundle: route-b.onnx" in err
    assert hs.bundle.version == 1
    assert np.array_equal(hs.infer(x), before) and hs.swaps == 0   # still the old route a (gain 1)
    assert not hs.check_manifest()                             # the failed version is not retried
    route.write_bytes(good)                                    # repaired; the operator asks again
    assert not hs.check_manifest()                             # (same manifest: the watcher waits)
    assert hs.request_reload() and hs.wait_loaded()
    assert np.allclose(hs.infer(x), 2 * x, atol=1e-6) and hs.bundle.version == 2
    assert hs.status()["bundle"]["reload_error"] is None


def test_watcher_reloads_on_a_version_bump_only(running):
    hs, folder, tmp = running
    write_version(folder, tmp, {"a": 1.0, "b": 0.5}, 1)       # rewritten, same version: ignored
    assert not hs.check_manifest()
    hs.poll_s = 0.05
    hs.start_watch()
    write_version(folder, tmp, {"a": 1.0, "b": 0.5, "c": 0.25}, 3)
    wait_until(lambda: hs.reload_state == "ready", 30)
    hs.infer(np.zeros((1, 1, 16, 16), np.float32))
    assert hs.bundle.version == 3 and hs.routes == ["a", "b", "c"] and hs.swaps == 1


def test_reload_of_an_unchanged_bundle_does_nothing(running):
    hs, folder, _ = running
    assert hs.request_reload() and hs.wait_loaded()
    assert hs.reload_state == "unchanged" and not hs.swap_if_ready() and hs.swaps == 0


def post(out, headers):
    conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=5)
    try:
        conn.request("POST", "/bundle/reload", headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_post_bundle_reload_needs_the_token():
    out = open_output("http://127.0.0.1:0").start()
    try:
        assert post(out, {"X-Tir-Token": out.token})[0] == 409     # no bundle in this run
        requested = []
        out.actions["bundle/reload"] = lambda: requested.append(1)
        code, reply = post(out, {})
        assert code == 403 and "X-Tir-Token" in reply["error"] and requested == []
        wrong = out.token[:-1] + ("y" if out.token.endswith("x") else "x")
        assert post(out, {"X-Tir-Token": wrong})[0] == 403
        assert post(out, {"X-Tir-Token": out.token, "Origin": "http://evil.example"})[0] == 403
        assert requested == []
        code, reply = post(out, {"X-Tir-Token": out.token, "Origin": f"http://127.0.0.1:{out.port}"})
        assert code == 202 and reply == {"ok": True, "requested": "bundle/reload"} and requested == [1]
    finally:
        out.close()


def test_tir_run_wraps_a_bundle_for_reload_and_refuses_watch_without_one(tmp_path):
    from types import SimpleNamespace

    from tir.tools.run import hot_swappable

    folder = tmp_path / "bundle"
    write_version(folder, tmp_path, {"a": 1.0}, 1)
    model = hot_swappable(factory()(folder), SimpleNamespace(watch_bundle=None))
    assert isinstance(model, HotSwapRestorer) and not model.watching and model.forced
    model.close()
    with pytest.raises(ValueError, match="--watch-bundle watches a bundle folder"):
        hot_swappable(object(), SimpleNamespace(watch_bundle=1.0))


def test_a_swap_that_loses_the_blur_reference_warms_the_gates_up_again(tmp_path):
    """The new bundle's blur gate measures with another σ_min, so it starts its history afresh
    (BlurGate.carry_from); the old restorer's warm-up was over. The carried ``_warm_left`` (0)
    let the router's blur verdict run unchecked on every clean frame until the new history filled;
    the swap now starts the new restorer's own warm-up, as after a camera change."""
    from test_fpn_gate import _bundle, scene

    b = _bundle(tmp_path, "blur")
    old = Restorer(b, every=8, hysteresis=1, tone_align=False)
    for i in range(80):
        old.infer(scene(seed=i)[None, None])
    assert old._warm_left == 0 and old.blur_gate.threshold() is not None and old.route == "passthrough"
    hs = HotSwapRestorer(old, lambda p: Restorer(p, every=8, hysteresis=1, tone_align=False))
    new = Restorer(b, every=8, hysteresis=1, tone_align=False)
    new.blur_gate.sigma_min *= 1.5
    hs._pending = (new, {"name": "tiny", "from_version": "1", "to_version": "2"})
    changed = 0
    for i in range(64):
        x = scene(seed=100 + i)
        changed += not np.allclose(hs.infer(x[None, None]), x)
    assert hs.active is new and new.blur_gate.threshold() is not None
    assert changed == 0 and new.blur_gate.held > 0


def test_a_swap_whose_gates_keep_their_references_keeps_the_schedule(tmp_path):
    """The carried gates hold the camera's references: no warm-up after the swap (1 frame in 8 routed)."""
    from test_fpn_gate import _bundle, scene

    b = _bundle(tmp_path, "blur")
    old = Restorer(b, every=8, hysteresis=1, tone_align=False)
    for i in range(80):
        old.infer(scene(seed=i)[None, None])
    observed = old.observed
    hs = HotSwapRestorer(old, lambda p: Restorer(p, every=8, hysteresis=1, tone_align=False))
    new = Restorer(b, every=8, hysteresis=1, tone_align=False)
    hs._pending = (new, {"name": "tiny", "from_version": "1", "to_version": "2"})
    for i in range(16):
        hs.infer(scene(seed=100 + i)[None, None])
    assert hs.active is new and new._warm_left == 0 and new.observed == observed
