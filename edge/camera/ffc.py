"""Flat-field correction in the pipeline: trigger FFC, mark the frames it spoils, report stats.

During FFC the camera closes its shutter and recomputes per-pixel offsets; the video shows the
shutter or freezes for a fraction of a second (thermal_io.md §5). Those frames must not feed
the router's statistics. :class:`FFCController` owns the camera client in one background
thread (periodic / on-demand RunFFC, ~1 Hz polling of FPA temperature and FFC status) and
keeps a few time windows [FFC start, FFC end + settle]; :meth:`FFCController.annotate` only
compares a frame's capture time with them, so the frame path never waits on the serial port.

Pipeline hook (capture thread, right after the source returns a frame)::

    ffc = FFCController(client, period_s=300)   # or open_camera_control(port) for the client
    ffc.start()
    frame = source.read(timeout)
    if frame is not None:
        ffc.annotate(frame)                      # sets frame.meta["ffc"] = True / False
    ...
    if not frame.meta.get("ffc"): router.observe(frame)   # skip shutter frames in statistics
    stats.update(ffc.stats())                    # fpa_temp_c, ffc_state, last_ffc_age_s, ffc_count
    ffc.close()
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Callable, Deque, List, Optional

from ..errors import InputError
from ..frame import Frame, now
from .boson import (BosonBadCommand, BosonError, BosonFeatureNotEnabled,
                    BosonUndefinedFunction, FFCStatus)
from .formats import CAMERAS
from .formats import PROTOCOLS as PROTOCOL_REGISTRY
from .formats import usb_ids
from .tau import TauError, TauFeatureNotEnabled, TauUndefinedFunction

log = logging.getLogger(__name__)

FFC_META_KEY = "ffc"
CONTROL_ERRORS = (BosonError, TauError, OSError)
PROTOCOLS = tuple(PROTOCOL_REGISTRY.names())  # names, for argparse choices (the registry: formats.py)
_BUSY = (FFCStatus.IMMINENT, FFCStatus.IN_PROGRESS)

# Replies meaning "this camera/firmware does not implement that function" (not a link fault):
# Boson FLR_UNDEFINED_FUNCTION 0x0207, R_CAM_DSPCH_BAD_CMD_ID 0x0161, FEATURE_NOT_ENABLED 0x01B0
# (ReturnCodes.h, thermal_io.md §1.6); Tau2 status 0x06 undefined function, 0x0A feature not
# enabled (thermal_io.md §2). Boson firmware versions differ in which optional commands they have.
UNSUPPORTED = (BosonUndefinedFunction, BosonBadCommand, BosonFeatureNotEnabled,
               TauUndefinedFunction, TauFeatureNotEnabled)

# How long to wait for an FFC the camera acknowledged when its firmware offers no way to see
# it end: the shutter closes, N frames are integrated (Boson default 8) and the video freezes
# "for a fraction of a second" (thermal_io.md §5), so 1 s covers it.
ASSUMED_FFC_S = 1.0


class FFCProgress:
    """Whether an FFC is running, asked the best way this camera's firmware supports.

    Tries, in order, ``get_ffc_status`` (Boson bosonGetFFCStatus 0x00050054: IMMINENT /
    IN_PROGRESS = busy) and ``get_ffc_in_progress`` (bosonGetFFCInProgress 0x0005000C, non-zero
    = busy); a query the client lacks or the camera answers with an :data:`UNSUPPORTED` code is
    dropped for good (logged once). ``method`` names the query in use, "none" when no query is
    left: then :meth:`busy` returns None and the caller waits the assumed FFC time.
    """

    QUERIES = (("ffc-status", "get_ffc_status"), ("ffc-in-progress", "get_ffc_in_progress"))

    def __init__(self, client):
        self.client = client
        self._queries = [(name, method) for name, method in self.QUERIES
                         if callable(getattr(client, method, None))]
        self.unsupported = []  # queries the camera refused as unsupported
        self.state = "unknown"  # last answer: FFC status name, or "in_progress" / "idle"

    @property
    def method(self) -> str:
        """The progress query in use ("ffc-status" or "ffc-in-progress"), "none" when no query is left."""
        return self._queries[0][0] if self._queries else "none"

    def busy(self) -> Optional[bool]:
        """True while an FFC runs, False when none does, None when no query is supported.
        Link errors (timeouts, CRC, ...) are raised as the client raises them."""
        while self._queries:
            name, method = self._queries[0]
            try:
                value = getattr(self.client, method)()
            except UNSUPPORTED as exc:
                self._queries.pop(0)
                self.unsupported.append(name)
                log.info("camera does not support %s (%s); %s", name, exc,
                         f"using {self.method}" if self._queries else
                         f"FFC completion will be assumed after {ASSUMED_FFC_S:g} s")
                continue
            if name == "ffc-status":
                self.state = getattr(value, "name", str(value)).lower()
                return value in _BUSY
            self.state = "in_progress" if value else "idle"
            return bool(value)
        return None


class CameraNotFound(LookupError, InputError):
    """No serial port of a known camera is plugged in; the message lists the ports that exist."""


#: how a message asks for the port: the option is ``--camera-port`` in ``tir run`` (whose
#: ``--port`` is the HTTP output's) and ``--port`` in ``tir camera``
NAME_THE_PORT = "name the port: tir run --camera-port DEV, tir camera --port DEV"


def find_boson_port(sysfs_root: str = "/sys", dev_root: str = "/dev") -> str:
    """Path of the first serial port with the Boson's USB VID:PID (09CB:4007, thermal_io.md §1.1)."""
    return find_control_port("boson", sysfs_root, dev_root)


def find_control_port(protocol: str, sysfs_root: str = "/sys", dev_root: str = "/dev") -> str:
    """Path of the first serial port whose USB VID:PID belongs to a camera descriptor with this
    control ``protocol`` (:data:`~tir.edge.camera.formats.CAMERAS`). Raises CameraNotFound
    when none is plugged in, or when no descriptor with that protocol has a USB id (a Tau2 sits
    behind a generic USB-serial adapter: pass the port)."""
    from ..sources.devices import describe_serial_ports, list_serial_ports

    ids = usb_ids(protocol)
    if not ids:
        raise CameraNotFound(f"a {protocol} camera has no USB ID of its own; {NAME_THE_PORT} "
                             f"({describe_serial_ports(sysfs_root, dev_root)})")
    for port in list_serial_ports(sysfs_root, dev_root):
        if (port.vid, port.pid) in ids:
            return port.path
    names = ", ".join(e.title for e in CAMERAS if e.protocol == protocol)
    said = ", ".join(f"{v:04x}:{p:04x}" for v, p in ids)
    raise CameraNotFound(f"no {names} serial port (USB {said}) found; "
                         f"{describe_serial_ports(sysfs_root, dev_root)}; {NAME_THE_PORT}")


def open_camera_control(port: Optional[str] = None, protocol: str = "boson", timeout: float = 1.0,
                        retries: int = 2, **find_kwargs):
    """A connected client of ``protocol`` (a name in the protocol registry: :class:`BosonClient`,
    :class:`TauClient`); ``port=None`` finds the camera's serial port by the USB ids of its
    descriptor (a Tau2 has none, so it needs ``port``). Raises ValueError for an unknown
    protocol (listing the known ones), CameraNotFound when no port is found."""
    cls = PROTOCOL_REGISTRY.load(protocol)  # ValueError listing the protocols
    if port is None:
        port = find_control_port(protocol, **find_kwargs)
    return cls(port, timeout=timeout, retries=retries)


class FFCController:
    """Runs FFC every ``period_s`` seconds (None: only on :meth:`request_ffc`) through ``client``
    and marks frames captured from the RunFFC until ``settle_s`` after the camera reports the
    FFC complete (``meta["ffc"] = True``). Camera-initiated FFCs (AUTO mode) seen while polling
    are marked too. The end of an FFC is seen through :class:`FFCProgress` (FFC status, else the
    FFC-in-progress flag, whichever the firmware implements); clients or firmware with neither
    (Tau2, older Boson firmware) are assumed busy for ``assumed_ffc_s``; ``stats()["ffc_confirmed_by"]``
    says which. An FPA-temperature query the firmware lacks is dropped (``fpa_temp_c`` None).

    Raises:
        ValueError: ``period_s`` is not > 0 (None is on demand).
    """

    def __init__(self, client, period_s: Optional[float] = None, settle_s: float = 0.3,
                 poll_s: float = 1.0, assumed_ffc_s: float = 0.5, ffc_timeout_s: float = 5.0,
                 clock: Callable[[], float] = now):
        if period_s is not None and period_s <= 0:
            raise ValueError(f"FFC period must be > 0 seconds (or None for on demand), got {period_s}")
        self.client = client
        self.period_s = period_s
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.assumed_ffc_s = assumed_ffc_s
        self.ffc_timeout_s = ffc_timeout_s
        self.clock = clock
        self._progress = FFCProgress(client)
        self._fpa_supported = callable(getattr(client, "get_fpa_temp_c", None))
        self._lock = threading.Lock()  # guards the state below; never held during serial I/O
        self._windows: Deque[List[Optional[float]]] = deque(maxlen=8)  # [start, end or None]
        self._fpa_temp_c: Optional[float] = None
        self._state = "unknown"
        self._last_ffc_end: Optional[float] = None
        self._ffc_count = 0  # FFCs this controller ran or saw
        self._camera_ffcs = 0  # of which the camera started by itself
        self._frames = 0
        self._frames_marked = 0
        self._errors = 0
        self._last_error: Optional[str] = None
        self._requested = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ffc-controller", daemon=True)

    # -- lifecycle
    def start(self) -> "FFCController":
        """Start the controller thread (once); returns the controller."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread (the client stays open: it is the caller's)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.ffc_timeout_s + 2 * getattr(self.client, "timeout", 1.0))

    def __enter__(self) -> "FFCController":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- frame path (cheap, never touches the serial port)
    def annotate(self, frame: Frame) -> Frame:
        """Set ``frame.meta["ffc"]``: True when it was captured during an FFC or its settle time.

        Reads only ``frame.t_capture`` (seconds of :func:`~tir.edge.frame.now`); the counts are not
        touched. Returns ``frame``.
        """
        t = frame.t_capture
        with self._lock:
            marked = any(start <= t and (end is None or t <= end + self.settle_s) for start, end in self._windows)
            self._frames += 1
            self._frames_marked += marked
        frame.meta[FFC_META_KEY] = marked
        return frame

    def request_ffc(self) -> None:
        """Ask for an FFC as soon as the controller thread is free (returns at once)."""
        self._requested.set()
        self._wake.set()

    def in_ffc(self, t: Optional[float] = None) -> bool:
        """Whether time ``t`` (default: now) falls in an FFC window."""
        t = self.clock() if t is None else t
        with self._lock:
            return any(start <= t and (end is None or t <= end + self.settle_s) for start, end in self._windows)

    def stats(self) -> dict:
        """The controller's state for the stats page.

        Returns:
            ``fpa_temp_c`` (°C, None when unknown or the last poll failed), ``ffc_state``, ``last_ffc_age_s`` (seconds since
            the last FFC ended, 0.0 during one, None before the first), ``ffc_count``,
            ``ffc_camera_initiated``, ``ffc_frames`` (frames marked), ``frames_seen``, ``ffc_errors``,
            ``ffc_last_error``, ``ffc_period_s`` and ``ffc_confirmed_by`` (the query that saw the FFC
            end, or "assumed N s").
        """
        t = self.clock()
        with self._lock:
            busy = any(end is None for _, end in self._windows)
            age = 0.0 if busy else (None if self._last_ffc_end is None else t - self._last_ffc_end)
            return {"fpa_temp_c": self._fpa_temp_c, "ffc_state": self._state, "last_ffc_age_s": age,
                    "ffc_count": self._ffc_count, "ffc_camera_initiated": self._camera_ffcs,
                    "ffc_frames": self._frames_marked, "frames_seen": self._frames,
                    "ffc_errors": self._errors, "ffc_last_error": self._last_error,
                    "ffc_period_s": self.period_s, "ffc_confirmed_by": self._confirmed_by()}

    def _confirmed_by(self) -> str:
        method = self._progress.method
        return f"assumed {self.assumed_ffc_s:g} s" if method == "none" else method

    # -- controller thread
    def _run(self) -> None:
        last_trigger = self.clock()
        next_poll = self.clock()
        while not self._stop.is_set():
            t = self.clock()
            due = self.period_s is not None and t - last_trigger >= self.period_s
            if self._requested.is_set() or due:
                self._requested.clear()
                self._run_ffc()
                last_trigger = self.clock()
                next_poll = self.clock()
            if self.clock() >= next_poll:
                self._poll()
                next_poll = self.clock() + self.poll_s
            wait = next_poll - self.clock()
            if self.period_s is not None:
                wait = min(wait, last_trigger + self.period_s - self.clock())
            self._wake.wait(max(0.0, wait))
            self._wake.clear()

    def _error(self, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._errors += 1
            repeated = text == self._last_error
            self._last_error = text
        if not repeated:
            log.warning("camera control: %s", text)

    def _open_window(self) -> float:
        """Open an FFC window starting now; the start is read under the lock, so no frame
        annotated after it can miss the window."""
        with self._lock:
            start = self.clock()
            self._windows.append([start, None])
            self._state = FFCStatus.IN_PROGRESS.name.lower()
            self._ffc_count += 1
        return start

    def _close_window(self, end: float, state: str) -> None:
        with self._lock:
            for window in self._windows:
                if window[1] is None:
                    window[1] = end
            self._last_ffc_end = end
            self._state = state

    def _run_ffc(self) -> None:
        start = self._open_window()
        try:
            self.client.run_ffc()
        except CONTROL_ERRORS as exc:
            self._error(exc)
            self._close_window(self.clock(), "error")
            return
        self._wait_for_ffc(start, seen_busy=False)

    def _wait_for_ffc(self, start: float, seen_busy: bool) -> None:
        """Poll the FFC progress quickly until the FFC is over, then close its window."""
        state = "complete"
        while not self._stop.is_set() and self.clock() - start < self.ffc_timeout_s:
            try:
                busy = self._progress.busy()
            except CONTROL_ERRORS as exc:
                self._error(exc)
                state = "error"
                break
            if busy is None:  # no way to see it: wait the assumed duration
                self._stop.wait(max(0.0, start + self.assumed_ffc_s - self.clock()))
                break
            if busy:
                seen_busy = True
            elif seen_busy or self.clock() - start >= self.assumed_ffc_s:
                state = self._progress.state if self._progress.method == "ffc-status" else "complete"
                break
            self._stop.wait(0.05)
        else:
            state = "timeout" if not self._stop.is_set() else state
        self._close_window(self.clock(), state)

    def _poll(self) -> None:
        temp = None
        try:
            if self._fpa_supported:
                try:
                    temp = self.client.get_fpa_temp_c()
                except UNSUPPORTED as exc:
                    self._fpa_supported = False
                    log.info("camera does not support the FPA temperature query (%s)", exc)
            busy = self._progress.busy()
        except CONTROL_ERRORS as exc:
            self._error(exc)
            with self._lock:   # not the last reading shown as current while the link is down
                self._fpa_temp_c = None
            return
        with self._lock:
            if temp is not None:
                self._fpa_temp_c = temp
            if busy is not None and self._progress.method == "ffc-status":
                self._state = self._progress.state  # the flag alone keeps the last FFC's state
        if busy:  # the camera started an FFC by itself (AUTO mode)
            with self._lock:
                self._camera_ffcs += 1
            start = self._open_window()
            self._wait_for_ffc(start, seen_busy=True)
