"""V4L2 capture path, driven by real numpy frames through a stand-in for cv2.VideoCapture
(there is no camera on this machine). Device lookup uses a sysfs tree built in tmp_path."""
import threading
import time

import cv2
import numpy as np
import pytest

from tir.edge.sources import SourceError, open_source
from tir.edge.sources.v4l2 import V4L2Camera, V4L2Source
from tir.edge.uri import parse_uri

PROP_NAMES = {cv2.CAP_PROP_FRAME_WIDTH: "W", cv2.CAP_PROP_FRAME_HEIGHT: "H", cv2.CAP_PROP_FOURCC: "FOURCC",
              cv2.CAP_PROP_CONVERT_RGB: "CONVERT_RGB", cv2.CAP_PROP_BUFFERSIZE: "BUFFERSIZE",
              cv2.CAP_PROP_FPS: "FPS"}


class FakeCapture:
    """Implements the cv2.VideoCapture calls the source uses; frames are given up front.

    ``native`` is the size the 'device' reports back whatever is requested; items in
    ``frames`` are arrays, or None for a failed read."""

    def __init__(self, frames, native=None, refuse=(), opened=True):
        self.frames = list(frames)
        self.native = native
        self.refuse = set(refuse)
        self.opened = opened
        self.calls = []
        self.props = {}
        self.released = False

    def __call__(self, path, api):  # used as the capture factory
        self.open_args = (path, api)
        return self

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.calls.append((PROP_NAMES.get(prop, prop), value))
        if prop in self.refuse:
            return False
        self.props[prop] = value
        return True

    def get(self, prop):
        if self.native and prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.native[0])
        if self.native and prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.native[1])
        return float(self.props.get(prop, 0))

    def read(self):
        if not self.frames:
            return False, None
        item = self.frames.pop(0)
        return (item is not None), item

    def release(self):
        self.released = True


class PacedCapture(FakeCapture):
    """A camera that keeps delivering at its frame rate (``fps``), as a plugged-in one does: a list of
    frames read as fast as the grabber can would run out while the test's reader is starved of CPU
    (a loaded machine), and the source would rightly call that an unplug."""

    def __init__(self, shape, fps=120.0, **kw):
        super().__init__([], **kw)
        self.shape, self.period, self.k = shape, 1.0 / fps, 0

    def read(self):
        time.sleep(self.period)
        self.k += 1
        return True, y16(*self.shape, 10 + self.k)


def y16(h, w, seed):
    return np.random.default_rng(seed).integers(0, 16384, size=(h, w), dtype=np.uint16)


def test_properties_are_set_in_the_working_order(fake_sysfs):
    sysfs, dev = fake_sysfs
    cap = FakeCapture([y16(512, 640, 0)])
    camera = V4L2Camera(parse_uri(f"v4l2://{dev}/video2"), cap, sysfs, dev)
    assert cap.open_args == (f"{dev}/video2", cv2.CAP_V4L2)
    assert [name for name, _ in cap.calls] == ["W", "H", "FOURCC", "CONVERT_RGB", "BUFFERSIZE"]
    values = dict(cap.calls)
    assert values["FOURCC"] == cv2.VideoWriter_fourcc("Y", "1", "6", " ")
    assert values["CONVERT_RGB"] == 0 and type(values["CONVERT_RGB"]) is not bool
    assert values["BUFFERSIZE"] == 1
    assert camera.format.name == "boson"  # from the USB id 09cb:4007 in sysfs
    assert all(accepted for _, _, accepted in camera.settings)


def test_boson_frames_plain_and_flattened_decode_the_same(fake_sysfs):
    sysfs, dev = fake_sysfs
    frames = [y16(256, 320, i) for i in range(4)]
    buffers = [frames[0], frames[1].reshape(1, -1),  # OpenCV 4.11-style flattened uint16
               np.frombuffer(frames[2].astype("<u2").tobytes(), np.uint8).reshape(1, -1),
               frames[3].reshape(-1)]
    cap = FakeCapture(buffers, native=(320, 256))  # a Boson 320 ignores the 640x512 request
    source = V4L2Source(parse_uri(f"v4l2://{dev}/video2"), cap, sysfs, dev)
    assert source.size == (320, 256) and source.live
    got = [source.read() for _ in range(4)]
    for frame, expected in zip(got, frames):
        np.testing.assert_array_equal(frame.raw, expected)
        assert frame.meta["camera"] == "FLIR Boson" and frame.meta["format"] == "boson"
        assert frame.meta["kelvin_per_count"] is None and frame.meta["bits"] == 16
    assert [f.seq for f in got] == [0, 1, 2, 3]


def test_tc001_chosen_by_usb_id_gives_kelvin(fake_sysfs):
    sysfs, dev = fake_sysfs
    raw = np.full((192, 256), 300 * 64, np.uint16)  # 300 K
    raw[50, 60] = 310 * 64 + 32  # 310.5 K
    yuyv = np.zeros((384, 256, 2), np.uint8)
    yuyv[192:] = raw.astype("<u2").view(np.uint8).reshape(192, 256, 2)
    cap = FakeCapture([yuyv, yuyv.reshape(1, -1)], native=(256, 384))
    source = V4L2Source(parse_uri(f"v4l2://{dev}/video4"), cap, sysfs, dev)
    assert dict(cap.calls)["FOURCC"] == cv2.VideoWriter_fourcc(*"YUYV")
    assert (dict(cap.calls)["W"], dict(cap.calls)["H"]) == (256, 384)
    assert source.size == (256, 192)
    for _ in range(2):
        frame = source.read()
        np.testing.assert_array_equal(frame.raw, raw)
        kelvin = source.format.to_kelvin(frame.raw)
        assert kelvin[50, 60] == 310.5 and kelvin[0, 0] == 300.0
        assert frame.meta["kelvin_per_count"] == 1 / 64


def test_format_override_lepton_with_telemetry_rows(fake_sysfs):
    sysfs, dev = fake_sysfs
    image = np.full((120, 160), 29815, np.uint16)  # 298.15 K in TLinear 0.01 K
    telemetry = np.arange(320, dtype=np.uint16).reshape(2, 160)
    cap = FakeCapture([np.vstack([image, telemetry])], native=(160, 122))
    source = V4L2Source(parse_uri(f"v4l2://{dev}/video0?format=lepton"), cap, sysfs, dev)
    frame = source.read()
    assert frame.raw.shape == (120, 160)
    np.testing.assert_array_equal(frame.meta["telemetry"], telemetry)
    assert source.format.to_kelvin(frame.raw)[0, 0] == pytest.approx(298.15)
    with pytest.raises(SourceError, match="unknown raw format 'mjpg'"):
        V4L2Source(parse_uri(f"v4l2://{dev}/video0?format=mjpg"), FakeCapture([]), sysfs, dev)


def test_8bit_colour_frames_fail_clearly_and_name_refused_settings(fake_sysfs):
    sysfs, dev = fake_sysfs
    bgr = np.zeros((512, 640, 3), np.uint8)
    cap = FakeCapture([bgr] * 3, refuse={cv2.CAP_PROP_CONVERT_RGB})
    with pytest.raises(SourceError) as info:
        V4L2Source(parse_uri(f"v4l2://{dev}/video2"), cap, sysfs, dev)
    message = str(info.value)
    assert "does not deliver 16-bit 'boson' frames" in message
    assert "uint8 (512, 640, 3)" in message and "CONVERT_RGB=0" in message
    assert "video2 'Boson: FLIR Video' [09cb:4007 FLIR Boson]" in message
    assert cap.released


def test_a_glitch_at_open_is_tolerated_and_later_bad_frames_are_counted(fake_sysfs):
    sysfs, dev = fake_sysfs
    good = y16(120, 160, 1)
    cap = FakeCapture([None, np.zeros(7, np.uint8), good, np.zeros((60, 80), np.uint16), good],
                      native=(160, 120))
    source = V4L2Source(parse_uri(f"v4l2://{dev}/video0?format=y16"), cap, sysfs, dev)
    assert source.read() is not None  # the verified first frame
    frame = source.read()  # the wrong-shape frame is dropped on the way
    np.testing.assert_array_equal(frame.raw, good)
    assert source.stats()["corrupt"] == 1


def test_device_that_stops_delivering_raises(fake_sysfs):
    sysfs, dev = fake_sysfs
    cap = FakeCapture([y16(120, 160, 0)], native=(160, 120))
    camera = V4L2Camera(parse_uri(f"v4l2://{dev}/video0"), cap, sysfs, dev)
    assert camera.read() is not None
    assert camera.read() is None and camera.read() is None
    with pytest.raises(SourceError, match="stopped delivering frames"):
        camera.read()


def test_started_source_reconnects_through_the_grabber(fake_sysfs):
    sysfs, dev = fake_sysfs
    generations = [FakeCapture([y16(120, 160, i) for i in range(3)], native=(160, 120)),
                   FakeCapture([], opened=False),  # still unplugged
                   PacedCapture((120, 160), native=(160, 120))]
    lock = threading.Lock()

    def factory(path, api):
        with lock:
            return generations.pop(0) if len(generations) > 1 else generations[0]

    source = V4L2Source(parse_uri(f"v4l2://{dev}/video0?format=y16"), factory, sysfs, dev,
                        backoff_initial=0.02, backoff_max=0.05)
    with source:
        seqs = []
        for _ in range(200):
            frame = source.read(timeout=1.0)
            if frame is not None:
                seqs.append(frame.seq)
                if source.stats()["reconnects"] == 1 and frame.seq > 3:
                    break
        stats = source.stats()
    assert stats["reconnects"] == 1 and stats["connected"]
    assert "cannot open" in stats["last_error"] or "stopped delivering" in stats["last_error"]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "frame numbers keep counting"


def test_missing_device_lists_what_exists(fake_sysfs):
    sysfs, dev = fake_sysfs
    with pytest.raises(SourceError) as info:
        V4L2Source(parse_uri(f"v4l2://{dev}/video7"), None, sysfs, dev)
    message = str(info.value)
    assert "video7 does not exist" in message and "[09cb:4007 FLIR Boson]" in message
    # the real OpenCV path on this machine, through the scheme registry
    for uri in ("v4l2:///dev/video99", "v4l2://99", "99"):
        with pytest.raises(SourceError, match="/dev/video99 does not exist"):
            open_source(uri)
    with pytest.raises(SourceError, match="cannot open"):
        V4L2Source(parse_uri(f"v4l2://{dev}/video2"), FakeCapture([], opened=False), sysfs, dev)


@pytest.mark.parametrize("native, rows, telemetry", [((80, 60), 0, None), ((80, 63), 3, None),
                                                     ((80, 63), 3, "top"), ((160, 122), 2, None)])
def test_lepton_on_purethermal_by_usb_id_takes_the_size_the_device_reports(tmp_path, native, rows, telemetry):
    """Lepton 2.x (80x60, 80x63 with 3 telemetry rows) and 3.x on the same USB id 1e4e:0100."""
    from conftest import usb_device, video_node

    sysfs, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    video_node(sysfs, usb_device(sysfs, "pci0/usb1/1-4", "1e4e", "0100", "PureThermal (fw:v1.3.0)"),
               "video0", "PureThermal (fw:v1.3.0): PureTh", 0)
    (dev / "video0").write_text("")
    w, h = native
    image = np.full((h - rows, w), 29815, np.uint16)
    image[5, 7] = 31015  # 37.00 deg C in TLinear 0.01 K
    tele = np.arange(rows * w, dtype=np.uint16).reshape(rows, w)
    capture = np.vstack([tele, image] if telemetry == "top" else [image, tele])
    cap = FakeCapture([capture, capture.reshape(1, -1)], native=native)
    query = "?telemetry=top" if telemetry else ""
    source = V4L2Source(parse_uri(f"v4l2://{dev}/video0{query}"), cap, str(sysfs), str(dev))
    assert "W" not in dict(cap.calls)  # no size requested: the device's own is taken
    assert source.format.name == "lepton" and source.size == (w, h - rows)
    for _ in range(2):
        frame = source.read()
        np.testing.assert_array_equal(frame.raw, image)
        assert frame.meta["kelvin_per_count"] == 0.01 and frame.meta["temperature_k"] == {"scale": 0.01, "offset": 0.0}
        assert float(frame.raw[5, 7]) * 0.01 - 273.15 == pytest.approx(37.00)
        if rows:
            np.testing.assert_array_equal(frame.meta["telemetry"], tele)
        else:
            assert "telemetry" not in frame.meta
    with pytest.raises(SourceError, match="telemetry=top"):
        V4L2Source(parse_uri(f"v4l2://{dev}/video0?telemetry=left"), FakeCapture([]), str(sysfs), str(dev))


def test_a_path_that_is_no_video_device_and_a_name_that_is_no_number_are_named_as_such(tmp_path):
    # Before: "OpenCV (V4L2) cannot open /dev/null; is another program using it?" for a file, a
    # folder or another character device, and v4l2://abc opened /dev/video0.
    from tir.edge.sources.v4l2 import not_a_video_device

    afile = tmp_path / "afile"
    afile.write_text("x")
    for path, says in ((str(afile), "(a regular file)"), (str(tmp_path), "(a folder)"),
                       ("/dev/null", "(a character device of major 1, not video4linux's 81)")):
        with pytest.raises(SourceError) as info:
            open_source(f"v4l2://{path}")
        assert f"{path} is not a video device {says}" in str(info.value)
        assert "another program" not in str(info.value)
    with pytest.raises(SourceError, match=r"v4l2://abc: 'abc' is not a device number; give v4l2://N"):
        open_source("v4l2://abc")
    assert not_a_video_device(str(afile)) == "a regular file"
