"""A new user misusing the less-used modes (issue 9/11 attack pass, break12): every fault here
was a traceback, a silently meaningless result or lost work before its fix; now one clear
line and nothing lost. Synthetic frames and tiny models only."""
import json
import os

import pytest

from tir.tools.cli import main

TINY = ["--model", "plainnet:tiny", "--size", "64x48", "--warmup", "1", "--no-progress"]


@pytest.mark.parametrize("size", ["0x0", "0x48", "20000x20000"])
def test_bench_refuses_a_size_it_cannot_time(capsys, size):
    # 0x0 was an OpenCV assertion traceback (exit 1); 20000x20000 a process killed for memory
    assert main(["bench", "--mode", "model", "--model", "plainnet:tiny", "--size", size, "--frames", "2"]) == 2
    assert capsys.readouterr().err == f"tir bench: error: --size {size}: give a frame size WxH with each side 1..8192 px\n"


def test_bench_roofline_refuses_a_zero_size(capsys):
    assert main(["bench", "--roofline", "160x120,0x0", "--rounds", "1"]) == 2
    assert capsys.readouterr().err == "tir bench: error: --roofline 0x0: give a frame size WxH with each side 1..8192 px\n"
    assert main(["bench", "--roofline", "160x120,abc", "--rounds", "1"]) == 2  # was "--roofline needs a bundle: ..."
    assert capsys.readouterr().err == "tir bench: error: size 'abc' is not WIDTHxHEIGHT, e.g. 640x512\n"


@pytest.mark.parametrize("option, value, words", [
    ("--frames", "0", "give a number of frames >= 1"),     # was a 0-frame row at 0 fps, exit 0
    ("--frames", "-3", "give a number of frames >= 1"),
    ("--duration", "0", "give a number of seconds > 0"),  # was an empty pipeline row, exit 0
    ("--duration", "-1", "give a number of seconds > 0"),
    ("--sample-every", "0", "give a number of seconds > 0"),
    ("--repeat", "0", "give a number of rounds >= 1"),    # was silently one round
    ("--rounds", "0", "give a number of rounds >= 1"),
    ("--warmup", "-1", "give a number of calls >= 0"),
    ("--max-in-flight", "0", "give a number of frames >= 1"),  # was an error row after loading the model
    ("--psnr-frames", "0", "give a number of frames >= 1"),
])
def test_bench_numbers_that_mean_nothing_are_refused_by_argparse(capsys, option, value, words):
    with pytest.raises(SystemExit) as info:
        main(["bench", *TINY, option, value])
    assert info.value.code == 2 and f"argument {option}: {value}: {words}" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["folder", "under_a_file", "unwritable"])
def test_bench_json_to_a_path_it_cannot_write_is_refused_before_the_run(tmp_path, capsys, monkeypatch, where):
    # was a traceback after the whole run, before the table was printed: every number lost
    if where == "folder":
        path, words = tmp_path, "is a folder; give a file path such as"
    elif where == "under_a_file":
        (tmp_path / "f").write_text("x")
        path, words = tmp_path / "f" / "b.json", "is a file, not a folder"
    else:
        import tempfile

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(tempfile, "mkstemp", refuse)  # root may write anywhere: the probe says no
        path, words = tmp_path / "new" / "b.json", "cannot write in"
    with pytest.raises(SystemExit) as info:
        main(["bench", "--mode", "model", *TINY, "--frames", "2", "--json", str(path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument --json: " in err and words in err
    assert sorted(os.listdir(tmp_path)) == (["f"] if where == "under_a_file" else [])  # no probe file left


def test_bench_json_into_a_new_folder_is_written(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "b.json"
    assert main(["bench", "--mode", "model", *TINY, "--frames", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["model_only"]["frames"] == 2
    assert os.listdir(tmp_path / "new" / "deeper") == ["b.json"]


def test_bench_json_write_failing_late_keeps_the_table(tmp_path, capsys, monkeypatch):
    # the path passed the check but the write fails (a disk that filled since): the table is printed, exit 3
    from tir.tools import cli

    def full(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(cli.os, "replace", full)
    assert main(["bench", "--mode", "model", *TINY, "--frames", "2", "--json", str(tmp_path / "b.json")]) == 3
    out, err = capsys.readouterr()
    assert "model  onnxruntime" in out and "fps" in out
    assert err.endswith(f"tir bench: error: --json {tmp_path / 'b.json'}: not written (No space left on device); "
                        "the results are in the table above\n")


def test_a_json_write_that_fails_leaves_no_file_and_is_one_output_error(tmp_path, monkeypatch):
    # a full disk left a 0-byte --json file behind and was a traceback (exit 1) in tir eval and tir adapt
    from tir.edge.errors import OutputFailed
    from tir.tools import cli

    real_fdopen = cli.os.fdopen

    def full_disk(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)

        def write(text):
            raise OSError(28, "No space left on device")
        f.write = write
        return f
    monkeypatch.setattr(cli.os, "fdopen", full_disk)
    with pytest.raises(OutputFailed, match=r"--json .*e\.json: not written \(No space left on device\)") as info:
        cli.write_json(tmp_path / "e.json", {"a": 1})
    assert info.value.exit_code == 3 and os.listdir(tmp_path) == []
    monkeypatch.undo()
    (tmp_path / "e.json").write_text("old")
    cli.write_json(tmp_path / "e.json", {"a": 1})
    assert json.loads((tmp_path / "e.json").read_text()) == {"a": 1} and os.listdir(tmp_path) == ["e.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "e.json").stat().st_mode & 0o777 == 0o666 & ~umask   # a report others can read, not 0600


@pytest.mark.parametrize("mode, option", [("eval", "--json"), ("eval", "--plot"), ("adapt", "--json")])
def test_eval_and_adapt_output_files_are_checked_before_the_work(tmp_path, capsys, mode, option):
    # tir eval --leave-out runs for an hour and wrote its JSON last: a folder given as --json was a traceback then
    with pytest.raises(SystemExit) as info:
        main([mode, option, str(tmp_path)])
    assert info.value.code == 2 and f"argument {option}: {str(tmp_path)!r} is a folder" in capsys.readouterr().err


# ---------------------------------------------------------------- tir calibrate / tir export
@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from tiny_models import calibration_bundle

    return calibration_bundle(tmp_path_factory.mktemp("bundle"))


def _calibrate(bundle, out, *more):
    return main(["calibrate", "--bundle", str(bundle.path), "--frames", "4", "--holdout", "2", "--size", "32x24",
                 "--out", str(out), "--bench-runs", "0", "--threads", "1", "--no-fp16-search", *more])


def test_calibrating_one_route_into_the_same_out_keeps_the_others_verdicts(tiny_bundle, tmp_path, capsys):
    # docs/int8.md calibrates single routes (--routes noise); a second run into the same --out replaced
    # calibration.json, so `tir build --precision int8` no longer found the first route's verdict
    out = tmp_path / "int8"
    assert _calibrate(tiny_bundle, out, "--routes", "noise") == 0
    first = json.loads((out / "calibration.json").read_text())
    capsys.readouterr()
    assert _calibrate(tiny_bundle, out, "--routes", "blur") == 0
    assert f"kept the earlier verdicts of noise from {out / 'calibration.json'}" in capsys.readouterr().out
    report = json.loads((out / "calibration.json").read_text())
    assert list(report["routes"]) == ["blur", "noise"]
    assert report["routes"]["noise"] == first["routes"]["noise"]
    assert report["kept_from_earlier"] == {"noise": first["command"]}
    assert _calibrate(tiny_bundle, out, "--routes", "noise") == 0  # re-calibrated: its new verdict, blur kept
    report = json.loads((out / "calibration.json").read_text())
    assert set(report["routes"]) == {"noise", "blur"} and set(report["kept_from_earlier"]) == {"blur"}


def test_calibrate_onto_a_full_disk_is_one_line_and_removes_the_routes_partial_files(tiny_bundle, tmp_path,
                                                                                     capsys, monkeypatch):
    # a full disk was a traceback (exit 1) with a 0-byte noise.ranges.json left in --out
    from tir.tools import calibrate

    real = calibrate._write_int8

    def full_disk(fp32, stem, ranges, args, out, **kwargs):
        if stem == "blur":
            (out / f"{stem}.ranges.json").write_text("")
            raise OSError(28, "No space left on device")
        return real(fp32, stem, ranges, args, out, **kwargs)
    monkeypatch.setattr(calibrate, "_write_int8", full_disk)
    out = tmp_path / "int8"
    assert _calibrate(tiny_bundle, out, "--routes", "noise,blur") == 3
    said = capsys.readouterr().err.splitlines()[-1]
    assert said.startswith(f"tir calibrate: error: cannot write blur's files in --out {out}: No space left on device")
    assert "(routes finished before it are kept: noise)" in said
    assert not list(out.glob("blur.*")) and list(out.glob("noise.*"))


def test_calibrate_refuses_an_out_holding_another_runs_report(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "int8"
    assert _calibrate(tiny_bundle, out, "--routes", "noise") == 0
    before = (out / "calibration.json").read_text()
    capsys.readouterr()
    rc = main(["calibrate", "--bundle", str(tiny_bundle.path), "--frames", "4", "--holdout", "2", "--size", "64x48",
               "--out", str(out), "--bench-runs", "0", "--routes", "blur"])
    assert rc == 2
    assert capsys.readouterr().err == (f"tir calibrate: error: --out {out} holds the calibration of another run: size 32x24 "
                                       "(this run: 64x48); its verdicts would not describe this run's models: choose "
                                       "another --out\n")
    assert (out / "calibration.json").read_text() == before and not (out / "blur.int8-cpu.onnx").exists()
    (out / "calibration.json").write_text("{not json")
    assert _calibrate(tiny_bundle, out, "--routes", "blur") == 2
    assert "its calibration.json is not a tir calibrate report" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["calibrate", "export"])
def test_calibrate_and_export_refuse_an_unwritable_out_before_the_work(tiny_bundle, tmp_path, capsys, mode):
    # was a FileNotFoundError / PermissionError traceback from mkdir (export: after re-exporting every route)
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "int8"
    if mode == "calibrate":
        rc = _calibrate(tiny_bundle, out)
    else:
        rc = main(["export", "--bundle", str(tiny_bundle.path), "--out", str(out)])
    assert rc == 2
    assert capsys.readouterr().err == (f"tir {mode}: error: --out {out}: {tmp_path / 'file'} is a file, not a folder; "
                                       f"give a writable {'new ' if mode == 'export' else ''}folder\n")


# ---------------------------------------------------------------- tir deploy
def test_deploy_measure_on_sets_without_a_clean_target_is_one_line(tmp_path, capsys):
    # was a ValueError traceback naming "['l', 'y', 'n', 'r', 'e', 'd', ...]", the letters of the set
    from tir.engines.bundle import default_bundle_path

    rc = main(["deploy", "--bundle", str(default_bundle_path()), "--set", "auto", "--measure", "lynred_nonuc",
               "--measure-frames", "1", "--out", str(tmp_path / "copy")])
    assert rc == 2
    assert capsys.readouterr().err == ("tir deploy: error: no clean target frames in lynred_nonuc to measure PSNR "
                                       "against (real degraded frames only); give sets with clean frames, e.g. "
                                       "roadscene, hit_uav\n")
    assert not (tmp_path / "copy").exists()


@pytest.mark.parametrize("out", ["exists", "under_a_file"])
def test_deploy_checks_its_out_before_measuring(tmp_path, capsys, monkeypatch, out):
    # the copy was written last: an existing or unwritable --out was found after --measure's minutes
    from tir.engines.bundle import default_bundle_path
    from tir.engines.training import camera_eval

    calls = []
    monkeypatch.setattr(camera_eval, "user_path_table", lambda *a, **kw: calls.append(a))
    (tmp_path / "f").mkdir() if out == "exists" else (tmp_path / "f").write_text("x")
    target = tmp_path / "f" if out == "exists" else tmp_path / "f" / "copy"
    rc = main(["deploy", "--bundle", str(default_bundle_path()), "--set", "auto", "--measure", "roadscene",
               "--out", str(target)])
    err = capsys.readouterr().err
    assert rc == 2 and not calls
    if out == "exists":
        assert err == (f"tir deploy: error: {target} already exists; choose a new folder for the copy (the original "
                       f"stays in {default_bundle_path()})\n")
    else:
        assert err == (f"tir deploy: error: cannot write the copy {target}: {tmp_path / 'f'} is a file, not a folder; "
                       "choose a writable new folder (nothing was written)\n")


# ---------------------------------------------------------------- a read-only bundle folder
@pytest.fixture
def read_only_bundle(tmp_path):
    """A copy of the shipped bundle in a folder nothing can be written to: mode 0555, and for root
    (who ignores modes) the immutable attribute (chattr +i); skipped where neither holds."""
    import shutil
    import subprocess
    import tempfile

    from tir.engines.bundle import default_bundle_path

    folder = tmp_path / "ro"
    shutil.copytree(default_bundle_path(), folder)
    folder.chmod(0o555)
    immutable = False
    if os.geteuid() == 0 and shutil.which("chattr"):
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
    try:
        handle, probe = tempfile.mkstemp(dir=folder)
        os.close(handle)
        os.unlink(probe)
        writable = True
    except OSError:
        writable = False
    if writable:
        folder.chmod(0o755)
        pytest.skip("cannot make a read-only folder here (root without chattr +i)")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


@pytest.mark.parametrize("argv", [["deploy", "--set", "routes"], ["adapt", "--source-stats", "--stats", "contrast"]])
def test_modes_that_rewrite_a_bundle_in_place_refuse_a_read_only_one_up_front(read_only_bundle, capsys, argv):
    # both were a PermissionError traceback from manifest.json.tmp (adapt: after computing the statistics)
    before = (read_only_bundle / "manifest.json").read_bytes()
    assert main([*argv, "--bundle", str(read_only_bundle)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "manifest.json in place, but cannot write in" in err
    assert (read_only_bundle / "manifest.json").read_bytes() == before


def test_save_manifest_into_a_read_only_folder_is_a_bundle_error(read_only_bundle):
    # the backstop of every in-place writer (set_deploy, add_source_stats, ...)
    from tir.engines.bundle import BundleError, load_bundle, save_manifest

    files = sorted(p.name for p in read_only_bundle.iterdir())
    before = (read_only_bundle / "manifest.json").read_bytes()
    manifest = dict(load_bundle(read_only_bundle).manifest, deploy="routes")
    with pytest.raises(BundleError, match=r"cannot rewrite .*manifest.json: .*; the bundle is unchanged"):
        save_manifest(read_only_bundle, manifest)
    assert sorted(p.name for p in read_only_bundle.iterdir()) == files  # no manifest.json.tmp left
    assert (read_only_bundle / "manifest.json").read_bytes() == before



# ---------------------------------------------------------------- bundle hot-swap
def test_hot_swap_refuses_a_bundle_that_normalises_its_input_otherwise(tmp_path):
    # tir run builds the pipeline's normaliser once from the first bundle: a new bundle with other
    # normalisation percentiles was swapped in and fed frames scaled for the old one, silently
    import numpy as np

    from test_hotswap import factory, scale_route
    from tir.engines.bundle import write_bundle
    from tir.engines.hotswap import HotSwapRestorer

    folder = tmp_path / "bundle"

    def publish(version, normalisation, gain):
        route = scale_route(tmp_path / f"a-{version}.onnx", gain)
        write_bundle(folder, {"a": route}, None, {"name": "hs", "version": version, "normalisation": normalisation})

    publish(1, {}, 1.0)
    hs = HotSwapRestorer(factory()(folder), factory())
    try:
        x = np.full((1, 1, 16, 16), 0.25, np.float32)
        assert float(hs.infer(x).max()) == pytest.approx(0.25)  # frames flow: route a is loaded
        publish(2, {"low_pct": 2.0, "high_pct": 98.0}, 2.0)
        assert hs.request_reload() and hs.wait_loaded()
        assert not hs.swap_if_ready() and hs.bundle.version == 1
        assert float(hs.infer(x).max()) == pytest.approx(0.25)  # the old bundle runs on
        assert hs.status()["bundle"]["reload_error"] == (
            "bundle reload failed, version 1 keeps running: ValueError: the new bundle normalises its input with the "
            "2-98 percentiles, the running one with 0.5-99.5; the pipeline's normalisation is fixed for a run: "
            "restart tir run to use it")
        publish(3, {"low_pct": 0.5, "high_pct": 99.5}, 3.0)  # the running one's percentiles, written out: swapped
        assert hs.request_reload() and hs.wait_loaded() and hs.swap_if_ready()
        assert hs.bundle.version == 3 and float(hs.infer(x).max()) == pytest.approx(0.75)
    finally:
        hs.close()


def test_hot_swap_refuses_a_bundle_without_a_router_while_routing_automatically(tmp_path):
    # was swapped in: the route running at the swap (a) was carried over and, with no router left to
    # change it, ran on every frame, clean ones included, while the log said "frames pass through"
    import numpy as np

    from test_restorer import MEANS, MeanRouter, Scale, _export, frame
    from tir.engines.bundle import write_bundle
    from tir.engines.hotswap import HotSwapRestorer
    from tir.engines.restorer import Restorer

    folder = tmp_path / "bundle"
    routes = {"a": _export(Scale(2.0), tmp_path / "a.onnx"), "b": _export(Scale(3.0), tmp_path / "b.onnx")}
    router = {"codebook": np.eye(3).tolist(), "tasks": list(MEANS), "threshold": 0.9, "temperature": 0.1,
              "input_size": [32, 24]}
    write_bundle(folder, routes, _export(MeanRouter(), tmp_path / "router.onnx"),
                 {"name": "tiny", "version": 1, "router": router})

    def factory(path):
        return Restorer(path, backend="onnxruntime", every=1, hysteresis=1, threads=1)

    hs = HotSwapRestorer(factory(folder), factory)
    try:
        hs.infer(frame("a"))
        assert hs.route == "a"
        write_bundle(folder, routes, None, {"name": "tiny", "version": 2})
        assert hs.request_reload() and hs.wait_loaded()
        assert not hs.swap_if_ready() and hs.bundle.version == 1
        assert hs.status()["bundle"]["reload_error"] == (
            "bundle reload failed, version 1 keeps running: ValueError: the new bundle has no router, and this run "
            "routes automatically (no --task): it would run one route on every frame; publish a bundle with a "
            "router, or restart tir run with --task (a, b)")
        clean = frame("clean")
        assert np.array_equal(hs.infer(clean), clean)  # the old router still sees a clean frame: passed through
    finally:
        hs.close()


# ---------------------------------------------------------------- tir run --adapt
def test_run_adapt_with_too_few_frames_is_refused_at_start(capsys):
    # tir adapt --frames 5 is refused up front; tir run --adapt 5 collected 5 frames, then only the page
    # said "refused" (exit 0, an --adapt-save copy never written)
    rc = main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--port", "0", "--frames", "3",
               "--adapt", "5"])
    assert rc == 2
    assert capsys.readouterr().err.endswith("tir run: error: --adapt 5: too few frames to fit the adaptation: need "
                                            "at least 32 (200 recommended)\n")


def test_bench_roofline_names_the_routes_its_int8_folder_lacks(tmp_path, capsys):
    # --int8 DIR without a route's <route>.int8-cpu.onnx timed that route in fp32 only, silently
    from test_fast_route import _model, _old_bundle

    bundle = _old_bundle(tmp_path, _model())
    (tmp_path / "int8").mkdir()
    rc = main(["bench", "--roofline", "64x48", "--model", str(bundle), "--task", "noise", "--rounds", "1",
               "--threads", "1", "--int8", str(tmp_path / "int8")])
    assert rc == 0
    out = capsys.readouterr().out
    assert (f"tir bench: --int8 {tmp_path / 'int8'} has no noise.int8-cpu.onnx: that route is timed in fp32 only "
            f"(`tir calibrate --bundle {bundle} --routes noise --out {tmp_path / 'int8'}` writes them)") in out


def test_a_running_bundles_file_changed_on_disk_passes_frames_through_instead_of_stopping_the_run(tmp_path,
                                                                                               monkeypatch):
    # found live: a route file rewritten while frames flowed (a publish that has not reached its manifest,
    # or a tampered file) failed its sha256 check when the router first chose that route, the infer
    # stage failed and tir run stopped with exit 1
    import numpy as np

    from test_hotswap import factory, scale_route
    from tir.engines import hotswap
    from tir.engines.bundle import write_bundle
    from tir.engines.hotswap import HotSwapRestorer

    folder = tmp_path / "bundle"
    write_bundle(folder, {"a": scale_route(tmp_path / "a.onnx", 2.0)}, None, {"name": "hs", "version": 1})
    hs = HotSwapRestorer(factory()(folder), factory())   # route a loads on the first frame
    try:
        route = folder / "route-a.onnx"
        good = route.read_bytes()
        route.write_bytes(good + b"x")
        x = np.full((16, 16), 0.25, np.float32)
        out = hs.infer(x)
        assert out.shape == (1, 1, 16, 16) and float(out.max()) == pytest.approx(0.25)   # passed through
        error = hs.status()["bundle"]["file_error"]
        assert error.startswith("bundle 'hs': route-a.onnx changed since the bundle was loaded")
        assert error.endswith("; frames pass through until it is restored or a new version is loaded")
        route.write_bytes(good)
        assert float(hs.infer(x).max()) == pytest.approx(0.25)  # within the retry interval: not tried again
        monkeypatch.setattr(hotswap, "FILE_RETRY_S", 0.0)
        assert float(hs.infer(x).max()) == pytest.approx(0.5)   # restored: the route runs
        status = hs.status()["bundle"]
        assert status["file_error"] is None and status["passed_through"] == 2
    finally:
        hs.close()


def test_the_status_line_shows_a_bundle_file_failure():
    from tir.tools.run import status_line

    snap = {"fps": 30.0, "model": {"bundle": {"version": 1, "swaps": 0, "file_error": "route-a.onnx changed"}}}
    assert "BUNDLE FILE FAILED: route-a.onnx changed" in status_line(snap)


# ---------------------------------------------------------------- tir adapt --out
def test_adapt_refuses_an_unwritable_out_before_collecting(tmp_path, capsys, monkeypatch):
    # was found only when the copy was written, after collecting the frames
    from tir.engines import adapt

    collected = []
    monkeypatch.setattr(adapt, "collect_frames", lambda *a, **kw: collected.append(a))
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" / "copy"
    assert main(["adapt", "--source", "synthetic://?size=160x120&realtime=0", "--frames", "40",
                 "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"tir adapt: error: refused: cannot write the copy {out}: {tmp_path / 'f'} is "
                                       "a file, not a folder; choose a writable new folder (nothing was collected)\n")
    assert collected == []


def test_run_adapt_save_to_an_unwritable_place_is_refused_at_start(tmp_path, capsys):
    # was a warning "adapted bundle not written" after the N frames, the run going on without the copy
    (tmp_path / "f").write_text("x")
    save = tmp_path / "f" / "copy"
    rc = main(["run", "--source", "synthetic://?size=160x120&realtime=0", "--port", "0", "--frames", "3",
               "--adapt", "40", "--adapt-save", str(save)])
    assert rc == 2
    assert capsys.readouterr().err.endswith(f"tir run: error: --adapt-save {save}: {tmp_path / 'f'} is a file, not a "
                                            "folder; give a writable new folder\n")


# ---------------------------------------------------------------- tir train
@pytest.mark.parametrize("more, named", [
    (["--max-frames", "4"], "--max-frames"),      # the README's quick-run flag: a full run trained on every frame
    (["--router-quantize", "0.3", "--router-balance", "4"], "--router-quantize, --router-balance"),
    (["--router-draws", "2"], "--router-draws"),
    (["--bundle", "x"], "--bundle"),
    (["--router-extras", "optics"], "--router-extras"),
])
def test_train_refuses_router_only_options_it_would_ignore(tmp_path, capsys, more, named):
    assert main(["train", "--preset", "tiny", "--work-dir", str(tmp_path / "w"), *more]) == 2
    assert capsys.readouterr().err == (f"tir train: error: {named} only act with --router-only (a new router for an "
                                       "existing bundle); this run would ignore them: drop them, or add --router-only\n")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("more, message", [
    (["--router-extras", "optics,lens"], "--router-extras: unknown domain randomisation extra(s) lens; known: "
                                         "optics, shading, floor"),
    (["--router-extras", "optics", "--no-randomize"], "--router-extras adds to the domain randomisation, which "
                                                      "--no-randomize turns off; drop one"),
])
def test_train_refuses_router_extras_it_cannot_apply(tmp_path, capsys, more, message):
    """An unknown randomisation extra, or extras with the randomisation off, fail before any training."""
    assert main(["train", "--router-only", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "b"),
                 *more]) == 2
    assert capsys.readouterr().err == f"tir train: error: {message}\n"
    assert not (tmp_path / "w").exists()


def test_train_refuses_keep_thresholds_without_a_router_to_keep_them_of(tmp_path, capsys):
    assert main(["train", "--preset", "tiny", "--work-dir", str(tmp_path / "w"), "--router-keep-thresholds"]) == 2
    assert "--router-keep-thresholds keeps the thresholds of the router --router-from names" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["--size", "320x240"], "--size 320x240: the pipeline rows capture from the virtual camera, which renders"),
    (["--source", "EMPTY"], "--source: "),
    (["--source", "synthetic://?size=1x1"], "option size is not offered"),
    (["--source", "v4l2:///dev/video99"], "--source: /dev/video99 does not exist"),
])
def test_bench_checks_the_pipeline_source_before_the_model_runs(tmp_path, capsys, monkeypatch, argv, words):
    # a size the virtual camera does not render, or an empty folder, was an error row (exit 2)
    # after the whole model-only benchmark had run
    import tir.tools.bench as bench

    (tmp_path / "empty").mkdir()
    argv = [str(tmp_path / "empty") if a == "EMPTY" else a for a in argv]
    monkeypatch.setattr(bench, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["bench", "--frames", "2", "--no-progress", *argv]) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("argv, code, says", [
    # each was printed on stdout ("tir distill: ..."), where a script's output parser reads results
    (["distill", "--bundle", "{tmp}/none", "--out", "{tmp}/o"], 2, "--bundle no manifest.json in {tmp}/none"),
    (["distill", "--bundle", "{tmp}/none", "--out", "{tmp}/o", "--crop", "48"], 2, "--crop 48 must be a multiple"),
    (["export", "--bundle", "{tmp}/none"], 2, "no manifest.json in {tmp}/none"),
    (["export", "--bundle", "{tmp}/none", "--targets", "bogus"], 2, "--targets 'bogus': unknown TensorRT parser"),
    (["calibrate", "--bundle", "{tmp}/none", "--out", "{tmp}/o"], 2, "no manifest.json in {tmp}/none"),
    (["camera", "get", "serial", "--port", "{tmp}/tty"], 2, "serial port {tmp}/tty does not exist; "),
    # tir train logged it as "HH:MM:SS ERROR tir.tools.train: ..."
    (["train", "--baseline", "joint", "--data", "{tmp}/none", "--work-dir", "{tmp}/w"], 2,
     "RoadScene frames not found; tried {tmp}/none"),
])
def test_mode_errors_are_one_line_on_stderr(tmp_path, capsys, argv, code, says):
    assert main([a.format(tmp=tmp_path) for a in argv]) == code
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, (out, err)
    assert err.startswith(f"tir {argv[0]}: error: {says.format(tmp=tmp_path)}"), err
    assert err.count("serial ports") <= 1   # the ports there are were listed twice


@pytest.mark.parametrize("argv, unknown", [
    (["run", "--frame", "3", "--source", "/nonexistent-f17"], "--frame"),   # ran as --frames 3
    (["run", "--rec", "/tmp/nowhere-f17", "--source", "/nonexistent-f17"], "--rec"),   # recorded as --record
    (["eval", "--max", "3", "--data", "/nonexistent-f17"], "--max"),         # read as --max-frames 3
    (["bench", "--fr=3", "--mode", "model"], "--fr=3"),                      # read as --frames 3
    (["camera", "info", "--po", "/dev/null"], "--po"),                       # a sub-command: read as --port
])
def test_an_abbreviated_option_is_unknown_not_read_as_the_option_it_begins(capsys, argv, unknown):
    """Session 17: argparse's prefix matching took ``--frame 3`` for ``--frames 3`` (and any other
    unambiguous start of a long option) without a word, so a mistyped option ran as another one,
    and a script written against one version broke when a later one added an option with the same
    start. Every mode (and ``tir camera``'s actions) takes whole option names only."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert f"unrecognized arguments: {unknown}" in capsys.readouterr().err


def test_json_into_a_device_pipe_or_symlink_is_written_through_it_not_replaced(tmp_path):
    """Session 17: ``--json /dev/stdout`` (run as root) replaced the /dev/stdout symlink with a
    regular file holding the report (the temporary file beside the path was renamed over it; for
    every process of the machine, /dev/null would have gone the same way), and ``--json
    latest.json`` where latest.json links to a run's file replaced the link. A path that is not a
    regular file (a device, a pipe) is written into as it is; a symlink is written through to its
    target, which is replaced whole."""
    import stat
    import threading

    from tir.tools import cli

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()), daemon=True)
    reader.start()
    assert cli.output_file(str(fifo)) == str(fifo)
    cli.write_json(fifo, {"a": 1})
    reader.join(10)
    assert json.loads(got[0]) == {"a": 1} and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]   # no temporary file left beside it
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "r1.json").write_text("old")
    (tmp_path / "latest.json").symlink_to("runs/r1.json")
    cli.write_json(tmp_path / "latest.json", {"b": 2})
    assert (tmp_path / "latest.json").is_symlink()
    assert json.loads((tmp_path / "runs" / "r1.json").read_text()) == {"b": 2}
    assert sorted(os.listdir(tmp_path / "runs")) == ["r1.json"]


@pytest.mark.parametrize("source, says", [
    ("v4l2:///dev/video99", "/dev/video99 does not exist"),
    ("{tmp}/no-such-recording.mp4", "no such file or folder"),
])
def test_run_names_a_missing_camera_or_file_before_the_model_loads(tmp_path, capsys, monkeypatch, source, says):
    # the missing camera was named only after every route had loaded (about 10 s on 2 cores)
    import tir.tools.run as run

    monkeypatch.setattr(run, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    assert main(["run", "--source", source.format(tmp=tmp_path), "--frames", "1"]) == 2
    assert says in capsys.readouterr().err


def test_run_says_a_port_in_use_before_the_model_loads(capsys, monkeypatch):
    # the port in use was said only when the pipeline started, after every route had loaded
    import socket

    import tir.tools.run as run

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    monkeypatch.setattr(run, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    try:
        assert main(["run", "--source", "synthetic://?size=320x256", "--port", str(port), "--frames", "1"]) == 2
    finally:
        busy.close()
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
