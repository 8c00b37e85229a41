"""Degradation synthesis: statistics of each operator, order, determinism, specs, data loading."""
import json

import cv2
import numpy as np
import pytest

from tir.engines import degrade as D


def synthetic_frames(n=8, h=96, w=128, seed=0):
    """Smooth gradient + blobs + fine texture, kept inside [0.2, 0.6]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for _ in range(n):
        base = 0.3 + 0.15 * yy / h
        for _ in range(4):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 20)
            base = base + 0.1 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        texture = 0.05 * np.sin(xx * 1.3 + rng.uniform(0, 6)) * np.sin(yy * 1.1)
        frames.append(np.clip(base + texture, 0.2, 0.6))
    return np.stack(frames).astype(np.float32)


def fixed(op, **params):
    return D.DegradationSpec(name=f"fixed-{op}", steps=[dict(op=op, **params)])


def test_builtin_specs_and_constants():
    names = D.list_specs()
    assert names[:7] == list(D.TASKS)
    assert {"jpeg", "dead_pixels", "vignetting"} <= set(names)
    for name in names:
        assert D.load_spec(name).name == name
    assert D.load_spec("cbn").name == "CBN"
    ops = [s["op"] for s in D.load_spec("CBN").steps]
    assert ops == ["contrast", "blur", "nonuniformity", "stripes", "gaussian_noise"]
    for compound, parts in D.COMPOUND_PARTS.items():
        expected = [s for p in parts for s in D.load_spec(p).steps]
        assert D.load_spec(compound).steps == expected


def test_shape_dtype_range_and_single_image():
    x = synthetic_frames(3)
    for task in D.list_specs():
        y = D.degrade(x, task, 0)
        assert y.shape == x.shape and y.dtype == np.float32
        assert y.min() >= 0.0 and y.max() <= 1.0
    single = D.degrade(x[0], "CBN", 5)
    assert single.shape == x[0].shape
    with pytest.raises(D.DegradationError, match="float"):
        D.degrade((x * 255).astype(np.uint8), "blur", 0)


def test_contrast_scales_std_by_factor_range_and_brightens():
    x = synthetic_frames(16)
    y = D.degrade(x, "contrast", 1)
    ratio = y.std(axis=(1, 2)) / x.std(axis=(1, 2))
    assert np.all(ratio >= 0.2 - 1e-4) and np.all(ratio <= 0.6 + 1e-4)
    assert ratio.std() > 0.01  # drawn per image
    # pivot zero (albumentations x*alpha + beta): out - alpha*x is the constant beta in [0.1, 0.2]
    alpha = ratio[:, None, None]
    beta = (y - alpha * x).reshape(16, -1)
    assert np.allclose(beta.std(axis=1), 0, atol=1e-4)
    assert np.all((beta.mean(axis=1) > 0.1 - 1e-3) & (beta.mean(axis=1) < 0.2 + 1e-3))


def test_contrast_mean_pivot_keeps_mean_plus_offset():
    x = synthetic_frames(4)
    spec = fixed("contrast", contrast=[-0.5, -0.5], brightness=[0.1, 0.1], pivot="mean")
    y = D.degrade(x, spec, 0)
    assert np.allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)) + 0.1, atol=1e-4)
    assert np.allclose(y.std(axis=(1, 2)) / x.std(axis=(1, 2)), 0.5, atol=1e-3)


def high_frequency_energy(batch):
    return np.mean([cv2.Laplacian(f, cv2.CV_32F).var() for f in batch])


def test_blur_removes_high_frequencies():
    x = synthetic_frames(8)
    y = D.degrade(x, "blur", 2)
    assert high_frequency_energy(y) < 0.1 * high_frequency_energy(x)
    assert np.allclose(y.mean(), x.mean(), atol=0.01)


def test_stripes_are_column_or_row_correlated():
    flat = np.full((64, 48, 64), 0.5, np.float32)
    spec = fixed("stripes", gain_std=[0.05, 0.05], offset_std=[2.0, 2.0], column_p=0.5)
    residual = D.degrade(flat, spec, 3) - flat
    along_rows = residual.std(axis=1).mean(axis=1)   # ~0 when each column is constant
    along_cols = residual.std(axis=2).mean(axis=1)   # ~0 when each row is constant
    columnwise = along_rows < 1e-6
    rowwise = along_cols < 1e-6
    assert np.all(columnwise ^ rowwise)
    assert 15 < columnwise.sum() < 49  # about 50/50
    assert np.all(np.maximum(along_rows, along_cols) > 0.005)


def test_noise_statistics_on_flat_frame():
    flat = np.full((8, 64, 80), 0.5, np.float32)
    y = D.degrade(flat, fixed("gaussian_noise", sigma=[10.0, 10.0]), 0)
    assert abs((y - flat).std() - 10 / 255) < 0.002
    nu = D.degrade(flat, fixed("nonuniformity", delta=[40, 40]), 0) - flat
    assert np.allclose(nu.max(axis=(1, 2)), 40 / 255, atol=1e-3)  # delta * n peaks at 1
    assert nu.min() >= 0
    noisy = D.degrade(flat, "noise", 0)
    assert 0.01 < (noisy - flat).std() < 0.2


def test_compound_order_is_contrast_blur_noise():
    x = synthetic_frames(4)
    for compound, parts in D.COMPOUND_PARTS.items():
        expected = x
        gen = np.random.default_rng(11)
        for part in parts:
            expected = D.degrade(expected, part, gen)
        assert np.array_equal(D.degrade(x, compound, np.random.default_rng(11)), expected)
    # the reverse order gives a different image (blur after noise smooths the noise away)
    gen = np.random.default_rng(11)
    reverse = D.degrade(D.degrade(x, "noise", gen), "blur", gen)
    assert not np.allclose(D.degrade(x, "BN", 11), reverse, atol=1e-3)


def test_fixed_ranges_compose_like_the_parts():
    x = synthetic_frames(2)
    c = dict(op="contrast", contrast=[-0.6, -0.6], brightness=[0.15, 0.15])
    b = dict(op="blur", kernel=[9, 9], sigma=[1.5, 1.5])
    cb = D.DegradationSpec("cb-fixed", [c, b])
    manual = np.stack([cv2.GaussianBlur(np.clip(f * 0.4 + 0.15, 0, 1), (9, 9), 1.5) for f in x])
    assert np.allclose(D.degrade(x, cb, 0), manual, atol=1e-6)
    # contrast and blur are both linear, so their order only shows through the clip in between
    bright = dict(op="contrast", contrast=[0.0, 0.0], brightness=[0.5, 0.5])
    clip_then_blur = D.degrade(x, D.DegradationSpec("cb", [bright, b]), 0)
    blur_then_clip = D.degrade(x, D.DegradationSpec("bc", [b, bright]), 0)
    manual = np.stack([cv2.GaussianBlur(np.clip(f + 0.5, 0, 1), (9, 9), 1.5) for f in x])
    assert np.allclose(clip_then_blur, manual, atol=1e-6)
    assert not np.allclose(blur_then_clip, manual, atol=1e-3)


def test_seed_determinism():
    x = synthetic_frames(4)
    a = D.degrade(x, "CBN", 123)
    assert np.array_equal(a, D.degrade(x, "CBN", 123))
    assert np.array_equal(a, D.degrade(x, "CBN", np.random.default_rng(123)))
    assert not np.array_equal(a, D.degrade(x, "CBN", 124))


def test_make_eval_set_is_per_image_and_per_task():
    x = synthetic_frames(5)
    full = D.make_eval_set(x, "CBN", seed=7)
    assert np.array_equal(full, D.make_eval_set(x, "CBN", seed=7))
    assert np.array_equal(full[2:4], D.make_eval_set(x, "CBN", seed=7)[2:4])
    subset = D.make_eval_set(x[:3], "CBN", seed=7)
    assert np.array_equal(full[:3], subset)
    assert not np.array_equal(full, D.make_eval_set(x, "CBN", seed=8))
    assert D.task_seed("CB", 0) != D.task_seed("CN", 0)
    assert D.task_seed("CB", 0) == D.task_seed(D.load_spec("CB"), 0)


def test_spec_json_round_trip_and_user_spec(tmp_path):
    spec = D.load_spec("CBN")
    again = D.DegradationSpec.from_json(spec.to_json())
    assert again == spec
    user = {"name": "my-noise-then-blur", "steps": [
        {"op": "gaussian_noise", "sigma": [20, 25]},
        {"op": "blur", "kernel": [5, 5], "sigma": [1.0, 1.0]},
        {"op": "vignetting", "strength": 0.4, "gamma": 1.5, "p": 0.5}]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(user))
    x = synthetic_frames(4)
    y = D.degrade(x, str(path), 0)
    assert y.shape == x.shape and not np.allclose(x, y)
    assert np.array_equal(y, D.degrade(x, D.load_spec(path), 0))
    with pytest.raises(D.DegradationError, match="unknown op"):
        D.DegradationSpec.from_json({"name": "bad", "steps": [{"op": "sharpen"}]})
    with pytest.raises(D.DegradationError, match="unknown keys"):
        D.DegradationSpec.from_json({"name": "bad", "steps": [{"op": "blur", "radius": 3}]})
    with pytest.raises(D.DegradationError, match="built-in"):
        D.load_spec("no-such-degradation")


def block_boundary_ratio(batch):
    """Mean |horizontal step| across 8-pixel block edges divided by that inside blocks."""
    d = np.abs(np.diff(batch, axis=2))
    cols = np.arange(d.shape[2])
    edge = (cols % 8) == 7
    return d[:, :, edge].mean() / d[:, :, ~edge].mean()


def test_jpeg_makes_8x8_blocks():
    x = np.stack([cv2.GaussianBlur(f, (0, 0), 3) for f in synthetic_frames(4)])
    y = D.degrade(x, "jpeg", 0)
    assert block_boundary_ratio(y) > 2.0
    assert block_boundary_ratio(x) < 1.5


def test_dead_pixels_and_vignetting():
    flat = np.full((4, 100, 100), 0.5, np.float32)
    y = D.degrade(flat, "dead_pixels", 0)
    assert 0.0005 < (y == 0).mean() < 0.004 and 0.0002 < (y == 1).mean() < 0.002
    v = D.degrade(flat, "vignetting", 0)
    assert v[:, 50, 50].min() > 0.49 and v[:, 0, 0].max() < 0.5 * (1 - 0.29)


def test_load_folder_8_and_16_bit(tmp_path):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (24, 32), dtype=np.uint8))
    raw16 = (20000 + rng.integers(0, 3000, (24, 32))).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "b.png"), raw16)
    frames = D.load_folder(tmp_path)
    assert frames.shape == (2, 24, 32) and frames.dtype == np.float32
    assert 0.0 <= frames.min() and frames.max() <= 1.0
    assert frames[1].max() == 1.0 and frames[1].min() == 0.0  # robust stretch of 16-bit
    assert D.load_folder(tmp_path, size=(16, 12)).shape == (2, 12, 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DegradationError, match="no images"):
        D.load_folder(tmp_path / "empty")


def test_load_roadscene_from_layout_and_error(tmp_path, monkeypatch):
    root = tmp_path / "roadscene-ir"
    root.mkdir()
    for name in ("f1.png", "f2.png"):
        cv2.imwrite(str(root / name), np.full((16, 20), 128, np.uint8))
    (tmp_path / "roadscene-ir-val.txt").write_text("f1.png\nf2.png\n")
    frames = D.load_roadscene("val", root=root)
    assert frames.shape == (2, 16, 20) and np.allclose(frames, 128 / 255)
    monkeypatch.setenv("TIR_DATA", str(root))
    assert D.load_roadscene("val").shape == (2, 16, 20)
    with pytest.raises(D.DegradationError, match="existing"):
        D.load_roadscene("train", root=root)
    with pytest.raises(D.DegradationError, match="tried"):
        D.load_roadscene("val", root=tmp_path / "nowhere")


def test_roadscene_is_found_under_tir_data_root_as_the_readme_says(tmp_path, monkeypatch):
    """Session 18: the README names ``$TIR_DATA_ROOT`` (the folder holding the sets, which ``tir
    eval --data`` reads), but RoadScene's own lookup (``tir calibrate --source roadscene``,
    ``tir eval`` without --data, training) read only ``$TIR_DATA``: from a clone not beside
    shared/data it said "RoadScene frames not found … Set $TIR_DATA" with $TIR_DATA_ROOT set."""
    root = tmp_path / "sets"
    (root / "roadscene-ir").mkdir(parents=True)
    for name in ("f1.png", "f2.png"):
        cv2.imwrite(str(root / "roadscene-ir" / name), np.full((16, 20), 64, np.uint8))
    (root / "roadscene-ir-val.txt").write_text("f1.png\nf2.png\n")
    monkeypatch.delenv("TIR_DATA", raising=False)
    monkeypatch.setenv("TIR_DATA_ROOT", str(root))
    frames = D.load_roadscene("val")
    assert frames.shape == (2, 16, 20) and np.allclose(frames, 64 / 255)
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere" / "roadscene-ir") in map(str, D.roadscene_candidates())


def test_camera_agc_stretches_after_the_noise_and_blends():
    rng = np.random.default_rng(0)
    flat = (0.4 + 0.2 * rng.random((2, 40, 56))).astype(np.float32)     # a low-contrast frame
    full = D.DegradationSpec(name="a", steps=[{"op": "camera_agc", "low": [1, 1], "high": [99, 99],
                                              "strength": [1, 1]}])
    out = D.degrade(flat, full, 0)
    for f in out:
        lo, hi = np.percentile(f, (1, 99))
        assert lo == pytest.approx(0.0, abs=0.02) and hi == pytest.approx(1.0, abs=0.02)
    none = D.DegradationSpec(name="b", steps=[{"op": "camera_agc", "strength": [0, 0]}])
    np.testing.assert_allclose(D.degrade(flat, none, 0), flat, atol=1e-6)
    # the router variants: the sensor noise first, then the camera's AGC (contrast-free classes only)
    assert [s["op"] for s in D.load_spec("noise_sensor_agc").steps][-1] == "camera_agc"
    from tir.engines.router import SENSOR_VARIANTS

    assert SENSOR_VARIANTS["noise"] == ["noise", "noise_sensor", "noise_sensor_agc"]
    assert SENSOR_VARIANTS["CN"] == ["CN", "CN_sensor"]
