"""Log lines rate-limited by kind, and OpenCV's own log quieted.

A fault that repeats every frame (a vanished folder read at 30 fps, a corrupt file on every
loop) must not flood the log (issue 10, item 6): the first line of a kind is written, the
next ones of the same kind within ``interval_s`` are only counted, and the first line after
the interval says how many were held back.

- :class:`RateLimiter` for code that knows the kind (``limiter.log(log, WARNING, "corrupt", msg)``);
- :class:`RateLimitFilter` on the CLI's log handler (``tir.tools.cli``), keyed by logger,
  level, message template and ``kind``, so every other repeated line is limited the same way;
- :func:`quiet_opencv` sets OpenCV's log level to errors, so its ``imread_(...): can't
  open/read file`` warnings no longer reach stderr (the project reads images with
  ``np.fromfile`` + ``cv2.imdecode`` and counts the failures itself);
- :func:`opencv_silenced` silences OpenCV's log around one decode whose failure the caller
  reports itself (libtiff's ``TIFF_Error`` lines are logged at OpenCV's error level, once per
  read of a damaged TIFF, so a looped folder would print them at every pass);
- :func:`native_stderr_captured` takes what native code writes to file descriptor 2 during one
  call (libjpeg's ``Corrupt JPEG data: …`` warnings are written by libjpeg itself with
  ``fprintf(stderr)``, past OpenCV's log level and Python's logging), so the caller can count
  the frame as damaged instead.
"""
from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Callable, Dict, Hashable, Iterator, List, Optional, Tuple

DEFAULT_INTERVAL_S = 10.0


class RateLimiter:
    """At most one line per key every ``interval_s`` seconds (monotonic clock ``clock``)."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self._state: Dict[Hashable, Tuple[float, int]] = {}  # key -> (time of last line, held back since)

    def admit(self, key: Hashable) -> Optional[int]:
        """None when a line of ``key`` must be held back now; else the number held back
        since the last line of that key (0 the first time)."""
        t = self.clock()
        with self._lock:
            last, held = self._state.get(key, (None, 0))
            if last is not None and t - last < self.interval_s:
                self._state[key] = (last, held + 1)
                return None
            self._state[key] = (t, 0)
            return held

    def log(self, logger: logging.Logger, level: int, kind: Hashable, msg: str, *args) -> bool:
        """Log ``msg % args`` unless a line of this kind was logged within the interval;
        returns whether it was written."""
        held = self.admit((logger.name, kind))
        if held is None:
            return False
        if held:
            msg += f" [{held} more of this kind in the last {self.interval_s:g} s, not shown]"
        logger.log(level, msg, *args, extra={"kind": kind})  # a RateLimitFilter keys by it too
        return True


class RateLimitFilter(logging.Filter):
    """A handler filter: records with the same logger, level and message template (and
    ``kind`` attribute, if given via ``extra``) pass at most once per ``interval_s``."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.limiter = RateLimiter(interval_s, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is emitted now.

        A record passes when no record of its kind passed in the last ``interval_s`` seconds;
        the others are held back and counted, and the next one that passes gets
        `` [N more like this in the last T s, not shown]`` appended when N > 0.
        """
        key = (record.name, record.levelno, str(record.msg), getattr(record, "kind", None))
        held = self.limiter.admit(key)
        if held is None:
            return False
        if held:
            record.msg = (f"{record.getMessage()} [{held} more like this in the last "
                          f"{self.limiter.interval_s:g} s, not shown]")
            record.args = ()
        return True


def quiet_opencv() -> None:
    """OpenCV logs errors only (its imread/VideoCapture warnings go; failures stay visible
    as return values the callers count)."""
    import cv2

    utils_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if utils_logging is not None:
        utils_logging.setLogLevel(utils_logging.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):  # builds without cv2.utils.logging
        cv2.setLogLevel(2)  # 2 = LOG_LEVEL_ERROR (OpenCV utils/logger.defines.hpp)


_OPENCV_LEVEL = threading.Lock()


@contextmanager
def opencv_silenced() -> Iterator[None]:
    """OpenCV logs nothing inside the block, then its level is put back.

    For a decode whose failure the caller turns into its own rate-limited, counted report
    (``cv2.imdecode`` returning None): libtiff's errors on a damaged TIFF (``TIFFFetchDirectory:
    Seek error``, ``Using code not yet in table``) and OpenCV's ``imdecode_(...): can't read
    data`` are printed at OpenCV's *error* level by its TIFF decoder (modules/imgcodecs
    grfmt_tiff.cpp), which :func:`quiet_opencv` keeps. OpenCV's level is process-wide, so the
    blocks are serialised by a lock; a message another thread's OpenCV call would log while a
    block runs (a decode takes milliseconds) is lost with it.
    """
    import cv2

    utils_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    with _OPENCV_LEVEL:
        if utils_logging is not None:
            before = utils_logging.getLogLevel()
            utils_logging.setLogLevel(utils_logging.LOG_LEVEL_SILENT)
            try:
                yield
            finally:
                utils_logging.setLogLevel(before)
        elif hasattr(cv2, "setLogLevel"):  # builds without cv2.utils.logging (levels: 0 = SILENT)
            before = cv2.getLogLevel()
            cv2.setLogLevel(0)
            try:
                yield
            finally:
                cv2.setLogLevel(before)
        else:
            yield


_NATIVE_STDERR = threading.Lock()
_capture_files: List[object] = []  # one temporary file, made at the first capture, reused


@contextmanager
def native_stderr_captured(claim: Callable[[str], bool]) -> Iterator[List[str]]:
    """What native code writes to file descriptor 2 inside the block is taken: the lines
    ``claim`` accepts are put in the yielded list (filled when the block ends), every other
    line is written to the real stderr after the block, in its order.

    For a C library that reports by ``fprintf(stderr, …)`` and has no hook Python can reach:
    libjpeg's warnings (``Corrupt JPEG data: 6 extraneous bytes before marker 0xd9``,
    ``Premature end of JPEG file``: libjpeg's default ``output_message``, jerror.c, which
    OpenCV's JPEG decoder keeps) printed at every pass of a looped folder holding one damaged
    JPEG. The descriptor is pointed at a temporary file (``os.dup2``; a file never blocks a
    writer, a pipe would once full) and put back when the block ends, also on an exception.
    File descriptors are process-wide: the blocks are serialised by a lock, and a line another
    thread writes to stderr while a block runs (a decode takes milliseconds) is written out
    after it, unless ``claim`` takes it. Where descriptor 2 is closed or no temporary file can
    be made, nothing is captured (the list stays empty) and the block runs as is.

    Args:
        claim: whether a captured line (without its newline, decoded as UTF-8 with
            replacement) belongs to the caller.

    Yields:
        The list of claimed lines, in the order written; complete once the block has ended.
    """
    claimed: List[str] = []
    with _NATIVE_STDERR:
        saved = None
        try:
            if not _capture_files:
                _capture_files.append(tempfile.TemporaryFile())
            capture = _capture_files[0].fileno()
            os.ftruncate(capture, 0)
            os.lseek(capture, 0, os.SEEK_SET)
            saved = os.dup(2)
        except OSError:
            capture = None
        if saved is None:
            yield claimed
            return
        try:
            _flush_python_stderr()
            os.dup2(capture, 2)
            try:
                yield claimed
            finally:
                _flush_python_stderr()
                os.dup2(saved, 2)
                _sort_captured(capture, claim, claimed)
        finally:
            os.close(saved)


def _sort_captured(capture: int, claim: Callable[[str], bool], claimed: List[str]) -> None:
    """Split what descriptor ``capture`` holds into ``claimed`` lines and the rest, written to
    descriptor 2 (see :func:`native_stderr_captured`)."""
    size = os.lseek(capture, 0, os.SEEK_END)
    data = os.pread(capture, size, 0) if size else b""
    passed = []
    for line in data.splitlines(keepends=True):
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if claim(text):
            claimed.append(text)
        else:
            passed.append(line)
    out = memoryview(b"".join(passed))
    while out:
        try:
            out = out[os.write(2, out):]
        except OSError:
            return


def _flush_python_stderr() -> None:
    """Flush Python's ``sys.stderr`` (text buffered before or inside a capture goes where it was
    meant to go); a closed or missing stream is skipped."""
    try:
        if sys.stderr is not None:
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
