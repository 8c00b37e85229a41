"""Loss, data pool, the resumable stage runner, bundle writing and `tir learn` (tiny preset)."""
import json

import numpy as np
import pytest
import torch

from tir.engines.training.losses import RestorationLoss, ms_ssim, scales_for
from tir.engines.training.train import ContinualTrainer, DegradedPool, TrainSettings

torch.set_num_threads(1)


def frames(n=6, h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(h)
    return np.stack([np.clip(0.4 + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) + 0.05 * rng.random((h, w)), 0, 1)
                     for k in range(n)]).astype(np.float32)


def settings(**kw):
    base = dict(preset="tiny", tasks=("contrast", "blur"), steps=2, pretrain_steps=2, finetune_steps=1,
                crop=32, batch=2, prune_samples=2, router=False, threads=1, val_limit=2)
    base.update(kw)
    return TrainSettings(**base)


def test_loss_is_zero_on_identity_and_scales_fit_the_crop():
    assert scales_for(256) == 5 and scales_for(128) == 4 and scales_for(32) == 2 and scales_for(16) == 1
    x = torch.rand(2, 1, 64, 64)
    assert ms_ssim(x, x, 3).item() == pytest.approx(1.0, abs=1e-5)
    loss = RestorationLoss(64)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert loss(x * 0.5, x).item() > 0.1


def test_pool_gives_aligned_crops_and_refreshes():
    clean = frames()
    pool = DegradedPool(clean, "blur", seed=0)
    x, y, stats = pool.batch(4, 32)
    assert x.shape == y.shape == (4, 1, 32, 32)
    assert stats is None
    assert not torch.equal(x, y)
    old = pool.degraded.copy()
    pool.refresh(fraction=1.0)
    assert not np.array_equal(old, pool.degraded)


def test_pool_crops_carry_their_whole_frames_tone_stats():
    from tir.engines.training.models.ecmrnet import tone_stats

    clean = frames()
    pool = DegradedPool(clean, "contrast", seed=0, tone_pool=8)
    whole = tone_stats(torch.from_numpy(pool.degraded[:, None]), 8)
    assert torch.equal(pool.stats, whole)
    pool.rng = np.random.default_rng(5)
    x, _, stats = pool.batch(6, 16)
    # a 16-px crop has its own (narrower) range; the stats are those of the frame it came from
    assert stats.shape == (6, 5, 1, 1)
    assert any(torch.equal(stats[k], whole[i]) for k in range(6) for i in range(len(whole)))
    assert not torch.allclose(tone_stats(x, 8), stats)
    pool.refresh(fraction=1.0)
    assert torch.equal(pool.stats, tone_stats(torch.from_numpy(pool.degraded[:, None]), 8))


class RefusesToTrain(ContinualTrainer):
    def pretrain(self):
        raise AssertionError("pretrain should have been skipped")

    def train_task(self, task):
        raise AssertionError(f"{task} should have been skipped")


def test_training_resumes_and_skips_finished_stages(tmp_path):
    clean = frames()
    state = ContinualTrainer(settings(), tmp_path, clean, clean[:2]).run()
    assert state["done"] == ["pretrain", "contrast-train", "contrast-prune", "contrast-finetune",
                             "blur-train", "blur-prune", "blur-finetune"]
    m = state["metrics"]["blur"]
    assert {"val_psnr_degraded", "val_psnr_trained", "val_psnr_pruned", "val_psnr_finetuned",
            "branch_mac_reduction", "gmac", "params"} <= set(m)
    mtime = (tmp_path / "model.pt").stat().st_mtime_ns
    again = RefusesToTrain(settings(), tmp_path, clean, clean[:2]).run()
    assert again["done"] == state["done"]
    assert (tmp_path / "model.pt").stat().st_mtime_ns == mtime
    # forget the last stage: only it runs again
    saved = json.loads((tmp_path / "state.json").read_text())
    saved["done"].remove("blur-finetune")
    (tmp_path / "state.json").write_text(json.dumps(saved))
    ran = []

    class Records(RefusesToTrain):
        def finetune_task(self, task):
            ran.append(task)
            super().finetune_task(task)

    Records(settings(), tmp_path, clean, clean[:2]).run()
    assert ran == ["blur"]


def test_field_stage_fits_the_whole_frame_head_and_keeps_it_only_if_val_improves(tmp_path):
    import dataclasses

    from tir.engines.training.models.ecmrnet import PRESETS
    from tir.engines.training.train import evaluate_route

    clean = frames(6, 64, 96)
    cfg = dataclasses.replace(PRESETS["tiny"], field=16)
    trainer = ContinualTrainer(settings(preset=cfg, tasks=("noise",), field_steps=40, field_batch=3), tmp_path,
                               clean, clean[:2])
    state = trainer.run()
    assert state["done"][-1] == "noise-field"
    m = state["metrics"]["noise"]
    model, val = trainer.model, trainer.val_set("noise")
    head = model.fields["noise"]
    x = torch.from_numpy(val[:, None])
    with torch.no_grad():
        with_head, without = model.route_forward(x, "noise"), model.route_forward(x, "noise", field=False)
    if m["field_kept"]:
        assert m["val_psnr_field"] > m["val_psnr_before_field"]
        assert head.out.weight.abs().sum() > 0 and not torch.equal(with_head, without)
    else:   # dropped: the head is exactly the identity again
        assert torch.equal(with_head, without) and head.out.weight.abs().sum() == 0
    assert evaluate_route(model, "noise", val, trainer.val_clean) == pytest.approx(m["val_psnr_field"]
                                                                                    if m["field_kept"] else m["val_psnr_before_field"])
    assert m["val_psnr_before_field"] == pytest.approx(m["val_psnr_finetuned"])


@pytest.mark.parametrize("field", [0, 16])
def test_bundle_and_learn_keep_earlier_routes(tmp_path, field):
    import dataclasses

    import onnxruntime as ort

    from tir.engines.training.models.ecmrnet import PRESETS

    from tir.engines.bundle import load_bundle
    from tir.engines.degrade import load_spec
    from tir.tools.learn import prepare_work_dir

    clean = frames()
    out = tmp_path / "bundle"
    cfg = dataclasses.replace(PRESETS["tiny"], field=field)
    ContinualTrainer(settings(bundle_dir=str(out), preset=cfg, field_steps=5, field_batch=2), tmp_path / "work",
                     clean, clean[:2]).run()
    bundle = load_bundle(out)
    assert bundle.tasks == ["contrast", "blur"] and bundle.multiple == (16 if field else 8)
    info = bundle.task_info("blur")
    assert info["gmac_640x512"] > 0 and "val_psnr_finetuned" in info["metrics"]
    x = clean[:1, None, :64, :64].copy()
    run = lambda b, t: ort.InferenceSession(str(b.route_path(t)), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    before = run(bundle, "contrast")

    spec = load_spec("vignetting")
    seeded = prepare_work_dir(bundle, tmp_path / "learn", spec, "vig")
    assert seeded["tasks"] == ["contrast", "blur"]
    learn = settings(tasks=("contrast", "blur", "vig"), bundle_dir=str(tmp_path / "bundle2"),
                     init_from={"vig": "contrast"}, preset=cfg, field_steps=5, field_batch=2)
    fields_run = []

    def field_task(self, task):
        fields_run.append(task)
        assert task == "vig", f"the field stage of earlier task {task} ran again"
        ContinualTrainer.field_task(self, task)
    RefusesToTrainOld = type("R", (ContinualTrainer,), {
        "pretrain": lambda self: (_ for _ in ()).throw(AssertionError("pretrain ran again")),
        "field_task": field_task})
    RefusesToTrainOld(learn, tmp_path / "learn", clean, clean[:2]).run()
    assert fields_run == (["vig"] if field else [])
    grown = load_bundle(tmp_path / "bundle2")
    assert grown.tasks == ["contrast", "blur", "vig"]
    assert np.array_equal(run(grown, "contrast"), before)
    with pytest.raises(ValueError, match="already has a route"):
        prepare_work_dir(grown, tmp_path / "again", spec, "blur")


def test_reuse_router_copies_and_checks_tasks(tmp_path):
    from tir.engines.training.train import reuse_router

    src = tmp_path / "router"
    src.mkdir()
    from tir.engines.training.export import export_onnx

    export_onnx(torch.nn.Conv2d(1, 1, 3, padding=1), src / "router.onnx", input_shape=(1, 1, 8, 8))
    info = {"file": "router.onnx", "tasks": ["contrast", "blur", "clean"], "threshold": 0.5, "codebook": [[1.0]]}
    (src / "router.json").write_text(json.dumps(info))
    got = reuse_router(src, tmp_path / "work" / "router", ["contrast", "blur"])
    assert got["threshold"] == 0.5 and (tmp_path / "work" / "router" / "router.onnx").is_file()
    with pytest.raises(ValueError, match="noise"):
        reuse_router(src, tmp_path / "w2", ["contrast", "noise"])
    with pytest.raises(ValueError, match="router.json"):
        reuse_router(tmp_path, tmp_path / "w3", ["contrast"])


def test_a_different_router_from_reruns_only_the_router_stage(tmp_path):
    from tir.engines.training.export import export_onnx

    def fake_router(name, threshold):
        src = tmp_path / name
        src.mkdir()
        export_onnx(torch.nn.Conv2d(1, 1, 3, padding=1), src / "router.onnx", input_shape=(1, 1, 8, 8))
        (src / "router.json").write_text(json.dumps({"file": "router.onnx", "tasks": ["contrast", "clean"],
                                                     "threshold": threshold, "codebook": [[1.0], [0.0]]}))
        return src

    a, b = fake_router("a", 0.1), fake_router("b", 0.2)
    clean = frames()
    run = lambda src, cls=ContinualTrainer: cls(settings(tasks=("contrast",), router=True, router_from=str(src),
                                                         router_recalibrate=False), tmp_path / "work",
                                                clean, clean[:2]).run()
    assert run(a)["router"]["threshold"] == 0.1
    assert run(b, RefusesToTrain)["router"]["threshold"] == 0.2      # only the router stage ran
    ran = []

    class Watches(RefusesToTrain):
        def train_router(self):
            ran.append(1)
            super().train_router()
    run(b, Watches)
    assert ran == []                                                  # same router: skipped


def test_learn_refuses_a_tampered_or_code_carrying_checkpoint(tmp_path):
    """tir learn on a bundle whose model.pt was swapped: refused by hash, and even a pickle whose
    hash was also forged in the manifest is never unpickled beyond weights (issue 10 item 9)."""
    import io
    import os
    import pickle
    import shutil

    from tir.engines.bundle import BundleError, default_bundle_path, load_bundle, sha256_file
    from tir.engines.degrade import load_spec
    from tir.tools.cli import main
    from tir.tools.learn import prepare_work_dir

    shipped = default_bundle_path()
    if shipped is None:
        pytest.skip("the shipped bundle engines/bundles/edge/ is not installed")
    copy = tmp_path / "edge"
    shutil.copytree(shipped, copy)
    flag = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {flag}",))

    bundle = load_bundle(copy)
    good = (copy / "model.pt").read_bytes()
    with open(copy / "model.pt", "wb") as f:
        pickle.dump(Evil(), f, protocol=2)
    spec = load_spec("vignetting")
    with pytest.raises(BundleError, match=r"tampered or mismatched bundle: model\.pt sha256 is "
                                          + sha256_file(copy / "model.pt")[:12]):
        prepare_work_dir(bundle, tmp_path / "w1", spec, "vig")
    assert main(["learn", "--bundle", str(copy), "--spec", "vignetting", "--name", "vig",
                 "--work-dir", str(tmp_path / "w2")]) == 2
    # the attacker also rewrote the manifest's hash: the weights-only loader still refuses
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["checkpoint"]["sha256"] = sha256_file(copy / "model.pt")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a weights-only checkpoint"):
        prepare_work_dir(load_bundle(copy), tmp_path / "w3", spec, "vig")
    assert not flag.exists(), "the pickle ran code"
    # the shipped checkpoint itself is tensors and plain containers only
    assert torch.load(io.BytesIO(good), weights_only=True)["architecture"]["config"]["name"] == "edge"


def test_balanced_repeats_lift_small_sets_up_to_the_cap():
    from tir.engines.training.train import balanced_repeats

    assert balanced_repeats([171, 103, 100, 22, 24], 4) == [1, 2, 2, 4, 4]
    assert balanced_repeats([171, 22], 1) == [1, 1]
    assert balanced_repeats([10, 10], 8) == [1, 1]
    assert balanced_repeats([100, 40], 8) == [1, 2]


def test_open_work_dir_and_save_state(tmp_path):
    import logging

    from tir.engines.training.train import open_work_dir, save_state

    logger = logging.getLogger("tir.test-open-work-dir")
    threads = torch.get_num_threads()
    try:
        work = open_work_dir(tmp_path / "a" / "b", 1, logger, "run.log")
        open_work_dir(tmp_path / "a" / "b", 1, logger, "run.log")  # a resumed run: still one handler
        assert work == tmp_path / "a" / "b" and work.is_dir() and torch.get_num_threads() == 1
        files = [h for h in logger.handlers if getattr(h, "baseFilename", None) == str(work / "run.log")]
        assert len(files) == 1
        logger.info("hello")
        files[0].flush()
        assert "INFO hello" in (work / "run.log").read_text()
        save_state(work, {"done": ["pretrain"], "psnr": np.float32(30.5)})
        assert json.loads((work / "state.json").read_text()) == {"done": ["pretrain"], "psnr": 30.5}
        assert not (work / "state.json.tmp").exists()
    finally:
        torch.set_num_threads(threads)
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()


def test_an_unknown_task_is_refused_before_anything_is_trained(tmp_path):
    """`tir train --tasks blur,bogus` refused after a whole pretrain stage (44 s in a tiny run);
    now before any stage. A task whose spec the work dir's state.json records (tir learn's
    proposal, named by --name) is not refused."""
    from tir.engines.degrade import DegradationError, load_spec

    with pytest.raises(DegradationError, match="no degradation 'bogus': not a built-in"):
        ContinualTrainer(settings(tasks=("blur", "bogus")), tmp_path / "w", train_clean=frames(), val_clean=frames())
    assert not (tmp_path / "w" / "model.pt").exists()
    work = tmp_path / "w2"
    work.mkdir()
    (work / "state.json").write_text(json.dumps({"done": [], "metrics": {}, "specs": {
        "shading": json.loads(load_spec("vignetting").to_json())}}))
    trainer = ContinualTrainer(settings(tasks=("blur", "shading")), work, train_clean=frames(), val_clean=frames())
    assert trainer.spec("shading").to_json() == load_spec("vignetting").to_json()


@pytest.mark.parametrize("crop", [0, 1, 12, 36])
def test_a_crop_the_network_cannot_take_is_refused_before_anything_is_trained(tmp_path, crop):
    """`tir train --crop 0` (or any side that is not a multiple of the network's input multiple)
    failed at the first pretrain step with a torch convolution shape error; now refused with the
    multiple to use, before any stage runs."""
    probe = ContinualTrainer(settings(), tmp_path / "probe", train_clean=frames(), val_clean=frames())
    multiple = probe.model.cfg.multiple
    assert crop < multiple or crop % multiple
    with pytest.raises(ValueError, match=f"multiple of {multiple} px"):
        ContinualTrainer(settings(crop=crop), tmp_path / "w", train_clean=frames(), val_clean=frames())
    assert not (tmp_path / "w" / "model.pt").exists()


@pytest.mark.parametrize("option,value", [("--steps", "-1"), ("--crop", "0"), ("--batch", "0"), ("--lr", "0"),
                                          ("--prune-p", "1.5"), ("--target-reduction", "0"),
                                          ("--router-steps", "-5"), ("--max-frames", "0"), ("--group", "0")])
def test_tir_train_refuses_numbers_out_of_range_before_any_work(tmp_path, capsys, option, value):
    from tir.tools import cli
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--work-dir", str(tmp_path / "w"), option, value])
    assert stop.value.code == 2 and option in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
