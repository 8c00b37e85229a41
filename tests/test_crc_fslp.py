"""Byte vectors from thermal_io.md §1.4-§1.5 (real captured Boson traffic where marked) and §2."""
import struct

import pytest

from tir.edge.camera import fslp
from tir.edge.camera.crc import crc16_boson, crc16_xmodem


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_crc_check_values():
    assert crc16_boson(b"123456789") == 0xE5CC
    assert crc16_xmodem(b"123456789") == 0x31C3


@pytest.mark.parametrize("seq, fid, data, wire", [
    (0, 0x00050007, b"", "8E 00 00000000 00050007 FFFFFFFF C9 7F AE"),  # RunFFC
    (1, 0x00050007, b"", "8E 00 00000001 00050007 FFFFFFFF 22 5C AE"),  # RunFFC, captured TX
    (1, 0x00050002, b"", "8E 00 00000001 00050002 FFFFFFFF 01 0B AE"),  # GetCameraSN, captured TX
    (1, 0x00050030, b"", "8E 00 00000001 00050030 FFFFFFFF 49 66 AE"),  # FPA temp, captured TX
    (0, 0x00050012, h("00000000"), "8E 00 00000000 00050012 FFFFFFFF 00000000 90 D8 AE"),  # FFC manual
    (0, 0x00050012, h("00000001"), "8E 00 00000000 00050012 FFFFFFFF 00000001 80 F9 AE"),  # FFC auto
    (0, 0x00050004, b"", "8E 00 00000000 00050004 FFFFFFFF 27 AD AE"),  # GetCameraPN
    (0, 0x00050014, h("00000000"), "8E 00 00000000 00050014 FFFFFFFF 00000000 CA 50 AE"),  # gain HIGH
    (0, 0x00050015, b"", "8E 00 00000000 00050015 FFFFFFFF 89 A6 AE"),  # GetGainMode
    (0, 0x00050022, b"", "8E 00 00000000 00050022 FFFFFFFF E2 9C AE"),  # GetSoftwareRev
    (0x8E, 0x00050007, b"", "8E 00 00 00 00 9E 81 00 05 00 07 FF FF FF FF 05 BA AE"),  # escaping
    (0xC2, 0x000E000D, h("00000002"), "8E 00 000000C2 000E000D FFFFFFFF 00000002 C4 F2 AE"),  # sysctrl
])
def test_request_frames_match_reference(seq, fid, data, wire):
    assert fslp.command_frame(seq, fid, data) == h(wire)
    channel, payload = fslp.unframe(h(wire))
    assert channel == 0
    assert fslp.decode_packet(payload) == fslp.Packet(seq, fid, 0xFFFFFFFF, data)


@pytest.mark.parametrize("wire, fid, data", [
    ("8E 00 00000001 00050007 00000000 BB 93 AE", 0x00050007, b""),  # RunFFC reply
    ("8E 00 00000001 00050002 00000000 00016D94 30 10 AE", 0x00050002, h("00016D94")),  # SN 93588
    ("8E 00 00000001 00050030 00000000 017C BD CE AE", 0x00050030, h("017C")),  # 38.0 C
])
def test_captured_replies_decode(wire, fid, data):
    packet = fslp.decode_packet(fslp.unframe(h(wire))[1])
    assert packet == fslp.Packet(1, fid, 0, data)
    assert fslp.command_frame(1, fid, data, status=0) == h(wire)


def test_captured_reply_values():
    sn = fslp.decode_packet(fslp.unframe(h("8E 00 00000001 00050002 00000000 00016D94 30 10 AE"))[1])
    assert struct.unpack(">I", sn.data)[0] == 93588
    temp = fslp.decode_packet(fslp.unframe(h("8E 00 00000001 00050030 00000000 017C BD CE AE"))[1])
    assert struct.unpack(">h", temp.data)[0] / 10 == 38.0


def test_crc_bytes_are_escaped_like_the_sdk():
    # Find a frame whose CRC contains a reserved byte: the SDK escapes it, flirpy would not.
    for seq in range(2000):
        payload = fslp.encode_packet(seq, 0x00050007)
        crc = struct.pack(">H", crc16_boson(b"\x00" + payload))
        if any(b in (0x8E, 0x9E, 0xAE) for b in crc):
            wire = fslp.command_frame(seq, 0x00050007)
            assert 0x8E not in wire[1:] and 0xAE not in wire[:-1]
            assert fslp.decode_packet(fslp.unframe(wire)[1]).seq == seq
            return
    pytest.fail("no sequence number produced a CRC needing an escape")


def test_stuff_round_trip_and_bad_escapes():
    raw = bytes(range(256))
    stuffed = fslp.stuff(raw)
    assert not {0x8E, 0xAE} & set(stuffed)
    assert fslp.unstuff(stuffed) == raw
    with pytest.raises(fslp.FSLPError, match="invalid escape"):
        fslp.unstuff(b"\x9e\x00")
    with pytest.raises(fslp.FSLPError, match="inside an escape"):
        fslp.unstuff(b"\x01\x9e")


def test_unframe_rejects_bad_crc_and_non_frames():
    wire = bytearray(h("8E 00 00000000 00050007 FFFFFFFF C9 7F AE"))
    wire[-2] ^= 0x01
    with pytest.raises(fslp.FSLPCRCError, match="CRC mismatch"):
        fslp.unframe(bytes(wire))
    with pytest.raises(fslp.FSLPError, match="not an FSLP frame"):
        fslp.unframe(b"\x00\x01\x02\x03")
    with pytest.raises(fslp.FSLPError, match="12-byte"):
        fslp.decode_packet(b"\x00" * 5)


def test_frame_reader_handles_garbage_splits_escapes_and_truncation():
    good = [fslp.command_frame(seq, 0x00050007) for seq in (1, 0x8E, 0x9EAE)]
    truncated = good[0][:9]
    stream = b"\x00\x13garbage\xae" + good[0] + b"\xff\x9e" + truncated + good[1] + good[2]
    reader = fslp.FrameReader()
    frames = []
    for i in range(0, len(stream), 3):  # arbitrary chunking, escapes split across chunks
        frames += reader.feed(stream[i:i + 3])
    assert [f.error for f in frames] == [None, None, None]
    assert [fslp.decode_packet(f.payload).seq for f in frames] == [1, 0x8E, 0x9EAE]
    assert reader.garbage_bytes == len(b"\x00\x13garbage\xae") + 2
    assert reader.truncated_frames == 1
    assert reader.pending_bytes == 0


def test_frame_reader_reports_crc_escape_and_short_frames():
    bad_crc = bytearray(fslp.command_frame(3, 0x00050002))
    bad_crc[-2] ^= 0x40
    reader = fslp.FrameReader()
    frames = reader.feed(bytes(bad_crc) + b"\x8e\x00\x9e\x05\xae" + b"\x8e\xae" + b"\x8e\x00\x01\xae")
    assert [f.error for f in frames] == ["crc", "escape", "short", "short"]
    assert fslp.decode_packet(frames[0].payload).seq == 3


def test_frame_reader_drops_oversize_frames():
    reader = fslp.FrameReader(max_frame_bytes=32)
    assert reader.feed(b"\x8e" + b"\x01" * 100) == []
    assert reader.oversize_frames == 1
    frames = reader.feed(fslp.command_frame(5, 0x00050007))
    assert len(frames) == 1 and frames[0].error is None


def test_protocol_modules_do_not_import_serial():
    import subprocess
    import sys
    code = ("import sys, tir.edge.camera.fslp, tir.edge.camera.boson, tir.edge.camera.tau; "
            "print('serial' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
