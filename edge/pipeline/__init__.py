"""The frame path: stages in threads joined by latest-wins slots, with per-stage stats.

Names are imported on first use. The normaliser the stages and the AGC share is
``tir.edge.normalize`` (outside this package, so ``tir.edge.agc`` never imports the pipeline).
"""
import importlib

_EXPORTS = {
    "Pipeline": "pipeline",
    "PipelineError": "pipeline",
    "LatestWinsSlot": "slots",
    "PipelineStats": "stats",
    "summarize_ms": "stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
