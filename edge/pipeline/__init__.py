"""The frame path: stages in threads joined by latest-wins slots, with per-stage stats."""
from .normalize import NormParams, Normalizer
from .pipeline import Pipeline, PipelineError
from .slots import LatestWinsSlot
from .stats import PipelineStats, summarize_ms

__all__ = ["LatestWinsSlot", "NormParams", "Normalizer", "Pipeline", "PipelineError", "PipelineStats", "summarize_ms"]
