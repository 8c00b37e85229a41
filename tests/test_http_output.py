"""HTTPOutput over real sockets: MJPEG streams, snapshots, stats, port clash, no signal."""
import http.client
import json
import socket
import threading
import time

import cv2
import numpy as np
import pytest

from tir.edge.frame import Frame, now
from tir.edge.outputs import OutputError, open_output
from tir.edge.outputs.http import HTTPOutput
from tir.edge.uri import parse_uri

W, H = 96, 64


def make_frame(seq: int) -> Frame:
    """A 14-bit scene with a bright square that moves one step per frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    raw = (4000 + 20 * xx + 10 * yy).astype(np.uint16)
    x0 = (seq * 7) % (W - 16)
    raw[20:36, x0:x0 + 16] = 12000
    frame = Frame(raw=raw, seq=seq, t_capture=now())
    frame.restored = (raw // 2 + 1000).astype(np.uint16)
    return frame


class Feeder:
    """Writes a new frame every ``period`` seconds from a background thread."""

    def __init__(self, output, period=0.02):
        self.output, self.period = output, period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        seq = 1
        while not self.stop.is_set():
            self.output.write(make_frame(seq))
            seq += 1
            time.sleep(self.period)

    def __enter__(self):
        self.output.write(make_frame(0))
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def server():
    out = open_output("http://127.0.0.1:0").start()
    yield out
    out.close()


def get(out, path, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=timeout)
    conn.request("GET", path)
    resp = conn.getresponse()
    return resp, resp.read()


def read_mjpeg_parts(resp, count):
    """Parse multipart/x-mixed-replace parts by their boundary and Content-Length."""
    ctype = resp.getheader("Content-Type")
    assert ctype.startswith("multipart/x-mixed-replace")
    boundary = ctype.split("boundary=")[1].encode()
    assert resp.fp.readline().strip() == b"--" + boundary
    parts = []
    while len(parts) < count:
        headers = {}
        while True:
            line = resp.fp.readline().strip()
            if not line:
                break
            key, value = line.decode().split(":", 1)
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        data = resp.fp.read(int(headers["content-length"]))
        assert resp.fp.readline() == b"\r\n"
        assert resp.fp.readline().strip() == b"--" + boundary
        parts.append(data)
    return parts


def decode(jpeg):
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


@pytest.mark.parametrize("view,width", [("raw", W), ("restored", W), ("side", 2 * W)])
def test_mjpeg_stream_delivers_changing_frames(server, view, width):
    with Feeder(server):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", f"/stream/{view}.mjpg")
        resp = conn.getresponse()
        assert resp.status == 200
        images = [decode(p) for p in read_mjpeg_parts(resp, 5)]
        conn.close()
    assert all(img.shape == (H, width, 3) for img in images)
    distinct = {img.tobytes() for img in images}
    assert len(distinct) >= 3, "the stream repeats the same image"


def test_encoding_is_lazy_and_shared(server):
    for seq in range(5):
        server.write(make_frame(seq))
    assert server.latest.encodes == 0, "encoded although nobody was watching"
    _, first = get(server, "/snapshot/raw.jpg")
    _, second = get(server, "/snapshot/raw.jpg")
    assert first == second
    assert server.latest.encodes == 1, "the same frame was encoded twice for one view"
    assert decode(first).shape == (H, W, 3)


def test_quality_option_changes_jpeg_size(server):
    server.write(make_frame(3))
    _, low = get(server, "/snapshot/side.jpg?quality=10")
    _, high = get(server, "/snapshot/side.jpg?quality=95")
    assert len(low) < len(high)


def test_stats_json_merges_provider_and_counters(server):
    calls = []

    def provider():
        calls.append(1)
        return {"fps": 25.0, "connected": True, "task": "denoise",
                "latency_ms": {"e2e": {"p50": 12.5, "p99": 30.0}}}

    server.stats_provider = provider
    server.write(make_frame(0))
    server.write(make_frame(1))
    resp, body = get(server, "/stats.json")
    assert resp.status == 200 and resp.getheader("Content-Type") == "application/json"
    stats = json.loads(body)
    assert stats["fps"] == 25.0 and stats["task"] == "denoise"
    assert stats["latency_ms"]["e2e"]["p50"] == 12.5
    assert stats["http"]["frames_in"] == 2
    assert stats["frame"] == {"seq": 1, "width": W, "height": H,
                              "age_ms": stats["frame"]["age_ms"]}
    # make_frame(1): restored = raw // 2 + 1000; 256 of 6144 pixels in the hot square.
    assert stats["scene"]["max_counts"] == 12000 // 2 + 1000
    assert stats["scene"]["of"] == "restored"
    assert stats["no_signal"] is False
    assert calls


def test_stats_provider_failure_is_reported_not_fatal(server):
    def broken():
        raise RuntimeError("stats exploded")

    server.stats_provider = broken
    server.write(make_frame(0))
    stats = json.loads(get(server, "/stats.json")[1])
    assert "stats exploded" in stats["stats_error"]


def test_no_signal_before_frames_and_after_silence():
    out = HTTPOutput(parse_uri("http://127.0.0.1:0?no_signal_after=0.3")).start()
    try:
        assert json.loads(get(out, "/stats.json")[1])["no_signal"] is True
        card = decode(get(out, "/snapshot/raw.jpg")[1])
        out.write(make_frame(0))
        assert json.loads(get(out, "/stats.json")[1])["no_signal"] is False
        live = decode(get(out, "/snapshot/raw.jpg")[1])
        assert live.shape == (H, W, 3) and not np.array_equal(live, card[:H, :W])
        time.sleep(0.5)
        assert json.loads(get(out, "/stats.json")[1])["no_signal"] is True
        lost = decode(get(out, "/snapshot/raw.jpg")[1])
        assert lost.shape == (H, W, 3)
        # The card is mostly dark with red text: far from the bright live scene.
        assert lost.mean() < live.mean()
        # A stream opened now serves the card at once instead of hanging.
        conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=5)
        conn.request("GET", "/stream/restored.mjpg")
        (part,) = read_mjpeg_parts(conn.getresponse(), 1)
        assert decode(part).shape == (H, W, 3)
        conn.close()
    finally:
        out.close()


def test_source_disconnected_means_no_signal(server):
    server.stats_provider = lambda: {"connected": False}
    server.write(make_frame(0))
    assert json.loads(get(server, "/stats.json")[1])["no_signal"] is True


def test_port_in_use_is_a_clear_error():
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        with pytest.raises(OutputError, match=f"port {port} on 127.0.0.1 is in use"):
            open_output(f"http://127.0.0.1:{port}").start()
    finally:
        blocker.close()


def test_default_port_and_page_and_healthz(server):
    assert HTTPOutput(parse_uri("http://127.0.0.1")).port == 8080
    resp, page = get(server, "/")
    assert resp.status == 200 and b'id="raw"' in page and b'id="restored"' in page
    for asset in ("/app.js", "/style.css"):
        assert get(server, asset)[0].status == 200
    assert json.loads(get(server, "/healthz")[1])["ok"] is True
    resp, body = get(server, "/stream/thermal.mjpg")
    assert resp.status == 404 and b"raw, restored, side" in body
    assert get(server, "/nothing")[0].status == 404


def test_spot_reads_counts_and_temperature(server):
    frame = make_frame(0)
    frame.meta["temperature_k"] = 0.01  # TLinear 0.01 K per count
    server.write(frame)
    spot = json.loads(get(server, "/spot.json?x=5&y=3&view=raw")[1])
    assert spot["counts"] == int(frame.raw[3, 5])
    assert spot["celsius"] == pytest.approx(frame.raw[3, 5] * 0.01 - 273.15, abs=0.01)
    assert "outside" in json.loads(get(server, "/spot.json?x=500&y=3")[1])["error"]
    assert get(server, "/spot.json?x=a")[0].status == 400


def test_close_ends_open_streams_promptly():
    out = open_output("http://127.0.0.1:0").start()
    out.write(make_frame(0))
    conn = http.client.HTTPConnection("127.0.0.1", out.port, timeout=10)
    conn.request("GET", "/stream/raw.mjpg")
    resp = conn.getresponse()
    read_mjpeg_parts(resp, 1)
    out.close()
    resp.fp.read()  # returns once the server ends the stream; a hang hits the 10 s timeout
    assert out.clients == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", out.port), timeout=1).close()


def test_frames_from_the_synthetic_camera_stream_at_their_size(server):
    from tir.edge.sources import open_source

    source = open_source("synthetic://?size=160x120&realtime=0&frames=5").start()
    try:
        for _ in range(5):
            server.write(source.read(timeout=5))
    finally:
        source.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/stream/side.mjpg")
    (part,) = read_mjpeg_parts(conn.getresponse(), 1)
    conn.close()
    assert decode(part).shape == (120, 320, 3)
    assert json.loads(get(server, "/stats.json")[1])["frame"]["seq"] == 4


def test_scene_range_ignores_a_few_dead_and_hot_pixels(server):
    frame = make_frame(0)
    frame.restored = None
    frame.raw[0, 0], frame.raw[2, 2] = 0, 65535  # both on the sampled grid
    server.write(frame)
    scene = json.loads(get(server, "/stats.json")[1])["scene"]
    assert scene["of"] == "raw"
    assert 4000 <= scene["min_counts"] and scene["max_counts"] == 12000


def test_wants_display_only_while_watched(server):
    assert server.wants_display() is False  # nobody is looking: the pipeline can skip the AGC
    with Feeder(server):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/stream/raw.mjpg")
        resp = conn.getresponse()
        read_mjpeg_parts(resp, 1)
        assert server.wants_display() is True
        resp.close()
        conn.close()
    deadline = time.monotonic() + 10  # the server notices on its next write (NO SIGNAL card)
    while server.wants_display() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.wants_display() is False  # the stream's client left
    get(server, "/snapshot/raw.jpg")
    assert server.wants_display() is True  # a snapshot keeps the views fresh for a while
