"""The frame path as one straight line: source -> stages -> outputs, one thread per stage.

    capture -> preprocess -> infer -> postprocess -> display -> output
            slot         slot     slot           slot       slot

Every hand-off is a :class:`LatestWinsSlot`, so a slow stage makes frames drop (counted
per stage) instead of queueing, and latency stays bounded (pipelines.md (d)1). Each frame
is stamped at every boundary; :class:`PipelineStats` turns the stamps into per-stage and
end-to-end latency. A source that times out (``read`` -> ``None``) leaves the pipeline
running in the no-signal state; outputs keep serving.

Non-live sources (files, ``synthetic://?realtime=0``) can produce frames faster than any
stage, and every frame of a file should count; there the pipeline runs *lossless*: a
stage waits for room in the next slot instead of replacing, and the capture stage reads
a new frame only while fewer than ``max_in_flight`` frames (default 2) are inside. Two
in flight keep the bottleneck stage busy (the next frame is ready when it finishes) while
at most one frame waits. ``max_in_flight=1`` gives the lowest latency and no overlap.
Live sources are never held back: a camera frame nobody is ready for is dropped.

On TensorRT the infer stage keeps ``infer_in_flight`` frames (default 2 for a model whose
``backend`` is ``tensorrt``, else 1) on the GPU at once, each on its own CUDA stream
(:class:`~tir.edge.pipeline.stages.PipelinedInfer`), so one frame's copies overlap the
previous one's compute; frames still leave in order. Non-live sources then let
``infer_in_flight + 1`` frames in by default, so the GPU slots can fill.

With ``ffc`` (an :class:`~tir.edge.camera.ffc.FFCController`) the capture thread marks each
frame right after the read (``meta["ffc"]``, no serial I/O on the frame path), the stats
snapshot carries the controller's stats under ``"camera"``, and every output gets
``{"ffc": request}`` as its actions through :meth:`Output.attach` (the page's FFC button).
The pipeline starts and closes the controller; its serial client stays the caller's.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Sequence

from ..errors import TirError
from ..frame import Frame, FrameError, check_frame, now
from ..sources.base import SourceError
from ..normalize import Normalizer
from .slots import LatestWinsSlot
from .stages import (Deliver, Display, Infer, PipelinedInfer, PipelinedStageThread, Postprocess, Preprocess,
                     StageThread, lower_thread_priority)
from .stats import PipelineStats, RecordingStats, StatsSnapshot, stats_section

log = logging.getLogger(__name__)

CAPTURE = "capture"  # stamped by the source at capture time
READ = "read"  # stamped when the capture thread got the frame from the source
DEFAULT_NON_LIVE_IN_FLIGHT = 2


class PipelineError(RuntimeError, TirError):
    """A stage failed in a way that stopped the pipeline; the message names the stage."""


class Pipeline:
    """Run ``source`` through ``model`` to ``outputs``.

    ``model``: anything with ``infer(batch)`` (an Engine or a Restorer); ``None`` shows the
    raw view only. ``frames``/``duration`` stop the run after that many frames reached the
    outputs or that many seconds. ``agc``/``palette``/``agc_options`` configure both views.
    The pipeline starts and closes the source and the outputs; the model stays the caller's.
    An output that stops for good (``Output.fail``: a recording on a full disk) is logged and
    reported in every snapshot at once; with ``stop_on_output_failure`` the run is also done
    then (:meth:`wait` returns True, ``output_failed`` names it), as ``tir run`` wants when it
    can no longer do what it was asked; without it the other outputs go on.

    Raises:
        ValueError: ``display`` is not auto/always, ``infer_in_flight`` is outside 1..4 or
            ``max_in_flight`` < 1.
    """

    def __init__(self, source, model=None, outputs: Sequence = (), *, agc: str = "percentile",
                 palette: str = "white-hot", agc_options: Optional[Dict[str, Any]] = None,
                 normalizer: Optional[Normalizer] = None, frames: Optional[int] = None,
                 duration: Optional[float] = None, max_in_flight: Optional[int] = None,
                 lossless: Optional[bool] = None, light_nice: int = 0, read_timeout: float = 0.5,
                 stats_window: int = 1000, ffc=None, display: str = "auto",
                 infer_in_flight: Optional[int] = None, stop_on_output_failure: bool = False):
        if display not in ("auto", "always"):
            raise ValueError(f"display must be 'auto' or 'always', got {display!r}")
        if infer_in_flight is None:
            infer_in_flight = 2 if getattr(model, "backend", None) == "tensorrt" else 1
        if not 1 <= int(infer_in_flight) <= 4:
            raise ValueError(f"infer_in_flight must be 1..4, got {infer_in_flight}")
        self.infer_in_flight = int(infer_in_flight) if model is not None else 0
        self.source = source
        self.ffc = ffc
        self.model = model
        self.outputs = list(outputs)
        self.frames = frames
        self.duration = duration
        self.read_timeout = read_timeout
        self.light_nice = light_nice
        live = bool(getattr(source, "live", False))
        self.lossless = (not live) if lossless is None else bool(lossless)
        if max_in_flight is None and self.lossless:
            max_in_flight = max(DEFAULT_NON_LIVE_IN_FLIGHT, self.infer_in_flight + 1)
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight

        normalizer = normalizer or Normalizer()
        work: List = []
        if model is not None:
            infer = PipelinedInfer(model, self.infer_in_flight) if self.infer_in_flight > 1 else Infer(model)
            #: the stage that marks camera changes (``POST /camera/new`` asks it to mark one)
            self.preprocess: Optional[Preprocess] = Preprocess(normalizer)
            postprocess = Postprocess(normalizer)
            work += [self.preprocess, infer, postprocess]
        else:
            self.preprocess = None
        # display="auto": the AGC views are computed only while some output wants them
        # (Output.wants_display: e.g. an HTTP server with a viewer, a recorder's preview)
        wanted = None if display == "always" else self._display_wanted
        work.append(Display(agc, palette, restored=model is not None, wanted=wanted, **(agc_options or {})))
        self.stage_names = [w.name for w in work] + ["output"]
        self.stats = PipelineStats([CAPTURE, READ] + self.stage_names, window=stats_window,
                                   drop_points=self.stage_names)
        work.append(Deliver(self.outputs, self.stats))
        if model is not None:
            postprocess.stats = self.stats  # a model output that is not finite: counted, the frame passed through
        self.stats.source_uri = str(getattr(getattr(source, "uri", None), "text", "") or source)
        self.stats.source_stats = getattr(source, "stats", None)
        self.stats.in_flight = lambda: self._in_flight
        if ffc is not None:
            self.stats.camera_stats = ffc.stats
        if self.preprocess is not None and self.preprocess.defects is not None:
            self.stats.defect_stats = self.preprocess.defects.stats
        for output in self.outputs:  # the open-world collector's counters (collect://)
            if callable(getattr(output, "collect_stats", None)):
                self.stats.collect_stats = output.collect_stats
        if model is not None:
            status = getattr(model, "status", None)
            self.stats.model_status = status if callable(status) else (
                lambda: {"name": getattr(model, "name", type(model).__name__),
                         "backend": getattr(model, "backend", "")})

        self.stop_on_output_failure = bool(stop_on_output_failure)
        #: the first output that stopped for good while running: (URI text, failure line), else None
        self.output_failed: Optional[tuple] = None
        for output in self.outputs:
            if hasattr(output, "fail"):  # an Output: it tells the pipeline when it stops for good
                output.on_failure = self._output_stopped
        self._stop = threading.Event()
        self._done = threading.Event()
        self._flow = threading.Condition()
        self._in_flight = 0
        self._source_ended = False
        self.error: Optional[BaseException] = None
        self.error_stage: Optional[str] = None
        self.slots = [LatestWinsSlot(w.name, on_drop=self._dropper(w.name)) for w in work]
        self.threads: List[threading.Thread] = [threading.Thread(target=self._capture, name="tir-capture", daemon=True)]
        for i, w in enumerate(work):
            last = i == len(work) - 1
            thread_class = PipelinedStageThread if isinstance(w, PipelinedInfer) else StageThread
            self.threads.append(thread_class(
                w, self.slots[i], self.stats, self._stop, self._leave, self._fatal,
                outbox=None if last else self.slots[i + 1], on_done=self._done_frame if last else None,
                lossless=self.lossless, nice=0 if w.name == "infer" else light_nice))
        self._started = False
        self._stopped = False
        self._t_start: Optional[float] = None

    # --- frame accounting ---
    def _display_wanted(self) -> bool:
        for output in self.outputs:
            wants = getattr(output, "wants_display", None)
            if wants is None or wants():
                return True
        return False

    def _dropper(self, stage: str):
        def drop(frame: Frame) -> None:
            self.stats.drop(stage)
            self._leave(frame)
        return drop

    def _leave(self, frame: Frame) -> None:
        with self._flow:
            self._in_flight -= 1
            self._flow.notify_all()
            if self._source_ended and self._in_flight <= 0:
                self._done.set()

    def _done_frame(self, frame: Frame) -> None:
        self.stats.frame_done(frame)
        self._leave(frame)
        if self.frames is not None and self.stats.output >= self.frames:
            # stop here, in the last stage's own thread, so it cannot take one more frame before
            # stop() runs: ``frames=N`` delivers exactly N frames to the outputs
            self._stop.set()
            self._done.set()

    def _output_stopped(self, output, line: str) -> None:
        """``Output.on_failure``: called on the output's own thread when it stops for good."""
        if self.output_failed is None:
            self.output_failed = (str(getattr(getattr(output, "uri", None), "text", output)), line)
        if self.stop_on_output_failure:
            log.error("output stopped for good, ending the run: %s", line)
            self._stop.set()
            self._done.set()

    def _fatal(self, stage: str, exc: BaseException) -> None:
        if self.error is None:
            self.error, self.error_stage = exc, stage
            log.error("stage %s failed: %s: %s", stage, type(exc).__name__, exc)
        self._done.set()

    # --- capture ---
    def _wait_for_room(self) -> bool:
        if self.max_in_flight is None:
            return True
        with self._flow:
            while self._in_flight >= self.max_in_flight:
                if self._stop.is_set():
                    return False
                self._flow.wait(0.1)
        return True

    def _capture(self) -> None:
        lower_thread_priority(self.light_nice)
        first_slot = self.slots[0]
        shape = None
        while not self._stop.is_set():
            if not self._wait_for_room():
                return
            try:
                frame = self.source.read(self.read_timeout)
            except FrameError as exc:
                self.stats.corrupt_frame(exc.kind)
                continue
            except SourceError as exc:
                self._end_of_source(exc)
                return
            except Exception as exc:
                self.stats.error(READ, exc)
                self._fatal(READ, exc)
                return
            if frame is None:
                self.stats.read_timeout()
                continue
            if self.ffc is not None:
                self._mark_ffc(frame)
            try:
                check_frame(frame.raw, shape)
            except FrameError as exc:
                self.stats.corrupt_frame(exc.kind)
                continue
            shape = frame.raw.shape
            frame.stamp(READ)
            self.stats.frame_captured()
            with self._flow:
                self._in_flight += 1
            if not self.lossless:
                first_slot.put(frame)
            elif not first_slot.put_when_empty(frame):
                return

    def _mark_ffc(self, frame: Frame) -> None:
        """The controller's shutter windows mark the frame; a source that knows a frame is an
        FFC frame (``meta["ffc"]`` already True) keeps its mark."""
        from_source = frame.meta.get("ffc") is True
        self.ffc.annotate(frame)
        if from_source:
            frame.meta["ffc"] = True

    def _end_of_source(self, exc: SourceError) -> None:
        from ..sources.file import EndOfStream  # finite sources end with this

        ended = isinstance(exc, EndOfStream)
        self.stats.ended = "end of stream" if ended else f"source error: {exc}"
        if not ended:
            self.stats.error(READ, exc)
            if self.error is None:
                self.error, self.error_stage = exc, READ
        log.info("source ended: %s", exc)
        with self._flow:
            self._source_ended = True
            if self._in_flight <= 0:
                self._done.set()

    # --- lifecycle ---
    def start(self) -> "Pipeline":
        """Start the source, the outputs (attached to the stats and the page's actions), the FFC
        controller and the stage threads; returns the pipeline (a second call does nothing).

        Raises:
            Exception: whatever the source or an output raises when starting; what was started is
                closed again first.
        """
        if self._started:
            return self
        started = []
        try:
            self.source.start()
            actions = {"ffc": self.ffc.request_ffc} if self.ffc is not None else {}
            if callable(getattr(self.model, "request_reload", None)):  # hot-swap (engines/hotswap.py)
                actions["bundle/reload"] = self.model.request_reload
            if self.preprocess is not None:  # the user says the camera changed (same connection, same size)
                actions["camera/new"] = self.preprocess.request_camera_change
            for output in self.outputs:
                attach = getattr(output, "attach", None)
                if attach is not None:  # an Output; a bare object with write() shows no stats
                    attach(self.snapshot, actions)
                output.start()
                started.append(output)
        except BaseException:
            for output in started:
                _quietly(output.close)
            _quietly(self.source.close)
            raise
        if self.ffc is not None:
            self.ffc.start()
        self._started = True
        self._t_start = now()
        self.stats.t_start = self._t_start
        for thread in self.threads:
            thread.start()
        return self

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the run is done (frame/duration limit, end of stream, error) or ``timeout``."""
        if self.duration is not None and self._t_start is not None:
            left = self._t_start + self.duration - now()
            if timeout is None or left < timeout:
                done = self._done.wait(max(0.0, left))
                return done or now() >= self._t_start + self.duration
        return self._done.wait(timeout)

    @property
    def started(self) -> bool:
        """True once :meth:`start` succeeded (it then owns the source and the outputs)."""
        return self._started

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the run is done or stopped."""
        return self._started and not self._stopped and not self._done.is_set()

    def run(self) -> Dict[str, Any]:
        """Start, wait for the limit (or Ctrl-C), stop; return the final stats snapshot.

        Raises:
            PipelineError: a stage failed; the message names the stage and the error (chained).
        """
        self.start()
        try:
            while not self.wait(0.5):
                pass
        finally:
            self.stop()
        if self.error is not None:
            raise PipelineError(f"stage {self.error_stage} failed: {type(self.error).__name__}: {self.error}") from self.error
        return self.snapshot()

    def stop(self, join_timeout: float = 5.0) -> None:
        """Stop every stage, join the threads, close outputs (files get closed) and the source."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._done.set()
        for slot in self.slots:
            slot.close()
        with self._flow:
            self._flow.notify_all()
        current = threading.current_thread()
        for thread in self.threads:
            if thread.is_alive() and thread is not current:
                thread.join(join_timeout)
                if thread.is_alive():
                    log.warning("thread %s did not stop within %.1f s", thread.name, join_timeout)
        for output in self.outputs:
            _quietly(output.close)
        _quietly(self.source.close)
        if self.ffc is not None:
            _quietly(self.ffc.close)

    def failed_outputs(self) -> Dict[str, str]:
        """URI -> failure line of each output that stopped for good (see ``Output.failure``)."""
        failed = {}
        for output in self.outputs:
            failure = getattr(output, "failure", None)
            if isinstance(failure, str):
                failed[str(getattr(getattr(output, "uri", None), "text", output))] = failure
        return failed

    def snapshot(self) -> StatsSnapshot:
        """:meth:`PipelineStats.snapshot` plus the source's own drops (first in ``drops``),
        the outputs that stopped for good and a recorder output's counters."""
        snap = self.stats.snapshot()
        source_dropped = snap.source.get("dropped")
        if isinstance(source_dropped, int):
            snap.drops = {"source": source_dropped, **snap.drops}
        failed = self.failed_outputs()
        snap.output_failures = failed
        if failed:
            snap.errors["output"] = snap.errors.get("output", 0) + len(failed)
            snap.last_error = "output: " + next(iter(failed.values()))
        for output in self.outputs:
            stats = getattr(output, "stats", None)
            if getattr(getattr(output, "uri", None), "scheme", None) == "file" and callable(stats):
                snap.recording = stats_section(RecordingStats, stats)
        return snap

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _quietly(fn) -> None:
    try:
        fn()
    except Exception as exc:  # closing must go on for the rest
        log.warning("while closing: %s: %s", type(exc).__name__, exc)
