"""Rolling pipeline statistics, and the one typed, versioned stats schema every reader uses.

:meth:`PipelineStats.snapshot` returns a :class:`StatsSnapshot` (dataclasses below, version
:data:`STATS_SCHEMA_VERSION` in its ``schema_version`` field). Its JSON form
(:meth:`StatsSnapshot.to_dict`, the field names are the keys, every key always present,
``null`` where there is no value) is what ``/stats.json`` serves, what the page
(edge/outputs/web/app.js) reads, what ``tir bench --json`` and the recorder's
``recording.json`` keep; the ``tir run`` status line reads the same object. The schema is
described once, in docs/architecture.md ("Stats schema"). Schema objects also read like
their JSON form (``snap["fps"]``, ``snap.get("camera")``).

``corrupt``/``corrupt_total`` count the frames dropped as unusable wherever that happened:
in the pipeline, or in the source (its ``stats()["corrupt_kinds"]``, else its ``corrupt``
total under the kind ``source``), so the status line, ``/stats.json`` and ``tir bench --json``
read the same numbers. With camera control, ``camera`` holds the FFC controller's stats
(:class:`CameraStats`). Latency of a stage is read off each finished frame's stamps
(pipelines.md (d)8, per-frame flow tracking): the time from the previous boundary to this
stage's boundary, so it holds the wait in the slot plus the work, and the stages add up to
the end-to-end capture -> output latency. ``busy`` is the work alone. Windows keep the last
``window`` frames.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from ..frame import Frame, now


STATS_SCHEMA_VERSION = 1  # bump when a key is renamed or removed (adding one keeps it)


class _Record(Mapping):
    """Schema objects also read like a read-only dict of their JSON form with the ``None``
    fields left out: ``snap["fps"]``, ``snap.get("camera")``, ``"camera" in snap`` (set and
    not None), ``set(summary)``. An unknown key raises KeyError."""

    def __getitem__(self, key: str):
        if not isinstance(key, str) or key not in _field_names(type(self)):
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        value = getattr(self, key, None) if key in _field_names(type(self)) else None
        return default if value is None else value

    def __contains__(self, key) -> bool:
        return key in _field_names(type(self)) and getattr(self, key) is not None

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (every field, None as null): plain dicts, lists, str, int, float, bool."""
        return _jsonable(dataclasses.asdict(self))


def _field_names(cls) -> frozenset:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


_FIELD_NAMES: Dict[type, frozenset] = {}


@dataclass
class LatencySummary(_Record):
    """Durations in milliseconds over the window: ``n`` values, their p50/p90/p99/mean/max
    (None while ``n`` is 0)."""
    n: int = 0
    p50: Optional[float] = None
    p90: Optional[float] = None
    p99: Optional[float] = None
    mean: Optional[float] = None
    max: Optional[float] = None


@dataclass
class CameraStats(_Record):
    """Camera control (``tir run --camera-port``): :meth:`tir.edge.camera.ffc.FFCController.stats`.
    ``fpa_temp_c`` is the FPA temperature in °C, ``last_ffc_age_s`` seconds since the last
    FFC ended (0 during one, None before the first), ``ffc_state`` the camera's FFC state
    name. ``stats_error`` is set (the rest None) when the controller's stats call failed."""
    fpa_temp_c: Optional[float] = None
    ffc_state: Optional[str] = None
    last_ffc_age_s: Optional[float] = None
    ffc_count: Optional[int] = None
    ffc_camera_initiated: Optional[int] = None
    ffc_frames: Optional[int] = None
    frames_seen: Optional[int] = None
    ffc_errors: Optional[int] = None
    ffc_last_error: Optional[str] = None
    ffc_period_s: Optional[float] = None
    ffc_confirmed_by: Optional[str] = None
    stats_error: Optional[str] = None


@dataclass
class CollectStats(_Record):
    """Open-world collection (``tir run --collect DIR``):
    :meth:`tir.edge.outputs.collect.Collector.collect_stats`. Counts of router verdicts
    (``seen``), unknown ones, kept, rate-limited, refused on a full queue, evicted (oldest
    dropped), write errors and why the last one failed (``last_error``); the ring's size
    (``frames``, ``mb``) and limits; ``thumbs``: ids of the last thumbnails (``GET /collect/<id>.jpg``)."""
    folder: Optional[str] = None
    seen: int = 0
    unknown: int = 0
    kept: int = 0
    rate_limited: int = 0
    queue_full: int = 0
    evicted: int = 0
    write_errors: int = 0
    frames: int = 0
    mb: float = 0.0
    max_frames: Optional[int] = None
    max_mb: Optional[float] = None
    rate: Optional[float] = None
    thumbs: List[int] = field(default_factory=list)
    last_error: Optional[str] = None
    stats_error: Optional[str] = None


@dataclass
class DefectStats(_Record):
    """The camera's dead and stuck read-outs replaced before restoring (edge/defects.py
    ``DefectMap.stats``, the Preprocess stage's): ``pixels`` found now, of which ``columns`` /
    ``rows`` whole columns / rows; ``scene_changes``: frames of this camera counted as evidence;
    ``refused``: pixels found beyond the map's share limit, so none replaced (0: not refused);
    ``repaired_frames`` / ``repaired_pixels``: since the start; ``resets``: estimates dropped
    on a camera change."""
    pixels: int = 0
    columns: int = 0
    rows: int = 0
    scene_changes: int = 0
    refused: int = 0
    repaired_frames: int = 0
    repaired_pixels: int = 0
    resets: int = 0
    stats_error: Optional[str] = None


@dataclass
class AdaptStatus(_Record):
    """Router adaptation (``tir run --adapt N``, or a bundle adapted by ``tir adapt``):
    :meth:`tir.engines.restorer.Restorer.adapt_status`. ``state``: "collecting k/N" (+ " (restarted: camera change …)",
    or " (refitting: camera change …; the previous camera's map was dropped)" when the camera
    changed after the fit), "adapted" (+ " (refitted after camera change …)") or "refused: reason"."""
    state: str = "-"
    frames: Optional[int] = None
    saved: Optional[str] = None
    source: Optional[str] = None
    date: Optional[str] = None
    stats_error: Optional[str] = None


@dataclass
class ContrastStatus(_Record):
    """The contrast gate (engines/contrast_gate.py):
    :meth:`tir.engines.contrast_gate.ContrastGate.status`. ``reference``: the camera's reference
    low-pass span (means on an 80×64 cell grid, p99 − p1) in model-input units (fraction of full scale, 0..1),
    None before any frame or prior; ``extent_reference``: the camera's median extent (the coldest
    to the hottest 0.02 % of 4×4-pixel blocks), None before 8 frames; ``frames``: routed frames in
    the camera's history; ``ratio``: a frame is low-contrast below ``ratio`` × ``extent_reference``
    (before the camera has one, ``ratio`` × ``reference``); ``demoted``: contrast-carrying router
    verdicts the gate turned into their partner without contrast (the frame was not low for this
    camera); ``promoted``: verdicts without the contrast part (clean, unknown, noise, BN, and blur
    verdicts the blur gate made clean) the gate turned into their partner with it (the frame's extent at most ``promote_ratio`` × ``extent_reference``
    and both its ends inside the camera's own); ``promote_ratio``: the largest contrast factor of
    the bundle's specs; ``held``: frames of the history found low when they came, held out of the
    camera's extent reference and scatter (a contrast loss that set in; counted until they leave the
    window); ``holding``: the routed frames in a row found low up to now (a loss going on, 0 once a
    frame is not); ``adopted``: times such
    frames became most of the history and were taken as the camera's look; ``tone_reference``: [low, high], the camera's own extremes (medians of the block lows
    and highs of its frames that are neither low in contrast nor noisy), None before 8 frames; ``aligned``: restored frames of a
    contrast-carrying route whose extremes were mapped onto them; ``tone_scale``: the last such
    map's scale (None before one)."""
    reference: Optional[float] = None
    extent_reference: Optional[float] = None
    frames: int = 0
    ratio: Optional[float] = None
    demoted: int = 0
    promoted: int = 0
    promote_ratio: Optional[float] = None
    held: int = 0
    holding: int = 0
    adopted: int = 0
    tone_reference: Optional[List[float]] = None
    aligned: int = 0
    tone_scale: Optional[float] = None
    stats_error: Optional[str] = None


@dataclass
class FPNStatus(_Record):
    """The FPN gate (engines/fpn_gate.py): :meth:`tir.engines.fpn_gate.FPNGate.status`.
    ``amplitude``: the last routed frame's column-FPN amplitude (robust std of its column
    signature, fraction of the scene span); ``consistency``: how alike the signature is in the
    frame's top-to-bottom bands (median correlation, −1..1); ``periodicity``: the signature's
    largest autocorrelation at lags ≥ 8 px (a periodic signature is scene); a frame carries column
    FPN at or above the amplitude and consistency thresholds and below the periodicity one;
    ``checked``: routed frames measured; ``promoted``: verdicts the gate gave the noise part;
    ``white_sigma``: the last measured frame's white noise σ (MAD of the diagonal Haar detail,
    fraction of full scale; None when not measured); ``white_threshold``: above it an unknown
    verdict's frame carries white noise for this camera (None until 8 frames are routed);
    ``white_floor_from``: what the camera's white-noise floor is the median of, ``"clean"`` (8 or
    more frames under noise-free verdicts) or ``"routed"`` (every routed frame, while fewer were
    called noise-free: a camera whose every frame reads noisy), None before 8 routed frames;
    ``promoted_white``: unknown verdicts the gate made the noise task;
    ``demoted_white``: noise-carrying verdicts on frames whose white noise is the camera's own (at
    or under ``white_threshold``, no column FPN), given back their partner without noise;
    ``own_shape``: the σ₂/σ₁ (white noise read at two scales) the camera's own noise keeps at its
    whitest when it is shaped (≥ √2), else None; ``own_shaped``: verdicts judged the camera's own
    noise by that shape although their σ was above the camera's own (docs/cameras.md "Session 18");
    ``own_counts``: verdicts judged the camera's own noise on a Y16 frame because its σ in counts
    was at the camera's floor in counts although it read above it in frame units (a low-span scene
    the normaliser stretched; docs/cameras.md "Session 19");
    ``destriped``: verdicts kept on frames whose column FPN came without white noise above the
    camera's own, the column offsets removed instead of the noise task; ``destripe``: the last
    routed frame was such a frame (frames have their column offsets removed now); ``held``:
    noise-carrying verdicts given back their partner without noise while the camera had no
    white-noise floor yet (the first routed frames after the start or a camera change)."""
    amplitude: Optional[float] = None
    consistency: Optional[float] = None
    periodicity: Optional[float] = None
    amplitude_threshold: Optional[float] = None
    consistency_threshold: Optional[float] = None
    periodicity_threshold: Optional[float] = None
    checked: int = 0
    promoted: int = 0
    white_sigma: Optional[float] = None
    white_threshold: Optional[float] = None
    white_floor_from: Optional[str] = None
    promoted_white: int = 0
    demoted_white: int = 0
    own_shape: Optional[float] = None
    own_shaped: int = 0
    own_counts: int = 0
    destriped: int = 0
    destripe: bool = False
    held: int = 0
    stats_error: Optional[str] = None


@dataclass
class BlurStatus(_Record):
    """The blur gate (engines/blur_gate.py): :meth:`tir.engines.blur_gate.BlurGate.status`.
    ``drop``: how much a further 1 px blur lowers the last routed frame's band ratio (log of the
    fine-band over the coarse-band energy, difference-of-Gaussian bands σ 1-2 and 2-4 px; the
    closer to 0, the softer the frame; None when not measurable); ``threshold``: above it a frame
    is soft for this camera (half-way between the camera's median drop and that of its frames
    with the mildest blur, raised by ``drift``; None until the camera has been seen for 8 frames);
    ``drift``: how far the reference follows the camera's last 8 frames when they are softer than
    its history (at most a quarter of the interval to the blurred reference; 0 otherwise);
    ``frames``: routed frames in the camera's history; ``demoted``: blur verdicts without noise
    the gate turned into their partner without the blur (the frame was not soft).
    Under noise (BN/noise, CBN/CN): ``drop_noisy``: the last judged frame's drop at half
    resolution, destriped, its white noise taken out (None: not measured); ``band_noisy``:
    [low, high], below low the frame is sharp, above high blurred, between the router's verdict
    stands (None until the camera has been seen for 8 frames); ``changed_noisy``: noise-carrying
    verdicts whose blur part the gate changed, either way; ``held``: blur-carrying verdicts given
    back their partner without the blur while the camera had no sharpness reference yet (the
    first routed frames after the start or a camera change); ``enlarged``: of the demoted, the frames
    soft for this camera that are an enlargement whose traces no blur erased (a digital zoom step,
    engines/resampling.py)."""
    drop: Optional[float] = None
    threshold: Optional[float] = None
    drift: float = 0.0
    frames: int = 0
    demoted: int = 0
    drop_noisy: Optional[float] = None
    band_noisy: Optional[List[float]] = None
    changed_noisy: int = 0
    held: int = 0
    enlarged: int = 0
    stats_error: Optional[str] = None


@dataclass
class RecordingStats(_Record):
    """A ``file://`` recorder output: :meth:`tir.edge.outputs.recorder.Recorder.stats` (frames
    written, dropped on a full queue, lost after a failure, queued now, preview frames and
    skips, write errors, ``failure``: why it stopped for good, or None; ``segments``: stream and preview files
    started because the previous one reached the largest file allowed, FAT32's 4 GiB)."""
    written: int = 0
    dropped: int = 0
    lost: int = 0
    segments: int = 0
    queued: int = 0
    preview_frames: int = 0
    preview_skipped: int = 0
    errors: int = 0
    last_error: Optional[str] = None
    failure: Optional[str] = None
    path: str = ""
    stats_error: Optional[str] = None


@dataclass
class HttpStats(_Record):
    """The HTTP output's counters: open streams (``clients``, per view ``viewers``), frames
    written to it (``frames_in``) and served, JPEG ``encodes``, its JPEG ``quality``, the
    POST ``actions`` it offers (e.g. ["ffc"]) and the requests it ``refused`` by reason."""
    clients: int = 0
    viewers: Dict[str, int] = field(default_factory=dict)
    max_viewers: int = 0
    frames_in: int = 0
    frames_served: int = 0
    encodes: int = 0
    quality: int = 0
    actions: List[str] = field(default_factory=list)
    refused: Dict[str, int] = field(default_factory=dict)


@dataclass
class FrameInfo(_Record):
    """The newest frame the HTTP output holds: sequence number, size in pixels, age in ms."""
    seq: int
    width: int
    height: int
    age_ms: float


@dataclass
class SceneRange(_Record):
    """Robust scene range of the newest frame in counts (0.1/99.9 percentiles), ``of`` which
    image (restored or raw), and in °C when the camera is radiometric (else None)."""
    min_counts: int
    max_counts: int
    of: str
    min_c: Optional[float] = None
    max_c: Optional[float] = None


@dataclass
class StatsSnapshot(_Record):
    """One reading of a running pipeline (the whole schema; see docs/architecture.md).

    Times are seconds (``*_s``) or milliseconds (``*_ms``); rates are frames per second.
    ``source`` and ``model`` are the source's ``stats()`` (with ``uri`` always) and the
    model's ``status()`` as they give them; ``task``, ``confidence``, ``adapt``, ``contrast``
    and ``fpn`` are the model's, typed. ``http``, ``frame`` and ``scene`` are filled in by the HTTP output,
    ``recording`` by the pipeline from a recorder output; ``stats_error`` says why a reader
    got no pipeline stats.
    """
    schema_version: int = STATS_SCHEMA_VERSION
    time: float = 0.0  # wall clock, seconds since the epoch
    uptime_s: float = 0.0
    frames: int = 0  # frames that reached the outputs
    captured: int = 0
    fps: float = 0.0  # output rate over the last fps_horizon_s
    fps_mean: float = 0.0  # whole run, from the first output on
    fps_window: float = 0.0  # over the stats window
    fps_capture: float = 0.0
    frame_age_ms: Optional[float] = None  # end-to-end latency of the newest output frame
    latency_ms: Dict[str, LatencySummary] = field(default_factory=dict)  # per stage, and "e2e"
    busy_ms: Dict[str, LatencySummary] = field(default_factory=dict)  # work alone, per stage
    stages: List[str] = field(default_factory=list)  # stamp names, capture first
    drops: Dict[str, int] = field(default_factory=dict)  # where frames were dropped (newest wins)
    corrupt: Dict[str, int] = field(default_factory=dict)  # by kind
    corrupt_total: int = 0
    errors: Dict[str, int] = field(default_factory=dict)  # by stage
    last_error: Optional[str] = None
    read_timeouts: int = 0
    no_signal: bool = False
    no_signal_s: float = 0.0
    connected: bool = False
    ended: Optional[str] = None  # "end of stream" or "source error: ..." once the source ended
    in_flight: Optional[int] = None
    source: Dict[str, Any] = field(default_factory=dict)
    model: Optional[Dict[str, Any]] = None
    task: Optional[str] = None
    confidence: Optional[float] = None
    adapt: Optional[AdaptStatus] = None
    contrast: Optional[ContrastStatus] = None
    fpn: Optional[FPNStatus] = None
    blur: Optional[BlurStatus] = None
    camera: Optional[CameraStats] = None
    defects: Optional[DefectStats] = None
    collect: Optional[CollectStats] = None
    recording: Optional[RecordingStats] = None
    output_failures: Dict[str, str] = field(default_factory=dict)  # output URI -> why it stopped
    http: Optional[HttpStats] = None
    frame: Optional[FrameInfo] = None
    scene: Optional[SceneRange] = None
    stats_error: Optional[str] = None


def stats_section(cls, read: Callable[[], Optional[Dict[str, Any]]]):
    """``cls`` filled from ``read()``'s dict. A failing call gives ``cls`` with only
    ``stats_error`` set; keys the schema lacks keep the known ones and name the others in
    ``stats_error`` (add them to the dataclass), so a stats call never breaks the pipeline's
    reporting and nothing is dropped unsaid."""
    try:
        values = dict(read() or {})
    except Exception as exc:
        return cls(stats_error=f"{type(exc).__name__}: {exc}")
    names = _field_names(cls)
    unknown = sorted(str(k) for k in values if k not in names)
    section = cls(**{k: v for k, v in values.items() if k in names})
    if unknown:
        section.stats_error = (f"{cls.__name__} has no field for {', '.join(unknown)}; "
                               "add it to edge/pipeline/stats.py")
    return section


def summarize_ms(seconds: Iterable[float]) -> Dict[str, float]:
    """p50/p90/p99/mean/max in milliseconds (and the count) of a list of durations in seconds."""
    values = np.fromiter(seconds, dtype=np.float64)
    if values.size == 0:
        return {"n": 0}
    p50, p90, p99 = np.percentile(values, (50, 90, 99)) * 1000.0
    return {
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "mean": round(float(values.mean()) * 1000.0, 3),
        "max": round(float(values.max()) * 1000.0, 3),
        "n": int(values.size),
    }


def rate(times: Sequence[float], horizon_s: float, t_now: float) -> float:
    """Events per second over the last ``horizon_s`` seconds of the sorted ``times``."""
    recent = [t for t in times if t >= t_now - horizon_s]
    if len(recent) < 2 or recent[-1] <= recent[0]:
        return 0.0
    return (len(recent) - 1) / (recent[-1] - recent[0])


class PipelineStats:
    """Thread-safe counters and windows; ``stamps`` are the stage boundaries in order
    (the first is ``capture``, set by the source)."""

    def __init__(self, stamps: Sequence[str], window: int = 1000, fps_horizon_s: float = 2.0,
                 drop_points: Optional[Sequence[str]] = None):
        self.stamps = list(stamps)
        self.window = window
        self.fps_horizon_s = fps_horizon_s
        self._lock = threading.Lock()
        self._latency: Dict[str, Deque[float]] = {s: deque(maxlen=window) for s in self.stamps[1:]}
        self._latency["e2e"] = deque(maxlen=window)
        self._busy: Dict[str, Deque[float]] = {s: deque(maxlen=window) for s in self.stamps[1:]}
        self._capture_times: Deque[float] = deque(maxlen=window)
        self._output_times: Deque[float] = deque(maxlen=window)
        self.t_start = now()
        self.captured = 0
        self.output = 0
        self.read_timeouts = 0
        self.dropped: Counter = Counter({s: 0 for s in (self.stamps[1:] if drop_points is None else drop_points)})
        self.corrupt: Counter = Counter()
        self.errors: Counter = Counter()
        self.last_error: Optional[str] = None
        self.no_signal_since: Optional[float] = None
        self.last_e2e: Optional[float] = None
        self.first_output_t: Optional[float] = None
        self.last_output_t: Optional[float] = None
        self.ended: Optional[str] = None
        # filled in by the pipeline
        self.source_uri = ""
        self.source_stats: Optional[Callable[[], Dict[str, Any]]] = None
        self.model_status: Optional[Callable[[], Dict[str, Any]]] = None
        self.in_flight: Optional[Callable[[], int]] = None
        self.camera_stats: Optional[Callable[[], Dict[str, Any]]] = None  # camera control (FFC)
        self.collect_stats: Optional[Callable[[], Dict[str, Any]]] = None  # collect:// output
        self.defect_stats: Optional[Callable[[], Dict[str, Any]]] = None  # dead read-outs replaced

    # --- recording (called from the stage threads) ---
    def frame_captured(self) -> None:
        """Count a frame read from the source (clears the no-signal state)."""
        t = now()
        with self._lock:
            self.captured += 1
            self._capture_times.append(t)
            self.no_signal_since = None

    def read_timeout(self) -> None:
        """Count a source read that timed out (starts the no-signal clock)."""
        with self._lock:
            self.read_timeouts += 1
            if self.no_signal_since is None:
                self.no_signal_since = now()

    def busy(self, stage: str, seconds: float) -> None:
        """Record that ``stage`` worked ``seconds`` (host time) on one frame."""
        with self._lock:
            self._busy[stage].append(seconds)

    def drop(self, stage: str) -> None:
        """Count a frame dropped before ``stage`` (overwritten in its slot)."""
        with self._lock:
            self.dropped[stage] += 1

    def corrupt_frame(self, kind: str) -> None:
        """Count a frame dropped as unusable, by :class:`~tir.edge.frame.FrameError` kind."""
        with self._lock:
            self.corrupt[kind] += 1

    def error(self, stage: str, exc: BaseException) -> None:
        """Count an exception in ``stage`` and keep it as ``last_error``."""
        with self._lock:
            self.errors[stage] += 1
            self.last_error = f"{stage}: {type(exc).__name__}: {exc}"

    def frame_done(self, frame: Frame) -> None:
        """Record a frame that reached the outputs.

        Reads only ``frame.stamps`` (seconds of :func:`~tir.edge.frame.now`): per-stage latency
        from consecutive stamps, end-to-end latency from capture to the last stamp (the output
        boundary), and the output time for the output rate.
        """
        stamps = frame.stamps
        with self._lock:
            previous = stamps.get(self.stamps[0])
            for stage in self.stamps[1:]:
                t = stamps.get(stage)
                if t is None:
                    continue
                if previous is not None:
                    self._latency[stage].append(t - previous)
                previous = t
            first, last = stamps.get(self.stamps[0]), stamps.get(self.stamps[-1])
            if first is not None and last is not None:
                self.last_e2e = last - first
                self._latency["e2e"].append(self.last_e2e)
            self.output += 1
            t_out = last if last is not None else now()
            self._output_times.append(t_out)
            if self.first_output_t is None:
                self.first_output_t = t_out
            self.last_output_t = t_out

    # --- reading ---
    def latency(self, stage: str = "e2e") -> Dict[str, float]:
        """p50/p90/p99/mean/max in ms and the count ``n`` of ``stage``'s latency window (``{"n": 0}`` when
        empty).
        """
        return summarize_ms(self.latency_values(stage))

    def latency_values(self, stage: str = "e2e", last: Optional[int] = None) -> list:
        """The window's latencies of ``stage`` in seconds, oldest first (only the ``last`` n)."""
        with self._lock:
            values = list(self._latency[stage])
        return values if last is None else values[len(values) - min(last, len(values)):]

    def snapshot(self) -> StatsSnapshot:
        """The current reading (see :class:`StatsSnapshot`); thread-safe, never raises for a
        failing source/model/camera/collector stats call (their ``stats_error``)."""
        t = now()
        with self._lock:
            latency = {k: list(v) for k, v in self._latency.items()}
            busy = {k: list(v) for k, v in self._busy.items()}
            capture_times = list(self._capture_times)
            output_times = list(self._output_times)
            snap = StatsSnapshot(
                uptime_s=round(t - self.t_start, 3),
                frames=self.output,
                captured=self.captured,
                drops=dict(self.dropped),
                corrupt=dict(self.corrupt),
                errors=dict(self.errors),
                last_error=self.last_error,
                read_timeouts=self.read_timeouts,
                frame_age_ms=None if self.last_e2e is None else round(self.last_e2e * 1000.0, 3),
                ended=self.ended,
                stages=list(self.stamps),
            )
            if self.output > 1 and self.last_output_t > self.first_output_t:
                # whole-run rate, from the first output on (start-up excluded)
                snap.fps_mean = round((self.output - 1) / (self.last_output_t - self.first_output_t), 3)
            no_signal_since = self.no_signal_since
        snap.fps = round(rate(output_times, self.fps_horizon_s, t), 2)
        snap.fps_capture = round(rate(capture_times, self.fps_horizon_s, t), 2)
        span = output_times[-1] - output_times[0] if len(output_times) > 1 else 0.0
        snap.fps_window = round((len(output_times) - 1) / span, 2) if span > 0 else 0.0
        snap.latency_ms = {k: LatencySummary(**summarize_ms(v)) for k, v in latency.items()}
        snap.busy_ms = {k: LatencySummary(**summarize_ms(v)) for k, v in busy.items() if v}
        snap.no_signal = no_signal_since is not None
        snap.no_signal_s = round(t - no_signal_since, 3) if no_signal_since is not None else 0.0
        source: Dict[str, Any] = {"uri": self.source_uri}
        if self.source_stats is not None:
            try:
                source.update(self.source_stats() or {})
            except Exception as exc:  # a stats call must never break the pipeline's reporting
                source["stats_error"] = f"{type(exc).__name__}: {exc}"
        # one set of counters (issue 10 item 5): frames the source dropped as corrupt, missing
        # or misshapen count here with the pipeline's own, by kind (a total alone: "source")
        kinds = source.get("corrupt_kinds")
        if isinstance(kinds, dict):
            for kind, n in kinds.items():
                if isinstance(n, int) and n:
                    snap.corrupt[kind] = snap.corrupt.get(kind, 0) + n
        elif isinstance(source.get("corrupt"), int) and source["corrupt"]:
            snap.corrupt["source"] = snap.corrupt.get("source", 0) + source["corrupt"]
        snap.corrupt_total = sum(snap.corrupt.values())
        connected = source.get("connected", True)
        snap.connected = bool(connected) and not snap.no_signal and self.ended is None
        snap.source = _jsonable(source)
        if self.in_flight is not None:
            snap.in_flight = self.in_flight()
        if self.camera_stats is not None:
            snap.camera = stats_section(CameraStats, self.camera_stats)
        if self.collect_stats is not None:
            snap.collect = stats_section(CollectStats, self.collect_stats)
        if self.defect_stats is not None:
            snap.defects = stats_section(DefectStats, self.defect_stats)
        if self.model_status is not None:
            try:
                status = dict(self.model_status() or {})
            except Exception as exc:
                status = {"status_error": f"{type(exc).__name__}: {exc}"}
            snap.model = _jsonable(status)
            if status.get("task") is not None:
                snap.task = str(status["task"])
            if isinstance(status.get("confidence"), (int, float, np.number)):
                snap.confidence = float(status["confidence"])
            if isinstance(status.get("adapt"), dict):
                snap.adapt = stats_section(AdaptStatus, lambda: status["adapt"])
            if isinstance(status.get("contrast"), dict):
                snap.contrast = stats_section(ContrastStatus, lambda: status["contrast"])
            if isinstance(status.get("fpn"), dict):
                snap.fpn = stats_section(FPNStatus, lambda: status["fpn"])
            if isinstance(status.get("blur"), dict):
                snap.blur = stats_section(BlurStatus, lambda: status["blur"])
        snap.time = time.time()
        return snap


def _jsonable(value):
    """numpy scalars and tuples -> plain Python, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
