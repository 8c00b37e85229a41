"""FLIR Tau2 serial control: packets, CRC and a client with the Boson client's shape.

Packet (thermal_io.md §2, flirpy ``tau.py``), no framing bytes, no escaping, big-endian::

    0x6E | STATUS | 0x00 | FN | COUNT(2) | CRC1(2) over bytes 0-5 | ARG(COUNT) | CRC2(2)

CRC is CRC-16/XMODEM (crc.py). CRC2 covers everything before it, which equals the CRC of the
argument alone because the CRC of header+CRC1 is 0 (§2). Replies have a fixed length per
command (flirpy ``tau_config``). Requests carry status 0; replies carry the camera's status.

A port that echoes what is written (``loop://``, TX wired to RX, a half-duplex RS-485 adapter)
returns each request before the reply. Tau2 packets have no sequence number and a successful
reply to DO_FFC, a SET_* or READ_SENSOR can be byte-identical to its request (status 0, the same
argument), so the echo cannot always be told from the reply by its bytes. The client learns
whether its port echoes (:attr:`TauClient.port_echoes`) from a packet that equals the request
but cannot be the reply (another length: every GET, SERIAL_NUMBER), or from a reply that differs
from its request; before a command whose reply may equal its request, while the port is not yet
known, it first sends SERIAL_NUMBER (0x04: no argument, an 8-byte reply) to find out. On an
echoing port the first packet equal to the request is skipped; when only the echo came back,
the timeout says so.

Errors, all subclasses of :class:`TauError`: :class:`TauPortError`, :class:`TauTimeout`
(:class:`TauTruncatedReply` when a reply started but never completed), :class:`TauCRCError`,
:class:`TauFunctionMismatch`, :class:`TauStatusError` (one subclass per status in
:data:`STATUS_ERRORS`). Link errors and TauNotReady are retried ``retries`` times; a command
never takes longer than ``timeout * (retries + 1)``.
"""
from __future__ import annotations

import enum
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Type, Union

from ..errors import InputError, TirError
from .boson import BosonPortError, open_serial_port
from .command_client import CommandClient, enum_accessors
from .crc import crc16_xmodem

PROCESS_CODE = 0x6E
HEADER = struct.Struct(">BBBBH")  # process code, status, reserved, function, byte count
TAU_BAUDRATE = 921600  # flirpy default; Tau2 is also commonly run at 57600 (§2, unconfirmed)
MAX_ARG_BYTES = 512


class TauError(TirError):
    """Anything that went wrong talking to a Tau2."""


class TauPortError(TauError, InputError):
    """The serial port cannot be opened or used."""


class TauTimeout(TauError):
    """No complete reply within the timeout."""


class TauTruncatedReply(TauTimeout):
    """A reply started but did not complete within the timeout."""


class TauCRCError(TauError):
    """A reply whose CRC2 (argument CRC) is wrong."""


class TauFunctionMismatch(TauError):
    """The reply is for another function code, or has an unexpected length."""


class TauStatusError(TauError):
    """The camera answered with a non-zero status byte ``code``."""

    def __init__(self, code: int, command: str):
        self.code = code
        self.command = command
        super().__init__(f"{command}: Tau2 returned status 0x{code:02X} ({STATUS_NAMES.get(code, 'unknown')})")


class TauNotReady(TauStatusError):
    """0x02: camera not ready."""


class TauRangeError(TauStatusError):
    """0x03: argument out of range."""


class TauUndefinedError(TauStatusError):
    """0x04: undefined error."""


class TauUndefinedProcess(TauStatusError):
    """0x05: undefined process code."""


class TauUndefinedFunction(TauStatusError):
    """0x06: undefined function code."""


class TauCameraTimeout(TauStatusError):
    """0x07: the camera timed out internally."""


class TauByteCountError(TauStatusError):
    """0x09: the argument has the wrong length."""


class TauFeatureNotEnabled(TauStatusError):
    """0x0A: this camera lacks the feature."""


# Status byte (thermal_io.md §2, flirpy tau_config) -> (name, exception class).
STATUS_ERRORS: Dict[int, Tuple[str, Type[TauStatusError]]] = {
    0x02: ("CAM_NOT_READY", TauNotReady),
    0x03: ("CAM_RANGE_ERROR", TauRangeError),
    0x04: ("CAM_UNDEFINED_ERROR", TauUndefinedError),
    0x05: ("CAM_UNDEFINED_PROCESS_ERROR", TauUndefinedProcess),
    0x06: ("CAM_UNDEFINED_FUNCTION_ERROR", TauUndefinedFunction),
    0x07: ("CAM_TIMEOUT_ERROR", TauCameraTimeout),
    0x09: ("CAM_BYTE_COUNT_ERROR", TauByteCountError),
    0x0A: ("CAM_FEATURE_NOT_ENABLED", TauFeatureNotEnabled),
}
STATUS_NAMES = {code: name for code, (name, _) in STATUS_ERRORS.items()}
#: what a timeout adds when only the request itself came back
ECHO_ONLY = ("only the request itself came back (the port echoes what is sent: a loopback such as loop://, "
             "TX wired to RX or a half-duplex adapter); no camera answered")
RETRYABLE = (TauTimeout, TauCRCError, TauFunctionMismatch, TauNotReady)
#: the ``Raises`` line of the command methods' docstrings
RAISES = "TauError: the subclass for what went wrong (port, timeout, CRC, function mismatch, status)."


class TauFFCMode(enum.IntEnum):
    """FFC_MODE argument: 0 manual (§2 example); 1 auto, 2 external per the Tau2 IDD [unverified]."""

    MANUAL = 0
    AUTO = 1
    EXTERNAL = 2


class TauGainMode(enum.IntEnum):
    """GAIN_MODE argument (flirpy-based tools: 0x0002 = "High Gain Only")."""

    AUTO = 0
    LOW = 1
    HIGH = 2
    MANUAL = 3


# -------------------------------------------------------------------------------- packets
def encode_packet(function: int, arg: bytes = b"", status: int = 0) -> bytes:
    """One Tau2 request (or reply, with ``status``) packet (thermal_io.md §2, flirpy ``tau.py``).

    Layout: 0x6E, status, 0x00, function, big-endian byte count, CRC1 (CRC-16/XMODEM over the
    first 6 bytes), ``arg``, CRC2 (CRC-16/XMODEM over everything before it).
    """
    head = HEADER.pack(PROCESS_CODE, status, 0, function, len(arg))
    crc1 = struct.pack(">H", crc16_xmodem(head))
    return head + crc1 + bytes(arg) + struct.pack(">H", crc16_xmodem(head + crc1 + bytes(arg)))


@dataclass(frozen=True)
class TauPacket:
    """One decoded Tau2 packet: status, function code, argument bytes; ``error`` is "crc" for a bad CRC2."""
    status: int
    function: int
    arg: bytes = b""
    error: Optional[str] = None  # None | "crc" (CRC2 wrong)


def decode_packet(data: bytes) -> TauPacket:
    """Decode one complete Tau2 packet.

    Raises:
        ValueError: ``data`` is not exactly one packet, or its CRC2 is wrong.
    """
    packets = TauPacketReader().feed(data)
    if len(packets) != 1:
        raise ValueError(f"not exactly one Tau2 packet in {bytes(data).hex(' ')}")
    if packets[0].error:
        raise ValueError(f"Tau2 packet with bad CRC2: {bytes(data).hex(' ')}")
    return packets[0]


class TauPacketReader:
    """Cuts packets out of a byte stream: a packet starts at 0x6E with a valid CRC1; bytes that
    do not start one are garbage (``garbage_bytes``)."""

    def __init__(self):
        self._buf = bytearray()
        self.garbage_bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buf)

    def reset(self) -> None:
        """Forget buffered bytes (not counted as garbage)."""
        self._buf.clear()

    def feed(self, data: bytes) -> List[TauPacket]:
        """Add received bytes; return the packets they complete, in order.

        A packet starts at 0x6E with a valid CRC1 and an argument of at most
        :data:`MAX_ARG_BYTES`; other bytes are dropped and counted in ``garbage_bytes``. A packet
        with a wrong CRC2 is returned with ``error="crc"``.
        """
        self._buf += data
        packets: List[TauPacket] = []
        while True:
            start = self._buf.find(PROCESS_CODE)
            if start < 0:
                self.garbage_bytes += len(self._buf)
                self._buf.clear()
                return packets
            if start:
                self.garbage_bytes += start
                del self._buf[:start]
            if len(self._buf) < 8:
                return packets
            head = bytes(self._buf[:6])
            count = HEADER.unpack(head)[4]
            if struct.unpack(">H", self._buf[6:8])[0] != crc16_xmodem(head) or count > MAX_ARG_BYTES:
                self.garbage_bytes += 1  # not a header: resync on the next 0x6E
                del self._buf[:1]
                continue
            total = 8 + count + 2
            if len(self._buf) < total:
                return packets
            whole = bytes(self._buf[:total])
            del self._buf[:total]
            arg = whole[8:8 + count]
            ok = struct.unpack(">H", whole[-2:])[0] == crc16_xmodem(whole[:-2])
            packets.append(TauPacket(whole[1], whole[3], arg, None if ok else "crc"))


# -------------------------------------------------------------------------------- commands
@dataclass(frozen=True)
class TauCommand:
    """One Tau2 function: its code and the struct formats of the argument and the fixed-length reply."""
    function: int
    arg: str = ""  # struct format of the argument
    reply: str = ""  # struct format of the (fixed-length) reply argument


# flirpy tau_config.py codes and byte counts (thermal_io.md §2). One line per command.
COMMANDS: Dict[str, TauCommand] = {
    "serial_number": TauCommand(0x04, reply=">II"),  # camera SN, sensor SN
    "get_revision": TauCommand(0x05, reply=">HHHH"),  # software major/minor, firmware major/minor [U]
    "get_gain_mode": TauCommand(0x0A, reply=">H"),
    "set_gain_mode": TauCommand(0x0A, arg=">H", reply=">H"),
    "get_ffc_mode": TauCommand(0x0B, reply=">H"),
    "set_ffc_mode": TauCommand(0x0B, arg=">H", reply=">H"),
    "do_ffc": TauCommand(0x0C),  # short form, no argument
    "read_sensor": TauCommand(0x20, arg=">H", reply=">h"),  # arg 0: FPA temperature, °C x 10
}
READ_SENSOR_FPA = 0x0000


def _open_tau_port(port: str, baudrate: int, timeout: float):
    try:
        return open_serial_port(port, baudrate, timeout=timeout)
    except BosonPortError as exc:  # the same pyserial opening, reported in Tau2 terms
        raise TauPortError(str(exc)) from exc


class TauClient(CommandClient):
    """Commands to one Tau2 over ``port_or_serial`` (a path/URL or an open serial-like object)."""

    product = "Tau2"
    commands = COMMANDS
    error = TauError
    port_error = TauPortError
    timeout_error = TauTimeout
    truncated_error = TauTruncatedReply
    truncated_text = "reply incomplete ({n} bytes)"
    retryable = RETRYABLE
    counted = ((TauTimeout, "timeouts"), (TauCRCError, "crc_errors"), (TauFunctionMismatch, "function_errors"),
               (TauStatusError, "status_errors"))

    def __init__(self, port_or_serial: Union[str, os.PathLike, object], timeout: float = 1.0,
                 retries: int = 2, baudrate: int = TAU_BAUDRATE, poll_s: float = 0.02):
        super().__init__(port_or_serial, timeout, retries, baudrate, poll_s, _open_tau_port)
        self._reader = TauPacketReader()
        #: True when the port returns what is written, False when a reply showed it does not,
        #: None while unknown (see the module docstring)
        self.port_echoes: Optional[bool] = None

    def stats(self) -> dict:
        """Link counters: commands, retries, timeouts, crc_errors, function_errors, status_errors,
        garbage_bytes; ``port_echoes`` (True, False or None: not yet known).
        """
        return dict(self.counters, garbage_bytes=self._reader.garbage_bytes, port_echoes=self.port_echoes)

    def _function_of(self, command: TauCommand) -> int:
        return command.function

    def transact(self, function: int, arg: bytes, reply_size: int, name: str = "") -> bytes:
        """Send one request and return the reply argument, with checks and bounded retries.

        Args:
            function: Tau2 function code (flirpy ``tau_config``, thermal_io.md §2).
            arg: request argument bytes, big-endian.
            reply_size: the exact number of reply argument bytes expected.
            name: the command's name for messages.

        Returns:
            The reply's argument bytes.

        Raises:
            TauError: the subclass for what went wrong; timeouts, CRC and function mismatches and
                TauNotReady are retried ``retries`` times (never longer than ``timeout * (retries + 1)`` s).
        """
        name = name or f"function 0x{function:02X}"
        return self._run(lambda deadline: self._attempt(function, bytes(arg), reply_size, name, deadline))

    def _attempt(self, function: int, arg: bytes, reply_size: int, name: str, deadline: float) -> bytes:
        """One request-reply exchange, after the echo probe when the reply may equal the request."""
        if self.port_echoes is None and reply_size == len(arg):
            self._probe_echo(deadline, name)
        echoed = []  # the request came back as sent in this attempt

        def check(packet: TauPacket) -> Optional[bytes]:
            if not echoed and self._is_echo(packet, function, arg) and (
                    self.port_echoes or len(packet.arg) != reply_size):
                echoed.append(packet)
                self.port_echoes = True
                return None
            if self.port_echoes is None and not packet.error and not self._is_echo(packet, function, arg):
                self.port_echoes = False  # the camera's own packet came first
            return self._check(packet, function, reply_size, name)

        try:
            return self._exchange(encode_packet(function, arg), name, deadline, check)
        except TauTimeout as exc:
            if echoed and type(exc) is TauTimeout:
                raise TauTimeout(f"{exc}: {ECHO_ONLY}") from exc
            raise

    def _probe_echo(self, deadline: float, asked: str = "") -> None:
        """Learn :attr:`port_echoes` with SERIAL_NUMBER (0x04), whose echo (no argument) cannot be
        its reply (8 bytes). A reply of any kind after no echo means the port does not echo.

        Raises:
            TauTimeout: nothing came back (with the echo named when only the request came back).
            TauCRCError: a reply with a bad CRC (the port stays unknown).
        """
        function, size = COMMANDS["serial_number"].function, struct.calcsize(COMMANDS["serial_number"].reply)
        echoed = []

        def check(packet: TauPacket) -> Optional[bytes]:
            if not echoed and self._is_echo(packet, function, b""):
                echoed.append(packet)
                return None
            if packet.error:
                raise TauCRCError(f"{asked or 'command'} (its echo probe SERIAL_NUMBER 0x04): reply with a bad CRC")
            self.port_echoes = bool(echoed)
            return packet.arg

        try:
            self._exchange(encode_packet(function), f"{asked or 'command'} (its echo probe SERIAL_NUMBER 0x04)",
                           deadline, check)
        except TauTimeout as exc:
            if echoed:
                self.port_echoes = True
                if type(exc) is TauTimeout:
                    raise TauTimeout(f"{exc}: {ECHO_ONLY}") from exc
            raise

    @staticmethod
    def _is_echo(packet: TauPacket, function: int, arg: bytes) -> bool:
        """``packet`` is, byte for byte, the request of ``function`` with ``arg`` (status 0)."""
        return not packet.error and packet.status == 0 and packet.function == function and packet.arg == arg

    @staticmethod
    def _check(packet: TauPacket, function: int, reply_size: int, name: str) -> bytes:
        """The reply argument if ``packet`` answers this request, else raise."""
        if packet.error:
            raise TauCRCError(f"{name}: reply with a bad CRC")
        if packet.function != function:
            raise TauFunctionMismatch(
                f"{name}: reply is for function 0x{packet.function:02X}, sent 0x{function:02X}")
        if packet.status:
            raise STATUS_ERRORS.get(packet.status, (None, TauStatusError))[1](packet.status, name)
        if len(packet.arg) != reply_size:
            raise TauFunctionMismatch(f"{name}: reply carries {len(packet.arg)} bytes, expected {reply_size}")
        return packet.arg

    # -- the Boson client's command names, where Tau2 has the function
    def run_ffc(self) -> None:
        """Run a flat-field correction (DO_FFC 0x0C, short form without argument).

        Raises:
            TauError: the subclass for what went wrong (port, timeout, CRC, function mismatch, status).
        """
        self.call("do_ffc")

    get_ffc_mode, set_ffc_mode = enum_accessors("FFC mode", TauFFCMode, ("get_ffc_mode", "FFC_MODE 0x0B"),
                                            ("set_ffc_mode", "FFC_MODE 0x0B"), RAISES)

    get_gain_mode, set_gain_mode = enum_accessors("gain mode", TauGainMode, ("get_gain_mode", "GAIN_MODE 0x0A"),
                                            ("set_gain_mode", "GAIN_MODE 0x0A"), RAISES)

    def get_camera_sn(self) -> int:
        """The camera serial number (first uint32 of SERIAL_NUMBER 0x04).

        Raises:
            TauError: the subclass for what went wrong (port, timeout, CRC, function mismatch, status).
        """
        return self.call("serial_number")[0]

    def get_sensor_sn(self) -> int:
        """The sensor serial number (second uint32 of SERIAL_NUMBER 0x04).

        Raises:
            TauError: the subclass for what went wrong (port, timeout, CRC, function mismatch, status).
        """
        return self.call("serial_number")[1]

    def get_software_rev(self) -> Tuple[int, ...]:
        """The revision words of GET_REVISION 0x05 (4 uint16; their meaning is unconfirmed, §2).

        Raises:
            TauError: the subclass for what went wrong (port, timeout, CRC, function mismatch, status).
        """
        return tuple(self.call("get_revision"))

    def get_fpa_temp_c(self) -> float:
        """FPA temperature in °C: READ_SENSOR 0x20 with argument 0x0000 returns int16 °C × 10 (§2).

        Raises:
            TauError: the subclass for what went wrong (port, timeout, CRC, function mismatch, status).
        """
        return self.call("read_sensor", READ_SENSOR_FPA) / 10.0
