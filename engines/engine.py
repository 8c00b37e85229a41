"""The inference interface every backend implements.

An engine takes a batch of *normalised* frames, float32 N×1×H×W (values roughly in
[0, 1], see :mod:`tir.edge.normalize`) and returns the restored batch in the same
layout. Frames of any size are padded (reflect) to the model's spatial multiple and
cropped back, so callers never think about it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional, Tuple

import numpy as np


class EngineError(RuntimeError):
    """An engine that cannot be loaded or run; the message says why and what to do."""


#: The one ONNX metadata key that states a model's spatial multiple (H and W of its input must
#: be multiples of it). Every exporter writes it, every backend reads it, and a bundle's
#: manifest ``multiple`` must agree with it (engines/restorer.py checks at load).
MULTIPLE_KEY = "tir.multiple"
#: The multiple assumed for a foreign ONNX model that does not state one (the reference
#: design's pixel-unshuffle ×4, which also satisfies ×2 models).
DEFAULT_MULTIPLE = 4


def read_multiple(metadata, default: int = DEFAULT_MULTIPLE, where: str = "model") -> int:
    """The spatial multiple stated in ``metadata`` (a str -> str map) under :data:`MULTIPLE_KEY`.

    Returns ``default`` when the key is absent. Raises :class:`EngineError` when the value is
    not a positive integer, naming ``where``.
    """
    value = metadata.get(MULTIPLE_KEY) if metadata else None
    if value is None:
        return int(default)
    try:
        multiple = int(value)
    except (TypeError, ValueError):
        multiple = 0
    if multiple < 1:
        raise EngineError(f"{where}: metadata {MULTIPLE_KEY}={value!r} is not a positive integer")
    return multiple


def pad_to_multiple(batch: np.ndarray, multiple: int) -> Tuple[np.ndarray, Tuple[int, int]]:
    """Reflect-pad H and W of an N×C×H×W batch up to ``multiple``; returns (padded, (H, W))."""
    h, w = batch.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return batch, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "edge"
    padded = np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
    return padded, (h, w)


class Engine(ABC):
    """One loaded model on one backend."""

    #: spatial multiple the model needs (e.g. 4 for two pixel-unshuffles by 2)
    multiple: int = 1
    #: backend name, e.g. "onnxruntime", "torch", "tensorrt"
    backend: str = ""

    def __init__(self, name: str):
        self.name = name

    @property
    def input_shape(self) -> Tuple[Optional[int], ...]:
        """N, C, H, W with ``None`` for dynamic axes."""
        return (None, 1, None, None)

    @property
    def output_shape(self) -> Tuple[Optional[int], ...]:
        return self.input_shape

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run on an already padded, contiguous float32 batch."""

    def _padded(self, batch) -> Tuple[np.ndarray, Tuple[int, int]]:
        """H×W, N×H×W or N×1×H×W -> (contiguous float32 N×1×H'×W' padded to :attr:`multiple`,
        the original (H, W)). Raises EngineError for any other shape."""
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 2:
            batch = batch[None, None]
        elif batch.ndim == 3:
            batch = batch[:, None]
        if batch.ndim != 4 or batch.shape[1] != 1:
            raise EngineError(f"{self.name}: expected N×1×H×W input, got {batch.shape}")
        padded, hw = pad_to_multiple(batch, self.multiple)
        return np.ascontiguousarray(padded), hw

    @staticmethod
    def _cropped(out: np.ndarray, padded: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
        if out.ndim == 4 and out.shape[-2:] == padded.shape[-2:]:
            return out[..., :hw[0], :hw[1]]  # an image: crop the padding back off
        return out  # not an image (e.g. the router's embedding): nothing to crop

    def infer(self, batch: np.ndarray) -> np.ndarray:
        padded, hw = self._padded(batch)
        return self._cropped(self._run(padded), padded, hw)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.backend}>"
