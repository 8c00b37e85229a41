"""Architectures, one file each, with a config dataclass and presets by name."""
