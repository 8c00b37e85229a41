"""Recorder output (``file:///path/to/recording``): lossless 16-bit frames plus a preview video.

Layout of a recording folder::

    recording.json   what was recorded and how (format, dtype, byte order), and at close the
                     run's final stats (``stats``: the stats schema's JSON form, version in
                     ``stats_schema_version``; see tir.edge.pipeline.stats)
    frames.csv       one line per frame: seq, t_capture, t_wall, width, height, raw, restored,
                     preview (raw/restored: byte offset into the stream, or PNG file name)
    raw.u16          format=u16 (default): the raw frames back to back, little-endian uint16
    restored.u16     ... and the restored ones (what=restored|both)
    raw.<B>.u16      ... continued in a new file (segment) when the file reached the largest the
                     disk or process allows (FAT32's 4 GiB, ``ulimit -f``: a write fails EFBIG);
                     <B> is the stream's byte offset where the segment starts (see below)
    raw/<F>/*.png    format=png: one 16-bit grayscale PNG per frame instead (smaller, slower),
                     :data:`PNG_FOLDER_FRAMES` (10,000) frames a sub-folder, F = seq // 10,000
                     (5 digits): FAT32 holds at most 65,534 entries in a folder, and a name
                     longer than 8.3 takes 2 or 3 of them, so one folder filled after about
                     21,000 files (session 18) and the recording ended with ENOSPC (a recording of
                     session 18 or before, ``raw/*.png``, still reads)
    preview.avi      8-bit MJPEG of the side-by-side display view (preview=0 to skip);
                     preview.<P>.avi its continuation after the largest file allowed

Crash-safe: a frame's bytes are written and flushed before its index line is appended
(PNGs are written under a temporary name and renamed into place), so a recording cut by
Ctrl-C or a kill reads back every indexed frame, bit-exact; a partly written frame is
simply not indexed. Writing runs in its own thread behind a bounded queue: when the disk
is slower than the camera, frames are dropped and counted, the pipeline never waits. The
preview is best-effort: it skips frames while the queue is more than half full, so the
lossless frames keep priority (the index says which frames made it into the preview).

A write that fails (disk full: ``OSError`` ENOSPC, EDQUOT, EIO, ...) stops the recorder, never
silently: the bytes of the frame being written are cut off again (streams and index are
truncated back to the last complete frame, a half-written PNG is removed), the preview is
closed, ``failure`` holds one line saying what happened and how many frames are kept, and
every frame offered afterwards is counted in ``lost``. The pipeline reports ``failure`` on
the status line, the page and ``/stats.json`` at once (``Output.fail``), and ``tir run`` stops
at once with exit status 3. OpenCV's
VideoWriter reports no write error, so the preview is closed (finalised, playable) before it
reaches the largest file allowed there (:func:`file_size_limit`: ``ulimit -f``, FAT32's 4 GiB)
and goes on in ``preview.<P>.avi`` (P: the preview frames before it), logged and counted in
``segments``; only where not one frame fits does it stop (``last_error`` says so) while the
16-bit frames go on being recorded.

A stream file that reaches the largest file allowed (a write fails with EFBIG: FAT32 on a USB
stick stops a file at 4 GiB - 1 B, about 3.6 min of 640x512 raw + restored at 30 fps; also
``ulimit -f``) does not end the recording: the frame's bytes are cut off that file and written
to a new one, ``<kind>.<B>.u16``, which holds the stream from byte offset B on (the index keeps
offsets into the whole stream, so a frame's place is unchanged in form; a reader finds its file
with :func:`stream_segments` / :func:`segment_of`); a warning is logged and ``segments`` counts
the new files. A frame larger than the limit itself is a failure as above.

The recording's files are written only inside its folder: a name the recorder writes that is a
symbolic link there (a folder made first by another user) is refused at start, and every file is
opened without following a link (:func:`tir.edge.outputs.base.create_file`).

A recording folder is itself a source: ``file://REC`` replays it (see
:mod:`tir.edge.sources.file`), with its recorded timing.

Options: ``what`` (both|raw|restored, default both: the analysis needs the input as well as
the output; without a model the raw frame is kept, as raw), ``format`` (u16|png),
``preview`` (1), ``fps`` (preview rate, 30), ``queue`` (64, at most :data:`MAX_QUEUE`),
``overwrite`` (0), ``compression`` (PNG level 0-9, 1); a value out of range is refused.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..frame import Frame
from ..pipeline.stats import STATS_SCHEMA_VERSION
from ..registry import option
from ..uri import URI
from .base import Output, OutputError, create_file, refuse_links
from .jpeg import side_by_side

INDEX_NAME = "frames.csv"
INFO_NAME = "recording.json"
PREVIEW_NAME = "preview.avi"
INDEX_FIELDS = ["seq", "t_capture", "t_wall", "width", "height", "raw", "restored", "preview"]
WHAT_CHOICES = ("restored", "raw", "both")
FORMATS = ("u16", "png")
STREAM_DTYPE = np.dtype("<u2")
#: PNG frames in one sub-folder of ``raw/`` / ``restored/`` (format=png): well under what FAT32
#: allows in a folder (65,534 entries; a 13-character name with its ``.part`` temporary takes up to
#: 3) and exFAT (2,796,202 files), ext4 (no limit with dir_nlink; 65,000 sub-folders without it)
PNG_FOLDER_FRAMES = 10_000
#: most frames the writer queue may hold (each a private copy: ~2.6 MB at 640x512 with the preview)
MAX_QUEUE = 1024
log = logging.getLogger(__name__)
_STOP = object()


@dataclass(frozen=True)
class RecorderOptions:
    """URI options of ``file://FOLDER`` as an output (see the module docstring)."""

    what: str = option("both", "which frames to keep", choices=WHAT_CHOICES)
    format: str = option("u16", "u16: one raw stream file per kind; png: one 16-bit PNG per frame",
                         choices=FORMATS)
    preview: bool = option(True, "1: also write a viewable preview.avi")
    fps: float = option(30.0, "frame rate written into the preview", check=lambda v: None if v > 0 else "must be > 0")
    compression: int = option(1, "PNG compression 0..9 (format=png)",
                              check=lambda v: None if 0 <= v <= 9 else "must be 0..9")
    overwrite: bool = option(False, "1: replace a recording already in the folder")
    queue: int = option(64, f"frames buffered for the writer thread, 1..{MAX_QUEUE}",
                        check=lambda v: None if 1 <= v <= MAX_QUEUE else f"must be 1..{MAX_QUEUE}")


class Recorder(Output):
    """Writes frames to a recording folder from a background thread (options:
    :class:`RecorderOptions`).

    Raises:
        OutputError: the URI names no folder.
        OutputOptionError: an unknown URI option or a bad value.
    """

    Options = RecorderOptions

    def __init__(self, uri: URI):
        super().__init__(uri)
        if not uri.path:
            raise OutputError(f"{uri.text!r} names no folder; use file:///path/to/recording")
        self.path = Path(uri.path)
        o = self.options
        self.what = o.what
        self.format = o.format
        self.preview = o.preview
        self.fps = o.fps
        self.compression = o.compression
        self.overwrite = o.overwrite
        self._queue: "queue.Queue" = queue.Queue(maxsize=o.queue)
        self.written = 0
        self.dropped = 0
        self.preview_frames = 0
        self.preview_skipped = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self.failure: Optional[str] = None  # set once when a write fails; the recorder is stopped
        self.lost = 0  # frames offered or queued after the failure, not written
        self._thread: Optional[threading.Thread] = None
        self._index_file: Optional[io.FileIO] = None
        self._streams: Dict[str, io.FileIO] = {}
        self._base: Dict[str, int] = {}  # kind -> stream offset where its current file (segment) starts
        self.segments = 0  # stream or preview files started because the previous one reached the largest file allowed
        self._good: Dict[str, int] = {}  # file name -> size after the last complete frame
        self._frame_pngs: List[Path] = []  # the PNGs of the frame being written (format=png)
        self._info: Dict[str, object] = {}  # recording.json
        self._video: Optional[cv2.VideoWriter] = None
        self._video_size: Optional[Tuple[int, int]] = None
        self._preview_limit: Optional[int] = None  # largest file this process may write there (bytes)
        self._preview_name = PREVIEW_NAME  # the preview file being written (preview.<P>.avi after a roll)
        self._preview_start = 0  # preview frames written before that file
        self._closed = False

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> "Recorder":
        """Create the folder, ``recording.json`` and the index, and start the writer thread.

        Returns the recorder (a second call does nothing).

        Raises:
            OutputError: the path exists and is not a folder (a file, ``/dev/full``), the folder
                already holds a recording (without ``overwrite=1``) or cannot be written.
        """
        if self._thread is not None:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"cannot write a recording to {self.path}: it exists and is not a folder (a "
                              f"recording is a folder of frames and an index); give a new folder's path")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            refuse_links(self.path, (INDEX_NAME, INFO_NAME, INFO_NAME + ".tmp", PREVIEW_NAME, "raw.u16", "restored.u16",
                                     "raw", "restored"), "a recording")
            index_path = self.path / INDEX_NAME
            if index_path.exists() and not self.overwrite:
                raise OutputError(
                    f"{self.path} already holds a recording ({INDEX_NAME}); pick a new folder "
                    f"or add ?overwrite=1")
            if index_path.exists():
                self._remove_old_recording()
            self._info = {
                "recorder": "tir-edge",
                "format": self.format,
                "dtype": "uint16 little-endian (<u2), sensor counts, row-major H x W",
                "what": self.what,
                "index": INDEX_NAME,
                "preview": PREVIEW_NAME if self.preview else None,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "stats_schema_version": STATS_SCHEMA_VERSION,
                "stats": None,  # the run's final stats snapshot, written at close
            }
            _write_file(self.path / INFO_NAME, json.dumps(self._info, indent=2).encode())
            # unbuffered: what the OS accepted is on disk, nothing waits in a Python buffer that a
            # later flush could write after a truncation
            self._index_file = create_file(index_path)
            _write_all(self._index_file, _csv_line(INDEX_FIELDS))
            self._good[INDEX_NAME] = self._index_file.tell()
        except OSError as exc:
            raise OutputError(
                f"cannot write a recording to {self.path}: {exc.strerror or exc}; record to a folder "
                "this user can write on a writable disk") from exc
        self._thread = threading.Thread(target=self._run, name=f"recorder:{self.path.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def _remove_old_recording(self) -> None:
        """overwrite=1: delete the previous recording's own files (nothing else)."""
        for kind in ("raw", "restored"):
            for png in (self.path / kind).glob("*.png*"):
                png.unlink()
            for folder in (self.path / kind).glob("*"):   # the PNG sub-folders (:data:`PNG_FOLDER_FRAMES`)
                if folder.name.isdigit() and folder.is_dir() and not folder.is_symlink():
                    for png in folder.glob("*.png*"):
                        png.unlink()
                    try:
                        folder.rmdir()
                    except OSError:
                        pass   # something else is in it: left as it was
            for _, segment in stream_segments(self.path, kind):
                segment.unlink(missing_ok=True)
        for name in (INDEX_NAME, INFO_NAME, PREVIEW_NAME):
            (self.path / name).unlink(missing_ok=True)
        for video in self.path.glob(f"{Path(PREVIEW_NAME).stem}.*{Path(PREVIEW_NAME).suffix}"):
            if video.name[len(Path(PREVIEW_NAME).stem) + 1:-len(Path(PREVIEW_NAME).suffix)].isdigit():
                video.unlink()

    def wants_display(self) -> bool:
        """True only with the preview on (the side-by-side view feeds preview.avi)."""
        return self.preview  # the side-by-side display view feeds preview.avi only

    def write(self, frame: Frame) -> None:
        """Queue a private copy of the frame (raw and restored (H, W) uint16 counts, display views
        when previewing); drop and count when the queue is full, count as ``lost`` once the recorder
        has failed.
        """
        if self._closed or self._thread is None:
            return
        if self.failure is not None:
            self.lost += 1
            return
        copy = Frame(raw=frame.raw.copy(), seq=frame.seq, t_capture=frame.t_capture,
                     meta={"t_wall": time.time()})
        if frame.restored is not None:
            copy.restored = frame.restored.copy()
        if self.preview:
            copy.display = {k: v.copy() for k, v in frame.display.items()}
        try:
            self._queue.put_nowait(copy)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Write everything queued, then close the streams, the index and the preview."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._close_files()
        self._write_final_stats()

    def _write_final_stats(self) -> None:
        """recording.json gets the run's final stats (the stats schema's JSON form, from the
        pipeline through :meth:`attach`): fps, drops, latency and this recorder's counters as
        the recording ended. Written beside and renamed into place; a failure is logged, the
        recording itself stays whole."""
        if self.stats_provider is None or not self._info:
            return
        target = self.path / INFO_NAME
        try:
            self._info["stats"] = self.stats_provider().to_dict()
            temporary = target.with_name(INFO_NAME + ".tmp")
            temporary.unlink(missing_ok=True)
            _write_file(temporary, json.dumps(self._info, indent=2).encode(), exclusive=True)
            os.replace(temporary, target)
        except Exception as exc:  # close() must finish; the frames are already safe
            log.warning("could not add the final stats to %s: %s: %s", target, type(exc).__name__, exc)

    def _close_files(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
            preview = self.path / self._preview_name
            if self.failure is not None and preview.exists() and preview.stat().st_size == 0:
                preview.unlink()  # the disk was full before the first preview byte: no empty file
        for stream in list(self._streams.values()) + [self._index_file]:
            if stream is not None:
                try:
                    stream.close()
                except OSError as exc:  # unbuffered: nothing is lost here
                    log.warning("closing %s: %s", stream.name, exc)
        self._streams = {}
        self._index_file = None

    def stats(self) -> Dict[str, object]:
        """written, dropped, lost, queued, preview_frames, preview_skipped, errors, last_error, failure,
        segments (stream and preview files started at the largest file allowed), path.
        """
        return {"written": self.written, "dropped": self.dropped, "lost": self.lost, "segments": self.segments,
                "queued": self._queue.qsize(), "preview_frames": self.preview_frames,
                "preview_skipped": self.preview_skipped, "errors": self.errors,
                "last_error": self.last_error, "failure": self.failure, "path": str(self.path)}

    # -- writer thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _STOP:
                return
            if self.failure is not None:
                self.lost += 1
                continue
            try:
                self._write_frame(frame)
                self.written += 1
            except OSError as exc:
                self._fail(frame, exc)
            except (ValueError, cv2.error) as exc:  # this frame only (bad shape, encoder)
                self.errors += 1
                self.last_error = f"frame {frame.seq}: {exc}"

    def _fail(self, frame: Frame, exc: OSError) -> None:
        """A write failed: cut the files back to the last complete frame and stop recording."""
        self.errors += 1
        self.lost += 1
        name = errno.errorcode.get(exc.errno, "") if exc.errno else ""
        reason = f"{exc.strerror or exc}" + (f" ({name})" if name else "")
        self.last_error = f"frame {frame.seq}: {reason}"
        for kind, stream in self._streams.items():
            self._truncate(stream, self._good.get(f"{kind}.u16", 0))
        if self._index_file is not None:
            self._truncate(self._index_file, self._good[INDEX_NAME])
        for pattern in ("*/*.png.part", "*/*/*.png.part"):
            for partial in self.path.glob(pattern):
                partial.unlink(missing_ok=True)
        for png in self._frame_pngs:  # the failed frame's complete PNGs: not indexed
            png.unlink(missing_ok=True)
        line = (f"recording to {self.path} stopped at frame {frame.seq}: {reason}; "
                f"frames kept, readable: {self.written}" + _advice(self.path, exc, self.format == "png"))
        log.error("%s", line)
        self.fail(line)  # failure set, the pipeline told at once (tir run stops and exits 3)
        self._close_files()

    @staticmethod
    def _truncate(stream: io.FileIO, size: int) -> None:
        try:
            os.ftruncate(stream.fileno(), size)
            stream.seek(size)
        except OSError as exc:
            log.error("cannot cut %s back to %d bytes: %s", stream.name, size, exc)

    def _kinds(self) -> List[str]:
        return ["raw", "restored"] if self.what == "both" else [self.what]

    def _write_frame(self, frame: Frame) -> None:
        where = {"raw": "", "restored": ""}
        self._frame_pngs = []
        for kind in self._kinds():
            counts = frame.restored if kind == "restored" else frame.raw
            if counts is None:
                kind, counts = "raw", frame.raw  # no model ran: keep the raw frame, as raw
            if counts.dtype != np.uint16 or counts.ndim != 2:
                raise ValueError(f"expected a 2-D uint16 frame, got {counts.dtype} {counts.shape}")
            if self.format == "png":
                where[kind] = self._write_png(kind, frame.seq, counts)
            else:
                where[kind] = str(self._append(kind, counts))
        in_preview = self.preview and self._queue.qsize() <= self._queue.maxsize // 2
        if in_preview:
            in_preview = self._write_preview(side_by_side(frame))
        elif self.preview:
            self.preview_skipped += 1
        h, w = frame.raw.shape
        _write_all(self._index_file, _csv_line([frame.seq, f"{frame.t_capture:.6f}", f"{frame.meta['t_wall']:.6f}",
                                                w, h, where["raw"], where["restored"], int(in_preview)]))
        # the frame is complete (bytes, then its index line): this is where a failure cuts back to
        self._good[INDEX_NAME] = self._index_file.tell()
        for kind, stream in self._streams.items():
            self._good[f"{kind}.u16"] = stream.tell()

    def _append(self, kind: str, counts: np.ndarray) -> int:
        """Append the frame to ``kind``'s stream (``<kind>.u16``, then its segments); returns its
        byte offset in the whole stream. A write refused for the file's size (EFBIG) is cut off
        and made again in a new segment (:meth:`_next_segment`).

        Raises:
            OSError: the write failed otherwise, or the frame does not fit in a new, empty file.
        """
        stream = self._streams.get(kind)
        if stream is None:
            stream = self._streams[kind] = create_file(self.path / f"{kind}.u16", append=True)
            self._good[f"{kind}.u16"] = stream.tell()
            self._base[kind] = 0
        data = np.ascontiguousarray(counts, dtype=STREAM_DTYPE).tobytes()
        offset = stream.tell()
        try:
            _write_all(stream, data)
        except OSError as exc:
            if exc.errno != errno.EFBIG or offset == 0:  # an empty file that cannot hold one frame: fail
                raise
            stream = self._next_segment(kind, stream, offset)
            offset = 0
            _write_all(stream, data)
        return self._base[kind] + offset

    def _next_segment(self, kind: str, stream: io.FileIO, size: int) -> io.FileIO:
        """``stream`` refused a write at ``size`` bytes for the file's size (EFBIG): cut the part
        of the frame written off it, close it, and open ``<kind>.<B>.u16`` (B: the stream offset
        where it starts), logged and counted in ``segments``.

        Raises:
            OSError: the cut or the new file failed (the recorder then stops: :meth:`_fail`).
        """
        os.ftruncate(stream.fileno(), size)
        full = stream.name
        stream.close()
        start = self._base[kind] + size
        name = f"{kind}.{start}.u16"
        self._streams[kind] = stream = create_file(self.path / name, exclusive=True)
        self._base[kind] = start
        self._good[f"{kind}.u16"] = 0
        self.segments += 1
        log.warning("%s reached the largest file allowed there at %d bytes (FAT32: 4 GiB; ulimit -f); the "
                    "recording goes on in %s (a new file; replay and read_recording join them)",
                    full, size, name)
        return stream

    def _write_png(self, kind: str, seq: int, counts: np.ndarray) -> str:
        """Write one frame's PNG as ``<kind>/<seq // PNG_FOLDER_FRAMES>/<seq>.png`` (a temporary
        name renamed into place); returns that name. Raises OSError (the recorder stops: :meth:`_fail`)
        or ValueError (the encoder refused the frame)."""
        folder = f"{kind}/{seq // PNG_FOLDER_FRAMES:05d}"
        name = f"{folder}/{seq:09d}.png"
        for part in (self.path / kind, self.path / folder):
            try:
                part.mkdir()
            except FileExistsError:
                if part.is_symlink() or not part.is_dir():   # made by someone else since the start
                    raise OSError(errno.EEXIST, f"{part} exists and is not a folder the recorder made "
                                  "(a link or a file): no frame is written through it") from None
        ok, png = cv2.imencode(".png", counts, [cv2.IMWRITE_PNG_COMPRESSION, self.compression])
        if not ok:
            raise ValueError(f"PNG encoding failed for {name}")
        partial = self.path / (name + ".part")
        try:
            partial.unlink(missing_ok=True)  # a crashed run's; a link put there since is refused below
            with create_file(partial, exclusive=True) as f:
                _write_all(f, png.tobytes())
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, self.path / name)
        self._frame_pngs.append(self.path / name)
        return name

    def _write_preview(self, image: np.ndarray) -> bool:
        if self._video is not None and self._preview_limit is not None:
            size = (self.path / self._preview_name).stat().st_size
            in_file = self.preview_frames - self._preview_start
            if size + PREVIEW_HEADROOM + AVI_INDEX_BYTES * in_file > self._preview_limit:
                if in_file <= 1:  # a new file at the limit after one frame: another would be too (no endless files)
                    self._stop_preview(size)
                    return False
                self._next_preview(size)
        if self._video is None:
            h, w = image.shape[:2]
            if self._preview_start:
                name = f"{Path(PREVIEW_NAME).stem}.{self._preview_start}{Path(PREVIEW_NAME).suffix}"
            else:
                name = PREVIEW_NAME
            if (self.path / name).is_symlink():  # VideoWriter opens by name and would follow it (create_file)
                (self.path / name).unlink()
            video = cv2.VideoWriter(str(self.path / name),
                                    cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
            if not video.isOpened():
                self.preview = False
                self.errors += 1
                self.last_error = (f"cannot open {self.path / name} for an MJPEG video; "
                                   f"recording the 16-bit frames only")
                return False
            self._video, self._video_size, self._preview_name = video, (w, h), name
            self._preview_limit = file_size_limit(self.path)
        if (image.shape[1], image.shape[0]) != self._video_size:
            image = cv2.resize(image, self._video_size, interpolation=cv2.INTER_AREA)
        self._video.write(image)
        self.preview_frames += 1
        return True

    def _next_preview(self, size: int) -> None:
        """The preview file is near the largest file allowed: close it while the AVI can still be
        finalised (its index written); the next frame opens ``preview.<P>.avi``, P the number of
        preview frames before it (the index's ``preview`` column counts across the files in order).
        Logged, and counted in ``segments``."""
        self._video.release()
        self._video = None
        self.segments += 1
        log.warning("%s closed after %d frames at %d bytes, near the largest file allowed there (%d bytes: "
                    "FAT32 4 GiB, ulimit -f); the preview goes on in %s.%d%s", self.path / self._preview_name,
                    self.preview_frames - self._preview_start, size, self._preview_limit, Path(PREVIEW_NAME).stem,
                    self.preview_frames, Path(PREVIEW_NAME).suffix)
        self._preview_start = self.preview_frames

    def _stop_preview(self, size: int) -> None:
        """The preview is near the largest file allowed: close it while the AVI can still be
        finalised (its index written), and record frames only. OpenCV's VideoWriter reports no
        write error: past the limit it went on counting frames into a cut, unplayable file."""
        self._video.release()
        self._video = None
        self.preview = False
        self.errors += 1
        self.last_error = (f"{self.path / self._preview_name} stopped after {self.preview_frames} frames at {size} bytes: "
                           f"the largest file allowed here is {self._preview_limit} bytes (ulimit -f, or the "
                           "filesystem's limit: FAT32 4 GiB); the 16-bit frames go on being recorded")
        log.warning("%s", self.last_error)


#: bytes kept free below the file-size limit when the preview is written: FFmpeg's write buffer
#: (256 KiB chunks observed) plus a frame and the AVI header, with margin
PREVIEW_HEADROOM = 2 << 20
AVI_INDEX_BYTES = 16  # one idx1 entry per frame, written when the AVI is closed (AVI RIFF spec)


def _advice(folder: Path, exc: OSError, creates_files: bool = False) -> str:
    """What the user can do about a write that failed with ``exc`` in ``folder`` ("" if nothing
    is known). ENOSPC where the recorder creates a file per frame (``creates_files``: format=png)
    while the disk still has room is most likely a full folder (vfat answers ENOSPC when a folder
    has no free entry: FAT32 holds 65,534), said beside the full-disk advice; EMLINK: too many
    links or sub-folders; EFBIG: the largest file allowed."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text = "; free space on that disk or record to another one"
        if exc.errno == errno.ENOSPC and creates_files:
            try:
                st = os.statvfs(folder)
                free = st.f_bavail * st.f_frsize
            except OSError:
                free = 0
            if free > (64 << 20):
                text += (f" (the disk still has {free / 2**20:.0f} MiB free: the folder may hold as many entries as "
                         "its filesystem allows, FAT32: 65,534 a folder, fewer with long names)")
        return text
    if exc.errno == errno.EMLINK:
        return "; the folder holds as many sub-folders or links as its filesystem allows; record to another folder"
    if exc.errno == errno.EFBIG:
        return "; a file reached the largest size allowed there (ulimit -f, or the filesystem's)"
    return ""


def file_size_limit(folder: Path) -> Optional[int]:
    """The largest file in bytes this process may write in ``folder``: the smaller of the soft
    RLIMIT_FSIZE (``ulimit -f``) and the filesystem's (``pathconf`` PC_FILESIZEBITS: 32 on
    FAT32), None when neither limits it."""
    import resource

    limits = []
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft != resource.RLIM_INFINITY:
        limits.append(int(soft))
    try:
        bits = os.pathconf(folder, "PC_FILESIZEBITS")
    except (OSError, ValueError):
        bits = 64
    if 0 < bits < 64:
        limits.append(2 ** bits - 1)
    return min(limits) if limits else None


def stream_segments(folder: Path, kind: str) -> List[Tuple[int, Path]]:
    """The files of one stream of a u16 recording, in order: ``(start, path)`` with ``start`` the
    stream byte offset of the file's first byte: ``<kind>.u16`` (0, when it exists), then each
    ``<kind>.<B>.u16`` segment (B decimal digits) the recorder started at the largest file allowed.

    Args:
        folder: the recording folder.
        kind: ``raw`` or ``restored``.

    Returns:
        The files sorted by start (empty when the stream has none).
    """
    found = []
    if (folder / f"{kind}.u16").is_file():
        found.append((0, folder / f"{kind}.u16"))
    prefix = f"{kind}."
    for path in folder.glob(f"{kind}.*.u16"):
        middle = path.name[len(prefix):-len(".u16")]
        if middle.isdigit() and path.is_file():
            found.append((int(middle), path))
    return sorted(found)


def segment_of(segments: List[Tuple[int, Path]], offset: int, kind: str, folder: Path) -> Tuple[Path, int]:
    """The file of a stream that holds byte ``offset`` of it, and the offset in that file.

    Args:
        segments: :func:`stream_segments` of the stream.
        offset: a byte offset into the whole stream (an index row's ``raw``/``restored``).
        kind: the stream, for the message.
        folder: the recording, for the message.

    Returns:
        (the file, the offset in it): the last file starting at or before ``offset``.

    Raises:
        FileNotFoundError: the stream has no file at or before ``offset``.
    """
    place = None
    for start, path in segments:
        if start <= offset:
            place = (path, offset - start)
    if place is None:
        raise FileNotFoundError(f"{folder / (kind + '.u16')} does not exist (the recording's {kind} stream)")
    return place


def _csv_line(fields) -> bytes:
    text = io.StringIO()
    csv.writer(text).writerow(fields)
    return text.getvalue().encode("utf-8")


def _write_file(path: Path, data: bytes, exclusive: bool = False) -> None:
    """Write ``data`` as the whole of ``path``, never through a link (:func:`create_file`; the
    stream writes go through :func:`_write_all`). OSError propagates."""
    with create_file(path, exclusive=exclusive) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]


def _write_all(stream: io.FileIO, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered file (a raw write may take only part of it);
    OSError (ENOSPC, EIO, ...) propagates."""
    view = memoryview(data)
    while view:
        n = stream.write(view)
        if n is None or n <= 0:
            raise OSError(errno.EIO, f"write to {stream.name} accepted no bytes")
        view = view[n:]


def _read_index(path: Path) -> List[Dict[str, str]]:
    index_path = path / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{path} is not a recording: it has no {INDEX_NAME}")
    rows = []
    with open(index_path, newline="") as f:
        for row in csv.DictReader(f):
            # A line cut short by a crash lacks fields.
            if None in row.values() or not row.get("seq", "").isdigit():
                continue
            rows.append(row)
    return rows


MAX_SIDE = 65535  # px: a frame side the index may name (a uint16 counts frame no camera exceeds)


def frame_place(folder: Path, row: Dict[str, str], stream: str) -> Tuple[Optional[Path], int, int, int]:
    """Where one index row's ``stream`` (raw/restored) image lies, checked against what the
    recorder writes (:meth:`Recorder._write_frame`): ``(png path, 0, h, w)`` for a PNG
    recording, ``(None, byte offset, h, w)`` for a ``<stream>.u16`` one.

    A tampered or damaged index could name a PNG outside the folder (``../../x.png``: any image
    on the machine read as a frame) or hold text, a negative number or a huge side where a
    count belongs; such a row is refused with the reason.

    Args:
        folder: the recording folder.
        row: one row of :data:`INDEX_NAME` (fields as str).
        stream: ``raw`` or ``restored``; the row must name an image of it.

    Returns:
        (PNG path or None, offset in bytes into ``<stream>.u16`` (0 for a PNG), height px, width px).

    Raises:
        ValueError: a width/height that is not a whole number in 1..:data:`MAX_SIDE`, an offset
            that is not a whole number >= 0, or a PNG name other than ``<stream>/<digits>/<digits>.png``
            (or, as written before session 19, ``<stream>/<digits>.png``).
    """
    sides = []
    for key in ("height", "width"):
        text = (row.get(key) or "").strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_SIDE:
            raise ValueError(f"{key} {text[:20]!r} is not a frame side in px (1..{MAX_SIDE})")
        sides.append(int(text))
    h, w = sides
    where = (row.get(stream) or "").strip()
    if where.endswith(".png"):
        parts = where.split("/")
        # <stream>/<F>/<seq>.png, F = seq // PNG_FOLDER_FRAMES; <stream>/<seq>.png before session 19
        if parts[0] != stream or len(parts) not in (2, 3) or not parts[-1][:-4].isdigit() \
                or (len(parts) == 3 and not parts[1].isdigit()):
            raise ValueError(f"{stream} image {where[:60]!r} is not one the recorder writes "
                             f"({stream}/<folder>/<seq>.png inside the recording)")
        return folder.joinpath(*parts), 0, h, w
    if not where.isdigit():
        raise ValueError(f"{stream} offset {where[:20]!r} is not a byte offset into {stream}.u16")
    return None, int(where), h, w


def iter_recording(path, what: str = "auto") -> Iterator[Tuple[np.ndarray, Dict[str, str]]]:
    """Yield (frame, index row) for each recorded frame, in order.

    ``what``: ``raw``, ``restored``, or ``auto`` (restored when every frame has it). Frames are
    (H, W) uint16 counts; rows are the index CSV's fields as str.

    Raises:
        FileNotFoundError: ``path`` has no index, or a listed PNG is unreadable.
        ValueError: ``what`` is not raw/restored/auto, a frame lacks that image, an index row
            names it wrongly (:func:`frame_place`), or the ``.u16`` stream ends inside a frame.
    """
    path = Path(path)
    rows = _read_index(path)
    if what == "auto":
        what = "restored" if rows and all(r["restored"] for r in rows) else "raw"
    if what not in ("raw", "restored"):
        raise ValueError(f"what={what!r}: read 'raw', 'restored' or 'auto'")
    stream = segments = None
    try:
        for row in rows:
            where = row[what]
            if not where:
                have = [k for k in ("raw", "restored") if row[k]]
                raise ValueError(f"frame {row['seq']} in {path} has no {what} image; it has {have}")
            try:
                png, offset, h, w = frame_place(path, row, what)
            except ValueError as exc:
                raise ValueError(f"frame {row['seq']} in {path / INDEX_NAME}: {exc}") from None
            if png is not None:
                from ..regular import imread_unchanged

                counts = imread_unchanged(png)   # never blocks on a FIFO
                if counts is None:
                    raise FileNotFoundError(
                        f"{png} is listed in {INDEX_NAME} but unreadable")
            else:
                if segments is None:
                    segments = stream_segments(path, what)
                name, local = segment_of(segments, offset, what, path)
                if stream is None or stream.name != str(name):
                    if stream is not None:
                        stream.close()
                    from ..regular import open_regular

                    stream = open_regular(str(name))   # a FIFO in its place: an error, never a hang
                stream.seek(local)
                data = stream.read(h * w * STREAM_DTYPE.itemsize)
                if len(data) != h * w * STREAM_DTYPE.itemsize:
                    raise ValueError(f"{name} ends inside frame {row['seq']}")
                counts = np.frombuffer(data, STREAM_DTYPE).reshape(h, w).astype(np.uint16)
            yield counts, row
    finally:
        if stream is not None:
            stream.close()


def read_recording(path, what: str = "auto") -> Tuple[np.ndarray, List[Dict[str, str]]]:
    """All frames as an N×H×W uint16 array, and the index rows (seq, t_capture, ...)."""
    frames, index = [], []
    for counts, row in iter_recording(path, what):
        frames.append(counts)
        index.append(row)
    if not frames:
        return np.zeros((0, 0, 0), np.uint16), index
    return np.stack(frames), index
