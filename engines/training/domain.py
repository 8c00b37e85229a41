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

Extras (``extras``, off by default, so the draws above are unchanged without them; session 23,
issue 9: the router on cameras it never saw), what real cameras also differ in:

- ``optics``: the optic's sharpness. A softer lens (Gaussian PSF σ U(0.3, 0.7) px, applied
  first, on the scene; below the blur task's σ 1-2 px) or a camera that sharpens (unsharp mask
  of σ U(0.8, 1.6) px, amount U(0.3, 1.2), after the tone and the noise floor, as a DDE or
  sharpening stage in the camera's video path does);
- ``shading``: a smooth radiometric field (narcissus / housing shading: a radial term
  U(-0.12, 0.12) and a linear ramp U(-0.08, 0.08) of the range, on the scene before the tone;
  far below the vignetting outlier's strength 0.3-0.48);
- ``floor``: the sensor floor's other shapes: row and column offsets (σ U(0, 0.8) grey levels
  each) and a spatially correlated (σ 1.5 px low-passed) floor U(0, 1.0) grey levels, added
  after the white floor; far below the noise task's σ 5-15 and its stripes.

Every choice is drawn from the caller's generator, so a seeded draw is reproducible.
Ranges are chosen to stay clearly apart from the tasks' ranges (ecmrnet.md §1.3): contrast
α 0.2-0.6 (the re-stretch only ever widens the range), blur σ 1-2 px, noise σ 5-15.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

P_GAMMA = 0.5
P_STRETCH = 0.35
P_PLATEAU = 0.2
P_CLAHE = 0.2
P_SCALE = 0.35
P_NOISE_FLOOR = 0.6
P_JPEG = 0.35
EXTRAS = ("optics", "shading", "floor")
P_OPTICS = 0.5
P_OPTICS_SOFT = 0.6          # of the optics draws: a softer lens; the rest a sharpening camera
SOFT_SIGMA = (0.3, 0.7)      # px, below the blur task's σ 1-2 (engines/specs/blur.json)
SHARPEN_SIGMA = (0.8, 1.6)   # px
SHARPEN_AMOUNT = (0.3, 1.2)
P_SHADING = 0.4
SHADING_RADIAL = 0.12        # ± share of the range at the corners; vignetting outlier: 0.3-0.48
SHADING_RAMP = 0.08          # ± share of the range across the frame
P_FLOOR = 0.4
FLOOR_LINES = 0.8            # grey levels, σ of row and of column offsets (noise task: 5-15 + stripes)
FLOOR_CORRELATED = 1.0       # grey levels, σ of the low-passed floor
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


def check_extras(extras) -> tuple:
    """The extras as a tuple of names in :data:`EXTRAS` (empty names dropped; None: none).

    Raises:
        ValueError: a name that is not in :data:`EXTRAS` (the message lists the known ones).
    """
    extras = tuple(e for e in (extras or ()) if e)
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise ValueError(f"unknown domain randomisation extra(s) {', '.join(unknown)}; known: {', '.join(EXTRAS)}")
    return extras


def _blur(y: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(y, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma), borderType=cv2.BORDER_REFLECT)


def soften(x: np.ndarray, sigma: float) -> np.ndarray:
    """A softer optic: (H, W) float32 frame convolved with a Gaussian PSF of ``sigma`` px (reflect)."""
    return _blur(np.asarray(x, dtype=np.float32), sigma)


def sharpen(x: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """A sharpening camera: unsharp mask ``x + amount * (x - G_sigma * x)``, clipped to [0, 1]
    ((H, W) float32; the detail enhancement of a camera's video path, docs/cameras.md K14)."""
    x = np.asarray(x, dtype=np.float32)
    return np.clip(x + np.float32(amount) * (x - _blur(x, sigma)), 0.0, 1.0)


def shading_field(shape, radial: float, ramp: float, angle: float) -> np.ndarray:
    """A smooth additive field (H, W) float32 in units of the range: ``radial`` × (r² − mean r²)
    (r = 1 at the corners) plus a linear ramp of total span ``ramp`` along ``angle`` (radians)."""
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h, dtype=np.float32), np.linspace(-1, 1, w, dtype=np.float32),
                         indexing="ij")
    r2 = (xx * xx + yy * yy) / 2.0
    lin = (np.cos(angle) * xx + np.sin(angle) * yy) / 2.0
    return (np.float32(radial) * (r2 - r2.mean()) + np.float32(ramp) * lin).astype(np.float32)


def randomize_frame(x: np.ndarray, rng: np.random.Generator, extras=()) -> np.ndarray:
    """One clean H×W float32 [0, 1] frame -> a clean frame as another camera might render it.

    ``extras``: names of :data:`EXTRAS` also drawn (module docstring); without them the draws
    and the result are the original recipe's. Raises ValueError for an unknown extra."""
    extras = check_extras(extras)
    shape = x.shape
    y = x.astype(np.float32, copy=True)
    sharpening = None
    if "optics" in extras and rng.random() < P_OPTICS:
        if rng.random() < P_OPTICS_SOFT:
            y = soften(y, rng.uniform(*SOFT_SIGMA))
        else:
            sharpening = (rng.uniform(*SHARPEN_SIGMA), rng.uniform(*SHARPEN_AMOUNT))
    if "shading" in extras and rng.random() < P_SHADING:
        y = y + shading_field(shape, rng.uniform(-SHADING_RADIAL, SHADING_RADIAL),
                              rng.uniform(-SHADING_RAMP, SHADING_RAMP), rng.uniform(0, 2 * np.pi))
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
    if "floor" in extras and rng.random() < P_FLOOR:
        rows = rng.standard_normal((shape[0], 1), dtype=np.float32) * np.float32(rng.uniform(0, FLOOR_LINES) / 255.0)
        cols = rng.standard_normal((1, shape[1]), dtype=np.float32) * np.float32(rng.uniform(0, FLOOR_LINES) / 255.0)
        low = _blur(rng.standard_normal(shape, dtype=np.float32), 1.5)
        low *= np.float32(rng.uniform(0, FLOOR_CORRELATED) / 255.0) / max(float(low.std()), 1e-6)
        y = y + rows + cols + low
    y = np.clip(y, 0.0, 1.0)
    if sharpening is not None:
        y = sharpen(y, *sharpening)
    if rng.random() < P_JPEG:
        grey = np.rint(y * 255).astype(np.uint8)
        ok, data = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(*JPEG_QUALITY))])
        if ok:
            y = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255.0
    return y.astype(np.float32)


def randomize(batch: np.ndarray, rng: np.random.Generator, extras=()) -> np.ndarray:
    """(N, H, W) float32 [0, 1] clean frames -> randomised clean frames, same shape
    (:func:`randomize_frame` per frame, ``extras`` passed on)."""
    batch = np.asarray(batch, dtype=np.float32)
    return np.stack([randomize_frame(f, rng, extras) for f in batch])


def router_augment(training: dict):
    """The clean-frame augmentation a router was trained with, from its manifest entry's
    ``training`` dict: None (no ``domain_randomisation``), :func:`randomize`, or
    :func:`randomize` with the recorded ``randomisation_extras``. Raises ValueError for an
    unknown extra."""
    if not (training or {}).get("domain_randomisation"):
        return None
    extras = check_extras(training.get("randomisation_extras") or ())
    if not extras:
        return randomize
    return functools.partial(randomize, extras=extras)
