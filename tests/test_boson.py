"""BosonClient against the pty emulator through real pyserial, plus loop:// and error mapping."""
import re
import time

import pytest
import serial

from tir.edge.camera import boson
from tir.edge.camera.boson import (BosonBadCommand, BosonClient, BosonError, BosonPayloadSizeError,
                                   BosonPortError, BosonRangeError, BosonStatusError, BosonTimeout, FFCMode,
                                   FFCStatus, GainMode)
from tir.edge.camera.emulator import BosonEmulator
from tir.edge.camera.tau import TauClient, TauPortError

TIMEOUT = 0.3


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


@pytest.fixture
def emu():
    with BosonEmulator(fpa_temp_c=-12.3, fpa_drift_c=0.0, ffc_duration_s=0.3) as device:
        yield device


@pytest.fixture
def client(emu):
    with BosonClient(emu.port, timeout=TIMEOUT, retries=1) as c:
        yield c


def test_requests_on_the_wire_match_reference_vectors(emu, client):
    client.run_ffc()
    client.get_camera_sn()
    client.get_fpa_temp_c()
    # RunFFC seq 0, then the captured GetCameraSN / FPA-temp TX frames at seq 1 and 2 re-sequenced.
    assert bytes(emu.rx[:17]) == h("8E 00 00000000 00050007 FFFFFFFF C9 7F AE")
    assert bytes(emu.rx[17:34]) == h("8E 00 00000001 00050002 FFFFFFFF 01 0B AE")
    assert bytes(emu.rx[34:44]) == h("8E 00 00000002 00050030")


def test_identity_commands(client):
    assert client.get_camera_sn() == 93588
    assert client.get_sensor_sn() == 771234
    assert client.get_camera_pn() == "20640A050-6PAAX"
    assert client.get_software_rev() == (4, 1, 22)


def test_fpa_temperature_is_signed(client):
    assert client.get_fpa_temp_c() == pytest.approx(-12.3)
    assert client.call("get_fpa_temp_kx10") == round((-12.3 + 273.15) * 10)


@pytest.mark.parametrize("mode", list(FFCMode))
def test_ffc_mode_round_trip(client, mode):
    client.set_ffc_mode(mode.name.lower())
    assert client.get_ffc_mode() is mode


@pytest.mark.parametrize("mode", list(GainMode))
def test_gain_mode_round_trip(client, mode):
    client.set_gain_mode(int(mode))
    assert client.get_gain_mode() is mode


def test_ffc_status_progresses(emu, client):
    assert client.get_ffc_status() is FFCStatus.NONE
    client.run_ffc()
    assert client.get_ffc_status() is FFCStatus.IN_PROGRESS
    assert client.get_ffc_in_progress() is True
    time.sleep(0.35)
    assert client.get_ffc_status() is FFCStatus.COMPLETE
    assert client.get_ffc_in_progress() is False
    assert emu.ffc_count == 1


def test_every_command_in_the_table_is_answered(emu, client):
    for name, cmd in boson.COMMANDS.items():
        args = (1,) if cmd.arg else ()
        client.call(name, *args)
    assert set(emu.requests) == set(boson.COMMANDS)
    assert client.call("get_ffc_temp_threshold") == 1
    assert client.call("get_ffc_frame_threshold") == 1


def test_camera_errors_map_to_named_exceptions(client):
    with pytest.raises(BosonRangeError) as info:
        client.call("set_ffc_mode", 9)
    assert info.value.code == 0x0203 and "FLR_RANGE_ERROR" in str(info.value)
    with pytest.raises(BosonBadCommand):
        client.transact(0x00059999)
    with pytest.raises(BosonPayloadSizeError) as info:
        client.transact(boson.COMMANDS["set_gain_mode"].function_id, b"\x00")
    assert info.value.code == 0x017D
    assert client.get_camera_sn() == 93588  # still usable


def test_bad_arguments_are_rejected_before_sending(emu, client):
    with pytest.raises(ValueError, match="choose one of: manual"):
        client.set_ffc_mode("sometimes")
    with pytest.raises(ValueError, match="takes no arguments"):
        client.call("run_ffc", 1)
    with pytest.raises(ValueError, match="unknown Boson command"):
        client.call("self_destruct")
    assert emu.rx == b""


def test_status_table_classes():
    for code, (name, cls) in boson.STATUS_ERRORS.items():
        exc = boson.status_error(code, "cmd")
        assert type(exc) is cls and isinstance(exc, BosonError) and exc.code == code
        assert name in str(exc)
    assert type(boson.status_error(0x1234, "cmd")) is BosonStatusError


def test_parse_enum_accepts_names_numbers_members():
    assert boson.parse_enum(GainMode, "dual") is GainMode.DUAL
    assert boson.parse_enum(FFCMode, "shutter-test") is FFCMode.SHUTTER_TEST
    assert boson.parse_enum(FFCMode, "2") is FFCMode.EXTERNAL
    assert boson.parse_enum(GainMode, GainMode.LOW) is GainMode.LOW
    with pytest.raises(ValueError, match="not a GainMode"):
        boson.parse_enum(GainMode, 7)


def test_missing_and_busy_ports_give_clear_errors(emu):
    with pytest.raises(BosonPortError, match="does not exist"):
        BosonClient("/dev/ttyACM_nonexistent_tir")
    holder = serial.Serial(emu.port, 921600, exclusive=True)
    try:
        with pytest.raises(BosonPortError, match="busy"):
            BosonClient(emu.port)
    finally:
        holder.close()
    with BosonClient(emu.port, timeout=TIMEOUT) as c:
        assert c.get_camera_sn() == 93588


def test_client_drives_an_open_serial_object(emu):
    port = serial.Serial(emu.port, 921600, timeout=1.0)
    try:
        c = BosonClient(port, timeout=TIMEOUT)
        assert c.get_camera_sn() == 93588
        c.close()  # does not close a port it did not open
        assert port.is_open
    finally:
        port.close()


def test_transport_independent_over_loop_url():
    # loop:// echoes the request (status field 0xFFFFFFFF): not taken for a reply, and the
    # timeout says the port only echoed (it used to read as "camera returned status 0xFFFFFFFF").
    with BosonClient("loop://", timeout=TIMEOUT, retries=1) as c:
        with pytest.raises(BosonTimeout, match=r"^run_ffc: no reply within .* only the request itself came back "
                                               r"\(the port echoes what is sent"):
            c.run_ffc()
        assert c.stats()["status_errors"] == 0 and c.stats()["timeouts"] == 2


@pytest.mark.parametrize("url, words", [
    ("loop://?foo=bar", "unknown option 'foo' for loop://; loop:// takes logging"),  # pyserial: KeyError
    ("loop://?logging=debug&logging=info", "option 'logging' given twice"),
    ("loop://?logging=loud", "logging='loud'; use one of debug, info, warning, error"),
    ("socket://127.0.0.1:7000?bogus=1", "unknown option 'bogus' for socket://"),
    ("socket://nohost", "socket:// needs HOST:PORT"),  # pyserial: "'<=' not supported ..."
    ("socket://127.0.0.1:99999", "socket:// needs HOST:PORT"),
    ("bogus://x", "unknown URL scheme bogus://; give a device path"),  # pyserial: ValueError
    ("cp2110://x?a=1", "cp2110:// takes no options"),
])
def test_serial_url_with_bad_scheme_or_option_is_one_port_error(url, words):
    with pytest.raises(BosonPortError) as info:
        BosonClient(url, timeout=TIMEOUT, retries=0)
    assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(TauPortError, match=re.escape(words)):
        TauClient(url, timeout=TIMEOUT, retries=0)


def test_serial_url_upper_case_scheme_and_logging_option_are_taken():
    for url in ("LOOP://", "loop://?logging=error"):
        with BosonClient(url, timeout=TIMEOUT, retries=0) as c:
            assert c.port_name == url


def test_constructor_validates_timeout():
    with pytest.raises(ValueError, match="timeout"):
        BosonClient("loop://", timeout=0)


@pytest.mark.parametrize("cls, command, source", [
    (boson.BosonClient, "get_ffc_mode", "bosonGetFFCMode 0x00050013"),
    (boson.BosonClient, "set_gain_mode", "bosonSetGainMode 0x00050014"),
    (TauClient, "get_ffc_mode", "FFC_MODE 0x0B"),
    (TauClient, "set_gain_mode", "GAIN_MODE 0x0A"),
])
def test_enum_setting_methods_are_named_and_documented(cls, command, source):
    method = getattr(cls, command)
    assert method.__name__ == command
    assert source in method.__doc__ and "Raises:" in method.__doc__
    assert cls.error.__name__ + ": the subclass" in method.__doc__
    assert ("ValueError" in method.__doc__) == command.startswith("set_")


class ScriptedPort:
    """A serial-like object that answers every read with the next chunk of ``replies`` (b"" after)."""

    port = "scripted0"

    def __init__(self, *replies, fail=None):
        self.replies = list(replies)
        self.fail = fail
        self.written = []

    def reset_input_buffer(self):
        pass

    def write(self, data):
        if self.fail:
            raise self.fail
        self.written.append(bytes(data))

    def read(self, n):
        return self.replies.pop(0) if self.replies else b""


@pytest.mark.parametrize("cls, command, started, truncated, counters", [
    (BosonClient, "get_camera_sn", b"\x8e\x00\x01", "reply truncated (3 bytes, no end byte)",
     {"commands": 1, "retries": 1, "timeouts": 2, "crc_errors": 0, "framing_errors": 0,
      "sequence_errors": 0, "function_errors": 0, "status_errors": 0, "stale_replies": 0}),
    (TauClient, "get_camera_sn", b"\x6e\x00\x00", "reply incomplete (3 bytes)",
     {"commands": 1, "retries": 1, "timeouts": 2, "crc_errors": 0, "function_errors": 0, "status_errors": 0}),
])
def test_shared_loop_keeps_each_protocols_messages_and_counters(cls, command, started, truncated, counters):
    # no reply at all: the timeout error, counted once per attempt, one retry
    client = cls(ScriptedPort(), timeout=0.05, retries=1)
    with pytest.raises(cls.timeout_error, match=r"^(get_camera_sn|serial_number): no reply within 0.05 s on scripted0$"):
        getattr(client, command)()
    assert len(client._port.written) == 2
    stats = client.stats()
    assert {k: stats[k] for k in counters} == counters and set(counters) <= set(stats)
    # a reply that starts but never ends: the truncated error with the protocol's words
    client = cls(ScriptedPort(started), timeout=0.05, retries=0)
    with pytest.raises(cls.truncated_error) as info:
        getattr(client, command)()
    assert str(info.value).endswith(f": {truncated} within 0.05 s on scripted0")
    # the port failing mid-command: the port error, not retried
    client = cls(ScriptedPort(fail=OSError(5, "Input/output error")), timeout=0.05, retries=2)
    with pytest.raises(cls.port_error, match="serial port scripted0 failed: .*Input/output error"):
        getattr(client, command)()
    assert client.stats()["retries"] == 0


def test_garbage_on_the_port_is_no_boson_frame_and_a_damaged_frame_a_bad_crc():
    # random bytes hold a start (0x8E) and an end byte (0xAE) now and then: the span between them
    # failed its CRC, so a port sending garbage (another device, another baud rate) read as
    # "reply with a bad CRC"; garbage without a command-channel frame start is said to be garbage
    import numpy as np

    from tir.edge.camera import fslp
    from tir.edge.camera.boson import BosonCRCError, BosonTimeout

    for seed in range(4):
        rng = np.random.default_rng(seed)
        noise = [rng.integers(0, 256, 64, dtype=np.uint8).tobytes() for _ in range(100)]
        assert sum(chunk.count(fslp.START) for chunk in noise) > 5   # spans that start and end, in plenty
        client = BosonClient(ScriptedPort(*noise), timeout=0.1, retries=0)
        with pytest.raises(BosonTimeout, match=r"^get_camera_sn: no Boson frame within 0.1 s on scripted0: \d+ bytes "
                                               r"came back that are no Boson packet \(garbage: another device on "
                                               r"this port, or another baud rate\?\)$"):
            client.get_camera_sn()
        assert client.stats()["crc_errors"] == 0
    # a real reply (command channel, whole header) with one bit flipped in its CRC stays a bad CRC
    damaged = bytearray(fslp.command_frame(0, 0x00050002, b"\x00\x00\x00\x01", status=0))
    damaged[-2] ^= 0x40
    client = BosonClient(ScriptedPort(bytes(damaged)), timeout=0.1, retries=0)
    with pytest.raises(BosonCRCError, match="reply with a bad CRC"):
        client.get_camera_sn()
    # the reader alone: the same spans, with and without the command channel's rule
    spans = b"\x8e\x13garbage\xae" + b"\x8e\x00\x01\x02\xae" + bytes(damaged)
    assert [f.error for f in fslp.FrameReader().feed(spans)] == ["crc", "crc", "crc"]
    strict = fslp.FrameReader(channels=(fslp.COMMAND_CHANNEL,), min_payload=fslp.HEADER.size)
    assert [f.error for f in strict.feed(spans)] == ["crc"] and strict.garbage_bytes == 10 + 5
