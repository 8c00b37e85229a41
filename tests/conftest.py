"""Shared fixtures: small real synthetic thermal frames and sources."""
import pytest

from tir.edge.sources import open_source
from tir.edge.sources.synthetic import render_frames

SMALL_FRAMES = 8


@pytest.fixture(scope="session")
def synthetic_frames():
    """Four consecutive 160x120 uint16 14-bit frames, shape (4, 120, 160)."""
    return render_frames(4, size=(160, 120), seed=0)


@pytest.fixture
def small_source():
    """A fast, finite synthetic source: 160x120, not paced, SMALL_FRAMES frames."""
    source = open_source(f"synthetic://?size=160x120&realtime=0&frames={SMALL_FRAMES}")
    yield source
    source.close()
