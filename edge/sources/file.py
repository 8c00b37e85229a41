"""``file://`` -- replay recorded thermal data as raw counts.

Accepted paths: a folder of images (sorted by name; .png .tif .tiff .pgm .bmp .jpg .jpeg),
a multi-page TIFF (``cv2.imreadmulti``), a single image, an ``.npy`` stack (N, H, W) or
(H, W), or any video OpenCV can decode (``cv2.VideoCapture``; 16-bit video such as FFV1
gray16 or Y4M mono16 keeps its stored counts, see :class:`_VideoReader`). 16-bit data is kept as is;
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


# libavcodec raw pixel-format tags (libavcodec/raw.c, ff_raw_pix_fmt_tags), which OpenCV's
# FFmpeg backend reports as CAP_PROP_CODEC_PIXEL_FORMAT: little-endian formats of more than 8
# bits per sample end with the bit depth (e.g. 'Y1' 0 16 = gray16le, 'Y3' 11 10 = yuv420p10le,
# 'RGB' 48 = rgb48le, i.e. b"RGB0"), big-endian ones start with it (16 0 '1' 'Y' = gray16be).
GRAY16LE_TAG = b"Y1\x00\x10"
GRAY16BE_TAG = b"\x10\x001Y"
PNG_CODECS = (b"MPNG", b"png ")  # PNG-coded video: every packet is a whole PNG image
RAW_CODECS = (b"\x00\x00\x00\x00", b"raw ", b"b16g")  # uncompressed video: packets are the pixels
LOSSLESS_16BIT_HINT = "convert it losslessly with: ffmpeg -i IN -pix_fmt gray16le -c:v ffv1 OUT.mkv"


def _fourcc_bytes(value: float) -> bytes:
    code = int(value) & 0xFFFFFFFF
    return bytes((code >> (8 * i)) & 0xFF for i in range(4))


DEEP_RGB_TAGS = (b"RGB0", b"BGR0", b"0RGB", b"0BGR", b"RBA@", b"BRA@", b"@ABR", b"@ARB")  # 48/64-bit RGB(A)


def _deep_pixel_format(tag: bytes) -> bool:
    """Whether a raw pixel-format tag has more than 8 bits per sample (see above)."""
    if tag in DEEP_RGB_TAGS:
        return True
    return len(tag) == 4 and (9 <= tag[3] <= 16 and tag[0] in b"YG" or 9 <= tag[0] <= 16 and tag[3] in b"YG")


class _VideoReader(_Reader):
    """A video file through ``cv2.VideoCapture`` that keeps 16-bit streams' stored counts.

    OpenCV's FFmpeg backend converts every stream to 8-bit BGR unless opened with
    ``CAP_PROP_CONVERT_RGB`` = 0, so the pixel format (``CAP_PROP_CODEC_PIXEL_FORMAT``) is
    read first and picks how frames are read (``mode``):

    - ``gray16``: gray16le (FFV1, Y4M ``Cmono16``, raw video in NUT, ...): opened with
      CONVERT_RGB = 0, frames are uint16 (H, W) counts as stored.
    - ``png16`` / ``raw16be``: gray16be, which the backend cannot hand over without
      CONVERT_RGB cutting it to 8 bits: opened with ``CAP_PROP_FORMAT`` = -1 (undecoded
      packets), a PNG packet is decoded with ``cv2.imdecode`` and an uncompressed one read as
      big-endian uint16.
    - ``deep``: another pixel format of more than 8 bits: CONVERT_RGB = 0; the frames must come
      back as uint16, else SourceError (with a lossless conversion command), never 8 bits.
    - ``8bit``: everything else, decoded to BGR as before (``to_counts`` shifts it << 6).
    """

    def __init__(self, path: str):
        self.path = path
        probe = cv2.VideoCapture(path)
        if not probe.isOpened():
            raise SourceError(f"{path}: OpenCV cannot open this file as video or image sequence")
        tag = _fourcc_bytes(probe.get(cv2.CAP_PROP_CODEC_PIXEL_FORMAT))
        codec = _fourcc_bytes(probe.get(cv2.CAP_PROP_FOURCC))
        self.size = (int(probe.get(cv2.CAP_PROP_FRAME_WIDTH)), int(probe.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        fps = probe.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and 0 < fps < 1000 else None
        count = int(probe.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count = count if count > 0 else None
        if tag == GRAY16LE_TAG:
            self.mode = "gray16"
        elif tag == GRAY16BE_TAG and codec in PNG_CODECS:
            self.mode = "png16"
        elif tag == GRAY16BE_TAG and codec in RAW_CODECS:
            self.mode = "raw16be"
        elif _deep_pixel_format(tag):
            self.mode = "deep"
        else:
            self.mode = "8bit"
        self.pixel_format, self.codec = tag, codec
        self.source_bits = 8 if self.mode == "8bit" else 16
        if self.mode == "8bit":
            self.cap = probe
        else:
            probe.release()
            self.cap = self._open()

    def _open(self):
        """The capture opened for this file's ``mode`` (see the class docstring)."""
        if self.mode == "8bit":
            cap = cv2.VideoCapture(self.path)
        elif self.mode in ("png16", "raw16be"):
            cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
        else:
            cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_CONVERT_RGB, 0])
        if not cap.isOpened():
            raise SourceError(f"{self.path}: OpenCV cannot reopen this 16-bit video to read its counts "
                              f"(pixel format {self.pixel_format!r}); {LOSSLESS_16BIT_HINT}")
        return cap

    def next(self):
        ok, image = self.cap.read()
        if not ok:
            return None
        if self.mode == "png16":
            image = cv2.imdecode(np.ascontiguousarray(image).reshape(-1), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise FrameError("corrupt", f"{self.path}: a PNG frame cannot be decoded")
        elif self.mode == "raw16be":
            w, h = self.size
            if image.size != 2 * w * h:
                raise FrameError("shape", f"{self.path}: raw frame of {image.size} bytes, expected {2 * w * h} "
                                          f"({w}x{h} gray16be)")
            image = np.frombuffer(np.ascontiguousarray(image).tobytes(), ">u2").reshape(h, w).astype(np.uint16)
        elif self.mode in ("gray16", "deep") and image.dtype != np.uint16:
            raise SourceError(f"{self.path}: a {'16' if self.mode == 'gray16' else 'more than 8'}-bit video "
                              f"(pixel format {self.pixel_format!r}) that this OpenCV returns as "
                              f"{image.dtype} {image.shape}, which would lose its counts; {LOSSLESS_16BIT_HINT}")
        return to_counts(image, self.path)

    def rewind(self):
        if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self.cap.release()
            self.cap = self._open()

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
