"""Raw frame layouts of the supported UVC thermal cameras, chosen by USB VID:PID.

Facts from /work/shared/reference/thermal_io.md section 3.2 (per-camera table):

- FLIR Boson 320/640, 09CB:4007: Y16 320x256 or 640x512, little-endian uint16 pre-AGC
  counts. Non-radiometric: no absolute temperature.
- FLIR Lepton 3.x on PureThermal 1/2/3, 1E4E:0100: Y16 160x120; with telemetry enabled the
  frame is 160x122 and the last 2 rows are the telemetry footer (flirpy strips ``image[:-2]``).
  Radiometric TLinear at 0.01 K: K = raw / 100.
- TOPDON TC001 / InfiRay P2 Pro, 0BDA:5830: YUYV 256x384 read with CONVERT_RGB=0 as uint8
  (384, 256, 2). Top 192 rows are the vendor AGC image (YUYV), bottom 192 rows the raw
  temperature, 2 bytes/pixel little-endian: raw = ``bottom.view('<u2')``; K = raw / 64.

``RawFormat.decode(buffer)`` turns what ``cv2.VideoCapture.read()`` returned into uint16
(H, W) counts; it also accepts the flattened 1-D / 1xN buffers some OpenCV versions
return for 16-bit modes (thermal_io.md 3.1 step 5, opencv #27166).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..frame import FrameError

Size = Tuple[int, int]  # (width, height)


def as_uint16_image(buffer: np.ndarray, size: Size) -> np.ndarray:
    """A (H, W) uint16 view of ``buffer`` holding W*H little-endian 16-bit pixels.

    Accepts uint16 (H, W) as is, uint16 with W*H elements in any shape, and uint8 with
    2*W*H bytes in any shape (e.g. (H, W, 2) or a 1xN row), which is viewed as '<u2'.
    """
    w, h = size
    if not isinstance(buffer, np.ndarray):
        raise FrameError("type", f"frame is {type(buffer).__name__}, expected numpy array")
    if buffer.dtype == np.uint16 and buffer.size == w * h:
        return buffer.reshape(h, w)
    if buffer.dtype == np.uint8 and buffer.size == 2 * w * h:
        return np.ascontiguousarray(buffer).reshape(-1).view("<u2").reshape(h, w)
    raise FrameError("shape", f"frame {buffer.dtype} {buffer.shape} is not a {w}x{h} 16-bit image "
                              f"(expected uint16 with {w * h} values or uint8 with {2 * w * h} bytes)")


def _decode_y16(buffer: np.ndarray, size: Size) -> Tuple[np.ndarray, Dict[str, Any]]:
    w, h = size
    if buffer.dtype == np.uint16 and buffer.ndim == 2 and min(buffer.shape) > 1 and buffer.size != w * h:
        return buffer, {}  # a proper 2-D image of another size: the caller checks the shape
    return as_uint16_image(buffer, size), {}


LEPTON_TELEMETRY_ROWS = 2


def _decode_lepton(buffer: np.ndarray, size: Size) -> Tuple[np.ndarray, Dict[str, Any]]:
    w, h = size
    rows = None
    for candidate in (h, h + LEPTON_TELEMETRY_ROWS):  # with or without the telemetry footer
        if buffer.size in (w * candidate, 2 * w * candidate):
            rows = candidate
    if rows is None:
        raise FrameError("shape", f"Lepton frame {buffer.dtype} {buffer.shape} is neither {w}x{h} "
                                  f"nor {w}x{h + LEPTON_TELEMETRY_ROWS} (with telemetry)")
    image = as_uint16_image(buffer, (w, rows))
    if rows == h:
        return image, {}
    return image[:h], {"telemetry": image[h:].copy()}


def _decode_tc001(buffer: np.ndarray, size: Size) -> Tuple[np.ndarray, Dict[str, Any]]:
    w, h = size  # frame size: 256x192; the capture is 256x(2*192)
    if buffer.size == 2 * w * 2 * h and buffer.dtype == np.uint8:
        yuyv = np.ascontiguousarray(buffer).reshape(2 * h, w, 2)
        return yuyv[h:].view("<u2")[..., 0], {}
    if buffer.size == w * 2 * h and buffer.dtype == np.uint16:  # already viewed as 16-bit words
        return buffer.reshape(2 * h, w)[h:], {}
    raise FrameError("shape", f"TC001 frame {buffer.dtype} {buffer.shape}, expected uint8 "
                              f"({2 * h}, {w}, 2) YUYV with the raw temperature in the lower half")


@dataclass(frozen=True)
class RawFormat:
    """How to request a camera's raw stream and turn its buffers into counts."""

    name: str
    fourcc: str  # V4L2 FOURCC to request, e.g. "Y16 " (trailing space) or "YUYV"
    capture_size: Optional[Size]  # (w, h) to request; None = keep the device's size
    frame_size: Optional[Size]  # (w, h) of the decoded thermal frame; None = as captured
    kelvin_per_count: Optional[float]  # None: not radiometric
    description: str = ""
    _unpack: Callable[[np.ndarray, Size], Tuple[np.ndarray, Dict[str, Any]]] = field(
        default=_decode_y16, repr=False, compare=False)

    def frame_size_for(self, capture_size: Size) -> Size:
        """Thermal frame size given the size the device actually captures."""
        if self.frame_size is not None:
            return self.frame_size
        return capture_size

    def unpack(self, buffer: np.ndarray, capture_size: Optional[Size] = None
               ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """(uint16 (H, W) counts, extra meta such as ``telemetry``) from a capture buffer."""
        size = capture_size or self.capture_size
        if size is None:
            if isinstance(buffer, np.ndarray) and buffer.ndim == 2 and buffer.dtype == np.uint16:
                size = (buffer.shape[1], buffer.shape[0])
            else:
                raise FrameError("shape", f"{self.name}: frame {getattr(buffer, 'shape', None)} "
                                          "is not 2-D and no capture size is known to reshape it")
        if not isinstance(buffer, np.ndarray):
            raise FrameError("type", f"frame is {type(buffer).__name__}, expected numpy array")
        return self._unpack(buffer, self.frame_size_for(size))

    def decode(self, buffer: np.ndarray, capture_size: Optional[Size] = None) -> np.ndarray:
        """uint16 (H, W) counts from a capture buffer."""
        return self.unpack(buffer, capture_size)[0]

    @property
    def radiometric(self) -> bool:
        return self.kelvin_per_count is not None

    def to_kelvin(self, counts: np.ndarray) -> Optional[np.ndarray]:
        """Temperature in kelvin (float32), or None for a non-radiometric camera."""
        if self.kelvin_per_count is None:
            return None
        return counts.astype(np.float32) * np.float32(self.kelvin_per_count)


FORMATS: Dict[str, RawFormat] = {
    f.name: f
    for f in (
        RawFormat("y16", "Y16 ", None, None, None,
                  "generic Y16: uint16 counts at the device's size, no temperature"),
        RawFormat("boson", "Y16 ", (640, 512), None, None,
                  "FLIR Boson 320/640 Y16 pre-AGC counts (non-radiometric)"),
        RawFormat("lepton", "Y16 ", (160, 120), (160, 120), 0.01,
                  "FLIR Lepton 3.x / PureThermal Y16, TLinear 0.01 K, optional 2 telemetry rows",
                  _decode_lepton),
        RawFormat("tc001", "YUYV", (256, 384), (256, 192), 1.0 / 64.0,
                  "TOPDON TC001 / InfiRay P2 Pro: YUYV 256x384, raw 1/64 K in the lower half",
                  _decode_tc001),
    )
}


@dataclass(frozen=True)
class CameraModel:
    vid: int
    pid: int
    name: str
    format: str


# USB IDs: thermal_io.md section 3.2.
CAMERAS = (
    CameraModel(0x09CB, 0x4007, "FLIR Boson", "boson"),
    CameraModel(0x1E4E, 0x0100, "FLIR Lepton on PureThermal", "lepton"),
    CameraModel(0x0BDA, 0x5830, "TOPDON TC001 / InfiRay P2 Pro", "tc001"),
)


def _as_id(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def camera_for(vid, pid) -> Optional[CameraModel]:
    """The known thermal camera with this USB VID:PID (ints or hex strings), or None."""
    vid, pid = _as_id(vid), _as_id(pid)
    for camera in CAMERAS:
        if (camera.vid, camera.pid) == (vid, pid):
            return camera
    return None


def format_for(vid, pid) -> Optional[RawFormat]:
    """Raw format of the camera with this USB VID:PID, or None if it is not a known one."""
    camera = camera_for(vid, pid)
    return FORMATS[camera.format] if camera else None


def get_format(name: str) -> RawFormat:
    """Format by name (``y16``, ``boson``, ``lepton``, ``tc001``); the error lists them."""
    key = str(name).strip().lower()
    if key not in FORMATS:
        raise ValueError(f"unknown raw format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[key]
