"""Frame sources addressed by URI. ``open_source(uri)`` picks the class by scheme."""
from .base import SOURCES, EndOfStream, Source, SourceError, SourceOptionError, check_source, open_source, register_source

__all__ = ["SOURCES", "EndOfStream", "Source", "SourceError", "SourceOptionError", "check_source", "open_source",
           "register_source"]
