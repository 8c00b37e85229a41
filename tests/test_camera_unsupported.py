"""Boson firmware without optional functions (issue 10 item 17): the emulator answers
FLR_UNDEFINED_FUNCTION 0x0207 for the commands it is told its firmware lacks."""
import json
import time

import pytest

from tir.edge.camera.boson import BosonClient, BosonUndefinedFunction, FFCMode
from tir.edge.camera.emulator import BosonEmulator
from tir.edge.camera.ffc import ASSUMED_FFC_S, FFCController, FFCProgress
from tir.tools.cli import main
from waiting import wait_until

NO_FFC_QUERIES = ("get_ffc_status", "get_ffc_in_progress")


def run(capsys, *argv):
    """(exit status, what the command printed: stdout, then its error line on stderr)."""
    code = main(["camera", *argv])
    out, err = capsys.readouterr()
    return code, out + err


def test_emulator_answers_0x0207_for_the_functions_its_firmware_lacks():
    with BosonEmulator(unsupported={"get_ffc_status"}) as emu:
        client = BosonClient(emu.port, timeout=0.5)
        with pytest.raises(BosonUndefinedFunction) as info:
            client.get_ffc_status()
        assert info.value.code == 0x0207 and "FLR_UNDEFINED_FUNCTION" in str(info.value)
        assert client.get_camera_sn() == 93588  # the rest still answers
        client.close()
    with pytest.raises(ValueError, match="get_ffc_staus"):
        BosonEmulator(unsupported={"get_ffc_staus"})


def test_info_prints_every_field_it_can_and_not_supported_for_the_rest(capsys):
    with BosonEmulator(unsupported={"get_ffc_status", "get_camera_pn", "get_fpa_temp_cx10"},
                       fpa_drift_c=0.0) as emu:
        code, out = run(capsys, "info", "--port", emu.port, "--timeout", "0.5")
        assert code == 0
        lines = dict(line.split(None, 1) for line in out.strip().splitlines())
        assert lines["serial"] == "93588" and lines["software-rev"] == "4.1.22"
        assert lines["gain-mode"] == "high" and lines["ffc-mode"] == "auto"
        assert lines["part-number"] == "not supported" and lines["ffc-status"] == "not supported"
        assert lines["fpa-temp"] == "not supported"
        code, out = run(capsys, "info", "--json", "--port", emu.port, "--timeout", "0.5")
        info = json.loads(out)
        assert code == 0 and info["serial"] == 93588 and info["ffc-status"] is None
        assert info["not_supported"] == ["part-number", "fpa-temp", "ffc-status"] and info["errors"] == {}
        code, out = run(capsys, "get", "ffc-status", "--port", emu.port)
        assert code == 1 and "ffc-status: not supported" in out and "0x0207" in out


def test_info_from_a_camera_that_does_not_answer_still_fails(capsys):
    with BosonEmulator() as emu:
        emu.inject("stall", count=50)
        code, out = run(capsys, "info", "--port", emu.port, "--timeout", "0.1", "--retries", "0")
    assert code == 1 and "no reply" in out


def test_ffc_confirmed_by_the_in_progress_flag_when_ffc_status_is_unsupported(capsys):
    with BosonEmulator(unsupported={"get_ffc_status"}, ffc_duration_s=0.3) as emu:
        code, out = run(capsys, "ffc", "--port", emu.port)
        assert code == 0 and emu.ffc_count == 1
        assert out.startswith("FFC done in") and "confirmed by ffc-in-progress: cleared" in out
        assert "ffc-status not supported" in out
        assert float(out.split()[3]) >= 0.3  # it waited for the flag to clear
        assert emu.requests["get_ffc_in_progress"] >= 2


def test_ffc_waits_the_assumed_time_when_no_ffc_query_is_supported(capsys):
    with BosonEmulator(unsupported=NO_FFC_QUERIES, ffc_duration_s=0.2) as emu:
        start = time.monotonic()
        code, out = run(capsys, "ffc", "--port", emu.port)
        assert code == 0 and emu.ffc_count == 1
        assert time.monotonic() - start >= ASSUMED_FFC_S
        assert out.startswith("FFC sent and acknowledged; waited the assumed FFC time of 1 s")
        assert "not confirmed" in out and "ffc-status, ffc-in-progress" in out


def test_ffc_progress_falls_back_once_and_remembers():
    with BosonEmulator(unsupported={"get_ffc_status"}, ffc_duration_s=0.3) as emu:
        client = BosonClient(emu.port, timeout=0.5)
        progress = FFCProgress(client)
        assert progress.method == "ffc-status" and progress.busy() is False
        assert progress.method == "ffc-in-progress" and progress.unsupported == ["ffc-status"]
        client.run_ffc()
        assert progress.busy() is True and progress.state == "in_progress"
        assert emu.requests["get_ffc_status"] == 1  # not asked again
        client.close()


@pytest.mark.parametrize("unsupported, confirmed_by", [
    ({"get_ffc_status"}, "ffc-in-progress"),
    (set(NO_FFC_QUERIES) | {"get_fpa_temp_cx10"}, "assumed 0.4 s"),
])
def test_pipeline_ffc_with_firmware_lacking_queries(unsupported, confirmed_by):
    with BosonEmulator(unsupported=unsupported, ffc_duration_s=0.3, ffc_mode=FFCMode.MANUAL) as emu:
        client = BosonClient(emu.port, timeout=0.5)
        with FFCController(client, period_s=None, assumed_ffc_s=0.4, settle_s=0.0, poll_s=0.2) as ffc:
            ffc.request_ffc()
            assert wait_until(lambda: emu.ffc_count == 1 and ffc.stats()["ffc_state"] == "complete"
                              and ffc.stats()["last_ffc_age_s"] is not None)
            time.sleep(0.5)  # a few polls
            stats = ffc.stats()
        client.close()
    assert stats["ffc_confirmed_by"] == confirmed_by and stats["ffc_errors"] == 0, stats
    if "get_fpa_temp_cx10" in unsupported:
        assert stats["fpa_temp_c"] is None and emu.requests["get_fpa_temp_cx10"] == 1  # asked once
    else:
        assert stats["fpa_temp_c"] == pytest.approx(35.0, abs=0.6)


def test_tir_run_open_ffc_accepts_a_camera_without_fpa_temperature(capsys):
    from argparse import Namespace

    from tir.tools.run import open_ffc

    with BosonEmulator(unsupported={"get_fpa_temp_cx10"}) as emu:
        args = Namespace(camera_port=emu.port, camera_protocol="boson", ffc_period=30.0)
        controller, client = open_ffc(args, None)
        try:
            assert controller is not None
            assert "FPA temperature not supported, FFC every 30 s" in capsys.readouterr().out
        finally:
            client.close()
