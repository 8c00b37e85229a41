"""``synthetic://`` -- a built-in virtual thermal camera.

A procedural street scene (cold sky band, skyline of buildings and trees, sidewalks, a
two-lane road) is rendered in kelvin, warm people and cars move across it and wrap, and
the temperatures go through a microbolometer sensor model into 14-bit counts:

    raw = C0 + vignette * R * (T - T0) + column/row/pixel FPN + drift(t) + noise, dead/hot pixels

The offset drift grows between flat-field corrections and resets at a simulated periodic
FFC; the frames during an FFC repeat the last frame before it (the video freezes, as on a
Boson, thermal_io.md section 5) and carry ``meta["ffc"] = True``.

URI options: ``size`` (160x120, 256x192, 320x256, 640x512; default 640x512), ``fps``
(9..60, default 30), ``seed`` (0), ``frames`` (count, then end of stream), ``realtime``
(1: paced by the wall clock like a live camera, frames the reader is too slow for are
skipped and counted as dropped; 0: as fast as possible), ``clean=1`` (noise-free ground
truth counts in ``meta["clean"]``), ``ffc`` (seconds between FFCs, 0 = never; default 30),
``radiometric`` (1, default: frames carry the renderer's count -> kelvin map
``meta["temperature_k"] = {"scale": 1/R, "offset": T0 - C0/R}``, exact for the clean counts and
within the vignette/FPN error for raw ones; 0: counts only, like a Boson), ``loop=N``
(render frames 0..N-1 once and replay them, read-only: ``tir bench`` uses it so the numbers
measure the pipeline, not the camera simulation), ``degrade`` (a degradation from
:mod:`tir.engines.degrade` applied to the counts: a task name such as ``noise`` or ``CBN``, a
JSON spec path, or ``cycle`` = clean, then each of the seven tasks in turn, ``degrade_period``
seconds each (default 10); parameters are fixed within a period, so the picture is stable
while the restorer's router has something to find; ``meta["degradation"]`` names it and
``meta["degrade_range"]`` = [lo, hi] is the counts <-> [0, 1] map the ops worked in).

Frame ``k`` depends only on (seed, size, fps, k): the same seed gives the same sequence.
"""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
# numpy imports its random package (Cython extensions) lazily on the first ``np.random`` access.
# Left to the first frame, that import ran inside tir run's start-up right after the model
# loaded, and a stop signal arriving during it was lost (the handler's KeyboardInterrupt is
# swallowed in the extension's module init): import it with this module, before anything starts.
import numpy.random  # noqa: F401,E402

from ..frame import Frame, now
from ..registry import option
from ..uri import URI, parse_size
from .base import Source, SourceError
from .file import EndOfStream

SIZES = ((160, 120), (256, 192), (320, 256), (640, 512))
FPS_RANGE = (9.0, 60.0)

# Sensor model constants (14-bit counts). R and the noise give an NETD of about 50 mK.
COUNT_AT_T0 = 8192.0  # counts at T0
T0 = 295.0  # kelvin
COUNTS_PER_KELVIN = 40.0
MAX_COUNT = 16383
NOISE_SIGMA = 2.0  # temporal noise, counts
COLUMN_FPN_SIGMA = 6.0
ROW_FPN_SIGMA = 2.5
PIXEL_FPN_SIGMA = 2.0
PIXEL_GAIN_SIGMA = 0.01
VIGNETTE_DEPTH = 0.12  # relative responsivity loss in the corners
DRIFT_PER_SECOND = 1.2  # counts per second of pattern-scale drift after an FFC
FFC_FREEZE_SECONDS = 0.25
# the inverse of raw = C0 + R * (T - T0): K = counts / R + (T0 - C0 / R)
TEMPERATURE_K = {"scale": 1.0 / COUNTS_PER_KELVIN, "offset": T0 - COUNT_AT_T0 / COUNTS_PER_KELVIN}


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency random field in about [-1, 1] (bilinear upsampling of a coarse grid)."""
    import cv2

    gh = max(2, cells)
    gw = max(2, int(round(cells * w / h)))
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return field / max(1e-6, float(np.abs(field).max()))


class _Sprite:
    """A warm object: temperature patch, mask, and how it moves (pixels per second)."""

    def __init__(self, kelvin: np.ndarray, mask: np.ndarray, x0: float, y_top: int, speed: float):
        self.counts = (COUNTS_PER_KELVIN * (kelvin - T0)).astype(np.float32)  # relative to C0
        self.mask = mask
        self.x0 = x0
        self.y_top = y_top
        self.speed = speed


def _person(rng: np.random.Generator, height: int) -> Tuple[np.ndarray, np.ndarray]:
    h = max(6, height)
    w = max(3, int(round(h * 0.4)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = (w - 1) / 2.0
    head_r = h * 0.09
    head = (xx - cx) ** 2 + (yy - head_r) ** 2 <= head_r ** 2
    torso = ((xx - cx) / (w * 0.45)) ** 2 + ((yy - h * 0.38) / (h * 0.2)) ** 2 <= 1.0
    legs = (yy >= h * 0.55) & (np.abs(np.abs(xx - cx) - w * 0.16) <= max(0.6, w * 0.1))
    mask = head | torso | legs
    clothing = rng.uniform(301.0, 305.0)
    kelvin = np.full((h, w), clothing, np.float32)
    kelvin[head] = rng.uniform(306.0, 308.5)
    kelvin[legs & ~torso] = clothing - 1.5
    return kelvin, mask


def _car(rng: np.random.Generator, length: int, facing_right: bool) -> Tuple[np.ndarray, np.ndarray]:
    w = max(8, length)
    h = max(4, int(round(w * 0.38)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    body = (yy >= h * 0.4) & (yy < h * 0.85)
    cabin = (yy >= h * 0.05) & (yy < h * 0.4) & (xx >= w * 0.25) & (xx < w * 0.75)
    r = h * 0.17
    wheel = np.zeros((h, w), bool)
    for cxw in (w * 0.2, w * 0.8):
        wheel |= (xx - cxw) ** 2 + (yy - (h - 1 - r)) ** 2 <= r ** 2
    mask = body | cabin | wheel
    kelvin = np.full((h, w), rng.uniform(289.0, 293.0), np.float32)  # paint: cooler than asphalt
    kelvin[cabin] = rng.uniform(280.0, 286.0)  # windows reflect the cold sky
    kelvin[cabin & (np.abs(xx - w * 0.5) < max(1.0, w * 0.02))] = kelvin[body][0]  # pillar
    kelvin[wheel] = rng.uniform(312.0, 318.0)
    engine = body & (xx >= w * 0.8)
    kelvin[engine] = rng.uniform(318.0, 328.0)
    exhaust = body & (xx < max(1.0, w * 0.05)) & (yy >= h * 0.7)
    kelvin[exhaust] = 335.0
    if not facing_right:
        kelvin, mask = kelvin[:, ::-1].copy(), mask[:, ::-1].copy()
    return kelvin, mask


class ThermalSceneRenderer:
    """Renders frame ``k`` of the virtual camera; everything static is precomputed."""

    def __init__(self, size=(640, 512), fps: float = 30.0, seed: int = 0, ffc_period_s: float = 30.0):
        self.width, self.height = int(size[0]), int(size[1])
        self.fps = float(fps)
        self.seed = int(seed)
        self.ffc_period = int(round(ffc_period_s * self.fps)) if ffc_period_s > 0 else 0
        self.ffc_length = max(1, int(round(FFC_FREEZE_SECONDS * self.fps)))
        rng = np.random.default_rng([self.seed, self.width, self.height])
        self._background = COUNTS_PER_KELVIN * (self._build_scene(rng) - T0)  # counts rel. to C0
        self._sprites = self._build_sprites(rng)
        self._build_sensor(rng)

    # ---- static scene -------------------------------------------------------------
    def _build_scene(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.height, self.width
        y = np.arange(h, dtype=np.float32)[:, None] / h
        x = np.arange(w, dtype=np.float32)[None, :] / w
        texture = _smooth_field(rng, h, w, 12)
        fine = _smooth_field(rng, h, w, 48)
        self.horizon = int(0.45 * h)
        self.far_walk = (int(0.45 * h), int(0.53 * h))
        self.road = (int(0.53 * h), int(0.86 * h))
        self.near_walk = (int(0.86 * h), h)
        # sky: colder towards the zenith, gentle horizontal gradient
        scene = (258.0 + 14.0 * (y / 0.45) + 2.0 * x + 1.0 * texture).astype(np.float32)
        scene = np.broadcast_to(scene, (h, w)).copy()
        # skyline: buildings with warm windows, trees between them
        col = 0
        while col < w:
            bw = int(rng.uniform(0.06, 0.16) * w)
            top = int(rng.uniform(0.12, 0.35) * h)
            if rng.random() < 0.7:
                t_wall = rng.uniform(283.0, 290.0)
                block = scene[top:self.horizon, col:col + bw]
                block[...] = t_wall + 1.5 * fine[top:self.horizon, col:col + bw] - 2.0 * (
                    (self.horizon - np.arange(top, self.horizon))[:, None] / h)
                step_y, step_x = max(3, int(0.035 * h)), max(3, int(0.03 * w))
                for wy in range(top + step_y // 2, self.horizon - step_y, step_y):
                    for wx in range(col + step_x // 3, col + bw - step_x // 2, step_x):
                        if rng.random() < 0.55:
                            scene[wy:wy + max(1, step_y // 2), wx:wx + max(1, step_x // 2)] = (
                                rng.uniform(292.0, 298.0))
            else:
                cy, cx = (top + self.horizon) / 2.0, col + bw / 2.0
                ry, rx = (self.horizon - top) / 1.6, bw / 1.7
                yy, xx = np.mgrid[top:self.horizon, col:min(w, col + bw)]
                crown = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
                region = scene[top:self.horizon, col:min(w, col + bw)]
                region[crown] = 281.0 + 2.0 * fine[top:self.horizon, col:min(w, col + bw)][crown]
            col += bw + int(rng.uniform(0.0, 0.04) * w)
        # ground bands
        a, b = self.far_walk
        scene[a:b] = 291.0 + 1.0 * texture[a:b]
        a, b = self.road
        depth = (np.arange(a, b, dtype=np.float32)[:, None] - a) / max(1, b - a)
        scene[a:b] = 297.0 + 2.5 * depth + 0.8 * texture[a:b] + 0.4 * fine[a:b]
        mid = (a + b) // 2
        dash_h = max(1, int(0.008 * h))
        period = max(8, int(0.08 * w))
        dashes = (np.arange(w) % period) < period // 2
        scene[mid - dash_h:mid + dash_h, dashes] = 290.0
        a, b = self.near_walk
        scene[a:b] = 293.0 + 1.2 * texture[a:b] + 0.5 * fine[a:b]
        scene[a:a + max(1, int(0.006 * h))] = 289.0  # kerb
        # lamp posts: thin cool verticals, warm lamp heads
        for lx in rng.uniform(0.1, 0.9, size=3):
            px = int(lx * w)
            top = int(0.2 * h)
            scene[top:self.road[0], px:px + max(1, w // 320)] = 286.0
            scene[top:top + max(2, h // 100), px - max(1, w // 160):px + max(2, w // 160)] = 315.0
        return scene

    def _build_sprites(self, rng: np.random.Generator) -> List[_Sprite]:
        h, w = self.height, self.width
        sprites: List[_Sprite] = []
        far_foot, near_foot = self.far_walk[1] - 1, self.near_walk[1] - 2
        for _ in range(3):  # people on the far sidewalk
            kelvin, mask = _person(rng, int(0.11 * h))
            sprites.append(_Sprite(kelvin, mask, rng.uniform(0, w), far_foot - kelvin.shape[0],
                                   rng.choice([-1, 1]) * rng.uniform(0.02, 0.04) * w))
        for _ in range(2):  # people on the near sidewalk
            kelvin, mask = _person(rng, int(0.2 * h))
            sprites.append(_Sprite(kelvin, mask, rng.uniform(0, w), near_foot - kelvin.shape[0],
                                   rng.choice([-1, 1]) * rng.uniform(0.03, 0.06) * w))
        road_a, road_b = self.road
        lanes = (road_a + int(0.45 * (road_b - road_a)), road_b - int(0.06 * (road_b - road_a)))
        for lane, (bottom, direction) in enumerate(zip(lanes, (-1, 1))):
            speed = direction * rng.uniform(0.12, 0.25) * w  # one speed per lane: no overtaking
            start = rng.uniform(0, w)
            for i in range(2):
                kelvin, mask = _car(rng, int((0.22 + 0.06 * lane) * w), direction > 0)
                sprites.append(_Sprite(kelvin, mask, start + i * 0.65 * w, bottom - kelvin.shape[0], speed))
        return sprites

    def _build_sensor(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        vignette = 1.0 - VIGNETTE_DEPTH * r2 / 2.0
        self._gain = (vignette * (1.0 + PIXEL_GAIN_SIGMA * rng.standard_normal((h, w)))).astype(np.float32)
        column = COLUMN_FPN_SIGMA * rng.standard_normal(w).astype(np.float32)
        row = ROW_FPN_SIGMA * rng.standard_normal(h).astype(np.float32)
        shading = 8.0 * _smooth_field(rng, h, w, 3)  # housing self-radiation
        self._offset = (COUNT_AT_T0 + column[None, :] + row[:, None] + shading
                        + PIXEL_FPN_SIGMA * rng.standard_normal((h, w))).astype(np.float32)
        drift_columns = rng.standard_normal(w).astype(np.float32)
        # drift: a global offset plus low-frequency shading plus column-amplifier drift
        self._drift = (0.6 + 0.5 * _smooth_field(rng, h, w, 2) + 0.3 * drift_columns[None, :]).astype(np.float32)
        self._noise_pad = 65536
        self._noise_pool = (NOISE_SIGMA / math.sqrt(2.0)) * rng.standard_normal(
            h * w + self._noise_pad, dtype=np.float32)
        n_bad = max(3, (h * w) // 20000)
        flat = rng.choice(h * w, size=2 * n_bad, replace=False)
        self.dead_pixels = np.unravel_index(flat[:n_bad], (h, w))
        self.hot_pixels = np.unravel_index(flat[n_bad:], (h, w))

    # ---- per frame ----------------------------------------------------------------
    def is_ffc(self, k: int) -> bool:
        """Frames ``[m*P, m*P + L)`` (m >= 1) are frozen while the shutter is closed."""
        return bool(self.ffc_period) and k >= self.ffc_period and (k % self.ffc_period) < self.ffc_length

    def _scene_counts(self, k: int) -> np.ndarray:
        t = k / self.fps
        scene = self._background.copy()
        h, w = self.height, self.width
        for s in self._sprites:
            sh, sw = s.counts.shape
            x = int(round((s.x0 + s.speed * t) % (w + sw))) - sw
            x0, x1 = max(0, x), min(w, x + sw)
            y0, y1 = max(0, s.y_top), min(h, s.y_top + sh)
            if x1 <= x0 or y1 <= y0:
                continue
            src = (slice(y0 - s.y_top, y1 - s.y_top), slice(x0 - x, x1 - x))
            np.copyto(scene[y0:y1, x0:x1], s.counts[src], where=s.mask[src])
        return scene

    def render(self, k: int, clean: bool = False) -> Tuple[np.ndarray, Optional[np.ndarray], bool]:
        """Render frame ``k`` of the virtual camera.

        Returns:
            (raw, clean, ffc): raw is (H, W) uint16 14-bit counts (the scene through the sensor
            model: gain, offset FPN, drift, noise, dead and hot pixels);
            clean is the noise-free (H, W) uint16 counts when ``clean`` is true, else None;
            ffc is True while the shutter is closed (the frame repeats the last one before it).
        """
        ffc = self.is_ffc(k)
        if ffc:  # frozen video: repeat the last frame before the shutter closed
            k = (k // self.ffc_period) * self.ffc_period - 1
        scene = self._scene_counts(k)
        truth = None
        if clean:
            truth = np.clip(scene + COUNT_AT_T0, 0, MAX_COUNT).round().astype(np.uint16)
        since_ffc = k % self.ffc_period if self.ffc_period else k
        rng = np.random.default_rng([self.seed, k])
        a, b = rng.integers(0, self._noise_pad, size=2)
        n = self.height * self.width
        noise = self._noise_pool[a:a + n] + self._noise_pool[b:b + n]
        raw = scene
        raw *= self._gain
        raw += self._offset
        raw += noise.reshape(self.height, self.width)
        raw += (DRIFT_PER_SECOND * since_ffc / self.fps) * self._drift
        np.clip(raw, 0, MAX_COUNT, out=raw)
        out = raw.astype(np.uint16)
        out[self.dead_pixels] = 0
        out[self.hot_pixels] = MAX_COUNT
        return out, truth, ffc


def render_frames(n: int, size=(640, 512), seed: int = 0, fps: float = 30.0, start: int = 0,
                  progress: bool = False) -> np.ndarray:
    """``n`` consecutive synthetic frames as uint16 (n, H, W) 14-bit counts."""
    renderer = ThermalSceneRenderer(size, fps, seed)
    out = np.empty((n, renderer.height, renderer.width), np.uint16)
    indices = range(start, start + n)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synthetic frames", unit="frame")
    for i, k in enumerate(indices):
        out[i] = renderer.render(k)[0]
    return out


def _check_size(size: Tuple[int, int]) -> Optional[str]:
    if size in SIZES:
        return None
    return "is not offered; choose one of " + ", ".join(f"{w}x{h}" for w, h in SIZES)


def _check_fps(fps: float) -> Optional[str]:
    return None if FPS_RANGE[0] <= fps <= FPS_RANGE[1] else f"must be in {FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}"


def _degradation(value) -> Optional[str]:
    """``degrade=``: a built-in spec name, a JSON spec path, ``cycle``; ``none``/empty = off.
    An unknown one is refused here, before anything starts."""
    text = str(value).strip()
    if text in ("", "none"):
        return None
    if text != "cycle":
        from tir.engines.degrade import DegradationError, load_spec

        try:
            load_spec(text)
        except DegradationError as exc:
            raise ValueError(str(exc)) from None
    return text


def _non_negative(value: float) -> Optional[str]:
    return None if value >= 0 else "must be >= 0"


def _positive(value: int) -> Optional[str]:
    return None if value >= 1 else "must be >= 1"


@dataclass(frozen=True)
class SyntheticOptions:
    """URI options of ``synthetic://`` (see the module docstring)."""

    size: Tuple[int, int] = option((640, 512), "frame size WIDTHxHEIGHT: "
                                   + ", ".join(f"{w}x{h}" for w, h in SIZES), parse=parse_size,
                                   kind="WIDTHxHEIGHT", check=_check_size)
    fps: float = option(30.0, f"frames per second, {FPS_RANGE[0]:g}..{FPS_RANGE[1]:g}", check=_check_fps)
    seed: int = option(0, "scene seed >= 0: the same seed gives the same frames", check=_non_negative)
    frames: Optional[int] = option(None, "end of stream after this many frames (default: endless)",
                                   check=_positive)
    realtime: bool = option(True, "1: paced by the wall clock like a live camera; 0: as fast as read")
    clean: bool = option(False, "1: noise-free ground-truth counts in meta['clean']")
    radiometric: bool = option(True, "1: frames carry the count -> kelvin map; 0: counts only")
    ffc: float = option(30.0, "seconds between FFCs (0: never)", check=_non_negative)
    loop: int = option(0, "render frames 0..N-1 once and replay them (0: off)", check=_non_negative)
    degrade: Optional[str] = option(None, "degradation applied to the counts: a task name (noise, CBN, ...), "
                                          "a JSON spec path, or cycle", parse=_degradation,
                                    kind="a degradation name, a JSON spec path or cycle")
    degrade_period: float = option(10.0, "degrade=cycle: seconds per degradation (0: the first only)",
                                   check=_non_negative)


class SyntheticSource(Source):
    """The virtual camera as a :class:`Source` (options: :class:`SyntheticOptions`)."""

    Options = SyntheticOptions
    takes_path = False

    def __init__(self, uri: URI):
        super().__init__(uri)
        o = self.options
        self._size = size = o.size
        self._fps = fps = o.fps
        self.frames_total = o.frames
        self.live = o.realtime
        self.clean = o.clean
        self.temperature_k = dict(TEMPERATURE_K) if o.radiometric else None
        self.renderer = ThermalSceneRenderer(size, fps, o.seed, o.ffc)
        # loop=N: render frames 0..N-1 once and replay them (read-only arrays), so a benchmark
        # measures the pipeline rather than the camera simulation
        self.loop = o.loop
        self._cache: Dict[int, Tuple[np.ndarray, Optional[np.ndarray], bool]] = {}
        self.degradation = o.degrade
        self.degrade_period = o.degrade_period
        self._seed = o.seed
        self._draw_keys: Dict[str, str] = {}   # :meth:`_draw_key`'s, by the name given
        self._degrade_range: Optional[Tuple[float, float]] = None
        self._next = 0  # next frame index to deliver
        self._t0: Optional[float] = None
        self._counts = {"frames": 0, "dropped": 0, "corrupt": 0, "reconnects": 0}

    @property
    def size(self):
        """(width, height) of the frames in pixels."""
        return self._size

    @property
    def fps(self) -> float:
        """The virtual camera's frame rate in frames per second."""
        return self._fps

    def start(self) -> "SyntheticSource":
        """Start the pacing clock (frame 0 is due now); returns the source."""
        if self._t0 is None:
            self._t0 = now()
        return self

    def _due_index(self, timeout: float) -> Optional[int]:
        """Live pacing: the index of the newest frame the camera has produced by now."""
        self.start()
        due = int((now() - self._t0) * self._fps)
        if due < self._next:
            wait = self._t0 + self._next / self._fps - now()
            if wait > timeout:
                time.sleep(max(0.0, timeout))
                return None
            time.sleep(max(0.0, wait))
            due = self._next
        return due

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The next frame: with ``realtime=1`` the newest one due by the wall clock (skipped ones
        count as dropped), else the next index.

        Returns:
            A :class:`~tir.edge.frame.Frame` with (H, W) uint16 14-bit counts, or None when no frame
            is due within ``timeout`` seconds. ``meta`` holds ``index``, ``ffc``, ``temperature_k``,
            with ``clean=1`` the noise-free counts (``clean``), with ``degrade`` the degradation name.

        Raises:
            EndOfStream: ``frames=N`` frames were delivered.
        """
        if self.frames_total is not None and self._next >= self.frames_total:
            raise EndOfStream(f"{self.uri.text}: end after {self.frames_total} frames")
        k = self._due_index(timeout) if self.live else self._next
        if k is None:
            return None
        if self.frames_total is not None:
            k = min(k, self.frames_total - 1)
        self._counts["dropped"] += k - self._next
        self._next = k + 1
        t = now()
        raw, truth, ffc = self._render(k)
        meta = self._meta(k, ffc)
        if self.degradation:
            raw, meta["degradation"] = self._degrade(raw, k)
            if self._degrade_range is not None:
                meta["degrade_range"] = list(self._degrade_range)
        if truth is not None:
            meta["clean"] = truth
        self._counts["frames"] += 1
        return Frame(raw=raw, seq=k, t_capture=t, meta=meta)

    def _meta(self, k: int, ffc: bool) -> dict:
        return {"source": self.uri.text, "camera": "synthetic", "bits": 14, "index": k, "ffc": ffc,
                "temperature_k": self.temperature_k}

    def reference_frames(self, count: int) -> List[Frame]:
        """The virtual camera's healthy look when it degrades its own frames (``degrade`` set):
        ``count`` frames of the same scene renderer without the degradation, one every half
        second of its clock (shutter-closed frames skipped), for pinning the gates' camera
        references (``tir run``; engines/loading.py ``pin_reference``). Rendering them does not
        change the stream. Empty without ``degrade`` (the stream is then its own reference); fewer
        than ``count`` when the shutter never opens again (an FFC freeze as long as its period).

        Returns:
            Frames with (H, W) uint16 14-bit counts and the meta of :meth:`read` (no ``degradation``).
        """
        if not self.degradation or count <= 0:
            return []
        step = max(1, int(round(self._fps / 2)))
        period, length = self.renderer.ffc_period, self.renderer.ffc_length
        out: List[Frame] = []
        k = 0
        while len(out) < count:
            if self.renderer.is_ffc(k):
                # the shutter is closed: take the first frame after it opens. Stepping on by half
                # seconds instead never ended where every step lands in a freeze (ffc=0.5: 15 frames,
                # the step 15; ffc=0.3: steps at 0, 6, 3 of 9 frames, 8 frozen): tir run and tir bench
                # hung at start-up pinning the reference
                if length >= period:
                    break   # the shutter never opens again: fewer frames than asked
                k = (k // period) * period + length
            out.append(Frame(raw=self.renderer.render(k)[0], seq=k, t_capture=now(), meta=self._meta(k, False)))
            k += step
        return out

    def _render(self, k: int):
        if self.loop <= 0:
            return self.renderer.render(k, clean=self.clean)
        key = k % self.loop
        if key not in self._cache:
            raw, truth, ffc = self.renderer.render(key, clean=self.clean)
            for array in (raw, truth):
                if array is not None:
                    array.setflags(write=False)
            self._cache[key] = (raw, truth, ffc)
        return self._cache[key]

    def _degrade(self, raw: np.ndarray, k: int) -> Tuple[np.ndarray, str]:
        """Apply the ``degrade`` option to one frame of counts (see the module docstring)."""
        from tir.engines.degrade import TASKS, counts_range, degrade  # numpy + OpenCV only

        segment = int(k / (self._fps * self.degrade_period)) if self.degrade_period > 0 else 0
        name = self.degradation
        if name == "cycle":
            name = ("clean",) + TASKS
            name = name[segment % len(name)]
            if name == "clean":
                return raw, name
        if self._degrade_range is None:
            # a fixed counts <-> [0, 1] map from the first frame (robust, with headroom)
            lo, hi = counts_range(raw)
            self._degrade_range = (lo, min(hi, float(MAX_COUNT)))
        lo, hi = self._degrade_range
        x = (raw.astype(np.float32) - lo) / (hi - lo)
        rng = np.random.default_rng([self._seed, segment, zlib.crc32(self._draw_key(name).encode())])
        y = degrade(x, name, rng)
        counts = np.clip(y * (hi - lo) + lo + 0.5, 0, MAX_COUNT).astype(np.uint16)
        return counts, name

    def _draw_key(self, name: str) -> str:
        """What seeds a degradation's draws: the spec's identity, as
        :func:`tir.engines.degrade.load_spec` resolves ``name``: a built-in's own spelling (built-in
        names are case-insensitive there, so ``Noise`` and ``noise`` draw alike), or ``spec:`` and
        a spec file's own ``name``, whatever the file's path or extension, so the same spec gives
        the same frames wherever the file lies. Resolved once per name (the file is read then).

        Raises:
            DegradationError: ``name`` is neither a built-in nor a readable spec file.
        """
        key = self._draw_keys.get(name)
        if key is None:
            from tir.engines.degrade import list_specs, load_spec

            builtin = {n.lower(): n for n in list_specs()}
            key = builtin.get(name.lower()) or "spec:" + load_spec(name).name
            self._draw_keys[name] = key
        return key

    def stats(self) -> Dict[str, int]:
        """frames, dropped (not delivered when reading fell behind), corrupt (0), reconnects (0)."""
        return dict(self._counts)
