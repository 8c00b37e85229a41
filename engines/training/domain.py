"""Domain randomisation of clean frames: "clean" as many cameras deliver it, not as one does.

A model trained on one camera's frames learns that camera's look (its AGC, its noise floor,
its compression, its scale) as "clean", and calls another camera's clean frames degraded
(issue: router 4-20 % right on other cameras, clean frames routed to contrast). Before a
degradation is applied, each clean frame here gets a random, camera-like rendering that
keeps it clean (full range, sharp, low noise) but varies what differs between cameras:

- tone curve as camera AGCs apply them: gamma U(0.6, 1.7); robust linear re-stretch between
  random percentiles (0-2 % / 98-100 %); plateau histogram equalisation (FLIR's AGC family,
  thermal_io.md: a histogram with each bin clipped at a plateau, then its CDF as the tone
  map), blended with the input; CLAHE (OpenCV) with a random clip limit;
- content scale: a downscale by U(0.5, 1) with area averaging (a finer or coarser optic /
  detector pitch; never an upscale, which would look like blur), mirror-extended back;
- sensor noise floor: Gaussian σ U(0, 1.2) grey levels (a NETD-level floor that every
  real frame carries, far below the noise task's 5-15);
- compression: JPEG quality U(55, 95) (sets stored as JPEG/H.264 carry blocking).

Every choice is drawn from the caller's generator, so a seeded draw is reproducible.
Ranges are chosen to stay clearly apart from the tasks' ranges (ecmrnet.md §1.3): contrast
α 0.2-0.6 (the re-stretch only ever widens the range), blur σ 1-2 px, noise σ 5-15.
"""
from __future__ import annotations

import cv2
import numpy as np

P_GAMMA = 0.5
P_STRETCH = 0.35
P_PLATEAU = 0.2
P_CLAHE = 0.2
P_SCALE = 0.35
P_NOISE_FLOOR = 0.6
P_JPEG = 0.35
JPEG_QUALITY = (55, 96)  # [lo, hi): the compression stored frames carry (q 80-95 alone was tried: docs/cameras.md)


def _fit(frame: np.ndarray, shape) -> np.ndarray:
    """Mirror-extend a smaller frame back to ``shape`` (centred)."""
    ph, pw = shape[0] - frame.shape[0], shape[1] - frame.shape[1]
    if ph <= 0 and pw <= 0:
        return frame[: shape[0], : shape[1]]
    return np.pad(frame, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), mode="reflect")


def plateau_equalise(x: np.ndarray, plateau: float, bins: int = 256) -> np.ndarray:
    """Plateau histogram equalisation of a [0, 1] frame: the histogram clipped at
    ``plateau`` × the mean bin count, its cumulative sum as the tone map (FLIR's plateau AGC).

    Args:
        x: (H, W) float32 frame in [0, 1].
        plateau: the clip level as a multiple of the mean bin count.
        bins: histogram bins over [0, 1].

    Returns:
        (H, W) float32 in [0, 1].
    """
    hist, edges = np.histogram(x, bins=bins, range=(0.0, 1.0))
    hist = np.minimum(hist, plateau * hist.mean()).astype(np.float64)
    cdf = np.cumsum(hist)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1e-9)
    return np.interp(x, edges[1:], cdf).astype(np.float32)


def randomize_frame(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One clean H×W float32 [0, 1] frame -> a clean frame as another camera might render it."""
    shape = x.shape
    y = x.astype(np.float32, copy=True)
    if rng.random() < P_SCALE:
        s = rng.uniform(0.5, 1.0)
        h, w = max(8, int(round(shape[0] * s))), max(8, int(round(shape[1] * s)))
        y = _fit(cv2.resize(y, (w, h), interpolation=cv2.INTER_AREA), shape)
    if rng.random() < P_STRETCH:
        lo, hi = np.percentile(y[::2, ::2], (rng.uniform(0, 2), rng.uniform(98, 100)))
        if hi - lo > 1e-3:
            y = np.clip((y - lo) / (hi - lo), 0, 1)
    if rng.random() < P_PLATEAU:
        y = (1 - (a := rng.uniform(0.3, 1.0))) * y + a * plateau_equalise(y, rng.uniform(1.5, 6.0))
    if rng.random() < P_CLAHE:
        clahe = cv2.createCLAHE(clipLimit=float(rng.uniform(1.0, 3.0)), tileGridSize=(8, 8))
        y = clahe.apply(np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)).astype(np.float32) / 255.0
    if rng.random() < P_GAMMA:
        y = np.power(np.clip(y, 0, 1), rng.uniform(0.6, 1.7)).astype(np.float32)
    if rng.random() < P_NOISE_FLOOR:
        y = y + rng.standard_normal(shape, dtype=np.float32) * np.float32(rng.uniform(0.0, 1.2) / 255.0)
    y = np.clip(y, 0.0, 1.0)
    if rng.random() < P_JPEG:
        grey = np.rint(y * 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*JPEG_QUALITY))])
        if ok:
            y = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return y.astype(np.float32)


def randomize(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, H, W) float32 [0, 1] clean frames -> randomised clean frames, same shape."""
    batch = np.asarray(batch, dtype=np.float32)
    return np.stack([randomize_frame(f, rng) for f in batch])
