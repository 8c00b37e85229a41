"""The work of each pipeline stage, and the thread that runs one stage.

Each stage is a small callable that changes a :class:`Frame` in place:
:class:`Preprocess` (counts -> normalised float32), :class:`Infer` (the model; or
:class:`PipelinedInfer` run by :class:`PipelinedStageThread`: several frames in flight on
separate CUDA streams),
:class:`Postprocess` (back to uint16 counts in ``frame.restored``), :class:`Display`
(AGC + palette into ``frame.display``) and :class:`Deliver` (hand to the outputs).
:class:`StageThread` takes frames from its inbox slot, runs the work, stamps the frame
with the stage's name and offers it to the next slot.
"""
from __future__ import annotations

import inspect
import logging
import os
import threading
from collections import deque
from typing import Callable, Deque, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..agc import DisplayMapper
from ..defects import DefectMap
from ..frame import Frame, FrameError, now
from ..logs import RateLimiter
from ..normalize import NormParams, Normalizer, offset_binary, signed_words, status_rows
from .slots import LatestWinsSlot
from .stats import PipelineStats

log = logging.getLogger(__name__)

# transient per-frame arrays live in meta under these keys and are removed by Postprocess;
# MODEL_INPUT_KEY is public for code that uses Preprocess outside the pipeline (tir adapt)
MODEL_INPUT_KEY = _INPUT_KEY = "_model_input"
_OUTPUT_KEY = "_model_output"
_PASSTHROUGH_KEY = "_passthrough"  # the restorer passed this frame through: restored = raw, exactly
#: the frame's counts with the camera's dead read-outs replaced (edge/defects.py), when any were
REPAIRED_KEY = _REPAIRED_KEY = "_repaired"


def display_referred_range(meta) -> Optional[tuple]:
    """(lo, hi) counts of the fixed full-scale map for an 8-bit (display-referred) source, or
    None for raw counts. An 8-bit source states ``source_bits`` 8; its counts are the 8-bit grey
    levels shifted into ``bits`` (file:// shifts << 6 into 14 bits), so full scale is
    255 << (bits - 8)."""
    if meta.get("source_bits") != 8:
        return None
    bits = meta.get("bits", 8)
    shift = int(bits) - 8 if isinstance(bits, int) and 8 <= bits <= 16 else 0
    return 0.0, float(255 << shift)


class Preprocess:
    """Raw counts -> float32 [0, 1] with the frame's mapping stored in ``meta["norm"]``.

    The first frame's meta picks the map (edge/normalize.py): a fixed full-scale map
    for display-referred 8-bit sources, the robust-percentile normaliser for raw counts.

    A frame that starts a new camera state carries ``meta["camera_change"]``, the list of its
    reasons, which the Restorer's gates restart their camera histories on
    (engines/restorer.py ``Restorer.new_camera``):

    - ``"connection"``: the source's ``meta["connection"]`` (the times a live source was
      reopened, edge/sources/grabber.py; a file source's reopenings, edge/sources/file.py)
      differs from the previous frame's: a reconnect may bring another camera;
    - ``"size"``: the frame's (H, W) differs from the previous frame's: a camera's mode fixes
      its frame size, so another size is another camera or mode;
    - ``"bits"``: the frame's ``meta["bits"]`` or ``meta["source_bits"]`` differs from the
      previous frame's (a camera switched from 16-bit counts to its 8-bit AGC output, or another
      camera on the same port): its counts are of another scale, and the normaliser's range is
      set again from it (it was kept from the first frame: a 16-bit camera after an 8-bit one was
      mapped through the 8-bit full-scale range);
    - ``"user"``: :meth:`request_camera_change` was called since the previous frame (``POST
      /camera/new`` on the page of ``tir run``): the user says the camera changed.

    Only a stream sees these: a fresh ``Preprocess`` per frame (``tir eval``, frames as
    independent scenes) never marks one. A swapped camera on the same connection at the same size
    (an analogue switcher on one grabber, an 8-bit camera replugged without the grabber noticing)
    gives no signal of its own: the user says so with ``"user"``. The normaliser's range jump (:meth:`Normalizer.jumped`, a gain switch) is not
    one either: the scene makes it too (a hot object coming into view grows the span 2.6x on the
    same camera, whose FPN offsets and noise floor still hold, tests/test_fpn_gate.py), and
    restarting on it stopped the destriping of such a camera.

    Before normalising, the camera's dead and stuck read-outs (pixels, columns, rows) are replaced
    by their neighbours (bad-pixel replacement, ``defects``: an :class:`~tir.edge.defects.DefectMap`
    learned from this stream's frames, FFC frames and status rows left out; dropped on a camera
    change), so the normaliser's range, the router, the gates and every route see a clean
    read-out, and :class:`Postprocess` starts from the replaced counts (pass-through too); the
    frame's ``raw`` stays as the camera sent it. ``meta["defects"]`` says how many pixels of the
    frame were replaced. ``defects=False``: no replacement; ``learn=False``: the map is used as it
    is, this frame adds no evidence (a second look at a frame the stream already counted).

    A raw stream whose words are signed (two's complement read as unsigned,
    edge/normalize.py :func:`~tir.edge.normalize.signed_words`: a winter scene across 0 °C at both
    ends of the 16 bits) is read as offset binary (``raw ^ 0x8000``, the values in their order)
    from its first such frame until the next camera change: the defect map, the normaliser, the
    router and the routes see one contiguous range, ``meta["signed_words"]`` is True, and
    :class:`Postprocess` gives the restored counts back in the camera's own words (so does
    :class:`Display` show both views in order). The frame that starts it mid-stream is a camera
    change with the reason ``"signed"`` (the counts' scale moved by half the word).
    """

    name = "preprocess"

    def __init__(self, normalizer: Optional[Normalizer] = None, defects=True, learn: bool = True):
        self.normalizer = normalizer or Normalizer()
        #: the camera's dead read-outs (edge/defects.py), or None when replacement is off
        self.defects: Optional[DefectMap] = DefectMap() if defects is True else (defects or None)
        self.learn = bool(learn)
        self._bits_seen = False
        self._shape: Optional[tuple] = None        # the previous frame's (H, W)
        self._connection = None                    # the previous frame's meta["connection"]
        #: frames marked ``camera_change`` so far
        self.camera_changes = 0
        self._depth: Optional[tuple] = None        # the previous frame's (meta bits, meta source_bits)
        self._fixed_from_meta = False              # the fixed range is a display-referred source's
        self._requested: Optional[str] = None      # a reason to mark the next frame with
        self._request_lock = threading.Lock()
        self._signed = False                       # this stream's words are two's complement
        self._frames = 0                           # frames seen so far

    def request_camera_change(self, reason: str = "user") -> None:
        """Mark the next frame ``camera_change`` with ``reason`` (thread-safe; any thread, e.g.
        the HTTP server's ``POST /camera/new``): the Restorer's gates restart their camera
        histories on it as on a reconnect."""
        with self._request_lock:
            self._requested = str(reason)

    def _set_depth(self, meta, changed: bool) -> None:
        """Set the normaliser's count range from a frame's ``bits`` / ``source_bits`` (the first
        frame's, or a frame whose depth differs from the one before: ``changed``). The top count
        is ``2**bits - 1``; a display-referred 8-bit source gets its fixed full-scale map
        (:func:`display_referred_range`), which a later raw-count depth drops again (a fixed
        range given by the caller is kept). On a change the smoothed percentiles of the old
        depth are forgotten too: they were counts of another scale."""
        bits = meta.get("bits")
        if isinstance(bits, int) and 8 <= bits <= 16:
            self.normalizer.max_count = (1 << bits) - 1
        elif changed:
            self.normalizer.max_count = 65535
        fixed = display_referred_range(meta)
        if fixed is not None and (self.normalizer.fixed is None or self._fixed_from_meta):
            self.normalizer.set_fixed_range(*fixed)
            self._fixed_from_meta = True
        elif fixed is None and self._fixed_from_meta:
            self.normalizer.fixed = None
            self._fixed_from_meta = False
        if changed:
            self.normalizer.reset()

    def __call__(self, frame: Frame) -> None:
        depth = (frame.meta.get("bits"), frame.meta.get("source_bits"))
        depth_changed = self._bits_seen and depth != self._depth
        if not self._bits_seen or depth_changed:
            self._set_depth(frame.meta, depth_changed)
            self._bits_seen = True
            self._depth = depth
        reasons = self._camera_change(frame, depth_changed)
        raw = self._words(frame, reasons)
        counts = self._repair(frame, reasons, raw)
        if raw is not frame.raw and _REPAIRED_KEY not in frame.meta:
            frame.meta[_REPAIRED_KEY] = counts   # Postprocess starts from the counts in order
        x, params = self.normalizer.forward(counts)
        frame.meta["norm"] = {"lo": params.lo, "hi": params.hi}
        if params.top or params.bottom:
            # rows that are not image (a Lepton's telemetry): Postprocess gives them back as they came
            frame.meta["norm"]["status_rows"] = (params.top, params.bottom)
        if params.step > 1:
            frame.meta["norm"]["count_step"] = params.step
        frame.meta[_INPUT_KEY] = x
        if reasons:
            frame.meta["camera_change"] = reasons
            self.camera_changes += 1

    def _camera_change(self, frame: Frame, depth_changed: bool = False) -> list:
        """The reasons this frame starts a new camera state (the class docstring), remembering
        its connection and size for the next frame; ``depth_changed``: its bit depth differs
        from the previous frame's; a :meth:`request_camera_change` is taken (once)."""
        reasons = []
        connection = frame.meta.get("connection")
        if connection is not None and self._connection is not None and connection != self._connection:
            reasons.append("connection")
        shape = tuple(frame.raw.shape[:2])
        if self._shape is not None and shape != self._shape:
            reasons.append("size")
        if depth_changed:
            reasons.append("bits")
        self._connection = connection if connection is not None else self._connection
        self._shape = shape
        with self._request_lock:
            requested, self._requested = self._requested, None
        if requested is not None:
            reasons.append(requested)
        return reasons

    def _words(self, frame: Frame, reasons: list) -> np.ndarray:
        """The frame's counts in their order (the class docstring): ``frame.raw`` itself, or
        ``frame.raw ^ 0x8000`` once the stream's words were found signed (appends ``"signed"`` to
        ``reasons`` on the frame that finds it, but the stream's first)."""
        if reasons:
            self._signed = False   # a new camera state: its words are judged afresh
        first, self._frames = self._frames == 0, self._frames + 1
        if self.normalizer.fixed is not None or frame.raw.dtype != np.uint16:
            return frame.raw
        if not self._signed and signed_words(frame.raw, self.normalizer.stride):
            self._signed = True
            if not first and not reasons:
                reasons.append("signed")
        if not self._signed:
            return frame.raw
        frame.meta["signed_words"] = True
        return offset_binary(frame.raw)

    def _repair(self, frame: Frame, reasons: list, raw: Optional[np.ndarray] = None) -> np.ndarray:
        """The frame's counts (``raw``, default ``frame.raw``) with the camera's dead read-outs
        replaced (the class docstring): the map drops the old camera's estimate on a camera
        change, takes the frame's evidence (not an FFC frame's: the shutter, not the scene), then
        replaces; ``raw`` itself when nothing is replaced."""
        raw = frame.raw if raw is None else raw
        defects = self.defects
        if defects is None:
            return raw
        if reasons:
            defects.reset()
        known = None   # the frame repaired with the defects known before this frame's evidence
        if self.learn and not frame.meta.get("ffc", False):
            # a raw frame's status rows (a Lepton's telemetry) hold words, not read-outs; found on
            # the frame with the defects known so far replaced (a dead column at 0 widens the
            # image's range until the status rows' zeros fall inside it)
            rows = (0, 0)
            if self.normalizer.fixed is None:
                norm = self.normalizer
                known = defects.repair(raw, count=False)
                rows = status_rows(known[0], norm.low_pct, norm.high_pct, norm.stride)
            if defects.update(raw, rows):
                known = None   # the estimate may have changed: repair again
        if known is not None:
            counts, n = known
            defects.count_repaired(n)
        else:
            counts, n = defects.repair(raw, count=self.learn)
        if n:
            frame.meta[_REPAIRED_KEY] = counts
            frame.meta["defects"] = n
        return counts


ROUTER_KEY = "router"  # meta key of the router's verdict on this frame (open-world collector)


def _decisions(model) -> Optional[int]:
    """How many router verdicts a Restorer has taken so far (None for a plain engine)."""
    value = getattr(model, "decisions", None)
    return value if isinstance(value, int) else None


def _attach_verdict(model, before: Optional[int], meta) -> None:
    """Put the router's verdict on this frame into ``meta["router"]`` when the router ran on it
    (the Restorer's ``decisions`` grew): task, nearest, similarity, confidence, unknown and the
    embedding (read by the ``collect://`` output)."""
    if before is not None and _decisions(model) != before:
        decision = getattr(model, "last_decision", None)
        if decision is not None:
            meta[ROUTER_KEY] = decision


def _accepts_meta(fn) -> bool:
    try:
        return "meta" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _passes_through(model) -> bool:
    """Whether the frame ``model`` just ran came out as it went in: a Restorer says so
    (``passes_through``: pass-through without the column offsets removed), any other model by
    its route's name."""
    same = getattr(model, "passes_through", None)
    return bool(same) if same is not None else getattr(model, "route", None) == "passthrough"


class Infer:
    """Any model with ``infer(N×1×H×W float32) -> same`` (an Engine or a Restorer); batch 1.
    A model whose ``infer`` takes ``meta`` (the Restorer: it skips routing on FFC frames)
    gets the frame's meta.

    Raises:
        TypeError: ``model`` has no ``infer`` method.
    """

    name = "infer"

    def __init__(self, model):
        if not callable(getattr(model, "infer", None)):
            raise TypeError(f"the model {model!r} has no infer(batch) method")
        self.model = model
        self.with_meta = _accepts_meta(model.infer)

    def __call__(self, frame: Frame) -> None:
        x = frame.meta.pop(_INPUT_KEY)
        before = _decisions(self.model)
        if self.with_meta:
            y = self.model.infer(x[None, None], meta=frame.meta)
        else:
            y = self.model.infer(x[None, None])
        _attach_verdict(self.model, before, frame.meta)
        if y.shape[-2:] != x.shape:
            raise RuntimeError(f"model returned shape {y.shape} for input {x.shape}")
        frame.meta[_OUTPUT_KEY] = y
        if _passes_through(self.model):
            frame.meta[_PASSTHROUGH_KEY] = True


class PipelinedInfer:
    """The infer stage with up to ``in_flight`` frames on the GPU at once (TensorRT).

    :meth:`submit` queues a frame's H2D → model → D2H on a free slot of a
    :class:`~tir.engines.cuda_pipeline.CudaStreamPipeline` (one per engine and padded frame
    size, made on first use, each with its own CUDA streams) and returns at once;
    :meth:`collect` waits for the oldest frame and puts its output where :class:`Infer` would.
    Frames come out in the order they went in. A Restorer routes each frame on submit
    (``observe``) and names what restores it and the step after (``plan``: the route of its
    task or partner, then its tone alignment, exactly as its ``infer``); a pass-through frame,
    or an engine without ``pipeline()`` (ONNX Runtime, torch), is computed at submit and waits in
    the same queue, so the order holds.
    All calls come from one thread (the pipeline's infer thread), which owns the CUDA work.

    Raises:
        TypeError: ``model`` has no ``infer`` method.
        ValueError: ``in_flight`` is outside 1..4.
    """

    name = "infer"

    def __init__(self, model, in_flight: int = 2):
        if not callable(getattr(model, "infer", None)):
            raise TypeError(f"the model {model!r} has no infer(batch) method")
        if not 1 <= int(in_flight) <= 4:
            raise ValueError(f"in_flight must be 1..4, got {in_flight}")
        self.model = model
        self.in_flight = int(in_flight)
        self.with_meta = _accepts_meta(model.infer)
        self._pipes: Dict[Tuple[int, tuple], object] = {}
        # (frame, pipe or None, (h, w), output if computed at submit, host seconds spent, the step
        # after, whether the frame comes out as it went in)
        self._queue: Deque[list] = deque()

    @property
    def pending(self) -> int:
        """The number of frames submitted and not yet collected."""
        return len(self._queue)

    def _engine_for(self, batch, meta):
        """(the engine for this frame or None for pass-through, the step after it): a Restorer
        routes the frame first and names both (``plan``: the route, the student or nothing,
        then its tone alignment); any other model is its own engine."""
        model = self.model
        if callable(getattr(model, "observe", None)) and callable(getattr(model, "plan", None)):
            before = _decisions(model)
            model.observe(batch, meta)
            if meta is not None:
                _attach_verdict(model, before, meta)
            return model.plan(batch)
        return model, None

    def _pipe(self, engine, shape):
        key = (id(engine), tuple(shape))
        if key not in self._pipes:
            self._pipes[key] = engine.pipeline(tuple(shape), in_flight=self.in_flight)
        return self._pipes[key]

    def submit(self, frame: Frame) -> None:
        """Queue one frame's inference and return at once.

        Takes the (H, W) float32 model input the Preprocess stage put in ``frame.meta``; on an
        engine with ``pipeline()`` the (1, 1, H, W) batch is reflect-padded to the engine's
        multiple and its H2D copy, model run and D2H copy are enqueued on a free CUDA slot.

        Raises:
            RuntimeError: ``in_flight`` frames are already queued (call :meth:`collect` first).
            EngineError: the engine cannot run the frame (from the model or the stream pipeline).
        """
        from tir.engines.engine import pad_to_multiple

        if len(self._queue) >= self.in_flight:
            raise RuntimeError(f"{self.in_flight} frames already in flight: collect() first")
        t0 = now()
        x = frame.meta.pop(_INPUT_KEY)
        batch = np.ascontiguousarray(x[None, None], dtype=np.float32)
        engine, finish = self._engine_for(batch, frame.meta)
        # pass-through without the column offsets removed: the frame keeps its raw counts, as
        # Infer's (asked now: the Restorer's state moves on with the next frame submitted)
        same = engine is None and _passes_through(self.model)
        if engine is None:
            self._queue.append([frame, None, x.shape, batch.copy(), now() - t0, finish, same])
        elif not callable(getattr(engine, "pipeline", None)):
            self._queue.append([frame, None, x.shape, engine.infer(batch), now() - t0, finish, same])
        else:
            padded, hw = pad_to_multiple(batch, int(getattr(engine, "multiple", 1) or 1))
            pipe = self._pipe(engine, padded.shape)
            pipe.submit(np.ascontiguousarray(padded))
            self._queue.append([frame, pipe, hw, None, now() - t0, finish, same])

    def oldest_ready(self) -> bool:
        """True when :meth:`collect` would not wait (the oldest output is on the host)."""
        if not self._queue:
            return False
        pipe = self._queue[0][1]
        return pipe is None or pipe.oldest_ready()

    def collect(self) -> Tuple[Frame, float]:
        """The oldest frame with its output in meta, and the host seconds spent on it.

        The output is the (1, 1, H, W) float32 restored batch cropped to the frame's size, then
        through the step the Restorer named at submit (its tone alignment), as ``infer`` gives; a
        frame the Restorer passed through at submit (``passes_through``) is marked so, and
        :class:`Postprocess` gives back its raw counts, as after :class:`Infer`.

        Raises:
            IndexError: nothing is queued.
            RuntimeError: the model's output is not the frame's (H, W).
            Exception: a CUDA error while waiting for the stream pipeline (the frame stays queued).
        """
        entry = self._queue.popleft()
        frame, pipe, (h, w), y, spent, finish, same = entry
        t0 = now()
        if pipe is not None:
            try:
                _, y = pipe.collect()
            except BaseException:
                self._queue.appendleft(entry)  # still ours: the thread hands it back on exit
                raise
            y = y[..., :h, :w]
        if y.shape[-2:] != (h, w):
            raise RuntimeError(f"model returned shape {y.shape} for input {(h, w)}")
        if finish is not None:
            y = finish(np.asarray(y, dtype=np.float32))   # the Restorer's tone alignment, as in its infer
        frame.meta[_OUTPUT_KEY] = y
        if same:
            frame.meta[_PASSTHROUGH_KEY] = True
        return frame, spent + (now() - t0)

    def close(self) -> None:
        """Drop what is still queued and free every stream pipeline's buffers."""
        self._queue.clear()
        for pipe in self._pipes.values():
            pipe.close()
        self._pipes.clear()


def _camera_words(frame: Frame, counts: np.ndarray) -> np.ndarray:
    """``counts`` flipped between their order and the camera's own words (:func:`offset_binary`,
    its own inverse) for a stream :class:`Preprocess` read as signed (``meta["signed_words"]``);
    ``counts`` itself otherwise."""
    return offset_binary(counts) if frame.meta.get("signed_words") else counts


class Postprocess:
    """Model output -> uint16 counts in ``frame.restored`` (the inverse of Preprocess).

    Do no harm to counts: a frame the restorer passed through gets its raw counts back
    exactly (with the camera's dead read-outs replaced, as Preprocess gave them to the model:
    ``meta["_repaired"]``, edge/defects.py; the frame's ``raw`` is left as the camera sent it);
    and counts the normaliser clipped away (beyond its robust 0.5/99.5 % range: the
    hottest and coldest objects) are added back onto the restored frame, so a hot object keeps
    its counts (and temperature) instead of saturating at the range's end. The frame's status
    rows (``meta["norm"]["status_rows"]``, edge/normalize.py ``status_rows``: a Lepton's
    telemetry) get their raw counts back exactly, and the counts of a camera stored on a count
    step (``meta["norm"]["count_step"]``, edge/normalize.py ``count_step``: a 14-bit core stored
    ``<< 2``) are rounded to it. A frame whose counts
    exceed the normaliser's ``max_count`` (the bit depth the first frame suggested: a 16-bit stream
    whose first frame fit in 14 bits, before a gain switch) widens it to 16 bits for good, so the
    restored counts are never clipped below what the camera delivers.

    A model output holding NaN or ±inf (a route file whose weights are not finite numbers, a
    numeric fault of the backend) has no counts to give: cast to uint16 it became a black or
    garbage frame (0..145 counts for a camera's 6482..9611), recorded and shown as restored without
    a word. Such a frame is passed through as above, counted in ``stats.errors["postprocess"]``
    with the reason in ``last_error`` (``/stats.json``), and logged at most once per 10 s.
    """

    name = "postprocess"

    def __init__(self, normalizer: Normalizer, stats: Optional[PipelineStats] = None):
        self.normalizer = normalizer
        self.stats = stats
        self._limiter = RateLimiter()

    def __call__(self, frame: Frame) -> None:
        y = frame.meta.pop(_OUTPUT_KEY)
        norm = frame.meta["norm"]
        # the counts the model saw: the camera's dead read-outs replaced (Preprocess), else raw
        raw = frame.meta.pop(_REPAIRED_KEY, None)
        raw = frame.raw if raw is None else raw
        if frame.meta.pop(_PASSTHROUGH_KEY, False):
            frame.restored = _camera_words(frame, raw.copy())
            return
        # one float64 sum: NaN or inf anywhere makes it non-finite; finite float32 values cannot overflow it
        if not np.isfinite(np.add.reduce(np.asarray(y), axis=None, dtype=np.float64)):
            self._not_finite(frame, raw, np.asarray(y))
            return
        low, high = cv2.minMaxLoc(raw)[:2]
        bits = self.normalizer.max_count.bit_length()
        if self.normalizer.widen_to(high):
            # a count above the bit depth's top: restored frames must not be clipped to it (they came
            # out 10 dB from the camera's frames)
            log.info("counts up to %d above the %d-bit range: restored frames use 16 bits from now on",
                     int(high), bits)
        restored = self.normalizer.inverse(y, NormParams(norm["lo"], norm["hi"]))
        if self.normalizer.clip:
            lo, hi = norm["lo"], norm["hi"]
            if low < lo or high > hi:
                raw = raw.astype(np.int32)
                excess = raw - np.clip(raw, int(np.ceil(lo)), int(np.floor(hi)))
                restored = np.clip(restored.astype(np.int32) + excess, 0, self.normalizer.max_count).astype(np.uint16)
        step = norm.get("count_step", 1)
        if step > 1:
            # the camera's own count format: an MSB-aligned camera's restored counts stay on its steps
            restored = np.clip(np.rint(restored / step) * step, 0, self.normalizer.max_count).astype(np.uint16)
        restored = _camera_words(frame, restored)
        top, bottom = norm.get("status_rows", (0, 0))
        if top or bottom:
            h = restored.shape[0]
            restored[:top] = frame.raw[:top]
            restored[h - bottom:] = frame.raw[h - bottom:]
        frame.restored = restored

    def _not_finite(self, frame: Frame, raw: np.ndarray, y: np.ndarray) -> None:
        """The model's output for ``frame`` holds NaN/inf: pass the frame through, count, log."""
        bad = int(y.size - np.count_nonzero(np.isfinite(y)))
        reason = (f"the model's output for frame {frame.seq} holds {bad} of {y.size} values that "
                  "are NaN or infinite; the frame is passed through unrestored (a damaged or badly trained route?)")
        frame.restored = _camera_words(frame, raw.copy())
        if self.stats is not None:
            self.stats.error(self.name, ValueError(reason))
        self._limiter.log(log, logging.WARNING, "not-finite", "%s", reason)


class Display:
    """AGC + palette for each view; every view has its own mapper built from the same settings."""

    name = "display"

    def __init__(self, agc: str = "percentile", palette: str = "white-hot", restored: bool = True,
                 wanted: Optional[Callable[[], bool]] = None, **agc_options):
        self.raw = DisplayMapper(agc, palette, **agc_options)
        self.restored = DisplayMapper(agc, palette, **agc_options) if restored else None
        self.wanted = wanted  # None: always; else asked per frame (no viewer -> no AGC work)
        self.skipped = 0

    def __call__(self, frame: Frame) -> None:
        if self.wanted is not None and not self.wanted():
            self.skipped += 1
            return
        # a stream of signed words (Preprocess, ``meta["signed_words"]``) is shown in its order
        frame.display["raw"] = self.raw(_camera_words(frame, frame.raw))
        if self.restored is not None and frame.restored is not None:
            frame.display["restored"] = self.restored(_camera_words(frame, frame.restored))


class Deliver:
    """Write the frame to every output; an output that fails is counted, the others go on."""

    name = "output"

    def __init__(self, outputs: Sequence, stats: PipelineStats):
        self.outputs = list(outputs)
        self.stats = stats
        self._warned = set()

    def __call__(self, frame: Frame) -> None:
        for output in self.outputs:
            try:
                output.write(frame)
            except Exception as exc:
                self.stats.error("output", exc)
                key = (id(output), type(exc))
                if key not in self._warned:
                    self._warned.add(key)
                    log.warning("output %s failed: %s", getattr(output, "uri", output), exc)


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's nice value by ``nice`` (Linux: per thread); no-op elsewhere or at 0."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError as exc:
        log.debug("cannot lower thread priority: %s", exc)


class StageThread(threading.Thread):
    """Runs one stage: inbox -> work -> stamp -> outbox (or ``on_done`` for the last stage).

    ``on_leave(frame)`` is called for a frame that leaves the pipeline here (corrupt or
    failed); ``on_fatal(stage, exc)`` for an unexpected error, after which the thread ends.
    ``lossless`` waits for room in the outbox instead of replacing (non-live sources).
    """

    def __init__(self, work: Callable[[Frame], None], inbox: LatestWinsSlot, stats: PipelineStats,
                 stop: threading.Event, on_leave: Callable[[Frame], None],
                 on_fatal: Callable[[str, BaseException], None],
                 outbox: Optional[LatestWinsSlot] = None, on_done: Optional[Callable[[Frame], None]] = None,
                 lossless: bool = False, nice: int = 0, poll_s: float = 0.1):
        super().__init__(name=f"tir-{work.name}", daemon=True)
        self.lossless = lossless
        self.nice = nice
        self.work = work
        self.stage = work.name
        self.inbox = inbox
        self.outbox = outbox
        self.on_done = on_done
        self.stats = stats
        self.stop_event = stop
        self.on_leave = on_leave
        self.on_fatal = on_fatal
        self.poll_s = poll_s

    def run(self) -> None:
        """The thread body: take a frame, run the stage on it, stamp it and pass it on until stopped.

        A :class:`~tir.edge.frame.FrameError` drops the frame (counted as corrupt); any other
        exception is counted, hands the frame to ``on_leave`` and stops the pipeline via
        ``on_fatal``.
        """
        lower_thread_priority(self.nice)
        while not self.stop_event.is_set():
            frame = self.inbox.get(self.poll_s)
            if frame is None:
                if self.inbox.closed:
                    return
                continue
            t0 = now()
            try:
                self.work(frame)
            except FrameError as exc:
                self.stats.corrupt_frame(exc.kind)
                self.on_leave(frame)
                continue
            except Exception as exc:
                self.stats.error(self.stage, exc)
                self.on_leave(frame)
                self.on_fatal(self.stage, exc)
                return
            frame.stamp(self.stage)
            self.stats.busy(self.stage, frame.stamps[self.stage] - t0)
            if self.outbox is not None:
                if not self.lossless:
                    self.outbox.put(frame)
                elif not self.outbox.put_when_empty(frame):
                    return  # closed: the pipeline is stopping
            elif self.on_done is not None:
                self.on_done(frame)



class PipelinedStageThread(StageThread):
    """Runs a :class:`PipelinedInfer`: keeps up to ``work.in_flight`` frames on the GPU.

    It submits a frame as soon as one arrives and a slot is free; it collects the oldest one
    when all slots are busy, when it has finished (``oldest_ready``), or when no new frame came
    within ``overlap_wait_s`` (so a lone frame is never held back waiting for company). Frames
    leave in arrival order, stamped ``infer`` when their output reached the host; ``busy`` is
    the host time spent submitting and collecting that frame. A failed submit or collect stops
    the pipeline like any stage error; the frames still in flight are handed to ``on_leave``.
    """

    def __init__(self, work: PipelinedInfer, *args, overlap_wait_s: float = 0.002, **kw):
        super().__init__(work, *args, **kw)
        self.overlap_wait_s = overlap_wait_s

    def _emit(self) -> bool:
        frame, spent = self.work.collect()
        frame.stamp(self.stage)
        self.stats.busy(self.stage, spent)
        if self.outbox is not None:
            if not self.lossless:
                self.outbox.put(frame)
            elif not self.outbox.put_when_empty(frame):
                return False
        elif self.on_done is not None:
            self.on_done(frame)
        return True

    def _step(self) -> bool:
        work = self.work
        if work.pending >= work.in_flight or work.oldest_ready():
            return self._emit()
        frame = self.inbox.get(self.overlap_wait_s if work.pending else self.poll_s)
        if frame is None:
            if work.pending:
                return self._emit()
            return not self.inbox.closed
        try:
            work.submit(frame)
        except FrameError as exc:
            self.stats.corrupt_frame(exc.kind)
            self.on_leave(frame)
        except Exception:
            self.on_leave(frame)
            raise
        return True

    def run(self) -> None:
        """The thread body: submit and collect frames (see the class docstring) until stopped.

        Any exception is counted and reported through ``on_fatal``; frames still in flight are
        handed to ``on_leave`` and the stream pipelines are freed on the way out.
        """
        lower_thread_priority(self.nice)
        try:
            while not self.stop_event.is_set():
                if not self._step():
                    return
        except Exception as exc:
            self.stats.error(self.stage, exc)
            self.on_fatal(self.stage, exc)
        finally:
            for entry in list(self.work._queue):
                self.on_leave(entry[0])
            try:
                self.work.close()
            except Exception as exc:  # freeing must not hide the run's own error
                log.warning("infer stage close: %s: %s", type(exc).__name__, exc)
