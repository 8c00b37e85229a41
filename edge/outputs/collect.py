"""``collect://DIR``: keep the frames the router calls unknown, for ``tir discover``.

The open-world loop's first step (issue 13 item 1). ``tir run --collect DIR`` adds this output;
nothing is collected without it. A frame is offered when the restorer's router ran on it
(``frame.meta["router"]``, set by the infer stage: verdict, nearest class, cosine similarity,
softmax confidence and the router embedding) and the verdict was ``unknown``. Each kept frame
becomes one entry of a bounded on-disk ring:

- ``DIR/frames/<id>.png``: the frame's raw counts, lossless 16-bit PNG (uint16 H×W, exactly
  the counts the source delivered);
- ``DIR/index.json``: ``{"format": 1, "entries": [...], "counts": {...}}``, rewritten
  atomically (temporary file + ``os.replace``) after every change. An entry holds ``id``,
  ``file``, ``time`` (Unix s), ``seq``, ``verdict``, ``nearest``, ``similarity``,
  ``confidence``, ``embedding`` (the router's unit embedding, D floats), ``shape``, ``bits``,
  ``source_bits``, ``bytes``, ``op_range`` (the counts <-> [0, 1] map the degradation ops work
  in, when the source states one: the virtual camera's ``meta["degrade_range"]``; an 8-bit
  source's full scale; else absent and ``tir discover`` estimates it) and ``label`` (the
  source's own ``meta["degradation"]`` name when it has one: used only to report cluster
  purity, never for clustering).

Limits (URI options, ``tir run --collect-*``): ``max_frames`` (default 500) and ``max_mb``
(default 256) bound the ring, the oldest entries are deleted first; ``rate`` (default 2 frames
per second) bounds the writes, frames over it are counted as ``rate_limited``; ``queue``
(default 8) bounds the frames waiting for the writer thread, overflow is counted as
``queue_full``. Raw counts are kept for every outcome (``counts``): ``seen`` (router
verdicts), ``unknown``, ``kept``, ``rate_limited``, ``queue_full``, ``evicted``,
``write_errors``. An existing ``index.json`` is continued (ids keep increasing), so several
runs can fill one folder.

``write`` only copies the frame and queues it: the PNG encoding and file I/O run on the
collector's own thread, never on the pipeline's.
"""
from __future__ import annotations

import errno
import json
import logging
import math
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional

import cv2
import numpy as np

from .. import jsontext
from ..frame import Frame
from ..registry import option
from ..uri import URI
from .base import Output, OutputError, create_file, refuse_links

log = logging.getLogger(__name__)

INDEX = "index.json"
FRAMES = "frames"
FORMAT = 1
DEFAULT_MAX_FRAMES = 500
DEFAULT_MAX_MB = 256.0
DEFAULT_RATE = 2.0
DEFAULT_QUEUE = 8
THUMBS = 6          # last thumbnails kept in memory for the page
THUMB_WIDTH = 160   # pixels
COUNT_KEYS = ("seen", "unknown", "kept", "rate_limited", "queue_full", "evicted", "write_errors")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_entry(entry) -> None:
    """Refuse an index entry the collector did not write: its ``file`` must be
    ``frames/<digits>.png`` (the name :meth:`Collector._store` gives), its ``id`` and ``bytes``
    whole numbers >= 0, its ``embedding`` null or a list of finite numbers. The collector deletes
    an evicted entry's file and ``tir discover`` reads it, so a tampered ``"file": "../x"`` would
    delete or read a file outside the folder; one NaN in an embedding made every statistic of
    ``tir discover``'s tree NaN (and its report.json not JSON).

    Raises:
        ValueError: saying which field is wrong.
    """
    if not isinstance(entry, dict):
        raise ValueError(f"entry {str(entry)[:40]!r} is not an object")
    name = entry.get("file")
    kind, sep, rest = name.partition("/") if isinstance(name, str) else ("", "", "")
    if kind != FRAMES or not sep or not rest.endswith(".png") or not rest[:-4].isdigit():
        raise ValueError(f"entry file {str(name)[:60]!r} is not {FRAMES}/<digits>.png inside the folder")
    if not _whole(entry.get("id")) or not _whole(entry.get("bytes", 0)):
        raise ValueError(f"entry {name}: id and bytes must be whole numbers >= 0")
    embedding = entry.get("embedding")
    if embedding is not None and not (isinstance(embedding, list) and all(_finite(v) for v in embedding)):
        raise ValueError(f"entry {name}: embedding must be null or a list of finite numbers, got "
                         f"{json.dumps(embedding)[:60]}")


def read_index(folder) -> Dict[str, Any]:
    """The collection's index (``DIR/index.json``) as a dict; an empty one when the folder has
    none. Raises ValueError naming the file when it is not a collection index, or when an entry
    is not one the collector writes (:func:`check_entry`: a file outside ``frames/``, ids or
    sizes that are not whole numbers)."""
    path = Path(folder) / INDEX
    if not path.is_file():
        return {"format": FORMAT, "entries": [], "counts": {k: 0 for k in COUNT_KEYS}, "next_id": 0}
    try:
        data = jsontext.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable collection index ({exc}); move it away or "
                         "collect into another folder") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), list):
        raise ValueError(f"{path}: not a tir collection index (format {FORMAT} with 'entries'); "
                         "collect into another folder")
    for entry in data["entries"]:
        try:
            check_entry(entry)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; not an index this collector wrote: move it away or collect "
                             "into another folder") from None
    if not isinstance(data.setdefault("counts", {}), dict) or not _whole(data.get("next_id", 0)):
        raise ValueError(f"{path}: counts must be an object and next_id a whole number; collect into another folder")
    for key in COUNT_KEYS:
        data["counts"].setdefault(key, 0)
    data.setdefault("next_id", 1 + max((int(e["id"]) for e in data["entries"]), default=-1))
    return data


def _write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file ``path``, never through a link: whatever is at the name (a
    crashed run's leftover, or a link another user put there) is removed first, and the file is
    created exclusively (:func:`tir.edge.outputs.base.create_file`). OSError propagates."""
    path.unlink(missing_ok=True)
    with create_file(path, exclusive=True) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]


def write_json_atomic(path: Path, data: Any, indent: int = 1) -> None:
    """Write JSON (``indent``, a final newline) to ``path`` through a temporary file beside it and
    ``os.replace`` (never half-written); a failed write removes the temporary file.

    Raises:
        OSError: the write or the rename failed (a full disk, a read-only folder); ``path`` is as
            it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_new_file(tmp, (json.dumps(data, indent=indent) + "\n").encode("utf-8"))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def load_frame(folder, entry: Dict[str, Any]) -> np.ndarray:
    """The raw counts (uint16 H×W) of one index entry. Raises ValueError when its file is gone
    or unreadable, or the entry is not one the collector writes (:func:`check_entry`)."""
    check_entry(entry)
    path = Path(folder) / entry["file"]
    from ..regular import imread_unchanged

    image = imread_unchanged(path)   # never blocks on a FIFO
    if image is None:
        raise ValueError(f"{path}: collected frame missing or unreadable; the index lists it "
                         "(re-run the collection or delete the entry)")
    return image


def thumbnail_jpeg(raw: np.ndarray, width: int = THUMB_WIDTH) -> bytes:
    """A small 8-bit preview of raw counts: 1/99 % percentile stretch, JPEG quality 80.

    Args:
        raw: (H, W) counts (uint16, any real dtype works).
        width: the largest preview width in pixels (narrower frames keep their size).

    Returns:
        The JPEG bytes (b"" when OpenCV fails to encode).
    """
    x = raw.astype(np.float32)
    lo, hi = np.percentile(x[::2, ::2], (1, 99))
    grey = np.clip((x - lo) * (255.0 / max(float(hi - lo), 1.0)), 0, 255).astype(np.uint8)
    h, w = grey.shape
    if w > width:
        grey = cv2.resize(grey, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", grey, [int(cv2.IMWRITE_JPEG_QUALITY), 80])
    return bytes(buf) if ok else b""


def op_range_of(meta: Dict[str, Any]) -> Optional[List[float]]:
    """The counts <-> [0, 1] map of the degradation ops, where the source states it: the virtual
    camera's ``degrade_range``; an 8-bit (display-referred) source's full scale."""
    rng = meta.get("degrade_range")
    if rng is not None:
        return [float(rng[0]), float(rng[1])]
    if meta.get("source_bits") == 8:
        bits = meta.get("bits", 8)
        shift = int(bits) - 8 if isinstance(bits, int) and 8 <= bits <= 16 else 0
        return [0.0, float(255 << shift)]
    return None


def _above_zero(value) -> Optional[str]:
    return None if value > 0 else "must be > 0"


@dataclass(frozen=True)
class CollectOptions:
    """URI options of ``collect://DIR`` (see the module docstring)."""

    max_frames: int = option(DEFAULT_MAX_FRAMES, "at most this many frames; the oldest go first", check=_above_zero)
    max_mb: float = option(DEFAULT_MAX_MB, "at most this many megabytes of frames", check=_above_zero)
    rate: float = option(DEFAULT_RATE, "at most this many frames kept per second", check=_above_zero)
    queue: int = option(DEFAULT_QUEUE, "frames buffered for the writer thread", check=_above_zero)


class Collector(Output):
    """The ``collect://DIR`` output (see the module docstring; options: :class:`CollectOptions`).

    Raises:
        OutputError: the URI names no folder.
        OutputOptionError: an unknown URI option or a bad value.
    """

    Options = CollectOptions

    def __init__(self, uri: URI):
        super().__init__(uri)
        folder = (uri.location or "") + (uri.path or "")  # collect://rel/dir: a relative folder
        if not folder:
            raise OutputError(f"{uri.text!r}: give a folder, e.g. collect:///data/unknown or tir run --collect DIR")
        self.folder = Path(folder).expanduser()
        self.max_frames = self.options.max_frames
        self.max_bytes = int(self.options.max_mb * 1e6)
        self.rate = self.options.rate
        queue_size = self.options.queue
        self._queue: "queue.Queue[Optional[tuple]]" = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._next_allowed = -1e18  # monotonic time the rate limit lets the next frame in
        self._index: Dict[str, Any] = {}
        self.thumbs: Deque[tuple] = deque(maxlen=THUMBS)  # (id, JPEG bytes)
        self.last_error: Optional[str] = None  # why the last frame could not be stored

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "Collector":
        """Create the folder and its index and start the writer thread; returns the collector.

        Raises:
            OutputError: the folder is not writable, or its index cannot be read.
        """
        if self._thread is not None:
            return self
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            refuse_links(self.folder, (FRAMES, INDEX, f".{INDEX}.tmp"), "the collection")
            (self.folder / FRAMES).mkdir(exist_ok=True)
            self._index = read_index(self.folder)
        except OSError as exc:
            raise OutputError(f"collect folder {self.folder}: {exc.strerror or exc}; pass a writable folder") from exc
        except ValueError as exc:
            raise OutputError(str(exc)) from exc
        self._index.setdefault("started", time.time())
        self._save()
        self._thread = threading.Thread(target=self._writer, name="tir-collect", daemon=True)
        self._thread.start()
        return self

    def wants_display(self) -> bool:
        """False: the collector stores raw counts and needs no AGC views."""
        return False

    def close(self) -> None:
        """Let the writer store what is queued (up to 30 s), then save the index with the final counters."""
        if self._thread is None:
            return
        self._queue.put(None)  # the writer drains what is queued, then ends
        self._thread.join(30)
        self._thread = None
        with self._lock:  # the counters of frames that were not kept are saved too
            self._save()

    # -- the frame path: cheap --------------------------------------------------------------
    def write(self, frame: Frame) -> None:
        """Queue a copy of a frame the router called unknown (``meta["router"]["unknown"]``).

        Every frame with a router verdict counts as seen; unknown ones are kept at most ``rate``
        per second and while the queue has room (``rate_limited`` / ``queue_full`` count the rest).
        """
        verdict = frame.meta.get("router")
        if not verdict:
            return
        with self._lock:
            counts = self._index["counts"]
            counts["seen"] += 1
            if not verdict.get("unknown"):
                return
            counts["unknown"] += 1
            t = time.monotonic()
            if t < self._next_allowed:
                counts["rate_limited"] += 1
                return
            item = (frame.raw.copy(), dict(verdict), {k: frame.meta.get(k) for k in (
                "bits", "source_bits", "degrade_range", "degradation")}, frame.seq, time.time())
            try:
                self._queue.put_nowait(item)
            except queue.Full:
                counts["queue_full"] += 1
                return
            self._next_allowed = t + 1.0 / self.rate

    # -- the writer thread ------------------------------------------------------------------
    def _writer(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._store(*item)
            except Exception as exc:  # one bad write is counted and said; collection goes on
                with self._lock:
                    self._index["counts"]["write_errors"] += 1
                    self.last_error = (f"{exc.strerror} ({errno.errorcode.get(exc.errno, exc.errno)})"
                                       if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}")
                log.warning("collect: could not store a frame in %s: %s: %s", self.folder, type(exc).__name__, exc)

    def _store(self, raw: np.ndarray, verdict: dict, meta: dict, seq: int, t: float) -> None:
        with self._lock:
            ident = int(self._index["next_id"])
            self._index["next_id"] = ident + 1
        name = f"{FRAMES}/{ident:08d}.png"
        raw16 = raw if raw.dtype == np.uint16 else np.clip(raw, 0, 65535).astype(np.uint16)
        ok, buf = cv2.imencode(".png", raw16, [int(cv2.IMWRITE_PNG_COMPRESSION), 1])
        if not ok:
            raise OutputError("cv2.imencode could not write a 16-bit PNG")
        path = self.folder / name
        try:
            _write_new_file(path, buf.tobytes())
        except BaseException:  # a full disk: the cut file would stay, named by no entry, never evicted
            try:
                path.unlink()
            except OSError:
                pass
            raise
        embedding = verdict.get("embedding")
        entry = {"id": ident, "file": name, "time": round(t, 3), "seq": int(seq),
                 "verdict": verdict.get("task"), "nearest": verdict.get("nearest"),
                 "similarity": _round(verdict.get("similarity")), "confidence": _round(verdict.get("confidence")),
                 "embedding": None if embedding is None else [round(float(v), 6) for v in np.ravel(embedding)],
                 "shape": list(raw16.shape), "bits": meta.get("bits"), "source_bits": meta.get("source_bits"),
                 "bytes": len(buf), "label": meta.get("degradation")}
        op_range = op_range_of(meta)
        if op_range is not None:
            entry["op_range"] = op_range
        thumb = thumbnail_jpeg(raw16)
        with self._lock:
            entries = self._index["entries"]
            entries.append(entry)
            self._index["counts"]["kept"] += 1
            self._evict(entries)
            self.thumbs.append((ident, thumb))
            self._save()

    def _evict(self, entries: List[dict]) -> None:
        total = sum(int(e.get("bytes", 0)) for e in entries)
        while entries and (len(entries) > self.max_frames or total > self.max_bytes):
            old = entries.pop(0)
            total -= int(old.get("bytes", 0))
            try:
                (self.folder / old["file"]).unlink()
            except FileNotFoundError:
                pass
            self._index["counts"]["evicted"] += 1

    def _save(self) -> None:
        self._index["updated"] = time.time()
        write_json_atomic(self.folder / INDEX, self._index)

    # -- what the page shows ----------------------------------------------------------------
    def collect_stats(self) -> Dict[str, Any]:
        """Counters for the stats snapshot (``stats["collect"]``): the raw counts, the ring's
        size (``frames``, ``mb``), its limits, the ids of the last thumbnails and ``last_error``
        (why the last frame that failed to be stored failed, e.g. ``No space left on device
        (ENOSPC)``; None while every write succeeded)."""
        with self._lock:
            entries = self._index.get("entries", [])
            return {"folder": str(self.folder), **dict(self._index.get("counts", {})),
                    "frames": len(entries), "mb": round(sum(int(e.get("bytes", 0)) for e in entries) / 1e6, 3),
                    "max_frames": self.max_frames, "max_mb": self.max_bytes / 1e6, "rate": self.rate,
                    "thumbs": [i for i, _ in self.thumbs], "last_error": self.last_error}

    def thumbnail(self, ident: int) -> Optional[bytes]:
        """The JPEG thumbnail of a recent entry, or None when it is not among the last few."""
        with self._lock:
            for i, data in self.thumbs:
                if i == ident:
                    return data
        return None


def _round(value, digits: int = 5):
    return None if value is None else round(float(value), digits)
