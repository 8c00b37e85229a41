import json

import cv2
import numpy as np
import pytest
import torch

from tir.engines.training import evaluate as ev
from tir.engines.bundle import write_bundle
from tir.tools import cli

H, W = 64, 80
TASKS = ("contrast", "noise")


class Affine(torch.nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return (x - self.shift) * self.scale


class StatsRouter(torch.nn.Module):
    """Hand-made router: compressed range -> contrast, fine-scale energy -> noise, else clean."""

    def forward(self, x):
        r = x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))
        n = (x - torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean(dim=(1, 2, 3))
        contrast = torch.sigmoid((0.7 - r) * 40)
        noise = torch.sigmoid((n - 0.008) * 800)
        clean = (1 - contrast) * (1 - noise)
        return torch.stack([contrast, noise, clean], dim=1) + 1e-3


def _export(module, path):
    torch.onnx.export(module, (torch.rand(1, 1, H, W),), str(path), input_names=["frame"], output_names=["out"],
                      opset_version=17, dynamo=False, dynamic_axes={"frame": {0: "n", 2: "h", 3: "w"}})
    return path


def _scene(seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    img = 0.05 + 0.8 * yy / H + 0.1 * np.sin(xx / rng.uniform(3, 6))
    return np.clip(img, 0, 1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    data = tmp / "frames"
    data.mkdir()
    for i in range(3):
        cv2.imwrite(str(data / f"f{i}.png"), np.rint(_scene(i) * 255).astype(np.uint8))
    routes = {"contrast": _export(Affine(1 / 0.4, 0.15), tmp / "c.onnx"),
              "noise": _export(Affine(1.0, 0.0), tmp / "n.onnx")}
    router = _export(StatsRouter(), tmp / "router.onnx")
    meta = {"name": "tiny", "tasks": [{"name": "contrast", "gmac_640x512": 0.5, "params": 10}],
            "router": {"codebook": np.eye(3).tolist(), "tasks": ["contrast", "noise", "clean"],
                       "threshold": 0.9, "temperature": 0.1, "input_size": [W, H]}}
    bundle = write_bundle(tmp / "bundle", routes, router, meta)
    seq = tmp / "seq"
    seq.mkdir()
    _export(Affine(1 / 0.4, 0.15), seq / "sequential-after-contrast.onnx")
    _export(Affine(1.0, 0.0), seq / "sequential-after-noise.onnx")
    _export(Affine(1.0, 0.0), tmp / "joint.onnx")
    return {"tmp": tmp, "data": data, "bundle": bundle.path, "seq": seq, "joint": tmp / "joint.onnx"}


def test_evaluate_all_methods_tables_and_router(setup):
    res = ev.evaluate(bundle=setup["bundle"], data=str(setup["data"]), seed=0,
                      baselines=("classical", "sequential", "joint"), sequential=str(setup["seq"]),
                      joint=str(setup["joint"]))
    assert res["tasks"] == list(TASKS) and res["frames"] == 3 and res["frame_size"] == [W, H]
    m = res["methods"]
    assert set(m) == {"degraded", "classical", "sequential", "joint", ev.OURS, ev.OURS_AUTO}
    # the contrast route inverts the contrast degradation better than doing nothing
    assert m[ev.OURS]["contrast"]["psnr"] > m["degraded"]["contrast"]["psnr"] + 3
    # the noise route is the identity: exactly the degraded score
    assert m[ev.OURS]["noise"]["psnr"] == pytest.approx(m["degraded"]["noise"]["psnr"], abs=1e-6)
    assert 0 < m["classical"]["noise"]["ssim"] <= 1
    # continual table: row after task t holds tasks 1..t
    assert list(res["continual"][ev.OURS]["contrast"]) == ["contrast"]
    assert list(res["continual"][ev.OURS]["noise"]) == list(TASKS)
    assert list(res["continual"]["sequential"]["noise"]) == list(TASKS)
    # sequential after noise is the identity: its contrast score falls back to the degraded one
    seq = res["continual"]["sequential"]
    assert seq["contrast"]["contrast"]["psnr"] > seq["noise"]["contrast"]["psnr"] + 3
    # router: the hand-made router is right on all tasks; auto routing then equals oracle routing
    r = res["router"]
    assert r["accuracy_tasks"] == 1.0
    assert r["confusion"]["contrast"]["contrast"] == 3 and r["confusion"]["clean"]["clean"] == 3
    assert "jpeg" in r["unknown_rate"]
    assert m[ev.OURS_AUTO]["contrast"]["psnr"] == pytest.approx(m[ev.OURS]["contrast"]["psnr"], abs=1e-6)
    assert res["routes"]["contrast"]["gmac_640x512"] == 0.5 and res["routes"]["contrast"]["ms_per_frame"] > 0

    text = ev.format_report(res)
    assert "after noise" in text and "router: accuracy" in text and "unknown rate on unseen 'jpeg'" in text
    png = ev.plot_report(res, setup["tmp"] / "plot.png")
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_baseline_without_checkpoint_is_a_clear_error(setup):
    with pytest.raises(ValueError, match="--joint PATH"):
        ev.evaluate(bundle=None, data=str(setup["data"]), baselines=("joint",))
    with pytest.raises(FileNotFoundError, match="joint.onnx"):
        ev.evaluate(bundle=None, data=str(setup["data"]), baselines=("joint",), joint=str(setup["data"]))


def test_cli_writes_json_and_plot(setup, capsys):
    out = setup["tmp"] / "res.json"
    png = setup["tmp"] / "cli.png"
    rc = cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", str(setup["data"]), "--compare", "--max-frames", "2",
                   "--baselines", "classical", "--json", str(out), "--plot", str(png)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["frames"] == 2 and "classical" in res["methods"] and png.is_file()
    assert "per task" in capsys.readouterr().out


def test_cli_rejects_bad_input(setup, capsys):
    assert cli.main(["eval", "--bundle", "none", "--data", str(setup["data"]), "--compare", "--baselines", "magic"]) == 2
    assert "unknown baselines" in capsys.readouterr().err
    assert cli.main(["eval", "--bundle", str(setup["tmp"] / "nowhere"), "--data", str(setup["data"])]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_ctrl_c_keeps_the_methods_scored_so_far_in_the_json_marked_partial(setup, capsys, monkeypatch):
    """Ctrl-C during tir eval --json lost every number measured before it: the methods scored so
    far are written, marked partial, with a message and exit 130."""
    from tir.engines.training import baselines

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(baselines, "classical_chain", interrupted)
    out = setup["tmp"] / "partial.json"
    rc = cli.main(["eval", "--bundle", "none", "--data", str(setup["data"]), "--compare", "--max-frames", "2",
                   "--baselines", "classical", "--json", str(out)])
    assert rc == 130
    res = json.loads(out.read_text())
    assert res["partial"] is True and res["interrupted"] is True and res["done"] == ["degraded"]
    assert set(res["methods"]) == {"degraded"} and res["frames"] == 2
    err = capsys.readouterr().err
    assert f"interrupted (Ctrl-C): wrote the methods measured before it (degraded) to {out}" in err


def test_ctrl_c_in_the_per_camera_table_keeps_the_sets_measured_so_far(setup, tmp_path, capsys, monkeypatch):
    import shutil

    from tir.engines.training import camera_eval
    from tir.engines.training import datasets as ds

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    first, second = tmp_path / "cam_a", tmp_path / "cam_b"
    shutil.copytree(setup["data"], first)
    shutil.copytree(setup["data"], second)
    calls = []

    def one_set(bundle, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"set": name, "frames": 3}

    monkeypatch.setattr(camera_eval, "evaluate_set", one_set)
    out = tmp_path / "cams.json"
    rc = cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", f"{first},{second}", "--json", str(out)])
    assert rc == 130
    res = json.loads(out.read_text())
    assert res["partial"] is True and res["done"] == ["dir:cam_a"] and res["not_done"] == ["dir:cam_b"]
    assert res["sets"] == {"dir:cam_a": {"set": "dir:cam_a", "frames": 3}}
    err = capsys.readouterr().err
    assert "marked \"partial\": true; not measured: dir:cam_b" in err
    # without --json: nothing to keep, said so, still 130
    calls.clear()
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", f"{first},{second}"]) == 130
    assert "nothing written (give --json PATH" in capsys.readouterr().err


def test_eval_option_table_names_every_option():
    from tir.tools import eval as eval_mode
    from tir.tools.cli import option_defaults

    assert set(option_defaults(eval_mode.add_arguments)) == set(eval_mode.EVAL_READS)


def _never_runs(*args, **kwargs):
    raise AssertionError("the evaluation ran: the ignored option was not refused")


@pytest.fixture
def own_folder(setup, tmp_path, monkeypatch):
    """A folder of the user's frames, registered (on the fly) in a copy of the set registry."""
    import shutil

    from tir.engines.training import datasets as ds

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    folder = tmp_path / "cam"
    shutil.copytree(setup["data"], folder)
    return folder


@pytest.mark.parametrize("extra", [[], ["--compare"], ["--sequence"]])
def test_split_on_a_folder_is_refused_a_folder_has_no_splits(setup, own_folder, capsys, monkeypatch, extra):
    """tir eval --data DIR --split val scored every frame of DIR and printed 'val split'."""
    from tir.engines.training import camera_eval, evaluate, sequence_eval

    for module, name in ((camera_eval, "evaluate_cameras"), (evaluate, "evaluate"),
                         (sequence_eval, "evaluate_sequences")):
        monkeypatch.setattr(module, name, _never_runs)
    bundle = "none" if extra == ["--compare"] else str(setup["bundle"])
    assert cli.main(["eval", "--bundle", bundle, "--data", str(own_folder), "--split", "val", *extra]) == 2
    err = capsys.readouterr().err
    assert "--split does nothing here" in err and "a folder of frames has no train/val/test split lists" in err


def test_sequence_refuses_every_option_it_does_not_read(setup, own_folder, capsys, monkeypatch):
    """tir eval --sequence ran with --baselines, --unseen, --leave-out-only (and the other
    methods-comparison and leave-out options) doing nothing; each is named, exit 2."""
    from tir.engines.training import sequence_eval

    monkeypatch.setattr(sequence_eval, "evaluate_sequences", _never_runs)
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", str(own_folder), "--sequence",
                     "--baselines", "none", "--unseen", "blur", "--leave-out-only", "a,b", "--tasks", "noise",
                     "--router-steps", "5", "--work-dir", str(own_folder)]) == 2
    err = capsys.readouterr().err
    for option in ("--baselines", "--unseen", "--leave-out-only", "--tasks", "--router-steps", "--work-dir"):
        assert f"tir eval: error: {option} does nothing here (tir eval --sequence" in err
    assert "--baselines does nothing here (tir eval --sequence of folders without split lists): it acts in the " \
           "methods comparison" in err


def test_each_eval_run_accepts_the_options_it_reads_and_refuses_the_others(own_folder):
    import argparse

    from tir.edge.errors import UsageError
    from tir.tools import eval as eval_mode

    parser = argparse.ArgumentParser()
    eval_mode.add_arguments(parser)

    def check(argv, run):
        eval_mode.refuse_ignored(parser.parse_args(argv), run)

    check(["--data", "hit_uav,anti_uav", "--split", "val", "--no-fpn-gate", "--router-only"], "cameras")
    from tir.engines.training.datasets import register_folder

    mine = register_folder(own_folder)   # as tir eval registers it: a set without splits
    check(["--data", f"hit_uav,{mine}", "--split", "val"], "cameras")   # read for the set with splits
    with pytest.raises(UsageError, match="--split does nothing here"):
        check(["--data", mine, "--split", "val"], "cameras")
    check(["--split", "val", "--baselines", "none", "--unseen", "blur", "--tasks", "noise"], "compare")
    check(["--data", "hit_uav", "--sequence", "--segment-frames", "8", "--split", "train"], "sequence")
    check(["--leave-out", "a,b", "--leave-out-only", "a", "--work-dir", "w", "--router-steps", "5"], "leave-out")
    for argv, run, option in ((["--data", "hit_uav", "--compare"], "cameras", "--compare"),
                              (["--data", "hit_uav", "--baselines", "none"], "cameras", "--baselines"),
                              (["--leave-out", "a,b", "--plot", "x.png"], "leave-out", "--plot"),
                              (["--leave-out", "a,b", "--split", "val"], "leave-out", "--split"),
                              (["--no-tone-align"], "compare", "--no-tone-align")):
        with pytest.raises(UsageError, match=f"{option} does nothing here"):
            check(argv, run)


def test_split_on_the_folder_of_a_registered_set_names_the_set(setup, tmp_path, capsys, monkeypatch):
    import shutil

    from tir.engines.training import camera_eval
    from tir.engines.training import datasets as ds

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    monkeypatch.setenv("TIR_DATA_ROOT", str(tmp_path))
    monkeypatch.setattr(camera_eval, "evaluate_cameras", _never_runs)
    shutil.copytree(setup["data"], tmp_path / "hit_uav")
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", str(tmp_path / "hit_uav"),
                     "--split", "val"]) == 2
    assert f"{tmp_path / 'hit_uav'} is the folder of the registered set hit_uav: --data hit_uav --split val" \
        in capsys.readouterr().err


def test_ctrl_c_in_sequence_keeps_the_sets_streamed_so_far(setup, tmp_path, capsys, monkeypatch):
    import shutil

    from tir.engines.training import datasets as ds
    from tir.engines.training import sequence_eval

    monkeypatch.setattr(ds, "DATASETS", dict(ds.DATASETS))
    for name in ("cam_a", "cam_b", "cam_c"):
        shutil.copytree(setup["data"], tmp_path / name)
    calls = []

    def one_set(bundle, name, **kwargs):
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {"set": name, "segments": []}

    monkeypatch.setattr(sequence_eval, "evaluate_sequence", one_set)
    out = tmp_path / "seq.json"
    data = ",".join(str(tmp_path / n) for n in ("cam_a", "cam_b", "cam_c"))
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", data, "--sequence", "--json", str(out)]) == 130
    res = json.loads(out.read_text())
    assert res["partial"] is True and res["done"] == ["dir:cam_a"] and res["not_done"] == ["dir:cam_b", "dir:cam_c"]
    assert "not measured: dir:cam_b, dir:cam_c" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--router-only"], ["--sequence"], ["--no-contrast-gate"], ["--no-reference"],
                                   ["--compare"]])
def test_a_data_folder_that_is_not_there_is_named_before_any_option_is_judged(setup, own_folder, capsys, monkeypatch,
                                                                              extra):
    """tir eval --data /path/typo --router-only said '--router-only does nothing here (the methods
    comparison on a folder) ... drop it' (and --sequence 'does nothing here: it acts in --sequence'):
    a mistyped or missing folder was read as a methods comparison, and a valid option refused."""
    import os

    from tir.engines.training import camera_eval, evaluate, sequence_eval

    for module, name in ((camera_eval, "evaluate_cameras"), (evaluate, "evaluate"),
                         (sequence_eval, "evaluate_sequences")):
        monkeypatch.setattr(module, name, _never_runs)
    typo = own_folder.parent / "cma"
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", str(typo), *extra]) == 2
    err = capsys.readouterr().err
    assert f"no such file or folder: {typo}; did you mean {own_folder}" in err and "does nothing here" not in err
    fifo = own_folder.parent / "frames.png"
    os.mkfifo(fifo)
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", str(fifo), *extra]) == 2
    err = capsys.readouterr().err
    assert f"{fifo} is a FIFO (named pipe), not a folder" in err and "does nothing here" not in err


def test_no_reference_on_a_registered_set_of_clean_frames_is_refused(setup, own_folder, capsys, monkeypatch):
    """tir eval --data hit_uav --no-reference printed the ordinary table (router accuracy against
    hit_uav's clean frames), exit 0: --no-reference acts on folders only, and did nothing."""
    from tir.engines.training import camera_eval, sequence_eval

    monkeypatch.setattr(camera_eval, "evaluate_cameras", _never_runs)
    monkeypatch.setattr(sequence_eval, "evaluate_sequences", _never_runs)
    assert cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", f"{own_folder},hit_uav", "--no-reference",
                     "--router-only"]) == 2
    err = capsys.readouterr().err
    assert "tir eval: error: --no-reference does nothing for hit_uav" in err and "drop --no-reference" in err


def test_router_only_refuses_the_options_of_restoration():
    """tir eval --data SET --router-only --no-tone-align (or --no-true-routes) ran, exit 0: the
    router-only table restores nothing, so neither option did anything."""
    import argparse

    from tir.edge.errors import UsageError
    from tir.tools import eval as eval_mode

    parser = argparse.ArgumentParser()
    eval_mode.add_arguments(parser)
    for option in ("--no-tone-align", "--no-true-routes"):
        with pytest.raises(UsageError, match=f"{option} does nothing here \\(tir eval: the per-camera table with "
                                             "--router-only\\): it acts in the per-camera table \\(--data SET\\[,SET\\] or --data DIR\\) without --router-only"):
            eval_mode.refuse_ignored(parser.parse_args(["--data", "hit_uav", "--router-only", option]), "cameras")
        eval_mode.refuse_ignored(parser.parse_args(["--data", "hit_uav", option]), "cameras")
    eval_mode.refuse_ignored(parser.parse_args(["--data", "hit_uav", "--sequence", "--no-tone-align"]), "sequence")
    eval_mode.refuse_ignored(parser.parse_args(["--data", "hit_uav", "--router-only", "--no-blur-gate"]), "cameras")


def test_split_with_leave_out_is_refused_without_the_folder_hint():
    """tir eval --leave-out SETS --split val was told 'a folder of frames has no train/val/test split
    lists ... give a registered set by name, --data NAME': the sets are registered; leave-out measures
    each left-out set's test split whatever --split says."""
    import argparse

    from tir.edge.errors import UsageError
    from tir.tools import eval as eval_mode

    parser = argparse.ArgumentParser()
    eval_mode.add_arguments(parser)
    with pytest.raises(UsageError) as info:
        eval_mode.refuse_ignored(parser.parse_args(["--leave-out", "hit_uav,anti_uav", "--split", "val"]), "leave-out")
    assert "--split does nothing here (tir eval --leave-out)" in str(info.value)
    assert "a folder of frames" not in str(info.value) and "--data NAME" not in str(info.value).split("; drop it")[1]


def test_ctrl_c_in_the_methods_comparison_lists_what_was_not_measured(setup, capsys, monkeypatch):
    """Ctrl-C in tir eval's methods comparison wrote "not_done": [] with the bundle's routes and
    router not measured (router: null): a reader of the partial JSON saw nothing missing."""
    from tir.engines.training import evaluate as evaluate_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate_module, "run_engine", interrupted)   # the first route of ours
    out = setup["tmp"] / "partial-methods.json"
    rc = cli.main(["eval", "--bundle", str(setup["bundle"]), "--data", str(setup["data"]), "--compare",
                   "--max-frames", "2", "--baselines", "classical", "--json", str(out)])
    assert rc == 130
    res = json.loads(out.read_text())
    assert res["done"] == ["degraded", "classical"] and "planned" not in res
    assert res["not_done"][0] == "ours" and "router" in res["not_done"] and "ours (auto route)" in res["not_done"]
    assert "not measured: ours" in capsys.readouterr().err
