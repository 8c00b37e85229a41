"""`tir learn` from a discover proposal (issue 13 item 4, 6): the router gains a codebook row,
earlier routes stay bit-identical, the INT8 gate's verdict and the final PSNR are reported, a rerun
continues. Tiny preset, synthetic frames, a hand-made router (no router training)."""
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from tir.engines.router import cosine_scores
from tir.engines.training.router_train import add_router_class
from tir.engines.training.train import ContinualTrainer, TrainSettings

torch.set_num_threads(1)

H, W = 64, 96


def frames(n=6, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / float(H)
    return np.stack([np.clip(0.4 + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) + 0.05 * rng.random((H, W)), 0, 1)
                     for k in range(n)]).astype(np.float32)


class StatsRouter(torch.nn.Module):
    """Embedding from frame statistics: mean, spread, fine detail, share of saturated pixels."""

    def forward(self, x):
        m = x.mean(dim=(2, 3))
        s = x.std(dim=(2, 3))
        dx = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(2, 3))
        ext = ((x < 0.02) | (x > 0.98)).float().mean(dim=(2, 3))
        return F.normalize(torch.cat([m, 4 * s, 10 * dx, 20 * ext, 0.2 * torch.ones_like(m)], 1), dim=1)


def embed_np(batch):
    with torch.no_grad():
        return StatsRouter()(torch.from_numpy(np.asarray(batch, np.float32))).numpy()


def router_entry(classes, clean, seed=0):
    """Codebook rows = normalised mean embedding per class; thresholds a little below the
    class's own minimum similarity."""
    from tir.engines import degrade as deg

    rows, thresholds = [], []
    for k, c in enumerate(classes):
        x = clean if c == "clean" else deg.degrade(clean, c, np.random.default_rng([seed, k]))
        e = embed_np(x[:, None])
        row = e.mean(0) / np.linalg.norm(e.mean(0))
        rows.append(row)
        thresholds.append(float((e @ row).min() - 0.01))
    return {"codebook": np.round(np.stack(rows), 6).tolist(), "tasks": list(classes), "thresholds": thresholds,
            "threshold": min(thresholds), "temperature": 0.1, "input_size": [W, H],
            "metrics": {"threshold_percentile": 0.5}}


NEW = {"op": "pixel_dropout", "dead_p": 0.03, "hot_p": 0.03}


def test_add_router_class_adds_one_row_and_measures_stolen_frames():
    clean = frames(8)
    entry = router_entry(["contrast", "blur", "clean"], clean)
    from tir.engines.degrade import DegradationSpec

    grown, report = add_router_class(embed_np, entry, "dots", DegradationSpec("dots", [NEW]), clean, draws=2,
                                     progress=False, max_stolen=None)
    assert grown["tasks"] == ["contrast", "blur", "clean", "dots"]
    assert grown["codebook"][:3] == entry["codebook"]                    # old rows unchanged
    assert grown["thresholds"][:3] == entry["thresholds"]
    assert grown["threshold"] == pytest.approx(min(grown["thresholds"]))
    # the threshold follows the percentile rule on the new class's frames nearest to its row
    from tir.engines import degrade as deg
    from tir.engines.router import degraded_batches, prepare_frames
    spec = deg.DegradationSpec("dots", [NEW])
    x = np.concatenate([b for _, b in degraded_batches(prepare_frames(clean, (W, H))[:, 0], ["dots"], 2, 3000,
                                                        progress=False, variants={"dots": [spec]})])
    sims = cosine_scores(embed_np(x), np.asarray(grown["codebook"]))
    own = sims[sims.argmax(1) == 3, 3]
    assert report["threshold"] == pytest.approx(np.percentile(own, 0.5))
    assert report["new_class"]["unknown_before"] == 1.0                  # the old router did not know it
    assert report["new_class"]["routed_after"] > 0.9
    assert set(report["earlier_classes"]) == {"contrast", "blur", "clean"}
    for name, c in report["earlier_classes"].items():
        assert c["frames"] == (8 if name == "clean" else 16) and 0.0 <= c["stolen"] <= 1.0  # clean: once
        assert c["routed_after"] <= c["routed_before"] + 1e-12          # a new row can only take frames
    assert grown["added"] == [report]
    with pytest.raises(ValueError, match="already has a class 'blur'"):
        add_router_class(embed_np, entry, "blur", spec, clean, progress=False)


def test_the_guard_keeps_a_new_row_next_to_clean_from_taking_clean_frames():
    from tir.engines.degrade import DegradationSpec

    clean = frames(8)
    entry = dict(router_entry(["contrast", "blur", "clean"], clean), temperature=0.01)
    faint = DegradationSpec("faint", [{"op": "contrast", "contrast": -0.1, "brightness": 0.05}])
    _, free = add_router_class(embed_np, entry, "faint", faint, clean, draws=2, progress=False, max_stolen=None)
    assert free["earlier_classes"]["clean"]["stolen"] > 0.1            # the faint class sits next to clean
    grown, guarded = add_router_class(embed_np, entry, "faint", faint, clean, draws=2, progress=False)
    assert guarded["threshold_rule"].startswith("guard") and guarded["threshold"] > free["threshold"]
    assert all(c["stolen"] <= 0.01 for c in guarded["earlier_classes"].values())
    # the frames it would have taken keep the verdict they had: nothing else changes
    for c in guarded["earlier_classes"].values():
        assert c["routed_after"] == pytest.approx(c["routed_before"]) and c["unknown_after"] == c["unknown_before"]
    assert grown["thresholds"][-1] == guarded["threshold"]


def test_an_added_row_below_its_threshold_leaves_the_old_verdict():
    from tir.engines.router import classify

    book = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.6, 0.0, 0.8]])   # row 2 added next to row 0
    e = np.array([[0.8, 0.0, 0.6],     # nearest the added row, below its threshold 0.99: old verdict
                  [0.6, 0.0, 0.8],     # on the added row: claimed
                  [0.0, 1.0, 0.1]])
    plain = classify(e, book, ["a", "b", "new"], [0.5, 0.5, 0.99], 0.1)
    kept = classify(e, book, ["a", "b", "new"], [0.5, 0.5, 0.99], 0.1, added=[2])
    old = classify(e, book[:2], ["a", "b"], [0.5, 0.5], 0.1)
    assert plain[0]["task"] == "unknown"                                 # without the rule
    assert kept[0] == old[0] and kept[0]["task"] == "a"
    assert kept[1]["task"] == "new" and kept[2] == old[2]


def test_schema_accepts_added_rows_and_version_and_refuses_bad_ones():
    from tir.engines.bundle import validate_manifest

    base = {"format_version": 1, "name": "b", "tasks": [{"name": "a", "file": "route-a.onnx", "sha256": "0" * 64}],
            "normalisation": {}, "files": {}, "version": 3,
            "router": {"file": "router.onnx", "sha256": "1" * 64, "codebook": [[1.0, 0.0], [0.0, 1.0]],
                       "tasks": ["a", "new"], "thresholds": [0.5, 0.6], "added": [{"task": "new", "stolen_total": 0.0}]}}
    assert validate_manifest(base) == []
    bad = json.loads(json.dumps(base))
    bad["router"]["added"] = [{"task": "elsewhere"}]
    bad["version"] = 0
    problems = validate_manifest(bad)
    assert any("router.added" in p for p in problems) and any(p.startswith("version 0") for p in problems)


def test_final_val_psnr_is_the_exported_routes():
    from tir.tools.learn import final_val_psnr

    assert final_val_psnr({"val_psnr_finetuned": 30.0}) == 30.0
    field = {"val_psnr_finetuned": 24.35, "val_psnr_before_field": 24.35, "val_psnr_field": 33.36}
    assert final_val_psnr({**field, "field_kept": True}) == 33.36
    assert final_val_psnr({**field, "val_psnr_field": 20.0, "field_kept": False}) == 24.35


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A tiny two-route bundle with a StatsRouter router (contrast, blur, clean)."""
    from tir.engines.bundle import load_bundle, write_bundle
    from tir.engines.training.export import export_onnx

    root = tmp_path_factory.mktemp("learn")
    clean = frames()
    settings = TrainSettings(preset="tiny", tasks=("contrast", "blur"), steps=2, pretrain_steps=2, finetune_steps=1,
                             crop=32, batch=2, prune_samples=2, router=False, threads=1, val_limit=2,
                             bundle_dir=str(root / "plain"))
    ContinualTrainer(settings, root / "work", clean, clean[:2]).run()
    plain = load_bundle(root / "plain")
    export_onnx(StatsRouter(), root / "router.onnx", input_shape=(1, 1, H, W))
    manifest = json.loads((plain.path / "manifest.json").read_text())
    manifest.pop("files")
    manifest["router"] = router_entry(["contrast", "blur", "clean"], clean)
    out = root / "bundle"
    out.mkdir()
    (out / "model.pt").write_bytes((plain.path / "model.pt").read_bytes())
    write_bundle(out, {t: plain.route_path(t) for t in plain.tasks}, root / "router.onnx", manifest)
    return out, clean


def run_route(bundle, task, x):
    sess = ort.InferenceSession(str(bundle.route_path(task)), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_learn_from_a_proposal_end_to_end(tiny_bundle, tmp_path):
    from tir.engines.bundle import load_bundle
    from tir.engines.training.train import evaluate_route
    from tir.tools.learn import final_val_psnr, learn, read_spec, task_name

    src, clean = tiny_bundle
    proposal = tmp_path / "proposed-group-0.json"
    proposal.write_text(json.dumps({"name": "new-group-0", "description": "fitted", "steps": [NEW],
                                    "fit": {"fits": True, "residual": 0.001}}))
    spec, _ = read_spec(str(proposal))
    name = task_name(None, spec)
    assert name == "new-group-0"
    old = load_bundle(src)
    x = clean[:1, None].copy()
    before = {t: run_route(old, t, x) for t in old.tasks}
    kw = dict(steps=3, finetune_steps=1, crop=32, batch=2, prune_samples=2, threads=1, val_limit=2)
    summary = learn(src, spec, name, tmp_path / "out", tmp_path / "work", kw, init="contrast",
                    router_draws=2, gate_frames=2, train_clean=clean, val_clean=clean[:2], progress=False)
    grown = load_bundle(tmp_path / "out")
    assert grown.tasks == ["contrast", "blur", name] and grown.version == 2 == summary["version"]
    # zero forgetting on the learn-from-proposal path: earlier routes bit-identical
    for t in old.tasks:
        assert np.array_equal(run_route(grown, t, x), before[t]), t
    # the router knows the new task: one more row, earlier rows and thresholds unchanged
    r = grown.router
    assert r["tasks"] == ["contrast", "blur", "clean", name]
    assert r["codebook"][:3] == old.router["codebook"] and r["thresholds"][:3] == old.router["thresholds"]
    assert r["added"][0]["task"] == name and "stolen_total" in r["added"][0]
    assert summary["router"]["new_class"]["routed_after"] > 0.5
    # the INT8 gate's verdict on the new route, with the reason
    info = grown.task_info(name)
    assert info["precision"] in ("int8", "fp32") and info["int8"]["reason"]
    assert info["int8"]["gate"]["rule"] == "vs-clean" and info["int8"]["gate"]["frames"] == 2
    # the summary reports the exported route's PSNR
    m = info["metrics"]
    assert summary["val_psnr_final"] == pytest.approx(final_val_psnr(m))
    state = json.loads((tmp_path / "work" / "state.json").read_text())
    assert state["learn"]["task"] == name and state["learn"]["init"] == "contrast"

    # a rerun with the same work dir continues: no stage trains again
    def refuse(self, *a):
        raise AssertionError("a finished stage ran again")
    mp = pytest.MonkeyPatch()
    for stage in ("train_task", "prune_task", "finetune_task", "pretrain"):
        mp.setattr(ContinualTrainer, stage, refuse)
    try:
        again = learn(src, spec, name, tmp_path / "out2", tmp_path / "work", kw, router_draws=2, gate_frames=0,
                      train_clean=clean, val_clean=clean[:2], progress=False)
    finally:
        mp.undo()
    assert again["val_psnr_final"] == summary["val_psnr_final"] and again["precision"] == "fp32"
    assert load_bundle(tmp_path / "out2").version == 2
    # another task in that work dir is refused
    with pytest.raises(ValueError, match="give a new --work-dir"):
        learn(src, spec, "other", tmp_path / "out3", tmp_path / "work", kw, train_clean=clean,
              val_clean=clean[:2], progress=False)


def test_a_proposal_that_did_not_fit_is_refused_with_its_reason(tmp_path):
    from tir.tools.cli import main

    bad = tmp_path / "proposed-3.json"
    bad.write_text(json.dumps({"name": "new-3", "closest_steps": [NEW],
                               "fit": {"fits": False, "reason": "embeds 0.3 from the centre"}}))
    from tir.engines.degrade import DegradationError
    from tir.tools.learn import read_spec
    with pytest.raises(DegradationError, match="did not fit .embeds 0.3 from the centre"):
        read_spec(str(bad))
    assert main(["learn", "--spec", str(bad), "--bundle", str(tmp_path)]) == 2


def test_learn_refuses_an_out_folder_holding_something_else_before_training(tiny_bundle, tmp_path, capsys):
    """--out naming an existing folder of other files or another bundle was written over at the end
    of training (write_bundle with exist_ok); now refused first, and the folder is left as it was."""
    from tir.tools.cli import main

    bundle, _ = tiny_bundle
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["learn", "--spec", "noise", "--name", "fog2", "--bundle", str(bundle), "--out", str(other),
                 "--work-dir", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tir learn: error: ") and len(err.strip().splitlines()) == 1   # one line, not a log record
    assert f"--out {other} exists and does not hold {bundle}'s routes" in err
    assert [p.name for p in other.iterdir()] == ["notes.txt"] and not (tmp_path / "work").exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["learn", "--spec", "noise", "--name", "fog2", "--bundle", str(bundle), "--out", str(afile)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err and afile.read_text() == "x"


@pytest.mark.parametrize("option, value, words", [
    ("--steps", "-1", "give a number of steps >= 0"),  # -1 went on into the field stage
    ("--lr", "nan", "give a learning rate > 0"),  # torch refused it only after the data loaded
    ("--batch", "0", "give a batch size >= 1"),
    # tir train checked these, tir learn did not: training ran its 1000 steps first
    ("--group", "0", "give a number of channels >= 1"),
    ("--group", "-1", "give a number of channels >= 1"),
    ("--prune-p", "2", "give a pick-count threshold > 0 and <= 1"),
    ("--prune-p", "-0.5", "give a pick-count threshold > 0 and <= 1"),
    ("--prune-samples", "0", "give a number of frames >= 1"),
])
def test_learn_numbers_are_checked_by_argparse(capsys, option, value, words):
    from tir.tools.cli import main

    with pytest.raises(SystemExit) as info:
        main(["learn", "--spec", "noise", option, value])
    assert info.value.code == 2 and f"argument {option}: {value}: {words}" in capsys.readouterr().err
