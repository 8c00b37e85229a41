"""``file://`` -- replay recorded thermal data as raw counts.

Accepted paths: a folder of images (sorted by name; .png .tif .tiff .pgm .bmp .jpg .jpeg),
a multi-page TIFF (``cv2.imreadmulti``), a single image, an ``.npy`` stack (N, H, W) or
(H, W), or any video OpenCV can decode (``cv2.VideoCapture``; 16-bit video such as FFV1
gray16 or Y4M mono16 keeps its stored counts, see :class:`_VideoReader`). 16-bit data is kept as is;
8-bit data is shifted ``<< 6`` into the 14-bit range. ``meta["bits"]`` is the bit depth to
normalise by (14 for scaled 8-bit; for 16-bit data 14 if the first frame fits in 14 bits,
else 16; override with ``bits=``), ``meta["source_bits"]`` what the file held.

A folder written by the recorder (``tir run --record``: ``frames.csv`` + ``recording.json``)
is replayed as a recording: ``stream=raw`` (default: the camera's input) or
``stream=restored``, paced at its recorded timing (``t_capture`` of the index; ``rate=max``
reads as fast as possible); ``file://REC/raw.u16`` or ``.../restored.u16`` picks the stream
too. Each frame's ``meta`` holds ``recorded_seq`` and ``t_recorded``.

Options: ``loop=1`` (start again at the end), ``rate=native|max`` (native paces at the
file's frame rate, or ``fps=``, default 30 for images; max reads as fast as possible),
``bits=14|16``. Images are read with ``np.fromfile`` + ``cv2.imdecode`` (PNG chunk CRCs
checked first, so a damaged PNG is refused here rather than by libpng on stderr; only a regular
file is read, a FIFO, device or socket named like a frame is dropped as ``not_file`` without
blocking: :func:`open_regular`; a JPEG that
libjpeg decodes with a ``Corrupt JPEG data`` warning is a damaged frame, its warning kept off
stderr: :func:`decode_image`). A corrupt,
vanished or unreadable image, or a frame whose shape or bit depth (8 vs 16) differs from the
first one (the first frame fixes the normalisation: a fixed map for 8-bit, robust percentiles
of counts for 16-bit), is dropped,
counted in ``stats()["corrupt"]`` (by kind in ``stats()["corrupt_kinds"]``; the pipeline's
counters include them) and logged at most once per kind every 10 s.

Loss: when the file or folder itself disappears (an unmounted disk, a deleted folder) the
source does not end at once: ``read`` returns None (the pipeline shows NO SIGNAL,
``stats()["connected"]`` is False) and the path is reopened after 0.5, 1, 2, 4, 5, 5 ... s
(as a camera is), at most ``retries=`` times (default :data:`DEFAULT_RETRIES`, about 40 s): then
``read`` raises :class:`SourceError` naming the path (a replay folder deleted during a run
retried for ever, and ``tir run --frames N`` never ended); when it is back in time, replay starts again from its first frame and
``stats()["reconnects"]`` counts it; each frame's ``meta["connection"]`` is that count (what was
put there may be another recording: edge/pipeline/stages.py ``Preprocess`` marks the first frame
after it ``camera_change``). Only a real end of file (without ``loop=1``) ends the run.
"""
from __future__ import annotations

import difflib
import errno
import logging
import math
import os
import re
import struct
import time
import zlib
from abc import ABC, abstractmethod
from contextlib import nullcontext
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..frame import Frame, FrameError, check_frame, now
from ..logs import RateLimiter, native_stderr_captured, opencv_silenced, quiet_opencv
from ..regular import imread_unchanged, open_regular  # noqa: F401 (re-exported: the frame readers' own)
from ..registry import option
from ..uri import URI
from .base import EndOfStream, Source, SourceError  # EndOfStream re-exported for importers of .file

log = logging.getLogger(__name__)
quiet_opencv()  # failures are counted here; OpenCV's own imread warnings would flood stderr

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff", ".pgm", ".bmp", ".jpg", ".jpeg")
TIFF_EXTENSIONS = (".tif", ".tiff")
DEFAULT_IMAGE_FPS = 30.0
MAX_RECORDED_GAP_S = 5.0  # a longer pause in a recording replays as this long
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: a JPEG stream's start: SOI (FF D8) and the first segment's marker byte (ITU-T T.81 B.1.1.2)
JPEG_START = b"\xff\xd8\xff"

#: the warnings libjpeg (and libjpeg-turbo) print with ``fprintf(stderr)`` while decoding, by their
#: text in jerror.h (JWRN_*): what :func:`decode_image` takes off stderr.
LIBJPEG_WARNING = re.compile(r"(Corrupt JPEG data: |Premature end of JPEG file|Invalid SOS parameters for sequential "
                             r"JPEG|Inconsistent progression sequence for component|Warning: unknown JFIF revision "
                             r"number|Unknown Adobe color transform code|Application transferred too many scanlines)")
#: those of them that say the image data itself is not what ITU-T T.81 allows (cut: JWRN_JPEG_EOF,
#: JWRN_HIT_MARKER; a code no table holds: JWRN_HUFF_BAD_CODE, JWRN_ARITH_BAD_CODE; entropy-coded
#: data left over after the last block, which T.81 F.1.2.3 pads to a byte at most:
#: JWRN_EXTRANEOUS_DATA; a lost restart marker: JWRN_MUST_RESYNC; scans that do not form a picture:
#: JWRN_NOT_SEQUENTIAL, JWRN_BOGUS_PROGRESSION): libjpeg then fills or guesses blocks and the
#: decoded frame is not the camera's. A damaged ICC profile (libjpeg-turbo's JWRN_BOGUS_ICC), a JFIF
#: version or an Adobe transform code it does not know leave the pixels as coded.
LIBJPEG_DAMAGE = re.compile(r"(Corrupt JPEG data: (?!bad ICC marker)|Premature end of JPEG file|Invalid SOS parameters"
                            r"|Inconsistent progression sequence)")
#: a line FFmpeg's default log callback writes (``[<component> @ 0x<address>] <message>``): what a video
#: read takes off stderr (OpenCV's FFmpeg backend logs errors only, cap_ffmpeg_impl.hpp)
FFMPEG_LINE = re.compile(r"\[[\w ,./-]+ @ (0x)?[0-9a-fA-F]+\] ")
_ffmpeg_notes = RateLimiter()  # a damaged video's end or seek, at most one line per 10 s
_jpeg_notes = RateLimiter()  # libjpeg's warnings about a frame it decodes whole, at most one line per 10 s


class SourceLost(SourceError):
    """The file or folder being replayed is gone (the source retries, as for a camera)."""


def describe_missing(path: str) -> str:
    """Error text for a path that does not exist, naming the entries of its folder whose names
    are close to it (at most 5), or saying the folder is missing too; a symbolic link that leads
    nowhere (a loop, or a target that is gone) is named as one (it is in its folder's listing, so it
    was suggested as its own fix: ``no such file or folder: loop.png; did you mean loop.png?``)."""
    if os.path.islink(path):
        try:
            os.stat(path)
            reason = "it cannot be followed"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                reason = f"{exc.strerror}: its links lead back to themselves"
            else:
                target = os.path.join(os.path.dirname(path), os.readlink(path))
                reason = f"its target {target}: {exc.strerror}"
        return f"{path} is a symbolic link that leads to no file ({reason}); give the file or folder itself"
    folder = os.path.dirname(os.path.abspath(path)) or "."
    text = f"no such file or folder: {path}"
    if os.path.isdir(folder):
        names = sorted(os.listdir(folder))
        close = difflib.get_close_matches(os.path.basename(path), names, n=5, cutoff=0.6)
        if close:
            text += f"; did you mean {', '.join(os.path.join(folder, n) for n in close)}?"
        else:
            text += f" ({folder} exists, with {len(names)} entries, none named like it)"
    else:
        text += f" (folder {folder} does not exist either)"
    return text


def png_problem(data: bytes) -> Optional[str]:
    """Why a PNG byte string is damaged (bad signature, a chunk whose CRC does not match, cut
    before IEND), or None when its chunk structure is intact. Chunk layout and CRC-32 over
    type + data: PNG specification (ISO/IEC 15948, W3C PNG 2nd ed.) section 5.3."""
    if not data.startswith(PNG_SIGNATURE):
        return "no PNG signature"
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return f"cut inside chunk {kind.decode('latin-1')!r}"
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            return f"CRC mismatch in chunk {kind.decode('latin-1')!r} at byte {pos}"
        if kind == b"IEND":
            return None
        pos = end
    return "cut before the IEND chunk"


#: the largest frame side a file frame may have (px): the capture limit of edge/sources/v4l2.py
#: (no thermal camera comes near it). A 16-bit PNG of 20000x20000 zeros is a file of under 1 MB
#: that decodes to 800 MB and was then restored at full size (a model input of GBs).
MAX_FRAME_SIDE = 8192


def png_dimensions(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) in px from a PNG's IHDR chunk (the first chunk, bytes 16..24, big-endian:
    PNG specification section 11.2.2), or None when ``data`` does not start like a PNG."""
    if len(data) >= 24 and data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None


def check_frame_side(width: int, height: int, what: str) -> None:
    """Refuse a frame with a side above :data:`MAX_FRAME_SIDE`.

    Raises:
        FrameError: kind ``size``, naming ``what`` and the size.
    """
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        raise FrameError("size", f"{what}: a {width}x{height} frame is larger than any thermal camera's (at most "
                                 f"{MAX_FRAME_SIDE} px a side, the capture limit); not read")


def _a(bits: int) -> str:
    """"an 8-bit", "a 16-bit": the article of a bit depth read aloud."""
    return f"{'an' if str(bits).startswith('8') or bits in (11, 18) else 'a'} {bits}-bit"


def check_depth(bits: int, expected: int, what: str = "replay", name: Optional[str] = None) -> None:
    """Refuse a frame whose bit depth differs from its source's (the first frame's): a source
    keeps one bit depth, as a camera does. The one rule of ``tir run``'s file source and of
    ``tir eval --data DIR`` (engines/training/datasets.py ``load_counts`` with ``dropped``):
    both skip such a frame and count it.

    Args:
        bits: the frame's depth as stored, 8 (uint8) or 16 (uint16).
        expected: the source's depth, 8 or 16.
        what: what the frames make up, for the message ("replay", "set").
        name: the frame's file, named first in the message (None: not named).

    Raises:
        FrameError: kind ``depth``, saying the frame is skipped and why.
    """
    if bits != expected:
        raise FrameError("depth", f"{name + ': ' if name else ''}{_a(bits)} frame in {_a(expected)} {what} is "
                                  "skipped: a source keeps one bit depth, as a camera does (keep 8-bit and 16-bit "
                                  "files in separate folders)")


def read_image(path: str) -> np.ndarray:
    """Decode an image file as stored (``cv2.IMREAD_UNCHANGED``); a PNG is measured from its
    header first, so one with a side above :data:`MAX_FRAME_SIDE` is never decoded.

    Returns:
        The decoded array: (H, W) or (H, W, C), uint8 or uint16 as the file holds it.

    Raises:
        FrameError: kind ``missing`` (gone or unreadable), ``not_file`` (a FIFO, device or
            socket: never read), ``corrupt`` (empty, damaged PNG, not decodable) or ``size`` (a
            side above :data:`MAX_FRAME_SIDE`).
    """
    try:
        with open_regular(path) as f:   # FrameError not_file: a FIFO, device or socket is never read
            data = np.fromfile(f, dtype=np.uint8)
    except OSError as exc:
        raise FrameError("missing", f"{path}: {exc.strerror or exc}") from exc
    if data.size == 0:
        raise FrameError("corrupt", f"{path}: empty file")
    if path.lower().endswith(".png"):
        problem = png_problem(data.tobytes())
        if problem is not None:
            raise FrameError("corrupt", f"{path}: damaged PNG ({problem})")
    size = png_dimensions(data[:24].tobytes())
    if size is not None:
        check_frame_side(*size, path)
    image = decode_image(data, path)
    check_frame_side(image.shape[1], image.shape[0], path)
    return image


def decode_image(data: np.ndarray, what: str) -> np.ndarray:
    """``cv2.imdecode(data, IMREAD_UNCHANGED)`` of an encoded image's bytes, as stored.

    OpenCV's log is silenced for the call (a damaged TIFF's libtiff errors would print at every
    read; the caller's rate-limited drop line reports it instead), and a header OpenCV refuses
    by raising (a BMP or TIFF claiming a side above OpenCV's limit: ``cv2.error``, where a damaged
    body returns None) is a damaged frame like any other. A JPEG (bytes starting
    :data:`JPEG_START`) is decoded with file descriptor 2 captured
    (:func:`tir.edge.logs.native_stderr_captured`): libjpeg prints its warnings itself, past
    OpenCV's log, so one damaged JPEG in a looped folder printed ``Corrupt JPEG data: …`` at
    every pass while the frame, decoded with guessed blocks, was restored and counted as good.
    A warning of :data:`LIBJPEG_DAMAGE` makes the frame corrupt (its text is the reason); the
    other libjpeg warnings are logged at most once per 10 s and the frame is kept. A JPEG
    libjpeg decodes without a warning is the same array as before.

    Args:
        data: the file's bytes, a 1-D uint8 array.
        what: the file (or frame) named in the error.

    Returns:
        The decoded array: (H, W) or (H, W, C), uint8 or uint16.

    Raises:
        FrameError: kind ``corrupt`` when it cannot be decoded, or libjpeg said its data is damaged.
    """
    jpeg = data[:len(JPEG_START)].tobytes() == JPEG_START
    said: List[str] = []
    try:
        with opencv_silenced(), (native_stderr_captured(LIBJPEG_WARNING.match) if jpeg else nullcontext(said)) as said:
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        reason = next((line for line in str(exc).splitlines() if "error:" in line), str(exc)).strip()
        raise FrameError("corrupt", f"{what}: cannot be decoded (OpenCV: {reason[-160:]})") from None
    damage = [line for line in said if LIBJPEG_DAMAGE.match(line)]
    if damage:
        raise FrameError("corrupt", f"{what}: damaged JPEG (libjpeg: {damage[0][:160]})")
    for line in said:
        _jpeg_notes.log(log, logging.INFO, line.split(":")[0][:40], "%s: libjpeg: %s (decoded whole; kept)", what, line)
    if image is None:
        raise FrameError("corrupt", f"{what}: cannot be decoded")
    return image


#: median over a colour frame's pixels of (largest − smallest channel), in 8-bit grey levels, above
#: which the frame is a false-colour (palette) rendering rather than grey stored in three channels.
#: Grey stored as colour (JPEG included) differs by chroma rounding only (0-2 levels); a burnt-in
#: coloured OSD or colour scale bar covers a minority of the pixels, so the median ignores it; a
#: palette differs by tens of levels nearly everywhere (measured on a HIT-UAV frame: OpenCV's
#: TURBO, INFERNO, JET medians of 100+).
FALSE_COLOUR_CHROMA = 8.0


def colour_chroma(image: np.ndarray) -> float:
    """The median over pixels of (largest − smallest colour channel) of an (H, W, 3) BGR or
    (H, W, 4) BGRA uint8/uint16 image, in 8-bit grey levels (0 for grey stored as colour; above
    :data:`FALSE_COLOUR_CHROMA` for a palette rendering)."""
    bgr = image[:, :, :3]
    chroma = float(np.median(bgr.max(axis=2) - bgr.min(axis=2)))
    return chroma / 257.0 if image.dtype == np.uint16 else chroma


def to_grey(image: np.ndarray, what: str) -> np.ndarray:
    """One grey channel from a decoded frame: (H, W) as it is, (H, W, 1) squeezed, grey stored
    as BGR or BGRA converted; the dtype kept.

    Raises:
        FrameError: kind ``colour`` for a false-colour (palette) frame (:func:`colour_chroma`
            above :data:`FALSE_COLOUR_CHROMA`: a palette's brightness does not follow the scene's
            temperature, so its grey would be a scrambled scene); ``what`` names the file.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        chroma = colour_chroma(image)
        if chroma > FALSE_COLOUR_CHROMA:
            raise FrameError("colour", f"{what}: a false-colour frame (its colour channels differ by {chroma:.0f} "
                                       "grey levels at the median pixel) cannot be read as temperatures; give the "
                                       "camera's grey frames (Y16 counts, or its 8-bit 'white hot' output)")
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    return image


def to_counts(image: np.ndarray, what: str) -> np.ndarray:
    """Grey counts from a decoded image: colour -> grey, 8-bit values shifted left by 6.

    Args:
        image: (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, uint8 or uint16.
        what: the file's name for messages.

    Returns:
        (H, W) uint16 counts (8-bit input lands in 14-bit range: 0..16320).

    Raises:
        FrameError: kind ``corrupt`` for None (not decodable), ``size`` for a side above
            :data:`MAX_FRAME_SIDE`, ``colour`` for a false-colour (palette) frame
            (:func:`to_grey`), ``dtype`` for other pixel types.
    """
    if image is None:
        raise FrameError("corrupt", f"{what}: cannot be decoded")
    check_frame_side(image.shape[1], image.shape[0], what)
    image = to_grey(image, what)
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
    what: Optional[str] = None  # the frame just returned, in words (its file), where the reader knows it

    @abstractmethod
    def next(self) -> Optional[np.ndarray]:
        """Next decoded frame (may raise FrameError), or None at the end."""

    @abstractmethod
    def rewind(self) -> None:
        """Go back to the first frame (SourceLost when the path is gone)."""

    def step_s(self) -> Optional[float]:
        """Seconds from the frame just returned to the next, where the file records it
        (a recording's timestamps); None: the constant rate."""
        return None

    def meta(self) -> Dict[str, object]:
        """Extra ``Frame.meta`` of the frame just returned."""
        return {}

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
        self.what = what   # the frame just read, for a message that skips it
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

    A frame FFmpeg's decoder reports errors on while it is read (``[mjpeg @ 0x…] error count``,
    ``mjpeg_decode_dc: bad vlc``: FFmpeg prints to stderr itself; OpenCV keeps its level at errors)
    was concealed, not decoded whole: it is dropped as ``corrupt`` with FFmpeg's first line, and
    the lines are kept off stderr (:func:`tir.edge.logs.native_stderr_captured`); a looped damaged
    video printed them at every pass while its damaged frames went on as good ones.
    """

    def __init__(self, path: str):
        self.path = path
        self.position = 0  # frames read since the start (or the last rewind)
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
        with native_stderr_captured(FFMPEG_LINE.match) as said:
            ok, image = self.cap.read()
        self.position += 1
        if not ok:
            if said:
                _ffmpeg_notes.log(log, logging.WARNING, "end", "%s: the video ends damaged (FFmpeg: %s)", self.path,
                                  said[-1][:160])
            return None
        if said:  # FFmpeg logs errors only (OpenCV's level): the frame was concealed, not decoded whole
            raise FrameError("corrupt", f"{self.path}: frame {self.position - 1} is damaged (FFmpeg: "
                                        f"{said[0][:160]}" + (f"; {len(said) - 1} more lines)" if len(said) > 1 else ")"))
        if self.mode == "png16":
            image = decode_image(np.ascontiguousarray(image).reshape(-1), f"{self.path}: a PNG frame")
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
        self.position = 0
        with native_stderr_captured(FFMPEG_LINE.match) as said:  # a damaged file's seek errors, each pass
            if not self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
                self.cap.release()
                self.cap = self._open()
        if said:
            _ffmpeg_notes.log(log, logging.WARNING, "rewind", "%s: FFmpeg on rewinding: %s", self.path, said[0][:160])

    def close(self):
        self.cap.release()


def _image_reader(files: List[str]) -> _Reader:
    return _ListReader(lambda i: (read_image(files[i]), files[i]), len(files))


def _list_images(path: str) -> Tuple[List[str], List[str]]:
    """(image files, all names) of a folder, sorted by name."""
    names = sorted(os.listdir(path))
    return [os.path.join(path, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS)], names


class _FolderReader(_ListReader):
    """The images of a folder; the folder is listed again at every rewind (files may come
    and go between passes), and a vanished folder is a loss, not a run of missing files."""

    def __init__(self, path: str, files: List[str]):
        self.path, self.files = path, files
        super().__init__(self._load, len(files))

    def _load(self, i: int):
        try:
            return read_image(self.files[i]), self.files[i]
        except FrameError as exc:
            if exc.kind == "missing" and not os.path.isdir(self.path):
                raise SourceLost(f"{self.path}: the folder is gone") from exc
            raise

    def rewind(self):
        if not os.path.isdir(self.path):
            raise SourceLost(f"{self.path}: the folder is gone")
        self.files, _ = _list_images(self.path)
        self.count = len(self.files)
        super().rewind()


def is_recording(path: str) -> bool:
    """True for a folder written by the recorder output (its index and description)."""
    from ..outputs.recorder import INDEX_NAME, INFO_NAME

    return os.path.isfile(os.path.join(path, INDEX_NAME)) and os.path.isfile(os.path.join(path, INFO_NAME))


def _recorded_time(row) -> Optional[float]:
    """An index row's capture time in s, or None where it is not a finite number (a damaged
    line: that frame is replayed at the file's rate instead of its recorded timing)."""
    try:
        t = float(row["t_capture"])
    except (TypeError, ValueError):
        return None
    return t if math.isfinite(t) else None


class _RecordingReader(_Reader):
    """The frames of a recorder folder, one stream (raw or restored), with their timestamps."""

    def __init__(self, path: str, stream: str):
        from ..outputs.recorder import INDEX_NAME, STREAM_DTYPE, _read_index, stream_segments

        if stream not in ("raw", "restored"):
            raise SourceError(f"stream={stream!r}: a recording holds stream=raw or stream=restored")
        self.path, self.stream, self.dtype = path, stream, STREAM_DTYPE
        self.rows = _read_index(Path(path))
        if not self.rows:
            raise SourceError(f"{path}: the recording has no complete frame in its {INDEX_NAME}")
        have = [r for r in self.rows if r[stream]]
        if not have:
            other = "restored" if stream == "raw" else "raw"
            raise SourceError(f"{path}: the recording holds no {stream} frames; use ?stream={other}")
        self.rows = have
        self.count = len(self.rows)
        self.times = [_recorded_time(r) for r in self.rows]  # None: damaged, not paced by
        steps = [b - a for a, b in zip(self.times, self.times[1:]) if None not in (a, b) and b > a]
        self.fps = 1.0 / float(np.median(steps)) if steps else None
        self.index = 0
        self.segments = stream_segments(Path(path), stream)  # the stream's files (one, unless rolled at 4 GiB)

    def next(self):
        if self.index >= self.count:
            return None
        row = self.rows[self.index]
        self.index += 1
        from ..outputs.recorder import INDEX_NAME, frame_place, segment_of

        where = row[self.stream]
        try:
            png, offset, h, w = frame_place(Path(self.path), row, self.stream)
        except ValueError as exc:  # a damaged or tampered index line: this frame is dropped
            raise FrameError("corrupt", f"{self.path}: frame {row['seq']} of {INDEX_NAME}: {exc}") from None
        if png is not None:
            image = read_image(str(png))
        else:
            try:
                name, offset = segment_of(self.segments, offset, self.stream, Path(self.path))
                with open_regular(str(name)) as f:   # a FIFO in its place: dropped, never a hang
                    image = np.fromfile(f, dtype=self.dtype, count=h * w, offset=offset)
            except OSError as exc:
                if not os.path.isdir(self.path):
                    raise SourceLost(f"{self.path}: the recording is gone") from exc
                raise FrameError("missing", f"{exc.filename or self.path}: {exc.strerror or exc}") from exc
            if image.size != h * w:
                raise FrameError("corrupt", f"{name} ends inside frame {row['seq']}")
            image = image.reshape(h, w).astype(np.uint16)
        self.source_bits = 16
        return to_counts(image, where)

    def step_s(self):
        i = self.index  # the frame just returned is index - 1
        if 0 < i < self.count and None not in (self.times[i], self.times[i - 1]):
            return min(max(self.times[i] - self.times[i - 1], 0.0), MAX_RECORDED_GAP_S)
        return None

    def meta(self):
        row = self.rows[self.index - 1]
        return {"recorded_seq": int(row["seq"]), "t_recorded": self.times[self.index - 1]}

    def rewind(self):
        if not os.path.isdir(self.path):
            raise SourceLost(f"{self.path}: the recording is gone")
        self.index = 0
        from ..outputs.recorder import stream_segments

        self.segments = stream_segments(Path(self.path), self.stream)


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


def open_reader(path: str, stream: Optional[str] = None) -> _Reader:
    """Pick the reader for ``path`` (recording, folder, TIFF, npy, image or video).

    ``stream`` (raw|restored, default raw) selects a recording's stream.

    Raises:
        SourceError: ``path`` does not exist (the message says what exists nearby), is neither
            a regular file nor a folder (a FIFO, device or socket), or is a folder without images
            (the message lists what it holds).
    """
    if not os.path.exists(path):
        raise SourceError(describe_missing(path))
    if not (os.path.isfile(path) or os.path.isdir(path)):
        # a FIFO would block OpenCV's open (and the run) until a writer appears, a device or
        # socket is no recording
        raise SourceError(f"{path} is not a regular file or folder (a FIFO, device or socket); replay a "
                          "file or folder, or give a camera as v4l2:///dev/videoN")
    parent = os.path.dirname(os.path.abspath(path))
    if path.endswith(".u16") and os.path.isfile(path) and is_recording(parent):
        kind = os.path.basename(path)[:-len(".u16")]
        if kind.partition(".")[2].isdigit():  # raw.<B>.u16: a segment of the raw stream is the stream
            kind = kind.partition(".")[0]
        return _RecordingReader(parent, stream or kind)
    if os.path.isdir(path):
        if is_recording(path):
            return _RecordingReader(path, stream or "raw")
        if os.path.basename(os.path.normpath(path)) in ("raw", "restored") and is_recording(parent):
            # a PNG recording's stream folder (its frames lie in sub-folders of 10,000): the stream
            return _RecordingReader(parent, stream or os.path.basename(os.path.normpath(path)))
        files, names = _list_images(path)
        if not files:
            shown = ", ".join(names[:20]) or "(nothing)"
            raise SourceError(f"{path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder; it holds: {shown}")
        return _FolderReader(path, files)
    lower = path.lower()
    if lower.endswith(".npy"):
        return _npy_reader(path)
    if lower.endswith(TIFF_EXTENSIONS):
        return _tiff_reader(path)
    if lower.endswith(IMAGE_EXTENSIONS):
        return _image_reader([path])
    return _VideoReader(path)


def _positive_fps(fps: float) -> Optional[str]:
    return None if fps > 0 else "must be > 0"


def _retries(retries: int) -> Optional[str]:
    return None if retries >= 0 else "must be >= 0"


#: how many times a vanished file or folder is reopened before the source gives up (0.5, 1, 2, 4,
#: then every 5 s: about 40 s in all)
DEFAULT_RETRIES = 10


def _bits(bits: int) -> Optional[str]:
    return None if 1 <= bits <= 16 else "must be 1..16"


@dataclass(frozen=True)
class FileOptions:
    """URI options of ``file://`` as a source (see the module docstring)."""

    loop: bool = option(False, "1: start again at the end (a replay that never ends)")
    rate: str = option("native", "native: paced at the recorded/native rate; max: as fast as read",
                       choices=("native", "max"))
    stream: Optional[str] = option(None, "which stream of a recording folder (default raw)",
                                   choices=("raw", "restored"))
    fps: Optional[float] = option(None, "frame rate for files that do not say (default: the file's, else 30)",
                                  check=_positive_fps)
    bits: Optional[int] = option(None, "significant bits of the counts (default: 14 if the first frame "
                                       "stays below 16384, else 16)", check=_bits)
    retries: int = option(DEFAULT_RETRIES, "reopen a vanished file or folder at most N times (0.5, 1, 2, 4, "
                                           "then every 5 s), then end with an error (0: at once)", check=_retries)


class FileSource(Source):
    """Frames from a file or folder, optionally looped and paced at the native rate
    (options: :class:`FileOptions`)."""

    live = False
    Options = FileOptions

    def __init__(self, uri: URI, backoff_initial: float = 0.5, backoff_max: float = 5.0):
        super().__init__(uri)
        self.path = uri.path
        self.loop = self.options.loop
        self.paced = self.options.rate == "native"
        self.stream = self.options.stream
        self.reader = open_reader(self.path, self.stream)
        self._fps = self.options.fps or self.reader.fps or DEFAULT_IMAGE_FPS
        self._counts = {"frames": 0, "dropped": 0, "corrupt": 0, "reconnects": 0, "loops": 0}
        self._kinds: Counter = Counter()
        self._limiter = RateLimiter()
        self.connected = True
        self.last_error: Optional[str] = None
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self._delays: Optional[Iterator[float]] = None
        self._t_retry = 0.0
        self._failed_retries = 0   # reopenings that failed since the loss
        self._t_lost = 0.0
        self._seq = 0
        self._t_next: Optional[float] = None
        self._pending = self._first_frame()
        self._pending_meta = self.reader.meta()
        self._shape = self._pending.shape
        self._source_bits = self.reader.source_bits
        bits = self.options.bits
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
        self._kinds[exc.kind] += 1
        self._limiter.log(log, logging.WARNING, exc.kind, "dropping frame (%s): %s", exc.kind, exc)

    # ---- loss and return --------------------------------------------------------------
    def _lose(self, exc: SourceError) -> None:
        from .grabber import backoff_delays

        self.connected = False
        self.last_error = str(exc)
        self._delays = backoff_delays(self.backoff_initial, self.backoff_max)
        self._t_retry = now() + next(self._delays)
        self._failed_retries = 0
        self._t_lost = now()
        if self.options.retries == 0:
            self._give_up()
        self._limiter.log(log, logging.WARNING, "lost", "%s lost (%s); retrying", self.uri.text, exc)

    def _give_up(self) -> None:
        """End the replay: the lost path did not come back within ``retries=``.

        Raises:
            SourceError: naming the path, how long it was retried and the last error.
        """
        retries = self.options.retries
        raise SourceError(f"{self.path}: gone, and not back after {retries} retries over {now() - self._t_lost:.0f} s "
                          f"({self.last_error}); replay ended (add retries=N to the file:// URI to wait longer)")

    def _retry(self) -> bool:
        """Try to reopen the lost path; True when it is back.

        Raises:
            SourceError: the ``retries=``-th reopening failed too (:meth:`_give_up`).
        """
        try:
            reader = open_reader(self.path, self.stream)
        except SourceError as exc:
            self.last_error = str(exc)
            self._failed_retries += 1
            if self._failed_retries >= self.options.retries:
                self._give_up()
            self._t_retry = now() + next(self._delays)
            return False
        self.reader.close()
        self.reader = reader
        self.connected = True
        self._counts["reconnects"] += 1
        self._t_next = None
        log.warning("%s is back; replaying from its first frame", self.uri.text)
        return True

    @property
    def size(self):
        """(width, height) of the replayed frames in pixels."""
        return (self._shape[1], self._shape[0])

    @property
    def fps(self) -> float:
        """The replay rate in frames per second: the ``fps`` option, else the recording's own,
        else the default for image folders."""
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
                    if not os.path.exists(self.path):
                        raise SourceLost(f"{self.path} is gone")
                    if not self.loop:
                        raise EndOfStream(f"{self.uri.text}: end of file after {self._counts['frames']} "
                                          "frames (add loop=1 to repeat)")
                    if restarted:  # a whole pass without one readable frame (e.g. files still
                        # being written back): a loss, reopened (and re-listed) after the back-off
                        raise SourceLost(f"{self.path}: no readable frame in a whole pass")
                    self.reader.rewind()
                    self._counts["loops"] += 1
                    restarted = True
                    continue
                if image.ndim == 2 and image.shape != tuple(self._shape):
                    raise FrameError("size", f"a {image.shape[1]}x{image.shape[0]} frame in a "
                                     f"{self._shape[1]}x{self._shape[0]} replay is skipped: a source keeps "
                                     "one frame size, as a camera does (replay one size per folder)")
                check_depth(self.reader.source_bits, self._source_bits, name=getattr(self.reader, "what", None))
                return check_frame(image, self._shape)
            except FrameError as exc:
                self._drop(exc)

    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The next frame, or None within ``timeout`` when it is not due yet (paced) or the
        path is lost (then it is retried); EndOfStream at the end without ``loop=1``.

        Raises:
            EndOfStream: the end of the file or folder, without ``loop=1``.
            SourceError: the lost path was not back after ``retries=`` reopenings.
        """
        if not self.connected:
            wait = self._t_retry - now()
            if wait > 0:
                time.sleep(min(wait, max(0.0, timeout)))
                if wait > timeout:
                    return None
            if not self._retry():
                return None
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
        try:
            raw = self._next_counts()
        except SourceLost as exc:
            self._lose(exc)
            return None
        if self._pending_meta is not None:
            extra, self._pending_meta = self._pending_meta, None
        else:
            extra = self.reader.meta()
        if self.paced:
            # never build up a backlog: a slow reader continues at the native rate from now
            step = self.reader.step_s()
            step = 1.0 / self._fps if step is None else step
            self._t_next = max(self._t_next, now() - step) + step
        frame = Frame(raw=raw, seq=self._seq, t_capture=now(),
                      meta={"source": self.uri.text, "camera": "file", "bits": self.bits,
                            "source_bits": self.reader.source_bits,
                            "connection": self._counts["reconnects"], **extra})
        self._seq += 1
        self._counts["frames"] += 1
        return frame

    def close(self) -> None:
        """Close the underlying file or folder reader."""
        self.reader.close()

    def stats(self) -> Dict[str, object]:
        """frames, dropped, corrupt (total), corrupt_kinds, reconnects, loops, connected, last_error."""
        return {**self._counts, "corrupt_kinds": dict(self._kinds), "connected": self.connected,
                "last_error": self.last_error}
