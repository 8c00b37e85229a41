"""Fake FLIR cameras on a pseudo-terminal, for tests and demos without hardware.

``os.openpty()`` gives a master/slave pair; the emulator answers on the master in a thread and
``emu.port`` is the slave's tty path, which real pyserial opens like a /dev/ttyACM device::

    with BosonEmulator() as emu:
        client = BosonClient(emu.port)
        emu.inject("bad_crc")  # the next reply carries a wrong CRC

Faults (:data:`FAULTS`) apply to the next ``count`` replies, one each: ``garbage`` (noise bytes
around the reply), ``bad_crc``, ``truncated`` (first half of the reply, no end byte), ``stall``
(no reply), ``wrong_seq``, ``wrong_function``, ``status`` (an error status code instead of the
answer), ``late`` (the right reply, but only after ``delay_s``). ``echo=True`` writes every
received byte straight back before the reply, as a half-duplex adapter or TX wired to RX does.
"""
from __future__ import annotations

import abc
import math
import os
import select
import struct
import threading
import time
import tty
from collections import Counter, deque
from typing import Deque, Dict, Iterable, List, Optional, Tuple

from . import fslp
from .crc import crc16_boson
from . import tau
from .boson import COMMAND_NAMES, COMMANDS, FFCMode, FFCStatus, GainMode

FAULTS = ("garbage", "bad_crc", "truncated", "stall", "wrong_seq", "wrong_function", "status", "late")
RX_LOG_BYTES = 65536  # how much of the received byte stream ``rx`` keeps
GARBAGE = bytes((0x00, 0xAE, 0x9E, 0x55, 0xFF, 0x13, 0x6F, 0xA1))  # no 0x8E: pure inter-frame noise


class _StatusReply(Exception):
    """Raised by a handler to answer with an error status instead of data."""

    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


class PtyDevice(abc.ABC):
    """A pty pair served by a thread: bytes written to ``port`` go to :meth:`handle`, whose
    return value is written back. Subclasses implement :meth:`handle`."""

    name = "device"

    def __init__(self, reply_delay_s: float = 0.0, echo: bool = False):
        self.reply_delay_s = reply_delay_s
        self.echo = echo  # write every received byte straight back, as a loopback or half-duplex link does
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo or line editing even before a client configures it
        self.port = os.ttyname(self._slave)
        self.requests: Counter = Counter()  # command name -> times asked
        self.faults_applied: List[str] = []
        self.rx = bytearray()  # the last RX_LOG_BYTES bytes received, exactly as on the wire
        self._faults: Deque[Tuple[str, Optional[int], float]] = deque()
        self._delay_next_s = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-emulator", daemon=True)
        self._closed = False

    def start(self) -> "PtyDevice":
        """Start the thread serving the pty (once); returns the device. Clients open :attr:`port`."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop the serving thread (waiting up to 2 s) and close both ends of the pty (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    faults = FAULTS

    def inject(self, fault: str, count: int = 1, status: Optional[int] = None, delay_s: float = 0.5) -> None:
        """Apply ``fault`` to the next ``count`` replies.

        ``status`` is the code sent for the "status" fault, ``delay_s`` the delay in seconds for "late".

        Raises:
            ValueError: ``fault`` is not one of :attr:`faults` (the message lists them).
        """
        if fault not in self.faults:
            raise ValueError(f"unknown fault {fault!r}; choose one of: {', '.join(self.faults)}")
        with self._lock:
            self._faults.extend([(fault, status, delay_s)] * count)

    def _take_fault(self) -> Tuple[Optional[str], Optional[int]]:
        """The fault for the reply being built now (recorded in ``faults_applied``), or (None, None)."""
        with self._lock:
            if not self._faults:
                return None, None
            fault, status, delay_s = self._faults.popleft()
        self.faults_applied.append(fault)
        if fault == "late":
            self._delay_next_s += delay_s
        return fault, status

    @abc.abstractmethod
    def handle(self, data: bytes) -> bytes:
        """Consume request bytes; return the reply bytes (possibly empty)."""

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.05)
                if not ready:
                    continue
                data = os.read(self._master, 4096)
            except OSError:
                if self._stop.wait(0.05):
                    return
                continue
            self.rx += data
            del self.rx[:-RX_LOG_BYTES]
            if self.echo:
                self._write_all(data)
            reply = self.handle(data)
            if reply:
                delay, self._delay_next_s = self.reply_delay_s + self._delay_next_s, 0.0
                if delay:
                    self._stop.wait(delay)
                self._write_all(reply)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._stop.is_set():
            try:
                view = view[os.write(self._master, view):]
            except OSError:
                return


class BosonEmulator(PtyDevice):
    """A Boson answering every command in :data:`boson.COMMANDS` with plausible, changing state.

    FPA temperature drifts as ``fpa_temp_c + fpa_drift_c * sin(2*pi*t/60 s)``; FFC status goes
    NONE -> IN_PROGRESS (for ``ffc_duration_s`` after RunFFC) -> COMPLETE; in AUTO mode with
    ``auto_ffc_period_s`` the camera also starts FFC by itself. Unknown function ids get 0x0161,
    out-of-range enums 0x0203, wrong payload sizes 0x017D / 0x017E, as a camera would.

    ``unsupported``: command names (keys of :data:`boson.COMMANDS`) this firmware lacks; they
    are answered FLR_UNDEFINED_FUNCTION 0x0207 with no data, as Boson firmware versions without
    an optional function do (ReturnCodes.h, thermal_io.md §1.6). Settable later as well.

    Raises:
        ValueError: ``unsupported`` names a command not in :data:`boson.COMMANDS`.
        OSError: no pty can be opened.
    """

    name = "boson"

    def __init__(self, serial_number: int = 93588, sensor_serial_number: int = 771234,
                 part_number: str = "20640A050-6PAAX", software_rev: Tuple[int, int, int] = (4, 1, 22),
                 fpa_temp_c: float = 35.0, fpa_drift_c: float = 0.5, ffc_duration_s: float = 0.5,
                 ffc_mode: FFCMode = FFCMode.AUTO, gain_mode: GainMode = GainMode.HIGH,
                 auto_ffc_period_s: Optional[float] = None, reply_delay_s: float = 0.0,
                 unsupported: Iterable[str] = ()):
        super().__init__(reply_delay_s)
        self.unsupported = set(unsupported)
        unknown = self.unsupported - set(COMMANDS)
        if unknown:
            raise ValueError(f"unsupported: unknown Boson command(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(COMMANDS))}")
        self.serial_number = serial_number
        self.sensor_serial_number = sensor_serial_number
        self.part_number = part_number
        self.software_rev = tuple(software_rev)
        self.fpa_temp_c = fpa_temp_c
        self.fpa_drift_c = fpa_drift_c
        self.ffc_duration_s = ffc_duration_s
        self.auto_ffc_period_s = auto_ffc_period_s
        self.ffc_mode = FFCMode(ffc_mode)
        self.gain_mode = GainMode(gain_mode)
        self.ffc_temp_threshold = 30  # °C x 10
        self.ffc_frame_threshold = 3600
        self.ffc_count = 0
        self._ffc_started: Optional[float] = None
        self._t0 = time.monotonic()
        self._reader = fslp.FrameReader()
        self.bad_requests = 0  # request frames with a CRC/escape error (not answered)

    # -- state
    def _now(self) -> float:
        return time.monotonic()

    def start_ffc(self) -> tuple:
        """Begin an FFC now (as bosonRunFFC does) and count it; returns no reply values."""
        self._ffc_started = self._now()
        self.ffc_count += 1
        return ()

    def _store(self, attr: str, value: int) -> tuple:
        setattr(self, attr, value)
        return ()

    def ffc_status(self) -> FFCStatus:
        """The emulated FFC state: NONE before the first FFC, IN_PROGRESS for ``ffc_duration_s``
        seconds after it starts, then COMPLETE. In AUTO mode with ``auto_ffc_period_s`` set, a new
        FFC starts by itself once that period plus the FFC duration has passed.
        """
        now = self._now()
        if (self.auto_ffc_period_s and self.ffc_mode == FFCMode.AUTO
                and now - (self._ffc_started if self._ffc_started is not None else self._t0)
                >= self.auto_ffc_period_s + self.ffc_duration_s):
            self.start_ffc()
        if self._ffc_started is None:
            return FFCStatus.NONE
        if now - self._ffc_started < self.ffc_duration_s:
            return FFCStatus.IN_PROGRESS
        return FFCStatus.COMPLETE

    def current_fpa_temp_c(self) -> float:
        """The emulated FPA temperature in °C: ``fpa_temp_c`` plus a 60 s sine of amplitude ``fpa_drift_c``.
        """
        return self.fpa_temp_c + self.fpa_drift_c * math.sin(2 * math.pi * (self._now() - self._t0) / 60.0)

    def _set_enum(self, cls, attr: str, value: int) -> tuple:
        try:
            setattr(self, attr, cls(value))
        except ValueError:
            raise _StatusReply(0x0203) from None
        return ()

    def _answer(self, name: str, args: tuple) -> tuple:
        handlers = {
            "get_camera_sn": lambda: (self.serial_number,),
            "get_camera_pn": lambda: (self.part_number.encode("ascii")[:20].ljust(20, b"\x00"),),
            "get_sensor_sn": lambda: (self.sensor_serial_number,),
            "run_ffc": self.start_ffc,
            "set_ffc_temp_threshold": lambda v: self._store("ffc_temp_threshold", v),
            "get_ffc_temp_threshold": lambda: (self.ffc_temp_threshold,),
            "set_ffc_frame_threshold": lambda v: self._store("ffc_frame_threshold", v),
            "get_ffc_frame_threshold": lambda: (self.ffc_frame_threshold,),
            "get_ffc_in_progress": lambda: (int(self.ffc_status() == FFCStatus.IN_PROGRESS),),
            "set_ffc_mode": lambda v: self._set_enum(FFCMode, "ffc_mode", v),
            "get_ffc_mode": lambda: (int(self.ffc_mode),),
            "set_gain_mode": lambda v: self._set_enum(GainMode, "gain_mode", v),
            "get_gain_mode": lambda: (int(self.gain_mode),),
            "get_software_rev": lambda: self.software_rev,
            "get_fpa_temp_cx10": lambda: (int(round(self.current_fpa_temp_c() * 10)),),
            "get_fpa_temp_kx10": lambda: (int(round((self.current_fpa_temp_c() + 273.15) * 10)),),
            "get_ffc_status": lambda: (int(self.ffc_status()),),
        }
        if name not in handlers:
            raise _StatusReply(0x0207)
        return handlers[name](*args)

    # -- protocol
    def respond(self, packet: fslp.Packet) -> Tuple[int, bytes]:
        """(FLR_RESULT status, reply data) for one request packet, as a Boson answers it.

        Unknown function id -> 0x0161 (BAD_CMD_ID); a function in ``unsupported`` -> 0x0207
        (UNDEFINED_FUNCTION); request data too short/long -> 0x017D/0x017E; an enum value out of
        range -> 0x0203 (RANGE_ERROR); codes from thermal_io.md §1.6 (SDK ReturnCodes.h).
        """
        name = COMMAND_NAMES.get(packet.function_id)
        self.requests[name or f"0x{packet.function_id:08X}"] += 1
        if name is None:
            return 0x0161, b""
        if name in self.unsupported:
            return 0x0207, b""  # FLR_UNDEFINED_FUNCTION: this firmware lacks the function
        cmd = COMMANDS[name]
        size = struct.calcsize(cmd.arg) if cmd.arg else 0
        if len(packet.data) != size:
            return (0x017D if len(packet.data) < size else 0x017E), b""
        try:
            values = self._answer(name, struct.unpack(cmd.arg, packet.data) if cmd.arg else ())
        except _StatusReply as exc:
            return exc.code, b""
        return 0, (struct.pack(cmd.reply, *values) if cmd.reply else b"")

    def handle(self, data: bytes) -> bytes:
        """The wire bytes answering ``data`` (FSLP frames, any chunking), with queued faults applied.

        Request frames with a bad CRC or escape are not answered and counted in ``bad_requests``.
        """
        out = bytearray()
        for received in self._reader.feed(data):
            if received.error:
                self.bad_requests += 1
                continue
            try:
                packet = fslp.decode_packet(received.payload)
            except fslp.FSLPError:
                self.bad_requests += 1
                continue
            fault, fault_status = self._take_fault()
            if fault == "status":  # the camera refuses: nothing is executed
                self.requests[COMMAND_NAMES.get(packet.function_id, "unknown")] += 1
                status, reply = (fault_status if fault_status is not None else 0x0201), b""
            else:  # executed; any other fault only damages the reply
                status, reply = self.respond(packet)
            out += self._encode_reply(packet, status, reply, received.channel, fault)
        return bytes(out)

    @staticmethod
    def _encode_reply(packet: fslp.Packet, status: int, data: bytes, channel: int,
                      fault: Optional[str]) -> bytes:
        seq, fid = packet.seq, packet.function_id
        if fault == "stall":
            return b""
        if fault == "wrong_seq":
            seq ^= 0x80000000
        elif fault == "wrong_function":
            fid ^= 0x00000001
        wire = fslp.command_frame(seq, fid, data, status, channel)
        if fault == "bad_crc":
            payload = fslp.encode_packet(seq, fid, data, status)
            good = crc16_boson(bytes((channel,)) + payload)
            wire = (bytes((fslp.START, channel)) + fslp.stuff(payload + struct.pack(">H", good ^ 0x5A5A))
                    + bytes((fslp.END,)))
        elif fault == "truncated":
            wire = wire[: len(wire) // 2]
        elif fault == "garbage":
            wire = GARBAGE + wire + GARBAGE
        return wire


class TauEmulator(PtyDevice):
    """A Tau2 answering every command in :data:`tau.COMMANDS` (no sequence numbers, so every
    fault but ``wrong_seq``). Unknown functions get status 0x06, out-of-range enums 0x03,
    wrong argument lengths 0x09."""

    name = "tau2"
    faults = tuple(f for f in FAULTS if f != "wrong_seq")

    def __init__(self, serial_number: int = 412345, sensor_serial_number: int = 98765,
                 revision: Tuple[int, int, int, int] = (1, 5, 2, 1), fpa_temp_c: float = 31.5,
                 ffc_mode: tau.TauFFCMode = tau.TauFFCMode.MANUAL,
                 gain_mode: tau.TauGainMode = tau.TauGainMode.HIGH, reply_delay_s: float = 0.0,
                 echo: bool = False):
        super().__init__(reply_delay_s, echo)
        self.serial_number = serial_number
        self.sensor_serial_number = sensor_serial_number
        self.revision = tuple(revision)
        self.fpa_temp_c = fpa_temp_c
        self.ffc_mode = tau.TauFFCMode(ffc_mode)
        self.gain_mode = tau.TauGainMode(gain_mode)
        self.ffc_count = 0
        self._reader = tau.TauPacketReader()
        # (function, has argument) -> command name
        self._names: Dict[Tuple[int, bool], str] = {
            (cmd.function, bool(cmd.arg)): name for name, cmd in tau.COMMANDS.items()}

    def _set_enum(self, cls, attr: str, value: int) -> tuple:
        try:
            setattr(self, attr, cls(value))
        except ValueError:
            raise _StatusReply(0x03) from None
        return (value,)

    def _answer(self, name: str, args: tuple) -> tuple:
        if name == "do_ffc":
            self.ffc_count += 1
            return ()
        handlers = {
            "serial_number": lambda: (self.serial_number, self.sensor_serial_number),
            "get_revision": lambda: self.revision,
            "get_gain_mode": lambda: (int(self.gain_mode),),
            "set_gain_mode": lambda v: self._set_enum(tau.TauGainMode, "gain_mode", v),
            "get_ffc_mode": lambda: (int(self.ffc_mode),),
            "set_ffc_mode": lambda v: self._set_enum(tau.TauFFCMode, "ffc_mode", v),
            "read_sensor": lambda which: (int(round(self.fpa_temp_c * 10)),) if which == 0
            else (int(round(self.fpa_temp_c * 100)),),
        }
        return handlers[name](*args)

    def respond(self, packet: tau.TauPacket) -> Tuple[int, bytes]:
        """(status byte, reply argument) for one request packet, as a Tau2 answers it.

        Unknown function -> 0x06 (undefined function); a known function with the wrong argument
        length -> 0x09 (byte-count error); an enum value out of range -> 0x03 (range error);
        status codes from thermal_io.md §2 (flirpy ``tau_config``).
        """
        name = self._names.get((packet.function, bool(packet.arg)))
        self.requests[name or f"0x{packet.function:02X}"] += 1
        if name is None:
            known = {fn for fn, _ in self._names}
            return (0x09 if packet.function in known else 0x06), b""
        cmd = tau.COMMANDS[name]
        if len(packet.arg) != (struct.calcsize(cmd.arg) if cmd.arg else 0):
            return 0x09, b""
        try:
            values = self._answer(name, struct.unpack(cmd.arg, packet.arg) if cmd.arg else ())
        except _StatusReply as exc:
            return exc.code, b""
        return 0, (struct.pack(cmd.reply, *values) if cmd.reply else b"")

    def handle(self, data: bytes) -> bytes:
        """The wire bytes answering ``data`` (Tau2 packets, any chunking), with queued faults applied; packets
        with a bad CRC2 are not answered.
        """
        out = bytearray()
        for packet in self._reader.feed(data):
            if packet.error:
                continue
            fault, fault_status = self._take_fault()
            if fault == "status":
                status, arg = (fault_status if fault_status is not None else 0x04), b""
            else:
                status, arg = self.respond(packet)
            if fault == "stall":
                continue
            function = packet.function ^ 0x01 if fault == "wrong_function" else packet.function
            wire = tau.encode_packet(function, arg, status)
            if fault == "bad_crc":
                wire = wire[:-2] + bytes((wire[-2] ^ 0x5A, wire[-1] ^ 0xA5))
            elif fault == "truncated":
                wire = wire[: max(9, len(wire) - 3)]
            elif fault == "garbage":
                wire = GARBAGE + wire + GARBAGE
            out += wire
        return bytes(out)
