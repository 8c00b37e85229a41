"""TensorRT's native INT8 calibration cache (text), read/write, and conversion from ORT tables.

Format (tensorrt_int8.md §1.2): line 1 ``TRT-<version>-<Algorithm>``, e.g.
``TRT-8502-EntropyCalibration2``, then one ``<tensor name>: <8 hex digits>`` line per tensor,
the hex being the big-endian IEEE-754 float32 bit pattern of the **scale** = amax / 127
(``3c008912`` → 0.0078452, amax ≈ 0.996). ORT's TensorRT EP reads it the same way
(``strtoul(..., 16)`` reinterpreted as float, dynamic range = scale × 127) and rejects files
not starting with ``TRT-``.

The version number is ``major*1000 + minor*100 + patch`` up to TRT 8 and
``major*10000 + minor*100 + patch`` from TRT 10 — inferred from published caches
(``TRT-8502-...`` for 8.5.2, ``TRT-100300-...`` for 10.3.0), not documented.

ORT's ``write_calibration_table`` writes ``calibration.cache`` as ``<name> <decimal>`` lines
holding ``max(highest, lowest)`` — not |max| (tensorrt_int8.md §2) — so it is only a valid
amax when calibrated with symmetric ranges; :func:`from_ort_tensors` converts the
in-memory ``TensorsData`` with the true max(|lo|, |hi|) instead.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from typing import Dict, Mapping, Union

from ..edge.errors import ModelError

INT8_MAX = 127.0
KNOWN_ALGORITHMS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
PathLike = Union[str, os.PathLike]


class CalibrationCacheError(ValueError, ModelError):
    """A cache file that is not a TensorRT calibration cache; the message says where."""


def trt_version_tag(version: str) -> int:
    """``"8.5.2"`` → 8502, ``"10.3.0"`` → 100300 (the header number TensorRT writes)."""
    parts = [int("".join(ch for ch in p if ch.isdigit()) or 0) for p in str(version).split(".")[:3]]
    major, minor, patch = (parts + [0, 0, 0])[:3]
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    """The 8 hex digits of ``scale``'s big-endian IEEE-754 float32 bit pattern (tensorrt_int8.md §1.2)."""
    return struct.pack(">f", float(scale)).hex()


def hex_to_scale(text: str) -> float:
    """The float32 scale from up to 8 hex digits (big-endian IEEE-754 bit pattern; tensorrt_int8.md §1.2).

    Raises:
        ValueError: ``text`` is not hexadecimal.
    """
    return struct.unpack(">f", bytes.fromhex(text.strip().rjust(8, "0")))[0]


@dataclass
class TrtCalibrationCache:
    """Per-tensor scales plus the header; ``amax`` = scale × 127."""

    version_tag: int
    algorithm: str = "EntropyCalibration2"
    scales: Dict[str, float] = field(default_factory=dict)

    @property
    def header(self) -> str:
        """The first line, ``TRT-<version tag>-<algorithm>``."""
        return f"TRT-{self.version_tag}-{self.algorithm}"

    @property
    def amax(self) -> Dict[str, float]:
        """{tensor: amax} in the tensor's units, amax = scale × 127."""
        return {k: v * INT8_MAX for k, v in self.scales.items()}

    @classmethod
    def from_amax(cls, amax: Mapping[str, float], version: Union[str, int] = "8.5.2",
                  algorithm: str = "EntropyCalibration2") -> "TrtCalibrationCache":
        """A cache from {tensor: amax}; scale = max(amax, 1e-8) / 127 (a constant-zero tensor keeps a
        tiny positive scale). ``version`` is a TensorRT version string ("8.5.2") or a header tag.

        Raises:
            CalibrationCacheError: an amax is not finite or is negative.
        """
        tag = version if isinstance(version, int) else trt_version_tag(version)
        scales = {}
        for name, value in amax.items():
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise CalibrationCacheError(f"tensor {name!r}: amax must be finite and ≥ 0, got {value}")
            # a tensor that is constant 0 would give scale 0: keep a tiny positive scale
            scales[name] = max(value, 1e-8) / INT8_MAX
        return cls(version_tag=tag, algorithm=algorithm, scales=scales)

    def to_bytes(self) -> bytes:
        """The cache file's ASCII bytes: the header, then ``<tensor>: <8 hex digits>`` lines."""
        lines = [self.header] + [f"{name}: {scale_to_hex(s)}" for name, s in self.scales.items()]
        return ("\n".join(lines) + "\n").encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> "TrtCalibrationCache":
        """Parse a cache file's bytes (``source`` names it in errors).

        Raises:
            CalibrationCacheError: not ASCII, empty, a header not ``TRT-<digits>-<Algorithm>``, a
                line not ``<tensor>: <1 to 8 hex digits>``, or a scale that is not finite and >= 0
                (a NaN, infinite or negative bit pattern).
        """
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise CalibrationCacheError(f"{source}: not a text calibration cache ({exc})") from None
        lines = [ln.rstrip("\r") for ln in text.split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines or not lines[0].startswith("TRT-"):
            raise CalibrationCacheError(
                f"{source}: first line must be 'TRT-<version>-<Algorithm>', got {lines[0][:60]!r}"
                if lines else f"{source}: empty file")
        parts = lines[0].split("-", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            raise CalibrationCacheError(f"{source}: bad header {lines[0]!r}")
        cache = cls(version_tag=int(parts[1]), algorithm=parts[2])
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            name, sep, value = line.rpartition(":")
            value = value.strip()
            if not sep or not value or len(value) > 8 or not all(c in "0123456789abcdefABCDEF" for c in value):
                raise CalibrationCacheError(f"{source}:{number}: expected '<tensor>: <8 hex digits>', got {line!r}")
            scale = hex_to_scale(value)
            if not math.isfinite(scale) or scale < 0 or math.copysign(1.0, scale) < 0:
                # the bit pattern of a NaN, an infinity or a negative number: no dynamic range
                # (from_amax refuses the same amax values when writing)
                raise CalibrationCacheError(f"{source}:{number}: tensor {name.strip()!r} has scale {scale} "
                                            f"({value}); a scale must be finite and >= 0")
            cache.scales[name.strip()] = scale
        return cache

    def write(self, path: PathLike) -> str:
        """Write the cache to ``path`` (creating folders); returns the path."""
        path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "wb") as f:
            f.write(self.to_bytes())
        return path

    @classmethod
    def read(cls, path: PathLike) -> "TrtCalibrationCache":
        """Read a cache file.

        Raises:
            CalibrationCacheError: no file at ``path`` (run ``tir calibrate`` first), or it does not parse.
        """
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise CalibrationCacheError(f"no calibration cache at {path}; run `tir calibrate` first")
        with open(path, "rb") as f:
            return cls.from_bytes(f.read(), source=path)


def read_ort_calibration_cache(path: PathLike) -> Dict[str, float]:
    """ORT's ``calibration.cache`` (``<name> <decimal>`` lines) -> {name: |value|}.

    Raises:
        OSError: the file cannot be opened.
        CalibrationCacheError: not UTF-8 text, a line without a name or a finite number, or no entries.
    """
    out: Dict[str, float] = {}
    with open(os.fspath(path), encoding="utf-8") as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError as exc:
            raise CalibrationCacheError(f"{path}: not a text calibration table ({exc})") from None
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line:
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name] = abs(float(value))
            except ValueError:
                raise CalibrationCacheError(f"{path}:{number}: expected '<name> <number>', got {line!r}") from None
            if not math.isfinite(out[name]):
                raise CalibrationCacheError(f"{path}:{number}: tensor {name!r} has range {value}; a range must be "
                                            "a finite number")
            if not name:
                raise CalibrationCacheError(f"{path}:{number}: missing tensor name in {line!r}")
    if not out:
        raise CalibrationCacheError(f"{path}: no entries")
    return out


def from_ort_tensors(tensors) -> Dict[str, float]:
    """ORT ``TensorsData`` (from ``calibrator.compute_data()``) → {name: amax = max(|lo|, |hi|)}."""
    items = tensors.data.items() if hasattr(tensors, "data") else dict(tensors).items()
    out = {}
    for name, td in items:
        lo, hi = (td.range_value if hasattr(td, "range_value") else (td.lowest, td.highest))
        out[name] = float(max(abs(float(lo)), abs(float(hi))))
    return out


def convert_ort_cache(ort_cache: PathLike, out_path: PathLike, version: str = "8.5.2",
                      algorithm: str = "EntropyCalibration2") -> TrtCalibrationCache:
    """Convert ORT's ``calibration.cache`` (symmetric ranges) into a native TensorRT cache."""
    cache = TrtCalibrationCache.from_amax(read_ort_calibration_cache(ort_cache), version, algorithm)
    cache.write(out_path)
    return cache
