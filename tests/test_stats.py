import json

import numpy as np
import pytest

from tir.edge.frame import Frame
from tir.edge.pipeline.stats import LatencySummary, PipelineStats, rate, summarize_ms

STAMPS = ["capture", "read", "infer", "output"]


def frame_with_stamps(t0, gaps):
    f = Frame(raw=np.zeros((4, 4), np.uint16), seq=0, t_capture=t0)
    t = t0
    for name, gap in zip(STAMPS[1:], gaps):
        t += gap
        f.stamps[name] = t
    return f


def test_summarize_percentiles_in_ms():
    s = summarize_ms([i / 1000.0 for i in range(1, 101)])  # 1..100 ms
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(50.5, abs=0.01)
    assert s["p99"] == pytest.approx(99.01, abs=0.01)
    assert s["max"] == pytest.approx(100.0)
    assert summarize_ms([]) == {"n": 0}


def test_rate_over_horizon():
    times = [0.0, 0.1, 0.2, 10.0, 10.1, 10.2, 10.3]
    assert rate(times, horizon_s=1.0, t_now=10.3) == pytest.approx(10.0)
    assert rate([5.0], 1.0, 5.0) == 0.0


def test_stage_latencies_add_up_to_e2e():
    stats = PipelineStats(STAMPS)
    for i in range(10):
        stats.frame_done(frame_with_stamps(100.0 + i, [0.001, 0.010, 0.002]))
    snap = stats.snapshot()
    lat = snap["latency_ms"]
    assert lat["read"]["p50"] == pytest.approx(1.0, abs=1e-6)
    assert lat["infer"]["p50"] == pytest.approx(10.0, abs=1e-6)
    assert lat["output"]["p50"] == pytest.approx(2.0, abs=1e-6)
    assert lat["e2e"]["p50"] == pytest.approx(13.0, abs=1e-6)
    assert snap["frames"] == 10
    assert snap["frame_age_ms"] == pytest.approx(13.0, abs=1e-6)


def test_missing_stage_is_skipped_not_zero():
    stats = PipelineStats(STAMPS)
    f = frame_with_stamps(0.0, [0.001, 0.010, 0.002])
    del f.stamps["infer"]
    stats.frame_done(f)
    lat = stats.snapshot()["latency_ms"]
    assert lat["infer"] == LatencySummary(n=0) and lat["infer"].p50 is None
    assert lat["output"]["p50"] == pytest.approx(12.0, abs=1e-6)


def test_window_keeps_last_frames():
    stats = PipelineStats(STAMPS, window=5)
    for gap in [1.0] * 10 + [0.001] * 5:
        stats.frame_done(frame_with_stamps(0.0, [gap, 0.0, 0.0]))
    assert stats.latency("read")["max"] == pytest.approx(1.0)
    assert stats.latency("read")["n"] == 5


def test_counters_signal_and_model_status_are_json():
    stats = PipelineStats(STAMPS)
    stats.source_uri = "synthetic://"
    stats.source_stats = lambda: {"frames": np.int64(3), "connected": True}
    stats.model_status = lambda: {"task": "noise", "confidence": np.float32(0.75)}
    stats.drop("infer")
    stats.corrupt_frame("dtype")
    stats.read_timeout()
    snap = stats.snapshot()
    assert snap["drops"]["infer"] == 1
    assert snap["corrupt"] == {"dtype": 1} and snap["corrupt_total"] == 1
    assert snap["no_signal"] is True and snap["connected"] is False
    assert snap["task"] == "noise" and snap["confidence"] == pytest.approx(0.75)
    json.dumps(snap.to_dict())  # serialisable, numpy scalars converted
    stats.frame_captured()
    assert stats.snapshot()["connected"] is True


def test_broken_status_provider_is_reported_not_raised():
    stats = PipelineStats(STAMPS)

    def broken():
        raise RuntimeError("gone")

    stats.model_status = broken
    assert "gone" in stats.snapshot()["model"]["status_error"]


def test_latency_values_last_n():
    stats = PipelineStats(STAMPS)
    for i in range(5):
        stats.frame_done(frame_with_stamps(0.0, [0.001 * (i + 1), 0.0, 0.0]))
    assert stats.latency_values("read", last=2) == pytest.approx([0.004, 0.005])
    assert len(stats.latency_values("read")) == 5
    assert len(stats.latency_values("read", last=50)) == 5
