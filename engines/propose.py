"""Propose a degradation spec for a cluster of unknown frames (issue 13 item 3).

For each op of :mod:`tir.engines.degrade` an estimator measures its parameter from image
statistics of one frame in the ops' space (float H×W in [0, 1], the counts mapped by the
collection's ``op_range``; see :func:`to_op_space`). :func:`fit_frames` runs them on every
frame of a cluster; :func:`propose` turns the per-frame estimates into a spec (steps in the
canonical order contrast → blur → vignetting → stripes → gaussian_noise → pixel_dropout →
jpeg, each range the 10th–90th percentile of the frames' estimates) with each fit's residual.
Whether the composition reproduces the cluster is judged in the router's embedding space by
``tir discover`` (engines/discover.py), which says "no fit" with the residual instead of
guessing.

Estimators (units as the spec's: grey levels are 1/255 of the op range):

- ``gaussian_noise.sigma``: Immerkær (1996), "Fast noise variance estimation", CVIU 64(2):
  the frame convolved with N = [[1,-2,1],[-2,4,-2],[1,-2,1]] (a difference of two Laplacians:
  zero on planes and on column- or row-constant patterns, so stripes do not count) has
  standard deviation 6σ for white noise σ; the robust scale is the median absolute value
  / 0.6745 (Donoho & Johnstone 1994's MAD estimator), so scene edges do not count either.
- ``stripes``: column (row) fixed-pattern noise from the horizontal (vertical) second
  difference c = x[:, j] − (x[:, j−1] + x[:, j+1]) / 2, which removes the scene's smooth part
  and shading and turns i.i.d. column offsets of std s into a pattern of std √1.5·s. Per
  column, a line c ≈ G_j·x + B_j is fitted over the rows (least squares, then again without
  residuals beyond 3 robust σ: edges); gain_std and offset_std are the robust stds (1.4826 ×
  MAD) of G and B over the columns / √1.5. When the gains are not significant (robust std
  below ``GAIN_FLOOR``) gain_std is 0 and the offsets are the column medians of c.
  Orientation: the one with the larger pattern; ``column_p`` is the share of column frames.
- ``vignetting.strength, gamma``: the model x = scene·(1 − s·r^γ) (degrade.py's op, r the
  distance to the centre, 1 at the corners) fitted in log space on a 4× area-downsampled
  frame (at most 80 pixels wide), the scene modelled as one value per row (thermal scenes are layered: sky, facades,
  road), by a grid search over (s, γ) minimising the mean absolute deviation from the row
  medians, refined on a finer grid around the best cell. Residual: that deviation.
- ``blur.sigma``: re-blur ratio at edges (Elder & Zucker 1998; Hu & de Haan 2006): at a
  step edge blurred with σ, the peak gradient falls by R = √(σ² + σ_b²)/σ when the frame is
  blurred again with σ_b, so σ = σ_b / √(R² − 1); the median over the strongest edge pixels
  (local gradient maxima in the top 2 %).
- ``jpeg.quality``: JPEG ghosts (Farid 2009, "Exposing digital forgeries from JPEG ghosts",
  IEEE TIFS 4(1)): the frame's 8-bit grey levels re-encoded at quality q change least at the
  quality they were encoded with (the local minimum of the re-encoding error lowest
  relative to its neighbours: near-lossless high qualities are small everywhere). Present
  when the 8×8 blockiness (mean absolute step across block boundaries over that inside
  blocks, each step less its column's median step so column FPN is not blocking) exceeds
  ``BLOCKINESS_SCREEN`` and the ghost is sharp (its error below ``GHOST_SHARPNESS`` of its
  lower neighbour: a decoded frame re-encoded at its own quality changes almost nothing), or
  the blockiness alone exceeds ``BLOCKINESS_FLOOR`` (blocks whose grey levels were remapped
  since, which leaves no ghost). Scene texture with an 8-pixel period (the virtual camera at
  160×120) reads up to 1.34 without a ghost.
- ``contrast``: the spread of the 0.5/99.5 % percentiles against the clean spread of the
  op space (``reference`` = the clean frame's percentiles in op space; the virtual camera's
  map pads 15 % on each side: [0.115, 0.885]): α = spread / reference spread, β from the low
  percentile; ``contrast`` = α − 1 as the op draws it.
- ``pixel_dropout.dead_p, hot_p``: the share of pixels at 0 (≤ 1/255) or 1 (≥ 254/255) that
  differ from their 3×3 median by more than 0.25.

Each estimator also says whether its op is present (a floor above what a clean frame of the
virtual camera gives: its own sensor FPN, noise and dead pixels).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

GREY = 255.0
NOISE_FLOOR = 1.5          # grey levels: below, no gaussian_noise step
STRIPE_FLOOR = 2.0         # grey levels (effective column/row pattern std)
GAIN_FLOOR = 0.01          # relative gain FPN std below which gains are "not significant"
VIGNETTING_FLOOR = 0.1     # strength
BLUR_FLOOR = 0.9           # pixels (heavy JPEG alone reads 0.75-0.99)
BLOCKINESS_SCREEN = 1.1    # ratio: below, no JPEG looked for (q >= 85 reads 0.98-1.09: near-lossless)
BLOCKINESS_FLOOR = 1.5     # ratio: above, JPEG even without a ghost (scene texture reads <= 1.34)
GHOST_SHARPNESS = 0.5      # ghost minimum over its lower neighbour: a JPEG decode reads <= 0.13
GRID_GHOST = 0.1           # off the frame's grid: re-encoding error on the decode's grid over the uncut frame's (estimate_jpeg)
CONTRAST_FLOOR = 0.8       # alpha below this: a contrast step
DROPOUT_FLOOR = 5e-4       # share of pixels
CLEAN_REFERENCE = (0.15 / 1.3, 1.15 / 1.3)  # clean 0.5/99.5 % in the virtual camera's op space
ORDER = ("contrast", "blur", "vignetting", "stripes", "gaussian_noise", "pixel_dropout", "jpeg")


def robust_std(values: np.ndarray) -> float:
    """1.4826 × median absolute deviation: the std for Gaussian data, robust to outliers.

    Args:
        values: array of any shape (flattened; non-finite values ignored).

    Returns:
        the robust std in the values' unit, NaN when no finite value.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def to_op_space(raw: np.ndarray, op_range: Optional[Sequence[float]] = None) -> np.ndarray:
    """Raw counts -> float32 in the ops' [0, 1] space: ``(raw − lo) / (hi − lo)``.

    Args:
        raw: (H, W) uint16 Y16 counts.
        op_range: (lo, hi) in counts where the collection states it; else
            :func:`tir.engines.degrade.counts_range` of the frame itself (an estimate: amplitudes
            are then relative to the degraded frame's own range).

    Returns:
        (H, W) float32, nominally in [0, 1] (not clipped).

    Raises:
        ValueError: ``hi <= lo``.
    """
    from .degrade import counts_range

    lo, hi = op_range if op_range is not None else counts_range(raw)
    if hi <= lo:
        raise ValueError(f"op range [{lo}, {hi}] is empty; the collection's op_range must have hi > lo")
    return ((np.asarray(raw, np.float32) - float(lo)) / float(hi - lo)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# estimators: one frame in op space -> dict
# ---------------------------------------------------------------------------------------------

IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def estimate_noise(x: np.ndarray) -> Dict:
    """Gaussian noise σ in grey levels (Immerkær 1996 mask, MAD scale); see the module docstring.

    Args:
        x: (H, W) float32 op-space frame in [0, 1].

    Returns:
        {"sigma": σ in grey levels (1/255 of the op range), "present": σ > NOISE_FLOOR}.
    """
    resp = cv2.filter2D(np.asarray(x, np.float32), -1, IMMERKAER, borderType=cv2.BORDER_REFLECT)[1:-1, 1:-1]
    inner = np.asarray(x)[1:-1, 1:-1]
    ok = (inner > 0.002) & (inner < 0.998)  # clipped pixels carry no noise
    sigma = float(np.median(np.abs(resp[ok])) / 0.6745 / 6.0) * GREY if ok.any() else 0.0
    return {"sigma": sigma, "present": sigma > NOISE_FLOOR}


def _column_pattern(x: np.ndarray) -> Dict:
    """Column FPN of one orientation: per-column gain and offset from the second difference."""
    x = np.asarray(x, np.float64)
    c = x[:, 1:-1] - 0.5 * (x[:, :-2] + x[:, 2:])
    v = x[:, 1:-1]
    offsets_only = np.median(c, axis=0)
    # per-column least squares c = G x + B, then once more without outliers (scene edges)
    keep = np.ones_like(c, dtype=bool)
    for _ in range(2):
        n = keep.sum(0).clip(min=2)
        mx = (v * keep).sum(0) / n
        mc = (c * keep).sum(0) / n
        dx = (v - mx) * keep
        var = (dx * dx).sum(0)
        gain = np.where(var > 1e-9, (dx * (c - mc)).sum(0) / np.maximum(var, 1e-12), 0.0)
        off = mc - gain * mx
        resid = c - (gain * v + off)
        scale = 1.4826 * np.median(np.abs(resid), axis=0) + 1e-9
        keep = np.abs(resid) <= 3.0 * scale
    # Second differences centred on either side of an 8-pixel block boundary measure JPEG/MPEG
    # blocking (ITU-T T.81 8x8 DCT blocks), not column FPN: leave those columns out. Independent
    # column offsets keep the same spread on the other 6 of every 8 columns.
    centre = np.arange(1, x.shape[1] - 1)
    grid = np.isin(centre % 8, (0, 7))
    gain, off, offsets_only = gain[~grid], off[~grid], offsets_only[~grid]
    gain_std = robust_std(gain) / math.sqrt(1.5)
    if gain_std < GAIN_FLOOR:
        return {"gain_std": 0.0, "offset_std": robust_std(offsets_only) / math.sqrt(1.5) * GREY,
                "effective": robust_std(offsets_only) / math.sqrt(1.5) * GREY}
    effective = robust_std(off + gain * float(np.median(v))) / math.sqrt(1.5) * GREY
    return {"gain_std": gain_std, "offset_std": robust_std(off) / math.sqrt(1.5) * GREY, "effective": effective}


def estimate_stripes(x: np.ndarray) -> Dict:
    """Column or row gain/offset FPN from the second difference; see the module docstring.

    Args:
        x: (H, W) float32 op-space frame in [0, 1].

    Returns:
        {"gain_std" (relative), "offset_std" (grey levels), "effective" (grey levels: the
        pattern's std), "columns" (True for a column pattern), "present" (effective >
        STRIPE_FLOOR)}.
    """
    col = _column_pattern(x)
    row = _column_pattern(np.asarray(x).T)
    columns = col["effective"] >= row["effective"]
    best = col if columns else row
    return {**best, "columns": bool(columns), "present": best["effective"] > STRIPE_FLOOR}


def _radius(h: int, w: int) -> np.ndarray:
    yy = np.arange(h, dtype=np.float64)[:, None] - (h - 1) / 2.0
    xx = np.arange(w, dtype=np.float64)[None, :] - (w - 1) / 2.0
    return np.sqrt(yy * yy + xx * xx) / math.hypot((h - 1) / 2.0, (w - 1) / 2.0)


def estimate_vignetting(x: np.ndarray, factor: Optional[int] = None) -> Dict:
    """Vignetting strength s and exponent γ of x = scene·(1 − s·r^γ), the scene one value per row
    (log-space grid search, mean absolute deviation as residual); see the module docstring.

    Args:
        x: (H, W) float32 op-space frame in [0, 1].
        factor: area-downsampling factor (default: max(4, W // 80)).

    Returns:
        {"strength", "gamma", "residual" (mean absolute log deviation of the fit),
        "residual_none" (the same without vignetting), "present" (s > VIGNETTING_FLOOR)}.
    """
    x = np.asarray(x, np.float32)
    h, w = x.shape
    factor = int(factor or max(4, w // 80))
    small = cv2.resize(x, (max(8, w // factor), max(8, h // factor)), interpolation=cv2.INTER_AREA)
    hs, ws = small.shape
    # the downsampled grid's pixel centres in full-frame coordinates, radius as degrade.py's
    yy = (np.arange(hs) + 0.5) * (h / hs) - 0.5 - (h - 1) / 2.0
    xx = (np.arange(ws) + 0.5) * (w / ws) - 0.5 - (w - 1) / 2.0
    r = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2) / math.hypot((h - 1) / 2.0, (w - 1) / 2.0)
    log_x = np.log(np.clip(small, 0.01, None).astype(np.float64))
    valid = (small > 0.01) & (small < 0.999)
    log_r = np.log(np.maximum(r, 1e-6))

    def cost(s: float, g: float) -> float:
        shade = 1.0 - s * np.exp(g * log_r)
        if shade.min() <= 0.02:
            return float("inf")
        res = log_x - np.log(shade)
        res = np.where(valid, res, np.nan)
        dev = np.abs(res - np.nanmedian(res, axis=1, keepdims=True))
        return float(np.nanmean(dev))

    best = (cost(0.0, 1.0), 0.0, 1.0)
    for s in np.arange(0.02, 0.81, 0.04):
        for g in np.arange(0.6, 3.61, 0.2):
            c = cost(float(s), float(g))
            if c < best[0]:
                best = (c, float(s), float(g))
    _, s0, g0 = best
    for s in np.arange(max(0.0, s0 - 0.04), s0 + 0.041, 0.01):
        for g in np.arange(max(0.4, g0 - 0.2), g0 + 0.201, 0.05):
            c = cost(float(s), float(g))
            if c < best[0]:
                best = (c, float(s), float(g))
    residual, s, g = best
    return {"strength": s, "gamma": g, "residual": residual, "residual_none": cost(0.0, 1.0),
            "present": s > VIGNETTING_FLOOR}


def estimate_blur(x: np.ndarray, sigma_b: float = 2.0) -> Dict:
    """Gaussian blur σ in px by the re-blur gradient ratio at strong edges (Elder & Zucker 1998;
    Hu & de Haan 2006); see the module docstring.

    Args:
        x: (H, W) float32 op-space frame in [0, 1].
        sigma_b: σ of the re-blur in px.

    Returns:
        {"sigma" (px; 0.0 with fewer than 20 edge pixels, inf when no gradient fall),
        "edges" (edge pixels used), "present" (BLUR_FLOOR < σ < 50)}.
    """
    x = np.asarray(x, np.float32)

    def grad(img):
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        return np.sqrt(gx * gx + gy * gy)

    g = grad(x)
    gb = grad(cv2.GaussianBlur(x, (0, 0), sigma_b))
    peak = g >= cv2.dilate(g, np.ones((3, 3), np.uint8))
    strong = peak & (g >= np.percentile(g, 98.0)) & (gb > 1e-6)
    if strong.sum() < 20:
        return {"sigma": 0.0, "edges": int(strong.sum()), "present": False}
    ratio = np.median(g[strong] / gb[strong])
    sigma = float(sigma_b / math.sqrt(ratio * ratio - 1.0)) if ratio > 1.0 + 1e-6 else float("inf")
    return {"sigma": sigma, "edges": int(strong.sum()), "present": BLUR_FLOOR < sigma < 50.0}


def blockiness(grey: np.ndarray) -> float:
    """Mean |step| across 8×8 block boundaries over the mean |step| inside blocks (rows and columns),
    each step less its column's (row's) median step, so column/row FPN is not blocking.

    Args:
        grey: (H, W) array, typically uint8 grey levels.

    Returns:
        the ratio (≈ 1 for an unblocked frame), averaged over the horizontal and vertical steps.
    """
    g = np.asarray(grey, np.float64)
    ratios = []
    for d in (np.diff(g, axis=1), np.diff(g, axis=0).T):
        # a column (row) offset pattern steps by the same amount all down the column: take each
        # column's median step out, so stripes FPN does not read as blocking (JPEG's block steps
        # change sign from block to block and keep their size)
        d = np.abs(d - np.median(d, axis=0))
        idx = np.arange(d.shape[1])
        at = (idx % 8) == 7  # the step between pixel 8k+7 and 8k+8
        inside = d[:, ~at].mean()
        ratios.append(d[:, at].mean() / max(inside, 1e-9))
    return float(np.mean(ratios))


def grid_blockiness(grey: np.ndarray) -> Tuple[float, Tuple[int, int]]:
    """:func:`blockiness` at the JPEG grid's own phase: a decode cropped or flipped since (a
    frame whose width is no multiple of 8 mirrored, a border cut off) has its 8×8 block
    boundaries between pixels 8k+p and 8k+p+1 for some p other than 7, where the fixed phase reads
    no blocking at all (a q40 decode cropped by 1-7 pixels read 0.77-0.92, aligned 2.24). Each
    axis takes the phase whose boundary steps stand out most over the other seven's (the
    encoder's grid phases of the two axes are independent); an aligned decode's phase is 7,
    its ratio :func:`blockiness`'s.

    Args:
        grey: (H, W) array, typically uint8 grey levels.

    Returns:
        (the ratio averaged over the two axes, ≈ 1 for an unblocked frame; (row, column) where
        the first whole block starts, 0-7 each: the frame cropped there puts the grid at the origin).
    """
    g = np.asarray(grey, np.float64)
    ratios, starts = [], []
    for d in (np.diff(g, axis=0).T, np.diff(g, axis=1)):
        d = np.abs(d - np.median(d, axis=0))   # as blockiness: a column's offset steps taken out
        idx = np.arange(d.shape[1]) % 8
        col = d.sum(axis=0)
        total, n = float(col.sum()), d.shape[0]
        best, phase = -1.0, 7
        for p in (7, 0, 1, 2, 3, 4, 5, 6):   # 7 first: an aligned grid keeps blockiness's phase on ties
            at = idx == p
            k = int(at.sum())
            if k == 0 or k == idx.size:
                continue
            ratio = (float(col[at].sum()) / (k * n)) / max((total - float(col[at].sum())) / ((idx.size - k) * n), 1e-9)
            if ratio > best:
                best, phase = ratio, p
        ratios.append(best if best >= 0 else 1.0)
        starts.append((phase + 1) % 8)
    return float(np.mean(ratios)), (starts[0], starts[1])


def _reencoding_errors(grey: np.ndarray, qualities: Sequence[int]) -> np.ndarray:
    """Mean squared error (grey levels²) of ``grey`` (uint8 (H, W)) re-encoded as JPEG at each quality."""
    ref = grey.astype(np.float32)
    errors = []
    for q in qualities:
        ok, buf = cv2.imencode(".jpg", grey, [int(cv2.IMWRITE_JPEG_QUALITY), int(q)])
        errors.append(float(np.mean((cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) - ref) ** 2)))
    return np.asarray(errors)


def estimate_jpeg(x: np.ndarray, qualities: Sequence[int] = tuple(range(2, 96))) -> Dict:
    """JPEG quality by the JPEG-ghost minimum (Farid 2009), detected first by 8×8 blockiness.

    A frame not found JPEG on its own grid is looked at on the grid phase where its block steps
    stand out most (:func:`grid_blockiness`: a decode cropped or mirrored since, e.g. a width no
    multiple of 8 flipped). There blocking alone proves nothing (the best of 8 phases of the
    virtual camera's 8-pixel-period texture reads 1.3-1.6, past :data:`BLOCKINESS_FLOOR`); a decode
    shows itself by its ghost on its own grid: re-encoded from where its first block starts, at its
    quality, it comes back almost exactly, while the uncut frame (blocks misaligned) does not.
    The ratio of the two errors at the best quality is under :data:`GRID_GHOST` for a decode
    (measured: 0.000-0.016 at q 20-40 on four emulated cameras, any crop) and 0.5 or more for
    frames never JPEG-coded (grids of scene texture, near-lossless re-encoding of a flat frame).

    Args:
        x: (H, W) float32 op-space frame in [0, 1] (quantised to uint8 grey levels).
        qualities: the re-encoding qualities tried (0–100).

    Returns:
        {"quality" (int, None when not blocky), "blockiness" (:func:`blockiness`, the frame's own
        grid), "present"}; when present also "ghost_mse" (grey levels²), "ghost_depth" (median
        error over the minimum's) and "grid" ([row, column] where the decode's first whole block
        starts; [0, 0] on the frame's own grid), off the grid "grid_ghost" (the error ratio).
    """
    grey = np.clip(np.rint(np.asarray(x) * GREY), 0, 255).astype(np.uint8)
    block = blockiness(grey)
    if block <= BLOCKINESS_SCREEN:
        return _estimate_jpeg_off_grid(grey, block, qualities)
    errors = _reencoding_errors(grey, qualities)
    # the ghost is a sharp local minimum; near-lossless re-encoding (high q) is small
    # everywhere, so take the local minimum lowest relative to its neighbours
    local = [i for i in range(1, len(errors) - 1) if errors[i] < errors[i - 1] and errors[i] <= errors[i + 1]]
    sharp = lambda i: errors[i] / max(min(errors[i - 1], errors[i + 1]), 1e-12)  # noqa: E731
    k = min(local, key=sharp) if local else int(np.argmin(errors))
    sharpness = float(sharp(k)) if k in local else 1.0
    # present: the grey levels are a JPEG decode (a ghost: re-encoding at their quality
    # reproduces them almost exactly), or blocking too strong to be scene texture (a JPEG
    # whose grey levels were remapped since, e.g. by an AGC, keeps its blocks but no ghost)
    present = (block > BLOCKINESS_SCREEN and sharpness < GHOST_SHARPNESS) or block > BLOCKINESS_FLOOR
    if not present:
        # scene texture's blocking on the frame's grid, no ghost there: a decode may lie off it
        off = _estimate_jpeg_off_grid(grey, block, qualities)
        if off["present"]:
            return off
        return {"quality": None, "blockiness": block, "ghost_sharpness": sharpness, "present": False}
    return {"quality": int(qualities[k]), "blockiness": block, "ghost_mse": float(errors[k]),
            "ghost_depth": float(np.median(errors) / max(errors[k], 1e-9)), "ghost_sharpness": sharpness,
            "grid": [0, 0], "present": True}


def _estimate_jpeg_off_grid(grey: np.ndarray, block: float, qualities: Sequence[int]) -> Dict:
    """:func:`estimate_jpeg` for a frame with no blocking on its own grid (its docstring)."""
    off_grid, (top, left) = grid_blockiness(grey)
    if (top, left) == (0, 0) or off_grid <= BLOCKINESS_SCREEN:
        return {"quality": None, "blockiness": block, "present": False}
    errors = _reencoding_errors(grey[top:, left:], qualities)
    ratio = errors / np.maximum(_reencoding_errors(grey, qualities), 1e-12)
    k = int(np.argmin(ratio))
    if not ratio[k] < GRID_GHOST:
        return {"quality": None, "blockiness": block, "grid_ghost": float(ratio[k]), "present": False}
    return {"quality": int(qualities[k]), "blockiness": block, "ghost_mse": float(errors[k]),
            "ghost_depth": float(np.median(errors) / max(errors[k], 1e-9)), "grid": [int(top), int(left)],
            "grid_ghost": float(ratio[k]), "present": True}


def estimate_contrast(x: np.ndarray, reference: Sequence[float] = CLEAN_REFERENCE) -> Dict:
    """Contrast α, brightness β of x = α·clean + β against the clean reference percentiles.

    Args:
        x: (H, W) float32 op-space frame in [0, 1].
        reference: the clean frame's 0.5/99.5 % percentiles in op space.

    Returns:
        {"contrast": α − 1 (as the op draws it), "brightness": β (fraction of the op range),
        "alpha": α, "present": α < CONTRAST_FLOOR}.
    """
    lo, hi = (float(v) for v in np.percentile(np.asarray(x)[::2, ::2], (0.5, 99.5)))
    alpha = (hi - lo) / max(reference[1] - reference[0], 1e-6)
    beta = lo - alpha * reference[0]
    return {"contrast": alpha - 1.0, "brightness": beta, "alpha": alpha, "present": alpha < CONTRAST_FLOOR}


def estimate_dropout(x: np.ndarray) -> Dict:
    """Shares of dead (→ 0) and hot (→ 1) pixels that stand out of their 3×3 median by more than 0.25.

    Args:
        x: (H, W) float32 op-space frame in [0, 1].

    Returns:
        {"dead_p", "hot_p" (shares of the pixels, in [0, 1]), "present" (sum > DROPOUT_FLOOR)}.
    """
    x = np.asarray(x, np.float32)
    med = cv2.medianBlur(np.clip(x, 0, 1), 3)
    odd = np.abs(x - med) > 0.25
    dead = float(np.mean(odd & (x <= 1.0 / GREY)))
    hot = float(np.mean(odd & (x >= 254.0 / GREY)))
    return {"dead_p": dead, "hot_p": hot, "present": dead + hot > DROPOUT_FLOOR}


ESTIMATORS = {
    "contrast": estimate_contrast,
    "blur": estimate_blur,
    "vignetting": estimate_vignetting,
    "stripes": estimate_stripes,
    "gaussian_noise": estimate_noise,
    "pixel_dropout": estimate_dropout,
    "jpeg": estimate_jpeg,
}


def fit_frame(x: np.ndarray) -> Dict[str, Dict]:
    """Every estimator on one op-space frame.

    Args:
        x: (H, W) float32 op-space frame in [0, 1] (see :func:`to_op_space`).

    Returns:
        {op: that op's estimate dict, each with "present"}, ops in :data:`ESTIMATORS` order.
    """
    return {op: fn(x) for op, fn in ESTIMATORS.items()}


def fit_frames(frames: Sequence[np.ndarray], progress: bool = False) -> List[Dict[str, Dict]]:
    """:func:`fit_frame` on each op-space frame (tqdm progress when asked).

    Args:
        frames: sequence of (H, W) float32 op-space frames in [0, 1].
        progress: show a tqdm bar.

    Returns:
        one :func:`fit_frame` dict per frame, in order.
    """
    from tqdm import tqdm

    return [fit_frame(x) for x in tqdm(frames, desc="fit ops", unit="frame", disable=not progress)]


def _range(values: Sequence[float], digits: int = 3) -> List[float]:
    v = np.asarray([float(a) for a in values if a is not None and np.isfinite(a)])
    lo, hi = np.percentile(v, (10, 90))
    return [round(float(lo), digits), round(float(hi), digits)]


def propose(fits: Sequence[Dict[str, Dict]], name: str, presence: float = 0.5) -> Dict:
    """A spec from per-frame fits: an op is a step when more than ``presence`` of the frames
    show it; each parameter's range is the 10th–90th percentile of the frames' estimates.
    Returns {"name", "description", "steps", "fit"}: ``fit`` per op holds the share of frames
    showing it, the median estimate of each parameter and the op's residual where it has one.
    Raises ValueError for an empty cluster."""
    if not fits:
        raise ValueError(f"cluster {name!r} has no frames to fit")
    steps, fit = [], {}
    for op in ORDER:
        est = [f[op] for f in fits]
        share = float(np.mean([e["present"] for e in est]))
        shown = [e for e in est if e["present"]] or est
        fit[op] = {"share": round(share, 3)}
        if op == "contrast":
            params = {"contrast": _range([e["contrast"] for e in shown]),
                      "brightness": _range([e["brightness"] for e in shown]), "pivot": "zero"}
        elif op == "blur":
            sig = _range([e["sigma"] for e in shown])
            kernel = [max(3, 2 * math.ceil(3 * s) + 1) for s in sig]
            params = {"kernel": kernel, "sigma": sig}
        elif op == "vignetting":
            params = {"strength": _range([e["strength"] for e in shown]), "gamma": _range([e["gamma"] for e in shown])}
            fit[op]["residual"] = round(float(np.median([e["residual"] for e in shown])), 5)
            fit[op]["residual_without"] = round(float(np.median([e["residual_none"] for e in shown])), 5)
        elif op == "stripes":
            params = {"gain_std": _range([e["gain_std"] for e in shown], 4),
                      "offset_std": _range([e["offset_std"] for e in shown]),
                      "column_p": round(float(np.mean([e["columns"] for e in shown])), 3)}
        elif op == "gaussian_noise":
            params = {"sigma": _range([e["sigma"] for e in shown])}
        elif op == "pixel_dropout":
            params = {"dead_p": round(float(np.median([e["dead_p"] for e in shown])), 6),
                      "hot_p": round(float(np.median([e["hot_p"] for e in shown])), 6)}
        else:  # jpeg
            qs = [e["quality"] for e in shown if e.get("quality") is not None]
            params = {"quality": [int(v) for v in _range(qs, 0)]} if qs else {}
            fit[op]["blockiness"] = round(float(np.median([e["blockiness"] for e in est])), 3)
        fit[op]["median"] = {k: (round(float(np.mean(v)), 4) if isinstance(v, list) else v) for k, v in params.items()}
        if share > presence and params:
            steps.append({"op": op, **params})
    return {"name": name, "description": f"proposed by tir discover from {len(fits)} collected frames "
                                         "(engines/propose.py estimators; ranges = 10th-90th percentile)",
            "steps": steps, "fit": fit}
