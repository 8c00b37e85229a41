"""The distilled student (issue 11): network, losses, distillation run, export, bundle, Restorer."""
import json
import shutil

import numpy as np
import pytest
import torch

from tir.engines.bundle import BundleError, load_bundle, validate_manifest, write_bundle
from tir.engines.training.distill import (DistillSettings, Distiller, export_student, info_nce, load_student,
                                 prompt_contrast, teacher_forward)
from tir.engines.training.models.student import (PRESETS, StudentNet, StudentWithPrompt, create_student,
                                        student_gmac)
from tir.engines.training.train import ContinualTrainer, TrainSettings

torch.set_num_threads(1)
SLOTS = ["contrast", "blur", "CB", "clean"]


def frames(n=6, h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / float(h)
    return np.stack([np.clip(0.4 + 0.3 * np.sin(3 * xx + k) * np.cos(2 * yy) + 0.05 * rng.random((h, w)), 0, 1)
                     for k in range(n)]).astype(np.float32)


@pytest.fixture(scope="module")
def teacher_bundle(tmp_path_factory):
    """A tiny open-world bundle (contrast, blur, CB) with its model.pt, written by tir train's code."""
    tmp = tmp_path_factory.mktemp("teachers")
    clean = frames()
    s = TrainSettings(preset="tiny", tasks=("contrast", "blur", "CB"), steps=2, pretrain_steps=2, finetune_steps=1,
                      crop=32, batch=2, prune_samples=2, router=False, threads=1, val_limit=2,
                      bundle_dir=str(tmp / "bundle"))
    ContinualTrainer(s, tmp / "work", clean, clean[:2]).run()
    return tmp / "bundle"


def distill_settings(bundle, **kw):
    base = dict(bundle=str(bundle), preset="tiny", steps=4, field_steps=2, crop=32, batch=4, threads=1,
                max_frames=4, val_limit=2, val_every=2, save_every=2, clean_prob=0.25)
    base.update(kw)
    return DistillSettings(**base)


# ----------------------------------------------------------------------------------- network
def test_edge_student_is_within_the_mac_budget_and_counts_every_conv():
    net = create_student("edge", ["contrast", "blur", "noise", "CB", "CN", "BN", "CBN", "clean"])
    gmac = student_gmac(net)
    assert gmac <= 1.2
    # hand count of the dense convs at 640x512 (H/4 = 128x160, H/8 = 64x80): stem 16->24, recon 24->16,
    # 2 high blocks (2 convs 24->24), 2 low blocks (2 convs 48->48), down 96->48, up 48->96, out 24->24
    hi, lo = 128 * 160, 64 * 80
    dense = (hi * 9 * 16 * 24 + hi * 9 * 24 * 16 + 2 * 2 * hi * 9 * 24 * 24 + 2 * 2 * lo * 9 * 48 * 48
             + lo * 96 * 48 + lo * 48 * 96 + hi * 24 * 24)
    assert dense / 1e9 <= gmac < dense / 1e9 + 0.01   # the rest: field head on 16x20 cells, 1x1 MLPs
    assert net.cfg.multiple == 32


def test_prompt_changes_the_output_and_mixing_is_linear_in_the_prompt_vector():
    torch.manual_seed(0)
    net = create_student("tiny", SLOTS)
    for p in net.parameters():   # zero-initialised FiLM layers would hide the prompt
        torch.nn.init.normal_(p, std=0.2)
    net.eval()
    x = torch.rand(1, 1, 64, 64)
    a, b = net.one_hot(["contrast"]), net.one_hot(["blur"])
    assert not torch.allclose(net(x, a), net(x, b))
    mixed = 0.5 * a + 0.5 * b
    expect = 0.5 * net.prompt_table[0] + 0.5 * net.prompt_table[1]
    assert torch.allclose(net.prompt_vector(mixed).flatten(), expect, atol=1e-6)
    with pytest.raises(ValueError, match="N×4"):
        net(x, torch.ones(1, 3))
    with pytest.raises(ValueError, match="no prompt for"):
        net.one_hot(["rain"])
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.rand(1, 1, 48, 64), a)
    with pytest.raises(ValueError, match="unknown student preset"):
        create_student("huge", SLOTS)


def test_losses_have_the_right_values():
    z = torch.nn.functional.normalize(torch.eye(3), dim=1)
    # perfectly aligned, orthogonal negatives: -log(e^{1/τ} / (e^{1/τ} + 2)) at τ = 0.1
    assert info_nce(z, z, 0.1).item() == pytest.approx(-np.log(np.exp(10) / (np.exp(10) + 2)), rel=1e-3)
    assert info_nce(z[:1], z[:1], 0.1).item() == 0.0
    a = torch.tensor([[1.0, 0.0]])
    # positive = anchor, negative orthogonal, τ = 1: log(1 + e^{-1})
    assert prompt_contrast(a, a, torch.tensor([[0.0, 1.0]]), 1.0).item() == pytest.approx(np.log1p(np.exp(-1)), rel=1e-5)
    # negative = anchor, positive orthogonal: 1 + log(1 + e^{-1})
    assert prompt_contrast(a, torch.tensor([[0.0, 1.0]]), a, 1.0).item() == pytest.approx(1 + np.log1p(np.exp(-1)), rel=1e-5)


def test_fast_student_equals_the_network(tmp_path):
    from tir.engines.training.fast_route import FastStudent

    torch.manual_seed(1)
    net = create_student("tiny", SLOTS).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, w = torch.rand(2, 1, 64, 96), torch.softmax(torch.randn(2, len(SLOTS)), 1)
    with torch.no_grad():
        assert torch.allclose(FastStudent(net)(x, w), net(x, w), atol=1e-5)


def test_export_has_two_inputs_the_routes_op_set_and_matches_torch(tmp_path):
    import onnx

    torch.manual_seed(0)
    net = create_student("tiny", SLOTS)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    report = export_student(net, tmp_path / "s.onnx")
    assert report["max_abs_err"] <= 1e-4
    assert report["form"].startswith("fast-student")          # the FastRoute rewrites, exact to 1e-4
    model = onnx.load(str(tmp_path / "s.onnx"))
    ops = {n.op_type for n in model.graph.node}
    # one SpaceToDepth in, pools as strided convs, no pixel (un)shuffle as Reshape/Transpose in the body
    assert "SpaceToDepth" in ops and "AveragePool" not in ops and "Transpose" not in ops
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["tir.multiple"] == "32" and meta["tir.prompts"] == ",".join(SLOTS)
    assert [i.name for i in model.graph.input] == ["input", "prompt"]
    # the routes' op budget (docs/model.md "Ops"), checked by the same operator audit the route
    # export runs for TensorRT 8.5 and 10 (the shipped FastRoute graphs use a narrower set:
    # pooling as strided convs, so comparing with their exact op list would be the wrong test)
    from tir.engines.training.export import audit_onnx

    audit = audit_onnx(model)
    assert audit.ok, audit.errors
    allowed = {"Conv", "Relu", "Add", "Sub", "Mul", "Div", "Exp", "Log", "Sqrt", "ReduceMean", "ReduceMin",
               "ReduceMax", "AveragePool", "Resize", "Reshape", "Transpose", "DepthToSpace", "SpaceToDepth",
               "MatMul", "Sigmoid", "Concat", "Squeeze", "Unsqueeze", "Gemm", "Constant", "Slice", "Shape",
               "Gather", "ConvTranspose", "Pad", "Clip", "Identity", "Flatten", "Split", "Pow",
               "ConstantOfShape"}   # the ones channel of the FastRoute ConvTranspose
    assert {n.op_type for n in model.graph.node} <= allowed


# ----------------------------------------------------------------------------------- distillation
def test_teacher_forward_is_the_route_without_field_and_clean_is_identity(teacher_bundle):
    from tir.engines.training.distill import load_teachers

    _, teacher = load_teachers(teacher_bundle)
    x = torch.from_numpy(frames(2)[:, None, :64, :64])
    y, feats = teacher_forward(teacher, x, "CB")
    assert torch.allclose(y, teacher.route_forward(x, "CB", field=False), atol=1e-6)
    assert feats.shape == (2, teacher.cfg.width, 16, 16)
    y, _ = teacher_forward(teacher, x, "clean")
    assert torch.equal(y, x)


def test_distill_runs_resumes_and_writes_a_bundle_with_the_student(tmp_path, teacher_bundle):
    clean = frames()
    work = tmp_path / "work"
    d = Distiller(distill_settings(teacher_bundle, steps=2), work, clean, clean[:2])
    assert d.slots == ["contrast", "blur", "CB", "clean"]
    d.distill()
    assert d.step == 2 and (work / "student.pt").is_file() and (work / "best.pt").is_file()
    first = {k: v.clone() for k, v in d.net.state_dict().items()}
    # a new run with more steps resumes at step 2 with the saved weights
    d2 = Distiller(distill_settings(teacher_bundle, steps=4), work, clean, clean[:2])
    assert d2.step == 2
    assert all(torch.equal(first[k], v) for k, v in d2.net.state_dict().items())
    state = d2.run()
    assert d2.step == 4 and state["done"] == ["distill", "field"]
    assert [v["step"] for v in state["val"]] == [2, 4]
    m = state["metrics"]
    assert set(m["val_psnr"]) == set(m["teacher_val_psnr"]) == {"contrast", "blur", "CB"}
    assert all(np.isfinite(v) for v in m["val_psnr"].values())
    # the checkpoint was chosen on val_limit (2) frames; the recorded numbers are on every val frame
    d3 = Distiller(distill_settings(teacher_bundle, steps=4), tmp_path / "work3", clean, clean[:3])
    assert len(d3.val_clean) == 2 and len(d3.val_all) == 3
    assert d3.run()["metrics"]["val_frames"] == 3
    assert "distill step" in (work / "distill.log").read_text() or "val step" in (work / "distill.log").read_text()
    # the student in the bundle is the one run() ended with
    out = d2.write_bundle(tmp_path / "out")
    assert out.deploy == "routes" and out.student["prompts"] == d2.slots
    assert out.tasks == load_bundle(teacher_bundle).tasks
    assert out.student["gmac_640x512"] == m["gmac_640x512"]
    # the teacher bundle is untouched
    assert load_bundle(teacher_bundle).student is None
    # state.json is plain JSON
    json.loads((work / "state.json").read_text())


def test_student_loss_terms_are_all_finite_and_the_step_lowers_the_loss(tmp_path, teacher_bundle):
    clean = frames()
    d = Distiller(distill_settings(teacher_bundle, lr=5e-3), tmp_path, clean, clean[:2])
    rng = np.random.default_rng(0)
    groups = d.draw(rng)
    terms = d.loss_terms(groups)
    assert set(terms) == {"gt", "kd", "feat", "inst", "cpr", "sparse", "total"}
    assert all(torch.isfinite(v) for v in terms.values())
    before = terms["total"].item()
    for _ in range(15):
        t = d.loss_terms(groups)
        d.opt.zero_grad()
        t["total"].backward()
        d.opt.step()
    assert d.loss_terms(groups)["total"].item() < before


# ----------------------------------------------------------------------------------- bundle + runtime
class FactorStudent(torch.nn.Module):
    """A fake student: output = x · Σ_k w_k f_k (prompt weights w, one factor per slot)."""

    def __init__(self, factors):
        super().__init__()
        self.register_buffer("f", torch.tensor(factors, dtype=torch.float32))

    def forward(self, x, w):
        return x * (w @ self.f).reshape(-1, 1, 1, 1)


def _export_fake_student(path, factors, multiple=1):
    from tiny_models import export_prompted

    return export_prompted(FactorStudent(factors), path, len(factors), ["a", "b", "clean"], multiple)


@pytest.fixture(scope="module")
def student_bundle(tmp_path_factory):
    """test_restorer's tiny bundle (routes a ×2, b ×3, a mean-value router) plus a fake student."""
    from tir.engines.bundle import add_student

    from test_restorer import H, MEANS, W, MeanRouter, _export
    from tiny_models import Scale

    tmp = tmp_path_factory.mktemp("studentbundle")
    routes = {"a": _export(Scale(2.0), tmp / "a.onnx"), "b": _export(Scale(3.0), tmp / "b.onnx")}
    router = _export(MeanRouter(), tmp / "router.onnx")
    meta = {"name": "tiny", "router": {"codebook": np.eye(3).tolist(), "tasks": list(MEANS),
                                       "threshold": 0.9, "temperature": 0.1, "input_size": [W, H]}}
    write_bundle(tmp / "routes", routes, router, meta)
    student = _export_fake_student(tmp / "fake.onnx", [5.0, 7.0, 1.0])
    add_student(tmp / "routes", tmp / "student", student, {"prompts": ["a", "b", "clean"], "gmac_640x512": 0.5},
                deploy="student")
    return tmp


def test_bundle_schema_and_hash_cover_the_student(student_bundle, tmp_path):
    b = load_bundle(student_bundle / "student")
    assert b.deploy == "student" and b.student_path.name == "student.onnx"
    assert load_bundle(student_bundle / "routes").deploy == "routes"
    manifest = json.loads((student_bundle / "student" / "manifest.json").read_text())
    assert validate_manifest({**manifest, "deploy": "both"}) == ["deploy 'both' must be one of routes, student, auto"]
    bad = {**manifest, "student": None}
    assert any("no student entry" in p for p in validate_manifest(bad))
    bad = {**manifest, "student": {**manifest["student"], "prompts": ["a", "clean"]}}
    assert any("lack routes ['b']" in p for p in validate_manifest(bad))
    # a swapped student file is refused by its sha256
    copy = tmp_path / "copy"
    shutil.copytree(student_bundle / "student", copy)
    _export_fake_student(copy / "student.onnx", [5.0, 7.5, 1.0])
    with pytest.raises(BundleError, match="student.onnx sha256"):
        load_bundle(copy)


def test_restorer_runs_the_student_with_the_router_mix(student_bundle):
    from tir.engines.restorer import Restorer

    from test_restorer import frame

    r = Restorer(student_bundle / "student", every=1, hysteresis=1)
    assert r.deploy == "student" and r.prompts == ["a", "b", "clean"]
    x = frame("a")
    out = r.infer(x)
    w = r.prompt_weights
    assert w.shape == (3,) and w.sum() == pytest.approx(1.0, abs=1e-6) and w[0] > 0.99
    assert np.allclose(out, x * float(w @ np.array([5.0, 7.0, 1.0])), atol=1e-5)
    assert r.loaded_routes == []                       # no route engine was loaded
    assert r.status()["deploy"] == "student" and set(r.status()["prompt"]) == {"a", "b", "clean"}
    assert np.array_equal(r.infer(frame("clean")), frame("clean"))   # clean passes through
    # a soft embedding gives a soft mix: half-way between the a and b entries
    mix = r.prompt_mix(np.array([1.0, 1.0, 0.0]))
    # cosines 0.7071, 0.7071, 0 over temperature 0.1, softmax
    e = np.exp(np.sqrt(0.5) / 0.1)
    assert mix == pytest.approx([e / (2 * e + 1), e / (2 * e + 1), 1 / (2 * e + 1)], rel=1e-5)
    # the routes are still there: deploy="routes" runs them
    rr = Restorer(student_bundle / "student", every=1, deploy="routes")
    assert np.allclose(rr.infer(x), x * 2.0)
    # a forced task is a one-hot prompt
    rf = Restorer(student_bundle / "student", task="b")
    assert np.allclose(rf.infer(x), x * 7.0)
    with pytest.raises(ValueError, match="has no student"):
        Restorer(student_bundle / "routes", deploy="student")
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        Restorer(student_bundle / "student", backend="tensorrt")


def test_student_engine_refuses_wrong_prompt_length(student_bundle):
    from tir.engines.backends.student import StudentEngine
    from tir.engines.engine import EngineError

    e = StudentEngine(student_bundle / "student" / "student.onnx")
    assert e.slots == 3 and e.prompts == ["a", "b", "clean"]
    x = np.full((2, 1, 5, 7), 0.5, np.float32)
    assert np.allclose(e.infer(x, [0.0, 1.0, 0.0]), 3.5)
    with pytest.raises(EngineError, match="3 per frame"):
        e.infer(x, [1.0, 0.0])


def test_bench_times_routes_and_student_in_one_table_with_psnr(student_bundle, monkeypatch, capsys):
    from tir.tools import bench
    from tir.tools.cli import main

    clean = np.full((2, 24, 32), 0.1, np.float32)
    # frames a student with factor 5 (prompt a) restores exactly: degraded = clean / 5
    monkeypatch.setattr(bench, "psnr_frames", lambda sets, split, n, task: {
        "clean": clean, "degraded": clean / 5.0, "data": f"{sets} {split}", "task": task})
    rc = main(["bench", "--mode", "model", "--model", str(student_bundle / "student"), "--deploy", "routes",
               "student", "--task", "a", "--frames", "3", "--warmup", "1", "--size", "32x24", "--no-progress",
               "--backend", "onnxruntime", "--psnr-data", "fake"])
    assert rc == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("mode"))
    assert header.split()[-3:] == ["deploy", "PSNR", "dB"]
    rows = [line.split() for line in out.splitlines() if line.startswith("model ")]
    assert [r[-2] for r in rows] == ["routes", "student"]
    # routes: route a doubles (0.04 vs 0.1: 20·log10(1/0.06) dB); student prompt a: ×5, exact (PSNR capped)
    assert float(rows[0][-1]) == pytest.approx(20 * np.log10(1 / 0.06), abs=0.01)
    assert float(rows[1][-1]) > 60


def test_deploy_flag_refuses_a_single_model(tmp_path):
    from tir.tools.run import ModelNotFound, load_model

    with pytest.raises(ModelNotFound, match="--deploy picks what a bundle runs"):
        load_model("plainnet:tiny", deploy="student")


def test_cluster_contrast_and_kmeans_values():
    from tir.engines.training.distill import cluster_contrast, kmeans

    v = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[0.0, 1.0], [1.0, 0.0]])      # nearest positive: the second (cos 1)
    neg = torch.tensor([[0.0, 1.0]])                   # cos 0
    assert cluster_contrast(v, pos, neg, 1.0).item() == pytest.approx(np.log1p(np.exp(-1)), rel=1e-5)
    x = np.concatenate([np.zeros((5, 2)), np.ones((5, 2)) * 10]) + np.random.default_rng(0).normal(0, 0.01, (10, 2))
    c = kmeans(x, 2, seed=0)
    assert sorted(np.round(c[:, 0]).tolist()) == [0.0, 10.0]


def test_calibration_stage_runs_on_real_frames_and_records_before_after(tmp_path, teacher_bundle, monkeypatch):
    clean = frames()
    real = frames(9, seed=3)
    d = Distiller(distill_settings(teacher_bundle, steps=2, field_steps=0, calibrate_steps=2, clusters=3),
                  tmp_path, clean, clean[:2])
    monkeypatch.setattr(d, "real_frames", lambda: (real[:6], real[6:]))
    state = d.run()
    assert state["done"] == ["distill", "field", "calibrate"]
    cal = state["metrics"]["calibrate"]
    assert cal["calibration_frames"] == 6 and cal["held_out_frames"] == 3
    assert set(cal["before"]) == set(cal["after"]) == {"val_mean", "column_fpn_input", "column_fpn_output", "frames"}
    # weights are the calibrated ones only when kept
    assert isinstance(cal["kept"], bool)


def test_eval_split_scores_student_and_teachers_without_training(tmp_path, teacher_bundle, monkeypatch):
    import tir.engines.training.train as train_mod

    clean = frames()
    d = Distiller(distill_settings(teacher_bundle, steps=2, field_steps=0), tmp_path, clean, clean[:2])
    d.run()
    before = {k: v.clone() for k, v in d.net.state_dict().items()}
    monkeypatch.setattr(train_mod, "load_split", lambda data, split: frames(3, seed=9))
    out = d.evaluate_split("test")
    assert out["frames"] == 3 and set(out["student"]) == set(out["teacher"]) == {"contrast", "blur", "CB"}
    from tir.engines.training.train import evaluate_route

    assert out["teacher"]["blur"] == pytest.approx(evaluate_route(d.teacher, "blur", d.val_set("blur"), d.val_clean))
    assert all(torch.equal(before[k], v) for k, v in d.net.state_dict().items())
    assert json.loads((tmp_path / "state.json").read_text())["eval"]["test"]["frames"] == 3


def test_learning_rate_schedule_and_time_budget(tmp_path, teacher_bundle):
    f = Distiller.lr_factor
    assert f(0.0) == 0.01 and f(0.025) == pytest.approx(0.5) and f(0.05) == pytest.approx(1.0)
    assert f(0.525) == pytest.approx(0.505) and f(1.0) == pytest.approx(0.01)
    clean = frames()
    # a budget far below one step's time: the stage ends after its first step, validated and saved
    d = Distiller(distill_settings(teacher_bundle, steps=1000, max_minutes=1e-6), tmp_path, clean, clean[:2])
    d.distill()
    assert d.step == 1 and [v["step"] for v in d.state["val"]] == [1]
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 1


def test_student_copied_from_a_route_starts_as_that_route_for_any_prompt():
    from tir.engines.bundle import default_bundle_path
    from tir.engines.training.distill import MAX_GMAC, load_teachers, student_from_route

    _, teacher = load_teachers(default_bundle_path())      # the shipped edge bundle: tone and field heads
    slots = teacher.tasks + ["clean"]
    net = student_from_route(teacher, "noise", slots, 16)
    assert net.cfg.mids == tuple(teacher.branches["noise"].mids())
    assert student_gmac(net) <= MAX_GMAC
    x = torch.rand(2, 1, 64, 96)
    w = torch.softmax(torch.randn(2, len(slots)), 1)
    with torch.no_grad():
        assert torch.allclose(net(x, w), teacher.route_forward(x, "noise"), atol=1e-5)
        # prompts matter once the FiLMs move
        net.high_in[0].film.bias.add_(0.5)
        assert not torch.allclose(net(x, w), teacher.route_forward(x, "noise"), atol=1e-3)


def test_time_budget_counts_each_second_once(tmp_path, teacher_bundle, monkeypatch):
    import tir.engines.training.distill as dmod

    clean = frames()
    d = Distiller(distill_settings(teacher_bundle, steps=1000, max_minutes=1.0, save_every=2, val_every=1000),
                  tmp_path, clean, clean[:2])
    clock = [0.0]
    monkeypatch.setattr(dmod.time, "monotonic", lambda: clock[0])
    real = d.loss_terms

    def ten_seconds_a_step(groups):
        clock[0] += 10.0
        return real(groups)

    monkeypatch.setattr(d, "loss_terms", ten_seconds_a_step)
    d.distill()
    assert d.step == 6                           # 6 steps × 10 s = the 60 s budget
    assert d.state["wall_s"]["distill"] == 60.0


def test_config_dicts_round_trip_through_json():
    from tir.engines.training.models.ecmrnet import ECMRNetConfig
    from tir.engines.training.models.student import StudentConfig

    pruned = StudentConfig(name="p", mids=(8, 4, 8, 8))
    for cfg in (PRESETS["edge"], pruned):
        back = StudentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert back == cfg and isinstance(back.blocks, tuple)
    assert StudentConfig.from_dict(json.loads(json.dumps(pruned.to_dict()))).mids == (8, 4, 8, 8)
    assert PRESETS["edge"].multiple == 32 and StudentConfig(field=0).multiple == 8
    # an ECMRNet config written before the tone and field heads existed
    old = {k: v for k, v in ECMRNetConfig().to_dict().items() if k not in ("tone", "field")}
    cfg = ECMRNetConfig.from_dict(json.loads(json.dumps(old)))
    assert cfg.tone is False and cfg.field == 0 and cfg.paper_widths == (32, 128, 512) and cfg.multiple == 8


# ----------------------------------------------------------------------------------- fine-tuning options
def test_task_weights_parse_sample_and_are_recorded(tmp_path, teacher_bundle):
    from tir.engines.training.distill import parse_task_weights, sampling_probabilities

    assert parse_task_weights("CB=3, blur=2,contrast=0.5") == {"CB": 3.0, "blur": 2.0, "contrast": 0.5}
    for bad, message in (("CB", "NAME=WEIGHT"), ("=3", "NAME=WEIGHT"), ("CB=x", "not a number"),
                         ("CB=-1", ">= 0"), ("CB=nan", ">= 0"), ("CB=1,CB=2", "given twice"), (" , ", "empty")):
        with pytest.raises(ValueError, match=message):
            parse_task_weights(bad)
    tasks = ["contrast", "blur", "CB"]
    p = sampling_probabilities(tasks, {"CB": 3, "contrast": 0}, 0.2)
    # w = (0, 1, 3): contrast never, blur 0.8·1/4, CB 0.8·3/4, clean 0.2
    assert p == pytest.approx({"contrast": 0.0, "blur": 0.2, "CB": 0.6, "clean": 0.2})
    assert sampling_probabilities(tasks, None, 0.1) == pytest.approx({"contrast": 0.3, "blur": 0.3, "CB": 0.3,
                                                                      "clean": 0.1})
    with pytest.raises(ValueError, match="names rain, not a route of the teachers; use one of contrast, blur, CB"):
        sampling_probabilities(tasks, {"rain": 2}, 0.1)
    with pytest.raises(ValueError, match="every task weight 0"):
        sampling_probabilities(tasks, {"contrast": 0, "blur": 0, "CB": 0}, 0.1)

    clean = frames()
    # an unknown name is refused by the Distiller before anything is trained or written
    with pytest.raises(ValueError, match="not a route of the teachers"):
        Distiller(distill_settings(teacher_bundle, task_weights={"CBN": 1.0}), tmp_path / "bad", clean, clean[:2])
    d = Distiller(distill_settings(teacher_bundle, steps=2, field_steps=0, clean_prob=0.2,
                                   task_weights={"CB": 3.0, "contrast": 0.0}), tmp_path / "w", clean, clean[:2])
    rng = np.random.default_rng(0)
    counts = {s: 0 for s in d.slots}
    for _ in range(300):
        for slot, x, _, _ in d.draw(rng):
            counts[slot] += len(x)
    n = sum(counts.values())
    assert n == 300 * 4 and counts["contrast"] == 0
    assert counts["CB"] / n == pytest.approx(0.6, abs=0.04) and counts["blur"] / n == pytest.approx(0.2, abs=0.04)
    assert counts["clean"] / n == pytest.approx(0.2, abs=0.04)
    d.run()
    state = json.loads((tmp_path / "w" / "state.json").read_text())
    assert state["settings"]["task_weights"] == {"CB": 3.0, "contrast": 0.0}
    out = d.write_bundle(tmp_path / "out")
    training = out.student["training"]
    assert training["settings"]["task_weights"] == {"CB": 3.0, "contrast": 0.0}
    assert training["sampling"] == pytest.approx({"contrast": 0.0, "blur": 0.2, "CB": 0.6, "clean": 0.2})


def test_task_weights_on_the_command_line(tmp_path, teacher_bundle, capsys):
    import argparse

    from tir.tools import distill
    from tir.tools.cli import main

    parser = argparse.ArgumentParser()
    distill.add_arguments(parser)
    args = parser.parse_args(["--bundle", "b", "--out", "o", "--task-weights", "CB=3,blur=2"])
    assert args.task_weights == {"CB": 3.0, "blur": 2.0} and args.init_weights is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--bundle", "b", "--out", "o", "--task-weights", "CB=three"])
    assert "'three' is not a number" in capsys.readouterr().err
    # a name the teachers do not have: one line, nothing trained, no bundle written
    rc = main(["distill", "--bundle", str(teacher_bundle), "--out", str(tmp_path / "o"), "--work-dir",
               str(tmp_path / "w"), "--task-weights", "rain=2", "--threads", "1"])
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("tir distill: error: --task-weights names rain")
    assert "--task-weights" not in out   # errors were printed on stdout
    assert not (tmp_path / "o").exists() and not (tmp_path / "w" / "student.pt").exists()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, teacher_bundle):
    """(bundle with a tiny distilled student, the work dir that wrote it)."""
    tmp = tmp_path_factory.mktemp("distilled")
    clean = frames()
    d = Distiller(distill_settings(teacher_bundle, steps=2), tmp / "work", clean, clean[:2])
    d.run()
    d.write_bundle(tmp / "bundle")
    return tmp / "bundle", tmp / "work"


def test_init_from_student_starts_as_the_bundles_student(tmp_path, distilled):
    bundle, work = distilled
    clean = frames()
    ckpt = torch.load(work / "student.pt", weights_only=True)
    d = Distiller(distill_settings(bundle, init_from="student", init_weights=str(work / "student.pt")),
                  tmp_path / "ft", clean, clean[:2])
    assert d.step == 0   # a new schedule from the student's weights
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in d.net.state_dict().items())
    assert all(torch.equal(ckpt["adapter"][k], v) for k, v in d.adapter.state_dict().items())
    assert d.state["init_from"] == "student" and d.state["init_weights"]["step"] == ckpt["step"]
    assert d.state["init_weights"]["onnx_max_abs_err"] <= 1e-4
    # the torch student reproduces the bundle's ONNX student on a frame
    from tir.engines.backends.onnxruntime import ort_session

    x = frames(1)[:, None, :64, :64]
    w = np.full((1, len(d.slots)), 1.0 / len(d.slots), np.float32)
    got = ort_session(str(bundle / "student.onnx")).run(None, {"input": x, "prompt": w})[0]
    with torch.no_grad():
        assert np.allclose(d.net.eval()(torch.from_numpy(x), torch.from_numpy(w)).numpy(), got, atol=1e-4)
    d.run()
    out = d.write_bundle(tmp_path / "out")
    assert out.student["training"]["init_from"] == "student"
    assert out.student["training"]["init_weights"]["path"] == str(work / "student.pt")
    # resuming the same work dir continues from its own checkpoint, not from the bundle's student again
    d2 = Distiller(distill_settings(bundle, init_from="student", init_weights=str(work / "student.pt")),
                   tmp_path / "ft", clean, clean[:2])
    assert d2.step == d.step
    assert all(torch.equal(d.net.state_dict()[k], v) for k, v in d2.net.state_dict().items())


def test_init_from_student_refuses_what_is_not_that_student(tmp_path, distilled, teacher_bundle):
    bundle, work = distilled
    clean = frames()

    def make(name, **kw):
        return Distiller(distill_settings(kw.pop("bundle", bundle), **kw), tmp_path / name, clean, clean[:2])

    with pytest.raises(ValueError, match="needs --init-weights: bundle .* holds its student only as ONNX"):
        make("a", init_from="student")
    with pytest.raises(ValueError, match="has no student; use --init-from auto"):
        make("b", bundle=teacher_bundle, init_from="student", init_weights=str(work / "student.pt"))
    with pytest.raises(ValueError, match="no such file"):
        make("c", init_from="student", init_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="used only with --init-from student"):
        make("d", init_weights=str(work / "student.pt"))
    # another student (one weight moved): its outputs differ from student.onnx, refused
    ckpt = torch.load(work / "student.pt", weights_only=True)
    ckpt["state_dict"]["recon.weight"] = ckpt["state_dict"]["recon.weight"] + 0.05
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"is not the student of .*: its outputs differ from student.onnx by"):
        make("e", init_from="student", init_weights=str(tmp_path / "other.pt"))
    torch.save({"state_dict": ckpt["state_dict"]}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a tir distill student checkpoint"):
        make("f", init_from="student", init_weights=str(tmp_path / "plain.pt"))


def test_field_stage_that_does_not_help_puts_the_head_back(tmp_path, teacher_bundle, monkeypatch):
    clean = frames()
    d = Distiller(distill_settings(teacher_bundle, init_from="none", steps=1, field_steps=3, lr=1e-2), tmp_path, clean,
                  clean[:2])
    assert d.net.field is not None
    torch.manual_seed(3)
    with torch.no_grad():
        for p in d.net.field.parameters():
            torch.nn.init.normal_(p, std=0.1)
    before = {k: v.clone() for k, v in d.net.field.state_dict().items()}
    monkeypatch.setattr(d, "evaluate", lambda task, net=None, weights=None, orientation=0: 20.0)   # never improves
    d.field()
    assert d.state["metrics"]["field"]["kept"] is False
    assert all(torch.equal(before[k], v) for k, v in d.net.field.state_dict().items())


def test_distill_refuses_unknown_names_and_bad_numbers_before_loading_data(tmp_path, teacher_bundle, monkeypatch,
                                                                           capsys):
    """--preset, --init-from, --data and --real-data are checked against what exists, and the
    step counts and rates by argparse, before any frame is loaded (they were found late or never)."""
    from tir.engines.training import distill
    from tir.tools.cli import main

    monkeypatch.setattr(distill, "Distiller", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("loaded")))
    out = str(tmp_path / "out")
    for extra, says in ((["--preset", "bogus"], "unknown student preset 'bogus'"),
                        (["--init-from", "bogus"], "--init-from 'bogus' is none of auto, none, student"),
                        (["--real-data", "bogusset"], "unknown data set 'bogusset'"),
                        (["--data", "roadscene,nosuch"], "unknown data set 'nosuch'")):
        assert main(["distill", "--bundle", str(teacher_bundle), "--out", out, *extra]) == 2
        assert says in capsys.readouterr().err
    for extra in (["--steps", "-1"], ["--lr", "nan"], ["--batch", "0"], ["--crop", "16"]):
        with pytest.raises(SystemExit) as exc:
            main(["distill", "--bundle", str(teacher_bundle), "--out", out, *extra])
        assert exc.value.code == 2


def test_distill_refuses_an_out_holding_something_else_before_training(tmp_path, teacher_bundle, monkeypatch, capsys):
    """add_student refuses such an --out only when the student is written, after the whole
    distillation; tir distill now refuses it first and trains nothing."""
    from tir.engines.bundle import copy_bundle
    from tir.engines.training import distill
    from tir.tools.cli import main

    monkeypatch.setattr(distill, "Distiller", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("trained")))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["distill", "--bundle", str(teacher_bundle), "--out", str(other)]) == 2
    assert capsys.readouterr().err.startswith(f"tir distill: error: --out {other} exists and is not a copy of ")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    # a copy of the same teachers (a rerun) passes the check: the Distiller is reached
    copy_bundle(teacher_bundle, tmp_path / "copy")
    with pytest.raises(AssertionError, match="trained"):
        main(["distill", "--bundle", str(teacher_bundle), "--out", str(tmp_path / "copy")])


def test_dihedral_gives_the_eight_orientations_of_a_frame_alike_in_numpy_and_torch():
    from tir.engines.training.distill import ORIENTATIONS, dihedral

    x = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    outs = [dihedral(x, k) for k in range(ORIENTATIONS)]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8          # all distinct
    assert outs[0].shape == (1, 3, 4) and outs[1].shape == (1, 4, 3)
    assert np.array_equal(outs[1][0], np.rot90(x[0]))                        # a quarter turn, counter-clockwise
    assert np.array_equal(outs[4][0], x[0, :, ::-1])                         # mirrored
    assert np.array_equal(dihedral(dihedral(x, 1), 3), x)                    # turns compose
    for k in range(ORIENTATIONS):
        assert np.array_equal(dihedral(torch.from_numpy(x), k).numpy(), outs[k])
    for bad in (-1, 8):
        with pytest.raises(ValueError, match="not in 0..7"):
            dihedral(x, bad)


def test_field_steps_draw_upright_half_the_time_and_every_other_orientation_too():
    from tir.engines.training.distill import UPRIGHT_SHARE, draw_orientation

    rng = np.random.default_rng(0)
    ks = np.array([draw_orientation(rng) for _ in range(8000)])
    counts = np.bincount(ks, minlength=8) / len(ks)
    assert counts[0] + counts[4] == pytest.approx(UPRIGHT_SHARE, abs=0.02)
    assert counts[[1, 2, 3, 5, 6, 7]] == pytest.approx((1 - UPRIGHT_SHARE) / 6, abs=0.015)
    assert set(draw_orientation(rng, 1.0) for _ in range(50)) == {0, 4}
    assert 0 not in {draw_orientation(rng, 0.0) for _ in range(200)}


def test_field_stage_trains_on_every_orientation_and_judges_on_portrait_too(tmp_path, teacher_bundle, monkeypatch):
    clean = frames()   # 64 x 96: a quarter turn is 96 x 64
    with pytest.raises(ValueError, match="field orientations 'sideways': use one of stored, all"):
        Distiller(distill_settings(teacher_bundle, field_orientations="sideways"), tmp_path / "bad", clean, clean[:2])
    d = Distiller(distill_settings(teacher_bundle, init_from="none", steps=1, field_steps=12, field_orientations="all"),
                  tmp_path, clean, clean[:2])
    head = d.net.field
    shapes = []
    real_forward = head.forward
    monkeypatch.setattr(head, "forward", lambda y, p: shapes.append(tuple(y.shape[-2:])) or real_forward(y, p))
    seen = []
    real_eval = d.evaluate
    monkeypatch.setattr(d, "evaluate", lambda task, net=None, weights=None, orientation=0:
                        seen.append(orientation) or real_eval(task, net, weights, orientation))
    d.field()
    assert {(64, 96), (96, 64)} <= set(shapes)      # landscape and portrait frames
    assert set(seen) == {0, 1}                      # val before and after: as stored and a quarter turn
    # the oriented val is the mean of the two orientations, each scored against its own clean frames
    assert d.evaluate_oriented("blur") == pytest.approx(np.mean([real_eval("blur"), real_eval("blur", orientation=1)]))


def test_steps_0_runs_only_the_later_stages_of_the_bundles_student(tmp_path, distilled, teacher_bundle):
    bundle, work = distilled
    clean = frames()
    with pytest.raises(ValueError, match="--steps 0 .* needs --init-from student"):
        Distiller(distill_settings(teacher_bundle, steps=0), tmp_path / "a", clean, clean[:2])
    d = Distiller(distill_settings(bundle, init_from="student", init_weights=str(work / "student.pt"), steps=0,
                                   field_steps=0), tmp_path / "b", clean, clean[:2])
    before = {k: v.clone() for k, v in d.net.state_dict().items()}
    state = d.run()
    assert state["done"][:1] == ["distill"] and d.step == 0
    assert all(torch.equal(before[k], v) for k, v in d.net.state_dict().items())   # nothing trained
    assert set(state["metrics"]["val_psnr"]) == set(d.tasks)


def test_field_stage_keeps_the_frames_as_stored_by_default(tmp_path, teacher_bundle, monkeypatch):
    clean = frames()
    d = Distiller(distill_settings(teacher_bundle, init_from="none", steps=1, field_steps=6), tmp_path, clean,
                  clean[:2])
    shapes, seen = [], []
    real_forward, real_eval = d.net.field.forward, d.evaluate
    monkeypatch.setattr(d.net.field, "forward", lambda y, p: shapes.append(tuple(y.shape[-2:])) or real_forward(y, p))
    monkeypatch.setattr(d, "evaluate", lambda task, net=None, weights=None, orientation=0:
                        seen.append(orientation) or real_eval(task, net, weights, orientation))
    d.field()
    assert set(shapes) == {(64, 96)} and set(seen) == {0}


def test_distill_names_a_broken_teacher_bundle_as_the_bundle_not_the_out(tmp_path, teacher_bundle, monkeypatch,
                                                                        capsys):
    # A teacher bundle missing its model.pt read "tir distill: --out incomplete bundle B: ...":
    # the user was sent to look at --out, which was fine.
    import shutil

    from tir.engines.training import distill
    from tir.tools.cli import main

    monkeypatch.setattr(distill, "Distiller", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("trained")))
    broken = tmp_path / "teachers"
    shutil.copytree(teacher_bundle, broken)
    victim = next(p for p in broken.iterdir() if p.suffix == ".onnx")
    victim.unlink()
    assert main(["distill", "--bundle", str(broken), "--out", str(tmp_path / "new")]) == 2
    out = capsys.readouterr().err
    assert out.startswith(f"tir distill: error: --bundle incomplete bundle {broken}: {victim.name}") and "--out" not in out
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("damaged, says", [
    ("state.json", "state.json cannot be read back (Expecting"),    # was: "tir distill: Expecting ',' delimiter ..."
    ("student.pt", "student.pt cannot be read back (PytorchStreamReader failed reading zip archive"),  # a traceback
])
def test_a_damaged_work_dir_file_is_named_in_one_line(tmp_path, teacher_bundle, capsys, damaged, says):
    from tir.tools.cli import main

    work = tmp_path / "work"
    work.mkdir()
    if damaged == "state.json":
        (work / "state.json").write_text('{"done": ["distill"')
    else:
        import torch

        torch.save({"architecture": {}, "state_dict": {}}, work / "whole.pt")
        (work / "student.pt").write_bytes((work / "whole.pt").read_bytes()[:100])   # a copy cut short
    code = main(["distill", "--bundle", str(teacher_bundle), "--out", str(tmp_path / "o"), "--work-dir", str(work),
                 "--steps", "1", "--field-steps", "0", "--max-frames", "2"])
    out = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and out[-1].startswith("tir distill: error: ") and says in out[-1], out[-3:]
    assert str(work / damaged) in out[-1] and not (tmp_path / "o").exists()


def test_work_dir_readers_name_the_file(tmp_path):
    from tir.engines.training.train import WorkDirError, load_checkpoint_file, load_state_file

    (tmp_path / "state.json").write_text("[1, 2]")
    with pytest.raises(WorkDirError, match=r"state\.json holds list, not a work dir state"):
        load_state_file(tmp_path / "state.json")
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(WorkDirError, match=r"model\.pt cannot be read back"):
        load_checkpoint_file(tmp_path / "model.pt")


def test_a_refused_distill_makes_no_work_dir(tmp_path, teacher_bundle, capsys):
    # the work dir (with an empty distill.log) was made before the settings were checked
    from tir.tools.cli import main

    work = tmp_path / "w"
    assert main(["distill", "--bundle", str(teacher_bundle), "--out", str(tmp_path / "o"), "--work-dir", str(work),
                 "--init-weights", str(tmp_path / "x.pt"), "--threads", "1"]) == 2
    assert "tir distill: error: --init-weights is used only with --init-from student" in capsys.readouterr().err
    assert main(["distill", "--bundle", str(teacher_bundle), "--out", str(tmp_path / "o"), "--work-dir", str(work),
                 "--task-weights", "rain=2", "--threads", "1"]) == 2
    assert not work.exists() and not (tmp_path / "o").exists()
