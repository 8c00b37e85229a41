"""`tir camera` against the pty emulators through tir.tools.cli.main."""
import json
import os

import pytest
import serial

from tir.edge.camera.emulator import BosonEmulator, TauEmulator
from tir.tools.cli import main


@pytest.fixture
def boson():
    with BosonEmulator(fpa_temp_c=-4.2, fpa_drift_c=0.0, ffc_duration_s=0.2) as emu:
        yield emu


def run(capsys, *argv):
    """(exit status, what the command printed: stdout, then its error line on stderr)."""
    code = main(["camera", *argv])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.parametrize("name, expected", [
    ("serial", "93588"), ("sensor-serial", "771234"), ("part-number", "20640A050-6PAAX"),
    ("software-rev", "4.1.22"), ("fpa-temp", "-4.2"), ("ffc-mode", "auto"), ("gain-mode", "high"),
    ("ffc-status", "none"),
])
def test_get(boson, capsys, name, expected):
    assert run(capsys, "get", name, "--port", boson.port, "--timeout", "0.3") == (0, expected + "\n")


def test_set_reads_back(boson, capsys):
    assert run(capsys, "set", "ffc-mode", "manual", "--port", boson.port) == (0, "ffc-mode: manual\n")
    assert run(capsys, "set", "gain-mode", "low", "--port", boson.port) == (0, "gain-mode: low\n")
    assert boson.gain_mode.name == "LOW"
    code, out = run(capsys, "set", "gain-mode", "turbo", "--port", boson.port)
    assert code == 2 and "choose one of: high (0), low (1)" in out


def test_info_table_and_json(boson, capsys):
    code, out = run(capsys, "info", "--port", boson.port)
    assert code == 0 and "part-number    20640A050-6PAAX" in out and "fpa-temp       -4.2 °C" in out
    code, out = run(capsys, "info", "--json", "--port", boson.port)
    info = json.loads(out)
    assert code == 0 and info["serial"] == 93588 and info["software-rev"] == [4, 1, 22]
    assert info["ffc-mode"] == "auto" and info["fpa-temp"] == pytest.approx(-4.2)


def test_ffc_waits_for_completion(boson, capsys):
    code, out = run(capsys, "ffc", "--port", boson.port)
    assert code == 0 and out.startswith("FFC done in") and "status complete" in out
    assert boson.ffc_count == 1
    code, out = run(capsys, "ffc", "--no-wait", "--port", boson.port)
    assert code == 0 and out.startswith("FFC started") and boson.ffc_count == 2


def test_tau_protocol(capsys):
    with TauEmulator() as emu:
        assert run(capsys, "get", "fpa-temp", "--protocol", "tau", "--port", emu.port) == (0, "31.5\n")
        assert run(capsys, "set", "ffc-mode", "auto", "--protocol", "tau", "--port", emu.port) == (
            0, "ffc-mode: auto\n")
        code, out = run(capsys, "get", "part-number", "--protocol", "tau", "--port", emu.port)
        assert code == 2 and "not available over the tau protocol" in out
        code, out = run(capsys, "info", "--protocol", "tau", "--port", emu.port)
        assert code == 0 and "serial         412345" in out and "part-number" not in out
        code, out = run(capsys, "ffc", "--protocol", "tau", "--port", emu.port)
        assert code == 0 and emu.ffc_count == 1


def test_missing_busy_and_silent_ports(boson, capsys, fake_sysfs):
    sysfs, dev = fake_sysfs
    code, out = run(capsys, "get", "serial", "--port", "/dev/ttyACM_nonexistent_tir",
                    "--sysfs-root", sysfs, "--dev-root", dev)
    assert code == 2 and "does not exist" in out and "serial ports here:" in out and "ttyUSB0" in out
    holder = serial.Serial(boson.port, 921600, exclusive=True)
    try:
        code, out = run(capsys, "get", "serial", "--port", boson.port)
    finally:
        holder.close()
    assert code == 2 and "busy" in out
    boson.inject("stall", count=2)
    code, out = run(capsys, "get", "serial", "--port", boson.port, "--timeout", "0.2", "--retries", "1")
    assert code == 1 and "no reply within 0.2 s" in out
    assert run(capsys, "get", "serial", "--port", boson.port) == (0, "93588\n")


def test_autodetect_by_vid_pid(boson, capsys, fake_sysfs):
    sysfs, dev = fake_sysfs
    os.remove(os.path.join(dev, "ttyACM0"))  # the Boson's CDC-ACM node -> the emulator's pty
    os.symlink(boson.port, os.path.join(dev, "ttyACM0"))
    assert run(capsys, "get", "serial", "--sysfs-root", sysfs, "--dev-root", dev) == (0, "93588\n")


def test_autodetect_reports_existing_ports(capsys, tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "ttyUSB3").touch()
    code, out = run(capsys, "info", "--sysfs-root", str(tmp_path / "sys"), "--dev-root", str(tmp_path / "dev"))
    assert code == 2 and "no FLIR Boson serial port (USB 09cb:4007) found" in out and "ttyUSB3" in out


def test_list(capsys, fake_sysfs):
    sysfs, dev = fake_sysfs
    code, out = run(capsys, "list", "--sysfs-root", sysfs, "--dev-root", dev)
    assert code == 0
    boson_line = next(line for line in out.splitlines() if "video2" in line)
    assert "FLIR Boson [09cb:4007] capture" in boson_line and "format boson: Y16 640x512" in boson_line
    assert f"serial {dev}/ttyACM0" in boson_line
    assert "TOPDON TC001" in out and "format tc001: YUYV 256x384" in out
    assert "other video devices:" in out and "UVC Camera (046d:0825)" in out
    assert f"{dev}/ttyUSB0 'FT232R USB UART' [0403:6001]" in out


def test_list_with_nothing_plugged_in(capsys, tmp_path):
    (tmp_path / "dev").mkdir()
    code, out = run(capsys, "list", "--sysfs-root", str(tmp_path / "sys"), "--dev-root", str(tmp_path / "dev"))
    assert code == 0 and "no thermal video devices found" in out and "no USB serial ports" in out


@pytest.mark.parametrize("option, value, words", [
    ("--timeout", "0", "give seconds per attempt > 0 and <= 60"),  # was a ValueError traceback
    ("--timeout", "-1", "give seconds per attempt > 0 and <= 60"),
    ("--timeout", "nan", "give seconds per attempt > 0"),  # was "no reply within nan s"
    ("--timeout", "inf", "give seconds per attempt > 0"),  # an unanswered command waited forever
    ("--timeout", "soon", "'soon' is not a number of seconds"),
    ("--retries", "-1", "give 0..10 retries"),  # was a ValueError traceback
    ("--retries", "1000000000", "give 0..10 retries"),
])
def test_timeout_and_retries_are_bounded(capsys, option, value, words):
    with pytest.raises(SystemExit) as info:
        main(["camera", "get", "serial", "--port", "loop://", option, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument {option}: " in err and words in err and "Traceback" not in err


def test_serial_url_with_unknown_option_is_one_line(capsys):
    # pyserial 3.5 raises KeyError from its own message for loop://?foo=bar: it was a traceback
    code, out = run(capsys, "get", "serial", "--port", "loop://?foo=bar")
    assert code == 2 and out == ("tir camera: error: serial port loop://?foo=bar: unknown option 'foo' for loop://; "
                                 "loop:// takes logging\n")


def test_loopback_port_is_said_to_echo(capsys):
    code, out = run(capsys, "get", "serial", "--port", "loop://", "--timeout", "0.1", "--retries", "0")
    assert code == 1 and "only the request itself came back" in out and "0xFFFFFFFF" not in out
