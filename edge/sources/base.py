"""The one abstract source and its URI factory (after jetson-utils' videoSource)."""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Dict, Optional

from ..frame import Frame
from ..uri import URI, build_checked, parse_uri


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message says what exists instead."""


class EndOfStream(SourceError):
    """A finite source (file without ``loop=1``, ``synthetic://?frames=N``) has ended."""


class Source(ABC):
    """Yields :class:`~tir.edge.frame.Frame` objects holding raw uint16 counts.

    ``read(timeout)`` returns the newest frame or ``None`` on timeout; it raises
    :class:`SourceError` when the source is gone for good (end of file without loop).
    ``live`` sources run at their own rate; non-live (files) can be read as fast as
    possible. ``stats()`` reports counters (frames, dropped, corrupt, reconnects).
    """

    live: bool = False

    def __init__(self, uri: URI):
        self.uri = uri

    @property
    @abstractmethod
    def size(self):
        """(width, height) of the frames."""

    @property
    def fps(self) -> Optional[float]:
        return None

    @abstractmethod
    def read(self, timeout: float = 1.0) -> Optional[Frame]:
        ...

    def start(self) -> "Source":
        return self

    def close(self) -> None:
        pass

    def stats(self) -> Dict[str, object]:
        return {}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


# scheme -> "module:Class" inside tir.edge.sources, imported on first use
_REGISTRY: Dict[str, str] = {
    "synthetic": "tir.edge.sources.synthetic:SyntheticSource",
    "file": "tir.edge.sources.file:FileSource",
    "v4l2": "tir.edge.sources.v4l2:V4L2Source",
}


def register_source(scheme: str, target: str) -> None:
    _REGISTRY[scheme] = target


def open_source(uri, **options) -> Source:
    """Create the source for ``uri`` (str or :class:`URI`); options override URI query."""
    if not isinstance(uri, URI):
        uri = parse_uri(uri)
    uri.options.update({k: str(v) for k, v in options.items() if v is not None})
    if uri.scheme not in _REGISTRY:
        raise SourceError(
            f"unknown source scheme {uri.scheme!r} in {uri.text!r}; "
            f"known: {', '.join(sorted(s + '://' for s in _REGISTRY))}"
        )
    module, cls = _REGISTRY[uri.scheme].split(":")
    return build_checked(uri, getattr(importlib.import_module(module), cls), SourceError)
