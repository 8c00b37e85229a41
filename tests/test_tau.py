"""Tau2 packets (thermal_io.md §2 vectors) and TauClient against the pty TauEmulator."""
import time

import pytest

from tir.edge.camera import tau
from tir.edge.camera.crc import crc16_xmodem
from tir.edge.camera.emulator import TauEmulator
from tir.edge.camera.tau import TauClient, TauFFCMode, TauGainMode

TIMEOUT = 0.2


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_xmodem_check_value():
    assert crc16_xmodem(b"123456789") == 0x31C3


@pytest.mark.parametrize("function, arg, wire", [
    (0x0C, b"", "6E 00 00 0C 00 00 AA DA 00 00"),  # DO_FFC
    (0x20, h("0000"), "6E 00 00 20 00 02 79 3F 00 00 00 00"),  # READ_SENSOR FPA temperature
    (0x0B, h("0000"), "6E 00 00 0B 00 02 0F 08 00 00 00 00"),  # SET_FFC_MODE manual
])
def test_packets_match_reference(function, arg, wire):
    assert tau.encode_packet(function, arg) == h(wire)
    assert tau.decode_packet(h(wire)) == tau.TauPacket(0, function, arg)


def test_crc2_over_all_preceding_bytes_equals_crc_of_argument():
    wire = tau.encode_packet(0x0B, h("0001"))
    assert int.from_bytes(wire[-2:], "big") == crc16_xmodem(h("0001")) == crc16_xmodem(wire[:-2])


def test_reader_resyncs_after_garbage_and_flags_bad_crc2():
    good = tau.encode_packet(0x0A, h("0002"), status=0)
    bad = bytearray(tau.encode_packet(0x20, h("0123")))
    bad[-1] ^= 0xFF
    reader = tau.TauPacketReader()
    stream = b"\x6e\x01\x02\x03\x04\x05\x06\x07\x08" + good + bytes(bad) + good
    packets = []
    for i in range(0, len(stream), 5):
        packets += reader.feed(stream[i:i + 5])
    assert [(p.function, p.arg, p.error) for p in packets] == [
        (0x0A, h("0002"), None), (0x20, h("0123"), "crc"), (0x0A, h("0002"), None)]
    assert reader.garbage_bytes == 9
    with pytest.raises(ValueError, match="bad CRC2"):
        tau.decode_packet(bytes(bad))


@pytest.fixture
def emu():
    with TauEmulator() as device:
        yield device


@pytest.fixture
def client(emu):
    with TauClient(emu.port, timeout=TIMEOUT, retries=1) as c:
        yield c


def test_every_command(emu, client):
    assert client.get_camera_sn() == 412345
    assert client.get_sensor_sn() == 98765
    assert client.get_software_rev() == (1, 5, 2, 1)
    assert client.get_fpa_temp_c() == pytest.approx(31.5)
    client.run_ffc()
    assert emu.ffc_count == 1
    for mode in TauFFCMode:
        client.set_ffc_mode(mode.name.lower())
        assert client.get_ffc_mode() is mode
    for mode in TauGainMode:
        client.set_gain_mode(mode)
        assert client.get_gain_mode() is mode
    assert set(emu.requests) == set(tau.COMMANDS)
    assert bytes(emu.rx[:10]) == tau.encode_packet(0x04)  # SERIAL_NUMBER request, first on the wire


def test_camera_status_errors(client):
    with pytest.raises(tau.TauRangeError) as info:
        client.call("set_ffc_mode", 7)
    assert info.value.code == 0x03 and "CAM_RANGE_ERROR" in str(info.value)
    with pytest.raises(tau.TauUndefinedFunction):
        client.transact(0x99, b"", 0)
    assert client.get_camera_sn() == 412345


EXPECTED = {
    "garbage": None,
    "bad_crc": tau.TauCRCError,
    "truncated": tau.TauTruncatedReply,
    "stall": tau.TauTimeout,
    "wrong_function": tau.TauFunctionMismatch,
    "status": tau.TauUndefinedError,
    "late": tau.TauTimeout,
}


@pytest.mark.parametrize("fault", TauEmulator.faults)
def test_faults(emu, fault):
    assert set(EXPECTED) == set(TauEmulator.faults)
    strict = TauClient(emu.port, timeout=TIMEOUT, retries=0)
    emu.inject(fault, delay_s=1.5 * TIMEOUT)
    start = time.monotonic()
    if EXPECTED[fault] is None:
        assert strict.get_camera_sn() == 412345
    else:
        with pytest.raises(EXPECTED[fault]):
            strict.get_camera_sn()
    assert time.monotonic() - start < TIMEOUT + 1.0
    strict.close()
    time.sleep(2 * TIMEOUT if fault == "late" else 0)
    retrying = TauClient(emu.port, timeout=TIMEOUT, retries=2)
    if fault != "status":
        emu.inject(fault, delay_s=1.5 * TIMEOUT)
    assert retrying.get_fpa_temp_c() == pytest.approx(31.5)
    assert retrying.get_camera_sn() == 412345
    retrying.close()


def test_missing_port(emu):
    with pytest.raises(tau.TauPortError, match="does not exist"):
        TauClient("/dev/ttyUSB_nonexistent_tir")


def test_a_port_that_echoes_is_named_and_no_echo_is_taken_for_a_reply():
    # loop:// returns what is written. Before: get_gain_mode read "reply carries 0 bytes,
    # expected 2", get_fpa_temp_c returned 0.0 °C and run_ffc "succeeded" with no camera at all.
    import serial
    client = TauClient(serial.serial_for_url("loop://"), timeout=TIMEOUT, retries=1)
    for command in (client.get_gain_mode, client.get_fpa_temp_c, client.run_ffc,
                    lambda: client.set_gain_mode("high")):
        with pytest.raises(tau.TauTimeout, match=r"only the request itself came back \(the port echoes"):
            command()
    assert client.port_echoes is True and client.stats()["function_errors"] == 0


@pytest.mark.parametrize("first", ["run_ffc", "get_fpa_temp_c", "get_gain_mode"])
def test_a_camera_behind_an_echoing_port_answers_every_command(first):
    # The echo precedes each reply; DO_FFC's, SET_*'s and READ_SENSOR's replies can equal their
    # requests byte for byte, so the client learns the port echoes before taking one as a reply.
    with TauEmulator(echo=True) as emu, TauClient(emu.port, timeout=TIMEOUT, retries=0) as client:
        getattr(client, first)()
        assert client.port_echoes is True
        client.run_ffc()
        client.set_gain_mode("low")
        assert client.get_gain_mode() is TauGainMode.LOW
        assert client.get_fpa_temp_c() == pytest.approx(31.5)
        emu.fpa_temp_c = 0.0  # a reply identical to its request (argument 0x0000)
        assert client.get_fpa_temp_c() == 0.0
        assert client.get_camera_sn() == 412345
        assert emu.ffc_count == 2 - (first != "run_ffc")


def test_a_port_that_does_not_echo_is_probed_once():
    with TauEmulator() as emu, TauClient(emu.port, timeout=TIMEOUT, retries=0) as client:
        client.run_ffc()
        client.run_ffc()
        assert client.port_echoes is False and emu.requests["serial_number"] == 1 and emu.ffc_count == 2
    with TauEmulator() as emu, TauClient(emu.port, timeout=TIMEOUT, retries=0) as client:
        assert client.get_gain_mode() is TauGainMode.HIGH  # its reply differs from its request: no probe
        client.run_ffc()
        assert client.port_echoes is False and emu.requests["serial_number"] == 0


def test_a_path_that_is_no_serial_port_and_a_missing_one_say_so_and_list_the_ports(tmp_path):
    # Before: pyserial's "Could not configure port: (25, 'Inappropriate ioctl for device')" for a
    # file, "[Errno 21] Is a directory" for a folder, and a missing port listed nothing.
    afile = tmp_path / "afile"
    afile.write_text("x")
    for path, says in ((afile, "is not a serial port (a regular file)"), (tmp_path, "is not a serial port (a folder)"),
                       (tmp_path / "ttyUSB9", "does not exist")):
        with pytest.raises(tau.TauPortError) as info:
            TauClient(str(path))
        assert says in str(info.value) and "serial ports" in str(info.value), str(info.value)


def test_bytes_that_form_no_packet_are_counted_in_the_timeout(tmp_path):
    # another device or another baud rate on the port: "no reply" said nothing of the bytes that came
    import os
    import threading
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    stop = threading.Event()

    def noise():
        while not stop.is_set():
            os.write(master, bytes(range(0x10, 0x50)))   # no 0x6E: never a Tau2 packet start
            stop.wait(0.01)

    thread = threading.Thread(target=noise, daemon=True)
    thread.start()
    try:
        client = TauClient(os.ttyname(slave), timeout=TIMEOUT, retries=0)
        with pytest.raises(tau.TauTimeout, match=r"no Tau2 frame within .*: \d+ bytes came back that are no Tau2 "
                                                 r"packet \(garbage: another device on this port, or another baud "
                                                 r"rate\?\)"):
            client.get_gain_mode()
        client.close()
    finally:
        stop.set()
        thread.join()
        os.close(master)
        os.close(slave)


def test_a_camera_not_found_names_the_option_of_each_mode():
    # tir run's --port is the HTTP output's: "pass --port DEV" sent run users to the wrong option
    from tir.edge.camera.ffc import CameraNotFound, find_control_port

    with pytest.raises(CameraNotFound, match="tir run --camera-port DEV, tir camera --port DEV"):
        find_control_port("tau")


@pytest.mark.parametrize("client_class", ["boson", "tau"])
def test_a_character_device_that_is_no_terminal_is_no_serial_port(client_class):
    """Session 17: ``--camera-port /dev/video0`` (the camera's video device, not its serial port;
    /dev/null here, a character device that is no terminal either) passed the check for a
    character device and got pyserial's "Could not configure port: (25, 'Inappropriate ioctl for
    device')"; it is named as no serial port, with the ports that exist."""
    from tir.edge.camera.boson import BosonClient, BosonPortError

    cls, error = (BosonClient, BosonPortError) if client_class == "boson" else (TauClient, tau.TauPortError)
    with pytest.raises(error) as info:
        cls("/dev/null")
    text = str(info.value)
    assert "/dev/null is not a serial port (a character device that is no terminal" in text, text
    assert "serial ports" in text and "Inappropriate ioctl" not in text
