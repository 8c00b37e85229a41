"""The FPN gate: a frame that carries the column fixed-pattern noise of an uncalibrated FPA gets
the noise part added to its verdict (engines/fpn_gate.py), in the Restorer, its status and the
live page's stats."""
import cv2
import numpy as np
import pytest
from tiny_models import one_hot_bundle, scheduled

from tir.engines import degrade as deg
from tir.engines.fpn_gate import (AMPLITUDE, CONSISTENCY, MIN_FLOOR_FRAMES, NO_PATTERN, PERIODICITY, FPNGate,
                                  carries_fpn, column_pattern, noise_partners)
from tir.engines.restorer import Restorer
from tir.engines.router import CLEAN, UNKNOWN

H, W = 120, 160


def scene(h=H, w=W, seed=0):
    """A thermal-like scene in [0, 1]: a smooth gradient, warm blobs, a few vertical poles that
    fill part of the frame's height (scene structure that is column-aligned but not FPN), and
    mild white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    s = w / 160.0                                                  # the same scene at any size
    x = 0.3 + 0.2 * yy / h + 0.05 * np.sin(yy / (9.0 * s))
    for cx, cy, r in zip(rng.uniform(0, w, 12), rng.uniform(0, h, 12), rng.uniform(3, 12, 12) * s):
        x[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0.6, 0.9)
    pole = max(int(round(3 * s)), 1)
    for cx in rng.choice(w - pole - 1, 5, replace=False):         # poles: top 40-70 % of the frame
        x[: int(h * rng.uniform(0.4, 0.7)), cx:cx + pole] = 0.85
    x += rng.normal(0, 0.004, x.shape)
    return np.clip(x, 0, 1).astype(np.float32)


def with_column_fpn(x, rel, seed=1):
    """``x`` plus a per-column offset of standard deviation ``rel`` × the scene span (the
    ``sensor_fpn`` op's convention)."""
    lo, hi = np.percentile(x, (1, 99))
    offsets = np.random.default_rng(seed).normal(0, rel * (hi - lo), (1, x.shape[1]))
    return (x + offsets).astype(np.float32)


def test_column_pattern_tells_column_fpn_from_scene_structure():
    clean = scene()
    p = column_pattern(clean)
    assert not carries_fpn(p) and p.amplitude < 0.005              # poles and edges are not FPN
    for rel in (0.015, 0.025, 0.04):                                # what non-NUC'd sensors show
        q = column_pattern(with_column_fpn(clean, rel))
        assert carries_fpn(q), (rel, q)
        assert q.amplitude == pytest.approx(rel, rel=0.35) and q.consistency > 0.7
    weak = column_pattern(with_column_fpn(clean, 0.003))            # a NUC'd camera's residual
    assert not carries_fpn(weak)
    assert column_pattern(clean[None, None]) == p
    flat = column_pattern(np.full((H, W), 0.5, np.float32))
    assert flat.amplitude == 0.0 and flat.consistency == 0.0 and not carries_fpn(flat)


def test_column_pattern_holds_at_any_size_and_brightness():
    for h, w in ((60, 80), (256, 320), (512, 640), (1024, 1280)):
        base = scene(h, w, seed=h)
        assert not carries_fpn(column_pattern(base)), (w, h)
        if h >= 120:   # 80×60: 15-row bands leave the consistency near its threshold
            assert carries_fpn(column_pattern(with_column_fpn(base, 0.025))), (w, h)
    base = scene()
    # relative to the scene's span: a contrast change scales FPN and span alike
    assert column_pattern(with_column_fpn(base, 0.025) * 0.3 + 0.2).amplitude == pytest.approx(
        column_pattern(with_column_fpn(base, 0.025)).amplitude, rel=0.05)


def test_row_noise_and_white_noise_are_not_column_fpn():
    base = scene()
    rows = base + np.random.default_rng(2).normal(0, 0.02, (H, 1)).astype(np.float32)
    assert not carries_fpn(column_pattern(rows))
    white = base + np.random.default_rng(3).normal(0, 0.03, base.shape).astype(np.float32)
    assert not carries_fpn(column_pattern(white))   # strong, but not the same in every band


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 4, 5), np.float32), np.zeros(10, np.float32)])
def test_column_pattern_refuses_what_is_not_one_frame(bad):
    with pytest.raises(ValueError):
        column_pattern(bad)


@pytest.mark.parametrize("shape", [(3, 640), (1, 640), (2, 2), (24, 32), (120, 16)])
def test_a_frame_too_small_to_measure_has_no_pattern(shape):
    """Fewer than two bands of 16 rows, or fewer than 32 columns: nothing can be told from
    scene, so no pattern (never an error that would stop `tir run`)."""
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    assert column_pattern(x) == NO_PATTERN
    assert column_pattern(with_column_fpn(x, 0.05)) == NO_PATTERN


def test_a_frame_with_non_finite_values_has_no_pattern():
    x = with_column_fpn(scene(), 0.03)
    x[10:20, 30:40] = np.nan
    assert column_pattern(x) == NO_PATTERN
    x[10:20, 30:40] = np.inf
    assert column_pattern(x) == NO_PATTERN


def test_a_periodic_full_height_structure_is_scene_not_fpn():
    """A fence, blinds or a facade filling the frame repeats from column to column; an FPA's
    column offsets do not. The noise route would erase the fence, so it must not be called FPN."""
    rng = np.random.default_rng(7)
    h, w = 480, 640
    for period in (2, 3, 8, 11, 16, 40):
        bars = ((np.arange(w) % period) < max(period // 2, 1)) * 0.25 + 0.35
        x = np.clip(np.tile(bars, (h, 1)) + rng.normal(0, 0.008, (h, w)), 0, 1).astype(np.float32)
        p = column_pattern(x)
        assert p.periodicity >= PERIODICITY and not carries_fpn(p), (period, p)
        assert np.isfinite(p.amplitude) and p.amplitude < 10.0   # the span sees every column


def test_random_column_offsets_are_not_periodic():
    # white offsets over as few as 80 columns stay below the periodicity threshold (20 draws)
    for seed in range(20):
        q = column_pattern(with_column_fpn(scene(120, 160, seed=seed), 0.025, seed=seed))
        assert q.periodicity < PERIODICITY, (seed, q)
    for seed in range(20):
        x = scene(60, 80, seed=seed) + np.random.default_rng(seed).normal(0, 0.02, (1, 80)).astype(np.float32)
        assert column_pattern(x).periodicity < PERIODICITY, seed


def test_thresholds_sit_between_corrected_and_uncorrected():
    assert 0.005 < AMPLITUDE < 0.015 and 0.0 < CONSISTENCY < 1.0
    with pytest.raises(ValueError):
        FPNGate({}, amplitude=0.0)
    with pytest.raises(ValueError):
        FPNGate({}, consistency=1.0)
    with pytest.raises(ValueError):
        FPNGate({}, periodicity=0.0)


def test_noise_partners_come_from_the_specs():
    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    assert noise_partners(specs) == {CLEAN: "noise", UNKNOWN: "noise", "contrast": "CN", "blur": "BN",
                                     "CB": "CBN"}
    assert noise_partners({t: specs[t] for t in ("contrast", "blur", "CB")}) == {}   # no noise task
    # a task tir learn adds, with and without the noise part, is paired the same way
    haze = [{"op": "haze", "strength": [0.2, 0.5]}]
    learned = {**specs, "haze": haze, "haze_noise": haze + specs["noise"]}
    assert noise_partners(learned)["haze"] == "haze_noise"


# --- the Restorer ------------------------------------------------------------------------------

def _bundle(tmp, say, unknown=False):
    """Routes blur (×3), BN (×5) and noise (×7) with the shipped specs; a router that always
    names ``say`` (one of blur, BN, noise, clean), or (``unknown``) nothing it knows."""
    return one_hot_bundle(tmp, {"blur": 3.0, "BN": 5.0, "noise": 7.0}, say, H, W, unknown)


@pytest.fixture(scope="module")
def blur_bundle(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("fpn_blur"), "blur")


def test_restorer_adds_the_noise_part_on_column_fpn(blur_bundle):
    r = scheduled(Restorer(blur_bundle, every=1, hysteresis=1, tone_align=False))
    assert r.fpn_gate.partners == {CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}
    clean = scene()[None, None]
    assert np.allclose(r.infer(clean), clean * 3.0) and r.status()["task"] == "blur"   # router as it says
    assert r.status()["fpn"]["promoted"] == 0 and r.status()["gated_from"] is None
    striped = white(with_column_fpn(scene(), 0.025), 8.0)[None, None]   # FPN and the specs' white noise
    assert np.allclose(r.infer(striped), striped * 5.0)
    s = r.status()
    assert s["task"] == "BN" and s["gated_from"] == "blur" and r.last_decision["fpn"] is True
    assert s["fpn"]["promoted"] == 1 and s["fpn"]["checked"] == 2 and s["fpn"]["amplitude"] > AMPLITUDE


def test_unknown_verdict_with_column_fpn_goes_to_the_noise_route(tmp_path):
    bundle = _bundle(tmp_path, "clean", unknown=True)
    r = Restorer(bundle, every=1, hysteresis=1, tone_align=False)
    clean = scene()[None, None]
    assert np.allclose(r.infer(clean), clean) and r.status()["unknown"]        # do no harm
    striped = white(with_column_fpn(scene(), 0.025), 8.0)[None, None]
    assert np.allclose(r.infer(striped), striped * 7.0) and r.status()["task"] == "noise"
    assert r.status()["gated_from"] == UNKNOWN


def test_gate_off_and_forced_task(blur_bundle):
    striped = with_column_fpn(scene(), 0.025)[None, None]
    off = scheduled(Restorer(blur_bundle, every=1, hysteresis=1, fpn_gate=False, tone_align=False))
    assert off.fpn_gate is None and off.status()["fpn"] is None
    assert np.allclose(off.infer(striped), striped * 3.0)
    forced = Restorer(blur_bundle, task="blur")
    assert forced.fpn_gate is None and np.allclose(forced.infer(striped), striped * 3.0)


def test_student_prompt_mix_gains_the_noise_part(blur_bundle, monkeypatch):
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["blur", "BN", "noise"]))
    r = scheduled(Restorer(blur_bundle, every=1, hysteresis=1))
    w = np.array([0.6, 0.1, 0.3], np.float32)
    r._fpn = False
    assert np.allclose(r._gate_prompt(w, "blur"), w)
    r._fpn = True
    assert np.allclose(r._gate_prompt(w, "BN"), [0.0, 0.7, 0.3])    # blur's weight moves to BN


def test_student_prompt_mix_loses_the_noise_part_the_gate_took(blur_bundle, monkeypatch):
    """The FPN gate gave BN back as blur (the camera's own noise, or column FPN alone): the
    student's noise-carrying prompts hand their weight to their partners without noise."""
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["blur", "BN", "noise"]))
    r = Restorer(blur_bundle, every=1, hysteresis=1)
    w = np.array([0.2, 0.7, 0.1], np.float32)
    r._noise_taken = True
    assert r.fpn_gate.without_noise == {"BN": "blur", "noise": CLEAN}
    assert np.allclose(r._gate_prompt(w, "blur"), [1.0, 0.0, 0.0])   # BN → blur; noise → clean (dropped)


def test_restorer_routes_a_three_row_frame(blur_bundle):
    """A 640×3 frame is routed (the router and the contrast gate take it) and the FPN gate does
    not stop the pipeline."""
    x = np.random.default_rng(0).random((1, 1, 3, 640)).astype(np.float32)
    r = Restorer(blur_bundle, every=1, hysteresis=1)
    assert r.infer(x).shape == x.shape and r.status()["fpn"]["checked"] == 1


def test_virtual_camera_frames_do_not_carry_column_fpn():
    """The virtual camera's clean frames (NUC'd: its FPN is corrected by the pipeline's own
    preprocessing) are not mistaken for an uncalibrated sensor."""
    from tir.edge.pipeline.stages import MODEL_INPUT_KEY, Preprocess
    from tir.edge.sources import open_source

    src = open_source("synthetic://?size=320x256&realtime=0&ffc=0")
    pre = Preprocess()
    try:
        for _ in range(6):
            frame = src.read()
            pre(frame)
            assert not carries_fpn(column_pattern(frame.meta[MODEL_INPUT_KEY]))
    finally:
        src.close()


def test_stats_and_status_line_show_the_gate(tmp_path):
    from tir.edge.pipeline.stats import FPNStatus, StatsSnapshot
    from tir.tools.run import status_line

    bundle = _bundle(tmp_path, "blur")
    r = Restorer(bundle, every=1, hysteresis=1)
    r.infer(white(with_column_fpn(scene(), 0.03), 8.0)[None, None])
    status = r.status()["fpn"]
    snap = StatsSnapshot(fpn=FPNStatus(**status))
    assert snap.to_dict()["fpn"]["promoted"] == 1
    assert "FPN gate promoted 1" in status_line(snap.to_dict())
    assert "FPN gate" not in status_line({**snap.to_dict(), "fpn": {"promoted": 0}})
    assert "white noise promoted 2" in status_line({**snap.to_dict(), "fpn": {"promoted": 0, "promoted_white": 2}})
    assert "white noise" not in status_line(snap.to_dict())
    assert "column FPN removed 3" in status_line({**snap.to_dict(), "fpn": {"promoted": 0, "destriped": 3}})
    line = status_line({**snap.to_dict(), "task": "passthrough", "model": {"runs": "destripe"}})
    assert "task passthrough [destripe]" in line                            # what runs it, when more than the route
    assert "[" not in status_line({**snap.to_dict(), "task": "blur", "model": {"runs": "route"}})


def test_unsure_noise_verdict_on_column_fpn_is_kept(tmp_path):
    """The router names BN but below the confidence floor: pass-through on a frame without FPN
    (do no harm), BN on a frame whose column FPN and white noise are measured (the noise part is
    certain); column FPN without that white noise: blur, the column offsets removed."""
    bundle = _bundle(tmp_path, "BN")
    # softmax of one-hot: BN 0.99986, each other class 0.0000454; the blur part (BN + blur, what the
    # verdict gated to blur is judged by since session 22) 0.99991: both under the floor
    r = scheduled(Restorer(bundle, every=1, hysteresis=1, tone_align=False, min_confidence=0.99995))
    clean = scene()[None, None]
    assert np.allclose(r.infer(clean), clean) and r.status()["uncertain"] == 1
    striped = white(with_column_fpn(scene(), 0.025), 8.0)[None, None]
    assert np.allclose(r.infer(striped), striped * 5.0) and r.status()["task"] == "BN"
    assert r.status()["uncertain"] == 1 and r.status()["fpn"]["promoted"] == 0   # kept, not promoted
    fpn_only = np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None]
    r.infer(fpn_only)
    s = r.status()
    assert s["decision"] == "blur" and s["gated_from"] == "BN"       # still unsure: passed through,
    assert s["task"] == "passthrough" and s["runs"] == "destripe"        # its column offsets removed


# --- white noise on an unknown verdict ----------------------------------------------------------

def white(x, sigma_grey, seed=3):
    return (x + np.random.default_rng(seed).normal(0, sigma_grey / 255.0, x.shape)).astype(np.float32)


def test_weakest_white_noise_comes_from_the_specs():
    from tir.engines.fpn_gate import min_white_sigma

    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    assert min_white_sigma(specs) == pytest.approx(5 / 255)
    assert min_white_sigma({"blur": specs["blur"]}) is None
    assert FPNGate.for_bundle(specs).white_sigma == pytest.approx(5 / 255)
    assert FPNGate.for_bundle(specs).noise_free == {CLEAN}


def test_only_clean_verdicts_measure_the_cameras_noise_floor():
    """A frame under a blur verdict shows the camera's noise smoothed: it does not lower the floor,
    so a camera whose own frames carry white noise of 3.5 grey levels keeps them as its own."""
    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    gate = FPNGate.for_bundle(specs)
    own = [white(scene(seed=i), 3.5, seed=i) for i in range(12)]
    for f in own[:10]:
        gate.step("blur", cv2.GaussianBlur(f, (0, 0), 1.5))                 # blurred: smoothed noise
    assert len(gate.floor) == 0
    for f in own[:10]:
        gate.step(CLEAN, f)
    assert len(gate.floor) == 10 and np.median(gate.floor) == pytest.approx(3.5 / 255, rel=0.25)
    assert gate.step("noise", own[11]) == (CLEAN, False)                       # its own noise: given back
    with pytest.raises(ValueError, match="white_sigma"):
        FPNGate({}, white_sigma=0.0)


def test_unknown_verdict_on_white_noise_becomes_the_noise_task():
    from tir.engines.fpn_gate import MIN_FLOOR_FRAMES, noise_sigma

    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255,
                   noise_free=(CLEAN, "blur"))
    noisy = white(scene(seed=9), 5.0)
    assert noise_sigma(noisy) == pytest.approx(5 / 255, rel=0.15)
    assert gate.step(UNKNOWN, noisy) == (UNKNOWN, False)               # silent before the floor exists
    for i in range(MIN_FLOOR_FRAMES):
        gate.step(CLEAN, scene(seed=i))
    assert gate.status()["white_floor_from"] == "clean"
    limit = gate.white_threshold()
    assert 2.5 / 255 < limit < 3.0 / 255                                # √(floor² + 2.5²) grey levels
    assert gate.step(UNKNOWN, noisy) == ("noise", True) and gate.promoted_white == 1
    assert gate.step(UNKNOWN, scene(seed=20)) == (UNKNOWN, False)       # the camera's own frame
    assert gate.step(CLEAN, noisy) == (CLEAN, False)                    # a confident verdict stands
    assert gate.step("noise", noisy) == ("noise", False) and len(gate.floor) == MIN_FLOOR_FRAMES + 1
    s = gate.status()
    assert s["promoted_white"] == 1 and s["white_threshold"] == pytest.approx(gate.white_threshold(), abs=1e-5)
    new = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    new.carry_from(gate)
    assert list(new.floor) == list(gate.floor) and new.promoted_white == 1


def test_a_noisy_camera_is_its_own_floor():
    """A camera whose own frames carry white noise of 6 grey levels: that is its normal, and an
    unknown verdict on such a frame stays unknown; the spec's noise on top of it is seen."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i in range(12):
        gate.step(CLEAN, white(scene(seed=i), 6.0, seed=i))
    assert gate.step(UNKNOWN, white(scene(seed=30), 6.0, seed=30)) == (UNKNOWN, False)
    assert gate.step(UNKNOWN, white(scene(seed=31), np.hypot(6.0, 5.0), seed=31)) == ("noise", True)


def test_restorer_sends_an_unknown_noisy_frame_to_the_noise_route(tmp_path):
    bundle = _bundle(tmp_path, "clean", unknown=True)
    r = Restorer(bundle, every=1, hysteresis=1, tone_align=False)
    for i in range(8):                                                   # the camera's floor: its own frames
        r.fpn_gate.step(CLEAN, scene(seed=i))
    noisy = white(scene(seed=40), 8.0)[None, None]
    assert np.allclose(r.infer(noisy), noisy * 7.0) and r.status()["task"] == "noise"
    s = r.status()
    assert s["gated_from"] == UNKNOWN and s["fpn"]["promoted_white"] == 1 and s["fpn"]["promoted"] == 0


def test_a_pinned_floor_does_not_move():
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i in range(12):
        gate.add(scene(seed=i))
    gate.pinned = True
    floor = list(gate.floor)
    gate.step(CLEAN, white(scene(seed=40), 6.0, seed=40))
    assert list(gate.floor) == floor and gate.last_sigma is not None     # measured, not recorded
    new = FPNGate({CLEAN: "noise"}, white_sigma=5 / 255)
    new.carry_from(gate)
    assert new.pinned


def test_a_noise_route_keeps_the_tone_of_the_camera_or_of_the_frame(blur_bundle):
    """After a noise-carrying task without a contrast part (here BN, a route that scales by 5) the
    output's extremes are mapped back: onto the frame's own while the camera has no tone
    reference, onto the camera's once it has one; tone_align=False leaves the route's output."""
    from tir.engines.contrast_gate import lowpass_ends

    striped = white(with_column_fpn(scene(), 0.025), 8.0)[None, None]
    r = scheduled(Restorer(blur_bundle, every=1, hysteresis=1))
    assert r._keeps_tone == {"noise", "BN"}
    out = r.infer(striped)
    assert r.status()["task"] == "BN" and r.contrast_gate.tone_reference() is None
    np.testing.assert_allclose(lowpass_ends(out[0, 0]), lowpass_ends(striped[0, 0]), atol=2e-3)
    assert np.allclose(out, striped, atol=1e-4)            # a pure scale, mapped back: the frame itself
    def agc(x):   # a camera whose AGC puts every frame's extremes at 0.25 and 0.75
        lo, hi = lowpass_ends(x)
        return (0.25 + 0.5 * (x - lo) / (hi - lo)).astype(np.float32)

    cam = scheduled(Restorer(blur_bundle, every=1, hysteresis=1))
    cam.warm_camera(np.stack([agc(scene(seed=s)) for s in range(12)])[:, None])
    ref = cam.contrast_gate.tone_reference()
    assert ref == pytest.approx((0.25, 0.75), abs=1e-4) and max(cam.contrast_gate.tone_spread()) < 1e-4
    out = cam.infer(striped)
    np.testing.assert_allclose(lowpass_ends(out[0, 0]), ref, atol=2e-3)
    off = scheduled(Restorer(blur_bundle, every=1, hysteresis=1, tone_align=False))
    assert np.allclose(off.infer(striped), striped * 5.0)


def test_after_a_noise_route_an_end_the_cameras_scenes_move_keeps_mostly_its_own(blur_bundle):
    """A camera whose AGC pins the hot end but whose scenes move the cold end (a UAV camera over
    dark and bright ground: docs/cameras.md "Session 15"): after BN the hot end goes to the
    camera's, the cold end to the inverse-variance weighted mean of the camera's median and the
    restored frame's own (:data:`NOISE_TONE_SIGMA` against the camera's spread), mostly the
    frame's own."""
    from tir.engines.contrast_gate import lowpass_ends
    from tir.engines.restorer import NOISE_TONE_SIGMA

    def agc(x, lo_to, hi_to=0.9):
        lo, hi = lowpass_ends(x)
        return (lo_to + (hi_to - lo_to) * (x - lo) / (hi - lo)).astype(np.float32)

    striped = white(with_column_fpn(scene(), 0.025), 8.0)[None, None]
    cam = scheduled(Restorer(blur_bundle, every=1, hysteresis=1))
    cam.warm_camera(np.stack([agc(scene(seed=s), c) for s, c in enumerate(np.linspace(0.05, 0.45, 12))])[:, None])
    (ref_lo, ref_hi), (sd_lo, sd_hi) = cam.contrast_gate.tone_reference(), cam.contrast_gate.tone_spread()
    assert ref_hi == pytest.approx(0.9, abs=1e-4) and sd_hi < 1e-4 and sd_lo > 0.1
    cam.infer(striped)
    assert cam.status()["task"] == "BN"
    cam.contrast_gate.restart()          # this test's BN route scales by 5: its ends were far off;
    cam.warm_camera(np.stack([agc(scene(seed=s), c) for s, c in enumerate(np.linspace(0.05, 0.45, 12))])[:, None])
    _, finish = cam.plan(striped)
    restored = agc(scene(seed=40), 0.5, 0.8)[None, None]      # what a noise route gave back
    w = NOISE_TONE_SIGMA ** 2 / (NOISE_TONE_SIGMA ** 2 + sd_lo ** 2)
    lo, hi = lowpass_ends(finish(restored)[0, 0])
    assert w < 0.2 and hi == pytest.approx(0.9, abs=2e-3)
    assert lo == pytest.approx(w * ref_lo + (1 - w) * 0.5, abs=2e-3) and abs(lo - 0.5) < abs(lo - ref_lo)
    pinned = scheduled(Restorer(blur_bundle, every=1, hysteresis=1))   # both ends pinned: the camera's
    pinned.warm_camera(np.stack([agc(scene(seed=s), 0.25) for s in range(12)])[:, None])
    pinned.infer(striped)
    _, finish = pinned.plan(striped)
    assert lowpass_ends(finish(restored)[0, 0]) == pytest.approx((0.25, 0.9), abs=2e-3)


def test_a_noise_verdict_on_the_cameras_own_noise_is_given_back():
    """A camera whose frames carry white noise of 3.5 grey levels (an NETD-limited sensor): a noise
    verdict on such a frame loses the noise part (noise -> clean, BN -> blur), while the spec's
    weakest noise on top of it, or column FPN, keeps it; nothing before the floor exists."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255,
                   noise_free=(CLEAN, "blur"))
    own = lambda i: white(scene(seed=i), 3.5, seed=i)   # noqa: E731
    assert gate.step("noise", own(0)) == ("noise", False)            # no floor yet: the router's call
    for i in range(12):
        gate.step(CLEAN, own(i))
    assert gate.step("noise", own(30)) == (CLEAN, False)
    assert gate.step("BN", own(31)) == ("blur", False) and gate.demoted_white == 2
    assert gate.step("noise", white(own(32), 5.0, seed=99)) == ("noise", False)   # the spec's noise on top
    assert gate.step("noise", with_column_fpn(own(33), 0.025)) == (CLEAN, False)  # column FPN alone: destriped
    assert gate.offsets is not None and gate.destriped == 1
    assert gate.step("noise", white(with_column_fpn(own(34), 0.025), 8.0, seed=7))[0] == "noise"   # the spec's noise
    assert gate.status()["demoted_white"] == 2
    new = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255)
    new.carry_from(gate)
    assert new.demoted_white == 2


def test_a_camera_the_router_always_calls_noisy_gets_its_floor_from_every_routed_frame():
    """K8: a camera whose own frames carry white noise of 3.5 grey levels and that the router calls
    ``noise`` every time never shows a noise-free verdict; its floor then comes from every routed
    frame, so its own noise is given back (as with clean verdicts) and the spec's noise on top is
    still removed. Eight frames under noise-free verdicts take over."""
    from tir.engines.fpn_gate import MIN_FLOOR_FRAMES

    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255,
                   noise_free=(CLEAN, "blur"))
    own = lambda i: white(scene(seed=i), 3.5, seed=i)   # noqa: E731
    for i in range(MIN_FLOOR_FRAMES):                                  # no history yet: the router's call
        assert gate.step("noise", own(i)) == ("noise", False)
    assert gate.floor_sigma()[1] == "routed" and len(gate.floor) == 0
    assert gate.floor_sigma()[0] == pytest.approx(3.5 / 255, rel=0.25)
    assert gate.step("noise", own(20)) == (CLEAN, False)               # its own noise: given back
    assert gate.step("BN", own(21)) == ("blur", False)
    assert gate.step("noise", white(own(22), 5.0, seed=5)) == ("noise", False)   # the spec's noise on top
    assert gate.status()["white_floor_from"] == "routed" and gate.demoted_white == 2
    for i in range(MIN_FLOOR_FRAMES):
        gate.step(CLEAN, scene(seed=40 + i))                           # noise-free frames of 0.x grey levels
    floor, source = gate.floor_sigma()
    assert source == "clean" and floor < 1.5 / 255 and floor == pytest.approx(np.median(gate.floor))
    new = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255)
    new.carry_from(gate)
    assert list(new.seen) == list(gate.seen)


def test_restorer_passes_a_noisy_looking_cameras_own_frames_through(tmp_path):
    """K8 in the Restorer: the router names every frame ``noise``; the first eight routed frames,
    before the camera has a floor, are held (the router's noise part alone is not trusted), after
    them the floor holds the camera's own frames, which pass through; a frame with the spec's
    noise on top still runs the noise route."""
    r = Restorer(_bundle(tmp_path, "noise"), every=1, hysteresis=1, tone_align=False)
    outs = []
    for i in range(12):
        f = white(scene(seed=i), 3.5, seed=i)[None, None]
        outs.append(np.allclose(r.infer(f), f))
    assert all(outs)
    fpn = r.status()["fpn"]
    assert fpn["white_floor_from"] == "routed" and fpn["held"] == MIN_FLOOR_FRAMES and fpn["demoted_white"] >= 3
    noisy = white(white(scene(seed=50), 3.5, seed=50), 6.0, seed=51)[None, None]
    assert np.allclose(r.infer(noisy), noisy * 7.0)


# --- column FPN alone: the offsets are removed, the verdict stays ---------------------------------

def offsets_left(x, clean):
    """The column offsets ``x`` carries against the frame without them: the standard deviation
    across columns of the column means of ``x − clean``."""
    return float(np.std((np.asarray(x, np.float64) - clean).mean(axis=0)))


def test_remove_column_fpn_takes_the_offsets_and_keeps_the_scene():
    from tir.engines.fpn_gate import remove_column_fpn
    from tir.engines.metrics import psnr

    clean = scene(240, 320, seed=4)
    striped = np.clip(with_column_fpn(clean, 0.025), 0, 1)
    out = remove_column_fpn(striped)
    assert out.dtype == np.float32 and out.shape == striped.shape
    assert offsets_left(out, clean) < 0.5 * offsets_left(striped, clean)         # at least halved
    assert psnr(out, clean) > psnr(striped, clean) + 6.0                   # closer to the scene
    assert psnr(remove_column_fpn(clean), clean) > 45.0                    # a frame without FPN: poles kept
    assert remove_column_fpn(striped[None, None]).shape == (1, 1, 240, 320)
    tiny = np.full((10, 20), 0.5, np.float32)
    assert np.array_equal(remove_column_fpn(tiny), tiny)                    # too small to measure: a copy
    with pytest.raises(ValueError, match="one"):
        remove_column_fpn(np.zeros((2, 3, 4, 5), np.float32))


def test_column_fpn_without_white_noise_is_destriped_not_given_to_the_noise_task(tmp_path):
    """The router calls the frame clean; it carries column FPN but no white noise above the
    camera's own: the verdict stays clean, the column offsets are removed (not the noise route),
    and the pipeline does not give back the raw counts as for a pass-through."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import MODEL_INPUT_KEY, Infer, _OUTPUT_KEY, _PASSTHROUGH_KEY

    r = Restorer(_bundle(tmp_path, "clean"), every=1, hysteresis=1, tone_align=False)
    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)
    frame = Frame(raw=np.zeros((H, W), np.uint16), seq=0, t_capture=0.0, meta={MODEL_INPUT_KEY: striped})
    Infer(r)(frame)
    out = frame.meta[_OUTPUT_KEY][0, 0]
    s = r.status()
    assert s["task"] == "passthrough" and s["decision"] == CLEAN and s["gated_from"] is None
    assert s["runs"] == "destripe" and s["destripe"] is True and not r.passes_through
    assert s["fpn"]["destriped"] == 1 and s["fpn"]["promoted"] == 0 and r.last_decision["destripe"] is True
    assert _PASSTHROUGH_KEY not in frame.meta                               # the output is used, not raw
    assert offsets_left(out, scene()) < 0.5 * offsets_left(striped, scene())
    assert not np.allclose(out, striped * 7.0)                              # not the noise route
    plain = scene()[None, None]                                             # the next verdict: no FPN
    assert np.allclose(r.infer(plain), plain) and r.passes_through and r.status()["runs"] == "passthrough"
    pair = np.stack([striped, striped])[:, None]                            # a batch: every frame
    out2 = r.infer(pair)
    assert out2.shape == pair.shape and np.allclose(out2[0], out2[1]) and r.status()["runs"] == "destripe"
    r.reset()                                                               # a new scene: no carry-over
    assert r.passes_through


def test_column_fpn_alone_under_a_route_keeps_the_route_and_removes_the_offsets(blur_bundle):
    """The offsets measured on the routed frame come off the route's output, and off every frame
    until the next verdict (an FPA's offsets are fixed; the router runs every few frames)."""
    from tir.engines.fpn_gate import _band_signatures, column_offsets, remove_column_fpn, subtract_offsets

    r = scheduled(Restorer(blur_bundle, every=4, hysteresis=1, tone_align=False))
    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None] * 0.3   # ×3 stays in range
    out = r.infer(striped)
    assert r.status()["task"] == "blur" and r.status()["runs"] == "route+destripe"
    offsets = r.fpn_gate.offsets
    assert offsets.shape == (W,) and np.allclose(offsets, column_offsets(_band_signatures(striped[0, 0], 4, 2.0)))
    assert np.allclose(out, np.clip(striped * 3.0 - offsets, 0, 1), atol=1e-6)
    assert np.allclose(remove_column_fpn(striped), subtract_offsets(striped, offsets), atol=1e-6)
    # not routed: the same offsets (the same FPA's frame, another scene, carries them too)
    later = np.clip(with_column_fpn(scene(seed=9), 0.025), 0, 1)[None, None] * 0.3
    assert np.allclose(r.infer(later), np.clip(later * 3.0 - offsets, 0, 1), atol=1e-6)
    assert r.status()["decisions"] == 1
    r.infer(later, meta={"ffc": True})                                        # an FFC renews the FPA's offsets
    plain = scene(seed=9)[None, None] * 0.3                                   # the frame after it: none left
    assert r.status()["runs"] == "route" and np.allclose(r.infer(plain), plain * 3.0, atol=1e-6)
    wide = np.zeros((1, 1, H, W + 32), np.float32)
    assert np.array_equal(subtract_offsets(wide, offsets), wide)              # another size: left as it is


def test_a_frame_without_a_scene_keeps_the_measured_offsets_an_ffc_drops_them(blur_bundle):
    """A camera staring at a uniform sky shows its column FPN most: a frame that only holds no
    scene (engines/restorer.py ``scene_free``) is not routed but keeps the offsets measured on the
    camera's scenes; only a marked FFC renews them."""
    from tir.engines.restorer import scene_free

    r = scheduled(Restorer(blur_bundle, every=4, hysteresis=1, tone_align=False))
    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None] * 0.3
    r.infer(striped)
    offsets = r.fpn_gate.offsets
    assert offsets is not None and r.status()["runs"] == "route+destripe"
    rng = np.random.default_rng(3)
    sky = (0.1 + rng.normal(0.0, 0.01, (H, W))).astype(np.float32) + offsets[None, :]   # uniform + the FPN
    assert scene_free(sky)
    out = r.infer(sky[None, None])
    assert r.status()["skipped_scene_free"] == 1 and r.fpn_gate.offsets is offsets
    assert np.allclose(out, np.clip(sky * 3.0 - offsets, 0, 1), atol=1e-6)     # destriped still
    r.infer(sky[None, None], meta={"ffc": True})
    assert r.fpn_gate.offsets is None


def test_offsets_shown_reads_how_much_of_the_offsets_a_frame_carries():
    """An FPA's frame reads gain ≈ 1 (≈ 2 when the offsets drifted twice as far), a frame after a
    correction that renewed them ≈ 0, whatever the scene; what cannot be measured reads None."""
    from tir.engines.fpn_gate import _band_signatures, column_offsets, offsets_shown

    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)
    offsets = column_offsets(_band_signatures(striped, 4, 2.0))
    for seed in (0, 5, 9):
        assert 0.7 < offsets_shown(np.clip(with_column_fpn(scene(seed=seed), 0.025), 0, 1), offsets) < 1.3
        assert 1.5 < offsets_shown(np.clip(with_column_fpn(scene(seed=seed), 0.05), 0, 1), offsets) < 2.5
        assert abs(offsets_shown(scene(seed=seed), offsets)) < 0.3                         # renewed: none left
        assert abs(offsets_shown(with_column_fpn(scene(seed=seed), 0.025, seed=7), offsets)) < 0.5   # new ones
    assert offsets_shown(striped[:, :100], offsets) is None                                 # another width
    assert offsets_shown(striped, np.zeros(W, np.float32)) is None                          # nothing to remove


@pytest.mark.parametrize("renewed", ["none", "new", "flag"])
def test_an_unmarked_ffc_drops_the_stale_offsets_at_once(tmp_path, renewed):
    """K18: the camera corrects its FPA between two verdicts (every 8 frames) and the stream does not
    say so; the frames after it carry no column offsets, other ones, or first the shutter's flag
    (no scene, no offsets). The offsets measured before it would put their negative into every
    frame up to the next turn: they are dropped on the first frame that does not carry them, and
    that frame is routed at once, so new offsets are measured on it when it has any."""
    from tir.engines.fpn_gate import remove_column_fpn
    from tir.engines.restorer import scene_free

    r = scheduled(Restorer(_bundle(tmp_path, "clean"), every=8, hysteresis=1, tone_align=False))
    for i in range(3):                                                         # the FPA before the correction
        striped = np.clip(with_column_fpn(scene(seed=i), 0.025), 0, 1)[None, None]
        out = r.infer(striped)
        assert r.status()["runs"] == "destripe" and offsets_left(out, scene(seed=i)) < 0.5 * offsets_left(striped, scene(seed=i))
    assert r.status()["decisions"] == 1
    if renewed == "flag":
        flag = (0.5 + np.random.default_rng(4).normal(0.0, 0.01, (H, W))).astype(np.float32)
        assert scene_free(flag)
        r.infer(flag[None, None])
        assert r.fpn_gate.offsets is None
    after = scene(seed=5) if renewed != "new" else np.clip(with_column_fpn(scene(seed=5), 0.025, seed=7), 0, 1)
    out = r.infer(after[None, None])[0, 0]
    s = r.status()
    assert s["decisions"] == 2                                                 # routed at once, not at frame 8
    if renewed == "new":                                                       # the new offsets, measured on it, come off
        assert s["runs"] == "destripe" and np.allclose(out, remove_column_fpn(after), atol=1e-6)
    else:                                                                      # none: the frame as it is
        assert s["runs"] == "passthrough" and r.passes_through and np.array_equal(out, after)
    assert s["offsets_renewed"] == 1


def test_fpn_only_threshold_follows_the_camera_floor():
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5.0 / 255.0)
    assert gate.fpn_only_threshold() == pytest.approx(np.sqrt(0.5) * 5.0 / 255.0)   # no floor yet
    for k in range(8):
        gate.add(white(scene(seed=k), 3.0, seed=k))
    high = float(np.percentile(gate.floor, 90))                        # what the camera's own frames reach
    assert gate.floor_high() == pytest.approx(high)
    assert gate.fpn_only_threshold() == pytest.approx(np.sqrt(high ** 2 + 0.5 * (5.0 / 255.0) ** 2))
    assert FPNGate({CLEAN: "noise"}).fpn_only_threshold() is None


# --- dead columns, as the router sees them -------------------------------------------------------

def test_dead_columns_are_replaced_for_the_router_only():
    """A readout column stuck at one value is replaced by its neighbours' mean in what the router
    is shown; a scene's pole, column FPN and a frame without defects are left alone."""
    from tir.engines.fpn_gate import repair_dead_columns

    clean = scene(240, 320, seed=5)
    same, n = repair_dead_columns(clean)
    assert n == 0 and same is clean                                     # nothing to repair: the frame itself
    dead = clean.copy()
    dead[:, 100] = 0.0
    dead[:, 250] = 1.0
    out, n = repair_dead_columns(dead[None, None])
    assert n == 2 and out.shape == (1, 1, 240, 320)
    assert np.allclose(out[0, 0, :, 100], 0.5 * (clean[:, 99] + clean[:, 101]))
    assert np.array_equal(np.delete(out[0, 0], [100, 250], axis=1), np.delete(clean, [100, 250], axis=1))
    for other in (np.clip(with_column_fpn(clean, 0.04), 0, 1), white(clean, 8.0)):
        assert repair_dead_columns(other)[1] == 0                       # FPN and noise are no dead column
    assert repair_dead_columns(np.full((4, 320), 0.5, np.float32))[1] == 0   # too small to judge
    flat = np.full((240, 320), 0.5, np.float32)
    assert repair_dead_columns(flat)[1] == 0                            # nothing varies: no neighbour scene


def test_restorer_counts_router_frames_with_dead_columns(blur_bundle):
    r = scheduled(Restorer(blur_bundle, every=1, hysteresis=1))
    dead = scene().copy()
    dead[:, 40] = 0.0
    out = r.infer(dead[None, None])
    assert r.status()["dead_column_frames"] == 1 and r.dead_columns == 1
    assert r.status()["task"] == "blur" and np.all(out[0, 0, :, 40] == 0.0)   # the output keeps it (route ×3)


def test_offsets_of_another_width_are_dropped_not_claimed(tmp_path):
    """The source changes width between two verdicts: the offsets measured at the old width fit
    no column of the new frames, so they are dropped; the frame comes out as it went in and the
    restorer says pass-through (the pipeline then keeps the raw counts), not ``destripe``."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import MODEL_INPUT_KEY, Infer, _PASSTHROUGH_KEY

    r = scheduled(Restorer(_bundle(tmp_path, "clean"), every=4, hysteresis=1, tone_align=False))
    r.infer(np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None])
    assert r.status()["runs"] == "destripe"
    wide = scene(H, W + 32, seed=5)                                            # not routed (frame 1 of 4)
    frame = Frame(raw=np.zeros((H, W + 32), np.uint16), seq=1, t_capture=0.0, meta={MODEL_INPUT_KEY: wide})
    Infer(r)(frame)
    s = r.status()
    assert r.passes_through and s["runs"] == "passthrough" and s["destripe"] is False
    assert s["fpn"]["destripe"] is False and frame.meta[_PASSTHROUGH_KEY] is True
    assert s["decisions"] == 1                                                 # the router did not run


def test_a_bundle_swap_keeps_the_measured_column_offsets(tmp_path):
    """A hot-swap (engines/hotswap.py) between two verdicts: the camera's column offsets measured
    on the old bundle's last verdict still come off the frames up to the next one, instead of the
    stripes coming back for those frames."""
    import json

    from tir.engines.hotswap import HotSwapRestorer

    folder = _bundle(tmp_path, "clean")
    make = lambda path: scheduled(Restorer(path, every=8, hysteresis=1, tone_align=False))   # noqa: E731
    hs = HotSwapRestorer(make(folder), make)
    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None]
    before = hs.infer(striped)
    offsets = hs.active.fpn_gate.offsets
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 2}))
    assert hs.request_reload() and hs.wait_loaded() and hs.reload_state == "ready"
    after = hs.infer(striped)                                                  # frame 1 of 8: not routed
    assert hs.swaps == 1 and hs.status()["decisions"] == 1
    assert not hs.passes_through and hs.status()["runs"] == "destripe" and hs.status()["fpn"]["destripe"] is True
    np.testing.assert_allclose(after, before, atol=1e-6)
    np.testing.assert_array_equal(hs.active.fpn_gate.offsets, offsets)
    hs.close()


def test_the_in_flight_infer_stage_keeps_raw_counts_only_for_a_pass_through(tmp_path):
    """PipelinedInfer (the TensorRT stage, several frames in flight) over a Restorer: a frame
    destriped at submit comes out restored, and the next one, passed through while the first is
    still queued, gets its raw counts back bit-exact, as after the Infer stage."""
    from tir.edge.frame import Frame
    from tir.edge.normalize import Normalizer
    from tir.edge.pipeline.stages import _PASSTHROUGH_KEY, PipelinedInfer, Postprocess, Preprocess

    r = Restorer(_bundle(tmp_path, "clean"), every=1, hysteresis=1, tone_align=False)
    norm = Normalizer()
    pre, post, work = Preprocess(norm), Postprocess(norm), PipelinedInfer(r, in_flight=2)
    counts = lambda x: np.round(1000 + 12000 * np.clip(x, 0, 1)).astype(np.uint16)   # noqa: E731  Y16, 14 bits
    striped = Frame(raw=counts(with_column_fpn(scene(), 0.025)), seq=0, t_capture=0.0, meta={"bits": 14})
    plain = Frame(raw=counts(scene(seed=6)), seq=1, t_capture=0.0, meta={"bits": 14})
    for f in (striped, plain):
        pre(f)
        work.submit(f)
    assert work.pending == 2 and r.passes_through                         # the plain frame's verdict
    out = [work.collect()[0] for _ in range(2)]
    assert [f.seq for f in out] == [0, 1]
    assert _PASSTHROUGH_KEY not in out[0].meta and out[1].meta[_PASSTHROUGH_KEY] is True
    for f in out:
        post(f)
    assert not np.array_equal(out[0].restored, out[0].raw)                # destriped: its own counts
    np.testing.assert_array_equal(out[1].restored, out[1].raw)            # pass-through: the raw counts


@pytest.mark.parametrize("phase", [0, 1])
def test_a_stream_that_alternates_ffc_frames_is_still_routed_and_destriped(tmp_path, phase):
    """FFC on every other frame (on the router's turns, phase 0, or between them, phase 1): the
    FFC frames come out as they went in, and every frame after one is routed, so its column
    offsets are measured again and removed (before, FFC frames on the turns kept the router from
    ever running, and after an FFC the stripes stayed until the next turn)."""
    r = Restorer(_bundle(tmp_path, "clean"), every=8, hysteresis=1, tone_align=False)
    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None]
    for i in range(16):
        ffc = i % 2 == phase
        out = r.infer(striped, meta={"ffc": ffc})
        if ffc:
            assert r.passes_through and np.array_equal(out, striped)
        else:
            assert r.status()["runs"] == "destripe" and offsets_left(out, striped[0, 0]) > 0.0
    assert r.status()["decisions"] == 8 and r.status()["skipped_ffc"] == 8 and r.fpn_gate.destriped == 8


def test_offsets_hold_in_counts_when_the_normaliser_range_moves(tmp_path):
    """Y16 frames through Preprocess → Infer → Postprocess, the router every 8 frames: a hot object
    comes in after the routed frame and the normaliser's range grows ~2.6×. The FPA's column
    offsets are fixed in counts, so they still come off in counts (before, the offsets in the
    routed frame's [0, 1] units were over-subtracted: more column FPN out than in)."""
    from tir.edge.frame import Frame
    from tir.edge.normalize import Normalizer
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    r = scheduled(Restorer(_bundle(tmp_path, "clean"), every=8, hysteresis=1, tone_align=False))
    norm = Normalizer()
    pre, infer, post = Preprocess(norm), Infer(r), Postprocess(norm)
    offsets = np.random.default_rng(1).normal(0, 60, (1, W))                  # counts
    base = 3000 + 4000 * scene()
    column_fpn = lambda x, clean: float(np.std((x.astype(np.float64) - clean).mean(axis=0)))   # noqa: E731
    for i in range(16):
        clean = base.copy()
        if i >= 9:
            clean[:40, :40] = 14000                                              # the hot object
        raw = np.clip(clean + offsets, 0, 65535).astype(np.uint16)
        frame = Frame(raw=raw, seq=i, t_capture=0.0, meta={"bits": 16})
        pre(frame)
        infer(frame)
        post(frame)
        assert r.status()["runs"] == "destripe"
        assert column_fpn(frame.restored, clean) < 0.6 * column_fpn(raw, clean), i
    assert r.status()["decisions"] == 2 and frame.meta["norm"]["hi"] - frame.meta["norm"]["lo"] > 2.5 * 2400


def test_a_status_read_while_a_frame_is_gated_sees_the_last_verdicts_destripe(tmp_path, monkeypatch):
    """The stats thread reads the status while the infer thread gates the next routed frame: it
    sees the last verdict's ``destripe`` (the status line and the page flickered to a bare
    ``passthrough`` when the read fell inside the FPN gate's measurement)."""
    from tir.engines import fpn_gate

    r = Restorer(_bundle(tmp_path, "clean"), every=1, hysteresis=1, tone_align=False)
    striped = np.clip(with_column_fpn(scene(), 0.025), 0, 1)[None, None]
    r.infer(striped)
    seen, judge = [], fpn_gate.carries_fpn

    def carries(*args, **kw):   # inside the gate's step: what a status read now shows
        seen.append((r.status()["runs"], r.fpn_gate.status()["destripe"]))
        return judge(*args, **kw)

    monkeypatch.setattr(fpn_gate, "carries_fpn", carries)
    r.infer(striped)
    assert seen == [("destripe", True)] and r.status()["runs"] == "destripe"


def test_dead_column_count_carries_over_a_bundle_swap(tmp_path):
    import json

    from tir.engines.hotswap import HotSwapRestorer

    folder = _bundle(tmp_path, "clean")
    make = lambda path: Restorer(path, every=1, hysteresis=1, tone_align=False)   # noqa: E731
    hs = HotSwapRestorer(make(folder), make)
    dead = scene().copy()
    dead[:, 40] = 0.0
    hs.infer(dead[None, None])
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 2}))
    assert hs.request_reload() and hs.wait_loaded() and hs.reload_state == "ready"
    hs.infer(scene()[None, None])
    assert hs.swaps == 1 and hs.status()["dead_column_frames"] == 1
    hs.close()


def small_sensor_scene(seed=0, noise=1.0):
    """An 80×60 frame (a Lepton 2.5's size) of a cluttered scene area-averaged from 640×480 and
    stretched to its range by a per-frame AGC: most 2×2 blocks hold scene detail. ``noise``: white
    noise in grey levels of 255 added after the AGC."""
    rng = np.random.default_rng(100 + seed)
    big = scene(480, 640, seed=seed)
    yy, xx = np.mgrid[0:480, 0:640]
    for cx, cy, r in zip(rng.uniform(0, 640, 300), rng.uniform(0, 480, 300), rng.uniform(3, 10, 300)):
        big[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0.2, 0.9)
    small = cv2.resize(big, (80, 60), interpolation=cv2.INTER_AREA)
    small = (small - small.min()) / (small.max() - small.min())
    return np.clip(small + rng.normal(0, noise / 255, small.shape), 0, 1).astype(np.float32)


def test_flat_noise_sigma_reads_white_noise_at_any_size():
    from tir.engines.fpn_gate import flat_noise_sigma

    rng = np.random.default_rng(3)
    for h, w in ((60, 80), (120, 160), (512, 640)):
        x = (0.5 + rng.normal(0, 5 / 255, (h, w))).astype(np.float32)
        assert flat_noise_sigma(x) == pytest.approx(5 / 255, rel=0.12)
    x = (0.5 + rng.normal(0, 5 / 255, (120, 160))).astype(np.float32)
    x[:, :80] = 0.0                                      # half the frame clipped black: no noise there
    assert flat_noise_sigma(x) == pytest.approx(5 / 255, rel=0.12)
    assert flat_noise_sigma(np.full((4, 4), 0.5, np.float32)) == 0.0   # too small: the plain MAD
    with pytest.raises(ValueError, match="share"):
        flat_noise_sigma(x, share=0.0)
    with pytest.raises(ValueError, match="finite"):
        bad = x.copy(); bad[7, 7] = np.nan
        flat_noise_sigma(bad)


def test_flat_noise_sigma_ignores_small_sensor_scene_detail():
    """K2: on a cluttered 80×60 frame the MAD over every block reads the scene's detail as 2-3×
    the sensor's noise; on its least textured blocks it reads the noise, and the spec's weakest
    noise (5 grey levels) stays well above a clean frame."""
    from tir.engines.fpn_gate import flat_noise_sigma, noise_sigma

    for seed in range(3):
        clean, noisy = small_sensor_scene(seed, 1.0), small_sensor_scene(seed, 5.0)
        assert noise_sigma(clean) > 2.5 / 255                       # scene detail read as noise
        assert flat_noise_sigma(clean) < 1.6 / 255
        assert flat_noise_sigma(noisy) > 4.0 / 255


def test_a_small_sensor_clean_frame_called_noisy_is_given_back():
    """The gate's floor and its own-noise test read the least textured blocks: a cluttered 80×60
    clean frame the router calls noisy carries only the camera's own noise and is given back its
    verdict without the noise part; the spec's noise on the same scene keeps the noise task."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255)
    for i in range(MIN_FLOOR_FRAMES):
        gate.step(CLEAN, small_sensor_scene(10 + i))
    assert gate.step("noise", small_sensor_scene(1)) == (CLEAN, False) and gate.demoted_white == 1
    assert gate.step("BN", small_sensor_scene(2)) == ("blur", False)
    assert gate.step("noise", small_sensor_scene(1, 5.0)) == ("noise", False)


def small_sensor_camera(gate, loops=2):
    """Route a small sensor's own frames through ``gate`` as a router that calls its most textured
    scenes noisy would: twelve 80×60 scenes whose own noise reads 2-8 grey levels (texture and a
    per-frame AGC), the four quietest called clean, the rest ``noise``."""
    levels = (2.0, 2.5, 3.0, 3.5, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0)
    frames = [small_sensor_scene(i, level) for i, level in enumerate(levels)]
    for _ in range(loops):
        for level, frame in zip(levels, frames):
            gate.step(CLEAN if level < 4.0 else "noise", frame)


def test_a_small_sensors_textured_own_frames_the_router_calls_noisy_are_given_back():
    """Session 21: the floor holds only the frames the router calls clean, and the router calls a
    small sensor's most textured own frames noisy, so the floor's reach (90th percentile) stops at
    its quiet scenes. The thresholds are measured above at least the median routed frame (as far as
    the clean frames' own-noise threshold): an own scene at 5.6 grey levels (above the clean frames'
    threshold, 5.05) called noise is given back; the spec's weakest noise on the camera's median
    scene keeps the noise task, under noise, BN or unknown verdicts."""
    from tir.engines.fpn_gate import FLOOR_HIGH_PERCENTILE, flat_noise_sigma

    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255)
    small_sensor_camera(gate)
    assert gate.floor_sigma()[1] == "clean" and len(gate.floor) >= MIN_FLOOR_FRAMES
    clean_high = float(np.percentile(gate.floor, FLOOR_HIGH_PERCENTILE))
    assert gate.floor_high() > clean_high
    own = small_sensor_scene(20, 5.5)
    assert flat_noise_sigma(own) > np.hypot(clean_high, 5 / 255 / np.sqrt(2))   # above the clean frames' threshold
    demoted = gate.demoted_white
    assert gate.step("noise", own) == (CLEAN, False) and gate.demoted_white == demoted + 1
    for seed in (24, 25, 26):
        noisy = small_sensor_scene(seed, float(np.hypot(5.0, 5.0)))   # the median scene plus the weakest noise
        assert gate.step("noise", noisy) == ("noise", False)
        assert gate.step("BN", noisy) == ("BN", False)
        assert gate.step(UNKNOWN, noisy) == ("noise", True)


def test_routed_frames_lift_the_cameras_reach_one_step_at_most():
    """However long a degradation lasts, the median routed frame raises the thresholds no further than
    the clean frames' own-noise threshold: the spec's weakest noise on a scene at the clean frames'
    reach keeps the noise task after 600 noisy routed frames (the whole window)."""
    from tir.engines.fpn_gate import FLOOR_HIGH_PERCENTILE, FLOOR_WINDOW

    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i in range(MIN_FLOOR_FRAMES):
        gate.step(CLEAN, white(scene(seed=i), 2.0, seed=i))
    clean_high = float(np.percentile(gate.floor, FLOOR_HIGH_PERCENTILE))
    assert gate.floor_high() == pytest.approx(clean_high)     # the routed median is the clean frames'
    noisy = white(scene(seed=50), 12.0, seed=50)
    for _ in range(FLOOR_WINDOW + 88):
        gate.step("noise", noisy)
    cap = float(np.hypot(clean_high, 5 / 255 / np.sqrt(2)))
    assert float(np.median(gate.seen)) > cap and gate.floor_high() == pytest.approx(cap)
    assert gate.step("noise", white(scene(seed=51), float(np.hypot(2.0, 5.0)) + 0.3, seed=51)) == ("noise", False)


def test_flat_noise_sigma_of_values_near_the_float32_limit_is_finite():
    from tir.engines.fpn_gate import flat_noise_sigma

    x = np.full((60, 80), 3.0e38, np.float32)
    x[::2, ::2] = 2.9e38
    assert np.isfinite(flat_noise_sigma(x))


def test_a_camera_whose_own_noise_varies_keeps_it_on_its_noisier_scenes():
    """A per-frame AGC stretches a low-span scene's noise with it: a camera's clean frames carry
    1.5-4.5 grey levels of white noise. A clean frame at the noisy end, called noise, carries the
    camera's own and is given back; the spec's weakest noise on its median frame keeps the task.
    Measured above the median alone (3.0, threshold 4.64) the 4.6 frame kept the noise task: the
    thresholds are measured above what the camera's own frames reach (floor_high)."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    own = np.linspace(1.5, 4.5, 12)
    for i, s in enumerate(own):
        gate.step(CLEAN, white(scene(seed=i), float(s), seed=i))
    assert gate.floor_sigma()[1] == "clean"
    assert gate.floor_high() > np.median(gate.floor)
    assert gate.step("noise", white(scene(seed=30), 4.6, seed=30)) == (CLEAN, False)
    assert gate.step("noise", white(scene(seed=31), float(np.hypot(3.0, 5.0)) + 0.3, seed=31)) == ("noise", False)
    routed = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i in range(MIN_FLOOR_FRAMES):                                   # K8: no clean verdict yet
        routed.step("noise", white(scene(seed=i), 2.0 + i, seed=i))
    assert routed.floor_sigma()[1] == "routed" and routed.floor_high() == routed.floor_sigma()[0]


def detail_camera(seed, gain, h=256, w=320):
    """A clean frame of a detail-enhancing (DDE-like) camera: :func:`scene` plus its fine texture
    (white noise through a Gaussian of σ 0.6 px, unit standard deviation) with 0.3 of it in white
    sensor noise, amplified by the frame's detail ``gain`` (grey levels of 255): the camera's own
    "noise" is mostly amplified texture, whose variance grows toward coarser scales."""
    rng = np.random.default_rng(500 + seed)
    t = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.6)
    t = t / t.std() + 0.3 * rng.normal(0, 1, t.shape).astype(np.float32)
    return np.clip(scene(h, w, seed=seed) + gain / 255 * t, 0, 1).astype(np.float32)


def test_flat_noise_sigmas_read_white_noise_alike_at_both_scales():
    """White noise has the same σ at every scale of an orthonormal transform: σ₂/σ₁ is 1 at any
    size (one 160×120 frame scatters by about 0.1: its coarser scale has 266 flat blocks); amplified
    fine texture reads above √2; a frame whose coarser scale has too few flat blocks (80×60) gives
    no σ₂."""
    from tir.engines.fpn_gate import SHAPED_RATIO, flat_noise_sigma, flat_noise_sigmas

    rng = np.random.default_rng(4)
    for h, w, n in ((120, 160, 8), (512, 640, 1)):
        ratios = []
        for _ in range(n):
            x = (0.5 + rng.normal(0, 6 / 255, (h, w))).astype(np.float32)
            s1, s2 = flat_noise_sigmas(x)
            assert s1 == flat_noise_sigma(x)
            ratios.append(s2 / s1)
        assert np.mean(ratios) == pytest.approx(1.0, abs=0.06)
    s1, s2 = flat_noise_sigmas(detail_camera(0, 6.0))
    assert s2 / s1 > SHAPED_RATIO
    small = (0.5 + rng.normal(0, 6 / 255, (60, 80))).astype(np.float32)
    assert flat_noise_sigmas(small)[1] is None and flat_noise_sigmas(small)[0] == flat_noise_sigma(small)
    assert flat_noise_sigmas(np.full((4, 4), 0.5, np.float32)) == (0.0, None)
    with pytest.raises(ValueError, match="flat_noise_sigmas share"):
        flat_noise_sigmas(x, share=1.5)
    with pytest.raises(ValueError, match="finite"):
        bad = x.copy(); bad[3, 3] = np.inf
        flat_noise_sigmas(bad)


def test_a_detail_enhancing_cameras_noisiest_scenes_keep_their_own_noise():
    """K21: the floor is built from the frames called clean, so it never holds the camera's
    noisiest scenes (the ones called noise). Their σ is above every σ threshold, but their noise
    has the camera's own shape (σ₂/σ₁ of amplified texture); the specs' white noise on the
    camera's frames pulls it toward 1 and keeps the noise task, from the weakest on its noisiest
    frame to a strong one on its median frame. Without the shape the noisy scenes kept the noise
    task (the emulated dde_max_640x512: clean p5 19.7 dB)."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i, g in enumerate(np.linspace(4.0, 8.0, 2 * MIN_FLOOR_FRAMES)):
        gate.step(CLEAN, detail_camera(i, float(g)))
    assert gate.floor_sigma()[1] == "clean" and gate.own_shape() is not None
    for seed, g in ((30, 12.0), (31, 14.0)):
        own = detail_camera(seed, g)                                   # the camera's noisiest scenes
        assert gate._sigmas(own)[0] > gate.own_noise_threshold()      # σ alone: not the camera's own
        assert gate.step("noise", own) == (CLEAN, False)
        assert gate.step(UNKNOWN, own) == (UNKNOWN, False)            # nor made the noise task
    assert gate.own_shaped == 4 and gate.demoted_white == 2
    for seed, g, sigma in ((32, 8.0, 5.0), (33, 6.0, 8.0)):          # the specs' noise on its frames
        assert gate.step("noise", white(detail_camera(seed, g), sigma, seed=seed)) == ("noise", False)
    assert gate.step(UNKNOWN, white(detail_camera(34, 6.0), 8.0, seed=34)) == ("noise", True)
    assert gate.status()["own_shape"] == pytest.approx(gate.own_shape(), abs=1e-3)
    assert gate.status()["own_shaped"] == 4
    new = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    new.carry_from(gate)                                                # a bundle hot-swap: same camera
    assert new.own_shape() == gate.own_shape() and new.own_shaped == 4
    assert gate.restart() and len(gate.shapes) == 0 and gate.own_shape() is None


def test_a_camera_whose_own_noise_is_white_has_no_own_shape():
    """The shape judges only a camera whose own noise is shaped: white own noise (an NETD-limited
    camera, or a per-frame AGC stretching it) reads σ₂/σ₁ near 1 like the specs' noise, and the σ
    thresholds alone judge (test_a_camera_whose_own_noise_varies_keeps_it_on_its_noisier_scenes);
    quiet frames give no shape (their σ is under half the specs' weakest noise)."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i, s in enumerate(np.linspace(2.5, 6.0, 2 * MIN_FLOOR_FRAMES)):
        gate.step(CLEAN, white(scene(seed=i), float(s), seed=i))
    assert len(gate.shapes) >= MIN_FLOOR_FRAMES and gate.own_shape() is None
    assert gate.step("noise", white(scene(seed=40), 9.0, seed=40)) == ("noise", False)
    quiet = FPNGate({CLEAN: "noise", UNKNOWN: "noise"}, white_sigma=5 / 255)
    for i in range(2 * MIN_FLOOR_FRAMES):
        quiet.step(CLEAN, detail_camera(i, 2.0))
    assert len(quiet.shapes) == 0 and quiet.own_shape() is None


def test_flat_noise_sigma_refuses_a_non_finite_value_at_every_size():
    """Its docstring: a frame holding a non-finite value is refused. A 7×7 frame with NaN in its
    unused odd last row was, a 5×5 one (the plain-MAD fallback, which reads only the 2×2 blocks)
    returned 0.0: the same hostile frame measured or refused by its size."""
    from tir.engines.fpn_gate import flat_noise_sigma

    for side in (2, 3, 5, 7, 9):
        x = np.full((side, side), 0.5, np.float32)
        x[-1, -1] = np.nan
        with pytest.raises(ValueError, match="finite"):
            flat_noise_sigma(x)


def y16_view(seed, scale, counts_noise, h=H, w=W):
    """A Y16 frame as the live normaliser shows it: a smooth scene (:func:`scene` low-passed, its own
    noise negligible) plus the sensor's white noise of ``counts_noise`` counts, the frame's range
    standing for ``scale`` counts (a low-span scene: a small ``scale``, the same noise larger)."""
    base = cv2.GaussianBlur(scene(h, w, seed=seed), (0, 0), 2.0)
    return (base + np.random.default_rng(700 + seed).normal(0, counts_noise / scale, base.shape)).astype(np.float32)


def test_a_y16_low_span_scene_keeps_the_sensors_own_noise_in_counts():
    """Session 19: a microbolometer's temporal noise is fixed in counts; the normaliser stretches a
    low-span Y16 scene (or a contrast loss in counts) and shows the same noise larger in frame units.
    A frame at the camera's floor in counts, called noise, is given back (counted in own_counts);
    the specs' noise added on the same frame keeps the task; without the frame's scale (a
    display-referred frame: its camera's AGC ran) the frame-unit rule stands, and the frame keeps it."""
    partners = {CLEAN: "noise", UNKNOWN: "noise", "contrast": "CN"}
    gate, shown = FPNGate(partners, white_sigma=5 / 255), FPNGate(partners, white_sigma=5 / 255)
    for i in range(MIN_FLOOR_FRAMES + 2):                        # the camera's scenes: 2,000 counts, 10 of noise
        gate.step(CLEAN, y16_view(i, 2000.0, 10.0), scale=2000.0)
        shown.step(CLEAN, y16_view(i, 2000.0, 10.0))
    assert len(gate.floor_counts) == MIN_FLOOR_FRAMES + 2 and len(shown.floor_counts) == 0
    low = y16_view(40, 300.0, 10.0)                              # a 300-count scene, the same sensor
    from tir.engines.fpn_gate import flat_noise_sigma
    assert flat_noise_sigma(low) > gate.own_noise_threshold() and shown.counts_limit(0.5) is None
    assert shown.step("noise", low) == ("noise", False)          # frame units only: read as noisy
    assert gate.step("noise", low, scale=300.0) == (CLEAN, False) and gate.own_counts == 1
    assert gate.step("CN", low, scale=300.0) == ("contrast", False) and gate.own_counts == 2
    noisy = white(low, 8.0, seed=41)                             # the specs' noise on the same scene
    assert gate.step("noise", noisy, scale=300.0) == ("noise", False) and gate.own_counts == 2
    assert gate.step(UNKNOWN, low, scale=300.0) == (UNKNOWN, False)   # not made the noise task
    assert gate.step(UNKNOWN, noisy, scale=300.0) == ("noise", True)
    gate.restart()
    assert len(gate.floor_counts) == 0 and gate.counts_limit(0.5) is None


def test_counts_scale_is_a_y16_frames_counts_per_model_unit():
    from tir.engines.restorer import _counts_scale

    assert _counts_scale({"bits": 16, "norm": {"lo": 1000.0, "hi": 1400.0}}) == pytest.approx(400.0)
    assert _counts_scale({"bits": 16, "norm": {"lo": 0.0, "hi": 4000.0, "count_step": 4}}) == pytest.approx(1000.0)
    assert _counts_scale({"bits": 14, "source_bits": 8, "norm": {"lo": 0.0, "hi": 16320.0}}) is None
    assert _counts_scale({"bits": 16}) is None and _counts_scale(None) is None
    assert _counts_scale([{"bits": 8, "source_bits": 8, "norm": {"lo": 0, "hi": 255}},
                          {"bits": 16, "norm": {"lo": 10.0, "hi": 30.0}}]) == pytest.approx(20.0)


def test_a_frame_between_verdicts_is_judged_against_what_the_cameras_own_frames_reach():
    """``shows_own_noise`` (the noise route's per-frame check, engines/restorer.py ``_released``):
    a frame at the camera's own white noise shows no more than the camera reaches, the spec's
    weakest noise on top of it does not; nothing is judged before the floor exists or while the
    last routed frame carried column FPN, and nothing is recorded."""
    gate = FPNGate({CLEAN: "noise", UNKNOWN: "noise", "blur": "BN"}, white_sigma=5 / 255,
                   noise_free=(CLEAN, "blur"))
    own = lambda i: white(scene(seed=i), 3.5, seed=i)   # noqa: E731
    assert gate.shows_own_noise(own(0)) is None                       # no floor yet
    for i in range(12):
        gate.step(CLEAN, own(i))
    floor, seen, checked = list(gate.floor), list(gate.seen), gate.checked
    assert gate.shows_own_noise(own(30)) is True
    assert gate.shows_own_noise(white(own(31), 5.0, seed=99)) is False   # the spec's weakest noise on top
    assert gate.shows_own_noise(white(own(32), 2.0, seed=98)) is False   # even weaker: above the reach
    assert list(gate.floor) == floor and list(gate.seen) == seen and gate.checked == checked
    nan = own(33)
    nan[3, 3] = np.nan
    assert gate.shows_own_noise(nan) is None
    gate.step("noise", with_column_fpn(own(34), 0.025))                   # the FPA's column FPN: verdicts judge it
    assert gate.shows_own_noise(own(35)) is None
    none = FPNGate({CLEAN: "noise"}, white_sigma=None)
    assert none.shows_own_noise(own(0)) is None


def test_the_noise_route_passes_through_a_frame_of_the_cameras_own_noise_between_verdicts(tmp_path):
    """A noise segment that stops (docs/cameras.md "Session 23"): the route waits for the router's
    verdicts (every 8 frames, hysteresis 3), but a frame whose white noise is no more than the
    camera's own frames reach is passed through by the noise route at once; a noisy frame keeps the
    route; a forced task is run as it is; the BN route (a blur part, not checked per frame) keeps
    its frames."""
    bundle = one_hot_bundle(tmp_path, {"noise": 2.0, "BN": 3.0, "blur": 4.0}, "noise", H, W)
    r = scheduled(Restorer(bundle, every=8, hysteresis=3, tone_align=False))
    r.warm_camera(np.stack([white(scene(seed=s), 1.0, seed=s) for s in range(16)])[:, None])
    noisy = white(scene(seed=40), 8.0, seed=40)[None, None]
    assert np.allclose(r.infer(noisy), noisy * 2.0) and r.route == "noise"       # the router's verdict
    clean = white(scene(seed=41), 1.0, seed=41)[None, None]
    for _ in range(3):                                                  # the noise stops; no verdict yet
        assert np.allclose(r.infer(clean), clean) and r.route == "noise"
    assert r.status()["noise_released"] == 3 and r.status()["contrast_released"] == 0
    assert np.allclose(r.infer(noisy), noisy * 2.0)                     # noisy again: the route again
    forced = Restorer(bundle, tone_align=False, task="noise")            # the user's choice: not gated
    forced.warm_camera(np.stack([white(scene(seed=s), 1.0, seed=s) for s in range(16)])[:, None])
    assert np.allclose(forced.infer(clean), clean * 2.0) and forced.status()["noise_released"] == 0
    bn = scheduled(Restorer(tmp_path / "bundle", every=8, hysteresis=3, tone_align=False, task=None))
    bn.warm_camera(np.stack([white(scene(seed=s), 1.0, seed=s) for s in range(16)])[:, None])
    bn.current = "BN"
    assert bn._released(clean) == "BN" and bn.noise_released == 0


def test_the_noise_route_lets_go_and_takes_back_on_two_bounds(tmp_path):
    """A Schmitt trigger (docs/cameras.md "Session 23"): under the noise route a frame is let go when
    its white noise is within what the camera's own frames reach; once let go, the frames after it
    are let go until one reads above the verdicts' own-noise bound (a frame in between keeps the
    state the frames before it set, so a stream about the reach does not flicker); a verdict, or a
    noisy frame, ends the state."""
    bundle = one_hot_bundle(tmp_path, {"noise": 2.0, "BN": 3.0, "blur": 4.0}, "noise", H, W)
    r = scheduled(Restorer(bundle, every=8, hysteresis=3, tone_align=False))
    r.warm_camera(np.stack([white(scene(seed=s), 1.0, seed=s) for s in range(16)])[:, None])
    gate = r.fpn_gate
    noisy = white(scene(seed=40), 8.0, seed=40)[None, None]
    clean = white(scene(seed=41), 1.0, seed=41)[None, None]
    mid = white(scene(seed=42), 2.5, seed=42)
    sigma = gate._sigmas(mid)[0]
    assert gate.floor_high() < sigma < gate.own_noise_threshold()       # between the two bounds
    mid = mid[None, None]
    assert np.allclose(r.infer(noisy), noisy * 2.0) and r.route == "noise"    # frame 0: the verdict
    assert np.allclose(r.infer(mid), mid * 2.0)                         # in between, not let go: routed
    assert np.allclose(r.infer(clean), clean)                           # the camera's own: let go
    assert np.allclose(r.infer(mid), mid)                               # in between, let go: stays let go
    assert np.allclose(r.infer(noisy), noisy * 2.0)                     # above the verdicts' bound: routed
    assert np.allclose(r.infer(mid), mid * 2.0)                         # in between again: routed
    assert np.allclose(r.infer(clean), clean) and np.allclose(r.infer(mid), mid)    # frames 6, 7
    assert np.allclose(r.infer(mid), mid * 2.0)                         # frame 8: a verdict ends the state
    assert r.status()["noise_released"] == 4
