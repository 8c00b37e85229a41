"""deploy=auto (issue 11 item 5): per task the student where its val PSNR is within the margin of the
route's, else the route. The rule and its edges, the manifest's auto_deploy table and its checks,
the Restorer running the engine the table names, hot-swap, and the CLI (tir deploy, --deploy auto)."""
import errno
import json
import re
import shutil

import numpy as np
import pytest
import torch

from tir.engines.bundle import (DEFAULT_AUTO_MARGIN_DB, MAX_AUTO_MARGIN_DB, BundleError, add_student,
                                choose_auto_deploy, load_bundle, save_manifest, set_deploy, validate_manifest,
                                write_bundle)
from tir.engines.restorer import Restorer

from test_restorer import H, MEANS, W, MeanRouter, _export, frame
from tiny_models import Scale, scheduled
from test_student import FactorStudent

torch.set_num_threads(1)
FACTORS = [5.0, 7.0, 1.0]          # the fake student: x · Σ w_k f_k over the slots a, b, clean
# val PSNR: a student − route = −0.2 dB (student at 0.3), b −1.0 dB (route)
METRICS = {"val_psnr": {"a": 30.0, "b": 20.0}, "teacher_val_psnr": {"a": 30.2, "b": 21.0}}


def _student_onnx(path):
    from tiny_models import export_prompted

    return export_prompted(FactorStudent(FACTORS), path, 3, ["a", "b", "clean"])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """routes/: a ×2, b ×3 and the mean-value router; auto/: plus the fake student, deploy auto;
    nometrics/: the student without val numbers, deploy routes."""
    tmp = tmp_path_factory.mktemp("autodeploy")
    routes = {"a": _export(Scale(2.0), tmp / "a.onnx"), "b": _export(Scale(3.0), tmp / "b.onnx")}
    router = _export(MeanRouter(), tmp / "router.onnx")
    meta = {"name": "tiny", "router": {"codebook": np.eye(3).tolist(), "tasks": list(MEANS),
                                       "threshold": 0.9, "temperature": 0.1, "input_size": [W, H]}}
    write_bundle(tmp / "routes", routes, router, meta)
    student = _student_onnx(tmp / "fake.onnx")
    info = {"prompts": ["a", "b", "clean"], "gmac_640x512": 0.5, "metrics": METRICS}
    add_student(tmp / "routes", tmp / "auto", student, info, deploy="auto")
    add_student(tmp / "routes", tmp / "nometrics", student, {"prompts": ["a", "b", "clean"]})
    return tmp


def _copy(bundles, name, tmp_path):
    dst = tmp_path / name
    shutil.copytree(bundles / name, dst)
    return dst


# ----------------------------------------------------------------------------------- the rule
def test_the_choice_rule_and_its_margin_edges():
    tasks = ["tie", "over", "above", "zero"]
    student = {"tie": 25.0, "over": 25.0, "above": 26.0, "zero": 18.0}
    route = {"tie": 25.3, "over": 25.3001, "above": 25.0, "zero": 18.0}
    out = choose_auto_deploy(student, route, tasks)
    assert out["margin_db"] == 0.3 == DEFAULT_AUTO_MARGIN_DB
    # exactly the margin (25.0 − 25.3 is −0.30000000000000071 in floats) is within it; 0.1 mdB more is not
    assert out["tasks"] == {"tie": "student", "over": "routes", "above": "student", "zero": "student"}
    assert out["delta_db"] == {"tie": -0.3, "over": -0.3001, "above": 1.0, "zero": 0.0}
    assert "val split" in out["source"]
    # margin 0: only as good or better; a wide margin takes the student everywhere
    assert choose_auto_deploy(student, route, tasks, 0.0)["tasks"] == \
        {"tie": "routes", "over": "routes", "above": "student", "zero": "student"}
    assert set(choose_auto_deploy(student, route, tasks, 1.0)["tasks"].values()) == {"student"}
    for bad in (-0.1, float("nan"), True, "0.3"):
        with pytest.raises(BundleError, match="margin .* must be a number of dB ≥ 0"):
            choose_auto_deploy(student, route, tasks, bad)
    # the widest margin is 3 dB (twice the route's MSE); 30 for 0.3 is refused, not student everywhere
    assert choose_auto_deploy(student, route, tasks, MAX_AUTO_MARGIN_DB)["margin_db"] == 3.0
    for huge in (3.0001, 30.0, 1e308):
        with pytest.raises(BundleError, match="must be ≤ 3 dB .* use deploy 'student'"):
            choose_auto_deploy(student, route, tasks, huge)
    with pytest.raises(BundleError, match=r"no student and route val PSNR for tasks \['zero'\]"):
        choose_auto_deploy(student, {**route, "zero": None}, tasks)


def test_the_choice_rule_with_tone_takes_the_cheapest_within_the_margin_of_the_best():
    tasks = ["contrast", "CB", "CN", "noise"]
    student = {"contrast": 30.0, "CB": 27.0, "CN": 20.0, "noise": 25.0}
    route = {"contrast": 32.0, "CB": 28.0, "CN": 19.5, "noise": 24.0}
    tone = {"contrast": 33.0, "CB": 27.75, "CN": 19.0}
    out = choose_auto_deploy(student, route, tasks, tone_psnr=tone)
    # contrast: tone beats both; CB: tone within 0.3 dB of the route (−0.25); CN: tone 1 dB under the
    # student, so the student; noise has no tone number: the student/route rule
    assert out["tasks"] == {"contrast": "tone", "CB": "tone", "CN": "student", "noise": "student"}
    assert out["tone_delta_db"] == {"contrast": 1.0, "CB": -0.25, "CN": -1.0}
    assert out["delta_db"]["CB"] == -1.0
    assert choose_auto_deploy(student, route, tasks, 0.2, tone_psnr=tone)["tasks"]["CB"] == "routes"
    assert "tone_delta_db" not in choose_auto_deploy(student, route, tasks)   # no tone numbers: as before
    with pytest.raises(BundleError, match=r"tone val PSNR of tasks \['CB'\] is not a finite number"):
        choose_auto_deploy(student, route, tasks, tone_psnr={**tone, "CB": float("nan")})


def test_a_tone_table_is_checked_against_its_numbers_and_the_specs(bundles):
    """The tiny bundle's routes a and b carry no contrast step: tone is refused on them; a table
    that contradicts its tone_delta_db is refused."""
    m = json.loads((bundles / "auto" / "manifest.json").read_text())
    auto = m["auto_deploy"]
    bad = validate_manifest({**m, "auto_deploy": {**auto, "tasks": {"a": "tone", "b": "routes"},
                                                  "delta_db": None}})
    assert bad == ["auto_deploy.tasks runs ['a'] by the camera's tone, but only a contrast-carrying task with a "
                   "partner may (here: none)"]
    from tir.engines import degrade as deg

    specs = {"a": {"name": "contrast", "steps": deg.load_spec("contrast").steps}, "b": {"name": "b", "steps": []}}
    with_spec = {**m, "tasks": [{**t, "spec": specs[t["name"]]} for t in m["tasks"]]}
    ok = {**auto, "tasks": {"a": "tone", "b": "routes"}, "tone_delta_db": {"a": -0.1}}
    assert validate_manifest({**with_spec, "auto_deploy": ok}) == []
    wrong = {**ok, "tone_delta_db": {"a": -0.5}}   # tone 0.5 dB under the best: the student (Δ −0.2) runs a
    assert any("{'a': 'tone'} contradict auto_deploy.delta_db/tone_delta_db" in p
               for p in validate_manifest({**with_spec, "auto_deploy": wrong}))
    assert any("tone_delta_db must be an object" in p
               for p in validate_manifest({**with_spec, "auto_deploy": {**ok, "tone_delta_db": {"z": 1.0}}}))


def test_the_default_margin_is_the_int8_gates():
    from tir.calibration.gate import MAX_LOSS_DB

    assert DEFAULT_AUTO_MARGIN_DB == MAX_LOSS_DB


def test_the_shipped_bundles_val_numbers_give_the_measured_split():
    from tir.engines.bundle import default_bundle_path

    path = default_bundle_path()
    if path is None:
        pytest.skip("no shipped bundle in engines/bundles/edge")
    b = load_bundle(path)
    # measured on the user's path (tir deploy --set auto --measure all, val, 12 frames per camera),
    # student − route (dB): contrast −2.85, blur −1.44, noise +0.16, CB −0.77, CN +0.39, BN +0.08, CBN +0.50;
    # tone − best (dB): contrast +0.46, CB +1.05, CN −0.74, CBN −0.78
    from tir.engines.bundle import AUTO_SOURCE_USER, auto_deploy_entry

    assert b.deploy_table("auto") == {"contrast": "tone", "blur": "routes", "noise": "student", "CB": "tone",
                                      "CN": "student", "BN": "student", "CBN": "student"}
    assert b.auto_deploy["source"] == AUTO_SOURCE_USER and len(b.student["metrics"]["user_val"]["sets"]) == 7
    assert auto_deploy_entry(b.manifest, b.auto_deploy["margin_db"]) == b.auto_deploy   # the rule gives the table
    assert b.deploy_table("routes") == {t: "routes" for t in b.tasks}


# ----------------------------------------------------------------------------------- manifest
def test_the_table_is_recorded_and_checked_on_load(bundles, tmp_path):
    b = load_bundle(bundles / "auto")
    assert b.deploy == "auto" and b.auto_deploy["tasks"] == {"a": "student", "b": "routes"}
    assert b.auto_deploy["margin_db"] == 0.3 and b.auto_deploy["delta_db"] == {"a": -0.2, "b": -1.0}
    assert load_bundle(bundles / "nometrics").auto_deploy is None   # no val numbers: no table
    m = json.loads((bundles / "auto" / "manifest.json").read_text())
    auto = m["auto_deploy"]
    assert validate_manifest(m) == []
    assert validate_manifest({**m, "deploy": "both"}) == ["deploy 'both' must be one of routes, student, auto"]

    def problems(**entry):
        return validate_manifest({**m, "auto_deploy": {**auto, **entry}})

    assert problems(tasks={"a": "student"}) == [
        "auto_deploy.tasks lacks routes ['b']: every route needs one of routes, student, tone; rewrite it with "
        "`tir deploy --bundle DIR --set auto`"]
    assert problems(tasks={**auto["tasks"], "z": "routes"}) == [
        "auto_deploy.tasks names ['z'], which are not routes of this bundle (routes: a, b); rewrite it with "
        "`tir deploy --bundle DIR --set auto`"]
    assert problems(tasks={"a": "maybe", "b": "routes"}) == [
        "auto_deploy.tasks values {'a': 'maybe'} must be one of routes, student, tone"]
    assert problems(margin=0.3) == ["auto_deploy: unknown keys ['margin']; known: margin_db, tasks, delta_db, tone_delta_db, source"]
    assert problems(margin_db=-1) == ["auto_deploy.margin_db -1 must be a number of dB ≥ 0"]
    # a wide margin recorded before the 3 dB cap still loads (its table agrees with it); it is refused
    # only when a table is computed again
    assert problems(margin_db=30, tasks={"a": "student", "b": "student"}) == []
    # a hand edit that contradicts the table's own numbers (a: −0.2 dB, b: −1.0 dB at 0.3 dB)
    assert problems(tasks={"a": "student", "b": "student"}) == [
        "auto_deploy.tasks {'b': 'student'} contradict auto_deploy.delta_db/tone_delta_db at margin_db 0.3 (tone "
        "where tone − best ≥ −margin, else the student where student − route ≥ −margin); rewrite it with "
        "`tir deploy --bundle DIR --set auto`, or set deploy to 'routes' or 'student'"]
    assert any("{'a': 'routes'} contradict" in p for p in problems(tasks={"a": "routes", "b": "routes"}))
    assert problems(margin_db=1.0, tasks={"a": "student", "b": "student"}) == []   # Δ −1.0 is within 1 dB
    assert problems(delta_db={"a": -0.30004, "b": -1.0}, tasks={"a": "routes", "b": "routes"}) == []  # a rounded tie
    assert any("auto_deploy.delta_db must be" in p for p in problems(delta_db={"a": "x"}))
    assert validate_manifest({**m, "auto_deploy": None}) == [
        "deploy is 'auto' but the manifest has no auto_deploy table; rewrite it with `tir deploy --bundle DIR "
        "--set auto`"]
    no_student = validate_manifest({**m, "student": None})
    assert "deploy is 'auto' but the manifest has no student entry; add one with `tir distill` or set deploy to " \
           "'routes'" in no_student
    assert any("runs the student on ['a'] but the manifest has no student entry" in p for p in no_student)
    # on load: one line per problem, naming the manifest
    bad = _copy(bundles, "auto", tmp_path)
    (bad / "manifest.json").write_text(json.dumps({**m, "auto_deploy": {**auto, "tasks": {"a": "student"}}}))
    with pytest.raises(BundleError, match=r"manifest.json: auto_deploy.tasks lacks routes \['b'\]"):
        load_bundle(bad)


def test_set_deploy_writes_the_table_in_place_or_into_a_copy(bundles, tmp_path):
    folder = _copy(bundles, "nometrics", tmp_path)
    with pytest.raises(BundleError, match=r"no student and route val PSNR for tasks \['a', 'b'\]"):
        set_deploy(folder, "auto")
    assert set_deploy(folder, "student").deploy == "student"
    with pytest.raises(BundleError, match="has no student, so deploy 'auto' cannot run"):
        set_deploy(bundles / "routes", "auto", out_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    src = _copy(bundles, "auto", tmp_path)
    out = set_deploy(src, "auto", margin_db=0.1, out_dir=tmp_path / "copy")
    assert out.path == tmp_path / "copy" and out.auto_deploy["tasks"] == {"a": "routes", "b": "routes"}
    assert load_bundle(src).auto_deploy["margin_db"] == 0.3                # the source is untouched
    # routes keeps the recorded table (and its margin) as it is
    back = set_deploy(tmp_path / "copy", "routes")
    assert back.deploy == "routes" and back.auto_deploy["margin_db"] == 0.1
    assert set_deploy(tmp_path / "copy", "auto").auto_deploy["margin_db"] == 0.1   # the recorded margin


# ----------------------------------------------------------------------------------- Restorer
def test_the_restorer_runs_the_student_for_a_student_task_and_the_route_for_a_route_task(bundles):
    r = Restorer(bundles / "auto", every=1, hysteresis=1)
    assert r.deploy == "auto" and r.deploy_tasks == {"a": "student", "b": "routes"} and r.deploy_margin_db == 0.3
    xa, xb = frame("a"), frame("b")
    out = r.infer(xa)
    w = r.prompt_weights
    assert r.runs == "student" and w[0] > 0.99
    assert np.allclose(out, xa * float(w @ np.array(FACTORS)), atol=1e-5)     # the student, with the router's mix
    assert r.loaded_routes == [] and r.status()["student_loaded"]
    out = r.infer(xb)
    assert r.runs == "route" and np.allclose(out, xb * 3.0, atol=1e-6)         # route b (×3), not the student
    assert r.loaded_routes == ["b"]
    st = r.status()
    assert (st["deploy"], st["runs"], st["task"]) == ("auto", "route", "b")
    assert st["deploy_tasks"] == {"a": "student", "b": "routes"} and st["deploy_margin_db"] == 0.3
    assert np.array_equal(r.infer(frame("clean")), frame("clean")) and r.runs == "passthrough"
    # reset: routed again as at start-up, and the table still holds
    r.infer(xa)
    r.reset()
    assert r.route == "passthrough"
    assert np.allclose(r.infer(xb), xb * 3.0, atol=1e-6) and r.runs == "route"
    # a forced task: the student one-hot for a, the route for b
    assert np.allclose(Restorer(bundles / "auto", task="a").infer(xa), xa * 5.0, atol=1e-5)
    rb = Restorer(bundles / "auto", task="b")
    assert np.allclose(rb.infer(xb), xb * 3.0, atol=1e-6) and rb._student is None


def test_auto_loads_no_student_when_no_task_uses_it_and_refuses_what_it_cannot_run(bundles, tmp_path):
    folder = set_deploy(bundles / "auto", "auto", margin_db=0.0, out_dir=tmp_path / "zero").path
    r = Restorer(folder, every=1, hysteresis=1)
    assert r.deploy_tasks == {"a": "routes", "b": "routes"} and not r.uses_student
    assert np.allclose(r.infer(frame("a")), frame("a") * 2.0, atol=1e-6)
    assert r._student is None and r.prompt_weights is None and not r.status()["student_loaded"]
    # --deploy auto on a bundle that records no table: the rule on its val numbers, default margin
    plain = _copy(bundles, "auto", tmp_path)
    m = json.loads((plain / "manifest.json").read_text())
    m.pop("auto_deploy")
    save_manifest(plain, {**m, "deploy": "routes"})
    ro = Restorer(plain, deploy="auto")
    assert ro.deploy_tasks == {"a": "student", "b": "routes"} and ro.deploy_margin_db == 0.3
    with pytest.raises(ValueError, match="has no student"):
        Restorer(bundles / "routes", deploy="auto")
    with pytest.raises(ValueError, match="no student and route val PSNR"):
        Restorer(bundles / "nometrics", deploy="auto")
    with pytest.raises(ValueError, match="deploy must be one of routes, student, auto"):
        Restorer(bundles / "auto", deploy="both")


def test_the_contrast_gate_acts_before_the_choice(tmp_path):
    """Router always CB; the contrast gate turns CB into blur on a frame whose contrast is normal
    for the camera; then the table picks the engine of the gated task."""
    from tiny_models import OneHotRouter, export

    import test_contrast_gate as cg

    h, w = cg.H, cg.W
    routes = {"CB": export(Scale(2.0), tmp_path / "cb.onnx", h, w), "blur": export(Scale(3.0), tmp_path / "bl.onnx", h, w)}
    router = export(OneHotRouter(0, 3), tmp_path / "router.onnx", h, w)
    specs = cg.shipped_specs()
    meta = {"name": "gated", "tasks": [{"name": t, "spec": {"name": t, "steps": specs[t]}} for t in ("CB", "blur")],
            "router": {"codebook": np.eye(3).tolist(), "tasks": ["CB", "blur", "clean"], "threshold": 0.5,
                       "temperature": 0.1, "input_size": [w, h], "contrast_span": {"median": 0.6}}}
    write_bundle(tmp_path / "routes", routes, router, meta)
    from tiny_models import export_prompted

    student = export_prompted(FactorStudent(FACTORS), tmp_path / "s.onnx", 3, ["CB", "blur", "clean"])
    normal, flat = cg.ramp(0.6)[None, None], cg.ramp(0.15)[None, None]
    for name, psnr, on_normal, on_flat in (
            # CB on the student, blur on its route: the demoted verdict runs route blur (×3), CB the student
            ("cb-student", {"CB": 30.0, "blur": 20.0}, 3.0, "CB"),
            # blur on the student: the demoted verdict runs the student with its prompt moved to blur, CB route ×2
            ("blur-student", {"CB": 20.0, "blur": 30.0}, "blur", 2.0)):
        info = {"prompts": ["CB", "blur", "clean"],
                "metrics": {"val_psnr": psnr, "teacher_val_psnr": {"CB": 25.0, "blur": 25.0}}}
        r = scheduled(Restorer(add_student(tmp_path / "routes", tmp_path / name, student, info, deploy="auto"),
                               every=1, hysteresis=1, tone_align=False))   # the engine's own output (tone: test_contrast_gate)
        r.warm_camera(np.stack([cg.ramp(0.6)] * 30))      # the camera's own contrast
        for x, expect, task in ((normal, on_normal, "blur"), (flat, on_flat, "CB")):
            out = r.infer(x)                               # flat: low contrast for this camera, CB stays
            assert r.current == task and r.status()["gated_from"] == ("CB" if task == "blur" else None)
            if isinstance(expect, str):                    # the student, the gated mix on the task's slot
                assert r.runs == "student" and r.prompt_weights[["CB", "blur"].index(expect)] > 0.99
                assert np.allclose(out, x * float(r.prompt_weights @ np.array(FACTORS)), atol=1e-5), name
            else:
                assert r.runs == "route" and np.allclose(out, x * expect, atol=1e-6), name


# ----------------------------------------------------------------------------------- hot-swap
def test_hot_swap_follows_the_new_manifests_deploy_unless_deploy_was_given(bundles, tmp_path):
    from tir.engines.hotswap import HotSwapRestorer
    from tir.engines.loading import hot_swappable

    xa = frame("a")
    # the manifest's deploy (auto): a new version that says routes runs route a after the swap
    folder = _copy(bundles, "auto", tmp_path)
    hs = hot_swappable(Restorer(folder, every=1, hysteresis=1))
    assert isinstance(hs, HotSwapRestorer)
    hs.infer(xa)
    assert hs.runs == "student"
    set_deploy(folder, "routes")
    assert hs.request_reload() and hs.wait_loaded() and hs.reload_state == "ready", hs.reload_error
    assert np.allclose(hs.infer(xa), xa * 2.0, atol=1e-6) and hs.status()["deploy"] == "routes"
    assert hs.swaps == 1 and hs.status()["runs"] == "route"
    hs.close()
    # --deploy auto given: it holds over the swap; the current task and the prompt mix carry over
    folder = _copy(bundles, "auto", tmp_path / "given")
    hs = hot_swappable(Restorer(folder, every=100, hysteresis=1, deploy="auto"))
    hs.infer(xa)                                        # frame 0: routed to a, the student with the mix
    w = hs.prompt_weights.copy()
    set_deploy(folder, "routes")
    assert hs.request_reload() and hs.wait_loaded() and hs.reload_state == "ready", hs.reload_error
    out = hs.infer(xa)                                  # frame 1: the router does not run (every 100)
    assert hs.swaps == 1 and hs.bundle.deploy == "routes" and hs.deploy == "auto" and hs.runs == "student"
    assert np.array_equal(hs.prompt_weights, w)
    assert np.allclose(out, xa * float(w @ np.array(FACTORS)), atol=1e-5)
    # warmed: the student, and checked (session 19) every route the new bundle may run by its route
    new = hs.active
    assert sorted(new.loaded_routes) == sorted(t for t in new.routes if not new.runs_student(t))
    assert hs.status()["student_loaded"]
    hs.close()


# ----------------------------------------------------------------------------------- CLI
def test_tir_deploy_shows_and_sets_the_table(bundles, tmp_path, capsys, monkeypatch):
    from tir.tools.cli import main

    folder = _copy(bundles, "auto", tmp_path)
    assert main(["deploy", "--bundle", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "deploy auto" in out and "auto at 0.3 dB (recorded in the manifest)" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["a"], ["b"])}
    assert rows == {"a": ["30.00", "30.20", "-0.20", "student"], "b": ["20.00", "21.00", "-1.00", "routes"]}
    assert main(["deploy", "--bundle", str(folder), "--set", "auto", "--margin-db", "1.5"]) == 0
    assert load_bundle(folder).auto_deploy["tasks"] == {"a": "student", "b": "student"}
    capsys.readouterr()
    assert main(["deploy", "--bundle", str(folder), "--set", "auto", "--margin-db", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tir deploy: error: auto deploy margin -1.0 must be a number of dB ≥ 0 (default 0.3)"]
    before = (folder / "manifest.json").read_bytes()
    assert main(["deploy", "--bundle", str(folder), "--set", "auto", "--margin-db", "1e308"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "must be ≤ 3 dB" in err[0] and (folder / "manifest.json").read_bytes() == before
    # --out under a file, inside the bundle itself, or a copy that fails half way: one line, nothing left
    (tmp_path / "a_file").write_text("x")
    for out, says in ((tmp_path / "a_file" / "copy", "cannot write the copy"),
                      (folder / "copy", "is inside the bundle")):
        assert main(["deploy", "--bundle", str(folder), "--set", "routes", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and not out.exists(), err
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in (bundles / "auto").iterdir())
    real_copytree = shutil.copytree

    def full_disk(src, dst, **kw):          # the disk fills up at the first route file
        if str(src).endswith(".onnx"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return shutil.copy2(src, dst, **kw)

    monkeypatch.setattr(shutil, "copytree", lambda s, d, **kw: real_copytree(s, d, copy_function=full_disk, **kw))
    assert main(["deploy", "--bundle", str(folder), "--set", "routes", "--out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and not (tmp_path / "full").exists()
    monkeypatch.undo()
    # tir distill refuses the margin before it trains anything (no work folder made)
    assert main(["distill", "--bundle", str(folder), "--out", str(tmp_path / "d"), "--margin-db", "30"]) == 2
    assert "must be ≤ 3 dB" in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not (tmp_path / "d.work").exists()
    assert main(["deploy", "--bundle", str(bundles / "routes"), "--set", "student", "--out",
                 str(tmp_path / "o")]) == 2
    assert "has no student" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_deploy_auto_on_the_command_lines(bundles, capsys):
    import argparse

    from tir.tools import distill, run
    from tir.tools.cli import main

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    assert parser.parse_args(["--deploy", "auto"]).deploy == "auto"
    parser = argparse.ArgumentParser()
    distill.add_arguments(parser)
    args = parser.parse_args(["--bundle", "b", "--out", "o", "--deploy", "auto", "--margin-db", "0.5"])
    assert (args.deploy, args.margin_db) == ("auto", 0.5)
    rc = main(["bench", "--mode", "model", "--model", str(bundles / "auto"), "--deploy", "routes", "student",
               "auto", "--task", "a", "--frames", "2", "--warmup", "1", "--size", "32x24", "--no-progress",
               "--backend", "onnxruntime"])
    assert rc == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.startswith("model ")]
    assert [r[-2] for r in rows] == ["routes", "student", "auto:student"]
    assert "deploy: auto at 0.3 dB (student: a; routes: b)" in out


def test_the_manifests_auto_runs_the_routes_on_a_backend_without_the_student(bundles, monkeypatch):
    """deploy: auto from the manifest means the better of the two *that runs here*: on TensorRT or
    torch the student cannot run, so every task runs its route; a --deploy the user gave is refused."""
    import tir.engines.backends as backends

    monkeypatch.setattr(backends, "check_backend", lambda path, backend: None)   # no TensorRT here
    bundle = bundles / "auto"
    r = Restorer(bundle, backend="tensorrt")
    assert r.deploy == "auto" and not r.uses_student
    assert set(r.deploy_tasks.values()) == {"routes"}
    with pytest.raises(ValueError, match="ONNX Runtime only"):
        Restorer(bundle, backend="tensorrt", deploy="auto")


# ------------------------------------------------------------------------- measured on the user's path
def test_a_table_measured_on_the_users_path_is_what_auto_chooses_on(bundles, tmp_path):
    """``user_val`` (tir deploy --measure) overrides tir distill's val numbers: the student's b is
    1.0 dB below its route on distill's protocol but 0.1 dB above it on the user's path."""
    from tir.engines.bundle import AUTO_SOURCE_USER, auto_deploy_entry

    folder = _copy(bundles, "auto", tmp_path)
    assert load_bundle(folder).auto_deploy["tasks"] == {"a": "student", "b": "routes"}
    user = {"split": "val", "sets": ["cam8"], "student": {"a": 25.0, "b": 22.1}, "routes": {"a": 26.0, "b": 22.0}}
    out = set_deploy(folder, "auto", user_val=user)
    assert out.auto_deploy["tasks"] == {"a": "routes", "b": "student"}
    assert out.auto_deploy["source"] == AUTO_SOURCE_USER and out.student["metrics"]["user_val"] == user
    assert out.auto_deploy["delta_db"] == {"a": -1.0, "b": 0.1}
    # the table is recomputed from it afterwards too (another margin)
    assert set_deploy(folder, "auto", margin_db=1.0).auto_deploy["tasks"] == {"a": "student", "b": "student"}
    # a user table lacking a task is refused, nothing written
    before = (folder / "manifest.json").read_bytes()
    with pytest.raises(BundleError, match=r"no student and route val PSNR for tasks \['b'\]"):
        set_deploy(folder, "auto", user_val={"student": {"a": 1.0}, "routes": {"a": 1.0}})
    assert (folder / "manifest.json").read_bytes() == before
    with pytest.raises(BundleError, match="no student to measure"):
        set_deploy(bundles / "routes", "routes", user_val=user)
    manifest = load_bundle(folder).manifest
    assert auto_deploy_entry(manifest, 0.3)["tasks"] == {"a": "routes", "b": "student"}


def test_tir_deploy_measure_records_the_users_path_table(bundles, tmp_path, capsys, monkeypatch):
    from tir.engines.training import camera_eval
    from tir.tools.cli import main

    folder = _copy(bundles, "auto", tmp_path)
    calls = []

    def fake(bundle, sets, split, frames, threads=None, margin_db=None):
        calls.append((str(bundle), sets, split, frames))
        return {"split": split, "sets": ["cam8", "cam16"], "student": {"a": 20.0, "b": 30.0},
                "routes": {"a": 21.0, "b": 29.0}}

    monkeypatch.setattr(camera_eval, "user_path_table", fake)
    assert main(["deploy", "--bundle", str(folder), "--measure", "all"]) == 2      # --measure needs --set
    assert "give --set too" in capsys.readouterr().err and not calls
    assert main(["deploy", "--bundle", str(folder), "--set", "auto", "--measure", "all", "--measure-frames", "5"]) == 0
    out = capsys.readouterr().out
    assert calls == [(str(folder), "all", "val", 5)]
    assert "user's path, val, sets cam8, cam16" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["a"], ["b"])}
    assert rows == {"a": ["20.00", "21.00", "-1.00", "routes"], "b": ["30.00", "29.00", "+1.00", "student"]}
    assert main(["deploy", "--bundle", str(bundles / "routes"), "--set", "routes", "--measure", "all"]) == 2
    assert "no student to measure" in capsys.readouterr().err
    # with a tone column (a made contrast-carrying; b's tone number is dropped: b carries no contrast)
    from tir.engines import bundle as bundle_mod

    monkeypatch.setattr(bundle_mod, "contrast_carrying", lambda manifest: {"a": "clean"})
    monkeypatch.setattr(camera_eval, "user_path_table",
                        lambda *a, **kw: {**fake(*a, **kw), "tone": {"a": 20.9, "b": 40.0}})
    assert main(["deploy", "--bundle", str(folder), "--set", "auto", "--measure", "all"]) == 0
    out = capsys.readouterr().out
    assert "tone where tone − best ≥ −0.3 dB, else the student" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["a"], ["b"])}
    assert rows == {"a": ["20.00", "21.00", "-1.00", "20.90", "tone"], "b": ["30.00", "29.00", "+1.00", "40.00", "student"]}
    assert load_bundle(folder).auto_deploy["tone_delta_db"] == {"a": -0.1}


def test_user_path_table_averages_each_camera_once(bundles, monkeypatch):
    from tir.engines import bundle as bundle_mod
    from tir.engines.training import camera_eval

    seen = []

    def fake_eval(bundle, name, split, seed, max_frames, backend, threads, true_routes, root, deploy=None, **kw):
        seen.append((name, deploy, split, max_frames, true_routes))
        tone = isinstance(deploy, dict)
        base = {"cam8": 20.0, "cam16": 30.0}[name] + (1.0 if deploy == "student" else 0.0) + (3.0 if tone else 0.0)
        return {"per_task": {"a": {"auto": base}, "b": {"auto": base + 2}}}

    class DS:
        def __init__(self, clean):
            self.clean = clean

    monkeypatch.setattr(camera_eval, "evaluate_set", fake_eval)
    monkeypatch.setattr(camera_eval.dsets, "parse_sets", lambda s: ["cam8", "real", "cam16"] if s == "all" else list(s))
    monkeypatch.setattr(camera_eval.dsets, "dataset", lambda n: DS(n != "real"))
    t = camera_eval.user_path_table(bundles / "auto", "all", max_frames=4, progress=False)
    assert t["sets"] == ["cam8", "cam16"] and t["split"] == "val"
    assert t["student"] == {"a": 26.0, "b": 28.0} and t["routes"] == {"a": 25.0, "b": 27.0}
    assert "tone" not in t     # no route carries a contrast step: nothing to measure with the tone
    assert {s[1] for s in seen} == {"student", "routes"} and all(s[2:] == ("val", 4, False) for s in seen)
    # a contrast-carrying a (partner clean): measured a third time, a on tone, b as auto picks it (student)
    seen.clear()
    monkeypatch.setattr(bundle_mod, "contrast_carrying", lambda manifest: {"a": "clean"})
    t = camera_eval.user_path_table(bundles / "auto", "all", max_frames=4, progress=False)
    assert t["tone"] == {"a": 28.0}
    assert [s[1] for s in seen if isinstance(s[1], dict)] == [{"a": "tone", "b": "student"}] * 2
    monkeypatch.setattr(camera_eval.dsets, "parse_sets", lambda s: ["real"] if s == "real" else list(s))
    with pytest.raises(ValueError, match="clean target"):
        camera_eval.user_path_table("B", "real")




@pytest.mark.parametrize("mode", ["deploy --out", "add_student"])
def test_a_new_copy_whose_manifest_cannot_be_written_is_removed(bundles, tmp_path, monkeypatch, mode):
    # tir deploy --set ... --out NEW and tir distill's add_student: a full disk after the model
    # files were copied left a bundle at NEW with the source's manifest (the deploy or student
    # not in it) which a second try then refused or mistook for an earlier output.
    import errno

    from tir.engines import bundle as bundle_module

    real = bundle_module._manifest_text

    def full(manifest):
        raise OSError(errno.ENOSPC, "No space left on device")

    def make():
        if mode == "add_student":
            return add_student(bundles / "routes", tmp_path / "new", _student_onnx(tmp_path / "s.onnx"),
                               {"prompts": ["a", "b", "clean"], "metrics": METRICS}, deploy="auto")
        return set_deploy(bundles / "auto", "routes", out_dir=tmp_path / "new")

    monkeypatch.setattr(bundle_module, "_manifest_text", full)
    with pytest.raises(BundleError, match="No space left on device"):
        make()
    assert not (tmp_path / "new").exists()
    monkeypatch.setattr(bundle_module, "_manifest_text", real)
    assert make().deploy == ("auto" if mode == "add_student" else "routes")


@pytest.mark.parametrize("change, says", [
    (lambda s: s.__setitem__("metrics", "x"), "student.metrics must be an object"),
    (lambda s: s["metrics"].__setitem__("val_psnr", {"a": "abc"}), "student.metrics.val_psnr values {'a': 'abc'}"),
    (lambda s: s["metrics"].__setitem__("teacher_val_psnr", [1, 2]), "student.metrics.teacher_val_psnr must be an"),
    (lambda s: s["metrics"].__setitem__("user_val", {"student": {"a": float("nan")}}),
     "student.metrics.user_val.student values {'a': nan} must be finite"),
])
def test_a_tampered_student_metrics_table_is_refused_on_load(bundles, tmp_path, capsys, change, says):
    # student.metrics = "x" was an AttributeError traceback out of `tir deploy` (exit 1) and ran in tir run
    from tir.tools.cli import main

    folder = _copy(bundles, "auto", tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest["student"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=re.escape(says)):
        load_bundle(folder)
    assert main(["deploy", "--bundle", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
