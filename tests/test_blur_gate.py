"""The blur gate: a blur verdict without noise on a frame that is not soft *for this camera* loses
its blur part (engines/blur_gate.py), in the Restorer, its status and the live page's stats."""
import cv2
import numpy as np
import pytest
from tiny_models import one_hot_bundle

from tir.engines import degrade as deg
from tir.engines.blur_gate import (DEFAULT_SIGMA_MIN, DRIFT_MARGIN, MIN_FRAMES, MIN_SIDE, BlurGate, band_ratio, blur_drop,
                                   blur_partners, min_blur_sigma, noisy_blur_drop, quantum)
from tir.engines.contrast_gate import centre_window
from tir.engines.restorer import Restorer

H, W = 120, 160


def scene(seed=0, h=H, w=W):
    """A thermal-like frame in [0, 1] with fine detail: a gradient, sharp-edged warm discs and
    bars, a faint texture and mild white noise (a NUC'd camera)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = 0.3 + 0.2 * yy / h
    for cx, cy, r in zip(rng.uniform(0, w, 14), rng.uniform(0, h, 14), rng.uniform(2, 10, 14)):
        x[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0.5, 0.9)
    for cx in rng.choice(w - 4, 4, replace=False):
        x[:, cx:cx + 2] = rng.uniform(0.1, 0.3)
    x += 0.02 * cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 0.8)
    x += rng.normal(0, 0.002, x.shape)
    return np.clip(x, 0, 1).astype(np.float32)


def blurred(x, sigma):
    return cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def warmed(frames, partners=None):
    gate = BlurGate(partners or {"blur": "clean", "CB": "contrast"})
    for f in frames:
        assert gate.add(f) is not None
    return gate


def test_band_ratio_and_drop_are_contrast_free_and_tell_blur():
    x = scene()
    r = band_ratio(x)
    assert band_ratio(0.3 * x + 0.2) == pytest.approx(r, abs=1e-3)   # the contrast op: α·x + β
    assert band_ratio(x[None, None]) == pytest.approx(r)
    assert band_ratio(blurred(x, 1.0)) < r - 0.2
    assert band_ratio(blurred(x, 2.0)) < band_ratio(blurred(x, 1.0))
    assert blur_drop(x) == pytest.approx(band_ratio(blurred(x, 1.0)) - r, abs=0.05)
    assert blur_drop(0.3 * x + 0.2) == pytest.approx(blur_drop(x), abs=1e-3)
    # a blurred frame has less left to lose: its drop is closer to 0, the more the softer
    assert blur_drop(x) < blur_drop(blurred(x, 1.0)) < blur_drop(blurred(x, 2.0)) < 0


@pytest.mark.parametrize("frame", [np.random.rand(MIN_SIDE - 1, 200).astype(np.float32),   # too few rows
                                   np.full((H, W), np.nan, np.float32)])
def test_what_cannot_be_measured_is_none(frame):
    assert band_ratio(frame) is None and blur_drop(frame) is None
    gate = warmed([scene(s) for s in range(MIN_FRAMES)])
    assert gate.add(frame) is None and len(gate.drops) == MIN_FRAMES   # not recorded
    assert gate.step("blur", frame) == ("blur", True)                    # nothing measured: kept


@pytest.mark.parametrize("frame", [np.zeros((H, W), np.float32), np.full((H, W), 0.5, np.float32),
                                   np.ones((13, 17), np.float32)])        # any size, even under MIN_SIDE
@pytest.mark.parametrize("seen", [0, MIN_FRAMES])
def test_a_constant_frame_loses_a_blur_verdict(frame, seen):
    """An all-zero frame (a lens cap, a dead sensor) is called blur (0.97) by the shipped router;
    there is no detail a blur took away nor one a deblur can restore: demoted, not recorded."""
    assert band_ratio(frame) is None and blur_drop(frame) is None
    gate = BlurGate({"blur": "clean", "CB": "contrast"})
    for s in range(seen):
        gate.add(scene(s))
    assert gate.step("blur", frame) == ("clean", False)
    assert gate.step("CB", frame) == ("contrast", False)
    assert gate.step("noise", frame) == ("noise", True)                  # a noise verdict is the router's
    assert gate.step("clean", frame) == ("clean", True)
    assert gate.demoted == 2 and len(gate.drops) == seen
    tiny = np.zeros((13, 17), np.float32)
    tiny[5, 5] = 1.0                                                     # detail, but too small to measure: kept
    assert gate.step("blur", tiny) == ("blur", True)


@pytest.mark.parametrize("bad", [np.zeros((2, H, W)), np.zeros(5)])
def test_refuses_what_is_not_one_frame(bad):
    with pytest.raises(ValueError, match="one \\(H, W\\) frame"):
        band_ratio(bad)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="sigma"):
        blur_drop(scene(), sigma=0)
    with pytest.raises(ValueError, match="sigma_min"):
        BlurGate({}, sigma_min=-1)
    with pytest.raises(ValueError, match="min_frames"):
        BlurGate({}, min_frames=0)


def test_partners_and_mildest_blur_come_from_the_specs():
    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    assert blur_partners(specs) == {"blur": "clean", "CB": "contrast"}    # BN, CBN: noise, left alone
    assert min_blur_sigma(specs) == 1.0
    assert min_blur_sigma({"noise": specs["noise"]}) == DEFAULT_SIGMA_MIN
    soft = [{"op": "blur", "kernel": [3, 7], "sigma": [0.5, 1.0]}]
    assert min_blur_sigma({**specs, "soft": soft}) == 0.5
    # a task tir learn adds with a tone-free op next to the blur is not judged
    haze = [{"op": "haze", "strength": [0.2, 0.5]}]
    learned = {**specs, "haze": haze, "haze_blur": haze + specs["blur"]}
    assert "haze_blur" not in blur_partners(learned)


def test_gate_is_silent_until_it_has_seen_the_camera():
    gate = BlurGate({"blur": "clean"})
    for i in range(MIN_FRAMES):
        assert gate.threshold() is None
        assert gate.step("blur", scene(i)) == ("blur", True)
    assert gate.threshold() is not None and gate.demoted == 0
    assert gate.step("blur", scene(99)) == ("clean", False) and gate.demoted == 1


def test_the_reference_follows_a_camera_whose_sharpness_drifts_but_not_a_lasting_blur():
    """A camera whose recent frames are softer than its history (its focus drifted by less than
    the mildest blur) has them read sharp; a blur on them still reads soft, and a lasting blur does
    not become the camera's look (the threshold stays below its blurred reference); sharper recent
    frames never make the gate stricter."""
    gate = warmed([scene(s) for s in range(48)])
    long = gate.threshold()
    drifted = [blurred(scene(200 + i), 0.8) for i in range(MIN_FRAMES + 1)]
    x = drifted[-1]
    assert blur_drop(x) > long                        # soft for the camera's long history
    for f in drifted[:-1]:
        gate.add(f)
    gap = np.percentile(gate.blurred_drops, 25) - np.percentile(gate.drops, 25)
    assert 0 < gate.drift() <= DRIFT_MARGIN * gap + 1e-9 and gate.threshold() == pytest.approx(long + gate.drift(), abs=0.02)
    assert gate.step("CB", 0.4 * x + 0.15) == ("contrast", False)    # the drifted look: no blur
    for sigma in (1.0, 1.5):
        assert gate.step("CB", 0.4 * blurred(x, sigma) + 0.15) == ("CB", True)
    assert gate.status()["drift"] == pytest.approx(round(gate.drift(), 4))
    lasting = warmed([scene(s) for s in range(48)])
    for i in range(40):
        lasting.add(blurred(scene(400 + i), 1.0))
    assert lasting.drift() > 0 and lasting.threshold() < np.percentile(lasting.blurred_drops, 25)
    assert all(lasting.step("blur", blurred(scene(500 + i), 1.5)) == ("blur", True) for i in range(4))
    assert sum(lasting.step("blur", blurred(scene(500 + i), 1.0)) == ("blur", True) for i in range(4)) >= 3
    sharper = warmed([blurred(scene(s), 0.5) for s in range(48)])
    before = sharper.threshold()
    for i in range(MIN_FRAMES):
        sharper.add(scene(600 + i))
    assert sharper.drift() == 0.0 and sharper.threshold() <= before + 1e-9


def test_blur_is_judged_against_the_camera():
    sharp = warmed([scene(s) for s in range(12)])
    x = scene(53)
    assert sharp.step("blur", x) == ("clean", False)
    assert sharp.step("CB", 0.4 * x + 0.15) == ("contrast", False)
    assert sharp.step("BN", x) == ("BN", True) and sharp.last is None   # noise-carrying: not even measured
    for sigma in (1.0, 1.5, 2.0):                                # the spec's blur range, kept
        assert sharp.step("blur", blurred(x, sigma)) == ("blur", True)
        assert sharp.step("CB", 0.4 * blurred(x, sigma) + 0.15) == ("CB", True)
    assert sharp.demoted == 2
    # a camera with soft optics: its own frames are its normal, a blur on top of them is a blur
    soft = warmed([blurred(scene(s), 1.2) for s in range(12)])
    y = blurred(scene(53), 1.2)
    assert sharp.step("blur", y)[0] == "blur"                    # soft for the sharp camera
    assert soft.step("blur", y) == ("clean", False)              # normal for the soft one
    assert soft.step("blur", blurred(y, 1.5)) == ("blur", True)


def eight_bit(x):
    return (np.round(np.clip(x, 0, 1) * 255.0) / 255.0).astype(np.float32)


def test_value_quantisation_is_not_detail():
    """A contrast loss on an 8-bit frame keeps the 1/255 step and shrinks the detail: the step's
    white noise must not make a low-contrast blurred frame read sharp."""
    x = scene(3)
    assert quantum(eight_bit(x)) == pytest.approx(1 / 255.0, rel=1e-3)
    assert quantum(np.zeros((H, W), np.float32)) == 0.0
    assert quantum(x) < 1e-4                                   # float data: no step to speak of
    gate = warmed([eight_bit(scene(s)) for s in range(12)])
    for alpha in (0.2, 0.4, 0.6):                              # the contrast op's range, then 8 bits
        low_blurred = eight_bit(alpha * blurred(scene(50), 1.0) + 0.15)
        assert gate.step("CB", low_blurred) == ("CB", True), alpha
        assert gate.step("CB", eight_bit(alpha * scene(50) + 0.15)) == ("contrast", False), alpha


def test_only_noise_free_verdicts_join_the_history():
    """Noise raises the fine band: frames the router calls noisy (or unknown) must not move the
    camera's reference."""
    gate = warmed([scene(s) for s in range(12)])
    before = (list(gate.drops), gate.threshold())
    noisy = np.clip(scene(30) + np.random.default_rng(0).normal(0, 0.04, (H, W)), 0, 1).astype(np.float32)
    for task in ("noise", "BN", "CBN", "unknown"):
        gate.step(task, noisy)
    assert (list(gate.drops), gate.threshold()) == before and gate.last is None
    for task in ("clean", "contrast", "blur", "CB"):
        gate.step(task, scene(31))
    assert len(gate.drops) == 16


def test_carry_from_keeps_the_history():
    old = warmed([scene(s) for s in range(10)])
    old.step("blur", scene(40))
    new = BlurGate({"blur": "clean"})
    new.carry_from(old)
    assert list(new.drops) == list(old.drops) and list(new.blurred_drops) == list(old.blurred_drops)
    assert new.demoted == 1 and new.threshold() == pytest.approx(old.threshold())
    # a bundle whose mildest blur is another σ measures another drop: its history starts afresh
    milder = BlurGate({"blur": "clean"}, sigma_min=0.5)
    milder.carry_from(old)
    assert len(milder.drops) == 0 and milder.threshold() is None and milder.demoted == 1


# --- the Restorer ------------------------------------------------------------------------------

def _bundle(tmp, say):
    """Routes contrast (×2), blur (×3), CB (×4) with the shipped specs; a router that always
    names ``say``."""
    return one_hot_bundle(tmp, {"contrast": 2.0, "blur": 3.0, "CB": 4.0}, say, H, W)


@pytest.fixture(scope="module")
def blur_bundle(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("blurgate"), "blur")


def posterised(x, levels=12, level=0.45):
    """A fixed-gain camera set for a wider scene (K17): ``x``'s range mapped onto ``levels`` grey
    levels of 8 bits around ``level``, rounded (posterised)."""
    lo, hi = float(x.min()), float(x.max())
    return (level + np.round((x - lo) / (hi - lo) * (levels - 1)) / 255.0).astype(np.float32)


def test_blur_keeps_tone_tells_a_deblur_from_a_tone_lift():
    """Undoing a blur keeps the frame's low-pass, on a rich scene and on a posterised one; a route
    that lifts a posterised frame's tone by a few grey levels moves it by more than any blur
    could change it: not a deblur."""
    from tir.engines.blur_gate import blur_keeps_tone, blur_only_tasks

    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    assert blur_only_tasks(specs) == {"blur": 2.0}
    assert blur_only_tasks({"contrast": specs["contrast"]}) == {} and blur_only_tasks({}) == {}
    for seed in range(3):
        sharp = scene(seed)
        assert blur_keeps_tone(blurred(sharp, 2.0), sharp, 2.0)                 # the scene back
        post = posterised(sharp)
        soft = (np.round(blurred(post, 2.0) * 255.0) / 255.0).astype(np.float32)   # a blur, in 8 bits
        assert blur_keeps_tone(soft, post, 2.0)                                  # its deblur, posterised
        assert not blur_keeps_tone(soft, soft + 3.0 / 255.0, 2.0)                # lifted by 3 levels
        assert not blur_keeps_tone(soft, (soft - 0.45) * 2.0 + 0.45, 2.0)        # stretched
    assert blur_keeps_tone(np.zeros((2, 2), np.float32), np.ones((2, 2), np.float32), 2.0)   # too small
    with pytest.raises(ValueError):
        blur_keeps_tone(scene(), scene()[:, :10], 2.0)


def test_a_blur_route_that_moves_a_posterised_frames_tone_gives_it_back(blur_bundle):
    """K17: on a fixed-gain camera's posterised frames (a dozen grey levels) the blur route lifted
    the tone (−6.8 dB against the degraded frame): a blur-only route whose output moved the
    frame's tone by more than a blur can change it gives the frame back as it came in. A forced
    route and a restorer without tone alignment are not second-guessed."""
    frame = (np.round(blurred(posterised(scene(4)), 2.0) * 255.0) / 255.0).astype(np.float32)[None, None]
    r = Restorer(blur_bundle, every=1, hysteresis=1, blur_gate=False)            # the router says blur
    out = r.infer(frame)
    assert r.status()["task"] == "blur" and r.status()["blur_tone_refused"] == 1
    assert np.array_equal(out, frame)                                            # the route's ×3 refused
    assert np.allclose(Restorer(blur_bundle, task="blur").infer(frame), frame * 3.0)
    plain = Restorer(blur_bundle, every=1, hysteresis=1, blur_gate=False, tone_align=False)
    assert np.allclose(plain.infer(frame), frame * 3.0) and plain.status()["blur_tone_refused"] == 0


def test_dequantised_stays_in_each_count_step_and_takes_the_contours_away():
    """K19: a blurred scene in 40 counts (a 0.1 K per count camera after a contrast loss) is a
    staircase of hard contours, more fine detail than the smooth scene the counts were rounded
    from; de-quantised, every pixel stays inside its count step and the contours' excess detail
    is gone. A frame whose count step is fine is left as it is to within that step."""
    from tir.engines.restorer import dequantised

    def detail(a):   # RMS of the neighbour differences: the fine band the contours add to
        return float(np.sqrt(np.mean(np.square(np.diff(a, axis=0)), dtype=np.float64)
                             + np.mean(np.square(np.diff(a, axis=1)), dtype=np.float64)))

    for seed in range(3):
        soft = blurred(scene(seed), 2.0)
        truth = (soft - soft.min()) / (soft.max() - soft.min())
        x = (np.round(truth * 40) / 40).astype(np.float32)
        d = dequantised(x, 1 / 40)
        assert d.dtype == np.float32 and d.shape == x.shape
        assert np.abs(d - x).max() <= 0.5 / 40 + 1e-6
        assert detail(x) > detail(truth) > detail(d)
        assert np.abs(dequantised(truth, 1 / 16320) - truth).max() <= 0.5 / 16320 + 1e-6


def test_the_router_and_gates_see_coarse_counts_de_quantised_and_nothing_else(blur_bundle, monkeypatch):
    """The router is shown a frame de-quantised only when its count step is coarser for its span
    than one 8-bit grey level (a Y16 scene in 40 counts); an 8-bit camera's frame (count step 64
    of 16320 counts) and a Y16 frame of 1000 counts are shown as they are; the route restores the
    frame as it came in."""
    r = Restorer(blur_bundle, every=1, hysteresis=1, blur_gate=False, tone_align=False)
    seen = []
    classify = r.classify
    monkeypatch.setattr(r, "classify", lambda x, *a: seen.append(np.array(x)) or classify(x, *a))
    soft = blurred(scene(1), 2.0)
    x = (np.round((soft - soft.min()) / (soft.max() - soft.min()) * 40) / 40).astype(np.float32)[None, None]
    out = r.infer(x, meta={"norm": {"lo": 1200.0, "hi": 1240.0}})
    assert np.allclose(out, x * 3.0)                                             # the frame as it came
    assert not np.array_equal(seen[-1], x) and np.abs(seen[-1] - x).max() <= 0.5 / 40 + 1e-6
    assert r.status()["dequantised"] == 1
    for norm in ({"lo": 0.0, "hi": 16320.0, "count_step": 64}, {"lo": 1000.0, "hi": 2000.0}, None):
        r.infer(x, meta={} if norm is None else {"norm": norm})
        assert np.array_equal(seen[-1], x)
    # the same counts with the camera's noise of a count and a half: dithered, no contours to take away
    noisy = soft + np.random.default_rng(0).normal(0.0, 1.5 / 40 * (soft.max() - soft.min()), soft.shape)
    y = (np.round((noisy - soft.min()) / (soft.max() - soft.min()) * 40) / 40).astype(np.float32)[None, None]
    r.infer(y, meta={"norm": {"lo": 1200.0, "hi": 1240.0}})
    assert np.array_equal(seen[-1], y)
    assert r.status()["dequantised"] == 1


def test_restorer_passes_a_sharp_frame_through_and_deblurs_a_soft_one(blur_bundle):
    r = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False)
    assert r.blur_gate.partners == {"blur": "clean", "CB": "contrast"}
    r.warm_camera(np.stack([scene(s) for s in range(12)])[:, None])
    x = scene(60)[None, None]
    assert np.allclose(r.infer(x), x)                                       # not soft: pass-through
    s = r.status()
    assert s["decision"] == "clean" and s["gated_from"] == "blur" and s["blur"]["demoted"] == 1
    assert s["blur"]["frames"] == 13 and s["blur"]["drop"] < s["blur"]["threshold"]
    soft = blurred(scene(61), 1.5)[None, None]
    assert np.allclose(r.infer(soft), soft * 3.0) and r.status()["task"] == "blur"


def test_a_soft_frame_is_not_promoted_to_contrast(tmp_path):
    """The contrast gate gives an unknown verdict the contrast part on a compressed frame
    (engines/contrast_gate.py, K10) unless the blur gate measures the frame soft for this camera:
    a blur lowers a frame's extent by itself."""
    from tir.engines.restorer import PASSTHROUGH

    def agc(x):
        return ((x - x.min()) / (x.max() - x.min())).astype(np.float32)   # a camera's per-frame AGC

    r = Restorer(one_hot_bundle(tmp_path, {"contrast": 2.0, "blur": 3.0, "CB": 4.0}, "contrast", H, W, unknown=True),
                 every=1, hysteresis=1, tone_align=False, fpn_gate=False)
    r.warm_camera(np.stack([agc(scene(s)) for s in range(12)])[:, None])
    sharp = (agc(scene(60)) * 0.4 + 0.15)[None, None]
    assert np.allclose(r.infer(sharp), sharp * 2.0) and r.status()["decision"] == "contrast"
    assert r.status()["contrast"]["promoted"] == 1
    r.reset()
    soft = (blurred(agc(scene(61)), 1.5) * 0.4 + 0.15)[None, None]
    assert np.allclose(r.infer(soft), soft) and r.route == PASSTHROUGH
    s = r.status()
    assert s["decision"] == "unknown" and s["contrast"]["promoted"] == 1 and s["blur"]["drop"] > s["blur"]["threshold"]


def test_gate_off_forced_task_and_student_prompt(blur_bundle, monkeypatch):
    frames = np.stack([scene(s) for s in range(12)])[:, None]
    x = scene(60)[None, None]
    off = Restorer(blur_bundle, every=1, hysteresis=1, blur_gate=False, tone_align=False)
    off.warm_camera(frames)
    assert off.blur_gate is None and off.status()["blur"] is None and np.allclose(off.infer(x), x * 3.0)
    forced = Restorer(blur_bundle, task="blur")
    assert forced.blur_gate is None and np.allclose(forced.infer(x), x * 3.0)
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["contrast", "blur", "CB", "clean"]))
    r = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False)
    w = np.array([0.1, 0.5, 0.3, 0.1], np.float32)
    r._soft = True
    assert np.allclose(r._gate_prompt(w, "blur"), w)
    r._soft = False
    assert np.allclose(r._gate_prompt(w, "clean"), [0.4, 0.0, 0.0, 0.6])   # blur -> clean, CB -> contrast


def test_stats_and_status_line_show_the_gate(blur_bundle):
    from tir.edge.pipeline.stats import BlurStatus, StatsSnapshot
    from tir.tools.run import status_line

    r = Restorer(blur_bundle, every=1, hysteresis=1)
    r.warm_camera(np.stack([scene(s) for s in range(12)])[:, None])
    r.infer(scene(70)[None, None])
    snap = StatsSnapshot(blur=BlurStatus(**r.status()["blur"]))
    assert snap.to_dict()["blur"]["demoted"] == 1
    assert "blur gate demoted 1" in status_line(snap.to_dict())
    assert "blur gate" not in status_line({**snap.to_dict(), "blur": {"demoted": 0}})


def test_restorer_passes_a_constant_frame_through(blur_bundle):
    r = Restorer(blur_bundle, every=1, hysteresis=1)          # a fresh camera: the gate has seen nothing
    x = np.full((1, 1, H, W), 0.2, np.float32)
    assert np.array_equal(r.infer(x), x)                      # not the blur route's ×3
    s = r.status()
    assert s["decision"] == "clean" and s["gated_from"] == "blur" and s["blur"]["demoted"] == 1


def test_a_large_frame_is_measured_on_its_centred_window():
    """The cost per routed frame stays that of a 640×512 frame: a larger frame is measured on its
    centred 640×512 window, for the history and the verdict alike."""
    from tir.engines.blur_gate import MEASURE_WINDOW

    big = cv2.resize(scene(7, 256, 320), (1280, 1024), interpolation=cv2.INTER_CUBIC)
    w, h = MEASURE_WINDOW
    centre = big[(1024 - h) // 2:(1024 - h) // 2 + h, (1280 - w) // 2:(1280 - w) // 2 + w]
    a, b = BlurGate({"blur": "clean"}), BlurGate({"blur": "clean"})
    assert a.add(big) == pytest.approx(b.add(centre))
    assert list(a.blurred_drops) == pytest.approx(list(b.blurred_drops))


# --- under noise -------------------------------------------------------------------------------

NOISY = {"BN": "noise", "CBN": "CN"}


def big_scene(seed):
    """A 256×320 frame (half resolution 128×160) with detail at several scales."""
    return cv2.resize(scene(seed, 128, 160), (320, 256), interpolation=cv2.INTER_CUBIC) + \
        0.5 * (scene(seed + 100, 256, 320) - 0.4)


def sensor_noise(x, seed, sigma=10 / 255, stripes=3 / 255):
    """The noise spec's kind of noise: white noise of ``sigma`` plus column offsets of ``stripes``."""
    rng = np.random.default_rng(seed)
    cols = rng.normal(0, stripes, (1, x.shape[1]))
    return (x + rng.normal(0, sigma, x.shape) + cols).astype(np.float32)


def test_noise_sigma_reads_white_noise_and_ignores_stripes():
    from tir.engines.fpn_gate import noise_sigma

    x = blurred(big_scene(1), 1.0)
    assert noise_sigma(x) < 0.004
    for sigma in (5 / 255, 15 / 255):
        assert noise_sigma(sensor_noise(x, 2, sigma, stripes=0)) == pytest.approx(sigma, rel=0.1)
        assert noise_sigma(sensor_noise(x, 2, sigma, stripes=6 / 255)) == pytest.approx(sigma, rel=0.1)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_noise_sigma_and_destripe_refuse_what_they_cannot_measure(value):
    """A NaN or inf (the gate never passes one: _half_res checks first) or a frame under 2×2 px is
    one clear error, never a NaN σ."""
    from tir.engines.blur_gate import destripe
    from tir.engines.fpn_gate import noise_sigma

    x = scene()
    x[7, 9] = value
    with pytest.raises(ValueError, match="NaN or infinite"):
        noise_sigma(x)
    with pytest.raises(ValueError, match="NaN or infinite"):
        destripe(x)
    for shape in ((1, 640), (512, 1), (0, 0)):
        with pytest.raises(ValueError, match="at least 2×2 px"):
            noise_sigma(np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        destripe(np.zeros((0, 4), np.float32))
    assert noise_sigma(np.zeros((2, 3), np.float32)) == 0.0
    assert noise_sigma(scene()[None, None]) == pytest.approx(noise_sigma(scene()))


def test_values_near_the_float32_limit_are_not_measured_not_nan():
    """Finite values that overflow the filters (|x| near 3.4e38: a hostile caller, never a source)
    gave NaN drops and a ValueError out of BlurGate.step; now None, and the router's verdict stands."""
    from tir.engines.blur_gate import noise_sigma, noisy_blur_drop

    huge = (np.random.default_rng(0).random((256, 320)) * 3.3e38).astype(np.float32)
    assert band_ratio(huge) is None and blur_drop(huge) is None and noisy_blur_drop(huge) is None
    assert np.isfinite(noise_sigma(huge))
    gate = BlurGate({"blur": "clean"}, noisy_partners=NOISY)
    for s in range(MIN_FRAMES + 2):
        gate.step("clean", big_scene(s))
    assert gate.noisy_band() is not None
    for task in ("BN", "noise", "blur", "clean"):
        assert gate.step(task, huge) == (task, True)
    assert gate.status()["drop_noisy"] is None and len(gate.drops) == MIN_FRAMES + 2


def test_destripe_takes_out_column_and_row_offsets():
    from tir.engines.blur_gate import destripe
    from tir.engines.metrics import column_fpn

    x = big_scene(3)
    rng = np.random.default_rng(4)
    striped = (x + rng.normal(0, 0.02, (1, x.shape[1])) + rng.normal(0, 0.02, (x.shape[0], 1))).astype(np.float32)
    assert column_fpn(destripe(striped) * 255) < 0.3 * column_fpn(striped * 255)
    assert column_fpn(destripe(striped.T).T * 255) < 0.3 * column_fpn(striped * 255)   # rows alike
    assert np.abs(destripe(x) - x).mean() < 0.01                                        # the scene stays


def test_noisy_drop_sees_a_blur_under_noise():
    from tir.engines.blur_gate import noisy_blur_drop

    x = big_scene(5)
    clean, soft = noisy_blur_drop(x), noisy_blur_drop(blurred(x, 1.5))
    assert clean < soft
    noisy, noisy_soft = noisy_blur_drop(sensor_noise(x, 6)), noisy_blur_drop(sensor_noise(blurred(x, 1.5), 6))
    assert noisy == pytest.approx(clean, abs=0.5 * (soft - clean))     # the noise is taken out
    assert noisy_soft == pytest.approx(soft, abs=0.5 * (soft - clean))
    assert noisy_blur_drop(x[:40]) is None                               # under 2 × MIN_SIDE rows
    with pytest.raises(ValueError, match="sigma"):
        noisy_blur_drop(x, sigma=0)


def test_noisy_partners_come_from_the_specs():
    from tir.engines.blur_gate import noisy_blur_partners

    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    assert noisy_blur_partners(specs) == NOISY
    assert BlurGate.for_bundle(specs).noisy_partners == NOISY


def test_gate_sets_the_blur_part_of_a_noisy_verdict():
    gate = BlurGate({"blur": "clean"}, noisy_partners=NOISY)
    for s in range(12):
        assert (gate.noisy_band() is None) == (s < MIN_FRAMES)
        gate.step("clean", big_scene(s))
    lo, hi = gate.noisy_band()
    assert lo < hi
    sharp, soft = sensor_noise(big_scene(41), 7), sensor_noise(blurred(big_scene(41), 2.0), 7)
    assert gate.step("BN", sharp) == ("noise", True) and gate.noisy_soft is False
    assert gate.noisy_moves() == NOISY
    assert gate.step("CBN", 0.5 * sharp + 0.2) == ("CN", True)
    assert gate.step("noise", soft) == ("BN", True) and gate.noisy_soft is True
    assert gate.noisy_moves() == {"noise": "BN", "CN": "CBN"}
    assert gate.step("CN", 0.5 * soft + 0.2) == ("CBN", True)
    assert gate.step("BN", soft) == ("BN", True) and gate.step("noise", sharp) == ("noise", True)
    assert gate.changed_noisy == 4 and gate.demoted == 0
    assert len(gate.noisy_drops) == 12                          # noisy frames do not join the history
    s = gate.status()
    assert s["changed_noisy"] == 4 and s["band_noisy"] == [round(lo, 4), round(hi, 4)]
    # a frame between the references keeps the router's verdict
    gate.last_noisy = None
    mid = 0.5 * (lo + hi)
    gate._measure_noisy = lambda frame, record: mid
    assert gate.step("BN", sharp) == ("BN", True) and gate.noisy_soft is None and gate.noisy_moves() == {}
    new = BlurGate({"blur": "clean"}, noisy_partners=NOISY)
    new.carry_from(gate)
    assert new.noisy_band() == pytest.approx((lo, hi)) and new.changed_noisy == 4


def test_restorer_moves_the_student_prompt_under_noise(blur_bundle, monkeypatch):
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["noise", "BN", "CN", "CBN"]))
    r = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False)
    r.blur_gate.noisy_partners, r.blur_gate._noisy_blurred = dict(NOISY), {v: k for k, v in NOISY.items()}
    w = np.array([0.4, 0.3, 0.2, 0.1], np.float32)
    r.blur_gate.noisy_soft = None
    assert np.allclose(r._gate_prompt(w, "noise"), w)
    r.blur_gate.noisy_soft = False
    assert np.allclose(r._gate_prompt(w, "noise"), [0.7, 0.0, 0.3, 0.0])
    r.blur_gate.noisy_soft = True
    assert np.allclose(r._gate_prompt(w, "BN"), [0.0, 0.7, 0.0, 0.3])


def test_a_pinned_camera_reference_keeps_a_always_blurred_stream_blurred(blur_bundle):
    """Without a pin, a camera whose every frame is blurred becomes its own reference and the blur
    verdict is demoted; pinned to frames of its healthy look, the frames stay soft for it."""
    sharp = np.stack([scene(s) for s in range(12)])[:, None]
    stream = [blurred(scene(100 + k), 1.5)[None, None] for k in range(40)]
    free = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False)
    free.warm_camera(sharp)
    pinned = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False)
    assert pinned.pin_camera(sharp) == 12 and pinned.blur_gate.pinned
    for x in stream:
        free.infer(x)
        pinned.infer(x)
    assert free.status()["task"] == "passthrough" and free.status()["blur"]["demoted"] > 0
    assert pinned.status()["task"] == "blur" and pinned.status()["blur"]["demoted"] == 0
    assert pinned.status()["blur"]["frames"] == 12                 # the history did not move
    assert pinned.status()["camera_reference"] == {"pinned": 12} and free.status()["camera_reference"] is None
    with pytest.raises(ValueError, match="at least one frame"):
        pinned.pin_camera(np.zeros((0, 1, H, W), np.float32))


def test_a_blur_verdict_before_the_camera_has_a_sharpness_reference_is_held(blur_bundle):
    """A camera met cold (or after a camera change): the router names every frame ``blur``, but
    the gate has no history of this camera to tell its own softness from a blur that happened,
    so the router's blur part alone is held (pass-through) until the history exists; the frames
    still join it, and then it judges: this camera's own look passes, a further blur is restored."""
    r = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False, fpn_gate=False)
    own = [blurred(scene(100 + k), 1.0)[None, None] for k in range(MIN_FRAMES + 4)]   # a soft optic
    outs = [np.allclose(r.infer(x), x) for x in own]
    s = r.status()
    assert all(outs) and s["blur"]["held"] == MIN_FRAMES and s["blur"]["threshold"] is not None
    assert s["blur"]["frames"] == MIN_FRAMES + 4                            # held frames joined the history
    softer = blurred(scene(200), 3.0)[None, None]
    assert np.allclose(r.infer(softer), softer * 3.0) and r.status()["task"] == "blur"


def test_a_held_blur_part_moves_the_student_prompt(blur_bundle, monkeypatch):
    monkeypatch.setattr(Restorer, "prompts", property(lambda self: ["contrast", "blur", "CB", "clean"]))
    r = Restorer(blur_bundle, every=1, hysteresis=1, contrast_gate=False)
    w = np.array([0.1, 0.5, 0.3, 0.1], np.float32)
    r._soft, r._blur_held = True, True                     # unjudged (soft), the blur part held
    assert np.allclose(r._gate_prompt(w, "clean"), [0.4, 0.0, 0.0, 0.6])   # blur -> clean, CB -> contrast


def test_each_blur_route_is_held_to_the_blur_it_undoes():
    """K17: a learned blur task of σ up to 9 px (``tir learn``) must not loosen the shipped σ ≤ 2
    route's tone bound: with the specs' largest σ for every task, a route that lifts a large
    uniform area by two grey levels passed under σ 9 (the anti-UAV sky: refused frames fell from
    12 to 1 of 12, those let through 3.5-8 dB worse than the blurred input). A task is held to its
    own steps' blur (several blurs compose: √(Σ σ²)); a step that states no σ draws the op's
    default (σ ≤ 2)."""
    from tir.engines.blur_gate import blur_keeps_tone, blur_only_tasks

    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    specs["wide_blur"] = [{"op": "blur", "kernel": [9, 41], "sigma": [4.0, 9.0]}]
    specs["twice"] = [{"op": "blur", "sigma": [1.0, 2.0]}, {"op": "blur", "sigma": 2.0}]
    specs["plain_blur"] = [{"op": "blur"}]
    specs["no_blur"] = [{"op": "blur", "sigma": 0.0}]
    only = blur_only_tasks(specs)
    assert only == {"blur": 2.0, "wide_blur": 9.0, "twice": pytest.approx(np.sqrt(8.0)), "plain_blur": 2.0}
    sky = scene(3)
    sky[: int(0.9 * H)] = 0.3                                        # a uniform sky over a strip of scene
    soft = blurred(sky, 2.0)
    lifted = soft.copy()
    lifted[: int(0.9 * H)] += 2.0 / 255.0                            # the route lifts the sky
    assert not blur_keeps_tone(soft, lifted, only["blur"])           # refused for the σ ≤ 2 route
    assert blur_keeps_tone(soft, lifted, only["wide_blur"])          # what the σ 9 bound would let through


def test_a_count_step_the_frame_is_not_on_is_not_used_to_de_quantise_it(blur_bundle, monkeypatch):
    """K19 on a wrong meta: a sharp frame whose meta claims a count step it does not have (64
    counts of a 255-count span, a step larger than its span, twice its true step) was shown to the
    router smoothed by up to half that step (1/8 of its span: a sharp frame shown blurred); the
    view is de-quantised only when the frame's values lie on the claimed step's grid."""
    r = Restorer(blur_bundle, every=1, hysteresis=1, blur_gate=False, tone_align=False)
    seen = []
    classify = r.classify
    monkeypatch.setattr(r, "classify", lambda x, *a: seen.append(np.array(x)) or classify(x, *a))
    sharp = (np.round(scene(2) * 255.0) / 255.0).astype(np.float32)
    forty = (np.round(blurred(scene(1), 2.0) * 40) / 40).astype(np.float32)
    wrong = ((sharp, 255.0, 64), (sharp, 255.0, 1e6), (forty, 40.0, 2))
    for frame, span, step in wrong:
        r.infer(frame[None, None], meta={"norm": {"lo": 0.0, "hi": span, "count_step": step}})
        assert np.array_equal(seen[-1][0, 0], frame)                             # shown as it is
    assert r.status()["dequantised"] == 0
    r.infer(forty[None, None], meta={"norm": {"lo": 0.0, "hi": 40.0}})           # its own step: de-quantised
    assert r.status()["dequantised"] == 1 and not np.array_equal(seen[-1][0, 0], forty)

    from tir.engines.restorer import on_count_grid
    assert on_count_grid(sharp, 1 / 255) and on_count_grid(forty, 1 / 40)
    assert not any(on_count_grid(frame, step / span) for frame, span, step in wrong)
    assert not on_count_grid(np.zeros((8, 8), np.float32), 1 / 40)              # nothing unclipped to read



def test_a_digital_zoom_step_is_the_cameras_sampling_not_a_blur():
    """K22: a camera whose digital zoom steps to 4× delivers its centre enlarged, softer than its own
    unzoomed frames; a blur verdict on such a frame loses its blur part (counted in ``enlarged``),
    while the same frame blurred after the enlargement (its traces erased) keeps it."""
    from test_resampling import sensor, zoomed

    def frame(seed, zoom=1, sigma=0.0):
        x = sensor(256, 320, seed)
        x = zoomed(x, zoom) if zoom > 1 else x
        return eight_bit((blurred(x.astype(np.float32), sigma) if sigma else x) / 255.0)
    gate = warmed([frame(s) for s in range(12)])
    for seed in (41, 42, 43):
        z = frame(seed, 4)
        assert blur_drop(z) > gate.threshold()                    # soft for this camera, by the drop alone
        assert gate.step("blur", z) == ("clean", False)
        assert gate.step("CB", z) == ("contrast", False)          # its partner without the blur
        for sigma in (2.5, 3.0):   # over half a sensor pixel at 4×: the traces are gone (at σ ≤ 2 px some stay)
            assert gate.step("blur", frame(seed, 4, sigma)) == ("blur", True)
    assert gate.enlarged == 6 and gate.status()["enlarged"] == 6
    assert gate.step("blur", frame(44)) == ("clean", False) and gate.enlarged == 6   # a sharp frame: as before


# --- session 21: a blur below the count step of undithered counts ------------------------------

def counted(x, span, full=64.0):
    """``x`` ([0, 1]) as a Y16 camera counts it: ``span`` counts over its range, rounded to whole
    counts, shown on a normaliser span of ``full`` counts (a flat scene under the 64-count minimum
    span: one count is 1/64 of the model input)."""
    return (np.round(x * span) / full).astype(np.float32)


def fog(seed):
    """A flat scene (fog, sea) of 40 counts, blurred by σ 2 px and counted: no noise dithers it."""
    s = blurred(scene(seed), 4.0)
    s = (s - s.min()) / (s.max() - s.min())
    return counted(blurred(s, 2.0), 40.0)


def test_blur_below_step_reads_the_blurs_reach_against_the_count_step():
    """A σ 2 blur changes a 40-count flat scene by under half a count (rms: rounding erased what it
    took); the same blur on a 2,000-count scene, or on an 8-bit scene, changes it by many steps."""
    from tir.engines.blur_gate import blur_below_step

    for seed in range(3):
        assert blur_below_step(fog(seed), 2.0, 1.0 / 64.0)
        assert not blur_below_step(counted(blurred(scene(seed), 2.0), 2000.0, 2000.0), 2.0, 1.0 / 2000.0)
        assert not blur_below_step(eight_bit(blurred(scene(seed), 2.0)), 2.0, 1.0 / 255.0)
    for sigma, step in ((0.0, 1.0 / 64.0), (2.0, 0.0), (2.0, -1.0)):
        with pytest.raises(ValueError):
            blur_below_step(fog(0), sigma, step)


def test_floor_counts_sigma_is_the_median_of_the_floor_in_counts():
    from tir.engines.fpn_gate import MIN_FLOOR_FRAMES, FPNGate

    gate = FPNGate({"clean": "noise"}, white_sigma=5 / 255)
    gate.floor_counts.extend([0.1] * (MIN_FLOOR_FRAMES - 1))
    assert gate.floor_counts_sigma() is None                          # too few frames
    gate.floor_counts.extend([0.3, 2.0, 2.0])
    assert gate.floor_counts_sigma() == pytest.approx(0.1)


Y16_FOG_META = {"bits": 16, "source_bits": 16, "norm": {"lo": 28000.0, "hi": 28064.0}}


@pytest.fixture(scope="module")
def gentle_bundle(tmp_path_factory):
    """A blur route that moves a frame by 0.5 % (a deblur's few-pixel move keeps the tone: K17 lets
    it through) in a bundle with the noise task (so the FPN gate, which holds the camera's floor,
    is on); the router always says blur."""
    return one_hot_bundle(tmp_path_factory.mktemp("gentle"), {"noise": 2.0, "blur": 1.005, "CB": 4.0}, "blur", H, W)


@pytest.mark.parametrize("floor, meta, refused", [
    (0.1, Y16_FOG_META, True),                                   # undithered counts: the route's move is rounding
    (1.5, Y16_FOG_META, False),                                  # a camera whose noise dithers its counts (y16_msb)
    (0.1, {"bits": 14, "source_bits": 8, "norm": {"lo": 0.0, "hi": 16320.0}}, False),   # 8-bit: display-referred
    (None, Y16_FOG_META, False),                                 # no floor in counts yet: not judged
    (0.1, {"bits": 16, "source_bits": 16, "norm": {"lo": 28000.0, "hi": 28016.0}}, False),  # a step the frame is not on
])
def test_a_blur_route_on_undithered_counts_below_one_step_gives_the_frame_back(gentle_bundle, floor, meta, refused):
    """Session 21 (y16_fog, blur −2.11 dB): on a Y16 camera whose own noise does not dither its
    counts, a blur that changes the frame by less than half a count step was rounded away; the blur
    route's output is then given back as the frame came in (``blur_step_refused``). A camera whose
    noise dithers its counts, a display-referred frame and a camera without a floor keep the route."""
    from tir.engines.fpn_gate import MIN_FLOOR_FRAMES

    frame = fog(5)[None, None]
    r = Restorer(gentle_bundle, every=1, hysteresis=1, blur_gate=False)
    assert r.fpn_gate is not None
    if floor is not None:
        r.fpn_gate.floor_counts.extend([floor] * (2 * MIN_FLOOR_FRAMES))
    out = r.infer(frame, meta)
    assert r.status()["task"] == "blur" and r.status()["blur_tone_refused"] == 0   # K17 lets the move through
    assert r.status()["blur_step_refused"] == int(refused)
    assert np.array_equal(out, frame) if refused else np.allclose(out, frame * 1.005)


def test_a_frame_between_verdicts_is_judged_clearly_sharp_only_below_the_band():
    """``shows_sharp`` (the blur-carrying routes' per-frame check, engines/restorer.py ``_released``):
    a sharp frame of the camera is clearly sharp, a blurred one is not; nothing before the band
    exists or without a noise-carrying blur pair; nothing is recorded."""
    gate = BlurGate({"blur": "clean"}, noisy_partners=NOISY)
    assert gate.shows_sharp(big_scene(0)) is None                 # no band yet
    for s in range(12):
        gate.step("clean", big_scene(s))
    drops, noisy = list(gate.drops), list(gate.noisy_drops)
    assert gate.shows_sharp(big_scene(41)) is True
    assert gate.shows_sharp(blurred(big_scene(41), 1.5)) is False
    assert gate.shows_sharp(blurred(big_scene(42), 1.0)) is False   # the mildest blur of the specs
    assert list(gate.drops) == drops and list(gate.noisy_drops) == noisy
    assert gate.shows_sharp(np.full((8, 8), 0.5, np.float32)) is None   # too small to measure
    plain = BlurGate({"blur": "clean"})
    for s in range(12):
        plain.step("clean", big_scene(s))
    assert plain.shows_sharp(big_scene(41)) is None



def test_a_frame_the_measure_under_noise_leaves_undecided_is_read_at_full_resolution():
    """``shows_sharp`` on a frame whose half-resolution measure sits in the band's undecided middle
    (docs/cameras.md "Round 9": a camera's own clean frames after a blur segment read there, and the
    blur route kept restoring them until the next verdict): the gate's full-resolution measure
    decides against its own threshold, the bound at which it demotes a blur verdict; a frame with the
    specs' mildest blur (σ 1 px) is never read sharp that way; nothing is recorded."""
    gate = BlurGate({"blur": "clean"}, noisy_partners=NOISY)
    for s in range(12):
        gate.step("clean", big_scene(s))
    lo, hi = gate.noisy_band()
    drops, noisy = list(gate.drops), list(gate.noisy_drops)
    undecided = [s for s in range(40, 120) if lo <= noisy_blur_drop(big_scene(s)) <= hi]
    assert len(undecided) >= 5                       # the camera's own frames that read in the middle
    for s in undecided:
        sharp = blur_drop(centre_window(big_scene(s))) <= gate.threshold()
        assert gate.shows_sharp(big_scene(s)) is sharp, s
    assert sum(gate.shows_sharp(big_scene(s)) for s in undecided) >= 5
    for s in range(40, 120):                         # the mildest blur: read sharp only below the band
        soft = blurred(big_scene(s), 1.0)
        assert gate.shows_sharp(soft) is bool(noisy_blur_drop(soft) < lo), s
    assert list(gate.drops) == drops and list(gate.noisy_drops) == noisy


def test_a_frame_no_sharper_than_one_read_blurred_is_not_read_at_full_resolution_again():
    """A lasting blur's frames mostly read in the band's undecided middle, and each was read at full
    resolution (371 of 400 frames of the virtual camera's blur, ~4 ms each; docs/BENCHMARKS.md
    "Session 24"): once the full read found a frame blurred, a frame that reads no sharper under
    noise is blurred without a second read, a sharper one is still read (and let go when sharp), and
    after ``forget_reads`` (a verdict, a switch) the next undecided frame is read again."""
    gate = BlurGate({"blur": "clean"}, noisy_partners=NOISY)
    for s in range(12):
        gate.step("clean", big_scene(s))
    lo, hi = gate.noisy_band()
    limit = gate.threshold()
    soft = [blurred(big_scene(s), 1.0) for s in range(40, 120)]
    soft = [f for f in soft if lo <= noisy_blur_drop(f) <= hi and blur_drop(centre_window(f)) > limit]
    assert len(soft) >= 3                             # undecided under noise, blurred at full resolution
    soft.sort(key=noisy_blur_drop)
    first = soft[0]
    assert gate.shows_sharp(first) is False and gate.full_reads == 1
    assert gate.read_blurred == noisy_blur_drop(first)
    for f in soft[1:]:                                # no sharper under noise: no second read
        assert gate.shows_sharp(f) is False
    assert gate.full_reads == 1
    sharp = [big_scene(s) for s in range(40, 120)]
    sharp = [f for f in sharp if lo <= noisy_blur_drop(f) < gate.read_blurred
             and blur_drop(centre_window(f)) <= limit]
    assert sharp                                      # a sharper frame is still read, and let go
    assert gate.shows_sharp(sharp[0]) is True and gate.full_reads == 2
    gate.forget_reads()
    assert gate.read_blurred is None
    assert gate.shows_sharp(soft[-1]) is False and gate.full_reads == 3


def test_the_blur_route_passes_through_a_clearly_sharp_frame_between_verdicts(tmp_path):
    """A blur that stops (docs/cameras.md "Session 23"): the route waits for the router's verdicts
    (every 8 frames, hysteresis 3), but once two frames in a row read clearly sharp for this camera
    the blur route passes them through; one sharp read between soft frames, or a soft frame, keeps
    the route; a forced task is run as it is."""
    from tiny_models import scheduled

    h, w = big_scene(0).shape
    bundle = one_hot_bundle(tmp_path, {"blur": 3.0, "noise": 2.0, "BN": 4.0}, "blur", h, w)
    r = scheduled(Restorer(bundle, every=8, hysteresis=3, tone_align=False, contrast_gate=False))
    r.warm_camera(np.stack([big_scene(s) for s in range(12)])[:, None])
    soft = blurred(big_scene(50), 2.0)[None, None]
    assert np.allclose(r.infer(soft), soft * 3.0) and r.route == "blur"      # the router's verdict
    sharp = big_scene(51)[None, None]
    assert np.allclose(r.infer(sharp), sharp * 3.0)                     # one sharp read: still the route
    assert np.allclose(r.infer(soft), soft * 3.0)
    assert np.allclose(r.infer(sharp), sharp * 3.0) and r.status()["blur_released"] == 0
    for _ in range(3):                                                  # the blur stops; no verdict yet
        assert np.allclose(r.infer(sharp), sharp) and r.route == "blur"
    assert r.status()["blur_released"] == 3 and r.status()["noise_released"] == 0
    assert np.allclose(r.infer(soft), soft * 3.0)                       # soft again: the route again
    assert np.allclose(r.infer(sharp), sharp * 3.0)                     # and a new run of sharp reads
    forced = Restorer(bundle, tone_align=False, task="blur")             # the user's choice: not gated
    forced.warm_camera(np.stack([big_scene(s) for s in range(12)])[:, None])
    assert np.allclose(forced.infer(sharp), sharp * 3.0) and forced.status()["blur_released"] == 0


def test_a_verdict_makes_the_blur_route_read_its_frames_afresh(tmp_path):
    """The restorer forgets the blur gate's ``read_blurred`` on every verdict (and switch), so a
    frame read blurred once does not hold the route past the router's next verdict."""
    from tiny_models import scheduled

    h, w = big_scene(0).shape
    bundle = one_hot_bundle(tmp_path, {"blur": 3.0, "noise": 2.0, "BN": 4.0}, "blur", h, w)
    r = scheduled(Restorer(bundle, every=8, hysteresis=3, tone_align=False, contrast_gate=False))
    r.warm_camera(np.stack([big_scene(s) for s in range(12)])[:, None])
    soft = blurred(big_scene(50), 2.0)[None, None]
    r.infer(soft)                                           # the router's verdict: blur
    assert r.route == "blur"
    r.blur_gate.read_blurred = -1.0                         # as if a full read had found a frame blurred
    for _ in range(7):                                      # between verdicts it stays
        r.infer(soft)
    assert r.blur_gate.read_blurred == -1.0
    r.infer(soft)                                           # the 9th frame: the next verdict
    assert r.blur_gate.read_blurred is None or r.blur_gate.read_blurred != -1.0


def _bn_route(tmp_path, say="BN"):
    """A restorer on the ``say`` route (the router always says it), past start-up, its gates fed
    12 sharp frames of the camera."""
    from tiny_models import scheduled

    h, w = big_scene(0).shape
    bundle = one_hot_bundle(tmp_path, {"blur": 3.0, "noise": 2.0, "BN": 4.0}, say, h, w)
    r = scheduled(Restorer(bundle, every=8, hysteresis=3, tone_align=False, contrast_gate=False))
    r.warm_camera(np.stack([big_scene(s) for s in range(12)])[:, None])
    soft = blurred(big_scene(50), 2.0)
    if say == "BN":
        soft = soft + np.random.default_rng(1).normal(0, 10 / 255, (h, w))
    r.infer(soft.astype(np.float32)[None, None])           # the router's verdict
    assert r.route == say
    return r


def test_a_noisy_frame_between_two_sharp_reads_breaks_the_run_under_a_compound_route(tmp_path):
    """``SHARP_RUN`` counts frames *in a row* that read clearly sharp (engines/restorer.py
    ``_released``): under BN a frame that still shows the noise part is never read for blur, and
    it must end the run, not leave it standing (branch s23: sharp, noisy, sharp released the
    third frame after a single sharp read next to it)."""
    r = _bn_route(tmp_path)
    assert r.fpn_gate.shows_own_noise(big_scene(52)) and r.fpn_gate.shows_own_noise(big_scene(53))
    sharp, other = big_scene(52)[None, None], big_scene(53)[None, None]
    noisy = sensor_noise(big_scene(54), 2, stripes=0.0)[None, None]
    assert np.allclose(r.infer(sharp), sharp * 4.0)       # one sharp read: the route
    assert np.allclose(r.infer(noisy), noisy * 4.0)       # noise: the route, the run ends
    assert np.allclose(r.infer(other), other * 4.0)       # one sharp read again: still the route
    assert r.status()["blur_released"] == 0
    assert np.allclose(r.infer(sharp), sharp)             # the second in a row: released
    assert r.status()["blur_released"] == 1 and r.status()["noise_released"] == 1


def test_a_batch_is_released_only_when_every_frame_in_it_shows_none_of_the_route_parts(tmp_path):
    """``infer`` takes (N, 1, H, W) batches; the whole batch is planned at once, so it may pass
    through only when each of its frames shows none of the route's parts (branch s23 judged the
    newest alone: a blurred frame before a sharp one passed through unrestored, counted as sharp)."""
    r = _bn_route(tmp_path, "blur")
    sharp = big_scene(52)[None, None]
    r.infer(sharp)
    r.infer(sharp)
    assert r.status()["blur_released"] == 1
    soft = blurred(big_scene(60), 2.0)[None, None]
    batch = np.concatenate([soft, sharp])
    assert np.allclose(r.infer(batch), batch * 3.0)       # one blurred frame: the whole batch routed
    assert r.status()["blur_released"] == 1
    two = np.concatenate([sharp, big_scene(53)[None, None]])
    assert np.allclose(r.infer(two), two * 3.0)           # after a soft frame: the run starts again
    assert np.allclose(r.infer(two), two)                 # every frame sharp, two in a row: released
    assert r.status()["blur_released"] == 3
