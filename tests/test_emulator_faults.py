"""Every emulator fault through real pyserial: the documented exception or a successful retry,
never a hang past timeout * (retries + 1), and the port usable afterwards."""
import time

import pytest

from tir.edge.camera import boson
from tir.edge.camera.boson import BosonClient
from tir.edge.camera.emulator import FAULTS, BosonEmulator

TIMEOUT = 0.2
HANG_MARGIN_S = 1.0  # generous slack on a loaded 2-core machine; a hang would be far longer

# fault -> exception raised with retries=0 (None: the client copes without retrying)
EXPECTED = {
    "garbage": None,
    "bad_crc": boson.BosonCRCError,
    "truncated": boson.BosonTruncatedReply,
    "stall": boson.BosonTimeout,
    "wrong_seq": boson.BosonSequenceError,
    "wrong_function": boson.BosonFunctionMismatch,
    "status": boson.BosonCameraError,
    "late": boson.BosonTimeout,
}


@pytest.fixture
def emu():
    with BosonEmulator() as device:
        yield device


def test_expectations_cover_every_fault():
    assert set(EXPECTED) == set(FAULTS)
    assert issubclass(boson.BosonTruncatedReply, boson.BosonTimeout)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_without_retry_raises_documented_exception(emu, fault):
    client = BosonClient(emu.port, timeout=TIMEOUT, retries=0)
    emu.inject(fault, delay_s=2 * TIMEOUT)
    start = time.monotonic()
    if EXPECTED[fault] is None:
        assert client.get_camera_sn() == 93588
    else:
        with pytest.raises(EXPECTED[fault]):
            client.get_camera_sn()
    assert time.monotonic() - start < TIMEOUT + HANG_MARGIN_S
    expected = EXPECTED[fault]
    assert expected is None or expected.__name__ in boson.__doc__ or issubclass(expected, boson.BosonStatusError)
    time.sleep(2 * TIMEOUT if fault == "late" else 0)
    assert client.get_camera_pn() == "20640A050-6PAAX"  # usable afterwards
    assert emu.faults_applied == [fault]
    client.close()


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "status"])
def test_fault_with_retries_succeeds(emu, fault):
    client = BosonClient(emu.port, timeout=TIMEOUT, retries=2)
    emu.inject(fault, delay_s=1.5 * TIMEOUT)
    start = time.monotonic()
    assert client.get_camera_sn() == 93588
    assert time.monotonic() - start < 3 * TIMEOUT + HANG_MARGIN_S
    # "late" may land in the second or the third attempt, depending on scheduling
    expected_retries = {"garbage": {0}, "late": {1, 2}}.get(fault, {1})
    assert client.stats()["retries"] in expected_retries
    assert client.get_fpa_temp_c() == pytest.approx(35.0, abs=0.6)
    client.close()


def test_late_reply_to_an_abandoned_request_is_skipped(emu):
    # attempt 1 (seq 0) times out at 0.4 s; its reply arrives at 0.6 s, inside attempt 2 (seq 1)
    client = BosonClient(emu.port, timeout=0.4, retries=1)
    emu.inject("late", delay_s=0.6)
    assert client.get_camera_sn() == 93588
    stats = client.stats()
    assert stats["timeouts"] == 1 and stats["retries"] == 1 and stats["stale_replies"] == 1
    assert client.get_software_rev() == (4, 1, 22)


def test_garbage_is_counted(emu):
    client = BosonClient(emu.port, timeout=TIMEOUT, retries=0)
    emu.inject("garbage", count=3)
    for _ in range(3):
        assert client.get_gain_mode() is boson.GainMode.HIGH
    assert client.stats()["garbage_bytes"] == 3 * 2 * 8


@pytest.mark.parametrize("code", sorted(boson.STATUS_ERRORS))
def test_status_fault_maps_every_code(emu, code):
    client = BosonClient(emu.port, timeout=TIMEOUT, retries=0)
    emu.inject("status", status=code)
    with pytest.raises(boson.STATUS_ERRORS[code][1]) as info:
        client.run_ffc()
    assert info.value.code == code
    client.run_ffc()
    assert emu.ffc_count == 1  # the failed request changed nothing; the second one ran


def test_busy_is_retried_but_range_error_is_not(emu):
    client = BosonClient(emu.port, timeout=TIMEOUT, retries=2)
    emu.inject("status", status=0x0283)
    assert client.get_camera_sn() == 93588
    assert client.stats()["retries"] == 1
    emu.inject("status", status=0x0203)
    with pytest.raises(boson.BosonRangeError):
        client.get_camera_sn()
    assert client.stats()["retries"] == 1


def test_faults_on_every_attempt_exhaust_retries_within_bound(emu):
    client = BosonClient(emu.port, timeout=TIMEOUT, retries=2)
    emu.inject("stall", count=3)
    start = time.monotonic()
    with pytest.raises(boson.BosonTimeout):
        client.get_camera_sn()
    assert time.monotonic() - start < 3 * TIMEOUT + HANG_MARGIN_S
    assert client.stats()["retries"] == 2
    assert client.get_camera_sn() == 93588


def test_unknown_fault_name(emu):
    with pytest.raises(ValueError, match="choose one of: garbage"):
        emu.inject("gremlins")
