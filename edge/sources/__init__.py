"""Frame sources addressed by URI. ``open_source(uri)`` picks the class by scheme."""
from .base import EndOfStream, Source, SourceError, open_source, register_source

__all__ = ["EndOfStream", "Source", "SourceError", "open_source", "register_source"]
