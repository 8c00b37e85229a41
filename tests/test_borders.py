"""engines/borders.py: a grabber's constant bars (pillarbox, letterbox) told from a dark scene, and
the Restorer judging and restoring the picture inside them (docs/cameras.md "Session 21")."""
import numpy as np
import pytest

from tir.engines.borders import AGREE_FRAMES, MIN_BAR, NONE, BorderTracker, flat_borders, inner, pasted


def scene(h, w, seed, noise=0.01):
    """A thermal-like picture in [0, 1]: a gradient, warm blobs and the sensor's white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    x = 0.3 + 0.3 * yy + 0.1 * np.sin(7 * xx + seed)
    for cx, cy in rng.uniform(0, 1, (5, 2)):
        x += 0.3 * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.005)
    return np.clip(x + rng.normal(0, noise, (h, w)), 0, 1).astype(np.float32)


def boxed(picture, t=0, b=0, l=0, r=0, value=0.0):
    h, w = picture.shape
    out = np.full((h + t + b, w + l + r), value, np.float32)
    out[t:t + h, l:l + w] = picture
    return out


def test_pillarbox_letterbox_and_windowbox_are_found():
    p = scene(120, 160, 0)
    assert flat_borders(boxed(p, l=30, r=30)) == (0, 0, 30, 30)
    assert flat_borders(boxed(p, t=8, b=8)) == (8, 8, 0, 0)
    assert flat_borders(boxed(p, t=6, b=6, l=20, r=20)) == (6, 6, 20, 20)
    assert flat_borders(boxed(p, l=25, value=1.0)) == (0, 0, 25, 0)          # a white OSD bar, one side
    assert flat_borders(p) == NONE


def test_dark_scene_edges_sky_and_dead_lines_are_not_bars():
    p = scene(120, 160, 1)
    dark = p.copy()
    dark[:, :30] = np.random.default_rng(1).normal(0.02, 0.004, (120, 30))   # a cold edge: dark, not flat
    assert flat_borders(dark) == NONE
    dead = boxed(p, l=MIN_BAR - 1)                                          # a dead column or two, no bar
    assert flat_borders(dead) == NONE
    grey = boxed(p, l=20, r=20, value=0.5)                                  # flat but mid-grey: not an extreme
    assert flat_borders(grey) == NONE
    assert flat_borders(boxed(p, l=100, r=100)) == NONE                     # more bar than picture
    assert flat_borders(np.zeros((64, 64), np.float32)) == NONE             # a shutter: no picture
    with pytest.raises(ValueError, match="2-D"):
        flat_borders(np.zeros((1, 64, 64)))


def test_the_tracker_follows_agreeing_camera_frames_only():
    t = BorderTracker()
    frames = [boxed(scene(120, 160, s), l=30, r=30) for s in range(AGREE_FRAMES + 1)]
    for f in frames[:AGREE_FRAMES - 1]:
        assert not t.add(f) and t.box is None
    assert t.add(frames[AGREE_FRAMES - 1]) and t.box == (0, 0, 30, 30)
    assert t.box_for((1, 1, 120, 220)) == (0, 0, 30, 30) and t.box_for((1, 1, 120, 160)) is None
    noisy = frames[0] + np.random.default_rng(9).normal(0, 0.05, frames[0].shape).astype(np.float32)
    assert not t.add(noisy) and t.box == (0, 0, 30, 30)        # one frame does not move the box
    t.pinned = True
    for _ in range(AGREE_FRAMES):
        assert not t.add(scene(120, 220, 5))                   # frames under evaluation do not join
    t.pinned = False
    changed = [t.add(scene(120, 220, s)) for s in range(AGREE_FRAMES)]
    assert changed.count(True) == 1 and t.box is None          # the bars went away: the whole frame
    assert t.status() is None


def test_inner_and_pasted_round_trip():
    f = boxed(scene(40, 60, 2), t=4, b=4, l=10, r=10)[None, None]
    box = (4, 4, 10, 10)
    assert inner(f, box).shape == (1, 1, 40, 60)
    out = pasted(f, inner(f, box) * 2.0, box)
    assert np.array_equal(out[..., :, :10], f[..., :, :10]) and np.allclose(inner(out, box), inner(f, box) * 2.0)


def test_bars_changed_with_the_picture_come_out_as_the_grabber_draws_them():
    t = BorderTracker()
    frames = [boxed(scene(60, 80, s), l=20, r=20) for s in range(AGREE_FRAMES)]
    for f in frames:
        t.add(f)
    live = frames[-1][None, None]
    assert t.bars(live) is not None and np.array_equal(t.bars(live), live)     # a live frame: its own, exactly
    degraded = (0.1 + 0.8 * live + np.random.default_rng(3).normal(0, 0.02, live.shape)).astype(np.float32)
    out = t.bars(degraded)
    assert np.array_equal(out[..., :20], live[..., :20]) and np.array_equal(out[..., -20:], live[..., -20:])
    assert np.array_equal(inner(out, t.box), inner(degraded, t.box))          # the picture is left to the routes
    with pytest.raises(ValueError, match="box's size"):
        t.bars(np.zeros((1, 1, 60, 80), np.float32))
