"""Fine-tuning the shipped student from its ONNX against the routes with a loss in dB per crop
(engines/training/student_tune.py, ``tir distill --init-from onnx``)."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

try:   # the `qat` extra; onnx2torch imports torchvision, which fails (RuntimeError) on a torch build it does not match
    import onnx2torch  # noqa: F401
except Exception as exc:  # noqa: BLE001
    pytest.skip(f"needs onnx2torch with a torchvision that matches torch (pip install -e '.[qat]'): {exc}",
                allow_module_level=True)

from tir.engines.bundle import load_bundle  # noqa: E402
from tir.engines.training import student_tune as st  # noqa: E402
from tir.engines.training.qat import load_onnx  # noqa: E402
from tir.tools import cli  # noqa: E402

from test_calibrate_student import bundles  # noqa: E402,F401  (the tiny student bundle: noise, blur routes)


def _frames(n, h=64, w=64, seed=0):
    """Smooth synthetic frames in [0, 1] (a gradient plus blobs)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(n):
        f = 0.3 + 0.3 * xx / w + 0.1 * yy / h
        for _ in range(3):
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 12)
            f = f + 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        out.append(np.clip(f, 0, 1))
    return np.stack(out).astype(np.float32)


def test_db_loss_counts_each_crop_by_its_error_in_db():
    target = torch.zeros(2, 1, 4, 4)
    small, large = torch.full((1, 1, 4, 4), 1e-3), torch.full((1, 1, 4, 4), 1e-1)
    loss = st.db_loss(torch.cat([small, large]), target)
    assert float(loss) == pytest.approx((np.log10(1e-6) + np.log10(1e-2)) / 2, abs=1e-4)
    # ten times the small crop's error costs as much as ten times the large crop's: 20 dB either way
    a = st.db_loss(torch.cat([10 * small, large]), target)
    b = st.db_loss(torch.cat([small, 10 * large]), target)
    assert float(a - loss) == pytest.approx(1.0, abs=1e-3) and float(b - loss) == pytest.approx(1.0, abs=1e-3)
    # the batch mean of L1 (distill.loss_terms' form) barely sees the small crop's change
    l1 = lambda p: float((p - target).abs().mean())  # noqa: E731
    assert l1(torch.cat([10 * small, large])) - l1(torch.cat([small, large])) < 0.1 * (
        l1(torch.cat([small, 10 * large])) - l1(torch.cat([small, large])))


def test_db_loss_tiles_a_frame_and_weighs_each_tile_in_db():
    target = torch.zeros(1, 1, 8, 12)
    pred = torch.zeros(1, 1, 8, 12)
    pred[..., :4, :4] = 1e-3          # one flat-ish tile with a small error, one with a large one
    pred[..., 4:, 8:] = 1e-1
    tiles = [1e-6, 0, 0, 0, 0, 1e-2]   # six 4x4 tiles, row by row
    expected = np.mean([np.log10(m + 1e-10) for m in tiles])
    assert float(st.db_loss(pred, target, tile=4)) == pytest.approx(expected, abs=1e-4)
    # a rest narrower than the tile is left out; a tile larger than the frame is the whole frame
    assert float(st.db_loss(pred[..., :10], target[..., :10], tile=4)) == pytest.approx(
        np.mean([np.log10(m + 1e-10) for m in (1e-6, 0, 0, 0)]), abs=1e-4)
    assert float(st.db_loss(pred, target, tile=64)) == pytest.approx(float(st.db_loss(pred, target)), abs=1e-6)


class _Parts(nn.Module):
    """A student-like net: a stem, a tone head and a field head (module parameters) and a folded
    constant conv ``down_w`` (a buffer, exported as an initialiser without a dot)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Module()
        self.net.stem = nn.Conv2d(4, 4, 3, padding=1)
        self.net.tone = nn.Module()
        self.net.tone.fc1 = nn.Conv2d(4, 4, 1)
        self.net.field = nn.Module()
        self.net.field.out = nn.Conv2d(4, 4, 3, padding=1)
        self.register_buffer("down_w", torch.randn(4, 1, 2, 2))

    def forward(self, x):
        h = nn.functional.conv2d(x, self.down_w, stride=2)
        return self.net.field.out(self.net.stem(h) + self.net.tone.fc1(h))


def test_trainable_convs_are_module_parameters_outside_the_frozen_parts(tmp_path):
    path = tmp_path / "parts.onnx"
    torch.onnx.export(_Parts(), (torch.rand(1, 1, 8, 8),), str(path), input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False)
    gm = load_onnx(path)
    names = sorted(c.onnx_inputs[1] for c in st.trainable_convs(gm))
    assert names == ["net.stem.weight"]
    assert sorted(c.onnx_inputs[1] for c in st.trainable_convs(gm, frozen=())) == [
        "net.field.out.weight", "net.stem.weight", "net.tone.fc1.weight"]


def test_choice_is_the_best_mean_that_keeps_every_guarded_task():
    h = [{"step": 0, "psnr": {"blur": 30.0, "noise": 25.0}, "mean": 27.5},
         {"step": 100, "psnr": {"blur": 32.0, "noise": 24.8}, "mean": 28.4},   # noise −0.2 dB: refused
         {"step": 200, "psnr": {"blur": 31.0, "noise": 24.95}, "mean": 27.975},
         {"step": 300, "psnr": {"blur": 30.5, "noise": 25.0}, "mean": 27.75}]
    assert st.choose(h, ["noise"], 0.1)["step"] == 200
    assert st.choose(h, [], 0.1)["step"] == 100
    assert st.choose(h[:2], ["noise"], 0.1)["step"] == 0   # the shipped student when nothing qualifies
    with pytest.raises(ValueError):
        st.choose([], [], 0.1)


def _initialisers(path):
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def test_tune_learns_from_the_routes_and_writes_a_verified_bundle(bundles, tmp_path):  # noqa: F811
    _, src = bundles
    s = st.TuneSettings(bundle=str(src.path), steps=40, tile=16, batch=2, lr=3e-3, max_frames=4,
                        val_limit=2, val_every=20, refresh_every=10, threads=1, task_weights={"blur": 3})
    tuner = st.StudentTuner(s, tmp_path / "work", _frames(6), _frames(3, seed=1))
    assert tuner.guard == []    # the tiny bundle has no auto_deploy table: nothing runs the student
    assert tuner.sampling["blur"] == pytest.approx(0.9 * 3 / 4)
    state = tuner.train(progress=False)
    assert [h["step"] for h in state["history"]] == [0, 20, 40]
    assert state["best"] == st.choose(state["history"], [], 0.1)
    assert state["loss_last"] < state["loss_first"]       # it moves towards the routes' outputs
    assert state["parity_max_abs_err"] < 1e-4
    # the chosen weights are the ones written: torch on the chosen entry's val frames agrees
    assert tuner.evaluate() == pytest.approx(state["best"]["psnr"], abs=1e-3)
    before, after = _initialisers(src.student_path), _initialisers(tmp_path / "work" / "student.onnx")
    assert before.keys() == after.keys()
    changed = sorted(k for k in before if not np.array_equal(before[k], after[k]))
    assert changed and set(changed) <= set(state["trained"]) | {n.replace("weight", "bias") for n in state["trained"]}
    assert np.array_equal(before["table"] if "table" in before else 0, after["table"] if "table" in after else 0)
    out = tuner.write(tmp_path / "out")
    b = load_bundle(out.path)   # hash-checked
    assert b.student["sha256"] != src.student["sha256"]
    assert [t["sha256"] for t in b.manifest["tasks"]] == [t["sha256"] for t in src.manifest["tasks"]]
    assert b.student["training"]["init_from"] == "onnx"
    assert set(b.student["metrics"]["val_psnr"]) == {"noise", "blur"}
    assert b.student["metrics"]["val_frames"] == 3
    json.dumps(b.manifest)


def test_tune_refuses_unknown_guard_tasks_and_a_bad_tile(bundles, tmp_path):  # noqa: F811
    _, src = bundles
    with pytest.raises(ValueError, match="guard"):
        st.StudentTuner(st.TuneSettings(bundle=str(src.path), guard_tasks=["CB"]), tmp_path / "w",
                        _frames(2), _frames(1))
    with pytest.raises(ValueError, match="at least 1"):
        st.StudentTuner(st.TuneSettings(bundle=str(src.path), tile=0), tmp_path / "w", _frames(2), _frames(1))


def test_tir_distill_init_from_onnx(bundles, tmp_path, monkeypatch, capsys):  # noqa: F811
    from tir.engines.training import train as train_mod

    _, src = bundles
    monkeypatch.setattr(train_mod, "load_split", lambda data, split: _frames(3, seed=2 if split == "val" else 3))
    out = tmp_path / "o"
    args = ["distill", "--bundle", str(src.path), "--out", str(out), "--work-dir", str(tmp_path / "w"),
            "--init-from", "onnx", "--steps", "4", "--val-every", "2", "--crop", "32", "--batch", "2",
            "--max-frames", "2", "--val-limit", "2", "--threads", "1", "--task-weights", "blur=2"]
    assert cli.main(args) == 0, capsys.readouterr()
    text = capsys.readouterr().out
    assert "fine-tuned from its ONNX: 4 steps" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["student"]["training"]["init_from"] == "onnx"
    settings = manifest["student"]["training"]["settings"]
    assert settings["lr"] == st.TuneSettings.lr   # the onnx default, not 2e-3
    assert settings["batch"] == 2 and settings["tile"] == 32
    assert cli.main([*args[:4], str(tmp_path / "o2"), *args[5:], "--init-weights", "x.pt"]) == 2
    assert "--init-weights does not apply" in capsys.readouterr().err


def test_anchor_auto_is_the_tasks_where_the_student_beats_its_route():
    student = {"metrics": {"val_psnr": {"noise": 25.6, "blur": 37.2, "CBN": 19.69},
                           "teacher_val_psnr": {"noise": 25.4, "blur": 39.1, "CBN": 19.68}}}
    assert st.anchor_tasks(student, ["blur", "noise", "CBN"]) == ["noise", "CBN"]
    with pytest.raises(ValueError, match="anchor auto"):
        st.anchor_tasks({"metrics": {}}, ["noise"])


def test_anchored_task_learns_the_shipped_students_own_output(bundles, tmp_path):  # noqa: F811
    """An anchored task's teacher is the source student (one-hot prompt): at step 0 its dB loss is
    at the floor (torch vs ONNX Runtime of the same graph), while the route's target is not; so
    teaching blur cannot pull noise towards the noise route, and noise moves less."""
    _, src = bundles
    frames, val = _frames(6), _frames(3, seed=1)
    base = dict(bundle=str(src.path), steps=30, tile=16, batch=2, lr=3e-3, max_frames=4, val_limit=2,
                val_every=30, refresh_every=10, threads=1, task_weights={"blur": 1, "noise": 1})
    free = st.StudentTuner(st.TuneSettings(**base), tmp_path / "free", frames, val)
    anchored = st.StudentTuner(st.TuneSettings(**base, anchor=["noise"]), tmp_path / "anch", frames, val)
    assert anchored.anchor == ["noise"] and "noise" not in anchored.teachers
    x = torch.from_numpy(frames[:1, None] * 0.9 + 0.05)
    w = torch.from_numpy(anchored.prompt(["noise"]))
    with torch.no_grad():
        own = anchored.gm(x, w)
    to_self = float(st.db_loss(own, torch.from_numpy(anchored.teacher("noise", x.numpy())), 16))
    to_route = float(st.db_loss(own, torch.from_numpy(free.teacher("noise", x.numpy())), 16))
    assert to_self < -8 and to_route > to_self + 2     # 1e-8 MSE floor vs the route's 20 dB+ away
    assert anchored.teacher("blur", x.numpy()) == pytest.approx(free.teacher("blur", x.numpy()))
    # trained the same way, the anchored noise output stays nearer the shipped one
    s_free, s_anch = free.train(progress=False), anchored.train(progress=False)
    assert s_anch["anchor"] == ["noise"] and s_free["anchor"] == []
    with torch.no_grad():
        drift_free = float(((free.gm(x, w) - own) ** 2).mean())
        drift_anch = float(((anchored.gm(x, w) - own) ** 2).mean())
    assert drift_anch < drift_free
    # the val table still compares with the route, not with the anchor
    table = anchored.val_table(tmp_path / "anch" / "student.onnx")
    assert table["teacher_val_psnr"]["noise"] == pytest.approx(
        free.val_table(tmp_path / "free" / "student.onnx")["teacher_val_psnr"]["noise"])
    with pytest.raises(ValueError, match="anchor tasks"):
        st.StudentTuner(st.TuneSettings(**{**base, "anchor": ["CB"]}), tmp_path / "w", frames, val)


def test_tir_distill_anchor_option(bundles, tmp_path, monkeypatch, capsys):  # noqa: F811
    from tir.engines.training import train as train_mod

    _, src = bundles
    monkeypatch.setattr(train_mod, "load_split", lambda data, split: _frames(3, seed=2 if split == "val" else 3))
    args = ["distill", "--bundle", str(src.path), "--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w"),
            "--init-from", "onnx", "--steps", "2", "--val-every", "2", "--crop", "32", "--max-frames", "2",
            "--threads", "1", "--anchor", "noise"]
    assert cli.main(args) == 0, capsys.readouterr()
    settings = json.loads((tmp_path / "o" / "manifest.json").read_text())["student"]["training"]["settings"]
    assert settings["anchor"] == ["noise"] and settings["val_limit"] == 24
    bad = ["distill", "--bundle", str(src.path), "--out", str(tmp_path / "o3"), "--init-from", "none", "--anchor", "noise"]
    assert cli.main(bad) == 2
    assert "--anchor, --train-heads, --train-prompts and --prompts-only apply only" in capsys.readouterr().err


def test_tir_distill_train_heads_unfreezes_the_tone_and_field_parts(bundles, tmp_path, monkeypatch, capsys):  # noqa: F811
    from tir.engines.training import train as train_mod

    _, src = bundles
    monkeypatch.setattr(train_mod, "load_split", lambda data, split: _frames(3, seed=2 if split == "val" else 3))
    trained = {}
    for name, extra in (("frozen", []), ("heads", ["--train-heads"])):
        args = ["distill", "--bundle", str(src.path), "--out", str(tmp_path / name), "--work-dir",
                str(tmp_path / f"{name}.work"), "--init-from", "onnx", "--steps", "2", "--val-every", "2", "--crop", "32",
                "--max-frames", "2", "--val-limit", "2", "--threads", "1", *extra]
        assert cli.main(args) == 0, capsys.readouterr()
        training = json.loads((tmp_path / name / "manifest.json").read_text())["student"]["training"]
        trained[name] = set(training["trained"])
        assert training["settings"]["frozen"] == ([] if extra else list(st.FROZEN_PARTS))
    # the tiny student has no tone or field head: the same convs either way (the _Parts test above
    # checks that an empty ``frozen`` returns the heads' convs)
    assert trained["frozen"] == trained["heads"]


def test_prompt_rows_auto_are_the_tasks_not_anchored():
    prompts = ["contrast", "blur", "noise", "CB", "clean"]
    tasks = prompts[:-1]
    assert st.prompt_rows("auto", prompts, ["noise"], tasks) == ["contrast", "blur", "CB"]
    assert st.prompt_rows(None, prompts, [], tasks) == [] and st.prompt_rows([], prompts, [], tasks) == []
    assert st.prompt_rows(["blur", "clean"], prompts, ["noise"], tasks) == ["blur", "clean"]
    with pytest.raises(ValueError, match="not slots"):
        st.prompt_rows(["BN"], prompts, [], tasks)
    with pytest.raises(ValueError, match="anchored"):
        st.prompt_rows(["noise"], prompts, ["noise"], tasks)
    with pytest.raises(ValueError, match="'auto' or a list"):
        st.prompt_rows("all", prompts, [], tasks)


def test_trained_prompt_row_moves_only_its_own_slots_output(bundles, tmp_path):  # noqa: F811
    """With only the blur row of the prompt table trained (no conv), steps on blur frames change
    the blur prompt's output, while the written ONNX gives the noise prompt's output of the source
    student exactly (ONNX Runtime, bit for bit): p = w·P, and the noise row did not move."""
    import onnxruntime as ort

    _, src = bundles
    frames, val = _frames(6), _frames(3, seed=1)
    settings = st.TuneSettings(bundle=str(src.path), steps=5, tile=16, batch=2, lr=5e-2, max_frames=4, val_limit=2,
                               task_weights={"blur": 1, "noise": 1}, threads=1, prompt_slots=["blur"], convs=False)
    tuner = st.StudentTuner(settings, tmp_path / "w", frames, val)
    assert tuner.convs == [] and tuner.params == [tuner.table] and tuner.prompt_slots == ["blur"]
    before = tuner.table.detach().clone()
    pools = st._Pools(tuner.train_clean, tuner.specs, 4, 0, tuner.teacher)
    opt = torch.optim.Adam(tuner.params, lr=5e-2)
    rng = np.random.default_rng(0)
    for _ in range(6):
        x, w, t = tuner.draw(pools, rng)
        loss = st.db_loss(tuner.gm(x, w), t, 16)
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved = (tuner.table.detach() - before).abs().sum(1)
    k = tuner.prompts.index("blur")
    assert moved[k] > 0 and float(moved.sum() - moved[k]) == 0.0
    path = tuner.export()
    assert tuner.table_init in tuner.state["written"] and tuner.state["parity_max_abs_err"] <= 1e-4
    table = [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer if i.name == tuner.table_init][0]
    np.testing.assert_array_equal(table, tuner.table.detach().numpy())
    new, old = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (path, tuner.source))
    x = frames[:1, None].copy()
    for slot, same in (("noise", True), ("blur", False)):
        w = tuner.prompt([slot])
        a, b = (s.run(None, {"input": x, "prompt": w})[0] for s in (new, old))
        assert np.array_equal(a, b) == same, slot
    with pytest.raises(ValueError, match="nothing to train"):
        st.StudentTuner(st.TuneSettings(bundle=str(src.path), convs=False, threads=1), tmp_path / "w2", frames, val)


def test_tir_distill_prompts_only_needs_train_prompts(bundles, tmp_path, capsys):  # noqa: F811
    _, src = bundles
    args = ["distill", "--bundle", str(src.path), "--out", str(tmp_path / "o"), "--init-from", "onnx", "--prompts-only"]
    assert cli.main(args) == 2
    assert "--prompts-only needs --train-prompts" in capsys.readouterr().err
