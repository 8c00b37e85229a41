"""Reading a frame file that is a regular file, never blocking (a leaf: the degradation module and
the calibration data read frames with it too, tests/test_layers.py).

A FIFO named like a frame (``x.png``) blocked ``np.fromfile`` / ``cv2.imread`` until a writer
appeared, so a replay, ``tir eval --data DIR`` or a recording's read-back hung forever; a device
node (``/dev/zero``) would be read without end. :func:`open_regular` refuses anything that is not a
regular file, :func:`imread_unchanged` is ``cv2.imread`` on top of it.

numpy + OpenCV only (runtime).
"""
from __future__ import annotations

import os
import stat
from typing import Optional

import cv2
import numpy as np

from .frame import FrameError
from .logs import opencv_silenced


def file_kind(mode: int) -> str:
    """What a ``st_mode`` (``os.stat(path).st_mode``) that is not a regular file is, in words ("a FIFO
    (named pipe)", "a socket", "a character device", "a block device", "a folder"); "not a regular
    file" for anything else."""
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str):
    """Open ``path`` for binary reading only when it is a regular file, without ever blocking.

    The file is opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor (no
    window between the check and the read): a FIFO named like a frame (``x.png``) blocked
    ``np.fromfile`` / ``cv2.imread`` until a writer appeared, so a replay, ``tir eval --data DIR``
    or a recording's read-back hung forever; a device node (``/dev/zero``) would be read without
    end. ``O_NONBLOCK`` changes nothing for a regular file's reads.

    Returns:
        An open binary file object (use it as a context manager).

    Raises:
        FrameError: kind ``not_file`` naming what ``path`` is (FIFO, socket, device, folder) and
            that it is skipped.
        OSError: ``path`` cannot be opened (missing, no permission).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        try:   # a socket cannot be opened at all (ENXIO): say what it is
            mode = os.stat(path).st_mode
        except OSError:
            raise exc from None
        if stat.S_ISREG(mode):
            raise
        raise FrameError("not_file", f"{path}: {file_kind(mode)}, not a regular file; skipped "
                                     "(frames are read from regular files only)") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise FrameError("not_file", f"{path}: {file_kind(mode)}, not a regular file; skipped (frames are "
                                         "read from regular files only: a FIFO would block the read until a "
                                         "writer appears)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def imread_unchanged(path) -> Optional[np.ndarray]:
    """``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` that never blocks: None (as cv2.imread) for a
    missing, unreadable or undecodable file, and for anything that is not a regular file (a FIFO
    named ``x.png`` blocked cv2.imread forever). OpenCV's log is silenced for the decode.

    Returns:
        The decoded array, (H, W) or (H, W, C), uint8 or uint16 as stored; or None.
    """
    try:
        with open_regular(str(path)) as f:
            data = np.fromfile(f, dtype=np.uint8)
    except (OSError, FrameError):
        return None
    if data.size == 0:
        return None
    try:
        with opencv_silenced():
            return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
