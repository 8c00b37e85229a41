"""Raw frame layouts of the supported UVC thermal cameras: families by USB VID:PID, geometry
from what the device delivers.

A camera *family* (:class:`RawFormat`: ``y16``, ``boson``, ``lepton``, ``tc001``) says which
FOURCC to request and holds a table of known *layouts* (:class:`Layout`); the layout of a
frame is chosen from what the device reports -- the buffer's own 2-D shape, else the
width x height OpenCV reports (``CAP_PROP_FRAME_WIDTH/HEIGHT``) when the buffer's 16-bit word
count matches it, else the one known layout with that word count -- never from one fixed
size per USB id. A size the table does not know falls back to the family's generic rule
(whole frame as counts; stacked halves for the InfiRay family). The layout brings the
telemetry rows to drop and the radiometric scale (K per count).

Facts, from /work/shared/reference/thermal_io.md section 3.2 unless marked:

- FLIR Boson 320/640, 09CB:4007: Y16 320x256 or 640x512, little-endian uint16 pre-AGC
  counts. Non-radiometric: no absolute temperature.
- FLIR Lepton on PureThermal 1/2/3, 1E4E:0100: Y16, radiometric TLinear at 0.01 K (K = raw /
  100, deg C = raw / 100 - 273.15). Lepton 3.x: 160x120, with telemetry 160x122 (2 rows;
  flirpy strips ``image[:-2]``). Lepton 2.x: 80x60, with telemetry 80x63 (3 rows: telemetry
  lines A, B, C of 80 words each; FLIR Lepton engineering datasheet, telemetry section). The
  Lepton puts its telemetry lines either before the image (header) or after it (footer),
  as configured over its CCI; the PureThermal firmware and flirpy use the footer, so
  ``bottom`` is the default and ``telemetry=top`` (:meth:`RawFormat.with_telemetry`) reads
  a header.
- TOPDON TC001 / InfiRay P2 Pro, 0BDA:5830: YUYV 256x384 read with CONVERT_RGB=0 as uint8
  (384, 256, 2). Top 192 rows are the vendor AGC image (YUYV), bottom 192 rows the raw
  temperature, 2 bytes/pixel little-endian: raw = ``bottom.view('<u2')``; K = raw / 64. The
  256x192 image-only mode carries no raw data and is refused. Other sizes of the family are
  read as stacked halves when the image half has the module's 4:3 aspect (our inference).

``RawFormat.decode(buffer)`` turns what ``cv2.VideoCapture.read()`` returned into uint16
(H, W) counts; it also accepts the flattened 1-D / 1xN buffers some OpenCV versions
return for 16-bit modes (thermal_io.md 3.1 step 5, opencv #27166).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np

from ..frame import FrameError
from ..registry import Registry

Size = Tuple[int, int]  # (width, height)
TELEMETRY_POSITIONS = ("bottom", "top")


def as_uint16_image(buffer: np.ndarray, size: Size) -> np.ndarray:
    """A (H, W) uint16 view of ``buffer`` holding W*H little-endian 16-bit pixels.

    Accepts uint16 (H, W) as is, uint16 with W*H elements in any shape, and uint8 with
    2*W*H bytes in any shape (e.g. (H, W, 2) or a 1xN row), which is viewed as '<u2'.
    Raises FrameError("shape") for anything else.
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


def _words(buffer: np.ndarray) -> Optional[int]:
    """Number of 16-bit words in a uint16 buffer or an even-sized uint8 buffer, else None."""
    if buffer.dtype == np.uint16:
        return int(buffer.size)
    if buffer.dtype == np.uint8 and buffer.size % 2 == 0:
        return int(buffer.size) // 2
    return None


def _shape_size(buffer: np.ndarray) -> Optional[Size]:
    """(w, h) in 16-bit pixels when the buffer is a proper 2-D image: uint16 (H, W) or
    uint8 (H, W, 2); None for flattened (1-D / 1xN) buffers."""
    if buffer.dtype == np.uint16 and buffer.ndim == 2 and min(buffer.shape) > 1:
        return (buffer.shape[1], buffer.shape[0])
    if buffer.dtype == np.uint8 and buffer.ndim == 3 and buffer.shape[2] == 2 and min(buffer.shape[:2]) > 1:
        return (buffer.shape[1], buffer.shape[0])
    return None


# ------------------------------------------------------------------------- Lepton telemetry
# Telemetry row A, the first 80 words of the telemetry block (FLIR Lepton engineering
# datasheet, "Telemetry data content", row A; 32-bit values are sent least significant word
# first). Words as delivered in the Y16 buffer, i.e. already in host order like the pixels.
LEPTON_TELEMETRY_ROW_A_WORDS = 80


def parse_lepton_telemetry(block: np.ndarray) -> Dict[str, Any]:
    """The cheap fields of Lepton telemetry row A from the telemetry rows (uint16, any shape
    with >= 80 words): revision (word 0), time_counter_ms (1-2), frame_counter (20-21),
    frame_mean (22, counts), fpa_temp_k (24, K x 100 -> K), fpa_temp_last_ffc_k (29),
    time_counter_last_ffc_ms (30-31)."""
    w = np.asarray(block, np.uint16).reshape(-1)
    if w.size < LEPTON_TELEMETRY_ROW_A_WORDS:
        return {}
    w = w.astype(np.uint32)

    def dword(i):  # least significant word first
        return int(w[i] | (w[i + 1] << 16))

    return {"revision": int(w[0]), "time_counter_ms": dword(1), "frame_counter": dword(20),
            "frame_mean": int(w[22]), "fpa_temp_k": int(w[24]) / 100.0,
            "fpa_temp_last_ffc_k": int(w[29]) / 100.0, "time_counter_last_ffc_ms": dword(30)}


# ------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layout:
    """One frame layout: capture size in 16-bit pixels (w, h) as the device delivers it.

    ``telemetry_rows``: rows of telemetry to drop (position chosen by the family);
    ``stacked``: top half vendor image, bottom half raw counts (InfiRay modules);
    ``refuse``: a known mode without raw counts (the error text says why);
    ``kelvin_per_count``: radiometric scale, None = counts only.
    """

    name: str
    capture: Size
    telemetry_rows: int = 0
    kelvin_per_count: Optional[float] = None
    stacked: bool = False
    refuse: str = ""

    @property
    def frame(self) -> Size:
        """(w, h) of the thermal frame after dropping telemetry / the vendor image half."""
        w, h = self.capture
        if self.stacked:
            return (w, h // 2)
        return (w, h - self.telemetry_rows)


@dataclass(frozen=True)
class RawFormat:
    """A camera family: how to request its raw stream and turn its buffers into counts.

    ``capture_size`` is only the size to *request* (None: keep the device's); the layout of
    every frame is resolved from the buffer and the size the device reports
    (:meth:`layout_for`). ``kelvin_per_count`` is the family's scale; a layout may differ.
    """

    name: str
    fourcc: str  # V4L2 FOURCC to request, e.g. "Y16 " (trailing space) or "YUYV"
    capture_size: Optional[Size]  # (w, h) to request; None = keep the device's size
    kelvin_per_count: Optional[float]  # None: not radiometric
    description: str = ""
    layouts: Tuple[Layout, ...] = ()
    generic: str = "y16"  # rule for sizes not in ``layouts``: "y16" whole frame, "stacked" halves
    telemetry: str = "bottom"  # where telemetry rows sit: "bottom" (footer) or "top" (header)

    @property
    def frame_size(self) -> Optional[Size]:
        """Frame size of the layout for ``capture_size`` (None when the device decides)."""
        return self.layout_for(self.capture_size).frame if self.capture_size else None

    def with_telemetry(self, position: str) -> "RawFormat":
        """This family with its telemetry rows at ``position`` ("top" or "bottom").

        Raises:
            ValueError: ``position`` is neither.
        """
        position = str(position).strip().lower()
        if position not in TELEMETRY_POSITIONS:
            raise ValueError(f"telemetry={position!r}; use telemetry=top (header) or telemetry=bottom (footer)")
        return dataclasses.replace(self, telemetry=position)

    def layout_for(self, capture: Size) -> Layout:
        """The known layout with this capture size, else the family's generic one."""
        capture = (int(capture[0]), int(capture[1]))
        for layout in self.layouts:
            if layout.capture == capture:
                return layout
        w, h = capture
        if self.generic == "stacked":
            if h % 2 == 0 and 4 * (h // 2) == 3 * w:  # 4:3 image half over a 4:3 raw half
                return Layout(f"{self.name} {w}x{h // 2} stacked", capture, 0, self.kelvin_per_count, True)
            return Layout(f"{self.name} {w}x{h}", capture, refuse=(
                f"{self.name}: a {w}x{h} capture is not the stacked image + raw temperature layout "
                f"(two 4:3 halves, e.g. {self._known()}); request that size with size=WxH"))
        return Layout(f"{self.name} {w}x{h}", capture, 0, self.kelvin_per_count)

    def _known(self) -> str:
        return ", ".join(f"{l.capture[0]}x{l.capture[1]}" for l in self.layouts) or "any"

    def geometry(self, buffer: np.ndarray, reported: Optional[Size]) -> Size:
        """Capture (w, h) in 16-bit pixels of ``buffer``.

        The buffer's own 2-D shape, else ``reported`` when its word count matches, else the single
        known layout with that word count (flattened frames, thermal_io.md §3.1).

        Raises:
            FrameError: kind "type" when ``buffer`` is not a numpy array, "shape" when no size fits.
        """
        if not isinstance(buffer, np.ndarray):
            raise FrameError("type", f"frame is {type(buffer).__name__}, expected numpy array")
        own = _shape_size(buffer)
        if own is not None:
            return own
        words = _words(buffer)
        if words is not None and reported and reported[0] * reported[1] == words:
            return (int(reported[0]), int(reported[1]))
        if words is not None:
            matches = {l.capture for l in self.layouts if l.capture[0] * l.capture[1] == words}
            if len(matches) == 1:
                return matches.pop()
        said = f"{reported[0]}x{reported[1]}" if reported else "no size"
        raise FrameError("shape", f"{self.name}: frame {buffer.dtype} {buffer.shape} is not a 16-bit image "
                                  f"of the size the device reports ({said}) nor of a known layout "
                                  f"({self._known()}); pass size=WxH")

    def unpack(self, buffer: np.ndarray, capture_size: Optional[Size] = None
               ) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Counts and extra meta from one capture buffer.

        Args:
            buffer: the frame OpenCV returned with CONVERT_RGB off: uint16 (H, W), uint8 (H, W, 2)
                YUYV, or a flattened 1-D/1×N array (OpenCV 4.11, thermal_io.md §3.1).
            capture_size: the (width, height) in pixels the device reports (OpenCV
                FRAME_WIDTH/HEIGHT), or None for :attr:`capture_size`.

        Returns:
            (counts, extra): counts are (H, W) uint16; extra holds ``layout`` (name),
            ``kelvin_per_count`` (the layout's scale, K per count, or None) and, for frames with
            telemetry rows, ``telemetry`` (the raw rows, uint16) and ``telemetry_fields`` (parsed
            row A, Lepton).

        Raises:
            FrameError: kind "shape", when no layout fits (the message lists the sizes known) or
                the layout is refused.
        """
        layout = self.layout_for(self.geometry(buffer, capture_size or self.capture_size))
        if layout.refuse:
            raise FrameError("shape", layout.refuse)
        if layout.stacked:
            image = _stacked_raw_half(buffer, layout, self.name)
        else:
            image = as_uint16_image(buffer, layout.capture)
        extra: Dict[str, Any] = {"layout": layout.name, "kelvin_per_count": layout.kelvin_per_count}
        rows = layout.telemetry_rows
        if rows:
            top = self.telemetry == "top"
            telemetry = image[:rows] if top else image[-rows:]
            image = image[rows:] if top else image[:-rows]
            extra["telemetry"] = telemetry.copy()
            extra["telemetry_fields"] = parse_lepton_telemetry(telemetry)
        return image, extra

    def decode(self, buffer: np.ndarray, capture_size: Optional[Size] = None) -> np.ndarray:
        """(H, W) uint16 counts from a capture buffer (:meth:`unpack` without the meta).

        Raises:
            FrameError: as :meth:`unpack`.
        """
        return self.unpack(buffer, capture_size)[0]

    @property
    def radiometric(self) -> bool:
        """Whether counts convert to kelvin (the format has a ``kelvin_per_count``)."""
        return self.kelvin_per_count is not None

    def to_kelvin(self, counts: np.ndarray) -> Optional[np.ndarray]:
        """Temperature in kelvin.

        Args:
            counts: (H, W) uint16 counts of this format.

        Returns:
            (H, W) float32 kelvin (counts × ``kelvin_per_count``), or None for a non-radiometric
            camera.
        """
        if self.kelvin_per_count is None:
            return None
        return counts.astype(np.float32) * np.float32(self.kelvin_per_count)


def _stacked_raw_half(buffer: np.ndarray, layout: Layout, name: str) -> np.ndarray:
    """The lower (raw temperature) half of a stacked capture as uint16 (H/2, W)."""
    w, h = layout.capture
    if buffer.dtype == np.uint8 and buffer.size == 2 * w * h:
        yuyv = np.ascontiguousarray(buffer).reshape(h, w, 2)
        return yuyv[h // 2:].view("<u2")[..., 0]
    if buffer.dtype == np.uint16 and buffer.size == w * h:  # already viewed as 16-bit words
        return buffer.reshape(h, w)[h // 2:]
    raise FrameError("shape", f"{name} frame {buffer.dtype} {buffer.shape}, expected uint8 "
                              f"({h}, {w}, 2) YUYV with the raw temperature in the lower half")


LEPTON_K_PER_COUNT = 0.01  # TLinear at 0.01 K resolution (thermal_io.md 3.2)
TC001_K_PER_COUNT = 1.0 / 64.0  # thermal_io.md 3.2

# ------------------------------------------------------------------------- camera descriptors
#: One descriptor per camera family, in one place: its raw format (the entry's target), its USB
#: ids (VID, PID) and its serial control protocol (a name in :data:`PROTOCOLS`, None: none).
#: USB IDs: thermal_io.md section 3.2 (Boson also section 1.1). Adding a camera family is one
#: ``CAMERAS.register(...)`` call (docs/architecture.md).
CAMERAS = Registry("camera format", ValueError, casefold=True, meta={"title": "", "usb_ids": (), "protocol": None})
CAMERAS.register("y16", RawFormat("y16", "Y16 ", None, None,
                                  "generic Y16: uint16 counts at the device's size, no temperature"),
                 help="generic Y16: uint16 counts at the device's size, no temperature",
                 title="generic Y16 camera", usb_ids=(), protocol=None)
CAMERAS.register("boson", RawFormat("boson", "Y16 ", (640, 512), None,
                                    "FLIR Boson 320/640 Y16 pre-AGC counts (non-radiometric)",
                                    (Layout("boson 320", (320, 256)), Layout("boson 640", (640, 512)))),
                 help="FLIR Boson 320/640: Y16 pre-AGC counts (non-radiometric), control over its CDC-ACM port",
                 title="FLIR Boson", usb_ids=((0x09CB, 0x4007),), protocol="boson")
CAMERAS.register("lepton", RawFormat("lepton", "Y16 ", None, LEPTON_K_PER_COUNT,
                                     "FLIR Lepton 2.x (80x60) / 3.x (160x120) on PureThermal, Y16 TLinear 0.01 K, "
                                     "telemetry rows dropped",
                                     (Layout("lepton 2.x", (80, 60), 0, LEPTON_K_PER_COUNT),
                                      Layout("lepton 2.x + telemetry", (80, 63), 3, LEPTON_K_PER_COUNT),
                                      Layout("lepton 3.x", (160, 120), 0, LEPTON_K_PER_COUNT),
                                      Layout("lepton 3.x + telemetry", (160, 122), 2, LEPTON_K_PER_COUNT))),
                 help="FLIR Lepton 2.x/3.x on PureThermal: Y16 TLinear 0.01 K, telemetry rows dropped",
                 title="FLIR Lepton on PureThermal", usb_ids=((0x1E4E, 0x0100),), protocol=None)
CAMERAS.register("tc001", RawFormat("tc001", "YUYV", (256, 384), TC001_K_PER_COUNT,
                                    "TOPDON TC001 / InfiRay P2 Pro: YUYV 256x384, raw 1/64 K in the lower half",
                                    (Layout("tc001 stacked", (256, 384), 0, TC001_K_PER_COUNT, True),
                                     Layout("tc001 image-only", (256, 192), refuse=(
                                         "tc001: the 256x192 mode is the vendor's 8-bit YUYV image only, without "
                                         "the raw temperature half; request 256x384 (size=256x384)"))),
                                    generic="stacked"),
                 help="TOPDON TC001 / InfiRay P2 Pro: YUYV 256x384, raw 1/64 K in the lower half",
                 title="TOPDON TC001 / InfiRay P2 Pro", usb_ids=((0x0BDA, 0x5830),), protocol=None)

#: Serial control protocols: name -> client class (imported on first use). A Tau2 sits behind a
#: generic USB-serial adapter: no camera descriptor carries its USB id, so it needs a port.
PROTOCOLS = Registry("camera protocol", ValueError, casefold=True)
PROTOCOLS.register("boson", "tir.edge.camera.boson:BosonClient",
                   help="FLIR Boson FSLP/CRC command protocol over USB CDC-ACM, 921600 8N1 (thermal_io.md 1)")
PROTOCOLS.register("tau", "tir.edge.camera.tau:TauClient",
                   help="FLIR Tau2 binary serial protocol behind a USB-serial adapter, 921600 baud (thermal_io.md 2)")


class _Formats(Mapping):
    """Read-only name -> :class:`RawFormat` view of :data:`CAMERAS` (kept for importers)."""

    def __getitem__(self, name: str) -> RawFormat:
        if name not in CAMERAS:
            raise KeyError(name)
        return CAMERAS.load(name)

    def __iter__(self):
        return iter(CAMERAS.names())

    def __len__(self) -> int:
        return len(CAMERAS)


FORMATS: Mapping[str, RawFormat] = _Formats()


@dataclass(frozen=True)
class CameraModel:
    """A known camera by USB id (derived from its :data:`CAMERAS` descriptor)."""

    vid: int
    pid: int
    name: str
    format: str
    protocol: Optional[str] = None


def _as_id(value) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def usb_ids(protocol: Optional[str] = None) -> Tuple[Tuple[int, int], ...]:
    """(VID, PID) of every camera descriptor (with control ``protocol``, if given)."""
    return tuple(i for e in CAMERAS if protocol is None or e.protocol == protocol for i in e.usb_ids)


def camera_for(vid, pid) -> Optional[CameraModel]:
    """The known thermal camera with this USB VID:PID (ints or hex strings), or None."""
    vid, pid = _as_id(vid), _as_id(pid)
    entry = CAMERAS.find(lambda e: (vid, pid) in e.usb_ids)
    return CameraModel(vid, pid, entry.title, entry.name, entry.protocol) if entry else None


def format_for(vid, pid) -> Optional[RawFormat]:
    """Raw format of the camera with this USB VID:PID, or None if it is not a known one."""
    camera = camera_for(vid, pid)
    return FORMATS[camera.format] if camera else None


def get_format(name: str) -> RawFormat:
    """Raw format by name (``y16``, ``boson``, ``lepton``, ``tc001``).

    Raises:
        ValueError: unknown name; the message lists the known formats.
    """
    key = str(name).strip().lower()
    if key not in CAMERAS:
        raise ValueError(f"unknown raw format {name!r}; known: {', '.join(CAMERAS.names())}")
    return CAMERAS.load(key)
