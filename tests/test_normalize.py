import numpy as np
import pytest

from tir.edge.normalize import NormParams, Normalizer, robust_range


def scene(seed=0, base=20000, spread=1500, shape=(120, 160)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = base + spread * (xx / shape[1]) + rng.normal(0, 30, shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def test_round_trip_within_one_count():
    raw = scene()
    norm = Normalizer(low_pct=0.0, high_pct=100.0, stride=1)
    x, params = norm.forward(raw)
    assert x.dtype == np.float32 and x.shape == raw.shape
    assert x.min() >= 0.0 and x.max() <= 1.0
    back = norm.inverse(x, params)
    assert back.dtype == np.uint16 and back.shape == raw.shape
    assert np.abs(back.astype(np.int32) - raw.astype(np.int32)).max() <= 1


def test_inverse_accepts_model_batch_layout():
    raw = scene()
    norm = Normalizer()
    x, params = norm.forward(raw)
    back = norm.inverse(x[None, None], params)
    assert back.shape == raw.shape
    # a cropped (non-contiguous) model output, as engines return after padding
    padded = np.pad(x, ((0, 2), (0, 3)))[None, None]
    cropped = norm.inverse(padded[..., :120, :160], params)
    assert np.array_equal(cropped, back)


def test_percentiles_ignore_hot_pixel_and_clip():
    raw = scene()
    raw[5, 5] = 65000  # one hot pixel must not set the scale
    norm = Normalizer(stride=1)
    x, params = norm.forward(raw)
    assert params.hi < 30000
    assert x[5, 5] == 1.0
    # an outlier is clipped into range on the way back, the bulk is restored
    back = norm.inverse(x, params)
    inside = (raw >= params.lo) & (raw <= params.hi)
    assert inside.mean() > 0.98
    assert np.abs(back[inside].astype(np.int32) - raw[inside]).max() <= 1


def test_min_span_for_flat_scene():
    raw = np.full((64, 64), 1000, np.uint16)
    norm = Normalizer(min_span=100)
    x, params = norm.forward(raw)
    assert params.span == pytest.approx(100)
    assert np.allclose(x, 0.5)
    flat_low = np.full((64, 64), 10, np.uint16)
    _, params_low = Normalizer(min_span=100).forward(flat_low)
    assert params_low.lo == 0.0 and params_low.hi == 100.0


def test_ema_smooths_then_converges():
    norm = Normalizer(alpha=0.25, low_pct=0, high_pct=100, stride=1)
    first = scene(base=10000)
    second = scene(base=10800)   # the view moved: a range that overlaps the last one, the same span
    _, p0 = norm.forward(first)
    _, p1 = norm.forward(second)
    lo_new, _ = robust_range(second, 0, 100, 1)
    assert p0.lo < p1.lo < lo_new  # moved towards the new scene, not jumped
    for _ in range(60):
        _, p = norm.forward(second)
    assert p.lo == pytest.approx(lo_new, abs=1.0)
    assert norm.jumps == 0


@pytest.mark.parametrize("gain", [4.0, 0.25, 8.0])
def test_a_gain_switch_restarts_the_ema_at_the_new_frames_range(gain):
    """A camera's gain switch changes its span 4-8× at once (high ↔ low gain): the first frame after
    it is mapped with its own range, not smoothed from the old one (which squeezed the new frames into
    a sliver of [0, 1], or clipped them, for tens of frames). Frames after it smooth again."""
    norm = Normalizer(alpha=0.1, low_pct=0, high_pct=100, stride=1)
    before = scene(base=8000, spread=2000)
    for _ in range(20):
        norm.forward(before)
    after = np.clip((before.astype(np.float64) - 9000) * gain + 9000, 0, 65535).astype(np.uint16)
    x, p = norm.forward(after)
    lo, hi = robust_range(after, 0, 100, 1)
    assert (p.lo, p.hi) == pytest.approx((lo, hi)) and norm.jumps == 1
    assert x.min() == 0.0 and x.max() == 1.0          # the whole scale, neither a sliver nor clipped
    _, p2 = norm.forward(after + np.uint16(20))          # flicker: smoothed
    assert norm.jumps == 1 and lo < p2.lo < lo + 20
    assert not Normalizer().jumped(0.0, 1.0)            # nothing smoothed yet: the first frame sets it


def test_a_range_that_left_the_smoothed_one_restarts_it():
    """A range that does not overlap the smoothed one (a reconnect to another camera, a new offset after
    a shutter event) restarts the EMA even at the same span."""
    norm = Normalizer(alpha=0.1, low_pct=0, high_pct=100, stride=1)
    for _ in range(10):
        norm.forward(scene(base=8000))
    _, p = norm.forward(scene(base=12000))
    assert p.lo == pytest.approx(robust_range(scene(base=12000), 0, 100, 1)[0]) and norm.jumps == 1


def test_inverse_clips_to_valid_count_range():
    norm = Normalizer(max_count=16383)
    params = NormParams(100.0, 16000.0)
    y = np.array([[-1.0, 0.0, 1.0, 5.0]], np.float32)
    back = norm.inverse(y, params)
    assert back.tolist() == [[0, 100, 16000, 16383]]


def test_bad_settings_rejected():
    with pytest.raises(ValueError):
        Normalizer(low_pct=60, high_pct=40)
    with pytest.raises(ValueError):
        Normalizer(alpha=0)


def test_display_referred_8bit_source_gets_the_fixed_full_scale_map():
    """An 8-bit stream (AGC already applied by the camera/file) is mapped by full scale, not
    re-stretched: a low-contrast frame stays low-contrast for the model, and 8-bit grey v
    becomes exactly v/255, the routes' training domain."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Preprocess

    grey = np.tile(np.arange(100, 150, dtype=np.uint16), (8, 1))  # a flat, low-contrast frame
    pre = Preprocess()
    frame = Frame(raw=grey << 6, seq=0, t_capture=0.0, meta={"bits": 14, "source_bits": 8})
    pre(frame)
    x = frame.meta["_model_input"]
    assert np.allclose(x, grey / 255.0, atol=1e-6)
    assert frame.meta["norm"] == {"lo": 0.0, "hi": 255.0 * 64}
    # raw counts keep the percentile stretch (the normaliser is the AGC there)
    raw = Preprocess()
    f2 = Frame(raw=(grey * 40).astype(np.uint16), seq=0, t_capture=0.0, meta={"bits": 14})
    raw(f2)
    assert f2.meta["_model_input"].max() > 0.999 and f2.meta["_model_input"].min() == 0.0


def test_fixed_range_must_be_increasing():
    with pytest.raises(ValueError, match="hi > lo"):
        Normalizer().set_fixed_range(10, 10)


def test_hot_objects_beyond_the_robust_range_keep_their_counts():
    """The normaliser clips at its 0.5/99.5 % range; Postprocess gives the clipped counts back,
    so a small hot object (a person, an engine) is not saturated in the restored counts."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    class Identity:
        def infer(self, x):
            return x

    raw = np.full((120, 160), 7000, np.uint16) + np.arange(160, dtype=np.uint16)[None, :]
    raw[50:53, 70:73] = 12000  # 9 px: far above the 99.5th percentile
    raw[0, 0] = 100            # one dead-cold pixel below the 0.5th
    frame = Frame(raw=raw, seq=0, t_capture=0.0, meta={"bits": 16})
    pre = Preprocess()
    pre(frame)
    Infer(Identity())(frame)
    Postprocess(pre.normalizer)(frame)
    assert frame.restored[51, 71] == 12000 and frame.restored[0, 0] == 100
    assert np.abs(frame.restored.astype(int) - raw.astype(int)).max() <= 1


def test_passthrough_frames_come_back_bit_exact():
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    class Passthrough:
        route = "passthrough"

        def infer(self, x):
            return x * 0.0  # whatever it returns, a pass-through frame keeps its raw counts

    raw = (np.random.default_rng(0).random((60, 80)) * 16383).astype(np.uint16)
    frame = Frame(raw=raw, seq=0, t_capture=0.0, meta={"bits": 14})
    pre = Preprocess()
    pre(frame)
    Infer(Passthrough())(frame)
    Postprocess(pre.normalizer)(frame)
    assert np.array_equal(frame.restored, raw) and "_passthrough" not in frame.meta


def test_counts_above_the_first_frames_bit_depth_are_not_clipped_in_the_restored_frame():
    """A 16-bit stream whose first frame fit in 14 bits is normalised as 14-bit (``meta["bits"]``
    from the first frame, edge/sources/file.py); after a gain switch its counts reach 28000. The
    restored frames were clipped at 16383 (10 dB from the camera's own frames on the emulated
    raw16 cameras, low gain then high gain); the first such frame widens the range to 16 bits."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    class Identity:
        def infer(self, x):
            return x

    pre = Preprocess()
    post = Postprocess(pre.normalizer)
    low_gain = scene(base=8000, spread=300)
    for raw in (low_gain, scene(base=8000, spread=20000)):   # the gain switch: 20000 counts of span
        frame = Frame(raw=raw, seq=0, t_capture=0.0, meta={"bits": 14})
        pre(frame)
        Infer(Identity())(frame)
        post(frame)
        assert np.abs(frame.restored.astype(int) - raw.astype(int)).max() <= 1
    assert pre.normalizer.max_count == 65535


def test_a_near_flat_frame_above_the_guessed_bit_depth_is_not_pinned_to_its_top():
    """A 14-bit guess (the first frame's ``meta["bits"]``), then a near-flat frame (span under
    ``min_span``) at 60000 counts: the min-span widening kept the range inside 0..max_count, i.e.
    16319..16383, so the whole frame read 1.0 (the router and gates saw a saturated frame), and a
    frame the restorer passed through never reached Postprocess's widening. The normaliser widens
    the depth itself as soon as a frame's robust range lies above it."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import MODEL_INPUT_KEY, Preprocess

    pre = Preprocess()
    flat = (60000 + np.random.default_rng(1).integers(0, 30, (120, 160))).astype(np.uint16)   # 30-count span
    for raw in (scene(base=4000, spread=8000), flat):
        frame = Frame(raw=raw, seq=0, t_capture=0.0, meta={"bits": 14})
        pre(frame)
    x, norm = frame.meta[MODEL_INPUT_KEY], frame.meta["norm"]
    assert norm["lo"] <= flat.min() and norm["hi"] >= flat.max()     # was 16319..16383
    assert 0.2 < float(np.median(x)) < 0.8                            # was 1.0 everywhere
    assert pre.normalizer.max_count == 65535


def lepton_with_telemetry(rows=2, top=False, seed=3, shape=(120, 160)):
    """A Lepton TLinear frame (kelvin x 100, a 20-30 deg C scene with 0.05 K of noise) with
    ``rows`` telemetry rows as the Lepton appends them (edge/camera/formats.py): mostly zero
    words, a revision word, counters, an 8-word serial number, FPA temperatures near 30500."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = 29400 + 800 * (xx / shape[1]) + 300 * np.sin(yy / 9.0) + rng.normal(0, 5, shape)
    img = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
    tele = np.zeros((rows, shape[1]), np.uint16)
    tele[0, :30] = [14, 4321, 9, 8, 0] + list(rng.integers(0, 65536, 8)) + [768, 33, 0, 0, 1001, 0,
                                                                           24500, 8190, 30510, 8300,
                                                                           30660, 0, 30490, 51000, 0, 0, 0]
    return (np.vstack([tele, img]) if top else np.vstack([img, tele])), img


@pytest.mark.parametrize("rows,top,shape", [(2, False, (120, 160)), (2, True, (120, 160)), (3, False, (60, 80))])
def test_telemetry_rows_do_not_set_the_range(rows, top, shape):
    """A Lepton's telemetry rows under (or above) its Y16 image (160x122, 80x63), as a recording
    of the raw stream holds them: their zero words were the frame's 0.5th percentile, so the range
    was 0..~30000 and the scene (a few hundred counts) filled 1-3 % of [0, 1] (the emulated
    Lepton, tools/scripts/emulate_cameras.py --round 4: router 15.5 %). The range is the image
    rows' alone, and the model input's telemetry rows repeat the nearest image row."""
    raw, img = lepton_with_telemetry(rows, top, shape=shape)
    got = Normalizer(alpha=1.0).update(raw)
    want = Normalizer(alpha=1.0).update(img)
    assert (got.lo, got.hi) == (want.lo, want.hi)
    assert (got.top, got.bottom) == ((rows, 0) if top else (0, rows))
    from tir.edge.normalize import status_rows

    assert status_rows(raw) == ((rows, 0) if top else (0, rows))
    x, _ = Normalizer(alpha=1.0).forward(raw)
    xi, _ = Normalizer(alpha=1.0).forward(img)
    image = slice(rows, None) if top else slice(0, shape[0])
    assert np.array_equal(x[image], xi)
    edge = xi[0] if top else xi[-1]
    assert all(np.array_equal(r, edge) for r in (x[:rows] if top else x[-rows:]))


def test_a_scene_has_no_status_rows():
    """Image rows are not status rows: a plain scene, one whose bottom rows are a warm band
    within the scene's range, a hot object on the bottom rows and a cold top row (a span beyond
    the range, under half the row), a dead top row at 0 counts in a scene near 0."""
    from tir.edge.normalize import status_rows

    assert status_rows(scene()) == (0, 0)
    warm = scene()
    warm[-3:] = warm[-3:] + 1200
    assert status_rows(warm) == (0, 0)
    hot = scene()
    hot[-4:, 20:90] = 60000
    hot[0, :70] = 100
    assert status_rows(hot) == (0, 0)
    dark = scene(base=200, spread=1500)
    dark[0] = 0
    assert status_rows(dark) == (0, 0)
    assert status_rows(scene(shape=(12, 160))) == (0, 0)   # too few rows to tell


def test_telemetry_rows_come_back_exactly_in_the_restored_frame():
    """The restored frame keeps the camera's telemetry words (a recorder, the FFC and
    temperature readers downstream need them); the model's output for those rows is not used."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    class Darken:
        def infer(self, x):
            return x * 0.5

    raw, img = lepton_with_telemetry(2)
    frame = Frame(raw=raw, seq=0, t_capture=0.0, meta={"bits": 16})
    pre = Preprocess()
    pre(frame)
    norm = dict(frame.meta["norm"])
    Infer(Darken())(frame)
    Postprocess(pre.normalizer)(frame)
    assert np.array_equal(frame.restored[-2:], raw[-2:])
    assert not np.array_equal(frame.restored[:-2], img)
    assert norm["status_rows"] == (0, 2)


def test_a_camera_stored_msb_aligned_is_mapped_as_stored_lsb_aligned():
    """A 14-bit core's flat scene (40 counts of span, noise 1.5 counts) stored as it comes and
    MSB-aligned in 16-bit words (``<< 2``, every value a multiple of 4): the same frame for the
    model. The minimum span (64 counts, the max-gain analogue) was counted in stored values, so
    the aligned copy's 160 stored counts were stretched over [0, 1] while the plain one was
    widened to 64: four times the stretch, and its noise with it (the emulated y16_msb_640x512)."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:128, 0:160]
    lsb = np.rint(7000 + 40 * xx / 160 + rng.normal(0, 1.5, xx.shape)).astype(np.uint16)
    msb = (lsb << 2).astype(np.uint16)
    x_lsb, p_lsb = Normalizer(alpha=1.0).forward(lsb)
    x_msb, p_msb = Normalizer(alpha=1.0).forward(msb)
    assert p_msb.span == pytest.approx(4 * p_lsb.span) and p_lsb.span == 64.0
    assert np.allclose(x_lsb, x_msb, atol=1e-6)
    from tir.edge.normalize import count_step

    assert count_step((lsb * 40).astype(np.uint16)) == 8   # a power of two: only a bit shift makes a step
    assert count_step(lsb) == 1 and count_step(msb) == 4 and count_step(np.full((8, 8), 8000, np.uint16)) == 1
    assert count_step(lsb.astype(np.float32)) == 1
    assert count_step(np.tile(np.arange(0, 40, 2, dtype=np.uint16), (8, 1))) == 1   # 20 levels: too few to tell step 2
    assert count_step(np.tile(np.arange(0, 48, 4, dtype=np.uint16), (8, 1))) == 4   # 12 levels tell step 4


def test_an_msb_aligned_cameras_restored_counts_stay_on_its_step():
    """The restored frame of a camera stored ``<< 2`` is in the camera's format: multiples of 4
    (the normaliser's inverse rounded to single counts, so a recorder got another format back)."""
    from tir.edge.frame import Frame
    from tir.edge.pipeline.stages import Infer, Postprocess, Preprocess

    class Darken:
        def infer(self, x):
            return x * 0.9

    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:128, 0:160]
    raw = (np.rint(7000 + 200 * xx / 160 + rng.normal(0, 1.5, xx.shape)).astype(np.uint16) << 2).astype(np.uint16)
    frame = Frame(raw=raw, seq=0, t_capture=0.0, meta={"bits": 16})
    pre = Preprocess()
    pre(frame)
    Infer(Darken())(frame)
    Postprocess(pre.normalizer)(frame)
    assert np.all(frame.restored % 4 == 0) and not np.array_equal(frame.restored, raw)
    assert frame.meta["norm"]["count_step"] == 4


def _winter(celsius_lo: float, celsius_hi: float, shape=(96, 128), seed: int = 0) -> np.ndarray:
    """A synthetic scene as int16 0.01 °C words stored as uint16 (two's complement): a left-right ramp
    from ``celsius_lo`` to ``celsius_hi`` with 0.05 K of white noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(celsius_lo, celsius_hi, shape[1])[None, :] + rng.normal(0.0, 0.05, shape)
    return (np.rint(ramp * 100.0).astype(np.int64) & 0xFFFF).astype(np.uint16)


def test_signed_words_are_told_from_every_unsigned_camera():
    """Two's complement read as unsigned (a winter scene across 0 °C: both ends of the 16 bits, the
    middle empty) is signed; a 14-bit core, an offset camera with a clipped hot object, a few dead
    pixels at 0 under a high offset, an 8-bit frame and status bits above 14-bit counts are not."""
    from tir.edge.normalize import SIGN_BIT, signed_words

    w = _winter(-8.0, 6.0)
    assert w.min() < 700 and w.max() > 64700 and signed_words(w)
    assert np.all(np.diff((w ^ np.uint16(SIGN_BIT)).astype(int)[:, ::8].mean(axis=0)) > 0)   # in order again
    assert not signed_words(_winter(2.0, 12.0))          # above 0 °C only: one contiguous range
    assert not signed_words(_winter(-12.0, -2.0))        # below 0 °C only: one contiguous range
    rng = np.random.default_rng(1)
    core14 = rng.integers(0, 16384, (96, 128)).astype(np.uint16)
    assert not signed_words(core14)
    offset = rng.integers(48000, 54000, (96, 128)).astype(np.uint16)
    offset[40:50, 60:70] = 65535                        # a hot object clipped at the top
    assert not signed_words(offset)
    high = rng.integers(60000, 65000, (96, 128)).astype(np.uint16)
    high.ravel()[rng.choice(high.size, 20, replace=False)] = 0   # 0.16 % dead pixels
    assert not signed_words(high)
    assert not signed_words(core14.astype(np.uint8)) and not signed_words(core14 | np.uint16(1 << 15))
    assert not signed_words(np.zeros((0, 0), np.uint16))


def test_a_signed_camera_is_restored_in_order_and_given_back_in_its_own_words():
    """tir run reads a stream of signed words as offset binary (edge/pipeline/stages.py Preprocess):
    the model sees the scene in its order (the coldest pixels dark, not the brightest), the restored
    frame comes back in the camera's words (within one count of an identity model's; a pass-through
    frame bit-exact), the display shows it in order; a frame that starts it mid-stream is a camera
    change ("signed") and the stream stays signed through a frame wholly below 0 °C."""
    from tir.edge.frame import Frame
    from tir.edge.normalize import SIGN_BIT
    from tir.edge.pipeline.stages import Display, Infer, Postprocess, Preprocess

    class Identity:
        def infer(self, x):
            return x

    class Passthrough:
        route = "passthrough"

        def infer(self, x):
            return x * 0.0

    pre = Preprocess()
    post = Postprocess(pre.normalizer)
    frames = []
    for raw in (_winter(2.0, 12.0, seed=0), _winter(-8.0, 6.0, seed=1), _winter(-12.0, -2.0, seed=2)):
        frame = Frame(raw=raw, seq=len(frames), t_capture=0.0, meta={"bits": 16})
        pre(frame)
        x = frame.meta["_model_input"].copy()
        Infer(Identity())(frame)
        post(frame)
        assert np.abs((frame.restored ^ np.uint16(SIGN_BIT)).astype(int) - (raw ^ np.uint16(SIGN_BIT)).astype(int)).max() <= 1
        frames.append((frame, x))
    (above, x0), (across, x1), (below, x2) = frames
    assert "signed_words" not in above.meta and "camera_change" not in above.meta
    assert across.meta["signed_words"] and across.meta["camera_change"] == ["signed"]
    assert below.meta["signed_words"] and "camera_change" not in below.meta
    for x in (x0, x1, x2):   # the scene's ramp in order (the range smoothed over frames): cold left darker
        assert x[:, -10:].mean() - x[:, :10].mean() > 0.3 and np.all(np.diff(x.mean(axis=0)[::16]) >= 0)
    frame = Frame(raw=across.raw, seq=3, t_capture=0.0, meta={"bits": 16})
    pre(frame)
    Infer(Passthrough())(frame)
    post(frame)
    assert np.array_equal(frame.restored, across.raw)
    Display()(frame)
    shown = frame.display["raw"]
    grey = shown if shown.ndim == 2 else shown[..., 0]
    assert grey[:, :10].mean() < grey[:, -10:].mean()


def test_the_evaluation_degrades_a_signed_camera_in_its_order():
    """tir eval degrades a frame of signed words as offset binary and gives it back in the camera's
    words (engines/training/camera_eval.py degrade_counts): a blur of the raw words smeared the pixels
    on either side of 0 °C into the middle of the 16 bits (-327 °C to +327 °C)."""
    from tir.engines.training.camera_eval import degrade_counts

    w = _winter(-8.0, 6.0)
    blurred, clean, meta, _ = degrade_counts(w, 16, "blur", np.random.default_rng(0))
    assert np.array_equal(clean, w) and meta["source_bits"] == 16
    middle = (blurred >= 16384) & (blurred < 49152)
    assert not middle.any() and not np.array_equal(blurred, w)
