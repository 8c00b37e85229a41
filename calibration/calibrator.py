"""TensorRT implicit INT8 calibrator (TRT 8.5, DLA): ``IInt8EntropyCalibrator2`` over our frames.

Contract (tensorrt_int8.md §1.1, TensorRT ``pyInt8Doc.h`` and the efficientnet/detectron2
samples): call the base ``__init__`` explicitly; ``get_batch_size()`` returns the N of the batches;
``get_batch(names)`` copies the next batch into preallocated device memory and returns one device
pointer (int) per input in ``names`` order, or ``None`` when the data is exhausted;
``read_calibration_cache()`` returns the cache bytes (calibration is then skipped) or ``None``;
``write_calibration_cache(cache)`` stores it. The cache file format is handled by
:mod:`tir.calibration.trt_cache`; ``tir calibrate`` writes one from our own entropy ranges, so
on the device TensorRT can skip its calibration pass entirely.

``IInt8EntropyCalibrator2`` is the one DLA requires. Calibrators are deprecated since TRT 10.1
and removed in 11: the Q/DQ ONNX path is the default (:mod:`tir.engines.trt_build`).
TensorRT is imported lazily; the class is created on first use.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)
_CLASSES: dict = {}


def _calibrator_class(algorithm: str):
    from tir.engines.cuda_pipeline import cuda_driver, primary_context, pushed
    from tir.engines.trt_build import require_tensorrt

    from .trt_cache import CalibrationCacheError, TrtCalibrationCache, trt_version_tag

    if algorithm in _CLASSES:
        return _CLASSES[algorithm]
    trt = require_tensorrt()
    bases = {"entropy2": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}
    if algorithm not in bases or not hasattr(trt, bases[algorithm]):
        raise ValueError(f"calibrator {algorithm!r} is not available in TensorRT {trt.__version__}")
    base = getattr(trt, bases[algorithm])

    class _Calibrator(base):
        def __init__(self, frames, cache_path: str, batch_size: int = 1):
            base.__init__(self)  # required: the binding's constructor must run
            cuda = cuda_driver()
            self.frames, self.cache_path, self.batch_size = frames, os.fspath(cache_path), int(batch_size)
            w, h = frames.size
            self.shape = (self.batch_size, 1, h, w)
            self.ctx = primary_context()
            with pushed(self.ctx):
                self.host = cuda.pagelocked_empty(self.shape, np.float32)
                self.device = cuda.mem_alloc(self.host.nbytes)
            self._batches = frames.batches(self.batch_size, progress=True, desc="TensorRT calibration")
            self.used = 0

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names):
            cuda = cuda_driver()
            batch = next(self._batches, None)
            if batch is None or batch.shape != self.shape:  # exhausted, or a short last batch
                return None
            np.copyto(self.host, batch)
            with pushed(self.ctx):
                cuda.memcpy_htod(self.device, self.host)
            self.used += batch.shape[0]
            return [int(self.device)] * len(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            if not os.path.isfile(self.cache_path):
                return None
            data = open(self.cache_path, "rb").read()
            try:
                cache = TrtCalibrationCache.from_bytes(data, self.cache_path)
            except CalibrationCacheError as exc:
                log.warning("ignoring calibration cache: %s", exc)
                return None
            here = trt_version_tag(trt.__version__)
            if cache.version_tag != here:
                log.warning("calibration cache %s has header %s, this TensorRT writes %d: TensorRT may "
                            "recalibrate", self.cache_path, cache.header, here)
            return data

        def write_calibration_cache(self, cache) -> None:
            os.makedirs(os.path.dirname(os.path.abspath(self.cache_path)), exist_ok=True)
            with open(self.cache_path, "wb") as f:
                f.write(bytes(cache))
            log.info("wrote TensorRT calibration cache %s (%d frames)", self.cache_path, self.used)

    _Calibrator.__name__ = "EntropyCalibrator" if algorithm == "entropy2" else "MinMaxCalibrator"
    _CLASSES[algorithm] = _Calibrator
    return _Calibrator


def EntropyCalibrator(frames, cache_path, batch_size: int = 1, algorithm: str = "entropy2"):
    """A ``trt.IInt8EntropyCalibrator2`` (or ``IInt8MinMaxCalibrator``) over a CalibrationSet.

    Args:
        frames: a :class:`~tir.calibration.data.CalibrationSet`; batches are (N, 1, H, W) float32
            in [0, 1], copied to one page-locked host buffer and one device buffer.
        cache_path: the TensorRT calibration cache file read before and written after calibrating.
        batch_size: N; a short last batch is not used.
        algorithm: ``entropy2`` (the one DLA requires) or ``minmax``.

    The class is built lazily so importing this module never needs TensorRT.

    Raises:
        ValueError: ``algorithm`` is unknown or not in this TensorRT.
        BuildError: TensorRT is not importable (from ``require_tensorrt``).
        EngineError: pycuda is not importable (from ``cuda_driver``).
    """
    return _calibrator_class(algorithm)(frames, cache_path, batch_size)
