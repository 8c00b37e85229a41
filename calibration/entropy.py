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
    """The KL-optimal amax for a histogram of |x| (see the module docstring)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    if bin_width <= 0.0 or counts.sum() == 0:
        return 0.0
    start = num_quantized_bins if start is None else max(int(start), num_quantized_bins)
    if start >= n:
        return n * bin_width
    last_nonzero = int(np.nonzero(counts)[0][-1])
    if last_nonzero < num_quantized_bins:  # the whole distribution fits into 128 levels as is
        return (last_nonzero + 1) * bin_width
    suffix = np.concatenate((np.cumsum(counts[::-1])[::-1], [0.0]))  # suffix[i] = sum(counts[i:])
    best_i, best_kl = n, np.inf
    for i in range(start, n + 1, stride):
        p = counts[:i].copy()
        p[i - 1] += suffix[i]
        nonzero = p != 0
        # group the i bins into num_quantized_bins groups of (nearly) equal size; Q spreads each
        # group's in-range mass evenly over the group's non-empty bins of P
        edges = (np.arange(num_quantized_bins + 1) * i) // num_quantized_bins
        group_sum = np.add.reduceat(counts[:i], edges[:-1])
        group_nonzero = np.add.reduceat(nonzero.astype(np.float64), edges[:-1])
        per_bin = np.divide(group_sum, group_nonzero, out=np.zeros_like(group_sum), where=group_nonzero > 0)
        q = np.repeat(per_bin, np.diff(edges)) * nonzero
        if np.any(q[nonzero] == 0):  # KL(P||Q) is infinite
            continue
        pn = p[nonzero] / p.sum()
        qn = q[nonzero] / q.sum()
        kl = float(np.sum(pn * np.log(pn / qn)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * bin_width if best_i < n else n * bin_width


def percentile_threshold(counts: np.ndarray, bin_width: float, percentile: float = DEFAULT_PERCENTILE) -> float:
    """amax such that ``percentile`` % of |x| lies below it (upper edge of that bin)."""
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
