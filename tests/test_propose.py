"""Op-parameter estimators (engines/propose.py): each recovers a known parameter within 25 %
on virtual-camera frames degraded with that parameter, and stays quiet on clean frames."""
import numpy as np
import pytest

from tir.edge.sources.synthetic import render_frames
from tir.engines import propose as P
from tir.engines.degrade import DegradationSpec, counts_range, degrade


@pytest.fixture(scope="module")
def clean():
    raw = render_frames(2, size=(320, 256), start=0)
    lo, hi = counts_range(raw[0])
    return (raw.astype(np.float32) - lo) / (hi - lo)


def degraded(clean, *steps, seed=0):
    return degrade(clean, DegradationSpec("t", list(steps)), seed)


CASES = [
    ({"op": "gaussian_noise", "sigma": 8.0}, "gaussian_noise", "sigma", 8.0),
    ({"op": "gaussian_noise", "sigma": 5.0}, "gaussian_noise", "sigma", 5.0),
    ({"op": "stripes", "gain_std": 0.0, "offset_std": 6.0, "column_p": 1.0}, "stripes", "offset_std", 6.0),
    ({"op": "stripes", "gain_std": 0.05, "offset_std": 2.0, "column_p": 1.0}, "stripes", "gain_std", 0.05),
    ({"op": "vignetting", "strength": 0.4, "gamma": 1.5}, "vignetting", "strength", 0.4),
    ({"op": "vignetting", "strength": 0.4, "gamma": 1.5}, "vignetting", "gamma", 1.5),
    ({"op": "vignetting", "strength": 0.25, "gamma": 2.5}, "vignetting", "gamma", 2.5),
    ({"op": "blur", "kernel": 11, "sigma": 1.5}, "blur", "sigma", 1.5),
    ({"op": "blur", "kernel": 7, "sigma": 1.0}, "blur", "sigma", 1.0),
    ({"op": "jpeg", "quality": 10}, "jpeg", "quality", 10),
    ({"op": "jpeg", "quality": 30}, "jpeg", "quality", 30),
    ({"op": "contrast", "contrast": -0.6, "brightness": 0.15}, "contrast", "contrast", -0.6),
    ({"op": "pixel_dropout", "dead_p": 0.004, "hot_p": 0.002}, "pixel_dropout", "dead_p", 0.004),
]


@pytest.mark.parametrize("step,op,key,true", CASES, ids=[f"{c[1]}.{c[2]}={c[3]}" for c in CASES])
def test_estimator_recovers_known_parameter(clean, step, op, key, true):
    for x in degraded(clean, step):
        est = P.ESTIMATORS[op](x)
        assert est["present"], (op, est)
        assert abs(est[key] - true) <= 0.25 * abs(true), (op, key, est[key], true)


def test_column_vs_row_orientation(clean):
    rows = degraded(clean, {"op": "stripes", "gain_std": 0.0, "offset_std": 8.0, "column_p": 0.0})
    cols = degraded(clean, {"op": "stripes", "gain_std": 0.0, "offset_std": 8.0, "column_p": 1.0})
    assert not P.estimate_stripes(rows[0])["columns"] and P.estimate_stripes(cols[0])["columns"]


def test_clean_frames_show_no_op(clean):
    for x in clean:
        fits = P.fit_frame(x)
        assert not any(f["present"] for f in fits.values()), {k: v for k, v in fits.items() if v["present"]}


def test_composition_vignetting_then_column_stripes(clean):
    steps = [{"op": "vignetting", "strength": 0.4, "gamma": 1.5},
             {"op": "stripes", "gain_std": 0.0, "offset_std": 6.0, "column_p": 1.0}]
    fits = P.fit_frames(list(degraded(clean, *steps)))
    spec = P.propose(fits, "vs")
    assert [s["op"] for s in spec["steps"]] == ["vignetting", "stripes"]
    vig, stripes = spec["steps"]
    assert abs(np.mean(vig["strength"]) - 0.4) <= 0.1 and abs(np.mean(vig["gamma"]) - 1.5) <= 0.375
    assert abs(np.mean(stripes["offset_std"]) - 6.0) <= 1.5 and stripes["column_p"] == 1.0
    assert spec["fit"]["vignetting"]["residual"] < spec["fit"]["vignetting"]["residual_without"]
    DegradationSpec.from_json(spec)  # a loadable spec for tir learn --spec


def test_propose_refuses_an_empty_cluster():
    with pytest.raises(ValueError, match="no frames"):
        P.propose([], "empty")


def test_op_space_map():
    raw = np.array([[1000, 2000]], np.uint16)
    np.testing.assert_allclose(P.to_op_space(raw, (1000, 3000)), [[0.0, 0.5]])
    with pytest.raises(ValueError, match="op range"):
        P.to_op_space(raw, (5, 5))


def small_frames(n=4):
    """Virtual-camera frames at a Lepton's 160×120, whose scene has 8-pixel-period texture
    (blockiness 1.15-1.35 with no JPEG anywhere), in op space."""
    raw = render_frames(n, size=(160, 120), start=0)
    lo, hi = counts_range(raw[0])
    return (raw.astype(np.float32) - lo) / (hi - lo)


def test_column_stripes_are_not_blocking():
    import cv2

    rng = np.random.default_rng(5)
    for x in small_frames():
        grey = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
        striped = np.clip(grey + rng.normal(0, 8, (1, grey.shape[1])), 0, 255).astype(np.uint8)
        assert abs(P.blockiness(striped) - P.blockiness(grey)) < 0.05
        ok, buf = cv2.imencode(".jpg", striped, [int(cv2.IMWRITE_JPEG_QUALITY), 20])
        assert P.blockiness(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)) > P.blockiness(striped) + 0.3


def test_scene_texture_without_a_ghost_is_not_jpeg_and_a_decode_is():
    import cv2

    frames = small_frames()
    assert max(P.blockiness(np.rint(x * 255).astype(np.uint8)) for x in frames) > P.BLOCKINESS_SCREEN
    for x in frames:
        est = P.estimate_jpeg(x)
        assert not est["present"], est
        grey = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", grey, [int(cv2.IMWRITE_JPEG_QUALITY), 60])
        est = P.estimate_jpeg(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255)
        assert est["present"] and est["quality"] == 60 and est["ghost_sharpness"] < P.GHOST_SHARPNESS


def test_a_decode_cut_off_its_grid_is_still_jpeg_and_texture_off_grid_is_not():
    """A JPEG decode cropped since (its 8×8 grid no longer at the frame's origin) showed no
    blocking on the frame's grid (or only its texture's, with no ghost) and was never JPEG; found at its own grid phase, its ghost there
    (re-encoded from its first whole block) gives its quality back. The virtual camera's 8-pixel
    texture, cut the same ways, reads blocking at its best phase but has no ghost there."""
    import cv2

    for x in small_frames():
        grey = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", grey, [int(cv2.IMWRITE_JPEG_QUALITY), 40])
        decode = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        for top, left in ((1, 3), (5, 6), (0, 2)):
            cut = decode[top:, left:]
            est = P.estimate_jpeg(cut.astype(np.float32) / 255)
            assert est["present"] and est["quality"] == 40, est
            assert est["grid"] == [(8 - top) % 8, (8 - left) % 8]
            assert not P.estimate_jpeg(x[top:, left:])["present"]
