"""Fault injection on a real ``tir run`` process: stop signals at start-up and while streaming,
a teardown with requests in flight. ``tools/faults.sh`` runs every ``faults`` test, plus the
real full-disk run when it may mount a tmpfs."""
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import cv2
import pytest

from tir.edge.outputs.recorder import PREVIEW_NAME, read_recording

pytestmark = pytest.mark.faults

SOURCE = "synthetic://?size=160x120"


def start_run(*args, tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "tir.tools", "run", "--source", SOURCE, "--model", "plainnet:tiny",
           "--port", "0", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=tmp_path)


def read_until(child, prefix, timeout=120.0):
    """Lines of the child's output up to the first starting with ``prefix``."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    child.kill()
    raise AssertionError(f"no line starting with {prefix!r}; got:\n{''.join(lines)}")


def assert_valid_recording(folder, at_least=1):
    raw, index = read_recording(folder, what="raw")
    assert len(raw) >= at_least and len(raw) == len(index)
    in_preview = sum(row["preview"] == "1" for row in index)
    if in_preview:  # the preview was finalised (indexed): it holds every frame the index says
        video = cv2.VideoCapture(str(folder / PREVIEW_NAME))
        assert video.isOpened()
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == in_preview
    return len(raw)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_stop_signal_while_streaming_stops_cleanly(tmp_path, sig):
    child = start_run("--record", str(tmp_path / "rec"), tmp_path=tmp_path)
    read_until(child, "fps")  # the first status line: frames are flowing and being recorded
    time.sleep(0.5)
    child.send_signal(sig)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    assert f"{sig.name}: stopping" in out and "Traceback" not in out
    assert "tir run: stopping" not in out                 # said once, by the handler, not twice
    assert_valid_recording(tmp_path / "rec")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_during_start_up_stops_cleanly(tmp_path, sig):
    child = start_run("--record", str(tmp_path / "rec"), tmp_path=tmp_path)
    read_until(child, "tir run: model")  # model loaded; source, outputs and pipeline still to come
    child.send_signal(sig)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    assert "Traceback" not in out and f"{sig.name}: stopping" in out
    if (tmp_path / "rec" / "frames.csv").exists():  # the signal came after the recorder started
        assert_valid_recording(tmp_path / "rec", at_least=0)


def test_a_second_signal_during_the_shutdown_does_not_cut_it_short(tmp_path):
    child = start_run("--record", str(tmp_path / "rec"), tmp_path=tmp_path)
    read_until(child, "fps")
    child.send_signal(signal.SIGTERM)
    child.send_signal(signal.SIGTERM)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    assert "Traceback" not in out
    assert_valid_recording(tmp_path / "rec")


def test_exit_with_snapshot_requests_in_flight_is_clean(tmp_path):
    """Issue 10 item 3: six parallel /snapshot/side.jpg loops until the run's --duration ends;
    the process must exit 0, never SIGABRT ('terminate called without an active exception')."""
    for attempt in range(3):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        child = subprocess.Popen([sys.executable, "-m", "tir.tools", "run", "--duration", "4", "--port", "0",
                                  "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=env, cwd=tmp_path)
        url = read_until(child, "tir run: output http")[-1].split("output ", 1)[1].strip()
        stop = threading.Event()
        served = []

        def fetch():
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(url + "snapshot/side.jpg", timeout=5) as reply:
                        served.append(len(reply.read()))
                except OSError:
                    time.sleep(0.01)

        loops = [threading.Thread(target=fetch, daemon=True) for _ in range(6)]
        for loop in loops:
            loop.start()
        out, _ = child.communicate(timeout=120)
        stop.set()
        for loop in loops:
            loop.join(10)
        assert child.returncode == 0, f"attempt {attempt}: exit {child.returncode}\n{out}"
        assert "terminate called" not in out and "threads still running" not in out
        assert served, "no snapshot was served: the test did not load the server"
