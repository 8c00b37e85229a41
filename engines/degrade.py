"""Thermal degradation synthesis: the ECMRNet recipe on float frames in [0, 1].

Source of every operator and range: /work/shared/reference/ecmrnet.md §1.3 (ECMRNet,
codes/utils/Tir_Degradation.py). The recipe works on 8-bit grey levels; here quantities given
in grey levels are divided by 255 and every step clips to [0, 1] as the 8-bit pipeline does.

A degradation is a :class:`DegradationSpec`: a name and an ordered list of steps, each a dict
``{"op": ..., <parameter>: [lo, hi], "p": 1.0}``. Built-in specs live in ``engines/specs/*.json``;
a user can write a new JSON spec (other ranges, other order) and pass its path anywhere a task
name is accepted. A compound spec names its parts instead of copying their steps
(``"parts": ["contrast", "noise"]``: the steps are the parts' steps in that order). The training
tasks are the specs with a ``"task_order"``; :data:`TASKS`, :data:`SINGLE_TASKS` and
:data:`COMPOUND_PARTS` are derived from the spec files. Every op is an entry of :data:`OPS`
with a parameter dataclass: a spec with an unknown op or key, or a parameter of the wrong type
or range, is refused naming the spec, the step and the op.

Random draws are made step by step from one ``np.random.Generator``, each step drawing all of
its parameters and noise for the whole batch before the next step starts. So
``degrade(x, "CB", np.random.default_rng(s))`` equals
``degrade(degrade(x, "contrast", g), "blur", g)`` with ``g = np.random.default_rng(s)``.

Choices where the source is silent or unconfirmed (documented, not from the paper):
- contrast: albumentations' RandomBrightnessContrast computes ``x·α + β·max`` (its functional
  code builds a LUT ``lut *= alpha; lut += beta * max_value`` with brightness_by_max=True, then
  clips), α = 1 + U(contrast), β = U(brightness): the default ``"pivot": "zero"``, so the frame
  gets darker-and-flatter plus a positive offset. ``"pivot": "mean"`` scales around the frame mean
  instead, ``(x − m)·α + m + β``; it is harsher (CBN on RoadScene test, seed 0: 11.5 dB vs 15.7 dB
  with "zero"; cpu_budget.md's calibration run reported 11.4 dB, i.e. it likely used "mean").
- vignetting (defined, unused in ECMRNet, formula not recorded): ``x · (1 − s·r^γ)`` with r the
  distance to the frame centre normalised to 1 at the corners.
- dead/hot pixels: PixelDropout with probability 0.002 to 0 (dead) and 0.001 to 1 (hot).
- jpeg: heavy JPEG blocking, quality 5–15 (cv2.imencode); NOT an ECMRNet task. It is an unseen
  degradation used to test the router's "unknown" answer.

A shared leaf (docs/architecture.md, "Layers"): the runtime (the virtual camera) and training
both use it, and it imports nothing from tir but the registry helpers (tests/test_layers.py).
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from ..edge.errors import UsageError
from ..edge.jsontext import loads as json_loads
from ..edge.registry import OptionError, Registry, option
from ..edge.regular import imread_unchanged

SPEC_DIR = Path(__file__).resolve().parent / "specs"
GREY = 255.0  # the recipe's grey-level scale (8-bit)

Rng = Union[np.random.Generator, int, None]


class DegradationError(UsageError):  # a ValueError too
    """A bad spec, task name, image array or data folder; the message says what exists."""


class DegradationParamError(DegradationError, OptionError):
    """A bad op parameter: the message names the spec, the step, the op and the parameter."""


#: op name -> function (batch float32 N×H×W, params, rng) -> new batch; each op's parameter
#: dataclass is its ``options`` (see :func:`register_op`)
OPS = Registry("degradation op", DegradationError, option_error=DegradationParamError)


def register_op(name: str, params: type, help: str):
    """Decorator adding an op to :data:`OPS` with its parameter dataclass (docs/architecture.md)."""
    return OPS.register(name, help=help, options=params)


# ---------------------------------------------------------------------------------------------
# parameter types: a range [lo, hi] (a number means [v, v]) or a probability, checked on load
# ---------------------------------------------------------------------------------------------

def _range(value) -> Tuple[float, float]:
    """A ``[lo, hi]`` pair (or one number) of floats; ValueError when not numbers or hi < lo."""
    if isinstance(value, bool):
        raise ValueError("not a number")
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError("not [lo, hi]")
    lo, hi = value
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (lo, hi)):
        raise ValueError("not numbers")
    if hi < lo:
        raise ValueError(f"range [{lo}, {hi}] has hi < lo")
    return float(lo), float(hi)


def _range_within(lo: float, hi: float):
    def check(value: Tuple[float, float]) -> Optional[str]:
        if lo <= value[0] and value[1] <= hi:
            return None
        return f"must lie within [{lo:g}, {hi:g}]"
    return check


def _probability(value: float) -> Optional[str]:
    return None if 0.0 <= value <= 1.0 else "must be a probability in [0, 1]"


def range_option(default: Tuple[float, float], help: str, lo: float = -float("inf"),
                 hi: float = float("inf")) -> Any:
    """An op parameter drawn uniformly from ``[lo, hi]`` (given as a pair or one number)."""
    return option(default, help, parse=_range, kind="[lo, hi] numbers with lo <= hi", check=_range_within(lo, hi))

# ---------------------------------------------------------------------------------------------
# operators: each takes (batch float32 N×H×W, its params dataclass, rng) and returns the new batch
# ---------------------------------------------------------------------------------------------

def _uniform(rng: np.random.Generator, rng_range, n: int) -> np.ndarray:
    lo, hi = _as_range(rng_range)
    return rng.uniform(lo, hi, size=n).astype(np.float32)


def _integers(rng: np.random.Generator, rng_range, n: int, odd: bool = False) -> np.ndarray:
    lo, hi = (int(round(v)) for v in _as_range(rng_range))
    if odd:
        choices = np.arange(lo | 1, hi + 1, 2)
        if choices.size == 0:
            raise DegradationError(f"no odd integer in range [{lo}, {hi}]")
        return choices[rng.integers(0, choices.size, size=n)]
    return rng.integers(lo, hi + 1, size=n)


def _as_range(value) -> Tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    lo, hi = value
    if hi < lo:
        raise DegradationError(f"range [{lo}, {hi}] has hi < lo")
    return float(lo), float(hi)


@dataclass(frozen=True)
class ContrastParams:
    """Parameters of the ``contrast`` op (low contrast, LC): albumentations RandomBrightnessContrast.

    Each image draws α = 1 + U(``contrast``) and β = U(``brightness``); ``pivot="zero"`` gives
    ``x·α + β`` (albumentations' LUT with brightness_by_max, the frame in [0, 1] so max = 1),
    ``pivot="mean"`` gives ``(x − m)·α + m + β`` with m the frame mean (see the module docstring).

    Attributes:
        contrast: [lo, hi] range of α − 1, ≥ −1, unitless; default (−0.8, −0.4), i.e. a contrast
            factor 0.2–0.6 (ecmrnet.md §1.3, ``contrast_limit``).
        brightness: [lo, hi] range of β as a fraction of the maximum (1.0); default (0.1, 0.2)
            (ecmrnet.md §1.3, ``brightness_limit``).
        pivot: ``"zero"`` (albumentations, the default) or ``"mean"``; ours, the source is silent.
    """
    contrast: Tuple[float, float] = range_option((-0.8, -0.4), "α - 1 range (negative: flatter)", -1.0)
    brightness: Tuple[float, float] = range_option((0.1, 0.2), "β range, fraction of the maximum")
    pivot: str = option("zero", "scale around 0 (albumentations) or the frame mean", choices=("zero", "mean"))


@register_op("contrast", ContrastParams, help="RandomBrightnessContrast: x·α + β (low contrast) [ecmrnet.md 1.3]")
def _op_contrast(x: np.ndarray, step: ContrastParams, rng: np.random.Generator) -> np.ndarray:
    """RandomBrightnessContrast: α = 1 + U(contrast), β = U(brightness)·max [ecmrnet.md §1.3]."""
    n = x.shape[0]
    alpha = (1.0 + _uniform(rng, step.contrast, n))[:, None, None]
    beta = _uniform(rng, step.brightness, n)[:, None, None]
    if step.pivot == "zero":
        return x * alpha + beta
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * alpha + mean + beta


@dataclass(frozen=True)
class BlurParams:
    """Parameters of the ``blur`` op: cv2.GaussianBlur with a per-image odd kernel and σ.

    Source: ecmrnet.md §1.3 (GaussianBlur, kernel 7–17 odd, σ ∈ [1, 2]).

    Attributes:
        kernel: [lo, hi] kernel size range in px, ≥ 1; an odd integer is drawn uniformly from it
            (default (7, 17)); a range holding no odd integer raises DegradationError when applied.
        sigma: [lo, hi] Gaussian σ range in px, ≥ 0 (default (1.0, 2.0)).
    """
    kernel: Tuple[float, float] = range_option((7, 17), "odd kernel size range, pixels", 1)
    sigma: Tuple[float, float] = range_option((1.0, 2.0), "Gaussian σ range, pixels", 0.0)


@register_op("blur", BlurParams, help="Gaussian blur, odd kernel 7-17, σ U(1, 2) [ecmrnet.md 1.3]")
def _op_blur(x: np.ndarray, step: BlurParams, rng: np.random.Generator) -> np.ndarray:
    """Gaussian blur, odd kernel 7–17, σ U(1, 2) [ecmrnet.md §1.3]."""
    n = x.shape[0]
    kernels = _integers(rng, step.kernel, n, odd=True)
    sigmas = _uniform(rng, step.sigma, n)
    out = np.empty_like(x)
    for i in range(n):
        k = int(kernels[i])
        out[i] = cv2.GaussianBlur(x[i], (k, k), float(sigmas[i]))
    return out


def _radial(n: int, h: int, w: int, cy: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """Distance of every pixel to a per-image centre, normalised to 1 at the farthest corner."""
    yy = np.arange(h, dtype=np.float32)[None, :, None]
    xx = np.arange(w, dtype=np.float32)[None, None, :]
    cy = cy.astype(np.float32)[:, None, None]
    cx = cx.astype(np.float32)[:, None, None]
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    far = np.sqrt(np.maximum(cy, h - 1 - cy) ** 2 + np.maximum(cx, w - 1 - cx) ** 2)
    return dist / np.maximum(far, 1e-6)


@dataclass(frozen=True)
class NonuniformityParams:
    """Parameters of the ``nonuniformity`` op (optical non-uniformity, noise step 1).

    Each image gets n = cos(p·π/2)⁴ with p the distance to a random centre normalised to 1 at the
    farthest corner, and adds δ·n or (inverted) δ·(1 − n). Source: ecmrnet.md §1.3.

    Attributes:
        delta: [lo, hi] shading amplitude δ in grey levels (of 255), drawn as an integer; default
            (15, 55) (ecmrnet.md §1.3: δ ∈ {15…55}).
        inverted_p: probability in [0, 1] of the inverted (dark-centre) shading δ·(1 − n); default
            0.5 (ecmrnet.md §1.3: 50/50).
    """
    delta: Tuple[float, float] = range_option((15, 55), "shading amplitude range, grey levels (integers)")
    inverted_p: float = option(0.5, "probability of the inverted (dark-centre) shading", check=_probability)


@register_op("nonuniformity", NonuniformityParams,
             help="optical non-uniformity: cos⁴ shading around a random centre [ecmrnet.md 1.3]")
def _op_nonuniformity(x: np.ndarray, step: NonuniformityParams, rng: np.random.Generator) -> np.ndarray:
    """Optical non-uniformity: n = cos(p·π/2)⁴ around a random centre; add δ·n or δ·(1−n)."""
    n, h, w = x.shape
    cy = rng.uniform(0, h - 1, size=n)
    cx = rng.uniform(0, w - 1, size=n)
    delta = _integers(rng, step.delta, n).astype(np.float32) / GREY
    inverted = rng.random(n) < float(step.inverted_p)
    shade = _radial(n, h, w, cy, cx)
    shade *= np.float32(np.pi / 2)
    np.cos(shade, out=shade)
    shade *= shade
    shade *= shade
    shade[inverted] = 1.0 - shade[inverted]
    shade *= delta[:, None, None]
    shade += x
    return shade


@dataclass(frozen=True)
class StripesParams:
    """Parameters of the ``stripes`` op (stripe noise, noise step 2).

    Column-wise (or row-wise) gain g ~ N(0, s_g²) and offset b ~ N(0, s_b²) per line, applied as
    ``x += x·g + b``. Source: ecmrnet.md §1.3.

    Attributes:
        gain_std: [lo, hi] range of s_g, ≥ 0, unitless (relative gain); default (0.03, 0.07).
        offset_std: [lo, hi] range of s_b in grey levels (of 255), ≥ 0; default (0, 3).
        column_p: probability in [0, 1] of column (else row) stripes; default 0.5 (50/50).
    """
    gain_std: Tuple[float, float] = range_option((0.03, 0.07), "std range of the per-line gain", 0.0)
    offset_std: Tuple[float, float] = range_option((0.0, 3.0), "std range of the per-line offset, grey levels", 0.0)
    column_p: float = option(0.5, "probability of column (else row) stripes", check=_probability)


@register_op("stripes", StripesParams, help="column or row stripes: per-line gain and offset [ecmrnet.md 1.3]")
def _op_stripes(x: np.ndarray, step: StripesParams, rng: np.random.Generator) -> np.ndarray:
    """Column (or row, 50/50) gain g~N(0,s_g²) and offset b~N(0,s_b²): x += x·g + b."""
    n, h, w = x.shape
    s_g = _uniform(rng, step.gain_std, n)
    s_b = _uniform(rng, step.offset_std, n) / GREY
    columns = rng.random(n) < float(step.column_p)
    col_noise = rng.standard_normal((2, n, w), dtype=np.float32)
    row_noise = rng.standard_normal((2, n, h), dtype=np.float32)
    # zero the unused orientation, then one broadcast sum builds each N×H×W field
    col_noise *= (columns * np.array([s_g, s_b]))[:, :, None].astype(np.float32)
    row_noise *= (~columns * np.array([s_g, s_b]))[:, :, None].astype(np.float32)
    gain = col_noise[0][:, None, :] + row_noise[0][:, :, None]
    gain += 1.0
    gain *= x
    gain += col_noise[1][:, None, :]
    gain += row_noise[1][:, :, None]
    return gain


@dataclass(frozen=True)
class GaussianNoiseParams:
    """Parameters of the ``gaussian_noise`` op (additive Gaussian noise, noise step 3).

    Source: ecmrnet.md §1.3 (albumentations GaussNoise, std_range (5/255, 15/255)).

    Attributes:
        sigma: [lo, hi] range of the noise σ in grey levels (of 255), ≥ 0; default (5, 15).
    """
    sigma: Tuple[float, float] = range_option((5.0, 15.0), "noise σ range, grey levels", 0.0)


@register_op("gaussian_noise", GaussianNoiseParams,
             help="additive Gaussian noise, σ U(5, 15) grey levels [ecmrnet.md 1.3]")
def _op_gaussian_noise(x: np.ndarray, step: GaussianNoiseParams, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise, σ U(5, 15) grey levels (GaussNoise std_range) [ecmrnet.md §1.3]."""
    n = x.shape[0]
    sigma = _uniform(rng, step.sigma, n) / GREY
    noise = rng.standard_normal(x.shape, dtype=np.float32)
    noise *= sigma[:, None, None]
    noise += x
    return noise


@dataclass(frozen=True)
class PixelDropoutParams:
    """Parameters of the ``pixel_dropout`` op: dead (→ 0) and hot (→ 1) pixels, independent per pixel.

    Source: ecmrnet.md §1.3 (PixelDropout 0.002 / 0.001, defined but unused in ECMRNet).

    Attributes:
        dead_p: probability in [0, 1] that a pixel reads 0 (dead); default 0.002.
        hot_p: probability in [0, 1] that a pixel reads 1 (hot); default 0.001.
    """
    dead_p: float = option(0.002, "probability of a dead (0) pixel", check=_probability)
    hot_p: float = option(0.001, "probability of a hot (1) pixel", check=_probability)


@register_op("pixel_dropout", PixelDropoutParams, help="dead and hot pixels, PixelDropout 0.002/0.001 [ecmrnet.md 1.3]")
def _op_pixel_dropout(x: np.ndarray, step: PixelDropoutParams, rng: np.random.Generator) -> np.ndarray:
    """Dead (→0) and hot (→1) pixels, PixelDropout 0.002 / 0.001 [ecmrnet.md §1.3]."""
    u = rng.random(x.shape, dtype=np.float32)
    dead = float(step.dead_p)
    hot = float(step.hot_p)
    out = x.copy()
    out[u < dead] = 0.0
    out[(u >= dead) & (u < dead + hot)] = 1.0
    return out


@dataclass(frozen=True)
class VignettingParams:
    """Parameters of the ``vignetting`` op: ``x · (1 − s·r^γ)``, r the distance to the frame centre
    normalised to 1 at the corners.

    Ranges from ecmrnet.md §1.3 (TIR vignetting, defined but unused in ECMRNet); the formula is
    ours (the source does not record it).

    Attributes:
        strength: [lo, hi] range of s, the darkening at the corners as a fraction, within [0, 1];
            default (0.30, 0.48).
        gamma: [lo, hi] range of the radial fall-off exponent γ, ≥ 0; default (1.2, 1.8).
    """
    strength: Tuple[float, float] = range_option((0.30, 0.48), "darkening at the corners", 0.0, 1.0)
    gamma: Tuple[float, float] = range_option((1.2, 1.8), "radial fall-off exponent", 0.0)


@register_op("vignetting", VignettingParams, help="TIR vignetting x·(1 - s·r^γ) [ecmrnet.md 1.3; formula ours]")
def _op_vignetting(x: np.ndarray, step: VignettingParams, rng: np.random.Generator) -> np.ndarray:
    """TIR vignetting, strength 0.30–0.48, γ 1.2–1.8 [ecmrnet.md §1.3; formula is ours]."""
    n, h, w = x.shape
    strength = _uniform(rng, step.strength, n)[:, None, None]
    gamma = _uniform(rng, step.gamma, n)[:, None, None]
    centre_y = np.full(n, (h - 1) / 2.0)
    centre_x = np.full(n, (w - 1) / 2.0)
    r = _radial(n, h, w, centre_y, centre_x)
    return x * (1.0 - strength * r ** gamma)


@dataclass(frozen=True)
class JpegParams:
    """Parameters of the ``jpeg`` op: heavy JPEG blocking through cv2.imencode / cv2.imdecode.

    Not an ECMRNet degradation: an unseen one used to test the router's "unknown" answer.

    Attributes:
        quality: [lo, hi] JPEG quality range within [0, 100], drawn as an integer; default (5, 15).
    """
    quality: Tuple[float, float] = range_option((5, 15), "JPEG quality range (integers)", 0, 100)


@register_op("jpeg", JpegParams, help="heavy JPEG blocking, quality 5-15 (unseen degradation, not ECMRNet)")
def _op_jpeg(x: np.ndarray, step: JpegParams, rng: np.random.Generator) -> np.ndarray:
    """Heavy JPEG blocking via cv2.imencode, quality 5–15 (unseen degradation, not ECMRNet)."""
    n = x.shape[0]
    qualities = _integers(rng, step.quality, n)
    out = np.empty_like(x)
    for i in range(n):
        grey = np.clip(np.rint(x[i] * GREY), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", grey, [int(cv2.IMWRITE_JPEG_QUALITY), int(qualities[i])])
        if not ok:
            raise DegradationError("cv2.imencode failed to write JPEG")
        out[i] = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE).astype(np.float32) / GREY
    return out


@dataclass(frozen=True)
class CameraAGCParams:
    """Parameters of the ``camera_agc`` op: the camera's own AGC applied *after* the sensor noise,
    as an 8-bit camera applies it to its noisy counts (a real non-NUC'd camera's FPN reaches the
    user through the camera's AGC; the router variants otherwise add the noise after every tone
    curve).

    Each image is stretched linearly between its ``low``/``high`` percentiles and blended with the
    input by a strength s ~ U(``strength``): ``(1 - s)·x + s·stretch(x)`` (s = 1: a full
    percentile AGC; smaller: a camera whose AGC leaves part of the contrast loss).

    Attributes:
        low: [lo, hi] range of the lower percentile in % (0..50); default (0.5, 2).
        high: [lo, hi] range of the upper percentile in % (50..100); default (98, 99.5).
        strength: [lo, hi] range of s in [0, 1]; default (0.3, 1.0).
    """
    low: Tuple[float, float] = range_option((0.5, 2.0), "lower percentile range, %", 0.0, 50.0)
    high: Tuple[float, float] = range_option((98.0, 99.5), "upper percentile range, %", 50.0, 100.0)
    strength: Tuple[float, float] = range_option((0.3, 1.0), "blend of the stretched frame", 0.0, 1.0)


@register_op("camera_agc", CameraAGCParams,
             help="the camera's percentile AGC after the sensor noise, partly blended (router variants)")
def _op_camera_agc(x: np.ndarray, step: CameraAGCParams, rng: np.random.Generator) -> np.ndarray:
    """Percentile stretch per image blended with the input by s ~ U(strength); see the params."""
    n = x.shape[0]
    lows, highs, s = (_uniform(rng, step.low, n), _uniform(rng, step.high, n), _uniform(rng, step.strength, n))
    out = np.empty_like(x)
    for i in range(n):
        lo, hi = np.percentile(x[i], (float(lows[i]), float(highs[i])))
        stretched = (x[i] - lo) / max(float(hi - lo), 1e-6)
        out[i] = (1.0 - s[i]) * x[i] + s[i] * stretched
    return out


@dataclass(frozen=True)
class SensorFPNParams:
    """Parameters of the ``sensor_fpn`` op: fixed-pattern noise of an uncalibrated (non-NUC'd)
    microbolometer FPA.

    Offset standard deviations are fractions of the frame's scene span (1st–99th percentile,
    at least 0.02); the defaults bracket what was measured on non-NUC'd Lynred frames
    (shared/data/lynred_nonuc: column 2.5 %, row 1.0 %, pixel 2.7 % of the span), see the op.

    Attributes:
        column_rel: [lo, hi] range of the per-column offset std, fraction of the span, ≥ 0;
            default (0.015, 0.04).
        row_rel: [lo, hi] range of the per-row offset std, fraction of the span, ≥ 0;
            default (0.003, 0.015).
        pixel_rel: [lo, hi] range of the per-pixel offset std, fraction of the span, ≥ 0;
            default (0.005, 0.03).
        column_gain_std: [lo, hi] range of the per-column relative gain std, ≥ 0, unitless;
            default (0.005, 0.02).
    """
    column_rel: Tuple[float, float] = range_option((0.015, 0.04), "column offset std, fraction of the scene span", 0.0)
    row_rel: Tuple[float, float] = range_option((0.003, 0.015), "row offset std, fraction of the scene span", 0.0)
    pixel_rel: Tuple[float, float] = range_option((0.005, 0.03), "pixel offset std, fraction of the scene span", 0.0)
    column_gain_std: Tuple[float, float] = range_option((0.005, 0.02), "per-column gain std", 0.0)


@register_op("sensor_fpn", SensorFPNParams,
             help="fixed-pattern noise of an uncalibrated microbolometer: column/row/pixel offsets, column gain")
def _op_sensor_fpn(x: np.ndarray, step: SensorFPNParams, rng: np.random.Generator) -> np.ndarray:
    """Fixed-pattern noise of an uncalibrated (non-NUC'd) microbolometer, all at once: a column
    offset per column, a smaller row offset per row, a per-pixel offset, and a per-column gain,
    each a standard deviation drawn relative to the frame's scene span (1st-99th percentile).

    Default ranges bracket what was measured on real non-NUC'd Lynred frames
    (shared/data/lynred_nonuc, `engines/metrics.column_fpn` and its row analogue, per-pixel MAD
    of the high-pass): column 2.5 %, row 1.0 %, pixel 2.7 % of the scene span, against
    0.3-0.5 % column FPN on NUC'd cameras (docs/cameras.md). Column readout makes column FPN
    dominate; its offsets are redrawn per frame here (a router must not learn one sensor).
    """
    n, h, w = x.shape
    lo, hi = np.percentile(x[:, ::4, ::4].reshape(n, -1), (1, 99), axis=1)
    span = np.maximum(hi - lo, 0.02).astype(np.float32)[:, None, None]
    col = _uniform(rng, step.column_rel, n)[:, None, None]
    row = _uniform(rng, step.row_rel, n)[:, None, None]
    pix = _uniform(rng, step.pixel_rel, n)[:, None, None]
    gain = _uniform(rng, step.column_gain_std, n)[:, None, None]
    out = x * (1.0 + gain * rng.standard_normal((n, 1, w), dtype=np.float32))
    out += span * (col * rng.standard_normal((n, 1, w), dtype=np.float32)
                   + row * rng.standard_normal((n, h, 1), dtype=np.float32)
                   + pix * rng.standard_normal((n, h, w), dtype=np.float32))
    return out.astype(np.float32)


#: op -> its parameter names (a view of :data:`OPS`, kept for importers)
OP_KEYS: Dict[str, set] = {e.name: {o.name for o in e.option_list()} for e in OPS}


# ---------------------------------------------------------------------------------------------
# specs
# ---------------------------------------------------------------------------------------------

@dataclass
class DegradationSpec:
    """A named, ordered list of degradation steps (see the module docstring).

    ``parts``: the specs a compound is composed of (its steps are theirs, in order);
    ``task_order``: position among the training tasks (None: not a training task). Each step is
    checked against its op's parameter dataclass on construction; ``compiled`` holds the
    ``(op, params, p)`` triples :func:`degrade` applies. Raises DegradationError naming the spec,
    the step and the op for an unknown op or key or a bad parameter."""

    name: str
    steps: List[dict] = field(default_factory=list)
    description: str = ""
    parts: Tuple[str, ...] = ()
    task_order: Optional[int] = None
    compiled: List[tuple] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.steps:
            raise DegradationError(f"degradation spec {self.name!r} has no steps")
        self.parts = tuple(self.parts)
        self.compiled = [self._compile(i, step) for i, step in enumerate(self.steps)]

    def _compile(self, i: int, step: dict) -> tuple:
        op = step.get("op") if isinstance(step, dict) else None
        if not isinstance(op, str) or op not in OPS:
            raise DegradationError(
                f"spec {self.name!r} step {i}: unknown op {op!r}; known ops: {', '.join(OPS.names())}")
        entry = OPS.get(op)
        keys = {o.name for o in entry.option_list()}
        unknown = set(step) - keys - {"op", "p"}
        if unknown:
            raise DegradationError(
                f"spec {self.name!r} step {i} ({op}): unknown keys {sorted(unknown)}; "
                f"allowed: {sorted(keys | {'p'})}")
        where = f"spec {self.name!r} step {i} ({op})"
        params = entry.parse({k: v for k, v in step.items() if k not in ("op", "p")}, where=where)
        prob = step.get("p", 1.0)
        if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
            raise DegradationParamError(f"{where}: p must be a probability in [0, 1] (got {prob!r})")
        return entry.load(), params, float(prob)

    def to_json(self) -> str:
        """The spec as JSON, steps included (self-contained: bundles and checkpoints store it)."""
        data: Dict[str, Any] = {"name": self.name, "description": self.description}
        if self.parts:
            data["parts"] = list(self.parts)
        if self.task_order is not None:
            data["task_order"] = self.task_order
        data["steps"] = self.steps
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: Union[str, dict], _seen: Tuple[str, ...] = ()) -> "DegradationSpec":
        """A spec from JSON text or a dict: ``steps``, or ``parts`` (names of built-in specs or
        JSON paths whose steps are composed in order). A spec holding both (as bundles store
        them) runs its ``steps``. Raises DegradationError for a spec with neither, a part that
        does not exist or a cycle of parts."""
        data = json_loads(text) if isinstance(text, str) else dict(text)
        if "name" not in data or ("steps" not in data and "parts" not in data):
            raise DegradationError("a degradation spec needs 'name' and 'steps' (or 'parts')")
        name = str(data["name"])
        parts = data.get("parts") or ()
        if isinstance(parts, str) or not all(isinstance(p, str) for p in parts):
            raise DegradationError(f"spec {name!r}: 'parts' must be a list of spec names, got {parts!r}")
        if "steps" in data:
            steps = [dict(s) if isinstance(s, dict) else s for s in data["steps"]]
        else:
            if name.lower() in _seen:
                raise DegradationError(f"spec {name!r}: parts form a cycle ({' -> '.join(_seen + (name,))})")
            steps = _compose(name, parts, _seen + (name.lower(),))
        order = data.get("task_order")
        if order is not None and (isinstance(order, bool) or not isinstance(order, int)):
            raise DegradationError(f"spec {name!r}: task_order must be an integer, got {order!r}")
        return cls(name=name, steps=steps, description=str(data.get("description", "")), parts=tuple(parts),
                   task_order=order)


def _compose(name: str, parts: Sequence[str], seen: Tuple[str, ...]) -> List[dict]:
    """The steps of ``parts`` in order (copies), loading each part (recursively)."""
    if not parts:
        raise DegradationError(f"spec {name!r}: 'parts' is empty")
    steps: List[dict] = []
    for part in parts:
        if str(part).lower() in seen:
            raise DegradationError(f"spec {name!r}: parts form a cycle ({' -> '.join(seen + (part,))})")
        steps += [dict(step) for step in _load(part, seen).steps]
    return steps


def _catalogue() -> Dict[str, dict]:
    """Built-in spec name -> its JSON (engines/specs/*.json), read once."""
    global _CATALOGUE
    if _CATALOGUE is None:
        found = {}
        for path in sorted(SPEC_DIR.glob("*.json")):
            try:
                found[path.stem] = json_loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DegradationError(f"{path}: not valid JSON ({exc})") from exc
        _CATALOGUE = found
    return _CATALOGUE


_CATALOGUE: Optional[Dict[str, dict]] = None


def _training_tasks() -> Tuple[str, ...]:
    tasks = [(data["task_order"], name) for name, data in _catalogue().items() if data.get("task_order") is not None]
    return tuple(name for _, name in sorted(tasks))


#: the training tasks in training order: the built-in specs with a ``task_order``
TASKS: Tuple[str, ...] = _training_tasks()
#: the single-degradation tasks (no ``parts``)
SINGLE_TASKS: Tuple[str, ...] = tuple(t for t in TASKS if not _catalogue()[t].get("parts"))
#: compound task -> its parts, from the specs' ``parts``
COMPOUND_PARTS: Dict[str, Tuple[str, ...]] = {t: tuple(_catalogue()[t]["parts"]) for t in TASKS
                                              if _catalogue()[t].get("parts")}


def list_specs() -> List[str]:
    """Built-in spec names: the 7 tasks in training order, then the extras alphabetically."""
    names = sorted(_catalogue())
    return [t for t in TASKS if t in names] + [n for n in names if n not in TASKS]


def load_spec(name_or_path: Union[str, Path, DegradationSpec]) -> DegradationSpec:
    """A built-in spec by name (case-insensitive) or a JSON spec file by path; a compound's
    ``parts`` are composed into its steps. Raises DegradationError naming what exists."""
    if isinstance(name_or_path, DegradationSpec):
        return name_or_path
    return _load(name_or_path, ())


def _load(name_or_path: Union[str, Path], seen: Tuple[str, ...]) -> DegradationSpec:
    text = str(name_or_path)
    builtin = {n.lower(): n for n in list_specs()}
    if text.lower() in builtin:
        return DegradationSpec.from_json(_catalogue()[builtin[text.lower()]], seen)
    path = Path(text)
    if not path.is_file():
        raise DegradationError(
            f"no degradation {text!r}: not a built-in ({', '.join(list_specs())}) "
            f"and no such JSON file")
    try:
        return DegradationSpec.from_json(path.read_text(encoding="utf-8"), seen)
    except json.JSONDecodeError as exc:
        raise DegradationError(f"{path}: not valid JSON ({exc})") from exc


# ---------------------------------------------------------------------------------------------
# applying
# ---------------------------------------------------------------------------------------------

def as_generator(rng: Rng) -> np.random.Generator:
    """A ``np.random.Generator`` from a generator (returned as is), an int seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def degrade(images: np.ndarray, task: Union[str, Path, DegradationSpec], rng: Rng) -> np.ndarray:
    """Degrade float images in [0, 1] with a spec's steps; parameters are drawn per image.

    Steps run in the spec's order, each drawing all of its parameters for the whole batch from
    ``rng`` before the next (see the module docstring); a step with ``p < 1`` is applied to each
    image with that probability, and every step's output is clipped to [0, 1].

    Args:
        images: (H, W) or (N, H, W) floating-point array in [0, 1] (any float dtype; copied).
        task: a built-in spec name (case-insensitive), a JSON spec path or a DegradationSpec.
        rng: a ``np.random.Generator``, an int seed or None.

    Returns:
        float32 array of the input's shape, in [0, 1].

    Raises:
        DegradationError: ``images`` is not floating-point or not 2-D/3-D, ``task`` names no
            spec, or an op fails (an empty odd kernel range, a failed JPEG encode).
    """
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise DegradationError(
            f"degrade expects float images in [0, 1], got dtype {images.dtype}; divide 8-bit "
            "frames by 255 (or use load_roadscene/load_folder)")
    if images.ndim not in (2, 3):
        raise DegradationError(f"degrade expects (H,W) or (N,H,W), got shape {images.shape}")
    spec = load_spec(task)
    gen = as_generator(rng)
    batch = np.array(images, dtype=np.float32, copy=True)
    single = batch.ndim == 2
    if single:
        batch = batch[None]
    for op, params, prob in spec.compiled:
        out = op(batch, params, gen)
        if prob < 1.0:
            apply = gen.random(batch.shape[0]) < prob
            out = np.where(apply[:, None, None], out, batch)
        batch = np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)
    return batch[0] if single else batch


def task_seed(task: Union[str, DegradationSpec], seed: int) -> int:
    """A stable (process-independent) seed mixing a task name into ``seed``."""
    name = task.name if isinstance(task, DegradationSpec) else load_spec(task).name
    return (zlib.crc32(name.encode("utf-8")) ^ (int(seed) * 0x9E3779B1)) & 0xFFFFFFFF


def make_eval_set(clean_images: np.ndarray, task: Union[str, Path, DegradationSpec],
                  seed: int = 0) -> np.ndarray:
    """Fixed degraded copies: image i depends only on (i, task name, seed), not on the batch.

    Image i is degraded with ``np.random.default_rng([task_seed(spec, seed), i])``.

    Args:
        clean_images: (H, W) or (N, H, W) float images in [0, 1] (cast to float32).
        task: a built-in spec name, a JSON spec path or a DegradationSpec.
        seed: the evaluation seed.

    Returns:
        (N, H, W) float32 in [0, 1] (N = 1 for a single (H, W) image).

    Raises:
        DegradationError: ``task`` names no spec, or an op fails (see :func:`degrade`).
    """
    clean = np.asarray(clean_images, dtype=np.float32)
    if clean.ndim == 2:
        clean = clean[None]
    spec = load_spec(task)
    base = task_seed(spec, seed)
    out = np.empty_like(clean)
    for i in range(clean.shape[0]):
        out[i] = degrade(clean[i], spec, np.random.default_rng([base, i]))
    return out


# ---------------------------------------------------------------------------------------------
# clean frames
# ---------------------------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".pgm")


def counts_range(raw: np.ndarray, pad: float = 0.15) -> Tuple[float, float]:
    """The counts <-> [0, 1] map used to degrade raw (scene-referred) Y16 counts.

    The 0.5/99.5 percentiles of every other pixel (dead and hot pixels do not set it), widened by
    ``pad`` of the span on each side so hot objects are not clipped by the degradation's [0, 1]
    range, within 0..65535. Used by the virtual camera (``synthetic://?degrade=``) and by the
    per-camera evaluation (engines/training/camera_eval.py) alike.

    Args:
        raw: (H, W) array of counts (uint16 Y16, or any numeric dtype).
        pad: margin on each side as a fraction of the percentile span (span at least 1 count).

    Returns:
        ``(lo, hi)`` in counts, floats with 0 ≤ lo and hi ≤ 65535.
    """
    lo, hi = (float(v) for v in np.percentile(np.asarray(raw)[::2, ::2], (0.5, 99.5)))
    margin = pad * max(hi - lo, 1.0)
    return max(lo - margin, 0.0), min(hi + margin, 65535.0)


def roadscene_candidates(root: Optional[Union[str, Path]] = None) -> List[Path]:
    """Where RoadScene infrared frames are looked for, in order: ``root``; else ``$TIR_DATA`` (the
    frames folder itself), ``$TIR_DATA_ROOT/roadscene-ir`` (the folder holding every set, as
    engines/training/datasets.py ``data_root`` reads it: the one variable the README names), then
    ``shared/data/roadscene-ir`` beside the repository and beside the current folder."""
    if root is not None:
        return [Path(root)]
    paths = []
    if os.environ.get("TIR_DATA"):
        paths.append(Path(os.environ["TIR_DATA"]))
    if os.environ.get("TIR_DATA_ROOT"):  # was not read here: `tir calibrate --source roadscene` failed with it set
        paths.append(Path(os.environ["TIR_DATA_ROOT"]) / "roadscene-ir")
    repo = Path(__file__).resolve().parents[1]
    paths.append((repo / ".." / "shared" / "data" / "roadscene-ir").resolve())
    paths.append((Path.cwd() / ".." / "shared" / "data" / "roadscene-ir").resolve())
    return paths


def to_unit_float(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """8-bit -> /255; 16-bit (or wider) -> robust percentile stretch to [0,1]; grey float32."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.dtype == np.uint8:
        return image.astype(np.float32) / GREY
    if np.issubdtype(image.dtype, np.floating) and image.max() <= 1.0 and image.min() >= 0.0:
        return image.astype(np.float32)
    data = image.astype(np.float32)
    lo, hi = np.percentile(data, (low_pct, high_pct))
    return np.clip((data - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)


def _read_frames(paths: Sequence[Path], size: Optional[Tuple[int, int]]) -> np.ndarray:
    frames = []
    for path in paths:
        raw = imread_unchanged(path)   # never blocks on a FIFO named like a frame
        if raw is None:
            raise DegradationError(f"cannot read image {path}")
        frame = to_unit_float(raw)
        if size is not None:
            frame = cv2.resize(frame, tuple(int(v) for v in size), interpolation=cv2.INTER_AREA)
        frames.append(frame)
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise DegradationError(f"frames have different sizes {sorted(shapes)}; pass size=(w, h)")
    return np.stack(frames).astype(np.float32)


def load_roadscene(split: str, root: Optional[Union[str, Path]] = None,
                   size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """RoadScene IR frames of ``split`` (train/val/test) as float32 (N, H, W) in [0, 1].

    The frames folder is the first existing of :func:`roadscene_candidates`; the split list is
    ``<folder>/../roadscene-ir-<split>.txt`` (one file name a line). Frames go through
    :func:`to_unit_float` (8-bit /255, 16-bit percentile stretch).

    Args:
        split: the split list's name, e.g. ``"train"``, ``"val"``, ``"test"``.
        root: the frames folder (default: the first of :func:`roadscene_candidates` that exists).
        size: ``(w, h)`` in px to resize every frame to (cv2.INTER_AREA), or None.

    Returns:
        (N, H, W) float32 in [0, 1], in the split list's order.

    Raises:
        DegradationError: no frames folder, no split list (the message lists those that exist),
            frames of the list missing, an unreadable image, or frames of different sizes
            without ``size``.
    """
    tried = roadscene_candidates(root)
    found = next((p for p in tried if p.is_dir()), None)
    if found is None:
        raise DegradationError(
            "RoadScene frames not found; tried " + ", ".join(str(p) for p in tried)
            + ". Set $TIR_DATA_ROOT to the folder holding the sets (or $TIR_DATA to the frames folder), "
              "or pass --data DIR")
    list_file = found.parent / f"roadscene-ir-{split}.txt"
    if not list_file.is_file():
        existing = sorted(p.name for p in found.parent.glob("roadscene-ir-*.txt"))
        raise DegradationError(f"no split list {list_file}; existing: {existing or 'none'}")
    names = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
    missing = [n for n in names if not (found / n).is_file()]
    if missing:
        raise DegradationError(f"{len(missing)} frames of {list_file.name} missing in {found}, "
                               f"e.g. {missing[0]}")
    return _read_frames([found / n for n in names], size)


def load_folder(directory: Union[str, Path], size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Every image in a folder of clean frames (8- or 16-bit), sorted by name, as float32 (N, H, W).

    Files with a suffix in :data:`IMAGE_SUFFIXES` are read and mapped by :func:`to_unit_float`.

    Args:
        directory: the folder.
        size: ``(w, h)`` in px to resize every frame to (cv2.INTER_AREA), or None.

    Returns:
        (N, H, W) float32 in [0, 1].

    Raises:
        DegradationError: the folder does not exist, holds no image, an image cannot be read, or
            frames differ in size without ``size``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DegradationError(f"no such folder {directory}")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DegradationError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {directory}")
    return _read_frames(paths, size)
