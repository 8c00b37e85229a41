"""The contrast gate: a contrast-carrying verdict is kept only when the frame's contrast is low
for this camera (engines/contrast_gate.py), in the Restorer and in the per-camera evaluation."""
import math

import cv2

import numpy as np
import pytest
from tiny_models import OneHotRouter, Scale, export, one_hot_bundle, scheduled

from tir.engines import degrade as deg
from tir.engines.bundle import write_bundle
from tir.engines.contrast_gate import (ContrastGate, contrast_gains, contrast_partners, contrast_prior,
                                       lowpass_ends, lowpass_extent, lowpass_span, max_contrast_factor)
from tir.engines.restorer import PASSTHROUGH, Restorer
from tir.engines.router import CLEAN, UNKNOWN

H, W = 64, 80


def ramp(amplitude, mean=0.5, h=H, w=W):
    """A horizontal ramp frame of the given peak-to-peak amplitude around ``mean``."""
    x = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :].repeat(h, axis=0)
    return (mean + amplitude * x).astype(np.float32)


def shipped_specs():
    return {t: deg.load_spec(t).steps for t in deg.TASKS}


def test_lowpass_span_ignores_pixel_noise_and_scales_with_contrast():
    base = ramp(0.6, h=512, w=640)                                      # 8×8-pixel cells
    noisy = np.clip(base + np.random.default_rng(0).normal(0, 0.05, base.shape), 0, 1).astype(np.float32)
    assert lowpass_span(base) == pytest.approx(0.6, rel=0.05)          # 80 cell means of a ramp
    assert lowpass_span(noisy) == pytest.approx(lowpass_span(base), rel=0.05)   # noise averaged out
    assert lowpass_span(base * 0.4 + 0.1) == pytest.approx(0.4 * lowpass_span(base), rel=0.01)
    assert lowpass_span(base[None, None]) == lowpass_span(base)
    assert lowpass_span(np.full((3, 5), 0.5, np.float32)) == 0.0           # fewer pixels than cells
    assert lowpass_span(ramp(0.6, h=3, w=5)) == pytest.approx(0.6, rel=0.3)  # ... kept as they are


def hot_spots(h, w, seed=0):
    """A 640×512 scene (a gentle ramp and 200 small hot discs of radius 5 px) area-resized to
    (h, w), as a camera of that resolution would see it."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:512, 0:640]
    scene = 0.3 + 0.1 * xx / 640.0
    for cx, cy in zip(rng.uniform(0, 640, 200), rng.uniform(0, 512, 200)):
        scene[(xx - cx) ** 2 + (yy - cy) ** 2 < 25] = 0.8
    scene = scene.astype(np.float32)
    return scene if (h, w) == (512, 640) else cv2.resize(scene, (w, h), interpolation=cv2.INTER_AREA)


def test_lowpass_span_is_the_same_at_any_resolution():
    # the prior is measured on 640×512 training frames; a 160×120 or 80×60 camera of the same
    # scene must not read as low against it (8-pixel blocks: 0.41 at 640×512, 0.15 at 160×128, 0.12 at 80×64)
    reference = lowpass_span(hot_spots(512, 640))
    assert reference > 0.35
    for h, w in ((256, 320), (128, 160), (120, 160), (64, 80), (60, 80), (1024, 1280)):
        assert lowpass_span(hot_spots(h, w)) == pytest.approx(reference, rel=0.1), (w, h)
    prior = contrast_prior(np.stack([hot_spots(512, 640, s) for s in range(3)]))
    assert prior["grid"] == [80, 64]
    gate = ContrastGate({"contrast": CLEAN}, prior["median"], math.sqrt(0.6))
    assert not gate.is_low(lowpass_span(hot_spots(120, 160)))   # a small camera's clean frame
    assert gate.is_low(lowpass_span(hot_spots(120, 160) * 0.5 + 0.2))   # and its contrast loss
    with pytest.raises(ValueError):
        lowpass_span(np.zeros((2, H, W), np.float32))


def test_partners_and_ratio_come_from_the_specs():
    specs = shipped_specs()
    assert contrast_partners(specs) == {"contrast": CLEAN, "CB": "blur", "CN": "noise", "CBN": "BN"}
    assert max_contrast_factor(specs.values()) == pytest.approx(0.6)
    # a contrast-carrying task whose remainder is no task is left alone
    odd = {"contrast": specs["contrast"], "Cx": specs["contrast"] + [{"op": "jpeg", "quality": [5, 15]}]}
    assert contrast_partners(odd) == {"contrast": CLEAN}
    milder = [[{"op": "contrast", "contrast": [-0.5, -0.1]}]]
    assert max_contrast_factor(milder) == pytest.approx(0.9)
    gate = ContrastGate.for_bundle(specs, {"contrast_span": {"median": 0.5}})
    assert gate.ratio == pytest.approx(math.sqrt(0.6)) and gate.prior == 0.5


def test_gate_keeps_contrast_only_when_low_for_this_camera():
    gate = ContrastGate({"contrast": CLEAN, "CB": "blur"}, prior=None, ratio=0.775)
    assert gate.reference is None
    assert gate.judge("CB", 0.1) == "blur"             # nothing known about the camera: do no harm
    for _ in range(20):
        gate.add(0.4)                                    # a low-contrast camera (a sky camera)
    assert gate.reference == pytest.approx(0.4)
    assert gate.judge("contrast", 0.4) == CLEAN          # its clean frame: pass-through
    assert gate.judge("CB", 0.4) == "blur"               # the blur is still restored
    assert gate.judge("CB", 0.2) == "CB"                 # half its usual contrast: degraded
    assert gate.judge("blur", 0.4) == "blur"             # no gains given: never promotes, never touches the rest
    assert gate.demoted == 3
    assert gate.status() == {"reference": 0.4, "extent_reference": None, "frames": 20, "ratio": 0.775,
                             "demoted": 3, "promoted": 0, "promote_ratio": 0.6006, "held": 0, "holding": 0,
                             "adopted": 0,
                             "tone_reference": None,
                             "aligned": 0, "tone_scale": None}


def test_reference_shrinks_from_the_prior_to_the_camera():
    gate = ContrastGate({"contrast": CLEAN}, prior=0.8, ratio=0.775, prior_frames=8)
    assert gate.reference == 0.8
    assert gate.judge("contrast", 0.4) == "contrast"     # cold start: the training cameras decide
    for _ in range(8):
        gate.add(0.4)
    assert gate.reference == pytest.approx(math.sqrt(0.8 * 0.4))   # equal weights: geometric mean
    for _ in range(200):
        gate.add(0.4)
    assert gate.reference == pytest.approx(0.4, rel=0.03)          # the camera's own frames win
    assert gate.judge("contrast", 0.4) == CLEAN


def test_gate_window_forgets_old_frames():
    gate = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775, window=4)
    for s in (0.9, 0.9, 0.9, 0.9, 0.3, 0.3, 0.3, 0.3):
        gate.add(s)
    assert gate.reference == pytest.approx(0.3)


@pytest.mark.parametrize("kwargs", [{"ratio": 0.0}, {"ratio": 1.0}, {"window": 0}, {"prior_frames": -1},
                                    {"prior": 0.0}])
def test_gate_refuses_bad_settings(kwargs):
    args = {"partners": {}, "prior": None, "ratio": 0.7, **kwargs}
    with pytest.raises(ValueError):
        ContrastGate(**args)


def test_contrast_prior_summarises_training_frames():
    frames = np.stack([ramp(a) for a in (0.2, 0.4, 0.6)])
    p = contrast_prior(frames)
    assert p["frames"] == 3 and p["median"] == pytest.approx(lowpass_span(ramp(0.4)))
    with pytest.raises(ValueError):
        contrast_prior(np.zeros((0, 4, 4), np.float32))


# --- the Restorer ------------------------------------------------------------------------------

def _export(module, path):
    return export(module, path, H, W)


@pytest.fixture(scope="module")
def gated_bundle(tmp_path_factory):
    """Routes CB (×2) and blur (×3) with the shipped specs; a router that always says CB."""
    tmp = tmp_path_factory.mktemp("gated")
    routes = {"CB": _export(Scale(2.0), tmp / "cb.onnx"), "blur": _export(Scale(3.0), tmp / "blur.onnx")}
    router = _export(OneHotRouter(0, 3), tmp / "router.onnx")   # always CB
    specs = shipped_specs()
    meta = {"name": "gated",
            "tasks": [{"name": t, "spec": {"name": t, "steps": specs[t]}} for t in ("CB", "blur")],
            "router": {"codebook": np.eye(3).tolist(), "tasks": ["CB", "blur", "clean"], "threshold": 0.5,
                       "temperature": 0.1, "input_size": [W, H], "contrast_span": {"median": 0.6}}}
    write_bundle(tmp / "bundle", routes, router, meta)
    return tmp / "bundle"


def test_restorer_demotes_contrast_verdicts_on_frames_normal_for_the_camera(gated_bundle):
    r = scheduled(Restorer(gated_bundle, every=1, hysteresis=1, tone_align=False))
    assert r.contrast_gate.partners == {"CB": "blur"}
    r.warm_camera(np.stack([ramp(0.6)] * 30))         # the camera's frames: span ≈ 0.59
    normal = ramp(0.6)[None, None]
    out = r.infer(normal)                              # router says CB, the contrast is the camera's
    s = r.status()
    assert s["decision"] == "blur" and s["task"] == "blur" and np.allclose(out, normal * 3.0)
    assert s["contrast"]["demoted"] == 1 and s["contrast"]["frames"] == 31
    assert r.last_decision["gated_from"] == "CB"
    assert s["gated_from"] == "CB"                     # the router's own verdict, where people look
    flat = ramp(0.15)[None, None]                       # a quarter of the camera's contrast
    assert np.allclose(r.infer(flat), flat * 2.0) and r.status()["task"] == "CB"
    r.reset()                                          # a new scene, the same camera
    assert r.status()["contrast"]["frames"] == 32


def test_restorer_maps_a_contrast_route_onto_the_camera_tone(gated_bundle):
    """After a contrast-carrying route the restored frame's extremes are the camera's: the route
    (×2) restores too little of a contrast loss of 0.25, the camera's tone reference finishes it."""
    r = scheduled(Restorer(gated_bundle, every=1, hysteresis=1))
    assert r.tone_align
    r.warm_camera(np.stack([ramp(0.6)] * 30))         # the camera's frames: 0.2 .. 0.8
    from tir.engines.contrast_gate import lowpass_ends

    assert r.status()["contrast"]["tone_reference"] == pytest.approx(list(lowpass_ends(ramp(0.6))), abs=1e-4)
    flat = ramp(0.15)[None, None]                       # a quarter of the camera's contrast
    out = r.infer(flat)
    assert r.status()["task"] == "CB" and r.status()["contrast"]["aligned"] == 1
    assert np.allclose(out, ramp(0.6)[None, None], atol=0.01)         # the camera's own frame again
    assert r.status()["contrast"]["tone_scale"] == pytest.approx(0.6 / 0.3, rel=0.01)
    normal = ramp(0.6)[None, None]
    r2 = scheduled(Restorer(gated_bundle, every=1, hysteresis=1))
    r2.warm_camera(np.stack([ramp(0.6)] * 30))
    # demoted to blur: no contrast route, no alignment; the blur route's ×3 moved the tone of a ramp no
    # blur changes, so it is no deblur and the frame comes back as it went in (K17, engines/blur_gate.py)
    assert np.allclose(r2.infer(normal), normal) and r2.status()["blur_tone_refused"] == 1
    assert r2.status()["task"] == "blur" and r2.status()["contrast"]["aligned"] == 0
    cold = scheduled(Restorer(gated_bundle, every=1, hysteresis=1))   # no history yet: the route's output as it is
    assert np.allclose(cold.infer(flat), flat * 2.0) and cold.status()["contrast"]["tone_reference"] is None


def test_tone_reference_is_the_camera_own_frames_and_align_keeps_what_it_cannot_map():
    from tir.engines.contrast_gate import MIN_TONE_EXTENT, lowpass_ends

    # loss_frames=1: every run of frames found low is a loss that set in (a run shorter than
    # loss_frames would be the camera's own scenes and join its tone, test_a_short_run_...)
    gate = ContrastGate({"contrast": CLEAN, "CN": "noise"}, prior=None, ratio=0.775,
                        tone_tasks=(CLEAN, "contrast"), loss_frames=1)
    for _ in range(8):
        gate.add(0.6, ends=(0.1, 0.9))                      # the camera's own frames
    assert gate.tone_reference() == pytest.approx((0.1, 0.9))
    # one contrast-degraded frame in five, each found low: held out of the camera's extents
    for _ in range(20):
        gate.step("contrast", 0.2, ends=(0.45, 0.55))       # contrast-degraded: low, not its tone
        for task in ("noise", "CN", "noise", "CN"):
            gate.step(task, 0.7, ends=(0.0, 1.0))           # noisy: wider extremes, not its tone
    assert gate.tone_reference() == pytest.approx((0.1, 0.9)) and len(gate.lows) == 8
    gate.step(CLEAN, 0.6, ends=(0.1, 0.92))                 # a normal frame joins
    assert len(gate.lows) == 9
    flat = np.full((1, 1, H, W), 0.5, np.float32)
    assert gate.align(flat) is flat or np.array_equal(gate.align(flat), flat)   # nothing to map
    bad = ramp(0.3)[None, None].copy()
    bad[0, 0, 0, 0] = np.nan
    assert np.isnan(gate.align(bad)[0, 0, 0, 0]) and gate.aligned == 0        # not finite: left alone
    y = gate.align(np.stack([ramp(0.3), ramp(0.3)])[:, None])
    assert gate.aligned == 2 and y.min() >= 0.0 and y.max() <= 1.0
    assert lowpass_ends(y[0]) == pytest.approx((0.1, 0.9), abs=1e-4)
    tiny = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775)
    for _ in range(8):
        tiny.add(0.0, ends=(0.5, 0.5 + MIN_TONE_EXTENT / 2))
    assert tiny.tone_reference() is None
    new = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775)
    new.carry_from(gate)
    assert new.tone_reference() == pytest.approx((0.1, 0.9)) and new.aligned == 2


def test_tone_spread_and_the_inverse_variance_ends_of_align():
    """tone_spread is the IQR / 1.349 of the camera's block lows and highs; align with own_sigma
    moves each end to w·camera + (1 − w)·own, w = own_sigma² / (own_sigma² + spread²)."""
    from tir.engines.contrast_gate import IQR_PER_SIGMA, lowpass_ends

    gate = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775)
    assert gate.tone_spread() is None
    lows = np.linspace(0.0, 0.4, 9)
    for lo in lows:
        gate.add(0.6, ends=(float(lo), 0.9))
    sd_lo, sd_hi = gate.tone_spread()
    assert sd_lo == pytest.approx((np.percentile(lows, 75) - np.percentile(lows, 25)) / IQR_PER_SIGMA)
    assert sd_hi == 0.0
    x = ramp(0.3)[None, None]
    lo_y, hi_y = lowpass_ends(x[0, 0])
    ref_lo, ref_hi = gate.tone_reference()
    y = gate.align(x, own_sigma=0.05)
    w = 0.05 ** 2 / (0.05 ** 2 + sd_lo ** 2)
    assert lowpass_ends(y[0, 0]) == pytest.approx((w * ref_lo + (1 - w) * lo_y, ref_hi), abs=1e-4)
    assert lowpass_ends(gate.align(x)[0, 0]) == pytest.approx((ref_lo, ref_hi), abs=1e-4)   # the camera's alone
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="own_sigma"):
            gate.align(x, own_sigma=bad)


def test_own_error_is_learned_from_the_cameras_restored_frames():
    """own_error starts at the prior; restored frames whose own ends fall far from the camera's
    (a route that removes the camera's own shading, a missed contrast loss) raise it, so the ends
    go to the camera's; ends that follow the camera's scenes keep it near the prior."""
    from tir.engines.contrast_gate import lowpass_ends

    gate = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775, prior_frames=8)
    for lo in np.linspace(0.0, 0.4, 9):
        gate.add(0.6, ends=(float(lo), 0.9))
    assert gate.own_error(0.05) == pytest.approx((0.05, 0.05))
    sd_lo = gate.tone_spread()[0]
    ref_lo = gate.tone_reference()[0]
    far = ramp(0.1)[None, None]            # ends near 0.45 / 0.55: far from the camera's 0.9 top
    lo_f, hi_f = lowpass_ends(far[0, 0])
    for _ in range(40):
        gate.align(far, own_sigma=0.05)
    e_lo, e_hi = gate.own_error(0.05)
    assert len(gate.own_devs) == 40
    # mean square of the deviations less the camera's spread², shrunk with 8 frames of the prior
    est_hi = (hi_f - 0.9) ** 2
    assert e_hi == pytest.approx(np.sqrt((8 * 0.05 ** 2 + 40 * est_hi) / 48), rel=1e-3) and e_hi > 0.3
    est_lo = max((lo_f - ref_lo) ** 2 - sd_lo ** 2, 0.0)
    assert e_lo == pytest.approx(np.sqrt((8 * 0.05 ** 2 + 40 * est_lo) / 48), rel=1e-3)
    y = gate.align(far, own_sigma=0.05)    # the high end now goes (almost) to the camera's
    assert lowpass_ends(y[0, 0])[1] == pytest.approx(0.9, abs=0.01)
    window = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775, window=4)
    for dev in [(0.1, 0.2), (0.3, 0.1), (0.0, 0.5), (0.2, 0.2), (0.4, 0.0), (0.1, 0.1)]:
        window._add_own(dev)                 # the running sums follow the window's last 4
    assert window._own_sq == pytest.approx([sum(d[0] ** 2 for d in window.own_devs),
                                            sum(d[1] ** 2 for d in window.own_devs)])
    new = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775)
    new.carry_from(gate)                     # a bundle hot-swap keeps what the camera taught
    assert new.own_error(0.05) == pytest.approx(gate.own_error(0.05))
    gate.restart()
    assert not gate.own_devs and gate.own_error(0.05) == pytest.approx((0.05, 0.05))


def test_restorer_gate_off_and_forced_task(gated_bundle):
    r = Restorer(gated_bundle, every=1, hysteresis=1, contrast_gate=False)
    assert r.contrast_gate is None and r.status()["contrast"] is None
    frame = ramp(0.6)[None, None]
    assert np.allclose(r.infer(frame), frame * 2.0) and r.status()["task"] == "CB"
    forced = Restorer(gated_bundle, task="CB")
    assert np.allclose(forced.infer(frame), frame * 2.0)   # a forced route is never gated
    # ... and says so: no gate in its status (the page hides the fact instead of "ref - · 0 demoted")
    assert forced.contrast_gate is None and forced.status()["contrast"] is None


def test_restorer_cold_start_uses_the_training_prior(gated_bundle):
    r = scheduled(Restorer(gated_bundle, every=1, hysteresis=1))
    assert r.contrast_gate.reference == 0.6
    r.infer(ramp(0.2)[None, None])                      # well below the prior: CB kept
    assert r.status()["task"] == "CB"
    r2 = scheduled(Restorer(gated_bundle, every=1, hysteresis=1))
    r2.infer(ramp(0.6)[None, None])                     # at the prior: not low, demoted
    assert r2.status()["task"] == "blur" and r2.route != PASSTHROUGH


def test_student_prompt_mix_follows_the_gate(gated_bundle, monkeypatch):
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["CB", "blur", "contrast"]))
    r = Restorer(gated_bundle, every=1, hysteresis=1)
    r.contrast_gate.partners["contrast"] = CLEAN
    w = np.array([0.5, 0.2, 0.3], np.float32)
    r._contrast_low = True
    assert np.allclose(r._gate_prompt(w, "CB"), w)                       # low contrast: as the router said
    r._contrast_low = False
    assert np.allclose(r._gate_prompt(w, "blur"), [0.0, 1.0, 0.0])      # CB -> blur, contrast -> dropped
    assert np.allclose(r._gate_prompt(np.array([0, 0, 1], np.float32), "blur"), [0, 1, 0])  # nothing left


def test_manifest_refuses_a_bad_contrast_prior():
    from tir.engines.bundle import validate_manifest

    base = {"format_version": 1, "name": "x", "tasks": [], "router": None}
    router = {"file": "router.onnx", "sha256": "0" * 64, "codebook": [[1.0]], "tasks": ["clean"]}
    for bad in ({"median": 0.0}, {"median": "0.5"}, {"median": 2.0}, [0.5]):
        problems = validate_manifest({**base, "router": {**router, "contrast_span": bad}})
        assert any("contrast_span" in p for p in problems), bad
    assert not any("contrast_span" in p for p in validate_manifest({**base, "router": {**router, "contrast_span": {"median": 0.5}}}))


def test_tir_run_shows_the_gate_in_stats_and_status_line(gated_bundle, tmp_path, capsys):
    from tir.edge.pipeline import Pipeline
    from tir.edge.pipeline.stats import ContrastStatus
    from tir.edge.sources import open_source
    from tir.tools.cli import main as tir
    from tir.tools.run import status_line

    source = "synthetic://?size=160x120&realtime=0&ffc=0"
    restorer = scheduled(Restorer(gated_bundle, every=1, hysteresis=1))
    snap = Pipeline(open_source(source), restorer, [], frames=6).run()
    # the stretched synthetic scene spans most of [0, 1]: not low against the prior 0.6, so every
    # CB verdict is demoted to blur, and the typed section says so
    assert isinstance(snap.contrast, ContrastStatus) and snap.contrast.stats_error is None
    # (the model may see a frame or two more than reach the outputs: count what it routed)
    routed = snap.model["decisions"]
    assert routed >= 6 and snap.contrast.demoted == restorer.contrast_gate.demoted == routed
    assert snap.contrast.frames == routed and snap.contrast.reference > 0.6   # pulled up from the prior
    assert snap.contrast.ratio == pytest.approx(math.sqrt(0.6), abs=1e-4) and snap.task == "blur"
    assert f"contrast gate demoted {routed}" in status_line(snap)
    assert "contrast gate" not in status_line({**snap.to_dict(), "contrast": {"demoted": 0}})
    off = Pipeline(open_source(source), Restorer(gated_bundle, contrast_gate=False), [], frames=2).run()
    assert off.contrast is None and "contrast gate" not in status_line(off)

    code = tir(["run", "--model", str(gated_bundle), "--source", source, "--frames", "12",
                "--output", f"file://{tmp_path / 'rec'}?preview=0"])
    out = capsys.readouterr()
    assert code == 0, out.err
    final = [line for line in out.out.splitlines() if line.startswith("fps")][-1]
    # CB demoted to blur on the virtual camera's normal contrast; that blur verdict held while the
    # blur gate had no reference of this camera, then found not soft for it: pass-through
    assert "contrast gate demoted" in final and "task passthrough" in final
    assert "blur held before the camera's reference" in final and "blur gate demoted" in final


def test_a_bundle_hot_swap_keeps_the_cameras_contrast_history(gated_bundle, tmp_path):
    import json
    import shutil

    from tir.engines.hotswap import HotSwapRestorer

    folder = tmp_path / "bundle"
    shutil.copytree(gated_bundle, folder)
    make = lambda path: scheduled(Restorer(path, every=1, hysteresis=1))  # noqa: E731
    hs = HotSwapRestorer(make(folder), make)
    try:
        hs.warm_camera(np.stack([ramp(0.2)] * 40))      # a low-contrast camera: its spans ≈ 0.2
        hs.infer(ramp(0.2)[None, None])                  # normal for this camera: CB -> blur
        before = hs.status()["contrast"]
        assert before["demoted"] == 1 and before["frames"] == 41 and before["reference"] < 0.3
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "version": 2}))
        assert hs.request_reload() and hs.wait_loaded() and hs.reload_state == "ready"
        hs.infer(ramp(0.2)[None, None])                  # the swap, then this frame on the new bundle
        after = hs.status()["contrast"]
        assert hs.swaps == 1 and hs.bundle.version == 2
        # a cold gate would judge this frame against the prior 0.6 and keep CB; the camera's history
        # (carried) says 0.2 is its normal: demoted again, and the count goes on
        assert after["frames"] == 42 and after["demoted"] == 2 and after["reference"] == pytest.approx(
            before["reference"], rel=0.05)
        assert hs.status()["task"] == "blur"
    finally:
        hs.close()


def test_extent_sees_the_hot_spots_a_flat_scene_keeps():
    """A flat scene with a few warm targets at the top of the scale: its 8×8-block span is low, its
    extent (the hottest few 4×4 blocks) is not; the contrast op compresses both."""
    from tir.engines.contrast_gate import lowpass_extent

    x = np.full((512, 640), 0.35, np.float32)
    x += np.linspace(0, 0.2, 640, dtype=np.float32)[None, :]
    for cy, cx in ((100, 100), (300, 420), (400, 200), (50, 600), (250, 300)):
        x[cy:cy + 6, cx:cx + 6] = 0.98                     # targets of 6×6 px
    assert lowpass_span(x) < 0.3 and lowpass_extent(x) > 0.6
    degraded = 0.4 * x + 0.15
    assert lowpass_extent(degraded) == pytest.approx(0.4 * lowpass_extent(x), rel=1e-3)
    assert lowpass_extent(x[None, None]) == pytest.approx(lowpass_extent(x))


def test_gate_judges_the_extent_once_the_camera_has_one():
    gate = ContrastGate({"contrast": CLEAN, "CN": "noise"}, prior=None, ratio=0.775)
    for _ in range(7):
        gate.add(0.6, 0.95)
    assert gate.extent_reference is None                        # fewer than prior_frames extents
    assert gate.judge("contrast", 0.3, 0.95) == "contrast"      # so the span alone decides
    assert gate.judge("contrast", 0.6, 0.3) == CLEAN
    gate.add(0.6, 0.95)
    assert gate.extent_reference == pytest.approx(0.95)
    assert gate.judge("contrast", 0.3, 0.95) == CLEAN           # flat scene, hot spots at the top
    assert gate.judge("contrast", 0.3, 0.5) == "contrast"       # extremes compressed: a contrast loss
    assert gate.judge("contrast", 0.6, 0.5) == "contrast"       # whatever the scene's bulk does
    assert gate.judge("CN", 0.6, 0.5) == "CN"                   # the same rule under noise
    assert gate.judge("CN", 0.3, 0.9) == "noise"
    assert gate.judge("contrast", 0.3) == "contrast"            # no extent given: the span decides
    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    assert ContrastGate.for_bundle(specs, None).is_low(0.3, None) is False   # no prior, no history


def test_extent_averages_noise_on_a_small_camera():
    """On a 160×120 frame the blocks stay 4×4 px: white noise does not widen the extent the way it does
    when each cell is one pixel, so a contrast loss under noise is still seen."""
    from tir.engines.contrast_gate import lowpass_extent

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160].astype(np.float32)
    scene = 0.3 + 0.4 * (0.5 + 0.5 * np.sin(xx / 9.0) * np.cos(yy / 13.0))
    noisy = scene + rng.normal(0.0, 15 / 255, scene.shape).astype(np.float32)
    # the mildest contrast loss of the spec (α = 0.6), then the same noise
    degraded = 0.6 * scene + 0.2 + rng.normal(0.0, 15 / 255, scene.shape).astype(np.float32)
    per_pixel = lowpass_extent(degraded, min_block=1) / lowpass_extent(noisy, min_block=1)
    blocks = lowpass_extent(degraded) / lowpass_extent(noisy)
    assert per_pixel > 0.775 > blocks        # one cell per pixel hides the loss; 4×4 blocks show it
    assert lowpass_extent(np.zeros((3, 3), np.float32)) == 0.0    # smaller than a block: one cell
    with pytest.raises(ValueError, match="min_block"):
        lowpass_extent(scene, min_block=0)


def test_carry_from_takes_the_extents():
    gate = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775)
    for _ in range(8):
        gate.add(0.6, 0.95)
    new = ContrastGate({"contrast": CLEAN}, prior=None, ratio=0.775)
    new.carry_from(gate)
    assert list(new.extents) == list(gate.extents) and new.status()["extent_reference"] == pytest.approx(0.95)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [(0, 0), (-1, -1), (31, 40)])
def test_span_and_extent_refuse_a_non_finite_frame(value, where):
    """A NaN or inf anywhere (frames from a source are integer counts: a caller's bug) is refused
    with one clear error, not returned as a NaN span that the history then counts."""
    from tir.engines.contrast_gate import lowpass_extent

    x = ramp(0.5)
    x[where] = value
    for measure in (lowpass_span, lowpass_extent):
        with pytest.raises(ValueError, match="NaN, infinite"):
            measure(x)
    with pytest.raises(ValueError, match="NaN, infinite"):
        lowpass_span(np.full((2, 2), 1e300))                    # float64 beyond float32: inf
    with pytest.raises(ValueError, match="float32-overflowing"):   # finite, but the cell means overflow
        lowpass_span(np.random.default_rng(0).random((512, 640)).astype(np.float32) * 3.3e38)


@pytest.mark.parametrize("shape", [(0, 0), (0, 10), (1, 0)])
def test_span_and_extent_refuse_an_empty_frame(shape):
    from tir.engines.contrast_gate import lowpass_extent

    for measure in (lowpass_span, lowpass_extent):
        with pytest.raises(ValueError, match="frame with pixels"):
            measure(np.zeros(shape, np.float32))


def test_tone_deploy_runs_the_partner_and_the_camera_tone(gated_bundle):
    """deploy 'tone' on CB: with the camera's tone reference the blur route runs (the CB route is
    never loaded) and the tone map restores the contrast part; before the reference exists, the CB
    route itself runs. A table may put 'tone' only on a contrast-carrying task."""
    table = {"CB": "tone", "blur": "routes"}
    r = Restorer(gated_bundle, every=1, hysteresis=1, deploy=table)
    assert r.deploy == "auto" and r.deploy_tasks == table
    r.warm_camera(np.stack([ramp(0.6)] * 30))
    flat = ramp(0.15)[None, None]
    out = r.infer(flat)
    s = r.status()
    assert s["task"] == "CB" and s["runs"] == "tone+route" and r.loaded_routes == ["blur"]
    assert np.allclose(out, ramp(0.6)[None, None], atol=0.01) and s["contrast"]["aligned"] == 1
    cold = Restorer(gated_bundle, every=1, hysteresis=1, deploy=table)   # no tone reference yet
    assert np.allclose(cold.infer(flat), flat * 2.0)
    assert cold.status()["runs"] == "route" and cold.loaded_routes == ["CB"]
    off = Restorer(gated_bundle, every=1, hysteresis=1, deploy=table, tone_align=False)
    off.warm_camera(np.stack([ramp(0.6)] * 30))
    assert np.allclose(off.infer(flat), flat * 2.0) and off.loaded_routes == ["CB"]   # no tone map: the route
    with pytest.raises(ValueError, match=r"runs \['blur'\] by the camera's tone, but only a contrast-carrying "
                                         r"task with a partner may \(here: CB\)"):
        Restorer(gated_bundle, deploy={"CB": "routes", "blur": "tone"})
    with pytest.raises(ValueError, match=r"lacks routes \['blur'\]"):
        Restorer(gated_bundle, deploy={"CB": "tone"})
    with pytest.raises(ValueError, match="runs the student on"):
        Restorer(gated_bundle, deploy={"CB": "student", "blur": "routes"})


def test_tone_deploy_of_a_task_whose_partner_is_clean_runs_no_network(tmp_path):
    routes = {"contrast": _export(Scale(2.0), tmp_path / "c.onnx")}
    router = _export(OneHotRouter(0, 2), tmp_path / "router.onnx")    # always contrast
    meta = {"name": "c", "tasks": [{"name": "contrast", "spec": {"name": "contrast",
                                                                 "steps": shipped_specs()["contrast"]}}],
            "router": {"codebook": np.eye(2).tolist(), "tasks": ["contrast", "clean"], "threshold": 0.5,
                       "temperature": 0.1, "input_size": [W, H], "contrast_span": {"median": 0.6}}}
    write_bundle(tmp_path / "bundle", routes, router, meta)
    r = Restorer(tmp_path / "bundle", every=1, hysteresis=1, deploy={"contrast": "tone"})
    r.warm_camera(np.stack([ramp(0.6)] * 30))
    r.preload(tasks=["contrast"], shape=(1, 1, H, W))   # nothing to load: the tone map alone
    out = r.infer(ramp(0.15)[None, None])
    assert r.status()["runs"] == "tone" and r.loaded_routes == []
    assert np.allclose(out, ramp(0.6)[None, None], atol=0.01)


@pytest.mark.parametrize("table", [None, {"CB": "tone", "blur": "routes"}])
def test_the_in_flight_infer_stage_restores_as_the_restorer_does(gated_bundle, table):
    """The TensorRT stage that keeps frames in flight (PipelinedInfer) takes the Restorer's plan:
    the same network (the partner under tone) and the same tone alignment as Restorer.infer."""
    from tir.edge.frame import Frame, now
    from tir.edge.pipeline.stages import _INPUT_KEY, _OUTPUT_KEY, PipelinedInfer

    warm = np.stack([ramp(0.6)] * 30)
    ref, staged = (Restorer(gated_bundle, every=1, hysteresis=1, deploy=table) for _ in range(2))
    ref.warm_camera(warm)
    staged.warm_camera(warm)
    work = PipelinedInfer(staged, in_flight=2)
    for k, amplitude in enumerate((0.15, 0.6, 0.2)):   # low (CB kept), normal (demoted to blur), low
        x = ramp(amplitude)
        frame = Frame(raw=np.zeros((H, W), np.uint16), seq=k, t_capture=now())
        frame.meta[_INPUT_KEY] = x.copy()
        work.submit(frame)
        got = work.collect()[0].meta[_OUTPUT_KEY]
        np.testing.assert_allclose(got, ref.infer(x[None, None]), atol=1e-6)
    assert staged.status()["contrast"]["aligned"] == ref.status()["contrast"]["aligned"] == 2
    assert staged.loaded_routes == ref.loaded_routes


def test_a_pinned_contrast_reference_does_not_move():
    gate = ContrastGate.for_bundle(shipped_specs(), None)
    for _ in range(20):
        gate.add(0.6, ends=(0.2, 0.8))
    gate.pinned = True
    ref = (gate.extent_reference, gate.tone_reference())
    for _ in range(30):
        assert gate.step("CN", 0.1, ends=(0.45, 0.55)) == ("CN", True)   # low for the pinned camera
    assert (gate.extent_reference, gate.tone_reference()) == ref and len(gate.extents) == 20
    new = ContrastGate.for_bundle(shipped_specs(), None)
    new.carry_from(gate)
    assert new.pinned


def test_tir_run_pins_the_reference_from_a_folder_or_the_virtual_camera(gated_bundle, tmp_path):
    import types

    from tir.edge.errors import UsageError
    from tir.edge.sources import open_source
    from tir.tools.run import pin_camera_reference

    folder = tmp_path / "healthy"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"{k}.png"), (ramp(0.6) * 255).astype(np.uint8))
    args = types.SimpleNamespace(reference=f"file://{folder}", reference_frames=2)
    r = Restorer(gated_bundle, every=1, hysteresis=1)
    said = pin_camera_reference(r, args, source=None)
    assert said == f"2 frames of file://{folder}" and r.status()["camera_reference"] == {"pinned": 2}
    assert r.contrast_gate.pinned and r.status()["contrast"]["frames"] == 2
    virtual = open_source("synthetic://?size=160x120&degrade=CB&realtime=0")
    r2 = Restorer(gated_bundle, every=1, hysteresis=1)
    default = types.SimpleNamespace(reference=None, reference_frames=4)
    assert pin_camera_reference(r2, default, virtual) == "4 clean frames of the virtual camera"
    assert pin_camera_reference(Restorer(gated_bundle), default, open_source("synthetic://?size=160x120")) is None
    off = types.SimpleNamespace(reference="none", reference_frames=4)
    assert pin_camera_reference(Restorer(gated_bundle), off, virtual) is None
    with pytest.raises(UsageError, match="--reference pins the gates of automatic routing"):
        pin_camera_reference(Restorer(gated_bundle, task="CB"), args, source=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="empty|no "):
        pin_camera_reference(Restorer(gated_bundle), types.SimpleNamespace(reference=f"file://{empty}",
                                                                          reference_frames=2), source=None)


def test_a_route_replaced_after_the_bundle_was_loaded_is_refused_at_first_use(gated_bundle, tmp_path):
    """Routes load lazily: a file changed between load_bundle and its first use is refused by its
    sha256, not run."""
    import shutil

    from tir.engines.bundle import BundleError

    folder = tmp_path / "copy"
    shutil.copytree(gated_bundle, folder)
    r = Restorer(folder, every=1, hysteresis=1)
    r.engine("CB")                                        # untouched: loads
    target = r.bundle.route_path("blur")
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"route-blur\.onnx changed since the bundle was loaded"):
        r.engine("blur")
    assert r.loaded_routes == ["CB"]


# --- promotion: a contrast loss the router did not name (docs/cameras.md K10) -------------------

def _agc_camera(n=20):
    """``n`` frames of an AGC'd camera: a ramp stretched (nearly) onto the full output range, its
    ends wandering by up to 3 % as a per-frame AGC's do."""
    return [ramp(1.0 - 0.03 * (i % 4) / 3.0) for i in range(n)]


def _shown(gate, frames):
    for f in frames:
        gate.add(lowpass_span(f), ends=lowpass_ends(f))


def test_gains_and_promote_ratio_come_from_the_specs():
    specs = shipped_specs()
    # blur is left out: a blur lowers a frame's extent by itself
    assert contrast_gains(specs) == {CLEAN: "contrast", UNKNOWN: "contrast", "noise": "CN", "BN": "CBN"}
    gate = ContrastGate.for_bundle(specs, None)
    assert gate.promote_ratio == pytest.approx(0.6) and gate.gains == contrast_gains(specs)
    assert contrast_gains({"blur": specs["blur"]}) == {}
    assert ContrastGate({"contrast": CLEAN}, None, 0.775).gains == {}       # none given: never promotes
    with pytest.raises(ValueError):
        ContrastGate({"contrast": CLEAN}, None, 0.775, promote_ratio=0.8)   # above the veto's ratio


def test_gate_promotes_a_compressed_frame_not_a_small_scene_stretched_or_at_the_cameras_end():
    gate = ContrastGate.for_bundle(shipped_specs(), None)
    compressed = ramp(1.0) * 0.4 + 0.15                    # x·α + β after the AGC: both ends inside
    ends = lowpass_ends(compressed)
    # nothing known about the camera yet: do no harm
    assert gate.judge(CLEAN, lowpass_span(compressed), ends=ends) == CLEAN and gate.promoted == 0
    _shown(gate, _agc_camera())
    span = lowpass_span(compressed)
    for verdict, promoted in ((CLEAN, "contrast"), (UNKNOWN, "contrast"), ("noise", "CN"), ("BN", "CBN"),
                              ("blur", "blur"), ("contrast", "contrast")):
        assert gate.judge(verdict, span, ends=ends) == promoted, verdict
    assert gate.promoted == 4 and gate.demoted == 0
    # a small scene span the AGC stretched (a flat wall with a few hot and cold blocks): its ends are the camera's
    wall = np.full((H, W), 0.5, np.float32)
    wall[:8, :8], wall[-8:, -8:] = 0.0, 1.0
    assert gate.judge(CLEAN, lowpass_span(wall), ends=lowpass_ends(wall)) == CLEAN
    # a cold scene whose low end is at the camera's (extent 0.43 of the camera's): not a compression
    cold = ramp(0.45, mean=0.225)
    assert lowpass_extent(cold) < 0.6 * gate.extent_reference
    assert gate.judge(CLEAN, lowpass_span(cold), ends=lowpass_ends(cold)) == CLEAN
    # the dead band: 0.7 of the camera's extent is neither demoted nor promoted
    mild = ramp(0.7)
    assert gate.judge(CLEAN, lowpass_span(mild), ends=lowpass_ends(mild)) == CLEAN
    assert gate.judge("contrast", lowpass_span(mild), ends=lowpass_ends(mild)) == "contrast"
    assert gate.promoted == 4
    # without the frame's ends there is no promotion
    assert gate.judge(CLEAN, span, extent=lowpass_extent(compressed)) == CLEAN
    status = gate.status()
    assert status["promoted"] == 4 and status["promote_ratio"] == pytest.approx(0.6)


def test_gate_step_promotes_and_keeps_the_compressed_frame_out_of_the_tone():
    gate = ContrastGate.for_bundle(shipped_specs(), None)
    _shown(gate, _agc_camera())
    tone = gate.tone_reference()
    compressed = ramp(1.0) * 0.3 + 0.2
    task, low = gate.step(UNKNOWN, lowpass_span(compressed), ends=lowpass_ends(compressed))
    assert (task, low) == ("contrast", True) and gate.promoted == 1
    assert len(gate.lows) == 20 and gate.tone_reference() == tone and len(gate.extents) == 21
    assert len(gate.end_lows) == 20                                    # not the camera's own ends either
    # a camera the router calls noisy: its frames' ends are the camera's, though not its tone
    noisy = ContrastGate.for_bundle(shipped_specs(), None)
    for f in _agc_camera():
        assert noisy.step("noise", lowpass_span(f), ends=lowpass_ends(f)) == ("noise", False)
    assert noisy.tone_reference() is None and len(noisy.end_lows) == 20
    assert noisy.step(UNKNOWN, lowpass_span(compressed), ends=lowpass_ends(compressed))[0] == "contrast"
    old = ContrastGate.for_bundle(shipped_specs(), None)
    old.carry_from(gate)
    assert old.promoted == 1 and list(old.end_lows) == list(gate.end_lows)


@pytest.fixture(scope="module")
def unknown_bundle(tmp_path_factory):
    """Routes contrast (×2) and noise (×5); a router that names nothing it knows."""
    return one_hot_bundle(tmp_path_factory.mktemp("promote"), {"contrast": 2.0, "noise": 5.0}, "contrast", H, W,
                          unknown=True)


def test_restorer_routes_a_compressed_frame_the_router_did_not_know_to_contrast(unknown_bundle):
    from tir.edge.pipeline.stats import ContrastStatus
    from tir.tools.run import status_line

    r = Restorer(unknown_bundle, every=1, hysteresis=1, tone_align=False, fpn_gate=False, blur_gate=False)
    assert r.contrast_gate.gains == {CLEAN: "contrast", UNKNOWN: "contrast"}   # no CN route: noise stays
    r.warm_camera(np.stack(_agc_camera(30)))
    frame = ramp(1.0) * 0.4 + 0.15
    r.reset()
    out = r.infer(frame[None, None])
    s = r.status()
    # measured, not a guess: the unknown verdict is not dropped to pass-through as unsure
    assert s["decision"] == "contrast" and s["task"] == "contrast" and s["gated_from"] == UNKNOWN
    assert np.allclose(out, frame[None, None] * 2.0) and r.last_decision["contrast_promoted"] is True
    assert s["contrast"]["promoted"] == 1
    assert ContrastStatus(**s["contrast"]).promoted == 1        # /stats.json's typed section
    assert "contrast gate promoted 1" in status_line({"contrast": s["contrast"]})
    # the camera's own frame is not touched: pass-through
    r.reset()
    clean = _agc_camera(1)[0][None, None]
    assert np.allclose(r.infer(clean), clean) and r.route == PASSTHROUGH and r.status()["contrast"]["promoted"] == 1


def test_student_prompt_mix_follows_a_promotion(gated_bundle, monkeypatch):
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["contrast", "noise", "CN"]))
    r = Restorer(gated_bundle, every=1, hysteresis=1)
    r.contrast_gate.gains = {"noise": "CN", CLEAN: "contrast"}
    w = np.array([0.1, 0.6, 0.3], np.float32)
    r._contrast_low, r._contrast_promoted = True, False
    assert np.allclose(r._gate_prompt(w, "noise"), w)
    r._contrast_promoted = True
    assert np.allclose(r._gate_prompt(w, "CN"), [0.1, 0.0, 0.9])       # noise -> CN


def test_a_frame_flatter_than_the_strongest_contrast_loss_is_not_promoted(unknown_bundle):
    """A constant frame (a lens cap, a shutter, a uniform wall the normaliser keeps at its
    ``min_span``) and a flat frame with sensor noise have an extent far below what the specs'
    strongest contrast loss (α = 0.2) leaves of the flattest frame not low for this camera (0.2 ×
    0.775 of the camera's extent), with both ends inside the camera's:
    they were promoted to the contrast route, which stretches their noise. Nothing was compressed
    that the route knows how to give back: no promotion below ``promote_floor`` × the camera's
    extent; a frame compressed within the specs' range still is."""
    from tir.engines.contrast_gate import min_contrast_factor

    specs = shipped_specs()
    assert min_contrast_factor(specs.values()) == pytest.approx(0.2)
    gate = ContrastGate.for_bundle(specs, None)
    assert gate.promote_floor == pytest.approx(0.2 * math.sqrt(0.6))
    _shown(gate, _agc_camera())
    noise = np.random.default_rng(0).normal(0.0, 0.01, (H, W)).astype(np.float32)
    for flat in (np.full((H, W), 0.5, np.float32), 0.5 + noise, np.full((1, W), 0.4, np.float32),
                 np.full((2, 2), 0.5, np.float32)):
        assert gate.judge(CLEAN, lowpass_span(flat), ends=lowpass_ends(flat)) == CLEAN
        assert gate.judge(UNKNOWN, lowpass_span(flat), ends=lowpass_ends(flat)) == UNKNOWN
    strongest = ramp(1.0) * 0.18 + 0.4                    # α = 0.2 on a frame 0.9 of the camera's
    assert gate.judge(CLEAN, lowpass_span(strongest), ends=lowpass_ends(strongest)) == "contrast"
    assert gate.promoted == 1
    with pytest.raises(ValueError):
        ContrastGate({"contrast": CLEAN}, None, 0.775, promote_ratio=0.6, promote_floor=0.6)
    # through the Restorer: the constant frame passes through
    r = Restorer(unknown_bundle, every=1, hysteresis=1, tone_align=False, fpn_gate=False, blur_gate=False)
    r.warm_camera(np.stack(_agc_camera(30)))
    r.reset()
    const = np.full((1, 1, H, W), 0.5, np.float32)
    assert np.array_equal(r.infer(const), const) and r.status()["contrast"]["promoted"] == 0


def _textured(amplitude, seed=0, mean=0.5):
    """A ramp of ``amplitude`` around ``mean`` with a fixed sharp texture (±10 % of it, in 2×2-pixel
    cells: per-pixel values alone are white noise, which reads as no scene, restorer.scene_free): a
    scene with detail at every scale, the blur gate's measure of which does not depend on the contrast."""
    tex = np.random.default_rng(seed).uniform(-0.1, 0.1, (H // 2, W // 2)).repeat(2, 0).repeat(2, 1).astype(np.float32)
    return (ramp(amplitude, mean) + amplitude * tex).astype(np.float32)


def test_a_blur_verdict_on_a_compressed_sharp_frame_becomes_the_contrast_route(tmp_path):
    """The router calls a contrast-compressed frame ``blur``. The contrast gate does not promote
    blur verdicts (a blur lowers the extent by itself), and the blur gate, finding the frame not
    soft for this camera, made it ``clean``: the frame passed through with its contrast lost. Once
    the blur gate has ruled the blur out, the contrast gate's test stands: contrast route."""
    bundle = one_hot_bundle(tmp_path, {"contrast": 2.0, "blur": 3.0}, "blur", H, W)
    r = Restorer(bundle, every=1, hysteresis=1, tone_align=False, fpn_gate=False)
    assert r.blur_gate is not None and "blur" not in r.contrast_gate.gains
    r.warm_camera(np.stack([_textured(0.8 - 0.02 * (i % 4), seed=i % 3) for i in range(30)]))
    r.reset()
    frame = _textured(0.8, seed=0) * 0.4 + 0.3          # x·α + β: both ends inside the camera's
    out = r.infer(frame[None, None])
    s = r.status()
    assert s["gated_from"] == "blur" and s["decision"] == "contrast" and r.route == "contrast"
    assert np.allclose(out, frame[None, None] * 2.0) and s["contrast"]["promoted"] == 1
    # the camera's own sharp frame called blur: made clean, not promoted
    r.reset()
    own = _textured(0.8, seed=1)[None, None]
    assert np.array_equal(r.infer(own), own) and r.status()["contrast"]["promoted"] == 1


def _fixed_gain_camera(n=20):
    """``n`` frames of a camera without AGC (manual gain and level): each scene at its own place
    on the scale (level 0.35-0.63) and of its own width (extent 0.03-0.08), as the scene's
    temperatures put it."""
    rng = np.random.default_rng(5)
    return [ramp(rng.uniform(0.03, 0.08), mean=rng.uniform(0.35, 0.63)) for _ in range(n)]


def test_a_camera_whose_ends_wander_keeps_its_narrow_scenes():
    """Round 5's manual-AGC camera: a narrow scene of a camera whose frames' ends move with the
    scene is not a contrast loss for it (the contrast verdict is demoted), while the same
    relative extent on an AGC camera, whose ends are pinned, still is."""
    specs = shipped_specs()
    fixed, agc = ContrastGate.for_bundle(specs, None), ContrastGate.for_bundle(specs, None)
    for gate, frames in ((fixed, _fixed_gain_camera()), (agc, _agc_camera())):
        for f in frames:
            gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    assert fixed.ends_wander() and not agc.ends_wander()
    narrow = ramp(0.5 * fixed.extent_reference, mean=0.4)
    assert lowpass_extent(narrow) < fixed.ratio * fixed.extent_reference
    assert fixed.judge("contrast", lowpass_span(narrow), ends=lowpass_ends(narrow)) == CLEAN
    assert fixed.judge("CB", lowpass_span(narrow), ends=lowpass_ends(narrow)) == "blur"
    half = ramp(0.5 * agc.extent_reference)
    assert agc.judge("contrast", lowpass_span(half), ends=lowpass_ends(half)) == "contrast"
    fresh = ContrastGate.for_bundle(specs, None)
    assert not fresh.ends_wander()                                   # nothing known: the veto as before


def test_a_camera_whose_extent_scatters_keeps_the_frames_inside_its_scatter():
    """A small sensor's block extremes follow the scene (round 1's seek_206x156: extent median
    0.70, robust σ 0.22): a frame under ``ratio`` × its median but inside its own scatter is the
    camera's, not a contrast loss (demoted, never promoted); one beyond the scatter still is."""
    specs = shipped_specs()
    rng = np.random.default_rng(2)
    gate = ContrastGate.for_bundle(specs, None)
    for a in rng.uniform(0.4, 1.0, 40):        # cold end pinned at 0 (the AGC's), hot end with the scene
        f = ramp(a, mean=a / 2)
        gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    assert not gate.ends_wander() and gate.extent_spread() > 0.1
    ref = gate.extent_reference
    inside = ramp(0.7 * ref, mean=0.35 * ref)
    assert lowpass_extent(inside) < gate.ratio * ref and not gate.beyond_scatter(lowpass_extent(inside))
    assert gate.judge("contrast", lowpass_span(inside), ends=lowpass_ends(inside)) == CLEAN
    assert gate.judge("CB", lowpass_span(inside), ends=lowpass_ends(inside)) == "blur"
    beyond = ramp(0.15 * ref, mean=0.3)
    assert gate.beyond_scatter(lowpass_extent(beyond))
    assert gate.judge("contrast", lowpass_span(beyond), ends=lowpass_ends(beyond)) == "contrast"
    fresh = ContrastGate.for_bundle(specs, None)
    assert fresh.extent_spread() is None and fresh.beyond_scatter(0.5)   # nothing known: the ratio decides


def _max_gain_frame(span_k, rng, gain=0.5 * 200 / 255, netd_counts=10.0, h=128, w=160):
    """A linear AGC capped at its maximum gain (Tau 2/Quark, thermal_io.md §4.1): a scene ramp of
    ``span_k`` K (200 counts/K) shown at ``gain`` grey/count (in frame units) around mid-grey, with
    the sensor's white noise (``netd_counts``) at the same gain whatever the span, quantised to 8 bits."""
    x = np.linspace(-0.5, 0.5, w)[None, :].repeat(h, axis=0) * span_k * 200.0
    counts = x + rng.normal(0.0, netd_counts, (h, w))
    return (np.clip(np.rint(128.0 + gain * counts * 255.0 / 200.0), 0, 255) / 255.0).astype(np.float32)


def test_a_max_gain_cameras_narrow_scene_keeps_its_noise_and_is_no_contrast_loss():
    """K23: a max-gain AGC's extent follows the scene's span but its noise stays the gain's; a
    contrast loss x·α + β scales the noise by α. A frame whose noise is at the camera's floor is
    neither low nor promoted; the same narrow frame compressed by the specs' contrast stays low;
    a floor under the 8-bit σ's resolution decides nothing."""
    from tir.engines.contrast_gate import NOISE_STEP
    from tir.engines.fpn_gate import FPNGate, flat_noise_sigma

    specs = shipped_specs()
    rng = np.random.default_rng(5)
    gate, fpn = ContrastGate.for_bundle(specs, None), FPNGate.for_bundle(specs)
    for span in rng.uniform(1.9, 2.1, 30):        # the camera's usual scenes: nearly one span
        f = _max_gain_frame(span, rng)
        fpn.step(CLEAN, f)
        gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f), noise=fpn.last_noise)
    floor = fpn.floor_sigma()[0]
    assert floor * 255 > 2.0 and (1 - gate.promote_ratio) * floor >= NOISE_STEP
    ref = gate.extent_reference
    narrow = _max_gain_frame(1.0, rng)                      # a night scene: half the span, the same noise
    assert lowpass_extent(narrow) < gate.ratio * ref and gate.beyond_scatter(lowpass_extent(narrow))
    own = (flat_noise_sigma(narrow), floor)
    assert gate.noise_kept(own)
    assert gate.judge("contrast", lowpass_span(narrow), ends=lowpass_ends(narrow)) == "contrast"   # extent alone
    assert gate.step("contrast", lowpass_span(narrow), ends=lowpass_ends(narrow), noise=own) == (CLEAN, False)
    assert gate.step("CB", lowpass_span(narrow), ends=lowpass_ends(narrow), noise=own) == ("blur", False)
    # the usual scene under the specs' mildest contrast loss: extent and noise both × 0.6, re-quantised
    usual = _max_gain_frame(2.0, rng)
    lost = (np.rint((usual * 0.6 + 0.15) * 255.0) / 255.0).astype(np.float32)
    compressed = (flat_noise_sigma(lost), floor)
    assert not gate.noise_kept(compressed)
    assert gate.step("contrast", lowpass_span(lost), ends=lowpass_ends(lost), noise=compressed) == ("contrast", True)
    # no floor, or one the 8-bit σ cannot resolve a loss from (an AGC'd JPEG camera's ~1 grey level)
    assert not gate.noise_kept(None)
    assert not gate.noise_kept((1.0 / 255, 1.0 / 255))
    assert not gate.noise_kept((float("nan"), floor))
    # a camera whose own σ₁ scatters as much as a loss moves it (a DDE camera's texture): no test
    assert gate.noise_kept((floor, floor, 0.0)) and not gate.noise_kept((floor, floor, 0.2 * floor))
    assert fpn.last_noise is not None and len(fpn.last_noise) == 4


def test_a_frame_noisier_than_the_camera_is_not_judged_by_its_noise():
    """K23's noise test: σ₁ above the camera's floor / ratio carries noise the camera does not
    show (added after a loss): it says nothing, the extent decides."""
    gate = ContrastGate.for_bundle(shipped_specs(), None)
    floor = 4.0 / 255
    assert gate.noise_kept((floor, floor, 0.0))
    assert not gate.noise_kept((2.5 * floor, floor, 0.0))
    assert not gate.noise_kept((0.5 * floor, floor, 0.0))
    # a camera whose own noise is as strong as the specs' weakest added noise (5 grey levels): a CN
    # frame reads as its own noise, so the test says nothing there
    assert gate.noise_kept((floor, floor, 0.0, 5.0 / 255))
    assert not gate.noise_kept((13.0 / 255, 13.0 / 255, 0.0, 5.0 / 255))


def test_a_sustained_contrast_loss_stays_low_until_it_is_most_of_the_history():
    """A contrast loss that sets in on a running camera (docs/cameras.md "Session 22"): its frames are
    held out of the camera's extent reference and scatter, so a loss lasting far longer than a quarter
    of the history is still found low (over every routed frame the quartiles took it in after a
    quarter: chips_lepton35 passed a sustained loss through after about a dozen verdicts, and the
    widened scatter then kept any later loss from being found); once such frames are most of the
    history they are the camera's look (adopted)."""
    specs = shipped_specs()
    gate = ContrastGate(contrast_partners(specs), None, math.sqrt(max_contrast_factor(specs.values())),
                        window=64, gains=contrast_gains(specs))
    rng = np.random.default_rng(5)
    for a in rng.uniform(0.9, 0.95, 40):                 # the camera's look: extent ~0.92, ends pinned
        f = ramp(a)
        gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    spread = gate.extent_spread()
    lows = []
    for a in rng.uniform(0.3, 0.5, 24):                  # a contrast loss x·α + β, both ends inward
        f = ramp(a)
        task, low = gate.step("contrast", lowpass_span(f), ends=lowpass_ends(f))
        lows.append(low and task == "contrast")
    assert all(lows)                                     # 24 of 64: past a quarter, still the loss
    assert gate.status()["holding"] == 24 and gate.status()["held"] == 24
    assert gate.extent_spread() == pytest.approx(spread) and gate.adopted == 0
    f = ramp(0.92)                                       # the loss stops: the camera's look again
    assert gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f)) == (CLEAN, False)
    assert gate.status()["holding"] == 0 and gate.status()["held"] == 24   # over; its frames still held out
    f = ramp(0.4)                                        # and the next loss is found at once
    assert gate.step("CN", lowpass_span(f), ends=lowpass_ends(f)) == ("CN", True)
    adopted = []
    for a in rng.uniform(0.3, 0.5, 40):                  # the loss lasts: most of the history
        f = ramp(a)
        adopted.append(gate.step("contrast", lowpass_span(f), ends=lowpass_ends(f))[1])
    assert gate.adopted == 1 and adopted[0] and not adopted[-1]
    assert gate.extent_reference < 0.6                   # the camera's look now
    gate.restart()
    assert len(gate.extent_low) == 0 and gate.extent_reference is None


def test_the_contrast_route_passes_through_a_frame_of_the_cameras_contrast_between_verdicts(tmp_path):
    """A contrast loss that stops (docs/cameras.md "Session 22"): the route waits for the router's
    verdicts (every 8 frames, hysteresis 3), but a frame whose contrast is not low for this camera
    is passed through by the contrast route at once (the contrast route stretched such frames onto
    the camera's tone, 18.6 dB from themselves); a compound route (CN) keeps its frames, the frames
    found low keep the route."""
    bundle = one_hot_bundle(tmp_path, {"contrast": 2.0, "CN": 3.0, "noise": 4.0}, "contrast", H, W)
    r = scheduled(Restorer(bundle, every=8, hysteresis=3, tone_align=False))
    r.warm_camera(np.stack([ramp(0.6)] * 30))          # the camera's look: 0.2 .. 0.8
    flat, normal = ramp(0.15)[None, None], ramp(0.6)[None, None]
    assert np.allclose(r.infer(flat), flat * 2.0) and r.route == "contrast"   # the loss: the route
    for _ in range(3):                                  # the loss stops; no verdict yet
        assert np.allclose(r.infer(normal), normal) and r.route == "contrast"
    assert r.status()["contrast_released"] == 3
    assert np.allclose(r.infer(flat), flat * 2.0)       # low again: the route again
    cn = scheduled(Restorer(tmp_path / "bundle", every=8, hysteresis=3, tone_align=False, task="CN"))
    cn.warm_camera(np.stack([ramp(0.6)] * 30))
    assert np.allclose(cn.infer(normal), normal * 3.0) and cn.status()["contrast_released"] == 0
    forced = Restorer(tmp_path / "bundle", tone_align=False, task="contrast")   # the user's choice: not gated
    forced.warm_camera(np.stack([ramp(0.6)] * 30))
    assert np.allclose(forced.infer(normal), normal * 2.0) and forced.status()["contrast_released"] == 0


def test_a_short_run_of_narrow_frames_is_the_cameras_own_scenes():
    """A small sensor whose extent follows its scenes (seek_206x156: a narrow scene now and then, runs
    of 1-3 routed frames): a run of frames found low that ends before ``loss_frames`` joins the
    camera's extents, so its scatter learns them (K20) and its narrow scenes stop being found low; a
    run that lasts stays held."""
    specs = shipped_specs()
    gate = ContrastGate(contrast_partners(specs), None, math.sqrt(max_contrast_factor(specs.values())),
                        window=128, gains=contrast_gains(specs), loss_frames=4)
    rng = np.random.default_rng(7)
    wide = lambda: ramp(rng.uniform(0.85, 0.95))
    narrow = lambda: ramp(rng.uniform(0.35, 0.5))
    for _ in range(20):
        f = wide()
        gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    found = []
    for _ in range(12):                                   # the camera's scenes: 3 wide, then 2 narrow
        for f in (wide(), wide(), wide(), narrow(), narrow()):
            found.append(gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))[1])
    assert any(found[:5]) and not any(found[-10:])       # learned: its narrow scenes are its own
    assert sum(gate.extent_low) == 0 and gate.adopted == 0 and gate.extent_spread() > 0.1
    assert len(gate.lows) == len(gate.end_lows) == 80    # the short runs' ends joined its ends and tone
    long_run = ContrastGate(contrast_partners(specs), None, gate.ratio, window=128, loss_frames=4)
    for _ in range(20):
        f = wide()
        long_run.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    for _ in range(4):
        f = narrow()
        long_run.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    f = wide()
    long_run.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    assert sum(long_run.extent_low) == 4                 # a run of loss_frames: a loss, held
    assert len(long_run.lows) == len(long_run.end_lows) == 21   # its ends are not the camera's
    with pytest.raises(ValueError, match="loss_frames"):
        ContrastGate({}, None, 0.7, loss_frames=0)


def test_a_loss_soon_after_the_start_is_not_adopted_before_most_of_a_window(caplog):
    """A contrast loss that sets in a few seconds after the start (session 22's break-test: 300 clean
    frames, then the loss): the history is short, and "most of the history" adopted the loss as the
    camera's look after as long as the camera had been clean; most of a full window it takes."""
    specs = shipped_specs()
    gate = ContrastGate(contrast_partners(specs), None, math.sqrt(max_contrast_factor(specs.values())),
                        window=64, gains=contrast_gains(specs))
    rng = np.random.default_rng(9)
    for a in rng.uniform(0.9, 0.95, 10):                 # ten routed frames of the camera's look
        f = ramp(a)
        gate.step(CLEAN, lowpass_span(f), ends=lowpass_ends(f))
    found = []
    with caplog.at_level("INFO", logger="tir.engines.contrast_gate"):
        for a in rng.uniform(0.3, 0.5, 40):
            f = ramp(a)
            found.append(gate.step("contrast", lowpass_span(f), ends=lowpass_ends(f))[1])
    assert all(found[:32]) and gate.adopted == 1 and not found[-1]   # adopted at 33 of a 64-frame window
    assert "taken as its look" in caplog.text                         # said where people look
