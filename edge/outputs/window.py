"""Window output (``display://0``): the side-by-side view in an OpenCV window.

OpenCV's GUI must be driven from one thread that also pumps events (``waitKey``), so
the window lives in its own thread, which shows the newest frame written; ``write``
only hands the frame over. Pressing ``q``/Esc or closing the window sets
``quit_requested`` (the pipeline may poll it). Options: ``view`` (side|raw|restored),
``title``, ``scale`` (window size factor, default 1).

Fails early and clearly where no window can open: a headless OpenCV build, or no
reachable X/Wayland display (checked before touching Qt, which would abort the process).
"""
from __future__ import annotations

import os
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import cv2

from ..frame import Frame
from ..pipeline.slots import LatestWinsSlot
from ..registry import option
from ..uri import URI
from .base import Output, OutputError
from .jpeg import VIEWS, view_image

READY_TIMEOUT_S = 10.0
QUIT_KEYS = (ord("q"), ord("Q"), 27)


class NewestFrameWorker:
    """A thread that hands only the newest frame offered to ``handle``; older ones are skipped.

    The frames wait in a :class:`~tir.edge.pipeline.slots.LatestWinsSlot` (``slot``), so a
    frame replaced before it was handled is counted there (``skipped``). ``setup`` runs first
    in the thread, ``idle`` after each wait of at most ``poll_s`` (e.g. to pump GUI events),
    ``teardown`` last. An exception ends the thread and is kept in ``failure``.
    """

    def __init__(self, name: str, handle: Callable[[Frame], None],
                 setup: Callable[[], None] = lambda: None, idle: Callable[[], None] = lambda: None,
                 teardown: Callable[[], None] = lambda: None, poll_s: float = 0.03):
        self.name, self.poll_s = name, poll_s
        self._handle, self._setup, self._idle, self._teardown = handle, setup, idle, teardown
        self.slot: LatestWinsSlot[Frame] = LatestWinsSlot(name)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.failure: Optional[BaseException] = None
        self.handled = 0

    @property
    def skipped(self) -> int:
        """Frames replaced by a newer one before they were handled."""
        return self.slot.dropped

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the worker thread (with a fresh slot after :meth:`stop`)."""
        if self.slot.closed:  # started again after stop(): a fresh slot
            self.slot = LatestWinsSlot(self.name)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._thread.start()

    def offer(self, frame: Frame) -> None:
        """Give the worker the newest frame; one it has not handled yet is replaced (counted in
        :attr:`skipped`).
        """
        self.slot.put(frame)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waiting up to ``timeout`` seconds) after it finishes the current frame."""
        self._stop.set()
        self.slot.close()  # wakes the thread at once
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        try:
            self._setup()
            while not self._stop.is_set():
                frame = self.slot.get(self.poll_s)
                if self._stop.is_set():
                    break
                if frame is not None:
                    self._handle(frame)
                    self.handled += 1
                self._idle()
        except Exception as exc:  # reported to the owner through .failure
            self.failure = exc
        finally:
            self._teardown()


# the default HTTP output, local only; --host 0.0.0.0 would serve every interface, and
# 0.0.0.0 is not an address a browser can open
BROWSER_HINT = ("watch in a browser: `tir run --output http://127.0.0.1:8080` (the default), "
                "then open http://127.0.0.1:8080 (from another machine: add --host 0.0.0.0 and open "
                "http://THIS-HOST:8080)")


def gui_problem() -> Optional[str]:
    """Why no OpenCV window can open here, or None when one can."""
    info = cv2.getBuildInformation()
    gui = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.strip().startswith("GUI:")), "")
    if gui.upper() in ("", "NONE"):
        return ("this OpenCV build has no GUI (opencv-python-headless?); install opencv-python "
                "or JetPack's OpenCV, or " + BROWSER_HINT)
    if sys.platform.startswith("linux"):
        display, wayland = os.environ.get("DISPLAY"), os.environ.get("WAYLAND_DISPLAY")
        if not display and not wayland:
            return ("no display: $DISPLAY is not set (headless machine, or SSH without -X); "
                    + BROWSER_HINT)
        if display and not wayland:
            return _x_display_problem(display)
    return None


def _x_display_problem(display: str) -> Optional[str]:
    """Check that the X server of ``display`` (":0", "localhost:10.0") accepts connections."""
    host, _, number = display.rpartition(":")
    number = number.split(".")[0]
    if not number.isdigit():
        return f"$DISPLAY={display!r} is not an X display name like :0 or localhost:10.0"
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(f"/tmp/.X11-unix/X{number}")
        else:
            socket.create_connection((host, 6000 + int(number)), timeout=2).close()
    except OSError as exc:
        return (f"cannot reach X display {display} ({exc.strerror or exc}); start X or fix "
                "$DISPLAY, or " + BROWSER_HINT)
    return None


@dataclass(frozen=True)
class WindowOptions:
    """URI options of ``display://N``."""

    view: str = option("side", "which view to show", choices=VIEWS)
    title: str = option("tir-edge", "window title")
    scale: float = option(1.0, "zoom factor of the window", check=lambda v: None if v > 0 else "must be > 0")


class WindowOutput(Output):
    """Shows one view of the newest frame in an OpenCV window (options: :class:`WindowOptions`)."""

    Options = WindowOptions

    takes_path = False
    takes_number = True   # display://0 (README): the window's number, as jetson-utils writes it

    def __init__(self, uri: URI):
        super().__init__(uri)
        self.view = self.options.view
        self.title = self.options.title
        self.scale = self.options.scale
        self.quit_requested = False
        self._ready = threading.Event()
        self._shown = False
        self.worker = NewestFrameWorker("window-output", self._show, setup=self._open,
                                        idle=self._pump_events, teardown=self._destroy)

    def start(self) -> "WindowOutput":
        """Open the window on its own GUI thread; returns the output once it shows.

        Raises:
            OutputError: no display or an OpenCV without GUI support, or the window did not open
                within the ready timeout.
        """
        if self.worker.running:
            return self
        problem = gui_problem()
        if problem:
            raise OutputError(f"cannot open a window for {self.uri.text}: {problem}")
        self.worker.start()
        self._ready.wait(READY_TIMEOUT_S)
        started = self._ready.is_set() and self.worker.running
        if self.worker.failure is not None or not started:
            self.worker.stop()
            raise OutputError(f"cannot open a window for {self.uri.text}: "
                              f"{self.worker.failure or 'the GUI did not start'}")
        return self

    def write(self, frame: Frame) -> None:
        """Offer the frame to the GUI thread (a frame not yet shown is replaced)."""
        self.worker.offer(frame)

    def close(self) -> None:
        """Stop the GUI thread, which destroys the window."""
        self.worker.stop()

    # -- GUI thread ----------------------------------------------------------------
    def _open(self) -> None:
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        self._ready.set()

    def _show(self, frame: Frame) -> None:
        image = view_image(frame, self.view)
        if not self._shown:
            h, w = image.shape[:2]
            cv2.resizeWindow(self.title, int(w * self.scale), int(h * self.scale))
        cv2.imshow(self.title, image)
        self._shown = True

    def _pump_events(self) -> None:
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS:
            self.quit_requested = True
        if self._shown and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
            self.quit_requested = True  # the user closed the window

    def _destroy(self) -> None:
        self._ready.set()
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
