"""Outputs addressed by URI: ``http://host:port`` (MJPEG + page), ``file://`` recorder,
``display://`` window, ``rtsp://`` where GStreamer exists."""
from .base import OUTPUTS, Output, OutputError, OutputOptionError, check_output, open_output, register_output

__all__ = ["OUTPUTS", "Output", "OutputError", "OutputOptionError", "check_output", "open_output", "register_output"]
