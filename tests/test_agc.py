import numpy as np
import pytest

from tir.edge.agc import (
    AGC_MODES,
    PALETTES,
    CLAHEAGC,
    DisplayMapper,
    PercentileAGC,
    PlateauAGC,
    colorize,
    make_agc,
)


def ramp_scene(base=20000, spread=2000, shape=(96, 128), seed=0):
    rng = np.random.default_rng(seed)
    xx = np.tile(np.linspace(0, 1, shape[1]), (shape[0], 1))
    img = base + spread * xx + rng.normal(0, 10, shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def test_percentile_maps_range_and_ignores_outlier():
    counts = ramp_scene()
    counts[0, 0] = 65535
    agc = PercentileAGC(alpha=1.0, stride=1)
    grey = agc(counts)
    assert grey.dtype == np.uint8 and grey.shape == counts.shape
    lo, hi = agc.range(counts)
    assert hi < 23000  # the hot pixel did not set the top
    assert grey[:, :5].mean() < 15 and grey[:, -5:].mean() > 240
    # monotone in the counts: sort by count, grey never decreases
    order = np.argsort(counts[1:].ravel(), kind="stable")
    assert np.all(np.diff(grey[1:].ravel()[order].astype(int)) >= 0)


def test_percentile_agc_shows_the_image_of_a_frame_with_telemetry_rows():
    """The viewer's default AGC takes its range where the normaliser does (edge/normalize.py):
    a Lepton's 2 telemetry rows (mostly zero words) under a 96-row image made 0 the 1st percentile
    and squeezed the image into the top grey levels; its image rows span the grey scale."""
    counts = ramp_scene(base=29400, spread=800)
    tele = np.zeros((2, counts.shape[1]), np.uint16)
    tele[0, :6] = [14, 4321, 9, 30510, 51000, 8190]
    grey = PercentileAGC(alpha=1.0)(np.vstack([counts, tele]))
    assert grey[:96, :5].mean() < 15 and grey[:96, -5:].mean() > 240


def test_percentile_smoothing_converges():
    agc = PercentileAGC(alpha=0.3, stride=1)
    agc(ramp_scene(base=10000))
    target = ramp_scene(base=11000)   # the view moved: the range overlaps the last one (a gain switch
    lo_first, _ = agc.range(target)   # or another camera restarts it: tests/test_normalize.py)
    assert lo_first < 10900  # moving, not jumped
    for _ in range(40):
        lo, hi = agc.range(target)
    fresh = PercentileAGC(alpha=1.0, stride=1).range(target)
    assert lo == pytest.approx(fresh[0], abs=2) and hi == pytest.approx(fresh[1], abs=2)


def test_percentile_min_span_keeps_flat_scene_grey():
    flat = np.full((64, 64), 5000, np.uint16)
    grey = PercentileAGC(min_span=200)(flat)
    assert 100 <= grey.mean() <= 155


def test_plateau_lut_monotone_and_spans_output():
    agc = PlateauAGC(damping=1.0, max_gain=100.0)
    lut = agc.lut(ramp_scene())
    assert np.all(np.diff(lut) >= 0)
    assert lut[0] == pytest.approx(0, abs=0.5) and lut[-1] == pytest.approx(255, abs=0.5)


def test_plateau_gives_no_grey_levels_to_empty_ranges():
    # two populations far apart, nothing in between
    rng = np.random.default_rng(1)
    counts = np.where(rng.random((100, 100)) < 0.5, 10000, 30000).astype(np.uint16)
    counts = counts + rng.integers(0, 50, counts.shape).astype(np.uint16)
    agc = PlateauAGC(linear=0.0, damping=1.0, tail_pct=0.0, max_gain=1000.0, stride=1)
    lut = agc.lut(counts)
    gap = lut[10100:29990]
    assert gap.max() - gap.min() < 1.0  # the empty range is flat
    assert lut[10049] - lut[10000] > 100  # the populated ranges share the grey levels
    assert lut[30049] - lut[30000] > 100
    # with a linear blend the gap gets its share
    blended = PlateauAGC(linear=0.5, damping=1.0, tail_pct=0.0, max_gain=1000.0, stride=1).lut(counts)
    assert blended[29990] - blended[10100] > 100


def test_plateau_clip_limits_dominant_peak():
    rng = np.random.default_rng(2)
    sky = np.full((80, 100), 15000, np.uint16) + rng.integers(0, 4, (80, 100)).astype(np.uint16)
    road = ramp_scene(base=15100, spread=2000, shape=(20, 100))
    counts = np.vstack([sky, road])
    classic = PlateauAGC(plateau=1e6, linear=0.0, damping=1.0, max_gain=1000.0, stride=1).lut(counts)
    plateau = PlateauAGC(plateau=1.0, linear=0.0, damping=1.0, max_gain=1000.0, stride=1).lut(counts)
    road_levels = lambda lut: lut[17000] - lut[15200]
    assert road_levels(plateau) > road_levels(classic) + 50


def test_plateau_max_gain_caps_slope_and_centres():
    flat = np.full((64, 64), 5000, np.uint16) + np.random.default_rng(3).integers(0, 10, (64, 64)).astype(np.uint16)
    agc = PlateauAGC(max_gain=2.0, damping=1.0, linear=0.0, tail_pct=0.0, stride=1)
    lut = agc.lut(flat)
    assert np.diff(lut).max() <= 2.0 + 1e-4
    assert lut[-1] - lut[0] <= 20.0
    assert 100 <= (lut[0] + lut[-1]) / 2 <= 155  # centred on the ITT midpoint


def test_plateau_damping_moves_lut_gradually():
    a, b = ramp_scene(base=10000), ramp_scene(base=30000)
    agc = PlateauAGC(damping=0.25)
    agc.lut(a)
    first = agc.lut(b)[20000]
    target = PlateauAGC(damping=1.0).lut(b)[20000]
    before = PlateauAGC(damping=1.0).lut(a)[20000]
    assert first == pytest.approx(before + 0.25 * (target - before), abs=0.5)
    for _ in range(60):
        last = agc.lut(b)[20000]
    assert last == pytest.approx(target, abs=0.5)


def test_clahe_output():
    grey = CLAHEAGC()(ramp_scene())
    assert grey.dtype == np.uint8 and grey.shape == (96, 128)
    assert grey.max() > 200 and grey.min() < 60


@pytest.mark.parametrize("palette", PALETTES)
def test_palettes_shape_dtype(palette):
    grey = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    bgr = colorize(grey, palette)
    assert bgr.shape == (4, 256, 3) and bgr.dtype == np.uint8
    # every palette goes from dark to bright (or the reverse for black-hot)
    lum = bgr.astype(int).sum(axis=2)[0]
    if palette == "black-hot":
        assert lum[0] > lum[-1]
    else:
        assert lum[-1] > lum[0]


def test_black_hot_is_inverse_of_white_hot():
    grey = np.random.default_rng(4).integers(0, 256, (30, 40)).astype(np.uint8)
    white = colorize(grey, "white-hot")
    black = colorize(grey, "black-hot")
    assert np.array_equal(black, 255 - white)
    assert np.array_equal(white[..., 0], grey)


@pytest.mark.parametrize("mode", list(AGC_MODES))
def test_display_mapper_every_mode(mode):
    bgr = DisplayMapper(mode, "ironbow")(ramp_scene())
    assert bgr.shape == (96, 128, 3) and bgr.dtype == np.uint8


def test_unknown_names_are_explained():
    with pytest.raises(ValueError, match="percentile"):
        make_agc("histogram")
    with pytest.raises(ValueError, match="white-hot"):
        DisplayMapper(palette="rainbow")
