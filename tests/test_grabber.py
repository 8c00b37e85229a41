import itertools
import threading
import time

import numpy as np
import pytest

from tir.edge.frame import Frame, now
from tir.edge.sources import Source, SourceError, open_source
from tir.edge.sources.file import EndOfStream
from tir.edge.sources.grabber import Grabber, backoff_delays
from tir.edge.uri import parse_uri


def frame(seq):
    return Frame(raw=np.full((2, 2), seq, np.uint16), seq=seq, t_capture=now())


def wait_until(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_backoff_doubles_from_half_a_second_to_a_five_second_cap():
    assert list(itertools.islice(backoff_delays(), 7)) == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_slow_consumer_gets_latest_frames_and_drops_are_counted():
    # a fast real producer: the synthetic camera, not paced
    grabber = Grabber(lambda: open_source("synthetic://?size=160x120&realtime=0")).start()
    try:
        seqs = []
        for _ in range(5):
            time.sleep(0.05)  # a consumer much slower than the producer
            seqs.append(grabber.read(timeout=2.0).seq)
        stats = grabber.stats()
    finally:
        grabber.close()
    assert all(b - a > 1 for a, b in zip(seqs, seqs[1:])), f"stale frames: {seqs}"
    assert stats["dropped"] > 10
    # every produced frame was either consumed, dropped, or is the one waiting in the slot
    assert stats["frames"] - 5 - stats["dropped"] in (0, 1)
    assert stats["connected"] and stats["reconnects"] == 0


class FlakyCamera(Source):
    """A real source of synthetic frames that fails like an unplugged camera.

    Instances share ``plan``: each opening takes the next entry; ``"fail"`` means the device
    cannot be opened, an integer k means it delivers k frames and then disappears, and
    ``None`` means it keeps working."""

    live = True

    def __init__(self, plan, opened):
        if not plan:
            raise SourceError("plan exhausted")
        step = plan.pop(0)
        if step == "fail":
            raise SourceError("no such device /dev/video0")
        super().__init__(parse_uri("synthetic://?size=160x120&realtime=0"))
        self.inner = open_source(self.uri.text)
        self.remaining = step
        self.generation = len(opened)
        opened.append(self)

    @property
    def size(self):
        return self.inner.size

    def read(self, timeout=1.0):
        if self.remaining is not None:
            if self.remaining == 0:
                raise SourceError("device disconnected")
            self.remaining -= 1
        time.sleep(0.002)
        out = self.inner.read(timeout)
        out.meta["generation"] = self.generation
        return out


def test_reconnects_after_the_device_disappears_and_comes_back():
    plan, opened = [3, "fail", "fail", None], []
    grabber = Grabber(lambda: FlakyCamera(plan, opened), backoff_initial=0.02, backoff_max=0.1)
    with grabber:
        assert wait_until(lambda: grabber.stats()["reconnects"] == 1)
        frame_after = None
        for _ in range(100):
            got = grabber.read(timeout=1.0)
            if got is not None:
                # the frame says through which opening of the device it came (a reconnect may bring
                # another camera: edge/pipeline/stages.py Preprocess marks camera_change on it)
                assert got.meta["connection"] == got.meta["generation"]
            if got is not None and got.meta["generation"] == 1:
                frame_after = got
                break
        stats = grabber.stats()
    assert frame_after is not None, "frames flow again from the reopened device"
    assert len(opened) == 2 and plan == []
    assert stats["connected"] and stats["reconnects"] == 1
    assert "no such device" in stats["last_error"]


def test_disconnected_state_is_visible_and_read_times_out():
    gate = threading.Event()
    opened = []

    def factory():
        if opened and not gate.is_set():
            raise SourceError("unplugged")
        return FlakyCamera([2 if not opened else None], opened)

    grabber = Grabber(factory, backoff_initial=0.02, backoff_max=0.05).start()
    try:
        assert wait_until(lambda: not grabber.connected)
        while grabber.read(timeout=0.01) is not None:  # take what arrived before the loss
            pass
        assert grabber.read(timeout=0.1) is None
        assert grabber.stats()["last_error"] == "SourceError: unplugged"
        gate.set()
        assert wait_until(lambda: grabber.connected)
        assert grabber.read(timeout=2.0) is not None
    finally:
        grabber.close()


def test_stalled_source_counts_as_lost():
    class Silent(Source):
        live = True
        size = (2, 2)

        def read(self, timeout=1.0):
            time.sleep(min(timeout, 0.01))
            return None

    opened = []
    grabber = Grabber(lambda: opened.append(1) or Silent(parse_uri("synthetic://")),
                      stall_timeout=0.05, backoff_initial=0.01, backoff_max=0.02).start()
    try:
        assert wait_until(lambda: grabber.stats()["reconnects"] >= 1)
        assert "no frame for" in grabber.stats()["last_error"]
    finally:
        grabber.close()


def test_finite_source_ends_instead_of_reconnecting():
    grabber = Grabber.for_uri("synthetic://?size=160x120&realtime=0&frames=4").start()
    seqs = []
    with pytest.raises(EndOfStream):
        for _ in range(100):
            got = grabber.read(timeout=1.0)
            if got is not None:
                seqs.append(got.seq)
    grabber.close()
    assert seqs and seqs[-1] == 3 and grabber.stats()["reconnects"] == 0


def test_missing_device_at_start_fails_loudly():
    with pytest.raises(SourceError, match="640x512"):
        Grabber.for_uri("synthetic://?size=1x1")
