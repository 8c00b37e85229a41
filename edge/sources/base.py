"""The one abstract source and its URI factory (after jetson-utils' videoSource)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, Iterator, Optional

from ..frame import Frame
from ..errors import InputError
from ..registry import OptionError, Registry
from ..uri import URI, check_scheme, refuse_path


class SourceError(RuntimeError, InputError):
    """A source that cannot be opened or read; the message says what exists instead."""


class SourceOptionError(SourceError, OptionError):
    """An unknown source option or a bad value; the message names the URI and the option."""


class EndOfStream(SourceError):
    """A finite source (file without ``loop=1``, ``synthetic://?frames=N``) has ended."""


class Source(ABC):
    """Yields :class:`~tir.edge.frame.Frame` objects holding raw (H, W) uint16 counts (Y16).

    ``read(timeout)`` returns the newest frame or ``None`` on timeout; it raises
    :class:`SourceError` when the source is gone for good (end of file without loop).
    ``live`` sources run at their own rate; non-live (files) can be read as fast as
    possible. ``stats()`` reports counters (frames, dropped, corrupt, reconnects).

    Raises:
        SourceOptionError: (constructor) the URI has an unknown option or a bad value.
    """

    live: bool = False
    #: the options dataclass of this source's URI query (see :mod:`tir.edge.registry`)
    Options: Optional[type] = None
    #: whether the URI names something after ``://`` (a path, a device, a host); a scheme that
    #: names nothing refuses text there instead of ignoring it
    takes_path: bool = True

    def __init__(self, uri: URI):
        self.uri = uri
        refuse_path(uri, self.takes_path, SourceOptionError)
        #: the typed URI options (an ``Options`` instance), checked before anything opens; a
        #: wrapper without ``Options`` of its own (the grabber) keeps what its URI holds
        schema = type(self).Options
        self.options: Any = uri.bind(schema, SourceOptionError) if schema is not None and uri is not None else \
            getattr(uri, "values", None)

    @property
    @abstractmethod
    def size(self):
        """(width, height) of the frames."""

    @property
    def fps(self) -> Optional[float]:
        """Frames per second the source delivers, or None when it does not say."""
        return None

    @abstractmethod
    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        """The next frame, or None when none is ready within ``timeout`` seconds.

        Returns:
            A :class:`~tir.edge.frame.Frame` whose ``raw`` is (H, W) uint16 counts.

        Raises:
            EndOfStream: a finite source has no more frames.
            SourceError: the source is gone for good.
        """
        ...

    def start(self) -> "Source":
        """Start capturing (threads, pacing clock); returns the source. The base class does nothing."""
        return self

    def close(self) -> None:
        """Release the device or file; the base class does nothing."""
        pass

    def stats(self) -> Dict[str, object]:
        """The source's counters (frames, dropped, corrupt, reconnects ...); {} in the base class."""
        return {}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


#: scheme -> Source class ("module:Class", imported on first use); the class's ``Options``
#: dataclass declares its URI options
SOURCES = Registry("source scheme", SourceError, option_error=SourceOptionError)
SOURCES.register("synthetic", "tir.edge.sources.synthetic:SyntheticSource",
                 help="the built-in virtual thermal camera (scene, FPN, FFC; optional degradation)")
SOURCES.register("file", "tir.edge.sources.file:FileSource",
                 help="a recording, an image folder or a 16-bit video file, replayed")
SOURCES.register("v4l2", "tir.edge.sources.v4l2:V4L2Source",
                 help="a UVC thermal camera through OpenCV (V4L2 on Linux)")


def register_source(scheme: str, target: Any, help: str = "a source", **kw) -> None:
    """Add (or replace) the Source class for ``scheme`` (a class or "module:Class")."""
    SOURCES.register(scheme, target, help=help, replace=True, **kw)


def check_source(uri, **options) -> URI:
    """The parsed :class:`URI` with its options checked against the scheme's declaration, opening
    nothing: ``tir run`` calls it before the model loads, the camera opens or the server binds.
    Raises SourceError for an unknown scheme, :class:`SourceOptionError` for an unknown option
    (listing the valid ones) or a bad value (naming the option)."""
    return check_scheme(uri, options, SOURCES, "source", SourceError, SourceOptionError)


def open_source(uri, **options) -> Source:
    """Create the source for ``uri`` (str or :class:`URI`); ``options`` override the URI's query.

    Its options are checked first (:func:`check_source`); the source is created but not started.

    Raises:
        SourceError: unknown scheme, or the source cannot be opened (device missing, not Y16,
            unreadable file); the message names it and what exists instead.
        SourceOptionError: unknown option or bad value.
    """
    uri = check_source(uri, **options)
    return SOURCES.load(uri.scheme)(uri)


def usable_frames(source: Source, timeout_s: float = 5.0) -> Iterator[Frame]:
    """The frames of an open (started) source that show the scene, in order, until it ends: FFC
    frames (meta ``ffc``: the shutter is closed) are skipped; a finite source's end stops the
    iteration. Used where a fixed number of a camera's frames is gathered (``tir adapt``'s
    collection, ``tir run --reference``).

    Raises:
        SourceError: no frame came within ``timeout_s`` seconds (or the source failed).
    """
    while True:
        try:
            frame = source.read(timeout_s)
        except EndOfStream:
            return
        if frame is None:
            raise SourceError(f"no frame from {source.uri.text} within {timeout_s:g} s")
        if not frame.meta.get("ffc"):
            yield frame
