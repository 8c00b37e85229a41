"""Radiometry end to end: sources put one count -> kelvin map on each frame
(``meta["temperature_k"] = {"scale", "offset"}``), and the HTTP page reads °C from it."""

import numpy as np
import pytest

from tir.edge.frame import Frame, now
from tir.edge.outputs import open_output
from tir.edge.pipeline import Pipeline
from tir.edge.sources import open_source
from tir.edge.sources.synthetic import COUNT_AT_T0, COUNTS_PER_KELVIN, T0
from tir.edge.sources.v4l2 import V4L2Source
from tir.edge.uri import parse_uri

from http_json import get_json
from test_sources_v4l2 import FakeCapture


@pytest.fixture
def server():
    out = open_output("http://127.0.0.1:0").start()
    yield out
    out.close()


def celsius(counts, temperature_k):
    return counts * temperature_k["scale"] + temperature_k["offset"] - 273.15


def test_synthetic_map_is_the_inverse_of_the_renderer():
    source = open_source("synthetic://?size=160x120&realtime=0&frames=1&clean=1").start()
    frame = source.read()
    source.close()
    tk = frame.meta["temperature_k"]
    assert tk["scale"] == pytest.approx(1 / COUNTS_PER_KELVIN)
    # the scene's reference temperature T0 renders to C0 counts
    assert COUNT_AT_T0 * tk["scale"] + tk["offset"] == pytest.approx(T0)
    kelvin = frame.meta["clean"].astype(np.float64) * tk["scale"] + tk["offset"]
    assert 250.0 < kelvin.min() and kelvin.max() < 340.0  # a street scene: cold sky to exhausts
    road = kelvin[int(0.6 * 120):int(0.8 * 120)]
    assert 296.0 < np.median(road) < 300.5  # the renderer's road is 297..299.5 K
    off = open_source("synthetic://?size=160x120&realtime=0&frames=1&radiometric=0").start()
    assert off.read().meta["temperature_k"] is None
    off.close()


def test_v4l2_formats_put_their_map_on_frames(fake_sysfs):
    sysfs, dev = fake_sysfs
    image = np.full((120, 160), 29815, np.uint16)  # 298.15 K in TLinear 0.01 K
    source = V4L2Source(parse_uri(f"v4l2://{dev}/video0?format=lepton"), FakeCapture([image] * 2), sysfs, dev)
    frame = source.read()
    assert frame.meta["temperature_k"] == {"scale": 0.01, "offset": 0.0}
    assert celsius(int(frame.raw[0, 0]), frame.meta["temperature_k"]) == pytest.approx(25.0)
    boson = V4L2Source(parse_uri(f"v4l2://{dev}/video0?format=boson"),
                       FakeCapture([np.full((512, 640), 8000, np.uint16)] * 2), sysfs, dev)
    assert boson.read().meta["temperature_k"] is None


def test_radiometric_frame_gives_celsius_at_a_pixel_and_scene_range(server):
    tk = {"scale": 1 / 64, "offset": 0.0}  # TC001: raw / 64 K
    raw = np.full((48, 64), int(293.15 * 64), np.uint16)  # 20 °C background
    raw[10:30, 20:40] = int((273.15 + 36.5) * 64)  # a 36.5 °C face
    frame = Frame(raw=raw, seq=0, t_capture=now(), meta={"temperature_k": tk})
    frame.restored = raw.copy()
    server.write(frame)
    for view in ("raw", "restored"):
        spot = get_json(server, f"/spot.json?x=25&y=15&view={view}")
        assert spot["celsius"] == pytest.approx(36.5, abs=0.02)
    assert get_json(server, "/spot.json?x=2&y=2")["celsius"] == pytest.approx(20.0, abs=0.02)
    scene = get_json(server, "/stats.json")["scene"]
    assert scene["min_c"] == pytest.approx(20.0, abs=0.02) and scene["max_c"] == pytest.approx(36.5, abs=0.02)
    counts_only = Frame(raw=raw, seq=1, t_capture=now(), meta={"temperature_k": None})
    server.write(counts_only)
    assert get_json(server, "/spot.json?x=25&y=15")["celsius"] is None
    scene = get_json(server, "/stats.json")["scene"]
    assert scene["min_c"] is None and scene["max_c"] is None  # the schema's key is there, null: counts only


class Identity:
    """A 'model' that maps the normalised frame to itself: restored counts == raw counts."""

    name = "identity"

    def infer(self, batch):
        return batch


def test_pipeline_restored_counts_read_in_the_same_temperature_space(server):
    source = open_source("synthetic://?size=160x120&realtime=0&frames=3&ffc=0")
    pipeline = Pipeline(source, Identity(), [server], frames=3).start()
    try:
        assert pipeline.wait(30)
        check_restored_spot(server)
    finally:
        pipeline.stop()


def check_restored_spot(server):
    frame, _ = server.latest.snapshot()
    assert frame.restored is not None
    y, x = 100, 80
    tk = frame.meta["temperature_k"]
    spot = get_json(server, f"/spot.json?x={x}&y={y}&view=restored")
    assert spot["celsius"] == pytest.approx(celsius(int(frame.restored[y, x]), tk), abs=0.01)
    # identity restoration: the restored temperature is the raw one (normalise/invert rounding only)
    raw_c = get_json(server, f"/spot.json?x={x}&y={y}&view=raw")["celsius"]
    assert spot["celsius"] == pytest.approx(raw_c, abs=2 * tk["scale"])
    scene = get_json(server, "/stats.json")["scene"]
    assert scene["of"] == "restored" and -25.0 < scene["min_c"] < scene["max_c"] < 70.0
