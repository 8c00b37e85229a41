"""``v4l2:///dev/videoN`` -- raw 16-bit frames from a UVC thermal camera through OpenCV.

Recipe (thermal_io.md 3.1): ``cv2.VideoCapture(path, cv2.CAP_V4L2)``, then in this order
width/height, FOURCC (``"Y16 "`` with the trailing space, or the format's own), CONVERT_RGB
= 0 (a number: some builds reject ``False``), BUFFERSIZE = 1; every ``set`` return value is
checked and a refusal logged. The first frames are verified at open: dtype/shape must give
a 16-bit frame (flattened 1-D/1xN buffers from some OpenCV versions are reshaped), else a
:class:`SourceError` says what arrived. Later bad frames are dropped and counted.

The camera family comes from the USB VID:PID (edge/camera/formats.py) or ``format=`` (y16,
boson, lepton, tc001); each frame's layout (size, telemetry rows, radiometric scale) from the
size the device reports and the buffer it delivers (``meta["layout"]``). Other options:
``size=WxH``, ``fps=N``, ``bits=16``, ``telemetry=bottom|top`` (Lepton telemetry footer or
header). A radiometric layout puts its count -> kelvin map on every frame as
``meta["temperature_k"] = {"scale": s, "offset": o}`` (K = counts * s + o: Lepton TLinear
s = 0.01, TC001 s = 1/64); None otherwise (Boson). Lepton telemetry rows are dropped from the
image and kept as ``meta["telemetry"]`` (raw rows) and ``meta["telemetry_fields"]`` (row A).

:class:`V4L2Camera` is one open device read directly; :class:`V4L2Source` is the public
source: after ``start()`` a :class:`~tir.edge.sources.grabber.Grabber` thread keeps only the
newest frame and reopens the device when it goes away. Both take a ``capture_factory``
(default ``cv2.VideoCapture``) so the decode path can be driven by frames in tests.
"""
from __future__ import annotations

import logging
import os
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..camera.formats import CAMERAS, TELEMETRY_POSITIONS, RawFormat, format_for, get_format
from ..frame import Frame, FrameError, check_frame, now
from ..registry import option
from ..uri import URI, parse_size
from .base import Source, SourceError, SourceOptionError
from .devices import describe_video_devices, video_device_info
from .grabber import Grabber

log = logging.getLogger(__name__)

VERIFY_FRAMES = 3  # bad frames tolerated at open before giving up (mode switch glitches)
MAX_FAILED_READS = 3  # consecutive failed reads that mean the device is gone

CaptureFactory = Callable[[Any, int], Any]  # (path, api) -> object like cv2.VideoCapture


def _format_name(value) -> str:
    return get_format(value).name  # ValueError listing the camera formats


def _telemetry(value) -> str:
    position = str(value).strip().lower()
    if position not in TELEMETRY_POSITIONS:
        raise ValueError(f"telemetry={value!r}; use telemetry=top (header) or telemetry=bottom (footer)")
    return position


#: largest capture side asked for with ``size=`` (V4L2 sizes are 16-bit fields in practice; no
#: thermal camera comes near it: Boson 640x512, Lepton 160x120, TC001 256x384)
MAX_CAPTURE_SIDE = 8192


def _check_capture_size(size: Tuple[int, int]) -> Optional[str]:
    if all(1 <= side <= MAX_CAPTURE_SIDE for side in size):
        return None
    return f"must be WIDTHxHEIGHT with each side 1..{MAX_CAPTURE_SIDE}"


@dataclass(frozen=True)
class V4L2Options:
    """URI options of ``v4l2://`` (see the module docstring)."""

    format: Optional[str] = option(None, "camera format (default: from the USB id, else y16): "
                                         + ", ".join(e.name for e in CAMERAS),
                                   parse=_format_name, kind="a camera format")
    telemetry: Optional[str] = option(None, "where the Lepton's telemetry rows sit: bottom (footer, default) "
                                            "or top (header)", parse=_telemetry, kind="top or bottom")
    size: Optional[Tuple[int, int]] = option(None, "capture size WIDTHxHEIGHT to request (default: the "
                                                   "format's, else the device's)", parse=parse_size,
                                             kind="WIDTHxHEIGHT", check=_check_capture_size)
    fps: Optional[float] = option(None, "frame rate to request (default: the device's)",
                                  check=lambda v: None if v > 0 else "must be > 0")
    bits: int = option(16, "significant bits of the counts", check=lambda v: None if 1 <= v <= 16 else "must be 1..16")


def choose_format(uri: URI, vid: Optional[int], pid: Optional[int]) -> RawFormat:
    """``format=`` if given, else the camera descriptor for VID:PID, else generic Y16;
    ``telemetry=top|bottom`` places the telemetry rows. Raises SourceError for bad options."""
    o = uri.bind(V4L2Options, SourceOptionError)
    if o.format:
        fmt = get_format(o.format)
    else:
        fmt = (format_for(vid, pid) if vid is not None and pid is not None else None) or get_format("y16")
    if o.telemetry:
        fmt = fmt.with_telemetry(o.telemetry)
    return fmt


def temperature_map(fmt_or_scale) -> Optional[Dict[str, float]]:
    """``{"scale": K per count, "offset": K}`` of a radiometric format (or a K-per-count
    number), None for counts only."""
    scale = getattr(fmt_or_scale, "kelvin_per_count", fmt_or_scale)
    if scale is None:
        return None
    return {"scale": float(scale), "offset": 0.0}


def configure_capture(cap, fmt: RawFormat, size: Optional[Tuple[int, int]], fps: Optional[float]
                      ) -> List[Tuple[str, Any, bool]]:
    """Set the capture properties in the order that works; returns (name, value, accepted)."""
    steps: List[Tuple[str, int, Any]] = []
    if size is not None:
        steps += [("FRAME_WIDTH", cv2.CAP_PROP_FRAME_WIDTH, int(size[0])),
                  ("FRAME_HEIGHT", cv2.CAP_PROP_FRAME_HEIGHT, int(size[1]))]
    if fps:
        steps.append(("FPS", cv2.CAP_PROP_FPS, float(fps)))
    steps += [("FOURCC", cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*fmt.fourcc)),
              ("CONVERT_RGB", cv2.CAP_PROP_CONVERT_RGB, 0),  # a number, not False (3.1 step 3)
              ("BUFFERSIZE", cv2.CAP_PROP_BUFFERSIZE, 1)]
    results = []
    for name, prop, value in steps:
        accepted = bool(cap.set(prop, value))
        if not accepted:
            log.warning("capture refused %s=%r", name, value)
        results.append((name, value, accepted))
    return results


#: the character-device major number of every video4linux node (Linux
#: Documentation/admin-guide/devices.txt: 81 char, "Video capture devices")
V4L2_MAJOR = 81


def not_a_video_device(path: str) -> Optional[str]:
    """Why ``path`` (which exists) is not a V4L2 device node, or None when it is one: a V4L2 node
    is a character device of major :data:`V4L2_MAJOR` (symbolic links such as
    /dev/v4l/by-id/... are followed)."""
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISDIR(st.st_mode):
        return "a folder"
    if not stat.S_ISCHR(st.st_mode):
        return "a regular file" if stat.S_ISREG(st.st_mode) else "not a character device"
    if os.major(st.st_rdev) != V4L2_MAJOR:
        return f"a character device of major {os.major(st.st_rdev)}, not video4linux's {V4L2_MAJOR}"
    return None


class V4L2Camera(Source):
    """One open V4L2 device, read directly (blocking) and decoded to uint16 counts.

    Raises:
        SourceError: the device does not exist (the message lists the video devices here), OpenCV
            cannot open it, or its first frames are not 16-bit frames of the format.
        SourceOptionError: an unknown URI option or a bad value.
    """

    live = True
    Options = V4L2Options

    def __init__(self, uri: URI, capture_factory: Optional[CaptureFactory] = None,
                 sysfs_root: str = "/sys", dev_root: str = "/dev", sequence: Optional[Iterator[int]] = None):
        super().__init__(uri)
        if uri.location and not uri.location.isdigit():  # v4l2://abc read as /dev/video0
            raise SourceError(f"{uri.text}: {uri.location!r} is not a device number; give v4l2://N or "
                              f"v4l2:///dev/videoN ({describe_video_devices(sysfs_root, dev_root)})")
        self.path = uri.path or (f"/dev/video{uri.location}" if uri.location.isdigit() else "/dev/video0")
        self._sequence = sequence if sequence is not None else itertools.count()
        self.sysfs_root, self.dev_root = sysfs_root, dev_root  # where the camera was looked up
        if capture_factory is None and not os.path.exists(self.path):
            raise SourceError(f"{self.path} does not exist; {describe_video_devices(sysfs_root, dev_root)}")
        problem = not_a_video_device(self.path) if capture_factory is None else None
        if problem:  # was "OpenCV cannot open it; is another program using it?"
            raise SourceError(f"{self.path} is not a video device ({problem}); "
                              f"{describe_video_devices(sysfs_root, dev_root)}")
        self.device = video_device_info(self.path, sysfs_root, dev_root)
        vid, pid = (self.device.vid, self.device.pid) if self.device else (None, None)
        self.format = choose_format(uri, vid, pid)
        self._temperature_k = temperature_map(self.format)
        requested = self.options.size or self.format.capture_size
        self.bits = self.options.bits
        self._counts = {"frames": 0, "dropped": 0, "corrupt": 0, "reconnects": 0, "failed_reads": 0}
        self._failed_in_row = 0
        self._logged_kinds: set = set()
        self.cap = (capture_factory or cv2.VideoCapture)(self.path, cv2.CAP_V4L2)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"OpenCV (V4L2) cannot open {self._describe()}; is another program using "
                              f"it? {describe_video_devices(sysfs_root, dev_root)}")
        self.settings = configure_capture(self.cap, self.format, requested, self.options.fps)
        width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        self.capture_size = (width, height) if width and height else requested
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self._fps = float(fps) if fps and 0 < fps < 1000 else self.options.fps
        self._pending: Optional[Frame] = None
        try:
            self._pending = self._verify()
        except SourceError:
            self.cap.release()
            raise
        self._shape = self._pending.raw.shape

    def _describe(self) -> str:
        return self.device.describe() if self.device else self.path

    def _verify(self) -> Frame:
        """Read the first frames; the device must deliver 16-bit frames of this format."""
        problems = []
        for _ in range(VERIFY_FRAMES):
            ok, buffer = self.cap.read()
            t = now()
            if not ok or buffer is None:
                problems.append("no frame")
                continue
            try:
                counts, extra = self.format.unpack(buffer, self.capture_size)
                return self._frame(check_frame(counts), extra, t)
            except FrameError as exc:
                problems.append(f"{getattr(buffer, 'dtype', '?')} {getattr(buffer, 'shape', '?')}: {exc}")
        refused = [f"{name}={value}" for name, value, ok in self.settings if not ok]
        raise SourceError(
            f"{self._describe()} does not deliver 16-bit '{self.format.name}' frames "
            f"({self.format.description}); got: {'; '.join(problems)}. "
            f"Settings refused by the device/OpenCV: {', '.join(refused) or 'none'}. "
            f"OpenCV {cv2.__version__}: Y16 needs the V4L2 backend and CONVERT_RGB=0 "
            "(opencv-python 4.9.0.80 is known good, 4.11 returns flattened frames: thermal_io.md 3.1); "
            "try format=y16|boson|lepton|tc001 or size=WxH")

    def _frame(self, counts: np.ndarray, extra: Dict[str, Any], t: float) -> Frame:
        meta = {"source": self.uri.text, "device": self.path,
                "camera": (self.device.camera.name if self.device and self.device.camera
                           else (self.device.name if self.device and self.device.name else "v4l2")),
                "format": self.format.name, "bits": self.bits,
                "kelvin_per_count": self.format.kelvin_per_count, "temperature_k": self._temperature_k}
        meta.update(extra)  # the layout's own scale, telemetry
        if meta["kelvin_per_count"] != self.format.kelvin_per_count:
            meta["temperature_k"] = temperature_map(meta["kelvin_per_count"])
        frame = Frame(raw=np.ascontiguousarray(counts), seq=next(self._sequence), t_capture=t, meta=meta)
        self._counts["frames"] += 1
        return frame

    @property
    def size(self):
        """(width, height) of the counts frames in pixels (after the format's unpacking)."""
        return (self._shape[1], self._shape[0])

    @property
    def fps(self) -> Optional[float]:
        """The frame rate in frames per second the device reports (else the ``fps`` option)."""
        return self._fps

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The next frame (blocking in OpenCV's read; ``timeout`` is not used by OpenCV).

        Returns:
            A :class:`~tir.edge.frame.Frame` with (H, W) uint16 counts, or None for a failed read
            or a frame dropped as corrupt (counted in :meth:`stats`).

        Raises:
            SourceError: :data:`MAX_FAILED_READS` reads in a row failed (the camera is gone).
        """
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        while True:
            ok, buffer = self.cap.read()
            t = now()
            if not ok or buffer is None:
                self._counts["failed_reads"] += 1
                self._failed_in_row += 1
                if self._failed_in_row >= MAX_FAILED_READS:
                    raise SourceError(f"{self._describe()} stopped delivering frames "
                                      f"({self._failed_in_row} failed reads)")
                return None
            self._failed_in_row = 0
            try:
                counts, extra = self.format.unpack(buffer, self.capture_size)
                return self._frame(check_frame(counts, self._shape), extra, t)
            except FrameError as exc:
                self._counts["corrupt"] += 1
                if exc.kind not in self._logged_kinds:
                    self._logged_kinds.add(exc.kind)
                    log.warning("%s: dropping frame (%s): %s; further '%s' drops are only counted",
                                self.path, exc.kind, exc, exc.kind)

    def close(self) -> None:
        """Release the OpenCV capture."""
        self.cap.release()

    def stats(self) -> Dict[str, int]:
        """frames, failed_reads and corrupt (frames dropped by :func:`~tir.edge.frame.check_frame`)."""
        return dict(self._counts)


class V4L2Source(Source):
    """A V4L2 thermal camera; ``start()`` adds the newest-frame grabber with reconnection
    (options: :class:`V4L2Options`)."""

    live = True
    Options = V4L2Options

    def __init__(self, uri: URI, capture_factory: Optional[CaptureFactory] = None,
                 sysfs_root: str = "/sys", dev_root: str = "/dev", **grabber_options):
        super().__init__(uri)
        sequence = itertools.count()  # frame numbers keep counting across reconnects
        self._open = lambda: V4L2Camera(uri, capture_factory, sysfs_root, dev_root, sequence)
        self.camera = self._open()  # fails now if the device is missing or not 16-bit
        self.grabber: Optional[Grabber] = None
        self._grabber_options = grabber_options

    @property
    def format(self) -> RawFormat:
        """The camera's raw layout (:class:`~tir.edge.camera.formats.RawFormat`)."""
        return self.camera.format

    @property
    def size(self):
        """(width, height) of the counts frames in pixels."""
        return self.grabber.size if self.grabber else self.camera.size

    @property
    def fps(self) -> Optional[float]:
        """The frame rate in frames per second."""
        return self.grabber.fps if self.grabber else self.camera.fps

    @property
    def connected(self) -> bool:
        """False while the grabber is reconnecting to a lost camera."""
        return self.grabber.connected if self.grabber else True

    def start(self) -> "V4L2Source":
        """Start the newest-frame grabber (with reconnection) around the camera; returns the source."""
        if self.grabber is None:
            self.grabber = Grabber(self._open, uri=self.uri, first_source=self.camera,
                                   **self._grabber_options).start()
        return self

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The newest frame (through the grabber once started), or None within ``timeout`` seconds.

        Returns:
            A :class:`~tir.edge.frame.Frame` with (H, W) uint16 counts.

        Raises:
            SourceError: before :meth:`start`, the camera stopped delivering frames.
        """
        if self.grabber is not None:
            return self.grabber.read(timeout)
        return self.camera.read(timeout)

    def close(self) -> None:
        """Stop the grabber (or release the camera when never started)."""
        if self.grabber is not None:
            self.grabber.close()
        else:
            self.camera.close()

    def stats(self) -> Dict[str, object]:
        """The grabber's counters once started (:meth:`Grabber.stats`), else the camera's."""
        return self.grabber.stats() if self.grabber else self.camera.stats()
