"""The typed stats schema (edge/pipeline/stats.py): /stats.json validates against it, the page
reads only its keys, outputs get stats through Output.attach, the recorder keeps the final stats."""
import dataclasses
import http.client
import json
import re
import typing
from pathlib import Path

import pytest

from tir.edge.outputs import open_output
from tir.edge.outputs.base import Output
from tir.edge.pipeline import Pipeline
from tir.edge.pipeline.stats import (STATS_SCHEMA_VERSION, LatencySummary, PipelineStats, StatsSnapshot)
from tir.edge.sources import open_source
from tir.edge.uri import parse_uri
from tir.tools.run import status_line

from waiting import wait_until

APP_JS = Path(__file__).resolve().parents[1] / "edge" / "outputs" / "web" / "app.js"
SOURCE = "synthetic://?size=160x120&realtime=0"


def get_json(out, path):
    conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=5)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def _strip_optional(tp):
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(args) == 1, tp
        return args[0]
    return tp


def schema_type(path):
    """Walk a key path ("camera", "fpa_temp_c") through the schema's types; AssertionError
    naming the first key the schema does not have. Stops at a leaf, a list or Any."""
    tp = StatsSnapshot
    walked = []
    for key in path:
        tp = _strip_optional(tp)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            assert key in hints, f"stats.{'.'.join(walked + [key])}: the schema ({tp.__name__}) has no {key!r}"
            tp = hints[key]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]  # any key of a dict section (e.g. latency_ms.e2e)
        else:
            return tp  # a leaf, a list or Any: what follows is a JavaScript method or free-form
        walked.append(key)
    return tp


def page_paths():
    """Every ``stats.a.b...`` key path app.js reads (the page always writes full paths)."""
    source = APP_JS.read_text(encoding="utf-8")
    return sorted({tuple(m.group(1).split(".")[1:]) for m in re.finditer(r"(?<![/\w.])stats((?:\.[A-Za-z_]\w*)+)", source)})


def assert_matches_schema(value, tp, where="stats"):
    """``value`` (JSON) has exactly the keys of the dataclass ``tp``, recursively."""
    tp = _strip_optional(tp)
    if value is None:
        return
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        assert set(value) == set(hints), f"{where}: keys {sorted(set(value) ^ set(hints))} differ from the schema"
        for key, sub in hints.items():
            assert_matches_schema(value[key], sub, f"{where}.{key}")
    elif typing.get_origin(tp) is dict:
        assert isinstance(value, dict), where
        for key, item in value.items():
            assert_matches_schema(item, typing.get_args(tp)[1], f"{where}.{key}")


def test_page_reads_only_keys_of_the_schema():
    paths = page_paths()
    assert ("latency_ms", "e2e", "p50") in paths and ("camera", "fpa_temp_c") in paths  # the scan works
    for path in paths:
        schema_type(path)
    quantiles = re.search(r"const QUANTILES = \[([^\]]*)\]", APP_JS.read_text(encoding="utf-8")).group(1)
    assert [q.strip(' "') for q in quantiles.split(",")] == ["p50", "p90", "p99", "mean", "max"]
    for q in ["p50", "p90", "p99", "mean", "max"]:
        assert q in {f.name for f in dataclasses.fields(LatencySummary)}
    assert f"const SCHEMA_VERSION = {STATS_SCHEMA_VERSION};" in APP_JS.read_text(encoding="utf-8")
    with pytest.raises(AssertionError, match="stats.camera.fpa_temp: the schema"):
        schema_type(("camera", "fpa_temp"))  # a key the page might guess is refused


def test_stats_json_of_a_running_pipeline_validates_against_the_schema():
    out = open_output("http://127.0.0.1:0")
    pipeline = Pipeline(open_source(SOURCE), None, [out]).start()
    try:
        assert wait_until(lambda: pipeline.stats.output >= 3)
        stats = get_json(out, "/stats.json")
    finally:
        pipeline.stop()
    assert stats["schema_version"] == STATS_SCHEMA_VERSION
    assert_matches_schema(stats, StatsSnapshot)
    # every key path the page reads is there (dict sections: the keys the page names)
    for path in page_paths():
        value = stats
        for key in path:
            if not isinstance(value, dict):
                break  # a leaf, or a section that is null in this run (no camera, no collection)
            assert key in value, f"/stats.json has no stats.{'.'.join(path)}"
            value = value[key]
    assert stats["frames"] >= 3 and stats["source"]["uri"] == SOURCE
    assert stats["http"]["frames_in"] >= 3 and isinstance(stats["frame"]["seq"], int)
    assert stats["latency_ms"]["e2e"]["n"] >= 3 and stats["stages"][0] == "capture"
    assert stats["camera"] is None and stats["stats_error"] is None


class AttachRecorder(Output):
    def __init__(self):
        super().__init__(parse_uri("collect://"))
        self.calls = []
        self.started_attached = None

    def attach(self, stats, actions=None):
        self.calls.append((stats, dict(actions or {})))
        super().attach(stats, actions)

    def start(self):
        self.started_attached = self.stats_provider is not None
        return self

    def write(self, frame):
        pass


def test_an_output_gets_stats_and_actions_through_attach():
    out = AttachRecorder()
    pipeline = Pipeline(open_source(SOURCE), None, [out], frames=4)
    snap = pipeline.run()
    assert len(out.calls) == 1 and out.started_attached, "attach must come once, before start"
    stats, actions = out.calls[0]
    assert actions == {} and out.actions == {}  # no camera control: no actions
    live = stats()
    assert isinstance(live, StatsSnapshot) and live.frames == snap.frames == 4
    with pytest.raises(TypeError, match="stats must be a callable returning a StatsSnapshot"):
        out.attach({"fps": 1.0})


def test_http_output_refuses_a_provider_that_is_not_the_schema():
    out = open_output("http://127.0.0.1:0").start()
    try:
        out.attach(lambda: {"fps": 25.0})
        stats = get_json(out, "/stats.json")
    finally:
        out.close()
    assert stats["stats_error"] == "TypeError: the stats provider returned dict, not a StatsSnapshot"
    assert stats["fps"] == 0.0 and stats["schema_version"] == STATS_SCHEMA_VERSION


def test_a_section_keeps_known_keys_and_names_the_ones_the_schema_lacks():
    stats = PipelineStats(["capture", "read", "output"])
    stats.camera_stats = lambda: {"fpa_temp_c": 31.5, "ffc_state": "idle", "shutter_mm": 3}
    camera = stats.snapshot().camera
    assert camera.fpa_temp_c == 31.5 and camera.ffc_state == "idle"
    assert camera.stats_error == "CameraStats has no field for shutter_mm; add it to edge/pipeline/stats.py"

    def broken():
        raise OSError("serial port gone")

    stats.camera_stats = broken
    camera = stats.snapshot().camera
    assert camera.stats_error == "OSError: serial port gone" and camera.fpa_temp_c is None


def test_snapshot_reads_like_its_json_form():
    snap = PipelineStats(["capture", "read", "output"]).snapshot()
    assert snap["frames"] == snap.frames == 0 and snap.get("camera", "none") == "none"
    assert "camera" not in snap and "frames" in snap
    with pytest.raises(KeyError):
        snap["fps_guess"]
    assert snap.latency_ms["e2e"] == LatencySummary(n=0)
    assert snap.to_dict()["latency_ms"]["e2e"] == {"n": 0, "p50": None, "p90": None, "p99": None,
                                                   "mean": None, "max": None}
    line = status_line(snap)  # no frame yet: no latency, and the line still prints
    assert "e2e p50    nan ms" in line and "frames 0" in line


def test_recording_json_keeps_the_final_stats(tmp_path):
    rec = open_output(f"file://{tmp_path / 'rec'}?preview=0")
    snap = Pipeline(open_source(SOURCE), None, [rec], frames=5).run()
    info = json.loads((tmp_path / "rec" / "recording.json").read_text())
    assert info["stats_schema_version"] == STATS_SCHEMA_VERSION
    assert info["stats"]["frames"] == snap.frames == 5
    assert info["stats"]["recording"]["written"] == 5 and info["stats"]["recording"]["failure"] is None
    assert info["stats"]["recording"]["stats_error"] is None  # RecordingStats has every Recorder.stats() key
    assert_matches_schema(info["stats"], StatsSnapshot)
    assert not (tmp_path / "rec" / "recording.json.tmp").exists()


def test_contrast_section_is_typed_from_the_model_status():
    from tir.edge.pipeline.stats import ContrastStatus

    stats = PipelineStats(["capture", "read", "output"])
    stats.model_status = lambda: {"task": "blur", "contrast": {"reference": 0.37, "frames": 40, "ratio": 0.7746,
                                                              "demoted": 12}}
    snap = stats.snapshot()
    assert snap.contrast == ContrastStatus(reference=0.37, frames=40, ratio=0.7746, demoted=12)
    assert snap.to_dict()["contrast"]["demoted"] == 12 and snap.model["contrast"]["reference"] == 0.37
    stats.model_status = lambda: {"task": "blur", "contrast": None}   # the gate is off
    assert stats.snapshot().contrast is None
