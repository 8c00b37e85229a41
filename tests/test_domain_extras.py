"""Domain randomisation extras for the router (engines/training/domain.py ``extras``): what real
cameras differ in beyond the tone, scale, white floor and compression (session 23, issue 9:
the router on cameras it never saw). Synthetic frames only."""
import cv2
import numpy as np
import pytest

from tir.engines.training import domain


def _scene(h=96, w=128, seed=0):
    """A frame with edges (a bright block, a bar pattern) on a smooth gradient, [0, 1] float32."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.3 + 0.2 * x / w
    img[20:60, 30:70] += 0.35
    img[70:90, :] += 0.15 * (np.sin(x[70:90, :] * 0.9) > 0)
    img += 0.02 * np.random.default_rng(seed).standard_normal((h, w)).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def _fine_energy(f):
    """Energy of the finest band (frame minus its σ 1 px blur), the router's e1 feature."""
    return float(np.mean((f - cv2.GaussianBlur(f, (0, 0), 1.0)) ** 2))


def test_without_extras_the_recipe_draws_exactly_as_before():
    """No extras: the same generator gives the same frames as the explicit empty tuple, and the
    extras' draws do not happen (the generator ends in the same state)."""
    x = np.stack([_scene(seed=s) for s in range(4)])
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(domain.randomize(x, r1), domain.randomize(x, r2, extras=()))
    assert r1.random() == r2.random()


@pytest.mark.parametrize("extras", [("optics",), ("shading",), ("floor",), domain.EXTRAS])
def test_extras_are_deterministic_per_seed_in_range_and_change_frames(extras):
    x = np.stack([_scene(seed=s) for s in range(8)])
    a = domain.randomize(x, np.random.default_rng(11), extras=extras)
    b = domain.randomize(x, np.random.default_rng(11), extras=extras)
    c = domain.randomize(x, np.random.default_rng(12), extras=extras)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.shape == x.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert not np.array_equal(a, domain.randomize(x, np.random.default_rng(11)))   # the extras act


def test_soften_lowers_and_sharpen_raises_the_fine_band_within_the_blur_tasks_reach():
    """A softer optic takes fine energy away, but less than the blur task's weakest blur
    (σ 1 px, engines/specs/blur.json); a sharpening camera adds fine energy."""
    x = _scene()
    e = _fine_energy(x)
    soft = domain.soften(x, domain.SOFT_SIGMA[1])
    task = cv2.GaussianBlur(x, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    assert _fine_energy(task) < _fine_energy(soft) < e
    assert _fine_energy(domain.sharpen(x, 1.0, 1.0)) > 1.5 * e
    assert np.array_equal(domain.soften(x, 0.5), domain.soften(x.copy(), 0.5))


def test_shading_is_smooth_zero_mean_and_bounded():
    f = domain.shading_field((96, 128), domain.SHADING_RADIAL, domain.SHADING_RAMP, 0.7)
    assert f.shape == (96, 128) and f.dtype == np.float32
    assert abs(float(f.mean())) < 1e-3
    assert float(f.max() - f.min()) <= domain.SHADING_RADIAL + domain.SHADING_RAMP + 1e-5
    fine = f - cv2.GaussianBlur(f, (0, 0), 1.0)
    assert float(np.abs(fine[8:-8, 8:-8]).max()) < 1e-4   # nothing in the router's fine band (1/255 = 4e-3)


def test_floor_adds_row_and_column_offsets_far_below_the_noise_task():
    """With only the floor extra forced, the frame moves by row/column offsets and a correlated
    floor of at most a few grey levels (the noise task: σ 5-15)."""
    x = np.full((16, 64, 80), 0.5, np.float32)
    p = (domain.P_SCALE, domain.P_STRETCH, domain.P_PLATEAU, domain.P_CLAHE, domain.P_GAMMA,
         domain.P_NOISE_FLOOR, domain.P_JPEG, domain.P_FLOOR)
    try:
        (domain.P_SCALE, domain.P_STRETCH, domain.P_PLATEAU, domain.P_CLAHE, domain.P_GAMMA,
         domain.P_NOISE_FLOOR, domain.P_JPEG, domain.P_FLOOR) = (0, 0, 0, 0, 0, 0, 0, 1.0)
        y = domain.randomize(x, np.random.default_rng(0), extras=("floor",)) - 0.5
    finally:
        (domain.P_SCALE, domain.P_STRETCH, domain.P_PLATEAU, domain.P_CLAHE, domain.P_GAMMA,
         domain.P_NOISE_FLOOR, domain.P_JPEG, domain.P_FLOOR) = p
    sd = y.reshape(len(y), -1).std(axis=1) * 255
    assert sd.max() < 3.0 and np.sum(sd > 0.05) >= 12
    rows = y.mean(axis=2).std(axis=1) * 255        # row offsets survive a row mean; white noise would not
    assert rows.max() > 0.1


def test_unknown_extras_are_refused_and_router_augment_follows_the_manifest():
    with pytest.raises(ValueError, match="unknown domain randomisation extra"):
        domain.randomize(np.zeros((1, 8, 8), np.float32), np.random.default_rng(0), extras=("lens",))
    assert domain.router_augment({}) is None
    assert domain.router_augment({"domain_randomisation": True}) is domain.randomize
    aug = domain.router_augment({"domain_randomisation": True, "randomisation_extras": ["optics"]})
    x = np.stack([_scene(seed=s) for s in range(4)])
    assert np.array_equal(aug(x, np.random.default_rng(2)),
                          domain.randomize(x, np.random.default_rng(2), extras=("optics",)))
    with pytest.raises(ValueError):
        domain.router_augment({"domain_randomisation": True, "randomisation_extras": ["lens"]})
