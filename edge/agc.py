"""Display mapping: 14/16-bit counts -> 8-bit grey (AGC) -> BGR (palette).

Three AGC modes (facts from shared/reference/thermal_io.md §4):

- ``percentile``: linear between smoothed robust percentiles, ``out = clip((x-lo)·255/(hi-lo))``
  with an EMA on lo/hi and a minimum span, the max-gain analogue (§4.2). Min/max
  stretching is avoided on purpose: one hot or dead pixel would set the scale (§4.2).
- ``plateau``: FLIR-style plateau histogram equalisation (§4.1, Tau2/Quark app note
  102-PS242-100-01): histogram with tail rejection, every bin clipped at the plateau, the
  cumulative sum of the clipped histogram is the transfer LUT (empty count ranges get no
  grey levels), blended with a linear ramp (SSO / Boson LinearPercent), slope capped at a
  maximum gain, centred on the ITT midpoint when it cannot fill 0..255, and damped over
  time by the IIR ``L_n = α·L_new + (1-α)·L_{n-1}`` (Tau's α/256 with α in (0, 1] here).
- ``clahe``: the percentile stretch to 8 bits, then OpenCV CLAHE (clip limit 2, 8×8 tiles,
  §4.2 suggests 2..4 and applying it after a percentile pre-stretch).

Palettes: ``white-hot`` (grey), ``black-hot`` (inverted grey), ``ironbow`` (our own
black-indigo-magenta-orange-yellow-white ramp) and ``inferno`` (OpenCV's colour map).
Every path is a LUT or an OpenCV call; nothing loops over pixels in Python.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import cv2
import numpy as np

from .normalize import Normalizer

N_COUNTS = 65536


class PercentileAGC:
    """Linear AGC between EMA-smoothed percentiles with a minimum span (in counts).

    Calling it maps a (H, W) uint16 Y16 frame (counts) to a (H, W) uint8 grey frame:
    ``clip((x - lo) * 255 / (hi - lo))``. ``low_pct``/``high_pct`` are the percentiles (%) that
    set lo and hi, ``alpha`` the EMA weight of the new frame's range, ``min_span`` the smallest
    hi - lo in counts (the max-gain analogue, shared/reference/thermal_io.md §4.2), ``stride``
    the pixel subsampling used to take the percentiles.
    """

    name = "percentile"

    def __init__(self, low_pct: float = 1.0, high_pct: float = 99.0, alpha: float = 0.2,
                 min_span: float = 64.0, stride: int = 8):
        # the minimum span in stored values (count_steps off): the raw and the restored view map alike
        self._range = Normalizer(low_pct, high_pct, alpha=alpha, min_span=min_span, stride=stride, count_steps=False)

    def reset(self) -> None:
        """Forget the smoothed range; the next frame sets lo and hi afresh."""
        self._range.reset()

    def range(self, counts: np.ndarray):
        """The smoothed (lo, hi) this frame is displayed with.

        Args:
            counts: (H, W) Y16 frame, uint16 counts (any real dtype is accepted).

        Returns:
            (lo, hi) in counts, after the EMA and the minimum span.
        """
        params = self._range.update(counts)
        return params.lo, params.hi

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        lo, hi = self.range(counts)
        # saturating subtract then saturating scale: two vectorised OpenCV passes
        shifted = cv2.subtract(counts, lo) if counts.dtype == np.uint16 else np.clip(counts - lo, 0, None)
        return cv2.convertScaleAbs(shifted, alpha=255.0 / (hi - lo))


class PlateauAGC:
    """FLIR-style plateau histogram equalisation with max gain, linear blend and IIR damping.

    Calling it maps a (H, W) uint16 Y16 frame (counts) to a (H, W) uint8 grey frame through
    :meth:`lut`. Method after FLIR app note 102-PS242-100-01 (Tau2/Quark AGC), summarised in
    shared/reference/thermal_io.md §4.1.

    ``plateau`` is the clip limit per histogram bin as a multiple of the mean count of the
    populated bins (FLIR sets it in pixels per bin; a relative value keeps the behaviour
    independent of frame size and bit depth): small -> every populated count range gets
    the same share of grey levels, large -> classic equalisation. ``max_gain`` caps the
    LUT slope in grey levels per count. ``linear`` is the share of a linear ramp blended in.
    ``damping`` is the IIR α: 1.0 takes the new LUT at once, small values change slowly.
    ``tail_pct`` is the tail rejection at each end in % (FLIR recommends < 1 %). ``itt_mid`` is
    the grey level (0..255) the transfer function is centred on when it cannot fill 0..255.
    ``stride`` subsamples pixels for the histogram.

    Raises:
        ValueError: ``plateau`` or ``max_gain`` is not > 0, ``linear`` is outside [0, 1] or
            ``damping`` outside (0, 1].
    """

    name = "plateau"

    def __init__(self, plateau: float = 3.0, max_gain: float = 4.0, linear: float = 0.2,
                 damping: float = 0.25, tail_pct: float = 0.5, itt_mid: float = 127.5,
                 stride: int = 2):
        if plateau <= 0 or max_gain <= 0:
            raise ValueError("plateau and max_gain must be > 0")
        if not 0.0 <= linear <= 1.0 or not 0.0 < damping <= 1.0:
            raise ValueError("linear must be in [0, 1] and damping in (0, 1]")
        self.plateau = plateau
        self.max_gain = max_gain
        self.linear = linear
        self.damping = damping
        self.tail_pct = tail_pct
        self.itt_mid = itt_mid
        self.stride = max(1, int(stride))
        self._lut: Optional[np.ndarray] = None  # float32, N_COUNTS entries

    def reset(self) -> None:
        """Forget the damped LUT; the next frame's LUT is taken as it is."""
        self._lut = None

    def target_lut(self, counts: np.ndarray) -> np.ndarray:
        """This frame's undamped transfer function.

        Args:
            counts: (H, W) uint16 Y16 frame (counts).

        Returns:
            float32 array of 65536 entries (one per count value), grey levels in [0, 255].
        """
        sample = counts[:: self.stride, :: self.stride].ravel()
        hist = np.bincount(sample, minlength=N_COUNTS)
        n = sample.size
        cdf = np.cumsum(hist)
        tail = self.tail_pct / 100.0 * n
        lo = int(np.searchsorted(cdf, tail, side="right"))
        hi = int(np.searchsorted(cdf, n - tail, side="left"))
        hi = min(max(hi, lo + 1), N_COUNTS - 1)
        lo = min(lo, hi - 1)
        part = hist[lo : hi + 1].astype(np.float64)
        populated = np.count_nonzero(part)
        limit = self.plateau * part.sum() / max(populated, 1)
        clipped = np.minimum(part, limit)
        # increments between consecutive count values: equalised and linear, each summing to 255
        eq = clipped[1:] * (255.0 / max(clipped[1:].sum(), 1e-9))
        lin = np.full(hi - lo, 255.0 / (hi - lo))
        steps = (1.0 - self.linear) * eq + self.linear * lin
        steps = self._cap_slope(steps)
        rise = float(steps.sum())
        start = min(max(self.itt_mid - rise / 2.0, 0.0), 255.0 - rise)
        lut = np.empty(N_COUNTS, np.float32)
        lut[: lo + 1] = start
        lut[lo + 1 : hi + 1] = start + np.cumsum(steps)
        lut[hi + 1 :] = start + rise
        return lut

    def _cap_slope(self, steps: np.ndarray) -> np.ndarray:
        """Cap each step at ``max_gain``; hand what was cut to the uncapped steps (a few rounds)."""
        steps = np.minimum(steps, self.max_gain)
        for _ in range(4):
            missing = 255.0 - steps.sum()
            free = steps < self.max_gain
            mass = steps[free].sum()
            if missing <= 1e-6 or mass <= 0:
                break
            steps[free] *= 1.0 + missing / mass
            np.minimum(steps, self.max_gain, out=steps)
        return steps

    def lut(self, counts: np.ndarray) -> np.ndarray:
        """The damped LUT for this frame (the IIR of thermal_io.md §4.1 applied to the whole LUT).

        ``L_n = α·L_new + (1 - α)·L_{n-1}`` with α = ``damping``; the first frame's LUT is taken as is.

        Args:
            counts: (H, W) uint16 Y16 frame (counts).

        Returns:
            float32 array of 65536 entries, grey levels in [0, 255] (kept as state: do not modify).
        """
        new = self.target_lut(counts)
        if self._lut is None:
            self._lut = new
        else:
            self._lut *= 1.0 - self.damping
            self._lut += self.damping * new
        return self._lut

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        lut8 = (self.lut(counts) + 0.5).astype(np.uint8)
        return np.take(lut8, counts)


class CLAHEAGC:
    """Percentile pre-stretch to 8 bits, then OpenCV CLAHE.

    Calling it maps a (H, W) uint16 Y16 frame (counts) to a (H, W) uint8 grey frame.
    ``clip_limit`` and ``tiles`` (a tiles × tiles grid) go to ``cv2.createCLAHE``; the other
    arguments are :class:`PercentileAGC`'s. Clip limit 2..4 after a percentile pre-stretch as
    suggested in shared/reference/thermal_io.md §4.2.
    """

    name = "clahe"

    def __init__(self, clip_limit: float = 2.0, tiles: int = 8, low_pct: float = 0.5,
                 high_pct: float = 99.5, alpha: float = 0.2, min_span: float = 64.0):
        self._stretch = PercentileAGC(low_pct, high_pct, alpha=alpha, min_span=min_span)
        self._clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))

    def reset(self) -> None:
        """Forget the pre-stretch's smoothed range."""
        self._stretch.reset()

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        return self._clahe.apply(self._stretch(counts))


AGC_MODES: Dict[str, Callable[..., Callable[[np.ndarray], np.ndarray]]] = {
    "percentile": PercentileAGC,
    "plateau": PlateauAGC,
    "clahe": CLAHEAGC,
}


def make_agc(mode: str = "percentile", **options):
    """A new AGC of the named mode (``percentile``, ``plateau`` or ``clahe``).

    Args:
        mode: a key of :data:`AGC_MODES`.
        **options: keyword arguments of that mode's class.

    Returns:
        A callable mapping (H, W) uint16 counts to (H, W) uint8 grey, with a ``reset()`` method.

    Raises:
        ValueError: ``mode`` is unknown (the message lists the modes), or the mode's class
            refuses an option value.
        TypeError: an option the mode's class does not take.
    """
    if mode not in AGC_MODES:
        raise ValueError(f"unknown AGC mode {mode!r}; choose one of {', '.join(AGC_MODES)}")
    return AGC_MODES[mode](**options)


# Ironbow stops (position, (R, G, B)): a design choice for a familiar "iron" look.
_IRONBOW_STOPS = [
    (0.00, (0, 0, 0)),
    (0.15, (30, 0, 90)),
    (0.35, (120, 0, 150)),
    (0.50, (190, 30, 100)),
    (0.65, (230, 80, 20)),
    (0.80, (250, 150, 0)),
    (0.92, (255, 220, 60)),
    (1.00, (255, 255, 245)),
]


def _ironbow_lut() -> np.ndarray:
    pos = np.array([p for p, _ in _IRONBOW_STOPS])
    rgb = np.array([c for _, c in _IRONBOW_STOPS], np.float64)
    x = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(x, pos, rgb[:, i]) for i in (2, 1, 0)]  # BGR order for OpenCV
    return np.round(np.stack(channels, axis=1)).astype(np.uint8).reshape(256, 1, 3)


PALETTES = ("white-hot", "black-hot", "ironbow", "inferno")
_USER_LUTS = {"ironbow": _ironbow_lut()}


def colorize(grey: np.ndarray, palette: str = "white-hot") -> np.ndarray:
    """Colour an 8-bit grey frame with the named palette.

    Args:
        grey: (H, W) uint8 grey levels (the output of an AGC).
        palette: one of :data:`PALETTES`.

    Returns:
        (H, W, 3) uint8 BGR image.

    Raises:
        ValueError: ``palette`` is unknown (the message lists the palettes).
    """
    if palette == "white-hot":
        return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    if palette == "black-hot":
        return cv2.cvtColor(cv2.bitwise_not(grey), cv2.COLOR_GRAY2BGR)
    if palette == "inferno":
        return cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)
    if palette in _USER_LUTS:
        return cv2.applyColorMap(grey, _USER_LUTS[palette])
    raise ValueError(f"unknown palette {palette!r}; choose one of {', '.join(PALETTES)}")


class DisplayMapper:
    """One view's counts -> BGR mapping: an AGC (with its own temporal state) and a palette.

    Calling it maps a (H, W) uint16 Y16 frame (counts) to a (H, W, 3) uint8 BGR image.

    Raises:
        ValueError: ``palette`` or ``agc`` is unknown, or an AGC option value is refused.
    """

    def __init__(self, agc: str = "percentile", palette: str = "white-hot", **agc_options):
        if palette not in PALETTES:
            raise ValueError(f"unknown palette {palette!r}; choose one of {', '.join(PALETTES)}")
        self.agc = make_agc(agc, **agc_options)
        self.palette = palette

    def __call__(self, counts: np.ndarray) -> np.ndarray:
        return colorize(self.agc(counts), self.palette)
