"""The ``tir`` command line."""
__version__ = "0.1.0"
