"""``tir eval --sequence``: a camera's frames as one stream on tir run's schedule
(engines/training/sequence_eval.py), on synthetic frames in a temporary folder."""
import inspect
import json

import cv2
import numpy as np
import pytest

from test_datasets_camera_eval import _identity_bundle as _two_routes, _scene
from tir.engines.training import datasets as ds
from tir.engines.training.sequence_eval import evaluate_sequence, one_size, stream_plan


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """A folder camera of three 8-bit 96x64 frames, registered as tir eval --data DIR registers it."""
    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path / "nowhere"))
    d = tmp_path / "cam"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"f{i}.png"), np.rint(_scene(64, 96, i) * 255).astype(np.uint8))
    return d


def _identity_bundle(tmp_path):
    return _two_routes(tmp_path, tasks=("noise", "blur"))


def test_the_stream_starts_clean_and_comes_back_to_clean_after_every_task():
    assert stream_plan(["noise", "CB"], 5) == [("clean", 5), ("noise", 5), ("clean", 5), ("CB", 5), ("clean", 5)]
    with pytest.raises(ValueError, match="at least 1 frame"):
        stream_plan(["noise"], 0)


def test_a_set_of_several_sizes_streams_its_most_common_one():
    frames = [np.zeros((60, 80)), np.zeros((120, 160)), np.ones((60, 80))]
    kept, size = one_size(frames)
    assert size == "80x60" and len(kept) == 2 and kept[1].max() == 1


def test_without_a_router_every_frame_passes_through_and_is_scored_so(folder, tmp_path):
    """No router: the clean segments are all right at once (recovery 0 frames), no degradation is
    ever taken up (each named), and pass-through gains exactly nothing."""
    name = ds.register_folder(str(folder))
    r = evaluate_sequence(_identity_bundle(tmp_path).path, name, segment=6, hold=2, progress=False)
    assert [s["task"] for s in r["segments"]] == ["clean", "noise", "clean", "blur", "clean"]
    assert all(s["frames"] == 6 and sum(n for _, n in s["runs"]) == 6 for s in r["segments"])
    assert all(s["runs"] == [["passthrough", 6]] for s in r["segments"])
    clean = [s for s in r["segments"] if s["task"] == "clean"]
    assert all(s["right"] == 1.0 and s["first_right"] == 0 and s["identity"]["p5"] == 99.0 for s in clean)
    tasks = [s for s in r["segments"] if s["task"] != "clean"]
    assert all(s["right"] == 0.0 and s["first_right"] is None and s["gain_db"] == 0.0 for s in tasks)
    m = r["summary"]
    assert m["never_right"] == ["noise", "blur"] and m["onset_frames"] is None
    # no route was taken, so there is no recovery to measure (a 0 here read as a perfect one)
    assert m["recovery_frames"] is None and m["never_recovered"] == [] and m["clean_passed"] is None
    assert r["size"] == "96x64" and r["frames"] == 3 and r["hold"] == 2 and r["other_sizes"] == 0
    assert r["short"] is True   # 6-frame segments: shorter than a switch may take at every=8


def test_the_stream_runs_on_tir_runs_schedule_with_the_shipped_bundle(folder, tmp_path, capsys):
    """The Restorer is built with tir run's defaults (router every 8 frames, hysteresis 3), and a
    route, once taken, changes only on a router call (or in the start-up's every-frame routing)."""
    from tir.engines.bundle import default_bundle_path
    from tir.engines.restorer import Restorer
    from tir.tools import cli

    bundle = default_bundle_path()
    if bundle is None:
        pytest.skip("no shipped bundle in engines/bundles/edge")
    out, pic = tmp_path / "seq.json", tmp_path / "seq.png"
    assert cli.main(["eval", "--bundle", str(bundle), "--data", str(folder), "--sequence", "--segment-frames", "16",
                     "--threads", "1", "--json", str(out), "--plot", str(pic)]) == 0
    text = capsys.readouterr().out
    assert "router every 8 frames, hysteresis 3" in text and "recovery" in text
    r = json.loads(out.read_text())["sets"]["dir:cam"]
    defaults = inspect.signature(Restorer).parameters
    assert (r["every"], r["hysteresis"]) == (defaults["every"].default, defaults["hysteresis"].default)
    assert [s["task"] for s in r["segments"]][:3] == ["clean", "contrast", "clean"] and len(r["segments"]) == 15
    routes = [route for s in r["segments"] for route, n in s["runs"] for _ in range(n)]
    assert len(routes) == 15 * 16
    # a frame the route passed through between verdicts (it showed none of the route's parts,
    # Restorer._released) reads "passthrough" in the runs; the route itself went on
    released = {16 * i + k for i, s in enumerate(r["segments"]) for k in s["released"]}
    assert all(routes[k] == "passthrough" for k in released)
    held = []
    for k, route in enumerate(routes):
        held.append(held[-1] if k in released and held else route)
    # after the start-up segment, a route change happens only on a frame the router ran on
    changes = [k for k in range(16, len(held)) if held[k] != held[k - 1]]
    assert all(k % r["every"] == 0 for k in changes), changes
    assert cv2.imread(str(pic)) is not None


@pytest.mark.parametrize("argv, says", [
    (["--data", "{d}", "--segment-frames", "8"], "--segment-frames sets the length of --sequence's segments"),
    (["--sequence"], "--sequence streams a camera's frames: give them with --data"),
    (["--data", "{d}", "--sequence", "--compare"], "does not combine with"),
    (["--data", "{d}", "--sequence", "--no-reference"], "does not combine with"),
    (["--data", "{d}", "--sequence", "--router-only"], "drop --router-only"),
    (["--data", "{d}", "--sequence"], "has no router"),
    (["--data", "{d}", "--sequence", "--router", "{d}"], "--router replaces the router of the RoadScene"),
    (["--data", "{d}", "--router", "{d}"], "--router replaces the router of the RoadScene"),
])
def test_sequence_options_that_cannot_act_are_refused(folder, tmp_path, capsys, argv, says):
    from tir.tools import cli

    b = _identity_bundle(tmp_path)
    assert cli.main(["eval", "--bundle", str(b.path), *[a.format(d=folder) for a in argv]]) == 2
    assert says in capsys.readouterr().err


@pytest.mark.parametrize("plot, says", [("timeline.svgx", "its suffix .svgx is not a picture type"),
                                        ("bars", "it has no suffix")])
def test_a_plot_matplotlib_cannot_write_is_refused_before_any_work(folder, tmp_path, capsys, plot, says):
    # an unknown suffix was a matplotlib traceback after the whole evaluation had run
    from tir.tools import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(["eval", "--data", str(folder), "--sequence", "--plot", str(tmp_path / plot)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "argument --plot: " in err and says in err


def test_frames_of_another_size_are_left_out_and_said(folder, tmp_path):
    from tir.engines.training.sequence_eval import format_sequence

    cv2.imwrite(str(folder / "f9.png"), np.rint(_scene(48, 64, 9) * 255).astype(np.uint8))
    name = ds.register_folder(str(folder))
    r = evaluate_sequence(_identity_bundle(tmp_path).path, name, segment=4, hold=1, progress=False)
    assert r["frames"] == 3 and r["other_sizes"] == 1 and r["size"] == "96x64"
    assert "3 stored frames, 1 of other sizes left out" in format_sequence({name: r})
