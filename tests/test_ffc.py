"""FFCController against the pty emulators: periodic / on-demand / camera-initiated FFC,
frame marking during the shutter, stats, errors, and a frame path that never waits on serial."""
import threading
import time

import numpy as np
import pytest

from tir.edge.camera.boson import BosonClient, FFCMode, FFCStatus
from tir.edge.camera.emulator import BosonEmulator, TauEmulator
from tir.edge.camera.ffc import CameraNotFound, FFCController, open_camera_control
from tir.edge.camera.tau import TauClient
from tir.edge.frame import Frame, now
from waiting import wait_until


def make_frame(seq: int) -> Frame:
    return Frame(raw=np.zeros((4, 4), np.uint16), seq=seq, t_capture=now())


def test_periodic_ffc_marks_shutter_frames_and_fills_stats():
    with BosonEmulator(ffc_duration_s=0.3, ffc_mode=FFCMode.MANUAL) as emu:
        client = BosonClient(emu.port, timeout=0.5)
        records = []
        with FFCController(client, period_s=0.5, settle_s=0.1, poll_s=0.2) as ffc:
            seq = 0
            while emu.ffc_count < 2 or emu.ffc_status() != FFCStatus.COMPLETE or len(records) < 120:
                before = emu.ffc_status()
                frame = ffc.annotate(make_frame(seq))
                after = emu.ffc_status()
                records.append((before, after, frame.meta["ffc"]))
                seq += 1
                time.sleep(0.01)
                assert seq < 2000, "periodic FFC never completed twice"
            time.sleep(0.3)
            stats = ffc.stats()
        client.close()
    assert emu.requests["run_ffc"] >= 2
    in_shutter = [marked for before, after, marked in records
                  if before == after == FFCStatus.IN_PROGRESS]
    assert in_shutter and all(in_shutter)  # every frame captured mid-FFC is marked
    assert any(not marked for _, _, marked in records)  # frames outside FFC are not
    assert stats["ffc_count"] >= 2 and stats["ffc_frames"] >= len(in_shutter)
    assert stats["fpa_temp_c"] == pytest.approx(35.0, abs=0.6)
    assert stats["ffc_state"] in ("complete", "in_progress")
    assert stats["last_ffc_age_s"] is not None and stats["last_ffc_age_s"] >= 0
    assert stats["ffc_errors"] == 0


def test_on_demand_ffc_and_frames_before_it_stay_unmarked():
    with BosonEmulator(ffc_duration_s=0.2) as emu:
        client = BosonClient(emu.port, timeout=0.5)
        with FFCController(client, period_s=None, settle_s=0.05, poll_s=0.2) as ffc:
            early = ffc.annotate(make_frame(0))
            assert wait_until(lambda: ffc.stats()["fpa_temp_c"] is not None)
            assert emu.requests["run_ffc"] == 0
            ffc.request_ffc()
            assert wait_until(lambda: ffc.stats()["ffc_count"] == 1 and ffc.stats()["ffc_state"] == "complete")
            assert emu.requests["run_ffc"] == 1
            time.sleep(0.1)
            late = ffc.annotate(make_frame(1))
            assert ffc.stats()["last_ffc_age_s"] >= 0.05
        client.close()
    assert early.meta["ffc"] is False and late.meta["ffc"] is False


def test_camera_initiated_ffc_is_detected_and_marked():
    with BosonEmulator(ffc_duration_s=0.4, auto_ffc_period_s=0.3, ffc_mode=FFCMode.AUTO) as emu:
        client = BosonClient(emu.port, timeout=0.5)
        with FFCController(client, period_s=None, poll_s=0.05, settle_s=0.05) as ffc:
            marked = []
            assert wait_until(lambda: marked.append(ffc.annotate(make_frame(0)).meta["ffc"])
                              or ffc.stats()["ffc_camera_initiated"] >= 1)
            assert wait_until(lambda: marked.append(ffc.annotate(make_frame(0)).meta["ffc"]) or any(marked))
        client.close()
    assert emu.requests["run_ffc"] == 0  # the host never asked


def test_tau_client_without_ffc_status_uses_assumed_duration():
    with TauEmulator() as emu:
        client = TauClient(emu.port, timeout=0.5)
        with FFCController(client, period_s=None, assumed_ffc_s=0.3, settle_s=0.0, poll_s=0.2) as ffc:
            ffc.request_ffc()
            assert wait_until(lambda: emu.ffc_count == 1)
            during = ffc.annotate(make_frame(0))
            assert wait_until(lambda: ffc.stats()["ffc_state"] == "complete")
            after = ffc.annotate(make_frame(1))
            assert ffc.stats()["fpa_temp_c"] == pytest.approx(31.5)
        client.close()
    assert during.meta["ffc"] is True and after.meta["ffc"] is False


def test_errors_are_counted_and_the_controller_recovers():
    with BosonEmulator(ffc_duration_s=0.1) as emu:
        client = BosonClient(emu.port, timeout=0.2, retries=0)
        with FFCController(client, period_s=None, poll_s=30.0, settle_s=0.0) as ffc:
            assert wait_until(lambda: ffc.stats()["fpa_temp_c"] is not None)  # first poll done
            emu.inject("status", status=0x0203)  # so this hits the RunFFC
            ffc.request_ffc()
            assert wait_until(lambda: ffc.stats()["ffc_errors"] >= 1)
            assert "BosonRangeError: run_ffc" in ffc.stats()["ffc_last_error"]
            assert emu.ffc_count == 0  # refused, not run
            ffc.request_ffc()
            assert wait_until(lambda: emu.ffc_count == 1 and ffc.stats()["ffc_state"] == "complete")
        client.close()


def test_annotate_never_waits_for_the_serial_port():
    with BosonEmulator() as emu:
        client = BosonClient(emu.port, timeout=0.5)
        ffc = FFCController(client, period_s=None, poll_s=0.05).start()
        results = []
        with client._lock:  # a serial transaction that does not finish
            worker = threading.Thread(target=lambda: results.append(ffc.annotate(make_frame(0))))
            worker.start()
            worker.join(timeout=2.0)
            assert not worker.is_alive()
        ffc.close()
        client.close()
    assert results[0].meta["ffc"] is False


def test_bad_arguments_and_missing_camera(tmp_path):
    with pytest.raises(ValueError, match="period"):
        FFCController(object(), period_s=0)
    with pytest.raises(ValueError, match="protocol"):
        open_camera_control("/dev/null", protocol="lepton")
    (tmp_path / "sys" / "class" / "tty").mkdir(parents=True)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "ttyUSB0").touch()
    with pytest.raises(CameraNotFound, match="serial ports here: .*ttyUSB0"):
        open_camera_control(None, sysfs_root=str(tmp_path / "sys"), dev_root=str(tmp_path / "dev"))
    with pytest.raises(CameraNotFound, match="name the port: tir run --camera-port DEV"):
        open_camera_control(None, protocol="tau", sysfs_root=str(tmp_path / "sys"),
                            dev_root=str(tmp_path / "dev"))


@pytest.mark.faults
def test_a_serial_adapter_unplugged_and_plugged_back_is_counted_shown_and_reconnected(tmp_path):
    """Session 17: with the camera's serial adapter unplugged mid-run (the pty's other end
    closed: tcflush and read fail with EIO, as on a vanished /dev/ttyACM0), pyserial's
    reset_input_buffer raised termios.error, which is no OSError: it escaped the client as is and
    ended the FFC controller's thread (no error counted, the page kept showing the last FPA
    temperature as current, FFC never ran again), and the port was never reopened when the
    adapter came back at the same path (a /dev/serial/by-id link). Now the failure is a port
    error, counted, the FPA temperature is unknown while the link is down, and the next command
    opens the path again."""
    import os

    link = tmp_path / "ttyBoson"
    first = BosonEmulator(ffc_duration_s=0.05).start()
    os.symlink(first.port, link)
    client = BosonClient(str(link), timeout=0.2, retries=0)
    with FFCController(client, period_s=None, poll_s=0.05, settle_s=0.0) as ffc:
        assert wait_until(lambda: ffc.stats()["fpa_temp_c"] is not None)
        first.close()   # unplugged
        assert wait_until(lambda: ffc.stats()["ffc_errors"] >= 1 and ffc.stats()["fpa_temp_c"] is None)
        assert "BosonPortError" in ffc.stats()["ffc_last_error"]
        with BosonEmulator(ffc_duration_s=0.05) as second:   # plugged back: the link names the new tty
            os.unlink(link)
            os.symlink(second.port, link)
            assert wait_until(lambda: ffc.stats()["fpa_temp_c"] is not None)
            ffc.request_ffc()
            assert wait_until(lambda: second.ffc_count == 1)
    assert client.counters["reopened"] >= 1
    client.close()
