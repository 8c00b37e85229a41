"""Boson FSLP framing and the command-packet header: pure bytes, no serial I/O.

Wire frame (thermal_io.md §1.2, FLIR SDK ``FSLP create_frame`` / ``CLIENT_dispatcher``)::

    0x8E | CH | SEQ(4) FID(4) STATUS(4) DATA(n) | CRC(2) | 0xAE

Everything after the channel byte (header, data and both CRC bytes) is byte-stuffed as the
FLIR SDK does it (§1.3: 0x8E -> 9E 81, 0x9E -> 9E 91, 0xAE -> 9E A1); flirpy stuffs only the
data, which breaks when a CRC byte needs escaping. The CRC (crc.py, init 0x1D0F) covers the
unescaped bytes from the channel to the last data byte (§1.4). Integers are big-endian.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Optional, Tuple

from .crc import crc16_boson

START = 0x8E
END = 0xAE
ESCAPE = 0x9E
_ESCAPED = {0x8E: 0x81, 0x9E: 0x91, 0xAE: 0xA1}  # raw byte -> byte sent after 0x9E
_UNESCAPED = {v: k for k, v in _ESCAPED.items()}

COMMAND_CHANNEL = 0x00
REQUEST_STATUS = 0xFFFFFFFF  # status field of every host request (§1.2)
HEADER = struct.Struct(">III")  # seq, function id, status
MIN_FRAME_BYTES = 17  # start + channel + 12 header + 2 CRC + end, no data (§1.2)
MAX_FRAME_BYTES = 2 * 1544  # flirpy reads replies up to 1544 bytes; allow all of it escaped


class FSLPError(ValueError):
    """A frame that cannot be decoded (missing start/end byte, bad escape, too short)."""


class FSLPCRCError(FSLPError):
    """A frame whose CRC does not match its contents."""


def stuff(data: bytes) -> bytes:
    """Escape the three reserved bytes (0x8E, 0x9E, 0xAE)."""
    out = bytearray()
    for b in data:
        if b in _ESCAPED:
            out += bytes((ESCAPE, _ESCAPED[b]))
        else:
            out.append(b)
    return bytes(out)


def unstuff(data: bytes) -> bytes:
    """Undo :func:`stuff` (9E 81 -> 8E, 9E 91 -> 9E, 9E A1 -> AE; thermal_io.md §1.3).

    Raises:
        FSLPError: a dangling escape at the end, or 0x9E followed by another byte.
    """
    out = bytearray()
    escaped = False
    for b in data:
        if escaped:
            if b not in _UNESCAPED:
                raise FSLPError(f"invalid escape sequence 9E {b:02X}")
            out.append(_UNESCAPED[b])
            escaped = False
        elif b == ESCAPE:
            escaped = True
        else:
            out.append(b)
    if escaped:
        raise FSLPError("frame ends inside an escape sequence")
    return bytes(out)


def frame(payload: bytes, channel: int = COMMAND_CHANNEL) -> bytes:
    """Wrap ``payload`` into a wire frame: start, channel, stuffed payload+CRC, end."""
    body = bytes((channel,)) + bytes(payload)
    crc = struct.pack(">H", crc16_boson(body))
    return bytes((START, channel)) + stuff(bytes(payload) + crc) + bytes((END,))


def split_body(body: bytes) -> Tuple[int, bytes]:
    """Check an unescaped ``channel + payload + CRC`` body; return (channel, payload).

    Raises:
        FSLPError: fewer than 3 bytes.
        FSLPCRCError: the big-endian CRC (crc16_boson over channel..last payload byte) mismatches.
    """
    if len(body) < 3:
        raise FSLPError(f"frame body of {len(body)} bytes is too short for channel and CRC")
    want = crc16_boson(body[:-2])
    got = struct.unpack(">H", body[-2:])[0]
    if want != got:
        raise FSLPCRCError(f"CRC mismatch: frame carries 0x{got:04X}, contents give 0x{want:04X}")
    return body[0], body[1:-2]


def unframe(wire: bytes) -> Tuple[int, bytes]:
    """Decode one complete wire frame (0x8E ... 0xAE) into (channel, payload).

    Raises:
        FSLPError: no start/end byte, shorter than 4 bytes, or a bad escape.
        FSLPCRCError: the CRC mismatches.
    """
    wire = bytes(wire)
    if len(wire) < 4 or wire[0] != START or wire[-1] != END:
        raise FSLPError(f"not an FSLP frame (needs 0x8E ... 0xAE): {wire[:8].hex(' ')}")
    return split_body(bytes((wire[1],)) + unstuff(wire[2:-1]))


@dataclass(frozen=True)
class Packet:
    """The command layer inside a frame's payload (SDK ``CLIENT_dispatcher``)."""

    seq: int
    function_id: int
    status: int
    data: bytes = b""


def encode_packet(seq: int, function_id: int, data: bytes = b"", status: int = REQUEST_STATUS) -> bytes:
    """The 12-byte command header (big-endian seq, function id, status) followed by ``data``.

    ``seq`` is taken modulo 2**32; requests carry status 0xFFFFFFFF (thermal_io.md §1.2,
    SDK ``CLIENT_dispatcher_Tx``), replies the FLR_RESULT.
    """
    return HEADER.pack(seq & 0xFFFFFFFF, function_id, status) + bytes(data)


def decode_packet(payload: bytes) -> Packet:
    """Split a frame's payload into its command header and data (thermal_io.md §1.2).

    Returns:
        A :class:`Packet` (seq, function_id, status, data).

    Raises:
        FSLPError: the payload is shorter than the 12-byte header.
    """
    if len(payload) < HEADER.size:
        raise FSLPError(f"payload of {len(payload)} bytes is shorter than the 12-byte command header")
    seq, function_id, status = HEADER.unpack_from(payload)
    return Packet(seq, function_id, status, bytes(payload[HEADER.size:]))


def command_frame(seq: int, function_id: int, data: bytes = b"", status: int = REQUEST_STATUS,
                  channel: int = COMMAND_CHANNEL) -> bytes:
    """The complete wire bytes of one command (request, or reply when ``status`` is a result)."""
    return frame(encode_packet(seq, function_id, data, status), channel)


@dataclass(frozen=True)
class ReceivedFrame:
    """One frame cut out of a byte stream; ``error`` names what is wrong with it, else None."""

    channel: int
    payload: bytes
    error: Optional[str] = None  # None | "crc" | "escape" | "short"


class FrameReader:
    """Cuts frames out of a byte stream fed in arbitrary chunks.

    Bytes outside 0x8E ... 0xAE are garbage and dropped (counted in ``garbage_bytes``), and
    with ``channels`` so is a failed span that cannot be a frame of them (:meth:`_could_be_frame`). A start
    byte inside a frame can only mean the previous frame was truncated (reserved bytes never
    appear unescaped inside a frame), so the partial frame is dropped (``truncated_frames``)
    and a new one begins. Frames longer than ``max_frame_bytes`` are dropped (``oversize_frames``).
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES, channels: Optional[Tuple[int, ...]] = None,
                 min_payload: int = 0):
        self.max_frame_bytes = max_frame_bytes
        #: with ``channels``: a span between a start and an end byte that fails to decode (CRC,
        #: escape, too short) and cannot be a frame of these channels (another channel byte, or a
        #: payload shorter than ``min_payload``) is garbage that happened to hold a start and an
        #: end byte (random bytes hold 0x8E once in 256): counted in ``garbage_bytes``, not returned
        self.channels = None if channels is None else tuple(channels)
        self.min_payload = int(min_payload)
        self.garbage_bytes = 0
        self.truncated_frames = 0
        self.oversize_frames = 0
        self._buf: Optional[bytearray] = None  # wire bytes after the start byte, None when idle

    @property
    def pending_bytes(self) -> int:
        """Bytes of a frame that has started but not ended (0 when idle)."""
        return 0 if self._buf is None else len(self._buf) + 1

    @property
    def pending_frame_bytes(self) -> int:
        """:attr:`pending_bytes` of a started span that may be a frame of :attr:`channels` (its
        channel byte is one of them, or not yet read); 0 for one that cannot be (garbage)."""
        if self._buf is None or (self.channels is not None and self._buf and self._buf[0] not in self.channels):
            return 0
        return self.pending_bytes

    def reset(self) -> None:
        """Forget a partially received frame (counted as truncated)."""
        if self._buf is not None:
            self.truncated_frames += 1
        self._buf = None

    def feed(self, data: bytes) -> List[ReceivedFrame]:
        """Add received bytes; return the frames they complete, in order.

        Frames with a bad CRC, bad escape or no room for channel and CRC are returned with
        ``error`` set ("crc", "escape", "short") rather than raised, so the client decides.
        """
        frames: List[ReceivedFrame] = []
        for b in bytes(data):
            if self._buf is None:
                if b == START:
                    self._buf = bytearray()
                else:
                    self.garbage_bytes += 1
            elif b == START:
                self.truncated_frames += 1
                self._buf = bytearray()
            elif b == END:
                received = self._decode(bytes(self._buf))
                if received.error and not self._could_be_frame(received, len(self._buf)):
                    self.garbage_bytes += len(self._buf) + 2
                else:
                    frames.append(received)
                self._buf = None
            else:
                self._buf.append(b)
                if len(self._buf) > self.max_frame_bytes:
                    self.oversize_frames += 1
                    self.garbage_bytes += len(self._buf) + 1
                    self._buf = None
        return frames

    def _could_be_frame(self, received: ReceivedFrame, wire_bytes: int) -> bool:
        """Whether a span that failed to decode may be a damaged frame of :attr:`channels` (then
        its error is the frame's: a bad CRC), not garbage: its channel byte is one of them and
        it carries at least ``min_payload`` payload bytes and the CRC (counted on the wire, where
        stuffing only adds bytes, when the escapes failed). Always True without ``channels``."""
        if self.channels is None:
            return True
        if received.channel not in self.channels:
            return False
        size = len(received.payload) if received.error == "crc" else wire_bytes - 3   # - channel, CRC
        return size >= self.min_payload

    @staticmethod
    def _decode(wire: bytes) -> ReceivedFrame:
        """``wire`` is everything between start and end: raw channel byte, then stuffed bytes."""
        if not wire:
            return ReceivedFrame(0, b"", "short")
        channel = wire[0]
        try:
            body = bytes((channel,)) + unstuff(wire[1:])
        except FSLPError:
            return ReceivedFrame(channel, b"", "escape")
        if len(body) < 3:
            return ReceivedFrame(channel, b"", "short")
        try:
            split_body(body)
        except FSLPCRCError:
            return ReceivedFrame(channel, body[1:-2], "crc")
        return ReceivedFrame(channel, body[1:-2])
