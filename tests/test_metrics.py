import math

import numpy as np
import pytest

from tir.engines import metrics


def _frame(seed=0, h=40, w=48):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    return np.clip(base + 0.05 * rng.standard_normal((h, w)), 0, 1).astype(np.float32)


def test_psnr_known_values():
    a = np.zeros((16, 16), np.float32)
    assert metrics.psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-6)
    assert metrics.psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-4)
    assert metrics.psnr(a, a + 25.5, data_range=255.0) == pytest.approx(20.0, abs=1e-6)
    assert metrics.psnr(a, a) == math.inf


def test_ssim_identical_is_one_and_symmetric():
    a = _frame(0)
    b = _frame(1)
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(a, b) == pytest.approx(metrics.ssim(b, a), abs=1e-12)
    assert metrics.ssim(a, b) < 0.99


def test_ssim_constant_frames_match_closed_form():
    # Zero variance: SSIM reduces to the luminance term (2ab + C1) / (a² + b² + C1).
    a, b = 0.3, 0.7
    c1 = (0.01) ** 2
    expect = (2 * a * b + c1) / (a * a + b * b + c1)
    got = metrics.ssim(np.full((20, 20), a), np.full((20, 20), b))
    assert got == pytest.approx(expect, rel=1e-9)


def _ssim_bruteforce(a, b):
    """Direct per-window weighted statistics (Wang et al. 2004 eqs. 14-16), no filtering tricks."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    h, wd = a.shape
    vals = []
    for i in range(h - 10):
        for j in range(wd - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va = (w * (pa - ma) ** 2).sum()
            vb = (w * (pb - mb) ** 2).sum()
            cv = (w * (pa - ma) * (pb - mb)).sum()
            vals.append((2 * ma * mb + c1) * (2 * cv + c2) / ((ma * ma + mb * mb + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_bruteforce_reference():
    a = _frame(2, 24, 30)
    b = np.clip(a * 0.8 + 0.1 + 0.04 * np.random.default_rng(3).standard_normal(a.shape), 0, 1)
    assert metrics.ssim(a, b) == pytest.approx(_ssim_bruteforce(a, b), abs=1e-9)
    assert metrics.ssim_map(a, b).shape == (14, 20)


def test_ssim_decreases_with_noise():
    a = _frame(4)
    rng = np.random.default_rng(5)
    scores = [metrics.ssim(a, np.clip(a + s * rng.standard_normal(a.shape), 0, 1)) for s in (0.01, 0.05, 0.2)]
    assert scores[0] > scores[1] > scores[2]


def test_batch_helpers_and_shapes():
    a = np.stack([_frame(i) for i in range(3)])
    b = a.copy()
    b[1] += 0.1
    p = metrics.psnr_batch(a[:, None], b[:, None])
    assert p.shape == (3,) and math.isinf(p[0]) and p[1] == pytest.approx(20.0, abs=1e-4)
    s = metrics.ssim_batch(a, b)
    assert s.shape == (3,) and s[0] == pytest.approx(1.0) and s[1] < 1.0
    summ = metrics.summarize(p)
    assert summ["n"] == 1 and summ["mean"] == pytest.approx(20.0, abs=1e-4)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(np.zeros((8, 8)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="single-channel"):
        metrics.ssim(np.zeros((2, 20, 20)), np.zeros((2, 20, 20)))
