"""Rolling pipeline statistics: per-stage and end-to-end latency, fps, drops, signal, model.

``corrupt``/``corrupt_total`` count the frames dropped as unusable wherever that happened:
in the pipeline, or in the source (its ``stats()["corrupt_kinds"]``, else its ``corrupt``
total under the kind ``source``), so the status line, ``/stats.json`` and ``tir bench --json``
read the same numbers. With camera control, ``camera`` holds the FFC controller's stats (fpa_temp_c, ffc_state,
last_ffc_age_s, ffc_count, ...). Latency of a stage is read off each finished frame's stamps (pipelines.md (d)8, per-frame
flow tracking): the time from the previous boundary to this stage's boundary, so it holds
the wait in the slot plus the work, and the stages add up to the end-to-end
capture -> output latency. ``busy`` is the work alone. Windows keep the last ``window``
frames; :meth:`PipelineStats.snapshot` returns a JSON-serialisable dict (the outputs'
``stats_provider``).
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any, Callable, Deque, Dict, Iterable, Optional, Sequence

import numpy as np

from ..frame import Frame, now


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

    # --- recording (called from the stage threads) ---
    def frame_captured(self) -> None:
        t = now()
        with self._lock:
            self.captured += 1
            self._capture_times.append(t)
            self.no_signal_since = None

    def read_timeout(self) -> None:
        with self._lock:
            self.read_timeouts += 1
            if self.no_signal_since is None:
                self.no_signal_since = now()

    def busy(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._busy[stage].append(seconds)

    def drop(self, stage: str) -> None:
        with self._lock:
            self.dropped[stage] += 1

    def corrupt_frame(self, kind: str) -> None:
        with self._lock:
            self.corrupt[kind] += 1

    def error(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            self.errors[stage] += 1
            self.last_error = f"{stage}: {type(exc).__name__}: {exc}"

    def frame_done(self, frame: Frame) -> None:
        """Record a frame that reached the outputs (its last stamp is the output boundary)."""
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
        return summarize_ms(self.latency_values(stage))

    def latency_values(self, stage: str = "e2e", last: Optional[int] = None) -> list:
        """The window's latencies of ``stage`` in seconds, oldest first (only the ``last`` n)."""
        with self._lock:
            values = list(self._latency[stage])
        return values if last is None else values[len(values) - min(last, len(values)):]

    def snapshot(self) -> Dict[str, Any]:
        t = now()
        with self._lock:
            latency = {k: list(v) for k, v in self._latency.items()}
            busy = {k: list(v) for k, v in self._busy.items()}
            capture_times = list(self._capture_times)
            output_times = list(self._output_times)
            snap: Dict[str, Any] = {
                "uptime_s": round(t - self.t_start, 3),
                "frames": self.output,
                "captured": self.captured,
                "drops": dict(self.dropped),
                "corrupt": dict(self.corrupt),
                "corrupt_total": sum(self.corrupt.values()),
                "errors": dict(self.errors),
                "last_error": self.last_error,
                "read_timeouts": self.read_timeouts,
                "frame_age_ms": None if self.last_e2e is None else round(self.last_e2e * 1000.0, 3),
                "ended": self.ended,
            }
            if self.output > 1 and self.last_output_t > self.first_output_t:
                # whole-run rate, from the first output on (start-up excluded)
                snap["fps_mean"] = round((self.output - 1) / (self.last_output_t - self.first_output_t), 3)
            else:
                snap["fps_mean"] = 0.0
            no_signal_since = self.no_signal_since
        snap["fps"] = round(rate(output_times, self.fps_horizon_s, t), 2)
        snap["fps_capture"] = round(rate(capture_times, self.fps_horizon_s, t), 2)
        span = output_times[-1] - output_times[0] if len(output_times) > 1 else 0.0
        snap["fps_window"] = round((len(output_times) - 1) / span, 2) if span > 0 else 0.0
        snap["latency_ms"] = {k: summarize_ms(v) for k, v in latency.items()}
        snap["busy_ms"] = {k: summarize_ms(v) for k, v in busy.items() if v}
        snap["no_signal"] = no_signal_since is not None
        snap["no_signal_s"] = round(t - no_signal_since, 3) if no_signal_since is not None else 0.0
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
                    snap["corrupt"][kind] = snap["corrupt"].get(kind, 0) + n
        elif isinstance(source.get("corrupt"), int) and source["corrupt"]:
            snap["corrupt"]["source"] = snap["corrupt"].get("source", 0) + source["corrupt"]
        snap["corrupt_total"] = sum(snap["corrupt"].values())
        connected = source.get("connected", True)
        snap["connected"] = bool(connected) and not snap["no_signal"] and self.ended is None
        snap["source"] = source
        if self.in_flight is not None:
            snap["in_flight"] = self.in_flight()
        if self.camera_stats is not None:
            try:
                snap["camera"] = dict(self.camera_stats() or {})
            except Exception as exc:
                snap["camera"] = {"stats_error": f"{type(exc).__name__}: {exc}"}
        if self.collect_stats is not None:
            try:
                snap["collect"] = dict(self.collect_stats() or {})
            except Exception as exc:
                snap["collect"] = {"stats_error": f"{type(exc).__name__}: {exc}"}
        if self.model_status is not None:
            try:
                status = dict(self.model_status() or {})
            except Exception as exc:
                status = {"status_error": f"{type(exc).__name__}: {exc}"}
            snap["model"] = status
            for key in ("task", "confidence"):
                if key in status:
                    snap[key] = status[key]
        snap["time"] = time.time()
        return _jsonable(snap)


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
