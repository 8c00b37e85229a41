"""Registry of the real thermal frame sets the project trains and evaluates on.

Each set is a folder of frames from one camera under the data root (``../shared/data`` beside
the repository, or ``$TIR_DATA_ROOT``), with fixed split lists ``<folder>-{train,val,test}.txt``
(names relative to the folder; split by recording so near-identical frames never straddle two
splits). Facts per set (camera, bit depth, licence) are from ``shared/data/README.md``. A set
without split lists (``lynred_nonuc``: real degraded frames, no clean target) only has ``all``.

Frames load as stored: grey ``uint8`` for 8-bit (AGC'd, display-referred) sets, ``uint16`` raw
counts for 16-bit sets, a list of H×W arrays (sizes may differ within a set).

Add a set with :func:`register_dataset`; ``--data SET[,SET…]`` on ``tir train`` and
``tir eval`` takes registered names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tir.edge.errors import InputError
from tir.edge.frame import FrameError
from tir.edge.sources.file import (IMAGE_EXTENSIONS, check_depth, check_frame_side, decode_image, open_regular,
                                   png_dimensions, to_grey)

SPLITS = ("train", "val", "test")
ALL = "all"


class DatasetError(ValueError, InputError):
    """An unknown set, a missing folder, split list or frame; the message says what exists."""


@dataclass(frozen=True)
class DataSet:
    """One camera's frame set.

    ``bits``: 8 (AGC'd grey levels, display-referred) or 16 (raw sensor counts, Y16).
    ``permissive``: its licence allows shipping a model trained on it (README's licence column).
    ``clean``: frames usable as clean targets (False for real degraded input such as non-NUC'd).
    """

    name: str
    folder: str
    camera: str
    bits: int
    licence: str
    permissive: bool
    clean: bool = True
    splits: bool = True
    content: str = ""
    virtual: bool = False  # rendered by the project's virtual camera, not read from a folder


DATASETS: Dict[str, DataSet] = {}


def register_dataset(ds: DataSet) -> DataSet:
    """Add ``ds`` to :data:`DATASETS` and return it.

    Raises:
        DatasetError: a set of that name is registered already, or ``ds.bits`` is not 8 or 16.
    """
    if ds.name in DATASETS:
        raise DatasetError(f"data set {ds.name!r} is registered already")
    if ds.bits not in (8, 16):
        raise DatasetError(f"data set {ds.name!r}: bits must be 8 or 16, got {ds.bits}")
    DATASETS[ds.name] = ds
    return ds


for _ds in (
    DataSet("roadscene", "roadscene-ir", "FLIR ADAS (RoadScene, Xu et al. AAAI 2020)", 8,
            "research use", False, content="roads, cars, pedestrians, day and night"),
    DataSet("hit_uav", "hit_uav", "UAV thermal camera (HIT-UAV, Suo et al. 2023)", 8, "CC BY 4.0", True,
            content="aerial, 60-130 m, JPEG"),
    DataSet("m3svd_magnity", "m3svd_magnity", "Magnity MAG64AI-series (M3SVD)", 8, "MIT", True,
            content="night campus and streets, H.264"),
    DataSet("anti_uav", "anti_uav", "Anti-UAV infrared channel", 8, "MIT", True,
            content="sky with strong vignetting, JPEG"),
    DataSet("chips_lepton35", "chips_lepton35", "FLIR Lepton 3.5 (160x120)", 8, "non-commercial research",
            False, content="indoor people and faces, JPEG"),
    DataSet("flir_raw16_mixed", "flir_raw16_mixed", "19 FLIR models, raw 16-bit counts", 16,
            "per file GPL-3 / MIT / CC", False, content="birds, buildings, people, aerial"),
    DataSet("lynred_nonuc", "lynred_nonuc", "Lynred microbolometer without NUC", 8, "none stated", False,
            clean=False, splits=False, content="real column FPN, dead pixels, vignetting; MJPEG"),
    DataSet("synthetic", "", "tir virtual camera (synthetic://, 14-bit counts with FPN and drift)", 16,
            "project's own", True, content="procedural scenes at 640x512, 320x256 and 160x120", virtual=True),
):
    register_dataset(_ds)

#: frames per split of the virtual camera, and the sizes it renders them at
VIRTUAL_FRAMES = 24
VIRTUAL_SIZES = ((640, 512), (320, 256), (160, 120))


def data_root(root: Optional[Union[str, Path]] = None) -> Path:
    """The folder holding the sets: ``root``, ``$TIR_DATA_ROOT``, ``<repo>/../shared/data`` or
    ``<cwd>/../shared/data``, the first that exists. Raises DatasetError listing what was tried."""
    tried = [Path(root)] if root is not None else []
    if root is None:
        if os.environ.get("TIR_DATA_ROOT"):
            tried.append(Path(os.environ["TIR_DATA_ROOT"]))
        tried.append((Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve())
        tried.append((Path.cwd() / ".." / "shared" / "data").resolve())
    for path in tried:
        if path.is_dir():
            return path
    raise DatasetError("no data root found; tried " + ", ".join(map(str, tried))
                       + " (set $TIR_DATA_ROOT to the folder that holds the sets; `tir adapt` also takes --data-root)")


def dataset(name: str) -> DataSet:
    """The registered set ``name``.

    Raises:
        DatasetError: no set of that name (the message lists the known ones).
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def parse_sets(text: Union[str, Sequence[str]]) -> List[str]:
    """``"a,b"`` (or a list, or ``"all"`` = every registered set) -> validated names.

    Raises:
        DatasetError: no name given, or a name that is not registered.
    """
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if names == [ALL]:
        return list(DATASETS)
    for n in names:
        dataset(n)
    if not names:
        raise DatasetError(f"no data set named; known: {', '.join(DATASETS)}")
    return names


def split_files(name: str, split: str, root: Optional[Union[str, Path]] = None) -> List[Path]:
    """Frame paths of ``split`` (train/val/test, or ``all``) of set ``name``, in list order.

    Raises DatasetError for a set without that split, a missing folder, list or frame.
    """
    ds = dataset(name)
    if split not in SPLITS and split != ALL:
        raise DatasetError(f"unknown split {split!r}; choose from {', '.join(SPLITS + (ALL,))}")
    if not ds.splits and split != ALL:
        raise DatasetError(f"data set {name} has no {split} split (real degraded frames, no clean "
                           f"target); use split '{ALL}'")
    base = Path(ds.folder) if Path(ds.folder).is_absolute() else data_root(root)
    folder = base / ds.folder
    if not folder.is_dir():
        raise DatasetError(f"data set {name}: no folder {folder}")
    if split == ALL and not ds.splits:
        return _frame_files(folder)
    splits = SPLITS if split == ALL else (split,)
    paths: List[Path] = []
    for s in splits:
        listing = base / f"{ds.folder}-{s}.txt"
        if not listing.is_file():
            raise DatasetError(f"data set {name}: no split list {listing}")
        paths += [folder / ln.strip() for ln in listing.read_text().splitlines() if ln.strip()]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"data set {name}: {len(missing)} listed frames missing, e.g. {missing[0]}")
    return paths


#: image files a folder of frames may hold (8-bit grey/colour, or 16-bit PNG/TIFF counts): the ones
#: ``tir run --source DIR`` replays (edge/sources/file.py), so ``tir eval --data DIR`` takes the same
#: folders (a folder of .pgm frames was refused as holding none)
FRAME_SUFFIXES = IMAGE_EXTENSIONS
#: prefix of the name a folder registered by :func:`register_folder` gets
FOLDER_PREFIX = "dir:"


def _frame_files(folder: Path) -> List[Path]:
    """The image files of ``folder`` (:data:`FRAME_SUFFIXES`), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _decode(path: Path) -> np.ndarray:
    """One image file as stored (any depth, any channels); DatasetError when it cannot be decoded
    or is a PNG with a side above the capture limit (edge/sources/file.py ``MAX_FRAME_SIDE``)
    (OpenCV's own decoder warnings are silenced: the error names the file)."""
    from tir.edge.logs import quiet_opencv

    quiet_opencv()
    try:   # a FIFO named like a frame blocked np.fromfile forever: refused, never read
        with open_regular(str(path)) as f:
            data = np.fromfile(f, dtype=np.uint8)
    except FrameError as exc:
        raise DatasetError(f"{exc}; remove it from the folder") from None
    try:  # a PNG larger than any camera (a decompression bomb) is refused from its header, undecoded
        size = png_dimensions(data[:24].tobytes())
        if size is not None:
            check_frame_side(*size, str(path))
    except FrameError as exc:
        raise DatasetError(f"{exc}; remove or replace it") from None
    try:  # tir run's decode: a header OpenCV refuses by raising (cv2.error) is a damaged file too
        image = decode_image(data, str(path)) if data.size else None
    except FrameError:
        image = None
    if image is None:
        raise DatasetError(f"cannot decode {path} ({'empty file' if not data.size else 'damaged or not an image'}); "
                           "remove or replace it")
    return image


def register_folder(path: Union[str, Path], clean: bool = True) -> str:
    """Register a folder of one camera's frames (the user's own) as a set without splits, and
    return its name (``dir:<folder name>``; the same folder and ``clean`` give the same name again).

    The bit depth is read from the first frame: ``uint16`` -> 16 (raw counts, Y16), else 8
    (display-referred grey levels; grey stored as colour is converted, a false-colour frame is
    refused when read). ``clean``: the frames are clean targets (False: real degraded frames,
    scored without a reference as ``lynred_nonuc`` is).

    Raises:
        DatasetError: no such folder, no image files in it (the message lists the suffixes), or a
            first frame that cannot be decoded; a later frame of another bit depth is refused
            when it is read.
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetError(f"no folder {folder}")
    files = _frame_files(folder)
    if not files:
        raise DatasetError(f"{folder} holds no frames ({', '.join(FRAME_SUFFIXES)})")
    for ds in DATASETS.values():
        if ds.folder == str(folder) and ds.clean == bool(clean):
            return ds.name
    first = _first_readable(files, folder)
    name, n = f"{FOLDER_PREFIX}{folder.name}", 2
    while name in DATASETS:
        name, n = f"{FOLDER_PREFIX}{folder.name}-{n}", n + 1
    return register_dataset(DataSet(name, str(folder), f"frames in {folder}", 16 if first.dtype == np.uint16 else 8,
                                    "the user's", False, clean=clean, splits=False)).name


def _first_readable(files: Sequence[Path], folder: Path) -> np.ndarray:
    """The first of ``files`` that decodes (its depth is the folder's: a damaged first file is
    dropped as the others are, :func:`read_counts_kept`); DatasetError naming the first file's
    fault when none decodes."""
    first_error = None
    for path in files:
        try:
            return _decode(path)
        except DatasetError as exc:
            first_error = first_error or exc
    raise DatasetError(f"{folder}: no frame in it decodes ({len(files)} tried; the first: {first_error})")


def _grey(image: np.ndarray, path: Path) -> np.ndarray:
    """A decoded frame (H×W, H×W×1, BGR or BGRA) as one grey channel, as the file source reads
    it (edge/sources/file.py :func:`to_grey`); DatasetError for a false-colour frame: a palette's
    brightness does not follow the scene's temperature (a rainbow palette's luminance rises and
    falls again), so converting it to grey would silently give a scrambled scene."""
    try:
        return to_grey(image, str(path))
    except FrameError as exc:
        raise DatasetError(str(exc)) from None


def read_counts(path: Path, bits: int) -> np.ndarray:
    """One frame as stored: grey uint8 (8-bit sets; grey stored in colour channels converted) or
    uint16 counts.

    Raises DatasetError for an unreadable file, a false-colour (palette) frame
    (:data:`FALSE_COLOUR_CHROMA`) or a bit depth other than the set's.
    """
    return read_counts_checked(_grey(_decode(path), path), path, bits)


def read_counts_checked(image: np.ndarray, path: Path, bits: int) -> np.ndarray:
    """A decoded grey frame (:func:`_grey`) of file ``path`` returned as it is when its dtype is
    the set's (uint8 for ``bits`` 8, else uint16).

    Raises:
        DatasetError: another dtype; the message names the file and what to do.
    """
    want = np.uint8 if bits == 8 else np.uint16
    if image.dtype != want:
        raise DatasetError(f"{path}: {image.dtype} frame in a {bits}-bit set (a folder's first frame sets its "
                           "depth); keep 8-bit and 16-bit frames in separate folders")
    return image


def frame_limit(max_frames) -> Optional[int]:
    """A frame-count limit checked: None (no limit) or a whole number >= 1.

    A limit of 0 used to read as "no limit" and a negative one as "all but the last N" (a
    Python slice), so ``--max-frames 0`` ran a whole set and ``--max-frames -3`` on a
    three-frame folder evaluated nothing and failed deep inside; both are refused here.

    Args:
        max_frames: None, or an int (a bool or a non-integral number is refused).

    Returns:
        None or the limit as an int.

    Raises:
        DatasetError: a limit that is not a whole number >= 1.
    """
    if max_frames is None:
        return None
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise DatasetError(f"a frame limit must be a whole number >= 1 (or none), got {max_frames!r}")
    return int(max_frames)


def load_counts(name: str, split: str, root: Optional[Union[str, Path]] = None,
                max_frames: Optional[int] = None,
                dropped: Optional[List[Tuple[str, str]]] = None) -> List[np.ndarray]:
    """The frames of one split as stored (uint8 or uint16 H×W arrays; sizes may differ).

    ``max_frames``: the first N frames at most, or None (all); DatasetError for a limit that is
    not a whole number >= 1 (:func:`frame_limit`).

    ``dropped``: None refuses a frame of another bit depth than the set's (DatasetError, for
    training); a list makes the split read as ``tir run`` replays a folder: such a frame is
    skipped by the file source's own rule (edge/sources/file.py :func:`check_depth`) and
    ``(path, reason)`` appended to the list, and ``max_frames`` counts the frames kept.
    """
    max_frames = frame_limit(max_frames)
    ds = dataset(name)
    if ds.virtual:
        return _render_virtual(split, max_frames or VIRTUAL_FRAMES)
    paths = split_files(name, split, root)
    if dropped is None:
        return [read_counts(p, ds.bits) for p in paths[:max_frames]]
    kept: List[np.ndarray] = []
    for path in paths:
        if max_frames is not None and len(kept) >= max_frames:
            break
        image = read_counts_kept(path, ds.bits, dropped)
        if image is not None:
            kept.append(image)
    return kept


def read_counts_kept(path: Path, bits: int, dropped: List[Tuple[str, str]]) -> Optional[np.ndarray]:
    """:func:`read_counts` as ``tir run`` replays a folder: the frame as stored, (H, W) uint8 for
    an 8-bit set or uint16 counts; a frame of another bit depth than the set's ``bits`` is
    skipped by the file source's own rule (edge/sources/file.py :func:`check_depth`),
    ``(path, reason)`` appended to ``dropped`` and None returned.

    A file that cannot be decoded (empty, cut short, not an image) is dropped the same way, as
    ``tir run``'s replay drops and counts it (session 22: ``tir eval --data DIR`` refused a whole
    folder for one zero-byte PNG that ``tir run --source DIR`` skipped).

    Raises:
        DatasetError: a false-colour frame (as :func:`read_counts`).
    """
    try:
        decoded = _decode(path)
    except DatasetError as exc:
        dropped.append((str(path), str(exc).replace("; remove or replace it", "").replace("; remove it from the folder", "")))
        return None
    image = _grey(decoded, path)
    try:
        check_depth(8 if image.dtype == np.uint8 else 16, bits, "set")
    except FrameError as exc:
        dropped.append((str(path), str(exc)))
        return None
    return read_counts_checked(image, path, bits)


def to_unit(counts: np.ndarray, bits: int, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Stored frame -> float32 [0, 1] as the live preprocessing sees it: 8-bit (display-referred)
    by full scale /255, raw counts by the robust percentile stretch of the pipeline's
    normaliser (edge/normalize.py, one frame, no smoothing)."""
    if bits == 8:
        return counts.astype(np.float32) / 255.0
    from tir.edge.normalize import Normalizer

    return Normalizer(low_pct, high_pct, alpha=1.0).forward(counts)[0]


def load_unit_frames(sets: Union[str, Sequence[str]], split: str, size=(640, 512),
                     root: Optional[Union[str, Path]] = None, max_frames: Optional[int] = None,
                     clean_only: bool = True) -> np.ndarray:
    """Frames of several sets as one float32 (N, h, w) stack in [0, 1] (``size`` = (w, h)).

    Each frame is mapped as the live preprocessing would (:func:`to_unit`) and brought to
    ``size`` at its native pixel scale (centre crop or mirror extension,
    :func:`tir.engines.router.fit_native`), never resampled. ``max_frames`` limits each set.
    Sets without clean frames are refused when ``clean_only``.

    Args:
        sets: set names (``"a,b"``, a list or ``"all"``, see :func:`parse_sets`).
        split: the split, e.g. ``"train"``, ``"val"``, ``"test"``.
        size: ``(w, h)`` in px of every returned frame.
        root: the data folder (default: :func:`data_root`).
        max_frames: frames per set at most, or None.
        clean_only: refuse sets holding real degraded frames.

    Returns:
        (N, h, w) float32 in [0, 1].

    Raises:
        DatasetError: an unknown set, a set with no frames in ``split``, or (with ``clean_only``)
            a set of degraded frames.
    """
    from ..router import fit_native

    out = []
    for name in parse_sets(sets):
        ds = dataset(name)
        if clean_only and not ds.clean:
            raise DatasetError(f"data set {name} holds real degraded frames, not clean targets")
        for counts in load_counts(name, split, root, max_frames):
            out.append(fit_native(to_unit(counts, ds.bits), size))
    if not out:
        raise DatasetError(f"no frames in {sets} ({split})")
    return np.stack(out).astype(np.float32)


def describe(sets: Union[str, Sequence[str]]) -> List[dict]:
    """Manifest-ready facts of the named sets (name, camera, bits, licence)."""
    return [{"name": n, "camera": dataset(n).camera, "bits": dataset(n).bits, "licence": dataset(n).licence}
            for n in parse_sets(sets)]


def _render_virtual(split: str, n: int) -> List[np.ndarray]:
    """``n`` raw frames (uint16, 14-bit counts) of the virtual camera, as ``synthetic://``
    delivers them; each split has its own scenes (seeds), sizes cycle through
    :data:`VIRTUAL_SIZES`, frames of one scene are 2 s apart."""
    from tir.edge.sources.synthetic import ThermalSceneRenderer

    base = {"train": 0, "val": 1000, "test": 2000, ALL: 3000}.get(split)
    if base is None:
        raise DatasetError(f"unknown split {split!r}; choose from {', '.join(SPLITS + (ALL,))}")
    frames = []
    for i in range(n):
        size = VIRTUAL_SIZES[i % len(VIRTUAL_SIZES)]
        renderer = ThermalSceneRenderer(size, 30.0, seed=base + i // 4)
        frames.append(renderer.render(60 * (i % 4) + 15, clean=False)[0])
    return frames
