"""Hot-swap of the model bundle in a running pipeline (issue 13 item 5).

:class:`HotSwapRestorer` looks like a :class:`~tir.engines.restorer.Restorer` to the pipeline
(``infer``, ``observe``, ``engine``, ``route``, ``status`` …: everything else is the active
restorer's) and can replace its bundle while frames flow:

- a reload (:meth:`request_reload`: ``POST /bundle/reload``, or the manifest watcher of
  ``tir run --watch-bundle``) builds a new Restorer on the bundle folder in a background thread:
  :func:`~tir.engines.bundle.load_bundle` checks the schema and every listed file's sha256, the
  backend is checked, and the router and the current route's engine are loaded (so the first
  frame after the swap does not wait for them);
- the infer thread swaps at the start of its next ``infer``/``observe`` call, i.e. between two
  frames: no frame is dropped, repeated or reordered by the swap. The routing state (current
  route, if the new bundle has it; the student's prompt mix, if the new student has the same
  prompt slots), the counters, the contrast and blur gates' camera history (their
  references and demoted counts: the camera is the same), the FPN gate's counters and the column
  offsets it measured (removed until the next verdict, as without a swap) carry over;
  the old engines are closed in another thread; ``last_swap`` holds the frame number, the load
  time, the swap's own time and the infer time of the first frame on the new bundle
  (``first_frame_ms``);
- a file of the *running* bundle that fails its sha256 check when it is first needed (a route
  loads on the first frame that routes to it: a publish rewriting the folder file by file, or a
  tampered file) no longer stops the run: frames pass through, the file is tried again every
  :data:`FILE_RETRY_S` s, ``status()["bundle"]["file_error"]`` says why;
- a load that fails (tampered or missing file, schema error, a forced ``--task`` the new
  bundle lacks, another input normalisation than the running bundle's: the pipeline's
  normaliser is built once per run; no router while the run routes automatically) leaves the
  running bundle in place; ``status()["bundle"]["reload_error"]`` says
  why (status line, the page, ``/stats.json``);
- the watcher polls ``manifest.json`` every ``poll_s`` seconds and reloads when its ``version``
  is higher than the running bundle's (``tir learn`` bumps it as its last write, so a bundle
  being rewritten in place is not picked up half way); the watcher does not retry a manifest that
  failed until it changes, an explicit :meth:`request_reload` always tries again.

An online router adaptation (``tir run --adapt``) belongs to the old router and is not carried
over; the new bundle's own (offline) adaptation map is used.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .bundle import MANIFEST, BundleError

log = logging.getLogger(__name__)

#: seconds between two tries of a bundle file that failed its check on load (frames pass through meanwhile)
FILE_RETRY_S = 1.0
#: counters of a Restorer carried over a swap, so stats stay continuous
CARRIED = ("frames", "switches", "unknowns", "decisions", "uncertain", "skipped_ffc", "skipped_scene_free", "pinned_frames",
           "dead_column_frames", "dead_columns", "camera_changes", "observed")


def manifest_state(folder) -> tuple:
    """(sha256 of manifest.json's bytes, its ``version`` or None) of a bundle folder; (None, None)
    when it cannot be read (being replaced, missing)."""
    from ..edge import jsontext

    try:
        data = (Path(folder) / MANIFEST).read_bytes()
    except OSError:
        return None, None
    try:
        version = jsontext.loads(data).get("version", 1)
    except (ValueError, AttributeError):
        version = None
    return hashlib.sha256(data).hexdigest(), version


class HotSwapRestorer:
    """A Restorer whose bundle can be replaced between two frames; see the module docstring.

    ``restorer``: the running Restorer; ``factory(path) -> Restorer`` builds one on a bundle
    folder with the run's options (backend, threads, forced task). ``watch``: poll the bundle's
    manifest every ``poll_s`` seconds (:meth:`start_watch`).

    Raises:
        ValueError: ``poll_s`` <= 0.
    """

    def __init__(self, restorer, factory: Callable[[Path], object], watch: bool = False, poll_s: float = 1.0):
        if poll_s <= 0:
            raise ValueError(f"the manifest poll interval must be > 0 s, got {poll_s}")
        self.active = restorer
        self._factory = factory
        self.path = Path(restorer.bundle.path)
        self.poll_s = float(poll_s)
        self.watching = bool(watch)
        self._lock = threading.Lock()
        self._pending = None           # (Restorer, info) ready to swap in
        self._shape = None             # the last batch's shape, to warm a new bundle with
        self._loader: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._watcher: Optional[threading.Thread] = None
        self._fingerprint, _ = manifest_state(self.path)
        self._failed_fingerprint: Optional[str] = None
        self.swaps = 0
        self.requests = 0
        self.reload_state = "idle"     # idle | loading | ready | failed | unchanged
        self.reload_error: Optional[str] = None
        self.file_error: Optional[str] = None   # a file of the running bundle failed its check on load
        self._file_error_at = 0.0
        self.passed_through = 0                # frames passed through because of it
        self.last_swap: Optional[dict] = None
        if watch:
            self.start_watch()

    # ------------------------------------------------------------------ delegation
    def __getattr__(self, name):
        # only called for names this object lacks: the active restorer's attribute
        if name.startswith("_") or name == "active":
            raise AttributeError(name)
        return getattr(self.active, name)

    @property
    def bundle(self):
        """The active restorer's :class:`~tir.engines.bundle.Bundle`."""
        return self.active.bundle

    @property
    def route(self) -> str:
        """The active restorer's route (``passthrough`` for clean / none yet)."""
        return self.active.route

    @property
    def current(self):
        """The active restorer's current task (None before the first decision)."""
        return self.active.current

    @property
    def decisions(self) -> int:
        """Router decisions so far (carried over swaps)."""
        return self.active.decisions

    @property
    def last_decision(self):
        """The active restorer's last verdict with its embedding, or None."""
        return self.active.last_decision

    # ------------------------------------------------------------------ the frame path
    def infer(self, batch, meta=None):
        """Restore one batch with the active restorer, after swapping in a loaded bundle.

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 frames in [0, 1].
            meta: the frames' meta, as :meth:`Restorer.infer` takes it.

        Returns:
            (N, 1, H, W) float32 restored frames. The first batch after a swap records its infer
            time in ms as ``last_swap["first_frame_ms"]``.

        Raises:
            ValueError, EngineError: as :meth:`Restorer.infer`.
        """
        self._shape = getattr(batch, "shape", None)
        swapped = self.swap_if_ready()
        if not swapped and self.file_error is not None and time.monotonic() - self._file_error_at < FILE_RETRY_S:
            return self._pass_through(batch)
        t0 = time.perf_counter()   # the first frame on the new bundle: its infer time is the swap's cost
        try:
            out = self.active.infer(batch, meta=meta)
        except BundleError as exc:  # a route, the router or the student changed on disk since the load
            self._file_failed(exc)
            return self._pass_through(batch)
        self.file_error = None
        if swapped:
            self.last_swap["first_frame_ms"] = round(1000.0 * (time.perf_counter() - t0), 1)
            self.last_swap["first_frame_route"] = self.active.route
        return out

    def _file_failed(self, exc) -> None:
        """A file of the running bundle failed its sha256 check when it was loaded (lazily, on the
        first frame that needs it): being rewritten by a publish that has not reached its
        manifest yet, or tampered with. Before, the infer stage failed and ``tir run`` stopped
        (exit 1); now frames pass through, retried every :data:`FILE_RETRY_S` s, until the file is
        restored or a new version is swapped in; ``file_error`` (status line, page,
        ``/stats.json`` ``model.bundle.file_error``) says so."""
        message = (f"{str(exc).splitlines()[0]}; frames pass through until it is restored or a new version is "
                   "loaded")
        if message != self.file_error:
            log.warning("%s", message)
        self.file_error = message
        self._file_error_at = time.monotonic()

    def _pass_through(self, batch):
        """``batch`` unchanged as the (N, 1, H, W) float32 a restorer returns."""
        x = np.asarray(batch, dtype=np.float32)
        self.passed_through += 1
        return x.reshape((-1, 1) + x.shape[-2:])

    def observe(self, batch, meta=None):
        """Swap in a loaded bundle if one is ready, then route on the batch (:meth:`Restorer.observe`).

        ``batch`` is (H, W), (N, H, W) or (N, 1, H, W) float32 in [0, 1]; returns the decision taken,
        or None when the router did not run.
        """
        self._shape = getattr(batch, "shape", None)
        self.swap_if_ready()
        try:
            return self.active.observe(batch, meta)
        except BundleError as exc:  # router.onnx changed on disk since the load: as in :meth:`infer`
            self._file_failed(exc)
            return None

    def engine(self, task: str):
        """The active restorer's engine for route ``task`` (:meth:`Restorer.engine`)."""
        return self.active.engine(task)

    def swap_if_ready(self) -> bool:
        """Swap in a loaded bundle (called by the infer thread between two frames)."""
        if self._pending is None:
            return False
        t0 = time.perf_counter()
        with self._lock:
            new, info = self._pending
            self._pending = None
        old = self.active
        for key in CARRIED:
            setattr(new, key, getattr(old, key))
        # the gates go on with the same camera: the contrast and blur gates' history, every gate's counters
        for gate in ("contrast_gate", "blur_gate", "fpn_gate"):
            old_gate, new_gate = getattr(old, gate, None), getattr(new, gate, None)
            if old_gate is not None and new_gate is not None:
                new_gate.carry_from(old_gate)
        if not getattr(new, "forced", False):
            carry = old.current
            if carry is not None and (carry == "clean" or carry in new.routes):
                new.current = carry
            # the student's prompt mix goes on where the new student has the same prompt slots
            weights = getattr(old, "prompt_weights", None)
            if weights is not None and getattr(new, "uses_student", False) and new.prompts == old.prompts:
                new.prompt_weights = weights
            # the column offsets go with the FPN gate (carry_from above), the counts they stood for here
            new._offsets_span = getattr(old, "_offsets_span", None)
            # the start-up warming (every frame routed until the gates have references) goes on where
            # it was: the new restorer would begin it afresh, though the carried gates may hold them
            # where it was, unless the swap lost a reference the old gates had (a blur gate measuring
            # with another σ_min starts its history afresh): then the new restorer's own warm-up
            # runs, as after a camera change (the router's blur verdict ran unchecked on 64 clean frames)
            warm_left = getattr(old, "_warm_left", 0)
            cold = getattr(new, "_cold", None)
            if warm_left <= 0 and callable(cold) and cold() and not getattr(old, "_cold", lambda: False)():
                warm_left = new._warm_left
            new._warm_left = warm_left
            # the pinned reference's size (the gates' pins go with carry_from), or why it was let go
            new._pinned_size = getattr(old, "_pinned_size", None)
            new.reference_dropped = getattr(old, "reference_dropped", None)
        self.active = new
        self.swaps += 1
        info.update(at_frame=int(new.frames), swap_ms=round(1000.0 * (time.perf_counter() - t0), 3),
                    date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        self.last_swap = info
        self.reload_state = "idle"
        log.info("bundle swapped at frame %d: %s version %s -> %s (routes: %s)", new.frames, info["name"],
                 info["from_version"], info["to_version"], ", ".join(new.routes))
        # the old engines are closed off the frame path (nothing uses them any more)
        threading.Thread(target=self._close_old, args=(old,), name="tir-bundle-close", daemon=True).start()
        return True

    @staticmethod
    def _close_old(old) -> None:
        try:
            old.close()
        except Exception as exc:  # the old engines' close must not stop anything
            log.warning("closing the old bundle's engines: %s: %s", type(exc).__name__, exc)

    # ------------------------------------------------------------------ loading
    def request_reload(self) -> bool:
        """Load the bundle folder again in the background (``POST /bundle/reload``); False
        when a load is already under way. The result is in :meth:`status`."""
        with self._lock:
            self.requests += 1
            if self._loader is not None and self._loader.is_alive():
                return False
            self.reload_state = "loading"
            self._loader = threading.Thread(target=self._load, name="tir-bundle-reload", daemon=True)
            self._loader.start()
        return True

    def wait_loaded(self, timeout: float = 30.0) -> bool:
        """Wait until a background load has finished (tests, scripted runs)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)
            return not loader.is_alive()
        return True

    def _load(self) -> None:
        fingerprint, version = manifest_state(self.path)
        old = self.active
        if fingerprint is not None and fingerprint == self._fingerprint:
            self.reload_state = "unchanged"
            log.info("bundle reload: %s unchanged (version %s already running)", self.path, old.bundle.version)
            return
        t0 = time.perf_counter()
        new = None
        try:
            new = self._factory(self.path)
            try:
                self._check_normalisation(new, old)
                self._check_routing(new, old)
            except ValueError:
                new.close()
                raise
            self._warm(new, old, self._shape)
        except Exception as exc:
            if new is not None:   # its engines loaded so far (check_networks loads them all) are let go
                try:
                    new.close()
                except Exception as close_exc:
                    log.warning("closing the refused bundle: %s", close_exc)
            self._failed_fingerprint = fingerprint
            self.reload_error = (f"bundle reload failed, version {old.bundle.version} keeps running: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else exc}")
            self.reload_state = "failed"
            log.warning("%s", self.reload_error)
            return
        info = {"name": new.bundle.name, "from_version": old.bundle.version, "to_version": new.bundle.version,
                "routes": list(new.routes), "load_ms": round(1000.0 * (time.perf_counter() - t0), 1)}
        with self._lock:
            self._pending = (new, info)
            self._fingerprint = fingerprint
            self.reload_error = None
            self.reload_state = "ready"

    @staticmethod
    def _check_normalisation(new, old) -> None:
        """Refuse a new bundle whose input normalisation (the manifest's ``normalisation``
        percentiles, :func:`~tir.engines.loading.normalizer_for`) differs from the running one's:
        ``tir run`` builds the pipeline's Preprocess/Postprocess normaliser once, so such a bundle
        was swapped in and fed frames scaled for the old one, silently.

        Raises:
            ValueError: naming both percentile pairs and the restart that applies the new one.
        """
        from .loading import normalizer_for

        def pct(model):
            norm = normalizer_for(model)
            return (float(norm.low_pct), float(norm.high_pct))

        (nl, nh), (ol, oh) = pct(new), pct(old)
        if (nl, nh) != (ol, oh):
            raise ValueError(f"the new bundle normalises its input with the {nl:g}-{nh:g} percentiles, the running one "
                             f"with {ol:g}-{oh:g}; the pipeline's normalisation is fixed for a run: restart tir run "
                             "to use it")

    @staticmethod
    def _check_routing(new, old) -> None:
        """Refuse a new bundle without a router while the running one routes automatically (no
        ``--task``): the route running at the swap was carried over and, with no router to change
        it, ran on every frame from then on (clean frames included), while the new Restorer's own
        warning said frames pass through.

        Raises:
            ValueError: naming the fix (a bundle with a router, or a restart with ``--task``).
        """
        if getattr(old, "forced", False) or getattr(old, "router_info", None) is None:
            return
        if getattr(new, "router_info", None) is None:
            raise ValueError(f"the new bundle has no router, and this run routes automatically (no --task): it would "
                             f"run one route on every frame; publish a bundle with a router, or restart tir run with "
                             f"--task ({', '.join(new.routes)})")

    @staticmethod
    def _warm(new, old, shape) -> None:
        """Load the new bundle's router and what will run the current task (its route, or the
        student where the new bundle's deploy says so) before the swap and run them once on a
        zero frame of the stream's shape (when a frame has been seen)."""
        route = old.current if old.current not in (None, "clean") else None
        if getattr(new, "forced", False):
            route = new.current if new.current not in (None, "clean") else None
        tasks = [route] if route is not None and route in new.routes else []
        if callable(getattr(new, "check_networks", None)):
            new.check_networks()   # every network the new bundle may run loads and runs, or the swap is refused
        if callable(getattr(new, "preload", None)):
            new.preload(router=True, tasks=tasks, shape=shape)
        else:
            for task in tasks:
                new.engine(task)

    # ------------------------------------------------------------------ watching
    def start_watch(self) -> None:
        """Poll the manifest in a daemon thread (``tir run --watch-bundle``)."""
        self.watching = True
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="tir-bundle-watch", daemon=True)
            self._watcher.start()

    def check_manifest(self) -> bool:
        """One poll: start a reload when the manifest's version is above the running one's
        (and it is not a version that already failed). Returns True when a reload started."""
        fingerprint, version = manifest_state(self.path)
        if fingerprint is None or fingerprint == self._fingerprint or fingerprint == self._failed_fingerprint:
            return False
        if not isinstance(version, int) or version <= self.active.bundle.version:
            return False
        if self._pending is not None:
            return False
        return self.request_reload()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_manifest()
            except Exception as exc:  # the watcher must outlive a bad poll
                log.warning("bundle watch: %s: %s", type(exc).__name__, exc)

    # ------------------------------------------------------------------ status / close
    def status(self) -> dict:
        """The active restorer's status plus ``bundle``: name, path, version, tasks, router_tasks,
        swaps, reload (idle/loading/ready/failed/unchanged), reload_error, file_error (a file of the
        running bundle that failed its check on load: frames pass through), passed_through (frames
        passed through for it), last_swap (frame number and times in ms) and watch.
        """
        status = dict(self.active.status())
        b = self.active.bundle
        status["bundle"] = {"name": b.name, "path": str(b.path), "version": b.version, "tasks": list(b.tasks),
                            "router_tasks": list((b.router or {}).get("tasks") or []), "swaps": self.swaps,
                            "reload": self.reload_state, "reload_error": self.reload_error,
                            "file_error": self.file_error, "passed_through": self.passed_through,
                            "last_swap": self.last_swap, "watch": self.watching}
        return status

    def close(self) -> None:
        """Stop the watcher and wait for a load in progress (up to 30 s), then close the pending and the
        active restorer.
        """
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(2 * self.poll_s + 1.0)
        if self._loader is not None:
            self._loader.join(30.0)
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            pending[0].close()
        self.active.close()

    def __repr__(self) -> str:
        return f"<HotSwapRestorer {self.active!r} swaps={self.swaps}>"
