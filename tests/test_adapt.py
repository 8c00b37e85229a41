"""Router adaptation (engines/adapt.py, tir adapt, Restorer adapt=N) on synthetic embeddings/frames."""
import json

import numpy as np
import pytest
import torch

from tir.edge.sources.synthetic import render_frames
from tir.engines import adapt as A
from tir.engines.bundle import load_bundle, sha256_file, write_bundle
from tir.engines.degrade import TASKS
from tir.engines.restorer import Restorer
from tir.tools.cli import main as tir

CLASSES = list(TASKS) + ["clean"]
SIZE = (160, 120)  # router input (w, h) of the test bundle
SOURCE_URI = "synthetic://?size=160x120&realtime=0&ffc=0&degrade=cycle&degrade_period=0.2"


# ---------------------------------------------------------------------------------------------
# math on synthetic embeddings
# ---------------------------------------------------------------------------------------------

def _clusters(rng, centres, per_class, spread, transform=None, offsets=None):
    """Unit embeddings around each centre; labels; optional per-class offsets and a transform."""
    emb, labels = [], []
    for k, c in enumerate(centres):
        x = c + spread * rng.standard_normal((per_class, len(c)))
        if offsets is not None:
            x = x + offsets[k]
        emb.append(x)
        labels += [k] * per_class
    x = np.concatenate(emb)
    if transform is not None:
        x = transform(x)
    return x / np.linalg.norm(x, axis=1, keepdims=True), np.array(labels)


@pytest.fixture
def source_setup():
    rng = np.random.default_rng(0)
    d, k = 12, 4
    book = np.linalg.qr(rng.standard_normal((d, d)))[0][:k]  # orthonormal codebook rows
    emb, labels = _clusters(rng, book, 400, 0.15)
    names = [f"c{i}" for i in range(k)]
    return book, names, A.source_stats(emb, labels, names)


def test_ledoit_wolf_shrinks_small_samples_and_not_large_ones():
    rng = np.random.default_rng(1)
    few = rng.standard_normal((20, 48))
    cov, alpha = A.ledoit_wolf(few)
    assert 0.3 < alpha <= 1.0                          # 20 samples in 48-D: heavy shrinkage
    assert np.linalg.eigvalsh(cov).min() > 0           # positive definite although rank(S) < 48
    many = rng.standard_normal((20000, 4)) @ np.diag([1.0, 2.0, 3.0, 4.0])
    cov, alpha = A.ledoit_wolf(many)
    assert alpha < 0.01
    np.testing.assert_allclose(np.diag(cov), [1, 4, 9, 16], rtol=0.05)


def test_source_stats_are_moments_per_class(source_setup):
    book, names, stats = source_setup
    assert stats["count"] == 1600 and stats["classes"]["c2"]["count"] == 400
    mean = np.array(stats["classes"]["c1"]["mean"])
    assert np.dot(mean / np.linalg.norm(mean), book[1]) > 0.95  # the class mean points at its entry
    cov = np.array(stats["covariance"])
    np.testing.assert_allclose(cov, cov.T)


def test_coral_maps_target_mean_and_covariance_to_source(source_setup):
    book, names, stats = source_setup
    rng = np.random.default_rng(2)
    mix = np.eye(12) + 0.3 * rng.standard_normal((12, 12))
    target, _ = _clusters(rng, book, 150, 0.15, transform=lambda x: 0.6 * x @ mix.T + 0.2)
    fit = A.fit_adaptation(target, stats, book, names, pull_rounds=0)
    a, b = np.array(fit["A"]), np.array(fit["b"])
    y = target @ a.T + b  # the affine map itself, before the runtime renormalises
    np.testing.assert_allclose(y.mean(axis=0), stats["mean"], atol=1e-9)
    shrunk, alpha = A.ledoit_wolf(target)
    assert fit["shrinkage"] == pytest.approx(alpha)
    np.testing.assert_allclose(a @ shrunk @ a.T, stats["covariance"], atol=1e-9)  # re-coloured exactly
    assert fit["similarity_after"] > fit["similarity_before"]


def test_pull_moves_clusters_toward_their_source_centres(source_setup):
    book, names, stats = source_setup
    rng = np.random.default_rng(3)
    offsets = 0.25 * rng.standard_normal((4, 12))  # a different shift per class: not affine-global
    target, labels = _clusters(rng, book, 150, 0.15, offsets=offsets)
    centres = np.array([stats["classes"][n]["mean"] for n in names])

    def gap(fit):
        y = target @ np.array(fit["A"]).T + np.array(fit["b"])  # the pull works before renormalising
        return np.mean([np.linalg.norm(y[labels == k].mean(axis=0) - centres[k]) for k in range(4)])
    coral = A.fit_adaptation(target, stats, book, names, pull_rounds=0)
    pulled = A.fit_adaptation(target, stats, book, names, pull_rounds=3)
    assert gap(pulled) < 0.75 * gap(coral)
    assert sum(pulled["clusters"].values()) == len(target)


def test_balanced_assignment_follows_the_prior():
    # every row is nearest to class 0; rows further down are less far from class 1
    sims = np.column_stack([np.full(10, 0.9), 0.5 + 0.04 * np.arange(10)])
    assert not np.argmax(sims, axis=1).any()
    # the rows nearest class 1 move there, about as many as the prior asks (the plan is soft)
    assert A.balanced_assignment(sims, [0.5, 0.5]).tolist() == [0] * 5 + [1] * 5
    fifth = A.balanced_assignment(sims, [0.8, 0.2])
    assert fifth.tolist() == sorted(fifth.tolist()) and 1 <= fifth.sum() <= 2


def test_degenerate_input_is_refused(source_setup):
    book, names, stats = source_setup
    rng = np.random.default_rng(4)
    good, _ = _clusters(rng, book, 50, 0.15)
    with pytest.raises(A.AdaptationRefused, match="10 frames are too few"):
        A.fit_adaptation(good[:10], stats, book, names)
    same = np.repeat(good[:1], 64, axis=0) + 1e-7 * rng.standard_normal((64, 12))
    with pytest.raises(A.AdaptationRefused, match="barely differ"):
        A.fit_adaptation(same, stats, book, names)
    bad = good.copy()
    bad[3, 0] = np.nan
    with pytest.raises(A.AdaptationRefused, match="non-finite"):
        A.fit_adaptation(bad, stats, book, names)
    with pytest.raises(A.AdaptationRefused, match="ill-conditioned"):
        A.fit_adaptation(good, stats, book, names, max_condition=1.0)
    # one class only, far from its centre: re-colouring it to the whole source spread scatters it
    # away from the codebook, which the label-free check catches
    lone, _ = _clusters(rng, book[:1], 200, 0.02)
    with pytest.raises(A.AdaptationRefused, match="moves these frames away"):
        A.fit_adaptation(lone, stats, book, names)


def test_apply_adaptation_identity_renormalises_and_checks_shape():
    e = np.random.default_rng(5).standard_normal((5, 6))
    np.testing.assert_array_equal(A.apply_adaptation(e, None), e)
    y = A.apply_adaptation(e, {"A": 2 * np.eye(6), "b": np.zeros(6)})
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0)
    np.testing.assert_allclose(y, e / np.linalg.norm(e, axis=1, keepdims=True))
    with pytest.raises(ValueError, match="re-run tir adapt"):
        A.apply_adaptation(e, {"A": np.eye(4), "b": np.zeros(4)})


def test_online_adapter_states(source_setup):
    book, names, stats = source_setup
    router = {"codebook": book.tolist(), "tasks": names, A.SOURCE_KEY: stats}
    target, _ = _clusters(np.random.default_rng(6), book, 20, 0.15)
    adapter = A.OnlineAdapter(router, frames=64, source_uri="synthetic://")
    assert adapter.state == "collecting 0/64"
    assert adapter.add(target[:40]) is None and adapter.state == "collecting 40/64"
    entry = adapter.add(target[40:])
    assert adapter.state == "adapted" and entry["frames"] == 64 and entry["source"] == "synthetic://"
    assert adapter.add(target[:5]) is None  # done: later frames are not collected
    few = A.OnlineAdapter(router, frames=8)
    few.add(target[:8])
    assert few.state.startswith("refused: 8 frames are too few")
    with pytest.raises(A.AdaptationRefused, match="no router source statistics"):
        A.OnlineAdapter({"codebook": book.tolist(), "tasks": names})


# ---------------------------------------------------------------------------------------------
# a tiny real bundle: 7 tasks + clean, a router of hand-made degradation features
# ---------------------------------------------------------------------------------------------

class Scale(torch.nn.Module):
    def forward(self, x):
        return x * 1.0


class FeatureRouter(torch.nn.Module):
    """Unit embedding of 6 fixed features: mean, contrast, fine and coarse band energy, gradients."""

    def forward(self, x):
        f = torch.nn.functional
        m = x.mean(dim=(1, 2, 3))
        s = ((x - m[:, None, None, None]) ** 2).mean(dim=(1, 2, 3)).sqrt()
        hp = x - f.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        low = f.avg_pool2d(x, 4)
        bp = low - f.avg_pool2d(low, 3, 1, 1, count_include_pad=False)
        e1 = torch.log((hp * hp).mean(dim=(1, 2, 3)) + 1e-6)
        e2 = torch.log((bp * bp).mean(dim=(1, 2, 3)) + 1e-6)
        gx = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))
        gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        feats = torch.stack([4 * m - 2, 8 * s - 1, e1 / 4 + 2, e2 / 4 + 2, 20 * gx - 1, 20 * gy - 1], dim=1)
        return f.normalize(feats, dim=1)


def _export(module, path):
    torch.onnx.export(module, (torch.rand(1, 1, SIZE[1], SIZE[0]),), str(path), input_names=["frame"],
                      output_names=["out"], opset_version=17, dynamo=False,
                      dynamic_axes={"frame": {0: "n", 2: "h", 3: "w"}, "out": {0: "n"}})
    return path


@pytest.fixture(scope="module")
def adapt_bundle(tmp_path_factory):
    """A bundle whose codebook is the normalised class means of its router on synthetic frames,
    with source statistics added by add_source_stats."""
    from tir.engines.router import degraded_batches, prepare_frames
    import onnxruntime as ort

    tmp = tmp_path_factory.mktemp("adapt")
    scale = _export(Scale(), tmp / "scale.onnx")
    router = _export(FeatureRouter(), tmp / "router.onnx")
    raw = render_frames(6, size=SIZE, seed=3).astype(np.float32)
    frames = (raw - raw.min()) / (raw.max() - raw.min())
    sess = ort.InferenceSession(str(router), providers=["CPUExecutionProvider"])
    means = np.zeros((len(CLASSES), 6))
    for k, batch in degraded_batches(prepare_frames(frames, SIZE)[:, 0], CLASSES, 1, 0, progress=False):
        means[k] += sess.run(None, {"frame": batch})[0].sum(axis=0)
    book = means / np.linalg.norm(means, axis=1, keepdims=True)
    meta = {"name": "tiny-adapt", "router": {"codebook": book.tolist(), "tasks": CLASSES, "threshold": -1.0,
                                             "temperature": 0.1, "input_size": list(SIZE)}}
    write_bundle(tmp / "bundle", {t: scale for t in TASKS}, router, meta)
    write_bundle(tmp / "nostats", {t: scale for t in TASKS}, router, meta)
    A.add_source_stats(tmp / "bundle", frames, "synthetic seed 3", draws=2, progress=False)
    return tmp


def test_source_stats_stored_in_manifest_with_hashes_intact(adapt_bundle):
    bundle = load_bundle(adapt_bundle / "bundle")  # verifies every sha256
    stats = bundle.router[A.SOURCE_KEY]
    assert stats["frames"] == 6 and stats["draws"] == 2 and stats["count"] == 6 * (7 * 2 + 1)
    assert set(stats["classes"]) == set(CLASSES) and np.array(stats["covariance"]).shape == (6, 6)
    assert stats["data"] == "synthetic seed 3"


def test_source_stats_write_the_contrast_prior_and_can_write_it_alone(adapt_bundle, tmp_path):
    import shutil

    from tir.engines.contrast_gate import lowpass_span

    bundle = load_bundle(adapt_bundle / "bundle")
    prior = bundle.router["contrast_span"]          # written with the statistics ("all")
    assert prior["frames"] == 6 and 0 < prior["median"] <= 1 and prior["data"] == "synthetic seed 3"
    shutil.copytree(adapt_bundle / "nostats", tmp_path / "b")
    frames = np.stack([np.full(SIZE[::-1], 0.2, np.float32) + np.linspace(0, a, SIZE[0], dtype=np.float32)
                       for a in (0.2, 0.4, 0.6)])
    A.add_source_stats(tmp_path / "b", frames, "ramps", what="contrast", progress=False)
    router = load_bundle(tmp_path / "b").router
    assert A.SOURCE_KEY not in router                 # the router was not run
    assert router["contrast_span"]["median"] == pytest.approx(lowpass_span(frames[1]))
    with pytest.raises(ValueError, match="what must be one of"):
        A.add_source_stats(tmp_path / "b", frames, "ramps", what="everything", progress=False)


def test_adapted_bundle_is_a_verified_copy_and_original_is_untouched(adapt_bundle, tmp_path):
    src = adapt_bundle / "bundle"
    before = {p.name: sha256_file(p) for p in src.iterdir()}
    entry = {"A": np.eye(6).tolist(), "b": [0.0] * 6, "frames": 64, "source": "synthetic://"}
    copy = A.write_adapted_bundle(src, tmp_path / "copy", entry)
    assert {p.name: sha256_file(p) for p in src.iterdir()} == before
    assert A.ADAPTATION_KEY not in load_bundle(src).router
    again = load_bundle(tmp_path / "copy")  # re-verifies every file against its sha256
    assert again.router[A.ADAPTATION_KEY]["frames"] == 64 and again.manifest["adapted_from"] == str(src)
    assert again.manifest["files"] == load_bundle(src).manifest["files"]
    with pytest.raises(Exception, match="already exists"):
        A.write_adapted_bundle(src, tmp_path / "copy", entry)


def test_tir_adapt_end_to_end_on_synthetic(adapt_bundle, tmp_path, capsys):
    out = tmp_path / "adapted"
    report = tmp_path / "adapt.json"
    code = tir(["adapt", "--bundle", str(adapt_bundle / "bundle"), "--source", SOURCE_URI, "--frames", "48",
                "--out", str(out), "--json", str(report)])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "router decisions on the 48 collected frames" in text.out and "adapted bundle written to" in text.out
    adapted = load_bundle(out)
    entry = adapted.router[A.ADAPTATION_KEY]
    assert entry["frames"] == 48 and entry["source"] == SOURCE_URI and entry["mode"] == "offline"
    # the adapted bundle's contrast gate starts from this camera's own contrast
    span = adapted.router["contrast_span"]
    assert span["camera"] and span["frames"] == 48 and span["data"] == SOURCE_URI
    assert span["training_span"] == load_bundle(adapt_bundle / "bundle").router["contrast_span"]
    from tir.engines.restorer import Restorer

    assert Restorer(out).contrast_gate.prior == pytest.approx(span["median"])
    assert np.array(entry["A"]).shape == (6, 6)
    result = json.loads(report.read_text())
    assert sum(result["before"].values()) == sum(result["after"].values()) == 48
    # the runtime applies the stored map: the copy and the original classify differently in general,
    # and exactly as apply_adaptation says
    frame = np.random.default_rng(0).random((1, 1, SIZE[1], SIZE[0])).astype(np.float32)
    r = Restorer(out)
    emb = r.embed(frame)
    expected = A.apply_adaptation(emb, entry) @ np.array(adapted.router["codebook"]).T
    assert r.classify(frame)[0]["similarity"] == pytest.approx(expected.max(), abs=1e-6)
    assert r.status()["adapt"]["state"] == "adapted"


def test_tir_adapt_errors_are_one_line(adapt_bundle, tmp_path, capsys):
    assert tir(["adapt", "--bundle", str(adapt_bundle / "nostats"), "--source", SOURCE_URI, "--frames", "40",
                "--out", str(tmp_path / "x")]) == 2
    assert "no router source statistics" in capsys.readouterr().err
    assert tir(["adapt", "--bundle", str(adapt_bundle / "bundle"), "--source", SOURCE_URI + "&frames=10",
                "--frames", "40", "--out", str(tmp_path / "y")]) == 2
    assert "ended after 10 of 40" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert tir(["adapt", "--bundle", str(adapt_bundle / "bundle"), "--frames", "40"]) == 2
    assert "exactly one of" in capsys.readouterr().err
    # too few frames is refused before any is collected (the source here would end after 10)
    assert tir(["adapt", "--bundle", str(adapt_bundle / "bundle"), "--source", SOURCE_URI + "&frames=10",
                "--frames", "8", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "--frames 8 are too few" in err and "nothing was collected" in err and "ended after" not in err


def test_restorer_status_during_online_adaptation(adapt_bundle, tmp_path):
    save = tmp_path / "online"
    # hysteresis 1: no switch is ever pending, whose confirming verdicts come between the schedule's turns
    r = Restorer(adapt_bundle / "bundle", every=8, hysteresis=1, adapt=40, adapt_save=save, source_uri=SOURCE_URI)
    assert r.status()["adapt"] == {"state": "collecting 0/40", "frames": 40, "saved": None}
    x = A.collect_frames(SOURCE_URI, 60, progress=False)
    for i in range(39):
        r.infer(x[i][None, None])
    assert r.status()["adapt"]["state"] == "collecting 39/40"
    r.infer(x[39][None, None], meta={"ffc": True})  # FFC frames are not collected
    assert r.status()["adapt"]["state"] == "collecting 39/40"
    r.infer(x[40][None, None])
    status = r.status()["adapt"]
    assert status["state"] == "adapted" and status["saved"] == str(save)
    assert load_bundle(save).router[A.ADAPTATION_KEY]["mode"] == "online"
    span = load_bundle(save).router["contrast_span"]   # the gate's history of this camera goes along
    assert span["camera"] and 1 <= span["frames"] <= r.contrast_gate.status()["frames"] and span["data"] == SOURCE_URI
    decisions = r.decisions
    for i in range(41, 60):
        r.infer(x[i][None, None])
    assert r.decisions - decisions == 2  # back to every 8th frame (48, 56) after collecting
    refused = Restorer(adapt_bundle / "bundle", adapt=8)
    for i in range(8):
        refused.infer(x[i][None, None])
    assert refused.status()["adapt"]["state"].startswith("refused: 8 frames are too few")


def test_tir_run_adapt_shows_state_in_status_line_and_stats(adapt_bundle, tmp_path, capsys):
    save = tmp_path / "online"
    code = tir(["run", "--model", str(adapt_bundle / "bundle"), "--source", SOURCE_URI + "&frames=60",
                "--frames", "60", "--adapt", "40", "--adapt-save", str(save),
                "--output", f"file://{tmp_path / 'rec'}?preview=0"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "adapting the router on the first 40 frames" in out.out
    status = [line for line in out.out.splitlines() if line.startswith("fps")]
    assert "adapt adapted" in status[-1] and "adapt collecting" not in status[-1]
    assert load_bundle(save).router[A.ADAPTATION_KEY]["source"] == SOURCE_URI + "&frames=60"


def test_pipeline_stats_carry_the_adapt_state(adapt_bundle):
    from tir.edge.pipeline import Pipeline
    from tir.edge.sources import open_source

    restorer = Restorer(adapt_bundle / "bundle", adapt=1000)
    pipeline = Pipeline(open_source(SOURCE_URI + "&frames=5"), restorer, [], frames=5)
    pipeline.start()
    pipeline.wait(30)
    pipeline.stop()
    assert pipeline.snapshot()["model"]["adapt"] == {"state": "collecting 5/1000", "frames": 1000, "saved": None}


def test_tir_run_adapt_option_errors(adapt_bundle, capsys):
    bundle = str(adapt_bundle / "bundle")
    assert tir(["run", "--model", bundle, "--source", SOURCE_URI, "--adapt-save", "/tmp/x", "--frames", "1"]) == 2
    assert "--adapt-save DIR needs --adapt N" in capsys.readouterr().err
    assert tir(["run", "--model", bundle, "--source", SOURCE_URI, "--adapt", "40", "--task", "noise",
                "--frames", "1"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert tir(["run", "--model", str(adapt_bundle / "nostats"), "--source", SOURCE_URI, "--adapt", "40",
                "--frames", "1"]) == 2
    assert "no router source statistics" in capsys.readouterr().err


def test_measure_adaptation_reports_before_and_after(adapt_bundle, tmp_path, capsys, monkeypatch):
    import cv2

    from tir.engines.training import datasets
    from tir.engines.degrade import make_eval_set
    from tir.engines.training.evaluate import RouterRunner

    frames = render_frames(10, size=SIZE, seed=7)
    folder = tmp_path / "cam"
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:02d}.png"), (f >> 6).astype(np.uint8))  # 14-bit counts -> 8 bit
    (tmp_path / "cam-train.txt").write_text("".join(f"{i:02d}.png\n" for i in range(7)))
    (tmp_path / "cam-test.txt").write_text("".join(f"{i:02d}.png\n" for i in range(7, 10)))
    monkeypatch.setitem(datasets.DATASETS, "cam", datasets.DataSet("cam", "cam", "synthetic", 8, "test", True))
    assert tir(["adapt", "--bundle", str(adapt_bundle / "bundle"), "--measure", "cam", "--data-root", str(tmp_path),
                "--frames", "48", "--json", str(tmp_path / "m.json")]) == 0
    assert "| `cam` | 160×120 | 3 × 8 |" in capsys.readouterr().out
    row = json.loads((tmp_path / "m.json").read_text())["sets"]["cam"]
    # "before" is the plain router on the test frames degraded once per task (+ clean), on the
    # user's path: degraded on the 8-bit grey levels, re-quantised, through the pipeline's Preprocess
    from tir.engines.degrade import task_seed
    from tir.engines.training.adapt_measure import live_input

    bundle = load_bundle(adapt_bundle / "bundle")
    runner = RouterRunner(bundle.router_path, bundle.router)
    test = (frames[7:] >> 6).astype(np.uint8)
    right = sum(runner.classify(live_input(f, 8, t, np.random.default_rng([task_seed(t, 0), i]))[None])[0]["task"] == t
                for t in TASKS for i, f in enumerate(test))
    assert row["before"]["tasks"] == pytest.approx(right / (3 * len(TASKS)))
    # the user's path re-quantises: the router's input of a degraded 8-bit frame is on the 1/255 grid
    x = live_input(test[0], 8, "noise", np.random.default_rng(0))
    assert x.dtype == np.float32 and x.shape == test[0].shape
    assert np.allclose(np.rint(x * 255.0) / 255.0, x, atol=1e-5)
    assert (row["after"] is None) == ("refused" in row)
    assert tir(["adapt", "--bundle", str(adapt_bundle / "bundle"), "--measure", "nosuch",
                "--data-root", str(tmp_path)]) == 2
    assert "unknown data set 'nosuch'" in capsys.readouterr().err


def test_bundle_schema_checks_the_adaptation_entries(adapt_bundle, tmp_path):
    from tir.engines.bundle import BundleError, validate_manifest

    bundle = load_bundle(adapt_bundle / "bundle")
    manifest = json.loads(json.dumps(bundle.manifest))
    assert validate_manifest(manifest) == []
    manifest["router"][A.ADAPTATION_KEY] = {"A": np.eye(5).tolist(), "b": [0.0] * 6}
    assert any("router.adaptation must hold A (6×6)" in p for p in validate_manifest(manifest))
    manifest["router"].pop(A.ADAPTATION_KEY)
    manifest["router"][A.SOURCE_KEY]["mean"] = [float("nan")] * 6
    assert any("router.adapt_source must hold mean (6)" in p for p in validate_manifest(manifest))
    copy = A.write_adapted_bundle(adapt_bundle / "bundle", tmp_path / "c", {"A": np.eye(6).tolist(), "b": [0.0] * 6})
    text = (copy.path / "manifest.json").read_text().replace('"b": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]', '"b": [0.0]')
    (copy.path / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="router.adaptation must hold"):
        load_bundle(copy.path)


def test_source_stats_needs_a_named_bundle(capsys):
    """``tir adapt --source-stats`` rewrites a manifest in place, so it never defaults to the
    shipped bundle: without --bundle it refuses (exit 2) and the shipped manifest is untouched."""
    from tir.engines.bundle import default_bundle_path

    manifest = default_bundle_path() / "manifest.json"
    before = manifest.read_bytes()
    assert tir(["adapt", "--source-stats"]) == 2
    assert "--source-stats rewrites the bundle's manifest in place" in capsys.readouterr().err
    assert manifest.read_bytes() == before


def test_adapt_save_to_an_existing_folder_is_refused_before_the_run(adapt_bundle, tmp_path):
    # it used to be found out only after N frames ("not written: ... already exists") while the
    # run went on
    from tir.engines.loading import ModelNotFound, load_model

    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(ModelNotFound, match=f"--adapt-save {taken} already exists"):
        load_model(str(adapt_bundle / "bundle"), adapt=40, adapt_save=str(taken))
    model, _ = load_model(str(adapt_bundle / "bundle"), adapt=40, adapt_save=str(tmp_path / "new"))
    assert model.adapt_save == str(tmp_path / "new")


def test_source_stats_data_with_an_unknown_set_name_is_named(capsys):
    """--data SET[,SET] with one unknown name was taken for a folder: 'no such folder flir_raw16_mixed,bogus'."""
    from tir.engines.bundle import default_bundle_path
    from tir.tools.cli import main

    shipped = default_bundle_path()
    before = (shipped / "manifest.json").read_bytes()
    assert main(["adapt", "--source-stats", "--bundle", str(shipped), "--data", "flir_raw16_mixed,bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tir adapt: error: --data flir_raw16_mixed,bogus: bogus is neither a registered set "
                          "(known: roadscene, ") and err.endswith(") nor a folder\n")
    assert (shipped / "manifest.json").read_bytes() == before


def test_an_adapted_copy_whose_manifest_cannot_be_written_is_removed(adapt_bundle, tmp_path, monkeypatch):
    # A full disk after the model files were copied: the copy used to stay at --out with the
    # original's manifest (an unadapted bundle under the adapted name), and the same command was
    # then refused because --out existed.
    import errno

    from tir.engines import bundle as bundle_module
    from tir.engines.bundle import BundleError

    real = bundle_module._manifest_text

    def full(manifest):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bundle_module, "_manifest_text", full)
    entry = {"A": np.eye(6).tolist(), "b": [0.0] * 6, "frames": 64, "source": "synthetic://"}
    with pytest.raises(BundleError, match="No space left on device"):
        A.write_adapted_bundle(adapt_bundle / "bundle", tmp_path / "copy", entry)
    assert not (tmp_path / "copy").exists()
    monkeypatch.setattr(bundle_module, "_manifest_text", real)
    copy = A.write_adapted_bundle(adapt_bundle / "bundle", tmp_path / "copy", entry)  # the same command again
    assert load_bundle(copy.path).router[A.ADAPTATION_KEY]["frames"] == 64


def test_frames_that_cannot_be_held_in_memory_are_refused_at_the_first_frame(tmp_path, monkeypatch):
    # --frames 99999999999 collected for hours (every frame is kept as float32) towards a MemoryError
    from tir.edge import machine

    assert A.check_collection_fits(200, 4 * 160 * 120, available=100 * 2 ** 20) is None   # 2 × 15 MiB fit
    with pytest.raises(A.AdaptationRefused, match=r"--frames 99999999999 would need .* GiB of memory for the "
                                                  r"frames \(160x120 px float32\), 1\.0 GiB are available: ask for "
                                                  r"at most 6990 "):
        A.check_collection_fits(99999999999, 4 * 160 * 120, (160, 120)[::-1], available=2 ** 30)
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    8000000 kB\n")
    assert machine.available_memory(str(meminfo)) == 8000000 * 1024
    monkeypatch.setattr(machine, "available_memory", lambda: 2 ** 30)
    with pytest.raises(A.AdaptationRefused, match="would need"):
        A.collect_frames(SOURCE_URI, 99999999999, progress=False)


def test_a_camera_change_while_collecting_starts_the_collection_again(adapt_bundle):
    # tir run --adapt N fitted one map on embeddings of two cameras when the source reconnected
    # (or changed its frame size) half way: the map's moments mixed both cameras.
    r = Restorer(adapt_bundle / "bundle", every=8, adapt=40, source_uri=SOURCE_URI)
    x = A.collect_frames(SOURCE_URI, 90, progress=False)
    for i in range(30):
        r.infer(x[i][None, None])
    assert r.status()["adapt"]["state"] == "collecting 30/40"
    r.infer(x[30][None, None], meta={"camera_change": ["connection"]})   # the first frame of the new camera
    assert r.status()["adapt"]["state"] == "collecting 1/40 (restarted: camera change connection)"
    for i in range(31, 69):
        r.infer(x[i][None, None])
    assert r.status()["adapt"]["state"].startswith("collecting 39/40")
    r.infer(x[69][None, None])
    assert r.status()["adapt"]["state"] == "adapted" and r._adaptation["frames"] == 40
    # a camera change after the fit: the old camera's map is dropped and fitted again (next test)
    r.infer(x[70][None, None], meta={"camera_change": ["size"]})
    assert r.status()["adapt"]["state"].startswith("collecting 1/40 (refitting: camera change size")


def test_a_camera_change_after_the_fit_drops_the_map_and_fits_it_again(adapt_bundle, tmp_path):
    # tir run --adapt N kept the first camera's map after the camera changed (resolution, bit
    # depth, a reconnect): the new camera's embeddings were moved by the old camera's offset
    save = tmp_path / "adapted"
    r = Restorer(adapt_bundle / "bundle", every=8, adapt=40, source_uri=SOURCE_URI, adapt_save=str(save))
    x = A.collect_frames(SOURCE_URI, 100, progress=False)
    for i in range(40):
        r.infer(x[i][None, None])
    first = r._adaptation
    assert r.status()["adapt"] == {"state": "adapted", "frames": 40, "saved": str(save)}
    r.infer(x[40][None, None], meta={"camera_change": ["bits"]})   # the first frame of the new camera
    state = r.status()["adapt"]["state"]
    assert state == "collecting 1/40 (refitting: camera change bits; the previous camera's map was dropped)"
    assert r._adaptation is None                                   # the bundle's own (none): the old map is not applied
    for i in range(41, 80):
        r.infer(x[i][None, None])
    assert r.status()["adapt"]["state"] == "adapted (refitted after camera change bits)"
    assert r._adaptation is not None and r._adaptation is not first and r._adaptation["frames"] == 40
    # the copy --adapt-save wrote holds the first camera's map; not written over
    saved = r.status()["adapt"]["saved"]
    assert saved.startswith(f"{save} (the map of the camera before the change") and (save / "manifest.json").is_file()


def test_the_collection_says_how_long_it_takes_before_it_starts(capfd):
    # tir adapt --stride 100000 on a live camera sat at 0/200 with no hint it needed 7.7 days
    assert A.collection_estimate(200, 100000, 30.0) == \
        "200 × stride 100000 = 20,000,000 source frames ≈ 7.7 days at 30 fps"
    assert A.collection_estimate(200, 300, 30.0).endswith("≈ 33 min 20 s at 30 fps")
    assert A.collection_estimate(50, 1, 25.0) == "50 source frames ≈ 2 s at 25 fps"
    assert "no time estimate" in A.collection_estimate(10, 2, None)
    assert "as fast as they decode" in A.collection_estimate(10, 2, 30.0, paced=False)
    x = A.collect_frames("synthetic://?size=160x120&fps=60", 2, stride=3, progress=True)
    assert x.shape == (2, 120, 160)
    bar = capfd.readouterr().err.replace("\r", "\n")
    assert "collecting (2 × stride 3 = 6 source frames ≈ 0 s at 60 fps)" in bar
    A.collect_frames("synthetic://?size=160x120&realtime=0", 2, stride=3, progress=True)
    assert "6 source frames, read as fast as they decode" in capfd.readouterr().err
