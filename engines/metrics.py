"""Full-reference image quality: PSNR and SSIM on single-channel float frames in [0, 1].

SSIM follows Wang et al. 2004 (IEEE TIP 13(4)) and its reference MATLAB code: an 11×11
Gaussian window with σ = 1.5, K1 = 0.01, K2 = 0.03, statistics taken only where the whole
window fits inside the frame ("valid" filtering), then averaged over the map. This is also
what pyiqa's ``ssim`` (the metric ECMRNet reports, ecmrnet.md §1.4) computes on a 1-channel
input. Everything is numpy + OpenCV; no scipy/skimage.
"""
from __future__ import annotations

from typing import Iterable, Tuple

import cv2
import numpy as np

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _as_pair(a, b) -> Tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return a, b


def _squeeze_frame(x: np.ndarray) -> np.ndarray:
    """Accept H×W, 1×H×W or 1×1×H×W for a single frame."""
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"expected one single-channel frame (H×W), got shape {x.shape}")
    return x


def psnr(a, b, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole array: 10·log10(data_range² / MSE).

    Args:
        a, b: arrays of the same shape (any), float32 in [0, 1] by default.
        data_range: the peak value (1.0 for [0, 1] frames).

    Returns:
        PSNR in dB; ``inf`` for identical inputs.

    Raises:
        ValueError: the shapes differ.
    """
    a, b = _as_pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * np.log10(data_range * data_range / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps; the 2-D window is their outer product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    half = len(taps) // 2
    full = cv2.sepFilter2D(x, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_REFLECT)
    return full[half:-half, half:-half]


def ssim_map(a, b, data_range: float = 1.0) -> np.ndarray:
    """Local SSIM (Wang et al. 2004) over every position where the 11×11 Gaussian window fits.

    Args:
        a, b: one frame each, (H, W), (1, H, W) or (1, 1, H, W), values in [0, ``data_range``].

    Returns:
        (H-10, W-10) float64 map of SSIM values.

    Raises:
        ValueError: the shapes differ, a frame is not single-channel, or it is smaller than 11×11.
    """
    a, b = _as_pair(a, b)
    a, b = _squeeze_frame(a), _squeeze_frame(b)
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WINDOW}×{SSIM_WINDOW}, got {a.shape}")
    taps = gaussian_window()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    mu_a = _filter_valid(a, taps)
    mu_b = _filter_valid(b, taps)
    var_a = _filter_valid(a * a, taps) - mu_a * mu_a
    var_b = _filter_valid(b * b, taps) - mu_b * mu_b
    cov = _filter_valid(a * b, taps) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return num / den


def ssim(a, b, data_range: float = 1.0) -> float:
    """Mean SSIM of two single-channel frames (Gaussian 11×11, σ=1.5, K1 0.01, K2 0.03; Wang et al.
    2004). Shapes as :func:`ssim_map`.

    Raises:
        ValueError: as :func:`ssim_map`.
    """
    return float(np.mean(ssim_map(a, b, data_range)))


def _frames(batch) -> np.ndarray:
    x = np.asarray(batch)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected N×1×H×W, got {x.shape}")
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected a batch N×H×W or N×1×H×W, got {x.shape}")
    return x


def psnr_batch(a, b, data_range: float = 1.0) -> np.ndarray:
    """Per-frame PSNR (dB) for batches (N, H, W) or (N, 1, H, W) (a single (H, W) frame is N = 1).

    Returns:
        (N,) float64 PSNR in dB.

    Raises:
        ValueError: the batches differ in shape or are not (N, H, W) / (N, 1, H, W).
    """
    a, b = _frames(a), _frames(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return np.array([psnr(x, y, data_range) for x, y in zip(a, b)], dtype=np.float64)


def ssim_batch(a, b, data_range: float = 1.0) -> np.ndarray:
    """Per-frame SSIM for batches (N, H, W) or (N, 1, H, W) (a single (H, W) frame is N = 1).

    Returns:
        (N,) float64 SSIM values.

    Raises:
        ValueError: the batches differ in shape, are not (N, H, W) / (N, 1, H, W), or a frame
            is smaller than 11×11.
    """
    a, b = _frames(a), _frames(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    return np.array([ssim(x, y, data_range) for x, y in zip(a, b)], dtype=np.float64)


def summarize(values: Iterable[float]) -> dict:
    """Mean, std, min, max and count of per-frame scores (finite values only)."""
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def column_fpn(frame, sigma: float = 2.0) -> float:
    """Column fixed-pattern noise of one (H, W) frame: the standard deviation (across columns) of
    the column means of the horizontal high-pass ``x − G_σ,x * x`` (a 1-D Gaussian along each
    row). Scene structure averages out down a column; a per-column offset (the FPN of a
    microbolometer read out column by column without NUC) does not. Units of ``frame`` (counts
    or [0, 1]).

    Raises:
        ValueError: ``frame`` is not 2-D.
    """
    x = np.asarray(frame, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"column_fpn expects one H×W frame, got {x.shape}")
    k = 2 * int(np.ceil(3 * sigma)) + 1
    high = x - cv2.GaussianBlur(x, (k, 1), sigmaX=sigma, sigmaY=0, borderType=cv2.BORDER_REFLECT)
    return float(np.std(high.mean(axis=0)))
