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

from ..edge.errors import ModelError


class EngineError(RuntimeError, ModelError):
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

    Returns:
        The multiple in pixels (H and W of the input must be multiples of it); ``default`` when
        the key is absent.

    Raises:
        EngineError: the value is not a positive integer; the message names ``where``.
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
    """Reflect-pad H and W of a batch up to multiples of ``multiple`` (bottom and right only).

    Edge padding is used instead where the padding is not smaller than the frame (reflect
    needs pad < size).

    Args:
        batch: (N, C, H, W) array, any dtype (float32 in the pipeline).
        multiple: the spatial multiple in pixels, >= 1.

    Returns:
        (padded, (H, W)): padded is (N, C, H', W') with H', W' the next multiples (``batch``
        itself when nothing is needed), (H, W) the original size for cropping back.
    """
    h, w = batch.shape[-2:]
    ph = (-h) % multiple
    pw = (-w) % multiple
    if ph == 0 and pw == 0:
        return batch, (h, w)
    mode = "reflect" if (ph < h and pw < w) else "edge"
    padded = np.pad(batch, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
    return padded, (h, w)


class Engine(ABC):
    """One loaded model on one backend.

    Subclasses implement ``_run`` on a padded, contiguous float32 (N, 1, H', W') batch and set
    :attr:`multiple` and :attr:`backend`; :meth:`infer` handles shapes, padding and cropping.
    """

    #: spatial multiple the model needs (e.g. 4 for two pixel-unshuffles by 2)
    multiple: int = 1
    #: backend name, e.g. "onnxruntime", "torch", "tensorrt"
    backend: str = ""

    def __init__(self, name: str):
        self.name = name

    @property
    def input_shape(self) -> Tuple[Optional[int], ...]:
        """The model input's (N, C, H, W), ``None`` for dynamic axes; (None, 1, None, None) by default."""
        return (None, 1, None, None)

    @property
    def output_shape(self) -> Tuple[Optional[int], ...]:
        """The model output's shape, ``None`` for dynamic axes; the input's by default."""
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
        """Run the model on a batch of normalised frames.

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) frames, converted to float32; values are
                normalised counts, nominally in [0, 1] (:mod:`tir.edge.normalize`). Any H
                and W: the batch is reflect-padded to :attr:`multiple` and the output cropped back.

        Returns:
            (N, 1, H, W) float32, the restored frames in the same [0, 1] scale. A model whose
            output is not an image (the router's (N, D) embedding) returns it uncropped.

        Raises:
            EngineError: ``batch`` has another shape (more than one channel, 1-D or 5-D); or the
                backend cannot run it (e.g. a TensorRT plan whose profile excludes this size, or a
                failed execution); the message names the engine and what to do.
        """
        padded, hw = self._padded(batch)
        return self._cropped(self._run(padded), padded, hw)

    def close(self) -> None:
        """Free what the engine holds (device buffers, sessions); the base class holds nothing."""
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} on {self.backend}>"
