"""Activation ranges for INT8: TensorRT-style entropy (KL) thresholds, percentile, min-max.

Entropy calibration follows the algorithm NVIDIA published for TensorRT (Migacz, "8-bit
Inference with TensorRT", GTC 2017): histogram |x| into 2048 bins; for every candidate
threshold bin i in [128, 2048) take the reference distribution P = bins[0:i] with the
outliers bins[i:] added to P[i-1], quantise bins[0:i] into 128 levels and expand back over
the non-empty bins to get Q, and pick the i minimising KL(P || Q); the threshold (amax) is
(i + 0.5) × bin width. Symmetric: TensorRT INT8 is symmetric (tensorrt_int8.md §1.3).

Histograms stream: when a batch exceeds the current range the histogram is re-binned onto
the wider range (counts spread uniformly inside each old bin), so frames need not be held
in memory.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional

import numpy as np

NUM_BINS = 2048
NUM_QUANTIZED_BINS = 128
METHODS = ("entropy", "percentile", "minmax")
DEFAULT_PERCENTILE = 99.99


class Histogram:
    """Streaming histogram of |x| over [0, range] with ``num_bins`` equal bins, plus signed min/max."""

    def __init__(self, num_bins: int = NUM_BINS):
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.float64)
        self.range = 0.0
        self.min = np.inf
        self.max = -np.inf
        self.count = 0

    @property
    def bin_width(self) -> float:
        """The width of one bin in the tensor's units (``range / num_bins``); 0 before any data."""
        return self.range / self.num_bins

    @property
    def amax(self) -> float:
        """max |x| seen."""
        return float(max(abs(self.min), abs(self.max))) if self.count else 0.0

    def _rebin(self, new_range: float) -> None:
        if self.range <= 0.0 or not self.counts.any():
            self.counts[:] = 0.0
            self.range = new_range
            return
        old_edges = np.linspace(0.0, self.range, self.num_bins + 1)
        cumulative = np.concatenate(([0.0], np.cumsum(self.counts)))
        new_edges = np.linspace(0.0, new_range, self.num_bins + 1)
        self.counts = np.diff(np.interp(new_edges, old_edges, cumulative))
        self.range = new_range

    def update(self, x: np.ndarray) -> None:
        """Add the values of ``x`` (any shape, float) to the histogram of |x|.

        Non-finite values are ignored; a larger |x| than seen so far re-bins the histogram onto
        the wider range first.
        """
        x = np.asarray(x)
        if x.size == 0:
            return
        if not np.all(np.isfinite(x)):
            x = x[np.isfinite(x)]
            if x.size == 0:
                return
        lo, hi = float(x.min()), float(x.max())
        self.min, self.max = min(self.min, lo), max(self.max, hi)
        self.count += x.size
        top = max(abs(lo), abs(hi))
        if top > self.range:
            self._rebin(top)
        if self.range <= 0.0:  # all zeros so far
            self.counts[0] += x.size
            return
        # bincount on integer bin indices is several times faster than np.histogram
        idx = np.abs(x, dtype=np.float32).ravel() * np.float32(self.num_bins / self.range)
        idx = np.minimum(idx.astype(np.int32), self.num_bins - 1)
        self.counts += np.bincount(idx, minlength=self.num_bins)


def kl_threshold(counts: np.ndarray, bin_width: float, num_quantized_bins: int = NUM_QUANTIZED_BINS,
                 start: Optional[int] = None, stride: int = 1) -> float:
    """The KL-optimal amax for a histogram of |x| (see the module docstring).

    Method: TensorRT's entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017).
    For candidate i, P = counts[:i] with the outliers sum(counts[i:]) added to P[i-1]; the i bins
    form ``num_quantized_bins`` groups of (nearly) equal size and Q spreads each group's in-range
    mass evenly over the group's non-empty bins of P. Since Q is constant inside a group,
    KL(P||Q) = Σp·log p / S_P − log S_P − Σ_g P_g·log q_g / S_P + log S_Q, which evaluates every
    candidate at once from cumulative sums (no loop over i). Candidates where Q is 0 on a bin
    with P > 0 (infinite KL) are skipped.

    Args:
        counts: (num_bins,) bin counts of |x| (float64 or int).
        bin_width: width of one bin in the tensor's units.
        num_quantized_bins: INT8 levels on one side (128).
        start: the smallest candidate bin (default and minimum ``num_quantized_bins``).
        stride: test every ``stride``-th candidate only.

    Returns:
        amax in the tensor's units, ``(i + 0.5) × bin_width`` for the best i; 0.0 for an empty
        histogram.
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.size
    total = c.sum()
    if bin_width <= 0.0 or total == 0:
        return 0.0
    start = num_quantized_bins if start is None else max(int(start), num_quantized_bins)
    if start >= n:
        return n * bin_width
    last_nonzero = int(np.nonzero(c)[0][-1])
    if last_nonzero < num_quantized_bins:  # the whole distribution fits into 128 levels as is
        return (last_nonzero + 1) * bin_width
    cs = np.concatenate(([0.0], np.cumsum(c)))
    cnz = np.concatenate(([0.0], np.cumsum(c > 0)))
    clogc = np.where(c > 0, c * np.log(np.where(c > 0, c, 1.0)), 0.0)
    cl = np.concatenate(([0.0], np.cumsum(clogc)))
    cand = np.arange(start, n + 1, max(1, int(stride)))
    edges = (np.arange(num_quantized_bins + 1)[None, :] * cand[:, None]) // num_quantized_bins
    group_sum = cs[edges[:, 1:]] - cs[edges[:, :-1]]
    group_nz = cnz[edges[:, 1:]] - cnz[edges[:, :-1]]
    outliers = total - cs[cand]
    last = c[cand - 1]
    group_nz[:, -1] += (last == 0) & (outliers > 0)  # bin i-1 holds the outliers
    p_group = group_sum.copy()
    p_group[:, -1] += outliers
    q_sum = cs[cand]
    per_bin = np.divide(group_sum, group_nz, out=np.zeros_like(group_sum), where=group_nz > 0)
    infinite = np.any((p_group > 0) & (per_bin == 0), axis=1) | (q_sum == 0)
    p_last = last + outliers
    plogp = cl[cand - 1] + np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
    log_q = np.log(np.where(per_bin > 0, per_bin, 1.0))
    cross = np.sum(np.where(p_group > 0, p_group * log_q, 0.0), axis=1)
    with np.errstate(divide="ignore"):
        kl = plogp / total - np.log(total) - cross / total + np.log(np.where(q_sum > 0, q_sum, 1.0))
    kl[infinite] = np.inf
    if not np.isfinite(kl).any():
        return n * bin_width
    best_i = int(cand[int(np.argmin(kl))])
    return (best_i + 0.5) * bin_width if best_i < n else n * bin_width


def percentile_threshold(counts: np.ndarray, bin_width: float, percentile: float = DEFAULT_PERCENTILE) -> float:
    """amax such that ``percentile`` % of |x| lies below it (upper edge of that bin).

    Args:
        counts: (num_bins,) bin counts of |x|.
        bin_width: width of one bin in the tensor's units.
        percentile: in % (0..100).

    Returns:
        amax in the tensor's units; 0.0 for an empty histogram.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0 or bin_width <= 0:
        return 0.0
    cdf = np.cumsum(counts) / total
    i = int(np.searchsorted(cdf, percentile / 100.0, side="left"))
    return min(i + 1, counts.size) * bin_width


@dataclass(frozen=True)
class TensorRange:
    """Calibrated range of one tensor: symmetric ``amax`` plus the observed signed min/max."""

    amax: float
    min: float
    max: float

    def asymmetric(self) -> tuple:
        """(lo, hi) for uint8 asymmetric quantisation: the observed range clipped to ±amax."""
        lo = max(self.min, -self.amax)
        hi = min(self.max, self.amax)
        return (min(lo, 0.0), max(hi, 0.0))


class RangeCollector:
    """Histograms for many named tensors; :meth:`ranges` turns them into :class:`TensorRange`."""

    def __init__(self, num_bins: int = NUM_BINS):
        self.num_bins = num_bins
        self.histograms: Dict[str, Histogram] = {}

    def update(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Add a batch of named tensors (arrays of any shape); non-float tensors are skipped."""
        for name, value in tensors.items():
            value = np.asarray(value)
            if not np.issubdtype(value.dtype, np.floating):
                continue
            hist = self.histograms.get(name)
            if hist is None:
                hist = self.histograms[name] = Histogram(self.num_bins)
            hist.update(value)

    def ranges(self, method: str = "entropy", percentile: float = DEFAULT_PERCENTILE,
               names: Optional[Iterable[str]] = None, stride: int = 1) -> Dict[str, TensorRange]:
        """The :class:`TensorRange` of each tensor by ``method``: ``entropy`` (:func:`kl_threshold`),
        ``percentile`` (:func:`percentile_threshold`) or ``minmax`` (max |x|); amax never exceeds the
        observed max |x|.

        Args:
            names: the tensors to compute (default all).
            stride: candidate stride for ``entropy``.

        Raises:
            ValueError: ``method`` is unknown.
            KeyError: a name in ``names`` was never collected.
        """
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; choose one of {METHODS}")
        out = {}
        for name in (names if names is not None else self.histograms):
            h = self.histograms[name]
            if method == "minmax":
                amax = h.amax
            elif method == "percentile":
                amax = percentile_threshold(h.counts, h.bin_width, percentile)
            else:
                amax = kl_threshold(h.counts, h.bin_width, stride=stride)
            amax = min(amax, h.amax) if h.count else 0.0
            out[name] = TensorRange(amax=float(amax), min=float(h.min) if h.count else 0.0,
                                    max=float(h.max) if h.count else 0.0)
        return out
