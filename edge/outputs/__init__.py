"""Outputs addressed by URI: ``http://host:port`` (MJPEG + page), ``file://`` recorder,
``display://`` window, ``rtsp://`` where GStreamer exists."""
from .base import Output, OutputError, open_output

__all__ = ["Output", "OutputError", "open_output"]
