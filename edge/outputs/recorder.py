"""Recorder output (``file:///path/to/recording``): lossless 16-bit frames plus a preview video.

Layout of a recording folder::

    recording.json     what was recorded, frame size, start time
    frames.csv         one line per frame: seq, t_capture, t_wall, raw file, restored file
    raw/000000042.png  16-bit grayscale PNG of frame.raw        (what=raw|both)
    restored/...png    16-bit grayscale PNG of frame.restored   (what=restored|both)
    preview.avi        8-bit MJPEG of the side-by-side display view (preview=0 to skip)

Crash-safe: each PNG is written under a temporary name and renamed into place, and its
index line is appended (and flushed) only afterwards, so a recording cut by Ctrl-C or a
kill still reads back every indexed frame, bit-exact. Writing runs in its own thread
behind a bounded queue; when the disk is slower than the camera, frames are dropped
and counted, the pipeline never waits. Options: ``what`` (restored|raw|both, default
restored), ``preview`` (1), ``fps`` (preview rate, 30), ``queue`` (64), ``overwrite`` (0),
``compression`` (PNG level 0-9, 1).
"""
from __future__ import annotations

import csv
import json
import os
import queue
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from ..frame import Frame
from ..uri import URI
from .base import Output, OutputError
from .jpeg import side_by_side

INDEX_NAME = "frames.csv"
INFO_NAME = "recording.json"
PREVIEW_NAME = "preview.avi"
INDEX_FIELDS = ["seq", "t_capture", "t_wall", "raw", "restored"]
WHAT_CHOICES = ("restored", "raw", "both")
_STOP = object()


class Recorder(Output):
    """Writes frames to a recording folder from a background thread."""

    def __init__(self, uri: URI):
        super().__init__(uri)
        if not uri.path:
            raise OutputError(f"{uri.text!r} names no folder; use file:///path/to/recording")
        self.path = Path(uri.path)
        self.what = uri.get("what", "restored")
        if self.what not in WHAT_CHOICES:
            raise OutputError(f"what={self.what!r} is not one of {', '.join(WHAT_CHOICES)}")
        self.preview = uri.get("preview", True, bool)
        self.fps = uri.get("fps", 30.0, float)
        self.compression = max(0, min(9, uri.get("compression", 1, int)))
        self.overwrite = uri.get("overwrite", False, bool)
        self._queue: "queue.Queue" = queue.Queue(maxsize=max(1, uri.get("queue", 64, int)))
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error: Optional[str] = None
        self._thread: Optional[threading.Thread] = None
        self._index_file = None
        self._index: Optional[csv.writer] = None
        self._video: Optional[cv2.VideoWriter] = None
        self._video_size: Optional[Tuple[int, int]] = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> "Recorder":
        if self._thread is not None:
            return self
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            index_path = self.path / INDEX_NAME
            if index_path.exists() and not self.overwrite:
                raise OutputError(
                    f"{self.path} already holds a recording ({INDEX_NAME}); pick a new folder "
                    f"or add ?overwrite=1")
            if index_path.exists():
                self._remove_old_recording()
            for sub in self._subfolders():
                (self.path / sub).mkdir(exist_ok=True)
            (self.path / INFO_NAME).write_text(json.dumps({
                "format": "tir-edge recording 1",
                "what": self.what,
                "frames": "16-bit grayscale PNG, sensor counts",
                "preview": PREVIEW_NAME if self.preview else None,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=2))
            self._index_file = open(index_path, "w", newline="")
        except OSError as exc:
            raise OutputError(
                f"cannot write a recording to {self.path}: {exc.strerror or exc}") from exc
        self._index = csv.writer(self._index_file)
        self._index.writerow(INDEX_FIELDS)
        self._index_file.flush()
        self._thread = threading.Thread(target=self._run, name=f"recorder:{self.path.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def _remove_old_recording(self) -> None:
        """overwrite=1: delete the previous recording's own files (nothing else)."""
        for sub in ("raw", "restored"):
            for png in (self.path / sub).glob("*.png*"):
                png.unlink()
        for name in (INDEX_NAME, INFO_NAME, PREVIEW_NAME):
            (self.path / name).unlink(missing_ok=True)

    def _subfolders(self) -> List[str]:
        return ["raw", "restored"] if self.what == "both" else [self.what]

    def write(self, frame: Frame) -> None:
        """Queue a private copy of the frame; drop and count when the queue is full."""
        if self._closed or self._thread is None:
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
        """Write everything queued, then close the index and the preview video."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._index_file is not None:
            self._index_file.close()
            self._index_file = None

    def stats(self) -> Dict[str, object]:
        return {"written": self.written, "dropped": self.dropped, "queued": self._queue.qsize(),
                "errors": self.errors, "last_error": self.last_error, "path": str(self.path)}

    # -- writer thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            frame = self._queue.get()
            if frame is _STOP:
                return
            try:
                self._write_frame(frame)
                self.written += 1
            except (OSError, ValueError, cv2.error) as exc:
                self.errors += 1
                self.last_error = f"frame {frame.seq}: {exc}"

    def _write_frame(self, frame: Frame) -> None:
        files = {"raw": "", "restored": ""}
        for what in self._subfolders():
            counts = frame.restored if what == "restored" else frame.raw
            if counts is None:
                # No model ran: keep the raw frame, recorded honestly as raw.
                what, counts = "raw", frame.raw
                (self.path / "raw").mkdir(exist_ok=True)
            files[what] = f"{what}/{frame.seq:09d}.png"
            self._write_png(self.path / files[what], counts)
        self._index.writerow([frame.seq, f"{frame.t_capture:.6f}", f"{frame.meta['t_wall']:.6f}",
                              files["raw"], files["restored"]])
        self._index_file.flush()
        if self.preview:
            self._write_preview(side_by_side(frame))

    def _write_png(self, target: Path, counts: np.ndarray) -> None:
        if counts.dtype != np.uint16 or counts.ndim != 2:
            raise ValueError(f"expected a 2-D uint16 frame, got {counts.dtype} {counts.shape}")
        ok, png = cv2.imencode(".png", counts, [cv2.IMWRITE_PNG_COMPRESSION, self.compression])
        if not ok:
            raise ValueError(f"PNG encoding failed for {target.name}")
        partial = target.with_suffix(".png.part")
        with open(partial, "wb") as f:
            f.write(png.tobytes())
        os.replace(partial, target)

    def _write_preview(self, image: np.ndarray) -> None:
        if self._video is None:
            h, w = image.shape[:2]
            video = cv2.VideoWriter(str(self.path / PREVIEW_NAME),
                                    cv2.VideoWriter_fourcc(*"MJPG"), self.fps, (w, h))
            if not video.isOpened():
                self.preview = False
                self.errors += 1
                self.last_error = (f"cannot open {self.path / PREVIEW_NAME} for an MJPEG video; "
                                   f"recording the 16-bit frames only")
                return
            self._video, self._video_size = video, (w, h)
        if (image.shape[1], image.shape[0]) != self._video_size:
            image = cv2.resize(image, self._video_size, interpolation=cv2.INTER_AREA)
        self._video.write(image)


def _read_index(path: Path) -> List[Dict[str, str]]:
    index_path = path / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"{path} is not a recording: it has no {INDEX_NAME}")
    rows = []
    with open(index_path, newline="") as f:
        for row in csv.DictReader(f):
            # A line cut short by a crash lacks fields or names a file never renamed in.
            if None in row.values() or not row.get("seq", "").isdigit():
                continue
            rows.append(row)
    return rows


def iter_recording(path, what: str = "auto") -> Iterator[Tuple[np.ndarray, Dict[str, str]]]:
    """Yield (uint16 frame, index row) for each recorded frame, in order."""
    path = Path(path)
    rows = _read_index(path)
    if what == "auto":
        what = "restored" if rows and all(r["restored"] for r in rows) else "raw"
    if what not in ("raw", "restored"):
        raise ValueError(f"what={what!r}: read 'raw', 'restored' or 'auto'")
    for row in rows:
        name = row[what]
        if not name:
            have = [k for k in ("raw", "restored") if row[k]]
            raise ValueError(f"frame {row['seq']} in {path} has no {what} image; it has {have}")
        counts = cv2.imread(str(path / name), cv2.IMREAD_UNCHANGED)
        if counts is None:
            if row is rows[-1]:
                return  # the last frame of a killed recording
            raise FileNotFoundError(f"{path / name} is listed in {INDEX_NAME} but unreadable")
        yield counts, row


def read_recording(path, what: str = "auto") -> Tuple[np.ndarray, List[Dict[str, str]]]:
    """All frames as an N×H×W uint16 array, and the index rows (seq, t_capture, ...)."""
    frames, index = [], []
    for counts, row in iter_recording(path, what):
        frames.append(counts)
        index.append(row)
    if not frames:
        return np.zeros((0, 0, 0), np.uint16), index
    return np.stack(frames), index
