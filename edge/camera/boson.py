"""FLIR Boson control over its USB CDC-ACM serial port (/dev/ttyACM*, 921600 8N1).

The protocol lives in fslp.py (framing, CRC) and here (command table, sequence/echo checks,
status codes); the client only needs an object with ``read(n)``, ``write(b)`` and
``reset_input_buffer()``, so it drives a real tty, the pty emulator (emulator.py) or pyserial's
``loop://`` alike. Facts: thermal_io.md §1 (FLIR SDK FunctionCodes.h / ReturnCodes.h / EnumTypes.h).

Errors, all subclasses of :class:`BosonError`:

- :class:`BosonPortError`: the port cannot be opened (missing, busy) or fails mid-command.
- :class:`BosonTimeout`: no reply within ``timeout`` (a stalled camera);
  :class:`BosonTruncatedReply` (a BosonTimeout) when a frame started but never ended.
- :class:`BosonCRCError`: the reply's CRC is wrong.
- :class:`BosonFramingError`: undecodable reply (bad escape, short header, wrong data length).
- :class:`BosonSequenceError`: the reply echoes another sequence number (SDK 0x131).
- :class:`BosonFunctionMismatch`: the reply echoes another function id (SDK 0x132).
- :class:`BosonStatusError`: the camera answered with a non-zero FLR_RESULT; one subclass per
  code in :data:`STATUS_ERRORS` (e.g. BosonBadCommand 0x0161, BosonRangeError 0x0203).

Link errors (timeout, CRC, framing, sequence, function id) and the transient statuses
BosonBusy / BosonNotReady are retried up to ``retries`` times with a fresh sequence number; a
command never takes longer than ``timeout * (retries + 1)``. Other status errors are raised at once.
"""
from __future__ import annotations

import enum
import os
from collections import deque
from dataclasses import dataclass
from typing import Dict, Tuple, Type, Union

from ..errors import InputError, TirError
from . import fslp
from .command_client import CommandClient, decode_enum, enum_accessors, parse_enum  # noqa: F401 (re-exported)
from .formats import CAMERAS

BOSON_BAUDRATE = 921600  # thermal_io.md §1.1 (flirpy default; SDK examples)
# VID, PID of the Boson's CDC-ACM + UVC interfaces (§1.1), from its camera descriptor
BOSON_USB_ID = CAMERAS.get("boson").usb_ids[0]


# ---------------------------------------------------------------------------------- errors
class BosonError(TirError):
    """Anything that went wrong talking to a Boson."""


class BosonPortError(BosonError, InputError):
    """The serial port cannot be opened or used (missing, busy, unplugged)."""


class BosonTimeout(BosonError):
    """No (complete) reply within the timeout."""


class BosonTruncatedReply(BosonTimeout):
    """A reply frame started but its end byte never came."""


class BosonCRCError(BosonError):
    """A reply frame with a wrong CRC."""


class BosonFramingError(BosonError):
    """A reply that cannot be decoded (bad escape, short header, unexpected data length)."""


class BosonSequenceError(BosonError):
    """The reply's sequence number is not the request's (SDK R_SDK_DSPCH_SEQUENCE_MISMATCH)."""


class BosonFunctionMismatch(BosonError):
    """The reply's function id is not the request's (SDK R_SDK_DSPCH_ID_MISMATCH)."""


class BosonStatusError(BosonError):
    """The camera answered with a non-zero FLR_RESULT ``code``."""

    def __init__(self, code: int, command: str):
        self.code = code
        self.command = command
        name = STATUS_NAMES.get(code, "unknown FLR_RESULT")
        super().__init__(f"{command}: camera returned status 0x{code:04X} ({name})")


class BosonBadCommand(BosonStatusError):
    """0x0161: the camera does not know the function id."""


class BosonBadPayload(BosonStatusError):
    """0x0162: bad payload status."""


class BosonPayloadSizeError(BosonStatusError):
    """0x0170/0x017D/0x017E/0x017F: the request's payload size is wrong or overflowed."""


class BosonFeatureNotEnabled(BosonStatusError):
    """0x01B0: this camera model lacks the feature."""


class BosonCameraError(BosonStatusError):
    """0x0201: generic FLR_ERROR."""


class BosonNotReady(BosonStatusError):
    """0x0202: not ready (e.g. still booting, ~3 s after power-up)."""


class BosonRangeError(BosonStatusError):
    """0x0203: an argument is out of range."""


class BosonUndefinedFunction(BosonStatusError):
    """0x0207: undefined function."""


class BosonBusy(BosonStatusError):
    """0x0283: the camera is busy."""


# FLR_RESULT codes (ReturnCodes.h, thermal_io.md §1.6) -> (name, exception class).
STATUS_ERRORS: Dict[int, Tuple[str, Type[BosonStatusError]]] = {
    0x0161: ("R_CAM_DSPCH_BAD_CMD_ID", BosonBadCommand),
    0x0162: ("R_CAM_DSPCH_BAD_PAYLOAD_STATUS", BosonBadPayload),
    0x0170: ("R_CAM_PKG_UNSPECIFIED", BosonPayloadSizeError),
    0x017D: ("R_CAM_PKG_INSUFFICIENT_BYTES", BosonPayloadSizeError),
    0x017E: ("R_CAM_PKG_EXCESS_BYTES", BosonPayloadSizeError),
    0x017F: ("R_CAM_PKG_BUFFER_OVERFLOW", BosonPayloadSizeError),
    0x01B0: ("FEATURE_NOT_ENABLED", BosonFeatureNotEnabled),
    0x0201: ("FLR_ERROR", BosonCameraError),
    0x0202: ("FLR_NOT_READY", BosonNotReady),
    0x0203: ("FLR_RANGE_ERROR", BosonRangeError),
    0x0207: ("FLR_UNDEFINED_FUNCTION", BosonUndefinedFunction),
    0x0283: ("FLR_CAM_BUSY", BosonBusy),
}
STATUS_NAMES = {code: name for code, (name, _) in STATUS_ERRORS.items()}
STATUS_NAMES[0] = "FLR_OK"

#: the ``Raises`` line of the command methods' docstrings
RAISES = ("BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence, function id, "
          "FLR_RESULT status); see the module docstring.")
RETRYABLE = (BosonTimeout, BosonCRCError, BosonFramingError, BosonSequenceError,
             BosonFunctionMismatch, BosonBusy, BosonNotReady)


def status_error(code: int, command: str) -> BosonStatusError:
    """The exception for a non-zero FLR_RESULT ``code`` (thermal_io.md §1.6, SDK ReturnCodes.h).

    Returns:
        An instance of the code's class in :data:`STATUS_ERRORS`, else of :class:`BosonStatusError`
        (not raised here: the caller raises it).
    """
    cls = STATUS_ERRORS.get(code, (None, BosonStatusError))[1]
    return cls(code, command)


# ---------------------------------------------------------------------------------- enums
class FFCMode(enum.IntEnum):
    """FLR_BOSON_FFCMODE_E (thermal_io.md §1.6)."""

    MANUAL = 0
    AUTO = 1
    EXTERNAL = 2
    SHUTTER_TEST = 3


class GainMode(enum.IntEnum):
    """FLR_BOSON_GAINMODE_E (SDK EnumTypes.h, thermal_io.md §1.6)."""

    HIGH = 0
    LOW = 1
    AUTO = 2
    DUAL = 3
    MANUAL = 4


class FFCStatus(enum.IntEnum):
    """FLR_BOSON_FFCSTATUS_E (thermal_io.md §1.6)."""

    NONE = 0  # no FFC performed yet
    IMMINENT = 1
    IN_PROGRESS = 2
    COMPLETE = 3


# ---------------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class Command:
    """One Boson function: its id and the struct formats of request and reply data."""

    function_id: int
    arg: str = ""  # struct format of the request data, big-endian ('' = no data)
    reply: str = ""  # struct format of the reply data


# Function codes from FLIR SDK FunctionCodes.h (thermal_io.md §1.6). Adding a command is one line.
COMMANDS: Dict[str, Command] = {
    "get_camera_sn": Command(0x00050002, reply=">I"),
    "get_camera_pn": Command(0x00050004, reply="20s"),
    "get_sensor_sn": Command(0x00050006, reply=">I"),
    "run_ffc": Command(0x00050007),
    "set_ffc_temp_threshold": Command(0x00050008, arg=">H"),  # °C x 10
    "get_ffc_temp_threshold": Command(0x00050009, reply=">H"),
    "set_ffc_frame_threshold": Command(0x0005000A, arg=">I"),
    "get_ffc_frame_threshold": Command(0x0005000B, reply=">I"),
    "get_ffc_in_progress": Command(0x0005000C, reply=">h"),
    "set_ffc_mode": Command(0x00050012, arg=">i"),
    "get_ffc_mode": Command(0x00050013, reply=">i"),
    "set_gain_mode": Command(0x00050014, arg=">i"),
    "get_gain_mode": Command(0x00050015, reply=">i"),
    "get_software_rev": Command(0x00050022, reply=">III"),  # major, minor, patch
    "get_fpa_temp_cx10": Command(0x00050030, reply=">h"),  # signed: flirpy's '>H' is wrong < 0 °C
    "get_fpa_temp_kx10": Command(0x00050031, reply=">H"),
    "get_ffc_status": Command(0x00050054, reply=">i"),
}
COMMAND_NAMES = {cmd.function_id: name for name, cmd in COMMANDS.items()}


# ---------------------------------------------------------------------------------- port
#: pyserial 3.5's URL schemes and the query options each takes (pyserial docs, "URL Handlers";
#: serial/urlhandler/protocol_*.py ``from_url``). pyserial itself fails on an unknown option of
#: loop:// and socket:// with a KeyError from its own message formatting, so they are checked here.
SERIAL_URL_OPTIONS: Dict[str, Tuple[str, ...]] = {
    "loop": ("logging",),
    "socket": ("logging",),
    "rfc2217": ("logging", "ign_set_control", "poll_modem", "timeout"),
    "spy": ("file", "color", "raw", "all"),
    "alt": ("class",),
    "hwgrep": ("n", "skip_busy"),
    "cp2110": (),
}
SERIAL_URL_LOGGING = ("debug", "info", "warning", "error")  # pyserial's LOGGER_LEVELS names


def check_serial_url(port: str) -> None:
    """Refuse a pyserial URL (``scheme://...``) whose scheme or options pyserial would not take.

    Checks the scheme against :data:`SERIAL_URL_OPTIONS`, every query option's name (each at most
    once), ``logging=`` against :data:`SERIAL_URL_LOGGING`, and that ``socket://`` and
    ``rfc2217://`` name ``HOST:PORT`` with a port in 0..65535. A device path (no ``://``) passes.

    Raises:
        BosonPortError: one line naming the scheme or option and what is accepted.
    """
    from urllib.parse import parse_qsl, urlsplit

    if "://" not in port:
        return
    scheme = port.split("://", 1)[0].lower()
    if scheme not in SERIAL_URL_OPTIONS:
        raise BosonPortError(f"serial port {port}: unknown URL scheme {scheme}://; give a device path "
                             f"(/dev/ttyACM0) or one of {', '.join(s + '://' for s in SERIAL_URL_OPTIONS)}")
    parts = urlsplit(port)
    allowed = SERIAL_URL_OPTIONS[scheme]
    seen = set()
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name not in allowed:
            raise BosonPortError(f"serial port {port}: unknown option {name!r} for {scheme}://; "
                                 f"{scheme}:// takes {', '.join(allowed) if allowed else 'no options'}")
        if name in seen:
            raise BosonPortError(f"serial port {port}: option {name!r} given twice; give it once")
        seen.add(name)
        if name == "logging" and value not in SERIAL_URL_LOGGING:
            raise BosonPortError(f"serial port {port}: logging={value!r}; use one of {', '.join(SERIAL_URL_LOGGING)}")
    if scheme in ("socket", "rfc2217"):
        try:
            number = parts.port
        except ValueError:
            number = -1
        if not parts.hostname or number is None or not 0 <= number < 65536:
            raise BosonPortError(f"serial port {port}: {scheme}:// needs HOST:PORT with a port number "
                                 "in 0..65535 (e.g. socket://127.0.0.1:7000)")


def not_a_serial_port(path: str):
    """Why ``path`` (which exists) cannot be a serial port, or None: a serial port (a tty, a
    pty, a USB CDC-ACM or USB-serial adapter) is a character device that is a terminal; a folder,
    a regular file or a FIFO is not, nor a character device that is no terminal (a camera's video
    device /dev/videoN, /dev/null: pyserial said "Could not configure port: (25, 'Inappropriate
    ioctl for device')"). A character device is opened for the check (read-only, non-blocking,
    not as the controlling terminal) and closed at once; one that cannot be opened passes, for
    pyserial to name why."""
    import stat

    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    if stat.S_ISCHR(st.st_mode):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except OSError:
            return None   # busy, no permission: pyserial's open says which
        try:
            return None if os.isatty(fd) else ("a character device that is no terminal, e.g. a video device: the "
                                               "camera's serial port is a tty such as /dev/ttyACM0")
        finally:
            os.close(fd)
    return "a folder" if stat.S_ISDIR(st.st_mode) else "a regular file" if stat.S_ISREG(st.st_mode) \
        else "not a character device"


def open_serial_port(port: str, baudrate: int = BOSON_BAUDRATE, timeout: float = 0.02):
    """Open ``port`` (a device path or a pyserial URL such as ``loop://``) exclusively, 8N1.

    Raises:
        BosonPortError: one line saying whether the port is missing, busy, not a serial port, or a
            URL with an unknown scheme or option (:func:`check_serial_url`).
    """
    import serial  # the protocol code above needs no serial import

    if "://" not in port:
        from ..sources.devices import describe_serial_ports

        if not os.path.exists(port):
            raise BosonPortError(f"serial port {port} does not exist; {describe_serial_ports()}")
        problem = not_a_serial_port(port)
        if problem:  # was pyserial's "Could not configure port: (25, 'Inappropriate ioctl for device')"
            raise BosonPortError(f"{port} is not a serial port ({problem}); {describe_serial_ports()}")
    check_serial_url(port)
    try:
        return serial.serial_for_url(port, baudrate=baudrate, bytesize=8, parity="N", stopbits=1,
                                     timeout=timeout, write_timeout=1.0, exclusive=True)
    except (serial.SerialException, ValueError, KeyError) as exc:  # a URL pyserial refuses: ValueError
        text = str(exc)
        if "lock" in text.lower() or "busy" in text.lower() or "Errno 16" in text:
            raise BosonPortError(f"serial port {port} is busy (open in another program?): {text}") from exc
        raise BosonPortError(f"cannot open serial port {port}: {text}") from exc


class BosonClient(CommandClient):
    """Commands to one Boson over ``port_or_serial`` (a path/URL, or an open serial-like object).

    Sequence numbers increment per attempt and are checked on each reply together with the
    function id, CRC and status; see the module docstring for the exceptions and retry policy.
    Thread-safe: one command at a time.
    """

    product = "Boson"
    commands = COMMANDS
    error = BosonError
    port_error = BosonPortError
    timeout_error = BosonTimeout
    truncated_error = BosonTruncatedReply
    truncated_text = "reply truncated ({n} bytes, no end byte)"
    retryable = RETRYABLE
    backoff = (BosonBusy, BosonNotReady)
    counted = ((BosonTimeout, "timeouts"), (BosonCRCError, "crc_errors"), (BosonFramingError, "framing_errors"),
               (BosonSequenceError, "sequence_errors"), (BosonFunctionMismatch, "function_errors"),
               (BosonStatusError, "status_errors"))

    def __init__(self, port_or_serial: Union[str, os.PathLike, object], timeout: float = 1.0,
                 retries: int = 2, baudrate: int = BOSON_BAUDRATE, poll_s: float = 0.02):
        super().__init__(port_or_serial, timeout, retries, baudrate, poll_s, open_serial_port)
        self._seq = 0
        # a failed span that is no command-channel frame with a whole header is garbage (another
        # device, another baud rate), said as such at the timeout, not a "bad CRC" (thermal_io.md §1.2)
        self._reader = fslp.FrameReader(channels=(fslp.COMMAND_CHANNEL,), min_payload=fslp.HEADER.size)
        self._abandoned = deque(maxlen=16)  # seqs of failed attempts: late replies are skipped
        self.counters["stale_replies"] = 0
        self._echoed = False  # this attempt's request came back as sent (a loopback port)

    def stats(self) -> dict:
        """Link counters: commands, retries, timeouts, crc_errors, framing_errors, sequence_errors,
        function_errors, status_errors, stale_replies (late replies to abandoned attempts),
        garbage_bytes (outside frames) and truncated_frames.
        """
        return dict(self.counters, garbage_bytes=self._reader.garbage_bytes,
                    truncated_frames=self._reader.truncated_frames)

    # -- protocol
    def _function_of(self, command: "Command") -> int:
        return command.function_id

    def transact(self, function_id: int, data: bytes = b"", reply_size=None, name: str = "") -> bytes:
        """Send one request and return the reply data, with checks and bounded retries.

        Args:
            function_id: SDK function code (FunctionCodes.h, thermal_io.md §1.6), e.g. 0x00050007.
            data: request data, big-endian.
            reply_size: the expected number of reply data bytes, or None for any.
            name: the command's name for messages (default: from :data:`COMMAND_NAMES`).

        Returns:
            The reply's data bytes (big-endian), after the sequence number, function id, CRC and
            status were checked.

        Raises:
            BosonError: the subclass for what went wrong; link errors and busy/not-ready statuses
                are retried ``retries`` times first (never longer than ``timeout * (retries + 1)`` s).
        """
        name = name or COMMAND_NAMES.get(function_id, f"function 0x{function_id:08X}")
        return self._run(lambda deadline: self._attempt(function_id, data, reply_size, name, deadline))

    def _attempt(self, function_id: int, data: bytes, reply_size, name: str, deadline: float) -> bytes:
        seq = self._seq  # a fresh sequence number per attempt
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._echoed = False
        try:
            return self._exchange(fslp.command_frame(seq, function_id, data), name, deadline,
                                  lambda received: self._check(received, seq, function_id, reply_size, name))
        except RETRYABLE as exc:
            self._abandoned.append(seq)  # a late reply to it is skipped, not taken for a mismatch
            if self._echoed and type(exc) is BosonTimeout:
                raise BosonTimeout(f"{exc}: only the request itself came back (the port echoes what is sent: "
                                   "a loopback such as loop:// or TX wired to RX); no camera answered") from exc
            raise

    def _check(self, received: fslp.ReceivedFrame, seq: int, function_id: int, reply_size, name: str):
        """The reply data if ``received`` answers this request, None to keep reading, else raise."""
        if received.error == "crc":
            raise BosonCRCError(f"{name}: reply with a bad CRC")
        if received.error:
            raise BosonFramingError(f"{name}: undecodable reply frame ({received.error})")
        if received.channel != fslp.COMMAND_CHANNEL:
            return None
        try:
            packet = fslp.decode_packet(received.payload)
        except fslp.FSLPError as exc:
            raise BosonFramingError(f"{name}: {exc}") from exc
        if packet.status == fslp.REQUEST_STATUS and (packet.seq, packet.function_id) == (seq, function_id):
            self._echoed = True  # our own request echoed back (requests carry 0xFFFFFFFF, §1.2): no reply
            return None
        if packet.seq != seq:
            if packet.seq in self._abandoned:  # a late answer to an attempt we gave up on
                self.counters["stale_replies"] += 1
                return None
            raise BosonSequenceError(f"{name}: reply has sequence number {packet.seq}, sent {seq}")
        if packet.function_id != function_id:
            raise BosonFunctionMismatch(
                f"{name}: reply is for function 0x{packet.function_id:08X}, sent 0x{function_id:08X}")
        if packet.status != 0:
            raise status_error(packet.status, name)
        if reply_size is not None and len(packet.data) != reply_size:
            raise BosonFramingError(f"{name}: reply carries {len(packet.data)} data bytes, expected {reply_size}")
        return packet.data

    # -- commands
    def run_ffc(self) -> None:
        """Close the shutter and recompute per-pixel offsets (flat-field correction, bosonRunFFC 0x00050007).

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        self.call("run_ffc")

    get_ffc_mode, set_ffc_mode = enum_accessors(
        "FFC mode", FFCMode, ("get_ffc_mode", "bosonGetFFCMode 0x00050013"), ("set_ffc_mode", "bosonSetFFCMode 0x00050012"), RAISES)

    def get_ffc_status(self):
        """The FFC state (bosonGetFFCStatus 0x00050054): an :class:`FFCStatus`, or the int when unknown.

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return decode_enum(FFCStatus, self.call("get_ffc_status"))

    def get_ffc_in_progress(self) -> bool:
        """Whether an FFC is running now (bosonGetFFCInProgress 0x0005000C).

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return self.call("get_ffc_in_progress") != 0

    get_gain_mode, set_gain_mode = enum_accessors(
        "gain mode", GainMode, ("get_gain_mode", "bosonGetGainMode 0x00050015"), ("set_gain_mode", "bosonSetGainMode 0x00050014"), RAISES)

    def get_camera_sn(self) -> int:
        """The camera serial number (bosonGetCameraSN 0x00050002, uint32).

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return self.call("get_camera_sn")

    def get_sensor_sn(self) -> int:
        """The sensor serial number (bosonGetSensorSN 0x00050006, uint32).

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return self.call("get_sensor_sn")

    def get_camera_pn(self) -> str:
        """The part number (bosonGetCameraPN 0x00050004): 20 ASCII bytes, NUL/space padding removed.

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return self.call("get_camera_pn").split(b"\x00", 1)[0].decode("ascii", "replace").strip()

    def get_software_rev(self) -> Tuple[int, int, int]:
        """The firmware revision (bosonGetSoftwareRev 0x00050022) as (major, minor, patch).

        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return tuple(self.call("get_software_rev"))

    def get_fpa_temp_c(self) -> float:
        """Focal-plane-array (FPA) temperature in °C.

        The camera reports signed int16 °C × 10 (bosonlookupFPATempDegCx10 0x00050030, thermal_io.md
        §1.6; flirpy's unsigned read is wrong below 0 °C).


        Raises:
            BosonError: the subclass for what went wrong (port, timeout, CRC, framing, sequence,
                function id, FLR_RESULT status); see the module docstring.
        """
        return self.call("get_fpa_temp_cx10") / 10.0
