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

    ``raw`` holds the sensor's counts as a 2-D uint16 array (14-bit cameras use the low
    14 bits). ``stamps`` records when the frame crossed each stage boundary (seconds of
    :func:`now`): ``capture`` is set by the source, each stage adds its own name when it
    finishes, so per-stage and end-to-end latency can be read off any frame.
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
        return self.raw.shape

    def stamp(self, stage: str) -> None:
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
    """Validate a raw frame; raise :class:`FrameError` naming what is wrong."""
    if not isinstance(raw, np.ndarray):
        raise FrameError("type", f"frame is {type(raw).__name__}, expected numpy array")
    if raw.dtype != np.uint16:
        raise FrameError("dtype", f"frame dtype {raw.dtype}, expected uint16")
    if raw.ndim != 2:
        raise FrameError("ndim", f"frame has shape {raw.shape}, expected (H, W)")
    if shape is not None and tuple(raw.shape) != tuple(shape):
        raise FrameError("shape", f"frame shape {raw.shape}, expected {tuple(shape)}")
    return raw
