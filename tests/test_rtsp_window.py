"""Window and RTSP outputs: refusals where they cannot work, pipelines, newest-frame worker."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest

from tir.edge.frame import Frame, now
from tir.edge.outputs import OutputError, open_output
from tir.edge.outputs.rtsp import (RTSPOutput, encoder_elements, gstreamer_problem,
                                   writer_pipeline)
from tir.edge.outputs.window import NewestFrameWorker, gui_problem
from tir.edge.uri import parse_uri


def opencv_has_gstreamer():
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return line.split(":", 1)[1].strip().startswith("YES")
    return False


def frame(seq):
    return Frame(raw=np.full((8, 8), seq, np.uint16), seq=seq, t_capture=now())


# --- RTSP / RTP -----------------------------------------------------------------------

def test_gstreamer_detection_matches_the_build_information():
    assert (gstreamer_problem() is None) == opencv_has_gstreamer()


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_rtsp_without_gstreamer_says_how_to_get_it():
    out = open_output("rtsp://@:8554/thermal")
    with pytest.raises(OutputError) as err:
        out.start()
    message = str(err.value)
    assert "without GStreamer" in message and "JetPack" in message
    assert "--output http://127.0.0.1:8080" in message and "http://0.0.0.0" not in message


def test_rtp_pipeline_sends_h264_over_udp_without_sync():
    p = writer_pipeline(parse_uri("rtp://192.168.1.20:5000"), "x264", 2500, 9554)
    assert p.startswith("appsrc is-live=true")
    assert "x264enc tune=zerolatency" in p and "bitrate=2500" in p
    assert p.endswith("rtph264pay config-interval=1 pt=96 ! "
                      "udpsink host=192.168.1.20 port=5000 sync=false async=false")


def test_rtsp_pipelines_push_to_a_server_or_relay_to_the_local_one():
    push = writer_pipeline(parse_uri("rtsp://media.local:8554/cam"), "x264", 4000, 9554)
    assert push.endswith("rtspclientsink location=rtsp://media.local:8554/cam latency=0")
    served = RTSPOutput(parse_uri("rtsp://@:8600/thermal?encoder=nvv4l2"))
    assert served.relay_port == 9600
    assert "udpsink host=127.0.0.1 port=9600" in served.pipeline
    assert "nvv4l2h264enc insert-sps-pps=1 idrinterval=30 maxperf-enable=1" in served.pipeline
    assert served.url == "rtsp://127.0.0.1:8600/thermal"


def test_rtsp_bad_options_are_refused():
    with pytest.raises(OutputError, match="rtp://HOST:PORT"):
        writer_pipeline(parse_uri("rtp://receiver"), "x264", 4000, 9554)
    with pytest.raises(OutputError, match="not one of auto, x264, nvv4l2"):
        encoder_elements("vp9", 4000)
    with pytest.raises(OutputError, match=r"option view must be one of raw, restored, side \(got 'thermal'\)"):
        open_output("rtsp://@:8554/x?view=thermal")


# --- window ---------------------------------------------------------------------------

def test_window_without_display_is_refused(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(OutputError, match="DISPLAY is not set|no GUI") as err:
        open_output("display://0").start()
    # a browsable local address, not 0.0.0.0 (issue 10 item 20)
    assert "open http://127.0.0.1:8080" in str(err.value) and "http://0.0.0.0" not in str(err.value)


def test_window_with_unreachable_x_display_is_refused(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":97")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    problem = gui_problem()
    assert problem is not None and (":97" in problem or "no GUI" in problem)
    with pytest.raises(OutputError, match="cannot open a window"):
        open_output("display://0").start()


def test_window_bad_view_is_refused():
    with pytest.raises(OutputError, match=r"option view must be one of raw, restored, side \(got 'thermal'\)"):
        open_output("display://0?view=thermal")


@pytest.fixture
def xvfb_display():
    """A private virtual X display (Xvfb), or a skip where Xvfb is not installed."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("needs Xvfb for a real window (apt-get install xvfb)")
    number = next(n for n in range(90, 200) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    server = subprocess.Popen([xvfb, f":{number}", "-screen", "0", "800x600x24", "-nolisten",
                               "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
        assert server.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.05)
    yield f":{number}"
    server.terminate()
    server.wait(5)


WINDOW_CHILD = textwrap.dedent("""
    import json, time
    import numpy as np
    from tir.edge.frame import Frame, now
    from tir.edge.outputs import open_output
    window = open_output("display://0?view=side&title=test").start()
    for seq in range(20):
        raw = np.random.default_rng(seq).integers(0, 16000, (60, 80)).astype(np.uint16)
        window.write(Frame(raw=raw, seq=seq, t_capture=now()))
        time.sleep(0.02)
    deadline = time.monotonic() + 5
    while window.worker.handled == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    handled, failure = window.worker.handled, window.worker.failure
    window.close()
    print(json.dumps({"handled": handled, "failure": str(failure) if failure else None,
                      "running": window.worker.running}))
""")


def test_window_shows_frames_on_a_real_x_display(xvfb_display):
    # In a child process: a Qt failure there cannot take the test run down with it.
    env = dict(os.environ, DISPLAY=xvfb_display)
    env.pop("WAYLAND_DISPLAY", None)
    done = subprocess.run([sys.executable, "-c", WINDOW_CHILD], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failure"] is None and result["handled"] >= 1 and not result["running"]


# --- the newest-frame worker behind both ---------------------------------------------

def test_worker_handles_only_the_newest_frame():
    started, release = threading.Event(), threading.Event()
    handled = []

    def handle(f):
        handled.append(f.seq)
        started.set()
        release.wait(5)

    done = threading.Event()
    idle = lambda: done.set() if handled and handled[-1] == 5 else None  # noqa: E731
    worker = NewestFrameWorker("test-worker", handle, idle=idle)
    worker.start()
    worker.offer(frame(0))
    assert started.wait(5)
    for seq in range(1, 6):
        worker.offer(frame(seq))  # arrive while frame 0 is still being handled
    release.set()
    assert done.wait(5)
    worker.stop()
    assert handled == [0, 5] and worker.skipped == 4 and worker.handled == 2


def test_worker_keeps_the_failure():
    def handle(f):
        raise ValueError(f"cannot handle frame {f.seq}")

    worker = NewestFrameWorker("failing-worker", handle)
    worker.start()
    worker.offer(frame(3))
    worker._thread.join(5)
    assert not worker.running and "frame 3" in str(worker.failure)
    worker.stop()
