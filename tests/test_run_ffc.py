"""FFC in the pipeline: a real BosonEmulator on a pty (pyserial talks to it) + the synthetic camera."""
import json
import time

import numpy as np
import pytest

from tir.edge.camera.boson import BosonClient
from tir.edge.camera.emulator import BosonEmulator
from tir.edge.camera.ffc import FFCController
from tir.edge.outputs import open_output
from tir.edge.outputs.base import Output
from tir.edge.pipeline import Pipeline
from tir.edge.sources import open_source
from tir.engines.training.models.plainnet import export_plainnet_onnx
from tir.tools import run
from tir.tools.cli import main

from http_json import get_json, post

# the synthetic camera's own simulated FFC is off: only the controller marks frames here
SOURCE = "synthetic://?size=160x120&fps=30&ffc=0"


class Collect(Output):
    """Keeps every frame it is given."""

    def __init__(self):
        self.frames = []

    def write(self, frame):
        self.frames.append(frame)


class MetaModel:
    """Identity model whose infer takes meta, as the Restorer's does; records meta["ffc"]."""

    name = "meta-probe"

    def __init__(self):
        self.ffc_flags = []

    def infer(self, batch, meta=None):
        self.ffc_flags.append(None if meta is None else meta.get("ffc"))
        return batch


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return str(export_plainnet_onnx("tiny", tmp_path_factory.mktemp("m") / "tiny.onnx"))


@pytest.fixture
def emulator():
    with BosonEmulator(ffc_duration_s=0.3) as emu:
        yield emu


def test_periodic_ffc_marks_shutter_frames_and_reports_camera_stats(emulator):
    client = BosonClient(emulator.port)
    controller = FFCController(client, period_s=0.6, settle_s=0.1, poll_s=0.2)
    collect, model = Collect(), MetaModel()
    pipeline = Pipeline(open_source(SOURCE), model, [collect], ffc=controller).start()
    try:
        assert wait_for(lambda: emulator.ffc_count >= 2 and controller.stats()["ffc_state"] == "complete")
        snap = pipeline.snapshot()
    finally:
        pipeline.stop()
        client.close()
    assert emulator.requests["run_ffc"] >= 2
    camera = snap["camera"]
    assert camera["stats_error"] is None  # the schema (CameraStats) has every key the controller gives
    assert camera["ffc_count"] >= 2 and camera["ffc_period_s"] == 0.6
    assert camera["fpa_temp_c"] == pytest.approx(35.0, abs=0.6)  # the emulator's FPA: 35 ± 0.5 °C
    assert camera["last_ffc_age_s"] is not None and camera["ffc_errors"] == 0
    json.dumps(snap.to_dict())  # the snapshot's JSON form, as /stats.json serves it
    marks = [f.meta["ffc"] for f in collect.frames]
    assert any(marks) and not all(marks)
    # each frame is marked exactly when its capture time falls in an FFC window (+ settle)
    assert marks == [controller.in_ffc(f.t_capture) for f in collect.frames]
    # the model (the router's statistics) sees the marks
    assert True in model.ffc_flags and False in model.ffc_flags


def test_source_marked_ffc_frames_stay_marked(emulator):
    client = BosonClient(emulator.port)
    controller = FFCController(client)  # on demand only: it never marks by itself here
    collect = Collect()
    source = open_source("synthetic://?size=160x120&realtime=0&frames=40&fps=30&ffc=1")
    Pipeline(source, None, [collect], ffc=controller).run()
    client.close()
    assert [f.meta["ffc"] for f in collect.frames] == [source.renderer.is_ffc(f.seq) for f in collect.frames]
    assert any(f.meta["ffc"] for f in collect.frames)


def test_post_ffc_on_the_page_runs_one(emulator):
    client = BosonClient(emulator.port)
    controller = FFCController(client, poll_s=0.2)  # no period: only on demand
    http_out = open_output("http://127.0.0.1:0")
    pipeline = Pipeline(open_source(SOURCE), None, [http_out], ffc=controller).start()
    try:
        assert wait_for(lambda: http_out.latest.frames_in > 0)
        stats = get_json(http_out, "/stats.json")
        assert stats["http"]["actions"] == ["ffc"] and stats["camera"]["ffc_count"] == 0
        assert emulator.ffc_count == 0
        code, reply = post(http_out, "/ffc", token=False)  # another site's page has no token
        assert code == 403 and "X-Tir-Token" in reply["error"]
        time.sleep(0.3)
        assert emulator.ffc_count == 0 and emulator.requests["run_ffc"] == 0
        code, reply = post(http_out, "/ffc")
        assert code == 202 and reply == {"ok": True, "requested": "ffc"}
        assert wait_for(lambda: get_json(http_out, "/stats.json")["camera"]["ffc_state"] == "complete")
        assert emulator.ffc_count == 1
        assert get_json(http_out, "/stats.json")["camera"]["ffc_count"] == 1
        assert post(http_out, "/nothing")[0] == 404
    finally:
        pipeline.stop()
        client.close()


def test_post_ffc_without_camera_control_says_how():
    out = open_output("http://127.0.0.1:0").start()
    try:
        code, reply = post(out, "/ffc")
    finally:
        out.close()
    assert code == 409 and "--camera-port" in reply["error"]
    assert "camera" not in Pipeline(open_source(SOURCE), None, []).snapshot()


def test_tir_run_with_camera_port(emulator, capsys, tiny_onnx):
    code = main(["run", "--source", SOURCE, "--model", tiny_onnx,
                 "--duration", "2.5", "--camera-port", emulator.port, "--ffc-period", "0.8",
                 "--output", "http://127.0.0.1:0"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"camera control boson on {emulator.port}" in out and "FFC every 0.8 s" in out
    assert emulator.requests["run_ffc"] >= 1
    assert "FPA 35." in out.strip().splitlines()[-1]


def test_tir_run_camera_port_that_does_not_answer_exits_2(capsys, tmp_path, tiny_onnx):
    code = main(["run", "--source", SOURCE, "--model", tiny_onnx, "--frames", "1",
                 "--camera-port", str(tmp_path / "ttyACM9"), "--output", "http://127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "ttyACM9" in err and "does not exist" in err
    with BosonEmulator() as emu:
        emu.inject("stall", count=10)
        code = main(["run", "--source", SOURCE, "--model", tiny_onnx, "--frames", "1",
                     "--camera-port", emu.port, "--output", "http://127.0.0.1:0"])
    assert code == 2 and "camera control on" in capsys.readouterr().err


def test_boson_source_enables_camera_control_automatically(fake_sysfs, monkeypatch):
    from test_sources_v4l2 import FakeCapture
    from tir.edge.sources.v4l2 import V4L2Source
    from tir.edge.uri import parse_uri

    sysfs, dev = fake_sysfs
    boson = V4L2Source(parse_uri(f"v4l2://{dev}/video2"), FakeCapture([np.zeros((512, 640), np.uint16)] * 2),
                       sysfs, dev)
    assert run.boson_serial_port(boson) == f"{dev}/ttyACM0"
    tc001 = V4L2Source(parse_uri(f"v4l2://{dev}/video4"),
                       FakeCapture([np.zeros((384, 256, 2), np.uint8)] * 2, native=(256, 384)), sysfs, dev)
    assert run.boson_serial_port(tc001) is None
    assert run.boson_serial_port(open_source(SOURCE)) is None
    with BosonEmulator() as emu:  # the found port is the emulator's pty
        monkeypatch.setattr(run, "boson_serial_port", lambda source: emu.port)
        args = type("Args", (), {"camera_port": None, "camera_protocol": "boson", "ffc_period": 0.0})()
        controller, client = run.open_ffc(args, boson)
        assert controller.period_s is None and client.get_camera_sn() == emu.serial_number
        client.close()
    # a found port that does not answer is skipped, not an error
    monkeypatch.setattr(run, "boson_serial_port", lambda source: f"{dev}/ttyACM0")
    assert run.open_ffc(args, boson) == (None, None)




def test_ffc_period_is_checked_without_a_camera_and_not_dropped_silently(capsys):
    # without camera control a bad --ffc-period used to pass unseen (NaN even with one: NaN < 0 is
    # False), and a good one was ignored without a word
    source = open_source(SOURCE)
    for bad in (-3.0, float("nan"), float("inf")):
        args = type("Args", (), {"camera_port": None, "camera_protocol": "boson", "ffc_period": bad})()
        with pytest.raises(run.CameraControlError, match="--ffc-period must be >= 0 seconds"):
            run.open_ffc(args, source)
    args = type("Args", (), {"camera_port": None, "camera_protocol": "boson", "ffc_period": 180.0})()
    assert run.open_ffc(args, source) == (None, None)
    assert "tir run: --ffc-period 180 is not applied: no camera control in this run" in capsys.readouterr().out
    args.ffc_period = 0.0
    assert run.open_ffc(args, source) == (None, None) and capsys.readouterr().out == ""
    source.close()
