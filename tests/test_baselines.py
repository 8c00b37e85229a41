import json

import numpy as np
import onnxruntime as ort
import pytest

from tir.engines.training import baselines as bl
from tir.engines import degrade as deg
from tir.engines.metrics import psnr


def scene(seed=0, h=64, w=80):
    """Sky-to-road gradient with warm blobs: the structure naive destriping destroys."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.02 + 0.85 * yy / h
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, 10)
        img += 0.25 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return np.clip(img, 0, 1).astype(np.float32)


def test_noise_estimate_tracks_true_sigma():
    rng = np.random.default_rng(0)
    clean = scene(0, 128, 160)
    assert bl.estimate_noise_sigma(clean) < 0.002
    for sigma in (0.02, 0.05):
        noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
        assert bl.estimate_noise_sigma(noisy) == pytest.approx(sigma, rel=0.15)


def test_destripe_removes_columns_but_keeps_gradient():
    clean = scene(1, 128, 160)
    rng = np.random.default_rng(1)
    striped = clean + 0.03 * rng.standard_normal(160).astype(np.float32)[None, :]
    out = bl.destripe(striped)
    assert psnr(out, clean) > psnr(striped, clean) + 6
    # whole-frame row/column mean subtraction would flatten this; the profile high-pass keeps it
    assert (out[-8:].mean() - out[:8].mean()) == pytest.approx(clean[-8:].mean() - clean[:8].mean(), abs=0.02)


def test_classical_chain_restores_contrast_and_leaves_clean_frames_nearly_alone():
    clean = np.stack([scene(s, 96, 128) for s in range(3)])
    low = deg.degrade(clean, "contrast", 0)
    out = bl.classical_chain(low)
    assert out.shape == low.shape and out.dtype == np.float32
    assert np.mean([psnr(o, c) for o, c in zip(out, clean)]) > np.mean([psnr(d, c) for d, c in zip(low, clean)]) + 3
    # a clean frame: no stretch (wide range), no NLM (no noise); only mild sharpening
    assert psnr(bl.classical_chain(clean[0]), clean[0]) > 30
    with pytest.raises(ValueError, match="destripe"):
        bl.classical_chain(clean, steps=("magic",))


def test_classical_chain_denoises_noisy_frames():
    clean = scene(3, 96, 128)
    noisy = np.clip(clean + 0.04 * np.random.default_rng(3).standard_normal(clean.shape), 0, 1).astype(np.float32)
    assert psnr(bl.classical_chain(noisy, steps=("destripe", "denoise")), clean) > psnr(noisy, clean) + 3


@pytest.mark.parametrize("mode", bl.NETWORK_BASELINES)
def test_network_baselines_train_export_and_report(tmp_path, mode):
    train = np.stack([scene(s, 64, 64) for s in range(4)])
    tasks = ("contrast", "noise")
    res = bl.train_network_baseline(mode, train, tmp_path, tasks=tasks, steps_per_task=3, crop=32,
                                    batch=2, preset="tiny", eval_clean=train[:2], threads=1)
    assert res["total_steps"] == 6 and res["file"] == f"{mode}.onnx"
    summary = json.loads((tmp_path / f"{mode}.json").read_text())
    assert summary["mode"] == mode
    if mode == "sequential":
        assert list(summary["forgetting_psnr"]) == list(tasks)
        assert set(summary["forgetting_psnr"]["noise"]) == set(tasks)
        assert (tmp_path / "sequential-after-contrast.onnx").is_file()
    else:
        assert set(summary["psnr"]) == set(tasks)
    sess = ort.InferenceSession(str(tmp_path / res["file"]), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: train[:1, None]})[0]
    assert y.shape == (1, 1, 64, 64) and np.isfinite(y).all()
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["tir.multiple"] == "8"


def test_unknown_network_baseline_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="sequential, joint"):
        bl.train_network_baseline("bagging", np.zeros((2, 32, 32), np.float32), tmp_path)


def test_tir_train_baseline_mode_trains_the_comparison_network(tmp_path, capsys):
    import cv2

    from tir.tools import cli

    root = tmp_path / "roadscene-ir"
    root.mkdir()
    for split, names in (("train", ["a", "b", "c"]), ("val", ["d", "e"])):
        for k, name in enumerate(names):
            cv2.imwrite(str(root / f"{name}.png"), (255 * scene(k, 32, 40)).astype(np.uint8))
        (tmp_path / f"roadscene-ir-{split}.txt").write_text("".join(f"{n}.png\n" for n in names))
    work = tmp_path / "joint"
    rc = cli.main(["train", "--baseline", "joint", "--preset", "tiny", "--data", str(root), "--work-dir", str(work),
                   "--tasks", "contrast,noise", "--steps", "2", "--crop", "16", "--batch", "2", "--threads", "1"])
    assert rc == 0
    summary = json.loads((work / "joint.json").read_text())
    assert summary["total_steps"] == 4 and set(summary["psnr"]) == {"contrast", "noise"}
    assert summary["command"].startswith("tir train --baseline joint")
    sess = ort.InferenceSession(str(work / "joint.onnx"), providers=["CPUExecutionProvider"])
    x = scene(3, 32, 40)[None, None]
    assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == x.shape
    assert "joint network" in capsys.readouterr().out
    assert cli.main(["train", "--baseline", "joint", "--data", str(tmp_path / "nowhere"),
                     "--work-dir", str(work)]) == 2
