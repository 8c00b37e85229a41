"""``tir camera list|info|ffc|get|set``: find thermal cameras and control them over serial.

    tir camera list                          # UVC thermal cameras (by VID:PID), formats, serial ports
    tir camera info [--port DEV]             # serial/part numbers, firmware, FPA temp, FFC, gain
                                             # ("not supported" for what the firmware lacks)
    tir camera ffc [--no-wait]               # run a flat-field correction, say how it was confirmed
    tir camera get fpa-temp | serial | ...   # one value
    tir camera set ffc-mode manual           # change a setting, read it back

Without ``--port`` the Boson's CDC-ACM port is found by USB VID:PID 09CB:4007; ``--protocol tau``
speaks Tau2 instead (needs ``--port``).
"""
from __future__ import annotations

import argparse
import enum
import json
import time

from tir.edge.camera.boson import BosonError, BosonPortError
from tir.edge.errors import InputError, TirError, UsageError
from tir.edge.camera.ffc import (ASSUMED_FFC_S, PROTOCOLS, UNSUPPORTED, FFCProgress,
                                 open_camera_control)
from tir.edge.camera.tau import TauError, TauPortError

NOT_SUPPORTED = "not supported"
FFC_WAIT_LIMIT_S = 5.0  # longest wait for an FFC the camera reports as still running

# name -> client method; a name whose method a client lacks is "not available over <protocol>".
GETTERS = {
    "serial": "get_camera_sn",
    "sensor-serial": "get_sensor_sn",
    "part-number": "get_camera_pn",
    "software-rev": "get_software_rev",
    "fpa-temp": "get_fpa_temp_c",
    "ffc-mode": "get_ffc_mode",
    "ffc-status": "get_ffc_status",
    "gain-mode": "get_gain_mode",
}
SETTERS = {"ffc-mode": "set_ffc_mode", "gain-mode": "set_gain_mode"}


MAX_TIMEOUT_S = 60.0  # --timeout: longest wait per attempt; with MAX_RETRIES a command ends within 11 min
MAX_RETRIES = 10


def timeout_seconds(text: str) -> float:
    """argparse type of ``--timeout``: seconds per attempt, finite, > 0 and <= :data:`MAX_TIMEOUT_S`
    (NaN or infinity would make an unanswered command wait forever).

    Raises argparse.ArgumentTypeError naming the value."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_TIMEOUT_S:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{text}: give seconds per attempt > 0 and <= {MAX_TIMEOUT_S:g}")
    return value


def retry_count(text: str) -> int:
    """argparse type of ``--retries``: a whole number 0..:data:`MAX_RETRIES`.

    Raises argparse.ArgumentTypeError naming the value."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of retries") from None
    if not 0 <= value <= MAX_RETRIES:
        raise argparse.ArgumentTypeError(f"{value}: give 0..{MAX_RETRIES} retries")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``tir camera``'s actions to ``parser`` as subcommands ``list``, ``info`` (``--json``),
    ``ffc`` (``--no-wait``), ``get NAME`` and ``set NAME VALUE`` (names: :data:`GETTERS`,
    :data:`SETTERS`), each with the common options ``--port DEV``, ``--protocol`` (boson, tau),
    ``--timeout`` (seconds per attempt, default 1.0, :func:`timeout_seconds`) and ``--retries``
    (default 2, :func:`retry_count`).
    """
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", metavar="DEV", help="serial port (default: find a Boson by USB VID:PID)")
    common.add_argument("--protocol", choices=PROTOCOLS, default="boson", help="control protocol")
    common.add_argument("--timeout", type=timeout_seconds, default=1.0,
                        help=f"seconds per attempt, > 0 and <= {MAX_TIMEOUT_S:g} (default 1.0)")
    common.add_argument("--retries", type=retry_count, default=2,
                        help=f"retries after a failed attempt, 0..{MAX_RETRIES} (default 2)")
    common.add_argument("--sysfs-root", default="/sys", help=argparse.SUPPRESS)
    common.add_argument("--dev-root", default="/dev", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    sub.add_parser("list", parents=[common], help="thermal video devices, their formats and serial ports")
    info = sub.add_parser("info", parents=[common], help="everything the camera reports")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ffc = sub.add_parser("ffc", parents=[common], help="run a flat-field correction")
    ffc.add_argument("--no-wait", action="store_true", help="do not wait for the FFC to complete")
    get = sub.add_parser("get", parents=[common], help="read one value")
    get.add_argument("name", choices=sorted(GETTERS))
    set_ = sub.add_parser("set", parents=[common], help="change a setting")
    set_.add_argument("name", choices=sorted(SETTERS))
    set_.add_argument("value", help="e.g. manual / auto / external (ffc-mode), high / low / auto (gain-mode)")


def format_value(value) -> str:
    """A camera value as printed: an enum as its lower-case name, a tuple (a software revision)
    joined with dots (``3.0.1``), a float (the FPA temperature in °C) with one decimal, anything
    else as ``str``.
    """
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if isinstance(value, tuple):
        return ".".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _json_value(value):
    if isinstance(value, enum.Enum):
        return value.name.lower()
    return list(value) if isinstance(value, tuple) else value


def _read(client, name: str, protocol: str):
    method = getattr(client, GETTERS[name], None)
    if method is None:
        raise ValueError(f"{name} is not available over the {protocol} protocol; "
                         f"available: {', '.join(n for n, m in GETTERS.items() if hasattr(client, m))}")
    return method()


def list_cameras(args) -> int:
    """``tir camera list``: print the thermal video devices (by USB VID:PID) with their capture
    format and size and matching serial port, the other video devices, and the USB serial ports
    (ttyACM*, ttyUSB*), all found under ``args.sysfs_root`` / ``args.dev_root``. Returns exit
    status 0 (finding nothing is reported, not an error).
    """
    from tir.edge.camera.formats import format_for
    from tir.edge.sources.devices import list_serial_ports, list_video_devices

    videos = list_video_devices(args.sysfs_root, args.dev_root)
    ports = list_serial_ports(args.sysfs_root, args.dev_root)
    thermal = [d for d in videos if d.camera is not None]
    if thermal:
        print("thermal video devices:")
        for device in thermal:
            fmt = format_for(device.vid, device.pid)
            size = "x".join(map(str, fmt.capture_size)) if fmt.capture_size else "device size"
            node = "capture" if device.index in (0, None) else f"index {device.index} (metadata)"
            control = [p.path for p in ports if (p.vid, p.pid) == (device.vid, device.pid)
                       and (not device.serial or not p.serial or p.serial == device.serial)]
            print(f"  {device.path}  {device.camera.name} [{device.usb_id}] {node}  "
                  f"format {fmt.name}: {fmt.fourcc.strip()} {size}  "
                  f"serial {', '.join(control) if control else '-'}")
    else:
        print("no thermal video devices found (known: FLIR Boson 09cb:4007, Lepton/PureThermal 1e4e:0100, "
              "TC001/P2 Pro 0bda:5830)")
    others = [d for d in videos if d.camera is None]
    if others:
        print("other video devices:")
        for device in others:
            print(f"  {device.describe()}")
    print("serial ports:" if ports else "no USB serial ports (ttyACM*, ttyUSB*) found")
    for port in ports:
        print(f"  {port.describe()}")
    return 0


def _port_error_text(exc: Exception, args) -> str:
    from tir.edge.sources.devices import describe_serial_ports

    text = str(exc)
    head, missing, _ = text.partition(" does not exist")
    if missing:  # the ports there are, once (the client's own list, of this machine's default roots, is replaced)
        text = f"{head}{missing}; {describe_serial_ports(args.sysfs_root, args.dev_root)}"
    return text


def main(args) -> int:
    """Run ``tir camera ACTION`` for the parsed ``args``; returns the exit status.

    0: done (for ``ffc``, its end confirmed within :data:`FFC_WAIT_LIMIT_S` s, or acknowledged
    with ``--no-wait``); 1: the camera failed (a Boson/Tau2 error), its firmware does not
    support the query, or the FFC was still running after :data:`FFC_WAIT_LIMIT_S` s; 2: no
    camera found, the serial port cannot be opened (for a port that does not exist the message
    lists the ports there are), or a name or value the camera or protocol does not take.

    Raises:
        TirError: each failure above, with its exit status as ``exit_code`` (InputError 2, UsageError
            2, a camera error 1); ``tir`` (tools/cli.py) prints it as one line ``tir camera:
            error: ...`` on stderr (it was printed on stdout).
    """
    if args.action == "list":
        return list_cameras(args)
    try:
        client = open_camera_control(args.port, args.protocol, timeout=args.timeout, retries=args.retries,
                                     sysfs_root=args.sysfs_root, dev_root=args.dev_root)
    except (BosonPortError, TauPortError) as exc:
        raise InputError(_port_error_text(exc, args)) from exc
    try:
        with client:
            return _act(client, args)
    except UNSUPPORTED as exc:
        raise TirError(f"{getattr(args, 'name', args.action)}: {NOT_SUPPORTED} by this camera's firmware "
                       f"({exc})") from exc
    except (BosonError, TauError) as exc:
        raise TirError(f"camera error on {client.port_name}: {exc}") from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _act(client, args) -> int:
    if args.action == "get":
        print(format_value(_read(client, args.name, args.protocol)))
    elif args.action == "set":
        getattr(client, SETTERS[args.name])(args.value)
        print(f"{args.name}: {format_value(_read(client, args.name, args.protocol))}")
    elif args.action == "info":
        return _info(client, args)
    elif args.action == "ffc":
        start = time.monotonic()
        client.run_ffc()  # raises unless the camera acknowledged the command
        if args.no_wait:
            print(f"FFC started (acknowledged) in {time.monotonic() - start:.2f} s")
        else:
            text, finished = _wait_for_ffc(client, start)
            print(text)
            return 0 if finished else 1
    return 0


def _info(client, args) -> int:
    """Every value the camera reports; "not supported" for queries its firmware lacks.

    Exit 0 when the camera answered at least one query (an "unsupported" reply is an answer);
    a link failure before any answer is raised (exit 1), after one it is shown for that field.
    """
    values, unsupported, errors = {}, [], {}
    for name, method in GETTERS.items():
        if not hasattr(client, method):
            continue
        try:
            values[name] = _read(client, name, args.protocol)
        except UNSUPPORTED:
            unsupported.append(name)
            values[name] = None
        except (BosonError, TauError) as exc:
            if not values:
                raise
            errors[name] = str(exc)
            values[name] = None
    if args.json:
        print(json.dumps({"port": client.port_name, "protocol": args.protocol,
                          **{k: _json_value(v) for k, v in values.items()},
                          "not_supported": unsupported, "errors": errors}))
    else:
        print(f"{'port':14s} {client.port_name} ({args.protocol})")
        for name, value in values.items():
            if name in unsupported:
                text = NOT_SUPPORTED
            elif name in errors:
                text = f"error: {errors[name]}"
            else:
                text = f"{format_value(value)}{' °C' if name == 'fpa-temp' else ''}"
            print(f"{name:14s} {text}")
    return 0


def _wait_for_ffc(client, start: float, limit_s: float = FFC_WAIT_LIMIT_S):
    """Wait for the FFC the camera acknowledged; (line saying how its end was confirmed,
    False if still running after ``limit_s``). Confirmation: the FFC status, else the
    FFC-in-progress flag (whichever the firmware supports), else the assumed FFC time
    (:data:`~tir.edge.camera.ffc.ASSUMED_FFC_S`) with nothing to confirm it."""
    progress = FFCProgress(client)
    busy = progress.busy()
    while busy and time.monotonic() - start < limit_s:
        time.sleep(0.05)
        busy = progress.busy()
    skipped = f"; {', '.join(progress.unsupported)} {NOT_SUPPORTED}" if progress.unsupported else ""
    if busy is None:
        time.sleep(max(0.0, start + ASSUMED_FFC_S - time.monotonic()))
        asked = ", ".join(progress.unsupported) or "ffc-status"
        return (f"FFC sent and acknowledged; waited the assumed FFC time of {ASSUMED_FFC_S:g} s "
                f"(not confirmed: this camera cannot report {asked})"), True
    elapsed = time.monotonic() - start
    if busy:
        return f"FFC still in progress after {elapsed:.2f} s ({progress.method}: {progress.state}{skipped})", False
    if progress.method == "ffc-status":
        return f"FFC done in {elapsed:.2f} s, status {progress.state} (confirmed by ffc-status)", True
    return f"FFC done in {elapsed:.2f} s (confirmed by ffc-in-progress: cleared{skipped})", True
