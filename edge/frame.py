"""The unit that flows through the pipeline: one thermal frame and its history."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np


def now() -> float:
    """The pipeline's one clock: monotonic seconds."""
    return time.monotonic()


@dataclass
class Frame:
    """A raw thermal frame as captured, plus what the stages add to it.

    ``raw`` holds the sensor's counts as a (H, W) uint16 array (14-bit cameras use the low
    14 bits); ``restored`` the restored counts (uint16, same shape) once the restore stage ran;
    ``display`` maps a view name to a (H, W, 3) uint8 BGR image. ``seq`` is the source's frame
    number, ``t_capture`` the capture time in seconds of :func:`now`. ``stamps`` records when
    the frame crossed each stage boundary (seconds of :func:`now`): ``capture`` is set by the
    source, each stage adds its own name when it finishes, so per-stage and end-to-end latency
    can be read off any frame.
    """

    raw: np.ndarray
    seq: int
    t_capture: float
    meta: Dict[str, Any] = field(default_factory=dict)
    stamps: Dict[str, float] = field(default_factory=dict)
    # Filled in by the pipeline stages.
    restored: Optional[np.ndarray] = None  # uint16 counts, same shape as raw
    display: Dict[str, np.ndarray] = field(default_factory=dict)  # view name -> BGR uint8

    def __post_init__(self) -> None:
        self.stamps.setdefault("capture", self.t_capture)

    @property
    def shape(self):
        """The raw frame's (H, W) in pixels."""
        return self.raw.shape

    def stamp(self, stage: str) -> None:
        """Record that the frame leaves ``stage`` now (seconds of :func:`now`, in :attr:`stamps`)."""
        self.stamps[stage] = now()

    def age(self) -> float:
        """Seconds since capture."""
        return now() - self.t_capture


class FrameError(ValueError):
    """A frame that cannot be used (wrong shape, dtype, corrupt); dropped and counted."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def check_frame(raw: np.ndarray, shape=None) -> np.ndarray:
    """Validate a raw Y16 frame.

    Args:
        raw: the frame; must be a 2-D uint16 numpy array (counts).
        shape: the expected (H, W), or None for any size.

    Returns:
        ``raw`` itself, unchanged.

    Raises:
        FrameError: ``raw`` is not a numpy array (kind ``type``), not uint16 (``dtype``), not
            2-D (``ndim``) or not ``shape`` (``shape``); the message names what is wrong.
    """
    if not isinstance(raw, np.ndarray):
        raise FrameError("type", f"frame is {type(raw).__name__}, expected numpy array")
    if raw.dtype != np.uint16:
        raise FrameError("dtype", f"frame dtype {raw.dtype}, expected uint16")
    if raw.ndim != 2:
        raise FrameError("ndim", f"frame has shape {raw.shape}, expected (H, W)")
    if shape is not None and tuple(raw.shape) != tuple(shape):
        raise FrameError("shape", f"frame shape {raw.shape}, expected {tuple(shape)}")
    return raw
