"""A camera mounted in portrait, upside down or behind a mirror (edge/sources/orient.py, tir run --input-flip)."""
import numpy as np
import pytest

from tir.edge.sources.base import open_source
from tir.edge.sources.orient import FLIP_METHODS, OrientedSource, flip_frame, oriented
from tir.tools.cli import main

X = np.array([[1, 2, 3], [4, 5, 6]], np.uint16)
#: GStreamer videoflip's methods on a 2x3 frame
EXPECTED = {
    "none": [[1, 2, 3], [4, 5, 6]],
    "clockwise": [[4, 1], [5, 2], [6, 3]],
    "rotate-180": [[6, 5, 4], [3, 2, 1]],
    "counterclockwise": [[3, 6], [2, 5], [1, 4]],
    "horizontal-flip": [[3, 2, 1], [6, 5, 4]],
    "vertical-flip": [[4, 5, 6], [1, 2, 3]],
    "upper-left-diagonal": [[1, 4], [2, 5], [3, 6]],
    "upper-right-diagonal": [[6, 3], [5, 2], [4, 1]],
}


@pytest.mark.parametrize("method", list(FLIP_METHODS))
def test_each_method_turns_the_frame_as_gstreamer_videoflip_names_it(method):
    out = flip_frame(X, method)
    assert out.tolist() == EXPECTED[method] and out.dtype == np.uint16 and out.flags.c_contiguous


def test_unknown_method_and_bad_frames_are_refused():
    with pytest.raises(ValueError, match="input flip 'sideways': use one of none, clockwise, rotate-180"):
        flip_frame(X, "sideways")
    with pytest.raises(ValueError, match="one \\(H, W\\) frame"):
        flip_frame(X[None], "clockwise")
    src = open_source("synthetic://?size=160x120&realtime=0&frames=3")
    assert oriented(src, "none") is src and oriented(src, None) is src
    with pytest.raises(ValueError, match="input flip"):
        oriented(src, "upside-down")


def test_wrapped_source_gives_turned_frames_and_the_inner_sources_everything_else():
    plain = open_source("synthetic://?size=160x120&realtime=0&seed=3&frames=2").start()
    turned = OrientedSource(open_source("synthetic://?size=160x120&realtime=0&seed=3&frames=2"), "clockwise").start()
    try:
        assert turned.size == (120, 160) and plain.size == (160, 120)
        a, b = plain.read(), turned.read()
        assert b.raw.shape == (160, 120) and np.array_equal(b.raw, np.rot90(a.raw, -1))
        assert b.meta["input_flip"] == "clockwise" and b.seq == a.seq
        assert turned.stats()["frames"] >= 1 and turned.uri.scheme == "synthetic"
        assert turned.live == plain.live
    finally:
        plain.close()
        turned.close()
    ref = OrientedSource(open_source("synthetic://?size=160x120&realtime=0&degrade=noise"), "rotate-180")
    frames = ref.reference_frames(2)
    assert len(frames) == 2 and frames[0].raw.shape == (120, 160) and frames[0].meta["input_flip"] == "rotate-180"


def test_tir_run_records_the_turned_frames(tmp_path, capsys):
    recorder = pytest.importorskip("tir.edge.outputs.recorder")
    from tir.engines.training.models.plainnet import export_plainnet_onnx

    model = export_plainnet_onnx("tiny", tmp_path / "tiny.onnx")
    folder = tmp_path / "rec"
    code = main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--input-flip", "counterclockwise",
                 "--model", str(model), "--frames", "3", "--output", f"file://{folder}?preview=0", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frames, _ = recorder.read_recording(folder)
    assert frames.shape[1:] == (160, 120)          # portrait: the 160x120 camera turned upright
    with pytest.raises(SystemExit):
        main(["run", "--input-flip", "sideways", "--frames", "1"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_tir_adapt_collects_the_turned_frames():
    from tir.engines import adapt as A

    uri = "synthetic://?size=160x120&realtime=0&ffc=0&seed=2"
    plain = A.collect_frames(uri, 3, progress=False)
    turned = A.collect_frames(uri, 3, progress=False, input_flip="rotate-180")
    assert turned.shape == plain.shape == (3, 120, 160)
    # the same scene turned over (the normaliser's percentiles come from a pixel subsample, so not bit for bit)
    assert np.abs(turned - plain[:, ::-1, ::-1]).mean() < 0.01 and np.abs(turned - plain).mean() > 0.05
    assert A.collect_frames(uri, 2, progress=False, input_flip="clockwise").shape == (2, 160, 120)
