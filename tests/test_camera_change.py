"""A new camera mid-stream (a reconnect, another frame size): the
Preprocess stage marks the frame ``camera_change`` (edge/pipeline/stages.py), and the Restorer's
contrast, blur and FPN gates forget the old camera's history on it (engines/restorer.py
``Restorer.new_camera``); nothing else restarts them (a sustained degradation on an unchanged
camera keeps being restored)."""
import numpy as np
import pytest
from test_fpn_gate import H, W, _bundle, scene, white

from tir.edge.frame import Frame, now
from tir.edge.pipeline.stages import MODEL_INPUT_KEY, Preprocess
from tir.engines import degrade as deg
from tir.engines.blur_gate import BlurGate
from tir.engines.contrast_gate import ContrastGate, lowpass_ends, lowpass_span
from tir.engines.fpn_gate import MIN_FLOOR_FRAMES, FPNGate
from tir.engines.restorer import Restorer
from tir.engines.router import CLEAN, UNKNOWN


def counts(x, lo=1000.0, span=8000.0):
    """A [0, 1] scene as raw 16-bit counts ``lo + x * span``."""
    return np.clip(lo + np.asarray(x, np.float64) * span, 0, 65535).astype(np.uint16)


def frame(raw, **meta):
    return Frame(raw=raw, seq=0, t_capture=now(), meta={"bits": 16, "source_bits": 16, **meta})


def marks(pre, frames):
    out = []
    for f in frames:
        pre(f)
        out.append(f.meta.get("camera_change"))
    return out


def test_a_steady_stream_is_never_marked():
    pre = Preprocess()
    got = marks(pre, [frame(counts(scene(seed=i)), connection=0) for i in range(6)])
    assert got == [None] * 6 and pre.camera_changes == 0


def test_another_frame_size_marks_the_frame():
    pre = Preprocess()
    frames = [frame(counts(scene(seed=i))) for i in range(3)] + \
             [frame(counts(scene(h=96, w=128, seed=i))) for i in range(3)]
    assert marks(pre, frames) == [None, None, None, ["size"], None, None]


def test_a_reconnect_marks_the_first_frame_through_the_new_connection():
    pre = Preprocess()
    frames = [frame(counts(scene(seed=i)), connection=c) for i, c in enumerate((0, 0, 1, 1, 1, 2))]
    assert marks(pre, frames) == [None, None, ["connection"], None, None, ["connection"]]
    # a source that does not say (no "connection" in its meta) is never marked for it
    assert marks(Preprocess(), [frame(counts(scene(seed=i))) for i in range(3)]) == [None] * 3


def test_another_bit_depth_marks_the_frame_and_sets_the_count_range_again():
    # the count range was kept from the first frame: a camera switching from its 8-bit AGC output
    # to 14-bit counts on the same connection was mapped through 0..255<<6 (saturated), unmarked
    def eight(i):
        return frame(counts(scene(seed=i), lo=0, span=255) << 6, bits=14, source_bits=8)

    def raw(i):
        return frame(counts(scene(seed=i), lo=1000, span=8000), bits=14, source_bits=14)

    pre = Preprocess()
    frames = [eight(0), eight(1), raw(2), raw(3), raw(4)]
    assert marks(pre, frames) == [None, None, ["bits"], None, None]
    assert pre.normalizer.fixed is None and pre.normalizer.max_count == (1 << 14) - 1
    norm = frames[-1].meta["norm"]
    assert 900 <= norm["lo"] < norm["hi"] <= 9100      # the raw frames' own range, not the 8-bit full scale
    assert marks(pre, [eight(5)]) == [["bits"]]
    assert (pre.normalizer.fixed.lo, pre.normalizer.fixed.hi) == (0.0, float(255 << 6))
    # a fixed range the caller gave is the caller's: kept across a depth change
    from tir.edge.normalize import Normalizer

    given = Normalizer()
    given.set_fixed_range(0.0, 4000.0)
    pre = Preprocess(given)
    assert marks(pre, [raw(0), eight(1)]) == [None, ["bits"]]
    assert (given.fixed.lo, given.fixed.hi) == (0.0, 4000.0)


def test_a_normaliser_range_jump_is_not_a_camera_change():
    """A gain switch jumps the normaliser's range, but so does a hot object coming into view on the
    same camera (its FPN offsets and noise floor still hold): not marked."""
    pre = Preprocess()
    frames = [frame(counts(scene(seed=i), span=8000.0)) for i in range(4)] + \
             [frame(counts(scene(seed=i), span=1000.0)) for i in range(4, 8)]    # 8x: a gain switch
    assert marks(pre, frames) == [None] * 8 and pre.normalizer.jumps == 1


def test_an_eight_bit_stream_has_a_fixed_map_and_no_range_mark():
    pre = Preprocess()
    grey = [(np.clip(scene(seed=i) * g, 0, 1) * 255).astype(np.uint16) << 6 for i, g in enumerate((1, 1, .2, .2))]
    frames = [Frame(raw=r, seq=0, t_capture=now(), meta={"bits": 14, "source_bits": 8}) for r in grey]
    assert marks(pre, frames) == [None] * 4


def test_each_frame_through_a_fresh_preprocess_is_never_marked():
    """tir eval: frames are independent scenes, each through a fresh Preprocess."""
    got = [marks(Preprocess(), [frame(counts(scene(h=h, w=w, seed=1), span=s))])[0]
           for h, w, s in ((120, 160, 8000.0), (96, 128, 500.0))]
    assert got == [None, None]


# --- the gates forget their camera history ------------------------------------------------------

def test_the_gates_restart_their_camera_history_unless_pinned():
    specs = {t: deg.load_spec(t).steps for t in deg.TASKS}
    fpn, blur = FPNGate.for_bundle(specs), BlurGate.for_bundle(specs)
    contrast = ContrastGate.for_bundle(specs, None)
    frames = [scene(seed=i) for i in range(12)]
    for f in frames:
        fpn.add(f)
        blur.add(f)
        contrast.add(lowpass_span(f), ends=lowpass_ends(f))
    assert len(fpn.floor) == 12 and len(blur.drops) > 0 and len(contrast.spans) == 12
    assert contrast.tone_reference() is not None and blur.threshold() is not None
    fpn.offsets = np.zeros(W, np.float32)
    assert fpn.restart() and blur.restart() and contrast.restart()
    assert len(fpn.floor) == len(fpn.seen) == 0 and fpn.offsets is None and fpn.floor_sigma() == (None, None)
    assert len(blur.drops) == len(blur.blurred_drops) == len(blur.noisy_drops) == 0 and blur.threshold() is None
    assert len(contrast.spans) == len(contrast.lows) == len(contrast.end_lows) == 0
    assert contrast.tone_reference() is None and contrast.reference == contrast.prior
    for gate in (fpn, blur, contrast):
        for f in frames:
            gate.add(f) if gate is not contrast else gate.add(lowpass_span(f), ends=lowpass_ends(f))
        gate.pinned = True
        assert gate.restart() is False                      # the user's pinned reference stays
    assert len(fpn.floor) == 12 and len(contrast.spans) == 12 and len(blur.drops) > 0


# --- the Restorer ---------------------------------------------------------------------------------

def _route(r, x, meta=None):
    return r.infer(x[None, None], meta)


def test_a_new_camera_is_judged_against_its_own_noise_not_the_old_cameras(tmp_path):
    """The s6 case in small: a quiet camera builds the FPN gate's floor; then a camera whose every
    clean frame carries 6 grey levels of its own white noise (a Boson-class DDE look), which the
    router calls noise. Without a signal the old floor calls every such frame noisy, for good;
    with the reconnect's mark the floor restarts, is the new camera's own within
    MIN_FLOOR_FRAMES routed frames, and its frames pass through."""
    results = {}
    for signal in (False, True):
        r = Restorer(_bundle(tmp_path / str(signal), "noise"), every=1, hysteresis=1, tone_align=False)
        for i in range(MIN_FLOOR_FRAMES + 4):                       # the old camera's own (quiet) frames
            r.fpn_gate.step(CLEAN, scene(seed=i))
        harmed = []
        for i in range(3 * MIN_FLOOR_FRAMES):
            x = white(scene(seed=100 + i), 6.0, seed=100 + i)
            meta = {"camera_change": ["connection"]} if signal and i == 0 else {}
            harmed.append(not np.allclose(_route(r, x, meta), x))
        results[signal] = harmed
        assert r.status()["camera_changes"] == int(signal)
    assert all(results[False][MIN_FLOOR_FRAMES:])                  # the old floor: never recovers
    assert not any(results[True][MIN_FLOOR_FRAMES + 1:])           # its own floor: passes through
    r = Restorer(_bundle(tmp_path / "status", "noise"), every=1, hysteresis=1, tone_align=False)
    _route(r, scene(), {"camera_change": ["connection", "size"]})
    assert r.status()["camera_change"] == ["connection", "size"]


def test_a_sustained_degradation_on_the_same_camera_keeps_its_floor(tmp_path):
    """No mark, no restart: a quiet camera's frames, then 4x MIN_FLOOR_FRAMES frames of the spec's
    noise on the same camera (same connection, size and range), all through one Preprocess: none
    is marked and every noisy frame stays restored to the end."""
    r = Restorer(_bundle(tmp_path, "noise"), every=1, hysteresis=1, tone_align=False)
    pre = Preprocess()
    restored = []
    for i in range(MIN_FLOOR_FRAMES + 4 + 4 * MIN_FLOOR_FRAMES):
        quiet = i < MIN_FLOOR_FRAMES + 4
        x = scene(seed=i) if quiet else white(scene(seed=i), 8.0, seed=i)
        f = frame(counts(x), connection=0)
        pre(f)
        assert f.meta.get("camera_change") is None
        y = f.meta.pop(MODEL_INPUT_KEY)
        if quiet:
            r.fpn_gate.step(CLEAN, y)                                # the camera's own floor
        else:
            restored.append(not np.allclose(_route(r, y, f.meta), y))
    assert all(restored) and r.status()["camera_changes"] == 0


def _warmed(r, n=12):
    """The gates given references from ``n`` frames of the camera (unpinned), so the start-up's
    warming (every frame routed until they exist) ends at the first routed frame."""
    r.warm_camera(np.stack([scene(seed=200 + i) for i in range(n)]))
    return r


def test_a_new_camera_starts_the_routing_afresh_and_routes_its_first_frame(tmp_path):
    r = _warmed(Restorer(_bundle(tmp_path, "noise"), every=8, hysteresis=3, tone_align=False))
    x = white(scene(), 12.0)                                        # noisy against the camera's look
    _route(r, x)                                                    # frame 0: routed, start-up switch
    assert r.route == "noise" and r.decisions == 1
    for _ in range(4):
        _route(r, x)                                                # not on the schedule
    assert r.decisions == 1
    _route(r, x, {"camera_change": ["connection"]})                 # routed at once, as at start-up
    assert r.decisions == 2 and r.status()["camera_changes"] == 1
    # the new camera has no white-noise floor yet: the router's noise verdict alone is held
    assert r.route == "passthrough" and r.status()["fpn"]["held"] == 1


def test_after_a_camera_change_every_frame_is_routed_until_the_gates_have_a_reference(tmp_path):
    """every=8: after the change the schedule would route 1 frame in 8, and the FPN gate's floor
    (MIN_FLOOR_FRAMES routed frames) would take 8x as many frames; while it is missing every frame
    is routed, then the schedule returns."""
    from tir.engines.restorer import WARM_FRAMES_PER_EVERY

    r = Restorer(_bundle(tmp_path, "noise"), every=8, hysteresis=2, tone_align=False)
    for i in range(MIN_FLOOR_FRAMES + 4):
        r.fpn_gate.step(CLEAN, scene(seed=i))                       # the old, quiet camera
    _route(r, scene(seed=50))
    before = r.decisions
    harmed = []
    for i in range(WARM_FRAMES_PER_EVERY * 8):
        x = white(scene(seed=100 + i), 6.0, seed=100 + i)          # the new camera's own look
        harmed.append(not np.allclose(_route(r, x, {"camera_change": ["connection"]} if i == 0 else {}), x))
    assert r.fpn_gate.floor_sigma()[1] == "routed"
    routed = r.decisions + r.observed - before
    # the FPN floor (8 routed frames), then the blur history (8 clean verdicts once the noise is the
    # camera's own), then 1 in 8 again: far more than the 8 the schedule routes in 64, far fewer than 64
    assert MIN_FLOOR_FRAMES <= routed <= 2 * MIN_FLOOR_FRAMES + 8 and r.blur_gate.threshold() is not None
    # the route is decided on the change's frame and then on the schedule's turns only (frames 8, 16, ..., 64)
    assert r.decisions - before == 1 + 8 and r.observed == routed - 9
    # held before the new camera's floor exists, its own noise after
    assert not any(harmed) and r.status()["fpn"]["held"] >= MIN_FLOOR_FRAMES - 1
    # without a change the schedule stays 1 in 8
    n = r.decisions
    for i in range(16):
        _route(r, scene(seed=300 + i))
    assert r.decisions - n == 2


def test_a_camera_met_cold_is_a_new_camera_every_frame_is_routed_until_the_gates_have_references(tmp_path):
    """At start-up the gates know nothing of the camera: a clean camera whose own white noise the
    router reads as noise must reach the FPN gate's floor within ~MIN_FLOOR_FRAMES frames, not
    within ``every`` times as many (1 in 8 routed: a DDE camera had 80 of its first 400 clean
    frames given the noise task, docs/cameras.md session 14); once the references exist the
    schedule is 1 in ``every`` again. A started restorer counts no camera change."""
    from tir.engines.restorer import WARM_FRAMES_PER_EVERY

    r = Restorer(_bundle(tmp_path, "noise"), every=8, hysteresis=2, tone_align=False)
    harmed = []
    for i in range(WARM_FRAMES_PER_EVERY * 8):
        x = white(scene(seed=100 + i), 6.0, seed=100 + i)          # the camera's own look
        harmed.append(not np.allclose(_route(r, x), x))
    assert r.fpn_gate.floor_sigma()[1] == "routed" and r.blur_gate.threshold() is not None
    assert MIN_FLOOR_FRAMES <= r.decisions + r.observed <= 2 * MIN_FLOOR_FRAMES + 8
    # the verdicts off the schedule only fed the gates: the route was decided on the 8 turns in 64
    assert r.decisions == 8 and r.status()["observed"] == r.observed >= MIN_FLOOR_FRAMES - 1
    # before the floor the router's noise verdicts are held, after it they are the camera's own noise
    assert not any(harmed) and r.status()["fpn"]["held"] >= MIN_FLOOR_FRAMES - 1
    assert r.status()["camera_changes"] == 0
    n = r.decisions
    for i in range(16):
        _route(r, scene(seed=300 + i))
    assert r.decisions - n == 2


def test_gates_with_references_keep_the_schedule_from_the_first_frame(tmp_path):
    """A pinned reference (tir run's --reference, the virtual camera's clean frames) or gates that
    already know the camera end the start-up warming at once: 1 frame in ``every`` is routed."""
    r = Restorer(_bundle(tmp_path, "noise"), every=8, hysteresis=2, tone_align=False)
    r.pin_camera(np.stack([scene(seed=200 + i) for i in range(12)]))
    for i in range(16):
        _route(r, scene(seed=300 + i))
    assert r.decisions == 2


def test_a_file_source_says_through_which_opening_a_frame_came(tmp_path):
    import cv2

    from tir.edge.sources import open_source

    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), (scene(seed=i) * 255).astype(np.uint8))
    src = open_source(f"file://{tmp_path}?rate=max").start()
    got = [src.read(timeout=2.0) for _ in range(2)]
    src.close()
    assert [f.meta["connection"] for f in got] == [0, 0]


def test_the_warm_up_ends_after_its_frames_even_routed_every_frame(tmp_path):
    """every=1 (tir eval, or tir run --every 1): every frame is on the schedule's turn, and the
    warm-up still ends after WARM_FRAMES_PER_EVERY frames. Here the blur gate never gets a
    reference (the router says BN on every frame: a noise-carrying verdict is not recorded), so its
    hold keeps BN's blur part off for the warm-up's frames only, then the router's BN stands."""
    from tir.engines.restorer import WARM_FRAMES_PER_EVERY

    r = Restorer(_bundle(tmp_path, "BN"), every=1, hysteresis=1, tone_align=False, fpn_gate=False)
    factors = []
    for i in range(WARM_FRAMES_PER_EVERY + 4):
        x = scene(seed=i)
        out = _route(r, x)
        factors.append(round(float(np.median(out / np.maximum(x, 1e-6))), 3))
    assert r.blur_gate.threshold() is None
    assert factors == [7.0] * WARM_FRAMES_PER_EVERY + [5.0] * 4      # noise route (held), then BN
    assert r.status()["blur"]["held"] == WARM_FRAMES_PER_EVERY


def test_a_pinned_reference_of_another_frame_size_is_let_go_with_the_reason(tmp_path, caplog):
    """tir run --reference with frames of another size than the camera's (another camera or mode,
    or the camera changed resolution since): the per-pixel references do not hold, so the pin is
    let go, the gates learn the camera afresh (the warm-up, as at start-up) and the status and the
    log say why; a reference of the camera's own size stays pinned."""
    import logging

    same = Restorer(_bundle(tmp_path / "a", "noise"), every=8, hysteresis=2, tone_align=False)
    same.pin_camera(np.stack([scene(seed=i) for i in range(12)]))
    _route(same, white(scene(seed=50), 12.0))
    assert same.status()["camera_reference"] == {"pinned": 12} and same.fpn_gate.pinned

    other = Restorer(_bundle(tmp_path / "b", "noise"), every=8, hysteresis=2, tone_align=False)
    other.pin_camera(np.stack([scene(h=96, w=128, seed=i) for i in range(12)]))
    with caplog.at_level(logging.WARNING, logger="tir.engines.restorer"):
        _route(other, white(scene(seed=50), 12.0))
    s = other.status()
    assert "128x96" in s["camera_reference"]["dropped"] and "160x120" in s["camera_reference"]["dropped"]
    assert not any(g.pinned for g in (other.contrast_gate, other.blur_gate, other.fpn_gate))
    assert s["camera_changes"] == 1 and s["camera_change"] == ["reference size"]
    assert s["fpn"]["held"] == 1 and s["task"] == "passthrough"     # cold again: the router's noise alone is held
    assert "camera reference dropped" in caplog.text
    _route(other, white(scene(seed=51), 12.0))
    assert other.status()["camera_changes"] == 1                    # once


def test_a_pinned_reference_is_let_go_when_the_cameras_bit_depth_changes(tmp_path, caplog):
    """A camera change marked ``bits`` (16-bit counts -> its 8-bit AGC output) kept the pinned
    reference of the previous depth: its noise floor and sharpness were measured on frames that
    normalise differently. Let go as for another size, with the reason; another reason (a
    reconnect at the same depth) keeps the pin."""
    import logging

    kept = Restorer(_bundle(tmp_path / "a", "noise"), every=8, hysteresis=2, tone_align=False)
    kept.pin_camera(np.stack([scene(seed=i) for i in range(12)]))
    _route(kept, scene(seed=50), {"camera_change": ["connection"], "bits": 14})
    assert kept.status()["camera_reference"] == {"pinned": 12} and kept.fpn_gate.pinned

    r = Restorer(_bundle(tmp_path / "b", "noise"), every=8, hysteresis=2, tone_align=False)
    r.pin_camera(np.stack([scene(seed=i) for i in range(12)]))
    with caplog.at_level(logging.WARNING, logger="tir.engines.restorer"):
        _route(r, scene(seed=50), {"camera_change": ["bits"], "bits": 14, "source_bits": 8})
    s = r.status()
    assert s["camera_reference"]["dropped"].startswith("the camera's bit depth changed (now 8-bit)")
    assert not any(g.pinned for g in (r.contrast_gate, r.blur_gate, r.fpn_gate))
    assert s["camera_changes"] == 1 and s["camera_change"] == ["bits"] and "camera reference dropped" in caplog.text


def test_a_reference_pinned_to_fewer_frames_than_the_gates_need_ends_the_warm_up_at_once(tmp_path):
    """tir run --reference-frames 2: the pinned gates take no routed frame into their histories, so
    routing every frame cannot give the FPN gate its floor; the warm-up must not run for 8 x
    ``every`` frames holding every noise verdict (it passed a noisy stream through for 64 frames
    and routed 56 of them off the schedule for nothing)."""
    r = Restorer(_bundle(tmp_path, "noise"), every=8, hysteresis=1, tone_align=False)
    r.pin_camera(np.stack([scene(seed=200 + i) for i in range(2)]))
    passed = 0
    for i in range(24):
        x = white(scene(seed=300 + i), 12.0, seed=i)
        passed += bool(np.allclose(_route(r, x), x))
    assert r.fpn_gate.floor_sigma()[0] is None            # the pin is too short for a floor, as before
    assert r.observed == 0 and r.decisions == 3 and r.fpn_gate.held == 0
    assert passed == 0


def test_the_user_saying_the_camera_changed_marks_the_next_frame_once():
    """A camera swapped on the same connection at the same size gives no signal of its own;
    ``request_camera_change`` (POST /camera/new) marks the next frame, once, with ``user``."""
    pre = Preprocess()
    frames = [frame(counts(scene(seed=i)), connection=0) for i in range(5)]
    assert marks(pre, frames[:2]) == [None, None]
    pre.request_camera_change()
    assert marks(pre, frames[2:]) == [["user"], None, None] and pre.camera_changes == 1
    pre.request_camera_change()  # with a reconnect on the same frame: both reasons
    assert marks(pre, [frame(counts(scene(seed=9)), connection=1)]) == [["connection", "user"]]


def test_post_camera_new_restarts_the_gates_of_a_running_pipeline(tmp_path):
    """``tir run``'s page offers ``camera/new`` when it restores: the Restorer sees the frame
    marked ``user`` and counts the camera change; a run that restores nothing refuses it."""
    import http.client
    import json

    from tir.edge.outputs import open_output
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources.base import open_source

    model = Restorer(_bundle(tmp_path, "noise"), every=8)
    server = open_output("http://127.0.0.1:0")
    source = open_source(f"synthetic://?size={W}x{H}&frames=30")  # live: 1 s, the POST lands mid-run
    pipe = Pipeline(source, model, [server])
    pipe.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/camera/new", headers={"X-Tir-Token": server.token})
        resp = conn.getresponse()
        assert resp.status == 202 and json.loads(resp.read()) == {"ok": True, "requested": "camera/new"}
        conn.close()
        pipe.wait()
    finally:
        pipe.stop()
    status = model.status()
    assert status["camera_changes"] == 1 and status["camera_change"] == ["user"]
    bare = open_output("http://127.0.0.1:0").start()
    try:
        bare.attach(lambda: None, {})
        code, reply = bare.act("camera/new")
        assert code == 409 and "restores nothing" in reply["error"]
    finally:
        bare.close()
