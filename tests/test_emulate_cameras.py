"""tools/scripts/emulate_cameras.py: the emulated unseen cameras, built from a synthetic data root."""
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "scripts" / "emulate_cameras.py"


def _load_script(path):
    """A tools/scripts file as a module (the scripts are not in the package)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def emu():
    return _load_script(SCRIPT)


def _scene(h, w, seed, bits):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.3 * np.sin(x / 17.0 + seed) * np.cos(y / 23.0) + 0.05 * rng.standard_normal((h, w))
    base = np.clip(base, 0, 1)
    return np.rint(base * 255).astype(np.uint8) if bits == 8 else np.rint(13000 + base * 2300).astype(np.uint16)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A data root holding the sets the cameras read, each with a test split of 3 synthetic frames
    (and a train frame that must never be read)."""
    r = tmp_path_factory.mktemp("data")
    sizes = {"roadscene-ir": (512, 640), "hit_uav": (512, 640), "m3svd_magnity": (480, 640),
             "chips_lepton35": (120, 160), "anti_uav": (424, 640)}
    for name, (h, w) in sizes.items():
        (r / name).mkdir()
        names = [f"f{i}.png" for i in range(3)]
        for i, n in enumerate(names + ["train.png"]):
            cv2.imwrite(str(r / name / n), _scene(h, w, i, 8))
        (r / f"{name}-test.txt").write_text("\n".join(names) + "\n")
        (r / f"{name}-train.txt").write_text("train.png\n")
    raw = r / "flir_raw16_mixed"
    raw.mkdir()
    names = ["004__FLIR-T1030sc__a.png", "005__FLIR-T1030sc__b.png", "006__FLIR-E60__c.png"]
    for i, n in enumerate(names):
        cv2.imwrite(str(raw / n), _scene(768, 1024, i, 16) if "T1030sc" in n else _scene(240, 320, i, 16))
    (r / "flir_raw16_mixed-test.txt").write_text("\n".join(names) + "\n")
    return r


def test_every_camera_one_size_from_the_test_split(emu, root, tmp_path):
    done = emu.build(tmp_path, root)
    assert set(done) == set(emu.CAMERAS)
    want = {"agc_plateau": ((512, 640), np.uint8, 4), "agc_clahe": ((512, 640), np.uint8, 4),
            "raw16_lowgain": ((512, 640), np.uint16, 4), "raw16_highgain": ((512, 640), np.uint16, 4),
            "tone_log": ((512, 640), np.uint8, 3), "tiny_80x60": ((60, 80), np.uint8, 3),
            "soft_2x": ((240, 320), np.uint8, 3), "shading": ((480, 640), np.uint8, 3),
            "netd_noise": ((512, 640), np.uint8, 3), "column_fpn": ((512, 640), np.uint8, 3),
            "osd_overlay": ((480, 640), np.uint8, 3),
            "pal_384x288": ((288, 384), np.uint8, 3), "halo": ((512, 640), np.uint8, 3),
            "false_colour": ((512, 640, 3), np.uint8, 3),
            "black_hot": ((512, 640), np.uint8, 3),
            "row_fpn": ((512, 640), np.uint8, 3), "stuck_pixels": ((512, 640), np.uint8, 3),
            "mjpeg_q50": ((512, 640), np.uint8, 3), "saturated": ((512, 640), np.uint8, 3),
            "letterbox": ((512, 640), np.uint8, 3), "portrait": ((640, 512), np.uint8, 3),
            "seek_206x156": ((156, 206), np.uint8, 3), "pal_interlaced": ((576, 720), np.uint8, 3),
            "y16_fog": ((512, 640), np.uint16, 4), "alc_flicker": ((480, 640), np.uint8, 3),
            "lepton25_80x60": ((60, 80), np.uint8, 3), "lepton35_160x120": ((120, 160), np.uint8, 3),
            "boson_dde_320x256": ((256, 320), np.uint8, 3), "boson_dde_640x512": ((512, 640), np.uint8, 3),
            "temporal_nr_640x480": ((480, 640), np.uint8, 3), "tc001_256x192": ((192, 256), np.uint8, 3),
            "y16_indoor_160x120": ((120, 160), np.uint16, 3), "hot_spot_640x480": ((480, 640), np.uint8, 3),
            "upside_down_640x512": ((512, 640), np.uint8, 3), "vignette_agc_640x424": ((424, 640), np.uint8, 3)}
    assert set(want) == set(emu.CAMERAS)
    for cam, (shape, dtype, n) in want.items():
        files = sorted((tmp_path / cam).glob("*.png"))
        assert done[cam] == n == len(files), cam   # only the T1030sc frames of the raw set, two crops each
        for f in files:
            img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
            assert img.shape == shape and img.dtype == dtype, (cam, f.name)
            assert "train" not in f.name


def test_raw_span_and_fixed_column_pattern(emu, root, tmp_path):
    emu.build(tmp_path, root, only=["raw16_lowgain", "raw16_highgain", "column_fpn", "netd_noise"])
    for cam, span in (("raw16_lowgain", 300), ("raw16_highgain", 20000)):
        for f in sorted((tmp_path / cam).glob("*.png")):
            c = cv2.imread(str(f), cv2.IMREAD_UNCHANGED).astype(np.float64)
            p1, p99 = np.percentile(c, (1, 99))
            assert p1 == pytest.approx(8000, abs=1) and p99 - p1 == pytest.approx(span, abs=1)
    # the column pattern is the camera's: the same offsets in every frame, σ ≈ 1.5 grey levels
    src = [cv2.imread(str(root / "hit_uav" / f"f{i}.png"), 0).astype(np.float64) for i in range(3)]
    out = [cv2.imread(str(f), 0).astype(np.float64) for f in sorted((tmp_path / "column_fpn").glob("*.png"))]
    pats = [np.median(o - s, axis=0) for o, s in zip(out, src)]
    assert np.std(pats[0]) == pytest.approx(1.5, abs=0.3)
    assert np.abs(pats[0] - pats[1]).mean() < 0.2
    noise = [cv2.imread(str(f), 0).astype(np.float64) - s
             for f, s in zip(sorted((tmp_path / "netd_noise").glob("*.png")), src)]
    assert np.std(noise[0]) == pytest.approx(3.5, abs=0.3)
    assert np.abs(noise[0] - noise[1]).mean() > 2.0   # white noise is drawn per frame


def _frames(folder, flag=0):
    return [cv2.imread(str(f), flag) for f in sorted(folder.glob("*.png"))]


def test_round2_camera_defects_are_the_cameras_own(emu, root, tmp_path):
    """Row FPN and stuck pixels are fixed patterns (the same in every frame); the fog camera's
    counts span 40 at 28000; the flicker camera's gain and level change from frame to frame."""
    emu.build(tmp_path, root, only=["row_fpn", "stuck_pixels", "y16_fog", "alc_flicker", "letterbox"])
    hit = [cv2.imread(str(root / "hit_uav" / f"f{i}.png"), 0).astype(np.float64) for i in range(3)]
    rows = [np.median(o.astype(np.float64) - s, axis=1) for o, s in zip(_frames(tmp_path / "row_fpn"), hit)]
    assert np.std(rows[0]) == pytest.approx(1.5, abs=0.3)
    assert np.abs(rows[0] - rows[1]).mean() < 0.2
    road = [cv2.imread(str(root / "roadscene-ir" / f"f{i}.png"), 0) for i in range(3)]
    bad = [o != s for o, s in zip(_frames(tmp_path / "stuck_pixels"), road)]
    # the same defects in every frame (a pixel already at its stuck value does not count as changed)
    assert np.array_equal(bad[0] | bad[1], bad[0] | bad[2])
    stuck = _frames(tmp_path / "stuck_pixels")[0]
    assert np.all(stuck[:, 640 // 3] == 0)
    assert 0.0003 < ((stuck == 255) | (stuck == 0)).mean() - 512 / (512 * 640) < 0.0007
    for f in _frames(tmp_path / "y16_fog", cv2.IMREAD_UNCHANGED):
        p1, p99 = np.percentile(f.astype(np.float64), (1, 99))
        assert f.dtype == np.uint16 and p1 == pytest.approx(28000, abs=1) and p99 - p1 == pytest.approx(40, abs=1)
    m3 = [cv2.imread(str(root / "m3svd_magnity" / f"f{i}.png"), 0).astype(np.float64) for i in range(3)]
    fits = [np.polyfit(s.ravel(), o.astype(np.float64).ravel(), 1)
            for o, s in zip(_frames(tmp_path / "alc_flicker"), m3)]
    gains = [g for g, _ in fits]
    assert all(0.75 < g < 1.25 for g in gains) and max(gains) - min(gains) > 0.02
    box = _frames(tmp_path / "letterbox")[0]
    assert np.all(box[:16] == 0) and np.all(box[-16:] == 0)
    assert np.array_equal(box[16:-16], cv2.imread(str(root / "m3svd_magnity" / "f0.png"), 0))


def test_saturation_jpeg_and_pal_capture(emu):
    g = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    sat = emu.saturate_top(g)
    assert (sat == 255).mean() >= 0.10 and np.all(np.diff(sat[0].astype(int)) >= 0)
    # JPEG at quality 50 is lossy on detail: an 8x8 checkerboard of ±40 grey levels changes
    board = (128 + 40 * ((np.indices((64, 64)).sum(0) % 2) * 2 - 1)).astype(np.uint8)
    assert np.abs(emu.jpeg(board, 50).astype(int) - board).mean() > 5
    # PAL capture: 720x576; a vertical edge sits one pixel further right on the odd rows (the
    # second field), and the edge is softened along the rows
    step = np.zeros((480, 640), np.uint8)
    step[:, 320:] = 200
    pal = emu.pal_capture(step).astype(float)
    assert pal.shape == (576, 720)
    even, odd = pal[100], pal[101]
    centre = lambda r: np.interp(100.0, r[340:380], np.arange(340, 380))  # where the edge crosses 100
    assert centre(odd) - centre(even) == pytest.approx(1.0, abs=0.2)
    ramp = lambda r: np.count_nonzero((r > 2) & (r < 198))
    assert ramp(even) >= 4 > ramp(cv2.resize(step, (720, 576), interpolation=cv2.INTER_LINEAR)[100])


def test_plateau_equalisation_is_monotone_and_full_scale(emu):
    counts = np.repeat(np.arange(10000, 12000, dtype=np.uint16)[None], 4, 0)
    counts[:, 800:1200] = 10800   # a spike: one count holding a fifth of the pixels
    out = emu.plateau_equalise(counts)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[0].astype(int)) >= 0)
    # the spike's bin is clipped at the plateau: the tone map steps over it by a few grey levels,
    # not by the fifth of the scale (51) plain histogram equalisation gives it
    assert int(out[0, 1200]) - int(out[0, 799]) <= 3


def test_halo_brightens_around_the_hot_spot_only(emu):
    g = np.full((200, 200), 60, np.uint8)
    g[95:105, 95:105] = 250
    out = emu.halo(g).astype(int)
    assert out[100, 70] - 60 >= 15             # 30 px from the hot spot: in the glow
    assert abs(out[5, 5] - 60) <= 1            # far corner: untouched
    assert out[100, 100] == 255                # the hot spot itself saturates, as a sensor would


def _hf_noise(a, b):
    """The grey-level std of two frames' difference (the noise one carries over the other)."""
    return float(np.std(a.astype(np.float64) - b.astype(np.float64)))


def test_round3_pipelines_noise_agc_and_mount(emu, root, tmp_path):
    """Round 3's cameras are pipelines: the sensor's noise shows at 0.5-2 grey levels after the
    camera's own per-frame AGC, which spans the full 8 bits of every frame; the Y16 camera's counts
    span 200-400 from a base in 8000-8600 with a few counts of noise; the hot object is 0.5-2 % of
    the pixels at 255 with the rest of the scene spread below it; the upside-down camera is the same
    pipeline turned 180°."""
    cams = ["lepton25_80x60", "tc001_256x192", "upside_down_640x512", "y16_indoor_160x120", "hot_spot_640x480",
            "vignette_agc_640x424", "lepton35_160x120"]
    emu.build(tmp_path, root, only=cams)
    hit = cv2.imread(str(root / "hit_uav" / "f0.png"), 0)
    lep = _frames(tmp_path / "lepton25_80x60")
    quiet = emu.camera((80, 60), 1.0, emu.linear_agc, 101, noise=False)(0, hit)
    assert 0.5 <= _hf_noise(lep[0], quiet) <= 2.0
    for cam in ("lepton25_80x60", "tc001_256x192", "upside_down_640x512", "vignette_agc_640x424",
                "lepton35_160x120", "hot_spot_640x480"):
        for f in _frames(tmp_path / cam):
            assert f.min() == 0 and f.max() == 255, cam          # the AGC is recomputed per frame
    for i, f in enumerate(_frames(tmp_path / "y16_indoor_160x120", cv2.IMREAD_UNCHANGED)):
        c = f.astype(np.float64)
        p1, p99 = np.percentile(c, (1, 99))
        assert f.dtype == np.uint16 and 7980 < p1 < 8620 and 190 < p99 - p1 < 430
        span, base, sigma = np.random.default_rng([107, i]).uniform((200, 8000, 2), (400, 8600, 6))
        src = cv2.imread(str(root / "chips_lepton35" / f"f{i}.png"), 0)
        noise = c - emu.remap_span(src, span, base)      # the same draws: what the sensor added
        assert 2.0 <= sigma <= 6.0 and np.std(noise) == pytest.approx(sigma, rel=0.15)
    for f in _frames(tmp_path / "hot_spot_640x480"):
        hot = (f == 255).mean()
        assert 0.004 <= hot <= 0.021
        assert np.percentile(f[f < 255], 99) < 255 and np.percentile(f[f < 255], 50) > 20   # the rest stays visible
    road = cv2.imread(str(root / "roadscene-ir" / "f0.png"), 0)
    upright = emu.camera((640, 512), 1.0, emu.linear_agc, 109)(0, road)
    assert np.array_equal(_frames(tmp_path / "upside_down_640x512")[0], cv2.rotate(upright, cv2.ROTATE_180))


def test_dde_sharpens_and_temporal_filter_cleans_and_smears(emu):
    """DDE overshoots on both sides of an edge (an unsharp mask) where the plain AGC does not; the
    recursive temporal filter cuts a still scene's noise to well under half, and a panning scene's
    edge comes out wider than a still one's."""
    y, x = np.mgrid[0:64, 0:96].astype(np.float64)
    scene = 8000.0 + 20.0 * x + 300.0 * (y >= 32)   # a ramp (every bin filled) with a 300-count step at row 32
    dde = emu.dde_agc(scene).astype(int)[:, 48]
    flat = emu.plateau_agc(scene).astype(int)[:, 48]
    assert dde[31] < dde[20] - 10 and dde[32] > dde[44] + 10    # undershoot before, overshoot after the edge
    assert flat[31] == flat[20] and flat[32] == flat[44]
    step = np.full((64, 96), 9000.0)
    step[:, 48:] = 10000.0
    rng = np.random.default_rng(0)
    still = emu.temporal_filter(step, rng, 2.0, pan=0.0)
    sigma1 = emu.noise_sigma(step, 2.0)
    assert np.std(still[:, 5:40] - 9000.0) < 0.5 * sigma1
    moving = emu.temporal_filter(step, np.random.default_rng(0), 2.0, pan=1.0)
    width = lambda f: np.count_nonzero((f[32] > 9100) & (f[32] < 9900))
    assert width(moving) >= width(still) + 2


def test_round4_cameras(emu, root, tmp_path):
    """Round 4 (``--round 4``, its own table: the cameras of rounds 1-3 are unchanged): each camera's
    size and dtype, and the trait it was built for: flat blocks of a nearest-neighbour upscale,
    a banded image of few grey levels, Lepton telemetry rows under a Y16 image, dead and stuck
    columns the same in every frame, 14-bit counts in the high bits, a 9 Hz core's repeated
    frames, strong vignetting, an unsharp mask's overshoot, the ironbow palette's monotone luma."""
    assert not set(emu.CAMERAS) & set(emu.ROUND4) and emu.ROUNDS["1-3"] is emu.CAMERAS
    assert emu.main([str(tmp_path), "--root", str(root), "--round", "4"]) == 0
    want = {"mlx90640_nn_640x480": ((480, 640), np.uint8, 3), "lepton_nn_640x480": ((480, 640), np.uint8, 3),
            "p2pro_bilinear_1024x768": ((768, 1024), np.uint8, 3), "usm_mild_640x512": ((512, 640), np.uint8, 3),
            "usm_strong_640x512": ((512, 640), np.uint8, 3), "tlinear_banded_160x120": ((120, 160), np.uint8, 3),
            "y16_telemetry_160x122": ((122, 160), np.uint16, 3), "dead_columns_320x256": ((256, 320), np.uint8, 3),
            "y16_msb_640x512": ((512, 640), np.uint16, 4), "hd_1280x1024": ((1024, 1280), np.uint8, 4),
            "dup_9hz_640x512": ((512, 640), np.uint8, 9), "vignette_wide_160x120": ((120, 160), np.uint8, 3),
            "ironbow_grey_640x512": ((512, 640), np.uint8, 3)}
    assert set(want) == set(emu.ROUND4)
    frames = {}
    for cam, (shape, dtype, n) in want.items():
        frames[cam] = _frames(tmp_path / cam, cv2.IMREAD_UNCHANGED)
        assert len(frames[cam]) == n and all(f.shape == shape and f.dtype == dtype for f in frames[cam]), cam
    for cam, block in (("mlx90640_nn_640x480", 20), ("lepton_nn_640x480", 8)):
        f = frames[cam][0]
        assert np.array_equal(f, np.repeat(np.repeat(f[::block, ::block], block, 0), block, 1)), cam
    assert all(len(np.unique(f)) < 100 for f in frames["tlinear_banded_160x120"])   # of 256
    for f in frames["y16_telemetry_160x122"]:
        image, tele = f[:120].astype(np.float64), f[120:]
        assert 29300 <= image.min() and image.max() <= 30700 and (tele == 0).mean() > 0.7
    dead = [f for f in frames["dead_columns_320x256"]]
    cols = [np.flatnonzero((f == 0).all(0)) for f in dead]
    assert len(cols[0]) == 5 and all(np.array_equal(c, cols[0]) for c in cols)
    assert all(len(np.flatnonzero((f == 255).all(0))) == 1 for f in dead)
    assert all(np.all(f % 4 == 0) for f in frames["y16_msb_640x512"])
    dup = frames["dup_9hz_640x512"]
    assert np.array_equal(dup[0], dup[1]) and np.array_equal(dup[0], dup[2]) and not np.array_equal(dup[2], dup[3])
    flat = np.full((120, 160), 100.0)
    v = emu.vignette(flat, 0.3)
    assert v[0, 0] == pytest.approx(30.0, rel=0.01) and v[60, 80] == pytest.approx(100.0, rel=0.01)
    step = np.full((32, 64), 80, np.uint8)
    step[:, 32:] = 160
    for amount in (0.7, 2.0):
        sharp = emu.unsharp(amount)(step).astype(int)
        assert sharp[10, 31] < 80 and sharp[10, 32] > 160              # undershoot and overshoot
    grey = emu.ironbow_to_grey(np.arange(256, dtype=np.uint8)[None]).astype(int)[0]
    assert grey[0] == 0 and grey[-1] == 255 and np.all(np.diff(grey) >= 0) and grey[128] < 110


def test_round5_cameras(emu, root, tmp_path):
    """Round 5 (``--round 5``, its own table): each camera's size and dtype, and the trait it was
    built for: the closed FFC shutter's frames hold no scene, column offsets grow between FFCs and
    are reset by one, a pan's smear lies along one direction, a manual AGC leaves tens of grey
    levels, a torn frame's bottom is the previous exposure shifted, Optris values stay in 12 bits,
    ICI counts sit at a large offset and clip at the 16-bit top, a hot object's entry drops the
    AGC's gain by the drawn share, lens drops sit at the same places in every frame."""
    assert not (set(emu.CAMERAS) | set(emu.ROUND4)) & set(emu.ROUND5) and emu.ROUNDS["5"] is emu.ROUND5
    assert emu.main([str(tmp_path), "--root", str(root), "--round", "5"]) == 0
    want = {"ffc_shutter_160x120": ((120, 160), np.uint8, 3), "fpn_drift_640x512": ((512, 640), np.uint8, 3),
            "pan_blur_640x512": ((512, 640), np.uint8, 3), "manual_agc_narrow_640x512": ((512, 640), np.uint8, 3),
            "usb_tear_640x512": ((512, 640), np.uint8, 3), "optris_382x288": ((288, 382), np.uint16, 3),
            "ici_offset_640x512": ((512, 640), np.uint16, 4), "agc_pump_640x512": ((512, 640), np.uint8, 3),
            "lens_drops_640x512": ((512, 640), np.uint8, 3)}
    assert set(want) == set(emu.ROUND5)
    frames = {}
    for cam, (shape, dtype, n) in want.items():
        frames[cam] = _frames(tmp_path / cam, cv2.IMREAD_UNCHANGED)
        assert len(frames[cam]) == n and all(f.shape == shape and f.dtype == dtype for f in frames[cam]), cam
    scene = _scene(120, 160, 0, 8)
    shutter = emu.ffc_shutter_camera((160, 120), 0.35, 301)
    corr = lambda a, b: np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1]
    assert corr(shutter(4, scene), scene) > 0.9 and all(abs(corr(shutter(i, scene), scene)) < 0.1 for i in emu.FFC_SHUTTER)
    assert all(np.ptp(shutter(i, scene)) > 200 for i in emu.FFC_SHUTTER)       # the flag's noise, stretched
    counts = emu.to_counts(_scene(64, 96, 1, 8).astype(np.float64))
    col_sigma = lambda i: float(np.std((emu.column_drift(i, counts) - counts)[0]))
    assert col_sigma(0) == 0.0 and 0 < col_sigma(3) < col_sigma(7) and col_sigma(emu.FFC_AT) == 0.0
    assert np.allclose(emu.column_drift(5, counts) - counts, (emu.column_drift(5, counts) - counts)[:1])
    point = np.zeros((31, 31))
    point[15, 15] = 1.0
    smear = emu.motion_blur(9.0, 0.0)(point)
    on = smear > 1e-9
    assert smear.sum() == pytest.approx(1.0) and on[15].sum() == 9 and on.sum() == 9
    assert all(len(np.unique(f)) <= 25 for f in frames["manual_agc_narrow_640x512"])
    f = _scene(512, 640, 2, 8)
    torn = emu.usb_tear(0, f)
    changed = np.flatnonzero((torn != f).any(1))
    assert 0.3 * 512 <= changed[0] <= 0.7 * 512 and np.array_equal(torn[:changed[0]], f[:changed[0]])
    assert all(1000 < x.min() and x.max() < 4096 for x in frames["optris_382x288"])
    assert all(x.min() > 45000 and x.max() == 65535 for x in frames["ici_offset_640x512"])
    flat = np.tile(np.linspace(0.0, 100.0, 200), (150, 1))
    hot = emu.hot_entry(flat, np.random.default_rng(0), 0.3)
    assert 100.0 / (hot.max() - hot.min()) == pytest.approx(0.7, rel=0.01)
    ramp = np.tile(np.arange(128.0), (96, 1))
    moved = emu.lens_drops(ramp) - ramp                   # drops pull the scene to its median ...
    assert np.abs(moved).max() > 10 and np.allclose(moved, emu.lens_drops(ramp + 50.0) - (ramp + 50.0))  # ... in place


def test_round6_cameras(emu, root, tmp_path):
    """Round 6 (``--round 6``, its own table): each camera's size and dtype, and the trait it was
    built for: one field's lines doubled between black side bands, BT.601's limited range, a
    radiometric Boson's K × 50, mirrored and flipped mounts, status bits above 14-bit counts, lost
    VoSPI packets as repeated half lines, a warm-up's drift reset in part by the FFC, row offsets
    drawn per frame."""
    earlier = set(emu.CAMERAS) | set(emu.ROUND4) | set(emu.ROUND5)
    assert not earlier & set(emu.ROUND6) and emu.ROUNDS["6"] is emu.ROUND6
    assert emu.main([str(tmp_path), "--root", str(root), "--round", "6"]) == 0
    want = {"ntsc_field_720x480": ((480, 720), np.uint8, 3), "studio_range_720x576": ((576, 720), np.uint8, 3),
            "boson_tlinear_low_640x512": ((512, 640), np.uint16, 3), "dde_max_640x512": ((512, 640), np.uint8, 3),
            "mirror_640x512": ((512, 640), np.uint8, 3), "vflip_640x512": ((512, 640), np.uint8, 3),
            "status_bits_640x512": ((512, 640), np.uint16, 4), "vospi_loss_160x120": ((120, 160), np.uint8, 3),
            "warmup_320x256": ((256, 320), np.uint16, 3), "row_flicker_640x512": ((512, 640), np.uint8, 3),
            "sky_target_640x512": ((512, 640), np.uint8, 3)}
    assert set(want) == set(emu.ROUND6)
    frames = {}
    for cam, (shape, dtype, n) in want.items():
        frames[cam] = _frames(tmp_path / cam, cv2.IMREAD_UNCHANGED)
        assert len(frames[cam]) == n and all(f.shape == shape and f.dtype == dtype for f in frames[cam]), cam
    for f in frames["ntsc_field_720x480"]:
        assert np.array_equal(f[0::2], f[1::2]) and not f[:, :8].any() and not f[:, 712:].any()
    assert all(f.min() >= 16 and f.max() <= 235 for f in frames["studio_range_720x576"])
    assert all(285 * 50 <= np.median(f) <= 320 * 50 and 350 * 50 - 100 < f.max() <= 450 * 50 + 100
               for f in frames["boson_tlinear_low_640x512"])   # a 285-320 K scene, a 350-450 K object
    scene = _scene(512, 640, 0, 8)
    upright = emu.camera((640, 512), 1.0, emu.linear_agc, 605)(0, scene)
    assert np.array_equal(emu.ROUND6["mirror_640x512"][1](0, scene), upright[:, ::-1])
    upright = emu.camera((640, 512), 1.0, emu.linear_agc, 606)(0, scene)
    assert np.array_equal(emu.ROUND6["vflip_640x512"][1](0, scene), upright[::-1])
    for i, f in enumerate(frames["status_bits_640x512"]):
        assert np.all(f >> 14 == (i & 1) + 2 * (i in emu.FFC_DESIRED))
    assert np.all(emu.status_bit_counts(40, scene, desired=range(32, 56)) >> 15 == 1)   # a live replay's flags
    assert not np.any(emu.status_bit_counts(5, scene, desired=range(32, 56)) >> 15)
    g = _scene(120, 160, 1, 8)
    lost = emu.vospi_lost_packets(0, g)
    halves = {(y, x // emu.VOSPI_PACKET_PX) for y, x in zip(*np.nonzero(lost != g))}
    assert 1 <= len(halves) <= 4
    for y, k in halves:                                   # each lost packet: the half line above it
        half = slice(k * emu.VOSPI_PACKET_PX, (k + 1) * emu.VOSPI_PACKET_PX)
        assert np.array_equal(lost[y, half], lost[y - 1, half])
    warm = [emu.warmup_counts(i, scene).astype(float) for i in range(12)]
    fpn = lambda i: np.std(warm[i] - emu.warmup_counts(i, scene, seed=1).astype(float))  # the pixel pattern's share
    assert warm[11].mean() > warm[0].mean() and fpn(5) > fpn(1) and fpn(emu.WARMUP_FFC_AT) < fpn(5)
    long = lambda i, seed=609: emu.warmup_counts(i, scene, seed=seed, ffc_at=48, frames=96).astype(float)
    assert np.allclose(long(95).mean() - long(0).mean(), warm[11].mean() - warm[0].mean(), rtol=0.05)  # same drift, 8x slower
    assert np.std(long(47) - long(47, 1)) > np.std(long(48) - long(48, 1))                     # the FFC at 48
    for f in frames["sky_target_640x512"]:                # the UAV takes the top of the 8 bits
        assert f.max() == 255 and np.percentile(f, 99) - np.percentile(f, 1) < 255 / 2
    c = emu.to_counts(_scene(64, 96, 2, 8).astype(np.float64))
    a, b = emu.row_flicker(c, np.random.default_rng(0)) - c, emu.row_flicker(c, np.random.default_rng(1)) - c
    assert np.allclose(a, a[:, :1]) and np.std(a[:, 0]) > 0 and not np.allclose(a, b)


def test_round7_cameras(emu, root, tmp_path):
    """Round 7 (``--round 7``, its own table): each camera's size and dtype, and the trait it was
    built for: an isotherm whose hottest band is darker than the grey half's top, eZoom steps,
    a picture-in-picture window, a fire with the low gain's noise, a polarity switch, MSX edges with
    parallax, a shutterless residue that changes every frame, an MPEG-4 P-frame, a max-gain AGC."""
    earlier = set(emu.CAMERAS) | set(emu.ROUND4) | set(emu.ROUND5) | set(emu.ROUND6)
    assert not earlier & set(emu.ROUND7) and emu.ROUNDS["7"] is emu.ROUND7
    assert emu.main([str(tmp_path), "--root", str(root), "--round", "7"]) == 0
    want = {"isotherm_grey_640x512": (512, 640), "ezoom_steps_640x512": (512, 640), "pip_zoom_640x512": (512, 640),
            "gain_switch_fire_640x512": (512, 640), "polarity_switch_640x512": (512, 640),
            "msx_edges_640x480": (480, 640), "shutterless_640x512": (512, 640), "mpeg4_a320_640x480": (480, 640),
            "max_gain_facade_640x512": (512, 640)}
    assert set(want) == set(emu.ROUND7)
    frames = {}
    for cam, shape in want.items():
        frames[cam] = _frames(tmp_path / cam, cv2.IMREAD_UNCHANGED)
        assert len(frames[cam]) == 3 and all(f.shape == shape and f.dtype == np.uint8 for f in frames[cam]), cam
    ramp = np.arange(10000, dtype=np.float64).reshape(100, 100)
    iso = emu.isotherm_grey(ramp).ravel()
    assert iso[9690] >= 250 and 215 <= iso[9710] <= 230 and 165 <= iso[9850] <= 180 and iso[-1] <= 80
    assert np.all(np.diff(iso[:9700].astype(int)) >= 0) and np.all(np.diff(iso[9701:].astype(int)) <= 0)
    assert [emu.zoom_at(i) for i in (0, 3, 4, 8, 12)] == [1, 1, 2, 4, 1]
    c = emu.to_counts(_scene(512, 640, 0, 8).astype(np.float64))
    assert np.array_equal(emu.ezoom(c, 1), c)
    assert np.allclose(emu.ezoom(c, 2), cv2.resize(c[128:384, 160:480], (640, 512), interpolation=cv2.INTER_LINEAR))
    g = _scene(512, 640, 1, 8)
    pip = emu.pip_inset(g)
    assert np.array_equal(pip[2:258, 160:480], cv2.resize(g[192:320, 240:400], (320, 256), interpolation=cv2.INTER_LINEAR))
    assert np.all(pip[0:2, 158:482] == 255) and np.array_equal(pip[300:], g[300:])
    scene = _scene(512, 640, 2, 8)
    hot = lambda i: np.mean(emu.gain_switch_counts(i, scene) == 255)
    assert hot(0) < 0.01 and hot(6) > 0.03 and hot(11) > 0.03    # the fire saturates from frame 6
    base = emu.camera((640, 512), 0.6, emu.linear_agc, 705)
    pol = emu.polarity_camera()
    assert np.array_equal(pol(5, scene), base(5, scene)) and np.array_equal(pol(6, scene), 255 - base(6, scene))
    plain = emu.camera((160, 120), 1.0, emu.linear_agc, 706, after=emu.bilinear_up((640, 480)))(0, scene[16:496])
    msx = emu.msx_camera(0, scene[16:496]).astype(float) - plain
    assert np.std(msx) > 1.0 and np.array_equal(emu.msx_edges(scene[16:496], plain, gain=0.0), plain)
    a = emu.shutterless_shading(c, np.random.default_rng(0), 0) - c
    b = emu.shutterless_shading(c, np.random.default_rng(0), 1) - c
    assert 0.05 < np.ptp(a) / np.ptp(c) < 0.45 and not np.allclose(a, b)
    assert np.std(cv2.resize(a, (8, 8), interpolation=cv2.INTER_AREA)) > 0.3 * np.std(a)   # low frequency only
    m = emu.mpeg4_stream(0, _scene(480, 640, 0, 8)).astype(float)
    ref = emu.camera((320, 240), 0.6, emu.linear_agc, 708, after=emu.bilinear_up((640, 480)))(5, _scene(480, 640, 0, 8))
    err = np.mean((m - ref) ** 2)
    assert 0 < err < 255 ** 2 / 10 ** 2.5      # coded: not the frame, within 25 dB of it
    for f in frames["max_gain_facade_640x512"]:
        assert 40 <= np.percentile(f, 99) - np.percentile(f, 1) <= 170 and abs(np.median(f) - 128) < 40



def _built_round(emu, root, tmp_path, number, table, want, raw):
    """Build round ``number`` (its camera table ``table``) under ``tmp_path`` with ``tir``'s script and
    read every camera's frames back: no camera of the round is in an earlier one, the round's
    cameras are ``want``'s (name -> ((H, W), dtype)), each folder holds 3 frames of that shape and dtype,
    4 for the cameras in ``raw`` (two crops of each raw frame). Returns {camera: frames}."""
    earlier = set()
    for key, cameras in emu.ROUNDS.items():   # the rounds before it, in order
        if key == number:
            break
        earlier |= set(cameras)
    assert not earlier & set(table) and emu.ROUNDS[number] is table
    assert emu.main([str(tmp_path), "--root", str(root), "--round", number]) == 0
    assert set(want) == set(table)
    frames = {}
    for cam, (shape, dtype) in want.items():
        frames[cam] = _frames(tmp_path / cam, cv2.IMREAD_UNCHANGED)
        n = 4 if cam in raw else 3
        assert len(frames[cam]) == n and all(f.shape == shape and f.dtype == dtype for f in frames[cam]), cam
    return frames


def test_round8_cameras(emu, root, tmp_path):
    """Round 8 (``--round 8``, its own table): each camera's size and dtype, and the trait it was
    built for: Lepton 2.5 TLinear centikelvin, a TC001's stacked halves (the raw words' low byte
    below), DDE with a 2x enlargement, 12-bit HD counts, rolling mains bands, a barrel lens that keeps
    its corners, a cooled camera's low noise, 16-bit PNG of 8 significant bits (v x 257), a 1080p
    pillarbox, signed 0.01 degC words that wrap below 0 degC."""
    u8, u16 = np.uint8, np.uint16
    want = {"lepton25_y16_80x60": ((60, 80), u16), "tc001_stacked_256x384": ((384, 256), u8),
            "hikmicro_sr_640x512": ((512, 640), u8), "hd12_y16_1280x1024": ((1024, 1280), u16),
            "mains_bands_640x512": ((512, 640), u8), "barrel_wide_160x120": ((120, 160), u8),
            "mwir_cooled_640x512": ((512, 640), u8), "png16_8bit_640x512": ((512, 640), u16),
            "pillarbox_1920x1080": ((1080, 1920), u8), "signed_cc_winter_640x512": ((512, 640), u16)}
    frames = _built_round(emu, root, tmp_path, "8", emu.ROUND8, want, ("hd12_y16_1280x1024", "signed_cc_winter_640x512"))
    for f in frames["lepton25_y16_80x60"]:
        assert 28700 <= f.min() and f.max() <= 31100          # 288-310 K in 0.01 K
    scene = _scene(480, 640, 0, 8)
    st = emu.tc001_stacked(0, scene)
    assert np.array_equal(st[:192], emu.camera((256, 192), 1.5, emu.linear_agc, 802, process=lambda c, rng: cv2.GaussianBlur(
        c, (0, 0), 0.8, borderType=cv2.BORDER_REFLECT))(0, scene))
    assert np.abs(np.diff(st[192:].astype(int), axis=1)).max() > 128   # the low byte wraps
    for f in frames["hd12_y16_1280x1024"]:
        assert f.max() <= 4095
    a = emu.mains_bands(0)(np.full((340, 2), 8000.0) + np.arange(2)[None] * 255, None)
    b = emu.mains_bands(1)(np.full((340, 2), 8000.0) + np.arange(2)[None] * 255, None)
    assert 4.5 < np.ptp(a[:, 0]) < 5.5 and not np.allclose(a, b)     # 2.5 grey levels either way, rolling
    ramp = np.tile(np.arange(160, dtype=np.float64), (120, 1))
    bent = emu.barrel(ramp, corner=1.0)
    assert abs(bent[0, 0] - ramp[0, 0]) < 1 and abs(bent[-1, -1] - ramp[-1, -1]) < 1
    assert abs(bent[60, 40] - 80) < abs(ramp[60, 40] - 80)           # the centre enlarged
    assert all(np.all(f % 257 == 0) for f in frames["png16_8bit_640x512"])
    for f in frames["pillarbox_1920x1080"]:
        assert np.all(f[:, :240] == 0) and np.all(f[:, -240:] == 0) and f[:, 240:1680].std() > 5
    cc = emu.signed_centicelsius(0, _scene(512, 640, 0, 16))
    share_low, share_high = np.mean(cc < 16384), np.mean(cc >= 49152)
    assert share_low > 0.05 and share_high > 0.05 and share_low + share_high == 1.0


def test_round9_cameras(emu, root, tmp_path):
    """Round 9 (``--round 9``, its own table): each camera's size and dtype, and the trait it was
    built for: a narcissus disc colder at the centre, a smudge that blurs one place only, 10-bit Y10
    words, a TNR ghost trail, per-line jitter, a point-symmetric lens ghost, a turned picture with
    black corners, a scene-based NUC's negative burn-in, decimation without a filter, veiling glare."""
    u8, u16 = np.uint8, np.uint16
    want = {"narcissus_640x480": ((480, 640), u8), "smudge_blur_640x512": ((512, 640), u8),
            "y10_640x512": ((512, 640), u16), "tnr_ghost_640x512": ((512, 640), u8),
            "line_jitter_720x576": ((576, 720), u8), "lens_ghost_640x512": ((512, 640), u8),
            "horizon_level_640x512": ((512, 640), u8), "snuc_ghost_640x512": ((512, 640), u8),
            "decimated_320x256": ((256, 320), u8), "veiling_glare_640x480": ((480, 640), u8)}
    frames = _built_round(emu, root, tmp_path, "9", emu.ROUND9, want, ("y10_640x512",))
    flat = np.full((480, 640), 9000.0)
    flat[0, 0] = 10000.0                                     # a span of 1000 counts
    nar = emu.narcissus(flat)
    assert 9000 - nar[240, 320] > 100 and abs(nar[5, 5] - 9000) < 1      # the centre colder, the corners not
    scene = _scene(512, 640, 0, 8).astype(np.float64)
    sm = emu.smudge_blur(scene) - scene
    mask = emu.ellipse_mask(scene.shape, emu.SMUDGE_SHARE, 1.4, np.random.default_rng(emu.SMUDGE_SEED), blur=0.5)
    assert np.abs(sm[mask > 0.5]).mean() > 5 * np.abs(sm[mask < 0.01]).mean()   # blurred under the smudge only
    for f in frames["y10_640x512"]:
        assert f.max() <= 1023 and np.ptp(f) > 200
    still = emu.camera((640, 512), 0.0, emu.linear_agc, 904, noise=False)(0, scene)
    assert np.abs(emu.tnr_ghost(0, scene).astype(float) - still).max() > 100   # the object and its trail
    g = _scene(480, 640, 1, 8)
    a, b = emu.line_jitter(0)(g).astype(float), cv2.resize(g, (720, 576), interpolation=cv2.INTER_LINEAR)
    assert a.shape == (576, 720) and 0 < np.abs(a - b).mean() < 10 and not np.array_equal(a, emu.line_jitter(1)(g))
    spot = np.zeros((100, 100))
    spot[10, 20] = 1000.0
    gh = emu.lens_ghost(spot)
    assert gh[89, 79] > 0.3 > 100 * gh[50, 50] and gh[10, 20] >= 1000.0          # the copy at the point-symmetric place
    for f in frames["horizon_level_640x512"]:
        assert f[0, 0] == 0 and f[-1, -1] == 0 and f[256, 320] > 0
    c = emu.to_counts(scene)
    burn = emu.snuc_ghost(c, np.random.default_rng(0)) - c
    assert 0 < np.std(burn) < np.std(c) and abs(np.mean(burn)) < 1
    assert np.array_equal(emu.decimate2(g), g[::2, ::2])
    v = emu.veiling_glare(scene)
    assert np.std(v) < 0.8 * np.std(scene) and abs(v.mean() - scene.mean()) < 1


def test_unknown_camera_and_missing_root(emu, tmp_path):
    with pytest.raises(KeyError, match="no emulated camera 'fisheye'"):
        emu.build(tmp_path, tmp_path, only=["fisheye"])
    assert emu.main([str(tmp_path / "out"), "--root", str(tmp_path), "--only", "tone_log"]) == 2


DIAG = Path(__file__).resolve().parents[1] / "tools" / "scripts" / "diagnose_camera.py"


@pytest.fixture(scope="module")
def diag():
    return _load_script(DIAG)


def test_diagnose_camera_rows_follow_camera_eval(diag, tmp_path, monkeypatch, capsys):
    """The diagnosis runs the shipped bundle on camera_eval's path: one row per frame and class
    asked for, a clean frame's input is itself (99 dB), a noise frame's input is not, the gates'
    measures are filled in; an unknown class is refused naming the classes."""
    from tir.engines.training import datasets as ds

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    (tmp_path / "cam").mkdir()
    for i in range(2):
        cv2.imwrite(str(tmp_path / "cam" / f"f{i}.png"), _scene(64, 96, i, 8))
    rows = diag.diagnose(str(tmp_path / "cam"), ["clean", "noise"], max_frames=2, bundle="engines/bundles/edge")
    assert [(r["frame"], r["class"]) for r in rows] == [(0, "noise"), (0, "clean"), (1, "noise"), (1, "clean")]
    clean = [r for r in rows if r["class"] == "clean"]
    noisy = [r for r in rows if r["class"] == "noise"]
    assert all(r["psnr_in"] == 99.0 for r in clean) and all(r["psnr_in"] < 30.0 for r in noisy)
    assert all(r["extent"] > 0 and r["ratio"] is not None and r["amplitude_threshold"] > 0 for r in rows)
    assert "router=" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no class fog; classes: contrast"):
        diag.diagnose(str(tmp_path / "cam"), ["fog"], bundle="engines/bundles/edge")
    assert diag.main([str(tmp_path / "cam"), "fog", "--bundle", "engines/bundles/edge"]) == 2


FPN_CHECK = Path(__file__).resolve().parents[1] / "tools" / "scripts" / "column_fpn_check.py"


def test_column_fpn_check_measures_noise_task_and_destriping(root, tmp_path, monkeypatch, capsys):
    """The FPN check's three tables on a synthetic root: removing the column offsets brings a frame
    with a strong column pattern closer to the frame without it, a frame without FPN stays close to
    itself, and the lynred row is filled in."""
    import shutil

    from tir.engines.training import datasets as ds

    chk = _load_script(FPN_CHECK)
    data = tmp_path / "data"
    shutil.copytree(root, data)
    (data / "lynred_nonuc").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):   # a scene with a fixed column pattern, as an uncalibrated FPA delivers it
        frame = _scene(128, 160, 10 + i, 8).astype(np.float32) + rng.normal(0, 6, (1, 160))
        cv2.imwrite(str(data / "lynred_nonuc" / f"f{i}.png"), np.clip(frame, 0, 255).astype(np.uint8))
    monkeypatch.setenv("TIR_DATA_ROOT", str(data))
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    out = chk.check(["chips_lepton35"], split="test", max_frames=2)
    strong = [r for r in out["added"] if r[1] == 0.05][0]
    assert strong[4] > strong[2]                                   # offsets removed beat the input
    assert all(mean > 40.0 for _, mean, _ in out["without"])
    fpn_in, _, fpn_destriped, _, scene = out["lynred"]
    assert fpn_destriped < 0.6 * fpn_in and scene > 0.99
    assert "offsets removed" in capsys.readouterr().out
    assert chk.main(["--sets", "nosuchset"]) == 2
