import numpy as np
import pytest
import torch

from tiny_models import Scale

from tir.engines.bundle import write_bundle
from tir.engines.restorer import PASSTHROUGH, Restorer

H, W = 24, 32
# router classes; frame means that the tiny router maps onto each codebook entry
MEANS = {"a": 0.2, "b": 0.5, "clean": 0.8}


class MeanRouter(torch.nn.Module):
    """Embedding peaked at the codebook entry whose centre is nearest the frame mean."""

    def __init__(self):
        super().__init__()
        self.register_buffer("centres", torch.tensor(list(MEANS.values())))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))[:, None]
        return torch.exp(-(((m - self.centres) / 0.05) ** 2)) + 1e-3


def _export(module, path):
    torch.onnx.export(module, (torch.rand(1, 1, H, W),), str(path), input_names=["frame"],
                      output_names=["out"], opset_version=17, dynamo=False,
                      dynamic_axes={"frame": {0: "n", 2: "h", 3: "w"}, "out": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    routes = {"a": _export(Scale(2.0), tmp / "a.onnx"), "b": _export(Scale(3.0), tmp / "b.onnx")}
    router = _export(MeanRouter(), tmp / "router.onnx")
    meta = {"name": "tiny", "router": {"codebook": np.eye(3).tolist(), "tasks": list(MEANS),
                                       "threshold": 0.9, "temperature": 0.1, "input_size": [W, H]}}
    write_bundle(tmp / "bundle", routes, router, meta)
    write_bundle(tmp / "norouter", routes, None, {"name": "norouter"})
    return tmp


def frame(kind, n=1):
    value = 0.35 if kind == "unknown" else MEANS[kind]
    return np.full((n, 1, H, W), value, np.float32)


def test_lazy_loading_and_startup_route(bundle_dir):
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=3)
    assert r.loaded_routes == [] and r.status()["task"] == PASSTHROUGH
    out = r.infer(frame("a"))
    assert np.allclose(out, frame("a") * 2.0)  # first decision taken at once
    assert r.loaded_routes == ["a"]
    s = r.status()
    assert s["task"] == "a" and s["switches"] == 1 and s["confidence"] > 0.9 and not s["unknown"]
    assert s["router_ms"] is not None
    assert r.multiple == 4 and r.name == "restorer:tiny"


def test_hysteresis_needs_same_decision_in_a_row(bundle_dir):
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=3)
    r.infer(frame("a"))
    for _ in range(2):
        assert np.allclose(r.infer(frame("b")), frame("b") * 2.0)  # still route a
    assert np.allclose(r.infer(frame("b")), frame("b") * 3.0)      # third in a row: switch
    assert r.status()["switches"] == 2 and r.loaded_routes == ["a", "b"]
    # alternating decisions against the route leave it once, for the one most of them name (clean,
    # a, clean: pass-through), then never flicker between the two
    for i in range(12):
        r.infer(frame("a" if i % 2 else "clean"))
    assert r.status()["task"] == PASSTHROUGH and r.status()["switches"] == 3



def test_a_route_is_not_started_on_a_verdict_that_says_the_frame_is_clean(bundle_dir):
    """The verdict that completes ``hysteresis`` votes against the route says ``clean`` while most of
    them named another route (docs/cameras.md "Round 9": y10_640x512's CBN segment ran the noise route,
    its last two verdicts said BN, and the first verdict of the clean segment after it switched the
    route to BN: 9 clean frames restored, p5 28.2 dB): no route is started on a verdict that says
    the frames are clean (do no harm); the oldest vote drops out, and the next verdicts decide."""
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=3)
    r.infer(frame("a"))
    for kind in ("b", "b"):
        r.infer(frame(kind))
    assert np.allclose(r.infer(frame("clean")), frame("clean") * 2.0)   # still route a, not b
    assert r.status()["task"] == "a" and r.status()["switches"] == 1
    assert np.allclose(r.infer(frame("clean")), frame("clean"))          # b, clean, clean: pass-through
    assert r.status()["task"] == PASSTHROUGH and r.status()["switches"] == 2
    for kind in ("a", "a", "a", "b", "b", "clean"):
        r.infer(frame(kind))
    assert r.status()["task"] == "a"
    r.infer(frame("b"))                                                 # b, clean, b: b
    assert r.status()["task"] == "b"


def test_verdicts_that_agree_on_nothing_but_leaving_the_route_leave_it(bundle_dir):
    """A route none of the verdicts names is left after `hysteresis` verdicts against it: for the task
    a strict majority of them names, else for pass-through (do no harm). Requiring the same new task
    every time kept it for as long as the verdicts alternated (a column-FPN camera ran its start-up
    route BN while the router named CN, noise and clean; noisy frames called BN and noise in turn
    passed through)."""
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=3)
    r.infer(frame("a"))
    for kind in ("b", "clean", "b"):                       # b twice of three: b
        r.infer(frame(kind))
    assert r.status()["task"] == "b" and r.status()["switches"] == 2
    for kind in ("a", "clean", "unknown"):                 # a, pass-through twice (unknown votes for it)
        r.infer(frame(kind))
    assert r.status()["task"] == PASSTHROUGH and r.status()["switches"] == 3
    r.infer(frame("a"))
    for kind in ("b", "clean", "unknown"):
        r.infer(frame(kind))
    assert r.status()["task"] == PASSTHROUGH
    for kind in ("b", "b", "b"):
        r.infer(frame(kind))
    assert r.status()["task"] == "b" and r.status()["switches"] == 4
    for kind in ("a", "b", "a", "b", "a"):                 # no flicker: each b breaks the run against it
        r.infer(frame(kind))
    assert r.status()["task"] == "b" and r.status()["switches"] == 4


def test_unknown_falls_back_to_passthrough_and_is_reported(bundle_dir):
    """Do no harm: an unknown verdict is a vote for pass-through, not for the last route."""
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=2)
    assert np.allclose(r.infer(frame("unknown")), frame("unknown"))  # no route yet: pass-through
    assert r.status()["unknown"] and r.status()["task"] == PASSTHROUGH
    r.infer(frame("b"))
    assert r.status()["task"] == "b"
    assert np.allclose(r.infer(frame("unknown")), frame("unknown") * 3.0)  # one vote: hysteresis
    assert np.array_equal(r.infer(frame("unknown")), frame("unknown"))      # two: pass-through
    s = r.status()
    assert s["task"] == PASSTHROUGH and s["unknown"] and s["unknowns"] == 3 and s["nearest"] in MEANS
    # an unknown breaks a streak toward a task: a, unknown, a does not switch with hysteresis 2
    r.infer(frame("a"))
    r.infer(frame("unknown"))
    r.infer(frame("a"))
    assert r.status()["task"] == PASSTHROUGH
    r.infer(frame("a"))
    assert r.status()["task"] == "a"


def test_uncertain_verdict_falls_back_to_passthrough(bundle_dir):
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=1, min_confidence=0.6)
    r.infer(frame("b"))
    assert r.status()["task"] == "b"
    r._decide({"task": "a", "confidence": 0.4, "unknown": False, "nearest": "a"})
    s = r.status()
    assert s["task"] == PASSTHROUGH and s["uncertain"] == 1 and s["decision"] == "a"
    with pytest.raises(ValueError, match="min_confidence"):
        Restorer(bundle_dir / "bundle", min_confidence=1.5)


def test_an_uncertain_choice_between_classes_that_share_the_routed_part_is_sure_of_it(tmp_path):
    """Session 22: a verdict is judged by the router's probability of the parts of the gated task it
    named, not of its nearest class alone. hit_uav's BN segment voted CN p=0.50 -> noise, CBN 0.78,
    CN 0.44 -> noise: read by the nearest class, two votes for pass-through and the noisy stream
    passed through; every verdict says noise, so noise is the route. A router split between clean
    and classes that share no part is still uncertain: a vote for pass-through (do no harm)."""
    from tiny_models import one_hot_bundle

    bundle = one_hot_bundle(tmp_path, {"contrast": 2.0, "noise": 3.0, "BN": 4.0, "CN": 5.0, "CBN": 6.0},
                            "BN", H, W)
    r = Restorer(bundle, every=1, hysteresis=3, contrast_gate=False, fpn_gate=False, blur_gate=False)
    r.infer(frame("clean"))
    assert r.status()["task"] == "BN"

    def verdict(task, nearest, **probs):
        rest = (1.0 - sum(probs.values())) / 2
        probs = {"contrast": rest, "clean": rest, **probs}
        return {"task": task, "nearest": nearest, "confidence": probs[nearest], "unknown": False,
                "probabilities": probs, **({"gated_from": nearest} if task != nearest else {})}

    for d in (verdict("noise", "CN", CN=0.44, noise=0.30, BN=0.10, CBN=0.10),
              verdict("CBN", "CBN", CBN=0.78, CN=0.10, noise=0.04, BN=0.04),
              verdict("noise", "CN", CN=0.45, noise=0.35, BN=0.10, CBN=0.06)):
        r._decide(d)
    s = r.status()
    assert s["task"] == "noise" and s["uncertain"] == 0
    # genuinely uncertain: noise against clean and contrast (no shared part): pass-through votes
    for _ in range(3):
        r._decide(verdict("BN", "BN", BN=0.30, noise=0.10, CN=0.0, CBN=0.0))
    assert r.status()["task"] == PASSTHROUGH and r.status()["uncertain"] == 3
    # the parts of the gated task the router did not name were measured by a gate: the router's part counts
    for _ in range(3):
        r._decide(verdict("BN", "noise", noise=0.40, CN=0.10, BN=0.05, CBN=0.05))
    assert r.status()["task"] == "BN" and r.status()["uncertain"] == 3


@pytest.mark.parametrize("near, route", [(("BN", "CN"), "noise"), (("clean", "contrast"), PASSTHROUGH)])
def test_the_routers_probability_of_the_parts_reaches_the_decision(tmp_path, near, route):
    """Through classify -> gates -> decision: a router whose nearest class (noise, p=0.45) has two
    classes close behind is sure of the noise part when both carry it (BN, CN: the noise route at
    once), and uncertain when they do not (clean, contrast: pass-through). Before session 22 both
    were uncertain (the nearest class's probability alone)."""
    from tiny_models import OneHotRouter, export

    from tir.engines import degrade as deg

    classes = ["contrast", "noise", "BN", "CN", "clean"]
    factors = {"contrast": 2.0, "noise": 3.0, "BN": 4.0, "CN": 5.0}
    routes = {t: export(Scale(f), tmp_path / f"{t}.onnx", H, W) for t, f in factors.items()}
    k = classes.index("noise")
    router = export(OneHotRouter(k, len(classes)), tmp_path / "router.onnx", H, W)
    book = np.eye(len(classes))
    for c in near:   # cosine 0.95 with the router's embedding: softmax (T=0.1) noise 0.45, each 0.27
        book[classes.index(c)] = 0.95 * np.eye(len(classes))[k] + np.sqrt(1 - 0.95 ** 2) * book[classes.index(c)]
    meta = {"name": "split", "tasks": [{"name": t, "spec": {"name": t, "steps": deg.load_spec(t).steps}} for t in factors],
            "router": {"codebook": book.tolist(), "tasks": classes, "threshold": 0.5, "temperature": 0.1,
                       "input_size": [W, H]}}
    write_bundle(tmp_path / "bundle", routes, router, meta)
    r = Restorer(tmp_path / "bundle", every=1, hysteresis=3, contrast_gate=False, fpn_gate=False, blur_gate=False)
    out = r.infer(frame("clean"))
    s = r.status()
    assert s["decision"] == "noise" and 0.4 < s["confidence"] < 0.5
    assert s["task"] == route and s["uncertain"] == int(route == PASSTHROUGH)
    assert np.allclose(out, frame("clean") * (3.0 if route == "noise" else 1.0))


def test_clean_routes_to_passthrough(bundle_dir):
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=1)
    r.infer(frame("a"))
    out = r.infer(frame("clean"))
    assert np.array_equal(out, frame("clean")) and r.status()["task"] == PASSTHROUGH


def test_router_runs_every_k_frames_and_skips_ffc(bundle_dir):
    r = Restorer(bundle_dir / "bundle", every=8, hysteresis=1)
    for _ in range(20):
        r.infer(frame("a"))
    assert r.status()["decisions"] == 3  # frames 0, 8, 16
    r2 = Restorer(bundle_dir / "bundle", every=4, hysteresis=1)
    r2.infer(frame("a", n=9))             # a batch holding frames 0..8 routes once
    assert r2.status()["decisions"] == 1
    r3 = Restorer(bundle_dir / "bundle", every=1, hysteresis=1)
    out = r3.infer(frame("a"), meta={"ffc": True})
    assert r3.status()["decisions"] == 0 and r3.status()["skipped_ffc"] == 1
    assert np.array_equal(out, frame("a"))
    r3.infer(frame("a"), meta=[{"ffc": True}, {"ffc": False}])  # newest frame is not FFC
    assert r3.status()["task"] == "a"


def test_a_pending_switch_is_confirmed_within_one_interval(bundle_dir):
    """A verdict against the route brings the next ones sooner: the hysteresis' other verdicts come
    every ceil(every / (hysteresis - 1)) frames, so a switch is decided within `every` frames of the
    first verdict against the route, not 2 x `every` (tir eval --sequence: a degradation was taken
    up, and a route left, 16 frames late on every camera at every=8, hysteresis=3)."""
    r = Restorer(bundle_dir / "bundle", every=8, hysteresis=3)
    routes = []
    for k in range(32):
        r.infer(frame("a" if k < 8 else "b"))
        routes.append(r.status()["task"])
    assert routes[:16] == ["a"] * 16 and routes[16] == "b"      # verdicts on frames 8, 12, 16
    assert r.status()["decisions"] == 5                         # 0; 8, 12, 16; then the schedule: 24
    # a single verdict against the route that the next one does not repeat: back on the schedule
    before = r.status()["decisions"]
    for k in range(32, 48):
        r.infer(frame("a" if k == 32 else "b"))
    assert r.status()["task"] == "b"
    assert r.status()["decisions"] - before == 3                # 32 (a), 36 (b: dropped), 40


def _scene(mean, seed, noise=0.0):
    """A frame with structure over many pixels (a smooth pattern of amplitude 0.05 about ``mean``)
    plus white noise of σ ``noise``: (1, 1, H, W) float32."""
    y, x = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(seed)
    f = mean + 0.05 * np.sin(x / 5.0 + seed) * np.cos(y / 4.0) + rng.normal(0.0, noise, (H, W))
    return f[None, None].astype(np.float32)


def test_frames_without_a_scene_are_skipped_as_ffc_frames(bundle_dir):
    """The closed shutter of an FFC the stream did not mark (white noise, the sensor's own, around
    the flag's level; a column pattern on it too): not routed, not shown to the gates, passed
    through at a cold start, counted; a scene with as much noise is routed."""
    rng = np.random.default_rng(0)
    flag = (0.2 + rng.normal(0.0, 0.05, (H, W)) + rng.normal(0.0, 0.03, W)[None, :]).astype(np.float32)
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=1)
    out = r.infer(flag[None, None])
    assert np.array_equal(out, flag[None, None]) and r.status()["task"] == PASSTHROUGH
    s = r.status()
    assert s["decisions"] == 0 and s["skipped_ffc"] == 1 and s["skipped_scene_free"] == 1
    r.warm_camera(flag[None, None])
    assert r.contrast_gate is None or len(r.contrast_gate.extents) == 0
    scene = _scene(0.2, 1, noise=0.01)
    assert np.allclose(r.infer(scene), scene * 2.0) and r.status()["decisions"] == 1   # the scene is routed
    from tir.engines.restorer import scene_free
    assert not scene_free(np.full((H, W), 0.5)) and scene_free(rng.normal(0.5, 0.1, (512, 640)))
    assert not scene_free(_scene(0.5, 2, noise=0.02)[0, 0])


def test_forced_task_never_routes(bundle_dir):
    r = Restorer(bundle_dir / "bundle", task="b", every=1)
    for kind in ("a", "clean", "unknown"):
        assert np.allclose(r.infer(frame(kind)), frame(kind) * 3.0)
    s = r.status()
    assert s["forced"] and s["decisions"] == 0 and s["router_ms"] is None and s["task"] == "b"
    assert r.loaded_routes == ["b"]
    with pytest.raises(ValueError, match="routes: a, b"):
        Restorer(bundle_dir / "bundle", task="nope")


def test_bundle_without_router_passes_through_unless_forced(bundle_dir):
    r = Restorer(bundle_dir / "norouter")
    assert np.array_equal(r.infer(frame("a")), frame("a"))
    assert Restorer(bundle_dir / "norouter", task="a").infer(frame("b")).mean() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no router"):
        r.classify(frame("a"))


def test_classify_reports_each_frame(bundle_dir):
    r = Restorer(bundle_dir / "bundle")
    batch = np.concatenate([frame("a"), frame("b"), frame("clean"), frame("unknown")])
    assert [d["task"] for d in r.classify(batch)] == ["a", "b", "clean", "unknown"]
    assert r.status()["decisions"] == 0  # classify does not change state
    with pytest.raises(ValueError, match="N×1×H×W"):
        r.infer(np.zeros((1, 2, H, W), np.float32))


def test_the_picture_inside_a_grabbers_bars_is_routed_and_restored_and_the_bars_pass(bundle_dir):
    """A picture (mean 0.5: route b, ×3) between white bars (1.0) a quarter of the frame each side:
    once the camera's frames agree on the bars (engines/borders.py) the picture is routed and
    restored and the bars come out as they went in (the route on the whole frame made them 3.0)."""
    from tir.engines.borders import AGREE_FRAMES

    yy, xx = np.mgrid[0:H, 0:H].astype(np.float32)
    frames = []
    for n in range(AGREE_FRAMES + 1):
        f = np.ones((1, 1, H, 2 * H), np.float32)
        f[..., H // 2:H // 2 + H] = 0.5 + 0.05 * np.sin(xx / 3.0 + n) * np.cos(yy / 4.0)   # a scene, not noise
        frames.append(f)
    r = Restorer(bundle_dir / "bundle", every=1, hysteresis=1)
    for f in frames[:AGREE_FRAMES - 1]:
        r.infer(f)                                        # the whole frame (the bars not yet the camera's)
        assert r.status()["borders"] is None
    for f in frames[AGREE_FRAMES - 1:]:
        out = r.infer(f)
        assert r.route == "b" and r.status()["borders"]["left"] == H // 2
        assert np.array_equal(out[..., :H // 2], f[..., :H // 2]) and np.array_equal(out[..., -(H // 2):], f[..., -(H // 2):])
        assert np.allclose(out[..., H // 2:H // 2 + H], f[..., H // 2:H // 2 + H] * 3.0)
        engine, finish = r.plan(f)                          # the TensorRT stage's two parts: the same
        assert np.allclose(finish(engine.infer(f)), out)
