"""A camera's dead and stuck read-outs, learned from its own stream, and their replacement.

Microbolometer cores have read-outs that do not respond to the scene: single pixels, and whole
columns or rows when a column amplifier or a row driver fails (the read-out is column-parallel,
one amplifier/ADC per column, thermal_io.md §5). Every camera's NUC pipeline replaces them by
their neighbours from a factory bad-pixel map ("bad pixel replacement"); a camera that delivers
them (an uncalibrated core, a stale map, a raw tap before the replacement) shows them as black or
white lines, and a restoration network then "restores" them into something that is neither the
camera's read-out nor the scene.

**What a dead read-out is, from the stream alone** (:class:`DefectMap`): a live pixel follows the
scene and carries the sensor's temporal noise, so whenever the scene around it changes its value
changes too; a dead or stuck one returns the same value whatever the scene and the noise do. The
map counts, per pixel, the *scene changes around it*: frames whose change since the last counted
frame, taken as the median over the pixel's 5×5 neighbourhood (so a dead column or a pair of them
does not hide it), is at least :func:`change_threshold` (well above the sensor's noise and the
count step); and how many of them left the pixel's value exactly as it was. A pixel that stayed
the same through every one of at least :data:`MIN_CHANGES` scene changes, and never differed
from the reference frame at any other look either (a live pixel's noise moves it where the scene
stands still), is a defect; a column (row) none of whose pixels ever changed value, through as
many changes in all as half of it called dead pixel by pixel would take, is dead along its whole
length (a failed column amplifier), its pixels in flat parts of the scene included (a live one
there shows by its noise: a clipped hot pole over part of the height is no dead column). Outside such lines only single pixels and clusters of up to
:data:`MAX_CLUSTER` count, each with every neighbour seen live (moving with the scene) or dead, and
with no more than :data:`MAX_CLUSTER` dead pixels in all within the neighbourhood's reach (2 pixels)
of it: a longer or larger constant structure (an on-screen reticle, text), the edge of one, or
small pieces of one a pixel or two apart (the dots of a timestamp's colons, a decimal point, the
strokes of a small font's glyphs) is the picture's, not a read-out's. A frame is
counted when at least :data:`CHANGED_SHARE` of its pixels saw such a change; until then the
reference frame is kept, so a slow pan or drift accumulates into a change; a frame counted once
does not count again (a looped recording: a pixel equal by chance between two frames would be so
every time the pair came round). The estimate belongs
to one camera: it starts afresh on a camera change (edge/pipeline/stages.py ``Preprocess``) and
on a new frame size.

What this does not catch, on purpose: a read-out that flickers (a stuck pixel with a live LSB)
is not constant, and "far from both neighbours in every frame" does not tell it apart from a
thin static object in front of a changing background (a pole before traffic: far from its
neighbours in every frame, moving only by its noise); such read-outs are left to the camera's
own map. What it cannot tell apart: a live read-out clipped at the end of the range in every
frame (a static object hotter than an 8-bit AGC's range before a changing scene) reads one value
as a stuck one does, and is replaced once the scene around it has changed :data:`MIN_CHANGES`
times. A camera whose every frame is the same (a static scene with no noise above the count
step) gives no scene change, hence no evidence and no replacement. More than
:data:`MAX_SHARE` of the frame in dead pixels, or :data:`MAX_LINES` of its columns or rows dead
whole, is not a sensor's defect list (a frozen part of the picture) and nothing is replaced.

**Replacement** (:func:`replace_defects`): each defect pixel is interpolated linearly between the
nearest live pixels along its row or its column, whichever gap is shorter (a dead column is
filled from its left and right neighbours, a dead row from above and below, a single pixel from
its row), one live side at the frame's border; the value is rounded to the camera's count step
(edge/normalize.py ``count_step``: 8-bit grey levels stored ``<< 6``, a 14-bit core stored
``<< 2``), so the replaced counts are counts the camera could give. numpy + OpenCV only.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

#: the neighbourhood whose median change says the scene around a pixel changed (pixels per side;
#: :func:`neighbourhood_median`, the frame mirrored at its border):
#: a dead column, or an adjacent pair (10 of its 25 pixels), leaves the median to the live ones
NEIGHBOURHOOD = 5
#: scene changes a pixel must have stayed exactly the same through to be called dead. A live
#: pixel's value changes when the scene around it changes by :func:`change_threshold` (at least
#: 4 count steps and twice the frame's own temporal noise) except by chance; the worst case is a
#: static thin object before a changing background, which moves only by its noise: at 8-bit noise
#: σ 0.6 grey level it keeps its exact value with probability ≈ 0.45 per change, 0.45⁸ ≈ 2e-3
#: over 8. Eight changes are what a 12-frame emulated camera's own frames give (11).
MIN_CHANGES = 8
#: a frame is counted as a scene change when at least this share of its pixels saw one
CHANGED_SHARE = 0.25
#: the change threshold: this share of the frame's 5-95 % span ...
CHANGE_SPAN = 0.02
#: ... at least this many times the frame pair's per-pixel noise (robust σ of each pixel's change
#: less its neighbourhood's) ...
CHANGE_NOISE = 2.0
#: ... and at least this many count steps (edge/normalize.py ``count_step``)
CHANGE_STEPS = 4
#: the largest connected group of dead pixels (8-connected, outside whole dead columns and rows)
#: replaced: a sensor's cluster defect (3×3); a longer or larger constant structure is the
#: picture's own (an on-screen reticle, text), not read-outs
MAX_CLUSTER = 9
#: more than this share of the frame in dead pixels and clusters, or of its columns (rows) dead
#: whole, is not a sensor's defect list (a frozen part of the picture): nothing is replaced
MAX_SHARE = 0.02
MAX_LINES = 0.05
#: after this many counted scene changes the map is settled and looks at every
#: :data:`SETTLED_EVERY`-th frame only (the update costs ≈ 3 ms at 640×512 on one core)
SETTLED_CHANGES = 64
SETTLED_EVERY = 8
#: subsample step (pixels, each direction) of the frame-level statistics
SUBSAMPLE = 4
#: the most counted frames remembered (by a hash of their subsample) so that none counts twice
MAX_SEEN = 4096


def change_threshold(change: np.ndarray, near: np.ndarray, frame: np.ndarray, step: int,
                     noise: Optional[float] = None) -> float:
    """The neighbourhood change (counts) that counts as a scene change around a pixel: the
    largest of :data:`CHANGE_SPAN` × the frame's 5-95 % span, :data:`CHANGE_NOISE` × the robust σ
    (1.4826 × MAD) of ``change - near`` (each pixel's change less its neighbourhood's: the
    sensor's temporal noise and fine texture) and :data:`CHANGE_STEPS` × ``step``, each on every
    :data:`SUBSAMPLE`-th pixel.

    Args:
        change: (H, W) float32, the frame minus the reference frame, counts.
        near: (H, W) float32, the :data:`NEIGHBOURHOOD` median of ``change``.
        frame: (H, W) the frame, counts.
        step: the camera's count step (≥ 1).
        noise: the noise term when the caller has it already (:func:`noise_term` of the same
            ``change`` and ``near``); None: computed here.

    Returns:
        The threshold in counts (> 0).
    """
    s = (slice(None, None, SUBSAMPLE), slice(None, None, SUBSAMPLE))
    lo, hi = np.percentile(frame[s], (5.0, 95.0))
    noise = noise_term(change, near) if noise is None else float(noise)
    return float(max(CHANGE_SPAN * float(hi - lo), noise, CHANGE_STEPS * max(int(step), 1)))


def noise_term(change: np.ndarray, near: np.ndarray) -> float:
    """:func:`change_threshold`'s noise term: :data:`CHANGE_NOISE` × the robust σ (1.4826 × MAD)
    of ``change - near`` on every :data:`SUBSAMPLE`-th pixel, counts ((H, W) float32 each)."""
    s = (slice(None, None, SUBSAMPLE), slice(None, None, SUBSAMPLE))
    resid = (change[s] - near[s]).ravel()
    return CHANGE_NOISE * 1.4826 * float(np.median(np.abs(resid - np.median(resid))))


def no_scene(frame: np.ndarray) -> bool:
    """Whether a frame holds no picture: its 5-95 % span on every :data:`SUBSAMPLE`-th pixel is
    zero (nine tenths of it one value: a blank frame, a lost signal's fill). (H, W) any real dtype."""
    lo, hi = np.percentile(frame[::SUBSAMPLE, ::SUBSAMPLE], (5.0, 95.0))
    return not hi > lo


def neighbourhood_median(change: np.ndarray) -> np.ndarray:
    """The :data:`NEIGHBOURHOOD` × :data:`NEIGHBOURHOOD` median of ``change`` ((H, W) float32,
    H, W ≥ 3; counts), the frame mirrored about its border pixel (OpenCV ``BORDER_REFLECT_101``).
    ``cv2.medianBlur`` alone repeats the border pixel, so a dead first or last column (row) filled
    15 of its own 25 neighbours and hid the scene's change around it: it was never called dead."""
    p = NEIGHBOURHOOD // 2
    padded = cv2.copyMakeBorder(change, p, p, p, p, cv2.BORDER_REFLECT_101)
    return cv2.medianBlur(padded, NEIGHBOURHOOD)[p:-p, p:-p]


def _nearest_live(live: np.ndarray, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """For every pixel, the index along ``axis`` of the nearest live pixel before it and after it
    (−1 / the axis length where there is none). (H, W) int32 each."""
    n = live.shape[axis]
    shape = [1, 1]
    shape[axis] = n
    idx = np.arange(n, dtype=np.int32).reshape(shape)
    before = np.maximum.accumulate(np.where(live, idx, -1), axis=axis)
    rev = np.flip(np.where(live, n - 1 - idx, -1), axis=axis)
    after = n - 1 - np.flip(np.maximum.accumulate(rev, axis=axis), axis=axis)
    return before.astype(np.int32), after.astype(np.int32)


def _stage(mask: np.ndarray) -> Tuple[np.ndarray, ...]:
    """One pass of :func:`replacement_plan`: the defects of ``mask`` that have a live pixel on their
    row or column, with their sources; (rows, cols, a_flat, b_flat, weight)."""
    h, w = mask.shape
    live = ~mask
    left, right = _nearest_live(live, 1)
    up, down = _nearest_live(live, 0)
    rows, cols = np.nonzero(mask)
    l, r, u, d = left[rows, cols], right[rows, cols], up[rows, cols], down[rows, cols]
    has_h = (l >= 0) | (r < w)
    has_v = (u >= 0) | (d < h)
    keep = has_h | has_v
    rows, cols, l, r, u, d, has_h, has_v = (v[keep] for v in (rows, cols, l, r, u, d, has_h, has_v))
    # the shorter gap: a missing side counts as a long one
    gap_h = np.where((l >= 0) & (r < w), r - l, 2 * (w + h))
    gap_v = np.where((u >= 0) & (d < h), d - u, 2 * (w + h))
    horizontal = has_h & ((gap_h <= gap_v) | ~has_v)
    # horizontal: sources on the row; vertical: on the column
    a_pos = np.where(horizontal, np.where(l >= 0, l, r), np.where(u >= 0, u, d))
    b_pos = np.where(horizontal, np.where(r < w, r, l), np.where(d < h, d, u))
    here = np.where(horizontal, cols, rows)
    span = (b_pos - a_pos).astype(np.float32)
    weight = np.where(span != 0, (here - a_pos) / np.where(span != 0, span, 1.0), 0.0).astype(np.float32)
    a_flat = np.where(horizontal, rows * w + a_pos, a_pos * w + cols).astype(np.int64)
    b_flat = np.where(horizontal, rows * w + b_pos, b_pos * w + cols).astype(np.int64)
    return rows, cols, a_flat, b_flat, weight


def replacement_plan(mask: np.ndarray) -> Optional[List[Tuple[np.ndarray, ...]]]:
    """Where each defect pixel of ``mask`` takes its value from (:func:`replace_defects`).

    Args:
        mask: (H, W) bool, True on defect pixels.

    Returns:
        Passes, each ``(rows, cols, src_a, src_b, weight_b)``: defects' coordinates, the flat
        indices of their two source pixels (the same one twice at a border) and the weight of the
        second (float32; value = (1 − w)·a + w·b). The first pass takes every defect with a live
        pixel on its row or column; a later one the rest (where a dead row crosses a dead column)
        from the pixels replaced before. None when ``mask`` marks nothing, or every pixel (no
        live source).

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    mask = np.array(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"a defect mask is one (H, W) frame, got shape {mask.shape}")
    if not mask.any() or mask.all():
        return None
    passes = []
    while mask.any():
        stage = _stage(mask)
        if stage[0].size == 0:   # cannot happen while a live pixel is left; a guard against looping
            break
        passes.append(stage)
        mask[stage[0], stage[1]] = False
    return passes


def replace_defects(counts: np.ndarray, mask: Optional[np.ndarray], plan=None, step: int = 1) -> Tuple[np.ndarray, int]:
    """``counts`` with the pixels of ``mask`` replaced by their live neighbours (module docstring:
    linear along the shorter gap; an integer frame's values rounded to multiples of ``step``).

    Args:
        counts: (H, W) frame, any real dtype (uint16 counts as a source delivers them).
        mask: (H, W) bool defect mask, or None.
        plan: :func:`replacement_plan` of ``mask`` when the caller keeps it (saves recomputing).
        step: the camera's count step (edge/normalize.py ``count_step``; 1: every integer).

    Returns:
        (a copy of ``counts`` with the defects replaced, same dtype and shape, or ``counts``
        itself when nothing is replaced; the number of pixels replaced). A mask of another shape
        than ``counts`` replaces nothing.
    """
    if mask is None or np.shape(mask) != np.shape(counts):
        return counts, 0
    plan = replacement_plan(mask) if plan is None else plan
    if not plan:
        return counts, 0
    out = np.array(counts, copy=True)
    flat = out.reshape(-1)
    integer = np.issubdtype(out.dtype, np.integer)
    n = 0
    for rows, cols, a_flat, b_flat, weight in plan:
        value = (1.0 - weight) * flat[a_flat].astype(np.float64) + weight * flat[b_flat].astype(np.float64)
        if integer:
            q = float(max(int(step), 1))
            info = np.iinfo(out.dtype)
            value = np.clip(np.rint(value / q) * q, info.min, info.max)
        out[rows, cols] = value.astype(out.dtype)
        n += int(rows.size)
    return out, n


class DefectMap:
    """One camera's dead and stuck read-outs, learned from its frames (module docstring).

    Feed every frame to :meth:`update` (FFC frames excepted: a shutter image is not the scene),
    read :attr:`mask`, and :meth:`repair` frames with it. :meth:`reset` on a camera change.
    """

    def __init__(self):
        #: times the estimate was dropped (:meth:`reset`: a camera change, a new frame size)
        self.resets = 0
        #: frames repaired and pixels replaced in them, since the start
        self.repaired_frames = 0
        self.repaired_pixels = 0
        self._clear()

    def _clear(self) -> None:
        self._ref: Optional[np.ndarray] = None
        self._floor: Optional[float] = None   # the quick look's threshold (:meth:`_may_have_changed`)
        self._noise: Optional[float] = None   # the noise term of the last full test (:func:`noise_term`)
        #: frames that took the full test (the quick look said the scene may have changed)
        self.full_tests = 0
        self._wait = 1    # frames between full tests while they count nothing (doubles to SETTLED_EVERY)
        self._skip = 0    # full tests still to skip
        self._seen: set = set()   # hashes of the frames counted (:meth:`update`: no frame counts twice)
        self._rows = (0, 0)
        self._step = 1
        self._changes: Optional[np.ndarray] = None   # per pixel: scene changes around it
        self._still: Optional[np.ndarray] = None     # ... of which it stayed exactly the same
        self._varied: Optional[np.ndarray] = None    # per pixel: its value differed at a full test
        #: frames offered to :meth:`update` and those counted as a scene change, for this camera
        self.frames = 0
        self.scene_changes = 0
        #: (H, W) bool defect pixels, None while nothing is found (or too much: :attr:`refused`)
        self.mask: Optional[np.ndarray] = None
        #: pixels found dead beyond :data:`MAX_SHARE` / :data:`MAX_LINES`: not replaced (0: not refused)
        self.refused = 0
        self._plan = None

    def reset(self) -> None:
        """Forget the camera's estimate (a camera change): the next frame starts a new one."""
        self._clear()
        self.resets += 1

    def update(self, counts: np.ndarray, status_rows: Tuple[int, int] = (0, 0)) -> bool:
        """Take one frame's evidence.

        Args:
            counts: (H, W) frame as the source delivers it (uint16 counts; any real dtype).
            status_rows: (top, bottom) rows that are not image (edge/normalize.py ``status_rows``:
                a Lepton's telemetry); they give no evidence, and a column or row is called dead
                on the image rows of the newest frame.

        Returns:
            True when the frame was counted as a scene change (the estimate may have changed).
            A frame of another size than the previous one starts a new estimate; a blank frame
            (:func:`no_scene`) gives no evidence and is never the reference (the count step is
            measured on the first frame with a picture).
        """
        x = np.asarray(counts)
        if x.ndim != 2 or min(x.shape) < NEIGHBOURHOOD:
            return False
        rows = (int(status_rows[0]), int(status_rows[1]))
        if self._ref is None or self._ref.shape != x.shape:
            if self._ref is not None:
                self.reset()
            if no_scene(x):
                return False   # a blank frame (a grabber's black start) is no reference, its step none
            from .normalize import count_step

            self._ref = x.astype(np.float32)
            self._seen.add(hash(x[::SUBSAMPLE, ::SUBSAMPLE].tobytes()))
            self._rows = rows
            self._step = count_step(x) if np.issubdtype(x.dtype, np.integer) else 1
            self._changes = np.zeros(x.shape, np.uint16)
            self._still = np.zeros(x.shape, np.uint16)
            self._varied = np.zeros(x.shape, bool)
            return False
        self.frames += 1
        self._rows = rows   # the newest frame's: found anew each frame, no reason to start again
        if self.scene_changes >= SETTLED_CHANGES and self.frames % SETTLED_EVERY:
            return False
        if not self._may_have_changed(x):
            return False
        if self._skip > 0:
            # full tests that counted nothing back off: the reference stays until a change counts,
            # so a later test measures what accumulated meanwhile (a scene whose motion covers
            # under a quarter of the frame took the ≈ 2 ms test on every frame and counted none)
            self._skip -= 1
            return False
        if no_scene(x):
            # a blank frame (signal lost, a grabber's black or grey fill) differs from the scene
            # at every pixel, a dead one's too: counted, it would prove every read-out live for
            # good. It gives no evidence and the reference stays
            self._wait = min(2 * self._wait, SETTLED_EVERY)
            self._skip = self._wait - 1
            return False
        frame = x.astype(np.float32)
        change = frame - self._ref
        near = neighbourhood_median(change)
        self.full_tests += 1
        self._noise = noise_term(change, near)
        # a dead read-out returns the same value whatever the scene and the noise do: one that
        # ever differed from the reference is live, wherever the scene moved or not (the noisy sky
        # above a clipped hot pole is no part of a dead column)
        self._varied |= change != 0.0
        threshold = change_threshold(change, near, frame, self._step, noise=self._noise)
        moved = np.abs(near) >= threshold
        top, bottom = rows
        h = x.shape[0]
        moved[:top] = False
        moved[h - bottom:] = False
        if np.count_nonzero(moved) < CHANGED_SHARE * (h - top - bottom) * x.shape[1]:
            self._wait = min(2 * self._wait, SETTLED_EVERY)
            self._skip = self._wait - 1
            return False   # the reference stays: a slow change accumulates until it counts
        # a frame seen before (a looped recording, a repeated frame) is no new evidence: a pixel equal
        # by chance between two frames would be so again every time the pair comes round
        key = hash(x[::SUBSAMPLE, ::SUBSAMPLE].tobytes())
        if key in self._seen:
            self._ref, self._floor = frame, None
            return False
        if len(self._seen) < MAX_SEEN:
            self._seen.add(key)
        # a counter never wraps: a pixel past 65535 changes has told all it can
        moved &= self._changes < np.iinfo(np.uint16).max
        self._changes += moved
        self._still += moved & (change == 0.0)
        self._ref, self._floor = frame, None
        self._wait, self._skip = 1, 0
        self.scene_changes += 1
        self._refresh()
        return True

    def _may_have_changed(self, x: np.ndarray) -> bool:
        """A quick look on every :data:`SUBSAMPLE`-th pixel before the full test: where the
        neighbourhood median moved by the threshold for :data:`CHANGED_SHARE` of the pixels, at
        least about half of each neighbourhood moved that much, so a frame in which under a
        quarter of that share of the pixels moved by the threshold's floor (the span and step
        terms of :func:`change_threshold`, on the reference frame's span; the noise term only
        raises it) cannot count: a static camera costs this look alone. The noise term the last
        full test measured (:attr:`_noise`, 2σ of the camera's temporal noise) joins the floor:
        white noise alone moves 4.6 % of the pixels past 2σ, under the look's 6.25 %. Without it, a
        camera whose per-pixel noise exceeds the span term (the virtual camera with
        ``degrade=noise``) took the full test (≈ 2 ms at 640×512) on every frame and counted none.
        Should the camera's noise fall since, a real change smaller than the old term waits for
        the next full test (a static camera's floor is re-measured each time the look lets a frame
        through), which delays the evidence and never adds any."""
        s = (slice(None, None, SUBSAMPLE), slice(None, None, SUBSAMPLE))
        ref = self._ref[s]
        if self._floor is None:   # the reference frame's, kept until the reference changes
            lo, hi = np.percentile(ref, (5.0, 95.0))
            self._floor = max(CHANGE_SPAN * float(hi - lo), CHANGE_STEPS * max(int(self._step), 1))
        floor = max(self._floor, self._noise) if self._noise is not None else self._floor
        moved = np.count_nonzero(np.abs(x[s].astype(np.float32) - ref) >= floor)
        return moved >= 0.25 * CHANGED_SHARE * ref.size

    def _refresh(self) -> None:
        constant = (self._still == self._changes) & ~self._varied
        dead = (self._changes >= MIN_CHANGES) & constant
        # a column (row) read-out fails as a whole: one amplifier per column (thermal_io.md §5). A
        # column none of whose pixels ever moved with the scene, over as many scene changes in all
        # as half its pixels called dead on their own would give (MIN_CHANGES × half its height),
        # is dead along its whole height, its pixels in flat parts of the scene (too few changes
        # around them to be called on their own) too
        top, bottom = self._rows
        h, w = dead.shape
        image = slice(top, h - bottom)
        changes = self._changes[image].astype(np.int64)
        never_moved = constant[image]
        columns = never_moved.all(axis=0) & (changes.sum(axis=0) * 2 >= MIN_CHANGES * (h - top - bottom))
        rows = never_moved.all(axis=1) & (changes.sum(axis=1) * 2 >= MIN_CHANGES * w)
        lines = np.zeros_like(dead)
        lines[image][:, columns] = True
        lines[image][rows] = True
        # outside them, single pixels and small clusters only (MAX_CLUSTER), among read-outs each
        # seen live or dead: a constant pixel at the edge of a constant structure (the corner of an
        # OSD's text, whose inside saw no change around it) is the structure's, not a read-out's
        rest = dead & ~lines
        if rest.any():
            known = ((self._still < self._changes) | dead).astype(np.uint8)
            rest &= cv2.erode(known, np.ones((3, 3), np.uint8)).astype(bool)
        if rest.any():
            # constant read-outs within the neighbourhood of each other are one structure: a
            # sensor's defects are independent and sparse (two within 2 pixels of each other are a
            # rare pair, together still a small group), while the strokes of an OSD's glyphs (the
            # dots of a colon, a decimal point, a thin digit) are separate components a pixel or two
            # apart, each under MAX_CLUSTER, that together are text
            constant = (dead & ~lines).astype(np.uint8)
            near = cv2.dilate(constant, np.ones((NEIGHBOURHOOD, NEIGHBOURHOOD), np.uint8))
            count, labels = cv2.connectedComponents(near, connectivity=8)
            area = np.bincount(labels[constant.astype(bool)], minlength=count)
            small = area <= MAX_CLUSTER
            small[0] = False
            rest &= small[labels]   # each cluster lies in one group: at most MAX_CLUSTER pixels too
        dead = lines | rest
        n = int(np.count_nonzero(dead))
        too_many = np.count_nonzero(rest) > MAX_SHARE * dead.size or \
            np.count_nonzero(columns) > MAX_LINES * w or np.count_nonzero(rows) > MAX_LINES * (h - top - bottom)
        self.refused = n if too_many else 0
        mask = dead if 0 < n and not self.refused else None
        if mask is None or self.mask is None or not np.array_equal(mask, self.mask):
            self.mask = mask
            self._plan = None if mask is None else replacement_plan(mask)

    def repair(self, counts: np.ndarray, count: bool = True) -> Tuple[np.ndarray, int]:
        """``counts`` with the camera's defects replaced (:func:`replace_defects`, rounded to the
        count step of the camera's first frame), counted in :attr:`repaired_frames` /
        :attr:`repaired_pixels` unless ``count`` is False (a second look at a counted frame).

        Args:
            counts: (H, W) frame, any real dtype.
            count: add the frame to the counters.

        Returns:
            (the repaired copy, or ``counts`` itself when nothing is replaced; pixels replaced).
        """
        if self.mask is None or self._plan is None or np.shape(counts) != self.mask.shape:
            return counts, 0
        out, n = replace_defects(counts, self.mask, self._plan, self._step)
        if count:
            self.count_repaired(n)
        return out, n

    def count_repaired(self, n: int) -> None:
        """Count one frame with ``n`` pixels replaced (:meth:`repair` with ``count``; a caller
        that reuses an uncounted repair of the frame calls this instead of repairing again)."""
        if n:
            self.repaired_frames += 1
            self.repaired_pixels += int(n)

    def summary(self) -> Dict[str, int]:
        """``pixels`` (defects found now), ``columns`` / ``rows`` (columns / rows at least half
        of whose image pixels are defects), ``scene_changes`` (frames counted for this camera),
        ``refused`` (defects found beyond :data:`MAX_SHARE` or :data:`MAX_LINES`, not replaced; 0)."""
        if self.mask is None:
            return {"pixels": 0, "columns": 0, "rows": 0, "scene_changes": self.scene_changes,
                    "refused": self.refused}
        h, w = self.mask.shape
        top, bottom = self._rows
        image = self.mask[top:h - bottom]
        return {"pixels": int(np.count_nonzero(self.mask)),
                "columns": int(np.count_nonzero(image.sum(axis=0) * 2 >= image.shape[0])),
                "rows": int(np.count_nonzero(image.sum(axis=1) * 2 >= w)),
                "scene_changes": self.scene_changes, "refused": self.refused}

    def stats(self) -> Dict[str, int]:
        """:meth:`summary` plus ``repaired_frames``, ``repaired_pixels`` and ``resets`` (the
        ``/stats.json`` section ``defects``, edge/pipeline/stats.py ``DefectStats``)."""
        return {**self.summary(), "repaired_frames": self.repaired_frames,
                "repaired_pixels": self.repaired_pixels, "resets": self.resets}
