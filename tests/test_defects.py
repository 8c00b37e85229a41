"""A camera's dead and stuck read-outs learned from its stream and replaced (edge/defects.py), in
the Preprocess/Postprocess stages and /stats.json (synthetic frames)."""
import cv2
import numpy as np
import pytest

from tir.edge.defects import MIN_CHANGES, DefectMap, replace_defects, replacement_plan
from tir.edge.frame import Frame
from tir.edge.pipeline.stages import MODEL_INPUT_KEY, Postprocess, Preprocess

H, W = 64, 96
DEAD, STUCK, PIXEL = 20, 61, (40, 75)


def scene(i, h=H, w=W, noise=3.0):
    """Frame i of a moving Y16 camera: a smooth scene that differs from frame to frame (a pan over
    new ground), 3000-9000 counts, with the sensor's temporal noise, uint16."""
    rng = np.random.default_rng([7, i])
    field = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 4.0)
    field = (field - field.min()) / max(float(field.max() - field.min()), 1e-6)
    return np.rint(3000 + 6000 * field + rng.normal(0, noise, (h, w))).clip(0, 65535).astype(np.uint16)


def with_defects(x):
    """The core's failed read-outs: a dead column at 0, a column stuck at the 14-bit top, one dead
    pixel, the same in every frame."""
    x = x.copy()
    x[:, DEAD] = 0
    x[:, STUCK] = 16383
    x[PIXEL] = 0
    return x


def test_a_dead_column_a_stuck_column_and_a_dead_pixel_are_found_and_replaced():
    dm = DefectMap()
    for i in range(MIN_CHANGES + 1):
        dm.update(with_defects(scene(i)))
    assert dm.scene_changes == MIN_CHANGES
    expected = np.zeros((H, W), bool)
    expected[:, DEAD] = expected[:, STUCK] = True
    expected[PIXEL] = True
    assert np.array_equal(dm.mask, expected)
    s = dm.summary()
    assert (s["pixels"], s["columns"], s["rows"]) == (2 * H + 1, 2, 0)
    clean = scene(50)
    fixed, n = dm.repair(with_defects(clean))
    assert n == 2 * H + 1 and fixed.dtype == np.uint16
    # each replaced by the mean of its left and right neighbours (the shorter gap: the row)
    want = (clean[:, DEAD - 1].astype(float) + clean[:, DEAD + 1]) / 2
    assert np.abs(fixed[:, DEAD] - want).max() <= 0.5
    assert np.abs(fixed[:, STUCK].astype(float) - clean[:, STUCK]).mean() < 100   # the scene, not 16383
    live = ~expected
    assert np.array_equal(fixed[live], with_defects(clean)[live])   # nothing else touched
    assert dm.stats()["repaired_frames"] == 1 and dm.stats()["repaired_pixels"] == n


def test_too_few_scene_changes_call_nothing_dead():
    """A pixel needs MIN_CHANGES scene changes around it; a whole column, as many changes in all
    as half of it would need (a column amplifier fails as a whole)."""
    dm = DefectMap()
    for i in range(3):   # the first frame is the reference: 2 changes
        dm.update(with_defects(scene(i)))
    assert dm.mask is None and dm.repair(with_defects(scene(0)))[1] == 0
    for i in range(3, MIN_CHANGES):   # MIN_CHANGES - 1 changes: the columns, not yet the pixel
        dm.update(with_defects(scene(i)))
    assert dm.mask[:, DEAD].all() and dm.mask[:, STUCK].all() and not dm.mask[PIXEL]
    dm.update(with_defects(scene(MIN_CHANGES)))
    assert dm.mask[PIXEL]


def test_a_static_scene_gives_no_evidence():
    """The same scene again and again (a camera on a tripod, only its noise moving): no scene change
    around any pixel, so nothing is called dead, however long it lasts."""
    dm = DefectMap()
    base = with_defects(scene(0, noise=0.0)).astype(np.int32)
    rng = np.random.default_rng(1)
    for i in range(40):
        dm.update(np.clip(base + np.rint(rng.normal(0, 3, base.shape)) * (base > 0), 0, 65535).astype(np.uint16))
    assert dm.scene_changes == 0 and dm.mask is None


def test_a_hot_vertical_object_and_an_edge_are_not_dead_columns():
    """A hot pole one pixel wide along the whole height, where the camera's scene changes every
    frame around it (the worst case: it stays in the same column, moving only by the sensor's
    noise), and a hard vertical edge that stays put: live read-outs, never replaced; the dead
    column of the same frames is."""
    dm = DefectMap()
    rng = np.random.default_rng(3)
    for i in range(3 * MIN_CHANGES):
        x = scene(i).astype(np.float64)
        x[:, 30] = 15000 + rng.normal(0, 3, H)           # the hot pole
        x[:, 70:] = x[:, 70:] * 0.3                        # an edge: a cold wall on the right
        x[:, DEAD] = 0
        dm.update(np.rint(x).clip(0, 65535).astype(np.uint16))
    assert dm.mask is not None
    assert dm.mask[:, DEAD].all()
    assert not dm.mask[:, 30].any() and not dm.mask[:, 68:72].any()
    assert dm.summary()["pixels"] == H


def test_a_dead_row_and_a_pair_of_dead_columns_are_filled_across_the_shorter_gap():
    mask = np.zeros((8, 10), bool)
    mask[:, 4:6] = True        # an adjacent pair of dead columns
    mask[2, :] = True          # a dead row
    x = np.tile(np.arange(10, dtype=np.uint16) * 64, (8, 1)) + (np.arange(8, dtype=np.uint16) * 640)[:, None]
    plan = replacement_plan(mask)
    fixed, n = replace_defects(x, mask, plan, step=64)
    assert n == int(mask.sum())
    # the pair: linear between columns 3 and 6 (weights 2/3, 1/3), on the step of 64
    assert np.array_equal(fixed[5, 4:6], x[5, 4:6])
    # the row: from the rows above and below (x is linear, so interpolation is exact)
    assert np.array_equal(fixed[2, [0, 1, 2, 3, 6, 7, 8, 9]], x[2, [0, 1, 2, 3, 6, 7, 8, 9]])
    assert np.all(fixed % 64 == 0)
    # a dead border column: its one live neighbour
    edge = np.zeros((8, 10), bool)
    edge[:, 0] = True
    assert np.array_equal(replace_defects(x, edge)[0][:, 0], x[:, 1])
    assert replacement_plan(np.zeros((4, 4), bool)) is None and replace_defects(x, None) == (x, 0)


def test_status_rows_are_never_called_dead():
    """A Lepton's telemetry rows (constant words under the image, edge/normalize.py status_rows)
    do not follow the scene, but they are not read-outs: Preprocess leaves them out."""
    pre = Preprocess()
    for i in range(MIN_CHANGES + 2):
        x = with_defects(scene(i) + 26000)   # TLinear kelvin × 100
        x = np.vstack([x, np.zeros((2, W), np.uint16)])
        x[-2, :4] = (14, 600, 9, 8)
        pre(Frame(raw=x, seq=i, t_capture=0.0, meta={"bits": 16, "source_bits": 16}))
    s = pre.defects.summary()
    assert s["rows"] == 0 and s["columns"] == 2 and not pre.defects.mask[-2:].any()


def _frames(pre, n, meta=None, first=0):
    out = []
    for i in range(first, first + n):
        f = Frame(raw=with_defects(scene(i)), seq=i, t_capture=0.0, meta={"bits": 16, "source_bits": 16, **(meta or {})})
        pre(f)
        out.append(f)
    return out


def test_preprocess_replaces_before_normalising_and_postprocess_keeps_the_replacement():
    """The model input has no dead column and the normaliser's range is the scene's (the dead
    column at 0 and the stuck one at 16383 do not stretch it); a passed-through frame comes out
    with them replaced, its raw counts as the camera sent them."""
    pre = Preprocess()
    frames = _frames(pre, MIN_CHANGES + 2)
    last = frames[-1]
    assert last.meta["defects"] == 2 * H + 1
    x = last.meta.pop(MODEL_INPUT_KEY)
    assert x[:, DEAD].min() > 0.0 and x[:, STUCK].max() < 1.0
    assert last.meta["norm"]["lo"] > 2000 and last.meta["norm"]["hi"] < 10000
    last.meta["_model_output"] = x[None, None]
    last.meta["_passthrough"] = True
    Postprocess(pre.normalizer)(last)
    assert last.restored[:, DEAD].min() > 2000 and last.restored[:, STUCK].max() < 10000
    assert (last.raw[:, DEAD] == 0).all() and (last.raw[:, STUCK] == 16383).all()
    # a restored (not passed-through) frame: the excess beyond the range comes from the replaced counts
    f = _frames(pre, 1, first=40)[0]
    y = f.meta.pop(MODEL_INPUT_KEY)
    f.meta["_model_output"] = y[None, None]
    Postprocess(pre.normalizer)(f)
    assert f.restored[:, STUCK].max() < 10000
    # FFC frames (the shutter) add no evidence; without a map nothing is replaced
    before = pre.defects.scene_changes
    _frames(pre, 3, {"ffc": True}, first=60)
    assert pre.defects.scene_changes == before
    off = Preprocess(defects=False)
    g = _frames(off, 1)[0]
    assert "defects" not in g.meta and off.defects is None


@pytest.mark.parametrize("change", ["connection", "size"])
def test_a_camera_change_drops_the_estimate(change):
    pre = Preprocess()
    _frames(pre, MIN_CHANGES + 2, {"connection": 1})
    assert pre.defects.summary()["columns"] == 2
    if change == "connection":
        f = Frame(raw=scene(70), seq=99, t_capture=0.0, meta={"bits": 16, "source_bits": 16, "connection": 2})
    else:
        f = Frame(raw=scene(70, h=H, w=W + 8), seq=99, t_capture=0.0,
                  meta={"bits": 16, "source_bits": 16, "connection": 1})
    pre(f)
    assert f.meta["camera_change"] == [change]
    assert pre.defects.mask is None and "defects" not in f.meta
    assert pre.defects.stats()["resets"] == 1 and pre.defects.scene_changes == 0


def test_stats_json_has_the_defects_section():
    from tir.edge.pipeline.stats import PipelineStats

    pre = Preprocess()
    _frames(pre, MIN_CHANGES + 2)
    stats = PipelineStats(["capture", "read", "preprocess", "output"])
    stats.defect_stats = pre.defects.stats
    d = stats.snapshot().to_dict()["defects"]
    assert d["pixels"] == 2 * H + 1 and d["columns"] == 2 and d["repaired_frames"] >= 1
    assert d["stats_error"] is None


def test_a_looped_recording_counts_each_frame_once():
    """Two frames played again and again (file://...?loop=true): pixels equal by chance between
    them would stay equal every time the pair comes round; a frame counted once does not count
    again, so they are not called dead."""
    a, b = scene(0), scene(1)
    rng = np.random.default_rng(2)
    spots = (rng.integers(0, H, 20), rng.integers(0, W, 20))
    b[spots] = a[spots]
    dm = DefectMap()
    for i in range(40):
        dm.update(a if i % 2 == 0 else b)
    assert dm.scene_changes == 1 and dm.mask is None


def test_an_on_screen_overlay_is_not_a_dead_read_out():
    """A camera's burnt-in OSD (a text block, a reticle line) stays the same in every frame as a
    dead read-out does, but it is a structure of the picture: neither it nor the corner of it
    whose neighbourhood sees the scene move is replaced; a dead pixel of the same frames is."""
    dm = DefectMap()
    for i in range(3 * MIN_CHANGES):
        x = scene(i)
        x[4:11, 6:30] = 200          # a text block's black outline
        x[5:10, 7:29] = 16000        # its white glyphs
        x[32, 40:70] = 16383         # a reticle's horizontal line
        x[PIXEL] = 0
        dm.update(x)
    assert dm.mask is not None and dm.mask[PIXEL]
    assert not dm.mask[3:12, 5:31].any() and not dm.mask[31:34, 39:71].any()
    assert dm.summary()["pixels"] == 1


def test_a_small_font_osd_drawn_over_the_scene_is_not_dead_read_outs():
    """A timestamp and a reading in a small font burnt in over the moving scene (no text block
    behind them: the scene shows between the strokes): its colons' dots, its decimal point and
    its thin strokes are constant components under MAX_CLUSTER each, every neighbour live, a pixel
    or two apart; together they are text and stay. A dead pixel, and a pair of dead pixels two
    apart (independent defects that happen to be near), in the same frames are replaced."""
    dm = DefectMap()
    pair = ((20, 10), (20, 12))
    for i in range(3 * MIN_CHANGES):
        x = scene(i)
        text = np.zeros((H, W), np.uint8)
        cv2.putText(text, "12:34:%02d" % (i // 3), (3, 58), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1, cv2.LINE_8)
        cv2.putText(text, "36.5", (50, 14), cv2.FONT_HERSHEY_PLAIN, 0.8, 255, 1, cv2.LINE_8)
        x[text > 0] = 16383
        x[PIXEL] = 0
        for p in pair:
            x[p] = 0
        dm.update(x)
    assert dm.mask is not None
    assert dm.mask[PIXEL] and all(dm.mask[p] for p in pair)
    assert dm.summary()["pixels"] == 3


def _wavy(h=256, w=320):
    y, x = np.mgrid[0:h, 0:w]
    return (8000 + 2000 * np.sin(x / 40) * np.cos(y / 30)).astype(np.float32)


def test_a_static_noisy_camera_takes_the_full_test_rarely():
    """The quick look's floor holds the camera's temporal noise (2σ, measured by the last full
    test): a static camera whose per-pixel noise exceeds the span term no longer takes the full
    test on every frame (it did on all 199 of 200 frames)."""
    from tir.edge.defects import DefectMap

    rng = np.random.default_rng(0)
    scene, d = _wavy(), DefectMap()
    for _ in range(100):
        d.update(np.clip(scene + rng.normal(0, 60, scene.shape), 0, 65535).astype(np.uint16))
    assert d.full_tests <= 3 and d.scene_changes == 0


def test_full_tests_that_count_nothing_back_off_and_a_real_change_still_counts():
    """A scene whose motion covers under a quarter of the frame never counts; its full tests
    back off to one in SETTLED_EVERY frames. A change of the whole scene after it still counts."""
    from tir.edge.defects import SETTLED_EVERY, DefectMap

    rng = np.random.default_rng(1)
    scene, d = _wavy(), DefectMap()
    for k in range(64):
        f = scene.copy()
        f[:80, (4 * k) % 200:(4 * k) % 200 + 80] += 3000.0          # an object moving over ~15 % of it
        d.update(np.clip(f + rng.normal(0, 5, f.shape), 0, 65535).astype(np.uint16))
    assert d.scene_changes == 0 and 0 < d.full_tests <= 64 // SETTLED_EVERY + 4
    counted = 0
    for k in range(2 * SETTLED_EVERY):
        other = np.roll(scene, 37 * (k + 1), axis=1) * (1.0 + 0.1 * (k % 2))   # the camera pans
        counted += d.update(np.clip(other + rng.normal(0, 5, other.shape), 0, 65535).astype(np.uint16))
    assert counted >= SETTLED_EVERY


def test_a_clipped_pole_over_part_of_the_height_is_not_a_dead_column():
    """A hot pole clipped at the top of the range over the lower part of the frame, where the scene
    moves around it every frame, above it a still sky that carries only the sensor's noise: the
    clipped pixels read one value as a dead column does, but the sky's pixels of the same column
    change by their noise, so the column is live (a failed column amplifier is constant along its
    whole length) and the pole, longer than MAX_CLUSTER, is the picture's. The dead column of the
    same frames is replaced."""
    rng = np.random.default_rng(5)
    sky = scene(999)
    dm = DefectMap()
    for i in range(5 * MIN_CHANGES):
        x = scene(i).astype(np.float64)
        x[:24] = sky[:24] + rng.normal(0, 3, (24, W))
        x[24:, 30] = 16383
        x[:, DEAD] = 0
        dm.update(np.rint(x).clip(0, 65535).astype(np.uint16))
    assert dm.mask is not None and dm.mask[:, DEAD].all()
    assert not dm.mask[:, 30].any()
    assert dm.summary()["pixels"] == H


def test_a_dead_first_column_and_last_row_are_found():
    """A dead read-out on the frame's border: the neighbourhood median mirrors the frame about its
    border pixel, so the column's own constant fills 5 of its 25 neighbours (a repeated border
    filled 15 and hid the scene's change: a dead first column was never found). Each is filled
    from its one live side."""
    dm = DefectMap()
    for i in range(3 * MIN_CHANGES):
        x = scene(i)
        x[:, 0] = 0
        x[H - 1] = 16383
        dm.update(x)
    expected = np.zeros((H, W), bool)
    expected[:, 0] = expected[H - 1] = True
    assert dm.mask is not None and np.array_equal(dm.mask, expected)
    clean = scene(50)
    x = clean.copy()
    x[:, 0] = 0
    x[H - 1] = 16383
    fixed, n = dm.repair(x)
    assert n == H + W - 1
    assert np.array_equal(fixed[:H - 1, 0], clean[:H - 1, 1])   # the nearest live pixel on its row
    assert np.array_equal(fixed[H - 1, 1:], clean[H - 2, 1:])


def test_blank_frames_are_no_evidence_and_no_reference():
    """An 8-bit camera (grey levels stored << 6) behind a grabber whose first frame is black and
    whose signal drops out now and then (grey fill): a blank frame differs from the scene at
    every pixel, a dead one's too, so counted (or taken as the reference) it proved every
    read-out live for good, and the black first frame's count step (none: 1) put the replaced
    counts off the camera's 64-count grid. The stuck column and the dead pixel are found and
    replaced by counts the camera could give."""
    def grey(i):
        x = ((scene(i).astype(np.float64) - 3000) / 6000 * 255).round().clip(0, 255).astype(np.uint16) << 6
        x[PIXEL] = 0
        x[:, STUCK] = 255 << 6
        return x

    dm = DefectMap()
    dm.update(np.zeros((H, W), np.uint16))
    for i in range(3 * MIN_CHANGES):
        dm.update(grey(i))
        if i % 5 == 4:
            dm.update(np.full((H, W), 128 << 6, np.uint16))
    expected = np.zeros((H, W), bool)
    expected[:, STUCK] = expected[PIXEL] = True
    assert dm.mask is not None and np.array_equal(dm.mask, expected)
    fixed, n = dm.repair(grey(50))
    assert n == H + 1 and not np.any(fixed % 64)
