import numpy as np
import pytest

from tir.edge.frame import check_frame
from tir.edge.sources import SourceError, open_source
from tir.edge.sources.file import EndOfStream
from tir.edge.sources.synthetic import DRIFT_PER_SECOND, MAX_COUNT, SIZES, ThermalSceneRenderer, render_frames


def read_all(source):
    frames = []
    while True:
        try:
            frame = source.read(timeout=1.0)
        except EndOfStream:
            return frames
        if frame is not None:
            frames.append(frame)


def test_small_source_fixture_gives_finite_14bit_frames(small_source):
    frames = read_all(small_source)
    assert len(frames) == 8
    assert [f.seq for f in frames] == list(range(8))
    for f in frames:
        check_frame(f.raw, (120, 160))
        assert f.raw.max() <= MAX_COUNT
        assert f.meta["camera"] == "synthetic" and f.meta["bits"] == 14
        assert f.meta["source"].startswith("synthetic://")
    assert small_source.stats()["frames"] == 8
    assert small_source.size == (160, 120)


def test_same_seed_same_sequence_other_seed_differs():
    a = read_all(open_source("synthetic://?size=160x120&realtime=0&frames=5&seed=3"))
    b = read_all(open_source("synthetic://?size=160x120&realtime=0&frames=5&seed=3"))
    c = read_all(open_source("synthetic://?size=160x120&realtime=0&frames=5&seed=4"))
    for fa, fb, fc in zip(a, b, c):
        np.testing.assert_array_equal(fa.raw, fb.raw)
        assert not np.array_equal(fa.raw, fc.raw)
    np.testing.assert_array_equal(np.stack([f.raw for f in a]), render_frames(5, (160, 120), seed=3))


def test_every_size_renders_within_14_bits():
    for w, h in SIZES:
        frames = render_frames(2, size=(w, h), seed=1)
        assert frames.shape == (2, h, w) and frames.dtype == np.uint16
        assert frames.max() <= MAX_COUNT


def test_objects_move_and_noise_is_temporal(synthetic_frames):
    r = ThermalSceneRenderer((160, 120), 30, seed=0)
    clean = [r.render(k, clean=True)[1].astype(int) for k in (0, 1, 30)]
    moved = np.abs(clean[2] - clean[0]) > 40  # > 1 K
    assert moved.sum() > 50, "warm objects must move across the scene"
    diff = synthetic_frames[1].astype(int) - synthetic_frames[0].astype(int)
    static = clean[1] == clean[0]
    static[r.dead_pixels] = static[r.hot_pixels] = False
    assert 2.0 < np.std(diff[static]) < 4.0, "temporal noise of about 2 counts per frame"


def test_clean_ground_truth_and_sensor_artifacts():
    source = open_source("synthetic://?size=320x256&realtime=0&clean=1&frames=1")
    frame = source.read()
    clean = frame.meta["clean"]
    check_frame(clean, (256, 320))
    r = source.renderer
    raw = frame.raw.astype(np.float64)
    assert np.all(frame.raw[r.dead_pixels] == 0)
    assert np.all(frame.raw[r.hot_pixels] == MAX_COUNT)
    # column fixed-pattern noise: the raw-minus-truth residual has column structure
    residual = raw - clean
    good = np.ones_like(residual, bool)
    good[r.dead_pixels] = good[r.hot_pixels] = False
    column_means = np.array([residual[good[:, j], j].mean() for j in range(320)])
    assert np.std(np.diff(column_means)) > 4.0
    # vignetting: the scene signal is weaker in the corners than in the centre
    assert r._gain[0, 0] < r._gain[128, 160] - 0.03


def test_ffc_freezes_video_and_resets_drift():
    r = ThermalSceneRenderer((160, 120), fps=10, seed=2, ffc_period_s=2.0)  # FFC at frame 20
    assert r.ffc_length == 2
    flags = [r.is_ffc(k) for k in range(45)]
    assert [k for k, f in enumerate(flags) if f] == [20, 21, 40, 41]
    before, _, _ = r.render(19)
    during, _, ffc = r.render(20)
    assert ffc
    np.testing.assert_array_equal(before, during)
    # the offset drift grows through the FFC period and is gone right after it
    static = r.render(1, clean=True)[1] == r.render(22, clean=True)[1]
    static &= r.render(19, clean=True)[1] == r.render(2, clean=True)[1]
    static[r.dead_pixels] = static[r.hot_pixels] = False

    def drift_level(k):
        raw, clean, _ = r.render(k, clean=True)
        return np.mean(raw[static].astype(float) - clean[static])

    expected = DRIFT_PER_SECOND * 1.8 * float(np.mean(r._drift[static]))  # 18 frames at 10 fps
    assert expected > 0.5
    assert abs((drift_level(19) - drift_level(1)) - expected) < 0.3
    assert abs(drift_level(22) - drift_level(2)) < 0.3
    source = open_source("synthetic://?size=160x120&realtime=0&fps=10&ffc=2&frames=22")
    assert [f.meta["ffc"] for f in read_all(source)][19:] == [False, True, True]


def test_realtime_pacing_skips_frames_for_a_slow_reader():
    import time

    source = open_source("synthetic://?size=160x120&fps=60")
    assert source.live
    first = source.read(timeout=1.0)
    time.sleep(0.2)  # the camera keeps running: about 12 frames pass meanwhile
    newest = source.read(timeout=1.0)
    assert newest.seq - first.seq > 3
    assert source.stats()["dropped"] == newest.seq - first.seq - 1


def test_bad_options_are_named():
    with pytest.raises(SourceError, match="640x512"):
        open_source("synthetic://?size=100x100")
    with pytest.raises(SourceError, match="fps"):
        open_source("synthetic://?fps=200")


def test_loop_replays_identical_read_only_frames():
    from tir.edge.sources import open_source

    src = open_source("synthetic://?size=160x120&realtime=0&loop=3&frames=7")
    frames = [src.read() for _ in range(7)]
    assert [f.seq for f in frames] == list(range(7))
    assert frames[3].raw is frames[0].raw and frames[6].raw is frames[0].raw
    assert not np.array_equal(frames[0].raw, frames[1].raw)
    assert not frames[0].raw.flags.writeable
    fresh = open_source("synthetic://?size=160x120&realtime=0").read()
    np.testing.assert_array_equal(fresh.raw, frames[0].raw)


def test_degrade_option_applies_a_stable_named_degradation():
    from tir.edge.sources import open_source

    plain = open_source("synthetic://?size=160x120&realtime=0&seed=2")
    noisy = open_source("synthetic://?size=160x120&realtime=0&seed=2&degrade=noise")
    a, b = plain.read(), noisy.read()
    assert b.meta["degradation"] == "noise" and b.raw.dtype == np.uint16
    assert int(b.raw.max()) <= 16383
    residual = b.raw.astype(np.float64) - a.raw
    a2, b2 = plain.read(), noisy.read()
    temporal = (a2.raw.astype(np.float64) - a.raw).std()  # the camera's own frame-to-frame change
    assert residual.std() > 3 * temporal
    # the same parameters within a period: the degradation pattern does not flicker
    residual2 = b2.raw.astype(np.float64) - a2.raw
    assert np.corrcoef(residual.ravel(), residual2.ravel())[0, 1] > 0.9


def test_a_spec_file_draws_the_same_frames_wherever_it_lies(tmp_path):
    """A spec's draws are seeded by its name, not its path: a checkout in another folder (CI's)
    sees the same frames, and two specs with different names see different draws."""
    import json

    from tir.edge.sources import open_source

    spec = {"name": "stripes_only", "steps": [{"op": "stripes", "gain_std": 0.0, "offset_std": 6.0,
                                               "column_p": 1.0}]}
    paths = []
    for folder, name in (("a", "stripes_only"), ("b/deeper", "stripes_only"), ("c", "other_name")):
        (tmp_path / folder).mkdir(parents=True)
        paths.append(tmp_path / folder / "spec.json")
        paths[-1].write_text(json.dumps({**spec, "name": name}))
    frames = [open_source(f"synthetic://?size=160x120&realtime=0&degrade={p}").read().raw for p in paths]
    assert np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[0], frames[2])


def test_a_spec_draws_alike_however_it_is_named(tmp_path):
    """The draws follow the spec, not the spelling that names it: a built-in by any case (the
    catalogue's names are case-insensitive) and a spec file with another extension (or none)
    draw as the built-in's own name and the file's own ``name`` do."""
    import json

    from tir.edge.sources import open_source

    def first(degrade):
        src = open_source(f"synthetic://?size=160x120&realtime=0&degrade={degrade}")
        try:
            return src.read().raw
        finally:
            src.close()

    assert np.array_equal(first("noise"), first("NOISE"))
    spec = {"name": "stripes_only", "steps": [{"op": "stripes", "gain_std": 0.0, "offset_std": 6.0,
                                               "column_p": 1.0}]}
    for name in ("spec.json", "spec.txt", "spec"):
        (tmp_path / name).write_text(json.dumps(spec))
    frames = [first(tmp_path / name) for name in ("spec.json", "spec.txt", "spec")]
    assert np.array_equal(frames[0], frames[1]) and np.array_equal(frames[0], frames[2])


def test_degrade_cycle_walks_clean_then_every_task():
    from tir.edge.sources import open_source
    from tir.engines.degrade import TASKS

    src = open_source("synthetic://?size=160x120&realtime=0&fps=10&degrade=cycle&degrade_period=0.1")
    names = [src.read().meta["degradation"] for _ in range(len(TASKS) + 1)]
    assert names == ["clean", *TASKS]


def test_reference_frames_are_the_virtual_cameras_clean_look():
    """With degrade=..., reference_frames gives the renderer's own frames (no degradation), every
    half second of its clock, without moving the stream; without degrade, none."""
    src = open_source("synthetic://?size=160x120&degrade=blur&realtime=0&seed=4")
    refs = src.reference_frames(3)
    renderer = ThermalSceneRenderer((160, 120), 30.0, 4)
    assert [f.seq for f in refs] == [0, 15, 30]
    for f in refs:
        assert np.array_equal(f.raw, renderer.render(f.seq)[0]) and f.meta["bits"] == 14
        assert "degradation" not in f.meta
    first = src.read()
    assert first.seq == 0 and first.meta["degradation"] == "blur"
    assert open_source("synthetic://?size=160x120&realtime=0").reference_frames(3) == []


def test_usable_frames_skip_ffc_frames_and_stop_at_the_end():
    from tir.edge.sources.base import usable_frames

    # an FFC every 0.2 s: its shutter-closed frames are left out, the rest come in order
    src = open_source("synthetic://?size=160x120&realtime=0&frames=40&ffc=0.2").start()
    got = list(usable_frames(src))
    src.close()
    assert 0 < len(got) < 40 and not any(f.meta.get("ffc") for f in got)
    again = open_source("synthetic://?size=160x120&realtime=0&frames=40&ffc=0.2").start()
    every = []
    while True:
        try:
            every.append(again.read())
        except EndOfStream:
            break
    assert [f.seq for f in got] == [f.seq for f in every if not f.meta.get("ffc")]


def test_reference_frames_end_when_every_half_second_step_lands_in_an_ffc_freeze():
    """ffc=0.5 at 30 fps: a 15-frame period, 8 frames frozen, the half-second step 15, so every
    step after the first lands at the start of a freeze; ffc=0.3: steps at 0, 6, 3 of a 9-frame
    period, 8 frozen. reference_frames looped for ever (tir run and tir bench hung at start-up on
    synthetic://?degrade=noise&ffc=0.5); each now takes the first frame after the shutter opens,
    and a freeze as long as its period (ffc=0.1) gives the frames there are."""
    import threading

    got = {}

    def refs(uri, n):
        got[uri] = open_source(uri).reference_frames(n)

    uris = [f"synthetic://?size=160x120&degrade=noise&realtime=0&ffc={p}" for p in (0.5, 0.3, 0.1)]
    threads = [threading.Thread(target=refs, args=(u, 6), daemon=True) for u in uris]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert set(got) == set(uris)                              # none hung
    renderer = ThermalSceneRenderer((160, 120), 30.0, 0, 0.5)
    assert [f.seq for f in got[uris[0]]] == [0, 23, 38, 53, 68, 83]
    for uri in uris[:2]:
        assert len(got[uri]) == 6 and not any(f.meta["ffc"] for f in got[uri])
    assert not any(renderer.is_ffc(f.seq) for f in got[uris[0]])
    assert [f.seq for f in got[uris[2]]] == [0]               # frames 3 on are all frozen
