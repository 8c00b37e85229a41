"""Calibration frames, normalised exactly like the pipeline feeds the model.

Sources (``calibration_set(source, ...)``):

- ``synthetic``: the virtual camera (:class:`tir.edge.sources.synthetic.ThermalSceneRenderer`),
  several scenes (seeds) sampled sparsely in time so the set is varied, 14-bit counts mapped to
  [0, 1] by :class:`tir.edge.normalize.Normalizer` as ``tir run`` does;
- ``roadscene``: RoadScene IR frames (train split; the held-out part uses val) degraded on the
  fly with every task of :mod:`tir.engines.degrade` plus clean copies, since the model sees
  degraded frames at run time;
- a folder: ``tir run --record`` recordings (their raw frames, via ``frames.csv``), 16-bit PNG/TIFF
  frames, ``.npy`` stacks N×H×W or single H×W, or 8-bit image folders, searched recursively;
  16-bit data goes through the pipeline's Normalizer,
  8-bit is divided by 255, float data is taken as already normalised.

NVIDIA's guideline quoted by Ultralytics is ≥ 500 representative frames (pipelines.md rec. 5),
hence the default ``n``. Frames are produced lazily and deterministically (frame i depends only on
(source, seed, i)), so 500 full-resolution frames never sit in memory at once.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..edge.errors import InputError
from ..edge.frame import FrameError
from ..edge.regular import imread_unchanged, open_regular

DEFAULT_FRAMES = 500
DEFAULT_SIZE = (640, 512)  # (w, h)
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".pgm", ".bmp", ".jpg", ".jpeg")
SOURCES = ("synthetic", "roadscene")
FRAME_STRIDE = 7  # synthetic: frames apart in time (~0.23 s at 30 fps)
FRAMES_PER_SCENE = 50

log = logging.getLogger(__name__)


class CalibrationDataError(ValueError, InputError):
    """No usable calibration frames; the message says what was looked for."""


class CalibrationSet:
    """``n`` normalised frames, each float32 (H, W) in [0, 1], produced on demand.

    ``size`` is (width, height) in pixels; frames of another size are resized (INTER_AREA).
    ``frame(i)`` gives frame i, ``pair(i)`` optionally (input, clean target).

    Raises:
        CalibrationDataError: ``n`` <= 0.
    """

    def __init__(self, name: str, n: int, size: Tuple[int, int], frame: Callable[[int], np.ndarray],
                 pair: Optional[Callable[[int], Tuple[np.ndarray, np.ndarray]]] = None):
        if n <= 0:
            raise CalibrationDataError(f"{name}: need at least one frame, got n={n}")
        self.name, self.n, self.size = name, int(n), (int(size[0]), int(size[1]))
        self._frame = frame
        self._pair = pair

    @property
    def has_references(self) -> bool:
        """True when clean targets exist (the accuracy gate then measures dB lost vs clean)."""
        return self._pair is not None

    def pair(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """(model input, clean target), both float32 (H, W) in [0, 1] on the same scale.

        Raises:
            CalibrationDataError: the set has no clean references.
            IndexError: ``i`` is outside 0..n-1.
        """
        if self._pair is None:
            raise CalibrationDataError(f"{self.name} has no clean references")
        if not 0 <= i < self.n:
            raise IndexError(f"{self.name}: frame {i} out of range 0..{self.n - 1}")
        x, y = self._pair(i)
        return _fit(np.asarray(x, np.float32), self.size), _fit(np.asarray(y, np.float32), self.size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self.n:
            raise IndexError(f"{self.name}: frame {i} out of range 0..{self.n - 1}")
        x = np.asarray(self._frame(i), dtype=np.float32)
        return _fit(x, self.size)

    def batches(self, batch_size: int = 1, progress: bool = False, desc: str = "calibration") -> Iterator[np.ndarray]:
        """(N, 1, H, W) float32 batches in [0, 1], in order (the last one may be shorter)."""
        indices = range(0, self.n, batch_size)
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=desc, unit="batch")
        for start in indices:
            stop = min(start + batch_size, self.n)
            yield np.stack([self[i] for i in range(start, stop)])[:, None]

    def array(self) -> np.ndarray:
        """All frames as one (n, 1, H, W) float32 array (only for small sets)."""
        return np.stack([self[i] for i in range(self.n)])[:, None]

    def __repr__(self) -> str:
        return f"<CalibrationSet {self.name}: {self.n} frames {self.size[0]}x{self.size[1]}>"


def _fit(x: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    if x.shape != (size[1], size[0]):
        import cv2

        x = cv2.resize(x, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(x, dtype=np.float32)


def normalise_counts(raw: np.ndarray) -> np.ndarray:
    """One frame of raw counts -> [0, 1] the way the pipeline does (steady-state Normalizer).

    Args:
        raw: (H, W) uint16 counts.

    Returns:
        (H, W) float32 in [0, 1]: linear between the 0.5/99.5 % percentiles (no EMA).
    """
    from tir.edge.normalize import Normalizer

    return Normalizer(alpha=1.0).forward(np.asarray(raw))[0]


def to_model_input(image: np.ndarray) -> np.ndarray:
    """Any frame -> the model's input.

    Args:
        image: (H, W) or (H, W, C) uint8 (divided by 255), integer counts (through
            :func:`normalise_counts`) or float (clipped to [0, 1]); colour is converted to grey.

    Returns:
        (H, W) float32 in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim == 3:
        import cv2

        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.shape[2] == 3 else image[..., 0]
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.integer):
        return normalise_counts(image.astype(np.uint16, copy=False))
    return np.clip(image.astype(np.float32), 0.0, 1.0)


def synthetic_set(n: int = DEFAULT_FRAMES, size=DEFAULT_SIZE, seed: int = 0) -> CalibrationSet:
    """``n`` frames of the virtual camera (14-bit counts normalised as ``tir run`` does).

    Frames come from ceil(n / 50) scenes (seeds ``seed*1000 + scene``), 7 frames apart in time;
    ``size`` is (width, height). Pairs give the noise-free counts on the input's scale as the
    clean target.
    """
    from tir.edge.sources.synthetic import ThermalSceneRenderer

    scenes = max(1, -(-n // FRAMES_PER_SCENE))
    renderers: dict = {}

    def render(i: int, clean: bool):
        scene = i % scenes
        if scene not in renderers:
            renderers[scene] = ThermalSceneRenderer(size, 30.0, seed * 1000 + scene)
        k = (i // scenes) * FRAME_STRIDE + 3 * scene
        return renderers[scene].render(k, clean=clean)

    def frame(i: int) -> np.ndarray:
        return normalise_counts(render(i, False)[0])

    def pair(i: int):
        from tir.edge.normalize import Normalizer

        raw, truth, _ = render(i, True)
        norm = Normalizer(alpha=1.0)
        x, params = norm.forward(raw)
        return x, norm.forward(truth, params)[0]  # clean counts on the same scale as the input

    return CalibrationSet(f"synthetic(seed={seed})", n, size, frame, pair)


def roadscene_set(n: int = DEFAULT_FRAMES, size=DEFAULT_SIZE, seed: int = 0, split: str = "train",
                  data_root=None, tasks: Optional[Sequence[str]] = None) -> CalibrationSet:
    """``n`` RoadScene IR frames of ``split``, each clean or degraded with one task.

    Frames cycle through the split, and each frame through clean plus every task of ``tasks``
    (default all of :data:`tir.engines.degrade.TASKS`), degraded on the fly with a seed from
    (``seed``, i, task). Pairs give the clean frame as target. ``size`` is (width, height).

    Raises:
        DegradationError: (from ``load_roadscene``) the RoadScene data is not found under
            ``data_root``.
    """
    from tir.engines import degrade as dg

    clean = dg.load_roadscene(split, root=data_root, size=tuple(size))
    clean_u8 = np.round(clean * 255.0).astype(np.uint8)  # lossless: the frames are 8-bit
    del clean
    variants: List[Optional[str]] = [None] + list(tasks if tasks is not None else dg.TASKS)

    def pair(i: int):
        k = i % len(clean_u8)
        task = variants[(i + i // len(clean_u8)) % len(variants)]
        y = clean_u8[k].astype(np.float32) / 255.0
        if task is None:
            return y, y
        return dg.degrade(y, task, np.random.default_rng([seed, i, dg.task_seed(task, seed)])), y

    def frame(i: int) -> np.ndarray:
        return pair(i)[0]

    return CalibrationSet(f"roadscene-{split}", n, size, frame, pair)


RECORDING_INDEX = "frames.csv"  # tir's recorder (edge/outputs/recorder.py) writes this per recording


def _recording_rows(directory: Path) -> List[dict]:
    """Index rows of a ``tir run --record`` folder that hold a raw frame (the model's input)."""
    import csv

    rows = []
    with open(directory / RECORDING_INDEX, newline="") as f:
        for row in csv.DictReader(f):
            if None in row.values() or not row.get("seq", "").isdigit():  # a line cut by a crash
                continue
            if row.get("raw"):
                rows.append(row)
    if not rows:
        log.warning("recording %s has no raw frames (recorded with what=restored?); skipped", directory)
    return rows


def _read_recorded(directory: Path, row: dict) -> np.ndarray:
    """One raw frame of a ``tir run --record`` folder, read where the recorder put it.

    The row is checked by the recorder's own :func:`~tir.edge.outputs.recorder.frame_place` (a
    16-bit PNG must be ``raw/<folder>/<seq>.png`` (or an older recording's ``raw/<seq>.png``) inside the recording: an index naming ``../x.png`` would
    read any image on the machine as a frame), and a byte offset is looked up in the stream's
    segments (:func:`~tir.edge.outputs.recorder.stream_segments`: ``raw.u16``, then each
    ``raw.<B>.u16`` the recorder rolled to at the largest file allowed, e.g. FAT32's 4 GiB).

    Returns:
        (H, W) uint16 counts.

    Raises:
        CalibrationDataError: the row names its frame wrongly, the PNG is unreadable, the offset
            lies in no segment, or the stream ends inside the frame.
    """
    import cv2

    from ..edge.outputs.recorder import frame_place, segment_of, stream_segments

    index = directory / RECORDING_INDEX
    try:
        png, offset, h, w = frame_place(directory, row, "raw")
    except ValueError as exc:
        raise CalibrationDataError(f"frame {row.get('seq')} in {index}: {exc}") from None
    if png is not None:
        image = imread_unchanged(png)   # never blocks on a FIFO
        if image is None:
            raise CalibrationDataError(f"{png} is listed in {index} but unreadable")
        return image
    try:
        name, local = segment_of(stream_segments(directory, "raw"), offset, "raw", directory)
    except FileNotFoundError as exc:
        raise CalibrationDataError(f"frame {row.get('seq')} in {index}: {exc}") from None
    try:
        f = open_regular(str(name))   # a FIFO in its place: an error, never a hang
    except FrameError as exc:
        raise CalibrationDataError(f"frame {row.get('seq')} in {index}: {exc}") from None
    with f:
        f.seek(local)
        data = f.read(h * w * 2)
    if len(data) != h * w * 2:
        raise CalibrationDataError(f"{name} ends inside frame {row['seq']}")
    return np.frombuffer(data, "<u2").reshape(h, w).astype(np.uint16)


def _load_npy(path: Path) -> np.ndarray:
    """The array of a ``.npy`` file, memory-mapped read-only; never unpickled.

    Raises:
        CalibrationDataError: the file is not a readable .npy array (damaged, cut short, or an
            object array, which would need unpickling).
    """
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CalibrationDataError(
            f"{path}: not a readable .npy array of frames ({exc}); remove it from the folder or save "
            "the frames with numpy.save as a uint16 N×H×W (or H×W) array") from None


def _folder_index(directory: Path) -> List[Tuple[Path, object]]:
    """(file, None) images, (file, k) frames of .npy stacks, (recording folder, row) recorded frames."""
    entries: List[Tuple[Path, object]] = []
    recordings = sorted(p.parent for p in directory.rglob(RECORDING_INDEX))
    for rec in recordings:
        entries.extend((rec, row) for row in _recording_rows(rec))
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if any(rec == path.parent or rec in path.parents for rec in recordings):
            continue  # files of a recording are read through its index
        suffix = path.suffix.lower()
        if suffix == ".npy":
            arr = _load_npy(path)
            if arr.ndim == 2:
                entries.append((path, None))
            elif arr.ndim == 3:
                entries.extend((path, j) for j in range(arr.shape[0]))
            else:
                log.warning("skipping %s: shape %s is neither H×W nor N×H×W", path, arr.shape)
        elif suffix in IMAGE_SUFFIXES:
            entries.append((path, None))
    return entries


def folder_set(directory, n: int = DEFAULT_FRAMES, size=DEFAULT_SIZE, part: str = "calib") -> CalibrationSet:
    """Frames of a recording/image folder; every 10th frame is held out (``part="holdout"``).

    Picks ``n`` frames spread over the folder (all of them, with a warning, when fewer).

    Raises:
        CalibrationDataError: ``directory`` is not a folder, holds no frames, holds a ``.npy``
            that is not a readable array (damaged, or an object array), holds too few to hold out
            a part, or (when a frame is read) a listed frame is unreadable.
    """
    import cv2

    directory = Path(directory)
    if not directory.is_dir():
        raise CalibrationDataError(
            f"calibration source {directory} is not a folder; use one of {SOURCES} or a folder of "
            "16-bit PNG/TIFF, .npy recordings or 8-bit images")
    entries = _folder_index(directory)
    if not entries:
        raise CalibrationDataError(f"no frames ({', '.join(IMAGE_SUFFIXES)}, .npy, tir recordings) under {directory}")
    held = [e for j, e in enumerate(entries) if j % 10 == 9]
    entries = held if part == "holdout" else [e for j, e in enumerate(entries) if j % 10 != 9]
    if not entries:
        raise CalibrationDataError(f"{directory}: too few frames to hold out a part (have {len(entries)})")
    if len(entries) < n:
        log.warning("%s has %d %s frames, fewer than the %d asked for; using them all", directory,
                    len(entries), part, n)
        picked = entries
    else:  # spread over the whole recording
        picked = [entries[j] for j in np.linspace(0, len(entries) - 1, n).round().astype(int)]

    def frame(i: int) -> np.ndarray:
        path, index = picked[i]
        if isinstance(index, dict):
            image = _read_recorded(path, index)
        elif index is None and path.suffix.lower() != ".npy":
            image = imread_unchanged(path)   # never blocks on a FIFO
            if image is None:
                raise CalibrationDataError(f"cannot read image {path}")
        else:
            arr = _load_npy(path)
            image = np.array(arr if index is None else arr[index])
        return to_model_input(image)

    return CalibrationSet(f"folder({directory.name}, {part})", len(picked), size, frame)


def calibration_set(source: str, n: int = DEFAULT_FRAMES, size=DEFAULT_SIZE, seed: int = 0,
                    holdout: bool = False, data_root=None, tasks: Optional[Sequence[str]] = None) -> CalibrationSet:
    """The calibration (or, with ``holdout=True``, the disjoint held-out) frames of ``source``.

    ``source`` is ``synthetic``, ``roadscene`` or a folder; ``size`` is (width, height).
    ``tasks`` restricts RoadScene degradations (e.g. to one route's task); None = clean + all tasks.

    Raises:
        CalibrationDataError: ``source`` is none of these, or the folder has no usable frames.
    """
    size = (int(size[0]), int(size[1]))
    if source == "synthetic":
        # held-out frames come from other scenes (seeds) than the calibration frames
        return synthetic_set(n, size, seed + 7919 if holdout else seed)
    if source == "roadscene":
        return roadscene_set(n, size, seed + (1 if holdout else 0), split="val" if holdout else "train",
                             data_root=data_root, tasks=tasks)
    check_source(source)
    return folder_set(source, n, size, part="holdout" if holdout else "calib")


def check_source(source: str) -> None:
    """Refuse a calibration ``source`` that is none of :data:`SOURCES` and no folder, before any
    work: a path (it holds a ``/``, or names a file) that does not exist is said to be missing,
    with the close names of its folder (it read "unknown calibration source"); a file is said to
    be a file.

    Raises:
        CalibrationDataError: naming the source and what to give instead.
    """
    if source in SOURCES or os.path.isdir(source):
        return
    if os.path.exists(source):
        raise CalibrationDataError(f"--source {source} is a file: give the folder that holds the calibration frames, "
                                   f"or one of {', '.join(SOURCES)}")
    if os.sep in source or source.startswith("."):
        from tir.edge.sources.file import describe_missing

        raise CalibrationDataError(f"--source: {describe_missing(source)}; give a folder of frames or one of "
                                   f"{', '.join(SOURCES)}")
    raise CalibrationDataError(f"unknown calibration source {source!r}: use one of {SOURCES} or an existing folder")


class FrameDataReader:
    """An ONNX Runtime ``CalibrationDataReader`` over a :class:`CalibrationSet`.

    ORT's ABC recognises any class with ``get_next`` (``__subclasshook__``), so this needs no
    onnxruntime import.
    """

    def __init__(self, frames: CalibrationSet, input_name: str = "input", batch_size: int = 1,
                 progress: bool = False):
        self.frames, self.input_name, self.batch_size, self.progress = frames, input_name, batch_size, progress
        self.rewind()

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iter = self.frames.batches(self.batch_size, progress=self.progress)

    def get_next(self):
        """``{input_name: (N, 1, H, W) float32 batch}``, or None when the frames are used up (ORT's protocol).
        """
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def __len__(self) -> int:
        return -(-len(self.frames) // self.batch_size)

    def __iter__(self):
        self.rewind()
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

