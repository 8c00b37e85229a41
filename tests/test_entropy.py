"""calibration/entropy.py: KL thresholds, percentile, min-max, streaming histograms."""
import numpy as np
import pytest

from tir.calibration.entropy import Histogram, RangeCollector, kl_threshold, percentile_threshold


def _hist(x, bins=2048):
    h = Histogram(bins)
    h.update(x)
    return h


def test_gaussian_entropy_threshold_clips_tails():
    x = np.random.default_rng(0).normal(0.0, 1.0, 400_000).astype(np.float32)
    h = _hist(x)
    t = kl_threshold(h.counts, h.bin_width)
    assert 2.0 < t < h.amax  # clips the tails, keeps the bulk
    assert h.amax > 4.0


def test_heavy_tails_are_clipped_by_entropy_not_by_minmax():
    x = np.random.default_rng(1).laplace(0.0, 0.1, 400_000).astype(np.float32)
    c = RangeCollector()
    c.update({"t": x})
    entropy = c.ranges("entropy")["t"]
    minmax = c.ranges("minmax")["t"]
    assert minmax.amax == pytest.approx(float(np.abs(x).max()))
    assert 0.2 < entropy.amax < 0.9 * minmax.amax
    assert entropy.min == pytest.approx(float(x.min())) and entropy.max == pytest.approx(float(x.max()))


def test_uniform_keeps_nearly_full_range():
    x = np.random.default_rng(2).uniform(0, 1, 300_000).astype(np.float32)
    h = _hist(x)
    assert kl_threshold(h.counts, h.bin_width) > 0.9


def test_narrow_histogram_returns_its_extent():
    counts = np.zeros(2048)
    counts[:10] = 5
    assert kl_threshold(counts, 0.5) == pytest.approx(5.0)


def test_percentile_threshold():
    x = np.random.default_rng(3).uniform(0, 10, 1_000_000).astype(np.float32)
    h = _hist(x)
    assert percentile_threshold(h.counts, h.bin_width, 50.0) == pytest.approx(5.0, abs=0.02)
    assert percentile_threshold(h.counts, h.bin_width, 99.0) == pytest.approx(9.9, abs=0.02)


def test_streaming_rebin_matches_one_shot():
    rng = np.random.default_rng(4)
    parts = [rng.normal(0, s, 100_000).astype(np.float32) for s in (0.5, 1.0, 3.0)]
    streamed = Histogram()
    for p in parts:
        streamed.update(p)
    whole = _hist(np.concatenate(parts))
    assert streamed.range == pytest.approx(whole.range)
    assert streamed.counts.sum() == pytest.approx(whole.counts.sum())
    for pct in (50.0, 90.0, 99.0):
        a = percentile_threshold(streamed.counts, streamed.bin_width, pct)
        b = percentile_threshold(whole.counts, whole.bin_width, pct)
        assert a == pytest.approx(b, abs=4 * whole.bin_width)


def test_zero_tensor_and_ints_and_bad_method():
    c = RangeCollector()
    c.update({"z": np.zeros(100, np.float32), "shape": np.array([1, 2, 3])})
    r = c.ranges("entropy")
    assert set(r) == {"z"} and r["z"].amax == 0.0
    with pytest.raises(ValueError, match="choose one of"):
        c.ranges("mse")


def test_asymmetric_range_for_relu_output():
    c = RangeCollector()
    c.update({"relu": np.random.default_rng(5).uniform(0, 2, 50_000).astype(np.float32)})
    lo, hi = c.ranges("minmax")["relu"].asymmetric()
    assert lo == 0.0 and hi == pytest.approx(2.0, abs=1e-3)


def _kl_reference(counts, bin_width, nq=128):
    """Direct transcription of the published algorithm (one KL per candidate, loops)."""
    counts = np.asarray(counts, np.float64)
    best, best_i = np.inf, counts.size
    for i in range(nq, counts.size + 1):
        p = counts[:i].copy()
        p[i - 1] += counts[i:].sum()
        edges = [(g * i) // nq for g in range(nq + 1)]
        q = np.zeros(i)
        for g in range(nq):
            a, b = edges[g], edges[g + 1]
            nonzero = p[a:b] != 0
            if nonzero.any():
                q[a:b][nonzero] = counts[a:b].sum() / nonzero.sum()
        m = p > 0
        if np.any(q[m] == 0):
            continue
        pn, qn = p / p.sum(), q / q.sum()
        kl = np.sum(pn[m] * np.log(pn[m] / qn[m]))
        if kl < best:
            best, best_i = kl, i
    return (best_i + 0.5) * bin_width if best_i < counts.size else counts.size * bin_width


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_kl_matches_direct_algorithm(seed):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.laplace(0, 0.2, 50_000), rng.normal(0, 1.5, 2_000)]).astype(np.float32)
    h = Histogram(512)  # smaller histogram keeps the loop reference quick
    h.update(x)
    assert kl_threshold(h.counts, h.bin_width) == pytest.approx(_kl_reference(h.counts, h.bin_width), rel=1e-9)
