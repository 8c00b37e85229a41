"""Views of a frame as 8-bit BGR images, and their JPEG encoding, shared by the outputs.

A view is ``raw``, ``restored`` or ``side`` (raw | restored, labelled). The pipeline
fills ``frame.display`` with AGC-mapped BGR images; where a view is missing there (no
model, or a caller that skipped the AGC stage) it is made here with a plain min/max
stretch so every output can still show something honest.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import cv2
import numpy as np

from ..frame import Frame

VIEWS = ("raw", "restored", "side")
DEFAULT_QUALITY = 80
#: the JPEG qualities a server encodes; a requested quality snaps to the nearest, so the
#: encodes per frame stay bounded by len(VIEWS) * len(QUALITIES) however many clients ask
QUALITIES = (50, 70, 80, 90)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LABEL_BG = (24, 24, 24)
_LABEL_FG = (235, 235, 235)


def stretch_to_bgr(counts: np.ndarray) -> np.ndarray:
    """uint16 counts -> BGR uint8 by a linear min/max stretch (fallback display only)."""
    lo, hi = int(counts.min()), int(counts.max())
    if hi <= lo:
        gray = np.zeros(counts.shape, np.uint8)
    else:
        scaled = (counts.astype(np.float32) - lo) * (255.0 / (hi - lo))
        gray = np.clip(scaled + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        if image.dtype != np.uint8:
            return stretch_to_bgr(image)
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image


def view_image(frame: Frame, view: str) -> np.ndarray:
    """The image shown for ``view`` of ``frame``.

    ``raw``/``restored`` use the frame's AGC views when the display stage made them, else a
    percentile stretch of the counts; ``restored`` without a model shows raw, labelled so;
    ``side`` is :func:`side_by_side`.

    Returns:
        (H, W, 3) uint8 BGR ((H, 2W, 3) for ``side``).

    Raises:
        ValueError: ``view`` is not one of :data:`VIEWS`.
    """
    if view == "side":
        return side_by_side(frame)
    if view not in ("raw", "restored"):
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
    shown = frame.display.get(view) if frame.display else None
    if shown is not None:
        return _as_bgr(shown)
    if view == "restored" and frame.restored is not None:
        return stretch_to_bgr(frame.restored)
    if view == "restored":
        # No model: the restored view shows the raw image, labelled so nobody is fooled.
        image = view_image(frame, "raw").copy()
        _label(image, "NO MODEL - RAW SHOWN", corner="bottom")
        return image
    return stretch_to_bgr(frame.raw)


def _label(image: np.ndarray, text: str, corner: str = "top") -> None:
    h, w = image.shape[:2]
    scale = max(0.35, min(1.0, w / 640.0))
    thick = 1 if scale < 0.7 else 2
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
    pad = max(3, int(4 * scale))
    y0 = 0 if corner == "top" else h - th - base - 2 * pad
    cv2.rectangle(image, (0, y0), (tw + 2 * pad, y0 + th + base + 2 * pad), _LABEL_BG, -1)
    cv2.putText(image, text, (pad, y0 + pad + th), _FONT, scale, _LABEL_FG, thick, cv2.LINE_AA)


def side_by_side(frame: Frame) -> np.ndarray:
    """raw | restored, each labelled, as one (H, 2W, 3) uint8 BGR image."""
    left = view_image(frame, "raw").copy()
    right = view_image(frame, "restored")
    if right.shape != left.shape:
        right = cv2.resize(right, (left.shape[1], left.shape[0]), interpolation=cv2.INTER_NEAREST)
    right = right.copy()
    _label(left, "RAW")
    _label(right, "RESTORED")
    return np.hstack([left, right])


def view_size(view: str, frame_size: Tuple[int, int]) -> Tuple[int, int]:
    """(width, height) of ``view`` for frames of ``frame_size`` (width, height)."""
    w, h = frame_size
    return (2 * w, h) if view == "side" else (w, h)


def no_signal_image(width: int, height: int, detail: Optional[str] = None) -> np.ndarray:
    """A dark (height, width, 3) uint8 BGR test card reading NO SIGNAL (and ``detail``), shown while no frame
    arrives.
    """
    image = np.full((height, width, 3), 32, np.uint8)
    # Diagonal stripes so a frozen browser tab is distinguishable from a dark scene.
    step = max(8, width // 20)
    for x in range(-height, width, step):
        cv2.line(image, (x, height), (x + height, 0), (44, 44, 44), max(1, step // 4))
    text = "NO SIGNAL"
    scale = max(0.5, width / 320.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
    org = ((width - tw) // 2, (height + th) // 2)
    cv2.putText(image, text, org, _FONT, scale, (60, 60, 230), thick, cv2.LINE_AA)
    if detail:
        small = scale * 0.4
        (dw, dh), _ = cv2.getTextSize(detail, _FONT, small, 1)
        cv2.putText(image, detail, ((width - dw) // 2, org[1] + 2 * dh + 6), _FONT, small,
                    (200, 200, 200), 1, cv2.LINE_AA)
    return image


def encode_jpeg(image: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG bytes of an image.

    Args:
        image: (H, W) uint8 grey or (H, W, 3) uint8 BGR.
        quality: JPEG quality 1..100.

    Raises:
        ValueError: OpenCV cannot encode it.
    """
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return buf.tobytes()


def clamp_quality(value, default: int = DEFAULT_QUALITY) -> int:
    """Parse a JPEG quality (1..100); junk gives ``default``."""
    try:
        return max(1, min(100, int(value)))
    except (TypeError, ValueError):
        return default


def snap_quality(value, default: int = DEFAULT_QUALITY) -> int:
    """The member of :data:`QUALITIES` nearest to ``value`` (ties go to the higher one);
    junk (None, text, NaN, inf) gives the one nearest to ``default``."""
    try:
        q = float(value)
    except (TypeError, ValueError):
        q = float("nan")
    if not math.isfinite(q):
        q = float(default)
    return min(QUALITIES, key=lambda c: (abs(c - q), -c))
