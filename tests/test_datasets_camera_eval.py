"""Dataset registry, domain randomisation, column FPN metric and the per-camera evaluation
through the live pipeline's stages (synthetic frames in a temporary data root)."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from tir.engines.training import datasets as ds
from tir.engines.training.camera_eval import degrade_counts, evaluate_set, user_path
from tir.engines.training.domain import randomize
from tir.engines.metrics import column_fpn


def _scene(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = 0.5 + 0.3 * np.sin(6 * x + seed) * np.cos(4 * y) + 0.05 * rng.standard_normal((h, w))
    return np.clip(cv2.GaussianBlur(img.astype(np.float32), (0, 0), 1.0), 0, 1)


@pytest.fixture()
def data_root(tmp_path, monkeypatch):
    """A root with two registered-looking sets: 8-bit 96x64 frames and 16-bit raw 80x60."""
    for folder, bits, (w, h) in (("cam8", 8, (96, 64)), ("cam16", 16, (80, 60))):
        d = tmp_path / folder
        d.mkdir()
        for split in ("train", "val", "test"):
            names = []
            for i in range(2):
                f = _scene(h, w, hash((folder, split, i)) % 1000)
                img = np.rint(f * 255).astype(np.uint8) if bits == 8 else (7000 + f * 3000).astype(np.uint16)
                name = f"{split}{i}.png"
                cv2.imwrite(str(d / name), img)
                names.append(name)
            (tmp_path / f"{folder}-{split}.txt").write_text("\n".join(names) + "\n")
    for name, bits in (("cam8", 8), ("cam16", 16)):
        monkeypatch.setitem(ds.DATASETS, name, ds.DataSet(name, name, "test camera", bits, "MIT", True))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path))
    return tmp_path


def test_registry_lists_and_refuses():
    assert {"roadscene", "hit_uav", "lynred_nonuc", "flir_raw16_mixed"} <= set(ds.DATASETS)
    with pytest.raises(ds.DatasetError, match="known: roadscene"):
        ds.parse_sets("roadscene,nosuchcam")
    with pytest.raises(ds.DatasetError, match="no train split"):
        ds.split_files("lynred_nonuc", "train", root=".")  # refused before any file is read


def test_load_counts_keeps_bits_and_sizes(data_root):
    eight = ds.load_counts("cam8", "test")
    raw = ds.load_counts("cam16", "train")
    assert eight[0].dtype == np.uint8 and eight[0].shape == (64, 96)
    assert raw[0].dtype == np.uint16 and raw[0].shape == (60, 80) and raw[0].max() > 255
    stack = ds.load_unit_frames("cam8,cam16", "val", size=(96, 64))
    assert stack.shape == (4, 64, 96) and stack.dtype == np.float32
    assert 0.0 <= stack.min() and stack.max() <= 1.0


def test_degrade_counts_8bit_is_requantised_and_raw_stays_counts():
    rng = np.random.default_rng(0)
    clean8 = np.rint(_scene(64, 96, 1) * 255).astype(np.uint8)
    d, c, meta, peak = degrade_counts(clean8, 8, "noise", rng)
    assert meta == {"bits": 14, "source_bits": 8} and peak == 255 * 64
    assert d.dtype == np.uint16 and np.all(d % 64 == 0) and np.array_equal(c, clean8.astype(np.uint16) << 6)
    raw = (7000 + _scene(60, 80, 2) * 3000).astype(np.uint16)
    d, c, meta, peak = degrade_counts(raw, 16, "contrast", rng)
    from tir.engines.degrade import counts_range

    lo, hi = counts_range(raw)
    assert meta["source_bits"] == 16 and d.dtype == np.uint16 and peak == pytest.approx(hi - lo)
    assert d.max() - d.min() < 0.7 * (raw.max() - raw.min())  # contrast α ≤ 0.6 of the range
    same, _, _, _ = degrade_counts(raw, 16, "clean", rng)
    assert np.array_equal(same, raw)


def test_degrade_counts_leaves_a_cameras_telemetry_rows_alone():
    """A Y16 frame with a Lepton's 2 telemetry rows (mostly zero words): the degradation's range
    is the image rows' (the zeros made it 0..~30000, so a noise task's sigma was ~50x the scene's
    span) and the telemetry rows come out as they went in."""
    rng = np.random.default_rng(0)
    img = (29400 + _scene(120, 160, 3) * 600).astype(np.uint16)
    tele = np.zeros((2, 160), np.uint16)
    tele[0, :6] = [14, 4321, 9, 30510, 51000, 8190]
    raw = np.vstack([img, tele])
    from tir.engines.degrade import counts_range

    lo, hi = counts_range(img)
    d, c, meta, peak = degrade_counts(raw, 16, "noise", np.random.default_rng(1))
    assert peak == pytest.approx(hi - lo)
    assert np.array_equal(d[-2:], tele) and np.array_equal(c, raw)
    alone, _, _, _ = degrade_counts(img, 16, "noise", np.random.default_rng(1))
    assert np.array_equal(d[:-2], alone)


def test_degrade_counts_keeps_an_msb_aligned_cameras_count_step():
    """A 14-bit camera stored MSB-aligned (every count a multiple of 4) delivers its degraded frames
    in multiples of 4 too; rounding them to single counts made them another camera for the
    normaliser (tir.edge.normalize.count_step: step 1, a four times smaller minimum span)."""
    img = (7000 + _scene(64, 96, 4) * 50).astype(np.uint16) << 2
    for task in ("noise", "blur", "contrast"):
        d, _, _, _ = degrade_counts(img, 16, task, np.random.default_rng(2))
        assert np.all(d % 4 == 0) and not np.array_equal(d, img), task


def test_the_display_map_counts_its_minimum_span_in_stored_values():
    """The scores' display map is the viewer's (edge/agc.py): a restored low-span frame whose
    values fall on a lattice of 2 (a tone stretch x2 of integer counts: the emulated y16_fog's
    contrast route) is shown with the 64-count minimum span as the camera's frames are, not read
    as a camera stored on a step of 2 (128), which had moved y16_fog's display scores by 1.7 dB."""
    from tir.edge.normalize import Normalizer
    from tir.engines.training.camera_eval import live_range

    lattice = (27993 + 2 * np.tile(np.arange(23, dtype=np.uint16), (40, 3))).astype(np.uint16)
    assert Normalizer().update(lattice).span == 128.0       # the restoration's normaliser: step 2
    lo, hi = live_range(lattice)
    assert hi - lo == 64.0


class _Identity:
    def infer(self, x):
        return x


def test_user_path_identity_model_returns_the_counts():
    """Preprocess -> identity -> Postprocess gives back the counts (8-bit exactly; raw counts
    within the clipped percentile range)."""
    clean8 = np.rint(_scene(64, 96, 3) * 255).astype(np.uint16) << 6
    out = user_path(_Identity(), clean8, {"bits": 14, "source_bits": 8})
    assert np.array_equal(out, clean8)
    raw = (7000 + _scene(60, 80, 4) * 3000).astype(np.uint16)
    out = user_path(_Identity(), raw, {"bits": 16, "source_bits": 16})
    inside = (raw > np.percentile(raw, 1)) & (raw < np.percentile(raw, 99))
    assert np.abs(out.astype(int) - raw.astype(int))[inside].max() <= 1


def test_domain_randomisation_keeps_frames_clean_and_in_range():
    x = np.stack([_scene(64, 96, s) for s in range(6)])
    y = randomize(x, np.random.default_rng(0))
    assert y.shape == x.shape and y.dtype == np.float32 and y.min() >= 0 and y.max() <= 1
    assert not np.array_equal(x, y)
    assert np.array_equal(randomize(x, np.random.default_rng(5)), randomize(x, np.random.default_rng(5)))
    # clean stays clean: the high-frequency energy stays far below the noise task's (σ ≥ 5/255)
    hp = y - np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in y])
    assert hp.std() < 4.0 / 255


def test_column_fpn_measures_column_offsets_not_the_scene():
    scene = _scene(120, 160, 7) * 255
    offsets = np.random.default_rng(1).normal(0, 3.0, 160).astype(np.float32)
    assert column_fpn(scene) < 0.5
    assert 1.5 < column_fpn(scene + offsets[None, :]) < 3.5


def test_evaluate_set_through_a_bundle(data_root, tmp_path):
    """The per-camera evaluation runs a bundle end to end on 8-bit and raw sets."""
    torch = pytest.importorskip("torch")
    from tir.engines.bundle import write_bundle
    from tir.engines.training.export import export_onnx

    class Half(torch.nn.Module):
        def forward(self, x):
            return x * 0.5 + 0.25

    path = tmp_path / "r.onnx"
    export_onnx(Half(), path, input_shape=(1, 1, 16, 16), metadata={"tir.multiple": 2})
    b = write_bundle(tmp_path / "b", {"noise": path}, None, {"name": "t", "multiple": 2})
    for name in ("cam8", "cam16"):
        r = evaluate_set(b.path, name, progress=False)
        assert r["frames"] == 2 and set(r["per_task"]) == {"noise"}
        # no router: frames pass through, so a clean frame is exactly itself
        assert r["clean_identity"]["median"] == 99.0
        assert r["per_task"]["noise"]["true_route"] < r["per_task"]["noise"]["degraded"] + 20
        # no router: the automatic path passes through, the true route halves the contrast
        row = r["per_task"]["noise"]
        assert row["regret"] == pytest.approx(row["auto"] - row["true_route"], abs=1e-9)
        # SSIM of the same frames: pass-through gives back the degraded input exactly
        assert 0.0 < row["ssim_degraded"] < 1.0 and row["ssim_auto"] == pytest.approx(row["ssim_degraded"])
        if name == "cam16":  # raw counts: also scored as the user sees them
            assert set(r["display"]["per_task"]) == {"noise"}
            assert r["display"]["clean_identity"]["median"] == 99.0
            # x*0.5+0.25 is affine: in counts it costs dB, on the display it is (up to the
            # normaliser's clipped tails) the degraded input again
            d = r["display"]["per_task"]["noise"]
            assert row["true_route"] < row["degraded"] - 1.0
            assert abs(d["true_route"] - d["degraded"]) < 1.0
            assert 0.0 <= r["router"]["accuracy_visible"] <= 1.0
            assert r["router"]["widened"] == 0.0   # 3000 counts of scene: every frame stretched
        else:
            assert "display" not in r and "accuracy_visible" not in r["router"]


def test_visible_task_drops_contrast_only_on_raw_counts():
    from tir.engines.training.camera_eval import visible_task

    assert [visible_task(t, 8) for t in ("contrast", "CB", "CN", "CBN", "noise", "clean")] == \
        ["contrast", "CB", "CN", "CBN", "noise", "clean"]
    assert [visible_task(t, 16) for t in ("contrast", "CB", "CN", "CBN", "blur", "noise", "BN", "clean")] == \
        ["clean", "blur", "noise", "BN", "blur", "noise", "BN", "clean"]


def test_a_flat_raw_scene_keeps_its_contrast_loss_visible():
    """Under the normaliser's 64-count minimum span the live path does not stretch a raw frame
    (a fog scene of 40 counts): a halved contrast is seen by the router and by the user, so the
    visible task keeps its contrast part and the display map shows the loss; above it the
    percentile stretch undoes the loss as before."""
    from tir.engines.metrics import psnr
    from tir.engines.training.camera_eval import display_map, live_range, span_widened, visible_task

    base = _scene(120, 160, 3)
    fog = np.rint(28000 + base * 40).astype(np.uint16)
    fog_low = np.rint(28010 + base * 20).astype(np.uint16)       # contrast halved
    wide = np.rint(8000 + base * 3000).astype(np.uint16)
    assert span_widened(fog) and span_widened(fog_low) and not span_widened(wide)
    lo, hi = live_range(fog_low)
    assert hi - lo == pytest.approx(64.0)
    assert visible_task("contrast", 16, widened=True) == "contrast"
    assert visible_task("CBN", 16, widened=True) == "CBN"
    assert visible_task("CBN", 16, widened=False) == "BN"
    # the user sees half the contrast on the display (a full stretch would show the same picture)
    assert 0.4 < display_map(fog_low).std() / display_map(fog).std() < 0.6
    # the clean fog frame fills its 40 of the 64 counts of the display range, not all of it
    d = display_map(fog)
    assert np.percentile(d, 99.5) - np.percentile(d, 0.5) < 0.8
    # above the minimum span the display stays invariant to the contrast change
    wide_low = np.rint(8000 + base * 1500).astype(np.uint16)
    assert psnr(display_map(wide_low), display_map(wide)) > 40


def test_display_map_is_invariant_to_an_affine_change_of_counts():
    """What the raw-count 'display' scores rest on: a global contrast/brightness change of
    the counts gives the same picture after the display map."""
    from tir.engines.training.camera_eval import display_map
    from tir.engines.metrics import psnr

    counts = (_scene(120, 160, 3) * 3000 + 8000).astype(np.uint16)
    low = (counts.astype(np.float64) * 0.4 + 2000).round().astype(np.uint16)
    assert psnr(display_map(low), display_map(counts)) > 45
    assert psnr(low / 65535.0, counts / 65535.0) < 25


def test_tir_eval_data_sets_prints_the_per_camera_table(data_root, tmp_path, capsys):
    import json

    from tir.tools import cli

    b = _identity_bundle(tmp_path)
    out = tmp_path / "cams.json"
    assert cli.main(["eval", "--bundle", str(b.path), "--data", "cam8,cam16", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cam8" in text and "cam16" in text and "per camera" in text and "SSIM degraded -> auto" in text
    assert set(json.loads(out.read_text())["sets"]) == {"cam8", "cam16"}
    assert cli.main(["eval", "--bundle", str(b.path), "--data", "cam8,nosuch"]) == 2  # a folder that is not there


def _identity_bundle(tmp_path, tasks=("noise",)):
    """A bundle without a router whose routes (one per task of ``tasks``) give the frame back."""
    torch = pytest.importorskip("torch")
    from tir.engines.bundle import write_bundle
    from tir.engines.training.export import export_onnx

    class Same(torch.nn.Module):
        def forward(self, x):
            return x * 1.0

    path = tmp_path / "r.onnx"
    export_onnx(Same(), path, input_shape=(1, 1, 16, 16), metadata={"tir.multiple": 2})
    return write_bundle(tmp_path / "b", {t: path for t in tasks}, None, {"name": "t", "multiple": 2})


def test_tir_eval_data_folder_is_a_camera_on_the_users_path(tmp_path, capsys, monkeypatch):
    """A user's folder (8-bit or 16-bit, odd sizes, no data root at all) gets the per-camera
    table, as a registered set does; --no-reference scores real degraded frames; --compare keeps
    the methods comparison; an empty folder is refused."""
    import json

    from tir.tools import cli

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    b = _identity_bundle(tmp_path)
    for folder, bits in (("my8", 8), ("my16", 16)):
        (tmp_path / folder).mkdir()
        for i in range(2):
            f = _scene(70, 90, i)
            img = np.rint(f * 255).astype(np.uint8) if bits == 8 else (9000 + f * 2000).astype(np.uint16)
            cv2.imwrite(str(tmp_path / folder / f"f{i}.png"), img)
    out = tmp_path / "cams.json"
    assert cli.main(["eval", "--bundle", str(b.path), "--data", f"{tmp_path / 'my8'},{tmp_path / 'my16'}",
                     "--no-true-routes", "--json", str(out)]) == 0
    sets = json.loads(out.read_text())["sets"]
    assert {s["set"]: (s["bits"], s["sizes"], s["frames"], s["split"]) for s in sets.values()} == {
        "dir:my8": (8, ["90x70"], 2, "all"), "dir:my16": (16, ["90x70"], 2, "all")}
    assert all(s["clean_identity"]["median"] == 99.0 for s in sets.values())   # identity routes, no router
    assert "dir:my8" in capsys.readouterr().out
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(tmp_path / "my8"), "--no-reference",
                     "--json", str(out)]) == 0
    real = json.loads(out.read_text())["sets"]["dir:my8-2"]
    assert "noise_routed" in real
    text = capsys.readouterr().out
    assert "(real degraded, no reference)" in text and "clean->pass" not in text   # no empty table header
    assert real["level_shift"]["median"] == 0.0 and real["contrast_ratio"]["median"] == pytest.approx(1.0)
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(tmp_path / "empty")]) == 2
    assert "holds no frames" in capsys.readouterr().err
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(tmp_path / "my8" / "f0.png")]) == 2
    assert "is a file: give the folder" in capsys.readouterr().err
    assert cli.main(["eval", "--bundle", str(b.path), "--no-reference"]) == 2


def test_register_folder_reads_the_bit_depth_and_refuses_mixed_frames(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    (tmp_path / "mix").mkdir()
    cv2.imwrite(str(tmp_path / "mix" / "a.png"), np.full((8, 8), 9000, np.uint16))
    cv2.imwrite(str(tmp_path / "mix" / "b.png"), np.full((8, 8), 90, np.uint8))
    name = ds.register_folder(tmp_path / "mix")
    assert name == "dir:mix" and ds.dataset(name).bits == 16 and not ds.dataset(name).splits
    assert ds.register_folder(tmp_path / "mix") == name          # the same folder, the same name
    with pytest.raises(ds.DatasetError, match="uint8 frame in a 16-bit set"):
        ds.load_counts(name, ds.ALL)
    with pytest.raises(ds.DatasetError, match="no folder"):
        ds.register_folder(tmp_path / "nowhere")


def test_a_folder_reads_every_image_kind_a_replay_reads(tmp_path, monkeypatch):
    """tir eval --data DIR takes the frames tir run --source DIR replays: a folder of .pgm frames
    (a camera's SDK dump) was refused as holding no frames while tir run played it."""
    from tir.edge.sources.file import IMAGE_EXTENSIONS

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    for i, ext in enumerate(IMAGE_EXTENSIONS):
        (tmp_path / ext[1:]).mkdir()
        cv2.imwrite(str(tmp_path / ext[1:] / f"f0{ext}"), (_scene(16, 16, i) * 255).astype(np.uint8))
        name = ds.register_folder(tmp_path / ext[1:])
        assert len(ds.load_counts(name, ds.ALL)) == 1, ext


def _sixteen_bit_folder(tmp_path, monkeypatch):
    """An identity bundle and a folder ``mix`` of three 16-bit frames a0-a2.png, registered sets
    and the data root isolated for the test: (bundle, folder)."""
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    b = _identity_bundle(tmp_path)
    mix = tmp_path / "mix"
    mix.mkdir()
    for i in range(3):
        cv2.imwrite(str(mix / f"a{i}.png"), (9000 + _scene(70, 90, i) * 2000).astype(np.uint16))
    return b, mix


def test_tir_eval_on_a_folder_of_mixed_bit_depths_drops_the_odd_frames_as_tir_run_does(tmp_path, capsys,
                                                                                        monkeypatch):
    # Before: "tir eval: error: ...b0.png: uint8 frame in a 16-bit set", exit 2, where tir run
    # replays the folder and drops the two 8-bit frames. Now eval keeps the 16-bit frames, drops
    # the others by the file source's own rule, and names them.
    import json

    from tir.tools import cli

    b, mix = _sixteen_bit_folder(tmp_path, monkeypatch)
    for i in range(2):  # a0 b0 a1 b1 a2 by name
        cv2.imwrite(str(mix / f"a{i}b.png"), np.rint(_scene(70, 90, i) * 255).astype(np.uint8))
    out = tmp_path / "mix.json"
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(mix), "--no-true-routes",
                     "--max-frames", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    only = json.loads(out.read_text())["sets"]["dir:mix"]
    assert only["frames"] == 3 and only["bits"] == 16   # --max-frames counts the frames kept
    from tir.edge.sources.file import check_depth  # the one rule, tir run's file source's

    with pytest.raises(Exception) as rule:
        check_depth(8, 16, "set")
    assert only["dropped"] == [{"file": str(mix / f"a{i}b.png"), "reason": str(rule.value)} for i in range(2)]
    assert "dir:mix: 2 frame(s) dropped, as tir run drops them: an 8-bit frame in a 16-bit set is skipped" in text
    assert "a0b.png, a1b.png" in text
    dropped = []
    assert len(ds.load_counts("dir:mix", ds.ALL, dropped=dropped)) == 3 and len(dropped) == 2


def test_tir_eval_plot_on_a_folder_of_mixed_bit_depths_skips_the_odd_frames_as_the_scoring_does(tmp_path, capsys,
                                                                                                 monkeypatch):
    # the before/after plot (a folder without a clean target: --no-reference) read its frames
    # with the strict reader: "tir eval: error: ...z.png: uint8 frame in a 16-bit set", exit 2,
    # after the table, where the scoring had dropped that frame and named it
    from tir.tools import cli

    b, mix = _sixteen_bit_folder(tmp_path, monkeypatch)
    cv2.imwrite(str(mix / "z.png"), np.rint(_scene(70, 90, 5) * 255).astype(np.uint8))   # the last frame: plotted
    plot = tmp_path / "plot" / "cams.png"
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(mix), "--no-reference", "--no-true-routes",
                     "--plot", str(plot)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert (tmp_path / "plot" / "cams-dir:mix.png").is_file()
    assert "dir:mix: the plot skipped 1 frame(s) of another bit depth, as tir run skips them: z.png" in out
    from tir.engines.training.camera_eval import before_after

    skipped = []
    before_after(b.path, "dir:mix", tmp_path / "again.png", frames=2, dropped=skipped)
    assert [Path(f).name for f, _ in skipped] == ["z.png"]


def test_an_undecodable_frame_in_a_folder_names_the_file_and_what_to_do(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    (tmp_path / "cam").mkdir()
    good = tmp_path / "cam" / "a.png"
    cv2.imwrite(str(good), np.full((8, 8), 9000, np.uint16))
    (tmp_path / "cam" / "b.png").write_bytes(good.read_bytes()[:60])  # cut short
    (tmp_path / "cam" / "c.png").write_bytes(b"")
    name = ds.register_folder(tmp_path / "cam")
    capfd.readouterr()
    with pytest.raises(ds.DatasetError) as cut:
        ds.read_counts(tmp_path / "cam" / "b.png", 16)
    assert str(cut.value) == f"cannot decode {tmp_path / 'cam' / 'b.png'} (damaged or not an image); remove or replace it"
    with pytest.raises(ds.DatasetError, match=r"b\.png \(damaged or not an image\); remove or replace it"):
        ds.load_counts(name, ds.ALL)
    with pytest.raises(ds.DatasetError, match=r"c\.png \(empty file\); remove or replace it"):
        ds.read_counts(tmp_path / "cam" / "c.png", 16)
    assert "WARN" not in capfd.readouterr().err  # OpenCV's decoder warning does not leak


def test_tir_eval_drops_and_names_undecodable_frames_as_tir_run_does(tmp_path, monkeypatch):
    """Session 22's break-test: ``tir eval --data DIR`` refused a whole folder for one zero-byte PNG
    that ``tir run --source DIR`` drops and counts; a damaged first file decided nothing either."""
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    (tmp_path / "cam").mkdir()
    good = tmp_path / "cam" / "b.png"
    for i in (1, 3):
        cv2.imwrite(str(tmp_path / "cam" / f"{chr(97 + i)}.png"), np.full((8, 8), 9000 + i, np.uint16))
    (tmp_path / "cam" / "a.png").write_bytes(b"")                           # the first by name: empty
    (tmp_path / "cam" / "c.png").write_bytes(good.read_bytes()[:60])          # cut short
    name = ds.register_folder(tmp_path / "cam")
    assert ds.dataset(name).bits == 16                                       # from the first that decodes
    dropped = []
    frames = ds.load_counts(name, ds.ALL, dropped=dropped)
    assert [int(f[0, 0]) for f in frames] == [9001, 9003]
    assert [(Path(f).name, why) for f, why in dropped] == [
        ("a.png", f"cannot decode {tmp_path / 'cam' / 'a.png'} (empty file)"),
        ("c.png", f"cannot decode {tmp_path / 'cam' / 'c.png'} (damaged or not an image)")]
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "x.png").write_bytes(b"")
    with pytest.raises(ds.DatasetError, match=r"no frame in it decodes \(1 tried; the first: cannot decode"):
        ds.register_folder(tmp_path / "none")


def test_virtual_camera_is_a_set():
    frames = ds.load_counts("synthetic", "test", max_frames=3)
    assert [f.shape for f in frames] == [(512, 640), (256, 320), (120, 160)]
    assert all(f.dtype == np.uint16 and f.max() <= 16383 for f in frames)
    again = ds.load_counts("synthetic", "test", max_frames=1)[0]
    assert np.array_equal(again, frames[0])  # seeded: the same frames every time
    assert not np.array_equal(ds.load_counts("synthetic", "val", max_frames=1)[0], frames[0])


def test_leave_one_out_refuses_what_it_cannot_leave_out(tmp_path):
    from tir.engines.training.leave_out import leave_one_out

    with pytest.raises(ValueError, match="at least two"):
        leave_one_out("engines/bundles/edge", "roadscene", tmp_path)
    with pytest.raises(ds.DatasetError, match="lynred_nonuc cannot be left out"):
        leave_one_out("engines/bundles/edge", "roadscene,lynred_nonuc", tmp_path)


def test_leave_one_out_end_to_end_on_two_tiny_cameras(data_root, tmp_path):
    """Each camera is measured with a router that never saw it (a few steps: the protocol,
    not the accuracy, is under test)."""
    pytest.importorskip("torch")
    from tir.engines.training.leave_out import format_leave_out, leave_one_out

    r = leave_one_out("engines/bundles/edge", "cam8,cam16", tmp_path / "loo", steps=2, draws=1, threads=2,
                      adapt_frames=8, quantize=0.5, balance=2)
    assert set(r["sets"]) == {"cam8", "cam16"}
    assert (r["quantize"], r["balance"], r["draws"]) == (0.5, 2, 1)        # the router recipe is recorded
    import json as _json
    manifest = _json.loads((tmp_path / "loo" / "cam8" / "bundle" / "manifest.json").read_text())
    recipe = manifest["router"]["training"]
    assert (recipe["quantize"], recipe["balance"], recipe["draws"]) == (0.5, 2, 1)
    assert r["sets"]["cam8"]["trained_on"] == ["cam16"] and r["sets"]["cam16"]["trained_on"] == ["cam8"]
    for row in r["sets"].values():
        assert 0.0 <= row["router_before_adapt"] <= 1.0 and "median" in row["clean_identity"]
    assert (tmp_path / "loo" / "cam8" / "bundle" / "manifest.json").is_file()
    assert "cam16" in format_leave_out(r)


def test_leave_out_only_must_name_a_listed_set(tmp_path):
    from tir.engines.training.leave_out import leave_one_out

    with pytest.raises(ValueError, match="must name sets of --leave-out"):
        leave_one_out("engines/bundles/edge", "roadscene,hit_uav", tmp_path, only=["anti_uav"])


def test_router_only_gives_the_full_evaluations_verdicts(data_root):
    """``router_only`` routes through the same preprocessing and routing step as the full
    evaluation: the same verdicts and routes, on 8-bit and raw sets, with nothing restored."""
    from tir.engines.bundle import default_bundle_path

    for name in ("cam8", "cam16"):
        full = evaluate_set(default_bundle_path(), name, split="val", progress=False, true_routes=False, threads=1)
        fast = evaluate_set(default_bundle_path(), name, split="val", progress=False, router_only=True, threads=1)
        assert fast["router_only"] and "per_task" not in fast and "clean_identity" not in fast
        assert fast["router"] == full["router"]
        # what the gates changed is in the result, the same for both (routing is the same)
        assert set(full["gates"]) == {"contrast", "blur", "fpn"}
        assert full["gates"]["blur"].keys() == {"demoted", "changed_noisy"}
        assert {g: {k: v for k, v in (c or {}).items() if k != "aligned"} for g, c in fast["gates"].items()} == \
            {g: {k: v for k, v in (c or {}).items() if k != "aligned"} for g, c in full["gates"].items()}
        assert fast["gates"]["contrast"]["aligned"] == 0      # nothing restored, nothing aligned


def test_leave_one_out_never_leaves_out_the_virtual_camera(tmp_path):
    """The virtual camera only trains the routers: it is not a camera a user bolts on."""
    from tir.engines.training.leave_out import leave_one_out

    with pytest.raises(ValueError, match="must name sets of --leave-out"):
        leave_one_out("engines/bundles/edge", "roadscene,synthetic", tmp_path, only=["synthetic"])


def test_no_reference_report_on_constant_frames_says_there_is_nothing_to_cut(tmp_path, capsys, monkeypatch):
    """Constant (or saturated) frames have no column FPN and no scene: the report says so
    instead of a huge percentage or nan."""
    import json

    from tir.tools import cli

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    b = _identity_bundle(tmp_path)
    (tmp_path / "flat").mkdir()
    for i, v in enumerate((0, 128, 255)):
        cv2.imwrite(str(tmp_path / "flat" / f"f{i}.png"), np.full((48, 64), v, np.uint8))
    out = tmp_path / "flat.json"
    capsys.readouterr()
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(tmp_path / "flat"), "--no-reference",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "no column FPN in the input to cut" in text and "no scene to keep" in text and "nan" not in text
    r = json.loads(out.read_text())["sets"]["dir:flat"]
    assert r["column_fpn_cut"] is None and r["scene_correlation"] is None


def test_constant_frames_give_finite_psnr_in_the_table_and_the_json(tmp_path, capsys, monkeypatch):
    """A blur of a constant frame is the frame itself (PSNR inf): the per-task means cap it at
    99 dB as the clean row does, so the table shows no inf/nan and the JSON stays standard JSON."""
    import json

    from tir.tools import cli

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    from tir.engines.bundle import write_bundle

    same = _identity_bundle(tmp_path).path / "route-noise.onnx"
    b = write_bundle(tmp_path / "b2", {"blur": same, "noise": same}, None, {"name": "t", "multiple": 2})
    (tmp_path / "flat").mkdir()
    for i, v in enumerate((0, 128, 255)):
        cv2.imwrite(str(tmp_path / "flat" / f"f{i}.png"), np.full((48, 64), v, np.uint8))
    out = tmp_path / "flat.json"
    capsys.readouterr()
    assert cli.main(["eval", "--bundle", str(b.path), "--data", str(tmp_path / "flat"), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "inf" not in text and "nan" not in text, text

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    r = json.loads(out.read_text(), parse_constant=refuse)["sets"]["dir:flat"]
    blur = r["per_task"]["blur"]
    assert blur["degraded"] == blur["auto"] == blur["true_route"] == 99.0 and blur["regret"] == 0.0
    assert blur["gain_auto"] == 0.0 and r["per_task"]["noise"]["degraded"] < 99.0


def test_no_reference_report_measures_the_tone_a_restoration_keeps(tmp_path, monkeypatch):
    """Real degraded frames: the output's level (mean, grey levels) and scene contrast against the
    input's, so a route that darkens or flattens a real camera's frames shows."""
    from tir.engines.training import camera_eval

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    b = _identity_bundle(tmp_path)
    (tmp_path / "real").mkdir()
    ramp = np.tile(np.linspace(40, 200, 64), (48, 1)).astype(np.uint8)
    for i in range(2):
        cv2.imwrite(str(tmp_path / "real" / f"f{i}.png"), ramp)
    monkeypatch.setattr(camera_eval, "user_path", lambda model, counts, meta, *stream, **kw: (counts // 2).astype(counts.dtype))
    name = ds.register_folder(tmp_path / "real", clean=False)
    r = camera_eval.evaluate_set(b.path, name, progress=False)
    assert r["level_shift"]["median"] == pytest.approx(-ramp.mean() / 2, abs=0.6)
    assert r["contrast_ratio"]["median"] == pytest.approx(0.5, abs=0.02)


def test_false_colour_frames_are_refused_grey_in_colour_is_read(tmp_path, monkeypatch, capsys):
    """A palette rendering (rainbow: its brightness rises and falls again with temperature) would
    be a scrambled scene as grey: refused with one line naming the file; grey stored as colour
    JPEG, and a grey frame with a coloured OSD and colour scale bar, are read as grey."""
    from tir.tools import cli

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    grey = np.rint(_scene(120, 160, 3) * 255).astype(np.uint8)
    (tmp_path / "ok").mkdir()
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 60])
    (tmp_path / "ok" / "a.jpg").write_bytes(buf.tobytes())
    osd = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    cv2.putText(osd, "REC 27.4C", (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2)
    osd[:, -12:] = cv2.applyColorMap(np.linspace(255, 0, 120).astype(np.uint8)[:, None].repeat(12, 1),
                                     cv2.COLORMAP_JET)
    cv2.imwrite(str(tmp_path / "ok" / "b.png"), osd)
    name = ds.register_folder(tmp_path / "ok")
    a, b = ds.load_counts(name, ds.ALL)
    assert a.dtype == np.uint8 and a.shape == (120, 160) and np.abs(a.astype(int) - grey).mean() < 2
    assert np.array_equal(b[40:, :-12], grey[40:, :-12])   # the scene under the OSD's rows is untouched
    (tmp_path / "pal").mkdir()
    cv2.imwrite(str(tmp_path / "pal" / "c.png"), cv2.applyColorMap(grey, cv2.COLORMAP_TURBO))
    with pytest.raises(ds.DatasetError, match=r"c\.png: a false-colour frame .* give the camera's grey frames"):
        ds.load_counts(ds.register_folder(tmp_path / "pal"), ds.ALL)
    assert cli.main(["eval", "--data", str(tmp_path / "pal"), "--no-true-routes"]) == 2
    err = capsys.readouterr().err
    assert "a false-colour frame" in err and "Traceback" not in err


def test_warm_up_builds_the_gates_history_as_tir_run_does(tmp_path, monkeypatch):
    """The evaluation's warm-up routes the camera's frames as ``tir run`` (no --reference) does, so
    each gate's camera history is the live one: on a camera whose every frame the router calls
    noise-carrying (white noise σ 8 grey levels), the FPN gate's white-noise floor stays empty, as it
    does live, instead of being built from every frame (which kept the camera's own noise in the
    evaluation while ``tir run`` removed it from every frame); the warm-up's gate actions are not
    counted as the set's."""
    from tir.engines.restorer import Restorer
    from tir.engines.training import camera_eval as ce

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    folder = tmp_path / "noisycam"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        img = _scene(128, 160, i) * 255.0 + rng.normal(0.0, 8.0, (128, 160))
        cv2.imwrite(str(folder / f"f{i:02d}.png"), np.clip(np.rint(img), 0, 255).astype(np.uint8))
    name = ds.register_folder(folder)
    live = Restorer("engines/bundles/edge", every=1, hysteresis=1, threads=1)
    verdicts = []
    frames = ds.load_counts(name, ds.ALL)
    # tir run on the folder looped (file://...?loop=true): every frame routed, nothing shown beforehand
    for f in [frames[i % len(frames)] for i in range(ce.WARM_FRAMES)]:
        counts, _, meta, _ = degrade_counts(f, 8, ce.CLEAN, None)
        live.reset()
        ce.user_route(live, counts, meta)
        status = live.status()
        verdicts.append(status["gated_from"] or status["decision"])    # the router's own
    assert ce.CLEAN not in verdicts and len(live.fpn_gate.floor) == 0   # the case: no clean verdict live
    warmed = Restorer("engines/bundles/edge", every=1, hysteresis=1, threads=1)
    assert ce.warm_camera(warmed, name, ds.ALL) == ce.WARM_FRAMES   # its 12 frames, looped as tir run loops them
    assert list(warmed.fpn_gate.floor) == list(live.fpn_gate.floor)
    assert list(warmed.contrast_gate.extents) == pytest.approx(list(live.contrast_gate.extents))
    assert list(warmed.blur_gate.drops) == pytest.approx(list(live.blur_gate.drops))
    assert warmed.status()["decision"] is None                           # routing state reset after it
    live.close()
    warmed.close()

    class Counting:   # a Restorer's status: the gates' counters so far
        def __init__(self, n):
            self.n = n

        def status(self):
            return {"contrast": {"demoted": self.n, "promoted": self.n // 3, "aligned": 1}, "blur": None,
                    "fpn": {"promoted": 0, "promoted_white": 0, "demoted_white": 2 * self.n, "destriped": 0,
                            "own_shaped": self.n // 5, "own_counts": self.n // 4}}

    after_warm = ce.gate_counts(Counting(12))
    assert ce.gate_counts(Counting(15), since=after_warm) == {
        "contrast": {"demoted": 3, "promoted": 1, "aligned": 0}, "blur": None,
        "fpn": {"promoted": 0, "promoted_white": 0, "demoted_white": 6, "destriped": 0, "own_shaped": 1,
                "own_counts": 0}}


@pytest.mark.parametrize("limit", [0, -1, -3, 2.5, True])
def test_a_frame_limit_below_one_is_refused_not_read_as_all_or_all_but_n(data_root, limit):
    # 0 used to read as "no limit" and -1 as "all but the last frame" (a slice): --max-frames 0
    # evaluated a whole set, -3 on a small folder evaluated nothing and failed with a KeyError
    with pytest.raises(ds.DatasetError, match="frame limit"):
        ds.load_counts("cam16", "val", max_frames=limit)
    with pytest.raises(ds.DatasetError, match="frame limit"):
        ds.load_counts("synthetic", "val", max_frames=limit)
    from tir.engines.training.evaluate import load_clean
    with pytest.raises(ds.DatasetError, match="frame limit"):
        load_clean(str(data_root / "cam16"), "val", max_frames=limit)
    assert len(ds.load_counts("cam16", "val", max_frames=1)) == 1


@pytest.mark.parametrize("value", ["0", "-3"])
def test_tir_eval_refuses_a_max_frames_below_one_before_any_work(value, capsys):
    from tir.tools import cli
    with pytest.raises(SystemExit) as stop:
        cli.main(["eval", "--max-frames", value])
    assert stop.value.code == 2
    assert "--max-frames" in capsys.readouterr().err


def test_a_folder_frame_larger_than_any_camera_is_refused_from_its_header(tmp_path, monkeypatch):
    # tir eval --data DIR decoded a PNG of any size (20000x20000 zeros: under 1 MB on disk, 800 MB decoded)
    folder = tmp_path / "cam"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((2, 9000), np.uint16))
    monkeypatch.setattr(cv2, "imdecode", lambda *a: pytest.fail("decoded"))   # the one OpenCV module, whoever calls it
    with pytest.raises(ds.DatasetError, match="a 9000x2 frame is larger than any thermal camera's"):
        ds._decode(folder / "a.png")


def _dead_column_frames(folder, n=12, h=48, w=64):
    """``n`` 8-bit frames of a camera whose column 30 is dead (0) and column 50 stuck (255), each
    another scene."""
    folder.mkdir()
    for i in range(n):
        f = np.rint(_scene(h, w, i) * 200 + 20).astype(np.uint8)
        f[:, 30] = 0
        f[:, 50] = 255
        cv2.imwrite(str(folder / f"f{i:02d}.png"), f)


def test_degrade_counts_degrades_the_scene_and_stamps_the_sensors_dead_readouts_back():
    """A dead read-out stays dead whatever the optics do: the degradation is the scene's (the frame
    with its dead columns replaced, so a blur does not smear a black column into its neighbours)
    and the dead pixels read afterwards what the sensor reads."""
    from tir.engines.training.camera_eval import scene_view

    clean = np.rint(_scene(48, 64, 3) * 200 + 20).astype(np.uint8)
    clean[:, 30] = 0
    mask = np.zeros(clean.shape, bool)
    mask[:, 30] = True
    counts, c, _, _ = degrade_counts(clean, 8, "blur", np.random.default_rng(5), defects=mask)
    assert np.array_equal(counts[:, 30], c[:, 30]) and (c[:, 30] == 0).all()
    scene, _, _, _ = degrade_counts(scene_view(clean, mask), 8, "blur", np.random.default_rng(5))
    live = ~mask
    assert np.array_equal(counts[live], scene[live])
    assert counts[:, 29].mean() > 0.8 * (int(clean[:, 28].mean()) << 6)   # no black smear beside it
    # raw counts: the range is the scene's, not stretched to the dead column's 0
    raw = (7000 + _scene(48, 64, 4) * 300).astype(np.uint16)
    raw[:, 30] = 0
    d16, c16, _, peak = degrade_counts(raw, 16, "noise", np.random.default_rng(6), defects=mask)
    assert (d16[:, 30] == 0).all() and peak < 1000


def test_eval_of_a_camera_with_dead_columns_scores_their_replacement_as_neither_harm_nor_gain(tmp_path, monkeypatch):
    """The evaluation learns the camera's dead columns from its own frames as tir run does, and
    scores the user's output against the clean frame with them replaced: a clean frame passed
    through (its dead columns replaced by the live path) is identical, and replacing them is no
    gain (the identity bundle restores nothing)."""
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    b = _identity_bundle(tmp_path)
    _dead_column_frames(tmp_path / "cam")
    name = ds.register_folder(tmp_path / "cam")
    r = evaluate_set(b.path, name, progress=False)
    d = r["defects"]
    assert (d["columns"], d["rows"], d["pixels"], d["stamped"]) == (2, 0, 2 * 48, True)
    assert d["replaced_frames"] == 12 * len(r["tasks"] + ["clean"]) and d["found_end"] == 2 * 48
    assert r["clean_identity"]["median"] == 99.0 and r["clean_identity"]["p5"] == 99.0
    for row in r["per_task"].values():
        assert abs(row["gain_auto"]) < 1e-9


def test_degraded_frames_are_judged_against_the_camera_history_without_joining_it(tmp_path, monkeypatch):
    """The gates' histories are the camera's look: in the evaluation the degradations it applies
    (7 of every 8 frames routed) no longer join them, the camera's clean frames do (K12: a
    narrow-span noisy Y16 camera's clean frames were routed in tir eval against a history of the
    evaluated degradations, none at a cold start live)."""
    from tir.engines.restorer import Restorer
    from tir.engines.training import camera_eval as ce

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    folder = tmp_path / "cam"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"f{i}.png"), np.rint(_scene(128, 160, i) * 255).astype(np.uint8))
    name = ds.register_folder(folder)
    seen = []   # (class routed next, frozen, the contrast gate's history length before it)
    freeze = Restorer.freeze_camera

    def spy(self, frozen=True):
        seen.append((frozen, len(self.contrast_gate.extents)))
        freeze(self, frozen)

    monkeypatch.setattr(Restorer, "freeze_camera", spy)
    r = ce.evaluate_set("engines/bundles/edge", name, router_only=True, progress=False)
    classes = r["tasks"] + [ce.CLEAN]
    assert len(seen) == 3 * len(classes)
    for i in range(3):
        block = seen[i * len(classes):(i + 1) * len(classes)]
        assert [f for f, _ in block] == [c != ce.CLEAN for c in classes]
        # the degraded frames left the history as it was; the clean frame before them joined it
        assert len({n for _, n in block}) == 1
        if i:
            assert block[0][1] == seen[i * len(classes) - 1][1] + 1


def test_freeze_camera_keeps_the_histories_and_never_lets_a_pin_go():
    from tir.engines.restorer import Restorer

    auto = Restorer("engines/bundles/edge", every=1, hysteresis=1, threads=1)
    frames = [_scene(128, 160, i) for i in range(3)]
    auto.observe(frames[0])
    n = len(auto.contrast_gate.extents), len(auto.fpn_gate.seen)
    auto.freeze_camera()
    auto.observe(frames[1])
    assert (len(auto.contrast_gate.extents), len(auto.fpn_gate.seen)) == n
    auto.freeze_camera(False)
    auto.observe(frames[2])
    assert len(auto.contrast_gate.extents) == n[0] + 1 and len(auto.fpn_gate.seen) == n[1] + 1
    auto.pin_camera(np.stack(frames))
    auto.freeze_camera(False)   # a pin (tir run --reference) is the user's: it stays
    assert auto.contrast_gate.pinned and auto.blur_gate.pinned and auto.fpn_gate.pinned
    auto.close()


def test_a_frame_whose_header_opencv_refuses_is_a_dataset_error_not_a_traceback(tmp_path):
    # session 17: a BMP claiming a width of 2**30 px made cv2.imdecode raise cv2.error: a traceback in tir eval --data DIR
    import struct

    (tmp_path / "cam").mkdir()
    data = bytearray(cv2.imencode(".bmp", np.full((8, 8), 90, np.uint8))[1].tobytes())
    data[18:22] = struct.pack("<i", 2 ** 30)   # BITMAPINFOHEADER biWidth
    (tmp_path / "cam" / "b.bmp").write_bytes(bytes(data))
    with pytest.raises(ds.DatasetError, match=r"cannot decode .*b\.bmp \(damaged or not an image\); remove or replace it"):
        ds.read_counts(tmp_path / "cam" / "b.bmp", 8)
