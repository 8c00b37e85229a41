"""``file://`` -- replay recorded thermal data as raw counts.

Accepted paths: a folder of images (sorted by name; .png .tif .tiff .pgm .bmp .jpg .jpeg),
a multi-page TIFF (``cv2.imreadmulti``), a single image, an ``.npy`` stack (N, H, W) or
(H, W), or any video OpenCV can decode (``cv2.VideoCapture``). 16-bit data is kept as is;
8-bit data is shifted ``<< 6`` into the 14-bit range. ``meta["bits"]`` is the bit depth to
normalise by (14 for scaled 8-bit; for 16-bit data 14 if the first frame fits in 14 bits,
else 16; override with ``bits=``), ``meta["source_bits"]`` what the file held.

Options: ``loop=1`` (start again at the end), ``rate=native|max`` (native paces at the
file's frame rate, or ``fps=``, default 30 for images; max reads as fast as possible),
``bits=14|16``. A corrupt or unreadable image, or a frame whose shape differs from the
first one, is dropped, counted in ``stats()["corrupt"]`` and logged once per kind.
"""
from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..frame import Frame, FrameError, check_frame, now
from ..uri import URI
from .base import EndOfStream, Source, SourceError  # EndOfStream re-exported for importers of .file

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".pgm", ".bmp", ".jpg", ".jpeg")
TIFF_EXTENSIONS = (".tif", ".tiff")
DEFAULT_IMAGE_FPS = 30.0


def describe_missing(path: str) -> str:
    """Error text for a path that does not exist, naming what its folder holds."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    text = f"no such file or folder: {path}"
    if os.path.isdir(folder):
        names = sorted(os.listdir(folder))
        shown = ", ".join(names[:20]) + (f", ... ({len(names)} entries)" if len(names) > 20 else "")
        text += f"; {folder} holds: {shown or '(nothing)'}"
    else:
        text += f" (folder {folder} does not exist either)"
    return text


def to_counts(image: np.ndarray, what: str) -> np.ndarray:
    """Grey uint16 counts from a decoded image: colour -> grey, 8-bit -> << 6."""
    if image is None:
        raise FrameError("corrupt", f"{what}: cannot be decoded")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype == np.uint8:
        return image.astype(np.uint16) << 6
    if image.dtype == np.uint16:
        return np.ascontiguousarray(image)
    raise FrameError("dtype", f"{what}: pixel type {image.dtype}, expected 8- or 16-bit integers")


class _Reader(ABC):
    """Sequential access to the frames of one kind of file."""

    count: Optional[int] = None  # number of frames if known
    fps: Optional[float] = None
    source_bits: int = 16

    @abstractmethod
    def next(self) -> Optional[np.ndarray]:
        """Next decoded frame (may raise FrameError), or None at the end."""

    @abstractmethod
    def rewind(self) -> None:
        """Go back to the first frame."""

    def close(self) -> None:
        pass


class _ListReader(_Reader):
    """Frames held or addressed by index: image files, TIFF pages, npy stacks."""

    def __init__(self, load: Callable[[int], Tuple[Optional[np.ndarray], str]], count: int):
        self.load, self.count, self.index = load, count, 0

    def next(self):
        if self.index >= self.count:
            return None
        i, self.index = self.index, self.index + 1
        image, what = self.load(i)
        if image is not None:
            self.source_bits = 8 if image.dtype == np.uint8 else 16
        return to_counts(image, what)

    def rewind(self):
        self.index = 0


class _VideoReader(_Reader):
    def __init__(self, path: str):
        self.path = path
        self.cap = cv2.VideoCapture(path)
        if not self.cap.isOpened():
            raise SourceError(f"{path}: OpenCV cannot open this file as video or image sequence")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = count if count > 0 else None
        self.source_bits = 8

    def next(self):
        ok, image = self.cap.read()
        if not ok:
            return None
        counts = to_counts(image, self.path)
        if image.dtype == np.uint16:
            self.source_bits = 16
        return counts

    def rewind(self):
        if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self.cap.release()
            self.cap = cv2.VideoCapture(self.path)

    def close(self):
        self.cap.release()


def _image_reader(files: List[str]) -> _Reader:
    return _ListReader(lambda i: (cv2.imread(files[i], cv2.IMREAD_UNCHANGED), files[i]), len(files))


def _tiff_reader(path: str) -> _Reader:
    ok, pages = cv2.imreadmulti(path, flags=cv2.IMREAD_UNCHANGED)
    if not ok or not pages:
        raise SourceError(f"{path}: not a readable TIFF (cv2.imreadmulti failed)")
    return _ListReader(lambda i: (pages[i], f"{path} page {i}"), len(pages))


def _npy_reader(path: str) -> _Reader:
    try:
        stack = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise SourceError(f"{path}: not a readable .npy array ({exc})") from exc
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3 or stack.dtype not in (np.uint8, np.uint16):
        raise SourceError(f"{path}: array {stack.dtype} {stack.shape}; expected uint16 or uint8 (N, H, W)")
    return _ListReader(lambda i: (np.array(stack[i]), f"{path}[{i}]"), len(stack))


def open_reader(path: str) -> _Reader:
    """Pick the reader for ``path`` (folder, TIFF, npy, image or video)."""
    if not os.path.exists(path):
        raise SourceError(describe_missing(path))
    if os.path.isdir(path):
        names = sorted(os.listdir(path))
        files = [os.path.join(path, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)]
        if not files:
            shown = ", ".join(names[:20]) or "(nothing)"
            raise SourceError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder; it holds: {shown}")
        return _image_reader(files)
    lower = path.lower()
    if lower.endswith(".npy"):
        return _npy_reader(path)
    if lower.endswith(TIFF_EXTENSIONS):
        return _tiff_reader(path)
    if lower.endswith(IMAGE_EXTENSIONS):
        return _image_reader([path])
    return _VideoReader(path)


class FileSource(Source):
    """Frames from a file or folder, optionally looped and paced at the native rate."""

    live = False

    def __init__(self, uri: URI):
        super().__init__(uri)
        self.path = uri.path
        self.loop = uri.get("loop", False, bool)
        rate = uri.get("rate", "native")
        if rate not in ("native", "max"):
            raise SourceError(f"{uri.text}: rate={rate!r}; use rate=native or rate=max")
        self.paced = rate == "native"
        self.reader = open_reader(self.path)
        self._fps = uri.get("fps", None, float) or self.reader.fps or DEFAULT_IMAGE_FPS
        self._counts = {"frames": 0, "dropped": 0, "corrupt": 0, "reconnects": 0, "loops": 0}
        self._logged_kinds: set = set()
        self._seq = 0
        self._t_next: Optional[float] = None
        self._pending = self._first_frame()
        self._shape = self._pending.shape
        bits = uri.get("bits", None, int)
        if bits is None:
            bits = 14 if self.reader.source_bits == 8 or int(self._pending.max()) < 16384 else 16
        self.bits = bits

    def _first_frame(self) -> np.ndarray:
        while True:
            try:
                image = self.reader.next()
            except FrameError as exc:
                self._drop(exc)
                continue
            if image is None:
                raise SourceError(f"{self.path}: no readable frame in it "
                                  f"({self._counts['corrupt']} unreadable)")
            return check_frame(image)

    def _drop(self, exc: FrameError) -> None:
        self._counts["corrupt"] += 1
        if exc.kind not in self._logged_kinds:
            self._logged_kinds.add(exc.kind)
            log.warning("dropping frame (%s): %s; further '%s' drops are only counted",
                        exc.kind, exc, exc.kind)

    @property
    def size(self):
        return (self._shape[1], self._shape[0])

    @property
    def fps(self) -> float:
        return self._fps

    def _next_counts(self) -> np.ndarray:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        restarted = False
        while True:
            try:
                image = self.reader.next()
                if image is None:
                    if not self.loop or restarted:
                        raise EndOfStream(f"{self.uri.text}: end of file after {self._counts['frames']} "
                                          "frames (add loop=1 to repeat)")
                    self.reader.rewind()
                    self._counts["loops"] += 1
                    restarted = True
                    continue
                return check_frame(image, self._shape)
            except FrameError as exc:
                self._drop(exc)

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        if self.paced:
            t = now()
            if self._t_next is None:
                self._t_next = t
            wait = self._t_next - t
            if wait > timeout:
                time.sleep(max(0.0, timeout))
                return None
            if wait > 0:
                time.sleep(wait)
            # never build up a backlog: a slow reader continues at the native rate from now
            self._t_next = max(self._t_next, now() - 1.0 / self._fps) + 1.0 / self._fps
        raw = self._next_counts()
        frame = Frame(raw=raw, seq=self._seq, t_capture=now(),
                      meta={"source": self.uri.text, "camera": "file", "bits": self.bits,
                            "source_bits": self.reader.source_bits})
        self._seq += 1
        self._counts["frames"] += 1
        return frame

    def close(self) -> None:
        self.reader.close()

    def stats(self) -> Dict[str, int]:
        return dict(self._counts)
