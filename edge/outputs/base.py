"""The one abstract output and its URI factory (after jetson-utils' videoOutput)."""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, Optional

from ..frame import Frame
from ..uri import URI, build_checked, parse_uri

if TYPE_CHECKING:
    from ..pipeline.stats import StatsSnapshot


class OutputError(RuntimeError):
    """An output that cannot be opened (port in use, unwritable path, no GStreamer)."""


class Output(ABC):
    """Receives finished frames. ``write`` must be cheap: never block the pipeline.

    The pipeline calls :meth:`attach` before :meth:`start`: ``stats_provider`` then returns
    the live :class:`~tir.edge.pipeline.stats.StatsSnapshot` for outputs that show it, and
    ``actions`` maps an action's name to what runs it (``{"ffc": ...}`` with camera control).
    ``failure`` is None while the output works, else one line saying why it
    stopped for good (a recorder whose disk is full); the pipeline reports it everywhere and
    ``tir run`` exits non-zero.
    """

    failure: Optional[str] = None

    def __init__(self, uri: URI):
        self.uri = uri
        self.stats_provider: Optional[Callable[[], "StatsSnapshot"]] = None
        self.actions: Dict[str, Callable[[], Any]] = {}

    def attach(self, stats: Callable[[], "StatsSnapshot"],
               actions: Optional[Mapping[str, Callable[[], Any]]] = None) -> None:
        """Give the output the pipeline's stats (``stats()`` -> a
        :class:`~tir.edge.pipeline.stats.StatsSnapshot`, callable from any thread) and the
        actions it may offer (name -> callable taking no argument). Raises TypeError when
        ``stats`` is not callable."""
        if not callable(stats):
            raise TypeError(f"attach: stats must be a callable returning a StatsSnapshot, got {stats!r}")
        self.stats_provider = stats
        self.actions = dict(actions or {})

    def start(self) -> "Output":
        return self

    @abstractmethod
    def write(self, frame: Frame) -> None:
        ...

    def wants_display(self) -> bool:
        """Whether frames written next need ``frame.display`` (the AGC views). The pipeline's
        display stage skips the AGC when no output wants it; outputs that can tell nobody is
        looking (an HTTP server without viewers) say False."""
        return True

    def close(self) -> None:
        pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


_REGISTRY: Dict[str, str] = {
    "http": "tir.edge.outputs.http:HTTPOutput",
    "file": "tir.edge.outputs.recorder:Recorder",
    "display": "tir.edge.outputs.window:WindowOutput",
    "rtsp": "tir.edge.outputs.rtsp:RTSPOutput",
    "rtp": "tir.edge.outputs.rtsp:RTSPOutput",
    "collect": "tir.edge.outputs.collect:Collector",
}


def open_output(uri, **options) -> Output:
    if not isinstance(uri, URI):
        uri = parse_uri(uri)
    uri.options.update({k: str(v) for k, v in options.items() if v is not None})
    if uri.scheme not in _REGISTRY:
        raise OutputError(
            f"unknown output scheme {uri.scheme!r} in {uri.text!r}; "
            f"known: {', '.join(sorted(s + '://' for s in _REGISTRY))}"
        )
    module, cls = _REGISTRY[uri.scheme].split(":")
    return build_checked(uri, getattr(importlib.import_module(module), cls), OutputError)
